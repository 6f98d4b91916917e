// REQUIRES: cuda-toolkit
// A Qwen3-30B-A3B-shaped router (T x 2048 bf16 x 128 x 2048 bf16 -> f32,
// softmax top-8) through moe-to-nvvm: its shape takes the tensor-core GEMM,
// so for many tokens (route-linear-mma-min-tokens -1: from 256, where the
// fused kernel would start) the host runs linear_mma and the routing kernel
// on the logits rather than the fused routing kernel, which reads the
// 512 KiB router weight from L2 once per token (0.72 ms at T = 4096 on the
// H100, benchmarks/RESULTS.md); below 256 the warp-per-output linear kernel.
// Three kernels, no route_fused; with route-linear-mma-min-tokens=0, or no
// tensor-core linear kernels (linear-mma-min-tokens=0), the fused kernel
// from 256 as before. ptxas sm_90: no spills.
// Numerics (the three paths): Conversion/MoEToGPU/linear-emulate.test.
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py | FileCheck %s
// RUN: moe-opt %s --moe-to-nvvm="format=isa route-linear-mma-min-tokens=0" | %python %S/ptx.py | FileCheck %s --check-prefix=FUSED
// RUN: moe-opt %s --moe-to-nvvm="format=isa linear-mma-min-tokens=0" | %python %S/ptx.py | FileCheck %s --check-prefix=FUSED
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.ptx
// RUN: %ptxas -arch=sm_90 -v %t.ptx -o %t.cubin 2>&1 | FileCheck %s --check-prefix=SPILL

// CHECK-NOT: .entry qwen3_router_route_fused
// CHECK-DAG: .entry qwen3_router_route(
// CHECK-DAG: .entry qwen3_router_linear(
// CHECK-DAG: .entry qwen3_router_linear_mma(
// CHECK-NOT: .entry qwen3_router_route_fused
// FUSED-DAG: .entry qwen3_router_route_fused(
// FUSED-DAG: .entry qwen3_router_route(
// FUSED-DAG: .entry qwen3_router_linear(
// FUSED-NOT: .entry qwen3_router_linear_mma
// SPILL-DAG: Function properties for qwen3_router_linear_mma{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// SPILL-DAG: Function properties for qwen3_router_route{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
func.func @qwen3_router(%x: tensor<?x2048xbf16>, %wr: tensor<128x2048xbf16>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %z = moe.linear %x, %wr : (tensor<?x2048xbf16>, tensor<128x2048xbf16>) -> tensor<?x128xf32>
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 8, renormalize>} : tensor<?x128xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i, %w : tensor<?x8xi32>, tensor<?x8xf32>
}
