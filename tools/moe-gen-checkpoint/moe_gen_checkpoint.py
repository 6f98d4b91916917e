#!/usr/bin/env python3
"""Writes tiny Hugging Face-style MoE checkpoints (config.json + safetensors)
for the importer's tests, with nothing but the Python standard library.

Every family that `moe-compile <model-dir>` accepts (docs/importer.md) gets
a model directory whose config keys and tensor names are those of the real
checkpoints (as the transformers config classes and `save_pretrained` name
them), at toy sizes (H 32..64, F 24..96, E 4..16, K 1..4), with seeded random
weights scaled so that activations stay O(1). Non-MoE tensors (embeddings,
attention projections, norms, lm_head) are written too, small, so that the
importer has to ignore them; layers that the config makes dense (DeepSeek
`first_k_dense_replace`, Qwen `mlp_only_layers` / `decoder_sparse_step`, Llama 4
`interleave_moe_layer_step`, Switch `num_sparse_{encoder,decoder}_layers`) get
a dense `mlp.{gate,up,down}_proj` (Llama 4: `feed_forward.{gate,up,down}_proj`;
Switch: `mlp.wi` / `mlp.wo`).

    moe_gen_checkpoint.py --family NAME|all --out DIR [--dtype f32|f16|bf16]
        [--layers N] [--seed S] [--sharded] [--kind KIND]
        [--experts per-expert|fused] [--corrupt MODE] [--router-bias]

  --family   mixtral qwen2_moe qwen3_moe deepseek_v2 deepseek_v3 olmoe
             gpt_oss granitemoe granitemoeshared dbrx phimoe glm4_moe minimax_m2
             qwen3_next llama4_text llama4 switch_transformers jetmoe moe_mlir,
             or `all`
             (then DIR/<family>[_<kind>] for each family and, for moe_mlir,
             each kind).
  --kind     moe_mlir only: projected_router hierarchical_lora cartesian
             zero_computation (default projected_router).
  --layers   decoder layers (default 2). With 2 or more, the families that
             can have dense layers get one: deepseek_v2/v3 layer 0
             (first_k_dense_replace=1), qwen2_moe layer 0 (mlp_only_layers
             [0]), qwen3_moe and llama4_text the even layers
             (decoder_sparse_step=2; interleave_moe_layer_step=2, whose
             moe_layers, the odd layers, config.json lists too).
             switch_transformers: N encoder blocks and max(1, N - 1) decoder
             blocks (layers N .. 2N - 2, or layer 1 for N = 1), the sparse
             ones SwitchTransformersStack's for num_sparse_*_layers
             max(1, blocks // 2): N 2: layers 1 and 2 (decoder block 0)
             sparse, layer 0 dense; N 3: 1 and 4 sparse, 0, 2, 3 dense.
  --router-bias  switch_transformers only: router_bias true, with
             `router.classifier.bias` [E] in every sparse block.
  --sharded  model-0000k-of-0000n.safetensors + model.safetensors.index.json
             (weight_map); shard boundaries fall inside layers.
  --experts  fused: the layout transformers v5 writes with
             save_pretrained(save_original_format=False): per layer
             `mlp.experts.gate_up_proj` [E, 2F, H] (gate rows first, then up)
             and `mlp.experts.down_proj` [E, H, F], and Mixtral's
             `block_sparse_moe.` renamed `mlp.`; granitemoe's
             `block_sparse_moe.{router.layer.weight, input_linear.weight,
             output_linear.weight}` renamed `router.weight`,
             `experts.gate_up_proj`, `experts.down_proj`. Same values.
             Not for gpt_oss, dbrx, llama4_text, jetmoe (their experts are
             stacked already, and transformers 5 saves them as they are;
             jetmoe has no conversion mapping in transformers 5.25, so
             save_original_format=False writes the hub names),
             switch_transformers (per-expert modules in transformers 5 too)
             and moe_mlir.
  --dtype    f32, f16 (struct 'e') or bf16 (f32 rounded to nearest even).
             DeepSeek-V3's e_score_correction_bias stays f32 as in the real
             checkpoint.

Corruptions (--corrupt MODE), each one broken variant for an error test; the
"victim" is the down projection of expert 0 of the first MoE layer (fused /
gpt_oss / llama4_text: `experts.down_proj`; granitemoe: `output_linear.weight`;
jetmoe: `mlp.output_linear.weight`;
dbrx: `ffn.experts.mlp.w2`; hierarchical_lora: `experts.0.lora_B.weight`;
cartesian: `second.experts.0.down_proj.weight`; switch_transformers:
`experts.expert_0.wo.weight`):
  truncated            the file holding the victim (written last) is cut 10
                       bytes short of its header's last data offset.
  overlap              the victim's data_offsets start inside the preceding
                       tensor's bytes.
  beyond               the victim (written last) has data_offsets ending 16
                       bytes past the end of the file.
  missing-tensor       the victim is left out (and out of the index).
  wrong-shape          the victim's last dimension is one too large (its data
                       matches the wrong shape, so the file itself is valid).
  wrong-dtype          the victim is stored as I32 (an integer tensor).
  unknown-model-type   config.json has "model_type": "unknown_moe_family".
  missing-key          the expert-count key is removed (num_local_experts /
                       num_experts / n_routed_experts; moe_mlir:
                       moe_layer.num_experts, cartesian moe_layer.first...).
  contradictory-key    num_experts_per_tok = E + 1 (more experts per token
                       than experts); moe_mlir projected_router and
                       switch_transformers (no k key): num_experts = E + 1,
                       contradicting the tensors.
  quantized            a `quantization_config` with quantized tensors:
                       gpt_oss MXFP4 (`*_blocks` [E, out, in/32, 16] U8 and
                       `*_scales` [E, out, in/32] U8 in place of gate_up_proj
                       and down_proj), the others block fp8 (F8_E4M3 expert,
                       shared, dense and attention weights with F32
                       `weight_scale_inv`, as DeepSeek-V3 ships).
  bad-index            (--sharded only) the index maps the victim to a shard
                       file that does not exist.
  extra-tensor         a bias beside the victim (`...down_proj.bias`, or
                       `experts.down_proj_extra_bias` where the victim has
                       no `.weight`), which no family has: config.json no
                       longer describes every tensor of the MoE block.

Prints one line per model written: the directory, then its MoE and dense
layers.
"""

import argparse
import json
import math
import os
import random
import re
import struct

FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3",
            "olmoe", "gpt_oss", "granitemoe", "granitemoeshared", "dbrx", "phimoe",
            "glm4_moe", "minimax_m2", "qwen3_next", "llama4_text", "llama4",
            "switch_transformers", "jetmoe", "moe_mlir"]
# No --experts fused variant: experts stacked already (transformers 5 saves
# them as they are; jetmoe: no conversion mapping, the hub names), or no
# transformers layout at all (switch_transformers: transformers 5 keeps its
# per-expert modules, no fused layout).
NOT_FUSABLE = ("gpt_oss", "dbrx", "llama4_text", "llama4", "switch_transformers",
               "jetmoe", "moe_mlir")
KINDS = ["projected_router", "hierarchical_lora", "cartesian", "zero_computation"]
CORRUPTIONS = ["truncated", "overlap", "beyond", "missing-tensor", "wrong-shape",
               "wrong-dtype", "unknown-model-type", "missing-key",
               "contradictory-key", "quantized", "bad-index", "extra-tensor"]
DTYPES = {"f32": ("F32", "float32"), "f16": ("F16", "float16"),
          "bf16": ("BF16", "bfloat16")}
VOCAB = 64

# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def bf16_bits(v):
    """bf16 bits of v: f32 rounded to nearest even in its upper 16 bits."""
    b = struct.unpack("<I", struct.pack("<f", v))[0]
    if (b & 0x7F800000) == 0x7F800000 and (b & 0x7FFFFF):
        return (b >> 16) | 0x40  # quiet NaN
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


def e4m3_byte(v):
    """float8_e4m3fn encoding (bias 7, no inf, max 448), nearest."""
    s = 0x80 if math.copysign(1.0, v) < 0 else 0
    a = min(abs(v), 448.0)
    if a < 2.0 ** -6:                       # subnormal: m * 2^-9
        m = int(round(a / 2.0 ** -9))
        return s | (8 if m == 8 else m)
    e = math.floor(math.log2(a))
    m = int(round((a / 2.0 ** e - 1.0) * 8))
    if m == 8:
        e, m = e + 1, 0
    return s | ((e + 7) << 3) | m


def encode(dtype, vals):
    if dtype == "F32":
        return struct.pack("<%df" % len(vals), *vals)
    if dtype == "F16":
        return struct.pack("<%de" % len(vals), *vals)
    if dtype == "BF16":
        return struct.pack("<%dH" % len(vals), *[bf16_bits(v) for v in vals])
    if dtype == "I32":
        return struct.pack("<%di" % len(vals), *[int(round(v * 100)) for v in vals])
    if dtype == "U8":
        return bytes(int(v) & 0xFF for v in vals)
    if dtype == "F8_E4M3":
        return bytes(e4m3_byte(v) for v in vals)
    raise ValueError("unknown dtype " + dtype)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class Tensor:
    """One tensor: its name, shape, dtype and values (flat, row-major)."""

    def __init__(self, name, shape, dtype, vals):
        self.name, self.shape, self.dtype, self.vals = name, list(shape), dtype, vals


def natural_key(name):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------------------
# Model builder
# ---------------------------------------------------------------------------


class Builder:
    """Collects tensors; values are seeded per tensor name, so a tensor's
    values depend only on (seed, name, shape), not on what else is written."""

    def __init__(self, seed, dtype):
        self.seed, self.dtype, self.tensors = seed, dtype, []

    def rng(self, name):
        return random.Random("%d/%s" % (self.seed, name))

    def normal(self, name, shape, std, dtype=None, mean=0.0):
        r = self.rng(name)
        n = numel(shape)
        # Rounded to f32 first: the f16/bf16 files are then the f32 values cast.
        vals = list(struct.unpack("<%df" % n, struct.pack(
            "<%df" % n, *[mean + std * r.gauss(0.0, 1.0) for _ in range(n)])))
        self.tensors.append(Tensor(name, shape, dtype or self.dtype, vals))

    def linear(self, name, out_f, in_f, gain=1.0, bias=False):
        """nn.Linear weight [out, in], std gain/sqrt(in) (O(1) outputs)."""
        self.normal(name + ".weight", [out_f, in_f], gain / math.sqrt(in_f))
        if bias:
            self.normal(name + ".bias", [out_f], 0.1)

    def norm(self, name, size):
        self.normal(name + ".weight", [size], 0.1, mean=1.0)

    def ffn(self, prefix, H, F, names=("gate_proj", "up_proj", "down_proj")):
        g, u, d = names
        self.linear(prefix + "." + g, F, H)
        self.linear(prefix + "." + u, F, H)
        self.linear(prefix + "." + d, H, F)


def attention_std(b, p, H, nh, nkv, hd, qkv_bias=False, o_bias=False,
                  qk_norm=None, sinks=False):
    b.linear(p + "q_proj", nh * hd, H, bias=qkv_bias)
    b.linear(p + "k_proj", nkv * hd, H, bias=qkv_bias)
    b.linear(p + "v_proj", nkv * hd, H, bias=qkv_bias)
    b.linear(p + "o_proj", H, nh * hd, bias=o_bias)
    if qk_norm == "head":        # Qwen3: per head
        b.norm(p + "q_norm", hd)
        b.norm(p + "k_norm", hd)
    elif qk_norm == "full":      # OLMoE: over the whole projection
        b.norm(p + "q_norm", nh * hd)
        b.norm(p + "k_norm", nkv * hd)
    if sinks:
        b.normal(p + "sinks", [nh], 0.1)


def attention_mla(b, p, H, c):
    """DeepSeek multi-head latent attention projections."""
    nh, nope, rope, v = (c["num_attention_heads"], c["qk_nope_head_dim"],
                         c["qk_rope_head_dim"], c["v_head_dim"])
    if c["q_lora_rank"] is None:
        b.linear(p + "q_proj", nh * (nope + rope), H)
    else:
        b.linear(p + "q_a_proj", c["q_lora_rank"], H)
        b.norm(p + "q_a_layernorm", c["q_lora_rank"])
        b.linear(p + "q_b_proj", nh * (nope + rope), c["q_lora_rank"])
    b.linear(p + "kv_a_proj_with_mqa", c["kv_lora_rank"] + rope, H)
    b.norm(p + "kv_a_layernorm", c["kv_lora_rank"])
    b.linear(p + "kv_b_proj", nh * (nope + v), c["kv_lora_rank"])
    b.linear(p + "o_proj", H, nh * v)


def common_tensors(b, H, layers):
    b.normal("model.embed_tokens.weight", [VOCAB, H], 1.0)
    b.norm("model.norm", H)
    b.linear("lm_head", VOCAB, H)
    for i in range(layers):
        b.norm("model.layers.%d.input_layernorm" % i, H)
        b.norm("model.layers.%d.post_attention_layernorm" % i, H)


def router(b, name, E, H):
    # Logits of std ~1.5: decisive routing, few near-ties.
    b.linear(name, E, H, gain=1.5)


def hf_config(arch, model_type, torch_dtype, **kw):
    c = {"architectures": [arch], "model_type": model_type,
         "torch_dtype": torch_dtype, "transformers_version": "4.57.0",
         "vocab_size": VOCAB, "initializer_range": 0.02, "use_cache": True,
         "tie_word_embeddings": False, "attention_dropout": 0.0,
         "hidden_act": "silu", "max_position_embeddings": 4096}
    c.update(kw)
    return dict(sorted(c.items()))


# Each family function fills b and returns (config, moe_layers, dense_layers).

def fam_mixtral(b, L, td):
    H, F, E, K = 32, 48, 8, 2
    c = hf_config("MixtralForCausalLM", "mixtral", td, hidden_size=H,
                  intermediate_size=F, num_hidden_layers=L,
                  num_attention_heads=4, num_key_value_heads=2,
                  num_local_experts=E, num_experts_per_tok=K, rms_norm_eps=1e-5,
                  rope_theta=1e6, router_aux_loss_coef=0.02,
                  router_jitter_noise=0.0, output_router_logits=False,
                  sliding_window=None, bos_token_id=1, eos_token_id=2)
    common_tensors(b, H, L)
    for i in range(L):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 2, 8)
        router(b, p + "block_sparse_moe.gate", E, H)
        for e in range(E):
            b.ffn(p + "block_sparse_moe.experts.%d" % e, H, F, ("w1", "w3", "w2"))
    return c, list(range(L)), []


def fam_qwen2_moe(b, L, td):
    H, F, FS, FD, E, K = 32, 24, 48, 64, 8, 4
    mlp_only = [0] if L >= 2 else []
    c = hf_config("Qwen2MoeForCausalLM", "qwen2_moe", td, hidden_size=H,
                  intermediate_size=FD, moe_intermediate_size=F,
                  shared_expert_intermediate_size=FS, num_hidden_layers=L,
                  num_attention_heads=4, num_key_value_heads=4, num_experts=E,
                  num_experts_per_tok=K, norm_topk_prob=False,
                  decoder_sparse_step=1, mlp_only_layers=mlp_only,
                  rms_norm_eps=1e-6, rope_theta=1e6, router_aux_loss_coef=0.001,
                  output_router_logits=False, use_sliding_window=False,
                  sliding_window=32768, max_window_layers=21,
                  bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 2)
    common_tensors(b, H, L)
    moe, dense = [], []
    for i in range(L):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 4, 8, qkv_bias=True)
        if i not in mlp_only and (i + 1) % c["decoder_sparse_step"] == 0:
            moe.append(i)
            router(b, p + "mlp.gate", E, H)
            for e in range(E):
                b.ffn(p + "mlp.experts.%d" % e, H, F)
            b.ffn(p + "mlp.shared_expert", H, FS)
            b.linear(p + "mlp.shared_expert_gate", 1, H)
        else:
            dense.append(i)
            b.ffn(p + "mlp", H, FD)
    return c, moe, dense


def fam_qwen3_next(b, L, td):
    """qwen3_next (Qwen3-Next): Qwen2-MoE's MoE block (softmax top-k,
    renormalised here as in the released model, sigmoid-gated shared
    expert) under hybrid attention: Gated DeltaNet (`linear_attn.*`) on
    three layers of four, gated full attention (q_proj twice as wide) on the
    fourth; the importer must skip both."""
    H, F, FS, FD, E, K = 32, 24, 40, 64, 16, 4
    types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention"
             for i in range(L)]
    c = hf_config("Qwen3NextForCausalLM", "qwen3_next", td, hidden_size=H,
                  intermediate_size=FD, moe_intermediate_size=F,
                  shared_expert_intermediate_size=FS, num_hidden_layers=L,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  num_experts=E, num_experts_per_tok=K, norm_topk_prob=True,
                  decoder_sparse_step=1, mlp_only_layers=[], layer_types=types,
                  linear_num_value_heads=4, linear_num_key_heads=2,
                  linear_key_head_dim=8, linear_value_head_dim=8,
                  linear_conv_kernel_dim=4, partial_rotary_factor=0.25,
                  rms_norm_eps=1e-6, rope_theta=1e7, router_aux_loss_coef=0.001,
                  output_router_logits=False, bos_token_id=VOCAB - 2,
                  eos_token_id=VOCAB - 2)
    common_tensors(b, H, L)
    for i in range(L):
        p = "model.layers.%d." % i
        if types[i] == "full_attention":
            b.linear(p + "self_attn.q_proj", 2 * 4 * 8, H)
            b.linear(p + "self_attn.k_proj", 2 * 8, H)
            b.linear(p + "self_attn.v_proj", 2 * 8, H)
            b.linear(p + "self_attn.o_proj", H, 4 * 8)
            b.norm(p + "self_attn.q_norm", 8)
            b.norm(p + "self_attn.k_norm", 8)
        else:
            la = p + "linear_attn."
            b.normal(la + "dt_bias", [4], 0.1)
            b.normal(la + "A_log", [4], 0.1)
            b.normal(la + "conv1d.weight", [64, 1, 4], 0.5)
            b.linear(la + "in_proj_qkvz", 96, H)
            b.linear(la + "in_proj_ba", 8, H)
            b.norm(la + "norm", 8)
            b.linear(la + "out_proj", H, 32)
        router(b, p + "mlp.gate", E, H)
        for e in range(E):
            b.ffn(p + "mlp.experts.%d" % e, H, F)
        b.ffn(p + "mlp.shared_expert", H, FS)
        b.linear(p + "mlp.shared_expert_gate", 1, H)
    return c, list(range(L)), []


def fam_qwen3_moe(b, L, td):
    H, F, FD, E, K, hd = 48, 32, 96, 8, 2, 16
    step = 2 if L >= 2 else 1
    c = hf_config("Qwen3MoeForCausalLM", "qwen3_moe", td, hidden_size=H,
                  intermediate_size=FD, moe_intermediate_size=F,
                  num_hidden_layers=L, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=hd, num_experts=E,
                  num_experts_per_tok=K, norm_topk_prob=True,
                  decoder_sparse_step=step, mlp_only_layers=[],
                  attention_bias=False, rms_norm_eps=1e-6, rope_theta=1e6,
                  rope_scaling=None, router_aux_loss_coef=0.001,
                  output_router_logits=False, use_sliding_window=False,
                  sliding_window=None, max_window_layers=48,
                  bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1)
    common_tensors(b, H, L)
    moe, dense = [], []
    for i in range(L):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 2, hd, qk_norm="head")
        if (i + 1) % step == 0:
            moe.append(i)
            router(b, p + "mlp.gate", E, H)
            for e in range(E):
                b.ffn(p + "mlp.experts.%d" % e, H, F)
        else:
            dense.append(i)
            b.ffn(p + "mlp", H, FD)
    return c, moe, dense


def fam_deepseek(b, L, td, v3):
    if v3:
        H, F, FD, E, K, NS, G, TG = 64, 32, 96, 16, 4, 1, 4, 2
        extra = dict(q_lora_rank=24, scoring_func="sigmoid", topk_method="noaux_tc",
                     routed_scaling_factor=2.5, norm_topk_prob=True,
                     num_nextn_predict_layers=1, ep_size=1,
                     bos_token_id=0, eos_token_id=1)
    else:
        H, F, FD, E, K, NS, G, TG = 32, 24, 64, 8, 2, 2, 4, 2
        extra = dict(q_lora_rank=None, scoring_func="softmax",
                     topk_method="group_limited_greedy", routed_scaling_factor=1.5,
                     norm_topk_prob=False, bos_token_id=VOCAB - 2,
                     eos_token_id=VOCAB - 1)
    first_dense = 1 if L >= 2 else 0
    c = hf_config("DeepseekV3ForCausalLM" if v3 else "DeepseekV2ForCausalLM",
                  "deepseek_v3" if v3 else "deepseek_v2", td, hidden_size=H,
                  intermediate_size=FD, moe_intermediate_size=F,
                  num_hidden_layers=L, num_attention_heads=4,
                  num_key_value_heads=4, n_routed_experts=E, n_shared_experts=NS,
                  num_experts_per_tok=K, n_group=G, topk_group=TG,
                  first_k_dense_replace=first_dense, moe_layer_freq=1,
                  kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                  v_head_dim=8, aux_loss_alpha=0.001, seq_aux=True,
                  attention_bias=False, rms_norm_eps=1e-6, rope_theta=10000.0,
                  rope_scaling=None, pretraining_tp=1, **extra)
    common_tensors(b, H, L)
    moe, dense = [], []

    def moe_block(p):
        router(b, p + "mlp.gate", E, H)
        if v3:
            # Real checkpoints keep this bias in f32. Values of the order of
            # the sigmoid scores, so that it changes the selection.
            b.normal(p + "mlp.gate.e_score_correction_bias", [E], 0.1, dtype="F32")
        for e in range(E):
            b.ffn(p + "mlp.experts.%d" % e, H, F)
        b.ffn(p + "mlp.shared_experts", H, F * NS)

    for i in range(L):
        p = "model.layers.%d." % i
        attention_mla(b, p + "self_attn.", H, c)
        if i >= first_dense and i % c["moe_layer_freq"] == 0:
            moe.append(i)
            moe_block(p)
        else:
            dense.append(i)
            b.ffn(p + "mlp", H, FD)
    if v3:
        # The multi-token-prediction layer: index num_hidden_layers, a full
        # decoder layer plus enorm/hnorm/eh_proj/shared_head. Not a decoder
        # layer of the model: the importer must skip it.
        p = "model.layers.%d." % L
        b.norm(p + "input_layernorm", H)
        b.norm(p + "post_attention_layernorm", H)
        attention_mla(b, p + "self_attn.", H, c)
        moe_block(p)
        b.norm(p + "enorm", H)
        b.norm(p + "hnorm", H)
        b.linear(p + "eh_proj", H, 2 * H)
        b.norm(p + "shared_head.norm", H)
        b.linear(p + "shared_head.head", VOCAB, H)
    return c, moe, dense


def fam_olmoe(b, L, td):
    H, F, E, K = 32, 48, 16, 4
    c = hf_config("OlmoeForCausalLM", "olmoe", td, hidden_size=H,
                  intermediate_size=F, num_hidden_layers=L,
                  num_attention_heads=4, num_key_value_heads=4, num_experts=E,
                  num_experts_per_tok=K, norm_topk_prob=False, clip_qkv=None,
                  attention_bias=False, rms_norm_eps=1e-5, rope_theta=10000.0,
                  rope_scaling=None, router_aux_loss_coef=0.01,
                  output_router_logits=False, pad_token_id=1,
                  eos_token_id=VOCAB - 1)
    common_tensors(b, H, L)
    for i in range(L):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 4, 8, qk_norm="full")
        router(b, p + "mlp.gate", E, H)
        for e in range(E):
            b.ffn(p + "mlp.experts.%d" % e, H, F)
    return c, list(range(L)), []


def fam_gpt_oss(b, L, td):
    H, F, E, K, hd = 32, 32, 4, 2, 8
    c = hf_config("GptOssForCausalLM", "gpt_oss", td, hidden_size=H,
                  intermediate_size=F, num_hidden_layers=L,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=hd,
                  num_local_experts=E, num_experts_per_tok=K,
                  experts_per_token=K, swiglu_limit=7.0, attention_bias=True,
                  layer_types=["sliding_attention" if i % 2 == 0 else "full_attention"
                               for i in range(L)],
                  sliding_window=128, initial_context_length=4096,
                  rms_norm_eps=1e-5, rope_theta=150000.0,
                  rope_scaling={"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                                "original_max_position_embeddings": 4096,
                                "rope_type": "yarn", "truncate": False},
                  router_aux_loss_coef=0.9, output_router_logits=False,
                  pad_token_id=VOCAB - 1, eos_token_id=VOCAB - 2)
    common_tensors(b, H, L)
    for i in range(L):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 2, hd, qkv_bias=True,
                      o_bias=True, sinks=True)
        router(b, p + "mlp.router", E, H)
        b.normal(p + "mlp.router.bias", [E], 0.3)
        # transformers layout: x @ gate_up_proj[e] ([H, 2F], gate = even
        # columns, up = odd) and h @ down_proj[e] ([F, H]).
        b.normal(p + "mlp.experts.gate_up_proj", [E, H, 2 * F], 1.0 / math.sqrt(H))
        b.normal(p + "mlp.experts.down_proj", [E, F, H], 1.0 / math.sqrt(F))
        b.normal(p + "mlp.experts.down_proj_bias", [E, H], 0.1)
        name = p + "mlp.experts.gate_up_proj_bias"
        b.normal(name, [E, 2 * F], 0.3)
        # Per expert, three columns pushed past swiglu_limit (7) so that both
        # clamps matter, paired so that the products stay small: gate 8 with
        # up -1 (up + 1 ~ 0); up -8 and up 8 with gate -3 (glu ~ -0.02).
        vals = b.tensors[-1].vals
        for e in range(E):
            o = e * 2 * F
            for f, (g, u) in enumerate(((8.0, -1.0), (-3.0, -8.0), (-3.0, 8.0))):
                vals[o + 2 * f], vals[o + 2 * f + 1] = g, u
    return c, list(range(L)), []


def fam_granitemoe(b, L, td, shared):
    """granitemoe, and granitemoeshared (`shared`) with its ungated shared
    MLP beside the routed block."""
    H, F, FS, E, K = 32, 24, 40, 8, 2
    kw = {}
    if shared:
        kw["shared_intermediate_size"] = FS
    c = hf_config("GraniteMoeSharedForCausalLM" if shared else "GraniteMoeForCausalLM",
                  "granitemoeshared" if shared else "granitemoe", td, hidden_size=H,
                  intermediate_size=F, num_hidden_layers=L,
                  num_attention_heads=4, num_key_value_heads=2,
                  num_local_experts=E, num_experts_per_tok=K, rms_norm_eps=1e-6,
                  rope_theta=10000.0, rope_scaling=None, attention_bias=False,
                  embedding_multiplier=12.0, logits_scaling=6.0,
                  residual_multiplier=0.22, attention_multiplier=0.015625,
                  router_aux_loss_coef=0.0, output_router_logits=False,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0, **kw)
    common_tensors(b, H, L)
    for i in range(L):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 2, 8)
        router(b, p + "block_sparse_moe.router.layer", E, H)
        # GraniteMoeParallelExperts: [E, out, in]; input_linear's out is
        # gate (first F rows) then up.
        b.normal(p + "block_sparse_moe.input_linear.weight", [E, 2 * F, H],
                 1.0 / math.sqrt(H))
        b.normal(p + "block_sparse_moe.output_linear.weight", [E, H, F],
                 1.0 / math.sqrt(F))
        if shared:
            b.linear(p + "shared_mlp.input_linear", 2 * FS, H)
            b.linear(p + "shared_mlp.output_linear", H, FS)
    return c, list(range(L)), []


def fam_jetmoe(b, L, td):
    """jetmoe (JetMoE-8B, JetMoeForCausalLM): every layer's MLP is Granite's
    block under `mlp.` (router.layer [E, H]; JetMoeParallelExperts
    input_linear [E, 2F, H], gate = the first F rows, then up; output_linear
    [E, H, F]) plus `mlp.bias` [H], added once after the mixture (random,
    non-zero, so that a reader that drops it, or adds it once per picked
    expert, is seen; per expert weighted by the gate is the same sum, the k
    weights summing to 1). The attention is a mixture too (MoA: `self_attention.experts.`
    router, input_linear [E, kvh * kv_channels, H], output_linear and bias,
    beside `self_attention.kv_proj` [2 kvh kv_channels, H]), outside the MLP
    block: the importer must skip it. Tied embeddings (JetMoeConfig's
    default): no lm_head. num_attention_heads is derived (kvh * K) and
    written as save_pretrained writes it."""
    H, F, E, K, kvh, kvc = 32, 48, 8, 2, 2, 8
    c = {"architectures": ["JetMoeForCausalLM"], "model_type": "jetmoe",
         "torch_dtype": td, "transformers_version": "4.57.0", "vocab_size": VOCAB,
         "hidden_size": H, "num_hidden_layers": L, "intermediate_size": F,
         "num_local_experts": E, "num_experts_per_tok": K,
         "activation_function": "silu", "num_key_value_heads": kvh,
         "kv_channels": kvc, "num_attention_heads": kvh * K,
         "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
         "rope_theta": 10000.0, "aux_loss_coef": 0.01, "output_router_logits": False,
         "initializer_range": 0.01, "attention_dropout": 0.0, "use_cache": True,
         "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": True}
    b.normal("model.embed_tokens.weight", [VOCAB, H], 1.0)
    b.norm("model.norm", H)
    for i in range(L):
        p = "model.layers.%d." % i
        b.norm(p + "input_layernorm", H)
        b.norm(p + "post_attention_layernorm", H)
        a = p + "self_attention."
        router(b, a + "experts.router.layer", E, H)
        b.normal(a + "experts.input_linear.weight", [E, kvh * kvc, H], 1.0 / math.sqrt(H))
        b.normal(a + "experts.output_linear.weight", [E, H, kvh * kvc],
                 1.0 / math.sqrt(kvh * kvc))
        b.normal(a + "experts.bias", [H], 0.1)
        b.linear(a + "kv_proj", 2 * kvh * kvc, H)
        router(b, p + "mlp.router.layer", E, H)
        b.normal(p + "mlp.input_linear.weight", [E, 2 * F, H], 1.0 / math.sqrt(H))
        b.normal(p + "mlp.output_linear.weight", [E, H, F], 1.0 / math.sqrt(F))
        b.normal(p + "mlp.bias", [H], 0.3)
    return dict(sorted(c.items())), list(range(L)), []


def fam_dbrx(b, L, td):
    """dbrx: the blocks are `transformer.blocks.{i}.`, the experts three
    [E*F, H] tensors (DbrxExpertGLU: gate w1 and up v1 viewed [E, F, H],
    down w2 viewed [E, F, H] and applied as h @ w2[e])."""
    H, F, E, K, nh, kvh = 32, 24, 8, 2, 4, 2
    c = {"architectures": ["DbrxForCausalLM"], "model_type": "dbrx",
         "torch_dtype": td, "transformers_version": "4.57.0",
         "d_model": H, "n_layers": L, "n_heads": nh, "max_seq_len": 4096,
         "vocab_size": VOCAB, "resid_pdrop": 0.0, "emb_pdrop": 0.0,
         "initializer_range": 0.02, "use_cache": True, "tie_word_embeddings": False,
         "output_router_logits": False,
         "attn_config": {"attn_pdrop": 0.0, "clip_qkv": 8.0, "kv_n_heads": kvh,
                         "rope_theta": 500000.0},
         "ffn_config": {"ffn_act_fn": {"name": "silu"}, "ffn_hidden_size": F,
                        "moe_jitter_eps": 0.0, "moe_loss_weight": 0.05,
                        "moe_normalize_expert_weights": 1.0, "moe_num_experts": E,
                        "moe_top_k": K}}
    b.normal("transformer.wte.weight", [VOCAB, H], 1.0)
    b.normal("transformer.norm_f.weight", [H], 0.1, mean=1.0)
    b.linear("lm_head", VOCAB, H)
    hd = H // nh
    for i in range(L):
        p = "transformer.blocks.%d." % i
        b.normal(p + "norm_attn_norm.norm_1.weight", [H], 0.1, mean=1.0)
        b.normal(p + "norm_attn_norm.norm_2.weight", [H], 0.1, mean=1.0)
        b.linear(p + "norm_attn_norm.attn.Wqkv", (nh + 2 * kvh) * hd, H)
        b.linear(p + "norm_attn_norm.attn.out_proj", H, nh * hd)
        router(b, p + "ffn.router.layer", E, H)
        b.normal(p + "ffn.experts.mlp.w1", [E * F, H], 1.0 / math.sqrt(H))
        b.normal(p + "ffn.experts.mlp.v1", [E * F, H], 1.0 / math.sqrt(H))
        b.normal(p + "ffn.experts.mlp.w2", [E * F, H], 1.0 / math.sqrt(F))
    return dict(sorted(c.items())), list(range(L)), []


def fam_phimoe(b, L, td):
    """phimoe (Phi-3.5-MoE): Mixtral's names, LayerNorms with biases,
    attention and lm_head biases. router_jitter_noise is 0.1, not Phi's
    0.01, so that sparsemixer's mask keeps more than the winner for these
    random logits (std ~1.5) and the test sees it."""
    H, F, E = 32, 48, 8
    c = hf_config("PhiMoEForCausalLM", "phimoe", td, hidden_size=H,
                  intermediate_size=F, num_hidden_layers=L,
                  num_attention_heads=4, num_key_value_heads=2,
                  num_local_experts=E, num_experts_per_tok=2, rms_norm_eps=1e-5,
                  rope_theta=1e6, router_aux_loss_coef=0.0,
                  router_jitter_noise=0.1, input_jitter_noise=0.01,
                  attention_bias=True, lm_head_bias=True,
                  output_router_logits=False, sliding_window=None,
                  bos_token_id=1, eos_token_id=2)
    b.normal("model.embed_tokens.weight", [VOCAB, H], 1.0)
    b.linear("lm_head", VOCAB, H, bias=True)
    for n in ["model.norm"] + ["model.layers.%d.%s" % (i, k) for i in range(L)
                               for k in ("input_layernorm", "post_attention_layernorm")]:
        b.norm(n, H)
        b.normal(n + ".bias", [H], 0.1)
    for i in range(L):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 2, 8, qkv_bias=True, o_bias=True)
        router(b, p + "block_sparse_moe.gate", E, H)
        for e in range(E):
            b.ffn(p + "block_sparse_moe.experts.%d" % e, H, F, ("w1", "w3", "w2"))
    return c, list(range(L)), []


def fam_glm4_moe(b, L, td):
    """glm4_moe (GLM-4.5): DeepSeek-V3's MoE block and names under plain
    attention (q/k/v biases, per-head q/k norms); dense layers before
    first_k_dense_replace; an MTP layer at index num_hidden_layers that the
    importer must skip. n_group 4 (GLM-4.5 itself has 1) so that the group
    selection is exercised."""
    H, F, FD, E, K, NS, G, TG = 32, 24, 64, 16, 4, 1, 4, 2
    first_dense = 1 if L >= 2 else 0
    c = hf_config("Glm4MoeForCausalLM", "glm4_moe", td, hidden_size=H,
                  intermediate_size=FD, moe_intermediate_size=F, num_hidden_layers=L,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  n_routed_experts=E, n_shared_experts=NS, num_experts_per_tok=K,
                  n_group=G, topk_group=TG, first_k_dense_replace=first_dense,
                  norm_topk_prob=True, routed_scaling_factor=2.5,
                  num_nextn_predict_layers=1, use_qk_norm=True, attention_bias=True,
                  partial_rotary_factor=0.5, rms_norm_eps=1e-5, rope_theta=1e6,
                  bos_token_id=None, eos_token_id=[VOCAB - 2, VOCAB - 1],
                  pad_token_id=VOCAB - 1)
    common_tensors(b, H, L)
    moe, dense = [], []

    def moe_block(p):
        router(b, p + "mlp.gate", E, H)
        b.normal(p + "mlp.gate.e_score_correction_bias", [E], 0.1, dtype="F32")
        for e in range(E):
            b.ffn(p + "mlp.experts.%d" % e, H, F)
        b.ffn(p + "mlp.shared_experts", H, F * NS)

    for i in range(L + 1):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 2, 8, qkv_bias=True, qk_norm="head")
        if i == L:      # the MTP layer
            b.norm(p + "input_layernorm", H)
            b.norm(p + "post_attention_layernorm", H)
            moe_block(p)
            b.norm(p + "enorm", H)
            b.norm(p + "hnorm", H)
            b.linear(p + "eh_proj", H, 2 * H)
            b.norm(p + "shared_head.norm", H)
        elif i >= first_dense:
            moe.append(i)
            moe_block(p)
        else:
            dense.append(i)
            b.ffn(p + "mlp", H, FD)
    return c, moe, dense


def fam_minimax_m2(b, L, td):
    """minimax_m2 (MiniMax-M2): Mixtral's names plus
    `block_sparse_moe.e_score_correction_bias`, q/k norms over the whole
    projections."""
    H, F, E, K = 32, 40, 16, 4
    c = hf_config("MiniMaxM2ForCausalLM", "minimax_m2", td, hidden_size=H,
                  intermediate_size=F, num_hidden_layers=L, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, num_local_experts=E,
                  num_experts_per_tok=K, rms_norm_eps=1e-6, rope_theta=5e6,
                  router_aux_loss_coef=0.001, router_jitter_noise=0.0,
                  output_router_logits=False, bos_token_id=1, eos_token_id=2)
    common_tensors(b, H, L)
    for i in range(L):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 2, 8, qk_norm="full")
        router(b, p + "block_sparse_moe.gate", E, H)
        b.normal(p + "block_sparse_moe.e_score_correction_bias", [E], 0.1, dtype="F32")
        for e in range(E):
            b.ffn(p + "block_sparse_moe.experts.%d" % e, H, F, ("w1", "w3", "w2"))
    return c, list(range(L)), []


def fam_llama4(b, L, td):
    """llama4 (the hub's Llama-4 Scout/Maverick checkpoints,
    Llama4ForConditionalGeneration): llama4_text's model with its config
    nested under `text_config` (without its own torch_dtype: the importer
    then takes the top level's) and its tensors under `language_model.`,
    beside a vision tower and projector that the importer must ignore."""
    text, moe, dense = fam_llama4_text(b, L, td)
    for t in b.tensors:
        t.name = "language_model." + t.name
    b.normal("vision_model.patch_embedding.linear.weight", [16, 48], 0.1)
    b.normal("multi_modal_projector.linear_1.weight", [text["hidden_size"], 16], 0.1)
    text = {k: v for k, v in text.items()
            if k not in ("architectures", "torch_dtype", "transformers_version")}
    c = {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4",
         "torch_dtype": td, "transformers_version": "4.57.0",
         "image_token_index": 60, "boi_token_index": 61, "eoi_token_index": 62,
         "tie_word_embeddings": False, "text_config": text,
         "vision_config": {"model_type": "llama4_vision_model", "hidden_size": 16,
                           "num_hidden_layers": 0, "patch_size": 4, "image_size": 16,
                           "num_channels": 3, "projector_input_dim": 16,
                           "projector_output_dim": text["hidden_size"]}}
    return c, moe, dense


def fam_llama4_text(b, L, td):
    """llama4_text (Llama-4 Scout/Maverick text model): the block is
    `feed_forward.`: router, stacked experts gate_up_proj [E, H, 2F] (x @ W,
    gate columns first) and down_proj [E, F, H], and an ungated shared
    expert of F = intermediate_size; top-k of the raw logits, sigmoid of the
    picked logit scaling the expert's input. With 2 or more layers
    interleave_moe_layer_step=2 (Maverick's): the odd layers are MoE, the
    even ones dense of F = intermediate_size_mlp. Attention has no q/k norm
    tensors (Llama 4's qk_norm is weightless)."""
    H, F, FD, E, K = 32, 48, 64, 8, 1
    step = 2 if L >= 2 else 1
    moe = list(range(step - 1, L, step))     # Llama4TextConfig's rule
    c = hf_config("Llama4ForCausalLM", "llama4_text", td, hidden_size=H,
                  intermediate_size=F, intermediate_size_mlp=FD, num_hidden_layers=L,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  num_local_experts=E, num_experts_per_tok=K,
                  interleave_moe_layer_step=step, moe_layers=moe, use_qk_norm=True,
                  attention_bias=False, attention_chunk_size=8192,
                  attn_temperature_tuning=True, floor_scale=8192, attn_scale=0.1,
                  no_rope_layer_interval=4, rms_norm_eps=1e-5, rope_theta=500000.0,
                  router_aux_loss_coef=0.001, router_jitter_noise=0.0,
                  output_router_logits=False, bos_token_id=1, eos_token_id=2,
                  pad_token_id=VOCAB - 1)
    common_tensors(b, H, L)
    dense = []
    for i in range(L):
        p = "model.layers.%d." % i
        attention_std(b, p + "self_attn.", H, 4, 2, 8)
        if i in moe:
            router(b, p + "feed_forward.router", E, H)
            b.normal(p + "feed_forward.experts.gate_up_proj", [E, H, 2 * F],
                     1.0 / math.sqrt(H))
            b.normal(p + "feed_forward.experts.down_proj", [E, F, H], 1.0 / math.sqrt(F))
            b.ffn(p + "feed_forward.shared_expert", H, F)
        else:
            dense.append(i)
            b.ffn(p + "feed_forward", H, FD)
    return c, moe, dense


def switch_sparse(n, ns):
    """SwitchTransformersStack's sparse blocks of a stack of n blocks with
    num_sparse_*_layers = ns (step n // ns, or n when ns <= 0; block i sparse
    iff step > 0 and (i % step == 1 or step == 1))."""
    step = n // ns if ns > 0 else n
    return [i for i in range(n) if step > 0 and (i % step == 1 or step == 1)]


def fam_switch_transformers(b, L, td, router_bias=False):
    """switch_transformers (Switch Transformers, T5-like encoder-decoder):
    L encoder blocks and max(1, L - 1) decoder blocks, numbered as the
    importer does (encoder block i is layer i, decoder block i layer L + i).
    num_sparse_*_layers max(1, n // 2): with L 3, encoder blocks [1] and
    decoder block [1] sparse (layers 1 and 4), the others dense (wi/wo,
    relu). Sparse blocks: `router.classifier` (+ bias with router_bias) and
    `experts.expert_{e}.{wi,wo}`; E 8 and expert_capacity 4, so that 32 or
    more tokens of one call drop some. Attention (q/k/v/o, relative
    attention bias in block 0), T5 layer norms and the tied `shared`
    embedding are written as save_pretrained writes them
    (SwitchTransformersForConditionalGeneration, tie_word_embeddings: no
    lm_head)."""
    H, F, E, C, nh, dkv, buckets = 32, 48, 8, 4, 4, 8, 32
    LD = max(1, L - 1)
    nse, nsd = max(1, L // 2), max(1, LD // 2)
    enc, dec = switch_sparse(L, nse), switch_sparse(LD, nsd)
    c = {"architectures": ["SwitchTransformersForConditionalGeneration"],
         "model_type": "switch_transformers", "torch_dtype": td,
         "transformers_version": "4.57.0", "vocab_size": VOCAB, "d_model": H,
         "d_kv": dkv, "d_ff": F, "num_heads": nh, "num_layers": L,
         "num_decoder_layers": LD, "num_sparse_encoder_layers": nse,
         "num_sparse_decoder_layers": nsd, "num_experts": E, "expert_capacity": C,
         "router_bias": router_bias, "router_jitter_noise": 0.01,
         "router_dtype": "float32", "router_ignore_padding_tokens": False,
         # save_pretrained writes the steps SwitchTransformersConfig derives
         # (and recomputes on loading).
         "encoder_sparse_step": L // nse, "decoder_sparse_step": LD // nsd,
         "relative_attention_num_buckets": buckets,
         "relative_attention_max_distance": 128, "dropout_rate": 0.1,
         "layer_norm_epsilon": 1e-6, "router_z_loss_coef": 0.001,
         "router_aux_loss_coef": 0.001, "initializer_factor": 1.0,
         "dense_act_fn": "relu", "is_encoder_decoder": True, "add_router_probs": False,
         "use_cache": True, "pad_token_id": 0, "eos_token_id": 1,
         "decoder_start_token_id": 0, "tie_word_embeddings": True}
    b.normal("shared.weight", [VOCAB, H], 1.0)
    moe, dense = [], []
    for stack, n, sparse, base in (("encoder", L, enc, 0), ("decoder", LD, dec, L)):
        for i in range(n):
            p = "%s.block.%d.layer." % (stack, i)
            attns = ["0.SelfAttention"] + (["1.EncDecAttention"] if stack == "decoder" else [])
            for a in attns:
                for w in ("q", "k", "v"):
                    b.linear(p + a + "." + w, nh * dkv, H)
                b.linear(p + a + ".o", H, nh * dkv)
                b.norm(p + a.split(".")[0] + ".layer_norm", H)
            if i == 0:
                b.normal(p + "0.SelfAttention.relative_attention_bias.weight",
                         [buckets, nh], 0.5)
            ff = p + ("2." if stack == "decoder" else "1.")
            b.norm(ff + "layer_norm", H)
            if i in sparse:
                moe.append(base + i)
                router(b, ff + "mlp.router.classifier", E, H)
                if router_bias:
                    b.normal(ff + "mlp.router.classifier.bias", [E], 0.3)
                for e in range(E):
                    b.linear(ff + "mlp.experts.expert_%d.wi" % e, F, H)
                    b.linear(ff + "mlp.experts.expert_%d.wo" % e, H, F)
            else:
                dense.append(base + i)
                b.linear(ff + "mlp.wi", F, H)
                b.linear(ff + "mlp.wo", H, F)
        b.norm(stack + ".final_layer_norm", H)
    return dict(sorted(c.items())), moe, dense


def fam_moe_mlir(b, L, td, kind):
    H = 32
    c = {"model_type": "moe_mlir", "architectures": ["MoeMlirForCausalLM"],
         "hidden_size": H, "num_hidden_layers": L, "torch_dtype": td,
         "rms_norm_eps": 1e-6, "hidden_act": "silu", "vocab_size": VOCAB}
    if kind == "projected_router":
        E, F, m, hp, FS = 4, 48, 8, 6, 32
        c["moe_layer"] = {"kind": kind, "num_experts": E, "intermediate_size": F,
                          "domain_dim": m, "proj_hidden": hp,
                          "shared_expert_intermediate_size": FS}
    elif kind == "hierarchical_lora":
        E, G, r = 8, 2, 4
        c["moe_layer"] = {"kind": kind, "num_experts": E, "num_groups": G,
                          "num_experts_per_tok": E, "lora_rank": r,
                          "lora_alpha": 8.0, "tau_group": 0.5, "tau_expert": 2.0}
    elif kind == "cartesian":
        c["moe_layer"] = {"kind": kind, "norm": True,
                          "first": {"num_experts": 4, "num_experts_per_tok": 2,
                                    "intermediate_size": 32},
                          "second": {"num_experts": 6, "num_experts_per_tok": 2,
                                     "intermediate_size": 24}}
    elif kind == "zero_computation":
        E, F, K = 4, 48, 2
        c["moe_layer"] = {"kind": kind, "num_experts": E, "intermediate_size": F,
                          "num_experts_per_tok": K, "zero_experts": 1,
                          "copy_experts": 1, "constant_experts": 2}
    else:
        raise SystemExit("unknown --kind %s (one of %s)" % (kind, ", ".join(KINDS)))
    b.normal("model.embed_tokens.weight", [VOCAB, H], 1.0)
    b.norm("model.norm", H)
    ml = c["moe_layer"]
    for i in range(L):
        p = "model.layers.%d." % i
        b.norm(p + "input_layernorm", H)
        b.norm(p + "post_attention_layernorm", H)
        p += "mlp."
        if kind == "projected_router":
            b.normal(p + "router.domain_embeddings", [E, m], 1.0)
            b.linear(p + "router.proj.w1", 2 * hp, m)
            # W_r = W2 . swiglu(W1 d): ~0.5-sized hidden; gain so logits ~O(1.5).
            b.linear(p + "router.proj.w2", H, hp, gain=3.0 / math.sqrt(H))
            for e in range(E):
                b.ffn(p + "experts.%d" % e, H, F)
            b.ffn(p + "shared_expert", H, FS)
        elif kind == "hierarchical_lora":
            router(b, p + "group_router", G, H)
            router(b, p + "router", E, H)
            b.linear(p + "base", H, H)
            for e in range(E):
                b.linear(p + "experts.%d.lora_A" % e, r, H)
                b.linear(p + "experts.%d.lora_B" % e, H, r)
        elif kind == "cartesian":
            for part in ("first", "second"):
                pe = ml[part]
                router(b, p + part + ".gate", pe["num_experts"], H)
                for e in range(pe["num_experts"]):
                    b.ffn(p + part + ".experts.%d" % e, H, pe["intermediate_size"])
            b.norm(p + "norm", H)
        else:
            ET = E + 1 + 1 + 2
            router(b, p + "gate", ET, H)
            for e in range(E):
                b.ffn(p + "experts.%d" % e, H, F)
            for cidx in range(2):
                b.linear(p + "constant_experts.%d.router" % cidx, 2, H)
                b.normal(p + "constant_experts.%d.vector" % cidx, [H], 1.0)
    return c, list(range(L)), []


def build(family, layers, dtype, seed, kind, fused, router_bias=False):
    st, td = DTYPES[dtype]
    b = Builder(seed, st)
    # Each family function fills b and returns (config, moe, dense).
    fams = {"mixtral": fam_mixtral, "qwen2_moe": fam_qwen2_moe,
            "qwen3_moe": fam_qwen3_moe, "olmoe": fam_olmoe, "gpt_oss": fam_gpt_oss,
            "dbrx": fam_dbrx, "phimoe": fam_phimoe, "glm4_moe": fam_glm4_moe,
            "qwen3_next": fam_qwen3_next, "minimax_m2": fam_minimax_m2,
            "llama4_text": fam_llama4_text, "llama4": fam_llama4,
            "jetmoe": fam_jetmoe,
            "deepseek_v2": lambda b, L, td: fam_deepseek(b, L, td, False),
            "deepseek_v3": lambda b, L, td: fam_deepseek(b, L, td, True),
            "granitemoe": lambda b, L, td: fam_granitemoe(b, L, td, False),
            "granitemoeshared": lambda b, L, td: fam_granitemoe(b, L, td, True),
            "switch_transformers": lambda b, L, td: fam_switch_transformers(b, L, td,
                                                                            router_bias),
            "moe_mlir": lambda b, L, td: fam_moe_mlir(b, L, td, kind)}
    if router_bias and family != "switch_transformers":
        raise SystemExit("--router-bias is for --family switch_transformers")
    if family not in fams:
        raise SystemExit("unknown --family %s (one of %s, all)" % (family, ", ".join(FAMILIES)))
    r = fams[family](b, layers, td)
    config, moe, dense = r
    tensors = {t.name: t for t in b.tensors}
    if fused:
        if family in NOT_FUSABLE:
            raise SystemExit("--experts fused: %s has no per-expert tensors to fuse" % family)
        tensors = fuse_experts(tensors, family)
    return config, tensors, moe, dense


def fuse_experts(tensors, family):
    """transformers v5 save_pretrained(save_original_format=False) layout
    (granitemoe: its stacked experts and router renamed, same layouts)."""
    if family in ("granitemoe", "granitemoeshared"):
        names = {"block_sparse_moe.router.layer.weight": "block_sparse_moe.router.weight",
                 "block_sparse_moe.input_linear.weight": "block_sparse_moe.experts.gate_up_proj",
                 "block_sparse_moe.output_linear.weight": "block_sparse_moe.experts.down_proj"}
        out = {}
        for n, t in tensors.items():
            for old, new in names.items():
                if n.endswith("." + old):
                    n = n[:-len(old)] + new
            t.name = n
            out[n] = t
        return out
    out, groups = {}, {}
    pat = re.compile(r"^(.*)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
    for name, t in tensors.items():
        m = pat.match(name)
        if m:
            groups.setdefault(m.group(1), {})[(int(m.group(2)), m.group(3))] = t
        else:
            out[name] = t
    for prefix, g in groups.items():
        E = 1 + max(e for e, _ in g)
        gate_n, up_n, down_n = (("w1", "w3", "w2") if family in ("mixtral", "phimoe",
                                                                 "minimax_m2")
                                else ("gate_proj", "up_proj", "down_proj"))
        F, H = g[(0, gate_n)].shape
        gu, dn = [], []
        for e in range(E):
            gu += g[(e, gate_n)].vals + g[(e, up_n)].vals
            dn += g[(e, down_n)].vals
        dt = g[(0, gate_n)].dtype
        out[prefix + ".experts.gate_up_proj"] = Tensor(prefix + ".experts.gate_up_proj",
                                                       [E, 2 * F, H], dt, gu)
        out[prefix + ".experts.down_proj"] = Tensor(prefix + ".experts.down_proj",
                                                    [E, H, F], dt, dn)
    if family in ("mixtral", "phimoe", "minimax_m2"):
        out = {n.replace(".block_sparse_moe.", ".mlp."): t for n, t in out.items()}
        if family == "phimoe":   # conversion_mapping.py renames the gate too
            out = {n.replace(".mlp.gate.weight", ".mlp.router.weight"): t
                   for n, t in out.items()}
        for n, t in out.items():
            t.name = n
    return out


# ---------------------------------------------------------------------------
# Corruptions
# ---------------------------------------------------------------------------

VICTIM_SUFFIXES = ["second.experts.0.down_proj.weight", ".experts.0.w2.weight",
                   ".experts.0.down_proj.weight", ".experts.0.lora_B.weight",
                   ".experts.down_proj", ".block_sparse_moe.output_linear.weight",
                   ".ffn.experts.mlp.w2", ".experts.expert_0.wo.weight",
                   ".mlp.output_linear.weight"]


def victim_name(tensors, first_moe, config=None):
    if config is not None and config.get("model_type") == "switch_transformers":
        # Layers number the encoder blocks, then the decoder blocks.
        L = config["num_layers"]
        prefix = ("encoder.block.%d.layer.1.mlp." % first_moe if first_moe < L
                  else "decoder.block.%d.layer.2.mlp." % (first_moe - L))
        name = prefix + "experts.expert_0.wo.weight"
        if name not in tensors:
            raise SystemExit("internal: no victim tensor in layer %d" % first_moe)
        return name
    roots = ("transformer.blocks.", "language_model.model.layers.", "model.layers.")
    root = next(r for r in roots if any(n.startswith(r) for n in tensors))
    prefix = "%s%d." % (root, first_moe)
    for suf in VICTIM_SUFFIXES:
        for n in sorted(tensors, key=natural_key):
            if n.startswith(prefix) and n.endswith(suf):
                return n
    raise SystemExit("internal: no victim tensor in layer %d" % first_moe)


def expert_count_path(family, config):
    """(dict, key) of the key holding the number of routed experts."""
    if family == "dbrx":
        return config["ffn_config"], "moe_num_experts"
    if family == "llama4":
        return config["text_config"], "num_local_experts"
    if family == "moe_mlir":
        ml = config["moe_layer"]
        return (ml["first"], "num_experts") if ml["kind"] == "cartesian" else (ml, "num_experts")
    key = {"mixtral": "num_local_experts", "gpt_oss": "num_local_experts",
           "phimoe": "num_local_experts", "minimax_m2": "num_local_experts",
           "llama4_text": "num_local_experts",
           "glm4_moe": "n_routed_experts",
           "granitemoe": "num_local_experts", "granitemoeshared": "num_local_experts",
           "jetmoe": "num_local_experts",
           "deepseek_v2": "n_routed_experts", "deepseek_v3": "n_routed_experts"}.get(
               family, "num_experts")
    return config, key


def quantize(family, config, tensors):
    if family == "gpt_oss":
        config["quantization_config"] = {
            "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                       "model.embed_tokens", "lm_head"],
            "quant_method": "mxfp4"}
        for name in [n for n in tensors if n.endswith((".experts.gate_up_proj", ".experts.down_proj"))]:
            t = tensors.pop(name)
            E, a, bdim = t.shape            # transformers [E, in, out]
            out_f, in_f = bdim, a           # the checkpoint stores [E, out, in/32, 16]
            r = random.Random(name)
            blocks = [r.randrange(256) for _ in range(E * out_f * (in_f // 32) * 16)]
            scales = [127 + r.randrange(-2, 3) for _ in range(E * out_f * (in_f // 32))]
            tensors[name + "_blocks"] = Tensor(name + "_blocks", [E, out_f, in_f // 32, 16], "U8", blocks)
            tensors[name + "_scales"] = Tensor(name + "_scales", [E, out_f, in_f // 32], "U8", scales)
        return
    config["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3",
                                     "quant_method": "fp8", "weight_block_size": [128, 128]}
    skip = re.compile(r"(embed_tokens|lm_head|norm|layernorm|\.gate\.weight$|router|"
                      r"shared_expert_gate|domain_embeddings|vector$|bias$)")
    for name in list(tensors):
        t = tensors[name]
        if len(t.shape) != 2 or not name.endswith(".weight") or skip.search(name):
            continue
        t.dtype = "F8_E4M3"
        so = [(t.shape[0] + 127) // 128, (t.shape[1] + 127) // 128]
        sname = name[:-len(".weight")] + ".weight_scale_inv"
        tensors[sname] = Tensor(sname, so, "F32", [1.0] * numel(so))


def corrupt_config(mode, family, config, moe):
    if mode == "unknown-model-type":
        config["model_type"] = "unknown_moe_family"
    elif mode == "missing-key":
        d, k = expert_count_path(family, config)
        del d[k]
    elif mode == "contradictory-key":
        d, k = expert_count_path(family, config)
        if "num_experts_per_tok" in d:
            d["num_experts_per_tok"] = d[k] + 1
        elif "moe_top_k" in d:
            d["moe_top_k"] = d[k] + 1
        else:
            d[k] += 1


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def write_file(path, tensors, mode=None, victim=None):
    """Writes one .safetensors file; `mode` corrupts the victim's entry."""
    order = sorted(tensors, key=lambda t: natural_key(t.name))
    if mode in ("truncated", "beyond") and victim is not None:
        order = [t for t in order if t.name != victim] + [t for t in order if t.name == victim]
    header, blobs, off, prev = {"__metadata__": {"format": "pt"}}, [], 0, None
    for t in order:
        blob = encode(t.dtype, t.vals)
        begin = off
        if mode == "overlap" and t.name == victim and prev is not None:
            begin = prev[0] + min(4, prev[1] - prev[0])
            header[t.name] = {"dtype": t.dtype, "shape": t.shape,
                              "data_offsets": [begin, begin + len(blob)]}
        else:
            header[t.name] = {"dtype": t.dtype, "shape": t.shape,
                              "data_offsets": [off, off + len(blob)]}
        if mode == "beyond" and t.name == victim:
            header[t.name]["data_offsets"] = [off + 16, off + 16 + len(blob)]
        prev = (off, off + len(blob))
        blobs.append(blob)
        off += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    data = struct.pack("<Q", len(text)) + text + b"".join(blobs)
    if mode == "truncated" and victim is not None:
        data = data[:-10]
    with open(path, "wb") as f:
        f.write(data)
    return off


def write_model(out, family, config, tensors, moe, sharded, corrupt):
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        if old.endswith(".safetensors") or old == "model.safetensors.index.json":
            os.remove(os.path.join(out, old))
    victim = victim_name(tensors, moe[0], config) if moe and corrupt else None
    if corrupt == "missing-tensor":
        del tensors[victim]
    elif corrupt == "wrong-shape":
        t = tensors[victim]
        t.shape[-1] += 1
        r = random.Random(victim)
        t.vals = [0.1 * r.gauss(0, 1) for _ in range(numel(t.shape))]
    elif corrupt == "wrong-dtype":
        tensors[victim].dtype = "I32"
    elif corrupt == "quantized":
        quantize(family, config, tensors)
    elif corrupt == "extra-tensor":
        t = tensors[victim]
        name = (victim[:-len(".weight")] + ".bias" if victim.endswith(".weight")
                else victim + "_extra_bias")
        rows = t.shape[-2] if len(t.shape) > 1 else 1
        r = random.Random(name)
        tensors[name] = Tensor(name, [rows], t.dtype,
                               [0.1 * r.gauss(0, 1) for _ in range(rows)])
    corrupt_config(corrupt, family, config, moe)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    file_mode = corrupt if corrupt in ("truncated", "overlap", "beyond") else None
    ts = sorted(tensors.values(), key=lambda t: natural_key(t.name))
    if not sharded:
        write_file(os.path.join(out, "model.safetensors"), ts, file_mode, victim)
        return
    # Split into n shards of about equal bytes (so that layers straddle shards).
    # (The config may be a broken one of an error test: count on nothing.)
    layers = config.get("num_hidden_layers", config.get("n_layers", config.get("num_layers", 1)))
    if not isinstance(layers, int) or isinstance(layers, bool):
        layers = 1
    n = max(2, min(4, layers + 1))
    sizes = [len(encode(t.dtype, t.vals[:1])) * numel(t.shape) for t in ts]
    total, acc, shards = sum(sizes), 0, [[] for _ in range(n)]
    for t, s in zip(ts, sizes):
        shards[min(n - 1, acc * n // total)].append(t)
        acc += s
    shards = [s for s in shards if s]
    n = len(shards)
    weight_map = {}
    for k, s in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, n)
        has_victim = victim is not None and any(t.name == victim for t in s)
        write_file(os.path.join(out, fname), s, file_mode if has_victim else None, victim)
        for t in s:
            weight_map[t.name] = fname
    if corrupt == "bad-index":
        weight_map[victim] = "model-%05d-of-%05d.safetensors" % (n + 1, n + 1)
    index = {"metadata": {"total_size": total},
             "weight_map": dict(sorted(weight_map.items(), key=lambda kv: natural_key(kv[0])))}
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def generate(family, out, dtype="f32", layers=2, seed=0, sharded=False, kind=None,
             fused=False, corrupt=None, router_bias=False):
    """Writes one model directory; returns (moe_layers, dense_layers)."""
    if corrupt == "bad-index" and not sharded:
        raise SystemExit("--corrupt bad-index needs --sharded")
    config, tensors, moe, dense = build(family, layers, dtype, seed,
                                        kind or "projected_router", fused, router_bias)
    write_model(out, family, config, tensors, moe, sharded, corrupt)
    return moe, dense


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sharded", action="store_true")
    ap.add_argument("--kind", choices=KINDS)
    ap.add_argument("--experts", choices=["per-expert", "fused"], default="per-expert")
    ap.add_argument("--corrupt", choices=CORRUPTIONS)
    ap.add_argument("--router-bias", action="store_true")
    a = ap.parse_args(argv)
    if a.layers < 1:
        ap.error("--layers must be at least 1")
    if a.kind and a.family not in ("moe_mlir", "all"):
        ap.error("--kind is for --family moe_mlir")
    if a.router_bias and a.family not in ("switch_transformers", "all"):
        ap.error("--router-bias is for --family switch_transformers")
    jobs = []
    if a.family == "all":
        for fam in FAMILIES:
            if fam == "moe_mlir" and a.experts != "fused":
                for k in ([a.kind] if a.kind else KINDS):
                    jobs.append((fam, k, os.path.join(a.out, "moe_mlir_" + k)))
            elif fam not in NOT_FUSABLE or a.experts != "fused":
                jobs.append((fam, None, os.path.join(a.out, fam)))
    else:
        jobs.append((a.family, a.kind, a.out))
    for fam, kind, out in jobs:
        moe, dense = generate(fam, out, a.dtype, a.layers, a.seed, a.sharded, kind,
                              a.experts == "fused", a.corrupt,
                              a.router_bias and fam == "switch_transformers")
        print("%s: moe layers %s, dense layers %s" % (out, moe, dense))


if __name__ == "__main__":
    main()
