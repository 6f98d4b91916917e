//===- AnalysisTests.cpp - criteria, CKA, calibration file, PNG -*- C++ -*-===//
//
//   moe-analysis-tests [seed]
//
// Checks moe/Runtime/Analysis.h against hand-worked cases and identities:
// CKA(X,X) = 1, invariance to orthogonal transforms and isotropic scaling,
// linear CKA against a direct HSIC computation with the n x n centring
// matrix, RBF CKA symmetry; ewn/rwn/ews/wsr on small known matrices;
// euf/ean/erw/eas from statistics; ranking order and drop selection;
// computeLayerStats on hand routing; the calibration file round trip and
// its errors; the PNG writer's checksums. Random data is seeded (the seed is
// printed; pass another as the argument). Ends with "N passed, N failed".
//
//===----------------------------------------------------------------------===//

#include "Png.h"
#include "moe/Runtime/Analysis.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <unistd.h>

using namespace moe::rt;
using namespace moe::rt::analysis;

namespace {
int passed = 0, failed = 0;

void check(bool ok, const std::string &what) {
  if (ok) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

void near(double got, double want, double tol, const std::string &what) {
  bool ok = std::fabs(got - want) <= tol;
  if (!ok)
    std::printf("  %s: got %.17g, want %.17g (tolerance %g)\n", what.c_str(),
                got, want, tol);
  check(ok, what);
}

std::mt19937_64 rng;

std::vector<float> toFloat(const std::vector<double> &v) {
  return std::vector<float>(v.begin(), v.end());
}

std::vector<double> randomMatrix(int64_t rows, int64_t cols, double scale = 1) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> m(rows * cols);
  for (double &v : m)
    v = d(rng);
  return m;
}

/// A random orthogonal d x d matrix: Gram-Schmidt on Gaussian columns.
std::vector<double> randomOrthogonal(int64_t d) {
  std::vector<double> q = randomMatrix(d, d);
  // Columns of q (stored row-major, q[r*d+c]) orthonormalised in turn
  // (modified Gram-Schmidt, twice for accuracy).
  for (int pass = 0; pass < 2; ++pass)
    for (int64_t c = 0; c < d; ++c) {
      for (int64_t p = 0; p < c; ++p) {
        double dot = 0;
        for (int64_t r = 0; r < d; ++r)
          dot += q[r * d + c] * q[r * d + p];
        for (int64_t r = 0; r < d; ++r)
          q[r * d + c] -= dot * q[r * d + p];
      }
      double n = 0;
      for (int64_t r = 0; r < d; ++r)
        n += q[r * d + c] * q[r * d + c];
      n = std::sqrt(n);
      for (int64_t r = 0; r < d; ++r)
        q[r * d + c] /= n;
    }
  return q;
}

/// A (n x k) · B (k x m).
std::vector<double> matmul(const std::vector<double> &a,
                           const std::vector<double> &b, int64_t n, int64_t k,
                           int64_t m) {
  std::vector<double> c(n * m, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = 0; p < k; ++p)
      for (int64_t j = 0; j < m; ++j)
        c[i * m + j] += a[i * k + p] * b[p * m + j];
  return c;
}

/// tr(K H L H) with H = I − 11ᵀ/n formed explicitly: the O(n³) textbook
/// definition, sharing nothing with the library.
double hsicDirect(const std::vector<double> &K, const std::vector<double> &L,
                  int64_t n) {
  std::vector<double> H(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      H[i * n + j] = (i == j ? 1.0 : 0.0) - 1.0 / (double)n;
  std::vector<double> khlh =
      matmul(matmul(matmul(K, H, n, n, n), L, n, n, n), H, n, n, n);
  double tr = 0;
  for (int64_t i = 0; i < n; ++i)
    tr += khlh[i * n + i];
  return tr;
}

/// Linear CKA through uncentred Gram matrices K = XXᵀ and HSIC.
double linearCKADirect(const std::vector<double> &X,
                       const std::vector<double> &Y, int64_t n, int64_t dx,
                       int64_t dy) {
  std::vector<double> K(n * n, 0.0), L(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t c = 0; c < dx; ++c)
        K[i * n + j] += X[i * dx + c] * X[j * dx + c];
      for (int64_t c = 0; c < dy; ++c)
        L[i * n + j] += Y[i * dy + c] * Y[j * dy + c];
    }
  return hsicDirect(K, L, n) /
         std::sqrt(hsicDirect(K, K, n) * hsicDirect(L, L, n));
}

double rbfCKADirect(const std::vector<double> &X, const std::vector<double> &Y,
                    int64_t n, int64_t dx, int64_t dy, double sigma) {
  auto kernel = [&](const std::vector<double> &A, int64_t d) {
    std::vector<double> K(n * n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t c = 0; c < d; ++c)
          s += (A[i * d + c] - A[j * d + c]) * (A[i * d + c] - A[j * d + c]);
        K[i * n + j] = std::exp(-s / (2 * sigma * sigma));
      }
    return K;
  };
  std::vector<double> K = kernel(X, dx), L = kernel(Y, dy);
  return hsicDirect(K, L, n) /
         std::sqrt(hsicDirect(K, K, n) * hsicDirect(L, L, n));
}

//===----------------------------------------------------------------------===//

void testCKA() {
  const int64_t n = 40, d = 12;
  std::vector<double> X = randomMatrix(n, d);
  // Y: a noisy linear function of X in another width.
  std::vector<double> Y = matmul(X, randomMatrix(d, 7), n, d, 7);
  std::vector<double> noise = randomMatrix(n, 7, 0.5);
  for (size_t i = 0; i < Y.size(); ++i)
    Y[i] += noise[i];

  near(linearCKA(X.data(), X.data(), n, d, d), 1.0, 1e-12,
       "linear CKA(X,X) = 1");
  near(rbfCKA(X.data(), X.data(), n, d, d), 1.0, 1e-12, "RBF CKA(X,X) = 1");
  double xy = linearCKA(X.data(), Y.data(), n, d, 7);
  check(xy > 0 && xy < 1, "0 < linear CKA(X,Y) < 1");
  near(linearCKA(Y.data(), X.data(), n, 7, d), xy, 1e-12,
       "linear CKA is symmetric");

  // Orthogonal transforms and isotropic scaling of either side.
  std::vector<double> Q = randomOrthogonal(d);
  std::vector<double> XQ = matmul(X, Q, n, d, d);
  near(linearCKA(XQ.data(), Y.data(), n, d, 7), xy, 1e-10,
       "linear CKA invariant to X -> XQ (Q orthogonal)");
  std::vector<double> Xs = X;
  for (double &v : Xs)
    v *= 3.7;
  near(linearCKA(Xs.data(), Y.data(), n, d, 7), xy, 1e-12,
       "linear CKA invariant to X -> 3.7 X");
  // RBF CKA with a fixed σ is invariant to orthogonal maps (distances
  // stay), not to scaling.
  double rxy = rbfCKA(X.data(), Y.data(), n, d, 7, 4.0);
  near(rbfCKA(XQ.data(), Y.data(), n, d, 7, 4.0), rxy, 1e-10,
       "RBF CKA invariant to X -> XQ");
  near(rbfCKA(Y.data(), X.data(), n, 7, d, 4.0), rxy, 1e-12,
       "RBF CKA is symmetric");
  // Translation: columns are centred (linear), distances unchanged (RBF).
  std::vector<double> Xt = X;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < d; ++c)
      Xt[i * d + c] += 0.5 * (double)c - 1.0;
  near(linearCKA(Xt.data(), Y.data(), n, d, 7), xy, 1e-12,
       "linear CKA invariant to a translation");

  // Against the direct HSIC computation, in both regimes of the library
  // (n x n Gram form when n is small, d x d form when n is large).
  near(xy, linearCKADirect(X, Y, n, d, 7), 1e-10,
       "linear CKA = HSIC form (n=40 > d)");
  {
    const int64_t n2 = 6, d2 = 30;
    std::vector<double> A = randomMatrix(n2, d2), B = randomMatrix(n2, d2);
    near(linearCKA(A.data(), B.data(), n2, d2, d2),
         linearCKADirect(A, B, n2, d2, d2), 1e-10,
         "linear CKA = HSIC form (n=6 < d)");
  }
  near(rbfCKA(X.data(), Y.data(), n, d, 7, 0.8),
       rbfCKADirect(X, Y, n, d, 7, 0.8), 1e-10, "RBF CKA = HSIC form (σ=0.8)");
  near(rxy, rbfCKADirect(X, Y, n, d, 7, 4.0), 1e-10,
       "RBF CKA = HSIC form (σ=4)");

  // Degenerate: a constant side gives 0, not NaN.
  std::vector<double> C(n * d, 2.5);
  check(linearCKA(C.data(), X.data(), n, d, d) == 0,
        "linear CKA with a constant side = 0");
  check(rbfCKA(C.data(), X.data(), n, d, d) == 0,
        "RBF CKA with a constant side = 0");
}

void testCKAMatrix() {
  // Four experts on the same n tokens: e1 = e0·Q, e2 = 2·e0, e3 unrelated.
  const int64_t n = 24, H = 10, E = 4;
  LayerStats s;
  s.index = 3;
  s.E = E;
  s.H = H;
  s.K = 1;
  s.tokens = n;
  s.samples = n;
  s.routedCounts.assign(E, 0);
  s.weightSums.assign(E, 0);
  s.outputNormSums.assign(E, 0);
  s.coSelection.assign(E * E, 0);
  std::vector<double> x0 = randomMatrix(n, H);
  std::vector<double> x1 = matmul(x0, randomOrthogonal(H), n, H, H);
  std::vector<double> x3 = randomMatrix(n, H);
  s.outputSamples = x0;
  s.outputSamples.insert(s.outputSamples.end(), x1.begin(), x1.end());
  for (double v : x0)
    s.outputSamples.push_back(2 * v);
  s.outputSamples.insert(s.outputSamples.end(), x3.begin(), x3.end());
  for (CKAKind kind : {CKAKind::linear, CKAKind::rbf}) {
    std::string name = kind == CKAKind::linear ? "linear" : "rbf";
    auto m = ckaMatrix(s, kind);
    check(m.isOk(), name + " CKA matrix computed");
    if (!m)
      continue;
    auto &v = m.value();
    bool symmetric = true, unitDiagonal = true;
    for (int64_t i = 0; i < E; ++i) {
      unitDiagonal &= std::fabs(v[i * E + i] - 1) < 1e-12;
      for (int64_t j = 0; j < E; ++j)
        symmetric &= v[i * E + j] == v[j * E + i];
    }
    check(symmetric, name + " CKA matrix is symmetric");
    check(unitDiagonal, name + " CKA matrix has a unit diagonal");
    near(v[0 * E + 1], 1.0, 1e-10, name + " CKA(e0, e0·Q) = 1");
    near(v[0 * E + 3],
         kind == CKAKind::linear ? linearCKA(s.sample(0), s.sample(3), n, H, H)
                                 : rbfCKA(s.sample(0), s.sample(3), n, H, H),
         1e-12, name + " matrix entry = pairwise CKA");
    if (kind == CKAKind::linear)
      near(v[0 * E + 2], 1.0, 1e-12, "linear CKA(e0, 2·e0) = 1");
  }
  // The d x d path of the matrix (n > H) agrees with the pairwise function.
  LayerStats wide = s;
  wide.H = 2;
  wide.samples = n;
  wide.tokens = n;
  wide.outputSamples.resize(E * n * 2);
  for (double &v : wide.outputSamples)
    v = randomMatrix(1, 1)[0];
  auto m = ckaMatrix(wide, CKAKind::linear);
  check(m.isOk() &&
            std::fabs(m.value()[1] - linearCKA(wide.sample(0), wide.sample(1),
                                               n, 2, 2)) < 1e-12,
        "linear CKA matrix, d x d path, = pairwise CKA");
  LayerStats one = s;
  one.samples = 1;
  one.outputSamples.resize(E * H);
  check(!ckaMatrix(one, CKAKind::linear).isOk(), "CKA matrix needs 2 samples");
}

void testStableRank() {
  // Rank 1: u vᵀ.
  std::vector<double> u = randomMatrix(5, 1), v = randomMatrix(1, 7);
  std::vector<double> r1 = matmul(u, v, 5, 1, 7);
  near(stableRank(r1.data(), 5, 7), 1.0, 1e-9, "stable rank of u vᵀ = 1");
  // Orthogonal n x n: every σ = 1.
  std::vector<double> Q = randomOrthogonal(9);
  near(stableRank(Q.data(), 9, 9), 9.0, 1e-9,
       "stable rank of orthogonal 9x9 = 9");
  // diag(3, 2, 1) in a 3 x 4 matrix: (9+4+1)/9; and its transpose.
  std::vector<double> D = {3, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0};
  near(stableRank(D.data(), 3, 4), 14.0 / 9.0, 1e-9,
       "stable rank of diag(3,2,1) = 14/9");
  std::vector<double> Dt(12);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c)
      Dt[c * 3 + r] = D[r * 4 + c];
  near(stableRank(Dt.data(), 4, 3), 14.0 / 9.0, 1e-9,
       "stable rank of the transpose = 14/9");
  near(spectralNormSquared(D.data(), 3, 4), 9.0, 1e-8, "σ_max² of diag(3,2,1)");
  // Close top singular values converge too, if slowly: diag(1, 0.99) to
  // full accuracy, diag(1, 0.999) within the iteration cap to ~1e-6.
  std::vector<double> close = {1, 0, 0, 0.99};
  near(spectralNormSquared(close.data(), 2, 2), 1.0, 1e-9,
       "σ_max² with σ2/σ1 = 0.99");
  close[3] = 0.999;
  near(spectralNormSquared(close.data(), 2, 2), 1.0, 1e-6,
       "σ_max² with σ2/σ1 = 0.999");
  // A random 30 x 50 matrix: σ_max² of W equals that of Wᵀ, and the
  // stable rank lies in [1, 30].
  std::vector<double> R = randomMatrix(30, 50), Rt(50 * 30);
  for (int r = 0; r < 30; ++r)
    for (int c = 0; c < 50; ++c)
      Rt[c * 30 + r] = R[r * 50 + c];
  double sr = stableRank(R.data(), 30, 50);
  near(spectralNormSquared(R.data(), 30, 50),
       spectralNormSquared(Rt.data(), 50, 30), 1e-8 * sr * 50,
       "σ_max²(W) = σ_max²(Wᵀ)");
  check(sr >= 1 && sr <= 30, "1 <= stable rank <= min(rows, cols)");
  std::vector<float> Qf = toFloat(Q);
  near(stableRank(Qf.data(), 9, 9), 9.0, 1e-5,
       "stable rank of an f32 orthogonal 9x9 = 9");
  std::vector<double> zero(6, 0.0);
  check(stableRank(zero.data(), 2, 3) == 0, "stable rank of 0 = 0");
}

ExpertWeights smallWeights() {
  // E = 3, H = 2, F = 1; expert e's tensors are hand-picked.
  ExpertWeights w;
  w.E = 3;
  w.H = 2;
  w.F = 1;
  w.router = {3, 4, 0, 1, 1, 1}; // ‖·‖ = 5, 1, √2
  w.gate = {1, 0, 0, 0, 2, 2};   // E x 1 x 2
  w.up = {0, 2, 0, 0, 2, 2};     // E x 1 x 2
  w.down = {2, 0, 0, 1, 2, 2};   // E x 2 x 1
  return w;
}

void testWeightCriteria() {
  ExpertWeights w = smallWeights();
  auto ewn = importance(Criterion::ewn, &w, nullptr);
  check(ewn.isOk(), "ewn computed");
  if (ewn) {
    near(ewn.value()[0], 3.0, 1e-12, "ewn(e0) = √(1+4+4) = 3");
    near(ewn.value()[1], 1.0, 1e-12, "ewn(e1) = 1");
    near(ewn.value()[2], std::sqrt(24.0), 1e-12, "ewn(e2) = √24");
  }
  std::vector<double> g = expertGram(w);
  check(g.size() == 9 && g[0] == 9 && g[4] == 1 && g[8] == 24 && g[1] == 0 &&
            g[2] == 10 && g[6] == 10 && g[5] == 2,
        "expertGram of the flattened experts");
  // With a down bias the norm includes it.
  ExpertWeights wb = w;
  wb.downBias = {0, 0, 3, 4, 0, 0};
  near(importance(Criterion::ewn, &wb, nullptr).value()[1], std::sqrt(26.0),
       1e-12, "ewn includes biases");
  auto rwn = importance(Criterion::rwn, &w, nullptr);
  check(rwn.isOk() && std::fabs(rwn.value()[0] - 5) < 1e-12 &&
            std::fabs(rwn.value()[1] - 1) < 1e-12 &&
            std::fabs(rwn.value()[2] - std::sqrt(2.0)) < 1e-12,
        "rwn = router row norms 5, 1, √2");
  // ews: flattened [gate, up, down] = e0 (1,0,0,2,2,0), e1 (0,0,0,0,0,1),
  // e2 (2,2,2,2,2,2). cos(e0,e1) = 0, cos(e0,e2) = 10/(3·√24),
  // cos(e1,e2) = 2/√24.
  auto ews = importance(Criterion::ews, &w, nullptr);
  double c02 = 10.0 / (3.0 * std::sqrt(24.0)), c12 = 2.0 / std::sqrt(24.0);
  check(ews.isOk(), "ews computed");
  if (ews) {
    near(ews.value()[0], c02, 1e-12, "ews(e0) = cos(e0,e2)");
    near(ews.value()[1], c12, 1e-12, "ews(e1) = cos(e1,e2)");
    near(ews.value()[2], c02 + c12, 1e-12, "ews(e2) = sum of both");
  }
  // wsr of the down projections (H x F = 2 x 1): rank one each -> 1.
  auto wsr = importance(Criterion::wsr, &w, nullptr);
  check(wsr.isOk() && std::fabs(wsr.value()[0] - 1) < 1e-12,
        "wsr of a 2x1 down projection = 1");
  // A bigger case: expert 0's down projection orthogonal (stable rank H),
  // expert 1's rank one.
  ExpertWeights big;
  big.E = 2;
  big.H = 6;
  big.F = 6;
  big.up = toFloat(randomMatrix(2 * 6, 6));
  big.down = toFloat(randomOrthogonal(6));
  std::vector<double> r1 =
      matmul(randomMatrix(6, 1), randomMatrix(1, 6), 6, 1, 6);
  big.down.insert(big.down.end(), r1.begin(), r1.end());
  auto wsr2 = importance(Criterion::wsr, &big, nullptr);
  // f32 storage: the orthogonal matrix is orthogonal to ~1e-7.
  check(wsr2.isOk() && std::fabs(wsr2.value()[0] - 6) < 1e-5 &&
            std::fabs(wsr2.value()[1] - 1) < 1e-5,
        "wsr = 6 (orthogonal down) and 1 (rank-one down)");
  check(rankExperts(Criterion::wsr, wsr2.value()) ==
            std::vector<int64_t>({1, 0}),
        "wsr ranks the rank-one expert first");

  // Errors: missing inputs, wrong sizes.
  check(!importance(Criterion::ean, &w, nullptr).isOk(),
        "a calibration criterion without statistics is an error");
  check(!importance(Criterion::ewn, nullptr, nullptr).isOk(),
        "a weight criterion without weights is an error");
  ExpertWeights bad = w;
  bad.down.pop_back();
  auto r = importance(Criterion::ewn, &bad, nullptr);
  check(!r.isOk() && r.message().find("down has 5 values, expected 6") !=
                         std::string::npos,
        "a mis-sized tensor is reported");
}

LayerStats handStats() {
  // E = 3, T = 4, K = 2.
  LayerStats s;
  s.index = 1;
  s.E = 3;
  s.H = 2;
  s.K = 2;
  s.tokens = 4;
  s.routedCounts = {4, 3, 1};
  s.weightSums = {2.5, 1.25, 0.25};
  s.outputNormSums = {1.0, 7.0, 3.0};
  s.coSelection = {4, 3, 1, 3, 3, 0, 1, 0, 1};
  s.samples = 2;
  // e0 and e1 point the same way, e2 is orthogonal to both.
  s.outputSamples = {1, 0, 0,  1,  // e0: (1,0), (0,1)
                     2, 0, 0,  3,  // e1: (2,0), (0,3)
                     0, 1, -1, 0}; // e2: (0,1), (-1,0)
  return s;
}

void testCalibrationCriteria() {
  LayerStats s = handStats();
  auto euf = importance(Criterion::euf, nullptr, &s);
  check(euf.isOk() && euf.value() == std::vector<double>({1.0, 0.75, 0.25}),
        "euf = counts / tokens = 1, 0.75, 0.25");
  auto erw = importance(Criterion::erw, nullptr, &s);
  check(erw.isOk() && erw.value() == s.weightSums, "erw = weight sums");
  auto ean = importance(Criterion::ean, nullptr, &s);
  check(ean.isOk() && ean.value() == s.outputNormSums,
        "ean = output norm sums");
  auto eas = importance(Criterion::eas, nullptr, &s);
  check(eas.isOk(), "eas computed");
  if (eas) {
    // cos(e0,e1) = 1 on both samples, cos(e0,e2) = cos(e1,e2) = 0.
    near(eas.value()[0], 0.5, 1e-12, "eas(e0) = (1 + 0)/2");
    near(eas.value()[1], 0.5, 1e-12, "eas(e1) = (1 + 0)/2");
    near(eas.value()[2], 0.0, 1e-12, "eas(e2) = 0");
  }

  // Ranking: least important first; for eas most redundant first; ties
  // keep the lower id first.
  check(rankExperts(Criterion::euf, euf.value()) ==
            std::vector<int64_t>({2, 1, 0}),
        "euf ranking: 2, 1, 0");
  check(rankExperts(Criterion::ean, ean.value()) ==
            std::vector<int64_t>({0, 2, 1}),
        "ean ranking: 0, 2, 1");
  check(rankExperts(Criterion::eas, eas.value()) ==
            std::vector<int64_t>({0, 1, 2}),
        "eas ranking: most redundant (0, 1 tie: lower id) first");
  check(selectDrop(Criterion::ean, ean.value(), 1) ==
            std::vector<int64_t>({0, 2}),
        "selectDrop(ean, keep 1) = {0, 2}");
  check(selectDrop(Criterion::ean, ean.value(), 3).empty(),
        "selectDrop(keep E) drops nothing");
  check(selectDrop(Criterion::ean, ean.value(), 7).empty(),
        "selectDrop(keep > E) drops nothing");
  check(selectDropRatio(Criterion::euf, euf.value(), 0.5) ==
            std::vector<int64_t>({2}),
        "selectDropRatio(euf, 0.5) keeps round(1.5) = 2");
  check(keepCountForRatio(8, 0.75) == 6 && keepCountForRatio(8, 0.01) == 1 &&
            keepCountForRatio(8, 1.0) == 8,
        "keepCountForRatio");
  std::vector<double> withNaN = {1.0, NAN, 0.5};
  check(rankExperts(Criterion::ewn, withNaN) == std::vector<int64_t>({2, 0, 1}),
        "NaN scores rank last");

  LayerStats bad = s;
  bad.coSelection.pop_back();
  check(!importance(Criterion::euf, nullptr, &bad).isOk(),
        "mis-sized statistics are rejected");
  LayerStats noSamples = s;
  noSamples.samples = 0;
  noSamples.outputSamples.clear();
  check(!importance(Criterion::eas, nullptr, &noSamples).isOk(),
        "eas without samples is an error");

  for (Criterion c : allCriteria())
    check(parseCriterion(criterionName(c)) == c,
          std::string("parseCriterion round trip ") + criterionName(c));
  check(!parseCriterion("xyz"), "unknown criterion rejected");
}

void testComputeStats() {
  // T = 3, H = 2, E = 3, K = 2; expert e scales its input by (e + 1).
  std::vector<double> x = {3, 4, 1, 0, 0, 2};
  std::vector<int> idx = {0, 2, 1, -1, 2, 0};
  std::vector<double> w = {0.75, 0.25, 1.0, 0.0, 0.5, 0.5};
  int calls = 0;
  ExpertFn f = [&](int64_t e, const double *xt, double *out) {
    ++calls;
    for (int h = 0; h < 2; ++h)
      out[h] = (double)(e + 1) * xt[h];
  };
  std::vector<double> combined;
  auto r = computeLayerStats(5, x, 3, 2, 3, 2, idx, w, f, 2, &combined);
  check(r.isOk(), "computeLayerStats ok");
  if (!r)
    return;
  LayerStats &s = r.value();
  check(s.index == 5 && s.tokens == 3 && s.samples == 2 && s.K == 2,
        "stats header");
  check(s.routedCounts == std::vector<int64_t>({2, 1, 2}),
        "routed counts 2 1 2");
  check(s.weightSums == std::vector<double>({1.25, 1.0, 0.75}),
        "weight sums 1.25 1 0.75");
  // ‖x0‖ = 5, ‖x1‖ = 1, ‖x2‖ = 2: e0 on t0, t2: 5 + 2; e1 on t1: 2·1;
  // e2 on t0, t2: 3·5 + 3·2.
  near(s.outputNormSums[0], 7, 1e-12, "output norm sum e0 = 7");
  near(s.outputNormSums[1], 2, 1e-12, "output norm sum e1 = 2");
  near(s.outputNormSums[2], 21, 1e-12, "output norm sum e2 = 21");
  check(s.coSelection == std::vector<int64_t>({2, 0, 2, 0, 1, 0, 2, 0, 2}),
        "co-selection matrix");
  // Samples: tokens 0 and 1 through every expert.
  check(s.outputSamples.size() == 3 * 2 * 2 && s.sample(2)[0] == 9 &&
            s.sample(2)[1] == 12 && s.sample(1)[2] == 2 && s.sample(1)[3] == 0,
        "output samples: every expert on tokens 0, 1");
  // 6 sample evaluations + the routed pairs of token 2 (2 of them).
  check(calls == 8, "sample outputs are reused for routed slots");
  // combined: t0 = 0.75·x0 + 0.25·3·x0 = 1.5·x0.
  check(combined.size() == 6 && std::fabs(combined[0] - 4.5) < 1e-12 &&
            std::fabs(combined[1] - 6) < 1e-12 &&
            std::fabs(combined[2] - 2) < 1e-12 &&
            std::fabs(combined[5] - 0.5 * 2 * 3 - 0.5 * 2) < 1e-12,
        "combined routed output");
  check(s.validate().isOk(), "computed stats validate");

  auto bad = computeLayerStats(0, x, 3, 2, 2, 2, idx, w, f, 2);
  check(!bad.isOk() && bad.message().find("expert 2") != std::string::npos,
        "an index beyond E is an error");
  std::vector<int> twice = {0, 0, 1, -1, 2, 0};
  check(!computeLayerStats(0, x, 3, 2, 3, 2, twice, w, f, 2).isOk(),
        "a token routed twice to one expert is an error");
}

void testCalibrationFile() {
  Calibration c;
  c.model = "out/\"model\"";
  c.input = "random";
  c.seed = 42;
  c.layers.push_back(handStats());
  LayerStats l2 = handStats();
  l2.index = 4;
  l2.weightSums = {1.0 / 3.0, 2.0 / 3.0, 1e-300};
  l2.outputSamples[0] = 1.0 / 7.0;
  c.layers.push_back(l2);
  std::string text = calibrationToJson(c);
  auto back = parseCalibration(text, "mem");
  check(back.isOk(), "calibration round trip parses");
  if (back) {
    Calibration &b = back.value();
    check(b.model == c.model && b.input == c.input && b.seed == 42 &&
              b.layers.size() == 2,
          "calibration header round trip");
    const LayerStats *a = b.layer(4);
    check(a && a->weightSums == l2.weightSums &&
              a->routedCounts == l2.routedCounts &&
              a->coSelection == l2.coSelection &&
              a->outputNormSums == l2.outputNormSums && a->K == 2 &&
              a->samples == 2,
          "layer sums and counts round trip exactly");
    bool close = a && a->outputSamples.size() == l2.outputSamples.size();
    for (size_t i = 0; close && i < l2.outputSamples.size(); ++i)
      close = std::fabs(a->outputSamples[i] - l2.outputSamples[i]) <=
              5e-9 * std::fabs(l2.outputSamples[i]);
    check(close, "output samples round trip to 9 digits");
    check(!b.layer(2), "absent layer is nullptr");
  }
  std::string path =
      "/tmp/moe-analysis-tests-" + std::to_string(::getpid()) + ".json";
  check(writeCalibration(path, c).isOk(), "writeCalibration");
  auto rd = readCalibration(path);
  check(rd.isOk() && rd.value().layers.size() == 2, "readCalibration");
  std::remove(path.c_str());
  auto missing = readCalibration(path);
  check(!missing.isOk() &&
            missing.message().find("cannot open calibration file") == 0,
        "missing file: one-line error");

  auto expectError = [&](std::string t, const char *needle,
                         const std::string &what) {
    auto r = parseCalibration(t, "x.json");
    bool ok = !r.isOk() && r.message().find(needle) != std::string::npos &&
              r.message().find('\n') == std::string::npos;
    if (!ok)
      std::printf("  %s: %s\n", what.c_str(),
                  r.isOk() ? "parsed" : r.message().c_str());
    check(ok, what);
  };
  expectError("{", "corrupt calibration file 'x.json'", "corrupt JSON");
  expectError("{\"format\": \"moe-model/1\"}", "not a calibration file",
              "wrong format tag");
  auto replace = [&](const std::string &from, const std::string &to) {
    std::string t = text;
    size_t p = t.find(from);
    if (p != std::string::npos)
      t.replace(p, from.size(), to);
    return t;
  };
  expectError(
      replace("\"routed_counts\": [4, 3, 1]", "\"routed_counts\": [4, 3]"),
      "routed_counts has 2 values, expected 3", "short routed_counts");
  expectError(replace("\"sample_tokens\": 2", "\"sample_tokens\": 3"),
              "output_samples", "samples of the wrong size");
  expectError(replace("\"top_k\": 2", "\"top_k\": \"2\""),
              "'top_k' must be a number", "top_k of the wrong kind");
  expectError(replace("\"experts\": 3,", ""), "missing 'experts'",
              "missing key");
  expectError(replace("\"index\": 4", "\"index\": 1"), "layer 1 appears twice",
              "duplicate layer");
}

void testPng() {
  const char *s = "123456789";
  check(png::crc32((const unsigned char *)s, 9) == 0xCBF43926u,
        "CRC-32 check value");
  const char *w = "Wikipedia";
  check(png::adler32((const unsigned char *)w, 9) == 0x11E60398u,
        "Adler-32 of 'Wikipedia'");
  // Stored blocks: 70000 bytes need two blocks (65535 + 4465).
  std::vector<unsigned char> data(70000);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = (unsigned char)(i * 7);
  std::vector<unsigned char> z = png::zlibStored(data);
  check(z.size() == 2 + 2 * 5 + 70000 + 4, "zlib stream size");
  check(z[0] == 0x78 && (z[0] * 256 + z[1]) % 31 == 0, "zlib header check");
  check(z[2] == 0 && z[3] == 0xff && z[4] == 0xff && z[5] == 0 && z[6] == 0,
        "first block: not final, LEN 65535, NLEN");
  size_t second = 2 + 5 + 65535;
  check(z[second] == 1 && z[second + 1] + 256 * z[second + 2] == 4465,
        "second block: final, LEN 4465");
  png::Image img(3, 2, 10, 20, 30);
  std::vector<unsigned char> bytes = png::encode(img);
  check(std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8) == 0,
        "PNG signature");
  check(std::memcmp(&bytes[12], "IHDR", 4) == 0 && bytes[19] == 3 &&
            bytes[23] == 2 && bytes[24] == 8 && bytes[25] == 2,
        "IHDR: 3 x 2, 8-bit RGB");
  uint32_t crc = (uint32_t)bytes[29] << 24 | (uint32_t)bytes[30] << 16 |
                 (uint32_t)bytes[31] << 8 | bytes[32];
  check(crc == png::crc32(&bytes[12], 17), "IHDR CRC");
  check(std::memcmp(&bytes[bytes.size() - 8], "IEND", 4) == 0 &&
            bytes[bytes.size() - 4] == 0xAE && bytes[bytes.size() - 1] == 0x82,
        "IEND chunk with its fixed CRC");
}
} // namespace

void testMergeGroups() {
  // 5 experts; similarity: {0, 3} alike (0.9), {1, 2, 4} alike (0.8, 0.7),
  // everything else 0.1.
  const int64_t E = 5;
  std::vector<double> sim(E * E, 0.1);
  for (int64_t i = 0; i < E; ++i)
    sim[i * E + i] = 1.0;
  auto set = [&](int64_t i, int64_t j, double v) {
    sim[i * E + j] = sim[j * E + i] = v;
  };
  set(0, 3, 0.9);
  set(1, 2, 0.8);
  set(1, 4, 0.7);
  set(2, 4, 0.75);
  std::vector<double> freq = {10, 30, 5, 2, 8};
  using Groups = std::vector<std::vector<int64_t>>;
  // Target 2: centres are the two most used (1, 0); 3 joins 0; 2, 4 join 1.
  check(mergeGroups(sim, freq, 2, 0) == Groups({{0, 3}, {1, 2, 4}}),
        "mergeGroups target 2 = {0,3}, {1,2,4}");
  // Target 3: centres 1, 0, 4; 2 is closer to 1 (0.8) than to 4 (0.75).
  check(mergeGroups(sim, freq, 3, 0) == Groups({{0, 3}, {1, 2}, {4}}),
        "mergeGroups target 3 = {0,3}, {1,2}, {4}");
  // Target E: nothing merges.
  check(mergeGroups(sim, freq, 5, 0) == Groups({{0}, {1}, {2}, {3}, {4}}),
        "mergeGroups target E keeps every expert");
  // Threshold 0.78: visiting 1, 0, 4 (0.7 < 0.78: a centre), 2 (0.8 to 1),
  // 3 (0.9 to 0).
  check(mergeGroups(sim, freq, 0, 0.78) == Groups({{0, 3}, {1, 2}, {4}}),
        "mergeGroups threshold 0.78");
  check(mergeGroups(sim, freq, 0, 0.5) == Groups({{0, 3}, {1, 2, 4}}),
        "mergeGroups threshold 0.5");
  check(mergeGroups(sim, freq, 0, 0.95).size() == 5,
        "mergeGroups threshold above every similarity merges nothing");
  // Ties between centres go to the more used one.
  std::vector<double> flat(E * E, 0.5);
  check(mergeGroups(flat, freq, 2, 0) == Groups({{0}, {1, 2, 3, 4}}),
        "mergeGroups: equal similarity joins the most used centre");

  // Weight cosine: e1 = 2·e0 (cosine 1), e2 orthogonal to both.
  ExpertWeights w;
  w.E = 3;
  w.H = 2;
  w.F = 1;
  w.up = {1, 0, 2, 0, 0, 1};
  w.down = {1, 0, 2, 0, 0, 1};
  auto c = weightCosineMatrix(w);
  near(c[0 * 3 + 1], 1.0, 1e-12, "weight cosine of e0 and 2·e0 = 1");
  near(c[0 * 3 + 2], 0.0, 1e-12, "weight cosine of orthogonal experts = 0");
  near(c[2 * 3 + 2], 1.0, 1e-12, "weight cosine diagonal = 1");
}

int main(int argc, char **argv) {
  uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20240607;
  std::printf("moe-analysis-tests: seed %llu\n", (unsigned long long)seed);
  rng.seed(seed);
  testCKA();
  testCKAMatrix();
  testStableRank();
  testWeightCriteria();
  testCalibrationCriteria();
  testComputeStats();
  testCalibrationFile();
  testPng();
  testMergeGroups();
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
