// convert-moe-route-to-gpu with `required` (moe-to-nvvm's
// route-kernels-required): a moe.route the kernel does not cover is an
// error that says why, instead of a remark.
// RUN: moe-opt %s --split-input-file --convert-moe-route-to-gpu="required=1" --verify-diagnostics

func.func @many(%z: tensor<?x64xf32>) -> (tensor<?x33xi32>, tensor<?x33xf32>) {
  // expected-error @+1 {{'moe.route' op cannot use the routing kernel: K = 33 exceeds 32 (lane k keeps slot k)}}
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 33>}
      : tensor<?x64xf32> -> tensor<?x33xi32>, tensor<?x33xf32>
  return %i, %w : tensor<?x33xi32>, tensor<?x33xf32>
}

// -----

func.func @wide(%z: tensor<?x2048xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.route' op cannot use the routing kernel: E = 2048 exceeds 1024 experts per warp}}
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 2>}
      : tensor<?x2048xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

func.func @groups(%z: tensor<?x128xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.route' op cannot use the routing kernel: n_group = 64 exceeds 32 (each group needs a lane)}}
  %i, %w = moe.route %z {routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 64, topk_group = 2>}
      : tensor<?x128xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Covered kinds are unaffected by `required`.
func.func @ok(%z: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.route %z {routing = #moe.routing<softmax, topk, k = 2>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}
