// JetMoE's layer (top-k then softmax, one bias after the mixture,
// `output_bias`) on the tensor-core expert kernels: the bias becomes the
// combine's `bias` and travels as one more argument after the accumulator
// (gate_up, atomic combine: the accumulator starts at the bias) or after the
// addends (reduce, gather combine); the layer has as many kernels as without
// the bias. The numbers: experts-emulate-combine-bias.test.
//
// RUN: moe-opt %s --moe-decompose --convert-moe-experts-to-gpu="combine=atomic large-tile-rows=0 split-k-blocks=0" | FileCheck %s --check-prefix=ATOMIC
// RUN: moe-opt %s --moe-decompose --convert-moe-experts-to-gpu="combine=gather large-tile-rows=0 split-k-blocks=0" | FileCheck %s --check-prefix=GATHER
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-kernels-required=1" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=COUNT
// RUN: sed -e 's/ output_bias(%b : tensor<256xbf16>)//' %s | moe-opt --moe-to-nvvm="format=isa expert-kernels-required=1" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=COUNT

// ATOMIC: gpu.func @gate_up({{.+}}, %{{.+}}: memref<?x512xbf16>, %{{.+}}: memref<?x256xf32>, %{{.+}}: memref<256xbf16>)
// ATOMIC: gpu.func @down(
// ATOMIC-NOT: memref<256xbf16>
// ATOMIC-SAME: kernel
// ATOMIC-NOT: moe.combine
// GATHER: gpu.func @reduce(%{{.+}}: memref<?x256xf32>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<?x2xf32>, %{{.+}}: memref<256xbf16>, %{{.+}}: memref<?x256xbf16>)
// GATHER-NOT: moe.combine

// COUNT: kernels: 15 entries, 15 launched

func.func @jetmoe(%x: tensor<?x256xbf16>, %wr: tensor<8x256xbf16>, %g: tensor<8x512x256xbf16>,
    %u: tensor<8x512x256xbf16>, %d: tensor<8x256x512xbf16>, %b: tensor<256xbf16>) -> tensor<?x256xbf16> {
  %y = moe.layer %x : tensor<?x256xbf16> router(%wr : tensor<8x256xbf16>)
      gate(%g : tensor<8x512x256xbf16>) up(%u : tensor<8x512x256xbf16>)
      down(%d : tensor<8x256x512xbf16>) output_bias(%b : tensor<256xbf16>)
      {routing = #moe.routing<none, topk_then_softmax, k = 2>, activation = #moe.activation<swiglu>} -> tensor<?x256xbf16>
  return %y : tensor<?x256xbf16>
}
