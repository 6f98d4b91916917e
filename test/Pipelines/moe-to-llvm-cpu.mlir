// Every bundled example goes all the way to the LLVM dialect, returning its
// output buffer (owned by the caller), with nothing of moe, linalg, tensor,
// memref, scf or bufferization left.
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-llvm-cpu | FileCheck %s
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-llvm-cpu | FileCheck %s --check-prefix=ANY
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-llvm-cpu | FileCheck %s --check-prefix=ANY
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-to-llvm-cpu | FileCheck %s --check-prefix=ANY
// The options reach the pipeline: without decomposition moe.layer is left
// for the conversion, which does not lower whole layers.
// RUN: not moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-llvm-cpu="decompose=0" 2>&1 | FileCheck %s --check-prefix=NODEC
// Values outside an option's documented set are one error naming it, from
// moe-opt and moe-compile alike (before session 26 gemm-amx=2 and
// min-task-size=0 went through: the first taken as 1, the second passed to
// async-parallel-for).
// RUN: not moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-llvm-cpu="gemm-amx=2" 2>&1 | FileCheck %s --check-prefix=AMX
// AMX: error: moe-to-llvm-cpu: gemm-amx must be 1, 0 or -1 (the host's) (got 2)
// RUN: not moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-llvm-cpu="parallel=1 min-task-size=0" 2>&1 | FileCheck %s --check-prefix=TASK
// TASK: error: moe-to-llvm-cpu: min-task-size must be at least 1 (got 0)
// RUN: not moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-llvm-cpu="gemm-vector-bits=128" 2>&1 | FileCheck %s --check-prefix=BITS
// BITS: error: moe-to-llvm-cpu: gemm-vector-bits must be 512, 256, 0 or -1 (the host's) (got 128)
// RUN: not moe-compile %moe_src_root/examples/mixtral.mlir --pipeline-options="gemm-block-bytes=-4" -o %t 2>&1 | FileCheck %s --check-prefix=BLOCK
// BLOCK: moe-compile: error: pipeline options: gemm-block-bytes must be positive (got -4)

// CHECK: llvm.func @mixtral_moe({{.+}}) -> !llvm.struct<(ptr, ptr, i64, array<2 x i64>, array<2 x i64>)>
// CHECK-NOT: moe.
// CHECK-NOT: linalg.
// CHECK-NOT: memref.
// CHECK-NOT: scf.
// CHECK: llvm.return
// CHECK-NOT: moe.

// ANY-NOT: {{(moe|linalg|tensor|memref|scf|bufferization)\.}}
// ANY: llvm.func
// ANY-NOT: {{(moe|linalg|tensor|memref|scf|bufferization)\.}}

// Buffers come from the runtime's allocator (runtime-allocator, on by
// default: libmoe_runtime's cache of large blocks), or malloc/free without.
// (The parallel loops' coroutine frames use aligned_alloc/free either way.)
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-llvm-cpu | FileCheck %s --check-prefix=ALLOC
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-llvm-cpu=runtime-allocator=0 | FileCheck %s --check-prefix=LIBC
// ALLOC-NOT: @malloc
// ALLOC-DAG: llvm.call @_mlir_memref_to_llvm_alloc(
// ALLOC-DAG: llvm.call @_mlir_memref_to_llvm_free(
// LIBC-NOT: _mlir_memref_to_llvm
// LIBC-DAG: llvm.call @malloc(
// LIBC-DAG: llvm.call @free(
// LIBC-NOT: _mlir_memref_to_llvm

// NODEC: error: 'moe.layer' op is a whole layer: run --moe-decompose before --convert-moe-to-linalg
