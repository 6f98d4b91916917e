#!/usr/bin/env bash
# The main job: builds moe-mlir, writes the small bundled MoE model (a
# 4-layer Mixtral-style checkpoint in bf16, config.json + model.safetensors,
# made by tools/moe-gen-checkpoint: no download), compiles it with
# moe-compile into per-layer binaries and runs every layer on seeded random
# hidden states, checking each against the C++ reference, with a timing.
#
#   scripts/run-example.sh [family] [tokens]
#       (default: mixtral, 64 tokens; any family of docs/importer.md)
#
# The layers run on the CPU: the GPU backend (--target=cuda:sm_XX) does not
# yet produce artifacts the runtime executes (see README, Status).
set -euo pipefail
cd "$(dirname "$0")/.."
family=${1:-mixtral}
tokens=${2:-64}
bash scripts/build.sh >/dev/null
model=build/models/$family-tiny
out=build/artifacts/$family-tiny
echo "==> writing the bundled $family checkpoint to $model"
python3 tools/moe-gen-checkpoint/moe_gen_checkpoint.py --family "$family" \
  --out "$model" --layers 4 --dtype bf16 --seed 0
echo "==> moe-compile $model --target=cpu -o $out"
build/bin/moe-compile "$model" --target=cpu -o "$out"
echo "==> moe-run $out --all --tokens $tokens --check --bench 10"
build/bin/moe-run "$out" --all --tokens "$tokens" --check --bench 10
