#!/usr/bin/env bash
# GPU correctness run: compile here, run on a lent GPU machine.
#
#   bash scripts/gpu-run.sh prepare [--jobs N]
#       HERE (LLVM/MLIR, the CUDA toolkit's ptxas, a built build/bin/moe-compile):
#       compiles every cuda:sm_90 artifact to test into gpu-bundle/ (ignored by
#       git): the layers of test/Integration/CPU/layers.py, the examples/*.mlir
#       (and the bf16 ones with the gather combine, BM = 128 tiles,
#       split-K, 8-warp blocks and sm_90a wgmma), and
#       one model directory per family of tools/moe-gen-checkpoint.
#
#   bash scripts/gpu-run.sh device [--fake] [--tokens 1,1000,64,4096,3]
#           [--jobs N] [--timeout 60] [--budget 540] [--filter REGEX]
#       ON THE GPU MACHINE, from the repository root (no LLVM/MLIR needed):
#       builds the runtime, moe-run (with the C++ reference) and
#       moe-cuda-probe with CMake into build-device/, prints the device
#       (moe-cuda-probe, then --smoke), then runs every artifact of
#       gpu-bundle/ with `moe-run ... --tokens T --seed S --check` for each T
#       and prints one table (artifact | T | seed | s | result) ending in
#       `gpu-tests: N passed, N failed`. Writes gpu-results.txt (and
#       device-info.txt, gpu-progress.txt, gpu-logs/ of failing runs,
#       device-build.log) to $OUT when set, else build-device/gpu-out/.
#       Exit: 0 all passed; 1 a run failed or was not run; 2 no usable CUDA
#       device; 3 the build failed; 4 no gpu-bundle.
#       --fake (or MOE_GPU_FAKE=1): a dry run against the fake driver
#       (runtime/tests/FakeCuda.cpp, built alongside): the host side runs,
#       no kernel does, so every check is an expected MISMATCH; exit 0 unless
#       a run errors, times out or is not run.
#       --budget: no run starts later than this many seconds after the
#       script started (build included), so that the table is written
#       before the run tool's 600 s limit.
#
#   bash scripts/gpu-run.sh          this help, with the run tool call to make.
#
#   bash scripts/gpu-run.sh bench [gpu_bench.py run options]
#       ON THE GPU MACHINE: builds the runtime as `device` does and runs
#       benchmarks/gpu_bench.py at the shapes of MOE_SEMANTICS.md section 6
#       (our $bundle/bench/ artifacts through moe-run --bench, PyTorch eager,
#       torch.compile, torch._grouped_mm, dense cuBLAS); the table goes to
#       $OUT/gpu-bench.txt. E.g. --shapes mixtral-8x7b --tokens 1,16,4096.
#       Then per-kernel profiles of the Mixtral layer (MOE_BENCH_PROFILE)
#       to $OUT/gpu-profile.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bundle=${MOE_GPU_BUNDLE:-gpu-bundle}
chip=${MOE_GPU_CHIP:-sm_90}
# The chip a variant compiles for: wgmma (expert-wgmma=1) needs sm_90a's
# architecture-specific features; its cubins load on sm_90 devices only.
variant_chip() {
  if [[ $1 == *expert-wgmma=1* && $chip == sm_90 ]]; then echo sm_90a; else echo "$chip"; fi
}

usage() {
  cat <<'EOF'
usage: bash scripts/gpu-run.sh prepare [--jobs N]        (here: compile gpu-bundle/)
       bash scripts/gpu-run.sh device [--fake] [--tokens LIST] [--jobs N]
                                      [--timeout S] [--budget S] [--filter REGEX]
                                                         (on the GPU machine)

Steps for a session with a GPU machine:
  1. here:  bash scripts/gpu-run.sh prepare
  2. the run tool call:
       run(command="bash scripts/gpu-run.sh device", carry=["gpu-bundle"], timeout_s=600)
     results: the output's tail (failures + the `gpu-tests:` line) and the
     returned file gpu-results.txt (the whole table), gpu-logs/*.txt (output
     of failing runs), device-info.txt, device-build.log.
  A subset: run(command="bash scripts/gpu-run.sh device --filter 'example/|model/'
  --tokens 1,64", carry=["gpu-bundle"]).
  3. the benchmark (a second call):
       run(command="bash scripts/gpu-run.sh bench", carry=["gpu-bundle"], timeout_s=600)
  Dry run here (no GPU; fake driver, every check an expected MISMATCH):
       bash scripts/gpu-run.sh device --fake
EOF
}

die() { echo "gpu-run: error: $*" >&2; exit "${2:-1}"; }

# ---------------------------------------------------------------- prepare ---
prepare() {
  local jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  while (($#)); do
    case $1 in
      --jobs) jobs=$2; shift 2 ;;
      *) die "prepare: unknown option '$1'" ;;
    esac
  done
  local bin=${MOE_BIN:-build/bin}
  [[ $bin == /* ]] || bin=$root/$bin
  [[ -x $bin/moe-compile ]] ||
    die "no $bin/moe-compile: build it first (bash scripts/build.sh), or set MOE_BIN"
  local newer
  newer=$(find lib include tools -type f -newer "$bin/moe-compile" 2>/dev/null | head -1)
  if [[ -n $newer ]]; then
    echo "gpu-run: warning: $newer is newer than $bin/moe-compile: rebuild first" \
      "(bash scripts/build.sh) unless that change does not matter" >&2
  fi
  if [[ $bundle == gpu-bundle ]] && ! git check-ignore -q "$bundle/"; then
    echo "gpu-run: warning: $bundle/ is not ignored by git (add /$bundle/ to .gitignore)" >&2
  fi
  tmp=$(mktemp -d) # global: the EXIT trap runs after this function returns
  trap 'rm -rf "${tmp:-}"' EXIT
  local out=$tmp/bundle # moved into place when complete
  mkdir -p "$out"/{layers,examples,models} "$tmp"/{src,fail,ckpt}
  local t0=$SECONDS

  # The integration matrix: one dynamic-T module per configuration.
  local layers_py=test/Integration/CPU/layers.py
  python3 $layers_py --list > "$tmp/layers.txt"
  while read -r n; do
    python3 $layers_py --write "$n" --out "$tmp/src/$n.mlir"
  done < "$tmp/layers.txt"
  echo "==> compiling $(wc -l < "$tmp/layers.txt") layers of $layers_py for cuda:$chip ($jobs jobs)"
  export MOE_COMPILE="$bin/moe-compile" CHIP=$chip TMPD=$tmp OUTD=$out
  # shellcheck disable=SC2016
  xargs -P "$jobs" -I{} bash -c '
    "$MOE_COMPILE" "$TMPD/src/$1.mlir" --target=cuda:$CHIP -o "$OUTD/layers/$1" \
      > "$TMPD/fail/$1.log" 2>&1 && rm -f "$TMPD/fail/$1.log"' _ {} < "$tmp/layers.txt" ||
    true

  echo "==> compiling examples/*.mlir"
  local e
  for e in examples/*.mlir; do
    e=$(basename "$e" .mlir)
    "$bin/moe-compile" "examples/$e.mlir" --target=cuda:"$chip" -o "$out/examples/$e" \
      > "$tmp/fail/example_$e.log" 2>&1 && rm -f "$tmp/fail/example_$e.log"
  done

  # Pipeline-option variants checked like the defaults (the gather combine
  # and BM = 128 expert tiles have only been timed on a GPU so far, the
  # latter with 2 stages: now 3 in dynamic shared memory; with
  # BK = 16 the Mixtral example's down has 8 K steps, enough for the split-K
  # set, which T = 1, 3 and 64 then take).
  echo "==> compiling option variants of the bf16 examples"
  mkdir -p "$out/variants"
  local ve vn vo
  for ve in mixtral deepseek_v3; do
    for vn in gather tm128 splitk w8 wgmma wgmma-tma; do
      case $vn in
        gather) vo="expert-combine=gather" ;;
        tm128) vo="expert-tile-m=128" ;;
        w8) vo="expert-warps=8" ;;
        wgmma) vo="expert-wgmma=1" ;;
        # TMA weight tiles in the wide (BM = 128) wgmma set: T = 1000 and
        # 4096 of the matrix take it (session 25). DeepSeek-V3's shared
        # expert, fused into the routed grid by default, keeps cp.async for
        # its tiles: unfused here so that its routed kernels take TMA.
        wgmma-tma) vo="expert-wgmma=1 expert-tma=1"
          [[ $ve == deepseek_v3 ]] && vo+=" expert-fuse-shared=0" ;;
        splitk) vo="expert-tile-k=16" ;;
      esac
      "$bin/moe-compile" "examples/$ve.mlir" --target=cuda:"$(variant_chip "$vo")" \
        --pipeline-options="$vo" -o "$out/variants/$ve.$vn" \
        > "$tmp/fail/variant_$ve.$vn.log" 2>&1 && rm -f "$tmp/fail/variant_$ve.$vn.log"
    done
  done
  # AT-MoE with the LoRA kernels unfused (lora_b, the base's linear kernel,
  # the combine's generic kernels): the default fuses them into lora_out.
  "$bin/moe-compile" examples/at_moe.mlir --target=cuda:"$chip" \
    --pipeline-options="lora-fuse-combine=0" -o "$out/variants/at_moe.unfused" \
    > "$tmp/fail/variant_at_moe.unfused.log" 2>&1 && rm -f "$tmp/fail/variant_at_moe.unfused.log"
  # AT-MoE with the tensor-core lora_out_mma at every T (the default takes it
  # from 4096 tokens for this O = 64, so only T = 4096 of the matrix would
  # run it): after lora_a below 140 tokens, after lora_a_mma (the A products
  # of all experts densely) from there; and lora_a before it at every T
  # (lora-dense-a-min-tokens=0).
  "$bin/moe-compile" examples/at_moe.mlir --target=cuda:"$chip" \
    --pipeline-options="linear-mma-min-tokens=1" -o "$out/variants/at_moe.mma" \
    > "$tmp/fail/variant_at_moe.mma.log" 2>&1 && rm -f "$tmp/fail/variant_at_moe.mma.log"
  "$bin/moe-compile" examples/at_moe.mlir --target=cuda:"$chip" \
    --pipeline-options="linear-mma-min-tokens=1 lora-dense-a-min-tokens=0" \
    -o "$out/variants/at_moe.mma-nodense" > "$tmp/fail/variant_at_moe.mma-nodense.log" 2>&1 &&
    rm -f "$tmp/fail/variant_at_moe.mma-nodense.log"
  # The Cartesian example with its residual and norm on the generic path
  # (seven kernels): the default runs them as one norm kernel.
  "$bin/moe-compile" examples/cartesian.mlir --target=cuda:"$chip" \
    --pipeline-options="norm-kernels=0" -o "$out/variants/cartesian.generic-norm" \
    > "$tmp/fail/variant_cartesian.generic-norm.log" 2>&1 &&
    rm -f "$tmp/fail/variant_cartesian.generic-norm.log"

  echo "==> writing one checkpoint per family (moe-gen-checkpoint, bf16, 2 layers) and compiling it"
  python3 tools/moe-gen-checkpoint/moe_gen_checkpoint.py --family all --out "$tmp/ckpt" \
    --layers 2 --dtype bf16 --seed 0 > "$tmp/ckpt.log"
  local m
  for m in "$tmp"/ckpt/*/; do
    m=$(basename "$m")
    "$bin/moe-compile" "$tmp/ckpt/$m" --target=cuda:"$chip" -o "$out/models/$m" -j "$jobs" \
      > "$tmp/fail/model_$m.log" 2>&1 && rm -f "$tmp/fail/model_$m.log"
  done

  echo "==> compiling the benchmark layers (MOE_SEMANTICS.md section 6, bf16, dynamic T; and mixtral-8x7b-f32)"
  python3 benchmarks/gpu_bench.py emit --out "$tmp/bench-src" > /dev/null
  mkdir -p "$out/bench"
  local s
  for s in "$tmp"/bench-src/*.mlir; do
    s=$(basename "$s" .mlir)
    "$bin/moe-compile" "$tmp/bench-src/$s.mlir" --target=cuda:"$chip" -o "$out/bench/$s" \
      > "$tmp/fail/bench_$s.log" 2>&1 && rm -f "$tmp/fail/bench_$s.log"
    # The combine as a segmented reduction instead of f32 atomics: the issue
    # asks for both to be measured.
    "$bin/moe-compile" "$tmp/bench-src/$s.mlir" --target=cuda:"$chip" \
      --pipeline-options="expert-combine=gather" -o "$out/bench/$s.gather" \
      > "$tmp/fail/bench_$s.gather.log" 2>&1 && rm -f "$tmp/fail/bench_$s.gather.log"
  done
  # Variants measured beside the defaults (MOE_BENCH_VARIANTS: ';'-separated
  # shape:name:pipeline-options, e.g. "mixtral-8x7b:tm128:expert-tile-m=128";
  # gpu_bench.py reports each as "moe-mlir name"). Unset: the "before" state
  # of each change not measured on a GPU yet (benchmarks/RESULTS.md); set it
  # empty for none.
  local default_variants="mixtral-8x7b:nosplit:expert-split-k-blocks=0"
  default_variants+=";mixtral-8x7b:sync:async-launches=0"
  default_variants+=";mixtral-8x7b:static:expert-dynamic-smem=0"
  default_variants+=";mixtral-8x7b:s4:expert-stages=4"
  default_variants+=";mixtral-8x7b:w8:expert-warps=8"
  default_variants+=";mixtral-8x7b:wgmma:expert-wgmma=1"
  default_variants+=";mixtral-8x7b:wgmma-tma:expert-wgmma=1 expert-tma=1"
  # The BM = 128 set before its wide tiles (128 x 256 x 64, 8 warps for
  # mma.sync): 128 x 128 x 32, 4 warps; with wgmma too.
  default_variants+=";mixtral-8x7b:narrow:expert-wide-tiles=0"
  default_variants+=";mixtral-8x7b:wgmma-narrow:expert-wgmma=1 expert-wide-tiles=0"
  default_variants+=";qwen3-30b-a3b:wgmma:expert-wgmma=1"
  # wgmma's BK 64 tiles without the 128-byte swizzle (session 14 added it).
  default_variants+=";mixtral-8x7b:wgmma-noswz:expert-wgmma=1 expert-wgmma-swizzle=0"
  # mma.sync with BK 64 in every set (vLLM's H100 tables use 64-128).
  default_variants+=";mixtral-8x7b:k64:expert-tile-k=64"
  # Scalar f32 atomics in the combine (PTX 8.0: no vector reductions).
  default_variants+=";mixtral-8x7b:ptx80:features=+ptx80"
  # The plain block order of the expert GEMM grids (session 14 groups them).
  default_variants+=";mixtral-8x7b:nogroup:expert-group-m=1"
  default_variants+=";qwen3-30b-a3b:nogroup:expert-group-m=1"
  default_variants+=";deepseek-v3:nolinear:linear-kernels=0"
  default_variants+=";deepseek-v3:noshared:expert-fuse-shared=0"
  default_variants+=";qwen3-30b-a3b:nolinear:linear-kernels=0"
  # The fused routing kernel from 256 tokens (session 23 takes the router
  # GEMM on tensor cores, linear_mma, and the kernel on its logits there).
  default_variants+=";qwen3-30b-a3b:fused:route-linear-mma-min-tokens=0"
  # Many experts without the BM = 128 set (session 23 forms it beside
  # BM = 32 too: Qwen3 takes it from T = 2048).
  default_variants+=";qwen3-30b-a3b:nolarge:expert-large-tile-rows=0"
  local v shape vname vopts variants=()
  IFS=';' read -ra variants <<< "${MOE_BENCH_VARIANTS-$default_variants}"
  for v in ${variants[@]+"${variants[@]}"}; do
    [[ -n $v ]] || continue
    IFS=: read -r shape vname vopts <<< "$v"
    [[ -f $tmp/bench-src/$shape.mlir ]] || die "MOE_BENCH_VARIANTS: no shape '$shape'"
    "$bin/moe-compile" "$tmp/bench-src/$shape.mlir" --target=cuda:"$(variant_chip "$vopts")" \
      --pipeline-options="$vopts" -o "$out/bench/$shape.$vname" \
      > "$tmp/fail/bench_$shape.$vname.log" 2>&1 && rm -f "$tmp/fail/bench_$shape.$vname.log"
  done

  # index.txt: `kind name path` for every artifact that compiled.
  {
    echo "# kind name path (relative to this directory); made by scripts/gpu-run.sh prepare"
    for e in "$out"/examples/*/; do
      if [[ -f $e/manifest.json ]]; then
        echo "example $(basename "$e") examples/$(basename "$e")"
      fi
    done
    # The examples again through CUDA graphs (moe-run --cuda-graphs: the
    # checked call replays a graph captured on other inputs).
    for e in "$out"/examples/*/; do
      if [[ -f $e/manifest.json ]]; then
        echo "graphs $(basename "$e") examples/$(basename "$e")"
      fi
    done
    # And the layers whose host code loaded memory before session 31 (the
    # capacity admission was a host scan) or whose kernels it changed
    # (MoE++'s special kernel): a replay must not repeat the captured
    # admissions.
    while read -r n; do
      if [[ $n =~ ^(capacity|switch|output_bias_shared|scale_input_k2|special)_ &&
            -f $out/layers/$n/manifest.json ]]; then
        echo "graphs $n layers/$n"
      fi
    done < "$tmp/layers.txt"
    for m in "$out"/models/*/; do
      if [[ -f $m/model.json ]]; then
        echo "model $(basename "$m") models/$(basename "$m")"
      fi
    done
    for v in "$out"/variants/*/; do
      if [[ -f $v/manifest.json ]]; then
        echo "variant $(basename "$v") variants/$(basename "$v")"
      fi
    done
    while read -r n; do
      if [[ -f $out/layers/$n/manifest.json ]]; then
        echo "layer $n layers/$n"
      fi
    done < "$tmp/layers.txt"
  } > "$out/index.txt"
  # vLLM's Triton fused_moe kernel for the benchmark's "vllm" row: from the
  # ignored third_party/vllm/ (retrieved once from the stored copy of vLLM,
  # never committed; docs/notes/gpu-path.md "vLLM baseline").
  rm -rf "$out/bench/vllm"
  if [[ -f third_party/vllm/fused_moe_kernel.py ]]; then
    cp -r third_party/vllm "$out/bench/vllm"
    echo "==> vLLM baseline: third_party/vllm copied into $out/bench/vllm"
  else
    echo "==> vLLM baseline: no third_party/vllm/fused_moe_kernel.py, the bench has no vllm row"
  fi
  {
    echo "made: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "target: cuda:$chip"
    echo "moe-compile: $bin/moe-compile"
    echo "ptxas: $( (ptxas --version 2>/dev/null || /usr/local/cuda/bin/ptxas --version 2>/dev/null) | tail -1)"
    echo "vllm baseline: $([[ -d $out/bench/vllm ]] && echo included || echo absent)"
  } > "$out/info.txt"

  local nfail
  nfail=$(find "$tmp/fail" -name '*.log' | wc -l)
  if ((nfail)); then
    echo "==> $nfail compile failures (left out of the bundle):"
    local f
    for f in "$tmp"/fail/*.log; do
      echo "  $(basename "$f" .log): $(grep -m1 -i error "$f" || head -1 "$f")"
    done
  fi
  rm -rf "$bundle"
  mv "$out" "$bundle"
  local bytes mib
  bytes=$(du -sb "$bundle" | cut -f1)
  mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
  count() { grep -c "$1" "$bundle/index.txt" || true; }
  echo "==> $bundle/: $(count '^[a-z]') artifacts ($(count '^example ') examples," \
    "$(count '^variant ') option variants, $(count '^model ') models," \
    "$(count '^layer ') layers), $mib MiB, $((SECONDS - t0)) s"
  if ((bytes > 60 * 1048576)); then
    die "$bundle/ is $mib MiB: over the run tool's 64 MiB carry limit"
  elif ((bytes > 40 * 1048576)); then
    echo "gpu-run: warning: $bundle/ is $mib MiB (> 40 MiB)" >&2
  fi
  echo "carry: [\"$bundle\"]"
  echo "then:  run(command=\"bash scripts/gpu-run.sh device\", carry=[\"$bundle\"], timeout_s=600)"
  ((nfail == 0)) || exit 1
}

# The runtime from source, standalone (runtime/CMakeLists.txt as the top
# level: no LLVM/MLIR), into $1, logging to $2. Kept between calls on a warm
# machine; a cache from another source path or generator is thrown away and
# redone.
build_runtime() {
  local build=$1 log=$2 gen=()
  command -v cmake >/dev/null || die "no cmake on this machine" 3
  command -v ninja >/dev/null && gen=(-G Ninja)
  echo "==> building the runtime in ${build#"$root"/}/ (cmake -S runtime)"
  local b0=$SECONDS
  configure() {
    cmake -S runtime -B "$build" ${gen[@]+"${gen[@]}"} -DCMAKE_BUILD_TYPE=Release > "$log" 2>&1
  }
  if ! configure; then
    rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"
    configure || { tail -30 "$log"; die "configuring the runtime failed (log: $log)" 3; }
  fi
  if ! cmake --build "$build" -j "${MOE_BUILD_JOBS:-$(nproc 2>/dev/null || echo 4)}" \
      --target moe-run moe-cuda-probe moe-cuda-graph-test moe-fake-cuda >> "$log" 2>&1; then
    grep -m20 -iE 'error|undefined' "$log" || tail -30 "$log"
    die "building the runtime failed (log: $log)" 3
  fi
  echo "    built in $((SECONDS - b0)) s: $(grep -m1 'CMAKE_CXX_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2)"
}

# ------------------------------------------------------------------ bench ---
# On the GPU machine: gpu_bench.py at the shapes of MOE_SEMANTICS.md §6
# against PyTorch eager, torch.compile, torch._grouped_mm, vLLM's Triton
# fused_moe kernel (when the bundle has it) and dense cuBLAS,
# with our artifacts of $bundle/bench/ run through moe-run --bench.
bench() {
  local build=${MOE_DEVICE_BUILD:-build-device} args=() rc=0
  [[ $build == /* ]] || build=$root/$build
  local outdir=${OUT:-$build/gpu-out}
  mkdir -p "$outdir"
  while (($#)); do args+=("$1"); shift; done
  [[ -d $bundle/bench ]] || die "no $bundle/bench: run \`bash scripts/gpu-run.sh prepare\` here first" 4
  build_runtime "$build" "$outdir/device-build.log"
  python3 benchmarks/gpu_bench.py run --artifacts "$bundle/bench" \
    --moe-run "$build/bin/moe-run" --out "$outdir/gpu-bench.txt" \
    ${args[@]+"${args[@]}"} || rc=$?
  echo "(table: $outdir/gpu-bench.txt)"
  # Per-kernel times (MOE_CUDA_PROFILE=1: CUDA events around each launch)
  # of the Mixtral layer at decode and prefill, for the default kernels and
  # wgmma and wgmma with TMA, and of Qwen3 at decode (small experts: 0.38 ms
  # for ~25 us of weight bytes when last measured) (MOE_BENCH_PROFILE: other
  # `artifact:T` pairs, e.g. mixtral-8x7b.narrow:4096; empty: none). 40 s
  # each at most. DeepSeek-V3 is left out: moe-run draws its 22.5 GB of
  # weights on the host (45 GB as f32 for the reference), minutes of the
  # device time; name deepseek-v3:1 here when there is time for it.
  local profile=${MOE_BENCH_PROFILE-mixtral-8x7b:1 mixtral-8x7b:4096 mixtral-8x7b.wgmma:4096 mixtral-8x7b.wgmma-tma:4096 qwen3-30b-a3b:1}
  local p a t
  : > "$outdir/gpu-profile.txt"
  for p in $profile; do
    a=${p%%:*} t=${p##*:}
    [[ -d $bundle/bench/$a ]] || continue
    echo "==> profile $a T=$t" | tee -a "$outdir/gpu-profile.txt"
    MOE_CUDA_PROFILE=1 timeout 40 "$build/bin/moe-run" "$bundle/bench/$a" \
      --tokens "$t" --bench 3 2>&1 | grep -E "moe-cuda-profile|bench:|error" |
      tee -a "$outdir/gpu-profile.txt" || true
  done
  echo "(profiles: $outdir/gpu-profile.txt)"
  return "$rc"
}

# ----------------------------------------------------------------- device ---
device() {
  local start
  start=$(date +%s)
  local fake=${MOE_GPU_FAKE:-0} budget=540 runner_args=()
  while (($#)); do
    case $1 in
      --fake) fake=1; shift ;;
      --tokens|--jobs|--timeout|--filter) runner_args+=("$1" "$2"); shift 2 ;;
      --budget) budget=$2; shift 2 ;;
      *) die "device: unknown option '$1' (see: bash scripts/gpu-run.sh)" ;;
    esac
  done
  local build=${MOE_DEVICE_BUILD:-build-device}
  [[ $build == /* ]] || build=$root/$build
  local outdir=${OUT:-$build/gpu-out}
  mkdir -p "$outdir"
  outdir=$(cd "$outdir" && pwd)
  local results=$outdir/gpu-results.txt
  rm -rf "$results" "$outdir/gpu-progress.txt" "$outdir/gpu-logs"

  [[ -f $bundle/index.txt ]] || {
    echo "gpu-run: no $bundle/index.txt: run \`bash scripts/gpu-run.sh prepare\` where" \
      "LLVM/MLIR are and pass carry [\"$bundle\"] to the run tool" | tee "$results" >&2
    exit 4
  }

  {
    echo "host: $(uname -nrm)"
    echo "glibc: $(ldd --version 2>&1 | head -1)"
    echo "compiler: $("${CXX:-c++}" --version 2>/dev/null | head -1 || echo "none as ${CXX:-c++}")"
    echo "cmake: $(cmake --version 2>/dev/null | head -1 || echo none)"
    echo "ninja: $(ninja --version 2>/dev/null || echo none)"
    echo "python: $(python3 --version 2>&1 || echo none)"
    if ((fake == 0)) && command -v nvidia-smi >/dev/null; then
      echo "nvidia-smi: $(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -4 | paste -sd';')"
    fi
    echo "bundle: $(grep -c '^[a-z]' "$bundle/index.txt") artifacts; $(paste -sd';' "$bundle/info.txt" 2>/dev/null | sed 's/;/; /g')"
  } > "$outdir/device-info.txt"
  cat "$outdir/device-info.txt"
  if [[ $(uname -m) != x86_64 ]]; then
    echo "gpu-tests: not run: this host is $(uname -m), the bundle's host code is x86-64" |
      tee "$results"
    exit 2
  fi
  command -v python3 >/dev/null || die "no python3 on this machine" 3

  build_runtime "$build" "$outdir/device-build.log"

  if ((fake)); then
    export MOE_LIBCUDA=${MOE_LIBCUDA:-$build/lib/libmoe-fake-cuda.so}
    echo "==> dry run: MOE_LIBCUDA=$MOE_LIBCUDA (fake driver: no kernel runs)"
    runner_args+=(--fake)
  fi

  echo "==> moe-cuda-probe"
  local probe rc=0
  probe=$(timeout 60 "$build/bin/moe-cuda-probe" 2>&1) || rc=$?
  echo "$probe"
  echo "$probe" >> "$outdir/device-info.txt"
  if ((rc)); then
    ((rc == 124)) && probe="moe-cuda-probe timed out after 60 s"
    echo "gpu-tests: not run: $(echo "$probe" | head -1) (exit $rc)" | tee "$results"
    exit 2
  fi
  echo "==> moe-cuda-probe --smoke"
  local smoke_rc=0
  timeout 60 "$build/bin/moe-cuda-probe" --smoke 2>&1 | tee -a "$outdir/device-info.txt" ||
    smoke_rc=$?
  ((smoke_rc == 0)) || echo "gpu-run: moe-cuda-probe --smoke failed (exit $smoke_rc); running the artifacts anyway"
  # The allocation cache's stream-ordered frees on a real device: a block
  # freed behind a queued 64 MiB memset must not reach the host while the
  # memset may still write it ("0 of N overwritten").
  echo "==> moe-cuda-probe --stream-order"
  timeout 60 "$build/bin/moe-cuda-probe" --stream-order 2>&1 | tee -a "$outdir/device-info.txt" ||
    smoke_rc=$?
  # TMA tensor maps on this driver (session 25; no kernel uses them yet):
  # cuTensorMapEncodeTiled through mgpuTensorMapEncodeTiledMemref, lines
  # "tensor-map: ok ..." / "tensor-map: FAIL ..." (the first two depend on
  # the driver; the limit checks are the runtime's own).
  echo "==> moe-cuda-probe --tensor-map"
  timeout 60 "$build/bin/moe-cuda-probe" --tensor-map 2>&1 | tee -a "$outdir/device-info.txt" ||
    echo "gpu-run: moe-cuda-probe --tensor-map failed" | tee -a "$outdir/device-info.txt"
  # CUDA graphs on this driver (session 24; the fake driver's stream capture
  # is the author's reading): the capture API and an artifact's graphs on
  # the Mixtral example, lines "cuda-graphs: ok ..." / "cuda-graphs: FAIL ...".
  if [[ -f $bundle/examples/mixtral/manifest.json ]]; then
    echo "==> moe-cuda-graph-test (CUDA graphs)"
    local graphs_rc=0
    timeout 60 "$build/bin/moe-cuda-graph-test" "$bundle/examples/mixtral" 2>&1 |
      sed 's/^/cuda-graphs: /' | tee -a "$outdir/device-info.txt" || graphs_rc=$?
    ((graphs_rc == 0)) ||
      echo "gpu-run: moe-cuda-graph-test failed (exit $graphs_rc); the graphs/ rows say more" |
      tee -a "$outdir/device-info.txt"
  fi

  # How wgmma reads the expert kernels' shared-memory layout, checked with
  # nvcc alone (scripts/gpu/wgmma_probe.py): if the `wgmma` variants fail,
  # its lines say whether the descriptor fields are misread. Real GPU only.
  if ((!fake)); then
    echo "==> wgmma layout probe (nvcc, sm_90a)"
    timeout 120 python3 scripts/gpu/wgmma_probe.py --keep "$build/wgmma-probe" 2>&1 |
      tee -a "$outdir/device-info.txt" || true
  fi

  echo "==> moe-run --check over $bundle/ (budget: ${budget} s from the start)"
  local rc_tests=0
  python3 scripts/gpu/run_tests.py --bin "$build/bin" --bundle "$bundle" \
    --start "$start" --budget "$budget" --results "$results" \
    --progress "$outdir/gpu-progress.txt" --logs "$outdir/gpu-logs" \
    ${runner_args[@]+"${runner_args[@]}"} || rc_tests=$?
  if ((smoke_rc)); then
    echo "gpu-run: note: moe-cuda-probe --smoke or --stream-order failed (exit $smoke_rc)" | tee -a "$results"
    ((rc_tests)) || rc_tests=1
  fi
  echo "(table: $results)"
  exit "$rc_tests"
}

case ${1:-} in
  prepare) shift; prepare "$@" ;;
  device) shift; device "$@" ;;
  bench) shift; bench "$@" ;;
  ""|-h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
