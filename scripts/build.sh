#!/usr/bin/env bash
# Installs what is missing (Debian packages), configures and builds moe-mlir.
# Safe to run any number of times: installed packages and an existing build
# directory are reused.
#
#   scripts/build.sh [--sanitize] [ninja targets...]
#
# --sanitize builds in build-asan/ with AddressSanitizer + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build
cmake_extra=()
if [[ "${1:-}" == "--sanitize" ]]; then
  shift
  build_dir=build-asan
  cmake_extra+=(-DMOE_ENABLE_SANITIZERS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
  sanitize=1
fi

packages=(llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools clang-22 lld-22
          cmake ninja-build ccache python3)
# clang's AddressSanitizer/UBSan runtimes
[[ -n "${sanitize:-}" ]] && packages+=(libclang-rt-22-dev)
source scripts/packages.sh
ensure_packages "${packages[@]}"

llvm=/usr/lib/llvm-22
if [[ ! -f "$build_dir/build.ninja" ]]; then
  echo "==> configuring $build_dir"
  cmake -S . -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER="$llvm/bin/clang" -DCMAKE_CXX_COMPILER="$llvm/bin/clang++" \
    -DLLVM_USE_LINKER=lld \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DMLIR_DIR="$llvm/lib/cmake/mlir" \
    -DLLVM_EXTERNAL_LIT="$llvm/bin/lit" \
    "${cmake_extra[@]}" >/dev/null
fi
echo "==> building $build_dir"
ninja -C "$build_dir" "$@"
