// moe-to-nvvm expert-wgmma=1 (chip=sm_90a): the expert GEMMs issue Hopper
// warpgroup MMAs instead of ldmatrix + mma.sync. Per K step of 32: a
// wgmma.fence, BK/16 = 2 wgmma.mma_async m64nNk16 (gate_up: gate and up
// tiles in one buffer, N = 2 BN1 = 128; down: N = BN2 = 128) reading A and B from
// shared memory through descriptors, one commit and a wait that leaves this
// step's group in flight (the previous one completes; wait 0 after the
// loop), 4 stages with two K steps of copies ahead; the
// A/B tiles are still filled by 16-byte cp.async (the gathered token rows),
// each thread's copies made visible to wgmma's async proxy by
// fence.proxy.async before the barrier.
// ptxas sm_90a: no spills, no serialization warning. Input: the
// Mixtral-shaped layer of moe-to-nvvm-expert-kernels.mlir. Numerics:
// experts-emulate.test (the wgmma cases); not run on a GPU.
// REQUIRES: cuda-toolkit
// RUN: moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="format=isa chip=sm_90a expert-wgmma=1" | %python %S/ptx.py > %t.ptx
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_gate_up < %t.ptx | FileCheck %s --check-prefix=GATEUP
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_down < %t.ptx | FileCheck %s --check-prefix=DOWN
// The BM = 128 set (T * K >= 1024) takes wide tiles from the shape: 128 x 256
// outputs (two warpgroups; gate_up's gate and up 128 columns each in one
// m64n256k16, down 256 columns), BK = 64 (4 MMAs per K step), 4 stages in
// 192 KiB of dynamic shared memory (sm_90a allows 227):
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_bm128_gate_up < %t.ptx | FileCheck %s --check-prefix=WIDEGU
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_bm128_down < %t.ptx | FileCheck %s --check-prefix=WIDEDOWN
// RUN: moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="format=isa chip=sm_90a expert-wgmma=1" --mlir-print-ir-before=gpu-module-to-binary 2>&1 >/dev/null | FileCheck %s --check-prefix=WIDESMEM
// Their 128-byte rows (BK 64 of bf16) take the 128-byte swizzle: rows of
// 128 bytes, chunk c of row r at c ^ (r % 8), descriptors of layout type 1
// with stride byte offset 1024 and leading byte offset 16 (2^62 + (64 << 32)
// + (1 << 16) = 4611686293305360384), the dynamic shared memory 1024-byte
// aligned; expert-wgmma-swizzle=0 keeps the no-swizzle core matrices (LBO
// 128, SBO 1024: (8 << 16) + (64 << 32) = 274878431232). The narrow set's
// 64-byte rows (BK 32) are never swizzled.
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_bm128_gate_up < %t.ptx | FileCheck %s --check-prefix=SWZ
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_gate_up < %t.ptx | FileCheck %s --check-prefix=NARROW
// RUN: moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="format=isa chip=sm_90a expert-wgmma=1 expert-wgmma-swizzle=0" | %python %S/ptx.py --kernel mixtral_bf16_experts_bm128_gate_up | FileCheck %s --check-prefix=NOSWZ
// SWZ: or.b64 {{.*}}, 4611686293305360384;
// NOSWZ-NOT: 4611686293305360384
// NOSWZ: or.b64 {{.*}}, 274878431232;
// NOSWZ-NOT: 4611686293305360384
// NARROW-NOT: 4611686293305360384
// NARROW: wgmma.mma_async
// NARROW-NOT: 4611686293305360384
// RUN: %ptxas -arch=sm_90a -v %t.ptx -o %t.cubin > %t.log 2>&1
// RUN: FileCheck %s --check-prefix=PTXAS < %t.log
// RUN: FileCheck %s --check-prefix=TARGET < %t.ptx
// TARGET: .target sm_90a
// TARGET: .extern .shared .align 1024 .b8
// Many experts (DeepSeek-V3 example, E = 32: BM would be 32 for mma.sync)
// still take wgmma, with BM = 64 (a warpgroup's rows); no generic path:
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa chip=sm_90a expert-wgmma=1" 2>&1 | %python %S/ptx.py --kernel deepseek_v3_moe_experts_gate_up | FileCheck %s --check-prefix=DSV3
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa chip=sm_90a expert-wgmma=1" 2>&1 >/dev/null | FileCheck %s --check-prefix=NOREMARK --allow-empty
// DSV3: .maxntid 128, 1, 1
// DSV3: wgmma.mma_async.sync.aligned.m64n
// NOREMARK-NOT: generic GPU path
// wgmma.mma_async exists only on sm_90a:
// RUN: not moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="chip=sm_90 expert-wgmma=1" 2>&1 | FileCheck %s --check-prefix=CHIP

// GATEUP-LABEL: .entry mixtral_bf16_experts_gate_up(
// GATEUP: .maxntid 128, 1, 1
// GATEUP-NOT: ldmatrix
// GATEUP-NOT: mma.sync
// GATEUP: cp.async.cg.shared.global {{.*}}, 16
// GATEUP: wgmma.fence.sync.aligned;
// GATEUP-COUNT-2: wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 0, 0;
// GATEUP: // end inline asm
// GATEUP-NEXT: wgmma.commit_group.sync.aligned;
// GATEUP-NEXT: wgmma.wait_group.sync.aligned 1;
// (The loop is rotated: its head, the copies' wait, comes after.)
// GATEUP: cp.async.wait_group 1;
// GATEUP-NEXT: fence.proxy.async.shared::cta;
// GATEUP-NEXT: bar.sync 0;
// GATEUP: wgmma.wait_group.sync.aligned 0;
// GATEUP-NOT: ldmatrix

// DOWN-LABEL: .entry mixtral_bf16_experts_down(
// DOWN-NOT: ldmatrix
// DOWN: wgmma.fence.sync.aligned;
// DOWN-COUNT-2: wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16
// DOWN: wgmma.commit_group.sync.aligned;
// DOWN-NEXT: wgmma.wait_group.sync.aligned 1;
// DOWN: wgmma.wait_group.sync.aligned 0;
// DOWN: red.global.add.v2.f32

// WIDEGU-LABEL: .entry mixtral_bf16_experts_bm128_gate_up(
// WIDEGU: .maxntid 256, 1, 1
// WIDEGU: wgmma.fence.sync.aligned;
// WIDEGU-COUNT-4: wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16
// WIDEGU: wgmma.commit_group.sync.aligned;
// WIDEGU-NOT: wgmma.mma_async

// WIDEDOWN-LABEL: .entry mixtral_bf16_experts_bm128_down(
// WIDEDOWN: .maxntid 256, 1, 1
// WIDEDOWN: wgmma.fence.sync.aligned;
// WIDEDOWN-COUNT-4: wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16
// WIDEDOWN: wgmma.commit_group.sync.aligned;
// WIDEDOWN-NOT: wgmma.mma_async

// WIDESMEM: %[[S:.*]] = llvm.mlir.constant(196608 : i32) : i32
// WIDESMEM: gpu.launch_func {{.*}}@mixtral_bf16_experts_bm128_gate_up {{.*}} dynamic_shared_memory_size %[[S]] args
// WIDESMEM: gpu.launch_func {{.*}}@mixtral_bf16_experts_bm128_down {{.*}} dynamic_shared_memory_size %[[S]] args

// PTXAS-NOT: warning
// PTXAS-NOT: {{[1-9][0-9]* bytes spill}}
// PTXAS: Compiling entry function 'mixtral_bf16_experts_gate_up' for 'sm_90a'
// PTXAS-NOT: warning
// PTXAS-NOT: {{[1-9][0-9]* bytes spill}}
// PTXAS: Compiling entry function 'mixtral_bf16_experts_bm128_gate_up' for 'sm_90a'
// PTXAS-NOT: warning
// PTXAS-NOT: {{[1-9][0-9]* bytes spill}}

// CHIP: error: convert-moe-experts-to-gpu: wgmma needs chip sm_90a (got 'sm_90')
