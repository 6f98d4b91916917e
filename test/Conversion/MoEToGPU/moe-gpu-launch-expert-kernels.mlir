// moe-gpu-launch-expert-kernels: the call left by convert-moe-experts-to-gpu
// (after bufferization) becomes three launches on the same buffers: align
// on one block of 1024 threads, then gate_up and down on (tiles, N / BN)
// blocks of 128 threads, the tile count being the size of the tile table;
// the declaration goes away.
// RUN: moe-opt %s --moe-gpu-launch-expert-kernels --cse | FileCheck %s

// CHECK-NOT: func.func private @f_experts_launch
// CHECK-LABEL: func.func @f(
// CHECK-SAME: %[[X:[^:]+]]: memref<?x64xbf16>, %[[I:[^:]+]]: memref<?x2xi32>, %[[G:[^:]+]]: memref<8x128x64xbf16>, %[[U:[^:]+]]: memref<8x128x64xbf16>, %[[D:[^:]+]]: memref<8x64x128xbf16>, %[[OUT:[^:]+]]: memref<?x2x64xf32>, %[[S:[^:]+]]: memref<?xi32>, %[[TE:[^:]+]]: memref<?xi32>, %[[M:[^:]+]]: memref<1xi32>, %[[H:[^:]+]]: memref<?x128xbf16>)
// CHECK-DAG: %[[C1:.+]] = arith.constant 1 : index
// CHECK-DAG: %[[C0:.+]] = arith.constant 0 : index
// CHECK-DAG: %[[C1024:.+]] = arith.constant 1024 : index
// CHECK-DAG: %[[TILES:.+]] = memref.dim %[[TE]], %[[C0]]
// CHECK: gpu.launch_func @f_experts::@align blocks in (%[[C1]], %[[C1]], %[[C1]]) threads in (%[[C1024]], %[[C1]], %[[C1]]) args(%[[I]] : memref<?x2xi32>, %[[OUT]] : memref<?x2x64xf32>, %[[S]] : memref<?xi32>, %[[TE]] : memref<?xi32>, %[[M]] : memref<1xi32>)
// CHECK-DAG: %[[C2:.+]] = arith.constant 2 : index
// CHECK-DAG: %[[C128:.+]] = arith.constant 128 : index
// CHECK: gpu.launch_func @f_experts::@gate_up blocks in (%[[TILES]], %[[C2]], %[[C1]]) threads in (%[[C128]], %[[C1]], %[[C1]]) args(%[[X]] : memref<?x64xbf16>, %[[G]] : memref<8x128x64xbf16>, %[[U]] : memref<8x128x64xbf16>, %[[S]] : memref<?xi32>, %[[TE]] : memref<?xi32>, %[[M]] : memref<1xi32>, %[[H]] : memref<?x128xbf16>)
// CHECK: gpu.launch_func @f_experts::@down blocks in (%[[TILES]], %[[C1]], %[[C1]]) threads in (%[[C128]], %[[C1]], %[[C1]]) args(%[[H]] : memref<?x128xbf16>, %[[D]] : memref<8x64x128xbf16>, %[[S]] : memref<?xi32>, %[[TE]] : memref<?xi32>, %[[M]] : memref<1xi32>, %[[OUT]] : memref<?x2x64xf32>)
// CHECK-NOT: call
// CHECK: return
module attributes {gpu.container_module} {
  func.func private @f_experts_launch(memref<?x64xbf16>, memref<?x2xi32>, memref<8x128x64xbf16>, memref<8x128x64xbf16>, memref<8x64x128xbf16>, memref<?x2x64xf32>, memref<?xi32>, memref<?xi32>, memref<1xi32>, memref<?x128xbf16>) attributes {moe.expert_kernels = {align = @f_experts::@align, align_threads = 1024 : i64, down = @f_experts::@down, down_blocks_y = 1 : i64, gate_up = @f_experts::@gate_up, gate_up_blocks_y = 2 : i64, gemm_threads = 128 : i64, tiles = array<i64: 64, 64, 64, 32, 32, 3>}}
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
