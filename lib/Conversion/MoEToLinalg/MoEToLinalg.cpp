//===- MoEToLinalg.cpp - moe compute ops to linalg on tensors ---*- C++ -*-===//
//
// Implements --convert-moe-to-linalg. Every contraction accumulates in f32
// (MOE_SEMANTICS.md: "reductions accumulate in f32") and results are rounded
// once to the op's result type. Expert weights are read through the slot's
// expert index inside the linalg payload (a gather), so the generated code
// does the T*K*(...) useful work and never a dense T*E*(...) one.
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoE.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/DialectConversion.h"

#include <cmath>
#include <functional>

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOETOLINALG
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
using utils::IteratorType;
constexpr IteratorType kPar = IteratorType::parallel;
constexpr IteratorType kRed = IteratorType::reduction;

class Emitter;
/// The gated AMX GEMM's epilogue: (group, column, gate sum, up sum) -> the
/// stored element (BlockedGemm::epilogue).
using GatedEpilogue =
    std::function<Value(ImplicitLocOpBuilder &, Value, Value, Value, Value)>;
Value blockedMatmulT(Emitter &em, Value x, Value w, Value up = {},
                     GatedEpilogue epilogue = {}, Type outElt = {});

/// Builds linalg IR for one op. Shapes are `T x ...` where only T (dim 0 of
/// `tokens`) may be dynamic.
class Emitter {
public:
  Emitter(ImplicitLocOpBuilder &b, Value tokens) : b(b), tokens(tokens) {}

  Type f32() { return b.getF32Type(); }

  /// A tensor of `shape` (dim 0 may be kDynamic: it is then T) filled with 0.
  Value zeros(ArrayRef<int64_t> shape, Type elt) {
    SmallVector<Value> dyn;
    if (ShapedType::isDynamic(shape[0]))
      dyn.push_back(tensor::DimOp::create(b, tokens, 0));
    Value empty = tensor::EmptyOp::create(b, shape, elt, dyn);
    Value zero = arith::ConstantOp::create(b, b.getZeroAttr(elt));
    return linalg::FillOp::create(b, zero, empty).getResult(0);
  }

  Value ext(Value v) {
    if (v.getType() == f32())
      return v;
    return arith::ExtFOp::create(b, f32(), v);
  }
  Value castTo(Value v, Type elt) {
    if (v.getType() == elt)
      return v;
    return arith::TruncFOp::create(b, elt, v);
  }

  AffineMap map(unsigned numDims, ArrayRef<unsigned> dims) {
    SmallVector<AffineExpr> exprs;
    for (unsigned d : dims)
      exprs.push_back(b.getAffineDimExpr(d));
    return AffineMap::get(numDims, 0, exprs, b.getContext());
  }

  /// A linalg.generic writing one result shaped like `init`. The payload
  /// sees (ins..., current value of init). For an element-wise op (all
  /// loops parallel) `init` is passed as an input and the result goes to a
  /// fresh tensor: a payload that reads its `outs` is not element-wise to
  /// linalg's fusion, which would otherwise re-apply it inside a consumer's
  /// reduction loop.
  Value generic(Value init, ValueRange ins, ArrayRef<AffineMap> maps,
                ArrayRef<IteratorType> iters,
                function_ref<Value(OpBuilder &, Location, ValueRange)> body) {
    bool elementwise = llvm::all_of(
        iters, [](IteratorType it) { return it == IteratorType::parallel; });
    SmallVector<Value> inputs(ins.begin(), ins.end());
    SmallVector<AffineMap> allMaps(maps.begin(), maps.end());
    Value out = init;
    if (elementwise) {
      inputs.push_back(init);
      allMaps.insert(allMaps.end() - 1, maps.back());
      auto ty = cast<RankedTensorType>(init.getType());
      SmallVector<Value> dyn;
      for (int64_t i = 0; i < ty.getRank(); ++i)
        if (ty.isDynamicDim(i))
          dyn.push_back(tensor::DimOp::create(b, init, i));
      out = tensor::EmptyOp::create(b, ty.getShape(), ty.getElementType(), dyn);
    }
    auto op = linalg::GenericOp::create(
        b, TypeRange{init.getType()}, inputs, ValueRange{out}, allMaps, iters,
        [&](OpBuilder &nb, Location loc, ValueRange args) {
          ValueRange seen = elementwise ? args.drop_back() : args;
          linalg::YieldOp::create(nb, loc, body(nb, loc, seen));
        });
    return op.getResult(0);
  }

  /// `x * w^T` in f32: x is `T x I`, w is `O x I`; result `T x O`. With
  /// `blockBytes`, the blocked loop nest (blockedMatmulT).
  Value matmulT(Value x, Value w) {
    if (gemms.blockBytes)
      return blockedMatmulT(*this, x, w);
    auto xTy = cast<RankedTensorType>(x.getType());
    auto wTy = cast<RankedTensorType>(w.getType());
    Value init = zeros({xTy.getDimSize(0), wTy.getDimSize(0)}, f32());
    return generic(init, {x, w}, {map(3, {0, 2}), map(3, {1, 2}), map(3, {0, 1})},
                   {kPar, kPar, kRed},
                   [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                     ImplicitLocOpBuilder ib(loc, nb);
                     return fma(ib, a[2], extIn(ib, a[0]), extIn(ib, a[1]));
                   });
  }

  /// Adds a bias `O` (any float type) to each row of the f32 `T x O` tensor.
  Value addBias(Value y, Value bias) {
    if (!bias)
      return y;
    return generic(y, {bias}, {map(2, {1}), map(2, {0, 1})}, {kPar, kPar},
                   [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                     ImplicitLocOpBuilder ib(loc, nb);
                     return arith::AddFOp::create(ib, a[1], extIn(ib, a[0]));
                   });
  }

  /// Rounds an f32 tensor to `resultType` (identity when it is f32).
  Value round(Value y, Type resultType) {
    Type elt = cast<ShapedType>(resultType).getElementType();
    if (elt == f32())
      return y;
    auto yTy = cast<RankedTensorType>(y.getType());
    SmallVector<Value> dyn;
    for (int64_t i = 0; i < yTy.getRank(); ++i)
      if (yTy.isDynamicDim(i))
        dyn.push_back(tensor::DimOp::create(b, y, i));
    Value out = tensor::EmptyOp::create(b, yTy.getShape(), elt, dyn);
    SmallVector<unsigned> ids;
    for (unsigned i = 0; i < yTy.getRank(); ++i)
      ids.push_back(i);
    SmallVector<IteratorType> iters(yTy.getRank(), kPar);
    SmallVector<AffineMap> maps(2, map(ids.size(), ids));
    return linalg::GenericOp::create(
               b, TypeRange{out.getType()}, ValueRange{y}, ValueRange{out},
               maps, iters,
               [&](OpBuilder &nb, Location loc, ValueRange a) {
                 linalg::YieldOp::create(
                     nb, loc, ValueRange{arith::TruncFOp::create(nb, loc, elt, a[0])});
               })
        .getResult(0);
  }

  static Value extIn(ImplicitLocOpBuilder &ib, Value v) {
    if (v.getType().isF32())
      return v;
    return arith::ExtFOp::create(ib, ib.getF32Type(), v);
  }

  /// `acc + a * b` for contractions. Reassociation lets LLVM vectorise the
  /// reduction and contract it into FMAs; the contract allows any summation
  /// order ("must not change results beyond f32 rounding").
  static Value fma(ImplicitLocOpBuilder &ib, Value acc, Value a, Value b) {
    auto fm = arith::FastMathFlagsAttr::get(
        ib.getContext(), arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
    Value p = arith::MulFOp::create(ib, a, b, fm);
    return arith::AddFOp::create(ib, acc, p, fm);
  }

  static Value cst(ImplicitLocOpBuilder &ib, double v) {
    return arith::ConstantOp::create(ib, ib.getF32FloatAttr(v));
  }

  static Value sigmoid(ImplicitLocOpBuilder &ib, Value x) {
    Value one = cst(ib, 1.0);
    Value e = math::ExpOp::create(ib, arith::NegFOp::create(ib, x));
    return arith::DivFOp::create(ib, one, arith::AddFOp::create(ib, one, e));
  }

  static Value gelu(ImplicitLocOpBuilder &ib, Value x) {
    // 0.5 x (1 + erf(x / sqrt 2)), the exact form.
    Value s = arith::MulFOp::create(ib, x, cst(ib, M_SQRT1_2));
    Value t = arith::AddFOp::create(ib, cst(ib, 1.0), math::ErfOp::create(ib, s));
    return arith::MulFOp::create(ib, arith::MulFOp::create(ib, cst(ib, 0.5), x),
                                 t);
  }

  static Value geluTanh(ImplicitLocOpBuilder &ib, Value x) {
    // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    Value x3 = arith::MulFOp::create(ib, arith::MulFOp::create(ib, x, x), x);
    Value inner = arith::AddFOp::create(
        ib, x, arith::MulFOp::create(ib, cst(ib, 0.044715), x3));
    Value th = math::TanhOp::create(
        ib, arith::MulFOp::create(ib, cst(ib, std::sqrt(2.0 / M_PI)), inner));
    Value t = arith::AddFOp::create(ib, cst(ib, 1.0), th);
    return arith::MulFOp::create(ib, arith::MulFOp::create(ib, cst(ib, 0.5), x),
                                 t);
  }

  /// The activation of §3 on f32 scalars: `gate` is null for non-gated ones.
  static Value activate(ImplicitLocOpBuilder &ib, Activation act, Value gate,
                        Value up, double alpha, double limit) {
    switch (act) {
    case Activation::swiglu:
      return arith::MulFOp::create(
          ib, arith::MulFOp::create(ib, gate, sigmoid(ib, gate)), up);
    case Activation::geglu:
      return arith::MulFOp::create(ib, gelu(ib, gate), up);
    case Activation::gelu:
      return gelu(ib, up);
    case Activation::gelu_tanh:
      return geluTanh(ib, up);
    case Activation::relu:
      return arith::MaximumFOp::create(ib, up, cst(ib, 0.0));
    case Activation::relu2: {
      Value r = arith::MaximumFOp::create(ib, up, cst(ib, 0.0));
      return arith::MulFOp::create(ib, r, r);
    }
    case Activation::swiglu_clamped: {
      Value lim = cst(ib, limit);
      Value g = arith::MinimumFOp::create(ib, gate, lim);
      Value u = arith::MaximumFOp::create(
          ib, arith::MinimumFOp::create(ib, up, lim), cst(ib, -limit));
      Value glu = arith::MulFOp::create(
          ib, g, sigmoid(ib, arith::MulFOp::create(ib, cst(ib, alpha), g)));
      return arith::MulFOp::create(
          ib, arith::AddFOp::create(ib, u, cst(ib, 1.0)), glu);
    }
    }
    llvm_unreachable("unknown activation");
  }

  ImplicitLocOpBuilder &b;
  Value tokens;
  /// With a positive `blockBytes`, GEMMs become blocked loop nests (the CPU
  /// pipeline's `blocked-gemms`).
  BlockedGemmConfig gemms;
};

/// The expert of a slot, relative to the op's first expert, clamped into
/// range so that the gather is always in bounds, and whether it is valid.
std::pair<Value, Value> slotExpert(ImplicitLocOpBuilder &ib, Value idx,
                                   int64_t offset, int64_t numExperts) {
  Value e = arith::SubIOp::create(
      ib, idx, arith::ConstantOp::create(ib, ib.getI32IntegerAttr(offset)));
  Value zero = arith::ConstantOp::create(ib, ib.getI32IntegerAttr(0));
  Value last =
      arith::ConstantOp::create(ib, ib.getI32IntegerAttr(numExperts - 1));
  Value valid = arith::AndIOp::create(
      ib, arith::CmpIOp::create(ib, arith::CmpIPredicate::sge, e, zero),
      arith::CmpIOp::create(ib, arith::CmpIPredicate::sle, e, last));
  Value clamped = arith::MinSIOp::create(ib, arith::MaxSIOp::create(ib, e, zero),
                                         last);
  return {arith::IndexCastOp::create(ib, ib.getIndexType(), clamped), valid};
}

/// `out[t,k,o] = sum_i in[t,(k,)i] * W[e(t,k), o, i]` in f32; `in` is either
/// `T x I` (shared by all slots) or `T x K x I`.
///
/// A parallel generic over (t, k, o) whose payload runs the reduction over i
/// as an scf.for with the accumulator in an iter_arg: the expert id is read
/// once per output element and the inner loop has no stores, so LLVM keeps
/// the sum in registers and vectorises it (a 4-d generic with a reduction
/// loop stored the accumulator on every step; measured ~2.5x slower).
Value gatheredMatmul(Emitter &em, Value in, Value idx, Value w,
                     int64_t offset) {
  ImplicitLocOpBuilder &b = em.b;
  auto inTy = cast<RankedTensorType>(in.getType());
  auto wTy = cast<RankedTensorType>(w.getType());
  int64_t t = inTy.getDimSize(0), k = cast<ShapedType>(idx.getType()).getDimSize(1);
  int64_t numExperts = wTy.getDimSize(0), o = wTy.getDimSize(1),
          reduce = wTy.getDimSize(2);
  bool perSlot = inTy.getRank() == 3;
  SmallVector<Value> dyn;
  if (ShapedType::isDynamic(t))
    dyn.push_back(tensor::DimOp::create(b, em.tokens, 0));
  Value out = tensor::EmptyOp::create(b, ArrayRef<int64_t>{t, k, o}, em.f32(), dyn);
  auto op = linalg::GenericOp::create(
      b, TypeRange{out.getType()}, ValueRange{idx}, ValueRange{out},
      ArrayRef<AffineMap>{em.map(3, {0, 1}), em.map(3, {0, 1, 2})},
      ArrayRef<IteratorType>{kPar, kPar, kPar},
      [&](OpBuilder &nb, Location loc, ValueRange a) {
        ImplicitLocOpBuilder ib(loc, nb);
        Value e = slotExpert(ib, a[0], offset, numExperts).first;
        Value ti = linalg::IndexOp::create(ib, 0);
        Value ki = linalg::IndexOp::create(ib, 1);
        Value oi = linalg::IndexOp::create(ib, 2);
        Value c0 = arith::ConstantIndexOp::create(ib, 0);
        Value c1 = arith::ConstantIndexOp::create(ib, 1);
        Value n = arith::ConstantIndexOp::create(ib, reduce);
        auto loop = scf::ForOp::create(
            ib, c0, n, c1, ValueRange{Emitter::cst(ib, 0.0)},
            [&](OpBuilder &lb, Location l2, Value i, ValueRange acc) {
              ImplicitLocOpBuilder jb(l2, lb);
              SmallVector<Value> inIdx{ti};
              if (perSlot)
                inIdx.push_back(ki);
              inIdx.push_back(i);
              Value xv = tensor::ExtractOp::create(jb, in, inIdx);
              Value wv = tensor::ExtractOp::create(jb, w, ValueRange{e, oi, i});
              scf::YieldOp::create(
                  jb, ValueRange{Emitter::fma(jb, acc[0], Emitter::extIn(jb, xv),
                                              Emitter::extIn(jb, wv))});
            });
        linalg::YieldOp::create(ib, loop.getResult(0));
      });
  return op.getResult(0);
}

/// The slots of a `T x K` index tensor grouped by expert, for the grouped
/// expert GEMMs: `perm` (`T*K` slot ids `p = t*K + k`) lists expert 0's
/// slots, then expert 1's, ..., in slot order; expert `e`'s are
/// `perm[start[e] .. start[e+1])`. Slots outside the op's experts go to a
/// last bucket `E`, which no GEMM reads. Three sequential passes over the
/// slots (count, prefix sum, place): O(T*K + E), negligible next to the
/// GEMMs.
struct SlotOrder {
  Value perm;  // tensor<(T*K) x index>
  Value start; // tensor<(E+2) x index>
};

SlotOrder sortSlots(Emitter &em, Value idx, int64_t offset,
                    int64_t numExperts) {
  ImplicitLocOpBuilder &b = em.b;
  Type indexTy = b.getIndexType();
  int64_t k = cast<ShapedType>(idx.getType()).getDimSize(1);
  Value cK = arith::ConstantIndexOp::create(b, k);
  Value c0 = arith::ConstantIndexOp::create(b, 0);
  Value c1 = arith::ConstantIndexOp::create(b, 1);
  Value slots = arith::MulIOp::create(b, tensor::DimOp::create(b, idx, 0), cK);
  // The bucket of slot p: its expert relative to the op's first, or E.
  auto bucketOf = [&](ImplicitLocOpBuilder &ib, Value p) {
    Value t = arith::DivUIOp::create(ib, p, cK);
    Value kk = arith::RemUIOp::create(ib, p, cK);
    Value raw = tensor::ExtractOp::create(ib, idx, ValueRange{t, kk});
    auto [e, valid] = slotExpert(ib, raw, offset, numExperts);
    return arith::SelectOp::create(
               ib, valid, e, arith::ConstantIndexOp::create(ib, numExperts))
        .getResult();
  };
  auto increment = [](ImplicitLocOpBuilder &ib, Value tensor, Value at,
                      Value by) {
    Value old = tensor::ExtractOp::create(ib, tensor, at);
    return tensor::InsertOp::create(ib, arith::AddIOp::create(ib, old, by),
                                    tensor, at)
        .getResult();
  };
  Value zero = arith::ConstantOp::create(b, b.getIndexAttr(0));
  Value empty = tensor::EmptyOp::create(
      b, ArrayRef<int64_t>{numExperts + 2}, indexTy, ValueRange{});
  Value counts = linalg::FillOp::create(b, zero, empty).getResult(0);
  // counts[bucket + 1] = number of slots in the bucket.
  counts = scf::ForOp::create(
               b, c0, slots, c1, ValueRange{counts},
               [&](OpBuilder &nb, Location loc, Value p, ValueRange acc) {
                 ImplicitLocOpBuilder ib(loc, nb);
                 Value at = arith::AddIOp::create(ib, bucketOf(ib, p), c1);
                 scf::YieldOp::create(ib, increment(ib, acc[0], at, c1));
               })
               .getResult(0);
  // Running sum of the counts (shifted by one): start[e] = slots in
  // buckets < e.
  Value start =
      scf::ForOp::create(
          b, c1, arith::ConstantIndexOp::create(b, numExperts + 2), c1,
          ValueRange{counts},
          [&](OpBuilder &nb, Location loc, Value e, ValueRange acc) {
            ImplicitLocOpBuilder ib(loc, nb);
            Value prev = tensor::ExtractOp::create(
                ib, acc[0], ValueRange{arith::SubIOp::create(ib, e, c1)});
            scf::YieldOp::create(ib, increment(ib, acc[0], e, prev));
          })
          .getResult(0);
  Value perm = tensor::EmptyOp::create(b, ArrayRef<int64_t>{ShapedType::kDynamic},
                                       indexTy, ValueRange{slots});
  auto place = scf::ForOp::create(
      b, c0, slots, c1, ValueRange{start, perm},
      [&](OpBuilder &nb, Location loc, Value p, ValueRange acc) {
        ImplicitLocOpBuilder ib(loc, nb);
        Value bucket = bucketOf(ib, p);
        Value pos = tensor::ExtractOp::create(ib, acc[0], bucket);
        Value nextPerm = tensor::InsertOp::create(ib, p, acc[1], pos);
        Value cursor = tensor::InsertOp::create(
            ib, arith::AddIOp::create(ib, pos, c1), acc[0], bucket);
        scf::YieldOp::create(ib, ValueRange{cursor, nextPerm});
      });
  return {place.getResult(1), start};
}

/// The blocked GEMM loop nest of the CPU pipeline, shared by the grouped
/// expert GEMMs and the dense ones: the usual CPU GEMM blocking (the
/// BLIS/GotoBLAS scheme: a block of A rows kept in cache while the B panel
/// streams past it, a register tile in the innermost loop):
///
///   for g in groups:                  expert (or the one dense weight)
///     for blk (rows of g, em.blockBytes of input): they stay in L2
///       forall o (kCols weight rows): read once per block; independent
///         for c (kRowTile rows):      kRowTile x kCols f32 accumulators
///           for i: acc[j][r] += in[row j][i] * W[g][o + r][i]
///         (then the block's last < kRowTile rows one at a time)
///
/// LLVM vectorises the innermost reduction (reassoc/contract, as in
/// gatheredMatmul). With `gemm-vector-bits`, a block of at least half a
/// vector of rows takes the outer-product micro-kernel instead (its comment
/// below, `microKernelBlock`). The column groups are an scf.forall, each writing its
/// own column slab of the output: the CPU pipeline runs them on the
/// runtime's threads (decode included: one token still has O / kCols
/// groups), or as a loop. Columns past O (O not a multiple of kCols) repeat
/// the last one: the repeat computes and stores the same value again
/// instead of branching.
constexpr int64_t kRowTile = 4;
constexpr int64_t kCols = 4;

/// The outer-product micro-kernel's geometry for vector registers of
/// `bits`: `lanes` f32 rows per vector, `cols` weight rows, two vectors of
/// rows, so 2 x cols accumulators plus two row vectors and a broadcast fit
/// the register file (32 registers with AVX-512, 16 with AVX2).
struct MicroKernel {
  int64_t lanes;
  int64_t cols;
};
std::optional<MicroKernel> microKernelFor(int64_t bits) {
  if (bits == 512)
    return MicroKernel{16, 12};
  if (bits == 256)
    return MicroKernel{8, 6};
  return std::nullopt;
}

/// What the nest computes: `out[row(q)..., o] = sum_i in[input(row(q))..., i]
/// * weight(g, o, i)` for q in `range(g)`.
struct BlockedGemm {
  int64_t groups;
  /// The rows [first, end) of group g.
  std::function<std::pair<Value, Value>(ImplicitLocOpBuilder &, Value)> range;
  /// The indices of row q in `out` (without the column).
  std::function<SmallVector<Value>(ImplicitLocOpBuilder &, Value)> row;
  /// The indices of that row in `in` (without i).
  std::function<SmallVector<Value>(ArrayRef<Value>)> input;
  /// The weight element (g, o, i), not yet extended to f32.
  std::function<Value(ImplicitLocOpBuilder &, Value, Value, Value)> weight;
  /// The weights' element type.
  Type weightType;
  /// The weight tensor and the indices of group g's `O x I` matrix in it
  /// (for the AMX kernel's tile loads).
  Value weights;
  std::function<SmallVector<Value>(ImplicitLocOpBuilder &, Value)> weightPrefix;
  /// The gated form (AMX only): `weights` are the gate projection's, `up`
  /// the up projection's (same shape), and the stored element of (row,
  /// column o) is `epilogue(g, o, gate sum, up sum)` (the biases and the
  /// activation, rounded to `out`'s element type), so the two f32 sums
  /// never reach memory.
  Value up;
  GatedEpilogue epilogue;
};

/// The AMX kernel's geometry: a tile register holds 16 rows of 64 bytes, so
/// a bf16 operand tile is 16 x 32 (a reduction step of 32) and the f32
/// accumulator 16 x 16. A column group is two weight tiles (32 weight
/// rows), a panel 16 of the block's rows; a pair of panels makes 2 x 2
/// accumulators, which with the 2 + 2 operand tiles fill the 8 tile
/// registers.
constexpr int64_t kAmxRows = 16;
constexpr int64_t kAmxDepth = 32;
constexpr int64_t kAmxCols = 2 * kAmxRows;

/// Whether a GEMM with `O x I` weights `w` (the last two dimensions) runs
/// on AMX tiles: with `gemm-amx` (on the blocked nest), bf16 weights, and O
/// and I whole tiles (every production model's are), so that no tile load
/// reads past a weight row or the weight matrix. Its input must be bf16
/// too (the callers round the down projection's f32 activations).
bool amxGemm(const BlockedGemmConfig &gemms, Value w) {
  auto wTy = cast<RankedTensorType>(w.getType());
  int64_t rank = wTy.getRank();
  return gemms.amx && gemms.blockBytes && wTy.getElementType().isBF16() &&
         wTy.getDimSize(rank - 2) % kAmxCols == 0 &&
         wTy.getDimSize(rank - 1) % kAmxDepth == 0;
}

Value blockedGemm(Emitter &em, Value in, Value out, int64_t o, int64_t reduce,
                  const BlockedGemm &gemm) {
  ImplicitLocOpBuilder &b = em.b;
  Value c0 = arith::ConstantIndexOp::create(b, 0);
  Value c1 = arith::ConstantIndexOp::create(b, 1);
  Value cTile = arith::ConstantIndexOp::create(b, kRowTile);
  int64_t rowBytes =
      reduce * cast<ShapedType>(in.getType()).getElementTypeBitWidth() / 8;
  int64_t rowBlock = std::max<int64_t>(
      kRowTile, em.gemms.blockBytes / std::max<int64_t>(rowBytes, 1) / kRowTile *
                    kRowTile);
  std::optional<MicroKernel> mk = microKernelFor(em.gemms.vectorBits);
  // Outputs narrower than two column groups (routers: O = E) keep the
  // dot-product tiles, whose groups are 4 columns wide.
  if (mk && o < 2 * mk->cols)
    mk.reset();
  bool amx = amxGemm(em.gemms, gemm.weights) &&
             cast<ShapedType>(in.getType()).getElementType().isBF16();
  // With AMX every block is on the tiles.
  if (amx)
    mk.reset();
  // Blocks of whole pairs of panels (of vectors of rows with the
  // micro-kernel, of 16-row tiles with AMX), the nearest to blockBytes.
  if (int64_t pair = amx ? 2 * kAmxRows : mk ? 2 * mk->lanes : 0) {
    int64_t fit = em.gemms.blockBytes / std::max<int64_t>(rowBytes, 1);
    rowBlock = std::max<int64_t>(pair, (fit + pair / 2) / pair * pair);
  }
  Value cBlock = arith::ConstantIndexOp::create(b, rowBlock);
  // An scf.for carrying `out`; `body(ib, iv, out)` returns its next value.
  auto loop = [](ImplicitLocOpBuilder &ob, Value lb, Value ub, Value step,
                 Value init,
                 function_ref<Value(ImplicitLocOpBuilder &, Value, Value)> body) {
    return scf::ForOp::create(
               ob, lb, ub, step, ValueRange{init},
               [&](OpBuilder &nb, Location loc, Value iv, ValueRange acc) {
                 ImplicitLocOpBuilder ib(loc, nb);
                 scf::YieldOp::create(ib, body(ib, iv, acc[0]));
               })
        .getResult(0);
  };
  // Rows [c, c + rows) x weight rows `cols` of group g, stored at columns
  // `at` of `out` (a column slab of the result).
  auto tile = [&](ImplicitLocOpBuilder &cb, Value g, ArrayRef<Value> cols,
                  ArrayRef<Value> atCols, Value c, int64_t rows, Value out) {
    SmallVector<SmallVector<Value>> outAt, inAt;
    for (int64_t j = 0; j < rows; ++j) {
      outAt.push_back(gemm.row(
          cb, arith::AddIOp::create(cb, c, arith::ConstantIndexOp::create(cb, j))));
      inAt.push_back(gemm.input(outAt.back()));
    }
    int64_t n = rows * cols.size();
    SmallVector<Value> init(n, Emitter::cst(cb, 0.0));
    auto dots = scf::ForOp::create(
        cb, c0, arith::ConstantIndexOp::create(cb, reduce), c1, init,
        [&](OpBuilder &nb, Location loc, Value i, ValueRange acc) {
          ImplicitLocOpBuilder db(loc, nb);
          SmallVector<Value> ws;
          for (Value col : cols)
            ws.push_back(Emitter::extIn(db, gemm.weight(db, g, col, i)));
          SmallVector<Value> next(n);
          for (int64_t j = 0; j < rows; ++j) {
            SmallVector<Value> at(inAt[j]);
            at.push_back(i);
            Value xv = Emitter::extIn(db, tensor::ExtractOp::create(db, in, at));
            for (auto [r, wv] : llvm::enumerate(ws))
              next[j * cols.size() + r] =
                  Emitter::fma(db, acc[j * cols.size() + r], xv, wv);
          }
          scf::YieldOp::create(db, next);
        });
    for (int64_t j = 0; j < rows; ++j)
      for (auto [r, col] : llvm::enumerate(atCols)) {
        SmallVector<Value> at(outAt[j]);
        at.push_back(col);
        out = tensor::InsertOp::create(cb, dots.getResult(j * cols.size() + r),
                                       out, at);
      }
    return out;
  };
  // The kCols-column groups of the output as an scf.forall: group q
  // computes weight rows [q*kCols, q*kCols + kCols) (the last group fewer:
  // its missing columns repeat its last one) into its own slab
  // `out[..., q*kCols : q*kCols + width]`, so the groups are independent and
  // the CPU pipeline runs them on threads (scf.parallel -> async). `body(rb,
  // cols, atCols, slab)` fills the slab: weight rows `cols`, slab columns
  // `atCols`.
  auto outTy = cast<RankedTensorType>(out.getType());
  int64_t outRank = outTy.getRank();
  auto columnSlabs =
      [&](ImplicitLocOpBuilder &fb, Value out, int64_t groupCols,
          function_ref<Value(ImplicitLocOpBuilder &, ArrayRef<Value>,
                             ArrayRef<Value>, Value)>
              body) {
        int64_t numGroups = (o + groupCols - 1) / groupCols;
        auto forall = scf::ForallOp::create(
            fb, ArrayRef<OpFoldResult>{fb.getIndexAttr(numGroups)},
            ValueRange{out}, std::nullopt,
            [&](OpBuilder &nb, Location loc, ValueRange args) {
              ImplicitLocOpBuilder rb(loc, nb);
              Value q = args[0], shared = args[1];
              Value col0 = arith::MulIOp::create(
                  rb, q, arith::ConstantIndexOp::create(rb, groupCols));
              Value width = arith::MinUIOp::create(
                  rb, arith::ConstantIndexOp::create(rb, groupCols),
                  arith::SubIOp::create(
                      rb, arith::ConstantIndexOp::create(rb, o), col0));
              Value lastAt = arith::SubIOp::create(rb, width, c1);
              SmallVector<Value> cols, atCols;
              for (int64_t r = 0; r < groupCols; ++r) {
                Value at = r == 0 ? c0
                                  : arith::MinUIOp::create(
                                        rb, arith::ConstantIndexOp::create(rb, r),
                                        lastAt)
                                        .getResult();
                atCols.push_back(at);
                cols.push_back(arith::AddIOp::create(rb, col0, at));
              }
              SmallVector<OpFoldResult> offsets(outRank, rb.getIndexAttr(0)),
                  sizes, strides(outRank, rb.getIndexAttr(1));
              offsets.back() = col0;
              for (int64_t d = 0; d + 1 < outRank; ++d)
                sizes.push_back(
                    outTy.isDynamicDim(d)
                        ? OpFoldResult(tensor::DimOp::create(rb, shared, d)
                                           .getResult())
                        : OpFoldResult(rb.getIndexAttr(outTy.getDimSize(d))));
              sizes.push_back(width);
              Value slab = tensor::ExtractSliceOp::create(rb, shared, offsets,
                                                          sizes, strides);
              Value filled = body(rb, cols, atCols, slab);
              auto terminator = scf::InParallelOp::create(rb);
              rb.setInsertionPointToStart(terminator.getBody());
              tensor::ParallelInsertSliceOp::create(rb, filled, shared, offsets,
                                                    sizes, strides);
            });
        return forall.getResult(0);
      };
  // The micro-kernel on the `len` rows from `blk` of group g: the rows are
  // packed once, transposed to f32 panels of `lanes` rows (`packed[p][i][l]`
  // = row blk + p * lanes + l, element i; the last panel padded with zero
  // rows up to ceil(len / lanes) * lanes), then the
  // column groups (mk->cols weight rows each, an scf.forall as below) run
  // the panels two at a time (one for an odd last one):
  //
  //   for i: a_v = packed[p + v][i][0 : lanes]          (v < 2)
  //          for j < cols: acc[v][j] += a_v * broadcast(W[g][col_j][i])
  //
  // 2 x 12 accumulators of 16 lanes with AVX-512 (2 x 6 of 8 with AVX2):
  // per i, 2 vector loads and 12 broadcasts for 24 FMAs, where the dot-
  // product tile needs 8 loads for 16. Packing costs one pass over the
  // block's input, which every column group of the block then reads.
  auto microKernelBlock = [&](ImplicitLocOpBuilder &pb, Value g, Value blk,
                              Value len, Value out) {
    int64_t lanes = mk->lanes;
    Value cLanes = arith::ConstantIndexOp::create(pb, lanes);
    Value cReduce = arith::ConstantIndexOp::create(pb, reduce);
    Value panels = arith::CeilDivUIOp::create(pb, len, cLanes);
    Value lastRow = arith::SubIOp::create(pb, len, c1);
    Value packed = tensor::EmptyOp::create(
        pb, ArrayRef<int64_t>{ShapedType::kDynamic, reduce, lanes}, em.f32(),
        ValueRange{panels});
    // Lanes past the block's rows are 0 (their results are not stored).
    packed = loop(
        pb, c0, arith::MulIOp::create(pb, panels, cLanes), c1, packed,
        [&](ImplicitLocOpBuilder &rb, Value r, Value packed) {
          Value valid =
              arith::CmpIOp::create(rb, arith::CmpIPredicate::ult, r, len);
          SmallVector<Value> inAt = gemm.input(gemm.row(
              rb, arith::AddIOp::create(
                      rb, blk, arith::MinUIOp::create(rb, r, lastRow))));
          Value p = arith::DivUIOp::create(rb, r, cLanes);
          Value l = arith::RemUIOp::create(rb, r, cLanes);
          Value zero = Emitter::cst(rb, 0.0);
          return loop(rb, c0, cReduce, c1, packed,
                      [&](ImplicitLocOpBuilder &eb, Value i, Value packed) {
                        SmallVector<Value> at(inAt);
                        at.push_back(i);
                        Value x = Emitter::extIn(
                            eb, tensor::ExtractOp::create(eb, in, at));
                        x = arith::SelectOp::create(eb, valid, x, zero);
                        return tensor::InsertOp::create(
                                   eb, x, packed, ValueRange{p, i, l})
                            .getResult();
                      });
        });
    auto vecTy = VectorType::get({lanes}, em.f32());
    // Panels [p, p + nVec) x weight rows `cols` into the slab; `wide`,
    // when set, holds those weight rows already widened to f32.
    auto panelTile = [&](ImplicitLocOpBuilder &cb, ArrayRef<Value> cols,
                         ArrayRef<Value> atCols, Value wide, Value p,
                         int64_t nVec, Value slab) {
      int64_t nc = cols.size();
      Value zero = arith::ConstantOp::create(
          cb, DenseElementsAttr::get(vecTy, cb.getF32FloatAttr(0.0f)));
      Value pad = Emitter::cst(cb, 0.0);
      SmallVector<Value> init(nVec * nc, zero);
      auto acc = scf::ForOp::create(
          cb, c0, cReduce, c1, init,
          [&](OpBuilder &nb, Location loc, Value i, ValueRange acc) {
            ImplicitLocOpBuilder db(loc, nb);
            SmallVector<Value> a;
            for (int64_t v = 0; v < nVec; ++v) {
              Value pv = v == 0 ? p
                                : arith::AddIOp::create(
                                      db, p, arith::ConstantIndexOp::create(db, v))
                                      .getResult();
              a.push_back(vector::TransferReadOp::create(
                  db, vecTy, packed, ValueRange{pv, i, c0}, pad,
                  ArrayRef<bool>{true}));
            }
            SmallVector<Value> next(nVec * nc);
            for (auto [j, col] : llvm::enumerate(cols)) {
              Value w =
                  wide ? tensor::ExtractOp::create(
                             db, wide,
                             ValueRange{arith::ConstantIndexOp::create(db, j), i})
                             .getResult()
                       : Emitter::extIn(db, gemm.weight(db, g, col, i));
              Value wv = vector::BroadcastOp::create(db, vecTy, w);
              for (int64_t v = 0; v < nVec; ++v)
                next[v * nc + j] =
                    vector::FMAOp::create(db, a[v], wv, acc[v * nc + j]);
            }
            scf::YieldOp::create(db, next);
          });
      // Lane l of acc[v][j] is the block's row (p + v) * lanes + l, column
      // j; lanes past the block's rows are not stored.
      return loop(
          cb, c0, cLanes, c1, slab,
          [&](ImplicitLocOpBuilder &sb, Value l, Value slab) {
            for (int64_t v = 0; v < nVec; ++v) {
              Value pv = arith::AddIOp::create(
                  sb, p, arith::ConstantIndexOp::create(sb, v));
              Value r = arith::AddIOp::create(
                  sb, arith::MulIOp::create(sb, pv, cLanes), l);
              auto store = scf::IfOp::create(
                  sb, arith::CmpIOp::create(sb, arith::CmpIPredicate::ult, r, len),
                  [&](OpBuilder &nb, Location loc) {
                    ImplicitLocOpBuilder tb(loc, nb);
                    SmallVector<Value> outAt =
                        gemm.row(tb, arith::AddIOp::create(tb, blk, r));
                    Value s = slab;
                    for (auto [j, atCol] : llvm::enumerate(atCols)) {
                      Value val = vector::ExtractOp::create(
                          tb, acc.getResult(v * nc + j), OpFoldResult(l));
                      SmallVector<Value> at(outAt);
                      at.push_back(atCol);
                      s = tensor::InsertOp::create(tb, val, s, at);
                    }
                    scf::YieldOp::create(tb, s);
                  },
                  [&](OpBuilder &nb, Location loc) {
                    scf::YieldOp::create(nb, loc, slab);
                  });
              slab = store.getResult(0);
            }
            return slab;
          });
    };
    return columnSlabs(
        pb, out, mk->cols,
        [&](ImplicitLocOpBuilder &rb, ArrayRef<Value> cols,
            ArrayRef<Value> atCols, Value slab) {
          // Narrower weights (bf16, f16) are widened once per column group
          // and block, row by row (a loop LLVM vectorises), into an f32
          // `cols x I` tensor: widening each element before its broadcast
          // in the inner loop (a load, a shift and a broadcast from a
          // general register per weight row) made it ~3x slower than f32.
          Value wide;
          if (!gemm.weightType.isF32()) {
            int64_t nc = cols.size();
            // Rows 16 floats longer than I: with I a multiple of 1024 the
            // 12 rows would sit 4 KiB apart, all in one L1 set.
            wide = tensor::EmptyOp::create(
                rb, ArrayRef<int64_t>{nc, reduce + 16}, em.f32(), ValueRange{});
            for (auto [j, c] : llvm::enumerate(cols)) {
              Value cj = arith::ConstantIndexOp::create(rb, j);
              Value col = c; // (a lambda cannot capture a binding in C++17)
              wide = loop(rb, c0, cReduce, c1, wide,
                          [&](ImplicitLocOpBuilder &eb, Value i, Value wide) {
                            Value w = Emitter::extIn(
                                eb, gemm.weight(eb, g, col, i));
                            return tensor::InsertOp::create(
                                       eb, w, wide, ValueRange{cj, i})
                                .getResult();
                          });
            }
          }
          Value c2 = arith::ConstantIndexOp::create(rb, 2);
          Value pairsEnd = arith::MulIOp::create(
              rb, arith::DivUIOp::create(rb, panels, c2), c2);
          slab = loop(rb, c0, pairsEnd, c2, slab,
                      [&](ImplicitLocOpBuilder &cb, Value p, Value s) {
                        return panelTile(cb, cols, atCols, wide, p, 2, s);
                      });
          return loop(rb, pairsEnd, panels, c1, slab,
                      [&](ImplicitLocOpBuilder &cb, Value p, Value s) {
                        return panelTile(cb, cols, atCols, wide, p, 1, s);
                      });
        });
  };
  // The AMX kernel on the `len` rows from `blk` of group g (bf16 input and
  // weights, amxGemm). The rows are packed once into panels of kAmxRows
  // rows in the VNNI layout that the tile multiply's second operand takes:
  // packed[p][k][2n + v] = row p * 16 + n, element 2k + v (the pairs of
  // neighbouring elements of the 16 rows side by side). Rows past the
  // block's repeat its last one; their results are not stored. A pair is a
  // 32-bit word, so packing reads 16 rows x 16 words, transposes them and
  // writes 16 packed rows. The weight tiles are loaded from the weight
  // tensor in place (16 rows of 32 elements, the row stride I). Each column
  // group (kAmxCols weight rows, an scf.forall as above) runs the panels
  // two at a time (one for an odd last one):
  //
  //   for i (steps of 32): A_t = W[g][col0 + 16t : +16][i : i + 32]   (t < 2)
  //                        B_v = packed[p + v][i/2 : i/2 + 16]        (v < 2)
  //                        C[t][v] += A_t * B_v    (tdpbf16ps: f32 sums)
  //
  // Lane (m, n) of C[t][v] is output column col0 + 16t + m of the block's
  // row (p + v) * 16 + n: the accumulators are stored to a buffer, read
  // back by 16 x 16 blocks, transposed into a second buffer whose row j is
  // the 32 output columns of the pair's row j, and each of the block's
  // rows is stored from there as one vector.
  // The gated form (BlockedGemm::epilogue: an FFN's gate and up
  // projections together) takes A_0 from the gate's rows col0..+16 and A_1
  // from the up projection's same rows, so a column group is 16 output
  // columns: row j of the second buffer holds their 16 gate sums, then
  // their 16 up sums, and the epilogue (biases, activation, rounding)
  // turns them into the row's 16 stored elements.
  // The f32 gate and up outputs (T x K x F each) are then never written.
  // The packed panels and those two buffers are memrefs (allocated per
  // block and per column group, freed by the CPU pipeline's
  // ownership-based deallocation): amx.tile_load and amx.tile_store take
  // memrefs, and tensors there would cost One-Shot Bufferize's analysis a
  // chain of inserts per row.
  // (The layout: Intel's AMX programming reference, TDPBF16PS; upstream
  // MLIR's convert-vector-to-amx matches the same VNNI contraction but
  // keeps no accumulator in a tile across a loop.)
  bool gated = static_cast<bool>(gemm.epilogue);
  assert((!gated || amx) && "the gated form is AMX only");
  auto readOnlyBuffer = [&](Value weights) -> Value {
    auto wTy = cast<RankedTensorType>(weights.getType());
    SmallVector<int64_t> strides(wTy.getRank(), ShapedType::kDynamic);
    strides.back() = 1;
    return bufferization::ToBufferOp::create(
        b,
        MemRefType::get(wTy.getShape(), wTy.getElementType(),
                        StridedLayoutAttr::get(b.getContext(),
                                               ShapedType::kDynamic, strides)),
        weights, /*read_only=*/true);
  };
  Value weightBuffer, upBuffer;
  if (amx)
    weightBuffer = readOnlyBuffer(gemm.weights);
  if (gated)
    upBuffer = readOnlyBuffer(gemm.up);
  auto amxBlock = [&](ImplicitLocOpBuilder &pb, Value g, Value blk, Value len,
                      Value out) {
    Type bf16 = pb.getBF16Type();
    int64_t words = kAmxDepth / 2;
    auto rowTy = VectorType::get({kAmxDepth}, bf16);
    auto wordTy = VectorType::get({words}, pb.getI32Type());
    auto squareTy = VectorType::get({kAmxRows, words}, pb.getI32Type());
    auto packedRowTy = VectorType::get({2 * kAmxRows}, bf16);
    auto cst = [](ImplicitLocOpBuilder &cb, int64_t v) -> Value {
      return arith::ConstantIndexOp::create(cb, v);
    };
    // A loop without results.
    auto forEach = [](ImplicitLocOpBuilder &ob, Value lb, Value ub, Value step,
                      function_ref<void(ImplicitLocOpBuilder &, Value)> body) {
      scf::ForOp::create(ob, lb, ub, step, ValueRange{},
                         [&](OpBuilder &nb, Location loc, Value iv, ValueRange) {
                           ImplicitLocOpBuilder ib(loc, nb);
                           body(ib, iv);
                           scf::YieldOp::create(ib);
                         });
    };
    Value cRows = cst(pb, kAmxRows), cDepth = cst(pb, kAmxDepth);
    Value cReduce = cst(pb, reduce), c2 = cst(pb, 2);
    Value panels = arith::CeilDivUIOp::create(pb, len, cRows);
    Value lastRow = arith::SubIOp::create(pb, len, c1);
    // 64-byte rows, 64-byte aligned: each tile row one cache line.
    IntegerAttr lineAlign = pb.getI64IntegerAttr(64);
    Value packed = memref::AllocOp::create(
        pb,
        MemRefType::get({ShapedType::kDynamic, reduce / 2, 2 * kAmxRows},
                        bf16),
        ValueRange{panels}, lineAlign);
    Value padBF16 =
        arith::ConstantOp::create(pb, cast<TypedAttr>(pb.getZeroAttr(bf16)));
    forEach(pb, c0, panels, c1, [&](ImplicitLocOpBuilder &rb, Value p) {
      Value first = arith::MulIOp::create(rb, p, cRows);
      SmallVector<SmallVector<Value>> inAt;
      for (int64_t n = 0; n < kAmxRows; ++n) {
        Value r = arith::MinUIOp::create(
            rb, arith::AddIOp::create(rb, first, cst(rb, n)), lastRow);
        inAt.push_back(
            gemm.input(gemm.row(rb, arith::AddIOp::create(rb, blk, r))));
      }
      forEach(rb, c0, cReduce, cDepth, [&](ImplicitLocOpBuilder &eb, Value i) {
        Value square = arith::ConstantOp::create(
            eb, cast<TypedAttr>(eb.getZeroAttr(squareTy)));
        for (int64_t n = 0; n < kAmxRows; ++n) {
          SmallVector<Value> at(inAt[n]);
          at.push_back(i);
          Value row = vector::TransferReadOp::create(eb, rowTy, in, at, padBF16,
                                                     ArrayRef<bool>{true});
          square = vector::InsertOp::create(
              eb, vector::BitCastOp::create(eb, wordTy, row), square,
              ArrayRef<int64_t>{n});
        }
        Value pairs =
            vector::TransposeOp::create(eb, square, ArrayRef<int64_t>{1, 0});
        Value k = arith::DivUIOp::create(eb, i, c2);
        for (int64_t j = 0; j < words; ++j) {
          Value row = vector::BitCastOp::create(
              eb, packedRowTy,
              vector::ExtractOp::create(eb, pairs, ArrayRef<int64_t>{j}));
          vector::TransferWriteOp::create(
              eb, row, packed,
              ValueRange{p, arith::AddIOp::create(eb, k, cst(eb, j)), c0},
              ArrayRef<bool>{true});
        }
      });
    });
    auto accTy = amx::TileType::get({kAmxRows, kAmxRows}, em.f32());
    auto operandTy = amx::TileType::get({kAmxRows, kAmxDepth}, bf16);
    auto pieceTy = VectorType::get({kAmxRows}, em.f32());
    auto quadTy = VectorType::get({kAmxRows, kAmxRows}, em.f32());
    auto outRowTy = VectorType::get({kAmxCols}, em.f32());
    // Panels [p, p + nB) x the column group's weight rows from col0 into
    // the slab; `acc` and `rows` are the group's two buffers.
    auto panelTiles = [&](ImplicitLocOpBuilder &cb, Value col0, Value p,
                          int64_t nB, Value acc, Value rows, Value slab) {
      SmallVector<Value> init;
      for (int64_t t = 0; t < 2 * nB; ++t)
        init.push_back(amx::TileZeroOp::create(cb, accTy));
      SmallVector<Value> prefix = gemm.weightPrefix(cb, g);
      auto sums = scf::ForOp::create(
          cb, c0, cReduce, cDepth, init,
          [&](OpBuilder &nb, Location loc, Value i, ValueRange acc) {
            ImplicitLocOpBuilder db(loc, nb);
            SmallVector<Value> a, bt;
            // Gated: the gate's and the up projection's rows col0..+16;
            // else rows col0..+16 and col0+16..+32.
            for (int64_t t = 0; t < 2; ++t) {
              SmallVector<Value> at(prefix);
              at.push_back(gated ? col0
                                 : arith::AddIOp::create(
                                       db, col0, cst(db, t * kAmxRows))
                                       .getResult());
              at.push_back(i);
              a.push_back(amx::TileLoadOp::create(
                  db, operandTy, t && gated ? upBuffer : weightBuffer, at));
            }
            Value k = arith::DivUIOp::create(db, i, c2);
            for (int64_t v = 0; v < nB; ++v)
              bt.push_back(amx::TileLoadOp::create(
                  db, operandTy, packed,
                  ValueRange{arith::AddIOp::create(db, p, cst(db, v)), k,
                             c0}));
            SmallVector<Value> next;
            for (int64_t t = 0; t < 2; ++t)
              for (int64_t v = 0; v < nB; ++v)
                next.push_back(amx::TileMulFOp::create(
                    db, accTy, a[t], bt[v], acc[t * nB + v]));
            scf::YieldOp::create(db, next);
          });
      Value pad = Emitter::cst(cb, 0.0);
      for (int64_t t = 0; t < 2; ++t)
        for (int64_t v = 0; v < nB; ++v) {
          amx::TileStoreOp::create(
              cb, acc, ValueRange{cst(cb, t * kAmxRows), cst(cb, v * kAmxRows)},
              sums.getResult(t * nB + v));
          // rows[v * 16 + n][t * 16 + m] = acc[t * 16 + m][v * 16 + n].
          Value quad = arith::ConstantOp::create(
              cb, cast<TypedAttr>(cb.getZeroAttr(quadTy)));
          for (int64_t m = 0; m < kAmxRows; ++m)
            quad = vector::InsertOp::create(
                cb,
                vector::TransferReadOp::create(
                    cb, pieceTy, acc,
                    ValueRange{cst(cb, t * kAmxRows + m), cst(cb, v * kAmxRows)},
                    pad, ArrayRef<bool>{true}),
                quad, ArrayRef<int64_t>{m});
          Value flipped =
              vector::TransposeOp::create(cb, quad, ArrayRef<int64_t>{1, 0});
          for (int64_t n = 0; n < kAmxRows; ++n)
            vector::TransferWriteOp::create(
                cb, vector::ExtractOp::create(cb, flipped, ArrayRef<int64_t>{n}),
                rows,
                ValueRange{cst(cb, v * kAmxRows + n), cst(cb, t * kAmxRows)},
                ArrayRef<bool>{true});
        }
      // The pair's rows that are the block's.
      Value first = arith::MulIOp::create(cb, p, cRows);
      Value count = arith::MinUIOp::create(
          cb, cst(cb, nB * kAmxRows), arith::SubIOp::create(cb, len, first));
      return loop(
          cb, c0, count, c1, slab,
          [&](ImplicitLocOpBuilder &sb, Value j, Value slab) -> Value {
            SmallVector<Value> at = gemm.row(
                sb, arith::AddIOp::create(
                        sb, blk, arith::AddIOp::create(sb, first, j)));
            at.push_back(c0);
            if (!gated) {
              Value piece = vector::TransferReadOp::create(
                  sb, outRowTy, rows, ValueRange{j, c0}, pad,
                  ArrayRef<bool>{true});
              return vector::TransferWriteOp::create(sb, piece, slab, at,
                                                     ArrayRef<bool>{true})
                  .getResult();
            }
            // Gated: row j's 16 gate sums, then its 16 up sums, through
            // the epilogue into the slab element by element (a loop LLVM
            // vectorises; a vector store of a buffer written just before
            // stalled on store forwarding).
            at.pop_back();
            return loop(
                sb, c0, cRows, c1, slab,
                [&](ImplicitLocOpBuilder &mb, Value m, Value slab) -> Value {
                  Value gateSum =
                      memref::LoadOp::create(mb, rows, ValueRange{j, m});
                  Value upSum = memref::LoadOp::create(
                      mb, rows,
                      ValueRange{j, arith::AddIOp::create(mb, m, cRows)});
                  SmallVector<Value> to(at);
                  to.push_back(m);
                  return tensor::InsertOp::create(
                             mb,
                             gemm.epilogue(mb, g,
                                           arith::AddIOp::create(mb, col0, m),
                                           gateSum, upSum),
                             slab, to)
                      .getResult();
                });
          });
    };
    Value result = columnSlabs(
        pb, out, gated ? kAmxRows : kAmxCols,
        [&](ImplicitLocOpBuilder &rb, ArrayRef<Value> cols, ArrayRef<Value>,
            Value slab) {
          auto bufTy = MemRefType::get({kAmxCols, kAmxCols}, em.f32());
          Value acc = memref::AllocOp::create(rb, bufTy, lineAlign);
          Value rows = memref::AllocOp::create(rb, bufTy, lineAlign);
          Value pairsEnd = arith::MulIOp::create(
              rb, arith::DivUIOp::create(rb, panels, c2), c2);
          slab = loop(rb, c0, pairsEnd, c2, slab,
                      [&](ImplicitLocOpBuilder &cb, Value p, Value s) {
                        return panelTiles(cb, cols[0], p, 2, acc, rows, s);
                      });
          slab = loop(rb, pairsEnd, panels, c1, slab,
                      [&](ImplicitLocOpBuilder &cb, Value p, Value s) {
                        return panelTiles(cb, cols[0], p, 1, acc, rows, s);
                      });
          return slab;
        });
    return result;
  };
  return loop(
      b, c0, arith::ConstantIndexOp::create(b, gemm.groups), c1, out,
      [&](ImplicitLocOpBuilder &ib, Value g, Value out) {
        std::pair<Value, Value> bounds = gemm.range(ib, g);
        Value first = bounds.first, end = bounds.second;
        return loop(ib, first, end, cBlock, out, [&](ImplicitLocOpBuilder &jb,
                                                     Value blk, Value out) {
          Value blkEnd = arith::MinUIOp::create(
              jb, arith::AddIOp::create(jb, blk, cBlock), end);
          Value len = arith::SubIOp::create(jb, blkEnd, blk);
          // The dot-product tiles: the rows in whole tiles of kRowTile,
          // then the rest.
          auto dotTiles = [&](ImplicitLocOpBuilder &db, Value out) {
            Value tailStart = arith::SubIOp::create(
                db, blkEnd, arith::RemUIOp::create(db, len, cTile));
            return columnSlabs(
                db, out, kCols,
                [&](ImplicitLocOpBuilder &rb, ArrayRef<Value> cols,
                    ArrayRef<Value> atCols, Value slab) {
                  slab = loop(rb, blk, tailStart, cTile, slab,
                              [&](ImplicitLocOpBuilder &cb, Value c, Value s) {
                                return tile(cb, g, cols, atCols, c, kRowTile,
                                            s);
                              });
                  return loop(rb, tailStart, blkEnd, c1, slab,
                              [&](ImplicitLocOpBuilder &cb, Value c, Value s) {
                                return tile(cb, g, cols, atCols, c, 1, s);
                              });
                });
          };
          if (amx)
            return amxBlock(jb, g, blk, len, out);
          if (!mk)
            return dotTiles(jb, out);
          // From half a vector of rows on, the micro-kernel takes the whole
          // block, its last vector padded with zero rows; below, the lanes
          // it would waste cost more than the dot-product tiles.
          Value wide = arith::CmpIOp::create(
              jb, arith::CmpIPredicate::uge, len,
              arith::ConstantIndexOp::create(jb, mk->lanes / 2));
          auto op = scf::IfOp::create(
              jb, wide,
              [&](OpBuilder &nb, Location loc) {
                ImplicitLocOpBuilder tb(loc, nb);
                scf::YieldOp::create(tb,
                                     microKernelBlock(tb, g, blk, len, out));
              },
              [&](OpBuilder &nb, Location loc) {
                ImplicitLocOpBuilder eb(loc, nb);
                scf::YieldOp::create(eb, dotTiles(eb, out));
              });
          return op.getResult(0);
        });
      });
}

/// `out[t,k,o] = sum_i in[t,(k,)i] * W[e(t,k), o, i]` in f32 like
/// gatheredMatmul, computed expert by expert over the slots `order` groups
/// (the rows of the blocked nest are an expert's slots): each weight row is
/// read once per block of slots instead of once per slot. Slots of no
/// expert of the op are not computed: they stay 0.
Value groupedMatmul(Emitter &em, Value in, const SlotOrder &order, int64_t k,
                    Value w, Value up = {}, GatedEpilogue epilogue = {},
                    Type outElt = {}) {
  ImplicitLocOpBuilder &b = em.b;
  auto inTy = cast<RankedTensorType>(in.getType());
  auto wTy = cast<RankedTensorType>(w.getType());
  bool perSlot = inTy.getRank() == 3;
  Value c1 = arith::ConstantIndexOp::create(b, 1);
  Value cK = arith::ConstantIndexOp::create(b, k);
  BlockedGemm gemm;
  gemm.groups = wTy.getDimSize(0);
  gemm.range = [&](ImplicitLocOpBuilder &ib, Value e) {
    Value first = tensor::ExtractOp::create(ib, order.start, e);
    Value end = tensor::ExtractOp::create(
        ib, order.start, ValueRange{arith::AddIOp::create(ib, e, c1)});
    return std::make_pair(first, end);
  };
  gemm.row = [&](ImplicitLocOpBuilder &ib, Value q) {
    Value p = tensor::ExtractOp::create(ib, order.perm, q);
    return SmallVector<Value>{arith::DivUIOp::create(ib, p, cK),
                              arith::RemUIOp::create(ib, p, cK)};
  };
  gemm.input = [&](ArrayRef<Value> row) {
    return perSlot ? SmallVector<Value>(row) : SmallVector<Value>{row[0]};
  };
  gemm.weight = [&](ImplicitLocOpBuilder &ib, Value e, Value o, Value i) {
    return tensor::ExtractOp::create(ib, w, ValueRange{e, o, i}).getResult();
  };
  gemm.weightType = wTy.getElementType();
  gemm.weights = w;
  gemm.weightPrefix = [](ImplicitLocOpBuilder &, Value e) {
    return SmallVector<Value>{e};
  };
  gemm.up = up;
  gemm.epilogue = std::move(epilogue);
  Value out = em.zeros({inTy.getDimSize(0), k, wTy.getDimSize(1)},
                       outElt ? outElt : em.f32());
  return blockedGemm(em, in, out, wTy.getDimSize(1), wTy.getDimSize(2), gemm);
}

/// `x * w^T` in f32 like Emitter::matmulT (x `T x I`, w `O x I`), on the
/// blocked nest with one group whose rows are the tokens: each weight row is
/// read once per block of tokens instead of once per token.
Value blockedMatmulT(Emitter &em, Value x, Value w, Value up,
                     GatedEpilogue epilogue, Type outElt) {
  ImplicitLocOpBuilder &b = em.b;
  auto xTy = cast<RankedTensorType>(x.getType());
  auto wTy = cast<RankedTensorType>(w.getType());
  Value rows = tensor::DimOp::create(b, x, 0);
  Value c0 = arith::ConstantIndexOp::create(b, 0);
  BlockedGemm gemm;
  gemm.groups = 1;
  gemm.range = [&](ImplicitLocOpBuilder &, Value) {
    return std::make_pair(c0, rows);
  };
  gemm.row = [](ImplicitLocOpBuilder &, Value q) { return SmallVector<Value>{q}; };
  gemm.input = [](ArrayRef<Value> row) { return SmallVector<Value>(row); };
  gemm.weight = [&](ImplicitLocOpBuilder &ib, Value, Value o, Value i) {
    return tensor::ExtractOp::create(ib, w, ValueRange{o, i}).getResult();
  };
  gemm.weightType = wTy.getElementType();
  gemm.weights = w;
  gemm.weightPrefix = [](ImplicitLocOpBuilder &, Value) {
    return SmallVector<Value>{};
  };
  gemm.up = up;
  gemm.epilogue = std::move(epilogue);
  Value out = em.zeros({xTy.getDimSize(0), wTy.getDimSize(0)},
                       outElt ? outElt : em.f32());
  return blockedGemm(em, x, out, wTy.getDimSize(0), wTy.getDimSize(1), gemm);
}

/// Reads `bias[e(t,k), j]` (or 0 without a bias) inside a `(t, k, j)` payload.
Value slotBias(ImplicitLocOpBuilder &ib, Value bias, Value e) {
  if (!bias)
    return Emitter::cst(ib, 0.0);
  Value j = linalg::IndexOp::create(ib, 2);
  return Emitter::extIn(ib, tensor::ExtractOp::create(ib, bias, ValueRange{e, j}));
}

//===----------------------------------------------------------------------===//
// Patterns
//===----------------------------------------------------------------------===//

/// How an FFN's activations h reach its down projection on the blocked
/// GEMMs. With the down projection on AMX tiles (amxGemm) h is rounded to
/// bf16 first, as a bf16 model computes it; with the gate and up
/// projections on tiles too (and a bf16 input) they take blockedGemm's
/// gated form, which computes h in its epilogue.
struct HiddenPlan {
  HiddenPlan(const BlockedGemmConfig &gemms, Value x, Value gate, Value up,
             Value down)
      : round(amxGemm(gemms, down)),
        gated(gate && amxGemm(gemms, gate) && amxGemm(gemms, up) &&
              cast<ShapedType>(x.getType()).getElementType().isBF16()) {}
  /// h's element type.
  Type type(OpBuilder &b) const {
    return round ? Type(b.getBF16Type()) : Type(b.getF32Type());
  }
  /// An activation (f32) as stored in h.
  Value finish(ImplicitLocOpBuilder &ib, Value v) const {
    return round ? arith::TruncFOp::create(ib, ib.getBF16Type(), v).getResult()
                 : v;
  }
  bool round, gated;
};

struct LowerLinear : OpRewritePattern<LinearOp> {
  LowerLinear(MLIRContext *ctx, BlockedGemmConfig gemms)
      : OpRewritePattern(ctx), gemms(gemms) {}
  LogicalResult matchAndRewrite(LinearOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Emitter em(b, op.getInput());
    em.gemms = gemms;
    Value y = em.addBias(em.matmulT(op.getInput(), op.getWeight()), op.getBias());
    rewriter.replaceOp(op, em.round(y, op.getType()));
    return success();
  }

private:
  BlockedGemmConfig gemms;
};

struct LowerProjectedRouter : OpRewritePattern<ProjectedRouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(ProjectedRouterOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Value d = op.getDomainEmbeddings();
    Emitter em(b, d);
    // z = W1 d for every expert: E x 2h'; SwiGLU(z) = silu(z[:h']) * z[h':].
    Value z = em.matmulT(d, op.getProjW1());
    int64_t e = cast<ShapedType>(d.getType()).getDimSize(0);
    int64_t half = cast<ShapedType>(op.getProjW1().getType()).getDimSize(0) / 2;
    Value init = em.zeros({e, half}, em.f32());
    Value h = em.generic(
        init, {}, {em.map(2, {0, 1})}, {kPar, kPar},
        [&](OpBuilder &nb, Location loc, ValueRange) -> Value {
          ImplicitLocOpBuilder ib(loc, nb);
          Value i = linalg::IndexOp::create(ib, 0);
          Value j = linalg::IndexOp::create(ib, 1);
          Value jUp = arith::AddIOp::create(
              ib, j, arith::ConstantIndexOp::create(ib, half));
          Value g = tensor::ExtractOp::create(ib, z, ValueRange{i, j});
          Value u = tensor::ExtractOp::create(ib, z, ValueRange{i, jUp});
          return Emitter::activate(ib, Activation::swiglu, g, u, 0, 0);
        });
    rewriter.replaceOp(op, em.matmulT(h, op.getProjW2()));
    return success();
  }
};

struct LowerFFN : OpRewritePattern<FFNOp> {
  LowerFFN(MLIRContext *ctx, BlockedGemmConfig gemms)
      : OpRewritePattern(ctx), gemms(gemms) {}
  LogicalResult matchAndRewrite(FFNOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Value x = op.getInput();
    Emitter em(b, x);
    em.gemms = gemms;
    Activation act = op.getActivation();
    double alpha = op.getAlpha().convertToDouble();
    double limit = op.getLimit().convertToDouble();
    HiddenPlan plan(gemms, x, op.getGate(), op.getUp(), op.getDown());
    Type hElt = plan.type(b);
    Value h;
    if (plan.gated) {
      // Gate and up on the tiles together, the biases and the activation
      // in the GEMM's epilogue (the gated form of blockedGemm).
      Value gateB = op.getGateBias(), upB = op.getUpBias();
      h = blockedMatmulT(
          em, x, op.getGate(), op.getUp(),
          [&](ImplicitLocOpBuilder &ib, Value, Value col, Value g,
              Value u) -> Value {
            if (gateB)
              g = arith::AddFOp::create(
                  ib, g,
                  Emitter::extIn(ib, tensor::ExtractOp::create(ib, gateB, col)));
            if (upB)
              u = arith::AddFOp::create(
                  ib, u,
                  Emitter::extIn(ib, tensor::ExtractOp::create(ib, upB, col)));
            return plan.finish(
                ib, Emitter::activate(ib, act, g, u, alpha, limit));
          },
          hElt);
    } else {
      Value up = em.addBias(em.matmulT(x, op.getUp()), op.getUpBias());
      Value gate;
      if (op.getGate())
        gate = em.addBias(em.matmulT(x, op.getGate()), op.getGateBias());
      SmallVector<Value> ins{up};
      if (gate)
        ins.push_back(gate);
      SmallVector<AffineMap> maps(ins.size() + 1, em.map(2, {0, 1}));
      h = em.generic(
          em.zeros(cast<ShapedType>(up.getType()).getShape(), hElt), ins, maps,
          {kPar, kPar},
          [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
            ImplicitLocOpBuilder ib(loc, nb);
            return plan.finish(
                ib, Emitter::activate(ib, act, gate ? a[1] : Value(), a[0],
                                      alpha, limit));
          });
    }
    Value y = em.addBias(em.matmulT(h, op.getDown()), op.getDownBias());
    if (Value gw = op.getGateWeight()) {
      // g_t = sigmoid(x_t . w_s), one scalar per token.
      Value s = em.matmulT(x, gw);
      AffineMap sMap = AffineMap::get(
          2, 0, {b.getAffineDimExpr(0), b.getAffineConstantExpr(0)},
          b.getContext());
      y = em.generic(y, {s}, {sMap, em.map(2, {0, 1})}, {kPar, kPar},
                     [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                       ImplicitLocOpBuilder ib(loc, nb);
                       return arith::MulFOp::create(
                           ib, a[1], Emitter::sigmoid(ib, a[0]));
                     });
    }
    rewriter.replaceOp(op, em.round(y, op.getType()));
    return success();
  }

private:
  BlockedGemmConfig gemms;
};

struct LowerExperts : OpRewritePattern<ExpertsOp> {
  LowerExperts(MLIRContext *ctx, BlockedGemmConfig gemms)
      : OpRewritePattern(ctx), gemms(gemms) {}
  LogicalResult matchAndRewrite(ExpertsOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Value x = op.getInput(), idx = op.getIndices();
    Emitter em(b, x);
    int64_t offset = op.getExpertOffset(), numExperts = op.getNumExperts();
    Activation act = op.getActivation();
    double alpha = op.getAlpha().convertToDouble();
    double limit = op.getLimit().convertToDouble();
    Value gateB = op.getGateBias(), upB = op.getUpBias(), downB = op.getDownBias();
    int64_t k = cast<ShapedType>(idx.getType()).getDimSize(1);
    if (Value scale = op.getInputScale()) {
      // Slot (t, k)'s input scale[t,k] * x_t, rounded to x's element type
      // (as transformers forms Llama 4's routed input): a T x K x H input
      // that the GEMMs read per slot.
      auto xTy = cast<RankedTensorType>(x.getType());
      Type elt = xTy.getElementType();
      x = em.generic(
          em.zeros({xTy.getDimSize(0), k, xTy.getDimSize(1)}, elt), {x, scale},
          {em.map(3, {0, 2}), em.map(3, {0, 1}), em.map(3, {0, 1, 2})},
          {kPar, kPar, kPar},
          [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
            ImplicitLocOpBuilder ib(loc, nb);
            Value v = arith::MulFOp::create(ib, Emitter::extIn(ib, a[0]), a[1]);
            return elt.isF32() ? v : arith::TruncFOp::create(ib, elt, v);
          });
    }

    // Blocked: the slots sorted by expert once, shared by the three GEMMs.
    std::optional<SlotOrder> order;
    em.gemms = gemms;
    if (gemms.blockBytes)
      order = sortSlots(em, idx, offset, numExperts);
    auto matmul = [&](Value in, Value w) {
      return order ? groupedMatmul(em, in, *order, k, w)
                   : gatheredMatmul(em, in, idx, w, offset);
    };
    HiddenPlan plan(gemms, x, op.getGate(), op.getUp(), op.getDown());
    Type hElt = plan.type(b);
    Value h;
    if (plan.gated) {
      // Gate and up on the tiles together, the per-expert biases and the
      // activation in the GEMM's epilogue (the gated form of blockedGemm).
      // Slots of no expert of the op keep 0 (never read: the down
      // projection skips them too).
      h = groupedMatmul(
          em, x, *order, k, op.getGate(), op.getUp(),
          [&](ImplicitLocOpBuilder &ib, Value e, Value col, Value g,
              Value u) -> Value {
            if (gateB)
              g = arith::AddFOp::create(
                  ib, g,
                  Emitter::extIn(ib, tensor::ExtractOp::create(
                                         ib, gateB, ValueRange{e, col})));
            if (upB)
              u = arith::AddFOp::create(
                  ib, u,
                  Emitter::extIn(ib, tensor::ExtractOp::create(
                                         ib, upB, ValueRange{e, col})));
            return plan.finish(
                ib, Emitter::activate(ib, act, g, u, alpha, limit));
          },
          hElt);
    } else {
      Value up = matmul(x, op.getUp());
      Value gate;
      if (op.getGate())
        gate = matmul(x, op.getGate());
      // Activation with the per-expert biases: (t, k, f).
      SmallVector<Value> ins{up, idx};
      if (gate)
        ins.push_back(gate);
      SmallVector<AffineMap> maps{em.map(3, {0, 1, 2}), em.map(3, {0, 1})};
      if (gate)
        maps.push_back(em.map(3, {0, 1, 2}));
      maps.push_back(em.map(3, {0, 1, 2}));
      h = em.generic(
          em.zeros(cast<ShapedType>(up.getType()).getShape(), hElt), ins, maps,
          {kPar, kPar, kPar},
          [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
            ImplicitLocOpBuilder ib(loc, nb);
            Value e = slotExpert(ib, a[1], offset, numExperts).first;
            Value u = arith::AddFOp::create(ib, a[0], slotBias(ib, upB, e));
            Value g;
            if (gate)
              g = arith::AddFOp::create(ib, a[2], slotBias(ib, gateB, e));
            return plan.finish(
                ib, Emitter::activate(ib, act, g, u, alpha, limit));
          });
    }
    Value down = matmul(h, op.getDown());
    // Down bias, and 0 for slots outside this op's experts.
    Value y = em.generic(
        down, {idx}, {em.map(3, {0, 1}), em.map(3, {0, 1, 2})},
        {kPar, kPar, kPar},
        [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
          ImplicitLocOpBuilder ib(loc, nb);
          auto [e, valid] = slotExpert(ib, a[0], offset, numExperts);
          Value v = arith::AddFOp::create(ib, a[1], slotBias(ib, downB, e));
          return arith::SelectOp::create(ib, valid, v, Emitter::cst(ib, 0.0));
        });
    rewriter.replaceOp(op, y);
    return success();
  }

private:
  BlockedGemmConfig gemms;
};

struct LowerLoRAExperts : OpRewritePattern<LoRAExpertsOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LoRAExpertsOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Value x = op.getInput(), idx = op.getIndices();
    Emitter em(b, x);
    int64_t offset = op.getExpertOffset(), numExperts = op.getNumExperts();
    double scale = op.getAlpha().convertToDouble() / op.getRank();
    Value ax = gatheredMatmul(em, x, idx, op.getLoraA(), offset);
    Value bax = gatheredMatmul(em, ax, idx, op.getLoraB(), offset);
    Value y = em.generic(
        bax, {idx}, {em.map(3, {0, 1}), em.map(3, {0, 1, 2})},
        {kPar, kPar, kPar},
        [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
          ImplicitLocOpBuilder ib(loc, nb);
          Value valid = slotExpert(ib, a[0], offset, numExperts).second;
          Value v = arith::MulFOp::create(ib, a[1], Emitter::cst(ib, scale));
          return arith::SelectOp::create(ib, valid, v, Emitter::cst(ib, 0.0));
        });
    rewriter.replaceOp(op, y);
    return success();
  }
};

struct LowerRMSNorm : OpRewritePattern<RMSNormOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RMSNormOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Value x = op.getInput();
    Emitter em(b, x);
    auto xTy = cast<RankedTensorType>(x.getType());
    int64_t h = xTy.getDimSize(1);
    double eps = op.getEpsilon().convertToDouble();
    Value ss = em.generic(em.zeros({xTy.getDimSize(0)}, em.f32()), {x},
                          {em.map(2, {0, 1}), em.map(2, {0})}, {kPar, kRed},
                          [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                            ImplicitLocOpBuilder ib(loc, nb);
                            Value v = Emitter::extIn(ib, a[0]);
                            return arith::AddFOp::create(
                                ib, a[1], arith::MulFOp::create(ib, v, v));
                          });
    Value y = em.generic(
        em.zeros(xTy.getShape(), em.f32()), {x, ss, op.getWeight()},
        {em.map(2, {0, 1}), em.map(2, {0}), em.map(2, {1}), em.map(2, {0, 1})},
        {kPar, kPar}, [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
          ImplicitLocOpBuilder ib(loc, nb);
          Value mean = arith::DivFOp::create(ib, a[1], Emitter::cst(ib, h));
          Value inv = math::RsqrtOp::create(
              ib, arith::AddFOp::create(ib, mean, Emitter::cst(ib, eps)));
          return arith::MulFOp::create(
              ib, arith::MulFOp::create(ib, Emitter::extIn(ib, a[0]), inv),
              Emitter::extIn(ib, a[2]));
        });
    rewriter.replaceOp(op, em.round(y, op.getType()));
    return success();
  }
};

struct LowerCombine : OpRewritePattern<CombineOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(CombineOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    auto resTy = cast<RankedTensorType>(op.getType());
    Emitter em(b, op.getTokenSource());
    Value acc = em.zeros({resTy.getDimSize(0), resTy.getDimSize(1)}, em.f32());
    if (!op.getSlots().empty()) {
      // acc[t,h] = sum_k w[t,k] * sum_s slots_s[t,k,h] (w = 1 without
      // weights); iteration (t, h, k).
      Value w = op.getWeights();
      SmallVector<Value> ins;
      SmallVector<AffineMap> maps;
      if (w) {
        ins.push_back(w);
        maps.push_back(em.map(3, {0, 2}));
      }
      for (Value s : op.getSlots()) {
        ins.push_back(s);
        maps.push_back(em.map(3, {0, 2, 1}));
      }
      maps.push_back(em.map(3, {0, 1}));
      acc = em.generic(acc, ins, maps, {kPar, kPar, kRed},
                       [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                         ImplicitLocOpBuilder ib(loc, nb);
                         ValueRange slots = a.drop_back().drop_front(w ? 1 : 0);
                         Value sum = slots.front();
                         for (Value v : slots.drop_front())
                           sum = arith::AddFOp::create(ib, sum, v);
                         if (w)
                           sum = arith::MulFOp::create(ib, a[0], sum);
                         return arith::AddFOp::create(ib, a.back(), sum);
                       });
    }
    // The addends (T x H) and the bias (H, the same for every token).
    SmallVector<Value> dense(op.getAddends());
    SmallVector<AffineMap> maps(dense.size(), em.map(2, {0, 1}));
    if (Value bias = op.getBias()) {
      dense.push_back(bias);
      maps.push_back(em.map(2, {1}));
    }
    if (!dense.empty()) {
      maps.push_back(em.map(2, {0, 1}));
      acc = em.generic(acc, dense, maps, {kPar, kPar},
                       [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                         ImplicitLocOpBuilder ib(loc, nb);
                         Value sum = a.back();
                         for (size_t i = 0; i + 1 < a.size(); ++i)
                           sum = arith::AddFOp::create(ib, sum,
                                                       Emitter::extIn(ib, a[i]));
                         return sum;
                       });
    }
    rewriter.replaceOp(op, em.round(acc, resTy));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Routing (§1) and dispatch (§2)
//===----------------------------------------------------------------------===//

/// Row-wise helpers on `T x N` f32 tensors (T may be dynamic).
/// The max a softmax subtracts: `m`, or 0 where `m` is -inf (a row of -inf
/// then gives exp(-inf) = 0 rather than NaN).
Value zeroIfNegInf(ImplicitLocOpBuilder &ib, Value m) {
  Value isNegInf = arith::CmpFOp::create(ib, arith::CmpFPredicate::OEQ, m,
                                         Emitter::cst(ib, -INFINITY));
  return arith::SelectOp::create(ib, isNegInf, Emitter::cst(ib, 0.0), m);
}

struct RowOps {
  Emitter &em;
  ImplicitLocOpBuilder &b;
  explicit RowOps(Emitter &em) : em(em), b(em.b) {}

  int64_t rows(Value v) { return cast<ShapedType>(v.getType()).getDimSize(0); }
  int64_t cols(Value v) { return cast<ShapedType>(v.getType()).getDimSize(1); }

  /// Reduces each row with `combine(acc, v)` from `init`.
  Value reduce(Value x, double init,
               function_ref<Value(ImplicitLocOpBuilder &, Value, Value)> combine) {
    Value out = Emitter(b, x).zeros({rows(x)}, em.f32());
    Value initV = arith::ConstantOp::create(b, b.getF32FloatAttr(init));
    out = linalg::FillOp::create(b, initV, out).getResult(0);
    return em.generic(out, {x}, {em.map(2, {0, 1}), em.map(2, {0})},
                      {kPar, kRed},
                      [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                        ImplicitLocOpBuilder ib(loc, nb);
                        return combine(ib, a[1], a[0]);
                      });
  }

  /// Element-wise map of a `T x N` tensor with its row's value of `perRow`.
  Value mapRows(Value x, Value perRow,
                function_ref<Value(ImplicitLocOpBuilder &, Value, Value)> fn) {
    return em.generic(
        Emitter(b, x).zeros({rows(x), cols(x)}, em.f32()), {x, perRow},
        {em.map(2, {0, 1}), em.map(2, {0}), em.map(2, {0, 1})}, {kPar, kPar},
        [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
          ImplicitLocOpBuilder ib(loc, nb);
          return fn(ib, a[0], a[1]);
        });
  }

  /// softmax(x * invTemp) per row, subtracting the row max. A row that is all
  /// -inf gives 0 everywhere; a row holding NaN gives NaN in that row only.
  Value softmax(Value x, double invTemp = 1.0) {
    if (invTemp != 1.0)
      x = em.generic(Emitter(b, x).zeros({rows(x), cols(x)}, em.f32()), {x},
                     {em.map(2, {0, 1}), em.map(2, {0, 1})}, {kPar, kPar},
                     [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                       ImplicitLocOpBuilder ib(loc, nb);
                       return arith::MulFOp::create(ib, a[0],
                                                    Emitter::cst(ib, invTemp));
                     });
    Value mx =
        reduce(x, -INFINITY,
               [](ImplicitLocOpBuilder &ib, Value acc, Value v) -> Value {
                 return arith::MaximumFOp::create(ib, acc, v);
               });
    Value ex = mapRows(
        x, mx, [&](ImplicitLocOpBuilder &ib, Value v, Value m) -> Value {
          return math::ExpOp::create(
              ib, arith::SubFOp::create(ib, v, zeroIfNegInf(ib, m)));
        });
    Value sum = reduce(ex, 0.0, [](ImplicitLocOpBuilder &ib, Value acc, Value v) -> Value {
      return arith::AddFOp::create(ib, acc, v);
    });
    return mapRows(ex, sum, [](ImplicitLocOpBuilder &ib, Value v, Value s) -> Value {
      Value pos = arith::CmpFOp::create(ib, arith::CmpFPredicate::OGT, s,
                                        Emitter::cst(ib, 0.0));
      Value q = arith::DivFOp::create(ib, v, s);
      // s is NaN for a NaN row: keep the NaN there rather than hide it.
      Value isNan = arith::CmpFOp::create(ib, arith::CmpFPredicate::UNO, s, s);
      return arith::SelectOp::create(
          ib, arith::OrIOp::create(ib, pos, isNan), q, Emitter::cst(ib, 0.0));
    });
  }

};

/// `a` ranks before `b` (ids i, j) in top-k: larger first, NaN smallest,
/// ties to the lower id.
Value ranksBefore(ImplicitLocOpBuilder &ib, Value a, Value i, Value b, Value j) {
  Value aNan = arith::CmpFOp::create(ib, arith::CmpFPredicate::UNO, a, a);
  Value bNan = arith::CmpFOp::create(ib, arith::CmpFPredicate::UNO, b, b);
  Value lowerId = arith::CmpIOp::create(ib, arith::CmpIPredicate::slt, i, j);
  Value gt = arith::CmpFOp::create(ib, arith::CmpFPredicate::OGT, a, b);
  Value eq = arith::CmpFOp::create(ib, arith::CmpFPredicate::OEQ, a, b);
  Value plain = arith::OrIOp::create(ib, gt, arith::AndIOp::create(ib, eq, lowerId));
  Value notANan = arith::XOrIOp::create(
      ib, aNan, arith::ConstantOp::create(ib, ib.getBoolAttr(true)));
  // both NaN: lower id; only b NaN: a; only a NaN: b; neither: plain.
  Value bothNan = arith::AndIOp::create(ib, aNan, bNan);
  Value onlyB = arith::AndIOp::create(ib, bNan, notANan);
  return arith::SelectOp::create(
      ib, bothNan, lowerId,
      arith::SelectOp::create(ib, onlyB, arith::ConstantOp::create(ib, ib.getBoolAttr(true)),
                              arith::SelectOp::create(ib, aNan,
                                  arith::ConstantOp::create(ib, ib.getBoolAttr(false)),
                                  plain)));
}

/// One round of top-k: per row, the best key among entries not `taken`
/// (T x N i1). Returns (T i32 id or -1, T f32 key).
std::pair<Value, Value> argmaxRound(Emitter &em, Value keys, Value taken) {
  ImplicitLocOpBuilder &b = em.b;
  int64_t t = cast<ShapedType>(keys.getType()).getDimSize(0);
  Value bestI = linalg::FillOp::create(
                    b, Value(arith::ConstantOp::create(b, b.getI32IntegerAttr(-1))),
                    em.zeros({t}, b.getI32Type()))
                    .getResult(0);
  Value bestV = linalg::FillOp::create(
                    b, Value(arith::ConstantOp::create(b, b.getF32FloatAttr(-INFINITY))),
                    em.zeros({t}, em.f32()))
                    .getResult(0);
  auto op = linalg::GenericOp::create(
      b, TypeRange{bestI.getType(), bestV.getType()}, ValueRange{keys, taken},
      ValueRange{bestI, bestV},
      ArrayRef<AffineMap>{em.map(2, {0, 1}), em.map(2, {0, 1}), em.map(2, {0}),
                          em.map(2, {0})},
      ArrayRef<IteratorType>{kPar, kRed},
      [&](OpBuilder &nb, Location loc, ValueRange a) {
        ImplicitLocOpBuilder ib(loc, nb);
        Value v = a[0], isTaken = a[1], bi = a[2], bv = a[3];
        Value id = arith::IndexCastOp::create(ib, ib.getI32Type(),
                                              linalg::IndexOp::create(ib, 1));
        Value none = arith::CmpIOp::create(
            ib, arith::CmpIPredicate::slt, bi,
            arith::ConstantOp::create(ib, ib.getI32IntegerAttr(0)));
        Value better = arith::OrIOp::create(ib, none, ranksBefore(ib, v, id, bv, bi));
        Value free = arith::XOrIOp::create(
            ib, isTaken, arith::ConstantOp::create(ib, ib.getBoolAttr(true)));
        Value take = arith::AndIOp::create(ib, free, better);
        linalg::YieldOp::create(
            ib, ValueRange{arith::SelectOp::create(ib, take, id, bi),
                           arith::SelectOp::create(ib, take, v, bv)});
      });
  return {op.getResult(0), op.getResult(1)};
}

/// Marks `chosen` (T i32, -1 = none) as taken in the `T x N` i1 mask.
Value markTaken(Emitter &em, Value taken, Value chosen) {
  return em.generic(taken, {chosen}, {em.map(2, {0}), em.map(2, {0, 1})},
                    {kPar, kPar},
                    [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                      ImplicitLocOpBuilder ib(loc, nb);
                      Value id = arith::IndexCastOp::create(
                          ib, ib.getI32Type(), linalg::IndexOp::create(ib, 1));
                      Value hit = arith::CmpIOp::create(ib, arith::CmpIPredicate::eq,
                                                        id, a[0]);
                      return arith::OrIOp::create(ib, a[1], hit);
                    });
}

/// Reads row values `vals[t, id[t]]` (0 where id < 0) as a `T` tensor.
Value gatherRow(Emitter &em, Value vals, Value ids) {
  int64_t t = cast<ShapedType>(ids.getType()).getDimSize(0);
  return em.generic(em.zeros({t}, em.f32()), {ids}, {em.map(1, {0}), em.map(1, {0})},
                    {kPar}, [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                      ImplicitLocOpBuilder ib(loc, nb);
                      Value zero = arith::ConstantOp::create(ib, ib.getI32IntegerAttr(0));
                      Value valid = arith::CmpIOp::create(ib, arith::CmpIPredicate::sge,
                                                          a[0], zero);
                      Value safe = arith::IndexCastOp::create(
                          ib, ib.getIndexType(), arith::MaxSIOp::create(ib, a[0], zero));
                      Value row = linalg::IndexOp::create(ib, 0);
                      Value v = tensor::ExtractOp::create(ib, vals, ValueRange{row, safe});
                      return arith::SelectOp::create(ib, valid, v, Emitter::cst(ib, 0.0));
                    });
}

/// Writes the `T` tensor `col` into column `k` of the `T x K` tensor `dst`.
Value insertColumn(ImplicitLocOpBuilder &b, Value dst, Value col, Value k) {
  auto colTy = cast<RankedTensorType>(col.getType());
  auto col2Ty = RankedTensorType::get({colTy.getDimSize(0), 1},
                                      colTy.getElementType());
  Value col2 = tensor::ExpandShapeOp::create(
      b, col2Ty, col, ArrayRef<ReassociationIndices>{{0, 1}});
  SmallVector<OpFoldResult> offsets{b.getIndexAttr(0), k};
  SmallVector<OpFoldResult> sizes{tensor::getMixedSize(b, b.getLoc(), col2, 0),
                                  b.getIndexAttr(1)};
  SmallVector<OpFoldResult> strides{b.getIndexAttr(1), b.getIndexAttr(1)};
  return tensor::InsertSliceOp::create(b, col2, dst, offsets, sizes, strides);
}

/// Splits `T x E` into `(T*G) x (E/G)` rows (one row per group) and back.
Value toGroupRows(ImplicitLocOpBuilder &b, Value x, int64_t g) {
  auto ty = cast<RankedTensorType>(x.getType());
  int64_t t = ty.getDimSize(0), e = ty.getDimSize(1);
  auto t3 = RankedTensorType::get({t, g, e / g}, ty.getElementType());
  Value x3 = tensor::ExpandShapeOp::create(
      b, t3, x, ArrayRef<ReassociationIndices>{{0}, {1, 2}});
  int64_t tg = ShapedType::isDynamic(t) ? ShapedType::kDynamic : t * g;
  return tensor::CollapseShapeOp::create(
      b, RankedTensorType::get({tg, e / g}, ty.getElementType()), x3,
      ArrayRef<ReassociationIndices>{{0, 1}, {2}});
}

Value fromGroupRows(ImplicitLocOpBuilder &b, Value x, Value like, int64_t g) {
  auto likeTy = cast<RankedTensorType>(like.getType());
  int64_t t = likeTy.getDimSize(0), eg = cast<ShapedType>(x.getType()).getDimSize(1);
  SmallVector<OpFoldResult> outShape{tensor::getMixedSize(b, b.getLoc(), like, 0),
                                     b.getIndexAttr(g), b.getIndexAttr(eg)};
  Value x3 = tensor::ExpandShapeOp::create(
      b, RankedTensorType::get({t, g, eg}, b.getF32Type()), x,
      ArrayRef<ReassociationIndices>{{0, 1}, {2}}, outShape);
  return tensor::CollapseShapeOp::create(
      b, RankedTensorType::get({t, g * eg}, b.getF32Type()), x3,
      ArrayRef<ReassociationIndices>{{0}, {1, 2}});
}

/// Per-row top-`count` of `keys` (T x N) restricted to entries not in
/// `excluded` (T x N i1, may be null): returns the chosen mask (T x N i1).
Value topMask(Emitter &em, Value keys, int64_t count, Value excluded) {
  ImplicitLocOpBuilder &b = em.b;
  auto ty = cast<RankedTensorType>(keys.getType());
  Value taken = excluded ? excluded
                         : em.zeros(ty.getShape(), b.getI1Type());
  Value chosen = em.zeros(ty.getShape(), b.getI1Type());
  for (int64_t i = 0; i < count; ++i) {
    auto [id, key] = argmaxRound(em, keys, taken);
    (void)key;
    taken = markTaken(em, taken, id);
    chosen = markTaken(em, chosen, id);
  }
  return chosen;
}

/// One round of sparsemixer (PhiMoE): the softmax, at the winner, of the
/// logits `z` not `taken` before this round and not masked against the
/// winner's logit `m` (T): `z_j` is masked when
/// `(m - z_j) / max(|z_j|, m) > 2 * eps` (false for NaN, as in PyTorch).
/// The winner's term is exp(0) = 1; as `RowOps::softmax`, a -inf `m` gives
/// 0 and a NaN sum gives NaN.
Value sparseMixerWeight(Emitter &em, Value z, Value taken, Value m,
                        double eps) {
  ImplicitLocOpBuilder &b = em.b;
  int64_t t = cast<ShapedType>(z.getType()).getDimSize(0);
  Value sum0 =
      linalg::FillOp::create(b, Emitter::cst(b, 0.0), em.zeros({t}, em.f32()))
          .getResult(0);
  Value sum = em.generic(
      sum0, {z, taken, m},
      {em.map(2, {0, 1}), em.map(2, {0, 1}), em.map(2, {0}), em.map(2, {0})},
      {kPar, kRed}, [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
        ImplicitLocOpBuilder ib(loc, nb);
        Value zj = a[0], isTaken = a[1], mv = a[2], acc = a[3];
        Value factor =
            arith::MaximumFOp::create(ib, math::AbsFOp::create(ib, zj), mv);
        Value ratio = arith::DivFOp::create(
            ib, arith::SubFOp::create(ib, mv, zj), factor);
        Value masked = arith::CmpFOp::create(ib, arith::CmpFPredicate::OGT,
                                             ratio, Emitter::cst(ib, 2 * eps));
        Value out = arith::OrIOp::create(ib, isTaken, masked);
        Value term = math::ExpOp::create(
            ib, arith::SubFOp::create(ib, zj, zeroIfNegInf(ib, mv)));
        return arith::SelectOp::create(ib, out, acc,
                                       arith::AddFOp::create(ib, acc, term));
      });
  return em.generic(
      em.zeros({t}, em.f32()), {m, sum},
      {em.map(1, {0}), em.map(1, {0}), em.map(1, {0})}, {kPar},
      [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
        ImplicitLocOpBuilder ib(loc, nb);
        Value mv = a[0], sm = a[1];
        Value top = math::ExpOp::create(
            ib, arith::SubFOp::create(ib, mv, zeroIfNegInf(ib, mv)));
        Value pos = arith::CmpFOp::create(ib, arith::CmpFPredicate::OGT, sm,
                                          Emitter::cst(ib, 0.0));
        Value isNan =
            arith::CmpFOp::create(ib, arith::CmpFPredicate::UNO, sm, sm);
        return arith::SelectOp::create(ib, arith::OrIOp::create(ib, pos, isNan),
                                       arith::DivFOp::create(ib, top, sm),
                                       Emitter::cst(ib, 0.0));
      });
}

struct LowerRoute : OpRewritePattern<RouteOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(RouteOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Value z = op.getLogits();
    Emitter em(b, z);
    RowOps rows(em);
    RoutingAttr r = op.getRouting();
    auto zTy = cast<RankedTensorType>(z.getType());
    int64_t t = zTy.getDimSize(0), e = zTy.getDimSize(1), k = r.getK();
    SelectionKind sel = r.getSelection();
    Type i1 = b.getI1Type(), i32 = b.getI32Type();

    // Scores s (weights come from these) and selection keys.
    Value s;
    Value excluded; // T x E i1: experts that may not be selected.
    if (sel == SelectionKind::hierarchical) {
      int64_t g = r.getNGroup();
      double tauG = r.getTauGroup().convertToDouble();
      double tauE = r.getTauExpert().convertToDouble();
      Value a = rows.softmax(op.getGroupLogits(), 1.0 / tauG); // T x G
      Value bIn = fromGroupRows(b, rows.softmax(toGroupRows(b, z, g), 1.0 / tauE),
                                z, g);                          // T x E
      int64_t eg = e / g;
      s = em.generic(em.zeros({t, e}, em.f32()), {bIn},
                     {em.map(2, {0, 1}), em.map(2, {0, 1})}, {kPar, kPar},
                     [&](OpBuilder &nb, Location loc, ValueRange args) -> Value {
                       ImplicitLocOpBuilder ib(loc, nb);
                       Value row = linalg::IndexOp::create(ib, 0);
                       Value grp = arith::DivUIOp::create(
                           ib, linalg::IndexOp::create(ib, 1),
                           arith::ConstantIndexOp::create(ib, eg));
                       Value av = tensor::ExtractOp::create(ib, a, ValueRange{row, grp});
                       return arith::MulFOp::create(ib, av, args[0]);
                     });
      if (r.getTopkGroup() < g) {
        Value kept = topMask(em, a, r.getTopkGroup(), Value()); // T x G
        excluded = em.generic(em.zeros({t, e}, i1), {}, {em.map(2, {0, 1})},
                              {kPar, kPar},
                              [&](OpBuilder &nb, Location loc, ValueRange) -> Value {
                                ImplicitLocOpBuilder ib(loc, nb);
                                Value row = linalg::IndexOp::create(ib, 0);
                                Value grp = arith::DivUIOp::create(
                                    ib, linalg::IndexOp::create(ib, 1),
                                    arith::ConstantIndexOp::create(ib, eg));
                                Value kv = tensor::ExtractOp::create(
                                    ib, kept, ValueRange{row, grp});
                                return arith::XOrIOp::create(
                                    ib, kv, arith::ConstantOp::create(ib, ib.getBoolAttr(true)));
                              });
      }
    } else if (sel == SelectionKind::topk_then_softmax ||
               sel == SelectionKind::sparsemixer ||
               r.getScoring() == ScoringFunc::none) {
      s = z;
    } else if (r.getScoring() == ScoringFunc::softmax) {
      s = rows.softmax(z);
    } else {
      s = em.generic(em.zeros({t, e}, em.f32()), {z},
                     {em.map(2, {0, 1}), em.map(2, {0, 1})}, {kPar, kPar},
                     [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                       ImplicitLocOpBuilder ib(loc, nb);
                       return Emitter::sigmoid(ib, a[0]);
                     });
    }
    Value keys = s;
    if (Value bias = op.getSelectionBias())
      keys = em.generic(em.zeros({t, e}, em.f32()), {s, bias},
                        {em.map(2, {0, 1}), em.map(2, {1}), em.map(2, {0, 1})},
                        {kPar, kPar},
                        [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                          ImplicitLocOpBuilder ib(loc, nb);
                          return arith::AddFOp::create(ib, a[0],
                                                       Emitter::extIn(ib, a[1]));
                        });
    if (sel == SelectionKind::group_limited_topk && r.getTopkGroup() < r.getNGroup()) {
      // Group score: max, or the sum of the two largest keys of the group.
      int64_t g = r.getNGroup(), eg = e / g;
      Value grouped = toGroupRows(b, keys, g); // (T*G) x Eg
      int64_t tg = cast<ShapedType>(grouped.getType()).getDimSize(0);
      // Sized from the grouped rows (T*G), not from T.
      Emitter gem(b, grouped);
      Value g1 = linalg::FillOp::create(b, Emitter::cst(b, -INFINITY),
                                        gem.zeros({tg}, em.f32()))
                     .getResult(0);
      Value g2 = g1;
      auto top2 = linalg::GenericOp::create(
          b, TypeRange{g1.getType(), g2.getType()}, ValueRange{grouped},
          ValueRange{g1, g2},
          ArrayRef<AffineMap>{em.map(2, {0, 1}), em.map(2, {0}), em.map(2, {0})},
          ArrayRef<IteratorType>{kPar, kRed},
          [&](OpBuilder &nb, Location loc, ValueRange a) {
            ImplicitLocOpBuilder ib(loc, nb);
            Value v = a[0], first = a[1], second = a[2];
            Value isFirst = arith::CmpFOp::create(ib, arith::CmpFPredicate::OGT, v, first);
            Value newSecond = arith::SelectOp::create(
                ib, isFirst, first, arith::MaximumFOp::create(ib, second, v));
            Value newFirst = arith::SelectOp::create(ib, isFirst, v, first);
            linalg::YieldOp::create(ib, ValueRange{newFirst, newSecond});
          });
      Value score = top2.getResult(0);
      if (r.getGroupScore() == GroupScore::top2_sum)
        score = gem.generic(gem.zeros({tg}, em.f32()),
                            {top2.getResult(0), top2.getResult(1)},
                            {em.map(1, {0}), em.map(1, {0}), em.map(1, {0})}, {kPar},
                            [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                              return arith::AddFOp::create(nb, loc, a[0], a[1]);
                            });
      // Back to T x G.
      SmallVector<OpFoldResult> outShape{tensor::getMixedSize(b, b.getLoc(), z, 0),
                                         b.getIndexAttr(g)};
      Value groupScores = tensor::ExpandShapeOp::create(
          b, RankedTensorType::get({t, g}, em.f32()), score,
          ArrayRef<ReassociationIndices>{{0, 1}}, outShape);
      Value kept = topMask(em, groupScores, r.getTopkGroup(), Value());
      excluded = em.generic(em.zeros({t, e}, i1), {}, {em.map(2, {0, 1})},
                            {kPar, kPar},
                            [&](OpBuilder &nb, Location loc, ValueRange) -> Value {
                              ImplicitLocOpBuilder ib(loc, nb);
                              Value row = linalg::IndexOp::create(ib, 0);
                              Value grp = arith::DivUIOp::create(
                                  ib, linalg::IndexOp::create(ib, 1),
                                  arith::ConstantIndexOp::create(ib, eg));
                              Value kv = tensor::ExtractOp::create(ib, kept,
                                                                   ValueRange{row, grp});
                              return arith::XOrIOp::create(
                                  ib, kv, arith::ConstantOp::create(ib, ib.getBoolAttr(true)));
                            });
    }

    Value idxOut = em.zeros({t, k}, i32);
    Value wOut = em.zeros({t, k}, em.f32());
    bool denseOrder = sel == SelectionKind::dense ||
                      (sel == SelectionKind::hierarchical && k == e);
    if (denseOrder) {
      // Slot j is expert j; excluded experts give -1 / 0.
      SmallVector<Value> ins{s};
      SmallVector<AffineMap> maps{em.map(2, {0, 1})};
      if (excluded) {
        ins.push_back(excluded);
        maps.push_back(em.map(2, {0, 1}));
      }
      maps.push_back(em.map(2, {0, 1}));
      idxOut = em.generic(idxOut, ins, maps, {kPar, kPar},
                          [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                            ImplicitLocOpBuilder ib(loc, nb);
                            Value id = arith::IndexCastOp::create(
                                ib, ib.getI32Type(), linalg::IndexOp::create(ib, 1));
                            if (!excluded)
                              return id;
                            return arith::SelectOp::create(
                                ib, a[1], arith::ConstantOp::create(ib, ib.getI32IntegerAttr(-1)),
                                id);
                          });
      wOut = em.generic(wOut, ins, maps, {kPar, kPar},
                        [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                          ImplicitLocOpBuilder ib(loc, nb);
                          if (!excluded)
                            return a[0];
                          return arith::SelectOp::create(ib, a[1], Emitter::cst(ib, 0.0),
                                                         a[0]);
                        });
    } else {
      // K rounds of argmax over the keys; slot order = descending key.
      Value taken = excluded ? excluded : em.zeros({t, e}, i1);
      Value cum = em.zeros({t}, em.f32());
      double p = r.getTopPValue();
      bool topP = sel == SelectionKind::top_p;
      Value lb = arith::ConstantIndexOp::create(b, 0);
      Value ub = arith::ConstantIndexOp::create(b, k);
      Value step = arith::ConstantIndexOp::create(b, 1);
      auto loop = scf::ForOp::create(
          b, lb, ub, step, ValueRange{taken, idxOut, wOut, cum},
          [&](OpBuilder &nb, Location loc, Value slot, ValueRange iter) {
            ImplicitLocOpBuilder lb2(loc, nb);
            Emitter lem(lb2, z);
            auto [id, key] = argmaxRound(lem, keys, iter[0]);
            Value newTaken = markTaken(lem, iter[0], id);
            Value w = sel == SelectionKind::sparsemixer
                          ? sparseMixerWeight(lem, s, iter[0], key,
                                              r.getJitterEpsValue())
                          : gatherRow(lem, s, id);
            Value newCum = iter[3];
            if (topP) {
              // Take experts until the cumulative probability reaches p;
              // the expert that crosses p is included.
              Value include = lem.generic(
                  lem.zeros({t}, lb2.getI1Type()), {iter[3]},
                  {lem.map(1, {0}), lem.map(1, {0})}, {kPar},
                  [&](OpBuilder &nb2, Location l2, ValueRange a) -> Value {
                    ImplicitLocOpBuilder ib(l2, nb2);
                    return arith::CmpFOp::create(ib, arith::CmpFPredicate::OLT, a[0],
                                                 Emitter::cst(ib, p));
                  });
              id = lem.generic(id, {include}, {lem.map(1, {0}), lem.map(1, {0})},
                               {kPar},
                               [&](OpBuilder &nb2, Location l2, ValueRange a) -> Value {
                                 ImplicitLocOpBuilder ib(l2, nb2);
                                 return arith::SelectOp::create(
                                     ib, a[0], a[1],
                                     arith::ConstantOp::create(ib, ib.getI32IntegerAttr(-1)));
                               });
              w = lem.generic(w, {include}, {lem.map(1, {0}), lem.map(1, {0})},
                              {kPar},
                              [&](OpBuilder &nb2, Location l2, ValueRange a) -> Value {
                                ImplicitLocOpBuilder ib(l2, nb2);
                                return arith::SelectOp::create(ib, a[0], a[1],
                                                               Emitter::cst(ib, 0.0));
                              });
              newCum = lem.generic(iter[3], {w}, {lem.map(1, {0}), lem.map(1, {0})},
                                   {kPar},
                                   [&](OpBuilder &nb2, Location l2, ValueRange a) -> Value {
                                     return arith::AddFOp::create(nb2, l2, a[1], a[0]);
                                   });
            }
            Value newIdx = insertColumn(lb2, iter[1], id, slot);
            Value newW = insertColumn(lb2, iter[2], w, slot);
            scf::YieldOp::create(lb2, ValueRange{newTaken, newIdx, newW, newCum});
          });
      idxOut = loop.getResult(1);
      wOut = loop.getResult(2);
    }

    if (sel == SelectionKind::topk_then_softmax)
      wOut = rows.softmax(wOut);
    if (r.getRenormalize()) {
      Value sum = rows.reduce(wOut, 0.0, [](ImplicitLocOpBuilder &ib, Value acc, Value v) -> Value {
        return arith::AddFOp::create(ib, acc, v);
      });
      wOut = rows.mapRows(wOut, sum, [](ImplicitLocOpBuilder &ib, Value v, Value sm) -> Value {
        Value nonZero = arith::CmpFOp::create(ib, arith::CmpFPredicate::UNE, sm,
                                              Emitter::cst(ib, 0.0));
        return arith::SelectOp::create(ib, nonZero, arith::DivFOp::create(ib, v, sm), v);
      });
    }
    double scale = r.getScalingFactorValue();
    if (scale != 1.0)
      wOut = em.generic(wOut, {}, {em.map(2, {0, 1})}, {kPar, kPar},
                        [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
                          ImplicitLocOpBuilder ib(loc, nb);
                          return arith::MulFOp::create(ib, a[0], Emitter::cst(ib, scale));
                        });
    rewriter.replaceOp(op, {idxOut, wOut});
    return success();
  }
};

/// Capacity dispatch is a sequential scan: pairs are admitted per expert in
/// (slot, token) order, so it is two nested scf.for loops over tensors that
/// bufferize in place.
struct LowerDispatch : OpRewritePattern<DispatchOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(DispatchOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getMode() == DispatchMode::dropless) {
      Value zero = arith::ConstantOp::create(
          rewriter, op.getLoc(),
          DenseElementsAttr::get(RankedTensorType::get({}, rewriter.getI64Type()),
                                 rewriter.getI64IntegerAttr(0).getValue()));
      rewriter.replaceOp(op, {op.getIndices(), op.getWeights(), zero});
      return success();
    }
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Value idx = op.getIndices(), w = op.getWeights();
    Emitter em(b, idx);
    int64_t numExperts = op.getNumExperts();
    int64_t k = cast<ShapedType>(idx.getType()).getDimSize(1);
    Type i64 = b.getI64Type();
    Value t = tensor::DimOp::create(b, idx, 0);
    Value capacity = op.buildCapacity(
        b, b.getLoc(),
        arith::MulIOp::create(b, t, arith::ConstantIndexOp::create(b, k)));

    Value counts = Emitter(b, idx).zeros({numExperts}, i64);
    Value dropped0 = arith::ConstantOp::create(b, b.getI64IntegerAttr(0));
    Value c0 = arith::ConstantIndexOp::create(b, 0);
    Value c1 = arith::ConstantIndexOp::create(b, 1);
    Value ck = arith::ConstantIndexOp::create(b, k);
    auto outer = scf::ForOp::create(
        b, c0, ck, c1, ValueRange{idx, w, counts, dropped0},
        [&](OpBuilder &ob, Location loc, Value slot, ValueRange it) {
          auto inner = scf::ForOp::create(
              ob, loc, c0, t, c1, it,
              [&](OpBuilder &nb, Location l2, Value tok, ValueRange st) {
                ImplicitLocOpBuilder ib(l2, nb);
                Value zero32 = arith::ConstantOp::create(ib, ib.getI32IntegerAttr(0));
                Value e = tensor::ExtractOp::create(ib, st[0], ValueRange{tok, slot});
                Value valid = arith::AndIOp::create(
                    ib, arith::CmpIOp::create(ib, arith::CmpIPredicate::sge, e, zero32),
                    arith::CmpIOp::create(
                        ib, arith::CmpIPredicate::slt, e,
                        arith::ConstantOp::create(ib, ib.getI32IntegerAttr(numExperts))));
                // Ids past E (zero-computation experts) pass untouched, and
                // must not index the counts.
                Value ei = arith::IndexCastOp::create(
                    ib, ib.getIndexType(),
                    arith::SelectOp::create(ib, valid, e, zero32));
                Value cnt = tensor::ExtractOp::create(ib, st[2], ValueRange{ei});
                Value admit = arith::AndIOp::create(
                    ib, valid,
                    arith::CmpIOp::create(ib, arith::CmpIPredicate::slt, cnt, capacity));
                Value drop = arith::AndIOp::create(
                    ib, valid,
                    arith::XOrIOp::create(ib, admit,
                                          arith::ConstantOp::create(ib, ib.getBoolAttr(true))));
                Value one = arith::ConstantOp::create(ib, ib.getI64IntegerAttr(1));
                Value newCnt = arith::SelectOp::create(
                    ib, admit, arith::AddIOp::create(ib, cnt, one), cnt);
                Value counts2 = tensor::InsertOp::create(ib, newCnt, st[2], ValueRange{ei});
                Value e2 = arith::SelectOp::create(
                    ib, drop, arith::ConstantOp::create(ib, ib.getI32IntegerAttr(-1)), e);
                Value wv = tensor::ExtractOp::create(ib, st[1], ValueRange{tok, slot});
                Value w2 = arith::SelectOp::create(ib, drop, Emitter::cst(ib, 0.0), wv);
                Value idx2 = tensor::InsertOp::create(ib, e2, st[0], ValueRange{tok, slot});
                Value wt2 = tensor::InsertOp::create(ib, w2, st[1], ValueRange{tok, slot});
                Value d2 = arith::AddIOp::create(
                    ib, st[3], arith::ExtUIOp::create(ib, ib.getI64Type(), drop));
                scf::YieldOp::create(ib, ValueRange{idx2, wt2, counts2, d2});
              });
          scf::YieldOp::create(ob, loc, inner.getResults());
        });
    Value dropped = tensor::FromElementsOp::create(
        b, RankedTensorType::get({}, i64), ValueRange{outer.getResult(3)});
    rewriter.replaceOp(op, {outer.getResult(0), outer.getResult(1), dropped});
    return success();
  }
};

/// Merged experts: an element-wise generic reading the map from a constant
/// table (router ids below N), shifting special ids, keeping -1.
struct LowerRemapExperts : OpRewritePattern<RemapExpertsOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(RemapExpertsOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Value idx = op.getIndices();
    Emitter em(b, idx);
    ArrayRef<int32_t> map = op.getMap();
    auto n = static_cast<int32_t>(map.size());
    auto targets = static_cast<int32_t>(op.getNumTargets());
    auto tableTy = RankedTensorType::get({n}, b.getI32Type());
    Value table = arith::ConstantOp::create(
        b, DenseElementsAttr::get(tableTy, map));
    auto idxTy = cast<RankedTensorType>(idx.getType());
    Value y = em.generic(
        em.zeros(idxTy.getShape(), b.getI32Type()), {idx},
        {em.map(2, {0, 1}), em.map(2, {0, 1})}, {kPar, kPar},
        [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
          ImplicitLocOpBuilder ib(loc, nb);
          auto i32 = [&](int32_t v) -> Value {
            return arith::ConstantOp::create(ib, ib.getI32IntegerAttr(v));
          };
          Value j = a[0];
          Value isRouted = arith::AndIOp::create(
              ib, arith::CmpIOp::create(ib, arith::CmpIPredicate::sge, j, i32(0)),
              arith::CmpIOp::create(ib, arith::CmpIPredicate::slt, j, i32(n)));
          Value row = arith::IndexCastOp::create(
              ib, ib.getIndexType(),
              arith::MinSIOp::create(
                  ib, arith::MaxSIOp::create(ib, j, i32(0)), i32(n - 1)));
          Value mapped = tensor::ExtractOp::create(ib, table, ValueRange{row});
          Value shifted = arith::SelectOp::create(
              ib, arith::CmpIOp::create(ib, arith::CmpIPredicate::sge, j, i32(n)),
              arith::AddIOp::create(ib, j, i32(targets - n)), j);
          return arith::SelectOp::create(ib, isRouted, mapped, shifted);
        });
    rewriter.replaceOp(op, y);
    return success();
  }
};

/// Zero-computation experts (MoE++): one generic over (t, k, h) that picks
/// the slot's kind from a constant table. Constant experts first compute
/// their mixing weights softmax(W_c x) for every token.
struct LowerSpecialExperts : OpRewritePattern<SpecialExpertsOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(SpecialExpertsOp op,
                                PatternRewriter &rewriter) const override {
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    Value x = op.getInput(), idx = op.getIndices();
    Emitter em(b, x);
    auto xTy = cast<RankedTensorType>(x.getType());
    int64_t t = xTy.getDimSize(0), h = xTy.getDimSize(1);
    int64_t k = cast<ShapedType>(idx.getType()).getDimSize(1);
    int64_t n = op.getKinds().size(), offset = op.getExpertOffset();
    // kind[i] and, for constant experts, their index among the constants.
    SmallVector<int32_t> kinds, constIdx;
    int32_t numConst = 0;
    for (Attribute a : op.getKinds()) {
      SpecialKind kind = cast<SpecialKindAttr>(a).getValue();
      kinds.push_back(static_cast<int32_t>(kind));
      constIdx.push_back(kind == SpecialKind::constant ? numConst++ : 0);
    }
    auto tableTy = RankedTensorType::get({n}, b.getI32Type());
    Value kindTable = arith::ConstantOp::create(
        b, DenseElementsAttr::get(tableTy, ArrayRef<int32_t>(kinds)));
    Value constTable = arith::ConstantOp::create(
        b, DenseElementsAttr::get(tableTy, ArrayRef<int32_t>(constIdx)));
    Value mix; // T x (2*Nc): softmax pairs
    if (numConst > 0) {
      auto crTy = cast<RankedTensorType>(op.getConstRouter().getType());
      Value cr2 = tensor::CollapseShapeOp::create(
          b, RankedTensorType::get({2 * numConst, h}, crTy.getElementType()),
          op.getConstRouter(), ArrayRef<ReassociationIndices>{{0, 1}, {2}});
      Value logits = em.matmulT(x, cr2); // T x 2Nc, pairs adjacent
      mix = em.generic(em.zeros({t, 2 * numConst}, em.f32()), {}, {em.map(2, {0, 1})},
                       {kPar, kPar},
                       [&](OpBuilder &nb, Location loc, ValueRange) -> Value {
                         ImplicitLocOpBuilder ib(loc, nb);
                         Value row = linalg::IndexOp::create(ib, 0);
                         Value col = linalg::IndexOp::create(ib, 1);
                         Value two = arith::ConstantIndexOp::create(ib, 2);
                         Value base = arith::MulIOp::create(
                             ib, arith::DivUIOp::create(ib, col, two), two);
                         Value other = arith::SubIOp::create(
                             ib, arith::AddIOp::create(ib, base, arith::ConstantIndexOp::create(ib, 1)),
                             arith::RemUIOp::create(ib, col, two));
                         Value me = tensor::ExtractOp::create(ib, logits, ValueRange{row, col});
                         Value ot = tensor::ExtractOp::create(ib, logits, ValueRange{row, other});
                         // 2-way softmax: 1 / (1 + exp(other - me)).
                         return Emitter::sigmoid(ib, arith::SubFOp::create(ib, me, ot));
                       });
    }
    Value vecs = op.getConstVectors();
    Value y = em.generic(
        em.zeros({t, k, h}, em.f32()), {x, idx},
        {em.map(3, {0, 2}), em.map(3, {0, 1}), em.map(3, {0, 1, 2})},
        {kPar, kPar, kPar},
        [&](OpBuilder &nb, Location loc, ValueRange a) -> Value {
          ImplicitLocOpBuilder ib(loc, nb);
          auto [e, valid] = slotExpert(ib, a[1], offset, n);
          Value xv = Emitter::extIn(ib, a[0]);
          Value kind = tensor::ExtractOp::create(ib, kindTable, ValueRange{e});
          auto isKind = [&](SpecialKind sk) -> Value {
            return arith::CmpIOp::create(
                ib, arith::CmpIPredicate::eq, kind,
                arith::ConstantOp::create(ib, ib.getI32IntegerAttr(static_cast<int32_t>(sk))));
          };
          Value zero = Emitter::cst(ib, 0.0);
          Value v = arith::SelectOp::create(ib, isKind(SpecialKind::copy), xv, zero);
          if (numConst > 0) {
            Value c = arith::IndexCastOp::create(
                ib, ib.getIndexType(),
                tensor::ExtractOp::create(ib, constTable, ValueRange{e}));
            Value two = arith::ConstantIndexOp::create(ib, 2);
            Value row = linalg::IndexOp::create(ib, 0);
            Value hi = linalg::IndexOp::create(ib, 2);
            Value c2 = arith::MulIOp::create(ib, c, two);
            Value a1 = tensor::ExtractOp::create(ib, mix, ValueRange{row, c2});
            Value a2 = tensor::ExtractOp::create(
                ib, mix, ValueRange{row, arith::AddIOp::create(
                                             ib, c2, arith::ConstantIndexOp::create(ib, 1))});
            Value vv = Emitter::extIn(ib, tensor::ExtractOp::create(ib, vecs, ValueRange{c, hi}));
            Value cv = arith::AddFOp::create(ib, arith::MulFOp::create(ib, a1, xv),
                                             arith::MulFOp::create(ib, a2, vv));
            v = arith::SelectOp::create(ib, isKind(SpecialKind::constant), cv, v);
          }
          return arith::SelectOp::create(ib, valid, v, zero);
        });
    rewriter.replaceOp(op, y);
    return success();
  }
};

struct ConvertMoEToLinalgPass
    : public mlir::moe::impl::ConvertMoEToLinalgBase<ConvertMoEToLinalgPass> {
  using ConvertMoEToLinalgBase::ConvertMoEToLinalgBase;
  void runOnOperation() override {
    // Whole layers are decomposed by --moe-decompose, not lowered here.
    WalkResult whole = getOperation()->walk([](Operation *op) {
      if (!isa<LayerOp, CartesianOp>(op))
        return WalkResult::advance();
      op->emitOpError() << "is a whole layer: run --moe-decompose before "
                           "--convert-moe-to-linalg";
      return WalkResult::interrupt();
    });
    if (whole.wasInterrupted())
      return signalPassFailure();
    if (blockedGemms && gemmBlockBytes <= 0) {
      // (mlir::emitError: no dump of the whole module with the message.)
      mlir::emitError(getOperation()->getLoc(),
                      "convert-moe-to-linalg: gemm-block-bytes must be "
                      "positive (got ")
          << static_cast<int64_t>(gemmBlockBytes) << ")";
      return signalPassFailure();
    }
    RewritePatternSet patterns(&getContext());
    if (blockedGemms && gemmVectorBits != 0 && gemmVectorBits != 256 &&
        gemmVectorBits != 512) {
      mlir::emitError(getOperation()->getLoc(),
                      "convert-moe-to-linalg: gemm-vector-bits must be 0, "
                      "256 or 512 (got ")
          << static_cast<int64_t>(gemmVectorBits) << ")";
      return signalPassFailure();
    }
    BlockedGemmConfig gemms;
    if (blockedGemms)
      gemms = {gemmBlockBytes, gemmVectorBits, gemmAMX};
    populateMoEToLinalgPatterns(patterns, gemms);
    ConversionTarget target(getContext());
    target.addLegalDialect<linalg::LinalgDialect, tensor::TensorDialect,
                           arith::ArithDialect, math::MathDialect>();
    target.addLegalDialect<scf::SCFDialect>();
    target.addIllegalOp<LinearOp, ProjectedRouterOp, FFNOp, ExpertsOp,
                        LoRAExpertsOp, RMSNormOp, CombineOp, RouteOp,
                        DispatchOp, SpecialExpertsOp, RemapExpertsOp>();
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });
    if (failed(applyPartialConversion(getOperation(), target,
                                      std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void mlir::moe::populateMoEToLinalgPatterns(RewritePatternSet &patterns,
                                            BlockedGemmConfig gemms) {
  patterns.add<LowerProjectedRouter, LowerLoRAExperts, LowerRMSNorm,
               LowerCombine, LowerRoute, LowerDispatch, LowerSpecialExperts,
               LowerRemapExperts>(patterns.getContext());
  patterns.add<LowerLinear, LowerFFN, LowerExperts>(patterns.getContext(),
                                                     gemms);
}
