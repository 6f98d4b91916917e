// moe-to-nvvm's default format: an sm_90 cubin (ELF) made by ptxas, and a
// fatbin on request; no GPU is needed. ptxas -v on the kernels' PTX reports
// no register spills in any kernel of the bundled examples.
// REQUIRES: cuda-toolkit
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="chip=sm_90" | FileCheck %s --check-prefix=BIN
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm | FileCheck %s --check-prefix=BIN
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm | FileCheck %s --check-prefix=BIN
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-to-nvvm | FileCheck %s --check-prefix=BIN
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=fatbin" | FileCheck %s --check-prefix=FATBIN
//
// RUN: moe-opt %moe_src_root/examples/mixtral.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.mixtral.ptx
// RUN: %ptxas -arch=sm_90 -v %t.mixtral.ptx -o %t.mixtral.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
// RUN: moe-opt %moe_src_root/examples/deepseek_v3.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.dsv3.ptx
// RUN: %ptxas -arch=sm_90 -v %t.dsv3.ptx -o %t.dsv3.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
// RUN: moe-opt %moe_src_root/examples/at_moe.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.at.ptx
// RUN: %ptxas -arch=sm_90 -v %t.at.ptx -o %t.at.cubin 2>&1 | FileCheck %s --check-prefix=SPILL
// RUN: moe-opt %moe_src_root/examples/cartesian.mlir --moe-to-nvvm="format=isa" | %python %S/ptx.py > %t.cart.ptx
// RUN: %ptxas -arch=sm_90 -v %t.cart.ptx -o %t.cart.cubin 2>&1 | FileCheck %s --check-prefix=SPILL

// BIN: gpu.binary @moe_kernels [#gpu.object<#nvvm.target<O = 3, chip = "sm_90", features = "+ptx80">, properties = {{{.*}}}, bin = "\7FELF
// FATBIN: gpu.binary @moe_kernels [#gpu.object<#nvvm.target<O = 3, chip = "sm_90", features = "+ptx80">, properties = {{{.*}}}, "P\EDU\BA

// SPILL-NOT: {{[1-9][0-9]* bytes spill}}
// SPILL: Compiling entry function '{{.+}}' for 'sm_90'
// SPILL: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// SPILL-NOT: {{[1-9][0-9]* bytes spill}}
