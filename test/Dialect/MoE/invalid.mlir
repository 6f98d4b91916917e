// RUN: moe-opt %s --split-input-file --verify-diagnostics
// One case per verifier rule of the moe dialect (and a few of its type
// constraints); each names the rule it breaks.

// Unknown scoring function.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{unknown scoring function 'softplus'}}
  %i, %w = moe.route %l  {routing = #moe.routing<softplus, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Unknown selection kind.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{unknown selection kind 'best'}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, best, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Unknown group score.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{unknown group_score 'mean'}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 4, group_score = mean>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Unknown routing parameter.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{unknown routing parameter 'temperature'}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 2, temperature = 2.0>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// K is required.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing needs 'k = <slots per token>'}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, renormalize>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// K >= 1.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing k must be at least 1, got 0}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 0>} : tensor<?x8xf32> -> tensor<?x0xi32>, tensor<?x0xf32>
  return
}

// -----

// N_group >= 1.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing n_group must be at least 1, got 0}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 0>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Topk_group <= n_group.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing topk_group must be in [1, n_group = 2], got 3}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 2, topk_group = 3>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// N_group only for grouped selection.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing n_group/topk_group only apply to group_limited_topk and hierarchical selection}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 2, n_group = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Group_score only for group-limited top-k.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing group_score only applies to group_limited_topk}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 2, group_score = top2_sum>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Top_p in (0, 1].
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing top_p must be in (0, 1], got 1.5}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, top_p, k = 2, top_p = 1.5>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Top_p > 0.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing top_p must be in (0, 1], got 0}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, top_p, k = 2, top_p = 0.0>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Top_p only for top_p selection.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing top_p only applies to top_p selection}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 2, top_p = 0.5>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Scaling_factor > 0.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing scaling_factor must be positive and finite, got -1}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 2, scaling_factor = -1.0>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Tau_group > 0.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing tau_group must be positive and finite, got 0}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, hierarchical, k = 2, n_group = 2, tau_group = 0.0>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Tau only for hierarchical.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing tau_expert only applies to hierarchical selection}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 2, tau_expert = 2.0>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Topk_then_softmax needs raw logits.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{topk_then_softmax selects on raw logits and needs scoring 'none', got 'softmax'}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk_then_softmax, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Top_p needs softmax.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{top_p selection needs scoring 'softmax', got 'sigmoid'}}
  %i, %w = moe.route %l  {routing = #moe.routing<sigmoid, top_p, k = 2, top_p = 0.5>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Hierarchical needs softmax.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{hierarchical selection needs scoring 'softmax', got 'sigmoid'}}
  %i, %w = moe.route %l  {routing = #moe.routing<sigmoid, hierarchical, k = 2, n_group = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Top_p cannot renormalize.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{top_p selection keeps raw probabilities and cannot renormalize}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, top_p, k = 2, top_p = 0.5, renormalize>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// K <= E.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing k = 9 exceeds the number of experts E = 8}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 9>} : tensor<?x8xf32> -> tensor<?x9xi32>, tensor<?x9xf32>
  return
}

// -----

// Dense needs K = E.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{dense routing needs k = E = 8, got k = 4}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, dense, k = 4>} : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return
}

// -----

// N_group divides E.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing n_group = 3 does not divide the number of experts E = 8}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 3>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// K within the kept groups.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing k = 3 exceeds the 2 experts in topk_group = 1 groups}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, group_limited_topk, k = 3, n_group = 4, topk_group = 1>} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
  return
}

// -----

// Top2_sum needs two experts per group.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{group_score top2_sum needs at least 2 experts per group, got 1}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, group_limited_topk, k = 2, n_group = 8, topk_group = 2, group_score = top2_sum>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Logits must be T x E.
func.func @f(%l: tensor<8xf32>) {
  // expected-error @+1 {{operand 'logits' must be a T x E tensor, got 'tensor<8xf32>'}}
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 2>} : tensor<8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// E must be static.
func.func @f(%l: tensor<?x?xf32>) {
  // expected-error @+1 {{operand 'logits' must have a static number of experts}}
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x?xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Selection bias has E entries.
func.func @f(%l: tensor<?x8xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{operand 'selection_bias' must have shape 8 (E), got 'tensor<4xf32>'}}
  %i, %w = moe.route %l bias %b : tensor<4xf32> {routing = #moe.routing<sigmoid, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Hierarchical needs group logits.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{hierarchical routing needs operand 'group_logits' (T x n_group)}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, hierarchical, k = 2, n_group = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Group logits only for hierarchical.
func.func @f(%l: tensor<?x8xf32>, %gl: tensor<?x2xf32>) {
  // expected-error @+1 {{operand 'group_logits' only applies to hierarchical routing}}
  %i, %w = moe.route %l groups %gl : tensor<?x2xf32> {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Group logits are T x n_group.
func.func @f(%l: tensor<?x8xf32>, %gl: tensor<?x4xf32>) {
  // expected-error @+1 {{operand 'group_logits' must have shape ?x2 (T x n_group), got 'tensor<?x4xf32>'}}
  %i, %w = moe.route %l groups %gl : tensor<?x4xf32> {routing = #moe.routing<softmax, hierarchical, k = 2, n_group = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Indices are T x K.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{result 'indices' must have shape ?x2 (T x K), got 'tensor<?x3xi32>'}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x2xf32>
  return
}

// -----

// Weights are T x K with the logits' T.
func.func @f(%l: tensor<5x8xf32>) {
  // expected-error @+1 {{result 'weights' must have shape 5x2 (T x K), got 'tensor<4x2xf32>'}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 2>} : tensor<5x8xf32> -> tensor<5x2xi32>, tensor<4x2xf32>
  return
}

// -----

// Indices are i32.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{result #0 must be ranked tensor of 32-bit signless integer values}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi64>, tensor<?x2xf32>
  return
}

// -----

// Logits are f32.
func.func @f(%l: tensor<?x8xbf16>) {
  // expected-error @+1 {{operand #0 must be ranked tensor of 32-bit float values}}
  %i, %w = moe.route %l {routing = #moe.routing<softmax, topk, k = 2>} : tensor<?x8xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Linear input is T x I.
func.func @f(%x: tensor<16xf32>, %w: tensor<8x16xf32>) {
  // expected-error @+1 {{operand 'input' must be a T x I tensor}}
  %y = moe.linear %x, %w : (tensor<16xf32>, tensor<8x16xf32>) -> tensor<?x8xf32>
  return
}

// -----

// Linear weight is static.
func.func @f(%x: tensor<?x16xf32>, %w: tensor<?x16xf32>) {
  // expected-error @+1 {{operand 'weight' must have a static shape (only the token dimension may be dynamic)}}
  %y = moe.linear %x, %w : (tensor<?x16xf32>, tensor<?x16xf32>) -> tensor<?x8xf32>
  return
}

// -----

// Linear weight is a matrix.
func.func @f(%x: tensor<?x16xf32>, %w: tensor<2x8x16xf32>) {
  // expected-error @+1 {{operand 'weight' must be an O x I matrix}}
  %y = moe.linear %x, %w : (tensor<?x16xf32>, tensor<2x8x16xf32>) -> tensor<?x8xf32>
  return
}

// -----

// Linear weight's I matches the input.
func.func @f(%x: tensor<?x16xf32>, %w: tensor<8x12xf32>) {
  // expected-error @+1 {{operand 'weight' must have shape 8x16 (O x I), got 'tensor<8x12xf32>'}}
  %y = moe.linear %x, %w : (tensor<?x16xf32>, tensor<8x12xf32>) -> tensor<?x8xf32>
  return
}

// -----

// Linear bias has O entries.
func.func @f(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>, %b: tensor<7xf32>) {
  // expected-error @+1 {{operand 'bias' must have shape 8 (O), got 'tensor<7xf32>'}}
  %y = moe.linear %x, %w bias %b : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<7xf32>) -> tensor<?x8xf32>
  return
}

// -----

// Linear result is T x O.
func.func @f(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>) {
  // expected-error @+1 {{result must have shape ?x8 (T x O), got 'tensor<?x9xf32>'}}
  %y = moe.linear %x, %w : (tensor<?x16xf32>, tensor<8x16xf32>) -> tensor<?x9xf32>
  return
}

// -----

// Element types are f32, f16 or bf16.
func.func @f(%x: tensor<?x16xf64>, %w: tensor<8x16xf64>) {
  // expected-error @+1 {{operand #0 must be ranked tensor of 32-bit float or 16-bit float or bfloat16 type values}}
  %y = moe.linear %x, %w : (tensor<?x16xf64>, tensor<8x16xf64>) -> tensor<?x8xf32>
  return
}

// -----

// Projected router weights are static.
func.func @f(%d: tensor<?x8xf32>, %w1: tensor<12x8xf32>, %w2: tensor<16x6xf32>) {
  // expected-error @+1 {{operand 'domain_embeddings' must have a static shape}}
  %r = moe.projected_router %d, %w1, %w2 : (tensor<?x8xf32>, tensor<12x8xf32>, tensor<16x6xf32>) -> tensor<4x16xf32>
  return
}

// -----

// Projected router operands are matrices.
func.func @f(%d: tensor<4x8xf32>, %w1: tensor<12x8x1xf32>, %w2: tensor<16x6xf32>) {
  // expected-error @+1 {{operand 'proj_w1' must be a matrix}}
  %r = moe.projected_router %d, %w1, %w2 : (tensor<4x8xf32>, tensor<12x8x1xf32>, tensor<16x6xf32>) -> tensor<4x16xf32>
  return
}

// -----

// Proj_w1 holds gate and up halves.
func.func @f(%d: tensor<4x8xf32>, %w1: tensor<13x8xf32>, %w2: tensor<16x6xf32>) {
  // expected-error @+1 {{operand 'proj_w1' must have an even number of rows}}
  %r = moe.projected_router %d, %w1, %w2 : (tensor<4x8xf32>, tensor<13x8xf32>, tensor<16x6xf32>) -> tensor<4x16xf32>
  return
}

// -----

// Proj_w1 is 2h' x m.
func.func @f(%d: tensor<4x8xf32>, %w1: tensor<12x9xf32>, %w2: tensor<16x6xf32>) {
  // expected-error @+1 {{operand 'proj_w1' must have shape 12x8 (2h' x m), got 'tensor<12x9xf32>'}}
  %r = moe.projected_router %d, %w1, %w2 : (tensor<4x8xf32>, tensor<12x9xf32>, tensor<16x6xf32>) -> tensor<4x16xf32>
  return
}

// -----

// Proj_w2 is H x h'.
func.func @f(%d: tensor<4x8xf32>, %w1: tensor<12x8xf32>, %w2: tensor<16x5xf32>) {
  // expected-error @+1 {{operand 'proj_w2' must have shape 16x6 (H x h'), got 'tensor<16x5xf32>'}}
  %r = moe.projected_router %d, %w1, %w2 : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<16x5xf32>) -> tensor<4x16xf32>
  return
}

// -----

// Projected router result is E x H.
func.func @f(%d: tensor<4x8xf32>, %w1: tensor<12x8xf32>, %w2: tensor<16x6xf32>) {
  // expected-error @+1 {{result must have shape 4x16 (E x H), got 'tensor<5x16xf32>'}}
  %r = moe.projected_router %d, %w1, %w2 : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<16x6xf32>) -> tensor<5x16xf32>
  return
}

// -----

// Num_experts >= 1.
func.func @f(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'num_experts' must be at least 1, got 0}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 0 : i64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return
}

// -----

// Capacity_factor > 0.
func.func @f(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'capacity_factor' must be positive and finite, got 0}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>, capacity_factor = 0.0 : f64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return
}

// -----

// Capacity_factor only for capacity dispatch.
func.func @f(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'capacity_factor' only applies to capacity dispatch}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 8 : i64, capacity_factor = 2.0 : f64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return
}

// -----

// Dispatch indices are T x K.
func.func @f(%i: tensor<4xi32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{operand 'indices' must be a T x K tensor}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 8 : i64} : tensor<4xi32>, tensor<4xf32> -> tensor<i64>
  return
}

// -----

// K <= num_experts.
func.func @f(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{has K = 2 slots but only 1 experts}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 1 : i64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return
}

// -----

// Dispatch weights match the indices.
func.func @f(%i: tensor<?x2xi32>, %w: tensor<?x3xf32>) {
  // expected-error @+1 {{must have shape ?x2 (T x K), got 'tensor<?x3xf32>'}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x3xf32> -> tensor<i64>
  return
}

// -----

// Drop count is a 0-d i64 tensor.
func.func @f(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{result #2 must be 0D tensor of 64-bit signless integer values}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<1xi64>
  return
}

// -----

// Combine needs a term.
func.func @f() {
  // expected-error @+1 {{needs at least one 'slots' or 'addends' operand}}
  %y = moe.combine : tensor<?x16xf32>
  return
}

// -----

// Weights need slots.
func.func @f(%w: tensor<?x2xf32>, %a: tensor<?x16xf32>) {
  // expected-error @+1 {{operand 'weights' needs 'slots' (it weights their K slots)}}
  %y = moe.combine weights(%w : tensor<?x2xf32>) addends(%a : tensor<?x16xf32>) : tensor<?x16xf32>
  return
}

// -----

// Combine result has a static H.
func.func @f(%a: tensor<?x?xf32>) {
  // expected-error @+1 {{result must be T x H with a static H}}
  %y = moe.combine addends(%a : tensor<?x?xf32>) : tensor<?x?xf32>
  return
}

// -----

// Combine weights are T x K.
func.func @f(%w: tensor<7x2xf32>, %s: tensor<?x2x16xf32>) {
  // expected-error @+1 {{operand 'weights' must have shape 5x2 (T x K), got 'tensor<7x2xf32>'}}
  %y = moe.combine weights(%w : tensor<7x2xf32>) slots(%s : tensor<?x2x16xf32>) : tensor<5x16xf32>
  return
}

// -----

// Slots are T x K x H.
func.func @f(%w: tensor<?x2xf32>, %s: tensor<?x2x8xf32>) {
  // expected-error @+1 {{operand 'slots #0' must have shape ?x2x16 (T x K x H), got 'tensor<?x2x8xf32>'}}
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x8xf32>) : tensor<?x16xf32>
  return
}

// -----

// Addends are T x H.
func.func @f(%a: tensor<?x8xf32>) {
  // expected-error @+1 {{operand 'addends #0' must have shape ?x16 (T x H), got 'tensor<?x8xf32>'}}
  %y = moe.combine addends(%a : tensor<?x8xf32>) : tensor<?x16xf32>
  return
}

// -----

// Experts input has a static H.
func.func @f(%x: tensor<?x?xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'input' must have a static hidden size}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu>} : tensor<?x?xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Indices are T x K.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'indices' must be a T x K tensor}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu>} : tensor<?x16xf32>, tensor<?xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Indices share the input's T.
func.func @f(%x: tensor<3x16xf32>, %i: tensor<4x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'indices' must have shape 3x2 (T x K), got 'tensor<4x2xi32>'}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu>} : tensor<3x16xf32>, tensor<4x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Expert_offset >= 0.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'expert_offset' must be non-negative, got -1}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu>, expert_offset = -1 : i64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Stacked up is E x F x H.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %u: tensor<32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'up' must be an E x F x H tensor}}
  %s = moe.experts %x, %i up(%u : tensor<32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Expert weights are static.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %u: tensor<?x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'up' must have a static shape}}
  %s = moe.experts %x, %i up(%u : tensor<?x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Up is E x F x H with the input's H.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %u: tensor<4x32x8xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'up' must have shape 4x32x16 (E x F x H), got 'tensor<4x32x8xf32>'}}
  %s = moe.experts %x, %i up(%u : tensor<4x32x8xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Down is E x H x F.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x24xf32>) {
  // expected-error @+1 {{operand 'down' must have shape 4x16x32 (E x H x F), got 'tensor<4x16x24xf32>'}}
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x24xf32>) {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Gated activations need a gate.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{activation 'swiglu' is gated and needs operand 'gate'}}
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Non-gated activations have no gate.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{activation 'gelu' has no gate projection; remove operand 'gate'}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<gelu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Gate is E x F x H.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x16x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'gate' must have shape 4x32x16 (E x F x H), got 'tensor<4x16x16xf32>'}}
  %s = moe.experts %x, %i gate(%g : tensor<4x16x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Gate_bias needs a gate.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %gb: tensor<4x32xf32>) {
  // expected-error @+1 {{operand 'gate_bias' needs operand 'gate'}}
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) gate_bias(%gb : tensor<4x32xf32>) {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Gate_bias is E x F.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %gb: tensor<4x16xf32>) {
  // expected-error @+1 {{operand 'gate_bias' must have shape 4x32 (E x F), got 'tensor<4x16xf32>'}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) gate_bias(%gb : tensor<4x16xf32>) {activation = #moe.activation<swiglu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Up_bias is E x F.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %ub: tensor<32xf32>) {
  // expected-error @+1 {{operand 'up_bias' must have shape 4x32 (E x F), got 'tensor<32xf32>'}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) up_bias(%ub : tensor<32xf32>) {activation = #moe.activation<swiglu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Down_bias is E x H.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %db: tensor<4x32xf32>) {
  // expected-error @+1 {{operand 'down_bias' must have shape 4x16 (E x H), got 'tensor<4x32xf32>'}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) down_bias(%db : tensor<4x32xf32>) {activation = #moe.activation<swiglu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Expert weights share an element type.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xbf16>) {
  // expected-error @+1 {{operand 'down' has element type 'bf16' but 'up' has 'f32'; expert weights must share one element type}}
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xbf16>) {activation = #moe.activation<relu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Weights share the input's element type.
func.func @f(%x: tensor<?x16xbf16>, %i: tensor<?x2xi32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'up' has element type 'f32' but 'input' has 'bf16'}}
  %s = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<relu>} : tensor<?x16xbf16>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Alpha/limit only for swiglu_clamped.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'alpha' and 'limit' only apply to activation 'swiglu_clamped'}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu>, limit = 5.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Limit > 0.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'limit' must be positive, got 0}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu_clamped>, limit = 0.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Experts result is T x K x H f32.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{result must have shape ?x2x16 (T x K x H), got 'tensor<?x2x8xf32>'}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x8xf32>
  return
}

// -----

// Experts result is f32.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{result #0 must be ranked tensor of 32-bit float values}}
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) {activation = #moe.activation<swiglu>} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xbf16>
  return
}

// -----

// LoRA input is T x In.
func.func @f(%x: tensor<16xf32>, %i: tensor<?x2xi32>, %a: tensor<4x2x16xf32>, %b: tensor<4x16x2xf32>) {
  // expected-error @+1 {{operand 'input' must be a T x In tensor}}
  %d = moe.lora_experts %x, %i a(%a : tensor<4x2x16xf32>) b(%b : tensor<4x16x2xf32>) {alpha = 8.0 : f64} : tensor<16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// LoRA A is static.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %a: tensor<?x2x16xf32>, %b: tensor<4x16x2xf32>) {
  // expected-error @+1 {{operand 'lora_a' must have a static shape}}
  %d = moe.lora_experts %x, %i a(%a : tensor<?x2x16xf32>) b(%b : tensor<4x16x2xf32>) {alpha = 8.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// LoRA A is E x r x In.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %a: tensor<2x16xf32>, %b: tensor<4x16x2xf32>) {
  // expected-error @+1 {{operand 'lora_a' must be an E x r x In tensor}}
  %d = moe.lora_experts %x, %i a(%a : tensor<2x16xf32>) b(%b : tensor<4x16x2xf32>) {alpha = 8.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// LoRA B is E x Out x r.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %a: tensor<4x2x16xf32>, %b: tensor<16x2xf32>) {
  // expected-error @+1 {{operand 'lora_b' must be an E x Out x r tensor}}
  %d = moe.lora_experts %x, %i a(%a : tensor<4x2x16xf32>) b(%b : tensor<16x2xf32>) {alpha = 8.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// LoRA A reads the input's In.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %a: tensor<4x2x8xf32>, %b: tensor<4x16x2xf32>) {
  // expected-error @+1 {{operand 'lora_a' must have shape 4x2x16 (E x r x In), got 'tensor<4x2x8xf32>'}}
  %d = moe.lora_experts %x, %i a(%a : tensor<4x2x8xf32>) b(%b : tensor<4x16x2xf32>) {alpha = 8.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// LoRA ranks agree.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %a: tensor<4x2x16xf32>, %b: tensor<4x16x3xf32>) {
  // expected-error @+1 {{LoRA ranks disagree: operand 'lora_a' has rank r = 2 but 'lora_b' has 3}}
  %d = moe.lora_experts %x, %i a(%a : tensor<4x2x16xf32>) b(%b : tensor<4x16x3xf32>) {alpha = 8.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// LoRA B has the same experts.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %a: tensor<4x2x16xf32>, %b: tensor<5x16x2xf32>) {
  // expected-error @+1 {{operand 'lora_b' must have shape 4x16x2 (E x Out x r), got 'tensor<5x16x2xf32>'}}
  %d = moe.lora_experts %x, %i a(%a : tensor<4x2x16xf32>) b(%b : tensor<5x16x2xf32>) {alpha = 8.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// LoRA alpha > 0.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %a: tensor<4x2x16xf32>, %b: tensor<4x16x2xf32>) {
  // expected-error @+1 {{'alpha' must be positive and finite, got 0}}
  %d = moe.lora_experts %x, %i a(%a : tensor<4x2x16xf32>) b(%b : tensor<4x16x2xf32>) {alpha = 0.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// LoRA result is T x K x Out.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %a: tensor<4x2x16xf32>, %b: tensor<4x16x2xf32>) {
  // expected-error @+1 {{result must have shape ?x2x16 (T x K x Out), got 'tensor<?x2x8xf32>'}}
  %d = moe.lora_experts %x, %i a(%a : tensor<4x2x16xf32>) b(%b : tensor<4x16x2xf32>) {alpha = 8.0 : f64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x8xf32>
  return
}

// -----

// Special experts need kinds.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>) {
  // expected-error @+1 {{needs at least one special expert kind}}
  %s = moe.special_experts %x, %i  {kinds = []} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Const operands need a constant expert.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %cr: tensor<1x2x16xf32>, %cv: tensor<1x16xf32>) {
  // expected-error @+1 {{operands 'const_router'/'const_vectors' need a 'constant' special expert}}
  %s = moe.special_experts %x, %i const_router(%cr : tensor<1x2x16xf32>) const_vectors(%cv : tensor<1x16xf32>) {kinds = [#moe.special<zero>]} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Constant experts need their operands.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>) {
  // expected-error @+1 {{has 1 'constant' special experts and needs operands 'const_router' and 'const_vectors'}}
  %s = moe.special_experts %x, %i  {kinds = [#moe.special<constant>]} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Const_router is Nc x 2 x H.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %cr: tensor<1x3x16xf32>, %cv: tensor<1x16xf32>) {
  // expected-error @+1 {{operand 'const_router' must have shape 1x2x16 (Nc x 2 x H), got 'tensor<1x3x16xf32>'}}
  %s = moe.special_experts %x, %i const_router(%cr : tensor<1x3x16xf32>) const_vectors(%cv : tensor<1x16xf32>) {kinds = [#moe.special<constant>]} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Const_vectors is Nc x H.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %cr: tensor<2x2x16xf32>, %cv: tensor<1x16xf32>) {
  // expected-error @+1 {{operand 'const_vectors' must have shape 2x16 (Nc x H), got 'tensor<1x16xf32>'}}
  %s = moe.special_experts %x, %i const_router(%cr : tensor<2x2x16xf32>) const_vectors(%cv : tensor<1x16xf32>) {kinds = [#moe.special<constant>, #moe.special<constant>]} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Special result is T x K x H.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>) {
  // expected-error @+1 {{result must have shape ?x2x16 (T x K x H), got 'tensor<?x3x16xf32>'}}
  %s = moe.special_experts %x, %i  {kinds = [#moe.special<copy>]} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x3x16xf32>
  return
}

// -----

// Special_experts offset >= 0.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>) {
  // expected-error @+1 {{'expert_offset' must be non-negative, got -2}}
  %s = moe.special_experts %x, %i  {kinds = [#moe.special<copy>], expert_offset = -2 : i64} : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// Ffn up is F x H.
func.func @f(%x: tensor<?x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<16x32xf32>) {
  // expected-error @+1 {{operand 'up' must be F x H}}
  %y = moe.ffn %x up(%u : tensor<4x32x16xf32>) down(%d : tensor<16x32xf32>) {activation = #moe.activation<relu>} : tensor<?x16xf32> -> tensor<?x16xf32>
  return
}

// -----

// Ffn down is H x F.
func.func @f(%x: tensor<?x16xf32>, %u: tensor<32x16xf32>, %d: tensor<32x16xf32>) {
  // expected-error @+1 {{operand 'down' must have shape 16x32 (H x F), got 'tensor<32x16xf32>'}}
  %y = moe.ffn %x up(%u : tensor<32x16xf32>) down(%d : tensor<32x16xf32>) {activation = #moe.activation<relu>} : tensor<?x16xf32> -> tensor<?x16xf32>
  return
}

// -----

// Ffn gated activation needs a gate.
func.func @f(%x: tensor<?x16xf32>, %u: tensor<32x16xf32>, %d: tensor<16x32xf32>) {
  // expected-error @+1 {{activation 'geglu' is gated and needs operand 'gate'}}
  %y = moe.ffn %x up(%u : tensor<32x16xf32>) down(%d : tensor<16x32xf32>) {activation = #moe.activation<geglu>} : tensor<?x16xf32> -> tensor<?x16xf32>
  return
}

// -----

// Shared gate weight is 1 x H.
func.func @f(%x: tensor<?x16xf32>, %u: tensor<32x16xf32>, %d: tensor<16x32xf32>, %sg: tensor<16xf32>) {
  // expected-error @+1 {{operand 'gate_weight' must have shape 1x16 (1 x H), got 'tensor<16xf32>'}}
  %y = moe.ffn %x up(%u : tensor<32x16xf32>) down(%d : tensor<16x32xf32>) gate_weight(%sg : tensor<16xf32>) {activation = #moe.activation<relu>} : tensor<?x16xf32> -> tensor<?x16xf32>
  return
}

// -----

// Ffn result is T x H.
func.func @f(%x: tensor<?x16xf32>, %u: tensor<32x16xf32>, %d: tensor<16x32xf32>) {
  // expected-error @+1 {{result must have shape ?x16 (T x H), got 'tensor<?x32xf32>'}}
  %y = moe.ffn %x up(%u : tensor<32x16xf32>) down(%d : tensor<16x32xf32>) {activation = #moe.activation<relu>} : tensor<?x16xf32> -> tensor<?x32xf32>
  return
}

// -----

// Ffn clamp parameters.
func.func @f(%x: tensor<?x16xf32>, %u: tensor<32x16xf32>, %d: tensor<16x32xf32>) {
  // expected-error @+1 {{'alpha' and 'limit' only apply to activation 'swiglu_clamped'}}
  %y = moe.ffn %x up(%u : tensor<32x16xf32>) down(%d : tensor<16x32xf32>) {activation = #moe.activation<relu>, alpha = 2.0 : f64} : tensor<?x16xf32> -> tensor<?x16xf32>
  return
}

// -----

// Norm weight has H entries.
func.func @f(%x: tensor<?x16xf32>, %g: tensor<8xf32>) {
  // expected-error @+1 {{operand 'weight' must have shape 16 (H), got 'tensor<8xf32>'}}
  %y = moe.rms_norm %x, %g : tensor<?x16xf32>, tensor<8xf32>
  return
}

// -----

// Norm epsilon > 0.
func.func @f(%x: tensor<?x16xf32>, %g: tensor<16xf32>) {
  // expected-error @+1 {{'epsilon' must be positive, got 0}}
  %y = moe.rms_norm %x, %g {epsilon = 0.0 : f64} : tensor<?x16xf32>, tensor<16xf32>
  return
}

// -----

// Norm input has a static H.
func.func @f(%x: tensor<?x?xf32>, %g: tensor<16xf32>) {
  // expected-error @+1 {{operand 'input' must have a static hidden size}}
  %y = moe.rms_norm %x, %g : tensor<?x?xf32>, tensor<16xf32>
  return
}

// -----

// Layer input is T x H.
func.func @f(%x: tensor<16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'input' must be a T x H tensor}}
  %y = moe.layer %x : tensor<16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<16xf32>
  return
}

// -----

// The projected router needs all three operands.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %de: tensor<4x8xf32>) {
  // expected-error @+1 {{the projected router needs all of 'domain_embeddings', 'proj_w1' and 'proj_w2'}}
  %y = moe.layer %x : tensor<?x16xf32> domain_embeddings(%de : tensor<4x8xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Exactly one router.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{needs exactly one router}}
  %y = moe.layer %x : tensor<?x16xf32> gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Not both routers.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %de: tensor<4x8xf32>, %p1: tensor<12x8xf32>, %p2: tensor<16x6xf32>) {
  // expected-error @+1 {{needs exactly one router}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) domain_embeddings(%de : tensor<4x8xf32>) proj_w1(%p1 : tensor<12x8xf32>) proj_w2(%p2 : tensor<16x6xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Router_bias needs a stored router.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %rb: tensor<4xf32>, %de: tensor<4x8xf32>, %p1: tensor<12x8xf32>, %p2: tensor<16x6xf32>) {
  // expected-error @+1 {{operand 'router_bias' needs operand 'router'}}
  %y = moe.layer %x : tensor<?x16xf32> router_bias(%rb : tensor<4xf32>) domain_embeddings(%de : tensor<4x8xf32>) proj_w1(%p1 : tensor<12x8xf32>) proj_w2(%p2 : tensor<16x6xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Router is static.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %wd: tensor<?x16xf32>) {
  // expected-error @+1 {{operand 'router' must have a static shape}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wd : tensor<?x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Router is E x H.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %w8: tensor<4x8xf32>) {
  // expected-error @+1 {{operand 'router' must have shape 4x16 (E x H), got 'tensor<4x8xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%w8 : tensor<4x8xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Router_bias has E entries.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %rb: tensor<3xf32>) {
  // expected-error @+1 {{operand 'router_bias' must have shape 4 (E), got 'tensor<3xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) router_bias(%rb : tensor<3xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Layer proj_w1 has even rows.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %de: tensor<4x8xf32>, %p1: tensor<11x8xf32>, %p2: tensor<16x6xf32>) {
  // expected-error @+1 {{operand 'proj_w1' must have an even number of rows}}
  %y = moe.layer %x : tensor<?x16xf32> domain_embeddings(%de : tensor<4x8xf32>) proj_w1(%p1 : tensor<11x8xf32>) proj_w2(%p2 : tensor<16x6xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Layer proj_w2 is H x h'.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %de: tensor<4x8xf32>, %p1: tensor<12x8xf32>, %p2: tensor<8x6xf32>) {
  // expected-error @+1 {{operand 'proj_w2' must have shape 16x6 (H x h'), got 'tensor<8x6xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> domain_embeddings(%de : tensor<4x8xf32>) proj_w1(%p1 : tensor<12x8xf32>) proj_w2(%p2 : tensor<8x6xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// FFN or LoRA experts, not both.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %b0: tensor<16x16xf32>, %la: tensor<4x2x16xf32>, %lb: tensor<4x16x2xf32>) {
  // expected-error @+1 {{routed experts are either FFN}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) lora_base(%b0 : tensor<16x16xf32>) lora_a(%la : tensor<4x2x16xf32>) lora_b(%lb : tensor<4x16x2xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// FFN experts need up and down.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{FFN experts need operands 'up' and 'down'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// LoRA experts need all three operands.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %la: tensor<4x2x16xf32>, %lb: tensor<4x16x2xf32>) {
  // expected-error @+1 {{LoRA experts need operands 'lora_base', 'lora_a' and 'lora_b'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) lora_a(%la : tensor<4x2x16xf32>) lora_b(%lb : tensor<4x16x2xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, lora_alpha = 8.0 : f64} -> tensor<?x16xf32>
  return
}

// -----

// LoRA experts need lora_alpha.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %b0: tensor<16x16xf32>, %la: tensor<4x2x16xf32>, %lb: tensor<4x16x2xf32>) {
  // expected-error @+1 {{LoRA experts need attribute 'lora_alpha'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) lora_base(%b0 : tensor<16x16xf32>) lora_a(%la : tensor<4x2x16xf32>) lora_b(%lb : tensor<4x16x2xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Lora_alpha needs LoRA experts.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{attribute 'lora_alpha' needs LoRA experts}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, lora_alpha = 8.0 : f64} -> tensor<?x16xf32>
  return
}

// -----

// Layer down is E x H x F.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %d2: tensor<4x16x24xf32>) {
  // expected-error @+1 {{operand 'down' must have shape 4x16x32 (E x H x F), got 'tensor<4x16x24xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d2 : tensor<4x16x24xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Layer gated activation needs a gate.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{activation 'swiglu' is gated and needs operand 'gate'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Layer clamp parameters.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'alpha' and 'limit' only apply to activation 'swiglu_clamped'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, limit = 3.0 : f64} -> tensor<?x16xf32>
  return
}

// -----

// Lora_base is H x H.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %b0: tensor<16x8xf32>, %la: tensor<4x2x16xf32>, %lb: tensor<4x16x2xf32>) {
  // expected-error @+1 {{operand 'lora_base' must have shape 16x16 (H x H), got 'tensor<16x8xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) lora_base(%b0 : tensor<16x8xf32>) lora_a(%la : tensor<4x2x16xf32>) lora_b(%lb : tensor<4x16x2xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, lora_alpha = 8.0 : f64} -> tensor<?x16xf32>
  return
}

// -----

// Layer LoRA ranks agree.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %b0: tensor<16x16xf32>, %la: tensor<4x2x16xf32>, %lb: tensor<4x16x4xf32>) {
  // expected-error @+1 {{LoRA ranks disagree: operand 'lora_a' has rank r = 2 but 'lora_b' has 4}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) lora_base(%b0 : tensor<16x16xf32>) lora_a(%la : tensor<4x2x16xf32>) lora_b(%lb : tensor<4x16x4xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, lora_alpha = 8.0 : f64} -> tensor<?x16xf32>
  return
}

// -----

// Layer lora_b is E x H x r.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %b0: tensor<16x16xf32>, %la: tensor<4x2x16xf32>, %lb: tensor<4x8x2xf32>) {
  // expected-error @+1 {{operand 'lora_b' must have shape 4x16x2 (E x H x r), got 'tensor<4x8x2xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) lora_base(%b0 : tensor<16x16xf32>) lora_a(%la : tensor<4x2x16xf32>) lora_b(%lb : tensor<4x8x2xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, lora_alpha = 8.0 : f64} -> tensor<?x16xf32>
  return
}

// -----

// Layer lora_alpha > 0.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %b0: tensor<16x16xf32>, %la: tensor<4x2x16xf32>, %lb: tensor<4x16x2xf32>) {
  // expected-error @+1 {{'lora_alpha' must be positive and finite, got -1}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) lora_base(%b0 : tensor<16x16xf32>) lora_a(%la : tensor<4x2x16xf32>) lora_b(%lb : tensor<4x16x2xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, lora_alpha = -1.0 : f64} -> tensor<?x16xf32>
  return
}

// -----

// Layer constant experts need their operands.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %w5: tensor<5x16xf32>) {
  // expected-error @+1 {{has 1 'constant' special experts and needs operands 'const_router' and 'const_vectors'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%w5 : tensor<5x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>, special_kinds = [#moe.special<constant>]} -> tensor<?x16xf32>
  return
}

// -----

// A layer has experts.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{has no experts: give FFN, LoRA or special experts}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Router rows = routed + special experts.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{router has E = 4 rows but the layer has 4 routed + 1 special experts = 5}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>, special_kinds = [#moe.special<zero>]} -> tensor<?x16xf32>
  return
}

// -----

// Layer K <= E.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{routing k = 5 exceeds the number of experts E = 4}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 5>} -> tensor<?x16xf32>
  return
}

// -----

// Layer selection bias has E entries.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %sb: tensor<8xf32>) {
  // expected-error @+1 {{operand 'selection_bias' must have shape 4 (E), got 'tensor<8xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) selection_bias(%sb : tensor<8xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Layer hierarchical routing needs a group router.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{hierarchical routing needs operand 'group_router' (n_group x H)}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, hierarchical, k = 2, n_group = 2>} -> tensor<?x16xf32>
  return
}

// -----

// Layer group router only for hierarchical.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %gr: tensor<2x16xf32>) {
  // expected-error @+1 {{operand 'group_router' only applies to hierarchical routing}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) group_router(%gr : tensor<2x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Layer group router is n_group x H.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %gr: tensor<3x16xf32>) {
  // expected-error @+1 {{operand 'group_router' must have shape 2x16 (n_group x H), got 'tensor<3x16xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) group_router(%gr : tensor<3x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, hierarchical, k = 2, n_group = 2>} -> tensor<?x16xf32>
  return
}

// -----

// Shared expert needs up and down.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %su: tensor<32x16xf32>, %sd: tensor<16x32xf32>) {
  // expected-error @+1 {{the shared expert needs operands 'shared_up' and 'shared_down'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) shared_up(%su : tensor<32x16xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Shared expert gated activation needs shared_gate.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %su: tensor<32x16xf32>, %sd: tensor<16x32xf32>) {
  // expected-error @+1 {{activation 'swiglu' is gated and needs operand 'shared_gate'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) shared_up(%su : tensor<32x16xf32>) shared_down(%sd : tensor<16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>
  return
}

// -----

// Shared_down is H x F.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %su: tensor<32x16xf32>, %sd: tensor<16x32xf32>) {
  // expected-error @+1 {{operand 'shared_down' must have shape 16x32 (H x F), got 'tensor<32x16xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) shared_up(%su : tensor<32x16xf32>) shared_down(%su : tensor<32x16xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>, shared_activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return
}

// -----

// Shared experts take no clamped SwiGLU.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %su: tensor<32x16xf32>, %sd: tensor<16x32xf32>) {
  // expected-error @+1 {{'shared_activation' swiglu_clamped is not supported}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) shared_gate(%su : tensor<32x16xf32>) shared_up(%su : tensor<32x16xf32>) shared_down(%sd : tensor<16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>, shared_activation = #moe.activation<swiglu_clamped>} -> tensor<?x16xf32>
  return
}

// -----

// Shared gate weight is 1 x H.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %su: tensor<32x16xf32>, %sd: tensor<16x32xf32>, %sg: tensor<16xf32>) {
  // expected-error @+1 {{operand 'shared_gate_weight' must have shape 1x16 (1 x H), got 'tensor<16xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) shared_up(%su : tensor<32x16xf32>) shared_down(%sd : tensor<16x32xf32>) shared_gate_weight(%sg : tensor<16xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>, shared_activation = #moe.activation<relu>} -> tensor<?x16xf32>
  return
}

// -----

// Layer capacity_factor > 0.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'capacity_factor' must be positive and finite, got -1}}
  %y, %n = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, dispatch = #moe.dispatch<capacity>, capacity_factor = -1.0 : f64} -> tensor<?x16xf32>, tensor<i64>
  return
}

// -----

// Layer capacity_factor only for capacity.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'capacity_factor' only applies to capacity dispatch}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, capacity_factor = 2.0 : f64} -> tensor<?x16xf32>
  return
}

// -----

// expert_capacity only for capacity dispatch.
func.func @f(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'expert_capacity' only applies to capacity dispatch}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 8 : i64, expert_capacity = 4} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return
}

// -----

// expert_capacity >= 0.
func.func @f(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) {
  // expected-error @+1 {{'expert_capacity' must not be negative, got -2}}
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 8 : i64, mode = #moe.dispatch<capacity>, expert_capacity = -2} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return
}

// -----

// Layer: expert_capacity or capacity_factor, not both.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{takes either 'expert_capacity' (a fixed count) or 'capacity_factor', not both}}
  %y, %n = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, dispatch = #moe.dispatch<capacity>, capacity_factor = 1.5 : f64, expert_capacity = 4} -> tensor<?x16xf32>, tensor<i64>
  return
}

// -----

// Layer: expert_capacity only for capacity dispatch.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'expert_capacity' only applies to capacity dispatch}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, expert_capacity = 4} -> tensor<?x16xf32>
  return
}

// -----

// The combine's bias is H.
func.func @f(%w: tensor<?x2xf32>, %s: tensor<?x2x16xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'bias' must have shape 16 (H), got 'tensor<8xf32>'}}
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x16xf32>) bias(%b : tensor<8xf32>) : tensor<?x16xf32>
  return
}

// -----

// The layer's output_bias is H.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>, %b: tensor<1x16xf32>) {
  // expected-error @+1 {{'output_bias' must have shape 16 (H), got 'tensor<1x16xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>) output_bias(%b : tensor<1x16xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>} -> tensor<?x16xf32>
  return
}

// -----

// Capacity dispatch needs the drop count.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{capacity dispatch needs a second result, the drop count tensor<i64>}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, dispatch = #moe.dispatch<capacity>} -> tensor<?x16xf32>
  return
}

// -----

// The drop count needs capacity dispatch.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{the drop-count result needs capacity dispatch}}
  %y, %n = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x16xf32>, tensor<i64>
  return
}

// -----

// Layer result is T x H.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x32x16xf32>, %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{result must have shape ?x16 (T x H), got 'tensor<?x8xf32>'}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>} -> tensor<?x8xf32>
  return
}

// -----

// Cartesian norm weight has H entries.
func.func @f(%x: tensor<?x16xf32>, %g: tensor<8xf32>) {
  // expected-error @+1 {{operand 'norm_weight' must have shape 16 (H), got 'tensor<8xf32>'}}
  %y = moe.cartesian %x norm(%g : tensor<8xf32>)  : tensor<?x16xf32>
  first {
  ^bb0(%a: tensor<?x16xf32>):
    moe.yield %a : tensor<?x16xf32>
  } second {
  ^bb0(%b: tensor<?x16xf32>):
    moe.yield %b : tensor<?x16xf32>
  }
  return
}

// -----

// Cartesian epsilon > 0.
func.func @f(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{'epsilon' must be positive}}
  %y = moe.cartesian %x  {epsilon = 0.0 : f64} : tensor<?x16xf32>
  first {
  ^bb0(%a: tensor<?x16xf32>):
    moe.yield %a : tensor<?x16xf32>
  } second {
  ^bb0(%b: tensor<?x16xf32>):
    moe.yield %b : tensor<?x16xf32>
  }
  return
}

// -----

// Cartesian regions take the input type.
func.func @f(%x: tensor<?x16xf32>, %b0: tensor<?x16xf32>) {
  // expected-error @+1 {{region 'first' must take one argument of type 'tensor<?x16xf32>'}}
  %y = moe.cartesian %x   : tensor<?x16xf32>
  first {
  ^bb0(%a: tensor<?x8xf32>):
    moe.yield %b0 : tensor<?x16xf32>
  } second {
  ^bb0(%b: tensor<?x16xf32>):
    moe.yield %b : tensor<?x16xf32>
  }
  return
}

// -----

// Cartesian input has a static H.
func.func @f(%x: tensor<?x?xf32>) {
  // expected-error @+1 {{operand 'input' must have a static hidden size}}
  %y = moe.cartesian %x   : tensor<?x?xf32>
  first {
  ^bb0(%a: tensor<?x?xf32>):
    moe.yield %a : tensor<?x?xf32>
  } second {
  ^bb0(%b: tensor<?x16xf32>):
    moe.yield %b : tensor<?x16xf32>
  }
  return
}

// -----

// Cartesian regions yield the input type.
func.func @f(%x: tensor<?x16xf32>, %a2: tensor<?x8xf32>) {
  // expected-error @+4 {{'moe.yield' op yields 'tensor<?x8xf32>' but the enclosing moe.cartesian needs 'tensor<?x16xf32>'}}
  %y = moe.cartesian %x   : tensor<?x16xf32>
  first {
  ^bb0(%a: tensor<?x16xf32>):
    moe.yield %a2 : tensor<?x8xf32>
  } second {
  ^bb0(%b: tensor<?x16xf32>):
    moe.yield %b : tensor<?x16xf32>
  }
  return
}

// -----

// An expert map entry outside the merged experts.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<3x32x16xf32>,
    %d: tensor<3x16x32xf32>) {
  // expected-error @+1 {{'moe.layer' op expert map entry 3 is 3, outside [0, 3)}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<3x32x16xf32>)
      down(%d : tensor<3x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>,
       expert_map = array<i32: 0, 1, 0, 3>} -> tensor<?x16xf32>
  return
}

// -----

// A merged expert no router row selects.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<3x32x16xf32>,
    %d: tensor<3x16x32xf32>) {
  // expected-error @+1 {{'moe.layer' op expert map names no router row for expert 2 of 3}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) up(%u : tensor<3x32x16xf32>)
      down(%d : tensor<3x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>,
       expert_map = array<i32: 0, 1, 0, 1>} -> tensor<?x16xf32>
  return
}

// -----

// The router has a row per entry of the expert map.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<3x16xf32>, %u: tensor<3x32x16xf32>,
    %d: tensor<3x16x32xf32>) {
  // expected-error @+1 {{'moe.layer' op router has E = 3 rows but the layer has 4 routed + 0 special experts = 4 (routed: rows of 'expert_map')}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<3x16xf32>) up(%u : tensor<3x32x16xf32>)
      down(%d : tensor<3x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>,
       expert_map = array<i32: 0, 1, 0, 2>} -> tensor<?x16xf32>
  return
}

// -----

func.func @f(%i: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.remap_experts' op expert map is empty}}
  %j = moe.remap_experts %i {map = array<i32>, num_targets = 3 : i64} : tensor<?x2xi32>
  return
}

// -----

// An expert of width F = 0 (the GPU tile choice divided by it; the
// reference gave NaN where the compiled layer gave zeros).
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x0x16xf32>, %u: tensor<4x0x16xf32>, %d: tensor<4x16x0xf32>) {
  // expected-error @+1 {{'moe.layer' op operand 'up' has F = 0: an expert needs at least one hidden unit}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>) gate(%g : tensor<4x0x16xf32>) up(%u : tensor<4x0x16xf32>) down(%d : tensor<4x16x0xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>, activation = #moe.activation<swiglu>} -> tensor<?x16xf32>
  return
}

// -----

// Sparsemixer needs raw logits.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{sparsemixer selects on raw logits and needs scoring 'none', got 'softmax'}}
  %i, %w = moe.route %l  {routing = #moe.routing<softmax, sparsemixer, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// A negative sparsemixer threshold.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing jitter_eps must be non-negative and finite, got -1.000000e-02}}
  %i, %w = moe.route %l  {routing = #moe.routing<none, sparsemixer, k = 2, jitter_eps = -0.01>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// jitter_eps only for sparsemixer.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing jitter_eps only applies to sparsemixer selection}}
  %i, %w = moe.route %l  {routing = #moe.routing<none, topk_then_softmax, k = 2, jitter_eps = 0.01>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Sparsemixer selects on the logits alone.
func.func @f(%l: tensor<?x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'moe.route' op sparsemixer routing takes no 'selection_bias'}}
  %i, %w = moe.route %l bias %b : tensor<8xf32> {routing = #moe.routing<none, sparsemixer, k = 2>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// Slots without weights: still T x K x H.
func.func @f(%s: tensor<?x16xf32>) {
  // expected-error @+1 {{operand 'slots #0' must be a T x K x H tensor}}
  %y = moe.combine slots(%s : tensor<?x16xf32>) : tensor<?x16xf32>
  return
}

// -----

// input_scale is T x K.
func.func @f(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %s: tensor<?x3xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{operand 'input_scale' must have shape ?x2 (T x K), got 'tensor<?x3xf32>'}}
  %y = moe.experts %x, %i up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      input_scale(%s : tensor<?x3xf32>) {activation = #moe.activation<relu>}
      : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return
}

// -----

// scale_input needs FFN experts only.
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<5x16xf32>, %u: tensor<4x32x16xf32>,
    %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'scale_input' scales the input of routed FFN experts: it needs FFN experts and no LoRA or special experts}}
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<5x16xf32>)
      up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<sigmoid, topk, k = 1>, activation = #moe.activation<relu>,
       special_kinds = [#moe.special<copy>], scale_input} -> tensor<?x16xf32>
  return
}
