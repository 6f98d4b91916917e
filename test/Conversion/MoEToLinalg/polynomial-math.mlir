// moe-polynomial-math: f32 exp, erf and tanh become upstream MLIR's
// polynomial approximations (arithmetic that vectorises); other math ops and
// other types stay. The CPU pipeline runs it by default (polynomial-math).
// RUN: moe-opt %s --moe-polynomial-math | FileCheck %s
// RUN: moe-opt %s --moe-to-llvm-cpu | FileCheck %s --check-prefix=PIPE
// RUN: moe-opt %s --moe-to-llvm-cpu=polynomial-math=0 | FileCheck %s --check-prefix=LIBM

// CHECK-LABEL: func.func @activations
// CHECK-NOT: math.exp
// CHECK-NOT: math.erf
// CHECK-NOT: math.tanh
// CHECK: math.fma
// CHECK: math.sqrt
// CHECK: math.exp %{{.+}} : f64
// CHECK: return
// Without it, exp and tanh are LLVM intrinsics (libm calls after codegen)
// and erf a libm call.
// PIPE-LABEL: llvm.func @activations
// PIPE-NOT: llvm.intr.exp({{.+}}) : (f32)
// PIPE-NOT: llvm.intr.tanh
// PIPE-NOT: llvm.call @erff
// PIPE: llvm.intr.exp({{.+}}) : (f64) -> f64
// PIPE: llvm.return
// LIBM-LABEL: llvm.func @activations
// LIBM: llvm.intr.exp(%{{.+}}) : (f32) -> f32
// LIBM: llvm.call @erff
// LIBM: llvm.intr.tanh(%{{.+}}) : (f32) -> f32
func.func @activations(%x: f32, %d: f64) -> (f32, f32, f32, f32, f64) {
  %e = math.exp %x : f32
  %r = math.erf %x : f32
  %t = math.tanh %x : f32
  %s = math.sqrt %x : f32
  %ed = math.exp %d : f64
  return %e, %r, %t, %s, %ed : f32, f32, f32, f32, f64
}
