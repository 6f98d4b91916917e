//===- LaunchList.cpp - kernel launches declared on a call ------*- C++ -*-===//
//
// See LaunchList.h.
//
//===----------------------------------------------------------------------===//

#include "LaunchList.h"

#include "moe/Conversion/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/SmallPtrSet.h"

using namespace mlir;

std::string mlir::moe::kernelBaseName(func::FuncOp func, StringRef kind,
                                      unsigned counter, StringRef suffix) {
  std::string base = (func.getSymName() + "_" + kind).str();
  if (counter)
    base += "_" + std::to_string(counter);
  return base + suffix.str();
}

gpu::GPUModuleOp mlir::moe::createKernelModule(ModuleOp module,
                                               SymbolTable &symbols,
                                               Location loc, StringRef name) {
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(module.getContext()));
  OpBuilder mb = OpBuilder::atBlockEnd(module.getBody());
  auto gm = gpu::GPUModuleOp::create(mb, loc, name);
  symbols.insert(gm);
  return gm;
}

SymbolRefAttr mlir::moe::kernelSymbol(gpu::GPUModuleOp module,
                                      gpu::GPUFuncOp kernel) {
  return SymbolRefAttr::get(module.getSymNameAttr(),
                            {FlatSymbolRefAttr::get(kernel.getNameAttr())});
}

Value mlir::moe::readOnlyBuffer(OpBuilder &b, Location loc, Value tensor,
                                MemRefType type) {
  auto tt = cast<RankedTensorType>(tensor.getType());
  auto exact = MemRefType::get(tt.getShape(), tt.getElementType());
  Value m = bufferization::ToBufferOp::create(b, loc, exact, tensor,
                                              /*read_only=*/true);
  if (exact != type)
    m = memref::CastOp::create(b, loc, type, m);
  return m;
}

Value mlir::moe::writtenTensor(OpBuilder &b, Location loc, Value memref,
                               Type type) {
  auto mt = cast<MemRefType>(memref.getType());
  Value t = bufferization::ToTensorOp::create(
      b, loc, RankedTensorType::get(mt.getShape(), mt.getElementType()), memref,
      /*restrict=*/true, /*writable=*/true);
  if (t.getType() != type)
    t = tensor::CastOp::create(b, loc, type, t);
  return t;
}

DictionaryAttr mlir::moe::makeLaunch(Builder &b, SymbolRefAttr kernel,
                                     ArrayRef<int64_t> args, int64_t threads,
                                     int64_t gridOperand, int64_t gridY,
                                     int64_t gridDivisor, int64_t smemBytes,
                                     ArrayRef<TensorMapArg> tensorMaps) {
  SmallVector<NamedAttribute> entries{
      b.getNamedAttr("kernel", kernel),
      b.getNamedAttr("args", b.getDenseI64ArrayAttr(args)),
      b.getNamedAttr("threads", b.getI64IntegerAttr(threads)),
      b.getNamedAttr("grid", b.getDenseI64ArrayAttr({gridOperand, gridY}))};
  if (gridDivisor != 1)
    entries.push_back(
        b.getNamedAttr("grid_divisor", b.getI64IntegerAttr(gridDivisor)));
  if (smemBytes)
    entries.push_back(b.getNamedAttr("smem", b.getI64IntegerAttr(smemBytes)));
  if (!tensorMaps.empty()) {
    SmallVector<Attribute> maps;
    for (const TensorMapArg &m : tensorMaps)
      maps.push_back(b.getDenseI64ArrayAttr(
          {m.operand, m.box[0], m.box[1], m.box[2], m.dataType, m.swizzle}));
    entries.push_back(b.getNamedAttr("tensor_maps", b.getArrayAttr(maps)));
  }
  return b.getDictionaryAttr(entries);
}

func::FuncOp mlir::moe::declareLaunches(func::FuncOp func,
                                        SymbolTable &symbols, StringRef name,
                                        TypeRange types, StringRef attrName,
                                        ArrayRef<NamedAttribute> entries) {
  OpBuilder b(func);
  auto decl = func::FuncOp::create(b, func.getLoc(), name,
                                   b.getFunctionType(types, {}));
  decl.setPrivate();
  symbols.insert(decl);
  decl->setAttr(attrName, b.getDictionaryAttr(entries));
  return decl;
}

mlir::moe::KernelRewrite::KernelRewrite(Operation *op, StringRef kind,
                                        unsigned counter)
    : KernelRewrite(op, kernelBaseName(op->getParentOfType<func::FuncOp>(),
                                       kind, counter)) {}

mlir::moe::KernelRewrite::KernelRewrite(Operation *op, StringRef base)
    : func(op->getParentOfType<func::FuncOp>()), base(base.str()),
      symbols(op->getParentOfType<ModuleOp>()) {
  module = createKernelModule(op->getParentOfType<ModuleOp>(), symbols,
                              op->getLoc(), this->base);
}

void mlir::moe::KernelRewrite::call(ImplicitLocOpBuilder &b,
                                    StringRef attrName,
                                    ArrayRef<Attribute> launches,
                                    ValueRange operands,
                                    ArrayRef<NamedAttribute> extra,
                                    StringRef suffix) {
  SmallVector<NamedAttribute> entries(extra);
  entries.push_back(b.getNamedAttr("launches", b.getArrayAttr(launches)));
  func::FuncOp decl = declareLaunches(func, symbols,
                                      base + suffix.str() + "_launch",
                                      operands.getTypes(), attrName, entries);
  func::CallOp::create(b, decl, operands);
}

/// The device address (i64) of the TMA tensor map of `buffer` (a
/// contiguous rank-3 memref) with `fields` = box0, box1, box2, data type,
/// swizzle: a call of the runtime's mgpuTensorMap3D, declared in `module`
/// on first use.
static Value tensorMapAddress(ImplicitLocOpBuilder &b, ModuleOp module,
                              Value buffer, ArrayRef<int64_t> fields) {
  constexpr StringLiteral name = "mgpuTensorMap3D";
  Type i64 = b.getI64Type();
  auto fn = module.lookupSymbol<func::FuncOp>(name);
  if (!fn) {
    OpBuilder mb = OpBuilder::atBlockBegin(module.getBody());
    fn = func::FuncOp::create(
        mb, b.getLoc(), name,
        mb.getFunctionType(SmallVector<Type>(9, i64), {i64}));
    fn.setPrivate();
    // It reads the buffer's address, not its contents: launches before it
    // need not have finished (moe-gpu-async-launches).
    fn->setAttr(moe::kNoBufferAccessAttr, mb.getUnitAttr());
  }
  auto i64c = [&](int64_t v) -> Value {
    return arith::ConstantOp::create(b, b.getI64IntegerAttr(v));
  };
  auto type = cast<MemRefType>(buffer.getType());
  Value address = arith::IndexCastUIOp::create(
      b, i64, memref::ExtractAlignedPointerAsIndexOp::create(b, buffer));
  SmallVector<Value> operands{address};
  for (int64_t d : type.getShape())
    operands.push_back(i64c(d));
  for (int64_t f : fields)
    operands.push_back(i64c(f));
  return func::CallOp::create(b, fn, operands).getResult(0);
}

LogicalResult mlir::moe::expandLaunchLists(ModuleOp module,
                                           StringRef attrName) {
  SmallVector<func::CallOp> calls;
  module.walk([&](func::CallOp call) {
    auto callee = module.lookupSymbol<func::FuncOp>(call.getCallee());
    if (callee && callee->hasAttr(attrName))
      calls.push_back(call);
  });
  llvm::SmallPtrSet<Operation *, 4> decls;
  for (func::CallOp call : calls) {
    auto callee = module.lookupSymbol<func::FuncOp>(call.getCallee());
    decls.insert(callee);
    auto info = callee->getAttrOfType<DictionaryAttr>(attrName);
    auto launches = info ? info.getAs<ArrayAttr>("launches") : ArrayAttr();
    int64_t numOperands = call.getNumOperands();
    // Checks the whole list before emitting anything.
    auto wellFormed = [&](Attribute attr) {
      auto d = dyn_cast<DictionaryAttr>(attr);
      if (!d || !d.getAs<SymbolRefAttr>("kernel") ||
          !d.getAs<IntegerAttr>("threads"))
        return false;
      auto grid = d.getAs<DenseI64ArrayAttr>("grid");
      auto args = d.getAs<DenseI64ArrayAttr>("args");
      auto divisor = d.get("grid_divisor");
      if (!grid || grid.size() != 2 || grid[0] >= numOperands ||
          grid[0] < -1 || !args)
        return false;
      if (divisor && (!isa<IntegerAttr>(divisor) ||
                      cast<IntegerAttr>(divisor).getInt() < 1))
        return false;
      auto smem = d.get("smem");
      if (smem &&
          (!isa<IntegerAttr>(smem) || cast<IntegerAttr>(smem).getInt() < 1 ||
           cast<IntegerAttr>(smem).getInt() > INT32_MAX))
        return false;
      if (auto maps = d.get("tensor_maps")) {
        auto list = dyn_cast<ArrayAttr>(maps);
        if (!list)
          return false;
        for (Attribute m : list) {
          auto fields = dyn_cast<DenseI64ArrayAttr>(m);
          if (!fields || fields.size() != 6 || fields[0] < 0 ||
              fields[0] >= numOperands)
            return false;
          // A contiguous rank-3 buffer of static shape (offset 0).
          auto type =
              dyn_cast<MemRefType>(call.getOperand(fields[0]).getType());
          if (!type || type.getRank() != 3 || !type.hasStaticShape() ||
              !type.getLayout().isIdentity())
            return false;
        }
      }
      return llvm::all_of(args.asArrayRef(), [&](int64_t i) {
        return i >= 0 && i < numOperands;
      });
    };
    if (!launches || !llvm::all_of(launches, wellFormed))
      return callee.emitOpError("malformed ") << attrName;
    ImplicitLocOpBuilder b(call.getLoc(), call);
    auto c = [&](int64_t v) -> Value {
      return arith::ConstantIndexOp::create(b, v);
    };
    Value one = c(1);
    for (auto d : launches.getAsRange<DictionaryAttr>()) {
      ArrayRef<int64_t> grid = d.getAs<DenseI64ArrayAttr>("grid");
      Value gridX = one;
      if (grid[0] >= 0) {
        gridX = memref::DimOp::create(b, call.getOperand(grid[0]), 0);
        if (auto div = d.getAs<IntegerAttr>("grid_divisor");
            div && div.getInt() != 1)
          gridX = arith::CeilDivUIOp::create(b, gridX, c(div.getInt()));
      }
      SmallVector<Value> args;
      for (int64_t i : d.getAs<DenseI64ArrayAttr>("args").asArrayRef())
        args.push_back(call.getOperand(i));
      if (auto maps = d.getAs<ArrayAttr>("tensor_maps"))
        for (auto m : maps.getAsRange<DenseI64ArrayAttr>())
          args.push_back(tensorMapAddress(b, module, call.getOperand(m[0]),
                                          m.asArrayRef().drop_front()));
      Value smem;
      if (auto bytes = d.getAs<IntegerAttr>("smem"))
        smem = arith::ConstantOp::create(
            b, b.getI32IntegerAttr(int32_t(bytes.getInt())));
      gpu::LaunchFuncOp::create(
          b, d.getAs<SymbolRefAttr>("kernel"),
          gpu::KernelDim3{gridX, c(grid[1]), one},
          gpu::KernelDim3{c(d.getAs<IntegerAttr>("threads").getInt()), one,
                          one},
          /*dynamicSharedMemorySize=*/smem, args, /*asyncObject=*/Value());
    }
    call.erase();
  }
  for (Operation *decl : decls)
    if (SymbolTable::symbolKnownUseEmpty(decl, module))
      decl->erase();
  return success();
}
