//===- Analysis.cpp - expert importance and similarity for surgery -------===//
//
// Criteria, ranking and CKA of MOE_SEMANTICS.md §5, and the "moe-calib/1"
// statistics file. All arithmetic is f64.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Analysis.h"

#include "Json.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numeric>
#include <sstream>
#include <type_traits>

namespace moe::rt::analysis {

//===----------------------------------------------------------------------===//
// Criteria
//===----------------------------------------------------------------------===//

const std::vector<Criterion> &allCriteria() {
  static const std::vector<Criterion> all = {
      Criterion::ewn, Criterion::rwn, Criterion::ews, Criterion::wsr,
      Criterion::euf, Criterion::ean, Criterion::eas, Criterion::erw};
  return all;
}

const char *criterionName(Criterion c) {
  switch (c) {
  case Criterion::ewn:
    return "ewn";
  case Criterion::rwn:
    return "rwn";
  case Criterion::ews:
    return "ews";
  case Criterion::wsr:
    return "wsr";
  case Criterion::euf:
    return "euf";
  case Criterion::ean:
    return "ean";
  case Criterion::eas:
    return "eas";
  case Criterion::erw:
    return "erw";
  }
  return "?";
}

const char *criterionDescription(Criterion c) {
  switch (c) {
  case Criterion::ewn:
    return "l2 norm of the expert's weights";
  case Criterion::rwn:
    return "l2 norm of the expert's router row";
  case Criterion::ews:
    return "summed cosine similarity to the other experts' weights "
           "(higher = more redundant)";
  case Criterion::wsr:
    return "stable rank of the down projection";
  case Criterion::euf:
    return "fraction of calibration tokens routed to it";
  case Criterion::ean:
    return "summed l2 norm of its outputs on the tokens routed to it";
  case Criterion::eas:
    return "mean cosine similarity of its outputs to the others' "
           "(higher = more redundant)";
  case Criterion::erw:
    return "summed routing weight";
  }
  return "?";
}

std::optional<Criterion> parseCriterion(const std::string &name) {
  for (Criterion c : allCriteria())
    if (name == criterionName(c))
      return c;
  return std::nullopt;
}

bool needsCalibration(Criterion c) {
  return c == Criterion::euf || c == Criterion::ean || c == Criterion::eas ||
         c == Criterion::erw;
}

bool higherIsRedundant(Criterion c) {
  return c == Criterion::ews || c == Criterion::eas;
}

//===----------------------------------------------------------------------===//
// Validation
//===----------------------------------------------------------------------===//

namespace {
std::string str(int64_t v) { return std::to_string(v); }

/// num / den, or 0 when den is 0 (a constant side, an all-zero expert).
double ratio(double num, double den) {
  return den > 0 && std::isfinite(den) ? num / den : 0.0;
}

Status sizeError(const std::string &what, size_t got, int64_t want,
                 const std::string &shape) {
  return Status::error(what + " has " + std::to_string(got) +
                       " values, expected " + str(want) + " (" + shape + ")");
}
} // namespace

Status ExpertWeights::validate() const {
  if (E <= 0 || H <= 0)
    return Status::error("expert weights need E > 0 and H > 0");
  auto check = [&](const std::vector<float> &v, const char *name, int64_t want,
                   const std::string &shape) -> Status {
    if (!v.empty() && (int64_t)v.size() != want)
      return sizeError(name, v.size(), want, shape);
    return Status::ok();
  };
  std::string e = str(E), h = str(H), f = str(F);
  for (Status s : {check(router, "router", E * H, e + "x" + h),
                   check(gate, "gate", E * F * H, e + "x" + f + "x" + h),
                   check(up, "up", E * F * H, e + "x" + f + "x" + h),
                   check(down, "down", E * H * F, e + "x" + h + "x" + f),
                   check(gateBias, "gate bias", E * F, e + "x" + f),
                   check(upBias, "up bias", E * F, e + "x" + f),
                   check(downBias, "down bias", E * H, e + "x" + h)})
    if (!s)
      return s;
  return Status::ok();
}

Status LayerStats::validate() const {
  std::string where = "layer " + str(index) + ": ";
  if (E <= 0 || H <= 0 || K <= 0 || tokens < 0 || samples < 0)
    return Status::error(where + "needs experts, hidden_size, top_k > 0 and "
                                 "tokens, sample_tokens >= 0");
  if (samples > tokens)
    return Status::error(where + "sample_tokens " + str(samples) +
                         " exceeds tokens " + str(tokens));
  if ((int64_t)routedCounts.size() != E)
    return sizeError(where + "routed_counts", routedCounts.size(), E, str(E));
  if ((int64_t)weightSums.size() != E)
    return sizeError(where + "weight_sums", weightSums.size(), E, str(E));
  if ((int64_t)outputNormSums.size() != E)
    return sizeError(where + "output_norm_sums", outputNormSums.size(), E,
                     str(E));
  if ((int64_t)coSelection.size() != E * E)
    return sizeError(where + "co_selection", coSelection.size(), E * E,
                     str(E) + "x" + str(E));
  if ((int64_t)outputSamples.size() != E * samples * H)
    return sizeError(where + "output_samples", outputSamples.size(),
                     E * samples * H,
                     str(E) + "x" + str(samples) + "x" + str(H));
  for (int64_t e = 0; e < E; ++e)
    if (routedCounts[e] < 0 || routedCounts[e] > tokens)
      return Status::error(where + "routed_counts[" + str(e) + "] = " +
                           str(routedCounts[e]) + " is not in [0, tokens]");
  return Status::ok();
}

const LayerStats *Calibration::layer(int64_t index) const {
  for (const LayerStats &l : layers)
    if (l.index == index)
      return &l;
  return nullptr;
}

//===----------------------------------------------------------------------===//
// The calibration file
//===----------------------------------------------------------------------===//

namespace {
void putNumber(std::string &out, double v, int digits) {
  if (!std::isfinite(v)) {
    out += "null"; // JSON has no NaN/Inf; read back as NaN
    return;
  }
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
  out += buf;
}

void putString(std::string &out, const std::string &s) {
  out += '"';
  for (char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if ((unsigned char)c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\u%04x", (unsigned char)c);
        out += buf;
      } else {
        out += c;
      }
    }
  }
  out += '"';
}

template <typename T>
void putArray(std::string &out, const T *v, size_t n, int digits) {
  out += '[';
  for (size_t i = 0; i < n; ++i) {
    if (i)
      out += ", ";
    if constexpr (std::is_integral_v<T>)
      out += std::to_string(v[i]);
    else
      putNumber(out, v[i], digits);
  }
  out += ']';
}
} // namespace

std::string calibrationToJson(const Calibration &c) {
  std::string o;
  o += "{\n  \"format\": \"moe-calib/1\",\n  \"model\": ";
  putString(o, c.model);
  o += ",\n  \"input\": ";
  putString(o, c.input);
  o += ",\n  \"seed\": " + str(c.seed) + ",\n  \"layers\": [";
  for (size_t li = 0; li < c.layers.size(); ++li) {
    const LayerStats &l = c.layers[li];
    o += li ? ",\n    {\n" : "\n    {\n";
    o += "      \"index\": " + str(l.index) + ",\n";
    o += "      \"experts\": " + str(l.E) + ",\n";
    o += "      \"hidden_size\": " + str(l.H) + ",\n";
    o += "      \"top_k\": " + str(l.K) + ",\n";
    o += "      \"tokens\": " + str(l.tokens) + ",\n";
    o += "      \"routed_counts\": ";
    putArray(o, l.routedCounts.data(), l.routedCounts.size(), 0);
    o += ",\n      \"weight_sums\": ";
    putArray(o, l.weightSums.data(), l.weightSums.size(), 17);
    o += ",\n      \"output_norm_sums\": ";
    putArray(o, l.outputNormSums.data(), l.outputNormSums.size(), 17);
    o += ",\n      \"co_selection\": [";
    for (int64_t i = 0; i < l.E; ++i) {
      o += i ? ",\n        " : "\n        ";
      putArray(o, l.coSelection.data() + i * l.E, l.E, 0);
    }
    o += "\n      ],\n      \"sample_tokens\": " + str(l.samples) + ",\n";
    o += "      \"output_samples\": [";
    for (int64_t e = 0; e < l.E; ++e) {
      o += e ? ",\n        " : "\n        ";
      putArray(o, l.sample(e), l.samples * l.H, 9);
    }
    o += l.E ? "\n      ]\n    }" : "]\n    }";
  }
  o += c.layers.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return o;
}

namespace {
/// Reads member `key` of `obj` as the kind requested, with errors naming
/// the file, the layer and the key.
class Reader {
public:
  Reader(std::string where) : where(std::move(where)) {}
  std::string where;
  std::string error;

  const json::Value *member(const json::Value &obj, const char *key,
                            json::Value::Kind kind, const char *kindName) {
    const json::Value *v = obj.get(key);
    if (!v || v->kind != kind) {
      fail(std::string(v ? "'" : "missing '") + key + "'" +
           (v ? std::string(" must be ") + kindName : std::string()));
      return nullptr;
    }
    return v;
  }
  bool integer(const json::Value &obj, const char *key, int64_t &out) {
    const json::Value *v = member(obj, key, json::Value::Number, "a number");
    if (!v)
      return false;
    if (v->num != std::floor(v->num) || std::fabs(v->num) > 9.0e15)
      return fail(std::string("'") + key + "' must be an integer");
    out = (int64_t)v->num;
    return true;
  }
  bool numbers(const json::Value &arr, const std::string &key,
               std::vector<double> &out) {
    if (arr.kind != json::Value::Array)
      return fail("'" + key + "' must be an array of numbers");
    out.reserve(out.size() + arr.arr.size());
    for (const json::Value &v : arr.arr) {
      if (v.kind == json::Value::Null)
        out.push_back(std::numeric_limits<double>::quiet_NaN());
      else if (v.kind == json::Value::Number)
        out.push_back(v.num);
      else
        return fail("'" + key + "' must be an array of numbers");
    }
    return true;
  }
  bool integers(const json::Value &arr, const std::string &key,
                std::vector<int64_t> &out) {
    if (arr.kind != json::Value::Array)
      return fail("'" + key + "' must be an array of integers");
    for (const json::Value &v : arr.arr) {
      if (v.kind != json::Value::Number || v.num != std::floor(v.num))
        return fail("'" + key + "' must be an array of integers");
      out.push_back((int64_t)v.num);
    }
    return true;
  }
  bool fail(const std::string &m) {
    if (error.empty())
      error = where + ": " + m;
    return false;
  }
};
} // namespace

Result<Calibration> parseCalibration(const std::string &text,
                                     const std::string &where) {
  json::Value root;
  std::string err;
  if (!json::parse(text, root, err))
    return Status::error("corrupt calibration file '" + where + "': " + err);
  Reader r("calibration file '" + where + "'");
  const json::Value *fmt = root.get("format");
  if (root.kind != json::Value::Object || !fmt ||
      fmt->kind != json::Value::String || fmt->str != "moe-calib/1")
    return Status::error("'" + where +
                         "' is not a calibration file (needs format "
                         "\"moe-calib/1\")");
  Calibration c;
  if (const json::Value *m = root.get("model");
      m && m->kind == json::Value::String)
    c.model = m->str;
  if (const json::Value *m = root.get("input");
      m && m->kind == json::Value::String)
    c.input = m->str;
  if (const json::Value *m = root.get("seed");
      m && m->kind == json::Value::Number)
    c.seed = (int64_t)m->num;
  const json::Value *layers =
      r.member(root, "layers", json::Value::Array, "an array");
  if (!layers)
    return Status::error(r.error);
  for (size_t i = 0; i < layers->arr.size(); ++i) {
    const json::Value &lv = layers->arr[i];
    r.where = "calibration file '" + where + "', layer #" + std::to_string(i);
    if (lv.kind != json::Value::Object)
      return Status::error(r.where + ": must be an object");
    LayerStats l;
    const json::Value *rc, *ws, *ons, *cs, *os;
    if (!r.integer(lv, "index", l.index) || !r.integer(lv, "experts", l.E) ||
        !r.integer(lv, "hidden_size", l.H) || !r.integer(lv, "top_k", l.K) ||
        !r.integer(lv, "tokens", l.tokens) ||
        !r.integer(lv, "sample_tokens", l.samples) ||
        !(rc = r.member(lv, "routed_counts", json::Value::Array, "an array")) ||
        !(ws = r.member(lv, "weight_sums", json::Value::Array, "an array")) ||
        !(ons = r.member(lv, "output_norm_sums", json::Value::Array,
                         "an array")) ||
        !(cs = r.member(lv, "co_selection", json::Value::Array, "an array")) ||
        !(os = r.member(lv, "output_samples", json::Value::Array, "an array")))
      return Status::error(r.error);
    r.where = "calibration file '" + where + "', layer " + str(l.index);
    if (!r.integers(*rc, "routed_counts", l.routedCounts) ||
        !r.numbers(*ws, "weight_sums", l.weightSums) ||
        !r.numbers(*ons, "output_norm_sums", l.outputNormSums))
      return Status::error(r.error);
    if ((int64_t)cs->arr.size() != l.E)
      return Status::error(r.where + ": 'co_selection' must have " + str(l.E) +
                           " rows, has " + std::to_string(cs->arr.size()));
    for (const json::Value &row : cs->arr) {
      size_t before = l.coSelection.size();
      if (!r.integers(row, "co_selection", l.coSelection))
        return Status::error(r.error);
      if ((int64_t)(l.coSelection.size() - before) != l.E)
        return Status::error(r.where + ": every 'co_selection' row must have " +
                             str(l.E) + " entries");
    }
    if ((int64_t)os->arr.size() != l.E)
      return Status::error(r.where + ": 'output_samples' must have " +
                           str(l.E) + " rows (one per expert), has " +
                           std::to_string(os->arr.size()));
    for (const json::Value &row : os->arr) {
      size_t before = l.outputSamples.size();
      if (!r.numbers(row, "output_samples", l.outputSamples))
        return Status::error(r.error);
      if ((int64_t)(l.outputSamples.size() - before) != l.samples * l.H)
        return Status::error(r.where +
                             ": every 'output_samples' row must "
                             "have sample_tokens x hidden_size = " +
                             str(l.samples * l.H) + " values");
    }
    if (Status s = l.validate(); !s)
      return Status::error("calibration file '" + where + "': " + s.message());
    if (c.layer(l.index))
      return Status::error("calibration file '" + where + "': layer " +
                           str(l.index) + " appears twice");
    c.layers.push_back(std::move(l));
  }
  return c;
}

Status writeCalibration(const std::string &path, const Calibration &c) {
  std::string text = calibrationToJson(c);
  // Write next to the target and rename, so a reader never sees half a file.
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out)
      return Status::error("cannot write '" + path + "'");
    out.write(text.data(), (std::streamsize)text.size());
    if (!out)
      return Status::error("cannot write '" + path + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::error("cannot write '" + path + "'");
  }
  return Status::ok();
}

Result<Calibration> readCalibration(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::error("cannot open calibration file '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parseCalibration(ss.str(), path);
}

//===----------------------------------------------------------------------===//
// Computing the statistics
//===----------------------------------------------------------------------===//

namespace {
double norm2(const double *v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    s += v[i] * v[i];
  return std::sqrt(s);
}
} // namespace

Result<LayerStats> computeLayerStats(
    int64_t index, const std::vector<double> &x, int64_t T, int64_t H,
    int64_t E, int64_t K, const std::vector<int> &indices,
    const std::vector<double> &weights, const ExpertFn &expert, int64_t samples,
    std::vector<double> *combined, bool scaleInput) {
  std::string where = "layer " + str(index) + ": ";
  if (E <= 0 || H <= 0 || K <= 0 || T < 0)
    return Status::error(where + "needs E, H, K > 0");
  if ((int64_t)x.size() != T * H)
    return sizeError(where + "calibration input", x.size(), T * H,
                     str(T) + "x" + str(H));
  if ((int64_t)indices.size() != T * K || (int64_t)weights.size() != T * K)
    return Status::error(where + "routing must be " + str(T) + "x" + str(K));
  LayerStats s;
  s.index = index;
  s.E = E;
  s.H = H;
  s.K = K;
  s.tokens = T;
  s.samples = std::clamp<int64_t>(samples, 0, T);
  s.routedCounts.assign(E, 0);
  s.weightSums.assign(E, 0.0);
  s.outputNormSums.assign(E, 0.0);
  s.coSelection.assign(E * E, 0);
  s.outputSamples.assign(E * s.samples * H, 0.0);
  if (combined)
    combined->assign(T * H, 0.0);

  // Sample tokens through every expert first; their routed slots reuse it.
  for (int64_t e = 0; e < E; ++e)
    for (int64_t t = 0; t < s.samples; ++t)
      expert(e, &x[t * H], &s.outputSamples[(e * s.samples + t) * H]);

  std::vector<double> out(H), scaled(scaleInput ? H : 0);
  std::vector<int64_t> chosen;
  for (int64_t t = 0; t < T; ++t) {
    chosen.clear();
    for (int64_t k = 0; k < K; ++k) {
      int e = indices[t * K + k];
      if (e < 0)
        continue;
      if (e >= E)
        return Status::error(where + "token " + str(t) +
                             " is routed to "
                             "expert " +
                             str(e) + ", the layer has " + str(E) +
                             " routed experts");
      if (std::find(chosen.begin(), chosen.end(), e) != chosen.end())
        return Status::error(where + "token " + str(t) +
                             " is routed to "
                             "expert " +
                             str(e) + " twice");
      chosen.push_back(e);
      double w = weights[t * K + k];
      const double *o;
      if (scaleInput) {
        // Expert(w x_t), weight 1.
        for (int64_t h = 0; h < H; ++h)
          scaled[h] = w * x[t * H + h];
        expert(e, scaled.data(), out.data());
        o = out.data();
      } else if (t < s.samples) {
        o = &s.outputSamples[(e * s.samples + t) * H];
      } else {
        expert(e, &x[t * H], out.data());
        o = out.data();
      }
      s.routedCounts[e] += 1;
      s.weightSums[e] += w;
      s.outputNormSums[e] += norm2(o, H);
      if (combined)
        for (int64_t h = 0; h < H; ++h)
          (*combined)[t * H + h] += (scaleInput ? 1.0 : w) * o[h];
    }
    for (int64_t a : chosen)
      for (int64_t b : chosen)
        s.coSelection[a * E + b] += 1;
  }
  return s;
}

//===----------------------------------------------------------------------===//
// Scores
//===----------------------------------------------------------------------===//

double cosine(const double *a, const double *b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  if (aa == 0 || bb == 0)
    return 0;
  return ab / std::sqrt(aa * bb);
}

namespace {
template <typename T>
double spectralNormImpl(const T *w, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0)
    return 0;
  // Iterate on the smaller Gram matrix, without forming it: with m x k W,
  // v <- Wᵀ(W v) when k <= m, else v <- W(Wᵀ v) with the roles swapped.
  bool onCols = cols <= rows;
  int64_t k = onCols ? cols : rows, m = onCols ? rows : cols;
  // out (rows) = W x: row dot products, four partial sums for throughput.
  auto timesW = [&](const std::vector<double> &x, std::vector<double> &out) {
    for (int64_t r = 0; r < rows; ++r) {
      const T *row = w + r * cols;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t c = 0;
      for (; c + 4 <= cols; c += 4) {
        s0 += (double)row[c] * x[c];
        s1 += (double)row[c + 1] * x[c + 1];
        s2 += (double)row[c + 2] * x[c + 2];
        s3 += (double)row[c + 3] * x[c + 3];
      }
      for (; c < cols; ++c)
        s0 += (double)row[c] * x[c];
      out[r] = (s0 + s1) + (s2 + s3);
    }
  };
  // out (cols) = Wᵀ y: one axpy per row (vectorisable).
  auto timesWT = [&](const std::vector<double> &y, std::vector<double> &out) {
    std::fill(out.begin(), out.end(), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const T *row = w + r * cols;
      double a = y[r];
      for (int64_t c = 0; c < cols; ++c)
        out[c] += a * (double)row[c];
    }
  };
  // u (m) = A v, v (k) = Aᵀ u with A = W (onCols) or Wᵀ.
  auto apply = [&](const std::vector<double> &v, std::vector<double> &u) {
    onCols ? timesW(v, u) : timesWT(v, u);
  };
  auto applyT = [&](const std::vector<double> &u, std::vector<double> &v) {
    onCols ? timesWT(u, v) : timesW(u, v);
  };
  // A fixed, generic start vector (a Weyl sequence): deterministic, and
  // never orthogonal to the top singular vector except by measure-zero
  // accident.
  std::vector<double> v(k), u(m);
  for (int64_t i = 0; i < k; ++i)
    v[i] = 0.5 + std::fmod(0.6180339887498949 * (double)(i + 1), 1.0);
  double nv = norm2(v.data(), k);
  for (double &e : v)
    e /= nv;
  // The Rayleigh quotient rises to σ_max² geometrically, by a factor q
  // (≈ (σ2/σ1)²) per step: stop when the error still ahead, about
  // Δ·q/(1−q), is below 1e-10 relative (far below what a ranking resolves).
  // Close top singular values converge slowly; the cap bounds the time
  // (4·rows·cols flops a step), leaving a relative error of about q^3000 in
  // the worst case.
  double lambda = 0, prevDelta = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    apply(v, u);
    double next = 0;
    for (double e : u)
      next += e * e; // vᵀ(AᵀA)v with v unit
    applyT(u, v);
    double n = norm2(v.data(), k);
    if (n == 0)
      return 0;
    for (double &e : v)
      e /= n;
    double delta = next - lambda;
    lambda = next;
    if (iter >= 2) {
      double q = prevDelta > 0 ? delta / prevDelta : 0.0;
      double ahead = q > 0 && q < 1 ? delta * q / (1 - q) : delta;
      if (ahead <= 1e-10 * lambda)
        break;
    }
    prevDelta = delta;
  }
  return lambda;
}

template <typename T>
double stableRankImpl(const T *w, int64_t rows, int64_t cols) {
  double fro = 0;
  for (int64_t i = 0; i < rows * cols; ++i)
    fro += (double)w[i] * (double)w[i];
  double top = spectralNormImpl(w, rows, cols);
  return top > 0 ? fro / top : 0;
}
} // namespace

double spectralNormSquared(const double *w, int64_t rows, int64_t cols) {
  return spectralNormImpl(w, rows, cols);
}
double spectralNormSquared(const float *w, int64_t rows, int64_t cols) {
  return spectralNormImpl(w, rows, cols);
}
double stableRank(const double *w, int64_t rows, int64_t cols) {
  return stableRankImpl(w, rows, cols);
}
double stableRank(const float *w, int64_t rows, int64_t cols) {
  return stableRankImpl(w, rows, cols);
}

std::vector<double> expertGram(const ExpertWeights &w) {
  const int64_t E = w.E;
  std::vector<double> g(E * E, 0.0);
  // Tensor by tensor, pair by pair: nothing is copied, so a layer of large
  // experts costs E²/2 passes over its weights and no memory.
  auto add = [&](const std::vector<float> &t, int64_t per) {
    if (t.empty())
      return;
    for (int64_t a = 0; a < E; ++a)
      for (int64_t b = a; b < E; ++b) {
        const float *x = &t[a * per], *y = &t[b * per];
        double s = 0;
        for (int64_t i = 0; i < per; ++i)
          s += (double)x[i] * (double)y[i];
        g[a * E + b] += s;
        if (b != a)
          g[b * E + a] += s;
      }
  };
  add(w.gate, w.F * w.H);
  add(w.up, w.F * w.H);
  add(w.down, w.H * w.F);
  add(w.gateBias, w.F);
  add(w.upBias, w.F);
  add(w.downBias, w.H);
  return g;
}

Result<std::vector<double>>
importance(Criterion c, const ExpertWeights *weights, const LayerStats *stats) {
  std::string name = criterionName(c);
  if (needsCalibration(c)) {
    if (!stats)
      return Status::error("criterion '" + name +
                           "' is calibration-based and needs calibration "
                           "statistics");
    if (Status s = stats->validate(); !s)
      return s;
    const LayerStats &s = *stats;
    std::vector<double> r(s.E, 0.0);
    switch (c) {
    case Criterion::euf:
      for (int64_t e = 0; e < s.E; ++e)
        r[e] = s.tokens ? (double)s.routedCounts[e] / (double)s.tokens : 0.0;
      break;
    case Criterion::ean:
      r = s.outputNormSums;
      break;
    case Criterion::erw:
      r = s.weightSums;
      break;
    case Criterion::eas: {
      if (s.samples == 0)
        return Status::error("criterion 'eas' needs output samples "
                             "(sample_tokens > 0) in layer " +
                             str(s.index));
      // mean over the other experts j of mean over the samples t of
      // cos(Expert_e(x_t), Expert_j(x_t)).
      std::vector<double> pair(s.E * s.E, 0.0);
      for (int64_t a = 0; a < s.E; ++a)
        for (int64_t b = a + 1; b < s.E; ++b) {
          double sum = 0;
          for (int64_t t = 0; t < s.samples; ++t)
            sum += cosine(s.sample(a) + t * s.H, s.sample(b) + t * s.H, s.H);
          pair[a * s.E + b] = pair[b * s.E + a] = sum / (double)s.samples;
        }
      for (int64_t a = 0; a < s.E; ++a) {
        double sum = 0;
        for (int64_t b = 0; b < s.E; ++b)
          if (b != a)
            sum += pair[a * s.E + b];
        r[a] = s.E > 1 ? sum / (double)(s.E - 1) : 0.0;
      }
      break;
    }
    default:
      break;
    }
    return r;
  }

  if (!weights)
    return Status::error("criterion '" + name +
                         "' is weight-based and needs the expert weights");
  if (Status s = weights->validate(); !s)
    return s;
  const ExpertWeights &w = *weights;
  std::vector<double> r(w.E, 0.0);
  switch (c) {
  case Criterion::ewn: {
    std::vector<double> g = expertGram(w);
    for (int64_t e = 0; e < w.E; ++e)
      r[e] = std::sqrt(g[e * w.E + e]);
    break;
  }
  case Criterion::rwn:
    if (w.router.empty())
      return Status::error("criterion 'rwn' needs the router matrix");
    for (int64_t e = 0; e < w.E; ++e) {
      double s = 0;
      for (int64_t h = 0; h < w.H; ++h)
        s += (double)w.router[e * w.H + h] * (double)w.router[e * w.H + h];
      r[e] = std::sqrt(s);
    }
    break;
  case Criterion::ews: {
    if (w.gate.empty() && w.up.empty() && w.down.empty())
      return Status::error("criterion 'ews' needs the expert weights");
    std::vector<double> g = expertGram(w);
    // cos(a, b) = G_ab / √(G_aa G_bb), 0 against an all-zero expert.
    for (int64_t a = 0; a < w.E; ++a)
      for (int64_t b = 0; b < w.E; ++b)
        if (b != a)
          r[a] += ratio(g[a * w.E + b],
                        std::sqrt(g[a * w.E + a]) * std::sqrt(g[b * w.E + b]));
    break;
  }
  case Criterion::wsr:
    if (w.down.empty() || w.F <= 0)
      return Status::error("criterion 'wsr' needs the down projection");
    for (int64_t e = 0; e < w.E; ++e)
      r[e] = stableRank(&w.down[e * w.H * w.F], w.H, w.F);
    break;
  default:
    break;
  }
  return r;
}

std::vector<int64_t> rankExperts(Criterion c,
                                 const std::vector<double> &scores) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  bool desc = higherIsRedundant(c);
  // NaN scores (a broken calibration) sort last: never dropped first.
  auto key = [&](int64_t e) {
    double s = scores[e];
    if (std::isnan(s))
      return std::numeric_limits<double>::infinity();
    return desc ? -s : s;
  };
  // Ties by id (std::sort with an explicit tie-break: stable_sort trips a
  // libstdc++ deprecation warning under clang).
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    double ka = key(a), kb = key(b);
    return ka < kb || (ka == kb && a < b);
  });
  return order;
}

std::vector<int64_t> selectDrop(Criterion c, const std::vector<double> &scores,
                                int64_t keep) {
  int64_t E = (int64_t)scores.size();
  keep = std::clamp<int64_t>(keep, 0, E);
  std::vector<int64_t> order = rankExperts(c, scores);
  std::vector<int64_t> drop(order.begin(), order.begin() + (E - keep));
  std::sort(drop.begin(), drop.end());
  return drop;
}

int64_t keepCountForRatio(int64_t E, double keepRatio) {
  if (E <= 0)
    return 0;
  double r = std::clamp(keepRatio, 0.0, 1.0);
  return std::clamp<int64_t>((int64_t)std::llround(r * (double)E), 1, E);
}

std::vector<int64_t> selectDropRatio(Criterion c,
                                     const std::vector<double> &scores,
                                     double keepRatio) {
  return selectDrop(c, scores,
                    keepCountForRatio((int64_t)scores.size(), keepRatio));
}

//===----------------------------------------------------------------------===//
// CKA
//===----------------------------------------------------------------------===//

std::optional<CKAKind> parseCKAKind(const std::string &name) {
  if (name == "linear")
    return CKAKind::linear;
  if (name == "rbf")
    return CKAKind::rbf;
  return std::nullopt;
}

namespace {
/// X (n x d) with its column means subtracted.
std::vector<double> centred(const double *X, int64_t n, int64_t d) {
  std::vector<double> c(X, X + n * d), mean(d, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j)
      mean[j] += X[i * d + j];
  for (double &m : mean)
    m /= (double)std::max<int64_t>(n, 1);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j)
      c[i * d + j] -= mean[j];
  return c;
}

/// G = X Xᵀ (n x n) of row-major X (n x d).
std::vector<double> gram(const std::vector<double> &X, int64_t n, int64_t d) {
  std::vector<double> g(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < d; ++k)
        s += X[i * d + k] * X[j * d + k];
      g[i * n + j] = g[j * n + i] = s;
    }
  return g;
}

/// AᵀB (da x db) of row-major A (n x da), B (n x db).
std::vector<double> crossT(const std::vector<double> &A,
                           const std::vector<double> &B, int64_t n, int64_t da,
                           int64_t db) {
  std::vector<double> r(da * db, 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < da; ++i) {
      double a = A[t * da + i];
      if (a == 0)
        continue;
      for (int64_t j = 0; j < db; ++j)
        r[i * db + j] += a * B[t * db + j];
    }
  return r;
}

double dot(const std::vector<double> &a, const std::vector<double> &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

/// HKH for the RBF kernel of X (n x d): K_ij = exp(−‖x_i−x_j‖²/(2σ²)),
/// double-centred (H = I − 11ᵀ/n).
std::vector<double> centredRbf(const double *X, int64_t n, int64_t d,
                               double sigma) {
  std::vector<double> k(n * n, 1.0);
  double inv = 1.0 / (2.0 * sigma * sigma);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      double s = 0;
      for (int64_t c = 0; c < d; ++c) {
        double diff = X[i * d + c] - X[j * d + c];
        s += diff * diff;
      }
      k[i * n + j] = k[j * n + i] = std::exp(-s * inv);
    }
  std::vector<double> row(n, 0.0);
  double all = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j)
      row[i] += k[i * n + j];
    all += row[i];
    row[i] /= (double)n;
  }
  all /= (double)(n * n);
  // K symmetric: column means equal row means.
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      k[i * n + j] += all - row[i] - row[j];
  return k;
}

/// Whether ‖·‖ via the n x n Gram matrices is cheaper than via d x d.
bool gramIsCheaper(int64_t n, int64_t dx, int64_t dy) {
  double gramCost = (double)n * (double)n * (double)(dx + dy);
  double featCost = (double)n * (double)(dx * dy + dx * dx + dy * dy);
  return gramCost <= featCost;
}
} // namespace

double linearCKA(const double *X, const double *Y, int64_t n, int64_t dx,
                 int64_t dy) {
  if (n <= 0 || dx <= 0 || dy <= 0)
    return 0;
  std::vector<double> xc = centred(X, n, dx), yc = centred(Y, n, dy);
  // ‖YᵀX‖_F² = ⟨XXᵀ, YYᵀ⟩ and ‖XᵀX‖_F = ‖XXᵀ‖_F: the same number either way.
  if (gramIsCheaper(n, dx, dy)) {
    std::vector<double> kx = gram(xc, n, dx), ky = gram(yc, n, dy);
    return ratio(dot(kx, ky), std::sqrt(dot(kx, kx)) * std::sqrt(dot(ky, ky)));
  }
  std::vector<double> yx = crossT(yc, xc, n, dy, dx),
                      xx = crossT(xc, xc, n, dx, dx),
                      yy = crossT(yc, yc, n, dy, dy);
  return ratio(dot(yx, yx), std::sqrt(dot(xx, xx)) * std::sqrt(dot(yy, yy)));
}

double rbfCKA(const double *X, const double *Y, int64_t n, int64_t dx,
              int64_t dy, double sigma) {
  if (n <= 0 || dx <= 0 || dy <= 0 || !(sigma > 0))
    return 0;
  // tr(KHLH) = ⟨HKH, HLH⟩_F since H = H² and both are symmetric.
  std::vector<double> k = centredRbf(X, n, dx, sigma),
                      l = centredRbf(Y, n, dy, sigma);
  return ratio(dot(k, l), std::sqrt(dot(k, k)) * std::sqrt(dot(l, l)));
}

Result<std::vector<double>> ckaMatrix(const LayerStats &s, CKAKind kind,
                                      double sigma) {
  if (Status st = s.validate(); !st)
    return st;
  if (s.samples < 2)
    return Status::error("layer " + str(s.index) +
                         ": CKA needs at least 2 output samples per expert, "
                         "the calibration has " +
                         str(s.samples));
  if (kind == CKAKind::rbf && !(sigma > 0))
    return Status::error("RBF CKA needs sigma > 0");
  const int64_t E = s.E, n = s.samples, H = s.H;
  std::vector<double> m(E * E, 0.0);
  // Each expert's kernel once, then one inner product per pair.
  if (kind == CKAKind::rbf || gramIsCheaper(n, H, H)) {
    std::vector<std::vector<double>> k(E);
    std::vector<double> norms(E);
    for (int64_t e = 0; e < E; ++e) {
      k[e] = kind == CKAKind::rbf ? centredRbf(s.sample(e), n, H, sigma)
                                  : gram(centred(s.sample(e), n, H), n, H);
      norms[e] = std::sqrt(dot(k[e], k[e]));
    }
    for (int64_t a = 0; a < E; ++a)
      for (int64_t b = a; b < E; ++b)
        m[a * E + b] = m[b * E + a] =
            ratio(dot(k[a], k[b]), norms[a] * norms[b]);
    return m;
  }
  std::vector<std::vector<double>> c(E);
  std::vector<double> norms(E);
  for (int64_t e = 0; e < E; ++e) {
    c[e] = centred(s.sample(e), n, H);
    std::vector<double> xx = crossT(c[e], c[e], n, H, H);
    norms[e] = std::sqrt(dot(xx, xx));
  }
  for (int64_t a = 0; a < E; ++a)
    for (int64_t b = a; b < E; ++b) {
      std::vector<double> yx = crossT(c[b], c[a], n, H, H);
      m[a * E + b] = m[b * E + a] = ratio(dot(yx, yx), norms[a] * norms[b]);
    }
  return m;
}

//===----------------------------------------------------------------------===//
// Merge groups
//===----------------------------------------------------------------------===//

std::vector<double> weightCosineMatrix(const ExpertWeights &w) {
  const int64_t E = w.E;
  std::vector<double> g = expertGram(w), out(E * E, 0.0);
  for (int64_t i = 0; i < E; ++i)
    for (int64_t j = 0; j < E; ++j) {
      double d = std::sqrt(g[i * E + i] * g[j * E + j]);
      out[i * E + j] = d > 0 ? g[i * E + j] / d : 0.0;
    }
  return out;
}

std::vector<std::vector<int64_t>> mergeGroups(const std::vector<double> &sim,
                                              const std::vector<double> &freq,
                                              int64_t target,
                                              double threshold) {
  const auto E = (int64_t)freq.size();
  std::vector<int64_t> order(E);
  for (int64_t e = 0; e < E; ++e)
    order[e] = e;
  // Most used first, ties by id (the order stable_sort would give; it trips
  // a libstdc++ deprecation warning under clang). A NaN frequency counts as
  // the least used, so that the order stays a strict weak one.
  auto used = [&](int64_t e) {
    return std::isnan(freq[e]) ? -std::numeric_limits<double>::infinity()
                               : freq[e];
  };
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    double ua = used(a), ub = used(b);
    return ua > ub || (ua == ub && a < b);
  });
  std::vector<int64_t> centre(E, -1); // expert -> its centre
  std::vector<int64_t> centres;       // most used first
  auto bestCentre = [&](int64_t e) -> int64_t {
    int64_t best = -1;
    for (int64_t c : centres) // strict >: ties keep the more used centre
      if (best < 0 || sim[e * E + c] > sim[e * E + best])
        best = c;
    return best;
  };
  if (target > 0) {
    for (int64_t i = 0; i < std::min(target, E); ++i) {
      centres.push_back(order[i]);
      centre[order[i]] = order[i];
    }
    for (int64_t i = target; i < E; ++i)
      centre[order[i]] = bestCentre(order[i]);
  } else {
    for (int64_t e : order) {
      int64_t c = bestCentre(e);
      if (c >= 0 && sim[e * E + c] >= threshold) {
        centre[e] = c;
      } else {
        centres.push_back(e);
        centre[e] = e;
      }
    }
  }
  std::vector<std::vector<int64_t>> groups;
  std::vector<int64_t> slot(E, -1);
  for (int64_t e = 0; e < E; ++e) { // ascending: groups by smallest member
    int64_t c = centre[e];
    if (slot[c] < 0) {
      slot[c] = (int64_t)groups.size();
      groups.emplace_back();
    }
    groups[slot[c]].push_back(e);
  }
  return groups;
}

} // namespace moe::rt::analysis
