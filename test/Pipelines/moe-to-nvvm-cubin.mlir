// moe-to-nvvm's default format: an sm_90 cubin (ELF) made by ptxas, and a
// fatbin on request; no GPU is needed. ptxas -v on the kernels' PTX reports
// no register spills in any kernel of the bundled examples.
// REQUIRES: cuda-toolkit
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="chip=sm_90" | FileCheck %s --check-prefix=BIN
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm | FileCheck %s --check-prefix=BIN
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm | FileCheck %s --check-prefix=BIN
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-to-nvvm | FileCheck %s --check-prefix=BIN
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=fatbin" | FileCheck %s --check-prefix=FATBIN
//
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.mixtral.ptx
// RUN: %ptxas -arch=sm_90 -v %t.mixtral.ptx -o %t.mixtral.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
// The BM = 128 gate_up's 162 KiB of stages (wide tiles: 8 warps, BK 64) are
// dynamic shared memory: one
// module-scope `.extern .shared` array aligned to 1024 bytes (the swizzled
// wgmma tiles need it; moe-nvvm-extern-dynamic-smem; the
// upstream lowering's internal global would be demoted into the kernel as a
// 1-byte static variable), and ptxas counts no static shared memory for it.
// RUN: FileCheck %s --check-prefix=DYNSMEM < %t.mixtral.ptx
// RUN: %ptxas -arch=sm_90 -v %t.mixtral.ptx -o %t.mixtral.cubin 2>&1 | FileCheck %s --check-prefix=DYNSTATS
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.dsv3.ptx
// RUN: %ptxas -arch=sm_90 -v %t.dsv3.ptx -o %t.dsv3.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.at.ptx
// RUN: %ptxas -arch=sm_90 -v %t.at.ptx -o %t.at.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.cart.ptx
// RUN: %ptxas -arch=sm_90 -v %t.cart.ptx -o %t.cart.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
//
// The tensor-core expert kernels (moe-to-nvvm-expert-kernels.mlir) do not
// spill either: the bf16 SwiGLU layer there with the default tiles and with
// small explicit ones, and the f16 GeGLU layer below (E = 64: BM = 32).
// RUN: moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.experts.ptx
// RUN: %ptxas -arch=sm_90 -v %t.experts.ptx -o %t.experts.cubin > %t.experts.log 2>&1
// RUN: FileCheck %s --check-prefix=NOSPILL < %t.experts.log
// RUN: FileCheck %s --check-prefix=EXPERTS -DFN=mixtral_bf16 < %t.experts.log
// RUN: moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="format=isa expert-tile-m=32 expert-tile-n-gate-up=32 expert-tile-n-down=64 expert-tile-k=64 expert-stages=2" | %python %S/ptx.py > %t.tiles.ptx
// RUN: %ptxas -arch=sm_90 -v %t.tiles.ptx -o %t.tiles.cubin > %t.tiles.log 2>&1
// RUN: FileCheck %s --check-prefix=NOSPILL < %t.tiles.log
// RUN: FileCheck %s --check-prefix=EXPERTS -DFN=mixtral_bf16 < %t.tiles.log
// With 8 warps per GEMM block (expert-warps=8) the accumulators halve:
// no spills, 256-thread entries (ptxas sm_90: 64 registers at BM = 64,
// 128 at BM = 128, where 4 warps need 208-219).
// RUN: moe-opt %S/moe-to-nvvm-expert-kernels.mlir --moe-to-nvvm="format=isa expert-warps=8" | %python %S/ptx.py > %t.w8.ptx
// RUN: %ptxas -arch=sm_90 -v %t.w8.ptx -o %t.w8.cubin > %t.w8.log 2>&1
// RUN: FileCheck %s --check-prefix=NOSPILL < %t.w8.log
// RUN: FileCheck %s --check-prefix=EXPERTS -DFN=mixtral_bf16 < %t.w8.log
// RUN: %python %S/ptx.py --kernel mixtral_bf16_experts_bm128_gate_up < %t.w8.ptx | FileCheck %s --check-prefix=W8
// W8: .maxntid 256, 1, 1
// W8: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.f16.ptx
// RUN: %ptxas -arch=sm_90 -v %t.f16.ptx -o %t.f16.cubin > %t.f16.log 2>&1
// RUN: FileCheck %s --check-prefix=NOSPILL < %t.f16.log
// RUN: FileCheck %s --check-prefix=EXPERTS -DFN=geglu_f16 < %t.f16.log
// RUN: %python %S/ptx.py --kernel geglu_f16_experts_gate_up < %t.f16.ptx | FileCheck %s --check-prefix=F16MMA
//
// The combine fused into them (moe-to-nvvm-fused-combine.mlir), atomic and
// gather: no spills in down (atomics / sorted rows), finish, reduce.
// RUN: moe-opt %S/moe-to-nvvm-fused-combine.mlir --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0" | %python %S/ptx.py > %t.atomic.ptx
// RUN: %ptxas -arch=sm_90 -v %t.atomic.ptx -o %t.atomic.cubin > %t.atomic.log 2>&1
// RUN: FileCheck %s --check-prefix=NOSPILL < %t.atomic.log
// RUN: FileCheck %s --check-prefix=FUSED -DLAST=finish < %t.atomic.log
// RUN: moe-opt %S/moe-to-nvvm-fused-combine.mlir --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0 expert-combine=gather" | %python %S/ptx.py > %t.gather.ptx
// RUN: %ptxas -arch=sm_90 -v %t.gather.ptx -o %t.gather.cubin > %t.gather.log 2>&1
// RUN: FileCheck %s --check-prefix=NOSPILL < %t.gather.log
// RUN: FileCheck %s --check-prefix=FUSED -DLAST=reduce < %t.gather.log

// DYNSMEM: .extern .shared .align 1024 .b8 __dynamic_shmem__0[];
// DYNSMEM-NOT: .shared {{.*}}__dynamic_shmem__
// DYNSMEM: .entry mixtral_moe_experts_bm128_gate_up(
// DYNSMEM: .maxntid 256, 1, 1
// DYNSMEM: mov.b64 {{.*}}, __dynamic_shmem__0;
// DYNSMEM: cp.async.cg.shared.global
// DYNSMEM: .entry
// DYNSTATS: Compiling entry function 'mixtral_moe_experts_bm128_gate_up' for 'sm_90'
// DYNSTATS-NEXT: Function properties for mixtral_moe_experts_bm128_gate_up
// DYNSTATS-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// DYNSTATS-NEXT: Used {{[0-9]+}} registers, used 1 barriers{{$}}

// NOSPILL-NOT: {{[1-9][0-9]* bytes spill}}
// NOSPILL-NOT: {{[1-9][0-9]* bytes stack frame}}
// EXPERTS: Compiling entry function '[[FN]]_experts_down' for 'sm_90'
// EXPERTS-NEXT: Function properties for [[FN]]_experts_down
// EXPERTS-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// EXPERTS: Compiling entry function '[[FN]]_experts_gate_up' for 'sm_90'
// EXPERTS-NEXT: Function properties for [[FN]]_experts_gate_up
// EXPERTS-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// EXPERTS: Compiling entry function '[[FN]]_experts_align' for 'sm_90'
// EXPERTS-NEXT: Function properties for [[FN]]_experts_align
// EXPERTS-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// The split-K set for a few tokens (expert-split-k-blocks=512, the default:
// down's reduction in 4 slices for this shape): no spills either.
// RUN: moe-opt %S/moe-to-nvvm-fused-combine.mlir --moe-to-nvvm="format=isa expert-large-tile-rows=0" | %python %S/ptx.py > %t.splitk.ptx
// RUN: %ptxas -arch=sm_90 -v %t.splitk.ptx -o %t.splitk.cubin 2>&1 | FileCheck %s --check-prefix=SPLITK
// SPLITK: Compiling entry function 'layer_experts_splitk_down' for 'sm_90'
// SPLITK-NEXT: Function properties for layer_experts_splitk_down
// SPLITK-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// F16MMA: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
// FUSED: Compiling entry function '[[LAST]]' for 'sm_90'
// FUSED-NEXT: Function properties for [[LAST]]
// FUSED-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// FUSED: Compiling entry function 'down' for 'sm_90'
// FUSED-NEXT: Function properties for down
// FUSED-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads

// BIN: gpu.binary @moe_kernels [#gpu.object<#nvvm.target<O = 3, chip = "sm_90", features = "+ptx81">, properties = {{{.*}}}, bin = "\7FELF
// FATBIN: gpu.binary @moe_kernels [#gpu.object<#nvvm.target<O = 3, chip = "sm_90", features = "+ptx81">, properties = {{{.*}}}, "P\EDU\BA

// SPILL-NOT: {{[1-9][0-9]* bytes spill}}
// SPILL: Compiling entry function '{{.+}}' for 'sm_90'
// SPILL: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// SPILL-NOT: {{[1-9][0-9]* bytes spill}}

func.func @geglu_f16(%x: tensor<?x128xf16>, %router: tensor<64x128xf16>,
                     %w1: tensor<64x256x128xf16>, %w3: tensor<64x256x128xf16>,
                     %w2: tensor<64x128x256xf16>) -> tensor<?x128xf16> {
  %y = moe.layer %x : tensor<?x128xf16>
      router(%router : tensor<64x128xf16>)
      gate(%w1 : tensor<64x256x128xf16>) up(%w3 : tensor<64x256x128xf16>)
      down(%w2 : tensor<64x128x256xf16>)
      {routing = #moe.routing<softmax, topk, k = 4>,
       activation = #moe.activation<geglu>}
      -> tensor<?x128xf16>
  return %y : tensor<?x128xf16>
}
