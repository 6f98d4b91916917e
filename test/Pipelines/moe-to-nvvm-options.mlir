// Options of moe-to-nvvm that no input can take are one error naming the
// option, not a process abort, a crash, a silently ignored value, or an
// error printed while the exit status says success. Each case below did one
// of those before this check (session 26's option sweep of the examples):
//   chip= (empty)               segmentation fault
//   chip=bogus                  NVPTX abort ("Cannot select")
//   chip=sm_90a features=+ptx78 NVPTX abort (sm_90a needs PTX 8.0, not 7.8)
//   opt-level=-1                abort while the pipeline was built
//   expert-tile-n-down=-16      abort (SmallVector of 2^64 elements)
//   format=bogus, cuda-path=/x  "error:" printed, exit status 0
//   features=+ptx92             NVPTX warning, PTX version silently the default
//   expert-tile-m=48            a remark per op and the generic path
// REQUIRES: cuda-toolkit
// RUN: not moe-opt %s --moe-to-nvvm="chip=" 2>&1 | FileCheck %s --check-prefix=EMPTY
// EMPTY: error: moe-to-nvvm: chip '' is not one that both LLVM 22's NVPTX and CUDA 13 take (sm_75, {{.*}})
// RUN: not moe-opt %s --moe-to-nvvm="chip=bogus" 2>&1 | FileCheck %s --check-prefix=BOGUS
// BOGUS: error: moe-to-nvvm: chip 'bogus' is not one
// RUN: not moe-opt %s --moe-to-nvvm="chip=sm_101" 2>&1 | FileCheck %s --check-prefix=SM101
// SM101: error: moe-to-nvvm: chip 'sm_101' is not one
// RUN: not moe-opt %s --moe-to-nvvm="chip=sm_80a" 2>&1 | FileCheck %s --check-prefix=SM80A
// SM80A: error: moe-to-nvvm: chip 'sm_80a' is not one
// RUN: not moe-opt %s --moe-to-nvvm="chip=sm_90a features=+ptx78" 2>&1 | FileCheck %s --check-prefix=PTX78
// PTX78: error: moe-to-nvvm: chip sm_90a needs PTX ISA 8.0 or newer, features '+ptx78' ask for 7.8
// RUN: not moe-opt %s --moe-to-nvvm="chip=sm_100f features=+ptx86" 2>&1 | FileCheck %s --check-prefix=PTX86
// PTX86: error: moe-to-nvvm: chip sm_100f needs PTX ISA 8.8 or newer
// RUN: not moe-opt %s --moe-to-nvvm="features=+ptx92" 2>&1 | FileCheck %s --check-prefix=PTX92
// PTX92: error: moe-to-nvvm: feature '+ptx92' is not a PTX ISA version LLVM 22's NVPTX knows
// RUN: not moe-opt %s --moe-to-nvvm="features=+ptx81,+sm_90" 2>&1 | FileCheck %s --check-prefix=FEATURE
// FEATURE: error: moe-to-nvvm: feature '+sm_90' is not a PTX ISA version {{.*}}; the chip is the chip option
// RUN: not moe-opt %s --moe-to-nvvm="opt-level=-1" 2>&1 | FileCheck %s --check-prefix=OPT
// OPT: error: moe-to-nvvm: opt-level must be 0 to 3 (got -1)
// RUN: not moe-opt %s --moe-to-nvvm="format=bogus" 2>&1 | FileCheck %s --check-prefix=FORMAT
// FORMAT: error: moe-to-nvvm: format must be bin, isa or fatbin (got 'bogus')
// RUN: not moe-opt %s --moe-to-nvvm="cuda-path=%t.none" 2>&1 | FileCheck %s --check-prefix=TOOLKIT
// TOOLKIT: error: moe-to-nvvm: the CUDA toolkit '{{.*}}.none' has no nvvm/libdevice/libdevice.10.bc
// RUN: not moe-opt %s --moe-to-nvvm="linear-mma-min-tokens=-2" 2>&1 | FileCheck %s --check-prefix=MMAMIN
// MMAMIN: error: moe-to-nvvm: linear-mma-min-tokens must be -1 (from the shape), 0 (never) or a number of tokens (got -2)
// RUN: not moe-opt %s --moe-to-nvvm="route-fuse-linear-min-tokens=-1" 2>&1 | FileCheck %s --check-prefix=FUSEMIN
// FUSEMIN: error: moe-to-nvvm: route-fuse-linear-min-tokens must be 0 (always) or a number of tokens (got -1)
//
// The expert kernels' options (convert-moe-experts-to-gpu): values no shape
// takes are errors; values this shape cannot take keep the remark and the
// generic path (tile-k 128 does not divide H = 64 here).
// RUN: not moe-opt %s --moe-to-nvvm="format=isa expert-tile-n-down=-16" 2>&1 | FileCheck %s --check-prefix=TILEN
// TILEN: error: convert-moe-experts-to-gpu: tile-n-down must be 0 (from the shape) or a positive multiple of 16 (got -16)
// RUN: not moe-opt %s --moe-to-nvvm="format=isa expert-tile-n-gate-up=24" 2>&1 | FileCheck %s --check-prefix=TILEN24
// TILEN24: error: convert-moe-experts-to-gpu: tile-n-gate-up must be 0 (from the shape) or a positive multiple of 16 (got 24)
// RUN: not moe-opt %s --moe-to-nvvm="format=isa expert-tile-m=48" 2>&1 | FileCheck %s --check-prefix=TILEM
// TILEM: error: convert-moe-experts-to-gpu: tile-m must be 0 (from the shape), 16, 32, 64 or 128 (got 48)
// RUN: not moe-opt %s --moe-to-nvvm="format=isa expert-tile-k=-5" 2>&1 | FileCheck %s --check-prefix=TILEK
// TILEK: error: convert-moe-experts-to-gpu: tile-k must be 0 (from the shape), 16, 32, 64 or 128 (got -5)
// RUN: not moe-opt %s --moe-to-nvvm="format=isa expert-stages=5" 2>&1 | FileCheck %s --check-prefix=STAGES
// STAGES: error: convert-moe-experts-to-gpu: stages must be 0 (from the tiles), 2, 3 or 4 (got 5)
// RUN: not moe-opt %s --moe-to-nvvm="format=isa expert-warps=2" 2>&1 | FileCheck %s --check-prefix=WARPS
// WARPS: error: convert-moe-experts-to-gpu: warps must be 0 (4), 4 or 8 (got 2)
// RUN: not moe-opt %s --moe-to-nvvm="format=isa expert-group-m=-3" 2>&1 | FileCheck %s --check-prefix=GROUPM
// GROUPM: error: convert-moe-experts-to-gpu: group-m must be 0 (per run) or positive (got -3)
// RUN: not moe-opt %s --moe-to-nvvm="format=isa expert-split-k-blocks=-1" 2>&1 | FileCheck %s --check-prefix=SPLITK
// SPLITK: error: convert-moe-experts-to-gpu: split-k-blocks must be 0 (off) or positive (got -1)
// RUN: moe-opt %s --moe-to-nvvm="format=isa expert-tile-k=128" -o /dev/null 2>&1 | FileCheck %s --check-prefix=SHAPE
// SHAPE: remark: moe.experts keeps the generic GPU path: H = 64 is not a multiple of the reduction tile
//
// The chips with suffixes that exist compile (PTX only: the default PTX
// version is the chip's minimum where that is above 8.1).
// RUN: moe-opt %s --moe-to-nvvm="format=isa chip=sm_100f" | FileCheck %s --check-prefix=SM100F
// SM100F: #nvvm.target<O = 3, chip = "sm_100f", features = "+ptx88">
// RUN: moe-opt %s --moe-to-nvvm="format=isa chip=sm_90a features=+ptx80" | FileCheck %s --check-prefix=SM90A
// SM90A: #nvvm.target<O = 3, chip = "sm_90a", features = "+ptx80">

func.func @layer(%x: tensor<?x64xbf16>, %router: tensor<8x64xbf16>,
                 %gate: tensor<8x128x64xbf16>, %up: tensor<8x128x64xbf16>,
                 %down: tensor<8x64x128xbf16>) -> tensor<?x64xbf16> {
  %y = moe.layer %x : tensor<?x64xbf16> router(%router : tensor<8x64xbf16>)
      gate(%gate : tensor<8x128x64xbf16>) up(%up : tensor<8x128x64xbf16>)
      down(%down : tensor<8x64x128xbf16>)
      {routing = #moe.routing<softmax, topk, k = 2, renormalize>,
       activation = #moe.activation<swiglu>} -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}
