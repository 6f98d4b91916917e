#!/usr/bin/env python3
"""Prints facts about the CUDA ELF (cubin) embedded in a cuda artifact's
layer.so: 'cubin: machine=190 (CUDA) kernels=N sm=XX', or 'cubin: none'.
Also says whether the host object runs its constructors (.init_array)."""
import struct
import sys

data = open(sys.argv[1], "rb").read()
# Host ELF: section headers, to find .init_array.
shoff = struct.unpack("<Q", data[0x28:0x30])[0]
shentsize, shnum, shstrndx = struct.unpack("<HHH", data[0x3A:0x40])
def section(i):
    off = shoff + i * shentsize
    name, typ, _, _, offset, size = struct.unpack("<IIQQQQ", data[off:off + 40])
    return name, typ, offset, size
strtab = section(shstrndx)
names = []
for i in range(shnum):
    n, typ, off, size = section(i)
    end = data.index(b"\0", strtab[2] + n)
    names.append(data[strtab[2] + n:end].decode())
print("host: init_array=%s" % ("yes" if ".init_array" in names else "no"))
i = data.find(b"\x7fELF", 1)
if i < 0:
    print("cubin: none")
    sys.exit(0)
machine = struct.unpack("<H", data[i + 18:i + 20])[0]
flags = struct.unpack("<I", data[i + 48:i + 52])[0]
# EF_CUDA_SM: the low byte of e_flags (CUDA 12+ cubins keep the SM there
# or in bits 8..15 depending on the ABI version): report both candidates.
sm = flags & 0xFF if (flags & 0xFF) >= 50 else (flags >> 8) & 0xFF
import re
kernels = len(set(re.findall(rb"\.text\.([A-Za-z0-9_]+)", data[i:])))
print("cubin: machine=%d%s kernels=%d sm=%d" %
      (machine, " (CUDA)" if machine == 190 else "", kernels, sm))
