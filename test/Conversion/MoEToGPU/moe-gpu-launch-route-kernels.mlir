// moe-gpu-launch-route-kernels: the call left by convert-moe-route-to-gpu
// (after bufferization) becomes one launch on the same buffers: ceil(T / 4)
// blocks of 4 warps (128 threads), T from the indices buffer (grid operand
// 2, grid_divisor 4); the declaration goes away. A malformed launch list is
// an error.
// RUN: moe-opt %s --split-input-file --moe-gpu-launch-route-kernels --cse --verify-diagnostics | FileCheck %s

// CHECK-NOT: func.func private @f_route_launch
// CHECK-LABEL: func.func @f(
// CHECK-SAME: %[[Z:[^:]+]]: memref<?x256xf32>, %[[B:[^:]+]]: memref<256xf32>, %[[I:[^:]+]]: memref<?x8xi32>, %[[W:[^:]+]]: memref<?x8xf32>)
// CHECK-DAG: %[[C0:.+]] = arith.constant 0 : index
// CHECK-DAG: %[[C1:.+]] = arith.constant 1 : index
// CHECK: %[[T:.+]] = memref.dim %[[I]], %[[C0]] : memref<?x8xi32>
// CHECK: %[[C4:.+]] = arith.constant 4 : index
// CHECK: %[[BLOCKS:.+]] = arith.ceildivui %[[T]], %[[C4]] : index
// CHECK: %[[C128:.+]] = arith.constant 128 : index
// CHECK: gpu.launch_func @f_route::@route blocks in (%[[BLOCKS]], %[[C1]], %[[C1]]) threads in (%[[C128]], %[[C1]], %[[C1]]) args(%[[Z]] : memref<?x256xf32>, %[[B]] : memref<256xf32>, %[[I]] : memref<?x8xi32>, %[[W]] : memref<?x8xf32>)
// CHECK-NOT: call
// CHECK: return
module attributes {gpu.container_module} {
  func.func private @f_route_launch(memref<?x256xf32>, memref<256xf32>, memref<?x8xi32>, memref<?x8xf32>) attributes {moe.route_kernel = {experts_per_lane = 8 : i64, launches = [{args = array<i64: 0, 1, 2, 3>, grid = array<i64: 2, 1>, grid_divisor = 4 : i64, kernel = @f_route::@route, threads = 128 : i64}]}}
  func.func @f(%z: memref<?x256xf32>, %b: memref<256xf32>, %i: memref<?x8xi32>, %w: memref<?x8xf32>) {
    call @f_route_launch(%z, %b, %i, %w) : (memref<?x256xf32>, memref<256xf32>, memref<?x8xi32>, memref<?x8xf32>) -> ()
    return
  }
  gpu.module @f_route {
    gpu.func @route(%z: memref<?x256xf32>, %b: memref<256xf32>, %i: memref<?x8xi32>, %w: memref<?x8xf32>) kernel {
      gpu.return
    }
  }
}

// -----

// expected-error @below {{'func.func' op malformed moe.route_kernel}}
func.func private @bad_launch(memref<?x8xi32>) attributes {moe.route_kernel = {launches = [{args = array<i64: 0>, grid = array<i64: 0, 1>, grid_divisor = 0 : i64, kernel = @m::@route, threads = 128 : i64}]}}
func.func @g(%i: memref<?x8xi32>) {
  call @bad_launch(%i) : (memref<?x8xi32>) -> ()
  return
}
