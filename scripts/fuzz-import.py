#!/usr/bin/env python3
"""Looks for model directories that moe-compile takes wrongly.

usage: scripts/fuzz-import.py [--moe-compile PATH] [--seed S] [--runs N]
                              [--mode config|tensors|all] [--jobs N]
                              [--keep DIR] [--models NAME,...]

Each case is one small checkpoint of tools/moe-gen-checkpoint (every family,
the four moe_mlir kinds, Mixtral's and Granite's transformers-5 layouts,
DeepSeek with a dense first layer, Llama 4 with a dense layer 0, Switch
Transformers' encoder-decoder with dense and sparse blocks, with and
without router_bias, JetMoE with its mixture of attention heads beside
the MLP block) with one change, compiled by `moe-compile DIR -o OUT`:

  config   one key of config.json (top level, or under moe_layer and its
           first/second, dbrx's ffn_config and attn_config) set to 0, -1, 1, 3, 10^12, 2.5, "x", null, true,
           [], {} or removed. Judged like scripts/fuzz-pipelines.py: no
           signal, no exit status but 0 or 1, no LLVM fatal error or stack
           dump, no error with status 0, no status 1 without an error, no
           hang (120 s).
  tensors  one tensor dropped, renamed, given a wider last dimension, stored
           as I32, or joined by a bias beside it; half the checkpoints
           sharded. A tensor under a planned layer's block
           (`model.layers.N.mlp.`, `.block_sparse_moe.`, `.shared_mlp.`,
           Llama 4's `.feed_forward.`, dbrx's `transformer.blocks.N.ffn.`,
           Switch's `encoder.block.N.layer.1.mlp.` and
           `decoder.block.N-num_layers.layer.2.mlp.`) is one the layer
           reads, so each such change must be an error; a change outside
           (attention, norms, embeddings, DeepSeek-V3's MTP layer) must
           compile. Judged as above too.

--models limits the run to those checkpoints (names as MODELS below:
mixtral, mixtral-fused, ..., switch_transformers-bias, moe_mlir-cartesian). --runs N draws N cases of the mode's list (seeded; the seed is printed);
--runs 0 runs them all (config: 8,088; tensors: 4,880, of which 2,800
inside blocks, before the llama4 model, which adds 658 in all, and the two
switch_transformers models, which add 1,619: 864 config, 755 tensors, 390
inside blocks, and the jetmoe model, which adds 420: 300 config, 120
tensors, 40 inside blocks; about 1 s per compile on one core). The failing
directories are kept in --keep with the command and its output, and the
script exits 1 when there was any.

Session 26's hand-run config sweep found the hangs and wrong models that
test/Target/HFImport/errors.test now covers; session 27's tensor check
(HFImport's `checkUnused`) came from the same question asked of tensors.
Its first runs (session 27) found one abort: a MoE++ layer with
`zero_experts` or `constant_experts` -1 (std::length_error), an error now.
"""

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile

from fuzzlib import execute, judge, run_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "moe-gen-checkpoint"))
import moe_gen_checkpoint as gen  # noqa: E402

# (name, family, kind, fused, layers); kind "router_bias": the generator's
# --router-bias (switch_transformers).
MODELS = [
    ("mixtral", "mixtral", None, False, 2),
    ("mixtral-fused", "mixtral", None, True, 1),
    ("qwen2_moe", "qwen2_moe", None, False, 2),
    ("qwen3_moe", "qwen3_moe", None, False, 1),
    ("deepseek_v2", "deepseek_v2", None, False, 2),
    ("deepseek_v3", "deepseek_v3", None, False, 2),
    ("olmoe", "olmoe", None, False, 1),
    ("gpt_oss", "gpt_oss", None, False, 1),
    ("granitemoe", "granitemoe", None, False, 1),
    ("granitemoeshared", "granitemoeshared", None, False, 1),
    ("granitemoe-fused", "granitemoeshared", None, True, 1),
    ("dbrx", "dbrx", None, False, 2),
    ("phimoe", "phimoe", None, False, 1),
    ("phimoe-fused", "phimoe", None, True, 1),
    ("glm4_moe", "glm4_moe", None, False, 2),
    ("minimax_m2", "minimax_m2", None, False, 1),
    ("minimax_m2-fused", "minimax_m2", None, True, 1),
    ("qwen3_next", "qwen3_next", None, False, 1),
    ("llama4_text", "llama4_text", None, False, 2),
    ("llama4", "llama4", None, False, 2),
    # 3 encoder blocks (1 sparse) and 2 decoder blocks (1 sparse): layers 1
    # and 4 MoE, 0, 2 and 3 dense.
    ("switch_transformers", "switch_transformers", None, False, 3),
    ("switch_transformers-bias", "switch_transformers", "router_bias", False, 2),
    # Every layer MoE under `mlp.` with its bias after the mixture; the
    # mixture of attention heads (`self_attention.experts.*`, kv_proj) lies
    # outside the block and must compile whatever is done to it.
    ("jetmoe", "jetmoe", None, False, 2),
] + [("moe_mlir-" + k, "moe_mlir", k, False, 1) for k in gen.KINDS]

REMOVED = object()
VALUES = [0, -1, 1, 3, 10**12, 2.5, "x", None, True, [], {}, REMOVED]
TENSOR_CHANGES = ["drop", "rename", "widen", "i32", "bias"]


def config_paths(config):
    """The key paths of `config`: top-level keys, and those of moe_layer
    and its first/second objects (dbrx: ffn_config, attn_config; llama4:
    text_config)."""
    out = []
    for k, v in config.items():
        out.append((k,))
        if k in ("moe_layer", "ffn_config", "attn_config", "text_config") and \
                isinstance(v, dict):
            for k2, v2 in v.items():
                out.append((k, k2))
                if isinstance(v2, dict):
                    out += [(k, k2, k3) for k3 in v2]
    return out


def set_path(config, path, value):
    d = config
    for k in path[:-1]:
        d = d[k]
    if value is REMOVED:
        del d[path[-1]]
    else:
        d[path[-1]] = value


def block_prefixes(config, family, moe, dense):
    """The block prefix of each planned layer, as HFImport plans them."""
    out = []
    for i in sorted(moe + dense):
        if family == "switch_transformers":
            # Encoder blocks, then decoder blocks (layer.1: cross-attention).
            L = config["num_layers"]
            out.append(f"encoder.block.{i}.layer.1.mlp." if i < L
                       else f"decoder.block.{i - L}.layer.2.mlp.")
            continue
        if family in ("mixtral", "phimoe", "minimax_m2", "granitemoe", "granitemoeshared"):
            out.append(f"model.layers.{i}.block_sparse_moe.")
        if family == "granitemoeshared":
            out.append(f"model.layers.{i}.shared_mlp.")
        if family == "dbrx":
            out.append(f"transformer.blocks.{i}.ffn.")
        if family == "llama4_text":
            out.append(f"model.layers.{i}.feed_forward.")
        if family == "llama4":
            out.append(f"language_model.model.layers.{i}.feed_forward.")
        out.append(f"model.layers.{i}.mlp.")
    return out


def change_tensor(tensors, name, how):
    """`tensors` (a copy) with `name` changed by `how`."""
    tensors = dict(tensors)
    t = tensors.pop(name)
    if how == "drop":
        return tensors
    if how == "rename":
        new = name + "_renamed"
        tensors[new] = gen.Tensor(new, t.shape, t.dtype, t.vals)
        return tensors
    if how == "widen":
        shape = t.shape[:-1] + [t.shape[-1] + 1] if t.shape else [2]
        r = random.Random(name)
        tensors[name] = gen.Tensor(name, shape, t.dtype,
                                   [0.1 * r.gauss(0, 1)
                                    for _ in range(gen.numel(shape))])
        return tensors
    if how == "i32":
        tensors[name] = gen.Tensor(name, t.shape, "I32",
                                   [0] * gen.numel(t.shape))
        return tensors
    tensors[name] = t
    stem = name[:-len(".weight")] if name.endswith(".weight") else name + "_extra"
    tensors[stem + ".bias"] = gen.Tensor(stem + ".bias", [1], t.dtype, [0.5])
    return tensors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moe-compile",
                    default=os.path.join(ROOT, "build/bin/moe-compile"))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--mode", default="all", choices=["config", "tensors", "all"])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--keep", default=None)
    ap.add_argument("--models", default=None,
                    help="comma-separated checkpoint names (default: all)")
    a = ap.parse_args()
    names = [m[0] for m in MODELS]
    wanted = a.models.split(",") if a.models else names
    for w in wanted:
        if w not in names:
            ap.error(f"--models: unknown '{w}' (one of {', '.join(names)})")
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    print(f"fuzz-import: seed {seed}", flush=True)
    rng = random.Random(seed)
    keep = a.keep or tempfile.mkdtemp(prefix="moe-fuzz-import-")
    os.makedirs(keep, exist_ok=True)
    work = tempfile.mkdtemp(prefix="moe-fuzz-import-work-")

    # Case: (name, model, change kind, argument, expect an error or None).
    built = {}
    cases = []
    for name, family, kind, fused, layers in MODELS:
        if name not in wanted:
            continue
        config, tensors, moe, dense = gen.build(
            family, layers, "f32", 0,
            kind if family == "moe_mlir" and kind else "projected_router",
            fused, router_bias=kind == "router_bias")
        built[name] = (family, config, tensors, moe)
        if a.mode in ("config", "all"):
            for path in config_paths(config):
                for v in VALUES:
                    cases.append((name, "config", (path, v), None))
        if a.mode in ("tensors", "all"):
            blocks = block_prefixes(config, family, moe, dense)
            for t in sorted(tensors, key=gen.natural_key):
                inside = any(t.startswith(b) for b in blocks)
                for how in TENSOR_CHANGES:
                    cases.append((name, "tensors", (t, how), inside))
    if a.runs:
        cases = rng.sample(cases, min(a.runs, len(cases)))
    # One sharding per case, drawn here so that --seed repeats a run.
    cases = [c + (rng.random() < 0.5,) for c in cases]

    def describe(case):
        model, mode, arg, _, sharded = case
        if mode == "config":
            path, v = arg
            shown = "removed" if v is REMOVED else json.dumps(v)
            return f"{model} config {'.'.join(path)} = {shown}"
        return f"{model} tensor {arg[0]} {arg[1]}" + (" (sharded)" if sharded else "")

    def run(case):
        model, mode, arg, expect_error, sharded = case
        family, config, tensors, moe = built[model]
        d = tempfile.mkdtemp(dir=work)
        config = json.loads(json.dumps(config))
        if mode == "config":
            set_path(config, arg[0], arg[1])
        else:
            tensors = change_tensor(tensors, arg[0], arg[1])
        try:
            gen.write_model(os.path.join(d, "model"), family, config, tensors, moe,
                            sharded, None)
        except Exception as e:  # noqa: BLE001 (the harness's own failure)
            shutil.rmtree(d, ignore_errors=True)
            return describe(case), f"could not write the case: {e!r}", ""
        cmd = [a.moe_compile, os.path.join(d, "model"), "-o",
               os.path.join(d, "out"), "-j", "1"]
        rc, err = execute(cmd, 120)
        why = judge(rc, err)
        if not why and expect_error is True and rc == 0:
            why = "a change inside a layer's block compiled"
        if not why and expect_error is False and rc != 0:
            why = "a change outside the layers' blocks was refused"
        name = describe(case)
        if why:
            kept = os.path.join(keep, os.path.basename(d))
            shutil.move(os.path.join(d, "model"), kept)
            with open(kept + ".cmd", "w") as f:
                f.write(" ".join(cmd) + f"\n# {name}: {why}\n" + err[-4000:])
            shutil.rmtree(d, ignore_errors=True)
            return name, why, kept
        shutil.rmtree(d, ignore_errors=True)
        return name, None, ""

    failures = run_all(cases, run, a.jobs)
    shutil.rmtree(work, ignore_errors=True)
    print(f"fuzz-import: {len(cases)} runs, {failures} failed "
          f"(seed {seed}; failing inputs in {keep})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
