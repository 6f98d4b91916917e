//===- Passes.td - moe conversion passes -------------------*- tablegen -*-===//
//
// Every conversion out of the moe dialect is declared here (one Passes.td for
// all conversions, as in CIRCT and upstream MLIR).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CONVERSION_PASSES_TD
#define MOE_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertMoEToLinalg : Pass<"convert-moe-to-linalg"> {
  let summary = "Lower the staged moe ops to linalg, tensor and scf";
  let description = [{
    Rewrites the compute stages of a decomposed MoE layer into
    `linalg.generic` ops on tensors (f32 accumulation, one rounding to the
    result type):

    * `moe.linear`, `moe.projected_router`, `moe.ffn`, `moe.rms_norm`:
      contractions and element-wise generics;
    * `moe.experts`, `moe.lora_experts`: per-slot contractions whose weight
      reads are gathers through the slot's expert index (`tensor.extract` in
      the payload), so only the T·K selected (token, expert) pairs are
      computed; slots outside the op's expert range are 0;
    * `moe.special_experts`: one generic picking each slot's kind from a
      constant table (constant experts mix `x` and `v` by a 2-way softmax);
    * `moe.combine`: a reduction over the K slots plus the addends;
    * `moe.route`: scores, selection bias, group masks (group-limited and
      hierarchical) and K rounds of argmax (an `scf.for` over the slots whose
      body is a reduction over the experts: larger first, NaN smallest, ties
      to the lower id), then normalisation and scaling;
    * `moe.dispatch`: dropless is the identity; capacity is a sequential
      (slot, token) scan in two `scf.for` loops with per-expert counters.

    After this pass no `moe` op is left but `moe.layer`/`moe.cartesian`
    (run `--moe-decompose` first).

    With `blocked-gemms` (set by `moe-to-llvm-cpu`) the GEMMs become
    blocked `scf.for` loop nests instead of generics: blocks of rows
    (`gemm-block-bytes` of input) whose input rows stay in cache while the weight rows stream past them,
    4 weight rows at a time, 4 rows x 4 weight rows of f32 accumulators in
    the innermost reduction, so each weight row is read once per block of
    rows instead of once per row. `moe.experts` first sorts its slots by
    expert (count, prefix sum, place: `scf.for` loops on index tensors)
    and runs the nest expert by expert over its slots; `moe.ffn` (shared
    experts) and `moe.linear` (routers, the LoRA base) run it over the
    tokens. The 4-column groups within a block of rows are an `scf.forall`,
    each group filling its own column slab of the output
    (`tensor.extract_slice` / `tensor.parallel_insert_slice`), so they are
    independent: `moe-to-llvm-cpu` runs them on the runtime's worker
    threads (`parallel`) or as a loop. The rest of the nest is sequential:
    `moe-to-nvvm` leaves the option off, the generic GPU path mapping the
    parallel form onto GPU threads.

    With `gemm-vector-bits` 512 or 256 (`moe-to-llvm-cpu` takes the host's
    width by default) a block of at least half a vector of rows takes an
    outer-product micro-kernel instead: its rows are packed once,
    transposed, into f32 panels of one vector of rows (16 or 8 lanes, the
    last one padded with zero rows), and each column group of 12 (6)
    weight rows runs the panels two at a time on 2 x 12 (2 x 6) vector
    accumulators (`vector.transfer_read` of the panels, `vector.broadcast`
    of a weight element, `vector.fma`), then stores the lanes of the
    block's rows. Outputs narrower than two such groups (routers) keep the
    dot-product tiles, as do smaller blocks (decode).

    With `gemm-amx` (`moe-to-llvm-cpu` sets it on hosts with AMX-BF16), a
    GEMM with bf16 weights and a bf16 input whose O and I are multiples of
    32 runs on AMX tiles (`amx` dialect) instead: the block's rows packed
    once into VNNI panels of 16 rows, the weight tiles loaded in place
    through a read-only `bufferization.to_buffer`, 2 x 2 f32 tile
    accumulators per pair of panels (`amx.tile_mulf`), the results through
    two 32 x 32 `memref` buffers (tile stores, 16 x 16 transposes) into the
    output rows. A gated FFN (`moe.experts`, `moe.ffn`) runs its gate and up
    projections in one such GEMM, a gate tile and an up tile per column
    group, with the biases, the activation and the rounding of h in its
    epilogue. The down projection then reads h rounded to bf16, as a bf16
    model computes it.
  }];
  let options = [
    Option<"blockedGemms", "blocked-gemms", "bool", /*default=*/"false",
           "Lower the GEMMs of moe.experts (grouped by expert), moe.ffn and "
           "moe.linear to blocked loop nests (for the CPU; their column "
           "groups an scf.forall)">,
    Option<"gemmBlockBytes", "gemm-block-bytes", "int64_t",
           /*default=*/"524288",
           "Bytes of input rows per block of the blocked GEMMs (rounded "
           "down to whole 4-row tiles, at least one); the default, 512 KiB, "
           "is half of the smallest per-core L2 of current x86 server "
           "cores">,
    Option<"gemmVectorBits", "gemm-vector-bits", "int64_t", /*default=*/"0",
           "Vector registers of the blocked GEMMs' outer-product "
           "micro-kernel: 512 (AVX-512: 32 rows x 12 weight rows on 16-lane "
           "vectors), 256 (AVX2: 16 x 6 on 8-lane ones), 0: the dot-product "
           "tiles only">,
    Option<"gemmAMX", "gemm-amx", "bool", /*default=*/"false",
           "bf16 GEMMs on AMX tiles (amx dialect; hosts with AMX-BF16): "
           "weight rows as 16 x 32 tiles loaded in place, the block's rows "
           "packed in VNNI pairs, 2 x 2 tile accumulators; a bf16 down "
           "projection then reads its f32 activations rounded to bf16">,
  ];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::amx::AMXDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect"];
}

def MoEPolynomialMath : Pass<"moe-polynomial-math"> {
  let summary = "Replace f32 math.exp, math.erf and math.tanh by upstream "
                "MLIR's polynomial approximations";
  let description = [{
    Run by `moe-to-llvm-cpu` after `convert-moe-to-linalg` (option
    `polynomial-math`, on by default). The activations (SiLU and sigmoid
    through `exp`, GELU through `erf`, tanh-GELU through `tanh`) and the
    routers' softmax are otherwise calls into libm, one per element, which
    LLVM cannot vectorise; as arithmetic (MLIR's
    `populateMathPolynomialApproximationPatterns`, restricted to these three
    ops) their loops vectorise. Accuracy, measured against double precision
    over [-87, 88] in steps of 7.3e-4: `exp` within 1 ulp (relative error
    8e-8), `erf` and `tanh` within 4 ulp (2.2e-7, 2.4e-7); infinities, NaN
    and underflow as libm's.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::vector::VectorDialect"];
}

def ConvertMoEExpertsToGPU : Pass<"convert-moe-experts-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Form tensor-core kernels (alignment, gate+up GEMM, down GEMM) "
                "for eligible moe.experts ops";
  let description = [{
    Run by `moe-to-nvvm` on the decomposed IR, before `convert-moe-to-linalg`.
    Each eligible `moe.experts` (FFN experts, activation `swiglu`, `geglu`,
    `gelu`, `gelu_tanh`, `relu`, `relu2` or `swiglu_clamped`, optional
    `gate_bias` / `up_bias` / `down_bias`; input and weights all `f16`, all
    `bf16` or all `f32`; static H and F divisible by the tiles; weights and biases not
    compile-time constants; chip sm_80 or newer) becomes three
    kernels in a new `gpu.module` and, in its place, host code on buffers:

    1. `align` (one block of 1024 threads): counts the (token, slot) pairs
       of each expert with shared-memory atomics, pads each count to the
       tile height `BM`, forms the exclusive prefix sum, writes the expert of
       every row tile, the number of used tiles, and the list of pair ids
       `t*K + k` sorted by expert (`-1` in the padding); slots routed to no
       expert of this op get their zero row here. Nothing is read back on
       the host.
    2. `gate_up`: block `(tile, n)` computes a `BM x BN` tile of
       `act(x_g . gate^T, x_g . up^T)` for the rows of one expert: the rows
       of `x` are gathered through the sorted list while the shared-memory
       A tile is filled (`nvgpu.device_async_copy`, 16 bytes, zero fill for
       padding rows), B tiles from the expert's weights, `nvgpu.ldmatrix` +
       `nvvm.mma.sync` m16n8k16 with f32 accumulators in a multi-stage
       (`stages`) cp.async pipeline (f32 experts: `tf32` m16n8k8, each
       operand value split into two tf32 values, `tf32(v)` and
       `tf32(v - tf32(v))`, and three MMAs per tile (3xTF32), so that the
       products keep f32 accuracy; BK in elements halved, never wgmma or
       the wide tiles); the epilogue adds the gate and up
       biases (f32), applies the activation and stores `h` (padded rows x F)
       in the input dtype.
    3. `down`: the same machinery over `h` and `down`, adding the down bias
       and storing each pair's f32 row into the `T x K x H` result (so
       `moe.combine` is unchanged).

    With `combine=atomic` (the default) or `combine=gather`, a `moe.combine`
    that is the only user of the slots and sums no other slot tensor is
    fused in, and no `T x K x H` tensor exists:

    * `atomic`: `gate_up` also sets an f32 `T x H` accumulator to the sum
      of the combine's addends (0 without); `down` multiplies each row by
      its routing weight (read through the sorted list) and adds it with
      relaxed f32 atomics (`atom.global.add.f32`: the order of the K terms
      per element is not fixed, the result may differ in the last bits
      between runs); a kernel `finish` (one block per token) rounds it to
      the result's dtype, omitted for an f32 result (the accumulator is the
      result). Four kernels (three for f32).
    * `gather`: `align` also records each pair's row in the sorted list,
      `down` stores the rows in sorted order (no scatter), and a kernel
      `reduce` (one block per token) forms
      `sum_k w[t,k] * row(t,k) + sum_a addends_a[t]` in f32, in slot order
      (deterministic), rounded once. Four kernels.

    A combine that cannot be fused (other users of the slots, several slot
    tensors, a dtype other than bf16, f16, f32) stays, with a remark.

    A shared expert (`moe.ffn` with an f32 result, as the decomposition
    makes the combine's addend) first becomes a one-expert `moe.experts`
    that every token selects (indices a `tensor.splat` of 0, K = 1, weights
    expanded to `1 x F x H`) whose `T x 1 x H` slots are collapsed back to
    the addend, so it takes the same kernels (combine none) where they are
    eligible; otherwise the `moe.ffn` stays as it was. A sigmoid-gated one
    (`gate_weight`, Qwen2-MoE: `g_t = sigmoid(x_t . w_s)`) becomes a
    one-expert routing instead: `moe.linear` for `x . w_s` and `moe.route`
    (sigmoid, dense, k = 1) whose indices (all 0) select the expert and
    whose weights `g_t` a one-slot `moe.combine` applies; that combine is
    fused like a routed one. `moe-to-nvvm` runs this pass before
    `convert-moe-route-to-gpu` and `convert-moe-linear-to-gpu`, which then
    form the kernels of that routing.

    With `fuse-shared` (default) and the atomic combine, a shared expert
    whose FFN is an addend of the fused combine and matches the routed
    experts (same input, dtype, activation and H, width a multiple m <= 8 of
    F; no biases on either) joins the routed kernels instead: its column
    slices are experts E .. E+m-1 of the alignment (every token t adds pair
    `T*K + c T + t`), its tiles read its own weights (extra kernel
    arguments), and down adds its rows with weight 1, or with
    `sigmoid(x_t . w_s)` for a Qwen2-MoE gated one (`gate_weight`: a
    `moe.linear` for the logits is made before the kernels, down's last
    argument). One align / gate_up / down for both,
    `ceil((T*K + m T)/BM) + E + m` tiles.

    The GEMM grids are `(ceil(T*K/BM) + E) x (N/BN)`, a bound computed from
    T alone; blocks past the used tiles exit at once, so no launch depends on
    device data. Tile sizes left at 0 are chosen from the layer's shape:
    `BM` 64 for E <= 16 else 32, `BN` the largest of 128 (down only), 64, 32, 16
    dividing N, `BK` 32 or 16 dividing the reduction, 3 stages (in dynamic
    shared memory where they need more than 48 KiB, up to 99 KiB, with
    `dynamic-smem`; else 2 stages when 3 do not fit). With `large-tile-rows` N > 0
    (moe-to-nvvm: 1024) and BM = 64 or 32 from the shape, a second set of
    kernels with BM = 128 is formed and the host takes it when T * K >= N
    (an `scf.if` around the two expansions; measured on an H100 for the
    Mixtral shape: 1.2-1.4x from T = 1024, slower for a few tokens; with
    E > 16 the bound is N x E / 8, 128 rows per expert on average). With `wgmma`,
    the BM = 128 set's tiles left at 0 are wide: BN up to 256 columns (gate
    and up 128 each, one m64n256k16 wgmma), BK 64, 4 stages in up to
    227 KiB of dynamic shared memory (sm_90a's opt-in maximum). With
    `split-k-blocks` N > 0 (moe-to-nvvm: 512) and the atomic combine, a
    few-token set (kernels `<func>_experts_splitk`) is formed: tiles of 16
    rows (4 warps side by side; unless `tile-m` or `warps` is given), with
    BK 128, gate/up 32 and down 64 columns wide and 4 stages where the
    shape and shared memory allow and the reduction still splits (Mixtral),
    and a down kernel that splits F into S slices (S the smallest power of
    two up to 8 with `K * (H/BN2) * S >= N`, slices of at least 4 K steps;
    grid y `(H/BN2) * S`, the slices adding their partial sums with the same
    f32 atomics, the down bias added by the first; gate_up with half-width
    column tiles unless `tile-n-gate-up` is set). It is formed where S > 1
    or its tiles are smaller than the default set's, and the host takes it
    while `T * K * (H/BN2) < N` (BN2 of the default set) or `T * K < 8 E`:
    at T = 1 only K tiles hold rows, 64 down blocks for the Mixtral shape
    without the split; below 8 E rows an expert's rows fill half a 16-row
    tile on average (Mixtral: T <= 31, as vLLM's tuned H100 tables).

    The op is replaced by `bufferization.to_buffer` of its operands, the
    buffers (`memref.alloc`, deallocated by the bufferization phase) and a
    call of a private declaration carrying `moe.expert_kernels`;
    `moe-gpu-launch-expert-kernels` turns that call into the three
    `gpu.launch_func` once the function is bufferized. Ineligible ops keep
    the generic path with a remark that says why (an error with
    `required`).

    First, each `moe.special_experts` (MoE++'s zero-computation experts)
    whose slots only a `moe.combine` with weights and other slot tensors
    reads becomes one warp-per-token kernel `special` (`gpu.module`
    `<func>_special[_N]`, blocks of 4 warps): it writes the combine's sum
    over those slots, `A[t] = sum_k w[t,k] special(x_t)` (T x H, f32: `zero`
    0, `copy` x_t, `constant` a1 x_t + a2 v_c with [a1, a2] the softmax of
    the constant expert's two logits, formed by the warp with a butterfly),
    and the combine takes `A` as one more addend instead of those slots, so
    that the expert kernels fuse it as usual. Other forms keep the generic
    path with a remark.
  }];
  let options = [
    Option<"chip", "chip", "std::string", /*default=*/"\"sm_90\"",
           "NVVM target chip; the kernels need sm_80 or newer">,
    Option<"tileM", "tile-m", "int64_t", /*default=*/"0",
           "Rows of a GEMM block tile (16, 32, 64 or 128; 0: from the shape)">,
    Option<"tileNGateUp", "tile-n-gate-up", "int64_t", /*default=*/"0",
           "Columns of F per gate+up block (multiple of 16; 0: from the "
           "shape)">,
    Option<"tileNDown", "tile-n-down", "int64_t", /*default=*/"0",
           "Columns of H per down block (multiple of 16; 0: from the shape)">,
    Option<"tileK", "tile-k", "int64_t", /*default=*/"0",
           "Reduction step of both GEMMs (16, 32, 64 or 128; 0: from the "
           "shape)">,
    Option<"stages", "stages", "int64_t", /*default=*/"0",
           "Shared-memory buffers of the cp.async pipeline (2 to 4; 0: from "
           "the tile sizes)">,
    Option<"warps", "warps", "int64_t", /*default=*/"0",
           "Warps per GEMM block: 4 (2 x 2) or 8 (4 x 2 from BM = 64, else "
           "2 x 4); 0: 4">,
    Option<"wgmma", "wgmma", "bool", /*default=*/"false",
           "sm_90a warpgroup MMAs (wgmma.mma_async from shared memory through "
           "matrix descriptors, one warpgroup per 64 rows) instead of "
           "ldmatrix + mma.sync; needs chip=sm_90a and BM 64 or 128; the "
           "BM = 128 set's default tiles are then 128 x 256 x 64">,
    Option<"dynamicSmem", "dynamic-smem", "bool", /*default=*/"true",
           "Tiles whose stages need more than 48 KiB of shared memory take "
           "it as dynamic shared memory (up to the chip's opt-in maximum: "
           "227 KiB on sm_90/sm_100, 163 on sm_80/sm_87, else 99; the launch "
           "asks for it); false: static shared memory only (2 stages for "
           "BM = 128)">,
    Option<"wideTiles", "wide-tiles", "bool", /*default=*/"true",
           "BM = 128 tiles default to 128 x 256 outputs with BK 64 (mma.sync: "
           "8 warps, 3 stages; wgmma: 4 stages) where the chip allows 163 KiB "
           "of shared memory or more; false: 128 x 128 x 32">,
    Option<"largeTileRows", "large-tile-rows", "int64_t", /*default=*/"0",
           "Where the shape gives BM = 64 or 32 and tile-m is not set: also form "
           "BM = 128 kernels and take them on the host when T * K is at "
           "least this (0: off; moe-to-nvvm uses 1024)">,
    Option<"splitKBlocks", "split-k-blocks", "int64_t", /*default=*/"0",
           "With the atomic combine: also form few-token kernels (16-row "
           "tiles; a down GEMM that splits its reduction so that a single "
           "token's K tiles give at least this many blocks), and take them "
           "on the host while T * K * (H / BN2) is below it or T * K < 8 E "
           "(0: off; moe-to-nvvm uses 512)">,
    Option<"vectorRed", "vector-red", "bool", /*default=*/"false",
           "With the atomic combine on sm_90 or newer: add a lane's two "
           "adjacent columns with one red.global.add.v2.f32 (needs PTX ISA "
           "8.1; moe-to-nvvm sets it from its features)">,
    Option<"wgmmaSwizzle", "wgmma-swizzle", "bool", /*default=*/"true",
           "wgmma tiles of 128-byte rows (BK 64 of bf16/f16) in dynamic "
           "shared memory take the 128-byte swizzled layout (descriptor "
           "layout type 1) instead of no-swizzle core matrices">,
    Option<"tma", "tma", "bool", /*default=*/"false",
           "Swizzled wgmma kernels (128-byte tile rows in dynamic shared "
           "memory; not with a fused shared expert) load their weight tiles "
           "by TMA: a tensor map per weight made on the host "
           "(mgpuTensorMap3D), cp.async.bulk.tensor issued by one thread, "
           "an mbarrier per stage; the gathered token rows keep cp.async">,
    Option<"groupM", "group-m", "int64_t", /*default=*/"0",
           "Block order of the GEMM grids: groups of this many row tiles x "
           "every column block, row tile fastest, so that the blocks in "
           "flight share A rows and weight columns in L2 (0: per run, the "
           "average row tiles of one expert, capped so that a group's A rows "
           "stay under 16 MiB; 1: the plain order, row tile = block x)">,
    Option<"required", "required", "bool", /*default=*/"false",
           "Fail on a moe.experts op that cannot take the tensor-core path "
           "instead of keeping the generic one">,
    Option<"fuseShared", "fuse-shared", "bool", /*default=*/"true",
           "With the atomic combine: run a shared expert whose FFN matches "
           "the routed experts' shape in the routed kernels' grid (expert E, "
           "every token, weight 1 or its sigmoid gate) instead of kernels of "
           "its own">,
    Option<"combine", "combine", "std::string", /*default=*/"\"atomic\"",
           "Fuse the moe.combine that reads the slots: atomic (f32 atomics "
           "in down), gather (sorted rows, per-token reduce) or none">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::nvgpu::NVGPUDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::vector::VectorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::tensor::TensorDialect"];
}

def MoEGPULaunchExpertKernels
    : Pass<"moe-gpu-launch-expert-kernels", "::mlir::ModuleOp"> {
  let summary = "Replace the calls left by convert-moe-experts-to-gpu with "
                "gpu.launch_func of its kernels";
  let description = [{
    Runs on bufferized host code (the `moe-to-nvvm` GPUMap phase). Each call
    of a declaration carrying `moe.expert_kernels` becomes one
    `gpu.launch_func` per entry of its `launches` list, in order, on the
    call's buffers: each entry names the kernel, the call operands it takes
    (`args`), its threads and its grid `[operand, y]` (x: dim 0 of that
    operand, or 1 for -1). `align` runs on one block, `gate_up` and `down`
    on `(number of tiles, N/BN)` blocks of 128 threads (the number of tiles
    is the size of the tile table, `ceil(T*K/BM) + E`), a fused combine's
    `finish` or `reduce` on one block per token. The declarations are
    erased. The launches go to the same stream in order; nothing is read
    back on the host.
  }];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

def ConvertMoERouteToGPU : Pass<"convert-moe-route-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Form one warp-per-token routing kernel for each moe.route "
                "(score, select, normalise) and an admission kernel for each "
                "capacity moe.dispatch";
  let description = [{
    Run by `moe-to-nvvm` on the decomposed IR, before `convert-moe-to-linalg`.
    Each `moe.route` (every selection: `topk`, `topk_then_softmax`,
    `group_limited_topk`, `top_p`, `dense`, `hierarchical`; any scoring:
    `softmax`, `sigmoid`, `none`; with or without a selection bias,
    `renormalize`, `scaling_factor`) becomes one
    kernel `route` in a new `gpu.module`: a warp (32 lanes) per token, blocks
    of 4 warps. Lane `l` holds the logits of experts `l*P .. l*P+P-1` in
    registers (`P = ceil(E/32)`; for group-limited routing
    `P = (E/n_group)/L` with `L` the most lanes per group, a power of two
    dividing the group size with `n_group * L <= 32`, so that a group is an
    aligned segment of lanes). In one kernel, with warp shuffles
    (`gpu.shuffle xor`) for every reduction:

    1. scoring: softmax (row max subtracted, an all `-inf` row gives 0, a
       NaN row NaN), sigmoid `1/(1+exp(-z))`, or the raw logits (`none`,
       `topk_then_softmax`); keys = scores + selection bias (f32);
    2. group-limited: each group's score (the max, or the sum of its two
       largest keys) is reduced over the group's lanes; `topk_group` rounds
       of a warp argmax keep the best groups, the others' experts are
       excluded;
    3. K rounds of a warp argmax over (key, expert id): larger key first,
       NaN smallest, ties to the lower expert id; the owner lane marks the
       winner taken and broadcasts its score (`gpu.shuffle idx`); lane `k`
       keeps slot `k`;
    Hierarchical routing (AT-MoE) lays the groups out as for group-limited
    routing and also takes the `T x n_group` group logits: the group
    probability `a = softmax(group_logits / tau_group)` (each group's logit
    on its lanes, counted once), the in-group softmax of `logits /
    tau_expert` over the group's lanes, scores `a * b`; with `topk_group <
    n_group` the groups are kept by `a` in argmax rounds; with K = E every
    expert is listed (those of dropped groups as -1 with weight 0).

    4. weights: softmax over the K picked logits (`topk_then_softmax`),
       division by their sum (`renormalize`, skipped if the sum is 0),
       times `scaling_factor`; lanes `k < K` store `indices[t, k]` (i32) and
       `weights[t, k]` (f32).

    With `fuse-linear` (the default), a `moe.linear` (no bias; x and router
    weight of one dtype, bf16, f16 or f32; H a multiple of 32) whose logits
    only the route reads is computed in the same kernel: for each of its
    experts the warp forms `x[t] . W[e]` with every lane loading 32-element
    contiguous segments of both rows (1, 2 or 4 per step, f32 accumulators),
    a butterfly sum, and the lane holding expert `e` keeps it, so the T x E
    logits never exist and the GEMM needs no kernel of its own. A warp alone
    then does E x H products per token, which for a few tokens is slower
    than the separate GEMM kernel (a thread per logit): unless
    `fuse-linear-min-tokens` is 0 the host chooses at run time (`scf.if` on
    T >= fuse-linear-min-tokens, default 256 from H100 measurements) between
    the fused kernel (`<func>_route_fused`) and the `moe.linear` followed by
    the kernel on the logits (`<func>_route`). Hierarchical routing fuses
    its two router GEMMs together or neither: with the group logits also a
    `moe.linear` of the same x (same conditions, one weight dtype for both),
    the warp also forms each group's logit `x[t] . W_g[g]`, which the
    group's lanes keep. The GEMMs kept in the branch below the threshold
    carry `moe.tokens_below` (the threshold), so that
    `convert-moe-linear-to-gpu` forms no tensor-core kernel for them.

    Many tokens (`mma-linear-min-tokens`): the fused kernel reads the whole
    E x H router weight from L2 once per token, where the tensor-core GEMM
    of `convert-moe-linear-to-gpu` (`linear_mma`) reads it once per 64
    rows. Where the router GEMM's shape takes that kernel (x and W of one
    dtype, H and E multiples of 16; not the hierarchical group GEMM), the
    host leaves the fused kernel from that many tokens (-1, the default:
    the estimate 83 BN / E, at least `fuse-linear-min-tokens`, so 256 for
    the usual routers; none when `fuse-linear-min-tokens` is 0) for the
    `moe.linear`, marked `moe.mma_min_tokens` (its tensor-core kernel from
    there, the warp-per-output kernel below), then the kernel on the
    logits. The fused kernel is then taken for `fuse-linear-min-tokens <=
    T < mma-linear-min-tokens` only, and not formed when that range is
    empty.

    The op is replaced by `bufferization.to_buffer` of the logits and bias,
    `memref.alloc`s of the two results and a call of a private declaration
    carrying `moe.route_kernel`; `moe-gpu-launch-route-kernels` turns the call
    into a `gpu.launch_func` once the function is bufferized. A constant
    selection bias becomes a `memref.global` of the kernel module. Layouts
    the kernel does not cover (K > 32 but for `dense` and hierarchical
    K = E, E > 1024, more than 32 groups) keep the generic path with a
    remark that says why (an error with `required`).

    The same pass forms the admission kernel of each `moe.dispatch` (the
    last step of routing, MOE_SEMANTICS §2), so that the routed pairs stay
    on the device between the routing and the expert kernels: a dropless
    dispatch is replaced by its operands; a capacity dispatch (a capacity
    factor or a fixed `expert_capacity`) by one kernel `admit` in a
    `gpu.module` `<function>_dispatch[_N]`, one warp in one block that
    walks the pairs in admission order (slot, token), 32 per step: each
    lane's rank among the pairs of its expert is that expert's count so far
    (shared memory) plus the lanes of the same expert below it in the step
    (`nvvm.match.sync any`, population count); a pair is admitted iff its
    rank is below C, else its index becomes -1 and its weight 0; the drops
    are summed by a butterfly. The result is the sequential scan's exactly.
    Its launch is expanded by `moe-gpu-launch-route-kernels`. More than
    12288 experts (the counters' shared memory) or a dynamic K keep the
    generic path (a sequential scan on the host) with a remark.
  }];
  let options = [
    Option<"fuseLinear", "fuse-linear", "bool", /*default=*/"true",
           "Compute the router GEMM (a moe.linear whose logits only the route "
           "reads) inside the routing kernel">,
    Option<"fuseLinearMinTokens", "fuse-linear-min-tokens", "int64_t",
           /*default=*/"256",
           "With fuse-linear: take the fused kernel only when T is at least "
           "this (a host-side branch; below it the GEMM runs as its own "
           "kernel, which spreads a few tokens' logits over more threads); "
           "0: always fused">,
    Option<"mmaLinearMinTokens", "mma-linear-min-tokens", "int64_t",
           /*default=*/"-1",
           "From this many tokens the router GEMM runs on tensor cores "
           "(linear_mma, marked moe.mma_min_tokens for "
           "convert-moe-linear-to-gpu) and the routing kernel on its logits, "
           "instead of the fused kernel, where its shape takes the "
           "tensor-core kernel (0: never; -1: from the shape, at least "
           "fuse-linear-min-tokens, never when that is 0)">,
    Option<"chip", "chip", "std::string", /*default=*/"\"sm_90\"",
           "NVVM target chip (the tensor-core router GEMM needs sm_80 or "
           "newer)">,
    Option<"required", "required", "bool", /*default=*/"false",
           "Fail on a moe.route or capacity moe.dispatch op that cannot "
           "use its kernel instead of keeping the generic path">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::tensor::TensorDialect"];
}

def ConvertMoELinearToGPU
    : Pass<"convert-moe-linear-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Form a warp-per-output kernel for each moe.linear "
                "(router GEMMs, the LoRA base), two for a moe.projected_router";
  let description = [{
    Run by `moe-to-nvvm` on the decomposed IR after `convert-moe-route-to-gpu`
    (which absorbs the router GEMM it can fuse from
    `fuse-linear-min-tokens` tokens on) and before `convert-moe-to-linalg`.
    Each `moe.linear` `y = x W^T (+ b)` (x : T x I, W : O x I, b : O; any of
    bf16, f16, f32 for each; products accumulated in f32, rounded once to the
    result type) becomes one kernel `linear` in a new `gpu.module`
    (`<function>_linear[_N]`): blocks of 4 warps, grid
    `ceil(T/4) x ceil(O/4)`. Warp `w` of block `(bx, by)` computes output
    column `n = 4 by + w` of the four tokens `4 bx .. 4 bx + 3`: in each step
    its 32 lanes load contiguous vectors of up to 16 bytes (`vec` elements,
    the largest power of two dividing I) of the weight row and of the four x
    rows (up to 4 vectors per lane and step in flight), accumulate the
    products in f32 vectors, add the vector's elements, and combine the
    lanes by a `gpu.shuffle xor` butterfly; lane 0 adds the bias, rounds and
    stores. Rows past T and columns past O are clamped for the loads and
    not stored, so every warp runs the same loop. Each weight vector serves
    four tokens; for a few tokens the work is spread over `4 ceil(O/4)`
    warps instead of the `T x O` threads of the generic path (one thread per
    output walking its dot product alone).

    A `moe.projected_router` (Nexus, `W_r = W_2 SwiGLU(W_1 D)`) becomes first
    a kernel `swiglu_up` (`<function>_projected_router[_N]`): the same warp
    per output with D's E rows as the tokens, each warp forming both dot
    products of its column (rows `j` and `j + h'` of `W_1`) and lane 0
    storing `(g sigmoid(g)) u` in f32; then a `moe.linear` of that E x h'
    result and `W_2`, which becomes a linear kernel as above (two kernels
    instead of the generic path's six).

    The op is replaced by `bufferization.to_buffer` of its operands, a
    `memref.alloc` of the result and a call of a private declaration
    carrying `moe.linear_kernel` (the launch list of `LaunchList.h`);
    `moe-gpu-launch-linear-kernels` turns the call into the launch once the
    function is bufferized. A weight or bias that is a compile-time constant
    (a host global, which a kernel cannot read), dynamic I or O, or another
    element type keeps the generic path with a remark that says why (an
    error with `required`).

    Many tokens: where x and W share one dtype (bf16, f16, or f32 on 3xTF32)
    and I and O are multiples of 16, a second kernel `linear_mma`
    (`<function>_linear[_N]_mma`) is formed: the expert kernels' tensor-core
    GEMM (`convert-moe-experts-to-gpu`'s down kernel: 64 x BN x BK block
    tiles, BN the largest of 128, 64, 32, 16 dividing O, 3 cp.async stages,
    ldmatrix + `mma.sync`, the grouped block order) on the token rows in
    order, grid `ceil(T/64) x O/BN`, the bias added and the result rounded
    once in the epilogue. The host takes it when T is at least
    `mma-min-tokens` (an `scf.if` on T; 0: never; -1, the default: from the
    shape, the larger of 128 and the rows that give the grid 64 blocks,
    `64 ceil(64 / (O/BN))`). The warp-per-output
    kernel re-reads the whole weight once per 4 tokens on CUDA cores; this
    one once per 64 rows. Where the shape does not allow it and O >= 64, a
    remark says why (the warp-per-output kernel then serves every T). A
    `moe.linear` marked `moe.mma_min_tokens` (by `convert-moe-route-to-gpu`:
    a router GEMM it leaves outside the fused routing kernel's range) takes
    `linear_mma` from that many tokens instead of the shape's threshold
    (unless `mma-min-tokens` is 0); one marked `moe.tokens_below` (run only
    below the fused kernel's threshold) gets none.
  }];
  let options = [
    Option<"required", "required", "bool", /*default=*/"false",
           "Fail on a moe.linear op that cannot use the linear kernel "
           "instead of keeping the generic path">,
    Option<"chip", "chip", "std::string", /*default=*/"\"sm_90\"",
           "NVVM target chip (the tensor-core kernel needs sm_80 or newer)">,
    Option<"mmaMinTokens", "mma-min-tokens", "int64_t", /*default=*/"-1",
           "Tokens from which the host takes the tensor-core kernel "
           "(linear_mma) instead of the warp-per-output one (0: never; -1: "
           "from the shape, at least 128 and 64 blocks)">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::nvgpu::NVGPUDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::vector::VectorDialect"];
}

def ConvertMoENormToGPU
    : Pass<"convert-moe-norm-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Form a warp-per-token kernel for each moe.rms_norm, with "
                "the residual moe.combine that feeds it";
  let description = [{
    Run by `moe-to-nvvm` on the decomposed IR before `convert-moe-to-linalg`.
    Each `moe.rms_norm` (x : T x H, weight : H; bf16, f16 or f32) becomes one
    kernel `norm` in a new `gpu.module` (`<function>_norm[_N]`): blocks of 4
    warps, grid `ceil(T/4)`, warp `w` of block `bx` normalising token
    `4 bx + w`. With `fuse-combine` (the default), a `moe.combine` of addends
    only (no routing weights or slots: the residual `h = x + MoE_A(x)` of a
    Cartesian layer) that the norm reads is computed in the same kernel: its
    addends are the kernel's inputs, added in f32 in operand order and
    rounded to the combine's type, as the combine does; if other ops read
    h too (all after the norm, in its block) the kernel also stores h, else
    h never leaves registers.

    Two passes over the row, lane `l` taking the vector of `vec` elements
    (up to 16 bytes of the widest type, dividing H) at `c + l vec` in each
    step of `32 vec`: the first forms h and accumulates its squares in f32,
    then the vector's elements are added and the lanes combined by a
    `gpu.shuffle xor` butterfly; the second forms h again and writes
    `h * rsqrt(sum / H + epsilon) * weight` rounded to h's type. A step past
    H is clamped for the loads, its squares selected away and its stores
    skipped. The generic path takes seven kernels for the two ops
    (zero-fill, add, round; zero-fill, a thread per token for the sum of
    squares, a thread per element for the scaling, one for the rounding).

    The ops are replaced by `bufferization.to_buffer` of the operands,
    `memref.alloc` of the result (and of h when stored) and a call of a
    private declaration carrying `moe.norm_kernel` (the launch list of
    `LaunchList.h`); `moe-gpu-launch-norm-kernels` turns the call into the
    launch once the function is bufferized. A weight that is a compile-time
    constant (a host global, which a kernel cannot read), a dynamic H or
    another element type keeps the generic path with a remark that says why
    (an error with `required`).
  }];
  let options = [
    Option<"fuseCombine", "fuse-combine", "bool", /*default=*/"true",
           "Compute a moe.combine of addends only that feeds the norm in the "
           "norm kernel">,
    Option<"required", "required", "bool", /*default=*/"false",
           "Fail on a moe.rms_norm op that cannot use the norm kernel "
           "instead of keeping the generic path">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::vector::VectorDialect"];
}

def ConvertMoELoRAToGPU
    : Pass<"convert-moe-lora-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Form the two LoRA-expert kernels for each moe.lora_experts "
                "(AT-MoE)";
  let description = [{
    Run by `moe-to-nvvm` on the decomposed IR before `convert-moe-to-linalg`.
    Each `moe.lora_experts` (`slots[t, k] = (alpha / r) B_e (A_e x_t)` for
    the slots of its experts, 0 for the others; A : E x r x In,
    B : E x Out x r; bf16, f16 or f32 each) becomes two kernels in a new
    `gpu.module` (`<function>_lora[_N]`):

    * `lora_a`: `ax[t, k, j] = A_e[j] . x[t]` (f32), grid
      `T x ceil(K r / 4)`, a warp per output with the 16-byte vector loads
      and shuffle butterfly of the linear kernel (`convert-moe-linear-to-gpu`);
    * `lora_b`: `slots[t, k, h] = (alpha / r) sum_j B_e[h, j] ax[t, k, j]`,
      grid `T x ceil(K Out / 128)`, a thread per output, the r terms in
      order.

    With `fuse-combine` (default) and the AT-MoE shape, where the op's only
    user is `moe.combine weights(w) slots(op) addends(base)` and `base` is a
    `moe.linear` of the same input used only there (`y = W_0 x (+ b) +
    sum_k w_k slots_k`), the op, the base GEMM and the combine become two
    kernels instead:

    * `lora_a` as above, times the routing weight and alpha / r:
      `u[t, k, j] = w[t, k] (alpha / r) A_e[j] . x[t]` (0 for a slot of no
      expert of the op);
    * `lora_out`: the linear kernel of the base (a warp per output column
      and 4 tokens, grid `ceil(T / 4) x ceil(Out / 4)`) whose lanes also add
      the K r terms `u[t, k, j] B_e[n, j]` to their partial sums before the
      butterfly; the bias and one rounding to the combine's result type
      follow.

    No `T x K x Out` slots buffer, no combine kernels (AT-MoE example: 9 ->
    5 kernels). Otherwise the base (`moe.linear`) is the linear kernel's and
    the combine stays as it is; this pass must run before
    `convert-moe-linear-to-gpu` to see the base. The ops are replaced by the
    host code on buffers and a call of a private declaration carrying the
    launch list (`moe.linear_kernel`, expanded by
    `moe-gpu-launch-linear-kernels`). Constant LoRA weights or dynamic
    non-token dimensions keep the generic path with a remark (an error with
    `required`).

    Many tokens: where the base's x and W_0 share one dtype and In and Out
    are multiples of 16, the fused form also gets `lora_out_mma`
    (`<function>_lora[_N]_mma`): the tensor-core kernel of
    `convert-moe-linear-to-gpu`'s `linear_mma` with the K r terms
    `u[t, k, j] B_e[n, j]` added per output in its epilogue (in f32, before
    the bias and the one rounding). The host launches `lora_a`, then
    `lora_out_mma` when T is at least `mma-min-tokens` (0: never; -1, the
    default: from the shape, as `convert-moe-linear-to-gpu`), else
    `lora_out`.

    Dense A products (`dense-a-min-tokens`): where x and A share one dtype,
    In and E r are multiples of 16 and E / K is at most 32, the host takes,
    from that many tokens (at least `mma-min-tokens`; -1, the default: from
    the estimate 70 BN / (K r), BN the dense GEMM's column tile), the A
    products of every expert as one tensor-core GEMM instead of lora_a:
    `lora_a_mma`, `ax = x A_all^T` (T x E r, f32; `A_all` the E r x In rows
    of A, the same kernel as `linear_mma`), then `lora_out_mma_dense`, which
    forms `u[t, k, j] = ax[t, e r + j] w[t, k] alpha / r` from it in the
    epilogue. lora_a's warp per `(t, k, j)` product reads an x row and an A
    row from L2 per product; the dense GEMM does E / K times the products on
    tensor cores. Between the two thresholds the host launches `lora_a` and
    `lora_out_mma`, below them `lora_a` and `lora_out`.
  }];
  let options = [
    Option<"required", "required", "bool", /*default=*/"false",
           "Fail on a moe.lora_experts op that cannot use the LoRA kernels "
           "instead of keeping the generic path">,
    Option<"fuseCombine", "fuse-combine", "bool", /*default=*/"true",
           "Fuse the LoRA B products, the combine and the base GEMM into one "
           "kernel (lora_out) where the op feeds a moe.combine with the base "
           "moe.linear as its only addend">,
    Option<"chip", "chip", "std::string", /*default=*/"\"sm_90\"",
           "NVVM target chip (the tensor-core kernel needs sm_80 or newer)">,
    Option<"mmaMinTokens", "mma-min-tokens", "int64_t", /*default=*/"-1",
           "Tokens from which the host takes the tensor-core lora_out_mma "
           "instead of lora_out (0: never; -1: from the shape, at least 128 "
           "and 64 blocks)">,
    Option<"denseAMinTokens", "dense-a-min-tokens", "int64_t",
           /*default=*/"-1",
           "Tokens from which the host forms the A products of every expert "
           "as one tensor-core GEMM (lora_a_mma, then lora_out_mma_dense) "
           "instead of lora_a's warp per product, where E / K <= 32 and "
           "In, E r are multiples of 16; at least mma-min-tokens (0: never; "
           "-1: from the estimate 70 BN / (K r))">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::nvgpu::NVGPUDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::vector::VectorDialect"];
}

def MoEGPULaunchLinearKernels
    : Pass<"moe-gpu-launch-linear-kernels", "::mlir::ModuleOp"> {
  let summary = "Replace the calls left by convert-moe-linear-to-gpu with "
                "gpu.launch_func of the linear kernel";
  let description = [{
    Runs on bufferized host code (the `moe-to-nvvm` GPUMap phase). Each call
    of a declaration carrying `moe.linear_kernel` becomes its launch (the
    launch-list format of `moe.expert_kernels`): one `gpu.launch_func` on
    `ceil(T / 4) x ceil(O / 4)` blocks of 128 threads, T from the result
    buffer (T = 0 gives an empty grid, which the runtime skips). The
    declarations are erased; a malformed list is an error.
  }];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

def MoEGPULaunchNormKernels
    : Pass<"moe-gpu-launch-norm-kernels", "::mlir::ModuleOp"> {
  let summary = "Replace the calls left by convert-moe-norm-to-gpu with "
                "gpu.launch_func of the norm kernel";
  let description = [{
    Runs on bufferized host code (the `moe-to-nvvm` GPUMap phase). Each call
    of a declaration carrying `moe.norm_kernel` becomes its launch (the
    launch-list format of `moe.expert_kernels`): one `gpu.launch_func` on
    `ceil(T / 4)` blocks of 128 threads, T from the result buffer (T = 0
    gives an empty grid, which the runtime skips). The declarations are
    erased; a malformed list is an error.
  }];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

def MoEGPULaunchRouteKernels
    : Pass<"moe-gpu-launch-route-kernels", "::mlir::ModuleOp"> {
  let summary = "Replace the calls left by convert-moe-route-to-gpu with "
                "gpu.launch_func of the routing kernel";
  let description = [{
    Runs on bufferized host code (the `moe-to-nvvm` GPUMap phase). Each call
    of a declaration carrying `moe.route_kernel` becomes the launches of its
    `launches` list (the format of `moe.expert_kernels`, plus
    `grid_divisor`: grid x = ceil(dim 0 of the grid operand / divisor)):
    one `gpu.launch_func` on the call's buffers, on `ceil(T / 4)` blocks of
    128 threads (T from the indices buffer; T = 0 gives an empty grid, which
    the runtime skips). The declarations are erased; a malformed list is an
    error.
  }];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

#endif // MOE_CONVERSION_PASSES_TD
