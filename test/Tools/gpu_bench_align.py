#!/usr/bin/env python3
"""Checks benchmarks/gpu_bench.py's vllm_align (vLLM's moe_align_block_size
redone in PyTorch for the "vllm" benchmark row) against a loop that states
the layout: the (token, slot) pairs of each expert in pair order, each
expert's run padded with the sentinel T*K to a multiple of the block height,
runs back to back by expert; one expert id per block; the padded length.
Random top-k choices (distinct experts per token; some experts unused),
fresh per seed.

usage: gpu_bench_align.py BENCHMARKS_DIR [--seed S]
"""

import random
import sys

sys.path.insert(0, sys.argv[1])
import torch  # noqa: E402
import gpu_bench as gb  # noqa: E402


def expected(idx, E, bm):
    n = len(idx) * len(idx[0])
    flat = [e for row in idx for e in row]
    ids, experts = [], []
    for e in range(E):
        run = [p for p in range(n) if flat[p] == e]
        if not run:
            continue
        run += [n] * (-len(run) % bm)
        ids += run
        experts += [e] * (len(run) // bm)
    return ids, experts


def main():
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 1
    rng = random.Random(seed)
    print("gpu_bench_align: seed %d" % seed)
    bad = 0
    cases = 0
    for _ in range(60):
        E = rng.choice([4, 8, 64, 256])
        K = rng.choice([1, 2, 8])
        K = min(K, E)
        T = rng.choice([1, 2, 7, 33, 100])
        bm = rng.choice([16, 32, 64, 128])
        idx = [rng.sample(range(E), K) for _ in range(T)]
        ids, experts = expected(idx, E, bm)
        s, ex, npad = gb.vllm_align(torch, torch.tensor(idx, dtype=torch.int32), E, bm)
        n = T * K
        total = int(npad[0])
        ok = (total == len(ids) and s[:total].tolist() == ids
              and all(v == n for v in s[total:].tolist())
              and ex[:total // bm].tolist() == experts
              and s.numel() == n + E * (bm - 1)
              and ex.numel() * bm >= s.numel())
        cases += 1
        if not ok:
            bad += 1
            print("FAIL E=%d K=%d T=%d bm=%d" % (E, K, T, bm))
    print("vllm_align: %d cases ok, %d failed" % (cases - bad, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
