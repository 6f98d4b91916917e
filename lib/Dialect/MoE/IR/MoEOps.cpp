//===- MoEOps.cpp - moe dialect operation verifiers -------------*- C++ -*-===//
//
// Verifiers name the offending operand, the shape it must have (with the
// symbolic names T, H, F, E, K used by MOE_SEMANTICS.md) and what it has.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/TypeUtilities.h"
#include "llvm/ADT/STLExtras.h"

using namespace mlir;
using namespace mlir::moe;

namespace {
constexpr int64_t kAny = ShapedType::kDynamic;

/// One expected dimension: a size (or kAny) and its symbolic name.
struct Dim {
  int64_t size;
  StringRef name;
};

std::string formatExpected(ArrayRef<Dim> dims) {
  std::string sizes, names;
  llvm::raw_string_ostream s(sizes), n(names);
  llvm::interleave(
      dims, s, [&](Dim d) { s << (d.size == kAny ? "?" : std::to_string(d.size)); },
      "x");
  llvm::interleave(dims, n, [&](Dim d) { n << d.name; }, " x ");
  if (dims.empty())
    return "scalar";
  return sizes + " (" + names + ")";
}

bool dimsAgree(int64_t a, int64_t b) {
  return a == kAny || b == kAny || a == b;
}

/// Checks that `type` (the type of the value called `what`) has the expected
/// dims. Sizes given as kAny match anything.
LogicalResult checkShape(Operation *op, StringRef what, Type type,
                         ArrayRef<Dim> dims) {
  auto shaped = cast<ShapedType>(type);
  bool ok = shaped.getRank() == static_cast<int64_t>(dims.size());
  for (auto [i, d] : llvm::enumerate(dims))
    ok = ok && dimsAgree(shaped.getDimSize(i), d.size);
  if (ok)
    return success();
  return op->emitOpError() << what << " must have shape "
                           << formatExpected(dims) << ", got " << type;
}

LogicalResult checkShape(Operation *op, StringRef what, Value v,
                         ArrayRef<Dim> dims) {
  return checkShape(op, Twine("operand '" + what + "'").str(), v.getType(),
                    dims);
}

/// Weight-like operands must be statically shaped: the compiler sizes tiles
/// and buffers from them. Only the token dimension may be dynamic.
LogicalResult checkStatic(Operation *op, StringRef what, Value v) {
  if (!v || cast<ShapedType>(v.getType()).hasStaticShape())
    return success();
  return op->emitOpError() << "operand '" << what
                           << "' must have a static shape (only the token "
                              "dimension may be dynamic), got "
                           << v.getType();
}

int64_t dim(Value v, unsigned i) {
  return cast<ShapedType>(v.getType()).getDimSize(i);
}

LogicalResult checkRank(Operation *op, StringRef what, Value v, int64_t rank,
                        StringRef dims) {
  auto shaped = cast<ShapedType>(v.getType());
  if (shaped.getRank() == rank)
    return success();
  return op->emitOpError() << "operand '" << what << "' must be " << dims
                           << ", got " << v.getType();
}

/// The hidden size H of a token tensor `T x H`; must be static.
FailureOr<int64_t> getHidden(Operation *op, StringRef what, Value input) {
  if (failed(checkRank(op, what, input, 2, "a T x H tensor")))
    return failure();
  int64_t h = dim(input, 1);
  if (h == kAny)
    return op->emitOpError() << "operand '" << what
                             << "' must have a static hidden size, got "
                             << input.getType();
  return h;
}

LogicalResult checkSameElementType(Operation *op, Value ref, StringRef refName,
                                   ArrayRef<std::pair<StringRef, Value>> vals) {
  Type want = mlir::getElementTypeOrSelf(ref.getType());
  for (auto [name, v] : vals) {
    if (!v)
      continue;
    Type got = mlir::getElementTypeOrSelf(v.getType());
    if (got != want)
      return op->emitOpError()
             << "operand '" << name << "' has element type " << got
             << " but '" << refName << "' has " << want
             << "; expert weights must share one element type";
  }
  return success();
}

/// Verifies the weights of an FFN (one expert, or a stack of E experts when
/// `numExperts` is set). `prefix` is prepended to operand names (the layer op
/// calls its shared expert's weights `shared_gate`, ...).
LogicalResult verifyFFNWeights(Operation *op, StringRef prefix,
                               std::optional<int64_t> numExperts, int64_t h,
                               Activation act, Value gate, Value up,
                               Value down, Value gateBias, Value upBias,
                               Value downBias) {
  auto name = [&](StringRef n) { return (prefix + n).str(); };
  SmallVector<Dim> lead;
  if (numExperts)
    lead.push_back({*numExperts, "E"});
  auto with = [&](ArrayRef<Dim> rest) {
    SmallVector<Dim> d(lead);
    d.append(rest.begin(), rest.end());
    return d;
  };
  for (auto [n, v] : {std::pair<std::string, Value>{name("up"), up},
                      {name("down"), down},
                      {name("gate"), gate}})
    if (failed(checkStatic(op, n, v)))
      return failure();
  int64_t rank = numExperts ? 3 : 2;
  if (failed(checkRank(op, name("up"), up, rank,
                       numExperts ? "E x F x H" : "F x H")))
    return failure();
  int64_t f = dim(up, rank - 2);
  // An expert of width 0 computes nothing: an export mistake, not a layer.
  if (f == 0)
    return op->emitOpError() << "operand '" << name("up")
                             << "' has F = 0: an expert needs at least one "
                                "hidden unit";
  if (failed(checkShape(op, name("up"), up, with({{f, "F"}, {h, "H"}}))) ||
      failed(checkShape(op, name("down"), down, with({{h, "H"}, {f, "F"}}))))
    return failure();
  bool gated = isGatedActivation(act);
  if (gated && !gate)
    return op->emitOpError()
           << "activation '" << stringifyActivation(act)
           << "' is gated and needs operand '" << name("gate") << "'";
  if (!gated && gate)
    return op->emitOpError()
           << "activation '" << stringifyActivation(act)
           << "' has no gate projection; remove operand '" << name("gate")
           << "'";
  if (gate &&
      failed(checkShape(op, name("gate"), gate, with({{f, "F"}, {h, "H"}}))))
    return failure();
  if (gateBias && !gate)
    return op->emitOpError() << "operand '" << name("gate_bias")
                             << "' needs operand '" << name("gate") << "'";
  if (gateBias &&
      failed(checkShape(op, name("gate_bias"), gateBias, with({{f, "F"}}))))
    return failure();
  if (upBias && failed(checkShape(op, name("up_bias"), upBias, with({{f, "F"}}))))
    return failure();
  if (downBias &&
      failed(checkShape(op, name("down_bias"), downBias, with({{h, "H"}}))))
    return failure();
  return checkSameElementType(op, up, name("up"),
                              {{name("gate"), gate},
                               {name("down"), down},
                               {name("gate_bias"), gateBias},
                               {name("up_bias"), upBias},
                               {name("down_bias"), downBias}});
}

LogicalResult verifyClampParams(Operation *op, Activation act, double alpha,
                                double limit) {
  if (act != Activation::swiglu_clamped && (alpha != 1.702 || limit != 7.0))
    return op->emitOpError() << "'alpha' and 'limit' only apply to "
                                "activation 'swiglu_clamped'";
  if (!(limit > 0.0))
    return op->emitOpError() << "'limit' must be positive, got " << limit;
  return success();
}

/// Token tensors `T x K` of indices; returns K.
FailureOr<int64_t> verifyIndices(Operation *op, Value indices, int64_t t) {
  if (failed(checkRank(op, "indices", indices, 2, "a T x K tensor")))
    return failure();
  if (failed(checkShape(op, "indices", indices,
                        {{t, "T"}, {dim(indices, 1), "K"}})))
    return failure();
  return dim(indices, 1);
}

LogicalResult verifySpecial(Operation *op, ArrayAttr kinds, int64_t h,
                            Value constRouter, Value constVectors) {
  if (!kinds || kinds.empty())
    return op->emitOpError() << "needs at least one special expert kind";
  int64_t numConst = llvm::count_if(kinds, [](Attribute a) {
    return cast<SpecialKindAttr>(a).getValue() == SpecialKind::constant;
  });
  if (numConst == 0 && (constRouter || constVectors))
    return op->emitOpError() << "operands 'const_router'/'const_vectors' "
                                "need a 'constant' special expert";
  if (numConst > 0 && (!constRouter || !constVectors))
    return op->emitOpError() << "has " << numConst
                             << " 'constant' special experts and needs "
                                "operands 'const_router' and 'const_vectors'";
  if (constRouter &&
      (failed(checkStatic(op, "const_router", constRouter)) ||
       failed(checkShape(op, "const_router", constRouter,
                         {{numConst, "Nc"}, {2, "2"}, {h, "H"}}))))
    return failure();
  if (constVectors &&
      (failed(checkStatic(op, "const_vectors", constVectors)) ||
       failed(checkShape(op, "const_vectors", constVectors,
                         {{numConst, "Nc"}, {h, "H"}}))))
    return failure();
  return success();
}

/// An expert map (moe.remap_experts, moe.layer's expert_map): non-empty,
/// every entry in [0, numTargets), every target named at least once (a
/// merged expert nothing routes to would be dead weight).
LogicalResult verifyExpertMap(function_ref<InFlightDiagnostic()> emitError,
                              ArrayRef<int32_t> map, int64_t numTargets) {
  if (map.empty())
    return emitError() << "expert map is empty";
  if (numTargets < 1)
    return emitError() << "expert map needs at least one target expert, got "
                       << numTargets;
  llvm::SmallVector<bool> used(numTargets, false);
  for (auto [j, m] : llvm::enumerate(map)) {
    if (m < 0 || m >= numTargets)
      return emitError() << "expert map entry " << j << " is " << m
                         << ", outside [0, " << numTargets << ")";
    used[m] = true;
  }
  for (int64_t m = 0; m < numTargets; ++m)
    if (!used[m])
      return emitError() << "expert map names no router row for expert " << m
                         << " of " << numTargets;
  return success();
}

/// The optional selection bias of moe.route and moe.layer: one value per
/// router row (E), and none for sparsemixer, which selects on the logits.
LogicalResult checkSelectionBias(Operation *op, Value bias, RoutingAttr routing,
                                 int64_t e) {
  if (!bias)
    return success();
  if (failed(checkShape(op, "selection_bias", bias, {{e, "E"}})))
    return failure();
  if (routing.getSelection() == SelectionKind::sparsemixer)
    return op->emitOpError() << "sparsemixer routing takes no 'selection_bias'";
  return success();
}

LogicalResult checkOffset(Operation *op, int64_t offset) {
  if (offset < 0)
    return op->emitOpError() << "'expert_offset' must be non-negative, got "
                             << offset;
  return success();
}
} // namespace

//===----------------------------------------------------------------------===//
// LinearOp
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::verify() {
  Operation *op = getOperation();
  if (failed(checkRank(op, "input", getInput(), 2, "a T x I tensor")) ||
      failed(checkStatic(op, "weight", getWeight())) ||
      failed(checkRank(op, "weight", getWeight(), 2, "an O x I matrix")))
    return failure();
  int64_t t = dim(getInput(), 0), in = dim(getInput(), 1);
  int64_t out = dim(getWeight(), 0);
  if (failed(checkShape(op, "weight", getWeight(), {{out, "O"}, {in, "I"}})))
    return failure();
  if (getBias() && failed(checkShape(op, "bias", getBias(), {{out, "O"}})))
    return failure();
  return checkShape(op, "result", getType(), {{t, "T"}, {out, "O"}});
}

//===----------------------------------------------------------------------===//
// ProjectedRouterOp
//===----------------------------------------------------------------------===//

LogicalResult ProjectedRouterOp::verify() {
  Operation *op = getOperation();
  for (auto [n, v] : {std::pair<StringRef, Value>{"domain_embeddings",
                                                  getDomainEmbeddings()},
                      {"proj_w1", getProjW1()},
                      {"proj_w2", getProjW2()}})
    if (failed(checkStatic(op, n, v)) ||
        failed(checkRank(op, n, v, 2, "a matrix")))
      return failure();
  int64_t e = dim(getDomainEmbeddings(), 0), m = dim(getDomainEmbeddings(), 1);
  int64_t twoH = dim(getProjW1(), 0);
  if (twoH % 2 != 0)
    return emitOpError() << "operand 'proj_w1' must have an even number of "
                            "rows (2h' x m: SwiGLU gate and up halves), got "
                         << getProjW1().getType();
  if (failed(checkShape(op, "proj_w1", getProjW1(),
                        {{twoH, "2h'"}, {m, "m"}})))
    return failure();
  int64_t hOut = dim(getProjW2(), 0);
  if (failed(checkShape(op, "proj_w2", getProjW2(),
                        {{hOut, "H"}, {twoH / 2, "h'"}})))
    return failure();
  return checkShape(op, "result", getType(), {{e, "E"}, {hOut, "H"}});
}

//===----------------------------------------------------------------------===//
// RouteOp
//===----------------------------------------------------------------------===//

LogicalResult RouteOp::verify() {
  Operation *op = getOperation();
  if (failed(checkRank(op, "logits", getLogits(), 2, "a T x E tensor")))
    return failure();
  int64_t t = dim(getLogits(), 0), e = dim(getLogits(), 1);
  if (e == kAny)
    return emitOpError() << "operand 'logits' must have a static number of "
                            "experts, got "
                         << getLogits().getType();
  RoutingAttr routing = getRouting();
  if (failed(routing.verifyForExperts([&] { return emitOpError(); }, e)))
    return failure();
  int64_t k = routing.getK();
  if (failed(checkSelectionBias(op, getSelectionBias(), routing, e)))
    return failure();
  bool hier = routing.getSelection() == SelectionKind::hierarchical;
  if (hier && !getGroupLogits())
    return emitOpError() << "hierarchical routing needs operand "
                            "'group_logits' (T x n_group)";
  if (!hier && getGroupLogits())
    return emitOpError()
           << "operand 'group_logits' only applies to hierarchical routing";
  if (getGroupLogits() &&
      failed(checkShape(op, "group_logits", getGroupLogits(),
                        {{t, "T"}, {routing.getNGroup(), "n_group"}})))
    return failure();
  if (failed(checkShape(op, "result 'indices'", getIndices().getType(),
                        {{t, "T"}, {k, "K"}})) ||
      failed(checkShape(op, "result 'weights'", getWeights().getType(),
                        {{t, "T"}, {k, "K"}})))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// DispatchOp
//===----------------------------------------------------------------------===//

/// The dispatch attributes of moe.dispatch and moe.layer: a capacity factor
/// or a fixed expert capacity, only with capacity dispatch.
static LogicalResult
verifyCapacity(llvm::function_ref<InFlightDiagnostic()> emitError,
               bool capacity, double cf, std::optional<uint64_t> fixed) {
  if (capacity && !(cf > 0.0 && !std::isinf(cf)))
    return emitError() << "'capacity_factor' must be positive and finite, "
                          "got "
                       << cf;
  if (!capacity && cf != 1.0)
    return emitError() << "'capacity_factor' only applies to capacity "
                          "dispatch";
  if (!fixed)
    return success();
  if (!capacity)
    return emitError() << "'expert_capacity' only applies to capacity "
                          "dispatch";
  if (static_cast<int64_t>(*fixed) < 0)
    return emitError() << "'expert_capacity' must not be negative, got "
                       << static_cast<int64_t>(*fixed);
  if (cf != 1.0)
    return emitError() << "takes either 'expert_capacity' (a fixed count) "
                          "or 'capacity_factor', not both";
  return success();
}

LogicalResult DispatchOp::verify() {
  Operation *op = getOperation();
  auto numExperts = static_cast<int64_t>(getNumExperts());
  if (numExperts < 1)
    return emitOpError() << "'num_experts' must be at least 1, got "
                         << numExperts;
  if (failed(verifyCapacity(
          [&] { return emitOpError(); }, getMode() == DispatchMode::capacity,
          getCapacityFactor().convertToDouble(), getExpertCapacity())))
    return failure();
  if (failed(checkRank(op, "indices", getIndices(), 2, "a T x K tensor")))
    return failure();
  int64_t t = dim(getIndices(), 0), k = dim(getIndices(), 1);
  if (k != kAny && k > numExperts)
    return emitOpError() << "has K = " << k << " slots but only "
                         << numExperts << " experts";
  return checkShape(op, "weights", getWeights(), {{t, "T"}, {k, "K"}});
}

Value DispatchOp::buildCapacity(OpBuilder &b, Location loc, Value pairs) {
  Type i64 = b.getI64Type();
  if (std::optional<uint64_t> fixed = getExpertCapacity())
    return arith::ConstantOp::create(
        b, loc, b.getI64IntegerAttr(static_cast<int64_t>(*fixed)));
  Value tk = arith::SIToFPOp::create(
      b, loc, b.getF64Type(), arith::IndexCastOp::create(b, loc, i64, pairs));
  Value cap = arith::DivFOp::create(
      b, loc,
      arith::MulFOp::create(
          b, loc, tk,
          arith::ConstantOp::create(b, loc, getCapacityFactorAttr())),
      arith::ConstantOp::create(
          b, loc, b.getF64FloatAttr(static_cast<double>(getNumExperts()))));
  return arith::FPToSIOp::create(b, loc, i64,
                                 math::CeilOp::create(b, loc, cap));
}

//===----------------------------------------------------------------------===//
// RemapExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult RemapExpertsOp::verify() {
  Operation *op = getOperation();
  if (failed(checkRank(op, "indices", getIndices(), 2, "a T x K tensor")))
    return failure();
  return verifyExpertMap([&] { return emitOpError(); }, getMap(),
                         static_cast<int64_t>(getNumTargets()));
}

//===----------------------------------------------------------------------===//
// CombineOp
//===----------------------------------------------------------------------===//

LogicalResult CombineOp::verify() {
  Operation *op = getOperation();
  if (getSlots().empty() && getAddends().empty())
    return emitOpError() << "needs at least one 'slots' or 'addends' operand";
  if (getWeights() && getSlots().empty())
    return emitOpError() << "operand 'weights' needs 'slots' (it weights "
                            "their K slots)";
  auto resultTy = cast<ShapedType>(getType());
  if (resultTy.getRank() != 2 || resultTy.isDynamicDim(1))
    return emitOpError() << "result must be T x H with a static H, got "
                         << resultTy;
  int64_t t = resultTy.getDimSize(0), h = resultTy.getDimSize(1), k = kAny;
  if (getWeights()) {
    if (failed(checkRank(op, "weights", getWeights(), 2, "a T x K tensor")) ||
        failed(checkShape(op, "weights", getWeights(),
                          {{t, "T"}, {dim(getWeights(), 1), "K"}})))
      return failure();
    k = dim(getWeights(), 1);
  } else if (!getSlots().empty()) {
    if (failed(
            checkRank(op, "slots #0", getSlots()[0], 3, "a T x K x H tensor")))
      return failure();
    k = dim(getSlots()[0], 1);
  }
  for (auto [i, s] : llvm::enumerate(getSlots()))
    if (failed(checkShape(op, ("slots #" + Twine(i)).str(), s,
                          {{t, "T"}, {k, "K"}, {h, "H"}})))
      return failure();
  for (auto [i, a] : llvm::enumerate(getAddends()))
    if (failed(checkShape(op, ("addends #" + Twine(i)).str(), a,
                          {{t, "T"}, {h, "H"}})))
      return failure();
  if (getBias() && failed(checkShape(op, "bias", getBias(), {{h, "H"}})))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// ExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult ExpertsOp::verify() {
  Operation *op = getOperation();
  FailureOr<int64_t> h = getHidden(op, "input", getInput());
  if (failed(h))
    return failure();
  int64_t t = dim(getInput(), 0);
  FailureOr<int64_t> k = verifyIndices(op, getIndices(), t);
  if (failed(k) || failed(checkOffset(op, getExpertOffset())) ||
      failed(checkRank(op, "up", getUp(), 3, "an E x F x H tensor")))
    return failure();
  if (failed(verifyFFNWeights(op, "", getNumExperts(), *h, getActivation(),
                              getGate(), getUp(), getDown(), getGateBias(),
                              getUpBias(), getDownBias())) ||
      failed(checkSameElementType(op, getInput(), "input", {{"up", getUp()}})) ||
      failed(verifyClampParams(op, getActivation(),
                               getAlpha().convertToDouble(),
                               getLimit().convertToDouble())))
    return failure();
  if (getInputScale() && (failed(checkRank(op, "input_scale", getInputScale(),
                                           2, "a T x K tensor")) ||
                          failed(checkShape(op, "input_scale", getInputScale(),
                                            {{t, "T"}, {*k, "K"}}))))
    return failure();
  return checkShape(op, "result", getType(), {{t, "T"}, {*k, "K"}, {*h, "H"}});
}

//===----------------------------------------------------------------------===//
// LoRAExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult LoRAExpertsOp::verify() {
  Operation *op = getOperation();
  if (failed(checkRank(op, "input", getInput(), 2, "a T x In tensor")))
    return failure();
  int64_t t = dim(getInput(), 0), in = dim(getInput(), 1);
  FailureOr<int64_t> k = verifyIndices(op, getIndices(), t);
  if (failed(k) || failed(checkOffset(op, getExpertOffset())) ||
      failed(checkStatic(op, "lora_a", getLoraA())) ||
      failed(checkStatic(op, "lora_b", getLoraB())) ||
      failed(checkRank(op, "lora_a", getLoraA(), 3, "an E x r x In tensor")) ||
      failed(checkRank(op, "lora_b", getLoraB(), 3, "an E x Out x r tensor")))
    return failure();
  int64_t e = getNumExperts(), r = getRank(), out = dim(getLoraB(), 1);
  if (failed(checkShape(op, "lora_a", getLoraA(),
                        {{e, "E"}, {r, "r"}, {in, "In"}})))
    return failure();
  if (dim(getLoraB(), 2) != r)
    return emitOpError() << "LoRA ranks disagree: operand 'lora_a' has rank r = "
                         << r << " but 'lora_b' has " << dim(getLoraB(), 2)
                         << " (lora_b must be E x Out x r)";
  if (failed(checkShape(op, "lora_b", getLoraB(),
                        {{e, "E"}, {out, "Out"}, {r, "r"}})))
    return failure();
  double alpha = getAlpha().convertToDouble();
  if (!(alpha > 0.0) || std::isinf(alpha))
    return emitOpError() << "'alpha' must be positive and finite, got "
                         << alpha;
  return checkShape(op, "result", getType(), {{t, "T"}, {*k, "K"}, {out, "Out"}});
}

//===----------------------------------------------------------------------===//
// SpecialExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult SpecialExpertsOp::verify() {
  Operation *op = getOperation();
  FailureOr<int64_t> h = getHidden(op, "input", getInput());
  if (failed(h))
    return failure();
  int64_t t = dim(getInput(), 0);
  FailureOr<int64_t> k = verifyIndices(op, getIndices(), t);
  if (failed(k) || failed(checkOffset(op, getExpertOffset())) ||
      failed(verifySpecial(op, getKinds(), *h, getConstRouter(),
                           getConstVectors())))
    return failure();
  return checkShape(op, "result", getType(), {{t, "T"}, {*k, "K"}, {*h, "H"}});
}

//===----------------------------------------------------------------------===//
// FFNOp
//===----------------------------------------------------------------------===//

LogicalResult FFNOp::verify() {
  Operation *op = getOperation();
  FailureOr<int64_t> h = getHidden(op, "input", getInput());
  if (failed(h))
    return failure();
  if (failed(verifyFFNWeights(op, "", std::nullopt, *h, getActivation(),
                              getGate(), getUp(), getDown(), getGateBias(),
                              getUpBias(), getDownBias())) ||
      failed(verifyClampParams(op, getActivation(),
                               getAlpha().convertToDouble(),
                               getLimit().convertToDouble())))
    return failure();
  if (getGateWeight() && failed(checkShape(op, "gate_weight", getGateWeight(),
                                           {{1, "1"}, {*h, "H"}})))
    return failure();
  return checkShape(op, "result", getType(),
                    {{dim(getInput(), 0), "T"}, {*h, "H"}});
}

//===----------------------------------------------------------------------===//
// RMSNormOp
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::verify() {
  Operation *op = getOperation();
  FailureOr<int64_t> h = getHidden(op, "input", getInput());
  if (failed(h) ||
      failed(checkShape(op, "weight", getWeight(), {{*h, "H"}})))
    return failure();
  double eps = getEpsilon().convertToDouble();
  if (!(eps > 0.0))
    return emitOpError() << "'epsilon' must be positive, got " << eps;
  return success();
}

//===----------------------------------------------------------------------===//
// LayerOp
//===----------------------------------------------------------------------===//

int64_t LayerOp::getNumRoutedExperts() {
  if (getUp())
    return dim(getUp(), 0);
  if (getLoraA())
    return dim(getLoraA(), 0);
  return 0;
}

LogicalResult LayerOp::verify() {
  Operation *op = getOperation();
  FailureOr<int64_t> hOr = getHidden(op, "input", getInput());
  if (failed(hOr))
    return failure();
  int64_t h = *hOr, t = dim(getInput(), 0);
  RoutingAttr routing = getRouting();

  // Router: a stored matrix or the Nexus projection, not both.
  bool projected = getDomainEmbeddings() || getProjW1() || getProjW2();
  if (projected && !(getDomainEmbeddings() && getProjW1() && getProjW2()))
    return emitOpError() << "the projected router needs all of "
                            "'domain_embeddings', 'proj_w1' and 'proj_w2'";
  if (projected == static_cast<bool>(getRouter()))
    return emitOpError() << "needs exactly one router: operand 'router' (E x "
                            "H) or a projected router ('domain_embeddings', "
                            "'proj_w1', 'proj_w2')";
  if (getRouterBias() && !getRouter())
    return emitOpError() << "operand 'router_bias' needs operand 'router'";
  int64_t e;
  if (getRouter()) {
    if (failed(checkStatic(op, "router", getRouter())) ||
        failed(checkRank(op, "router", getRouter(), 2, "an E x H matrix")))
      return failure();
    e = dim(getRouter(), 0);
    if (failed(checkShape(op, "router", getRouter(), {{e, "E"}, {h, "H"}})))
      return failure();
    if (getRouterBias() &&
        failed(checkShape(op, "router_bias", getRouterBias(), {{e, "E"}})))
      return failure();
  } else {
    for (auto [n, v] : {std::pair<StringRef, Value>{"domain_embeddings",
                                                    getDomainEmbeddings()},
                        {"proj_w1", getProjW1()},
                        {"proj_w2", getProjW2()}})
      if (failed(checkStatic(op, n, v)) ||
          failed(checkRank(op, n, v, 2, "a matrix")))
        return failure();
    e = dim(getDomainEmbeddings(), 0);
    int64_t m = dim(getDomainEmbeddings(), 1), twoH = dim(getProjW1(), 0);
    if (twoH % 2 != 0)
      return emitOpError() << "operand 'proj_w1' must have an even number of "
                              "rows (2h' x m), got "
                           << getProjW1().getType();
    if (failed(checkShape(op, "proj_w1", getProjW1(),
                          {{twoH, "2h'"}, {m, "m"}})) ||
        failed(checkShape(op, "proj_w2", getProjW2(),
                          {{h, "H"}, {twoH / 2, "h'"}})))
      return failure();
  }

  // Routed experts: FFN or LoRA, then the special ones.
  bool ffn = getGate() || getUp() || getDown() || getGateBias() ||
             getUpBias() || getDownBias();
  bool lora = getLoraBase() || getLoraA() || getLoraB();
  if (ffn && lora)
    return emitOpError() << "routed experts are either FFN ('gate'/'up'/"
                            "'down') or LoRA ('lora_base'/'lora_a'/'lora_b'), "
                            "not both";
  if (ffn && !(getUp() && getDown()))
    return emitOpError() << "FFN experts need operands 'up' and 'down'";
  if (lora && !(getLoraBase() && getLoraA() && getLoraB()))
    return emitOpError() << "LoRA experts need operands 'lora_base', "
                            "'lora_a' and 'lora_b'";
  if (lora != getLoraAlpha().has_value())
    return emitOpError() << (lora ? "LoRA experts need attribute 'lora_alpha'"
                                  : "attribute 'lora_alpha' needs LoRA experts");
  int64_t routed = 0;
  if (ffn) {
    if (failed(checkRank(op, "up", getUp(), 3, "an E x F x H tensor")))
      return failure();
    routed = dim(getUp(), 0);
    if (failed(verifyFFNWeights(op, "", routed, h, getActivation(), getGate(),
                                getUp(), getDown(), getGateBias(),
                                getUpBias(), getDownBias())))
      return failure();
  }
  if (failed(verifyClampParams(op, getActivation(),
                               getAlpha().convertToDouble(),
                               getLimit().convertToDouble())))
    return failure();
  if (lora) {
    for (auto [n, v] : {std::pair<StringRef, Value>{"lora_base", getLoraBase()},
                        {"lora_a", getLoraA()},
                        {"lora_b", getLoraB()}})
      if (failed(checkStatic(op, n, v)))
        return failure();
    if (failed(checkShape(op, "lora_base", getLoraBase(), {{h, "H"}, {h, "H"}})) ||
        failed(checkRank(op, "lora_a", getLoraA(), 3, "an E x r x H tensor")))
      return failure();
    routed = dim(getLoraA(), 0);
    int64_t r = dim(getLoraA(), 1);
    if (failed(checkShape(op, "lora_a", getLoraA(),
                          {{routed, "E"}, {r, "r"}, {h, "H"}})) ||
        failed(checkRank(op, "lora_b", getLoraB(), 3, "an E x H x r tensor")))
      return failure();
    if (dim(getLoraB(), 2) != r)
      return emitOpError() << "LoRA ranks disagree: operand 'lora_a' has rank "
                              "r = "
                           << r << " but 'lora_b' has " << dim(getLoraB(), 2);
    if (failed(checkShape(op, "lora_b", getLoraB(),
                          {{routed, "E"}, {h, "H"}, {r, "r"}})))
      return failure();
    double alpha = getLoraAlpha()->convertToDouble();
    if (!(alpha > 0.0) || std::isinf(alpha))
      return emitOpError() << "'lora_alpha' must be positive and finite, got "
                           << alpha;
  }
  int64_t special = getNumSpecialExperts();
  if (getSpecialKinds() || getConstRouter() || getConstVectors()) {
    if (failed(verifySpecial(op, getSpecialKindsAttr(), h, getConstRouter(),
                             getConstVectors())))
      return failure();
  }
  if (routed + special == 0)
    return emitOpError() << "has no experts: give FFN, LoRA or special experts";
  if (getScaleInput() && (!ffn || special > 0))
    return emitOpError() << "'scale_input' scales the input of routed FFN "
                            "experts: it needs FFN experts and no "
                            "LoRA or special experts";
  int64_t routerRouted = routed;
  if (std::optional<ArrayRef<int32_t>> map = getExpertMap()) {
    if (routed == 0)
      return emitOpError() << "'expert_map' needs routed FFN or LoRA experts";
    if (failed(verifyExpertMap([&] { return emitOpError(); }, *map, routed)))
      return failure();
    routerRouted = static_cast<int64_t>(map->size());
    if (getDispatch() == DispatchMode::capacity &&
        routing.getK() > routed + special)
      return emitOpError() << "capacity dispatch over " << routed + special
                           << " merged experts cannot take k = "
                           << routing.getK() << " slots";
  }
  if (routerRouted + special != e)
    return emitOpError() << "router has E = " << e << " rows but the layer has "
                         << routerRouted << " routed + " << special
                         << " special experts = " << routerRouted + special
                         << (getExpertMap() ? " (routed: rows of 'expert_map')"
                                            : "");

  // Routing.
  if (failed(routing.verifyForExperts([&] { return emitOpError(); }, e)))
    return failure();
  if (failed(checkSelectionBias(op, getSelectionBias(), routing, e)))
    return failure();
  bool hier = routing.getSelection() == SelectionKind::hierarchical;
  if (hier && !getGroupRouter())
    return emitOpError() << "hierarchical routing needs operand "
                            "'group_router' (n_group x H)";
  if (!hier && getGroupRouter())
    return emitOpError()
           << "operand 'group_router' only applies to hierarchical routing";
  if (getGroupRouter() &&
      failed(checkShape(op, "group_router", getGroupRouter(),
                        {{routing.getNGroup(), "n_group"}, {h, "H"}})))
    return failure();

  // Shared expert.
  bool shared = getSharedGate() || getSharedUp() || getSharedDown() ||
                getSharedGateWeight();
  if (shared) {
    if (!(getSharedUp() && getSharedDown()))
      return emitOpError()
             << "the shared expert needs operands 'shared_up' and "
                "'shared_down'";
    if (failed(checkRank(op, "shared_up", getSharedUp(), 2, "an F x H matrix")) ||
        failed(verifyFFNWeights(op, "shared_", std::nullopt, h,
                                getSharedActivation(), getSharedGate(),
                                getSharedUp(), getSharedDown(), Value(),
                                Value(), Value())))
      return failure();
    if (getSharedActivation() == Activation::swiglu_clamped)
      return emitOpError() << "'shared_activation' swiglu_clamped is not "
                              "supported: shared experts take no biases";
    if (getSharedGateWeight() &&
        failed(checkShape(op, "shared_gate_weight", getSharedGateWeight(),
                          {{1, "1"}, {h, "H"}})))
      return failure();
  }
  if (getOutputBias() &&
      failed(checkShape(op, "output_bias", getOutputBias(), {{h, "H"}})))
    return failure();

  // Dispatch.
  bool capacity = getDispatch() == DispatchMode::capacity;
  if (failed(verifyCapacity([&] { return emitOpError(); }, capacity,
                            getCapacityFactor().convertToDouble(),
                            getExpertCapacity())))
    return failure();
  if (capacity != static_cast<bool>(getDropped()))
    return emitOpError() << (capacity ? "capacity dispatch needs a second "
                                        "result, the drop count tensor<i64>"
                                      : "the drop-count result needs "
                                        "capacity dispatch");
  return checkShape(op, "result", getOutput().getType(), {{t, "T"}, {h, "H"}});
}

//===----------------------------------------------------------------------===//
// CartesianOp
//===----------------------------------------------------------------------===//

LogicalResult CartesianOp::verifyRegions() {
  Operation *op = getOperation();
  FailureOr<int64_t> h = getHidden(op, "input", getInput());
  if (failed(h))
    return failure();
  Type ty = getInput().getType(); // == the result type (AllTypesMatch)
  if (getNormWeight() &&
      failed(checkShape(op, "norm_weight", getNormWeight(), {{*h, "H"}})))
    return failure();
  if (!(getEpsilon().convertToDouble() > 0.0))
    return emitOpError() << "'epsilon' must be positive";
  for (auto [name, region] :
       {std::pair<StringRef, Region *>{"first", &getFirst()},
        {"second", &getSecond()}}) {
    Block &block = region->front();
    if (block.empty())
      return emitOpError() << "region '" << name << "' is empty";
    if (block.getNumArguments() != 1 || block.getArgument(0).getType() != ty)
      return emitOpError() << "region '" << name
                           << "' must take one argument of type " << ty;
    auto yield = dyn_cast<YieldOp>(block.back());
    if (!yield)
      return emitOpError() << "region '" << name
                           << "' must end in 'moe.yield'";
    if (yield.getValue().getType() != ty)
      return yield.emitOpError() << "yields " << yield.getValue().getType()
                                 << " but the enclosing moe.cartesian "
                                    "needs "
                                 << ty;
  }
  return success();
}

#define GET_OP_CLASSES
#include "moe/Dialect/MoE/IR/MoEOps.cpp.inc"
