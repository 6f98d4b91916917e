#!/usr/bin/env python3
"""Writes a small .safetensors file (no NumPy or torch needed), optionally
corrupted, for the runtime's tests.

    write_safetensors.py OUT NAME:DTYPE:R,C:EXPR [NAME:...]... [--corrupt MODE]

DTYPE is F32, F16 or BF16 (values given by EXPR in r, c as in write_npy.py).
MODE: truncate (cut the data short), overlap (two tensors share bytes),
beyond (an offset past the end of the file), header (header length larger
than the file).
"""
import json
import math
import struct
import sys


def encode(dtype, vals):
    if dtype == "F32":
        return struct.pack("<%df" % len(vals), *vals)
    if dtype == "F16":
        return struct.pack("<%de" % len(vals), *vals)
    if dtype == "BF16":
        raw = struct.pack("<%df" % len(vals), *vals)
        return b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))
    raise SystemExit("unknown dtype " + dtype)


def main():
    args = sys.argv[1:]
    mode = None
    if "--corrupt" in args:
        i = args.index("--corrupt")
        mode = args[i + 1]
        del args[i:i + 2]
    out, specs = args[0], args[1:]
    header, data = {}, b""
    for spec in specs:
        name, dtype, shape, expr = spec.split(":", 3)
        dims = [int(d) for d in shape.split(",")]
        rows, cols = (dims[0], dims[1]) if len(dims) == 2 else (1, dims[0])
        vals = [float(eval(expr, {"math": math, "r": r, "c": c}))
                for r in range(rows) for c in range(cols)]
        blob = encode(dtype, vals)
        header[name] = {"dtype": dtype, "shape": dims,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    names = list(header)
    if mode == "overlap" and len(names) > 1:
        a, b = header[names[0]], header[names[1]]
        size = b["data_offsets"][1] - b["data_offsets"][0]
        b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + size]
    if mode == "beyond":
        last = header[names[-1]]
        last["data_offsets"] = [last["data_offsets"][0] + 16, last["data_offsets"][1] + 16]
    text = json.dumps(header).encode()
    blob = struct.pack("<Q", len(text) + (1000 if mode == "header" else 0)) + text + data
    if mode == "truncate":
        blob = blob[:len(blob) - 10]
    with open(out, "wb") as f:
        f.write(blob)


if __name__ == "__main__":
    main()
