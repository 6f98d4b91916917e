#!/usr/bin/env python3
"""Checks `moe-compile --merge`: for every layer of a compiled model, each
merged expert's tensors (gate, up, down and biases) equal the
frequency-weighted mean of its members' rows in the full compile (in double,
rounded once to the dtype: f32, or bf16/f16 round-to-nearest-even), the
experts in no group are copied unchanged, and every other tensor (router,
shared expert, ...) is the full compile's.

  check_merge.py FULL_OUT MERGED_OUT merge.json
"""
import json
import struct
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from check_drop import read  # noqa: E402

FFN = {"gate", "up", "down", "gate_bias", "up_bias", "down_bias"}


def decode(dt, raw):
    if dt == "F32":
        return list(struct.unpack("<%df" % (len(raw) // 4), raw))
    vals = struct.unpack("<%dH" % (len(raw) // 2), raw)
    if dt == "BF16":
        return [struct.unpack("<f", struct.pack("<I", v << 16))[0] for v in vals]
    return [struct.unpack("<e", struct.pack("<H", v))[0] for v in vals]


def encode(dt, v):
    f = struct.pack("<f", v)  # double -> f32 (round to nearest even)
    if dt == "F32":
        return f
    if dt == "F16":
        return struct.pack("<e", v)
    bits = struct.unpack("<I", f)[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return struct.pack("<H", bits)


def merged_groups(groups, e):
    owner = {i: tuple(sorted(g)) for g in groups for i in g}
    out = []
    for i in range(e):
        g = owner.get(i, (i,))
        if g not in out:
            out.append(g)
    return out


def main():
    full_dir, merged_dir, plan_file = sys.argv[1:4]
    plan = {l["index"]: l for l in json.load(open(plan_file))["layers"]}
    model = json.load(open(full_dir + "/model.json"))
    for layer in model["layers"]:
        i = layer["index"]
        full = read(full_dir + "/" + layer["weights"])
        merged = read(merged_dir + "/" + layer["weights"])
        assert set(full) == set(merged), (i, sorted(full), sorted(merged))
        p = plan.get(i)
        e = full["up"][1][0]
        groups = merged_groups(p["groups"], e) if p else [(j,) for j in range(e)]
        freq = p.get("frequencies") if p else None
        n_mixed = 0
        for name, (dt, shape, raw) in full.items():
            mdt, mshape, mraw = merged[name]
            assert mdt == dt, (i, name)
            if name not in FFN or not p:
                assert mshape == shape and mraw == raw, "layer %d: %s changed" % (i, name)
                continue
            assert mshape == [len(groups)] + shape[1:], (i, name, mshape)
            vals = decode(dt, raw)
            row = len(vals) // shape[0]
            want = b""
            for g in groups:
                w = [freq[j] if freq else 1.0 for j in g]
                tot = sum(w)
                c = [x / tot for x in w] if tot > 0 else [1.0 / len(g)] * len(g)
                for k in range(row):
                    acc = sum(cj * vals[j * row + k] for cj, j in zip(c, g))
                    want += encode(dt, acc)
                n_mixed += len(g) > 1
            assert mraw == want, "layer %d: merged %s differs from the weighted mean" % (i, name)
        print("layer %d: %d experts -> %d, %d merged tensors ok" % (
            i, e, len(groups), n_mixed))


if __name__ == "__main__":
    main()
