#!/usr/bin/env python3
"""Compiles and runs a shard of the CPU integration matrix (layers.py).

For each configuration: write the moe.layer module, moe-compile it once (the
token dimension is dynamic), then run the one artifact at several token
counts with fresh seeded inputs and `moe-run --check` (relative L2 error
against the C++ reference, tolerance per dtype). Prints one line per run
and ends with "N passed, N failed"; exits 1 if any failed.

    run_matrix.py --bin DIR --work DIR --shard I --num-shards N [--seed S]
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import layers  # noqa: E402

TOKENS = [0, 1, 7, 64, 333]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--no-check", action="store_true")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    names = sorted(layers.configs())[a.shard::a.num_shards]
    passed = failed = 0
    for i, name in enumerate(names):
        src = os.path.join(a.work, name + ".mlir")
        art = os.path.join(a.work, name)
        with open(src, "w") as f:
            f.write(layers.configs()[name]())
        c = subprocess.run([os.path.join(a.bin, "moe-compile"), src, "-o", art],
                           capture_output=True, text=True)
        if c.returncode != 0:
            print("FAIL compile %s: %s" % (name, c.stderr.strip()))
            failed += 1
            continue
        for t in TOKENS:
            seed = a.seed + 1000 * i + t
            cmd = [os.path.join(a.bin, "moe-run"), art, "--tokens", str(t),
                   "--seed", str(seed)]
            if not a.no_check:
                cmd.append("--check")
            r = subprocess.run(cmd, capture_output=True, text=True)
            detail = " | ".join(l for l in r.stdout.splitlines()
                                if l.startswith("check"))
            if r.returncode == 0:
                passed += 1
                print("ok   %s T=%d seed=%d %s" % (name, t, seed, detail))
            else:
                failed += 1
                print("FAIL %s T=%d seed=%d: %s %s" % (
                    name, t, seed, r.stderr.strip(), r.stdout.strip()))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
