//===- CPUPipeline.cpp - moe IR to the LLVM dialect for the CPU -*- C++ -*-===//

#include "moe/Pipelines/Pipelines.h"

#include "PipelineUtils.h"

#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

using namespace mlir;
using namespace mlir::moe;

using mlir::moe::detail::addUpstream;

/// Whether the pipeline's GEMMs may use AMX tiles.
static bool usesAMX(const CPUPipelineOptions &options) {
  return options.blockedGemms &&
         (options.gemmAMX < 0 ? hostHasAMX() : options.gemmAMX != 0);
}

std::string mlir::moe::checkCPUOptions(const CPUPipelineOptions &options) {
  std::string why;
  llvm::raw_string_ostream os(why);
  if (options.gemmAMX < -1 || options.gemmAMX > 1)
    os << "gemm-amx must be 1, 0 or -1 (the host's) (got " << options.gemmAMX
       << ")";
  else if (!llvm::is_contained({-1, 0, 256, 512},
                               int64_t(options.gemmVectorBits)))
    os << "gemm-vector-bits must be 512, 256, 0 or -1 (the host's) (got "
       << options.gemmVectorBits << ")";
  else if (options.gemmBlockBytes <= 0)
    os << "gemm-block-bytes must be positive (got " << options.gemmBlockBytes
       << ")";
  else if (options.minTaskSize < 1)
    os << "min-task-size must be at least 1 (got " << options.minTaskSize
       << ")";
  return why;
}

void mlir::moe::buildCPUPhase(OpPassManager &pm, CPUPhase phase,
                              const CPUPipelineOptions &options) {
  if (std::string why = checkCPUOptions(options); !why.empty()) {
    pm.addPass(
        std::make_unique<detail::OptionErrorPass>("moe-to-llvm-cpu: " + why));
    return;
  }
  switch (phase) {
  case CPUPhase::Decompose:
    if (options.decompose) {
      pm.addPass(createMoEDecompose());
      pm.addPass(createCanonicalizerPass());
    }
    return;
  case CPUPhase::Linalg:
    pm.addPass(createConvertMoEToLinalg(ConvertMoEToLinalgOptions{
        options.blockedGemms, options.gemmBlockBytes,
        options.gemmVectorBits < 0 ? hostGemmVectorBits()
                                   : options.gemmVectorBits,
        usesAMX(options)}));
    if (options.polynomialMath)
      pm.addPass(createMoEPolynomialMath());
    pm.addPass(createCanonicalizerPass());
    pm.addPass(createCSEPass());
    // No linalg-fuse-elementwise-ops here: it fuses the activation into the
    // down projection's contraction, which reads each activation H times and
    // so recomputed it H times (measured: 26% of a layer's time in expf).
    // Fusion comes back with tiling, where the producer is computed once per
    // tile.
    return;
  case CPUPhase::Bufferize:
    // Identity layouts at function boundaries: the runtime passes plain
    // row-major buffers.
    // Loop-carried routing state (the taken masks, the slot columns) is
    // rebuilt each iteration, so loops may yield fresh buffers.
    addUpstream(pm, "one-shot-bufferize{bufferize-function-boundaries=1 "
                    "function-boundary-type-conversion=identity-layout-map "
                    "allow-return-allocs-from-loops=1}");
    // The blocked GEMMs' column groups (scf.forall, each writing its own
    // slab; the only scf.forall of this pipeline) become scf.parallel,
    // outlined below, or plain loops. Canonicalisation first folds the
    // slabs' loop-carried subviews (each inner loop yields its slab
    // unchanged): otherwise the slab is copied onto itself at the end of
    // each group and the deallocation passes see loop-carried buffers.
    // Without blocked GEMMs (the GPU pipeline) none of this applies.
    if (options.blockedGemms) {
      addUpstream(pm, "canonicalize,cse");
      addUpstream(pm, options.parallel ? "scf-forall-to-parallel"
                                       : "scf-forall-to-for");
    }
    // Results stay returned buffers: buffer-results-to-out-params skips
    // dynamically shaped results (the token count is dynamic). Ownership-based
    // deallocation hands every returned buffer to the caller, which frees it.
    // A function returning a buffer whose ownership is known only at run
    // time (the result of an scf.for, e.g. a blocked GEMM's) gets a
    // conditional bufferization.clone, which convert-bufferization-to-memref
    // turns into an allocation and a copy.
    addUpstream(pm, "func.func(ownership-based-buffer-deallocation),"
                    "canonicalize,buffer-deallocation-simplification,"
                    "bufferization-lower-deallocations,"
                    "convert-bufferization-to-memref");
    if (options.parallel) {
      // Each scf.parallel is cut into tasks of at least min-task-size
      // iterations, as many as the runtime's worker count asks for
      // (num-workers=-1: mlirAsyncRuntimGetNumWorkerThreads at run time;
      // 1 when the caller asked for one thread, and the runtime then runs
      // the tasks inline). The caller's thread runs the first task.
      addUpstream(pm, "async-parallel-for{async-dispatch=1 num-workers=-1 "
                      "min-task-size=" +
                          std::to_string(options.minTaskSize) +
                          "},canonicalize,async-to-async-runtime,"
                          "async-runtime-ref-counting,"
                          "async-runtime-ref-counting-opt");
    }
    return;
  case CPUPhase::LLVMDialect:
    // bf16 conversions become integer bit operations: the host libgcc has no
    // __truncsfbf2 on every machine.
    if (options.parallel)
      addUpstream(pm, "convert-async-to-llvm");
    // The GEMM micro-kernel's vector ops (transfer reads of its packed
    // panels, broadcasts, FMAs, lane extracts) go first: convert-to-llvm
    // would leave its transfer reads.
    // With AMX, the tile ops too; the AMX kernel's 16 x 16 transposes (of
    // VNNI word pairs when packing, of the accumulators when storing) as
    // the AVX-512 shuffle sequence instead of element by element.
    if (options.blockedGemms)
      addUpstream(pm, usesAMX(options)
                          ? "convert-vector-to-llvm{enable-amx=1 "
                            "vector-transpose-lowering=shuffle16x16}"
                          : "convert-vector-to-llvm");
    addUpstream(pm, "convert-linalg-to-loops,arith-expand{include-bf16=1},"
                    "expand-strided-metadata,"
                    "lower-affine,convert-scf-to-cf,convert-math-to-llvm,"
                    "convert-math-to-libm");
    // Buffers through the runtime's allocator (HostAlloc.cpp: large blocks
    // are cached between calls instead of going back to the kernel and
    // faulting in again); convert-to-llvm would call malloc and free.
    if (options.runtimeAllocator)
      addUpstream(pm, "finalize-memref-to-llvm{use-generic-functions=1}");
    addUpstream(pm, "convert-to-llvm,reconcile-unrealized-casts");
    return;
  }
}

bool mlir::moe::hostHasAMX() {
  llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
  if (!features.lookup("amx-tile") || !features.lookup("amx-bf16"))
    return false;
#if defined(__linux__) && defined(__x86_64__)
  // And the kernel supports the tile state (Linux 5.16+), which the runtime
  // requests before loading such code: arch_prctl(ARCH_GET_XCOMP_SUPP)
  // lists XTILEDATA (state component 18).
  constexpr long kGetXcompSupp = 0x1021;
  unsigned long long supported = 0;
  return syscall(SYS_arch_prctl, kGetXcompSupp, &supported) == 0 &&
         (supported >> 18 & 1);
#else
  return false;
#endif
}

int64_t mlir::moe::hostGemmVectorBits() {
  llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
  auto has = [&](StringRef name) { return features.lookup(name); };
  if (has("avx512f"))
    return 512;
  if (has("avx2") && has("fma"))
    return 256;
  return 0;
}

void mlir::moe::buildMoEToLLVMCPUPipeline(OpPassManager &pm,
                                          const CPUPipelineOptions &options) {
  for (CPUPhase phase : {CPUPhase::Decompose, CPUPhase::Linalg,
                         CPUPhase::Bufferize, CPUPhase::LLVMDialect})
    buildCPUPhase(pm, phase, options);
}

void mlir::moe::registerMoEPipelines() {
  PassPipelineRegistration<CPUPipelineOptions>(
      "moe-to-llvm-cpu",
      "Lower moe layers on tensors to the LLVM dialect for the host CPU "
      "(decompose, linalg, bufferize, LLVM)",
      buildMoEToLLVMCPUPipeline);
  registerGPUPipeline();
}
