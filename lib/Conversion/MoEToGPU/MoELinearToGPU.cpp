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
// convert-moe-lora-to-gpu forms the LoRA experts' kernels: lora_a (the A
// products, a warp each) and either lora_b + the combine as it is, or, for
// the AT-MoE output (the base moe.linear as the combine's only addend),
// lora_out: the linear kernel of the base with the B products added into
// its lanes' partial sums.
// A projected router (Nexus) becomes swiglu_up (the gate and up rows of
// W_1 in one warp per output, SwiGLU in lane 0) and a moe.linear for W_2
// that the linear kernel takes.
// docs/notes/gpu-path.md ("Linear kernel") has the design and the checks.
//
// What was learned from elsewhere (no code copied): the warp-per-row GEMV
// of vLLM's and SGLang's router/gating kernels (a warp reduces one dot
// product with __shfl_xor_sync after vectorised loads); the PTX ISA for
// ld.global.v4 and shfl.sync.
//
//===----------------------------------------------------------------------===//

#include "LaunchList.h"
#include "MmaLinear.h"
#include "WarpKernel.h"
#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
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
#define GEN_PASS_DEF_CONVERTMOELORATOGPU
#define GEN_PASS_DEF_MOEGPULAUNCHLINEARKERNELS
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

// (NVGPUDialect.h, needed for the tensor-core kernel's dialects, declares a
// global kWarpSize too.)
using mlir::moe::kWarpSize;

/// Name of the discardable attribute on the launch declaration.
constexpr StringLiteral kLinearKernelAttr = "moe.linear_kernel";
/// Warps (output columns) per block.
constexpr int64_t kWarps = 4;
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

/// The vector width (at most 16 bytes of the wider operand, dividing the
/// row) and the unroll (while a step still fits in the row: every lane
/// busy, fewer guarded tails) of `l`.
void chooseVectors(LinearLayout &l) {
  unsigned widest =
      std::max(l.xElt.getIntOrFloatBitWidth(), l.wElt.getIntOrFloatBitWidth()) /
      8;
  l.vec = 16 / widest;
  while (l.in % l.vec)
    l.vec /= 2;
  l.unroll = 1;
  while (l.unroll < kMaxUnroll && 2 * l.step() <= l.in)
    l.unroll *= 2;
}

/// The tensor-core kernel's view of `l` (no element type when x and the
/// weight differ: the MMA takes one operand type).
MmaLinearSpec mmaSpec(const LinearLayout &l) {
  MmaLinearSpec s;
  s.in = l.in;
  s.out = l.out;
  s.elt = l.xElt == l.wElt ? l.xElt : Type();
  s.biasElt = l.hasBias ? l.biasElt : Type();
  s.resultElt = l.resultElt;
  return s;
}

/// Whether the host should get the tensor-core kernel for `s`: "" if so;
/// else why not, also as a remark on `op` where O >= 64 (a GEMM wide
/// enough for it to matter; router GEMMs are narrower) unless the option
/// turned it off.
/// `minTokens` is the option (-1: from the shape, 0: never); on success
/// it is the threshold the host compares T with.
std::string planMma(Operation *op, Value x, const MmaLinearSpec &s,
                    StringRef chip, int64_t &minTokens, MmaLinearPlan &plan) {
  if (minTokens == 0)
    return "mma-min-tokens=0";
  // The routing pass chose the threshold (T outside the fused routing
  // kernel's range).
  if (auto at = op->getAttrOfType<IntegerAttr>(kMmaMinTokensAttr)) {
    std::string why = planMmaLinear(s, chip, plan);
    if (!why.empty())
      return why;
    minTokens = at.getInt();
    return "";
  }
  // A fixed row count below the threshold (the projected router's W_2 GEMM
  // on E rows) never takes it (the default threshold is at least 128).
  auto xType = cast<ShapedType>(x.getType());
  auto fewRows = [&](int64_t threshold) {
    return !xType.isDynamicDim(0) && xType.getDimSize(0) < threshold;
  };
  // The host runs `op` only below some T (the router GEMM beside the fused
  // routing kernel): a kernel for T >= the threshold would never run.
  auto below = op->getAttrOfType<IntegerAttr>(kTokensBelowAttr);
  auto runsBelow = [&](int64_t threshold) {
    return below && below.getInt() <= threshold;
  };
  if (fewRows(minTokens < 0 ? 128 : minTokens) ||
      runsBelow(minTokens < 0 ? 128 : minTokens))
    return "fewer rows than the threshold";
  std::string why = planMmaLinear(s, chip, plan);
  if (!why.empty()) {
    if (s.out >= 64)
      op->emitRemark() << op->getName()
                       << " has no tensor-core kernel (the warp-per-output "
                          "kernel serves every T): "
                       << why;
    return why;
  }
  if (minTokens < 0)
    minTokens = plan.defaultMinTokens();
  if (fewRows(minTokens) || runsBelow(minTokens))
    return "fewer rows than the threshold";
  return "";
}

/// At `b`: `many()` when T (`numTokens`) is at least `minTokens`, else
/// `few()`, as an scf.if yielding their one result of `type`.
Value branchOnTokens(ImplicitLocOpBuilder &b, Value numTokens,
                     int64_t minTokens, Type type, function_ref<Value()> many,
                     function_ref<Value()> few) {
  Value big = arith::CmpIOp::create(
      b, arith::CmpIPredicate::uge, numTokens,
      arith::ConstantIndexOp::create(b, minTokens));
  auto branch = scf::IfOp::create(b, TypeRange{type}, big,
                                  /*addThenBlock=*/true,
                                  /*addElseBlock=*/true);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(&branch.getThenRegion().front());
  scf::YieldOp::create(b, many());
  b.setInsertionPointToStart(&branch.getElseRegion().front());
  scf::YieldOp::create(b, few());
  return branch.getResult(0);
}

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
  chooseVectors(l);
  return "";
}

/// Why a moe.projected_router cannot take the swiglu_up kernel and the
/// linear kernel ("" if it can); fills `l` for swiglu_up (x = D : E x m,
/// weight W_1 : 2h' x m, h' outputs in f32).
std::string analyse(ProjectedRouterOp op, LinearLayout &l) {
  auto d = cast<RankedTensorType>(op.getDomainEmbeddings().getType());
  auto w1 = cast<RankedTensorType>(op.getProjW1().getType());
  auto w2 = cast<RankedTensorType>(op.getProjW2().getType());
  l.in = d.getDimSize(1);
  l.out = w1.getDimSize(0) / 2;
  l.xElt = d.getElementType();
  l.wElt = w1.getElementType();
  l.resultElt = Float32Type::get(op.getContext());
  if (!isKernelFloat(l.xElt) || !isKernelFloat(l.wElt) ||
      !isKernelFloat(w2.getElementType()))
    return "an element type is not bf16, f16 or f32";
  if (l.in == 0 || l.out == 0 || d.getDimSize(0) == 0 || w2.getDimSize(0) == 0)
    return "an empty operand";
  // A kernel cannot read the host's constants (they are host globals).
  for (Value v : op->getOperands())
    if (matchPattern(v, m_Constant()))
      return "an operand is a compile-time constant";
  if (!op->getParentOfType<func::FuncOp>())
    return "the op is not in a func.func";
  chooseVectors(l);
  return "";
}

/// The dot products of `xRows.size()` rows of `x` (at index (xRow, h))
/// with one weight row (at `wIndex(h)` in `w`), each over `l.in` features,
/// by the 32 lanes of a warp: per step of 32 * vec * unroll features lane
/// `lane` loads, for u < unroll, the `vec` features at c + (32 u + lane) vec
/// of the weight row and of each x row as 16-byte (at most) vectors,
/// multiplies in f32 and accumulates f32 vectors; then the vector's elements
/// are added and the lanes combined by a butterfly (every lane ends with
/// the sums). A step past `in` (when the row is not a multiple of the step)
/// is guarded per vector: the loads are clamped and the products selected
/// away (not x * 0, which is NaN for an infinite x). All 32 lanes must call
/// it (the loop bound is the same for every lane). `laneTerms`, when given,
/// holds one f32 per x row that each lane adds to its partial sum before the
/// butterfly (the fused LoRA term of lora_out).
SmallVector<Value> warpDots(ImplicitLocOpBuilder &b, IndexArith &k,
                            const LinearLayout &l, Value lane,
                            function_ref<SmallVector<Value>(Value)> wIndex,
                            ArrayRef<Value> xRows, Value x, Value w,
                            ArrayRef<Value> laneTerms = {}) {
  Type f32 = b.getF32Type();
  auto fvec = VectorType::get({l.vec}, f32);
  auto xvec = VectorType::get({l.vec}, l.xElt);
  auto wvec = VectorType::get({l.vec}, l.wElt);
  auto alignOf = [&](Type elt) {
    return llvm::Align(l.vec * elt.getIntOrFloatBitWidth() / 8);
  };
  Value zeroV = arith::ConstantOp::create(
      b, DenseElementsAttr::get(fvec, b.getF32FloatAttr(0.0)));
  int64_t span = (l.in + l.step() - 1) / l.step() * l.step();
  bool guarded = span != l.in;
  Value laneOff = k.mul(lane, l.vec);
  SmallVector<Value> init(xRows.size(), zeroV);
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
      Value wv = vector::LoadOp::create(b, wvec, w, wIndex(hLoad),
                                        /*nontemporal=*/false, alignOf(l.wElt));
      if (!l.wElt.isF32())
        wv = arith::ExtFOp::create(b, fvec, wv);
      for (auto [j, row] : llvm::enumerate(xRows)) {
        Value xv = vector::LoadOp::create(b, xvec, x, ValueRange{row, hLoad},
                                          /*nontemporal=*/false,
                                          alignOf(l.xElt));
        if (!l.xElt.isF32())
          xv = arith::ExtFOp::create(b, fvec, xv);
        Value prod = arith::MulFOp::create(b, xv, wv);
        if (guarded)
          prod = arith::SelectOp::create(b, ok, prod, zeroV);
        acc[j] = arith::AddFOp::create(b, acc[j], prod);
      }
    }
    scf::YieldOp::create(b, acc);
  }
  SmallVector<Value> sums;
  for (auto [row, v] : llvm::enumerate(loop.getResults())) {
    Value s = vector::ExtractOp::create(b, v, int64_t(0));
    for (int64_t e = 1; e < l.vec; ++e)
      s = arith::AddFOp::create(b, s, vector::ExtractOp::create(b, v, e));
    if (!laneTerms.empty())
      s = arith::AddFOp::create(b, s, laneTerms[row]);
    for (int64_t off = kWarpSize / 2; off >= 1; off /= 2)
      s = arith::AddFOp::create(
          b, s,
          gpu::ShuffleOp::create(b, s, static_cast<int32_t>(off),
                                 static_cast<int32_t>(kWarpSize),
                                 gpu::ShuffleMode::XOR)
              .getShuffleResult());
    sums.push_back(s);
  }
  return sums;
}

/// What the LoRA kernels need to know about a moe.lora_experts op.
struct LoRALayout {
  /// The A products: x rows against A_e rows (in = input features).
  LinearLayout a;
  int64_t e = 0, r = 0, k = 0, out = 0, offset = 0;
  Type bElt;
  double scale = 1.0;
};

/// The expert of slot (t, k) relative to the op, clamped into [0, E) for
/// the loads, and whether the slot is one of the op's.
std::pair<Value, Value> loraExpert(ImplicitLocOpBuilder &b, IndexArith &k,
                                   const LoRALayout &l, Value idx, Value t,
                                   Value slot) {
  Value j = memref::LoadOp::create(b, idx, ValueRange{t, slot});
  Value e = arith::IndexCastOp::create(
      b, b.getIndexType(),
      arith::SubIOp::create(
          b, j, arith::ConstantOp::create(b, b.getI32IntegerAttr(l.offset))));
  // Unsigned: a negative id is past E too.
  Value ok = k.ult(e, k.c(l.e));
  return {arith::SelectOp::create(b, ok, e, k.c(0)), ok};
}

/// Builds the kernel: warp `w` of block (bx, by) computes output column
/// n = 4 by + w of tokens t = 4 bx .. 4 bx + 3 (rows past T and columns
/// past O are clamped for the loads and not stored, so every warp runs the
/// same loop and its shuffles see all 32 lanes). In each step of
/// 32 * vec * unroll features lane l loads, for u < unroll, the vector of
/// `vec` features at c + (32 u + l) vec from the weight row and from each
/// token's x row, and accumulates the products in f32 vectors; then the
/// vector lanes are added, the 32 lanes' sums combined by a butterfly, and
/// lane 0 adds the bias, rounds and stores the tokens' outputs.
///
/// With `lora` (lora_out, the fused LoRA base, convert-moe-lora-to-gpu) the
/// kernel also takes the routing indices, u (T x K x r f32: lora_a's
/// products already times the routing weight and alpha / r, 0 for a slot
/// of no expert of the op) and B (E x Out x r), and adds to token t's
/// column n the K r terms u[t, k, j] B_e[n, j] (e the expert of slot
/// (t, k)): lane l takes the terms l, l + 32, ... and adds them to its
/// partial sum before the butterfly, so the combine's weighted sum and the
/// base come out of the same reduction, rounded once.
///
/// With `swigluPair` (swiglu_up, the first kernel of a projected router) the
/// weight has 2 O rows, gate then up: the warp forms both dot products of
/// its column n (rows n and n + O) and lane 0 stores
/// (g sigmoid(g)) u, the SwiGLU of §3 as convert-moe-to-linalg computes it.
gpu::GPUFuncOp buildLinearKernel(OpBuilder &mb, Location loc, StringRef name,
                                 const LinearLayout &l,
                                 const LoRALayout *lora = nullptr,
                                 bool swigluPair = false) {
  MLIRContext *ctx = mb.getContext();
  Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);
  SmallVector<Type> args{
      MemRefType::get({ShapedType::kDynamic, l.in}, l.xElt),
      MemRefType::get({(swigluPair ? 2 : 1) * l.out, l.in}, l.wElt)};
  if (l.hasBias)
    args.push_back(MemRefType::get({l.out}, l.biasElt));
  if (lora) {
    args.push_back(MemRefType::get({ShapedType::kDynamic, lora->k}, i32));
    args.push_back(
        MemRefType::get({ShapedType::kDynamic, lora->k, lora->r}, f32));
    args.push_back(MemRefType::get({lora->e, lora->out, lora->r}, lora->bElt));
  }
  args.push_back(MemRefType::get({ShapedType::kDynamic, l.out}, l.resultElt));
  auto fn =
      gpu::GPUFuncOp::create(mb, loc, name, FunctionType::get(ctx, args, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), mb.getUnitAttr());
  fn.setKnownBlockSizeAttr(
      mb.getDenseI32ArrayAttr({int32_t(kWarps * kWarpSize), 1, 1}));
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  IndexArith k{b};
  unsigned argNo = 0;
  Value x = entry.getArgument(argNo++), w = entry.getArgument(argNo++);
  Value bias = l.hasBias ? entry.getArgument(argNo++) : Value();
  Value idx, u, bw;
  if (lora) {
    idx = entry.getArgument(argNo++);
    u = entry.getArgument(argNo++);
    bw = entry.getArgument(argNo++);
  }
  Value y = entry.getArgument(argNo);

  Value lane, col;
  std::tie(lane, col) = k.laneAndRow(kWarps, gpu::Dimension::y);
  Value bx = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value numTokens = memref::DimOp::create(b, x, 0);
  Value colOk = k.ult(col, k.c(l.out));
  Value colLoad = k.min(col, k.c(l.out - 1));
  Value lastTok = arith::SubIOp::create(b, numTokens, k.c(1));
  SmallVector<Value> toks, tokLoad;
  for (int64_t j = 0; j < kTokens; ++j) {
    toks.push_back(k.add(k.mul(bx, kTokens), j));
    tokLoad.push_back(k.min(toks.back(), lastTok));
  }

  // The fused LoRA terms: per step of 32 terms lane l takes term q = q0 + l
  // (slot q / r, rank q % r) of each token; a term past K r is clamped for
  // the loads and selected away, as is a slot of no expert of the op.
  SmallVector<Value> laneTerms;
  if (lora) {
    int64_t terms = lora->k * lora->r;
    int64_t span = (terms + kWarpSize - 1) / kWarpSize * kWarpSize;
    Value zero = arith::ConstantOp::create(b, b.getF32FloatAttr(0.0));
    SmallVector<Value> init(kTokens, zero);
    auto loop = scf::ForOp::create(b, k.c(0), k.c(span), k.c(kWarpSize), init);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(loop.getBody());
      Value q = k.add(loop.getInductionVar(), lane);
      Value qOk = k.ult(q, k.c(terms));
      Value qc = k.min(q, k.c(terms - 1));
      Value slot = arith::DivUIOp::create(b, qc, k.c(lora->r));
      Value rank = arith::RemUIOp::create(b, qc, k.c(lora->r));
      SmallVector<Value> acc(loop.getRegionIterArgs());
      for (int64_t j = 0; j < kTokens; ++j) {
        auto [e, ok] = loraExpert(b, k, *lora, idx, tokLoad[j], slot);
        Value uv =
            memref::LoadOp::create(b, u, ValueRange{tokLoad[j], slot, rank});
        Value bv = memref::LoadOp::create(b, bw, ValueRange{e, colLoad, rank});
        if (!lora->bElt.isF32())
          bv = arith::ExtFOp::create(b, f32, bv);
        Value term = arith::SelectOp::create(
            b, arith::AndIOp::create(b, ok, qOk),
            arith::MulFOp::create(b, uv, bv), zero);
        acc[j] = arith::AddFOp::create(b, acc[j], term);
      }
      scf::YieldOp::create(b, acc);
    }
    laneTerms.assign(loop.getResults().begin(), loop.getResults().end());
  }

  // The weight row `colLoad`, shared by the tokens' x rows.
  SmallVector<Value> sums = warpDots(
      b, k, l, lane,
      [&](Value h) { return SmallVector<Value>{colLoad, h}; },
      tokLoad, x, w, laneTerms);
  // swiglu_up: the up row `colLoad + O` too.
  SmallVector<Value> ups;
  if (swigluPair) {
    Value upRow = k.add(colLoad, k.c(l.out));
    ups = warpDots(
        b, k, l, lane, [&](Value h) { return SmallVector<Value>{upRow, h}; },
        tokLoad, x, w);
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
    if (swigluPair) {
      Value one = arith::ConstantOp::create(b, b.getF32FloatAttr(1.0));
      Value e = math::ExpOp::create(b, arith::NegFOp::create(b, v));
      Value sig =
          arith::DivFOp::create(b, one, arith::AddFOp::create(b, one, e));
      v = arith::MulFOp::create(b, arith::MulFOp::create(b, v, sig), ups[j]);
    }
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
    // For a moe.projected_router or a moe.linear.
    auto tryRewrite = [&](auto op, unsigned counter) {
      LinearLayout l;
      std::string why = analyse(op, l);
      if (why.empty())
        rewrite(op, l, counter);
      return why;
    };
    // A projected router first: its second GEMM becomes a moe.linear that
    // the second loop takes. Kernels: <function>_projected_router[_N], then
    // <function>_linear[_N].
    if (failed(formKernels<ProjectedRouterOp>(getOperation(), required,
                                              "the projected-router kernels",
                                              tryRewrite)) ||
        failed(formKernels<LinearOp>(getOperation(), required,
                                     "the linear kernel", tryRewrite)))
      signalPassFailure();
  }

  /// Replaces `op` by the host code on buffers that calls the kernel (the
  /// launch comes after bufferization: moe-gpu-launch-linear-kernels).
  /// With the tensor-core kernel too (many tokens), the host branches on
  /// T between the two.
  void rewrite(LinearOp op, const LinearLayout &l, unsigned counter) {
    Location loc = op.getLoc();
    KernelRewrite kr(op, "linear", counter);
    OpBuilder kb = kr.kernels();
    auto kernel = buildLinearKernel(kb, loc, "linear", l);
    MmaLinearSpec spec = mmaSpec(l);
    MmaLinearPlan plan;
    int64_t minTokens = mmaMinTokens;
    bool mma = planMma(op, op.getInput(), spec, chip, minTokens, plan).empty();

    OpBuilder ob(op);
    ImplicitLocOpBuilder b(loc, ob);
    auto argTypes = kernel.getFunctionType().getInputs();
    SmallVector<Value> tensors{op.getInput(), op.getWeight()};
    if (l.hasBias)
      tensors.push_back(op.getBias());
    SmallVector<Value> inputs;
    for (auto [t, type] : llvm::zip(tensors, argTypes))
      inputs.push_back(readOnlyBuffer(b, loc, t, cast<MemRefType>(type)));
    Value numTokens = tensor::DimOp::create(b, op.getInput(), 0);
    // The result buffer and one launch of `fn` (the same arguments for
    // both kernels): ceil(T / divisor) x gridY blocks, T from the result
    // buffer (the last operand).
    auto emit = [&](KernelRewrite &r, gpu::GPUFuncOp fn, int64_t threads,
                    int64_t gridY, int64_t divisor) {
      Value result = memref::AllocOp::create(
          b, cast<MemRefType>(argTypes.back()), ValueRange{numTokens});
      SmallVector<Value> operands(inputs);
      operands.push_back(result);
      int64_t n = operands.size();
      r.call(b, kLinearKernelAttr,
             {makeLaunch(b, r.ref(fn), llvm::to_vector(llvm::seq<int64_t>(0, n)),
                         threads, n - 1, gridY, divisor)},
             operands);
      return writtenTensor(b, loc, result, op.getType());
    };
    // The warp-per-output kernel: ceil(T / 4) x ceil(O / 4) blocks of 128
    // threads.
    auto warpKernel = [&] {
      return emit(kr, kernel, kWarps * kWarpSize,
                  (l.out + kWarps - 1) / kWarps, kTokens);
    };
    Value y;
    if (!mma) {
      y = warpKernel();
    } else {
      KernelRewrite mr(op, kr.base + "_mma");
      OpBuilder mb = mr.kernels();
      auto mmaKernel = buildMmaLinearKernel(mb, loc, "linear_mma", spec);
      y = branchOnTokens(
          b, numTokens, minTokens, op.getType(),
          [&] {
            return emit(mr, mmaKernel, plan.threads, plan.colBlocks,
                        plan.rows);
          },
          warpKernel);
    }
    op->replaceAllUsesWith(ValueRange{y});
    op.erase();
  }

  /// Replaces `op` by swiglu_up (A = SwiGLU(D W_1^T) : E x h', f32, warp
  /// per output as the linear kernel, both halves of W_1's rows) and a
  /// moe.linear A W_2^T (E x H, f32), which the linear kernel then takes.
  void rewrite(ProjectedRouterOp op, const LinearLayout &l, unsigned counter) {
    MLIRContext *ctx = &getContext();
    Location loc = op.getLoc();
    KernelRewrite kr(op, "projected_router", counter);
    OpBuilder kb = kr.kernels();
    auto kernel = buildLinearKernel(kb, loc, "swiglu_up", l, nullptr,
                                    /*swigluPair=*/true);

    OpBuilder ob(op);
    ImplicitLocOpBuilder b(loc, ob);
    auto argTypes = kernel.getFunctionType().getInputs();
    int64_t e = cast<ShapedType>(op.getDomainEmbeddings().getType())
                    .getDimSize(0);
    SmallVector<Value> operands{
        readOnlyBuffer(b, loc, op.getDomainEmbeddings(),
                       cast<MemRefType>(argTypes[0])),
        readOnlyBuffer(b, loc, op.getProjW1(), cast<MemRefType>(argTypes[1]))};
    Value a = memref::AllocOp::create(b, cast<MemRefType>(argTypes.back()),
                                      ValueRange{arith::ConstantIndexOp::create(
                                          b, e)});
    operands.push_back(a);

    // One launch: ceil(E / 4) x ceil(h' / 4) blocks of 128 threads.
    kr.call(b, kLinearKernelAttr,
            {makeLaunch(b, kr.ref(kernel), {0, 1, 2}, kWarps * kWarpSize, 2,
                        (l.out + kWarps - 1) / kWarps, kTokens)},
            operands);
    Type f32 = Float32Type::get(ctx);
    Value aT = writtenTensor(b, loc, a, RankedTensorType::get({e, l.out}, f32));
    Value w2 = op.getProjW2();
    auto router = LinearOp::create(
        b, RankedTensorType::get(
               {e, cast<ShapedType>(w2.getType()).getDimSize(0)}, f32),
        aT, w2, Value());
    op->replaceAllUsesWith(router->getResults());
    op.erase();
  }
};

//===----------------------------------------------------------------------===//
// convert-moe-lora-to-gpu
//===----------------------------------------------------------------------===//

/// Why `op` cannot take the LoRA kernels ("" if it can); fills `l`.
std::string analyse(LoRAExpertsOp op, LoRALayout &l) {
  auto x = cast<RankedTensorType>(op.getInput().getType());
  auto idx = cast<RankedTensorType>(op.getIndices().getType());
  auto a = cast<RankedTensorType>(op.getLoraA().getType());
  auto bw = cast<RankedTensorType>(op.getLoraB().getType());
  if (x.getRank() != 2 || x.isDynamicDim(1) || idx.isDynamicDim(1) ||
      !a.hasStaticShape() || !bw.hasStaticShape())
    return "a dimension other than T is dynamic";
  l.e = a.getDimSize(0);
  l.r = a.getDimSize(1);
  l.k = idx.getDimSize(1);
  l.out = bw.getDimSize(1);
  l.offset = op.getExpertOffset();
  l.scale = op.getAlpha().convertToDouble() / double(l.r);
  l.bElt = bw.getElementType();
  l.a.in = a.getDimSize(2);
  l.a.out = l.r;
  l.a.xElt = x.getElementType();
  l.a.wElt = a.getElementType();
  if (!isKernelFloat(l.a.xElt) || !isKernelFloat(l.a.wElt) ||
      !isKernelFloat(l.bElt))
    return "an element type is not bf16, f16 or f32";
  if (l.e == 0 || l.r == 0 || l.k == 0 || l.out == 0 || l.a.in == 0)
    return "an empty dimension";
  if (matchPattern(op.getLoraA(), m_Constant()) ||
      matchPattern(op.getLoraB(), m_Constant()))
    return "a LoRA weight is a compile-time constant";
  if (!op->getParentOfType<func::FuncOp>())
    return "the op is not in a func.func";
  unsigned widest = std::max(l.a.xElt.getIntOrFloatBitWidth(),
                             l.a.wElt.getIntOrFloatBitWidth()) / 8;
  l.a.vec = 16 / widest;
  while (l.a.in % l.a.vec)
    l.a.vec /= 2;
  l.a.unroll = 1;
  while (l.a.unroll < kMaxUnroll && 2 * l.a.step() <= l.a.in)
    l.a.unroll *= 2;
  return "";
}

/// Threads of a lora_b block.
constexpr int64_t kLoRABThreads = 128;

/// Experts per slot (E / K) up to which lora_out_mma's branch forms the A
/// products of every expert as one tensor-core GEMM (`lora_a_mma`, E r
/// outputs) instead of lora_a's warp per (t, k, j) product. The dense GEMM
/// does E / K times the products needed, on tensor cores at ~2 E r H FLOPs
/// a token; lora_a reads an x row and an A row (~4 H bytes) per product,
/// K r of them a token, through L1/L2 on CUDA cores. An estimate, not a
/// measurement (docs/notes/gpu-path.md, *Dense LoRA A products*): at
/// ~300 TFLOP/s against ~5 TB/s of L2 the two meet near E / K = 120, so 32
/// keeps a wide margin.
constexpr int64_t kLoRADenseMaxExpertsPerSlot = 32;

/// The tokens from which the dense A GEMM beats lora_a by default:
/// kLoRADenseRowsPerTerm BN / (K r), BN its column tile. Below about one
/// wave of blocks, its time is one block's 64 x BN x In tile (~128 BN In
/// FLOPs at ~2.3 TFLOP/s per SM of the H100's mma.sync), lora_a's T K r
/// products of ~4 In bytes at ~5 TB/s of L2: equal at T = 32 BN (5 / 2.3)
/// / (K r), ~70 BN / (K r). An estimate, not a measurement. (AT-MoE at H =
/// 4096, E = 8, r = 16, K = 2: BN 128, 280 tokens; the base's lora_out_mma
/// from 128.)
constexpr int64_t kLoRADenseRowsPerTerm = 70;

/// lora_a: ax[t, k, j] = A_e[j] . x[t] for slot (t, k) of expert e (0 for
/// a slot of no expert of the op): block (t, by), warp w computes output
/// o = 4 by + w of the K x r ones with warpDots (one x row, one A row).
/// `weighted` (the fused form, before lora_out): the kernel also takes the
/// routing weights (T x K f32) and writes u = ax[t, k, j] w[t, k] alpha / r.
gpu::GPUFuncOp buildLoRAAKernel(OpBuilder &mb, Location loc,
                                const LoRALayout &l, bool weighted = false) {
  MLIRContext *ctx = mb.getContext();
  Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);
  SmallVector<Type> args{
      MemRefType::get({ShapedType::kDynamic, l.a.in}, l.a.xElt),
      MemRefType::get({ShapedType::kDynamic, l.k}, i32),
      MemRefType::get({l.e, l.r, l.a.in}, l.a.wElt)};
  if (weighted)
    args.push_back(MemRefType::get({ShapedType::kDynamic, l.k}, f32));
  args.push_back(MemRefType::get({ShapedType::kDynamic, l.k, l.r}, f32));
  auto fn = gpu::GPUFuncOp::create(mb, loc, "lora_a",
                                   FunctionType::get(ctx, args, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), mb.getUnitAttr());
  fn.setKnownBlockSizeAttr(
      mb.getDenseI32ArrayAttr({int32_t(kWarps * kWarpSize), 1, 1}));
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  IndexArith k{b};
  Value x = entry.getArgument(0), idx = entry.getArgument(1),
        a = entry.getArgument(2),
        weights = weighted ? entry.getArgument(3) : Value(),
        ax = entry.getArgument(weighted ? 4 : 3);
  Value lane, o;
  std::tie(lane, o) = k.laneAndRow(kWarps, gpu::Dimension::y);
  Value t = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  int64_t outputs = l.k * l.r;
  Value oOk = k.ult(o, k.c(outputs));
  Value oc = k.min(o, k.c(outputs - 1));
  Value slot = arith::DivUIOp::create(b, oc, k.c(l.r));
  Value j = arith::RemUIOp::create(b, oc, k.c(l.r));
  auto [expert, ok] = loraExpert(b, k, l, idx, t, slot);
  Value e = expert;
  SmallVector<Value> sums = warpDots(
      b, k, l.a, lane,
      [&](Value h) { return SmallVector<Value>{e, j, h}; }, {t}, x, a);
  Value store = arith::AndIOp::create(
      b, oOk,
      arith::CmpIOp::create(b, arith::CmpIPredicate::eq, lane, k.c(0)));
  auto ifStore = scf::IfOp::create(b, store, /*withElseRegion=*/false);
  b.setInsertionPointToStart(&ifStore.getThenRegion().front());
  Value v = sums[0];
  if (weighted)
    v = arith::MulFOp::create(
        b, v,
        arith::MulFOp::create(
            b, memref::LoadOp::create(b, weights, ValueRange{t, slot}),
            arith::ConstantOp::create(b, b.getF32FloatAttr(l.scale))));
  v = arith::SelectOp::create(
      b, ok, v, arith::ConstantOp::create(b, b.getF32FloatAttr(0.0)));
  memref::StoreOp::create(b, v, ax, ValueRange{t, slot, j});
  b.setInsertionPointToEnd(&entry);
  gpu::ReturnOp::create(b);
  return fn;
}

/// lora_b: slots[t, k, h] = (alpha / r) sum_j B_e[h, j] ax[t, k, j] (0 for a
/// slot of no expert of the op): block (t, by), thread q = 128 by + tid of
/// the K x Out outputs, the r terms in order.
gpu::GPUFuncOp buildLoRABKernel(OpBuilder &mb, Location loc,
                                const LoRALayout &l) {
  MLIRContext *ctx = mb.getContext();
  Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);
  SmallVector<Type> args{
      MemRefType::get({ShapedType::kDynamic, l.k, l.r}, f32),
      MemRefType::get({ShapedType::kDynamic, l.k}, i32),
      MemRefType::get({l.e, l.out, l.r}, l.bElt),
      MemRefType::get({ShapedType::kDynamic, l.k, l.out}, f32)};
  auto fn = gpu::GPUFuncOp::create(mb, loc, "lora_b",
                                   FunctionType::get(ctx, args, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), mb.getUnitAttr());
  fn.setKnownBlockSizeAttr(
      mb.getDenseI32ArrayAttr({int32_t(kLoRABThreads), 1, 1}));
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  IndexArith k{b};
  Value ax = entry.getArgument(0), idx = entry.getArgument(1),
        bw = entry.getArgument(2), slots = entry.getArgument(3);
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value t = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value by = gpu::BlockIdOp::create(b, gpu::Dimension::y);
  Value q = k.add(k.mul(by, kLoRABThreads), tid);
  auto inRange = scf::IfOp::create(b, k.ult(q, k.c(l.k * l.out)),
                                   /*withElseRegion=*/false);
  b.setInsertionPointToStart(&inRange.getThenRegion().front());
  Value slot = arith::DivUIOp::create(b, q, k.c(l.out));
  Value h = arith::RemUIOp::create(b, q, k.c(l.out));
  auto [e, ok] = loraExpert(b, k, l, idx, t, slot);
  Value zero = arith::ConstantOp::create(b, b.getF32FloatAttr(0.0));
  auto loop = scf::ForOp::create(b, k.c(0), k.c(l.r), k.c(1),
                                 ValueRange{zero});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value j = loop.getInductionVar();
    Value bv = memref::LoadOp::create(b, bw, ValueRange{e, h, j});
    if (!l.bElt.isF32())
      bv = arith::ExtFOp::create(b, f32, bv);
    Value av = memref::LoadOp::create(b, ax, ValueRange{t, slot, j});
    scf::YieldOp::create(
        b, ValueRange{arith::AddFOp::create(
               b, loop.getRegionIterArg(0), arith::MulFOp::create(b, bv, av))});
  }
  Value y = arith::MulFOp::create(
      b, loop.getResult(0),
      arith::ConstantOp::create(b, b.getF32FloatAttr(l.scale)));
  y = arith::SelectOp::create(b, ok, y, zero);
  memref::StoreOp::create(b, y, slots, ValueRange{t, slot, h});
  b.setInsertionPointToEnd(&entry);
  gpu::ReturnOp::create(b);
  return fn;
}

/// The AT-MoE output around a moe.lora_experts that lora_out computes in
/// one kernel: `combine(weights, slots = [the op], addends = [base])` with
/// `base = moe.linear(x, W_0 (, b))` of the op's own input.
struct LoRAFusion {
  CombineOp combine;
  LinearOp base;
  /// The base GEMM; its result type is the combine's.
  LinearLayout l;
};

/// Whether `op`'s only user is a moe.combine of the op's slots alone plus
/// one addend, a moe.linear of the same input used only there and fit for
/// the linear kernel (MOE_SEMANTICS §3: W_0 x + sum_k w_k (alpha / r)
/// B_e A_e x); fills `f`. Any other shape keeps lora_a + lora_b and the
/// combine as it is.
bool analyseFusion(LoRAExpertsOp op, const LoRALayout &l, LoRAFusion &f) {
  if (!op->hasOneUse())
    return false;
  auto combine = dyn_cast<CombineOp>(*op->user_begin());
  if (!combine || !combine.getWeights() || combine.getSlots().size() != 1 ||
      combine.getSlots()[0] != op.getResult() ||
      combine.getAddends().size() != 1 || combine.getBias())
    return false;
  auto base = combine.getAddends()[0].getDefiningOp<LinearOp>();
  if (!base || !base->hasOneUse() || base.getInput() != op.getInput() ||
      !analyse(base, f.l).empty() || f.l.out != l.out)
    return false;
  auto y = cast<RankedTensorType>(combine.getType());
  if (y.getRank() != 2 || y.getDimSize(1) != l.out ||
      !isKernelFloat(y.getElementType()))
    return false;
  f.l.resultElt = y.getElementType();
  f.combine = combine;
  f.base = base;
  return true;
}

struct ConvertMoELoRAToGPU
    : public moe::impl::ConvertMoELoRAToGPUBase<ConvertMoELoRAToGPU> {
  using Base::Base;

  void runOnOperation() override {
    // Kernels are named <function>_lora[_N].
    auto tryRewrite = [&](LoRAExpertsOp op, unsigned counter) {
      LoRALayout l;
      std::string why = analyse(op, l);
      if (!why.empty())
        return why;
      LoRAFusion f;
      if (fuseCombine && analyseFusion(op, l, f))
        rewriteFused(op, l, f, counter);
      else
        rewrite(op, l, counter);
      return why;
    };
    if (failed(formKernels<LoRAExpertsOp>(getOperation(), required,
                                          "the LoRA kernels", tryRewrite)))
      signalPassFailure();
  }

  void rewrite(LoRAExpertsOp op, const LoRALayout &l, unsigned counter) {
    Location loc = op.getLoc();
    KernelRewrite kr(op, "lora", counter);
    OpBuilder kb = kr.kernels();
    auto ka = buildLoRAAKernel(kb, loc, l);
    auto kbK = buildLoRABKernel(kb, loc, l);

    OpBuilder ob(op);
    ImplicitLocOpBuilder b(loc, ob);
    auto aArgs = ka.getFunctionType().getInputs();
    auto bArgs = kbK.getFunctionType().getInputs();
    Value numTokens = tensor::DimOp::create(b, op.getInput(), 0);
    // Operands: x, indices, A, B, ax, slots.
    SmallVector<Value> operands{
        readOnlyBuffer(b, loc, op.getInput(), cast<MemRefType>(aArgs[0])),
        readOnlyBuffer(b, loc, op.getIndices(), cast<MemRefType>(aArgs[1])),
        readOnlyBuffer(b, loc, op.getLoraA(), cast<MemRefType>(aArgs[2])),
        readOnlyBuffer(b, loc, op.getLoraB(), cast<MemRefType>(bArgs[2])),
        memref::AllocOp::create(b, cast<MemRefType>(aArgs[3]),
                                ValueRange{numTokens}),
        memref::AllocOp::create(b, cast<MemRefType>(bArgs[3]),
                                ValueRange{numTokens})};
    // lora_a: T x ceil(K r / 4) blocks of 4 warps; lora_b: T x
    // ceil(K Out / 128) blocks of 128 threads (T from ax and the slots).
    kr.call(b, kLinearKernelAttr,
            {makeLaunch(b, kr.ref(ka), {0, 1, 2, 4}, kWarps * kWarpSize, 4,
                        (l.k * l.r + kWarps - 1) / kWarps),
             makeLaunch(b, kr.ref(kbK), {4, 1, 3, 5}, kLoRABThreads, 5,
                        (l.k * l.out + kLoRABThreads - 1) / kLoRABThreads)},
            operands);
    op->replaceAllUsesWith(
        ValueRange{writtenTensor(b, loc, operands[5], op.getType())});
    op.erase();
  }

  /// Replaces `op`, its combine and the base GEMM by lora_a (weighted) and
  /// lora_out: no T x K x Out slots, no combine kernels. For many tokens the
  /// host takes lora_out_mma instead of lora_out, and for more still the
  /// dense A products (lora_a_mma, then lora_out_mma_dense reading them)
  /// instead of lora_a.
  void rewriteFused(LoRAExpertsOp op, const LoRALayout &l, LoRAFusion &f,
                    unsigned counter) {
    Location loc = op.getLoc();
    KernelRewrite kr(op, "lora", counter);
    OpBuilder kb = kr.kernels();
    auto ka = buildLoRAAKernel(kb, loc, l, /*weighted=*/true);
    auto ko = buildLinearKernel(kb, loc, "lora_out", f.l, &l);
    // The tensor-core lora_out for many tokens.
    MmaLinearSpec spec = mmaSpec(f.l);
    spec.loraK = l.k;
    spec.loraR = l.r;
    spec.loraE = l.e;
    spec.loraOffset = l.offset;
    spec.loraBElt = l.bElt;
    MmaLinearPlan plan;
    int64_t minTokens = mmaMinTokens;
    bool mma =
        planMma(f.base, op.getInput(), spec, chip, minTokens, plan).empty();
    // From denseMin tokens (0: never; at least minTokens) the A products of
    // every expert on tensor cores: ax = x A_all^T (T x E r, f32), A_all
    // the E r x In rows of A.
    MmaLinearSpec denseSpec;
    denseSpec.in = l.a.in;
    denseSpec.out = l.e * l.r;
    denseSpec.elt = l.a.xElt == l.a.wElt ? l.a.xElt : Type();
    denseSpec.resultElt = Float32Type::get(op.getContext());
    MmaLinearPlan densePlan;
    int64_t denseMin = 0;
    if (mma && denseAMinTokens != 0 &&
        l.e <= kLoRADenseMaxExpertsPerSlot * l.k) {
      std::string why = planMmaLinear(denseSpec, chip, densePlan);
      if (why.empty()) {
        int64_t estimate = llvm::divideCeil(
            kLoRADenseRowsPerTerm * (denseSpec.out / densePlan.colBlocks),
            l.k * l.r);
        denseMin = std::max(minTokens,
                            denseAMinTokens < 0 ? estimate : denseAMinTokens);
      } else if (denseSpec.out >= 64) {
        op->emitRemark() << op->getName()
                         << " keeps lora_a's warp kernel for many tokens "
                            "(no dense tensor-core A GEMM): "
                         << why;
      }
    }

    // At the combine: every operand below dominates it.
    OpBuilder ob(f.combine);
    ImplicitLocOpBuilder b(loc, ob);
    auto aArgs = ka.getFunctionType().getInputs();
    auto oArgs = ko.getFunctionType().getInputs();
    auto buf = [&](Value t, Type type) {
      return readOnlyBuffer(b, loc, t, cast<MemRefType>(type));
    };
    Value numTokens = tensor::DimOp::create(b, op.getInput(), 0);
    // Operands: x, indices, A, weights, W_0, [bias], B, then per branch
    // u, y (lora_a and the output kernel) or A_all, ax, y (lora_a_mma and
    // lora_out_mma_dense); each branch allocates its own.
    SmallVector<Value> operands{buf(op.getInput(), aArgs[0]),
                                buf(op.getIndices(), aArgs[1]),
                                buf(op.getLoraA(), aArgs[2]),
                                buf(f.combine.getWeights(), aArgs[3]),
                                buf(f.base.getWeight(), oArgs[1])};
    if (f.l.hasBias)
      operands.push_back(buf(f.base.getBias(), oArgs[2]));
    int64_t bIdx = operands.size();
    operands.push_back(buf(op.getLoraB(), oArgs[oArgs.size() - 2]));
    int64_t uIdx = operands.size(), yIdx = uIdx + 1;
    auto allocY = [&] {
      return memref::AllocOp::create(b, cast<MemRefType>(oArgs.back()),
                                     ValueRange{numTokens});
    };
    // The output kernels' arguments: x, W_0, [bias], indices, then `lora`
    // (u or w, ax), B, y.
    auto outArgs = [&](ArrayRef<int64_t> lora, int64_t y) {
      SmallVector<int64_t> args{0, 4};
      if (f.l.hasBias)
        args.push_back(5);
      args.push_back(1);
      args.append(lora.begin(), lora.end());
      args.append({bIdx, y});
      return args;
    };
    // lora_a: T x ceil(K r / 4) blocks of 4 warps (T from u).
    Attribute launchA =
        makeLaunch(b, kr.ref(ka), {0, 1, 2, 3, uIdx}, kWarps * kWarpSize, uIdx,
                   (l.k * l.r + kWarps - 1) / kWarps);
    // lora_a, then `out` (lora_out or lora_out_mma), declared by `r`.
    auto sparse = [&](KernelRewrite &r, Attribute out, StringRef suffix) {
      SmallVector<Value> ops(operands);
      ops.push_back(memref::AllocOp::create(b, cast<MemRefType>(aArgs[4]),
                                            ValueRange{numTokens}));
      ops.push_back(allocY());
      r.call(b, kLinearKernelAttr, {launchA, out}, ops, {}, suffix);
      return writtenTensor(b, loc, ops.back(), f.combine.getType());
    };
    // lora_out: ceil(T / 4) x ceil(Out / 4), as the linear kernel (T from y).
    auto few = [&] {
      return sparse(kr,
                    makeLaunch(b, kr.ref(ko), outArgs({uIdx}, yIdx),
                               kWarps * kWarpSize, yIdx,
                               (l.out + kWarps - 1) / kWarps, kTokens),
                    "");
    };
    Value y;
    if (!mma) {
      y = few();
    } else {
      KernelRewrite mr(op, kr.base + "_mma");
      OpBuilder mb = mr.kernels();
      // lora_a, then lora_out_mma: ceil(T / BM) x Out / BN blocks.
      gpu::GPUFuncOp kmma;
      if (denseMin != minTokens)
        kmma = buildMmaLinearKernel(mb, loc, "lora_out_mma", spec);
      auto mid = [&] {
        return sparse(mr,
                      makeLaunch(b, mr.ref(kmma), outArgs({uIdx}, yIdx),
                                 plan.threads, yIdx, plan.colBlocks, plan.rows),
                      denseMin ? "_lora_a" : "");
      };
      // lora_a_mma (ceil(T / BM) x E r / BN blocks), then
      // lora_out_mma_dense reading its ax.
      gpu::GPUFuncOp kdense, kmmaDense;
      if (denseMin) {
        kdense = buildMmaLinearKernel(mb, loc, "lora_a_mma", denseSpec);
        MmaLinearSpec d = spec;
        d.loraDense = true;
        d.loraScale = l.scale;
        kmmaDense = buildMmaLinearKernel(mb, loc, "lora_out_mma_dense", d);
      }
      auto many = [&] {
        SmallVector<Value> ops(operands);
        int64_t a2Idx = ops.size(), axIdx = a2Idx + 1, y2Idx = a2Idx + 2;
        ops.push_back(memref::CollapseShapeOp::create(
            b, operands[2], SmallVector<ReassociationIndices>{{0, 1}, {2}}));
        ops.push_back(memref::AllocOp::create(
            b,
            cast<MemRefType>(kdense.getFunctionType().getInputs().back()),
            ValueRange{numTokens}));
        ops.push_back(allocY());
        mr.call(b, kLinearKernelAttr,
                {makeLaunch(b, mr.ref(kdense), {0, a2Idx, axIdx},
                            densePlan.threads, axIdx, densePlan.colBlocks,
                            densePlan.rows),
                 makeLaunch(b, mr.ref(kmmaDense), outArgs({3, axIdx}, y2Idx),
                            plan.threads, y2Idx, plan.colBlocks, plan.rows)},
                ops);
        return writtenTensor(b, loc, ops.back(), f.combine.getType());
      };
      Type type = f.combine.getType();
      if (!denseMin)
        y = branchOnTokens(b, numTokens, minTokens, type, mid, few);
      else if (denseMin == minTokens)
        y = branchOnTokens(b, numTokens, minTokens, type, many, few);
      else
        y = branchOnTokens(
            b, numTokens, minTokens, type,
            [&] {
              return branchOnTokens(b, numTokens, denseMin, type, many, mid);
            },
            few);
    }
    f.combine->replaceAllUsesWith(ValueRange{y});
    f.combine.erase();
    op.erase();
    f.base.erase();
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

std::string mlir::moe::mmaSpecOf(LinearOp op, MmaLinearSpec &spec) {
  LinearLayout l;
  if (std::string why = analyse(op, l); !why.empty())
    return why;
  spec = mmaSpec(l);
  return "";
}
