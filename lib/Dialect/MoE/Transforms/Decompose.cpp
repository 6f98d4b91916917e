//===- Decompose.cpp - whole MoE layers into their stages -------*- C++ -*-===//
//
// Implements --moe-decompose: moe.layer becomes router logits, moe.route,
// (moe.dispatch), expert ops and moe.combine; moe.cartesian is inlined.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEDECOMPOSE
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// `T x N` f32, T taken from the token tensor `like`.
RankedTensorType tokenTensor(Value like, ArrayRef<int64_t> trailing,
                             Type elementType) {
  SmallVector<int64_t> shape{cast<ShapedType>(like.getType()).getDimSize(0)};
  shape.append(trailing.begin(), trailing.end());
  return RankedTensorType::get(shape, elementType);
}

struct DecomposeLayer : OpRewritePattern<LayerOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(LayerOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value x = op.getInput();
    Type f32 = rewriter.getF32Type();
    int64_t h = cast<ShapedType>(x.getType()).getDimSize(1);
    int64_t routed = op.getNumRoutedExperts();
    int64_t special = op.getNumSpecialExperts();
    // Router rows: one per original routed expert after a merge.
    int64_t e = op.getNumRouterRoutedRows() + special;
    RoutingAttr routing = op.getRouting();
    int64_t k = routing.getK();

    // Router logits.
    Value router = op.getRouter();
    if (op.hasProjectedRouter())
      router = ProjectedRouterOp::create(
          rewriter, loc, RankedTensorType::get({e, h}, f32),
          op.getDomainEmbeddings(), op.getProjW1(), op.getProjW2());
    Value logits = LinearOp::create(rewriter, loc, tokenTensor(x, {e}, f32), x,
                                    router, op.getRouterBias());
    Value groupLogits;
    if (op.getGroupRouter())
      groupLogits = LinearOp::create(
          rewriter, loc, tokenTensor(x, {routing.getNGroup()}, f32), x,
          op.getGroupRouter(), Value());

    // Routing and dispatch.
    auto idxTy = tokenTensor(x, {k}, rewriter.getI32Type());
    auto wTy = tokenTensor(x, {k}, f32);
    auto route = RouteOp::create(rewriter, loc, idxTy, wTy, logits,
                                 groupLogits, op.getSelectionBias(), routing);
    Value indices = route.getIndices(), weights = route.getWeights();
    // After a merge, router rows point at merged experts; dispatch and the
    // expert ops see merged ids.
    if (auto map = op.getExpertMapAttr())
      indices = RemapExpertsOp::create(rewriter, loc, idxTy, indices, map,
                                       rewriter.getI64IntegerAttr(routed));
    Value dropped;
    if (op.getDispatch() == DispatchMode::capacity) {
      auto dispatch = DispatchOp::create(
          rewriter, loc, idxTy, wTy,
          RankedTensorType::get({}, rewriter.getI64Type()), indices, weights,
          rewriter.getI64IntegerAttr(routed + special), op.getDispatchAttr(),
          op.getCapacityFactorAttr(), op.getExpertCapacityAttr());
      indices = dispatch.getAdmittedIndices();
      weights = dispatch.getAdmittedWeights();
      dropped = dispatch.getDropped();
    }

    // Experts.
    auto slotTy = tokenTensor(x, {k, h}, f32);
    auto addendTy = tokenTensor(x, {h}, f32);
    SmallVector<Value> slots, addends;
    // scale_input (Llama 4): the weights scale the experts' input and the
    // combine sums their slots with weight 1.
    bool scaleInput = op.getScaleInput();
    if (op.hasFFNExperts())
      slots.push_back(ExpertsOp::create(
          rewriter, loc, slotTy, x, indices, op.getGate(), op.getUp(),
          op.getDown(), op.getGateBias(), op.getUpBias(), op.getDownBias(),
          scaleInput ? weights : Value(), op.getActivationAttr(),
          op.getAlphaAttr(), op.getLimitAttr(), rewriter.getI64IntegerAttr(0)));
    if (op.hasLoRAExperts()) {
      // §3: the frozen base is applied once per token, not per slot.
      addends.push_back(LinearOp::create(rewriter, loc, addendTy, x,
                                         op.getLoraBase(), Value()));
      slots.push_back(LoRAExpertsOp::create(
          rewriter, loc, slotTy, x, indices, op.getLoraA(), op.getLoraB(),
          op.getLoraAlphaAttr(), rewriter.getI64IntegerAttr(0)));
    }
    if (special > 0)
      slots.push_back(SpecialExpertsOp::create(
          rewriter, loc, slotTy, x, indices, op.getConstRouter(),
          op.getConstVectors(), op.getSpecialKindsAttr(),
          rewriter.getI64IntegerAttr(routed)));
    if (op.hasSharedExpert())
      addends.push_back(FFNOp::create(
          rewriter, loc, addendTy, x, op.getSharedGate(), op.getSharedUp(),
          op.getSharedDown(), Value(), Value(), Value(),
          op.getSharedGateWeight(), op.getSharedActivationAttr(),
          rewriter.getF64FloatAttr(1.702), rewriter.getF64FloatAttr(7.0)));

    Value y = CombineOp::create(rewriter, loc, op.getOutput().getType(),
                                scaleInput ? Value() : weights, slots, addends,
                                op.getOutputBias());
    SmallVector<Value> results{y};
    if (dropped)
      results.push_back(dropped);
    rewriter.replaceOp(op, results);
    return success();
  }
};

struct InlineCartesian : OpRewritePattern<CartesianOp> {
  using OpRewritePattern::OpRewritePattern;

  /// Moves `region`'s body before `op` with its argument bound to `arg` and
  /// returns the value it yielded.
  static Value inlineRegion(PatternRewriter &rewriter, Operation *op,
                            Region &region, Value arg) {
    Block *block = &region.front();
    auto yield = cast<YieldOp>(block->getTerminator());
    Value result = yield.getValue();
    rewriter.inlineBlockBefore(block, op, arg);
    rewriter.eraseOp(yield);
    return result;
  }

  LogicalResult matchAndRewrite(CartesianOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value x = op.getInput();
    Value a = inlineRegion(rewriter, op, op.getFirst(), x);
    rewriter.setInsertionPoint(op);
    Value hidden = CombineOp::create(rewriter, loc, x.getType(), Value(),
                                     ValueRange{}, ValueRange{x, a},
                                     /*bias=*/Value());
    if (op.getNormWeight())
      hidden = RMSNormOp::create(rewriter, loc, x.getType(), hidden,
                                 op.getNormWeight(),
                                 op.getEpsilonAttr());
    Value y = inlineRegion(rewriter, op, op.getSecond(), hidden);
    rewriter.replaceOp(op, y);
    return success();
  }
};

struct MoEDecomposePass
    : public mlir::moe::impl::MoEDecomposeBase<MoEDecomposePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateMoEDecompositionPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void mlir::moe::populateMoEDecompositionPatterns(RewritePatternSet &patterns) {
  patterns.add<DecomposeLayer, InlineCartesian>(patterns.getContext());
}
