#!/usr/bin/env python3
"""Writes a little-endian f4 .npy file (no NumPy needed).

    write_npy.py OUT.npy ROWS COLS EXPR
EXPR is a Python expression in r (row) and c (column), e.g. "0.5" or
"float('nan') if r == 0 else 0.1 * (c - 3)". Also math.inf and math.nan.
"""
import math
import struct
import sys

out, rows, cols, expr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
shape = "(%d, %d)" % (rows, cols) if rows >= 0 else "(%d,)" % cols
rows = max(rows, 1)
vals = [float(eval(expr, {"math": math, "r": r, "c": c, "inf": math.inf, "nan": math.nan}))
        for r in range(rows) for c in range(cols)]
header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape
header += " " * ((64 - (11 + len(header)) % 64) % 64) + "\n"
with open(out, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<%df" % len(vals), *vals))
