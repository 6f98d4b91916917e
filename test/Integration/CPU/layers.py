#!/usr/bin/env python3
"""Writes moe.layer test modules for the CPU integration tests.

Each configuration becomes one .mlir file with a single public function whose
body is one moe.layer on its arguments, so that moe-compile records the
argument roles and the layer configuration in the manifest and
`moe-run --check` can compare with the C++ reference.

    layers.py --list                      names of all configurations
    layers.py --write NAME --out FILE     write one configuration
"""

import argparse
import sys

H, F, E, K = 32, 48, 8, 2
DTYPES = {"f32": "f32", "bf16": "bf16"}

ROUTINGS = {
    "topk_softmax": ("#moe.routing<softmax, topk, k = 2, renormalize>", {}),
    "topk_softmax_raw": ("#moe.routing<softmax, topk, k = 2>", {}),
    "topk_sigmoid_bias": (
        "#moe.routing<sigmoid, topk, k = 2, renormalize, scaling_factor = 2.5>",
        {"selection_bias": True}),
    "group_max": ("#moe.routing<softmax, group_limited_topk, k = 2, n_group = 4, "
                  "topk_group = 2, scaling_factor = 1.5>", {}),
    "group_top2_sum": ("#moe.routing<sigmoid, group_limited_topk, k = 3, n_group = 4, "
                       "topk_group = 2, group_score = top2_sum, renormalize>",
                       {"selection_bias": True}),
    "top_p": ("#moe.routing<softmax, top_p, k = 4, top_p = 0.5>", {}),
    "topk_then_softmax": ("#moe.routing<none, topk_then_softmax, k = 2>",
                          {"router_bias": True}),
    "dense": ("#moe.routing<softmax, dense, k = 8>", {}),
    "hierarchical": ("#moe.routing<softmax, hierarchical, k = 3, n_group = 2, "
                     "tau_group = 0.5, tau_expert = 2.0>", {"group_router": True}),
    # PhiMoE's routing; a wider threshold than its 0.01 so that random
    # logits leave several experts unmasked per round.
    "sparsemixer": ("#moe.routing<none, sparsemixer, k = 2, jitter_eps = 0.1>",
                    {}),
    "hierarchical_dense": ("#moe.routing<softmax, hierarchical, k = 8, n_group = 2, "
                           "topk_group = 1>", {"group_router": True}),
}
ACTIVATIONS = ["swiglu", "geglu", "gelu", "gelu_tanh", "relu", "relu2",
               "swiglu_clamped"]
GATED = {"swiglu", "geglu", "swiglu_clamped"}


def t(shape, dt):
    return "tensor<" + "x".join(str(d) for d in shape) + "x" + dt + ">"


def layer(name, dt, routing, extra, act="swiglu", shared=None, lora=False,
          special=None, projected=False, capacity=None, biases=False,
          num_routed=E, expert_map=None, scale_input=False,
          expert_capacity=None, output_bias=False):
    args, groups, attrs = [("input", ["?", H])], [], []
    # After a merge the router keeps one row per original expert.
    router_rows = len(expert_map) if expert_map else num_routed
    e_total = router_rows + (len(special) if special else 0)

    def add(role, shape, keyword=None):
        args.append((role, shape))
        groups.append((keyword or role, role, shape))

    if projected:
        add("domain_embeddings", [e_total, 8])
        add("proj_w1", [12, 8])
        add("proj_w2", [H, 6])
    else:
        add("router", [e_total, H])
        if extra.get("router_bias"):
            add("router_bias", [e_total])
    if extra.get("selection_bias"):
        add("selection_bias", [e_total])
    if extra.get("group_router"):
        add("group_router", [2, H])
    if lora:
        add("lora_base", [H, H])
        add("lora_a", [num_routed, 4, H])
        add("lora_b", [num_routed, H, 4])
        attrs.append("lora_alpha = 8.0 : f64")
    elif num_routed:
        if act in GATED:
            add("gate", [num_routed, F, H])
        add("up", [num_routed, F, H])
        add("down", [num_routed, H, F])
        if biases:
            if act in GATED:
                add("gate_bias", [num_routed, F])
            add("up_bias", [num_routed, F])
            add("down_bias", [num_routed, H])
    if special:
        nc = special.count("constant")
        if nc:
            add("const_router", [nc, 2, H])
            add("const_vectors", [nc, H])
        attrs.append("special_kinds = [" + ", ".join(
            "#moe.special<%s>" % k for k in special) + "]")
    if shared:
        sact, gatew = shared
        if sact in GATED:
            add("shared_gate", [F, H])
        add("shared_up", [F, H])
        add("shared_down", [H, F])
        if gatew:
            add("shared_gate_weight", [1, H])
        attrs.append("shared_activation = #moe.activation<%s>" % sact)
    if output_bias:
        add("output_bias", [H])
    if expert_map:
        attrs.append("expert_map = array<i32: %s>" % ", ".join(map(str, expert_map)))
    if scale_input:
        attrs.append("scale_input")
    attrs.append("routing = " + routing)
    attrs.append("activation = #moe.activation<%s>" % act)
    if act == "swiglu_clamped":
        attrs.append("alpha = 1.5 : f64")
        attrs.append("limit = 1.0 : f64")
    results = [t(["?", H], dt)]
    if capacity or expert_capacity is not None:
        attrs.append("dispatch = #moe.dispatch<capacity>")
        if capacity:
            attrs.append("capacity_factor = %s : f64" % capacity)
        else:
            attrs.append("expert_capacity = %d" % expert_capacity)
        results.append("tensor<i64>")

    def ty(role, shape):
        # Routers and biases of the router stay f32 (as checkpoints often
        # keep them); everything else is in the layer's dtype.
        return t(shape, "f32" if role in ("selection_bias",) else dt)

    sig = ", ".join("%%%s: %s" % (r, ty(r, s)) for r, s in args)
    ops = " ".join("%s(%%%s : %s)" % (k, r, ty(r, s)) for k, r, s in groups)
    res = ", ".join(results)
    names = "%y" + (", %n" if len(results) > 1 else "")
    ret_vals = names
    return ("func.func @%s(%s) -> (%s) {\n"
            "  %s = moe.layer %%input : %s %s\n"
            "      {%s} -> %s\n"
            "  return %s : %s\n"
            "}\n") % (name, sig, res, names, t(["?", H], dt), ops,
                      ", ".join(attrs), res, ret_vals, res)


def configs():
    out = {}
    for dt in DTYPES:
        # Every routing kind x every expert kind.
        for rname, (routing, extra) in ROUTINGS.items():
            for act in ACTIVATIONS:
                n = "%s_%s_%s" % (rname, act, dt)
                out[n] = lambda n=n, dt=dt, routing=routing, extra=extra, act=act: layer(
                    n, dt, routing, extra, act=act,
                    biases=(act == "swiglu_clamped"))
        base = ROUTINGS["topk_softmax"]
        out["shared_%s" % dt] = lambda dt=dt: layer(
            "shared_%s" % dt, dt, base[0], {}, shared=("swiglu", False))
        out["shared_gated_%s" % dt] = lambda dt=dt: layer(
            "shared_gated_%s" % dt, dt, base[0], {}, shared=("relu", True))
        out["lora_%s" % dt] = lambda dt=dt: layer(
            "lora_%s" % dt, dt, ROUTINGS["hierarchical"][0], {"group_router": True},
            lora=True)
        out["special_%s" % dt] = lambda dt=dt: layer(
            "special_%s" % dt, dt, "#moe.routing<softmax, topk, k = 2>", {},
            special=["zero", "copy", "constant"], num_routed=5)
        out["projected_%s" % dt] = lambda dt=dt: layer(
            "projected_%s" % dt, dt, "#moe.routing<softmax, topk, k = 1>", {},
            projected=True, shared=("swiglu", False))
        out["capacity_%s" % dt] = lambda dt=dt: layer(
            "capacity_%s" % dt, dt, "#moe.routing<softmax, topk, k = 2>", {},
            act="gelu", capacity="0.75")
        # Switch Transformers: softmax top-1 (max probability as the
        # weight), relu experts, a fixed capacity of 5 per expert (drops at
        # T = 64 and 333).
        out["switch_%s" % dt] = lambda dt=dt: layer(
            "switch_%s" % dt, dt, "#moe.routing<softmax, topk, k = 1>", {},
            act="relu", expert_capacity=5)
        # JetMoE: softmax over the top-k logits, one bias after the
        # mixture; then with a shared expert and capacity (dropped pairs
        # still get the bias).
        out["output_bias_%s" % dt] = lambda dt=dt: layer(
            "output_bias_%s" % dt, dt, "#moe.routing<none, topk_then_softmax, k = 2>",
            {}, output_bias=True)
        out["output_bias_shared_%s" % dt] = lambda dt=dt: layer(
            "output_bias_shared_%s" % dt, dt, "#moe.routing<softmax, topk, k = 2>",
            {}, act="gelu", shared=("swiglu", True), capacity="0.75",
            output_bias=True)
        out["biases_%s" % dt] = lambda dt=dt: layer(
            "biases_%s" % dt, dt, base[0], {}, act="geglu", biases=True)
        # Llama 4: sigmoid top-1 weights scaling the experts' input, a
        # shared expert; then K = 2 with biases (scaled before them) and
        # capacity dispatch (dropped pairs scale nothing).
        out["scale_input_%s" % dt] = lambda dt=dt: layer(
            "scale_input_%s" % dt, dt, "#moe.routing<sigmoid, topk, k = 1>", {},
            shared=("swiglu", False), scale_input=True)
        out["scale_input_k2_%s" % dt] = lambda dt=dt: layer(
            "scale_input_k2_%s" % dt, dt, "#moe.routing<softmax, topk, k = 2>",
            {}, act="geglu", biases=True, capacity="0.75", scale_input=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--list", action="store_true")
    p.add_argument("--write")
    p.add_argument("--out")
    a = p.parse_args()
    cfg = configs()
    if a.list:
        print("\n".join(sorted(cfg)))
        return 0
    if a.write not in cfg:
        print("unknown configuration '%s'" % a.write, file=sys.stderr)
        return 1
    with open(a.out, "w") as f:
        f.write(cfg[a.write]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
