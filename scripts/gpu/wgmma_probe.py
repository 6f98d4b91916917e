#!/usr/bin/env python3
"""Checks on a Hopper GPU how wgmma.mma_async reads no-swizzle K-major shared
memory, independently of moe-mlir's compiler (which does not travel to the
GPU machine).

The expert kernels of `expert-wgmma=1` (lib/Conversion/MoEToGPU/
MoEExpertsToGPU.cpp) store their A and B tiles as 8 x 16-byte core matrices,
`[row / 8][k / 8][8 x 8]`, and describe them with leading byte offset 128
(the next core matrix along K) and stride byte offset BK / 8 x 128 (the next
8 rows), per the author's reading of the PTX ISA ("Matrix Descriptor"). They
read the m64nNk16 f32 accumulators as lane l of warp w holding, for n8 tile j
and register r, row 16 w + l / 4 + 8 (r / 2), column 8 j + 2 (l % 4) + r % 2.

This script writes a CUDA source with one kernel per (N, BK, descriptor
variant), compiles it with nvcc for sm_90a, runs it on bf16 data drawn from a
seeded generator, and compares each result with a float reference computed
on the host (relative L2 error; f32 accumulation of bf16 products, so a right
layout gives ~1e-6 and a wrong one ~1). Variants:

  ours     LBO 128, SBO BK / 8 x 128 (what the compiler emits)
  swapped  LBO BK / 8 x 128, SBO 128 (the other reading of the two fields)
  swz128   (BK 64 only) the 128-byte swizzle the compiler emits for 128-byte
           rows in dynamic shared memory: row r at r x 128 bytes, its
           16-byte chunk c at chunk c ^ (r % 8), tiles 1024-byte aligned;
           descriptor layout type 1 (bits 62-63), SBO 1024, LBO 16, the
           start 32 bytes further per 16-wide K slice

It prints one line per case and `wgmma-probe: ours ok` when every `ours`
and `swz128` case matches (exit 0), else which variant matched (exit 1);
exit 2 when it cannot compile or run (no nvcc, no sm_90 device).

  python3 scripts/gpu/wgmma_probe.py [--nvcc PATH] [--seed S] [--keep DIR]
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile

CASES = [(n, bk) for n in (16, 128, 256) for bk in (16, 64)]


def variants(bk):
    return ("ours", "swapped") + (("swz128",) if bk == 64 else ())


def kernel(n, bk, variant):
    regs = n // 2  # f32 accumulators per thread: 64 x N / 128
    name = "probe_n%d_k%d_%s" % (n, bk, variant)
    sbo = bk // 8 * 128
    lbo, sbo = (128, sbo) if variant == "ours" else (sbo, 128)
    swz = variant == "swz128"
    if swz:
        lbo, sbo = 16, 1024
    # Where element (r, k) goes in shared memory, and the K slice step.
    place = ("r * 64 + ((k / 8) ^ (r % 8)) * 8 + k % 8" if swz else
             "((r / 8) * (%d / 8) + k / 8) * 64 + (r %% 8) * 8 + k %% 8" % bk)
    layout = "1ull << 62" if swz else "0ull"
    step = 32 if swz else 256
    outs = ", ".join("\"+f\"(d[%d])" % i for i in range(regs))
    ops = ", ".join("%%%d" % i for i in range(regs))
    return r"""
extern "C" __global__ void __launch_bounds__(128) %(name)s(
    const __nv_bfloat16 *a, const __nv_bfloat16 *b, float *out) {
  // A: 64 x BK, B: N x BK (both K contiguous in global memory), stored in
  // shared memory as [row / 8][k / 8][8 x 8] core matrices.
  __shared__ alignas(1024) __nv_bfloat16 sa[64 * %(bk)d];
  __shared__ alignas(1024) __nv_bfloat16 sb[%(n)d * %(bk)d];
  int t = threadIdx.x;
  for (int i = t; i < 64 * %(bk)d; i += 128) {
    int r = i / %(bk)d, k = i %% %(bk)d;
    sa[%(place)s] = a[i];
  }
  for (int i = t; i < %(n)d * %(bk)d; i += 128) {
    int r = i / %(bk)d, k = i %% %(bk)d;
    sb[%(place)s] = b[i];
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  float d[%(regs)d];
  for (int i = 0; i < %(regs)d; ++i)
    d[i] = 0.f;
  unsigned long long sa0 = (unsigned long long)__cvta_generic_to_shared(sa);
  unsigned long long sb0 = (unsigned long long)__cvta_generic_to_shared(sb);
  const unsigned long long fields =
      ((unsigned long long)(%(lbo)d >> 4) << 16) |
      ((unsigned long long)(%(sbo)d >> 4) << 32) | (%(layout)s);
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
  for (int ks = 0; ks < %(bk)d / 16; ++ks) {
    // The next 16-wide K slice: two core matrices (256 bytes) further, or
    // 32 bytes into the swizzled 128-byte rows.
    unsigned long long da = (((sa0 + ks * %(step)d) >> 4) & 0x3FFF) | fields;
    unsigned long long db = (((sb0 + ks * %(step)d) >> 4) & 0x3FFF) | fields;
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n%(n)dk16.f32.bf16.bf16 "
        "{%(ops)s}, %%%(ia)d, %%%(ib)d, p, 1, 1, 0, 0;\n}\n"
        : %(outs)s
        : "l"(da), "l"(db));
  }
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  // The accumulators as the expert kernels read them (mma.sync's m16n8
  // order per warp).
  int w = t / 32, l = t %% 32;
  for (int j = 0; j < %(n)d / 8; ++j)
    for (int r = 0; r < 4; ++r) {
      int row = 16 * w + l / 4 + 8 * (r / 2);
      int col = 8 * j + 2 * (l %% 4) + r %% 2;
      out[row * %(n)d + col] = d[j * 4 + r];
    }
}
""" % dict(name=name, n=n, bk=bk, regs=regs, lbo=lbo, sbo=sbo, outs=outs,
           ops=ops, ia=regs, ib=regs + 1, place=place, layout=layout, step=step)


def source():
    parts = [r"""
#include <cuda_bf16.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
"""]
    for n, bk in CASES:
        for v in variants(bk):
            parts.append(kernel(n, bk, v))
    calls = []
    for n, bk in CASES:
        for v in variants(bk):
            calls.append("  bad += run(probe_n%d_k%d_%s, %d, %d, \"%s\");"
                         % (n, bk, v, n, bk, v))
    parts.append(r"""
typedef void (*Kernel)(const __nv_bfloat16 *, const __nv_bfloat16 *, float *);

static unsigned long long state;
static float uniform() {  // xorshift64*, [-1, 1)
  state ^= state >> 12; state ^= state << 25; state ^= state >> 27;
  return float((state * 2685821657736338717ull) >> 40) / float(1 << 23) - 1.f;
}

static int run(Kernel k, int n, int bk, const char *variant) {
  std::vector<__nv_bfloat16> a(64 * bk), b(n * bk);
  std::vector<float> af(a.size()), bf(b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = __float2bfloat16(uniform());
    af[i] = __bfloat162float(a[i]);
  }
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = __float2bfloat16(uniform());
    bf[i] = __bfloat162float(b[i]);
  }
  __nv_bfloat16 *da, *db;
  float *dout;
  cudaMalloc(&da, a.size() * 2);
  cudaMalloc(&db, b.size() * 2);
  cudaMalloc(&dout, 64 * n * 4);
  cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice);
  cudaMemset(dout, 0xFF, 64 * n * 4);  // NaN poison
  k<<<1, 128>>>(da, db, dout);
  cudaError_t err = cudaDeviceSynchronize();
  std::vector<float> out(64 * n);
  cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost);
  cudaFree(da); cudaFree(db); cudaFree(dout);
  if (err != cudaSuccess) {
    printf("wgmma-probe: m64n%dk16 BK %d %-8s ERROR %s\n", n, bk, variant,
           cudaGetErrorString(err));
    return 1;
  }
  double num = 0, den = 0;
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < n; ++c) {
      double ref = 0;
      for (int kk = 0; kk < bk; ++kk)
        ref += double(af[r * bk + kk]) * double(bf[c * bk + kk]);
      double e = double(out[r * n + c]) - ref;
      num += std::isfinite(e) ? e * e : 1e30;
      den += ref * ref;
    }
  double rel = std::sqrt(num / den);
  bool ok = rel < 1e-4;
  printf("wgmma-probe: m64n%dk16 BK %d %-8s rel L2 %.3g %s\n", n, bk, variant,
         rel, ok ? "ok" : "MISMATCH");
  // The layouts the compiler emits must match.
  return (!ok && strcmp(variant, "swapped")) ? 1 : 0;
}

int main(int argc, char **argv) {
  state = argc > 1 ? strtoull(argv[1], nullptr, 10) * 2654435761ull + 1 : 1;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) !=
          cudaSuccess || major != 9) {
    printf("wgmma-probe: no sm_90 device\n");
    return 2;
  }
  int bad = 0;
""" + "\n".join(calls) + r"""
  printf("wgmma-probe: ours %s\n", bad ? "FAILED" : "ok");
  return bad ? 1 : 0;
}
""")
    return "".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nvcc", default=shutil.which("nvcc") or
                    "/usr/local/cuda/bin/nvcc")
    ap.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1 << 30))
    ap.add_argument("--keep", help="write the source and binary here")
    ap.add_argument("--compile-only", action="store_true")
    args = ap.parse_args()
    print("wgmma-probe: seed %d" % args.seed)
    work = args.keep or tempfile.mkdtemp(prefix="wgmma-probe-")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "wgmma_probe.cu")
    exe = os.path.join(work, "wgmma_probe")
    with open(src, "w") as f:
        f.write(source())
    if not os.path.exists(args.nvcc):
        print("wgmma-probe: no nvcc at %s" % args.nvcc)
        return 2
    res = subprocess.run([args.nvcc, "-O2", "-gencode", "arch=compute_90a,code=sm_90a",
                          "-o", exe, src],
                         capture_output=True, text=True)
    if res.returncode:
        print("wgmma-probe: nvcc failed:\n" + res.stderr[-4000:])
        return 2
    if args.compile_only:
        print("wgmma-probe: compiled %s" % exe)
        return 0
    return subprocess.run([exe, str(args.seed)]).returncode


if __name__ == "__main__":
    sys.exit(main())
