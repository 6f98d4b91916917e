// A CartesianMoE layer: two chained sub-expert layers A (4 experts, top-2)
// and B (4 experts, top-2, with a global shared expert), with an RMSNorm
// between them: h = x + A(x); y = B(rmsnorm(h)).
func.func @cartesian_moe(%x: tensor<?x64xf16>, %norm: tensor<64xf16>,
    %ra: tensor<4x64xf16>, %ga: tensor<4x32x64xf16>, %ua: tensor<4x32x64xf16>, %da: tensor<4x64x32xf16>,
    %rb: tensor<4x64xf16>, %gb: tensor<4x32x64xf16>, %ub: tensor<4x32x64xf16>, %db: tensor<4x64x32xf16>,
    %su: tensor<64x64xf16>, %sd: tensor<64x64xf16>) -> tensor<?x64xf16> {
  %y = moe.cartesian %x norm(%norm : tensor<64xf16>) : tensor<?x64xf16>
  first {
  ^bb0(%a: tensor<?x64xf16>):
    %ya = moe.layer %a : tensor<?x64xf16> router(%ra : tensor<4x64xf16>)
        gate(%ga : tensor<4x32x64xf16>) up(%ua : tensor<4x32x64xf16>) down(%da : tensor<4x64x32xf16>)
        {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x64xf16>
    moe.yield %ya : tensor<?x64xf16>
  } second {
  ^bb0(%b: tensor<?x64xf16>):
    %yb = moe.layer %b : tensor<?x64xf16> router(%rb : tensor<4x64xf16>)
        gate(%gb : tensor<4x32x64xf16>) up(%ub : tensor<4x32x64xf16>) down(%db : tensor<4x64x32xf16>)
        shared_up(%su : tensor<64x64xf16>) shared_down(%sd : tensor<64x64xf16>)
        {routing = #moe.routing<softmax, topk, k = 2, renormalize>,
         shared_activation = #moe.activation<gelu>} -> tensor<?x64xf16>
    moe.yield %yb : tensor<?x64xf16>
  }
  return %y : tensor<?x64xf16>
}
