//===- Pipelines.h - named moe-mlir pass pipelines --------------*- C++ -*-===//
//
// Named pipelines with a PassPipelineOptions struct and a build/register
// pair, so that `moe-opt --moe-to-llvm-cpu` and `moe-compile` run the same
// code (the pattern of mlir/Dialect/GPU/Pipelines/Passes.h).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PIPELINES_PIPELINES_H
#define MOE_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassOptions.h"
#include "llvm/ADT/StringRef.h"

namespace mlir {
class DialectRegistry;
class OpPassManager;
namespace moe {

struct CPUPipelineOptions : public PassPipelineOptions<CPUPipelineOptions> {
  PassOptions::Option<bool> decompose{
      *this, "decompose",
      llvm::cl::desc("Run --moe-decompose and canonicalisation first"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> blockedGemms{
      *this, "blocked-gemms",
      llvm::cl::desc("GEMMs as blocked loop nests, the expert ones expert "
                     "by expert over the slots sorted by expert (0: linalg "
                     "generics, one gathered mat-vec per expert slot)"),
      llvm::cl::init(true)};
  PassOptions::Option<int64_t> gemmBlockBytes{
      *this, "gemm-block-bytes",
      llvm::cl::desc("Bytes of input rows per block of the blocked GEMMs"),
      llvm::cl::init(512 * 1024)};
  PassOptions::Option<int64_t> gemmVectorBits{
      *this, "gemm-vector-bits",
      llvm::cl::desc("Vector width of the blocked GEMMs' outer-product "
                     "micro-kernel: 512, 256, 0 (none: dot-product tiles "
                     "only) or -1, the host's (512 with AVX-512F, 256 with "
                     "AVX2 and FMA, else 0)"),
      llvm::cl::init(-1)};
  PassOptions::Option<int> gemmAMX{
      *this, "gemm-amx",
      llvm::cl::desc("bf16 GEMMs on AMX tiles: 1, 0 or -1, the host's (1 "
                     "when it has AMX-TILE and AMX-BF16). The down "
                     "projection's f32 activations are then rounded to bf16, "
                     "as a bf16 model computes them"),
      llvm::cl::init(-1)};
  PassOptions::Option<bool> polynomialMath{
      *this, "polynomial-math",
      llvm::cl::desc("f32 exp, erf and tanh (activations, softmax) as MLIR's "
                     "polynomial approximations, which vectorise, instead of "
                     "libm calls (moe-polynomial-math; within 1 ulp for exp, "
                     "4 for erf and tanh)"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> runtimeAllocator{
      *this, "runtime-allocator",
      llvm::cl::desc("Allocate buffers with MLIR's generic allocation "
                     "functions (_mlir_memref_to_llvm_alloc/free), which "
                     "libmoe_runtime implements with a cache of large "
                     "blocks; 0: malloc and free"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> parallel{
      *this, "parallel",
      llvm::cl::desc("Run the blocked GEMMs' column groups on the runtime's "
                     "worker threads (scf.forall -> scf.parallel -> "
                     "async-parallel-for -> mlirAsyncRuntime* calls, which "
                     "libmoe_runtime implements); 0: sequential loops"),
      llvm::cl::init(true)};
  PassOptions::Option<int> minTaskSize{
      *this, "min-task-size",
      llvm::cl::desc("Fewest column groups (of 4 columns) per parallel task"),
      llvm::cl::init(8)};
};

/// The phases of the CPU pipeline, in order; `moe-compile --stop-after`
/// names them.
enum class CPUPhase { Decompose, Linalg, Bufferize, LLVMDialect };

/// What is wrong with `options` whatever the input, or "" when nothing is
/// (values outside each option's documented set).
std::string checkCPUOptions(const CPUPipelineOptions &options);

/// Adds the passes of one phase; with options checkCPUOptions refuses, a
/// pass that fails with its message instead.
void buildCPUPhase(OpPassManager &pm, CPUPhase phase,
                   const CPUPipelineOptions &options);

/// The micro-kernel vector width `gemm-vector-bits=-1` stands for: 512 on
/// a host with AVX-512F, 256 with AVX2 and FMA, else 0.
int64_t hostGemmVectorBits();

/// What `gemm-amx=-1` stands for: whether the host has AMX-TILE and
/// AMX-BF16 (LLVM's host feature list, from CPUID).
bool hostHasAMX();

/// moe IR on tensors -> LLVM dialect for the host CPU: all phases.
void buildMoEToLLVMCPUPipeline(OpPassManager &pm,
                               const CPUPipelineOptions &options);

/// Registers `moe-to-llvm-cpu` and `moe-to-nvvm` (with the GPU pipeline's
/// own passes).
void registerMoEPipelines();

//===----------------------------------------------------------------------===//
// GPU (NVVM) pipeline: lib/Pipelines/GPUPipeline.cpp, docs/notes/gpu-path.md
//===----------------------------------------------------------------------===//

struct GPUPipelineOptions : public PassPipelineOptions<GPUPipelineOptions> {
  PassOptions::Option<bool> decompose{
      *this, "decompose",
      llvm::cl::desc("Run --moe-decompose and canonicalisation first"),
      llvm::cl::init(true)};
  PassOptions::Option<std::string> chip{
      *this, "chip", llvm::cl::desc("NVVM target chip (sm_75 and newer)"),
      llvm::cl::init("sm_90")};
  PassOptions::Option<std::string> features{
      *this, "features",
      llvm::cl::desc("NVPTX features, e.g. +ptx80 (empty: +ptxNN with NN "
                     "the larger of 8.1 and the chip's minimum, 8.7 for "
                     "sm_120); from PTX 8.1 on sm_90 and newer the atomic "
                     "combine uses vector f32 reductions"),
      llvm::cl::init("")};
  PassOptions::Option<std::string> format{
      *this, "format",
      llvm::cl::desc("gpu.binary contents: bin (cubin through ptxas), isa "
                     "(PTX text, JIT-compiled by the driver at load), fatbin"),
      llvm::cl::init("bin")};
  PassOptions::Option<int> optLevel{
      *this, "opt-level", llvm::cl::desc("LLVM optimisation level for kernels"),
      llvm::cl::init(3)};
  PassOptions::Option<int64_t> blockSize{
      *this, "block-size",
      llvm::cl::desc("Threads per block the automatic tiling fills, innermost "
                     "loop dimension first (at most 1024)"),
      llvm::cl::init(256)};
  PassOptions::Option<std::string> cudaPath{
      *this, "cuda-path",
      llvm::cl::desc("CUDA toolkit for libdevice and ptxas (default: "
                     "$CUDA_ROOT, $CUDA_HOME, $CUDA_PATH, /usr/local/cuda)")};
  PassOptions::ListOption<int64_t> tileSizes{
      *this, "tile-sizes",
      llvm::cl::desc("Explicit threads per block per loop dimension, "
                     "innermost first (overrides block-size)")};
  // Warp-per-token routing kernel (convert-moe-route-to-gpu).
  PassOptions::Option<bool> routeKernels{
      *this, "route-kernels",
      llvm::cl::desc("Run covered moe.route ops as one warp-per-token "
                     "kernel, and capacity moe.dispatch ops as the "
                     "one-warp admission kernel (off: both on the generic "
                     "path, the admission a scan on the host)"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> routeKernelsRequired{
      *this, "route-kernels-required",
      llvm::cl::desc("Fail on a moe.route or capacity moe.dispatch op "
                     "that cannot use its kernel (default: a remark, generic "
                     "path)"),
      llvm::cl::init(false)};
  PassOptions::Option<bool> asyncLaunches{
      *this, "async-launches",
      llvm::cl::desc("Queue kernel launches, frees and the host branches "
                     "around them on one stream with one host wait before "
                     "the next host side effect (moe-gpu-async-launches) "
                     "instead of a wait after each"),
      llvm::cl::init(true)};
  // Warp-per-output kernel for the remaining moe.linear ops
  // (convert-moe-linear-to-gpu).
  PassOptions::Option<bool> linearKernels{
      *this, "linear-kernels",
      llvm::cl::desc("Run moe.linear ops (router GEMMs not fused into the "
                     "routing kernel, the LoRA base) as a warp-per-output "
                     "kernel, and moe.lora_experts as two kernels"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> loraFuseCombine{
      *this, "lora-fuse-combine",
      llvm::cl::desc("With linear-kernels: where a moe.lora_experts feeds a "
                     "moe.combine whose only addend is the LoRA base "
                     "(AT-MoE), compute the B products, the combine and the "
                     "base GEMM in one kernel (lora_out) instead of lora_b, "
                     "the combine's generic kernels and the linear kernel"),
      llvm::cl::init(true)};
  PassOptions::Option<int64_t> linearMmaMinTokens{
      *this, "linear-mma-min-tokens",
      llvm::cl::desc("With linear-kernels: a moe.linear (and the AT-MoE "
                     "lora_out) of a shape the tensor cores take also gets "
                     "the expert kernels' mma.sync GEMM, which the host runs "
                     "from this many tokens (0: never; -1: from the shape, "
                     "at least 128 and enough rows for 64 blocks)"),
      llvm::cl::init(-1)};
  PassOptions::Option<int64_t> loraDenseAMinTokens{
      *this, "lora-dense-a-min-tokens",
      llvm::cl::desc("With lora_out_mma: from this many tokens (at least "
                     "linear-mma-min-tokens), form the AT-MoE LoRA A "
                     "products of every expert as one tensor-core GEMM "
                     "(lora_a_mma) instead of a warp per product (0: never; "
                     "-1: from the shape)"),
      llvm::cl::init(-1)};
  // Warp-per-token kernel for moe.rms_norm and the residual combine that
  // feeds it (convert-moe-norm-to-gpu).
  PassOptions::Option<bool> normKernels{
      *this, "norm-kernels",
      llvm::cl::desc("Run each moe.rms_norm, with the moe.combine of "
                     "addends only that feeds it (the Cartesian layer's "
                     "residual), as one warp-per-token kernel instead of "
                     "the generic path's seven kernels"),
      llvm::cl::init(true)};
  PassOptions::Option<int64_t> expertLargeTileRows{
      *this, "expert-large-tile-rows",
      llvm::cl::desc("BM = 128 expert kernels beside the BM = 64 (or, E > "
                     "16, BM = 32) ones, taken when T * K is at least this "
                     "(times E / 8 for E > 16; 0: off)"),
      llvm::cl::init(1024)};
  PassOptions::Option<bool> expertFuseShared{
      *this, "expert-fuse-shared",
      llvm::cl::desc("Run a shared expert of the routed experts' shape in "
                     "their kernels (atomic combine)"),
      llvm::cl::init(true)};
  PassOptions::Option<int64_t> expertSplitKBlocks{
      *this, "expert-split-k-blocks",
      llvm::cl::desc("Split-K down kernels for a few tokens, taken while "
                     "T * K * (H / BN2) is below this (0: off)"),
      llvm::cl::init(512)};
  PassOptions::Option<bool> routeFuseLinear{
      *this, "route-fuse-linear",
      llvm::cl::desc("Compute the router GEMM inside the routing kernel "
                     "(a moe.linear whose logits only the route reads)"),
      llvm::cl::init(true)};
  PassOptions::Option<int64_t> routeFuseLinearMinTokens{
      *this, "route-fuse-linear-min-tokens",
      llvm::cl::desc("Fused router GEMM only from this many tokens (a "
                     "run-time branch; 0: always)"),
      llvm::cl::init(256)};
  PassOptions::Option<int64_t> routeLinearMmaMinTokens{
      *this, "route-linear-mma-min-tokens",
      llvm::cl::desc("With linear-kernels: from this many tokens the router "
                     "GEMM runs on tensor cores (linear_mma) and the routing "
                     "kernel on its logits instead of the fused kernel, "
                     "where the router's shape allows (0: never; -1: from "
                     "the shape, at least route-fuse-linear-min-tokens)"),
      llvm::cl::init(-1)};
  // Tensor-core expert kernels (convert-moe-experts-to-gpu); tile sizes
  // left at 0 are chosen from the layer's shape.
  PassOptions::Option<bool> expertKernels{
      *this, "expert-kernels",
      llvm::cl::desc("Run eligible moe.experts as tensor-core kernels "
                     "(align, gate+up GEMM, down GEMM)"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> expertKernelsRequired{
      *this, "expert-kernels-required",
      llvm::cl::desc("Fail on a moe.experts op that cannot use the "
                     "tensor-core kernels (default: a remark, generic path)"),
      llvm::cl::init(false)};
  PassOptions::Option<int64_t> expertTileM{
      *this, "expert-tile-m",
      llvm::cl::desc("Rows of an expert GEMM tile: 16, 32, 64, 128 (0: auto)"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> expertTileNGateUp{
      *this, "expert-tile-n-gate-up",
      llvm::cl::desc("F columns of a gate+up GEMM tile (0: auto)"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> expertTileNDown{
      *this, "expert-tile-n-down",
      llvm::cl::desc("H columns of a down GEMM tile (0: auto)"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> expertTileK{
      *this, "expert-tile-k",
      llvm::cl::desc("Reduction step of the expert GEMMs: 16, 32, 64, "
                     "128 (0: auto)"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> expertStages{
      *this, "expert-stages",
      llvm::cl::desc("Shared-memory stages of the expert GEMMs' cp.async "
                     "pipeline: 2-4 (0: auto)"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> expertWarps{
      *this, "expert-warps",
      llvm::cl::desc("Warps per expert GEMM block: 4 or 8 (0: 4)"),
      llvm::cl::init(0)};
  PassOptions::Option<bool> expertWgmma{
      *this, "expert-wgmma",
      llvm::cl::desc("Expert GEMMs with sm_90a wgmma.mma_async (needs "
                     "chip=sm_90a; not measured on a GPU yet)"),
      llvm::cl::init(false)};
  PassOptions::Option<bool> expertDynamicSmem{
      *this, "expert-dynamic-smem",
      llvm::cl::desc("Expert GEMM tiles may use dynamic shared memory up "
                     "to the chip's opt-in maximum (227 KiB on sm_90; false: "
                     "48 KiB static)"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> expertWideTiles{
      *this, "expert-wide-tiles",
      llvm::cl::desc("BM = 128 expert tiles default to 128 x 256 x 64 (8 "
                     "warps for mma.sync) where the chip allows 163 KiB of "
                     "shared memory (false: 128 x 128 x 32)"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> expertWgmmaSwizzle{
      *this, "expert-wgmma-swizzle",
      llvm::cl::desc("wgmma tiles of 128-byte rows in dynamic shared memory "
                     "use the 128-byte swizzled layout (false: no-swizzle "
                     "core matrices)"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> expertTma{
      *this, "expert-tma",
      llvm::cl::desc("Swizzled wgmma expert kernels load their weight tiles "
                     "by TMA (tensor maps made on the host, an mbarrier per "
                     "stage); with expert-wgmma=1 on sm_90a; not measured on "
                     "a GPU yet"),
      llvm::cl::init(false)};
  PassOptions::Option<int64_t> expertGroupM{
      *this, "expert-group-m",
      llvm::cl::desc("Expert GEMM block order: groups of this many row "
                     "tiles x all column blocks, for L2 reuse (0: per run, "
                     "about one expert's row tiles; 1: the plain order)"),
      llvm::cl::init(0)};
  PassOptions::Option<std::string> expertCombine{
      *this, "expert-combine",
      llvm::cl::desc("Fuse the moe.combine after the expert kernels: atomic "
                     "(f32 atomics in the down GEMM), gather (sorted rows, "
                     "per-token reduce) or none"),
      llvm::cl::init("atomic")};
};

/// The phases of the GPU pipeline, in order. The first three are the CPU
/// pipeline's; GPUMap ends with host code on managed memory launching
/// outlined kernels of one gpu.module; NVVM ends with everything in the
/// LLVM/NVVM dialects; Binary serializes the gpu.module (needs ptxas for
/// bin/fatbin).
enum class GPUPhase { Decompose, Linalg, Bufferize, GPUMap, NVVM, Binary };

/// The lowest PTX ISA version (x 10) NVPTX accepts for `chip` (e.g. 78 for
/// sm_90, 80 for sm_90a); 0 for a chip that LLVM 22's NVPTX and CUDA 13's
/// ptxas do not both take.
unsigned minimumPtxVersion(llvm::StringRef chip);

/// The chips minimumPtxVersion takes, as errors list them.
inline constexpr llvm::StringLiteral kSupportedChips =
    "sm_75, sm_80, sm_86, sm_87, sm_88, sm_89, sm_90, sm_90a, sm_100, sm_103, "
    "sm_110, sm_120, sm_121, and from sm_100 on an a or f suffix";

/// What is wrong with `options` whatever the input, or "" when nothing is:
/// an unknown chip or PTX version, a PTX version older than the chip needs,
/// an optimisation level, format or toolkit that cannot serve, a kernel
/// threshold below its allowed range.
std::string checkGPUOptions(const GPUPipelineOptions &options);

/// Adds the passes of one phase; with options checkGPUOptions refuses, a
/// pass that fails with its message instead.
void buildGPUPhase(OpPassManager &pm, GPUPhase phase,
                   const GPUPipelineOptions &options);

/// moe IR on tensors -> gpu.binary + host LLVM dialect: all phases.
void buildMoEToNVVMPipeline(OpPassManager &pm,
                            const GPUPipelineOptions &options);

/// The CUDA toolkit the Binary phase uses: `option` if set, else the first
/// of $CUDA_ROOT, $CUDA_HOME, $CUDA_PATH, /usr/local/cuda (if it has
/// libdevice), else "" (the serializer then finds ptxas on PATH only and
/// links no libdevice).
std::string resolveCUDAPath(llvm::StringRef option);

/// Registers `moe-to-nvvm` and the passes it uses (moe-gpu-*).
void registerGPUPipeline();

/// Registers what the GPU phases and the final translation to LLVM IR
/// need: the #nvvm.target serialization model and the builtin, gpu, llvm
/// and nvvm dialects' LLVM IR translations. A driver that runs the phases
/// and then translateModuleToLLVMIR should add these to its registry.
void registerGPUPipelineDependencies(DialectRegistry &registry);

} // namespace moe
} // namespace mlir

#endif // MOE_PIPELINES_PIPELINES_H
