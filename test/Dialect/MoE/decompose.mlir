// RUN: moe-opt %s --moe-decompose --split-input-file | FileCheck %s

// Mixtral: router logits in f32, top-2 route, grouped experts, combine in the
// layer's element type. Dropless layers get no moe.dispatch.
// CHECK-LABEL: func.func @mixtral
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xbf16>, %[[WR:[^:]+]]: tensor<8x16xbf16>, %[[G:[^:]+]]: tensor<8x32x16xbf16>, %[[U:[^:]+]]: tensor<8x32x16xbf16>, %[[D:[^:]+]]: tensor<8x16x32xbf16>)
// CHECK-NOT: moe.layer
// CHECK: %[[L:.+]] = moe.linear %[[X]], %[[WR]] : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xf32>
// CHECK: %[[I:.+]], %[[W:.+]] = moe.route %[[L]] {routing = #moe.routing<softmax, topk, k = 2, renormalize>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK-NOT: moe.dispatch
// CHECK: %[[S:.+]] = moe.experts %[[X]], %[[I]] gate(%[[G]] : {{.+}}) up(%[[U]] : {{.+}}) down(%[[D]] : {{.+}}) {activation = #moe.activation<swiglu>} : tensor<?x16xbf16>, tensor<?x2xi32> -> tensor<?x2x16xf32>
// CHECK: %[[Y:.+]] = moe.combine weights(%[[W]] : tensor<?x2xf32>) slots(%[[S]] : tensor<?x2x16xf32>) : tensor<?x16xbf16>
// CHECK: return %[[Y]]
func.func @mixtral(%x: tensor<?x16xbf16>, %wr: tensor<8x16xbf16>, %g: tensor<8x32x16xbf16>,
    %u: tensor<8x32x16xbf16>, %d: tensor<8x16x32xbf16>) -> tensor<?x16xbf16> {
  %y = moe.layer %x : tensor<?x16xbf16> router(%wr : tensor<8x16xbf16>) gate(%g : tensor<8x32x16xbf16>)
      up(%u : tensor<8x32x16xbf16>) down(%d : tensor<8x16x32xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xbf16>
  return %y : tensor<?x16xbf16>
}

// -----

// Capacity dispatch: moe.dispatch feeds the experts and the combine, and its
// drop count replaces the layer's second result.
// CHECK-LABEL: func.func @capacity
// CHECK: %[[I:.+]], %[[W:.+]] = moe.route
// CHECK: %[[AI:.+]], %[[AW:.+]], %[[N:.+]] = moe.dispatch %[[I]], %[[W]] {capacity_factor = 1.250000e+00 : f64, mode = #moe.dispatch<capacity>, num_experts = 4 : i64}
// CHECK: %[[S:.+]] = moe.experts %{{.+}}, %[[AI]]
// CHECK: %[[Y:.+]] = moe.combine weights(%[[AW]] : tensor<7x2xf32>) slots(%[[S]] : tensor<7x2x16xf32>) : tensor<7x16xf32>
// CHECK: return %[[Y]], %[[N]]
func.func @capacity(%x: tensor<7x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> (tensor<7x16xf32>, tensor<i64>) {
  %y, %n = moe.layer %x : tensor<7x16xf32> router(%wr : tensor<4x16xf32>)
      up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>,
       dispatch = #moe.dispatch<capacity>, capacity_factor = 1.25 : f64}
      -> tensor<7x16xf32>, tensor<i64>
  return %y, %n : tensor<7x16xf32>, tensor<i64>
}

// -----

// Switch Transformers' fixed expert_capacity passes to moe.dispatch.
// CHECK-LABEL: func.func @fixed_capacity
// CHECK: moe.dispatch %{{.+}}, %{{.+}} {expert_capacity = 3 : i64, mode = #moe.dispatch<capacity>, num_experts = 4 : i64}
func.func @fixed_capacity(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> (tensor<?x16xf32>, tensor<i64>) {
  %y, %n = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>)
      up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>,
       dispatch = #moe.dispatch<capacity>, expert_capacity = 3}
      -> tensor<?x16xf32>, tensor<i64>
  return %y, %n : tensor<?x16xf32>, tensor<i64>
}

// -----

// JetMoE's output_bias becomes the combine's bias.
// CHECK-LABEL: func.func @output_bias
// CHECK-SAME: %[[B:[^:]+]]: tensor<16xbf16>
// CHECK: moe.combine weights(%{{.+}} : tensor<?x2xf32>) slots(%{{.+}} : tensor<?x2x16xf32>) bias(%[[B]] : tensor<16xbf16>) : tensor<?x16xbf16>
func.func @output_bias(%x: tensor<?x16xbf16>, %wr: tensor<4x16xbf16>, %u: tensor<4x32x16xbf16>,
    %d: tensor<4x16x32xbf16>, %b: tensor<16xbf16>) -> tensor<?x16xbf16> {
  %y = moe.layer %x : tensor<?x16xbf16> router(%wr : tensor<4x16xbf16>)
      up(%u : tensor<4x32x16xbf16>) down(%d : tensor<4x16x32xbf16>) output_bias(%b : tensor<16xbf16>)
      {routing = #moe.routing<none, topk_then_softmax, k = 2>, activation = #moe.activation<relu>}
      -> tensor<?x16xbf16>
  return %y : tensor<?x16xbf16>
}

// -----

// DeepSeek-V3: router bias stays on the logits, the selection bias on the
// route; the shared expert becomes an f32 moe.ffn addend.
// CHECK-LABEL: func.func @deepseek_v3
// CHECK-SAME: %[[RB:[^:]+]]: tensor<8xf32>, %[[SB:[^:]+]]: tensor<8xf32>
// CHECK: %[[L:.+]] = moe.linear %{{.+}}, %{{.+}} bias %[[RB]]
// CHECK: moe.route %[[L]] bias %[[SB]] : tensor<8xf32> {routing = #moe.routing<sigmoid, group_limited_topk, k = 2, n_group = 4, topk_group = 2, group_score = top2_sum, renormalize, scaling_factor = 2.500000e+00>}
// CHECK: %[[S:.+]] = moe.experts
// CHECK: %[[SH:.+]] = moe.ffn %{{.+}} gate(%{{.+}}) up(%{{.+}}) down(%{{.+}}) gate_weight(%{{.+}} : tensor<1x16xf32>) {activation = #moe.activation<swiglu>} : tensor<?x16xf32> -> tensor<?x16xf32>
// CHECK: moe.combine weights(%{{.+}}) slots(%[[S]] : tensor<?x2x16xf32>) addends(%[[SH]] : tensor<?x16xf32>) : tensor<?x16xf32>
func.func @deepseek_v3(%x: tensor<?x16xf32>, %wr: tensor<8x16xf32>, %rb: tensor<8xf32>, %sb: tensor<8xf32>,
    %g: tensor<8x32x16xf32>, %u: tensor<8x32x16xf32>, %d: tensor<8x16x32xf32>,
    %sg: tensor<64x16xf32>, %su: tensor<64x16xf32>, %sd: tensor<16x64xf32>, %sgw: tensor<1x16xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<8x16xf32>) router_bias(%rb : tensor<8xf32>)
      selection_bias(%sb : tensor<8xf32>) gate(%g : tensor<8x32x16xf32>) up(%u : tensor<8x32x16xf32>)
      down(%d : tensor<8x16x32xf32>) shared_gate(%sg : tensor<64x16xf32>) shared_up(%su : tensor<64x16xf32>)
      shared_down(%sd : tensor<16x64xf32>) shared_gate_weight(%sgw : tensor<1x16xf32>)
      {routing = #moe.routing<sigmoid, group_limited_topk, k = 2, n_group = 4, topk_group = 2,
                              group_score = top2_sum, renormalize, scaling_factor = 2.5>}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// gpt-oss: clamped SwiGLU keeps its constants and biases on moe.experts.
// CHECK-LABEL: func.func @gpt_oss
// CHECK: moe.route %{{.+}} {routing = #moe.routing<none, topk_then_softmax, k = 2>}
// CHECK: moe.experts {{.+}} gate_bias(%{{.+}} : tensor<4x32xbf16>) up_bias(%{{.+}} : tensor<4x32xbf16>) down_bias(%{{.+}} : tensor<4x16xbf16>) {activation = #moe.activation<swiglu_clamped>, alpha = 1.500000e+00 : f64, limit = 5.000000e+00 : f64}
func.func @gpt_oss(%x: tensor<?x16xbf16>, %wr: tensor<4x16xbf16>, %rb: tensor<4xbf16>,
    %g: tensor<4x32x16xbf16>, %u: tensor<4x32x16xbf16>, %d: tensor<4x16x32xbf16>,
    %gb: tensor<4x32xbf16>, %ub: tensor<4x32xbf16>, %db: tensor<4x16xbf16>) -> tensor<?x16xbf16> {
  %y = moe.layer %x : tensor<?x16xbf16> router(%wr : tensor<4x16xbf16>) router_bias(%rb : tensor<4xbf16>)
      gate(%g : tensor<4x32x16xbf16>) up(%u : tensor<4x32x16xbf16>) down(%d : tensor<4x16x32xbf16>)
      gate_bias(%gb : tensor<4x32xbf16>) up_bias(%ub : tensor<4x32xbf16>) down_bias(%db : tensor<4x16xbf16>)
      {routing = #moe.routing<none, topk_then_softmax, k = 2>, activation = #moe.activation<swiglu_clamped>,
       alpha = 1.5 : f64, limit = 5.0 : f64}
      -> tensor<?x16xbf16>
  return %y : tensor<?x16xbf16>
}

// -----

// Nexus: the router matrix is projected from the domain embeddings.
// CHECK-LABEL: func.func @nexus
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf16>, %[[DE:[^:]+]]: tensor<4x8xf16>, %[[P1:[^:]+]]: tensor<12x8xf16>, %[[P2:[^:]+]]: tensor<16x6xf16>
// CHECK: %[[WR:.+]] = moe.projected_router %[[DE]], %[[P1]], %[[P2]] : (tensor<4x8xf16>, tensor<12x8xf16>, tensor<16x6xf16>) -> tensor<4x16xf32>
// CHECK: %[[L:.+]] = moe.linear %[[X]], %[[WR]] : (tensor<?x16xf16>, tensor<4x16xf32>) -> tensor<?x4xf32>
// CHECK: moe.route %[[L]] {routing = #moe.routing<softmax, topk, k = 1>}
func.func @nexus(%x: tensor<?x16xf16>, %de: tensor<4x8xf16>, %p1: tensor<12x8xf16>, %p2: tensor<16x6xf16>,
    %g: tensor<4x32x16xf16>, %u: tensor<4x32x16xf16>, %d: tensor<4x16x32xf16>) -> tensor<?x16xf16> {
  %y = moe.layer %x : tensor<?x16xf16> domain_embeddings(%de : tensor<4x8xf16>) proj_w1(%p1 : tensor<12x8xf16>)
      proj_w2(%p2 : tensor<16x6xf16>) gate(%g : tensor<4x32x16xf16>) up(%u : tensor<4x32x16xf16>)
      down(%d : tensor<4x16x32xf16>) {routing = #moe.routing<softmax, topk, k = 1>} -> tensor<?x16xf16>
  return %y : tensor<?x16xf16>
}

// -----

// AT-MoE: hierarchical routing takes the group router's logits; LoRA
// experts give per-slot deltas and the shared base is one addend.
// CHECK-LABEL: func.func @at_moe
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[WD:[^:]+]]: tensor<4x16xf32>, %[[WG:[^:]+]]: tensor<2x16xf32>, %[[B0:[^:]+]]: tensor<16x16xf32>
// CHECK: %[[L:.+]] = moe.linear %[[X]], %[[WD]] : {{.+}} -> tensor<?x4xf32>
// CHECK: %[[GL:.+]] = moe.linear %[[X]], %[[WG]] : {{.+}} -> tensor<?x2xf32>
// CHECK: %[[I:.+]], %[[W:.+]] = moe.route %[[L]] groups %[[GL]] : tensor<?x2xf32> {routing = #moe.routing<softmax, hierarchical, k = 4, n_group = 2, tau_group = 5.000000e-01, tau_expert = 2.000000e+00>}
// CHECK: %[[BASE:.+]] = moe.linear %[[X]], %[[B0]] : (tensor<?x16xf32>, tensor<16x16xf32>) -> tensor<?x16xf32>
// CHECK: %[[D:.+]] = moe.lora_experts %[[X]], %[[I]] a(%{{.+}} : tensor<4x2x16xf32>) b(%{{.+}} : tensor<4x16x2xf32>) {alpha = 8.000000e+00 : f64}
// CHECK: moe.combine weights(%[[W]] : tensor<?x4xf32>) slots(%[[D]] : tensor<?x4x16xf32>) addends(%[[BASE]] : tensor<?x16xf32>)
func.func @at_moe(%x: tensor<?x16xf32>, %wd: tensor<4x16xf32>, %wg: tensor<2x16xf32>, %b0: tensor<16x16xf32>,
    %a: tensor<4x2x16xf32>, %b: tensor<4x16x2xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wd : tensor<4x16xf32>) group_router(%wg : tensor<2x16xf32>)
      lora_base(%b0 : tensor<16x16xf32>) lora_a(%a : tensor<4x2x16xf32>) lora_b(%b : tensor<4x16x2xf32>)
      {routing = #moe.routing<softmax, hierarchical, k = 4, n_group = 2, tau_group = 0.5, tau_expert = 2.0>,
       lora_alpha = 8.0 : f64}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// MoE++: special experts take the ids after the 4 FFN experts.
// CHECK-LABEL: func.func @moe_plus_plus
// CHECK: %[[I:.+]], %[[W:.+]] = moe.route
// CHECK: %[[F:.+]] = moe.experts %{{.+}}, %[[I]]
// CHECK: %[[Z:.+]] = moe.special_experts %{{.+}}, %[[I]] const_router(%{{.+}} : tensor<1x2x16xf32>) const_vectors(%{{.+}} : tensor<1x16xf32>) {expert_offset = 4 : i64, kinds = [#moe.special<zero>, #moe.special<copy>, #moe.special<constant>]}
// CHECK: moe.combine weights(%[[W]] : tensor<?x2xf32>) slots(%[[F]], %[[Z]] : tensor<?x2x16xf32>, tensor<?x2x16xf32>)
func.func @moe_plus_plus(%x: tensor<?x16xf32>, %wr: tensor<7x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>, %cr: tensor<1x2x16xf32>, %cv: tensor<1x16xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<7x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>) const_router(%cr : tensor<1x2x16xf32>) const_vectors(%cv : tensor<1x16xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<relu2>,
       special_kinds = [#moe.special<zero>, #moe.special<copy>, #moe.special<constant>]}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// CartesianMoE: h = x + A(x) as a two-addend combine, RMSNorm, then B(norm(h)).
// CHECK-LABEL: func.func @cartesian
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[NW:[^:]+]]: tensor<16xf32>
// CHECK-NOT: moe.cartesian
// CHECK: %[[A:.+]] = moe.combine weights{{.+}} : tensor<?x16xf32>
// CHECK: %[[H:.+]] = moe.combine addends(%[[X]], %[[A]] : tensor<?x16xf32>, tensor<?x16xf32>) : tensor<?x16xf32>
// CHECK: %[[N:.+]] = moe.rms_norm %[[H]], %[[NW]] {epsilon = 1.000000e-05 : f64}
// CHECK: moe.linear %[[N]]
// CHECK: %[[B:.+]] = moe.combine weights
// CHECK-NOT: moe.yield
// CHECK: return %[[B]]
func.func @cartesian(%x: tensor<?x16xf32>, %nw: tensor<16xf32>, %wa: tensor<4x16xf32>, %ua: tensor<4x32x16xf32>,
    %da: tensor<4x16x32xf32>, %wb: tensor<4x16xf32>, %ub: tensor<4x32x16xf32>, %db: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.cartesian %x norm(%nw : tensor<16xf32>) {epsilon = 1.0e-5 : f64} : tensor<?x16xf32>
  first {
  ^bb0(%a: tensor<?x16xf32>):
    %ya = moe.layer %a : tensor<?x16xf32> router(%wa : tensor<4x16xf32>) up(%ua : tensor<4x32x16xf32>)
        down(%da : tensor<4x16x32xf32>) {routing = #moe.routing<softmax, topk, k = 2>,
        activation = #moe.activation<relu>} -> tensor<?x16xf32>
    moe.yield %ya : tensor<?x16xf32>
  } second {
  ^bb0(%b: tensor<?x16xf32>):
    %yb = moe.layer %b : tensor<?x16xf32> router(%wb : tensor<4x16xf32>) up(%ub : tensor<4x32x16xf32>)
        down(%db : tensor<4x16x32xf32>) {routing = #moe.routing<softmax, topk, k = 1>,
        activation = #moe.activation<relu>} -> tensor<?x16xf32>
    moe.yield %yb : tensor<?x16xf32>
  }
  return %y : tensor<?x16xf32>
}

// -----

// Without a norm weight the second layer sees h directly.
// CHECK-LABEL: func.func @cartesian_no_norm
// CHECK: %[[H:.+]] = moe.combine addends
// CHECK-NOT: moe.rms_norm
// CHECK: moe.linear %[[H]]
func.func @cartesian_no_norm(%x: tensor<?x16xf32>, %wa: tensor<4x16xf32>, %ua: tensor<4x32x16xf32>,
    %da: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.cartesian %x : tensor<?x16xf32>
  first {
  ^bb0(%a: tensor<?x16xf32>):
    %ya = moe.layer %a : tensor<?x16xf32> router(%wa : tensor<4x16xf32>) up(%ua : tensor<4x32x16xf32>)
        down(%da : tensor<4x16x32xf32>) {routing = #moe.routing<softmax, topk, k = 2>,
        activation = #moe.activation<relu>} -> tensor<?x16xf32>
    moe.yield %ya : tensor<?x16xf32>
  } second {
  ^bb0(%b: tensor<?x16xf32>):
    %yb = moe.layer %b : tensor<?x16xf32> router(%wa : tensor<4x16xf32>) up(%ua : tensor<4x32x16xf32>)
        down(%da : tensor<4x16x32xf32>) {routing = #moe.routing<softmax, topk, k = 2>,
        activation = #moe.activation<relu>} -> tensor<?x16xf32>
    moe.yield %yb : tensor<?x16xf32>
  }
  return %y : tensor<?x16xf32>
}

// -----

// A merged layer: routing over the 4 router rows, then the map onto the 3
// merged experts before the expert op.
// CHECK-LABEL: func.func @merged
// CHECK: %[[L:.+]] = moe.linear %{{.+}}, %{{.+}} : {{.*}} -> tensor<?x4xf32>
// CHECK: %[[I:.+]], %[[W:.+]] = moe.route %[[L]]
// CHECK: %[[J:.+]] = moe.remap_experts %[[I]] {map = array<i32: 0, 1, 0, 2>, num_targets = 3 : i64} : tensor<?x2xi32>
// CHECK: moe.experts %{{.+}}, %[[J]]
func.func @merged(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<3x32x16xf32>,
    %d: tensor<3x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<3x32x16xf32>)
      down(%d : tensor<3x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>,
       expert_map = array<i32: 0, 1, 0, 2>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// scale_input (Llama 4): the route's weights scale the experts' input and
// the combine sums the slots with weight 1.
// CHECK-LABEL: func.func @scale_input
// CHECK: %[[I:.+]], %[[W:.+]] = moe.route
// CHECK: %[[S:.+]] = moe.experts %{{.+}}, %[[I]] gate({{.+}}) up({{.+}}) down({{.+}}) input_scale(%[[W]] : tensor<?x1xf32>)
// CHECK: %[[SH:.+]] = moe.ffn
// CHECK: moe.combine slots(%[[S]] : tensor<?x1x16xf32>) addends(%[[SH]] : tensor<?x16xf32>) : tensor<?x16xbf16>
func.func @scale_input(%x: tensor<?x16xbf16>, %wr: tensor<4x16xbf16>, %g: tensor<4x32x16xbf16>,
    %u: tensor<4x32x16xbf16>, %d: tensor<4x16x32xbf16>, %sg: tensor<32x16xbf16>,
    %su: tensor<32x16xbf16>, %sd: tensor<16x32xbf16>) -> tensor<?x16xbf16> {
  %y = moe.layer %x : tensor<?x16xbf16> router(%wr : tensor<4x16xbf16>)
      gate(%g : tensor<4x32x16xbf16>) up(%u : tensor<4x32x16xbf16>) down(%d : tensor<4x16x32xbf16>)
      shared_gate(%sg : tensor<32x16xbf16>) shared_up(%su : tensor<32x16xbf16>)
      shared_down(%sd : tensor<16x32xbf16>)
      {routing = #moe.routing<sigmoid, topk, k = 1>, activation = #moe.activation<swiglu>,
       scale_input} -> tensor<?x16xbf16>
  return %y : tensor<?x16xbf16>
}
