// The blocked GEMMs on AMX tiles (gemm-amx): bf16 weights and input, O and
// I multiples of 32. A block's rows are packed once into VNNI panels of 16
// rows (16 rows x 16 words of two bf16 read, transposed, written as 16
// packed rows of 32 bf16); each scf.forall column group of 32 weight rows
// runs the panels two at a time on 2 x 2 tile accumulators (weight tiles
// loaded from the weight tensor in place through a read-only
// bufferization.to_buffer), stores them to a buffer, transposes them into
// a second one and stores each of the block's rows as one vector of 32.
// Gated experts run gate and up together (the gated form): 16 columns per
// group, a gate tile and an up tile, the activation in the epilogue.
// RUN: moe-opt %s --convert-moe-to-linalg="blocked-gemms=1 gemm-vector-bits=512 gemm-amx=1" --canonicalize --cse | FileCheck %s
// Through the CPU pipeline to the LLVM dialect: AMX intrinsics, nothing
// left of the amx dialect.
// RUN: moe-opt %s --moe-to-llvm-cpu="gemm-amx=1 gemm-vector-bits=512" | FileCheck %s --check-prefix=LLVM
// Off: no tiles, and the down projection reads its f32 activations.
// RUN: moe-opt %s --convert-moe-to-linalg="blocked-gemms=1 gemm-vector-bits=512 gemm-amx=0" | FileCheck %s --check-prefix=OFF
// The manifest says whether the code uses tiles (the runtime then asks
// Linux for the tile state before loading it).
// RUN: rm -rf %t && moe-compile %s -o %t/on --pipeline-options=gemm-amx=1 && FileCheck %s --check-prefix=MANIFEST-ON < %t/on/manifest.json
// RUN: moe-compile %s -o %t/off --pipeline-options=gemm-amx=0 && FileCheck %s --check-prefix=MANIFEST-OFF < %t/off/manifest.json
// MANIFEST-ON: "amx_tiles": true
// MANIFEST-OFF: "amx_tiles": false

// Gated experts (swiglu): gate and up on the tiles together, 16 output
// columns per group (a gate tile and an up tile of the same rows), the
// activation in the epilogue, h written in bf16.
// CHECK-LABEL: func.func @experts
// CHECK-SAME: %[[X:[^:]+]]: tensor<?x64xbf16>
// CHECK: %[[GB:.+]] = bufferization.to_buffer %arg2 read_only : tensor<4x96x64xbf16> to memref<4x96x64xbf16, strided<[?, ?, 1], offset: ?>>
// CHECK: %[[UB:.+]] = bufferization.to_buffer %arg3 read_only : tensor<4x96x64xbf16>
// CHECK: scf.for %[[E:[^ ]+]] = %c0 to %c4
// CHECK:   scf.for %[[BLK:[^ ]+]] =
// CHECK:     %[[LEN:.+]] = arith.subi
// CHECK:     %[[PANELS:.+]] = arith.ceildivui %[[LEN]], %c16 : index
// CHECK:     %[[PACKED:.+]] = memref.alloc(%[[PANELS]]) {alignment = 64 : i64} : memref<?x32x32xbf16>
// Packing: 16 rows (the last row repeated past the block's) ...
// CHECK:     scf.for %[[P:[^ ]+]] = %c0 to %[[PANELS]] step %c1 {
// CHECK-COUNT-16: arith.minui
// CHECK:       scf.for %[[I:[^ ]+]] = %c0 to %c64 step %c32 {
// CHECK-COUNT-16: vector.bitcast %{{.+}} : vector<32xbf16> to vector<16xi32>
// ... as 16 packed rows of the panel.
// CHECK-COUNT-16: vector.transfer_write %{{.+}}, %[[PACKED]][%[[P]], %{{.+}}, %c0] {in_bounds = [true]} : vector<32xbf16>, memref<?x32x32xbf16>
// Column groups of 16 columns of h (96 = 6 x 16), two buffers each.
// CHECK:     scf.forall (%[[Q:.+]]) in (6) shared_outs(%{{.+}}) -> (tensor<?x2x96xbf16>)
// CHECK:       %[[COL0:.+]] = arith.muli %[[Q]], %c16 : index
// CHECK:       %[[ACC:.+]] = memref.alloc() {alignment = 64 : i64} : memref<32x32xf32>
// CHECK:       %[[ROWS:.+]] = memref.alloc() {alignment = 64 : i64} : memref<32x32xf32>
// Pairs of panels: 2 x 2 accumulators over the reduction in steps of 32,
// the gate's and the up projection's rows col0..+16.
// CHECK:       scf.for %[[PP:[^ ]+]] = %c0 to %{{.+}} step %c2 iter_args
// CHECK-COUNT-4: amx.tile_zero : !amx.tile<16x16xf32>
// CHECK:         scf.for %[[K:[^ ]+]] = %c0 to %c64 step %c32 iter_args({{.+}}) -> (!amx.tile<16x16xf32>, !amx.tile<16x16xf32>, !amx.tile<16x16xf32>, !amx.tile<16x16xf32>)
// CHECK:           %[[A0:.+]] = amx.tile_load %[[GB]][%[[E]], %[[COL0]], %[[K]]] : memref<4x96x64xbf16, strided<[?, ?, 1], offset: ?>> into !amx.tile<16x32xbf16>
// CHECK:           %[[A1:.+]] = amx.tile_load %[[UB]][%[[E]], %[[COL0]], %[[K]]]
// CHECK:           %[[KW:.+]] = arith.divui %[[K]], %c2
// CHECK:           %[[B0:.+]] = amx.tile_load %[[PACKED]][%[[PP]], %[[KW]], %c0] : memref<?x32x32xbf16> into !amx.tile<16x32xbf16>
// CHECK:           %[[PP1:.+]] = arith.addi %[[PP]], %c1
// CHECK:           %[[B1:.+]] = amx.tile_load %[[PACKED]][%[[PP1]], %[[KW]], %c0]
// CHECK:           amx.tile_mulf %[[A0]], %[[B0]], %{{.+}} : !amx.tile<16x32xbf16>, !amx.tile<16x32xbf16>, !amx.tile<16x16xf32>
// CHECK:           amx.tile_mulf %[[A0]], %[[B1]]
// CHECK:           amx.tile_mulf %[[A1]], %[[B0]]
// CHECK:           amx.tile_mulf %[[A1]], %[[B1]]
// Accumulator (t, v) at [16t, 16v] of the first buffer; its transpose at
// [16v, 16t] of the second.
// CHECK:         amx.tile_store %[[ACC]][%c0, %c0], %{{.+}}#0
// CHECK:         vector.transfer_write %{{.+}}, %[[ROWS]][%c0, %c0]
// CHECK:         amx.tile_store %[[ACC]][%c0, %c16], %{{.+}}#1
// CHECK:         vector.transfer_write %{{.+}}, %[[ROWS]][%c16, %c0]
// CHECK:         amx.tile_store %[[ACC]][%c16, %c0], %{{.+}}#2
// CHECK:         vector.transfer_write %{{.+}}, %[[ROWS]][%c0, %c16]
// CHECK:         amx.tile_store %[[ACC]][%c16, %c16], %{{.+}}#3
// Only the block's rows of the pair are stored, min(32, len - 16 p); each
// through the epilogue: gate sum m, up sum 16 + m, SiLU, rounded to bf16.
// CHECK:         %[[FIRST:.+]] = arith.muli %[[PP]], %c16
// CHECK:         %[[LEFT:.+]] = arith.subi %[[LEN]], %[[FIRST]]
// CHECK:         %[[COUNT:.+]] = arith.minui %[[LEFT]], %c32
// CHECK:         scf.for %[[J:[^ ]+]] = %c0 to %[[COUNT]] step %c1 iter_args
// CHECK:           scf.for %[[M:[^ ]+]] = %c0 to %c16 step %c1 iter_args
// CHECK:             %[[GATE:.+]] = memref.load %[[ROWS]][%[[J]], %[[M]]] : memref<32x32xf32>
// CHECK:             %[[M16:.+]] = arith.addi %[[M]], %c16
// CHECK:             %[[UP:.+]] = memref.load %[[ROWS]][%[[J]], %[[M16]]] : memref<32x32xf32>
// CHECK:             math.exp
// CHECK:             %[[H:.+]] = arith.truncf %{{.+}} : f32 to bf16
// CHECK:             tensor.insert %[[H]] into %{{.+}}[%{{.+}}, %{{.+}}, %[[M]]] : tensor<?x2x?xbf16>
// An odd last panel on its own: 2 accumulators.
// CHECK:       scf.for {{.+}} step %c1 iter_args
// CHECK-COUNT-2: amx.tile_zero
// CHECK:         scf.for {{.+}} -> (!amx.tile<16x16xf32>, !amx.tile<16x16xf32>)
// CHECK:         arith.minui %{{.+}}, %c16
// No f32 gate or up output, no separate activation.
// CHECK-NOT: tensor<?x2x96xf32>
// Down projection: 32 columns per group (64 = 2 x 32), weight rows col0..+16
// and col0+16..+32, each row stored as one vector of 32 f32.
// CHECK: %[[DB:.+]] = bufferization.to_buffer %arg4 read_only : tensor<4x64x96xbf16>
// CHECK: vector.transfer_read %{{.+}} : tensor<?x2x96xbf16>, vector<32xbf16>
// CHECK: scf.forall (%[[DQ:.+]]) in (2) shared_outs
// CHECK:   %[[DCOL0:.+]] = arith.muli %[[DQ]], %c32 : index
// CHECK:   amx.tile_load %[[DB]][%{{.+}}, %[[DCOL0]], %{{.+}}]
// CHECK:   %[[DCOL1:.+]] = arith.addi %[[DCOL0]], %c16
// CHECK:   amx.tile_load %[[DB]][%{{.+}}, %[[DCOL1]], %{{.+}}]
// CHECK:   amx.tile_mulf
// CHECK:   scf.for %[[DJ:[^ ]+]] = %c0 to %{{.+}} step %c1 iter_args
// CHECK:     %[[PIECE:.+]] = vector.transfer_read %{{.+}}[%[[DJ]], %c0], %{{.+}} {in_bounds = [true]} : memref<32x32xf32>, vector<32xf32>
// CHECK:     vector.transfer_write %[[PIECE]], %{{.+}} {in_bounds = [true]} : vector<32xf32>, tensor<?x2x?xf32>

// Experts without a gate (gelu): the up projection alone on the tiles (32
// columns per group, f32 out), then the activation's generic writes h in
// bf16 for the down projection.
// CHECK-LABEL: func.func @experts_gelu
// CHECK: scf.forall (%{{.+}}) in (3) shared_outs(%{{.+}}) -> (tensor<?x2x96xf32>)
// CHECK:   amx.tile_mulf
// CHECK: linalg.generic {{.+}} outs(%{{.+}} : tensor<?x2x96xbf16>)
// CHECK:   math.erf
// CHECK:   %[[ROUNDED:.+]] = arith.truncf %{{.+}} : f32 to bf16
// CHECK:   linalg.yield %[[ROUNDED]] : bf16
// CHECK: scf.forall (%{{.+}}) in (2) shared_outs
// CHECK:   amx.tile_mulf

// LLVM-NOT: amx.
// LLVM-LABEL: llvm.func @experts
// LLVM: llvm.call_intrinsic "llvm.x86.tileloadd64.internal"
// LLVM: llvm.call_intrinsic "llvm.x86.tdpbf16ps.internal"
// LLVM: llvm.call_intrinsic "llvm.x86.tilestored64.internal"

// OFF-LABEL: func.func @experts
// OFF-NOT: amx.
// OFF-NOT: tensor<?x2x96xbf16>
// OFF: return
// OFF-LABEL: func.func @experts_gelu
func.func @experts(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %g: tensor<4x96x64xbf16>,
    %u: tensor<4x96x64xbf16>, %d: tensor<4x64x96xbf16>) -> tensor<?x2x64xf32> {
  %s = moe.experts %x, %i gate(%g : tensor<4x96x64xbf16>) up(%u : tensor<4x96x64xbf16>) down(%d : tensor<4x64x96xbf16>)
      {activation = #moe.activation<swiglu>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

func.func @experts_gelu(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %u: tensor<4x96x64xbf16>,
    %d: tensor<4x64x96xbf16>) -> tensor<?x2x64xf32> {
  %s = moe.experts %x, %i up(%u : tensor<4x96x64xbf16>) down(%d : tensor<4x64x96xbf16>)
      {activation = #moe.activation<gelu>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

// Not on tiles: O not a multiple of 32 (a tile load would read past the
// weights), I not a multiple of 32, f32 weights, f32 input.
// CHECK-LABEL: func.func @not_whole_tiles
// CHECK-NOT: amx.
// CHECK: return
func.func @not_whole_tiles(%x: tensor<?x64xbf16>, %w: tensor<48x64xbf16>, %x2: tensor<?x48xbf16>,
    %w2: tensor<64x48xbf16>) -> (tensor<?x48xf32>, tensor<?x64xf32>) {
  %y = moe.linear %x, %w : (tensor<?x64xbf16>, tensor<48x64xbf16>) -> tensor<?x48xf32>
  %y2 = moe.linear %x2, %w2 : (tensor<?x48xbf16>, tensor<64x48xbf16>) -> tensor<?x64xf32>
  return %y, %y2 : tensor<?x48xf32>, tensor<?x64xf32>
}
// CHECK-LABEL: func.func @not_bf16
// CHECK-NOT: amx.
// CHECK: return
func.func @not_bf16(%x: tensor<?x64xf32>, %w: tensor<64x64xf32>, %w2: tensor<64x64xbf16>)
    -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %y = moe.linear %x, %w : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  %y2 = moe.linear %x, %w2 : (tensor<?x64xf32>, tensor<64x64xbf16>) -> tensor<?x64xf32>
  return %y, %y2 : tensor<?x64xf32>, tensor<?x64xf32>
}
// A bf16 moe.linear of whole tiles is on them.
// CHECK-LABEL: func.func @linear
// CHECK: amx.tile_mulf
func.func @linear(%x: tensor<?x64xbf16>, %w: tensor<64x64xbf16>) -> tensor<?x64xf32> {
  %y = moe.linear %x, %w : (tensor<?x64xbf16>, tensor<64x64xbf16>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
