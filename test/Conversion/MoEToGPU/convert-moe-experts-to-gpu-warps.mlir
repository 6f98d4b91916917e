// convert-moe-experts-to-gpu warps=8: GEMM blocks of 8 warps (256 threads),
// 4 x 2 warps from BM = 64 (each warp 16 of the 64 rows, half the columns),
// 2 x 4 at BM = 32 (each warp's columns BN / 4, so BN a multiple of 32).
// The launches and the kernels' known block size say 256; align and the
// combine's kernels keep theirs. Numerics: experts-emulate.test (8warps
// cases); PTX: moe-to-nvvm-cubin.mlir.
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu="warps=8" --verify-diagnostics | FileCheck %s
// RUN: not moe-opt %s --split-input-file --convert-moe-experts-to-gpu="warps=6" 2>&1 | FileCheck %s --check-prefix=BAD

// CHECK-LABEL: func.func private @w8_experts_launch
// CHECK-SAME: kernel = @w8_experts::@align, threads = 1024 : i64
// CHECK-SAME: kernel = @w8_experts::@gate_up, threads = 256 : i64
// CHECK-SAME: kernel = @w8_experts::@down, threads = 256 : i64
// CHECK-SAME: kernel = @w8_experts::@finish, threads = 32 : i64
// CHECK-SAME: tiles = array<i64: 64, 64, 64, 32, 32, 3>
// CHECK: gpu.func @gate_up({{.*}} kernel attributes {known_block_size = array<i32: 256, 1, 1>}
// The warp's rows: (warp / 2) * 16; its columns: (warp % 2) * 32.
// CHECK: %[[WARP:.*]] = arith.divui %{{.*}}, %c32
// CHECK-DAG: %[[WR:.*]] = arith.divui %[[WARP]], %c2
// CHECK-DAG: arith.muli %[[WR]], %c16
// CHECK-DAG: %[[WC:.*]] = arith.remui %[[WARP]], %c2
// CHECK-DAG: arith.muli %[[WC]], %c32
// CHECK: gpu.func @down({{.*}} kernel attributes {known_block_size = array<i32: 256, 1, 1>}
// BAD: error: convert-moe-experts-to-gpu: warps must be 0 (4), 4 or 8 (got 6)
func.func @w8(%x: tensor<?x64xbf16>, %idx: tensor<?x2xi32>, %w: tensor<?x2xf32>,
              %g: tensor<8x128x64xbf16>, %u: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>) -> tensor<?x64xbf16> {
  %slots = moe.experts %x, %idx gate(%g : tensor<8x128x64xbf16>) up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%slots : tensor<?x2x64xf32>) : tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}

// -----

// E = 32: BM = 32, so 2 x 4 warps, and F = 48 has no column tile that is a
// multiple of 32 (16 was enough with 2 x 2).
func.func @w8_narrow(%x: tensor<?x64xbf16>, %idx: tensor<?x2xi32>,
                     %g: tensor<32x48x64xbf16>, %u: tensor<32x48x64xbf16>, %d: tensor<32x64x48xbf16>) -> tensor<?x2x64xf32> {
  // expected-remark @+1 {{moe.experts keeps the generic GPU path: F = 48 has no gate/up column tile (multiple of 32 dividing F)}}
  %slots = moe.experts %x, %idx gate(%g : tensor<32x48x64xbf16>) up(%u : tensor<32x48x64xbf16>) down(%d : tensor<32x64x48xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %slots : tensor<?x2x64xf32>
}
