// convert-moe-experts-to-gpu: a shared expert (moe.ffn with an f32 result,
// no gate_weight) becomes a one-expert moe.experts that every token selects
// (indices all 0, K = 1, weights expanded to 1 x F x H) and takes the
// tensor-core kernels like the routed experts; its T x 1 x H slots are
// collapsed back to the T x H addend. A Qwen2-style sigmoid-gated shared
// expert (gate_weight) becomes a one-expert routing (moe.linear x . w_s,
// moe.route sigmoid dense k = 1) whose indices select the expert and whose
// weights a one-slot moe.combine applies, fused into the down kernel
// (atomic, f32 result: no finish kernel). f32 ones too (tf32 kernels); one
// that no tile fits keeps the generic path as moe.ffn. By default (fuse-shared) a shared expert that is an addend of
// a fused atomic combine and has the routed experts' shape joins their
// kernels instead: expert E of the alignment, every token, weight 1 (or a
// gated one's sigmoid(x . w_s)), its weights extra arguments of gate_up and
// down (numerics: experts-emulate.test, the shared-fused cases).
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu | FileCheck %s
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu="fuse-shared=0" | FileCheck %s --check-prefix=SEP

// One set of kernels: the shared weights (operands 11-13) are gate_up's and
// down's last arguments; no addend left (the f32 result is the
// accumulator, operand 14).
// CHECK-LABEL: func.func private @shared_experts_launch(memref<?x64xbf16>, memref<?x2xi32>, memref<8x128x64xbf16>, memref<8x128x64xbf16>, memref<8x64x128xbf16>, memref<?x2xf32>, memref<?x64xbf16>, memref<?xi32>, memref<?xi32>, memref<1xi32>, memref<?x128xbf16>, memref<128x64xbf16>, memref<128x64xbf16>, memref<64x128xbf16>, memref<?x64xf32>)
// CHECK-SAME: {args = array<i64: 0, 2, 3, 7, 8, 9, 10, 14, 11, 12>, {{.*}}kernel = @shared_experts::@gate_up
// CHECK-SAME: {args = array<i64: 10, 4, 7, 8, 9, 5, 14, 13>, {{.*}}kernel = @shared_experts::@down
// CHECK-LABEL: func.func @shared
// CHECK-NOT: moe.ffn
// CHECK-NOT: tensor.splat
// CHECK: call @shared_experts_launch(
// CHECK-NOT: call @
// CHECK: gpu.module @shared_experts
// Alignment over E + 1 = 9 experts; the shared tiles (expert >= 8) read the
// shared weights.
// CHECK: gpu.func @align({{.*}} workgroup({{.*}} : memref<9xi32, #gpu.address_space<workgroup>>
// CHECK: gpu.func @gate_up(
// CHECK-SAME: %[[SG:arg[0-9]+]]: memref<128x64xbf16>, %[[SU:arg[0-9]+]]: memref<128x64xbf16>) workgroup
// CHECK: arith.cmpi uge, %{{.*}}, %c8{{(_[0-9]+)?}} : index
// CHECK: nvgpu.device_async_copy %[[SG]]
// CHECK-NOT: gpu.module @shared_experts_1

// SEP-LABEL: func.func @shared
// SEP-NOT: moe.ffn
// SEP: %[[ZERO:.*]] = arith.constant 0 : i32
// SEP: %[[IDX:.*]] = tensor.splat %[[ZERO]][%{{.*}}] : tensor<?x1xi32>
// SEP-DAG: tensor.expand_shape %arg3 {{\[\[}}0, 1], [2]] output_shape [1, 128, 64] : tensor<128x64xbf16> into tensor<1x128x64xbf16>
// SEP-DAG: tensor.expand_shape %arg5 {{\[\[}}0, 1], [2]] output_shape [1, 64, 128] : tensor<64x128xbf16> into tensor<1x64x128xbf16>
// Two sets of kernels: the shared expert's (combine none: its slots are
// the addend) and the routed experts' with the combine fused.
// SEP: call @shared_experts_1_launch({{.*}}memref<?x1xi32>, memref<1x128x64xbf16>, memref<1x128x64xbf16>, memref<1x64x128xbf16>, memref<?x1x64xf32>
// SEP: %[[ADDEND:.*]] = tensor.collapse_shape {{.*}} {{\[\[}}0, 1], [2]] : tensor<?x1x64xf32> into tensor<?x64xf32>
// SEP: bufferization.to_buffer %[[ADDEND]]
// SEP: call @shared_experts_launch(
// SEP-DAG: gpu.module @shared_experts
// SEP-DAG: gpu.module @shared_experts_1
func.func @shared(%x: tensor<?x64xbf16>, %idx: tensor<?x2xi32>, %w: tensor<?x2xf32>,
                  %sg: tensor<128x64xbf16>, %su: tensor<128x64xbf16>, %sd: tensor<64x128xbf16>,
                  %g: tensor<8x128x64xbf16>, %u: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>) -> tensor<?x64xbf16> {
  %slots = moe.experts %x, %idx gate(%g : tensor<8x128x64xbf16>) up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  %sh = moe.ffn %x gate(%sg : tensor<128x64xbf16>) up(%su : tensor<128x64xbf16>) down(%sd : tensor<64x128xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xbf16> -> tensor<?x64xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%slots : tensor<?x2x64xf32>) addends(%sh : tensor<?x64xf32>) : tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}

// -----

// CHECK-LABEL: func.func private @gated_shared_experts_launch(memref<?x64xbf16>, memref<?x1xi32>, memref<1x128x64xbf16>, memref<1x128x64xbf16>, memref<1x64x128xbf16>, memref<?x1xf32>, memref<?x64xf32>,
// CHECK-SAME: combine = "atomic"
// CHECK-NOT: @finish
// CHECK-LABEL: func.func @gated_shared
// CHECK-NOT: moe.ffn
// CHECK-NOT: tensor.splat
// CHECK: %[[S:.*]] = moe.linear %arg0, %arg4 : (tensor<?x64xbf16>, tensor<1x64xbf16>) -> tensor<?x1xf32>
// CHECK: %[[I:.*]], %[[W:.*]] = moe.route %[[S]] {routing = #moe.routing<sigmoid, dense, k = 1>}
// CHECK-DAG: bufferization.to_buffer %[[I]] read_only
// CHECK-DAG: bufferization.to_buffer %[[W]] read_only
// CHECK: call @gated_shared_experts_launch
// CHECK-NOT: moe.combine
func.func @gated_shared(%x: tensor<?x64xbf16>, %sg: tensor<128x64xbf16>, %su: tensor<128x64xbf16>,
                        %sd: tensor<64x128xbf16>, %gw: tensor<1x64xbf16>) -> tensor<?x64xf32> {
  %sh = moe.ffn %x gate(%sg : tensor<128x64xbf16>) up(%su : tensor<128x64xbf16>) down(%sd : tensor<64x128xbf16>) gate_weight(%gw : tensor<1x64xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xbf16> -> tensor<?x64xf32>
  return %sh : tensor<?x64xf32>
}

// -----

// Qwen2-MoE: a sigmoid-gated shared expert 4 F wide beside routed experts
// joins their kernels too (slices = experts 8 .. 11): the gate's logits are
// a moe.linear made once, before the kernels (operand 14, T x 1 f32), and
// down's last argument, which weighs the shared pairs by sigmoid(logit_t)
// instead of 1 (the f32 result, operand 6, is the accumulator). With
// fuse-shared=0 it keeps its own one-expert routing.
// CHECK-LABEL: func.func private @qwen2_experts_launch(
// CHECK-SAME: memref<512x64xbf16>, memref<512x64xbf16>, memref<64x512xbf16>, memref<?x1xf32>)
// CHECK-SAME: {args = array<i64: 10, 4, 7, 8, 9, 5, 6, 13, 14>, grid = array<i64: 8, 1>, kernel = @qwen2_experts::@down
// CHECK-LABEL: func.func @qwen2(
// CHECK-NOT: moe.route
// CHECK: %[[L:.*]] = moe.linear %arg0, %arg8 : (tensor<?x64xbf16>, tensor<1x64xbf16>) -> tensor<?x1xf32>
// CHECK-NOT: moe.ffn
// CHECK: bufferization.to_buffer %[[L]] read_only
// CHECK: call @qwen2_experts_launch
// CHECK-NOT: moe.combine
// CHECK: gpu.module @qwen2_experts
// CHECK: gpu.func @down({{.*}}, %[[LOGIT:[^:]*]]: memref<?x1xf32>) workgroup(
// CHECK: %[[Z:.*]] = memref.load %[[LOGIT]][
// CHECK: %[[NZ:.*]] = arith.negf %[[Z]] : f32
// CHECK: %[[E:.*]] = math.exp %[[NZ]] : f32
// SEP-LABEL: func.func @qwen2(
// SEP: moe.linear
// SEP: moe.route
// SEP: call @qwen2_experts_1_launch
// SEP: call @qwen2_experts_launch(
func.func @qwen2(%x: tensor<?x64xbf16>, %idx: tensor<?x2xi32>, %w: tensor<?x2xf32>,
                 %g: tensor<8x128x64xbf16>, %u: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>,
                 %sg: tensor<512x64xbf16>, %su: tensor<512x64xbf16>, %gw: tensor<1x64xbf16>,
                 %sd: tensor<64x512xbf16>) -> tensor<?x64xf32> {
  %slots = moe.experts %x, %idx gate(%g : tensor<8x128x64xbf16>) up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  %sh = moe.ffn %x gate(%sg : tensor<512x64xbf16>) up(%su : tensor<512x64xbf16>) down(%sd : tensor<64x512xbf16>) gate_weight(%gw : tensor<1x64xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xbf16> -> tensor<?x64xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%slots : tensor<?x2x64xf32>) addends(%sh : tensor<?x64xf32>) : tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// A shared expert that cannot take the kernels (H = 24: no 16-multiple
// column or reduction tile divides it): the rewrite is undone, nothing of it
// is left.
// CHECK-LABEL: func.func @untiled_shared
// CHECK-NEXT: moe.ffn
// CHECK-NEXT: return
func.func @untiled_shared(%x: tensor<?x24xf32>, %sg: tensor<128x24xf32>, %su: tensor<128x24xf32>,
                          %sd: tensor<24x128xf32>) -> tensor<?x24xf32> {
  %sh = moe.ffn %x gate(%sg : tensor<128x24xf32>) up(%su : tensor<128x24xf32>) down(%sd : tensor<24x128xf32>) {activation = #moe.activation<swiglu>} : tensor<?x24xf32> -> tensor<?x24xf32>
  return %sh : tensor<?x24xf32>
}

// -----

// An f32 shared expert takes the (tf32) kernels like a bf16 one.
// CHECK-LABEL: func.func private @f32_shared_experts_launch(memref<?x64xf32>, memref<?x1xi32>, memref<1x128x64xf32>, memref<1x128x64xf32>, memref<1x64x128xf32>, memref<?x1x64xf32>
// CHECK-LABEL: func.func @f32_shared
// CHECK-NOT: moe.ffn
// CHECK: call @f32_shared_experts_launch
func.func @f32_shared(%x: tensor<?x64xf32>, %sg: tensor<128x64xf32>, %su: tensor<128x64xf32>,
                      %sd: tensor<64x128xf32>) -> tensor<?x64xf32> {
  %sh = moe.ffn %x gate(%sg : tensor<128x64xf32>) up(%su : tensor<128x64xf32>) down(%sd : tensor<64x128xf32>) {activation = #moe.activation<swiglu>} : tensor<?x64xf32> -> tensor<?x64xf32>
  return %sh : tensor<?x64xf32>
}
