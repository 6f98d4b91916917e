// A layer of width H = 0 compiles through moe-to-nvvm with the experts on the
// generic path and a remark saying why: the tile choice divides by H and F,
// and took the process down with SIGFPE (found by session 26's IR fuzzing,
// the Cartesian example with every 64 replaced by 0).
// RUN: moe-opt %s --moe-to-nvvm="format=isa" -o /dev/null 2>&1 | FileCheck %s
// CHECK: remark: moe.experts keeps the generic GPU path: H, F or E is 0 (nothing to compute)

func.func @layer(%x: tensor<?x0xbf16>, %router: tensor<8x0xbf16>,
                 %gate: tensor<8x128x0xbf16>, %up: tensor<8x128x0xbf16>,
                 %down: tensor<8x0x128xbf16>) -> tensor<?x0xbf16> {
  %y = moe.layer %x : tensor<?x0xbf16> router(%router : tensor<8x0xbf16>)
      gate(%gate : tensor<8x128x0xbf16>) up(%up : tensor<8x128x0xbf16>)
      down(%down : tensor<8x0x128xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>,
       activation = #moe.activation<swiglu>} -> tensor<?x0xbf16>
  return %y : tensor<?x0xbf16>
}
