"""Reads the fake driver's exit reports of cuda-pool.test's runs."""
import os
import re
import sys

d = sys.argv[1]


def report(name):
    text = open(os.path.join(d, name + ".txt")).read()
    m = re.search(r"(\d+) live allocation\(s\) at exit, (\d+) allocation\(s\) "
                  r"made, (\d+) byte\(s\) copied to the device", text)
    if not m:
        sys.exit("no fake-cuda report in %s.txt:\n%s" % (name, text))
    return [int(g) for g in m.groups()] + ["activations in device memory" in text]


r = {n: report(n) for n in ["pool2", "pool6", "nopool2", "nopool6", "hostio", "poison"]}
print("pool: extra allocations for 4 more calls:", r["pool6"][1] - r["pool2"][1])
print("no pool: extra allocations for 4 more calls:", r["nopool6"][1] - r["nopool2"][1])
print("live at exit:", *(r[n][0] for n in r))
print("bytes to the device: device io %d, host io %d" % (r["pool6"][2], r["hostio"][2]))
print("bench notes: device io %d, host io %d" % (r["pool6"][3], r["hostio"][3]))
