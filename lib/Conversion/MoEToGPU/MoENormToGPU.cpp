//===- MoENormToGPU.cpp - warp-per-token kernel for moe.rms_norm -*- C++ -*-===//
//
// convert-moe-norm-to-gpu and moe-gpu-launch-norm-kernels: each
// moe.rms_norm (the norm between the two sub-expert layers of a Cartesian
// layer, MOE_SEMANTICS §4), together with the moe.combine of addends only
// that feeds it (the residual `h = x + MoE_A(x)`), becomes one kernel in
// which a warp normalises one token: its 32 lanes read the addends' rows in
// contiguous vectors of up to 16 bytes, add them in f32 and round to the
// combine's type (storing h only if something else reads it), accumulate
// the squares of h in f32, sum them by a shuffle butterfly, and in a second
// pass over the row (which the first brought into L1/L2) write
// `h * rsqrt(mean + eps) * weight` rounded. The generic path
// (convert-moe-to-linalg) takes seven kernels for the same two ops:
// zero-fill, add and round for the combine, then zero-fill, a thread per
// token walking its row alone for the sum of squares (loads strided by the
// row length across the warp), a thread per element for the scaling and one
// for the rounding.
// docs/notes/gpu-path.md ("Norm kernel") has the design and the checks.
//
// What was learned from elsewhere (no code copied): the warp-per-row
// fused_add_rms_norm kernels of vLLM and FlashInfer (residual add and norm in
// one pass over the row, the sum of squares reduced by __shfl_xor_sync).
//
//===----------------------------------------------------------------------===//

#include "LaunchList.h"
#include "WarpKernel.h"
#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOENORMTOGPU
#define GEN_PASS_DEF_MOEGPULAUNCHNORMKERNELS
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Name of the discardable attribute on the launch declaration.
constexpr StringLiteral kNormKernelAttr = "moe.norm_kernel";
/// Warps (tokens) per block.
constexpr int64_t kWarps = 4;

/// What the kernel needs to know about the ops.
struct NormLayout {
  /// Hidden size (the row length).
  int64_t h = 0;
  /// The element types of the rows added to form h (one: h itself, no
  /// combine fused), of h (the combine's result, the norm's input and
  /// result), and of the norm weight.
  SmallVector<Type> inElts;
  Type hElt, wElt;
  /// The fused combine's result is also read elsewhere: the kernel stores h.
  bool storeH = false;
  double eps = 1e-6;
  /// Elements per vector access (at most 16 bytes of the widest type,
  /// dividing h).
  int64_t vec = 1;
  int64_t step() const { return kWarpSize * vec; }
};

/// The moe.combine of addends only (no routing weights or slots) whose
/// result `op` normalises, or null.
CombineOp fusableCombine(RMSNormOp op) {
  auto combine = op.getInput().getDefiningOp<CombineOp>();
  if (!combine || combine.getWeights() || !combine.getSlots().empty() ||
      combine.getAddends().empty() || combine.getBias())
    return nullptr;
  for (Value a : combine.getAddends()) {
    auto t = dyn_cast<RankedTensorType>(a.getType());
    if (!t || t.getRank() != 2 || t.getShape() != combine.getType().getShape() ||
        !isKernelFloat(t.getElementType()))
      return nullptr;
  }
  return combine;
}

/// Why `op` cannot take the norm kernel ("" if it can); fills `l` and
/// `combine` (the fused moe.combine, or null).
std::string analyse(RMSNormOp op, bool fuseCombine, NormLayout &l,
                    CombineOp &combine) {
  auto x = dyn_cast<RankedTensorType>(op.getInput().getType());
  auto w = dyn_cast<RankedTensorType>(op.getWeight().getType());
  if (!x || !w || x.getRank() != 2 || w.getRank() != 1)
    return "input or weight is not a ranked 2-D / 1-D tensor";
  if (x.isDynamicDim(1) || !w.hasStaticShape())
    return "the hidden size is dynamic";
  l.h = x.getDimSize(1);
  if (l.h == 0)
    return "an empty row";
  l.hElt = x.getElementType();
  l.wElt = w.getElementType();
  if (!isKernelFloat(l.hElt) || !isKernelFloat(l.wElt))
    return "an element type is not bf16, f16 or f32";
  // A kernel cannot read the host's constants (they are host globals).
  if (matchPattern(op.getWeight(), m_Constant()))
    return "the weight is a compile-time constant";
  if (!op->getParentOfType<func::FuncOp>())
    return "the op is not in a func.func";
  l.eps = op.getEpsilon().convertToDouble();
  combine = fuseCombine ? fusableCombine(op) : nullptr;
  if (combine) {
    for (Value a : combine.getAddends())
      l.inElts.push_back(cast<ShapedType>(a.getType()).getElementType());
    // Other readers of h take the kernel's store of it; they must come
    // after the norm (where the kernel's host code goes), else the combine
    // stays as it is.
    bool after = llvm::all_of(combine->getUsers(), [&](Operation *user) {
      return user == op.getOperation() ||
             (user->getBlock() == op->getBlock() && op->isBeforeInBlock(user));
    });
    if (!after)
      combine = nullptr;
  }
  if (combine) {
    l.storeH = !combine->hasOneUse();
  } else {
    l.inElts.clear();
    l.inElts.push_back(l.hElt);
  }
  unsigned widest = l.wElt.getIntOrFloatBitWidth();
  for (Type t : l.inElts)
    widest = std::max(widest, t.getIntOrFloatBitWidth());
  l.vec = 16 / (widest / 8);
  while (l.h % l.vec)
    l.vec /= 2;
  return "";
}

/// Builds the kernel: warp `w` of block `bx` normalises token t = 4 bx + w
/// (a warp past T does nothing; the branch is uniform over the warp, so
/// the butterfly inside sees all 32 lanes). Both passes walk the row in
/// steps of 32 vec elements, lane l taking the vector at c + l vec; a step
/// past h (h not a multiple of 32 vec) is clamped for the loads and the
/// lane's squares selected away and its stores skipped. Pass 1: h = the
/// addends' sum in f32 (in operand order, as the combine), rounded to h's
/// type (stored with `storeH`), its squares accumulated in an f32 vector;
/// the vector's elements are added and the lanes combined by a butterfly.
/// Pass 2: h again (the same arithmetic, so the same values), times
/// rsqrt(sum / h + eps), times the weight, rounded and stored.
gpu::GPUFuncOp buildNormKernel(OpBuilder &mb, Location loc, StringRef name,
                               const NormLayout &l) {
  MLIRContext *ctx = mb.getContext();
  Type f32 = Float32Type::get(ctx);
  SmallVector<Type> args;
  for (Type t : l.inElts)
    args.push_back(MemRefType::get({ShapedType::kDynamic, l.h}, t));
  args.push_back(MemRefType::get({l.h}, l.wElt));
  if (l.storeH)
    args.push_back(MemRefType::get({ShapedType::kDynamic, l.h}, l.hElt));
  args.push_back(MemRefType::get({ShapedType::kDynamic, l.h}, l.hElt));
  auto fn =
      gpu::GPUFuncOp::create(mb, loc, name, FunctionType::get(ctx, args, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), mb.getUnitAttr());
  fn.setKnownBlockSizeAttr(
      mb.getDenseI32ArrayAttr({int32_t(kWarps * kWarpSize), 1, 1}));
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  IndexArith k{b};
  size_t n = l.inElts.size();
  SmallVector<Value> ins;
  for (size_t i = 0; i < n; ++i)
    ins.push_back(entry.getArgument(i));
  Value w = entry.getArgument(n);
  Value hOut = l.storeH ? entry.getArgument(n + 1) : Value();
  Value y = entry.getArguments().back();

  auto fvec = VectorType::get({l.vec}, f32);
  auto alignOf = [&](Type elt) {
    return llvm::Align(l.vec * elt.getIntOrFloatBitWidth() / 8);
  };
  Value zeroV = arith::ConstantOp::create(
      b, DenseElementsAttr::get(fvec, b.getF32FloatAttr(0.0)));
  Value lane, tok;
  std::tie(lane, tok) = k.laneAndRow(kWarps);
  Value numTokens = memref::DimOp::create(b, y, 0);
  auto ifTok = scf::IfOp::create(b, k.ult(tok, numTokens), false);
  b.setInsertionPointToStart(&ifTok.getThenRegion().front());

  int64_t span = (l.h + l.step() - 1) / l.step() * l.step();
  bool guarded = span != l.h;
  Value laneOff = k.mul(lane, l.vec);
  auto hVecType = VectorType::get({l.vec}, l.hElt);
  // The columns of step `c` for this lane: (column, column to load, in row).
  auto columns = [&](Value c) -> std::tuple<Value, Value, Value> {
    Value col = k.add(c, laneOff);
    if (!guarded)
      return {col, col, Value()};
    return {col, k.min(col, k.c(l.h - l.vec)), k.ult(col, k.c(l.h))};
  };
  // h at `colLoad` as f32 (exactly the value of h's type) and in h's type.
  auto hAt = [&](Value colLoad) -> std::pair<Value, Value> {
    Value sum;
    for (auto [in, elt] : llvm::zip(ins, l.inElts)) {
      Value v = vector::LoadOp::create(b, VectorType::get({l.vec}, elt), in,
                                       ValueRange{tok, colLoad},
                                       /*nontemporal=*/false, alignOf(elt));
      if (!elt.isF32())
        v = arith::ExtFOp::create(b, fvec, v);
      sum = sum ? arith::AddFOp::create(b, sum, v).getResult() : v;
    }
    if (l.hElt.isF32())
      return {sum, sum};
    Value rounded = arith::TruncFOp::create(b, hVecType, sum);
    return {arith::ExtFOp::create(b, fvec, rounded), rounded};
  };
  // A store of `v` at `col` where the column is in the row.
  auto store = [&](Value v, Value mem, Value col, Value ok) {
    auto emit = [&] {
      vector::StoreOp::create(b, v, mem, ValueRange{tok, col},
                              /*nontemporal=*/false,
                              alignOf(cast<VectorType>(v.getType())
                                          .getElementType()));
    };
    if (!ok)
      return emit();
    auto ifOk = scf::IfOp::create(b, ok, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifOk.getThenRegion().front());
    emit();
  };

  // Pass 1: h and the sum of its squares.
  auto sumLoop =
      scf::ForOp::create(b, k.c(0), k.c(span), k.c(l.step()), ValueRange{zeroV});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(sumLoop.getBody());
    auto [col, colLoad, ok] = columns(sumLoop.getInductionVar());
    auto [hv, hRounded] = hAt(colLoad);
    if (l.storeH)
      store(hRounded, hOut, col, ok);
    Value sq = arith::MulFOp::create(b, hv, hv);
    if (ok)
      sq = arith::SelectOp::create(b, ok, sq, zeroV);
    scf::YieldOp::create(
        b, ValueRange{arith::AddFOp::create(b, sumLoop.getRegionIterArgs()[0],
                                            sq)});
  }
  Value acc = sumLoop.getResult(0);
  Value ss = vector::ExtractOp::create(b, acc, int64_t(0));
  for (int64_t e = 1; e < l.vec; ++e)
    ss = arith::AddFOp::create(b, ss, vector::ExtractOp::create(b, acc, e));
  for (int64_t off = kWarpSize / 2; off >= 1; off /= 2)
    ss = arith::AddFOp::create(
        b, ss,
        gpu::ShuffleOp::create(b, ss, static_cast<int32_t>(off),
                               static_cast<int32_t>(kWarpSize),
                               gpu::ShuffleMode::XOR)
            .getShuffleResult());
  Value mean = arith::DivFOp::create(
      b, ss, arith::ConstantOp::create(b, b.getF32FloatAttr(double(l.h))));
  Value inv = math::RsqrtOp::create(
      b, arith::AddFOp::create(
             b, mean, arith::ConstantOp::create(b, b.getF32FloatAttr(l.eps))));
  Value invV = vector::BroadcastOp::create(b, fvec, inv);

  // Pass 2: (h * inv) * weight, rounded.
  auto outLoop = scf::ForOp::create(b, k.c(0), k.c(span), k.c(l.step()));
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(outLoop.getBody());
    auto [col, colLoad, ok] = columns(outLoop.getInductionVar());
    Value hv = hAt(colLoad).first;
    Value wv = vector::LoadOp::create(b, VectorType::get({l.vec}, l.wElt), w,
                                      ValueRange{colLoad},
                                      /*nontemporal=*/false, alignOf(l.wElt));
    if (!l.wElt.isF32())
      wv = arith::ExtFOp::create(b, fvec, wv);
    Value v = arith::MulFOp::create(b, arith::MulFOp::create(b, hv, invV), wv);
    if (!l.hElt.isF32())
      v = arith::TruncFOp::create(b, hVecType, v);
    store(v, y, col, ok);
  }
  b.setInsertionPointAfter(ifTok);
  gpu::ReturnOp::create(b);
  return fn;
}

struct ConvertMoENormToGPU
    : public moe::impl::ConvertMoENormToGPUBase<ConvertMoENormToGPU> {
  using Base::Base;

  void runOnOperation() override {
    // Kernels are named <function>_norm[_N].
    auto tryRewrite = [&](RMSNormOp op, unsigned counter) {
      NormLayout l;
      CombineOp combine;
      std::string why = analyse(op, fuseCombine, l, combine);
      if (why.empty())
        rewrite(op, combine, l, counter);
      return why;
    };
    if (failed(formKernels<RMSNormOp>(getOperation(), required,
                                      "the norm kernel", tryRewrite)))
      signalPassFailure();
  }

  /// Replaces `op` (and `combine`, when fused) by the host code on buffers
  /// that calls the kernel (the launch comes after bufferization:
  /// moe-gpu-launch-norm-kernels).
  void rewrite(RMSNormOp op, CombineOp combine, const NormLayout &l,
               unsigned counter) {
    Location loc = op.getLoc();
    KernelRewrite kr(op, "norm", counter);
    OpBuilder kb = kr.kernels();
    auto kernel = buildNormKernel(kb, loc, "norm", l);

    OpBuilder ob(op);
    ImplicitLocOpBuilder b(loc, ob);
    auto argTypes = kernel.getFunctionType().getInputs();
    SmallVector<Value> tensors;
    if (combine)
      llvm::append_range(tensors, combine.getAddends());
    else
      tensors.push_back(op.getInput());
    tensors.push_back(op.getWeight());
    SmallVector<Value> operands;
    for (auto [t, type] : llvm::zip(tensors, argTypes))
      operands.push_back(readOnlyBuffer(b, loc, t, cast<MemRefType>(type)));
    Value numTokens = tensor::DimOp::create(b, tensors.front(), 0);
    Value hBuf;
    if (l.storeH) {
      hBuf = memref::AllocOp::create(
          b, cast<MemRefType>(argTypes[operands.size()]), ValueRange{numTokens});
      operands.push_back(hBuf);
    }
    Value result = memref::AllocOp::create(b, cast<MemRefType>(argTypes.back()),
                                           ValueRange{numTokens});
    operands.push_back(result);

    // One launch: ceil(T / 4) blocks of 128 threads, T from the result
    // buffer (the last operand).
    int64_t n = operands.size();
    kr.call(b, kNormKernelAttr,
            {makeLaunch(b, kr.ref(kernel),
                        llvm::to_vector(llvm::seq<int64_t>(0, n)),
                        kWarps * kWarpSize, n - 1, 1, kWarps)},
            operands);
    op->replaceAllUsesWith(
        ValueRange{writtenTensor(b, loc, result, op.getType())});
    if (l.storeH)
      combine->replaceAllUsesWith(
          ValueRange{writtenTensor(b, loc, hBuf, combine.getType())});
    op.erase();
    if (combine)
      combine.erase();
  }
};

struct MoEGPULaunchNormKernels
    : public moe::impl::MoEGPULaunchNormKernelsBase<MoEGPULaunchNormKernels> {
  void runOnOperation() override {
    if (failed(expandLaunchLists(getOperation(), kNormKernelAttr)))
      signalPassFailure();
  }
};

} // namespace
