#!/usr/bin/env python3
"""Checks `moe-compile <model-dir> --add-expert FILE` (Nexus add,
MOE_SEMANTICS.md section 5) against the independent reference.

  add_expert.py write MODEL_DIR --layers 0,1 --out add.safetensors
                [--seed S] [--silent] [--bad MODE]
      Writes the add file: per listed layer, one new expert's tensors named
      layers.<i>.<name> (docs/importer.md), seeded random values of the
      generator's scales in the model's dtype; the router row (or domain
      embedding) at twice the scale so that the new expert wins a share of
      the tokens. --silent zeroes the new expert's down projection (and its
      bias): the same routing, no contribution. --bad breaks the file for
      the error tests: shape (gate one column short), dtype (gate as F16 in
      an f32 model / F32 otherwise), extra (a lora_a row the layer has no
      place for), missing (no down), name (a tensor 'layer0.gate').

  add_expert.py test --bin BIN --work DIR --family F [--kind K]
                [--dtype f32] [--layers 2] --add-layers 1 [--seed S]
                [--tokens 64]
      Generates a checkpoint, compiles it, recompiles it with a new expert
      in the --add-layers into the same directory and checks:
        * only the changed layers were recompiled: the second compile
          compiles one kernel per distinct new layer shape and writes only
          the changed layers' weights; model.json's content hashes change
          for exactly those layers;
        * every layer's output equals hf_reference.py's, computed from the
          raw checkpoint tensors with the new expert appended under the
          family's Hugging Face names (rel. L2 <= 1e-4 f32, 1e-2 bf16);
        * the new expert receives exactly the tokens the reference routes
          to it: the tokens whose compiled output changes when the new
          expert is silenced (--silent, compiled the same way) are those
          whose top-k in double precision includes expert E; tokens within
          1e-4 of a tie at the k-th choice are left out, and the new expert
          must get some but not all of the tokens.
      Prints the seed; exits non-zero on any failure.
"""
import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "moe-gen-checkpoint"))
import hf_reference as ref  # noqa: E402
import moe_gen_checkpoint as gen  # noqa: E402

TOL = {"f32": 1e-4, "f16": 2e-3, "bf16": 1e-2}
TIE = 1e-4
FILE_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


class Overlay(ref.Checkpoint):
    """A checkpoint with some tensors replaced or added (HF names)."""

    def __init__(self, model_dir, extra):
        super().__init__(model_dir)
        self.extra = extra  # name -> (shape, values)

    def has(self, name):
        return name in self.extra or super().has(name)

    def shape(self, name):
        return list(self.extra[name][0]) if name in self.extra else super().shape(name)

    def get(self, name):
        if name in self.extra:
            shape, vals = self.extra[name]
            return list(shape), list(vals)
        return super().get(name)


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def describe(cfg, layer):
    """(HF prefix of the MoE block, expert-count key path, E, F, H, K,
    family tag) of a layer."""
    mt, H = cfg["model_type"], cfg["hidden_size"]
    p = "model.layers.%d." % layer
    if mt == "mixtral":
        return (p + "block_sparse_moe.", ["num_local_experts"], cfg["num_local_experts"],
                cfg["intermediate_size"], H, cfg["num_experts_per_tok"], "ffn")
    if mt in ("qwen2_moe", "qwen3_moe", "olmoe"):
        F = cfg["intermediate_size"] if mt == "olmoe" else cfg["moe_intermediate_size"]
        return (p + "mlp.", ["num_experts"], cfg["num_experts"], F, H,
                cfg["num_experts_per_tok"], "ffn")
    if mt in ("deepseek_v2", "deepseek_v3"):
        return (p + "mlp.", ["n_routed_experts"], cfg["n_routed_experts"],
                cfg["moe_intermediate_size"], H, cfg["num_experts_per_tok"],
                "ffn_bias" if mt == "deepseek_v3" else "ffn")
    if mt == "gpt_oss":
        return (p + "mlp.", ["num_local_experts"], cfg["num_local_experts"],
                cfg["intermediate_size"], H, cfg["num_experts_per_tok"], "gpt_oss")
    if mt == "llama4_text":
        return (p + "feed_forward.", ["num_local_experts"], cfg["num_local_experts"],
                cfg["intermediate_size"], H, cfg.get("num_experts_per_tok", 1), "llama4")
    if mt == "jetmoe":
        return (p + "mlp.", ["num_local_experts"], cfg["num_local_experts"],
                cfg["intermediate_size"], H, cfg.get("num_experts_per_tok", 2), "jetmoe")
    ml = cfg["moe_layer"]
    kind = ml["kind"]
    if kind == "projected_router":
        return (p + "mlp.", ["moe_layer", "num_experts"], ml["num_experts"],
                ml["intermediate_size"], H, 1, "projected")
    if kind == "zero_computation":
        return (p + "mlp.", ["moe_layer", "num_experts"], ml["num_experts"],
                ml["intermediate_size"], H, ml["num_experts_per_tok"], "zero")
    if kind == "hierarchical_lora":
        return (p + "mlp.", ["moe_layer", "num_experts"], ml["num_experts"],
                ml["lora_rank"], H, ml.get("num_experts_per_tok", ml["num_experts"]),
                "lora")
    raise SystemExit("add_expert.py: no add for moe_mlir kind %r" % kind)


def new_expert(cfg, layer, seed, silent, dt):
    """The new expert's tensors by add-file name: name -> (shape, values),
    values rounded to the model's dtype (selection_bias stays f32)."""
    pre, _, E, F, H, K, tag = describe(cfg, layer)
    rng = random.Random("add/%d/%d" % (seed, layer))

    def normal(n, std):
        return ref.round_to(dt, [std * rng.gauss(0.0, 1.0) for _ in range(n)])

    t = {}
    if tag == "projected":
        m = cfg["moe_layer"]["domain_dim"]
        t["domain_embedding"] = ([m], normal(m, 2.0))
    elif tag != "lora":
        t["router"] = ([H], normal(H, 2 * 1.5 / math.sqrt(H)))
    if tag == "lora":
        t["router"] = ([H], normal(H, 2 * 1.5 / math.sqrt(H)))
        t["lora_a"] = ([F, H], normal(F * H, 1 / math.sqrt(H)))
        t["lora_b"] = ([H, F], normal(H * F, 1 / math.sqrt(F)))
        return t
    t["gate"] = ([F, H], normal(F * H, 1 / math.sqrt(H)))
    t["up"] = ([F, H], normal(F * H, 1 / math.sqrt(H)))
    # Drawn even when silenced, so that the later draws stay the same.
    t["down"] = ([H, F], normal(H * F, 1 / math.sqrt(F)))
    if tag == "ffn_bias":
        t["selection_bias"] = ([1], ref.round_to("f32", [0.1 * rng.gauss(0.0, 1.0)]))
    if tag == "gpt_oss":
        t["router_bias"] = ([1], normal(1, 0.3))
        t["gate_bias"] = ([F], normal(F, 0.3))
        t["up_bias"] = ([F], normal(F, 0.3))
        t["down_bias"] = ([H], normal(H, 0.1))
    if silent:
        for name in ("down", "down_bias"):
            if name in t:
                t[name] = (t[name][0], [0.0] * len(t[name][1]))
    return t


def file_dtype(name, dt):
    return "F32" if name == "selection_bias" else FILE_DTYPE[dt]


def overlay_for(ck, cfg, layer, t):
    """HF-named tensors of the layer with the new expert appended, and the
    config with one more expert."""
    pre, key, E, F, H, K, tag = describe(cfg, layer)
    extra = {}

    def append_rows(name, rows, at=None):
        shape, vals = ck.get(name)
        n = len(vals) // shape[0]
        at = shape[0] if at is None else at
        extra[name] = ([shape[0] + 1] + shape[1:], vals[:at * n] + rows + vals[at * n:])

    if tag == "projected":
        append_rows(pre + "router.domain_embeddings", t["domain_embedding"][1])
    elif tag == "zero":
        append_rows(pre + "gate.weight", t["router"][1], at=E)
    elif tag == "gpt_oss":
        append_rows(pre + "router.weight", t["router"][1])
        append_rows(pre + "router.bias", t["router_bias"][1])
    elif tag in ("lora", "llama4"):
        append_rows(pre + "router.weight", t["router"][1])
    elif tag == "jetmoe":
        append_rows(pre + "router.layer.weight", t["router"][1])
    else:
        append_rows(pre + "gate.weight", t["router"][1])
    if tag == "ffn_bias":
        append_rows(pre + "gate.e_score_correction_bias", t["selection_bias"][1])
    if tag == "gpt_oss":
        g, u, d = t["gate"][1], t["up"][1], t["down"][1]
        gu = []   # [H, 2F]: gate even columns, up odd
        for h in range(H):
            for f in range(F):
                gu += [g[f * H + h], u[f * H + h]]
        append_rows(pre + "experts.gate_up_proj", gu)
        gub = []
        for f in range(F):
            gub += [t["gate_bias"][1][f], t["up_bias"][1][f]]
        append_rows(pre + "experts.gate_up_proj_bias", gub)
        append_rows(pre + "experts.down_proj", [d[h * F + f] for f in range(F) for h in range(H)])
        append_rows(pre + "experts.down_proj_bias", t["down_bias"][1])
    elif tag == "llama4":
        g, u, d = t["gate"][1], t["up"][1], t["down"][1]
        # [H, 2F]: gate the first F columns, up the last F; down [F, H].
        append_rows(pre + "experts.gate_up_proj",
                    [v for h in range(H) for v in
                     [g[f * H + h] for f in range(F)] + [u[f * H + h] for f in range(F)]])
        append_rows(pre + "experts.down_proj", [d[h * F + f] for f in range(F) for h in range(H)])
    elif tag == "jetmoe":
        # input_linear [E, 2F, H] (gate rows, then up), output_linear
        # [E, H, F]; the bias after the mixture is not per expert.
        append_rows(pre + "input_linear.weight", t["gate"][1] + t["up"][1])
        append_rows(pre + "output_linear.weight", t["down"][1])
    elif tag == "lora":
        extra[pre + "experts.%d.lora_A.weight" % E] = t["lora_a"]
        extra[pre + "experts.%d.lora_B.weight" % E] = t["lora_b"]
    else:
        names = ("w1", "w3", "w2") if cfg["model_type"] == "mixtral" else (
            "gate_proj", "up_proj", "down_proj")
        for role, n in zip(("gate", "up", "down"), names):
            extra[pre + "experts.%d.%s.weight" % (E, n)] = t[role]
    big = json.loads(json.dumps(cfg))
    node = big
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] += 1
    return extra, big


def write_add(path, experts, dt, bad=None):
    tensors = []
    for layer, t in sorted(experts.items()):
        for name, (shape, vals) in t.items():
            dtype = file_dtype(name, dt)
            if bad == "shape" and name == "gate":
                shape, vals = [shape[0], shape[1] - 1], vals[:shape[0] * (shape[1] - 1)]
            if bad == "dtype" and name == "gate":
                dtype = "F16" if dt == "f32" else "F32"
            if bad == "missing" and name == "down":
                continue
            full = "layers.%d.%s" % (layer, name)
            if bad == "name" and name == "gate":
                full = "layer%d.gate" % layer
            tensors.append(gen.Tensor(full, shape, dtype, vals))
        if bad == "extra":
            H = t["gate"][0][1]
            tensors.append(gen.Tensor("layers.%d.lora_a" % layer, [4, H], FILE_DTYPE[dt],
                                      [0.0] * (4 * H)))
    gen.write_file(path, tensors)


def cmd_write(a):
    cfg = load_config(a.model_dir)
    dt = ref.model_dtype(cfg)
    layers = [int(x) for x in a.layers.split(",")]
    experts = {}
    for i in layers:
        # A layer the model does not have, or a dense one: shape it like layer 0.
        experts[i] = new_expert(cfg, i, a.seed, a.silent, dt)
    write_add(a.out, experts, dt, a.bad)
    print("wrote %s: layers %s" % (a.out, layers))


# ---------------------------------------------------------------- test --


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    if p.returncode != 0:
        print("FAIL: %s\n%s" % (" ".join(cmd), p.stdout))
        sys.exit(1)
    return p.stdout


def router_scores(ck, cfg, layer, x):
    """Per token, the scores whose top-k selects the experts (monotone in the
    routing probabilities) and k: raw logits (+ bias), in double."""
    pre, _, E, F, H, K, tag = describe(cfg, layer)
    if tag in ("ffn_bias", "lora"):
        raise SystemExit("add_expert.py: no routing check for %s layers" % tag)
    if tag == "projected":
        m, hp = cfg["moe_layer"]["domain_dim"], cfg["moe_layer"]["proj_hidden"]
        w1 = ck.matrix(pre + "router.proj.w1.weight")
        w2 = ck.matrix(pre + "router.proj.w2.weight")
        silu = ref.act_fn("silu")
        rows = []
        for d in ck.matrix(pre + "router.domain_embeddings"):
            z = ref.matvec(w1, d)
            rows.append(ref.matvec(w2, [silu(z[j]) * z[hp + j] for j in range(hp)]))
        return [ref.matvec(rows, xt) for xt in x], 1
    # (Llama 4: top-k of the raw logits; the sigmoid only weighs.)
    name = pre + ("router.weight" if tag in ("gpt_oss", "lora", "llama4") else
                  "router.layer.weight" if tag == "jetmoe" else "gate.weight")
    bias = ck.vector(pre + "router.bias") if tag == "gpt_oss" else None
    rows = ck.matrix(name)
    return [ref.matvec(rows, xt, bias) for xt in x], K


def routed_to(scores, k, expert):
    picked, uncertain = [], []
    for t, s in enumerate(scores):
        order = sorted(range(len(s)), key=lambda i: (-s[i], i))
        if len(s) > k and s[order[k - 1]] - s[order[k]] < TIE:
            uncertain.append(t)
        elif expert in order[:k]:
            picked.append(t)
    return picked, uncertain


def compiled(bindir, out, layer, xin, ydir):
    run([os.path.join(bindir, "moe-run"), out, "--layer", str(layer), "--tokens",
         str(len(xin[1]) // xin[2]), "--input", "input=" + xin[0], "--output-dir", ydir,
         "--seed", "1"])
    _, y = ref.read_npy(os.path.join(ydir, "layer_%d.npy" % layer))
    return list(y)


def summary(text):
    for line in text.splitlines():
        if line.startswith("moe-compile:"):
            return line
    return text.strip()


def cmd_test(a):
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    print("seed = %d" % seed)
    rng = random.Random(seed)
    os.makedirs(a.work, exist_ok=True)
    ckpt, out, silent = (os.path.join(a.work, n) for n in ("ckpt", "out", "silent"))
    for d in (ckpt, out, silent):
        shutil.rmtree(d, ignore_errors=True)
    gen.generate(a.family, ckpt, a.dtype, a.layers, rng.randrange(1 << 30),
                 kind=a.kind)
    cfg = load_config(ckpt)
    dt = ref.model_dtype(cfg)
    compile_ = os.path.join(a.bin, "moe-compile")
    run([compile_, ckpt, "-o", out])
    with open(os.path.join(out, "model.json")) as f:
        before = {l["index"]: l for l in json.load(f)["layers"]}
    add_layers = [int(x) for x in a.add_layers.split(",")]
    ck = ref.Checkpoint(ckpt)
    H = cfg["hidden_size"]
    T = a.tokens
    xs = {i: [[rng.gauss(0.0, 1.0) for _ in range(H)] for _ in range(T)]
          for i in sorted(before)}
    # The new experts, drawn again (at most 20 times) until the reference
    # routes some but not all of the T tokens to each: with top-1 routing a
    # draw can leave it without a token (a CI run of session 24 drew one),
    # and "receives exactly its tokens" would then check nothing.
    for _ in range(20):
        add_seed = rng.randrange(1 << 30)
        experts = {i: new_expert(cfg, i, add_seed, False, dt) for i in add_layers}
        counts = []
        for i in add_layers:
            extra, big = overlay_for(ck, cfg, i, experts[i])
            xr = [ref.round_to(dt, r) for r in xs[i]]
            scores, k = router_scores(Overlay(ckpt, extra), big, i, xr)
            counts.append(len(routed_to(scores, k, describe(cfg, i)[2])[0]))
        if all(0 < n < T for n in counts):
            break
    quiet = {i: new_expert(cfg, i, add_seed, True, dt) for i in add_layers}
    write_add(os.path.join(a.work, "add.safetensors"), experts, dt)
    write_add(os.path.join(a.work, "silent.safetensors"), quiet, dt)
    shutil.copytree(out, silent)
    line = summary(run([compile_, ckpt, "--add-expert",
                        os.path.join(a.work, "add.safetensors"), "-o", out]))
    print("add: " + line.split(": ", 2)[-1])
    run([compile_, ckpt, "--add-expert", os.path.join(a.work, "silent.safetensors"),
         "-o", silent])
    failures = 0
    with open(os.path.join(out, "model.json")) as f:
        after = {l["index"]: l for l in json.load(f)["layers"]}
    changed = sorted(i for i in after if after[i]["content_hash"] != before[i]["content_hash"])
    ok = changed == sorted(add_layers) and sorted(after) == sorted(before)
    failures += not ok
    print("%s content hashes changed for layers %s (added to %s)" % (
        "ok  " if ok else "FAIL", changed, sorted(add_layers)))
    # One kernel per distinct new layer shape: the changed layers share one
    # here (same family and config), the other layers reuse theirs.
    want = "kernels: 1 compiled, %d reused; weights: %d written, %d reused" % (
        len(set(before[i]["kernel"] for i in before if i not in add_layers)),
        len(add_layers), len(before) - len(add_layers))
    ok = want in line
    failures += not ok
    print("%s only the changed layers recompiled (%s)" % ("ok  " if ok else "FAIL", want))

    for i in sorted(after):
        x = xs[i]
        xr = [ref.round_to(dt, r) for r in x]
        xin = os.path.join(a.work, "x%d.npy" % i)
        ref.write_npy(xin, (T, H), [v for r in x for v in r])
        y = compiled(a.bin, out, i, (xin, [v for r in x for v in r], H),
                     os.path.join(a.work, "y%d" % i))
        if i in add_layers:
            extra, big = overlay_for(ck, cfg, i, experts[i])
            ov = Overlay(ckpt, extra)
            kind = "moe"
            r = ref.FORWARD[cfg["model_type"]](ov, big, "model.layers.%d." % i, xr, H)
        else:
            kind, r = ref.layer_forward(ckpt, i, x)
        r = [v for row in r for v in row]
        d2 = sum((p - q) ** 2 for p, q in zip(y, r))
        r2 = sum(q * q for q in r)
        rel = math.sqrt(d2 / r2) if r2 else math.sqrt(d2)
        ok = rel <= TOL[dt] and not any(v != v for v in y)
        failures += not ok
        line = "%s layer %d (%s%s): rel err %.3g vs hf_reference (tol %g %s)" % (
            "ok  " if ok else "FAIL", i, kind, ", +1 expert" if i in add_layers else "",
            rel, TOL[dt], dt)
        if i in add_layers:
            E = describe(cfg, i)[2]
            yq = compiled(a.bin, silent, i, (xin, [v for r in x for v in r], H),
                          os.path.join(a.work, "q%d" % i))
            moved = [t for t in range(T) if y[t * H:(t + 1) * H] != yq[t * H:(t + 1) * H]]
            scores, k = router_scores(ov, big, i, xr)
            expected, uncertain = routed_to(scores, k, E)
            receives = [t for t in moved if t not in uncertain]
            ok = receives == expected and 0 < len(expected) < T
            failures += not ok
            line += "; new expert %d receives %d/%d tokens%s (%d near ties left out)" % (
                E, len(receives), T - len(uncertain),
                ", as routed" if ok else " %s, routing sends it %s" % (receives, expected),
                len(uncertain))
            if not ok:
                line = "FAIL" + line[4:]
        print(line)
    print("add_expert: %d failures" % failures)
    sys.exit(1 if failures else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("model_dir")
    w.add_argument("--layers", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--silent", action="store_true")
    w.add_argument("--bad", choices=["shape", "dtype", "extra", "missing", "name"])
    t = sub.add_parser("test")
    t.add_argument("--bin", required=True)
    t.add_argument("--work", required=True)
    t.add_argument("--family", required=True)
    t.add_argument("--kind")
    t.add_argument("--dtype", default="f32")
    t.add_argument("--layers", type=int, default=2)
    t.add_argument("--add-layers", required=True)
    t.add_argument("--seed", type=int)
    t.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args()
    (cmd_write if a.cmd == "write" else cmd_test)(a)


if __name__ == "__main__":
    main()
