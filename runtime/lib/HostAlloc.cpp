//===- HostAlloc.cpp - Buffers of compiled cpu layers -----------*- C++ -*-===//
//
// See HostAlloc.h. Every block carries a header just before the address it
// hands out: the malloc'd address, its size and a magic number, so that
// `_mlir_memref_to_llvm_free` knows what it frees and rejects a pointer it
// did not hand out (an abort naming it, never a silent heap corruption).
//
//===----------------------------------------------------------------------===//

#include "HostAlloc.h"
#include "Env.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MOE_ASAN 1
#endif
#ifdef MOE_ASAN
#include <sanitizer/asan_interface.h>
#define MOE_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define MOE_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define MOE_POISON(p, n) ((void)(p), (void)(n))
#define MOE_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace {

constexpr uint64_t kMagic = 0x6d6f652d616c6c63ULL;       // "moe-allc"
constexpr uint64_t kCachedMagic = 0x6d6f652d63616368ULL; // "moe-cach"

struct Header {
  void *raw;       // what malloc returned
  size_t capacity; // usable bytes from the handed-out address
  size_t span;     // bytes malloc'd
  uint64_t magic;
};

/// Free large blocks by capacity. The handed-out address of a cached block
/// is kept (its alignment is that of the request that made it).
struct Cache {
  std::mutex mutex;
  std::multimap<size_t, char *> blocks; // capacity -> handed-out address
  uint64_t bytes = 0;
  uint64_t limit = uint64_t(1) << 30;
  uint64_t allocations = 0, reused = 0;

  /// The limit comes from MOE_CPU_CACHE_BYTES, read when the cache is first
  /// used.
  Cache() {
    limit = moe::rt::env::count("MOE_CPU_CACHE_BYTES", limit, "byte count");
  }
};

Cache &cache() {
  // Leaked: compiled code may free blocks from static destructors of other
  // libraries after this one's would have run.
  static Cache *c = new Cache;
  return *c;
}

Header *headerOf(void *p) {
  return reinterpret_cast<Header *>(static_cast<char *>(p) - sizeof(Header));
}

void *fresh(size_t alignment, size_t size) {
  if (alignment < alignof(std::max_align_t))
    alignment = alignof(std::max_align_t);
  size_t span = size + sizeof(Header) + alignment;
  if (span < size) // overflow
    return nullptr;
  char *raw = static_cast<char *>(std::malloc(span));
  if (!raw)
    return nullptr;
  uintptr_t at = reinterpret_cast<uintptr_t>(raw) + sizeof(Header);
  at = (at + alignment - 1) / alignment * alignment;
  char *p = reinterpret_cast<char *>(at);
  *headerOf(p) = Header{raw, size_t(raw + span - p), span, kMagic};
  return p;
}

void *allocate(size_t alignment, size_t size) {
  if (size == 0)
    size = 1;
  Cache &c = cache();
  if (size >= moe::rt::detail::kMinCachedBytes) {
    std::lock_guard<std::mutex> lock(c.mutex);
    ++c.allocations;
    // The smallest cached block that holds `size` and is not more than a
    // third larger than it, at the alignment asked for.
    for (auto it = c.blocks.lower_bound(size);
         it != c.blocks.end() && it->first <= size + size / 3; ++it) {
      char *p = it->second;
      if (reinterpret_cast<uintptr_t>(p) % (alignment ? alignment : 1))
        continue;
      c.bytes -= headerOf(p)->span;
      c.blocks.erase(it);
      headerOf(p)->magic = kMagic;
      ++c.reused;
      MOE_UNPOISON(p, headerOf(p)->capacity);
      return p;
    }
  } else {
    std::lock_guard<std::mutex> lock(c.mutex);
    ++c.allocations;
  }
  return fresh(alignment, size);
}

void release(void *p) {
  Header *h = headerOf(p);
  std::free(h->raw);
}

void trimLocked(Cache &c, uint64_t keep) {
  while (c.bytes > keep && !c.blocks.empty()) {
    // Largest first: they cost the most to keep.
    auto it = std::prev(c.blocks.end());
    char *p = it->second;
    c.bytes -= headerOf(p)->span;
    c.blocks.erase(it);
    headerOf(p)->magic = 0;
    MOE_UNPOISON(p, headerOf(p)->capacity);
    release(p);
  }
}

} // namespace

extern "C" __attribute__((visibility("default"))) void *
_mlir_memref_to_llvm_alloc(size_t size) {
  return allocate(0, size);
}

extern "C" __attribute__((visibility("default"))) void *
_mlir_memref_to_llvm_aligned_alloc(size_t alignment, size_t size) {
  if (alignment & (alignment - 1))
    return nullptr;
  return allocate(alignment, size);
}

extern "C" __attribute__((visibility("default"))) void
_mlir_memref_to_llvm_free(void *p) {
  if (!p)
    return;
  Header *h = headerOf(p);
  if (h->magic != kMagic) {
    std::fprintf(stderr,
                 "moe runtime: _mlir_memref_to_llvm_free(%p): %s\n", p,
                 h->magic == kCachedMagic
                     ? "freed twice"
                     : "not a block of the runtime's allocator");
    std::abort();
  }
  Cache &c = cache();
  if (h->capacity >= moe::rt::detail::kMinCachedBytes) {
    std::lock_guard<std::mutex> lock(c.mutex);
    if (h->span <= c.limit) {
      trimLocked(c, c.limit - h->span);
      c.blocks.emplace(h->capacity, static_cast<char *>(p));
      c.bytes += h->span;
      h->magic = kCachedMagic;
      MOE_POISON(p, h->capacity);
      return;
    }
  }
  h->magic = 0;
  release(p);
}

namespace moe::rt {

HostAllocatorStats hostAllocatorStats() {
  Cache &c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  HostAllocatorStats s;
  s.allocations = c.allocations;
  s.reused = c.reused;
  s.cachedBlocks = c.blocks.size();
  s.cachedBytes = c.bytes;
  s.limitBytes = c.limit;
  return s;
}

void trimHostAllocator() {
  Cache &c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  trimLocked(c, 0);
}

void detail::hostAllocSetLimit(uint64_t bytes) {
  Cache &c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.limit = bytes;
  trimLocked(c, bytes);
}

} // namespace moe::rt
