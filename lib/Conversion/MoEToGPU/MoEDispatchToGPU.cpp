//===- MoEDispatchToGPU.cpp - capacity admission on the device --*- C++ -*-===//
//
// A capacity moe.dispatch (MOE_SEMANTICS §2: each expert admits at most C
// (token, slot) pairs, in (slot, token) order) becomes one kernel, `admit`,
// so that the pairs never leave the device between the routing kernel and
// the expert kernels. The generic lowering (convert-moe-to-linalg's
// LowerDispatch) is a sequential scan that the GPU pipeline leaves on the
// host: a stream wait in the middle of the layer, and the routing results
// migrating to the host and back through managed memory.
//
// The kernel is one warp that walks the pairs in admission order, 32 at a
// time: `match.sync.any` on the expert id gives each lane the lanes of the
// same expert, so its rank among this step's pairs of that expert is the
// population count of that mask below its lane; with the expert's count
// before the step (shared memory, one i32 per expert) that is its rank in
// the whole order, and it is admitted iff the rank is below C. The last lane
// of each group adds the group's size to the count. The loads of 8 steps
// are issued together before their steps run, so the global latency is
// paid once per 256 pairs. Dropped pairs get index -1 and weight 0; the
// warp sums the drops (butterfly) and lane 0 writes the count.
//
// The order within a step is the lanes' order, the steps are in order:
// the result is the sequential scan's exactly, whatever the device's
// scheduling. One warp is enough for the capacity layers' sizes (T * K
// pairs: ~1000 steps at T = 16384, K = 2); a multi-warp version would need
// per-warp counts and a scan over the warps per step.
//
// What was learned from elsewhere (no code copied): the PTX ISA for
// match.sync and the lanemask registers; the "warp-aggregated atomics"
// idiom (one lane per group of equal keys updates the shared counter).
//
//===----------------------------------------------------------------------===//

#include "DispatchKernel.h"
#include "LaunchList.h"
#include "WarpKernel.h"
#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <limits>

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Steps (of 32 pairs) whose loads are issued together.
constexpr int64_t kStepsPerLoad = 8;
/// Experts the counters in shared memory can hold (48 KiB of i32).
constexpr int64_t kMaxExperts = 48 * 1024 / 4;

/// What the kernel needs to know about the op (the capacity: the op's
/// buildCapacity).
struct DispatchLayout {
  int64_t e = 0, k = 0;
};

/// Builder helpers inside the kernel.
struct KB : WarpOps {
  Value popc(Value x) { return math::CtPopOp::create(b, x); }
};

/// The op's capacity C for `pairs` as an i32, clamped to [0, 2^31 - 1] (a
/// fixed one as a constant).
Value capacityOf(KB &k, DispatchOp op, Value pairs) {
  ImplicitLocOpBuilder &b = k.b;
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  Value c64 = op.buildCapacity(b, b.getLoc(), pairs);
  if (std::optional<int64_t> fixed = getConstantIntValue(c64)) {
    c64.getDefiningOp()->erase();
    return k.i32(std::min(*fixed, kMax));
  }
  c64 = arith::MinSIOp::create(
      b,
      arith::MaxSIOp::create(
          b, c64, arith::ConstantOp::create(b, b.getI64IntegerAttr(0))),
      arith::ConstantOp::create(b, b.getI64IntegerAttr(kMax)));
  return arith::TruncIOp::create(b, b.getI32Type(), c64);
}

/// admit(indices, weights, admitted indices, admitted weights, dropped), one
/// warp; the counters are a workgroup attribution.
gpu::GPUFuncOp buildAdmitKernel(OpBuilder &mb, Location loc, DispatchOp op,
                                const DispatchLayout &l) {
  MLIRContext *ctx = mb.getContext();
  Type i32 = IntegerType::get(ctx, 32), i64 = IntegerType::get(ctx, 64);
  Type f32 = Float32Type::get(ctx);
  auto idxTy = MemRefType::get({ShapedType::kDynamic, l.k}, i32);
  auto wTy = MemRefType::get({ShapedType::kDynamic, l.k}, f32);
  auto countTy = MemRefType::get({}, i64);
  auto counters = MemRefType::get(
      {l.e}, i32, MemRefLayoutAttrInterface(),
      gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup));
  auto fn = gpu::GPUFuncOp::create(
      mb, loc, "admit",
      FunctionType::get(ctx, {idxTy, wTy, idxTy, wTy, countTy}, {}),
      TypeRange{counters});
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), mb.getUnitAttr());
  fn.setKnownBlockSizeAttr(
      mb.getDenseI32ArrayAttr({static_cast<int32_t>(kWarpSize), 1, 1}));
  fn.setKnownGridSizeAttr(mb.getDenseI32ArrayAttr({1, 1, 1}));
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  KB k{{b}};
  Value idx = entry.getArgument(0), w = entry.getArgument(1),
        idxOut = entry.getArgument(2), wOut = entry.getArgument(3),
        dropped = entry.getArgument(4);
  Value counts = fn.getWorkgroupAttributions()[0];

  Value laneIdx = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value lane = arith::IndexCastOp::create(b, i32, laneIdx);
  Value numTokens = memref::DimOp::create(b, idx, 0);
  Value pairs = arith::MulIOp::create(b, numTokens, k.c(l.k));
  Value capacity = capacityOf(k, op, pairs);
  Value zero = k.i32(0), one = k.i32(1), minusOne = k.i32(-1);
  // Lanes below this one; lanes above it.
  Value below =
      arith::SubIOp::create(b, arith::ShLIOp::create(b, one, lane), one);
  Value above = arith::XOrIOp::create(
      b,
      arith::SubIOp::create(b, arith::ShLIOp::create(b, k.i32(2), lane), one),
      minusOne);

  // (Loop bounds are the same on every lane.)
  scf::ForOp::create(
      b, k.c(0), k.c(l.e), k.c(kWarpSize), ValueRange{},
      [&](OpBuilder &nb, Location nl, Value e0, ValueRange) {
        ImplicitLocOpBuilder ib(nl, nb);
        KB ik{{ib}};
        Value e = ik.add(e0, laneIdx);
        ik.ifThen(ik.cmpi(arith::CmpIPredicate::ult, e, ik.c(l.e)), [&] {
          memref::StoreOp::create(ib, zero, counts, ValueRange{e});
        });
        scf::YieldOp::create(ib);
      });
  gpu::BarrierOp::create(b);

  // Pair p (admission order) is token p mod T's slot p / T.
  auto loop = scf::ForOp::create(
      b, k.c(0), pairs, k.c(kWarpSize * kStepsPerLoad), ValueRange{zero});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value base = loop.getInductionVar(), drops = loop.getRegionIterArg(0);
    struct Pair {
      Value inBounds, tok, slot, e, w;
    };
    SmallVector<Pair> step;
    for (int64_t u = 0; u < kStepsPerLoad; ++u) {
      Value p = k.add(base, k.add(laneIdx, k.c(u * kWarpSize)));
      Pair q;
      q.inBounds = k.cmpi(arith::CmpIPredicate::ult, p, pairs);
      // Past the end: load pair 0's (T > 0 inside the loop), store nothing.
      Value pc = k.sel(q.inBounds, p, k.c(0));
      q.tok = arith::RemUIOp::create(b, pc, numTokens);
      q.slot = arith::DivUIOp::create(b, pc, numTokens);
      q.e = memref::LoadOp::create(b, idx, ValueRange{q.tok, q.slot});
      q.w = memref::LoadOp::create(b, w, ValueRange{q.tok, q.slot});
      step.push_back(q);
    }
    Value allLanes = k.i32(-1);
    for (Pair &q : step) {
      Value valid =
          k.andi(q.inBounds,
                 k.andi(k.cmpi(arith::CmpIPredicate::sge, q.e, zero),
                        k.cmpi(arith::CmpIPredicate::slt, q.e, k.i32(l.e))));
      // The lanes of the same expert this step (invalid ones share -1 and
      // are left out below).
      Value mask = NVVM::MatchSyncOp::create(b, i32, allLanes,
                                             k.sel(valid, q.e, minusOne),
                                             NVVM::MatchSyncKind::any);
      Value ei = k.toIndex(k.sel(valid, q.e, zero));
      Value before = memref::LoadOp::create(b, counts, ValueRange{ei});
      // Every lane has read its count before any group's last lane writes.
      gpu::BarrierOp::create(b);
      Value rank = k.add(before, k.popc(k.andi(mask, below)));
      Value admit =
          k.andi(valid, k.cmpi(arith::CmpIPredicate::slt, rank, capacity));
      Value drop = arith::XOrIOp::create(b, valid, admit);
      Value last = k.cmpi(arith::CmpIPredicate::eq, k.andi(mask, above), zero);
      k.ifThen(k.andi(valid, last), [&] {
        memref::StoreOp::create(b, k.add(before, k.popc(mask)), counts,
                                ValueRange{ei});
      });
      gpu::BarrierOp::create(b);
      k.ifThen(q.inBounds, [&] {
        memref::StoreOp::create(b, k.sel(drop, minusOne, q.e), idxOut,
                                ValueRange{q.tok, q.slot});
        Value zeroW = arith::ConstantOp::create(b, b.getF32FloatAttr(0.0));
        memref::StoreOp::create(b, k.sel(drop, zeroW, q.w), wOut,
                                ValueRange{q.tok, q.slot});
      });
      drops = k.add(drops, arith::ExtUIOp::create(b, i32, drop));
    }
    scf::YieldOp::create(b, drops);
  }
  Value total = k.warpSum(loop.getResult(0));
  k.ifThen(k.cmpi(arith::CmpIPredicate::eq, lane, zero), [&] {
    memref::StoreOp::create(b, arith::ExtUIOp::create(b, i64, total), dropped,
                            ValueRange{});
  });
  gpu::ReturnOp::create(b);
  return fn;
}

/// Why the kernel cannot take `op` ("" if it can).
std::string analyse(DispatchOp op, DispatchLayout &l) {
  auto idxTy = cast<RankedTensorType>(op.getIndices().getType());
  if (idxTy.isDynamicDim(1))
    return "the slot count K is dynamic";
  l.k = idxTy.getDimSize(1);
  l.e = static_cast<int64_t>(op.getNumExperts());
  if (l.e > kMaxExperts)
    return "num_experts " + std::to_string(l.e) + " is above " +
           std::to_string(kMaxExperts) +
           " (the admission counters' shared memory)";
  return "";
}

/// `op` -> buffers, the launch declaration's call, and the results as
/// tensors.
void rewrite(DispatchOp op, const DispatchLayout &l, unsigned counter,
             StringRef attrName) {
  MLIRContext *ctx = op.getContext();
  Location loc = op.getLoc();
  Type i32 = IntegerType::get(ctx, 32), f32 = Float32Type::get(ctx);
  KernelRewrite kr(op, "dispatch", counter);
  OpBuilder kb = kr.kernels();
  gpu::GPUFuncOp kernel = buildAdmitKernel(kb, loc, op, l);

  OpBuilder ob(op);
  ImplicitLocOpBuilder b(loc, ob);
  auto idxTy = MemRefType::get({ShapedType::kDynamic, l.k}, i32);
  auto wTy = MemRefType::get({ShapedType::kDynamic, l.k}, f32);
  Value numTokens = tensor::DimOp::create(b, op.getIndices(), 0);
  Value idxOut = memref::AllocOp::create(b, idxTy, ValueRange{numTokens});
  Value wOut = memref::AllocOp::create(b, wTy, ValueRange{numTokens});
  Value dropped =
      memref::AllocOp::create(b, MemRefType::get({}, b.getI64Type()));
  SmallVector<Value> operands{readOnlyBuffer(b, loc, op.getIndices(), idxTy),
                              readOnlyBuffer(b, loc, op.getWeights(), wTy),
                              idxOut, wOut, dropped};
  // One block of one warp, whatever T.
  kr.call(b, attrName,
          {makeLaunch(b, kr.ref(kernel), {0, 1, 2, 3, 4}, kWarpSize,
                      /*gridOperand=*/-1, /*gridY=*/1)},
          operands);
  SmallVector<Value> buffers{idxOut, wOut, dropped}, results;
  for (auto [m, res] : llvm::zip(buffers, op->getResults()))
    results.push_back(writtenTensor(b, loc, m, res.getType()));
  op->replaceAllUsesWith(results);
  op.erase();
}

} // namespace

LogicalResult mlir::moe::formDispatchKernels(ModuleOp module, bool required,
                                             StringRef attrName) {
  // A dropless dispatch admits everything: its operands and a zero count.
  SmallVector<DispatchOp> dropless;
  module.walk([&](DispatchOp op) {
    if (op.getMode() == DispatchMode::dropless)
      dropless.push_back(op);
  });
  for (DispatchOp op : dropless) {
    OpBuilder b(op);
    Value zero = arith::ConstantOp::create(
        b, op.getLoc(),
        DenseElementsAttr::get(RankedTensorType::get({}, b.getI64Type()),
                               b.getI64IntegerAttr(0).getValue()));
    op->replaceAllUsesWith(ValueRange{op.getIndices(), op.getWeights(), zero});
    op.erase();
  }
  return formKernels<DispatchOp>(module, required,
                                 "the capacity admission kernel",
                                 [&](DispatchOp op, unsigned counter) {
                                   DispatchLayout l;
                                   std::string why = analyse(op, l);
                                   if (why.empty())
                                     rewrite(op, l, counter, attrName);
                                   return why;
                                 });
}
