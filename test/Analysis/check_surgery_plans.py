#!/usr/bin/env python3
"""Checks moe-analyze's iterative drop and merge plans against independent
recomputations (pure standard library; numbers printed for the log).

    check_surgery_plans.py iterative --bin DIR --ckpt DIR --model DIR --work DIR
        --criterion C --keep N --rounds R --tokens T --seed S
    check_surgery_plans.py merge --bin DIR --model DIR --calib FILE
        (--target M | --threshold X)

iterative: runs `moe-analyze --rank C --keep N --rounds R` on layer 0; for
every round after the first, compiles the checkpoint again without the
experts dropped so far (`moe-compile --drop`), ranks that model one-shot on
the same tokens and requires the same scores (relative 1e-3: the round lines
print 4 digits) and the same drops. The final list must be the union of the
rounds' drops.

merge: computes linear CKA of the experts' output samples from the
calibration file (centred n x n Gram matrices) and applies the grouping rule
of docs/notes/surgery-analysis.md; the groups `moe-analyze --merge-plan
linear` prints for every layer must be the same.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys


def run(bindir, *cmd):
    r = subprocess.run([os.path.join(bindir, cmd[0])] + list(cmd[1:]),
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("FAIL: %s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout


def iterative(a):
    out = run(a.bin, "moe-analyze", a.model, "--rank", a.criterion, "--keep",
              str(a.keep), "--rounds", str(a.rounds), "--tokens", str(a.tokens),
              "--seed", str(a.seed), "--layer", "0")
    rounds = []
    for line in out.splitlines():
        m = re.match(r"\s+round (\d+): (\d+) experts, ranked \(expert:score\) (.*); drop (.*)$",
                     line)
        if m:
            scores = {int(e): float(v) for e, v in
                      (p.split(":") for p in m.group(3).split())}
            rounds.append((int(m.group(2)), scores, [int(x) for x in m.group(4).split()]))
    final = re.search(r"drop \(keep \d+ of (\d+)\):((?: \d+)*)", out)
    if not rounds or not final:
        sys.exit("FAIL: no rounds in:\n" + out)
    total = int(final.group(1))
    dropped = []
    for r, (n, scores, drops) in enumerate(rounds):
        kept = [e for e in range(total) if e not in dropped]
        if sorted(scores) != kept or n != len(kept):
            sys.exit("FAIL: round %d ranks %s, expected the experts left %s" % (
                r + 1, sorted(scores), kept))
        if r > 0:
            d = os.path.join(a.work, "round%d" % (r + 1))
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "drop.json"), "w") as f:
                json.dump({"format": "moe-drop/1", "layers": [
                    {"index": 0, "drop": sorted(dropped)}]}, f)
            run(a.bin, "moe-compile", a.ckpt, "--drop", os.path.join(d, "drop.json"),
                "-o", os.path.join(d, "m"))
            ranked = run(a.bin, "moe-analyze", os.path.join(d, "m"), "--rank", a.criterion,
                         "--tokens", str(a.tokens), "--seed", str(a.seed), "--layer", "0")
            direct = {}
            for line in ranked.splitlines():
                m = re.match(r"\s+\d+\s+(\d+)\s+(\S+)$", line)
                if m:
                    direct[kept[int(m.group(1))]] = float(m.group(2))
            if sorted(direct) != kept:
                sys.exit("FAIL: the recompiled model ranks %s" % sorted(direct))
            worst = max(abs(scores[e] - direct[e]) / max(abs(direct[e]), 1e-12)
                        for e in kept)
            if worst > 1e-3:
                sys.exit("FAIL: round %d scores differ from a one-shot ranking of the "
                         "model without experts %s (worst relative %.3g)" % (
                             r + 1, sorted(dropped), worst))
            print("round %d: %d scores equal a fresh ranking of the model compiled "
                  "without %s (worst relative %.2g)" % (r + 1, len(kept), sorted(dropped), worst))
        dropped += drops
    got = [int(x) for x in final.group(2).split()]
    if got != sorted(dropped):
        sys.exit("FAIL: final drop %s is not the union of the rounds %s" % (got, sorted(dropped)))
    print("iterative %s: %d rounds, dropped %s" % (a.criterion, len(rounds), got))


def centred_gram(x, n, d):
    g = [[sum(x[i * d + k] * x[j * d + k] for k in range(d)) for j in range(n)]
         for i in range(n)]
    row = [sum(r) / n for r in g]
    tot = sum(row) / n
    return [[g[i][j] - row[i] - row[j] + tot for j in range(n)] for i in range(n)]


def linear_cka(ga, gb):
    dot = lambda p, q: sum(p[i][j] * q[i][j] for i in range(len(p)) for j in range(len(p)))
    aa, bb = dot(ga, ga), dot(gb, gb)
    return dot(ga, gb) / math.sqrt(aa * bb) if aa > 0 and bb > 0 else 0.0


def groups_rule(sim, freq, target, threshold):
    e = len(freq)
    order = sorted(range(e), key=lambda i: (-freq[i], i))
    centre, centres = {}, []

    def best(i):
        b = None
        for c in centres:
            if b is None or sim[i][c] > sim[i][b]:
                b = c
        return b
    if target:
        centres = order[:target]
        for c in centres:
            centre[c] = c
        for i in order[target:]:
            centre[i] = best(i)
    else:
        for i in order:
            b = best(i)
            if b is not None and sim[i][b] >= threshold:
                centre[i] = b
            else:
                centres.append(i)
                centre[i] = i
    groups = {}
    for i in range(e):
        groups.setdefault(centre[i], []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def merge(a):
    calib = json.load(open(a.calib))
    cmd = ["moe-analyze", a.model, "--merge-plan", "linear", "--calib", a.calib]
    cmd += ["--target", str(a.target)] if a.target else ["--threshold", str(a.threshold)]
    out = run(a.bin, *cmd)
    printed, layer = {}, None
    for line in out.splitlines():
        m = re.match(r"layer (\d+): merge plan", line)
        if m:
            layer = int(m.group(1))
            printed[layer] = []
        m = re.match(r"\s+\d+\s+([0-9+]+)\s", line)
        if m and layer is not None:
            printed[layer].append([int(x) for x in m.group(1).split("+")])
    for l in calib["layers"]:
        e, h, n = l["experts"], l["hidden_size"], l["sample_tokens"]
        grams = [centred_gram(l["output_samples"][i], n, h) for i in range(e)]
        sim = [[linear_cka(grams[i], grams[j]) for j in range(e)] for i in range(e)]
        want = groups_rule(sim, l["routed_counts"], a.target, a.threshold)
        got = printed.get(l["index"])
        if got != want:
            sys.exit("FAIL: layer %d: moe-analyze groups %s, recomputed %s" % (
                l["index"], got, want))
        print("layer %d: %d groups as recomputed, %d merged" % (
            l["index"], len(want), sum(len(g) for g in want if len(g) > 1)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["iterative", "merge"])
    p.add_argument("--bin", required=True)
    p.add_argument("--ckpt")
    p.add_argument("--model", required=True)
    p.add_argument("--work")
    p.add_argument("--calib")
    p.add_argument("--criterion")
    p.add_argument("--keep", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--target", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.0)
    a = p.parse_args()
    iterative(a) if a.mode == "iterative" else merge(a)


if __name__ == "__main__":
    main()
