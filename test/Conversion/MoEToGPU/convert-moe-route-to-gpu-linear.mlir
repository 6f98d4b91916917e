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

// -----

// A router whose shape takes the tensor-core GEMM (bf16 x and W, H = 256 and
// E = 64 multiples of 16): the fused kernel reads the 64 x 256 weight from
// L2 once per token, linear_mma once per 64 rows. From mma-linear-min-tokens
// (-1: the estimate 83 BN / E = 83, at least fuse-linear-min-tokens: 256)
// the host takes the moe.linear, marked moe.mma_min_tokens for
// convert-moe-linear-to-gpu (linear_mma from there, the warp kernel below),
// and the kernel on the logits; with both thresholds 256 the fused kernel
// has no range and is not formed.
// CHECK-LABEL: func.func @wide
// CHECK-NOT: scf.if
// CHECK: moe.linear %arg0, %arg1 {moe.mma_min_tokens = 256 : i64}
// CHECK: call @wide_route_launch({{.*}}) : (memref<?x64xf32>
// CHECK-NOT: gpu.module @wide_route_fused
// With mma-linear-min-tokens=1024 the fused kernel for 256 <= T < 1024.
// RUN: moe-opt %s --split-input-file --convert-moe-route-to-gpu="mma-linear-min-tokens=1024" | FileCheck %s --check-prefix=MMA
// MMA-LABEL: func.func @wide
// MMA: %[[T:.*]] = tensor.dim %arg0
// MMA: %[[LT:.*]] = arith.cmpi ult, %[[T]], %c1024
// MMA: %[[GE:.*]] = arith.cmpi uge, %[[T]], %c256
// MMA: %[[F:.*]] = arith.andi %[[LT]], %[[GE]]
// MMA: scf.if %[[F]]
// MMA: call @wide_route_fused_launch
// MMA: } else {
// MMA: moe.linear %arg0, %arg1 {moe.mma_min_tokens = 1024 : i64}
// MMA: call @wide_route_launch
// The linear pass then branches at the marked threshold.
// RUN: moe-opt %s --split-input-file --convert-moe-route-to-gpu --convert-moe-linear-to-gpu | FileCheck %s --check-prefix=LIN
// LIN-LABEL: func.func @wide
// LIN: %[[BIG:.*]] = arith.cmpi uge, %{{.*}}, %c256
// LIN: scf.if %[[BIG]]
// LIN: call @wide_linear_mma_launch
// LIN: } else {
// LIN: call @wide_linear_launch
// LIN: call @wide_route_launch
// mma-linear-min-tokens=0, and fuse-linear-min-tokens=0 (the fused kernel
// at every T, as asked), keep the fused kernel from 256 / always.
// ALWAYS-LABEL: func.func @wide
// ALWAYS-NOT: moe.linear
// ALWAYS: call @wide_route_launch({{.*}}) : (memref<?x256xbf16>, memref<64x256xbf16>
// RUN: moe-opt %s --split-input-file --convert-moe-route-to-gpu="mma-linear-min-tokens=0" | FileCheck %s --check-prefix=NOMMA
// NOMMA-LABEL: func.func @wide
// NOMMA: scf.if
// NOMMA: call @wide_route_fused_launch
// NOMMA: moe.linear %arg0, %arg1 {moe.tokens_below = 256 : i64}
func.func @wide(%x: tensor<?x256xbf16>, %wr: tensor<64x256xbf16>) -> (tensor<?x4xi32>, tensor<?x4xf32>) {
  %z = moe.linear %x, %wr : (tensor<?x256xbf16>, tensor<64x256xbf16>) -> tensor<?x64xf32>
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 4, renormalize>} : tensor<?x64xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return %i, %w : tensor<?x4xi32>, tensor<?x4xf32>
}
