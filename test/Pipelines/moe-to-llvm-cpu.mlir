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

// NODEC: error: 'moe.layer' op is a whole layer: run --moe-decompose before --convert-moe-to-linalg
