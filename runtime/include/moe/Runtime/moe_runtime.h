/*===- moe_runtime.h - C API of the moe-mlir runtime --------------*- C -*-===*
 *
 * Every function returns 0 on success; on failure it returns non-zero and
 * moe_last_error() gives a one-line message (per thread).
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_MOE_RUNTIME_H
#define MOE_RUNTIME_MOE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_artifact moe_artifact;
typedef struct moe_resident moe_resident;

enum moe_dtype { MOE_F32 = 0, MOE_F16 = 1, MOE_BF16 = 2, MOE_I32 = 3, MOE_I64 = 4 };

typedef struct {
  void *data;
  int32_t dtype; /* enum moe_dtype */
  int32_t rank;
  const int64_t *shape;
} moe_tensor;

const char *moe_last_error(void);
int moe_artifact_load(const char *dir, moe_artifact **out);
void moe_artifact_free(moe_artifact *a);
int moe_artifact_num_entries(const moe_artifact *a);
const char *moe_artifact_entry_name(const moe_artifact *a, int i);
int moe_artifact_run(const moe_artifact *a, const char *entry,
                     const moe_tensor *inputs, int num_inputs,
                     moe_tensor *outputs, int num_outputs);
/* moe_artifact_run on up to `threads` threads (cpu artifacts): ranges of the
 * tokens on their own threads where the entry's tokens are independent and
 * there are at least 128 per thread, else one call whose parallel loops (the
 * GEMMs' column groups) use the threads: Artifact::runThreaded with
 * ThreadSplit::Auto. */
int moe_artifact_run_threads(const moe_artifact *a, const char *entry,
                             const moe_tensor *inputs, int num_inputs,
                             moe_tensor *outputs, int num_outputs,
                             int threads);

/* Serving on a GPU (cuda artifacts). A serving loop keeps the weights
 * resident and its activations in device memory, so that a call copies
 * nothing between host and device; with CUDA graphs on, a call with the same
 * buffers as an earlier one replays that call's launches as one graph. */

/* 0 when a CUDA device is usable; else non-zero, moe_last_error() says why
 * ("no CUDA device: libcuda.so.1 not found", ...). */
int moe_cuda_status(void);
/* Device memory (managed, readable by the host too) of `bytes`: inputs in it
 * are read in place and outputs written there on the device. Free it with
 * moe_cuda_free. */
int moe_cuda_alloc(size_t bytes, void **out);
void moe_cuda_free(void *p);
/* Driver copies between host memory and memory from moe_cuda_alloc. */
int moe_cuda_copy_to_device(void *dst, const void *src, size_t bytes);
int moe_cuda_copy_to_host(void *dst, const void *src, size_t bytes);

/* Uploads the inputs of `entry` without the token dimension (the weights)
 * once (Artifact::makeResident; on the cpu nothing is uploaded but derived
 * weights are computed once). `inputs` as for moe_artifact_run; the token
 * inputs may have NULL data and rank 0. The host data must not change
 * while the result is in use: a run given other host data for a resident
 * input is an error. It keeps the artifact alive. */
int moe_artifact_make_resident(const moe_artifact *a, const char *entry,
                               const moe_tensor *inputs, int num_inputs,
                               moe_resident **out);
void moe_resident_free(moe_resident *r);
/* Device bytes a moe_resident holds. */
size_t moe_resident_bytes(const moe_resident *r);
/* moe_artifact_run reading the resident inputs from `resident` (made for
 * this artifact and entry; NULL: none). */
int moe_artifact_run_resident(const moe_artifact *a, const char *entry,
                              const moe_tensor *inputs, int num_inputs,
                              moe_tensor *outputs, int num_outputs,
                              const moe_resident *resident);
/* CUDA graphs on (1) or off (0) for the artifact's runs
 * (Artifact::useCudaGraphs): a run whose activations are in moe_cuda_alloc
 * memory and whose weights are resident is captured once per token count
 * and buffers and replayed after; others run without and are counted. */
int moe_artifact_use_cuda_graphs(moe_artifact *a, int on);
/* The counts of Artifact::cudaGraphStats (any pointer may be NULL). */
int moe_artifact_cuda_graph_stats(const moe_artifact *a, uint64_t *captured,
                                  uint64_t *replayed, uint64_t *ineligible);
/* All of Artifact::cudaGraphStats. `last_ineligible` is why the last run
 * that could not use a graph ran without one ("" if none did); it stays
 * valid until the thread's next call to this function. */
typedef struct {
  uint64_t captured, replayed, ineligible;
  /* Captures that failed while graphs were kept and were tried again after
   * dropping them (out of device memory). */
  uint64_t retried;
  /* Graphs kept now, and the device memory they hold. */
  size_t graphs, bytes;
  const char *last_ineligible;
} moe_cuda_graph_info;
int moe_artifact_cuda_graph_info(const moe_artifact *a,
                                 moe_cuda_graph_info *out);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_MOE_RUNTIME_H */
