// moe-gpu-stream-waits: gpu-to-llvm takes a token that is not the result
// of a stream-creating op for an event (mgpuEventSynchronize/Destroy).
// The tokens that moe-gpu-async-launches threads through scf.if are block
// arguments after convert-scf-to-cf, and every token of moe-to-nvvm is a
// stream, so a blocking wait whose token traces back to a block argument
// (through the first dependency of async ops, which run on it) becomes the
// stream calls; waits on tokens from `gpu.wait async` stay for
// gpu-to-llvm. The whole pipeline: no mgpuEvent call in the host code.
// RUN: moe-opt %s --moe-gpu-stream-waits | FileCheck %s
// RUN: moe-opt %s --moe-gpu-stream-waits --gpu-to-llvm --reconcile-unrealized-casts | FileCheck %s --check-prefix=LLVM
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="chip=sm_90" | FileCheck %s --check-prefix=PIPE

module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @a() kernel { gpu.return }
  }

  // CHECK-LABEL: func.func @joined
  // CHECK: ^bb3(%[[T:.*]]: !gpu.async.token):
  // CHECK: %[[D:.*]] = gpu.dealloc async [%[[T]]]
  // CHECK-NEXT: %[[S:.*]] = builtin.unrealized_conversion_cast %[[D]] : !gpu.async.token to !llvm.ptr
  // CHECK-NEXT: llvm.call @mgpuStreamSynchronize(%[[S]])
  // CHECK-NEXT: llvm.call @mgpuStreamDestroy(%[[S]])
  // CHECK-NEXT: return
  // The wait on a stream-creating token is left alone.
  // CHECK-LABEL: func.func @plain
  // CHECK: gpu.wait [%{{.*}}]
  // LLVM-LABEL: llvm.func @joined
  // LLVM-NOT: mgpuEvent
  // LLVM: llvm.call @mgpuStreamSynchronize
  // LLVM-LABEL: llvm.func @plain
  // LLVM: llvm.call @mgpuStreamSynchronize
  func.func @joined(%m: memref<?xf32>, %c: i1) {
    %c1 = arith.constant 1 : index
    %t0 = gpu.wait async
    cf.cond_br %c, ^bb1, ^bb2
  ^bb1:
    %t1 = gpu.launch_func async [%t0] @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1)
    cf.br ^bb3(%t1 : !gpu.async.token)
  ^bb2:
    cf.br ^bb3(%t0 : !gpu.async.token)
  ^bb3(%t: !gpu.async.token):
    %d = gpu.dealloc async [%t] %m : memref<?xf32>
    gpu.wait [%d]
    return
  }

  func.func @plain(%m: memref<?xf32>) {
    %c1 = arith.constant 1 : index
    %t0 = gpu.wait async
    %t1 = gpu.launch_func async [%t0] @k::@a blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1)
    gpu.wait [%t1]
    return
  }
}

// PIPE-NOT: mgpuEvent
// PIPE: llvm.call @mgpuStreamSynchronize
// PIPE-NOT: mgpuEvent
