/*===- CApiTest.c - the runtime's C API, from C --------------------------===*
 *
 *   moe-capi-test <artifact-dir> <entry> T H F E [seed]
 *
 * Runs a Mixtral-style moe.layer entry (inputs: input T x H, router E x H,
 * gate and up E x F x H, down E x H x F; one output T x H, all f32) through
 * the C API on the same seeded inputs: moe_artifact_run, then
 * moe_artifact_run_threads with 3 threads, then moe_artifact_run_resident
 * after moe_artifact_make_resident, each output poisoned with NaN first.
 * Prints the relative L2 difference between the first two (the threaded
 * call splits the tokens; their rows may take other register tiles, so the
 * bound is f32 rounding, 1e-6), checks that the resident run equals the
 * first bit for bit, and that bad arguments are errors with a message. Exit 0 when all holds. Written in C: it also checks that
 * moe_runtime.h is a C header.
 *
 *===----------------------------------------------------------------------===*/

#include "moe/Runtime/moe_runtime.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t state;

static float nextUniform(void) {
  state = state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static float *randomTensor(size_t n, float scale) {
  float *p = malloc(n * sizeof(float));
  for (size_t i = 0; i < n && p; ++i)
    p[i] = nextUniform() * scale;
  return p;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: moe-capi-test <artifact-dir> <entry> T H F E [seed]\n");
    return 2;
  }
  const char *dir = argv[1], *entry = argv[2];
  int64_t t = atoll(argv[3]), h = atoll(argv[4]), f = atoll(argv[5]),
          e = atoll(argv[6]);
  state = argc > 7 ? strtoull(argv[7], NULL, 10) : 1;
  printf("capi: seed = %llu\n", (unsigned long long)state);

  moe_artifact *a = NULL;
  if (moe_artifact_load(dir, &a)) {
    fprintf(stderr, "capi: load: %s\n", moe_last_error());
    return 1;
  }
  int64_t shapes[5][3] = {{t, h, 0}, {e, h, 0}, {e, f, h}, {e, f, h}, {e, h, f}};
  int32_t ranks[5] = {2, 2, 3, 3, 3};
  float scale[5] = {1.0f, 1.0f / sqrtf((float)h), 1.0f / sqrtf((float)h),
                    1.0f / sqrtf((float)h), 1.0f / sqrtf((float)f)};
  moe_tensor in[5];
  for (int i = 0; i < 5; ++i) {
    size_t n = 1;
    for (int d = 0; d < ranks[i]; ++d)
      n *= (size_t)shapes[i][d];
    in[i].data = randomTensor(n, scale[i]);
    in[i].dtype = MOE_F32;
    in[i].rank = ranks[i];
    in[i].shape = shapes[i];
  }
  int64_t outShape[2] = {t, h};
  size_t outN = (size_t)(t * h);
  float *y1 = malloc(outN * sizeof(float)), *y3 = malloc(outN * sizeof(float));
  for (size_t i = 0; i < outN; ++i)
    y1[i] = y3[i] = NAN;
  moe_tensor out = {y1, MOE_F32, 2, outShape};
  if (moe_artifact_run(a, entry, in, 5, &out, 1)) {
    fprintf(stderr, "capi: run: %s\n", moe_last_error());
    return 1;
  }
  out.data = y3;
  if (moe_artifact_run_threads(a, entry, in, 5, &out, 1, 3)) {
    fprintf(stderr, "capi: run_threads: %s\n", moe_last_error());
    return 1;
  }
  double diff = 0, ref = 0;
  for (size_t i = 0; i < outN; ++i) {
    diff += (double)(y3[i] - y1[i]) * (y3[i] - y1[i]);
    ref += (double)y1[i] * y1[i];
  }
  double rel = ref > 0 ? sqrt(diff / ref) : sqrt(diff);
  int ok = rel <= 1e-6; /* NaN (a row left unwritten) fails too */
  printf("capi: T = %lld, 3 threads against 1: rel diff = %.3g (bound 1e-06): %s\n",
         (long long)t, rel, ok ? "ok" : "FAIL");

  /* The weights made resident once (the token input left empty), then a
   * run reading them: the plain run's output bit for bit. */
  moe_tensor weights[5];
  memcpy(weights, in, sizeof(in));
  weights[0].data = NULL;
  weights[0].rank = 0;
  moe_resident *res = NULL;
  float *y2 = malloc(outN * sizeof(float));
  for (size_t i = 0; i < outN; ++i)
    y2[i] = NAN;
  out.data = y2;
  if (moe_artifact_make_resident(a, entry, weights, 5, &res) ||
      moe_artifact_run_resident(a, entry, in, 5, &out, 1, res)) {
    fprintf(stderr, "capi: resident: %s\n", moe_last_error());
    return 1;
  }
  int same = memcmp(y1, y2, outN * sizeof(float)) == 0;
  printf("capi: resident run equals the plain run bit for bit: %s\n",
         same ? "ok" : "FAIL");
  ok = ok && same;
  moe_resident_free(res);
  free(y2);
  out.data = y3;

  /* Bad arguments: an error code and a message, no crash. */
  if (!moe_artifact_run_threads(a, entry, in, 5, &out, 1, 0)) {
    printf("capi: threads = 0 was accepted: FAIL\n");
    ok = 0;
  } else {
    printf("capi: threads = 0: %s\n", moe_last_error());
  }
  if (!moe_artifact_run_threads(a, "no_such_entry", in, 5, &out, 1, 2)) {
    printf("capi: an unknown entry was accepted: FAIL\n");
    ok = 0;
  } else {
    printf("capi: unknown entry: %s\n", moe_last_error());
  }
  for (int i = 0; i < 5; ++i)
    free(in[i].data);
  free(y1);
  free(y3);
  moe_artifact_free(a);
  return ok ? 0 : 1;
}
