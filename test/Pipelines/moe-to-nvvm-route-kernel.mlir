// moe-to-nvvm runs each covered moe.route as the one warp-per-token kernel
// of convert-moe-route-to-gpu; the PTX (format=isa, no ptxas needed) shows
// what it is made of. ptxas -v (no spills): moe-to-nvvm-route-kernel-cubin.test.
// Numerics of the kernel's algorithm: Conversion/MoEToGPU/route-emulate.test.
//
// Kernels per layer with the generic experts (expert-kernels=0, so that the
// counts do not depend on the expert kernels) and the router GEMM kept
// apart (route-fuse-linear=0; fused, below): the routing of the Mixtral
// example (softmax, top-2, renormalised: logits GEMM aside, 24 kernels of
// softmax pieces, argmax rounds, masks and normalisation) becomes 1, 35 -> 12
// (11 with the linear kernel, below); DeepSeek-V3 (sigmoid, bias,
// group-limited top-k with top2_sum group scores, x 2.5: 46 kernels)
// becomes 1, 65 -> 20 (19).
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa expert-kernels=0 route-fuse-linear=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=MIX
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa expert-kernels=0 route-fuse-linear=0 linear-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=MIX-LIN0
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa expert-kernels=0 route-fuse-linear=0 linear-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=DSV3-LIN0
// MIX-LIN0: kernels: 12 entries, 12 launched
// DSV3-LIN0: kernels: 20 entries, 20 launched
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa expert-kernels=0 route-kernels=0 linear-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=MIX-GENERIC
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa expert-kernels=0 route-fuse-linear=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=DSV3
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa expert-kernels=0 route-kernels=0 linear-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=DSV3-GENERIC
// The Mixtral layer with top_p (k = 2, p = 0.5) or dense (k = E = 8)
// routing takes the routing kernel too: 35 -> 11 and 20 -> 11.
// RUN: sed 's/#moe.routing<[^>]*>/#moe.routing<softmax, top_p, k = 2, top_p = 0.5>/' %moe_src_root/examples/mixtral.mlir | moe-opt --moe-to-nvvm="format=isa expert-kernels=0 route-fuse-linear=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=MIX
// RUN: sed 's/#moe.routing<[^>]*>/#moe.routing<softmax, top_p, k = 2, top_p = 0.5>/' %moe_src_root/examples/mixtral.mlir | moe-opt --moe-to-nvvm="format=isa expert-kernels=0 route-kernels=0 linear-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=MIX-GENERIC
// RUN: sed 's/#moe.routing<[^>]*>/#moe.routing<softmax, dense, k = 8>/' %moe_src_root/examples/mixtral.mlir | moe-opt --moe-to-nvvm="format=isa expert-kernels=0 route-fuse-linear=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=MIX
// RUN: sed 's/#moe.routing<[^>]*>/#moe.routing<softmax, dense, k = 8>/' %moe_src_root/examples/mixtral.mlir | moe-opt --moe-to-nvvm="format=isa expert-kernels=0 route-kernels=0 linear-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=DENSE-GENERIC
// PhiMoE's sparsemixer routing (the masked softmax per round in the
// kernel): 25 -> 11.
// RUN: sed 's/#moe.routing<[^>]*>/#moe.routing<none, sparsemixer, k = 2>/' %moe_src_root/examples/mixtral.mlir | moe-opt --moe-to-nvvm="format=isa expert-kernels=0 route-fuse-linear=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=MIX
// RUN: sed 's/#moe.routing<[^>]*>/#moe.routing<none, sparsemixer, k = 2>/' %moe_src_root/examples/mixtral.mlir | moe-opt --moe-to-nvvm="format=isa expert-kernels=0 route-kernels=0 linear-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=SPARSE-GENERIC
// SPARSE-GENERIC: kernels: 25 entries, 25 launched
// DENSE-GENERIC: kernels: 20 entries, 20 launched
// MIX: kernels: 11 entries, 11 launched
// MIX-GENERIC: kernels: 35 entries, 35 launched
// DSV3: kernels: 20 entries, 20 launched
// DSV3-GENERIC: kernels: 65 entries, 65 launched
// Those counts (MIX, DSV3) have the router GEMM as the warp-per-output
// linear kernel (convert-moe-linear-to-gpu); with linear-kernels=0 it is
// a generic zero fill + GEMM, one kernel more (MIX-LIN0, DSV3-LIN0).
// DeepSeek-V3's router (256 outputs, a multiple of 16) also gets the
// tensor-core linear_mma, which the host takes from 128 tokens: 19 -> 20
// (Mixtral's 8 outputs do not: 11).
// With the router GEMM fused into the routing kernel, its kernel goes too:
// 11 -> 10, 19 -> 18 launched per call (route-fuse-linear-min-tokens=0:
// always fused). By default the host takes the fused kernel from T = 256
// and the separate GEMM below, so the artifact holds one kernel more than
// either path launches.
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa expert-kernels=0 route-fuse-linear-min-tokens=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=MIX-FUSED
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa expert-kernels=0 route-fuse-linear-min-tokens=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=DSV3-FUSED
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa expert-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=MIX-BOTH
// MIX-FUSED: kernels: 10 entries, 10 launched
// DSV3-FUSED: kernels: 18 entries, 18 launched
// MIX-BOTH: kernels: 12 entries, 12 launched
// The fused kernel reads x and the router weight as bf16 and converts them.
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py --kernel mixtral_moe_route_fused | FileCheck %s --check-prefix=MIXFUSED
// MIXFUSED-DAG: ld.global.{{(nc.)?}}b16
// MIXFUSED-DAG: cvt.f32.bf16
//
// The Mixtral routing kernel: blocks of 128 threads (4 warps), one load of
// the lane's logit (E = 8: one expert per lane), warp butterflies
// (shfl.sync.bfly: softmax max and sum, 2 x 5 per argmax round, the weights'
// sum; K = 2 rounds unrolled: 35) and one idx shuffle per round broadcasting
// the winner's score; no shared memory, no barrier; two stores (index,
// weight) per slot lane.
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py --kernel mixtral_moe_route | FileCheck %s --check-prefix=MIXK
// MIXK-DAG: .maxntid 128, 1, 1
// MIXK-DAG: ex2.approx
// MIXK-DAG: st.global.b32
// MIXK-NOT: bar.sync
// MIXK-NOT: .shared
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa route-fuse-linear=0" | %python %S/ptx.py --kernel mixtral_moe_route | FileCheck %s --check-prefix=MIXSHFL
// MIXSHFL-COUNT-35: shfl.sync.bfly.b32
// MIXSHFL-NOT: shfl.sync.bfly.b32
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa route-fuse-linear=0" | %python %S/ptx.py --kernel mixtral_moe_route | FileCheck %s --check-prefix=MIXIDX
// MIXIDX-COUNT-2: shfl.sync.idx.b32
// MIXIDX-NOT: shfl.sync.idx.b32
//
// The whole layer with both kinds of kernels: the routing kernel is
// launched once, before the experts' kernels.
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa" | FileCheck %s --check-prefix=HOST
// HOST: gpu.launch_func {{(async \[%[0-9]+\] |<%[0-9]+ : !llvm.ptr> )?}}@moe_kernels::@mixtral_moe_route blocks in
// HOST-NOT: @mixtral_moe_route
// HOST: gpu.launch_func {{(async \[%[0-9]+\] |<%[0-9]+ : !llvm.ptr> )?}}@moe_kernels::@mixtral_moe_experts_align
//
// DeepSeek-V3: butterflies and the bias load are there; the group rounds
// and the K rounds stay loops (scf.for -> branches).
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py --kernel deepseek_v3_moe_route | FileCheck %s --check-prefix=DSV3K
// DSV3K-DAG: .maxntid 128, 1, 1
// DSV3K-DAG: shfl.sync.bfly.b32
// DSV3K-DAG: shfl.sync.idx.b32
// DSV3K-DAG: ex2.approx
// DSV3K-DAG: ld.global.b32
// DSV3K-NOT: bar.sync
//
// AT-MoE's hierarchical routing takes the routing kernel too (group logits
// as a second argument): its routing 42 -> 1 kernels; the group router GEMM
// stays a generic kernel (not fused for hierarchical routing). A Mixtral
// routing with K = 33 > 32 would keep the generic path with a remark
// (Conversion/MoEToGPU/convert-moe-route-to-gpu.mlir).
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa" 2>&1 | %python %S/ptx.py --kernel at_moe_route | FileCheck %s --check-prefix=ATMOE
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa route-kernels-required=1" 2>&1 | FileCheck %s --check-prefix=ATMOE-REQ
// ATMOE-DAG: .maxntid 128, 1, 1
// ATMOE-DAG: shfl.sync.bfly.b32
// ATMOE-DAG: ex2.approx
// ATMOE-REQ-NOT: error
// ATMOE-REQ: gpu.binary
