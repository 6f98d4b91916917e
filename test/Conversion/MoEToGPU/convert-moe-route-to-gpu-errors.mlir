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

// -----

// The admission kernel of a capacity moe.dispatch keeps one i32 count per
// expert in shared memory.
func.func @dispatch_wide(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>) {
  // expected-error @+1 {{'moe.dispatch' op cannot use the capacity admission kernel: num_experts 20000 is above 12288 (the admission counters' shared memory)}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 20000 : i64, mode = #moe.dispatch<capacity>, capacity_factor = 1.5 : f64}
      : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return %a, %b, %n : tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>
}

// -----

func.func @dispatch_dynamic_k(%i: tensor<?x?xi32>, %w: tensor<?x?xf32>) -> (tensor<?x?xi32>, tensor<?x?xf32>, tensor<i64>) {
  // expected-error @+1 {{'moe.dispatch' op cannot use the capacity admission kernel: the slot count K is dynamic}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>, expert_capacity = 4}
      : tensor<?x?xi32>, tensor<?x?xf32> -> tensor<i64>
  return %a, %b, %n : tensor<?x?xi32>, tensor<?x?xf32>, tensor<i64>
}
