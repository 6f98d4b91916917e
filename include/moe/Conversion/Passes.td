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
  let summary = "Lower the staged moe ops to linalg, tensor and scf";
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
    * `moe.special_experts`: one generic picking each slot's kind from a
      constant table (constant experts mix `x` and `v` by a 2-way softmax);
    * `moe.combine`: a reduction over the K slots plus the addends;
    * `moe.route`: scores, selection bias, group masks (group-limited and
      hierarchical) and K rounds of argmax (an `scf.for` over the slots whose
      body is a reduction over the experts: larger first, NaN smallest, ties
      to the lower id), then normalisation and scaling;
    * `moe.dispatch`: dropless is the identity; capacity is a sequential
      (slot, token) scan in two `scf.for` loops with per-expert counters.

    After this pass no `moe` op is left but `moe.layer`/`moe.cartesian`
    (run `--moe-decompose` first).
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect"];
}

#endif // MOE_CONVERSION_PASSES_TD
