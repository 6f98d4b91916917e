// The blocked GEMMs' outer-product micro-kernel (gemm-vector-bits): a block
// of 8 rows or more is packed, transposed, into f32 panels of 16 rows, then
// each scf.forall column group (12 weight rows) runs the panels two at a
// time on 2 x 12 vector accumulators; a smaller block keeps the 4 x 4
// dot-product tiles (the scf.if's else branch).
// RUN: moe-opt %s --convert-moe-to-linalg="blocked-gemms=1 gemm-vector-bits=512" --canonicalize --cse | FileCheck %s
// 8-lane vectors (AVX2): 2 x 6 accumulators, from 4 rows on.
// RUN: moe-opt %s --convert-moe-to-linalg="blocked-gemms=1 gemm-vector-bits=256" --canonicalize --cse | FileCheck %s --check-prefix=AVX2
// Through the CPU pipeline to the LLVM dialect: vector fmuladds (FMAs on
// hosts with them), nothing left
// of the vector dialect.
// RUN: moe-opt %s --moe-to-llvm-cpu=gemm-vector-bits=512 | FileCheck %s --check-prefix=LLVM
// RUN: moe-opt %s --moe-to-llvm-cpu=gemm-vector-bits=0 | FileCheck %s --check-prefix=NOMK
// The manifest records the width (the default, -1, is the host's).
// RUN: rm -rf %t && moe-compile %s -o %t --pipeline-options=gemm-vector-bits=256 && FileCheck %s --check-prefix=MANIFEST < %t/manifest.json
// MANIFEST: "gemm_vector_bits": 256
// RUN: not moe-opt %s --convert-moe-to-linalg="blocked-gemms=1 gemm-vector-bits=128" 2>&1 | FileCheck %s --check-prefix=ERR
// ERR: error: convert-moe-to-linalg: gemm-vector-bits must be 0, 256 or 512 (got 128)

// CHECK-LABEL: func.func @linear
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[W:[^:]+]]: tensor<40x16xf32>)
// CHECK: %[[LEN:.+]] = arith.subi
// CHECK: %[[WIDE:.+]] = arith.cmpi uge, %[[LEN]], %c8 : index
// CHECK: scf.if %[[WIDE]] -> (tensor<?x40xf32>) {
// Packing: row r of the block is lane r % 16 of panel r / 16, 0 past the
// block's rows.
// CHECK:   %[[PANELS:.+]] = arith.ceildivui %[[LEN]], %c16 : index
// CHECK:   %[[EMPTY:.+]] = tensor.empty(%[[PANELS]]) : tensor<?x16x16xf32>
// CHECK:   %[[PACKED:.+]] = scf.for {{.+}} -> (tensor<?x16x16xf32>) {
// CHECK:     %[[VALID:.+]] = arith.cmpi ult
// CHECK:       %[[XV:.+]] = tensor.extract %[[X]]
// CHECK:       arith.select %[[VALID]], %[[XV]], %cst{{.*}} : f32
// CHECK:       tensor.insert {{.+}} : tensor<?x16x16xf32>
// Column groups of 12 weight rows (40 = 3 x 12 + 4: the last repeats its
// last column).
// CHECK:   scf.forall (%{{.+}}) in (4) shared_outs(%{{.+}} = %{{.+}}) -> (tensor<?x40xf32>) {
// CHECK:     tensor.extract_slice
// CHECK-NOT: tensor<12x
// Pairs of panels: 24 accumulators, two row vectors, 12 broadcasts.
// CHECK:     scf.for {{.+}} step %c2 iter_args
// CHECK:       scf.for {{.+}} -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
// CHECK-COUNT-2: vector.transfer_read %[[PACKED]]{{.+}} {in_bounds = [true]} : tensor<?x16x16xf32>, vector<16xf32>
// CHECK-COUNT-12: vector.fma
// CHECK:         vector.broadcast
// CHECK-COUNT-12: vector.fma
// Results stored lane by lane, rows past the block's not.
// CHECK:       scf.for
// CHECK:         arith.cmpi ult
// CHECK:         scf.if
// CHECK-COUNT-12: vector.extract
// An odd last panel on its own: 12 accumulators.
// CHECK:     scf.for {{.+}} -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
// CHECK:     tensor.parallel_insert_slice
// CHECK: } else {
// CHECK:   scf.forall (%{{.+}}) in (10) shared_outs
// CHECK:     iter_args({{.+}}) -> (f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32)
// CHECK-LABEL: func.func @narrow
// CHECK-NOT: vector
// CHECK: return

// AVX2-LABEL: func.func @linear
// AVX2: arith.cmpi uge, %{{.+}}, %c4 : index
// AVX2: tensor.empty(%{{.+}}) : tensor<?x16x8xf32>
// AVX2: scf.forall (%{{.+}}) in (7) shared_outs
// AVX2: scf.for {{.+}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>) {
// AVX2-COUNT-2: vector.transfer_read
// AVX2-COUNT-6: vector.fma

// LLVM-NOT: vector.
// LLVM-LABEL: llvm.func @linear
// LLVM-COUNT-24: llvm.intr.fmuladd({{.+}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
// LLVM: llvm.extractelement {{.+}} : vector<16xf32>
// NOMK-NOT: vector<16xf32>

func.func @linear(%x: tensor<?x16xf32>, %w: tensor<40x16xf32>) -> tensor<?x40xf32> {
  %y = moe.linear %x, %w : (tensor<?x16xf32>, tensor<40x16xf32>) -> tensor<?x40xf32>
  return %y : tensor<?x40xf32>
}

// Fewer than 2 x 12 weight rows (a router): the dot-product tiles only.
func.func @narrow(%x: tensor<?x16xf32>, %w: tensor<20x16xf32>) -> tensor<?x20xf32> {
  %y = moe.linear %x, %w : (tensor<?x16xf32>, tensor<20x16xf32>) -> tensor<?x20xf32>
  return %y : tensor<?x20xf32>
}

// bf16 weights: each column group widens its 12 weight rows once into an f32
// `12 x (I + 16)` tensor (rows padded off the 4 KiB stride), which the inner
// loop reads; f32 weights are read in place (no such tensor in @linear).
// CHECK-LABEL: func.func @linear_bf16
// CHECK: scf.forall (%{{.+}}) in (4) shared_outs
// CHECK:   tensor.empty() : tensor<12x32xf32>
// CHECK-COUNT-12: arith.extf {{.+}} : bf16 to f32
// CHECK: vector.fma
// CHECK: } else {
func.func @linear_bf16(%x: tensor<?x16xbf16>, %w: tensor<40x16xbf16>) -> tensor<?x40xf32> {
  %y = moe.linear %x, %w : (tensor<?x16xbf16>, tensor<40x16xbf16>) -> tensor<?x40xf32>
  return %y : tensor<?x40xf32>
}
