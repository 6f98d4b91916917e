#!/usr/bin/env bash
# Fuzzes the readers of untrusted files (runtime/tests/fuzz: .safetensors,
# .npy, artifact and model manifests) with libFuzzer + ASan + UBSan.
#
#   scripts/fuzz.sh [--time SECONDS] [--jobs N] [target...]
#
# Builds the runtime alone (cmake -S runtime: no LLVM/MLIR needed) with
# clang-22 in build-fuzz/ (-DMOE_FUZZ=ON), then runs each harness (default:
# all three) for SECONDS (default 60) from the checked-in corpus
# test/Fuzz/corpus/<target>/ into build-fuzz/corpus/<target>/. Inputs that
# crash are written to build-fuzz/crashes/<target>/; add each to
# test/Fuzz/corpus/<target>/ once fixed, so that the suite replays it
# (test/Fuzz/replay.test). Exit status: 0 no crash, 1 a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60 jobs=1 targets=()
while (($#)); do
  case $1 in
    --time) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(safetensors npy manifest)

source scripts/packages.sh
ensure_packages clang-22 lld-22 libclang-rt-22-dev cmake ninja-build

build=build-fuzz
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -g -O1"
echo "==> building the fuzz harnesses in $build/"
cmake -S runtime -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++-22 -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DMOE_FUZZ=ON > "$build-cmake.log" 2>&1 || { cat "$build-cmake.log"; exit 1; }
mv "$build-cmake.log" "$build/cmake.log"
ninja -C "$build" $(printf 'moe-fuzz-%s ' "${targets[@]}") > "$build/build.log" 2>&1 ||
  { tail -40 "$build/build.log"; exit 1; }

rc=0
for t in "${targets[@]}"; do
  corpus=$build/corpus/$t crashes=$build/crashes/$t
  mkdir -p "$corpus" "$crashes"
  echo "==> fuzzing $t for ${seconds}s"
  # New inputs go into the first directory ($corpus); the checked-in corpus
  # is read. -jobs > 1 runs workers that log to fuzz-N.log (moved below).
  par=()
  ((jobs > 1)) && par=(-jobs="$jobs" -workers="$jobs")
  if ! ASAN_OPTIONS=detect_leaks=1 "$build/bin/moe-fuzz-$t" "$corpus" "test/Fuzz/corpus/$t" \
      -max_total_time="$seconds" ${par[@]+"${par[@]}"} -max_len=65536 -rss_limit_mb=4096 \
      -artifact_prefix="$crashes/" -print_final_stats=1 > "$build/fuzz-$t.log" 2>&1; then
    rc=1
    echo "    CRASH: $(grep -m1 -E 'ERROR|SUMMARY|deadly signal' "$build/fuzz-$t.log" || true)"
    echo "    inputs: $(ls "$crashes" | head -5 | tr '\n' ' ')  (log: $build/fuzz-$t.log)"
  else
    echo "    $(grep -m1 'stat::number_of_executed_units' "$build/fuzz-$t.log" | tr -s ' ') runs," \
      "$(ls "$corpus" | wc -l) corpus inputs, no crash"
  fi
done
for f in fuzz-[0-9]*.log; do
  [[ -f $f ]] && mv "$f" "$build/"
done
exit "$rc"
