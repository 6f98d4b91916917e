#!/usr/bin/env python3
"""Add-expert latency benchmark (issue 6, item 4): the time from "add" to
"serving with the new expert", for a 1-layer and a 32-layer model, against a
full cold recompile of the same model measured in the same run.

Two shapes of Mixtral-style bf16 checkpoints (E = 8, K = 2): "toy", the
generator's (H = 32, F = 48, 0.07 MiB of expert weights per layer), and
"mid", H = 512, F = 1792 (1/8 of Mixtral-8x7B's H and F, 42 MiB per layer;
written here with the real tensor names and values drawn from a seeded
pool, N(0, 0.05^2), since the pure-Python generator is too slow at that size). For each
shape, model size and repetition:
  * live add (cpu): a compiled copy of the model is served by `moe-live`
    (one thread calling every layer in a loop, leaving the other core to the
    compiler) and an expert is added to one layer; moe-live reports the
    compile (moe-compile subprocess, changed layer only), load (changed
    layers) and swap times and the time until the first call served by the
    new layer returned;
  * cold recompile (cpu, cuda:sm_90): moe-compile of the checkpoint with the
    expert added into an empty output directory (every kernel and weights
    file built);
  * add recompile (cuda:sm_90): the same add on a compiled cuda:sm_90 copy
    (compile only: no GPU here to serve it).
Medians over --reps; every repetition starts from a fresh copy of the
compiled model (hard links: moe-compile replaces files by renaming, never
in place), so no kernel of an earlier repetition is reused, and after a
sync, so that no step pays for the write-back of the one before. Prints a
Markdown table with medians and ranges (on a shared machine the minimum
is the least disturbed figure; ratios are given for both).

  python3 benchmarks/add_expert.py [--bin build/bin] [--reps 3] [--layers 1,32]
                                   [--shapes toy,mid]
"""
import json
import random
import struct
import argparse
import array
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
GEN = os.path.join(ROOT, "tools", "moe-gen-checkpoint", "moe_gen_checkpoint.py")
ADD = os.path.join(ROOT, "test", "Target", "HFImport", "add_expert.py")


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, **kw)
    if p.returncode != 0:
        sys.exit("FAILED (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stdout))
    return p.stdout


def timed(cmd):
    os.sync()
    t0 = time.perf_counter()
    out = run(cmd)
    return time.perf_counter() - t0, out


def write_mid(out, layers, H=512, F=1792, E=8, K=2):
    """A Mixtral checkpoint with only the MoE tensors (what the importer
    reads), bf16, values N(0, 0.05^2) from a seeded pool of 2^22."""
    os.makedirs(out, exist_ok=True)
    cfg = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"],
           "hidden_size": H, "intermediate_size": F, "num_hidden_layers": layers,
           "num_local_experts": E, "num_experts_per_tok": K, "hidden_act": "silu",
           "torch_dtype": "bfloat16", "rms_norm_eps": 1e-5}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    rng = random.Random(0)
    n = 1 << 22
    bits = array.array("I", struct.pack("<%df" % n, *[rng.gauss(0.0, 0.05)
                                                      for _ in range(n)]))
    pool = array.array("H", (b >> 16 for b in bits)).tobytes()   # bf16, truncated
    pool += pool
    tensors = []
    for i in range(layers):
        p = "model.layers.%d.block_sparse_moe." % i
        tensors.append((p + "gate.weight", [E, H]))
        for e in range(E):
            for w, shape in (("w1", [F, H]), ("w3", [F, H]), ("w2", [H, F])):
                tensors.append((p + "experts.%d.%s.weight" % (e, w), shape))
    header, off = {}, 0
    for name, shape in tensors:
        size = 2 * shape[0] * shape[1]
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + size]}
        off += size
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name, shape in tensors:
            size = 2 * shape[0] * shape[1]
            at = 2 * rng.randrange(n)
            f.write(pool[at:at + size])
    return off


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layers", default="1,32")
    ap.add_argument("--shapes", default="toy,mid")
    ap.add_argument("--threads", type=int, default=1,
                    help="serving threads calling the model during the add")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    compiler = os.path.join(a.bin, "moe-compile")
    live = os.path.join(a.bin, "moe-live")
    work = tempfile.mkdtemp(prefix="moe-add-")
    rows = []
    for shape, L in [(s, int(x)) for s in a.shapes.split(",")
                     for x in a.layers.split(",")]:
        ckpt = os.path.join(work, "ckpt_%s%d" % (shape, L))
        if shape == "toy":
            run([sys.executable, GEN, "--family", "mixtral", "--out", ckpt, "--layers",
                 str(L), "--dtype", "bf16", "--seed", "0"])
        else:
            write_mid(ckpt, L)
        add = os.path.join(work, "add%d.st" % L)
        layer = L // 2   # a middle layer
        run([sys.executable, ADD, "write", ckpt, "--layers", str(layer), "--out", add])
        base = {}
        for target in ("cpu", "cuda:sm_90"):
            base[target] = os.path.join(work, "base%d_%s" % (L, target.replace(":", "_")))
            run([compiler, ckpt, "--target=" + target, "-o", base[target]])
        m = {k: [] for k in ("compile", "load", "swap", "first", "cold_cpu",
                             "cold_cuda", "add_cuda")}
        for r in range(a.reps):
            served = os.path.join(work, "served%d_%d" % (L, r))
            shutil.copytree(base["cpu"], served, copy_function=os.link)
            # Each step starts with no dirty pages of the one before being
            # written back under it (up to a GiB at "mid" size).
            os.sync()
            out = run([live, served, "--add", add, "--compiler", compiler,
                       "--threads", str(a.threads), "--warmup-ms", "100",
                       "--after-ms", "100", "--seed", str(r)])
            if "0 failed" not in out or "FAIL" in out:
                sys.exit("moe-live reported a failure:\n" + out)
            lat = re.search(r"compile ([0-9.]+) s, load ([0-9.]+) s, swap ([0-9.]+) s", out)
            first = re.search(r"first call served by the new layers: ([0-9.]+) s", out)
            m["compile"].append(float(lat.group(1)))
            m["load"].append(float(lat.group(2)))
            m["swap"].append(float(lat.group(3)))
            m["first"].append(float(first.group(1)))
            shutil.rmtree(served)
            for target, key in (("cpu", "cold_cpu"), ("cuda:sm_90", "cold_cuda")):
                cold = os.path.join(work, "cold%d_%d" % (L, r))
                t, _ = timed([compiler, ckpt, "--add-expert", add, "--target=" + target,
                              "-o", cold])
                m[key].append(t)
                shutil.rmtree(cold)
            copy = os.path.join(work, "cuda%d_%d" % (L, r))
            shutil.copytree(base["cuda:sm_90"], copy, copy_function=os.link)
            t, out = timed([compiler, ckpt, "--add-expert", add, "--target=cuda:sm_90",
                            "-o", copy])
            if "kernels: 1 compiled" not in out or "weights: 1 written" not in out:
                sys.exit("the cuda add recompiled more than the changed layer:\n" + out)
            m["add_cuda"].append(t)
            shutil.rmtree(copy)
        rows.append((shape, L, {k: statistics.median(v) for k, v in m.items()},
                     {k: (min(v), max(v)) for k, v in m.items()}))
        for d in list(base.values()) + [ckpt]:
            shutil.rmtree(d)

    print("| shape | layers | target | add: compile s | load ms | swap us | add -> first "
          "call on new layer s (min-max) | cold recompile s (min-max) | cold / add "
          "(medians; minima) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape, L, v, r in rows:
        print("| %s | %d | cpu (live, moe-live) | %.3f | %.2f | %.1f | %.3f (%.3f-%.3f) | "
              "%.3f (%.3f-%.3f) | %.2fx; %.2fx |" % (
                  shape, L, v["compile"], v["load"] * 1e3, v["swap"] * 1e6, v["first"],
                  r["first"][0], r["first"][1], v["cold_cpu"], r["cold_cpu"][0],
                  r["cold_cpu"][1], v["cold_cpu"] / v["first"],
                  r["cold_cpu"][0] / r["first"][0]))
        print("| %s | %d | cuda:sm_90 (compile only) | %.3f (%.3f-%.3f) | | | | "
              "%.3f (%.3f-%.3f) | %.2fx; %.2fx |" % (
                  shape, L, v["add_cuda"], r["add_cuda"][0], r["add_cuda"][1],
                  v["cold_cuda"], r["cold_cuda"][0], r["cold_cuda"][1],
                  v["cold_cuda"] / v["add_cuda"], r["cold_cuda"][0] / r["add_cuda"][0]))
    print("(medians of %d runs; %d serving thread(s); work dir %s)" % (
        a.reps, a.threads, work if a.keep else "removed"))
    if not a.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
