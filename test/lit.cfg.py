# -*- Python -*-
# lit configuration for moe-mlir's regression tests (check-moe).

import os

import lit.formats
from lit.llvm import llvm_config

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")
config.excludes = ["CMakeLists.txt", "README.md", "lit.cfg.py",
                   "lit.site.cfg.py"]

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%moe_src_root", config.moe_src_root))

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP",
                                     "ASAN_OPTIONS", "UBSAN_OPTIONS"])
llvm_config.use_default_substitutions()

tool_dirs = [config.moe_tools_dir, config.llvm_tools_dir]
llvm_config.add_tool_substitutions(["moe-opt", "moe-compile", "moe-run", "moe-analyze", "moe-analysis-tests", "moe-live", "moe-capi-test", "moe-async-runtime-test", "moe-host-alloc-test"], tool_dirs)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
config.substitutions.append(("%moe_obj_root", config.moe_obj_root))

# The CUDA toolkit that moe-to-nvvm's cubins need (ptxas, libdevice; no GPU):
# tests that make cubins say `REQUIRES: cuda-toolkit`. The same search order
# as the pipeline's (moe::resolveCUDAPath), whose variables pass through.
llvm_config.with_system_environment(["CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"])
for _cuda in [os.environ.get(v) for v in ("CUDA_ROOT", "CUDA_HOME", "CUDA_PATH")] + ["/usr/local/cuda"]:
    if _cuda:
        if (os.path.exists(os.path.join(_cuda, "bin", "ptxas")) and
                os.path.exists(os.path.join(_cuda, "nvvm", "libdevice", "libdevice.10.bc"))):
            config.available_features.add("cuda-toolkit")
            config.substitutions.append(("%ptxas", os.path.join(_cuda, "bin", "ptxas")))
            if os.path.exists(os.path.join(_cuda, "bin", "nvcc")):
                config.available_features.add("nvcc")
                config.substitutions.append(("%nvcc", os.path.join(_cuda, "bin", "nvcc")))
        break

# `cuda`: a CUDA device is visible (moe-cuda-probe finds one through the
# driver). Tests that run kernels say `REQUIRES: cuda`; on machines without
# a GPU they are reported UNSUPPORTED. MOE_LIBCUDA (the fake driver) is not
# passed to the probe: the fake runs no kernels.
import subprocess
import sys
_probe = os.path.join(config.moe_obj_root, "bin", "moe-cuda-probe")
if os.path.exists(_probe):
    _env = {k: v for k, v in os.environ.items() if k != "MOE_LIBCUDA"}
    try:
        if subprocess.run([_probe], env=_env, capture_output=True, timeout=60).returncode == 0:
            config.available_features.add("cuda")
    except (OSError, subprocess.TimeoutExpired):
        pass

# `torch`: a Python that imports PyTorch, `%torch_python` (lit's own or
# the first python3 on PATH; for the benchmark drivers' helpers; PyTorch is
# not installed by the set-up scripts, so such tests are UNSUPPORTED on a
# fresh machine).
import shutil
for _py in [sys.executable, shutil.which("python3")]:
    try:
        if _py and subprocess.run([_py, "-c", "import torch"], capture_output=True,
                                  timeout=120).returncode == 0:
            config.available_features.add("torch")
            config.substitutions.append(("%torch_python", _py))
            break
    except (OSError, subprocess.TimeoutExpired):
        pass

# `amx`: this host runs AMX tile code: CPUID lists AMX-TILE and AMX-BF16
# (what `gemm-amx=-1` looks for) and Linux grants the tile state
# (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA; what the runtime asks for
# before loading an artifact with "amx_tiles"). Tests that run AMX code say
# `REQUIRES: amx`.
def _host_runs_amx():
    try:
        flags = set()
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
        if not {"amx_tile", "amx_bf16"} <= flags:
            return False
        import ctypes
        import platform
        if platform.machine() != "x86_64":
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 158, 0x1023, 18
        return libc.syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False
if _host_runs_amx():
    config.available_features.add("amx")

# AddressSanitizer builds (scripts/test.sh --sanitize): ASan's allocator
# reports a failed allocation itself, so the tools' out-of-memory handler
# is not reached there.
if getattr(config, "moe_sanitizers", "OFF").upper() in ("ON", "1", "TRUE", "YES"):
    config.available_features.add("asan")
