//===- MoESpecialToGPU.cpp - zero-computation experts kernel ----*- C++ -*-===//
//
// MoE++'s zero-computation experts (MOE_SEMANTICS §3: `zero` -> 0, `copy`
// -> x, `constant` -> a1 x + a2 v with [a1, a2] = softmax(W_c x)) on the
// generic path are a T x 2Nc GEMM, a softmax pass and a T x K x H slot
// tensor that the combine reads back: about 7 generic kernels, and a
// second slot tensor in the combine keeps the expert kernels from fusing
// it. Here the combine's sum over those slots is computed directly, as one
// more addend of the combine:
//
//   A[t] = sum_k w[t,k] special_{e(t,k)}(x_t)
//        = X_t x_t + sum_{k constant} w[t,k] a2[t,k] v_{c(t,k)}
//   X_t  = sum_{k copy} w[t,k] + sum_{k constant} w[t,k] a1[t,k]
//
// by one kernel, `special`: a warp per token (blocks of 4 warps). For each
// slot (unrolled over K) the warp reads the id, its kind and constant index
// from compile-time select chains and, for a constant expert, forms the two
// logits W_c[c, 0..1] . x_t with lane-strided f32 partial sums and a
// butterfly; a1 = sigmoid(l0 - l1), a2 = sigmoid(l1 - l0) as the CPU
// lowering. Then each lane writes A[t, h] for its columns h = lane + 32 j.
// The slots' f32 sum is reassociated (X_t collects the x terms): equal up
// to f32 rounding, which §2 allows for the combine's order.
//
// The combine then holds the expert slots alone (plus the addends and
// bias it had, and A), which the expert kernels fuse as usual.
//
//===----------------------------------------------------------------------===//

#include "LaunchList.h"
#include "SpecialKernel.h"
#include "WarpKernel.h"
#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Warps (tokens) per block.
constexpr int64_t kWarps = 4;
/// Kinds and slots the select chains and the unrolled slot loop take.
constexpr int64_t kMaxKinds = 64, kMaxSlots = 32;

/// What the kernel needs to know about the op.
struct SpecialLayout {
  int64_t h = 0, k = 0, offset = 0, numConst = 0;
  Type xElt, routerElt, vectorElt;
  SmallVector<SpecialKind> kinds;
  /// kinds[i]'s index among the constant experts (0 for the others).
  SmallVector<int32_t> constIndex;
};

/// Builder helpers inside the kernel.
struct KB : WarpOps {
  /// `v` as f32.
  Value ext(Value v) {
    return v.getType().isF32() ? v
                               : arith::ExtFOp::create(b, b.getF32Type(), v);
  }
  /// 1 / (1 + exp(-z)), as the CPU lowering's sigmoid.
  Value sigmoid(Value z) {
    Value one = f32(1.0);
    return arith::DivFOp::create(
        b, one, addf(one, math::ExpOp::create(b, arith::NegFOp::create(b, z))));
  }
};

/// The combine that alone reads `op`'s slots, with weights and at least one
/// other slot tensor, or null (`why` says why).
CombineOp combineOf(SpecialExpertsOp op, std::string &why) {
  if (!op.getSlots().hasOneUse()) {
    why = "its slots have other users than one moe.combine";
    return nullptr;
  }
  auto combine = dyn_cast<CombineOp>(*op.getSlots().getUsers().begin());
  if (!combine)
    why = "its slots are not read by a moe.combine";
  else if (!combine.getWeights())
    why = "the combine has no weights";
  else if (combine.getSlots().size() < 2)
    why = "the combine has no other slots (nothing for the expert kernels "
          "to fuse)";
  else
    return combine;
  return nullptr;
}

/// Why the kernel cannot take `op` ("" if it can).
std::string analyse(SpecialExpertsOp op, SpecialLayout &l) {
  if (!op->getParentOfType<func::FuncOp>())
    return "the op is not in a func.func";
  auto xTy = cast<RankedTensorType>(op.getInput().getType());
  auto idxTy = cast<RankedTensorType>(op.getIndices().getType());
  if (xTy.getRank() != 2 || xTy.isDynamicDim(1))
    return "the hidden size is dynamic";
  if (idxTy.isDynamicDim(1))
    return "the slot count K is dynamic";
  l.h = xTy.getDimSize(1);
  l.k = idxTy.getDimSize(1);
  l.offset = op.getExpertOffset();
  if (l.k > kMaxSlots)
    return "K = " + std::to_string(l.k) + " exceeds " +
           std::to_string(kMaxSlots);
  l.xElt = xTy.getElementType();
  if (!isKernelFloat(l.xElt))
    return "the input is not bf16, f16 or f32";
  for (Attribute a : op.getKinds()) {
    SpecialKind kind = cast<SpecialKindAttr>(a).getValue();
    l.kinds.push_back(kind);
    l.constIndex.push_back(
        kind == SpecialKind::constant ? static_cast<int32_t>(l.numConst++) : 0);
  }
  if (static_cast<int64_t>(l.kinds.size()) > kMaxKinds)
    return std::to_string(l.kinds.size()) + " kinds exceed " +
           std::to_string(kMaxKinds);
  if (l.numConst) {
    auto crTy = cast<RankedTensorType>(op.getConstRouter().getType());
    auto vTy = cast<RankedTensorType>(op.getConstVectors().getType());
    if (!crTy.hasStaticShape() || !vTy.hasStaticShape())
      return "the constant experts' router or vectors have a dynamic shape";
    l.routerElt = crTy.getElementType();
    l.vectorElt = vTy.getElementType();
    if (!isKernelFloat(l.routerElt) || !isKernelFloat(l.vectorElt))
      return "the constant experts' router or vectors are not bf16, f16 or "
             "f32";
  }
  return "";
}

/// special(x, indices, weights, [const_router, const_vectors], A).
gpu::GPUFuncOp buildSpecialKernel(OpBuilder &mb, Location loc,
                                  const SpecialLayout &l) {
  MLIRContext *ctx = mb.getContext();
  Type i32 = IntegerType::get(ctx, 32), f32 = Float32Type::get(ctx);
  int64_t dyn = ShapedType::kDynamic;
  SmallVector<Type> args{MemRefType::get({dyn, l.h}, l.xElt),
                         MemRefType::get({dyn, l.k}, i32),
                         MemRefType::get({dyn, l.k}, f32)};
  if (l.numConst)
    args.append({MemRefType::get({l.numConst, 2, l.h}, l.routerElt),
                 MemRefType::get({l.numConst, l.h}, l.vectorElt)});
  args.push_back(MemRefType::get({dyn, l.h}, f32));
  auto fn = gpu::GPUFuncOp::create(mb, loc, "special",
                                   FunctionType::get(ctx, args, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), mb.getUnitAttr());
  fn.setKnownBlockSizeAttr(mb.getDenseI32ArrayAttr(
      {static_cast<int32_t>(kWarps * kWarpSize), 1, 1}));
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  KB k{{b}};
  Value x = entry.getArgument(0), idx = entry.getArgument(1),
        w = entry.getArgument(2);
  Value router = l.numConst ? entry.getArgument(3) : Value();
  Value vectors = l.numConst ? entry.getArgument(4) : Value();
  Value out = entry.getArguments().back();

  Value lane, tok;
  std::tie(lane, tok) = k.laneAndRow(kWarps);
  Value numTokens = memref::DimOp::create(b, out, 0);
  Value zeroF = k.f32(0.0);

  // The whole warp takes this branch or none (shuffles inside).
  auto guard = scf::IfOp::create(
      b, k.cmpi(arith::CmpIPredicate::ult, tok, numTokens), false);
  b.setInsertionPointToStart(&guard.getThenRegion().front());

  // Lane-strided columns h = h0 + lane; `body(h, carried)` runs where
  // h < H. (Without carried values scf.for and scf.if come with their
  // terminators.)
  auto forColumns =
      [&](ValueRange init,
          function_ref<SmallVector<Value>(Value, ValueRange)> body)
      -> SmallVector<Value> {
    bool carries = !init.empty();
    auto loop = scf::ForOp::create(b, k.c(0), k.c(l.h), k.c(kWarpSize), init);
    OpBuilder::InsertionGuard g(b);
    if (carries)
      b.setInsertionPointToStart(loop.getBody());
    else
      b.setInsertionPoint(loop.getBody()->getTerminator());
    Value h = arith::AddIOp::create(b, loop.getInductionVar(), lane);
    ValueRange carried = loop.getRegionIterArgs();
    auto in = scf::IfOp::create(b, TypeRange(init),
                                k.cmpi(arith::CmpIPredicate::ult, h, k.c(l.h)),
                                /*withElseRegion=*/carries);
    {
      OpBuilder::InsertionGuard g2(b);
      if (!carries) {
        b.setInsertionPoint(in.thenBlock()->getTerminator());
        body(h, carried);
      } else {
        b.setInsertionPointToStart(in.thenBlock());
        scf::YieldOp::create(b, body(h, carried));
        b.setInsertionPointToStart(in.elseBlock());
        scf::YieldOp::create(b, carried);
      }
    }
    if (carries)
      scf::YieldOp::create(b, in.getResults());
    return loop.getResults();
  };

  Value coefX = zeroF;
  SmallVector<Value> isConst, constRow, coefV;
  for (int64_t s = 0; s < l.k; ++s) {
    Value j = memref::LoadOp::create(b, idx, ValueRange{tok, k.c(s)});
    Value wv = memref::LoadOp::create(b, w, ValueRange{tok, k.c(s)});
    Value e = arith::SubIOp::create(b, j, k.i32(l.offset));
    // Compile-time kind table as select chains over the n kinds (ids
    // outside [0, n) match none: no contribution).
    Value copy = k.i1(false), constant = k.i1(false), c = k.i32(0);
    for (auto [i, kind] : llvm::enumerate(l.kinds)) {
      Value is =
          k.cmpi(arith::CmpIPredicate::eq, e, k.i32(static_cast<int64_t>(i)));
      if (kind == SpecialKind::copy)
        copy = k.ori(copy, is);
      if (kind == SpecialKind::constant) {
        constant = k.ori(constant, is);
        c = k.sel(is, k.i32(l.constIndex[i]), c);
      }
    }
    coefX = k.addf(coefX, k.sel(copy, wv, zeroF));
    if (!l.numConst)
      continue;
    Value ci = arith::IndexCastOp::create(b, b.getIndexType(), c);
    // The two logits of a constant expert (warp-uniform branch).
    auto logits =
        scf::IfOp::create(b, TypeRange{b.getF32Type(), b.getF32Type()},
                          constant, /*withElseRegion=*/true);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&logits.getThenRegion().front());
      SmallVector<Value> sums = forColumns(
          ValueRange{zeroF, zeroF},
          [&](Value h, ValueRange acc) -> SmallVector<Value> {
            Value xv = k.ext(memref::LoadOp::create(b, x, ValueRange{tok, h}));
            Value r0 = k.ext(
                memref::LoadOp::create(b, router, ValueRange{ci, k.c(0), h}));
            Value r1 = k.ext(
                memref::LoadOp::create(b, router, ValueRange{ci, k.c(1), h}));
            return {k.addf(acc[0], k.mulf(xv, r0)),
                    k.addf(acc[1], k.mulf(xv, r1))};
          });
      scf::YieldOp::create(b,
                           ValueRange{k.warpSum(sums[0]), k.warpSum(sums[1])});
      b.setInsertionPointToStart(&logits.getElseRegion().front());
      scf::YieldOp::create(b, ValueRange{zeroF, zeroF});
    }
    Value l0 = logits.getResult(0), l1 = logits.getResult(1);
    Value a1 = k.sigmoid(arith::SubFOp::create(b, l0, l1));
    Value a2 = k.sigmoid(arith::SubFOp::create(b, l1, l0));
    coefX = k.addf(coefX, k.sel(constant, k.mulf(wv, a1), zeroF));
    isConst.push_back(constant);
    constRow.push_back(ci);
    coefV.push_back(k.sel(constant, k.mulf(wv, a2), zeroF));
  }
  // A[t, h] = X x[t, h] + sum over constant slots of w a2 v[c, h].
  forColumns(ValueRange{}, [&](Value h, ValueRange) -> SmallVector<Value> {
    Value acc =
        k.mulf(coefX, k.ext(memref::LoadOp::create(b, x, ValueRange{tok, h})));
    for (auto [is, row, cv] : llvm::zip(isConst, constRow, coefV)) {
      Value vv = k.ext(memref::LoadOp::create(b, vectors, ValueRange{row, h}));
      acc = k.addf(acc, k.sel(is, k.mulf(cv, vv), zeroF));
    }
    memref::StoreOp::create(b, acc, out, ValueRange{tok, h});
    return {};
  });
  b.setInsertionPointAfter(guard);
  gpu::ReturnOp::create(b);
  return fn;
}

/// `op` and its `combine` -> the kernel's call and a combine with A as an
/// addend instead of `op`'s slots.
void rewrite(SpecialExpertsOp op, CombineOp combine, const SpecialLayout &l,
             unsigned counter, StringRef attrName) {
  MLIRContext *ctx = op.getContext();
  Location loc = op.getLoc();
  KernelRewrite kr(op, "special", counter);
  OpBuilder kb = kr.kernels();
  gpu::GPUFuncOp kernel = buildSpecialKernel(kb, loc, l);

  OpBuilder ob(combine);
  ImplicitLocOpBuilder b(loc, ob);
  Type i32 = IntegerType::get(ctx, 32), f32 = Float32Type::get(ctx);
  int64_t dyn = ShapedType::kDynamic;
  Value numTokens = tensor::DimOp::create(b, op.getInput(), 0);
  SmallVector<Value> operands{
      readOnlyBuffer(b, loc, op.getInput(),
                     MemRefType::get({dyn, l.h}, l.xElt)),
      readOnlyBuffer(b, loc, op.getIndices(), MemRefType::get({dyn, l.k}, i32)),
      readOnlyBuffer(b, loc, combine.getWeights(),
                     MemRefType::get({dyn, l.k}, f32))};
  if (l.numConst) {
    operands.push_back(
        readOnlyBuffer(b, loc, op.getConstRouter(),
                       MemRefType::get({l.numConst, 2, l.h}, l.routerElt)));
    operands.push_back(
        readOnlyBuffer(b, loc, op.getConstVectors(),
                       MemRefType::get({l.numConst, l.h}, l.vectorElt)));
  }
  auto outTy = MemRefType::get({dyn, l.h}, f32);
  Value out = memref::AllocOp::create(b, outTy, ValueRange{numTokens});
  operands.push_back(out);
  int64_t n = operands.size();
  // ceil(T / 4) blocks of 4 warps, T from the result (the last operand).
  kr.call(
      b, attrName,
      {makeLaunch(b, kr.ref(kernel), llvm::to_vector(llvm::seq<int64_t>(0, n)),
                  kWarps * kWarpSize, n - 1, 1, kWarps)},
      operands);
  Value sum = writtenTensor(
      b, loc, out,
      RankedTensorType::get(
          {cast<RankedTensorType>(op.getInput().getType()).getDimSize(0), l.h},
          f32));
  SmallVector<Value> slots, addends(combine.getAddends());
  for (Value s : combine.getSlots())
    if (s != op.getSlots())
      slots.push_back(s);
  addends.push_back(sum);
  auto fused = CombineOp::create(b, combine.getLoc(), combine.getType(),
                                 combine.getWeights(), slots, addends,
                                 combine.getBias());
  combine.replaceAllUsesWith(fused.getResult());
  combine.erase();
  op.erase();
}

} // namespace

void mlir::moe::formSpecialKernels(ModuleOp module, StringRef attrName) {
  // Never required: an op left keeps the generic path with a remark.
  (void)formKernels<SpecialExpertsOp>(
      module, /*required=*/false, "the special kernel",
      [&](SpecialExpertsOp op, unsigned counter) {
        std::string why;
        SpecialLayout l;
        CombineOp combine = combineOf(op, why);
        if (combine)
          why = analyse(op, l);
        if (why.empty())
          rewrite(op, combine, l, counter, attrName);
        return why;
      });
}
