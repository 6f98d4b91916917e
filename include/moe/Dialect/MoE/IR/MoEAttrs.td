//===- MoEAttrs.td - moe dialect enums and attributes ------*- tablegen -*-===//

#ifndef MOE_DIALECT_MOE_IR_MOEATTRS_TD
#define MOE_DIALECT_MOE_IR_MOEATTRS_TD

include "moe/Dialect/MoE/IR/MoEDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

// Enum attributes print as `#moe.<name><value>`, e.g. `#moe.activation<swiglu>`.
class MoE_EnumAttr<EnumAttrInfo info, string name>
    : EnumAttr<MoE_Dialect, info, name> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_ScoringSoftmax : I32EnumAttrCase<"softmax", 0>;
def MoE_ScoringSigmoid : I32EnumAttrCase<"sigmoid", 1>;
def MoE_ScoringNone    : I32EnumAttrCase<"none", 2>;
def MoE_ScoringFunc : I32EnumAttr<"ScoringFunc",
    "function turning router logits into scores",
    [MoE_ScoringSoftmax, MoE_ScoringSigmoid, MoE_ScoringNone]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_ScoringFuncAttr : MoE_EnumAttr<MoE_ScoringFunc, "scoring">;

def MoE_SelTopK        : I32EnumAttrCase<"topk", 0>;
def MoE_SelGroupTopK   : I32EnumAttrCase<"group_limited_topk", 1>;
def MoE_SelTopP        : I32EnumAttrCase<"top_p", 2>;
def MoE_SelTopKSoftmax : I32EnumAttrCase<"topk_then_softmax", 3>;
def MoE_SelDense       : I32EnumAttrCase<"dense", 4>;
def MoE_SelHier        : I32EnumAttrCase<"hierarchical", 5>;
def MoE_SelSparseMixer : I32EnumAttrCase<"sparsemixer", 6>;
def MoE_SelectionKind : I32EnumAttr<"SelectionKind",
    "how experts are selected from scores",
    [MoE_SelTopK, MoE_SelGroupTopK, MoE_SelTopP, MoE_SelTopKSoftmax,
     MoE_SelDense, MoE_SelHier, MoE_SelSparseMixer]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_SelectionKindAttr
    : MoE_EnumAttr<MoE_SelectionKind, "selection">;

def MoE_GroupMax     : I32EnumAttrCase<"max", 0>;
def MoE_GroupTop2Sum : I32EnumAttrCase<"top2_sum", 1>;
def MoE_GroupScore : I32EnumAttr<"GroupScore",
    "score of an expert group in group-limited top-k",
    [MoE_GroupMax, MoE_GroupTop2Sum]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_GroupScoreAttr : MoE_EnumAttr<MoE_GroupScore, "group_score">;

def MoE_ActSwiGLU        : I32EnumAttrCase<"swiglu", 0>;
def MoE_ActGeGLU         : I32EnumAttrCase<"geglu", 1>;
def MoE_ActGelu          : I32EnumAttrCase<"gelu", 2>;
def MoE_ActGeluTanh      : I32EnumAttrCase<"gelu_tanh", 3>;
def MoE_ActRelu          : I32EnumAttrCase<"relu", 4>;
def MoE_ActRelu2         : I32EnumAttrCase<"relu2", 5>;
def MoE_ActSwiGLUClamped : I32EnumAttrCase<"swiglu_clamped", 6>;
def MoE_Activation : I32EnumAttr<"Activation",
    "the activation (and gating) of an FFN expert",
    [MoE_ActSwiGLU, MoE_ActGeGLU, MoE_ActGelu, MoE_ActGeluTanh, MoE_ActRelu,
     MoE_ActRelu2, MoE_ActSwiGLUClamped]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_ActivationAttr : MoE_EnumAttr<MoE_Activation, "activation">;

def MoE_DispatchDropless : I32EnumAttrCase<"dropless", 0>;
def MoE_DispatchCapacity : I32EnumAttrCase<"capacity", 1>;
def MoE_DispatchMode : I32EnumAttr<"DispatchMode",
    "how (token, slot) pairs are admitted to experts",
    [MoE_DispatchDropless, MoE_DispatchCapacity]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_DispatchModeAttr : MoE_EnumAttr<MoE_DispatchMode, "dispatch">;

def MoE_SpecialZero     : I32EnumAttrCase<"zero", 0>;
def MoE_SpecialCopy     : I32EnumAttrCase<"copy", 1>;
def MoE_SpecialConstant : I32EnumAttrCase<"constant", 2>;
def MoE_SpecialKind : I32EnumAttr<"SpecialKind",
    "a zero-computation expert (MoE++)",
    [MoE_SpecialZero, MoE_SpecialCopy, MoE_SpecialConstant]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_SpecialKindAttr : MoE_EnumAttr<MoE_SpecialKind, "special">;
def MoE_SpecialKindArrayAttr
    : TypedArrayAttrBase<MoE_SpecialKindAttr, "array of special expert kinds">;

//===----------------------------------------------------------------------===//
// RoutingAttr
//===----------------------------------------------------------------------===//

def MoE_RoutingAttr : AttrDef<MoE_Dialect, "Routing"> {
  let mnemonic = "routing";
  let summary = "complete description of an MoE router's selection rule";
  let description = [{
    Everything that turns router logits into `(indices, weights)`, see
    MOE_SEMANTICS.md §1. Parameters after the selection kind are written as
    `key = value` pairs or bare flags and may be omitted when they take their
    default:

    | key | default | meaning |
    |---|---|---|
    | `k` | required | slots per token (upper bound for `top_p`; `E` for `dense`) |
    | `n_group` | 1 | expert groups (group-limited top-k, hierarchical) |
    | `topk_group` | `n_group` | groups kept |
    | `group_score` | `max` | `max` (DeepSeek-V2) or `top2_sum` (DeepSeek-V3) |
    | `top_p` | 1.0 | cumulative probability threshold, in (0, 1] |
    | `renormalize` | absent | divide the K weights by their sum |
    | `scaling_factor` | 1.0 | multiply the weights after normalisation |
    | `tau_group`, `tau_expert` | 1.0 | hierarchical routing temperatures |
    | `jitter_eps` | 0.01 | `sparsemixer` mask threshold (always printed) |

    `sparsemixer` (PhiMoE's inference routing; an extension of the contract,
    see docs/dialect.md) takes raw logits (scoring `none`). Round `i` of `k`
    picks the largest logit `m` among the experts not yet picked; expert `j`
    is masked when `(m - z_j) / max(|z_j|, m) > 2 * jitter_eps`, and the
    round's weight is the softmax, over the unmasked experts not picked in
    earlier rounds, at the winner: `1 / sum exp(z_j - m)`. The weights are
    not renormalised (unless `renormalize` is given).

    Example (DeepSeek-V3):

    ```mlir
    #moe.routing<sigmoid, group_limited_topk, k = 8, n_group = 8,
                 topk_group = 4, group_score = top2_sum, renormalize,
                 scaling_factor = 2.5>
    ```
  }];
  let parameters = (ins
    "ScoringFunc":$scoring,
    "SelectionKind":$selection,
    "int64_t":$k,
    "int64_t":$nGroup,
    "int64_t":$topkGroup,
    "GroupScore":$groupScore,
    "::llvm::APFloat":$topP,
    "bool":$renormalize,
    "::llvm::APFloat":$scalingFactor,
    "::llvm::APFloat":$tauGroup,
    "::llvm::APFloat":$tauExpert,
    "::llvm::APFloat":$jitterEps
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The number of slots per token the selection produces.
    int64_t getNumSlots() const { return getK(); }
    double getTopPValue() const { return getTopP().convertToDouble(); }
    double getScalingFactorValue() const {
      return getScalingFactor().convertToDouble();
    }
    double getJitterEpsValue() const {
      return getJitterEps().convertToDouble();
    }
    /// Checks the rules that depend on the number of experts `numExperts`
    /// (K <= E, n_group divides E, ...). Reports through `emitError`.
    ::llvm::LogicalResult
    verifyForExperts(::llvm::function_ref<::mlir::InFlightDiagnostic()>
                         emitError,
                     int64_t numExperts) const;
  }];
}

#endif // MOE_DIALECT_MOE_IR_MOEATTRS_TD
