// RUN: moe-opt %s --verify-diagnostics --moe-merge-experts="groups=0+1+2+3"

// Capacity dispatch over fewer merged experts than slots.
func.func @capacity(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) -> (tensor<?x16xf32>, tensor<i64>) {
  // expected-error @+1 {{'moe.layer' op cannot merge to 1 experts: capacity dispatch needs at least k = 2 experts}}
  %y, %n = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<4x32x16xf32>)
      down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>,
       dispatch = #moe.dispatch<capacity>, capacity_factor = 2.0 : f64} -> tensor<?x16xf32>, tensor<i64>
  return %y, %n : tensor<?x16xf32>, tensor<i64>
}
