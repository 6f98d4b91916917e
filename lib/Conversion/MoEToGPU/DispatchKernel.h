//===- DispatchKernel.h - capacity admission kernel -------------*- C++ -*-===//
//
// The device-side form of moe.dispatch, used by convert-moe-route-to-gpu
// (MoEDispatchToGPU.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_DISPATCHKERNEL_H
#define MOE_LIB_CONVERSION_MOETOGPU_DISPATCHKERNEL_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"

namespace mlir::moe {

/// Replaces every moe.dispatch in `module`: a dropless one by its operands
/// (and a zero count), a capacity one by the one-warp kernel `admit` in a
/// gpu.module `<func>_dispatch[_N]` and a call of its launch declaration
/// carrying `attrName` (expanded after bufferization with the routing
/// kernels' launches). One the kernel cannot take keeps the generic path
/// with a remark, or with `required` is an error. Returns failure when an
/// error was emitted.
LogicalResult formDispatchKernels(ModuleOp module, bool required,
                                  StringRef attrName);

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOGPU_DISPATCHKERNEL_H
