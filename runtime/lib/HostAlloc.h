//===- HostAlloc.h - Buffers of compiled cpu layers -------------*- C++ -*-===//
//
// Compiled cpu layers allocate their buffers (intermediates such as the
// T x K x F activations, and their results) through MLIR's generic
// allocation functions, `_mlir_memref_to_llvm_alloc`, `..._aligned_alloc`
// and `..._free` (finalize-memref-to-llvm{use-generic-functions}, the
// manifest's "host_allocator": "moe-runtime"). HostAlloc.cpp implements
// them. Small blocks go to malloc. Large ones (kMinCachedBytes and up) are
// kept in a cache when freed and handed out again by size: glibc returns
// freed large blocks to the kernel, so each call would otherwise fault its
// intermediates' pages in again (11k page faults per call, about 6% of the
// time, at T = 512 on the CPU benchmark layer).
//
// The cache holds at most MOE_CPU_CACHE_BYTES bytes (default 1 GiB; 0 turns
// it off), and a block is reused only for a request of at least 3/4 of its
// size. Under AddressSanitizer the cached blocks are poisoned, so a use
// after free is still reported.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_LIB_HOSTALLOC_H
#define MOE_RUNTIME_LIB_HOSTALLOC_H

#include <cstddef>
#include <cstdint>

#include "moe/Runtime/Runtime.h"

extern "C" {
void *_mlir_memref_to_llvm_alloc(size_t size);
void *_mlir_memref_to_llvm_aligned_alloc(size_t alignment, size_t size);
void _mlir_memref_to_llvm_free(void *ptr);
}

namespace moe::rt::detail {

/// Blocks of this many bytes and more are cached when freed.
constexpr size_t kMinCachedBytes = size_t(256) << 10;

/// Sets the cache's limit (replacing MOE_CPU_CACHE_BYTES), trimming it.
void hostAllocSetLimit(uint64_t bytes);

} // namespace moe::rt::detail

#endif // MOE_RUNTIME_LIB_HOSTALLOC_H
