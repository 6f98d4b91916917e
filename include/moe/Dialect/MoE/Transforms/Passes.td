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
    * `moe.route` with the layer's routing attribute, then
      `moe.remap_experts` when the layer has an `expert_map` (merged
      experts);
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

//===----------------------------------------------------------------------===//
// Expert-set surgery (MOE_SEMANTICS.md §5)
//===----------------------------------------------------------------------===//

def MoEDropExperts : Pass<"moe-drop-experts"> {
  let summary = "Remove routed experts from every moe.layer (MC-Suite drop)";
  let description = [{
    Removes the routed experts listed by `experts` (ids in `[0, E)`) from
    every `moe.layer`, as §5 "Drop" defines it: each per-expert operand
    (`router` rows, `router_bias`, `selection_bias`, `domain_embeddings` rows
    of a projected router, FFN `gate`/`up`/`down` and their biases, LoRA
    `lora_a`/`lora_b`) keeps only the rows of the other experts, in order.
    Scoring then runs over the `E - r` experts left; routing `k` becomes
    `min(k, E - r)` (`E - r` for dense routing, and at most the experts
    reachable through `topk_group` groups). Shared experts, the LoRA base and
    the projected router's `proj_w1`/`proj_w2` are unchanged.

    The kept rows are taken with `tensor.extract_slice` (one per maximal run
    of kept experts) joined by `tensor.concat`, so the pass works on weights
    that are function arguments; weights that are dense constants are
    sliced at compile time into new constants.

    Rejected with an error at the layer: an id outside `[0, E)`, an id given
    twice, dropping every expert, an `n_group` (group-limited or
    hierarchical routing) that does not divide `E - r`, and layers with
    zero-computation (special) experts (not supported yet).

    Example: `moe-opt --moe-drop-experts=experts=1,3 layer.mlir` turns

    ```mlir
    %y = moe.layer %x : tensor<?x64xf32> router(%wr : tensor<4x64xf32>)
        up(%wu : tensor<4x128x64xf32>) down(%wd : tensor<4x64x128xf32>)
        {routing = #moe.routing<softmax, topk, k = 2>,
         activation = #moe.activation<gelu>} -> tensor<?x64xf32>
    ```

    into a layer over experts 0 and 2 of the original:

    ```mlir
    %r0 = tensor.extract_slice %wr[0, 0] [1, 64] [1, 1]
        : tensor<4x64xf32> to tensor<1x64xf32>
    %r2 = tensor.extract_slice %wr[2, 0] [1, 64] [1, 1]
        : tensor<4x64xf32> to tensor<1x64xf32>
    %wr2 = tensor.concat dim(0) %r0, %r2
        : (tensor<1x64xf32>, tensor<1x64xf32>) -> tensor<2x64xf32>
    // ... the same for %wu and %wd
    %y = moe.layer %x : tensor<?x64xf32> router(%wr2 : tensor<2x64xf32>)
        up(%wu2 : tensor<2x128x64xf32>) down(%wd2 : tensor<2x64x128xf32>)
        {routing = #moe.routing<softmax, topk, k = 2>,
         activation = #moe.activation<gelu>} -> tensor<?x64xf32>
    ```
  }];
  let options = [
    ListOption<"experts", "experts", "int64_t",
               "Ids of the routed experts to remove (0-based, E excluded)">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
}

def MoEAddExpert : Pass<"moe-add-expert"> {
  let summary = "Append one routed expert to every moe.layer, its weights "
                "taken from new function arguments (Nexus add)";
  let description = [{
    Adds expert `E` (ids `0..E-1` are kept; zero-computation experts move up
    by one) to every `moe.layer`, as §5 "Add" defines it. The new expert's
    weights become new arguments appended to the enclosing `func.func`, one
    per per-expert operand the layer has, in the layer's operand order, each
    shaped like one row of that operand (leading dimension 1):

    * `router` `1 x H` (its router row), `router_bias` `1`,
      `selection_bias` `1`, or for a projected router (`router=projected`)
      `domain_embeddings` `1 x m`: its router row is then `P(d_new)`
      through the layer's learned projection (§1.7);
    * FFN experts: `gate` `1 x F x H` (gated activations), `up` `1 x F x H`,
      `down` `1 x H x F`, `gate_bias` `1 x F`, `up_bias` `1 x F`,
      `down_bias` `1 x H`; LoRA experts: `lora_a` `1 x r x H`, `lora_b`
      `1 x H x r`.

    They are joined to the layer's operands with `tensor.concat` and the
    function type changes accordingly; everything else is unchanged. Dense
    routing (and hierarchical routing over all experts) gets `k = E + 1`.
    `router=row` on a projected-router layer first computes the stored
    router with `moe.projected_router` (see `moe-fold-projected-router`)
    and appends the new row to it. Rejected with an error: `router=projected`
    on a layer with a stored router, an `n_group` that does not divide
    `E + 1`, and functions that are called (their signature changes).

    Example: `moe-opt --moe-add-expert layer.mlir` turns

    ```mlir
    func.func @f(%x: tensor<?x64xf32>, %wr: tensor<4x64xf32>,
                 %wu: tensor<4x128x64xf32>, %wd: tensor<4x64x128xf32>)
        -> tensor<?x64xf32> {
      %y = moe.layer %x : tensor<?x64xf32> router(%wr : tensor<4x64xf32>)
          up(%wu : tensor<4x128x64xf32>) down(%wd : tensor<4x64x128xf32>)
          {routing = #moe.routing<softmax, topk, k = 2>,
           activation = #moe.activation<gelu>} -> tensor<?x64xf32>
      return %y : tensor<?x64xf32>
    }
    ```

    into

    ```mlir
    func.func @f(%x: tensor<?x64xf32>, %wr: tensor<4x64xf32>,
                 %wu: tensor<4x128x64xf32>, %wd: tensor<4x64x128xf32>,
                 %new_router_row: tensor<1x64xf32>,
                 %new_up: tensor<1x128x64xf32>, %new_down: tensor<1x64x128xf32>)
        -> tensor<?x64xf32> {
      %wr5 = tensor.concat dim(0) %wr, %new_router_row
          : (tensor<4x64xf32>, tensor<1x64xf32>) -> tensor<5x64xf32>
      // ... the same for up and down
      %y = moe.layer %x : tensor<?x64xf32> router(%wr5 : tensor<5x64xf32>)
          up(%wu5 : tensor<5x128x64xf32>) down(%wd5 : tensor<5x64x128xf32>)
          {routing = #moe.routing<softmax, topk, k = 2>,
           activation = #moe.activation<gelu>} -> tensor<?x64xf32>
      return %y : tensor<?x64xf32>
    }
    ```
  }];
  let options = [
    Option<"router", "router", "std::string", /*default=*/"\"auto\"",
           "How the new expert is routed: 'row' (a router row), 'projected' "
           "(a domain embedding through the projected router) or 'auto' "
           "(whichever the layer has)">
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
}

def MoEMergeExperts : Pass<"moe-merge-experts"> {
  let summary = "Merge groups of routed experts into one each (M-SMoE merge)";
  let description = [{
    Merges the routed FFN experts of every `moe.layer` as §5 "Merge" defines
    it. `groups` lists the groups, each as expert ids joined by `+`; experts
    in no group stay as they are. Each group becomes one expert whose
    weights (`gate`, `up`, `down` and their biases) are the
    usage-frequency-weighted mean of the members',
    `W = sum_i f_i W_i / sum_i f_i`, with `f` from `frequencies` (one value
    per expert), or from the `routed_counts` of layer `calib-layer` in a
    moe-calib/1 file (`calib`, written by `moe-analyze --calibrate`), or
    uniform when neither is given (also for a group nobody was routed to).
    Merged experts are numbered by their smallest member.

    The router is unchanged: it keeps one row per original expert, and the
    layer's `expert_map` points row `j` at its merged expert, so the
    probabilities of a group's rows add (two slots of a token that land on
    one merged expert are both evaluated and weighted). Routing `k` is
    unchanged. Weights that are dense constants are merged at compile time
    (in double, rounded once); function arguments through a `linalg.generic`
    in f32, rounded once.

    Rejected with an error at the layer: an id outside `[0, E)` or listed
    twice, LoRA experts (averaging the factors is not averaging the
    updates), a layer merged already, `frequencies` of the wrong length or
    negative, capacity dispatch with fewer merged experts than `k`.
    Choosing the groups (CKA or weight cosine similarity, a threshold or a
    target count) is `moe-analyze --merge-plan`'s job; it prints these
    options.

    Example: `moe-opt --moe-merge-experts="groups=0+2 frequencies=3,1,1,1"`
    turns a 4-expert layer into

    ```mlir
    %g = linalg.generic ... // 0.75 * up[0] + 0.25 * up[2]
    %wu3 = tensor.concat dim(0) %g, %up1, %up3
        : (...) -> tensor<3x128x64xf32>
    %y = moe.layer %x : tensor<?x64xf32> router(%wr : tensor<4x64xf32>)
        up(%wu3 : tensor<3x128x64xf32>) down(%wd3 : tensor<3x64x128xf32>)
        {routing = #moe.routing<softmax, topk, k = 2>,
         activation = #moe.activation<gelu>,
         expert_map = array<i32: 0, 1, 0, 2>} -> tensor<?x64xf32>
    ```
  }];
  let options = [
    ListOption<"groups", "groups", "std::string",
               "Groups of expert ids to merge, each joined by '+' "
               "(e.g. 0+3,1+2+5)">,
    ListOption<"frequencies", "frequencies", "double",
               "Usage frequency per routed expert (weights of the mean)">,
    Option<"calib", "calib", "std::string", /*default=*/"\"\"",
           "moe-calib/1 file whose routed_counts give the frequencies">,
    Option<"calibLayer", "calib-layer", "int64_t", /*default=*/"0",
           "Decoder layer index of the calibration file to read">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::tensor::TensorDialect"];
}

def MoEFoldProjectedRouter : Pass<"moe-fold-projected-router"> {
  let summary = "Replace a moe.layer's projected router by a stored router";
  let description = [{
    The Nexus projected router (§1.7) depends on no input: `W_r = P(D)`.
    This pass replaces a `moe.layer`'s `domain_embeddings`, `proj_w1` and
    `proj_w2` operands by a `router` operand `E x H` (f32) computed by
    `moe.projected_router`; the layer then routes with a plain router. When
    all three operands are dense constants the router is evaluated at
    compile time (in double precision, rounded once to f32) and becomes an
    `arith.constant`. Layers without a projected router are left alone.

    Example: `moe-opt --moe-fold-projected-router layer.mlir` turns

    ```mlir
    %y = moe.layer %x : tensor<?x64xf32>
        domain_embeddings(%d : tensor<4x8xf32>) proj_w1(%w1 : tensor<12x8xf32>)
        proj_w2(%w2 : tensor<64x6xf32>)
        up(%wu : tensor<4x128x64xf32>) down(%wd : tensor<4x64x128xf32>)
        {routing = #moe.routing<softmax, topk, k = 1>,
         activation = #moe.activation<gelu>} -> tensor<?x64xf32>
    ```

    into

    ```mlir
    %wr = moe.projected_router %d, %w1, %w2
        : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<64x6xf32>)
          -> tensor<4x64xf32>
    %y = moe.layer %x : tensor<?x64xf32> router(%wr : tensor<4x64xf32>)
        up(%wu : tensor<4x128x64xf32>) down(%wd : tensor<4x64x128xf32>)
        {routing = #moe.routing<softmax, topk, k = 1>,
         activation = #moe.activation<gelu>} -> tensor<?x64xf32>
    ```
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect",
                           "::mlir::arith::ArithDialect"];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
