//===- MemRefCopy.cpp - memref.copy support for compiled layers -*- C++ -*-===//
//
// Compiled layers call `memrefCopy` for memref.copy between strided buffers
// (MLIR's lowering of memref.copy). MLIR ships it in libmlir_c_runner_utils;
// the runtime must not depend on MLIR, so it provides its own, resolved when
// an artifact is loaded. Same contract: element size, then two unranked
// descriptors {rank, pointer to ranked descriptor}.
//
//===----------------------------------------------------------------------===//

#include <cstdint>
#include <cstring>
#include <vector>

namespace {
struct UnrankedDescriptor {
  int64_t rank;
  void *descriptor;
};
} // namespace

extern "C" __attribute__((visibility("default"))) void
memrefCopy(int64_t elemSize, UnrankedDescriptor *src, UnrankedDescriptor *dst) {
  int64_t rank = src->rank;
  auto *s = static_cast<int64_t *>(src->descriptor);
  auto *d = static_cast<int64_t *>(dst->descriptor);
  char *sp, *dp;
  std::memcpy(&sp, &s[1], sizeof(char *));
  std::memcpy(&dp, &d[1], sizeof(char *));
  sp += s[2] * elemSize;
  dp += d[2] * elemSize;
  if (rank == 0) {
    std::memcpy(dp, sp, elemSize);
    return;
  }
  const int64_t *sizes = s + 3, *sStr = s + 3 + rank, *dStr = d + 3 + rank;
  int64_t total = 1;
  for (int64_t i = 0; i < rank; ++i)
    total *= sizes[i];
  std::vector<int64_t> idx(rank, 0);
  for (int64_t n = 0; n < total; ++n) {
    int64_t so = 0, doff = 0;
    for (int64_t i = 0; i < rank; ++i) {
      so += idx[i] * sStr[i];
      doff += idx[i] * dStr[i];
    }
    std::memcpy(dp + doff * elemSize, sp + so * elemSize, elemSize);
    for (int64_t i = rank; i-- > 0;) {
      if (++idx[i] < sizes[i])
        break;
      idx[i] = 0;
    }
  }
}
