// moe-to-nvvm with the moe.combine fused into the expert kernels
// (expert-combine=atomic, the default, or gather; none keeps the combine's
// generic kernels). The layer takes its routing as arguments, so the counts
// are the experts' and the combine's kernels only; fused, they are the only
// kernels, so their gpu.module is not merged and the PTX entries keep their
// short names. ptxas -v (no spills): moe-to-nvvm-cubin.mlir.
//
// Mixtral-shaped, H = 256, F = 512, E = 8, K = 2, bf16, a shared expert's
// f32 output as an addend.
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=ATOMIC-COUNT
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0 expert-combine=gather" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=GATHER-COUNT
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0 expert-combine=none" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=NONE-COUNT
// Kernels for the experts and the combine: 7 unfused (align, gate_up, down,
// then the combine's four generic kernels), 4 fused.
// ATOMIC-COUNT: kernels: 4 entries, 4 launched
// GATHER-COUNT: kernels: 4 entries, 4 launched
// NONE-COUNT: kernels: 7 entries, 7 launched
//
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0" | FileCheck %s --check-prefix=HOST
// HOST: gpu.launch_func {{(async \[%[0-9]+\] |<%[0-9]+ : !llvm.ptr> )?}}@layer_experts::@align blocks in
// HOST: gpu.launch_func {{(async \[%[0-9]+\] |<%[0-9]+ : !llvm.ptr> )?}}@layer_experts::@gate_up blocks in
// HOST: gpu.launch_func {{(async \[%[0-9]+\] |<%[0-9]+ : !llvm.ptr> )?}}@layer_experts::@down blocks in
// HOST: gpu.launch_func {{(async \[%[0-9]+\] |<%[0-9]+ : !llvm.ptr> )?}}@layer_experts::@finish blocks in
// HOST-NOT: gpu.launch_func
//
// atomic: gate_up writes the accumulator (the addend, 16-byte loads and
// stores) besides h; down adds w * row with f32 atomics (on sm_90 with PTX
// ISA 8.1, the default, a lane's two adjacent columns in one vector
// reduction; with +ptx80 scalar atomics) and stores nothing else; finish
// rounds the accumulator to bf16.
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0 features=+ptx80" | %python %S/ptx.py --kernel down | FileCheck %s --check-prefix=DOWN80
// DOWN80: atom.global.add.f32
// DOWN80-NOT: red.global.add.v2.f32
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0" | %python %S/ptx.py --kernel gate_up | FileCheck %s --check-prefix=GATEUP
// GATEUP-DAG: ld.global.v4.b32
// GATEUP-DAG: st.global.v4.b32
// GATEUP-DAG: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0" | %python %S/ptx.py --kernel down | FileCheck %s --check-prefix=DOWN
// DOWN-DAG: red.global.add.v2.f32 [{{%rd[0-9]+}}], {{[{]}}{{%[rf][0-9]+}}, {{%[rf][0-9]+}}{{[}]}};
// DOWN-DAG: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// DOWN-NOT: st.global
// DOWN-NOT: atom.global
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0" | %python %S/ptx.py --kernel finish | FileCheck %s --check-prefix=FINISH
// FINISH-DAG: .maxntid 64, 1, 1
// FINISH-DAG: ld.global.v4.b32
// FINISH-DAG: cvt.rn.bf16x2.f32
// FINISH-NOT: atom
//
// gather: down stores rows (no atomics), reduce sums K rows per token with
// the weights (fma) and the addend, rounds once.
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0 expert-combine=gather" | %python %S/ptx.py --kernel down | FileCheck %s --check-prefix=GDOWN
// GDOWN-DAG: st.global.v2.b32
// GDOWN-NOT: atom.global
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0 expert-combine=gather" | %python %S/ptx.py --kernel reduce | FileCheck %s --check-prefix=REDUCE
// REDUCE-DAG: .maxntid 64, 1, 1
// REDUCE-DAG: ld.global.v4.b32
// REDUCE-DAG: fma.rn.f32
// REDUCE-DAG: cvt.rn.bf16x2.f32
// REDUCE-NOT: atom
// Unfused, the kernels join the combine's in @moe_kernels (names prefixed).
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-large-tile-rows=0 expert-split-k-blocks=0 expert-combine=none" | %python %S/ptx.py --kernel layer_experts_down | FileCheck %s --check-prefix=NDOWN
// NDOWN-NOT: atom.global
// NDOWN: st.global.v2.b32
// NDOWN-NOT: atom.global

func.func @layer(%x: tensor<?x256xbf16>, %idx: tensor<?x2xi32>, %w: tensor<?x2xf32>,
                 %w1: tensor<8x512x256xbf16>, %w3: tensor<8x512x256xbf16>,
                 %w2: tensor<8x256x512xbf16>, %shared: tensor<?x256xf32>) -> tensor<?x256xbf16> {
  %s = moe.experts %x, %idx gate(%w1 : tensor<8x512x256xbf16>) up(%w3 : tensor<8x512x256xbf16>)
      down(%w2 : tensor<8x256x512xbf16>) {activation = #moe.activation<swiglu>}
      : tensor<?x256xbf16>, tensor<?x2xi32> -> tensor<?x2x256xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x256xf32>)
       addends(%shared : tensor<?x256xf32>) : tensor<?x256xbf16>
  return %y : tensor<?x256xbf16>
}
