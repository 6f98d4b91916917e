#!/usr/bin/env python3
"""Expert surgery on the bundled examples (examples/*.mlir) through moe-opt,
moe-compile and moe-run, with seeded random weights (seed printed).

For every example: the original layer runs with the weights and is checked
against the C++ reference. Then:

* merge (`--moe-merge-experts=groups=0+1`, uniform): the merged layer, run
  with the original weights, must equal (relative L2 <= 1e-6) the original
  layer run with experts 0 and 1 both replaced by their mean — the same
  function, since the router keeps its rows and both point at the merged
  expert (MOE_SEMANTICS.md §5);
* fold (`--moe-fold-projected-router`, examples with a projected router):
  must equal the original layer;
* drop (`--moe-drop-experts`) and add (`--moe-add-expert`, the new expert's
  weights drawn at random): must compile, run, give finite outputs, and
  change the output (the numerical equalities for drop and add are in
  surgery.py, on generated layers).

LoRA experts are not merged, and adding to a layer whose n_group would no
longer divide E + 1 is refused: those errors are checked too. On the
Cartesian example the passes apply to both sub-layers (smoke: runs, finite,
changed).

    surgery_examples.py --bin DIR --examples DIR --work DIR [--tokens T] [--seed S]
"""

import argparse
import os
import random
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import surgery as S  # noqa: E402

FFN_ROLES = {"gate", "up", "down", "gate_bias", "up_bias", "down_bias"}
# example -> (moe.layer operand keyword of each argument, drop ids)
DROP = {"mixtral": "2,5", "deepseek_v3": "0,1,2,3,4,5,6,7", "nexus": "3", "at_moe": "1,5",
        "qwen2_moe": "3,9"}


def signature(text):
    body = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
    body = re.sub(r"//[^\n]*", "", body)
    sig = body.split("(", 1)[1].split(") ->", 1)[0]
    out = []
    for role, ty in re.findall(r"%(\w+): tensor<([^>]+)>", sig):
        *dims, dt = ty.split("x")
        out.append((role, [-1 if d == "?" else int(d) for d in dims], dt))
    return out


def operand_roles(text, sig):
    """Argument name -> the name moe-compile's manifest gives it: its
    moe.layer operand keyword (gate(%w1 : ...) -> w1: gate), "input" for the
    layer's input."""
    roles = {arg: kw for kw, arg in re.findall(r"(\w+)\(%(\w+) :", text)}
    roles[sig[0][0]] = "input"
    return roles


def by_role(sig, tokens, vals, roles):
    """(manifest name, tensor) pairs for a compile of the unmodified example."""
    return [(roles.get(n, n), t) for n, t in S.weights_for(sig, tokens, vals)]


def mean_rows(t, a, b):
    """Rows a and b of t replaced by their mean as the merge pass computes it
    for arguments: 0.5 * each in f32, summed in f32, rounded once."""
    n = t.row_size()
    vals = list(t.values)
    for j in range(n):
        x = S.f32(S.f32(0.5) * t.values[a * n + j])
        y = S.f32(S.f32(0.5) * t.values[b * n + j])
        m = S.f32(x + y)
        m = S.rne_bf16(m) if t.dtype == "bf16" else m
        vals[a * n + j] = vals[b * n + j] = m
    return S.Tensor(t.shape, vals, t.dtype)


def seeded_run(tools, art, seed, out, check=False):
    """moe-run on its own seeded random inputs (drawn in argument order, so
    a modified layer with the same leading arguments sees the same values)."""
    cmd = ["moe-run", art, "--tokens", str(tools.tokens), "--seed", str(seed),
           "--output-dir", out] + (["--check"] if check else [])
    text = tools.run(*cmd)
    if check and "check: ok" not in text:
        raise S.CaseError("reference check failed: " + text)
    return [S.read_npy(os.path.join(out, "output0.npy"))]


def finite_and_changed(got, base):
    if any(v != v or v in (float("inf"), float("-inf")) for v in got[0]):
        raise S.CaseError("non-finite output")
    if S.rel_l2(got[0], base[0]) == 0.0:
        raise S.CaseError("the surgery did not change the output")


def run_example(tools, ex, path, seed):
    d = os.path.join(tools.work, ex)
    os.makedirs(d, exist_ok=True)
    text = open(path).read()
    sig = signature(text)
    roles = operand_roles(text, sig)
    rng = random.Random("%d/%s" % (seed, ex))
    vals = {name: S.random_tensor(rng, "input" if name == sig[0][0] else name,
                                  [tools.tokens if s < 0 else s for s in shape], dt)
            for name, shape, dt in sig}
    results = []
    cartesian = "moe.cartesian" in text
    tools.compile(path, os.path.join(d, "orig"))
    if cartesian:
        # Its arguments are "first.<role>"/"second.<role>": run on moe-run's
        # own random inputs, checked against the reference; the passes must
        # refuse it (below).
        base = seeded_run(tools, os.path.join(d, "orig"), seed, os.path.join(d, "out_orig"),
                          check=True)
    else:
        named = os.path.join(d, "orig.safetensors")
        S.write_safetensors(named, by_role(sig, tools.tokens, vals, roles))
        base = tools.execute(os.path.join(d, "orig"), named, os.path.join(d, "out_orig"),
                             check=True)
    lora = "lora_a(" in text

    def attempt(kind, option, fn):
        try:
            out = os.path.join(d, kind + ".mlir")
            tools.run("moe-opt", path, option, "-o", out)
            results.append("ok   %s %s: %s" % (kind, ex, fn(out)))
        except S.CaseError as exc:
            results.append("FAIL %s %s: %s" % (kind, ex, exc))

    def refused(kind, option, why):
        try:
            tools.run("moe-opt", path, option, "-o", os.path.join(d, "x.mlir"))
            results.append("FAIL %s %s: accepted, expected an error" % (kind, ex))
        except S.CaseError as exc:
            if why not in str(exc):
                results.append("FAIL %s %s: unexpected error %s" % (kind, ex, exc))
            else:
                results.append("ok   %s %s: refused (%s)" % (kind, ex, why))

    def compile_run(mlir, weights, name):
        tools.compile(mlir, os.path.join(d, name))
        return tools.execute(os.path.join(d, name), weights, os.path.join(d, "out_" + name))

    # merge
    def merge(out):
        pos = os.path.join(d, "pos.safetensors")
        S.write_safetensors(pos, S.weights_for(sig, tools.tokens, vals, "positional"))
        got = compile_run(out, pos, "merged")
        mv = {n: (mean_rows(t, 0, 1) if roles.get(n) in FFN_ROLES else t)
              for n, t in vals.items()}
        ref_w = os.path.join(d, "meaned.safetensors")
        S.write_safetensors(ref_w, by_role(sig, tools.tokens, mv, roles))
        ref = tools.execute(os.path.join(d, "orig"), ref_w, os.path.join(d, "out_meaned"),
                            check=True)
        err = S.compare(got, ref, "merged vs original with experts 0, 1 averaged")
        return ("equals the original layer with experts 0 and 1 replaced by their mean "
                "(rel diff %.3g; that layer checked against the reference)" % err)
    if cartesian:
        pass  # below
    elif lora:
        refused("merge", "--moe-merge-experts=groups=0+1", "cannot merge LoRA experts")
    else:
        attempt("merge", "--moe-merge-experts=groups=0+1", merge)

    # fold
    if "domain_embeddings(" in text:
        def fold(out):
            pos = os.path.join(d, "pos.safetensors")
            S.write_safetensors(pos, S.weights_for(sig, tools.tokens, vals, "positional"))
            got = compile_run(out, pos, "folded")
            err = S.compare(got, base, "folded vs original")
            return "equals the original layer (rel diff %.3g)" % err
        attempt("fold", "--moe-fold-projected-router", fold)

    # drop and add: compile, run, finite, changed
    if not cartesian:
        def drop(out):
            pos = os.path.join(d, "pos.safetensors")
            S.write_safetensors(pos, S.weights_for(sig, tools.tokens, vals, "positional"))
            got = compile_run(out, pos, "dropped")
            finite_and_changed(got, base)
            return "experts %s dropped; runs, finite, output changed" % DROP[ex]
        attempt("drop", "--moe-drop-experts=experts=" + DROP[ex], drop)

        def add(out):
            added_sig = signature(open(out).read())
            extra = {}
            for i, (name, shape, dt) in enumerate(added_sig[len(sig):]):
                t = S.random_tensor(rng, name, shape, dt)
                if i == 0:  # its routing row at twice the scale: it wins tokens
                    t = S.Tensor(t.shape, [2.0 * v for v in t.values], t.dtype)
                extra["arg%d" % (len(sig) + i)] = t
            pos = S.weights_for(sig, tools.tokens, vals, "positional")
            pos += sorted(extra.items(), key=lambda kv: int(kv[0][3:]))
            w = os.path.join(d, "added.safetensors")
            S.write_safetensors(w, pos)
            got = compile_run(out, w, "added")
            finite_and_changed(got, base)
            return "one expert added (%d new arguments); runs, finite, output changed" % len(extra)
        if "n_group" in text:  # E + 1 experts no longer split into the groups
            refused("add", "--moe-add-expert", "must divide the number of experts after the add")
        else:
            attempt("add", "--moe-add-expert", add)
    else:
        # The passes apply to every moe.layer, here both sub-layers.
        for kind, option in (("merge", "--moe-merge-experts=groups=0+1"),
                             ("drop", "--moe-drop-experts=experts=1"),
                             ("add", "--moe-add-expert")):
            def smoke(out, kind=kind):
                tools.compile(out, os.path.join(d, kind))
                got = seeded_run(tools, os.path.join(d, kind), seed,
                                 os.path.join(d, "out_" + kind))
                finite_and_changed(got, base)
                return "both sub-layers; runs, finite, output changed"
            attempt(kind, option, smoke)
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--examples", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--tokens", type=int, default=41)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    print("seed %d, T = %d" % (a.seed, a.tokens))
    tools = S.Tools(a.bin, a.work, a.tokens)
    lines = []
    for f in sorted(os.listdir(a.examples)):
        if f.endswith(".mlir"):
            try:
                lines += run_example(tools, f[:-5], os.path.join(a.examples, f), a.seed)
            except S.CaseError as exc:
                lines.append("FAIL %s: %s" % (f, exc))
    for l in lines:
        print(l)
    failed = sum(l.startswith("FAIL") for l in lines)
    print("%d passed, %d failed" % (len(lines) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
