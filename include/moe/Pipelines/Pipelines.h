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

namespace mlir {
class OpPassManager;
namespace moe {

struct CPUPipelineOptions : public PassPipelineOptions<CPUPipelineOptions> {
  PassOptions::Option<bool> decompose{
      *this, "decompose",
      llvm::cl::desc("Run --moe-decompose and canonicalisation first"),
      llvm::cl::init(true)};
};

/// The phases of the CPU pipeline, in order; `moe-compile --stop-after`
/// names them.
enum class CPUPhase { Decompose, Linalg, Bufferize, LLVMDialect };

/// Adds the passes of one phase.
void buildCPUPhase(OpPassManager &pm, CPUPhase phase,
                   const CPUPipelineOptions &options);

/// moe IR on tensors -> LLVM dialect for the host CPU: all phases.
void buildMoEToLLVMCPUPipeline(OpPassManager &pm,
                               const CPUPipelineOptions &options);

/// Registers `moe-to-llvm-cpu`.
void registerMoEPipelines();

} // namespace moe
} // namespace mlir

#endif // MOE_PIPELINES_PIPELINES_H
