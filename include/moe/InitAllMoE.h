//===- InitAllMoE.h - register moe dialects and passes ----------*- C++ -*-===//
//
// One place that registers everything a moe-mlir tool needs: the `moe`
// dialect and passes, plus the upstream dialects, extensions and passes that
// the lowering pipelines use. Every tool calls these instead of keeping its
// own list.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_INITALLMOE_H
#define MOE_INITALLMOE_H

#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoE.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"
#include "moe/Pipelines/Pipelines.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"

namespace mlir::moe {

inline void registerAllMoEDialects(DialectRegistry &registry) {
  registry.insert<MoEDialect>();
  registerAllDialects(registry);
  registerAllExtensions(registry);
}

inline void registerAllMoEPasses() {
  registerAllPasses();
  registerMoEPasses();
  registerMoEConversionPasses();
  registerMoEPipelines();
}

} // namespace mlir::moe

#endif // MOE_INITALLMOE_H
