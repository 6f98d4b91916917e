// moe-compile's phases, its artifact and its errors.
// RUN: moe-compile %s --stop-after=input | FileCheck %s --check-prefix=INPUT
// RUN: moe-compile %s --stop-after=decompose | FileCheck %s --check-prefix=DECOMP
// RUN: moe-compile %s --stop-after=linalg | FileCheck %s --check-prefix=LINALG
// RUN: moe-compile %s --stop-after=bufferize | FileCheck %s --check-prefix=BUF
// RUN: moe-compile %s --stop-after=llvm-dialect | FileCheck %s --check-prefix=LLVMD
// RUN: moe-compile %s --stop-after=llvm-ir | FileCheck %s --check-prefix=LLVMIR
// RUN: rm -rf %t && moe-compile %s -o %t | FileCheck %s --check-prefix=WROTE
// RUN: FileCheck %s --check-prefix=MANIFEST < %t/manifest.json
// RUN: test -f %t/layer.so
// RUN: not moe-compile %s --stop-after=nonsense 2>&1 | FileCheck %s --check-prefix=BADPHASE
// RUN: not moe-compile %s --target=tpu -o %t 2>&1 | FileCheck %s --check-prefix=BADTARGET
// RUN: not moe-compile %s 2>&1 | FileCheck %s --check-prefix=NOOUT

// INPUT: moe.layer
// DECOMP-NOT: moe.layer
// DECOMP: moe.route
// LINALG-NOT: moe.
// LINALG: linalg.generic
// BUF: memref<?x16xf32>
// BUF-NOT: tensor<
// LLVMD: llvm.func @_mlir_ciface_layer
// LLVMIR: define void @moe_call_layer(ptr
// WROTE: moe-compile: wrote {{.+}}layer.so and {{.+}}manifest.json
// MANIFEST: "content_hash": "{{[0-9a-f]+}}"
// MANIFEST: "name": "input",
// MANIFEST-NEXT: "shape": [
// MANIFEST-NEXT: -1,
// MANIFEST-NEXT: 16
// MANIFEST: "name": "router",
// MANIFEST: "routing": "#moe.routing<softmax, topk, k = 2, renormalize>"
// MANIFEST: "name": "layer",
// MANIFEST: "symbol": "moe_call_layer"
// MANIFEST: "target": "cpu"
// BADPHASE: moe-compile: error: unknown phase 'nonsense' for --stop-after
// BADTARGET: moe-compile: error: unknown target 'tpu'
// NOOUT: moe-compile: error: no output directory: pass -o <dir>

func.func @layer(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %u: tensor<4x32x16xf32>,
                 %d: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x : tensor<?x16xf32> router(%wr : tensor<4x16xf32>)
      up(%u : tensor<4x32x16xf32>) down(%d : tensor<4x16x32xf32>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>, activation = #moe.activation<gelu>}
      -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
