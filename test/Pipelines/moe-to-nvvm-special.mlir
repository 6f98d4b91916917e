// MoE++'s zero-computation experts on the GPU: convert-moe-experts-to-gpu
// turns the moe.special_experts into the warp-per-token kernel `special`,
// whose T x H f32 result (the token's zero-computation slots weighted and
// summed) becomes an addend of the combine, which the expert kernels then
// fuse (atomic: gate_up's accumulator initialisation adds the addend). The
// kernels' numerics: Conversion/MoEToGPU/linear-emulate.test (moe++ cases).
// REQUIRES: cuda-toolkit
// RUN: moe-opt %s --split-input-file --moe-decompose --canonicalize --convert-moe-experts-to-gpu --verify-diagnostics | FileCheck %s
// RUN: sed '/^\/\/ -----/q' %s | moe-opt --moe-to-nvvm="format=isa expert-kernels-required=1" > %t.mlir
// RUN: %python %S/ptx.py --summary < %t.mlir | FileCheck %s --check-prefix=COUNT
// RUN: %python %S/ptx.py < %t.mlir > %t.ptx
// RUN: %ptxas -arch=sm_90 -v %t.ptx -o /dev/null 2>&1 | FileCheck %s --check-prefix=PTXAS

// CHECK: func.func private @moepp_special_launch(memref<?x64xbf16>, memref<?x2xi32>, memref<?x2xf32>, memref<2x2x64xbf16>, memref<2x64xbf16>, memref<?x64xf32>)
// CHECK-SAME: moe.expert_kernels = {launches = [{args = array<i64: 0, 1, 2, 3, 4, 5>, grid = array<i64: 5, 1>, grid_divisor = 4 : i64, kernel = @moepp_special::@special, threads = 128 : i64}]}
// CHECK: func.func private @moepp_experts_launch(
// CHECK-SAME: combine = "atomic"
// CHECK-LABEL: func.func @moepp(
// CHECK: %[[A:.+]] = memref.alloc(%{{.+}}) : memref<?x64xf32>
// CHECK: call @moepp_special_launch(%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %[[A]])
// CHECK: call @moepp_experts_launch(
// CHECK-NOT: moe.special_experts
// CHECK-NOT: moe.combine
// The kernel: a warp per token; per slot (2, unrolled) the kind from
// select chains over the 4 special ids, the constant experts' two logits
// by lane-strided sums and 5-step butterflies, a1 and a2 as sigmoids; then
// each lane's columns of A.
// CHECK: gpu.module @moepp_special
// CHECK: gpu.func @special(
// CHECK: scf.if
// CHECK-COUNT-2: memref.load %{{.+}} : memref<?x2xi32>
// CHECK-COUNT-10: gpu.shuffle xor
// CHECK: math.exp
// CHECK: scf.for
// CHECK: memref.store %{{.+}} : memref<?x64xf32>
// 16 kernels, none generic: the router GEMM, the routing kernel (and its
// fused form), special, and three expert kernel sets of 4 (align, gate_up,
// down, finish; default, BM = 128 and split-K). Before session 31 the
// special experts and the combine were generic kernels (8 for the CPU
// matrix's special_bf16 layer, which is now 12 kernels, none generic).
// COUNT: kernels: 16 entries, 16 launched
// PTXAS: Compiling entry function 'moepp_special' for 'sm_90'
// PTXAS-NEXT: Function properties for moepp_special
// PTXAS-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
func.func @moepp(%x: tensor<?x64xbf16>, %r: tensor<12x64xbf16>, %g: tensor<8x128x64xbf16>,
    %u: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>, %cr: tensor<2x2x64xbf16>,
    %cv: tensor<2x64xbf16>) -> tensor<?x64xbf16> {
  %y = moe.layer %x : tensor<?x64xbf16> router(%r : tensor<12x64xbf16>)
      gate(%g : tensor<8x128x64xbf16>) up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>)
      const_router(%cr : tensor<2x2x64xbf16>) const_vectors(%cv : tensor<2x64xbf16>)
      {special_kinds = [#moe.special<zero>, #moe.special<copy>, #moe.special<constant>, #moe.special<constant>],
       routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<swiglu>}
      -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}

// -----

// Zero-computation experts alone in a combine: nothing for the expert
// kernels to fuse, so the generic path keeps them (a remark).
func.func @alone(%x: tensor<?x64xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x64xf32> {
  // expected-remark @+1 {{moe.special_experts keeps the generic GPU path: the combine has no other slots (nothing for the expert kernels to fuse)}}
  %s = moe.special_experts %x, %i {kinds = [#moe.special<zero>, #moe.special<copy>]} : tensor<?x64xf32>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x64xf32>) : tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
