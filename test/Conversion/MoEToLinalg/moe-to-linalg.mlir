// RUN: moe-opt %s --convert-moe-to-linalg --split-input-file | FileCheck %s
// The lowered IR must also bufferize and reach the LLVM dialect.
// RUN: moe-opt %s --convert-moe-to-linalg --one-shot-bufferize="bufferize-function-boundaries allow-return-allocs-from-loops" \
// RUN:   --convert-linalg-to-loops --expand-strided-metadata --lower-affine --convert-scf-to-cf \
// RUN:   --convert-math-to-llvm --convert-math-to-libm --convert-to-llvm --reconcile-unrealized-casts \
// RUN:   --split-input-file | FileCheck %s --check-prefix=LLVM
// LLVM-NOT: moe.
// LLVM-NOT: linalg.
// LLVM-NOT: tensor.

// moe.linear: a contraction over I with f32 accumulation, then one rounding.
// CHECK-LABEL: func.func @linear
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xbf16>, %[[W:[^:]+]]: tensor<8x16xbf16>, %[[B:[^:]+]]: tensor<8xbf16>)
// CHECK: %[[MM:.+]] = linalg.generic {{.+}}iterator_types = ["parallel", "parallel", "reduction"]{{.+}} ins(%[[X]], %[[W]] : {{.+}}) outs({{.+}} : tensor<?x8xf32>)
// CHECK: arith.extf
// CHECK: arith.extf
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK: %[[BIAS:.+]] = linalg.generic {{.+}} ins(%[[B]], %[[MM]] : tensor<8xbf16>, tensor<?x8xf32>) outs(%{{.+}} : tensor<?x8xf32>)
// CHECK: %[[R:.+]] = linalg.generic {{.+}} ins(%[[BIAS]] : tensor<?x8xf32>) outs({{.+}} : tensor<?x8xbf16>)
// CHECK: arith.truncf
// CHECK: return %[[R]]
// LLVM-LABEL: llvm.func @linear
func.func @linear(%x: tensor<?x16xbf16>, %w: tensor<8x16xbf16>, %b: tensor<8xbf16>) -> tensor<?x8xbf16> {
  %y = moe.linear %x, %w bias %b : (tensor<?x16xbf16>, tensor<8x16xbf16>, tensor<8xbf16>) -> tensor<?x8xbf16>
  return %y : tensor<?x8xbf16>
}

// -----

// moe.experts: gathered contractions (a parallel generic over (t, k, o)
// whose payload reduces over the input dimension in an scf.for, reading the
// expert weight at the slot's expert), the activation, and 0 for slots
// outside the op's experts.
// CHECK-LABEL: func.func @experts
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[I:[^:]+]]: tensor<?x2xi32>, %[[G:[^:]+]]: tensor<4x32x16xf32>, %[[U:[^:]+]]: tensor<4x32x16xf32>, %[[D:[^:]+]]: tensor<4x16x32xf32>)
// CHECK: %[[UP:.+]] = linalg.generic {{.+}}iterator_types = ["parallel", "parallel", "parallel"]} ins(%[[I]] : tensor<?x2xi32>) outs({{.+}} : tensor<?x2x32xf32>)
// CHECK: %[[C4:.+]] = arith.constant 4 : i32
// CHECK: arith.subi %{{.+}}, %[[C4]]
// CHECK: scf.for {{.+}} iter_args(%{{.+}} = %{{.+}}) -> (f32)
// CHECK: tensor.extract %[[X]]
// CHECK: tensor.extract %[[U]]
// CHECK: %[[GT:.+]] = linalg.generic {{.+}} ins(%[[I]] : tensor<?x2xi32>)
// CHECK: tensor.extract %[[G]]
// CHECK: %[[H:.+]] = linalg.generic {{.+}} ins(%[[UP]], %[[I]], %[[GT]], %{{.+}} : {{.+}})
// CHECK: math.exp
// CHECK: %[[DN:.+]] = linalg.generic {{.+}} ins(%[[I]] : tensor<?x2xi32>)
// CHECK: tensor.extract %[[H]]
// CHECK: tensor.extract %[[D]]
// CHECK: %[[Y:.+]] = linalg.generic {{.+}} ins(%[[I]], %[[DN]] : tensor<?x2xi32>, tensor<?x2x16xf32>) outs(%{{.+}} : tensor<?x2x16xf32>)
// CHECK: arith.select
// CHECK: return %[[Y]]
func.func @experts(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) -> tensor<?x2x16xf32> {
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {activation = #moe.activation<swiglu>, expert_offset = 4 : i64}
      : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return %s : tensor<?x2x16xf32>
}

// -----

// Clamped SwiGLU reads the per-expert biases through the slot's expert.
// CHECK-LABEL: func.func @experts_clamped
// CHECK: arith.constant 7.000000e+00 : f32
// CHECK: arith.minimumf
// CHECK: arith.constant 1.702000e+00 : f32
// LLVM-LABEL: llvm.func @experts_clamped
func.func @experts_clamped(%x: tensor<3x16xbf16>, %i: tensor<3x2xi32>, %g: tensor<4x32x16xbf16>,
    %u: tensor<4x32x16xbf16>, %d: tensor<4x16x32xbf16>, %gb: tensor<4x32xbf16>, %ub: tensor<4x32xbf16>,
    %db: tensor<4x16xbf16>) -> tensor<3x2x16xf32> {
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xbf16>) up(%u : tensor<4x32x16xbf16>) down(%d : tensor<4x16x32xbf16>)
      gate_bias(%gb : tensor<4x32xbf16>) up_bias(%ub : tensor<4x32xbf16>) down_bias(%db : tensor<4x16xbf16>)
      {activation = #moe.activation<swiglu_clamped>}
      : tensor<3x16xbf16>, tensor<3x2xi32> -> tensor<3x2x16xf32>
  return %s : tensor<3x2x16xf32>
}

// -----

// moe.combine: a reduction over the K slots, then the addends, then one
// rounding to the result type.
// CHECK-LABEL: func.func @combine
// CHECK-SAME: (%[[W:[^:]+]]: tensor<?x2xf32>, %[[S:[^:]+]]: tensor<?x2x16xf32>, %[[A:[^:]+]]: tensor<?x16xf32>)
// CHECK: %[[ACC:.+]] = linalg.generic {{.+}}["parallel", "parallel", "reduction"]{{.+}} ins(%[[W]], %[[S]] : {{.+}})
// CHECK: %[[ADD:.+]] = linalg.generic {{.+}} ins(%[[A]], %[[ACC]] : tensor<?x16xf32>, tensor<?x16xf32>) outs(%{{.+}} : tensor<?x16xf32>)
// CHECK: linalg.generic {{.+}} ins(%[[ADD]] : tensor<?x16xf32>) outs({{.+}} : tensor<?x16xf16>)
// CHECK: arith.truncf
func.func @combine(%w: tensor<?x2xf32>, %s: tensor<?x2x16xf32>, %a: tensor<?x16xf32>) -> tensor<?x16xf16> {
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x16xf32>) addends(%a : tensor<?x16xf32>) : tensor<?x16xf16>
  return %y : tensor<?x16xf16>
}

// -----

// moe.combine with a bias: the bias (H) joins the addends' generic,
// broadcast over the tokens, before the one rounding.
// CHECK-LABEL: func.func @combine_bias
// CHECK-SAME: (%[[W:[^:]+]]: tensor<?x2xf32>, %[[S:[^:]+]]: tensor<?x2x16xf32>, %[[B:[^:]+]]: tensor<16xbf16>)
// CHECK: %[[ACC:.+]] = linalg.generic {{.+}} ins(%[[W]], %[[S]] : {{.+}})
// CHECK: linalg.generic {{.+}} ins(%[[B]], %[[ACC]] : tensor<16xbf16>, tensor<?x16xf32>) outs(%{{.+}} : tensor<?x16xf32>)
// CHECK: arith.extf
// CHECK: arith.addf
// CHECK: arith.truncf
// LLVM-LABEL: llvm.func @combine_bias
func.func @combine_bias(%w: tensor<?x2xf32>, %s: tensor<?x2x16xf32>, %b: tensor<16xbf16>) -> tensor<?x16xbf16> {
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x16xf32>) bias(%b : tensor<16xbf16>) : tensor<?x16xbf16>
  return %y : tensor<?x16xbf16>
}

// -----

// A shared expert with the sigmoid gate, and RMSNorm.
// CHECK-LABEL: func.func @ffn_gated_norm
// CHECK: math.erf
// CHECK: math.exp
// CHECK: math.rsqrt
// LLVM-LABEL: llvm.func @ffn_gated_norm
func.func @ffn_gated_norm(%x: tensor<?x16xf32>, %g: tensor<32x16xf32>, %u: tensor<32x16xf32>,
    %d: tensor<16x32xf32>, %sg: tensor<1x16xf32>, %nw: tensor<16xf32>) -> tensor<?x16xf32> {
  %y = moe.ffn %x gate(%g : tensor<32x16xf32>) up(%u : tensor<32x16xf32>) down(%d : tensor<16x32xf32>)
      gate_weight(%sg : tensor<1x16xf32>) {activation = #moe.activation<geglu>} : tensor<?x16xf32> -> tensor<?x16xf32>
  %n = moe.rms_norm %y, %nw : tensor<?x16xf32>, tensor<16xf32>
  return %n : tensor<?x16xf32>
}

// -----

// LoRA experts: A then B, both gathered, scaled by alpha / r = 8 / 2.
// CHECK-LABEL: func.func @lora
// CHECK: %[[AX:.+]] = linalg.generic {{.+}} outs({{.+}} : tensor<?x4x2xf32>)
// CHECK: %[[BAX:.+]] = linalg.generic {{.+}} outs({{.+}} : tensor<?x4x16xf32>)
// CHECK: tensor.extract %[[AX]]
// CHECK: arith.constant 4.000000e+00 : f32
// LLVM-LABEL: llvm.func @lora
func.func @lora(%x: tensor<?x16xf32>, %i: tensor<?x4xi32>, %a: tensor<4x2x16xf32>, %b: tensor<4x16x2xf32>) -> tensor<?x4x16xf32> {
  %d = moe.lora_experts %x, %i a(%a : tensor<4x2x16xf32>) b(%b : tensor<4x16x2xf32>) {alpha = 8.0 : f64}
      : tensor<?x16xf32>, tensor<?x4xi32> -> tensor<?x4x16xf32>
  return %d : tensor<?x4x16xf32>
}

// -----

// The projected router: linear, SwiGLU over the two halves, linear.
// CHECK-LABEL: func.func @projected
// CHECK: linalg.generic {{.+}} outs({{.+}} : tensor<4x12xf32>)
// CHECK: linalg.generic {{.+}} outs({{.+}} : tensor<4x6xf32>)
// CHECK: linalg.generic {{.+}} outs({{.+}} : tensor<4x16xf32>)
// LLVM-LABEL: llvm.func @projected
func.func @projected(%de: tensor<4x8xf32>, %p1: tensor<12x8xf32>, %p2: tensor<16x6xf32>) -> tensor<4x16xf32> {
  %r = moe.projected_router %de, %p1, %p2 : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<16x6xf32>) -> tensor<4x16xf32>
  return %r : tensor<4x16xf32>
}

// -----

// Top-k routing: softmax scores, K rounds of argmax in an scf.for over the
// slots (each round a reduction over E yielding the expert id and its key),
// then renormalisation.
// CHECK-LABEL: func.func @route_topk
// CHECK: math.exp
// CHECK: scf.for %[[SLOT:.+]] = %{{.+}} to %{{.+}} step %{{.+}} iter_args(
// CHECK: linalg.generic {{.+}}iterator_types = ["parallel", "reduction"]{{.+}} outs(%{{.+}}, %{{.+}} : tensor<?xi32>, tensor<?xf32>)
// CHECK: tensor.insert_slice %{{.+}} into %{{.+}}[0, %[[SLOT]]] [%{{.+}}, 1] [1, 1] : tensor<?x1xi32> into tensor<?x2xi32>
// CHECK: scf.yield
// CHECK: arith.divf
// LLVM-LABEL: llvm.func @route_topk
func.func @route_topk(%l: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 2, renormalize>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Group-limited top-k (DeepSeek-V3): sigmoid, bias for selection only, the
// top-2 sum per group over (T*G) x (E/G) rows, groups kept by argmax.
// CHECK-LABEL: func.func @route_grouped
// CHECK: tensor.expand_shape %{{.+}} : tensor<?x8xf32> into tensor<?x4x2xf32>
// CHECK: tensor.collapse_shape %{{.+}} : tensor<?x4x2xf32> into tensor<?x2xf32>
// CHECK: arith.constant 2.500000e+00 : f32
// LLVM-LABEL: llvm.func @route_grouped
func.func @route_grouped(%l: tensor<?x8xf32>, %b: tensor<8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.route %l bias %b : tensor<8xf32> {routing = #moe.routing<sigmoid, group_limited_topk, k = 2,
      n_group = 4, topk_group = 2, group_score = top2_sum, renormalize, scaling_factor = 2.5>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Hierarchical, top-p and top-k-then-softmax all reach LLVM.
// LLVM-LABEL: llvm.func @route_other
func.func @route_other(%l: tensor<?x8xf32>, %g: tensor<?x2xf32>) -> (tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x2xf32>) {
  %i1, %w1 = moe.route %l groups %g : tensor<?x2xf32> {routing = #moe.routing<softmax, hierarchical, k = 8,
      n_group = 2, topk_group = 1, tau_group = 5.000000e-01>} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %i2, %w2 = moe.route %l {routing = #moe.routing<softmax, top_p, k = 4, top_p = 7.000000e-01>}
      : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %i3, %w3 = moe.route %l {routing = #moe.routing<none, topk_then_softmax, k = 2>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %w1, %w2, %w3 : tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x2xf32>
}

// -----

// Sparsemixer: in each of the K argmax rounds, one reduction over the
// experts free before the round sums exp(z - m) where (m - z) / max(|z|, m)
// is not above 2 * jitter_eps (here 0.3), then weight = 1 / sum.
// CHECK-LABEL: func.func @route_sparsemixer
// CHECK: scf.for
// CHECK: linalg.generic
// CHECK: %[[ABS:.+]] = math.absf %[[Z:.+]] : f32
// CHECK: %[[FAC:.+]] = arith.maximumf %[[ABS]], %[[M:.+]] : f32
// CHECK: %[[D:.+]] = arith.subf %[[M]], %[[Z]] : f32
// CHECK: %[[R:.+]] = arith.divf %[[D]], %[[FAC]] : f32
// CHECK: %[[EPS2:.+]] = arith.constant 3.000000e-01 : f32
// CHECK: arith.cmpf ogt, %[[R]], %[[EPS2]] : f32
// CHECK: math.exp
// CHECK: arith.addf
// LLVM-LABEL: llvm.func @route_sparsemixer
func.func @route_sparsemixer(%l: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.route %l {routing = #moe.routing<none, sparsemixer, k = 2, jitter_eps = 0.15>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Capacity dispatch: C = ceil(cf * T * K / E) from the runtime T, then a
// (slot, token) scan with per-expert counters.
// CHECK-LABEL: func.func @dispatch_capacity
// CHECK: %[[CF:.+]] = arith.constant 1.250000e+00 : f64
// CHECK: math.ceil
// CHECK: scf.for %[[SLOT:.+]] = {{.+}} iter_args(
// CHECK: scf.for %[[TOK:.+]] = {{.+}} iter_args(
// CHECK: %[[E:.+]] = tensor.extract %{{.+}}[%[[TOK]], %[[SLOT]]] : tensor<?x2xi32>
// An id outside [0, E) counts as expert 0's (and is not admitted or dropped):
// the counters are never indexed past E.
// CHECK: %[[VALID:.+]] = arith.andi
// CHECK: arith.select %[[VALID]], %[[E]], %{{.+}} : i32
// CHECK: arith.cmpi slt
// CHECK: tensor.from_elements %{{.+}} : tensor<i64>
// LLVM-LABEL: llvm.func @dispatch_capacity
func.func @dispatch_capacity(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>) {
  %i2, %w2, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>, capacity_factor = 1.25 : f64}
      : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return %i2, %w2, %n : tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>
}

// -----

// A fixed expert_capacity: C is that constant, whatever T (no ceil).
// CHECK-LABEL: func.func @dispatch_fixed_capacity
// CHECK-NOT: math.ceil
// CHECK: %[[C:.+]] = arith.constant 3 : i64
// CHECK-NOT: math.ceil
// CHECK: scf.for
// CHECK: arith.cmpi slt, %{{.+}}, %[[C]] : i64
// LLVM-LABEL: llvm.func @dispatch_fixed_capacity
func.func @dispatch_fixed_capacity(%i: tensor<?x1xi32>, %w: tensor<?x1xf32>) -> (tensor<?x1xi32>, tensor<?x1xf32>, tensor<i64>) {
  %i2, %w2, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>, expert_capacity = 3}
      : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<i64>
  return %i2, %w2, %n : tensor<?x1xi32>, tensor<?x1xf32>, tensor<i64>
}

// -----

// Zero-computation experts: a constant kind table indexed by the slot's
// expert; the constant expert's weights come from a 2-way softmax.
// CHECK-LABEL: func.func @special
// CHECK-DAG: arith.constant dense<[0, 1, 2]> : tensor<3xi32>
// CHECK-DAG: arith.constant dense<0> : tensor<3xi32>
// CHECK: linalg.generic {{.+}} outs(%{{.+}} : tensor<?x2xf32>)
// CHECK: math.exp
// CHECK: arith.constant 5 : i32
// LLVM-LABEL: llvm.func @special
func.func @special(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %cr: tensor<1x2x16xf32>, %cv: tensor<1x16xf32>) -> tensor<?x2x16xf32> {
  %z = moe.special_experts %x, %i const_router(%cr : tensor<1x2x16xf32>) const_vectors(%cv : tensor<1x16xf32>)
      {kinds = [#moe.special<zero>, #moe.special<copy>, #moe.special<constant>], expert_offset = 5 : i64}
      : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return %z : tensor<?x2x16xf32>
}
