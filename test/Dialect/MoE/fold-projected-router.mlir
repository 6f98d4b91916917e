// RUN: moe-opt %s --split-input-file --moe-fold-projected-router | FileCheck %s
// RUN: moe-opt %s --split-input-file --moe-fold-projected-router --canonicalize | FileCheck %s --check-prefix=CANON

// Weights as arguments: the router P(D) is computed by moe.projected_router
// (f32) and the layer routes with it as a stored router.
// CHECK-LABEL: func.func @nexus
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf16>, %[[DE:[^:]+]]: tensor<4x8xf16>, %[[P1:[^:]+]]: tensor<12x8xf16>, %[[P2:[^:]+]]: tensor<16x6xf16>, %[[G:[^:]+]]: tensor<4x32x16xf16>, %[[U:[^:]+]]: tensor<4x32x16xf16>, %[[D:[^:]+]]: tensor<4x16x32xf16>)
// CHECK: %[[WR:.+]] = moe.projected_router %[[DE]], %[[P1]], %[[P2]] : (tensor<4x8xf16>, tensor<12x8xf16>, tensor<16x6xf16>) -> tensor<4x16xf32>
// CHECK: %[[Y:.+]] = moe.layer %[[X]] : tensor<?x16xf16> router(%[[WR]] : tensor<4x16xf32>) gate(%[[G]] : tensor<4x32x16xf16>) up(%[[U]] : tensor<4x32x16xf16>) down(%[[D]] : tensor<4x16x32xf16>) {routing = #moe.routing<softmax, topk, k = 1>} -> tensor<?x16xf16>
// CHECK-NOT: domain_embeddings
// CHECK: return %[[Y]]
func.func @nexus(%x: tensor<?x16xf16>, %de: tensor<4x8xf16>, %p1: tensor<12x8xf16>, %p2: tensor<16x6xf16>,
    %g: tensor<4x32x16xf16>, %u: tensor<4x32x16xf16>, %d: tensor<4x16x32xf16>) -> tensor<?x16xf16> {
  %y = moe.layer %x : tensor<?x16xf16> domain_embeddings(%de : tensor<4x8xf16>) proj_w1(%p1 : tensor<12x8xf16>)
      proj_w2(%p2 : tensor<16x6xf16>) gate(%g : tensor<4x32x16xf16>) up(%u : tensor<4x32x16xf16>)
      down(%d : tensor<4x16x32xf16>) {routing = #moe.routing<softmax, topk, k = 1>} -> tensor<?x16xf16>
  return %y : tensor<?x16xf16>
}

// -----

// Constant embeddings and projection: the router is evaluated at compile
// time, W_r[e] = W2 * (silu(z_gate) * z_up) with z = W1 * d_e:
// d = 1: z = (1, 2), h = silu(1) * 2 = 1.4621172, W_r = (1.4621172, -2.9242344);
// d = 0.5: (0.3112297, -0.6224593); d = -1: (0.5378828, -1.0757656).
// The constants the layer no longer uses fold away.
// CHECK-LABEL: func.func @constants
// CHECK-NOT: moe.projected_router
// CHECK: %[[WR:.+]] = arith.constant dense<{{\[}}[1.4621172, -2.92423439], [0.311229676, -0.622459352], [0.537882864, -1.07576573]]> : tensor<3x2xf32>
// CHECK: moe.layer %{{.+}} : tensor<?x2xf32> router(%[[WR]] : tensor<3x2xf32>) up(
// CANON-LABEL: func.func @constants
// CANON-NOT: dense<{{\[}}[1.000000e+00], [5.000000e-01], [-1.000000e+00]]>
// CANON: %[[WR:.+]] = arith.constant dense<{{\[}}[1.4621172, -2.92423439], [0.311229676, -0.622459352], [0.537882864, -1.07576573]]> : tensor<3x2xf32>
// CANON-NOT: dense<{{\[}}[1.000000e+00], [5.000000e-01], [-1.000000e+00]]>
// CANON: moe.layer %{{.+}} router(%[[WR]] : tensor<3x2xf32>)
func.func @constants(%x: tensor<?x2xf32>, %u: tensor<3x1x2xf32>, %d: tensor<3x2x1xf32>) -> tensor<?x2xf32> {
  %de = arith.constant dense<[[1.0], [0.5], [-1.0]]> : tensor<3x1xf32>
  %w1 = arith.constant dense<[[1.0], [2.0]]> : tensor<2x1xbf16>
  %w2 = arith.constant dense<[[1.0], [-2.0]]> : tensor<2x1xf32>
  %y = moe.layer %x : tensor<?x2xf32> domain_embeddings(%de : tensor<3x1xf32>) proj_w1(%w1 : tensor<2x1xbf16>)
      proj_w2(%w2 : tensor<2x1xf32>) up(%u : tensor<3x1x2xf32>) down(%d : tensor<3x2x1xf32>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>} -> tensor<?x2xf32>
  return %y : tensor<?x2xf32>
}

// -----

// A layer with a stored router is left alone.
// CHECK-LABEL: func.func @stored
// CHECK-SAME: %[[WR:[^:]+]]: tensor<4x16xf32>
// CHECK-NOT: moe.projected_router
// CHECK: moe.layer %{{.+}} router(%[[WR]] : tensor<4x16xf32>)
func.func @stored(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
