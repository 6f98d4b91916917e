// A Mixtral-style MoE layer at toy size (H = 64, F = 128, E = 8, K = 2):
// softmax router, top-2, renormalised weights, SwiGLU experts, bf16, and a
// dynamic token count. Weights are function arguments.
//
//   moe-opt examples/mixtral.mlir --moe-decompose --canonicalize
func.func @mixtral_moe(%x: tensor<?x64xbf16>,
                       %router: tensor<8x64xbf16>,
                       %w1: tensor<8x128x64xbf16>,   // gate
                       %w3: tensor<8x128x64xbf16>,   // up
                       %w2: tensor<8x64x128xbf16>)   // down
    -> tensor<?x64xbf16> {
  %y = moe.layer %x : tensor<?x64xbf16>
      router(%router : tensor<8x64xbf16>)
      gate(%w1 : tensor<8x128x64xbf16>)
      up(%w3 : tensor<8x128x64xbf16>)
      down(%w2 : tensor<8x64x128xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>,
       activation = #moe.activation<swiglu>}
      -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}
