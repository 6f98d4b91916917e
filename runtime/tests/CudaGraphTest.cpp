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
// --byte-limit (with MOE_CUDA_GRAPHS_MB=0): only the newest graph is kept.
// Ends with "N passed, N failed".
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CudaRuntime.h"
#include "moe/Runtime/Runtime.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace moe::rt;

// The mgpu* ABI the artifacts' host code calls (CudaRuntime.cpp).
extern "C" void *mgpuMemAlloc(uint64_t bytes, void *stream, bool hostShared);
extern "C" void mgpuMemFree(void *ptr, void *stream);
extern "C" void *mgpuStreamCreate();

namespace {
int passed = 0, failed = 0;

void expect(bool ok, const std::string &what, const std::string &detail = "") {
  (ok ? passed : failed)++;
  std::printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what.c_str(),
              detail.empty() ? "" : ": ", detail.c_str());
}

bool contains(const std::string &s, const char *text) {
  return s.find(text) != std::string::npos;
}

void *deviceBuffer(size_t bytes) {
  auto m = cuda::allocManaged(bytes);
  if (!m) {
    std::fprintf(stderr, "moe-cuda-graph-test: %s\n", m.message().c_str());
    std::exit(1);
  }
  return m.value();
}

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
  auto bytesOf = [](const TensorSpec &t, int64_t tokens) {
    return size_t(t.numElements(tokens)) * dtypeSize(t.dtype);
  };
  auto shapeAt = [](const TensorSpec &t, int64_t tokens) {
    std::vector<int64_t> shape = t.shape;
    for (int64_t &d : shape)
      if (d < 0)
        d = tokens;
    return shape;
  };
  std::vector<void *> owned;
  auto views = [&](int64_t tokens, bool deviceOutputs,
                   std::vector<TensorView> &in, std::vector<TensorView> &out,
                   std::vector<std::vector<unsigned char>> &host) {
    in.clear();
    out.clear();
    for (const TensorSpec &a : spec.args) {
      void *p = deviceBuffer(bytesOf(a, tokens));
      owned.push_back(p);
      std::memset(p, 0, bytesOf(a, tokens));
      in.push_back(TensorView{p, a.dtype, shapeAt(a, tokens)});
    }
    for (const TensorSpec &r : spec.results) {
      void *p;
      if (deviceOutputs) {
        owned.push_back(p = deviceBuffer(bytesOf(r, tokens)));
      } else {
        host.emplace_back(bytesOf(r, tokens));
        p = host.back().data();
      }
      out.push_back(TensorView{p, r.dtype, shapeAt(r, tokens)});
    }
  };
  auto &a = const_cast<Artifact &>(art);
  a.useCudaGraphs(true);
  std::vector<TensorView> in, out;
  std::vector<std::vector<unsigned char>> host;
  views(5, true, in, out, host);
  Status r1 = art.run(spec.name, in, out);
  Status r2 = art.run(spec.name, in, out);
  Artifact::CudaGraphStats s = art.cudaGraphStats();
  expect(r1 && r2 && s.captured == 1 && s.replayed == 1 && s.graphs == 1,
         "two calls with the same buffers: captured once, replayed once",
         !r1 ? r1.message() : !r2 ? r2.message() : "");
  expect(s.bytes > 0, "the graph holds the call's intermediates",
         std::to_string(s.bytes) + " bytes");

  std::vector<TensorView> in2, out2;
  views(9, true, in2, out2, host);
  (void)art.run(spec.name, in2, out2);
  (void)art.run(spec.name, in2, out2);
  s = art.cudaGraphStats();
  expect(s.captured == 2 && s.replayed == 2 && s.graphs == 2,
         "another token count and buffers: a second graph");

  std::vector<TensorView> in3, out3;
  views(5, false, in3, out3, host);
  Status h = art.run(spec.name, in3, out3);
  s = art.cudaGraphStats();
  expect(h && s.ineligible == 1 && contains(s.lastIneligible, "host memory") &&
             s.captured == 2,
         "outputs in host memory: run without a graph, counted with why",
         s.lastIneligible);

  // More sets of buffers than are kept: the least recently used go.
  for (size_t i = 0; i < Artifact::kMaxCudaGraphs; ++i) {
    std::vector<TensorView> ii, oo;
    views(3, true, ii, oo, host);
    (void)art.run(spec.name, ii, oo);
  }
  s = art.cudaGraphStats();
  expect(s.graphs == Artifact::kMaxCudaGraphs &&
             s.captured == 2 + Artifact::kMaxCudaGraphs,
         "at most kMaxCudaGraphs kept", std::to_string(s.graphs));
  (void)art.run(spec.name, in, out); // the oldest: dropped, captured again
  s = art.cudaGraphStats();
  expect(s.captured == 3 + Artifact::kMaxCudaGraphs,
         "the least recently used graph was the one dropped");

  a.useCudaGraphs(false);
  s = art.cudaGraphStats();
  expect(s.graphs == 0 && s.bytes == 0, "turning graphs off drops them");
  Status plain = art.run(spec.name, in, out);
  expect(plain && art.cudaGraphStats().captured == s.captured,
         "with graphs off a call captures nothing");
  for (void *p : owned)
    cuda::freeManaged(p);
}
} // namespace

/// With MOE_CUDA_GRAPHS_MB=0: every graph holds more than the limit, so
/// only the newest is kept.
void byteLimit(const Artifact &art, const EntrySpec &spec) {
  auto &a = const_cast<Artifact &>(art);
  a.useCudaGraphs(true);
  std::vector<void *> owned;
  std::vector<std::vector<TensorView>> ins, outs;
  for (int k = 0; k < 3; ++k) {
    std::vector<TensorView> in, out;
    for (const TensorSpec &t : spec.args) {
      std::vector<int64_t> shape = t.shape;
      for (int64_t &d : shape)
        d = d < 0 ? 4 : d;
      size_t bytes = t.numElements(4) * dtypeSize(t.dtype);
      owned.push_back(deviceBuffer(bytes));
      std::memset(owned.back(), 0, bytes);
      in.push_back(TensorView{owned.back(), t.dtype, shape});
    }
    for (const TensorSpec &t : spec.results) {
      std::vector<int64_t> shape = t.shape;
      for (int64_t &d : shape)
        d = d < 0 ? 4 : d;
      owned.push_back(deviceBuffer(t.numElements(4) * dtypeSize(t.dtype)));
      out.push_back(TensorView{owned.back(), t.dtype, shape});
    }
    (void)art.run(spec.name, in, out);
    ins.push_back(in);
    outs.push_back(out);
  }
  Artifact::CudaGraphStats s = art.cudaGraphStats();
  expect(s.captured == 3 && s.graphs == 1,
         "over the byte limit only the newest graph is kept",
         std::to_string(s.graphs) + " kept, limit " +
             std::to_string(Artifact::cudaGraphByteLimit()) + " bytes");
  (void)art.run(spec.name, ins[2], outs[2]);
  (void)art.run(spec.name, ins[0], outs[0]);
  s = art.cudaGraphStats();
  expect(s.replayed == 1 && s.captured == 4,
         "the newest replays, an older one is captured again");
  a.useCudaGraphs(false);
  for (void *p : owned)
    cuda::freeManaged(p);
}

int main(int argc, char **argv) {
  bool limitOnly = argc == 3 && std::string(argv[2]) == "--byte-limit";
  if (argc != 2 && !limitOnly) {
    std::fprintf(stderr,
                 "usage: moe-cuda-graph-test <cuda-artifact> [--byte-limit]\n");
    return 2;
  }
  auto loaded = Artifact::load(argv[1]);
  if (!loaded) {
    std::fprintf(stderr, "moe-cuda-graph-test: error: %s\n",
                 loaded.message().c_str());
    return 1;
  }
  std::shared_ptr<Artifact> art = loaded.value();
  if (art->target() != "cuda" || art->entries().empty()) {
    std::fprintf(stderr, "moe-cuda-graph-test: error: needs a cuda artifact\n");
    return 1;
  }
  if (limitOnly) {
    byteLimit(*art, art->entries()[0]);
  } else {
    captureApi();
    artifactGraphs(*art, art->entries()[0]);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
