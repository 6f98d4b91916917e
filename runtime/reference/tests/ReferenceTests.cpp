//===- ReferenceTests.cpp - hand-worked checks of the reference -*- C++ -*-===//
//
// The reference is what compiled layers are judged against, so it is checked
// here against numbers worked out by hand from MOE_SEMANTICS.md (each case's
// comment shows the arithmetic), not against itself.
//
//===----------------------------------------------------------------------===//

#include "moe/Reference/Reference.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

using namespace moe::ref;

static int passed = 0, failed = 0;
static bool current = true;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::printf("    failed: %s (line %d)\n", #cond, __LINE__);              \
      current = false;                                                         \
    }                                                                          \
  } while (0)
#define CHECK_NEAR(a, b)                                                       \
  do {                                                                         \
    double va = (a), vb = (b);                                                 \
    if (!(std::fabs(va - vb) <= 1e-9 * (1 + std::fabs(vb)))) {                 \
      std::printf("    failed: %s = %.12g, expected %.12g (line %d)\n", #a, va, \
                  vb, __LINE__);                                               \
      current = false;                                                         \
    }                                                                          \
  } while (0)

static void test(const char *name, const std::function<void()> &fn) {
  current = true;
  fn();
  std::printf("%s %s\n", current ? "PASS" : "FAIL", name);
  (current ? passed : failed)++;
}

static Routing routing(Scoring s, Selection sel, int k) {
  Routing r;
  r.scoring = s;
  r.selection = sel;
  r.k = k;
  return r;
}

int main() {
  test("softmax top-2 renormalised", [] {
    // logits [1, 3, 2, 0]: top-2 = experts 1, 2; renormalised weights are
    // e^3 / (e^3 + e^2) = 1 / (1 + e^-1) and e^2 / (e^3 + e^2).
    Routing r = routing(Scoring::softmax, Selection::topk, 2);
    r.renormalize = true;
    Routed o = route(r, {1, 3, 2, 0}, 1, 4, {}, {});
    CHECK(o.indices[0] == 1 && o.indices[1] == 2);
    CHECK_NEAR(o.weights[0], 1 / (1 + std::exp(-1.0)));
    CHECK_NEAR(o.weights[1], 1 / (1 + std::exp(1.0)));
  });
  test("softmax top-2 without renormalisation keeps probabilities", [] {
    // p_1 = e^3 / (e + e^3 + e^2 + 1).
    Routed o = route(routing(Scoring::softmax, Selection::topk, 2), {1, 3, 2, 0},
                     1, 4, {}, {});
    double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + 1;
    CHECK_NEAR(o.weights[0], std::exp(3.0) / z);
    CHECK_NEAR(o.weights[1], std::exp(2.0) / z);
  });
  test("ties go to the lower expert index", [] {
    Routed o = route(routing(Scoring::none, Selection::topk, 2), {1, 1, 1, 1},
                     1, 4, {}, {});
    CHECK(o.indices[0] == 0 && o.indices[1] == 1);
  });
  test("NaN ranks last and stays in its row", [] {
    // Row 0 [NaN, 1, 2, 0]: top-2 of raw scores = 2, 1. Row 1 is normal.
    Routed o = route(routing(Scoring::none, Selection::topk, 2),
                     {NAN, 1, 2, 0, 0, 5, 4, 3}, 2, 4, {}, {});
    CHECK(o.indices[0] == 2 && o.indices[1] == 1);
    CHECK(o.indices[2] == 1 && o.indices[3] == 2);
    Routed s = route(routing(Scoring::softmax, Selection::topk, 1),
                     {NAN, 1, 2, 0, 0, 5, 4, 3}, 2, 4, {}, {});
    CHECK(std::isnan(s.weights[0]));
    CHECK(!std::isnan(s.weights[1]));
  });
  test("an all -inf row gives zero weights", [] {
    double ninf = -INFINITY;
    Routed o = route(routing(Scoring::softmax, Selection::topk, 2),
                     {ninf, ninf, ninf, ninf}, 1, 4, {}, {});
    CHECK(o.weights[0] == 0 && o.weights[1] == 0);
  });
  test("top-p includes the expert that crosses p", [] {
    // p = [.4, .3, .2, .1], p-threshold .5: .4 (cum 0 < .5), .3 (cum .4 <
    // .5), then cum .7 >= .5 stops: slots [0, 1, -1].
    Routing r = routing(Scoring::softmax, Selection::top_p, 3);
    r.topP = 0.5;
    Routed o = route(r, {std::log(.4), std::log(.3), std::log(.2), std::log(.1)},
                     1, 4, {}, {});
    CHECK(o.indices[0] == 0 && o.indices[1] == 1 && o.indices[2] == -1);
    CHECK_NEAR(o.weights[0], .4);
    CHECK_NEAR(o.weights[1], .3);
    CHECK(o.weights[2] == 0);
  });
  test("group-limited: max and top2_sum choose different groups", [] {
    // Scores [.9, 0, .5, .5], groups {0,1} {2,3}: max scores .9 vs .5 keeps
    // group 0; top-2 sums .9 vs 1.0 keep group 1.
    Routing r = routing(Scoring::none, Selection::group_limited_topk, 2);
    r.nGroup = 2;
    r.topkGroup = 1;
    Routed a = route(r, {.9, 0, .5, .5}, 1, 4, {}, {});
    CHECK(a.indices[0] == 0 && a.indices[1] == 1);
    r.groupScore = GroupScore::top2_sum;
    Routed b = route(r, {.9, 0, .5, .5}, 1, 4, {}, {});
    CHECK(b.indices[0] == 2 && b.indices[1] == 3);
  });
  test("selection bias chooses, scores weigh", [] {
    // sigmoid(0) = .5 for all; bias [0, 0, 1, 0] picks expert 2 first, with
    // weight sigmoid(0) = .5 (not .5 + 1).
    Routed o = route(routing(Scoring::sigmoid, Selection::topk, 1), {0, 0, 0, 0},
                     1, 4, {}, {0, 0, 1, 0});
    CHECK(o.indices[0] == 2);
    CHECK_NEAR(o.weights[0], 0.5);
  });
  test("top-k then softmax", [] {
    // logits [2, 0, 1, -1]: top-2 = 0, 2; softmax([2, 1]).
    Routed o = route(routing(Scoring::none, Selection::topk_then_softmax, 2),
                     {2, 0, 1, -1}, 1, 4, {}, {});
    CHECK(o.indices[0] == 0 && o.indices[1] == 2);
    CHECK_NEAR(o.weights[0], 1 / (1 + std::exp(-1.0)));
  });
  test("sparsemixer masks by relative distance per round", [] {
    // logits [2, 1.9, 1, -3], eps = 0.05 (threshold 0.1). Round 1, m = 2:
    // (2 - 1.9) / 2 = .05 keeps 1.9; (2 - 1) / 2 = .5 and 5 / 3 mask the
    // rest, so w = 1 / (1 + e^{-.1}). Round 2, m = 1.9 over {1.9, 1, -3}:
    // .9 / 1.9 masks 1, so w = 1: not renormalised, the weights sum past 1.
    Routing r = routing(Scoring::none, Selection::sparsemixer, 2);
    r.jitterEps = 0.05;
    Routed o = route(r, {2, 1.9, 1, -3}, 1, 4, {}, {});
    CHECK(o.indices[0] == 0 && o.indices[1] == 1);
    CHECK_NEAR(o.weights[0], 1 / (1 + std::exp(-0.1)));
    CHECK_NEAR(o.weights[1], 1.0);
    CHECK(!o.nearTie[0]);
    // A negative maximum divides by |z_j|: m = -1, z = -1.05 gives .05 / 1.05
    // (kept), z = -2 gives 1 / 2 (masked).
    Routed n = route(r, {-1, -1.05, -2, -9}, 1, 4, {}, {});
    CHECK_NEAR(n.weights[0], 1 / (1 + std::exp(-0.05)));
    // On the threshold (to within the tie tolerance) is a near tie.
    Routed t = route(r, {2, 1.8, -5, -5}, 1, 4, {}, {});
    CHECK(t.nearTie[0]);
  });
  test("scaling after renormalisation", [] {
    Routing r = routing(Scoring::softmax, Selection::topk, 2);
    r.renormalize = true;
    r.scalingFactor = 2.5;
    Routed o = route(r, {0, 0, -INFINITY, -INFINITY}, 1, 4, {}, {});
    CHECK_NEAR(o.weights[0], 1.25);
    CHECK_NEAR(o.weights[1], 1.25);
  });
  test("hierarchical dense weights sum to 1", [] {
    // a = softmax(group logits), b = in-group softmax: sum_j a_g b_j = 1.
    Routing r = routing(Scoring::softmax, Selection::hierarchical, 4);
    r.nGroup = 2;
    r.topkGroup = 2;
    r.tauGroup = 0.5;
    Routed o = route(r, {1, 2, 3, 4}, 1, 4, {0.3, -0.2}, {});
    double s = 0;
    for (double w : o.weights)
      s += w;
    CHECK_NEAR(s, 1.0);
    // a_0 = 1 / (1 + e^{(-0.2 - 0.3)/0.5}); b_1 = e^2 / (e + e^2).
    double a0 = 1 / (1 + std::exp(-1.0)), b1 = 1 / (1 + std::exp(-1.0));
    CHECK_NEAR(o.weights[1], a0 * b1);
  });
  test("hierarchical group top-1 empties the other group", [] {
    Routing r = routing(Scoring::softmax, Selection::hierarchical, 4);
    r.nGroup = 2;
    r.topkGroup = 1;
    Routed o = route(r, {1, 2, 3, 4}, 1, 4, {0.0, 1.0}, {});
    CHECK(o.indices[0] == -1 && o.indices[1] == -1 && o.indices[2] == 2 &&
          o.indices[3] == 3);
    CHECK(o.weights[0] == 0);
  });
  test("capacity admits in (slot, token) order", [] {
    // T = 2, K = 2, E = 2, cf = .5: C = ceil(.5 * 4 / 2) = 1. Slot 0: t0 ->
    // e0 admitted, t1 -> e0 dropped; slot 1: t0 -> e1 admitted, t1 dropped.
    Routed r;
    r.indices = {0, 1, 0, 1};
    r.weights = {.6, .4, .7, .3};
    CHECK(expertCapacity(2, 2, 2, 0.5) == 1);
    CHECK(expertCapacity(3, 2, 4, 1.25) == 2); // ceil(1.875)
    int64_t dropped = capacityDispatch(r, 2, 2, 2, 1);
    CHECK(dropped == 2);
    CHECK(r.indices[0] == 0 && r.indices[1] == 1);
    CHECK(r.indices[2] == -1 && r.indices[3] == -1 && r.weights[2] == 0);
  });
  test("activations at hand-computed points", [] {
    CHECK_NEAR(activate(Activation::relu2, 0, -1, 0, 0), 0);
    CHECK_NEAR(activate(Activation::relu2, 0, 2, 0, 0), 4);
    CHECK_NEAR(activate(Activation::relu, 0, -3, 0, 0), 0);
    CHECK_NEAR(activate(Activation::gelu, 0, 1, 0, 0), 0.5 * (1 + std::erf(1 / std::sqrt(2.0))));
    CHECK_NEAR(activate(Activation::swiglu, 1, 2, 0, 0), 2 / (1 + std::exp(-1.0)));
    CHECK_NEAR(activate(Activation::geglu, 1, 2, 0, 0), 2 * 0.5 * (1 + std::erf(1 / std::sqrt(2.0))));
    // clamped: g = 10 -> 7, u = -9 -> -7: (-7 + 1) * 7 * sigmoid(1.702 * 7).
    CHECK_NEAR(activate(Activation::swiglu_clamped, 10, -9, 1.702, 7.0),
               -6.0 * 7.0 / (1 + std::exp(-1.702 * 7)));
  });
  test("a one-expert layer is a plain FFN", [] {
    // H = 2, F = 1, relu: u = [1 1] . [1 2] = 3, y = [2 3] * 3 = [6 9].
    Layer L;
    L.H = 2;
    L.routing = routing(Scoring::softmax, Selection::topk, 1);
    L.router = {0.3, -0.7};
    L.numRouted = 1;
    L.F = 1;
    L.activation = Activation::relu;
    L.up = {1, 1};
    L.down = {2, 3};
    LayerResult r = runLayer(L, {1, 2}, 1);
    CHECK_NEAR(r.y[0], 6);
    CHECK_NEAR(r.y[1], 9);
  });
  test("dense layer equals the weighted sum of all experts", [] {
    // E = 2, H = 1, F = 1, relu, expert j: u = x, y = (j + 1) * relu(u).
    // x = 2, router [1, 0]: p = softmax([2, 0]); y = p0 * 2 + p1 * 4.
    Layer L;
    L.H = 1;
    L.routing = routing(Scoring::softmax, Selection::dense, 2);
    L.router = {1, 0};
    L.numRouted = 2;
    L.F = 1;
    L.activation = Activation::relu;
    L.up = {1, 1};
    L.down = {1, 2};
    LayerResult r = runLayer(L, {2}, 1);
    double p0 = 1 / (1 + std::exp(-2.0));
    CHECK_NEAR(r.y[0], p0 * 2 + (1 - p0) * 4);
  });
  test("LoRA with B = 0 leaves the base", [] {
    Layer L;
    L.H = 2;
    L.routing = routing(Scoring::softmax, Selection::topk, 1);
    L.router = {1, 0, 0, 1};
    L.numRouted = 2;
    L.loraRank = 1;
    L.loraAlpha = 4;
    L.loraBase = {1, 0, 0, 1};
    L.loraA = {1, 1, 1, 1};
    L.loraB = {0, 0, 0, 0};
    LayerResult r = runLayer(L, {3, -1}, 1);
    CHECK_NEAR(r.y[0], 3);
    CHECK_NEAR(r.y[1], -1);
  });
  test("copy and constant experts", [] {
    // Experts: 0 = copy, 1 = constant with W_c = 0 (a = [.5, .5]) and v.
    // Router picks expert 1 for x = [1, 1] (logits [0, 1]) with weight
    // p = 1 / (1 + e^-1): y = p * (.5 x + .5 v).
    Layer L;
    L.H = 2;
    L.routing = routing(Scoring::softmax, Selection::topk, 1);
    L.router = {0, 0, 1, 0};
    L.special = {Special::copy, Special::constant};
    L.constRouter = {0, 0, 0, 0};
    L.constVectors = {4, 6};
    LayerResult r = runLayer(L, {1, 1}, 1);
    double p = 1 / (1 + std::exp(-1.0));
    CHECK_NEAR(r.y[0], p * (0.5 + 2));
    CHECK_NEAR(r.y[1], p * (0.5 + 3));
  });
  test("shared expert with its sigmoid gate", [] {
    // Routed expert outputs 0 (down = 0); shared relu FFN: u = x = 2,
    // y = 3 * 2 = 6, gate sigmoid(0 * x) = .5: y = 3.
    Layer L;
    L.H = 1;
    L.routing = routing(Scoring::softmax, Selection::topk, 1);
    L.router = {1};
    L.numRouted = 1;
    L.F = 1;
    L.activation = Activation::relu;
    L.up = {1};
    L.down = {0};
    L.sharedF = 1;
    L.sharedActivation = Activation::relu;
    L.sharedUp = {1};
    L.sharedDown = {3};
    L.sharedGateWeight = {0};
    LayerResult r = runLayer(L, {2}, 1);
    CHECK_NEAR(r.y[0], 3);
  });
  test("T = 0 gives an empty output", [] {
    Layer L;
    L.H = 2;
    L.routing = routing(Scoring::softmax, Selection::topk, 1);
    L.router = {1, 0};
    L.numRouted = 1;
    L.F = 1;
    L.activation = Activation::relu;
    L.up = {1, 1};
    L.down = {1, 1};
    LayerResult r = runLayer(L, {}, 0);
    CHECK(r.y.empty());
  });
  test("logit slack: the pair bound for top-k, score intervals otherwise", [] {
    // softmax top-1 on [1, .998, 0]: s0 - s1 = (e - e^.998) / sum = 8.4e-4,
    // no tie at tolerance 1e-4. With slack, top-k goes by the logits' order:
    // margin .002 against min(single0 + single1, pair).
    Routing r = routing(Scoring::softmax, Selection::topk, 1);
    auto slack = [](double single, double pair) {
      LogitSlack s;
      s.single = [single](int64_t, int) { return single; };
      s.pair = [pair](int64_t, int, int) { return pair; };
      return s;
    };
    std::vector<double> z = {1, 0.998, 0};
    CHECK(!route(r, z, 1, 3, {}, {}).nearTie[0]);
    LogitSlack wide = slack(0.0015, 0.0025), tight = slack(0.0015, 0.0015);
    CHECK(route(r, z, 1, 3, {}, {}, 1e-4, &wide).nearTie[0]);  // .002 < .0025, .003
    CHECK(!route(r, z, 1, 3, {}, {}, 1e-4, &tight).nearTie[0]); // .002 >= .0015
    // A selection bias (0 here) goes through score intervals from the
    // singles: s0 >= 1 / (1 + e^(.998+d-1+d) + e^(0+d-1+d)) and
    // s1 <= 1 / (1 + e^(1-d-.998-d) + e^(0-d-.998-d)); d = .0015: .421944 <
    // .422563, a tie; d = .0005: .422432 - .422075 = 3.6e-4, none.
    std::vector<double> bias = {0, 0, 0};
    CHECK(route(r, z, 1, 3, {}, bias, 1e-4, &tight).nearTie[0]);
    LogitSlack small = slack(0.0005, 0.0005);
    CHECK(!route(r, z, 1, 3, {}, bias, 1e-4, &small).nearTie[0]);
  });
  test("order ties: two chosen experts within the tolerance", [] {
    // softmax top-2 on [1, 1, 0]: experts 0 and 1 tie (slot order only,
    // which capacity dispatch depends on), the third is far: no near tie.
    Routing r = routing(Scoring::softmax, Selection::topk, 2);
    Routed a = route(r, {1, 1, 0}, 1, 3, {}, {});
    CHECK(a.orderTie[0] && !a.nearTie[0]);
    CHECK(a.indices[0] == 0 && a.indices[1] == 1);
    // [2, 1, 0]: neither. [2, 0, 0]: a near tie (for the second slot),
    // no order tie.
    Routed b = route(r, {2, 1, 0}, 1, 3, {}, {});
    CHECK(!b.orderTie[0] && !b.nearTie[0]);
    Routed c = route(r, {2, 0, 0}, 1, 3, {}, {});
    CHECK(!c.orderTie[0] && c.nearTie[0]);
    // Hierarchical: experts 1 and 4 of logits [0, .5, -.5, -1 | 0, 1, -.5,
    // .5] under group logits [-1, 0] tie across groups (the softmax's shift
    // invariance: e^-.5 (e^0 + e^1 + e^-.5 + e^.5) = e^0 + e^.5 + e^-.5 +
    // e^-1), chosen third and fourth of k = 4.
    Routing h = routing(Scoring::softmax, Selection::hierarchical, 4);
    h.nGroup = 2;
    h.topkGroup = 2;
    Routed d = route(h, {0, .5, -.5, -1, 0, 1, -.5, .5}, 1, 8, {-1, 0}, {});
    CHECK(d.orderTie[0] && !d.nearTie[0]);
  });
  test("capacity taint: the pairs whose admission a tie could change", [] {
    // K = 1, E = 2, capacity ceil(4 * 0.5 / 2) = 1. Token 0 is a near tie
    // (it might choose expert 1 instead). Expert 0's queue: t0 (count 0),
    // t1 (1: admitted without t0's pair, so tainted), t2 (2: dropped either
    // way). Expert 1: t3 (0: t0's pair might take the only place).
    Routed r;
    r.indices = {0, 0, 0, 1};
    r.weights = {1, 1, 1, 1};
    r.nearTie = {true, false, false, false};
    r.orderTie = {false, false, false, false};
    std::vector<bool> taint =
        capacityTaint(r, 4, 1, 2, expertCapacity(4, 1, 2, 0.5));
    CHECK(taint == std::vector<bool>({true, true, false, true}));
    // No tie: nothing; an order tie of token 0 (K = 2 now) opens only its
    // own experts 0 and 1, not expert 2.
    r.nearTie[0] = false;
    CHECK(capacityTaint(r, 4, 1, 2, expertCapacity(4, 1, 2, 0.5)) ==
          std::vector<bool>(4, false));
    Routed o;
    o.indices = {0, 1, 0, 2, 2, 3, 0, 2};
    o.weights.assign(8, 0.5);
    o.nearTie.assign(4, false);
    o.orderTie = {true, false, false, false};
    // capacity ceil(8 * 0.5 / 4) = 1. Slot 0: t0 e0 (0), t1 e0 (1: taint),
    // t2 e2 (0, not opened), t3 e0 (2: dropped either way). Slot 1: t0 e1
    // (0), t1 e2 (1, not opened), t2 e3, t3 e2 (2).
    CHECK(capacityTaint(o, 4, 2, 4, expertCapacity(4, 2, 4, 0.5)) ==
          std::vector<bool>({true, true, false, false}));
  });
  test("Cartesian: second-layer ties within the intermediate's rounding", [] {
    // A: one expert with down = 0, so h = x + 0 = x = [1, .998] (no norm).
    // B: router = identity, softmax top-1: logits [1, .998], score margin
    // tanh(.001) = 1e-3, no tie in exact arithmetic. The compiled layer
    // holds h in the entry's dtype: each element off by up to g|h_j|, g =
    // u / (1 - 3u); the logit difference h0 - h1 = .002 by up to
    // g (1 + .998) (worst case; Hoeffding's 6 sqrt(...) is larger here):
    // bf16 (u = 2^-8) 7.8e-3 > .002, a tie; f16 (2^-11) 9.8e-4, f32, exact:
    // none.
    Layer A, B;
    A.H = B.H = 2;
    A.routing = B.routing = routing(Scoring::softmax, Selection::topk, 1);
    A.router = {0, 0};
    A.numRouted = 1;
    A.F = B.F = 1;
    A.activation = B.activation = Activation::relu;
    A.up = {1, 1};
    A.down = {0, 0};
    B.router = {1, 0, 0, 1};
    B.numRouted = 2;
    B.up = {1, 1, 1, 1};
    B.down = {1, 1, 2, 2};
    std::vector<double> x = {1, 0.998};
    LayerResult exact = runCartesian(A, B, {}, 1e-6, x, 1);
    LayerResult bf16 = runCartesian(A, B, {}, 1e-6, x, 1, 1e-4, 0x1p-8);
    LayerResult f16 = runCartesian(A, B, {}, 1e-6, x, 1, 1e-4, 0x1p-11);
    LayerResult f32 = runCartesian(A, B, {}, 1e-6, x, 1, 1e-4, 0x1p-24);
    CHECK(!exact.routed.nearTie[0] && bf16.routed.nearTie[0] &&
          !f16.routed.nearTie[0] && !f32.routed.nearTie[0]);
    // The reference's output does not depend on it: expert 0, weight
    // s0 = 1 / (1 + e^-.002), relu(1.998) * [1, 1].
    CHECK_NEAR(bf16.y[0], 1.998 / (1 + std::exp(-0.002)));
    CHECK_NEAR(bf16.y[1], exact.y[1]);
    // With the norm (weight 1, eps ~ 0): n = h r, r = 1/rms(h) = 1.001, so
    // n = [1.001, .999], margin .002; h's rounding (g|h_j| r) and n's own
    // (g|n_j|) give g (2 * 1.001 + 2 * .999) = 4g, plus the row's common
    // scale error (<= g) times .002: bf16 1.6e-2, a tie; f32 2.4e-7, none.
    LayerResult nb = runCartesian(A, B, {1, 1}, 1e-12, x, 1, 1e-4, 0x1p-8);
    LayerResult nf = runCartesian(A, B, {1, 1}, 1e-12, x, 1, 1e-4, 0x1p-24);
    CHECK(nb.routed.nearTie[0] && !nf.routed.nearTie[0]);
  });
  test("routing attribute text", [] {
    std::string err;
    auto r = parseRouting("#moe.routing<sigmoid, group_limited_topk, k = 8, "
                          "n_group = 8, topk_group = 4, group_score = top2_sum, "
                          "renormalize, scaling_factor = 2.500000e+00>", err);
    CHECK(r && r->k == 8 && r->nGroup == 8 && r->topkGroup == 4 &&
          r->groupScore == GroupScore::top2_sum && r->renormalize &&
          r->scalingFactor == 2.5 && r->scoring == Scoring::sigmoid);
    auto d = parseRouting("#moe.routing<softmax, topk, k = 2>", err);
    CHECK(d && d->nGroup == 1 && d->topkGroup == 1 && !d->renormalize);
    auto m = parseRouting("#moe.routing<none, sparsemixer, k = 2, "
                          "jitter_eps = 2.500000e-01>",
                          err);
    CHECK(m && m->selection == Selection::sparsemixer && m->jitterEps == 0.25);
    auto m0 = parseRouting("#moe.routing<none, sparsemixer, k = 2>", err);
    CHECK(m0 && m0->jitterEps == 0.01);
  });
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
