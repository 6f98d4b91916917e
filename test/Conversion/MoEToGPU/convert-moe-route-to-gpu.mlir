// convert-moe-route-to-gpu: a moe.route of a covered kind becomes one kernel
// (a warp per token) in a gpu.module of its own and, in its place, host code
// on buffers ending in a call of a launch declaration (expanded after
// bufferization by moe-gpu-launch-route-kernels); other kinds stay with a
// remark. The kernel's numerics: route-emulate.test.
// RUN: moe-opt %s --split-input-file --convert-moe-route-to-gpu --verify-diagnostics | moe-opt --split-input-file --cse | FileCheck %s

// Mixtral: softmax, top-2, renormalised, E = 8 (one expert per lane).
// CHECK-LABEL: module attributes {gpu.container_module}
// CHECK: func.func private @mixtral_route_launch(memref<?x8xf32>, memref<?x2xi32>, memref<?x2xf32>)
// One launch on all the call's operands: ceil(T / 4) blocks (T from operand
// 1, the indices) of 128 threads (the launch-list format of LaunchList.h).
// CHECK-SAME: moe.route_kernel = {experts_per_lane = 1 : i64, launches = [{args = array<i64: 0, 1, 2>, grid = array<i64: 1, 1>, grid_divisor = 4 : i64, kernel = @mixtral_route::@route, threads = 128 : i64}]}
// CHECK-LABEL: func.func @mixtral(
// CHECK-SAME: %[[Z:[^:]+]]: tensor<?x8xf32>
// CHECK: %[[T:.+]] = tensor.dim %[[Z]], %{{.+}} : tensor<?x8xf32>
// CHECK: %[[ZB:.+]] = bufferization.to_buffer %[[Z]] read_only : tensor<?x8xf32> to memref<?x8xf32>
// CHECK: %[[I:.+]] = memref.alloc(%[[T]]) : memref<?x2xi32>
// CHECK: %[[W:.+]] = memref.alloc(%[[T]]) : memref<?x2xf32>
// CHECK: call @mixtral_route_launch(%[[ZB]], %[[I]], %[[W]])
// CHECK: %[[IT:.+]] = bufferization.to_tensor %[[I]] restrict writable : memref<?x2xi32> to tensor<?x2xi32>
// CHECK: %[[WT:.+]] = bufferization.to_tensor %[[W]] restrict writable : memref<?x2xf32> to tensor<?x2xf32>
// CHECK-NOT: moe.route
// CHECK: return %[[IT]], %[[WT]]
// The kernel: 4 warps of 32 lanes, token = block * 4 + warp; softmax max and
// sum by xor butterflies (5 steps each); K rounds (scf.for) of an argmax
// butterfly on (key, id) and an idx shuffle of the winner's score from its
// owner lane; the weights' sum for the renormalisation; lanes k < K store.
// CHECK: gpu.module @mixtral_route {
// CHECK: gpu.func @route(%[[LA:.+]]: memref<?x8xf32>, %[[IA:.+]]: memref<?x2xi32>, %[[WA:.+]]: memref<?x2xf32>) kernel attributes {known_block_size = array<i32: 128, 1, 1>}
// CHECK: gpu.thread_id x
// CHECK: gpu.block_id x
// CHECK: scf.if
// CHECK: memref.load %[[LA]]
// CHECK-COUNT-5: gpu.shuffle xor {{.+}} : f32
// CHECK: math.exp
// CHECK-COUNT-5: gpu.shuffle xor {{.+}} : f32
// CHECK: arith.divf
// CHECK: scf.for
// CHECK-COUNT-5: gpu.shuffle xor {{.+}} : i32
// CHECK: gpu.shuffle idx
// CHECK: scf.yield
// CHECK-COUNT-5: gpu.shuffle xor {{.+}} : f32
// CHECK: arith.divf
// CHECK: scf.if
// CHECK: memref.store %{{.+}}, %[[IA]]
// CHECK: memref.store %{{.+}}, %[[WA]]
// CHECK: gpu.return
func.func @mixtral(%z: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 2, renormalize>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// DeepSeek-V3: sigmoid + selection bias, 8 groups of 32 (4 lanes of 8
// experts each), top-2-sum group scores reduced over the group's 4 lanes
// (xor 2, 1), 4 rounds for the groups, 8 for the experts, x 2.5.
// CHECK-LABEL: func.func private @dsv3_route_launch(memref<?x256xf32>, memref<256xf32>, memref<?x8xi32>, memref<?x8xf32>)
// CHECK-SAME: experts_per_lane = 8 : i64
// CHECK: bufferization.to_buffer %{{.+}} read_only : tensor<256xf32> to memref<256xf32>
// CHECK: gpu.func @route(%{{.+}}: memref<?x256xf32>, %[[B:.+]]: memref<256xf32>, %{{.+}}: memref<?x8xi32>, %{{.+}}: memref<?x8xf32>)
// CHECK-COUNT-8: memref.load
// CHECK: math.exp
// CHECK: memref.load %[[B]]
// CHECK: arith.minimumf
// CHECK: gpu.shuffle xor %{{.+}}, %[[C2:.+]], %{{.+}} : f32
// CHECK: gpu.shuffle xor %{{.+}}, %[[C2]], %{{.+}} : f32
// CHECK: gpu.shuffle xor
// CHECK: gpu.shuffle xor
// CHECK: arith.addf
// CHECK: scf.for %{{.+}} = %{{.+}} to %[[C4:.+]] step
// CHECK: scf.for %{{.+}} = %{{.+}} to %[[C8:.+]] step
// CHECK: arith.constant 2.500000e+00 : f32
func.func @dsv3(%z: tensor<?x256xf32>, %b: tensor<256xf32>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %i, %w = moe.route %z bias %b : tensor<256xf32>
      {routing = #moe.routing<sigmoid, group_limited_topk, k = 8, n_group = 8,
                 topk_group = 4, group_score = top2_sum, renormalize, scaling_factor = 2.5>}
      : tensor<?x256xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i, %w : tensor<?x8xi32>, tensor<?x8xf32>
}

// -----

// A constant bias (bf16) lives in the kernel module as an f32 global; a
// static T gets casts at both ends.
// CHECK-LABEL: func.func private @cst_route_launch(memref<?x8xf32>, memref<?x1xi32>, memref<?x1xf32>)
// CHECK-LABEL: func.func @cst(
// CHECK: memref.cast %{{.+}} : memref<5x8xf32> to memref<?x8xf32>
// CHECK: memref.alloc(%{{.+}}) : memref<?x1xi32>
// CHECK: tensor.cast %{{.+}} : tensor<?x1xi32> to tensor<5x1xi32>
// CHECK: gpu.module @cst_route {
// CHECK: memref.global "private" constant @cst_route_bias : memref<8xf32> = dense<[0.000000e+00, 5.000000e-01, 0.000000e+00, 0.000000e+00, 0.000000e+00, 0.000000e+00, 0.000000e+00, 2.500000e-01]>
// CHECK: gpu.func @route(%{{.+}}: memref<?x8xf32>, %{{.+}}: memref<?x1xi32>, %{{.+}}: memref<?x1xf32>)
// CHECK: memref.get_global @cst_route_bias : memref<8xf32>
func.func @cst(%z: tensor<5x8xf32>) -> (tensor<5x1xi32>, tensor<5x1xf32>) {
  %b = arith.constant dense<[0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25]> : tensor<8xbf16>
  %i, %w = moe.route %z bias %b : tensor<8xbf16>
      {routing = #moe.routing<sigmoid, topk, k = 1>}
      : tensor<5x8xf32> -> tensor<5x1xi32>, tensor<5x1xf32>
  return %i, %w : tensor<5x1xi32>, tensor<5x1xf32>
}

// -----

// E = 40: two experts per lane, lanes 20..31 hold none (their taken bits
// are set from the start and their loads clamped to expert 39).
// CHECK-LABEL: func.func private @odd_route_launch
// CHECK-SAME: experts_per_lane = 2 : i64
// CHECK: gpu.func @route
// CHECK: arith.minsi %{{.+}}, %[[C39:.+]] : i32
func.func @odd(%z: tensor<?x40xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<none, topk_then_softmax, k = 4>}
      : tensor<?x40xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return %i, %w : tensor<?x4xi32>, tensor<?x4xf32>
}

// -----

// top_p: the slot loop carries the cumulative probability; a slot is filled
// while it is below p (olt: a NaN sum fills none).
// CHECK-LABEL: func.func @top_p
// CHECK: call @top_p_route_launch
// CHECK: gpu.func @route
// CHECK: scf.for {{.*}} -> (i32, i32, f32, f32)
// CHECK: arith.cmpf olt, %{{.+}}, %{{.+}} : f32
func.func @top_p(%z: tensor<?x8xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<softmax, top_p, k = 4, top_p = 0.5>}
      : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return %i, %w : tensor<?x4xi32>, tensor<?x4xf32>
}

// -----

// dense (K = E, here 40 > 32): no slot loop; each lane stores its own
// experts' entries (those past E guarded).
// CHECK-LABEL: func.func @dense
// CHECK: call @dense_route_launch
// CHECK: gpu.func @route
// CHECK-NOT: scf.for
// CHECK: scf.if
// CHECK: memref.store
func.func @dense(%z: tensor<?x40xf32>) -> (tensor<?x40xi32>, tensor<?x40xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<softmax, dense, k = 40, renormalize>}
      : tensor<?x40xf32> -> tensor<?x40xi32>, tensor<?x40xf32>
  return %i, %w : tensor<?x40xi32>, tensor<?x40xf32>
}

// -----

// Hierarchical (AT-MoE): the kernel also takes the T x n_group group logits
// (second argument); 2 groups of 4 experts, 16 lanes per group.
// CHECK: func.func private @hier_route_launch(memref<?x8xf32>, memref<?x2xf32>, memref<?x4xi32>, memref<?x4xf32>)
// CHECK: gpu.func @route(%{{.*}}: memref<?x8xf32>, %{{.*}}: memref<?x2xf32>
// CHECK: math.exp
func.func @hier(%z: tensor<?x8xf32>, %g: tensor<?x2xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) {
  %i, %w = moe.route %z groups %g : tensor<?x2xf32>
      {routing = #moe.routing<softmax, hierarchical, k = 4, n_group = 2>}
      : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return %i, %w : tensor<?x4xi32>, tensor<?x4xf32>
}

// -----

// Kinds the kernel does not cover keep the generic path and say why.
func.func @many(%z: tensor<?x64xf32>) -> (tensor<?x33xi32>, tensor<?x33xf32>) {
  // expected-remark @+1 {{moe.route keeps the generic GPU path: K = 33 exceeds 32 (lane k keeps slot k)}}
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 33>}
      : tensor<?x64xf32> -> tensor<?x33xi32>, tensor<?x33xf32>
  return %i, %w : tensor<?x33xi32>, tensor<?x33xf32>
}
