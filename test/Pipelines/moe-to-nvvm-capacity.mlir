// Capacity dispatch on the GPU (Switch Transformers' fixed expert_capacity,
// GShard's capacity factor): convert-moe-route-to-gpu turns the
// moe.dispatch into the admission kernel (one warp; its numerics:
// Conversion/MoEToGPU/dispatch-emulate.test), so that nothing of the layer
// runs on the host between the routing and the expert kernels: the host
// function loads no memory (no stream wait in the middle, and the layer can
// be captured in a CUDA graph, Runtime/cuda-graphs.test). With the routing
// kernels off the generic path's sequential scan stays on the host (loads).
// RUN: moe-opt %s --split-input-file --moe-decompose --convert-moe-route-to-gpu | FileCheck %s
// RUN: moe-opt %s --split-input-file --moe-to-nvvm="format=isa" | FileCheck %s --check-prefix=HOST
// RUN: moe-opt %s --split-input-file --moe-to-nvvm="format=isa route-kernels=false" | FileCheck %s --check-prefix=SCAN
// REQUIRES: cuda-toolkit
// The first layer's PTX (ptxas takes one module):
// RUN: sed '/^\/\/ -----/q' %s | moe-opt --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.ptx
// RUN: %python %S/ptx.py --kernel switch_dispatch < %t.ptx | FileCheck %s --check-prefix=PTX
// RUN: %ptxas -arch=sm_90 -v %t.ptx -o /dev/null 2>&1 | FileCheck %s --check-prefix=PTXAS

// The dispatch: buffers of the routing results, three results allocated, one
// launch of one block of 32 threads (grid operand -1) on all five.
// CHECK: func.func private @switch_dispatch_launch(memref<?x1xi32>, memref<?x1xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<i64>)
// CHECK-SAME: moe.route_kernel = {launches = [{args = array<i64: 0, 1, 2, 3, 4>, grid = array<i64: -1, 1>, kernel = @switch_dispatch::@admit, threads = 32 : i64}]}
// CHECK-LABEL: func.func @switch(
// CHECK: call @switch_route_launch
// CHECK: memref.alloc(%{{.+}}) : memref<?x1xi32>
// CHECK: memref.alloc(%{{.+}}) : memref<?x1xf32>
// CHECK: memref.alloc() : memref<i64>
// CHECK: call @switch_dispatch_launch(
// CHECK-NOT: moe.dispatch
// CHECK: moe.experts
// The kernel: one warp, counters (E i32) in shared memory zeroed; C the
// fixed 5; a loop over the pairs, 8 steps of 32 per iteration (8 loads of
// ids first), each a match.sync.any on the expert id, the count read, a
// barrier, the group's last lane writing the count, a barrier, the results
// stored; the drops summed by 5 xor shuffles, stored by lane 0.
// CHECK: gpu.module @switch_dispatch
// CHECK: gpu.func @admit(%{{.+}}: memref<?x1xi32>, %{{.+}}: memref<?x1xf32>, %{{.+}}: memref<?x1xi32>, %{{.+}}: memref<?x1xf32>, %{{.+}}: memref<i64>) workgroup(%[[CNT:.+]] : memref<8xi32, #gpu.address_space<workgroup>>) kernel attributes {known_block_size = array<i32: 32, 1, 1>, known_grid_size = array<i32: 1, 1, 1>}
// CHECK-NOT: math.ceil
// CHECK: arith.constant 5 : i32
// CHECK: memref.store %{{.+}}, %[[CNT]]
// CHECK: gpu.barrier
// CHECK: scf.for
// CHECK-COUNT-8: memref.load %{{.+}} : memref<?x1xi32>
// CHECK: nvvm.match.sync {{ *}}any
// CHECK: memref.load %[[CNT]]
// CHECK: gpu.barrier
// CHECK: math.ctpop
// CHECK: memref.store %{{.+}}, %[[CNT]]
// CHECK: gpu.barrier
// CHECK-COUNT-7: nvvm.match.sync {{ *}}any
// CHECK: scf.yield
// CHECK-COUNT-5: gpu.shuffle xor
// CHECK: memref.store %{{.+}} : memref<i64>

// HOST-LABEL: llvm.func @switch(
// HOST-NOT: llvm.load
// HOST: gpu.binary
// SCAN-LABEL: llvm.func @switch(
// SCAN: llvm.load
// SCAN: gpu.binary

// PTX-DAG: match.any.sync.b32
// PTX-DAG: popc.b32
// PTX-DAG: bar.sync
// PTX-DAG: shfl.sync.bfly.b32
// PTXAS: Compiling entry function 'switch_dispatch' for 'sm_90'
// PTXAS-NEXT: Function properties for switch_dispatch
// PTXAS-NEXT: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
func.func @switch(%x: tensor<?x64xbf16>, %wr: tensor<8x64xbf16>, %u: tensor<8x128x64xbf16>,
    %d: tensor<8x64x128xbf16>) -> tensor<?x64xbf16> {
  %y, %n = moe.layer %x : tensor<?x64xbf16> router(%wr : tensor<8x64xbf16>)
      up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>)
      {routing = #moe.routing<softmax, topk, k = 1>, activation = #moe.activation<relu>,
       dispatch = #moe.dispatch<capacity>, expert_capacity = 5}
      -> tensor<?x64xbf16>, tensor<i64>
  return %y : tensor<?x64xbf16>
}

// -----

// A capacity factor: C = ceil(cf T K / E) from T on the device, in f64 as
// the CPU lowering; a dropless dispatch needs no kernel.
// CHECK-LABEL: func.func @gshard(
// CHECK: call @gshard_dispatch_launch(
// CHECK-LABEL: func.func @dropless(
// CHECK-NOT: moe.dispatch
// CHECK-NOT: launch
// CHECK: return %arg0, %arg1
// CHECK: gpu.func @admit
// CHECK: arith.sitofp %{{.+}} : i64 to f64
// CHECK: arith.constant 1.250000e+00 : f64
// CHECK: math.ceil %{{.+}} : f64
// CHECK: arith.fptosi
// HOST-LABEL: llvm.func @gshard(
// HOST-NOT: llvm.load
// HOST: gpu.binary
func.func @gshard(%x: tensor<?x64xbf16>, %wr: tensor<8x64xbf16>, %u: tensor<8x128x64xbf16>,
    %g: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>) -> (tensor<?x64xbf16>, tensor<i64>) {
  %y, %n = moe.layer %x : tensor<?x64xbf16> router(%wr : tensor<8x64xbf16>)
      gate(%g : tensor<8x128x64xbf16>) up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2>, activation = #moe.activation<swiglu>,
       dispatch = #moe.dispatch<capacity>, capacity_factor = 1.25 : f64}
      -> tensor<?x64xbf16>, tensor<i64>
  return %y, %n : tensor<?x64xbf16>, tensor<i64>
}
func.func @dropless(%i: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>) {
  %a, %b, %n = moe.dispatch %i, %w {num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<i64>
  return %a, %b, %n : tensor<?x2xi32>, tensor<?x2xf32>, tensor<i64>
}
