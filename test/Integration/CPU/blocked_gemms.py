#!/usr/bin/env python3
"""The CPU pipeline's blocked GEMMs (expert GEMMs grouped by expert, shared
experts, routers and the LoRA base over the tokens) at shapes and token
counts that reach every edge of their loop nest, against the C++ reference.

The matrix (run_matrix.py) runs at H = 32, F = 48, multiples of the
register tile's 4 columns (weight rows); here H = 33 and F = 27, so the
last column group of every GEMM repeats a column, and the reductions (33,
27) leave the vector loop a remainder. The layers are compiled with
`gemm-block-bytes=2048`, blocks of 12 to 36 rows (the default, 512 KiB,
would hold every row here in one block), three times: with the
outer-product micro-kernel on 16-lane vectors (`gemm-vector-bits=512`:
blocks of 32 rows; an expert's block of 8 rows or more takes the kernel,
its last vector padded; the columns in groups of 12, the last one
repeating columns), on 8-lane ones (256: blocks of 16 rows, from 4 rows
on, groups of 6) and without it (0: the 4 x 4 dot-product tiles only). Token counts: 0; 1, 3 (fewer rows
than a 4-row tile); 5 and 40 (a tile plus rows one by one); 300 (several
blocks per expert, the last one ending in a partial tile). `special` routes
slots to zero / copy / constant experts, which the routed moe.experts must
leave out (the sort's last bucket); `dense` sends every token to every
expert; `capacity` drops slots; `shared*`, `projected` and `lora` put
moe.ffn and moe.linear on the dense nest (every layer's router is one too).
Each layer is compiled once (dynamic T), then run with fresh seeded inputs
(the seed is printed) and `moe-run --check` (relative L2 against the f64
reference; 1e-4 for f32, 1e-2 for bf16), once on one thread and, with the
micro-kernel, once on 3 threads sharing each GEMM's column groups (`--threads 3 --split columns`:
the compiled scf.parallel loops on the runtime's workers; compiled with
`min-task-size=1`, so every group can be its own task). A capacity run
whose dispatch had near ties (not comparable) is rerun with the next seed.

    blocked_gemms.py --bin DIR --work DIR [--seed S]
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import layers  # noqa: E402
import run_matrix  # noqa: E402

TOKENS = [0, 1, 3, 5, 40, 300]
ONE_THREAD = [[]]
COLUMNS = [[], ["--threads", "3", "--split", "columns"]]
# The outer-product micro-kernel on 16-lane vectors (12 weight rows per
# column group, blocks of 32 rows here), on 8-lane ones (6 weight rows,
# blocks of 16 rows), and without it (the dot-product tiles only). Each
# width's code runs on any x86-64 host: LLVM splits vectors wider than the
# host's registers.
VECTOR_BITS = [(512, COLUMNS), (256, COLUMNS), (0, ONE_THREAD)]
CONFIGS = ["topk_softmax_swiglu_f32", "topk_softmax_swiglu_bf16",
           "group_top2_sum_gelu_f32", "dense_relu_bf16", "special_f32",
           "special_bf16", "capacity_f32", "biases_bf16", "shared_f32",
           "shared_gated_bf16", "projected_f32", "lora_f32", "lora_bf16",
           "scale_input_bf16", "scale_input_k2_f32"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--seed", type=int, default=4321)
    a = p.parse_args()
    layers.H, layers.F = 33, 27
    cfg = layers.configs()
    passed = failed = 0
    for bits, variants in VECTOR_BITS:
        print("gemm-vector-bits=%d" % bits)
        p, f = run_matrix.run_layers(
            a.bin, os.path.join(a.work, "v%d" % bits),
            [(n, cfg[n]()) for n in CONFIGS], TOKENS, a.seed,
            compile_args=["--pipeline-options=gemm-block-bytes=2048 "
                          "min-task-size=1 gemm-vector-bits=%d" % bits],
            retry_not_comparable=9, strict=True, run_variants=variants)
        passed += p
        failed += f
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
