// convert-moe-route-to-gpu fuses the router GEMM: a moe.linear whose logits
// only the moe.route reads is computed inside the routing kernel, which then
// takes x and the router weight instead of the T x E logits (no logits
// tensor, no GEMM kernel). For fewer than fuse-linear-min-tokens tokens
// (default 256) the host takes the separate GEMM and the kernel on the
// logits instead (scf.if on T). Not fused: logits with another user, a
// linear with a bias, H not a multiple of 32, or fuse-linear=false.
// RUN: moe-opt %s --split-input-file --convert-moe-route-to-gpu | FileCheck %s
// RUN: moe-opt %s --split-input-file --convert-moe-route-to-gpu="fuse-linear-min-tokens=0" | FileCheck %s --check-prefix=ALWAYS
// RUN: moe-opt %s --split-input-file --convert-moe-route-to-gpu="fuse-linear=false" | FileCheck %s --check-prefix=OFF

// CHECK-LABEL: func.func private @fused_route_fused_launch(memref<?x128xbf16>, memref<8x128xbf16>, memref<?x2xi32>, memref<?x2xf32>)
// CHECK-LABEL: func.func private @fused_route_launch(memref<?x8xf32>, memref<?x2xi32>, memref<?x2xf32>)
// CHECK-LABEL: func.func @fused
// CHECK: %[[T:.*]] = tensor.dim %arg0, %{{.*}} : tensor<?x128xbf16>
// CHECK: %[[BIG:.*]] = arith.cmpi uge, %[[T]], %c256
// CHECK: scf.if %[[BIG]] -> (tensor<?x2xi32>, tensor<?x2xf32>)
// CHECK-NOT: moe.linear
// CHECK: call @fused_route_fused_launch
// CHECK: } else {
// CHECK: moe.linear
// CHECK: call @fused_route_launch
// CHECK: gpu.module @fused_route_fused
// CHECK: gpu.func @route(%{{.*}}: memref<?x128xbf16>, %{{.*}}: memref<8x128xbf16>
// Per logit: 32 lanes x 4 loads of x and of the weight per step of 128.
// Only the 8 lanes that hold an expert (E = 8, P = 1) are computed for.
// CHECK: scf.for {{.*}} = %{{.*}} to %c8{{.*}} step %c1
// CHECK: scf.for {{.*}} to %c128{{.*}} step %c128{{.*}} iter_args({{.*}}) -> (f32, f32, f32, f32)
// CHECK-COUNT-4: arith.extf
// CHECK: gpu.module @fused_route
// CHECK: gpu.func @route(%{{.*}}: memref<?x8xf32>
// ALWAYS-LABEL: func.func @fused
// ALWAYS-NOT: scf.if
// ALWAYS-NOT: moe.linear
// ALWAYS: call @fused_route_launch({{.*}}) : (memref<?x128xbf16>, memref<8x128xbf16>
// ALWAYS-NOT: gpu.module @fused_route_fused
// OFF-LABEL: func.func @fused
// OFF-NOT: scf.if
// OFF: moe.linear
// OFF: call @fused_route_launch
func.func @fused(%x: tensor<?x128xbf16>, %wr: tensor<8x128xbf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %z = moe.linear %x, %wr : (tensor<?x128xbf16>, tensor<8x128xbf16>) -> tensor<?x8xf32>
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 2, renormalize>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// The logits are also returned: the linear stays and the kernel reads them.
// CHECK-LABEL: func.func private @shared_logits_route_launch(memref<?x8xf32>, memref<?x2xi32>, memref<?x2xf32>)
// CHECK-LABEL: func.func @shared_logits
// CHECK: moe.linear
func.func @shared_logits(%x: tensor<?x128xbf16>, %wr: tensor<8x128xbf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x8xf32>) {
  %z = moe.linear %x, %wr : (tensor<?x128xbf16>, tensor<8x128xbf16>) -> tensor<?x8xf32>
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 2, renormalize>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w, %z : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x8xf32>
}

// -----

// H = 48 is not a multiple of 32.
// CHECK-LABEL: func.func private @odd_h_route_launch(memref<?x8xf32>,
// CHECK-LABEL: func.func @odd_h
// CHECK: moe.linear
func.func @odd_h(%x: tensor<?x48xbf16>, %wr: tensor<8x48xbf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %z = moe.linear %x, %wr : (tensor<?x48xbf16>, tensor<8x48xbf16>) -> tensor<?x8xf32>
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}
