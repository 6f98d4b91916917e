//===- MoERouteToGPU.cpp - one warp-per-token kernel for moe.route -*- C++ -*-===//
//
// convert-moe-route-to-gpu and moe-gpu-launch-route-kernels: each moe.route
// (topk, topk_then_softmax, group_limited_topk, top_p, dense, hierarchical;
// any scoring, selection bias, renormalisation, scaling) becomes one
// kernel in
// which a warp routes one token: the E logits sit in registers, P per lane,
// and every reduction (softmax max and sum, group scores, the K argmax
// rounds, the weights' sum) is a warp shuffle butterfly. The generic path
// (convert-moe-to-linalg) needs ~8 kernels per selected slot plus the
// softmax's. docs/notes/gpu-path.md ("Routing kernel") describes the design
// and what is verified.
//
// The numerics follow convert-moe-to-linalg's LowerRoute (MOE_SEMANTICS §1):
// the same comparator (larger first, NaN smallest, ties to the lower id),
// softmax with the row max subtracted (all -inf -> 0, NaN row -> NaN),
// renormalisation skipped for a zero sum. Sums are reduced in a butterfly
// instead of sequentially: equal up to f32 rounding.
//
// What was learned from elsewhere (no code copied): vLLM's topk_softmax and
// grouped_topk CUDA kernels and SGLang's moe_fused_gate (a warp or a group
// of lanes per token, the expert row spread over lanes, argmax by
// __shfl_xor_sync butterflies on (value, index) pairs, one round per slot);
// the PTX ISA for shfl.sync.
//
//===----------------------------------------------------------------------===//

#include "DispatchKernel.h"
#include "LaunchList.h"
#include "MmaLinear.h"
#include "WarpKernel.h"
#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/StringMap.h"

#include <cmath>

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOEROUTETOGPU
#define GEN_PASS_DEF_MOEGPULAUNCHROUTEKERNELS
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Name of the discardable attribute on the launch declaration.
constexpr StringLiteral kRouteKernelAttr = "moe.route_kernel";
/// Warps (tokens) per block.
constexpr int64_t kWarps = 4;
/// Experts a warp holds in registers (P <= 32: the per-lane taken mask is
/// one i32).
constexpr int64_t kMaxExperts = 1024;

/// What the kernel needs to know about the op.
struct RouteLayout {
  int64_t e = 0, k = 0;
  /// Experts per lane: lane l holds experts l*P .. l*P+P-1.
  int64_t p = 0;
  /// Group-limited selection: groups, groups kept, lanes per group.
  int64_t groups = 0, keep = 0, lanesPerGroup = 0;
  ScoringFunc scoring;
  SelectionKind selection;
  GroupScore groupScore;
  bool renormalize = false;
  double scale = 1.0;
  /// top_p: the cumulative probability threshold.
  double topP = 1.0;
  /// sparsemixer: the mask threshold is 2 * jitterEps.
  double jitterEps = 0.0;
  bool hasBias = false;
  Type biasElt;
  /// A constant selection bias (f32 values), held by the kernel module.
  DenseElementsAttr constBias;
  /// Hierarchical (AT-MoE) routing: the group logits are a kernel argument
  /// (T x groups, f32), softmax temperatures as multipliers.
  bool hierarchical = false;
  double invTauGroup = 1.0, invTauExpert = 1.0;
  /// The router GEMM fused in (`moe.linear` producing the logits): H > 0,
  /// the dtype of x and the router weight, and the loads per lane and step.
  int64_t linearH = 0, unroll = 1;
  Type linearElt;
};

/// The `moe.linear` producing `logits`, which only `op` reads and which the
/// kernel can compute itself (no bias, x and weight of one float dtype,
/// static H a multiple of 32, weight not a compile-time constant), or null.
LinearOp fusableLinear(RouteOp op, Value logits) {
  auto lin = logits ? logits.getDefiningOp<LinearOp>() : LinearOp();
  if (!lin || !lin->hasOneUse() || lin.getBias())
    return nullptr;
  auto x = dyn_cast<RankedTensorType>(lin.getInput().getType());
  auto w = dyn_cast<RankedTensorType>(lin.getWeight().getType());
  if (!x || !w || x.getRank() != 2 || w.getRank() != 2 ||
      x.isDynamicDim(1) || !w.hasStaticShape() ||
      x.getDimSize(1) != w.getDimSize(1) || x.getDimSize(1) % 32 ||
      x.getElementType() != w.getElementType())
    return nullptr;
  Type elt = x.getElementType();
  if (!elt.isBF16() && !elt.isF16() && !elt.isF32())
    return nullptr;
  if (matchPattern(lin.getWeight(), m_Constant()))
    return nullptr;
  return lin;
}

/// Why `op` cannot take the routing kernel ("" if it can); fills `l`.
std::string analyse(RouteOp op, RouteLayout &l, bool fuseLinear) {
  RoutingAttr r = op.getRouting();
  l.selection = r.getSelection();
  switch (l.selection) {
  case SelectionKind::topk:
  case SelectionKind::topk_then_softmax:
  case SelectionKind::group_limited_topk:
  case SelectionKind::top_p:
  case SelectionKind::dense:
  case SelectionKind::sparsemixer:
    break;
  case SelectionKind::hierarchical:
    l.hierarchical = true;
    break;
  }
  auto logits = cast<ShapedType>(op.getLogits().getType());
  l.e = logits.getDimSize(1);
  l.k = r.getK();
  l.scoring = r.getScoring();
  l.groupScore = r.getGroupScore();
  l.renormalize = r.getRenormalize();
  l.scale = r.getScalingFactorValue();
  l.topP = r.getTopPValue();
  l.jitterEps = r.getJitterEpsValue();
  if (ShapedType::isDynamic(l.e))
    return "E is dynamic";
  if (l.e > kMaxExperts)
    return "E = " + std::to_string(l.e) + " exceeds " +
           std::to_string(kMaxExperts) + " experts per warp";
  // Hierarchical routing with K = E lists every expert (as dense).
  bool listsAll = l.selection == SelectionKind::dense ||
                  (l.hierarchical && l.k == l.e);
  if (l.k > kWarpSize && !listsAll)
    return "K = " + std::to_string(l.k) + " exceeds 32 (lane k keeps slot k)";
  l.p = (l.e + kWarpSize - 1) / kWarpSize;
  if (l.hierarchical) {
    l.invTauGroup = 1.0 / r.getTauGroup().convertToDouble();
    l.invTauExpert = 1.0 / r.getTauExpert().convertToDouble();
  }
  if ((l.selection == SelectionKind::group_limited_topk &&
       r.getTopkGroup() < r.getNGroup()) ||
      l.hierarchical) {
    l.groups = r.getNGroup();
    l.keep = r.getTopkGroup();
    if (l.groups > kWarpSize)
      return "n_group = " + std::to_string(l.groups) +
             " exceeds 32 (each group needs a lane)";
    // Most lanes per group such that the group's lanes are an aligned
    // power-of-two segment (xor butterflies stay inside it) and hold whole
    // experts: P = (E / G) / lanesPerGroup.
    int64_t eg = l.e / l.groups;
    l.lanesPerGroup = 1;
    while (l.groups * l.lanesPerGroup * 2 <= kWarpSize &&
           eg % (l.lanesPerGroup * 2) == 0)
      l.lanesPerGroup *= 2;
    l.p = eg / l.lanesPerGroup;
    if (l.p > kWarpSize)
      return "a group of " + std::to_string(eg) +
             " experts needs more than 32 per lane";
  }
  if (Value bias = op.getSelectionBias()) {
    l.hasBias = true;
    l.biasElt = cast<ShapedType>(bias.getType()).getElementType();
    Attribute cst;
    if (matchPattern(bias, m_Constant(&cst))) {
      auto dense = dyn_cast<DenseElementsAttr>(cst);
      if (!dense)
        return "the selection bias is a constant the kernel module cannot "
               "hold (not a dense elements attribute)";
      SmallVector<float> vals;
      for (APFloat v : dense.getValues<APFloat>()) {
        bool lost;
        v.convert(APFloat::IEEEsingle(), APFloat::rmNearestTiesToEven, &lost);
        vals.push_back(v.convertToFloat());
      }
      l.constBias = DenseElementsAttr::get(
          RankedTensorType::get({l.e}, Float32Type::get(op.getContext())),
          ArrayRef<float>(vals));
    }
  }
  if (!op->getParentOfType<func::FuncOp>())
    return "the op is not in a func.func";
  if (fuseLinear)
    if (LinearOp lin = fusableLinear(op, op.getLogits())) {
      // Hierarchical: the group router's GEMM too, on the same x (so of
      // the same weight dtype: fusableLinear wants x's), or neither.
      LinearOp group = l.hierarchical
                           ? fusableLinear(op, op.getGroupLogits())
                           : LinearOp();
      if (!l.hierarchical || (group && group.getInput() == lin.getInput())) {
        auto x = cast<RankedTensorType>(lin.getInput().getType());
        l.linearH = x.getDimSize(1);
        l.linearElt = x.getElementType();
        l.unroll = l.linearH % 128 == 0 ? 4 : l.linearH % 64 == 0 ? 2 : 1;
      }
    }
  return "";
}

/// Scalar arithmetic inside the kernel.
struct KB : WarpOps {
  Value maxf(Value x, Value y) { return arith::MaximumFOp::create(b, x, y); }
  Value minf(Value x, Value y) { return arith::MinimumFOp::create(b, x, y); }
  Value isNan(Value x) { return cmpf(arith::CmpFPredicate::UNO, x, x); }
  /// The max a softmax subtracts: `m`, or 0 where it is -inf.
  Value zeroIfNegInf(Value m) {
    return sel(cmpf(arith::CmpFPredicate::OEQ, m, f32(-INFINITY)), f32(0.0), m);
  }

  /// Lane `src`'s value.
  Value idxShfl(Value v, Value src) {
    return gpu::ShuffleOp::create(
               b, v, src, i32(kWarpSize),
               gpu::ShuffleModeAttr::get(b.getContext(), gpu::ShuffleMode::IDX))
        .getShuffleResult();
  }
  /// Butterfly over aligned segments of `width` lanes: every lane of a
  /// segment ends with combine() of all its lanes' values. `combine` must be
  /// commutative so that the two lanes of a pair compute the same value.
  Value allReduce(Value v, int64_t width,
                  function_ref<Value(Value, Value)> combine) {
    for (int64_t off = width / 2; off >= 1; off /= 2)
      v = combine(v, xorShfl(v, off));
    return v;
  }

  /// `a` (id i) ranks before `bv` (id j): larger first, NaN smallest, ties
  /// to the lower id (as LowerRoute's ranksBefore).
  Value before(Value a, Value i, Value bv, Value j) {
    Value aNan = isNan(a), bNan = isNan(bv);
    Value lowerId = cmpi(arith::CmpIPredicate::slt, i, j);
    Value gt = cmpf(arith::CmpFPredicate::OGT, a, bv);
    Value eq = cmpf(arith::CmpFPredicate::OEQ, a, bv);
    Value plain = ori(gt, andi(eq, lowerId));
    Value bothNan = andi(aNan, bNan);
    Value onlyB = andi(bNan, noti(aNan));
    return sel(bothNan, lowerId,
               sel(onlyB, i1(true), sel(aNan, i1(false), plain)));
  }
  /// Whether candidate (v, i) replaces the best so far (bv, bi); an id
  /// below 0 is "none".
  Value better(Value v, Value i, Value bv, Value bi) {
    Value zero = i32(0);
    Value has = cmpi(arith::CmpIPredicate::sge, i, zero);
    Value none = cmpi(arith::CmpIPredicate::slt, bi, zero);
    return andi(has, ori(none, before(v, i, bv, bi)));
  }
  /// Warp argmax of (value, id) pairs: every lane gets the winner.
  std::pair<Value, Value> warpArgmax(Value v, Value i) {
    for (int64_t off = kWarpSize / 2; off >= 1; off /= 2) {
      Value ov = xorShfl(v, off), oi = xorShfl(i, off);
      Value take = better(ov, oi, v, i);
      v = sel(take, ov, v);
      i = sel(take, oi, i);
    }
    return {v, i};
  }
};

/// The kernel's first arguments: the T x E f32 logits, or (router GEMM
/// fused) x : T x H and the router weight : E x H.
SmallVector<Type> logitArgTypes(MLIRContext *ctx, const RouteLayout &l) {
  Type f32 = Float32Type::get(ctx);
  if (l.hierarchical && !l.linearH)
    return {MemRefType::get({ShapedType::kDynamic, l.e}, f32),
            MemRefType::get({ShapedType::kDynamic, l.groups}, f32)};
  if (!l.linearH)
    return {MemRefType::get({ShapedType::kDynamic, l.e}, f32)};
  SmallVector<Type> types{
      MemRefType::get({ShapedType::kDynamic, l.linearH}, l.linearElt),
      MemRefType::get({l.e, l.linearH}, l.linearElt)};
  // Hierarchical: the group router's weight too.
  if (l.hierarchical)
    types.push_back(MemRefType::get({l.groups, l.linearH}, l.linearElt));
  return types;
}

/// The router GEMM fused in, for `count` rows of `w`: for q < count the
/// whole warp computes x[tok] . w[row(q)] (so every load is a contiguous
/// 32-element row segment: lane l reads element c + 32u + l) with `unroll`
/// independent f32 accumulators, summed by a butterfly; each lane keeps the
/// product of the q for which `keeps(q)` holds (0 if none). As vLLM's and
/// SGLang's fused gating kernels, the logits never leave registers (no
/// T x E tensor, no separate GEMM kernel).
Value warpDotKept(ImplicitLocOpBuilder &b, KB &k, const RouteLayout &l,
                  Value x, Value w, Value tok, Value laneIdx, int64_t count,
                  function_ref<Value(Value)> row,
                  function_ref<Value(Value)> keeps) {
  Type f32 = b.getF32Type();
  Value zeroF = k.f32(0.0);
  auto forQ =
      scf::ForOp::create(b, k.c(0), k.c(count), k.c(1), ValueRange{zeroF});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(forQ.getBody());
    Value q = forQ.getInductionVar();
    Value mine = forQ.getRegionIterArgs()[0];
    Value e = row(q);
    SmallVector<Value> init(l.unroll, zeroF);
    auto forC = scf::ForOp::create(b, k.c(0), k.c(l.linearH),
                                   k.c(kWarpSize * l.unroll), init);
    {
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(forC.getBody());
      Value c = forC.getInductionVar();
      SmallVector<Value> acc(forC.getRegionIterArgs());
      for (int64_t u = 0; u < l.unroll; ++u) {
        Value h = arith::AddIOp::create(
            b, c, arith::AddIOp::create(b, k.c(u * kWarpSize), laneIdx));
        Value xv = memref::LoadOp::create(b, x, ValueRange{tok, h});
        Value wv = memref::LoadOp::create(b, w, ValueRange{e, h});
        if (!l.linearElt.isF32()) {
          xv = arith::ExtFOp::create(b, f32, xv);
          wv = arith::ExtFOp::create(b, f32, wv);
        }
        acc[u] = k.addf(acc[u], arith::MulFOp::create(b, xv, wv));
      }
      scf::YieldOp::create(b, acc);
    }
    Value sum = forC.getResult(0);
    for (int64_t u = 1; u < l.unroll; ++u)
      sum = k.addf(sum, forC.getResult(u));
    sum = k.allReduce(sum, kWarpSize,
                      [&](Value a, Value bb) { return k.addf(a, bb); });
    scf::YieldOp::create(b, ValueRange{k.sel(keeps(q), sum, mine)});
  }
  return forQ.getResult(0);
}

/// Lane `lane`'s logit j of the fused router GEMM: expert q*P + j of the
/// lanes q that hold experts (ceil(E/P): 8 for E = 8; the other lanes keep
/// 0 and are masked later, as are the experts past E within the last holder
/// lane, whose loads read row E - 1).
Value fusedLogit(ImplicitLocOpBuilder &b, KB &k, const RouteLayout &l,
                 Value x, Value w, Value tok, Value lane, Value laneIdx,
                 int64_t j) {
  int64_t holders = std::min(kWarpSize, (l.e + l.p - 1) / l.p);
  return warpDotKept(
      b, k, l, x, w, tok, laneIdx, holders,
      [&](Value q) -> Value {
        Value e = arith::AddIOp::create(
            b, arith::MulIOp::create(b, q, k.c(l.p)), k.c(j));
        return arith::MinSIOp::create(b, e, k.c(l.e - 1));
      },
      [&](Value q) {
        return k.cmpi(arith::CmpIPredicate::eq, lane,
                      arith::IndexCastOp::create(b, b.getI32Type(), q));
      });
}

/// Builds the kernel: one warp per token.
gpu::GPUFuncOp buildRouteKernel(OpBuilder &mb, Location loc, StringRef name,
                                const RouteLayout &l, StringRef biasGlobal) {
  MLIRContext *ctx = mb.getContext();
  Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);
  auto idxTy = MemRefType::get({ShapedType::kDynamic, l.k}, i32);
  auto wTy = MemRefType::get({ShapedType::kDynamic, l.k}, f32);
  SmallVector<Type> args = logitArgTypes(ctx, l);
  size_t nLogitArgs = args.size();
  bool biasArg = l.hasBias && !l.constBias;
  if (biasArg)
    args.push_back(MemRefType::get({l.e}, l.biasElt));
  args.append({idxTy, wTy});
  auto fn = gpu::GPUFuncOp::create(mb, loc, name,
                                   FunctionType::get(ctx, args, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), mb.getUnitAttr());
  fn.setKnownBlockSizeAttr(
      mb.getDenseI32ArrayAttr({int32_t(kWarps * kWarpSize), 1, 1}));
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  KB k{{b}};
  // logits, or x and the router weight (linear fused).
  Value logits = entry.getArgument(0);
  Value routerW = l.linearH ? entry.getArgument(1) : Value();
  // Hierarchical: the group logits, or with the GEMMs fused the group
  // router's weight.
  Value groupLogits =
      l.hierarchical && !l.linearH ? entry.getArgument(1) : Value();
  Value groupW = l.hierarchical && l.linearH ? entry.getArgument(2) : Value();
  Value bias = biasArg ? entry.getArgument(nLogitArgs) : Value();
  Value indices = entry.getArgument(nLogitArgs + (biasArg ? 1 : 0));
  Value weights = entry.getArgument(nLogitArgs + (biasArg ? 2 : 1));
  if (l.constBias)
    bias = memref::GetGlobalOp::create(b, MemRefType::get({l.e}, f32),
                                       biasGlobal);

  Value laneIdx, tok;
  std::tie(laneIdx, tok) = k.laneAndRow(kWarps);
  Value numTokens = memref::DimOp::create(b, logits, 0);
  Value lane = arith::IndexCastOp::create(b, i32, laneIdx);
  Value negInf = k.f32(-INFINITY), zeroF = k.f32(0.0), oneF = k.f32(1.0);
  Value zeroI = k.i32(0), minusOne = k.i32(-1);

  // The whole warp takes this branch or none: the shuffles inside see all
  // 32 lanes.
  auto guard = scf::IfOp::create(
      b, k.cmpi(arith::CmpIPredicate::ult, tok, numTokens), false);
  b.setInsertionPointToStart(&guard.getThenRegion().front());

  // This lane's experts e_j = lane*P + j; entries past E are invalid (their
  // taken bit is set from the start, their loads are clamped).
  int64_t p = l.p;
  Value firstExpert = arith::MulIOp::create(b, lane, k.i32(p));
  SmallVector<Value> ids, valid, z;
  Value invalidMask = zeroI;
  bool allValid = p * kWarpSize == l.e;
  for (int64_t j = 0; j < p; ++j) {
    Value e = arith::AddIOp::create(b, firstExpert, k.i32(j));
    ids.push_back(e);
    Value ok = allValid ? k.i1(true)
                        : k.cmpi(arith::CmpIPredicate::slt, e, k.i32(l.e));
    valid.push_back(ok);
    Value v;
    if (l.linearH) {
      v = fusedLogit(b, k, l, logits, routerW, tok, lane, laneIdx, j);
    } else {
      Value safe = arith::IndexCastOp::create(
          b, b.getIndexType(),
          allValid ? e : arith::MinSIOp::create(b, e, k.i32(l.e - 1)));
      v = memref::LoadOp::create(b, logits, ValueRange{tok, safe});
    }
    z.push_back(allValid ? v : k.sel(ok, v, negInf));
    if (!allValid)
      invalidMask = arith::OrIOp::create(
          b, invalidMask, k.sel(ok, zeroI, k.i32(int64_t(1) << j)));
  }

  // Scores s (the weights) and keys (the selection).
  SmallVector<Value> s(z);
  bool rawScores = l.selection == SelectionKind::topk_then_softmax ||
                   l.selection == SelectionKind::sparsemixer ||
                   l.scoring == ScoringFunc::none;
  // This lane's group (aligned segments of lanesPerGroup lanes; -1 past the
  // groups) for group-limited and hierarchical routing.
  Value myGroup;
  if (l.groups) {
    Value group = arith::DivUIOp::create(b, lane, k.i32(l.lanesPerGroup));
    myGroup = k.sel(k.cmpi(arith::CmpIPredicate::ult, group, k.i32(l.groups)),
                    group, minusOne);
  }
  // Softmax of v (x invTemp) over the lanes of aligned segments of `width`
  // lanes, each lane holding `vals` (invalid ones already -inf); `count`:
  // whether the lane's values enter the sum (a value replicated over a
  // group's lanes counts once). As convert-moe-to-linalg's softmax: the
  // max subtracted (all -inf -> 0), NaN kept.
  auto segmentSoftmax = [&](SmallVector<Value> vals, double invTemp,
                            int64_t width, Value count) {
    if (invTemp != 1.0)
      for (Value &v : vals)
        v = arith::MulFOp::create(b, v, k.f32(invTemp));
    Value mx = negInf;
    for (Value v : vals)
      mx = k.maxf(mx, v);
    mx = k.allReduce(mx, width, [&](Value x, Value y) { return k.maxf(x, y); });
    Value safeMax = k.zeroIfNegInf(mx);
    SmallVector<Value> ex;
    Value sum = zeroF;
    for (Value v : vals) {
      ex.push_back(math::ExpOp::create(b, arith::SubFOp::create(b, v, safeMax)));
      sum = k.addf(sum, ex.back());
    }
    if (count)
      sum = k.sel(count, sum, zeroF);
    sum = k.allReduce(sum, width, [&](Value x, Value y) { return k.addf(x, y); });
    Value divide = k.ori(k.cmpf(arith::CmpFPredicate::OGT, sum, zeroF),
                         k.isNan(sum));
    SmallVector<Value> out;
    for (Value e : ex)
      out.push_back(k.sel(divide, arith::DivFOp::create(b, e, sum), zeroF));
    return out;
  };
  Value groupProb; // hierarchical: a = softmax over groups, this lane's group
  if (l.hierarchical) {
    // a: the group softmax, each group's logit held by its lanes (counted
    // once, by the group's first lane); b: the softmax within the group
    // over its lanes; s = a * b (MOE_SEMANTICS section 1.6).
    Value inGroup = k.cmpi(arith::CmpIPredicate::sge, myGroup, zeroI);
    Value gl;
    if (groupW) {
      // The group router's GEMM fused in: the warp forms each group's
      // logit, the group's lanes keep it.
      gl = warpDotKept(
          b, k, l, logits, groupW, tok, laneIdx, l.groups,
          [](Value q) { return q; },
          [&](Value q) {
            return k.cmpi(arith::CmpIPredicate::eq, myGroup,
                          arith::IndexCastOp::create(b, b.getI32Type(), q));
          });
    } else {
      Value g = arith::IndexCastOp::create(
          b, b.getIndexType(), arith::MaxSIOp::create(b, myGroup, zeroI));
      gl = memref::LoadOp::create(b, groupLogits, ValueRange{tok, g});
    }
    gl = k.sel(inGroup, gl, negInf);
    Value first = k.andi(
        inGroup, k.cmpi(arith::CmpIPredicate::eq,
                        arith::RemUIOp::create(b, lane, k.i32(l.lanesPerGroup)),
                        zeroI));
    groupProb = segmentSoftmax({gl}, l.invTauGroup, kWarpSize, first)[0];
    SmallVector<Value> inner =
        segmentSoftmax(z, l.invTauExpert, l.lanesPerGroup, Value());
    for (int64_t j = 0; j < p; ++j) {
      s[j] = arith::MulFOp::create(b, groupProb, inner[j]);
      if (!allValid)
        s[j] = k.sel(valid[j], s[j], zeroF);
    }
  } else if (!rawScores && l.scoring == ScoringFunc::softmax) {
    Value mx = negInf;
    for (Value v : z)
      mx = k.maxf(mx, v);
    mx = k.allReduce(mx, kWarpSize,
                     [&](Value x, Value y) { return k.maxf(x, y); });
    Value safeMax = k.zeroIfNegInf(mx);
    SmallVector<Value> ex;
    Value sum = zeroF;
    for (int64_t j = 0; j < p; ++j) {
      Value x = math::ExpOp::create(b, arith::SubFOp::create(b, z[j], safeMax));
      if (!allValid)
        x = k.sel(valid[j], x, zeroF);
      ex.push_back(x);
      sum = k.addf(sum, x);
    }
    sum = k.allReduce(sum, kWarpSize,
                      [&](Value x, Value y) { return k.addf(x, y); });
    // sum is NaN for a NaN row: keep the NaN there rather than hide it.
    Value divide = k.ori(k.cmpf(arith::CmpFPredicate::OGT, sum, zeroF),
                         k.isNan(sum));
    for (int64_t j = 0; j < p; ++j)
      s[j] = k.sel(divide, arith::DivFOp::create(b, ex[j], sum), zeroF);
  } else if (!rawScores) {
    for (int64_t j = 0; j < p; ++j) {
      Value ez = math::ExpOp::create(b, arith::NegFOp::create(b, z[j]));
      s[j] = arith::DivFOp::create(b, oneF, k.addf(oneF, ez));
    }
  }
  SmallVector<Value> keys(s);
  if (bias) {
    for (int64_t j = 0; j < p; ++j) {
      Value safe = arith::IndexCastOp::create(
          b, b.getIndexType(),
          allValid ? ids[j]
                   : arith::MinSIOp::create(b, ids[j], k.i32(l.e - 1)));
      Value bv = memref::LoadOp::create(b, bias, ValueRange{safe});
      if (!bv.getType().isF32())
        bv = arith::ExtFOp::create(b, f32, bv);
      keys[j] = k.addf(s[j], bv);
    }
  }

  // Group-limited: group scores over each group's lanes, then topk_group
  // argmax rounds over (score, group id); experts of groups not kept start
  // as taken.
  Value taken = invalidMask;
  if (l.groups && l.keep < l.groups) {
    Value score;
    if (l.hierarchical) {
      // Groups ranked by their probability a.
      score = groupProb;
    } else {
      // Top two keys of the lane's experts (all in one group), then of the
      // group's lanes. max/min propagate NaN: a NaN key makes its group's
      // score NaN (the group ranks last) on every lane alike.
      Value first = negInf, second = negInf;
      for (int64_t j = 0; j < p; ++j) {
        Value v = allValid ? keys[j] : k.sel(valid[j], keys[j], negInf);
        second = k.maxf(second, k.minf(first, v));
        first = k.maxf(first, v);
      }
      for (int64_t off = l.lanesPerGroup / 2; off >= 1; off /= 2) {
        Value o1 = k.xorShfl(first, off), o2 = k.xorShfl(second, off);
        second = k.maxf(k.minf(first, o1), k.maxf(second, o2));
        first = k.maxf(first, o1);
      }
      score = l.groupScore == GroupScore::top2_sum ? k.addf(first, second)
                                                   : first;
    }
    auto rounds = scf::ForOp::create(
        b, k.c(0), k.c(l.keep), k.c(1), ValueRange{k.i1(false)},
        [&](OpBuilder &nb, Location nloc, Value, ValueRange it) {
          ImplicitLocOpBuilder ib(nloc, nb);
          KB kk{ib};
          Value bestV = kk.sel(it[0], kk.f32(-INFINITY), score);
          Value bestI = kk.sel(it[0], kk.i32(-1), myGroup);
          auto [wv, wi] = kk.warpArgmax(bestV, bestI);
          (void)wv;
          Value mine = kk.andi(kk.cmpi(arith::CmpIPredicate::eq, wi, myGroup),
                               kk.cmpi(arith::CmpIPredicate::sge, wi,
                                       kk.i32(0)));
          scf::YieldOp::create(ib, ValueRange{kk.ori(it[0], mine)});
        });
    Value kept = rounds.getResult(0);
    int64_t full = p == 32 ? -1 : (int64_t(1) << p) - 1;
    taken = k.sel(kept, invalidMask, k.i32(full));
  }

  if (l.selection == SelectionKind::dense ||
      (l.hierarchical && l.k == l.e)) {
    // Every expert, slot e = expert e (K = E): each lane writes its own P
    // entries, normalised by the sum over all of them; experts of groups
    // not kept (hierarchical) are -1 with weight 0.
    SmallVector<Value> wd(s), idOut(ids);
    for (int64_t j = 0; j < p; ++j) {
      Value bit = arith::AndIOp::create(b, taken, k.i32(int64_t(1) << j));
      Value out = k.cmpi(arith::CmpIPredicate::ne, bit, zeroI);
      wd[j] = k.sel(out, zeroF, s[j]);
      idOut[j] = k.sel(out, minusOne, ids[j]);
    }
    if (l.renormalize) {
      Value sum = zeroF;
      for (Value v : wd)
        sum = k.addf(sum, v);
      sum = k.allReduce(sum, kWarpSize,
                        [&](Value x, Value y) { return k.addf(x, y); });
      Value nonZero = k.cmpf(arith::CmpFPredicate::UNE, sum, zeroF);
      for (Value &v : wd)
        v = k.sel(nonZero, arith::DivFOp::create(b, v, sum), v);
    }
    for (int64_t j = 0; j < p; ++j) {
      Value v = wd[j];
      if (l.scale != 1.0)
        v = arith::MulFOp::create(b, v, k.f32(l.scale));
      OpBuilder::InsertionGuard g(b);
      if (!allValid) {
        auto st = scf::IfOp::create(b, valid[j], false);
        b.setInsertionPointToStart(&st.getThenRegion().front());
      }
      Value col = arith::IndexCastOp::create(b, b.getIndexType(), ids[j]);
      memref::StoreOp::create(b, idOut[j], indices, ValueRange{tok, col});
      memref::StoreOp::create(b, v, weights, ValueRange{tok, col});
    }
    b.setInsertionPointToEnd(&entry);
    gpu::ReturnOp::create(b);
    return fn;
  }

  // K rounds of a warp argmax over (key, expert id); lane r keeps slot r.
  // top_p: the winner fills its slot only while the cumulative probability
  // of the slots before is below p (it is taken either way), as the
  // reference. sparsemixer: the slot's weight is the softmax at the winner
  // (logit m, known to every lane) over the experts free before the round
  // and not masked, (m - z) / max(|z|, m) > 2 eps: each lane sums its own
  // P, one butterfly sums the warp (as convert-moe-to-linalg's
  // sparseMixerWeight).
  bool topP = l.selection == SelectionKind::top_p;
  bool sparse = l.selection == SelectionKind::sparsemixer;
  auto slots = scf::ForOp::create(
      b, k.c(0), k.c(l.k), k.c(1), ValueRange{taken, minusOne, zeroF, zeroF},
      [&](OpBuilder &nb, Location nloc, Value slot, ValueRange it) {
        ImplicitLocOpBuilder ib(nloc, nb);
        KB kk{ib};
        Value tk = it[0];
        Value bv = kk.f32(-INFINITY), bi = kk.i32(-1);
        for (int64_t j = 0; j < p; ++j) {
          Value bit = arith::AndIOp::create(ib, tk, kk.i32(int64_t(1) << j));
          Value free = kk.cmpi(arith::CmpIPredicate::eq, bit, kk.i32(0));
          Value cand = kk.sel(free, ids[j], kk.i32(-1));
          Value take = kk.better(keys[j], cand, bv, bi);
          bv = kk.sel(take, keys[j], bv);
          bi = kk.sel(take, ids[j], bi);
        }
        auto [wv, wi] = kk.warpArgmax(bv, bi);
        Value found = kk.cmpi(arith::CmpIPredicate::sge, wi, kk.i32(0));
        Value w0 = arith::MaxSIOp::create(ib, wi, kk.i32(0));
        Value owner = arith::DivUIOp::create(ib, w0, kk.i32(p));
        Value jw = arith::RemUIOp::create(ib, w0, kk.i32(p));
        // The owner marks the winner taken and broadcasts its score.
        Value own = kk.andi(found,
                            kk.cmpi(arith::CmpIPredicate::eq, lane, owner));
        Value bitW = arith::ShLIOp::create(ib, kk.i32(1), jw);
        Value newTaken = arith::OrIOp::create(
            ib, tk, kk.sel(own, bitW, kk.i32(0)));
        Value wScore;
        if (!sparse) {
          Value mine = s[0];
          for (int64_t j = 1; j < p; ++j)
            mine = kk.sel(kk.cmpi(arith::CmpIPredicate::eq, jw, kk.i32(j)),
                          s[j], mine);
          wScore = kk.idxShfl(mine, owner);
        } else {
          Value m = wv;
          Value safeM = kk.zeroIfNegInf(m);
          Value sum = kk.f32(0.0);
          for (int64_t j = 0; j < p; ++j) {
            Value bit = arith::AndIOp::create(ib, tk, kk.i32(int64_t(1) << j));
            Value free = kk.cmpi(arith::CmpIPredicate::eq, bit, kk.i32(0));
            Value factor = kk.maxf(math::AbsFOp::create(ib, s[j]), m);
            Value ratio = arith::DivFOp::create(
                ib, arith::SubFOp::create(ib, m, s[j]), factor);
            Value masked = kk.cmpf(arith::CmpFPredicate::OGT, ratio,
                                   kk.f32(2 * l.jitterEps));
            Value term =
                math::ExpOp::create(ib, arith::SubFOp::create(ib, s[j], safeM));
            sum =
                kk.sel(kk.andi(free, kk.noti(masked)), kk.addf(sum, term), sum);
          }
          sum = kk.allReduce(sum, kWarpSize,
                             [&](Value x, Value y) { return kk.addf(x, y); });
          Value top =
              math::ExpOp::create(ib, arith::SubFOp::create(ib, m, safeM));
          Value divide =
              kk.ori(kk.cmpf(arith::CmpFPredicate::OGT, sum, kk.f32(0.0)),
                     kk.isNan(sum));
          wScore =
              kk.sel(divide, arith::DivFOp::create(ib, top, sum), kk.f32(0.0));
        }
        wScore = kk.sel(found, wScore, kk.f32(0.0));
        Value id = kk.sel(found, wi, kk.i32(-1));
        Value cum = it[3];
        if (topP) {
          Value include = kk.cmpf(arith::CmpFPredicate::OLT, cum,
                                  kk.f32(l.topP));
          id = kk.sel(include, id, kk.i32(-1));
          wScore = kk.sel(include, wScore, kk.f32(0.0));
          cum = kk.addf(cum, wScore);
        }
        Value isMine = kk.cmpi(
            arith::CmpIPredicate::eq, lane,
            arith::IndexCastOp::create(ib, ib.getI32Type(), slot));
        scf::YieldOp::create(ib, ValueRange{newTaken,
                                            kk.sel(isMine, id, it[1]),
                                            kk.sel(isMine, wScore, it[2]),
                                            cum});
      });
  Value myId = slots.getResult(1), w = slots.getResult(2);

  // Weights of the K slots (lane r < K holds slot r).
  Value inSlot = k.cmpi(arith::CmpIPredicate::ult, lane, k.i32(l.k));
  auto sumSlots = [&](Value v) {
    return k.allReduce(k.sel(inSlot, v, zeroF), kWarpSize,
                       [&](Value x, Value y) { return k.addf(x, y); });
  };
  if (l.selection == SelectionKind::topk_then_softmax) {
    Value mx = k.allReduce(k.sel(inSlot, w, negInf), kWarpSize,
                           [&](Value x, Value y) { return k.maxf(x, y); });
    Value safeMax = k.zeroIfNegInf(mx);
    Value ex = k.sel(inSlot,
                     math::ExpOp::create(b, arith::SubFOp::create(b, w, safeMax)),
                     zeroF);
    Value sum = sumSlots(ex);
    Value divide = k.ori(k.cmpf(arith::CmpFPredicate::OGT, sum, zeroF),
                         k.isNan(sum));
    w = k.sel(divide, arith::DivFOp::create(b, ex, sum), zeroF);
  }
  if (l.renormalize) {
    Value sum = sumSlots(w);
    Value nonZero = k.cmpf(arith::CmpFPredicate::UNE, sum, zeroF);
    w = k.sel(nonZero, arith::DivFOp::create(b, w, sum), w);
  }
  if (l.scale != 1.0)
    w = arith::MulFOp::create(b, w, k.f32(l.scale));
  auto store = scf::IfOp::create(b, inSlot, false);
  b.setInsertionPointToStart(&store.getThenRegion().front());
  memref::StoreOp::create(b, myId, indices, ValueRange{tok, laneIdx});
  memref::StoreOp::create(b, w, weights, ValueRange{tok, laneIdx});

  b.setInsertionPointToEnd(&entry);
  gpu::ReturnOp::create(b);
  return fn;
}

//===----------------------------------------------------------------------===//
// convert-moe-route-to-gpu
//===----------------------------------------------------------------------===//

/// The router GEMM on tensor cores (linear_mma, then the routing kernel on
/// the logits) beats the fused routing kernel from about this many tokens
/// times BN / E (BN: linear_mma's column tile), estimated: the fused kernel
/// reads the E x H router weight from L2 once per token (measured on the
/// H100 at ~3 TB/s: Qwen3-30B-A3B's route kernel, 0.72 ms at T = 4096,
/// benchmarks/RESULTS.md), linear_mma's first wave of blocks takes about
/// one block's 64 x BN x H tile at ~2.3 TFLOP/s per SM: equal at T = 64 BN
/// (3 / 2.3) / E, ~83 BN / E. An estimate, not a measurement; BN <= E, so
/// below the fused kernel's own 256.
constexpr int64_t kRouteMmaTokensPerTile = 83;

struct ConvertMoERouteToGPU
    : public moe::impl::ConvertMoERouteToGPUBase<ConvertMoERouteToGPU> {
  using Base::Base;

  /// The tokens from which the router GEMM `lin` should leave the fused
  /// kernel for linear_mma (0: never): mma-linear-min-tokens, or with -1 the
  /// estimate (at least fuse-linear-min-tokens; none when the fused kernel
  /// is asked for at every T).
  int64_t mmaMinTokens(LinearOp lin) {
    if (mmaLinearMinTokens == 0 || (mmaLinearMinTokens < 0 &&
                                    fuseLinearMinTokens <= 0))
      return 0;
    MmaLinearSpec s;
    MmaLinearPlan plan;
    if (!mmaSpecOf(lin, s).empty() || !planMmaLinear(s, chip, plan).empty())
      return 0;
    if (mmaLinearMinTokens > 0)
      return mmaLinearMinTokens;
    int64_t estimate = llvm::divideCeil(
        kRouteMmaTokensPerTile * (s.out / plan.colBlocks), s.out);
    return std::max(estimate, fuseLinearMinTokens.getValue());
  }

  void runOnOperation() override {
    // Kernels are named <function>_route[_N].
    auto tryRewrite = [&](RouteOp op, unsigned counter) {
      RouteLayout l;
      std::string why = analyse(op, l, fuseLinear);
      if (why.empty())
        rewrite(op, l, counter);
      return why;
    };
    if (failed(formKernels<RouteOp>(getOperation(), required,
                                    "the routing kernel", tryRewrite)) ||
        failed(formDispatchKernels(getOperation(), required, kRouteKernelAttr)))
      signalPassFailure();
  }

  /// Replaces `op` by the routing kernel: with the router GEMM fused where
  /// the layout says so and T is at least fuse-linear-min-tokens (decided
  /// on the host at run time: scf.if between the fused kernel and the
  /// separate GEMM + kernel on the logits), else on the logits.
  void rewrite(RouteOp op, const RouteLayout &l, unsigned counter) {
    Location loc = op.getLoc();
    auto func = op->getParentOfType<func::FuncOp>();
    std::string base = kernelBaseName(func, "route", counter);
    LinearOp lin = l.linearH ? op.getLogits().getDefiningOp<LinearOp>()
                             : LinearOp();
    // Hierarchical routing fuses its group router's GEMM with the other.
    LinearOp groupLin = lin && l.hierarchical
                            ? op.getGroupLogits().getDefiningOp<LinearOp>()
                            : LinearOp();
    OpBuilder ob(op);
    ImplicitLocOpBuilder b(loc, ob);
    SmallVector<Value> results;
    // Many tokens: the router GEMM on tensor cores and the kernel on its
    // logits, from mmaMin tokens (hierarchical routing's group GEMM has a
    // few outputs: no tensor-core kernel).
    int64_t mmaMin = lin && !groupLin ? mmaMinTokens(lin) : 0;
    RouteLayout plain = l;
    plain.linearH = 0;
    plain.unroll = 1;
    // The router GEMM outside the fused kernel's range, linear_mma from
    // mmaMin.
    auto outside = [&]() -> Value {
      Operation *c = b.clone(*lin);
      c->setAttr(kMmaMinTokensAttr, b.getI64IntegerAttr(mmaMin));
      return c->getResult(0);
    };
    if (!lin) {
      results = emitRoute(b, op, l, base, op.getLogits(), op.getGroupLogits(),
                          LinearOp(), LinearOp());
    } else if (mmaMin && mmaMin <= fuseLinearMinTokens) {
      // The fused kernel's range is empty.
      results = emitRoute(b, op, plain, base, outside(), op.getGroupLogits(),
                          LinearOp(), LinearOp());
    } else if (mmaMin) {
      // Fused for fuse-linear-min-tokens <= T < mmaMin, else the GEMM (the
      // warp-per-output kernel below, linear_mma from mmaMin) and the
      // kernel on the logits.
      Value numTokens = tensor::DimOp::create(b, lin.getInput(), 0);
      Value fused = arith::CmpIOp::create(
          b, arith::CmpIPredicate::ult, numTokens,
          arith::ConstantIndexOp::create(b, mmaMin));
      if (fuseLinearMinTokens > 0)
        fused = arith::AndIOp::create(
            b, fused,
            arith::CmpIOp::create(
                b, arith::CmpIPredicate::uge, numTokens,
                arith::ConstantIndexOp::create(b, fuseLinearMinTokens)));
      auto branch = scf::IfOp::create(b, op->getResultTypes(), fused,
                                      /*addThenBlock=*/true,
                                      /*addElseBlock=*/true);
      {
        OpBuilder::InsertionGuard g(b);
        b.setInsertionPointToStart(&branch.getThenRegion().front());
        SmallVector<Value> r = emitRoute(b, op, l, base + "_fused", Value(),
                                         Value(), lin, LinearOp());
        scf::YieldOp::create(b, r);
        b.setInsertionPointToStart(&branch.getElseRegion().front());
        r = emitRoute(b, op, plain, base, outside(), op.getGroupLogits(),
                      LinearOp(), LinearOp());
        scf::YieldOp::create(b, r);
      }
      results = branch.getResults();
    } else if (fuseLinearMinTokens <= 0) {
      results = emitRoute(b, op, l, base, Value(), Value(), lin, groupLin);
    } else {
      // One warp per token computes E x H products alone: for a few tokens
      // the separate GEMM (a thread per logit) spreads them wider. Measured
      // on an H100 (benchmarks/RESULTS.md, Qwen3-30B-A3B shape): fused
      // 0.66 ms vs 0.38 ms at T = 1, 1.57 vs 2.33 ms at T = 1024.
      Value numTokens = tensor::DimOp::create(b, lin.getInput(), 0);
      Value big = arith::CmpIOp::create(
          b, arith::CmpIPredicate::uge, numTokens,
          arith::ConstantIndexOp::create(b, fuseLinearMinTokens));
      auto branch = scf::IfOp::create(b, op->getResultTypes(), big,
                                      /*addThenBlock=*/true,
                                      /*addElseBlock=*/true);
      {
        OpBuilder::InsertionGuard g(b);
        b.setInsertionPointToStart(&branch.getThenRegion().front());
        SmallVector<Value> r = emitRoute(b, op, l, base + "_fused", Value(),
                                         Value(), lin, groupLin);
        scf::YieldOp::create(b, r);
        b.setInsertionPointToStart(&branch.getElseRegion().front());
        // The GEMMs below the threshold only (no tensor-core GEMM for them).
        auto below = [&](LinearOp gemm) -> Value {
          Operation *c = b.clone(*gemm);
          c->setAttr(kTokensBelowAttr,
                     b.getI64IntegerAttr(fuseLinearMinTokens));
          return c->getResult(0);
        };
        r = emitRoute(b, op, plain, base, below(lin),
                      groupLin ? below(groupLin) : op.getGroupLogits(),
                      LinearOp(), LinearOp());
        scf::YieldOp::create(b, r);
      }
      results = branch.getResults();
    }
    op->replaceAllUsesWith(results);
    op.erase();
    for (LinearOp gemm : {lin, groupLin})
      if (gemm && gemm->use_empty())
        gemm.erase();
  }

  /// The kernel `base`::route for layout `l` (in a gpu.module of its own,
  /// merged with the others by moe-gpu-merge-kernel-modules), its launch
  /// declaration, and at `b` the host code on buffers that calls it: on
  /// `logits` (and `groupLogits`, hierarchical), or on the input and
  /// weight of `fused` (and the weight of `fusedGroup`). Returns the indices
  /// and weights as tensors of `op`'s result types.
  SmallVector<Value> emitRoute(ImplicitLocOpBuilder &b, RouteOp op,
                               const RouteLayout &l, const std::string &base,
                               Value logits, Value groupLogits,
                               LinearOp fused, LinearOp fusedGroup) {
    MLIRContext *ctx = &getContext();
    Location loc = op.getLoc();
    Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);

    KernelRewrite kr(op, base);
    OpBuilder kb = kr.kernels();
    std::string biasGlobal = base + "_bias";
    if (l.constBias) {
      // A kernel cannot read the host's global: the constant lives in the
      // kernel module.
      memref::GlobalOp::create(kb, loc, biasGlobal,
                               kb.getStringAttr("private"),
                               MemRefType::get({l.e}, f32), l.constBias,
                               /*constant=*/true, IntegerAttr());
    }
    auto kernel = buildRouteKernel(kb, loc, "route", l, biasGlobal);

    // Host code on buffers in place of the op (the launch comes after
    // bufferization: see moe-gpu-launch-route-kernels).
    // The kernel's arguments in order: logitArgTypes' tensors, the bias
    // unless a constant, the two results.
    SmallVector<Value> logitTensors;
    if (fused) {
      logitTensors = {fused.getInput(), fused.getWeight()};
      if (fusedGroup)
        logitTensors.push_back(fusedGroup.getWeight());
    } else if (l.hierarchical) {
      logitTensors = {logits, groupLogits};
    } else {
      logitTensors = {logits};
    }
    Value numTokens = tensor::DimOp::create(b, logitTensors[0], 0);
    SmallVector<Value> operands;
    for (auto [t, type] : llvm::zip(logitTensors, logitArgTypes(ctx, l)))
      operands.push_back(readOnlyBuffer(b, loc, t, cast<MemRefType>(type)));
    if (l.hasBias && !l.constBias)
      operands.push_back(readOnlyBuffer(b, loc, op.getSelectionBias(),
                                        MemRefType::get({l.e}, l.biasElt)));
    Value idx = memref::AllocOp::create(
        b, MemRefType::get({ShapedType::kDynamic, l.k}, i32),
        ValueRange{numTokens});
    Value w = memref::AllocOp::create(
        b, MemRefType::get({ShapedType::kDynamic, l.k}, f32),
        ValueRange{numTokens});
    operands.append({idx, w});

    // One launch on all the call's operands: ceil(T / warps) blocks of
    // 32 * warps threads, T from the indices buffer (second to last).
    int64_t n = operands.size();
    kr.call(b, kRouteKernelAttr,
            {makeLaunch(b, kr.ref(kernel),
                        llvm::to_vector(llvm::seq<int64_t>(0, n)),
                        kWarps * kWarpSize, n - 2, 1, kWarps)},
            operands,
            {b.getNamedAttr("experts_per_lane", b.getI64IntegerAttr(l.p))});
    // (A named list: a ValueRange of a braced list would dangle inside the
    // zip.)
    SmallVector<Value> buffers{idx, w}, results;
    for (auto [m, res] : llvm::zip(buffers, op->getResults()))
      results.push_back(writtenTensor(b, loc, m, res.getType()));
    return results;
  }
};

//===----------------------------------------------------------------------===//
// moe-gpu-launch-route-kernels
//===----------------------------------------------------------------------===//

struct MoEGPULaunchRouteKernels
    : public moe::impl::MoEGPULaunchRouteKernelsBase<
          MoEGPULaunchRouteKernels> {
  void runOnOperation() override {
    if (failed(expandLaunchLists(getOperation(), kRouteKernelAttr)))
      signalPassFailure();
  }
};

} // namespace
