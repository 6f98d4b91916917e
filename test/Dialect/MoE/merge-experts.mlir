// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-merge-experts="groups=2+0 frequencies=3,9,1,5" | FileCheck %s
// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-merge-experts="groups=1+3" | FileCheck %s --check-prefix=UNIFORM
// Options the layers of this file reject everywhere (only the message is
// checked; the other cases' errors are ignored):
// RUN: not moe-opt %s --split-input-file --moe-merge-experts="groups=0+1,1+2" 2>&1 | FileCheck %s --check-prefix=TWICE
// RUN: not moe-opt %s --split-input-file --moe-merge-experts="groups=0+4" 2>&1 | FileCheck %s --check-prefix=RANGE
// RUN: not moe-opt %s --split-input-file --moe-merge-experts="groups=0+x" 2>&1 | FileCheck %s --check-prefix=SYNTAX
// RUN: not moe-opt %s --moe-merge-experts 2>&1 | FileCheck %s --check-prefix=NOGROUPS
// RUN: not moe-opt %s --split-input-file --moe-merge-experts="groups=0+1 frequencies=1,2" 2>&1 | FileCheck %s --check-prefix=NFREQ
// RUN: not moe-opt %s --split-input-file --moe-merge-experts="groups=0+1 frequencies=1,-2,1,1" 2>&1 | FileCheck %s --check-prefix=NEGFREQ
// RUN: not moe-opt %s --split-input-file --moe-merge-experts="groups=0+1 calib=%t.missing" 2>&1 | FileCheck %s --check-prefix=NOCALIB
// RUN: echo '{"format": "moe-calib/1", "layers": [{"index": 2, "routed_counts": [1, 2, 3, 4]}]}' > %t.calib.json
// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-merge-experts="groups=2+0 calib=%t.calib.json calib-layer=2" | FileCheck %s --check-prefix=CALIB
// RUN: not moe-opt %s --split-input-file --moe-merge-experts="groups=2+0 calib=%t.calib.json calib-layer=5" 2>&1 | FileCheck %s --check-prefix=CALIBLAYER
// TWICE: error: 'moe.layer' op cannot merge expert 1: it is listed twice in 'groups'
// RANGE: error: 'moe.layer' op cannot merge expert 4: the layer has E = 4 routed experts (ids 0 to 3)
// SYNTAX: error: moe-merge-experts: group '0+x' is not a list of expert ids joined by '+'
// NOGROUPS: error: moe-merge-experts needs the groups to merge (option 'groups'
// NFREQ: error: 'moe.layer' op cannot merge experts: 'frequencies' lists 2 values but the layer has E = 4 routed experts
// NEGFREQ: error: 'moe.layer' op cannot merge experts: frequency of expert 1 must be finite and >= 0, got -2
// NOCALIB: error: moe-merge-experts: cannot read calibration file '{{.*}}.missing'
// CALIBLAYER: error: moe-merge-experts: '{{.*}}.calib.json' has no routed_counts for layer 5 (option 'calib-layer')

// Weights as arguments: experts 0 and 2 become merged expert 0, the
// frequency-weighted mean (3·W0 + 1·W2)/4 in f32 rounded once to bf16;
// experts 1 and 3 stay (merged ids 1, 2). The router keeps its 4 rows and
// the expert map points rows 0 and 2 at merged expert 0.
// CHECK-LABEL: func.func @mixtral
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xbf16>, %[[WR:[^:]+]]: tensor<4x16xbf16>, %[[G:[^:]+]]: tensor<4x32x16xbf16>, %[[U:[^:]+]]: tensor<4x32x16xbf16>, %[[D:[^:]+]]: tensor<4x16x32xbf16>)
// CHECK: %[[G0:.+]] = tensor.extract_slice %[[G]][0, 0, 0] [1, 32, 16] [1, 1, 1] : tensor<4x32x16xbf16> to tensor<1x32x16xbf16>
// CHECK: %[[G2:.+]] = tensor.extract_slice %[[G]][2, 0, 0] [1, 32, 16] [1, 1, 1]
// CHECK: %[[GM:.+]] = linalg.generic {{.*}} ins(%[[G0]], %[[G2]] : tensor<1x32x16xbf16>, tensor<1x32x16xbf16>)
// CHECK: ^bb0(%[[A:.+]]: bf16, %[[B:.+]]: bf16, %{{.+}}: bf16):
// CHECK-DAG: %[[AF:.+]] = arith.extf %[[A]] : bf16 to f32
// CHECK-DAG: %[[C0:.+]] = arith.constant 7.500000e-01 : f32
// CHECK-DAG: %[[C1:.+]] = arith.constant 2.500000e-01 : f32
// CHECK: arith.truncf %{{.+}} : f32 to bf16
// CHECK: %[[G1:.+]] = tensor.extract_slice %[[G]][1, 0, 0] [1, 32, 16]
// CHECK: %[[G3:.+]] = tensor.extract_slice %[[G]][3, 0, 0] [1, 32, 16]
// CHECK: %[[GK:.+]] = tensor.concat dim(0) %[[GM]], %[[G1]], %[[G3]] : (tensor<1x32x16xbf16>, tensor<1x32x16xbf16>, tensor<1x32x16xbf16>) -> tensor<3x32x16xbf16>
// CHECK: %[[UK:.+]] = tensor.concat dim(0) {{.*}} -> tensor<3x32x16xbf16>
// CHECK: %[[DK:.+]] = tensor.concat dim(0) {{.*}} -> tensor<3x16x32xbf16>
// CHECK: moe.layer %[[X]] : tensor<?x16xbf16> router(%[[WR]] : tensor<4x16xbf16>) gate(%[[GK]] : tensor<3x32x16xbf16>) up(%[[UK]] : tensor<3x32x16xbf16>) down(%[[DK]] : tensor<3x16x32xbf16>)
// CHECK-SAME: expert_map = array<i32: 0, 1, 0, 2>
// UNIFORM-LABEL: func.func @mixtral
// UNIFORM-DAG: arith.constant 5.000000e-01 : f32
// UNIFORM: moe.layer
// UNIFORM-SAME: expert_map = array<i32: 0, 1, 2, 1>
// CALIB-LABEL: func.func @mixtral
// CALIB-DAG: arith.constant 2.500000e-01 : f32
// CALIB-DAG: arith.constant 7.500000e-01 : f32
// CALIB: expert_map = array<i32: 0, 1, 0, 2>
func.func @mixtral(%x: tensor<?x16xbf16>, %wr: tensor<4x16xbf16>, %g: tensor<4x32x16xbf16>,
    %u: tensor<4x32x16xbf16>, %d: tensor<4x16x32xbf16>) -> tensor<?x16xbf16> {
  %y = moe.layer %x : tensor<?x16xbf16> router(%wr : tensor<4x16xbf16>) gate(%g : tensor<4x32x16xbf16>)
      up(%u : tensor<4x32x16xbf16>) down(%d : tensor<4x16x32xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xbf16>
  return %y : tensor<?x16xbf16>
}

// -----

// Constant weights are merged at compile time into new constants (in
// double, rounded once): (3·[1, 2] + 1·[5, 6])/4 = [2, 3]; biases too.
// CHECK-LABEL: func.func @constants
// CHECK-NOT: linalg.generic
// CHECK-DAG: arith.constant dense<{{\[}}[2.000000e+00, 3.000000e+00], [1.000000e+00, 1.000000e+00], [7.000000e+00, 8.000000e+00]]> : tensor<3x2xf32>
// CHECK-DAG: arith.constant dense<{{\[}}[{{\[}}2.000000e+00, 3.000000e+00]], [{{\[}}1.000000e+00, 1.000000e+00]], [{{\[}}7.000000e+00, 8.000000e+00]]]> : tensor<3x1x2xf32>
// CHECK: moe.layer
// CHECK-SAME: expert_map = array<i32: 0, 1, 0, 2>
func.func @constants(%x: tensor<?x2xf32>, %wr: tensor<4x2xf32>) -> tensor<?x2xf32> {
  %u = arith.constant dense<[[[1.0, 2.0]], [[1.0, 1.0]], [[5.0, 6.0]], [[7.0, 8.0]]]> : tensor<4x1x2xf32>
  %d = arith.constant dense<[[[1.0], [2.0]], [[1.0], [1.0]], [[5.0], [6.0]], [[7.0], [8.0]]]> : tensor<4x2x1xf32>
  %ub = arith.constant dense<[[1.0], [1.0], [5.0], [7.0]]> : tensor<4x1xf32>
  %db = arith.constant dense<[[1.0, 2.0], [1.0, 1.0], [5.0, 6.0], [7.0, 8.0]]> : tensor<4x2xf32>
  %y = moe.layer %x : tensor<?x2xf32> router(%wr : tensor<4x2xf32>)
      up(%u : tensor<4x1x2xf32>) down(%d : tensor<4x2x1xf32>)
      up_bias(%ub : tensor<4x1xf32>) down_bias(%db : tensor<4x2xf32>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<gelu>} -> tensor<?x2xf32>
  return %y : tensor<?x2xf32>
}

// -----

// LoRA experts are rejected: the mean of A_e and of B_e is not the mean of
// B_e A_e.
func.func @lora(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %base: tensor<16x16xf32>,
    %a: tensor<4x2x16xf32>, %b: tensor<4x16x2xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.layer' op cannot merge LoRA experts: the mean of the factors A_e, B_e is not the mean of the updates B_e A_e}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) lora_base(%base : tensor<16x16xf32>)
      lora_a(%a : tensor<4x2x16xf32>) lora_b(%b : tensor<4x16x2xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, lora_alpha = 4.0 : f64} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A layer merged already.
func.func @merged(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<3x32x16xf32>,
    %d: tensor<3x16x32xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.layer' op cannot merge experts: the layer's experts were merged already ('expert_map')}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<3x32x16xf32>)
      down(%d : tensor<3x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>,
       expert_map = array<i32: 0, 1, 0, 2>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
