// REQUIRES: cuda-toolkit
// moe-to-nvvm runs the moe.linear ops that the routing kernel does not
// absorb as the warp-per-output kernel of convert-moe-linear-to-gpu. Here a
// DeepSeek-V3-shaped router (T x 7168 bf16 x 256 x 7168 bf16 -> f32): the
// loop body holds 4 x (1 weight + 4 token) 128-bit loads (8 bf16 each), 4
// tokens x 8 products per vector, and after the loop 4 x 5 butterfly
// shuffles; 128 threads; ptxas sm_90: no spills.
// Numerics: Conversion/MoEToGPU/linear-emulate.test.
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=SUM
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py --kernel linear | FileCheck %s --check-prefix=PTX
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.ptx
// RUN: %ptxas -arch=sm_90 -v %t.ptx -o %t.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
// The generic path (linear-kernels=0): a zero fill and a thread-per-output GEMM.
// RUN: moe-opt %s --moe-to-nvvm="format=isa linear-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=GENERIC
// The examples: AT-MoE's router and group router take the linear kernel,
// its LoRA experts, the LoRA base and the combine the two fused LoRA kernels
// (convert-moe-lora-to-gpu: lora_a, then lora_out, the base GEMM with the B
// products and the combine in its lanes' sums): 13 generic-path kernels -> 5
// (9 with lora-fuse-combine=0: lora_b, the base's linear kernel and the
// combine's 3 generic kernels). lora_a and lora_out: 0 spills below.
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATMOE
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa lora-fuse-combine=0" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATMOE-UNFUSED
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa linear-kernels=0" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATMOE-GENERIC
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.at.ptx
// RUN: %ptxas -arch=sm_90 -v %t.at.ptx -o %t.at.cubin 2>&1 | FileCheck %s --check-prefix=LORA
// Nexus: the projected router's six generic-path kernels become two
// (swiglu_up, then W_2 as a linear kernel): 20 -> 16 kernels (21 with
// linear-kernels=0, the router GEMM generic too), no spills.
// RUN: moe-opt %moe_src_root/examples/nexus.mlir --moe-to-nvvm="format=isa" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=NEXUS
// RUN: moe-opt %moe_src_root/examples/nexus.mlir --moe-to-nvvm="format=isa linear-kernels=0" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=NEXUS-GENERIC
// RUN: moe-opt %moe_src_root/examples/nexus.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.nx.ptx
// RUN: %ptxas -arch=sm_90 -v %t.nx.ptx -o %t.nx.cubin 2>&1 | FileCheck %s --check-prefix=NEXUS-SPILL
// NEXUS-SPILL-DAG: Function properties for nexus_moe_projected_router{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// NEXUS-SPILL-DAG: Function properties for nexus_moe_linear_1{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// LORA-DAG: Function properties for at_moe_lora_lora_a{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// LORA-DAG: Function properties for at_moe_lora_lora_out{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads

// SUM: kernels: 1 entries, 1 launched
// GENERIC: kernels: 2 entries, 2 launched
// ATMOE: kernels: 5 entries, 5 launched
// ATMOE-UNFUSED: kernels: 9 entries, 9 launched
// ATMOE-GENERIC: kernels: 13 entries, 13 launched
// NEXUS: kernels: 16 entries, 16 launched
// NEXUS-GENERIC: kernels: 21 entries, 21 launched

// PTX: .maxntid 128, 1, 1
// PTX-COUNT-20: ld.global.v4.b32
// PTX-NOT: ld.global.v4.b32
// PTX-COUNT-20: shfl.sync.bfly.b32
// PTX-NOT: shfl.sync.bfly.b32
// PTX-COUNT-4: st.global.b32
// PTX-NOT: st.global

// SPILL-NOT: bytes spill stores
// SPILL: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// SPILL-NOT: [1-9]{{[0-9]*}} bytes spill

func.func @router(%x: tensor<?x7168xbf16>, %w: tensor<256x7168xbf16>) -> tensor<?x256xf32> {
  %y = moe.linear %x, %w : (tensor<?x7168xbf16>, tensor<256x7168xbf16>) -> tensor<?x256xf32>
  return %y : tensor<?x256xf32>
}
