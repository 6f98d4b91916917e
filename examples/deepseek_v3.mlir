// A DeepSeek-V3-style MoE layer at toy size: sigmoid scores, the
// e_score_correction_bias used only for selection, group-limited top-k
// (8 groups, keep 4, group score = sum of the top-2), renormalised weights
// scaled by 2.5, and one always-on shared expert.
func.func @deepseek_v3_moe(%x: tensor<?x64xbf16>,
                           %router: tensor<32x64xbf16>,
                           %bias: tensor<32xf32>,
                           %gate: tensor<32x32x64xbf16>,
                           %up: tensor<32x32x64xbf16>,
                           %down: tensor<32x64x32xbf16>,
                           %sgate: tensor<32x64xbf16>,
                           %sup: tensor<32x64xbf16>,
                           %sdown: tensor<64x32xbf16>) -> tensor<?x64xbf16> {
  %y = moe.layer %x : tensor<?x64xbf16>
      router(%router : tensor<32x64xbf16>)
      selection_bias(%bias : tensor<32xf32>)
      gate(%gate : tensor<32x32x64xbf16>) up(%up : tensor<32x32x64xbf16>)
      down(%down : tensor<32x64x32xbf16>)
      shared_gate(%sgate : tensor<32x64xbf16>) shared_up(%sup : tensor<32x64xbf16>)
      shared_down(%sdown : tensor<64x32xbf16>)
      {routing = #moe.routing<sigmoid, group_limited_topk, k = 8, n_group = 8,
                              topk_group = 4, group_score = top2_sum,
                              renormalize, scaling_factor = 2.5>}
      -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}
