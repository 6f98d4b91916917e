// `moe-run --check` under capacity dispatch: a token whose two chosen experts
// tie (logits [1, 1, 0, ...]: the router is the identity on the first 8
// features) may come out of a compiled layer with its slots in the other
// order, and capacity admits pairs by slot, so the run is reported as not
// comparable (the reference's order ties, Routed::orderTie). Without capacity
// the same tokens are compared: the slots' order does not change the output.
// RUN: rm -rf %t && mkdir -p %t
// RUN: moe-compile %s -o %t/art > /dev/null
// RUN: %python %moe_src_root/test/Integration/CPU/write_npy.py %t/x.npy 2 32 "1.0 if c < 2 else 0.0"
// RUN: %python %moe_src_root/test/Integration/CPU/write_npy.py %t/r.npy 8 32 "1.0 if r == c else 0.0"
// RUN: moe-run %t/art --entry capacity --tokens 2 --input input=%t/x.npy --input router=%t/r.npy --check | FileCheck %s --check-prefix=CAP
// RUN: moe-run %t/art --entry dropless --tokens 2 --input input=%t/x.npy --input router=%t/r.npy --check | FileCheck %s --check-prefix=DROPLESS
// A third logit close to the tie is a near tie (the experts themselves may
// differ): not comparable either, and left out of the dropless comparison.
// RUN: %python %moe_src_root/test/Integration/CPU/write_npy.py %t/x3.npy 2 32 "1.0 if c < 2 else (0.99999 if c == 2 else 0.0)"
// RUN: moe-run %t/art --entry dropless --tokens 2 --input input=%t/x3.npy --input router=%t/r.npy --check | FileCheck %s --check-prefix=NEAR

// CAP: check: 2 near-tie tokens under capacity dispatch: not comparable
// DROPLESS: check: ok {{.*}} 2/2 tokens compared
// NEAR: check: ok {{.*}} 0/2 tokens compared

func.func @capacity(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>) -> (tensor<?x32xf32>, tensor<i64>) {
  %y, %n = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>, dispatch = #moe.dispatch<capacity>, capacity_factor = 0.75 : f64} -> tensor<?x32xf32>, tensor<i64>
  return %y, %n : tensor<?x32xf32>, tensor<i64>
}

func.func @dropless(%input: tensor<?x32xf32>, %router: tensor<8x32xf32>, %up: tensor<8x48x32xf32>, %down: tensor<8x32x48xf32>) -> tensor<?x32xf32> {
  %y = moe.layer %input : tensor<?x32xf32> router(%router : tensor<8x32xf32>) up(%up : tensor<8x48x32xf32>) down(%down : tensor<8x32x48xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
