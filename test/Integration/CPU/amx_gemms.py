#!/usr/bin/env python3
"""The blocked GEMMs on AMX tiles (`gemm-amx=1`: bf16 weights and input,
O and I multiples of 32) against the C++ reference, at shapes and token
counts that reach every part of the AMX kernel.

H = 64 and F = 96: every expert GEMM qualifies. Gated experts (swiglu,
swiglu_clamped, and the gated shared experts, moe.ffn) take the gated form:
gate and up together, 6 column groups of 16 (a gate tile and an up tile),
the biases and the activation in the epilogue, h written in bf16; `gelu`
experts take the up projection alone (3 groups of 32 weight rows) and
round h in the activation's generic. The down projection (64 x 96, 2
groups) reads h in bf16. The LoRA base (moe.linear) is on tiles too; the
routers (O = E) are not and keep the vector kernels. Compiled with `gemm-block-bytes=4096`: blocks of 32 rows, so at
T = 300 an expert's ~75 slots make two blocks of two panels (a pair) and
one of one panel (the odd single) with 11 rows (a padded panel whose
rows past the block's are not stored). Token counts: 0; 1 and 3 (one
partial panel); 17 (a pair whose second panel has one row); 40 and 300.
`dense` sends every token to every expert (10 blocks of 32 rows per expert
at T = 300), `special` leaves zero / copy / constant experts' slots out of
the routed GEMMs, `capacity` drops slots, `biases` has gate/up/down biases,
`hierarchical` routes by groups. Each layer is compiled once (dynamic T)
and run with fresh seeded inputs (the seed is printed), `moe-run --check`
(relative L2 against the f64 reference, tolerance 1e-2 for bf16), on one
thread and on 3 threads sharing each GEMM's column groups. The manifest
of each artifact must say "amx_tiles": true.

    amx_gemms.py --bin DIR --work DIR [--seed S]
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import layers  # noqa: E402
import run_matrix  # noqa: E402

TOKENS = [0, 1, 3, 17, 40, 300]
VARIANTS = [[], ["--threads", "3", "--split", "columns"]]
CONFIGS = ["topk_softmax_swiglu_bf16", "topk_softmax_gelu_bf16",
           "topk_softmax_swiglu_clamped_bf16", "hierarchical_swiglu_bf16",
           "dense_relu_bf16", "special_bf16", "capacity_bf16", "biases_bf16",
           "shared_gated_bf16", "projected_bf16", "lora_bf16", "scale_input_bf16",
           "scale_input_k2_bf16"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--seed", type=int, default=6789)
    a = p.parse_args()
    layers.H, layers.F = 64, 96
    cfg = layers.configs()
    passed, failed = run_matrix.run_layers(
        a.bin, a.work, [(n, cfg[n]()) for n in CONFIGS], TOKENS, a.seed,
        compile_args=["--pipeline-options=gemm-block-bytes=4096 "
                      "min-task-size=1 gemm-amx=1"],
        retry_not_comparable=9, strict=True, run_variants=VARIANTS)
    for n in CONFIGS:
        path = os.path.join(a.work, n, "manifest.json")
        if not os.path.exists(path):
            continue
        if json.load(open(path)).get("amx_tiles") is not True:
            print("FAIL %s: the manifest does not say \"amx_tiles\": true" % n)
            failed += 1
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
