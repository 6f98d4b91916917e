//===- CApi.cpp - C API of the moe-mlir runtime -----------------*- C++ -*-===//

#include "moe/Runtime/moe_runtime.h"
#include "moe/Runtime/CudaRuntime.h"
#include "moe/Runtime/Runtime.h"

#include <string>

using namespace moe::rt;

struct moe_artifact {
  std::shared_ptr<Artifact> impl;
};

struct moe_resident {
  std::shared_ptr<Artifact> artifact; // kept alive while this is
  std::shared_ptr<ResidentInputs> impl;
};

static thread_local std::string lastError;

static int setError(const std::string &msg) {
  lastError = msg;
  return 1;
}

static bool toView(const moe_tensor &t, TensorView &v, const char *what, int i,
                   bool allowEmpty = false) {
  if (allowEmpty && !t.data && t.rank == 0) {
    v = TensorView{};
    return true;
  }
  if (t.dtype < MOE_F32 || t.dtype > MOE_I64 || t.rank < 0 ||
      (t.rank > 0 && !t.shape)) {
    setError(std::string(what) + " #" + std::to_string(i) +
             " has an invalid dtype or rank");
    return false;
  }
  v.data = t.data;
  v.dtype = static_cast<DType>(t.dtype);
  v.shape.assign(t.shape, t.shape + t.rank);
  return true;
}

extern "C" {
const char *moe_last_error(void) { return lastError.c_str(); }

int moe_artifact_load(const char *dir, moe_artifact **out) {
  if (!dir || !out)
    return setError("moe_artifact_load: null argument");
  auto r = Artifact::load(dir);
  if (!r)
    return setError(r.message());
  *out = new moe_artifact{r.value()};
  return 0;
}

void moe_artifact_free(moe_artifact *a) { delete a; }

int moe_artifact_num_entries(const moe_artifact *a) {
  return a ? static_cast<int>(a->impl->entries().size()) : 0;
}

const char *moe_artifact_entry_name(const moe_artifact *a, int i) {
  if (!a || i < 0 || i >= moe_artifact_num_entries(a))
    return nullptr;
  return a->impl->entries()[i].name.c_str();
}

static int runWith(const moe_artifact *a, const char *entry,
                   const moe_tensor *inputs, int numInputs,
                   moe_tensor *outputs, int numOutputs, int threads,
                   const moe_resident *resident) {
  if (!a || !entry || (numInputs && !inputs) || (numOutputs && !outputs) ||
      numInputs < 0 || numOutputs < 0)
    return setError("moe_artifact_run: null argument or negative count");
  if (threads < 1)
    return setError("moe_artifact_run_threads: threads must be at least 1, "
                    "got " + std::to_string(threads));
  std::vector<TensorView> in(numInputs), out(numOutputs);
  for (int i = 0; i < numInputs; ++i)
    if (!toView(inputs[i], in[i], "input", i))
      return 1;
  for (int i = 0; i < numOutputs; ++i)
    if (!toView(outputs[i], out[i], "output", i))
      return 1;
  // runThreaded is run() for one thread.
  Status s = a->impl->runThreaded(
      entry, in, out, static_cast<unsigned>(threads), /*minTokens=*/16,
      /*parts=*/nullptr, Artifact::ThreadSplit::Auto,
      resident ? resident->impl.get() : nullptr);
  return s ? 0 : setError(s.message());
}

int moe_artifact_run_threads(const moe_artifact *a, const char *entry,
                             const moe_tensor *inputs, int numInputs,
                             moe_tensor *outputs, int numOutputs,
                             int threads) {
  return runWith(a, entry, inputs, numInputs, outputs, numOutputs, threads,
                 nullptr);
}

int moe_artifact_run_resident(const moe_artifact *a, const char *entry,
                              const moe_tensor *inputs, int numInputs,
                              moe_tensor *outputs, int numOutputs,
                              const moe_resident *resident) {
  return runWith(a, entry, inputs, numInputs, outputs, numOutputs, 1,
                 resident);
}

int moe_artifact_make_resident(const moe_artifact *a, const char *entry,
                               const moe_tensor *inputs, int numInputs,
                               moe_resident **out) {
  if (!a || !entry || (numInputs && !inputs) || numInputs < 0 || !out)
    return setError("moe_artifact_make_resident: null argument or negative "
                    "count");
  std::vector<TensorView> in(numInputs);
  for (int i = 0; i < numInputs; ++i)
    if (!toView(inputs[i], in[i], "input", i, /*allowEmpty=*/true))
      return 1;
  auto r = a->impl->makeResident(entry, in);
  if (!r)
    return setError(r.message());
  *out = new moe_resident{a->impl, r.value()};
  return 0;
}

void moe_resident_free(moe_resident *r) { delete r; }

size_t moe_resident_bytes(const moe_resident *r) {
  return r ? r->impl->bytes() : 0;
}

int moe_artifact_use_cuda_graphs(moe_artifact *a, int on) {
  if (!a)
    return setError("moe_artifact_use_cuda_graphs: null artifact");
  if (on && a->impl->target() != "cuda")
    return setError("moe_artifact_use_cuda_graphs: the artifact targets " +
                    a->impl->target() + ", not cuda");
  a->impl->useCudaGraphs(on != 0);
  return 0;
}

int moe_artifact_cuda_graph_stats(const moe_artifact *a, uint64_t *captured,
                                  uint64_t *replayed, uint64_t *ineligible) {
  if (!a)
    return setError("moe_artifact_cuda_graph_stats: null artifact");
  Artifact::CudaGraphStats s = a->impl->cudaGraphStats();
  if (captured)
    *captured = s.captured;
  if (replayed)
    *replayed = s.replayed;
  if (ineligible)
    *ineligible = s.ineligible;
  return 0;
}

int moe_artifact_cuda_graph_info(const moe_artifact *a,
                                 moe_cuda_graph_info *out) {
  if (!a || !out)
    return setError("moe_artifact_cuda_graph_info: null argument");
  static thread_local std::string lastIneligible;
  Artifact::CudaGraphStats s = a->impl->cudaGraphStats();
  lastIneligible = s.lastIneligible;
  *out = moe_cuda_graph_info{
      s.captured, s.replayed, s.ineligible,          s.retried,
      s.graphs,   s.bytes,    lastIneligible.c_str()};
  return 0;
}

int moe_cuda_status(void) {
  Status s = cuda::status();
  return s ? 0 : setError(s.message());
}

int moe_cuda_alloc(size_t bytes, void **out) {
  if (!out)
    return setError("moe_cuda_alloc: null argument");
  auto m = cuda::allocManaged(bytes);
  if (!m)
    return setError(m.message());
  *out = m.value();
  return 0;
}

void moe_cuda_free(void *p) { cuda::freeManaged(p); }

/// moe_cuda_copy_to_device / _to_host: the device side must be memory from
/// moe_cuda_alloc.
static int cudaCopy(const char *fn, void *dst, const void *src, size_t bytes,
                    bool toDevice) {
  if ((!dst || !src) && bytes)
    return setError(std::string(fn) + ": null pointer");
  if (bytes && !cuda::isDeviceMemory(toDevice ? dst : src))
    return setError(std::string(fn) + ": the " +
                    (toDevice ? "destination" : "source") +
                    " is not memory from moe_cuda_alloc");
  Status s = toDevice ? cuda::copyToDevice(dst, src, bytes)
                      : cuda::copyToHost(dst, src, bytes);
  return s ? 0 : setError(s.message());
}

int moe_cuda_copy_to_device(void *dst, const void *src, size_t bytes) {
  return cudaCopy("moe_cuda_copy_to_device", dst, src, bytes, true);
}

int moe_cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
  return cudaCopy("moe_cuda_copy_to_host", dst, src, bytes, false);
}

int moe_artifact_run(const moe_artifact *a, const char *entry,
                     const moe_tensor *inputs, int numInputs,
                     moe_tensor *outputs, int numOutputs) {
  return moe_artifact_run_threads(a, entry, inputs, numInputs, outputs,
                                  numOutputs, 1);
}
}
