//===- Analysis.h - expert importance and similarity for surgery -*- C++
//-*-===//
//
// What expert-set surgery (MOE_SEMANTICS.md §5) decides with: per-expert
// importance under the MC-Suite criteria (weight-based: ewn, rwn, ews, wsr;
// calibration-based: euf, ean, eas, erw), the ranking and drop selection
// they imply, and the SimSMoE similarity of experts' outputs (linear and RBF
// CKA). Calibration statistics are kept per layer in a `LayerStats` and
// stored in a "moe-calib/1" JSON file (docs/notes/surgery-analysis.md).
//
// Everything is plain C++17 in f64, with no LLVM/MLIR and no reference
// library: the code that routes calibration tokens and evaluates experts is
// passed in (`ExpertFn`, indices/weights), so this library stays as small as
// the rest of the runtime.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_ANALYSIS_H
#define MOE_RUNTIME_ANALYSIS_H

#include "moe/Runtime/Runtime.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace moe::rt::analysis {

//===----------------------------------------------------------------------===//
// Criteria
//===----------------------------------------------------------------------===//

enum class Criterion { ewn, rwn, ews, wsr, euf, ean, eas, erw };

/// Every criterion, in the order of §5.
const std::vector<Criterion> &allCriteria();
std::optional<Criterion> parseCriterion(const std::string &name);
const char *criterionName(Criterion c);
/// One line saying what the score is.
const char *criterionDescription(Criterion c);
/// euf, ean, eas, erw read calibration statistics; the others read weights.
bool needsCalibration(Criterion c);
/// ews and eas score redundancy: a higher score marks an expert that is
/// more like the others, so it is dropped first. For the others a lower
/// score is a less important expert.
bool higherIsRedundant(Criterion c);

//===----------------------------------------------------------------------===//
// Inputs: one layer's expert weights, its calibration statistics
//===----------------------------------------------------------------------===//

/// The routed FFN experts of one layer, row-major, in the PyTorch
/// convention (W ∈ R^{out×in}). Empty vectors are absent tensors. Kept as
/// f32 (exact for f32/f16/bf16 checkpoints, half the memory of f64); every
/// sum over them accumulates in f64.
struct ExpertWeights {
  int64_t E = 0, H = 0, F = 0;
  std::vector<float> router;         // E x H
  std::vector<float> gate, up, down; // E x F x H, E x F x H, E x H x F
  std::vector<float> gateBias, upBias, downBias; // E x F, E x F, E x H

  /// Checks every present tensor's size against E, H, F.
  Status validate() const;
};

/// What a calibration run recorded for one layer. `samples` tokens (the
/// first `samples` calibration tokens) are run through EVERY expert,
/// whether routed there or not, so that two experts' outputs are paired
/// token by token, as CKA needs.
struct LayerStats {
  int64_t index = 0;  // decoder layer index
  int64_t E = 0;      // routed experts
  int64_t H = 0;      // hidden size
  int64_t K = 0;      // slots per token
  int64_t tokens = 0; // calibration tokens T
  /// Per expert (E): tokens routed to it; the sum of their routing weights;
  /// the sum of ‖Expert_e(x_t)‖₂ over them.
  std::vector<int64_t> routedCounts;
  std::vector<double> weightSums, outputNormSums;
  /// E x E: tokens routed to both i and j (the diagonal is routedCounts).
  std::vector<int64_t> coSelection;
  /// n, and E x n x H: Expert_e(x_t) for the first n tokens t.
  int64_t samples = 0;
  std::vector<double> outputSamples;

  const double *sample(int64_t e) const {
    return outputSamples.data() + e * samples * H;
  }
  /// Checks every vector's size against E, H, samples.
  Status validate() const;
};

/// A calibration file: where it came from and one LayerStats per analysed
/// layer.
struct Calibration {
  std::string model; // the compiled model directory, as given
  std::string input; // "random" or the .npy path
  int64_t seed = 0;  // of the random inputs
  std::vector<LayerStats> layers;

  /// The statistics of decoder layer `index`, or nullptr.
  const LayerStats *layer(int64_t index) const;
};

/// "moe-calib/1" as text, and back. Sums are written with 17 significant
/// digits (they read back exactly), output samples with 9 (a relative
/// error below 5e-9, far under what CKA resolves, at half the size).
std::string calibrationToJson(const Calibration &c);
Result<Calibration> parseCalibration(const std::string &text,
                                     const std::string &where);
Status writeCalibration(const std::string &path, const Calibration &c);
Result<Calibration> readCalibration(const std::string &path);

/// Evaluates expert `expert` on one token: `x` has H values, `out` gets H.
using ExpertFn =
    std::function<void(int64_t expert, const double *x, double *out)>;

/// Computes a layer's statistics from its calibration inputs `x` (T x H)
/// and their routing (`indices`, `weights`: T x K, index -1 = empty slot).
/// The first `samples` tokens (clamped to T) are run through every expert.
/// When `combined` is given it receives Σ_k w_{t,k} Expert_{i_{t,k}}(x_t)
/// (T x H), the routed part of the layer's output, for checking the
/// evaluation against a compiled layer. With `scaleInput` (a Llama 4
/// `scale_input` layer) a routed slot's output is Expert_{i_{t,k}}(w_{t,k}
/// x_t), summed with weight 1, and its norm is what `ean` adds up; the
/// samples stay Expert_e(x_t), every expert on the same inputs.
Result<LayerStats> computeLayerStats(
    int64_t index, const std::vector<double> &x, int64_t T, int64_t H,
    int64_t E, int64_t K, const std::vector<int> &indices,
    const std::vector<double> &weights, const ExpertFn &expert, int64_t samples,
    std::vector<double> *combined = nullptr, bool scaleInput = false);

//===----------------------------------------------------------------------===//
// Scores, ranking, drop selection
//===----------------------------------------------------------------------===//

/// Cosine similarity of two n-vectors (0 when either is zero).
double cosine(const double *a, const double *b, int64_t n);
/// σ_max(W)² of a rows x cols matrix by power iteration on WᵀW (or WWᵀ,
/// whichever is smaller), from a fixed start vector; relative error ~1e-10
/// unless σ2/σ1 is within ~1e-3 of 1 (at most 3000 iterations).
double spectralNormSquared(const double *w, int64_t rows, int64_t cols);
double spectralNormSquared(const float *w, int64_t rows, int64_t cols);
/// Stable rank ‖W‖_F² / σ_max(W)² = Σσ²/σ_max² (0 for W = 0).
double stableRank(const double *w, int64_t rows, int64_t cols);
double stableRank(const float *w, int64_t rows, int64_t cols);
/// The E x E inner products ⟨flat_a, flat_b⟩ of the experts' tensors
/// (gate, up, down and biases, flattened and concatenated), without
/// materialising the flattened vectors. ewn_e = √G_ee; ews from G.
std::vector<double> expertGram(const ExpertWeights &w);

/// The score of every expert under `c`. Weight-based criteria read
/// `weights`, calibration-based ones `stats`; the one needed must be
/// given. `wsr` is the stable rank of the down projection (H x F), the
/// expert's map into the residual stream; `ewn` and `ews` use all of the
/// expert's tensors (gate, up, down and their biases).
Result<std::vector<double>>
importance(Criterion c, const ExpertWeights *weights, const LayerStats *stats);

/// Experts ordered least important first (for ews/eas: most redundant
/// first). Equal scores keep the lower expert id first.
std::vector<int64_t> rankExperts(Criterion c,
                                 const std::vector<double> &scores);

/// The experts to drop so that `keep` remain: the first E − keep of the
/// ranking, sorted by id. `keep` is clamped to [0, E].
std::vector<int64_t> selectDrop(Criterion c, const std::vector<double> &scores,
                                int64_t keep);
/// As selectDrop with keep = round(keepRatio · E), at least 1 when E > 0.
std::vector<int64_t> selectDropRatio(Criterion c,
                                     const std::vector<double> &scores,
                                     double keepRatio);
int64_t keepCountForRatio(int64_t E, double keepRatio);

//===----------------------------------------------------------------------===//
// Similarity (CKA)
//===----------------------------------------------------------------------===//

enum class CKAKind { linear, rbf };
std::optional<CKAKind> parseCKAKind(const std::string &name);
constexpr double kDefaultRbfSigma = 0.8;

/// Linear CKA of X (n x dx) and Y (n x dy), row-major, paired by row:
/// ‖YᵀX‖_F² / (‖XᵀX‖_F · ‖YᵀY‖_F) after centring columns, in f64, through
/// the n x n Gram matrices or the d x d products, whichever is cheaper.
/// 0 when either side is constant.
double linearCKA(const double *X, const double *Y, int64_t n, int64_t dx,
                 int64_t dy);
/// RBF CKA: K_ij = exp(−‖x_i−x_j‖²/(2σ²)), HSIC(K,L) = tr(KHLH),
/// CKA = HSIC(K,L)/√(HSIC(K,K)·HSIC(L,L)). 0 when either side is constant.
double rbfCKA(const double *X, const double *Y, int64_t n, int64_t dx,
              int64_t dy, double sigma = kDefaultRbfSigma);
/// The E x E matrix of pairwise CKA of the experts' output samples.
Result<std::vector<double>> ckaMatrix(const LayerStats &s, CKAKind kind,
                                      double sigma = kDefaultRbfSigma);

//===----------------------------------------------------------------------===//
// Merge groups (M-SMoE)
//===----------------------------------------------------------------------===//

/// The cosine similarity of the experts' flattened weights (the tensors of
/// `ewn`), E x E, from expertGram. 0 against an all-zero expert.
std::vector<double> weightCosineMatrix(const ExpertWeights &w);

/// Groups of experts to merge, from an E x E similarity `sim` and usage
/// frequencies `freq` (E). Experts are visited most used first (ties: lower
/// id). With `target` > 0 (M-SMoE): the `target` most used experts are the
/// centres and every other expert joins the centre it is most similar to.
/// Otherwise (`target` = 0): an expert joins the most similar centre when
/// that similarity is at least `threshold`, else it becomes a centre. Ties
/// between centres go to the more used one. Each group is sorted by id and
/// the groups by their smallest member (the merge pass's numbering);
/// singletons are included.
std::vector<std::vector<int64_t>> mergeGroups(const std::vector<double> &sim,
                                              const std::vector<double> &freq,
                                              int64_t target, double threshold);

} // namespace moe::rt::analysis

#endif // MOE_RUNTIME_ANALYSIS_H
