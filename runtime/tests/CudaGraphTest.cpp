//===- CudaGraphTest.cpp - CUDA graph capture and replay --------*- C++ -*-===//
//
//   moe-cuda-graph-test <cuda-artifact>
//
// Against the fake CUDA driver (MOE_LIBCUDA=libmoe-fake-cuda.so, where no
// kernel runs but copies do): the runtime's capture API (cuda::beginCapture,
// endCapture, launch) and Artifact::useCudaGraphs on the artifact's first
// entry. A captured copy runs only when the graph is launched, and reads its
// source then; blocks allocated during the capture stay the graph's until
// it is destroyed; a wait during the capture fails the capture instead of
// giving a graph that lacks work; a call is captured once per token count
// and set of buffers and replayed after, host-memory buffers run without a
// graph and are counted with the reason; at most kMaxCudaGraphs are kept.
// Then the artifact is loaded again twice, each after the last load is gone,
// and run at 512 tokens (kernels with more than 48 KiB of shared memory in
// the Mixtral example): the runtime must not trust what it knew of the
// unloaded modules' kernels. --byte-limit (with MOE_CUDA_GRAPHS_MB=0): only
// the newest graph is kept. --out-of-memory: a capture that runs out of
// device memory while a graph is kept is tried again after dropping it; with
// none kept it is an error.
// Ends with "N passed, N failed".
//
//===----------------------------------------------------------------------===//

#include "TestCheck.h"

#include "moe/Runtime/CudaRuntime.h"
#include "moe/Runtime/Runtime.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace moe::rt;
using namespace moe::rt::test;

// The mgpu* ABI the artifacts' host code calls (CudaRuntime.cpp).
extern "C" void *mgpuMemAlloc(uint64_t bytes, void *stream, bool hostShared);
extern "C" void mgpuMemFree(void *ptr, void *stream);
extern "C" void *mgpuStreamCreate();

namespace {
void *deviceBuffer(size_t bytes) {
  auto m = cuda::allocManaged(bytes);
  if (!m) {
    std::fprintf(stderr, "moe-cuda-graph-test: %s\n", m.message().c_str());
    std::exit(1);
  }
  return m.value();
}

/// The buffers of one call of `spec` at `tokens`: zeroed inputs in device
/// memory, outputs in device memory or host memory; freed with the object.
/// A graph is keyed by buffer addresses, so a check that wants a new graph
/// keeps the earlier buffers alive.
struct CallBuffers {
  std::vector<TensorView> in, out;

  CallBuffers(const EntrySpec &spec, int64_t tokens,
              bool deviceOutputs = true) {
    for (const TensorSpec &a : spec.args) {
      size_t bytes = size_t(a.numElements(tokens)) * dtypeSize(a.dtype);
      void *p = owned.emplace_back(deviceBuffer(bytes));
      std::memset(p, 0, bytes);
      in.push_back(TensorView{p, a.dtype, shapeAt(a, tokens)});
    }
    for (const TensorSpec &r : spec.results) {
      size_t bytes = size_t(r.numElements(tokens)) * dtypeSize(r.dtype);
      void *p = deviceOutputs ? owned.emplace_back(deviceBuffer(bytes))
                              : host.emplace_back(bytes).data();
      out.push_back(TensorView{p, r.dtype, shapeAt(r, tokens)});
    }
  }
  CallBuffers(const CallBuffers &) = delete;
  CallBuffers &operator=(const CallBuffers &) = delete;
  ~CallBuffers() {
    for (void *p : owned)
      cuda::freeManaged(p);
  }

  Status run(const Artifact &art, const EntrySpec &spec) {
    return art.run(spec.name, in, out);
  }

private:
  static std::vector<int64_t> shapeAt(const TensorSpec &t, int64_t tokens) {
    std::vector<int64_t> shape = t.shape;
    for (int64_t &d : shape)
      if (d < 0)
        d = tokens;
    return shape;
  }
  std::vector<void *> owned;
  std::vector<std::vector<unsigned char>> host;
};

/// The capture API on copies and allocations alone.
void captureApi() {
  const size_t n = 256;
  auto *src = static_cast<unsigned char *>(deviceBuffer(n));
  auto *dst = static_cast<unsigned char *>(deviceBuffer(n));
  std::memset(src, 1, n);
  std::memset(dst, 0, n);

  Status b = cuda::beginCapture();
  expect(bool(b), "capture begins", b ? "" : b.message());
  expect(!cuda::beginCapture() &&
             contains(cuda::beginCapture().message(), "already"),
         "a second capture on the thread is an error");
  Status q = cuda::copyOnDeviceQueued(dst, src, n);
  expect(bool(q) && dst[0] == 0, "a copy queued while capturing does not run");
  void *stream = mgpuStreamCreate();
  void *block = mgpuMemAlloc(1000, stream, true);
  mgpuMemFree(block, stream);
  expect(cuda::isDeviceMemory(block),
         "a block freed during the capture stays allocated");
  auto g = cuda::endCapture();
  expect(bool(g), "capture ends", g ? "" : g.message());
  if (!g)
    return;
  std::shared_ptr<cuda::Graph> graph = g.value();
  expect(graph->bytes() >= 1000, "the graph holds the block's bytes",
         std::to_string(graph->bytes()));
  expect(dst[0] == 0, "nothing ran before the graph's launch");
  Status l = cuda::launch(*graph);
  expect(bool(l) && dst[0] == 1 && dst[n - 1] == 1,
         "the launch runs the copy", l ? "" : l.message());
  std::memset(src, 7, n);
  l = cuda::launch(*graph);
  expect(bool(l) && dst[0] == 7 && dst[n - 1] == 7,
         "a replay reads the source at its time");
  graph.reset();
  g = Status::error("dropped");
  expect(!cuda::isDeviceMemory(block),
         "destroying the graph frees the block");

  // A host wait inside the capture: the driver invalidates the capture, and
  // its end is an error, not a graph without the work before the wait.
  expect(bool(cuda::beginCapture()), "a second capture begins");
  void *lost = mgpuMemAlloc(64, stream, true);
  (void)cuda::synchronize();
  auto bad = cuda::endCapture();
  expect(!bad && contains(bad.message(), "CAPTURE"),
         "a wait during the capture fails it",
         bad ? "no error" : bad.message());
  expect(!cuda::isDeviceMemory(lost),
         "the failed capture's blocks are freed");
  auto none = cuda::endCapture();
  expect(!none && contains(none.message(), "not capturing"),
         "ending a capture that was not begun is an error");
  cuda::freeManaged(src);
  cuda::freeManaged(dst);
}

/// Artifact::useCudaGraphs on `entry`.
void artifactGraphs(const Artifact &art, const EntrySpec &spec) {
  auto &a = const_cast<Artifact &>(art);
  a.useCudaGraphs(true);
  CallBuffers first(spec, 5);
  Status r1 = first.run(art, spec);
  Status r2 = first.run(art, spec);
  Artifact::CudaGraphStats s = art.cudaGraphStats();
  expect(r1 && r2 && s.captured == 1 && s.replayed == 1 && s.graphs == 1,
         "two calls with the same buffers: captured once, replayed once",
         !r1 ? r1.message() : !r2 ? r2.message() : "");
  expect(s.bytes > 0, "the graph holds the call's intermediates",
         std::to_string(s.bytes) + " bytes");

  CallBuffers second(spec, 9);
  (void)second.run(art, spec);
  (void)second.run(art, spec);
  s = art.cudaGraphStats();
  expect(s.captured == 2 && s.replayed == 2 && s.graphs == 2,
         "another token count and buffers: a second graph");

  Status h = CallBuffers(spec, 5, /*deviceOutputs=*/false).run(art, spec);
  s = art.cudaGraphStats();
  expect(h && s.ineligible == 1 && contains(s.lastIneligible, "host memory") &&
             s.captured == 2,
         "outputs in host memory: run without a graph, counted with why",
         s.lastIneligible);

  // More sets of buffers than are kept: the least recently used go.
  std::vector<std::unique_ptr<CallBuffers>> more;
  for (size_t i = 0; i < Artifact::kMaxCudaGraphs; ++i)
    (void)more.emplace_back(std::make_unique<CallBuffers>(spec, 3))
        ->run(art, spec);
  s = art.cudaGraphStats();
  expect(s.graphs == Artifact::kMaxCudaGraphs &&
             s.captured == 2 + Artifact::kMaxCudaGraphs,
         "at most kMaxCudaGraphs kept", std::to_string(s.graphs));
  (void)first.run(art, spec); // the oldest: dropped, captured again
  s = art.cudaGraphStats();
  expect(s.captured == 3 + Artifact::kMaxCudaGraphs,
         "the least recently used graph was the one dropped");

  a.useCudaGraphs(false);
  s = art.cudaGraphStats();
  expect(s.graphs == 0 && s.bytes == 0, "turning graphs off drops them");
  Status plain = first.run(art, spec);
  expect(plain && art.cudaGraphStats().captured == s.captured,
         "with graphs off a call captures nothing");
}

/// The artifact loaded anew after the first load is gone (its modules
/// unloaded; the driver may give the new module's kernels the old handles,
/// as the fake driver does, with their attributes reset): its calls must
/// raise the kernels' shared memory limits again, with and without graphs.
/// `tokens` should take kernels with more than 48 KiB of dynamic shared
/// memory (the Mixtral example's BM = 128 set from 512 tokens).
void reload(const std::string &path, int64_t tokens) {
  for (int round = 1; round <= 2; ++round) {
    auto loaded = Artifact::load(path);
    if (!loaded) {
      expect(false, "the artifact loads again", loaded.message());
      return;
    }
    std::shared_ptr<Artifact> art = loaded.value();
    const EntrySpec &spec = art->entries()[0];
    CallBuffers call(spec, tokens);
    Status plain = call.run(*art, spec);
    art->useCudaGraphs(true);
    Status graphed = call.run(*art, spec);
    Status replayed = call.run(*art, spec);
    Artifact::CudaGraphStats s = art->cudaGraphStats();
    expect(plain && graphed && replayed && s.captured == 1 && s.replayed == 1,
           "load " + std::to_string(round) + " after the first was dropped: " +
               "T = " + std::to_string(tokens) +
               " runs, and replays as a graph",
           !plain      ? plain.message()
           : !graphed  ? graphed.message()
           : !replayed ? replayed.message()
                       : "");
  }
}
} // namespace

/// With MOE_CUDA_GRAPHS_MB=0: every graph holds more than the limit, so
/// only the newest is kept.
void byteLimit(const Artifact &art, const EntrySpec &spec) {
  auto &a = const_cast<Artifact &>(art);
  a.useCudaGraphs(true);
  std::vector<std::unique_ptr<CallBuffers>> calls;
  for (int k = 0; k < 3; ++k)
    (void)calls.emplace_back(std::make_unique<CallBuffers>(spec, 4))
        ->run(art, spec);
  Artifact::CudaGraphStats s = art.cudaGraphStats();
  expect(s.captured == 3 && s.graphs == 1,
         "over the byte limit only the newest graph is kept",
         std::to_string(s.graphs) + " kept, limit " +
             std::to_string(Artifact::cudaGraphByteLimit()) + " bytes");
  (void)calls[2]->run(art, spec);
  (void)calls[0]->run(art, spec);
  s = art.cudaGraphStats();
  expect(s.replayed == 1 && s.captured == 4,
         "the newest replays, an older one is captured again");
  a.useCudaGraphs(false);
}

/// Against the fake driver: a capture that runs out of device memory while
/// another graph holds some is tried again after dropping the graphs kept.
/// The limit is set (MOE_FAKE_CUDA_MEM_LIMIT, read by the fake at each
/// allocation) to the bytes in use plus half of what the first graph holds:
/// the second capture, of the same size, fits only once the first graph's
/// memory is freed.
void outOfMemory(const Artifact &art, const EntrySpec &spec) {
  const char *lib = std::getenv("MOE_LIBCUDA");
  void *fake = lib ? dlopen(lib, RTLD_NOW | RTLD_NOLOAD) : nullptr;
  auto inUse = fake ? reinterpret_cast<size_t (*)()>(
                          dlsym(fake, "moe_fake_cuda_bytes_in_use"))
                    : nullptr;
  if (!inUse) {
    expect(false, "the fake CUDA driver is loaded (MOE_LIBCUDA)");
    return;
  }
  auto &a = const_cast<Artifact &>(art);
  a.useCudaGraphs(true);
  CallBuffers first(spec, 64), second(spec, 64);
  Status r1 = first.run(art, spec);
  size_t held = art.cudaGraphStats().bytes;
  cuda::releaseCachedMemory();
  std::string limit = std::to_string(inUse() + held / 2);
  setenv("MOE_FAKE_CUDA_MEM_LIMIT", limit.c_str(), 1);
  Status r2 = second.run(art, spec);
  Artifact::CudaGraphStats s = art.cudaGraphStats();
  expect(r1 && r2 && s.captured == 2 && s.retried == 1 && s.graphs == 1,
         "out of memory while capturing with a graph kept: the graphs are "
         "dropped and the capture tried again",
         (!r1   ? r1.message() + "; "
          : !r2 ? r2.message() + "; "
                : "") +
             std::to_string(s.captured) + " captured, " +
             std::to_string(s.retried) + " retried, limit " + limit + " bytes");
  // With no graph left to drop, running out of memory is an error.
  a.useCudaGraphs(false);
  cuda::releaseCachedMemory();
  setenv("MOE_FAKE_CUDA_MEM_LIMIT", std::to_string(inUse()).c_str(), 1);
  a.useCudaGraphs(true);
  Status r4 = first.run(art, spec);
  expect(failsWith(r4, "CUDA_ERROR_OUT_OF_MEMORY") &&
             art.cudaGraphStats().retried == 1,
         "out of memory with no graph kept: an error, not tried again",
         r4 ? "no error" : r4.message());
  unsetenv("MOE_FAKE_CUDA_MEM_LIMIT");
  a.useCudaGraphs(false);
}

int main(int argc, char **argv) {
  std::string mode = argc == 3 ? argv[2] : "";
  if ((argc != 2 && argc != 3) ||
      (argc == 3 && mode != "--byte-limit" && mode != "--out-of-memory")) {
    std::fprintf(stderr, "usage: moe-cuda-graph-test <cuda-artifact> "
                         "[--byte-limit | --out-of-memory]\n");
    return 2;
  }
  auto loaded = Artifact::load(argv[1]);
  if (!loaded) {
    std::fprintf(stderr, "moe-cuda-graph-test: error: %s\n",
                 loaded.message().c_str());
    return 1;
  }
  // Moved out, so that dropping `art` unloads the artifact.
  std::shared_ptr<Artifact> art = std::move(loaded.value());
  if (art->target() != "cuda" || art->entries().empty()) {
    std::fprintf(stderr, "moe-cuda-graph-test: error: needs a cuda artifact\n");
    return 1;
  }
  if (mode == "--byte-limit") {
    byteLimit(*art, art->entries()[0]);
  } else if (mode == "--out-of-memory") {
    outOfMemory(*art, art->entries()[0]);
  } else {
    captureApi();
    artifactGraphs(*art, art->entries()[0]);
    art.reset();
    reload(argv[1], /*tokens=*/512);
  }
  return testSummary();
}
