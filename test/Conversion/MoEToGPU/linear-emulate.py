#!/usr/bin/env python3
"""Executes the linear kernel of convert-moe-linear-to-gpu, without a GPU.

usage: linear-emulate.py MOE_OPT [--seed S] [--mutate OLD NEW]...

For each case (x, weight, bias and result dtypes, I, O, T) it writes a
function with one moe.linear, runs `moe-opt --convert-moe-linear-to-gpu
--mlir-print-op-generic`, and runs the host code and the launch list with
the SIMT emulator of experts-emulate.py (lanes in lockstep, gpu.shuffle
across the 32 lanes of a warp, blocks in a shuffled order, vector loads
with their alignment checked, race checks between blocks and threads, every
index bounds-checked, uninitialised reads are errors). The result buffer
starts uninitialised (None), so an element the kernel does not write is
caught.

The reference is MOE_SEMANTICS §1.1 / the moe.linear definition in double:
y = x W^T (+ b) from the same dtype-rounded inputs, rounded once to the
result type. Tolerance on the relative L2 error: f32 results 1e-6 (the
kernel sums in f32 in another order), f16 1e-3, bf16 8e-3 (one rounding of
the result: at most 2^-9 relative per element).

Gated shared experts (Qwen2-MoE `shared_expert_gate`, MOE_SEMANTICS §2:
y_t = sigmoid(x_t . w_s) Shared(x_t)): a moe.ffn with gate_weight through
`--convert-moe-experts-to-gpu --convert-moe-route-to-gpu=... 
--convert-moe-linear-to-gpu`, which makes it a one-expert routing (the
linear kernel for x . w_s, or the routing kernel with the GEMM fused in,
then sigmoid dense k = 1) and the tensor-core expert kernels with the
weight applied in the fused combine; all kernels run in the emulator in
launch order and the result is compared with the definition in double
(tolerance 1e-2 for bf16, as experts-emulate: the kernels round the
intermediate h to bf16).

--mutate replaces OLD by NEW in the generated IR (the test's own check that
a wrong kernel is caught).

Prints one line per case and `linear-emulate: N cases passed, M failed`.
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

TOL = {"f32": 1e-6, "f16": 1e-3, "bf16": 8e-3}


def verdict(got, ref, tol, emu):
    """(report, None) when relative L2 of `got` against `ref` is within
    `tol`, else (None, why); the report names the launches."""
    num = math.sqrt(sum((p - q) ** 2 for p, q in zip(got, ref)))
    den = math.sqrt(sum(q * q for q in ref))
    err = num / den if den else num
    if any(math.isnan(v) for v in got):
        return None, "NaN in the result"
    if err > tol:
        return None, "relative L2 error %.3g > %g" % (err, tol)
    return "rel L2 %.2g; %s" % (err, " ".join(EE.launch_names(emu)) or "no launch"), None

class CaseFail(Exception):
    """A case that cannot be compared: moe-opt failed or left an op, a
    mutation does not apply, or a result element was never written."""


def lower(moe_opt, passes, src, left, what, mutations, strict=False):
    """`src` through `moe-opt passes` in generic form, with `mutations`
    applied (with `strict` each must occur in the IR); fails when moe-opt
    fails or leaves one of the ops `left` (`what` names that failure)."""
    res = subprocess.run([moe_opt] + passes + ["--mlir-print-op-generic"], input=src,
                         capture_output=True, text=True)
    if res.returncode != 0 or any('"moe.%s"' % o in res.stdout for o in left):
        raise CaseFail("moe-opt: " + (res.stderr.strip() or what))
    ir = res.stdout
    for old, new in mutations:
        if strict and old not in ir:
            raise CaseFail("mutation: %r not in the IR" % old)
        ir = ir.replace(old, new)
    return ir


def emulate(ir, seed, func, args):
    """Runs the host function `func` of `ir` on `args` in the emulator;
    returns its one result's elements and the emulator (for the launch
    names). Fails when an element was never written."""
    emu = EE.Emulator(ir, seed)
    (out,) = emu.run_host(func, args)
    got = out.data
    if any(v is None for v in got):
        raise CaseFail("result elements never written: %d" % sum(v is None for v in got))
    return got, emu


def example_source(name):
    """The text of examples/<name>.mlir."""
    return open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                             "examples", name + ".mlir")).read()


def kept_verdict(got, ref, keep, H, tol, emu):
    """verdict() on the tokens `keep` marks (rows of H), reporting how many
    were compared; a case in which every token is left out fails (it would
    assert nothing)."""
    T = len(keep)
    sel = [i for i in range(T * H) if keep[i // H]]
    if not sel and T:
        raise CaseFail("every token a near tie: nothing compared")
    report, err = verdict([got[i] for i in sel], [ref[i] for i in sel], tol, emu)
    if report:
        report += "; %d/%d tokens compared" % (sum(keep), T)
    return report, err


# (x dtype, weight dtype, bias dtype or None, result dtype, I, O, token counts)
CASES = [
    # Router logits: bf16 x and router, f32 result; O not a multiple of 4.
    ("bf16", "bf16", None, "f32", 256, 8, [0, 1, 5]),
    ("bf16", "bf16", None, "f32", 96, 13, [3, 9]),
    # A router with a bias (the routing kernel does not fuse it).
    ("bf16", "bf16", "bf16", "f32", 128, 6, [1, 7]),
    # f32 router weight under bf16 x: 4-element vectors for both.
    ("bf16", "f32", "f32", "f32", 192, 5, [4]),
    ("f16", "f16", None, "f32", 64, 16, [2, 6]),
    ("f32", "f32", "f32", "f32", 100, 3, [1, 5]),
    # I not a multiple of the step (guarded tail), odd I (scalar loads).
    ("bf16", "bf16", None, "f32", 40, 4, [3]),
    ("f32", "f32", None, "f32", 33, 2, [2]),
    # The LoRA base: O = I, the input's dtype out; a wide row (unroll 4).
    ("bf16", "bf16", None, "bf16", 64, 64, [5]),
    ("f16", "f16", "f16", "f16", 32, 12, [4]),
    ("bf16", "bf16", None, "f32", 1024, 4, [1, 2]),
    # The tensor-core kernel (linear_mma: mma.sync on the expert kernels'
    # tiles), taken from mma-min-tokens: BN 128 with a partial second row
    # tile; BK 16 and BN 16 (one n8 tile per warp) with a bias and an f32
    # result; f32 on 3xTF32; the host's branch at 7 (linear) and 8 tokens.
    ("bf16", "bf16", None, "bf16", 64, 128, [1, 70], "mma-min-tokens=1"),
    ("f16", "f16", "f16", "f32", 48, 48, [65], "mma-min-tokens=1"),
    ("f32", "f32", "f32", "f32", 32, 64, [3, 67], "mma-min-tokens=1"),
    ("bf16", "bf16", "f32", "bf16", 96, 32, [7, 8], "mma-min-tokens=8"),
]


def source(c):
    xd, wd, bd, yd, I, O = c[:6]
    args = ["%%x: tensor<?x%dx%s>" % (I, xd), "%%w: tensor<%dx%dx%s>" % (O, I, wd)]
    types = ["tensor<?x%dx%s>" % (I, xd), "tensor<%dx%dx%s>" % (O, I, wd)]
    bias = ""
    if bd:
        args.append("%%b: tensor<%dx%s>" % (O, bd))
        types.append("tensor<%dx%s>" % (O, bd))
        bias = " bias %b"
    return """func.func @layer(%s) -> tensor<?x%dx%s> {
  %%y = moe.linear %%x, %%w%s : (%s) -> tensor<?x%dx%s>
  return %%y : tensor<?x%dx%s>
}
""" % (", ".join(args), O, yd, bias, ", ".join(types), O, yd, O, yd)


def run_case(moe_opt, c, T, seed, mutations):
    xd, wd, bd, yd, I, O = c[:6]
    rng = random.Random("%s/%d/%d" % (source(c), T, seed))

    def vals(n, dt, scale=1.0):
        return [EE.round_to(rng.gauss(0.0, scale), dt) for _ in range(n)]
    x = vals(T * I, xd)
    w = vals(O * I, wd, 1.0 / math.sqrt(I))
    b = vals(O, bd) if bd else None
    opts = "=" + c[7] if len(c) > 7 else ""
    ir = lower(moe_opt, ["--convert-moe-linear-to-gpu" + opts], source(c), ["linear"],
               "moe.linear not converted", mutations, strict=True)
    args = [EE.Buf("x", [T, I], xd, data=x), EE.Buf("w", [O, I], wd, data=w)]
    if bd:
        args.append(EE.Buf("b", [O], bd, data=b))
    got, emu = emulate(ir, seed, "layer", args)
    ref = []
    for t in range(T):
        for o in range(O):
            s = math.fsum(x[t * I + i] * w[o * I + i] for i in range(I))
            ref.append(EE.round_to(s + (b[o] if bd else 0.0), yd))
    return verdict(got, ref, TOL[yd], emu)


# Gated shared experts: (H, F, route options, token counts).
GATED = [
    (64, 128, "fuse-linear=0", [1, 6, 70]),
    (64, 96, "fuse-linear-min-tokens=0", [3, 33]),
]


def gated_source(H, F):
    return """func.func @layer(%%x: tensor<?x%(H)dxbf16>, %%sg: tensor<%(F)dx%(H)dxbf16>,
    %%su: tensor<%(F)dx%(H)dxbf16>, %%sd: tensor<%(H)dx%(F)dxbf16>,
    %%gw: tensor<1x%(H)dxbf16>) -> tensor<?x%(H)dxf32> {
  %%y = moe.ffn %%x gate(%%sg : tensor<%(F)dx%(H)dxbf16>) up(%%su : tensor<%(F)dx%(H)dxbf16>) down(%%sd : tensor<%(H)dx%(F)dxbf16>) gate_weight(%%gw : tensor<1x%(H)dxbf16>) {activation = #moe.activation<swiglu>} : tensor<?x%(H)dxbf16> -> tensor<?x%(H)dxf32>
  return %%y : tensor<?x%(H)dxf32>
}
""" % {"H": H, "F": F}


def run_gated(moe_opt, H, F, route_opts, T, seed, mutations):
    rng = random.Random("gated/%d/%d/%s/%d/%d" % (H, F, route_opts, T, seed))

    def vals(n, scale):
        return [EE.round_to(rng.gauss(0.0, scale), "bf16") for _ in range(n)]
    x = vals(T * H, 1.0)
    sg, su = vals(F * H, H ** -0.5), vals(F * H, H ** -0.5)
    sd = vals(H * F, F ** -0.5)
    gw = vals(H, 2.0 * H ** -0.5)
    ir = lower(moe_opt, ["--convert-moe-experts-to-gpu", "--convert-moe-route-to-gpu=" +
                         route_opts, "--convert-moe-linear-to-gpu"], gated_source(H, F),
               ["ffn", "linear", "route", "experts"], "an op not converted", mutations)
    args = [EE.Buf("x", [T, H], "bf16", data=x), EE.Buf("sg", [F, H], "bf16", data=sg),
            EE.Buf("su", [F, H], "bf16", data=su), EE.Buf("sd", [H, F], "bf16", data=sd),
            EE.Buf("gw", [1, H], "bf16", data=gw)]
    got, emu = emulate(ir, seed, "layer", args)
    ref = []
    for t in range(T):
        xt = x[t * H:(t + 1) * H]
        z = math.fsum(a * b for a, b in zip(xt, gw))
        g = 1.0 / (1.0 + math.exp(-z))
        h = []
        for j in range(F):
            a = math.fsum(p * q for p, q in zip(xt, sg[j * H:(j + 1) * H]))
            u = math.fsum(p * q for p, q in zip(xt, su[j * H:(j + 1) * H]))
            h.append(a / (1.0 + math.exp(-a)) * u)
        for i in range(H):
            ref.append(g * math.fsum(p * q for p, q in zip(sd[i * F:(i + 1) * F], h)))
    return verdict(got, ref, 1e-2, emu)


# LoRA experts (AT-MoE): (x / A / B dtypes, In, Out, E, r, K, alpha,
# expert_offset, token counts). Indices draw from -1 .. E + 2 offset - 1, so
# some slots name no expert of the op (their slot must be 0).
LORA = [
    ("f32", "f32", "f32", 64, 64, 8, 4, 2, 8.0, 0, [1, 5]),
    ("bf16", "bf16", "bf16", 96, 96, 4, 8, 3, 16.0, 1, [3, 7]),
    ("f16", "f32", "f16", 40, 40, 6, 2, 1, 4.0, 0, [4]),
]


def lora_source(c):
    xd, ad, bd, I, O, E, r, K, alpha, off = c[:10]
    return """func.func @layer(%%x: tensor<?x%(I)dx%(xd)s>, %%i: tensor<?x%(K)dxi32>,
    %%a: tensor<%(E)dx%(r)dx%(I)dx%(ad)s>, %%b: tensor<%(E)dx%(O)dx%(r)dx%(bd)s>) -> tensor<?x%(K)dx%(O)dxf32> {
  %%s = moe.lora_experts %%x, %%i a(%%a : tensor<%(E)dx%(r)dx%(I)dx%(ad)s>) b(%%b : tensor<%(E)dx%(O)dx%(r)dx%(bd)s>) {alpha = %(alpha)r : f64, expert_offset = %(off)d : i64} : tensor<?x%(I)dx%(xd)s>, tensor<?x%(K)dxi32> -> tensor<?x%(K)dx%(O)dxf32>
  return %%s : tensor<?x%(K)dx%(O)dxf32>
}
""" % dict(xd=xd, ad=ad, bd=bd, I=I, O=O, E=E, r=r, K=K, alpha=alpha, off=off)


def run_lora(moe_opt, c, T, seed, mutations):
    xd, ad, bd, I, O, E, r, K, alpha, off = c[:10]
    rng = random.Random("lora/%s/%d/%d" % (c[:10], T, seed))

    def vals(n, dt, scale):
        return [EE.round_to(rng.gauss(0.0, scale), dt) for _ in range(n)]
    x = vals(T * I, xd, 1.0)
    a = vals(E * r * I, ad, I ** -0.5)
    b = vals(E * O * r, bd, 1.0)
    ids = list(range(-1, E + 2 * off))
    idx = [rng.choice(ids) for _ in range(T * K)]
    ir = lower(moe_opt, ["--convert-moe-lora-to-gpu"], lora_source(c), ["lora_experts"],
               "moe.lora_experts not converted", mutations)
    args = [EE.Buf("x", [T, I], xd, data=x), EE.Buf("idx", [T, K], "i32", data=idx),
            EE.Buf("a", [E, r, I], ad, data=a), EE.Buf("b", [E, O, r], bd, data=b)]
    got, emu = emulate(ir, seed, "layer", args)
    ref = []
    for t in range(T):
        for kk in range(K):
            e = idx[t * K + kk] - off
            if not 0 <= e < E:
                ref.extend([0.0] * O)
                continue
            ax = [math.fsum(x[t * I + h] * a[(e * r + j) * I + h] for h in range(I))
                  for j in range(r)]
            ref.extend(alpha / r * math.fsum(b[(e * O + o) * r + j] * ax[j]
                                             for j in range(r)) for o in range(O))
    if any(g != 0.0 for g, q in zip(got, ref) if q == 0.0):
        return None, "a slot of no expert of the op is not 0"
    return verdict(got, ref, 1e-5, emu)


# The AT-MoE output fused (convert-moe-lora-to-gpu with fuse-combine):
# y = W_0 x (+ b) + sum_k w_k (alpha / r) B_e A_e x, as moe.linear +
# moe.lora_experts + moe.combine, which become lora_a (times the routing
# weight) and lora_out (the base GEMM with the B terms in its lanes' sums).
# (x / W_0 / A / B / bias or None / result dtypes, In, Out, E, r, K, alpha,
# expert_offset, token counts). K r = 40 > 32 takes a second, guarded step
# of the lanes' terms.
LORA_FUSED = [
    ("f32", "f32", "f32", "f32", None, "f32", 64, 64, 8, 4, 4, 8.0, 0, [1, 6]),
    ("bf16", "bf16", "bf16", "bf16", "bf16", "bf16", 96, 96, 4, 8, 5, 16.0, 1, [3, 9]),
    ("f16", "f16", "f32", "f16", None, "f16", 40, 24, 6, 2, 2, 4.0, 0, [5]),
    ("bf16", "bf16", "bf16", "f32", "f32", "f32", 64, 33, 3, 4, 2, 4.0, 2, [0, 4]),
    # lora_out_mma (the tensor-core base GEMM with the K r terms in its
    # epilogue), from mma-min-tokens: K r = 40, BN 32, an expert offset and
    # a bias; f32 (3xTF32); the host's branch at 7 (lora_out) and 8 tokens.
    # Where x and A share a dtype and In, E r are multiples of 16, from
    # dense-a-min-tokens (default 70 BN / (K r): 56 tokens for the first
    # case) the host takes the A products of every expert densely
    # (lora_a_mma, ax : T x E r) and lora_out_mma_dense, which forms u from
    # ax, the routing weight and alpha / r; below (and for E r = 12, an f32
    # A for bf16 x, dense-a-min-tokens=0) lora_a before lora_out_mma. The
    # three-way branch at 7 / 8 / 16 tokens.
    ("bf16", "bf16", "bf16", "bf16", "bf16", "bf16", 96, 96, 4, 8, 5, 16.0, 1, [9, 70],
     "mma-min-tokens=1"),
    ("f32", "f32", "f32", "f32", None, "f32", 64, 64, 8, 4, 4, 8.0, 0, [6],
     "mma-min-tokens=1 dense-a-min-tokens=1"),
    ("f16", "f16", "f16", "f32", None, "f16", 64, 48, 4, 4, 3, 8.0, 2, [5, 33],
     "mma-min-tokens=1 dense-a-min-tokens=1"),
    ("f16", "f16", "f32", "f16", None, "f16", 48, 32, 6, 2, 2, 4.0, 0, [7, 8],
     "mma-min-tokens=8"),
    ("bf16", "bf16", "f32", "bf16", None, "bf16", 64, 32, 4, 4, 2, 4.0, 0, [10],
     "mma-min-tokens=1"),
    ("bf16", "bf16", "bf16", "bf16", "bf16", "bf16", 96, 96, 4, 8, 5, 16.0, 1, [70],
     "mma-min-tokens=1 dense-a-min-tokens=0"),
    ("bf16", "bf16", "bf16", "f32", None, "bf16", 64, 32, 4, 4, 2, 4.0, 1, [7, 8, 16],
     "mma-min-tokens=8 dense-a-min-tokens=16"),
]


def lora_fused_source(c):
    xd, wd, ad, bd, bsd, yd, I, O, E, r, K, alpha, off = c[:13]
    d = dict(xd=xd, wd=wd, ad=ad, bd=bd, bsd=bsd, yd=yd, I=I, O=O, E=E, r=r, K=K,
             alpha=alpha, off=off)
    bias_arg = ", %%bias: tensor<%(O)dx%(bsd)s>" % d if bsd else ""
    bias = " bias %%bias" if bsd else ""
    bias_type = ", tensor<%(O)dx%(bsd)s>" % d if bsd else ""
    d.update(bias_arg=bias_arg, bias=bias % d if bsd else "", bias_type=bias_type)
    return """func.func @layer(%%x: tensor<?x%(I)dx%(xd)s>, %%i: tensor<?x%(K)dxi32>,
    %%w: tensor<?x%(K)dxf32>, %%w0: tensor<%(O)dx%(I)dx%(wd)s>%(bias_arg)s,
    %%a: tensor<%(E)dx%(r)dx%(I)dx%(ad)s>, %%b: tensor<%(E)dx%(O)dx%(r)dx%(bd)s>) -> tensor<?x%(O)dx%(yd)s> {
  %%base = moe.linear %%x, %%w0%(bias)s : (tensor<?x%(I)dx%(xd)s>, tensor<%(O)dx%(I)dx%(wd)s>%(bias_type)s) -> tensor<?x%(O)dx%(yd)s>
  %%s = moe.lora_experts %%x, %%i a(%%a : tensor<%(E)dx%(r)dx%(I)dx%(ad)s>) b(%%b : tensor<%(E)dx%(O)dx%(r)dx%(bd)s>) {alpha = %(alpha)r : f64, expert_offset = %(off)d : i64} : tensor<?x%(I)dx%(xd)s>, tensor<?x%(K)dxi32> -> tensor<?x%(K)dx%(O)dxf32>
  %%y = moe.combine weights(%%w : tensor<?x%(K)dxf32>) slots(%%s : tensor<?x%(K)dx%(O)dxf32>) addends(%%base : tensor<?x%(O)dx%(yd)s>) : tensor<?x%(O)dx%(yd)s>
  return %%y : tensor<?x%(O)dx%(yd)s>
}
""" % d


def run_lora_fused(moe_opt, c, T, seed, mutations):
    xd, wd, ad, bd, bsd, yd, I, O, E, r, K, alpha, off = c[:13]
    rng = random.Random("lora-fused/%s/%d/%d" % (c[:13], T, seed))

    def vals(n, dt, scale):
        return [EE.round_to(rng.gauss(0.0, scale), dt) for _ in range(n)]
    x = vals(T * I, xd, 1.0)
    w0 = vals(O * I, wd, I ** -0.5)
    bias = vals(O, bsd, 1.0) if bsd else None
    a = vals(E * r * I, ad, I ** -0.5)
    b = vals(E * O * r, bd, 1.0)
    ids = list(range(-1, E + 2 * off))
    idx = [rng.choice(ids) for _ in range(T * K)]
    wts = [EE.round_to(rng.uniform(0.0, 1.0), "f32") for _ in range(T * K)]
    opts = "=" + c[14] if len(c) > 14 else ""
    ir = lower(moe_opt, ["--convert-moe-lora-to-gpu" + opts], lora_fused_source(c),
               ["lora_experts", "linear", "combine"], "an op not fused", mutations)
    args = [EE.Buf("x", [T, I], xd, data=x), EE.Buf("idx", [T, K], "i32", data=idx),
            EE.Buf("w", [T, K], "f32", data=wts), EE.Buf("w0", [O, I], wd, data=w0)]
    if bsd:
        args.append(EE.Buf("bias", [O], bsd, data=bias))
    args += [EE.Buf("a", [E, r, I], ad, data=a), EE.Buf("b", [E, O, r], bd, data=b)]
    got, emu = emulate(ir, seed, "layer", args)
    ref = []
    for t in range(T):
        xt = x[t * I:(t + 1) * I]
        y = [math.fsum(p * q for p, q in zip(xt, w0[o * I:(o + 1) * I])) +
             (bias[o] if bsd else 0.0) for o in range(O)]
        for kk in range(K):
            e = idx[t * K + kk] - off
            if not 0 <= e < E:
                continue
            ax = [math.fsum(p * q for p, q in zip(xt, a[(e * r + j) * I:(e * r + j + 1) * I]))
                  for j in range(r)]
            for o in range(O):
                y[o] += wts[t * K + kk] * alpha / r * math.fsum(
                    b[(e * O + o) * r + j] * ax[j] for j in range(r))
        ref.extend(EE.round_to(v, yd) for v in y)
    return verdict(got, ref, TOL[yd] if yd != "f32" else 1e-5, emu)


# A router GEMM and its routing (moe.linear -> moe.route, softmax top-K
# renormalised) through convert-moe-route-to-gpu and
# convert-moe-linear-to-gpu: below fuse-linear-min-tokens the warp-per-output
# linear kernel and the routing kernel on the logits, from there the fused
# routing kernel, and from mma-linear-min-tokens (the router's shape taking
# the tensor-core kernel) linear_mma and the routing kernel on its logits.
# (x / W dtype, E, H, K, routing pass options, token counts). The second
# case leaves the fused kernel no range (both thresholds 2); the third takes
# the default estimate (83 BN / E: BN 16, E = 48 -> 28 tokens).
ROUTER = [
    ("bf16", 64, 128, 4, "fuse-linear-min-tokens=4 mma-linear-min-tokens=8", [3, 5, 9, 70]),
    ("f32", 32, 64, 2, "fuse-linear-min-tokens=2 mma-linear-min-tokens=2", [1, 6]),
    ("f16", 48, 96, 8, "fuse-linear-min-tokens=4", [5, 30]),
]


def run_router(moe_opt, c, T, seed, mutations):
    dt, E, H, K, ropts, _ = c
    rng = random.Random("router/%s/%d/%d" % (c[:5], T, seed))
    x = [EE.round_to(rng.gauss(0.0, 1.0), dt) for _ in range(T * H)]
    wr = [EE.round_to(rng.gauss(0.0, H ** -0.5), dt) for _ in range(E * H)]
    t = dict(x="tensor<?x%dx%s>" % (H, dt), w="tensor<%dx%dx%s>" % (E, H, dt),
             z="tensor<?x%dxf32>" % E, i="tensor<?x%dxi32>" % K, f="tensor<?x%dxf32>" % K,
             k=K)
    src = """func.func @router(%%x: %(x)s, %%wr: %(w)s) -> (%(i)s, %(f)s) {
  %%z = moe.linear %%x, %%wr : (%(x)s, %(w)s) -> %(z)s
  %%i, %%w = moe.route %%z {routing = #moe.routing<softmax, topk, k = %(k)d, renormalize>} : %(z)s -> %(i)s, %(f)s
  return %%i, %%w : %(i)s, %(f)s
}
""" % t
    ir = lower(moe_opt, ["--convert-moe-route-to-gpu=" + ropts, "--convert-moe-linear-to-gpu"],
               src, ["linear", "route"], "an op not converted", mutations)
    emu = EE.Emulator(ir, seed)
    idx, w = emu.run_host("router", [EE.Buf("x", [T, H], dt, data=x),
                                     EE.Buf("wr", [E, H], dt, data=wr)])
    if any(v is None for v in idx.data + w.data):
        raise CaseFail("result elements never written")
    got, ref, kept = [], [], 0
    for tok in range(T):
        z = [math.fsum(p * q for p, q in zip(x[tok * H:(tok + 1) * H], wr[e * H:(e + 1) * H]))
             for e in range(E)]
        order = sorted(range(E), key=lambda e: (-z[e], e))
        # A near tie at the K-th place may select either expert.
        if z[order[K - 1]] - z[order[K]] <= 1e-4 * max(1.0, abs(z[order[K]])):
            continue
        kept += 1
        sel = order[:K]
        m = max(z)
        p = [math.exp(z[e] - m) for e in sel]
        if idx.data[tok * K:(tok + 1) * K] != sel:
            return None, "token %d: experts %s, expected %s" % (
                tok, idx.data[tok * K:(tok + 1) * K], sel)
        got += w.data[tok * K:(tok + 1) * K]
        ref += [v / sum(p) for v in p]
    if T and not kept:
        raise CaseFail("every token a near tie: nothing compared")
    report, err = verdict(got, ref, 1e-5, emu) if got else (
        "no token; %s" % " ".join(EE.launch_names(emu)), None)
    if report:
        report += "; %d/%d tokens compared" % (kept, T)
    return report, err


# A projected router (Nexus, MOE_SEMANTICS §1.7: W_r = W_2 SwiGLU(W_1 d_e)
# for every expert) through convert-moe-linear-to-gpu: swiglu_up (the gate
# and up rows of W_1 in one warp per output) and the linear kernel for
# W_2. (D / W_1 / W_2 dtypes, E, m, h', H). m = 24 and h' = 20 are not
# multiples of the lanes' step (guarded tails); E = 6 leaves half a block of
# "tokens"; h' = 1 one output.
PROJECTED = [
    ("bf16", "bf16", "bf16", 6, 16, 32, 64),
    ("f32", "f32", "f32", 4, 24, 20, 40),
    ("f16", "bf16", "f32", 9, 64, 96, 33),
    ("bf16", "f32", "bf16", 2, 8, 1, 8),
]


def projected_source(c):
    dd, d1, d2, E, m, hp, H = c
    t = dict(d="tensor<%dx%dx%s>" % (E, m, dd), w1="tensor<%dx%dx%s>" % (2 * hp, m, d1),
             w2="tensor<%dx%dx%s>" % (H, hp, d2), r="tensor<%dx%dxf32>" % (E, H))
    return """func.func @layer(%%d: %(d)s, %%w1: %(w1)s, %%w2: %(w2)s) -> %(r)s {
  %%r = moe.projected_router %%d, %%w1, %%w2 : (%(d)s, %(w1)s, %(w2)s) -> %(r)s
  return %%r : %(r)s
}
""" % t


def run_projected(moe_opt, c, seed, mutations):
    dd, d1, d2, E, m, hp, H = c
    rng = random.Random("projected/%s/%d" % (c, seed))

    def vals(n, dt, scale):
        return [EE.round_to(rng.gauss(0.0, scale), dt) for _ in range(n)]
    d = vals(E * m, dd, 1.0)
    w1 = vals(2 * hp * m, d1, m ** -0.5)
    w2 = vals(H * hp, d2, hp ** -0.5)
    ir = lower(moe_opt, ["--convert-moe-linear-to-gpu"], projected_source(c),
               ["projected_router", "linear"], "an op not converted", mutations)
    got, emu = emulate(ir, seed, "layer", [
        EE.Buf("d", [E, m], dd, data=d), EE.Buf("w1", [2 * hp, m], d1, data=w1),
        EE.Buf("w2", [H, hp], d2, data=w2)])
    ref = []
    for e in range(E):
        de = d[e * m:(e + 1) * m]
        z = [math.fsum(p * q for p, q in zip(de, w1[j * m:(j + 1) * m])) for j in range(2 * hp)]
        a = [z[j] / (1.0 + math.exp(-z[j])) * z[hp + j] for j in range(hp)]
        ref.extend(math.fsum(p * q for p, q in zip(a, w2[i * hp:(i + 1) * hp]))
                   for i in range(H))
    return verdict(got, ref, 1e-5, emu)


# The norm kernel (convert-moe-norm-to-gpu): moe.rms_norm, alone or with the
# moe.combine of addends only that feeds it (the Cartesian layer's residual
# h = x + MoE_A(x)). (addend dtypes, or None for the norm alone; h dtype;
# weight dtype; H; h also returned (the kernel then stores it); epsilon;
# token counts). H = 40 and 100 are not multiples of the 32-lane step (a
# guarded tail); 33 takes scalar accesses.
NORM = [
    (None, "f32", "f32", 64, False, 1e-6, [0, 1, 5]),
    (None, "bf16", "bf16", 256, False, 1e-6, [3]),
    (("f16", "f16"), "f16", "f16", 64, False, 1e-6, [1, 6]),
    (("bf16", "f32"), "bf16", "f32", 40, True, 1e-5, [2, 9]),
    (("f32", "bf16", "bf16"), "f32", "bf16", 100, False, 1e-6, [4]),
    (("bf16", "bf16"), "bf16", "bf16", 33, True, 1e-6, [3]),
    (("f16", "f16"), "f16", "f16", 1024, False, 1e-6, [2]),
]


def norm_source(c):
    adds, hd, wd, H, store_h, eps = c[:6]
    d = dict(hd=hd, wd=wd, H=H, eps=eps)
    if adds is None:
        args = ["%%x: tensor<?x%(H)dx%(hd)s>" % d]
        body, h = "", "%x"
    else:
        args = ["%%a%d: tensor<?x%dx%s>" % (i, H, a) for i, a in enumerate(adds)]
        body = "  %%h = moe.combine addends(%s : %s) : tensor<?x%dx%s>\n" % (
            ", ".join("%%a%d" % i for i in range(len(adds))),
            ", ".join("tensor<?x%dx%s>" % (H, a) for a in adds), H, hd)
        h = "%h"
    args.append("%%g: tensor<%(H)dx%(wd)s>" % d)
    rets = ["%y"] + (["%h"] if store_h else [])
    ret_types = ["tensor<?x%(H)dx%(hd)s>" % d] * len(rets)
    return """func.func @layer(%s) -> (%s) {
%s  %%y = moe.rms_norm %s, %%g {epsilon = %.6e : f64} : tensor<?x%dx%s>, tensor<%dx%s>
  return %s : %s
}
""" % (", ".join(args), ", ".join(ret_types), body, h, eps, H, hd, H, wd,
       ", ".join(rets), ", ".join(ret_types))


def run_norm(moe_opt, c, T, seed, mutations):
    adds, hd, wd, H, store_h, eps = c[:6]
    rng = random.Random("norm/%s/%d/%d" % (c[:6], T, seed))

    def vals(n, dt, scale, mean=0.0):
        return [EE.round_to(rng.gauss(mean, scale), dt) for _ in range(n)]
    ins = [vals(T * H, a, 1.0) for a in (adds or [hd])]
    g = vals(H, wd, 0.2, 1.0)
    ir = lower(moe_opt, ["--convert-moe-norm-to-gpu"], norm_source(c),
               ["rms_norm", "combine"], "an op not converted", mutations)
    args = [EE.Buf("a%d" % i, [T, H], a, data=v)
            for i, (a, v) in enumerate(zip(adds or [hd], ins))]
    args.append(EE.Buf("g", [H], wd, data=g))
    emu = EE.Emulator(ir, seed)
    outs = emu.run_host("layer", args)
    for o in outs:
        if any(v is None for v in o.data):
            raise CaseFail("result elements never written: %d" %
                           sum(v is None for v in o.data))
    # h as the combine defines it: the addends summed in f32 in operand
    # order, rounded once to h's type.
    h = []
    for i in range(T * H):
        acc = 0.0
        for v in ins:
            acc = EE.f32(acc + v[i])
        h.append(EE.round_to(acc, hd))
    if store_h and outs[1].data != h:
        bad = sum(p != q for p, q in zip(outs[1].data, h))
        return None, "h differs from the combine's rounding in %d elements" % bad
    ref = []
    for t in range(T):
        row = h[t * H:(t + 1) * H]
        inv = 1.0 / math.sqrt(math.fsum(v * v for v in row) / H + eps)
        ref.extend(EE.round_to(v * inv * gv, hd) for v, gv in zip(row, g))
    return verdict(outs[0].data, ref, TOL[hd], emu)


# The AT-MoE example end to end (examples/at_moe.mlir: hierarchical routing,
# 2 groups of 4 experts, tau_group 0.5, tau_expert 1.5, top-4 over the final
# weights; LoRA experts of rank 4 on a 64 x 64 base, alpha 8; f32) through
# --moe-decompose and the default kernel passes: the expert and group router
# GEMMs (two linear kernels below the fused threshold; with
# fuse-linear-min-tokens=0 both inside the routing kernel, route_fused), the
# routing kernel, lora_a and lora_out, all launches emulated in order,
# against MOE_SEMANTICS §1.6 and §3 in double. A token whose k-th and
# (k+1)-th final weights are within 1e-5 is left out (near tie).
# (routing pass options, token counts[, LoRA pass options]): with
# mma-min-tokens=1 dense-a-min-tokens=1 the tensor-core branch, lora_a_mma
# (the A products of all 8 experts densely) and lora_out_mma_dense, at
# every T.
AT_MOE = [("fuse-linear=1", [1, 6, 9]), ("fuse-linear-min-tokens=0", [1, 7]),
          ("fuse-linear-min-tokens=0", [5], "mma-min-tokens=1 dense-a-min-tokens=1")]


def run_at_moe(moe_opt, route_opts, T, seed, mutations, lora_opts=""):
    src = example_source("at_moe")
    rng = random.Random("at-moe/%s/%d/%d" % (route_opts, T, seed))
    H, E, G, R, K, alpha, tg, te = 64, 8, 2, 4, 4, 8.0, 0.5, 1.5

    def vals(n, scale):
        return [EE.round_to(rng.gauss(0.0, scale), "f32") for _ in range(n)]
    x = vals(T * H, 1.0)
    wr, wg = vals(E * H, H ** -0.5), vals(G * H, H ** -0.5)
    base, a = vals(H * H, H ** -0.5), vals(E * R * H, H ** -0.5)
    b = vals(E * H * R, 1.0)
    ir = lower(moe_opt, ["--moe-decompose", "--canonicalize", "--convert-moe-route-to-gpu=" +
                         route_opts,
                         "--convert-moe-lora-to-gpu" + ("=" + lora_opts if lora_opts else ""),
                         "--convert-moe-linear-to-gpu"],
               src, ["layer", "linear", "route", "lora_experts", "combine"],
               "an op not converted", mutations)
    args = [EE.Buf("x", [T, H], "f32", data=x), EE.Buf("wr", [E, H], "f32", data=wr),
            EE.Buf("wg", [G, H], "f32", data=wg), EE.Buf("base", [H, H], "f32", data=base),
            EE.Buf("a", [E, R, H], "f32", data=a), EE.Buf("b", [E, H, R], "f32", data=b)]
    got, emu = emulate(ir, seed, "at_moe", args)

    def softmax(v):
        m = max(v)
        e = [math.exp(u - m) for u in v]
        return [u / sum(e) for u in e]
    ref, keep = [], []
    for t in range(T):
        xt = x[t * H:(t + 1) * H]
        dot = lambda w, i, n: math.fsum(p * q for p, q in zip(xt, w[i * n:(i + 1) * n]))
        ga = softmax([dot(wg, g, H) / tg for g in range(G)])
        z = [dot(wr, e, H) / te for e in range(E)]
        eg = E // G
        w = []
        for g in range(G):
            w += [ga[g] * p for p in softmax(z[g * eg:(g + 1) * eg])]
        order = sorted(range(E), key=lambda e: (-w[e], e))
        keep.append(w[order[K - 1]] - w[order[K]] > 1e-5)
        y = [dot(base, o, H) for o in range(H)]
        for e in order[:K]:
            ax = [dot(a, e * R + j, H) for j in range(R)]
            for o in range(H):
                y[o] += w[e] * alpha / R * math.fsum(b[(e * H + o) * R + j] * ax[j]
                                                     for j in range(R))
        ref.extend(y)
    return kept_verdict(got, ref, keep, H, 1e-5, emu)


# The Nexus example end to end (examples/nexus.mlir: a projected router,
# m = 16, h' = 32, softmax top-2 renormalised over E = 6 experts of H = 64,
# F = 96, SwiGLU, and a SwiGLU shared expert; bf16) through --moe-decompose
# and the default kernel passes: swiglu_up and the linear kernel for W_r,
# the router GEMM (the linear kernel at every T: the routing kernel fuses
# only a router of x's dtype, and W_r is f32), the routing kernel, the
# expert kernels with the
# shared expert in their grid and the combine fused into the down
# projection, all emulated in launch order against MOE_SEMANTICS §1.7 / §2 /
# §3 in double. Tolerance 1e-2 (bf16; the kernels round h to bf16). A token
# whose 2nd and 3rd probabilities are within 1e-4 is left out (near tie).
NEXUS = [("fuse-linear-min-tokens=0", [1, 6, 9])]


def run_nexus(moe_opt, route_opts, T, seed, mutations):
    src = example_source("nexus")
    rng = random.Random("nexus/%s/%d/%d" % (route_opts, T, seed))
    H, F, E, K, m, hp = 64, 96, 6, 2, 16, 32

    def vals(n, scale):
        return [EE.round_to(rng.gauss(0.0, scale), "bf16") for _ in range(n)]
    x = vals(T * H, 1.0)
    dom = vals(E * m, 1.0)
    w1, w2 = vals(2 * hp * m, m ** -0.5), vals(H * hp, hp ** -0.5)
    gate, up = vals(E * F * H, H ** -0.5), vals(E * F * H, H ** -0.5)
    down = vals(E * H * F, F ** -0.5)
    sg, su, sd = vals(F * H, H ** -0.5), vals(F * H, H ** -0.5), vals(H * F, F ** -0.5)
    ir = lower(moe_opt, ["--moe-decompose", "--canonicalize", "--convert-moe-experts-to-gpu",
                         "--convert-moe-route-to-gpu=" + route_opts,
                         "--convert-moe-linear-to-gpu"],
               src, ["layer", "projected_router", "linear", "route", "experts", "ffn",
                     "combine"], "an op not converted", mutations)
    args = [EE.Buf("x", [T, H], "bf16", data=x), EE.Buf("dom", [E, m], "bf16", data=dom),
            EE.Buf("w1", [2 * hp, m], "bf16", data=w1), EE.Buf("w2", [H, hp], "bf16", data=w2),
            EE.Buf("gate", [E, F, H], "bf16", data=gate), EE.Buf("up", [E, F, H], "bf16", data=up),
            EE.Buf("down", [E, H, F], "bf16", data=down), EE.Buf("sg", [F, H], "bf16", data=sg),
            EE.Buf("su", [F, H], "bf16", data=su), EE.Buf("sd", [H, F], "bf16", data=sd)]
    got, emu = emulate(ir, seed, "nexus_moe", args)

    def dot(a, b):
        return math.fsum(p * q for p, q in zip(a, b))

    def ffn(xt, g, u, d):
        h = []
        for j in range(F):
            a = dot(xt, g[j * H:(j + 1) * H])
            h.append(a / (1.0 + math.exp(-a)) * dot(xt, u[j * H:(j + 1) * H]))
        return [dot(d[i * F:(i + 1) * F], h) for i in range(H)]
    wr = []
    for e in range(E):
        z = [dot(dom[e * m:(e + 1) * m], w1[j * m:(j + 1) * m]) for j in range(2 * hp)]
        a = [z[j] / (1.0 + math.exp(-z[j])) * z[hp + j] for j in range(hp)]
        wr.append([dot(a, w2[i * hp:(i + 1) * hp]) for i in range(H)])
    ref, keep = [], []
    for t in range(T):
        xt = x[t * H:(t + 1) * H]
        logit = [dot(xt, wr[e]) for e in range(E)]
        mx = max(logit)
        p = [math.exp(v - mx) for v in logit]
        p = [v / sum(p) for v in p]
        order = sorted(range(E), key=lambda e: (-p[e], e))
        keep.append(p[order[K - 1]] - p[order[K]] > 1e-4)
        wsum = sum(p[e] for e in order[:K])
        y = ffn(xt, sg, su, sd)
        for e in order[:K]:
            ye = ffn(xt, gate[e * F * H:(e + 1) * F * H], up[e * F * H:(e + 1) * F * H],
                     down[e * H * F:(e + 1) * H * F])
            y = [a + p[e] / wsum * b for a, b in zip(y, ye)]
        ref.extend(EE.round_to(v, "bf16") for v in y)
    return kept_verdict(got, ref, keep, H, 1e-2, emu)


# The Cartesian example end to end (examples/cartesian.mlir, MOE_SEMANTICS
# §4: h = x + A(x), y = B(rmsnorm(h)) + a gelu shared expert of B; two
# softmax top-2 renormalised layers of E = 4 SwiGLU experts, H = 64, F = 32,
# shared F = 64; f16) through --moe-decompose and the default kernel passes:
# the router GEMMs, the routing kernels, the expert kernels (the shared
# expert a one-expert set of its own, its indices an unfilled buffer that
# its align kernel must not read), the norm
# kernel with the residual add fused, all emulated in launch order against
# the definition in double with the compiled layer's roundings to f16 (A's
# combine, h, the norm's output, the result). Tolerance 5e-3 (the kernels
# also round the expert's activations to f16). A token whose 2nd and 3rd
# probabilities, in either layer, are within 2e-3 is left out (near tie; B
# routes on the rounded norm).
CARTESIAN = [("fuse-linear-min-tokens=256", [1, 5]), ("fuse-linear-min-tokens=0", [33])]


def run_cartesian(moe_opt, route_opts, T, seed, mutations):
    src = example_source("cartesian")
    rng = random.Random("cartesian/%s/%d/%d" % (route_opts, T, seed))
    H, F, E, K, FS, eps = 64, 32, 4, 2, 64, 1e-6
    f16 = lambda v: EE.round_to(v, "f16")

    def vals(n, scale, mean=0.0):
        return [f16(rng.gauss(mean, scale)) for _ in range(n)]
    x = vals(T * H, 1.0)
    norm = vals(H, 0.1, 1.0)
    ra, rb = vals(E * H, H ** -0.5), vals(E * H, H ** -0.5)
    ga, ua, gb, ub = (vals(E * F * H, H ** -0.5) for _ in range(4))
    da, db = vals(E * H * F, F ** -0.5), vals(E * H * F, F ** -0.5)
    su, sd = vals(FS * H, H ** -0.5), vals(H * FS, FS ** -0.5)
    ir = lower(moe_opt, ["--moe-decompose", "--canonicalize", "--convert-moe-experts-to-gpu",
                         "--convert-moe-route-to-gpu=" + route_opts,
                         "--convert-moe-linear-to-gpu", "--convert-moe-norm-to-gpu"],
               src, ["cartesian", "layer", "linear", "route", "experts", "ffn", "combine",
                     "rms_norm"], "an op not converted", mutations)
    B = lambda name, shape, data: EE.Buf(name, shape, "f16", data=data)
    args = [B("x", [T, H], x), B("norm", [H], norm), B("ra", [E, H], ra),
            B("ga", [E, F, H], ga), B("ua", [E, F, H], ua), B("da", [E, H, F], da),
            B("rb", [E, H], rb), B("gb", [E, F, H], gb), B("ub", [E, F, H], ub),
            B("db", [E, H, F], db), B("su", [FS, H], su), B("sd", [H, FS], sd)]
    got, emu = emulate(ir, seed, "cartesian_moe", args)

    def dot(a, b):
        return math.fsum(p * q for p, q in zip(a, b))

    def gelu(v):
        return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))

    def routed(xt, r, g, u, d):
        """The layer's routed experts' output and whether the choice is a
        near tie."""
        logit = [dot(xt, r[e * H:(e + 1) * H]) for e in range(E)]
        mx = max(logit)
        p = [math.exp(v - mx) for v in logit]
        p = [v / sum(p) for v in p]
        order = sorted(range(E), key=lambda e: (-p[e], e))
        tie = p[order[K - 1]] - p[order[K]] <= 2e-3
        wsum = sum(p[e] for e in order[:K])
        y = [0.0] * H
        for e in order[:K]:
            h = []
            for j in range(F):
                row = (e * F + j) * H
                a = dot(xt, g[row:row + H])
                h.append(a / (1.0 + math.exp(-a)) * dot(xt, u[row:row + H]))
            for i in range(H):
                y[i] += p[e] / wsum * dot(d[(e * H + i) * F:(e * H + i + 1) * F], h)
        return y, tie
    ref, keep = [], []
    for t in range(T):
        xt = x[t * H:(t + 1) * H]
        ya, tie_a = routed(xt, ra, ga, ua, da)
        h = [f16(p + f16(q)) for p, q in zip(xt, ya)]
        inv = 1.0 / math.sqrt(math.fsum(v * v for v in h) / H + eps)
        n = [f16(v * inv * w) for v, w in zip(h, norm)]
        yb, tie_b = routed(n, rb, gb, ub, db)
        hs = [gelu(dot(n, su[j * H:(j + 1) * H])) for j in range(FS)]
        ys = [dot(sd[i * FS:(i + 1) * FS], hs) for i in range(H)]
        ref.extend(f16(p + q) for p, q in zip(yb, ys))
        keep.append(not (tie_a or tie_b))
    return kept_verdict(got, ref, keep, H, 5e-3, emu)


# MoE++ (MOE_SEMANTICS §3 zero-computation experts) end to end: softmax
# top-2 (not renormalised) over 5 SwiGLU experts (H = 32, F = 48) and the
# zero, copy and constant experts (ids 5, 6, 7; the constant one's
# [a1, a2] = softmax(W_c x), output a1 x + a2 v), through --moe-decompose
# and the default kernel passes: the router GEMM (linear kernel), the
# routing kernel, the special kernel (the weighted sum of the token's
# zero-computation slots, an addend of the combine) and the expert kernels
# with the combine fused, in launch order, against the definition in
# double. Tolerance 1e-2 for bf16 (the kernels round h to bf16), 1e-4 for
# f32 (3xTF32). A token whose 2nd and 3rd probabilities are within 1e-4 is
# left out (near tie). Ids are forced onto the special experts for some
# tokens by a router that favours them (rows 5-7 scaled up).
MOEPP = [("bf16", [1, 5, 33]), ("f32", [6])]


def moepp_source(dt):
    H, F = 32, 48
    return """
func.func @moepp(%%x: tensor<?x%(H)dx%(dt)s>, %%router: tensor<8x%(H)dx%(dt)s>,
    %%gate: tensor<5x%(F)dx%(H)dx%(dt)s>, %%up: tensor<5x%(F)dx%(H)dx%(dt)s>,
    %%down: tensor<5x%(H)dx%(F)dx%(dt)s>, %%cr: tensor<1x2x%(H)dx%(dt)s>,
    %%cv: tensor<1x%(H)dx%(dt)s>) -> tensor<?x%(H)dx%(dt)s> {
  %%y = moe.layer %%x : tensor<?x%(H)dx%(dt)s> router(%%router : tensor<8x%(H)dx%(dt)s>)
      gate(%%gate : tensor<5x%(F)dx%(H)dx%(dt)s>) up(%%up : tensor<5x%(F)dx%(H)dx%(dt)s>)
      down(%%down : tensor<5x%(H)dx%(F)dx%(dt)s>) const_router(%%cr : tensor<1x2x%(H)dx%(dt)s>)
      const_vectors(%%cv : tensor<1x%(H)dx%(dt)s>)
      {special_kinds = [#moe.special<zero>, #moe.special<copy>, #moe.special<constant>],
       routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<swiglu>}
      -> tensor<?x%(H)dx%(dt)s>
  return %%y : tensor<?x%(H)dx%(dt)s>
}
""" % {"H": H, "F": F, "dt": dt}


def run_moepp(moe_opt, dt, T, seed, mutations):
    rng = random.Random("moepp/%s/%d/%d" % (dt, T, seed))
    H, F, E, K, N = 32, 48, 5, 2, 8
    rnd = lambda v: EE.round_to(v, dt)

    def vals(n, scale):
        return [rnd(rng.gauss(0.0, scale)) for _ in range(n)]
    x = vals(T * H, 1.0)
    router = vals(E * H, H ** -0.5) + vals(3 * H, 2.0 * H ** -0.5)
    gate, up = vals(E * F * H, H ** -0.5), vals(E * F * H, H ** -0.5)
    down = vals(E * H * F, F ** -0.5)
    cr, cv = vals(2 * H, H ** -0.5), vals(H, 1.0)
    ir = lower(moe_opt, ["--moe-decompose", "--canonicalize", "--convert-moe-experts-to-gpu",
                         "--convert-moe-route-to-gpu", "--convert-moe-linear-to-gpu"],
               moepp_source(dt), ["layer", "linear", "route", "experts", "special_experts",
                                  "combine"], "an op not converted", mutations)
    B = lambda name, shape, data: EE.Buf(name, shape, dt, data=data)
    args = [B("x", [T, H], x), B("router", [N, H], router), B("gate", [E, F, H], gate),
            B("up", [E, F, H], up), B("down", [E, H, F], down), B("cr", [1, 2, H], cr),
            B("cv", [1, H], cv)]
    got, emu = emulate(ir, seed, "moepp", args)

    def dot(a, b):
        return math.fsum(p * q for p, q in zip(a, b))
    ref, keep, kinds = [], [], set()
    for t in range(T):
        xt = x[t * H:(t + 1) * H]
        logit = [dot(xt, router[e * H:(e + 1) * H]) for e in range(N)]
        mx = max(logit)
        p = [math.exp(v - mx) for v in logit]
        p = [v / sum(p) for v in p]
        order = sorted(range(N), key=lambda e: (-p[e], e))
        keep.append(p[order[K - 1]] - p[order[K]] > 1e-4)
        y = [0.0] * H
        for e in order[:K]:
            kinds.add(e)
            if e < E:
                h = []
                for j in range(F):
                    row = (e * F + j) * H
                    a = dot(xt, gate[row:row + H])
                    h.append(a / (1.0 + math.exp(-a)) * dot(xt, up[row:row + H]))
                ye = [dot(down[(e * H + i) * F:(e * H + i + 1) * F], h) for i in range(H)]
            elif e == 5:  # zero
                ye = [0.0] * H
            elif e == 6:  # copy
                ye = list(xt)
            else:  # constant
                l0, l1 = dot(xt, cr[:H]), dot(xt, cr[H:])
                a1 = 1.0 / (1.0 + math.exp(l1 - l0))
                ye = [a1 * xv + (1.0 - a1) * vv for xv, vv in zip(xt, cv)]
            y = [a + p[e] * b for a, b in zip(y, ye)]
        ref.extend(rnd(v) for v in y)
    report, err = kept_verdict(got, ref, keep, H, 1e-2 if dt == "bf16" else 1e-4, emu)
    if report:
        report += "; special experts chosen: %s" % (
            ",".join({5: "zero", 6: "copy", 7: "constant"}[e] for e in sorted(kinds) if e >= E)
            or "none")
    return report, err


def main():
    argv = sys.argv[1:]
    moe_opt = argv[0]
    seed, mutations, only = 1, [], None
    i = 1
    while i < len(argv):
        if argv[i] == "--seed":
            seed = int(argv[i + 1])
            i += 2
        elif argv[i] == "--only":
            # Run the cases whose name contains this (for working on one).
            only = argv[i + 1]
            i += 2
        elif argv[i] == "--mutate":
            mutations.append((argv[i + 1], argv[i + 2]))
            i += 3
        else:
            raise SystemExit("linear-emulate: unknown argument " + argv[i])
    print("linear-emulate: seed %d" % seed)
    # (name, run) per case, in order: the linear kernel, gated shared
    # experts, LoRA experts.
    runs = []
    for c in CASES:
        for T in c[6]:
            runs.append(("x %s w %s bias %s -> %s I=%d O=%d%s T=%d" % (
                c[0], c[1], c[2] or "none", c[3], c[4], c[5],
                " " + c[7] if len(c) > 7 else "", T),
                lambda c=c, T=T: run_case(moe_opt, c, T, seed, mutations)))
    for H, F, ropts, Ts in GATED:
        for T in Ts:
            runs.append(("gated shared expert bf16 H=%d F=%d %s T=%d" % (H, F, ropts, T),
                         lambda H=H, F=F, ropts=ropts, T=T:
                         run_gated(moe_opt, H, F, ropts, T, seed, mutations)))
    for c in LORA:
        for T in c[10]:
            runs.append(("lora x %s A %s B %s In=%d Out=%d E=%d r=%d K=%d offset=%d T=%d" % (
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[9], T),
                lambda c=c, T=T: run_lora(moe_opt, c, T, seed, mutations)))
    for c in LORA_FUSED:
        for T in c[13]:
            runs.append(("lora fused x %s W0 %s A %s B %s bias %s -> %s In=%d Out=%d E=%d "
                         "r=%d K=%d offset=%d%s T=%d" % (
                             c[0], c[1], c[2], c[3], c[4] or "none", c[5], c[6], c[7],
                             c[8], c[9], c[10], c[12],
                             " " + c[14] if len(c) > 14 else "", T),
                         lambda c=c, T=T: run_lora_fused(moe_opt, c, T, seed, mutations)))
    for c in ROUTER:
        for T in c[5]:
            runs.append(("router %s E=%d H=%d K=%d %s T=%d" % (c[0], c[1], c[2], c[3], c[4], T),
                         lambda c=c, T=T: run_router(moe_opt, c, T, seed, mutations)))
    for c in PROJECTED:
        runs.append(("projected router D %s W1 %s W2 %s E=%d m=%d h'=%d H=%d" % c,
                     lambda c=c: run_projected(moe_opt, c, seed, mutations)))
    for c in NORM:
        for T in c[6]:
            runs.append(("norm %s -> h %s weight %s H=%d%s T=%d" % (
                "+".join(c[0]) if c[0] else "alone", c[1], c[2], c[3],
                " h stored" if c[4] else "", T),
                lambda c=c, T=T: run_norm(moe_opt, c, T, seed, mutations)))
    for c in AT_MOE:
        ropts, Ts, lopts = c[0], c[1], c[2] if len(c) > 2 else ""
        for T in Ts:
            runs.append(("at_moe example %s%s T=%d" % (ropts, " " + lopts if lopts else "", T),
                         lambda ropts=ropts, T=T, lopts=lopts:
                         run_at_moe(moe_opt, ropts, T, seed, mutations, lopts)))
    for ropts, Ts in NEXUS:
        for T in Ts:
            runs.append(("nexus example %s T=%d" % (ropts, T),
                         lambda ropts=ropts, T=T: run_nexus(moe_opt, ropts, T, seed, mutations)))
    for ropts, Ts in CARTESIAN:
        for T in Ts:
            runs.append(("cartesian example %s T=%d" % (ropts, T),
                         lambda ropts=ropts, T=T: run_cartesian(moe_opt, ropts, T, seed, mutations)))
    for dt, Ts in MOEPP:
        for T in Ts:
            runs.append(("moe++ layer %s T=%d" % (dt, T),
                         lambda dt=dt, T=T: run_moepp(moe_opt, dt, T, seed, mutations)))
    if only is not None:
        runs = [(n, r) for n, r in runs if only in n]
    passed = failed = 0
    for name, run in runs:
        try:
            info, err = run()
        except EE.EmuError as e:
            info, err = None, "emulation error: %s" % e
        except CaseFail as e:
            info, err = None, str(e)
        if err:
            failed += 1
            print("FAIL %s: %s" % (name, err))
        else:
            passed += 1
            print("ok   %s: %s" % (name, info))
        sys.stdout.flush()
    print("linear-emulate: %d cases passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
