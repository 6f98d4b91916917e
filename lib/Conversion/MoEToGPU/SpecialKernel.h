//===- SpecialKernel.h - zero-computation experts kernel --------*- C++ -*-===//
//
// The device-side form of moe.special_experts (MoE++), used by
// convert-moe-experts-to-gpu (MoESpecialToGPU.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_SPECIALKERNEL_H
#define MOE_LIB_CONVERSION_MOETOGPU_SPECIALKERNEL_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"

namespace mlir::moe {

/// Replaces each moe.special_experts whose slots only a moe.combine with
/// weights and other slot tensors reads: a warp-per-token kernel `special`
/// (gpu.module `<func>_special[_N]`) computes the weighted sum of the
/// token's zero-computation slots, `A[t] = sum_k w[t,k] special(x_t)`
/// (T x H, f32), which becomes one more addend of the combine; its slots
/// leave the combine, so that the expert kernels can fuse what is left. Its
/// launch is declared with `attrName`. An op of another form keeps the
/// generic path with a remark.
void formSpecialKernels(ModuleOp module, StringRef attrName);

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOGPU_SPECIALKERNEL_H
