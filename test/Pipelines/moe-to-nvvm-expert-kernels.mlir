// moe-to-nvvm runs the experts of a bf16 layer as the three tensor-core
// kernels of convert-moe-experts-to-gpu (align, gate_up, down); the PTX
// (format=isa, no ptxas needed) shows what they are made of. ptxas -v on the
// same PTX (no spills): moe-to-nvvm-cubin.mlir. The kernels here are the
// unfused ones (expert-combine=none: down writes the T x K x H slots); the
// combine fused into them: moe-to-nvvm-fused-combine.mlir.
//
// A Mixtral-shaped layer at small size: H = 256, F = 512, E = 8, K = 2, bf16.
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0" | %python %S/ptx.py | FileCheck %s --check-prefix=PTX
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-combine=none" | FileCheck %s --check-prefix=HOST
//
// Kernels per layer: 32 with the expert kernels (routing, combine and
// copies as before, the experts in 3), 35 without them (the experts as 6
// generic kernels: gathered gate, up, activation, gathered down, bias/mask,
// zero fill).
// (route-kernels=0: the routing stays generic here, so that the counts
// measure the expert kernels only; the routing kernel's counts are in
// moe-to-nvvm-route-kernel.mlir.)
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 route-kernels=0 expert-combine=none" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=COUNT
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-kernels=0 route-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=GENERIC
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-kernels=0" | %python %S/ptx.py | FileCheck %s --check-prefix=NOMMA
//
// Tile options reach the kernels (BM 32, BN 32 / 64, BK 64, 2 stages:
// 32x72 A tiles, 32x72 gate and up tiles, 64x72 down tiles).
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-tile-m=32 expert-tile-n-gate-up=32 expert-tile-n-down=64 expert-tile-k=64 expert-stages=2" | %python %S/ptx.py | FileCheck %s --check-prefix=TILES
//
// An sm_75 target keeps the generic path and says why; with
// expert-kernels-required it is an error.
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 chip=sm_75 features=+ptx70" 2>&1 >/dev/null | FileCheck %s --check-prefix=SM75
// RUN: not moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 chip=sm_75 features=+ptx70 expert-kernels-required=1" 2>&1 >/dev/null | FileCheck %s --check-prefix=REQUIRED

// Shared memory, 16-byte aligned: align's counters; gate_up: 3 stages of a
// 64x40 A tile and of two 64x40 B tiles (gate, up; rows padded from 32 to
// 40 elements); down: a 64x40 A tile and a 128x40 B tile (BN = 128 for
// H = 256), 3 stages.
// PTX-DAG: .shared .align 16 .b8 __wg_mixtral_bf16_experts_align_0[32];
// PTX-DAG: .shared .align 16 .b8 __wg_mixtral_bf16_experts_gate_up_0[15360];
// PTX-DAG: .shared .align 16 .b8 __wg_mixtral_bf16_experts_gate_up_1[15360];
// PTX-DAG: .shared .align 16 .b8 __wg_mixtral_bf16_experts_gate_up_2[15360];
// PTX-DAG: .shared .align 16 .b8 __wg_mixtral_bf16_experts_down_0[15360];
// PTX-DAG: .shared .align 16 .b8 __wg_mixtral_bf16_experts_down_1[30720];
//
// align: one block of 1024 threads, shared-memory atomics, barriers, no MMA.
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0" | %python %S/ptx.py --kernel mixtral_bf16_experts_align | FileCheck %s --check-prefix=ALIGN
// ALIGN-DAG: .maxntid 1024, 1, 1
// ALIGN-DAG: atom.shared.add.u32
// ALIGN-DAG: bar.sync 0;
// ALIGN-NOT: mma.sync
//
// gate_up: 128-bit cp.async from global into shared memory (the gathered A
// rows with a source size: 0 fills a padding row with zeros), commit and
// wait for all but the youngest stage, ldmatrix x4, bf16 m16n8k16 MMAs with
// f32 accumulators (per 16-wide K step and warp: 2 (M) x 4 (N) x 2 (gate,
// up); 2 K steps per 32-wide stage: 32 in the loop body), SiLU (exp), h
// stored as bf16 pairs.
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0" | %python %S/ptx.py --kernel mixtral_bf16_experts_gate_up | FileCheck %s --check-prefix=GATEUP
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0" | %python %S/ptx.py --kernel mixtral_bf16_experts_gate_up | FileCheck %s --check-prefix=GATEUP-MMA
// GATEUP-DAG: .maxntid 128, 1, 1
// GATEUP-DAG: cp.async.cg.shared.global [{{%rd[0-9]+}}], [{{%rd[0-9]+}}], 16, {{%r[0-9]+}};
// GATEUP-DAG: cp.async.cg.shared.global [{{%rd[0-9]+(\+[0-9]+)?}}], [{{%rd[0-9]+(\+[0-9]+)?}}], 16;
// GATEUP-DAG: cp.async.commit_group;
// GATEUP-DAG: cp.async.wait_group 1;
// GATEUP-DAG: bar.sync 0;
// GATEUP-DAG: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// GATEUP-DAG: ex2.approx
// GATEUP-DAG: cvt.rn.bf16x2.f32
// GATEUP-DAG: st.global.b32
// GATEUP-MMA-COUNT-32: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// GATEUP-MMA-NOT: mma.sync
//
// down: h rows by cp.async (no gather: no source size), one B tile, 2 x 8
// MMAs per K step and warp, f32 pairs stored into the slots result.
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-combine=none" | %python %S/ptx.py --kernel mixtral_bf16_experts_down | FileCheck %s --check-prefix=DOWN
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-combine=none" | %python %S/ptx.py --kernel mixtral_bf16_experts_down | FileCheck %s --check-prefix=DOWN-MMA
// DOWN-DAG: .maxntid 128, 1, 1
// DOWN-DAG: cp.async.cg.shared.global [{{.+}}], [{{.+}}], 16;
// DOWN-DAG: cp.async.wait_group 1;
// DOWN-DAG: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// DOWN-DAG: st.global.v2.b32
// DOWN-NOT: cp.async.cg.shared.global [{{.+}}], [{{.+}}], 16, {{%r[0-9]+}};
// DOWN-MMA-COUNT-32: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// DOWN-MMA-NOT: mma.sync

// The host: the three launches in order, with grids of (ceil(T*K/64) + 8)
// x (F/64 = 8, H/128 = 2) blocks.
// HOST: gpu.launch_func {{(async \[%[0-9]+\] |<%[0-9]+ : !llvm.ptr> )?}}@moe_kernels::@mixtral_bf16_experts_align blocks in
// HOST: gpu.launch_func {{(async \[%[0-9]+\] |<%[0-9]+ : !llvm.ptr> )?}}@moe_kernels::@mixtral_bf16_experts_gate_up blocks in
// HOST: gpu.launch_func {{(async \[%[0-9]+\] |<%[0-9]+ : !llvm.ptr> )?}}@moe_kernels::@mixtral_bf16_experts_down blocks in

// COUNT: kernels: 32 entries, 32 launched
// GENERIC: kernels: 35 entries, 35 launched
// NOMMA-NOT: mma.sync
// NOMMA-NOT: ldmatrix
// NOMMA-NOT: cp.async

// TILES-DAG: .shared .align 16 .b8 __wg_mixtral_bf16_experts_gate_up_0[9216];
// TILES-DAG: .shared .align 16 .b8 __wg_mixtral_bf16_experts_gate_up_1[9216];
// TILES-DAG: .shared .align 16 .b8 __wg_mixtral_bf16_experts_down_1[18432];
// TILES-DAG: cp.async.wait_group 0;
// TILES-DAG: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32

// SM75: remark: moe.experts keeps the generic GPU path: the chip is older than sm_80
// REQUIRED: error: 'moe.experts' op cannot use the tensor-core expert kernels: the chip is older than sm_80

func.func @mixtral_bf16(%x: tensor<?x256xbf16>, %router: tensor<8x256xbf16>,
                        %w1: tensor<8x512x256xbf16>, %w3: tensor<8x512x256xbf16>,
                        %w2: tensor<8x256x512xbf16>) -> tensor<?x256xbf16> {
  %y = moe.layer %x : tensor<?x256xbf16>
      router(%router : tensor<8x256xbf16>)
      gate(%w1 : tensor<8x512x256xbf16>) up(%w3 : tensor<8x512x256xbf16>)
      down(%w2 : tensor<8x256x512xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>,
       activation = #moe.activation<swiglu>}
      -> tensor<?x256xbf16>
  return %y : tensor<?x256xbf16>
}
