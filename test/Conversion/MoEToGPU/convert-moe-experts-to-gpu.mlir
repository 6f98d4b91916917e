// convert-moe-experts-to-gpu: an eligible moe.experts becomes three kernels
// in a gpu.module of its own and, in its place, host code on buffers ending
// in a call of a launch declaration (expanded after bufferization by
// moe-gpu-launch-expert-kernels); ineligible ops stay with a remark.
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu --verify-diagnostics | FileCheck %s
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu="tile-m=128 tile-n-gate-up=32 tile-n-down=32 tile-k=16 stages=2" --verify-diagnostics | FileCheck %s --check-prefix=OPTS
// The moe.combine reading the slots is fused in by default (combine=atomic);
// combine=gather fuses it as a segmented reduction, combine=none leaves it.
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu="combine=gather" --verify-diagnostics | FileCheck %s --check-prefix=GATHER
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu="combine=none" 2>/dev/null | FileCheck %s --check-prefix=NONE
// group-m=1: the plain block order (row tile = block x, column block = y).
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu="group-m=1" 2>/dev/null | FileCheck %s --check-prefix=PLAIN
// PLAIN: gpu.func @gate_up(
// PLAIN-NEXT: %[[BX:.+]] = gpu.block_id  x
// PLAIN-NEXT: gpu.block_id  y
// PLAIN-NOT: gpu.grid_dim
// PLAIN: arith.cmpi ult, %[[BX]],
// RUN: not moe-opt %s --split-input-file --convert-moe-experts-to-gpu="combine=sum" 2>&1 | FileCheck %s --check-prefix=BADMODE
// BADMODE: error: convert-moe-experts-to-gpu: combine must be none, atomic or gather (got 'sum')

// bf16 SwiGLU, E = 8, H = 64, F = 128, K = 2: tiles chosen from the shape
// (BM 64 for E <= 16, BN 64 for F and for H, BK 32, 3 stages).
// CHECK-LABEL: module attributes {gpu.container_module}
// CHECK: func.func private @swiglu_experts_launch(memref<?x64xbf16>, memref<?x2xi32>, memref<8x128x64xbf16>, memref<8x128x64xbf16>, memref<8x64x128xbf16>, memref<?x2x64xf32>, memref<?xi32>, memref<?xi32>, memref<1xi32>, memref<?x128xbf16>)
// Each launch names its kernel, the call operands it takes, its threads and
// its grid ([operand whose dim 0 is the x extent, or -1 for 1; y]).
// CHECK-SAME: moe.expert_kernels = {combine = "none", launches = [{args = array<i64: 1, 5, 6, 7, 8>, grid = array<i64: -1, 1>, kernel = @swiglu_experts::@align, threads = 1024 : i64}, {args = array<i64: 0, 2, 3, 6, 7, 8, 9>, grid = array<i64: 7, 2>, kernel = @swiglu_experts::@gate_up, threads = 128 : i64}, {args = array<i64: 9, 4, 6, 7, 8, 5>, grid = array<i64: 7, 1>, kernel = @swiglu_experts::@down, threads = 128 : i64}], tiles = array<i64: 64, 64, 64, 32, 32, 3>}
// OPTS: tiles = array<i64: 128, 32, 32, 16, 16, 2>
// CHECK-LABEL: func.func @swiglu(
// CHECK-SAME: %[[X:[^:]+]]: tensor<?x64xbf16>, %[[I:[^:]+]]: tensor<?x2xi32>, %[[G:[^:]+]]: tensor<8x128x64xbf16>, %[[U:[^:]+]]: tensor<8x128x64xbf16>, %[[D:[^:]+]]: tensor<8x64x128xbf16>
// The tile bound ceil(T*K/BM) + E and its rows are computed from T alone.
// CHECK: %[[T:.+]] = tensor.dim %[[X]], %{{.+}} : tensor<?x64xbf16>
// CHECK: %[[P:.+]] = arith.muli %[[T]], %[[C2:.+]] : index
// CHECK: %[[CD:.+]] = arith.ceildivui %[[P]], %[[C64:.+]] : index
// CHECK: %[[TILES:.+]] = arith.addi %[[CD]], %{{.+}} : index
// CHECK: %[[ROWS:.+]] = arith.muli %[[TILES]], %{{.+}} : index
// CHECK-DAG: %[[XB:.+]] = bufferization.to_buffer %[[X]] read_only
// CHECK-DAG: %[[IB:.+]] = bufferization.to_buffer %[[I]] read_only
// CHECK-DAG: %[[GB:.+]] = bufferization.to_buffer %[[G]] read_only
// CHECK-DAG: %[[UB:.+]] = bufferization.to_buffer %[[U]] read_only
// CHECK-DAG: %[[DB:.+]] = bufferization.to_buffer %[[D]] read_only
// CHECK: %[[OUT:.+]] = memref.alloc(%[[T]]) : memref<?x2x64xf32>
// CHECK: %[[SORTED:.+]] = memref.alloc(%[[ROWS]]) : memref<?xi32>
// CHECK: %[[TE:.+]] = memref.alloc(%[[TILES]]) : memref<?xi32>
// CHECK: %[[META:.+]] = memref.alloc() : memref<1xi32>
// CHECK: %[[H:.+]] = memref.alloc(%[[ROWS]]) : memref<?x128xbf16>
// CHECK: call @swiglu_experts_launch(%[[XB]], %[[IB]], %[[GB]], %[[UB]], %[[DB]], %[[OUT]], %[[SORTED]], %[[TE]], %[[META]], %[[H]])
// CHECK: %[[S:.+]] = bufferization.to_tensor %[[OUT]] restrict writable : memref<?x2x64xf32> to tensor<?x2x64xf32>
// CHECK-NOT: moe.experts
// CHECK: return %[[S]]
//
// The alignment kernel: one block of 1024 threads, shared counters.
// CHECK: gpu.module @swiglu_experts {
// CHECK: gpu.func @align(%{{.+}}: memref<?x2xi32>, %{{.+}}: memref<?x2x64xf32>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<1xi32>) workgroup(%{{.+}} : memref<8xi32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64},
// CHECK-SAME: kernel attributes {known_block_size = array<i32: 1024, 1, 1>}
// CHECK: memref.atomic_rmw addi
// CHECK: gpu.barrier
// CHECK: memref.atomic_rmw addi
// CHECK: gpu.return
// gate_up: A rows gathered by 16-byte cp.async (zero fill for padding rows),
// 3 stages of 64x40 (A) and two 64x40 (gate, up) shared tiles, ldmatrix and
// bf16 mma.sync with f32 accumulators; the epilogue writes h in bf16.
// CHECK: gpu.func @gate_up(%{{.+}}: memref<?x64xbf16>, %{{.+}}: memref<8x128x64xbf16>, %{{.+}}: memref<8x128x64xbf16>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<1xi32>, %{{.+}}: memref<?x128xbf16>) workgroup(%{{.+}} : memref<3x64x40xbf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.+}} : memref<3x64x40xbf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.+}} : memref<3x64x40xbf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}) kernel attributes {known_block_size = array<i32: 128, 1, 1>}
// Grouped block order: G = clamp(ceil(grid x / E), 1, 16 MiB of A rows /
// (64 rows x 64 x 2 bytes) = 2048) row tiles per group; linear id L =
// y * grid x + x; tile = first + (L mod G gy) mod size, column block =
// (L mod G gy) / size, size = min(grid x - first, G).
// CHECK: %[[BX:.+]] = gpu.block_id  x
// CHECK: %[[BY:.+]] = gpu.block_id  y
// CHECK: %[[GX:.+]] = gpu.grid_dim  x
// CHECK: %[[GY:.+]] = gpu.grid_dim  y
// CHECK: %[[GX7:.+]] = arith.addi %[[GX]], %{{.+}} : index
// CHECK: %[[CD:.+]] = arith.divui %[[GX7]], %{{.+}} : index
// CHECK: %[[G1:.+]] = arith.maxui %[[CD]], %{{.+}} : index
// CHECK: %[[G:.+]] = arith.minui %[[G1]], %[[MAXG:.+]] : index
// CHECK: %[[LY:.+]] = arith.muli %[[BY]], %[[GX]] : index
// CHECK: %[[L:.+]] = arith.addi %[[LY]], %[[BX]] : index
// CHECK: %[[PER:.+]] = arith.muli %[[G]], %[[GY]] : index
// CHECK: %[[GI:.+]] = arith.divui %[[L]], %[[PER]] : index
// CHECK: %[[FIRST:.+]] = arith.muli %[[GI]], %[[G]] : index
// CHECK: %[[LEFT:.+]] = arith.subi %[[GX]], %[[FIRST]] : index
// CHECK: %[[SIZE:.+]] = arith.minui %[[LEFT]], %[[G]] : index
// CHECK: %[[R:.+]] = arith.remui %[[L]], %[[PER]] : index
// CHECK: %[[RT:.+]] = arith.remui %[[R]], %[[SIZE]] : index
// CHECK: %[[TILE:.+]] = arith.addi %[[FIRST]], %[[RT]] : index
// CHECK: %[[COL:.+]] = arith.divui %[[R]], %[[SIZE]] : index
// CHECK: arith.cmpi ult, %[[TILE]],
// CHECK: nvgpu.device_async_copy %{{.+}}[%{{.+}}, %{{.+}}], %{{.+}}[%{{.+}}, %{{.+}}, %{{.+}}], 8, %{{.+}} {bypassL1} : memref<?x64xbf16> to memref<3x64x40xbf16, #gpu.address_space<workgroup>>
// CHECK: nvvm.cp.async.commit.group
// CHECK: scf.for
// CHECK: nvvm.cp.async.wait.group 1
// CHECK: nvgpu.ldmatrix {{.+}} {numTiles = 4 : i32, transpose = false} : memref<3x64x40xbf16, #gpu.address_space<workgroup>> -> vector<4x2xbf16>
// CHECK: nvvm.mma.sync {{.+}} multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK: math.exp
// CHECK: arith.truncf {{.+}} : f32 to bf16
// CHECK: vector.store {{.+}} {alignment = 4 : i64} : memref<?x128xbf16>, vector<2xbf16>
// down: h rows (no gather) times down^T, f32 pairs into the T x K x H result.
// CHECK: gpu.func @down(%{{.+}}: memref<?x128xbf16>, %{{.+}}: memref<8x64x128xbf16>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<1xi32>, %{{.+}}: memref<?x2x64xf32>)
// CHECK: nvvm.mma.sync
// CHECK: vector.store {{.+}} {alignment = 8 : i64} : memref<?x2x64xf32>, vector<2xf32>
func.func @swiglu(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %g: tensor<8x128x64xbf16>,
                  %u: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>) -> tensor<?x2x64xf32> {
  %s = moe.experts %x, %i gate(%g : tensor<8x128x64xbf16>) up(%u : tensor<8x128x64xbf16>)
      down(%d : tensor<8x64x128xbf16>) {activation = #moe.activation<swiglu>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

// -----

// f16, not gated (gelu), E = 32 (BM 32), F = 96 (BN 32), a static token
// count (casts to the kernels' dynamic types), experts offset by 4.
// CHECK-LABEL: func.func private @gelu_experts_launch(memref<?x64xf16>, memref<?x4xi32>, memref<32x96x64xf16>, memref<32x64x96xf16>,
// CHECK-SAME: tiles = array<i64: 32, 32, 64, 32, 32, 3>
// CHECK-LABEL: func.func @gelu(
// CHECK: memref.cast %{{.+}} : memref<5x64xf16> to memref<?x64xf16>
// CHECK: call @gelu_experts_launch(
// CHECK: %[[R:.+]] = tensor.cast %{{.+}} : tensor<?x4x64xf32> to tensor<5x4x64xf32>
// CHECK: return %[[R]]
// CHECK: gpu.func @align(
// CHECK: arith.subi %{{.+}}, %c4_i32
// CHECK: gpu.func @gate_up(%{{.+}}: memref<?x64xf16>, %{{.+}}: memref<32x96x64xf16>, %{{.+}}: memref<?xi32>,
// CHECK: nvvm.mma.sync {{.+}} shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (vector<2xf16>, vector<2xf16>, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK: math.erf
// OPTS-LABEL: func.func private @gelu_experts_launch(
// OPTS-SAME: tiles = array<i64: 128, 32, 32, 16, 16, 2>
func.func @gelu(%x: tensor<5x64xf16>, %i: tensor<5x4xi32>, %u: tensor<32x96x64xf16>,
                %d: tensor<32x64x96xf16>) -> tensor<5x4x64xf32> {
  %s = moe.experts %x, %i up(%u : tensor<32x96x64xf16>) down(%d : tensor<32x64x96xf16>)
      {activation = #moe.activation<gelu>, expert_offset = 4 : i64}
      : tensor<5x64xf16>, tensor<5x4xi32> -> tensor<5x4x64xf32>
  return %s : tensor<5x4x64xf32>
}

// -----

// f32 experts: tf32 mma.sync m16n8k8 (3xTF32). BK 16 (64 bytes a row, as
// bf16's BK 32), rows padded by 16 bytes (4 f32), 16-byte cp.async of 4
// elements, ldmatrix of 32-bit elements; each operand register split into
// big = tf32(v) and small = tf32(v - big) (cvt.rna, low 13 bits cleared),
// three MMAs per tile (small x big terms first), h kept in f32 (64-bit
// stores). Numbers: experts-emulate.test (f32 cases).
// CHECK-LABEL: func.func private @f32_experts_launch(memref<?x64xf32>,
// CHECK-SAME: tiles = array<i64: 64, 64, 64, 16, 16, 3>
// CHECK-LABEL: func.func @f32(
// CHECK-NOT: moe.experts
// CHECK: call @f32_experts_launch
// CHECK: gpu.func @gate_up({{.+}}) workgroup(%{{.+}} : memref<3x64x20xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}
// CHECK: nvgpu.device_async_copy {{.+}}, 4, {{.+}} {bypassL1} : memref<?x64xf32> to memref<3x64x20xf32, #gpu.address_space<workgroup>>
// CHECK: %[[FRAG:.+]] = nvgpu.ldmatrix {{.+}} {numTiles = 4 : i32, transpose = false} : memref<3x64x20xf32, #gpu.address_space<workgroup>> -> vector<4x1xf32>
// CHECK: %[[V:.+]] = vector.extract %[[FRAG]][0, 0] : f32 from vector<4x1xf32>
// CHECK: %[[BIGT:.+]] = nvvm.convert.float.to.tf32 %[[V]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK: %[[BIG:.+]] = arith.andi %[[BIGT]], %{{.+}} : i32
// CHECK: %[[BIGF:.+]] = arith.bitcast %[[BIG]] : i32 to f32
// CHECK: %[[REST:.+]] = arith.subf %[[V]], %[[BIGF]] : f32
// CHECK: %[[SMALLT:.+]] = nvvm.convert.float.to.tf32 %[[REST]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK: %[[SMALL:.+]] = arith.andi %[[SMALLT]], %{{.+}} : i32
// CHECK: %[[M1:.+]] = nvvm.mma.sync A[%[[BIG]], {{.+}}]  B[{{.+}}]  C[{{.+}}]  {{{.+}}multiplicandAPtxType = #nvvm.mma_type<tf32>, multiplicandBPtxType = #nvvm.mma_type<tf32>, shape = #nvvm.shape<m = 16, n = 8, k = 8>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK: nvvm.mma.sync A[%[[SMALL]], {{.+}}]  B[{{.+}}]  C[{{.+}}]  {{{.+}}tf32
// CHECK: nvvm.mma.sync A[%[[BIG]], {{.+}}]  B[{{.+}}]  C[{{.+}}]  {{{.+}}tf32
// CHECK-NOT: arith.truncf
// CHECK: vector.store {{.+}} {alignment = 8 : i64} : memref<?x128xf32>, vector<2xf32>
// CHECK: gpu.func @down(
func.func @f32(%x: tensor<?x64xf32>, %i: tensor<?x2xi32>, %g: tensor<8x128x64xf32>,
               %u: tensor<8x128x64xf32>, %d: tensor<8x64x128xf32>) -> tensor<?x2x64xf32> {
  %s = moe.experts %x, %i gate(%g : tensor<8x128x64xf32>) up(%u : tensor<8x128x64xf32>)
      down(%d : tensor<8x64x128xf32>) {activation = #moe.activation<swiglu>}
      : tensor<?x64xf32>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

// -----

// gpt-oss: swiglu_clamped with gate, up and down biases (E x F, E x F, E x H,
// the weights' dtype), its combine fused. The biases follow the weights in
// the call and in the GEMM kernels' arguments; gate_up adds the gate and up
// biases (f32) before the clamped activation, computed as the C++ reference
// does: (clamp(u, -limit, limit) + 1) * min(g, limit) * sigmoid(alpha *
// min(g, limit)); down adds its bias (part of Expert_e(x)) before the routing
// weight multiplies the row.
// CHECK-LABEL: func.func private @gpt_oss_experts_launch(memref<?x64xbf16>, memref<?x2xi32>, memref<8x128x64xbf16>, memref<8x128x64xbf16>, memref<8x64x128xbf16>, memref<8x128xbf16>, memref<8x128xbf16>, memref<8x64xbf16>, memref<?x2xf32>,
// CHECK-SAME: {args = array<i64: 0, 2, 3, 5, 6, 10, 11, 12, 13, 14>, grid = array<i64: 11, 2>, kernel = @gpt_oss_experts::@gate_up, threads = 128 : i64}, {args = array<i64: 13, 4, 7, 10, 11, 12, 8, 14>, grid = array<i64: 11, 1>, kernel = @gpt_oss_experts::@down, threads = 128 : i64}
// CHECK-LABEL: func.func @gpt_oss(
// CHECK-SAME: %[[GB:[^:]+]]: tensor<8x128xbf16>, %[[UB:[^:]+]]: tensor<8x128xbf16>, %[[DB:[^:]+]]: tensor<8x64xbf16>
// CHECK-DAG: bufferization.to_buffer %[[GB]] read_only : tensor<8x128xbf16> to memref<8x128xbf16>
// CHECK-DAG: bufferization.to_buffer %[[UB]] read_only : tensor<8x128xbf16> to memref<8x128xbf16>
// CHECK-DAG: bufferization.to_buffer %[[DB]] read_only : tensor<8x64xbf16> to memref<8x64xbf16>
// CHECK: call @gpt_oss_experts_launch(
// CHECK-NOT: moe.experts
// CHECK: gpu.func @gate_up(%{{[^:]+}}: memref<?x64xbf16>, %{{[^:]+}}: memref<8x128x64xbf16>, %{{[^:]+}}: memref<8x128x64xbf16>, %[[KGB:[^:]+]]: memref<8x128xbf16>, %[[KUB:[^:]+]]: memref<8x128xbf16>, %{{[^:]+}}: memref<?xi32>,
// CHECK: nvvm.mma.sync
// CHECK: %[[GBV:.+]] = memref.load %[[KGB]][%{{.+}}, %{{.+}}] : memref<8x128xbf16>
// CHECK: %[[GBF:.+]] = arith.extf %[[GBV]] : bf16 to f32
// CHECK: %[[UBV:.+]] = memref.load %[[KUB]][%{{.+}}, %{{.+}}] : memref<8x128xbf16>
// CHECK: %[[UBF:.+]] = arith.extf %[[UBV]] : bf16 to f32
// CHECK: %[[UP:.+]] = arith.addf %{{.+}}, %[[UBF]] : f32
// CHECK: %[[GATE:.+]] = arith.addf %{{.+}}, %[[GBF]] : f32
// CHECK: %[[LIM:.+]] = arith.constant 7.000000e+00 : f32
// CHECK: %[[GC:.+]] = arith.minimumf %[[GATE]], %[[LIM]] : f32
// CHECK: %[[NLIM:.+]] = arith.constant -7.000000e+00 : f32
// CHECK: %[[UL:.+]] = arith.maximumf %[[UP]], %[[NLIM]] : f32
// CHECK: %[[UC:.+]] = arith.minimumf %[[UL]], %{{.+}} : f32
// CHECK: %[[ALPHA:.+]] = arith.constant 1.702000e+00 : f32
// CHECK: %[[AG:.+]] = arith.mulf %[[ALPHA]], %[[GC]] : f32
// CHECK: arith.negf %[[AG]]
// CHECK: math.exp
// CHECK: %[[SIG:.+]] = arith.divf
// CHECK: %[[U1:.+]] = arith.addf %[[UC]], %{{.+}} : f32
// CHECK: %[[P:.+]] = arith.mulf %[[U1]], %[[GC]] : f32
// CHECK: %[[H:.+]] = arith.mulf %[[P]], %[[SIG]] : f32
// CHECK: arith.truncf %[[H]] : f32 to bf16
// CHECK: gpu.func @down(%{{[^:]+}}: memref<?x128xbf16>, %{{[^:]+}}: memref<8x64x128xbf16>, %[[KDB:[^:]+]]: memref<8x64xbf16>, %{{[^:]+}}: memref<?xi32>,
// CHECK: %[[DBV:.+]] = memref.load %[[KDB]][%{{.+}}, %{{.+}}] : memref<8x64xbf16>
// CHECK: %[[DBF:.+]] = arith.extf %[[DBV]] : bf16 to f32
// CHECK: %[[W:.+]] = memref.load %{{.+}} : memref<?x2xf32>
// CHECK: %[[V:.+]] = arith.addf %{{.+}}, %[[DBF]] : f32
// CHECK: %[[WV:.+]] = arith.mulf %[[W]], %[[V]] : f32
// CHECK: llvm.atomicrmw fadd %{{.+}}, %[[WV]]
// Gather: the rows stored in sorted order already hold the bias.
// GATHER-LABEL: func.func private @gpt_oss_experts_launch(
// GATHER: gpu.func @down(%{{[^:]+}}: memref<?x128xbf16>, %{{[^:]+}}: memref<8x64x128xbf16>, %[[KDB:[^:]+]]: memref<8x64xbf16>,
// GATHER: %[[DBV:.+]] = memref.load %[[KDB]]
// GATHER: %[[DBF:.+]] = arith.extf %[[DBV]] : bf16 to f32
// GATHER: %[[V:.+]] = arith.addf %{{.+}}, %[[DBF]] : f32
// GATHER: vector.from_elements %[[V]], %{{.+}} : vector<2xf32>
// With combine=none: into the slots.
// NONE-LABEL: func.func private @gpt_oss_experts_launch(
// NONE: gpu.func @down(%{{[^:]+}}: memref<?x128xbf16>, %{{[^:]+}}: memref<8x64x128xbf16>, %[[KDB:[^:]+]]: memref<8x64xbf16>,
// NONE: %[[DBV:.+]] = memref.load %[[KDB]]
// NONE: %[[DBF:.+]] = arith.extf %[[DBV]] : bf16 to f32
// NONE: %[[V:.+]] = arith.addf %{{.+}}, %[[DBF]] : f32
// NONE: vector.from_elements %[[V]], %{{.+}} : vector<2xf32>
// NONE: vector.store {{.+}} : memref<?x2x64xf32>, vector<2xf32>
func.func @gpt_oss(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %g: tensor<8x128x64xbf16>,
                   %u: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>,
                   %gb: tensor<8x128xbf16>, %ub: tensor<8x128xbf16>,
                   %db: tensor<8x64xbf16>, %w: tensor<?x2xf32>) -> tensor<?x64xbf16> {
  %s = moe.experts %x, %i gate(%g : tensor<8x128x64xbf16>) up(%u : tensor<8x128x64xbf16>)
      down(%d : tensor<8x64x128xbf16>) gate_bias(%gb : tensor<8x128xbf16>)
      up_bias(%ub : tensor<8x128xbf16>) down_bias(%db : tensor<8x64xbf16>)
      {activation = #moe.activation<swiglu_clamped>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x64xf32>) : tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}

// -----

// swiglu_clamped's alpha and limit are the op's; f16 up bias only.
// CHECK-LABEL: func.func @clamped_f16
// CHECK: gpu.func @gate_up(%{{[^:]+}}: memref<?x64xf16>, %{{[^:]+}}: memref<4x64x64xf16>, %{{[^:]+}}: memref<4x64x64xf16>, %{{[^:]+}}: memref<4x64xf16>, %{{[^:]+}}: memref<?xi32>,
// CHECK: arith.extf %{{.+}} : f16 to f32
// CHECK: arith.constant 2.500000e+00 : f32
// CHECK: arith.minimumf
// CHECK: arith.constant -2.500000e+00 : f32
// CHECK: arith.constant 1.250000e+00 : f32
// CHECK: gpu.func @down(%{{[^:]+}}: memref<?x64xf16>, %{{[^:]+}}: memref<4x64x64xf16>, %{{[^:]+}}: memref<?xi32>,
func.func @clamped_f16(%x: tensor<?x64xf16>, %i: tensor<?x2xi32>, %g: tensor<4x64x64xf16>,
                       %u: tensor<4x64x64xf16>, %d: tensor<4x64x64xf16>,
                       %ub: tensor<4x64xf16>) -> tensor<?x2x64xf32> {
  %s = moe.experts %x, %i gate(%g : tensor<4x64x64xf16>) up(%u : tensor<4x64x64xf16>)
      down(%d : tensor<4x64x64xf16>) up_bias(%ub : tensor<4x64xf16>)
      {activation = #moe.activation<swiglu_clamped>, alpha = 1.25 : f64, limit = 2.5 : f64}
      : tensor<?x64xf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

// -----

// Biases that are compile-time constants (host globals) keep the generic path.
// CHECK-LABEL: func.func @constant_bias
// CHECK: moe.experts
func.func @constant_bias(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %u: tensor<8x128x64xbf16>,
                         %d: tensor<8x64x128xbf16>) -> tensor<?x2x64xf32> {
  %db = arith.constant dense<1.0> : tensor<8x64xbf16>
  // expected-remark @+1 {{moe.experts keeps the generic GPU path: the expert biases are compile-time constants}}
  %s = moe.experts %x, %i up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>)
      down_bias(%db : tensor<8x64xbf16>) {activation = #moe.activation<relu>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

// -----

// CHECK-LABEL: func.func @constant_weights
// CHECK: moe.experts
func.func @constant_weights(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>,
                            %d: tensor<8x64x128xbf16>) -> tensor<?x2x64xf32> {
  %u = arith.constant dense<1.0> : tensor<8x128x64xbf16>
  // expected-remark @+1 {{moe.experts keeps the generic GPU path: the weights are compile-time constants}}
  %s = moe.experts %x, %i up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>)
      {activation = #moe.activation<relu>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

// -----

// F = 40 has no column tile.
// CHECK-LABEL: func.func @odd_f
// CHECK: moe.experts
func.func @odd_f(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %u: tensor<8x40x64xbf16>,
                 %d: tensor<8x64x40xbf16>) -> tensor<?x2x64xf32> {
  // expected-remark @+1 {{moe.experts keeps the generic GPU path: F = 40 has no gate/up column tile (multiple of 16 dividing F)}}
  %s = moe.experts %x, %i up(%u : tensor<8x40x64xbf16>) down(%d : tensor<8x64x40xbf16>)
      {activation = #moe.activation<relu2>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}

// -----

// The combine fused, atomic mode (bf16 result, an f32 addend such as a
// shared expert). Call operands: x 0, idx 1, gate 2, up 3, down 4, weights 5,
// addend 6, y 7, sorted 8, tile table 9, meta 10, h 11, f32 accumulator 12.
// align has no slots result to zero; gate_up (whole grid) sets the
// accumulator to the addend; down adds w * row with f32 atomics; finish
// (a block per token, H/4 = 16 threads rounded up to a warp) rounds it.
// CHECK-LABEL: func.func private @fused_experts_launch(memref<?x64xbf16>, memref<?x2xi32>, memref<8x128x64xbf16>, memref<8x128x64xbf16>, memref<8x64x128xbf16>, memref<?x2xf32>, memref<?x64xf32>, memref<?x64xbf16>, memref<?xi32>, memref<?xi32>, memref<1xi32>, memref<?x128xbf16>, memref<?x64xf32>)
// CHECK-SAME: combine = "atomic", launches = [{args = array<i64: 1, 8, 9, 10>, grid = array<i64: -1, 1>, kernel = @fused_experts::@align, threads = 1024 : i64}, {args = array<i64: 0, 2, 3, 8, 9, 10, 11, 12, 6>, grid = array<i64: 9, 2>, kernel = @fused_experts::@gate_up, threads = 128 : i64}, {args = array<i64: 11, 4, 8, 9, 10, 5, 12>, grid = array<i64: 9, 1>, kernel = @fused_experts::@down, threads = 128 : i64}, {args = array<i64: 12, 7>, grid = array<i64: 7, 1>, kernel = @fused_experts::@finish, threads = 32 : i64}]
// CHECK-LABEL: func.func @fused(
// CHECK-SAME: %[[X:[^:]+]]: tensor<?x64xbf16>, %[[I:[^:]+]]: tensor<?x2xi32>, %[[W:[^:]+]]: tensor<?x2xf32>, %{{[^:]+}}: tensor<8x128x64xbf16>, %{{[^:]+}}: tensor<8x128x64xbf16>, %{{[^:]+}}: tensor<8x64x128xbf16>, %[[SH:[^:]+]]: tensor<?x64xf32>
// CHECK-DAG: %[[WB:.+]] = bufferization.to_buffer %[[W]] read_only
// CHECK-DAG: %[[SHB:.+]] = bufferization.to_buffer %[[SH]] read_only
// CHECK: %[[Y:.+]] = memref.alloc(%{{.+}}) : memref<?x64xbf16>
// CHECK: %[[ACC:.+]] = memref.alloc(%{{.+}}) : memref<?x64xf32>
// CHECK: call @fused_experts_launch({{.+}}, %[[WB]], %[[SHB]], %[[Y]], {{.+}}, %[[ACC]])
// CHECK: %[[R:.+]] = bufferization.to_tensor %[[Y]] restrict writable : memref<?x64xbf16> to tensor<?x64xbf16>
// CHECK-NOT: moe.combine
// CHECK: return %[[R]]
// CHECK: gpu.func @align(%{{.+}}: memref<?x2xi32>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<1xi32>) workgroup
// CHECK: gpu.func @gate_up({{.+}}, %{{.+}}: memref<?x128xbf16>, %[[GACC:[^:]+]]: memref<?x64xf32>, %[[GSH:[^:]+]]: memref<?x64xf32>) workgroup
// CHECK: gpu.grid_dim  x
// CHECK: vector.load %[[GSH]][{{.+}}] {alignment = 16 : i64} : memref<?x64xf32>, vector<4xf32>
// CHECK: vector.store {{.+}}, %[[GACC]][{{.+}}] {alignment = 16 : i64} : memref<?x64xf32>, vector<4xf32>
// CHECK: nvvm.mma.sync
// CHECK: gpu.func @down({{.+}}, %[[DW:[^:]+]]: memref<?x2xf32>, %[[DACC:[^:]+]]: memref<?x64xf32>) workgroup
// CHECK: memref.load %[[DW]]
// CHECK: memref.extract_aligned_pointer_as_index %[[DACC]]
// CHECK: llvm.atomicrmw fadd %{{.+}}, %{{.+}} syncscope("device") monotonic {alignment = 4 : i64} : !llvm.ptr<1>, f32
// CHECK: gpu.func @finish(%{{.+}}: memref<?x64xf32>, %{{.+}}: memref<?x64xbf16>) kernel attributes {known_block_size = array<i32: 32, 1, 1>}
// CHECK: arith.truncf {{.+}} : vector<4xf32> to vector<4xbf16>
// CHECK: vector.store {{.+}} {alignment = 8 : i64} : memref<?x64xbf16>, vector<4xbf16>
//
// Gather mode: align also writes each pair's row (operand 13), down stores
// rows in sorted order (operand 12, no atomics), reduce gathers them back
// per token: sum_k w * row (fma, -1 rows skipped), plus the addend, rounded.
// GATHER-LABEL: func.func private @fused_experts_launch(
// GATHER-SAME: combine = "gather", launches = [{args = array<i64: 1, 8, 9, 10, 13>, grid = array<i64: -1, 1>, kernel = @fused_experts::@align, threads = 1024 : i64}, {args = array<i64: 0, 2, 3, 8, 9, 10, 11>, grid = array<i64: 9, 2>, kernel = @fused_experts::@gate_up, threads = 128 : i64}, {args = array<i64: 11, 4, 8, 9, 10, 12>, grid = array<i64: 9, 1>, kernel = @fused_experts::@down, threads = 128 : i64}, {args = array<i64: 12, 13, 5, 6, 7>, grid = array<i64: 7, 1>, kernel = @fused_experts::@reduce, threads = 32 : i64}]
// GATHER: %[[ROWS:.+]] = memref.alloc(%{{.+}}) : memref<?x64xf32>
// GATHER: %[[POS:.+]] = memref.alloc(%{{.+}}) : memref<?xi32>
// GATHER: call @fused_experts_launch({{.+}}, %[[ROWS]], %[[POS]])
// GATHER-NOT: moe.combine
// GATHER: gpu.func @align({{.+}}, %[[APOS:[^:]+]]: memref<?xi32>) workgroup
// GATHER: memref.store %c-1_i32{{.*}}, %[[APOS]]
// GATHER: gpu.func @down({{.+}}, %[[DROWS:[^:]+]]: memref<?x64xf32>) workgroup
// GATHER-NOT: llvm.atomicrmw
// GATHER: vector.store {{.+}}, %[[DROWS]][{{.+}}] {alignment = 8 : i64} : memref<?x64xf32>, vector<2xf32>
// GATHER: gpu.func @reduce(%{{.+}}: memref<?x64xf32>, %{{.+}}: memref<?xi32>, %{{.+}}: memref<?x2xf32>, %{{.+}}: memref<?x64xf32>, %{{.+}}: memref<?x64xbf16>)
// GATHER-COUNT-2: math.fma
// GATHER: arith.truncf {{.+}} : vector<4xf32> to vector<4xbf16>
//
// Not fused: the combine stays after the experts' call.
// NONE-LABEL: func.func @fused(
// NONE: call @fused_experts_launch
// NONE: moe.combine weights
func.func @fused(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>,
                 %g: tensor<8x128x64xbf16>, %u: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>,
                 %sh: tensor<?x64xf32>) -> tensor<?x64xbf16> {
  %s = moe.experts %x, %i gate(%g : tensor<8x128x64xbf16>) up(%u : tensor<8x128x64xbf16>)
      down(%d : tensor<8x64x128xbf16>) {activation = #moe.activation<swiglu>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x64xf32>)
       addends(%sh : tensor<?x64xf32>) : tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}

// -----

// An f32 result without addends, static T: the atomics go straight into the
// result (operand 5 is also the accumulator), no finish kernel; gate_up
// zeroes it.
// CHECK-LABEL: func.func private @f32out_experts_launch(
// CHECK-SAME: combine = "atomic"
// CHECK-SAME: {args = array<i64: 0, 2, 6, 7, 8, 9, 5>, grid = array<i64: 7, 3>, kernel = @f32out_experts::@gate_up, threads = 128 : i64}, {args = array<i64: 9, 3, 6, 7, 8, 4, 5>, grid = array<i64: 7, 1>, kernel = @f32out_experts::@down, threads = 128 : i64}]
// CHECK-LABEL: func.func @f32out(
// CHECK: %[[Y:.+]] = memref.alloc(%{{.+}}) : memref<?x64xf32>
// CHECK: call @f32out_experts_launch(
// CHECK: %[[T:.+]] = bufferization.to_tensor %[[Y]] restrict writable
// CHECK: %[[R:.+]] = tensor.cast %[[T]] : tensor<?x64xf32> to tensor<5x64xf32>
// CHECK: return %[[R]]
// CHECK-NOT: gpu.func @finish
// GATHER-LABEL: func.func private @f32out_experts_launch(
// GATHER-SAME: kernel = @f32out_experts::@reduce
// GATHER: gpu.func @reduce(
// GATHER-NOT: arith.truncf
// GATHER: gpu.return
func.func @f32out(%x: tensor<5x64xf16>, %i: tensor<5x4xi32>, %w: tensor<5x4xf32>,
                  %u: tensor<32x96x64xf16>, %d: tensor<32x64x96xf16>) -> tensor<5x64xf32> {
  %s = moe.experts %x, %i up(%u : tensor<32x96x64xf16>) down(%d : tensor<32x64x96xf16>)
      {activation = #moe.activation<relu>}
      : tensor<5x64xf16>, tensor<5x4xi32> -> tensor<5x4x64xf32>
  %y = moe.combine weights(%w : tensor<5x4xf32>) slots(%s : tensor<5x4x64xf32>) : tensor<5x64xf32>
  return %y : tensor<5x64xf32>
}

// -----

// Combines that cannot be fused stay (the experts still take the kernels),
// with a remark: the slots are also returned; the combine also sums another
// slot tensor.
// CHECK-LABEL: func.func @shared_slots(
// CHECK: call @shared_slots_experts_launch(
// CHECK: moe.combine weights
// GATHER-LABEL: func.func @shared_slots(
// GATHER: moe.combine weights
func.func @shared_slots(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>,
                        %u: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>)
    -> (tensor<?x64xbf16>, tensor<?x2x64xf32>) {
  %s = moe.experts %x, %i up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>)
      {activation = #moe.activation<relu>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  // expected-remark @+1 {{moe.combine is not fused into the expert kernels: the slots have other users than the combine}}
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s : tensor<?x2x64xf32>) : tensor<?x64xbf16>
  return %y, %s : tensor<?x64xbf16>, tensor<?x2x64xf32>
}

// -----

// CHECK-LABEL: func.func @two_slot_sets(
// CHECK: call @two_slot_sets_experts_launch(
// CHECK: moe.combine weights
func.func @two_slot_sets(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>,
                         %u: tensor<8x128x64xbf16>, %d: tensor<8x64x128xbf16>,
                         %other: tensor<?x2x64xf32>) -> tensor<?x64xbf16> {
  %s = moe.experts %x, %i up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>)
      {activation = #moe.activation<relu>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  // expected-remark @+1 {{moe.combine is not fused into the expert kernels: the combine sums several slot tensors}}
  %y = moe.combine weights(%w : tensor<?x2xf32>) slots(%s, %other : tensor<?x2x64xf32>, tensor<?x2x64xf32>)
       : tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}
