/*===- CApiGpuTest.c - the C API's GPU serving calls, from C ---------------===*
 *
 *   moe-capi-gpu-test <cuda-artifact-dir> <entry> T H F E
 *
 * A serving loop through the C API on a bf16 Mixtral-style moe.layer entry
 * (input T x H, router E x H, gate and up E x F x H, down E x H x F; one
 * output T x H): the weights made resident once (moe_artifact_make_resident,
 * the token input left empty), the activations in device memory
 * (moe_cuda_alloc, moe_cuda_copy_to_device / _to_host), CUDA graphs on:
 * the first run captures, the second replays, a run with a host-memory
 * output runs without a graph and is counted. Checks that bad arguments are
 * errors with a message. Meant for the fake CUDA driver (no kernel runs, so
 * no numbers are compared: the GPU correctness matrix does that); on a real
 * GPU it runs the same calls. Exit 0 when all holds. Written in C: it also
 * checks that moe_runtime.h is a C header.
 *
 *===----------------------------------------------------------------------===*/

#include "moe/Runtime/moe_runtime.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

static void expect(int ok, const char *what) {
  printf("%s %s", ok ? "ok  " : "FAIL", what);
  if (!ok)
    ++failures;
  printf("\n");
}

static void expectError(int rc, const char *what, const char *text) {
  int ok = rc != 0 && strstr(moe_last_error(), text) != NULL;
  printf("%s %s: %s\n", ok ? "ok  " : "FAIL", what,
         rc ? moe_last_error() : "accepted");
  if (!ok)
    ++failures;
}

/* Seeded bf16 values in (-scale, scale): the upper half of an f32. */
static uint16_t *randomBF16(size_t n, float scale, uint64_t *state) {
  uint16_t *p = malloc(n * sizeof(uint16_t));
  for (size_t i = 0; i < n && p; ++i) {
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    float f = ((float)((*state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f) *
              scale;
    uint32_t bits;
    memcpy(&bits, &f, 4);
    p[i] = (uint16_t)(bits >> 16);
  }
  return p;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr,
            "usage: moe-capi-gpu-test <cuda-artifact-dir> <entry> T H F E\n");
    return 2;
  }
  const char *dir = argv[1], *entry = argv[2];
  int64_t t = atoll(argv[3]), h = atoll(argv[4]), f = atoll(argv[5]),
          e = atoll(argv[6]);
  if (moe_cuda_status()) {
    fprintf(stderr, "capi-gpu: %s\n", moe_last_error());
    return 1;
  }
  moe_artifact *a = NULL;
  if (moe_artifact_load(dir, &a)) {
    fprintf(stderr, "capi-gpu: load: %s\n", moe_last_error());
    return 1;
  }
  uint64_t state = 5;
  int64_t shapes[5][3] = {
      {t, h, 0}, {e, h, 0}, {e, f, h}, {e, f, h}, {e, h, f}};
  int32_t ranks[5] = {2, 2, 3, 3, 3};
  size_t counts[5];
  moe_tensor in[5];
  size_t weightBytes = 0;
  for (int i = 0; i < 5; ++i) {
    counts[i] = 1;
    for (int d = 0; d < ranks[i]; ++d)
      counts[i] *= (size_t)shapes[i][d];
    in[i].data = randomBF16(counts[i], i ? 0.1f : 1.0f, &state);
    in[i].dtype = MOE_BF16;
    in[i].rank = ranks[i];
    in[i].shape = shapes[i];
    if (i)
      weightBytes += counts[i] * 2;
  }

  /* The weights once; the token input empty. */
  moe_tensor weights[5];
  memcpy(weights, in, sizeof(in));
  weights[0].data = NULL;
  weights[0].rank = 0;
  moe_resident *res = NULL;
  int rc = moe_artifact_make_resident(a, entry, weights, 5, &res);
  expect(rc == 0 && moe_resident_bytes(res) == weightBytes,
         "make_resident uploads the four weights once");
  if (rc) {
    fprintf(stderr, "capi-gpu: %s\n", moe_last_error());
    return 1;
  }

  /* Activations in device memory. */
  size_t xBytes = counts[0] * 2;
  void *x = NULL, *y = NULL;
  expect(moe_cuda_alloc(xBytes, &x) == 0 && moe_cuda_alloc(xBytes, &y) == 0,
         "moe_cuda_alloc");
  expect(moe_cuda_copy_to_device(x, in[0].data, xBytes) == 0,
         "the input copied to the device");
  uint16_t *back = malloc(xBytes);
  expect(moe_cuda_copy_to_host(back, x, xBytes) == 0 &&
             memcmp(back, in[0].data, xBytes) == 0,
         "and back, unchanged");
  int64_t outShape[2] = {t, h};
  moe_tensor xin[5];
  memcpy(xin, in, sizeof(in));
  xin[0].data = x;
  moe_tensor out = {y, MOE_BF16, 2, outShape};

  expect(moe_artifact_use_cuda_graphs(a, 1) == 0, "CUDA graphs on");
  int r1 = moe_artifact_run_resident(a, entry, xin, 5, &out, 1, res);
  int r2 = moe_artifact_run_resident(a, entry, xin, 5, &out, 1, res);
  if (r1 || r2)
    fprintf(stderr, "capi-gpu: run: %s\n", moe_last_error());
  uint64_t captured = 0, replayed = 0, ineligible = 0;
  moe_artifact_cuda_graph_stats(a, &captured, &replayed, &ineligible);
  expect(!r1 && !r2 && captured == 1 && replayed == 1 && ineligible == 0,
         "two runs on the same device buffers: captured once, replayed once");

  /* A host-memory output: a run without a graph, counted. */
  uint16_t *hostY = malloc(xBytes);
  moe_tensor hostOut = {hostY, MOE_BF16, 2, outShape};
  int r3 = moe_artifact_run_resident(a, entry, xin, 5, &hostOut, 1, res);
  moe_artifact_cuda_graph_stats(a, &captured, &replayed, &ineligible);
  expect(!r3 && captured == 1 && ineligible == 1,
         "a host-memory output runs without a graph, counted");
  moe_cuda_graph_info info;
  expect(moe_artifact_cuda_graph_info(a, &info) == 0 && info.captured == 1 &&
             info.replayed == 1 && info.ineligible == 1 && info.graphs == 1 &&
             info.bytes > 0 && info.retried == 0 &&
             strstr(info.last_ineligible, "host memory"),
         "graph info: one graph kept, holding memory; why the last run had "
         "none");
  expectError(moe_artifact_cuda_graph_info(a, NULL), "graph info into NULL",
              "null argument");

  /* Bad arguments: an error code and a message, no crash. */
  expectError(moe_cuda_copy_to_device(hostY, in[0].data, xBytes),
              "copy to host memory", "not memory from moe_cuda_alloc");
  expectError(moe_cuda_copy_to_host(hostY, NULL, xBytes), "copy from NULL",
              "null pointer");
  expectError(moe_artifact_use_cuda_graphs(NULL, 1), "graphs on NULL",
              "null artifact");
  moe_tensor noWeights[5];
  memcpy(noWeights, weights, sizeof(weights));
  noWeights[2].data = NULL;
  noWeights[2].rank = 0;
  moe_resident *bad = NULL;
  expectError(moe_artifact_make_resident(a, entry, noWeights, 5, &bad),
              "an empty weight", "input #2 'gate' has dtype");
  expectError(moe_artifact_run_resident(a, "no_such_entry", xin, 5, &out, 1,
                                        res),
              "unknown entry", "unknown entry 'no_such_entry'");

  moe_resident_free(res);
  moe_cuda_free(x);
  moe_cuda_free(y);
  for (int i = 0; i < 5; ++i)
    free(in[i].data);
  free(back);
  free(hostY);
  moe_artifact_free(a);
  printf("capi-gpu: %d failed\n", failures);
  return failures ? 1 : 0;
}
