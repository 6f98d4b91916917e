// moe-gpu-async-launches: consecutive launches are queued on one stream
// (gpu.launch_func async, each depending on the previous one) with one
// blocking gpu.wait before the next op that may touch memory on the host or
// leave the function; host_shared allocations and pure ops in between do
// not wait; the `wait async; dealloc async; wait` triples that
// moe-gpu-host-shared-alloc writes join the chain (freed in stream order);
// an scf.if made only of such ops takes the chain's token into both
// regions and yields each region's end as an extra result. moe-to-nvvm
// runs it at the end of GPUMap (async-launches=0: off). Stream
// synchronizations per call against the fake driver:
// test/Runtime/cuda-async-launches.test; the lowering of waits on the
// tokens the scf.if results become: moe-to-nvvm-stream-waits.mlir.
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
  // A launch after it starts a new chain; the deallocations join it.
  // CHECK: %[[T4:.*]] = gpu.wait async
  // CHECK: %[[T5:.*]] = gpu.launch_func async [%[[T4]]] @k::@a
  // CHECK: %[[D1:.*]] = gpu.dealloc async [%[[T5]]] %[[M]]
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

  // Deallocations with no chain before them start one with their own wait.
  // CHECK-LABEL: func.func @free_only
  // CHECK: %[[F0:.*]] = gpu.wait async
  // CHECK-NEXT: %[[F1:.*]] = gpu.dealloc async [%[[F0]]]
  // CHECK-NEXT: %[[F2:.*]] = gpu.dealloc async [%[[F1]]]
  // CHECK-NEXT: gpu.wait [%[[F2]]]
  // CHECK-NEXT: return
  func.func @free_only(%m: memref<?xf32>, %n: memref<?xf32>) {
    %w0 = gpu.wait async
    %f0 = gpu.dealloc async [%w0] %m : memref<?xf32>
    gpu.wait [%f0]
    %w1 = gpu.wait async
    %f1 = gpu.dealloc async [%w1] %n : memref<?xf32>
    gpu.wait [%f1]
    return
  }

  // A branch of launches joins the chain: the token goes in, each region
  // yields its end, one wait after it (a missing else region yields the
  // token it was given).
  // CHECK-LABEL: func.func @branch
  // CHECK: %[[B0:.*]] = gpu.wait async
  // CHECK: %[[B1:.*]] = gpu.launch_func async [%[[B0]]]
  // CHECK: %[[IF:.*]] = scf.if %{{.*}} -> (!gpu.async.token) {
  // CHECK: %[[B2:.*]] = gpu.launch_func async [%[[B1]]]
  // CHECK: scf.yield %[[B2]] : !gpu.async.token
  // CHECK: } else {
  // CHECK: scf.yield %[[B1]] : !gpu.async.token
  // CHECK: }
  // CHECK-NEXT: gpu.wait [%[[IF]]]
  // CHECK-NEXT: return
  func.func @branch(%m: memref<?xf32>, %c: i1) {
    %c1 = arith.constant 1 : index
    gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
    scf.if %c {
      gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
    }
    return
  }

  // The layers' shape: a branch between two kernel sets with a result
  // buffer, a nested branch, deallocations inside and after; one wait in
  // all, at the end.
  // CHECK-LABEL: func.func @sets
  // CHECK: %[[S0:.*]] = gpu.wait async
  // CHECK: %[[IF:.*]]:2 = scf.if %{{.*}} -> (memref<?xf32>, !gpu.async.token) {
  // CHECK: %[[S1:.*]] = gpu.launch_func async [%[[S0]]]
  // CHECK: %[[IN:.*]] = scf.if %{{.*}} -> (!gpu.async.token) {
  // CHECK: %[[S2:.*]] = gpu.launch_func async [%[[S1]]]
  // CHECK: scf.yield %[[S2]] : !gpu.async.token
  // CHECK: } else {
  // CHECK: scf.yield %[[S1]] : !gpu.async.token
  // CHECK: }
  // CHECK: %[[S3:.*]] = gpu.dealloc async [%[[IN]]]
  // CHECK: scf.yield %{{.*}}, %[[S3]] : memref<?xf32>, !gpu.async.token
  // CHECK: } else {
  // CHECK: %[[S4:.*]] = gpu.launch_func async [%[[S0]]]
  // CHECK: scf.yield %{{.*}}, %[[S4]] : memref<?xf32>, !gpu.async.token
  // CHECK: }
  // CHECK: %[[S5:.*]] = gpu.dealloc async [%[[IF]]#1] %[[IF]]#0
  // CHECK-NEXT: gpu.wait [%[[S5]]]
  // CHECK-NEXT: return
  func.func @sets(%sz: index, %c: i1, %d: i1) {
    %c1 = arith.constant 1 : index
    %r = scf.if %c -> (memref<?xf32>) {
      %a = gpu.alloc host_shared (%sz) : memref<?xf32>
      %t = gpu.alloc host_shared (%sz) : memref<?xf32>
      gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%t : memref<?xf32>)
      scf.if %d {
        gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%a : memref<?xf32>)
      }
      %w = gpu.wait async
      %f = gpu.dealloc async [%w] %t : memref<?xf32>
      gpu.wait [%f]
      scf.yield %a : memref<?xf32>
    } else {
      %b = gpu.alloc host_shared (%sz) : memref<?xf32>
      gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%b : memref<?xf32>)
      scf.yield %b : memref<?xf32>
    }
    %w = gpu.wait async
    %f = gpu.dealloc async [%w] %r : memref<?xf32>
    gpu.wait [%f]
    return
  }

  // A pure branch (index arithmetic) is transparent: no token, no wait.
  // CHECK-LABEL: func.func @pure_branch
  // CHECK-NOT: gpu.wait
  // CHECK: scf.if %{{.*}} -> (index) {
  // CHECK-NOT: gpu.wait
  // CHECK: return
  func.func @pure_branch(%c: i1, %x: index) -> index {
    %c1 = arith.constant 1 : index
    %r = scf.if %c -> (index) {
      %y = arith.addi %x, %c1 : index
      scf.yield %y : index
    } else {
      scf.yield %x : index
    }
    return %r : index
  }

  // A branch that touches memory on the host keeps the old form: a wait
  // before it, a chain of its own inside, waiting before the store and at
  // its end. A loop body likewise.
  // CHECK-LABEL: func.func @host_side
  // CHECK: %[[H0:.*]] = gpu.launch_func async
  // CHECK: gpu.wait [%[[H0]]]
  // CHECK: scf.if %{{.*}} {
  // CHECK: %[[H1:.*]] = gpu.launch_func async
  // CHECK: gpu.wait [%[[H1]]]
  // CHECK: memref.store
  // CHECK: }
  // CHECK: scf.for
  // CHECK: %[[H2:.*]] = gpu.launch_func async
  // CHECK: gpu.wait [%[[H2]]]
  // CHECK-NEXT: }
  // CHECK-NEXT: return
  func.func @host_side(%m: memref<?xf32>, %c: i1, %v: f32) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c4 = arith.constant 4 : index
    gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
    scf.if %c {
      gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
      memref.store %v, %m[%c0] : memref<?xf32>
    }
    scf.for %i = %c0 to %c4 step %c1 {
      gpu.launch_func @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<?xf32>)
    }
    return
  }
}
