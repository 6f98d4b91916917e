//===- ExpertSurgery.cpp - drop / add experts, fold routers -----*- C++ -*-===//
//
// Implements the expert-set surgery of MOE_SEMANTICS.md §5 on moe.layer:
//
// * --moe-drop-experts (MC-Suite drop): every per-expert operand keeps the
//   rows of the experts that stay; routing k is clamped to what is left.
// * --moe-add-expert (Nexus add): the new expert's weights become new
//   arguments of the enclosing function, joined to the per-expert operands.
// * --moe-fold-projected-router: the projected router (§1.7) becomes a
//   stored router computed by moe.projected_router, or a constant when its
//   operands are constants.
//
// Per-expert operands are E-leading, so all three are row surgery on dim 0.
// Function arguments are sliced with tensor ops; dense constants are sliced
// here, at compile time, because upstream canonicalisation folds neither
// tensor.extract_slice nor tensor.concat of non-splat constants.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallSet.h"

#include <cmath>
#include <optional>

namespace mlir::moe {
#define GEN_PASS_DEF_MOEDROPEXPERTS
#define GEN_PASS_DEF_MOEADDEXPERT
#define GEN_PASS_DEF_MOEFOLDPROJECTEDROUTER
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

//===----------------------------------------------------------------------===//
// Row surgery on E-leading tensors
//===----------------------------------------------------------------------===//

/// Rows `[start, start + size)` of an E-leading tensor.
struct RowRun {
  int64_t start, size;
};

int64_t numRows(Value v) {
  return cast<RankedTensorType>(v.getType()).getDimSize(0);
}

/// `v`'s type with `rows` rows.
RankedTensorType withRows(Value v, int64_t rows) {
  auto ty = cast<RankedTensorType>(v.getType());
  SmallVector<int64_t> shape(ty.getShape());
  shape[0] = rows;
  return ty.clone(shape);
}

/// Rows `run` of `v` (`v` itself when the run covers it).
Value rowSlice(OpBuilder &b, Location loc, Value v, RowRun run) {
  auto ty = cast<RankedTensorType>(v.getType());
  if (run.start == 0 && run.size == ty.getDimSize(0))
    return v;
  SmallVector<OpFoldResult> offsets(ty.getRank(), b.getIndexAttr(0));
  SmallVector<OpFoldResult> sizes, strides(ty.getRank(), b.getIndexAttr(1));
  offsets[0] = b.getIndexAttr(run.start);
  sizes.push_back(b.getIndexAttr(run.size));
  for (int64_t d : ty.getShape().drop_front())
    sizes.push_back(b.getIndexAttr(d));
  return tensor::ExtractSliceOp::create(b, loc, v, offsets, sizes, strides);
}

/// `pieces` stacked along dim 0 (one piece is returned as is).
Value stackRows(OpBuilder &b, Location loc, ArrayRef<Value> pieces) {
  if (pieces.size() == 1)
    return pieces.front();
  return tensor::ConcatOp::create(b, loc, /*dim=*/0, pieces);
}

/// The rows of `v` listed by `runs`, in order: a new constant when `v` is a
/// dense constant, else slices of `v` joined by tensor.concat.
Value keepRows(OpBuilder &b, Location loc, Value v, ArrayRef<RowRun> runs) {
  int64_t rows = 0;
  for (RowRun r : runs)
    rows += r.size;
  if (runs.size() == 1 && rows == numRows(v))
    return v;
  RankedTensorType newTy = withRows(v, rows);
  DenseElementsAttr attr;
  if (matchPattern(v, m_Constant(&attr))) {
    if (attr.isSplat())
      return arith::ConstantOp::create(b, loc, newTy, attr.resizeSplat(newTy));
    // Float elements (f32/f16/bf16) are byte-aligned in the raw buffer, so a
    // row is a contiguous run of bytes.
    auto ty = cast<RankedTensorType>(v.getType());
    int64_t rowBytes = ty.getNumElements() / ty.getDimSize(0) *
                       ty.getElementTypeBitWidth() / 8;
    ArrayRef<char> raw = attr.getRawData();
    SmallVector<char> data;
    data.reserve(rows * rowBytes);
    for (RowRun r : runs)
      llvm::append_range(data,
                         raw.slice(r.start * rowBytes, r.size * rowBytes));
    return arith::ConstantOp::create(
        b, loc, newTy, DenseElementsAttr::getFromRawBuffer(newTy, data));
  }
  SmallVector<Value> pieces;
  for (RowRun r : runs)
    pieces.push_back(rowSlice(b, loc, v, r));
  return stackRows(b, loc, pieces);
}

/// `v` with `row` (one row) inserted before row `at`.
Value insertRow(OpBuilder &b, Location loc, Value v, Value row, int64_t at) {
  int64_t e = numRows(v);
  SmallVector<Value> pieces;
  if (at > 0)
    pieces.push_back(rowSlice(b, loc, v, {0, at}));
  pieces.push_back(row);
  if (at < e)
    pieces.push_back(rowSlice(b, loc, v, {at, e - at}));
  return stackRows(b, loc, pieces);
}

//===----------------------------------------------------------------------===//
// Routing and the projected router
//===----------------------------------------------------------------------===//

/// `routing` with `k` slots.
RoutingAttr withK(RoutingAttr r, int64_t k) {
  return RoutingAttr::get(r.getContext(), r.getScoring(), r.getSelection(), k,
                          r.getNGroup(), r.getTopkGroup(), r.getGroupScore(),
                          r.getTopP(), r.getRenormalize(), r.getScalingFactor(),
                          r.getTauGroup(), r.getTauExpert());
}

/// The slot count of `routing` once the layer has `newE` experts instead of
/// `oldE` (§5: K stays unless it would exceed what can be selected).
int64_t slotsFor(RoutingAttr routing, int64_t oldE, int64_t newE) {
  int64_t k = routing.getK();
  SelectionKind sel = routing.getSelection();
  // Dense routing, and hierarchical routing listing every expert, have one
  // slot per expert.
  if (sel == SelectionKind::dense ||
      (sel == SelectionKind::hierarchical && k == oldE))
    return newE;
  k = std::min(k, newE);
  int64_t groups = routing.getNGroup();
  if (groups != 1 && newE % groups == 0)
    k = std::min(k, routing.getTopkGroup() * (newE / groups));
  return k;
}

/// The dense values of `v` when it is a constant.
std::optional<std::vector<double>> constantValues(Value v) {
  DenseElementsAttr attr;
  if (!matchPattern(v, m_Constant(&attr)))
    return std::nullopt;
  std::vector<double> out;
  out.reserve(attr.getNumElements());
  for (APFloat f : attr.getValues<APFloat>())
    out.push_back(f.convertToDouble());
  return out;
}

/// The stored router `E x H` (f32) of a projected router: moe.projected_router,
/// or, when `domains`, `w1` and `w2` are constants, its value (§1.7, computed
/// in double and rounded once, as the reference does).
Value projectedRouter(OpBuilder &b, Location loc, Value domains, Value w1,
                      Value w2) {
  int64_t e = numRows(domains);
  int64_t m = cast<RankedTensorType>(domains.getType()).getDimSize(1);
  int64_t twoHp = numRows(w1), hp = twoHp / 2, h = numRows(w2);
  auto ty = RankedTensorType::get({e, h}, b.getF32Type());
  auto d = constantValues(domains), p1 = constantValues(w1),
       p2 = constantValues(w2);
  if (!d || !p1 || !p2)
    return ProjectedRouterOp::create(b, loc, ty, domains, w1, w2);
  std::vector<float> router(e * h);
  std::vector<double> z(twoHp), act(hp);
  for (int64_t i = 0; i < e; ++i) {
    for (int64_t r = 0; r < twoHp; ++r) {
      double acc = 0;
      for (int64_t c = 0; c < m; ++c)
        acc += (*p1)[r * m + c] * (*d)[i * m + c];
      z[r] = acc;
    }
    for (int64_t j = 0; j < hp; ++j) // SwiGLU: silu(gate half) * up half
      act[j] = z[j] / (1.0 + std::exp(-z[j])) * z[hp + j];
    for (int64_t r = 0; r < h; ++r) {
      double acc = 0;
      for (int64_t j = 0; j < hp; ++j)
        acc += (*p2)[r * hp + j] * act[j];
      router[i * h + r] = static_cast<float>(acc);
    }
  }
  return arith::ConstantOp::create(
      b, loc, ty, DenseElementsAttr::get(ty, ArrayRef<float>(router)));
}

/// Replaces `op`'s projected router by the stored router `router`.
void setStoredRouter(LayerOp op, Value router) {
  op.getDomainEmbeddingsMutable().clear();
  op.getProjW1Mutable().clear();
  op.getProjW2Mutable().clear();
  op.getRouterMutable().assign(router);
}

/// The per-expert (E-leading) operands of a layer, in ODS order.
SmallVector<OpOperand *> perExpertOperands(LayerOp op) {
  SmallVector<OpOperand *> out;
  for (MutableOperandRange range :
       {op.getRouterMutable(), op.getRouterBiasMutable(),
        op.getSelectionBiasMutable(), op.getDomainEmbeddingsMutable(),
        op.getGateMutable(), op.getUpMutable(), op.getDownMutable(),
        op.getGateBiasMutable(), op.getUpBiasMutable(), op.getDownBiasMutable(),
        op.getLoraAMutable(), op.getLoraBMutable()})
    for (OpOperand &operand : range)
      out.push_back(&operand);
  return out;
}

//===----------------------------------------------------------------------===//
// moe-drop-experts
//===----------------------------------------------------------------------===//

LogicalResult dropExperts(LayerOp op, ArrayRef<int64_t> ids) {
  auto describe = [&](InFlightDiagnostic diag) -> InFlightDiagnostic {
    diag << "cannot drop experts [";
    llvm::interleaveComma(ids, diag);
    return std::move(diag << "]");
  };
  int64_t special = op.getNumSpecialExperts();
  if (special > 0)
    return describe(op.emitOpError())
           << ": dropping experts from a layer with zero-computation "
              "(special) experts is not supported yet";
  int64_t e = op.getNumRoutedExperts();
  llvm::SmallSet<int64_t, 8> seen;
  for (int64_t id : ids) {
    if (id < 0 || id >= e)
      return op.emitOpError()
             << "cannot drop expert " << id << ": the layer has E = " << e
             << " routed experts (ids 0 to " << e - 1 << ")";
    if (!seen.insert(id).second)
      return op.emitOpError()
             << "cannot drop expert " << id << ": it is listed twice";
  }
  int64_t left = e - static_cast<int64_t>(ids.size());
  if (left == 0)
    return describe(op.emitOpError()) << ": that is every one of the E = " << e
                                      << " experts; at least one must stay";

  RoutingAttr routing = op.getRouting();
  int64_t groups = routing.getNGroup();
  if (left % groups != 0)
    return describe(op.emitOpError())
           << ": routing n_group = " << groups
           << " must divide the number of experts left, E = " << e << " - "
           << ids.size() << " = " << left
           << " (drop a multiple of n_group experts)";
  RoutingAttr newRouting = withK(routing, slotsFor(routing, e, left));
  if (failed(newRouting.verifyForExperts(
          [&] { return describe(op.emitOpError()) << ": "; }, left)))
    return failure();

  // Maximal runs of kept experts.
  SmallVector<RowRun> runs;
  for (int64_t i = 0; i < e; ++i) {
    if (seen.contains(i))
      continue;
    if (!runs.empty() && runs.back().start + runs.back().size == i)
      ++runs.back().size;
    else
      runs.push_back({i, 1});
  }

  OpBuilder b(op);
  Location loc = op.getLoc();
  for (OpOperand *operand : perExpertOperands(op))
    operand->set(keepRows(b, loc, operand->get(), runs));
  op.setRoutingAttr(newRouting);
  return success();
}

struct MoEDropExpertsPass
    : public mlir::moe::impl::MoEDropExpertsBase<MoEDropExpertsPass> {
  using Base::Base;

  void runOnOperation() override {
    if (experts.empty()) {
      emitError(getOperation()->getLoc())
          << "moe-drop-experts needs the ids of the experts to drop "
             "(option 'experts', e.g. --moe-drop-experts=experts=1,3)";
      return signalPassFailure();
    }
    SmallVector<int64_t> ids(experts.begin(), experts.end());
    SmallVector<LayerOp> layers;
    getOperation()->walk([&](LayerOp op) { layers.push_back(op); });
    for (LayerOp op : layers)
      if (failed(dropExperts(op, ids)))
        signalPassFailure();
  }
};

//===----------------------------------------------------------------------===//
// moe-add-expert
//===----------------------------------------------------------------------===//

LogicalResult addExpert(LayerOp op, StringRef mode) {
  auto fn = op->getParentOfType<func::FuncOp>();
  if (!fn)
    return op.emitOpError() << "cannot add an expert outside a func.func: the "
                               "new expert's weights become function "
                               "arguments";
  if (Operation *scope = fn->getParentOp()) {
    std::optional<SymbolTable::UseRange> uses =
        SymbolTable::getSymbolUses(fn, scope);
    if (uses && !uses->empty())
      return op.emitOpError()
             << "cannot add an expert: its function @" << fn.getSymName()
             << " is called, and adding the new expert's weights as "
                "arguments would change its signature";
  }
  if (!op.hasFFNExperts() && !op.hasLoRAExperts())
    return op.emitOpError() << "cannot add an expert: the layer has no FFN "
                               "or LoRA experts to take the new one's shape "
                               "from";
  bool projected = op.hasProjectedRouter();
  bool viaProjection = mode == "projected" || (mode == "auto" && projected);
  if (viaProjection && !projected)
    return op.emitOpError()
           << "cannot add an expert with router=projected: the layer has a "
              "stored router ('router'), not a projected router "
              "('domain_embeddings', 'proj_w1', 'proj_w2')";

  int64_t routed = op.getNumRoutedExperts();
  int64_t e = routed + op.getNumSpecialExperts();
  RoutingAttr routing = op.getRouting();
  int64_t groups = routing.getNGroup();
  if ((e + 1) % groups != 0)
    return op.emitOpError()
           << "cannot add an expert: routing n_group = " << groups
           << " must divide the number of experts after the "
              "add, E = "
           << e << " + 1 = " << e + 1;
  RoutingAttr newRouting = withK(routing, slotsFor(routing, e, e + 1));
  if (failed(newRouting.verifyForExperts(
          [&] { return op.emitOpError() << "cannot add an expert: "; }, e + 1)))
    return failure();

  OpBuilder b(op);
  Location loc = op.getLoc();
  // One new argument per per-expert operand, shaped like one of its rows.
  auto newArg = [&](RankedTensorType type) -> FailureOr<Value> {
    unsigned index = fn.getNumArguments();
    if (failed(fn.insertArgument(index, type, DictionaryAttr(), loc)))
      return op.emitOpError()
             << "cannot add an argument to @" << fn.getSymName();
    return Value(fn.getArgument(index));
  };
  if (projected && !viaProjection) {
    // router=row on a projected router: route with the stored router P(D)
    // and append the new row to it.
    setStoredRouter(op, projectedRouter(b, loc, op.getDomainEmbeddings(),
                                        op.getProjW1(), op.getProjW2()));
  }
  // New expert `routed` goes before the special experts' ids.
  for (OpOperand *operand : perExpertOperands(op)) {
    Value v = operand->get();
    FailureOr<Value> row = newArg(withRows(v, 1));
    if (failed(row))
      return failure();
    operand->set(insertRow(b, loc, v, *row, routed));
  }
  op.setRoutingAttr(newRouting);
  return success();
}

struct MoEAddExpertPass
    : public mlir::moe::impl::MoEAddExpertBase<MoEAddExpertPass> {
  using Base::Base;

  void runOnOperation() override {
    if (router != "auto" && router != "row" && router != "projected") {
      emitError(getOperation()->getLoc())
          << "moe-add-expert: option 'router' must be 'row', 'projected' or "
             "'auto', got '"
          << router << "'";
      return signalPassFailure();
    }
    SmallVector<LayerOp> layers;
    getOperation()->walk([&](LayerOp op) { layers.push_back(op); });
    for (LayerOp op : layers)
      if (failed(addExpert(op, router)))
        signalPassFailure();
  }
};

//===----------------------------------------------------------------------===//
// moe-fold-projected-router
//===----------------------------------------------------------------------===//

struct MoEFoldProjectedRouterPass
    : public mlir::moe::impl::MoEFoldProjectedRouterBase<
          MoEFoldProjectedRouterPass> {
  void runOnOperation() override {
    SmallVector<LayerOp> layers;
    getOperation()->walk([&](LayerOp op) {
      if (op.hasProjectedRouter())
        layers.push_back(op);
    });
    for (LayerOp op : layers) {
      OpBuilder b(op);
      setStoredRouter(op,
                      projectedRouter(b, op.getLoc(), op.getDomainEmbeddings(),
                                      op.getProjW1(), op.getProjW2()));
    }
  }
};

} // namespace
