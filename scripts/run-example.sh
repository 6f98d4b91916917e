#!/usr/bin/env bash
# The main job: builds moe-mlir, writes the small bundled MoE model (a
# 4-layer Mixtral-style checkpoint in bf16, config.json + model.safetensors,
# made by tools/moe-gen-checkpoint: no download), compiles it with
# moe-compile into GPU binaries (sm_90 cubins) and CPU binaries, and runs
# every layer on seeded random hidden states — on the GPU when one is
# present (moe-cuda-probe), else on the CPU on every core — checking each
# layer against the C++ reference, with a timing.
#
#   scripts/run-example.sh [family] [tokens]
#       (default: mixtral, 64 tokens; any family of docs/importer.md)
set -euo pipefail
cd "$(dirname "$0")/.."
family=${1:-mixtral}
tokens=${2:-64}
bash scripts/build.sh >/dev/null
model=build/models/$family-tiny
echo "==> writing the bundled $family checkpoint to $model"
python3 tools/moe-gen-checkpoint/moe_gen_checkpoint.py --family "$family" \
  --out "$model" --layers 4 --dtype bf16 --seed 0
for target in cuda:sm_90 cpu; do
  out=build/artifacts/$family-tiny-${target%%:*}
  echo "==> moe-compile $model --target=$target -o $out"
  build/bin/moe-compile "$model" --target="$target" -o "$out"
done
threads=()
if device=$(build/bin/moe-cuda-probe 2>&1); then
  out=build/artifacts/$family-tiny-cuda
  echo "==> GPU: $(echo "$device" | head -1)"
else
  out=build/artifacts/$family-tiny-cpu
  # Every core: the layers' parallel loops, or the tokens (runThreaded).
  threads=(--threads "$(nproc)")
  echo "==> no GPU ($(echo "$device" | head -1)): running on the CPU"
fi
echo "==> moe-run $out --all --tokens $tokens --check --bench 10 ${threads[*]}"
build/bin/moe-run "$out" --all --tokens "$tokens" --check --bench 10 "${threads[@]}"
