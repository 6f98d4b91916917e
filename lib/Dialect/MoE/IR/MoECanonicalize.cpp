//===- MoECanonicalize.cpp - moe canonicalisation patterns ------*- C++ -*-===//
//
// Each pattern here is an identity of MOE_SEMANTICS.md, exact up to f32
// rounding (the contract allows the combine to sum in any order):
//
// * K == E: every expert is selected, so top-k / top-k-then-softmax /
//   group-limited top-k are dense routing (the slot order changes, which only
//   the order of the combine's sum sees); the selection bias, which only
//   chooses experts, is dead.
// * Capacity dispatch with capacity_factor >= E / K, or a fixed
//   expert_capacity >= T (static T), admits every pair: an expert gets at
//   most one pair per token (routing picks distinct experts), and C >= T.
// * Dropless dispatch is the identity with zero drops.
// * Experts whose down projection is all zeros (and has no bias) output 0:
//   the combine drops them, and the routing feeding only them becomes dead.
// * A one-expert layer whose routing weight is always 1 is a plain FFN.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The dense routing equivalent to `routing` over `numExperts` experts, or
/// null when selection still chooses.
RoutingAttr getDenseEquivalent(RoutingAttr routing, int64_t numExperts) {
  SelectionKind sel = routing.getSelection();
  if (routing.getK() != numExperts ||
      !(sel == SelectionKind::topk || sel == SelectionKind::topk_then_softmax ||
        sel == SelectionKind::group_limited_topk))
    return {};
  // top-k-then-softmax over all E logits is softmax scoring.
  ScoringFunc scoring = sel == SelectionKind::topk_then_softmax
                            ? ScoringFunc::softmax
                            : routing.getScoring();
  return RoutingAttr::get(
      routing.getContext(), scoring, SelectionKind::dense, numExperts,
      /*nGroup=*/1, /*topkGroup=*/1, GroupScore::max, APFloat(1.0),
      routing.getRenormalize(), routing.getScalingFactor(), APFloat(1.0),
      APFloat(1.0), /*jitterEps=*/APFloat(0.0));
}

/// True when only ops that do not depend on the slot order use `v`.
bool onlySlotOrderFreeUsers(Value v) {
  return llvm::all_of(v.getUsers(), [](Operation *user) {
    return isa<ExpertsOp, LoRAExpertsOp, SpecialExpertsOp, CombineOp>(user);
  });
}

struct RouteAllExpertsIsDense : OpRewritePattern<RouteOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RouteOp op,
                                PatternRewriter &rewriter) const override {
    int64_t e = cast<ShapedType>(op.getLogits().getType()).getDimSize(1);
    RoutingAttr dense = getDenseEquivalent(op.getRouting(), e);
    if (!dense)
      return rewriter.notifyMatchFailure(op, "selection still chooses");
    if (!onlySlotOrderFreeUsers(op.getIndices()) ||
        !onlySlotOrderFreeUsers(op.getWeights()))
      return rewriter.notifyMatchFailure(op, "a user sees the slot order");
    auto newOp = RouteOp::create(rewriter, op.getLoc(),
                                 op.getIndices().getType(),
                                 op.getWeights().getType(), op.getLogits(),
                                 /*group_logits=*/Value(),
                                 /*selection_bias=*/Value(), dense);
    rewriter.replaceOp(op, newOp->getResults());
    return success();
  }
};

Value zeroCount(PatternRewriter &rewriter, Location loc) {
  auto ty = RankedTensorType::get({}, rewriter.getI64Type());
  return arith::ConstantOp::create(
      rewriter, loc, DenseElementsAttr::get(ty, rewriter.getI64IntegerAttr(0)
                                                    .getValue()));
}

/// No expert can overflow: cf * K >= E, or a fixed capacity of at least T
/// (a static token count). Each token sends at most one pair to an expert.
bool capacityNeverDrops(double cf, std::optional<uint64_t> fixed, int64_t t,
                        int64_t k, int64_t e) {
  if (fixed)
    return t != ShapedType::kDynamic && static_cast<int64_t>(*fixed) >= t;
  return k != ShapedType::kDynamic && cf * static_cast<double>(k) >=
                                          static_cast<double>(e);
}

struct DroplessDispatchIsIdentity : OpRewritePattern<DispatchOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(DispatchOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getMode() != DispatchMode::dropless)
      return rewriter.notifyMatchFailure(op, "capacity dispatch");
    rewriter.replaceOp(op, {op.getIndices(), op.getWeights(),
                            zeroCount(rewriter, op.getLoc())});
    return success();
  }
};

struct AmpleCapacityIsDropless : OpRewritePattern<DispatchOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(DispatchOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getMode() != DispatchMode::capacity)
      return rewriter.notifyMatchFailure(op, "not capacity dispatch");
    // Distinct experts per token are guaranteed only by moe.route.
    if (!op.getIndices().getDefiningOp<RouteOp>())
      return rewriter.notifyMatchFailure(op, "indices not from moe.route");
    auto idxTy = cast<ShapedType>(op.getIndices().getType());
    if (!capacityNeverDrops(op.getCapacityFactor().convertToDouble(),
                            op.getExpertCapacity(), idxTy.getDimSize(0),
                            idxTy.getDimSize(1), op.getNumExperts()))
      return rewriter.notifyMatchFailure(op, "capacity may drop pairs");
    rewriter.replaceOp(op, {op.getIndices(), op.getWeights(),
                            zeroCount(rewriter, op.getLoc())});
    return success();
  }
};

bool isZeroWeight(Value v) { return v && matchPattern(v, m_AnyZeroFloat()); }

/// True when `v` is statically known to be all zeros.
bool isKnownZero(Value v) {
  Operation *def = v.getDefiningOp();
  if (!def)
    return false;
  if (matchPattern(v, m_AnyZeroFloat()))
    return true;
  if (auto experts = dyn_cast<ExpertsOp>(def))
    return isZeroWeight(experts.getDown()) && !experts.getDownBias();
  if (auto ffn = dyn_cast<FFNOp>(def))
    return isZeroWeight(ffn.getDown()) && !ffn.getDownBias();
  if (auto special = dyn_cast<SpecialExpertsOp>(def))
    return llvm::all_of(special.getKinds(), [](Attribute a) {
      return cast<SpecialKindAttr>(a).getValue() == SpecialKind::zero;
    });
  return false;
}

struct DropZeroCombineTerms : OpRewritePattern<CombineOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(CombineOp op,
                                PatternRewriter &rewriter) const override {
    SmallVector<Value> slots, addends;
    llvm::copy_if(op.getSlots(), std::back_inserter(slots),
                  [](Value v) { return !isKnownZero(v); });
    llvm::copy_if(op.getAddends(), std::back_inserter(addends),
                  [](Value v) { return !isKnownZero(v); });
    if (slots.size() == op.getSlots().size() &&
        addends.size() == op.getAddends().size())
      return rewriter.notifyMatchFailure(op, "no zero term");
    if (slots.empty() && addends.empty() && op.getBias())
      return rewriter.notifyMatchFailure(op, "the bias would be left alone");
    if (slots.empty() && addends.empty()) {
      // Everything is zero: a splat of 0 in the result type.
      auto ty = cast<RankedTensorType>(op.getType());
      Value zero = arith::ConstantOp::create(
          rewriter, op.getLoc(), rewriter.getFloatAttr(ty.getElementType(), 0));
      SmallVector<Value> dynSizes;
      if (ty.isDynamicDim(0)) {
        dynSizes.push_back(tensor::DimOp::create(rewriter, op.getLoc(),
                                                 op.getTokenSource(), 0));
      }
      rewriter.replaceOpWithNewOp<tensor::SplatOp>(op, zero, ty, dynSizes);
      return success();
    }
    Value weights = slots.empty() ? Value() : op.getWeights();
    rewriter.replaceOpWithNewOp<CombineOp>(op, op.getType(), weights, slots,
                                           addends, op.getBias());
    return success();
  }
};

struct LayerAllExpertsIsDense : OpRewritePattern<LayerOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LayerOp op,
                                PatternRewriter &rewriter) const override {
    // Selection runs over router rows (more than the experts after a merge).
    int64_t e = op.getNumRouterRoutedRows() + op.getNumSpecialExperts();
    RoutingAttr dense = getDenseEquivalent(op.getRouting(), e);
    if (!dense)
      return rewriter.notifyMatchFailure(op, "selection still chooses");
    rewriter.modifyOpInPlace(op, [&] {
      op.setRoutingAttr(dense);
      op.getSelectionBiasMutable().clear();
    });
    return success();
  }
};

struct LayerAmpleCapacityIsDropless : OpRewritePattern<LayerOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LayerOp op,
                                PatternRewriter &rewriter) const override {
    int64_t e = op.getNumRoutedExperts() + op.getNumSpecialExperts();
    if (op.getDispatch() != DispatchMode::capacity ||
        !capacityNeverDrops(
            op.getCapacityFactor().convertToDouble(), op.getExpertCapacity(),
            cast<ShapedType>(op.getInput().getType()).getDimSize(0),
            op.getRouting().getK(), e))
      return rewriter.notifyMatchFailure(op, "capacity may drop pairs");
    SmallVector<NamedAttribute> attrs;
    for (NamedAttribute a : op->getAttrs())
      if (a.getName() != op.getDispatchAttrName() &&
          a.getName() != op.getCapacityFactorAttrName() &&
          a.getName() != op.getExpertCapacityAttrName())
        attrs.push_back(a);
    auto newOp = LayerOp::create(rewriter, op.getLoc(),
                                 TypeRange{op.getOutput().getType()},
                                 op->getOperands(), attrs);
    rewriter.replaceOp(op, {newOp.getOutput(), zeroCount(rewriter, op.getLoc())});
    return success();
  }
};

/// Drops the leading unit expert dimension of a stacked weight.
Value squeezeExpertDim(PatternRewriter &rewriter, Location loc, Value v) {
  if (!v)
    return v;
  auto ty = cast<RankedTensorType>(v.getType());
  SmallVector<ReassociationIndices> reassoc;
  reassoc.push_back({0, 1});
  for (int64_t i = 2; i < ty.getRank(); ++i)
    reassoc.push_back({i});
  return tensor::CollapseShapeOp::create(rewriter, loc, v, reassoc);
}

struct SingleExpertLayerIsFFN : OpRewritePattern<LayerOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LayerOp op,
                                PatternRewriter &rewriter) const override {
    RoutingAttr routing = op.getRouting();
    // The single expert's weight is 1 for softmax scoring (any selection)
    // and for top-k-then-softmax; sigmoid / raw scores are not 1.
    bool unitWeight = routing.getScoring() == ScoringFunc::softmax ||
                      routing.getSelection() == SelectionKind::topk_then_softmax;
    // After a merge one expert may sit behind several router rows, whose
    // selected weights need not sum to 1.
    if (!op.hasFFNExperts() || op.getExpertMap() ||
        op.getNumRoutedExperts() != 1 ||
        op.getNumSpecialExperts() != 0 ||
        op.getDispatch() != DispatchMode::dropless || !unitWeight ||
        routing.getScalingFactorValue() != 1.0)
      return rewriter.notifyMatchFailure(op, "not a one-expert unit-weight layer");
    Location loc = op.getLoc();
    Type inTy = op.getInput().getType();
    auto f32Ty = RankedTensorType::get(
        cast<ShapedType>(inTy).getShape(), rewriter.getF32Type());
    auto sq = [&](Value v) { return squeezeExpertDim(rewriter, loc, v); };
    SmallVector<Value> addends;
    addends.push_back(FFNOp::create(
        rewriter, loc, f32Ty, op.getInput(), sq(op.getGate()), sq(op.getUp()),
        sq(op.getDown()), sq(op.getGateBias()), sq(op.getUpBias()),
        sq(op.getDownBias()), /*gate_weight=*/Value(), op.getActivationAttr(),
        op.getAlphaAttr(), op.getLimitAttr()));
    if (op.hasSharedExpert())
      addends.push_back(FFNOp::create(
          rewriter, loc, f32Ty, op.getInput(), op.getSharedGate(),
          op.getSharedUp(), op.getSharedDown(), Value(), Value(), Value(),
          op.getSharedGateWeight(), op.getSharedActivationAttr(),
          rewriter.getF64FloatAttr(1.702), rewriter.getF64FloatAttr(7.0)));
    rewriter.replaceOpWithNewOp<CombineOp>(op, op.getOutput().getType(),
                                           /*weights=*/Value(), ValueRange{},
                                           addends, op.getOutputBias());
    return success();
  }
};

} // namespace

void RouteOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                          MLIRContext *context) {
  results.add<RouteAllExpertsIsDense>(context);
}

void DispatchOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                             MLIRContext *context) {
  results.add<DroplessDispatchIsIdentity, AmpleCapacityIsDropless>(context);
}

void CombineOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                            MLIRContext *context) {
  results.add<DropZeroCombineTerms>(context);
}

void LayerOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                          MLIRContext *context) {
  results.add<LayerAllExpertsIsDense, LayerAmpleCapacityIsDropless,
              SingleExpertLayerIsFFN>(context);
}
