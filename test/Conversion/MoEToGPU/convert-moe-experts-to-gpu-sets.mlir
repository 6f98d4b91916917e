// convert-moe-experts-to-gpu forms up to three kernel sets for one
// moe.experts + moe.combine and lets the host choose by T * K: BM = 128
// tiles for many rows (large-tile-rows), the down reduction split for a
// few tokens (split-k-blocks, atomic combine only), the default set
// between. Mixtral-8x7B shape (H 4096, F 14336, E 8, K 2): the default
// down has 4096 / 128 = 32 column blocks, 2 x 32 < 512 at T = 1, so the
// host takes the few-token set while T * K < max(ceil(512 / 32), 8 E) = 64
// (T <= 31: an expert's rows fill half a 16-row tile on average). That set
// has BM = 16 tiles (a row of 4 warps; a token's pair is one row of its
// expert's tile, the rest padding), BK 128, gate/up 32 and down 64 columns
// (448 and 64 column blocks), 4 stages in 85 KiB of dynamic shared memory
// (vLLM's H100 configuration for this shape at a few tokens), and down's
// 112 K steps in 4 slices of 28 (grid y 64 x 4).
// RUN: moe-opt %s --convert-moe-experts-to-gpu="split-k-blocks=512 large-tile-rows=1024" | FileCheck %s
// RUN: moe-opt %s --convert-moe-experts-to-gpu="split-k-blocks=512" | FileCheck %s --check-prefix=SPLIT
// RUN: moe-opt %s --convert-moe-experts-to-gpu="split-k-blocks=512 large-tile-rows=1024 dynamic-smem=false" | FileCheck %s --check-prefix=STATIC
// RUN: moe-opt %s --convert-moe-experts-to-gpu="split-k-blocks=512 large-tile-rows=1024" | FileCheck %s --check-prefix=DYN
// RUN: moe-opt %s --convert-moe-experts-to-gpu="split-k-blocks=512 combine=gather" | FileCheck %s --check-prefix=GATHER
// RUN: moe-opt %s --convert-moe-experts-to-gpu="split-k-blocks=512 large-tile-rows=1024 wide-tiles=false" | FileCheck %s --check-prefix=NARROW
// RUN: moe-opt %s --convert-moe-experts-to-gpu="split-k-blocks=512 large-tile-rows=1024 chip=sm_86" | FileCheck %s --check-prefix=NARROW

// The BM = 128 set takes wide tiles where the chip allows 163 KiB of shared
// memory or more (sm_90, the default: 227 KiB): 8 warps (2 x 4, each 64 x
// 32 of gate and of up), gate and up 128 columns each, down 128, BK 64, three
// stages in dynamic shared memory (gate_up (128 + 256) x 72 x 2 B x 3 =
// 162 KiB, down 108 KiB; static shared memory stops at 48 KiB): the
// launches ask for the bytes, the kernels view one gpu.dynamic_shared_memory
// buffer as the A and B stage buffers back to back (A 3 x 128 x 72 bf16 =
// 55296 bytes). With dynamic-smem=false, two narrow stages in static shared
// memory; with wide-tiles=false or a 99 KiB chip (sm_86), 128 x 64 x 32
// tiles in 60 KiB.
// CHECK-LABEL: func.func private @layer_experts_bm128_launch
// CHECK-SAME: kernel = @layer_experts_bm128::@gate_up, smem = 165888 : i64, threads = 256
// CHECK-SAME: kernel = @layer_experts_bm128::@down, smem = 110592 : i64, threads = 256
// CHECK-SAME: tiles = array<i64: 128, 128, 128, 64, 64, 3>
// NARROW-LABEL: func.func private @layer_experts_bm128_launch
// NARROW-SAME: kernel = @layer_experts_bm128::@gate_up, smem = 61440 : i64, threads = 128
// NARROW-SAME: kernel = @layer_experts_bm128::@down, smem = 61440 : i64, threads = 128
// NARROW-SAME: tiles = array<i64: 128, 64, 128, 32, 32, 3>
// CHECK-LABEL: func.func private @layer_experts_splitk_launch
// CHECK-SAME: grid = array<i64: 8, 448>, kernel = @layer_experts_splitk::@gate_up, smem = 87040 : i64
// CHECK-SAME: grid = array<i64: 8, 256>, kernel = @layer_experts_splitk::@down, smem = 87040 : i64
// CHECK-SAME: tiles = array<i64: 16, 32, 64, 128, 128, 4, 4>
// CHECK-LABEL: func.func private @layer_experts_launch
// CHECK-SAME: grid = array<i64: 8, 32>, kernel = @layer_experts::@down
// CHECK-SAME: tiles = array<i64: 64, 64, 128, 32, 32, 3>}
// CHECK-LABEL: func.func @layer
// CHECK: %[[ROWS:.*]] = arith.muli %{{.*}}, %c2 : index
// CHECK: %[[BIG:.*]] = arith.cmpi uge, %[[ROWS]], %c1024 : index
// CHECK: scf.if %[[BIG]]
// CHECK: call @layer_experts_bm128_launch
// CHECK: } else {
// CHECK: %[[FEW:.*]] = arith.cmpi ult, %[[ROWS]], %c64 : index
// CHECK: scf.if %[[FEW]]
// CHECK: call @layer_experts_splitk_launch
// CHECK: } else {
// CHECK: call @layer_experts_launch
// The split down kernel: of the grid's y index (in the grouped block order,
// checked in convert-moe-experts-to-gpu.mlir: the last divui of it), slice =
// y / 64, column block = y % 64, 28 K steps from slice * 28; the down bias
// would be added by slice 0 only.
// CHECK: gpu.module @layer_experts_splitk
// CHECK: gpu.func @down(
// CHECK: gpu.block_id  y
// CHECK: arith.remui
// CHECK: arith.remui
// CHECK-NEXT: arith.addi
// CHECK-NEXT: %[[BY:.*]] = arith.divui %{{.*}}, %{{.*}} : index
// CHECK-NEXT: %c64 = arith.constant 64 : index
// CHECK-NEXT: %[[SLICE:.*]] = arith.divui %[[BY]], %c64
// CHECK: arith.remui %[[BY]], %c64
// CHECK: arith.muli %[[SLICE]], %c28
// CHECK: scf.for {{.*}} to %c28{{.*}} step %c1

// Without large-tile-rows: two sets.
// SPLIT: arith.cmpi ult, %{{.*}}, %c64 : index
// SPLIT: call @layer_experts_splitk_launch
// SPLIT: call @layer_experts_launch
// SPLIT-NOT: bm128

// The gather combine has no atomics to add slices with: one set.
// GATHER-NOT: splitk
// GATHER: call @layer_experts_launch
// GATHER-NOT: splitk

func.func @layer(%x: tensor<?x4096xbf16>, %i: tensor<?x2xi32>, %g: tensor<8x14336x4096xbf16>, %u: tensor<8x14336x4096xbf16>, %d: tensor<8x4096x14336xbf16>, %w: tensor<?x2xf32>) -> tensor<?x4096xbf16> {
  %s = moe.experts %x, %i gate(%g : tensor<8x14336x4096xbf16>) up(%u : tensor<8x14336x4096xbf16>) down(%d : tensor<8x4096x14336xbf16>) {activation = #moe.activation<swiglu>} : tensor<?x4096xbf16>, tensor<?x2xi32> -> tensor<?x2x4096xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x4096xf32>) : tensor<?x4096xbf16>
  return %y : tensor<?x4096xbf16>
}

// STATIC-LABEL: func.func private @layer_experts_bm128_launch
// STATIC-NOT: smem =
// STATIC-SAME: tiles = array<i64: 128, 64, 128, 32, 32, 2>
// STATIC-NOT: gpu.dynamic_shared_memory

// DYN: gpu.module @layer_experts_bm128
// DYN: gpu.func @gate_up(
// DYN-NOT: workgroup(
// DYN: %[[DYN:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// DYN: memref.view %[[DYN]][%c0{{.*}}][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<3x128x72xbf16, #gpu.address_space<workgroup>>
// DYN: memref.view %[[DYN]][%c55296{{.*}}][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<3x128x72xbf16, #gpu.address_space<workgroup>>
// DYN: memref.view %[[DYN]][%c110592{{.*}}][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<3x128x72xbf16, #gpu.address_space<workgroup>>
// The few-token set (4 x 16 x 136 A, 4 x 32 x 136 gate and up stages):
// DYN: gpu.module @layer_experts_splitk
// DYN: gpu.func @gate_up(
// DYN-NOT: workgroup(
// DYN: %[[DYNS:.*]] = gpu.dynamic_shared_memory
// DYN: memref.view %[[DYNS]][%c0{{.*}}][] : {{.*}} to memref<4x16x136xbf16, #gpu.address_space<workgroup>>
// DYN: memref.view %[[DYNS]][%c17408{{.*}}][] : {{.*}} to memref<4x32x136xbf16, #gpu.address_space<workgroup>>
// DYN: memref.view %[[DYNS]][%c52224{{.*}}][] : {{.*}} to memref<4x32x136xbf16, #gpu.address_space<workgroup>>
// DYN: gpu.module @layer_experts
