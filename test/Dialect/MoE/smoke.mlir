// RUN: moe-opt %s | FileCheck %s
// CHECK-LABEL: func.func @f
func.func @f(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  return %x : tensor<?x64xf32>
}
