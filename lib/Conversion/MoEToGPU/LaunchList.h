//===- LaunchList.h - kernel launches declared on a call --------*- C++ -*-===//
//
// The kernel-forming passes (convert-moe-experts-to-gpu,
// convert-moe-route-to-gpu) run on tensors, before bufferization, so they
// cannot emit gpu.launch_func on buffers yet: they leave a call of a private
// declaration whose discardable attribute holds a launch list, and a pass
// run after bufferization (moe-gpu-launch-expert-kernels,
// moe-gpu-launch-route-kernels) expands each such call into the launches on
// the call's (now buffer) operands. Both use the one format here:
//
//   <attr> = {..., launches = [{kernel = @module::@fn, args = array<i64: ...>,
//             threads = N, grid = array<i64: operand, y>,
//             grid_divisor = D (optional, default 1)}, ...]}
//
// `args`: the call operands the kernel takes, in order; grid x: 1 for
// operand -1, else ceil(dim 0 of that operand / D); y: a constant; blocks of
// `threads` threads; optional `smem` (dynamic shared memory bytes) and
// `tensor_maps` = [array<i64: operand, box0, box1, box2, data type,
// swizzle>, ...] (TensorMapArg: i64 arguments after `args`).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_LAUNCHLIST_H
#define MOE_LIB_CONVERSION_MOETOGPU_LAUNCHLIST_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Support/LLVM.h"
#include "llvm/ADT/StringMap.h"

#include <array>
#include <string>

namespace mlir::moe {

/// A kernel argument the host makes before the launch: the TMA tensor map
/// (the runtime's mgpuTensorMap3D) of call operand `operand`, a contiguous
/// rank-3 memref, tiled by `box` (outermost first), of CUtensorMapDataType
/// `dataType` with CUtensorMapSwizzle `swizzle`; the kernel gets its device
/// address as an i64, after `args`.
struct TensorMapArg {
  int64_t operand;
  std::array<int64_t, 3> box;
  int64_t dataType, swizzle;
};

/// One entry of a launch list.
DictionaryAttr makeLaunch(Builder &b, SymbolRefAttr kernel,
                          ArrayRef<int64_t> args, int64_t threads,
                          int64_t gridOperand, int64_t gridY,
                          int64_t gridDivisor = 1, int64_t smemBytes = 0,
                          ArrayRef<TensorMapArg> tensorMaps = {});

/// The private declaration `name` : (`types`) -> () that the host code
/// calls in place of the launches, inserted before `func` and into
/// `symbols`, carrying `attrName` = {`entries`} (which hold `launches`).
func::FuncOp declareLaunches(func::FuncOp func, SymbolTable &symbols,
                             StringRef name, TypeRange types,
                             StringRef attrName,
                             ArrayRef<NamedAttribute> entries);

/// The host side of a kernel-forming rewrite, on tensors: `tensor` as a
/// read-only buffer of `type` (bufferization.to_buffer, then memref.cast
/// when `type` has dynamic dimensions the tensor's type fixes).
Value readOnlyBuffer(OpBuilder &b, Location loc, Value tensor, MemRefType type);

/// The buffer `memref` that a launch wrote, as a tensor of `type`
/// (bufferization.to_tensor restrict writable, then tensor.cast).
Value writtenTensor(OpBuilder &b, Location loc, Value memref, Type type);

/// The name of a kernel-forming rewrite's gpu.module: `<func>_<kind>`, then
/// `_N` for the N-th op of that kind in `func` (N > 0), then `suffix` (a
/// variant); its launch declaration appends `_launch`.
std::string kernelBaseName(func::FuncOp func, StringRef kind, unsigned counter,
                           StringRef suffix = "");

/// A new gpu.module `name` at the end of `module`, inserted into `symbols`;
/// `module` is marked gpu.container_module.
gpu::GPUModuleOp createKernelModule(ModuleOp module, SymbolTable &symbols,
                                    Location loc, StringRef name);

/// The reference `@module::@kernel` to `kernel` inside `module`, as a launch
/// entry names it.
SymbolRefAttr kernelSymbol(gpu::GPUModuleOp module, gpu::GPUFuncOp kernel);

/// The frame of one kernel-forming rewrite of `op`: the function it is in,
/// the base name `<func>_<kind>[_N]`, and a new gpu.module of that name at
/// the end of the module, into which `kernels()` builds; `call` declares
/// `<base>_launch` carrying `attrName` = {launches = `launches`, `extra`...}
/// and calls it at `b` on `operands`.
class KernelRewrite {
public:
  KernelRewrite(Operation *op, StringRef kind, unsigned counter);
  /// With the base name given (a variant's, e.g. `<func>_route_fused`).
  KernelRewrite(Operation *op, StringRef base);
  OpBuilder kernels() { return OpBuilder::atBlockEnd(module.getBody()); }
  SymbolRefAttr ref(gpu::GPUFuncOp kernel) {
    return kernelSymbol(module, kernel);
  }
  /// (`suffix`: a second call of the same rewrite declares
  /// `<base><suffix>_launch`.)
  void call(ImplicitLocOpBuilder &b, StringRef attrName,
            ArrayRef<Attribute> launches,
            ValueRange operands, ArrayRef<NamedAttribute> extra = {},
            StringRef suffix = "");

  func::FuncOp func;
  std::string base;
  gpu::GPUModuleOp module;

private:
  SymbolTable symbols;
};

/// The loop of a kernel-forming pass: for each `OpT` in `module`,
/// `tryRewrite(op, n)` forms its kernels (n: how many ops of that kind its
/// function had before) or returns why it cannot; then the op keeps the
/// generic path with a remark `<op name> keeps the generic GPU path: why`,
/// or with `required` it is an error `cannot use <what>: why`. Returns
/// failure when an error was emitted.
template <typename OpT>
LogicalResult formKernels(ModuleOp module, bool required, StringRef what,
                          function_ref<std::string(OpT, unsigned)> tryRewrite) {
  SmallVector<OpT> ops;
  module.walk([&](OpT op) { ops.push_back(op); });
  bool failed = false;
  llvm::StringMap<unsigned> counters;
  for (OpT op : ops) {
    auto func = op->template getParentOfType<func::FuncOp>();
    unsigned &counter = counters[func ? func.getSymName() : StringRef()];
    std::string why = tryRewrite(op, counter);
    if (why.empty()) {
      ++counter;
      continue;
    }
    if (required) {
      op.emitOpError("cannot use ") << what << ": " << why;
      failed = true;
    } else {
      op.emitRemark() << op->getName()
                      << " keeps the generic GPU path: " << why;
    }
  }
  return failure(failed);
}

/// Replaces every call of a declaration carrying `attrName` by its launches
/// and erases the declarations; a malformed list is an error on the
/// declaration (nothing is emitted for that call).
LogicalResult expandLaunchLists(ModuleOp module, StringRef attrName);

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOGPU_LAUNCHLIST_H
