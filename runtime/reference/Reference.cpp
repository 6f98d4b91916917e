//===- Reference.cpp - the MoE semantics contract in plain C++ --*- C++ -*-===//
//
// Direct transcription of shared/MOE_SEMANTICS.md; loops over tokens and
// experts in double precision, no attempt at speed.
//
//===----------------------------------------------------------------------===//

#include "moe/Reference/Reference.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace moe::ref {
namespace {
const double kInf = std::numeric_limits<double>::infinity();

/// softmax(v / temperature) subtracting the max; an all -inf input gives 0
/// everywhere and a NaN input gives NaN everywhere (§1 numerical rules: only
/// this row is affected).
std::vector<double> softmax(const std::vector<double> &v, double tau = 1.0) {
  double mx = -kInf;
  bool nan = false;
  for (double x : v) {
    nan |= std::isnan(x);
    mx = std::max(mx, x / tau);
  }
  std::vector<double> out(v.size(), 0.0);
  if (nan) {
    std::fill(out.begin(), out.end(), std::nan(""));
    return out;
  }
  if (mx == -kInf)
    return out;
  double sum = 0;
  for (size_t i = 0; i < v.size(); ++i)
    sum += out[i] = std::exp(v[i] / tau - mx);
  for (double &o : out)
    o /= sum;
  return out;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// a ranks before b in top-k: larger first, NaN smallest, ties to lower id.
bool before(double a, int ia, double b, int ib) {
  bool an = std::isnan(a), bn = std::isnan(b);
  if (an || bn)
    return an && bn ? ia < ib : bn;
  return a > b || (a == b && ia < ib);
}

/// Picks the best free entry of `keys` (-1 if none); reports in `margin`
/// the gap to the runner-up (inf if none).
int pickBest(const std::vector<double> &keys, const std::vector<bool> &taken,
             double &margin) {
  int best = -1, second = -1;
  for (int i = 0; i < (int)keys.size(); ++i) {
    if (taken[i])
      continue;
    if (best < 0 || before(keys[i], i, keys[best], best)) {
      second = best;
      best = i;
    } else if (second < 0 || before(keys[i], i, keys[second], second)) {
      second = i;
    }
  }
  margin = kInf;
  if (best >= 0 && second >= 0 && std::isfinite(keys[best]) &&
      std::isfinite(keys[second]))
    margin = keys[best] - keys[second];
  return best;
}

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double geluTanh(double x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}

/// out[o] = sum_i W[o, i] * x[i] (+ b[o]); W is rows x cols at `w`.
void matvec(const double *w, const double *x, int64_t rows, int64_t cols,
            const double *b, double *out) {
  for (int64_t o = 0; o < rows; ++o) {
    double acc = b ? b[o] : 0.0;
    for (int64_t i = 0; i < cols; ++i)
      acc += w[o * cols + i] * x[i];
    out[o] = acc;
  }
}

/// One FFN (§3) on one token; weights of one expert.
std::vector<double> ffn(Activation act, double alpha, double limit,
                        const double *gate, const double *up, const double *down,
                        const double *gateBias, const double *upBias,
                        const double *downBias, int64_t F, int64_t H,
                        const double *x) {
  std::vector<double> u(F), g(F), h(F), y(H);
  matvec(up, x, F, H, upBias, u.data());
  if (gate)
    matvec(gate, x, F, H, gateBias, g.data());
  for (int64_t f = 0; f < F; ++f)
    h[f] = activate(act, g[f], u[f], alpha, limit);
  matvec(down, h.data(), H, F, downBias, y.data());
  return y;
}

const double *ptr(const std::vector<double> &v, size_t off = 0) {
  return v.empty() ? nullptr : v.data() + off;
}

/// [lo, hi] of softmax(z / tau) when each z_e may be off by up to d_e: e's
/// share is smallest with z_e low and the others high, and the reverse.
void softmaxInterval(const std::vector<double> &z, const std::vector<double> &d,
                     double tau, std::vector<double> &lo,
                     std::vector<double> &hi) {
  const size_t n = z.size();
  bool nan = false;
  for (double v : z)
    nan |= std::isnan(v);
  lo.assign(n, nan ? std::nan("") : 0.0);
  hi = lo;
  if (nan)
    return;
  for (size_t e = 0; e < n; ++e) {
    if (z[e] == -kInf)
      continue;
    double sumLo = 0, sumHi = 0;
    for (size_t f = 0; f < n; ++f) {
      if (f == e || z[f] == -kInf)
        continue;
      sumLo += std::exp((z[f] + d[f] - z[e] + d[e]) / tau);
      sumHi += std::exp((z[f] - d[f] - z[e] - d[e]) / tau);
    }
    lo[e] = 1.0 / (1.0 + sumLo);
    hi[e] = 1.0 / (1.0 + sumHi);
  }
}

/// The gap between the chosen (`in`) and the rest (`out`) that score
/// intervals leave: min lo over `in` minus max hi over `out`, entries with a
/// non-finite bound left out (as pickBest does); inf when a side is empty.
double setMargin(const std::vector<double> &lo, const std::vector<double> &hi,
                 const std::vector<bool> &in, const std::vector<bool> &out) {
  double minIn = kInf, maxOut = -kInf;
  for (size_t i = 0; i < lo.size(); ++i) {
    if (!std::isfinite(lo[i]) || !std::isfinite(hi[i]))
      continue;
    if (in[i])
      minIn = std::min(minIn, lo[i]);
    else if (out[i])
      maxOut = std::max(maxOut, hi[i]);
  }
  return minIn == kInf || maxOut == -kInf ? kInf : minIn - maxOut;
}
} // namespace

bool isGated(Activation a) {
  return a == Activation::swiglu || a == Activation::geglu ||
         a == Activation::swiglu_clamped;
}

double activate(Activation a, double g, double u, double alpha, double limit) {
  switch (a) {
  case Activation::swiglu:
    return g * sigmoid(g) * u;
  case Activation::geglu:
    return gelu(g) * u;
  case Activation::gelu:
    return gelu(u);
  case Activation::gelu_tanh:
    return geluTanh(u);
  case Activation::relu:
    return std::max(u, 0.0);
  case Activation::relu2:
    return std::max(u, 0.0) * std::max(u, 0.0);
  case Activation::swiglu_clamped: {
    double gc = std::min(g, limit);
    double uc = std::min(std::max(u, -limit), limit);
    return (uc + 1.0) * gc * sigmoid(alpha * gc);
  }
  }
  return 0;
}

/// One round of sparsemixer (PhiMoE, written from transformers'
/// `sparsemixer` at inference): the softmax at the winner `w` over the logits
/// not `taken` before the round and not masked, where `z_j` is masked when
/// `(m - z_j) / max(|z_j|, m) > 2 eps`, `m = z_w`. A mask decision within
/// `tol` of the threshold (widened by the logits' slacks `d`, if any) makes
/// the token a near tie: f32 logits may decide it the other way, changing
/// the weight by far more than rounding.
static double sparseMixerWeight(const std::vector<double> &z,
                                const std::vector<bool> &taken, int w,
                                double eps, double tol,
                                const std::vector<double> *d, bool &tie) {
  double m = z[w];
  double shift = m == -kInf ? 0.0 : m;
  double sum = 0;
  for (size_t j = 0; j < z.size(); ++j) {
    if (taken[j])
      continue;
    double factor = std::max(std::fabs(z[j]), m);
    double ratio = (m - z[j]) / factor;
    if (std::isfinite(ratio) && (int)j != w) {
      double widen = d ? ((*d)[j] + (*d)[w]) * 2 / factor : 0.0;
      tie |= std::fabs(ratio - 2 * eps) < tol + widen;
    }
    if (ratio > 2 * eps)
      continue;
    sum += std::exp(z[j] - shift);
  }
  if (!(sum > 0) && !std::isnan(sum))
    return 0.0;
  return std::exp(m - shift) / sum;
}

Routed route(const Routing &r, const std::vector<double> &logits, int64_t T,
             int64_t E, const std::vector<double> &groupLogits,
             const std::vector<double> &selectionBias, double tol,
             const LogitSlack *slack, const LogitSlack *groupSlack) {
  const int K = r.k;
  Routed out;
  out.indices.assign(T * K, -1);
  out.weights.assign(T * K, 0.0);
  out.nearTie.assign(T, false);
  out.orderTie.assign(T, false);
  // With slack: top-k on scores increasing in the logits is decided by the
  // logits' order, so the pair slack applies directly; everything else goes
  // through score intervals.
  const bool byLogitOrder =
      selectionBias.empty() && (r.selection == Selection::topk ||
                                r.selection == Selection::topk_then_softmax ||
                                r.selection == Selection::sparsemixer);
  const bool intervals = slack && !byLogitOrder;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> z(logits.begin() + t * E, logits.begin() + (t + 1) * E);
    std::vector<double> s(E);
    std::vector<bool> excluded(E, false);
    bool tie = false;
    // Score intervals (`intervals` only): experts, and groups.
    std::vector<double> lo, hi, glo, ghi;
    std::vector<double> d; // the logits' single slacks (`intervals` or
                           // sparsemixer with slack)
    if (intervals || (slack && r.selection == Selection::sparsemixer))
      for (int64_t e = 0; e < E; ++e)
        d.push_back(slack->single(t, (int)e));
    if (r.selection == Selection::hierarchical) {
      int G = r.nGroup, eg = (int)(E / G);
      std::vector<double> gl(groupLogits.begin() + t * G,
                             groupLogits.begin() + (t + 1) * G);
      std::vector<double> a = softmax(gl, r.tauGroup);
      if (intervals) {
        std::vector<double> dg(G, 0.0);
        if (groupSlack)
          for (int g = 0; g < G; ++g)
            dg[g] = groupSlack->single(t, g);
        softmaxInterval(gl, dg, r.tauGroup, glo, ghi);
        lo.assign(E, 0.0);
        hi.assign(E, 0.0);
      }
      for (int g = 0; g < G; ++g) {
        std::vector<double> zg(z.begin() + g * eg, z.begin() + (g + 1) * eg);
        std::vector<double> b = softmax(zg, r.tauExpert);
        std::vector<double> blo, bhi;
        if (intervals)
          softmaxInterval(zg, std::vector<double>(d.begin() + g * eg,
                                                  d.begin() + (g + 1) * eg),
                          r.tauExpert, blo, bhi);
        for (int j = 0; j < eg; ++j) {
          s[g * eg + j] = a[g] * b[j];
          if (intervals) {
            lo[g * eg + j] = glo[g] * blo[j];
            hi[g * eg + j] = ghi[g] * bhi[j];
          }
        }
      }
      if (r.topkGroup < G) {
        std::vector<bool> taken(G, false);
        for (int i = 0; i < r.topkGroup; ++i) {
          double m;
          int g = pickBest(a, taken, m);
          tie |= m < tol;
          if (g >= 0)
            taken[g] = true;
        }
        if (intervals) {
          std::vector<bool> rest(G);
          for (int g = 0; g < G; ++g)
            rest[g] = !taken[g];
          tie |= setMargin(glo, ghi, taken, rest) < tol;
        }
        for (int64_t e = 0; e < E; ++e)
          excluded[e] = !taken[e / eg];
      }
    } else if (r.selection == Selection::topk_then_softmax ||
               r.selection == Selection::sparsemixer ||
               r.scoring == Scoring::none) {
      s = z;
      if (intervals) {
        lo.resize(E);
        hi.resize(E);
        for (int64_t e = 0; e < E; ++e)
          lo[e] = z[e] - d[e], hi[e] = z[e] + d[e];
      }
    } else if (r.scoring == Scoring::softmax) {
      s = softmax(z);
      if (intervals)
        softmaxInterval(z, d, 1.0, lo, hi);
    } else {
      for (int64_t e = 0; e < E; ++e)
        s[e] = sigmoid(z[e]);
      if (intervals) {
        lo.resize(E);
        hi.resize(E);
        for (int64_t e = 0; e < E; ++e)
          lo[e] = sigmoid(z[e] - d[e]), hi[e] = sigmoid(z[e] + d[e]);
      }
    }
    std::vector<double> keys = s;
    if (!selectionBias.empty())
      for (int64_t e = 0; e < E; ++e) {
        keys[e] += selectionBias[e];
        if (intervals)
          lo[e] += selectionBias[e], hi[e] += selectionBias[e];
      }
    if (r.selection == Selection::group_limited_topk && r.topkGroup < r.nGroup) {
      int G = r.nGroup, eg = (int)(E / G);
      std::vector<double> gs(G), gsLo(G), gsHi(G);
      // Group score from the top keys of the group (max or top-2 sum); it is
      // increasing in each key, so the bounds' scores bound it.
      auto groupScore = [&](const std::vector<double> &k, int g) {
        std::vector<double> v(k.begin() + g * eg, k.begin() + (g + 1) * eg);
        std::sort(v.begin(), v.end(), std::greater<double>());
        return r.groupScore == GroupScore::max ? v[0] : v[0] + v[1];
      };
      for (int g = 0; g < G; ++g) {
        gs[g] = groupScore(keys, g);
        if (intervals)
          gsLo[g] = groupScore(lo, g), gsHi[g] = groupScore(hi, g);
      }
      std::vector<bool> taken(G, false);
      for (int i = 0; i < r.topkGroup; ++i) {
        double m;
        int g = pickBest(gs, taken, m);
        tie |= m < tol;
        if (g >= 0)
          taken[g] = true;
      }
      if (intervals) {
        std::vector<bool> rest(G);
        for (int g = 0; g < G; ++g)
          rest[g] = !taken[g];
        tie |= setMargin(gsLo, gsHi, taken, rest) < tol;
      }
      for (int64_t e = 0; e < E; ++e)
        excluded[e] = !taken[e / eg];
    }

    int *idx = &out.indices[t * K];
    double *w = &out.weights[t * K];
    if (r.selection == Selection::dense ||
        (r.selection == Selection::hierarchical && K == E)) {
      for (int j = 0; j < K; ++j) {
        idx[j] = excluded[j] ? -1 : j;
        w[j] = excluded[j] ? 0.0 : s[j];
      }
    } else {
      std::vector<bool> taken = excluded;
      std::vector<bool> chosen(E, false);
      double cum = 0, cumLo = 0, cumHi = 0;
      for (int j = 0; j < K; ++j) {
        double m;
        int e = pickBest(keys, taken, m);
        // Only a tie between a chosen and an unchosen expert changes the
        // experts; one between two chosen ones, their slots' order.
        // sparsemixer's weight depends on the round too (later rounds sum
        // over fewer experts), so the order of two chosen experts counts.
        if (j == K - 1 || r.selection == Selection::top_p ||
            r.selection == Selection::sparsemixer)
          tie |= m < tol;
        else
          out.orderTie[t] = out.orderTie[t] || m < tol;
        if (e < 0)
          break;
        if (intervals && r.selection == Selection::top_p) {
          // The slots' order matters here: e against every expert left.
          std::vector<bool> one(E, false), rest(E);
          one[e] = true;
          for (int64_t f = 0; f < E; ++f)
            rest[f] = !taken[f] && f != e;
          tie |= setMargin(lo, hi, one, rest) < tol;
        }
        double we = s[e];
        if (r.selection == Selection::sparsemixer)
          we = sparseMixerWeight(z, taken, e, r.jitterEps, tol,
                                 slack ? &d : nullptr, tie);
        taken[e] = true;
        chosen[e] = true;
        if (r.selection == Selection::top_p) {
          tie |= std::fabs(cum - r.topP) < tol;
          if (intervals)
            tie |= cumLo - tol < r.topP && r.topP < cumHi + tol;
          if (!(cum < r.topP))
            continue; // slot stays empty
          cum += we;
          if (intervals)
            cumLo += lo[e], cumHi += hi[e];
        }
        idx[j] = e;
        w[j] = we;
      }
      if (slack && r.selection != Selection::top_p) {
        std::vector<bool> rest(E);
        for (int64_t f = 0; f < E; ++f)
          rest[f] = !taken[f] || r.selection == Selection::sparsemixer;
        if (intervals) {
          tie |= setMargin(lo, hi, chosen, rest) < tol;
        } else {
          // By the logits' order: a chosen and an unchosen expert closer
          // than the slack of their difference. (Equal scores from unequal
          // logits, e.g. softmax underflow, give m < 0: a tie too.)
          for (int64_t e = 0; e < E && !tie; ++e) {
            if (!chosen[e] || !std::isfinite(z[e]))
              continue;
            for (int64_t f = 0; f < E && !tie; ++f) {
              if (!rest[f] || f == e || !std::isfinite(z[f]) ||
                  (chosen[f] && z[f] > z[e]))
                continue;
              double m = z[e] - z[f];
              tie = m < slack->single(t, (int)e) + slack->single(t, (int)f) &&
                    m < slack->pair(t, (int)e, (int)f);
            }
          }
        }
      }
      if (r.selection == Selection::topk_then_softmax) {
        std::vector<double> sel(w, w + K);
        std::vector<double> p = softmax(sel);
        for (int j = 0; j < K; ++j)
          w[j] = p[j];
      }
    }
    if (r.renormalize) {
      double sum = 0;
      for (int j = 0; j < K; ++j)
        sum += w[j];
      if (sum != 0)
        for (int j = 0; j < K; ++j)
          w[j] /= sum;
    }
    for (int j = 0; j < K; ++j)
      w[j] *= r.scalingFactor;
    out.nearTie[t] = tie;
  }
  return out;
}

int64_t expertCapacity(int64_t T, int64_t K, int64_t E, double cf) {
  return (int64_t)std::ceil((double)(T * K) * cf / (double)E);
}

std::vector<bool> capacityTaint(const Routed &routed, int64_t T, int64_t K,
                                int64_t E, int64_t capacity) {
  std::vector<bool> taint(T, false);
  // Each expert's queue in admission order (slot-major, then token). At a
  // pair with c of the expert's pairs before it, of which up to n could be
  // otherwise (one per tie token from slot 0 of that token on: a near tie
  // may add or remove a pair of any expert, `openAll`; an order tie move one
  // of its own experts' pairs between slots, `open[e]`), the alternative
  // count lies in [c - n, c + n]: the admission (c < capacity) can change
  // only when capacity - n <= c < capacity + n.
  std::vector<int64_t> count(E, 0), open(E, 0);
  int64_t openAll = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t t = 0; t < T; ++t) {
      if (k == 0 && routed.nearTie[t]) {
        taint[t] = true;
        ++openAll;
      } else if (k == 0 && routed.orderTie[t]) {
        taint[t] = true;
        for (int64_t j = 0; j < K; ++j) {
          int e = routed.indices[t * K + j];
          if (e >= 0 && e < E)
            ++open[e];
        }
      }
      int e = routed.indices[t * K + k];
      if (e < 0 || e >= E)
        continue;
      int64_t c = count[e]++, n = open[e] + openAll;
      if (n > 0 && capacity - n <= c && c < capacity + n)
        taint[t] = true;
    }
  return taint;
}

int64_t capacityDispatch(Routed &routed, int64_t T, int64_t K, int64_t E,
                         int64_t capacity) {
  std::vector<int64_t> count(E, 0);
  int64_t dropped = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t t = 0; t < T; ++t) {
      int e = routed.indices[t * K + k];
      if (e < 0 || e >= E)
        continue;
      if (count[e] < capacity) {
        ++count[e];
      } else {
        routed.indices[t * K + k] = -1;
        routed.weights[t * K + k] = 0.0;
        ++dropped;
      }
    }
  return dropped;
}

LayerResult runLayer(const Layer &L, const std::vector<double> &x, int64_t T,
                     double tieTolerance, const InputSlack *inputSlack) {
  const int64_t H = L.H, E = L.numExperts(), K = L.routing.k;
  LayerResult res;
  res.y.assign(T * H, 0.0);

  // Router matrix: stored or projected (§1.7).
  std::vector<double> router = L.router;
  if (!L.domainEmbeddings.empty()) {
    int64_t twoH = (int64_t)L.projW1.size() / ((int64_t)L.domainEmbeddings.size() / E);
    int64_t m = (int64_t)L.domainEmbeddings.size() / E, hp = twoH / 2;
    router.assign(E * H, 0.0);
    for (int64_t e = 0; e < E; ++e) {
      std::vector<double> z(twoH), h(hp);
      matvec(L.projW1.data(), &L.domainEmbeddings[e * m], twoH, m, nullptr, z.data());
      for (int64_t j = 0; j < hp; ++j)
        h[j] = z[j] * sigmoid(z[j]) * z[hp + j];
      matvec(L.projW2.data(), h.data(), H, hp, nullptr, &router[e * H]);
    }
  }
  std::vector<double> logits(T * E), groupLogits;
  for (int64_t t = 0; t < T; ++t)
    matvec(router.data(), &x[t * H], E, H, ptr(L.routerBias), &logits[t * E]);
  if (!L.groupRouter.empty()) {
    int64_t G = L.routing.nGroup;
    groupLogits.resize(T * G);
    for (int64_t t = 0; t < T; ++t)
      matvec(L.groupRouter.data(), &x[t * H], G, H, nullptr, &groupLogits[t * G]);
  }
  // The logits' slack from the input's (InputSlack): rows a = W_e, or
  // W_e - W_f for a difference (the bias cancels; it is not scaled).
  auto bound = [&](const std::vector<double> &W, int64_t t, int e, int f) {
    const double *we = &W[e * H], *wf = f < 0 ? nullptr : &W[f * H];
    const double *xt = &x[t * H];
    double l1 = 0, l2 = 0, dot = 0;
    for (int64_t j = 0; j < H; ++j) {
      double aj = wf ? we[j] - wf[j] : we[j];
      dot += aj * xt[j];
      for (const std::vector<double> &c : inputSlack->terms) {
        double v = std::fabs(aj) * c[t * H + j];
        l1 += v;
        l2 += v * v;
      }
    }
    double scale = inputSlack->scale.empty() ? 0.0 : inputSlack->scale[t];
    return std::min(l1, kSlackLambda * std::sqrt(l2)) + scale * std::fabs(dot);
  };
  std::vector<double> singles, groupSingles;
  LogitSlack routerSlack, groupSlack;
  if (inputSlack) {
    singles.resize(T * E);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e)
        singles[t * E + e] = bound(router, t, (int)e, -1);
    routerSlack.single = [&](int64_t t, int e) { return singles[t * E + e]; };
    routerSlack.pair = [&](int64_t t, int e, int f) {
      return bound(router, t, e, f);
    };
    if (!L.groupRouter.empty()) {
      const int64_t G = L.routing.nGroup;
      groupSingles.resize(T * G);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t g = 0; g < G; ++g)
          groupSingles[t * G + g] = bound(L.groupRouter, t, (int)g, -1);
      groupSlack.single = [&, G](int64_t t, int g) {
        return groupSingles[t * G + g];
      };
      groupSlack.pair = [&](int64_t t, int g, int h) {
        return bound(L.groupRouter, t, g, h);
      };
    }
  }
  res.routed = route(L.routing, logits, T, E, groupLogits, L.selectionBias,
                     tieTolerance, inputSlack ? &routerSlack : nullptr,
                     inputSlack && !L.groupRouter.empty() ? &groupSlack
                                                          : nullptr);
  // Merged experts (§5): router rows point at merged experts; dispatch and
  // evaluation use merged ids (special experts follow the routed ones).
  int64_t dispatchE = E;
  if (!L.expertMap.empty()) {
    const auto n = static_cast<int>(L.expertMap.size());
    for (int &i : res.routed.indices)
      if (i >= n)
        i += static_cast<int>(L.numRouted) - n;
      else if (i >= 0)
        i = L.expertMap[i];
    dispatchE = L.numRouted + (int64_t)L.special.size();
  }
  if (L.capacity) {
    int64_t capacity = L.fixedCapacity >= 0
                           ? L.fixedCapacity
                           : expertCapacity(T, K, dispatchE, L.capacityFactor);
    res.capacityTaint = capacityTaint(res.routed, T, K, dispatchE, capacity);
    res.dropped = capacityDispatch(res.routed, T, K, dispatchE, capacity);
  }

  int64_t numConst = 0;
  std::vector<int64_t> constIndex;
  for (Special s : L.special)
    constIndex.push_back(s == Special::constant ? numConst++ : 0);

  for (int64_t t = 0; t < T; ++t) {
    const double *xt = &x[t * H];
    double *yt = &res.y[t * H];
    for (int64_t k = 0; k < K; ++k) {
      int e = res.routed.indices[t * K + k];
      double w = res.routed.weights[t * K + k];
      if (e < 0)
        continue;
      std::vector<double> out(H, 0.0);
      if (e < L.numRouted && !L.up.empty()) {
        int64_t F = L.F;
        // scale_input: Expert(w x_t), summed with weight 1.
        std::vector<double> scaled;
        const double *in = xt;
        if (L.scaleInput) {
          scaled.assign(xt, xt + H);
          for (double &v : scaled)
            v *= w;
          in = scaled.data();
          w = 1.0;
        }
        out = ffn(L.activation, L.alpha, L.limit,
                  L.gate.empty() ? nullptr : &L.gate[e * F * H],
                  &L.up[e * F * H], &L.down[e * H * F],
                  L.gateBias.empty() ? nullptr : &L.gateBias[e * F],
                  L.upBias.empty() ? nullptr : &L.upBias[e * F],
                  L.downBias.empty() ? nullptr : &L.downBias[e * H], F, H, in);
      } else if (e < L.numRouted) {
        int64_t r = L.loraRank;
        std::vector<double> ax(r);
        matvec(&L.loraA[e * r * H], xt, r, H, nullptr, ax.data());
        matvec(&L.loraB[e * H * r], ax.data(), H, r, nullptr, out.data());
        for (double &o : out)
          o *= L.loraAlpha / (double)r;
      } else {
        int64_t i = e - L.numRouted;
        switch (L.special[i]) {
        case Special::zero:
          break;
        case Special::copy:
          out.assign(xt, xt + H);
          break;
        case Special::constant: {
          int64_t c = constIndex[i];
          std::vector<double> l(2);
          matvec(&L.constRouter[c * 2 * H], xt, 2, H, nullptr, l.data());
          std::vector<double> a = softmax(l);
          for (int64_t h = 0; h < H; ++h)
            out[h] = a[0] * xt[h] + a[1] * L.constVectors[c * H + h];
          break;
        }
        }
      }
      for (int64_t h = 0; h < H; ++h)
        yt[h] += w * out[h];
    }
    if (!L.loraBase.empty()) {
      std::vector<double> base(H);
      matvec(L.loraBase.data(), xt, H, H, nullptr, base.data());
      for (int64_t h = 0; h < H; ++h)
        yt[h] += base[h];
    }
    if (!L.sharedUp.empty()) {
      std::vector<double> s = ffn(L.sharedActivation, 1.702, 7.0, ptr(L.sharedGate),
                                  L.sharedUp.data(), L.sharedDown.data(), nullptr,
                                  nullptr, nullptr, L.sharedF, H, xt);
      double g = 1.0;
      if (!L.sharedGateWeight.empty()) {
        double d = 0;
        for (int64_t h = 0; h < H; ++h)
          d += L.sharedGateWeight[h] * xt[h];
        g = sigmoid(d);
      }
      for (int64_t h = 0; h < H; ++h)
        yt[h] += g * s[h];
    }
    // JetMoE: one bias after the mixture, whatever the routing.
    for (size_t h = 0; h < L.outputBias.size(); ++h)
      yt[h] += L.outputBias[h];
  }
  return res;
}

LayerResult runCartesian(const Layer &first, const Layer &second,
                         const std::vector<double> &normWeight, double epsilon,
                         const std::vector<double> &x, int64_t T,
                         double tieTolerance, double roundoff) {
  const int64_t H = first.H;
  LayerResult a = runLayer(first, x, T, tieTolerance);
  std::vector<double> h(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    h[i] = x[i] + a.y[i];
  // The compiled layer rounds A's output ya, then h = x + ya, then (with the
  // norm) n = rmsnorm(h) to the intermediate dtype, each by at most u
  // relative (round to nearest); f32 arithmetic errors are far smaller
  // (tieTolerance covers them). To first order, element j of B's input is
  // off by
  //   no norm: d1 + d2,           |d1| <= u|ya_j|, |d2| <= u|h_j|
  //   norm:    w_j r (d1 + d2) + n_j (dr / r) + d3,   |d3| <= u|n_j|,
  // r = 1/rms(h) and, from dr = -r^3/H sum_j h_j dh_j,
  //   |dr / r| <= r^2/H sum_j |h_j| (u|ya_j| + u|h_j|),
  // an error common to the row (it scales the logits' W.n part). g =
  // u / (1 - 3u) in place of u covers the second-order terms (Higham's
  // gamma_3).
  InputSlack slack;
  const double g = roundoff > 0 ? roundoff / (1.0 - 3.0 * roundoff) : 0.0;
  if (g > 0) {
    slack.terms.assign(2, std::vector<double>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      slack.terms[0][i] = g * std::fabs(a.y[i]);
      slack.terms[1][i] = g * std::fabs(h[i]);
    }
  }
  if (!normWeight.empty()) {
    if (g > 0) {
      slack.scale.assign(T, 0.0);
      slack.terms.emplace_back(x.size());
    }
    for (int64_t t = 0; t < T; ++t) {
      double ss = 0;
      for (int64_t j = 0; j < H; ++j)
        ss += h[t * H + j] * h[t * H + j];
      double inv = 1.0 / std::sqrt(ss / (double)H + epsilon);
      if (g > 0) {
        double rel = 0;
        for (int64_t j = 0; j < H; ++j) {
          int64_t i = t * H + j;
          rel += std::fabs(h[i]) * (slack.terms[0][i] + slack.terms[1][i]);
          slack.terms[0][i] *= std::fabs(normWeight[j]) * inv;
          slack.terms[1][i] *= std::fabs(normWeight[j]) * inv;
        }
        slack.scale[t] = inv * inv / (double)H * rel;
      }
      for (int64_t j = 0; j < H; ++j) {
        h[t * H + j] *= inv * normWeight[j];
        if (g > 0)
          slack.terms[2][t * H + j] = g * std::fabs(h[t * H + j]);
      }
    }
  }
  LayerResult b = runLayer(second, h, T, tieTolerance, g > 0 ? &slack : nullptr);
  for (int64_t t = 0; t < T; ++t) {
    b.routed.nearTie[t] = b.routed.nearTie[t] || a.routed.nearTie[t];
    // The first layer's slot order decides its own capacity admissions.
    b.routed.orderTie[t] = b.routed.orderTie[t] || a.routed.orderTie[t];
  }
  b.dropped += a.dropped;
  // The first layer's ties change the second layer's input, not only its
  // admissions: no per-token taint (a check then says "not comparable").
  b.capacityTaint.clear();
  return b;
}

//===----------------------------------------------------------------------===//
// Parsing the manifest's spelling
//===----------------------------------------------------------------------===//

std::optional<Activation> parseActivation(const std::string &n) {
  static const char *names[] = {"swiglu", "geglu", "gelu", "gelu_tanh",
                                "relu", "relu2", "swiglu_clamped"};
  for (int i = 0; i < 7; ++i)
    if (n == names[i])
      return static_cast<Activation>(i);
  return std::nullopt;
}

std::optional<Special> parseSpecial(const std::string &n) {
  if (n == "zero") return Special::zero;
  if (n == "copy") return Special::copy;
  if (n == "constant") return Special::constant;
  return std::nullopt;
}

std::optional<Routing> parseRouting(const std::string &text, std::string &err) {
  size_t open = text.find('<'), close = text.rfind('>');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    err = "malformed routing '" + text + "'";
    return std::nullopt;
  }
  std::vector<std::string> parts;
  std::string cur;
  for (char c : text.substr(open + 1, close - open - 1)) {
    if (c == ',') {
      parts.push_back(cur);
      cur.clear();
    } else if (c != ' ') {
      cur += c;
    }
  }
  parts.push_back(cur);
  if (parts.size() < 3) {
    err = "malformed routing '" + text + "'";
    return std::nullopt;
  }
  Routing r;
  static const char *scorings[] = {"softmax", "sigmoid", "none"};
  static const char *selections[] = {
      "topk",  "group_limited_topk", "top_p",      "topk_then_softmax",
      "dense", "hierarchical",       "sparsemixer"};
  bool ok = false;
  for (int i = 0; i < 3; ++i)
    if (parts[0] == scorings[i])
      r.scoring = static_cast<Scoring>(i), ok = true;
  bool ok2 = false;
  for (int i = 0; i < 7; ++i)
    if (parts[1] == selections[i])
      r.selection = static_cast<Selection>(i), ok2 = true;
  if (!ok || !ok2) {
    err = "unknown scoring/selection in '" + text + "'";
    return std::nullopt;
  }
  // As the dialect's parser: sparsemixer's jitter_eps defaults to 0.01.
  if (r.selection == Selection::sparsemixer)
    r.jitterEps = 0.01;
  bool topkGroupSet = false;
  for (size_t i = 2; i < parts.size(); ++i) {
    const std::string &p = parts[i];
    if (p == "renormalize") {
      r.renormalize = true;
      continue;
    }
    size_t eq = p.find('=');
    if (eq == std::string::npos) {
      err = "malformed routing parameter '" + p + "'";
      return std::nullopt;
    }
    std::string key = p.substr(0, eq), val = p.substr(eq + 1);
    double v = std::strtod(val.c_str(), nullptr);
    if (key == "k") r.k = (int)v;
    else if (key == "n_group") r.nGroup = (int)v;
    else if (key == "topk_group") r.topkGroup = (int)v, topkGroupSet = true;
    else if (key == "group_score") r.groupScore = val == "top2_sum" ? GroupScore::top2_sum : GroupScore::max;
    else if (key == "top_p") r.topP = v;
    else if (key == "scaling_factor") r.scalingFactor = v;
    else if (key == "tau_group") r.tauGroup = v;
    else if (key == "tau_expert") r.tauExpert = v;
    else if (key == "jitter_eps")
      r.jitterEps = v;
    else {
      err = "unknown routing parameter '" + key + "'";
      return std::nullopt;
    }
  }
  if (!topkGroupSet)
    r.topkGroup = r.nGroup;
  return r;
}

} // namespace moe::ref
