// An f32 Mixtral-shaped layer (H = 4096, F = 14336, E = 8, K = 2, SwiGLU)
// takes the tensor-core expert kernels: tf32 mma.sync m16n8k8 with each
// operand split into two tf32 values (3xTF32: f32-accurate products), in
// all three kernel sets (default BM 64, the few-token set, BM = 128); the
// routed experts no longer fall back to one thread per output. ptxas -v: no
// spills in any of them. Numbers: experts-emulate.test (f32 cases).
// (route-kernels=0: the routing kernel is not what this checks.)
// With expert-wgmma=1 (sm_90a) f32 experts still take these kernels, and a
// remark says so.
// REQUIRES: cuda-toolkit
// RUN: moe-opt %s --moe-to-nvvm="format=isa route-kernels=0" 2>&1 | %python %S/ptx.py > %t.ptx
// RUN: FileCheck %s --check-prefix=PTX < %t.ptx
// RUN: %ptxas -arch=sm_90 -v %t.ptx -o %t.cubin > %t.log 2>&1
// RUN: FileCheck %s --check-prefix=NOSPILL < %t.log
// RUN: FileCheck %s --check-prefix=KERNELS < %t.log
// RUN: moe-opt %s --moe-to-nvvm="format=isa route-kernels=0 chip=sm_90a expert-wgmma=1" 2>&1 >/dev/null | FileCheck %s --check-prefix=WGMMA

// PTX-NOT: keeps the generic GPU path
// PTX: .entry mixtral_f32_experts_gate_up(
// Operands by 16-byte cp.async (4 f32) and ldmatrix of 32-bit elements,
// each value rounded to tf32 twice (big, then small = v - big).
// PTX: cp.async.cg.shared.global [{{.+}}], [{{.+}}], 16, {{.+}};
// PTX: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// PTX: cvt.rna.tf32.f32
// PTX: and.b32 {{.+}}, -8192;
// PTX: sub.rn.f32
// PTX: cvt.rna.tf32.f32
// PTX: mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
// PTX-NOT: mma.sync.aligned.m16n8k16
// PTX: .entry mixtral_f32_experts_down(
// PTX: mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
// PTX: red.global.add.v2.f32

// NOSPILL-NOT: {{[1-9][0-9]* bytes spill}}
// NOSPILL-NOT: {{[1-9][0-9]* bytes stack frame}}
// KERNELS-DAG: Compiling entry function 'mixtral_f32_experts_gate_up' for 'sm_90'
// KERNELS-DAG: Compiling entry function 'mixtral_f32_experts_down' for 'sm_90'
// KERNELS-DAG: Compiling entry function 'mixtral_f32_experts_splitk_gate_up' for 'sm_90'
// KERNELS-DAG: Compiling entry function 'mixtral_f32_experts_splitk_down' for 'sm_90'
// KERNELS-DAG: Compiling entry function 'mixtral_f32_experts_bm128_gate_up' for 'sm_90'
// KERNELS-DAG: Compiling entry function 'mixtral_f32_experts_bm128_down' for 'sm_90'

// WGMMA: remark: f32 experts take tf32 mma.sync tiles (3xTF32), not wgmma (bf16 and f16 only)
// WGMMA-NOT: keeps the generic GPU path

func.func @mixtral_f32(%x: tensor<?x4096xf32>, %router: tensor<8x4096xf32>,
                       %w1: tensor<8x14336x4096xf32>, %w3: tensor<8x14336x4096xf32>,
                       %w2: tensor<8x4096x14336xf32>) -> tensor<?x4096xf32> {
  %y = moe.layer %x : tensor<?x4096xf32>
      router(%router : tensor<8x4096xf32>)
      gate(%w1 : tensor<8x14336x4096xf32>) up(%w3 : tensor<8x14336x4096xf32>)
      down(%w2 : tensor<8x4096x14336xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>,
       activation = #moe.activation<swiglu>}
      -> tensor<?x4096xf32>
  return %y : tensor<?x4096xf32>
}
