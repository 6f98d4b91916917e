//===- Passes.td - moe conversion passes -------------------*- tablegen -*-===//
//
// Every conversion out of the moe dialect is declared here (one Passes.td for
// all conversions, as in CIRCT and upstream MLIR).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CONVERSION_PASSES_TD
#define MOE_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertMoEToLinalg : Pass<"convert-moe-to-linalg"> {
  let summary = "Lower moe expert, linear, norm and combine ops to linalg on tensors";
  let description = [{
    Rewrites the compute stages of a decomposed MoE layer into
    `linalg.generic` ops on tensors (f32 accumulation, one rounding to the
    result type):

    * `moe.linear`, `moe.projected_router`, `moe.ffn`, `moe.rms_norm`:
      contractions and element-wise generics;
    * `moe.experts`, `moe.lora_experts`: per-slot contractions whose weight
      reads are gathers through the slot's expert index (`tensor.extract` in
      the payload), so only the T·K selected (token, expert) pairs are
      computed; slots outside the op's expert range are 0;
    * `moe.combine`: a reduction over the K slots plus the addends.

    `moe.route`, `moe.dispatch` and `moe.special_experts` are not lowered by
    this pass yet; they are left in place (a later conversion stage rejects
    them loudly).
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect"];
}

#endif // MOE_CONVERSION_PASSES_TD
