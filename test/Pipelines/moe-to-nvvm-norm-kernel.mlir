// REQUIRES: cuda-toolkit
// moe-to-nvvm runs each moe.rms_norm, with the residual moe.combine of
// addends only that feeds it, as the warp-per-token kernel of
// convert-moe-norm-to-gpu. Here a Cartesian layer's h = x + MoE_A(x) and
// norm(h) at H = 4096 bf16: pass 1 loads two 128-bit vectors per lane and
// step (8 bf16 each), pass 2 those two and the weight's, and stores one;
// one 5-step butterfly and one rsqrt; 128 threads; ptxas sm_90: no spills.
// Numerics: Conversion/MoEToGPU/linear-emulate.test (the norm cases).
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=SUM
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py --kernel norm | FileCheck %s --check-prefix=PTX
// RUN: moe-opt %s --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.ptx
// RUN: %ptxas -arch=sm_90 -v %t.ptx -o %t.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
// The generic path (norm-kernels=0): zero-fill, add and round for the
// combine; zero-fill, a thread per token for the sum of squares, a thread
// per element for the scaling and one for the rounding.
// RUN: moe-opt %s --moe-to-nvvm="format=isa norm-kernels=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=GENERIC
// The Cartesian example: 43 kernels -> 37 (the seven of the residual and
// the norm become one); the norm kernel has no spills. (Since session 31
// its gelu shared expert's indices, all expert 0, are no longer filled by a
// generic kernel: 44 -> 43 and 38 -> 37.)
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-to-nvvm="format=isa" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=CART
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-to-nvvm="format=isa norm-kernels=0" 2>&1 | %python %S/ptx.py --summary | FileCheck %s --check-prefix=CART-GENERIC
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.cart.ptx
// RUN: %ptxas -arch=sm_90 -v %t.cart.ptx -o %t.cart.cubin 2>&1 | FileCheck %s --check-prefix=CART-SPILL
// CART-SPILL: Function properties for cartesian_moe_norm{{[[:space:]]+}}0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads

// SUM: kernels: 1 entries, 1 launched
// GENERIC: kernels: 7 entries, 7 launched
// CART: kernels: 37 entries, 37 launched
// CART-GENERIC: kernels: 43 entries, 43 launched

// PTX: .maxntid 128, 1, 1
// PTX: ld.global.v4.b32
// PTX-NOT: st.global
// PTX-COUNT-5: shfl.sync.bfly.b32
// PTX-NOT: shfl.sync
// PTX: rsqrt.approx.f32
// PTX-COUNT-3: ld.global.v4.b32
// PTX: st.global.v4.b32
// PTX-NOT: st.global

// SPILL-NOT: bytes spill stores
// SPILL: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// SPILL-NOT: [1-9]{{[0-9]*}} bytes spill

func.func @residual(%x: tensor<?x4096xbf16>, %ya: tensor<?x4096xbf16>, %g: tensor<4096xbf16>) -> tensor<?x4096xbf16> {
  %h = moe.combine addends(%x, %ya : tensor<?x4096xbf16>, tensor<?x4096xbf16>) : tensor<?x4096xbf16>
  %y = moe.rms_norm %h, %g {epsilon = 1.0e-6 : f64} : tensor<?x4096xbf16>, tensor<4096xbf16>
  return %y : tensor<?x4096xbf16>
}
