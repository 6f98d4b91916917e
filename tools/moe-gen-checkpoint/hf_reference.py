#!/usr/bin/env python3
"""Independent pure-Python (f64) forward of one decoder layer's MLP block of
a Hugging Face-style MoE checkpoint, read from the RAW checkpoint tensors
(HF names and HF layouts, not the importer's converted layout).

    hf_reference.py MODEL_DIR --layer N --input x.npy --output y.npy

x.npy is [T, H] (or [H]) f32/f64/f16; y.npy is written [T, H] f32. Inputs
are first rounded to the model dtype (`torch_dtype` / `dtype` in
config.json); weights are used exactly as stored; everything after that is
computed in double precision.

What is computed, per model_type (the code it follows is that of
transformers 5.x, see shared/hf-tensor-names.md):
  mixtral      softmax over all experts, top-k, always renormalised;
               experts w1 (gate), w3 (up), w2 (down).
  qwen2_moe    softmax top-k, renormalised iff norm_topk_prob; plus
               sigmoid(shared_expert_gate x) * shared_expert(x).
  qwen3_moe,   softmax top-k, renormalised iff norm_topk_prob.
  olmoe
  deepseek_v2  softmax; topk_method greedy, or group_limited_greedy (group
               score = max, keep topk_group groups, others set to 0); weights
               x routed_scaling_factor, never renormalised (transformers'
               DeepseekV2TopkRouter ignores norm_topk_prob); + shared_experts.
  deepseek_v3  sigmoid; selection on sigmoid + e_score_correction_bias;
               group score = sum of the top-2 of each group, keep topk_group
               groups (others -inf); weights are the unbiased sigmoid,
               renormalised (+1e-20) iff norm_topk_prob, x routed_scaling_factor;
               + shared_experts.
  gpt_oss      logits = x Wr^T + br, top-k of the logits, softmax over the k;
               gate_up = x @ gate_up_proj[e] + b ([E, H, 2F], gate = even
               columns, up = odd), gate clamped above at swiglu_limit, up to
               +-swiglu_limit, (up + 1) * gate * sigmoid(swiglu_alpha gate),
               @ down_proj[e] ([E, F, H]) + b.
  llama4_text  logits = x Wr^T, top-k of the logits, each picked expert
               e fed sigmoid(logit_e) * x (the weight scales the expert's
               INPUT): x' @ gate_up_proj[e] ([E, H, 2F], gate = first F
               columns), @ down_proj[e] ([E, F, H]); not renormalised;
               + the ungated shared_expert(x). Block `feed_forward.`.
  switch_transformers
               encoder-decoder; layer N is encoder block N below
               num_layers, else decoder block N - num_layers (blocks
               `encoder.block.{i}.layer.1.mlp.`, `decoder.block.{i}.layer.2.mlp.`).
               p = softmax(x Wr^T [+ br]) over all experts (router_dtype
               float32), top-1, weight = max p (not renormalised); tokens
               admitted in order, at most expert_capacity per expert (the
               rows given are one sequence), the others give 0; experts
               wo(act(wi x)), act = dense_act_fn.
  jetmoe       logits = x Wr^T (mlp.router.layer.weight), top-k of the
               logits, softmax over the k; experts input_linear [E, 2F, H]
               (x @ W[e]^T, gate = the first F rows, then up) and
               output_linear [E, H, F], act = activation_function (silu,
               swish, gelu); + mlp.bias [H] once per token after the
               mixture (not per expert). Every layer MoE.
  moe_mlir     the research kinds of docs/importer.md, as MOE_SEMANTICS.md
               section 1.6/1.7/3/4 define them.
Dense layers (DeepSeek first_k_dense_replace / moe_layer_freq, Qwen
mlp_only_layers / decoder_sparse_step, Llama 4 moe_layers /
interleave_moe_layer_step, Switch num_sparse_{encoder,decoder}_layers)
compute mlp.{gate,up,down}_proj (Llama 4: feed_forward.*, F =
intermediate_size_mlp; Switch: mlp.wo(act(mlp.wi x)), F = d_ff).
Expert tensors may be per expert (`experts.{e}.*.weight`) or fused the way
transformers v5 holds them (`experts.gate_up_proj` [E, 2F, H], gate rows
first, and `experts.down_proj` [E, H, F]; Mixtral then under `mlp.`).
Top-k ties go to the lower expert index. With --tie-tolerance, a Switch
layer also flags the tokens whose admission under expert_capacity a flip of
an earlier near tie could change. Malformed input is an error (exit
1, one line naming the file, key or tensor): safetensors offsets outside the
file, sizes not matching shape x dtype, overlapping tensors, index entries
without their shard, missing config keys, tensor shapes that contradict
the config, non-float tensors, a quantization_config.
"""

import argparse
import ast
import json
import math
import os
import struct
import sys

# ---------------------------------------------------------------------------
# .npy and .safetensors, pure Python
# ---------------------------------------------------------------------------


def read_npy(path):
    """Returns (shape, flat list of floats)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise SystemExit("%s: not a .npy file" % path)
    major = data[6]
    if major == 1:
        hlen, start = struct.unpack("<H", data[8:10])[0], 10
    else:
        hlen, start = struct.unpack("<I", data[8:12])[0], 12
    header = ast.literal_eval(data[start:start + hlen].decode("latin1"))
    if header.get("fortran_order"):
        raise SystemExit("%s: fortran_order arrays are not supported" % path)
    descr, shape = header["descr"], tuple(header["shape"])
    codes = {"<f4": "f", "<f8": "d", "<f2": "e"}
    if descr not in codes:
        raise SystemExit("%s: dtype %s not supported (f2/f4/f8 only)" % (path, descr))
    n = 1
    for d in shape:
        n *= d
    body = data[start + hlen:]
    size = struct.calcsize(codes[descr])
    if len(body) < n * size:
        raise SystemExit("%s: truncated" % path)
    return shape, list(struct.unpack("<%d%s" % (n, codes[descr]), body[:n * size]))


def write_npy(path, shape, vals):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % (
        "".join("%d, " % d for d in shape) if len(shape) != 1 else "%d," % shape[0])
    header += " " * ((64 - (11 + len(header)) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%df" % len(vals), *vals))


DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def bf16_to_float(bits):
    return struct.unpack("<%df" % len(bits), struct.pack("<%dI" % len(bits),
                                                         *[b << 16 for b in bits]))


class Checkpoint:
    """The tensors of a model directory (single file or index + shards)."""

    def __init__(self, model_dir):
        self.dir = model_dir
        self.where = {}      # name -> (file, header entry, data start)
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f).get("weight_map")
            if not isinstance(weight_map, dict):
                raise SystemExit("%s: no weight_map" % index)
            files = sorted(set(weight_map.values()))
        else:
            weight_map, files = None, ["model.safetensors"]
        for fn in files:
            path = os.path.join(model_dir, fn)
            if not os.path.exists(path):
                raise SystemExit("%s: missing (named by %s)" % (path, "the index" if weight_map
                                                                  else "default"))
            for name, entry, base in self._read_header(path):
                if weight_map is not None and weight_map.get(name) != fn:
                    continue
                self.where[name] = (path, entry, base)
        if weight_map is not None:
            for name, fn in weight_map.items():
                if name not in self.where:
                    raise SystemExit("%s: the index maps %s to %s, which does not hold it"
                                     % (model_dir, name, fn))

    @staticmethod
    def _read_header(path):
        """Validated header entries: offsets inside the file, sizes matching
        shape x dtype, no two tensors sharing bytes."""
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise SystemExit("%s: too short for a safetensors file" % path)
            (n,) = struct.unpack("<Q", raw)
            if 8 + n > size:
                raise SystemExit("%s: header length %d beyond the file" % (path, n))
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise SystemExit("%s: bad header: %s" % (path, e))
        data_len, spans, out = size - 8 - n, [], []
        for name, e in header.items():
            if name == "__metadata__":
                continue
            b0, b1 = e["data_offsets"]
            item = DTYPE_SIZES.get(e["dtype"])
            if item is None:
                raise SystemExit("%s: tensor %s has unknown dtype %s" % (path, name, e["dtype"]))
            numel = 1
            for d in e["shape"]:
                numel *= d
            if not 0 <= b0 <= b1 <= data_len:
                raise SystemExit("%s: tensor %s: data_offsets [%d, %d] outside the %d data bytes"
                                 % (path, name, b0, b1, data_len))
            if b1 - b0 != numel * item:
                raise SystemExit("%s: tensor %s: %d bytes for shape %s %s"
                                 % (path, name, b1 - b0, e["shape"], e["dtype"]))
            spans.append((b0, b1, name))
            out.append((name, e, 8 + n))
        spans.sort()
        for (a0, a1, an), (c0, c1, cn) in zip(spans, spans[1:]):
            if c0 < a1:
                raise SystemExit("%s: tensors %s and %s overlap" % (path, an, cn))
        return out

    def has(self, name):
        return name in self.where

    def shape(self, name):
        return list(self.where[name][1]["shape"])

    def get(self, name):
        """(shape, flat list of floats)."""
        if name not in self.where:
            raise SystemExit("tensor %s not found in %s" % (name, self.dir))
        path, e, base = self.where[name]
        b0, b1 = e["data_offsets"]
        with open(path, "rb") as f:
            f.seek(base + b0)
            raw = f.read(b1 - b0)
        n = 1
        for d in e["shape"]:
            n *= d
        dt = e["dtype"]
        if dt == "F32":
            vals = struct.unpack("<%df" % n, raw)
        elif dt == "F16":
            vals = struct.unpack("<%de" % n, raw)
        elif dt == "BF16":
            vals = bf16_to_float(struct.unpack("<%dH" % n, raw))
        elif dt == "F64":
            vals = struct.unpack("<%dd" % n, raw)
        else:
            raise SystemExit("tensor %s has dtype %s (not a float tensor)" % (name, dt))
        return list(e["shape"]), list(vals)

    def matrix(self, name):
        """A 2-D tensor as a list of rows."""
        shape, v = self.get(name)
        if len(shape) != 2:
            raise SystemExit("tensor %s: expected 2-D, got %s" % (name, shape))
        c = shape[1]
        return [v[r * c:(r + 1) * c] for r in range(shape[0])]

    def vector(self, name):
        return self.get(name)[1]

    def stack(self, name):
        """A 3-D tensor [A, B, C] as A matrices of B rows."""
        shape, v = self.get(name)
        if len(shape) != 3:
            raise SystemExit("tensor %s: expected 3-D, got %s" % (name, shape))
        a, b, c = shape
        return [[v[(i * b + r) * c:(i * b + r + 1) * c] for r in range(b)] for i in range(a)]


# ---------------------------------------------------------------------------
# Math
# ---------------------------------------------------------------------------


def round_to(dtype, vals):
    if dtype == "f32":
        return list(struct.unpack("<%df" % len(vals), struct.pack("<%df" % len(vals), *vals)))
    if dtype == "f16":
        v = struct.unpack("<%df" % len(vals), struct.pack("<%df" % len(vals), *vals))
        return list(struct.unpack("<%de" % len(v), struct.pack("<%de" % len(v), *v)))
    if dtype == "bf16":
        bits = struct.unpack("<%dI" % len(vals), struct.pack("<%df" % len(vals), *vals))
        out = []
        for b in bits:
            if (b & 0x7F800000) == 0x7F800000 and (b & 0x7FFFFF):
                out.append((b >> 16) | 0x40)
            else:
                out.append(((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF)
        return list(bf16_to_float(out))
    return list(vals)


def matvec(rows, x, bias=None):
    out = [sum(a * b for a, b in zip(r, x)) for r in rows]
    if bias is not None:
        out = [o + b for o, b in zip(out, bias)]
    return out


def transpose(m):
    return [list(c) for c in zip(*m)]


def sigmoid(v):
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def softmax(v, tau=1.0):
    mx = max(x / tau for x in v)
    ex = [math.exp(x / tau - mx) for x in v]
    s = sum(ex)
    return [e / s for e in ex]


def act_fn(name):
    name = (name or "silu").lower()
    if name in ("silu", "swish"):
        return lambda g: g * sigmoid(g)
    if name == "gelu":
        return lambda g: 0.5 * g * (1.0 + math.erf(g / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        c = math.sqrt(2.0 / math.pi)
        return lambda g: 0.5 * g * (1.0 + math.tanh(c * (g + 0.044715 * g ** 3)))
    if name == "relu":
        return lambda g: max(g, 0.0)
    raise SystemExit("hidden_act %r not supported" % name)


# Near ties (--tie-tolerance): the tokens whose selection had a k-th and a
# (k+1)-th candidate within `tol` (relative to the k-th score) of each other,
# so that a compiled layer, whose inputs and intermediates are rounded to the
# model's dtype, may legitimately select otherwise. `token` is the index of
# the row being routed (Rows sets it while a layer iterates its tokens).
TIES = {"tol": 0.0, "token": None, "tokens": set()}


class Rows(list):
    """Token rows; iterating them tells topk which token it routes."""

    def __iter__(self):
        for t, row in enumerate(list.__iter__(self)):
            TIES["token"] = t
            yield row


def topk(scores, k, allowed=None):
    """Indices of the k largest (ties to the lower index), descending."""
    idx = [i for i in range(len(scores)) if allowed is None or allowed[i]]
    idx.sort(key=lambda i: (-scores[i], i))
    if TIES["tol"] > 0 and 0 < k < len(idx) and TIES["token"] is not None:
        a, b = scores[idx[k - 1]], scores[idx[k]]
        if a - b <= TIES["tol"] * max(abs(a), 1e-30):
            TIES["tokens"].add(TIES["token"])
    return idx[:k]


class FFN:
    """down(act(gate x) * up x); matrices in nn.Linear [out, in] rows."""

    def __init__(self, gate, up, down, act):
        self.gate, self.up, self.down, self.act = gate, up, down, act

    def __call__(self, x):
        g = matvec(self.gate, x)
        u = matvec(self.up, x)
        return matvec(self.down, [self.act(a) * b for a, b in zip(g, u)])


def load_ffn(ck, prefix, act, H, names=("gate_proj", "up_proj", "down_proj"), F=None):
    """gate/up [F, H], down [H, F] (F from the gate tensor unless given)."""
    g, u, d = ("%s.%s.weight" % (prefix, n) for n in names)
    if not ck.has(g):
        raise SystemExit("tensor %s not found in %s" % (g, ck.dir))
    F = F if F is not None else ck.shape(g)[0]
    check_shape(ck, g, [F, H])
    check_shape(ck, u, [F, H])
    check_shape(ck, d, [H, F])
    return FFN(ck.matrix(g), ck.matrix(u), ck.matrix(d), act)


def load_experts(ck, prefix, E, act, H, F=None, names=("gate_proj", "up_proj", "down_proj")):
    """Per-expert tensors, or transformers v5's fused gate_up_proj [E, 2F, H]
    (gate rows first) and down_proj [E, H, F]."""
    fused = prefix + ".experts.gate_up_proj"
    if ck.has(fused) and not ck.has("%s.experts.0.%s.weight" % (prefix, names[0])):
        F = F if F is not None else ck.shape(fused)[1] // 2
        check_shape(ck, fused, [E, 2 * F, H])
        check_shape(ck, prefix + ".experts.down_proj", [E, H, F])
        gu, dn = ck.stack(fused), ck.stack(prefix + ".experts.down_proj")
        return [FFN(gu[e][:F], gu[e][F:], dn[e], act) for e in range(E)]
    if F is None and ck.has("%s.experts.0.%s.weight" % (prefix, names[0])):
        F = ck.shape("%s.experts.0.%s.weight" % (prefix, names[0]))[0]
    return [load_ffn(ck, "%s.experts.%d" % (prefix, e), act, H, names, F) for e in range(E)]


def load_router(ck, name, E, H):
    check_shape(ck, name, [E, H])
    return ck.matrix(name)


# ---------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------

_MISSING = object()


def cfg_get(cfg, *keys, default=_MISSING):
    """The first of `keys` present in cfg; without a default, a missing key is
    an error naming it."""
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    if default is _MISSING:
        raise SystemExit("config.json: missing key %s" % " / ".join(repr(k) for k in keys))
    return default


def check_k(E, K, what="num_experts_per_tok"):
    if not 1 <= K <= E:
        raise SystemExit("config.json: %s = %d with %d experts" % (what, K, E))


def check_shape(ck, name, shape):
    if not ck.has(name):
        raise SystemExit("tensor %s not found in %s" % (name, ck.dir))
    if ck.shape(name) != list(shape):
        raise SystemExit("tensor %s has shape %s, expected %s" % (name, ck.shape(name), list(shape)))


def model_dtype(cfg):
    td = cfg_get(cfg, "torch_dtype", "dtype", default="float32")
    return {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}.get(td, "f32")


def is_moe_layer(cfg, i):
    mt = cfg["model_type"]
    if mt in ("qwen2_moe", "qwen3_moe", "qwen3_next"):
        E = cfg_get(cfg, "num_experts", "num_local_experts")   # v5 writes num_local_experts
        step = cfg_get(cfg, "decoder_sparse_step", default=1)
        return i not in (cfg.get("mlp_only_layers") or []) and E > 0 and (i + 1) % step == 0
    if mt == "glm4_moe":
        return i >= cfg_get(cfg, "first_k_dense_replace", default=1)
    if mt == "llama4_text":
        # Llama4TextConfig: moe_layers when not null (even []), else every
        # interleave_moe_layer_step-th layer from step - 1.
        ml = cfg.get("moe_layers")
        if ml is not None:
            if not isinstance(ml, list):
                raise SystemExit("config.json: moe_layers %r is not a list" % (ml,))
            return i in ml
        step = cfg_get(cfg, "interleave_moe_layer_step", default=1)
        if not isinstance(step, int) or step < 1:
            raise SystemExit("config.json: interleave_moe_layer_step %r" % (step,))
        return (i + 1) % step == 0
    if mt in ("deepseek_v2", "deepseek_v3"):
        # transformers 5.x tests only first_k_dense_replace; the remote code
        # (and docs/importer.md) also moe_layer_freq, 1 in every release.
        return (i >= cfg_get(cfg, "first_k_dense_replace",
                             default=3 if mt == "deepseek_v3" else 0)
                and i % cfg_get(cfg, "moe_layer_freq", default=1) == 0)
    return True


def combine(x, idx, w, experts, shared=None):
    """shared(x) (or 0) + sum_k w[k] * experts[idx[k]](x)."""
    y = shared(x) if shared else [0.0] * len(x)
    for e, we in zip(idx, w):
        ye = experts[e](x)
        y = [a + we * b for a, b in zip(y, ye)]
    return y


def softmax_topk_block(x_rows, router, experts, K, renorm):
    out = []
    for x in x_rows:
        p = softmax(matvec(router, x))
        idx = topk(p, K)
        w = [p[i] for i in idx]
        if renorm:
            s = sum(w)
            w = [v / s for v in w]
        out.append(combine(x, idx, w, experts))
    return out


def mixtral_block(ck, cfg, p, E, H, v5_router="gate"):
    """Mixtral's layout (mixtral, minimax_m2, phimoe): (block prefix, router
    [E, H], experts w1/w3/w2). transformers v5's internal naming puts the
    block under `mlp` (phimoe's router then is `router`)."""
    pre, r = p + "block_sparse_moe", "gate"
    if not ck.has(pre + ".gate.weight") and ck.has(p + "mlp.%s.weight" % v5_router):
        pre, r = p + "mlp", v5_router
    experts = load_experts(ck, pre, E, act_fn(cfg.get("hidden_act")), H,
                           cfg_get(cfg, "intermediate_size"), ("w1", "w3", "w2"))
    return pre, load_router(ck, "%s.%s.weight" % (pre, r), E, H), experts


def fwd_mixtral(ck, cfg, p, xs, H):
    E = cfg_get(cfg, "num_local_experts", "num_experts")
    K = cfg_get(cfg, "num_experts_per_tok", default=2)      # MixtralConfig's 2
    check_k(E, K)
    _, router, experts = mixtral_block(ck, cfg, p, E, H)
    return softmax_topk_block(xs, router, experts, K, True)


def fwd_qwen_olmoe(ck, cfg, p, xs, H):
    act = act_fn(cfg.get("hidden_act"))
    mt = cfg["model_type"]
    E = cfg_get(cfg, "num_experts", "num_local_experts")
    # Left out: Qwen2MoeConfig's 4, Qwen3MoeConfig's 8, Qwen3NextConfig's
    # 10, OlmoeConfig's 8.
    K = cfg_get(cfg, "num_experts_per_tok",
                default={"qwen2_moe": 4, "qwen3_moe": 8, "qwen3_next": 10,
                         "olmoe": 8}.get(mt, _MISSING))
    check_k(E, K)
    F = cfg_get(cfg, "intermediate_size" if mt == "olmoe" else "moe_intermediate_size")
    experts = load_experts(ck, p + "mlp", E, act, H, F)
    ys = softmax_topk_block(xs, load_router(ck, p + "mlp.gate.weight", E, H), experts, K,
                            bool(cfg.get("norm_topk_prob", mt == "qwen3_next")))
    # Qwen3-Next's block is Qwen2-MoE's, shared expert and its gate included.
    if (mt in ("qwen2_moe", "qwen3_next")
            and cfg_get(cfg, "shared_expert_intermediate_size", default=0)):
        shared = load_ffn(ck, p + "mlp.shared_expert", act, H,
                          F=cfg_get(cfg, "shared_expert_intermediate_size"))
        check_shape(ck, p + "mlp.shared_expert_gate.weight", [1, H])
        sg = ck.vector(p + "mlp.shared_expert_gate.weight")
        for x, y in zip(xs, ys):
            g = sigmoid(sum(a * b for a, b in zip(sg, x)))
            s = shared(x)
            for h in range(len(y)):
                y[h] += g * s[h]
    return ys


def fwd_deepseek(ck, cfg, p, xs, H):
    """deepseek_v2 / deepseek_v3, and glm4_moe (Glm4MoeTopkRouter: V3's
    routing always, norm_topk_prob true by default; it reads no
    scoring_func / topk_method)."""
    glm = cfg["model_type"] == "glm4_moe"
    v3 = cfg["model_type"] == "deepseek_v3" or glm
    if glm:
        cfg = dict(cfg, scoring_func="sigmoid", topk_method="noaux_tc")
    act = act_fn(cfg.get("hidden_act"))
    E = cfg_get(cfg, "n_routed_experts")
    K = (cfg_get(cfg, "num_experts_per_tok", default=8) if v3
         else cfg_get(cfg, "num_experts_per_tok"))
    check_k(E, K)
    F = cfg_get(cfg, "moe_intermediate_size")
    # Left-out keys: transformers 5.25's DeepseekV2/V3Config, Glm4MoeConfig.
    G = cfg_get(cfg, "n_group", default=8 if v3 and not glm else 1)
    TG = cfg_get(cfg, "topk_group", default=4 if v3 and not glm else G)
    scale = cfg_get(cfg, "routed_scaling_factor", default=2.5 if v3 and not glm else 1.0)
    method = cfg_get(cfg, "topk_method", default="noaux_tc" if v3 else "greedy")
    scoring = cfg_get(cfg, "scoring_func", default="sigmoid" if v3 else "softmax")
    if v3 and (method != "noaux_tc" or scoring != "sigmoid"):
        raise SystemExit("deepseek_v3: topk_method %r / scoring_func %r not supported"
                         % (method, scoring))
    if not v3 and (method not in ("greedy", "group_limited_greedy") or scoring != "softmax"):
        raise SystemExit("deepseek_v2: topk_method %r / scoring_func %r not supported"
                         % (method, scoring))
    grouped = v3 or method == "group_limited_greedy"
    if grouped and (E % G or not 1 <= TG <= G):
        raise SystemExit("config.json: n_group %d / topk_group %d with %d experts" % (G, TG, E))
    if not v3 and cfg.get("norm_topk_prob"):
        print("hf_reference: deepseek_v2 norm_topk_prob=true is ignored, as transformers' "
              "DeepseekV2TopkRouter does (the hub remote code would renormalise)",
              file=sys.stderr)
    router = load_router(ck, p + "mlp.gate.weight", E, H)
    bias = None
    if v3:
        check_shape(ck, p + "mlp.gate.e_score_correction_bias", [E])
        bias = ck.vector(p + "mlp.gate.e_score_correction_bias")
    experts = load_experts(ck, p + "mlp", E, act, H, F)
    ns = cfg_get(cfg, "n_shared_experts", default=1 if v3 else 2)
    shared = load_ffn(ck, p + "mlp.shared_experts", act, H, F=F * ns) if ns else None
    eg = E // G
    out = []
    for x in xs:
        z = matvec(router, x)
        if v3:
            s = [sigmoid(v) for v in z]
            sc = [a + b for a, b in zip(s, bias)]
            gs = [sum(sorted(sc[g * eg:(g + 1) * eg], reverse=True)[:2]) for g in range(G)]
            keep = set(topk(gs, TG))
            idx = topk(sc, K, [e // eg in keep for e in range(E)])   # others -inf
            w = [s[i] for i in idx]
            if cfg_get(cfg, "norm_topk_prob", default=True):
                d = sum(w) + 1e-20
                w = [v / d for v in w]
        else:
            s = softmax(z)
            if grouped:
                gs = [max(s[g * eg:(g + 1) * eg]) for g in range(G)]
                keep = set(topk(gs, TG))
                s = [v if e // eg in keep else 0.0 for e, v in enumerate(s)]
            idx = topk(s, K)
            w = [s[i] for i in idx]
        w = [v * scale for v in w]
        out.append(combine(x, idx, w, experts, shared))
    return out


def fwd_gpt_oss(ck, cfg, p, xs, H):
    E = cfg_get(cfg, "num_local_experts", "num_experts")
    K = cfg_get(cfg, "num_experts_per_tok", "experts_per_token")
    check_k(E, K)
    F = cfg_get(cfg, "intermediate_size")
    limit = cfg_get(cfg, "swiglu_limit", default=7.0)
    alpha = cfg_get(cfg, "swiglu_alpha", default=1.702)
    pre = p + "mlp."
    for q in ("gate_up_proj_blocks", "down_proj_blocks"):
        if ck.has(pre + "experts." + q):
            raise SystemExit("gpt_oss: MXFP4 tensors (%s) are not supported" % q)
    router = load_router(ck, pre + "router.weight", E, H)
    check_shape(ck, pre + "router.bias", [E])
    for n, shape in (("gate_up_proj", [E, H, 2 * F]), ("gate_up_proj_bias", [E, 2 * F]),
                     ("down_proj", [E, F, H]), ("down_proj_bias", [E, H])):
        check_shape(ck, pre + "experts." + n, shape)
    rbias = ck.vector(pre + "router.bias")
    gut = [transpose(m) for m in ck.stack(pre + "experts.gate_up_proj")]   # [2F, H] rows
    gub = ck.matrix(pre + "experts.gate_up_proj_bias")
    dnt = [transpose(m) for m in ck.stack(pre + "experts.down_proj")]      # [H, F] rows
    dnb = ck.matrix(pre + "experts.down_proj_bias")
    out = []
    for x in xs:
        z = matvec(router, x, rbias)
        idx = topk(z, K)
        w = softmax([z[i] for i in idx])
        y = [0.0] * len(x)
        for e, we in zip(idx, w):
            v = matvec(gut[e], x, gub[e])
            g = [min(a, limit) for a in v[0::2]]
            u = [min(max(a, -limit), limit) for a in v[1::2]]
            h = [(b + 1.0) * a * sigmoid(alpha * a) for a, b in zip(g, u)]
            ye = matvec(dnt[e], h, dnb[e])
            y = [a + we * b for a, b in zip(y, ye)]
        out.append(y)
    return out


def fwd_moe_mlir(ck, cfg, p, xs, H):
    ml = cfg_get(cfg, "moe_layer")
    kind = cfg_get(ml, "kind")
    act = act_fn(cfg.get("hidden_act"))
    pre = p + "mlp."
    if kind == "projected_router":
        E, F = cfg_get(ml, "num_experts"), cfg_get(ml, "intermediate_size")
        m, hp = cfg_get(ml, "domain_dim"), cfg_get(ml, "proj_hidden")
        check_shape(ck, pre + "router.domain_embeddings", [E, m])
        check_shape(ck, pre + "router.proj.w1.weight", [2 * hp, m])
        check_shape(ck, pre + "router.proj.w2.weight", [H, hp])
        w1 = ck.matrix(pre + "router.proj.w1.weight")
        w2 = ck.matrix(pre + "router.proj.w2.weight")
        silu = act_fn("silu")
        router = []
        for d in ck.matrix(pre + "router.domain_embeddings"):   # W_r row = W2 swiglu(W1 d)
            z = matvec(w1, d)
            router.append(matvec(w2, [silu(z[j]) * z[hp + j] for j in range(hp)]))
        experts = load_experts(ck, pre[:-1], E, act, H, F)
        ys = softmax_topk_block(xs, router, experts, 1, False)   # top-1, not renormalised
        FS = ml.get("shared_expert_intermediate_size")
        if FS:
            shared = load_ffn(ck, pre + "shared_expert", act, H, F=FS)
            for x, y in zip(xs, ys):
                s = shared(x)
                for h in range(H):
                    y[h] += s[h]
        return ys
    if kind == "hierarchical_lora":
        E, G = cfg_get(ml, "num_experts"), cfg_get(ml, "num_groups")
        K = cfg_get(ml, "num_experts_per_tok", default=E)
        check_k(E, K)
        if E % G:
            raise SystemExit("config.json: num_groups %d does not divide num_experts %d" % (G, E))
        r, alpha = cfg_get(ml, "lora_rank"), cfg_get(ml, "lora_alpha")
        tg, te = cfg_get(ml, "tau_group", default=1.0), cfg_get(ml, "tau_expert", default=1.0)
        WG = load_router(ck, pre + "group_router.weight", G, H)
        WD = load_router(ck, pre + "router.weight", E, H)
        check_shape(ck, pre + "base.weight", [H, H])
        W0 = ck.matrix(pre + "base.weight")
        for e in range(E):
            check_shape(ck, pre + "experts.%d.lora_A.weight" % e, [r, H])
            check_shape(ck, pre + "experts.%d.lora_B.weight" % e, [H, r])
        A = [ck.matrix(pre + "experts.%d.lora_A.weight" % e) for e in range(E)]
        B = [ck.matrix(pre + "experts.%d.lora_B.weight" % e) for e in range(E)]
        eg = E // G
        out = []
        for x in xs:
            a = softmax(matvec(WG, x), tg)
            z = matvec(WD, x)
            s = []
            for g in range(G):
                s += [a[g] * b for b in softmax(z[g * eg:(g + 1) * eg], te)]
            idx = list(range(E)) if K >= E else topk(s, K)
            w = [s[i] for i in idx]
            if ml.get("norm_topk_prob") and K < E:     # not a documented key
                t = sum(w)
                w = [v / t for v in w]
            y = matvec(W0, x)
            for e, we in zip(idx, w):
                ye = matvec(B[e], matvec(A[e], x))
                y = [c + we * alpha / r * d for c, d in zip(y, ye)]
            out.append(y)
        return out
    if kind == "cartesian":
        def part(name, rows):
            pe = cfg_get(ml, name)
            E, K = cfg_get(pe, "num_experts"), cfg_get(pe, "num_experts_per_tok")
            check_k(E, K)
            ex = load_experts(ck, pre + name, E, act, H, cfg_get(pe, "intermediate_size"))
            return softmax_topk_block(rows, load_router(ck, pre + name + ".gate.weight", E, H),
                                      ex, K, True)
        hs = Rows([a + b for a, b in zip(x, y)] for x, y in zip(xs, part("first", xs)))
        if ml.get("norm"):
            check_shape(ck, pre + "norm.weight", [H])
            nw = ck.vector(pre + "norm.weight")
            eps = cfg_get(cfg, "rms_norm_eps", default=1e-6)
            for h in hs:
                inv = 1.0 / math.sqrt(sum(v * v for v in h) / len(h) + eps)
                h[:] = [v * inv * w for v, w in zip(h, nw)]
        return part("second", hs)
    if kind == "zero_computation":
        E, F = cfg_get(ml, "num_experts"), cfg_get(ml, "intermediate_size")
        K = cfg_get(ml, "num_experts_per_tok")
        nz, nc, nk = (cfg_get(ml, k, default=0) for k in
                      ("zero_experts", "copy_experts", "constant_experts"))
        ET = E + nz + nc + nk
        check_k(ET, K)
        router = load_router(ck, pre + "gate.weight", ET, H)
        ffn = load_experts(ck, pre[:-1], E, act, H, F)
        consts = []
        for c in range(nk):
            check_shape(ck, pre + "constant_experts.%d.router.weight" % c, [2, H])
            check_shape(ck, pre + "constant_experts.%d.vector" % c, [H])
            consts.append((ck.matrix(pre + "constant_experts.%d.router.weight" % c),
                           ck.vector(pre + "constant_experts.%d.vector" % c)))

        def expert(e, x):     # ids: FFN, then zero, copy, constant experts
            if e < E:
                return ffn[e](x)
            e -= E
            if e < nz:
                return [0.0] * len(x)
            e -= nz
            if e < nc:
                return list(x)
            wc, v = consts[e - nc]
            a = softmax(matvec(wc, x))
            return [a[0] * xi + a[1] * vi for xi, vi in zip(x, v)]

        experts = [(lambda x, e=e: expert(e, x)) for e in range(ET)]
        return softmax_topk_block(xs, router, experts, K, True)
    raise SystemExit("moe_mlir: unknown moe_layer.kind %r" % kind)


def granite_block(ck, pre, E, F, H, act):
    """(router [E, H], experts) of a Granite-style block under `pre`
    (granitemoe's `block_sparse_moe.`, jetmoe's `mlp.`): router.layer.weight,
    experts [E, out, in] (input_linear [E, 2F, H], gate = the first F rows,
    then up; output_linear [E, H, F]); or the names transformers 5 writes
    with save_original_format=False (router.weight, experts.gate_up_proj,
    experts.down_proj; same layouts)."""
    if not ck.has(pre + "router.layer.weight") and ck.has(pre + "router.weight"):
        r, gu_n, dn_n = "router.weight", "experts.gate_up_proj", "experts.down_proj"
    else:
        r, gu_n, dn_n = "router.layer.weight", "input_linear.weight", "output_linear.weight"
    router = load_router(ck, pre + r, E, H)
    check_shape(ck, pre + gu_n, [E, 2 * F, H])
    check_shape(ck, pre + dn_n, [E, H, F])
    gu, dn = ck.stack(pre + gu_n), ck.stack(pre + dn_n)
    return router, [FFN(gu[e][:F], gu[e][F:], dn[e], act) for e in range(E)]


def topk_softmax(z, K):
    """GraniteMoe/JetMoe TopKGating: top-k of the raw logits, softmax over the k."""
    idx = topk(z, K)
    return idx, softmax([z[i] for i in idx])


def fwd_granitemoe(ck, cfg, p, xs, H):
    """granitemoe / granitemoeshared: softmax over the top-k raw logits;
    experts [E, out, in] with input_linear's rows gate then up; the shared
    MLP (granitemoeshared, shared_intermediate_size > 0) added ungated."""
    act = act_fn(cfg.get("hidden_act"))
    E = cfg_get(cfg, "num_local_experts")
    K = cfg_get(cfg, "num_experts_per_tok")
    check_k(E, K)
    F = cfg_get(cfg, "intermediate_size")
    router, experts = granite_block(ck, p + "block_sparse_moe.", E, F, H, act)
    shared = None
    FS = cfg_get(cfg, "shared_intermediate_size", default=0)
    if cfg["model_type"] == "granitemoeshared" and FS > 0:
        check_shape(ck, p + "shared_mlp.input_linear.weight", [2 * FS, H])
        check_shape(ck, p + "shared_mlp.output_linear.weight", [H, FS])
        sgu = ck.matrix(p + "shared_mlp.input_linear.weight")
        shared = FFN(sgu[:FS], sgu[FS:], ck.matrix(p + "shared_mlp.output_linear.weight"), act)
    out = []
    for x in xs:
        idx, w = topk_softmax(matvec(router, x), K)
        out.append(combine(x, idx, w, experts, shared))
    return out


def fwd_jetmoe(ck, cfg, p, xs, H):
    """jetmoe (JetMoeMoE): Granite's block under `mlp.` (JetMoeTopKGating:
    softmax over the top-k raw logits; JetMoeParallelExperts [E, out, in],
    input_linear's rows gate then up), activation `activation_function`
    (silu/swish or exact gelu, gated), then `mlp.bias` [H] added once per
    token after the mixture (not per expert, not weighted). K defaults to
    JetMoeConfig's 2; num_local_experts and intermediate_size are required
    (as the importer requires them). The mixture of attention heads
    (`self_attention.experts.*`) is not part of the block."""
    name = cfg_get(cfg, "activation_function", default="silu")
    if name not in ("silu", "swish", "gelu"):
        raise SystemExit("config.json: activation_function %r not supported (silu, swish, "
                         "gelu)" % (name,))
    act = act_fn(name)
    E = cfg_get(cfg, "num_local_experts")
    K = cfg_get(cfg, "num_experts_per_tok", default=2)      # JetMoeConfig's 2
    check_k(E, K)
    F = cfg_get(cfg, "intermediate_size")
    pre = p + "mlp."
    router, experts = granite_block(ck, pre, E, F, H, act)
    check_shape(ck, pre + "bias", [H])
    bias = ck.vector(pre + "bias")
    out = []
    for x in xs:
        idx, w = topk_softmax(matvec(router, x), K)
        y = combine(x, idx, w, experts)
        out.append([a + b for a, b in zip(y, bias)])
    return out


def fwd_dbrx(ck, cfg, p, xs, H):
    """dbrx (DbrxFFN): softmax over all logits, top-k, weights divided by
    their p-norm (moe_normalize_expert_weights; None: not); experts w1/v1
    (gate/up) and w2 viewed [E, F, H], the output h @ w2[e]."""
    fc = cfg_get(cfg, "ffn_config")
    act = act_fn((fc.get("ffn_act_fn") or {}).get("name", "silu"))
    E, K, F = fc["moe_num_experts"], fc["moe_top_k"], fc["ffn_hidden_size"]
    check_k(E, K, "ffn_config.moe_top_k")
    pnorm = fc.get("moe_normalize_expert_weights", 1.0)
    pre = p + "ffn."
    router = load_router(ck, pre + "router.layer.weight", E, H)
    mats = {}
    for n in ("w1", "v1", "w2"):
        check_shape(ck, pre + "experts.mlp." + n, [E * F, H])
        rows = ck.matrix(pre + "experts.mlp." + n)
        mats[n] = [rows[e * F:(e + 1) * F] for e in range(E)]
    experts = [FFN(mats["w1"][e], mats["v1"][e], transpose(mats["w2"][e]), act)
               for e in range(E)]
    out = []
    for x in xs:
        pr = softmax(matvec(router, x))
        idx = topk(pr, K)
        w = [pr[i] for i in idx]
        if pnorm is not None:
            nrm = sum(abs(v) ** pnorm for v in w) ** (1.0 / pnorm)
            w = [v / nrm for v in w]
        out.append(combine(x, idx, w, experts))
    return out


def sparsemixer(z, eps):
    """transformers' `sparsemixer` at inference (PhiMoE), on the raw logits
    z: two rounds; round 2 sets the first winner to -inf. Each round's
    weight is the softmax, at its winner m, of the logits left after masking
    those with (m - z_j) / max(|z_j|, m) > 2 eps. Not renormalised. Near
    ties: two top logits (either order changes which expert gets which
    weight) or a mask ratio within the tolerance of 2 eps."""
    tol = TIES["tol"]
    ninf = float("-inf")
    idx, w, cur = [], [], list(z)
    for _ in range(2):
        e = max(range(len(cur)), key=lambda j: (cur[j], -j))
        m = cur[e]
        masked = []
        for j, v in enumerate(cur):
            ratio = (m - z[j]) / max(abs(z[j]), m) if max(abs(z[j]), m) else float("nan")
            if tol > 0 and j != e and v != ninf and abs(ratio - 2 * eps) <= tol:
                TIES["tokens"].add(TIES["token"])
            masked.append(ninf if ratio > 2 * eps else v)
        if tol > 0:
            rest = sorted((v for j, v in enumerate(cur) if j != e and v != ninf), reverse=True)
            if rest and m - rest[0] <= tol * max(abs(m), 1e-30):
                TIES["tokens"].add(TIES["token"])
        w.append(softmax(masked)[e])
        idx.append(e)
        cur = [ninf if j == e else v for j, v in enumerate(cur)]
    return idx, w


def fwd_llama4_text(ck, cfg, p, xs, H):
    """llama4_text (Llama4TextMoe): top-k of the raw logits; each picked
    expert e runs on sigmoid(logit_e) * x (Llama4Router's score scales the
    expert's input; the unpicked ones get 0 and, without biases, give 0);
    not renormalised; experts gate_up_proj [E, H, 2F] (x @ W, gate = the
    first F columns) and down_proj [E, F, H]; the shared expert (F =
    intermediate_size) added ungated."""
    act = act_fn(cfg.get("hidden_act"))
    E = cfg_get(cfg, "num_local_experts")
    K = cfg_get(cfg, "num_experts_per_tok", default=1)      # Llama4TextConfig's 1
    check_k(E, K)
    F = cfg_get(cfg, "intermediate_size")
    pre = p + "feed_forward."
    router = load_router(ck, pre + "router.weight", E, H)
    check_shape(ck, pre + "experts.gate_up_proj", [E, H, 2 * F])
    check_shape(ck, pre + "experts.down_proj", [E, F, H])
    gut = [transpose(m) for m in ck.stack(pre + "experts.gate_up_proj")]   # [2F, H] rows
    dnt = [transpose(m) for m in ck.stack(pre + "experts.down_proj")]      # [H, F] rows
    experts = [FFN(g[:F], g[F:], d, act) for g, d in zip(gut, dnt)]
    shared = load_ffn(ck, pre + "shared_expert", act, H, F=F)
    out = []
    for x in xs:
        z = matvec(router, x)
        y = shared(x)
        for e in topk(z, K):
            s = sigmoid(z[e])
            y = [a + b for a, b in zip(y, experts[e]([s * v for v in x]))]
        out.append(y)
    return out


def fwd_minimax_m2(ck, cfg, p, xs, H):
    """minimax_m2 (MiniMaxM2TopKRouter): sigmoid scores, top-k of scores +
    e_score_correction_bias (beside the gate), the picked scores divided by
    their sum; Mixtral's expert names (transformers 5 fused: `mlp.`)."""
    E, K = cfg_get(cfg, "num_local_experts"), cfg_get(cfg, "num_experts_per_tok")
    check_k(E, K)
    pre, router, experts = mixtral_block(ck, cfg, p, E, H)
    check_shape(ck, pre + ".e_score_correction_bias", [E])
    bias = ck.vector(pre + ".e_score_correction_bias")
    out = []
    for x in xs:
        s = [sigmoid(v) for v in matvec(router, x)]
        idx = topk([a + b for a, b in zip(s, bias)], K)
        w = [s[i] for i in idx]
        d = sum(w)
        out.append(combine(x, idx, [v / d for v in w], experts))
    return out


def fwd_phimoe(ck, cfg, p, xs, H):
    """phimoe: Mixtral's experts (w1/w3/w2; transformers 5: mlp.router and
    fused experts) under sparsemixer routing (router_jitter_noise)."""
    E = cfg_get(cfg, "num_local_experts")
    if cfg_get(cfg, "num_experts_per_tok", default=2) != 2:
        raise SystemExit("phimoe's sparsemixer picks 2 experts")
    check_k(E, 2)
    eps = cfg_get(cfg, "router_jitter_noise", default=0.01)
    _, router, experts = mixtral_block(ck, cfg, p, E, H, v5_router="router")
    out = []
    for x in xs:
        idx, w = sparsemixer(matvec(router, x), eps)
        out.append(combine(x, idx, w, experts))
    return out


# Drop count of the last Switch layer computed (main prints it).
STATS = {"dropped": None}


def switch_int(cfg, key, default=_MISSING):
    """An integer key of SwitchTransformersConfig, which is @strict: null,
    true/false and non-integers are refused (num_decoder_layers alone may be
    null: switch_block reads it)."""
    if key in cfg and cfg[key] is None:
        raise SystemExit("config.json: %s is null" % key)
    v = cfg_get(cfg, key) if default is _MISSING else cfg.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise SystemExit("config.json: %s %r is not an integer" % (key, v))
    return v


def switch_block(cfg, layer):
    """(MLP prefix, sparse?) of layer `layer`: encoder block `layer` below
    num_layers, decoder block layer - num_layers from there (the importer's
    numbering). SwitchTransformersConfig: step = n // num_sparse_*_layers,
    or n when that is 0 or less; SwitchTransformersStack: block i is sparse
    iff step > 0 and (i % step == 1 or step == 1) (so 0 sparse layers still
    make block 1 sparse when n >= 2, and a step of 0 none)."""
    L = switch_int(cfg, "num_layers")
    # null or absent: num_layers (SwitchTransformersConfig's "symmetry").
    LD = L if cfg.get("num_decoder_layers") is None else switch_int(cfg, "num_decoder_layers")
    for k, v in (("num_layers", L), ("num_decoder_layers", LD)):
        if v < 0:
            raise SystemExit("config.json: %s %d is negative" % (k, v))
    if not 0 <= layer < L + LD:
        raise SystemExit("--layer %d out of range (num_layers %d + num_decoder_layers %d)"
                         % (layer, L, LD))
    if layer < L:
        i, n, key, p = layer, L, "num_sparse_encoder_layers", "encoder.block.%d.layer.1.mlp."
    else:      # decoder blocks: layer.1 is the cross-attention
        i, n, key, p = layer - L, LD, "num_sparse_decoder_layers", "decoder.block.%d.layer.2.mlp."
    ns = switch_int(cfg, key, default=3)
    step = n // ns if ns > 0 else n
    return p % i, step > 0 and (i % step == 1 or step == 1)


def switch_ffn(ck, cfg, pre, H):
    """SwitchTransformersDenseActDense: wo(act(wi x)), wi [F, H], wo [H, F],
    F = d_ff, act = ACT2FN[dense_act_fn] (relu, gelu (erf), gelu_new and
    gelu_pytorch_tanh (tanh), relu2 (squared relu); names are exact)."""
    name = cfg.get("dense_act_fn", "relu")
    if name == "relu2":             # ReLUSquaredActivation
        act = lambda g: max(g, 0.0) ** 2      # noqa: E731
    elif name in ("relu", "gelu", "gelu_new", "gelu_pytorch_tanh"):
        act = act_fn(name)
    else:
        raise SystemExit("config.json: dense_act_fn %r not supported (relu, gelu, gelu_new, "
                         "gelu_pytorch_tanh, relu2)" % (name,))
    F = switch_int(cfg, "d_ff")
    check_shape(ck, pre + "wi.weight", [F, H])
    check_shape(ck, pre + "wo.weight", [H, F])
    wi, wo = ck.matrix(pre + "wi.weight"), ck.matrix(pre + "wo.weight")
    return lambda x: matvec(wo, [act(v) for v in matvec(wi, x)])


def fwd_switch_transformers(ck, cfg, p, xs, H):
    """switch_transformers (SwitchTransformersSparseMLP in eval mode: the
    router's jitter acts only in training): p = softmax(classifier(x)) over
    all E, computed in router_dtype (float32 only); expert = argmax p (ties
    to the lower id), weight = max p, not renormalised; the one-hot choices'
    cumsum over the sequence admits a token iff its expert has had at most
    expert_capacity tokens so far, these rows included (the rows given are
    one sequence); a token over capacity gives 0."""
    E = switch_int(cfg, "num_experts")
    if E < 1:
        raise SystemExit("config.json: num_experts %d" % E)
    C = switch_int(cfg, "expert_capacity", default=64)
    rdt = cfg.get("router_dtype", "float32")
    if rdt != "float32":
        raise SystemExit("config.json: router_dtype %r not supported (the router runs in "
                         "float32)" % (rdt,))
    rb = cfg.get("router_bias", False)
    if not isinstance(rb, bool):
        raise SystemExit("config.json: router_bias %r is not true/false" % (rb,))
    router = load_router(ck, p + "router.classifier.weight", E, H)
    bias = None
    if rb:
        check_shape(ck, p + "router.classifier.bias", [E])
        bias = ck.vector(p + "router.classifier.bias")
    experts = [switch_ffn(ck, cfg, p + "experts.expert_%d." % e, H) for e in range(E)]
    tol = TIES["tol"]
    count = [0] * E     # tokens routed to each expert so far (dropped ones too)
    near = [0] * E      # near ties so far whose flip could move a token to/from it
    out, dropped = [], 0
    for t, x in enumerate(xs):
        pr = softmax(matvec(router, x, bias))
        (e,) = topk(pr, 1)
        count[e] += 1
        if tol > 0:
            if t in TIES["tokens"]:
                # A flip moves this token from e to a candidate within the
                # tolerance: the later counts of both shift by one.
                for i in range(E):
                    if pr[e] - pr[i] <= tol * max(abs(pr[e]), 1e-30):
                        near[i] += 1
            elif C - near[e] < count[e] <= C + near[e]:
                # Within near[e] of the capacity: earlier flips could
                # change this token's admission.
                TIES["tokens"].add(t)
        if count[e] > C:
            out.append([0.0] * H)
            dropped += 1
        else:
            out.append([pr[e] * v for v in experts[e](x)])
    STATS["dropped"] = dropped
    return out


def dense_ffn(ck, cfg, p, xs, H):
    if cfg["model_type"] == "switch_transformers":
        f = switch_ffn(ck, cfg, p, H)
        return [f(x) for x in xs]
    if cfg["model_type"] == "llama4_text":     # Llama4TextMLP(intermediate_size_mlp)
        pre, F = p + "feed_forward", cfg_get(cfg, "intermediate_size_mlp")
    else:
        pre, F = p + "mlp", cfg_get(cfg, "intermediate_size")
    f = load_ffn(ck, pre, act_fn(cfg.get("hidden_act")), H, F=F)
    return [f(x) for x in xs]


FORWARD = {"mixtral": fwd_mixtral, "qwen2_moe": fwd_qwen_olmoe, "qwen3_moe": fwd_qwen_olmoe,
           "qwen3_next": fwd_qwen_olmoe,
           "olmoe": fwd_qwen_olmoe, "deepseek_v2": fwd_deepseek, "deepseek_v3": fwd_deepseek,
           "gpt_oss": fwd_gpt_oss, "granitemoe": fwd_granitemoe,
           "granitemoeshared": fwd_granitemoe, "dbrx": fwd_dbrx, "phimoe": fwd_phimoe,
           "glm4_moe": fwd_deepseek, "minimax_m2": fwd_minimax_m2,
           "llama4_text": fwd_llama4_text, "switch_transformers": fwd_switch_transformers,
           "jetmoe": fwd_jetmoe, "moe_mlir": fwd_moe_mlir}


def layer_forward(model_dir, layer, x_rows):
    """Returns (kind 'moe'|'dense', output rows) for the layer's MLP block."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    mt = cfg.get("model_type")
    root = "model.layers.%d."
    if mt == "llama4":
        # The hub's Llama4ForConditionalGeneration: the text model's config
        # under text_config (dtype from the top level where it has none),
        # its tensors under language_model.
        if not isinstance(cfg.get("text_config"), dict):
            raise SystemExit("config.json: model_type 'llama4' needs a text_config object")
        text = dict(cfg["text_config"])
        for k in ("torch_dtype", "dtype"):
            if k not in text and k in cfg:
                text[k] = cfg[k]
        if "quantization_config" in cfg:
            text["quantization_config"] = cfg["quantization_config"]
        cfg, mt, root = dict(text, model_type="llama4_text"), "llama4_text", \
            "language_model.model.layers.%d."
    if mt not in FORWARD:
        raise SystemExit("model_type %r not supported (one of %s)" % (mt, ", ".join(FORWARD)))
    if "quantization_config" in cfg:
        raise SystemExit("quantization_config (%s) not supported"
                         % cfg["quantization_config"].get("quant_method"))
    if mt == "switch_transformers":
        # Encoder-decoder: p is the block's MLP prefix (layer numbering:
        # encoder blocks, then decoder blocks).
        p, moe = switch_block(cfg, layer)
        H = switch_int(cfg, "d_model")
    else:
        # dbrx names its sizes d_model / n_layers and its blocks transformer.blocks.
        L = cfg_get(cfg, "num_hidden_layers", "n_layers")
        if not 0 <= layer < L:
            raise SystemExit("--layer %d out of range (num_hidden_layers %d)" % (layer, L))
        H = cfg_get(cfg, "hidden_size", "d_model")
        p = ("transformer.blocks.%d." if mt == "dbrx" else root) % layer
        moe = mt == "moe_mlir" or is_moe_layer(cfg, layer)
    for x in x_rows:
        if len(x) != H:
            raise SystemExit("input rows have %d values, hidden_size is %d" % (len(x), H))
    dt = model_dtype(cfg)
    xs = Rows(round_to(dt, x) for x in x_rows)
    ck = Checkpoint(model_dir)
    if not moe:
        return "dense", dense_ffn(ck, cfg, p, xs, H)
    return "moe", FORWARD[mt](ck, cfg, p, xs, H)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--input", required=True, help="x.npy, [T, H] or [H]")
    ap.add_argument("--output", required=True, help="y.npy, written [T, H] f32")
    ap.add_argument("--tie-tolerance", type=float, default=0.0,
                    help="flag tokens whose top-k had a k-th and (k+1)-th score "
                         "within this relative distance")
    ap.add_argument("--ties", help="write the flagged token indices here (JSON)")
    a = ap.parse_args(argv)
    TIES["tol"] = a.tie_tolerance
    shape, vals = read_npy(a.input)
    if len(shape) == 1:
        shape = (1, shape[0])
    if len(shape) != 2:
        raise SystemExit("--input must be [T, H], got %s" % (shape,))
    T, H = shape
    rows = [vals[t * H:(t + 1) * H] for t in range(T)]
    kind, ys = layer_forward(a.model_dir, a.layer, rows)
    write_npy(a.output, (T, H), [v for y in ys for v in y])
    if a.ties:
        with open(a.ties, "w") as f:
            json.dump(sorted(TIES["tokens"]), f)
    print("layer %d (%s): %d tokens, max |y| %.4g%s" % (
        a.layer, kind, T, max((abs(v) for y in ys for v in y), default=0.0),
        "" if STATS["dropped"] is None else
        ", %d over expert_capacity (output 0)" % STATS["dropped"]))


if __name__ == "__main__":
    main()
