//===- SwapTest.cpp - LayerSlot::replace under concurrent calls -*- C++ -*-===//
//
//   moe-swap-test <artifact-a> <artifact-b>
//
// Threads call the slot's layer in a loop while the main thread swaps the
// serving artifact back and forth. Every call must succeed and produce the
// output of one of the two artifacts (both compile the same layer, so the
// outputs must equal the single-threaded result bit for bit); no call may be
// lost or fail. Ends with "N passed, N failed".
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Runtime.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

using namespace moe::rt;

int main(int argc, char **argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: moe-swap-test <artifact-a> <artifact-b>\n");
    return 2;
  }
  auto a = Artifact::load(argv[1]), b = Artifact::load(argv[2]);
  if (!a || !b) {
    std::fprintf(stderr, "moe-swap-test: error: %s\n",
                 (!a ? a.message() : b.message()).c_str());
    return 1;
  }
  const EntrySpec spec = a.value()->entries()[0]; // a copy: A is unloaded later
  const int64_t tokens = 8;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-0.1f, 0.1f);
  // f32 layers only: inputs are plain float buffers.
  std::vector<std::vector<float>> data;
  std::vector<TensorView> in;
  for (const TensorSpec &t : spec.args) {
    if (t.dtype != DType::f32) {
      std::fprintf(stderr, "moe-swap-test: error: needs an f32 layer\n");
      return 1;
    }
    std::vector<int64_t> shape;
    for (int64_t d : t.shape)
      shape.push_back(d < 0 ? tokens : d);
    data.emplace_back(t.numElements(tokens));
    for (float &v : data.back())
      v = dist(rng);
    in.push_back({data.back().data(), DType::f32, shape});
  }
  std::vector<int64_t> outShape{tokens, spec.results[0].shape[1]};
  std::vector<float> expected(tokens * outShape[1]);
  std::vector<TensorView> out{{expected.data(), DType::f32, outShape}};
  if (Status s = a.value()->run(spec.name, in, out); !s) {
    std::fprintf(stderr, "moe-swap-test: error: %s\n", s.message().c_str());
    return 1;
  }

  // The slot holds the only reference to each freshly loaded artifact: a
  // replaced artifact is unloaded (dlclose) as soon as its last in-flight
  // call returns.
  LayerSlot slot(a.value());
  const char *dirs[2] = {argv[1], argv[2]};
  a = Status::error("released");
  b = Status::error("released");
  std::atomic<bool> stop{false};
  std::atomic<long> calls{0}, failures{0}, mismatches{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w)
    workers.emplace_back([&] {
      std::vector<float> y(expected.size());
      std::vector<TensorView> o{{y.data(), DType::f32, outShape}};
      while (!stop.load()) {
        std::fill(y.begin(), y.end(), std::nanf(""));
        Status s = slot.run(spec.name, in, o);
        ++calls;
        if (!s)
          ++failures;
        else if (std::memcmp(y.data(), expected.data(), y.size() * 4) != 0)
          ++mismatches;
      }
    });
  int swaps = 0;
  for (; swaps < 100; ++swaps) {
    auto next = Artifact::load(dirs[(swaps + 1) % 2]);
    if (!next) {
      std::fprintf(stderr, "moe-swap-test: error: %s\n", next.message().c_str());
      stop = true;
      break;
    }
    slot.replace(next.value());
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  stop = true;
  for (std::thread &t : workers)
    t.join();
  int passed = 0, failed = 0;
  auto report = [&](bool ok, const char *what) {
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    (ok ? passed : failed)++;
  };
  std::printf("%d swaps, %ld calls\n", swaps, calls.load());
  report(calls.load() > swaps, "calls ran while the layer was swapped");
  report(failures.load() == 0, "no call failed");
  report(mismatches.load() == 0, "every call returned the layer's output");
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
