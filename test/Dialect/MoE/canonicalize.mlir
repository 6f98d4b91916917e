// RUN: moe-opt %s --canonicalize --split-input-file | FileCheck %s

// K == E: top-k selects every expert, so the route is dense and the
// selection bias (which only chooses) is gone.
// CHECK-LABEL: func.func @route_all_experts_is_dense
// CHECK: moe.route %{{.+}} {routing = #moe.routing<softmax, dense, k = 4, renormalize>}
// CHECK-NOT: bias
func.func @route_all_experts_is_dense(%x: tensor<?x16xf32>, %l: tensor<?x4xf32>, %b: tensor<4xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %i, %w = moe.route %l bias %b : tensor<4xf32> {routing = #moe.routing<softmax, topk, k = 4, renormalize>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x4xi32> -> tensor<?x4x16xf32>
  %y = moe.combine weights(%w : tensor<?x4xf32>) slots(%s : tensor<?x4x16xf32>) : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// top-k-then-softmax over all E logits is softmax scoring.
// CHECK-LABEL: func.func @topk_then_softmax_all_experts
// CHECK: moe.route %{{.+}} {routing = #moe.routing<softmax, dense, k = 4>}
func.func @topk_then_softmax_all_experts(%x: tensor<?x16xf32>, %l: tensor<?x4xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %i, %w = moe.route %l {routing = #moe.routing<none, topk_then_softmax, k = 4>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {activation = #moe.activation<gelu>} : tensor<?x16xf32>, tensor<?x4xi32> -> tensor<?x4x16xf32>
  %y = moe.combine weights(%w : tensor<?x4xf32>) slots(%s : tensor<?x4x16xf32>) : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Group-limited top-k keeping every group and every expert is dense too.
// CHECK-LABEL: func.func @group_limited_all_experts
// CHECK: moe.route %{{.+}} {routing = #moe.routing<sigmoid, dense, k = 8, renormalize, scaling_factor = 2.500000e+00>}
func.func @group_limited_all_experts(%x: tensor<?x16xf32>, %l: tensor<?x8xf32>, %b: tensor<8xf32>,
    %u: tensor<8x32x16xf32>, %d: tensor<8x16x32xf32>) -> tensor<?x16xf32> {
  %i, %w = moe.route %l bias %b : tensor<8xf32> {routing = #moe.routing<sigmoid, group_limited_topk, k = 8,
      n_group = 4, group_score = top2_sum, renormalize, scaling_factor = 2.5>}
      : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %s = moe.experts %x, %i up(%u : tensor<8x32x16xf32>) down(%d : tensor<8x16x32xf32>)
      {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x8xi32> -> tensor<?x8x16xf32>
  %y = moe.combine weights(%w : tensor<?x8xf32>) slots(%s : tensor<?x8x16xf32>) : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// The slot order is visible to the caller: no rewrite.
// CHECK-LABEL: func.func @route_order_visible
// CHECK: moe.route %{{.+}} {routing = #moe.routing<softmax, topk, k = 4, renormalize>}
func.func @route_order_visible(%l: tensor<?x4xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) {
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 4, renormalize>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return %i, %w : tensor<?x4xi32>, tensor<?x4xf32>
}

// -----

// K < E still selects: no rewrite.
// CHECK-LABEL: func.func @route_selects
// CHECK: moe.route %{{.+}} {routing = #moe.routing<softmax, topk, k = 2, renormalize>}
func.func @route_selects(%x: tensor<?x16xf32>, %l: tensor<?x4xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 2, renormalize>}
      : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x16xf32>) : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Dropless dispatch is the identity with no drops.
// CHECK-LABEL: func.func @dropless_dispatch
// CHECK-SAME: (%[[I:.+]]: tensor<?x2xi32>, %[[W:.+]]: tensor<?x2xf32>)
// CHECK-NOT: moe.dispatch
// CHECK: %[[Z:.+]] = arith.constant dense<0> : tensor<i64>
// CHECK: return %[[I]], %[[W]], %[[Z]]
func.func @dropless_dispatch(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>)
    -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>) {
  %i2, %w2, %n = moe.dispatch %i, %w {num_experts = 8 : i64}
      : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return %i2, %w2, %n : tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>
}

// -----

// capacity_factor * K >= E: C >= T, and a token sends at most one pair to an
// expert, so nothing is ever dropped.
// CHECK-LABEL: func.func @ample_capacity
// CHECK: %[[I:.+]], %[[W:.+]] = moe.route
// CHECK-NOT: moe.dispatch
// CHECK: return %[[I]], %[[W]], %{{.+}}
func.func @ample_capacity(%l: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>) {
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 2>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %i2, %w2, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>,
      capacity_factor = 4.0 : f64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return %i2, %w2, %n : tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>
}

// -----

// capacity_factor * K < E may drop: kept.
// CHECK-LABEL: func.func @tight_capacity
// CHECK: moe.dispatch {{.+}}capacity_factor = 3.9{{.+}}mode = #moe.dispatch<capacity>
func.func @tight_capacity(%l: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>) {
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 2>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %i2, %w2, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>,
      capacity_factor = 3.9 : f64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return %i2, %w2, %n : tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>
}

// -----

// A fixed expert_capacity of at least a static T admits every pair.
// CHECK-LABEL: func.func @fixed_capacity_covers_t
// CHECK-NOT: moe.dispatch
// CHECK: return
func.func @fixed_capacity_covers_t(%l: tensor<6x8xf32>) -> (tensor<6x2xi32>, tensor<6x2xf32>, tensor<i64>) {
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 2>}
      : tensor<6x8xf32> -> tensor<6x2xi32>, tensor<6x2xf32>
  %i2, %w2, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>,
      expert_capacity = 6} : tensor<6x2xi32>, tensor<6x2xf32> -> tensor<i64>
  return %i2, %w2, %n : tensor<6x2xi32>, tensor<6x2xf32>, tensor<i64>
}

// -----

// A fixed expert_capacity below T, or a dynamic T, may drop: kept.
// CHECK-LABEL: func.func @fixed_capacity_may_drop
// CHECK: moe.dispatch {{.+}}expert_capacity = 5
// CHECK: moe.dispatch {{.+}}expert_capacity = 1000
func.func @fixed_capacity_may_drop(%l: tensor<6x8xf32>, %d: tensor<?x8xf32>)
    -> (tensor<6x2xi32>, tensor<?x2xi32>) {
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 2>}
      : tensor<6x8xf32> -> tensor<6x2xi32>, tensor<6x2xf32>
  %i2, %w2, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>,
      expert_capacity = 5} : tensor<6x2xi32>, tensor<6x2xf32> -> tensor<i64>
  %j, %v = moe.route %d {routing = #moe.routing<softmax, topk, k = 2>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %j2, %v2, %m = moe.dispatch %j, %v {num_experts = 8 : i64, mode = #moe.dispatch<capacity>,
      expert_capacity = 1000} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return %i2, %j2 : tensor<6x2xi32>, tensor<?x2xi32>
}

// -----

// Indices of unknown origin may repeat an expert within a token: kept.
// CHECK-LABEL: func.func @capacity_unknown_indices
// CHECK: moe.dispatch
func.func @capacity_unknown_indices(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>)
    -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>) {
  %i2, %w2, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>,
      capacity_factor = 4.0 : f64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return %i2, %w2, %n : tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>
}

// -----

// Dense routing over experts whose down projection is zero: the experts, the
// routing and the logits all disappear; only the shared expert is left.
// CHECK-LABEL: func.func @zero_weight_experts
// CHECK-NOT: moe.route
// CHECK-NOT: moe.experts
// CHECK: %[[S:.+]] = moe.ffn
// CHECK: moe.combine addends(%[[S]] : tensor<?x16xf32>) : tensor<?x16xbf16>
func.func @zero_weight_experts(%x: tensor<?x16xbf16>, %wr: tensor<4x16xbf16>, %u: tensor<4x32x16xbf16>,
    %su: tensor<32x16xbf16>, %sd: tensor<16x32xbf16>) -> tensor<?x16xbf16> {
  %d = arith.constant dense<0.0> : tensor<4x16x32xbf16>
  %l = moe.linear %x, %wr : (tensor<?x16xbf16>, tensor<4x16xbf16>) -> tensor<?x4xf32>
  %i, %w = moe.route %l {routing = #moe.routing<softmax, dense, k = 4>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xbf16>) down(%d : tensor<4x16x32xbf16>)
      {activation = #moe.activation<relu>} : tensor<?x16xbf16>, tensor<?x4xi32> -> tensor<?x4x16xf32>
  %sh = moe.ffn %x up(%su : tensor<32x16xbf16>) down(%sd : tensor<16x32xbf16>)
      {activation = #moe.activation<relu>} : tensor<?x16xbf16> -> tensor<?x16xf32>
  %y = moe.combine weights(%w : tensor<?x4xf32>) slots(%s : tensor<?x4x16xf32>)
      addends(%sh : tensor<?x16xf32>) : tensor<?x16xbf16>
  return %y : tensor<?x16xbf16>
}

// -----

// A down bias makes zero-weight experts non-zero: kept.
// CHECK-LABEL: func.func @zero_weight_with_bias
// CHECK: moe.experts
// CHECK: moe.combine weights
func.func @zero_weight_with_bias(%x: tensor<?x16xf32>, %i: tensor<?x4xi32>, %w: tensor<?x4xf32>,
    %u: tensor<4x32x16xf32>, %db: tensor<4x16xf32>) -> tensor<?x16xf32> {
  %d = arith.constant dense<0.0> : tensor<4x16x32xf32>
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      down_bias(%db : tensor<4x16xf32>)
      {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x4xi32> -> tensor<?x4x16xf32>
  %y = moe.combine weights(%w : tensor<?x4xf32>) slots(%s : tensor<?x4x16xf32>) : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Nothing but zero experts: the result is a zero splat with the token count
// of the input.
// CHECK-LABEL: func.func @all_zero
// CHECK-SAME: %[[W:[^:]+]]: tensor<?x4xf32>
// CHECK-DAG: %[[C0:.+]] = arith.constant 0 : index
// CHECK-DAG: %[[Z:.+]] = arith.constant 0.000000e+00 : f16
// CHECK: %[[T:.+]] = tensor.dim %[[W]], %[[C0]]
// CHECK: tensor.splat %[[Z]][%[[T]]] : tensor<?x16xf16>
func.func @all_zero(%x: tensor<?x16xf16>, %i: tensor<?x4xi32>, %w: tensor<?x4xf32>) -> tensor<?x16xf16> {
  %s = moe.special_experts %x, %i {kinds = [#moe.special<zero>, #moe.special<zero>]}
      : tensor<?x16xf16>, tensor<?x4xi32> -> tensor<?x4x16xf32>
  %y = moe.combine weights(%w : tensor<?x4xf32>) slots(%s : tensor<?x4x16xf32>) : tensor<?x16xf16>
  return %y : tensor<?x16xf16>
}

// -----

// A one-expert layer with softmax routing gives that expert weight 1: it is
// a plain FFN (plus its shared expert), summed in f32 and rounded once.
// CHECK-LABEL: func.func @single_expert_layer
// CHECK-NOT: moe.layer
// CHECK-DAG: %[[G:.+]] = tensor.collapse_shape %{{.+}} {{\[\[}}0, 1], [2]] : tensor<1x32x16xbf16> into tensor<32x16xbf16>
// CHECK-DAG: %[[F:.+]] = moe.ffn %{{.+}} gate(%[[G]] : tensor<32x16xbf16>) {{.+}} : tensor<?x16xbf16> -> tensor<?x16xf32>
// CHECK-DAG: %[[S:.+]] = moe.ffn %{{.+}} up(%{{.+}} : tensor<64x16xbf16>) {{.+}} : tensor<?x16xbf16> -> tensor<?x16xf32>
// CHECK: moe.combine addends(%[[F]], %[[S]] : tensor<?x16xf32>, tensor<?x16xf32>) : tensor<?x16xbf16>
func.func @single_expert_layer(%x: tensor<?x16xbf16>, %wr: tensor<1x16xbf16>, %g: tensor<1x32x16xbf16>,
    %u: tensor<1x32x16xbf16>, %d: tensor<1x16x32xbf16>, %su: tensor<64x16xbf16>,
    %sd: tensor<16x64xbf16>) -> tensor<?x16xbf16> {
  %y = moe.layer %x : tensor<?x16xbf16> router(%wr : tensor<1x16xbf16>) gate(%g : tensor<1x32x16xbf16>)
      up(%u : tensor<1x32x16xbf16>) down(%d : tensor<1x16x32xbf16>)
      shared_up(%su : tensor<64x16xbf16>) shared_down(%sd : tensor<16x64xbf16>)
      {routing = #moe.routing<softmax, topk, k = 1>, shared_activation = #moe.activation<relu>}
      -> tensor<?x16xbf16>
  return %y : tensor<?x16xbf16>
}

// -----

// With sigmoid scoring the single expert's weight is sigmoid(logit), not 1.
// CHECK-LABEL: func.func @single_expert_sigmoid
// CHECK: moe.layer
func.func @single_expert_sigmoid(%x: tensor<?x16xf32>, %wr: tensor<1x16xf32>,
    %u: tensor<1x32x16xf32>, %d: tensor<1x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<1x16xf32>)
      up(%u : tensor<1x32x16xf32>) down(%d : tensor<1x16x32xf32>)
      {routing = #moe.routing<sigmoid, topk, k = 1>, activation = #moe.activation<relu>}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A whole layer with K == E routes densely.
// CHECK-LABEL: func.func @layer_all_experts
// CHECK: moe.layer
// CHECK-NOT: selection_bias
// CHECK-SAME: routing = #moe.routing<sigmoid, dense, k = 4, renormalize>
func.func @layer_all_experts(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %b: tensor<4xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) selection_bias(%b : tensor<4xf32>)
      up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<sigmoid, topk, k = 4, renormalize>, activation = #moe.activation<relu>}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A whole layer whose capacity can never overflow is dropless; its drop
// count is a constant 0.
// CHECK-LABEL: func.func @layer_ample_capacity
// CHECK-DAG: %[[Z:.+]] = arith.constant dense<0> : tensor<i64>
// CHECK-DAG: %[[Y:.+]] = moe.layer
// CHECK-NOT: capacity
// CHECK-SAME: -> tensor<?x16xf32>{{$}}
// CHECK: return %[[Y]], %[[Z]]
func.func @layer_ample_capacity(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) -> (tensor<?x16xf32>, tensor<i64>) {
  %y, %n = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>)
      up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<relu>,
       dispatch = #moe.dispatch<capacity>, capacity_factor = 2.0 : f64}
      -> tensor<?x16xf32>, tensor<i64>
  return %y, %n : tensor<?x16xf32>, tensor<i64>
}

// -----

// A layer whose fixed expert_capacity covers its static T is dropless.
// CHECK-LABEL: func.func @layer_fixed_capacity
// CHECK-DAG: %[[Z:.+]] = arith.constant dense<0> : tensor<i64>
// CHECK-DAG: %[[Y:.+]] = moe.layer
// CHECK-NOT: capacity
// CHECK-SAME: -> tensor<4x16xf32>{{$}}
// CHECK: return %[[Y]], %[[Z]]
func.func @layer_fixed_capacity(%x: tensor<4x16xf32>, %wr: tensor<4x16xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) -> (tensor<4x16xf32>, tensor<i64>) {
  %y, %n = moe.layer %x : tensor<4x16xf32> router(%wr : tensor<4x16xf32>)
      up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>,
       dispatch = #moe.dispatch<capacity>, expert_capacity = 4}
      -> tensor<4x16xf32>, tensor<i64>
  return %y, %n : tensor<4x16xf32>, tensor<i64>
}

// -----

// Zero terms go, the bias stays; with every term zero the combine is kept
// (its result is the bias, not 0).
// CHECK-LABEL: func.func @zero_terms_with_bias
// CHECK: %[[Y:.+]] = moe.combine addends(%{{.+}} : tensor<?x16xf32>) bias(%{{.+}} : tensor<16xf32>)
// CHECK: %[[Z:.+]] = moe.combine weights({{.+}}) slots({{.+}}) bias(%{{.+}} : tensor<16xf32>)
// CHECK-NOT: tensor.splat
// CHECK: return %[[Y]], %[[Z]]
func.func @zero_terms_with_bias(%x: tensor<?x16xf16>, %i: tensor<?x4xi32>, %w: tensor<?x4xf32>,
    %a: tensor<?x16xf32>, %b: tensor<16xf32>) -> (tensor<?x16xf16>, tensor<?x16xf16>) {
  %s = moe.special_experts %x, %i {kinds = [#moe.special<zero>, #moe.special<zero>]}
      : tensor<?x16xf16>, tensor<?x4xi32> -> tensor<?x4x16xf32>
  %y = moe.combine weights(%w : tensor<?x4xf32>) slots(%s : tensor<?x4x16xf32>) addends(%a : tensor<?x16xf32>) bias(%b : tensor<16xf32>) : tensor<?x16xf16>
  %z = moe.combine weights(%w : tensor<?x4xf32>) slots(%s : tensor<?x4x16xf32>) bias(%b : tensor<16xf32>) : tensor<?x16xf16>
  return %y, %z : tensor<?x16xf16>, tensor<?x16xf16>
}

// -----

// A one-expert layer with an output bias: the bias goes to the combine.
// CHECK-LABEL: func.func @single_expert_output_bias
// CHECK-SAME: %[[B:[^:]+]]: tensor<16xf32>
// CHECK: moe.combine addends(%{{.+}} : tensor<?x16xf32>) bias(%[[B]] : tensor<16xf32>) : tensor<?x16xf32>
func.func @single_expert_output_bias(%x: tensor<?x16xf32>, %wr: tensor<1x16xf32>,
    %u: tensor<1x32x16xf32>, %d: tensor<1x16x32xf32>, %b: tensor<16xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<1x16xf32>)
      up(%u : tensor<1x32x16xf32>) down(%d : tensor<1x16x32xf32>) output_bias(%b : tensor<16xf32>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
