#!/usr/bin/env python3
"""Looks for crashes of moe-opt's pipelines on bad options and mutated IR.

usage: scripts/fuzz-pipelines.py [--moe-opt PATH] [--seed S] [--runs N]
                                 [--mode options|ir|degenerate|all]
                                 [--pipeline cpu|gpu|both] [--jobs N]
                                 [--keep DIR]

A run fails when moe-opt exits by a signal or with a status other than 0 or
1, prints an LLVM fatal error, assertion or stack dump, exits 1 without an
"error:" line, or prints an "error:" line and exits 0 (an error the exit
status hides). Diagnostics of bad input are the expected outcome; what is
looked for is every other way of ending. The failing inputs are kept in
--keep (default: a temporary directory) with the command that failed, and
the script exits 1 when there was any.

Modes, over the bundled examples (examples/*.mlir):
  options     every example through moe-to-nvvm and moe-to-llvm-cpu with
              option values outside and at the edges of their ranges
  degenerate  every type dimension of each example set to 0, then to 1,
              everywhere it occurs (consistent shapes of degenerate sizes)
  ir          --runs random mutants (--seed; printed): a dimension replaced
              everywhere, an element type replaced everywhere, an attribute
              number or keyword changed, a line dropped

Session 26 found with it: a segmentation fault (chip=), NVPTX aborts
(chip=bogus, sm_90a with +ptx78), aborts while building the pipeline
(opt-level=-1, expert-tile-n-down=-16), errors with exit status 0
(format=bogus, cuda-path=/x), and a SIGFPE on a layer with H = 0; all are
errors or remarks now (test/Pipelines/moe-to-nvvm-options.mlir,
test/Conversion/MoEToGPU/experts-zero-width.mlir).
"""

import argparse
import os
import random
import re
import sys
import tempfile

from fuzzlib import execute, judge, run_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ["mixtral", "deepseek_v3", "qwen2_moe", "at_moe", "nexus", "cartesian"]

GPU_OPTIONS = (
    [f"expert-tile-m={v}" for v in ["0", "16", "48", "256", "-1"]]
    + [f"expert-tile-k={v}" for v in ["8", "48", "256", "-5"]]
    + [f"expert-tile-n-{w}={v}" for w in ["down", "gate-up"]
       for v in ["8", "24", "4096", "-16"]]
    + [f"expert-stages={v}" for v in ["1", "5", "-1"]]
    + [f"expert-warps={v}" for v in ["2", "16"]]
    + ["expert-group-m=-3", "expert-group-m=1000000",
       "expert-large-tile-rows=-1", "expert-split-k-blocks=-1",
       "expert-split-k-blocks=1000000000", "expert-combine=bogus",
       "chip=sm_90a expert-wgmma=1 expert-tma=1",
       "chip=sm_90a expert-wgmma=1 expert-tile-m=32",
       "chip=sm_90a expert-wgmma=1 expert-stages=2",
       "chip=sm_80 expert-wgmma=1", "chip=sm_90 expert-tma=1",
       "chip=", "chip=bogus", "chip=sm_70", "chip=sm_80a", "chip=sm_101",
       "chip=sm_90a features=+ptx78", "chip=sm_100f features=+ptx86",
       "chip=sm_120", "chip=sm_100f", "features=bogus", "features=+ptx92",
       "features=+ptx60", "format=bogus", "format=fatbin",
       "block-size=0", "block-size=2048", "tile-sizes=2048",
       "opt-level=-1", "opt-level=5", "cuda-path=/nonexistent",
       "route-fuse-linear-min-tokens=-1", "linear-mma-min-tokens=-2",
       "lora-dense-a-min-tokens=-7", "route-linear-mma-min-tokens=-3",
       "decompose=0", "expert-kernels=0 route-kernels=0 linear-kernels=0"])
CPU_OPTIONS = (
    [f"gemm-amx={v}" for v in ["2", "-5"]]
    + [f"gemm-block-bytes={v}" for v in ["0", "-1", "1", "1099511627776"]]
    + [f"gemm-vector-bits={v}" for v in ["128", "1024", "-1", "7"]]
    + [f"min-task-size={v} parallel=1" for v in ["0", "-1", "1000000"]]
    + ["blocked-gemms=0 parallel=1", "polynomial-math=1",
       "runtime-allocator=1", "decompose=0"])


def pipeline_flag(pipeline, options=""):
    if pipeline == "gpu":
        opts = options if "format=" in options else (options + " format=isa")
        return "--moe-to-nvvm=" + opts.strip()
    return "--moe-to-llvm-cpu" + ("=" + options if options else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moe-opt", default=os.path.join(ROOT, "build/bin/moe-opt"))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--mode", default="all",
                    choices=["options", "ir", "degenerate", "all"])
    ap.add_argument("--pipeline", default="both", choices=["cpu", "gpu", "both"])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--keep", default=None)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    print(f"fuzz-pipelines: seed {seed}", flush=True)
    rng = random.Random(seed)
    keep = a.keep or tempfile.mkdtemp(prefix="moe-fuzz-")
    os.makedirs(keep, exist_ok=True)
    pipelines = ["cpu", "gpu"] if a.pipeline == "both" else [a.pipeline]
    sources = {e: open(os.path.join(ROOT, "examples", e + ".mlir")).read()
               for e in EXAMPLES}

    # (name, IR text, pipeline flag)
    cases = []
    if a.mode in ("options", "all"):
        for p in pipelines:
            for o in GPU_OPTIONS if p == "gpu" else CPU_OPTIONS:
                for e in EXAMPLES:
                    cases.append((f"{e} {p} {o}", sources[e], pipeline_flag(p, o)))
    dims = r"(?<=[<x])(\d+)(?=[x>])"
    if a.mode in ("degenerate", "all"):
        for p in pipelines:
            for e in EXAMPLES:
                for n in sorted(set(re.findall(dims, sources[e])), key=int):
                    for v in ("0", "1"):
                        text = re.sub(r"(?<=[<x])" + n + r"(?=[x>])", v, sources[e])
                        cases.append((f"{e} {p} dims {n}->{v}", text, pipeline_flag(p)))
    if a.mode in ("ir", "all"):
        for i in range(a.runs):
            e = rng.choice(EXAMPLES)
            text, what = sources[e], []
            for _ in range(rng.choice([1, 1, 2])):
                text, w = mutate(rng, text)
                what.append(w)
            p = rng.choice(pipelines)
            cases.append((f"{e} {p} mutant {i}: {', '.join(what)}", text,
                          pipeline_flag(p)))

    def run(case):
        name, text, flag = case
        fd, path = tempfile.mkstemp(suffix=".mlir", dir=keep)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        cmd = [a.moe_opt, path, flag, "-o", os.devnull]
        rc, err = execute(cmd, 300)
        why = judge(rc, err)
        if why:
            with open(path + ".cmd", "w") as f:
                f.write(" ".join(cmd) + "\n# " + why + "\n" + err[-4000:])
        else:
            os.remove(path)
        return name, why, path

    failures = run_all(cases, run, a.jobs)
    print(f"fuzz-pipelines: {len(cases)} runs, {failures} failed "
          f"(seed {seed}; failing inputs in {keep})")
    return 1 if failures else 0


def mutate(rng, s):
    """One random change of `s`, and what it was."""
    kind = rng.choice(["dim", "dim", "dim", "number", "number", "dtype",
                       "keyword", "line"])
    if kind == "dim":
        nums = sorted(set(re.findall(r"(?<=[<x])(\d+)(?=x)", s)))
        if nums:
            old = rng.choice(nums)
            new = rng.choice(["1", "2", "3", "7", "16", "63", "65", "100", "0"])
            return (re.sub(r"(?<=[<x])" + old + r"(?=[x>])", new, s),
                    f"dimension {old}->{new}")
    if kind == "number":
        ms = list(re.finditer(r"(?<== )-?\d+(\.\d+)?(e[-+]?\d+)?", s))
        if ms:
            m = rng.choice(ms)
            new = rng.choice(["0", "-1", "1", "3", "1000000", "9999999999",
                              "0.0", "-2.5"])
            return s[:m.start()] + new + s[m.end():], f"number {m.group()}->{new}"
    if kind == "dtype":
        old = rng.choice(["bf16", "f16", "f32"])
        new = rng.choice(["bf16", "f16", "f32", "f64", "i32"])
        # (In `64xbf16` the type follows an `x`: no word boundary there.)
        return (re.sub(r"(?<=[x<: ])" + old + r"\b", new, s),
                f"type {old}->{new}")
    if kind == "keyword":
        words = ["softmax", "sigmoid", "topk", "topk_then_softmax",
                 "group_limited_topk", "swiglu", "gelu", "none", "top_p",
                 "dense", "hierarchical", "renormalize", "top2_sum"]
        ms = list(re.finditer(r"\b(" + "|".join(words) + r")\b", s))
        if ms:
            m = rng.choice(ms)
            new = rng.choice(words)
            return s[:m.start()] + new + s[m.end():], f"keyword {m.group()}->{new}"
    lines = s.split("\n")
    cand = [i for i, l in enumerate(lines) if "%" in l and "=" in l]
    if cand:
        i = rng.choice(cand)
        return "\n".join(lines[:i] + lines[i + 1:]), f"line {i + 1} dropped"
    return s, "none"


if __name__ == "__main__":
    sys.exit(main())
