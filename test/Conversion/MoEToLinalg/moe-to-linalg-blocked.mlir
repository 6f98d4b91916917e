// RUN: moe-opt %s --convert-moe-to-linalg="blocked-gemms=1 gemm-block-bytes=1000" --canonicalize --cse | FileCheck %s
// The blocked form must bufferize and reach the LLVM dialect like the rest.
// RUN: moe-opt %s --convert-moe-to-linalg=blocked-gemms=1 --one-shot-bufferize="bufferize-function-boundaries allow-return-allocs-from-loops" \
// RUN:   --convert-linalg-to-loops --expand-strided-metadata --lower-affine --convert-scf-to-cf \
// RUN:   --convert-math-to-llvm --convert-math-to-libm --convert-to-llvm --reconcile-unrealized-casts \
// RUN:   | FileCheck %s --check-prefix=LLVM
// moe-to-llvm-cpu takes the blocked form by default (here without the
// micro-kernel, which moe-to-linalg-microkernel.mlir covers), blocked-gemms=0 the
// generic one (test/Conversion/MoEToLinalg/moe-to-linalg.mlir).
// RUN: not moe-opt %s --convert-moe-to-linalg="blocked-gemms=1 gemm-block-bytes=0" 2>&1 | FileCheck %s --check-prefix=ERR
// ERR: error: convert-moe-to-linalg: gemm-block-bytes must be positive (got 0)
// RUN: moe-compile %s --stop-after=linalg --pipeline-options=gemm-vector-bits=0 -o - | FileCheck %s --check-prefix=PIPE
// RUN: moe-compile %s --stop-after=linalg --pipeline-options=blocked-gemms=0 -o - | FileCheck %s --check-prefix=GATHERED
// LLVM-NOT: tensor.
// LLVM-NOT: scf.
// LLVM: llvm.func @experts
// LLVM: llvm.func @linear
// moe-to-llvm-cpu: each column-group scf.forall becomes an scf.parallel cut
// into tasks by async-parallel-for (3 in @experts: gate, up, down; 1 in
// @linear), sized by the runtime's worker count and calling its
// mlirAsyncRuntime* (libmoe_runtime); parallel=0 leaves them loops.
// RUN: moe-opt %s --moe-to-llvm-cpu=gemm-vector-bits=0 | FileCheck %s --check-prefix=PAR
// PAR-NOT: scf.
// PAR: llvm.func @experts
// PAR-COUNT-3: llvm.call @mlirAsyncRuntimeAwaitAllInGroup
// PAR: llvm.func @linear
// PAR: llvm.call @mlirAsyncRuntimGetNumWorkerThreads()
// PAR: llvm.call @async_dispatch_fn(
// PAR: llvm.call @mlirAsyncRuntimeAwaitAllInGroup
// PAR: llvm.func @parallel_compute_fn(
// PAR: llvm.func @async_execute_fn(
// PAR: llvm.call @mlirAsyncRuntimeExecute
// PAR-NEXT: llvm.intr.coro.suspend
// RUN: moe-opt %s --moe-to-llvm-cpu=parallel=0 | FileCheck %s --check-prefix=SEQ
// SEQ-NOT: mlirAsyncRuntime
// SEQ-NOT: coro
// PIPE: tensor<6xindex>
// PIPE-COUNT-4: iter_args({{.+}}) -> (f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32)
// GATHERED-NOT: tensor<6xindex>
// GATHERED: iter_args({{.+}}) -> (f32)

// Slots sorted by expert: counts per bucket (the op's 4 experts, relative
// to expert_offset 4, and a fifth bucket for slots of no expert of the op),
// an exclusive prefix sum, then each slot placed at its bucket's cursor.
// CHECK-LABEL: func.func @experts
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[I:[^:]+]]: tensor<?x2xi32>, %[[G:[^:]+]]: tensor<4x32x16xf32>, %[[U:[^:]+]]: tensor<4x32x16xf32>, %[[D:[^:]+]]: tensor<4x16x32xf32>)
// CHECK-DAG: %[[C4I:.+]] = arith.constant 4 : i32
// CHECK-DAG: %[[C4:.+]] = arith.constant 4 : index
// CHECK-DAG: %[[C32:.+]] = arith.constant 32 : index
// CHECK: %[[SLOTS:.+]] = arith.muli %{{.+}}, %c2 : index
// CHECK: %[[COUNTS:.+]] = scf.for %{{.+}} = %c0 to %[[SLOTS]] step %c1 iter_args(%{{.+}} = %{{.+}}) -> (tensor<6xindex>)
// CHECK:   tensor.extract %[[I]]
// CHECK:   arith.subi %{{.+}}, %[[C4I]]
// CHECK:   %[[BUCKET:.+]] = arith.select %{{.+}}, %{{.+}}, %[[C4]] : index
// CHECK:   %[[AT:.+]] = arith.addi %[[BUCKET]], %c1
// CHECK:   tensor.insert %{{.+}} into %{{.+}}[%[[AT]]] : tensor<6xindex>
// CHECK: %[[START:.+]] = scf.for %{{.+}} = %c1 to %c6 step %c1 iter_args(%{{.+}} = %[[COUNTS]]) -> (tensor<6xindex>)
// CHECK: %[[PLACE:.+]]:2 = scf.for %{{.+}} = %c0 to %[[SLOTS]] step %c1 iter_args(%{{.+}} = %[[START]], %{{.+}} = %{{.+}}) -> (tensor<6xindex>, tensor<?xindex>)
// CHECK:   tensor.insert %{{.+}} into %{{.+}} : tensor<?xindex>
//
// Up: expert by expert, blocks of slots (gemm-block-bytes=1000: 12 rows of
// 64 bytes), the 32 weight rows in 8 independent groups of 4 (an
// scf.forall, each group filling its own 4-column slab of the output), 4
// slots x 4 rows of f32 accumulators, then the block's last slots one by
// one (4 accumulators).
// CHECK: %[[UP:.+]] = scf.for %[[E:.+]] = %c0 to %[[C4]] step %c1 iter_args(%{{.+}} = %{{.+}}) -> (tensor<?x2x32xf32>)
// CHECK:   %[[FIRST:.+]] = tensor.extract %[[START]][%[[E]]]
// CHECK:   %[[END:.+]] = tensor.extract %[[START]]
// CHECK:   scf.for %[[BLK:.+]] = %[[FIRST]] to %[[END]] step %c12 iter_args(%[[ACC:.+]] = %{{.+}})
// CHECK:     scf.forall (%[[Q:.+]]) in (8) shared_outs(%[[SO:.+]] = %[[ACC]]) -> (tensor<?x2x32xf32>)
// CHECK:       %[[COL0:.+]] = arith.muli %[[Q]], %[[C4]]
// CHECK:       %[[WIDTH:.+]] = arith.minui %{{.+}}, %[[C4]]
// CHECK:       %[[SLAB:.+]] = tensor.extract_slice %[[SO]][0, 0, %[[COL0]]] [%{{.+}}, 2, %[[WIDTH]]] [1, 1, 1] : tensor<?x2x32xf32> to tensor<?x2x?xf32>
// CHECK:       scf.for %{{.+}} = %[[BLK]] to %{{.+}} step %[[C4]] iter_args(%{{.+}} = %[[SLAB]])
// CHECK-COUNT-4: tensor.extract %[[PLACE]]#1
// CHECK:         scf.for {{.+}} -> (f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32)
// CHECK-COUNT-4:   tensor.extract %[[U]][%[[E]], {{.+}}] : tensor<4x32x16xf32>
// CHECK:           tensor.extract %[[X]]
// CHECK:           arith.mulf {{.+}} fastmath<reassoc,contract>
// CHECK:           arith.addf {{.+}} fastmath<reassoc,contract>
// CHECK-COUNT-16: tensor.insert {{.+}} : tensor<?x2x?xf32>
// CHECK:       %[[FILLED:.+]] = scf.for %{{.+}} = %{{.+}} to %{{.+}} step %c1
// CHECK:         scf.for {{.+}} -> (f32, f32, f32, f32)
// CHECK:       scf.forall.in_parallel
// CHECK-NEXT:    tensor.parallel_insert_slice %[[FILLED]] into %[[SO]][0, 0, %[[COL0]]] [%{{.+}}, 2, %[[WIDTH]]] [1, 1, 1]
// Gate: the same nest on the same slot order.
// CHECK: %[[GT:.+]] = scf.for %{{.+}} = %c0 to %[[C4]] step %c1 iter_args(%{{.+}} = %{{.+}}) -> (tensor<?x2x32xf32>)
// CHECK:   tensor.extract %[[G]]
// CHECK: %[[H:.+]] = linalg.generic {{.+}} ins(%[[UP]], %[[I]], %[[GT]], %{{.+}} : {{.+}})
// CHECK: math.exp
// Down: reads the slot's own activation row (T x K x F; 128-byte rows:
// blocks of 4).
// CHECK: %[[DN:.+]] = scf.for %{{.+}} = %c0 to %[[C4]] step %c1 iter_args(%{{.+}} = %{{.+}}) -> (tensor<?x2x16xf32>)
// CHECK:   scf.for %{{.+}} = %{{.+}} to %{{.+}} step %[[C4]]
// CHECK:   tensor.extract %[[D]]
// CHECK:   tensor.extract %[[H]][%{{.+}}, %{{.+}}, %{{.+}}] : tensor<?x2x32xf32>
// CHECK: %[[Y:.+]] = linalg.generic {{.+}} ins(%[[I]], %[[DN]] : tensor<?x2xi32>, tensor<?x2x16xf32>) outs(%{{.+}} : tensor<?x2x16xf32>)
// CHECK: arith.select
// CHECK: return %[[Y]]
func.func @experts(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<4x32x16xf32>,
    %u: tensor<4x32x16xf32>, %d: tensor<4x16x32xf32>) -> tensor<?x2x16xf32> {
  %s = moe.experts %x, %i gate(%g : tensor<4x32x16xf32>) up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {activation = #moe.activation<swiglu>, expert_offset = 4 : i64}
      : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2x16xf32>
  return %s : tensor<?x2x16xf32>
}

// moe.linear (routers, the LoRA base) and moe.ffn (shared experts): the same
// nest over the tokens, one group (48-byte rows: blocks of 20; the 6 columns
// in 2 groups of 4, the second 2 wide: its weight rows 6, 7 repeat row 5,
// min(r, width - 1) within the slab).
// CHECK-LABEL: func.func @linear
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x24xbf16>, %[[W:[^:]+]]: tensor<6x24xbf16>, %[[B:[^:]+]]: tensor<6xbf16>)
// CHECK: %[[T:.+]] = tensor.dim %[[X]], %c0
// CHECK: %[[MM:.+]] = scf.for %[[BLK:.+]] = %c0 to %[[T]] step %c20 iter_args(%{{.+}} = %{{.+}}) -> (tensor<?x6xf32>)
// CHECK:   scf.forall (%[[Q:.+]]) in (2)
// CHECK:     %[[COL0:.+]] = arith.muli %[[Q]], %c4
// CHECK:     %[[LEFT:.+]] = arith.subi %c6, %[[COL0]]
// CHECK:     %[[WIDTH:.+]] = arith.minui %[[LEFT]], %c4
// CHECK:     %[[LAST:.+]] = arith.subi %[[WIDTH]], %c1
// CHECK:     arith.minui %[[LAST]], %c1
// CHECK:     tensor.extract_slice %{{.+}}[0, %[[COL0]]] [%{{.+}}, %[[WIDTH]]] [1, 1] : tensor<?x6xf32> to tensor<?x?xf32>
// CHECK:     scf.for %{{.+}} = %[[BLK]] to %{{.+}} step %c4
// CHECK:       scf.for {{.+}} -> (f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32)
// CHECK-COUNT-4: tensor.extract %[[W]]
// CHECK:         tensor.extract %[[X]]
// CHECK: linalg.generic {{.+}} ins(%[[B]], %[[MM]] : tensor<6xbf16>, tensor<?x6xf32>)
// CHECK: arith.truncf
func.func @linear(%x: tensor<?x24xbf16>, %w: tensor<6x24xbf16>, %b: tensor<6xbf16>) -> tensor<?x6xbf16> {
  %y = moe.linear %x, %w bias %b : (tensor<?x24xbf16>, tensor<6x24xbf16>, tensor<6xbf16>) -> tensor<?x6xbf16>
  return %y : tensor<?x6xbf16>
}
