//===- PipelineUtils.h - helpers of the built-in pipelines ------*- C++ -*-===//
//
// What CPUPipeline.cpp and GPUPipeline.cpp share: upstream passes added by
// their textual names, and the pass that stands in for a phase whose
// options no input can take.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_PIPELINES_PIPELINEUTILS_H
#define MOE_LIB_PIPELINES_PIPELINEUTILS_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/raw_ostream.h"

#include <memory>
#include <string>

namespace mlir::moe::detail {

/// Appends an upstream pipeline given in textual form. The upstream passes
/// are addressed by their registered names so the pipeline reads like the
/// `moe-opt` command line it is equivalent to. The text is built from
/// checked options, so a parse failure is a bug of ours.
inline void addUpstream(OpPassManager &pm, StringRef text) {
  if (failed(parsePassPipeline(text, pm, llvm::errs())))
    llvm::report_fatal_error("moe-mlir: malformed built-in pipeline: " + text);
}

/// Fails with `message` as an error at the module: added instead of a phase
/// whose options no input can take (some would abort the process while the
/// pipeline is built, in an upstream pass or in LLVM).
struct OptionErrorPass
    : public PassWrapper<OptionErrorPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(OptionErrorPass)
  explicit OptionErrorPass(std::string message) : message(std::move(message)) {}

  StringRef getArgument() const final { return "moe-option-error"; }
  StringRef getDescription() const final {
    return "Fail with an error about the pipeline's options";
  }
  void runOnOperation() override {
    mlir::emitError(getOperation().getLoc()) << message;
    signalPassFailure();
  }

  std::string message;
};

} // namespace mlir::moe::detail

#endif // MOE_LIB_PIPELINES_PIPELINEUTILS_H
