#!/usr/bin/env bash
# The main job: builds moe-mlir, compiles a bundled MoE layer into a CPU
# artifact (shared object + manifest) and runs it on seeded random inputs,
# checking the output against the C++ reference.
#
#   scripts/run-example.sh [example.mlir] [tokens]
#       (default: examples/mixtral.mlir, 64 tokens)
#
# GPU code generation arrives with the GPU backend; until then the layer runs
# on the CPU whether or not a GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-examples/mixtral.mlir}
tokens=${2:-64}
bash scripts/build.sh >/dev/null
name=$(basename "$example" .mlir)
out=build/artifacts/$name
echo "==> moe-compile $example -o $out"
build/bin/moe-compile "$example" -o "$out"
# --check needs a single-moe.layer entry (the manifest then records the
# layer's configuration); other modules just run.
check=()
grep -q '"layer"' "$out/manifest.json" && check=(--check)
echo "==> moe-run $out --tokens $tokens ${check[*]} --bench 10"
build/bin/moe-run "$out" --tokens "$tokens" "${check[@]}" --bench 10
