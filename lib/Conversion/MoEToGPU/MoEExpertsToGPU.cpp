//===- MoEExpertsToGPU.cpp - tensor-core kernels for moe.experts -*- C++ -*-===//
//
// convert-moe-experts-to-gpu and moe-gpu-launch-expert-kernels: each
// eligible moe.experts becomes three kernels (align, gate_up, down) that
// group the (token, slot) pairs by expert on the device and run the expert
// GEMMs on tensor cores. docs/notes/gpu-path.md ("Expert kernels")
// describes the design and what is verified.
//
// What was learned from elsewhere (no code copied):
//  * vLLM's moe_align_block_size and Triton's fused_moe: pairs sorted by
//    expert in a flat list padded per expert to the GEMM tile height, a
//    per-tile expert table, and a grid sized by the bound
//    ceil(T*K/BM) + E whose surplus blocks return at once; A rows gathered
//    through the sorted list inside the GEMM's tile loads.
//  * PTX ISA, warp-level mma.sync m16n8k16 and ldmatrix fragment layouts;
//    mlir/test/Integration/GPU/CUDA/sm80 and NVGPUToNVVM.cpp for how
//    nvgpu.ldmatrix / nvgpu.device_async_copy lower (ldmatrix needs
//    workgroup memory; device_async_copy with a source element count
//    zero-fills the rest, which pads the gathered A tile for free).
//  * nvgpu.mma.sync cannot lower bf16 operands in MLIR 22
//    (../shared/TOOLCHAIN.md), so the MMA is nvvm.mma.sync on packed i32
//    (bf16) or vector<2xf16> (f16) registers.
//  * IREE's LLVMGPU mma.sync pipeline and CUTLASS's multistage mainloop:
//    S shared-memory buffers, S-1 tiles in flight, one commit per K step
//    (empty groups at the tail keep the wait count constant), one barrier
//    per step; padded shared rows (BK + 8 elements) so that the eight
//    16-byte rows of an ldmatrix hit distinct banks.
//
//===----------------------------------------------------------------------===//

#include "LaunchList.h"
#include "MmaLinear.h"
#include "SpecialKernel.h"
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
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/IR/TypeUtilities.h"

#include <algorithm>
#include <cmath>

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOEEXPERTSTOGPU
#define GEN_PASS_DEF_MOEGPULAUNCHEXPERTKERNELS
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Name of the discardable attribute on the launch declaration.
constexpr StringLiteral kExpertKernelsAttr = "moe.expert_kernels";
/// Threads of the alignment kernel's single block.
constexpr int64_t kAlignThreads = 1024;
/// Warps of a GEMM block by default (2 rows x 2 columns of warps).
constexpr int64_t kGemmWarps = 4;
/// Extra bytes per shared-memory row: ldmatrix rows of one 8x8 matrix then
/// start in different bank groups.
constexpr int64_t kSmemPadBytes = 16;
/// Bytes of one cp.async copy and of one ldmatrix row.
constexpr int64_t kChunkBytes = 16;
/// Static shared memory a block may use without the opt-in attribute.
constexpr int64_t kSmemLimit = 48 * 1024;
/// The compute capability of `sm_XY[a]` as XY (0 if not of that form).
unsigned computeCapability(StringRef chip) {
  unsigned cc = 0;
  if (chip.consume_front("sm_"))
    chip.take_while(llvm::isDigit).getAsInteger(10, cc);
  return cc;
}

/// Dynamic shared memory a block may ask for (the runtime sets the
/// function's opt-in attribute above 48 KiB, after checking the device's
/// maximum): the opt-in maximum of the target chip, a hardware fact (CUDA
/// C++ Programming Guide, "Technical Specifications per Compute
/// Capability"): 227 KiB for compute capability 9.0 and 10.x, 163 KiB for
/// 8.0 and 8.7, else 99 KiB (8.6, 8.9, 12.x: the smallest, also for chips
/// not named here). A cubin runs only on its own compute capability.
int64_t maxDynamicSmem(StringRef chip) {
  unsigned cc = computeCapability(chip);
  if (cc == 90 || (cc >= 100 && cc < 110))
    return 227 * 1024;
  if (cc == 80 || cc == 87)
    return 163 * 1024;
  return 99 * 1024;
}

/// The tile configuration of one moe.experts op.
struct Tiles {
  int64_t bm = 0, bn1 = 0, bn2 = 0, bk1 = 0, bk2 = 0, stages = 0;
  /// The block's warps as warpsM (rows) x warpsN (columns), each a
  /// BM / warpsM x BN / warpsN tile of the output.
  int64_t warpsM = 2, warpsN = 2;
  int64_t threads() const { return 32 * warpsM * warpsN; }
  /// sm_90a warpgroup MMAs (wgmma.mma_async, operands read from shared
  /// memory through matrix descriptors) instead of ldmatrix + mma.sync:
  /// one warpgroup (4 warps, 64 rows) per 64 rows of the tile, each warp
  /// holding 16 rows x BN of the accumulators, as mma.sync's m16n8 layout.
  bool wgmma = false;
  /// Slices of the down reduction (F), each a block of its own that adds
  /// its partial sum with the atomics (atomic combine only; 1: none).
  int64_t splitK = 1;
  /// The atomic combine adds a lane's two adjacent columns with one vector
  /// reduction (`red.global.add.v2.f32`, sm_90 and newer) instead of two
  /// scalar f32 atomics.
  bool vectorRed = false;
};

/// Where the down kernel's rows go: the T x K x H slots result (`None`),
/// or, with the moe.combine that reads them fused in, straight into the
/// combine's sum: f32 atomics into a T x H accumulator (`Atomic`), or rows
/// in sorted order that a per-token kernel gathers and sums (`Gather`).
enum class CombineMode { None, Atomic, Gather };

/// What the kernels need to know about the op.
struct Layer {
  int64_t e = 0, h = 0, f = 0, k = 0, offset = 0;
  Type elt;
  Activation act;
  bool gated = false;
  /// swiglu_clamped constants.
  double alpha = 1.702, limit = 7.0;
  /// Expert biases (E x F gate and up, E x H down), of these element types
  /// (null: no such bias); added in f32 in the GEMM epilogues.
  Type gateBias, upBias, downBias;
  CombineMode combine = CombineMode::None;
  /// With a fused combine: the element types of its result and addends,
  /// and of its bias (H, added to every row; null: none).
  Type outElt;
  SmallVector<Type> addendElts;
  Type biasElt;
  /// A shared expert fused into the grid (atomic combine): the FFN that made
  /// the combine's addend number `sharedAddend` (-1: none), of width
  /// `sharedSlices` x F, becomes experts E .. E + slices - 1, slice c being
  /// its columns c F .. (c + 1) F - 1 (an FFN is the sum of its column
  /// slices' FFNs); every token t selects slice c as pair T*K + c T + t,
  /// weight 1; its weights are separate kernel arguments.
  int64_t sharedAddend = -1, sharedSlices = 0;
  /// A sigmoid-gated shared expert (Qwen2-MoE `gate_weight`): its pairs'
  /// weight is g_t = sigmoid(logit_t), the logits (T x 1 f32, a moe.linear
  /// made before the kernels) an extra argument of down; weight 1 without.
  bool sharedGated = false;
  bool shared() const { return sharedAddend >= 0; }
  /// The op's `input_scale` (Llama 4): gate_up takes the T x K scales (an
  /// argument after its biases) and multiplies a routed pair's gate and up
  /// sums by its scale before the biases and the activation (W (s x) =
  /// s (W x)); the shared expert's pairs are not scaled.
  bool inputScale = false;
  /// The fused combine has no weights (its slots summed with weight 1, as
  /// after `scale_input`): down and reduce take weight 1 for routed pairs
  /// and the weights argument carries the input scales (unread).
  bool unitWeights = false;
  /// Every routed pair selects expert `offset` (a shared expert made a
  /// one-expert set: its indices a splat): align does not read the
  /// indices, and the host passes an uninitialised buffer for them instead
  /// of filling a splat (a generic kernel).
  bool uniformExpert = false;
  /// Experts the alignment counts (E, + the shared slices).
  int64_t experts() const { return e + (shared() ? sharedSlices : 0); }
  /// Row tiles per group of the GEMM grids' block order (0: from the grid
  /// at run time; 1: no grouping), see `groupedBlock`.
  int64_t groupM = 0;
  /// wgmma tiles of 128-byte rows (BK 64 of bf16/f16) in dynamic shared
  /// memory take the 128-byte swizzled layout (see buildGemmKernel).
  bool wgmmaSwizzle = true;
  /// Swizzled wgmma kernels load their weight tiles by TMA
  /// (cp.async.bulk.tensor with an mbarrier per stage) instead of cp.async
  /// (see `usesTma`).
  bool tma = false;
  /// A moe.linear on these kernels (GemmKind::Linear, MmaLinear.h): E = 1,
  /// F the input features (the reduction), H the outputs, `outElt` the
  /// result type, `downBias` a bias of H; with the LoRA terms of lora_out:
  /// rank `loraR` (0: none), `loraE` experts from `offset`, B of `loraB`,
  /// K slots. `loraDense`: the A products of every expert densely
  /// (ax : T x E r, f32, from the dense lora_a GEMM), the routing weights
  /// (T x K f32) and `loraScale` (alpha / r) applied here instead of in u.
  int64_t loraR = 0, loraE = 0;
  Type loraB;
  bool loraDense = false;
  double loraScale = 1.0;
  /// Bytes of one input/weight element.
  int64_t eltBytes() const { return elt.getIntOrFloatBitWidth() / 8; }
  /// f32 experts: mma.sync m16n8k8 on tf32 operands, each f32 value split
  /// into two tf32 values (3xTF32, below) so that the products keep f32
  /// accuracy.
  bool tf32() const { return elt.isF32(); }
  /// Elements in 16 bytes (one cp.async, one ldmatrix row): 8 or 4 (f32).
  int64_t vec() const { return kChunkBytes / eltBytes(); }
  /// The reduction depth of one mma.sync: 16 (m16n8k16) or 8 (tf32
  /// m16n8k8); in both, a lane's A/B register holds 32 bits of one row.
  int64_t mmaK() const { return 2 * vec(); }
};

/// The down reduction's split for a few tokens: the smallest power of two
/// S (at most 8) that gives `K * (H / BN2) * S >= targetBlocks` blocks at
/// T = 1 (the K pairs of one token fill K tiles), keeping slices of at
/// least 4 K steps that divide the reduction; 1 when no split is needed or
/// possible. From the shape alone: Mixtral (K 2, H/128 = 32 columns, F/32 =
/// 448 steps) gets 8, DeepSeek-V3 (K 8, 56 columns) 2.
int64_t chooseSplitK(const Layer &l, const Tiles &t, int64_t targetBlocks) {
  int64_t cols = l.h / t.bn2, numK = l.f / t.bk2, s = 1;
  while (s < 8 && l.k * cols * s < targetBlocks && numK % (2 * s) == 0 &&
         numK / (2 * s) >= 4)
    s *= 2;
  return s;
}

int64_t smemBytes(int64_t bm, int64_t bn, int64_t bk, int64_t numB,
                  int64_t stages, int64_t eltBytes, int64_t padBytes) {
  return stages * (bm + numB * bn) * (bk * eltBytes + padBytes);
}

/// The tiles' shared memory of one GEMM kernel (gate_up or down).
int64_t gemmTileBytes(const Layer &l, const Tiles &t, bool gateUp) {
  int64_t eltBytes = l.eltBytes();
  // wgmma tiles are unpadded 8 x 16-byte core matrices.
  int64_t pad = t.wgmma ? 0 : kSmemPadBytes;
  if (gateUp)
    return smemBytes(t.bm, t.bn1, t.bk1, l.gated ? 2 : 1, t.stages, eltBytes,
                     pad);
  return smemBytes(t.bm, t.bn2, t.bk2, 1, t.stages, eltBytes, pad);
}

/// Whether a GEMM kernel loads its weight tiles by TMA: asked for (`tma`),
/// and its tiles are the 128-byte swizzled wgmma ones (rows of exactly 128
/// bytes in dynamic shared memory: the layout CU_TENSOR_MAP_SWIZZLE_128B
/// writes), the weights one tensor (no fused shared expert, whose tiles come
/// from its own weights).
bool usesTma(const Layer &l, const Tiles &t, bool gateUp) {
  int64_t bk = gateUp ? t.bk1 : t.bk2;
  return l.tma && t.wgmma && l.wgmmaSwizzle && !l.shared() &&
         bk * l.eltBytes() == 128 && gemmTileBytes(l, t, gateUp) > kSmemLimit;
}

/// Shared memory of one GEMM kernel (gate_up or down) with these tiles (and
/// with TMA, an 8-byte mbarrier per stage after them); above kSmemLimit the
/// kernel takes it as dynamic shared memory.
int64_t gemmSmemBytes(const Layer &l, const Tiles &t, bool gateUp) {
  return gemmTileBytes(l, t, gateUp) +
         (usesTma(l, t, gateUp) ? 8 * t.stages : 0);
}

/// Picks the tiles (options override the shape-derived defaults) or says
/// why the layer cannot take this path.
/// `dynLimit`: the dynamic shared memory allowed (0: static only, 48 KiB);
/// `wide`: BM = 128 tiles default to 128 x 256 outputs (with 8 warps for
/// mma.sync) where that fits.
FailureOr<Tiles> chooseTiles(const Layer &l, int64_t optM, int64_t optN1,
                             int64_t optN2, int64_t optK, int64_t optStages,
                             int64_t optWarps, int64_t dynLimit, bool wgmma,
                             bool wideTiles, std::string &why) {
  Tiles t;
  // f32 experts take tf32 mma.sync tiles whatever is asked (the pass says so
  // with a remark).
  wgmma = wgmma && !l.tf32();
  auto largestDividing = [](int64_t n, ArrayRef<int64_t> candidates) {
    for (int64_t c : candidates)
      if (n % c == 0)
        return c;
    return int64_t(0);
  };
  // Padding per expert is at most BM - 1 rows: with many experts (and so few
  // rows each) the smaller tile wastes less.
  // wgmma: a warpgroup covers 64 rows, so never less.
  t.bm = optM ? optM : (l.e <= 16 || wgmma ? 64 : 32);
  // BM = 128 (many rows) with `wide`: 128 x 256 output tiles (gate and up
  // 128 columns each; wgmma: one m64n256 per warpgroup; mma.sync: 8 warps
  // of 64 x 64; mma.sync down 128 x 128) and BK 64, as CUTLASS's large sm_80
  // (128x256_64x3, 8 warps) and sm_90 GEMM tiles. Each block then reads 85 FLOP
  // per byte of A and B instead of the 43 of the 64 x 128 tiles, whose ~175
  // TFLOP/s on the H100 matches the L2 bandwidth those 43 allow (benchmarks/
  // RESULTS.md, Mixtral prefill profile). Needs more than 99 KiB of shared
  // memory (wgmma 4 stages: 192 KiB; mma.sync 3 padded stages: 162 KiB),
  // so only on chips that allow it.
  // mma.sync: 8 warps as 2 x 4 (each 64 rows x 32 columns per operand, as
  // CUTLASS's 64 x 64 warp tiles): ptxas sm_90 gives gate_up 219-243
  // registers (Mixtral shape; with biases; with a fused shared expert),
  // where 4 x 2 took 241-255. Its columns then come in multiples of 32
  // (so not with explicit column tiles).
  // (Not for f32 experts: their tiles take twice the shared memory, and
  // 3xTF32 twice the fragment registers.)
  bool wide = wideTiles && t.bm == 128 && dynLimit >= 163 * 1024 && !l.tf32() &&
              (wgmma || ((!optWarps || optWarps == 8) && !optN1 && !optN2 &&
                         l.f % 32 == 0 && l.h % 32 == 0));
  static constexpr int64_t k256[] = {256, 128, 64, 32, 16};
  ArrayRef<int64_t> upTo256(k256), upTo128 = upTo256.drop_front(),
                                   upTo64 = upTo128.drop_front(),
                                   upTo32 = upTo64.drop_front();
  t.bn1 = optN1 ? optN1
                : largestDividing(l.f, !wide     ? upTo64
                                       : l.gated ? upTo128
                                                 : upTo256);
  // (mma.sync down: 128 columns; 256 took 254 registers per thread with a
  // down bias, Mixtral shape, at the edge of spilling.)
  t.bn2 =
      optN2 ? optN2 : largestDividing(l.h, wide && wgmma ? upTo256 : upTo128);
  // f32: half the elements, the same bytes per K step.
  ArrayRef<int64_t> bkCandidates = wide ? upTo64 : upTo32;
  if (l.tf32())
    bkCandidates = bkCandidates.drop_front();
  t.bk1 = optK ? optK : largestDividing(l.h, bkCandidates);
  t.bk2 = optK ? optK : largestDividing(l.f, bkCandidates);
  llvm::raw_string_ostream os(why);
  if (t.bm != 16 && t.bm != 32 && t.bm != 64 && t.bm != 128) {
    os << "tile-m must be 16, 32, 64 or 128 (got " << t.bm << ")";
    return failure();
  }
  // 4 warps: 2 x 2; 8 warps: 4 x 2 where each warp keeps 16 rows or more
  // (BM >= 64), else 2 x 4; wide: 2 x 4. BM = 16 (a single m16 row of
  // warps): 1 x 4.
  int64_t warps = optWarps ? optWarps : wide && !wgmma ? 8 : kGemmWarps;
  if (warps != 4 && warps != 8) {
    os << "warps must be 4 or 8 (got " << warps << ")";
    return failure();
  }
  if (t.bm == 16 && warps != 4) {
    os << "tile-m 16 takes 4 warps (1 x 4)";
    return failure();
  }
  t.warpsM = t.bm == 16 ? 1 : wide ? 2 : warps == 8 && t.bm >= 64 ? 4 : 2;
  t.warpsN = warps / t.warpsM;
  if (wgmma) {
    // A warpgroup per 64 rows; its warps own 16 rows each, all columns.
    if (t.bm != 64 && t.bm != 128) {
      os << "wgmma tiles need BM 64 or 128 (got " << t.bm << ")";
      return failure();
    }
    if (optWarps) {
      os << "wgmma tiles take one warpgroup per 64 rows (warps is not "
         << "for them)";
      return failure();
    }
    t.wgmma = true;
    t.warpsM = t.bm / 16;
    t.warpsN = 1;
  }
  // Each warp's columns are BN / warpsN, a multiple of 8 (an m16n8 MMA;
  // wgmma: N <= 256, gate and up one wgmma).
  int64_t colStep = std::max<int64_t>(16, 8 * t.warpsN);
  if (t.wgmma && ((l.gated ? 2 : 1) * t.bn1 > 256 || t.bn2 > 256)) {
    os << "wgmma column tiles are at most 256 (gate and up together)";
    return failure();
  }
  if (!t.bn1 || t.bn1 % colStep || l.f % t.bn1) {
    os << "F = " << l.f << " has no gate/up column tile (multiple of "
       << colStep << " dividing F)";
    return failure();
  }
  if (!t.bn2 || t.bn2 % colStep || l.h % t.bn2) {
    os << "H = " << l.h << " has no down column tile (multiple of " << colStep
       << " dividing H)";
    return failure();
  }
  for (auto [bk, n, name] : {std::tuple{t.bk1, l.h, "H"},
                             std::tuple{t.bk2, l.f, "F"}}) {
    if (!bk || (bk != 16 && bk != 32 && bk != 64 && bk != 128) || n % bk) {
      os << name << " = " << n << " is not a multiple of the reduction tile "
         << "(16, 32, 64 or 128)";
      return failure();
    }
  }
  int64_t limit = std::max(dynLimit, kSmemLimit);
  auto fits = [&](int64_t s) {
    Tiles staged = t;
    staged.stages = s;
    return gemmSmemBytes(l, staged, true) <= limit &&
           gemmSmemBytes(l, staged, false) <= limit;
  };
  // Three stages (two K steps in flight while one is computed), in dynamic
  // shared memory where they need more than 48 KiB (BM = 128: 60 KiB for
  // the Mixtral shape); two only without it.
  // wgmma keeps one K step fewer of copies in flight (the previous step's
  // MMAs still read their slot): 4 stages where they fit give it the two
  // the mma.sync kernels have with 3.
  if (optStages)
    t.stages = optStages;
  else if (t.wgmma && fits(4))
    t.stages = 4;
  else
    t.stages = fits(3) ? 3 : 2;
  if (t.stages < 2 || t.stages > 4) {
    os << "stages must be 2, 3 or 4 (got " << t.stages << ")";
    return failure();
  }
  if (!fits(t.stages)) {
    os << "the tiles need more than " << limit / 1024
       << " KiB of shared memory";
    return failure();
  }
  if (t.wgmma && t.stages < 3) {
    os << "wgmma tiles need 3 or 4 stages (a K step's MMAs stay in flight "
       << "while the next copies are issued)";
    return failure();
  }
  return t;
}

/// Index arithmetic and constants inside the kernels.
struct KB {
  ImplicitLocOpBuilder &b;
  Value c(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value i32(int64_t v) {
    return arith::ConstantOp::create(b, b.getI32IntegerAttr(v));
  }
  Value f32(double v) {
    return arith::ConstantOp::create(b, b.getF32FloatAttr(v));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value add(Value x, int64_t y) { return y ? add(x, c(y)) : x; }
  Value mul(Value x, int64_t y) { return arith::MulIOp::create(b, x, c(y)); }
  Value div(Value x, int64_t y) { return arith::DivUIOp::create(b, x, c(y)); }
  Value rem(Value x, int64_t y) { return arith::RemUIOp::create(b, x, c(y)); }
  Value toIndex(Value v) {
    return arith::IndexCastOp::create(b, b.getIndexType(), v);
  }
  Value toI32(Value v) { return arith::IndexCastOp::create(b, b.getI32Type(), v); }
  Value load(Value m, ValueRange idx) { return memref::LoadOp::create(b, m, idx); }
  void store(Value v, Value m, ValueRange idx) {
    memref::StoreOp::create(b, v, m, idx);
  }
  Value cmp(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, p, x, y);
  }
  /// `for (i = lb; i < ub; i += step) body(i)` without results.
  void loop(Value lb, Value ub, Value step, function_ref<void(Value)> body) {
    scf::ForOp::create(b, lb, ub, step, ValueRange{},
                       [&](OpBuilder &nb, Location loc, Value iv, ValueRange) {
                         OpBuilder::InsertionGuard g(b);
                         b.setInsertionPoint(nb.getInsertionBlock(),
                                             nb.getInsertionPoint());
                         body(iv);
                         scf::YieldOp::create(b);
                       });
  }
  void ifThen(Value cond, function_ref<void()> then,
              function_ref<void()> otherwise = nullptr) {
    auto op = scf::IfOp::create(b, cond, /*withElseRegion=*/bool(otherwise));
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&op.getThenRegion().front());
      then();
    }
    if (otherwise) {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&op.getElseRegion().front());
      otherwise();
    }
  }
};

/// The activation on f32 values, as convert-moe-to-linalg computes it
/// (MOE_SEMANTICS §3); swiglu_clamped in the C++ reference's order:
/// (clamp(u, -limit, limit) + 1) * min(g, limit) * sigmoid(alpha * min(g, limit)).
Value activate(ImplicitLocOpBuilder &b, Activation act, Value gate, Value up,
               double alpha, double limit) {
  KB k{b};
  auto sigmoid = [&](Value x) {
    Value e = math::ExpOp::create(b, arith::NegFOp::create(b, x));
    return arith::DivFOp::create(b, k.f32(1.0),
                                 arith::AddFOp::create(b, k.f32(1.0), e));
  };
  auto gelu = [&](Value x) {
    Value s = arith::MulFOp::create(b, x, k.f32(M_SQRT1_2));
    Value t = arith::AddFOp::create(b, k.f32(1.0), math::ErfOp::create(b, s));
    return arith::MulFOp::create(b, arith::MulFOp::create(b, k.f32(0.5), x),
                                 t);
  };
  auto geluTanh = [&](Value x) {
    Value x3 = arith::MulFOp::create(b, arith::MulFOp::create(b, x, x), x);
    Value inner = arith::AddFOp::create(
        b, x, arith::MulFOp::create(b, k.f32(0.044715), x3));
    Value th = math::TanhOp::create(
        b, arith::MulFOp::create(b, k.f32(std::sqrt(2.0 / M_PI)), inner));
    Value t = arith::AddFOp::create(b, k.f32(1.0), th);
    return arith::MulFOp::create(b, arith::MulFOp::create(b, k.f32(0.5), x),
                                 t);
  };
  switch (act) {
  case Activation::swiglu:
    return arith::MulFOp::create(
        b, arith::MulFOp::create(b, gate, sigmoid(gate)), up);
  case Activation::geglu:
    return arith::MulFOp::create(b, gelu(gate), up);
  case Activation::gelu:
    return gelu(up);
  case Activation::gelu_tanh:
    return geluTanh(up);
  case Activation::relu:
    return arith::MaximumFOp::create(b, up, k.f32(0.0));
  case Activation::relu2: {
    Value r = arith::MaximumFOp::create(b, up, k.f32(0.0));
    return arith::MulFOp::create(b, r, r);
  }
  case Activation::swiglu_clamped: {
    Value g = arith::MinimumFOp::create(b, gate, k.f32(limit));
    Value u = arith::MinimumFOp::create(
        b, arith::MaximumFOp::create(b, up, k.f32(-limit)), k.f32(limit));
    Value s = sigmoid(arith::MulFOp::create(b, k.f32(alpha), g));
    return arith::MulFOp::create(
        b,
        arith::MulFOp::create(b, arith::AddFOp::create(b, u, k.f32(1.0)), g),
        s);
  }
  }
  llvm_unreachable("activation not supported by the expert kernels");
}

MemRefType dynRows(ArrayRef<int64_t> rest, Type elt) {
  SmallVector<int64_t> shape{ShapedType::kDynamic};
  shape.append(rest.begin(), rest.end());
  return MemRefType::get(shape, elt);
}

MemRefType workgroup(ArrayRef<int64_t> shape, Type elt) {
  MLIRContext *ctx = elt.getContext();
  return MemRefType::get(
      shape, elt, MemRefLayoutAttrInterface(),
      gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup));
}

/// The buffers that the kernels share (all created by the host code).
struct BufferTypes {
  MemRefType x, idx, gate, up, down, out, sorted, tileExpert, meta, h;
  // Expert biases (null when absent).
  MemRefType gateBias, upBias, downBias;
  // Fused combine: routing weights (T x K), result (T x H), f32 accumulator
  // (T x H, atomics), addends (T x H each), rows in sorted order and each
  // pair's row (gather).
  MemRefType weights, y, acc, rows, pos;
  SmallVector<MemRefType> addends;
  // The combine's bias (H; null when absent).
  MemRefType bias;
  // A fused shared expert's weights (F x H gate and up, H x F down), and
  // the logits of its sigmoid gate (T x 1, f32).
  MemRefType sharedGate, sharedUp, sharedDown, sharedLogit;
};

BufferTypes bufferTypes(const Layer &l, MLIRContext *ctx) {
  BufferTypes t;
  Type i32 = IntegerType::get(ctx, 32), f32 = Float32Type::get(ctx);
  t.x = dynRows({l.h}, l.elt);
  t.idx = dynRows({l.k}, i32);
  t.gate = MemRefType::get({l.e, l.f, l.h}, l.elt);
  t.up = t.gate;
  t.down = MemRefType::get({l.e, l.h, l.f}, l.elt);
  t.out = dynRows({l.k, l.h}, f32);
  t.sorted = dynRows({}, i32);
  t.tileExpert = dynRows({}, i32);
  t.meta = MemRefType::get({1}, i32);
  t.h = dynRows({l.f}, l.elt);
  // The combine's weights, or the input scales (T x K f32 both).
  t.weights = dynRows({l.k}, f32);
  if (l.gateBias)
    t.gateBias = MemRefType::get({l.e, l.f}, l.gateBias);
  if (l.upBias)
    t.upBias = MemRefType::get({l.e, l.f}, l.upBias);
  if (l.downBias)
    t.downBias = MemRefType::get({l.e, l.h}, l.downBias);
  if (l.combine != CombineMode::None) {
    t.y = dynRows({l.h}, l.outElt);
    t.acc = dynRows({l.h}, f32);
    t.rows = dynRows({l.h}, f32);
    t.pos = dynRows({}, i32);
    for (Type a : l.addendElts)
      t.addends.push_back(dynRows({l.h}, a));
    if (l.biasElt)
      t.bias = MemRefType::get({l.h}, l.biasElt);
  }
  if (l.shared()) {
    t.sharedGate = MemRefType::get({l.sharedSlices * l.f, l.h}, l.elt);
    t.sharedUp = t.sharedGate;
    t.sharedDown = MemRefType::get({l.h, l.sharedSlices * l.f}, l.elt);
    if (l.sharedGated)
      t.sharedLogit = dynRows({1}, Float32Type::get(ctx));
  }
  return t;
}

gpu::GPUFuncOp createKernel(OpBuilder &mb, Location loc, StringRef name,
                            TypeRange args, TypeRange workgroups,
                            int32_t threads) {
  auto fn = gpu::GPUFuncOp::create(
      mb, loc, name, FunctionType::get(mb.getContext(), args, {}), workgroups);
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), mb.getUnitAttr());
  fn.setKnownBlockSizeAttr(mb.getDenseI32ArrayAttr({threads, 1, 1}));
  // cp.async (16 bytes) and ldmatrix rows need 16-byte aligned shared
  // addresses; the lowering would otherwise align the buffers to their
  // element type only.
  for (unsigned i = 0; i < workgroups.size(); ++i)
    fn.setWorkgroupAttributionAttr(
        i, StringAttr::get(mb.getContext(), LLVM::LLVMDialect::getAlignAttrName()),
        mb.getI64IntegerAttr(16));
  return fn;
}

//===----------------------------------------------------------------------===//
// align: counts, padded prefix sum, tile table, sorted pair list
//===----------------------------------------------------------------------===//

gpu::GPUFuncOp buildAlignKernel(OpBuilder &mb, Location loc, const Layer &l,
                                const Tiles &t, const BufferTypes &bt) {
  MLIRContext *ctx = mb.getContext();
  Type i32 = IntegerType::get(ctx, 32);
  // Unfused: the slots result (invalid pairs' rows are zeroed here); fused
  // gather: each pair's row in the sorted list (-1: none).
  bool unfused = l.combine == CombineMode::None;
  SmallVector<Type> args{bt.idx};
  if (unfused)
    args.push_back(bt.out);
  args.append({bt.sorted, bt.tileExpert, bt.meta});
  if (l.combine == CombineMode::Gather)
    args.push_back(bt.pos);
  auto fn = createKernel(mb, loc, "align", args,
                         {workgroup({l.experts()}, i32),
                          workgroup({l.experts()}, i32),
                          workgroup({l.experts()}, i32), workgroup({1}, i32)},
                         kAlignThreads);
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  KB k{b};
  unsigned first = unfused ? 2 : 1;
  Value idx = entry.getArgument(0), sorted = entry.getArgument(first),
        tileExpert = entry.getArgument(first + 1),
        meta = entry.getArgument(first + 2);
  Value out = unfused ? entry.getArgument(1) : Value();
  Value pos =
      l.combine == CombineMode::Gather ? entry.getArgument(4) : Value();
  Value counts = fn.getWorkgroupAttributions()[0];
  Value offsets = fn.getWorkgroupAttributions()[1];
  Value cursors = fn.getWorkgroupAttributions()[2];
  Value total = fn.getWorkgroupAttributions()[3];

  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value nt = k.c(kAlignThreads);
  Value numTokens = memref::DimOp::create(b, idx, 0);
  Value routedPairs = arith::MulIOp::create(b, numTokens, k.c(l.k));
  // A fused shared expert: pair T*K + c T + t is token t's, expert E + c.
  Value pairs = l.shared()
                    ? arith::AddIOp::create(b, routedPairs,
                                            k.mul(numTokens, l.sharedSlices))
                    : routedPairs;
  Value zero = k.i32(0), one = k.i32(1);
  Value bm = k.i32(t.bm);

  // The expert of pair p relative to this op, and whether it is one of ours.
  auto expertOf = [&](Value p) -> std::pair<Value, Value> {
    Value isShared, pl = p;
    if (l.shared()) {
      isShared = k.cmp(arith::CmpIPredicate::uge, p, routedPairs);
      pl = arith::SelectOp::create(b, isShared, k.c(0), p);
    }
    Value j = l.uniformExpert ? k.i32(l.offset)
                              : k.load(idx, {k.div(pl, l.k), k.rem(pl, l.k)});
    Value e = arith::SubIOp::create(b, j, k.i32(l.offset));
    Value valid = arith::AndIOp::create(
        b, k.cmp(arith::CmpIPredicate::sge, e, zero),
        k.cmp(arith::CmpIPredicate::slt, e, k.i32(l.e)));
    if (l.shared()) {
      Value slice = k.toI32(arith::DivUIOp::create(
          b, arith::SubIOp::create(b, p, routedPairs), numTokens));
      e = arith::SelectOp::create(
          b, isShared, arith::AddIOp::create(b, k.i32(l.e), slice), e);
      valid = arith::OrIOp::create(b, isShared, valid);
    }
    return {e, valid};
  };
  auto padded = [&](Value c) {
    // ceil(c / BM) * BM
    Value q = arith::DivUIOp::create(
        b, arith::AddIOp::create(b, c, k.i32(t.bm - 1)), bm);
    return arith::MulIOp::create(b, q, bm);
  };

  k.loop(tid, k.c(l.experts()), nt, [&](Value e) {
    k.store(zero, counts, {e});
    k.store(zero, cursors, {e});
  });
  gpu::BarrierOp::create(b);
  // Counts; slots routed to no expert of this op are 0 in the result (a
  // fused combine leaves them out of its sum: no row to zero).
  k.loop(tid, pairs, nt, [&](Value p) {
    std::pair<Value, Value> ev = expertOf(p);
    Value e = ev.first;
    auto invalid = [&] {
      if (pos) {
        k.store(k.i32(-1), pos, {p});
        return;
      }
      Value zeros = arith::ConstantOp::create(
          b, DenseElementsAttr::get(VectorType::get({4}, b.getF32Type()),
                                    0.0f));
      Value tok = k.div(p, l.k), slot = k.rem(p, l.k);
      k.loop(k.c(0), k.c(l.h), k.c(4), [&](Value j) {
        vector::StoreOp::create(b, zeros, out, ValueRange{tok, slot, j},
                                /*nontemporal=*/false, llvm::Align(16));
      });
    };
    auto count = [&] {
      memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addi, one, counts,
                                  ValueRange{k.toIndex(e)});
    };
    if (l.combine == CombineMode::Atomic)
      k.ifThen(ev.second, count);
    else
      k.ifThen(ev.second, count, invalid);
  });
  gpu::BarrierOp::create(b);
  // Exclusive prefix sum of the padded counts (E is small: one thread).
  k.ifThen(k.cmp(arith::CmpIPredicate::eq, tid, k.c(0)), [&] {
    auto loop = scf::ForOp::create(b, k.c(0), k.c(l.experts()), k.c(1),
                                   ValueRange{zero});
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(loop.getBody());
      Value e = loop.getInductionVar(), run = loop.getRegionIterArg(0);
      k.store(run, offsets, {e});
      Value next = arith::AddIOp::create(b, run, padded(k.load(counts, {e})));
      scf::YieldOp::create(b, next);
    }
    Value sum = loop.getResult(0);
    k.store(sum, total, {k.c(0)});
    k.store(arith::DivUIOp::create(b, sum, bm), meta, {k.c(0)});
  });
  gpu::BarrierOp::create(b);
  // Tile table, and -1 in every row of the used tiles.
  k.loop(tid, k.c(l.experts()), nt, [&](Value e) {
    Value start = k.load(offsets, {e});
    Value end = arith::AddIOp::create(b, start, padded(k.load(counts, {e})));
    Value e32 = k.toI32(e);
    k.loop(k.toIndex(arith::DivUIOp::create(b, start, bm)),
           k.toIndex(arith::DivUIOp::create(b, end, bm)), k.c(1),
           [&](Value tile) { k.store(e32, tileExpert, {tile}); });
  });
  Value rows = k.toIndex(k.load(total, {k.c(0)}));
  k.loop(tid, rows, nt, [&](Value r) { k.store(k.i32(-1), sorted, {r}); });
  gpu::BarrierOp::create(b);
  // Scatter: each pair takes the next free row of its expert. The order
  // within an expert depends on the atomics; each row's result does not.
  k.loop(tid, pairs, nt, [&](Value p) {
    std::pair<Value, Value> ev = expertOf(p);
    Value e = ev.first;
    k.ifThen(ev.second, [&] {
      Value ei = k.toIndex(e);
      Value slotPos = memref::AtomicRMWOp::create(
          b, arith::AtomicRMWKind::addi, one, cursors, ValueRange{ei});
      Value row = arith::AddIOp::create(b, k.load(offsets, {ei}), slotPos);
      k.store(k.toI32(p), sorted, {k.toIndex(row)});
      if (pos)
        k.store(row, pos, {p});
    });
  });
  gpu::ReturnOp::create(b);
  return fn;
}

//===----------------------------------------------------------------------===//
// gate_up and down: tensor-core GEMMs over the sorted rows
//===----------------------------------------------------------------------===//

/// lora_out's terms on the tensor-core linear kernel, for token `row`:
/// vals[i] + sum over q < K r of u[row, q / r, q % r] B_e[colOf(i), q % r],
/// e the expert of slot (row, q / r) relative to the op; a slot of no
/// expert of the op adds nothing (its B load is clamped to expert 0 and the
/// product selected away, not multiplied by 0: an infinite B value would
/// give NaN). The terms are summed in f32 in q order, then added.
/// With `l.loraDense`, u[row, s, j] is formed here as lora_a forms it:
/// ax[row, e r + j] (w[row, s] alpha / r), `u` being ax and `weights` w.
SmallVector<Value> addLoRATerms(ImplicitLocOpBuilder &b, KB &k, const Layer &l,
                                Value idx, Value u, Value weights, Value bw,
                                Value row, function_ref<Value(int64_t)> colOf,
                                ArrayRef<Value> vals) {
  Type f32 = b.getF32Type();
  Value zero = k.f32(0.0);
  SmallVector<Value> init(vals.size(), zero);
  auto loop =
      scf::ForOp::create(b, k.c(0), k.c(l.k * l.loraR), k.c(1), init);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value q = loop.getInductionVar();
    Value slot = k.div(q, l.loraR), rank = k.rem(q, l.loraR);
    Value e = arith::SubIOp::create(b, k.load(idx, {row, slot}),
                                    k.i32(l.offset));
    // Unsigned: a negative id is past E too.
    Value ok = k.cmp(arith::CmpIPredicate::ult, e, k.i32(l.loraE));
    Value ei = k.toIndex(arith::SelectOp::create(b, ok, e, k.i32(0)));
    Value uv;
    if (l.loraDense) {
      Value scaled = arith::MulFOp::create(
          b, k.load(weights, {row, slot}),
          k.f32(static_cast<float>(l.loraScale)));
      uv = arith::MulFOp::create(
          b, k.load(u, {row, k.add(k.mul(ei, l.loraR), rank)}), scaled);
    } else {
      uv = k.load(u, {row, slot, rank});
    }
    SmallVector<Value> acc(loop.getRegionIterArgs());
    for (size_t i = 0; i < vals.size(); ++i) {
      Value bv = k.load(bw, {ei, colOf(i), rank});
      if (!bv.getType().isF32())
        bv = arith::ExtFOp::create(b, f32, bv);
      acc[i] = arith::AddFOp::create(
          b, acc[i],
          arith::SelectOp::create(b, ok, arith::MulFOp::create(b, uv, bv),
                                  zero));
    }
    scf::YieldOp::create(b, acc);
  }
  SmallVector<Value> out;
  for (auto [v, t] : llvm::zip(vals, loop.getResults()))
    out.push_back(arith::AddFOp::create(b, v, t));
  return out;
}

/// gate_up and down of an expert set, or a moe.linear's GEMM (the token
/// rows in order, one weight; MmaLinear.h).
enum class GemmKind { GateUp, Down, Linear };

/// Bytes of the A rows (x or h) that the row tiles of one block-order group
/// may hold in L2 together: 16 MiB, under half of the smallest L2 of the
/// targeted data-center chips (A100 40 MB, H100 50 MB).
constexpr int64_t kGroupABytes = 16 << 20;

/// The (row tile, column block) of this block in grouped order (the "L2
/// cache optimization" of Triton's matmul tutorial, GROUP_SIZE_M of its
/// and vLLM's fused_moe kernels; no code from them). Blocks start in
/// linear order (x fastest); in the plain order (x = row tile) the blocks in
/// flight cover every row tile for a few column blocks, so the A rows (the
/// gathered x, or h, T * K rows) are streamed through L2 once per few
/// columns, from HBM when they do not fit. Grouped, consecutive linear ids
/// walk G row tiles x all columns, row tile fastest: the blocks in flight
/// share G row tiles of A and a few columns of B. G is `groupM`, or at run
/// time ceil(grid x / experts) (the average row tiles of one expert: a
/// group then reads about one expert's weights once), at most what keeps
/// G row tiles of A within kGroupABytes. A bijection of the grid: every
/// full group maps its G x gy ids onto its row tiles x columns, the last
/// (partial) group likewise with its size.
std::pair<Value, Value> groupedBlock(ImplicitLocOpBuilder &b, KB &k,
                                     const Layer &l, int64_t bm, int64_t reduce,
                                     Value bx, Value by) {
  Value gx = gpu::GridDimOp::create(b, gpu::Dimension::x);
  Value gy = gpu::GridDimOp::create(b, gpu::Dimension::y);
  Value group;
  if (l.groupM > 0) {
    group = k.c(l.groupM);
  } else {
    int64_t maxGroup =
        std::max<int64_t>(1, kGroupABytes / (bm * reduce * l.eltBytes()));
    group = arith::MinUIOp::create(
        b,
        arith::MaxUIOp::create(
            b, k.div(k.add(gx, l.experts() - 1), l.experts()), k.c(1)),
        k.c(maxGroup));
  }
  Value linear = arith::AddIOp::create(b, arith::MulIOp::create(b, by, gx), bx);
  Value perGroup = arith::MulIOp::create(b, group, gy);
  Value first = arith::MulIOp::create(
      b, arith::DivUIOp::create(b, linear, perGroup), group);
  Value size =
      arith::MinUIOp::create(b, arith::SubIOp::create(b, gx, first), group);
  Value r = arith::RemUIOp::create(b, linear, perGroup);
  Value tile =
      arith::AddIOp::create(b, first, arith::RemUIOp::create(b, r, size));
  return {tile, arith::DivUIOp::create(b, r, size)};
}

gpu::GPUFuncOp buildGemmKernel(OpBuilder &mb, Location loc, GemmKind kind,
                               const Layer &l, const Tiles &t,
                               const BufferTypes &bt,
                               StringRef linearName = "linear_mma") {
  MLIRContext *ctx = mb.getContext();
  bool gateUp = kind == GemmKind::GateUp;
  // Linear: as down (F the reduction, H the columns, one B operand), its A
  // rows the tokens in order (no sorted list, no expert table), stored
  // rounded to the result type.
  bool linear = kind == GemmKind::Linear;
  int64_t numB = gateUp && l.gated ? 2 : 1;
  int64_t bm = t.bm, bn = gateUp ? t.bn1 : t.bn2, bk = gateUp ? t.bk1 : t.bk2;
  int64_t stages = t.stages;
  int64_t reduce = gateUp ? l.h : l.f;
  // Down with split-K: each block reduces numK K steps starting at kBegin.
  int64_t splitK = gateUp ? 1 : t.splitK;
  int64_t numK = reduce / bk / splitK;
  int64_t ldsm = bk + kSmemPadBytes / l.eltBytes();
  // Elements per 16-byte chunk, and per MMA K step.
  int64_t vec = l.vec(), mmaK = l.mmaK();
  int64_t wm = bm / t.warpsM, wn = bn / t.warpsN;
  int64_t threads = t.threads();
  int64_t mTiles = wm / 16, nTiles = wn / 8;

  SmallVector<Type> args;
  Type i32 = IntegerType::get(ctx, 32), f32Ty = Float32Type::get(ctx);
  if (linear) {
    // x, W, [bias], [indices, u, B], y: the warp-per-output kernel's order.
    args.push_back(dynRows({l.f}, l.elt));
    args.push_back(MemRefType::get({l.h, l.f}, l.elt));
    if (l.downBias)
      args.push_back(MemRefType::get({l.h}, l.downBias));
    if (l.loraR) {
      args.push_back(dynRows({l.k}, i32));
      if (l.loraDense) {
        args.push_back(dynRows({l.k}, f32Ty));
        args.push_back(dynRows({l.loraE * l.loraR}, f32Ty));
      } else {
        args.push_back(dynRows({l.k, l.loraR}, f32Ty));
      }
      args.push_back(MemRefType::get({l.loraE, l.h, l.loraR}, l.loraB));
    }
    args.push_back(dynRows({l.h}, l.outElt));
  } else if (gateUp) {
    args.push_back(bt.x);
    if (l.gated)
      args.push_back(bt.gate);
    args.push_back(bt.up);
    if (l.gateBias)
      args.push_back(bt.gateBias);
    if (l.upBias)
      args.push_back(bt.upBias);
    if (l.inputScale)
      args.push_back(bt.weights);
  } else {
    args.push_back(bt.h);
    args.push_back(bt.down);
    if (l.downBias)
      args.push_back(bt.downBias);
  }
  if (!linear)
    args.append({bt.sorted, bt.tileExpert, bt.meta});
  bool atomic = l.combine == CombineMode::Atomic;
  if (linear) {
    // (The result is already in place.)
  } else if (gateUp) {
    // Atomic combine: gate_up also sets the accumulator to the sum of the
    // addends (0 without), so that down can add into it.
    args.push_back(bt.h);
    if (atomic) {
      args.push_back(bt.acc);
      args.append(bt.addends.begin(), bt.addends.end());
      if (l.biasElt)
        args.push_back(bt.bias);
    }
  } else if (atomic) {
    args.append({bt.weights, bt.acc});
  } else {
    args.push_back(l.combine == CombineMode::Gather ? bt.rows : bt.out);
  }
  // A fused shared expert's weights, last.
  if (l.shared()) {
    if (gateUp) {
      if (l.gated)
        args.push_back(bt.sharedGate);
      args.push_back(bt.sharedUp);
    } else {
      args.push_back(bt.sharedDown);
      if (l.sharedGated)
        args.push_back(bt.sharedLogit);
    }
  }
  // TMA for the weight tiles (usesTma): the host passes one tensor map per
  // B operand (i64 device addresses, the last arguments); each stage has an
  // mbarrier (8 bytes after the tiles) that thread 0 arms with the stage's
  // bytes and the TMA completes; every thread waits on it before the MMAs.
  bool tma = !linear && usesTma(l, t, gateUp);
  if (tma)
    args.append(numB, IntegerType::get(ctx, 64));
  // The A tile's buffers, then each B tile's: workgroup attributions, or
  // views of the dynamic shared memory where they need more than 48 KiB.
  // wgmma: [stage][row / 8][k / 8][8 x 8 core matrix], each core matrix
  // 8 rows of 16 bytes, contiguous (the no-swizzle K-major canonical
  // layout of the PTX ISA's matrix descriptors); or, with rows of exactly
  // 128 bytes (BK 64) in dynamic shared memory, the 128-byte swizzle:
  // [stage][row][BK], the 16-byte chunk c of row r stored at chunk
  // c ^ (r % 8), every buffer 1024-byte aligned (the swizzle repeats every
  // 8 rows of 128 bytes and XORs address bits 4-6 with bits 7-9, so the
  // tiles must start on such a boundary; the dynamic shared memory symbol is
  // aligned to 1024 by moe-nvvm-extern-dynamic-smem and each buffer is a
  // multiple of 1024 bytes). As CUTLASS's and DeepGEMM's SW128 K-major
  // tiles, from which their Hopper GEMMs feed wgmma; whether the no-swizzle
  // layout costs anything on an H100 is not measured (bench variant
  // wgmma-noswz).
  bool dynamicSmem = gemmSmemBytes(l, t, gateUp) > kSmemLimit;
  bool swizzle =
      t.wgmma && l.wgmmaSwizzle && dynamicSmem && bk * l.eltBytes() == 128;
  assert(!tma || swizzle);
  auto stageType = [&](int64_t rows) {
    if (swizzle)
      return workgroup({stages, rows, bk}, l.elt);
    if (t.wgmma)
      return workgroup({stages, rows / 8, bk / 8, 64}, l.elt);
    return workgroup({stages, rows, ldsm}, l.elt);
  };
  // wgmma with gate and up: one B buffer, gate's BN rows then up's, so that
  // one wgmma of N = 2 BN computes both (A is read from shared memory once,
  // not twice). `wgN`: the N of one wgmma; `numStructs`: its accumulator
  // structs.
  bool fusedB = t.wgmma && numB == 2;
  int64_t wgN = fusedB ? 2 * bn : bn, numStructs = fusedB ? 1 : numB;
  SmallVector<MemRefType> wg{stageType(bm)};
  for (int64_t i = 0; i < (fusedB ? 1 : numB); ++i)
    wg.push_back(stageType(fusedB ? 2 * bn : bn));
  SmallVector<Type> attributions;
  if (!dynamicSmem)
    attributions.append(wg.begin(), wg.end());
  auto fn = createKernel(mb, loc,
                         gateUp ? StringRef("gate_up")
                         : linear ? linearName
                                  : StringRef("down"),
                         args, attributions, threads);

  Block &entry = fn.getBody().front();
  Value aSrc = entry.getArgument(0);
  SmallVector<Value> bSrc;
  for (int64_t i = 0; i < numB; ++i)
    bSrc.push_back(entry.getArgument(1 + i));
  unsigned next = 1 + numB;
  // Biases (after the weights): gate_up's gate and up, down's down.
  Value gateBiasArg, upBiasArg, downBiasArg, inputScale;
  if (gateUp) {
    if (l.gateBias)
      gateBiasArg = entry.getArgument(next++);
    if (l.upBias)
      upBiasArg = entry.getArgument(next++);
    if (l.inputScale)
      inputScale = entry.getArgument(next++);
  } else if (l.downBias) {
    downBiasArg = entry.getArgument(next++);
  }
  Value sorted, tileExpert, meta, result, loraIdx, loraW, loraU, loraB;
  if (linear) {
    if (l.loraR) {
      loraIdx = entry.getArgument(next++);
      if (l.loraDense)
        loraW = entry.getArgument(next++);
      loraU = entry.getArgument(next++);
      loraB = entry.getArgument(next++);
    }
    result = entry.getArgument(next);
  } else {
    sorted = entry.getArgument(next);
    tileExpert = entry.getArgument(next + 1);
    meta = entry.getArgument(next + 2);
    result = entry.getArgument(next + 3);
  }
  // down with atomics: result is the weights, accTotal the accumulator;
  // gate_up with atomics: accTotal and the addends after h.
  Value accTotal = atomic ? entry.getArgument(next + 4) : Value();
  ValueRange addends =
      atomic && gateUp
          ? ValueRange(entry.getArguments().drop_front(next + 5).take_front(
                l.addendElts.size()))
          : ValueRange();
  Value bias = atomic && gateUp && l.biasElt
                   ? entry.getArgument(next + 5 + l.addendElts.size())
                   : Value();
  SmallVector<Value> sharedB;
  Value sharedLogit;
  if (l.shared()) {
    // The shared weights last (down: then the gate's logits, if gated).
    unsigned end = fn.getFunctionType().getNumInputs();
    if (!gateUp && l.sharedGated)
      sharedLogit = entry.getArgument(--end);
    for (int64_t i = 0; i < numB; ++i)
      sharedB.push_back(entry.getArgument(end - numB + i));
  }
  SmallVector<Value> tmaMaps;
  if (tma)
    for (int64_t i = 0; i < numB; ++i)
      tmaMaps.push_back(
          entry.getArgument(fn.getFunctionType().getNumInputs() - numB + i));
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  KB k{b};
  SmallVector<Value> smem;
  Value barriers; // with TMA: memref<stages x i64> in shared memory
  if (dynamicSmem) {
    // One i8 buffer (the lowering aligns it to 16 bytes), viewed as the
    // typed buffers back to back; each size is a multiple of 16 bytes
    // (rows of BK elements + 16 bytes, BK a multiple of 16).
    auto bytes = MemRefType::get(
        {ShapedType::kDynamic}, b.getI8Type(), MemRefLayoutAttrInterface(),
        gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup));
    Value base = gpu::DynamicSharedMemoryOp::create(b, bytes);
    int64_t offset = 0;
    for (MemRefType type : wg) {
      smem.push_back(
          memref::ViewOp::create(b, type, base, k.c(offset), ValueRange{}));
      offset += type.getNumElements() * type.getElementTypeBitWidth() / 8;
    }
    if (tma)
      barriers = memref::ViewOp::create(b, workgroup({stages}, b.getI64Type()),
                                        base, k.c(offset), ValueRange{});
  } else {
    llvm::append_range(smem, fn.getWorkgroupAttributions());
  }
  Value sA = smem[0];
  SmallVector<Value> sB(smem.begin() + 1, smem.end());
  // The buffer and 8-row-group offset of B operand i's tile.
  auto bBuf = [&](int64_t i) { return fusedB ? sB[0] : sB[i]; };
  auto bOff = [&](int64_t i) -> int64_t { return fusedB ? i * bn / 8 : 0; };
  Value blockX = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value blockY = gpu::BlockIdOp::create(b, gpu::Dimension::y);
  Value tile = blockX, nBlock = blockY;
  if (l.groupM != 1)
    std::tie(tile, nBlock) = groupedBlock(b, k, l, bm, reduce, blockX, blockY);
  // Split-K: grid y is (H / BN) x splitK, the column block inner.
  Value split, kBegin;
  if (splitK > 1) {
    split = k.div(nBlock, l.h / bn);
    nBlock = k.rem(nBlock, l.h / bn);
    kBegin = k.mul(split, numK);
  }
  if (atomic && gateUp) {
    // acc = sum of the addends (f32), 4 columns per thread, strided over
    // the whole grid (blocks past the used tiles included). down runs
    // after this kernel on the same stream.
    Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    Value gx = gpu::GridDimOp::create(b, gpu::Dimension::x);
    Value gy = gpu::GridDimOp::create(b, gpu::Dimension::y);
    Value linear =
        arith::AddIOp::create(b, arith::MulIOp::create(b, blockY, gx), blockX);
    Value start = arith::AddIOp::create(b, k.mul(linear, threads), tid);
    Value stride = k.mul(arith::MulIOp::create(b, gx, gy), threads);
    Value quads = k.mul(memref::DimOp::create(b, accTotal, 0), l.h / 4);
    auto v4 = [&](Type t) { return VectorType::get({4}, t); };
    Type f32 = b.getF32Type();
    k.loop(start, quads, stride, [&](Value i) {
      Value row = k.div(i, l.h / 4), col = k.mul(k.rem(i, l.h / 4), 4);
      Value sum = arith::ConstantOp::create(
          b, DenseElementsAttr::get(cast<ShapedType>(v4(f32)), 0.0f));
      for (auto [a, elt] : llvm::zip(addends, l.addendElts)) {
        int64_t bytes = 4 * elt.getIntOrFloatBitWidth() / 8;
        Value v = vector::LoadOp::create(b, v4(elt), a, ValueRange{row, col},
                                         /*nontemporal=*/false,
                                         llvm::Align(bytes));
        if (elt != f32)
          v = arith::ExtFOp::create(b, v4(f32), v);
        sum = arith::AddFOp::create(b, sum, v);
      }
      if (bias) {
        int64_t bytes = 4 * l.biasElt.getIntOrFloatBitWidth() / 8;
        Value v =
            vector::LoadOp::create(b, v4(l.biasElt), bias, ValueRange{col},
                                   /*nontemporal=*/false, llvm::Align(bytes));
        if (l.biasElt != f32)
          v = arith::ExtFOp::create(b, v4(f32), v);
        sum = arith::AddFOp::create(b, sum, v);
      }
      vector::StoreOp::create(b, sum, accTotal, ValueRange{row, col},
                              /*nontemporal=*/false, llvm::Align(16));
    });
  }
  // Linear: ceil(T / BM) row tiles, the grid's x (all used).
  Value numRows = linear ? memref::DimOp::create(b, aSrc, 0) : Value();
  Value usedTiles =
      linear ? arith::CeilDivUIOp::create(b, numRows, k.c(bm)).getResult()
             : k.toIndex(k.load(meta, {k.c(0)}));
  // Blocks past the used tiles (the grid is an upper bound) exit at once.
  k.ifThen(k.cmp(arith::CmpIPredicate::ult, tile, usedTiles), [&] {
    Value expert = linear ? k.c(0) : k.toIndex(k.load(tileExpert, {tile}));
    Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    Value warp = k.div(tid, 32), lane = k.rem(tid, 32);
    Value warpRow = k.mul(k.div(warp, t.warpsN), wm);
    Value warpCol = k.mul(k.rem(warp, t.warpsN), wn);
    Value rowBase = k.mul(tile, bm);
    Value n0 = k.mul(nBlock, bn);
    int64_t chunksPerRow = bk / vec;

    // Shared-memory buffer addresses as i64 (the TMA destinations and
    // barriers, the wgmma descriptors).
    Type i64 = b.getI64Type();
    auto i64c = [&](int64_t v) -> Value {
      return arith::ConstantOp::create(b, b.getI64IntegerAttr(v));
    };
    auto smemBase = [&](Value buf) -> Value {
      return arith::IndexCastUIOp::create(
          b, i64, memref::ExtractAlignedPointerAsIndexOp::create(b, buf));
    };
    // TMA: stage s's mbarrier as a shared pointer, initialised by thread 0
    // (one arrival: its arrive.expect_tx) before any copy is issued.
    Type sharedPtr = LLVM::LLVMPointerType::get(ctx, 3);
    auto barrierOf = [&](Value slot) -> Value {
      Value byte = arith::AddIOp::create(
          b, smemBase(barriers),
          arith::MulIOp::create(b, arith::IndexCastUIOp::create(b, i64, slot),
                                i64c(8)));
      return LLVM::IntToPtrOp::create(b, sharedPtr, byte);
    };
    Value isFirstThread;
    if (tma) {
      isFirstThread = k.cmp(arith::CmpIPredicate::eq, tid, k.c(0));
      k.ifThen(isFirstThread, [&] {
        for (int64_t s = 0; s < stages; ++s)
          NVVM::MBarrierInitOp::create(b, barrierOf(k.c(s)), k.i32(1), Value());
        NVVM::FenceMbarrierInitOp::create(b);
      });
      gpu::BarrierOp::create(b);
    }

    // Each thread's 16-byte chunks of the A tile: shared row and column,
    // source row (gathered token, or h row) and how many elements are real
    // (0 for a padding row: cp.async fills zeros).
    // A tile with fewer chunks than threads (small BN x BK) leaves the last
    // threads idle: `active` guards their copies, their addresses are
    // clamped into the tile.
    struct Chunk {
      Value row, col, srcRow, srcElems, active;
    };
    auto chunkOf = [&](int64_t i, int64_t total) {
      Value c = k.add(tid, i * threads);
      Chunk ch;
      if ((i + 1) * threads > total) {
        ch.active = k.cmp(arith::CmpIPredicate::ult, c, k.c(total));
        c = arith::MinUIOp::create(b, c, k.c(total - 1));
      }
      ch.row = k.div(c, chunksPerRow);
      ch.col = k.mul(k.rem(c, chunksPerRow), vec);
      return ch;
    };
    auto iterations = [&](int64_t total) {
      return (total + threads - 1) / threads;
    };
    SmallVector<Chunk> aChunks, bChunks;
    for (int64_t i = 0, e = iterations(bm * chunksPerRow); i < e; ++i) {
      Chunk ch = chunkOf(i, bm * chunksPerRow);
      Value sortedRow = k.add(rowBase, ch.row);
      if (gateUp) {
        Value p = k.load(sorted, {sortedRow});
        Value valid = k.cmp(arith::CmpIPredicate::sge, p, k.i32(0));
        Value tok = arith::DivUIOp::create(b, p, k.i32(l.k));
        if (l.shared()) {
          // Pair T*K + c T + t: token t's row of a shared slice.
          Value numT = k.toI32(memref::DimOp::create(b, aSrc, 0));
          Value tk = arith::MulIOp::create(b, numT, k.i32(l.k));
          tok = arith::SelectOp::create(
              b, k.cmp(arith::CmpIPredicate::sge, p, tk),
              arith::RemUIOp::create(b, arith::SubIOp::create(b, p, tk), numT),
              tok);
        }
        ch.srcRow = k.toIndex(arith::SelectOp::create(b, valid, tok, k.i32(0)));
        ch.srcElems = arith::SelectOp::create(b, valid, k.c(vec), k.c(0));
      } else if (linear) {
        // Token rows past T: zeros, from row 0.
        Value valid = k.cmp(arith::CmpIPredicate::ult, sortedRow, numRows);
        ch.srcRow = arith::SelectOp::create(b, valid, sortedRow, k.c(0));
        ch.srcElems = arith::SelectOp::create(b, valid, k.c(vec), k.c(0));
      } else {
        ch.srcRow = sortedRow;
      }
      aChunks.push_back(ch);
    }
    for (int64_t i = 0, e = iterations(bn * chunksPerRow); i < e; ++i) {
      Chunk ch = chunkOf(i, bn * chunksPerRow);
      ch.srcRow = arith::AddIOp::create(b, n0, ch.row);
      bChunks.push_back(ch);
    }

    // Issues the copies of K step `kt` (of this block's slice) into buffer
    // `slot`.
    auto loadStage = [&](Value slot, Value kt) {
      if (kBegin)
        kt = arith::AddIOp::create(b, kBegin, kt);
      Value k0 = arith::MulIOp::create(b, kt, k.c(bk));
      // `colOff`: added to the source column (a shared slice of down).
      // `rowGroupOff`: 8-row groups before the chunk's row in `dst` (up's
      // rows in the fused gate/up buffer).
      auto copy = [&](const Chunk &ch, Value dst, Value src,
                      SmallVector<Value> srcIdx, Value colOff = Value(),
                      int64_t rowGroupOff = 0) {
        auto emit = [&] {
          Value col = arith::AddIOp::create(b, k0, ch.col);
          if (colOff)
            col = arith::AddIOp::create(b, col, colOff);
          srcIdx.push_back(col);
          SmallVector<Value> dstIdx{slot, ch.row, ch.col};
          if (swizzle)
            dstIdx = {slot, k.add(ch.row, 8 * rowGroupOff),
                      k.mul(arith::XOrIOp::create(b, k.div(ch.col, 8),
                                                  k.rem(ch.row, 8)),
                            8)};
          else if (t.wgmma)
            dstIdx = {slot, k.add(k.div(ch.row, 8), rowGroupOff),
                      k.div(ch.col, 8), k.mul(k.rem(ch.row, 8), 8)};
          nvgpu::DeviceAsyncCopyOp::create(b, dst, dstIdx, src, srcIdx,
                                           b.getIndexAttr(vec), ch.srcElems,
                                           b.getUnitAttr());
        };
        if (ch.active)
          k.ifThen(ch.active, emit);
        else
          emit();
      };
      for (const Chunk &ch : aChunks)
        copy(ch, sA, aSrc, {ch.srcRow});
      auto routedB = [&] {
        for (int64_t i = 0; i < numB; ++i)
          for (const Chunk &ch : bChunks)
            copy(ch, bBuf(i), bSrc[i],
                 linear ? SmallVector<Value>{ch.srcRow}
                        : SmallVector<Value>{expert, ch.srcRow},
                 Value(), bOff(i));
      };
      if (tma) {
        // Thread 0 arms the stage's barrier with the bytes of its B tiles
        // and issues one TMA box [1, BN, BK] per operand at (expert, n0, k0)
        // into the slot (up's rows after gate's in the fused buffer), the
        // 128-byte swizzle applied as the wgmma descriptors expect it.
        k.ifThen(isFirstThread, [&] {
          Value bar = barrierOf(slot);
          NVVM::MBarrierArriveExpectTxOp::create(
              b, Type(), bar, k.i32(numB * bn * bk * l.eltBytes()),
              NVVM::MemScopeKindAttr::get(ctx, NVVM::MemScopeKind::CTA),
              b.getBoolAttr(false), Value());
          Type clusterPtr = LLVM::LLVMPointerType::get(ctx, 7);
          Type globalPtr = LLVM::LLVMPointerType::get(ctx);
          SmallVector<Value> coords{k.toI32(k0), k.toI32(n0), k.toI32(expert)};
          for (int64_t i = 0; i < numB; ++i) {
            Value buf = bBuf(i);
            int64_t stageBytes = (fusedB ? 2 * bn : bn) * bk * l.eltBytes();
            Value dst = arith::AddIOp::create(
                b, smemBase(buf),
                arith::AddIOp::create(
                    b,
                    arith::MulIOp::create(
                        b, arith::IndexCastUIOp::create(b, i64, slot),
                        i64c(stageBytes)),
                    i64c(bOff(i) * 8 * bk * l.eltBytes())));
            Value dstPtr = LLVM::AddrSpaceCastOp::create(
                b, clusterPtr, LLVM::IntToPtrOp::create(b, sharedPtr, dst));
            Value map = LLVM::IntToPtrOp::create(b, globalPtr, tmaMaps[i]);
            NVVM::CpAsyncBulkTensorGlobalToSharedClusterOp::create(
                b, dstPtr, map, coords, bar, ValueRange{}, Value(), Value(),
                NVVM::TMALoadModeAttr::get(ctx, NVVM::TMALoadMode::TILE),
                b.getBoolAttr(false), NVVM::CTAGroupKindAttr(), Value());
          }
        });
        return;
      }
      if (!l.shared()) {
        routedB();
        return;
      }
      // A shared slice's tiles (expert E + c, the same for the whole
      // block) read its weights: gate/up rows c F + n, down columns c F + k.
      k.ifThen(
          k.cmp(arith::CmpIPredicate::uge, expert, k.c(l.e)),
          [&] {
            Value sliceOff =
                k.mul(arith::SubIOp::create(b, expert, k.c(l.e)), l.f);
            for (int64_t i = 0; i < numB; ++i)
              for (const Chunk &ch : bChunks) {
                if (gateUp)
                  copy(ch, bBuf(i), sharedB[i],
                       {arith::AddIOp::create(b, sliceOff, ch.srcRow)}, Value(),
                       bOff(i));
                else
                  copy(ch, bBuf(i), sharedB[i], {ch.srcRow}, sliceOff, bOff(i));
              }
          },
          routedB);
    };

    // Prologue: `ahead` steps in flight (a group per step, empty ones when
    // the reduction is shorter): stages - 1, or with wgmma stages - 2, since
    // the previous step's wgmmas may still read their slot while the next
    // copies are issued.
    int64_t ahead = t.wgmma ? stages - 2 : stages - 1;
    for (int64_t s = 0; s < ahead; ++s) {
      if (s < numK)
        loadStage(k.c(s), k.c(s));
      NVVM::CpAsyncCommitGroupOp::create(b);
    }

    // Per-lane offsets of the ldmatrix addresses: A (x4): lane -> row
    // lane % 16, column (lane / 16) * vec gives a0..a3 of m16n8k16 (vec = 8
    // elements: 16 bytes), and of tf32 m16n8k8 (vec = 4: an 8x8 matrix of
    // 16-bit halves is 8 rows x 4 f32, lane l receiving (row l / 4, column
    // l % 4), the PTX ISA's a0..a3 for m16n8k8 .tf32: (g, t), (g + 8, t),
    // (g, t + 4), (g + 8, t + 4)); B (x4, two n8 blocks): lane -> n row
    // (lane / 16) * 8 + lane % 8, k column ((lane / 8) % 2) * vec gives b0,
    // b1 of both blocks (tf32: (k t, n g), (k t + 4, n g)).
    Value aLaneRow = k.rem(lane, 16);
    Value aLaneCol = k.mul(k.div(lane, 16), vec);
    Value bLaneRow = arith::AddIOp::create(b, k.mul(k.div(lane, 16), 8),
                                           k.rem(lane, 8));
    Value bLaneCol = k.mul(k.rem(k.div(lane, 8), 2), vec);

    Type f32 = b.getF32Type();
    Type accStruct = LLVM::LLVMStructType::getLiteral(ctx, {f32, f32, f32, f32});
    bool bf16 = l.elt.isBF16();
    // Elements of one 32-bit fragment register (2, or 1 for f32).
    int64_t regElts = 4 / l.eltBytes();
    NVVM::MMATypes ptx = l.tf32() ? NVVM::MMATypes::tf32
                         : bf16   ? NVVM::MMATypes::bf16
                                  : NVVM::MMATypes::f16;
    // 3xTF32 (f32 experts; the "fast accurate" f32 tensor-core GEMM of
    // CUTLASS, there `OpMultiplyAddFastF32`): each f32 operand value v is
    // split into big = tf32(v) and small = tf32(v - big) (cvt.rna.tf32.f32,
    // low 13 bits cleared, so that big is an exact f32 and v - big is exact
    // too), and a b = big_a big_b + big_a small_b + small_a big_b (+
    // small_a small_b, at most 2^-22 |a b|, dropped), the small products
    // first. Relative error of a product: about 2^-21, against 2^-11 for
    // plain tf32 (which the f32 contract, 1e-4 relative, does not allow).
    auto toTf32 = [&](Value v) -> Value {
      Value r = NVVM::ConvertFloatToTF32Op::create(
          b, b.getI32Type(), v, NVVM::FPRoundingMode::RNA,
          NVVM::SaturationMode::NONE, /*relu=*/false);
      return arith::AndIOp::create(b, r, k.i32(-8192)); // 0xFFFFE000
    };
    // Operand sets `(big, small)` index pairs multiplied, in order.
    SmallVector<std::pair<int64_t, int64_t>> products{{0, 0}};
    if (l.tf32())
      products = {{0, 1}, {1, 0}, {0, 0}};
    // Registers first .. first + count - 1 of an ldmatrix result as MMA
    // operands: one set (bf16 as i32, f16 as vector<2xf16>), or for f32 the
    // tf32 big values' set and the small values' set.
    auto operandSets = [&](Value frag, int64_t first, int64_t count) {
      SmallVector<SmallVector<Value>> sets(l.tf32() ? 2 : 1);
      for (int64_t i = first; i < first + count; ++i) {
        if (!l.tf32()) {
          Value v = vector::ExtractOp::create(b, frag, ArrayRef<int64_t>{i});
          if (bf16)
            v = LLVM::BitcastOp::create(b, b.getI32Type(), v);
          sets[0].push_back(v);
          continue;
        }
        Value v = vector::ExtractOp::create(b, frag, ArrayRef<int64_t>{i, 0});
        Value big = toTf32(v);
        Value rest =
            arith::SubFOp::create(b, v, arith::BitcastOp::create(b, f32, big));
        sets[0].push_back(big);
        sets[1].push_back(toTf32(rest));
      }
      return sets;
    };
    // Accumulators: [b][mt][nt][4], flat.
    int64_t numAcc = numB * mTiles * nTiles * 4;
    auto accIndex = [&](int64_t bi, int64_t mt, int64_t nt, int64_t r) {
      return ((bi * mTiles + mt) * nTiles + nt) * 4 + r;
    };
    SmallVector<Value> init(numAcc, k.f32(0.0));
    // wgmma: the accumulators stay in one struct per B operand across the
    // loop (the last step's MMAs are still in flight at the yield).
    Type structTy = LLVM::LLVMStructType::getLiteral(
        ctx, SmallVector<Type>(wgN / 8 * 4, b.getF32Type()));
    if (t.wgmma) {
      Value zeros = LLVM::UndefOp::create(b, structTy);
      for (int64_t i = 0; i < wgN / 8 * 4; ++i)
        zeros = LLVM::InsertValueOp::create(b, zeros, k.f32(0.0),
                                            ArrayRef<int64_t>{i});
      init.assign(numStructs, zeros);
    }

    // wgmma (sm_90a): one K step of the warpgroup. The accumulators go into
    // one struct per B operand, then a fence (orders those register writes
    // before the asynchronous MMAs), a chain of wgmma.mma_async m64nBNk16
    // per 16-wide K slice, one commit and a wait for it, and only then are
    // they read back (the slot is refilled after the next barrier, so it
    // must not be read any more). Descriptors (PTX ISA, "Matrix
    // Descriptor"): bits 0-13 the shared address >> 4, 16-29 the leading
    // byte offset >> 4 (the next core matrix along K: 128 bytes), 32-45 the
    // stride byte offset >> 4 (the next 8 rows: BK / 8 core matrices),
    // 62-63 swizzle 0 (none). The warpgroup's 64 rows start 8 row groups per
    // warpgroup further into A. Swizzled (128-byte rows): layout type 1
    // (128B) in bits 62-63, stride byte offset 1024 (8 rows of 128 bytes),
    // leading byte offset unused (16, as CUTLASS sets it), and a K slice's
    // start 32 bytes further per 16 elements: the hardware swizzles the
    // addresses it forms from it (the PTX ISA's canonical K-major SW128
    // layout; CUTLASS/DeepGEMM advance the start address this way).
    int64_t coreBytes = 128, sbo = swizzle ? 1024 : bk / 8 * coreBytes;
    int64_t lbo = swizzle ? 16 : coreBytes, sliceBytes = swizzle ? 32 : 256;
    uint64_t layoutType = swizzle ? uint64_t(1) << 62 : 0;
    Value aBase, warpGroupOff;
    SmallVector<Value> bBase;
    if (t.wgmma) {
      aBase = smemBase(sA);
      for (Value buf : sB)
        bBase.push_back(smemBase(buf));
      warpGroupOff =
          arith::IndexCastUIOp::create(b, i64, k.mul(k.div(warp, 4), 8 * sbo));
    }
    auto descriptor = [&](Value addr) -> Value {
      Value field = arith::AndIOp::create(
          b, arith::ShRUIOp::create(b, addr, i64c(4)), i64c(0x3FFF));
      return arith::OrIOp::create(
          b, field,
          i64c(int64_t(((lbo >> 4) << 16) | ((sbo >> 4) << 32) | layoutType)));
    };
    // `d`: the accumulator structs, chained through this step's MMAs.
    auto wgmmaStep = [&](Value slot, SmallVector<Value> &d) {
      NVVM::WGMMATypes ptx =
          l.elt.isBF16() ? NVVM::WGMMATypes::bf16 : NVVM::WGMMATypes::f16;
      NVVM::WgmmaFenceAlignedOp::create(b);
      Value slotI = arith::IndexCastUIOp::create(b, i64, slot);
      Value aSlot = arith::AddIOp::create(
          b, arith::AddIOp::create(b, aBase, warpGroupOff),
          arith::MulIOp::create(b, slotI, i64c(bm * bk * 2)));
      for (int64_t ks = 0; ks < bk / 16; ++ks) {
        Value descA =
            descriptor(arith::AddIOp::create(b, aSlot, i64c(ks * sliceBytes)));
        for (int64_t si = 0; si < numStructs; ++si) {
          Value bSlot = arith::AddIOp::create(
              b, bBase[si],
              arith::MulIOp::create(b, slotI, i64c(wgN * bk * 2)));
          Value descB = descriptor(
              arith::AddIOp::create(b, bSlot, i64c(ks * sliceBytes)));
          d[si] = NVVM::WgmmaMmaAsyncOp::create(
              b, structTy, d[si], descA, descB,
              NVVM::MMAShapeAttr::get(ctx, 64, wgN, 16), ptx, ptx,
              NVVM::WGMMATypes::f32, NVVM::WGMMAScaleOut::one,
              NVVM::WGMMAScaleIn::one, NVVM::WGMMAScaleIn::one,
              NVVM::MMALayout::row, NVVM::MMALayout::col,
              NVVM::MMAIntOverflowAttr());
        }
      }
      // This step's group stays in flight; the previous step's completes,
      // freeing its slot for the copies issued after the next barrier.
      NVVM::WgmmaGroupSyncAlignedOp::create(b);
      NVVM::WgmmaWaitGroupSyncOp::create(b, 1);
    };

    auto mainLoop = scf::ForOp::create(b, k.c(0), k.c(numK), k.c(1), init);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(mainLoop.getBody());
      Value kt = mainLoop.getInductionVar();
      SmallVector<Value> acc(mainLoop.getRegionIterArgs().begin(),
                             mainLoop.getRegionIterArgs().end());
      // Step kt has landed (at most ahead - 1 younger groups pending), and
      // every thread is done with the buffer that the next copy overwrites.
      NVVM::CpAsyncWaitGroupOp::create(b, ahead - 1);
      // wgmma reads shared memory through the async proxy: the copies'
      // (generic proxy) writes need a proxy fence by their thread before the
      // barrier (PTX ISA, "Async Proxy").
      if (t.wgmma)
        NVVM::FenceProxyOp::create(
            b, NVVM::ProxyKindAttr::get(ctx, NVVM::ProxyKind::async_shared),
            NVVM::SharedSpaceAttr::get(ctx, NVVM::SharedSpace::shared_cta));
      gpu::BarrierOp::create(b);
      Value next = k.add(kt, ahead);
      k.ifThen(k.cmp(arith::CmpIPredicate::ult, next, k.c(numK)),
               [&] { loadStage(k.rem(next, stages), next); });
      NVVM::CpAsyncCommitGroupOp::create(b);

      Value slot = k.rem(kt, stages);
      if (tma) {
        // The slot's B tiles have landed: its barrier's phase (kt / stages)
        // & 1 has completed (a wait loop; the ticks only bound one try).
        Value parity = k.toI32(k.rem(k.div(kt, stages), 2));
        NVVM::MBarrierTryWaitParityOp::create(b, barrierOf(slot), parity,
                                              k.i32(10000000));
      }
      if (t.wgmma)
        wgmmaStep(slot, acc);
      else
        for (int64_t ks = 0; ks < bk / mmaK; ++ks) {
          // Per m16 tile: its A operand sets (one, or tf32's big and small).
          SmallVector<SmallVector<SmallVector<Value>>> aOps;
          for (int64_t mt = 0; mt < mTiles; ++mt) {
            Value row =
                k.add(arith::AddIOp::create(b, warpRow, aLaneRow), mt * 16);
            Value col = k.add(aLaneCol, ks * mmaK);
            Value frag = nvgpu::LdMatrixOp::create(
                b, VectorType::get({4, regElts}, l.elt), sA,
                ValueRange{slot, row, col}, /*transpose=*/false,
                /*numTiles=*/4);
            aOps.push_back(operandSets(frag, 0, 4));
          }
          for (int64_t bi = 0; bi < numB; ++bi) {
            // Per n8 tile: its B operand sets.
            SmallVector<SmallVector<SmallVector<Value>>> bOps;
            // Pairs of n8 tiles by ldmatrix x4; an odd last one by x2, whose
            // addresses come from lanes 0-15 only (the same formula).
            for (int64_t np = 0; np < (nTiles + 1) / 2; ++np) {
              bool pair = 2 * np + 1 < nTiles;
              Value row =
                  k.add(arith::AddIOp::create(b, warpCol, bLaneRow), np * 16);
              Value col = k.add(bLaneCol, ks * mmaK);
              Value frag = nvgpu::LdMatrixOp::create(
                  b, VectorType::get({pair ? 4 : 2, regElts}, l.elt), sB[bi],
                  ValueRange{slot, row, col}, false, pair ? 4 : 2);
              bOps.push_back(operandSets(frag, 0, 2));
              if (pair)
                bOps.push_back(operandSets(frag, 2, 2));
            }
            for (int64_t mt = 0; mt < mTiles; ++mt) {
              for (int64_t nt = 0; nt < nTiles; ++nt) {
                SmallVector<Value> cv;
                for (int64_t r = 0; r < 4; ++r)
                  cv.push_back(acc[accIndex(bi, mt, nt, r)]);
                for (auto [ai, bj] : products) {
                  Value d = NVVM::MmaOp::create(
                      b, accStruct, aOps[mt][ai], bOps[nt][bj], cv,
                      ArrayRef<int64_t>{16, 8, mmaK}, std::nullopt,
                      std::nullopt, std::array<NVVM::MMATypes, 2>{ptx, ptx},
                      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                                     NVVM::MMALayout::col});
                  for (int64_t r = 0; r < 4; ++r)
                    cv[r] = LLVM::ExtractValueOp::create(b, d,
                                                         ArrayRef<int64_t>{r});
                }
                for (int64_t r = 0; r < 4; ++r)
                  acc[accIndex(bi, mt, nt, r)] = cv[r];
              }
            }
          }
        }
      scf::YieldOp::create(b, acc);
    }
    // Only empty groups can be pending; drain them before the block exits.
    NVVM::CpAsyncWaitGroupOp::create(b, 0);
    SmallVector<Value> acc(mainLoop.getResults().begin(),
                           mainLoop.getResults().end());
    if (t.wgmma) {
      // The last step's MMAs, then the accumulators out of their structs.
      NVVM::WgmmaWaitGroupSyncOp::create(b, 0);
      // Struct si's n8 tile j: operand si's tile j, or with the fused
      // gate/up buffer, gate's tiles then up's.
      SmallVector<Value> flat(numAcc);
      for (int64_t si = 0; si < numStructs; ++si)
        for (int64_t j = 0; j < wgN / 8; ++j)
          for (int64_t r = 0; r < 4; ++r)
            flat[accIndex(fusedB ? j / nTiles : si, 0, j % nTiles, r)] =
                LLVM::ExtractValueOp::create(b, acc[si],
                                             ArrayRef<int64_t>{j * 4 + r});
      acc = flat;
    }

    // Epilogue. Accumulator r of an m16n8 tile: row lane / 4 (+8 for r >= 2),
    // columns (lane % 4) * 2 + (r % 2).
    Value laneRow = k.div(lane, 4);
    Value laneCol = k.mul(k.rem(lane, 4), 2);
    auto colOf = [&](int64_t nt) {
      return k.add(arith::AddIOp::create(
                       b, arith::AddIOp::create(b, n0, warpCol), laneCol),
                   nt * 8);
    };
    // Bias values of this lane's columns (the same for all its rows), in
    // f32: [nt * 2 + j] for column colOf(nt) + j.
    auto biasOf = [&](Value m) {
      SmallVector<Value> v;
      if (!m)
        return v;
      for (int64_t nt = 0; nt < nTiles; ++nt)
        for (int64_t j = 0; j < 2; ++j) {
          Value col = k.add(colOf(nt), j);
          Value x = linear ? k.load(m, {col}) : k.load(m, {expert, col});
          if (!x.getType().isF32())
            x = arith::ExtFOp::create(b, f32, x);
          v.push_back(x);
        }
      return v;
    };
    SmallVector<Value> gateB = biasOf(gateBiasArg), upB = biasOf(upBiasArg),
                       downB = biasOf(downBiasArg);
    // Split-K: the down bias is added once, by the first slice.
    if (split)
      for (Value &v : downB)
        v = arith::SelectOp::create(
            b, k.cmp(arith::CmpIPredicate::eq, split, k.c(0)), v, k.f32(0.0));
    // down's value for accumulator r of tile (mt, nt): the GEMM plus the
    // down bias (part of Expert_e(x): before the routing weight).
    auto downVal = [&](int64_t mt, int64_t nt, int64_t r) {
      Value v = acc[accIndex(0, mt, nt, r)];
      if (!downB.empty())
        v = arith::AddFOp::create(b, v, downB[nt * 2 + r % 2]);
      return v;
    };
    for (int64_t mt = 0; mt < mTiles; ++mt) {
      for (int64_t half = 0; half < 2; ++half) {
        Value localRow = k.add(arith::AddIOp::create(b, warpRow, laneRow),
                               mt * 16 + half * 8);
        Value row = arith::AddIOp::create(b, rowBase, localRow);
        if (linear) {
          // y[row] for a real token: the GEMM, the LoRA terms, the bias,
          // rounded once to the result type.
          k.ifThen(k.cmp(arith::CmpIPredicate::ult, row, numRows), [&] {
            SmallVector<Value> vals;
            for (int64_t nt = 0; nt < nTiles; ++nt)
              for (int64_t j = 0; j < 2; ++j)
                vals.push_back(acc[accIndex(0, mt, nt, half * 2 + j)]);
            if (l.loraR)
              vals = addLoRATerms(b, k, l, loraIdx, loraU, loraW, loraB, row,
                                  [&](int64_t i) {
                                    return k.add(colOf(i / 2), i % 2);
                                  },
                                  vals);
            for (int64_t nt = 0; nt < nTiles; ++nt) {
              SmallVector<Value> out;
              for (int64_t j = 0; j < 2; ++j) {
                Value v = vals[nt * 2 + j];
                if (!downB.empty())
                  v = arith::AddFOp::create(b, v, downB[nt * 2 + j]);
                if (v.getType() != l.outElt)
                  v = arith::TruncFOp::create(b, l.outElt, v);
                out.push_back(v);
              }
              Value v = vector::FromElementsOp::create(
                  b, VectorType::get({2}, l.outElt), out);
              int64_t outBytes = l.outElt.getIntOrFloatBitWidth() / 8;
              vector::StoreOp::create(b, v, result, ValueRange{row, colOf(nt)},
                                      /*nontemporal=*/false,
                                      llvm::Align(2 * outBytes));
            }
          });
        } else if (gateUp) {
          // h = act(gate, up) in the input dtype; padding rows hold act(0, 0)
          // and are never read back into the result.
          // With input scales: the row's pair p scales its sums by
          // scale[p] (routed pairs, p < T K; the shared expert's and
          // padding rows by 1, the load kept in bounds).
          Value rowScale;
          if (inputScale) {
            Value p = k.load(sorted, {row});
            Value pairs = k.mul(memref::DimOp::create(b, inputScale, 0), l.k);
            Value pi = k.toIndex(p);
            Value routed = arith::AndIOp::create(
                b, k.cmp(arith::CmpIPredicate::sge, p, k.i32(0)),
                k.cmp(arith::CmpIPredicate::ult, pi, pairs));
            Value at = arith::SelectOp::create(b, routed, pi, k.c(0));
            rowScale = arith::SelectOp::create(
                b, routed, k.load(inputScale, {k.div(at, l.k), k.rem(at, l.k)}),
                k.f32(1.0));
          }
          for (int64_t nt = 0; nt < nTiles; ++nt) {
            SmallVector<Value> vals;
            for (int64_t j = 0; j < 2; ++j) {
              int64_t r = half * 2 + j;
              Value up = acc[accIndex(numB - 1, mt, nt, r)];
              Value gate = l.gated ? acc[accIndex(0, mt, nt, r)] : Value();
              if (rowScale) {
                up = arith::MulFOp::create(b, up, rowScale);
                if (gate)
                  gate = arith::MulFOp::create(b, gate, rowScale);
              }
              // Biases before the activation.
              if (!upB.empty())
                up = arith::AddFOp::create(b, up, upB[nt * 2 + j]);
              if (!gateB.empty())
                gate = arith::AddFOp::create(b, gate, gateB[nt * 2 + j]);
              Value hv = activate(b, l.act, gate, up, l.alpha, l.limit);
              if (hv.getType() != l.elt)
                hv = arith::TruncFOp::create(b, l.elt, hv);
              vals.push_back(hv);
            }
            Value v = vector::FromElementsOp::create(
                b, VectorType::get({2}, l.elt), vals);
            // Two adjacent columns: one 32-bit store (64-bit for f32).
            vector::StoreOp::create(b, v, result, ValueRange{row, colOf(nt)},
                                    /*nontemporal=*/false,
                                    llvm::Align(2 * l.eltBytes()));
          }
        } else if (atomic) {
          // acc[t] += w[t, k] * row: relaxed f32 atomics at device scope
          // (atom.global.add.f32, a RED in SASS since the old value is
          // unused); the order of the K additions per element is not fixed.
          Value p = k.load(sorted, {row});
          k.ifThen(k.cmp(arith::CmpIPredicate::sge, p, k.i32(0)), [&] {
            Value pi = k.toIndex(p);
            Value tok = k.div(pi, l.k), slotK = k.rem(pi, l.k);
            Value w;
            if (l.shared()) {
              // Pair T*K + c T + t: token t, weight 1 or, gated,
              // sigmoid(logit_t) (the routing weight's load kept in
              // bounds).
              Value numT = memref::DimOp::create(b, result, 0);
              Value tk = k.mul(numT, l.k);
              Value isShared = k.cmp(arith::CmpIPredicate::uge, pi, tk);
              // (Weight 1 without combine weights.)
              w = l.unitWeights ? k.f32(1.0)
                                : k.load(result, {arith::SelectOp::create(
                                                      b, isShared, k.c(0), tok),
                                                  slotK});
              tok = arith::SelectOp::create(
                  b, isShared,
                  arith::RemUIOp::create(b, arith::SubIOp::create(b, pi, tk),
                                         numT),
                  tok);
              Value sharedW = k.f32(1.0);
              if (sharedLogit) {
                Value z = k.load(sharedLogit, {tok, k.c(0)});
                sharedW = arith::DivFOp::create(
                    b, k.f32(1.0),
                    arith::AddFOp::create(
                        b, k.f32(1.0),
                        math::ExpOp::create(b, arith::NegFOp::create(b, z))));
              }
              w = arith::SelectOp::create(b, isShared, sharedW, w);
            } else {
              w = l.unitWeights ? k.f32(1.0) : k.load(result, {tok, slotK});
            }
            Value base = memref::ExtractAlignedPointerAsIndexOp::create(
                b, accTotal);
            Type i64 = b.getI64Type();
            auto globalPtr = LLVM::LLVMPointerType::get(ctx, 1);
            Value ptr = LLVM::IntToPtrOp::create(
                b, globalPtr,
                arith::IndexCastUIOp::create(b, i64, base).getResult());
            Value rowStart = k.mul(tok, l.h);
            auto gep = [&](Value base, Value elems) -> Value {
              return LLVM::GEPOp::create(
                  b, globalPtr, f32, base,
                  ValueRange{
                      arith::IndexCastUIOp::create(b, i64, elems).getResult()});
            };
            for (int64_t nt = 0; nt < nTiles; ++nt) {
              // The lane's two adjacent columns (the even one first).
              Value addr =
                  gep(ptr, arith::AddIOp::create(b, rowStart, colOf(nt)));
              Value v0 = arith::MulFOp::create(b, w, downVal(mt, nt, half * 2));
              Value v1 =
                  arith::MulFOp::create(b, w, downVal(mt, nt, half * 2 + 1));
              // sm_90: both in one vector reduction (8-byte aligned: H is a
              // multiple of 16), half the atomic operations (PTX ISA, `red`
              // with vector type: .global only, relaxed, gpu scope by
              // default, as the scalar ones).
              if (t.vectorRed) {
                NVVM::InlinePtxOp::create(
                    b, TypeRange{}, ValueRange{addr, v0, v1}, ValueRange{},
                    "red.global.add.v2.f32 [$0], {$1, $2};", Value());
                continue;
              }
              for (auto [a, v] :
                   {std::pair{addr, v0}, std::pair{gep(addr, k.c(1)), v1}})
                LLVM::AtomicRMWOp::create(b, LLVM::AtomicBinOp::fadd, a, v,
                                          LLVM::AtomicOrdering::monotonic,
                                          "device", /*alignment=*/4);
            }
          });
        } else if (l.combine == CombineMode::Gather) {
          // The row stays in sorted order (no scatter); the reduce kernel
          // finds it through `pos`. Padding rows are skipped.
          Value p = k.load(sorted, {row});
          k.ifThen(k.cmp(arith::CmpIPredicate::sge, p, k.i32(0)), [&] {
            for (int64_t nt = 0; nt < nTiles; ++nt) {
              Value v = vector::FromElementsOp::create(
                  b, VectorType::get({2}, f32),
                  ValueRange{downVal(mt, nt, half * 2),
                             downVal(mt, nt, half * 2 + 1)});
              vector::StoreOp::create(b, v, result, ValueRange{row, colOf(nt)},
                                      /*nontemporal=*/false, llvm::Align(8));
            }
          });
        } else {
          Value p = k.load(sorted, {row});
          k.ifThen(k.cmp(arith::CmpIPredicate::sge, p, k.i32(0)), [&] {
            Value pi = k.toIndex(p);
            Value tok = k.div(pi, l.k), slotK = k.rem(pi, l.k);
            for (int64_t nt = 0; nt < nTiles; ++nt) {
              Value v = vector::FromElementsOp::create(
                  b, VectorType::get({2}, f32),
                  ValueRange{downVal(mt, nt, half * 2),
                             downVal(mt, nt, half * 2 + 1)});
              vector::StoreOp::create(b, v, result,
                                      ValueRange{tok, slotK, colOf(nt)},
                                      /*nontemporal=*/false, llvm::Align(8));
            }
          });
        }
      }
    }
  });
  gpu::ReturnOp::create(b);
  return fn;
}

//===----------------------------------------------------------------------===//
// finish (atomic) and reduce (gather): one block per token row
//===----------------------------------------------------------------------===//

/// Threads of a per-token kernel: 4 columns each, a whole number of warps,
/// at most 256 (wider rows loop).
int64_t rowThreads(const Layer &l) {
  return std::clamp<int64_t>((l.h / 4 + 31) / 32 * 32, 32, 256);
}

/// `finish`: y[t] = round(acc[t]) (atomic mode with a result that is not
/// f32). `reduce`: y[t] = round(sum_k w[t,k] * rows[pos[t*K+k]] +
/// sum_a addends_a[t] + bias), the K terms in slot order, then the addends,
/// then the bias.
gpu::GPUFuncOp buildRowKernel(OpBuilder &mb, Location loc, const Layer &l,
                              const BufferTypes &bt) {
  bool gather = l.combine == CombineMode::Gather;
  SmallVector<Type> args;
  if (gather) {
    args.append({bt.rows, bt.pos, bt.weights});
    args.append(bt.addends.begin(), bt.addends.end());
    if (l.biasElt)
      args.push_back(bt.bias);
  } else {
    args.push_back(bt.acc);
  }
  args.push_back(bt.y);
  int64_t threads = rowThreads(l);
  auto fn = createKernel(mb, loc, gather ? "reduce" : "finish", args, {},
                         threads);
  Block &entry = fn.getBody().front();
  OpBuilder ob = OpBuilder::atBlockEnd(&entry);
  ImplicitLocOpBuilder b(loc, ob);
  KB k{b};
  Type f32 = b.getF32Type();
  auto v4 = [&](Type t) { return VectorType::get({4}, t); };
  auto load4 = [&](Value m, Type elt, ValueRange idx) -> Value {
    Value v = vector::LoadOp::create(
        b, v4(elt), m, idx, /*nontemporal=*/false,
        llvm::Align(4 * elt.getIntOrFloatBitWidth() / 8));
    return elt == f32 ? v : arith::ExtFOp::create(b, v4(f32), v).getResult();
  };
  Value tok = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value y = entry.getArguments().back();
  k.loop(k.mul(tid, 4), k.c(l.h), k.c(4 * threads), [&](Value col) {
    Value sum;
    if (!gather) {
      sum = load4(entry.getArgument(0), f32, {tok, col});
    } else {
      Value rows = entry.getArgument(0), pos = entry.getArgument(1),
            weights = entry.getArgument(2);
      sum = arith::ConstantOp::create(
          b, DenseElementsAttr::get(cast<ShapedType>(v4(f32)), 0.0f));
      for (int64_t slot = 0; slot < l.k; ++slot) {
        Value r = k.load(pos, {k.add(k.mul(tok, l.k), slot)});
        // A slot routed to no expert of this op (-1) adds nothing.
        auto ifOp = scf::IfOp::create(
            b, TypeRange{v4(f32)},
            k.cmp(arith::CmpIPredicate::sge, r, k.i32(0)),
            /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(&ifOp.getThenRegion().front());
          Value w = vector::BroadcastOp::create(
              b, v4(f32),
              l.unitWeights ? k.f32(1.0) : k.load(weights, {tok, k.c(slot)}));
          Value row = load4(rows, f32, {k.toIndex(r), col});
          scf::YieldOp::create(
              b, ValueRange{math::FmaOp::create(b, w, row, sum)});
          b.setInsertionPointToStart(&ifOp.getElseRegion().front());
          scf::YieldOp::create(b, ValueRange{sum});
        }
        sum = ifOp.getResult(0);
      }
      for (auto [i, elt] : llvm::enumerate(l.addendElts))
        sum = arith::AddFOp::create(
            b, sum, load4(entry.getArgument(3 + i), elt, {tok, col}));
      if (l.biasElt)
        sum = arith::AddFOp::create(
            b, sum,
            load4(entry.getArgument(3 + l.addendElts.size()), l.biasElt,
                  {col}));
    }
    if (l.outElt != f32)
      sum = arith::TruncFOp::create(b, v4(l.outElt), sum);
    vector::StoreOp::create(
        b, sum, y, ValueRange{tok, col}, /*nontemporal=*/false,
        llvm::Align(4 * l.outElt.getIntOrFloatBitWidth() / 8));
  });
  gpu::ReturnOp::create(b);
  return fn;
}

//===----------------------------------------------------------------------===//
// convert-moe-experts-to-gpu
//===----------------------------------------------------------------------===//

/// Why `op` cannot take the tensor-core path, or "" if it can.
std::string whyIneligible(ExpertsOp op, StringRef chip) {
  // sm_XX or sm_XXa.
  unsigned sm = 0;
  if (!chip.consume_front("sm_") || chip.take_while(llvm::isDigit).getAsInteger(10, sm))
    return "unknown chip";
  if (sm < 80)
    return "the chip is older than sm_80 (no cp.async / bf16 mma.sync)";
  switch (op.getActivation()) {
  case Activation::swiglu:
  case Activation::geglu:
  case Activation::gelu:
  case Activation::gelu_tanh:
  case Activation::relu:
  case Activation::relu2:
  case Activation::swiglu_clamped:
    break;
  }
  Type elt = cast<ShapedType>(op.getInput().getType()).getElementType();
  if (!elt.isBF16() && !elt.isF16() && !elt.isF32())
    return "the input is not bf16, f16 or f32";
  SmallVector<Value> weights{op.getUp(), op.getDown()};
  if (op.getGate())
    weights.push_back(op.getGate());
  for (Value w : weights) {
    if (cast<ShapedType>(w.getType()).getElementType() != elt)
      return "the weights' dtype differs from the input's";
    if (matchPattern(w, m_Constant()))
      return "the weights are compile-time constants (the kernels read "
             "weights from device-visible arguments)";
  }
  for (Value bias : {op.getGateBias(), op.getUpBias(), op.getDownBias()}) {
    if (!bias)
      continue;
    Type be = cast<ShapedType>(bias.getType()).getElementType();
    if (!be.isBF16() && !be.isF16() && !be.isF32())
      return "an expert bias is not bf16, f16 or f32";
    if (matchPattern(bias, m_Constant()))
      return "the expert biases are compile-time constants (the kernels read "
             "them from device-visible arguments)";
  }
  auto x = cast<ShapedType>(op.getInput().getType());
  auto up = cast<ShapedType>(op.getUp().getType());
  if (x.isDynamicDim(1) || !up.hasStaticShape() ||
      !cast<ShapedType>(op.getDown().getType()).hasStaticShape())
    return "H, F or E is dynamic";
  // (The tile choice divides by them.)
  if (x.getDimSize(1) == 0 || up.getNumElements() == 0)
    return "H, F or E is 0 (nothing to compute)";
  if (!op->getParentOfType<func::FuncOp>())
    return "the op is not in a func.func";
  return "";
}

/// The moe.combine that reads `op`'s slots, if any; `why` says why it
/// cannot be fused into the kernels ("" if it can).
CombineOp combineOf(ExpertsOp op, std::string &why) {
  CombineOp combine;
  for (Operation *user : op.getSlots().getUsers())
    if (auto c = dyn_cast<CombineOp>(user))
      combine = c;
  if (!combine)
    return nullptr;
  auto supported = [](Type t) {
    Type elt = getElementTypeOrSelf(t);
    return elt.isBF16() || elt.isF16() || elt.isF32();
  };
  if (!op.getSlots().hasOneUse())
    why = "the slots have other users than the combine";
  else if (combine.getSlots().size() != 1)
    why = "the combine sums several slot tensors";
  else if (!combine.getWeights() && !op.getInputScale())
    why = "the combine has no weights and the experts no input scales (the "
          "kernels take their weight argument from one of them)";
  else if (!supported(combine.getType()))
    why = "the combine's result is not bf16, f16 or f32";
  else if (!llvm::all_of(combine.getAddends().getTypes(), supported))
    why = "an addend is not bf16, f16 or f32";
  else if (combine.getBias() && !supported(combine.getBias().getType()))
    why = "the bias is not bf16, f16 or f32";
  return combine;
}

/// One kernel launch of the call's expansion: the grid's x extent is dim 0
/// of call operand `gridOperand` (the tile table, or a T-row buffer), or 1
/// when it is -1.
struct LaunchSpec {
  gpu::GPUFuncOp kernel;
  int64_t gridOperand = -1, blocksY = 1, threads = 0;
  SmallVector<int64_t> args;
  /// Dynamic shared memory in bytes (0: none).
  int64_t smem = 0;
  /// Tensor maps the host makes for the kernel (its last arguments).
  SmallVector<TensorMapArg> tensorMaps = {};
};

/// A shared expert (`moe.ffn`: the same FFN for every token) as one more
/// `moe.experts` with a single expert that every token selects (E = 1,
/// K = 1, index 0), so that it takes the tensor-core kernels instead of the
/// generic path's one-thread-per-output GEMMs (measured on an H100: the
/// DeepSeek-V3 shared expert at T = 4096 took 3 x 133 ms there). Only an
/// ffn with an f32 result (the combine addend the decomposition makes) is
/// rewritten. Qwen2-MoE's sigmoid gate (`gate_weight`: y_t = g_t Shared(x_t),
/// g_t = sigmoid(x_t . w_s), MOE_SEMANTICS §2) is a one-expert routing:
/// `moe.linear` x . w_s, `moe.route` (sigmoid, dense, k = 1: index 0,
/// weight g_t) whose indices select the expert; `gateWeights` is then set
/// to the route's weights, which the caller combines the slot with (a
/// moe.combine the kernels fuse like a routed one). The caller keeps the
/// rewrite only if the new op is eligible. Returns the new op, or null.
ExpertsOp sharedAsExperts(FFNOp ffn, Value &gateWeights) {
  auto resTy = dyn_cast<RankedTensorType>(ffn.getType());
  auto xTy = dyn_cast<RankedTensorType>(ffn.getInput().getType());
  if (!resTy || !xTy || resTy.getRank() != 2 || xTy.getRank() != 2 ||
      !resTy.getElementType().isF32())
    return nullptr;
  for (Value w : {ffn.getGate(), ffn.getUp(), ffn.getDown()})
    if (w && !cast<ShapedType>(w.getType()).hasStaticShape())
      return nullptr;
  OpBuilder b(ffn);
  Location loc = ffn.getLoc();
  auto slotTy = [&](Type elt) {
    return RankedTensorType::get({xTy.getDimSize(0), 1}, elt);
  };
  Value indices;
  gateWeights = Value();
  if (Value gw = ffn.getGateWeight()) {
    Value logit = LinearOp::create(b, loc, slotTy(b.getF32Type()),
                                   ffn.getInput(), gw, Value());
    auto routing = RoutingAttr::get(
        b.getContext(), ScoringFunc::sigmoid, SelectionKind::dense, /*k=*/1,
        /*nGroup=*/1, /*topkGroup=*/1, GroupScore::max, APFloat(1.0),
        /*renormalize=*/false, /*scalingFactor=*/APFloat(1.0), APFloat(1.0),
        APFloat(1.0), /*jitterEps=*/APFloat(0.0));
    auto route =
        RouteOp::create(b, loc, slotTy(b.getI32Type()), slotTy(b.getF32Type()),
                        logit, Value(), Value(), routing);
    indices = route.getIndices();
    gateWeights = route.getWeights();
  } else {
    SmallVector<Value> dynT;
    if (xTy.isDynamicDim(0))
      dynT.push_back(tensor::DimOp::create(b, loc, ffn.getInput(), 0));
    Value zero = arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(0));
    indices =
        tensor::SplatOp::create(b, loc, slotTy(b.getI32Type()), zero, dynT);
  }
  // F x H -> 1 x F x H (weights); F -> 1 x F (biases).
  auto addExpertDim = [&](Value v) -> Value {
    if (!v)
      return v;
    auto t = cast<RankedTensorType>(v.getType());
    SmallVector<int64_t> shape{1};
    llvm::append_range(shape, t.getShape());
    SmallVector<ReassociationIndices> groups{{0, 1}};
    for (int64_t d = 2; d <= t.getRank(); ++d)
      groups.push_back({d});
    return tensor::ExpandShapeOp::create(
        b, loc, RankedTensorType::get(shape, t.getElementType()), v, groups);
  };
  auto slotsTy = RankedTensorType::get(
      {xTy.getDimSize(0), 1, resTy.getDimSize(1)}, b.getF32Type());
  return ExpertsOp::create(
      b, loc, slotsTy, ffn.getInput(), indices, addExpertDim(ffn.getGate()),
      addExpertDim(ffn.getUp()), addExpertDim(ffn.getDown()),
      addExpertDim(ffn.getGateBias()), addExpertDim(ffn.getUpBias()),
      addExpertDim(ffn.getDownBias()), /*input_scale=*/Value(),
      ffn.getActivationAttr(), ffn.getAlphaAttr(), ffn.getLimitAttr(),
      b.getI64IntegerAttr(0));
}

/// The shared expert that `c`'s addend number `index` comes from, if it can
/// join `op`'s kernels as expert E (Layer::sharedAddend): an ungated moe.ffn
/// of the same input, dtype, activation and F x H shape as the routed
/// experts, no biases on either, its f32 result used only by the combine,
/// weights not compile-time constants.
FFNOp fusableShared(ExpertsOp op, CombineOp c, const Layer &l, int64_t &index,
                    int64_t &slices) {
  if (l.gateBias || l.upBias || l.downBias)
    return nullptr;
  for (auto [i, a] : llvm::enumerate(c.getAddends())) {
    auto ffn = a.getDefiningOp<FFNOp>();
    if (!ffn || !ffn->hasOneUse() || ffn.getInput() != op.getInput() ||
        ffn.getGateBias() || ffn.getUpBias() || ffn.getDownBias() ||
        ffn.getActivation() != op.getActivation() ||
        ffn.getAlpha() != op.getAlpha() || ffn.getLimit() != op.getLimit() ||
        bool(ffn.getGate()) != l.gated ||
        !getElementTypeOrSelf(ffn.getType()).isF32())
      continue;
    auto shapeIs = [&](Value w, ArrayRef<int64_t> shape) {
      auto t = cast<ShapedType>(w.getType());
      return t.hasStaticShape() && t.getShape() == shape &&
             t.getElementType() == l.elt && !matchPattern(w, m_Constant());
    };
    // Its width: a multiple of the routed experts' F (slices of F).
    int64_t fs = cast<ShapedType>(ffn.getUp().getType()).getDimSize(0);
    if (ShapedType::isDynamic(fs) || fs % l.f || fs / l.f > 8)
      continue;
    if ((l.gated && !shapeIs(ffn.getGate(), {fs, l.h})) ||
        !shapeIs(ffn.getUp(), {fs, l.h}) || !shapeIs(ffn.getDown(), {l.h, fs}))
      continue;
    // Qwen2-MoE's sigmoid gate: a 1 x H row the linear kernel reads.
    if (Value gw = ffn.getGateWeight()) {
      auto t = cast<ShapedType>(gw.getType());
      if (!t.hasStaticShape() || t.getShape() != ArrayRef<int64_t>{1, l.h} ||
          matchPattern(gw, m_Constant()))
        continue;
    }
    index = i;
    slices = fs / l.f;
    return ffn;
  }
  return nullptr;
}

/// Erases `op` and the operand-making ops that only it used (a rejected
/// sharedAsExperts rewrite).
void eraseWithUnusedOperands(Operation *op) {
  SmallVector<Operation *> defs;
  for (Value v : op->getOperands())
    if (Operation *d = v.getDefiningOp())
      defs.push_back(d);
  op->erase();
  while (!defs.empty()) {
    Operation *d = defs.pop_back_val();
    if (!d->use_empty() ||
        !isa<tensor::ExpandShapeOp, tensor::SplatOp, tensor::DimOp,
             arith::ConstantOp, RouteOp, LinearOp>(d))
      continue;
    for (Value v : d->getOperands())
      if (Operation *dd = v.getDefiningOp())
        defs.push_back(dd);
    d->erase();
  }
}

struct ConvertMoEExpertsToGPU
    : public moe::impl::ConvertMoEExpertsToGPUBase<ConvertMoEExpertsToGPU> {
  using Base::Base;

  /// The dynamic shared memory a kernel may ask for on `chip` (0: none).
  int64_t dynLimit() { return dynamicSmem ? maxDynamicSmem(chip) : 0; }

  /// Tiles for an eligible op, or why it is not.
  FailureOr<std::pair<Layer, Tiles>> analyse(ExpertsOp op, std::string &why) {
    why = whyIneligible(op, chip);
    Layer l;
    Tiles tiles;
    if (why.empty()) {
      auto up = cast<ShapedType>(op.getUp().getType());
      l.e = up.getDimSize(0);
      l.f = up.getDimSize(1);
      l.h = up.getDimSize(2);
      l.k = cast<ShapedType>(op.getIndices().getType()).getDimSize(1);
      l.offset = op.getExpertOffset();
      if (auto splat = op.getIndices().getDefiningOp<tensor::SplatOp>()) {
        APInt id;
        l.uniformExpert = l.k == 1 && l.e == 1 &&
                          matchPattern(splat.getInput(), m_ConstantInt(&id)) &&
                          id.getSExtValue() == l.offset;
      }
      l.groupM = groupM;
      l.wgmmaSwizzle = wgmmaSwizzle;
      l.tma = tma;
      l.elt = cast<ShapedType>(op.getInput().getType()).getElementType();
      l.act = op.getActivation();
      l.gated = bool(op.getGate());
      l.alpha = op.getAlpha().convertToDouble();
      l.limit = op.getLimit().convertToDouble();
      auto eltOf = [](Value v) {
        return v ? cast<ShapedType>(v.getType()).getElementType() : Type();
      };
      l.gateBias = eltOf(op.getGateBias());
      l.upBias = eltOf(op.getUpBias());
      l.downBias = eltOf(op.getDownBias());
      l.inputScale = bool(op.getInputScale());
      if (ShapedType::isDynamic(l.k))
        why = "K is dynamic";
      else if (FailureOr<Tiles> t =
                   chooseTiles(l, tileM, tileNGateUp, tileNDown, tileK, stages,
                               warps, dynLimit(), wgmma, wideTiles, why);
               succeeded(t))
        tiles = *t;
    }
    if (!why.empty())
      return failure();
    return std::make_pair(l, tiles);
  }

  /// Option values that no shape takes: an error naming the option, rather
  /// than a remark per op and the generic path.
  LogicalResult checkOptions(ModuleOp module) {
    std::string why;
    llvm::raw_string_ostream os(why);
    auto oneOf = [](int64_t v, std::initializer_list<int64_t> allowed) {
      return llvm::is_contained(allowed, v);
    };
    if (!oneOf(tileM, {0, 16, 32, 64, 128}))
      os << "tile-m must be 0 (from the shape), 16, 32, 64 or 128 (got "
         << tileM << ")";
    else if (!oneOf(tileK, {0, 16, 32, 64, 128}))
      os << "tile-k must be 0 (from the shape), 16, 32, 64 or 128 (got "
         << tileK << ")";
    else if (tileNGateUp < 0 || tileNGateUp % 16)
      os << "tile-n-gate-up must be 0 (from the shape) or a positive multiple "
         << "of 16 (got " << tileNGateUp << ")";
    else if (tileNDown < 0 || tileNDown % 16)
      os << "tile-n-down must be 0 (from the shape) or a positive multiple "
         << "of 16 (got " << tileNDown << ")";
    else if (!oneOf(stages, {0, 2, 3, 4}))
      os << "stages must be 0 (from the tiles), 2, 3 or 4 (got " << stages
         << ")";
    else if (!oneOf(warps, {0, 4, 8}))
      os << "warps must be 0 (4), 4 or 8 (got " << warps << ")";
    else if (groupM < 0)
      os << "group-m must be 0 (per run) or positive (got " << groupM << ")";
    else if (largeTileRows < 0)
      os << "large-tile-rows must be 0 (off) or positive (got " << largeTileRows
         << ")";
    else if (splitKBlocks < 0)
      os << "split-k-blocks must be 0 (off) or positive (got " << splitKBlocks
         << ")";
    else
      return success();
    // (mlir::emitError: no dump of the whole module with the message.)
    mlir::emitError(module.getLoc(), "convert-moe-experts-to-gpu: ") << why;
    return failure();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (failed(checkOptions(module)))
      return signalPassFailure();
    CombineMode mode;
    if (combine == "none")
      mode = CombineMode::None;
    else if (combine == "atomic")
      mode = CombineMode::Atomic;
    else if (combine == "gather")
      mode = CombineMode::Gather;
    else {
      mlir::emitError(module.getLoc(),
                      "convert-moe-experts-to-gpu: combine must be none, "
                      "atomic or gather (got '")
          << combine << "')";
      return signalPassFailure();
    }
    // wgmma.mma_async exists only with sm_90a's architecture-specific
    // features.
    if (wgmma && chip != "sm_90a") {
      // (mlir::emitError: no dump of the whole module with the message.)
      mlir::emitError(module.getLoc(),
                      "convert-moe-experts-to-gpu: wgmma needs chip sm_90a "
                      "(got '")
          << chip << "')";
      return signalPassFailure();
    }
    // TMA feeds the swizzled wgmma tiles only.
    if (tma && !wgmma) {
      mlir::emitError(module.getLoc(),
                      "convert-moe-experts-to-gpu: tma needs wgmma (the "
                      "swizzled wgmma tiles are the ones TMA fills)");
      return signalPassFailure();
    }
    // MoE++'s zero-computation experts: their slots leave the combine as
    // one addend (so that it can be fused below).
    formSpecialKernels(module, kExpertKernelsAttr);
    // Shared experts that join routed experts' kernels (fuse-shared).
    llvm::SmallPtrSet<Operation *, 4> joining;
    if (fuseShared && mode == CombineMode::Atomic)
      module.walk([&](ExpertsOp op) {
        std::string why, whyNot;
        FailureOr<std::pair<Layer, Tiles>> a = analyse(op, why);
        CombineOp c = succeeded(a) ? combineOf(op, whyNot) : CombineOp();
        int64_t index, slices;
        if (c && whyNot.empty())
          if (FFNOp ffn = fusableShared(op, c, a->first, index, slices))
            joining.insert(ffn);
      });
    // The other shared experts: each becomes a one-expert moe.experts where
    // that can take the kernels (else the moe.ffn stays as it was).
    SmallVector<FFNOp> ffns;
    module.walk([&](FFNOp op) {
      if (!joining.contains(op))
        ffns.push_back(op);
    });
    for (FFNOp ffn : ffns) {
      Value gateWeights;
      ExpertsOp e = sharedAsExperts(ffn, gateWeights);
      if (!e)
        continue;
      std::string why;
      if (failed(analyse(e, why))) {
        eraseWithUnusedOperands(e);
        continue;
      }
      OpBuilder b(ffn);
      b.setInsertionPointAfter(e);
      // Gated: g_t x slot, a one-slot combine (fused below like any);
      // else the slot itself.
      Value y =
          gateWeights
              ? CombineOp::create(b, ffn.getLoc(), ffn.getType(), gateWeights,
                                  ValueRange{e.getSlots()}, ValueRange{},
                                  /*bias=*/Value())
                    .getResult()
              : tensor::CollapseShapeOp::create(
                    b, ffn.getLoc(), ffn.getType(), e.getSlots(),
                    SmallVector<ReassociationIndices>{{0, 1}, {2}})
                    .getResult();
      ffn.replaceAllUsesWith(y);
      ffn.erase();
    }

    SmallVector<ExpertsOp> ops;
    module.walk([&](ExpertsOp op) { ops.push_back(op); });
    bool failed = false;
    unsigned counter = 0;
    for (ExpertsOp op : ops) {
      std::string why;
      Layer l;
      Tiles tiles;
      if (FailureOr<std::pair<Layer, Tiles>> a = analyse(op, why);
          succeeded(a))
        std::tie(l, tiles) = *a;
      if (!why.empty()) {
        if (required) {
          op.emitOpError("cannot use the tensor-core expert kernels: ") << why;
          failed = true;
        } else {
          op.emitRemark("moe.experts keeps the generic GPU path: ") << why;
        }
        continue;
      }
      if (wgmma && l.tf32())
        op.emitRemark("f32 experts take tf32 mma.sync tiles (3xTF32), not "
                      "wgmma (bf16 and f16 only)");
      CombineOp fused;
      FFNOp sharedFfn;
      Value sharedLogit;
      if (mode != CombineMode::None) {
        std::string whyNot;
        CombineOp c = combineOf(op, whyNot);
        if (c && whyNot.empty()) {
          fused = c;
          l.combine = mode;
          l.unitWeights = !c.getWeights();
          l.outElt = getElementTypeOrSelf(c.getType());
          int64_t index, slices;
          if (FFNOp ffn = fusableShared(op, c, l, index, slices);
              ffn && joining.contains(ffn)) {
            l.sharedAddend = index;
            l.sharedSlices = slices;
            l.sharedGated = bool(ffn.getGateWeight());
            sharedFfn = ffn;
            // The gate's logits x . w_s (T x 1, f32), once for every kernel
            // set: a moe.linear that convert-moe-linear-to-gpu then forms
            // the warp-per-output kernel of.
            if (l.sharedGated) {
              OpBuilder lb(ffn);
              auto xTy = cast<RankedTensorType>(ffn.getInput().getType());
              sharedLogit = LinearOp::create(
                  lb, ffn.getLoc(),
                  RankedTensorType::get({xTy.getDimSize(0), 1},
                                        lb.getF32Type()),
                  ffn.getInput(), ffn.getGateWeight(), Value());
            }
          }
          for (auto [i, t] : llvm::enumerate(c.getAddends().getTypes()))
            if (int64_t(i) != l.sharedAddend)
              l.addendElts.push_back(getElementTypeOrSelf(t));
          if (Value bias = c.getBias())
            l.biasElt = getElementTypeOrSelf(bias.getType());
        } else if (c) {
          c.emitRemark("moe.combine is not fused into the expert kernels: ")
              << whyNot;
        }
      }
      // Many rows: BM = 128 tiles as well, chosen on the host from T * K
      // (measured on an H100, Mixtral shape, E = 8: 1.2-1.4x faster than
      // BM = 64 from T = 1024, 0.76-0.92x at T <= 128; see
      // benchmarks/RESULTS.md). Where the shape gave BM = 64 (E <= 16, or
      // wgmma) or, since session 23, 32 (E > 16: Qwen3, OLMoE, DeepSeek-V3,
      // whose prefill then re-read each expert's weights once per 32 rows;
      // not measured), and no tile-m was asked for.
      std::optional<Tiles> large;
      if (largeTileRows > 0 && !tileM && (tiles.bm == 64 || tiles.bm == 32)) {
        std::string whyLarge;
        if (FailureOr<Tiles> t =
                chooseTiles(l, 128, tileNGateUp, tileNDown, tileK, stages,
                            warps, dynLimit(), wgmma, wideTiles, whyLarge);
            succeeded(t))
          large = *t;
      }
      // With many experts the bound grows with E / 8: the same 128 rows
      // per expert on average as large-tile-rows gives the 8 experts it was
      // measured with, so that the padding to 128 rows stays small (Qwen3,
      // E = 128, K = 8: from T = 2048).
      int64_t largeRows =
          l.e > 16 ? largeTileRows * (l.e / 8) : int64_t(largeTileRows);
      // A few tokens: the few-token set. Its down GEMM's reduction is split
      // over more blocks (at T = 1 only K tiles have rows: 64 blocks for
      // Mixtral's down), the slices adding into the f32 accumulator with
      // the atomics, and its tiles are 16 rows. The host takes it while
      // T * K * (H / BN2) < split-k-blocks (BN2 of the default set) or
      // T * K < 8 E (an expert's rows fill half a 16-row tile on average).
      std::optional<Tiles> split;
      int64_t splitRows = 0;
      if (splitKBlocks > 0 && l.combine == CombineMode::Atomic) {
        // BM = 16 (ldmatrix + mma.sync, also beside wgmma sets) unless
        // tile-m or warps was given: a few tokens put one or two rows in
        // each busy expert's tile, so a 64-row tile is mostly padding that
        // is copied (zero-filled) and multiplied each K step, and smaller
        // blocks let more of them stream weights per SM.
        // First choice, where the shape and shared memory allow and the
        // reduction still splits: BK 128, gate/up 32 and down 64 columns
        // wide, 4 stages, as vLLM's fused_moe configuration tuned on an
        // H100 for Mixtral at 1 to 32 tokens (E=8,N=7168,device_name=
        // NVIDIA_H100_80GB_HBM3.json: BLOCK_SIZE_M 16, N 64-128, K 128, 4
        // stages): a K step reads 256 contiguous bytes of each weight row,
        // and fewer, longer steps stream the weights. Mixtral: 85 KiB per
        // block, down split in 4. Else BM = 16 with the default BN/BK.
        Tiles t = tiles;
        if (!tileM && !warps) {
          std::string whySmall;
          auto small = [&](int64_t bk, int64_t bn1, int64_t bn2, int64_t st) {
            return chooseTiles(l, 16, tileNGateUp ? tileNGateUp : bn1,
                               tileNDown ? tileNDown : bn2, tileK ? tileK : bk,
                               stages ? stages : st, warps, dynLimit(),
                               /*wgmma=*/false, wideTiles, whySmall);
          };
          // (f32: BK 64, the same 256 bytes of a weight row.)
          if (FailureOr<Tiles> deep = small(l.tf32() ? 64 : 128, 32, 64, 4);
              succeeded(deep) && chooseSplitK(l, *deep, splitKBlocks) > 1)
            t = *deep;
          else if (FailureOr<Tiles> s16 = small(0, 0, 0, 0); succeeded(s16))
            t = *s16;
        }
        t.splitK = chooseSplitK(l, t, splitKBlocks);
        // gate_up has the same few busy tiles: half-width column tiles
        // double its blocks (Qwen3 shape at T = 1: 96 -> 192), unless
        // tile-n-gate-up was given.
        if (!tileNGateUp && t.bn1 >= 32 && (t.bn1 / 2) % (8 * t.warpsN) == 0 &&
            l.f % (t.bn1 / 2) == 0)
          t.bn1 /= 2;
        splitRows = std::max(
            (splitKBlocks + l.h / tiles.bn2 - 1) / (l.h / tiles.bn2), 8 * l.e);
        if ((t.splitK > 1 || t.bm < tiles.bm) &&
            (!large || splitRows < largeRows))
          split = t;
      }
      // A shared expert that joined the kernels has no user left.
      auto eraseShared = [&] {
        if (sharedFfn && sharedFfn->use_empty())
          sharedFfn.erase();
      };
      if (!large && !split) {
        rewrite(op, fused, l, tiles, counter++, sharedLogit);
        eraseShared();
        continue;
      }
      // The sets in the host's order of tests: BM = 128 when T * K >=
      // large-tile-rows, else split-K when T * K < splitRows, else the
      // default set (<func>_experts[_N] as without the branches).
      SmallVector<std::tuple<Tiles, StringRef, arith::CmpIPredicate, int64_t>>
          variants;
      if (large)
        variants.push_back(
            {*large, "_bm128", arith::CmpIPredicate::uge, largeRows});
      if (split)
        variants.push_back(
            {*split, "_splitk", arith::CmpIPredicate::ult, splitRows});
      Operation *replaced = fused ? fused.getOperation() : op.getOperation();
      Location loc = op.getLoc();
      OpBuilder b(replaced);
      Value numTokens = tensor::DimOp::create(b, loc, op.getInput(), 0);
      Value rows = arith::MulIOp::create(
          b, loc, numTokens, arith::ConstantIndexOp::create(b, loc, l.k));
      unsigned index = counter++;
      // Clones op (and the fused combine) into `block`, yields the clone's
      // result there and forms its kernels with `t`.
      auto expand = [&](Block *block, const Tiles &t, StringRef suffix) {
        OpBuilder bb = OpBuilder::atBlockBegin(block);
        IRMapping map;
        auto opC = cast<ExpertsOp>(bb.clone(*op, map));
        CombineOp fusedC =
            fused ? cast<CombineOp>(bb.clone(*fused, map)) : CombineOp();
        Operation *res = fusedC ? fusedC.getOperation() : opC.getOperation();
        scf::YieldOp::create(bb, loc, res->getResults());
        rewrite(opC, fusedC, l, t, index, sharedLogit, suffix);
      };
      Value result;
      Block *elseBlock = nullptr;
      for (auto [t, suffix, pred, bound] : variants) {
        OpBuilder &ib = b;
        if (elseBlock)
          ib.setInsertionPointToStart(elseBlock);
        Value cond = arith::CmpIOp::create(
            ib, loc, pred, rows,
            arith::ConstantIndexOp::create(ib, loc, bound));
        auto branch =
            scf::IfOp::create(ib, loc, replaced->getResultTypes(), cond,
                              /*addThenBlock=*/true, /*addElseBlock=*/true);
        if (elseBlock)
          scf::YieldOp::create(ib, loc, branch.getResults());
        else
          result = branch.getResult(0);
        expand(&branch.getThenRegion().front(), t, suffix);
        elseBlock = &branch.getElseRegion().front();
      }
      expand(elseBlock, tiles, "");
      replaced->getResult(0).replaceAllUsesWith(result);
      if (fused)
        fused.erase();
      op.erase();
      eraseShared();
    }
    if (failed)
      signalPassFailure();
  }

  void rewrite(ExpertsOp op, CombineOp fused, const Layer &l, Tiles tiles,
               unsigned counter, Value sharedLogit, StringRef suffix = "") {
    tiles.vectorRed = vectorRed && computeCapability(chip) >= 90;
    ModuleOp module = getOperation();
    MLIRContext *ctx = &getContext();
    Location loc = op.getLoc();
    BufferTypes bt = bufferTypes(l, ctx);
    auto func = op->getParentOfType<func::FuncOp>();
    std::string base = kernelBaseName(func, "experts", counter, suffix);

    // Kernels, in a gpu.module of their own (moe-gpu-merge-kernel-modules
    // later joins it with the outlined kernels: one binary).
    SymbolTable symbols(module);
    auto gm = createKernelModule(module, symbols, loc, base);
    OpBuilder kb = OpBuilder::atBlockEnd(gm.getBody());
    auto align = buildAlignKernel(kb, loc, l, tiles, bt);
    auto gateUp = buildGemmKernel(kb, loc, GemmKind::GateUp, l, tiles, bt);
    auto down = buildGemmKernel(kb, loc, GemmKind::Down, l, tiles, bt);
    // Atomics into an f32 result need no last pass.
    gpu::GPUFuncOp rowKernel;
    if (l.combine == CombineMode::Gather ||
        (l.combine == CombineMode::Atomic && !l.outElt.isF32()))
      rowKernel = buildRowKernel(kb, loc, l, bt);

    // Host code on buffers in place of the op (of the combine when fused:
    // its weights and addends are defined there, the op's operands too).
    OpBuilder ob(fused ? fused.getOperation() : op.getOperation());
    ImplicitLocOpBuilder b(loc, ob);
    KB k{b};
    Value numTokens = tensor::DimOp::create(b, op.getInput(), 0);
    Value pairs = arith::MulIOp::create(b, numTokens, k.c(l.k));
    // ceil(T*K / BM) + E tiles bound the used ones: sum_e ceil(c_e / BM)
    // <= (T*K + E*(BM-1)) / BM (a fused shared expert: T more pairs, one
    // more expert).
    Value allPairs =
        l.shared()
            ? arith::AddIOp::create(b, pairs, k.mul(numTokens, l.sharedSlices))
            : pairs;
    Value numTiles = k.add(
        arith::CeilDivUIOp::create(b, allPairs, k.c(tiles.bm)), l.experts());
    Value rows = k.mul(numTiles, tiles.bm);

    // The call's operands; each kernel's arguments are named by position.
    SmallVector<Value> operands;
    auto add = [&](Value v) {
      operands.push_back(v);
      return int64_t(operands.size() - 1);
    };
    auto input = [&](Value tensor, MemRefType type) {
      return add(readOnlyBuffer(b, loc, tensor, type));
    };
    auto alloc = [&](MemRefType type, ValueRange sizes) {
      return add(memref::AllocOp::create(b, type, sizes));
    };
    int64_t iX = input(op.getInput(), bt.x);
    // (Uniform: never read, so not filled.)
    int64_t iIdx = l.uniformExpert ? alloc(bt.idx, {numTokens})
                                   : input(op.getIndices(), bt.idx);
    SmallVector<int64_t> iGateUpW;
    if (l.gated)
      iGateUpW.push_back(input(op.getGate(), bt.gate));
    iGateUpW.push_back(input(op.getUp(), bt.up));
    int64_t iDown = input(op.getDown(), bt.down);
    SmallVector<int64_t> iGateUpBias, iDownBias;
    if (l.gateBias)
      iGateUpBias.push_back(input(op.getGateBias(), bt.gateBias));
    if (l.upBias)
      iGateUpBias.push_back(input(op.getUpBias(), bt.upBias));
    int64_t iScale = l.inputScale ? input(op.getInputScale(), bt.weights) : -1;
    if (l.downBias)
      iDownBias.push_back(input(op.getDownBias(), bt.downBias));
    int64_t iWeights = -1, iResult;
    SmallVector<int64_t> iAddends;
    if (fused) {
      // Without combine weights the argument carries the input scales.
      iWeights = l.unitWeights ? iScale : input(fused.getWeights(), bt.weights);
      SmallVector<Value> addendValues(fused.getAddends());
      if (l.shared())
        addendValues.erase(addendValues.begin() + l.sharedAddend);
      for (auto [a, type] : llvm::zip(addendValues, bt.addends))
        iAddends.push_back(input(a, type));
      // The bias follows the addends in every kernel that adds them.
      if (l.biasElt)
        iAddends.push_back(input(fused.getBias(), bt.bias));
      iResult = alloc(bt.y, {numTokens});
    } else {
      iResult = alloc(bt.out, {numTokens});
    }
    int64_t iSorted = alloc(bt.sorted, {rows});
    int64_t iTileExpert = alloc(bt.tileExpert, {numTiles});
    int64_t iMeta = alloc(bt.meta, {});
    int64_t iH = alloc(bt.h, {rows});
    // A fused shared expert's weights (its FFN made the addend).
    SmallVector<int64_t> iSharedGateUp;
    int64_t iSharedDown = -1;
    if (l.shared()) {
      auto ffn = fused.getAddends()[l.sharedAddend].getDefiningOp<FFNOp>();
      if (l.gated)
        iSharedGateUp.push_back(input(ffn.getGate(), bt.sharedGate));
      iSharedGateUp.push_back(input(ffn.getUp(), bt.sharedUp));
      iSharedDown = input(ffn.getDown(), bt.sharedDown);
    }
    int64_t iSharedLogit =
        l.sharedGated ? input(sharedLogit, bt.sharedLogit) : -1;
    int64_t iAcc = -1, iRows = -1, iPos = -1;
    if (l.combine == CombineMode::Atomic)
      iAcc = l.outElt.isF32() ? iResult : alloc(bt.acc, {numTokens});
    if (l.combine == CombineMode::Gather) {
      iRows = alloc(bt.rows, {rows});
      iPos = alloc(bt.pos, {pairs});
    }

    SmallVector<LaunchSpec> launches;
    LaunchSpec a{align, -1, 1, kAlignThreads, {iIdx}};
    if (l.combine == CombineMode::None)
      a.args.push_back(iResult);
    a.args.append({iSorted, iTileExpert, iMeta});
    if (l.combine == CombineMode::Gather)
      a.args.push_back(iPos);
    launches.push_back(a);
    LaunchSpec g{gateUp, iTileExpert, l.f / tiles.bn1, tiles.threads(), {iX}};
    g.args.append(iGateUpW);
    g.args.append(iGateUpBias);
    if (l.inputScale)
      g.args.push_back(iScale);
    g.args.append({iSorted, iTileExpert, iMeta, iH});
    if (l.combine == CombineMode::Atomic) {
      g.args.push_back(iAcc);
      g.args.append(iAddends);
    }
    g.args.append(iSharedGateUp);
    auto dynamicBytes = [&](bool gemmGateUp) -> int64_t {
      int64_t bytes = gemmSmemBytes(l, tiles, gemmGateUp);
      return bytes > kSmemLimit ? bytes : 0;
    };
    g.smem = dynamicBytes(true);
    // CUtensorMapDataType BFLOAT16 9 / FLOAT16 6; CU_TENSOR_MAP_SWIZZLE_128B.
    int64_t mapType = l.elt.isBF16() ? 9 : 6, swizzle128 = 3;
    if (usesTma(l, tiles, true))
      for (int64_t w : iGateUpW)
        g.tensorMaps.push_back(
            {w, {1, tiles.bn1, tiles.bk1}, mapType, swizzle128});
    launches.push_back(g);
    LaunchSpec d{down,
                 iTileExpert,
                 l.h / tiles.bn2 * tiles.splitK,
                 tiles.threads(),
                 {iH, iDown}};
    d.args.append(iDownBias);
    d.args.append({iSorted, iTileExpert, iMeta});
    if (l.combine == CombineMode::None)
      d.args.push_back(iResult);
    else if (l.combine == CombineMode::Atomic)
      d.args.append({iWeights, iAcc});
    else
      d.args.push_back(iRows);
    if (l.shared())
      d.args.push_back(iSharedDown);
    if (l.sharedGated)
      d.args.push_back(iSharedLogit);
    d.smem = dynamicBytes(false);
    if (usesTma(l, tiles, false))
      d.tensorMaps.push_back(
          {iDown, {1, tiles.bn2, tiles.bk2}, mapType, swizzle128});
    launches.push_back(d);
    if (rowKernel) {
      LaunchSpec r{rowKernel, iResult, 1, rowThreads(l), {}};
      if (l.combine == CombineMode::Gather) {
        r.args = {iRows, iPos, iWeights};
        r.args.append(iAddends);
      } else {
        r.args = {iAcc};
      }
      r.args.push_back(iResult);
      launches.push_back(r);
    }

    // The launch declaration: its call is expanded into gpu.launch_func by
    // moe-gpu-launch-expert-kernels once the function is bufferized (the
    // bufferization phase's deallocation refuses ops with unknown effects
    // such as gpu.launch_func, but handles calls).
    Builder attrs(ctx);
    SmallVector<Attribute> launchAttrs;
    for (LaunchSpec &s : launches)
      launchAttrs.push_back(makeLaunch(
          attrs, kernelSymbol(gm, s.kernel), s.args, s.threads, s.gridOperand,
          s.blocksY, /*gridDivisor=*/1, s.smem, s.tensorMaps));
    SmallVector<int64_t> tileList{tiles.bm,  tiles.bn1, tiles.bn2,
                                  tiles.bk1, tiles.bk2, tiles.stages};
    if (tiles.splitK > 1)
      tileList.push_back(tiles.splitK);
    StringRef modeName = l.combine == CombineMode::None     ? "none"
                         : l.combine == CombineMode::Atomic ? "atomic"
                                                            : "gather";
    func::FuncOp decl = declareLaunches(
        func, symbols, base + "_launch", ValueRange(operands).getTypes(),
        kExpertKernelsAttr,
        {attrs.getNamedAttr("combine", attrs.getStringAttr(modeName)),
         attrs.getNamedAttr("launches", attrs.getArrayAttr(launchAttrs)),
         attrs.getNamedAttr("tiles", attrs.getDenseI64ArrayAttr(tileList))});

    func::CallOp::create(b, decl, operands);
    Operation *replaced = fused ? fused.getOperation() : op.getOperation();
    Value result = writtenTensor(b, loc, operands[iResult],
                                 replaced->getResult(0).getType());
    replaced->getResult(0).replaceAllUsesWith(result);
    if (fused)
      fused.erase();
    op.erase();
  }
};

//===----------------------------------------------------------------------===//
// moe-gpu-launch-expert-kernels
//===----------------------------------------------------------------------===//

struct MoEGPULaunchExpertKernels
    : public moe::impl::MoEGPULaunchExpertKernelsBase<
          MoEGPULaunchExpertKernels> {
  void runOnOperation() override {
    if (failed(expandLaunchLists(getOperation(), kExpertKernelsAttr)))
      signalPassFailure();
  }
};

} // namespace

//===----------------------------------------------------------------------===//
// The tensor-core kernel of a moe.linear (MmaLinear.h)
//===----------------------------------------------------------------------===//

namespace {
/// The Layer of a moe.linear on the GEMM kernels: one expert, F the input
/// features, H the outputs.
Layer linearLayer(const MmaLinearSpec &s) {
  Layer l;
  l.e = 1;
  l.k = s.loraR ? s.loraK : 1;
  l.f = s.in;
  l.h = s.out;
  l.elt = s.elt;
  l.act = Activation::relu; // (unused: no gate_up)
  l.downBias = s.biasElt;
  l.outElt = s.resultElt;
  l.loraR = s.loraR;
  l.loraE = s.loraE;
  l.loraB = s.loraBElt;
  l.loraDense = s.loraDense;
  l.loraScale = s.loraScale;
  l.offset = s.loraOffset;
  return l;
}

/// The tiles: the default down kernel's (BM 64, 2 x 2 warps, BN the
/// largest of 128 .. 16 dividing `out`, BK 32 (f32: 16) dividing `in`,
/// 3 stages) in static shared memory.
FailureOr<Tiles> linearTiles(const MmaLinearSpec &s, std::string &why) {
  if (s.in % 16 || s.out % 16) {
    why = "the input features (" + std::to_string(s.in) +
          ") or the outputs (" + std::to_string(s.out) +
          ") are not a multiple of 16";
    return failure();
  }
  // chooseTiles also checks a gate_up kernel of the transposed shape (F
  // columns, H reduction), which these multiples of 16 satisfy.
  return chooseTiles(linearLayer(s), 0, 0, 0, 0, 0, 0, /*dynLimit=*/0,
                     /*wgmma=*/false, /*wideTiles=*/false, why);
}
} // namespace

int64_t mlir::moe::MmaLinearPlan::defaultMinTokens() const {
  return std::max<int64_t>(128, rows * llvm::divideCeil(kMmaMinBlocks, colBlocks));
}

std::string mlir::moe::planMmaLinear(const MmaLinearSpec &s, StringRef chip,
                                     MmaLinearPlan &plan) {
  unsigned sm = computeCapability(chip);
  if (!sm)
    return "unknown chip '" + chip.str() + "'";
  if (sm < 80)
    return "the chip is older than sm_80 (no cp.async / bf16 mma.sync)";
  if (!s.elt)
    return "x and the weight differ in element type";
  if (!s.elt.isBF16() && !s.elt.isF16() && !s.elt.isF32())
    return "the element type is not bf16, f16 or f32";
  std::string why;
  FailureOr<Tiles> t = linearTiles(s, why);
  if (failed(t))
    return why;
  plan.rows = t->bm;
  plan.colBlocks = s.out / t->bn2;
  plan.threads = t->threads();
  return "";
}

gpu::GPUFuncOp mlir::moe::buildMmaLinearKernel(OpBuilder &mb, Location loc,
                                               StringRef name,
                                               const MmaLinearSpec &s) {
  std::string why;
  FailureOr<Tiles> t = linearTiles(s, why);
  assert(succeeded(t) && "buildMmaLinearKernel on a spec planMmaLinear refused");
  return buildGemmKernel(mb, loc, GemmKind::Linear, linearLayer(s), *t,
                         BufferTypes(), name);
}
