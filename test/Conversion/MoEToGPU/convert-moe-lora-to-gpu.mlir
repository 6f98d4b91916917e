// convert-moe-lora-to-gpu: a moe.lora_experts becomes two kernels, lora_a
// (a warp per A product: 16-byte vector loads, butterfly, 0 for a slot of no
// expert of the op) and lora_b (a thread per output, the r terms in order,
// times alpha / r), called through one launch list.
// Numerics: linear-emulate.test (the lora cases).
// RUN: moe-opt %s --split-input-file --convert-moe-lora-to-gpu=mma-min-tokens=0 --verify-diagnostics | FileCheck %s
// RUN: not moe-opt %s --split-input-file --convert-moe-lora-to-gpu=required 2>&1 | FileCheck %s --check-prefix=REQ

// K r = 8 outputs of lora_a per token (2 blocks of 4 warps), K Out = 128
// of lora_b (1 block of 128); T from the ax and slots buffers.
// CHECK-LABEL: func.func private @lora_lora_launch(memref<?x64xbf16>, memref<?x2xi32>, memref<8x4x64xbf16>, memref<8x64x4xbf16>, memref<?x2x4xf32>, memref<?x2x64xf32>)
// CHECK-SAME: launches = [{args = array<i64: 0, 1, 2, 4>, grid = array<i64: 4, 2>, kernel = @lora_lora::@lora_a, threads = 128 : i64}, {args = array<i64: 4, 1, 3, 5>, grid = array<i64: 5, 1>, kernel = @lora_lora::@lora_b, threads = 128 : i64}]
// CHECK-LABEL: func.func @lora
// CHECK-NOT: moe.lora_experts
// CHECK: %[[AX:.*]] = memref.alloc(%{{.*}}) : memref<?x2x4xf32>
// CHECK: %[[S:.*]] = memref.alloc(%{{.*}}) : memref<?x2x64xf32>
// CHECK: call @lora_lora_launch({{.*}}, %[[AX]], %[[S]])
// CHECK: bufferization.to_tensor %[[S]] restrict writable
// CHECK: gpu.func @lora_a(
// CHECK: vector.load {{.*}} : memref<8x4x64xbf16>, vector<8xbf16>
// CHECK-COUNT-5: gpu.shuffle  xor
// CHECK: gpu.func @lora_b(
// CHECK: scf.for {{.*}} to %c4{{.*}} step %c1
// CHECK: arith.constant 2.000000e+00 : f32
func.func @lora(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %a: tensor<8x4x64xbf16>, %b: tensor<8x64x4xbf16>) -> tensor<?x2x64xf32> {
  %s = moe.lora_experts %x, %i a(%a : tensor<8x4x64xbf16>) b(%b : tensor<8x64x4xbf16>) {alpha = 8.0 : f64} : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

// -----

// CHECK-LABEL: func.func @constant
// CHECK: moe.lora_experts
// REQ: error: 'moe.lora_experts' op cannot use the LoRA kernels: a LoRA weight is a compile-time constant
func.func @constant(%x: tensor<?x64xf32>, %i: tensor<?x2xi32>, %b: tensor<8x64x4xf32>) -> tensor<?x2x64xf32> {
  %a = arith.constant dense<1.0> : tensor<8x4x64xf32>
  // expected-remark @+1 {{moe.lora_experts keeps the generic GPU path: a LoRA weight is a compile-time constant}}
  %s = moe.lora_experts %x, %i a(%a : tensor<8x4x64xf32>) b(%b : tensor<8x64x4xf32>) {alpha = 8.0 : f64} : tensor<?x64xf32>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

// -----

// The AT-MoE output: the op feeds a moe.combine whose only addend is the base
// moe.linear of the same input, so the op, the base and the combine become
// lora_a (times the routing weight and alpha / r) and lora_out (the linear
// kernel of the base: ceil(T / 4) x ceil(64 / 4) blocks, T from y; its
// lanes add the K r = 8 LoRA terms to their sums before the butterfly, then
// the bias and one rounding to bf16). No slots buffer, no combine left.
// With fuse-combine=0 the two unfused kernels, the base and the combine stay.
// RUN: moe-opt %s --split-input-file --convert-moe-lora-to-gpu=fuse-combine=0 2>&1 | FileCheck %s --check-prefix=UNFUSED
// The base GEMM, of one dtype and multiples of 16, also gets the
// tensor-core lora_out_mma (64 x 64 block tiles: grid ceil(T / 64) x 1),
// which the host takes from mma-min-tokens (-1, the default: from the
// shape, 4096 tokens here), in a module of its own. With
// dense-a-min-tokens=0 lora_a comes before it: each branch launches lora_a
// and its output kernel, with its own u and result buffers.
// RUN: moe-opt %s --split-input-file --convert-moe-lora-to-gpu=dense-a-min-tokens=0 2>&1 | FileCheck %s --check-prefix=MMA
// MMA-LABEL: func.func private @fused_lora_mma_launch(
// MMA-SAME: launches = [{args = array<i64: 0, 1, 2, 3, 7>, grid = array<i64: 7, 2>, kernel = @fused_lora::@lora_a, threads = 128 : i64}, {args = array<i64: 0, 4, 5, 1, 7, 6, 8>, grid = array<i64: 8, 1>, grid_divisor = 64 : i64, kernel = @fused_lora_mma::@lora_out_mma, threads = 128 : i64}]
// MMA-LABEL: func.func private @fused_lora_launch(
// MMA-SAME: launches = [{args = array<i64: 0, 1, 2, 3, 7>, grid = array<i64: 7, 2>, kernel = @fused_lora::@lora_a, threads = 128 : i64}, {args = array<i64: 0, 4, 5, 1, 7, 6, 8>, grid = array<i64: 8, 16>, grid_divisor = 4 : i64, kernel = @fused_lora::@lora_out, threads = 128 : i64}]
// MMA-LABEL: func.func @fused
// MMA: %[[T:.*]] = tensor.dim %arg0
// MMA: %[[BIG:.*]] = arith.cmpi uge, %[[T]], %c4096
// MMA: scf.if %[[BIG]] -> (tensor<?x64xbf16>)
// MMA: %[[UM:.*]] = memref.alloc(%[[T]]) : memref<?x2x4xf32>
// MMA: %[[YM:.*]] = memref.alloc(%[[T]]) : memref<?x64xbf16>
// MMA: call @fused_lora_mma_launch({{.*}}, %[[UM]], %[[YM]])
// MMA: } else {
// MMA: %[[UW:.*]] = memref.alloc(%[[T]]) : memref<?x2x4xf32>
// MMA: %[[YW:.*]] = memref.alloc(%[[T]]) : memref<?x64xbf16>
// MMA: call @fused_lora_launch({{.*}}, %[[UW]], %[[YW]])
// MMA: gpu.module @fused_lora_mma
// MMA: gpu.func @lora_out_mma(
// MMA: nvvm.mma.sync
// The epilogue: the lane's bias values, then per row of a real token the
// K r = 8 terms (slot q / 4, rank q % 4; the expert's B column), the bias
// added, rounded to bf16.
// MMA: memref.load %{{.*}} : memref<64xbf16>
// MMA: scf.for %{{.*}} = %c0{{.*}} to %c8{{.*}} step %c1{{.*}} iter_args
// MMA: memref.load %{{.*}} : memref<?x2xi32>
// MMA: memref.load %{{.*}} : memref<?x2x4xf32>
// MMA: memref.load %{{.*}} : memref<8x64x4xbf16>
// MMA: arith.truncf %{{.*}} : f32 to bf16
// MMA: vector.store %{{.*}} : memref<?x64xbf16>, vector<2xbf16>
// By default (x and A of one dtype, In = 64 and E r = 32 multiples of 16,
// E / K = 4 <= 32) the A products of every expert go on tensor cores from
// dense-a-min-tokens tokens: -1 estimates 70 BN / (K r) = 70 * 32 / 8 = 280,
// below the base's 4096, so that whole branch launches lora_a_mma, ax =
// x A_all^T (A_all: A collapsed to its E r = 32 rows, grid ceil(T / 64) x 1;
// ax : T x 32 f32), then lora_out_mma_dense reading ax at the slot's expert
// (e r + j) times w[t, k] alpha / r; the branch for few tokens keeps lora_a
// and lora_out.
// RUN: moe-opt %s --split-input-file --convert-moe-lora-to-gpu 2>&1 | FileCheck %s --check-prefix=DENSE
// DENSE-LABEL: func.func private @fused_lora_mma_launch(
// DENSE-SAME: memref<8x64x4xbf16>, memref<32x64xbf16>, memref<?x32xf32>, memref<?x64xbf16>)
// DENSE-SAME: launches = [{args = array<i64: 0, 7, 8>, grid = array<i64: 8, 1>, grid_divisor = 64 : i64, kernel = @fused_lora_mma::@lora_a_mma, threads = 128 : i64}, {args = array<i64: 0, 4, 5, 1, 3, 8, 6, 9>, grid = array<i64: 9, 1>, grid_divisor = 64 : i64, kernel = @fused_lora_mma::@lora_out_mma_dense, threads = 128 : i64}]
// DENSE-LABEL: func.func private @fused_lora_launch(
// DENSE-SAME: launches = [{args = array<i64: 0, 1, 2, 3, 7>, {{.*}} kernel = @fused_lora::@lora_a, {{.*}}, {args = array<i64: 0, 4, 5, 1, 7, 6, 8>, {{.*}} kernel = @fused_lora::@lora_out,
// DENSE-LABEL: func.func @fused
// DENSE: %[[T:.*]] = tensor.dim %arg0
// DENSE: %[[A:.*]] = bufferization.to_buffer %arg5
// DENSE: %[[BIG:.*]] = arith.cmpi uge, %[[T]], %c4096
// DENSE: scf.if %[[BIG]] -> (tensor<?x64xbf16>)
// DENSE: %[[A2:.*]] = memref.collapse_shape %[[A]] {{\[\[}}0, 1], [2]] : memref<8x4x64xbf16> into memref<32x64xbf16>
// DENSE: %[[AX:.*]] = memref.alloc(%[[T]]) : memref<?x32xf32>
// DENSE: %[[YM:.*]] = memref.alloc(%[[T]]) : memref<?x64xbf16>
// DENSE: call @fused_lora_mma_launch({{.*}}, %[[A2]], %[[AX]], %[[YM]])
// DENSE: } else {
// DENSE: %[[U:.*]] = memref.alloc(%[[T]]) : memref<?x2x4xf32>
// DENSE: %[[YW:.*]] = memref.alloc(%[[T]]) : memref<?x64xbf16>
// DENSE: call @fused_lora_launch({{.*}}, %[[U]], %[[YW]])
// DENSE: gpu.module @fused_lora_mma
// DENSE-NOT: gpu.func @lora_out_mma(
// DENSE: gpu.func @lora_a_mma(%{{.*}}: memref<?x64xbf16>, %{{.*}}: memref<32x64xbf16>, %{{.*}}: memref<?x32xf32>)
// DENSE: nvvm.mma.sync
// DENSE: gpu.func @lora_out_mma_dense(%{{.*}}: memref<?x64xbf16>, %{{.*}}: memref<64x64xbf16>, %{{.*}}: memref<64xbf16>, %{{.*}}: memref<?x2xi32>, %{{.*}}: memref<?x2xf32>, %{{.*}}: memref<?x32xf32>, %{{.*}}: memref<8x64x4xbf16>, %{{.*}}: memref<?x64xbf16>)
// DENSE: nvvm.mma.sync
// The epilogue's terms: u = ax[t, e * 4 + j] * (w[t, slot] * 2.0).
// DENSE: scf.for %{{.*}} = %c0{{.*}} to %c8{{.*}} step %c1{{.*}} iter_args
// DENSE: %[[SLOT:.*]] = arith.divui
// DENSE: %[[J:.*]] = arith.remui
// DENSE: memref.load %{{.*}} : memref<?x2xi32>
// DENSE: %[[E:.*]] = arith.index_cast
// DENSE: %[[W:.*]] = memref.load %{{.*}}[%{{.*}}, %[[SLOT]]] : memref<?x2xf32>
// DENSE: %[[S:.*]] = arith.mulf %[[W]], %cst{{.*}} : f32
// DENSE: %[[E4:.*]] = arith.muli %[[E]], %c4
// DENSE: %[[COL:.*]] = arith.addi %[[E4]], %[[J]]
// DENSE: %[[AXV:.*]] = memref.load %{{.*}}[%{{.*}}, %[[COL]]] : memref<?x32xf32>
// DENSE: arith.mulf %[[AXV]], %[[S]] : f32
// DENSE: memref.load %{{.*}} : memref<8x64x4xbf16>
// DENSE: arith.truncf %{{.*}} : f32 to bf16
// Both thresholds apart: lora_a + lora_out below 8 tokens, lora_a +
// lora_out_mma from 8, lora_a_mma + lora_out_mma_dense from 16.
// RUN: moe-opt %s --split-input-file --convert-moe-lora-to-gpu="mma-min-tokens=8 dense-a-min-tokens=16" 2>&1 | FileCheck %s --check-prefix=THREE
// THREE-LABEL: func.func private @fused_lora_mma_launch(
// THREE-SAME: kernel = @fused_lora_mma::@lora_a_mma, {{.*}} kernel = @fused_lora_mma::@lora_out_mma_dense,
// THREE-LABEL: func.func private @fused_lora_mma_lora_a_launch(
// THREE-SAME: kernel = @fused_lora::@lora_a, {{.*}} kernel = @fused_lora_mma::@lora_out_mma,
// THREE-LABEL: func.func private @fused_lora_launch(
// THREE-SAME: kernel = @fused_lora::@lora_a, {{.*}} kernel = @fused_lora::@lora_out,
// THREE-LABEL: func.func @fused
// THREE: %[[T:.*]] = tensor.dim %arg0
// THREE: %[[MID:.*]] = arith.cmpi uge, %[[T]], %c8
// THREE: scf.if %[[MID]]
// THREE: %[[BIG:.*]] = arith.cmpi uge, %[[T]], %c16
// THREE: scf.if %[[BIG]]
// THREE: call @fused_lora_mma_launch(
// THREE: } else {
// THREE: call @fused_lora_mma_lora_a_launch(
// THREE: } else {
// THREE: call @fused_lora_launch(
// THREE: gpu.module @fused_lora_mma
// THREE-DAG: gpu.func @lora_out_mma(
// THREE-DAG: gpu.func @lora_a_mma(
// THREE-DAG: gpu.func @lora_out_mma_dense(
// CHECK-LABEL: func.func private @fused_lora_launch(memref<?x64xbf16>, memref<?x2xi32>, memref<8x4x64xbf16>, memref<?x2xf32>, memref<64x64xbf16>, memref<64xbf16>, memref<8x64x4xbf16>, memref<?x2x4xf32>, memref<?x64xbf16>)
// CHECK-SAME: launches = [{args = array<i64: 0, 1, 2, 3, 7>, grid = array<i64: 7, 2>, kernel = @fused_lora::@lora_a, threads = 128 : i64}, {args = array<i64: 0, 4, 5, 1, 7, 6, 8>, grid = array<i64: 8, 16>, grid_divisor = 4 : i64, kernel = @fused_lora::@lora_out, threads = 128 : i64}]
// CHECK-LABEL: func.func @fused
// CHECK-NOT: moe.
// CHECK: %[[U:.*]] = memref.alloc(%{{.*}}) : memref<?x2x4xf32>
// CHECK: %[[Y:.*]] = memref.alloc(%{{.*}}) : memref<?x64xbf16>
// CHECK: call @fused_lora_launch({{.*}}, %[[U]], %[[Y]])
// CHECK: %[[R:.*]] = bufferization.to_tensor %[[Y]] restrict writable
// CHECK-NOT: moe.
// CHECK: return %[[R]]
// CHECK: gpu.func @lora_a({{.*}}: memref<?x2xf32>, %{{.*}}: memref<?x2x4xf32>)
// CHECK: %[[W:.*]] = memref.load %{{.*}} : memref<?x2xf32>
// CHECK: %[[S:.*]] = arith.mulf %[[W]], %{{.*}} : f32
// CHECK: arith.mulf %{{.*}}, %[[S]] : f32
// CHECK: gpu.func @lora_out(
// The lanes' LoRA terms: one step of 32 (K r = 8), 4 tokens.
// CHECK: %[[T:.*]]:4 = scf.for {{.*}} to %c32{{.*}} step %c32{{.*}} iter_args
// CHECK: memref.load {{.*}} : memref<?x2x4xf32>
// CHECK: memref.load {{.*}} : memref<8x64x4xbf16>
// CHECK: scf.for
// CHECK: vector.load {{.*}} : memref<64x64xbf16>, vector<8xbf16>
// CHECK: arith.addf %{{.*}}, %[[T]]#0 : f32
// CHECK-COUNT-5: gpu.shuffle  xor
// CHECK: arith.addf %{{.*}}, %[[T]]#1 : f32
// CHECK: memref.load {{.*}} : memref<64xbf16>
// CHECK: arith.truncf {{.*}} : f32 to bf16
// UNFUSED-LABEL: func.func @fused
// UNFUSED: moe.linear
// UNFUSED: call @fused_lora_launch
// UNFUSED: moe.combine
// UNFUSED: gpu.func @lora_b(
func.func @fused(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %w0: tensor<64x64xbf16>, %bias: tensor<64xbf16>, %a: tensor<8x4x64xbf16>, %b: tensor<8x64x4xbf16>) -> tensor<?x64xbf16> {
  %base = moe.linear %x, %w0 bias %bias : (tensor<?x64xbf16>, tensor<64x64xbf16>, tensor<64xbf16>) -> tensor<?x64xbf16>
  %s = moe.lora_experts %x, %i a(%a : tensor<8x4x64xbf16>) b(%b : tensor<8x64x4xbf16>) {alpha = 8.0 : f64} : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x64xf32>) addends(%base : tensor<?x64xbf16>) : tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}

// -----

// Not the AT-MoE shape: the base is also returned (two uses), so the two
// unfused kernels run and the combine stays.
// CHECK-LABEL: func.func @base_used_twice
// CHECK: moe.linear
// CHECK: call @base_used_twice_lora_launch
// CHECK: moe.combine
// CHECK: gpu.func @lora_b(
func.func @base_used_twice(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %w0: tensor<64x64xbf16>, %a: tensor<8x4x64xbf16>, %b: tensor<8x64x4xbf16>) -> (tensor<?x64xbf16>, tensor<?x64xbf16>) {
  %base = moe.linear %x, %w0 : (tensor<?x64xbf16>, tensor<64x64xbf16>) -> tensor<?x64xbf16>
  %s = moe.lora_experts %x, %i a(%a : tensor<8x4x64xbf16>) b(%b : tensor<8x64x4xbf16>) {alpha = 8.0 : f64} : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x64xf32>) addends(%base : tensor<?x64xbf16>) : tensor<?x64xbf16>
  return %y, %base : tensor<?x64xbf16>, tensor<?x64xbf16>
}
