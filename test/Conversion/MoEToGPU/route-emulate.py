#!/usr/bin/env python3
"""Checks the routing kernel's algorithm against the C++ reference, without a GPU.

usage: route-emulate.py MOE_OPT MOE_REFERENCE_ROUTE [--seed S] [--tokens T]
                       [--mutate OLD NEW]

--mutate replaces every OLD by NEW in the generated IR before running it
(the test's own check that a wrong kernel is caught).

For each case (a routing attribute, E, a selection bias or none) it writes a
function with one moe.route, runs `moe-opt --convert-moe-route-to-gpu
--mlir-print-op-generic`, and executes the generated gpu.func with a small
SIMT interpreter: every block of 4 warps, 32 lanes in lockstep, gpu.shuffle
(xor, idx) across lanes, scf.if with per-lane masks (stores only where the
mask is set), scf.for with lane-uniform bounds, f32 arithmetic rounded to
f32 after every operation (exp rounded from the double result). The outputs
are compared with `moe-reference-route` (MOE_SEMANTICS §1 in double):

* indices exactly, on every token, except continuous-valued tokens that the
  reference flags as near ties, and slots of equal reference weight that the
  kernel's f32 weights order the other way (hierarchical routing's ties
  across groups, exact only in real arithmetic; `reorders_equal`): both
  counted and printed as near ties;
* weights within 2e-6 relative (+1e-7 absolute); NaN must match NaN.

Tokens: Gaussian logits; logits and biases from a small discrete set (many
exact ties: ties must go to the lower expert id); a NaN logit (not for
group-limited routing, whose reference sorts NaN with std::sort); all
-inf; some -inf. Rows past T in the last block must not be written.

What this checks: the generated kernel IR (the pass's output, before the
NVVM lowering) computes the reference's routing, including the lane layout,
the butterflies and the tie rule. What it does not: the lowering to PTX,
the hardware's shfl.sync, libdevice's expf, or anything about memory on a
device.

Prints one line per case and `route-emulate: N cases passed, M failed`.
"""

import math
import random
import re
import struct
import subprocess
import sys

WARPS = 4
LANES = 32

# ---------------------------------------------------------------------------
# f32 and integer helpers
# ---------------------------------------------------------------------------

F32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


def f32(x):
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def fdiv(a, b):
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return f32(a / b)


def fexp(x):
    try:
        return f32(math.exp(x))
    except OverflowError:
        return math.inf


def fmaximum(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == b == 0.0:
        return a if math.copysign(1.0, a) > 0 else b
    return max(a, b)


def fminimum(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == b == 0.0:
        return a if math.copysign(1.0, a) < 0 else b
    return min(a, b)


def width(ty):
    if ty == "index":
        return 64
    if ty == "i1":
        return 1
    m = re.fullmatch(r"i(\d+)", ty)
    return int(m.group(1)) if m else None


def wrap(v, w):
    v &= (1 << w) - 1
    if w > 1 and v >= 1 << (w - 1):
        v -= 1 << w
    return v


def unsigned(v, w):
    return v & ((1 << w) - 1)


CMPI = ["eq", "ne", "slt", "sle", "sgt", "sge", "ult", "ule", "ugt", "uge"]
CMPF = ["false", "oeq", "ogt", "oge", "olt", "ole", "one", "ord", "ueq", "ugt",
        "uge", "ult", "ule", "une", "uno", "true"]


def cmpi(pred, a, b, w):
    if pred[0] == "u":
        a, b = unsigned(a, w), unsigned(b, w)
    p = pred[1:] if pred[0] in "su" else pred
    return {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b,
            "gt": a > b, "ge": a >= b}[p]


def cmpf(pred, a, b):
    unordered = math.isnan(a) or math.isnan(b)
    if pred == "false":
        return False
    if pred == "true":
        return True
    if pred == "ord":
        return not unordered
    if pred == "uno":
        return unordered
    p = pred[1:]
    r = {"eq": a == b, "gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b,
         "ne": a != b}[p] if not unordered else None
    return r if pred[0] == "o" and not unordered else (
        False if pred[0] == "o" else (True if unordered else r))

# ---------------------------------------------------------------------------
# Parsing the generic form
# ---------------------------------------------------------------------------

OP_RE = re.compile(r'^\s*(?:(%[\w]+)(?::(\d+))? = )?"([\w.]+)"\(([^)]*)\)(.*)$')


class Op:
    def __init__(self, results, name, operands, rest):
        self.results, self.name, self.operands, self.rest = \
            results, name, operands, rest
        self.regions = []  # list of (block args, ops)
        m = re.search(r"-> \(?([^()]*?)\)?\s*$", rest)
        self.result_types = [t.strip() for t in m.group(1).split(",")] \
            if m and m.group(1).strip() else []

    def attr(self, key):
        m = re.search(key + r" = ([^,}]+(?:<[^>]*>)?)", self.rest)
        return m.group(1).strip() if m else None


def parse_ops(lines, i):
    """Parses ops until a region end; returns (ops, next line index)."""
    ops = []
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if s.startswith("}") or not s:
            return ops, i
        if s.startswith("^bb"):
            i += 1
            continue
        m = OP_RE.match(line)
        if not m:
            raise SystemExit("route-emulate: cannot parse: " + line)
        name, count = m.group(1), m.group(2)
        results = ([name + "#%d" % k for k in range(int(count))] if count
                   else [name] if name else [])
        operands = [o.strip() for o in m.group(4).split(",") if o.strip()]
        op = Op(results, m.group(3), operands, m.group(5))
        ops.append(op)
        i += 1
        if s.endswith("({"):
            while True:
                args = []
                if i < len(lines) and lines[i].strip().startswith("^bb"):
                    args = re.findall(r"(%[\w]+):", lines[i])
                    i += 1
                body, i = parse_ops(lines, i)
                op.regions.append((args, body))
                end = lines[i].strip()
                i += 1
                if end.startswith("}, {"):
                    continue  # the next region of the same op
                if not end.startswith("})"):
                    raise SystemExit("route-emulate: unexpected region end: " + end)
                op.rest = end[2:]
                m2 = re.search(r"-> \(?([^()]*?)\)?\s*$", op.rest)
                op.result_types = [t.strip() for t in m2.group(1).split(",")] \
                    if m2 and m2.group(1).strip() else []
                break
    return ops, i


def parse_module(text):
    lines = text.splitlines()
    # Regions closed on the same line as the next one opens ("}, {") and
    # empty else regions ("}, {" then "})") are handled by parse_ops.
    kernel, globals_ = None, {}
    for k, line in enumerate(lines):
        if '"memref.global"' in line:
            name = re.search(r'sym_name = "([\w]+)"', line).group(1)
            vals = re.search(r"initial_value = dense<\[?([^\]>]*)\]?>", line)
            globals_[name] = [f32(float(v)) for v in vals.group(1).split(",")]
            if len(globals_[name]) == 1:  # a splat
                n = int(re.search(r"tensor<(\d+)x", line).group(1))
                globals_[name] = globals_[name] * n
        if '"gpu.func"' in line:
            ops, _ = parse_ops(lines, k)
            kernel = ops[0]
            break
    return kernel, globals_

# ---------------------------------------------------------------------------
# SIMT execution of one warp
# ---------------------------------------------------------------------------


class Warp:
    def __init__(self, mem, globals_, tid_base, block):
        self.mem, self.globals, self.tid_base, self.block = \
            mem, globals_, tid_base, block
        self.env = {}

    def get(self, name):
        return self.env[name]

    def run(self, ops, mask):
        for op in ops:
            self.step(op, mask)

    def set(self, op, vals):
        for r, v in zip(op.results, vals):
            self.env[r] = v

    def step(self, op, mask):
        n = op.name
        ins = [self.get(o) for o in op.operands]
        ty = op.result_types[0] if op.result_types else None
        L = range(LANES)
        if n == "arith.constant":
            v = op.attr("value")
            if v in ("true", "false"):
                c = v == "true"
            else:
                lit, t = v.rsplit(" : ", 1) if " : " in v else (v, ty)
                if t == "f32":
                    c = (struct.unpack("<f", struct.pack("<I", int(lit, 16)))[0]
                         if lit.startswith("0x") else f32(float(lit)))
                else:
                    c = int(lit)
            self.set(op, [[c] * LANES])
        elif n == "gpu.thread_id":
            self.set(op, [[self.tid_base + l for l in L]])
        elif n == "gpu.block_id":
            self.set(op, [[self.block] * LANES])
        elif n in ("arith.addi", "arith.subi", "arith.muli", "arith.andi",
                   "arith.ori", "arith.xori", "arith.shli", "arith.minsi",
                   "arith.maxsi", "arith.divui", "arith.remui"):
            w = width(ty)
            a, b = ins

            def f(x, y):
                if n == "arith.addi": return x + y
                if n == "arith.subi": return x - y
                if n == "arith.muli": return x * y
                if n == "arith.andi": return int(x) & int(y)
                if n == "arith.ori": return int(x) | int(y)
                if n == "arith.xori": return int(x) ^ int(y)
                if n == "arith.shli": return x << y if y < w else 0
                if n == "arith.minsi": return min(x, y)
                if n == "arith.maxsi": return max(x, y)
                if n == "arith.divui": return unsigned(x, w) // unsigned(y, w)
                if n == "arith.remui": return unsigned(x, w) % unsigned(y, w)
            r = [wrap(f(x, y), w) for x, y in zip(a, b)]
            if w == 1:
                r = [bool(v & 1) for v in r]
            self.set(op, [r])
        elif n == "arith.index_cast":
            self.set(op, [[wrap(v, width(ty)) for v in ins[0]]])
        elif n == "arith.cmpi":
            pred = CMPI[int(op.attr("predicate").split()[0])]
            w = 64 if "index" in op.rest else width(
                re.search(r": \((\w+),", op.rest).group(1))
            self.set(op, [[cmpi(pred, a, b, w) for a, b in zip(*ins)]])
        elif n == "arith.cmpf":
            pred = CMPF[int(op.attr("predicate").split()[0])]
            self.set(op, [[cmpf(pred, a, b) for a, b in zip(*ins)]])
        elif n == "arith.select":
            self.set(op, [[x if c else y for c, x, y in zip(*ins)]])
        elif n in ("arith.addf", "arith.subf", "arith.mulf"):
            g = {"arith.addf": lambda x, y: x + y,
                 "arith.subf": lambda x, y: x - y,
                 "arith.mulf": lambda x, y: x * y}[n]
            self.set(op, [[f32(g(x, y)) for x, y in zip(*ins)]])
        elif n == "arith.divf":
            self.set(op, [[fdiv(x, y) for x, y in zip(*ins)]])
        elif n == "arith.negf":
            self.set(op, [[-x for x in ins[0]]])
        elif n == "arith.maximumf":
            self.set(op, [[fmaximum(x, y) for x, y in zip(*ins)]])
        elif n == "arith.minimumf":
            self.set(op, [[fminimum(x, y) for x, y in zip(*ins)]])
        elif n == "arith.extf":
            self.set(op, [list(ins[0])])
        elif n == "math.exp":
            self.set(op, [[fexp(x) for x in ins[0]]])
        elif n == "math.absf":
            self.set(op, [[abs(x) for x in ins[0]]])
        elif n == "gpu.shuffle":
            if not all(mask):
                raise SystemExit("route-emulate: gpu.shuffle with inactive lanes")
            v, off, wd = ins
            assert all(x == LANES for x in wd)
            mode = re.search(r"shuffle_mode (\w+)", op.rest).group(1)
            if mode == "xor":
                src = [l ^ off[l] for l in L]
            elif mode == "idx":
                src = [off[l] for l in L]
            else:
                raise SystemExit("route-emulate: shuffle mode " + mode)
            ok = [0 <= s < LANES for s in src]
            self.set(op, [[v[s] if o else v[l] for l, s, o in zip(L, src, ok)],
                          ok])
        elif n == "memref.dim":
            buf, d = ins[0][0], ins[1][0]
            self.set(op, [[len(self.mem[buf]) if d == 0 else
                           len(self.mem[buf][0])] * LANES])
        elif n == "memref.get_global":
            name = re.search(r"name = @([\w]+)", op.rest).group(1)
            self.mem["@" + name] = self.globals[name]
            self.set(op, [["@" + name] * LANES])
        elif n == "memref.load":
            buf = ins[0][0]
            out = []
            for l in L:
                idx = [x[l] for x in ins[1:]]
                arr = self.mem[buf]
                for i in idx:
                    if not 0 <= i < len(arr):
                        raise SystemExit("route-emulate: load out of bounds "
                                         "%s%s" % (buf, idx))
                    arr = arr[i]
                out.append(arr)
            self.set(op, [out])
        elif n == "memref.store":
            val, buf = ins[0], ins[1][0]
            for l in L:
                if not mask[l]:
                    continue
                idx = [x[l] for x in ins[2:]]
                arr = self.mem[buf]
                for i in idx[:-1]:
                    arr = arr[i]
                if not 0 <= idx[-1] < len(arr):
                    raise SystemExit("route-emulate: store out of bounds")
                arr[idx[-1]] = val[l]
                self.mem["written"].add((buf, tuple(idx)))
        elif n == "scf.if":
            cond = ins[0]
            results = []
            for k, (args, body) in enumerate(op.regions):
                m = [mk and (c if k == 0 else not c) for mk, c in zip(mask, cond)]
                self.yielded = []
                if any(m) and body:
                    self.run(body, m)
                results.append(self.yielded)
            if op.results:
                t, e = results
                self.set(op, [[x if c else y for c, x, y in zip(cond, tv, ev)]
                              for tv, ev in zip(t, e)])
        elif n == "scf.for":
            lb, ub, st = ins[0], ins[1], ins[2]
            for v in (lb, ub, st):
                if len(set(v)) != 1:
                    raise SystemExit("route-emulate: lane-varying loop bound")
            carried = ins[3:]
            args, body = op.regions[0]
            for iv in range(lb[0], ub[0], st[0]):
                self.env[args[0]] = [iv] * LANES
                for a, v in zip(args[1:], carried):
                    self.env[a] = v
                self.yielded = []
                self.run(body, mask)
                carried = self.yielded
            self.set(op, carried)
        elif n == "scf.yield":
            self.yielded = ins
        elif n == "gpu.return":
            pass
        else:
            raise SystemExit("route-emulate: unsupported op " + n)


def run_kernel(kernel, globals_, logits, bias, k, linear=None, glogits=None):
    """linear: (x, router weight) when the kernel computes the logits;
    glogits: the group logits of hierarchical routing."""
    t = len(logits)
    mem = {"logits": logits, "idx": [[-7] * k for _ in range(t)],
           "w": [[-7.0] * k for _ in range(t)], "written": set()}
    args = kernel.regions[0][0]
    first = ["x", "wr"] if linear else ["logits"]
    if glogits is not None:
        first = ["logits", "glogits"]
        mem["glogits"] = glogits
    if linear:
        mem["x"], mem["wr"] = linear
        del mem["logits"]
    with_bias = len(args) == len(first) + 3
    names = first + (["bias"] if with_bias else []) + ["idx", "w"]
    if with_bias:
        mem["bias"] = bias
    for blk in range((t + WARPS - 1) // WARPS):
        for warp in range(WARPS):
            wp = Warp(mem, globals_, warp * LANES, blk)
            for a, nm in zip(args, names):
                wp.env[a] = [nm] * LANES
            wp.run(kernel.regions[0][1], [True] * LANES)
    expected = {(b, (i, j)) for b in ("idx", "w") for i in range(t)
                for j in range(k)}
    if mem["written"] != expected:
        raise SystemExit("route-emulate: the kernel wrote %d elements, expected "
                         "exactly the %d of the results" %
                         (len(mem["written"]), len(expected)))
    return mem["idx"], mem["w"]

# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

# (routing, E, bias: None | "arg:f32" | "arg:bf16" | "const")
CASES = [
    ("softmax, topk, k = 2, renormalize", 8, None),
    ("softmax, topk, k = 8, renormalize", 128, None),
    ("softmax, topk, k = 8", 64, None),
    ("sigmoid, group_limited_topk, k = 8, n_group = 8, topk_group = 4, "
     "group_score = top2_sum, renormalize, scaling_factor = 2.5", 256, "arg:f32"),
    ("softmax, group_limited_topk, k = 6, n_group = 8, topk_group = 3",
     160, None),
    ("sigmoid, group_limited_topk, k = 4, n_group = 8, topk_group = 2, "
     "group_score = max, renormalize", 48, "const"),
    ("sigmoid, group_limited_topk, k = 3, n_group = 4, topk_group = 4",
     64, "arg:f32"),
    ("none, topk, k = 4, renormalize", 40, "arg:bf16"),
    ("none, topk_then_softmax, k = 4, scaling_factor = 0.5", 32, None),
    ("none, topk_then_softmax, k = 2", 8, "arg:f32"),
    ("sigmoid, topk, k = 1, scaling_factor = 1.5", 16, "const"),
    ("sigmoid, topk, k = 5", 300, None),
    ("softmax, topk, k = 32, renormalize", 40, None),
    ("softmax, group_limited_topk, k = 2, n_group = 32, topk_group = 5, "
     "group_score = top2_sum", 64, None),
    ("softmax, top_p, k = 4, top_p = 0.5", 8, None),
    ("softmax, top_p, k = 8, top_p = 0.7", 64, None),
    ("softmax, top_p, k = 3, top_p = 0.9, scaling_factor = 2.0", 40, "const"),
    ("softmax, dense, k = 8", 8, None),
    ("sigmoid, dense, k = 40, renormalize, scaling_factor = 2.0", 40, None),
    ("softmax, dense, k = 64, renormalize", 64, "arg:f32"),
    # Hierarchical (AT-MoE): group softmax x in-group softmax, temperatures,
    # groups kept by probability, K = E listing every expert.
    ("softmax, hierarchical, k = 3, n_group = 2, tau_group = 0.5, tau_expert = 2.0",
     8, None),
    ("softmax, hierarchical, k = 4, n_group = 2", 8, None),
    ("softmax, hierarchical, k = 8, n_group = 2, topk_group = 1", 8, None),
    ("softmax, hierarchical, k = 6, n_group = 4, topk_group = 2, renormalize", 64,
     "arg:f32"),
    ("softmax, hierarchical, k = 2, n_group = 8, topk_group = 3, scaling_factor = 2.0",
     40, None),
    # Sparsemixer (PhiMoE): per round, the masked softmax at the winner.
    # Thresholds that no discrete logit ratio hits exactly; E = 40 leaves
    # experts past E in the last lanes (P = 2).
    ("none, sparsemixer, k = 2", 8, None),
    ("none, sparsemixer, k = 2, jitter_eps = 0.1037", 16, None),
    ("none, sparsemixer, k = 4, renormalize, scaling_factor = 1.5, "
     "jitter_eps = 0.2917", 40, None),
    # The router GEMM fused in (moe.linear -> moe.route): x : T x H and the
    # router weight : E x H of that dtype; H a multiple of 32 (32 * unroll
    # 1, 2, 4 elements per step).
    ("softmax, topk, k = 2, renormalize", 8, None, ("bf16", 128)),
    ("softmax, topk, k = 8", 64, None, ("bf16", 96)),
    ("sigmoid, group_limited_topk, k = 8, n_group = 8, topk_group = 4, "
     "group_score = top2_sum, renormalize, scaling_factor = 2.5", 64, "arg:f32",
     ("bf16", 64)),
    ("softmax, topk, k = 4, renormalize", 40, None, ("f16", 32)),
    ("none, topk_then_softmax, k = 2", 16, "const", ("f32", 256)),
    ("none, sparsemixer, k = 2, jitter_eps = 0.0517", 16, None, ("bf16", 64)),
]


def bf16(x):
    b = struct.unpack("<I", struct.pack("<f", x))[0]
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000  # round to nearest even
    return struct.unpack("<f", struct.pack("<I", b))[0]


def fmt(x):
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "%.9g" % x


def mlir_f32(x):
    return "0x%08X" % struct.unpack("<I", struct.pack("<f", x))[0]


def reorders_equal(idx, w, ri, rw):
    """Whether the kernel chose the reference's experts with the same
    weights and only ordered slots of equal reference weight otherwise. The
    reference's ties are exact in double; hierarchical routing also makes
    real ties across groups (group softmax x in-group softmax: logits
    [0, .5, -.5, -1] and [0, 1, -.5, .5] under group logits [-1, 0] give
    experts 1 and 4 the same weight, by the softmax's shift invariance) that
    f32 breaks by an ulp either way. The layer's output does not depend on
    the slots' order (top-p excepted, whose caller does not ask)."""
    def close(a, b):
        return abs(a - b) <= 2e-6 * abs(b) + 1e-7
    if sorted(idx) != sorted(ri) or len(set(ri)) != len(ri):
        return False
    ref = dict(zip(ri, rw))
    if any(math.isnan(a) or not close(a, ref[i]) for i, a in zip(idx, w)):
        return False
    # The kernel's order is non-increasing in the reference's weights; two
    # slots of equal reference weight are in the tie rule's order (lower id
    # first) unless the kernel's own f32 weights differ in the order taken.
    kw = dict(zip(idx, w))
    for a, b in zip(idx, idx[1:]):
        if close(ref[a], ref[b]):
            if a > b and not kw[a] > kw[b]:
                return False
        elif ref[a] < ref[b]:
            return False
    return True


def main():
    argv = sys.argv[1:]
    seed, tokens = 1, 37
    if "--seed" in argv:
        seed = int(argv[argv.index("--seed") + 1])
    if "--tokens" in argv:
        tokens = int(argv[argv.index("--tokens") + 1])
    mutate = None
    if "--mutate" in argv:
        i = argv.index("--mutate")
        mutate = (argv[i + 1], argv[i + 2])
    moe_opt, ref_route = argv[0], argv[1]
    rng = random.Random(seed)
    passed = failed = 0
    for case in CASES:
        routing, e, bias_kind = case[:3]
        linear = case[3] if len(case) > 3 else None
        k = int(re.search(r"k = (\d+)", routing).group(1))
        group = "group_limited" in routing
        # Logits per token, by kind.
        logits, kinds = [], []
        xw = None
        if linear:
            # x and the router weight from multiples of 1/64 (exact in bf16
            # and f16): every product and partial sum is exact in f32, so
            # the kernel's summation order cannot change the logits, which
            # are still varied (and sometimes tied).
            dt, h = linear
            xs = [[rng.randint(-128, 128) / 64 for _ in range(h)]
                  for _ in range(tokens)]
            ws = [[rng.randint(-64, 64) / 64 for _ in range(h)]
                  for _ in range(e)]
            xw = (xs, ws)
            for t in range(tokens):
                logits.append([sum(a * b for a, b in zip(xs[t], ws[j]))
                               for j in range(e)])
                kinds.append("linear")
        for t in range(0 if linear else tokens):
            kind = ["gauss", "discrete", "discrete", "nan", "allinf",
                    "someinf"][t % 6]
            if kind == "nan" and group:
                kind = "gauss"
            if kind == "gauss":
                row = [f32(rng.gauss(0, 2)) for _ in range(e)]
            elif kind == "discrete":
                row = [rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0]) for _ in range(e)]
            elif kind == "nan":
                row = [f32(rng.gauss(0, 2)) for _ in range(e)]
                row[rng.randrange(e)] = math.nan
            elif kind == "allinf":
                row = [-math.inf] * e
            else:
                row = [f32(rng.gauss(0, 2)) if rng.random() < 0.5 else -math.inf
                       for _ in range(e)]
            logits.append(row)
            kinds.append(kind)
        # Group logits (hierarchical): the token's kind again (ties, NaN,
        # -inf rows) over n_group values.
        glogits = None
        ng = 0
        if "hierarchical" in routing:
            ng = int(re.search(r"n_group = (\d+)", routing).group(1))
            glogits = []
            for t in range(tokens):
                kind = kinds[t]
                if kind == "discrete":
                    row = [rng.choice([-1.0, 0.0, 1.0]) for _ in range(ng)]
                elif kind == "allinf":
                    row = [-math.inf] * ng
                elif kind == "nan" and t % 12 == 3:
                    row = [f32(rng.gauss(0, 1)) for _ in range(ng)]
                    row[rng.randrange(ng)] = math.nan
                else:
                    row = [f32(rng.gauss(0, 1)) for _ in range(ng)]
                glogits.append(row)
        bias = None
        if bias_kind:
            bias = [rng.choice([-0.25, -0.125, 0.0, 0.125, 0.25])
                    for _ in range(e)]
            if bias_kind == "arg:bf16":
                bias = [bf16(b) for b in bias]
        # The kernel.
        bty = "bf16" if bias_kind == "arg:bf16" else "f32"
        sig = "%%z: tensor<?x%dxf32>" % e
        body = ""
        if linear:
            dt, h = linear
            sig = "%%x: tensor<?x%dx%s>, %%wr: tensor<%dx%dx%s>" % (h, dt, e, h, dt)
            body = ("  %%z = moe.linear %%x, %%wr : (tensor<?x%dx%s>, "
                    "tensor<%dx%dx%s>) -> tensor<?x%dxf32>\n" % (h, dt, e, h, dt, e))
        operand = ""
        if bias_kind and bias_kind.startswith("arg"):
            sig += ", %%b: tensor<%dx%s>" % (e, bty)
            operand = " bias %%b : tensor<%dx%s>" % (e, bty)
        elif bias_kind == "const":
            body += "  %%b = arith.constant dense<[%s]> : tensor<%dxf32>\n" % (
                ", ".join(mlir_f32(b) for b in bias), e)
            operand = " bias %%b : tensor<%dxf32>" % e
        groups = ""
        if glogits is not None:
            sig += ", %%g: tensor<?x%dxf32>" % ng
            groups = " groups %%g : tensor<?x%dxf32>" % ng
        src = ("func.func @r(%s) -> (tensor<?x%dxi32>, tensor<?x%dxf32>) {\n%s"
               "  %%i, %%w = moe.route %%z%s%s {routing = #moe.routing<%s>}\n"
               "      : tensor<?x%dxf32> -> tensor<?x%dxi32>, tensor<?x%dxf32>\n"
               "  return %%i, %%w : tensor<?x%dxi32>, tensor<?x%dxf32>\n}\n" %
               (sig, k, k, body, groups, operand, routing, e, k, k, k, k))
        # Fused router GEMM: the fused kernel alone (no run-time branch to
        # the separate GEMM for small T, which this emulator does not run).
        pass_arg = ("--convert-moe-route-to-gpu=fuse-linear-min-tokens=0"
                    if linear else "--convert-moe-route-to-gpu")
        res = subprocess.run([moe_opt, pass_arg,
                              "--mlir-print-op-generic"], input=src,
                             capture_output=True, text=True)
        if res.returncode != 0:
            print("FAIL %s E=%d: moe-opt: %s" % (routing, e, res.stderr.strip()))
            failed += 1
            continue
        ir = res.stdout
        if mutate:
            ir = ir.replace(*mutate)
        kernel, globals_ = parse_module(ir)
        if kernel is None:
            print("FAIL %s E=%d: no gpu.func" % (routing, e))
            failed += 1
            continue
        if linear and ("moe.linear" in ir or len(kernel.regions[0][0]) < 4):
            print("FAIL %s E=%d: the router GEMM was not fused" % (routing, e))
            failed += 1
            continue
        idx, w = run_kernel(kernel, globals_, logits, bias, k, xw, glogits)
        # The reference.
        ref_in = "%d %d %d\n" % (tokens, e, 1 if bias else 0)
        ref_in += "\n".join(" ".join(fmt(v) for v in row) for row in logits)
        if glogits is not None:
            ref_in += "\n" + "\n".join(" ".join(fmt(v) for v in row)
                                        for row in glogits)
        if bias:
            ref_in += "\n" + " ".join(fmt(b) for b in bias)
        ref = subprocess.run([ref_route, "#moe.routing<%s>" % routing],
                             input=ref_in + "\n", capture_output=True, text=True)
        if ref.returncode != 0:
            print("FAIL %s: reference: %s" % (routing, ref.stderr.strip()))
            failed += 1
            continue
        errors, ties, worst = [], 0, 0.0
        for t, line in enumerate(ref.stdout.splitlines()):
            ri, rw, tie = line.split("|")
            ri = [int(v) for v in ri.split()]
            rw = [float(v) for v in rw.split()]
            if idx[t] != ri:
                if tie.strip() == "1" and kinds[t] not in ("discrete", "allinf", "linear"):
                    ties += 1
                    continue
                if "top_p" not in routing and reorders_equal(idx[t], w[t], ri, rw):
                    ties += 1
                    continue
                errors.append("token %d (%s): indices %s, reference %s" %
                              (t, kinds[t], idx[t], ri))
                continue
            for a, b in zip(w[t], rw):
                if math.isnan(a) or math.isnan(b):
                    ok = math.isnan(a) and math.isnan(b)
                else:
                    ok = abs(a - b) <= 2e-6 * abs(b) + 1e-7
                    worst = max(worst, abs(a - b) / max(abs(b), 1e-30))
                if not ok:
                    errors.append("token %d (%s): weights %s, reference %s" %
                                  (t, kinds[t], w[t], rw))
                    break
        name = "%s E=%d bias=%s" % (routing, e, bias_kind or "none")
        if linear:
            name += " linear %s H=%d" % linear
        if errors:
            failed += 1
            print("FAIL " + name)
            for m in errors[:5]:
                print("  " + m)
        else:
            passed += 1
            print("ok   %s: %d tokens, max rel weight err %.2g, %d near-tie "
                  "tokens skipped" % (name, tokens, worst, ties))
    print("route-emulate: %d cases passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
