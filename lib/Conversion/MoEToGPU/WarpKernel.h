//===- WarpKernel.h - pieces shared by the warp-per-row kernels -*- C++ -*-===//
//
// The linear, LoRA, norm and routing kernels of the MoEToGPU passes build
// their bodies from the same few pieces: the warp size, the element types
// they read and write, and index arithmetic on the kernel's builder.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_WARPKERNEL_H
#define MOE_LIB_CONVERSION_MOETOGPU_WARPKERNEL_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::moe {

/// Lanes per warp (shfl.sync's width).
constexpr int64_t kWarpSize = 32;

/// A discardable i64 attribute on an op that the host code runs only for
/// fewer tokens than its value (the router GEMM in the branch below the
/// routing kernel's fused-GEMM threshold): a kernel set for more tokens
/// than that would never run.
constexpr llvm::StringLiteral kTokensBelowAttr = "moe.tokens_below";

/// A discardable i64 attribute on a moe.linear: the tokens from which the
/// host takes its tensor-core kernel (linear_mma), in place of the
/// threshold convert-moe-linear-to-gpu derives from the shape. The routing
/// pass sets it on a router GEMM it leaves outside the fused routing
/// kernel's range for many tokens.
constexpr llvm::StringLiteral kMmaMinTokensAttr = "moe.mma_min_tokens";

/// An element type the kernels load and store (computing in f32).
inline bool isKernelFloat(Type t) { return t.isBF16() || t.isF16() || t.isF32(); }

/// Index arithmetic inside a kernel.
struct IndexArith {
  ImplicitLocOpBuilder &b;
  Value c(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value add(Value x, int64_t y) { return add(x, c(y)); }
  Value mul(Value x, int64_t y) { return arith::MulIOp::create(b, x, c(y)); }
  Value min(Value x, Value y) { return arith::MinUIOp::create(b, x, y); }
  Value ult(Value x, Value y) {
    return arith::CmpIOp::create(b, arith::CmpIPredicate::ult, x, y);
  }
};

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOGPU_WARPKERNEL_H
