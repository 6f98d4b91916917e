#!/usr/bin/env python3
"""GPU benchmark of one MoE layer at the reference shapes (MOE_SEMANTICS.md §6).

Runs on the GPU machine (PyTorch, CUDA; no LLVM/MLIR), in one process, for each
shape and token count T:

  eager      Hugging Face-style loop over experts (index_select, 3 matmuls,
             index_add_), bf16
  compile    torch.compile of the same function (default mode, one graph per T)
  grouped    tokens sorted by expert and torch._grouped_mm for gate/up and
             down (when this PyTorch/GPU has it)
  dense      cuBLAS GEMMs with the same FLOPs: (T*K x H)(H x 2F), (T*K x F)(F x H)
             — the upper bound the issue measures against
  vllm       vLLM's Triton fused_moe kernel (its fused_moe_kernel, run from
             <artifacts>/vllm/fused_moe_kernel.py, which `gpu-run.sh prepare`
             copies from the ignored third_party/vllm/; never committed),
             with vLLM's tuned config for this shape and GPU where vLLM has
             one (<artifacts>/vllm/configs/), else vLLM's default config, as
             vLLM itself chooses; gate and up as one (E, 2F, H) weight,
             SwiGLU between the two launches and the sum over slots in
             PyTorch, as vLLM's fused_experts. The token-slot alignment
             (vLLM: its CUDA op moe_align_block_size) is done here in
             PyTorch, a few more small kernels per call: at decode this row
             overstates vLLM's time. Its output is checked against eager;
             a mismatch is reported instead of a time. bf16 shapes only
  moe-mlir   our compiled layer (`moe-run <artifact> --bench N --bench-tokens
             T,...`: weights resident, activations in device memory; its
             time includes what the runtime does per call); "gather"
             the same with the combine as a segmented reduction instead of
             f32 atomics (artifact <shape>.gather, when present); likewise
             any other <shape>.<variant> directory (other pipeline options)

and prints a table: median ms, TFLOP/s of the useful FLOPs 2*T*K*3*H*F
(+ shared), % of the dense bound (prefill), GB/s on the fewest bytes (weights
of the experts selected, read once, + x and y) and % of the copy bandwidth
measured in the same run (decode, T <= 16), and the time ratio against eager.
Every number is measured in this run; nothing is looked up per GPU.

    gpu_bench.py emit --out DIR [--shapes ...]      write one .mlir per shape
                                                    (dynamic T) for moe-compile
    gpu_bench.py run [--artifacts DIR] [--moe-run PATH] [--shapes ...]
                     [--tokens 1,16,...] [--iters N] [--budget S]
                     [--device cuda|cpu] [--scale F] [--out FILE]

A shape name may end in `-f32` (e.g. `mixtral-8x7b-f32`): the same layer in
f32, every implementation then in f32 (PyTorch's default: matmuls without
TF32, so "dense" is f32 cuBLAS); ours runs the f32 experts on tensor cores by
3xTF32. `emit` also writes the EXTRA shapes (not run by default; `--shapes`).

`--device cpu --scale 0.01` is a dry run of the script logic on a CPU (shapes
scaled down; the numbers mean nothing). `--budget` stops starting new rows
after that many seconds, so the table is written inside the run tool's limit.
"""

import argparse
import functools
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time

# name: (H, F, E, K, shared F, routing attribute, renormalise)
SHAPES = {
    "mixtral-8x7b": (4096, 14336, 8, 2, 0,
                     "#moe.routing<softmax, topk, k = 2, renormalize>"),
    "qwen3-30b-a3b": (2048, 768, 128, 8, 0,
                      "#moe.routing<softmax, topk, k = 8, renormalize>"),
    "olmoe-1b-7b": (2048, 1024, 64, 8, 0, "#moe.routing<softmax, topk, k = 8>"),
    "deepseek-v3": (7168, 2048, 256, 8, 2048,
                    "#moe.routing<sigmoid, group_limited_topk, k = 8, n_group = 8, "
                    "topk_group = 4, group_score = top2_sum, renormalize, "
                    "scaling_factor = 2.5>"),
}
TOKENS = [1, 16, 128, 1024, 4096, 16384]
# Emitted and accepted by --shapes, not run by default.
EXTRA_SHAPES = ["mixtral-8x7b-f32"]
# The element type of a shape (a `-f32` suffix), its MLIR name and bytes.
DTYPES = {"bf16": ("bf16", 2), "f32": ("f32", 4)}


def dtype_of(name):
    return "f32" if name.endswith("-f32") else "bf16"


def base_of(name):
    return name[:-len("-f32")] if name.endswith("-f32") else name


def known(name):
    return base_of(name) in SHAPES


def scaled(name, scale):
    h, f, e, k, fs, routing = SHAPES[base_of(name)]
    if scale == 1.0:
        return h, f, e, k, fs, routing
    r = lambda v: max(16, int(v * scale) // 16 * 16)
    return r(h), r(f), e, k, r(fs) if fs else 0, routing


def layer_mlir(name, scale=1.0):
    h, f, e, k, fs, routing = scaled(name, scale)
    elt = DTYPES[dtype_of(name)][0]
    t = lambda *d: "tensor<%sx%s>" % ("x".join(map(str, d)), elt)
    args = [("x", t("?", h)), ("router", t(e, h))]
    ops = "router(%%router : %s)" % t(e, h)
    if "sigmoid" in routing:
        args.append(("bias", "tensor<%dxf32>" % e))
        ops += " selection_bias(%%bias : tensor<%dxf32>)" % e
    for role, shape in (("gate", (e, f, h)), ("up", (e, f, h)), ("down", (e, h, f))):
        args.append((role, t(*shape)))
        ops += " %s(%%%s : %s)" % (role, role, t(*shape))
    if fs:
        for role, shape in (("shared_gate", (fs, h)), ("shared_up", (fs, h)),
                            ("shared_down", (h, fs))):
            args.append((role, t(*shape)))
            ops += " %s(%%%s : %s)" % (role, role, t(*shape))
    sig = ", ".join("%%%s: %s" % a for a in args)
    return ("func.func @layer(%s) -> %s {\n"
            "  %%y = moe.layer %%x : %s %s\n"
            "      {routing = %s, activation = #moe.activation<swiglu>} -> %s\n"
            "  return %%y : %s\n}\n") % (sig, t("?", h), t("?", h), ops, routing,
                                        t("?", h), t("?", h))


def cmd_emit(a):
    os.makedirs(a.out, exist_ok=True)
    for name in a.shapes + [s for s in EXTRA_SHAPES if s not in a.shapes]:
        path = os.path.join(a.out, name + ".mlir")
        with open(path, "w") as f:
            f.write(layer_mlir(name, a.scale))
        print("wrote", path)


# ------------------------------------------------------------------- torch --

def torch_dtype(torch, name):
    return torch.float32 if dtype_of(name) == "f32" else torch.bfloat16


def make_layer(torch, name, scale, dev, gen):
    h, f, e, k, fs, routing = scaled(name, scale)
    bf = torch_dtype(torch, name)
    w = lambda *s: (torch.randn(*s, generator=gen, device=dev, dtype=torch.float32)
                    / math.sqrt(s[-1])).to(bf)
    L = dict(name=name, H=h, F=f, E=e, K=k, Fs=fs, sigmoid="sigmoid" in routing,
             renorm="renormalize" in routing,
             router=w(e, h), gate=w(e, f, h), up=w(e, f, h), down=w(e, h, f))
    if L["sigmoid"]:
        L["bias"] = torch.randn(e, generator=gen, device=dev) * 0.1
    if fs:
        L["sg"], L["su"], L["sd"] = w(fs, h), w(fs, h), w(h, fs)
    return L


def route(torch, L, x):
    logits = (x @ L["router"].t()).float()
    if L["sigmoid"]:
        s = torch.sigmoid(logits)
        sel = s + L["bias"]
        t, e = sel.shape
        g = sel.view(t, 8, e // 8).topk(2, dim=-1).values.sum(-1)
        keep = torch.zeros_like(g).scatter_(1, g.topk(4, dim=-1).indices, 1.0)
        sel = sel.masked_fill(~keep.repeat_interleave(e // 8, 1).bool(), float("-inf"))
        idx = sel.topk(L["K"], dim=-1).indices
        wts = s.gather(1, idx)
        wts = wts / wts.sum(-1, keepdim=True) * 2.5
    else:
        p = torch.softmax(logits, dim=-1)
        wts, idx = p.topk(L["K"], dim=-1)
        if L["renorm"]:
            wts = wts / wts.sum(-1, keepdim=True)
    return idx, wts


def eager(torch, L, x):
    import torch.nn.functional as F
    idx, wts = route(torch, L, x)
    y = torch.zeros(x.shape[0], L["H"], device=x.device, dtype=torch.float32)
    for e in range(L["E"]):
        tok, slot = torch.where(idx == e)
        if tok.numel() == 0:
            continue
        xe = x.index_select(0, tok)
        h = F.silu(xe @ L["gate"][e].t()) * (xe @ L["up"][e].t())
        out = (h @ L["down"][e].t()).float() * wts[tok, slot, None]
        y.index_add_(0, tok, out)
    if L["Fs"]:
        y += ((F.silu(x @ L["sg"].t()) * (x @ L["su"].t())) @ L["sd"].t()).float()
    return y.to(x.dtype)


def grouped(torch, L, x):
    import torch.nn.functional as F
    idx, wts = route(torch, L, x)
    flat = idx.reshape(-1)
    order = flat.argsort(stable=True)
    tok = order // L["K"]
    counts = torch.bincount(flat, minlength=L["E"])
    offs = counts.cumsum(0).to(torch.int32)
    xs = x.index_select(0, tok)
    gate = torch._grouped_mm(xs, L["gate"].transpose(1, 2), offs=offs)
    up = torch._grouped_mm(xs, L["up"].transpose(1, 2), offs=offs)
    out = torch._grouped_mm(F.silu(gate) * up, L["down"].transpose(1, 2), offs=offs)
    out = out.float() * wts.reshape(-1)[order, None]
    y = torch.zeros(x.shape[0], L["H"], device=x.device, dtype=torch.float32)
    y.index_add_(0, tok, out)
    if L["Fs"]:
        y += ((F.silu(x @ L["sg"].t()) * (x @ L["su"].t())) @ L["sd"].t()).float()
    return y.to(x.dtype)


def load_vllm(artifacts, dev):
    """vLLM's Triton kernel module from <artifacts>/vllm/ (None, why if
    absent). On a CPU (the dry run) Triton's interpreter runs it."""
    path = os.path.join(artifacts or "", "vllm", "fused_moe_kernel.py")
    if not os.path.isfile(path):
        return None, "no %s (docs/notes/gpu-path.md: vLLM baseline)" % path
    if dev == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        spec = importlib.util.spec_from_file_location("vllm_fused_moe_kernel", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception as exc:  # report, don't hide
        return None, "vllm kernel: " + str(exc).splitlines()[0][:60]
    return mod, None


def vllm_config(torch, artifacts, dev, E, F, M):
    """The config vLLM would take (try_get_optimal_moe_config): its tuned
    file for (E, N = F, this GPU) nearest to M tokens, else its default."""
    name = torch.cuda.get_device_name().replace(" ", "_") if dev == "cuda" else "cpu"
    f = os.path.join(artifacts, "vllm", "configs",
                     "E=%d,N=%d,device_name=%s.json" % (E, F, name))
    if os.path.isfile(f):
        with open(f) as fh:
            configs = {int(k): v for k, v in json.load(fh).items()}
        return dict(configs[min(configs, key=lambda x: abs(x - M))]), True
    if M <= E:
        return dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=64, GROUP_SIZE_M=1), False
    return dict(BLOCK_SIZE_M=64, BLOCK_SIZE_N=64, BLOCK_SIZE_K=32, GROUP_SIZE_M=8), False


def vllm_align(torch, idx, E, bm):
    """moe_align_block_size in PyTorch, on the device without a host sync:
    the T*K (token, slot) pairs sorted by expert, each expert's run padded to
    a multiple of bm with the sentinel T*K; the expert of each bm block; the
    padded length (a 1-element tensor)."""
    flat = idx.reshape(-1).long()
    n = flat.numel()
    counts = torch.bincount(flat, minlength=E)
    padded = (counts + bm - 1) // bm * bm
    ends = padded.cumsum(0)
    order = flat.argsort(stable=True)
    e_sorted = flat[order]
    first = (counts.cumsum(0) - counts)[e_sorted]
    pos = (ends - padded)[e_sorted] + torch.arange(n, device=idx.device) - first
    length = n + E * (bm - 1)
    sorted_ids = torch.full((length,), n, dtype=torch.int32, device=idx.device)
    sorted_ids[pos] = order.to(torch.int32)
    blocks = torch.arange((length + bm - 1) // bm, device=idx.device) * bm
    expert_ids = torch.bucketize(blocks, ends, right=True).clamp_(max=E - 1).to(torch.int32)
    return sorted_ids, expert_ids, ends[-1:].to(torch.int32)


def vllm_moe(torch, mod, L, x, cfg_of):
    """y = the layer through vLLM's kernel, as vLLM's fused_experts."""
    import torch.nn.functional as F
    tl = mod.tl
    idx, wts = route(torch, L, x)
    T, K, E, H, Fi = x.shape[0], L["K"], L["E"], L["H"], L["F"]
    wts = wts.float().contiguous()
    cfg, _ = cfg_of(T)
    # The CPU dry run (Triton's interpreter) in f32: Triton 3.9's
    # interpreter gets tl.dot on bf16 operands wrong (checked: errors of
    # 1e10 on a 16 x 32 x 32 product), f32 right.
    cdt, ctype = (torch.float32, tl.float32) if x.device.type == "cpu" else (x.dtype, tl.bfloat16)
    w13, down, xin = L["w13"].to(cdt), L["down"].to(cdt), x.to(cdt)
    # One alignment for both launches, as fused_experts.
    cfg2 = dict(cfg)
    bk = cfg2.pop("BLOCK_SIZE_K")
    bm = cfg2["BLOCK_SIZE_M"]
    sorted_ids, expert_ids, npad = vllm_align(torch, idx, E, bm)
    em = sorted_ids.shape[0]
    if T < bm:
        em = min(em, T * K * bm)

    def gemm(a, b, c, top_k, weighted):
        grid = (triton_cdiv(em, bm) * triton_cdiv(b.shape[1], cfg2["BLOCK_SIZE_N"]),)
        mod.fused_moe_kernel[grid](
            a, b, c, None, None, wts, sorted_ids, expert_ids, npad,
            b.shape[1], b.shape[2], em, T * K,
            a.stride(0), a.stride(1), b.stride(0), b.stride(2), b.stride(1),
            c.stride(1), c.stride(2), 0, 0, 0, 0, 0, 0, 0,
            MUL_ROUTED_WEIGHT=weighted, top_k=top_k, compute_type=ctype,
            use_fp8_w8a8=False, use_int8_w8a8=False, use_int8_w8a16=False,
            per_channel_quant=False, BLOCK_SIZE_K=bk, **cfg2)

    c1 = torch.empty(T, K, 2 * Fi, device=x.device, dtype=cdt)
    gemm(xin, w13, c1, K, False)
    c1 = c1.view(T * K, 2 * Fi)
    h = (F.silu(c1[:, :Fi].float()) * c1[:, Fi:].float()).to(cdt)
    c2 = torch.empty(T * K, 1, H, device=x.device, dtype=cdt)
    gemm(h, down, c2, 1, True)
    y = c2.view(T, K, H).float().sum(1)
    if L["Fs"]:
        y += ((F.silu(x @ L["sg"].t()) * (x @ L["su"].t())) @ L["sd"].t()).float()
    return y.to(x.dtype)


def triton_cdiv(a, b):
    return (a + b - 1) // b


def rel_err(torch, got, ref):
    d = (got.float() - ref.float()).norm()
    r = ref.float().norm()
    return float(d / r) if float(r) > 0 else float(d)


def timed(torch, dev, fn, iters):
    fn()  # warm-up (and compile)
    if dev == "cuda":
        torch.cuda.synchronize()
    ms = []
    for _ in range(iters):
        if dev == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            ms.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    return ms[len(ms) // 2]


def ours(a, name, tokens, timeout, graph_max_tokens=-1):
    """Our artifact `name` (a shape, or `<shape>.gather`: the combine as a
    segmented reduction instead of f32 atomics) through one
    `moe-run --bench N --bench-tokens ...` (weights made and uploaded once;
    activations in device memory, outputs checked against a host run); with
    graph_max_tokens >= 0 also through CUDA graphs at T up to it
    (--bench-graphs). Returns ({T: (ms, error)}, {T: (ms, error)} of the
    graph runs, empty without them)."""
    art = os.path.join(a.artifacts, name)
    if not os.path.isfile(os.path.join(art, "manifest.json")):
        return {T: (None, "no artifact %s" % art) for T in tokens}, {}
    cmd = [a.moe_run, art, "--tokens", str(tokens[0]), "--seed", "1",
           "--bench", str(a.iters), "--bench-tokens", ",".join(map(str, tokens))]
    if graph_max_tokens >= 0:
        cmd += ["--bench-graphs", str(graph_max_tokens)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, err, rc = r.stdout, r.stderr, r.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err, rc = "timed out after %.0f s" % timeout, -1
    got = {int(t): float(ms) for t, ms in
           re.findall(r"bench: \d+ runs, T = (\d+): .*?median ([0-9.]+) ms", out)}
    got_g = {int(t): float(ms) for t, ms in
             re.findall(r"bench \(cuda graphs\): \d+ runs, T = (\d+): .*?median ([0-9.]+) ms", out)}
    why = ((err or out).strip().splitlines() or ["failed"])[-1][:80]
    plain = {T: (got[T], None) if T in got else (None, why) for T in tokens}
    graphs = {T: (got_g[T], None) if T in got_g else (None, why)
              for T in tokens if T <= graph_max_tokens}
    return plain, graphs


def cmd_run(a):
    import torch
    dev = a.device
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_bench: no CUDA device visible to PyTorch")
    t_start = time.time()
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    print("gpu_bench: seed %d, device %s, torch %s, f32 matmuls in TF32: %s" % (
        a.seed, torch.cuda.get_device_name() if dev == "cuda" else "cpu", torch.__version__,
        torch.backends.cuda.matmul.allow_tf32))
    # Copy bandwidth measured here: read + write of a 1 GiB (CPU: 64 MiB) buffer.
    n = (1 << 30 if dev == "cuda" else 1 << 26) // 2
    buf = torch.empty(n, dtype=torch.bfloat16, device=dev)
    copy_ms = timed(torch, dev, lambda: buf.clone(), 10)
    copy_gbs = 2 * n * 2 / copy_ms / 1e6
    print("measured copy bandwidth: %.0f GB/s" % copy_gbs)
    has_grouped = hasattr(torch, "_grouped_mm")
    vllm_mod, vllm_why = load_vllm(a.artifacts, dev) if a.vllm else (None, "off")
    print("vllm baseline: %s" % ("vLLM's Triton fused_moe_kernel" if vllm_mod else vllm_why))
    rows = []
    for name in a.shapes:
        L = make_layer(torch, name, a.scale, dev, gen)
        H, F, E, K, Fs = L["H"], L["F"], L["E"], L["K"], L["Fs"]
        dt, eb = torch_dtype(torch, name), DTYPES[dtype_of(name)][1]
        compiled = torch.compile(lambda x: eager(torch, L, x)) if a.compile else None
        use_vllm = vllm_mod is not None and dtype_of(name) == "bf16"
        if use_vllm:
            L["w13"] = torch.cat([L["gate"], L["up"]], dim=1).contiguous()
            # Read once per token count, not in the timed calls.
            cfg_of = functools.lru_cache(maxsize=None)(
                lambda M, E=E, F=F: vllm_config(torch, a.artifacts, dev, E, F, M))
            print("vllm %s: %s config" % (name, "tuned" if cfg_of(1)[1] else "default"))
        mine = {}
        if a.artifacts:
            left = a.budget - (time.time() - t_start)
            # With CUDA graphs too (moe-run --bench-graphs: the same calls
            # through one cuGraphLaunch each, in the same process), at the
            # decode-sized T where the host work per launch can matter.
            graphs = name in a.graph_shapes and a.graph_max_tokens >= 0
            mine["moe-mlir"], g = ours(a, name, a.tokens, max(30, left),
                                       a.graph_max_tokens if graphs else -1)
            if g:
                mine["moe-mlir graphs"] = g  # only T <= --graph-max-tokens
            # Variants compiled with other pipeline options: <shape>.<variant>
            # (gather: the combine as a segmented reduction; others: see
            # scripts/gpu-run.sh prepare).
            for d in sorted(os.listdir(a.artifacts)):
                if d.startswith(name + ".") and os.path.isdir(os.path.join(a.artifacts, d)):
                    left = a.budget - (time.time() - t_start)
                    mine["moe-mlir " + d[len(name) + 1:]] = ours(a, d, a.tokens, max(30, left))[0]
        for T in a.tokens:
            x = torch.randn(T, H, generator=gen, device=dev).to(dt)
            flops = 2 * T * K * 3 * H * F + (2 * T * 3 * H * Fs if Fs else 0)
            with torch.no_grad():
                idx, _ = route(torch, L, x)
            used = int(torch.unique(idx).numel())
            nbytes = (used * 3 * H * F + (3 * H * Fs if Fs else 0) + 2 * T * H) * eb
            if time.time() - t_start > a.budget:
                # Ours was measured before the budget ran out: keep it.
                rows.append((name, T, "(budget)", None, "baselines not run",
                             None, None, None, None))
                for impl, by_t in mine.items():
                    if T not in by_t:
                        continue
                    ms, err = by_t[T]
                    rows.append((name, T, impl, ms, err, flops, nbytes, None, None))
                continue
            a1 = torch.randn(T * K, H, generator=gen, device=dev).to(dt)
            w1 = torch.randn(H, 2 * F, generator=gen, device=dev).to(dt)
            a2 = torch.randn(T * K, F, generator=gen, device=dev).to(dt)
            w2 = torch.randn(F, H, generator=gen, device=dev).to(dt)
            impls = [("dense", lambda: (a1 @ w1, a2 @ w2)),
                     ("eager", lambda: eager(torch, L, x))]
            if compiled:
                impls.append(("compile", lambda: compiled(x)))
            if has_grouped and dev == "cuda":
                impls.append(("grouped", lambda: grouped(torch, L, x)))
            vllm_err = None
            if use_vllm:
                # Checked against eager once per T; a wrong result is
                # reported instead of a time.
                try:
                    with torch.no_grad():
                        err = rel_err(torch, vllm_moe(torch, vllm_mod, L, x, cfg_of),
                                      eager(torch, L, x))
                    if not err <= 2e-2:
                        vllm_err = "MISMATCH vs eager: rel err %.3g" % err
                    else:
                        impls.append(("vllm", lambda: vllm_moe(torch, vllm_mod, L, x, cfg_of)))
                except Exception as exc:  # report, don't hide
                    vllm_err = "vllm: " + str(exc).splitlines()[0][:60]
            results = {}
            with torch.no_grad():
                for impl, fn in impls:
                    try:
                        results[impl] = (timed(torch, dev, fn, a.iters), None)
                    except Exception as exc:  # report, don't hide
                        results[impl] = (None, str(exc).splitlines()[0][:60])
            if vllm_err:
                results["vllm"] = (None, vllm_err)
            for impl, by_t in mine.items():
                if T in by_t:
                    results[impl] = by_t[T]
            dense_ms = results["dense"][0]
            eager_ms = results["eager"][0]
            for impl, (ms, err) in results.items():
                rows.append((name, T, impl, ms, err, flops, nbytes, dense_ms, eager_ms))
        del L
    out = ["| shape | T | impl | ms | TFLOP/s | % dense | GB/s | % copy bw | x eager |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, T, impl, ms, err, flops, nbytes, dense_ms, eager_ms in rows:
        if ms is None:
            out.append("| %s | %d | %s | %s | | | | | |" % (name, T, impl, err or "not run"))
            continue
        tf = flops / ms / 1e9
        pct_dense = "%.0f%%" % (100 * dense_ms / ms) if dense_ms and T >= 128 else ""
        gbs = nbytes / ms / 1e6
        pct_bw = "%.0f%%" % (100 * gbs / copy_gbs) if T <= 16 else ""
        ratio = "%.2f" % (eager_ms / ms) if eager_ms else ""
        out.append("| %s | %d | %s | %.3f | %.2f | %s | %.0f | %s | %s |" % (
            name, T, impl, ms, tf, pct_dense, gbs, pct_bw, ratio))
    text = "\n".join(out)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("emit")
    e.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--artifacts", default="")
    r.add_argument("--moe-run", default="build-device/bin/moe-run")
    r.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    r.add_argument("--iters", type=int, default=20)
    r.add_argument("--budget", type=float, default=480)
    r.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    r.add_argument("--no-compile", dest="compile", action="store_false")
    r.add_argument("--no-vllm", dest="vllm", action="store_false")
    # The "moe-mlir graphs" rows: these shapes, T up to this.
    r.add_argument("--graph-shapes", default="mixtral-8x7b,qwen3-30b-a3b,olmoe-1b-7b,deepseek-v3")
    r.add_argument("--graph-max-tokens", type=int, default=128)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="")
    for q in (e, r):
        q.add_argument("--shapes", default=",".join(SHAPES))
        q.add_argument("--scale", type=float, default=1.0)
    a = p.parse_args()
    a.shapes = [s for s in a.shapes.split(",") if s]
    for s in a.shapes:
        if not known(s):
            sys.exit("gpu_bench: unknown shape '%s' (%s, or one of them + '-f32')"
                     % (s, ", ".join(SHAPES)))
    if a.cmd == "emit":
        cmd_emit(a)
    else:
        a.tokens = [int(t) for t in a.tokens.split(",")]
        a.graph_shapes = set(s for s in a.graph_shapes.split(",") if s)
        cmd_run(a)


if __name__ == "__main__":
    main()
