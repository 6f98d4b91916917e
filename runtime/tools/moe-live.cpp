//===- moe-live.cpp - add an expert to a model while it serves --*- C++ -*-===//
//
//   moe-live <model-dir> --add FILE [--add FILE]... [--source <checkpoint>]
//            [--compiler PATH] [--out DIR] [-j N] [--threads N] [--tokens T]
//            [--seed S] [--layer N]... [--warmup-ms MS] [--after-ms MS]
//            [--layer-threads N] [--no-output-check]
//
// Loads a compiled model (moe::rt::LiveModel), starts N threads that call
// its layers in a loop on fixed seeded random inputs (the seed is printed),
// then adds the experts of FILE (moe-compile <checkpoint> --add-expert FILE
// -o <model-dir> as a subprocess, after the inputs model.json records:
// --source defaults to its checkpoint; only changed layers are recompiled
// and reloaded) and swaps them in while the threads keep calling. Every call
// must succeed and return exactly the output of the layer version it ran on
// (computed single-threaded before the threads start, and for the new
// version before it serves); every call started must return. Prints the
// add latency split into compile, load and swap, and the time from the add
// to the first call served by the new layers (both without the time this
// tool spends computing the new layers' outputs for its check before the
// swap); one PASS/FAIL line per check. --layer-threads N runs each call on
// up to N threads (cpu models: the layers' parallel loops, or the tokens;
// LiveModel::runLayer's `threads`), so that swapped-out layers are unloaded
// while the runtime's worker threads serve the new ones. --no-output-check
// leaves out the output comparison (cuda models against the fake CUDA
// driver, where no kernel runs and outputs are whatever the buffers held):
// the loads, swaps and unloads under concurrent calls are still checked.
// Exit status: 1 if a check failed, 3 if the add failed (the old model then
// must have served every call), 0 otherwise.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/LiveModel.h"
#include "Args.h"
#include "Npy.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unistd.h>

using namespace moe::rt;
using Clock = std::chrono::steady_clock;

namespace {
[[noreturn]] void die(const std::string &msg) {
  std::fprintf(stderr, "moe-live: error: %s\n", msg.c_str());
  std::exit(2);
}

struct Options {
  std::string dir, source, compiler, outDir;
  std::vector<std::string> adds, compilerArgs;
  std::vector<int64_t> layers;
  int threads = 2, warmupMs = 200, afterMs = 200, layerThreads = 1;
  int64_t tokens = 16;
  uint64_t seed = 0;
  bool seedGiven = false;
  bool checkOutputs = true;
};

int64_t parseInt(const std::string &flag, const std::string &v) {
  return moe::tools::parseCount(flag, v, die);
}

/// moe-compile next to this executable, else from PATH.
std::string defaultCompiler() {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    std::string path(self, size_t(n));
    std::string sibling = path.substr(0, path.rfind('/') + 1) + "moe-compile";
    if (access(sibling.c_str(), X_OK) == 0)
      return sibling;
  }
  return "moe-compile";
}

Options parseArgs(int argc, char **argv) {
  Options o;
  moe::tools::ArgCursor args(argc, argv, die);
  while (args.next()) {
    const std::string a = args.arg();
    auto value = [&](const std::string &flag) { return args.value(flag); };
    auto is = [&](const char *flag) { return args.is(flag); };
    if (a == "-h" || a == "--help") {
      std::printf("usage: moe-live <model-dir> --add FILE [--add FILE]... "
                  "[--source <checkpoint-dir>] [--compiler PATH] [--out DIR] "
                  "[-j N] [--threads N] "
                  "[--tokens T] [--seed S] [--layer N]... [--warmup-ms MS] "
                  "[--after-ms MS] [--layer-threads N] [--no-output-check]\n");
      std::exit(0);
    } else if (is("--source")) {
      o.source = value("--source");
    } else if (is("--add")) {
      o.adds.push_back(value("--add"));
    } else if (is("--compiler")) {
      o.compiler = value("--compiler");
    } else if (is("--out")) {
      o.outDir = value("--out");
    } else if (a == "-j") {
      o.compilerArgs = {"-j", std::to_string(parseInt("-j", value("-j")))};
    } else if (is("--threads")) {
      o.threads = int(parseInt("--threads", value("--threads")));
    } else if (is("--layer-threads")) {
      o.layerThreads = int(parseInt("--layer-threads", value("--layer-threads")));
    } else if (a == "--no-output-check") {
      o.checkOutputs = false;
    } else if (is("--tokens")) {
      o.tokens = parseInt("--tokens", value("--tokens"));
    } else if (is("--seed")) {
      o.seed = parseInt("--seed", value("--seed"));
      o.seedGiven = true;
    } else if (is("--layer")) {
      o.layers.push_back(parseInt("--layer", value("--layer")));
    } else if (is("--warmup-ms")) {
      o.warmupMs = int(parseInt("--warmup-ms", value("--warmup-ms")));
    } else if (is("--after-ms")) {
      o.afterMs = int(parseInt("--after-ms", value("--after-ms")));
    } else if (!a.empty() && a[0] == '-') {
      die("unknown option '" + a + "'");
    } else if (o.dir.empty()) {
      o.dir = a;
    } else {
      die("unexpected argument '" + a + "'");
    }
  }
  if (o.dir.empty())
    die("no compiled model directory given (moe-live --help)");
  if (o.adds.empty())
    die("needs --add FILE (the new experts)");
  if (o.threads < 1 || o.tokens < 1 || o.layerThreads < 1)
    die("--threads, --tokens and --layer-threads must be at least 1");
  if (o.compiler.empty())
    o.compiler = defaultCompiler();
  return o;
}

/// The output bytes of `layer` of `table` on `input`.
std::vector<unsigned char> runOnce(const LiveModel::Layers &table,
                                   int64_t layer, Buffer &input) {
  Buffer out;
  out.dtype = input.dtype;
  out.shape = input.shape;
  out.raw.assign(input.raw.size(), 0);
  TensorView o = out.view();
  if (Status s = table.run(layer, input.view(), o); !s)
    die("layer " + std::to_string(layer) + ": " + s.message());
  return out.raw;
}

int64_t nowNs(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() -
                                                              t0)
      .count();
}
} // namespace

int main(int argc, char **argv) {
  moe::tools::exitOnOutOfMemory("moe-live");
  Options opt = parseArgs(argc, argv);
  if (!opt.seedGiven)
    opt.seed = Clock::now().time_since_epoch().count() % 1000000;
  auto loaded = LiveModel::load(opt.dir);
  if (!loaded)
    die(loaded.message());
  std::shared_ptr<LiveModel> model = loaded.value();
  std::shared_ptr<const LiveModel::Layers> table0 = model->snapshot();
  std::vector<int64_t> layers = opt.layers;
  if (layers.empty())
    for (const auto &l : table0->layers)
      layers.push_back(l->index);
  for (int64_t l : layers)
    if (!table0->find(l))
      die("--layer " + std::to_string(l) + ": the model has no such layer");
  std::printf("moe-live: model %s (%s, target %s), %zu layers; %d threads "
              "calling %zu layers, T = %lld, seed = %llu\n",
              opt.dir.c_str(), model->modelType().c_str(),
              model->target().c_str(), table0->layers.size(), opt.threads,
              layers.size(), (long long)opt.tokens,
              (unsigned long long)opt.seed);

  // Per thread and layer: an input, and the outputs of both versions.
  size_t nThreads = size_t(opt.threads), nLayers = layers.size();
  std::vector<std::vector<Buffer>> inputs(nThreads);
  std::vector<std::vector<std::vector<unsigned char>>> before(nThreads),
      after(nThreads);
  for (size_t w = 0; w < nThreads; ++w) {
    std::mt19937_64 rng(opt.seed * 1000 + w);
    for (size_t j = 0; j < nLayers; ++j) {
      Buffer b;
      b.dtype = model->dtype();
      b.shape = {opt.tokens, model->hiddenSize()};
      fillRandom(b, TensorSpec{"input", b.dtype, b.shape}, rng);
      b.materialize();
      inputs[w].push_back(std::move(b));
      before[w].push_back(runOnce(*table0, layers[j], inputs[w][j]));
    }
  }
  uint64_t version0 = table0->version;
  // The serving layers, to tell which ones an update shares (they stay
  // alive while table0's version serves, so the addresses are not reused).
  std::vector<const ModelLayer *> oldLayer;
  for (int64_t l : layers)
    oldLayer.push_back(table0->find(l));
  table0.reset(); // the workers must not keep the old table alive

  std::atomic<bool> stop{false}, published{false};
  std::atomic<long> started{0}, completed{0}, failures{0}, wrong{0},
      onOld{0}, onNew{0}, oldAfterSwap{0};
  std::atomic<int64_t> swapNs{0}, firstNewNs{INT64_MAX};
  std::string firstFailure;
  std::mutex failureMutex;
  auto t0 = Clock::now();
  std::vector<std::thread> workers;
  for (size_t w = 0; w < nThreads; ++w)
    workers.emplace_back([&, w] {
      Buffer out;
      out.dtype = model->dtype();
      out.shape = {opt.tokens, model->hiddenSize()};
      out.raw.assign(before[w][0].size(), 0);
      while (!stop.load()) {
        for (size_t j = 0; j < nLayers && !stop.load(); ++j) {
          ++started;
          std::fill(out.raw.begin(), out.raw.end(), 0xFF); // NaN
          TensorView o = out.view();
          uint64_t version = 0;
          Status s = model->runLayer(layers[j], inputs[w][j].view(), o,
                                     &version, unsigned(opt.layerThreads));
          int64_t end = nowNs(t0);
          if (!s) {
            ++failures;
            std::lock_guard<std::mutex> lock(failureMutex);
            if (firstFailure.empty())
              firstFailure = s.message();
          } else if (version == version0) {
            ++onOld;
            wrong += out.raw != before[w][j];
            int64_t swap = swapNs.load();
            oldAfterSwap += swap != 0 && end > swap;
          } else {
            ++onNew;
            // The new outputs are published before the new table serves.
            wrong += !published.load() || out.raw != after[w][j];
            int64_t first = firstNewNs.load();
            while (end < first && !firstNewNs.compare_exchange_weak(first, end))
              ;
          }
          ++completed;
        }
      }
    });

  std::this_thread::sleep_for(std::chrono::milliseconds(opt.warmupMs));
  long callsBefore = completed.load();
  LiveModel::AddOptions add;
  add.compiler = opt.compiler;
  add.source = opt.source;
  add.files = opt.adds;
  add.outDir = opt.outDir;
  add.compilerArgs = opt.compilerArgs;
  size_t changedOutputs = 0;
  int64_t checkNs = 0;
  // The new version's outputs, before it serves: this tool's own check, so
  // its time is left out of the add latency. A layer the update shares is
  // the same kernel and weights: its outputs are the old ones.
  add.beforeSwap = [&](const LiveModel::Layers &next) {
    int64_t start = nowNs(t0);
    for (size_t w = 0; w < nThreads; ++w) {
      after[w].clear();
      for (size_t j = 0; j < nLayers; ++j) {
        if (next.find(layers[j]) == oldLayer[j]) {
          after[w].push_back(before[w][j]);
          continue;
        }
        after[w].push_back(runOnce(next, layers[j], inputs[w][j]));
        changedOutputs += w == 0 && after[w][j] != before[w][j];
      }
    }
    published = true;
    swapNs = nowNs(t0);
    checkNs = swapNs - start;
    return Status::ok();
  };
  int64_t addStart = nowNs(t0);
  auto report = model->addExpert(add);
  int64_t addEnd = nowNs(t0);
  bool added = report.isOk();
  if (added) {
    const LiveModel::AddReport &r = report.value();
    std::string changed;
    for (int64_t l : r.changed)
      changed += (changed.empty() ? "" : ", ") + std::to_string(l);
    std::printf("moe-live: compiler: %s\n", r.compilerSummary.c_str());
    std::printf("moe-live: added: layers [%s] reloaded, version %llu; %zu of "
                "%zu called layers changed output\n",
                changed.c_str(), (unsigned long long)r.version, changedOutputs,
                nLayers);
    std::printf("moe-live: add latency: compile %.3f s, load %.4f s, swap "
                "%.6f s, total %.3f s (without moe-live's check of the new "
                "layers, %.3f s)\n",
                r.compileSeconds, r.loadSeconds, r.swapSeconds,
                (addEnd - addStart - checkNs) * 1e-9, checkNs * 1e-9);
  } else {
    std::printf("moe-live: add failed: %s\n", report.message().c_str());
  }
  // Keep calling for a while on what serves now.
  auto until = Clock::now() + std::chrono::milliseconds(opt.afterMs);
  long target = completed.load() + 100;
  while (Clock::now() < until || completed.load() < target)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop = true;
  for (std::thread &t : workers)
    t.join();

  if (added && firstNewNs.load() != INT64_MAX)
    std::printf("moe-live: add -> first call served by the new layers: %.3f s\n",
                (firstNewNs.load() - addStart - checkNs) * 1e-9);
  std::printf("moe-live: calls: %ld started, %ld returned (%ld before the "
              "add); %ld on the old version (%ld returned after the swap), "
              "%ld on the new; %ld failed, %ld wrong output\n",
              started.load(), completed.load(), callsBefore, onOld.load(),
              oldAfterSwap.load(), onNew.load(), failures.load(),
              wrong.load());
  if (!firstFailure.empty())
    std::printf("moe-live: first failure: %s\n", firstFailure.c_str());
  int passed = 0, failed = 0;
  auto check = [&](bool ok, const std::string &what) {
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
    (ok ? passed : failed)++;
  };
  check(failures.load() == 0, "no call failed");
  check(started.load() == completed.load(), "no call lost");
  if (opt.checkOutputs)
    check(wrong.load() == 0,
          "every call returned the output of the version it ran on");
  else
    std::printf("SKIP every call returned the output of the version it ran "
                "on (--no-output-check)\n");
  check(callsBefore > 0, "calls ran before the add");
  if (added)
    check(onNew.load() > 0, "calls ran on the new layers after the swap");
  else
    check(onNew.load() == 0 && onOld.load() == completed.load(),
          "the old model served every call after the failed add");
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : added ? 0 : 3;
}
