#!/usr/bin/env python3
"""Compile-cache benchmark: a 32-layer model compiled twice into the same
output directory, per target. The second run must reuse every kernel and
weights file; prints a table of wall times and the ratio.

  python3 benchmarks/compile_cache.py [--bin build/bin] [--family mixtral]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--family", default="mixtral")
    ap.add_argument("--layers", type=int, default=32)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="moe-cache-")
    model = os.path.join(work, "model")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "moe-gen-checkpoint",
                                                 "moe_gen_checkpoint.py"),
                    "--family", args.family, "--out", model, "--layers",
                    str(args.layers), "--dtype", "bf16", "--seed", "0"],
                   check=True, stdout=subprocess.DEVNULL)
    print("| target | run | wall s | kernels compiled | kernels reused | weights written | weights reused |")
    print("|---|---|---|---|---|---|---|")
    for target in ["cpu", "cuda:sm_90"]:
        out = os.path.join(work, target.replace(":", "_"))
        times = []
        for run in (1, 2):
            t0 = time.perf_counter()
            p = subprocess.run([os.path.join(args.bin, "moe-compile"), model,
                                "--target=" + target, "-o", out],
                               stdout=subprocess.PIPE, universal_newlines=True,
                               check=True)
            times.append(time.perf_counter() - t0)
            m = re.search(r"kernels: (\d+) compiled, (\d+) reused; weights: (\d+) written, (\d+) reused", p.stdout)
            print("| %s | %d | %.3f | %s | %s | %s | %s |" % ((target, run, times[-1]) + m.groups()))
        print("| %s | first / second | %.1fx | | | | |" % (target, times[0] / times[1]))


if __name__ == "__main__":
    main()
