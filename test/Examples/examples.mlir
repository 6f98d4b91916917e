// Every bundled example parses, verifies, decomposes and canonicalises.
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-decompose --canonicalize | FileCheck %s --check-prefix=MIXTRAL
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-decompose --canonicalize | FileCheck %s --check-prefix=DSV3
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-decompose --canonicalize | FileCheck %s --check-prefix=ATMOE
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-decompose --canonicalize | FileCheck %s --check-prefix=CART
// RUN: moe-opt %moe_src_root/examples/qwen2_moe.mlir --moe-decompose --canonicalize | FileCheck %s --check-prefix=QWEN2

// MIXTRAL-LABEL: func.func @mixtral_moe
// MIXTRAL: moe.route {{.+}}#moe.routing<softmax, topk, k = 2, renormalize>
// MIXTRAL: moe.experts {{.+}}-> tensor<?x2x64xf32>
// MIXTRAL: moe.combine {{.+}}: tensor<?x64xbf16>

// DSV3-LABEL: func.func @deepseek_v3_moe
// DSV3: moe.route {{.+}} bias {{.+}}group_limited_topk, k = 8, n_group = 8, topk_group = 4, group_score = top2_sum
// DSV3: moe.ffn
// DSV3: moe.combine weights({{.+}}) slots({{.+}}) addends(

// ATMOE-LABEL: func.func @at_moe
// ATMOE: moe.route {{.+}} groups
// ATMOE: moe.lora_experts

// CART-LABEL: func.func @cartesian_moe
// CART: moe.route
// CART: moe.rms_norm
// CART: moe.route
// CART: moe.ffn

// QWEN2-LABEL: func.func @qwen2_moe
// QWEN2: moe.route {{.+}}#moe.routing<softmax, topk, k = 4>}
// QWEN2: moe.experts {{.+}}-> tensor<?x4x64xf32>
// QWEN2: moe.ffn {{.+}} gate_weight({{.+}} : tensor<1x64xbf16>)
// QWEN2: moe.combine weights({{.+}}) slots({{.+}}) addends(
