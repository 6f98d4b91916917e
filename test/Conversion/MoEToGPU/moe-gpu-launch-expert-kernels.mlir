// moe-gpu-launch-expert-kernels: the call left by convert-moe-experts-to-gpu
// (after bufferization) becomes three launches on the same buffers: align
// on one block of 1024 threads, then gate_up and down on (tiles, N / BN)
// blocks of 128 threads, the tile count being the size of the tile table;
// the declaration goes away.
// RUN: moe-opt %s --split-input-file --moe-gpu-launch-expert-kernels --cse --verify-diagnostics | FileCheck %s

// CHECK-NOT: func.func private @f_experts_launch
// CHECK-LABEL: func.func @f(
// CHECK-SAME: %[[X:[^:]+]]: memref<?x64xbf16>, %[[I:[^:]+]]: memref<?x2xi32>, %[[G:[^:]+]]: memref<8x128x64xbf16>, %[[U:[^:]+]]: memref<8x128x64xbf16>, %[[D:[^:]+]]: memref<8x64x128xbf16>, %[[OUT:[^:]+]]: memref<?x2x64xf32>, %[[S:[^:]+]]: memref<?xi32>, %[[TE:[^:]+]]: memref<?xi32>, %[[M:[^:]+]]: memref<1xi32>, %[[H:[^:]+]]: memref<?x128xbf16>)
// CHECK-DAG: %[[C1:.+]] = arith.constant 1 : index
// CHECK-DAG: %[[C1024:.+]] = arith.constant 1024 : index
// CHECK: gpu.launch_func @f_experts::@align blocks in (%[[C1]], %[[C1]], %[[C1]]) threads in (%[[C1024]], %[[C1]], %[[C1]]) args(%[[I]] : memref<?x2xi32>, %[[OUT]] : memref<?x2x64xf32>, %[[S]] : memref<?xi32>, %[[TE]] : memref<?xi32>, %[[M]] : memref<1xi32>)
// CHECK-DAG: %[[C0:.+]] = arith.constant 0 : index
// CHECK-DAG: %[[TILES:.+]] = memref.dim %[[TE]], %[[C0]]
// CHECK-DAG: %[[C2:.+]] = arith.constant 2 : index
// CHECK-DAG: %[[C128:.+]] = arith.constant 128 : index
// CHECK: gpu.launch_func @f_experts::@gate_up blocks in (%[[TILES]], %[[C2]], %[[C1]]) threads in (%[[C128]], %[[C1]], %[[C1]]) args(%[[X]] : memref<?x64xbf16>, %[[G]] : memref<8x128x64xbf16>, %[[U]] : memref<8x128x64xbf16>, %[[S]] : memref<?xi32>, %[[TE]] : memref<?xi32>, %[[M]] : memref<1xi32>, %[[H]] : memref<?x128xbf16>)
// CHECK: gpu.launch_func @f_experts::@down blocks in (%[[TILES]], %[[C1]], %[[C1]]) threads in (%[[C128]], %[[C1]], %[[C1]]) args(%[[H]] : memref<?x128xbf16>, %[[D]] : memref<8x64x128xbf16>, %[[S]] : memref<?xi32>, %[[TE]] : memref<?xi32>, %[[M]] : memref<1xi32>, %[[OUT]] : memref<?x2x64xf32>)
// CHECK-NOT: call
// CHECK: return
module attributes {gpu.container_module} {
  func.func private @f_experts_launch(memref<?x64xbf16>, memref<?x2xi32>, memref<8x128x64xbf16>, memref<8x128x64xbf16>, memref<8x64x128xbf16>, memref<?x2x64xf32>, memref<?xi32>, memref<?xi32>, memref<1xi32>, memref<?x128xbf16>) attributes {moe.expert_kernels = {combine = "none", launches = [{args = array<i64: 1, 5, 6, 7, 8>, grid = array<i64: -1, 1>, kernel = @f_experts::@align, threads = 1024 : i64}, {args = array<i64: 0, 2, 3, 6, 7, 8, 9>, grid = array<i64: 7, 2>, kernel = @f_experts::@gate_up, threads = 128 : i64}, {args = array<i64: 9, 4, 6, 7, 8, 5>, grid = array<i64: 7, 1>, kernel = @f_experts::@down, threads = 128 : i64}], tiles = array<i64: 64, 64, 64, 32, 32, 3>}}
  func.func @f(%x: memref<?x64xbf16>, %i: memref<?x2xi32>, %g: memref<8x128x64xbf16>, %u: memref<8x128x64xbf16>, %d: memref<8x64x128xbf16>, %out: memref<?x2x64xf32>, %s: memref<?xi32>, %te: memref<?xi32>, %m: memref<1xi32>, %h: memref<?x128xbf16>) {
    call @f_experts_launch(%x, %i, %g, %u, %d, %out, %s, %te, %m, %h) : (memref<?x64xbf16>, memref<?x2xi32>, memref<8x128x64xbf16>, memref<8x128x64xbf16>, memref<8x64x128xbf16>, memref<?x2x64xf32>, memref<?xi32>, memref<?xi32>, memref<1xi32>, memref<?x128xbf16>) -> ()
    return
  }
  gpu.module @f_experts {
    gpu.func @align(%i: memref<?x2xi32>, %out: memref<?x2x64xf32>, %s: memref<?xi32>, %te: memref<?xi32>, %m: memref<1xi32>) kernel {
      gpu.return
    }
    gpu.func @gate_up(%x: memref<?x64xbf16>, %g: memref<8x128x64xbf16>, %u: memref<8x128x64xbf16>, %s: memref<?xi32>, %te: memref<?xi32>, %m: memref<1xi32>, %h: memref<?x128xbf16>) kernel {
      gpu.return
    }
    gpu.func @down(%h: memref<?x128xbf16>, %d: memref<8x64x128xbf16>, %s: memref<?xi32>, %te: memref<?xi32>, %m: memref<1xi32>, %out: memref<?x2x64xf32>) kernel {
      gpu.return
    }
  }
}

// -----

// A fused combine (atomic): four launches, the last (finish) on one block
// per token: its grid is dim 0 of the result (operand 3); each kernel gets
// the operands its `args` name.
// CHECK-LABEL: func.func @g(
// CHECK-SAME: %[[I:[^:]+]]: memref<?x2xi32>, %[[W:[^:]+]]: memref<?x2xf32>, %[[Y:[^:]+]]: memref<?x64xbf16>, %[[S:[^:]+]]: memref<?xi32>, %[[TE:[^:]+]]: memref<?xi32>, %[[M:[^:]+]]: memref<1xi32>, %[[ACC:[^:]+]]: memref<?x64xf32>)
// CHECK: gpu.launch_func @g_experts::@align blocks in (%[[C1:.+]], %[[C1]], %[[C1]]) threads in ({{.+}}) args(%[[I]] : memref<?x2xi32>, %[[S]] : memref<?xi32>, %[[TE]] : memref<?xi32>, %[[M]] : memref<1xi32>)
// CHECK: %[[TILES:.+]] = memref.dim %[[TE]]
// CHECK: gpu.launch_func @g_experts::@down blocks in (%[[TILES]], %{{.+}}, %[[C1]]) threads in ({{.+}}) args(%[[W]] : memref<?x2xf32>, %[[ACC]] : memref<?x64xf32>)
// CHECK: %[[T:.+]] = memref.dim %[[Y]]
// CHECK: %[[C32:.+]] = arith.constant 32 : index
// CHECK: gpu.launch_func @g_experts::@finish blocks in (%[[T]], %[[C1]], %[[C1]]) threads in (%[[C32]], %[[C1]], %[[C1]]) args(%[[ACC]] : memref<?x64xf32>, %[[Y]] : memref<?x64xbf16>)
// CHECK-NOT: call
module attributes {gpu.container_module} {
  func.func private @g_experts_launch(memref<?x2xi32>, memref<?x2xf32>, memref<?x64xbf16>, memref<?xi32>, memref<?xi32>, memref<1xi32>, memref<?x64xf32>) attributes {moe.expert_kernels = {combine = "atomic", launches = [{args = array<i64: 0, 3, 4, 5>, grid = array<i64: -1, 1>, kernel = @g_experts::@align, threads = 1024 : i64}, {args = array<i64: 1, 6>, grid = array<i64: 4, 1>, kernel = @g_experts::@down, threads = 128 : i64}, {args = array<i64: 6, 2>, grid = array<i64: 2, 1>, kernel = @g_experts::@finish, threads = 32 : i64}]}}
  func.func @g(%i: memref<?x2xi32>, %w: memref<?x2xf32>, %y: memref<?x64xbf16>, %s: memref<?xi32>, %te: memref<?xi32>, %m: memref<1xi32>, %acc: memref<?x64xf32>) {
    call @g_experts_launch(%i, %w, %y, %s, %te, %m, %acc) : (memref<?x2xi32>, memref<?x2xf32>, memref<?x64xbf16>, memref<?xi32>, memref<?xi32>, memref<1xi32>, memref<?x64xf32>) -> ()
    return
  }
  gpu.module @g_experts {
    gpu.func @align(%i: memref<?x2xi32>, %s: memref<?xi32>, %te: memref<?xi32>, %m: memref<1xi32>) kernel {
      gpu.return
    }
    gpu.func @down(%w: memref<?x2xf32>, %acc: memref<?x64xf32>) kernel {
      gpu.return
    }
    gpu.func @finish(%acc: memref<?x64xf32>, %y: memref<?x64xbf16>) kernel {
      gpu.return
    }
  }
}

// -----

// A launch naming an operand the call does not have is refused.
module attributes {gpu.container_module} {
  // expected-error @+1 {{'func.func' op malformed moe.expert_kernels}}
  func.func private @h_experts_launch(memref<?x2xi32>) attributes {moe.expert_kernels = {combine = "none", launches = [{args = array<i64: 0, 1>, grid = array<i64: -1, 1>, kernel = @h_experts::@align, threads = 1024 : i64}]}}
  func.func @h(%i: memref<?x2xi32>) {
    call @h_experts_launch(%i) : (memref<?x2xi32>) -> ()
    return
  }
}

// -----

// `smem` (bytes of dynamic shared memory) becomes the launch's
// dynamic_shared_memory_size; none without it.
// CHECK-LABEL: func.func @d(
// CHECK: %[[BYTES:.+]] = arith.constant 61440 : i32
// CHECK: gpu.launch_func @d_experts::@gate_up {{.*}} dynamic_shared_memory_size %[[BYTES]] args(
// CHECK: gpu.launch_func @d_experts::@down
// CHECK-NOT: dynamic_shared_memory_size
// CHECK-SAME: args(
module attributes {gpu.container_module} {
  func.func private @d_experts_launch(memref<?xi32>) attributes {moe.expert_kernels = {combine = "none", launches = [{args = array<i64: 0>, grid = array<i64: 0, 1>, kernel = @d_experts::@gate_up, smem = 61440 : i64, threads = 128 : i64}, {args = array<i64: 0>, grid = array<i64: 0, 1>, kernel = @d_experts::@down, threads = 128 : i64}]}}
  func.func @d(%te: memref<?xi32>) {
    call @d_experts_launch(%te) : (memref<?xi32>) -> ()
    return
  }
  gpu.module @d_experts {
    gpu.func @gate_up(%te: memref<?xi32>) kernel {
      gpu.return
    }
    gpu.func @down(%te: memref<?xi32>) kernel {
      gpu.return
    }
  }
}

// -----

// A negative or non-integer smem is refused.
module attributes {gpu.container_module} {
  // expected-error @+1 {{'func.func' op malformed moe.expert_kernels}}
  func.func private @n_experts_launch(memref<?xi32>) attributes {moe.expert_kernels = {combine = "none", launches = [{args = array<i64: 0>, grid = array<i64: 0, 1>, kernel = @n_experts::@gate_up, smem = -16 : i64, threads = 128 : i64}]}}
  func.func @n(%te: memref<?xi32>) {
    call @n_experts_launch(%te) : (memref<?xi32>) -> ()
    return
  }
}
