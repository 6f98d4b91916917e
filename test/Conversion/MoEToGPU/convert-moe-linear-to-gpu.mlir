// convert-moe-linear-to-gpu: a moe.linear becomes the host code that calls
// the warp-per-output kernel (launch list on a private declaration), and
// the kernel: per step 32 lanes x `unroll` 16-byte vectors of the weight row
// and of four tokens' x rows, f32 vector accumulators, the vector's elements
// added, a 5-step xor butterfly, lane 0 stores (bias added, rounded).
// RUN: moe-opt %s --split-input-file --convert-moe-linear-to-gpu --verify-diagnostics | FileCheck %s
// RUN: not moe-opt %s --split-input-file --convert-moe-linear-to-gpu=required 2>&1 | FileCheck %s --check-prefix=REQ

// A router: bf16 x and weight, f32 logits. I = 4096: 8-element vectors,
// 4 per lane and step of 1024 (no guard); grid ceil(T/4) x ceil(8/4).
// CHECK-LABEL: func.func private @router_linear_launch(memref<?x4096xbf16>, memref<8x4096xbf16>, memref<?x8xf32>)
// CHECK-SAME: moe.linear_kernel = {launches = [{args = array<i64: 0, 1, 2>, grid = array<i64: 2, 2>, grid_divisor = 4 : i64, kernel = @router_linear::@linear, threads = 128 : i64}]}
// CHECK-LABEL: func.func @router
// CHECK: %[[X:.*]] = bufferization.to_buffer %arg0 read_only
// CHECK: %[[W:.*]] = bufferization.to_buffer %arg1 read_only
// CHECK: %[[T:.*]] = tensor.dim %arg0
// CHECK: %[[Y:.*]] = memref.alloc(%[[T]]) : memref<?x8xf32>
// CHECK: call @router_linear_launch(%[[X]], %[[W]], %[[Y]])
// CHECK: bufferization.to_tensor %[[Y]] restrict writable
// CHECK-NOT: moe.linear
// CHECK: gpu.module @router_linear
// CHECK: gpu.func @linear(%{{.*}}: memref<?x4096xbf16>, %{{.*}}: memref<8x4096xbf16>, %{{.*}}: memref<?x8xf32>) kernel attributes {known_block_size = array<i32: 128, 1, 1>}
// CHECK: gpu.block_id  y
// CHECK: scf.for {{.*}} to %c4096{{.*}} step %c1024{{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK-NOT: arith.select
// CHECK-COUNT-20: vector.load {{.*}} {alignment = 16 : i64} : memref<{{.*}}xbf16>, vector<8xbf16>
// CHECK: scf.yield
// CHECK-COUNT-5: gpu.shuffle  xor
// CHECK: scf.if
// CHECK-COUNT-4: memref.store {{.*}} : memref<?x8xf32>
// CHECK: gpu.return
func.func @router(%x: tensor<?x4096xbf16>, %w: tensor<8x4096xbf16>) -> tensor<?x8xf32> {
  %y = moe.linear %x, %w : (tensor<?x4096xbf16>, tensor<8x4096xbf16>) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

// A bias, an f32 weight under bf16 x (4-element vectors: 16 bytes of the
// weight, 8 of x), I = 96 not a multiple of the step of 128: the loads are
// clamped and the products past the row selected away; a bf16 result.
// CHECK-LABEL: func.func private @biased_linear_launch(memref<?x96xbf16>, memref<13x96xf32>, memref<13xbf16>, memref<?x13xbf16>)
// CHECK-SAME: grid = array<i64: 3, 4>, grid_divisor = 4
// CHECK: gpu.func @linear(
// CHECK: scf.for {{.*}} to %c128{{.*}} step %c128
// CHECK: %[[OK:.*]] = arith.cmpi ult, %{{.*}}, %c96
// CHECK: %[[H:.*]] = arith.minui %{{.*}}, %c92
// CHECK: vector.load %{{.*}}[%{{.*}}, %[[H]]] {alignment = 16 : i64} : memref<13x96xf32>, vector<4xf32>
// CHECK: vector.load %{{.*}}[%{{.*}}, %[[H]]] {alignment = 8 : i64} : memref<?x96xbf16>, vector<4xbf16>
// CHECK: arith.select %[[OK]]
// CHECK: memref.load %{{.*}} : memref<13xbf16>
// CHECK: arith.truncf %{{.*}} : f32 to bf16
func.func @biased(%x: tensor<?x96xbf16>, %w: tensor<13x96xf32>, %b: tensor<13xbf16>) -> tensor<?x13xbf16> {
  %y = moe.linear %x, %w bias %b : (tensor<?x96xbf16>, tensor<13x96xf32>, tensor<13xbf16>) -> tensor<?x13xbf16>
  return %y : tensor<?x13xbf16>
}

// -----

// Two linears in a function: two kernels, numbered.
// CHECK-LABEL: func.func @two
// CHECK: call @two_linear_launch
// CHECK: call @two_linear_1_launch
// CHECK: gpu.module @two_linear
// CHECK: gpu.module @two_linear_1
func.func @two(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>, %g: tensor<2x64xf32>) -> (tensor<?x4xf32>, tensor<?x2xf32>) {
  %a = moe.linear %x, %w : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
  %b = moe.linear %x, %g : (tensor<?x64xf32>, tensor<2x64xf32>) -> tensor<?x2xf32>
  return %a, %b : tensor<?x4xf32>, tensor<?x2xf32>
}

// -----

// A constant weight is a host global, which a kernel cannot read: generic
// path with a remark (an error with required).
// CHECK-LABEL: func.func @constant
// CHECK: moe.linear
// REQ: error: 'moe.linear' op cannot use the linear kernel: the weight is a compile-time constant
func.func @constant(%x: tensor<?x64xbf16>) -> tensor<?x4xf32> {
  %w = arith.constant dense<1.0> : tensor<4x64xbf16>
  // expected-remark @+1 {{moe.linear keeps the generic GPU path: the weight is a compile-time constant}}
  %y = moe.linear %x, %w : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
  return %y : tensor<?x4xf32>
}

// -----

// A projected router (Nexus, W_r = W_2 SwiGLU(W_1 D)): swiglu_up, a warp per
// output of SwiGLU(W_1 d_e) (rows j and j + h' of W_1, E = 6 "tokens" of x =
// D, grid ceil(6/4) x ceil(32/4)), then a moe.linear A W_2^T that the linear
// kernel takes (f32 x, bf16 weight); the result E x H f32, static again.
// CHECK-LABEL: func.func private @projected_projected_router_launch(memref<?x16xbf16>, memref<64x16xbf16>, memref<?x32xf32>)
// CHECK-SAME: grid = array<i64: 2, 8>, grid_divisor = 4 : i64, kernel = @projected_projected_router::@swiglu_up
// CHECK-LABEL: func.func private @projected_linear_launch(memref<?x32xf32>, memref<64x32xbf16>, memref<?x64xf32>)
// CHECK-LABEL: func.func @projected
// CHECK: %[[A:.*]] = memref.alloc(%c6{{.*}}) : memref<?x32xf32>
// CHECK: call @projected_projected_router_launch(%{{.*}}, %{{.*}}, %[[A]])
// CHECK: call @projected_linear_launch
// CHECK: tensor.cast %{{.*}} : tensor<?x64xf32> to tensor<6x64xf32>
// CHECK-NOT: moe.projected_router
// CHECK: gpu.func @swiglu_up(%{{.*}}: memref<?x16xbf16>, %{{.*}}: memref<64x16xbf16>, %{{.*}}: memref<?x32xf32>)
// CHECK: scf.for
// CHECK: scf.for
// CHECK: math.exp
// CHECK: arith.divf
// CHECK: memref.store {{.*}} : memref<?x32xf32>
// CHECK: gpu.func @linear(%{{.*}}: memref<?x32xf32>, %{{.*}}: memref<64x32xbf16>, %{{.*}}: memref<?x64xf32>)
func.func @projected(%d: tensor<6x16xbf16>, %w1: tensor<64x16xbf16>, %w2: tensor<64x32xbf16>) -> tensor<6x64xf32> {
  %r = moe.projected_router %d, %w1, %w2 : (tensor<6x16xbf16>, tensor<64x16xbf16>, tensor<64x32xbf16>) -> tensor<6x64xf32>
  return %r : tensor<6x64xf32>
}

// -----

// A GEMM the tensor cores take (one dtype for x and W, I and O multiples of
// 16): a second kernel, linear_mma (the expert kernels' mma.sync GEMM on the
// token rows: 64 x 128 x 32 block tiles, grid ceil(T/64) x 512/128), which
// the host runs from mma-min-tokens (128) tokens on; the warp-per-output
// kernel below that. Each branch has its own result buffer.
// With mma-min-tokens=0 only the warp-per-output kernel is formed.
// RUN: moe-opt %s --split-input-file --convert-moe-linear-to-gpu=mma-min-tokens=0 | FileCheck %s --check-prefix=NOMMA
// CHECK-LABEL: func.func private @base_linear_mma_launch(memref<?x256xbf16>, memref<512x256xbf16>, memref<?x512xbf16>)
// CHECK-SAME: launches = [{args = array<i64: 0, 1, 2>, grid = array<i64: 2, 4>, grid_divisor = 64 : i64, kernel = @base_linear_mma::@linear_mma, threads = 128 : i64}]
// CHECK-LABEL: func.func private @base_linear_launch(memref<?x256xbf16>, memref<512x256xbf16>, memref<?x512xbf16>)
// CHECK-SAME: grid = array<i64: 2, 128>, grid_divisor = 4 : i64, kernel = @base_linear::@linear
// CHECK-LABEL: func.func @base
// CHECK: %[[T:.*]] = tensor.dim %arg0
// CHECK: %[[BIG:.*]] = arith.cmpi uge, %[[T]], %c1024
// CHECK: scf.if %[[BIG]] -> (tensor<?x512xbf16>)
// CHECK: %[[YM:.*]] = memref.alloc(%[[T]]) : memref<?x512xbf16>
// CHECK: call @base_linear_mma_launch(%{{.*}}, %{{.*}}, %[[YM]])
// CHECK: } else {
// CHECK: %[[YW:.*]] = memref.alloc(%[[T]]) : memref<?x512xbf16>
// CHECK: call @base_linear_launch(%{{.*}}, %{{.*}}, %[[YW]])
// CHECK: gpu.module @base_linear_mma
// CHECK: gpu.func @linear_mma(%{{.*}}: memref<?x256xbf16>, %{{.*}}: memref<512x256xbf16>, %{{.*}}: memref<?x512xbf16>) workgroup(%{{.*}} : memref<3x64x40xbf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<3x128x40xbf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}) kernel attributes {known_block_size = array<i32: 128, 1, 1>}
// Rows past T are zero-filled copies (source elements 0).
// CHECK: %[[ROWOK:.*]] = arith.cmpi ult, %{{.*}}, %dim : index
// CHECK: arith.select %[[ROWOK]], %c8{{.*}}, %c0
// CHECK: nvgpu.device_async_copy
// CHECK: nvgpu.ldmatrix
// CHECK: nvvm.mma.sync
// The epilogue: rows of real tokens, two adjacent columns per store.
// CHECK: vector.store %{{.*}}, %{{.*}}[%{{.*}}, %{{.*}}] {alignment = 4 : i64} : memref<?x512xbf16>, vector<2xbf16>
// NOMMA-LABEL: func.func @base
// NOMMA-NOT: scf.if
// NOMMA: call @base_linear_launch
// NOMMA-NOT: linear_mma
func.func @base(%x: tensor<?x256xbf16>, %w: tensor<512x256xbf16>) -> tensor<?x512xbf16> {
  %y = moe.linear %x, %w : (tensor<?x256xbf16>, tensor<512x256xbf16>) -> tensor<?x512xbf16>
  return %y : tensor<?x512xbf16>
}

// -----

// Wide GEMMs (O >= 64) that the tensor cores cannot take say why in a
// remark; the warp-per-output kernel serves every T.
// CHECK-LABEL: func.func @no_mma
// CHECK-NOT: scf.if
// CHECK: return
func.func @no_mma(%x: tensor<?x64xbf16>, %w: tensor<64x64xf32>, %w2: tensor<100x64xbf16>) -> (tensor<?x64xf32>, tensor<?x100xf32>) {
  // expected-remark @+1 {{moe.linear has no tensor-core kernel (the warp-per-output kernel serves every T): x and the weight differ in element type}}
  %a = moe.linear %x, %w : (tensor<?x64xbf16>, tensor<64x64xf32>) -> tensor<?x64xf32>
  // expected-remark @+1 {{moe.linear has no tensor-core kernel (the warp-per-output kernel serves every T): the input features (64) or the outputs (100) are not a multiple of 16}}
  %b = moe.linear %x, %w2 : (tensor<?x64xbf16>, tensor<100x64xbf16>) -> tensor<?x100xf32>
  return %a, %b : tensor<?x64xf32>, tensor<?x100xf32>
}

// -----

// The router GEMM that convert-moe-route-to-gpu keeps in its branch below
// the fused kernel's threshold carries moe.tokens_below: no tensor-core
// kernel for it when its threshold (here 1024 tokens) is not below that.
// CHECK-LABEL: func.func @below
// CHECK-NOT: scf.if
// CHECK: call @below_linear_launch
// CHECK-NOT: linear_mma
func.func @below(%x: tensor<?x256xbf16>, %w: tensor<512x256xbf16>) -> tensor<?x512xf32> {
  %y = moe.linear %x, %w {moe.tokens_below = 256 : i64} : (tensor<?x256xbf16>, tensor<512x256xbf16>) -> tensor<?x512xf32>
  return %y : tensor<?x512xf32>
}
