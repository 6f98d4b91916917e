#!/usr/bin/env python3
"""Executes the admission kernel of a capacity moe.dispatch, without a GPU.

usage: dispatch-emulate.py MOE_OPT [--seed S] [--mutate OLD NEW]...

For each case (E, K, a capacity factor or a fixed expert_capacity, a way of
drawing expert ids, token counts) it writes a function with one
moe.dispatch, runs `moe-opt --convert-moe-route-to-gpu
--mlir-print-op-generic` (which forms the kernel `admit`: one warp,
match.sync.any per step of 32 pairs, per-expert counts in shared memory),
and runs the host code and the launch with the SIMT emulator of
experts-emulate.py (lanes in lockstep, match.sync over the warp's lanes,
race checks between threads of a block within a barrier phase, every index
bounds-checked, uninitialised reads are errors). The result buffers start
uninitialised (None), so an element the kernel does not write is caught.

The reference is MOE_SEMANTICS §2 written out here as the sequential scan:
C = ceil(cf * T * K / E) (or the fixed count); pairs in (slot, token) order;
an id outside [0, E) passes untouched (-1: no expert; E and above:
zero-computation experts); an expert's pair past its C-th gets index -1 and
weight 0; the count of those. Indices, weights and the count must match
exactly (the kernel only copies or zeroes weights).

Ids are drawn uniformly, skewed towards a few experts (so that the hot
experts overflow and the others do not), all on one expert (every step is
one group of 32 lanes), and with -1 and ids past E mixed in.

--mutate replaces OLD by NEW in the generated IR (the test's own check that
a wrong kernel is caught).

Prints one line per case and `dispatch-emulate: N cases passed, M failed`.
"""

import importlib.util
import math
import os
import random
import subprocess
import sys

_spec = importlib.util.spec_from_file_location(
    "experts_emulate", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "experts-emulate.py"))
EE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(EE)

# (E, K, capacity: ("factor", cf) | ("fixed", C), ids, token counts)
CASES = [
    (8, 2, ("factor", 1.25), "skewed", [0, 1, 3, 37, 300]),
    (8, 2, ("factor", 1.0), "uniform", [64, 257]),
    (16, 4, ("factor", 0.5), "skewed", [5, 100]),
    # More than 32 experts (the counters' zeroing loop runs twice), K = 1.
    (40, 1, ("factor", 2.0), "skewed", [33, 640]),
    # A factor whose C is not an integer in double (ceil of 0.3 * T * K / E).
    (6, 3, ("factor", 0.3), "invalid", [7, 91]),
    # Switch Transformers' fixed capacity, whatever T.
    (8, 1, ("fixed", 5), "skewed", [1, 40, 333]),
    (8, 1, ("fixed", 0), "uniform", [9]),
    (4, 2, ("fixed", 1000), "uniform", [50]),
    (4, 2, ("fixed", 3), "one", [70]),
    (12, 2, ("fixed", 17), "invalid", [130]),
]


def draw_ids(rng, kind, e, t, k):
    """T x K expert ids (distinct per token where they are experts)."""
    rows = []
    for _ in range(t):
        if kind == "one":
            row = [0] + rng.sample(range(1, e), k - 1)
        elif kind == "skewed":
            weights = [1.0 / (j + 1) ** 1.5 for j in range(e)]
            row = []
            while len(row) < k:
                j = rng.choices(range(e), weights)[0]
                if j not in row:
                    row.append(j)
        else:
            row = rng.sample(range(e), k)
        if kind == "invalid":
            row = [rng.choice([-1, e, e + 2]) if rng.random() < 0.2 else j
                   for j in row]
        rows.append(row)
    return rows


def reference(ids, weights, e, k, capacity):
    t = len(ids)
    if capacity[0] == "fixed":
        c = capacity[1]
    else:
        c = math.ceil(float(t * k) * capacity[1] / float(e))
    out_i = [list(r) for r in ids]
    out_w = [list(r) for r in weights]
    count, dropped = [0] * e, 0
    for s in range(k):
        for tok in range(t):
            j = ids[tok][s]
            if j < 0 or j >= e:
                continue
            if count[j] < c:
                count[j] += 1
            else:
                out_i[tok][s], out_w[tok][s] = -1, 0.0
                dropped += 1
    return out_i, out_w, dropped


def source(e, k, capacity):
    attr = ("capacity_factor = %r : f64" % capacity[1] if capacity[0] == "factor"
            else "expert_capacity = %d" % capacity[1])
    return """
func.func @d(%%i: tensor<?x%(k)dxi32>, %%w: tensor<?x%(k)dxf32>)
    -> (tensor<?x%(k)dxi32>, tensor<?x%(k)dxf32>, tensor<i64>) {
  %%a, %%b, %%n = moe.dispatch %%i, %%w {num_experts = %(e)d : i64,
      mode = #moe.dispatch<capacity>, %(attr)s}
      : tensor<?x%(k)dxi32>, tensor<?x%(k)dxf32> -> tensor<i64>
  return %%a, %%b, %%n : tensor<?x%(k)dxi32>, tensor<?x%(k)dxf32>, tensor<i64>
}
""" % {"e": e, "k": k, "attr": attr}


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    moe_opt, seed, mutations = args[0], 1, []
    i = 1
    while i < len(args):
        if args[i] == "--seed":
            seed = int(args[i + 1])
            i += 2
        elif args[i] == "--mutate":
            mutations.append((args[i + 1], args[i + 2]))
            i += 3
        else:
            sys.exit("dispatch-emulate: unknown argument " + args[i])
    print("dispatch-emulate: seed %d" % seed)
    rng = random.Random(seed)
    passed = failed = 0
    for e, k, capacity, kind, tokens in CASES:
        name = "E=%d K=%d %s=%s ids=%s" % (e, k, capacity[0], capacity[1], kind)
        res = subprocess.run([moe_opt, "--convert-moe-route-to-gpu=required",
                              "--mlir-print-op-generic"],
                             input=source(e, k, capacity), capture_output=True,
                             text=True)
        if res.returncode != 0 or '"moe.dispatch"' in res.stdout:
            failed += 1
            print("FAIL %s: moe-opt: %s" % (name, res.stderr.strip() or
                                              "moe.dispatch left"))
            continue
        ir = res.stdout
        for old, new in mutations:
            ir = ir.replace(old, new)
        errors, drops = [], []
        for t in tokens:
            ids = draw_ids(rng, kind, e, t, k)
            weights = [[EE.f32(rng.uniform(0.01, 1.0)) for _ in range(k)]
                       for _ in range(t)]
            ref_i, ref_w, ref_n = reference(ids, weights, e, k, capacity)
            emu = EE.Emulator(ir, rng.randrange(1 << 30))
            ib = EE.Buf("indices", [t, k], "i32",
                        data=[j for r in ids for j in r])
            wb = EE.Buf("weights", [t, k], "f32",
                        data=[v for r in weights for v in r])
            try:
                got_i, got_w, got_n = emu.run_host("d", [ib, wb])
            except EE.EmuError as err:
                errors.append("T=%d: %s" % (t, err))
                continue
            flat_i = [j for r in ref_i for j in r]
            flat_w = [v for r in ref_w for v in r]
            if any(v is None for v in got_i.data + got_w.data + got_n.data):
                errors.append("T=%d: result elements never written" % t)
            elif got_i.data != flat_i:
                bad = next(p for p in range(t * k) if got_i.data[p] != flat_i[p])
                errors.append("T=%d: index of token %d slot %d is %d, reference %d"
                              % (t, bad // k, bad % k, got_i.data[bad], flat_i[bad]))
            elif got_w.data != flat_w:
                errors.append("T=%d: weights differ" % t)
            elif got_n.data[0] != ref_n:
                errors.append("T=%d: dropped %d, reference %d"
                              % (t, got_n.data[0], ref_n))
            drops.append("%d:%d" % (t, ref_n))
        if errors:
            failed += 1
            print("FAIL " + name)
            for m in errors[:4]:
                print("  " + m)
        else:
            passed += 1
            print("ok   %s: T:dropped %s" % (name, " ".join(drops)))
    print("dispatch-emulate: %d cases passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
