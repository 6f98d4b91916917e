//===- CApi.cpp - C API of the moe-mlir runtime -----------------*- C++ -*-===//

#include "moe/Runtime/moe_runtime.h"
#include "moe/Runtime/Runtime.h"

#include <string>

using namespace moe::rt;

struct moe_artifact {
  std::shared_ptr<Artifact> impl;
};

static thread_local std::string lastError;

static int setError(const std::string &msg) {
  lastError = msg;
  return 1;
}

static bool toView(const moe_tensor &t, TensorView &v, const char *what, int i) {
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

int moe_artifact_run_threads(const moe_artifact *a, const char *entry,
                             const moe_tensor *inputs, int numInputs,
                             moe_tensor *outputs, int numOutputs,
                             int threads) {
  if (!a || !entry || (numInputs && !inputs) || (numOutputs && !outputs))
    return setError("moe_artifact_run: null argument");
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
  Status s = a->impl->runThreaded(entry, in, out, static_cast<unsigned>(threads));
  return s ? 0 : setError(s.message());
}

int moe_artifact_run(const moe_artifact *a, const char *entry,
                     const moe_tensor *inputs, int numInputs,
                     moe_tensor *outputs, int numOutputs) {
  return moe_artifact_run_threads(a, entry, inputs, numInputs, outputs,
                                  numOutputs, 1);
}
}
