// RUN: moe-opt %s --moe-gpu-map-parallel-loops --split-input-file | FileCheck %s
// RUN: moe-opt %s --moe-gpu-map-parallel-loops="block-size=64" --split-input-file | FileCheck %s --check-prefix=B64
// RUN: moe-opt %s --moe-gpu-map-parallel-loops="tile-sizes=32,4" --split-input-file | FileCheck %s --check-prefix=EXPLICIT

// (tokens, slots, outputs): the 256 threads of a block go to the contiguous
// output dimension first (thread x, 128), then the 2 slots (thread y); the
// dynamic token dimension becomes block x, one token per block.
// CHECK-LABEL: func.func @tokens_slots_outputs
// CHECK-SAME: (%[[T:[^:]+]]: index
// CHECK: scf.parallel (%{{[^)]+}}) = ({{[^)]+}}) to (%[[T]], %{{[^,]+}}, %{{[^)]+}}) step (%[[S0:[^,]+]], %[[S1:[^,]+]], %[[S2:[^)]+]])
// CHECK: scf.parallel ({{[^)]+}}) = ({{[^)]+}}) to (%[[S0]], %[[S1]], %[[S2]])
// CHECK: scf.if
// CHECK-NEXT: memref.store
// CHECK: {mapping = [#gpu.loop_dim_map<processor = sequential{{.*}}processor = thread_y{{.*}}processor = thread_x, {{.*}}>]}
// CHECK: {mapping = [#gpu.loop_dim_map<processor = block_x{{.*}}processor = sequential{{.*}}processor = sequential, {{.*}}>]}
// A smaller block: 64 threads, all along the outputs; per token, two blocks
// of outputs (block y) for each of the two slots (block z).
// B64-LABEL: func.func @tokens_slots_outputs
// B64: {mapping = [#gpu.loop_dim_map<processor = sequential{{.*}}processor = sequential{{.*}}processor = thread_x, {{.*}}>]}
// B64: {mapping = [#gpu.loop_dim_map<processor = block_x{{.*}}processor = block_z{{.*}}processor = block_y, {{.*}}>]}
// Explicit tile sizes, innermost first: 32 outputs x 4 slots (2 used).
// EXPLICIT-LABEL: func.func @tokens_slots_outputs
// EXPLICIT: arith.constant 4 : index
// EXPLICIT: arith.constant 32 : index
// EXPLICIT: {mapping = [#gpu.loop_dim_map<processor = sequential{{.*}}processor = thread_y{{.*}}processor = thread_x, {{.*}}>]}
func.func @tokens_slots_outputs(%t: index, %out: memref<?x2x128xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c128 = arith.constant 128 : index
  %zero = arith.constant 0.0 : f32
  scf.parallel (%i, %j, %k) = (%c0, %c0, %c0) to (%t, %c2, %c128) step (%c1, %c1, %c1) {
    memref.store %zero, %out[%i, %j, %k] : memref<?x2x128xf32>
  }
  return
}

// -----

// (tokens, experts = 8): 8 threads along the experts, 32 tokens per block.
// CHECK-LABEL: func.func @tokens_experts
// CHECK: arith.constant 32 : index
// CHECK: {mapping = [#gpu.loop_dim_map<processor = thread_y{{.*}}processor = thread_x, {{.*}}>]}
// CHECK: {mapping = [#gpu.loop_dim_map<processor = block_x{{.*}}processor = sequential, {{.*}}>]}
func.func @tokens_experts(%t: index, %out: memref<?x8xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  %zero = arith.constant 0.0 : f32
  scf.parallel (%i, %j) = (%c0, %c0) to (%t, %c8) step (%c1, %c1) {
    memref.store %zero, %out[%i, %j] : memref<?x8xf32>
  }
  return
}

// -----

// Loops already inside a mapped loop, or already mapped, are left alone.
// CHECK-LABEL: func.func @already_mapped
// CHECK-COUNT-1: scf.parallel
// CHECK-NOT: scf.parallel
func.func @already_mapped(%t: index, %out: memref<?xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : f32
  scf.parallel (%i) = (%c0) to (%t) step (%c1) {
    memref.store %zero, %out[%i] : memref<?xf32>
  } {mapping = [#gpu.loop_dim_map<processor = block_x, map = (d0) -> (d0), bound = (d0) -> (d0)>]}
  return
}
