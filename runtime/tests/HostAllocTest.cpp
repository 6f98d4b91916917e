//===- HostAllocTest.cpp - the allocator of compiled cpu layers -*- C++ -*-===//
//
// Drives libmoe_runtime's _mlir_memref_to_llvm_{alloc,aligned_alloc,free}
// (runtime/lib/HostAlloc.cpp), which compiled cpu layers call for their
// buffers:
//
//   small      blocks under 256 KiB are not cached;
//   reuse      a freed large block is handed out again for a request of
//              3/4 of its size or more, not for a smaller one;
//   aligned    aligned_alloc honours the alignment, also from the cache;
//   limit      the cache never holds more than its limit; trim empties it;
//   threads    4 threads allocate, fill, check and free blocks of random
//              sizes: no block is handed out twice at once;
//   off        (with --expect-no-cache) MOE_CPU_CACHE_BYTES=0 reuses nothing.
//
// Each prints one line and "ok" or the first mismatch; exit status 1 on any
// failure. `--double-free` frees a block twice, which must abort naming it.
//
//   moe-host-alloc-test [--expect-no-cache] [--double-free]
//
//===----------------------------------------------------------------------===//

#include "../lib/HostAlloc.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;

void report(const char *name, const std::string &problem) {
  if (problem.empty()) {
    std::printf("%s: ok\n", name);
  } else {
    std::printf("%s: FAIL %s\n", name, problem.c_str());
    ++failures;
  }
}

constexpr size_t kMiB = size_t(1) << 20;

std::string small() {
  moe::rt::trimHostAllocator();
  void *p = _mlir_memref_to_llvm_alloc(1000);
  std::memset(p, 1, 1000);
  _mlir_memref_to_llvm_free(p);
  if (moe::rt::hostAllocatorStats().cachedBlocks != 0)
    return "a 1000-byte block was cached";
  return "";
}

std::string reuse() {
  moe::rt::trimHostAllocator();
  char *p = static_cast<char *>(_mlir_memref_to_llvm_alloc(kMiB));
  std::memset(p, 7, kMiB);
  _mlir_memref_to_llvm_free(p);
  auto s = moe::rt::hostAllocatorStats();
  if (s.cachedBlocks != 1)
    return "the freed 1 MiB block was not cached";
  uint64_t reusedBefore = s.reused;
  // Less than 3/4 of the block: a fresh one.
  char *q = static_cast<char *>(_mlir_memref_to_llvm_alloc(kMiB / 2));
  if (q == p)
    return "a 512 KiB request took the 1 MiB block";
  char *r = static_cast<char *>(_mlir_memref_to_llvm_alloc(kMiB - 4096));
  if (r != p)
    return "a 1020 KiB request did not take the cached 1 MiB block";
  if (moe::rt::hostAllocatorStats().reused != reusedBefore + 1)
    return "the reuse was not counted";
  std::memset(r, 3, kMiB - 4096); // the whole block is usable again
  _mlir_memref_to_llvm_free(q);
  _mlir_memref_to_llvm_free(r);
  return "";
}

std::string aligned() {
  moe::rt::trimHostAllocator();
  for (size_t align : {size_t(64), size_t(4096), size_t(1) << 16}) {
    void *p = _mlir_memref_to_llvm_aligned_alloc(align, 3 * kMiB);
    if (reinterpret_cast<uintptr_t>(p) % align)
      return "aligned_alloc(" + std::to_string(align) + ") misaligned";
    std::memset(p, 1, 3 * kMiB);
    _mlir_memref_to_llvm_free(p);
    void *q = _mlir_memref_to_llvm_aligned_alloc(align, 3 * kMiB);
    if (reinterpret_cast<uintptr_t>(q) % align)
      return "a cached block came back misaligned for " + std::to_string(align);
    _mlir_memref_to_llvm_free(q);
  }
  if (_mlir_memref_to_llvm_aligned_alloc(48, 4096))
    return "aligned_alloc accepted an alignment that is not a power of 2";
  return "";
}

std::string limit() {
  moe::rt::trimHostAllocator();
  moe::rt::detail::hostAllocSetLimit(3 * kMiB + kMiB / 2);
  std::vector<void *> blocks;
  for (int i = 0; i < 5; ++i)
    blocks.push_back(_mlir_memref_to_llvm_alloc(kMiB));
  for (void *p : blocks)
    _mlir_memref_to_llvm_free(p);
  auto s = moe::rt::hostAllocatorStats();
  std::string problem;
  if (s.cachedBytes > 3 * kMiB + kMiB / 2 || s.cachedBlocks != 3)
    problem = "limit 3.5 MiB: " + std::to_string(s.cachedBlocks) +
              " blocks, " + std::to_string(s.cachedBytes) + " bytes cached";
  moe::rt::trimHostAllocator();
  if (problem.empty() && moe::rt::hostAllocatorStats().cachedBytes != 0)
    problem = "trim left blocks in the cache";
  moe::rt::detail::hostAllocSetLimit(uint64_t(1) << 30);
  return problem;
}

std::string threads() {
  std::vector<std::string> problems(4);
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([t, &problems] {
      std::mt19937 rng(1234 + t);
      std::vector<std::pair<unsigned char *, size_t>> live;
      for (int i = 0; i < 400 && problems[t].empty(); ++i) {
        size_t n = (rng() % 8 + 1) * (kMiB / 4) + rng() % 1000;
        auto *p = static_cast<unsigned char *>(_mlir_memref_to_llvm_alloc(n));
        std::memset(p, t * 16 + i % 16, n);
        live.push_back({p, n});
        if (live.size() > 3 || rng() % 2) {
          auto [q, m] = live[rng() % live.size()];
          unsigned char want = q[0];
          for (size_t k = 0; k < m; k += 997)
            if (q[k] != want) {
              problems[t] = "a live block was overwritten";
              break;
            }
          for (auto it = live.begin(); it != live.end(); ++it)
            if (it->first == q) {
              live.erase(it);
              break;
            }
          _mlir_memref_to_llvm_free(q);
        }
      }
      for (auto [q, m] : live)
        _mlir_memref_to_llvm_free(q);
    });
  for (std::thread &th : pool)
    th.join();
  for (const std::string &p : problems)
    if (!p.empty())
      return p;
  return "";
}

std::string off() {
  moe::rt::trimHostAllocator();
  auto before = moe::rt::hostAllocatorStats();
  for (int i = 0; i < 3; ++i)
    _mlir_memref_to_llvm_free(_mlir_memref_to_llvm_alloc(2 * kMiB));
  auto after = moe::rt::hostAllocatorStats();
  if (after.limitBytes != 0)
    return "the limit is " + std::to_string(after.limitBytes) + ", not 0";
  if (after.reused != before.reused || after.cachedBlocks != 0)
    return "blocks were cached with MOE_CPU_CACHE_BYTES=0";
  return "";
}

} // namespace

int main(int argc, char **argv) {
  bool noCache = false, doubleFree = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--expect-no-cache")
      noCache = true;
    else if (a == "--double-free")
      doubleFree = true;
    else {
      std::fprintf(stderr, "usage: moe-host-alloc-test [--expect-no-cache] "
                           "[--double-free]\n");
      return 2;
    }
  }
  if (doubleFree) {
    void *p = _mlir_memref_to_llvm_alloc(kMiB);
    _mlir_memref_to_llvm_free(p);
    _mlir_memref_to_llvm_free(p);
    std::printf("double free not detected\n");
    return 1;
  }
  if (noCache) {
    report("off", off());
    return failures ? 1 : 0;
  }
  report("small", small());
  report("reuse", reuse());
  report("aligned", aligned());
  report("limit", limit());
  report("threads", threads());
  return failures ? 1 : 0;
}
