//===- WarpKernel.h - pieces shared by the warp-per-row kernels -*- C++ -*-===//
//
// The linear, LoRA, norm, routing, admission and special kernels of the
// MoEToGPU passes build their bodies from the same few pieces: the warp
// size, the element types they read and write, index arithmetic, constants
// and warp reductions on the kernel's builder.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_WARPKERNEL_H
#define MOE_LIB_CONVERSION_MOETOGPU_WARPKERNEL_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <tuple>
#include <utility>

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
  /// A warp-per-row kernel's lane (thread x mod 32) and row (block id
  /// `dim` times `warpsPerBlock`, plus the thread's warp in the block).
  std::pair<Value, Value> laneAndRow(int64_t warpsPerBlock,
                                     gpu::Dimension dim = gpu::Dimension::x) {
    Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    Value lane = arith::RemUIOp::create(b, tid, c(kWarpSize));
    Value warp = arith::DivUIOp::create(b, tid, c(kWarpSize));
    Value blk = gpu::BlockIdOp::create(b, dim);
    return {lane, add(mul(blk, warpsPerBlock), warp)};
  }
};

/// Constants, comparisons, selects, a one-armed scf.if and warp
/// reductions inside a kernel (the routing, admission and special kernels).
struct WarpOps : IndexArith {
  Value i32(int64_t v) {
    return arith::ConstantOp::create(b, b.getI32IntegerAttr(v));
  }
  Value f32(double v) {
    return arith::ConstantOp::create(b, b.getF32FloatAttr(v));
  }
  Value i1(bool v) { return arith::ConstantOp::create(b, b.getBoolAttr(v)); }
  Value cmpi(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, p, x, y);
  }
  Value cmpf(arith::CmpFPredicate p, Value x, Value y) {
    return arith::CmpFOp::create(b, p, x, y);
  }
  Value sel(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, c, x, y);
  }
  Value andi(Value x, Value y) { return arith::AndIOp::create(b, x, y); }
  Value ori(Value x, Value y) { return arith::OrIOp::create(b, x, y); }
  Value noti(Value x) { return arith::XOrIOp::create(b, x, i1(true)); }
  Value addf(Value x, Value y) { return arith::AddFOp::create(b, x, y); }
  Value mulf(Value x, Value y) { return arith::MulFOp::create(b, x, y); }
  Value toIndex(Value x) {
    return arith::IndexCastOp::create(b, b.getIndexType(), x);
  }
  /// `then()` inside an scf.if on `cond` without results or else branch.
  void ifThen(Value cond, function_ref<void()> then) {
    auto op = scf::IfOp::create(b, cond, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPoint(op.thenBlock()->getTerminator());
    then();
  }
  /// Lane `lane ^ off`'s value (width 32).
  Value xorShfl(Value v, int64_t off) {
    return gpu::ShuffleOp::create(b, v, static_cast<int32_t>(off),
                                  static_cast<int32_t>(kWarpSize),
                                  gpu::ShuffleMode::XOR)
        .getShuffleResult();
  }
  /// The sum over the warp's 32 lanes (f32 or integer), on every lane; all
  /// lanes must take part.
  Value warpSum(Value v) {
    bool isFloat = isa<FloatType>(v.getType());
    for (int64_t off = kWarpSize / 2; off >= 1; off /= 2) {
      Value o = xorShfl(v, off);
      v = isFloat ? addf(v, o) : add(v, o);
    }
    return v;
  }
};

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOGPU_WARPKERNEL_H
