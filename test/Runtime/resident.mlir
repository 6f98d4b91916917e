// Resident inputs and derived weights through the C++ API
// (moe-resident-test): for each entry, a run with resident inputs
// (Artifact::makeResident, which computes a projected router's derived
// router once) equals a run without them bit for bit; a weight given from
// other host data than the derived weights were computed from (cpu) or than
// it was uploaded from (cuda, fake driver) is an error, as is giving one
// entry's resident inputs to another.
// RUN: rm -rf %t && mkdir -p %t
// RUN: moe-compile %s -o %t/cpu > /dev/null
// RUN: %moe_obj_root/bin/moe-resident-test %t/cpu | FileCheck %s --check-prefix=CPU
// CPU: ok   nexus_f32: derived tensors computed once: 1
// CPU: ok   nexus_f32: resident run equals the plain run bit for bit
// CPU: ok   nexus_f32: other host data for 'domain_embeddings' is an error: {{.*}} than the resident derived weights were computed from
// CPU: ok   nexus_f32: other host data for 'proj_w2' is an error
// CPU-NOT: other host data for 'up'
// CPU: ok   plain: resident run equals the plain run bit for bit
// CPU: ok   resident inputs of another entry are an error
// CPU: 11 passed, 0 failed
// RUN: %if cuda-toolkit %{ moe-compile %s --target=cuda:sm_90 -o %t/gpu > /dev/null %}
// RUN: %if cuda-toolkit %{ env MOE_LIBCUDA=%moe_obj_root/lib/libmoe-fake-cuda.so %moe_obj_root/bin/moe-resident-test %t/gpu --no-compare | FileCheck %s --check-prefix=GPU %}
// GPU: ok   nexus_f32: derived tensors computed once: 1
// GPU: ok   nexus_f32: other host data for 'up' is an error: {{.*}} is resident on the device but was given other host data
// GPU: ok   resident inputs of another entry are an error
// GPU: 16 passed, 0 failed

func.func @nexus_f32(%x: tensor<?x32xf32>, %domains: tensor<4x8xf32>, %w1: tensor<16x8xf32>, %w2: tensor<32x8xf32>,
                     %up: tensor<4x48x32xf32>, %down: tensor<4x32x48xf32>) -> tensor<?x32xf32> {
  %y = moe.layer %x : tensor<?x32xf32> domain_embeddings(%domains : tensor<4x8xf32>) proj_w1(%w1 : tensor<16x8xf32>) proj_w2(%w2 : tensor<32x8xf32>)
      up(%up : tensor<4x48x32xf32>) down(%down : tensor<4x32x48xf32>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<gelu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

func.func @plain(%x: tensor<?x32xf32>, %router: tensor<4x32xf32>, %up: tensor<4x48x32xf32>, %down: tensor<4x32x48xf32>) -> tensor<?x32xf32> {
  %y = moe.layer %x : tensor<?x32xf32> router(%router : tensor<4x32xf32>) up(%up : tensor<4x48x32xf32>) down(%down : tensor<4x32x48xf32>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<gelu>} -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
