#!/usr/bin/env python3
"""CPU benchmark: a compiled Mixtral-style layer against the C++ reference
loop and PyTorch eager (the Hugging Face loop over experts), in one run.

    python3 benchmarks/cpu_bench.py [--bin build/bin] [--runs 3] [--quick]

Layer: softmax top-k router, renormalised, SwiGLU experts, f32 (bf16 with
--dtype bf16; --experts E keeps the grid rows with E experts), H = 1024,
F = 2816. Prints a table of median times and the ratios against the
baselines measured in the same run: the same layer compiled with
`gemm-vector-bits=0` (the blocked GEMMs' 4 x 4 dot-product tiles only,
without the outer-product micro-kernel that the default build takes for
blocks of 8 rows or more), with `runtime-allocator=0` (buffers from
malloc/free instead of the runtime's cache of large blocks), with
`gemm-amx=0` (a bf16 layer on an AMX host: the vector micro-kernel instead
of AMX tiles; "-" where the default build has no tiles), with
`polynomial-math=0` (libm's expf/erff/tanhf instead of MLIR's polynomial
approximations), with
`blocked-gemms=0` (one gathered mat-vec per slot, the CPU pipeline before
the grouped expert GEMMs), the C++ reference loop and PyTorch eager. A
second table times both on --threads threads (default: every core): ours
with `moe-run --threads N --split tokens` (the tokens in ranges of at least
16, one call each; a single range below 32 tokens, shown as "-") and
`--split columns` (one call, each GEMM's column groups cut into tasks for
the threads), PyTorch with torch.set_num_threads; and, as the cost of the
parallel loops on one thread, the same layer compiled with `parallel=0`.
PyTorch is optional (`pip install torch`); its column is skipped when it is
missing. The first table runs on one thread (torch.set_num_threads(1)).
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

H, F = 1024, 2816


def layer_mlir(e, k, dtype="f32"):
    t = lambda s: "tensor<%sx%s>" % ("x".join(map(str, s)), dtype)
    return (
        "func.func @moe(%%input: tensor<?x%dx{dt}>, %%router: %s, %%gate: %s, %%up: %s, %%down: %s)"
        " -> tensor<?x%dx{dt}> {{\n"
        "  %%y = moe.layer %%input : tensor<?x%dx{dt}> router(%%router : %s) gate(%%gate : %s)"
        " up(%%up : %s) down(%%down : %s)\n"
        "      {{routing = #moe.routing<softmax, topk, k = %d, renormalize>}} -> tensor<?x%dx{dt}>\n"
        "  return %%y : tensor<?x%dx{dt}>\n}}\n"
    ).format(dt=dtype) % (H, t([e, H]), t([e, F, H]), t([e, F, H]), t([e, H, F]), H, H,
         t([e, H]), t([e, F, H]), t([e, F, H]), t([e, H, F]), k, H, H)


def torch_layer(torch, e, k, tokens, runs, threads=1, dtype="f32"):
    """Hugging Face MixtralSparseMoeBlock-style eager loop (median ms)."""
    g = torch.Generator().manual_seed(0)
    s = 1 / H ** 0.5
    wr = (torch.rand(e, H, generator=g) * 2 - 1) * s
    w1 = (torch.rand(e, F, H, generator=g) * 2 - 1) * s
    w3 = (torch.rand(e, F, H, generator=g) * 2 - 1) * s
    w2 = (torch.rand(e, H, F, generator=g) * 2 - 1) / F ** 0.5
    x = torch.rand(tokens, H, generator=g) * 2 - 1
    if dtype == "bf16":
        wr, w1, w3, w2, x = (v.to(torch.bfloat16) for v in (wr, w1, w3, w2, x))

    def run():
        logits = x @ wr.T
        probs = torch.softmax(logits, dim=-1, dtype=torch.float)
        w, idx = torch.topk(probs, k, dim=-1)
        w = (w / w.sum(dim=-1, keepdim=True)).to(x.dtype)  # as HF does
        out = torch.zeros_like(x)
        mask = torch.nn.functional.one_hot(idx, num_classes=e).permute(2, 1, 0)
        for j in range(e):
            slot, tok = torch.where(mask[j])
            if tok.numel() == 0:
                continue
            cur = x[tok]
            h = torch.nn.functional.silu(cur @ w1[j].T) * (cur @ w3[j].T)
            out.index_add_(0, tok, (h @ w2[j].T) * w[tok, slot, None])
        return out

    torch.set_num_threads(threads)
    with torch.no_grad():
        run()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="build/bin")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="E = 8 only, T <= 16")
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                   help="the layer's tensors (PyTorch runs in the same type)")
    p.add_argument("--experts", type=int, default=0,
                   help="only the grid's rows with this many experts")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads of the second table (1: no second table)")
    a = p.parse_args()
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
        print("PyTorch not installed: its column is skipped", file=sys.stderr)

    grid = ([(8, 2, t) for t in (1, 16, 128, 512)] +
            [(64, 8, t) for t in (1, 16, 128)])
    if a.quick:
        grid = [(8, 2, t) for t in (1, 16)]
    if a.experts:
        grid = [g for g in grid if g[0] == a.experts]

    def compile_to(src, dst, *options):
        subprocess.run([os.path.join(a.bin, "moe-compile"), src, "-o", dst]
                       + list(options), check=True, capture_output=True)

    def moe_run(artifact, tokens, *options):
        return subprocess.run(
            [os.path.join(a.bin, "moe-run"), artifact, "--tokens", str(tokens),
             "--seed", "1", "--bench", str(a.runs)] + list(options),
            check=True, capture_output=True, text=True).stdout

    def median(out, label="bench"):
        return float(re.search(label + r": .* median ([0-9.]+) ms", out).group(1))

    rows, threaded = [], []
    work = tempfile.mkdtemp(prefix="moe-bench-")
    for e, k in sorted({(e, k) for e, k, _ in grid}):
        src = os.path.join(work, "moe_e%d_k%d.mlir" % (e, k))
        with open(src, "w") as f:
            f.write(layer_mlir(e, k, a.dtype))
        art = src[:-5]
        gathered = art + "_gathered"
        dot = art + "_dot"
        libc = art + "_libc"
        noamx = art + "_noamx"
        libm = art + "_libm"
        sequential = art + "_sequential"
        compile_to(src, art)
        compile_to(src, gathered, "--pipeline-options=blocked-gemms=0")
        compile_to(src, dot, "--pipeline-options=gemm-vector-bits=0")
        compile_to(src, libc, "--pipeline-options=runtime-allocator=0")
        compile_to(src, noamx, "--pipeline-options=gemm-amx=0")
        compile_to(src, libm, "--pipeline-options=polynomial-math=0")
        # Whether the default build took AMX tiles (a bf16 layer on an AMX
        # host); else the gemm-amx=0 column is the same code and is skipped.
        with open(os.path.join(art, "manifest.json")) as f:
            uses_amx = '"amx_tiles": true' in f.read()
        if a.threads > 1:
            compile_to(src, sequential, "--pipeline-options=parallel=0")
        for _, _, tokens in [g for g in grid if g[:2] == (e, k)]:
            out = moe_run(art, tokens, "--bench-reference", str(a.runs))
            ours, ref = median(out), median(out, "bench-reference")
            gath = median(moe_run(gathered, tokens))
            dots = median(moe_run(dot, tokens))
            mallocs = median(moe_run(libc, tokens))
            vec = median(moe_run(noamx, tokens)) if uses_amx else None
            libms = median(moe_run(libm, tokens))
            eager = (torch_layer(torch, e, k, tokens, a.runs, dtype=a.dtype)
                     if torch else None)
            flops = 2 * tokens * k * 3 * H * F
            rows.append((e, k, tokens, ours, dots, mallocs, vec, libms, gath,
                         ref, eager, flops))
            if a.threads > 1:
                seq = median(moe_run(sequential, tokens))
                n = str(a.threads)
                out = moe_run(art, tokens, "--threads", n, "--split", "tokens")
                parts = int(re.search(r"threads: T = \d+ in (\d+) part", out).group(1))
                by_tokens = median(out) if parts > 1 else None
                by_columns = median(moe_run(art, tokens, "--threads", n,
                                            "--split", "columns"))
                eager_par = (torch_layer(torch, e, k, tokens, a.runs, a.threads,
                                         a.dtype) if torch else None)
                threaded.append((e, k, tokens, ours, seq, by_tokens, parts,
                                 by_columns, eager, eager_par))
            print("E=%d K=%d T=%d done" % (e, k, tokens), file=sys.stderr)

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f
                         if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch:
        model += "; PyTorch %s" % torch.__version__
    print("CPU: %s, %d cores; %s; layer %s" % (
        model, os.cpu_count(), time.strftime("%Y-%m-%d"), a.dtype))
    print("| E | K | T | compiled ms | GFLOP/s | dot tiles ms | dot / compiled |"
          " malloc ms | malloc / compiled | no AMX ms | no AMX / compiled |"
          " libm ms | libm / compiled | gathered ms | gathered / compiled |"
          " reference ms | ref / compiled | PyTorch eager ms | eager / compiled |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (e, k, tokens, ours, dots, mallocs, vec, libms, gath, ref, eager,
         flops) in rows:
        print("| %d | %d | %d | %.3f | %.2f | %.3f | %.2f | %.3f | %.2f | %s | %s | %.3f | %.2f | %.3f | %.2f | %.3f | %.2f | %s | %s |" % (
            e, k, tokens, ours, flops / ours / 1e6, dots, dots / ours,
            mallocs, mallocs / ours,
            "%.3f" % vec if vec else "-", "%.2f" % (vec / ours) if vec else "-",
            libms, libms / ours, gath, gath / ours, ref, ref / ours,
            "%.3f" % eager if eager else "-",
            "%.2f" % (eager / ours) if eager else "-"))
    if threaded:
        print()
        print("%d threads (moe-run --threads %d --split tokens|columns; PyTorch "
              "set_num_threads(%d)); 1 thread: the default build and parallel=0:"
              % (a.threads, a.threads, a.threads))
        print("| E | K | T | 1 thread ms | parallel=0 ms | tokens ms (parts) |"
              " columns ms | tokens speed-up | columns speed-up |"
              " PyTorch eager 1 thread ms | PyTorch eager ms |"
              " eager / compiled (best) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for (e, k, tokens, one, seq, by_tokens, parts, by_columns, eager,
             eager_par) in threaded:
            best = min(by_columns, by_tokens or by_columns)
            print("| %d | %d | %d | %.3f | %.3f | %s | %.3f | %s | %.2f | %s | %s | %s |" % (
                e, k, tokens, one, seq,
                "%.3f (%d)" % (by_tokens, parts) if by_tokens else "-",
                by_columns,
                "%.2f" % (one / by_tokens) if by_tokens else "-",
                one / by_columns,
                "%.3f" % eager if eager else "-",
                "%.3f" % eager_par if eager_par else "-",
                "%.2f" % (eager_par / best) if eager_par else "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
