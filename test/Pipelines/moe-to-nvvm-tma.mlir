// The wgmma expert kernels with their weight tiles by TMA (expert-tma=1,
// sm_90a; not the default, not run on a GPU yet): where the tiles are the
// 128-byte swizzled ones (rows of BK 64 bf16 in dynamic shared memory: the
// wide BM = 128 set here), gate_up and down
// - initialise one mbarrier per stage after the tiles (4 stages: 32 bytes
//   after the 196608 bytes of tiles, which the launch asks for too),
// - arm the stage's barrier (arrive.expect_tx) and issue one 3-d TMA box per
//   weight (gate and up: two, into the fused B buffer; down: one),
// - wait on the barrier's phase parity before the MMAs;
// the host makes the tensor maps (mgpuTensorMap3D: gate, up, down) and
// passes their addresses; the other kernel sets keep cp.async. ptxas: no
// spills. Numbers: experts-emulate.test (TMA cases).
// REQUIRES: cuda-toolkit
// RUN: moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="format=isa chip=sm_90a expert-wgmma=1 expert-tma=1" > %t.mlir
// RUN: %python %S/ptx.py < %t.mlir > %t.ptx
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_bm128_gate_up < %t.ptx | FileCheck %s --check-prefix=GATEUP
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_bm128_down < %t.ptx | FileCheck %s --check-prefix=DOWN
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_gate_up < %t.ptx | FileCheck %s --check-prefix=NARROW
// RUN: FileCheck %s --check-prefix=HOST < %t.mlir
// RUN: %ptxas -arch=sm_90a -v %t.ptx -o %t.cubin > %t.log 2>&1
// RUN: FileCheck %s --check-prefix=PTXAS < %t.log
// TMA without wgmma is an error, not a silent no-op.
// RUN: not moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="chip=sm_90a expert-tma=1" 2>&1 | FileCheck %s --check-prefix=NOWGMMA
// Off by default: no TMA.
// RUN: moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="format=isa chip=sm_90a expert-wgmma=1" | %python %S/ptx.py | FileCheck %s --check-prefix=OFF

// GATEUP-COUNT-4: mbarrier.init.shared.b64 [__dynamic_shmem__0+{{196608|196616|196624|196632}}], {{%r[0-9]+}};
// GATEUP: fence.mbarrier_init.release.cluster;
// GATEUP: mbarrier.arrive.expect_tx.shared.b64
// GATEUP: cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
// GATEUP: cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
// GATEUP: mbarrier.try_wait.parity.shared.b64
// GATEUP: wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16

// DOWN: mbarrier.init.shared.b64
// DOWN: mbarrier.arrive.expect_tx.shared.b64
// DOWN: cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
// DOWN: mbarrier.try_wait.parity.shared.b64
// DOWN: wgmma.mma_async.sync.aligned

// NARROW-NOT: cp.async.bulk.tensor
// NARROW-NOT: mbarrier

// HOST-NOT: llvm.call @mgpuTensorMap3D(
// HOST: llvm.call @mgpuTensorMap3D(
// HOST: llvm.call @mgpuTensorMap3D(
// HOST: gpu.launch_func {{.*}}::@mixtral_bf16_experts_bm128_gate_up {{.*}}dynamic_shared_memory_size
// HOST: llvm.call @mgpuTensorMap3D(
// HOST: gpu.launch_func {{.*}}::@mixtral_bf16_experts_bm128_down
// HOST-NOT: llvm.call @mgpuTensorMap3D(

// PTXAS: Compiling entry function 'mixtral_bf16_experts_bm128_{{gate_up|down}}' for 'sm_90a'
// PTXAS-NEXT: Function properties
// PTXAS-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// PTXAS: Compiling entry function 'mixtral_bf16_experts_bm128_{{gate_up|down}}' for 'sm_90a'
// PTXAS-NEXT: Function properties
// PTXAS-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads

// NOWGMMA: error: convert-moe-experts-to-gpu: tma needs wgmma (the swizzled wgmma tiles are the ones TMA fills)

// OFF-NOT: cp.async.bulk.tensor
// OFF-NOT: mbarrier
