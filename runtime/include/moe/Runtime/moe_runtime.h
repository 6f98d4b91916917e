/*===- moe_runtime.h - C API of the moe-mlir runtime --------------*- C -*-===*
 *
 * Every function returns 0 on success; on failure it returns non-zero and
 * moe_last_error() gives a one-line message (per thread).
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_MOE_RUNTIME_H
#define MOE_RUNTIME_MOE_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_artifact moe_artifact;

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

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_MOE_RUNTIME_H */
