// moe-gpu-async-launches: consecutive launches are queued on one stream
// (gpu.launch_func async, each depending on the previous one) with one
// blocking gpu.wait before the next op that may touch memory or leave the
// block; host_shared allocations and pure ops in between do not wait; the
// `wait async; dealloc async; wait` triples that moe-gpu-host-shared-alloc
// writes become one chain with one wait. moe-to-nvvm runs it at the end of
// GPUMap (async-launches=0: off). Stream synchronizations per call against
// the fake driver: test/Runtime/cuda-async-launches.test.
// RUN: moe-opt %s --moe-gpu-async-launches | FileCheck %s

module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @a(%m: memref<?xf32>) kernel { gpu.return }
  }

  // CHECK-LABEL: func.func @chain
  // CHECK: %[[M:.*]] = gpu.alloc  host_shared
  // CHECK: %[[T0:.*]] = gpu.wait async
  // CHECK: %[[T1:.*]] = gpu.launch_func async [%[[T0]]] @k::@a
  // CHECK: %[[N:.*]] = gpu.alloc  host_shared
  // CHECK: arith.addi
  // CHECK: %[[T2:.*]] = gpu.launch_func async [%[[T1]]] @k::@a
  // CHECK: %[[T3:.*]] = gpu.launch_func async [%[[T2]]] @k::@a
  // The host reads a result: wait first.
  // CHECK: gpu.wait [%[[T3]]]
  // CHECK: memref.load %[[N]]
  // A launch after it starts a new chain, ended by the deallocation.
  // CHECK: %[[T4:.*]] = gpu.wait async
  // CHECK: %[[T5:.*]] = gpu.launch_func async [%[[T4]]] @k::@a
  // CHECK: gpu.wait [%[[T5]]]
  // The two deallocations: one chain, one wait.
  // CHECK: %[[D0:.*]] = gpu.wait async
  // CHECK: %[[D1:.*]] = gpu.dealloc async [%[[D0]]] %[[M]]
  // CHECK: %[[D2:.*]] = gpu.dealloc async [%[[D1]]] %[[N]]
  // CHECK: gpu.wait [%[[D2]]]
  // CHECK-NOT: gpu.wait
  // CHECK: return
  func.func @chain(%sz: index) -> f32 {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %m = gpu.alloc host_shared (%sz) : memref<?xf32>
    gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
    %n = gpu.alloc host_shared (%sz) : memref<?xf32>
    %s = arith.addi %sz, %c1 : index
    gpu.launch_func @k::@a blocks in (%s, %c1, %c1) threads in (%c1, %c1, %c1) args(%n : memref<?xf32>)
    gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
    %v = memref.load %n[%c0] : memref<?xf32>
    gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
    %w0 = gpu.wait async
    %f0 = gpu.dealloc async [%w0] %m : memref<?xf32>
    gpu.wait [%f0]
    %w1 = gpu.wait async
    %f1 = gpu.dealloc async [%w1] %n : memref<?xf32>
    gpu.wait [%f1]
    return %v : f32
  }

  // Launches inside an scf.if: the region's terminator waits, and the
  // scf.if itself (it launches) is preceded by the wait of the chain
  // before it.
  // CHECK-LABEL: func.func @branch
  // CHECK: %[[B0:.*]] = gpu.launch_func async
  // CHECK: gpu.wait [%[[B0]]]
  // CHECK: scf.if
  // CHECK: %[[B1:.*]] = gpu.launch_func async
  // CHECK: gpu.wait [%[[B1]]]
  // CHECK-NEXT: }
  // CHECK-NEXT: return
  func.func @branch(%m: memref<?xf32>, %c: i1) {
    %c1 = arith.constant 1 : index
    gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
    scf.if %c {
      gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
    }
    return
  }
}
