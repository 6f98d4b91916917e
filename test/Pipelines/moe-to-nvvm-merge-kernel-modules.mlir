// RUN: moe-opt %s --moe-gpu-merge-kernel-modules | FileCheck %s

// The kernels gpu-kernel-outlining put in one gpu.module each end up in a
// single module (one binary, one load), named after their old modules; the
// global both copies read is kept once; launches follow.
// CHECK: gpu.module @moe_kernels {
// CHECK-DAG: gpu.func @f_kernel(
// CHECK-DAG: gpu.func @f_kernel_0(
// CHECK-DAG: memref.global "private" constant @table
// CHECK: }
// CHECK-NOT: gpu.module
// CHECK: func.func @f
// CHECK: gpu.launch_func @moe_kernels::@f_kernel blocks
// CHECK: gpu.launch_func @moe_kernels::@f_kernel_0 blocks
module attributes {gpu.container_module} {
  gpu.module @f_kernel {
    memref.global "private" constant @table : memref<3xi32> = dense<[0, 1, 2]>
    gpu.func @f_kernel(%out: memref<3xi32>) kernel {
      %c0 = arith.constant 0 : index
      %t = memref.get_global @table : memref<3xi32>
      %v = memref.load %t[%c0] : memref<3xi32>
      memref.store %v, %out[%c0] : memref<3xi32>
      gpu.return
    }
  }
  gpu.module @f_kernel_0 {
    memref.global "private" constant @table : memref<3xi32> = dense<[0, 1, 2]>
    gpu.func @f_kernel(%out: memref<3xi32>) kernel {
      %c1 = arith.constant 1 : index
      %t = memref.get_global @table : memref<3xi32>
      %v = memref.load %t[%c1] : memref<3xi32>
      memref.store %v, %out[%c1] : memref<3xi32>
      gpu.return
    }
  }
  func.func @f(%out: memref<3xi32>) {
    %c1 = arith.constant 1 : index
    gpu.launch_func @f_kernel::@f_kernel blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%out : memref<3xi32>)
    gpu.launch_func @f_kernel_0::@f_kernel blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%out : memref<3xi32>)
    return
  }
}
