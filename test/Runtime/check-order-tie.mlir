// `moe-run --check` under capacity dispatch: a token whose two chosen experts
// tie (logits [1, 1, 0, ...]: the router is the identity on the first 8
// features) may come out of a compiled layer with its slots in the other
// order (the reference's order ties, Routed::orderTie), and capacity admits
// pairs by slot, so the tie can change the admission of other tokens' pairs
// to the same experts, later in their queues (ref::capacityTaint). Those
// tokens are left out and counted; the rest are compared, and the dropped
// count is not. Here T = 5, K = 2, E = 8, capacity ceil(0.75 * 10 / 8) = 1:
// token 0 ties experts 0 and 1, tokens 1-3 take experts (2, 3), (4, 5),
// (6, 7), token 4 takes (0, 2): expert 0 may overflow after token 0, so
// token 4 is left out; 3 of 5 are compared.
// Without capacity the same tokens are all compared (the slots' order does
// not change the output).
// RUN: rm -rf %t && mkdir -p %t
// RUN: moe-compile %s -o %t/art > /dev/null
// RUN: %python %moe_src_root/test/Integration/CPU/write_npy.py %t/x.npy 5 32 "{(0, 0): 1, (0, 1): 1, (1, 2): 2, (1, 3): 1.5, (2, 4): 2, (2, 5): 1.5, (3, 6): 2, (3, 7): 1.5, (4, 0): 2, (4, 2): 1.5}.get((r, c), 0.0)"
// RUN: %python %moe_src_root/test/Integration/CPU/write_npy.py %t/r.npy 8 32 "1.0 if r == c else 0.0"
// RUN: moe-run %t/art --entry capacity --tokens 5 --input input=%t/x.npy --input router=%t/r.npy --check | FileCheck %s --check-prefix=CAP
// RUN: moe-run %t/art --entry dropless --tokens 5 --input input=%t/x.npy --input router=%t/r.npy --check | FileCheck %s --check-prefix=DROPLESS
// A third logit close to the tie is a near tie (the experts themselves may
// differ): left out of the dropless comparison. Both tokens are such ties,
// so nothing is compared: not comparable, never a vacuous ok.
// RUN: %python %moe_src_root/test/Integration/CPU/write_npy.py %t/x3.npy 2 32 "1.0 if c < 2 else (0.99999 if c == 2 else 0.0)"
// RUN: moe-run %t/art --entry dropless --tokens 2 --input input=%t/x3.npy --input router=%t/r.npy --check | FileCheck %s --check-prefix=NEAR

// CAP: check: ok {{.*}} 3/5 tokens compared, 1 more whose capacity admissions the ties could change)
// CAP-NEXT: check: dropped count not comparable (1 tie tokens under capacity dispatch)
// DROPLESS: check: ok {{.*}} 5/5 tokens compared)
// NEAR: check: not comparable: none of the 2 tokens compared (2 near ties), rerun with another seed
// NEAR-NOT: check: ok

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
