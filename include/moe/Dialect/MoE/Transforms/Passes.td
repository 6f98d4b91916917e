//===- Passes.td - moe dialect transformation passes -------*- tablegen -*-===//

#ifndef MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
#define MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoEDecompose : Pass<"moe-decompose"> {
  let summary = "Decompose whole MoE layers into routing, dispatch, expert "
                "and combine ops";
  let description = [{
    Rewrites every `moe.layer` into its stages:

    * router logits: `moe.linear` (or `moe.projected_router` + `moe.linear`
      for the Nexus projected router; a second `moe.linear` for the group
      router of hierarchical routing);
    * `moe.route` with the layer's routing attribute;
    * `moe.dispatch` when the layer uses capacity dispatch (its drop count
      replaces the layer's second result);
    * `moe.experts` / `moe.lora_experts` (+ a `moe.linear` for the shared
      LoRA base) / `moe.special_experts` (ids after the routed experts);
    * `moe.ffn` for the shared expert (f32 output, so the combine rounds
      once);
    * `moe.combine` producing the layer's result.

    Every `moe.cartesian` is inlined as `h = input + first(input)`
    (a `moe.combine` of two addends), `n = moe.rms_norm(h)` when it has a
    norm weight, and `second(n)`.

    Example: `moe-opt --moe-decompose layer.mlir`.
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect",
                           "::mlir::tensor::TensorDialect"];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
