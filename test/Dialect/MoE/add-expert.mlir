// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-add-expert | FileCheck %s
// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-add-expert=router=row | FileCheck %s --check-prefix=ROW
// RUN: not moe-opt %s --split-input-file --moe-add-expert=router=projected 2>&1 | FileCheck %s --check-prefix=PROJ
// RUN: not moe-opt %s --moe-add-expert=router=learned 2>&1 | FileCheck %s --check-prefix=BADOPT
// PROJ: error: 'moe.layer' op cannot add an expert with router=projected: the layer has a stored router ('router'), not a projected router ('domain_embeddings', 'proj_w1', 'proj_w2')
// BADOPT: error: moe-add-expert: option 'router' must be 'row', 'projected' or 'auto', got 'learned'

// Mixtral: the new expert's router row, gate, up and down are appended to
// the function's arguments and joined after expert 3; k stays.
// CHECK-LABEL: func.func @mixtral
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xbf16>, %[[WR:[^:]+]]: tensor<4x16xbf16>, %[[G:[^:]+]]: tensor<4x32x16xbf16>, %[[U:[^:]+]]: tensor<4x32x16xbf16>, %[[D:[^:]+]]: tensor<4x16x32xbf16>,
// CHECK-SAME: %[[NEW_ROUTER_ROW:[^:]+]]: tensor<1x16xbf16>, %[[NEW_GATE:[^:]+]]: tensor<1x32x16xbf16>, %[[NEW_UP:[^:]+]]: tensor<1x32x16xbf16>, %[[NEW_DOWN:[^:]+]]: tensor<1x16x32xbf16>) -> tensor<?x16xbf16>
// CHECK-DAG: %[[WR5:.+]] = tensor.concat dim(0) %[[WR]], %[[NEW_ROUTER_ROW]] : (tensor<4x16xbf16>, tensor<1x16xbf16>) -> tensor<5x16xbf16>
// CHECK-DAG: %[[G5:.+]] = tensor.concat dim(0) %[[G]], %[[NEW_GATE]] : (tensor<4x32x16xbf16>, tensor<1x32x16xbf16>) -> tensor<5x32x16xbf16>
// CHECK-DAG: %[[U5:.+]] = tensor.concat dim(0) %[[U]], %[[NEW_UP]] : (tensor<4x32x16xbf16>, tensor<1x32x16xbf16>) -> tensor<5x32x16xbf16>
// CHECK-DAG: %[[D5:.+]] = tensor.concat dim(0) %[[D]], %[[NEW_DOWN]] : (tensor<4x16x32xbf16>, tensor<1x16x32xbf16>) -> tensor<5x16x32xbf16>
// CHECK: %[[Y:.+]] = moe.layer %[[X]] : tensor<?x16xbf16> router(%[[WR5]] : tensor<5x16xbf16>) gate(%[[G5]] : tensor<5x32x16xbf16>) up(%[[U5]] : tensor<5x32x16xbf16>) down(%[[D5]] : tensor<5x16x32xbf16>) {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xbf16>
// CHECK: return %[[Y]]
// ROW-LABEL: func.func @mixtral
// ROW-SAME: %{{[^:]+}}: tensor<1x16xbf16>, %{{[^:]+}}: tensor<1x32x16xbf16>, %{{[^:]+}}: tensor<1x32x16xbf16>, %{{[^:]+}}: tensor<1x16x32xbf16>) -> tensor<?x16xbf16>
// ROW: moe.layer {{.+}} router(%{{.+}} : tensor<5x16xbf16>)
func.func @mixtral(%x: tensor<?x16xbf16>, %wr: tensor<4x16xbf16>, %g: tensor<4x32x16xbf16>,
    %u: tensor<4x32x16xbf16>, %d: tensor<4x16x32xbf16>) -> tensor<?x16xbf16> {
  %y = moe.layer %x : tensor<?x16xbf16> router(%wr : tensor<4x16xbf16>) gate(%g : tensor<4x32x16xbf16>)
      up(%u : tensor<4x32x16xbf16>) down(%d : tensor<4x16x32xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xbf16>
  return %y : tensor<?x16xbf16>
}

// -----

// Every per-expert operand gets one new argument, in the layer's operand
// order; the shared expert is untouched.
// CHECK-LABEL: func.func @biases
// CHECK-SAME: %[[RB:[^:]+]]: tensor<4xf32>, %[[SB:[^:]+]]: tensor<4xf32>,
// CHECK-SAME: %[[GB:[^:]+]]: tensor<4x32xf32>, %[[UB:[^:]+]]: tensor<4x32xf32>, %[[DB:[^:]+]]: tensor<4x16xf32>, %[[SU:[^:]+]]: tensor<24x16xf32>, %[[SD:[^:]+]]: tensor<16x24xf32>,
// CHECK-SAME: %[[NEW_ROUTER_ROW:[^:]+]]: tensor<1x16xf32>, %[[NEW_ROUTER_BIAS:[^:]+]]: tensor<1xf32>, %[[NEW_SELECTION_BIAS:[^:]+]]: tensor<1xf32>, %[[NEW_GATE:[^:]+]]: tensor<1x32x16xf32>, %[[NEW_UP:[^:]+]]: tensor<1x32x16xf32>, %[[NEW_DOWN:[^:]+]]: tensor<1x16x32xf32>, %[[NEW_GATE_BIAS:[^:]+]]: tensor<1x32xf32>, %[[NEW_UP_BIAS:[^:]+]]: tensor<1x32xf32>, %[[NEW_DOWN_BIAS:[^:]+]]: tensor<1x16xf32>)
// CHECK-DAG: %[[RB5:.+]] = tensor.concat dim(0) %[[RB]], %[[NEW_ROUTER_BIAS]] : (tensor<4xf32>, tensor<1xf32>) -> tensor<5xf32>
// CHECK-DAG: %[[SB5:.+]] = tensor.concat dim(0) %[[SB]], %[[NEW_SELECTION_BIAS]] : (tensor<4xf32>, tensor<1xf32>) -> tensor<5xf32>
// CHECK-DAG: %[[GB5:.+]] = tensor.concat dim(0) %[[GB]], %[[NEW_GATE_BIAS]] : (tensor<4x32xf32>, tensor<1x32xf32>) -> tensor<5x32xf32>
// CHECK-DAG: %[[UB5:.+]] = tensor.concat dim(0) %[[UB]], %[[NEW_UP_BIAS]] : (tensor<4x32xf32>, tensor<1x32xf32>) -> tensor<5x32xf32>
// CHECK-DAG: %[[DB5:.+]] = tensor.concat dim(0) %[[DB]], %[[NEW_DOWN_BIAS]] : (tensor<4x16xf32>, tensor<1x16xf32>) -> tensor<5x16xf32>
// CHECK: moe.layer %{{.+}} router_bias(%[[RB5]] : tensor<5xf32>) selection_bias(%[[SB5]] : tensor<5xf32>) gate(%{{.+}} : tensor<5x32x16xf32>) up(%{{.+}} : tensor<5x32x16xf32>) down(%{{.+}} : tensor<5x16x32xf32>) gate_bias(%[[GB5]] : tensor<5x32xf32>) up_bias(%[[UB5]] : tensor<5x32xf32>) down_bias(%[[DB5]] : tensor<5x16xf32>) shared_up(%[[SU]] : tensor<24x16xf32>) shared_down(%[[SD]] : tensor<16x24xf32>)
// CHECK-SAME: routing = #moe.routing<sigmoid, topk, k = 2, renormalize, scaling_factor = 2.500000e+00>
func.func @biases(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %rb: tensor<4xf32>, %sb: tensor<4xf32>,
    %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>,
    %gb: tensor<4x32xf32>, %ub: tensor<4x32xf32>, %db: tensor<4x16xf32>,
    %su: tensor<24x16xf32>, %sd: tensor<16x24xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) router_bias(%rb : tensor<4xf32>)
      selection_bias(%sb : tensor<4xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>) gate_bias(%gb : tensor<4x32xf32>) up_bias(%ub : tensor<4x32xf32>)
      down_bias(%db : tensor<4x16xf32>) shared_up(%su : tensor<24x16xf32>) shared_down(%sd : tensor<16x24xf32>)
      {routing = #moe.routing<sigmoid, topk, k = 2, renormalize, scaling_factor = 2.5>,
       activation = #moe.activation<swiglu_clamped>, shared_activation = #moe.activation<relu>}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Dense routing has one slot per expert: k = E + 1.
// CHECK-LABEL: func.func @dense
// CHECK: moe.layer {{.+}} router(%{{.+}} : tensor<5x16xf32>)
// CHECK-SAME: routing = #moe.routing<softmax, dense, k = 5>
func.func @dense(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, dense, k = 4>, activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// LoRA experts: a new A and B; the shared base stays.
// CHECK-LABEL: func.func @lora
// CHECK-SAME: %[[B0:[^:]+]]: tensor<16x16xf32>, %[[A:[^:]+]]: tensor<4x2x16xf32>, %[[B:[^:]+]]: tensor<4x16x2xf32>,
// CHECK-SAME: %[[NEW_ROUTER_ROW:[^:]+]]: tensor<1x16xf32>, %[[NEW_A:[^:]+]]: tensor<1x2x16xf32>, %[[NEW_B:[^:]+]]: tensor<1x16x2xf32>)
// CHECK-DAG: %[[A5:.+]] = tensor.concat dim(0) %[[A]], %[[NEW_A]]
// CHECK-DAG: %[[B5:.+]] = tensor.concat dim(0) %[[B]], %[[NEW_B]]
// CHECK: moe.layer {{.+}} lora_base(%[[B0]] : tensor<16x16xf32>) lora_a(%[[A5]] : tensor<5x2x16xf32>) lora_b(%[[B5]] : tensor<5x16x2xf32>)
func.func @lora(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %b0: tensor<16x16xf32>,
    %a: tensor<4x2x16xf32>, %b: tensor<4x16x2xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>)
      lora_base(%b0 : tensor<16x16xf32>) lora_a(%a : tensor<4x2x16xf32>) lora_b(%b : tensor<4x16x2xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, lora_alpha = 8.0 : f64}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Projected router (Nexus): the new expert brings its domain embedding,
// routed through the layer's learned projection. With router=row the
// stored router P(D) is computed first and the new row (f32, like P(D)) is
// appended to it.
// CHECK-LABEL: func.func @nexus
// CHECK-SAME: %[[DE:[^:]+]]: tensor<4x8xf16>, %[[P1:[^:]+]]: tensor<12x8xf16>, %[[P2:[^:]+]]: tensor<16x6xf16>
// CHECK-SAME: %[[NEW_DOMAIN_EMBEDDING:[^:]+]]: tensor<1x8xf16>, %{{[^:]+}}: tensor<1x32x16xf16>, %{{[^:]+}}: tensor<1x32x16xf16>, %{{[^:]+}}: tensor<1x16x32xf16>)
// CHECK-NOT: moe.projected_router
// CHECK: %[[DE5:.+]] = tensor.concat dim(0) %[[DE]], %[[NEW_DOMAIN_EMBEDDING]] : (tensor<4x8xf16>, tensor<1x8xf16>) -> tensor<5x8xf16>
// CHECK: moe.layer {{.+}} domain_embeddings(%[[DE5]] : tensor<5x8xf16>) proj_w1(%[[P1]] : tensor<12x8xf16>) proj_w2(%[[P2]] : tensor<16x6xf16>) gate(%{{.+}} : tensor<5x32x16xf16>)
// ROW-LABEL: func.func @nexus
// ROW-SAME: %[[DE:[^:]+]]: tensor<4x8xf16>, %[[P1:[^:]+]]: tensor<12x8xf16>, %[[P2:[^:]+]]: tensor<16x6xf16>
// ROW-SAME: %[[NEW_ROUTER_ROW:[^:]+]]: tensor<1x16xf32>, %{{[^:]+}}: tensor<1x32x16xf16>, %{{[^:]+}}: tensor<1x32x16xf16>, %{{[^:]+}}: tensor<1x16x32xf16>)
// ROW: %[[WR:.+]] = moe.projected_router %[[DE]], %[[P1]], %[[P2]] : (tensor<4x8xf16>, tensor<12x8xf16>, tensor<16x6xf16>) -> tensor<4x16xf32>
// ROW: %[[WR5:.+]] = tensor.concat dim(0) %[[WR]], %[[NEW_ROUTER_ROW]] : (tensor<4x16xf32>, tensor<1x16xf32>) -> tensor<5x16xf32>
// ROW: moe.layer %{{.+}} : tensor<?x16xf16> router(%[[WR5]] : tensor<5x16xf32>) gate(
// ROW-NOT: domain_embeddings
func.func @nexus(%x: tensor<?x16xf16>, %de: tensor<4x8xf16>, %p1: tensor<12x8xf16>, %p2: tensor<16x6xf16>,
    %g: tensor<4x32x16xf16>, %u: tensor<4x32x16xf16>, %d: tensor<4x16x32xf16>) -> tensor<?x16xf16> {
  %y = moe.layer %x : tensor<?x16xf16> domain_embeddings(%de : tensor<4x8xf16>) proj_w1(%p1 : tensor<12x8xf16>)
      proj_w2(%p2 : tensor<16x6xf16>) gate(%g : tensor<4x32x16xf16>) up(%u : tensor<4x32x16xf16>)
      down(%d : tensor<4x16x32xf16>) {routing = #moe.routing<softmax, topk, k = 1>} -> tensor<?x16xf16>
  return %y : tensor<?x16xf16>
}

// -----

// Zero-computation experts keep the ids after the routed ones: the new
// router row goes in as row 4, before theirs.
// CHECK-LABEL: func.func @special
// CHECK-SAME: %[[WR:[^:]+]]: tensor<6x16xf32>
// CHECK-SAME: %[[NEW_ROUTER_ROW:[^:]+]]: tensor<1x16xf32>, %{{[^:]+}}: tensor<1x32x16xf32>, %{{[^:]+}}: tensor<1x16x32xf32>)
// CHECK-DAG: %[[HEAD:.+]] = tensor.extract_slice %[[WR]][0, 0] [4, 16] [1, 1] : tensor<6x16xf32> to tensor<4x16xf32>
// CHECK-DAG: %[[TAIL:.+]] = tensor.extract_slice %[[WR]][4, 0] [2, 16] [1, 1] : tensor<6x16xf32> to tensor<2x16xf32>
// CHECK: %[[WR7:.+]] = tensor.concat dim(0) %[[HEAD]], %[[NEW_ROUTER_ROW]], %[[TAIL]] : (tensor<4x16xf32>, tensor<1x16xf32>, tensor<2x16xf32>) -> tensor<7x16xf32>
// CHECK: moe.layer {{.+}} router(%[[WR7]] : tensor<7x16xf32>) up(%{{.+}} : tensor<5x32x16xf32>) down(%{{.+}} : tensor<5x16x32xf32>)
// CHECK-SAME: special_kinds = [#moe.special<zero>, #moe.special<copy>]
func.func @special(%x: tensor<?x16xf32>, %wr: tensor<6x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<6x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<relu>,
       special_kinds = [#moe.special<zero>, #moe.special<copy>]} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Two layers in one function (a moe.cartesian): each gets its own new
// arguments, first region first.
// CHECK-LABEL: func.func @cartesian
// CHECK-SAME: %[[NEW_ROW_A:[^:]+]]: tensor<1x16xf32>, %{{[^:]+}}: tensor<1x32x16xf32>, %{{[^:]+}}: tensor<1x16x32xf32>, %[[NEW_ROW_B:[^:]+]]: tensor<1x16xf32>, %{{[^:]+}}: tensor<1x32x16xf32>, %{{[^:]+}}: tensor<1x16x32xf32>)
// CHECK: first
// CHECK: %[[WA:.+]] = tensor.concat dim(0) %{{.+}}, %[[NEW_ROW_A]] : (tensor<4x16xf32>, tensor<1x16xf32>) -> tensor<5x16xf32>
// CHECK: moe.layer {{.+}} router(%[[WA]] : tensor<5x16xf32>)
// CHECK: second
// CHECK: %[[WB:.+]] = tensor.concat dim(0) %{{.+}}, %[[NEW_ROW_B]] : (tensor<2x16xf32>, tensor<1x16xf32>) -> tensor<3x16xf32>
// CHECK: moe.layer {{.+}} router(%[[WB]] : tensor<3x16xf32>)
func.func @cartesian(%x: tensor<?x16xf32>, %wa: tensor<4x16xf32>, %ua: tensor<4x32x16xf32>,
    %da: tensor<4x16x32xf32>, %wb: tensor<2x16xf32>, %ub: tensor<2x32x16xf32>,
    %db: tensor<2x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.cartesian %x : tensor<?x16xf32>
  first {
  ^bb0(%a: tensor<?x16xf32>):
    %ya = moe.layer %a : tensor<?x16xf32> router(%wa : tensor<4x16xf32>) up(%ua : tensor<4x32x16xf32>)
        down(%da : tensor<4x16x32xf32>)
        {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>} -> tensor<?x16xf32>
    moe.yield %ya : tensor<?x16xf32>
  } second {
  ^bb0(%b: tensor<?x16xf32>):
    %yb = moe.layer %b : tensor<?x16xf32> router(%wb : tensor<2x16xf32>) up(%ub : tensor<2x32x16xf32>)
        down(%db : tensor<2x16x32xf32>)
        {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>} -> tensor<?x16xf32>
    moe.yield %yb : tensor<?x16xf32>
  }
  return %y : tensor<?x16xf32>
}

// -----

// Errors (the same with router=auto and router=row).

// 9 experts do not split into n_group = 2 equal groups.
func.func @n_group(%x: tensor<?x16xf32>, %wr: tensor<8x16xf32>, %u: tensor<8x32x16xf32>,
    %d: tensor<8x16x32xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.layer' op cannot add an expert: routing n_group = 2 must divide the number of experts after the add, E = 8 + 1 = 9}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<8x16xf32>) up(%u : tensor<8x32x16xf32>)
      down(%d : tensor<8x16x32xf32>)
      {routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 2, topk_group = 1>,
       activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A called function cannot change its signature.
func.func private @callee(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.layer' op cannot add an expert: its function @callee is called, and adding the new expert's weights as arguments would change its signature}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
func.func @caller(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = call @callee(%x, %wr, %u, %d) : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
