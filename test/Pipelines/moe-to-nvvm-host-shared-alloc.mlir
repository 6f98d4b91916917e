// RUN: moe-opt %s --moe-gpu-host-shared-alloc --split-input-file --verify-diagnostics | FileCheck %s

// Host buffers become managed memory that kernels can read; a dealloc
// becomes an async gpu.dealloc on its own stream, waited for (the form
// gpu-to-llvm lowers). Allocations inside kernels are not touched.
// CHECK-LABEL: func.func @buffers
// CHECK-SAME: (%[[N:[^:]+]]: index
// CHECK: %[[B:.+]] = gpu.alloc host_shared (%[[N]]) : memref<?xf32>
// CHECK-NOT: memref.alloc(
// CHECK: gpu.launch
// CHECK: memref.store %{{.+}}, %[[B]]
// CHECK: memref.alloca() : memref<4xf32>
// CHECK: gpu.terminator
// CHECK: %[[W:.+]] = gpu.wait async
// CHECK: %[[D:.+]] = gpu.dealloc async [%[[W]]] %[[B]] : memref<?xf32>
// CHECK: gpu.wait [%[[D]]]
// CHECK-NOT: memref.dealloc
func.func @buffers(%n: index) {
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : f32
  %b = memref.alloc(%n) {alignment = 64 : i64} : memref<?xf32>
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %n, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    memref.store %zero, %b[%bx] : memref<?xf32>
    %scratch = memref.alloca() : memref<4xf32>
    gpu.terminator
  }
  memref.dealloc %b : memref<?xf32>
  return
}

// -----

memref.global "private" constant @table : memref<3xi32> = dense<[0, 1, 2]>

// A constant table read by a kernel is read from the global inside the
// kernel (outlining then copies the global into the gpu.module).
// CHECK-LABEL: func.func @constant_table
// CHECK-NOT: memref.get_global
// CHECK: gpu.launch
// CHECK-NEXT: %[[G:.+]] = memref.get_global @table : memref<3xi32>
// CHECK: memref.load %[[G]]
func.func @constant_table(%out: memref<3xi32>) {
  %c1 = arith.constant 1 : index
  %c3 = arith.constant 3 : index
  %g = memref.get_global @table : memref<3xi32>
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c3, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %v = memref.load %g[%bx] : memref<3xi32>
    memref.store %v, %out[%bx] : memref<3xi32>
    gpu.terminator
  }
  return
}

// -----

// A host stack buffer cannot be made visible to a kernel: refused.
func.func @stack_buffer(%out: memref<4xf32>) {
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  // expected-error @+1 {{buffer is used by a GPU kernel but is not heap memory}}
  %s = memref.alloca() : memref<4xf32>
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %v = memref.load %s[%bx] : memref<4xf32>
    memref.store %v, %out[%bx] : memref<4xf32>
    gpu.terminator
  }
  return
}

// -----

// The same for a buffer passed to a launch of an already formed kernel
// (the tensor-core expert kernels are launched with gpu.launch_func).
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k(%b: memref<4xf32>) kernel {
      gpu.return
    }
  }
  func.func @launched_stack_buffer() {
    %c1 = arith.constant 1 : index
    // expected-error @+1 {{buffer is used by a GPU kernel but is not heap memory}}
    %s = memref.alloca() : memref<4xf32>
    gpu.launch_func @kernels::@k blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%s : memref<4xf32>)
    return
  }
}
