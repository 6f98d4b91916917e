//===- MoEDialect.td - moe dialect definition --------------*- tablegen -*-===//
//
// The `moe` dialect states what a Mixture-of-Experts layer computes: routing,
// dispatch, expert compute and combine. Its numerical contract is
// shared/MOE_SEMANTICS.md.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEDIALECT_TD
#define MOE_DIALECT_MOE_IR_MOEDIALECT_TD

include "mlir/IR/OpBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Mixture-of-Experts layers: routing, dispatch, experts, combine";
  let description = [{
    The `moe` dialect describes Mixture-of-Experts (MoE) layers at the level
    their authors write them down. A layer can be carried whole (`moe.layer`,
    `moe.cartesian`) or decomposed into its stages:

    * `moe.linear` / `moe.projected_router` produce router logits (the
      projected router is the Nexus design, where router rows are computed
      from per-expert domain embeddings);
    * `moe.route` turns logits into `(indices, weights)` of shape `T x K`
      (softmax / sigmoid / raw scoring; top-k, group-limited top-k, top-p,
      top-k-then-softmax, dense and AT-MoE hierarchical selection);
    * `moe.dispatch` applies dropless or capacity-limited admission and
      reports the number of dropped (token, slot) pairs;
    * `moe.experts`, `moe.lora_experts`, `moe.special_experts` compute the
      per-slot outputs of routed experts (`T x K x H`);
    * `moe.combine` forms `y_t = sum_k w_tk * slot_tk` plus always-on terms
      such as shared experts (`moe.ffn`).

    Tensors are f32, f16 or bf16; the token dimension `T` may be dynamic.
    Weights follow the PyTorch convention `W : out x in`. All ops are pure
    tensor ops with value semantics.
  }];
  let useDefaultAttributePrinterParser = 1;
  // Canonicalisation and decomposition create arith/tensor ops.
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
  let hasConstantMaterializer = 0;
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOE_DIALECT_MOE_IR_MOEDIALECT_TD
