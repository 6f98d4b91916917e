//===- Reference.h - the MoE semantics contract in plain C++ ----*- C++ -*-===//
//
// An independent implementation of shared/MOE_SEMANTICS.md, written from the
// contract and sharing no code with the compiler, accumulating in double. The
// tests compare compiled layers against it. No LLVM/MLIR dependency.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_REFERENCE_REFERENCE_H
#define MOE_REFERENCE_REFERENCE_H

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace moe::ref {

enum class Scoring { softmax, sigmoid, none };
enum class Selection {
  topk,
  group_limited_topk,
  top_p,
  topk_then_softmax,
  dense,
  hierarchical,
  sparsemixer
};
enum class GroupScore { max, top2_sum };
enum class Activation {
  swiglu,
  geglu,
  gelu,
  gelu_tanh,
  relu,
  relu2,
  swiglu_clamped
};
enum class Special { zero, copy, constant };

/// §1: everything that turns logits into (indices, weights).
struct Routing {
  Scoring scoring = Scoring::softmax;
  Selection selection = Selection::topk;
  int k = 1;
  int nGroup = 1;
  int topkGroup = 1;
  GroupScore groupScore = GroupScore::max;
  double topP = 1.0;
  bool renormalize = false;
  double scalingFactor = 1.0;
  double tauGroup = 1.0, tauExpert = 1.0;
  /// sparsemixer's mask threshold is 2 * jitterEps.
  double jitterEps = 0.0;
};

/// Parses the text of a `#moe.routing<...>` attribute.
std::optional<Routing> parseRouting(const std::string &text, std::string &err);
std::optional<Activation> parseActivation(const std::string &name);
std::optional<Special> parseSpecial(const std::string &name);

/// (indices, weights), T x K row-major; -1 / 0 in empty slots.
struct Routed {
  std::vector<int> indices;
  std::vector<double> weights;
  /// Per token: a selection decision was within `tieTolerance` of going the
  /// other way, so a compiled layer (f32 logits) may legitimately differ.
  std::vector<bool> nearTie;
  /// Per token: two of the chosen experts' keys within `tieTolerance` of
  /// each other, so a compiled layer may put them in its slots in the other
  /// order (an exact tie in double can be an ulp apart in f32:
  /// hierarchical routing's ties across groups). Only capacity dispatch,
  /// which admits pairs by slot, depends on that order. Not widened by a
  /// LogitSlack.
  std::vector<bool> orderTie;
};

/// How far a compiled layer's logits may be from the reference's beyond the
/// f32 rounding that `tieTolerance` covers, because the compiled layer's
/// input was itself rounded (the second layer of a Cartesian layer):
/// `single(t, e)` bounds |dz_e| of token t, `pair(t, e, f)` bounds
/// |dz_e - dz_f| (the router bias cancels there, so it is often tighter than
/// the sum of the two singles).
struct LogitSlack {
  std::function<double(int64_t t, int e)> single;
  std::function<double(int64_t t, int e, int f)> pair;
};

/// `logits`: T x E; `groupLogits`: T x nGroup (hierarchical only, else
/// empty); `selectionBias`: E or empty. With `slack` (and `groupSlack` for
/// the group logits of hierarchical routing), a decision is also a near tie
/// when the logits' slack could reverse it: for top-k on scores that are
/// increasing in the logits (softmax, sigmoid, none; topk_then_softmax; no
/// selection bias) when a chosen and an unchosen expert are closer in logit
/// than their pair slack; otherwise when the score intervals that the single
/// slacks give overlap (group scores, top_p sums likewise).
Routed route(const Routing &r, const std::vector<double> &logits, int64_t T,
             int64_t E, const std::vector<double> &groupLogits,
             const std::vector<double> &selectionBias,
             double tieTolerance = 1e-4, const LogitSlack *slack = nullptr,
             const LogitSlack *groupSlack = nullptr);

/// §2 capacity dispatch in place; returns the number of dropped pairs.
/// The tokens whose capacity admissions another resolution of `routed`'s
/// ties could change, the tie tokens included: capacity admits an expert's
/// pairs in (slot, token) order, each expert on its own count, so a tie of
/// token t0 changes that count by at most one from (slot 0, t0) on (a near
/// tie for any expert, an order tie for t0's own experts), and a pair's
/// admission can only change where its expert's count before it is within
/// that many of the capacity. `routed` is the routing before dispatch.
std::vector<bool> capacityTaint(const Routed &routed, int64_t T, int64_t K,
                                int64_t E, int64_t capacity);

int64_t capacityDispatch(Routed &routed, int64_t T, int64_t K, int64_t E,
                         int64_t capacity);

/// §2: each expert's capacity, `ceil(capacityFactor * T * K / E)`.
int64_t expertCapacity(int64_t T, int64_t K, int64_t E, double capacityFactor);

/// §3 activation on (gate, up) pre-activations (gate unused when not gated).
double activate(Activation a, double gate, double up, double alpha,
                double limit);
bool isGated(Activation a);

/// A whole layer (§1-§3), weights row-major in the PyTorch convention. Empty
/// vectors mean "absent".
struct Layer {
  int64_t H = 0;
  Routing routing;
  std::vector<double> router, routerBias, selectionBias, groupRouter;
  std::vector<double> domainEmbeddings, projW1, projW2; // E x m, 2h' x m, H x h'
  // Routed FFN experts: E x F x H, E x F x H, E x H x F; biases E x F / E x H.
  int64_t numRouted = 0, F = 0;
  Activation activation = Activation::swiglu;
  double alpha = 1.702, limit = 7.0;
  std::vector<double> gate, up, down, gateBias, upBias, downBias;
  // LoRA experts over a shared base: H x H, E x r x H, E x H x r.
  int64_t loraRank = 0;
  double loraAlpha = 0;
  std::vector<double> loraBase, loraA, loraB;
  // Zero-computation experts, ids after the routed ones.
  std::vector<Special> special;
  std::vector<double> constRouter, constVectors; // Nc x 2 x H, Nc x H
  // One shared expert: Fs x H, Fs x H, H x Fs; gate weight 1 x H.
  int64_t sharedF = 0;
  Activation sharedActivation = Activation::swiglu;
  std::vector<double> sharedGate, sharedUp, sharedDown, sharedGateWeight;
  // Added to every token's output once (moe.layer `output_bias`, JetMoE).
  std::vector<double> outputBias;
  bool capacity = false;
  double capacityFactor = 1.0;
  // A fixed capacity per call (moe.layer `expert_capacity`, Switch
  // Transformers); -1: from capacityFactor.
  int64_t fixedCapacity = -1;
  // Llama 4: the routing weight scales the FFN expert's input, not its
  // output (moe.layer `scale_input`).
  bool scaleInput = false;
  // §5 merge: router row j (< size) selects routed expert expertMap[j];
  // empty: the identity.
  std::vector<int> expertMap;

  /// Router rows: what routing selects from.
  int64_t numExperts() const {
    return (expertMap.empty() ? numRouted : (int64_t)expertMap.size()) +
           (int64_t)special.size();
  }
};

struct LayerResult {
  std::vector<double> y; // T x H
  int64_t dropped = 0;
  Routed routed;
  /// Capacity dispatch only (runLayer; empty for a Cartesian layer): per
  /// token, whether another resolution of the near and order ties
  /// (`routed.nearTie`, `routed.orderTie`) could change the admission of one
  /// of its pairs (capacityTaint); its output is then not comparable.
  std::vector<bool> capacityTaint;
};

/// Bounds on how far the input a compiled layer sees may be from the exact
/// `x` the reference is given, token t's element j:
///   x'[t,j] = (1 + s_t) x[t,j] + sum_k d_k[t,j],  |s_t| <= scale[t],
///   |d_k[t,j]| <= terms[k][t*H + j],
/// the d_k independent zero-mean rounding errors (the probabilistic model of
/// Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019), s_t an error common to
/// the whole row (RMSNorm's 1/rms). Empty `scale` means 0.
struct InputSlack {
  std::vector<double> scale;
  std::vector<std::vector<double>> terms;
};

/// The slack of logits w.x computed from such an input: for rows a
/// (a = W_e for one logit, W_e - W_f for a difference),
///   min(sum_kj |a_j| c_kj, lambda sqrt(sum_kj a_j^2 c_kj^2)) + scale_t |a.x_t|
/// with c_kj = terms[k][t*H + j]: the worst case, or Hoeffding's bound, which
/// fails with probability at most 2 exp(-lambda^2 / 2) (3e-8 for
/// kSlackLambda = 6) per decision.
constexpr double kSlackLambda = 6.0;

/// `inputSlack`: the input's rounding (see InputSlack), which makes routing
/// decisions closer than its effect on the logits near ties too.
LayerResult runLayer(const Layer &layer, const std::vector<double> &x,
                     int64_t T, double tieTolerance = 1e-4,
                     const InputSlack *inputSlack = nullptr);

/// §4 Cartesian layer: h = x + A(x); y = B(rmsnorm(h)) (no norm when
/// `normWeight` is empty). `tieTolerance` as for runLayer; `nearTie` of the
/// result covers both sub-layers. `roundoff`: the unit roundoff u of the
/// dtype in which the compiled layer holds its intermediates (2^-8 for bf16,
/// 2^-11 for f16, 2^-24 for f32; 0: exact). The compiled layer rounds A's
/// output, h and rmsnorm(h) to that dtype (each by at most u relative) before
/// B routes on them, so B's decisions are near ties also where that rounding
/// could reverse them (InputSlack).
LayerResult runCartesian(const Layer &first, const Layer &second,
                         const std::vector<double> &normWeight, double epsilon,
                         const std::vector<double> &x, int64_t T,
                         double tieTolerance = 1e-4, double roundoff = 0);

} // namespace moe::ref

#endif // MOE_REFERENCE_REFERENCE_H
