// convert-moe-lora-to-gpu: a moe.lora_experts becomes two kernels, lora_a
// (a warp per A product: 16-byte vector loads, butterfly, 0 for a slot of no
// expert of the op) and lora_b (a thread per output, the r terms in order,
// times alpha / r), called through one launch list.
// Numerics: linear-emulate.test (the lora cases).
// RUN: moe-opt %s --split-input-file --convert-moe-lora-to-gpu --verify-diagnostics | FileCheck %s
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
