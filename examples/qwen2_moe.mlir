// A Qwen2-MoE-style layer at toy size (H = 64, F = 32, E = 16, K = 4):
// softmax router, top-4 without renormalisation (norm_topk_prob = false),
// SwiGLU experts, and a shared expert 4 x F wide (as Qwen1.5-MoE-A2.7B's
// 5632 = 4 x 1408) whose output is scaled by sigmoid(x . shared_gate_weight)
// (`shared_expert_gate`). bf16, dynamic token count. On the GPU the shared
// expert runs in the routed kernels' grid (its four F-wide column slices as
// experts 16 .. 19, weighed by the sigmoid gate).
func.func @qwen2_moe(%x: tensor<?x64xbf16>,
                     %router: tensor<16x64xbf16>,
                     %gate: tensor<16x32x64xbf16>,
                     %up: tensor<16x32x64xbf16>,
                     %down: tensor<16x64x32xbf16>,
                     %sgate: tensor<128x64xbf16>,
                     %sup: tensor<128x64xbf16>,
                     %sdown: tensor<64x128xbf16>,
                     %sgw: tensor<1x64xbf16>) -> tensor<?x64xbf16> {
  %y = moe.layer %x : tensor<?x64xbf16>
      router(%router : tensor<16x64xbf16>)
      gate(%gate : tensor<16x32x64xbf16>) up(%up : tensor<16x32x64xbf16>)
      down(%down : tensor<16x64x32xbf16>)
      shared_gate(%sgate : tensor<128x64xbf16>) shared_up(%sup : tensor<128x64xbf16>)
      shared_down(%sdown : tensor<64x128xbf16>)
      shared_gate_weight(%sgw : tensor<1x64xbf16>)
      {routing = #moe.routing<softmax, topk, k = 4>,
       activation = #moe.activation<swiglu>}
      -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}
