// Round trip of every moe op and attribute variant, in the custom and the
// generic form. The cases: a moe.layer per routing kind (softmax/sigmoid/none;
// topk, group_limited_topk with max and top2_sum, top_p, topk_then_softmax,
// dense, hierarchical with and without group top-k), per activation (swiglu,
// geglu, gelu, gelu_tanh, relu, relu2, swiglu_clamped with biases), shared
// experts (with and without the sigmoid gate), LoRA experts, zero/copy/constant
// experts, the projected router, capacity dispatch with its drop count (by
// factor and by a fixed expert_capacity), an output bias; f32,
// f16 and bf16; the staged ops as --moe-decompose writes them (linear with and
// without bias, projected_router, route with groups/bias, dispatch, experts,
// lora_experts, special_experts, ffn with gate_weight, combine, rms_norm); and
// a moe.cartesian with its two regions.
// The layer cases are written by test/Integration/CPU/layers.py.
// RUN: moe-opt %s | moe-opt | FileCheck %s --enable-var-scope
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s --enable-var-scope

// CHECK-LABEL: func.func @biases_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) gate(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xf32>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xf32>) gate_bias(%[[V7:[a-z_0-9]+]] : tensor<8x48xf32>) up_bias(%[[V8:[a-z_0-9]+]] : tensor<8x48xf32>) down_bias(%[[V9:[a-z_0-9]+]] : tensor<8x32xf32>) {activation = #moe.activation<geglu>, routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @capacity_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]], %[[V2:[a-z_0-9]+]] = moe.layer %[[V3:[a-z_0-9]+]] : tensor<?x32xbf16> router(%[[V4:[a-z_0-9]+]] : tensor<8x32xbf16>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xbf16>) {activation = #moe.activation<gelu>, capacity_factor = 7.500000e-01 : f64, dispatch = #moe.dispatch<capacity>, routing = #moe.routing<softmax, topk, k = 2>} -> tensor<?x32xbf16>, tensor<i64>
// CHECK-NEXT: return %[[V1]], %[[V2]] : tensor<?x32xbf16>, tensor<i64>
// CHECK-LABEL: func.func @switch_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]], %[[V2:[a-z_0-9]+]] = moe.layer %[[V3:[a-z_0-9]+]] : tensor<?x32xbf16> router(%[[V4:[a-z_0-9]+]] : tensor<8x32xbf16>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xbf16>) {activation = #moe.activation<relu>, dispatch = #moe.dispatch<capacity>, expert_capacity = 5 : i64, routing = #moe.routing<softmax, topk, k = 1>} -> tensor<?x32xbf16>, tensor<i64>
// CHECK-NEXT: return %[[V1]], %[[V2]] : tensor<?x32xbf16>, tensor<i64>
// CHECK-LABEL: func.func @output_bias_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xbf16> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xbf16>) gate(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xbf16>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xbf16>) output_bias(%[[V7:[a-z_0-9]+]] : tensor<32xbf16>) {routing = #moe.routing<none, topk_then_softmax, k = 2>} -> tensor<?x32xbf16>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xbf16>
// CHECK-LABEL: func.func @dense_geglu_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) gate(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xf32>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<geglu>, routing = #moe.routing<softmax, dense, k = 8>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @group_max_gelu_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) up(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V5:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<gelu>, routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 4, topk_group = 2, scaling_factor = 1.500000e+00>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @group_top2_sum_swiglu_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xbf16> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xbf16>) selection_bias(%[[V4:[a-z_0-9]+]] : tensor<8xf32>) gate(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xbf16>) up(%[[V6:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V7:[a-z_0-9]+]] : tensor<8x32x48xbf16>) {routing = #moe.routing<sigmoid, group_limited_topk, k = 3, n_group = 4, topk_group = 2, group_score = top2_sum, renormalize>} -> tensor<?x32xbf16>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xbf16>
// CHECK-LABEL: func.func @hierarchical_dense_relu_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xbf16> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xbf16>) group_router(%[[V4:[a-z_0-9]+]] : tensor<2x32xbf16>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xbf16>) {activation = #moe.activation<relu>, routing = #moe.routing<softmax, hierarchical, k = 8, n_group = 2, topk_group = 1>} -> tensor<?x32xbf16>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xbf16>
// CHECK-LABEL: func.func @hierarchical_gelu_tanh_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) group_router(%[[V4:[a-z_0-9]+]] : tensor<2x32xf32>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<gelu_tanh>, routing = #moe.routing<softmax, hierarchical, k = 3, n_group = 2, tau_group = 5.000000e-01, tau_expert = 2.000000e+00>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @lora_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) group_router(%[[V4:[a-z_0-9]+]] : tensor<2x32xf32>) lora_base(%[[V5:[a-z_0-9]+]] : tensor<32x32xf32>) lora_a(%[[V6:[a-z_0-9]+]] : tensor<8x4x32xf32>) lora_b(%[[V7:[a-z_0-9]+]] : tensor<8x32x4xf32>) {lora_alpha = 8.000000e+00 : f64, routing = #moe.routing<softmax, hierarchical, k = 3, n_group = 2, tau_group = 5.000000e-01, tau_expert = 2.000000e+00>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @projected_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> domain_embeddings(%[[V3:[a-z_0-9]+]] : tensor<8x8xf32>) proj_w1(%[[V4:[a-z_0-9]+]] : tensor<12x8xf32>) proj_w2(%[[V5:[a-z_0-9]+]] : tensor<32x6xf32>) gate(%[[V6:[a-z_0-9]+]] : tensor<8x48x32xf32>) up(%[[V7:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V8:[a-z_0-9]+]] : tensor<8x32x48xf32>) shared_gate(%[[V9:[a-z_0-9]+]] : tensor<48x32xf32>) shared_up(%[[V10:[a-z_0-9]+]] : tensor<48x32xf32>) shared_down(%[[V11:[a-z_0-9]+]] : tensor<32x48xf32>) {routing = #moe.routing<softmax, topk, k = 1>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @shared_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xbf16> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xbf16>) gate(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xbf16>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xbf16>) shared_gate(%[[V7:[a-z_0-9]+]] : tensor<48x32xbf16>) shared_up(%[[V8:[a-z_0-9]+]] : tensor<48x32xbf16>) shared_down(%[[V9:[a-z_0-9]+]] : tensor<32x48xbf16>) {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x32xbf16>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xbf16>
// CHECK-LABEL: func.func @shared_f16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf16> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf16>) gate(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xf16>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xf16>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xf16>) shared_gate(%[[V7:[a-z_0-9]+]] : tensor<48x32xf16>) shared_up(%[[V8:[a-z_0-9]+]] : tensor<48x32xf16>) shared_down(%[[V9:[a-z_0-9]+]] : tensor<32x48xf16>) {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x32xf16>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf16>
// CHECK-LABEL: func.func @shared_gated_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) gate(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xf32>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xf32>) shared_up(%[[V7:[a-z_0-9]+]] : tensor<48x32xf32>) shared_down(%[[V8:[a-z_0-9]+]] : tensor<32x48xf32>) shared_gate_weight(%[[V9:[a-z_0-9]+]] : tensor<1x32xf32>) {routing = #moe.routing<softmax, topk, k = 2, renormalize>, shared_activation = #moe.activation<relu>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @special_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xbf16> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xbf16>) gate(%[[V4:[a-z_0-9]+]] : tensor<5x48x32xbf16>) up(%[[V5:[a-z_0-9]+]] : tensor<5x48x32xbf16>) down(%[[V6:[a-z_0-9]+]] : tensor<5x32x48xbf16>) const_router(%[[V7:[a-z_0-9]+]] : tensor<1x2x32xbf16>) const_vectors(%[[V8:[a-z_0-9]+]] : tensor<1x32xbf16>) {routing = #moe.routing<softmax, topk, k = 2>, special_kinds = [#moe.special<zero>, #moe.special<copy>, #moe.special<constant>]} -> tensor<?x32xbf16>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xbf16>
// CHECK-LABEL: func.func @top_p_relu2_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) up(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V5:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<relu2>, routing = #moe.routing<softmax, top_p, k = 4, top_p = 5.000000e-01>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @topk_sigmoid_bias_swiglu_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) selection_bias(%[[V4:[a-z_0-9]+]] : tensor<8xf32>) gate(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xf32>) up(%[[V6:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V7:[a-z_0-9]+]] : tensor<8x32x48xf32>) {routing = #moe.routing<sigmoid, topk, k = 2, renormalize, scaling_factor = 2.500000e+00>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @topk_softmax_raw_relu_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) up(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V5:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<relu>, routing = #moe.routing<softmax, topk, k = 2>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @topk_softmax_swiglu_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xf32> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xf32>) gate(%[[V4:[a-z_0-9]+]] : tensor<8x48x32xf32>) up(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V6:[a-z_0-9]+]] : tensor<8x32x48xf32>) {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x32xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @topk_then_softmax_swiglu_clamped_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.layer %[[V2:[a-z_0-9]+]] : tensor<?x32xbf16> router(%[[V3:[a-z_0-9]+]] : tensor<8x32xbf16>) router_bias(%[[V4:[a-z_0-9]+]] : tensor<8xbf16>) gate(%[[V5:[a-z_0-9]+]] : tensor<8x48x32xbf16>) up(%[[V6:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V7:[a-z_0-9]+]] : tensor<8x32x48xbf16>) gate_bias(%[[V8:[a-z_0-9]+]] : tensor<8x48xbf16>) up_bias(%[[V9:[a-z_0-9]+]] : tensor<8x48xbf16>) down_bias(%[[V10:[a-z_0-9]+]] : tensor<8x32xbf16>) {activation = #moe.activation<swiglu_clamped>, alpha = 1.500000e+00 : f64, limit = 1.000000e+00 : f64, routing = #moe.routing<none, topk_then_softmax, k = 2>} -> tensor<?x32xbf16>
// CHECK-NEXT: return %[[V1]] : tensor<?x32xbf16>
// CHECK-LABEL: func.func @staged_lora_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V4:[a-z_0-9]+]] = moe.linear %[[V2]], %[[V5:[a-z_0-9]+]] : (tensor<?x32xf32>, tensor<2x32xf32>) -> tensor<?x2xf32>
// CHECK-NEXT: %[[V6:[a-z_0-9]+]], %[[V7:[a-z_0-9]+]] = moe.route %[[V1]] groups %[[V4]] : tensor<?x2xf32> {routing = #moe.routing<softmax, hierarchical, k = 3, n_group = 2, tau_group = 5.000000e-01, tau_expert = 2.000000e+00>} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
// CHECK-NEXT: %[[V8:[a-z_0-9]+]] = moe.linear %[[V2]], %[[V9:[a-z_0-9]+]] : (tensor<?x32xf32>, tensor<32x32xf32>) -> tensor<?x32xf32>
// CHECK-NEXT: %[[V10:[a-z_0-9]+]] = moe.lora_experts %[[V2]], %[[V6]] a(%[[V11:[a-z_0-9]+]] : tensor<8x4x32xf32>) b(%[[V12:[a-z_0-9]+]] : tensor<8x32x4xf32>) {alpha = 8.000000e+00 : f64} : tensor<?x32xf32>, tensor<?x3xi32> -> tensor<?x3x32xf32>
// CHECK-NEXT: %[[V13:[a-z_0-9]+]] = moe.combine weights(%[[V7]] : tensor<?x3xf32>) slots(%[[V10]] : tensor<?x3x32xf32>) addends(%[[V8]] : tensor<?x32xf32>) : tensor<?x32xf32>
// CHECK-NEXT: return %[[V13]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @staged_special_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<?x32xbf16>, tensor<8x32xbf16>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V4:[a-z_0-9]+]], %[[V5:[a-z_0-9]+]] = moe.route %[[V1]] {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK-NEXT: %[[V6:[a-z_0-9]+]] = moe.experts %[[V2]], %[[V4]] gate(%[[V7:[a-z_0-9]+]] : tensor<5x48x32xbf16>) up(%[[V8:[a-z_0-9]+]] : tensor<5x48x32xbf16>) down(%[[V9:[a-z_0-9]+]] : tensor<5x32x48xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x32xbf16>, tensor<?x2xi32> -> tensor<?x2x32xf32>
// CHECK-NEXT: %[[V10:[a-z_0-9]+]] = moe.special_experts %[[V2]], %[[V4]] const_router(%[[V11:[a-z_0-9]+]] : tensor<1x2x32xbf16>) const_vectors(%[[V12:[a-z_0-9]+]] : tensor<1x32xbf16>) {expert_offset = 5 : i64, kinds = [#moe.special<zero>, #moe.special<copy>, #moe.special<constant>]} : tensor<?x32xbf16>, tensor<?x2xi32> -> tensor<?x2x32xf32>
// CHECK-NEXT: %[[V13:[a-z_0-9]+]] = moe.combine weights(%[[V5]] : tensor<?x2xf32>) slots(%[[V6]], %[[V10]] : tensor<?x2x32xf32>, tensor<?x2x32xf32>) : tensor<?x32xbf16>
// CHECK-NEXT: return %[[V13]] : tensor<?x32xbf16>
// CHECK-LABEL: func.func @staged_projected_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.projected_router %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]], %[[V4:[a-z_0-9]+]] : (tensor<8x8xf32>, tensor<12x8xf32>, tensor<32x6xf32>) -> tensor<8x32xf32>
// CHECK-NEXT: %[[V5:[a-z_0-9]+]] = moe.linear %[[V6:[a-z_0-9]+]], %[[V1]] : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V7:[a-z_0-9]+]], %[[V8:[a-z_0-9]+]] = moe.route %[[V5]] {routing = #moe.routing<softmax, topk, k = 1>} : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
// CHECK-NEXT: %[[V9:[a-z_0-9]+]] = moe.experts %[[V6]], %[[V7]] gate(%[[V10:[a-z_0-9]+]] : tensor<8x48x32xf32>) up(%[[V11:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V12:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<swiglu>} : tensor<?x32xf32>, tensor<?x1xi32> -> tensor<?x1x32xf32>
// CHECK-NEXT: %[[V13:[a-z_0-9]+]] = moe.ffn %[[V6]] gate(%[[V14:[a-z_0-9]+]] : tensor<48x32xf32>) up(%[[V15:[a-z_0-9]+]] : tensor<48x32xf32>) down(%[[V16:[a-z_0-9]+]] : tensor<32x48xf32>) {activation = #moe.activation<swiglu>} : tensor<?x32xf32> -> tensor<?x32xf32>
// CHECK-NEXT: %[[V17:[a-z_0-9]+]] = moe.combine weights(%[[V8]] : tensor<?x1xf32>) slots(%[[V9]] : tensor<?x1x32xf32>) addends(%[[V13]] : tensor<?x32xf32>) : tensor<?x32xf32>
// CHECK-NEXT: return %[[V17]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @staged_capacity_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<?x32xbf16>, tensor<8x32xbf16>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V4:[a-z_0-9]+]], %[[V5:[a-z_0-9]+]] = moe.route %[[V1]] {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK-NEXT: %[[V6:[a-z_0-9]+]], %[[V7:[a-z_0-9]+]], %[[V8:[a-z_0-9]+]] = moe.dispatch %[[V4]], %[[V5]] {capacity_factor = 7.500000e-01 : f64, mode = #moe.dispatch<capacity>, num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
// CHECK-NEXT: %[[V9:[a-z_0-9]+]] = moe.experts %[[V2]], %[[V6]] up(%[[V10:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V11:[a-z_0-9]+]] : tensor<8x32x48xbf16>) {activation = #moe.activation<gelu>} : tensor<?x32xbf16>, tensor<?x2xi32> -> tensor<?x2x32xf32>
// CHECK-NEXT: %[[V12:[a-z_0-9]+]] = moe.combine weights(%[[V7]] : tensor<?x2xf32>) slots(%[[V9]] : tensor<?x2x32xf32>) : tensor<?x32xbf16>
// CHECK-NEXT: return %[[V12]], %[[V8]] : tensor<?x32xbf16>, tensor<i64>
// CHECK-LABEL: func.func @staged_hierarchical_gelu_tanh_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V4:[a-z_0-9]+]] = moe.linear %[[V2]], %[[V5:[a-z_0-9]+]] : (tensor<?x32xf32>, tensor<2x32xf32>) -> tensor<?x2xf32>
// CHECK-NEXT: %[[V6:[a-z_0-9]+]], %[[V7:[a-z_0-9]+]] = moe.route %[[V1]] groups %[[V4]] : tensor<?x2xf32> {routing = #moe.routing<softmax, hierarchical, k = 3, n_group = 2, tau_group = 5.000000e-01, tau_expert = 2.000000e+00>} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
// CHECK-NEXT: %[[V8:[a-z_0-9]+]] = moe.experts %[[V2]], %[[V6]] up(%[[V9:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V10:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<gelu_tanh>} : tensor<?x32xf32>, tensor<?x3xi32> -> tensor<?x3x32xf32>
// CHECK-NEXT: %[[V11:[a-z_0-9]+]] = moe.combine weights(%[[V7]] : tensor<?x3xf32>) slots(%[[V8]] : tensor<?x3x32xf32>) : tensor<?x32xf32>
// CHECK-NEXT: return %[[V11]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @staged_group_top2_sum_swiglu_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<?x32xbf16>, tensor<8x32xbf16>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V4:[a-z_0-9]+]], %[[V5:[a-z_0-9]+]] = moe.route %[[V1]] bias %[[V6:[a-z_0-9]+]] : tensor<8xf32> {routing = #moe.routing<sigmoid, group_limited_topk, k = 3, n_group = 4, topk_group = 2, group_score = top2_sum, renormalize>} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
// CHECK-NEXT: %[[V7:[a-z_0-9]+]] = moe.experts %[[V2]], %[[V4]] gate(%[[V8:[a-z_0-9]+]] : tensor<8x48x32xbf16>) up(%[[V9:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V10:[a-z_0-9]+]] : tensor<8x32x48xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x32xbf16>, tensor<?x3xi32> -> tensor<?x3x32xf32>
// CHECK-NEXT: %[[V11:[a-z_0-9]+]] = moe.combine weights(%[[V5]] : tensor<?x3xf32>) slots(%[[V7]] : tensor<?x3x32xf32>) : tensor<?x32xbf16>
// CHECK-NEXT: return %[[V11]] : tensor<?x32xbf16>
// CHECK-LABEL: func.func @staged_top_p_relu2_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V4:[a-z_0-9]+]], %[[V5:[a-z_0-9]+]] = moe.route %[[V1]] {routing = #moe.routing<softmax, top_p, k = 4, top_p = 5.000000e-01>} : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
// CHECK-NEXT: %[[V6:[a-z_0-9]+]] = moe.experts %[[V2]], %[[V4]] up(%[[V7:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V8:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<relu2>} : tensor<?x32xf32>, tensor<?x4xi32> -> tensor<?x4x32xf32>
// CHECK-NEXT: %[[V9:[a-z_0-9]+]] = moe.combine weights(%[[V5]] : tensor<?x4xf32>) slots(%[[V6]] : tensor<?x4x32xf32>) : tensor<?x32xf32>
// CHECK-NEXT: return %[[V9]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @staged_shared_gated_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V4:[a-z_0-9]+]], %[[V5:[a-z_0-9]+]] = moe.route %[[V1]] {routing = #moe.routing<softmax, topk, k = 2, renormalize>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK-NEXT: %[[V6:[a-z_0-9]+]] = moe.experts %[[V2]], %[[V4]] gate(%[[V7:[a-z_0-9]+]] : tensor<8x48x32xf32>) up(%[[V8:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V9:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<swiglu>} : tensor<?x32xf32>, tensor<?x2xi32> -> tensor<?x2x32xf32>
// CHECK-NEXT: %[[V10:[a-z_0-9]+]] = moe.ffn %[[V2]] up(%[[V11:[a-z_0-9]+]] : tensor<48x32xf32>) down(%[[V12:[a-z_0-9]+]] : tensor<32x48xf32>) gate_weight(%[[V13:[a-z_0-9]+]] : tensor<1x32xf32>) {activation = #moe.activation<relu>} : tensor<?x32xf32> -> tensor<?x32xf32>
// CHECK-NEXT: %[[V14:[a-z_0-9]+]] = moe.combine weights(%[[V5]] : tensor<?x2xf32>) slots(%[[V6]] : tensor<?x2x32xf32>) addends(%[[V10]] : tensor<?x32xf32>) : tensor<?x32xf32>
// CHECK-NEXT: return %[[V14]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @staged_topk_then_softmax_swiglu_clamped_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] bias %[[V4:[a-z_0-9]+]] : (tensor<?x32xbf16>, tensor<8x32xbf16>, tensor<8xbf16>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V5:[a-z_0-9]+]], %[[V6:[a-z_0-9]+]] = moe.route %[[V1]] {routing = #moe.routing<none, topk_then_softmax, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK-NEXT: %[[V7:[a-z_0-9]+]] = moe.experts %[[V2]], %[[V5]] gate(%[[V8:[a-z_0-9]+]] : tensor<8x48x32xbf16>) up(%[[V9:[a-z_0-9]+]] : tensor<8x48x32xbf16>) down(%[[V10:[a-z_0-9]+]] : tensor<8x32x48xbf16>) gate_bias(%[[V11:[a-z_0-9]+]] : tensor<8x48xbf16>) up_bias(%[[V12:[a-z_0-9]+]] : tensor<8x48xbf16>) down_bias(%[[V13:[a-z_0-9]+]] : tensor<8x32xbf16>) {activation = #moe.activation<swiglu_clamped>, alpha = 1.500000e+00 : f64, limit = 1.000000e+00 : f64} : tensor<?x32xbf16>, tensor<?x2xi32> -> tensor<?x2x32xf32>
// CHECK-NEXT: %[[V14:[a-z_0-9]+]] = moe.combine weights(%[[V6]] : tensor<?x2xf32>) slots(%[[V7]] : tensor<?x2x32xf32>) : tensor<?x32xbf16>
// CHECK-NEXT: return %[[V14]] : tensor<?x32xbf16>
// CHECK-LABEL: func.func @staged_dense_geglu_f32(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[V4:[a-z_0-9]+]], %[[V5:[a-z_0-9]+]] = moe.route %[[V1]] {routing = #moe.routing<softmax, dense, k = 8>} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
// CHECK-NEXT: %[[V6:[a-z_0-9]+]] = moe.experts %[[V2]], %[[V4]] gate(%[[V7:[a-z_0-9]+]] : tensor<8x48x32xf32>) up(%[[V8:[a-z_0-9]+]] : tensor<8x48x32xf32>) down(%[[V9:[a-z_0-9]+]] : tensor<8x32x48xf32>) {activation = #moe.activation<geglu>} : tensor<?x32xf32>, tensor<?x8xi32> -> tensor<?x8x32xf32>
// CHECK-NEXT: %[[V10:[a-z_0-9]+]] = moe.combine weights(%[[V5]] : tensor<?x8xf32>) slots(%[[V6]] : tensor<?x8x32xf32>) : tensor<?x32xf32>
// CHECK-NEXT: return %[[V10]] : tensor<?x32xf32>
// CHECK-LABEL: func.func @staged_cartesian(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<?x64xf16>, tensor<4x64xf16>) -> tensor<?x4xf32>
// CHECK-NEXT: %[[V4:[a-z_0-9]+]], %[[V5:[a-z_0-9]+]] = moe.route %[[V1]] {routing = #moe.routing<softmax, topk, k = 2, renormalize>} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK-NEXT: %[[V6:[a-z_0-9]+]] = moe.experts %[[V2]], %[[V4]] gate(%[[V7:[a-z_0-9]+]] : tensor<4x32x64xf16>) up(%[[V8:[a-z_0-9]+]] : tensor<4x32x64xf16>) down(%[[V9:[a-z_0-9]+]] : tensor<4x64x32xf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
// CHECK-NEXT: %[[V10:[a-z_0-9]+]] = moe.combine weights(%[[V5]] : tensor<?x2xf32>) slots(%[[V6]] : tensor<?x2x64xf32>) : tensor<?x64xf16>
// CHECK-NEXT: %[[V11:[a-z_0-9]+]] = moe.combine addends(%[[V2]], %[[V10]] : tensor<?x64xf16>, tensor<?x64xf16>) : tensor<?x64xf16>
// CHECK-NEXT: %[[V12:[a-z_0-9]+]] = moe.rms_norm %[[V11]], %[[V13:[a-z_0-9]+]] : tensor<?x64xf16>, tensor<64xf16>
// CHECK-NEXT: %[[V14:[a-z_0-9]+]] = moe.linear %[[V12]], %[[V15:[a-z_0-9]+]] : (tensor<?x64xf16>, tensor<4x64xf16>) -> tensor<?x4xf32>
// CHECK-NEXT: %[[V16:[a-z_0-9]+]], %[[V17:[a-z_0-9]+]] = moe.route %[[V14]] {routing = #moe.routing<softmax, topk, k = 2, renormalize>} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK-NEXT: %[[V18:[a-z_0-9]+]] = moe.experts %[[V12]], %[[V16]] gate(%[[V19:[a-z_0-9]+]] : tensor<4x32x64xf16>) up(%[[V20:[a-z_0-9]+]] : tensor<4x32x64xf16>) down(%[[V21:[a-z_0-9]+]] : tensor<4x64x32xf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
// CHECK-NEXT: %[[V22:[a-z_0-9]+]] = moe.ffn %[[V12]] up(%[[V23:[a-z_0-9]+]] : tensor<64x64xf16>) down(%[[V24:[a-z_0-9]+]] : tensor<64x64xf16>) {activation = #moe.activation<gelu>} : tensor<?x64xf16> -> tensor<?x64xf32>
// CHECK-NEXT: %[[V25:[a-z_0-9]+]] = moe.combine weights(%[[V17]] : tensor<?x2xf32>) slots(%[[V18]] : tensor<?x2x64xf32>) addends(%[[V22]] : tensor<?x64xf32>) : tensor<?x64xf16>
// CHECK-NEXT: return %[[V25]] : tensor<?x64xf16>
// CHECK-LABEL: func.func @linear_static_f16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.linear %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] : (tensor<5x16xf16>, tensor<8x16xf16>) -> tensor<5x8xf32>
// CHECK-NEXT: return %[[V1]] : tensor<5x8xf32>
// CHECK-LABEL: func.func @dispatch_dropless(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]], %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] = moe.dispatch %[[V4:[a-z_0-9]+]], %[[V5:[a-z_0-9]+]] {num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
// CHECK-NEXT: return %[[V1]], %[[V2]], %[[V3]] : tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>
// CHECK-LABEL: func.func @combine_many(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.combine weights(%[[V2:[a-z_0-9]+]] : tensor<?x2xf32>) slots(%[[V3:[a-z_0-9]+]], %[[V4:[a-z_0-9]+]] : tensor<?x2x16xf32>, tensor<?x2x16xf32>) addends(%[[V5:[a-z_0-9]+]], %[[V6:[a-z_0-9]+]] : tensor<?x16xbf16>, tensor<?x16xf32>) : tensor<?x16xbf16>
// CHECK-NEXT: %[[V7:[a-z_0-9]+]] = moe.combine addends(%[[V6]] : tensor<?x16xf32>) : tensor<?x16xf16>
// CHECK-NEXT: %[[V8:[a-z_0-9]+]] = moe.combine weights(%[[V2]] : tensor<?x2xf32>) slots(%[[V3]] : tensor<?x2x16xf32>) bias(%[[V9:[a-z_0-9]+]] : tensor<16xbf16>) : tensor<?x16xbf16>
// CHECK-NEXT: return %[[V1]], %[[V7]], %[[V8]] : tensor<?x16xbf16>, tensor<?x16xf16>, tensor<?x16xbf16>
// CHECK-LABEL: func.func @experts_offset_relu2(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.experts %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] up(%[[V4:[a-z_0-9]+]] : tensor<4x32x16xf16>) down(%[[V5:[a-z_0-9]+]] : tensor<4x16x32xf16>) {activation = #moe.activation<relu2>, expert_offset = 4 : i64} : tensor<?x16xf16>, tensor<?x2xi32> -> tensor<?x2x16xf32>
// CHECK-NEXT: return %[[V1]] : tensor<?x2x16xf32>
// CHECK-LABEL: func.func @special_zero_copy(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.special_experts %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] {kinds = [#moe.special<zero>, #moe.special<copy>]} : tensor<3x16xf32>, tensor<3x2xi32> -> tensor<3x2x16xf32>
// CHECK-NEXT: return %[[V1]] : tensor<3x2x16xf32>
// CHECK-LABEL: func.func @rms_norm_bf16(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.rms_norm %[[V2:[a-z_0-9]+]], %[[V3:[a-z_0-9]+]] {epsilon = 1.000000e-05 : f64} : tensor<?x16xbf16>, tensor<16xbf16>
// CHECK-NEXT: return %[[V1]] : tensor<?x16xbf16>
// CHECK-LABEL: func.func @cartesian_layer(
// CHECK-NEXT: %[[V1:[a-z_0-9]+]] = moe.cartesian %[[V2:[a-z_0-9]+]] norm(%[[V3:[a-z_0-9]+]] : tensor<64xf16>) : tensor<?x64xf16> first {
// CHECK-NEXT: ^bb0(%[[V4:[a-z_0-9]+]]: tensor<?x64xf16>):
// CHECK-NEXT: %[[V5:[a-z_0-9]+]] = moe.layer %[[V4]] : tensor<?x64xf16> router(%[[V6:[a-z_0-9]+]] : tensor<4x64xf16>) gate(%[[V7:[a-z_0-9]+]] : tensor<4x32x64xf16>) up(%[[V8:[a-z_0-9]+]] : tensor<4x32x64xf16>) down(%[[V9:[a-z_0-9]+]] : tensor<4x64x32xf16>) {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x64xf16>
// CHECK-NEXT: moe.yield %[[V5]] : tensor<?x64xf16>
// CHECK-NEXT: } second {
// CHECK-NEXT: ^bb0(%[[V4]]: tensor<?x64xf16>):
// CHECK-NEXT: %[[V5]] = moe.layer %[[V4]] : tensor<?x64xf16> router(%[[V10:[a-z_0-9]+]] : tensor<4x64xf16>) gate(%[[V11:[a-z_0-9]+]] : tensor<4x32x64xf16>) up(%[[V12:[a-z_0-9]+]] : tensor<4x32x64xf16>) down(%[[V13:[a-z_0-9]+]] : tensor<4x64x32xf16>) shared_up(%[[V14:[a-z_0-9]+]] : tensor<64x64xf16>) shared_down(%[[V15:[a-z_0-9]+]] : tensor<64x64xf16>) {routing = #moe.routing<softmax, topk, k = 2, renormalize>, shared_activation = #moe.activation<gelu>} -> tensor<?x64xf16>
// CHECK-NEXT: moe.yield %[[V5]] : tensor<?x64xf16>
// CHECK-NEXT: }
// CHECK-NEXT: return %[[V1]] : tensor<?x64xf16>

func.func @biases_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %gate: tensor<8x48x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>, %gate_bias: tensor<8x48xf32>, %up_bias: tensor<8x48xf32>, %down_bias: tensor<8x32xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) gate(%gate : tensor<8x48x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>) gate_bias(%gate_bias : tensor<8x48xf32>) up_bias(%up_bias : tensor<8x48xf32>) down_bias(%down_bias : tensor<8x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>, activation = #moe.activation<geglu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @capacity_bf16(%input: tensor<?x32xbf16>, %router: tensor<8x32xbf16>, %up: tensor<8x48x32xbf16>, %down: tensor<8x32x48xbf16>) -> (tensor<?x32xbf16>, tensor<i64>) {
  %y, %n = moe.layer %input : tensor<?x32xbf16> router(%router : tensor<8x32xbf16>) up(%up : tensor<8x48x32xbf16>) down(%down : tensor<8x32x48xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>, dispatch = #moe.dispatch<capacity>, capacity_factor = 0.75 : f64} -> tensor<?x32xbf16>, tensor<i64>
  return %y, %n : tensor<?x32xbf16>, tensor<i64>
}
func.func @switch_bf16(%input: tensor<?x32xbf16>, %router: tensor<8x32xbf16>, %up: tensor<8x48x32xbf16>, %down: tensor<8x32x48xbf16>) -> (tensor<?x32xbf16>, tensor<i64>) {
  %y, %n = moe.layer %input : tensor<?x32xbf16> router(%router : tensor<8x32xbf16>) up(%up : tensor<8x48x32xbf16>) down(%down : tensor<8x32x48xbf16>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>, dispatch = #moe.dispatch<capacity>, expert_capacity = 5} -> tensor<?x32xbf16>, tensor<i64>
  return %y, %n : tensor<?x32xbf16>, tensor<i64>
}
func.func @output_bias_bf16(%input: tensor<?x32xbf16>, %router: tensor<8x32xbf16>, %gate: tensor<8x48x32xbf16>, %up: tensor<8x48x32xbf16>, %down: tensor<8x32x48xbf16>, %output_bias: tensor<32xbf16>) -> (tensor<?x32xbf16>) {
  %y = moe.layer %input : tensor<?x32xbf16> router(%router : tensor<8x32xbf16>) gate(%gate : tensor<8x48x32xbf16>) up(%up : tensor<8x48x32xbf16>) down(%down : tensor<8x32x48xbf16>) output_bias(%output_bias : tensor<32xbf16>)
      {routing = #moe.routing<none, topk_then_softmax, k = 2>, activation = #moe.activation<swiglu>} -> tensor<?x32xbf16>
  return %y : tensor<?x32xbf16>
}
func.func @dense_geglu_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %gate: tensor<8x48x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) gate(%gate : tensor<8x48x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>)
      {routing = #moe.routing<softmax, dense, k = 8>, activation = #moe.activation<geglu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @group_max_gelu_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>)
      {routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 4, topk_group = 2, scaling_factor = 1.5>, activation = #moe.activation<gelu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @group_top2_sum_swiglu_bf16(%input: tensor<?x32xbf16>, %router: tensor<8x32xbf16>, %selection_bias: tensor<8xf32>, %gate: tensor<8x48x32xbf16>, %up: tensor<8x48x32xbf16>, %down: tensor<8x32x48xbf16>) -> (tensor<?x32xbf16>) {
  %y = moe.layer %input : tensor<?x32xbf16> router(%router : tensor<8x32xbf16>) selection_bias(%selection_bias : tensor<8xf32>) gate(%gate : tensor<8x48x32xbf16>) up(%up : tensor<8x48x32xbf16>) down(%down : tensor<8x32x48xbf16>)
      {routing = #moe.routing<sigmoid, group_limited_topk, k = 3, n_group = 4, topk_group = 2, group_score = top2_sum, renormalize>, activation = #moe.activation<swiglu>} -> tensor<?x32xbf16>
  return %y : tensor<?x32xbf16>
}
func.func @hierarchical_dense_relu_bf16(%input: tensor<?x32xbf16>, %router: tensor<8x32xbf16>, %group_router: tensor<2x32xbf16>, %up: tensor<8x48x32xbf16>, %down: tensor<8x32x48xbf16>) -> (tensor<?x32xbf16>) {
  %y = moe.layer %input : tensor<?x32xbf16> router(%router : tensor<8x32xbf16>) group_router(%group_router : tensor<2x32xbf16>) up(%up : tensor<8x48x32xbf16>) down(%down : tensor<8x32x48xbf16>)
      {routing = #moe.routing<softmax, hierarchical, k = 8, n_group = 2, topk_group = 1>, activation = #moe.activation<relu>} -> tensor<?x32xbf16>
  return %y : tensor<?x32xbf16>
}
func.func @hierarchical_gelu_tanh_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %group_router: tensor<2x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) group_router(%group_router : tensor<2x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>)
      {routing = #moe.routing<softmax, hierarchical, k = 3, n_group = 2, tau_group = 0.5, tau_expert = 2.0>, activation = #moe.activation<gelu_tanh>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @lora_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %group_router: tensor<2x32xf32>, %lora_base: tensor<32x32xf32>, %lora_a: tensor<8x4x32xf32>, %lora_b: tensor<8x32x4xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) group_router(%group_router : tensor<2x32xf32>) lora_base(%lora_base : tensor<32x32xf32>) lora_a(%lora_a : tensor<8x4x32xf32>) lora_b(%lora_b : tensor<8x32x4xf32>)
      {lora_alpha = 8.0 : f64, routing = #moe.routing<softmax, hierarchical, k = 3, n_group = 2, tau_group = 0.5, tau_expert = 2.0>, activation = #moe.activation<swiglu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @projected_f32(%input: tensor<?x32xf32>, %domain_embeddings: tensor<8x8xf32>, %proj_w1: tensor<12x8xf32>, %proj_w2: tensor<32x6xf32>, %gate: tensor<8x48x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>, %shared_gate: tensor<48x32xf32>, %shared_up: tensor<48x32xf32>, %shared_down: tensor<32x48xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> domain_embeddings(%domain_embeddings : tensor<8x8xf32>) proj_w1(%proj_w1 : tensor<12x8xf32>) proj_w2(%proj_w2 : tensor<32x6xf32>) gate(%gate : tensor<8x48x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>) shared_gate(%shared_gate : tensor<48x32xf32>) shared_up(%shared_up : tensor<48x32xf32>) shared_down(%shared_down : tensor<32x48xf32>)
      {shared_activation = #moe.activation<swiglu>, routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<swiglu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @shared_bf16(%input: tensor<?x32xbf16>, %router: tensor<8x32xbf16>, %gate: tensor<8x48x32xbf16>, %up: tensor<8x48x32xbf16>, %down: tensor<8x32x48xbf16>, %shared_gate: tensor<48x32xbf16>, %shared_up: tensor<48x32xbf16>, %shared_down: tensor<32x48xbf16>) -> (tensor<?x32xbf16>) {
  %y = moe.layer %input : tensor<?x32xbf16> router(%router : tensor<8x32xbf16>) gate(%gate : tensor<8x48x32xbf16>) up(%up : tensor<8x48x32xbf16>) down(%down : tensor<8x32x48xbf16>) shared_gate(%shared_gate : tensor<48x32xbf16>) shared_up(%shared_up : tensor<48x32xbf16>) shared_down(%shared_down : tensor<32x48xbf16>)
      {shared_activation = #moe.activation<swiglu>, routing = #moe.routing<softmax, topk, k = 2, renormalize>, activation = #moe.activation<swiglu>} -> tensor<?x32xbf16>
  return %y : tensor<?x32xbf16>
}
func.func @shared_f16(%input: tensor<?x32xf16>, %router: tensor<8x32xf16>, %gate: tensor<8x48x32xf16>, %up: tensor<8x48x32xf16>, %down: tensor<8x32x48xf16>, %shared_gate: tensor<48x32xf16>, %shared_up: tensor<48x32xf16>, %shared_down: tensor<32x48xf16>) -> (tensor<?x32xf16>) {
  %y = moe.layer %input : tensor<?x32xf16> router(%router : tensor<8x32xf16>) gate(%gate : tensor<8x48x32xf16>) up(%up : tensor<8x48x32xf16>) down(%down : tensor<8x32x48xf16>) shared_gate(%shared_gate : tensor<48x32xf16>) shared_up(%shared_up : tensor<48x32xf16>) shared_down(%shared_down : tensor<32x48xf16>)
      {shared_activation = #moe.activation<swiglu>, routing = #moe.routing<softmax, topk, k = 2, renormalize>, activation = #moe.activation<swiglu>} -> tensor<?x32xf16>
  return %y : tensor<?x32xf16>
}
func.func @shared_gated_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %gate: tensor<8x48x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>, %shared_up: tensor<48x32xf32>, %shared_down: tensor<32x48xf32>, %shared_gate_weight: tensor<1x32xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) gate(%gate : tensor<8x48x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>) shared_up(%shared_up : tensor<48x32xf32>) shared_down(%shared_down : tensor<32x48xf32>) shared_gate_weight(%shared_gate_weight : tensor<1x32xf32>)
      {shared_activation = #moe.activation<relu>, routing = #moe.routing<softmax, topk, k = 2, renormalize>, activation = #moe.activation<swiglu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @special_bf16(%input: tensor<?x32xbf16>, %router: tensor<8x32xbf16>, %gate: tensor<5x48x32xbf16>, %up: tensor<5x48x32xbf16>, %down: tensor<5x32x48xbf16>, %const_router: tensor<1x2x32xbf16>, %const_vectors: tensor<1x32xbf16>) -> (tensor<?x32xbf16>) {
  %y = moe.layer %input : tensor<?x32xbf16> router(%router : tensor<8x32xbf16>) gate(%gate : tensor<5x48x32xbf16>) up(%up : tensor<5x48x32xbf16>) down(%down : tensor<5x32x48xbf16>) const_router(%const_router : tensor<1x2x32xbf16>) const_vectors(%const_vectors : tensor<1x32xbf16>)
      {special_kinds = [#moe.special<zero>, #moe.special<copy>, #moe.special<constant>], routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<swiglu>} -> tensor<?x32xbf16>
  return %y : tensor<?x32xbf16>
}
func.func @top_p_relu2_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>)
      {routing = #moe.routing<softmax, top_p, k = 4, top_p = 0.5>, activation = #moe.activation<relu2>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @topk_sigmoid_bias_swiglu_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %selection_bias: tensor<8xf32>, %gate: tensor<8x48x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) selection_bias(%selection_bias : tensor<8xf32>) gate(%gate : tensor<8x48x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>)
      {routing = #moe.routing<sigmoid, topk, k = 2, renormalize, scaling_factor = 2.5>, activation = #moe.activation<swiglu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @topk_softmax_raw_relu_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<relu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @topk_softmax_swiglu_f32(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %gate: tensor<8x48x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>) -> (tensor<?x32xf32>) {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) gate(%gate : tensor<8x48x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>, activation = #moe.activation<swiglu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
func.func @topk_then_softmax_swiglu_clamped_bf16(%input: tensor<?x32xbf16>, %router: tensor<8x32xbf16>, %router_bias: tensor<8xbf16>, %gate: tensor<8x48x32xbf16>, %up: tensor<8x48x32xbf16>, %down: tensor<8x32x48xbf16>, %gate_bias: tensor<8x48xbf16>, %up_bias: tensor<8x48xbf16>, %down_bias: tensor<8x32xbf16>) -> (tensor<?x32xbf16>) {
  %y = moe.layer %input : tensor<?x32xbf16> router(%router : tensor<8x32xbf16>) router_bias(%router_bias : tensor<8xbf16>) gate(%gate : tensor<8x48x32xbf16>) up(%up : tensor<8x48x32xbf16>) down(%down : tensor<8x32x48xbf16>) gate_bias(%gate_bias : tensor<8x48xbf16>) up_bias(%up_bias : tensor<8x48xbf16>) down_bias(%down_bias : tensor<8x32xbf16>)
      {routing = #moe.routing<none, topk_then_softmax, k = 2>, activation = #moe.activation<swiglu_clamped>, alpha = 1.5 : f64, limit = 1.0 : f64} -> tensor<?x32xbf16>
  return %y : tensor<?x32xbf16>
}
  func.func @staged_lora_f32(%arg0: tensor<?x32xf32>, %arg1: tensor<8x32xf32>, %arg2: tensor<2x32xf32>, %arg3: tensor<32x32xf32>, %arg4: tensor<8x4x32xf32>, %arg5: tensor<8x32x4xf32>) -> tensor<?x32xf32> {
    %0 = moe.linear %arg0, %arg1 : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
    %1 = moe.linear %arg0, %arg2 : (tensor<?x32xf32>, tensor<2x32xf32>) -> tensor<?x2xf32>
    %indices, %weights = moe.route %0 groups %1 : tensor<?x2xf32> {routing = #moe.routing<softmax, hierarchical, k = 3, n_group = 2, tau_group = 5.000000e-01, tau_expert = 2.000000e+00>} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
    %2 = moe.linear %arg0, %arg3 : (tensor<?x32xf32>, tensor<32x32xf32>) -> tensor<?x32xf32>
    %3 = moe.lora_experts %arg0, %indices a(%arg4 : tensor<8x4x32xf32>) b(%arg5 : tensor<8x32x4xf32>) {alpha = 8.000000e+00 : f64} : tensor<?x32xf32>, tensor<?x3xi32> -> tensor<?x3x32xf32>
    %4 = moe.combine weights(%weights : tensor<?x3xf32>) slots(%3 : tensor<?x3x32xf32>) addends(%2 : tensor<?x32xf32>) : tensor<?x32xf32>
    return %4 : tensor<?x32xf32>
  }

  func.func @staged_special_bf16(%arg0: tensor<?x32xbf16>, %arg1: tensor<8x32xbf16>, %arg2: tensor<5x48x32xbf16>, %arg3: tensor<5x48x32xbf16>, %arg4: tensor<5x32x48xbf16>, %arg5: tensor<1x2x32xbf16>, %arg6: tensor<1x32xbf16>) -> tensor<?x32xbf16> {
    %0 = moe.linear %arg0, %arg1 : (tensor<?x32xbf16>, tensor<8x32xbf16>) -> tensor<?x8xf32>
    %indices, %weights = moe.route %0 {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %1 = moe.experts %arg0, %indices gate(%arg2 : tensor<5x48x32xbf16>) up(%arg3 : tensor<5x48x32xbf16>) down(%arg4 : tensor<5x32x48xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x32xbf16>, tensor<?x2xi32> -> tensor<?x2x32xf32>
    %2 = moe.special_experts %arg0, %indices const_router(%arg5 : tensor<1x2x32xbf16>) const_vectors(%arg6 : tensor<1x32xbf16>) {expert_offset = 5 : i64, kinds = [#moe.special<zero>, #moe.special<copy>, #moe.special<constant>]} : tensor<?x32xbf16>, tensor<?x2xi32> -> tensor<?x2x32xf32>
    %3 = moe.combine weights(%weights : tensor<?x2xf32>) slots(%1, %2 : tensor<?x2x32xf32>, tensor<?x2x32xf32>) : tensor<?x32xbf16>
    return %3 : tensor<?x32xbf16>
  }

  func.func @staged_projected_f32(%arg0: tensor<?x32xf32>, %arg1: tensor<8x8xf32>, %arg2: tensor<12x8xf32>, %arg3: tensor<32x6xf32>, %arg4: tensor<8x48x32xf32>, %arg5: tensor<8x48x32xf32>, %arg6: tensor<8x32x48xf32>, %arg7: tensor<48x32xf32>, %arg8: tensor<48x32xf32>, %arg9: tensor<32x48xf32>) -> tensor<?x32xf32> {
    %0 = moe.projected_router %arg1, %arg2, %arg3 : (tensor<8x8xf32>, tensor<12x8xf32>, tensor<32x6xf32>) -> tensor<8x32xf32>
    %1 = moe.linear %arg0, %0 : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
    %indices, %weights = moe.route %1 {routing = #moe.routing<softmax, topk, k = 1>} : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
    %2 = moe.experts %arg0, %indices gate(%arg4 : tensor<8x48x32xf32>) up(%arg5 : tensor<8x48x32xf32>) down(%arg6 : tensor<8x32x48xf32>) {activation = #moe.activation<swiglu>} : tensor<?x32xf32>, tensor<?x1xi32> -> tensor<?x1x32xf32>
    %3 = moe.ffn %arg0 gate(%arg7 : tensor<48x32xf32>) up(%arg8 : tensor<48x32xf32>) down(%arg9 : tensor<32x48xf32>) {activation = #moe.activation<swiglu>} : tensor<?x32xf32> -> tensor<?x32xf32>
    %4 = moe.combine weights(%weights : tensor<?x1xf32>) slots(%2 : tensor<?x1x32xf32>) addends(%3 : tensor<?x32xf32>) : tensor<?x32xf32>
    return %4 : tensor<?x32xf32>
  }

  func.func @staged_capacity_bf16(%arg0: tensor<?x32xbf16>, %arg1: tensor<8x32xbf16>, %arg2: tensor<8x48x32xbf16>, %arg3: tensor<8x32x48xbf16>) -> (tensor<?x32xbf16>, tensor<i64>) {
    %0 = moe.linear %arg0, %arg1 : (tensor<?x32xbf16>, tensor<8x32xbf16>) -> tensor<?x8xf32>
    %indices, %weights = moe.route %0 {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %admitted_indices, %admitted_weights, %dropped = moe.dispatch %indices, %weights {capacity_factor = 7.500000e-01 : f64, mode = #moe.dispatch<capacity>, num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
    %1 = moe.experts %arg0, %admitted_indices up(%arg2 : tensor<8x48x32xbf16>) down(%arg3 : tensor<8x32x48xbf16>) {activation = #moe.activation<gelu>} : tensor<?x32xbf16>, tensor<?x2xi32> -> tensor<?x2x32xf32>
    %2 = moe.combine weights(%admitted_weights : tensor<?x2xf32>) slots(%1 : tensor<?x2x32xf32>) : tensor<?x32xbf16>
    return %2, %dropped : tensor<?x32xbf16>, tensor<i64>
  }

  func.func @staged_hierarchical_gelu_tanh_f32(%arg0: tensor<?x32xf32>, %arg1: tensor<8x32xf32>, %arg2: tensor<2x32xf32>, %arg3: tensor<8x48x32xf32>, %arg4: tensor<8x32x48xf32>) -> tensor<?x32xf32> {
    %0 = moe.linear %arg0, %arg1 : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
    %1 = moe.linear %arg0, %arg2 : (tensor<?x32xf32>, tensor<2x32xf32>) -> tensor<?x2xf32>
    %indices, %weights = moe.route %0 groups %1 : tensor<?x2xf32> {routing = #moe.routing<softmax, hierarchical, k = 3, n_group = 2, tau_group = 5.000000e-01, tau_expert = 2.000000e+00>} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
    %2 = moe.experts %arg0, %indices up(%arg3 : tensor<8x48x32xf32>) down(%arg4 : tensor<8x32x48xf32>) {activation = #moe.activation<gelu_tanh>} : tensor<?x32xf32>, tensor<?x3xi32> -> tensor<?x3x32xf32>
    %3 = moe.combine weights(%weights : tensor<?x3xf32>) slots(%2 : tensor<?x3x32xf32>) : tensor<?x32xf32>
    return %3 : tensor<?x32xf32>
  }

  func.func @staged_group_top2_sum_swiglu_bf16(%arg0: tensor<?x32xbf16>, %arg1: tensor<8x32xbf16>, %arg2: tensor<8xf32>, %arg3: tensor<8x48x32xbf16>, %arg4: tensor<8x48x32xbf16>, %arg5: tensor<8x32x48xbf16>) -> tensor<?x32xbf16> {
    %0 = moe.linear %arg0, %arg1 : (tensor<?x32xbf16>, tensor<8x32xbf16>) -> tensor<?x8xf32>
    %indices, %weights = moe.route %0 bias %arg2 : tensor<8xf32> {routing = #moe.routing<sigmoid, group_limited_topk, k = 3, n_group = 4, topk_group = 2, group_score = top2_sum, renormalize>} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
    %1 = moe.experts %arg0, %indices gate(%arg3 : tensor<8x48x32xbf16>) up(%arg4 : tensor<8x48x32xbf16>) down(%arg5 : tensor<8x32x48xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x32xbf16>, tensor<?x3xi32> -> tensor<?x3x32xf32>
    %2 = moe.combine weights(%weights : tensor<?x3xf32>) slots(%1 : tensor<?x3x32xf32>) : tensor<?x32xbf16>
    return %2 : tensor<?x32xbf16>
  }

  func.func @staged_top_p_relu2_f32(%arg0: tensor<?x32xf32>, %arg1: tensor<8x32xf32>, %arg2: tensor<8x48x32xf32>, %arg3: tensor<8x32x48xf32>) -> tensor<?x32xf32> {
    %0 = moe.linear %arg0, %arg1 : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
    %indices, %weights = moe.route %0 {routing = #moe.routing<softmax, top_p, k = 4, top_p = 5.000000e-01>} : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    %1 = moe.experts %arg0, %indices up(%arg2 : tensor<8x48x32xf32>) down(%arg3 : tensor<8x32x48xf32>) {activation = #moe.activation<relu2>} : tensor<?x32xf32>, tensor<?x4xi32> -> tensor<?x4x32xf32>
    %2 = moe.combine weights(%weights : tensor<?x4xf32>) slots(%1 : tensor<?x4x32xf32>) : tensor<?x32xf32>
    return %2 : tensor<?x32xf32>
  }

  func.func @staged_shared_gated_f32(%arg0: tensor<?x32xf32>, %arg1: tensor<8x32xf32>, %arg2: tensor<8x48x32xf32>, %arg3: tensor<8x48x32xf32>, %arg4: tensor<8x32x48xf32>, %arg5: tensor<48x32xf32>, %arg6: tensor<32x48xf32>, %arg7: tensor<1x32xf32>) -> tensor<?x32xf32> {
    %0 = moe.linear %arg0, %arg1 : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
    %indices, %weights = moe.route %0 {routing = #moe.routing<softmax, topk, k = 2, renormalize>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %1 = moe.experts %arg0, %indices gate(%arg2 : tensor<8x48x32xf32>) up(%arg3 : tensor<8x48x32xf32>) down(%arg4 : tensor<8x32x48xf32>) {activation = #moe.activation<swiglu>} : tensor<?x32xf32>, tensor<?x2xi32> -> tensor<?x2x32xf32>
    %2 = moe.ffn %arg0 up(%arg5 : tensor<48x32xf32>) down(%arg6 : tensor<32x48xf32>) gate_weight(%arg7 : tensor<1x32xf32>) {activation = #moe.activation<relu>} : tensor<?x32xf32> -> tensor<?x32xf32>
    %3 = moe.combine weights(%weights : tensor<?x2xf32>) slots(%1 : tensor<?x2x32xf32>) addends(%2 : tensor<?x32xf32>) : tensor<?x32xf32>
    return %3 : tensor<?x32xf32>
  }

  func.func @staged_topk_then_softmax_swiglu_clamped_bf16(%arg0: tensor<?x32xbf16>, %arg1: tensor<8x32xbf16>, %arg2: tensor<8xbf16>, %arg3: tensor<8x48x32xbf16>, %arg4: tensor<8x48x32xbf16>, %arg5: tensor<8x32x48xbf16>, %arg6: tensor<8x48xbf16>, %arg7: tensor<8x48xbf16>, %arg8: tensor<8x32xbf16>) -> tensor<?x32xbf16> {
    %0 = moe.linear %arg0, %arg1 bias %arg2 : (tensor<?x32xbf16>, tensor<8x32xbf16>, tensor<8xbf16>) -> tensor<?x8xf32>
    %indices, %weights = moe.route %0 {routing = #moe.routing<none, topk_then_softmax, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %1 = moe.experts %arg0, %indices gate(%arg3 : tensor<8x48x32xbf16>) up(%arg4 : tensor<8x48x32xbf16>) down(%arg5 : tensor<8x32x48xbf16>) gate_bias(%arg6 : tensor<8x48xbf16>) up_bias(%arg7 : tensor<8x48xbf16>) down_bias(%arg8 : tensor<8x32xbf16>) {activation = #moe.activation<swiglu_clamped>, alpha = 1.500000e+00 : f64, limit = 1.000000e+00 : f64} : tensor<?x32xbf16>, tensor<?x2xi32> -> tensor<?x2x32xf32>
    %2 = moe.combine weights(%weights : tensor<?x2xf32>) slots(%1 : tensor<?x2x32xf32>) : tensor<?x32xbf16>
    return %2 : tensor<?x32xbf16>
  }

  func.func @staged_dense_geglu_f32(%arg0: tensor<?x32xf32>, %arg1: tensor<8x32xf32>, %arg2: tensor<8x48x32xf32>, %arg3: tensor<8x48x32xf32>, %arg4: tensor<8x32x48xf32>) -> tensor<?x32xf32> {
    %0 = moe.linear %arg0, %arg1 : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
    %indices, %weights = moe.route %0 {routing = #moe.routing<softmax, dense, k = 8>} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
    %1 = moe.experts %arg0, %indices gate(%arg2 : tensor<8x48x32xf32>) up(%arg3 : tensor<8x48x32xf32>) down(%arg4 : tensor<8x32x48xf32>) {activation = #moe.activation<geglu>} : tensor<?x32xf32>, tensor<?x8xi32> -> tensor<?x8x32xf32>
    %2 = moe.combine weights(%weights : tensor<?x8xf32>) slots(%1 : tensor<?x8x32xf32>) : tensor<?x32xf32>
    return %2 : tensor<?x32xf32>
  }

  func.func @staged_cartesian(%arg0: tensor<?x64xf16>, %arg1: tensor<64xf16>, %arg2: tensor<4x64xf16>, %arg3: tensor<4x32x64xf16>, %arg4: tensor<4x32x64xf16>, %arg5: tensor<4x64x32xf16>, %arg6: tensor<4x64xf16>, %arg7: tensor<4x32x64xf16>, %arg8: tensor<4x32x64xf16>, %arg9: tensor<4x64x32xf16>, %arg10: tensor<64x64xf16>, %arg11: tensor<64x64xf16>) -> tensor<?x64xf16> {
    %0 = moe.linear %arg0, %arg2 : (tensor<?x64xf16>, tensor<4x64xf16>) -> tensor<?x4xf32>
    %indices, %weights = moe.route %0 {routing = #moe.routing<softmax, topk, k = 2, renormalize>} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %1 = moe.experts %arg0, %indices gate(%arg3 : tensor<4x32x64xf16>) up(%arg4 : tensor<4x32x64xf16>) down(%arg5 : tensor<4x64x32xf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
    %2 = moe.combine weights(%weights : tensor<?x2xf32>) slots(%1 : tensor<?x2x64xf32>) : tensor<?x64xf16>
    %3 = moe.combine addends(%arg0, %2 : tensor<?x64xf16>, tensor<?x64xf16>) : tensor<?x64xf16>
    %4 = moe.rms_norm %3, %arg1 : tensor<?x64xf16>, tensor<64xf16>
    %5 = moe.linear %4, %arg6 : (tensor<?x64xf16>, tensor<4x64xf16>) -> tensor<?x4xf32>
    %indices_0, %weights_1 = moe.route %5 {routing = #moe.routing<softmax, topk, k = 2, renormalize>} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %6 = moe.experts %4, %indices_0 gate(%arg7 : tensor<4x32x64xf16>) up(%arg8 : tensor<4x32x64xf16>) down(%arg9 : tensor<4x64x32xf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
    %7 = moe.ffn %4 up(%arg10 : tensor<64x64xf16>) down(%arg11 : tensor<64x64xf16>) {activation = #moe.activation<gelu>} : tensor<?x64xf16> -> tensor<?x64xf32>
    %8 = moe.combine weights(%weights_1 : tensor<?x2xf32>) slots(%6 : tensor<?x2x64xf32>) addends(%7 : tensor<?x64xf32>) : tensor<?x64xf16>
    return %8 : tensor<?x64xf16>
  }

func.func @linear_static_f16(%x: tensor<5x16xf16>, %w: tensor<8x16xf16>) -> tensor<5x8xf32> {
  %y = moe.linear %x, %w : (tensor<5x16xf16>, tensor<8x16xf16>) -> tensor<5x8xf32>
  return %y : tensor<5x8xf32>
}
func.func @dispatch_dropless(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>) {
  %i2, %w2, %n = moe.dispatch %i, %w {num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return %i2, %w2, %n : tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>
}
func.func @combine_many(%w: tensor<?x2xf32>, %s0: tensor<?x2x16xf32>, %s1: tensor<?x2x16xf32>, %a0: tensor<?x16xbf16>, %a1: tensor<?x16xf32>, %b: tensor<16xbf16>) -> (tensor<?x16xbf16>, tensor<?x16xf16>, tensor<?x16xbf16>) {
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s0, %s1 : tensor<?x2x16xf32>, tensor<?x2x16xf32>) addends(%a0, %a1 : tensor<?x16xbf16>, tensor<?x16xf32>) : tensor<?x16xbf16>
  %z = moe.combine addends(%a1 : tensor<?x16xf32>) : tensor<?x16xf16>
  %v = moe.combine weights(%w : tensor<?x2xf32>) slots(%s0 : tensor<?x2x16xf32>) bias(%b : tensor<16xbf16>) : tensor<?x16xbf16>
  return %y, %z, %v : tensor<?x16xbf16>, tensor<?x16xf16>, tensor<?x16xbf16>
}
func.func @experts_offset_relu2(%x: tensor<?x16xf16>, %i: tensor<?x2xi32>, %u: tensor<4x32x16xf16>, %d: tensor<4x16x32xf16>) -> tensor<?x2x16xf32> {
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf16>) down(%d : tensor<4x16x32xf16>) {activation = #moe.activation<relu2>, expert_offset = 4 : i64} : tensor<?x16xf16>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return %s : tensor<?x2x16xf32>
}
func.func @special_zero_copy(%x: tensor<3x16xf32>, %i: tensor<3x2xi32>) -> tensor<3x2x16xf32> {
  %s = moe.special_experts %x, %i {kinds = [#moe.special<zero>, #moe.special<copy>]} : tensor<3x16xf32>, tensor<3x2xi32> -> tensor<3x2x16xf32>
  return %s : tensor<3x2x16xf32>
}
func.func @rms_norm_bf16(%x: tensor<?x16xbf16>, %g: tensor<16xbf16>) -> tensor<?x16xbf16> {
  %y = moe.rms_norm %x, %g {epsilon = 1.0e-5 : f64} : tensor<?x16xbf16>, tensor<16xbf16>
  return %y : tensor<?x16xbf16>
}
func.func @cartesian_layer(%x: tensor<?x64xf16>, %norm: tensor<64xf16>,
    %ra: tensor<4x64xf16>, %ga: tensor<4x32x64xf16>, %ua: tensor<4x32x64xf16>, %da: tensor<4x64x32xf16>,
    %rb: tensor<4x64xf16>, %gb: tensor<4x32x64xf16>, %ub: tensor<4x32x64xf16>, %db: tensor<4x64x32xf16>,
    %su: tensor<64x64xf16>, %sd: tensor<64x64xf16>) -> tensor<?x64xf16> {
  %y = moe.cartesian %x norm(%norm : tensor<64xf16>) : tensor<?x64xf16>
  first {
  ^bb0(%a: tensor<?x64xf16>):
    %ya = moe.layer %a : tensor<?x64xf16> router(%ra : tensor<4x64xf16>)
        gate(%ga : tensor<4x32x64xf16>) up(%ua : tensor<4x32x64xf16>) down(%da : tensor<4x64x32xf16>)
        {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x64xf16>
    moe.yield %ya : tensor<?x64xf16>
  } second {
  ^bb0(%b: tensor<?x64xf16>):
    %yb = moe.layer %b : tensor<?x64xf16> router(%rb : tensor<4x64xf16>)
        gate(%gb : tensor<4x32x64xf16>) up(%ub : tensor<4x32x64xf16>) down(%db : tensor<4x64x32xf16>)
        shared_up(%su : tensor<64x64xf16>) shared_down(%sd : tensor<64x64xf16>)
        {routing = #moe.routing<softmax, topk, k = 2, renormalize>,
         shared_activation = #moe.activation<gelu>} -> tensor<?x64xf16>
    moe.yield %yb : tensor<?x64xf16>
  }
  return %y : tensor<?x64xf16>
}

// A merged layer (moe-merge-experts): 4 router rows over 3 experts, and the
// staged op that maps router ids onto merged experts.
// CHECK-LABEL: func.func @merged_layer(
// CHECK: moe.layer %{{.+}} : tensor<?x16xf32> router(%{{.+}} : tensor<4x16xf32>) up(%{{.+}} : tensor<3x32x16xf32>) down(%{{.+}} : tensor<3x16x32xf32>) {activation = #moe.activation<gelu>, expert_map = array<i32: 0, 1, 0, 2>, routing = #moe.routing<softmax, topk, k = 2>} -> tensor<?x16xf32>
func.func @merged_layer(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<3x32x16xf32>,
    %d: tensor<3x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<3x32x16xf32>)
      down(%d : tensor<3x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>,
       expert_map = array<i32: 0, 1, 0, 2>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
// CHECK-LABEL: func.func @remap_experts(
// CHECK: moe.remap_experts %{{.+}} {map = array<i32: 0, 1, 0, 2>, num_targets = 3 : i64} : tensor<?x2xi32>
func.func @remap_experts(%i: tensor<?x2xi32>) -> tensor<?x2xi32> {
  %j = moe.remap_experts %i {map = array<i32: 0, 1, 0, 2>, num_targets = 3 : i64} : tensor<?x2xi32>
  return %j : tensor<?x2xi32>
}
// Sparsemixer (PhiMoE): jitter_eps is always printed, 0.01 when left out.
// CHECK-LABEL: func.func @sparsemixer(
// CHECK: moe.route %{{.+}} {routing = #moe.routing<none, sparsemixer, k = 2, jitter_eps = 1.000000e-02>}
// CHECK: moe.route %{{.+}} {routing = #moe.routing<none, sparsemixer, k = 1, renormalize, jitter_eps = 2.500000e-01>}
func.func @sparsemixer(%l: tensor<?x16xf32>) -> (tensor<?x2xf32>, tensor<?x1xf32>) {
  %i, %w = moe.route %l {routing = #moe.routing<none, sparsemixer, k = 2>} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %j, %v = moe.route %l {routing = #moe.routing<none, sparsemixer, k = 1, renormalize, jitter_eps = 0.25>} : tensor<?x16xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  return %w, %v : tensor<?x2xf32>, tensor<?x1xf32>
}

// CHECK-LABEL: func.func @scale_input(
// CHECK: moe.layer {{.+}} {routing = #moe.routing<sigmoid, topk, k = 1>, scale_input}
// CHECK: moe.experts {{.+}} input_scale(%{{.+}} : tensor<?x1xf32>) {activation = #moe.activation<swiglu>}
// CHECK: moe.combine slots(%{{.+}} : tensor<?x1x16xf32>) : tensor<?x16xf32>
func.func @scale_input(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %i: tensor<?x1xi32>,
    %w: tensor<?x1xf32>) -> (tensor<?x16xf32>, tensor<?x16xf32>) {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>)
      gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<sigmoid, topk, k = 1>, activation = #moe.activation<swiglu>,
       scale_input} -> tensor<?x16xf32>
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>) input_scale(%w : tensor<?x1xf32>)
      {activation = #moe.activation<swiglu>}
      : tensor<?x16xf32>, tensor<?x1xi32> -> tensor<?x1x16xf32>
  %c = moe.combine slots(%s : tensor<?x1x16xf32>) : tensor<?x16xf32>
  return %y, %c : tensor<?x16xf32>, tensor<?x16xf32>
}
