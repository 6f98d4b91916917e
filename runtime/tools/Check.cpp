//===- Check.cpp - compare a run with the C++ reference ---------*- C++ -*-===//

#include "Check.h"

#ifdef MOE_HAVE_REFERENCE
#include "moe/Reference/Reference.h"
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace moe::rt {

#ifndef MOE_HAVE_REFERENCE
double benchReference(const EntrySpec &, const std::vector<Buffer> &, int,
                      std::string &err) {
  err = "--bench-reference needs the C++ reference, which this moe-run was "
        "built without";
  return -1;
}

bool checkAgainstReference(const EntrySpec &, const std::vector<Buffer> &,
                           const std::vector<Buffer> &, double, CheckReport &,
                           std::string &err) {
  err = "--check needs the C++ reference (runtime/reference), which this "
        "moe-run was built without";
  return false;
}
#else
namespace {
/// Relative L2 tolerance for a result of dtype `t`: f32 results differ from
/// the f64 reference by f32 rounding of the sums; 16-bit results are
/// rounded once at the end (bf16 has 8 mantissa bits, f16 11).
double tolerance(DType t) {
  switch (t) {
  case DType::bf16: return 1e-2;
  case DType::f16: return 2e-3;
  default: return 1e-4;
  }
}

/// Unit roundoff u (round to nearest: at most u relative error) of `t`:
/// 8, 11 and 24 significand bits.
double unitRoundoff(DType t) {
  switch (t) {
  case DType::bf16: return 0x1p-8;
  case DType::f16: return 0x1p-11;
  default: return 0x1p-24;
  }
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}
} // namespace

bool buildReferenceLayer(const LayerConfig &config, int64_t H,
                         const RoleValues &values, const RoleShape &shape,
                         ref::Layer &L, std::string &err) {
  L.H = H;
  auto cfg = [&](const char *k) -> std::string {
    auto it = config.values.find(k);
    return it == config.values.end() ? "" : it->second;
  };
  auto routing = ref::parseRouting(cfg("routing"), err);
  auto act = ref::parseActivation(cfg("activation"));
  auto sact = ref::parseActivation(cfg("shared_activation"));
  if (!routing || !act || !sact) {
    if (err.empty())
      err = "unknown activation in the manifest";
    return false;
  }
  L.routing = *routing;
  L.activation = *act;
  L.sharedActivation = *sact;
  L.alpha = std::stod(cfg("alpha"));
  L.limit = std::stod(cfg("limit"));
  L.capacity = cfg("dispatch") == "capacity";
  L.capacityFactor = std::stod(cfg("capacity_factor"));
  if (std::string fixed = cfg("expert_capacity"); !fixed.empty())
    L.fixedCapacity = std::stoll(fixed);
  L.scaleInput = cfg("scale_input") == "1";
  if (std::string map = cfg("expert_map"); !map.empty()) {
    // "0,1,0,2": router row j -> merged expert (written by the compiler).
    size_t pos = 0;
    while (pos <= map.size()) {
      size_t comma = map.find(',', pos);
      std::string item = map.substr(pos, comma == std::string::npos
                                             ? std::string::npos
                                             : comma - pos);
      char *end = nullptr;
      long v = std::strtol(item.c_str(), &end, 10);
      if (item.empty() || *end != '\0' || v < 0) {
        err = "malformed expert_map '" + map + "' in the manifest";
        return false;
      }
      L.expertMap.push_back(static_cast<int>(v));
      if (comma == std::string::npos)
        break;
      pos = comma + 1;
    }
  }
  for (const std::string &k : config.specialKinds) {
    auto sk = ref::parseSpecial(k);
    if (!sk) {
      err = "unknown special expert kind '" + k + "'";
      return false;
    }
    L.special.push_back(*sk);
  }
  L.router = values("router");
  L.routerBias = values("router_bias");
  L.selectionBias = values("selection_bias");
  L.groupRouter = values("group_router");
  L.domainEmbeddings = values("domain_embeddings");
  L.projW1 = values("proj_w1");
  L.projW2 = values("proj_w2");
  L.gate = values("gate");
  L.up = values("up");
  L.down = values("down");
  L.gateBias = values("gate_bias");
  L.upBias = values("up_bias");
  L.downBias = values("down_bias");
  if (std::vector<int64_t> up = shape("up"); up.size() >= 2) {
    L.numRouted = up[0];
    L.F = up[1];
  }
  L.loraBase = values("lora_base");
  L.loraA = values("lora_a");
  L.loraB = values("lora_b");
  if (std::vector<int64_t> a = shape("lora_a"); a.size() >= 2) {
    L.numRouted = a[0];
    L.loraRank = a[1];
    L.loraAlpha = std::stod(cfg("lora_alpha"));
  }
  L.constRouter = values("const_router");
  L.constVectors = values("const_vectors");
  L.sharedGate = values("shared_gate");
  L.sharedUp = values("shared_up");
  L.sharedDown = values("shared_down");
  L.sharedGateWeight = values("shared_gate_weight");
  L.outputBias = values("output_bias");
  if (std::vector<int64_t> su = shape("shared_up"); !su.empty())
    L.sharedF = su[0];
  return true;
}

/// The reference layer for a moe.layer whose operands are the entry's
/// arguments named `prefix` + role, configured by `config`; `x` is the
/// entry's "input" (its hidden size is the layer's).
bool buildLayer(const EntrySpec &spec, const LayerConfig &config,
                const std::string &prefix, const std::vector<Buffer> &inputs,
                const Buffer &x, ref::Layer &L, std::string &err) {
  auto get = [&](const std::string &role) -> const Buffer * {
    for (size_t i = 0; i < spec.args.size(); ++i)
      if (spec.args[i].name == prefix + role)
        return &inputs[i];
    return nullptr;
  };
  bool ok = buildReferenceLayer(
      config, x.shape[1],
      [&](const std::string &role) {
        const Buffer *b = get(role);
        return b ? std::vector<double>(b->values.begin(), b->values.end())
                 : std::vector<double>();
      },
      [&](const std::string &role) {
        const Buffer *b = get(role);
        return b ? b->shape : std::vector<int64_t>();
      },
      L, err);
  if (!ok)
    err = "--check: " + err;
  return ok;
}

/// A dense MLP (moe.ffn without a sigmoid gate weight): §3 on every token.
bool runFFN(const EntrySpec &spec, const std::vector<Buffer> &inputs,
            const std::vector<double> &x, int64_t T, ref::LayerResult &r,
            std::string &err) {
  const LayerConfig &cfg = *spec.ffn;
  auto value = [&](const char *k) {
    auto it = cfg.values.find(k);
    return it == cfg.values.end() ? std::string() : it->second;
  };
  auto act = ref::parseActivation(value("activation"));
  const Buffer *gate = nullptr, *up = nullptr, *down = nullptr;
  for (size_t i = 0; i < spec.args.size(); ++i) {
    const std::string &n = spec.args[i].name;
    if (n == "gate")
      gate = &inputs[i];
    else if (n == "up")
      up = &inputs[i];
    else if (n == "down")
      down = &inputs[i];
    else if (n != "input") {
      err = "--check: moe.ffn entry '" + spec.name + "' has operand '" + n +
            "', which the check does not model";
      return false;
    }
  }
  if (!act || !up || !down || (ref::isGated(*act) != (gate != nullptr))) {
    err = "--check: moe.ffn entry '" + spec.name +
          "' lacks its activation or weights in the manifest";
    return false;
  }
  int64_t F = up->shape[0], H = up->shape[1];
  double alpha = std::stod(value("alpha")), limit = std::stod(value("limit"));
  r.y.assign(T * H, 0.0);
  r.routed.nearTie.assign(T, false);
  r.routed.orderTie.assign(T, false);
  std::vector<double> h(F);
  for (int64_t t = 0; t < T; ++t) {
    const double *xt = &x[t * H];
    for (int64_t f = 0; f < F; ++f) {
      double g = 0, u = 0;
      for (int64_t i = 0; i < H; ++i) {
        u += double(up->values[f * H + i]) * xt[i];
        if (gate)
          g += double(gate->values[f * H + i]) * xt[i];
      }
      h[f] = ref::activate(*act, g, u, alpha, limit);
    }
    for (int64_t o = 0; o < H; ++o) {
      double acc = 0;
      for (int64_t f = 0; f < F; ++f)
        acc += double(down->values[o * F + f]) * h[f];
      r.y[t * H + o] = acc;
    }
  }
  return true;
}

/// Runs the reference for a layer, Cartesian or FFN entry.
bool runReference(const EntrySpec &spec, const std::vector<Buffer> &inputs,
                  double tieTolerance, ref::LayerResult &r, const Buffer *&x,
                  bool &capacity, std::string &err) {
  x = nullptr;
  for (size_t i = 0; i < spec.args.size(); ++i)
    if (spec.args[i].name == "input")
      x = &inputs[i];
  if ((!spec.layer && !spec.cartesian && !spec.ffn) || !x ||
      x->shape.size() != 2) {
    err = "--check: entry '" + spec.name +
          "' is not a single moe.layer, moe.cartesian or moe.ffn on its "
          "arguments (no layer configuration in the manifest)";
    return false;
  }
  int64_t T = x->shape[0];
  std::vector<double> xv(x->values.begin(), x->values.end());
  if (spec.ffn)
    return runFFN(spec, inputs, xv, T, r, err);
  if (spec.layer) {
    ref::Layer L;
    if (!buildLayer(spec, *spec.layer, "", inputs, *x, L, err))
      return false;
    capacity = L.capacity;
    r = ref::runLayer(L, xv, T, tieTolerance);
    return true;
  }
  ref::Layer A, B;
  if (!buildLayer(spec, spec.cartesian->first, "first.", inputs, *x, A, err) ||
      !buildLayer(spec, spec.cartesian->second, "second.", inputs, *x, B, err))
    return false;
  std::vector<double> norm;
  for (size_t i = 0; i < spec.args.size(); ++i)
    if (spec.args[i].name == "norm_weight")
      norm.assign(inputs[i].values.begin(), inputs[i].values.end());
  capacity = A.capacity || B.capacity;
  // The compiled layer holds h = x + A(x) and rmsnorm(h) in the input's
  // dtype (the regions take and yield it), and B routes on them: B's
  // decisions within that rounding's effect on its logits are near ties too.
  r = ref::runCartesian(A, B, norm, spec.cartesian->epsilon, xv, T, tieTolerance,
                        unitRoundoff(x->dtype));
  return true;
}

bool checkAgainstReference(const EntrySpec &spec,
                           const std::vector<Buffer> &inputs,
                           const std::vector<Buffer> &outputs,
                           double tieTolerance, CheckReport &report,
                           std::string &err) {
  ref::LayerResult r;
  const Buffer *x = nullptr;
  bool capacity = false;
  if (!runReference(spec, inputs, tieTolerance, r, x, capacity, err))
    return false;
  int64_t T = x->shape[0], H = x->shape[1];

  // Tokens whose routing was a near-tie may legitimately pick other experts
  // with f32 logits; they are left out (and counted). With capacity dispatch
  // such a token, and one whose chosen experts may come in the other slot
  // order (admission goes by slot), can change the admission of other
  // tokens' pairs: the reference's capacityTaint marks every token that
  // could be affected, and they are left out too. Without that (a Cartesian
  // layer with capacity) a run with a tie is not comparable.
  std::vector<bool> skip(T, false);
  int64_t ties = 0, skipped = 0;
  for (int64_t t = 0; t < T; ++t) {
    bool tie = r.routed.nearTie[t] || (capacity && r.routed.orderTie[t]);
    ties += tie;
    skip[t] = tie || (!r.capacityTaint.empty() && r.capacityTaint[t]);
    skipped += skip[t];
  }
  const Buffer &y = outputs[0];
  double tol = tolerance(y.dtype);
  report.passed = true;
  if (ties && capacity && r.capacityTaint.empty()) {
    report.lines.push_back("check: " + std::to_string(ties) +
                           " near-tie tokens under capacity dispatch: not "
                           "comparable, rerun with another seed");
    return true;
  }
  if (T > 0 && skipped == T) {
    // Nothing left to compare: a pass here would assert nothing.
    report.lines.push_back(
        "check: not comparable: none of the " + std::to_string(T) +
        " tokens compared (" + std::to_string(ties) + " near ties" +
        (skipped > ties ? ", " + std::to_string(skipped - ties) +
                              " more whose capacity admissions the ties "
                              "could change"
                        : std::string()) +
        "), rerun with another seed");
    return true;
  }
  double diff2 = 0, ref2 = 0;
  bool nan = false;
  for (int64_t t = 0; t < T; ++t) {
    if (skip[t])
      continue;
    for (int64_t h = 0; h < H; ++h) {
      double o = y.values[t * H + h], e = r.y[t * H + h];
      nan |= std::isnan(o) != std::isnan(e);
      if (std::isnan(o) || std::isnan(e))
        continue;
      diff2 += (o - e) * (o - e);
      ref2 += e * e;
    }
  }
  double rel = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  bool ok = !nan && rel <= tol;
  report.lines.push_back(std::string("check: ") + (ok ? "ok" : "MISMATCH") +
                         " ||out-ref||/||ref|| = " + num(rel) + " (tolerance " +
                         num(tol) + " for " + dtypeName(y.dtype) + ", " +
                         std::to_string(T - skipped) + "/" + std::to_string(T) +
                         " tokens compared" + (nan ? ", NaN mismatch" : "") +
                         (skipped > ties ? ", " + std::to_string(skipped - ties) +
                                               " more whose capacity admissions "
                                               "the ties could change"
                                         : std::string()) +
                         ")");
  report.passed &= ok;
  if (capacity && outputs.size() > 1 && ties) {
    // Another resolution of the ties may drop other pairs.
    report.lines.push_back(
        "check: dropped count not comparable (" + std::to_string(ties) +
        " tie tokens under capacity dispatch): " +
        std::to_string(static_cast<int64_t>(outputs[1].values[0])) +
        ", reference " + std::to_string(r.dropped));
  } else if (capacity && outputs.size() > 1) {
    int64_t got = static_cast<int64_t>(outputs[1].values[0]);
    bool okd = got == r.dropped;
    report.lines.push_back(std::string("check: ") + (okd ? "ok" : "MISMATCH") +
                           " dropped = " + std::to_string(got) + " (reference " +
                           std::to_string(r.dropped) + ")");
    report.passed &= okd;
  }
  return true;
}

double benchReference(const EntrySpec &spec, const std::vector<Buffer> &inputs,
                      int runs, std::string &err) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    ref::LayerResult r;
    const Buffer *x = nullptr;
    bool capacity = false;
    auto t0 = std::chrono::steady_clock::now();
    if (!runReference(spec, inputs, 1e-4, r, x, capacity, err))
      return -1;
    ms.push_back(std::chrono::duration<double, std::milli>(
                     std::chrono::steady_clock::now() - t0)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}
#endif

} // namespace moe::rt
