// REQUIRES: cuda-toolkit
// moe-to-nvvm runs the moe.linear ops that the routing kernel does not
// absorb as the warp-per-output kernel of convert-moe-linear-to-gpu. Here a
// DeepSeek-V3-shaped router (T x 7168 bf16 x 256 x 7168 bf16 -> f32): the
// loop body holds 4 x (1 weight + 4 token) 128-bit loads (8 bf16 each), 4
// tokens x 8 products per vector, and after the loop 4 x 5 butterfly
// shuffles; 128 threads; ptxas sm_90: no spills. Beside it the tensor-core
// kernel (linear_mma, taken from linear-mma-min-tokens = 128 tokens): per
// K step of 32, 12 ldmatrix.x4 and 32 bf16 m16n8k16 MMAs per warp (its
// 32 x 64 tile), 6 16-byte cp.async per thread and stage; each thread stores 32 pairs
// of f32 outputs; ptxas sm_90: 46080 bytes of shared memory, no spills.
// Numerics: Conversion/MoEToGPU/linear-emulate.test.
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=SUM
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py --kernel router_linear | FileCheck %s --check-prefix=PTX
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py --kernel router_linear_mma | FileCheck %s --check-prefix=MMA
// RUN: moe-opt %s --moe-to-nvvm="format=isa linear-mma-min-tokens=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=NOMMA
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.ptx
// RUN: %ptxas -arch=sm_90 -v %t.ptx -o %t.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
// The generic path (linear-kernels=0): a zero fill and a thread-per-output GEMM.
// RUN: moe-opt %s --moe-to-nvvm="format=isa linear-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=GENERIC
// The examples: AT-MoE's router and group router take the linear kernel
// below route-fuse-linear-min-tokens (256) and are fused into the
// hierarchical routing kernel from there (route_fused: both GEMMs inside,
// one kernel more in the artifact, 3 launches fewer per call: 5 kernels with
// route-fuse-linear-min-tokens=0),
// its LoRA experts, the LoRA base and the combine the two fused LoRA kernels
// (convert-moe-lora-to-gpu: lora_a, then lora_out, the base GEMM with the B
// products and the combine in its lanes' sums): 13 generic-path kernels -> 5
// (9 with lora-fuse-combine=0: lora_b, the base's linear kernel and the
// combine's 3 generic kernels), plus the tensor-core lora_out (lora_out_mma,
// the base GEMM on 3xTF32 mma.sync with the LoRA terms in its epilogue; the
// unfused base's linear_mma with lora-fuse-combine=0) that the host takes
// from 4096 tokens (O = 64: one column block), and before it, on the same
// branch, lora_a_mma: the A products of all 8 experts (E r = 32 rows) as one
// tensor-core GEMM in place of lora_a (lora_out_mma_dense reading it; 7
// kernels with lora-dense-a-min-tokens=0). With linear-mma-min-tokens=1
// (the GPU matrix's at_moe.mma variant) lora_out_mma takes the rows from 1
// token on after lora_a, and lora_a_mma + lora_out_mma_dense from 140 (70 BN
// / (K r), BN 32, K r 16): 9 kernels. lora_a, lora_out, lora_out_mma,
// lora_a_mma, lora_out_mma_dense and route_fused: 0 spills below.
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa route-fuse-linear-min-tokens=0" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATMOE-FUSED
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATMOE
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa lora-dense-a-min-tokens=0" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATMOE-NODENSE
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa lora-fuse-combine=0" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATMOE-UNFUSED
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa linear-kernels=0" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATMOE-GENERIC
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa linear-mma-min-tokens=1" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATMOE-THREE
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa linear-mma-min-tokens=1" | %python %S/ptx.py > %t.at.ptx
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
// LORA-DAG: Function properties for at_moe_lora_mma_lora_out_mma{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// LORA-DAG: Function properties for at_moe_lora_mma_lora_a_mma{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// LORA-DAG: Function properties for at_moe_lora_mma_lora_out_mma_dense{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// LORA-DAG: Function properties for at_moe_route_fused{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads

// SUM: kernels: 2 entries, 2 launched
// NOMMA: kernels: 1 entries, 1 launched
// GENERIC: kernels: 2 entries, 2 launched
// ATMOE: kernels: 8 entries, 8 launched
// ATMOE-NODENSE: kernels: 7 entries, 7 launched
// ATMOE-THREE: kernels: 9 entries, 9 launched
// ATMOE-FUSED: kernels: 5 entries, 5 launched
// ATMOE-UNFUSED: kernels: 11 entries, 11 launched
// ATMOE-GENERIC: kernels: 14 entries, 14 launched
// NEXUS: kernels: 16 entries, 16 launched
// NEXUS-GENERIC: kernels: 21 entries, 21 launched

// PTX: .maxntid 128, 1, 1
// PTX-COUNT-20: ld.global.v4.b32
// PTX-NOT: ld.global.v4.b32
// PTX-COUNT-20: shfl.sync.bfly.b32
// PTX-NOT: shfl.sync.bfly.b32
// PTX-COUNT-4: st.global.b32
// PTX-NOT: st.global

// The prologue's two stages of copies, then the main loop (as LLVM rotates
// it): two 16-wide K slices of 6 ldmatrix and 16 MMAs, the barrier, the
// next stage's copies; then the epilogue's stores.
// MMA: .maxntid 128, 1, 1
// MMA-COUNT-12: cp.async.cg.shared.global
// MMA-COUNT-6: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// MMA-COUNT-16: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// MMA-COUNT-6: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// MMA-COUNT-16: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// MMA-NOT: mma.sync
// MMA: bar.sync
// MMA-COUNT-6: cp.async.cg.shared.global
// MMA-NOT: cp.async.cg
// MMA-COUNT-32: st.global.v2.b32
// MMA-NOT: st.global

// SPILL-NOT: [1-9]{{[0-9]*}} bytes spill
// SPILL-DAG: Function properties for router_linear{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// SPILL-DAG: Function properties for router_linear_mma{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// SPILL-DAG: 46080 bytes smem
// SPILL-NOT: [1-9]{{[0-9]*}} bytes spill

func.func @router(%x: tensor<?x7168xbf16>, %w: tensor<256x7168xbf16>) -> tensor<?x256xf32> {
  %y = moe.linear %x, %w : (tensor<?x7168xbf16>, tensor<256x7168xbf16>) -> tensor<?x256xf32>
  return %y : tensor<?x256xf32>
}
