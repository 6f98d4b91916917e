// Llama 4's layer (`scale_input`: the sigmoid top-1 weight scales the
// expert's input; a shared expert of the routed experts' width) on the
// tensor-core expert kernels: the route's weights reach gate_up as the
// input scales (an argument after the weights), the combine has no weights
// (down gets the same buffer and takes weight 1), the shared expert joins
// the routed grid, and the layer has as many kernels as without
// scale_input. The numbers: experts-emulate-scale-input.test.
//
// RUN: moe-opt %s --moe-decompose --convert-moe-experts-to-gpu="combine=atomic large-tile-rows=0 split-k-blocks=0" | FileCheck %s --check-prefix=HOST
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-kernels-required=1" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=COUNT
// RUN: sed -e 's/, scale_input//' %s | moe-opt --moe-to-nvvm="format=isa expert-kernels-required=1" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=COUNT

// HOST: func.func private @llama4_experts_launch(memref<?x256xbf16>, memref<?x1xi32>, memref<8x512x256xbf16>, memref<8x512x256xbf16>, memref<8x256x512xbf16>, memref<?x1xf32>,
// HOST: gpu.func @gate_up(%{{.+}}: memref<?x256xbf16>, %{{.+}}: memref<8x512x256xbf16>, %{{.+}}: memref<8x512x256xbf16>, %{{.+}}: memref<?x1xf32>, %{{.+}}: memref<?xi32>,
// HOST: gpu.func @down(%{{.+}}: memref<?x512xbf16>, %{{.+}}: memref<8x256x512xbf16>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<1xi32>, %{{.+}}: memref<?x1xf32>, %{{.+}}: memref<?x256xf32>, %{{.+}}: memref<256x512xbf16>)
// HOST-NOT: moe.combine
// HOST-NOT: moe.ffn

// COUNT: kernels: 15 entries, 15 launched

// The scale in gate_up's epilogue: per lane, one load of each of its 4 rows'
// pair (ld.global.s32) and scale (ld.global.b32), and one multiply for each
// of its 32 gate and 32 up sums (mul.rn.f32: 96 without scale_input, 160
// with), before the activation.
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-kernels-required=1 expert-large-tile-rows=0 expert-split-k-blocks=0" | %python %S/ptx.py --kernel llama4_experts_gate_up > %t.scaled
// RUN: sed -e 's/, scale_input//' %s | moe-opt --moe-to-nvvm="format=isa expert-kernels-required=1 expert-large-tile-rows=0 expert-split-k-blocks=0" | %python %S/ptx.py --kernel llama4_experts_gate_up > %t.plain
// RUN: FileCheck %s --check-prefix=PTX < %t.scaled
// RUN: grep -c "mul.rn.f32" %t.scaled | FileCheck %s --check-prefix=MUL160
// RUN: grep -c "mul.rn.f32" %t.plain | FileCheck %s --check-prefix=MUL96
// RUN: grep -c "ld.global.b32" %t.scaled | FileCheck %s --check-prefix=LD6
// RUN: grep -c "ld.global.b32" %t.plain | FileCheck %s --check-prefix=LD2
// PTX: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// PTX: ld.global.b32
// PTX: mul.rn.f32
// PTX: ex2.approx.ftz.f32
// MUL160: {{^}}160{{$}}
// MUL96: {{^}}96{{$}}
// LD6: {{^}}6{{$}}
// LD2: {{^}}2{{$}}

func.func @llama4(%x: tensor<?x256xbf16>, %wr: tensor<8x256xbf16>, %g: tensor<8x512x256xbf16>,
    %u: tensor<8x512x256xbf16>, %d: tensor<8x256x512xbf16>, %sg: tensor<512x256xbf16>,
    %su: tensor<512x256xbf16>, %sd: tensor<256x512xbf16>) -> tensor<?x256xbf16> {
  %y = moe.layer %x : tensor<?x256xbf16> router(%wr : tensor<8x256xbf16>)
      gate(%g : tensor<8x512x256xbf16>) up(%u : tensor<8x512x256xbf16>)
      down(%d : tensor<8x256x512xbf16>) shared_gate(%sg : tensor<512x256xbf16>)
      shared_up(%su : tensor<512x256xbf16>) shared_down(%sd : tensor<256x512xbf16>)
      {routing = #moe.routing<sigmoid, topk, k = 1>, activation = #moe.activation<swiglu>, scale_input} -> tensor<?x256xbf16>
  return %y : tensor<?x256xbf16>
}
