#!/usr/bin/env python3
"""Prints the PTX of every gpu.binary object in MLIR read from stdin.

moe-opt --moe-to-nvvm="format=isa" embeds each kernel module's PTX as an
escaped string (`assembly = "..."`); this unescapes it so that FileCheck and
ptxas can read it. --summary prints instead one line
`kernels: N entries, M launched` (.entry count in the PTX, distinct kernels
named by gpu.launch_func). --kernel NAME prints only the body of the
entry NAME (from `.visible .entry NAME(` to its closing brace), so that a
test can check one kernel's instructions in any order (CHECK-DAG); its
input may also be PTX text.
"""

import re
import sys


def unescape(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\":
            nxt = s[i + 1]
            if nxt in '\\"':
                out.append(nxt)
                i += 2
            elif nxt == "n":
                out.append("\n")
                i += 2
            elif nxt == "t":
                out.append("\t")
                i += 2
            else:
                out.append(chr(int(s[i + 1:i + 3], 16)))
                i += 3
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def main():
    text = sys.stdin.read()
    ptx = [unescape(m) for m in
           re.findall(r'assembly = "((?:[^"\\]|\\.)*)"', text)]
    if "--summary" in sys.argv:
        entries = sum(len(re.findall(r"^\.visible \.entry ", p, re.M))
                      for p in ptx)
        launched = set(re.findall(r"gpu\.launch_func\s+(?:async\s+\[[^\]]*\]\s+|<[^>]*>\s+)?(@[\w$.]+::@[\w$.]+)",
                                  text))
        print("kernels: %d entries, %d launched" % (entries, len(launched)))
        return
    if not ptx and "--kernel" in sys.argv and ".entry" in text:
        ptx = [text]  # already PTX (e.g. written by an earlier ptx.py)
    if not ptx:
        sys.exit("ptx.py: no gpu.binary with PTX (format=isa) in the input")
    if "--kernel" in sys.argv:
        name = sys.argv[sys.argv.index("--kernel") + 1]
        # From `.visible .entry NAME(` to the last closing brace in column 0
        # before the next entry (inline asm blocks, e.g. wgmma's, also close
        # in column 0).
        bodies = []
        for p in ptx:
            starts = [m.start() for m in re.finditer(r"^\.visible \.entry ", p, re.M)]
            for i, st in enumerate(starts):
                if p.startswith(".visible .entry " + name + "(", st):
                    chunk = p[st:starts[i + 1] if i + 1 < len(starts) else len(p)]
                    bodies.append(chunk[:chunk.rfind("\n}") + 2])
        if not bodies:
            sys.exit("ptx.py: no entry named %s" % name)
        sys.stdout.write("\n".join(bodies) + "\n")
        return
    sys.stdout.write("\n".join(ptx))


if __name__ == "__main__":
    main()
