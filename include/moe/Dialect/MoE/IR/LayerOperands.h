//===- LayerOperands.h - moe.layer's operand groups by name ------*- C++
//-*-===//
//
// The names of moe.layer's operand groups, for code that handles layers as
// text or binds their arguments by role without building the op (the
// Hugging Face importer prints layers; the artifact writer names a layer
// function's arguments). Dependency-free so that both can include it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_LAYEROPERANDS_H
#define MOE_DIALECT_MOE_IR_LAYEROPERANDS_H

namespace mlir::moe {

/// moe.layer's operand groups in ODS order, as the op prints them, the input
/// first. Keep in step with MoE_LayerOp's arguments in MoEOps.td.
inline constexpr const char *kLayerOperandNames[] = {"input",
                                                     "router",
                                                     "router_bias",
                                                     "selection_bias",
                                                     "group_router",
                                                     "domain_embeddings",
                                                     "proj_w1",
                                                     "proj_w2",
                                                     "gate",
                                                     "up",
                                                     "down",
                                                     "gate_bias",
                                                     "up_bias",
                                                     "down_bias",
                                                     "lora_base",
                                                     "lora_a",
                                                     "lora_b",
                                                     "const_router",
                                                     "const_vectors",
                                                     "shared_gate",
                                                     "shared_up",
                                                     "shared_down",
                                                     "shared_gate_weight",
                                                     "output_bias"};

} // namespace mlir::moe

#endif // MOE_DIALECT_MOE_IR_LAYEROPERANDS_H
