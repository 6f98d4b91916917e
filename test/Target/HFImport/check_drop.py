#!/usr/bin/env python3
"""Checks `moe-compile --drop`: for every layer of a compiled model, the
per-expert tensors of the dropped compile equal the full compile's with the
listed rows removed, and every other tensor is unchanged.

  check_drop.py FULL_OUT DROPPED_OUT drop.json
"""
import json
import struct
import sys

PER_EXPERT = {"router", "router_bias", "selection_bias", "domain_embeddings",
              "gate", "up", "down", "gate_bias", "up_bias", "down_bias",
              "lora_a", "lora_b"}
SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def read(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        out[name] = (t["dtype"], t["shape"], data[base + b:base + e])
    return out


def main():
    full_dir, drop_dir, drop_file = sys.argv[1:4]
    drops = {l["index"]: l["drop"] for l in json.load(open(drop_file))["layers"]}
    model = json.load(open(full_dir + "/model.json"))
    checked = 0
    for layer in model["layers"]:
        i = layer["index"]
        full = read(full_dir + "/" + layer["weights"])
        dropped = read(drop_dir + "/" + layer["weights"])
        gone = set(drops.get(i, []))
        assert set(full) == set(dropped), (i, sorted(full), sorted(dropped))
        for name, (dt, shape, raw) in full.items():
            ddt, dshape, draw = dropped[name]
            if name in PER_EXPERT and gone:
                row = len(raw) // shape[0]
                want = b"".join(raw[r * row:(r + 1) * row]
                                for r in range(shape[0]) if r not in gone)
                assert dshape == [shape[0] - len(gone)] + shape[1:], (i, name, dshape)
            else:
                want = raw
                assert dshape == shape, (i, name)
            assert ddt == dt and draw == want, "layer %d: tensor %s differs" % (i, name)
            checked += 1
        print("layer %d: %d tensors ok, dropped %s" % (i, len(full), sorted(gone)))
    print("check_drop: %d tensors ok" % checked)


if __name__ == "__main__":
    main()
