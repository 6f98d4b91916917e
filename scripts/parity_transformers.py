#!/usr/bin/env python3
"""Parity of the importer's inputs and outputs with Hugging Face transformers.

For each HF MoE family this builds a tiny model with random weights through
transformers itself (the family's config class, AutoModelForCausalLM.
from_config), saves it with save_pretrained(dir, safe_serialization=True),
feeds seeded random hidden states through every decoder layer's MLP block
(`model.model.layers[i].mlp`, `.block_sparse_moe` where the installed
version still has it, Llama 4's `.feed_forward`; eval mode, no jitter) and
compares the output with

  (a) tools/moe-gen-checkpoint/hf_reference.py run on the saved directory
      (an independent f64 implementation reading the raw checkpoint), and
  (b) the compiled layer: `moe-compile <dir> --target=cpu -o <out>` then
      `moe-run <out> --layer i --tokens T --input input=x.npy --output-dir D`
      (D/layer_<i>.npy), skipped with a message when the tools are absent or
      fail.

`--families llama4` builds the hub's layout instead
(Llama4ForConditionalGeneration with a tiny vision tower: the text config
nested, the text model's tensors under `language_model.`) and compares its
text model's blocks the same way.

switch_transformers is an encoder-decoder (AutoModelForSeq2SeqLM:
SwitchTransformersForConditionalGeneration): every encoder block's and then
every decoder block's `layer[-1].mlp` is compared, numbered as the importer
and hf_reference number them (encoder block i is layer i, decoder block i
layer num_layers + i); x is [1, T, H], one sequence, so expert_capacity
counts over the T tokens. Its rows say how many tokens went over capacity
(transformers' router / rows of hf_reference's output that are 0). In bf16,
transformers rounds the router probabilities to bf16 before the argmax and
uses the rounded maximum as the weight: bf16-level errors, and a token whose
two best probabilities round to the same bf16 value goes to the lower expert
id where the f64 reference may pick the other (counted as "bf16 ties"; such
a flip can also move later tokens over or under capacity). Not hidden: a
row with a flip fails, and says its error over the tokens that
hf_reference --tie-tolerance 1e-2 does not flag (near ties, and the tokens
whose admission their flips could change). At 16 tokens, 2 of 8 seeds
have such a row; at 48, 3 of 8.

jetmoe (JetMoeForCausalLM): every layer's `mlp` is a JetMoeMoE, which has
no `experts` attribute (JetMoeParallelExperts `input_linear` /
`output_linear` beside the router): it counts as MoE by its `input_linear`.
Its output includes `mlp.bias`, added once after the mixture. In bf16,
JetMoeTopKGating rounds the k softmax weights to bf16 (`type_as`); the
compiled layer and hf_reference keep them f32 / f64 (bf16-level
differences). The mixture of attention heads is not compared.

It also lists what save_pretrained actually wrote and reports every
difference from the names of docs/importer.md (tensors) and the config keys
the importer reads, and prints what the installed DeepseekV2 router does with
norm_topk_prob / routed_scaling_factor.

    scripts/parity_transformers.py [--families a,b,..] [--tokens T] [--seed S]
        [--dtype f32|bf16] [--moe-compile BIN] [--moe-run BIN] [--no-compiled]
        [--fused] [--generated] [--work DIR] [-v]

  --fused      also save with save_original_format=False (transformers v5's
               own fused layout) and run hf_reference on that directory
               (llama4_text, jetmoe: the same layout as the default save).
  --generated  also load the checkpoints tools/moe-gen-checkpoint writes into
               transformers (from_pretrained) and compare their MoE blocks
               with hf_reference: checks the generator and the reference.
               Tensors that transformers reports missing (left at random),
               unexpected (e.g. the MTP layers) or mismatched are listed.
Prints one table row per (family, layer): max relative error
||out - ref|| / ||ref|| and max elementwise |out - ref| against transformers.
Exits 0 when torch/transformers are not importable (nothing to compare), 1
when an hf_reference or compiled comparison exceeds the tolerance (1e-5
relative for f32, 3e-2 for bf16; a compiled layer that cannot be built or run
is reported, not failed).
"""

import argparse
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools", "moe-gen-checkpoint")
REF = os.path.join(TOOLS, "hf_reference.py")
GEN = os.path.join(TOOLS, "moe_gen_checkpoint.py")
sys.path.insert(0, TOOLS)
import hf_reference  # noqa: E402  (pure-stdlib .npy reader/writer)

BF16_TIES = ("(bf16 ties) transformers' Switch router casts its f32 softmax to bf16 before "
             "the argmax (equal values: the lower expert id), hf_reference (f64) and the "
             "compiled layer (f32) do not; a flip also moves later tokens under or over "
             "expert_capacity")

COMMON = dict(vocab_size=64, hidden_size=32, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128)

# (label, model_type, config kwargs). Tiny sizes; dense layers where the
# family's config can make them.
CASES = [
    ("mixtral", "mixtral", dict(num_hidden_layers=2, intermediate_size=48,
                                num_local_experts=8, num_experts_per_tok=2)),
    ("qwen2_moe", "qwen2_moe", dict(num_hidden_layers=4, intermediate_size=64,
                                    moe_intermediate_size=24,
                                    shared_expert_intermediate_size=48,
                                    num_experts=8, num_experts_per_tok=4,
                                    norm_topk_prob=False, decoder_sparse_step=2,
                                    mlp_only_layers=[3])),
    ("qwen3_moe", "qwen3_moe", dict(num_hidden_layers=2, intermediate_size=64,
                                    moe_intermediate_size=32, head_dim=8,
                                    num_experts=8, num_experts_per_tok=2,
                                    norm_topk_prob=True, decoder_sparse_step=2)),
    ("deepseek_v2", "deepseek_v2", dict(num_hidden_layers=2, intermediate_size=64,
                                        moe_intermediate_size=24, n_routed_experts=8,
                                        num_experts_per_tok=3, n_shared_experts=2,
                                        first_k_dense_replace=1,
                                        topk_method="group_limited_greedy", n_group=4,
                                        topk_group=2, routed_scaling_factor=1.5,
                                        norm_topk_prob=False, kv_lora_rank=16,
                                        q_lora_rank=None, qk_nope_head_dim=8,
                                        qk_rope_head_dim=8, v_head_dim=8)),
    ("deepseek_v2[greedy,norm]", "deepseek_v2", dict(
        num_hidden_layers=1, moe_intermediate_size=24, n_routed_experts=8,
        num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=0,
        topk_method="greedy", routed_scaling_factor=2.0, norm_topk_prob=True,
        kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=8,
        v_head_dim=8)),
    ("deepseek_v3", "deepseek_v3", dict(num_hidden_layers=2, hidden_size=64,
                                        intermediate_size=96, moe_intermediate_size=32,
                                        n_routed_experts=16, num_experts_per_tok=4,
                                        n_shared_experts=1, first_k_dense_replace=1,
                                        n_group=4, topk_group=2,
                                        routed_scaling_factor=2.5, norm_topk_prob=True,
                                        kv_lora_rank=16, q_lora_rank=24,
                                        qk_nope_head_dim=8, qk_rope_head_dim=8,
                                        v_head_dim=8, num_attention_heads=4,
                                        num_key_value_heads=4)),
    ("olmoe", "olmoe", dict(num_hidden_layers=2, intermediate_size=48, num_experts=16,
                            num_experts_per_tok=4, norm_topk_prob=False,
                            pad_token_id=1, eos_token_id=2)),
    ("gpt_oss", "gpt_oss", dict(num_hidden_layers=2, intermediate_size=32, head_dim=8,
                                num_local_experts=4, num_experts_per_tok=2,
                                swiglu_limit=7.0)),
    ("granitemoe", "granitemoe", dict(num_hidden_layers=2, intermediate_size=24,
                                      num_local_experts=8, num_experts_per_tok=2)),
    ("dbrx", "dbrx", dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4,
                          max_seq_len=128,
                          attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
                          ffn_config=dict(ffn_hidden_size=24, moe_num_experts=8, moe_top_k=2,
                                          moe_normalize_expert_weights=1.0,
                                          ffn_act_fn=dict(name="silu")))),
    ("dbrx[no norm]", "dbrx", dict(vocab_size=64, d_model=32, n_layers=1, n_heads=4,
                                   max_seq_len=128,
                                   attn_config=dict(kv_n_heads=2, rope_theta=10000.0),
                                   ffn_config=dict(ffn_hidden_size=24, moe_num_experts=4,
                                                   moe_top_k=2,
                                                   moe_normalize_expert_weights=None))),
    ("granitemoeshared", "granitemoeshared", dict(num_hidden_layers=2, intermediate_size=24,
                                                  num_local_experts=8, num_experts_per_tok=2,
                                                  shared_intermediate_size=40)),
    # Phi-3.5-MoE's 0.01, and a wider threshold that keeps more experts
    # unmasked for these random logits.
    ("phimoe", "phimoe", dict(num_hidden_layers=2, intermediate_size=48,
                              num_local_experts=8, num_experts_per_tok=2)),
    ("phimoe[eps 0.2]", "phimoe", dict(num_hidden_layers=1, intermediate_size=48,
                                       num_local_experts=16, num_experts_per_tok=2,
                                       router_jitter_noise=0.2)),
    ("glm4_moe", "glm4_moe", dict(num_hidden_layers=3, intermediate_size=64,
                                  moe_intermediate_size=24, n_routed_experts=16,
                                  num_experts_per_tok=4, n_shared_experts=1,
                                  first_k_dense_replace=1, n_group=4, topk_group=2,
                                  routed_scaling_factor=2.5, norm_topk_prob=True,
                                  head_dim=8, use_qk_norm=True, attention_bias=True)),
    ("glm4_moe[defaults]", "glm4_moe", dict(num_hidden_layers=2, intermediate_size=64,
                                            moe_intermediate_size=24, n_routed_experts=8,
                                            num_experts_per_tok=2, head_dim=8)),
    # "[defaults]" cases leave the routing keys at transformers' defaults and
    # then delete them from config.json (strip_defaults): the importer and
    # hf_reference must take the same defaults as the config classes.
    ("deepseek_v3[defaults]", "deepseek_v3", dict(
        num_hidden_layers=4, hidden_size=64, intermediate_size=96,
        moe_intermediate_size=24, n_routed_experts=16, kv_lora_rank=16, q_lora_rank=24,
        qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, num_attention_heads=4,
        num_key_value_heads=4)),
    ("qwen2_moe[defaults]", "qwen2_moe", dict(num_hidden_layers=1, intermediate_size=64,
                                              moe_intermediate_size=24,
                                              shared_expert_intermediate_size=48,
                                              num_experts=8)),
    ("qwen3_moe[defaults]", "qwen3_moe", dict(num_hidden_layers=1, moe_intermediate_size=24,
                                              head_dim=8, num_experts=16)),
    ("qwen3_next", "qwen3_next", dict(num_hidden_layers=2, intermediate_size=64,
                                      moe_intermediate_size=24,
                                      shared_expert_intermediate_size=48, num_experts=16,
                                      num_experts_per_tok=4, head_dim=8,
                                      layer_types=["linear_attention", "full_attention"],
                                      linear_num_value_heads=4, linear_num_key_heads=2,
                                      linear_key_head_dim=8, linear_value_head_dim=8)),
    ("qwen3_next[defaults]", "qwen3_next", dict(num_hidden_layers=1, moe_intermediate_size=24,
                                                shared_expert_intermediate_size=48,
                                                num_experts=16, head_dim=8,
                                                layer_types=["full_attention"])),
    ("minimax_m2", "minimax_m2", dict(num_hidden_layers=2, intermediate_size=40,
                                      num_local_experts=16, num_experts_per_tok=4,
                                      head_dim=8)),
    # Llama 4: Maverick's interleave_moe_layer_step 2 (odd layers MoE, even
    # dense of intermediate_size_mlp); k 2 (the router's sigmoid per picked
    # expert); moe_layers overriding the step; [defaults]: k 1, step 1, and
    # moe_layers deleted as well (strip_defaults: the step derives it).
    ("llama4_text", "llama4_text", dict(num_hidden_layers=4, intermediate_size=48,
                                        intermediate_size_mlp=64, head_dim=8,
                                        num_local_experts=8, num_experts_per_tok=1,
                                        interleave_moe_layer_step=2)),
    ("llama4_text[k=2]", "llama4_text", dict(num_hidden_layers=2, intermediate_size=24,
                                             intermediate_size_mlp=64, head_dim=8,
                                             num_local_experts=16, num_experts_per_tok=2)),
    ("llama4_text[moe_layers]", "llama4_text", dict(num_hidden_layers=3, intermediate_size=24,
                                                    intermediate_size_mlp=40, head_dim=8,
                                                    num_local_experts=4, num_experts_per_tok=1,
                                                    interleave_moe_layer_step=2,
                                                    moe_layers=[0, 2])),
    ("llama4_text[defaults]", "llama4_text", dict(num_hidden_layers=2, intermediate_size=24,
                                                  intermediate_size_mlp=64, head_dim=8,
                                                  num_local_experts=8)),
    # JetMoE: every layer MoE, mlp.bias once after the mixture; its
    # attention a mixture too (num_attention_heads = num_key_value_heads *
    # K, set by JetMoeConfig). gelu (exact) with K 1; [defaults]: K 2 and
    # silu left at JetMoeConfig's defaults and deleted (num_local_experts
    # and intermediate_size stay: the importer requires them).
    ("jetmoe", "jetmoe", dict(num_hidden_layers=2, intermediate_size=48, kv_channels=8,
                              num_local_experts=4, num_experts_per_tok=2,
                              activation_function="silu")),
    ("jetmoe[gelu,k=1]", "jetmoe", dict(num_hidden_layers=2, intermediate_size=48,
                                        kv_channels=8, num_local_experts=4,
                                        num_experts_per_tok=1, activation_function="gelu")),
    ("jetmoe[defaults]", "jetmoe", dict(num_hidden_layers=1, intermediate_size=48,
                                        kv_channels=8, num_local_experts=4)),
    # [defaults]: K at MixtralConfig's 2 / OlmoeConfig's 8 and deleted
    # (session 31: the importer required it).
    ("mixtral[defaults]", "mixtral", dict(num_hidden_layers=1, intermediate_size=48,
                                          num_local_experts=4)),
    ("olmoe[defaults]", "olmoe", dict(num_hidden_layers=1, intermediate_size=48,
                                      num_experts=16, pad_token_id=1, eos_token_id=2)),
]

# Switch Transformers (T5 sizes: d_model, d_ff, num_heads, d_kv; no COMMON).
# Sparse blocks as SwitchTransformersStack makes them: step n //
# num_sparse_*_layers (n when 0), block i sparse iff step > 0 and
# (i % step == 1 or step == 1). expert_capacity below T / E (T = 16 by
# default) so that tokens are dropped.
SWITCH = dict(vocab_size=64, d_model=32, d_ff=48, num_heads=4, d_kv=8)
CASES += [
    # relu (Switch's own); step 2 in both stacks: blocks 1 and 3 sparse
    # (layers 1, 3, 5, 7); E 4, capacity 3: at least T - 12 dropped.
    ("switch_transformers", "switch_transformers", dict(
        SWITCH, num_layers=4, num_decoder_layers=4, num_sparse_encoder_layers=2,
        num_sparse_decoder_layers=2, num_experts=4, expert_capacity=3)),
    # router_bias, exact (erf) gelu; one sparse block per stack (step 2).
    ("switch_transformers[bias,gelu]", "switch_transformers", dict(
        SWITCH, num_layers=2, num_decoder_layers=2, num_sparse_encoder_layers=1,
        num_sparse_decoder_layers=1, num_experts=8, expert_capacity=2, router_bias=True,
        dense_act_fn="gelu")),
    # gelu_new (tanh); num_decoder_layers 2 != num_layers 3; encoder step
    # 1 (every block sparse), decoder step 2 (block 1: layer 4).
    ("switch_transformers[gelu_new]", "switch_transformers", dict(
        SWITCH, num_layers=3, num_decoder_layers=2, num_sparse_encoder_layers=3,
        num_sparse_decoder_layers=1, num_experts=4, expert_capacity=5,
        dense_act_fn="gelu_new")),
    # Encoder step 0 (3 sparse layers of 2 blocks: 2 // 3): no sparse
    # block. Decoder num_sparse_decoder_layers 0: step n = 3, and block 1
    # (i % 3 == 1) is sparse all the same. relu2.
    ("switch_transformers[step0]", "switch_transformers", dict(
        SWITCH, num_layers=2, num_decoder_layers=3, num_sparse_encoder_layers=3,
        num_sparse_decoder_layers=0, num_experts=4, expert_capacity=4,
        dense_act_fn="relu2")),
    # Routing keys at their defaults, then deleted (num_sparse_* 3: step 1
    # with 4 blocks, all sparse; expert_capacity 64, router_bias false,
    # router_dtype float32, relu; num_decoder_layers = num_layers).
    ("switch_transformers[defaults]", "switch_transformers", dict(
        SWITCH, num_layers=4, num_decoder_layers=4, num_experts=4)),
]

# Config keys the importer reads (docs/importer.md), per model_type.
IMPORTER_KEYS = {
    "mixtral": ["num_local_experts", "num_experts_per_tok", "intermediate_size", "hidden_act"],
    "glm4_moe": ["n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
                 "n_shared_experts", "first_k_dense_replace", "n_group", "topk_group",
                 "routed_scaling_factor", "norm_topk_prob", "intermediate_size"],
    "qwen3_next": ["num_experts", "num_experts_per_tok", "moe_intermediate_size",
                   "shared_expert_intermediate_size", "decoder_sparse_step",
                   "mlp_only_layers", "norm_topk_prob", "intermediate_size"],
    "minimax_m2": ["num_local_experts", "num_experts_per_tok", "intermediate_size", "hidden_act"],
    "llama4_text": ["num_local_experts", "num_experts_per_tok", "intermediate_size",
                    "intermediate_size_mlp", "interleave_moe_layer_step", "moe_layers",
                    "hidden_act"],
    "phimoe": ["num_local_experts", "num_experts_per_tok", "intermediate_size", "hidden_act",
               "router_jitter_noise"],
    "qwen2_moe": ["num_experts", "num_experts_per_tok", "moe_intermediate_size",
                  "shared_expert_intermediate_size", "decoder_sparse_step",
                  "mlp_only_layers", "norm_topk_prob", "intermediate_size"],
    "qwen3_moe": ["num_experts", "num_experts_per_tok", "moe_intermediate_size",
                  "decoder_sparse_step", "mlp_only_layers", "norm_topk_prob"],
    "deepseek_v2": ["n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
                    "n_shared_experts", "first_k_dense_replace", "moe_layer_freq",
                    "topk_method", "n_group", "topk_group", "routed_scaling_factor",
                    "norm_topk_prob", "scoring_func"],
    "deepseek_v3": ["n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
                    "n_shared_experts", "first_k_dense_replace", "moe_layer_freq",
                    "topk_method", "n_group", "topk_group", "routed_scaling_factor",
                    "norm_topk_prob", "scoring_func"],
    "olmoe": ["num_experts", "num_experts_per_tok", "norm_topk_prob", "intermediate_size"],
    "gpt_oss": ["num_local_experts", "num_experts_per_tok", "swiglu_limit"],
    "dbrx": ["d_model", "n_layers", "ffn_config"],
    "granitemoe": ["num_local_experts", "num_experts_per_tok", "intermediate_size",
                   "hidden_act"],
    "granitemoeshared": ["num_local_experts", "num_experts_per_tok", "intermediate_size",
                         "hidden_act", "shared_intermediate_size"],
    "switch_transformers": ["d_model", "d_ff", "num_layers", "num_decoder_layers",
                            "num_experts", "num_sparse_encoder_layers",
                            "num_sparse_decoder_layers", "expert_capacity", "router_bias",
                            "router_dtype", "dense_act_fn"],
    "jetmoe": ["num_local_experts", "num_experts_per_tok", "intermediate_size",
               "activation_function"],
}


def switch_prefix(cfg, i):
    """The MLP prefix of Switch layer i (encoder blocks, then decoder
    blocks, whose layer.1 is the cross-attention)."""
    L = cfg["num_layers"]
    return ("encoder.block.%d.layer.1.mlp." % i if i < L
            else "decoder.block.%d.layer.2.mlp." % (i - L))


def expected_names(mt, cfg, i, is_moe):
    """MLP tensor names of layer i per docs/importer.md."""
    p = "model.layers.%d." % i
    if mt == "switch_transformers":
        f = switch_prefix(cfg, i)
        if not is_moe:
            return {f + "wi.weight", f + "wo.weight"}
        s = {f + "router.classifier.weight"}
        if cfg.get("router_bias"):
            s.add(f + "router.classifier.bias")
        for e in range(cfg["num_experts"]):
            s |= {f + "experts.expert_%d.%s.weight" % (e, w) for w in ("wi", "wo")}
        return s
    if mt == "dbrx":
        return {"transformer.blocks.%d.ffn.%s" % (i, n)
                for n in ("router.layer.weight", "experts.mlp.w1", "experts.mlp.v1",
                          "experts.mlp.w2")}
    if mt == "llama4_text":
        f = p + "feed_forward."
        ffn = {"%s.weight" % n for n in ("gate_proj", "up_proj", "down_proj")}
        if not is_moe:
            return {f + n for n in ffn}
        return ({f + n for n in ("router.weight", "experts.gate_up_proj", "experts.down_proj")}
                | {f + "shared_expert." + n for n in ffn})
    if not is_moe:
        return {p + "mlp.%s.weight" % n for n in ("gate_proj", "up_proj", "down_proj")}
    if mt in ("mixtral", "phimoe", "minimax_m2"):
        E = cfg["num_local_experts"]
        s = {p + "block_sparse_moe.gate.weight"}
        if mt == "minimax_m2":
            s.add(p + "block_sparse_moe.e_score_correction_bias")
        for e in range(E):
            s |= {p + "block_sparse_moe.experts.%d.%s.weight" % (e, w) for w in ("w1", "w2", "w3")}
        return s
    if mt == "jetmoe":
        return {p + "mlp." + n for n in ("router.layer.weight", "input_linear.weight",
                                         "output_linear.weight", "bias")}
    if mt.startswith("granitemoe"):
        s = {p + "block_sparse_moe." + n for n in ("router.layer.weight", "input_linear.weight",
                                                   "output_linear.weight")}
        if cfg.get("shared_intermediate_size"):
            s |= {p + "shared_mlp.input_linear.weight", p + "shared_mlp.output_linear.weight"}
        return s
    if mt == "gpt_oss":
        return {p + "mlp." + n for n in ("router.weight", "router.bias", "experts.gate_up_proj",
                                         "experts.gate_up_proj_bias", "experts.down_proj",
                                         "experts.down_proj_bias")}
    E = cfg.get("num_experts") or cfg.get("num_local_experts") or cfg.get("n_routed_experts")
    s = {p + "mlp.gate.weight"}
    for e in range(E):
        s |= {p + "mlp.experts.%d.%s.weight" % (e, w) for w in ("gate_proj", "up_proj", "down_proj")}
    if mt in ("qwen2_moe", "qwen3_next"):
        s |= {p + "mlp.shared_expert.%s.weight" % w for w in ("gate_proj", "up_proj", "down_proj")}
        s.add(p + "mlp.shared_expert_gate.weight")
    if mt.startswith("deepseek") or mt == "glm4_moe":
        s |= {p + "mlp.shared_experts.%s.weight" % w for w in ("gate_proj", "up_proj", "down_proj")}
    if mt in ("deepseek_v3", "glm4_moe"):
        s.add(p + "mlp.gate.e_score_correction_bias")
    return s


def strip_defaults(d, mt, AutoConfig):
    """Deletes from d/config.json the importer's keys whose value is the
    config class's default, Llama 4's moe_layers where the step (as left)
    derives it (save_pretrained always writes it) and Switch's
    num_decoder_layers where it is num_layers; returns their names."""
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    default = AutoConfig.for_model(mt)
    gone = [k for k in IMPORTER_KEYS[mt] if k in cfg and hasattr(default, k)
            and cfg[k] == getattr(default, k) and k != "num_decoder_layers"]
    if mt == "switch_transformers" and cfg.get("num_decoder_layers") == cfg["num_layers"]:
        gone.append("num_decoder_layers")
    if mt == "llama4_text" and "moe_layers" in cfg:
        step = cfg.get("interleave_moe_layer_step", default.interleave_moe_layer_step)
        if cfg["moe_layers"] == list(range(step - 1, cfg["num_hidden_layers"], step)):
            gone.append("moe_layers")
    for k in gone:
        del cfg[k]
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return gone


def saved_tensors(d):
    """name -> (dtype, shape) of what save_pretrained wrote."""
    ck = hf_reference.Checkpoint(d)
    return {n: (e["dtype"], e["shape"]) for n, (_, e, _) in ck.where.items()}


def natural_key(n):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)]


def mlp_module(layer):
    sub = getattr(layer, "layer", None)     # Switch (T5) blocks: layer[-1] is the FF
    if sub is not None and hasattr(sub, "__getitem__"):
        return sub[-1].mlp
    for name in ("block_sparse_moe", "ffn", "feed_forward"):   # (dbrx: ffn; llama4)
        m = getattr(layer, name, None)
        if m is not None:
            return m
    return layer.mlp


def is_moe_block(block):
    """An MoE block: `experts` (jetmoe's JetMoeMoE: `input_linear`)."""
    return hasattr(block, "experts") or hasattr(block, "input_linear")


def decoder_layers(model):
    """The decoder layers (dbrx: model.transformer.blocks; Switch: the
    encoder's blocks, then the decoder's)."""
    if getattr(model.config, "model_type", None) == "switch_transformers":
        return list(model.encoder.block) + list(model.decoder.block)
    t = getattr(model, "transformer", None)
    return t.blocks if t is not None and hasattr(t, "blocks") else model.model.layers


def errors(out, ref):
    num = math.sqrt(sum((a - b) ** 2 for a, b in zip(out, ref)))
    den = math.sqrt(sum(b * b for b in ref)) or 1.0
    return num / den, max(abs(a - b) for a, b in zip(out, ref))


def randomize(model, torch, gen):
    """Seeded weights scaled for O(1) activations; router gain 1.5; random
    DeepSeek-V3 selection bias; gpt-oss biases pushing a few gate/up values
    past swiglu_limit. Experts stored [E, in, out] (gpt-oss, Llama 4) take
    fan_in from dim 1."""
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if not p.is_floating_point() or "rotary" in name or "inv_freq" in name:
                continue
            shape = p.shape
            if name.endswith("e_score_correction_bias"):
                p.copy_(0.1 * torch.randn(shape, generator=gen))
            elif p.dim() == 1 and ("norm" in name or "layernorm" in name):
                p.copy_(1.0 + 0.1 * torch.randn(shape, generator=gen))
            elif p.dim() == 1 or name.endswith("_bias"):
                p.copy_(0.1 * torch.randn(shape, generator=gen))
            elif name.endswith("sinks"):
                p.copy_(0.1 * torch.randn(shape, generator=gen))
            else:
                in_out = any(f in type(model).__module__ for f in ("gpt_oss", "llama4"))
                if p.dim() == 3 and name.endswith(("experts.gate_up_proj", "experts.down_proj")) \
                        and in_out:
                    fan_in = shape[1]      # gpt-oss, Llama 4: [E, H, 2F], [E, F, H]
                else:
                    fan_in = shape[-1]     # nn.Linear [out, in]; v5 fused [E, out, in]
                router = re.search(r"\.(mlp|block_sparse_moe|feed_forward)\.(gate|router|"
                                   r"router\.classifier|router\.layer)\.weight$", name)
                gain = 1.5 if router else 1.0
                p.copy_(gain / math.sqrt(fan_in) * torch.randn(shape, generator=gen))
            if name.endswith("experts.gate_up_proj_bias"):
                F2 = shape[1]
                for e in range(shape[0]):
                    for f, (g, u) in enumerate(((8.0, -1.0), (-3.0, -8.0), (-3.0, 8.0))):
                        if 2 * f + 1 < F2:
                            p[e, 2 * f], p[e, 2 * f + 1] = g, u


def run_ref(model_dir, layer, xnpy, ynpy, tie_tol=None):
    """hf_reference's output (flat), or None and its error; with tie_tol,
    (output, the tokens it flags as near ties)."""
    extra = [] if tie_tol is None else ["--tie-tolerance", str(tie_tol), "--ties", ynpy + ".ties"]
    r = subprocess.run([sys.executable, REF, model_dir, "--layer", str(layer), "--input", xnpy,
                        "--output", ynpy] + extra, capture_output=True, text=True)
    if r.returncode != 0:
        return None, (r.stderr or r.stdout).strip().splitlines()[-1:]
    if tie_tol is not None:
        with open(ynpy + ".ties") as f:
            return hf_reference.read_npy(ynpy)[1], set(json.load(f))
    return hf_reference.read_npy(ynpy)[1], None


class Compiled:
    """moe-compile once per model dir, moe-run per layer; None on failure."""

    def __init__(self, args, work):
        self.compile, self.run, self.work = args.moe_compile, args.moe_run, work
        self.enabled = not args.no_compiled
        self.why = None
        if self.enabled and not (os.access(self.compile, os.X_OK) and os.access(self.run, os.X_OK)):
            self.enabled = False
            self.why = "moe-compile/moe-run not found (%s, %s)" % (self.compile, self.run)
        self.done = {}

    def layer(self, model_dir, i, xnpy, T):
        if not self.enabled:
            return None, self.why or "disabled"
        if model_dir not in self.done:
            out = model_dir + ".compiled"
            shutil.rmtree(out, ignore_errors=True)
            r = subprocess.run([self.compile, model_dir, "--target=cpu", "-o", out],
                               capture_output=True, text=True)
            self.done[model_dir] = (out, None if r.returncode == 0 else
                                    "moe-compile failed: " + " ".join(
                                        (r.stderr or r.stdout).strip().splitlines()[-1:]))
        out, err = self.done[model_dir]
        if err:
            return None, err
        d = os.path.join(out, "run_%d" % i)
        os.makedirs(d, exist_ok=True)
        r = subprocess.run([self.run, out, "--layer", str(i), "--tokens", str(T), "--input",
                            "input=" + xnpy, "--output-dir", d], capture_output=True, text=True)
        y = os.path.join(d, "layer_%d.npy" % i)
        if r.returncode != 0 or not os.path.exists(y):
            return None, "moe-run failed: " + " ".join((r.stderr or r.stdout).strip().splitlines()[-1:])
        return hf_reference.read_npy(y)[1], None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(c[0] for c in CASES))
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--moe-compile", default=os.path.join(ROOT, "build", "bin", "moe-compile"))
    ap.add_argument("--moe-run", default=os.path.join(ROOT, "build", "bin", "moe-run"))
    ap.add_argument("--no-compiled", action="store_true", help="skip (b)")
    ap.add_argument("--fused", action="store_true")
    ap.add_argument("--generated", action="store_true")
    ap.add_argument("--work", help="keep the model directories here")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every saved tensor")
    args = ap.parse_args()

    try:
        import torch
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    except ImportError as e:
        print("parity_transformers: torch/transformers not importable (%s); nothing compared" % e)
        return 0
    transformers.logging.set_verbosity_error()
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    print("transformers %s, torch %s, seed %d (rerun with --seed %d), %d tokens, %s"
          % (transformers.__version__, torch.__version__, seed, seed, args.tokens, args.dtype))
    tdt = torch.float32 if args.dtype == "f32" else torch.bfloat16
    tol = 1e-5 if args.dtype == "f32" else 3e-2
    work = args.work or tempfile.mkdtemp(prefix="parity-")
    os.makedirs(work, exist_ok=True)
    compiled = Compiled(args, work)
    wanted = args.families.split(",")
    rows, notes, failed = [], [], False

    def auto_model(mt):
        # Switch Transformers is an encoder-decoder (no causal-LM class).
        return AutoModelForSeq2SeqLM if mt == "switch_transformers" else AutoModelForCausalLM

    def switch_routing(block, x):
        """(tokens over capacity, bf16 ties) of transformers' router on x
        [1, T, H]: rows of the dispatch mask left empty; tokens whose
        largest probability, rounded to x's dtype (the router casts it back
        before its argmax), is shared by two experts (x bf16 only)."""
        with torch.no_grad():
            mask, _, logits = block.router(x)
        dropped = int((mask.sum(-1) == 0).sum())
        ties = 0
        if x.dtype != torch.float32:
            p = torch.softmax(logits.float(), dim=-1).to(x.dtype)
            ties = int(((p == p.max(-1, keepdim=True).values).sum(-1) > 1).sum())
        return dropped, ties

    def compare(label, model, model_dir, mt):
        nonlocal failed
        gen = torch.Generator().manual_seed(seed + 1)
        H = model.config.hidden_size
        T = args.tokens
        x = torch.randn(T, H, generator=gen).to(tdt)
        xnpy = os.path.join(model_dir + ".x.npy")
        hf_reference.write_npy(xnpy, (T, H), [float(v) for v in x.float().flatten()])
        for i, layer in enumerate(decoder_layers(model)):
            block = mlp_module(layer)
            with torch.no_grad():
                out = block(x[None])
            if isinstance(out, tuple):
                out = out[0]
            shared = getattr(layer, "shared_mlp", None)   # granitemoeshared: beside the block
            if shared is not None:
                with torch.no_grad():
                    out = out + shared(x[None])
            out = [float(v) for v in out.reshape(T, H).float().flatten()]
            kind = "moe" if is_moe_block(block) else "dense"
            ynpy = os.path.join(model_dir + ".y%d.npy" % i)
            ref, err = run_ref(model_dir, i, xnpy, ynpy)
            if mt == "switch_transformers" and kind == "moe":
                # Tokens over expert_capacity: transformers' router, and the
                # rows hf_reference left 0.
                dropped, ties = switch_routing(block, x[None])
                kind += ", %d dropped" % dropped
                if ref is not None:
                    zero = sum(all(v == 0.0 for v in ref[t * H:(t + 1) * H]) for t in range(T))
                    if zero != dropped:
                        kind += " (ref %d)" % zero
                if ties:
                    kind += ", %d bf16 ties" % ties

            def tie_flip(got):
                """For a failing Switch row with bf16 ties (still a failure):
                the error of `got` over the tokens that hf_reference does not
                flag (near ties, and the admissions their flips could
                change), which says whether the bf16 tie explains it."""
                if mt != "switch_transformers" or "bf16 ties" not in kind:
                    return ""
                ref2, near = run_ref(model_dir, i, xnpy, ynpy + ".t.npy", 1e-2)
                keep = [t for t in range(T) if t not in (near or ())]
                if ref2 is None or not keep:
                    return ""
                if BF16_TIES not in notes:
                    notes.append(BF16_TIES)
                rel2, _ = errors([got[t * H + h] for t in keep for h in range(H)],
                                 [out[t * H + h] for t in keep for h in range(H)])
                return " (bf16 tie flip? without the %d near-tie tokens: %.2e)" % (
                    T - len(keep), rel2)

            if ref is None:
                ref_s = "ERROR " + " ".join(err)
                failed = True
            else:
                rel, mx = errors(ref, out)
                ref_s = "%.2e  %.2e" % (rel, mx)
                if not rel <= tol:
                    ref_s += "  FAIL" + tie_flip(ref)
                    failed = True
            y, why = compiled.layer(model_dir, i, xnpy, T)
            if y is None:
                comp_s = "skipped"
                if why not in notes:
                    notes.append(why)
            else:
                rel, mx = errors(y, out)
                comp_s = "%.2e  %.2e" % (rel, mx)
                if not rel <= tol:
                    comp_s += "  FAIL" + tie_flip(y)
                    failed = True
            rows.append((label, "%d %s" % (i, kind), ref_s, comp_s))

    for label, mt, kw in CASES:
        if label not in wanted and mt not in wanted:
            continue
        cfg = AutoConfig.for_model(mt, **(kw if mt in ("dbrx", "switch_transformers")
                                          else dict(COMMON, **kw)))
        torch.manual_seed(seed)
        model = auto_model(mt).from_config(cfg)
        randomize(model, torch, torch.Generator().manual_seed(seed))
        model = model.to(tdt).eval()
        d = os.path.join(work, re.sub(r"[^A-Za-z0-9_]+", "_", label))
        shutil.rmtree(d, ignore_errors=True)
        model.save_pretrained(d, safe_serialization=True)
        if "[defaults]" in label:
            print("   config.json: deleted %s (at their defaults)"
                  % ", ".join(strip_defaults(d, mt, AutoConfig)))
        with open(os.path.join(d, "config.json")) as f:
            saved_cfg = json.load(f)
        names = saved_tensors(d)
        print("\n== %s: %s saved %d tensors to %s" % (label, type(model).__name__, len(names), d))
        if args.verbose:
            for n in sorted(names, key=natural_key):
                print("   %-60s %s %s" % (n, names[n][0], names[n][1]))
        # Names vs docs/importer.md.
        diffs = []
        for i, layer in enumerate(decoder_layers(model)):
            block = mlp_module(layer)
            is_moe = is_moe_block(block)
            exp = expected_names(mt, saved_cfg, i, is_moe)
            got = {n for n in names if mt == "switch_transformers"
                   and n.startswith(switch_prefix(saved_cfg, i))
                   or n.startswith("model.layers.%d.mlp." % i)
                   or n.startswith("model.layers.%d.feed_forward." % i)
                   or n.startswith("transformer.blocks.%d.ffn." % i)
                   or n.startswith("model.layers.%d.block_sparse_moe." % i)
                   or n.startswith("model.layers.%d.shared_mlp." % i)}
            if exp != got:
                diffs.append("layer %d: missing %s; unexpected %s" % (
                    i, sorted(exp - got)[:6], sorted(got - exp)[:6]))
            print("   layer %d: %s (%s)%s" % (i, type(block).__name__,
                                             "moe" if is_moe else "dense",
                                             "" if exp == got else "  NAMES DIFFER"))
        for dlt in diffs:
            print("   tensor names differ from docs/importer.md: " + dlt)
        if not diffs:
            print("   MLP tensor names match docs/importer.md")
        missing = [k for k in IMPORTER_KEYS[mt] if k not in saved_cfg]
        if missing:
            print("   config.json lacks importer keys: %s" % ", ".join(missing))
        if "torch_dtype" not in saved_cfg:
            print("   config.json has no torch_dtype (dtype=%r)" % saved_cfg.get("dtype"))
        if mt == "gpt_oss":
            print("   gpt_oss saved shapes: gate_up_proj %s, down_proj %s" % (
                names["model.layers.0.mlp.experts.gate_up_proj"][1],
                names["model.layers.0.mlp.experts.down_proj"][1]))
        compare(label, model, d, mt)
        # (Switch: transformers 5 keeps the per-expert modules; no fused layout.)
        if args.fused and mt not in ("gpt_oss", "switch_transformers"):
            df = d + "_fused"
            shutil.rmtree(df, ignore_errors=True)
            model.save_pretrained(df, safe_serialization=True, save_original_format=False)
            if "[defaults]" in label:
                strip_defaults(df, mt, AutoConfig)
            fn = saved_tensors(df)
            first = next((i for i, l in enumerate(decoder_layers(model))
                          if is_moe_block(mlp_module(l))), 0)
            blk = ("block_sparse_moe" if mt.startswith("granitemoe")
                   else "feed_forward" if mt == "llama4_text" else "mlp")
            fused = sorted(n for n in fn if n.startswith("model.layers.%d.%s." % (first, blk))
                           and "shared" not in n and ".experts." in n or
                           n.startswith("model.layers.%d.%s.gate." % (first, blk)) or
                           n.startswith("model.layers.%d.%s.router." % (first, blk)))
            print("   save_original_format=False writes: %s" % ", ".join(
                "%s %s" % (n.split(".", 3)[3], fn[n][1]) for n in fused))
            compare(label + " (v5 fused)", model, df, mt)

    if "llama4" in wanted:
        # The hub's Llama 4 layout (Scout, Maverick): Llama4ForConditionalGeneration,
        # the text config nested (config.json's text_config, without a dtype
        # of its own), the text model's tensors under language_model., a
        # vision tower beside it. Its MoE blocks against the compiled layers
        # of the saved directory.
        from transformers import Llama4Config, Llama4ForConditionalGeneration
        text = dict(COMMON, num_hidden_layers=2, intermediate_size=24,
                    intermediate_size_mlp=64, head_dim=8, num_local_experts=8,
                    num_experts_per_tok=1, interleave_moe_layer_step=2)
        vision = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, image_size=16, patch_size=8,
                      vision_output_dim=16, projector_input_dim=16,
                      projector_output_dim=COMMON["hidden_size"])
        torch.manual_seed(seed)
        model = Llama4ForConditionalGeneration(Llama4Config(text_config=text,
                                                            vision_config=vision))
        randomize(model, torch, torch.Generator().manual_seed(seed))
        model = model.to(tdt).eval()
        d = os.path.join(work, "llama4_hub")
        shutil.rmtree(d, ignore_errors=True)
        model.save_pretrained(d, safe_serialization=True)
        names = saved_tensors(d)
        print("\n== llama4 (hub layout): %s saved %d tensors to %s; MoE block names: %s"
              % (type(model).__name__, len(names), d, ", ".join(sorted(
                  n for n in names if n.startswith("language_model.model.layers.1.feed_forward.")))))
        compare("llama4 (hub)", model.language_model, d, "llama4")

    if args.generated:
        import moe_gen_checkpoint
        for fam in ["mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "olmoe",
                    "gpt_oss", "granitemoe", "granitemoeshared", "dbrx", "phimoe",
                    "glm4_moe", "minimax_m2", "qwen3_next", "llama4_text",
                    "switch_transformers", "jetmoe"]:
            if fam not in wanted:
                continue
            for fused in (False, True):
                if fused and fam in ("gpt_oss", "granitemoe", "granitemoeshared", "dbrx",
                                     "llama4_text", "jetmoe"):
                    continue
                # Switch has no fused layout: its second checkpoint is the
                # --router-bias one (sharded, like the fused ones).
                bias = fused and fam == "switch_transformers"
                tag = " (router_bias)" if bias else " (fused)" if fused else ""
                d = os.path.join(work, "gen_%s%s" % (fam, "_bias" if bias else
                                                     "_fused" if fused else ""))
                moe_gen_checkpoint.generate(fam, d, args.dtype, 3, seed, sharded=fused,
                                            fused=fused and not bias, router_bias=bias)
                model, info = auto_model(fam).from_pretrained(
                    d, dtype=tdt, output_loading_info=True)
                # Tensors transformers expects that the generator did not
                # write (initialised at random), or wrote and it ignored.
                for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
                    if info.get(what):
                        print("   gen:%s%s: %s %s" % (fam, tag, what,
                                                     sorted(map(str, info[what]))[:6]))
                compare("gen:%s%s" % (fam, tag), model.eval(), d, fam)

    # What the installed DeepseekV2 router does.
    try:
        from transformers.models.deepseek_v2 import modeling_deepseek_v2 as m2
        src = inspect.getsource(m2.DeepseekV2TopkRouter.forward)
        print("\nDeepseekV2TopkRouter.forward (installed): norm_topk_prob %s; %s"
              % ("USED" if "norm_topk_prob" in src else "ignored (never renormalises)",
                 "always multiplies by routed_scaling_factor"
                 if "routed_scaling_factor" in src else "no routed_scaling_factor"))
    except Exception as e:  # noqa: BLE001
        print("\nDeepseekV2 router source not inspected: %s" % e)

    w = max([len(r[0]) for r in rows] + [6])
    lw = max([len(r[1]) for r in rows] + [9])
    print("\n%-*s | %-*s | %-30s | %s" % (w, "family", lw, "layer", "hf_reference rel / max abs",
                                           "compiled rel / max abs"))
    print("-" * (w + lw + 71))
    for r in rows:
        print("%-*s | %-*s | %-30s | %s" % (w, r[0], lw, r[1], r[2], r[3]))
    for n in notes:
        print(n if n.startswith("(") else "(compiled) " + n)
    print("work dir: %s" % work)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
