#!/usr/bin/env bash
# The main job, as far as the compiler goes today: builds moe-mlir, then
# parses, verifies, decomposes and canonicalises a bundled MoE layer and
# prints the result.
#
#   scripts/run-example.sh [example.mlir]     (default: examples/mixtral.mlir)
#
# Code generation (CPU and GPU) and execution arrive with the lowering
# pipelines; until then this stops at the decomposed moe IR.
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-examples/mixtral.mlir}
bash scripts/build.sh >/dev/null
echo "==> $example: parse + verify"
build/bin/moe-opt "$example" >/dev/null
echo "==> $example: --moe-decompose --canonicalize"
build/bin/moe-opt "$example" --moe-decompose --canonicalize
