// REQUIRES: cuda-toolkit
// ptxas -v on the routing kernels (sm_90): no stack, no spills, for the
// DeepSeek-V3 example's router and the MOE_SEMANTICS §6 shapes' (DeepSeek-V3:
// E = 256, sigmoid + bias, 8 groups, top-4 groups, K = 8, x 2.5: 8 experts
// per lane; Qwen3: E = 128, K = 8; OLMoE: E = 64, K = 8), E = 300 (10 per
// lane, 30 lanes), K = 32 and PhiMoE's sparsemixer (E = 16, K = 2).
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.ex.ptx
// RUN: %ptxas -arch=sm_90 -v %t.ex.ptx -o %t.ex.cubin > %t.ex.log 2>&1
// RUN: FileCheck %s --check-prefix=EXAMPLE < %t.ex.log
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.ptx
// RUN: %ptxas -arch=sm_90 -v %t.ptx -o %t.cubin > %t.log 2>&1
// RUN: FileCheck %s < %t.log
//
// EXAMPLE: Function properties for deepseek_v3_moe_route
// EXAMPLE-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
//
// CHECK-DAG: Function properties for dsv3_route{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// CHECK-DAG: Function properties for qwen3_route{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// CHECK-DAG: Function properties for olmoe_route{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// CHECK-DAG: Function properties for wide_route{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// CHECK-DAG: Function properties for k32_route{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// CHECK-DAG: Function properties for topp_route{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// CHECK-DAG: Function properties for dense_route{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// CHECK-DAG: Function properties for phimoe_route{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads

func.func @dsv3(%z: tensor<?x256xf32>, %b: tensor<256xf32>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %i, %w = moe.route %z bias %b : tensor<256xf32>
      {routing = #moe.routing<sigmoid, group_limited_topk, k = 8, n_group = 8,
                 topk_group = 4, group_score = top2_sum, renormalize, scaling_factor = 2.5>}
      : tensor<?x256xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i, %w : tensor<?x8xi32>, tensor<?x8xf32>
}

func.func @qwen3(%z: tensor<?x128xf32>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 8, renormalize>}
      : tensor<?x128xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i, %w : tensor<?x8xi32>, tensor<?x8xf32>
}

func.func @olmoe(%z: tensor<?x64xf32>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 8>}
      : tensor<?x64xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i, %w : tensor<?x8xi32>, tensor<?x8xf32>
}

func.func @wide(%z: tensor<?x300xf32>, %b: tensor<300xbf16>) -> (tensor<?x6xi32>, tensor<?x6xf32>) {
  %i, %w = moe.route %z bias %b : tensor<300xbf16>
      {routing = #moe.routing<sigmoid, topk, k = 6, renormalize>}
      : tensor<?x300xf32> -> tensor<?x6xi32>, tensor<?x6xf32>
  return %i, %w : tensor<?x6xi32>, tensor<?x6xf32>
}

func.func @k32(%z: tensor<?x64xf32>) -> (tensor<?x32xi32>, tensor<?x32xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<none, topk_then_softmax, k = 32, scaling_factor = 0.5>}
      : tensor<?x64xf32> -> tensor<?x32xi32>, tensor<?x32xf32>
  return %i, %w : tensor<?x32xi32>, tensor<?x32xf32>
}

func.func @topp(%z: tensor<?x64xf32>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<softmax, top_p, k = 8, top_p = 0.7>}
      : tensor<?x64xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i, %w : tensor<?x8xi32>, tensor<?x8xf32>
}

func.func @dense(%z: tensor<?x64xf32>) -> (tensor<?x64xi32>, tensor<?x64xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<softmax, dense, k = 64, renormalize>}
      : tensor<?x64xf32> -> tensor<?x64xi32>, tensor<?x64xf32>
  return %i, %w : tensor<?x64xi32>, tensor<?x64xf32>
}

func.func @phimoe(%z: tensor<?x16xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<none, sparsemixer, k = 2>}
      : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}
