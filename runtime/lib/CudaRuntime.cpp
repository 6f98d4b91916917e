//===- CudaRuntime.cpp - mgpu* ABI on the dlopen'ed CUDA driver -*- C++ -*-===//
//
// Defines, with C linkage, the functions that host code lowered by MLIR 22's
// gpu-to-llvm (and the gpu.launch_func / gpu.binary translation) calls, on
// the CUDA driver API loaded at run time with dlopen("libcuda.so.1"). The
// signatures are those MLIR 22 emits (checked against
// mlir/lib/ExecutionEngine/CudaRuntimeWrappers.cpp and the declarations in
// translated modules): e.g. mgpuModuleLoad(void *, size_t) and
// mgpuLaunchKernel(..., void **extra, size_t paramsCount). Unlike upstream's
// wrappers, errors are recorded (first one per thread, see takeError) instead
// of printed, and the driver is optional: without it allocations fall back
// to host memory and launches are skipped, so a GPU artifact loaded on a
// machine without a GPU fails cleanly.
//
// Only the driver entry points below are used; their types are declared
// here (values from CUDA 13's cuda.h) so that building the runtime needs no
// CUDA toolkit.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CudaRuntime.h"

#include "Env.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#define MOE_CUDA_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

//===----------------------------------------------------------------------===//
// The driver API subset
//===----------------------------------------------------------------------===//

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;
using CUevent = struct CUevent_st *;
using CUgraph = struct CUgraph_st *;
using CUgraphExec = struct CUgraphExec_st *;

constexpr CUresult kSuccess = 0;
constexpr unsigned kMemAttachGlobal = 0x1;     // CU_MEM_ATTACH_GLOBAL
constexpr unsigned kStreamNonBlocking = 0x1;   // CU_STREAM_NON_BLOCKING
constexpr unsigned kEventDisableTiming = 0x2;  // CU_EVENT_DISABLE_TIMING
// CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, _MINOR
constexpr int kAttrCCMajor = 75, kAttrCCMinor = 76;
constexpr int kAttrManaged = 83;   // CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY
constexpr int kAttrConcurrentManaged = 89; // ..._CONCURRENT_MANAGED_ACCESS
constexpr int kAttrMaxSmemOptin = 97; // ..._MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
constexpr int kFuncAttrMaxDynamicSmem = 8;
constexpr int kJitErrorLogBuffer = 5;      // CU_JIT_ERROR_LOG_BUFFER
constexpr int kJitErrorLogBufferSize = 6;  // CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
constexpr int kJitOptimizationLevel = 7;   // CU_JIT_OPTIMIZATION_LEVEL
constexpr int kCaptureModeRelaxed = 2;     // CU_STREAM_CAPTURE_MODE_RELAXED

struct Driver {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuDriverGetVersion)(int *);
  CUresult (*cuDeviceGetCount)(int *);
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetName)(char *, int, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
  CUresult (*cuDeviceTotalMem)(size_t *, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuCtxPushCurrent)(CUcontext);
  CUresult (*cuCtxPopCurrent)(CUcontext *);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuGetErrorName)(CUresult, const char **);
  CUresult (*cuGetErrorString)(CUresult, const char **);
  CUresult (*cuModuleLoadData)(CUmodule *, const void *);
  CUresult (*cuModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *,
                                 void **);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*cuFuncSetAttribute)(CUfunction, int, int);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned,
                             unsigned, unsigned, unsigned, unsigned, CUstream,
                             void **, void **);
  CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
  CUresult (*cuMemAllocManaged)(CUdeviceptr *, size_t, unsigned);
  CUresult (*cuMemFree)(CUdeviceptr);
  CUresult (*cuMemcpyAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
  CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
  CUresult (*cuMemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
  CUresult (*cuMemsetD16Async)(CUdeviceptr, unsigned short, size_t, CUstream);
  CUresult (*cuMemHostRegister)(void *, size_t, unsigned);
  CUresult (*cuMemHostUnregister)(void *);
  CUresult (*cuStreamCreate)(CUstream *, unsigned);
  CUresult (*cuStreamDestroy)(CUstream);
  CUresult (*cuStreamSynchronize)(CUstream);
  CUresult (*cuStreamQuery)(CUstream);
  CUresult (*cuStreamWaitEvent)(CUstream, CUevent, unsigned);
  CUresult (*cuEventCreate)(CUevent *, unsigned);
  CUresult (*cuEventDestroy)(CUevent);
  CUresult (*cuEventSynchronize)(CUevent);
  CUresult (*cuEventRecord)(CUevent, CUstream);
  // Optional (MOE_CUDA_PROFILE only): null when the driver lacks it.
  CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent);
  // Optional (CUDA graphs only): null when the driver lacks them.
  CUresult (*cuStreamBeginCapture)(CUstream, int);
  CUresult (*cuStreamEndCapture)(CUstream, CUgraph *);
  CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec *, CUgraph,
                                          unsigned long long);
  CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
  CUresult (*cuGraphExecDestroy)(CUgraphExec);
  CUresult (*cuGraphDestroy)(CUgraph);
  // Optional (TMA tensor maps, CUDA 12.0+): null when the driver lacks it.
  CUresult (*cuTensorMapEncodeTiled)(void *, int, unsigned, void *,
                                     const uint64_t *, const uint64_t *,
                                     const unsigned *, const unsigned *, int,
                                     int, int, int);
};

Driver drv;
/// The first optional symbol the driver lacks (graphs need all of theirs;
/// checked in captureBlocker).
std::string graphSymbolMissing;
std::once_flag initOnce;
std::optional<std::string> initError; // set once, under initOnce
int numDevices = 0;

/// "CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)".
std::string describe(CUresult r) {
  const char *name = nullptr, *text = nullptr;
  if (drv.cuGetErrorName)
    drv.cuGetErrorName(r, &name);
  if (drv.cuGetErrorString)
    drv.cuGetErrorString(r, &text);
  // Errors of a driver that cannot name them (the toolkit's link stub
  // cannot) or that matter before initialisation.
  if (!name)
    switch (r) {
    case 34:
      name = "CUDA_ERROR_STUB_LIBRARY";
      text = "the CUDA toolkit's link stub, not a driver";
      break;
    case 35:
      name = "CUDA_ERROR_INSUFFICIENT_DRIVER";
      break;
    case 100:
      name = "CUDA_ERROR_NO_DEVICE";
      break;
    case 803:
      name = "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
      break;
    default:
      break;
    }
  std::string s = name ? name : "CUDA error " + std::to_string(r);
  if (text)
    s += std::string(" (") + text + ")";
  return s;
}

template <typename Fn>
bool bind(void *lib, const char *symbol, Fn &fn, std::string &missing) {
  fn = reinterpret_cast<Fn>(dlsym(lib, symbol));
  if (!fn && missing.empty())
    missing = symbol;
  return fn != nullptr;
}

void initDriver() {
  const char *path = std::getenv("MOE_LIBCUDA");
  const char *name = path && *path ? path : "libcuda.so.1";
  void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    initError = std::string("no CUDA device: ") + name + " not found";
    return;
  }
  // Versioned names are those cuda.h maps the API names to (cuMemAlloc ->
  // cuMemAlloc_v2, ...); the per-thread-stream (_ptsz) variants are not used.
  std::string missing;
  bind(lib, "cuInit", drv.cuInit, missing);
  bind(lib, "cuDriverGetVersion", drv.cuDriverGetVersion, missing);
  bind(lib, "cuDeviceGetCount", drv.cuDeviceGetCount, missing);
  bind(lib, "cuDeviceGet", drv.cuDeviceGet, missing);
  bind(lib, "cuDeviceGetName", drv.cuDeviceGetName, missing);
  bind(lib, "cuDeviceGetAttribute", drv.cuDeviceGetAttribute, missing);
  bind(lib, "cuDeviceTotalMem_v2", drv.cuDeviceTotalMem, missing);
  bind(lib, "cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain, missing);
  bind(lib, "cuCtxPushCurrent_v2", drv.cuCtxPushCurrent, missing);
  bind(lib, "cuCtxPopCurrent_v2", drv.cuCtxPopCurrent, missing);
  bind(lib, "cuCtxSynchronize", drv.cuCtxSynchronize, missing);
  bind(lib, "cuGetErrorName", drv.cuGetErrorName, missing);
  bind(lib, "cuGetErrorString", drv.cuGetErrorString, missing);
  bind(lib, "cuModuleLoadData", drv.cuModuleLoadData, missing);
  bind(lib, "cuModuleLoadDataEx", drv.cuModuleLoadDataEx, missing);
  bind(lib, "cuModuleUnload", drv.cuModuleUnload, missing);
  bind(lib, "cuModuleGetFunction", drv.cuModuleGetFunction, missing);
  bind(lib, "cuFuncSetAttribute", drv.cuFuncSetAttribute, missing);
  bind(lib, "cuLaunchKernel", drv.cuLaunchKernel, missing);
  bind(lib, "cuMemAlloc_v2", drv.cuMemAlloc, missing);
  bind(lib, "cuMemAllocManaged", drv.cuMemAllocManaged, missing);
  bind(lib, "cuMemFree_v2", drv.cuMemFree, missing);
  bind(lib, "cuMemcpyAsync", drv.cuMemcpyAsync, missing);
  bind(lib, "cuMemcpyHtoD_v2", drv.cuMemcpyHtoD, missing);
  bind(lib, "cuMemcpyDtoH_v2", drv.cuMemcpyDtoH, missing);
  bind(lib, "cuMemsetD32Async", drv.cuMemsetD32Async, missing);
  bind(lib, "cuMemsetD16Async", drv.cuMemsetD16Async, missing);
  bind(lib, "cuMemHostRegister_v2", drv.cuMemHostRegister, missing);
  bind(lib, "cuMemHostUnregister", drv.cuMemHostUnregister, missing);
  bind(lib, "cuStreamCreate", drv.cuStreamCreate, missing);
  bind(lib, "cuStreamDestroy_v2", drv.cuStreamDestroy, missing);
  bind(lib, "cuStreamSynchronize", drv.cuStreamSynchronize, missing);
  bind(lib, "cuStreamQuery", drv.cuStreamQuery, missing);
  bind(lib, "cuStreamWaitEvent", drv.cuStreamWaitEvent, missing);
  bind(lib, "cuEventCreate", drv.cuEventCreate, missing);
  bind(lib, "cuEventDestroy_v2", drv.cuEventDestroy, missing);
  bind(lib, "cuEventSynchronize", drv.cuEventSynchronize, missing);
  bind(lib, "cuEventRecord", drv.cuEventRecord, missing);
  // CUDA 13 names it cuEventElapsedTime_v2; older drivers without _v2.
  std::string optional;
  if (!bind(lib, "cuEventElapsedTime_v2", drv.cuEventElapsedTime, optional))
    bind(lib, "cuEventElapsedTime", drv.cuEventElapsedTime, optional);
  // cuda.h maps cuStreamBeginCapture to _v2 (with the capture mode) and
  // cuGraphInstantiate to cuGraphInstantiateWithFlags (CUDA 11.4+).
  std::string &g = graphSymbolMissing;
  bind(lib, "cuStreamBeginCapture_v2", drv.cuStreamBeginCapture, g);
  bind(lib, "cuStreamEndCapture", drv.cuStreamEndCapture, g);
  bind(lib, "cuGraphInstantiateWithFlags", drv.cuGraphInstantiateWithFlags, g);
  bind(lib, "cuGraphLaunch", drv.cuGraphLaunch, g);
  bind(lib, "cuGraphExecDestroy", drv.cuGraphExecDestroy, g);
  bind(lib, "cuGraphDestroy", drv.cuGraphDestroy, g);
  bind(lib, "cuTensorMapEncodeTiled", drv.cuTensorMapEncodeTiled, optional);
  if (!missing.empty()) {
    initError = std::string(name) + " lacks " + missing;
    drv = Driver();
    dlclose(lib);
    return;
  }
  // The library stays loaded for the life of the process: contexts,
  // modules and memory refer to it.
  if (CUresult r = drv.cuInit(0); r != kSuccess) {
    initError = "cuInit failed: " + describe(r);
    return;
  }
  if (CUresult r = drv.cuDeviceGetCount(&numDevices); r != kSuccess) {
    initError = "cuDeviceGetCount failed: " + describe(r);
    numDevices = 0;
    return;
  }
  if (numDevices <= 0) {
    initError = "no CUDA device visible";
    numDevices = 0;
  }
}

/// True when the driver is loaded and a device is visible.
bool available() {
  std::call_once(initOnce, initDriver);
  return !initError;
}

//===----------------------------------------------------------------------===//
// Errors, devices, contexts
//===----------------------------------------------------------------------===//

thread_local std::optional<std::string> threadError;
thread_local int32_t defaultDevice = 0;

/// Records a failed driver call; true if `r` is success.
bool check(CUresult r, const char *call) {
  if (r == kSuccess)
    return true;
  moe::rt::cuda::recordError(std::string(call) + " failed: " + describe(r));
  return false;
}

/// Records that CUDA is unavailable (the status message) for an mgpu* call
/// that needed it.
void recordUnavailable(const char *what) {
  moe::rt::cuda::recordError(std::string(what) + ": " + *initError);
}

std::mutex contextMutex;
std::vector<CUcontext> contexts; // primary contexts, by ordinal, retained once

CUcontext contextFor(int ordinal) {
  if (ordinal < 0 || ordinal >= numDevices) {
    moe::rt::cuda::recordError("CUDA device " + std::to_string(ordinal) +
                               " does not exist (" +
                               std::to_string(numDevices) + " visible)");
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(contextMutex);
  if (contexts.size() < static_cast<size_t>(numDevices))
    contexts.resize(numDevices, nullptr);
  CUcontext &ctx = contexts[ordinal];
  if (!ctx) {
    CUdevice dev;
    if (!check(drv.cuDeviceGet(&dev, ordinal), "cuDeviceGet") ||
        !check(drv.cuDevicePrimaryCtxRetain(&ctx, dev),
               "cuDevicePrimaryCtxRetain"))
      ctx = nullptr;
  }
  return ctx;
}

/// Makes the default device's primary context current for the duration of
/// a call and restores the caller's context afterwards (a serving process
/// may have its own current context). Every driver call that takes a
/// context-bound handle runs inside one.
class ScopedContext {
public:
  ScopedContext() {
    if (CUcontext ctx = contextFor(defaultDevice))
      pushed_ = check(drv.cuCtxPushCurrent(ctx), "cuCtxPushCurrent");
  }
  ~ScopedContext() {
    if (pushed_) {
      CUcontext previous;
      check(drv.cuCtxPopCurrent(&previous), "cuCtxPopCurrent");
    }
  }
  bool ok() const { return pushed_; }

private:
  bool pushed_ = false;
};

CUdeviceptr devptr(const void *p) {
  return static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(p));
}

using moe::rt::env::flag;

//===----------------------------------------------------------------------===//
// Allocation cache
//===----------------------------------------------------------------------===//

/// Every allocation of mgpuMemAlloc and allocManaged goes through this
/// cache: a freed block is kept and handed out again to a request of the
/// same device and kind of at most its size and at least half of it, so a
/// layer called again with the same token count allocates nothing, and its
/// managed intermediates, once touched by a kernel, stay on the device
/// (fresh managed memory would fault its pages in again on every call).
/// This is the caching-allocator design of PyTorch's CUDACachingAllocator
/// reduced to size-keyed free lists.
///
/// Frees are stream-ordered: moe-gpu-async-launches queues a layer's
/// deallocations on its thread's stream behind the kernels that still use
/// the buffers (`mgpuMemFree(ptr, stream)`), without a host wait. Such a
/// block remembers that stream: a request from the same stream may take it
/// at once (whatever it queues runs after those kernels, and the layer's
/// host code waits on the stream before touching memory itself), any other
/// request (another thread's stream, the runtime's own allocations, which
/// the host fills) only once cuStreamQuery says the stream has drained, as
/// PyTorch does with the events of record_stream.
/// MOE_CUDA_POOL=0 turns it off; MOE_CUDA_POOL_MB caps the bytes kept free
/// (default 4096); MOE_CUDA_POOL_POISON=1 fills every block handed out with
/// 0xff bytes (NaN in every float type), to catch kernels that read memory
/// they did not write.
class Pool {
public:
  Pool() {
    enabled_ = flag("MOE_CUDA_POOL", /*fallback=*/true);
    limit_ = size_t(moe::rt::env::mebibytes("MOE_CUDA_POOL_MB", limit_ >> 20));
    poison_ = flag("MOE_CUDA_POOL_POISON");
  }

  /// A block of `bytes` (> 0) on `device` for work queued on `stream`
  /// (null: the host, or any stream); null with an error recorded.
  CUdeviceptr allocate(size_t bytes, bool managed, int device,
                       CUstream stream) {
    CUdeviceptr p = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = free_.lower_bound(bytes);
           it != free_.end() && it->first <= 2 * bytes; ++it) {
        Block &b = blocks_[it->second];
        if (b.managed != managed || b.device != device)
          continue;
        if (b.freedOn && b.freedOn != stream) {
          // Still read by kernels queued before its free?
          if (drv.cuStreamQuery(b.freedOn) != kSuccess)
            continue;
        }
        p = it->second;
        b.inUse = true;
        b.freedOn = nullptr;
        cached_ -= b.bytes;
        free_.erase(it);
        break;
      }
    }
    if (!p) {
      CUresult r = managed ? drv.cuMemAllocManaged(&p, bytes, kMemAttachGlobal)
                           : drv.cuMemAlloc(&p, bytes);
      if (r != kSuccess) {
        // Out of memory with blocks cached: give them back and try again.
        release();
        r = managed ? drv.cuMemAllocManaged(&p, bytes, kMemAttachGlobal)
                    : drv.cuMemAlloc(&p, bytes);
      }
      if (!check(r, managed ? "cuMemAllocManaged" : "cuMemAlloc"))
        return 0;
      std::lock_guard<std::mutex> lock(mutex_);
      blocks_[p] = Block{bytes, managed, device, true, nullptr};
    }
    // The first synchronization: a block taken back by its stream may
    // still be read by kernels queued there (the legacy stream of the
    // memset is not ordered with the runtime's non-blocking streams).
    if (poison_)
      check(drv.cuCtxSynchronize(), "cuCtxSynchronize") &&
          check(drv.cuMemsetD32Async(p, 0xffffffffu, bytes / 4, nullptr),
                "cuMemsetD32Async") &&
          check(drv.cuCtxSynchronize(), "cuCtxSynchronize");
    return p;
  }

  /// Keeps a block of ours for reuse, free once the work queued on
  /// `stream` so far has run (null: free now); false if it does not (not
  /// one of ours, or the cache is off or full): then the caller frees it.
  bool deallocate(CUdeviceptr p, CUstream stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.find(p);
    if (it == blocks_.end() || !it->second.inUse)
      return false;
    Block &b = it->second;
    if (!enabled_ || cached_ + b.bytes > limit_) {
      blocks_.erase(it);
      return false;
    }
    b.inUse = false;
    b.freedOn = stream;
    cached_ += b.bytes;
    free_.emplace(b.bytes, p);
    return true;
  }

  /// Whether blocks are filled with 0xff when handed out (a host wait).
  bool poisons() const { return poison_; }

  /// Whether `p` points into a block in use.
  bool contains(const void *ptr) {
    CUdeviceptr p = devptr(ptr);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.upper_bound(p);
    if (it == blocks_.begin())
      return false;
    --it;
    return it->second.inUse && p < it->first + it->second.bytes;
  }

  /// Forgets that blocks were freed on `stream` (which has been
  /// synchronized and is about to be destroyed).
  void forgetStream(CUstream stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto &[p, b] : blocks_)
      if (b.freedOn == stream)
        b.freedOn = nullptr;
  }

  /// Frees every cached block (the context must be current).
  void release() {
    std::vector<CUdeviceptr> drop;
    bool queued = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto &[bytes, p] : free_) {
        drop.push_back(p);
        queued |= blocks_[p].freedOn != nullptr;
        blocks_.erase(p);
      }
      free_.clear();
      cached_ = 0;
    }
    if (queued)
      check(drv.cuCtxSynchronize(), "cuCtxSynchronize");
    for (CUdeviceptr p : drop)
      check(drv.cuMemFree(p), "cuMemFree");
  }

private:
  struct Block {
    size_t bytes;
    bool managed;
    int device;
    bool inUse;
    /// While cached: the stream whose queued work may still use it.
    CUstream freedOn;
  };
  std::mutex mutex_;
  std::map<CUdeviceptr, Block> blocks_;          // in use and cached
  std::multimap<size_t, CUdeviceptr> free_;      // cached, by size
  size_t cached_ = 0;
  size_t limit_ = size_t(4096) << 20;
  bool enabled_ = true, poison_ = false;
};

void releasePoolAtExit();

Pool &pool() {
  // Never destroyed (a static destructor could run before a late free);
  // the cached blocks go back to the driver at exit, so that what is still
  // allocated then is what the program leaked.
  static Pool *p = [] {
    std::atexit(releasePoolAtExit);
    return new Pool();
  }();
  return *p;
}

void releasePoolAtExit() {
  if (initError)
    return;
  ScopedContext scope;
  if (scope.ok())
    pool().release();
}

//===----------------------------------------------------------------------===//
// One stream per thread and device
//===----------------------------------------------------------------------===//

/// gpu-to-llvm brackets every launch with mgpuStreamCreate / Synchronize /
/// Destroy; creating a stream per launch costs more than a small kernel.
/// mgpuStreamCreate hands out this thread's stream for the current device
/// instead, and mgpuStreamDestroy leaves it alive; it is destroyed when the
/// thread ends.
struct ThreadStreams {
  std::vector<CUstream> byDevice;
  ~ThreadStreams() {
    for (size_t d = 0; d < byDevice.size(); ++d)
      if (byDevice[d] && !initError) {
        drv.cuStreamSynchronize(byDevice[d]);
        pool().forgetStream(byDevice[d]);
        drv.cuStreamDestroy(byDevice[d]);
      }
  }
};
thread_local ThreadStreams threadStreams;

bool isThreadStream(CUstream s) {
  for (CUstream t : threadStreams.byDevice)
    if (s && t == s)
      return true;
  return false;
}

/// This thread's stream for the default device, created on first use; null
/// with an error recorded if there is none.
CUstream threadStream() {
  if (defaultDevice < 0 || defaultDevice >= numDevices) {
    moe::rt::cuda::recordError("CUDA device " + std::to_string(defaultDevice) +
                               " does not exist (" +
                               std::to_string(numDevices) + " visible)");
    return nullptr;
  }
  std::vector<CUstream> &streams = threadStreams.byDevice;
  if (streams.size() <= size_t(defaultDevice))
    streams.resize(defaultDevice + 1, nullptr);
  CUstream &stream = streams[defaultDevice];
  if (!stream) {
    ScopedContext scope;
    if (scope.ok())
      check(drv.cuStreamCreate(&stream, kStreamNonBlocking), "cuStreamCreate");
  }
  return stream;
}

//===----------------------------------------------------------------------===//
// Stream capture (CUDA graphs)
//===----------------------------------------------------------------------===//

/// This thread's capture in progress (moe::rt::cuda::beginCapture): its
/// stream, and the blocks allocated during it, which belong to the graph
/// (their frees are withheld until the graph is destroyed, so that its
/// replays find the buffers its kernels were captured with).
struct Capture {
  CUstream stream = nullptr;
  std::vector<CUdeviceptr> blocks;
  size_t bytes = 0;
};
thread_local std::optional<Capture> capture;

/// Whether `p` is a block of this thread's capture in progress.
bool heldByCapture(CUdeviceptr p) {
  return capture &&
         std::find(capture->blocks.begin(), capture->blocks.end(), p) !=
             capture->blocks.end();
}

//===----------------------------------------------------------------------===//
// MOE_CUDA_PROFILE: per-kernel times
//===----------------------------------------------------------------------===//

/// With MOE_CUDA_PROFILE=1 every launch is timed with CUDA events (it is
/// synchronous anyway) and a table of kernels by total time goes to stderr
/// at exit: a first look at where a layer's time goes without ncu/nsys.
bool profiling() {
  static const bool on = flag("MOE_CUDA_PROFILE");
  return on;
}

/// With MOE_CUDA_SYNC=1 every launch is followed by a wait for its stream,
/// and a failure there is recorded naming the kernel and its launch sizes.
/// Launches are asynchronous otherwise, so a kernel that faults (an illegal
/// address, a misaligned access) shows only as the failure of a later wait,
/// the layer's last one: this mode says which kernel it was (the first
/// thing to run when a GPU check fails with a CUDA error; slow).
bool syncLaunches() {
  static const bool on = flag("MOE_CUDA_SYNC");
  return on;
}

struct KernelStats {
  uint64_t calls = 0;
  double totalMs = 0, maxMs = 0;
};
std::mutex profileMutex;
std::unordered_map<CUfunction, std::string> functionNames;
std::map<std::string, KernelStats> kernelStats;

/// What this thread already did for a kernel function, so that the launch
/// path, which gpu-to-llvm's host code runs through mgpuModuleGetFunction
/// and mgpuLaunchKernel at every launch, does it once: look the function up
/// in its module, record its name (for launch errors and the profile) and
/// raise its dynamic shared memory limit. A module unload bumps
/// `moduleGeneration`, and every thread's entries go then: the driver may
/// give a later module the unloaded one's handle, and its functions the
/// old functions' handles with their names and limits unset.
struct FunctionState {
  /// The dynamic shared memory the function's attribute was raised to.
  int32_t smemLimit = 48 * 1024;
};
struct Lookup {
  CUfunction fn;
  std::string name;
};
struct PairHash {
  size_t operator()(const std::pair<CUmodule, const char *> &k) const {
    return std::hash<const void *>()(k.first) * 31 +
           std::hash<const void *>()(k.second);
  }
};
struct ThreadKernels {
  uint64_t generation = 0;
  std::unordered_map<CUfunction, FunctionState> functions;
  /// mgpuModuleGetFunction's answers by module and name pointer (the host
  /// code passes the same string constant each time; the name is compared
  /// too).
  std::unordered_map<std::pair<CUmodule, const char *>, Lookup, PairHash>
      lookups;
};
std::atomic<uint64_t> moduleGeneration{0};

/// This thread's kernels, emptied when a module was unloaded since.
ThreadKernels &threadKernels() {
  thread_local ThreadKernels known;
  uint64_t now = moduleGeneration.load(std::memory_order_acquire);
  if (known.generation != now) {
    known.functions.clear();
    known.lookups.clear();
    known.generation = now;
  }
  return known;
}

void printProfile() {
  std::lock_guard<std::mutex> lock(profileMutex);
  if (kernelStats.empty())
    return;
  std::vector<std::pair<std::string, KernelStats>> rows(kernelStats.begin(),
                                                        kernelStats.end());
  std::sort(rows.begin(), rows.end(), [](const auto &a, const auto &b) {
    return a.second.totalMs > b.second.totalMs;
  });
  double total = 0;
  for (auto &r : rows)
    total += r.second.totalMs;
  std::fprintf(stderr, "moe-cuda-profile: %zu kernels, %.3f ms in all\n",
               rows.size(), total);
  std::fprintf(stderr, "moe-cuda-profile: %8s %11s %11s %11s %6s  %s\n",
               "calls", "total ms", "mean us", "max us", "%", "kernel");
  for (auto &[name, st] : rows)
    std::fprintf(stderr, "moe-cuda-profile: %8llu %11.3f %11.1f %11.1f %6.1f  %s\n",
                 (unsigned long long)st.calls, st.totalMs,
                 1e3 * st.totalMs / double(st.calls), 1e3 * st.maxMs,
                 total > 0 ? 100.0 * st.totalMs / total : 0.0, name.c_str());
}

/// "kernel <name>", the name mgpuModuleGetFunction looked `fn` up by, or
/// "a kernel".
std::string kernelName(CUfunction fn) {
  std::lock_guard<std::mutex> lock(profileMutex);
  auto name = functionNames.find(fn);
  return name == functionNames.end() ? "a kernel" : "kernel " + name->second;
}

void recordKernelTime(CUfunction fn, float ms) {
  std::lock_guard<std::mutex> lock(profileMutex);
  static bool registered = (std::atexit(printProfile), true);
  (void)registered;
  auto name = functionNames.find(fn);
  KernelStats &st =
      kernelStats[name == functionNames.end() ? "(unnamed)" : name->second];
  ++st.calls;
  st.totalMs += ms;
  st.maxMs = std::max(st.maxMs, double(ms));
}

} // namespace

//===----------------------------------------------------------------------===//
// C++ API
//===----------------------------------------------------------------------===//

namespace moe::rt::cuda {

Status status() {
  if (available())
    return Status::ok();
  return Status::error(*initError);
}

void setDevice(int ordinal) { defaultDevice = ordinal; }

int deviceCount() { return available() ? numDevices : 0; }

Result<DeviceInfo> deviceInfo(int ordinal) {
  if (!available())
    return Status::error(*initError);
  if (ordinal < 0 || ordinal >= numDevices)
    return Status::error("CUDA device " + std::to_string(ordinal) +
                         " does not exist (" + std::to_string(numDevices) +
                         " visible)");
  DeviceInfo info;
  info.ordinal = ordinal;
  CUdevice dev;
  if (CUresult r = drv.cuDeviceGet(&dev, ordinal); r != kSuccess)
    return Status::error("cuDeviceGet failed: " + describe(r));
  char name[256] = {0};
  if (drv.cuDeviceGetName(name, sizeof(name) - 1, dev) == kSuccess)
    info.name = name;
  int v = 0;
  if (drv.cuDeviceGetAttribute(&v, kAttrCCMajor, dev) == kSuccess)
    info.major = v;
  if (drv.cuDeviceGetAttribute(&v, kAttrCCMinor, dev) == kSuccess)
    info.minor = v;
  if (drv.cuDeviceGetAttribute(&v, kAttrManaged, dev) == kSuccess)
    info.managedMemory = v != 0;
  if (drv.cuDeviceGetAttribute(&v, kAttrConcurrentManaged, dev) == kSuccess)
    info.concurrentManagedAccess = v != 0;
  size_t bytes = 0;
  if (drv.cuDeviceTotalMem(&bytes, dev) == kSuccess)
    info.totalMemory = bytes;
  if (drv.cuDriverGetVersion(&v) == kSuccess)
    info.driverVersion = v;
  return info;
}

Status takeError() {
  if (!threadError)
    return Status::ok();
  Status s = Status::error(std::move(*threadError));
  threadError.reset();
  return s;
}

void recordError(const std::string &message) {
  if (!threadError)
    threadError = message;
}

/// Runs `fn` with this thread's recorded error set aside and returns the
/// error `fn` recorded (the C++ API reports it itself), leaving an earlier
/// error of the thread in place for takeError().
template <typename Fn>
static std::optional<std::string> errorOf(Fn &&fn) {
  std::optional<std::string> earlier = std::move(threadError);
  threadError.reset();
  fn();
  std::optional<std::string> failure = std::move(threadError);
  threadError = std::move(earlier);
  return failure;
}

Result<void *> allocManaged(size_t bytes) {
  if (!available())
    return Status::error(*initError);
  ScopedContext scope;
  if (!scope.ok())
    return takeError();
  CUdeviceptr p = 0;
  std::optional<std::string> failure = errorOf([&] {
    p = pool().allocate(bytes ? bytes : 1, /*managed=*/true, defaultDevice,
                        /*stream=*/nullptr);
  });
  if (!p)
    return Status::error("allocating " + std::to_string(bytes) +
                         " bytes of managed memory: " +
                         failure.value_or("unknown error"));
  return reinterpret_cast<void *>(static_cast<uintptr_t>(p));
}

/// Frees `ptr` once the work queued on `stream` so far has run (null: now).
static void freeOnStream(void *ptr, CUstream stream) {
  if (!ptr)
    return;
  if (!available()) {
    std::free(ptr); // host fallback of mgpuMemAlloc
    return;
  }
  if (heldByCapture(devptr(ptr)))
    return; // the graph's until it is destroyed
  ScopedContext scope;
  if (!pool().deallocate(devptr(ptr), stream)) {
    // The driver must not free it under a kernel still queued.
    if (stream)
      check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize");
    check(drv.cuMemFree(devptr(ptr)), "cuMemFree");
  }
}

void freeManaged(void *ptr) { freeOnStream(ptr, nullptr); }

bool isDeviceMemory(const void *ptr) {
  return ptr && available() && pool().contains(ptr);
}

/// Runs one driver copy in the default device's context and returns its
/// error (an earlier error of this thread's mgpu* calls stays recorded).
template <typename Fn>
static Status runCopy(const char *call, size_t bytes, Fn &&copy) {
  if (!bytes)
    return Status::ok();
  if (!available())
    return Status::error(*initError);
  std::optional<std::string> failure = errorOf([&] {
    ScopedContext scope;
    if (scope.ok())
      check(copy(), call);
  });
  if (failure)
    return Status::error(*failure);
  return Status::ok();
}

Status copyToDevice(void *dst, const void *src, size_t bytes) {
  return runCopy("cuMemcpyHtoD", bytes,
                 [&] { return drv.cuMemcpyHtoD(devptr(dst), src, bytes); });
}

Status copyToHost(void *dst, const void *src, size_t bytes) {
  return runCopy("cuMemcpyDtoH", bytes,
                 [&] { return drv.cuMemcpyDtoH(dst, devptr(src), bytes); });
}

Status copyOnDevice(void *dst, const void *src, size_t bytes) {
  return runCopy("cuMemcpyAsync", bytes, [&] {
    CUresult r = drv.cuMemcpyAsync(devptr(dst), devptr(src), bytes, nullptr);
    return r == kSuccess ? drv.cuCtxSynchronize() : r;
  });
}

void releaseCachedMemory() {
  if (!available())
    return;
  ScopedContext scope;
  if (scope.ok())
    pool().release();
}

Status synchronize() {
  if (!available())
    return Status::error(*initError);
  ScopedContext scope;
  if (scope.ok())
    check(drv.cuCtxSynchronize(), "cuCtxSynchronize");
  return takeError();
}

int device() { return defaultDevice; }

std::string captureBlocker() {
  if (!available())
    return *initError;
  if (!graphSymbolMissing.empty())
    return "the driver lacks " + graphSymbolMissing;
  if (profiling())
    return "MOE_CUDA_PROFILE waits for every launch";
  if (syncLaunches())
    return "MOE_CUDA_SYNC waits for every launch";
  if (pool().poisons())
    return "MOE_CUDA_POOL_POISON waits for every allocation";
  return "";
}

Status beginCapture() {
  if (std::string why = captureBlocker(); !why.empty())
    return Status::error("cannot capture a CUDA graph: " + why);
  if (capture)
    return Status::error("this thread is capturing a CUDA graph already");
  std::optional<std::string> failure = errorOf([&] {
    ScopedContext scope;
    if (!scope.ok())
      return;
    if (CUstream stream = threadStream();
        stream && check(drv.cuStreamBeginCapture(stream, kCaptureModeRelaxed),
                        "cuStreamBeginCapture"))
      capture.emplace(Capture{stream, {}, 0});
  });
  if (failure)
    return Status::error(*failure);
  return Status::ok();
}

Result<std::shared_ptr<Graph>> endCapture() {
  if (!capture)
    return Status::error("this thread is not capturing a CUDA graph");
  Capture c = std::move(*capture);
  capture.reset();
  // The graph owns the blocks from here: its destructor frees them (and
  // the executable graph, once there is one).
  std::shared_ptr<Graph> g(new Graph());
  for (CUdeviceptr p : c.blocks)
    g->blocks_.push_back(reinterpret_cast<void *>(static_cast<uintptr_t>(p)));
  g->bytes_ = c.bytes;
  g->device_ = defaultDevice;
  // What the captured mgpu* calls recorded (a refused launch, a failed
  // allocation): the graph would lack that work.
  Status during = takeError();
  std::optional<std::string> failure = errorOf([&] {
    ScopedContext scope;
    if (!scope.ok())
      return;
    CUgraph graph = nullptr;
    if (!check(drv.cuStreamEndCapture(c.stream, &graph), "cuStreamEndCapture"))
      return;
    CUgraphExec exec = nullptr;
    if (check(drv.cuGraphInstantiateWithFlags(&exec, graph, 0),
              "cuGraphInstantiateWithFlags"))
      g->exec_ = exec;
    check(drv.cuGraphDestroy(graph), "cuGraphDestroy");
  });
  if (!during)
    return Status::error("during the CUDA graph's capture: " +
                         during.message());
  if (failure)
    return Status::error("capturing a CUDA graph: " + *failure);
  return g;
}

Status launch(const Graph &graph) {
  if (!available())
    return Status::error(*initError);
  int saved = defaultDevice;
  defaultDevice = graph.device_;
  std::optional<std::string> failure = errorOf([&] {
    ScopedContext scope;
    if (!scope.ok())
      return;
    if (CUstream stream = threadStream();
        stream &&
        check(drv.cuGraphLaunch(static_cast<CUgraphExec>(graph.exec_), stream),
              "cuGraphLaunch"))
      check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize");
  });
  defaultDevice = saved;
  if (failure)
    return Status::error(*failure);
  return Status::ok();
}

Graph::~Graph() {
  if (!available())
    return;
  int saved = defaultDevice;
  defaultDevice = device_;
  // A failure here has no caller to go to; it must not become the thread's
  // error for a later call either.
  (void)errorOf([&] {
    {
      ScopedContext scope;
      if (scope.ok() && exec_)
        check(drv.cuGraphExecDestroy(static_cast<CUgraphExec>(exec_)),
              "cuGraphExecDestroy");
    }
    for (void *p : blocks_)
      freeOnStream(p, nullptr);
  });
  defaultDevice = saved;
}

Status copyOnDeviceQueued(void *dst, const void *src, size_t bytes) {
  return runCopy("cuMemcpyAsync", bytes, [&] {
    CUstream stream = threadStream();
    return stream ? drv.cuMemcpyAsync(devptr(dst), devptr(src), bytes, stream)
                  : kSuccess; // threadStream recorded why
  });
}

} // namespace moe::rt::cuda

//===----------------------------------------------------------------------===//
// The mgpu* ABI
//===----------------------------------------------------------------------===//

MOE_CUDA_EXPORT CUmodule mgpuModuleLoad(void *data, size_t /*size*/) {
  if (!available()) {
    recordUnavailable("loading the GPU module");
    return nullptr;
  }
  ScopedContext scope;
  CUmodule module = nullptr;
  if (scope.ok())
    check(drv.cuModuleLoadData(&module, data), "cuModuleLoadData");
  return module;
}

/// PTX (gpu-module-to-binary format=isa) compiled by the driver at load.
MOE_CUDA_EXPORT CUmodule mgpuModuleLoadJIT(void *data, int optLevel) {
  if (!available()) {
    recordUnavailable("loading the GPU module");
    return nullptr;
  }
  ScopedContext scope;
  if (!scope.ok())
    return nullptr;
  char log[4096] = {0};
  int options[] = {kJitErrorLogBuffer, kJitErrorLogBufferSize,
                   kJitOptimizationLevel};
  void *values[] = {log, reinterpret_cast<void *>(uintptr_t(sizeof(log) - 1)),
                    reinterpret_cast<void *>(
                        uintptr_t(optLevel < 0 ? 0 : optLevel > 4 ? 4
                                                                  : optLevel))};
  CUmodule module = nullptr;
  CUresult r = drv.cuModuleLoadDataEx(&module, data, 3, options, values);
  if (r != kSuccess)
    moe::rt::cuda::recordError("cuModuleLoadDataEx (PTX JIT) failed: " +
                               describe(r) + (log[0] ? ": " : "") + log);
  return module;
}

MOE_CUDA_EXPORT void mgpuModuleUnload(CUmodule module) {
  if (!module || !available())
    return;
  ScopedContext scope;
  check(drv.cuModuleUnload(module), "cuModuleUnload");
  // Its function handles may come back for another module's functions.
  moduleGeneration.fetch_add(1, std::memory_order_release);
}

MOE_CUDA_EXPORT CUfunction mgpuModuleGetFunction(CUmodule module,
                                                 const char *name) {
  if (!available()) {
    recordUnavailable("looking up a kernel");
    return nullptr;
  }
  if (!module) {
    moe::rt::cuda::recordError(std::string("kernel ") + name +
                               ": the GPU module is not loaded");
    return nullptr;
  }
  ThreadKernels &known = threadKernels();
  auto [it, added] = known.lookups.try_emplace({module, name});
  if (!added && it->second.name == name)
    return it->second.fn;
  CUfunction fn = nullptr;
  if (!check(drv.cuModuleGetFunction(&fn, module, name),
             "cuModuleGetFunction")) {
    known.lookups.erase(it);
    return nullptr;
  }
  it->second = Lookup{fn, name};
  // Kept for every kernel, so that launch errors can name theirs.
  {
    std::lock_guard<std::mutex> lock(profileMutex);
    functionNames[fn] = name;
  }
  return fn;
}

/// Launch sizes are intptr_t (MLIR's index) rather than unsigned. An empty
/// grid (a zero token count) launches nothing, which is not an error.
MOE_CUDA_EXPORT void mgpuLaunchKernel(CUfunction fn, intptr_t gridX,
                                      intptr_t gridY, intptr_t gridZ,
                                      intptr_t blockX, intptr_t blockY,
                                      intptr_t blockZ, int32_t smem,
                                      CUstream stream, void **params,
                                      void **extra, size_t /*paramsCount*/) {
  if (gridX == 0 || gridY == 0 || gridZ == 0)
    return;
  if (!available()) {
    recordUnavailable("kernel launch skipped");
    return;
  }
  if (!fn) {
    moe::rt::cuda::recordError("kernel launch skipped: no kernel function");
    return;
  }
  auto sizes = [&] {
    return " (grid " + std::to_string(gridX) + " x " + std::to_string(gridY) +
           " x " + std::to_string(gridZ) + ", block " +
           std::to_string(blockX) + " x " + std::to_string(blockY) + " x " +
           std::to_string(blockZ) + ", " + std::to_string(smem) +
           " bytes of dynamic shared memory)";
  };
  const intptr_t limit = 0xffffffffll;
  if (gridX < 0 || gridY < 0 || gridZ < 0 || blockX <= 0 || blockY <= 0 ||
      blockZ <= 0 || gridX > limit || gridY > limit || gridZ > limit ||
      blockX > limit || blockY > limit || blockZ > limit || smem < 0) {
    moe::rt::cuda::recordError("kernel launch skipped: invalid launch size "
                               "for " + kernelName(fn) + sizes());
    return;
  }
  ScopedContext scope;
  if (!scope.ok())
    return;
  // Dynamic shared memory beyond the default 48 KiB needs an opt-in, asked
  // for once per thread and function (threadKernels).
  if (smem > 48 * 1024) {
    FunctionState &state = threadKernels().functions[fn];
    if (smem > state.smemLimit) {
      CUdevice dev;
      int maxOptin = 0;
      if (drv.cuDeviceGet(&dev, defaultDevice) == kSuccess)
        drv.cuDeviceGetAttribute(&maxOptin, kAttrMaxSmemOptin, dev);
      if (smem > maxOptin) {
        moe::rt::cuda::recordError(
            "kernel launch skipped: " + kernelName(fn) + " asks for " +
            std::to_string(smem) +
            " bytes of dynamic shared memory, the device allows " +
            std::to_string(maxOptin));
        return;
      }
      if (!check(drv.cuFuncSetAttribute(fn, kFuncAttrMaxDynamicSmem, smem),
                 "cuFuncSetAttribute"))
        return;
      state.smemLimit = smem;
    }
  }
  // Profiling: events around the launch (timing enabled), one pair per
  // thread, waited for at once.
  thread_local CUevent timers[2] = {nullptr, nullptr};
  if (profiling() && !drv.cuEventElapsedTime) {
    static std::once_flag warned;
    std::call_once(warned, [] {
      std::fprintf(stderr, "moe-cuda-profile: the driver has no "
                           "cuEventElapsedTime; kernels are not timed\n");
    });
  }
  bool timed = profiling() && drv.cuEventElapsedTime &&
               (timers[0] || (check(drv.cuEventCreate(&timers[0], 0),
                                    "cuEventCreate") &&
                              check(drv.cuEventCreate(&timers[1], 0),
                                    "cuEventCreate")));
  if (timed)
    check(drv.cuEventRecord(timers[0], stream), "cuEventRecord");
  CUresult r =
      drv.cuLaunchKernel(fn, unsigned(gridX), unsigned(gridY), unsigned(gridZ),
                         unsigned(blockX), unsigned(blockY), unsigned(blockZ),
                         unsigned(smem), stream, params, extra);
  bool launched = r == kSuccess;
  if (!launched)
    moe::rt::cuda::recordError("cuLaunchKernel of " + kernelName(fn) +
                               sizes() + " failed: " + describe(r));
  // The end event goes in before any MOE_CUDA_SYNC wait, so that the wait's
  // host round trip is not part of the kernel's time.
  timed = timed && launched &&
          check(drv.cuEventRecord(timers[1], stream), "cuEventRecord");
  // MOE_CUDA_SYNC: this kernel's faults surface here, named.
  if (launched && syncLaunches()) {
    if (CUresult w = drv.cuStreamSynchronize(stream); w != kSuccess) {
      moe::rt::cuda::recordError(kernelName(fn) + sizes() +
                                 " failed (MOE_CUDA_SYNC): " + describe(w));
      return;
    }
  }
  if (timed &&
      check(drv.cuEventSynchronize(timers[1]), "cuEventSynchronize")) {
    float ms = 0;
    if (drv.cuEventElapsedTime(&ms, timers[0], timers[1]) == kSuccess)
      recordKernelTime(fn, ms);
  }
}

/// Thread-block clusters are not produced by moe-to-nvvm yet; a launch with
/// a trivial cluster is an ordinary launch.
MOE_CUDA_EXPORT void
mgpuLaunchClusterKernel(CUfunction fn, intptr_t clusterX, intptr_t clusterY,
                        intptr_t clusterZ, intptr_t gridX, intptr_t gridY,
                        intptr_t gridZ, intptr_t blockX, intptr_t blockY,
                        intptr_t blockZ, int32_t smem, CUstream stream,
                        void **params, void **extra, size_t paramsCount) {
  if (clusterX != 1 || clusterY != 1 || clusterZ != 1) {
    moe::rt::cuda::recordError(
        "kernel launch skipped: thread-block clusters are not supported by "
        "the moe runtime yet");
    return;
  }
  mgpuLaunchKernel(fn, gridX, gridY, gridZ, blockX, blockY, blockZ, smem,
                   stream, params, extra, paramsCount);
}

MOE_CUDA_EXPORT CUstream mgpuStreamCreate() {
  if (!available())
    return nullptr; // reported by the launch or copy that uses it
  return threadStream();
}

MOE_CUDA_EXPORT void mgpuStreamDestroy(CUstream stream) {
  if (!stream || !available() || isThreadStream(stream))
    return;
  ScopedContext scope;
  check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize");
  pool().forgetStream(stream);
  check(drv.cuStreamDestroy(stream), "cuStreamDestroy");
}

MOE_CUDA_EXPORT void mgpuStreamSynchronize(CUstream stream) {
  if (!available())
    return;
  // Captured: the graph's launch waits for it instead.
  if (capture && stream == capture->stream)
    return;
  ScopedContext scope;
  if (scope.ok())
    check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize");
}

MOE_CUDA_EXPORT void mgpuStreamWaitEvent(CUstream stream, CUevent event) {
  if (!available() || !event)
    return;
  ScopedContext scope;
  check(drv.cuStreamWaitEvent(stream, event, 0), "cuStreamWaitEvent");
}

MOE_CUDA_EXPORT CUevent mgpuEventCreate() {
  if (!available())
    return nullptr;
  ScopedContext scope;
  CUevent event = nullptr;
  if (scope.ok())
    check(drv.cuEventCreate(&event, kEventDisableTiming), "cuEventCreate");
  return event;
}

MOE_CUDA_EXPORT void mgpuEventDestroy(CUevent event) {
  if (!event || !available())
    return;
  ScopedContext scope;
  check(drv.cuEventDestroy(event), "cuEventDestroy");
}

MOE_CUDA_EXPORT void mgpuEventSynchronize(CUevent event) {
  if (!event || !available())
    return;
  ScopedContext scope;
  check(drv.cuEventSynchronize(event), "cuEventSynchronize");
}

MOE_CUDA_EXPORT void mgpuEventRecord(CUevent event, CUstream stream) {
  if (!event || !available())
    return;
  ScopedContext scope;
  check(drv.cuEventRecord(event, stream), "cuEventRecord");
}

/// gpu.alloc: device memory, or managed memory for `host_shared` (the form
/// moe-to-nvvm uses for every host buffer). Without CUDA, host memory, so
/// that the artifact's host code still runs to its end. Zero bytes give a
/// valid allocation (a zero token count allocates empty buffers).
MOE_CUDA_EXPORT void *mgpuMemAlloc(uint64_t bytes, CUstream stream,
                                   bool isHostShared) {
  size_t n = bytes ? bytes : 1;
  if (!available()) {
    recordUnavailable("GPU allocation on the host");
    return std::malloc(n);
  }
  ScopedContext scope;
  if (!scope.ok())
    return nullptr;
  // A synchronous gpu.alloc (null stream: moe-to-nvvm's host_shared ones)
  // is used by this thread's kernels and, after a wait on it, its host
  // code: this thread's stream.
  if (!stream && size_t(defaultDevice) < threadStreams.byDevice.size())
    stream = threadStreams.byDevice[defaultDevice];
  CUdeviceptr p = pool().allocate(n, isHostShared, defaultDevice, stream);
  if (p && capture) {
    capture->blocks.push_back(p);
    capture->bytes += n;
  }
  return p ? reinterpret_cast<void *>(static_cast<uintptr_t>(p)) : nullptr;
}

/// gpu.dealloc: in stream order on `stream` (see Pool).
MOE_CUDA_EXPORT void mgpuMemFree(void *ptr, CUstream stream) {
  moe::rt::cuda::freeOnStream(ptr, stream);
}

MOE_CUDA_EXPORT void mgpuMemcpy(void *dst, void *src, size_t bytes,
                                CUstream stream) {
  if (!available()) {
    std::memmove(dst, src, bytes); // both are host memory then
    return;
  }
  ScopedContext scope;
  if (scope.ok())
    check(drv.cuMemcpyAsync(devptr(dst), devptr(src), bytes, stream),
          "cuMemcpyAsync");
}

MOE_CUDA_EXPORT void mgpuMemset32(void *dst, unsigned value, size_t count,
                                  CUstream stream) {
  if (!available()) {
    auto *p = static_cast<uint32_t *>(dst);
    for (size_t i = 0; i < count; ++i)
      p[i] = value;
    return;
  }
  ScopedContext scope;
  if (scope.ok())
    check(drv.cuMemsetD32Async(devptr(dst), value, count, stream),
          "cuMemsetD32Async");
}

MOE_CUDA_EXPORT void mgpuMemset16(void *dst, unsigned short value,
                                  size_t count, CUstream stream) {
  if (!available()) {
    auto *p = static_cast<uint16_t *>(dst);
    for (size_t i = 0; i < count; ++i)
      p[i] = value;
    return;
  }
  ScopedContext scope;
  if (scope.ok())
    check(drv.cuMemsetD16Async(devptr(dst), value, count, stream),
          "cuMemsetD16Async");
}

MOE_CUDA_EXPORT void mgpuMemHostRegister(void *ptr, uint64_t bytes) {
  if (!available())
    return;
  ScopedContext scope;
  if (scope.ok())
    check(drv.cuMemHostRegister(ptr, bytes, 0), "cuMemHostRegister");
}

MOE_CUDA_EXPORT void mgpuMemHostUnregister(void *ptr) {
  if (!available())
    return;
  ScopedContext scope;
  if (scope.ok())
    check(drv.cuMemHostUnregister(ptr), "cuMemHostUnregister");
}

namespace {
/// A ranked memref descriptor {allocated, aligned, offset, sizes[rank],
/// strides[rank]} seen through its first fields.
struct MemRefHeader {
  char *allocated, *aligned;
  int64_t offset;
  int64_t sizesAndStrides[1];
};
} // namespace

/// gpu.host_register: registers a dense memref's data with the driver.
MOE_CUDA_EXPORT void mgpuMemHostRegisterMemRef(int64_t rank,
                                               void *descriptor,
                                               int64_t elementBytes) {
  auto *d = static_cast<MemRefHeader *>(descriptor);
  int64_t elements = 1;
  for (int64_t i = 0; i < rank; ++i)
    elements *= d->sizesAndStrides[i];
  mgpuMemHostRegister(d->aligned + d->offset * elementBytes,
                      uint64_t(elements * elementBytes));
}

MOE_CUDA_EXPORT void mgpuMemHostUnregisterMemRef(int64_t /*rank*/,
                                                 void *descriptor,
                                                 int64_t elementBytes) {
  auto *d = static_cast<MemRefHeader *>(descriptor);
  mgpuMemHostUnregister(d->aligned + d->offset * elementBytes);
}

//===----------------------------------------------------------------------===//
// TMA tensor maps
//===----------------------------------------------------------------------===//

namespace {
/// A tensor map's parameters, which determine its 128 bytes: the key of the
/// maps made so far.
struct TensorMapKey {
  int device, dataType, rank, interleave, swizzle, l2Promotion, oobFill;
  uintptr_t address;
  uint64_t dims[5], strides[4];
  unsigned box[5];
  bool operator<(const TensorMapKey &o) const {
    return std::memcmp(this, &o, sizeof(TensorMapKey)) < 0;
  }
};
std::mutex tensorMapMutex;
/// Device copies of the maps made, by parameters; never freed (kernels in
/// flight may read them, and a map is a pure function of its key, so a
/// later tensor at the same address and shape reuses it correctly).
std::map<TensorMapKey, CUdeviceptr> &tensorMaps =
    *new std::map<TensorMapKey, CUdeviceptr>;
/// Managed memory the maps are carved from (64-byte aligned slots).
CUdeviceptr tensorMapSlab = 0;
size_t tensorMapSlabUsed = 0;
constexpr size_t kTensorMapBytes = 128, kTensorMapSlabBytes = 64 * 1024;
/// At most this many distinct maps per process.
constexpr size_t kMaxTensorMaps = 4096;

/// Bytes of an element of CUtensorMapDataType `t`, 0 if unknown.
int tensorMapElementBytes(int64_t t) {
  static const int bytes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
  return t >= 0 && t < int64_t(std::size(bytes)) ? bytes[t] : 0;
}
} // namespace

namespace {
/// The map of `key` (dims, box and strides innermost first, strides in
/// bytes), made once and kept: the limits cuTensorMapEncodeTiled documents
/// are checked first, so that an error says which one a shape breaks
/// (dimensions named as the memref numbers them, outermost first). Null with
/// an error recorded.
void *tensorMapFor(TensorMapKey key, int64_t stride0) {
  auto fail = [](const std::string &why) -> void * {
    moe::rt::cuda::recordError("TMA tensor map: " + why);
    return nullptr;
  };
  if (!available()) {
    recordUnavailable("making a TMA tensor map");
    return nullptr;
  }
  if (!drv.cuTensorMapEncodeTiled)
    return fail("the driver has no cuTensorMapEncodeTiled (CUDA 12.0+)");
  int64_t rank = key.rank;
  if (rank < 1 || rank > 5)
    return fail("rank " + std::to_string(rank) + " (1 to 5 allowed)");
  int elt = tensorMapElementBytes(key.dataType);
  if (!elt)
    return fail("unknown data type " + std::to_string(key.dataType));
  for (int64_t i = 0; i < rank; ++i) {
    std::string m = std::to_string(rank - 1 - i);
    if (key.dims[i] < 1)
      return fail("dimension " + m + " is empty");
    if (key.box[i] < 1 || key.box[i] > 256)
      return fail("box dimension " + m + " is " + std::to_string(key.box[i]) +
                  " (1 to 256 allowed)");
  }
  if (stride0 != 1)
    return fail("the innermost dimension is not contiguous (stride " +
                std::to_string(stride0) + ")");
  if (key.address % 16)
    return fail("the tensor's address is not 16-byte aligned");
  for (int64_t i = 0; i + 1 < rank; ++i)
    if (key.strides[i] % 16)
      return fail("the stride of dimension " + std::to_string(rank - 2 - i) +
                  " is " + std::to_string(key.strides[i]) +
                  " bytes, not a multiple of 16");
  uint64_t innerBytes = uint64_t(key.box[0]) * uint64_t(elt);
  if (key.interleave == 0 && innerBytes % 16)
    return fail("the box's inner dimension is " + std::to_string(innerBytes) +
                " bytes, not a multiple of 16");
  // CU_TENSOR_MAP_SWIZZLE_32B / 64B / 128B: the inner box at most the span.
  if (key.swizzle >= 1 && key.swizzle <= 3 &&
      innerBytes > (16ull << key.swizzle))
    return fail("the box's inner dimension is " + std::to_string(innerBytes) +
                " bytes, more than the swizzle span of " +
                std::to_string(16 << key.swizzle));
  key.device = defaultDevice;

  std::lock_guard<std::mutex> lock(tensorMapMutex);
  if (auto it = tensorMaps.find(key); it != tensorMaps.end())
    return reinterpret_cast<void *>(static_cast<uintptr_t>(it->second));
  if (tensorMaps.size() >= kMaxTensorMaps)
    return fail("more than " + std::to_string(kMaxTensorMaps) +
                " distinct tensor maps in this process");
  alignas(64) unsigned char map[kTensorMapBytes] = {};
  unsigned elementStrides[5] = {1, 1, 1, 1, 1};
  ScopedContext scope;
  if (!scope.ok())
    return nullptr;
  if (CUresult r = drv.cuTensorMapEncodeTiled(
          map, key.dataType, unsigned(rank),
          reinterpret_cast<void *>(key.address), key.dims, key.strides, key.box,
          elementStrides, key.interleave, key.swizzle, key.l2Promotion,
          key.oobFill);
      r != kSuccess)
    return fail("cuTensorMapEncodeTiled failed: " + describe(r));
  if (!tensorMapSlab ||
      tensorMapSlabUsed + kTensorMapBytes > kTensorMapSlabBytes) {
    CUdeviceptr slab = 0;
    if (!check(
            drv.cuMemAllocManaged(&slab, kTensorMapSlabBytes, kMemAttachGlobal),
            "cuMemAllocManaged"))
      return nullptr;
    tensorMapSlab = slab;
    tensorMapSlabUsed = 0;
  }
  CUdeviceptr p = tensorMapSlab + tensorMapSlabUsed;
  tensorMapSlabUsed += kTensorMapBytes;
  std::memcpy(reinterpret_cast<void *>(static_cast<uintptr_t>(p)), map,
              kTensorMapBytes);
  tensorMaps.emplace(key, p);
  return reinterpret_cast<void *>(static_cast<uintptr_t>(p));
}
} // namespace

/// nvgpu.tma.create.descriptor's host call (MLIR 22's signature; the enums
/// as i64, as the lowering passes them): the CUtensorMap of the memref
/// `rankedDescriptor` (a StridedMemRefType of rank `tensorRank`), tiled by
/// `inputBoxDims` (outermost first), in device-readable memory. Unlike
/// upstream's wrapper, which allocates and copies a new map at every call,
/// a map is made once per set of parameters and kept (managed memory
/// written by the host: no stream work, so a CUDA graph capture may call
/// this); calls with resident weights get the same pointer every time.
/// Null with an error recorded (tensorMapFor).
MOE_CUDA_EXPORT void *
mgpuTensorMapEncodeTiledMemref(int64_t tensorRank, void *rankedDescriptor,
                               int64_t dataType, int64_t interleave,
                               int64_t swizzle, int64_t l2Promotion,
                               int64_t oobFill, int64_t *inputBoxDims) {
  if (tensorRank < 1 || tensorRank > 5 || !rankedDescriptor || !inputBoxDims) {
    moe::rt::cuda::recordError("TMA tensor map: rank " +
                               std::to_string(tensorRank) +
                               " (1 to 5 allowed) or a null argument");
    return nullptr;
  }
  // StridedMemRefType<T, rank>: allocated, aligned, offset, sizes, strides.
  auto *words = static_cast<int64_t *>(rankedDescriptor);
  char *aligned = *reinterpret_cast<char **>(&words[1]);
  const int64_t *sizes = words + 3, *strides = words + 3 + tensorRank;
  int64_t elt = std::max(tensorMapElementBytes(dataType), 1);
  TensorMapKey key{};
  key.dataType = int(dataType);
  key.rank = int(tensorRank);
  key.interleave = int(interleave);
  key.swizzle = int(swizzle);
  key.l2Promotion = int(l2Promotion);
  key.oobFill = int(oobFill);
  key.address = reinterpret_cast<uintptr_t>(aligned + words[2] * elt);
  // The driver's dimension 0 is the innermost (the memref's last).
  for (int64_t i = 0; i < tensorRank; ++i) {
    int64_t m = tensorRank - 1 - i;
    key.dims[i] = uint64_t(std::max<int64_t>(sizes[m], 0));
    key.box[i] = unsigned(std::clamp<int64_t>(inputBoxDims[m], 0, 1 << 20));
    if (i > 0)
      key.strides[i - 1] = uint64_t(strides[m]) * uint64_t(elt);
  }
  return tensorMapFor(key, strides[tensorRank - 1]);
}

/// The expert kernels' tensor maps (moe-to-nvvm `expert-tma`): a
/// contiguous rank-3 tensor at device address `address` of dims `d0` x `d1`
/// x `d2` (outermost first), tiled by boxes `b0` x `b1` x `b2`, of
/// CUtensorMapDataType `dataType` and CUtensorMapSwizzle `swizzle`; the
/// map's device address, or 0 with an error recorded. Scalars, so that the
/// host code needs no memref descriptor on its stack (nothing a CUDA graph
/// capture would refuse). Made once per set of parameters, as above.
MOE_CUDA_EXPORT uint64_t mgpuTensorMap3D(uint64_t address, int64_t d0,
                                         int64_t d1, int64_t d2, int64_t b0,
                                         int64_t b1, int64_t b2,
                                         int64_t dataType, int64_t swizzle) {
  int64_t elt = std::max(tensorMapElementBytes(dataType), 1);
  TensorMapKey key{};
  key.dataType = int(dataType);
  key.rank = 3;
  key.swizzle = int(swizzle);
  key.address = uintptr_t(address);
  int64_t dims[3] = {d2, d1, d0}, box[3] = {b2, b1, b0};
  for (int i = 0; i < 3; ++i) {
    key.dims[i] = uint64_t(std::max<int64_t>(dims[i], 0));
    key.box[i] = unsigned(std::clamp<int64_t>(box[i], 0, 1 << 20));
  }
  key.strides[0] = uint64_t(std::max<int64_t>(d2, 0)) * uint64_t(elt);
  key.strides[1] = key.strides[0] * uint64_t(std::max<int64_t>(d1, 0));
  return reinterpret_cast<uintptr_t>(tensorMapFor(key, 1));
}

MOE_CUDA_EXPORT void mgpuSetDefaultDevice(int32_t device) {
  defaultDevice = device;
}
