//===- Passes.h - moe conversion passes -------------------------*- C++ -*-===//

#ifndef MOE_CONVERSION_PASSES_H
#define MOE_CONVERSION_PASSES_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/Pass.h"

namespace mlir {
class RewritePatternSet;
namespace moe {

#define GEN_PASS_DECL
#include "moe/Conversion/Passes.h.inc"

/// Patterns lowering the moe compute ops to linalg on tensors; with
/// `gemmBlockBytes` > 0 the GEMMs of moe.experts, moe.ffn and moe.linear
/// become blocked scf loop nests whose row blocks hold that many bytes of
/// input (the pass's `blocked-gemms`, `gemm-block-bytes`).
void populateMoEToLinalgPatterns(RewritePatternSet &patterns,
                                 int64_t gemmBlockBytes = 0);

#define GEN_PASS_REGISTRATION
#include "moe/Conversion/Passes.h.inc"

} // namespace moe
} // namespace mlir

#endif // MOE_CONVERSION_PASSES_H
