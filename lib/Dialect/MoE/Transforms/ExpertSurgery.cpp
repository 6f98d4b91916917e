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
// * --moe-merge-experts (M-SMoE merge): each group of experts becomes one
//   expert, the usage-frequency-weighted mean of their weights; the router
//   keeps its rows and an expert_map points each at its merged expert.
//
// Per-expert operands are E-leading, so all three are row surgery on dim 0.
// Function arguments are sliced with tensor ops; dense constants are sliced
// here, at compile time, because upstream canonicalisation folds neither
// tensor.extract_slice nor tensor.concat of non-splat constants.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallSet.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cmath>
#include <optional>

namespace mlir::moe {
#define GEN_PASS_DEF_MOEDROPEXPERTS
#define GEN_PASS_DEF_MOEADDEXPERT
#define GEN_PASS_DEF_MOEFOLDPROJECTEDROUTER
#define GEN_PASS_DEF_MOEMERGEEXPERTS
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
                          r.getTauGroup(), r.getTauExpert(), r.getJitterEps());
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
  if (op.getExpertMap())
    return describe(op.emitOpError())
           << ": the layer's experts were merged ('expert_map'); drop before "
              "merging";
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
  if (op.getExpertMap())
    return op.emitOpError() << "cannot add an expert: the layer's experts "
                               "were merged ('expert_map'); add before "
                               "merging";
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

//===----------------------------------------------------------------------===//
// moe-merge-experts
//===----------------------------------------------------------------------===//

/// The weighted mean `sum_i c_i * rows[i]` of one-row slices of an E-leading
/// tensor, rounded once to its element type. Constants are combined here
/// (in double); function arguments by a linalg.generic in f32.
Value weightedRowMean(OpBuilder &b, Location loc, Value v,
                      ArrayRef<int64_t> rows, ArrayRef<double> coeffs) {
  auto ty = cast<RankedTensorType>(v.getType());
  RankedTensorType rowTy = withRows(v, 1);
  if (std::optional<std::vector<double>> vals = constantValues(v)) {
    int64_t n = rowTy.getNumElements();
    const llvm::fltSemantics &sem =
        cast<FloatType>(ty.getElementType()).getFloatSemantics();
    SmallVector<APFloat> out;
    for (int64_t i = 0; i < n; ++i) {
      double acc = 0;
      for (auto [r, c] : llvm::zip(rows, coeffs))
        acc += c * (*vals)[r * n + i];
      APFloat f(acc);
      bool lost;
      f.convert(sem, APFloat::rmNearestTiesToEven, &lost);
      out.push_back(f);
    }
    return arith::ConstantOp::create(b, loc, rowTy,
                                     DenseElementsAttr::get(rowTy, out));
  }
  if (rows.size() == 1)
    return rowSlice(b, loc, v, {rows[0], 1});
  SmallVector<Value> ins;
  for (int64_t r : rows)
    ins.push_back(rowSlice(b, loc, v, {r, 1}));
  Type elt = ty.getElementType();
  Type f32 = b.getF32Type();
  Value init = tensor::EmptyOp::create(b, loc, rowTy.getShape(), elt);
  AffineMap id = b.getMultiDimIdentityMap(rowTy.getRank());
  SmallVector<AffineMap> maps(ins.size() + 1, id);
  SmallVector<utils::IteratorType> iters(rowTy.getRank(),
                                         utils::IteratorType::parallel);
  auto gen = linalg::GenericOp::create(
      b, loc, TypeRange{rowTy}, ins, ValueRange{init}, maps, iters,
      [&](OpBuilder &nb, Location l, ValueRange args) {
        Value acc;
        for (auto [x, c] : llvm::zip(args.drop_back(), coeffs)) {
          Value xf = elt == f32 ? x : arith::ExtFOp::create(nb, l, f32, x);
          Value cst = arith::ConstantOp::create(
              nb, l, nb.getF32FloatAttr(static_cast<float>(c)));
          Value term = arith::MulFOp::create(nb, l, cst, xf);
          acc = acc ? arith::AddFOp::create(nb, l, acc, term) : term;
        }
        if (elt != f32)
          acc = arith::TruncFOp::create(nb, l, elt, acc);
        linalg::YieldOp::create(nb, l, acc);
      });
  return gen.getResult(0);
}

/// Groups `g` (each a list of expert ids) completed with singletons and
/// ordered by their smallest member: the merged experts.
FailureOr<SmallVector<SmallVector<int64_t>>>
mergedGroups(LayerOp op, ArrayRef<SmallVector<int64_t>> g, int64_t e) {
  SmallVector<int64_t> owner(e, -1);
  for (auto [gi, group] : llvm::enumerate(g))
    for (int64_t id : group) {
      if (id < 0 || id >= e)
        return op.emitOpError()
               << "cannot merge expert " << id << ": the layer has E = " << e
               << " routed experts (ids 0 to " << e - 1 << ")";
      if (owner[id] != -1)
        return op.emitOpError() << "cannot merge expert " << id
                                << ": it is listed twice in 'groups'";
      owner[id] = static_cast<int64_t>(gi);
    }
  SmallVector<SmallVector<int64_t>> out;
  for (int64_t id = 0; id < e; ++id) {
    if (owner[id] == -1) {
      out.push_back({id});
      continue;
    }
    if (owner[id] == -2)
      continue; // already placed with its group
    SmallVector<int64_t> group(g[owner[id]]);
    llvm::sort(group);
    for (int64_t m : group)
      owner[m] = -2;
    out.push_back(std::move(group));
  }
  return out;
}

LogicalResult mergeExperts(LayerOp op, ArrayRef<SmallVector<int64_t>> groups,
                           ArrayRef<double> frequencies) {
  if (op.getExpertMap())
    return op.emitOpError() << "cannot merge experts: the layer's experts "
                               "were merged already ('expert_map')";
  if (op.hasLoRAExperts())
    return op.emitOpError()
           << "cannot merge LoRA experts: the mean of the factors A_e, B_e "
              "is not the mean of the updates B_e A_e";
  if (!op.hasFFNExperts())
    return op.emitOpError() << "cannot merge experts: the layer has no FFN "
                               "experts";
  int64_t e = op.getNumRoutedExperts();
  if (!frequencies.empty() && static_cast<int64_t>(frequencies.size()) != e)
    return op.emitOpError() << "cannot merge experts: 'frequencies' lists "
                            << frequencies.size()
                            << " values but the layer has E = " << e
                            << " routed experts";
  for (auto [i, f] : llvm::enumerate(frequencies))
    if (!(f >= 0.0) || std::isinf(f))
      return op.emitOpError() << "cannot merge experts: frequency of expert "
                              << i << " must be finite and >= 0, got " << f;
  FailureOr<SmallVector<SmallVector<int64_t>>> merged =
      mergedGroups(op, groups, e);
  if (failed(merged))
    return failure();
  auto m = static_cast<int64_t>(merged->size());
  int64_t special = op.getNumSpecialExperts();
  if (op.getDispatch() == DispatchMode::capacity &&
      op.getRouting().getK() > m + special)
    return op.emitOpError() << "cannot merge to " << m
                            << " experts: capacity dispatch needs at least k = "
                            << op.getRouting().getK() << " experts";

  SmallVector<int32_t> map(e);
  SmallVector<SmallVector<double>> coeffs;
  for (auto [mi, group] : llvm::enumerate(*merged)) {
    double total = 0;
    for (int64_t id : group) {
      map[id] = static_cast<int32_t>(mi);
      total += frequencies.empty() ? 1.0 : frequencies[id];
    }
    SmallVector<double> c;
    for (int64_t id : group) // unused experts (total 0): the plain mean
      c.push_back(total > 0 ? (frequencies.empty() ? 1.0 : frequencies[id]) /
                                  total
                            : 1.0 / static_cast<double>(group.size()));
    coeffs.push_back(std::move(c));
  }

  OpBuilder b(op);
  Location loc = op.getLoc();
  for (MutableOperandRange range :
       {op.getGateMutable(), op.getUpMutable(), op.getDownMutable(),
        op.getGateBiasMutable(), op.getUpBiasMutable(),
        op.getDownBiasMutable()})
    for (OpOperand &operand : range) {
      SmallVector<Value> rows;
      for (auto [group, c] : llvm::zip(*merged, coeffs))
        rows.push_back(weightedRowMean(b, loc, operand.get(), group, c));
      Value stacked = stackRows(b, loc, rows);
      // Merged constant rows are joined here too, not by tensor.concat.
      if (llvm::all_of(rows, [](Value r) { return constantValues(r); })) {
        SmallVector<APFloat> all;
        for (Value r : rows) {
          DenseElementsAttr attr;
          matchPattern(r, m_Constant(&attr));
          llvm::append_range(all, attr.getValues<APFloat>());
        }
        RankedTensorType ty = withRows(operand.get(), m);
        stacked = arith::ConstantOp::create(b, loc, ty,
                                            DenseElementsAttr::get(ty, all));
      }
      operand.set(stacked);
    }
  op.setExpertMap(ArrayRef<int32_t>(map));
  return success();
}

struct MoEMergeExpertsPass
    : public mlir::moe::impl::MoEMergeExpertsBase<MoEMergeExpertsPass> {
  using Base::Base;

  /// `frequencies`, or the routed counts of layer `calibLayer` of the
  /// moe-calib/1 file `calib`.
  LogicalResult readFrequencies(SmallVectorImpl<double> &out) {
    Location loc = getOperation()->getLoc();
    if (calib.empty()) {
      out.assign(frequencies.begin(), frequencies.end());
      return success();
    }
    if (!frequencies.empty())
      return emitError(loc) << "moe-merge-experts: give 'frequencies' or "
                               "'calib', not both";
    auto buf = llvm::MemoryBuffer::getFile(calib);
    if (!buf)
      return emitError(loc) << "moe-merge-experts: cannot read calibration "
                               "file '"
                            << calib << "': " << buf.getError().message();
    llvm::Expected<llvm::json::Value> json =
        llvm::json::parse((*buf)->getBuffer());
    if (!json)
      return emitError(loc) << "moe-merge-experts: '" << calib
                            << "' is not JSON: "
                            << llvm::toString(json.takeError());
    const llvm::json::Object *root = json->getAsObject();
    const llvm::json::Array *layers =
        root ? root->getArray("layers") : nullptr;
    if (!root || root->getString("format") != "moe-calib/1" || !layers)
      return emitError(loc) << "moe-merge-experts: '" << calib
                            << "' is not a moe-calib/1 calibration file";
    const llvm::json::Object *layer = nullptr;
    int64_t index = calibLayer;
    for (const llvm::json::Value &l : *layers) {
      const llvm::json::Object *o = l.getAsObject();
      if (o && o->getInteger("index") == index)
        layer = o;
    }
    const llvm::json::Array *counts =
        layer ? layer->getArray("routed_counts") : nullptr;
    if (!counts)
      return emitError(loc) << "moe-merge-experts: '" << calib
                            << "' has no routed_counts for layer " << index
                            << " (option 'calib-layer')";
    for (const llvm::json::Value &c : *counts) {
      std::optional<double> d = c.getAsNumber();
      if (!d)
        return emitError(loc) << "moe-merge-experts: '" << calib
                              << "': a routed count of layer " << index
                              << " is not a number";
      out.push_back(*d);
    }
    return success();
  }

  void runOnOperation() override {
    Location loc = getOperation()->getLoc();
    SmallVector<SmallVector<int64_t>> parsed;
    for (const std::string &g : groups) {
      SmallVector<StringRef> parts;
      StringRef(g).split(parts, '+');
      SmallVector<int64_t> ids;
      for (StringRef p : parts) {
        int64_t id;
        if (p.trim().getAsInteger(10, id)) {
          emitError(loc) << "moe-merge-experts: group '" << g
                         << "' is not a list of expert ids joined by '+' "
                            "(e.g. groups=0+3,1+2+5)";
          return signalPassFailure();
        }
        ids.push_back(id);
      }
      parsed.push_back(std::move(ids));
    }
    if (parsed.empty()) {
      emitError(loc) << "moe-merge-experts needs the groups to merge (option "
                        "'groups', e.g. --moe-merge-experts=groups=0+3,1+2)";
      return signalPassFailure();
    }
    SmallVector<double> freq;
    if (failed(readFrequencies(freq)))
      return signalPassFailure();
    SmallVector<LayerOp> layers;
    getOperation()->walk([&](LayerOp op) { layers.push_back(op); });
    for (LayerOp op : layers)
      if (failed(mergeExperts(op, parsed, freq)))
        signalPassFailure();
  }
};

} // namespace
