//===- moe-run.cpp - run a compiled moe artifact ----------------*- C++ -*-===//
//
//   moe-run <artifact-dir> [--entry NAME] [--tokens T] [--seed S]
//           [--input NAME=FILE.npy]... [--output-dir DIR]
//           [--check] [--bench N [--bench-tokens T,...] [--bench-host-io]]
//           [--no-resident] [--threads N [--split auto|tokens|columns]]
//           [--cuda-graphs] [--bench-graphs TMAX]
//
// Inputs not given as files are drawn at random (seeded; the seed is
// printed). Outputs are poisoned (NaN) before the call. --check compares the
// output of a moe.layer entry with the C++ reference (f64, written from
// MOE_SEMANTICS.md) as ||out - ref|| / ||ref||. For cuda artifacts the
// weights (inputs without the token dimension) are uploaded to the device
// once and stay resident for the call and every --bench run; --no-resident
// stages them on every call. On a GPU, --bench times calls whose
// token-dependent inputs and outputs are in device memory (as a serving
// process keeps its activations; their outputs are checked against the
// host-memory run); --bench-host-io times the host copies too;
// --bench-tokens repeats the benchmark at more token counts with the same
// resident weights. --threads N runs a cpu artifact's calls (the checked one
// and the timed ones) on up to N threads (Artifact::runThreaded): --split
// tokens gives each thread a range of at least 16 tokens, --split columns
// runs one call whose parallel loops (the GEMMs' column groups) use the
// threads, --split auto (the default) the first where the entry allows it
// and there are at least 128 tokens per thread, else the second.
// --cuda-graphs (cuda artifacts) turns on Artifact::useCudaGraphs: the
// checked call then runs on device buffers and replays a graph captured by
// a first call on other inputs in the same buffers (an error if it does not
// replay one), --bench times replays, and the graph counts are printed.
// --bench-graphs TMAX (cuda artifacts, without --cuda-graphs): at every
// benchmarked T <= TMAX the timed calls are repeated through a CUDA graph
// ("bench (cuda graphs): ..."), their outputs checked like the others.
// Errors are one line on stderr and a non-zero exit.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CudaRuntime.h"
#include "moe/Runtime/Model.h"
#include "moe/Runtime/Runtime.h"
#include "moe/Runtime/SafeTensors.h"
#include "Args.h"
#include "Check.h"
#include "Npy.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <unistd.h>

using namespace moe::rt;

namespace {
[[noreturn]] void die(const std::string &msg) {
  std::fprintf(stderr, "moe-run: error: %s\n", msg.c_str());
  std::exit(1);
}

struct Options {
  std::string dir, entry, outputDir;
  int64_t tokens = 16;
  uint64_t seed = 0;
  bool seedGiven = false, check = false, resident = true, benchHostIO = false;
  bool cudaGraphs = false; ///< --cuda-graphs
  /// --bench-graphs: the T up to which the timed calls run with graphs too.
  int64_t benchGraphs = -1;
  double tieTolerance = 1e-4;
  int bench = 0, benchReference = 0;
  unsigned threads = 1; ///< --threads: cpu artifacts
  Artifact::ThreadSplit split = Artifact::ThreadSplit::Auto; ///< --split
  std::vector<int64_t> benchTokens; ///< --bench-tokens: more T for --bench
  std::vector<std::pair<std::string, std::string>> inputFiles;
  std::string safetensors;
  /// Model directories: the layers to run (--layer N, repeatable; --all).
  std::vector<int64_t> layers;
  bool allLayers = false;
};

int64_t parseInt(const std::string &flag, const std::string &v) {
  return moe::tools::parseCount(flag, v, die);
}

Options parseArgs(int argc, char **argv) {
  Options o;
  moe::tools::ArgCursor args(argc, argv, die);
  while (args.next()) {
    const std::string a = args.arg();
    auto value = [&](const std::string &flag) { return args.value(flag); };
    auto is = [&](const char *flag) { return args.is(flag); };
    if (a == "-h" || a == "--help") {
      std::printf("usage: moe-run <artifact-dir> [--entry NAME] [--tokens T] "
                  "[--seed S] [--input NAME=FILE.npy]... [--safetensors FILE] [--output-dir DIR] "
                  "[--check [--tie-tolerance X]] [--bench N [--bench-tokens T,...] [--bench-host-io]] "
                  "[--bench-reference N] [--no-resident] [--threads N [--split auto|tokens|columns]] "
                  "[--cuda-graphs] [--bench-graphs TMAX]\n"
                  "       moe-run <compiled-model-dir> (--layer N... | --all) [same options]\n");
      std::exit(0);
    } else if (is("--entry")) {
      o.entry = value("--entry");
    } else if (is("--tokens")) {
      o.tokens = parseInt("--tokens", value("--tokens"));
    } else if (is("--seed")) {
      o.seed = parseInt("--seed", value("--seed"));
      o.seedGiven = true;
    } else if (a == "--no-resident") {
      o.resident = false;
    } else if (is("--bench-tokens")) {
      std::string v = value("--bench-tokens");
      size_t at = 0;
      while (at <= v.size()) {
        size_t comma = v.find(',', at);
        std::string one = v.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
        o.benchTokens.push_back(parseInt("--bench-tokens", one));
        if (comma == std::string::npos)
          break;
        at = comma + 1;
      }
    } else if (a == "--bench-host-io") {
      o.benchHostIO = true;
    } else if (is("--bench-reference")) {
      o.benchReference =
          static_cast<int>(parseInt("--bench-reference", value("--bench-reference")));
    } else if (is("--threads")) {
      int64_t n = parseInt("--threads", value("--threads"));
      if (n < 1 || n > 1024)
        die("--threads must be 1 to 1024, got " + std::to_string(n));
      o.threads = static_cast<unsigned>(n);
    } else if (is("--split")) {
      std::string v = value("--split");
      if (v == "auto")
        o.split = Artifact::ThreadSplit::Auto;
      else if (v == "tokens")
        o.split = Artifact::ThreadSplit::Tokens;
      else if (v == "columns")
        o.split = Artifact::ThreadSplit::Columns;
      else
        die("--split must be auto, tokens or columns, got '" + v + "'");
    } else if (is("--bench")) {
      o.bench = static_cast<int>(parseInt("--bench", value("--bench")));
    } else if (is("--output-dir")) {
      o.outputDir = value("--output-dir");
    } else if (is("--input")) {
      std::string v = value("--input");
      size_t eq = v.find('=');
      if (eq == std::string::npos)
        die("--input needs NAME=FILE.npy, got '" + v + "'");
      o.inputFiles.push_back({v.substr(0, eq), v.substr(eq + 1)});
    } else if (is("--tie-tolerance")) {
      std::string v = value("--tie-tolerance");
      char *end = nullptr;
      o.tieTolerance = std::strtod(v.c_str(), &end);
      if (v.empty() || *end || !(o.tieTolerance >= 0))
        die("invalid value '" + v + "' for --tie-tolerance");
    } else if (is("--safetensors")) {
      o.safetensors = value("--safetensors");
    } else if (is("--layer")) {
      o.layers.push_back(parseInt("--layer", value("--layer")));
    } else if (a == "--all") {
      o.allLayers = true;
    } else if (a == "--check") {
      o.check = true;
    } else if (a == "--cuda-graphs") {
      o.cudaGraphs = true;
    } else if (is("--bench-graphs")) {
      o.benchGraphs = parseInt("--bench-graphs", value("--bench-graphs"));
    } else if (!a.empty() && a[0] == '-') {
      die("unknown option '" + a + "'");
    } else if (o.dir.empty()) {
      o.dir = a;
    } else {
      die("unexpected argument '" + a + "'");
    }
  }
  if (o.dir.empty())
    die("no artifact directory given (moe-run --help)");
  return o;
}
} // namespace

namespace {
/// Device memory for activations (--cuda-graphs, and --bench of a cuda
/// artifact), freed with the object.
class DeviceBuffers {
public:
  DeviceBuffers() = default;
  DeviceBuffers(const DeviceBuffers &) = delete;
  DeviceBuffers &operator=(const DeviceBuffers &) = delete;
  ~DeviceBuffers() {
    for (void *p : owned_)
      moe::rt::cuda::freeManaged(p);
  }

  /// A new buffer of `bytes`, holding a copy of host memory `src` unless it
  /// is null.
  Result<void *> make(const void *src, size_t bytes) {
    auto m = moe::rt::cuda::allocManaged(bytes);
    if (!m)
      return Status::error(m.message());
    owned_.push_back(m.value());
    if (src)
      if (Status s = moe::rt::cuda::copyToDevice(m.value(), src, bytes); !s)
        return s;
    return m.value();
  }

private:
  std::vector<void *> owned_;
};

/// The checked call with CUDA graphs: the token-dependent inputs (and the
/// weights that are not resident) and the outputs in device memory; a first
/// call on other inputs (drawn from a second seed) captures the graph, the
/// real inputs are then copied into the same buffers and the outputs
/// poisoned again, and the second call must replay the graph. Its outputs
/// come back into `outputs`. A replay that read the inputs of its capture,
/// or wrote nothing, fails the check that follows.
Status graphCall(const Artifact &art, const EntrySpec &spec,
                 const ResidentInputs *res, uint64_t seed,
                 const std::vector<Buffer> &inputs,
                 const std::vector<TensorView> &in,
                 std::vector<Buffer> &outputs) {
  namespace cuda = moe::rt::cuda;
  DeviceBuffers device;
  auto upload = [&](void *&dst, const std::vector<unsigned char> &raw,
                    bool allocate) -> Status {
    if (!allocate)
      return cuda::copyToDevice(dst, raw.data(), raw.size());
    auto m = device.make(raw.data(), raw.size());
    if (m)
      dst = m.value();
    return m ? Status::ok() : Status::error(m.message());
  };
  std::mt19937_64 decoyRng(seed ^ 0x9e3779b97f4a7c15ull);
  std::vector<TensorView> dIn = in, dOut;
  for (size_t i = 0; i < inputs.size(); ++i) {
    bool token = spec.args[i].hasTokenDim();
    if (!token && res && res->count())
      continue; // resident: the call reads the device copy
    Buffer first = inputs[i];
    if (token) {
      fillRandom(first, spec.args[i], decoyRng);
      first.materialize();
    }
    if (Status s = upload(dIn[i].data, first.raw, true); !s)
      return s;
  }
  for (Buffer &b : outputs) {
    dOut.push_back(b.view());
    if (Status s = upload(dOut.back().data, b.raw, true); !s)
      return s;
  }
  if (Status s = art.run(spec.name, dIn, dOut, res); !s)
    return s;
  Artifact::CudaGraphStats before = art.cudaGraphStats();
  for (size_t i = 0; i < inputs.size(); ++i)
    if (spec.args[i].hasTokenDim())
      if (Status s = upload(dIn[i].data, inputs[i].raw, false); !s)
        return s;
  for (size_t i = 0; i < outputs.size(); ++i)
    if (Status s = upload(dOut[i].data, outputs[i].raw, false); !s)
      return s;
  if (Status s = art.run(spec.name, dIn, dOut, res); !s)
    return s;
  Artifact::CudaGraphStats after = art.cudaGraphStats();
  if (after.replayed != before.replayed + 1)
    return Status::error(
        "--cuda-graphs: the checked call did not replay a "
        "CUDA graph" +
        (after.ineligible ? " (" + after.lastIneligible + ")" : std::string()));
  std::printf("cuda graphs: the checked call replayed the graph captured "
              "by a call on other inputs\n");
  for (size_t i = 0; i < outputs.size(); ++i)
    if (Status s = cuda::copyToHost(outputs[i].raw.data(), dOut[i].data,
                                    outputs[i].raw.size());
        !s)
      return s;
  return Status::ok();
}

/// An empty host tensor of `a`'s dtype and shape at `tokens` tokens.
Buffer shapedAs(const TensorSpec &a, int64_t tokens) {
  Buffer buf;
  buf.dtype = a.dtype;
  for (int64_t d : a.shape)
    buf.shape.push_back(d < 0 ? tokens : d);
  return buf;
}

/// Dies, naming T, where the host buffers of `spec` at `tokens` (each
/// tensor's values as f32, kept for the reference, and its copy in its own
/// dtype for the call) would not fit in this machine's memory: the vectors
/// would throw std::bad_alloc, an abort.
void checkHostBytes(const EntrySpec &spec, int64_t tokens) {
  long double bytes = 0;
  auto add = [&](const TensorSpec &t) {
    long double n = 1;
    for (int64_t d : t.shape)
      n *= static_cast<long double>(d < 0 ? tokens : d);
    bytes += n * (4 + dtypeSize(t.dtype));
  };
  for (const TensorSpec &a : spec.args)
    add(a);
  for (const TensorSpec &r : spec.results)
    add(r);
  long double memory = static_cast<long double>(sysconf(_SC_PHYS_PAGES)) *
                       static_cast<long double>(sysconf(_SC_PAGE_SIZE));
  if (memory > 0 && bytes > memory) {
    // (The entry name goes in whole; only the figures are formatted.)
    char gib[64];
    std::snprintf(gib, sizeof gib, "%.1Lf GiB", bytes / (1ull << 30));
    std::string need = gib;
    std::snprintf(gib, sizeof gib, "%.1Lf GiB", memory / (1ull << 30));
    die("T = " + std::to_string(tokens) + ": entry '" + spec.name + "' needs " +
        need +
        " of host buffers (inputs and outputs, with their f32 copies); this "
        "machine has " +
        gib);
  }
}

/// An output tensor poisoned with NaN (what the call must overwrite).
Buffer poisonedOutput(const TensorSpec &r, int64_t tokens) {
  Buffer buf = shapedAs(r, tokens);
  buf.values.assign(r.numElements(tokens), std::nanf(""));
  buf.materialize();
  return buf;
}

/// Runs `spec` of `art` once with inputs from files, `weights` (a
/// .safetensors file bound by argument name) or seeded random data; writes
/// outputs as `<outputDir>/<outputStem><i>.npy`; checks and benchmarks as
/// asked. Returns the exit code.
int runEntry(const Options &opt, const std::shared_ptr<Artifact> &art,
             const EntrySpec *spec, const SafeTensorsFile *weights,
             const std::string &weightsName, const std::string &outputStem) {
  checkHostBytes(*spec, opt.tokens);
  for (int64_t T : opt.benchTokens)
    checkHostBytes(*spec, T);
  std::printf("moe-run: entry %s, T = %lld, seed = %llu\n", spec->name.c_str(),
              (long long)opt.tokens, (unsigned long long)opt.seed);

  // Inputs: files where given, seeded random data otherwise. Values are kept
  // as f32 (after rounding to the input's dtype) for the reference.
  std::mt19937_64 rng(opt.seed);
  const SafeTensorsFile *st = weights;
  std::vector<Buffer> inputs;
  for (const TensorSpec &a : spec->args) {
    Buffer buf = shapedAs(a, opt.tokens);
    auto file = std::find_if(opt.inputFiles.begin(), opt.inputFiles.end(),
                             [&](auto &p) { return p.first == a.name; });
    if (file != opt.inputFiles.end()) {
      std::string err;
      std::vector<int64_t> shape;
      if (!readNpyF32(file->second, buf.values, shape, err))
        die(err);
      if (shape != buf.shape)
        die("input '" + a.name + "' from '" + file->second + "' has shape " +
            formatShape(shape) + ", expected " + formatShape(buf.shape));
    } else if (const SafeTensor *t = st ? st->find(a.name) : nullptr) {
      if (t->shape != buf.shape)
        die("tensor '" + a.name + "' in '" + weightsName + "' has shape " +
            formatShape(t->shape) + ", expected " + formatShape(buf.shape));
      size_t n = t->size / (t->dtype == "F32" ? 4 : 2);
      buf.values.resize(n);
      for (size_t i = 0; i < n; ++i) {
        if (t->dtype == "F32") {
          std::memcpy(&buf.values[i], t->data + 4 * i, 4);
        } else if (t->dtype == "BF16" || t->dtype == "F16") {
          uint16_t h;
          std::memcpy(&h, t->data + 2 * i, 2);
          buf.values[i] = t->dtype == "BF16" ? bf16ToFloat(h) : f16ToFloat(h);
        } else {
          die("tensor '" + a.name + "' in '" + weightsName +
              "' has dtype " + t->dtype + " (supported: F32, F16, BF16)");
        }
      }
    } else {
      fillRandom(buf, a, rng);
    }
    buf.materialize();
    inputs.push_back(std::move(buf));
  }
  for (const auto &file : opt.inputFiles)
    if (std::none_of(spec->args.begin(), spec->args.end(),
                     [&](const TensorSpec &a) { return a.name == file.first; }))
      die("entry '" + spec->name + "' has no input named '" + file.first + "'");
  // A tensor of the weights file that binds no argument is a naming
  // mistake: without this check its argument would silently be random.
  if (st)
    for (const auto &entry : st->tensors())
      if (const std::string &name = entry.first;
          std::none_of(spec->args.begin(), spec->args.end(),
                       [&](const TensorSpec &a) { return a.name == name; })) {
        std::string names;
        for (const TensorSpec &a : spec->args)
          names += (names.empty() ? "" : ", ") + a.name;
        die("tensor '" + name + "' in '" + weightsName +
            "' names no input of entry '" + spec->name + "' (inputs: " +
            names + ")");
      }

  std::vector<Buffer> outputs;
  for (const TensorSpec &r : spec->results)
    outputs.push_back(poisonedOutput(r, opt.tokens));
  std::vector<TensorView> in, out;
  for (Buffer &b : inputs)
    in.push_back(b.view());
  for (Buffer &b : outputs)
    out.push_back(b.view());
  // On a GPU the weights are uploaded once and stay resident for this
  // call and every --bench run (as a serving process keeps them).
  // (--no-resident: staged into device memory on every call instead.)
  std::shared_ptr<ResidentInputs> keep;
  if (opt.resident) {
    auto resident = art->makeResident(spec->name, in);
    if (!resident)
      die(resident.message());
    keep = resident.value();
  }
  const ResidentInputs *res = keep.get();
  if (res && res->count())
    std::printf("resident on the device: %zu inputs, %zu bytes\n", res->count(),
                res->bytes());
  if (res && res->derivedCount())
    std::printf("derived weights computed once: %zu tensors, %zu bytes\n",
                res->derivedCount(), res->derivedBytes());
  // One call: run(), or runThreaded() for --threads (cpu artifacts).
  unsigned parts = 1;
  auto call = [&](const std::vector<TensorView> &callIn,
                  std::vector<TensorView> &callOut) {
    return opt.threads > 1
               ? art->runThreaded(spec->name, callIn, callOut, opt.threads,
                                  /*minTokens=*/16, &parts, opt.split, res)
               : art->run(spec->name, callIn, callOut, res);
  };
  if (opt.benchGraphs >= 0 && (art->target() != "cuda" || opt.cudaGraphs ||
                               opt.benchHostIO))
    die("--bench-graphs needs a cuda artifact, activations in device memory "
        "(no --bench-host-io) and no --cuda-graphs");
  if (opt.cudaGraphs) {
    if (art->target() != "cuda")
      die("--cuda-graphs needs a cuda artifact ('" + opt.dir + "' targets " +
          art->target() + ")");
    if (opt.threads > 1)
      die("--cuda-graphs and --threads do not go together");
    art->useCudaGraphs(true);
    if (Status s = graphCall(*art, *spec, res, opt.seed, inputs, in, outputs);
        !s)
      die(s.message());
  } else if (Status s = call(in, out); !s) {
    die(s.message());
  }
  if (opt.threads > 1) {
    std::string loops;
    if (!art->hasParallelLoops())
      loops = parts == 1 ? ", on one thread (no parallel loops)" : "";
    else if (parts == 1)
      loops = ", its parallel loops on " + std::to_string(opt.threads) +
              " threads";
    else if (opt.threads > parts)
      loops = ", their parallel loops on the " +
              std::to_string(opt.threads) + " threads";
    std::printf("threads: T = %lld in %u part%s%s\n", (long long)opt.tokens,
                parts, parts == 1 ? "" : "s", loops.c_str());
  }
  for (Buffer &b : outputs)
    b.readBack();

  for (size_t i = 0; i < outputs.size(); ++i) {
    const Buffer &b = outputs[i];
    double sum = 0;
    for (float v : b.values)
      sum += std::fabs(v);
    std::printf("output #%zu: %s %s, mean |y| = %.6g\n", i, dtypeName(b.dtype),
                formatShape(b.shape).c_str(),
                b.values.empty() ? 0.0 : sum / b.values.size());
    if (!opt.outputDir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(opt.outputDir, ec);
      std::string err, path = opt.outputDir + "/" + outputStem +
                             (spec->results.size() > 1 || outputStem == "output"
                                  ? std::to_string(i)
                                  : "") +
                             ".npy";
      if (!writeNpyF32(path, b.values, b.shape, err))
        die(err);
    }
  }

  int rc = 0;
  if (opt.check) {
    std::string err;
    CheckReport report;
    if (!checkAgainstReference(*spec, inputs, outputs, opt.tieTolerance,
                               report, err))
      die(err);
    for (const std::string &line : report.lines)
      std::printf("%s\n", line.c_str());
    rc = report.passed ? 0 : 2;
  }

  // --bench: times N calls at T (after the run above) with the weights
  // resident. hostIn/hostOut: the inputs and the outputs of a host-memory
  // run at T, against which the timed runs' outputs are checked.
  auto benchAt = [&](int64_t T, const std::vector<TensorView> &hostIn,
                     std::vector<Buffer> &hostOut) {
    // On a GPU the token-dependent inputs and the outputs are timed in
    // device memory, as a serving process holds its activations (the
    // PyTorch baselines of benchmarks/gpu_bench.py likewise); --bench-host-io
    // times the copies from and to host memory too.
    std::vector<TensorView> benchIn = hostIn, benchOut;
    for (Buffer &b : hostOut)
      benchOut.push_back(b.view());
    DeviceBuffers deviceCopies;
    bool deviceIO = art->target() == "cuda" && !opt.benchHostIO &&
                    moe::rt::cuda::status();
    auto toDevice = [&](TensorView &v, bool copy) {
      size_t bytes = dtypeSize(v.dtype);
      for (int64_t d : v.shape)
        bytes *= size_t(d);
      auto m = deviceCopies.make(copy ? v.data : nullptr, bytes);
      if (!m)
        die(m.message());
      v.data = m.value();
    };
    if (deviceIO) {
      for (size_t i = 0; i < benchIn.size(); ++i)
        if (spec->args[i].hasTokenDim() || !res || !res->count())
          toDevice(benchIn[i], /*copy=*/true);
      for (TensorView &v : benchOut)
        toDevice(v, /*copy=*/false);
    }
    auto timeCalls = [&](const char *label) {
      std::vector<double> ms;
      for (int i = 0; i < opt.bench; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        if (Status s = call(benchIn, benchOut); !s)
          die(s.message());
        ms.push_back(std::chrono::duration<double, std::milli>(
                         std::chrono::steady_clock::now() - t0)
                         .count());
      }
      std::sort(ms.begin(), ms.end());
      double mean = 0;
      for (double m : ms)
        mean += m;
      mean /= ms.size();
      std::printf("%s: %d runs, T = %lld: min %.4f ms, median %.4f ms, mean "
                  "%.4f ms, max %.4f ms%s%s\n",
                  label, opt.bench, (long long)T, ms.front(),
                  ms[ms.size() / 2], mean, ms.back(),
                  deviceIO ? " (activations in device memory)" : "",
                  opt.threads > 1 ? (" (up to " + std::to_string(opt.threads) +
                                     " threads)")
                                        .c_str()
                                  : "");
    };
    auto compareWithHost = [&](const char *label) {
      // The outputs left in device memory by the last run must be those of
      // the host-memory run above (up to the order of f32 atomic additions).
      for (size_t i = 0; deviceIO && i < hostOut.size(); ++i) {
        Buffer again = hostOut[i];
        if (Status c = moe::rt::cuda::copyToHost(
                again.raw.data(), benchOut[i].data, again.raw.size());
            !c)
          die(c.message());
        again.readBack();
        double num = 0, den = 0;
        for (size_t j = 0; j < again.values.size(); ++j) {
          double d = double(again.values[j]) - hostOut[i].values[j];
          num += d * d;
          den += double(hostOut[i].values[j]) * hostOut[i].values[j];
        }
        double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
        if (!std::isfinite(den)) {
          std::printf("bench: output #%zu not compared with the host-memory "
                      "run (its values are not finite)\n", i);
          continue;
        }
        if (!(rel <= 1e-2))
          die("output #" + std::to_string(i) +
              " of the " + std::string(label) +
              " runs with device-memory activations differs from the "
              "host-memory run: ||a-b||/||b|| = " + std::to_string(rel));
      }
    };
    timeCalls("bench");
    compareWithHost("timed");
    // --bench-graphs: the same calls again through CUDA graphs (captured by
    // an untimed call), the outputs poisoned first and compared after.
    if (deviceIO && T <= opt.benchGraphs && !art->usesCudaGraphs()) {
      art->useCudaGraphs(true);
      for (size_t i = 0; i < hostOut.size(); ++i) {
        std::vector<unsigned char> nan(hostOut[i].raw.size(), 0xff);
        if (Status c = moe::rt::cuda::copyToDevice(benchOut[i].data,
                                                   nan.data(), nan.size());
            !c)
          die(c.message());
      }
      if (Status s = call(benchIn, benchOut); !s)
        die(s.message());
      uint64_t before = art->cudaGraphStats().replayed;
      timeCalls("bench (cuda graphs)");
      Artifact::CudaGraphStats g = art->cudaGraphStats();
      if (g.replayed - before != uint64_t(opt.bench))
        die("--bench-graphs: the timed calls did not replay a CUDA graph" +
            (g.ineligible ? " (" + g.lastIneligible + ")" : std::string()));
      compareWithHost("CUDA graph");
      art->useCudaGraphs(false);
    }
  };
  if (opt.bench > 0) {
    benchAt(opt.tokens, in, outputs);
    // --bench-tokens: more token counts with the same resident weights
    // (one process per shape: weights of GiBs are made and uploaded once).
    for (int64_t T : opt.benchTokens) {
      if (T == opt.tokens)
        continue;
      std::vector<Buffer> fresh, outsT;
      fresh.reserve(spec->args.size());
      std::vector<TensorView> inT = in;
      for (size_t i = 0; i < spec->args.size(); ++i) {
        const TensorSpec &a = spec->args[i];
        if (!a.hasTokenDim())
          continue;
        Buffer b = shapedAs(a, T);
        fillRandom(b, a, rng);
        b.materialize();
        fresh.push_back(std::move(b));
        inT[i] = fresh.back().view();
      }
      std::vector<TensorView> outViews;
      for (const TensorSpec &r : spec->results)
        outsT.push_back(poisonedOutput(r, T));
      for (Buffer &b : outsT)
        outViews.push_back(b.view());
      if (Status st = art->run(spec->name, inT, outViews, res); !st)
        die(st.message());
      for (Buffer &b : outsT)
        b.readBack();
      benchAt(T, inT, outsT);
    }
    if (art->usesRuntimeAllocator()) {
      moe::rt::HostAllocatorStats a = moe::rt::hostAllocatorStats();
      std::printf("host allocator: %llu blocks handed out, %llu from the "
                  "cache; %llu blocks (%.1f MiB) cached\n",
                  (unsigned long long)a.allocations,
                  (unsigned long long)a.reused,
                  (unsigned long long)a.cachedBlocks,
                  double(a.cachedBytes) / (1 << 20));
    }
  }
  if (opt.cudaGraphs) {
    Artifact::CudaGraphStats g = art->cudaGraphStats();
    std::printf("cuda graphs: %llu captured, %llu replayed, %llu calls "
                "without one%s%s; %zu kept, %.1f MiB%s\n",
                (unsigned long long)g.captured, (unsigned long long)g.replayed,
                (unsigned long long)g.ineligible,
                g.ineligible ? " (last: " : "",
                g.ineligible ? (g.lastIneligible + ")").c_str() : "", g.graphs,
                double(g.bytes) / (1 << 20),
                g.retried ? ("; " + std::to_string(g.retried) +
                             " capture(s) tried again after dropping the "
                             "graphs kept")
                                .c_str()
                          : "");
  }
  if (opt.benchReference > 0) {
    std::string err;
    double ms = moe::rt::benchReference(*spec, inputs, opt.benchReference, err);
    if (ms < 0)
      die(err);
    std::printf("bench-reference: %d runs, T = %lld: median %.4f ms\n",
                opt.benchReference, (long long)opt.tokens, ms);
  }
  return rc;
}
} // namespace

int main(int argc, char **argv) {
  moe::tools::exitOnOutOfMemory("moe-run");
  Options opt = parseArgs(argc, argv);
  if (!opt.seedGiven)
    opt.seed = std::chrono::steady_clock::now().time_since_epoch().count() % 1000000;
  std::ifstream modelJson(opt.dir + "/model.json");
  if (modelJson) {
    // A compiled model: run the chosen layers with their own weights.
    if (opt.layers.empty() && !opt.allLayers)
      die("'" + opt.dir + "' is a compiled model: choose --layer N or --all");
    if (!opt.entry.empty() || !opt.safetensors.empty())
      die("--entry and --safetensors do not apply to a compiled model (its "
          "layers bind their own weights)");
    auto loaded = Model::load(opt.dir);
    if (!loaded)
      die(loaded.message());
    std::shared_ptr<Model> model = loaded.value();
    std::vector<const ModelLayer *> chosen;
    if (opt.allLayers)
      for (const ModelLayer &l : model->layers())
        chosen.push_back(&l);
    for (int64_t i : opt.layers) {
      const ModelLayer *l = model->layer(i);
      if (!l)
        die("--layer " + std::to_string(i) + ": '" + opt.dir + "' has layers 0.." +
            std::to_string(model->layers().back().index));
      chosen.push_back(l);
    }
    std::printf("moe-run: model %s (%s), %zu layers\n", opt.dir.c_str(),
                model->modelType().c_str(), model->layers().size());
    int rc = 0;
    for (const ModelLayer *l : chosen) {
      std::printf("layer %lld (%s): ", (long long)l->index, l->kind.c_str());
      int r = runEntry(opt, l->artifact, &l->spec(), l->weights.get(),
                       l->weightsPath, "layer_" + std::to_string(l->index));
      rc = rc ? rc : r;
    }
    return rc;
  }
  if (!opt.layers.empty() || opt.allLayers)
    die("--layer/--all need a compiled model directory (with model.json); '" +
        opt.dir + "' has none");
  auto loaded = Artifact::load(opt.dir);
  if (!loaded)
    die(loaded.message());
  std::shared_ptr<Artifact> art = loaded.value();
  const EntrySpec *spec = nullptr;
  if (opt.entry.empty()) {
    if (art->entries().size() != 1)
      die("the artifact has several entries: choose one with --entry");
    spec = &art->entries()[0];
  } else if (!(spec = art->find(opt.entry))) {
    die("unknown entry '" + opt.entry + "' in '" + opt.dir + "'");
  }
  std::shared_ptr<SafeTensorsFile> st;
  if (!opt.safetensors.empty()) {
    auto r = SafeTensorsFile::open(opt.safetensors);
    if (!r)
      die(r.message());
    st = r.value();
  }
  return runEntry(opt, art, spec, st.get(), opt.safetensors, "output");
}
