// RUN: moe-opt %s --moe-gpu-copy-to-linalg | FileCheck %s

// Host copies between ranked buffers (here into a strided column) become
// linalg.copy, so that they turn into kernels with the other linalg ops;
// a 0-d copy stays (no loop to map).
// CHECK-LABEL: func.func @copies
// CHECK-SAME: (%[[A:[^:]+]]: memref<?x1xi32>, %[[B:[^:]+]]: memref<?x1xi32, strided<[2, 1], offset: ?>>, %[[C:[^:]+]]: memref<f32>, %[[D:[^:]+]]: memref<f32>)
// CHECK: linalg.copy ins(%[[A]] : memref<?x1xi32>) outs(%[[B]] : memref<?x1xi32, strided<[2, 1], offset: ?>>)
// CHECK-NEXT: memref.copy %[[C]], %[[D]] : memref<f32> to memref<f32>
// CHECK-NOT: memref.copy
func.func @copies(%a: memref<?x1xi32>, %b: memref<?x1xi32, strided<[2, 1], offset: ?>>,
                  %c: memref<f32>, %d: memref<f32>) {
  memref.copy %a, %b : memref<?x1xi32> to memref<?x1xi32, strided<[2, 1], offset: ?>>
  memref.copy %c, %d : memref<f32> to memref<f32>
  return
}
