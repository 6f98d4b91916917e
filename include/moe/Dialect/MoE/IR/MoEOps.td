//===- MoEOps.td - moe dialect operations ------------------*- tablegen -*-===//
//
// Operations of the `moe` dialect. Each op's numerical meaning is the section
// of shared/MOE_SEMANTICS.md named in its description.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEOPS_TD
#define MOE_DIALECT_MOE_IR_MOEOPS_TD

include "moe/Dialect/MoE/IR/MoEDialect.td"
include "moe/Dialect/MoE/IR/MoEAttrs.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/IR/OpBase.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

def MoE_FloatTensor : RankedTensorOf<[F32, F16, BF16]>;
def MoE_F32Tensor : RankedTensorOf<[F32]>;
def MoE_IndexTensor : RankedTensorOf<[I32]>;
def MoE_CountTensor : 0DTensorOf<[I64]>;

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

def MoE_LinearOp : MoE_Op<"linear", [Pure]> {
  let summary = "a linear layer `x * W^T (+ b)` accumulated in f32";
  let description = [{
    Computes `result = input * weight^T (+ bias)` with `input : T x I`,
    `weight : O x I`, `bias : O` and `result : T x O`. Products are
    accumulated in f32 whatever the element types; the result's element type
    says how the sum is rounded. Router logits (§1.1) are a `moe.linear` with
    an f32 result.

    ```mlir
    %logits = moe.linear %x, %w_router
        : (tensor<?x4096xbf16>, tensor<8x4096xbf16>) -> tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$input, MoE_FloatTensor:$weight,
                       Optional<MoE_FloatTensor>:$bias);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ProjectedRouterOp : MoE_Op<"projected_router", [Pure]> {
  let summary = "router matrix projected from domain embeddings (Nexus)";
  let description = [{
    Computes the router matrix `W_r = P(D)` of §1.7 from the per-expert
    domain embeddings `D : E x m`, with `P(d) = W_2 * SwiGLU(W_1 * d)`:
    `w1 : 2h' x m` (the first `h'` rows are the gate, the last `h'` the up
    projection), `w2 : H x h'`. The result is `E x H` in f32. It depends on no
    input, so it is folded to a constant once its operands are constants.

    ```mlir
    %wr = moe.projected_router %domains, %w1, %w2
        : (tensor<4x16xf32>, tensor<64x16xf32>, tensor<128x32xf32>)
          -> tensor<4x128xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$domain_embeddings,
                       MoE_FloatTensor:$proj_w1, MoE_FloatTensor:$proj_w2);
  let results = (outs MoE_F32Tensor:$router);
  let assemblyFormat = [{
    $domain_embeddings `,` $proj_w1 `,` $proj_w2 attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_RouteOp : MoE_Op<"route", [Pure, AttrSizedOperandSegments]> {
  let summary = "turn router logits into per-token expert indices and weights";
  let description = [{
    Applies scoring, selection bias, selection, normalisation and scaling
    (§1.2–§1.6) as described by the `routing` attribute. `logits : T x E`
    (f32). Results: `indices : T x K` (i32; `-1` marks an empty slot) and
    `weights : T x K` (f32; `0` in empty slots).

    * `selection_bias : E` (DeepSeek-V3 `e_score_correction_bias`) is added
      to the scores only to choose experts.
    * `group_logits : T x n_group` are required by, and only allowed with,
      `hierarchical` selection (AT-MoE): they are the group router's logits.

    ```mlir
    %idx, %w = moe.route %logits bias %b : tensor<256xf32>
        {routing = #moe.routing<sigmoid, group_limited_topk, k = 8,
                   n_group = 8, topk_group = 4, group_score = top2_sum,
                   renormalize, scaling_factor = 2.5>}
        : tensor<?x256xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$logits,
                       Optional<MoE_F32Tensor>:$group_logits,
                       Optional<MoE_FloatTensor>:$selection_bias,
                       MoE_RoutingAttr:$routing);
  let results = (outs MoE_IndexTensor:$indices, MoE_F32Tensor:$weights);
  let assemblyFormat = [{
    $logits (`groups` $group_logits^ `:` type($group_logits))?
    (`bias` $selection_bias^ `:` type($selection_bias))?
    attr-dict `:` type($logits) `->` type($indices) `,` type($weights)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

//===----------------------------------------------------------------------===//
// Dispatch and combine
//===----------------------------------------------------------------------===//

def MoE_DispatchOp : MoE_Op<"dispatch", [Pure,
    AllTypesMatch<["indices", "admitted_indices"]>,
    AllTypesMatch<["weights", "admitted_weights"]>]> {
  let summary = "admit (token, slot) pairs to experts, dropless or by capacity";
  let description = [{
    §2. In `dropless` mode every pair is admitted. In `capacity` mode each
    expert takes at most `C = ceil(capacity_factor * T * K / num_experts)`
    pairs, admitted in order of (slot, token); a dropped pair gets index `-1`
    and weight `0` in the results. `dropped` counts the dropped pairs.
    With `expert_capacity = C` the capacity is that fixed count per call,
    whatever T (Switch Transformers' `expert_capacity`, counted per
    sequence: one call is one sequence); `capacity_factor` is then unused
    and must be left at its default.

    ```mlir
    %i2, %w2, %n = moe.dispatch %idx, %w
        {num_experts = 8 : i64, mode = #moe.dispatch<capacity>,
         capacity_factor = 1.25 : f64}
        : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
    ```
  }];
  let arguments = (ins MoE_IndexTensor:$indices, MoE_F32Tensor:$weights,
                       I64Attr:$num_experts,
                       DefaultValuedAttr<MoE_DispatchModeAttr,
                           "DispatchMode::dropless">:$mode,
                       DefaultValuedAttr<F64Attr, "1.0">:$capacity_factor,
                       OptionalAttr<I64Attr>:$expert_capacity);
  let results = (outs MoE_IndexTensor:$admitted_indices,
                      MoE_F32Tensor:$admitted_weights,
                      MoE_CountTensor:$dropped);
  let assemblyFormat = [{
    $indices `,` $weights attr-dict `:` type($indices) `,` type($weights)
    `->` type($dropped)
  }];
  let extraClassDeclaration = [{
    /// The capacity C (i64) for `pairs` = T * K (index): the fixed
    /// `expert_capacity`, or ceil(capacity_factor * pairs / num_experts) in
    /// f64. Built at `b` by every lowering (CPU scan, GPU admission kernel),
    /// so that they admit the same pairs.
    ::mlir::Value buildCapacity(::mlir::OpBuilder &b, ::mlir::Location loc,
                                ::mlir::Value pairs);
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

def MoE_RemapExpertsOp : MoE_Op<"remap_experts", [Pure,
    AllTypesMatch<["indices", "result"]>]> {
  let summary = "map router expert ids onto merged experts (M-SMoE merge)";
  let description = [{
    §5 "Merge": after a merge the router keeps its `N = size(map)` rows for
    the routed experts, and each row points at the merged expert
    `map[j]` in `[0, num_targets)`. For every slot:
    `result = map[j]` when `0 <= j < N`, `j - N + num_targets` when
    `j >= N` (zero-computation experts keep their order after the routed
    ones), and `-1` stays `-1` (an empty or dropped slot). Two slots of one
    token may then name the same merged expert: their weights add in the
    combine, as the merged experts' probabilities do.

    ```mlir
    %j = moe.remap_experts %i {map = array<i32: 0, 0, 1, 2>, num_targets = 3 : i64}
        : tensor<?x2xi32>
    ```
  }];
  let arguments = (ins MoE_IndexTensor:$indices, DenseI32ArrayAttr:$map,
                       I64Attr:$num_targets);
  let results = (outs MoE_IndexTensor:$result);
  let assemblyFormat = [{
    $indices attr-dict `:` type($indices)
  }];
  let hasVerifier = 1;
}

def MoE_CombineOp : MoE_Op<"combine", [Pure, AttrSizedOperandSegments]> {
  let summary = "weighted sum of per-slot expert outputs plus dense terms";
  let description = [{
    §2: `result[t] = sum_k weights[t,k] * (sum_s slots_s[t,k]) + sum_a addends_a[t]`
    with `weights : T x K`, each `slots_s : T x K x H` (f32, e.g. from
    `moe.experts` and `moe.special_experts`) and each `addends_a : T x H`
    (e.g. shared experts, the LoRA base, a residual). `weights` needs
    `slots`; slots without `weights` are summed with weight 1 (the routing
    weight then scaled the experts' input: `moe.experts`' `input_scale`).
    An optional `bias : H` is added to every token's row (JetMoE's bias
    after the mixture). Sums are formed in f32 and rounded once to the
    result's element type.

    ```mlir
    %y = moe.combine weights(%w : tensor<?x2xf32>)
         slots(%s : tensor<?x2x64xf32>) addends(%shared : tensor<?x64xf32>)
         : tensor<?x64xbf16>
    ```
  }];
  let arguments = (ins Optional<MoE_F32Tensor>:$weights,
                       Variadic<MoE_F32Tensor>:$slots,
                       Variadic<MoE_FloatTensor>:$addends,
                       Optional<MoE_FloatTensor>:$bias);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    (`weights` `(` $weights^ `:` type($weights) `)`)?
    (`slots` `(` $slots^ `:` type($slots) `)`)?
    (`addends` `(` $addends^ `:` type($addends) `)`)?
    (`bias` `(` $bias^ `:` type($bias) `)`)?
    attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    /// An operand whose dim 0 is T (the verifier asks for one).
    Value getTokenSource() {
      if (Value w = getWeights())
        return w;
      return getSlots().empty() ? getAddends()[0] : getSlots()[0];
    }
  }];
}

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

def MoE_ExpertsOp : MoE_Op<"experts", [Pure, AttrSizedOperandSegments]> {
  let summary = "grouped FFN experts evaluated for every (token, slot)";
  let description = [{
    §3. For each token `t` and slot `k` whose index `j = indices[t,k]` lies in
    `[expert_offset, expert_offset + E)`, computes
    `slots[t,k] = Expert_{j - expert_offset}(input[t])`; other slots are 0.
    Weights are stacked per expert: `up : E x F x H`, `down : E x H x F`,
    `gate : E x F x H` (required by the gated activations `swiglu`, `geglu`,
    `swiglu_clamped`, forbidden otherwise), optional biases
    `gate_bias`, `up_bias : E x F`, `down_bias : E x H`. `alpha` and `limit`
    are the `swiglu_clamped` (gpt-oss) constants. The result
    `T x K x H` is f32.

    With `input_scale` (`T x K`, f32; Llama 4's routing weights) the slot is
    `Expert_{j - expert_offset}(input_scale[t,k] * input[t])`: the weight
    scales the expert's input, not its output. Since the expert's first
    projections are linear, lowerings may equally scale the gate and up sums
    before their biases and the activation (the GPU kernels do); the CPU
    lowering rounds the scaled input to the input's element type, as
    transformers does.

    ```mlir
    %s = moe.experts %x, %idx gate(%wg : tensor<8x256x64xbf16>)
         up(%wu : tensor<8x256x64xbf16>) down(%wd : tensor<8x64x256xbf16>)
         {activation = #moe.activation<swiglu>}
         : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$input, MoE_IndexTensor:$indices,
                       Optional<MoE_FloatTensor>:$gate,
                       MoE_FloatTensor:$up, MoE_FloatTensor:$down,
                       Optional<MoE_FloatTensor>:$gate_bias,
                       Optional<MoE_FloatTensor>:$up_bias,
                       Optional<MoE_FloatTensor>:$down_bias,
                       Optional<MoE_F32Tensor>:$input_scale,
                       MoE_ActivationAttr:$activation,
                       DefaultValuedAttr<F64Attr, "1.702">:$alpha,
                       DefaultValuedAttr<F64Attr, "7.0">:$limit,
                       DefaultValuedAttr<I64Attr, "0">:$expert_offset);
  let results = (outs MoE_F32Tensor:$slots);
  let assemblyFormat = [{
    $input `,` $indices
    (`gate` `(` $gate^ `:` type($gate) `)`)?
    `up` `(` $up `:` type($up) `)` `down` `(` $down `:` type($down) `)`
    (`gate_bias` `(` $gate_bias^ `:` type($gate_bias) `)`)?
    (`up_bias` `(` $up_bias^ `:` type($up_bias) `)`)?
    (`down_bias` `(` $down_bias^ `:` type($down_bias) `)`)?
    (`input_scale` `(` $input_scale^ `:` type($input_scale) `)`)?
    attr-dict `:` type($input) `,` type($indices) `->` type($slots)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts() { return getUp().getType().getDimSize(0); }
  }];
}

def MoE_LoRAExpertsOp : MoE_Op<"lora_experts", [Pure]> {
  let summary = "LoRA experts over a shared frozen base (AT-MoE)";
  let description = [{
    §3. Each slot whose index `j` lies in `[expert_offset, expert_offset + E)`
    gets the low-rank delta `(alpha / r) * B_j * (A_j * input[t])` with
    `lora_a : E x r x In` and `lora_b : E x Out x r`; other slots are 0. The
    shared base `W_0` is applied once per token, outside this op (a
    `moe.linear` added by `moe.combine`). Result `T x K x Out`, f32.

    ```mlir
    %d = moe.lora_experts %x, %idx a(%A : tensor<4x8x64xf32>)
         b(%B : tensor<4x64x8xf32>) {alpha = 16.0 : f64}
         : tensor<?x64xf32>, tensor<?x4xi32> -> tensor<?x4x64xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$input, MoE_IndexTensor:$indices,
                       MoE_FloatTensor:$lora_a, MoE_FloatTensor:$lora_b,
                       F64Attr:$alpha,
                       DefaultValuedAttr<I64Attr, "0">:$expert_offset);
  let results = (outs MoE_F32Tensor:$slots);
  let assemblyFormat = [{
    $input `,` $indices `a` `(` $lora_a `:` type($lora_a) `)`
    `b` `(` $lora_b `:` type($lora_b) `)`
    attr-dict `:` type($input) `,` type($indices) `->` type($slots)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts() { return getLoraA().getType().getDimSize(0); }
    int64_t getRank() { return getLoraA().getType().getDimSize(1); }
  }];
}

def MoE_SpecialExpertsOp
    : MoE_Op<"special_experts", [Pure, AttrSizedOperandSegments]> {
  let summary = "zero-computation experts (MoE++): zero, copy, constant";
  let description = [{
    §3. Expert `expert_offset + i` has kind `kinds[i]`: `zero` returns 0,
    `copy` returns the token, `constant` returns `a1 * x + a2 * v` with
    `[a1, a2] = softmax(const_router[c] * x)` and `v = const_vectors[c]`,
    where `c` counts the constant experts before it. `const_router :
    Nc x 2 x H` and `const_vectors : Nc x H` are present exactly when some
    kind is `constant`. Slots routed elsewhere are 0. Result `T x K x H`, f32.

    ```mlir
    %z = moe.special_experts %x, %idx
         {kinds = [#moe.special<zero>, #moe.special<copy>],
          expert_offset = 8 : i64}
         : tensor<?x64xf32>, tensor<?x2xi32> -> tensor<?x2x64xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$input, MoE_IndexTensor:$indices,
                       Optional<MoE_FloatTensor>:$const_router,
                       Optional<MoE_FloatTensor>:$const_vectors,
                       MoE_SpecialKindArrayAttr:$kinds,
                       DefaultValuedAttr<I64Attr, "0">:$expert_offset);
  let results = (outs MoE_F32Tensor:$slots);
  let assemblyFormat = [{
    $input `,` $indices
    (`const_router` `(` $const_router^ `:` type($const_router) `)`)?
    (`const_vectors` `(` $const_vectors^ `:` type($const_vectors) `)`)?
    attr-dict `:` type($input) `,` type($indices) `->` type($slots)
  }];
  let hasVerifier = 1;
}

def MoE_FFNOp : MoE_Op<"ffn", [Pure, AttrSizedOperandSegments]> {
  let summary = "a dense FFN: shared expert or dense layer";
  let description = [{
    §3 applied to every token: `result[t] = g_t * FFN(input[t])` with the
    same weights and activations as one `moe.experts` expert (`up : F x H`,
    `down : H x F`, `gate : F x H` for gated activations, optional biases).
    `g_t = 1`, or `g_t = sigmoid(input[t] * gate_weight^T)` when the
    `gate_weight : 1 x H` operand (Qwen2-MoE `shared_expert_gate`) is given.

    ```mlir
    %sh = moe.ffn %x gate(%g : tensor<512x64xbf16>) up(%u : tensor<512x64xbf16>)
          down(%d : tensor<64x512xbf16>) gate_weight(%sg : tensor<1x64xbf16>)
          {activation = #moe.activation<swiglu>}
          : tensor<?x64xbf16> -> tensor<?x64xbf16>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$input,
                       Optional<MoE_FloatTensor>:$gate,
                       MoE_FloatTensor:$up, MoE_FloatTensor:$down,
                       Optional<MoE_FloatTensor>:$gate_bias,
                       Optional<MoE_FloatTensor>:$up_bias,
                       Optional<MoE_FloatTensor>:$down_bias,
                       Optional<MoE_FloatTensor>:$gate_weight,
                       MoE_ActivationAttr:$activation,
                       DefaultValuedAttr<F64Attr, "1.702">:$alpha,
                       DefaultValuedAttr<F64Attr, "7.0">:$limit);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input
    (`gate` `(` $gate^ `:` type($gate) `)`)?
    `up` `(` $up `:` type($up) `)` `down` `(` $down `:` type($down) `)`
    (`gate_bias` `(` $gate_bias^ `:` type($gate_bias) `)`)?
    (`up_bias` `(` $up_bias^ `:` type($up_bias) `)`)?
    (`down_bias` `(` $down_bias^ `:` type($down_bias) `)`)?
    (`gate_weight` `(` $gate_weight^ `:` type($gate_weight) `)`)?
    attr-dict `:` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_RMSNormOp : MoE_Op<"rms_norm", [Pure,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "RMSNorm over the hidden dimension";
  let description = [{
    `result[t] = input[t] / sqrt(mean(input[t]^2) + epsilon) * weight`, with
    `weight : H`; the mean is accumulated in f32. Used between the two
    sub-expert layers of a Cartesian layer (§4).

    ```mlir
    %n = moe.rms_norm %h, %g {epsilon = 1.0e-6 : f64}
         : tensor<?x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$input, MoE_FloatTensor:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$epsilon);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` type($input) `,` type($weight)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Whole layers
//===----------------------------------------------------------------------===//

def MoE_LayerOp : MoE_Op<"layer", [Pure, AttrSizedOperandSegments]> {
  let summary = "a complete MoE block: router, experts, shared experts";
  let description = [{
    One MoE layer, `output = MoE(input)`, as a single op so that passes see the
    whole block; `moe-decompose` rewrites it into `moe.linear`/
    `moe.projected_router`, `moe.route`, `moe.dispatch`, the expert ops and
    `moe.combine`. Operand groups (all after `input` optional, each written
    with its keyword):

    * router: `router` (`E x H`) and `router_bias` (`E`), or the projected
      router `domain_embeddings`, `proj_w1`, `proj_w2` (Nexus); for
      `hierarchical` routing `group_router` (`n_group x H`); `selection_bias`
      (`E`);
    * routed experts: FFN `gate`/`up`/`down` (+ `gate_bias`/`up_bias`/
      `down_bias`), or LoRA experts `lora_base` (`H x H`), `lora_a`,
      `lora_b`;
    * zero-computation experts listed by `special_kinds` (they take the
      expert ids after the FFN / LoRA experts) with `const_router`,
      `const_vectors` for `constant` ones;
    * a shared expert `shared_gate`/`shared_up`/`shared_down` with
      `shared_activation`, and its optional sigmoid gate `shared_gate_weight`;
    * an `output_bias` (`H`) added to every token's output once, after the
      mixture (JetMoE's `JetMoeMoE.bias`).

    `E` (the router's rows) is the number of routed FFN/LoRA experts plus
    the special experts. After a merge (`moe-merge-experts`, §5) the layer
    carries `expert_map`: the router keeps one row per original routed
    expert (`size(expert_map)` of them, plus the special experts) and row
    `j` selects the merged expert `expert_map[j]`, whose weights are row
    `expert_map[j]` of the expert operands (see `moe.remap_experts`). With
    `dispatch = #moe.dispatch<capacity>` the op has a second result, the
    number of dropped (token, slot) pairs; the capacity is
    `ceil(capacity_factor * T * K / E)`, or the fixed `expert_capacity`
    when given (as `moe.dispatch`).

    `scale_input` (Llama 4): the routing weight `w_tk` multiplies the routed
    FFN expert's input instead of its output, `y_t = sum_k
    Expert_{j_tk}(w_tk x_t) + shared(x_t)`. It needs FFN experts and
    excludes LoRA and zero-computation experts.

    ```mlir
    %y = moe.layer %x : tensor<?x64xbf16>
         router(%wr : tensor<8x64xbf16>)
         gate(%wg : tensor<8x256x64xbf16>) up(%wu : tensor<8x256x64xbf16>)
         down(%wd : tensor<8x64x256xbf16>)
         {routing = #moe.routing<softmax, topk, k = 2, renormalize>,
          activation = #moe.activation<swiglu>}
         -> tensor<?x64xbf16>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    Optional<MoE_FloatTensor>:$router,
    Optional<MoE_FloatTensor>:$router_bias,
    Optional<MoE_FloatTensor>:$selection_bias,
    Optional<MoE_FloatTensor>:$group_router,
    Optional<MoE_FloatTensor>:$domain_embeddings,
    Optional<MoE_FloatTensor>:$proj_w1,
    Optional<MoE_FloatTensor>:$proj_w2,
    Optional<MoE_FloatTensor>:$gate,
    Optional<MoE_FloatTensor>:$up,
    Optional<MoE_FloatTensor>:$down,
    Optional<MoE_FloatTensor>:$gate_bias,
    Optional<MoE_FloatTensor>:$up_bias,
    Optional<MoE_FloatTensor>:$down_bias,
    Optional<MoE_FloatTensor>:$lora_base,
    Optional<MoE_FloatTensor>:$lora_a,
    Optional<MoE_FloatTensor>:$lora_b,
    Optional<MoE_FloatTensor>:$const_router,
    Optional<MoE_FloatTensor>:$const_vectors,
    Optional<MoE_FloatTensor>:$shared_gate,
    Optional<MoE_FloatTensor>:$shared_up,
    Optional<MoE_FloatTensor>:$shared_down,
    Optional<MoE_FloatTensor>:$shared_gate_weight,
    Optional<MoE_FloatTensor>:$output_bias,
    MoE_RoutingAttr:$routing,
    DefaultValuedAttr<MoE_ActivationAttr, "Activation::swiglu">:$activation,
    DefaultValuedAttr<F64Attr, "1.702">:$alpha,
    DefaultValuedAttr<F64Attr, "7.0">:$limit,
    DefaultValuedAttr<MoE_DispatchModeAttr, "DispatchMode::dropless">:$dispatch,
    DefaultValuedAttr<F64Attr, "1.0">:$capacity_factor,
    OptionalAttr<I64Attr>:$expert_capacity,
    OptionalAttr<F64Attr>:$lora_alpha,
    OptionalAttr<MoE_SpecialKindArrayAttr>:$special_kinds,
    DefaultValuedAttr<MoE_ActivationAttr, "Activation::swiglu">:$shared_activation,
    OptionalAttr<DenseI32ArrayAttr>:$expert_map,
    UnitAttr:$scale_input
  );
  let results = (outs MoE_FloatTensor:$output,
                      Optional<MoE_CountTensor>:$dropped);
  let assemblyFormat = [{
    $input `:` type($input)
    (`router` `(` $router^ `:` type($router) `)`)?
    (`router_bias` `(` $router_bias^ `:` type($router_bias) `)`)?
    (`selection_bias` `(` $selection_bias^ `:` type($selection_bias) `)`)?
    (`group_router` `(` $group_router^ `:` type($group_router) `)`)?
    (`domain_embeddings` `(` $domain_embeddings^ `:` type($domain_embeddings) `)`)?
    (`proj_w1` `(` $proj_w1^ `:` type($proj_w1) `)`)?
    (`proj_w2` `(` $proj_w2^ `:` type($proj_w2) `)`)?
    (`gate` `(` $gate^ `:` type($gate) `)`)?
    (`up` `(` $up^ `:` type($up) `)`)?
    (`down` `(` $down^ `:` type($down) `)`)?
    (`gate_bias` `(` $gate_bias^ `:` type($gate_bias) `)`)?
    (`up_bias` `(` $up_bias^ `:` type($up_bias) `)`)?
    (`down_bias` `(` $down_bias^ `:` type($down_bias) `)`)?
    (`lora_base` `(` $lora_base^ `:` type($lora_base) `)`)?
    (`lora_a` `(` $lora_a^ `:` type($lora_a) `)`)?
    (`lora_b` `(` $lora_b^ `:` type($lora_b) `)`)?
    (`const_router` `(` $const_router^ `:` type($const_router) `)`)?
    (`const_vectors` `(` $const_vectors^ `:` type($const_vectors) `)`)?
    (`shared_gate` `(` $shared_gate^ `:` type($shared_gate) `)`)?
    (`shared_up` `(` $shared_up^ `:` type($shared_up) `)`)?
    (`shared_down` `(` $shared_down^ `:` type($shared_down) `)`)?
    (`shared_gate_weight` `(` $shared_gate_weight^ `:` type($shared_gate_weight) `)`)?
    (`output_bias` `(` $output_bias^ `:` type($output_bias) `)`)?
    attr-dict `->` type($output) (`,` type($dropped)^)?
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    /// Routed FFN or LoRA experts (not counting special experts).
    int64_t getNumRoutedExperts();
    /// Router rows of the routed experts: `size(expert_map)` after a merge,
    /// else getNumRoutedExperts().
    int64_t getNumRouterRoutedRows() {
      if (auto map = getExpertMap())
        return static_cast<int64_t>(map->size());
      return getNumRoutedExperts();
    }
    /// Zero-computation experts listed by `special_kinds`.
    int64_t getNumSpecialExperts() {
      return getSpecialKinds() ? getSpecialKinds()->size() : 0;
    }
    bool hasFFNExperts() { return static_cast<bool>(getUp()); }
    bool hasLoRAExperts() { return static_cast<bool>(getLoraA()); }
    bool hasSharedExpert() { return static_cast<bool>(getSharedUp()); }
    bool hasProjectedRouter() { return static_cast<bool>(getDomainEmbeddings()); }
  }];
}

def MoE_CartesianOp : MoE_Op<"cartesian", [RecursiveMemoryEffects,
    AllTypesMatch<["input", "output"]>]> {
  let summary = "CartesianMoE: two chained sub-expert layers";
  let description = [{
    §4 (our reading): `h = input + A(input)`, `y = B(norm(h))`, where `A` is
    the first region, `B` the second and `norm` an RMSNorm with
    `norm_weight : H` when that operand is given (identity otherwise). Each
    region takes one block argument of the input's type and ends in
    `moe.yield` of a value of that type; a global shared expert belongs in the
    second region's `moe.layer` (it then sees `norm(h)`).

    ```mlir
    %y = moe.cartesian %x norm(%g : tensor<64xf32>) : tensor<?x64xf32>
    first {
    ^bb0(%a: tensor<?x64xf32>):
      %ya = moe.layer %a : tensor<?x64xf32> router(...) ... -> tensor<?x64xf32>
      moe.yield %ya : tensor<?x64xf32>
    } second {
    ^bb0(%b: tensor<?x64xf32>):
      %yb = moe.layer %b : tensor<?x64xf32> router(...) ... -> tensor<?x64xf32>
      moe.yield %yb : tensor<?x64xf32>
    }
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$input,
                       Optional<MoE_FloatTensor>:$norm_weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$epsilon);
  let results = (outs MoE_FloatTensor:$output);
  let regions = (region SizedRegion<1>:$first, SizedRegion<1>:$second);
  let assemblyFormat = [{
    $input (`norm` `(` $norm_weight^ `:` type($norm_weight) `)`)?
    attr-dict `:` type($input) `first` $first `second` $second
  }];
  let hasRegionVerifier = 1;
}

def MoE_YieldOp : MoE_Op<"yield", [Pure, Terminator, ReturnLike,
                                   HasParent<"CartesianOp">]> {
  let summary = "ends a region of a moe.cartesian with the sub-layer's output";
  let description = [{
    ```mlir
    moe.yield %y : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
}

#endif // MOE_DIALECT_MOE_IR_MOEOPS_TD
