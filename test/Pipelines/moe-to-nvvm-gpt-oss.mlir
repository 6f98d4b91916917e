// A gpt-oss-20b-shaped layer (H = F = 2880, E = 32, K = 4, bf16,
// swiglu_clamped with gate, up and down biases) takes the tensor-core expert
// kernels with the combine fused: the biases are added in the GEMM epilogues
// (gate and up before the clamped activation, down before the routing
// weight). ptxas -v: no spills in gate_up, down and finish / reduce, atomic
// and gather. (route-kernels=0: the routing kernel is not what this checks.)
// REQUIRES: cuda-toolkit
// RUN: moe-opt %s --moe-to-nvvm="format=isa route-kernels=0" 2>&1 | %python %S/ptx.py > %t.atomic.ptx
// RUN: FileCheck %s --check-prefix=PTX < %t.atomic.ptx
// RUN: %ptxas -arch=sm_90 -v %t.atomic.ptx -o %t.atomic.cubin > %t.atomic.log 2>&1
// RUN: FileCheck %s --check-prefix=NOSPILL < %t.atomic.log
// RUN: FileCheck %s --check-prefixes=KERNELS,ATOMIC < %t.atomic.log
// RUN: moe-opt %s --moe-to-nvvm="format=isa route-kernels=0 expert-combine=gather" | %python %S/ptx.py > %t.gather.ptx
// RUN: %ptxas -arch=sm_90 -v %t.gather.ptx -o %t.gather.cubin > %t.gather.log 2>&1
// RUN: FileCheck %s --check-prefix=NOSPILL < %t.gather.log
// RUN: FileCheck %s --check-prefixes=KERNELS,GATHER < %t.gather.log

// No remark: the experts are not left on the generic path.
// PTX-NOT: keeps the generic GPU path
// PTX: .entry gpt_oss_experts_gate_up(
// PTX: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// The clamps: min(g, 7), max(u, -7) then min(., 7).
// PTX-DAG: min.NaN.f32 {{.+}}, 0f40E00000;
// PTX-DAG: max.NaN.f32 {{.+}}, 0fC0E00000;
// PTX: .entry gpt_oss_experts_down(
// PTX: red.global.add.v2.f32

// NOSPILL-NOT: {{[1-9][0-9]* bytes spill}}
// NOSPILL-NOT: {{[1-9][0-9]* bytes stack frame}}
// KERNELS-DAG: Compiling entry function 'gpt_oss_experts_gate_up' for 'sm_90'
// KERNELS-DAG: Compiling entry function 'gpt_oss_experts_down' for 'sm_90'
// ATOMIC-DAG: Compiling entry function 'gpt_oss_experts_finish' for 'sm_90'
// GATHER-DAG: Compiling entry function 'gpt_oss_experts_reduce' for 'sm_90'

func.func @gpt_oss(%x: tensor<?x2880xbf16>, %router: tensor<32x2880xbf16>,
                   %rb: tensor<32xbf16>,
                   %wg: tensor<32x2880x2880xbf16>, %wu: tensor<32x2880x2880xbf16>,
                   %wd: tensor<32x2880x2880xbf16>, %bg: tensor<32x2880xbf16>,
                   %bu: tensor<32x2880xbf16>, %bd: tensor<32x2880xbf16>)
    -> tensor<?x2880xbf16> {
  %y = moe.layer %x : tensor<?x2880xbf16>
      router(%router : tensor<32x2880xbf16>) router_bias(%rb : tensor<32xbf16>)
      gate(%wg : tensor<32x2880x2880xbf16>) up(%wu : tensor<32x2880x2880xbf16>)
      down(%wd : tensor<32x2880x2880xbf16>) gate_bias(%bg : tensor<32x2880xbf16>)
      up_bias(%bu : tensor<32x2880xbf16>) down_bias(%bd : tensor<32x2880xbf16>)
      {routing = #moe.routing<softmax, topk, k = 4>,
       activation = #moe.activation<swiglu_clamped>}
      -> tensor<?x2880xbf16>
  return %y : tensor<?x2880xbf16>
}
