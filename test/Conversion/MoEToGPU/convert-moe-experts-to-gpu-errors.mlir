// convert-moe-experts-to-gpu refuses what it cannot do: with `required`
// (moe-to-nvvm's expert-kernels-required) an ineligible moe.experts is an
// error; for chips older than sm_80 (no cp.async, no bf16 mma.sync) a bf16
// layer keeps the generic path with a remark.
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu="required=1" --verify-diagnostics
// RUN: moe-opt %s --split-input-file --convert-moe-experts-to-gpu="chip=sm_75" 2>&1 | FileCheck %s --check-prefix=SM75

// SM75: remark: moe.experts keeps the generic GPU path: the chip is older than sm_80
// SM75: remark: moe.experts keeps the generic GPU path: the chip is older than sm_80

func.func @untiled(%x: tensor<?x24xbf16>, %i: tensor<?x2xi32>, %u: tensor<8x128x24xbf16>,
                   %d: tensor<8x24x128xbf16>) -> tensor<?x2x24xf32> {
  // expected-error @+1 {{'moe.experts' op cannot use the tensor-core expert kernels: H = 24 has no down column tile (multiple of 16 dividing H)}}
  %s = moe.experts %x, %i up(%u : tensor<8x128x24xbf16>) down(%d : tensor<8x24x128xbf16>)
      {activation = #moe.activation<relu>}
      : tensor<?x24xbf16>, tensor<?x2xi32> -> tensor<?x2x24xf32>
  return %s : tensor<?x2x24xf32>
}

// -----

func.func @bf16(%x: tensor<?x64xbf16>, %i: tensor<?x2xi32>, %u: tensor<8x128x64xbf16>,
                %d: tensor<8x64x128xbf16>) -> tensor<?x2x64xf32> {
  %s = moe.experts %x, %i up(%u : tensor<8x128x64xbf16>) down(%d : tensor<8x64x128xbf16>)
      {activation = #moe.activation<relu>}
      : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x2x64xf32>
  return %s : tensor<?x2x64xf32>
}
