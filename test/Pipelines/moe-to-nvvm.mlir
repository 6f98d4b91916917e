// moe-to-nvvm maps every bundled example onto the GPU: the result holds
// one gpu.binary (all kernels in one module, loaded once) and host code in
// the LLVM dialect that launches them, with nothing else left to lower.
// format=isa keeps the PTX readable and needs no ptxas (cubins:
// moe-to-nvvm-cubin.mlir).
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="chip=sm_90 format=isa" | FileCheck %s --check-prefix=LOWERED
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa" | FileCheck %s --check-prefix=LOWERED
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa" | FileCheck %s --check-prefix=LOWERED
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-to-nvvm="format=isa" | FileCheck %s --check-prefix=LOWERED
//
// The PTX text has sm_90 with PTX ISA 8.0, one .entry per launched kernel, global
// loads; the generic kernels (the router's logits here) reduce in a loop of
// each thread (fma) reading bf16 weights. The experts of this bf16 layer run
// as tensor-core kernels: moe-to-nvvm-expert-kernels.mlir.
// (route-fuse-linear=0 linear-kernels=0: the router GEMM stays a generic
// kernel, the first; by default the Mixtral example has no generic kernel
// left, the router GEMM being the linear kernel of
// moe-to-nvvm-linear-kernel.mlir.)
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa route-fuse-linear=0 linear-kernels=0" | %python %S/ptx.py | FileCheck %s --check-prefix=PTX
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=COUNT
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=COUNT
//
// Options reach the phases: the chip and PTX version, and the block size.
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="chip=sm_80 features=+ptx70 format=isa" | %python %S/ptx.py | FileCheck %s --check-prefix=SM80
// Without features the PTX version is the larger of 8.1 and the chip's
// minimum (sm_120: 8.7); one older than the chip needs is an error naming
// both, not an NVPTX abort.
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="chip=sm_120 format=isa" | %python %S/ptx.py | FileCheck %s --check-prefix=SM120
// RUN: not moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="chip=sm_120 features=+ptx80 format=isa" 2>&1 | FileCheck %s --check-prefix=OLDPTX
// RUN: moe-opt %s --moe-to-nvvm="format=isa decompose=0" | %python %S/ptx.py | FileCheck %s --check-prefix=SMALL
// RUN: moe-opt %s --moe-to-nvvm="format=isa decompose=0 block-size=64" | %python %S/ptx.py | FileCheck %s --check-prefix=BLOCK64
// RUN: moe-opt %s --moe-to-nvvm="format=isa decompose=0 tile-sizes=32,4" | %python %S/ptx.py | FileCheck %s --check-prefix=TILES
// RUN: moe-opt %s --moe-to-nvvm="format=isa decompose=0" | %python %S/ptx.py --summary | FileCheck %s --check-prefix=SMALLCOUNT

// LOWERED: module attributes {gpu.container_module}
// LOWERED-NOT: {{^ *(%[^=]+= )?"?(moe|linalg|tensor|memref|scf|bufferization|arith|math|func|cf|affine|vector|nvvm)\.}}
// LOWERED-NOT: gpu.module
// LOWERED: gpu.binary @moe_kernels [#gpu.object<#nvvm.target<O = 3, chip = "sm_90", features = "+ptx81">
// LOWERED-NOT: gpu.binary
// LOWERED-NOT: {{^ *(%[^=]+= )?"?(moe|linalg|tensor|memref|scf|bufferization|arith|math|func|cf|affine|vector|nvvm)\.}}

// PTX: .version 8.1
// PTX: .target sm_90
// PTX: .visible .entry mixtral_moe_kernel(
// PTX: ld.global
// PTX: cvt.f32.bf16
// PTX: fma.rn.f32
// PTX: st.global

// COUNT: kernels: [[N:[1-9][0-9]*]] entries, [[N]] launched

// SM80: .version 7.0
// SM80: .target sm_80
// SM120: .version 8.7
// SM120: .target sm_120
// OLDPTX: error: moe-to-nvvm: chip sm_120 needs PTX ISA 8.7 or newer, features '+ptx80' ask for 8.0 (leave features unset to get the chip's)

// A contraction followed by an element-wise op, on tensors (no moe ops):
// one kernel each plus one for the zero fill; the contraction is one
// thread per output (256 threads: 64 along n, 4 along m), with the
// reduction over k in registers.
// SMALL: .visible .entry small_kernel(
// SMALL: .maxntid 64, 4, 1
// SMALL: .visible .entry small_kernel_0(
// SMALL: .maxntid 64, 4, 1
// SMALL: ld.global.b32
// SMALL: fma.rn.f32
// SMALL: .visible .entry small_kernel_1(
// SMALL-NOT: .entry
// SMALLCOUNT: kernels: 3 entries, 3 launched
// BLOCK64: .maxntid 64, 1, 1
// TILES: .maxntid 32, 4, 1

#mk = affine_map<(m, n, k) -> (m, k)>
#kn = affine_map<(m, n, k) -> (k, n)>
#mn = affine_map<(m, n, k) -> (m, n)>
#id = affine_map<(m, n) -> (m, n)>
func.func @small(%a: tensor<?x32xf32>, %b: tensor<32x64xf32>) -> tensor<?x64xf32> {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %t = tensor.dim %a, %c0 : tensor<?x32xf32>
  %init = tensor.empty(%t) : tensor<?x64xf32>
  %acc = linalg.fill ins(%zero : f32) outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  %mm = linalg.generic {indexing_maps = [#mk, #kn, #mn],
                        iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%a, %b : tensor<?x32xf32>, tensor<32x64xf32>) outs(%acc : tensor<?x64xf32>) {
  ^bb0(%x: f32, %y: f32, %o: f32):
    %p = arith.mulf %x, %y fastmath<contract> : f32
    %s = arith.addf %o, %p fastmath<contract> : f32
    linalg.yield %s : f32
  } -> tensor<?x64xf32>
  %out = tensor.empty(%t) : tensor<?x64xf32>
  %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%mm : tensor<?x64xf32>) outs(%out : tensor<?x64xf32>) {
  ^bb0(%x: f32, %o: f32):
    %e = math.exp %x : f32
    linalg.yield %e : f32
  } -> tensor<?x64xf32>
  return %r : tensor<?x64xf32>
}
