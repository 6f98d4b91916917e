// An AT-MoE-style layer: hierarchical grouped routing (2 groups of 4 experts,
// group and in-group softmax with temperatures, top-4 over the final
// weights) over LoRA experts (rank 4) sharing one frozen base matrix.
func.func @at_moe(%x: tensor<?x64xf32>,
                  %expert_router: tensor<8x64xf32>,
                  %group_router: tensor<2x64xf32>,
                  %base: tensor<64x64xf32>,
                  %lora_a: tensor<8x4x64xf32>,
                  %lora_b: tensor<8x64x4xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x : tensor<?x64xf32>
      router(%expert_router : tensor<8x64xf32>)
      group_router(%group_router : tensor<2x64xf32>)
      lora_base(%base : tensor<64x64xf32>)
      lora_a(%lora_a : tensor<8x4x64xf32>) lora_b(%lora_b : tensor<8x64x4xf32>)
      {routing = #moe.routing<softmax, hierarchical, k = 4, n_group = 2,
                              tau_group = 0.5, tau_expert = 1.5>,
       lora_alpha = 8.0 : f64}
      -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
