//===- Passes.h - moe conversion passes -------------------------*- C++ -*-===//

#ifndef MOE_CONVERSION_PASSES_H
#define MOE_CONVERSION_PASSES_H

#include "mlir/Dialect/AMX/AMXDialect.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir {
class RewritePatternSet;
namespace moe {

#define GEN_PASS_DECL
#include "moe/Conversion/Passes.h.inc"

/// On a host function declaration: the function takes buffer addresses but
/// reads and writes no buffer contents (the runtime's mgpuTensorMap3D), so
/// moe-gpu-async-launches queues launches past its calls without a wait.
constexpr llvm::StringLiteral kNoBufferAccessAttr = "moe.no_buffer_access";

/// How the GEMMs of moe.experts, moe.ffn and moe.linear are lowered: with
/// `blockBytes` > 0 as blocked scf loop nests whose row blocks hold that
/// many bytes of input (the pass's `blocked-gemms`, `gemm-block-bytes`);
/// with `vectorBits` 256 or 512 their blocks of whole vectors of rows also
/// take the outer-product micro-kernel on vectors of that width
/// (`gemm-vector-bits`; 0: the dot-product tiles only).
struct BlockedGemmConfig {
  int64_t blockBytes = 0;
  int64_t vectorBits = 0;
  /// bf16 GEMMs on AMX tiles (`gemm-amx`).
  bool amx = false;
};

/// Patterns lowering the moe compute ops to linalg on tensors (linalg,
/// tensor, scf and, for the micro-kernel, vector ops).
void populateMoEToLinalgPatterns(RewritePatternSet &patterns,
                                 BlockedGemmConfig gemms = {});

#define GEN_PASS_REGISTRATION
#include "moe/Conversion/Passes.h.inc"

} // namespace moe
} // namespace mlir

#endif // MOE_CONVERSION_PASSES_H
