// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-drop-experts=experts=1,3 | FileCheck %s
// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-drop-experts=experts=2,3 | FileCheck %s --check-prefix=TAIL
// Options the layers of this file reject everywhere (they check only the
// message; the other cases' errors are ignored):
// RUN: not moe-opt %s --split-input-file --moe-drop-experts=experts=1,1 2>&1 | FileCheck %s --check-prefix=DUP
// RUN: not moe-opt %s --split-input-file --moe-drop-experts=experts=0,1,2,3 2>&1 | FileCheck %s --check-prefix=ALL
// RUN: not moe-opt %s --split-input-file --moe-drop-experts=experts=-1 2>&1 | FileCheck %s --check-prefix=NEG
// RUN: not moe-opt %s --moe-drop-experts 2>&1 | FileCheck %s --check-prefix=NOIDS
// DUP: error: 'moe.layer' op cannot drop expert 1: it is listed twice
// ALL: error: 'moe.layer' op cannot drop experts [0, 1, 2, 3]: that is every one of the E = 4 experts; at least one must stay
// NEG: error: 'moe.layer' op cannot drop expert -1: the layer has E = 4 routed experts (ids 0 to 3)
// NOIDS: error: moe-drop-experts needs the ids of the experts to drop (option 'experts'

// Weights as arguments: every per-expert operand keeps rows 0 and 2 (one
// slice per run of kept experts, joined on dim 0); k = 2 stays. Dropping
// 2 and 3 (TAIL) keeps one run: a single slice, no concat.
// CHECK-LABEL: func.func @mixtral
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[WR:[^:]+]]: tensor<4x16xf32>, %[[G:[^:]+]]: tensor<4x32x16xf32>, %[[U:[^:]+]]: tensor<4x32x16xf32>, %[[D:[^:]+]]: tensor<4x16x32xf32>)
// CHECK-DAG: %[[WR0:.+]] = tensor.extract_slice %[[WR]][0, 0] [1, 16] [1, 1] : tensor<4x16xf32> to tensor<1x16xf32>
// CHECK-DAG: %[[WR2:.+]] = tensor.extract_slice %[[WR]][2, 0] [1, 16] [1, 1] : tensor<4x16xf32> to tensor<1x16xf32>
// CHECK-DAG: %[[WRK:.+]] = tensor.concat dim(0) %[[WR0]], %[[WR2]] : (tensor<1x16xf32>, tensor<1x16xf32>) -> tensor<2x16xf32>
// CHECK-DAG: %[[G0:.+]] = tensor.extract_slice %[[G]][0, 0, 0] [1, 32, 16] [1, 1, 1] : tensor<4x32x16xf32> to tensor<1x32x16xf32>
// CHECK-DAG: %[[G2:.+]] = tensor.extract_slice %[[G]][2, 0, 0] [1, 32, 16] [1, 1, 1] : tensor<4x32x16xf32> to tensor<1x32x16xf32>
// CHECK-DAG: %[[GK:.+]] = tensor.concat dim(0) %[[G0]], %[[G2]] : (tensor<1x32x16xf32>, tensor<1x32x16xf32>) -> tensor<2x32x16xf32>
// CHECK-DAG: %[[U0:.+]] = tensor.extract_slice %[[U]][0, 0, 0] [1, 32, 16]
// CHECK-DAG: %[[U2:.+]] = tensor.extract_slice %[[U]][2, 0, 0] [1, 32, 16]
// CHECK-DAG: %[[UK:.+]] = tensor.concat dim(0) %[[U0]], %[[U2]]
// CHECK-DAG: %[[D0:.+]] = tensor.extract_slice %[[D]][0, 0, 0] [1, 16, 32]
// CHECK-DAG: %[[D2:.+]] = tensor.extract_slice %[[D]][2, 0, 0] [1, 16, 32]
// CHECK-DAG: %[[DK:.+]] = tensor.concat dim(0) %[[D0]], %[[D2]]
// CHECK: %[[Y:.+]] = moe.layer %[[X]] : tensor<?x16xf32> router(%[[WRK]] : tensor<2x16xf32>) gate(%[[GK]] : tensor<2x32x16xf32>) up(%[[UK]] : tensor<2x32x16xf32>) down(%[[DK]] : tensor<2x16x32xf32>) {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
// CHECK: return %[[Y]]
// TAIL-LABEL: func.func @mixtral
// TAIL-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[WR:[^:]+]]: tensor<4x16xf32>, %[[G:[^:]+]]: tensor<4x32x16xf32>, %[[U:[^:]+]]: tensor<4x32x16xf32>, %[[D:[^:]+]]: tensor<4x16x32xf32>)
// TAIL-NOT: tensor.concat
// TAIL-DAG: %[[WRK:.+]] = tensor.extract_slice %[[WR]][0, 0] [2, 16] [1, 1] : tensor<4x16xf32> to tensor<2x16xf32>
// TAIL-DAG: %[[GK:.+]] = tensor.extract_slice %[[G]][0, 0, 0] [2, 32, 16]
// TAIL-DAG: %[[UK:.+]] = tensor.extract_slice %[[U]][0, 0, 0] [2, 32, 16]
// TAIL-DAG: %[[DK:.+]] = tensor.extract_slice %[[D]][0, 0, 0] [2, 16, 32]
// TAIL-NOT: tensor.concat
// TAIL: moe.layer %[[X]] : tensor<?x16xf32> router(%[[WRK]] : tensor<2x16xf32>) gate(%[[GK]] : tensor<2x32x16xf32>) up(%[[UK]] : tensor<2x32x16xf32>) down(%[[DK]] : tensor<2x16x32xf32>)
func.func @mixtral(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>)
      up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Router bias, selection bias and the experts' biases lose the same
// entries; the shared expert is untouched.
// CHECK-LABEL: func.func @biases
// CHECK-SAME: %[[RB:[^:]+]]: tensor<4xf32>, %[[SB:[^:]+]]: tensor<4xf32>
// CHECK-SAME: %[[GB:[^:]+]]: tensor<4x32xf32>, %[[UB:[^:]+]]: tensor<4x32xf32>, %[[DB:[^:]+]]: tensor<4x16xf32>, %[[SU:[^:]+]]: tensor<24x16xf32>, %[[SD:[^:]+]]: tensor<16x24xf32>)
// CHECK-DAG: %[[RB0:.+]] = tensor.extract_slice %[[RB]][0] [1] [1] : tensor<4xf32> to tensor<1xf32>
// CHECK-DAG: %[[RB2:.+]] = tensor.extract_slice %[[RB]][2] [1] [1] : tensor<4xf32> to tensor<1xf32>
// CHECK-DAG: %[[RBK:.+]] = tensor.concat dim(0) %[[RB0]], %[[RB2]] : (tensor<1xf32>, tensor<1xf32>) -> tensor<2xf32>
// CHECK-DAG: %[[SB0:.+]] = tensor.extract_slice %[[SB]][0] [1] [1]
// CHECK-DAG: %[[SB2:.+]] = tensor.extract_slice %[[SB]][2] [1] [1]
// CHECK-DAG: %[[SBK:.+]] = tensor.concat dim(0) %[[SB0]], %[[SB2]]
// CHECK-DAG: %[[GB0:.+]] = tensor.extract_slice %[[GB]][0, 0] [1, 32] [1, 1]
// CHECK-DAG: %[[GB2:.+]] = tensor.extract_slice %[[GB]][2, 0] [1, 32] [1, 1]
// CHECK-DAG: %[[GBK:.+]] = tensor.concat dim(0) %[[GB0]], %[[GB2]]
// CHECK-DAG: %[[UB0:.+]] = tensor.extract_slice %[[UB]][0, 0] [1, 32] [1, 1]
// CHECK-DAG: %[[UB2:.+]] = tensor.extract_slice %[[UB]][2, 0] [1, 32] [1, 1]
// CHECK-DAG: %[[UBK:.+]] = tensor.concat dim(0) %[[UB0]], %[[UB2]]
// CHECK-DAG: %[[DB0:.+]] = tensor.extract_slice %[[DB]][0, 0] [1, 16] [1, 1]
// CHECK-DAG: %[[DB2:.+]] = tensor.extract_slice %[[DB]][2, 0] [1, 16] [1, 1]
// CHECK-DAG: %[[DBK:.+]] = tensor.concat dim(0) %[[DB0]], %[[DB2]]
// CHECK: moe.layer %{{.+}} router_bias(%[[RBK]] : tensor<2xf32>) selection_bias(%[[SBK]] : tensor<2xf32>) gate(%{{.+}} : tensor<2x32x16xf32>) up(%{{.+}} : tensor<2x32x16xf32>) down(%{{.+}} : tensor<2x16x32xf32>) gate_bias(%[[GBK]] : tensor<2x32xf32>) up_bias(%[[UBK]] : tensor<2x32xf32>) down_bias(%[[DBK]] : tensor<2x16xf32>) shared_up(%[[SU]] : tensor<24x16xf32>) shared_down(%[[SD]] : tensor<16x24xf32>)
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

// k = 3 does not fit in the two experts left: it becomes 2.
// CHECK-LABEL: func.func @clamp_k
// CHECK: moe.layer {{.+}} router(%{{.+}} : tensor<2x16xf32>)
// CHECK-SAME: routing = #moe.routing<softmax, topk, k = 2>
func.func @clamp_k(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 3>, activation = #moe.activation<gelu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Dense routing keeps one slot per expert: k = E - 2.
// CHECK-LABEL: func.func @dense
// CHECK: moe.layer {{.+}} router(%{{.+}} : tensor<4x16xf32>)
// CHECK-SAME: routing = #moe.routing<softmax, dense, k = 4>
func.func @dense(%x: tensor<?x16xf32>, %wr: tensor<6x16xf32>, %u: tensor<6x32x16xf32>,
    %d: tensor<6x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<6x16xf32>) up(%u : tensor<6x32x16xf32>)
      down(%d : tensor<6x16x32xf32>)
      {routing = #moe.routing<softmax, dense, k = 6>, activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Group-limited top-k: 6 experts left in n_group = 2 groups; k = 3 still
// fits in the topk_group = 1 group of 3.
// CHECK-LABEL: func.func @groups
// CHECK: moe.layer {{.+}} router(%{{.+}} : tensor<6x16xf32>)
// CHECK-SAME: routing = #moe.routing<softmax, group_limited_topk, k = 3, n_group = 2, topk_group = 1>
func.func @groups(%x: tensor<?x16xf32>, %wr: tensor<8x16xf32>, %u: tensor<8x32x16xf32>,
    %d: tensor<8x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<8x16xf32>) up(%u : tensor<8x32x16xf32>)
      down(%d : tensor<8x16x32xf32>)
      {routing = #moe.routing<softmax, group_limited_topk, k = 3, n_group = 2, topk_group = 1>,
       activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// LoRA experts: lora_a / lora_b lose the rows, the shared base and the
// group router of hierarchical routing stay.
// CHECK-LABEL: func.func @lora
// CHECK-SAME: %[[GR:[^:]+]]: tensor<2x16xf32>, %[[B0:[^:]+]]: tensor<16x16xf32>, %[[A:[^:]+]]: tensor<4x2x16xf32>, %[[B:[^:]+]]: tensor<4x16x2xf32>)
// CHECK-DAG: %[[A0:.+]] = tensor.extract_slice %[[A]][0, 0, 0] [1, 2, 16]
// CHECK-DAG: %[[A2:.+]] = tensor.extract_slice %[[A]][2, 0, 0] [1, 2, 16]
// CHECK-DAG: %[[AK:.+]] = tensor.concat dim(0) %[[A0]], %[[A2]]
// CHECK-DAG: %[[BB0:.+]] = tensor.extract_slice %[[B]][0, 0, 0] [1, 16, 2]
// CHECK-DAG: %[[BB2:.+]] = tensor.extract_slice %[[B]][2, 0, 0] [1, 16, 2]
// CHECK-DAG: %[[BK:.+]] = tensor.concat dim(0) %[[BB0]], %[[BB2]]
// CHECK: moe.layer {{.+}} group_router(%[[GR]] : tensor<2x16xf32>) lora_base(%[[B0]] : tensor<16x16xf32>) lora_a(%[[AK]] : tensor<2x2x16xf32>) lora_b(%[[BK]] : tensor<2x16x2xf32>)
// CHECK-SAME: routing = #moe.routing<softmax, hierarchical, k = 2, n_group = 2, tau_group = 5.000000e-01, tau_expert = 2.000000e+00>
func.func @lora(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %wg: tensor<2x16xf32>, %b0: tensor<16x16xf32>,
    %a: tensor<4x2x16xf32>, %b: tensor<4x16x2xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) group_router(%wg : tensor<2x16xf32>)
      lora_base(%b0 : tensor<16x16xf32>) lora_a(%a : tensor<4x2x16xf32>) lora_b(%b : tensor<4x16x2xf32>)
      {routing = #moe.routing<softmax, hierarchical, k = 4, n_group = 2, tau_group = 0.5, tau_expert = 2.0>,
       lora_alpha = 8.0 : f64}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Projected router: the domain embeddings lose the rows, the learned
// projection stays.
// CHECK-LABEL: func.func @nexus
// CHECK-SAME: %[[DE:[^:]+]]: tensor<4x8xf16>, %[[P1:[^:]+]]: tensor<12x8xf16>, %[[P2:[^:]+]]: tensor<16x6xf16>
// CHECK-DAG: %[[DE0:.+]] = tensor.extract_slice %[[DE]][0, 0] [1, 8] [1, 1] : tensor<4x8xf16> to tensor<1x8xf16>
// CHECK-DAG: %[[DE2:.+]] = tensor.extract_slice %[[DE]][2, 0] [1, 8] [1, 1] : tensor<4x8xf16> to tensor<1x8xf16>
// CHECK-DAG: %[[DEK:.+]] = tensor.concat dim(0) %[[DE0]], %[[DE2]]
// CHECK: moe.layer {{.+}} domain_embeddings(%[[DEK]] : tensor<2x8xf16>) proj_w1(%[[P1]] : tensor<12x8xf16>) proj_w2(%[[P2]] : tensor<16x6xf16>) gate(%{{.+}} : tensor<2x32x16xf16>)
// CHECK-SAME: routing = #moe.routing<softmax, topk, k = 1>
func.func @nexus(%x: tensor<?x16xf16>, %de: tensor<4x8xf16>, %p1: tensor<12x8xf16>, %p2: tensor<16x6xf16>,
    %g: tensor<4x32x16xf16>, %u: tensor<4x32x16xf16>, %d: tensor<4x16x32xf16>) -> tensor<?x16xf16> {
  %y = moe.layer %x : tensor<?x16xf16> domain_embeddings(%de : tensor<4x8xf16>) proj_w1(%p1 : tensor<12x8xf16>)
      proj_w2(%p2 : tensor<16x6xf16>) gate(%g : tensor<4x32x16xf16>) up(%u : tensor<4x32x16xf16>)
      down(%d : tensor<4x16x32xf16>) {routing = #moe.routing<softmax, topk, k = 1>} -> tensor<?x16xf16>
  return %y : tensor<?x16xf16>
}

// -----

// Constant weights are sliced at compile time into new constants (rows 0
// and 2); a splat stays a splat.
// CHECK-LABEL: func.func @constants
// CHECK-NOT: tensor.extract_slice
// CHECK-NOT: tensor.concat
// CHECK-DAG: %[[WR:.+]] = arith.constant dense<{{\[}}[1.000000e+00, 2.000000e+00], [5.000000e+00, 6.000000e+00]]> : tensor<2x2xf32>
// CHECK-DAG: %[[U:.+]] = arith.constant dense<{{\[}}{{\[}}[1.000000e+00, 2.000000e+00]], {{\[}}[5.000000e+00, 6.000000e+00]]]> : tensor<2x1x2xbf16>
// CHECK-DAG: %[[D:.+]] = arith.constant dense<5.000000e-01> : tensor<2x2x1xbf16>
// CHECK: moe.layer %{{.+}} router(%[[WR]] : tensor<2x2xf32>) up(%[[U]] : tensor<2x1x2xbf16>) down(%[[D]] : tensor<2x2x1xbf16>)
func.func @constants(%x: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %wr = arith.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]> : tensor<4x2xf32>
  %u = arith.constant dense<[[[1.0, 2.0]], [[3.0, 4.0]], [[5.0, 6.0]], [[7.0, 8.0]]]> : tensor<4x1x2xbf16>
  %d = arith.constant dense<0.5> : tensor<4x2x1xbf16>
  %y = moe.layer %x : tensor<?x2xf32> router(%wr : tensor<4x2xf32>) up(%u : tensor<4x1x2xbf16>)
      down(%d : tensor<4x2x1xbf16>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>} -> tensor<?x2xf32>
  return %y : tensor<?x2xf32>
}

// -----

// Layers inside a moe.cartesian are rewritten too.
// CHECK-LABEL: func.func @cartesian
// CHECK: moe.cartesian
// CHECK: moe.layer {{.+}} router(%{{.+}} : tensor<2x16xf32>)
// CHECK: moe.layer {{.+}} router(%{{.+}} : tensor<3x16xf32>)
func.func @cartesian(%x: tensor<?x16xf32>, %wa: tensor<4x16xf32>, %ua: tensor<4x32x16xf32>,
    %da: tensor<4x16x32xf32>, %wb: tensor<5x16xf32>, %ub: tensor<5x32x16xf32>,
    %db: tensor<5x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.cartesian %x : tensor<?x16xf32>
  first {
  ^bb0(%a: tensor<?x16xf32>):
    %ya = moe.layer %a : tensor<?x16xf32> router(%wa : tensor<4x16xf32>) up(%ua : tensor<4x32x16xf32>)
        down(%da : tensor<4x16x32xf32>)
        {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>} -> tensor<?x16xf32>
    moe.yield %ya : tensor<?x16xf32>
  } second {
  ^bb0(%b: tensor<?x16xf32>):
    %yb = moe.layer %b : tensor<?x16xf32> router(%wb : tensor<5x16xf32>) up(%ub : tensor<5x32x16xf32>)
        down(%db : tensor<5x16x32xf32>)
        {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>} -> tensor<?x16xf32>
    moe.yield %yb : tensor<?x16xf32>
  }
  return %y : tensor<?x16xf32>
}

// -----

// Errors (the same for every option above that reaches them).

// Expert 3 does not exist in a 3-expert layer.
func.func @out_of_range(%x: tensor<?x16xf32>, %wr: tensor<3x16xf32>, %u: tensor<3x32x16xf32>,
    %d: tensor<3x16x32xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.layer' op cannot drop expert 3: the layer has E = 3 routed experts (ids 0 to 2)}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<3x16xf32>) up(%u : tensor<3x32x16xf32>)
      down(%d : tensor<3x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// 6 experts left do not split into n_group = 4 equal groups.
func.func @n_group(%x: tensor<?x16xf32>, %wr: tensor<8x16xf32>, %u: tensor<8x32x16xf32>,
    %d: tensor<8x16x32xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{routing n_group = 4 must divide the number of experts left, E = 8 - 2 = 6 (drop a multiple of n_group experts)}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<8x16xf32>) up(%u : tensor<8x32x16xf32>)
      down(%d : tensor<8x16x32xf32>)
      {routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 4, topk_group = 2>,
       activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// One expert per group is left, but top2_sum scores groups by two.
func.func @top2_sum(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{group_score top2_sum needs at least 2 experts per group, got 1}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<sigmoid, group_limited_topk, k = 1, n_group = 2, topk_group = 1, group_score = top2_sum>,
       activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Zero-computation experts are not supported yet.
func.func @special(%x: tensor<?x16xf32>, %wr: tensor<6x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{dropping experts from a layer with zero-computation (special) experts is not supported yet}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<6x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<relu>,
       special_kinds = [#moe.special<zero>, #moe.special<copy>]} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
