//===- MoELinearToGPU.cpp - warp-per-output kernel for moe.linear -*- C++
//-*-===//
//
// convert-moe-linear-to-gpu and moe-gpu-launch-linear-kernels: each
// moe.linear `y = x W^T (+ b)` that the routing kernel did not absorb (the
// router GEMM below route-fuse-linear-min-tokens, routers with a bias, the
// group router of hierarchical routing, the LoRA base) becomes one kernel in
// which a warp forms one output column for a few tokens: its 32 lanes read
// the weight row and the tokens' x rows in contiguous 16-byte vectors,
// accumulate in f32 and sum by a shuffle butterfly. The generic path
// (convert-moe-to-linalg) gives one thread per output, each walking its
// whole dot product alone with loads strided by the row length across the
// warp; at a few tokens only T x O threads exist (O = 256 for DeepSeek-V3's
// router: eight warps on the whole GPU, 7168 dependent loads each).
// docs/notes/gpu-path.md ("Linear kernel") has the design and the checks.
//
// What was learned from elsewhere (no code copied): the warp-per-row GEMV
// of vLLM's and SGLang's router/gating kernels (a warp reduces one dot
// product with __shfl_xor_sync after vectorised loads); the PTX ISA for
// ld.global.v4 and shfl.sync.
//
//===----------------------------------------------------------------------===//

#include "LaunchList.h"
#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/StringMap.h"

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOELINEARTOGPU
#define GEN_PASS_DEF_MOEGPULAUNCHLINEARKERNELS
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Name of the discardable attribute on the launch declaration.
constexpr StringLiteral kLinearKernelAttr = "moe.linear_kernel";
/// Warps (output columns) per block.
constexpr int64_t kWarps = 4;
constexpr int64_t kWarpSize = 32;
/// Tokens per warp: each weight vector loaded is used for this many x rows.
constexpr int64_t kTokens = 4;
/// Independent vector loads per lane and step (loads in flight per warp).
constexpr int64_t kMaxUnroll = 4;

/// What the kernel needs to know about the op.
struct LinearLayout {
  /// Input features (the reduction) and outputs.
  int64_t in = 0, out = 0;
  Type xElt, wElt, biasElt, resultElt;
  bool hasBias = false;
  /// Elements per vector load (both operands: at most 16 bytes of the
  /// wider one, dividing `in`), and vectors per lane and step.
  int64_t vec = 1, unroll = 1;
  int64_t step() const { return kWarpSize * vec * unroll; }
};

bool isKernelFloat(Type t) { return t.isBF16() || t.isF16() || t.isF32(); }

/// Why `op` cannot take the linear kernel ("" if it can); fills `l`.
std::string analyse(LinearOp op, LinearLayout &l) {
  auto x = cast<RankedTensorType>(op.getInput().getType());
  auto w = cast<RankedTensorType>(op.getWeight().getType());
  auto y = cast<RankedTensorType>(op.getType());
  if (x.getRank() != 2 || w.getRank() != 2)
    return "input or weight is not 2-D";
  if (x.isDynamicDim(1) || !w.hasStaticShape())
    return "the input features or the weight shape are dynamic";
  l.in = w.getDimSize(1);
  l.out = w.getDimSize(0);
  l.xElt = x.getElementType();
  l.wElt = w.getElementType();
  l.resultElt = y.getElementType();
  if (!isKernelFloat(l.xElt) || !isKernelFloat(l.wElt) ||
      !isKernelFloat(l.resultElt))
    return "an element type is not bf16, f16 or f32";
  if (l.in == 0 || l.out == 0)
    return "an empty weight";
  // A kernel cannot read the host's constants (they are host globals).
  if (matchPattern(op.getWeight(), m_Constant()))
    return "the weight is a compile-time constant";
  if (Value bias = op.getBias()) {
    if (matchPattern(bias, m_Constant()))
      return "the bias is a compile-time constant";
    l.hasBias = true;
    l.biasElt = cast<ShapedType>(bias.getType()).getElementType();
    if (!isKernelFloat(l.biasElt))
      return "the bias is not bf16, f16 or f32";
  }
  if (!op->getParentOfType<func::FuncOp>())
    return "the op is not in a func.func";
  unsigned widest =
      std::max(l.xElt.getIntOrFloatBitWidth(), l.wElt.getIntOrFloatBitWidth()) /
      8;
  l.vec = 16 / widest;
  while (l.in % l.vec)
    l.vec /= 2;
  // Unroll while a step still fits in the row: every lane busy, fewer
  // guarded tails.
  l.unroll = 1;
  while (l.unroll < kMaxUnroll && 2 * l.step() <= l.in)
    l.unroll *= 2;
  return "";
}

/// Index arithmetic inside the kernel.
struct IB {
  ImplicitLocOpBuilder &b;
  Value c(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value add(Value x, int64_t y) { return add(x, c(y)); }
  Value mul(Value x, int64_t y) { return arith::MulIOp::create(b, x, c(y)); }
  Value min(Value x, Value y) { return arith::MinUIOp::create(b, x, y); }
  Value ult(Value x, Value y) {
    return arith::CmpIOp::create(b, arith::CmpIPredicate::ult, x, y);
  }
};

/// Builds the kernel: warp `w` of block (bx, by) computes output column
/// n = 4 by + w of tokens t = 4 bx .. 4 bx + 3 (rows past T and columns
/// past O are clamped for the loads and not stored, so every warp runs the
/// same loop and its shuffles see all 32 lanes). In each step of
/// 32 * vec * unroll features lane l loads, for u < unroll, the vector of
/// `vec` features at c + (32 u + l) vec from the weight row and from each
/// token's x row, and accumulates the products in f32 vectors; then the
/// vector lanes are added, the 32 lanes' sums combined by a butterfly, and
/// lane 0 adds the bias, rounds and stores the tokens' outputs.
gpu::GPUFuncOp buildLinearKernel(OpBuilder &mb, Location loc, StringRef name,
                                 const LinearLayout &l) {
  MLIRContext *ctx = mb.getContext();
  Type f32 = Float32Type::get(ctx);
  SmallVector<Type> args{MemRefType::get({ShapedType::kDynamic, l.in}, l.xElt),
                         MemRefType::get({l.out, l.in}, l.wElt)};
  if (l.hasBias)
    args.push_back(MemRefType::get({l.out}, l.biasElt));
  args.push_back(MemRefType::get({ShapedType::kDynamic, l.out}, l.resultElt));
  auto fn =
      gpu::GPUFuncOp::create(mb, loc, name, FunctionType::get(ctx, args, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), mb.getUnitAttr());
  fn.setKnownBlockSizeAttr(
      mb.getDenseI32ArrayAttr({int32_t(kWarps * kWarpSize), 1, 1}));
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  IB k{b};
  Value x = entry.getArgument(0), w = entry.getArgument(1);
  Value bias = l.hasBias ? entry.getArgument(2) : Value();
  Value y = entry.getArgument(l.hasBias ? 3 : 2);

  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value lane = arith::RemUIOp::create(b, tid, k.c(kWarpSize));
  Value warp = arith::DivUIOp::create(b, tid, k.c(kWarpSize));
  Value bx = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value by = gpu::BlockIdOp::create(b, gpu::Dimension::y);
  Value numTokens = memref::DimOp::create(b, x, 0);
  Value col = k.add(k.mul(by, kWarps), warp);
  Value colOk = k.ult(col, k.c(l.out));
  Value colLoad = k.min(col, k.c(l.out - 1));
  Value lastTok = arith::SubIOp::create(b, numTokens, k.c(1));
  SmallVector<Value> toks, tokLoad;
  for (int64_t j = 0; j < kTokens; ++j) {
    toks.push_back(k.add(k.mul(bx, kTokens), j));
    tokLoad.push_back(k.min(toks.back(), lastTok));
  }

  auto fvec = VectorType::get({l.vec}, f32);
  auto xvec = VectorType::get({l.vec}, l.xElt);
  auto wvec = VectorType::get({l.vec}, l.wElt);
  auto alignOf = [&](Type elt) {
    return llvm::Align(l.vec * elt.getIntOrFloatBitWidth() / 8);
  };
  Value zeroV = arith::ConstantOp::create(
      b, DenseElementsAttr::get(fvec, b.getF32FloatAttr(0.0)));
  // The loop bound is the same for every lane; a step past `in` (when the
  // row is not a multiple of the step) is guarded per vector.
  int64_t span = (l.in + l.step() - 1) / l.step() * l.step();
  bool guarded = span != l.in;
  Value laneOff = k.mul(lane, l.vec);
  SmallVector<Value> init(kTokens, zeroV);
  auto loop = scf::ForOp::create(b, k.c(0), k.c(span), k.c(l.step()), init);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value c = loop.getInductionVar();
    SmallVector<Value> acc(loop.getRegionIterArgs());
    for (int64_t u = 0; u < l.unroll; ++u) {
      Value h = k.add(k.add(c, laneOff), u * kWarpSize * l.vec);
      Value ok, hLoad = h;
      if (guarded) {
        ok = k.ult(h, k.c(l.in));
        hLoad = k.min(h, k.c(l.in - l.vec));
      }
      Value wv = vector::LoadOp::create(b, wvec, w, ValueRange{colLoad, hLoad},
                                        /*nontemporal=*/false, alignOf(l.wElt));
      if (!l.wElt.isF32())
        wv = arith::ExtFOp::create(b, fvec, wv);
      for (int64_t j = 0; j < kTokens; ++j) {
        Value xv =
            vector::LoadOp::create(b, xvec, x, ValueRange{tokLoad[j], hLoad},
                                   /*nontemporal=*/false, alignOf(l.xElt));
        if (!l.xElt.isF32())
          xv = arith::ExtFOp::create(b, fvec, xv);
        Value prod = arith::MulFOp::create(b, xv, wv);
        // Past the row: no product (not x * 0, which is NaN for x = inf).
        if (guarded)
          prod = arith::SelectOp::create(b, ok, prod, zeroV);
        acc[j] = arith::AddFOp::create(b, acc[j], prod);
      }
    }
    scf::YieldOp::create(b, acc);
  }

  // Per token: the vector's elements, then the butterfly over the lanes.
  SmallVector<Value> sums;
  for (int64_t j = 0; j < kTokens; ++j) {
    Value s = vector::ExtractOp::create(b, loop.getResult(j), int64_t(0));
    for (int64_t v = 1; v < l.vec; ++v)
      s = arith::AddFOp::create(
          b, s, vector::ExtractOp::create(b, loop.getResult(j), v));
    for (int64_t off = kWarpSize / 2; off >= 1; off /= 2)
      s = arith::AddFOp::create(
          b, s,
          gpu::ShuffleOp::create(b, s, static_cast<int32_t>(off),
                                 static_cast<int32_t>(kWarpSize),
                                 gpu::ShuffleMode::XOR)
              .getShuffleResult());
    sums.push_back(s);
  }

  // Lane 0 of a warp with a real column stores the real tokens' outputs.
  Value store = arith::AndIOp::create(
      b, colOk,
      arith::CmpIOp::create(b, arith::CmpIPredicate::eq, lane, k.c(0)));
  auto ifStore = scf::IfOp::create(b, store, /*withElseRegion=*/false);
  b.setInsertionPointToStart(&ifStore.getThenRegion().front());
  Value bv;
  if (bias) {
    bv = memref::LoadOp::create(b, bias, ValueRange{col});
    if (!l.biasElt.isF32())
      bv = arith::ExtFOp::create(b, f32, bv);
  }
  for (int64_t j = 0; j < kTokens; ++j) {
    OpBuilder::InsertionGuard g(b);
    auto ifTok = scf::IfOp::create(b, k.ult(toks[j], numTokens),
                                   /*withElseRegion=*/false);
    b.setInsertionPointToStart(&ifTok.getThenRegion().front());
    Value v = sums[j];
    if (bias)
      v = arith::AddFOp::create(b, v, bv);
    if (!l.resultElt.isF32())
      v = arith::TruncFOp::create(b, l.resultElt, v);
    memref::StoreOp::create(b, v, y, ValueRange{toks[j], col});
  }
  b.setInsertionPointToEnd(&entry);
  gpu::ReturnOp::create(b);
  return fn;
}

//===----------------------------------------------------------------------===//
// convert-moe-linear-to-gpu
//===----------------------------------------------------------------------===//

struct ConvertMoELinearToGPU
    : public moe::impl::ConvertMoELinearToGPUBase<ConvertMoELinearToGPU> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<LinearOp> ops;
    module.walk([&](LinearOp op) { ops.push_back(op); });
    bool failed = false;
    // Linears per function so far: kernels are named <function>_linear[_N].
    llvm::StringMap<unsigned> counters;
    for (LinearOp op : ops) {
      LinearLayout l;
      std::string why = analyse(op, l);
      if (!why.empty()) {
        if (required) {
          op.emitOpError("cannot use the linear kernel: ") << why;
          failed = true;
        } else {
          op.emitRemark("moe.linear keeps the generic GPU path: ") << why;
        }
        continue;
      }
      auto func = op->getParentOfType<func::FuncOp>();
      rewrite(op, l, counters[func.getSymName()]++);
    }
    if (failed)
      signalPassFailure();
  }

  /// Replaces `op` by the host code on buffers that calls the kernel (the
  /// launch comes after bufferization: moe-gpu-launch-linear-kernels).
  void rewrite(LinearOp op, const LinearLayout &l, unsigned counter) {
    ModuleOp module = getOperation();
    MLIRContext *ctx = &getContext();
    Location loc = op.getLoc();
    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    UnitAttr::get(ctx));
    auto func = op->getParentOfType<func::FuncOp>();
    std::string base = (func.getSymName() + "_linear").str();
    if (counter)
      base += "_" + std::to_string(counter);

    SymbolTable symbols(module);
    OpBuilder mb = OpBuilder::atBlockEnd(module.getBody());
    auto gm = gpu::GPUModuleOp::create(mb, loc, base);
    symbols.insert(gm);
    OpBuilder kb = OpBuilder::atBlockEnd(gm.getBody());
    auto kernel = buildLinearKernel(kb, loc, "linear", l);
    auto kernelRef = SymbolRefAttr::get(
        gm.getSymNameAttr(), {FlatSymbolRefAttr::get(kernel.getNameAttr())});

    OpBuilder ob(op);
    ImplicitLocOpBuilder b(loc, ob);
    auto argTypes = kernel.getFunctionType().getInputs();
    SmallVector<Value> tensors{op.getInput(), op.getWeight()};
    if (l.hasBias)
      tensors.push_back(op.getBias());
    SmallVector<Value> operands;
    for (auto [t, type] : llvm::zip(tensors, argTypes))
      operands.push_back(readOnlyBuffer(b, loc, t, cast<MemRefType>(type)));
    Value numTokens = tensor::DimOp::create(b, op.getInput(), 0);
    Value result = memref::AllocOp::create(b, cast<MemRefType>(argTypes.back()),
                                           ValueRange{numTokens});
    operands.push_back(result);

    // One launch: ceil(T / 4) x ceil(O / 4) blocks of 128 threads, T from
    // the result buffer (the last operand).
    Builder attrs(ctx);
    int64_t n = operands.size();
    func::FuncOp decl = declareLaunches(
        func, symbols, base + "_launch", ValueRange(operands).getTypes(),
        kLinearKernelAttr,
        {attrs.getNamedAttr(
            "launches",
            attrs.getArrayAttr({makeLaunch(
                attrs, kernelRef, llvm::to_vector(llvm::seq<int64_t>(0, n)),
                kWarps * kWarpSize, n - 1, (l.out + kWarps - 1) / kWarps,
                kTokens)}))});
    func::CallOp::create(b, decl, operands);
    op->replaceAllUsesWith(
        ValueRange{writtenTensor(b, loc, result, op.getType())});
    op.erase();
  }
};

//===----------------------------------------------------------------------===//
// moe-gpu-launch-linear-kernels
//===----------------------------------------------------------------------===//

struct MoEGPULaunchLinearKernels
    : public moe::impl::MoEGPULaunchLinearKernelsBase<
          MoEGPULaunchLinearKernels> {
  void runOnOperation() override {
    if (failed(expandLaunchLists(getOperation(), kLinearKernelAttr)))
      signalPassFailure();
  }
};

} // namespace
