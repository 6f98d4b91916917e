//===- moe-analyze.cpp - expert importance and similarity -------*- C++ -*-===//
//
//   moe-analyze <model-dir> --calibrate -o calib.json [--tokens N] [--seed S]
//               [--input x.npy] [--samples N] [--layer N] [--check]
//   moe-analyze <model-dir | calib.json> --rank CRITERION [--calib FILE]
//               [--layer N] [--keep N | --keep-ratio R]
//   moe-analyze <model-dir | calib.json> --similarity [linear|rbf]
//               [--calib FILE] [--layer N] [--png FILE] [--cell PX]
//               [--plain] [--scale-min V] [--sigma S]
//   moe-analyze --criteria
//
// The inputs of expert-set surgery (MOE_SEMANTICS.md §5). <model-dir> is
// written by `moe-compile <hf-model-dir> -o <model-dir>`; its per-layer
// weights are read from the .safetensors files. Calibration runs seeded
// random tokens (or a .npy) through each MoE layer in f64 — routing by the
// C++ reference, experts evaluated here — and records the statistics the
// calibration-based criteria and CKA need ("moe-calib/1",
// docs/notes/surgery-analysis.md). --check also runs the compiled layer on
// the same tokens and compares its output with the one the statistics imply.
// Calibration-based modes without --calib calibrate in memory first.
// Errors are one line on stderr and a non-zero exit.
//
//===----------------------------------------------------------------------===//

#include "Args.h"
#include "Check.h"
#include "Npy.h"
#include "Png.h"
#include "moe/Reference/Reference.h"
#include "moe/Runtime/Analysis.h"
#include "moe/Runtime/Model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <cstring>
#include <filesystem>
#include <random>

using namespace moe;
using namespace moe::rt;
using namespace moe::rt::analysis;

namespace {
[[noreturn]] void die(const std::string &msg) {
  std::fflush(stdout); // what was printed so far comes first
  std::fprintf(stderr, "moe-analyze: error: %s\n", msg.c_str());
  std::exit(1);
}

enum class Mode { none, calibrate, rank, similarity, mergePlan, criteria };

struct Options {
  std::string source; // a compiled model directory or a calibration file
  Mode mode = Mode::none;
  std::string criterion, cka = "linear", calib, output, input, png, keep;
  /// --rank with --keep: write the chosen drops as moe-drop/1 JSON here
  /// (read by `moe-compile <model-dir> --drop FILE`).
  std::string dropOut;
  bool keepIsRatio = false;
  /// --rank --keep: drop in this many rounds, re-estimating between them.
  int64_t rounds = 1;
  /// --merge-plan: similarity kind, a target count or a threshold, and
  /// where to write the moe-merge/1 plan.
  std::string mergeKind, mergeOut;
  int64_t target = 0;
  double threshold = -1;
  int64_t tokens = 256, seed = 0, samples = 128, layer = -1, cell = 0;
  bool layerGiven = false, check = false, plain = false;
  double sigma = kDefaultRbfSigma, scaleMin = 0.0;
};

int64_t parseInt(const std::string &flag, const std::string &v) {
  return moe::tools::parseCount(flag, v, die);
}

double parseDouble(const std::string &flag, const std::string &v) {
  return moe::tools::parseNumber(flag, v, die);
}

const char *kUsage =
    "usage: moe-analyze <model-dir> --calibrate -o FILE [--tokens N] "
    "[--seed S] [--input x.npy] [--samples N] [--layer N] [--check]\n"
    "       moe-analyze <model-dir|calib.json> --rank CRITERION [--calib FILE] "
    "[--layer N] [--keep N | --keep-ratio R [--drop-out drop.json]]\n"
    "       moe-analyze <model-dir|calib.json> --similarity [linear|rbf] "
    "[--calib FILE] [--layer N] [--png FILE] [--cell PX] [--plain] "
    "[--scale-min V] [--sigma S]\n"
    "       moe-analyze <model-dir> --rank CRITERION --keep N --rounds R "
    "[--drop-out drop.json]   (iterative drop)\n"
    "       moe-analyze <model-dir|calib.json> --merge-plan "
    "linear|rbf|cosine (--target M | --threshold T) [--calib FILE] "
    "[--layer N] [--merge-out merge.json]\n"
    "       moe-analyze --criteria\n";

Options parseArgs(int argc, char **argv) {
  Options o;
  auto setMode = [&](Mode m, const std::string &flag) {
    if (o.mode != Mode::none && o.mode != m)
      die("choose one of --calibrate, --rank, --similarity, --merge-plan, "
          "--criteria (got " +
          flag + " too)");
    o.mode = m;
  };
  moe::tools::ArgCursor args(argc, argv, die);
  while (args.next()) {
    const std::string a = args.arg();
    auto value = [&](const std::string &flag) { return args.value(flag); };
    auto is = [&](const char *flag) { return args.is(flag); };
    if (a == "-h" || a == "--help") {
      std::printf("%s", kUsage);
      std::exit(0);
    } else if (a == "--calibrate") {
      setMode(Mode::calibrate, a);
    } else if (a == "--criteria") {
      setMode(Mode::criteria, a);
    } else if (is("--rank")) {
      setMode(Mode::rank, "--rank");
      o.criterion = value("--rank");
    } else if (is("--similarity")) {
      setMode(Mode::similarity, "--similarity");
      if (a != "--similarity") {
        o.cka = value("--similarity");
      } else if (args.hasNext() && args.peek()[0] != '-' &&
                 !std::filesystem::exists(args.peek())) {
        // The kind is optional; a following path is the source.
        o.cka = args.peek();
        args.skip();
      }
    } else if (is("--merge-plan")) {
      setMode(Mode::mergePlan, "--merge-plan");
      o.mergeKind = value("--merge-plan");
    } else if (is("--merge-out")) {
      o.mergeOut = value("--merge-out");
    } else if (is("--target")) {
      o.target = parseInt("--target", value("--target"));
      if (o.target < 1)
        die("--target must be at least 1");
    } else if (is("--threshold")) {
      o.threshold = parseDouble("--threshold", value("--threshold"));
    } else if (is("--rounds")) {
      o.rounds = parseInt("--rounds", value("--rounds"));
      if (o.rounds < 1)
        die("--rounds must be at least 1");
    } else if (is("--calib")) {
      o.calib = value("--calib");
    } else if (a == "-o" || is("--output")) {
      o.output = value(a);
    } else if (is("--input")) {
      o.input = value("--input");
    } else if (is("--png")) {
      o.png = value("--png");
    } else if (is("--tokens")) {
      o.tokens = parseInt("--tokens", value("--tokens"));
    } else if (is("--seed")) {
      o.seed = parseInt("--seed", value("--seed"));
    } else if (is("--samples")) {
      o.samples = parseInt("--samples", value("--samples"));
    } else if (is("--layer")) {
      o.layer = parseInt("--layer", value("--layer"));
      o.layerGiven = true;
    } else if (is("--cell")) {
      o.cell = parseInt("--cell", value("--cell"));
      if (o.cell < 1 || o.cell > 256)
        die("--cell must be in [1, 256] pixels");
    } else if (is("--keep-ratio")) {
      o.keep = value("--keep-ratio");
      o.keepIsRatio = true;
    } else if (is("--keep")) {
      o.keep = value("--keep");
    } else if (is("--drop-out")) {
      o.dropOut = value("--drop-out");
    } else if (is("--sigma")) {
      o.sigma = parseDouble("--sigma", value("--sigma"));
      if (!(o.sigma > 0))
        die("--sigma must be positive");
    } else if (is("--scale-min")) {
      o.scaleMin = parseDouble("--scale-min", value("--scale-min"));
      if (!(o.scaleMin < 1))
        die("--scale-min must be below 1");
    } else if (a == "--plain") {
      o.plain = true;
    } else if (a == "--check") {
      o.check = true;
    } else if (!a.empty() && a[0] == '-') {
      die("unknown option '" + a + "' (moe-analyze --help)");
    } else if (o.source.empty()) {
      o.source = a;
    } else {
      die("unexpected argument '" + a + "'");
    }
  }
  if (o.mode == Mode::criteria)
    return o;
  if (o.mode == Mode::none)
    die("no mode: pass --calibrate, --rank CRITERION, --similarity or "
        "--merge-plan KIND (moe-analyze --help)");
  if (o.source.empty())
    die("no compiled model directory or calibration file given "
        "(moe-analyze --help)");
  if (!std::filesystem::exists(o.source))
    die("'" + o.source + "' does not exist");
  return o;
}

//===----------------------------------------------------------------------===//
// Reading a compiled layer
//===----------------------------------------------------------------------===//

/// A layer of the model prepared for analysis: its expert weights, and a
/// reference layer `rest` that has everything but the routed experts (those
/// are replaced by `zero` experts with the same ids), so that running it
/// gives the routing and the non-routed part of the output (shared experts)
/// without paying for the experts.
struct Prepared {
  const ModelLayer *model = nullptr;
  std::string skip; // why the layer is not analysed, or empty
  ExpertWeights weights;
  ref::Layer rest;
  ref::Activation activation = ref::Activation::swiglu;
  double alpha = 1.702, limit = 7.0;
};

/// A safetensors tensor's values (F32, F64, F16, BF16) as T.
template <typename T>
bool convert(const SafeTensor &t, std::vector<T> &out, std::string &err) {
  size_t n = 1;
  for (int64_t d : t.shape)
    n *= (size_t)d;
  out.resize(n);
  auto check = [&](size_t width) {
    if (t.size != n * width) {
      err = "tensor of " + std::to_string(n) + " elements has " +
            std::to_string(t.size) + " bytes";
      return false;
    }
    return true;
  };
  if (t.dtype == "F32") {
    if (!check(4))
      return false;
    for (size_t i = 0; i < n; ++i) {
      float f;
      std::memcpy(&f, t.data + 4 * i, 4);
      out[i] = (T)f;
    }
  } else if (t.dtype == "F64") {
    if (!check(8))
      return false;
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, t.data + 8 * i, 8);
      out[i] = (T)d;
    }
  } else if (t.dtype == "F16" || t.dtype == "BF16") {
    if (!check(2))
      return false;
    bool bf = t.dtype == "BF16";
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      out[i] = (T)(bf ? bf16ToFloat(h) : f16ToFloat(h));
    }
  } else {
    err = "unsupported dtype " + t.dtype;
    return false;
  }
  return true;
}
bool toDoubles(const SafeTensor &t, std::vector<double> &out,
               std::string &err) {
  return convert(t, out, err);
}
bool toFloats(const SafeTensor &t, std::vector<float> &out, std::string &err) {
  return convert(t, out, err);
}

/// W_r = P(D) of a projected router (§1.7): row e = W_2·SwiGLU(W_1·d_e).
std::vector<double> foldProjectedRouter(const ref::Layer &L, int64_t E) {
  int64_t m = (int64_t)L.domainEmbeddings.size() / E;
  int64_t twoH = (int64_t)L.projW1.size() / m, hp = twoH / 2, H = L.H;
  std::vector<double> router(E * H, 0.0), z(twoH), h(hp);
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t r = 0; r < twoH; ++r) {
      double acc = 0;
      for (int64_t c = 0; c < m; ++c)
        acc += L.projW1[r * m + c] * L.domainEmbeddings[e * m + c];
      z[r] = acc;
    }
    for (int64_t j = 0; j < hp; ++j)
      h[j] = z[j] / (1.0 + std::exp(-z[j])) * z[hp + j];
    for (int64_t o = 0; o < H; ++o) {
      double acc = 0;
      for (int64_t j = 0; j < hp; ++j)
        acc += L.projW2[o * hp + j] * h[j];
      router[e * H + o] = acc;
    }
  }
  return router;
}

/// `withWeights` false reads only the shapes (E, F) of the expert tensors:
/// calibration-based criteria and CKA need no weights, and a large layer's
/// experts are gigabytes.
Prepared prepare(const ModelLayer &ml, int64_t hidden, bool withWeights) {
  Prepared p;
  p.model = &ml;
  std::string where = "layer " + std::to_string(ml.index);
  const EntrySpec &spec = ml.spec();
  if (ml.kind == "dense" || spec.ffn) {
    p.skip = "a dense FFN layer";
    return p;
  }
  if (spec.cartesian) {
    p.skip = "a Cartesian layer (two expert sets)";
    return p;
  }
  if (!spec.layer) {
    p.skip = "not a moe.layer entry";
    return p;
  }
  const LayerConfig &config = *spec.layer;
  if (ml.weights->find("lora_a")) {
    p.skip = "LoRA experts; the analysis covers FFN experts";
    return p;
  }
  const SafeTensor *up = ml.weights->find("up");
  const SafeTensor *down = ml.weights->find("down");
  if (!up || !down || up->shape.size() != 3 || down->shape.size() != 3) {
    p.skip = "no routed FFN experts";
    return p;
  }
  auto floats = [&](const char *role) {
    std::vector<float> v;
    if (!withWeights)
      return v;
    if (const SafeTensor *t = ml.weights->find(role)) {
      std::string e;
      if (!toFloats(*t, v, e))
        die(where + ": tensor '" + role + "' in '" + ml.weightsPath +
            "': " + e);
    }
    return v;
  };
  // The routed experts' weights are read as floats into `p.weights` below;
  // the routing copy `rest` does not need them.
  static const char *kRoutedExpertRoles[] = {"gate",     "up",      "down",
                                             "gate_bias", "up_bias", "down_bias"};
  ref::Layer &L = p.rest;
  std::string err;
  bool built = buildReferenceLayer(
      config, hidden,
      [&](const std::string &role) {
        std::vector<double> v;
        if (!withWeights ||
            std::find(std::begin(kRoutedExpertRoles),
                      std::end(kRoutedExpertRoles),
                      role) != std::end(kRoutedExpertRoles))
          return v;
        if (const SafeTensor *t = ml.weights->find(role)) {
          std::string e;
          if (!toDoubles(*t, v, e))
            die(where + ": tensor '" + role + "' in '" + ml.weightsPath +
                "': " + e);
        }
        return v;
      },
      [&](const std::string &role) {
        const SafeTensor *t = ml.weights->find(role);
        return t ? t->shape : std::vector<int64_t>();
      },
      L, err);
  if (!built)
    die(where + ": " + err);
  std::vector<ref::Special> special = L.special;

  ExpertWeights &w = p.weights;
  w.E = up->shape[0];
  w.F = up->shape[1];
  w.H = hidden;
  w.gate = floats("gate");
  w.up = floats("up");
  w.down = floats("down");
  w.gateBias = floats("gate_bias");
  w.upBias = floats("up_bias");
  w.downBias = floats("down_bias");
  // Router rows of the FFN experts (zero-computation experts' rows follow).
  int64_t total = w.E + (int64_t)special.size();
  std::vector<double> router =
      L.domainEmbeddings.empty() ? L.router : foldProjectedRouter(L, total);
  if ((int64_t)router.size() == total * hidden)
    router.resize(w.E * hidden);
  w.router.assign(router.begin(), router.end());
  if (Status s = w.validate(); !s)
    die(where + ": " + s.message());
  p.activation = L.activation;
  p.alpha = L.alpha;
  p.limit = L.limit;
  // The routed experts become zero experts with the same ids: routing
  // (over all experts) is unchanged, the routed experts cost nothing, and
  // zero-computation experts (ids E, E+1, ...) stay in the rest.
  L.numRouted = 0;
  L.special.assign(w.E, ref::Special::zero);
  L.special.insert(L.special.end(), special.begin(), special.end());
  return p;
}

/// Expert `e` of `p` on one token, in f64 (§3).
void evalExpert(const Prepared &p, int64_t e, const double *x, double *out) {
  const ExpertWeights &w = p.weights;
  const int64_t F = w.F, H = w.H;
  const float *gate = w.gate.empty() ? nullptr : &w.gate[e * F * H];
  const float *up = &w.up[e * F * H], *down = &w.down[e * H * F];
  std::vector<double> h(F);
  for (int64_t f = 0; f < F; ++f) {
    double u = w.upBias.empty() ? 0.0 : w.upBias[e * F + f];
    double g = w.gateBias.empty() ? 0.0 : w.gateBias[e * F + f];
    for (int64_t i = 0; i < H; ++i) {
      u += (double)up[f * H + i] * x[i];
      if (gate)
        g += (double)gate[f * H + i] * x[i];
    }
    h[f] = ref::activate(p.activation, g, u, p.alpha, p.limit);
  }
  for (int64_t o = 0; o < H; ++o) {
    double acc = w.downBias.empty() ? 0.0 : w.downBias[e * H + o];
    for (int64_t f = 0; f < F; ++f)
      acc += (double)down[o * F + f] * h[f];
    out[o] = acc;
  }
}

//===----------------------------------------------------------------------===//
// Calibration
//===----------------------------------------------------------------------===//

std::string layerList(const std::vector<int64_t> &ids) {
  if (ids.empty())
    return "no layers";
  bool contiguous = true;
  for (size_t i = 1; i < ids.size(); ++i)
    contiguous &= ids[i] == ids[i - 1] + 1;
  if (contiguous && ids.size() > 2)
    return "layers " + std::to_string(ids.front()) + ".." +
           std::to_string(ids.back());
  std::string s = ids.size() == 1 ? "layer " : "layers ";
  for (size_t i = 0; i < ids.size(); ++i)
    s += (i ? ", " : "") + std::to_string(ids[i]);
  return s;
}

/// The layers an operation covers: all of them, or --layer (which must
/// exist).
std::vector<const ModelLayer *> selectLayers(const Model &m, const Options &o) {
  std::vector<const ModelLayer *> out;
  std::vector<int64_t> ids;
  for (const ModelLayer &l : m.layers()) {
    ids.push_back(l.index);
    if (!o.layerGiven || l.index == o.layer)
      out.push_back(&l);
  }
  if (o.layerGiven && out.empty())
    die("layer " + std::to_string(o.layer) + " out of range: the model has " +
        layerList(ids));
  return out;
}

/// Calibration inputs for layer `position` (its place in model.json):
/// --input (T x H for every layer, or L x T x H, one slice a layer) or
/// seeded uniform(-1, 1), rounded to the model's dtype like moe-run does.
struct Inputs {
  std::vector<float> values;
  std::vector<int64_t> shape;
};

Inputs loadInputs(const Options &o, const Model &m) {
  Inputs in;
  if (!o.input.empty()) {
    std::string err;
    if (!readNpyF32(o.input, in.values, in.shape, err))
      die(err);
    bool ok =
        (in.shape.size() == 2 && in.shape[1] == m.hiddenSize()) ||
        (in.shape.size() == 3 && in.shape[0] == (int64_t)m.layers().size() &&
         in.shape[2] == m.hiddenSize());
    if (!ok)
      die("'" + o.input + "' has shape " + formatShape(in.shape) +
          ", expected [T x " + std::to_string(m.hiddenSize()) + "] or [" +
          std::to_string(m.layers().size()) + " x T x " +
          std::to_string(m.hiddenSize()) + "]");
    return in;
  }
  if (o.tokens < 1)
    die("--tokens must be at least 1");
  in.shape = {o.tokens, m.hiddenSize()};
  std::mt19937_64 rng((uint64_t)o.seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  in.values.resize(o.tokens * m.hiddenSize());
  for (float &v : in.values)
    v = (float)dist(rng);
  return in;
}

double checkTolerance(DType t) {
  switch (t) {
  case DType::bf16:
    return 1e-2;
  case DType::f16:
    return 2e-3;
  default:
    return 1e-4;
  }
}

/// The calibration tokens of the layer at `position` in model.json, as the
/// compiled layer sees them (rounded to its dtype).
Buffer layerTokens(const Model &m, const Inputs &in, int64_t position) {
  const int64_t H = m.hiddenSize();
  const int64_t T = in.shape.size() == 2 ? in.shape[0] : in.shape[1];
  Buffer xb;
  xb.dtype = m.dtype();
  xb.shape = {T, H};
  size_t off = in.shape.size() == 3 ? (size_t)position * T * H : 0;
  xb.values.assign(in.values.begin() + off, in.values.begin() + off + T * H);
  xb.materialize();
  return xb;
}

/// The statistics of one prepared layer on the tokens `x` (T x H, as the
/// compiled layer sees them). `restOut` receives the routing and the
/// non-routed part of the output, `combined` the routed part.
LayerStats calibrateLayer(const Prepared &p, const std::vector<double> &x,
                          int64_t T, int64_t samples,
                          ref::LayerResult *restOut = nullptr,
                          std::vector<double> *combined = nullptr) {
  ref::LayerResult rest = ref::runLayer(p.rest, x, T);
  // Slots on zero-computation experts are part of `rest`; the statistics
  // cover the FFN experts (ids below E) only.
  std::vector<int> indices = rest.routed.indices;
  for (int &e : indices)
    if (e >= p.weights.E)
      e = -1;
  auto stats = computeLayerStats(
      p.model->index, x, T, p.weights.H, p.weights.E, p.rest.routing.k, indices,
      rest.routed.weights,
      [&](int64_t e, const double *xt, double *out) {
        evalExpert(p, e, xt, out);
      },
      samples, combined, p.rest.scaleInput);
  if (!stats)
    die(stats.message());
  if (restOut)
    *restOut = std::move(rest);
  return std::move(stats.value());
}

/// `p` with only the routed experts `keep` (ascending ids), as §5 "Drop"
/// leaves the layer: their weights and router rows, zero-computation
/// experts after them, k clamped to what can be selected. Empty `err` on
/// success.
Prepared restrictExperts(const Prepared &p, const std::vector<int64_t> &keep,
                         std::string &err) {
  Prepared q = p;
  const ExpertWeights &w = p.weights;
  const int64_t E = w.E, newE = (int64_t)keep.size();
  auto rows = [&](const std::vector<float> &v) {
    std::vector<float> out;
    if (v.empty())
      return out;
    size_t n = v.size() / E;
    for (int64_t e : keep)
      out.insert(out.end(), v.begin() + e * n, v.begin() + (e + 1) * n);
    return out;
  };
  ExpertWeights &qw = q.weights;
  qw.E = newE;
  qw.router = rows(w.router);
  qw.gate = rows(w.gate);
  qw.up = rows(w.up);
  qw.down = rows(w.down);
  qw.gateBias = rows(w.gateBias);
  qw.upBias = rows(w.upBias);
  qw.downBias = rows(w.downBias);

  ref::Layer &L = q.rest;
  const int64_t total = (int64_t)p.rest.special.size(); // E zeros + specials
  if (!L.domainEmbeddings.empty()) {
    L.router = foldProjectedRouter(p.rest, total);
    L.domainEmbeddings.clear();
    L.projW1.clear();
    L.projW2.clear();
  }
  std::vector<int64_t> rowIds(keep);
  for (int64_t e = E; e < total; ++e)
    rowIds.push_back(e);
  auto routerRows = [&](const std::vector<double> &v) {
    std::vector<double> out;
    if (v.empty())
      return out;
    size_t n = v.size() / total;
    for (int64_t e : rowIds)
      out.insert(out.end(), v.begin() + e * n, v.begin() + (e + 1) * n);
    return out;
  };
  L.router = routerRows(L.router);
  L.routerBias = routerRows(L.routerBias);
  L.selectionBias = routerRows(L.selectionBias);
  L.special.erase(L.special.begin(), L.special.begin() + (E - newE));
  // §5: K stays unless it would exceed what can be selected.
  ref::Routing &r = L.routing;
  const int64_t left = newE + (total - E);
  if (r.nGroup > 1 && left % r.nGroup != 0) {
    err = "routing n_group = " + std::to_string(r.nGroup) +
          " does not divide the " + std::to_string(left) +
          " experts left; drop a multiple of n_group per round";
    return q;
  }
  if (r.selection == ref::Selection::dense ||
      (r.selection == ref::Selection::hierarchical && r.k == total))
    r.k = (int)left;
  r.k = (int)std::min<int64_t>(r.k, left);
  if (r.nGroup > 1)
    r.k = (int)std::min<int64_t>(r.k, (int64_t)r.topkGroup * (left / r.nGroup));
  return q;
}

/// Calibrates the selected layers; prints a line per layer when `verbose`.
Calibration calibrate(const Model &m, const Options &o, bool verbose) {
  Calibration c;
  c.model = o.source;
  c.input = o.input.empty() ? "random" : o.input;
  c.seed = o.input.empty() ? o.seed : 0;
  Inputs in = loadInputs(o, m);
  const int64_t H = m.hiddenSize();
  const int64_t T = in.shape.size() == 2 ? in.shape[0] : in.shape[1];
  std::vector<const ModelLayer *> layers = selectLayers(m, o);
  bool analysed = false;
  for (const ModelLayer *ml : layers) {
    int64_t position = ml - m.layers().data();
    std::string where = "layer " + std::to_string(ml->index);
    Prepared p = prepare(*ml, H, true);
    if (!p.skip.empty()) {
      if (o.layerGiven)
        die(where + " cannot be analysed: " + p.skip);
      if (verbose)
        std::printf("%s: skipped: %s\n", where.c_str(), p.skip.c_str());
      continue;
    }
    Buffer xb = layerTokens(m, in, position);
    std::vector<double> x(xb.values.begin(), xb.values.end());

    ref::LayerResult rest;
    std::vector<double> combined;
    LayerStats s = calibrateLayer(p, x, T, o.samples, &rest, &combined);
    analysed = true;

    std::string checkText;
    if (o.check) {
      Buffer yb;
      yb.dtype = m.dtype();
      yb.shape = {T, H};
      yb.raw.assign(T * H * dtypeSize(m.dtype()), 0);
      TensorView out = yb.view();
      if (Status st = m.runLayer(ml->index, xb.view(), out); !st)
        die(where + ": " + st.message());
      yb.readBack();
      double diff2 = 0, ref2 = 0;
      int64_t compared = 0;
      for (int64_t t = 0; t < T; ++t) {
        if (rest.routed.nearTie[t])
          continue; // f32 logits may legitimately route these elsewhere
        ++compared;
        for (int64_t h = 0; h < H; ++h) {
          double mine = rest.y[t * H + h] + combined[t * H + h];
          double got = yb.values[t * H + h];
          diff2 += (mine - got) * (mine - got);
          ref2 += got * got;
        }
      }
      double rel = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
      double tol = checkTolerance(m.dtype());
      bool ok = rel <= tol;
      char buf[160];
      std::snprintf(buf, sizeof(buf),
                    "; check %s ||stats-model||/||model|| = %.3g "
                    "(tolerance %.3g, %lld/%lld tokens)",
                    ok ? "ok" : "MISMATCH", rel, tol, (long long)compared,
                    (long long)T);
      checkText = buf;
      if (!ok) {
        std::printf("%s: %s\n", where.c_str(), buf + 2);
        die(where + ": the calibration does not reproduce the compiled "
                    "layer's output");
      }
    }
    if (verbose) {
      std::string counts;
      for (int64_t v : s.routedCounts)
        counts += " " + std::to_string(v);
      std::printf("%s: %lld experts, %lld tokens, routed counts%s, %lld "
                  "samples%s\n",
                  where.c_str(), (long long)s.E, (long long)s.tokens,
                  counts.c_str(), (long long)s.samples, checkText.c_str());
    }
    c.layers.push_back(std::move(s));
  }
  if (!analysed)
    die("no layer of '" + o.source + "' can be analysed");
  return c;
}

//===----------------------------------------------------------------------===//
// Ranking and similarity
//===----------------------------------------------------------------------===//

/// Where the data comes from: the model (weights; calibrated on demand) or
/// a calibration file, or both.
struct Sources {
  std::shared_ptr<Model> model;
  std::optional<Calibration> calib;
  std::string calibName; // for messages
};

Sources openSources(const Options &o, bool needCalibration) {
  Sources s;
  bool isFile = std::filesystem::is_regular_file(o.source);
  std::string calibPath = o.calib;
  if (isFile) {
    if (!o.calib.empty())
      die("give either a calibration file or --calib, not both");
    calibPath = o.source;
  } else {
    auto m = Model::load(o.source);
    if (!m)
      die(m.message());
    s.model = m.value();
  }
  if (!calibPath.empty()) {
    auto c = readCalibration(calibPath);
    if (!c)
      die(c.message());
    s.calib = std::move(c.value());
    s.calibName = "the calibration file '" + calibPath + "'";
  } else if (needCalibration) {
    Options co = o;
    s.calib = calibrate(*s.model, co, false);
    s.calibName = "the calibration";
    std::printf("# calibrated now on %lld random tokens (seed %lld); "
                "--calib FILE uses a saved calibration\n",
                (long long)o.tokens, (long long)o.seed);
  }
  return s;
}

/// The layer ids an analysis covers, checked against the model and the
/// calibration.
std::vector<int64_t> analysisLayers(const Sources &s, const Options &o,
                                    bool useCalib) {
  std::vector<int64_t> ids;
  if (s.model) {
    for (const ModelLayer &l : s.model->layers())
      ids.push_back(l.index);
  } else {
    for (const LayerStats &l : s.calib->layers)
      ids.push_back(l.index);
  }
  std::string owner = s.model ? "the model has " : s.calibName + " has ";
  if (o.layerGiven) {
    if (std::find(ids.begin(), ids.end(), o.layer) == ids.end())
      die("layer " + std::to_string(o.layer) + " out of range: " + owner +
          layerList(ids));
    ids = {o.layer};
  }
  if (useCalib && s.calib && s.model && o.layerGiven &&
      !s.calib->layer(o.layer)) {
    std::vector<int64_t> have;
    for (const LayerStats &l : s.calib->layers)
      have.push_back(l.index);
    die("layer " + std::to_string(o.layer) + " is not in " + s.calibName +
        " (it has " + layerList(have) + ")");
  }
  return ids;
}

/// Checks that calibration statistics belong to the model's layer.
void checkMatches(const LayerStats &st, const Prepared &p,
                  const std::string &calibName) {
  if (st.E != p.weights.E || st.H != p.weights.H)
    die("layer " + std::to_string(st.index) + " of " + calibName + " has " +
        std::to_string(st.E) + " experts of hidden size " +
        std::to_string(st.H) + ", the model's layer has " +
        std::to_string(p.weights.E) + " of " + std::to_string(p.weights.H));
}

int runRank(const Options &o) {
  auto crit = parseCriterion(o.criterion);
  if (!crit) {
    std::string names;
    for (Criterion c : allCriteria())
      names += std::string(names.empty() ? "" : ", ") + criterionName(c);
    die("unknown criterion '" + o.criterion + "' (one of " + names + ")");
  }
  bool calibBased = needsCalibration(*crit);
  if (!calibBased && std::filesystem::is_regular_file(o.source))
    die("criterion '" + o.criterion +
        "' is weight-based: give the compiled model directory, not a "
        "calibration file");
  if (!calibBased && !o.calib.empty())
    std::fprintf(stderr,
                 "moe-analyze: note: --calib is not used by the "
                 "weight-based criterion '%s'\n",
                 o.criterion.c_str());
  // --keep / --keep-ratio are checked before any work.
  double keepRatio = 0;
  int64_t keepCount = -1;
  if (!o.keep.empty() && o.keepIsRatio) {
    keepRatio = parseDouble("--keep-ratio", o.keep);
    if (!(keepRatio > 0 && keepRatio <= 1))
      die("--keep-ratio must be in (0, 1]");
  } else if (!o.keep.empty()) {
    keepCount = parseInt("--keep", o.keep);
    // (A plan that drops every expert cannot be applied: each layer keeps at
    // least one, and at least its top-k.)
    if (keepCount == 0)
      die("--keep must be at least 1: a layer keeps at least one expert");
  }
  const bool iterative = o.rounds > 1;
  if (iterative) {
    if (o.keep.empty())
      die("--rounds needs --keep or --keep-ratio");
    if (std::filesystem::is_regular_file(o.source) || !o.calib.empty())
      die("--rounds re-estimates the scores between rounds on the experts "
          "left: give the compiled model directory (and --tokens/--seed or "
          "--input), not a calibration file");
  }
  Sources s = openSources(o, calibBased && !iterative);
  if (!o.dropOut.empty() && o.keep.empty())
    die("--drop-out needs --keep or --keep-ratio");
  std::vector<int64_t> ids = analysisLayers(s, o, calibBased && !iterative);
  std::optional<Inputs> inputs;
  if (iterative && calibBased)
    inputs = loadInputs(o, *s.model);
  int analysed = 0;
  std::string dropJson;
  auto recordDrop = [&](int64_t id, const std::vector<int64_t> &drop) {
    std::string list;
    for (int64_t e : drop)
      list += (list.empty() ? "" : ", ") + std::to_string(e);
    dropJson += std::string(dropJson.empty() ? "" : ",\n") +
                "    {\"index\": " + std::to_string(id) + ", \"drop\": [" +
                list + "]}";
  };
  for (int64_t id : ids) {
    std::string where = "layer " + std::to_string(id);
    std::optional<Prepared> p;
    if (s.model) {
      p = prepare(*s.model->layer(id), s.model->hiddenSize(),
                  !calibBased || iterative);
      if (!p->skip.empty()) {
        if (o.layerGiven)
          die(where + " cannot be analysed: " + p->skip);
        std::printf("%s: skipped: %s\n", where.c_str(), p->skip.c_str());
        continue;
      }
    }
    if (iterative) {
      // §5: drop a few per round, re-estimating the scores on the experts
      // left (for calibration-based criteria: routing over them only).
      const int64_t E = p->weights.E;
      int64_t keep = o.keepIsRatio
                         ? keepCountForRatio(E, parseDouble("--keep-ratio", o.keep))
                         : keepCount;
      if (keep > E)
        die("--keep " + o.keep + " exceeds the " + std::to_string(E) +
            " experts of " + where);
      std::vector<double> x;
      int64_t T = 0;
      if (inputs) {
        int64_t position = s.model->layer(id) - s.model->layers().data();
        Buffer xb = layerTokens(*s.model, *inputs, position);
        x.assign(xb.values.begin(), xb.values.end());
        T = xb.shape[0];
      }
      std::printf("%s: %s = %s; %lld rounds, re-estimated on the experts "
                  "left\n",
                  where.c_str(), criterionName(*crit),
                  criterionDescription(*crit), (long long)o.rounds);
      std::vector<int64_t> kept(E), dropped;
      for (int64_t e = 0; e < E; ++e)
        kept[e] = e;
      int64_t toDrop = E - keep;
      for (int64_t r = 0; r < o.rounds && toDrop > 0; ++r) {
        int64_t n = (toDrop + (o.rounds - r) - 1) / (o.rounds - r);
        std::string err;
        Prepared q = restrictExperts(*p, kept, err);
        if (!err.empty())
          die(where + ": round " + std::to_string(r + 1) + ": " + err);
        std::optional<LayerStats> st;
        if (calibBased)
          st = calibrateLayer(q, x, T, o.samples);
        auto scores = importance(*crit, &q.weights, st ? &*st : nullptr);
        if (!scores)
          die(where + ": " + scores.message());
        std::vector<int64_t> local =
            selectDrop(*crit, scores.value(), (int64_t)kept.size() - n);
        std::string list, scoreList;
        std::vector<int64_t> order = rankExperts(*crit, scores.value());
        for (int64_t i : order) {
          char buf[64];
          std::snprintf(buf, sizeof(buf), " %lld:%.4g", (long long)kept[i],
                        scores.value()[i]);
          scoreList += buf;
        }
        std::vector<int64_t> next;
        for (int64_t i = 0; i < (int64_t)kept.size(); ++i) {
          if (std::find(local.begin(), local.end(), i) != local.end()) {
            dropped.push_back(kept[i]);
            list += " " + std::to_string(kept[i]);
          } else {
            next.push_back(kept[i]);
          }
        }
        std::printf("  round %lld: %zu experts, ranked (expert:score)%s; "
                    "drop%s\n",
                    (long long)(r + 1), kept.size(), scoreList.c_str(),
                    list.c_str());
        kept = std::move(next);
        toDrop -= n;
      }
      std::sort(dropped.begin(), dropped.end());
      std::string list;
      for (int64_t e : dropped)
        list += " " + std::to_string(e);
      std::printf("  drop (keep %lld of %lld):%s\n", (long long)keep,
                  (long long)E, list.empty() ? " none" : list.c_str());
      recordDrop(id, dropped);
      ++analysed;
      continue;
    }
    const LayerStats *st = nullptr;
    if (calibBased) {
      st = s.calib->layer(id);
      if (!st) {
        std::printf("%s: skipped: not in %s\n", where.c_str(),
                    s.calibName.c_str());
        continue;
      }
      if (p)
        checkMatches(*st, *p, s.calibName);
    }
    auto scores = importance(*crit, p ? &p->weights : nullptr, st);
    if (!scores)
      die(where + ": " + scores.message());
    std::vector<double> &v = scores.value();
    std::vector<int64_t> order = rankExperts(*crit, v);
    std::printf("%s: %s = %s; %s first\n", where.c_str(), criterionName(*crit),
                criterionDescription(*crit),
                higherIsRedundant(*crit) ? "most redundant"
                                         : "least important");
    std::printf("  %4s %6s %14s\n", "rank", "expert", "score");
    for (size_t r = 0; r < order.size(); ++r)
      std::printf("  %4zu %6lld %14.6g\n", r + 1, (long long)order[r],
                  v[order[r]]);
    if (!o.keep.empty()) {
      int64_t E = (int64_t)v.size();
      int64_t keep = keepCount;
      if (o.keepIsRatio)
        keep = keepCountForRatio(E, keepRatio);
      else if (keep > E)
        die("--keep " + o.keep + " exceeds the " + std::to_string(E) +
            " experts of " + where);
      std::vector<int64_t> drop = selectDrop(*crit, v, keep);
      std::string list;
      for (int64_t e : drop)
        list += " " + std::to_string(e);
      std::printf("  drop (keep %lld of %lld):%s\n", (long long)keep,
                  (long long)E, list.empty() ? " none" : list.c_str());
      recordDrop(id, drop);
    }
    ++analysed;
  }
  if (!analysed)
    die("no layer could be ranked");
  if (!o.dropOut.empty()) {
    std::ofstream out(o.dropOut);
    out << "{\n  \"format\": \"moe-drop/1\",\n  \"criterion\": \""
        << criterionName(*crit) << "\",\n  \"rounds\": " << o.rounds
        << ",\n  \"layers\": [\n"
        << dropJson << "\n  ]\n}\n";
    if (!out)
      die("cannot write '" + o.dropOut + "'");
    std::printf("wrote %s\n", o.dropOut.c_str());
  }
  return 0;
}

//===----------------------------------------------------------------------===//
// The heat-map
//===----------------------------------------------------------------------===//

/// viridis (matplotlib's perceptually uniform map), 9 stops, linearly
/// interpolated.
void viridis(double v, unsigned char c[3]) {
  static const unsigned char stops[9][3] = {
      {68, 1, 84},    {71, 44, 122},  {59, 81, 139},
      {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
      {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
  if (std::isnan(v)) {
    c[0] = c[1] = c[2] = 128;
    return;
  }
  v = std::clamp(v, 0.0, 1.0) * 8.0;
  int i = std::min(7, (int)v);
  double f = v - i;
  for (int k = 0; k < 3; ++k)
    c[k] =
        (unsigned char)std::lround(stops[i][k] * (1 - f) + stops[i + 1][k] * f);
}

/// A 3x5 pixel font for the labels: digits, '.', '-'.
const unsigned char *glyph(char ch) {
  static const unsigned char digits[10][5] = {
      {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7},
      {5, 5, 7, 1, 1}, {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1},
      {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}};
  static const unsigned char dot[5] = {0, 0, 0, 0, 2};
  static const unsigned char minus[5] = {0, 0, 7, 0, 0};
  if (ch >= '0' && ch <= '9')
    return digits[ch - '0'];
  return ch == '.' ? dot : ch == '-' ? minus : nullptr;
}

int textWidth(const std::string &s, int scale) {
  return s.empty() ? 0 : (int)s.size() * 4 * scale - scale;
}

void drawText(png::Image &img, int x, int y, const std::string &s, int scale) {
  static const unsigned char ink[3] = {0, 0, 0};
  for (char ch : s) {
    if (const unsigned char *g = glyph(ch))
      for (int r = 0; r < 5; ++r)
        for (int col = 0; col < 3; ++col)
          if (g[r] & (4 >> col))
            img.fill(x + col * scale, y + r * scale, scale, scale, ink);
    x += 4 * scale;
  }
}

std::string shortNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2g", v);
  return buf;
}

/// Draws the E x E matrix `m` (values in [lo, 1]) as cells of `cell` pixels;
/// unless `plain`, with expert ids along the axes and a colour bar.
png::Image heatMap(const std::vector<double> &m, int64_t E, int cell,
                   bool plain, double lo) {
  auto colour = [&](double v, unsigned char c[3]) {
    viridis((v - lo) / (1.0 - lo), c);
  };
  int side = (int)E * cell;
  int scale = cell >= 16 ? 2 : 1;
  int pad = plain ? 0 : 6 * scale;
  int glyphH = 5 * scale;
  // Label every `step`-th expert so that labels do not overlap.
  int labelW = textWidth(std::to_string(E - 1), scale);
  int step = 1;
  while (step * cell < std::max(glyphH, labelW) + 2)
    ++step;
  int left = plain ? 0 : pad + labelW + 3 * scale;
  int top = plain ? 0 : pad + glyphH + 3 * scale;
  int barGap = 4 * cell > 24 ? 24 : std::max(12, 4 * cell);
  int barW = 16;
  std::vector<std::string> ticks = {"1", shortNumber((1 + lo) / 2),
                                    shortNumber(lo)};
  int tickW = 0;
  for (const std::string &t : ticks)
    tickW = std::max(tickW, textWidth(t, scale));
  int width =
      plain ? side : left + side + barGap + barW + 3 * scale + tickW + pad;
  int height = plain ? side : top + side + pad;
  png::Image img(width, height);
  unsigned char c[3];
  for (int64_t i = 0; i < E; ++i)
    for (int64_t j = 0; j < E; ++j) {
      colour(m[i * E + j], c);
      img.fill(left + (int)j * cell, top + (int)i * cell, cell, cell, c);
    }
  if (plain)
    return img;
  for (int64_t e = 0; e < E; e += step) {
    std::string id = std::to_string(e);
    int w = textWidth(id, scale);
    // Column ids above, row ids to the left, centred on their cells.
    drawText(img, left + (int)e * cell + (cell - w) / 2, pad, id, scale);
    drawText(img, left - 2 * scale - w,
             top + (int)e * cell + (cell - glyphH) / 2, id, scale);
  }
  // The colour bar: 1 at the top, lo at the bottom, with three ticks.
  int bx = left + side + barGap;
  for (int y = 0; y < side; ++y) {
    double v = 1.0 - (side > 1 ? (double)y / (side - 1) : 0.0);
    viridis(v, c);
    img.fill(bx, top + y, barW, 1, c);
  }
  static const unsigned char ink[3] = {0, 0, 0};
  // Three labelled ticks where they fit, the two ends where not, else none.
  int fit = side >= 3 * (glyphH + 2) ? 3 : side >= 2 * (glyphH + 1) ? 2 : 0;
  for (int k = 0; k < 3; ++k) {
    if (fit == 0 || (fit == 2 && k == 1))
      continue;
    int y = top + (side - 1) * k / 2;
    img.fill(bx + barW, y, 2 * scale, 1, ink);
    int ty = std::clamp(y - glyphH / 2, 0, height - glyphH);
    drawText(img, bx + barW + 3 * scale, ty, ticks[k], scale);
  }
  return img;
}

/// Layer `id` for an analysis of calibration statistics: its statistics,
/// and with a model also `p` (prepared, the weights read when
/// `withWeights`), checked against them. Prints why and returns null when
/// the layer is skipped (an error when --layer named it).
const LayerStats *openStatsLayer(const Sources &s, const Options &o,
                                 int64_t id, bool withWeights,
                                 std::optional<Prepared> &p) {
  std::string where = "layer " + std::to_string(id);
  if (s.model) {
    p = prepare(*s.model->layer(id), s.model->hiddenSize(), withWeights);
    if (!p->skip.empty()) {
      if (o.layerGiven)
        die(where + " cannot be analysed: " + p->skip);
      std::printf("%s: skipped: %s\n", where.c_str(), p->skip.c_str());
      return nullptr;
    }
  }
  const LayerStats *st = s.calib->layer(id);
  if (!st) {
    if (o.layerGiven)
      die(where + " is not in " + s.calibName);
    std::printf("%s: skipped: not in %s\n", where.c_str(),
                s.calibName.c_str());
    return nullptr;
  }
  if (p)
    checkMatches(*st, *p, s.calibName);
  return st;
}

int runSimilarity(const Options &o) {
  auto kind = parseCKAKind(o.cka);
  if (!kind)
    die("unknown similarity '" + o.cka + "' (linear or rbf)");
  Sources s = openSources(o, true);
  std::vector<int64_t> ids = analysisLayers(s, o, true);
  if (!o.png.empty() && ids.size() != 1)
    die("--png draws one layer: pass --layer N");
  int analysed = 0;
  for (int64_t id : ids) {
    std::string where = "layer " + std::to_string(id);
    std::optional<Prepared> p;
    const LayerStats *st = openStatsLayer(s, o, id, false, p);
    if (!st)
      continue;
    auto m = ckaMatrix(*st, *kind, o.sigma);
    if (!m)
      die(m.message());
    const int64_t E = st->E;
    if (*kind == CKAKind::rbf)
      std::printf("%s: RBF CKA (sigma %g) of expert outputs on %lld "
                  "calibration tokens\n",
                  where.c_str(), o.sigma, (long long)st->samples);
    else
      std::printf("%s: linear CKA of expert outputs on %lld calibration "
                  "tokens\n",
                  where.c_str(), (long long)st->samples);
    std::printf("%6s", "");
    for (int64_t j = 0; j < E; ++j)
      std::printf(" %6s", ("e" + std::to_string(j)).c_str());
    std::printf("\n");
    for (int64_t i = 0; i < E; ++i) {
      std::printf("%6s", ("e" + std::to_string(i)).c_str());
      for (int64_t j = 0; j < E; ++j)
        std::printf(" %6.3f", m.value()[i * E + j]);
      std::printf("\n");
    }
    if (!o.png.empty()) {
      int cell =
          o.cell
              ? (int)o.cell
              : (int)std::clamp<int64_t>(480 / std::max<int64_t>(E, 1), 4, 48);
      if (E * cell > 16384)
        die("--png: " + std::to_string(E) + " experts x " +
            std::to_string(cell) + " px is too large; pass a smaller --cell");
      png::Image img = heatMap(m.value(), E, cell, o.plain, o.scaleMin);
      std::string err;
      if (!png::write(o.png, img, err))
        die(err);
      std::printf("wrote %s (%d x %d px, %d px per cell)\n", o.png.c_str(),
                  img.width, img.height, cell);
    }
    ++analysed;
  }
  if (!analysed)
    die("no layer has calibration statistics");
  return 0;
}

//===----------------------------------------------------------------------===//
// Merge plans
//===----------------------------------------------------------------------===//

/// --merge-plan: groups of alike experts (mergeGroups) per layer, printed
/// with the moe-opt options that merge them and written as moe-merge/1.
int runMergePlan(const Options &o) {
  bool cosine = o.mergeKind == "cosine";
  std::optional<CKAKind> kind;
  if (!cosine) {
    kind = parseCKAKind(o.mergeKind);
    if (!kind)
      die("unknown --merge-plan similarity '" + o.mergeKind +
          "' (linear, rbf or cosine)");
  }
  if ((o.target > 0) == (o.threshold >= 0))
    die("--merge-plan needs exactly one of --target M (merged experts per "
        "layer) or --threshold T (similarity)");
  if (cosine && std::filesystem::is_regular_file(o.source))
    die("--merge-plan cosine compares the experts' weights: give the "
        "compiled model directory");
  // Frequencies (routed counts) always come from a calibration.
  Sources s = openSources(o, true);
  std::vector<int64_t> ids = analysisLayers(s, o, true);
  std::string json;
  int analysed = 0;
  for (int64_t id : ids) {
    std::string where = "layer " + std::to_string(id);
    std::optional<Prepared> p;
    const LayerStats *st = openStatsLayer(s, o, id, cosine, p);
    if (!st)
      continue;
    const int64_t E = st->E;
    if (o.target > E)
      die("--target " + std::to_string(o.target) + " exceeds the " +
          std::to_string(E) + " experts of " + where);
    std::vector<double> sim;
    if (cosine) {
      sim = weightCosineMatrix(p->weights);
    } else {
      auto m = ckaMatrix(*st, *kind, o.sigma);
      if (!m)
        die(where + ": " + m.message());
      sim = std::move(m.value());
    }
    std::vector<double> freq(st->routedCounts.begin(), st->routedCounts.end());
    std::vector<std::vector<int64_t>> groups =
        mergeGroups(sim, freq, o.target, o.threshold);
    std::string how = cosine ? "cosine similarity of expert weights"
                      : *kind == CKAKind::rbf
                          ? "RBF CKA of expert outputs"
                          : "linear CKA of expert outputs";
    char rule[96];
    if (o.target > 0)
      std::snprintf(rule, sizeof(rule), "target %lld of %lld experts",
                    (long long)o.target, (long long)E);
    else
      std::snprintf(rule, sizeof(rule), "threshold %g, %zu of %lld experts",
                    o.threshold, groups.size(), (long long)E);
    std::printf("%s: merge plan by %s, %s (calibration: %lld tokens)\n",
                where.c_str(), how.c_str(), rule, (long long)st->tokens);
    std::printf("  %6s  %-16s %-20s %s\n", "merged", "members",
                "routed counts", "min similarity to the most used");
    std::string groupOpt, groupJson;
    for (size_t g = 0; g < groups.size(); ++g) {
      const std::vector<int64_t> &members = groups[g];
      int64_t centre = members[0];
      for (int64_t e : members)
        if (freq[e] > freq[centre])
          centre = e;
      double minSim = 1.0;
      std::string names, counts, ids;
      for (int64_t e : members) {
        minSim = std::min(minSim, sim[e * E + centre]);
        names += (names.empty() ? "" : "+") + std::to_string(e);
        counts += (counts.empty() ? "" : " ") +
                  std::to_string(st->routedCounts[e]);
        ids += (ids.empty() ? "" : ", ") + std::to_string(e);
      }
      std::string simText = "-";
      if (members.size() > 1) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.3f", minSim);
        simText = buf;
        groupOpt += (groupOpt.empty() ? "" : ",") + names;
      }
      std::printf("  %6zu  %-16s %-20s %s\n", g, names.c_str(),
                  counts.c_str(), simText.c_str());
      groupJson += std::string(groupJson.empty() ? "" : ", ") + "[" + ids + "]";
    }
    std::string freqText, freqJson;
    for (int64_t c : st->routedCounts) {
      freqText += (freqText.empty() ? "" : ",") + std::to_string(c);
      freqJson += (freqJson.empty() ? "" : ", ") + std::to_string(c);
    }
    if (groupOpt.empty())
      std::printf("  nothing to merge\n");
    else
      std::printf("  moe-opt --moe-merge-experts=\"groups=%s frequencies=%s\"\n",
                  groupOpt.c_str(), freqText.c_str());
    json += std::string(json.empty() ? "" : ",\n") + "    {\"index\": " +
            std::to_string(id) + ", \"groups\": [" + groupJson +
            "], \"frequencies\": [" + freqJson + "]}";
    ++analysed;
  }
  if (!analysed)
    die("no layer could be planned");
  if (!o.mergeOut.empty()) {
    std::ofstream out(o.mergeOut);
    out << "{\n  \"format\": \"moe-merge/1\",\n  \"similarity\": \""
        << o.mergeKind << "\",\n  \"layers\": [\n"
        << json << "\n  ]\n}\n";
    if (!out)
      die("cannot write '" + o.mergeOut + "'");
    std::printf("wrote %s\n", o.mergeOut.c_str());
  }
  return 0;
}

int runCalibrate(const Options &o) {
  if (o.output.empty())
    die("--calibrate needs -o FILE");
  if (std::filesystem::is_regular_file(o.source))
    die("--calibrate needs a compiled model directory, got the file '" +
        o.source + "'");
  auto m = Model::load(o.source);
  if (!m)
    die(m.message());
  if (o.input.empty())
    std::printf("calibrating on %lld random tokens (seed %lld), %lld "
                "samples per expert\n",
                (long long)o.tokens, (long long)o.seed,
                (long long)std::min(o.samples, o.tokens));
  else
    std::printf("calibrating on '%s'\n", o.input.c_str());
  Calibration c = calibrate(*m.value(), o, true);
  if (Status s = writeCalibration(o.output, c); !s)
    die(s.message());
  std::printf("wrote %s (%zu layer%s)\n", o.output.c_str(), c.layers.size(),
              c.layers.size() == 1 ? "" : "s");
  return 0;
}

int runCriteria() {
  for (Criterion c : allCriteria())
    std::printf("%s  %-11s %s\n", criterionName(c),
                needsCalibration(c) ? "calibration" : "weights",
                criterionDescription(c));
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  moe::tools::exitOnOutOfMemory("moe-analyze");
  Options o = parseArgs(argc, argv);
  switch (o.mode) {
  case Mode::calibrate:
    return runCalibrate(o);
  case Mode::rank:
    return runRank(o);
  case Mode::similarity:
    return runSimilarity(o);
  case Mode::mergePlan:
    return runMergePlan(o);
  case Mode::criteria:
    return runCriteria();
  case Mode::none:
    break;
  }
  return 1;
}
