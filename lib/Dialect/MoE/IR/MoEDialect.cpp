//===- MoEDialect.cpp - moe dialect registration and attributes -*- C++ -*-===//

#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::moe;

#include "moe/Dialect/MoE/IR/MoEDialect.cpp.inc"
#include "moe/Dialect/MoE/IR/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/Dialect/MoE/IR/MoEAttrs.cpp.inc"

void MoEDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "moe/Dialect/MoE/IR/MoEAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "moe/Dialect/MoE/IR/MoEOps.cpp.inc"
      >();
}

bool mlir::moe::isGatedActivation(Activation act) {
  return act == Activation::swiglu || act == Activation::geglu ||
         act == Activation::swiglu_clamped;
}

//===----------------------------------------------------------------------===//
// RoutingAttr
//===----------------------------------------------------------------------===//
//
// Written as `<scoring, selection, key = value, ..., flag>`: keys at their
// default are not printed, so the common cases stay short, e.g.
// `#moe.routing<softmax, topk, k = 2, renormalize>`.

static APFloat f64(double v) { return APFloat(v); }

Attribute RoutingAttr::parse(AsmParser &parser, Type) {
  MLIRContext *ctx = parser.getContext();
  SMLoc loc = parser.getCurrentLocation();
  StringRef scoringKw, selectionKw;
  if (parser.parseLess() || parser.parseKeyword(&scoringKw) ||
      parser.parseComma() || parser.parseKeyword(&selectionKw))
    return {};
  std::optional<ScoringFunc> scoring = symbolizeScoringFunc(scoringKw);
  if (!scoring) {
    parser.emitError(loc, "unknown scoring function '")
        << scoringKw << "' (expected softmax, sigmoid or none)";
    return {};
  }
  std::optional<SelectionKind> selection = symbolizeSelectionKind(selectionKw);
  if (!selection) {
    parser.emitError(loc, "unknown selection kind '")
        << selectionKw
        << "' (expected topk, group_limited_topk, top_p, topk_then_softmax, "
           "dense, hierarchical or sparsemixer)";
    return {};
  }

  std::optional<int64_t> k;
  int64_t nGroup = 1;
  std::optional<int64_t> topkGroup;
  GroupScore groupScore = GroupScore::max;
  double topP = 1.0, scaling = 1.0, tauGroup = 1.0, tauExpert = 1.0;
  // PhiMoE's router_jitter_noise default; no other selection takes one.
  double jitterEps = *selection == SelectionKind::sparsemixer ? 0.01 : 0.0;
  bool renormalize = false;

  while (succeeded(parser.parseOptionalComma())) {
    SMLoc keyLoc = parser.getCurrentLocation();
    StringRef key;
    if (parser.parseKeyword(&key))
      return {};
    if (key == "renormalize") {
      renormalize = true;
      continue;
    }
    if (parser.parseEqual())
      return {};
    auto parseInt = [&](int64_t &out) { return parser.parseInteger(out); };
    auto parseDouble = [&](double &out) { return parser.parseFloat(out); };
    if (key == "k") {
      int64_t v;
      if (parseInt(v))
        return {};
      k = v;
    } else if (key == "n_group") {
      if (parseInt(nGroup))
        return {};
    } else if (key == "topk_group") {
      int64_t v;
      if (parseInt(v))
        return {};
      topkGroup = v;
    } else if (key == "group_score") {
      StringRef kw;
      SMLoc kwLoc = parser.getCurrentLocation();
      if (parser.parseKeyword(&kw))
        return {};
      std::optional<GroupScore> gs = symbolizeGroupScore(kw);
      if (!gs) {
        parser.emitError(kwLoc, "unknown group_score '")
            << kw << "' (expected max or top2_sum)";
        return {};
      }
      groupScore = *gs;
    } else if (key == "top_p") {
      if (parseDouble(topP))
        return {};
    } else if (key == "scaling_factor") {
      if (parseDouble(scaling))
        return {};
    } else if (key == "tau_group") {
      if (parseDouble(tauGroup))
        return {};
    } else if (key == "tau_expert") {
      if (parseDouble(tauExpert))
        return {};
    } else if (key == "jitter_eps") {
      if (parseDouble(jitterEps))
        return {};
    } else {
      parser.emitError(keyLoc, "unknown routing parameter '") << key << "'";
      return {};
    }
  }
  if (parser.parseGreater())
    return {};
  if (!k) {
    parser.emitError(loc, "routing needs 'k = <slots per token>'");
    return {};
  }
  return parser.getChecked<RoutingAttr>(
      loc, ctx, *scoring, *selection, *k, nGroup, topkGroup.value_or(nGroup),
      groupScore, f64(topP), renormalize, f64(scaling), f64(tauGroup),
      f64(tauExpert), f64(jitterEps));
}

void RoutingAttr::print(AsmPrinter &printer) const {
  printer << '<' << stringifyScoringFunc(getScoring()) << ", "
          << stringifySelectionKind(getSelection()) << ", k = " << getK();
  if (getNGroup() != 1)
    printer << ", n_group = " << getNGroup();
  if (getTopkGroup() != getNGroup())
    printer << ", topk_group = " << getTopkGroup();
  if (getGroupScore() != GroupScore::max)
    printer << ", group_score = " << stringifyGroupScore(getGroupScore());
  auto printFloat = [&](StringRef key, const APFloat &v) {
    if (v.convertToDouble() == 1.0)
      return;
    printer << ", " << key << " = ";
    printer.printFloat(v);
  };
  printFloat("top_p", getTopP());
  if (getRenormalize())
    printer << ", renormalize";
  printFloat("scaling_factor", getScalingFactor());
  printFloat("tau_group", getTauGroup());
  printFloat("tau_expert", getTauExpert());
  if (getSelection() == SelectionKind::sparsemixer) {
    printer << ", jitter_eps = ";
    printer.printFloat(getJitterEps());
  }
  printer << '>';
}

LogicalResult RoutingAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                  ScoringFunc scoring, SelectionKind selection,
                                  int64_t k, int64_t nGroup, int64_t topkGroup,
                                  GroupScore groupScore, APFloat topP,
                                  bool renormalize, APFloat scalingFactor,
                                  APFloat tauGroup, APFloat tauExpert,
                                  APFloat jitterEps) {
  if (k < 1)
    return emitError() << "routing k must be at least 1, got " << k;
  if (nGroup < 1)
    return emitError() << "routing n_group must be at least 1, got " << nGroup;
  if (topkGroup < 1 || topkGroup > nGroup)
    return emitError() << "routing topk_group must be in [1, n_group = "
                       << nGroup << "], got " << topkGroup;
  bool grouped = selection == SelectionKind::group_limited_topk ||
                 selection == SelectionKind::hierarchical;
  if (!grouped && (nGroup != 1 || topkGroup != 1))
    return emitError() << "routing n_group/topk_group only apply to "
                          "group_limited_topk and hierarchical selection";
  if (groupScore != GroupScore::max &&
      selection != SelectionKind::group_limited_topk)
    return emitError()
           << "routing group_score only applies to group_limited_topk";
  double p = topP.convertToDouble();
  if (!(p > 0.0 && p <= 1.0))
    return emitError() << "routing top_p must be in (0, 1], got " << p;
  if (p != 1.0 && selection != SelectionKind::top_p)
    return emitError() << "routing top_p only applies to top_p selection";
  double s = scalingFactor.convertToDouble();
  if (!(s > 0.0) || std::isinf(s))
    return emitError() << "routing scaling_factor must be positive and "
                          "finite, got "
                       << s;
  for (auto [name, tau] :
       {std::pair<StringRef, APFloat>{"tau_group", tauGroup},
        std::pair<StringRef, APFloat>{"tau_expert", tauExpert}}) {
    double t = tau.convertToDouble();
    if (!(t > 0.0) || std::isinf(t))
      return emitError() << "routing " << name
                         << " must be positive and finite, got " << t;
    if (t != 1.0 && selection != SelectionKind::hierarchical)
      return emitError() << "routing " << name
                         << " only applies to hierarchical selection";
  }
  // Selection kinds that define their own scoring.
  if (selection == SelectionKind::topk_then_softmax &&
      scoring != ScoringFunc::none)
    return emitError() << "topk_then_softmax selects on raw logits and "
                          "needs scoring 'none', got '"
                       << stringifyScoringFunc(scoring) << "'";
  double eps = jitterEps.convertToDouble();
  if (selection == SelectionKind::sparsemixer) {
    if (!(eps >= 0.0) || std::isinf(eps))
      return emitError() << "routing jitter_eps must be non-negative and "
                            "finite, got "
                         << eps;
    if (scoring != ScoringFunc::none)
      return emitError() << "sparsemixer selects on raw logits and needs "
                            "scoring 'none', got '"
                         << stringifyScoringFunc(scoring) << "'";
  } else if (eps != 0.0) {
    return emitError() << "routing jitter_eps only applies to sparsemixer "
                          "selection";
  }
  if ((selection == SelectionKind::top_p ||
       selection == SelectionKind::hierarchical) &&
      scoring != ScoringFunc::softmax)
    return emitError() << stringifySelectionKind(selection)
                       << " selection needs scoring 'softmax', got '"
                       << stringifyScoringFunc(scoring) << "'";
  if (selection == SelectionKind::top_p && renormalize)
    return emitError() << "top_p selection keeps raw probabilities and "
                          "cannot renormalize";
  return success();
}

LogicalResult RoutingAttr::verifyForExperts(
    function_ref<InFlightDiagnostic()> emitError, int64_t numExperts) const {
  int64_t k = getK();
  if (k > numExperts)
    return emitError() << "routing k = " << k
                       << " exceeds the number of experts E = " << numExperts;
  if (getSelection() == SelectionKind::dense && k != numExperts)
    return emitError() << "dense routing needs k = E = " << numExperts
                       << ", got k = " << k;
  if (numExperts % getNGroup() != 0)
    return emitError() << "routing n_group = " << getNGroup()
                       << " does not divide the number of experts E = "
                       << numExperts;
  int64_t reachable = getTopkGroup() * (numExperts / getNGroup());
  // Hierarchical routing with k = E lists every expert in id order, those of
  // dropped groups as empty slots, so it may exceed the reachable experts.
  bool hierDense = getSelection() == SelectionKind::hierarchical &&
                   k == numExperts;
  if (getNGroup() != 1 && k > reachable && !hierDense)
    return emitError() << "routing k = " << k << " exceeds the "
                       << reachable << " experts in topk_group = "
                       << getTopkGroup() << " groups";
  if (getSelection() == SelectionKind::group_limited_topk &&
      getGroupScore() == GroupScore::top2_sum && numExperts / getNGroup() < 2)
    return emitError() << "group_score top2_sum needs at least 2 experts per "
                          "group, got "
                       << numExperts / getNGroup();
  return success();
}
