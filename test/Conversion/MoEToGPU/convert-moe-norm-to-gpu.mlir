// convert-moe-norm-to-gpu: a moe.rms_norm, with the moe.combine of addends
// only that feeds it (the Cartesian layer's residual), becomes the host code
// that calls the warp-per-token norm kernel (launch list on a private
// declaration), and the kernel: pass 1 adds the addends' 16-byte vectors in
// f32, rounds to h's type and accumulates the squares; the vector's
// elements added and a 5-step xor butterfly; pass 2 forms h again and
// stores h * rsqrt(sum / H + eps) * weight, rounded.
// RUN: moe-opt %s --split-input-file --convert-moe-norm-to-gpu --verify-diagnostics | FileCheck %s
// RUN: moe-opt %s --split-input-file --convert-moe-norm-to-gpu=fuse-combine=0 --verify-diagnostics | FileCheck %s --check-prefix=NOFUSE
// RUN: not moe-opt %s --split-input-file --convert-moe-norm-to-gpu=required 2>&1 | FileCheck %s --check-prefix=REQ

// The residual and the norm, bf16, H = 4096: 8-element vectors, 16 steps of
// 256 per pass (no guard); h never leaves registers; grid ceil(T/4).
// CHECK-LABEL: func.func private @residual_norm_launch(memref<?x4096xbf16>, memref<?x4096xbf16>, memref<4096xbf16>, memref<?x4096xbf16>)
// CHECK-SAME: moe.norm_kernel = {launches = [{args = array<i64: 0, 1, 2, 3>, grid = array<i64: 3, 1>, grid_divisor = 4 : i64, kernel = @residual_norm::@norm, threads = 128 : i64}]}
// CHECK-LABEL: func.func @residual
// CHECK: %[[X:.*]] = bufferization.to_buffer %arg0 read_only
// CHECK: %[[YA:.*]] = bufferization.to_buffer %arg1 read_only
// CHECK: %[[G:.*]] = bufferization.to_buffer %arg2 read_only
// CHECK: %[[T:.*]] = tensor.dim %arg0
// CHECK: %[[Y:.*]] = memref.alloc(%[[T]]) : memref<?x4096xbf16>
// CHECK: call @residual_norm_launch(%[[X]], %[[YA]], %[[G]], %[[Y]])
// CHECK: bufferization.to_tensor %[[Y]] restrict writable
// CHECK-NOT: moe.combine
// CHECK-NOT: moe.rms_norm
// CHECK: gpu.module @residual_norm
// CHECK: gpu.func @norm(%{{.*}}: memref<?x4096xbf16>, %{{.*}}: memref<?x4096xbf16>, %{{.*}}: memref<4096xbf16>, %{{.*}}: memref<?x4096xbf16>) kernel attributes {known_block_size = array<i32: 128, 1, 1>}
// CHECK: scf.if
// CHECK: scf.for {{.*}} to %c4096{{.*}} step %c256{{.*}} -> (vector<8xf32>)
// CHECK-NOT: arith.select
// CHECK-COUNT-2: vector.load {{.*}} {alignment = 16 : i64} : memref<?x4096xbf16>, vector<8xbf16>
// CHECK: arith.addf {{.*}} : vector<8xf32>
// CHECK: arith.truncf {{.*}} : vector<8xf32> to vector<8xbf16>
// CHECK-NOT: vector.store
// CHECK: arith.mulf
// CHECK: scf.yield
// CHECK-COUNT-5: gpu.shuffle  xor
// CHECK: arith.divf %{{.*}}, %cst{{.*}} : f32
// CHECK: math.rsqrt
// CHECK: scf.for {{.*}} to %c4096{{.*}} step %c256
// CHECK: vector.load {{.*}} : memref<4096xbf16>, vector<8xbf16>
// CHECK: vector.store {{.*}} {alignment = 16 : i64} : memref<?x4096xbf16>, vector<8xbf16>
// CHECK: gpu.return
// NOFUSE-LABEL: func.func private @residual_norm_launch(memref<?x4096xbf16>, memref<4096xbf16>, memref<?x4096xbf16>)
// NOFUSE-LABEL: func.func @residual
// NOFUSE: moe.combine addends
func.func @residual(%x: tensor<?x4096xbf16>, %ya: tensor<?x4096xbf16>, %g: tensor<4096xbf16>) -> tensor<?x4096xbf16> {
  %h = moe.combine addends(%x, %ya : tensor<?x4096xbf16>, tensor<?x4096xbf16>) : tensor<?x4096xbf16>
  %y = moe.rms_norm %h, %g {epsilon = 1.0e-6 : f64} : tensor<?x4096xbf16>, tensor<4096xbf16>
  return %y : tensor<?x4096xbf16>
}

// -----

// h also returned: the kernel stores it (a second output), in pass 1 only.
// Mixed types (an f32 addend: 4-element vectors), H = 40 not a multiple of
// the step of 128: loads clamped to column 36, squares past the row selected
// away, stores under a per-lane branch.
// CHECK-LABEL: func.func private @stored_norm_launch(memref<?x40xbf16>, memref<?x40xf32>, memref<40xf32>, memref<?x40xbf16>, memref<?x40xbf16>)
// CHECK-LABEL: func.func @stored
// CHECK: %[[H:.*]] = memref.alloc(%{{.*}}) : memref<?x40xbf16>
// CHECK: %[[Y:.*]] = memref.alloc(%{{.*}}) : memref<?x40xbf16>
// CHECK: call @stored_norm_launch(%{{.*}}, %{{.*}}, %{{.*}}, %[[H]], %[[Y]])
// CHECK-DAG: %[[YT:.*]] = bufferization.to_tensor %[[Y]] restrict writable
// CHECK-DAG: %[[HT:.*]] = bufferization.to_tensor %[[H]] restrict writable
// CHECK: return %[[YT]], %[[HT]]
// CHECK: gpu.func @norm(
// CHECK: scf.for {{.*}} to %c128{{.*}} step %c128{{.*}} -> (vector<4xf32>)
// CHECK: %[[COL:.*]] = arith.minui %{{.*}}, %c36
// CHECK: %[[OK:.*]] = arith.cmpi ult, %{{.*}}, %c40
// CHECK: vector.load %{{.*}}[%{{.*}}, %[[COL]]] {alignment = 8 : i64} : memref<?x40xbf16>, vector<4xbf16>
// CHECK: vector.load %{{.*}}[%{{.*}}, %[[COL]]] {alignment = 16 : i64} : memref<?x40xf32>, vector<4xf32>
// CHECK: scf.if %[[OK]]
// CHECK: vector.store {{.*}} : memref<?x40xbf16>, vector<4xbf16>
// CHECK: arith.select %[[OK]]
// CHECK: scf.yield
// CHECK: math.rsqrt
// CHECK: scf.for
// CHECK: vector.load {{.*}} : memref<40xf32>, vector<4xf32>
// CHECK: scf.if
// CHECK: vector.store {{.*}} : memref<?x40xbf16>, vector<4xbf16>
func.func @stored(%a: tensor<?x40xbf16>, %b: tensor<?x40xf32>, %g: tensor<40xf32>) -> (tensor<?x40xbf16>, tensor<?x40xbf16>) {
  %h = moe.combine addends(%a, %b : tensor<?x40xbf16>, tensor<?x40xf32>) : tensor<?x40xbf16>
  %y = moe.rms_norm %h, %g {epsilon = 1.0e-5 : f64} : tensor<?x40xbf16>, tensor<40xf32>
  return %y, %h : tensor<?x40xbf16>, tensor<?x40xbf16>
}

// -----

// h read by an op before the norm: the combine stays (its generic path) and
// the norm kernel reads h.
// CHECK-LABEL: func.func private @early_norm_launch(memref<?x64xf16>, memref<64xf16>, memref<?x64xf16>)
// CHECK-LABEL: func.func @early
// CHECK: moe.combine addends
// CHECK: moe.linear
// CHECK: call @early_norm_launch
func.func @early(%a: tensor<?x64xf16>, %b: tensor<?x64xf16>, %w: tensor<4x64xf16>, %g: tensor<64xf16>) -> (tensor<?x64xf16>, tensor<?x4xf32>) {
  %h = moe.combine addends(%a, %b : tensor<?x64xf16>, tensor<?x64xf16>) : tensor<?x64xf16>
  %l = moe.linear %h, %w : (tensor<?x64xf16>, tensor<4x64xf16>) -> tensor<?x4xf32>
  %y = moe.rms_norm %h, %g : tensor<?x64xf16>, tensor<64xf16>
  return %y, %l : tensor<?x64xf16>, tensor<?x4xf32>
}

// -----

// A norm weight that is a compile-time constant (a host global, which a
// kernel cannot read) keeps the generic path, with a remark; with
// `required` it is an error.
// REQ: error: 'moe.rms_norm' op cannot use the norm kernel: the weight is a compile-time constant
func.func @constant_weight(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %g = arith.constant dense<1.0> : tensor<8xf32>
  // expected-remark @below {{moe.rms_norm keeps the generic GPU path: the weight is a compile-time constant}}
  %y = moe.rms_norm %x, %g : tensor<?x8xf32>, tensor<8xf32>
  return %y : tensor<?x8xf32>
}
