// A Nexus-style MoE layer at toy size (H = 64, F = 96, E = 6, K = 2): the
// router is projected from per-expert domain embeddings (m = 16) through a
// learned SwiGLU projection (h' = 32), so that an expert trained later is
// added with its domain embedding only; plus a shared expert. bf16.
//
//   moe-opt examples/nexus.mlir --moe-add-expert            # one more expert
//   moe-opt examples/nexus.mlir --moe-fold-projected-router # a plain router
func.func @nexus_moe(%x: tensor<?x64xbf16>,
                     %domains: tensor<6x16xbf16>,
                     %proj_w1: tensor<64x16xbf16>,
                     %proj_w2: tensor<64x32xbf16>,
                     %gate: tensor<6x96x64xbf16>,
                     %up: tensor<6x96x64xbf16>,
                     %down: tensor<6x64x96xbf16>,
                     %sgate: tensor<96x64xbf16>,
                     %sup: tensor<96x64xbf16>,
                     %sdown: tensor<64x96xbf16>) -> tensor<?x64xbf16> {
  %y = moe.layer %x : tensor<?x64xbf16>
      domain_embeddings(%domains : tensor<6x16xbf16>)
      proj_w1(%proj_w1 : tensor<64x16xbf16>) proj_w2(%proj_w2 : tensor<64x32xbf16>)
      gate(%gate : tensor<6x96x64xbf16>) up(%up : tensor<6x96x64xbf16>)
      down(%down : tensor<6x64x96xbf16>)
      shared_gate(%sgate : tensor<96x64xbf16>) shared_up(%sup : tensor<96x64xbf16>)
      shared_down(%sdown : tensor<64x96xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>,
       activation = #moe.activation<swiglu>}
      -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}
