//===- CudaRuntime.h - the runtime's CUDA backend ---------------*- C++ -*-===//
//
// GPU artifacts (moe-to-nvvm) are host code calling the `mgpu*` functions
// that MLIR's gpu-to-llvm lowering and the gpu.launch_func translation emit
// (mgpuModuleLoad, mgpuLaunchKernel, mgpuMemAlloc, ...). libmoe_runtime
// defines them, with C linkage, on the CUDA driver API, which it loads with
// dlopen("libcuda.so.1") on first use: the runtime links no CUDA library and
// loads on machines without a GPU, where status() says why there is none.
//
// Errors inside mgpu* calls do not abort: the first one on each thread is
// kept until takeError() returns it (later ones are dropped, as they usually
// follow from the first). When CUDA is unavailable, mgpuMemAlloc falls back
// to host memory and launches are skipped with an error recorded, so host
// code of an artifact runs to its end without crashing.
//
// Environment: MOE_CUDA_PROFILE=1 times every launch and prints a table of
// the kernels at exit; MOE_CUDA_SYNC=1 waits after every launch and names
// the kernel in the error when the wait fails (a kernel that faults shows
// otherwise only as the failure of the call's last wait); MOE_CUDA_POOL*
// tune the allocation cache (see freeCachedMemory); MOE_CUDA_GRAPHS=1 turns
// on CUDA graphs for the artifacts loaded (Artifact::useCudaGraphs).
//
// The ABI (MLIR 22) is listed in docs/notes/gpu-path.md.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_CUDARUNTIME_H
#define MOE_RUNTIME_CUDARUNTIME_H

#include "moe/Runtime/Runtime.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moe::rt::cuda {

/// Whether a CUDA device is usable: ok, or "no CUDA device: libcuda.so.1
/// not found", "cuInit failed: CUDA_ERROR_... (...)", "no CUDA device
/// visible", "libcuda.so.1 lacks cuXxx". The first call loads the driver and
/// initialises it; the answer is cached. Thread-safe. The environment
/// variable MOE_LIBCUDA names another driver library to load (tests use a
/// fake one).
Status status();

/// The device that mgpu* calls on this thread use (default 0; the same as
/// mgpuSetDefaultDevice).
void setDevice(int ordinal);

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int major = 0, minor = 0; ///< compute capability (sm_<major><minor>)
  uint64_t totalMemory = 0; ///< bytes
  int driverVersion = 0;    ///< e.g. 13000 for CUDA 13.0
  bool managedMemory = false, concurrentManagedAccess = false;
};

/// Properties of one device, or the status() error.
Result<DeviceInfo> deviceInfo(int ordinal = 0);

/// Number of visible devices (0 when status() is not ok).
int deviceCount();

/// The first error recorded by an mgpu* call on this thread since the last
/// takeError(), or ok; clears it.
Status takeError();

/// Records `message` as this thread's error unless one is already kept.
void recordError(const std::string &message);

/// Managed memory (cuMemAllocManaged, attached globally): readable and
/// writable by kernels and by the host. Artifact inputs must live in such
/// memory (or device memory); buffers an artifact returns were allocated
/// this way and must be released with freeManaged, not free(). Zero bytes
/// give a valid one-byte allocation. Without CUDA: an error.
Result<void *> allocManaged(size_t bytes);

/// Releases memory from allocManaged or from an artifact (mgpuMemFree);
/// null is ignored.
void freeManaged(void *ptr);

/// Whether `ptr` points into memory from allocManaged or an artifact's
/// allocation that is still in use (false without CUDA). Artifact::run
/// passes such inputs to the kernels as they are and copies outputs into
/// such memory on the device, so that a caller keeping its tensors on the
/// GPU (a serving process) pays no host round trip.
bool isDeviceMemory(const void *ptr);

/// Copies with the driver between host memory and memory from allocManaged
/// (or an artifact): the pages of managed memory stay on the device rather
/// than migrating as a host memcpy would make them. Synchronous.
Status copyToDevice(void *dst, const void *src, size_t bytes);
Status copyToHost(void *dst, const void *src, size_t bytes);
Status copyOnDevice(void *dst, const void *src, size_t bytes);

/// Device memory freed by artifacts and freeManaged is cached for reuse
/// (see CudaRuntime.cpp: MOE_CUDA_POOL, MOE_CUDA_POOL_MB,
/// MOE_CUDA_POOL_POISON); this returns the cached blocks to the driver.
void releaseCachedMemory();

/// Waits for all work on the current device (cuCtxSynchronize).
Status synchronize();

/// The device that mgpu* calls on this thread use (setDevice).
int device();

//===----------------------------------------------------------------------===//
// CUDA graphs
//===----------------------------------------------------------------------===//
//
// A layer's call is host code queueing kernels (and copies) on this
// thread's stream, with one wait at its end. Captured once (stream capture,
// relaxed mode) into a CUDA graph, a later call with the same buffers is one
// cuGraphLaunch: the host work of every launch (the runtime's and the
// driver's, a few microseconds each) is paid once, which is what decode
// steps of small experts spend most of their time on. Artifact::run uses
// this (Artifact::useCudaGraphs); these are its parts.
//
// While this thread captures: launches, copies and memsets on its stream
// are recorded, not run; mgpuStreamSynchronize of that stream is skipped
// (the graph's launch waits instead); every block mgpuMemAlloc hands out
// belongs to the graph, its frees are withheld, so that every replay finds
// the buffers the kernels were captured with. The graph frees them when it
// is destroyed.

/// A captured, instantiated graph and the device memory its nodes use.
/// Destroying it (the last shared_ptr) frees both; its replays must have
/// finished (launch() waits for them).
class Graph {
public:
  ~Graph();
  Graph(const Graph &) = delete;
  Graph &operator=(const Graph &) = delete;
  /// Bytes of device memory the graph holds (the layer's intermediates and
  /// results, as allocated during the capture).
  size_t bytes() const { return bytes_; }

private:
  friend Result<std::shared_ptr<Graph>> endCapture();
  friend Status launch(const Graph &);
  Graph() = default;
  void *exec_ = nullptr; ///< CUgraphExec
  std::vector<void *> blocks_;
  size_t bytes_ = 0;
  int device_ = 0;
};

/// Why this process cannot capture ("" if it can): the driver lacks the
/// graph API, or a mode waits on the host between launches
/// (MOE_CUDA_PROFILE, MOE_CUDA_SYNC, MOE_CUDA_POOL_POISON).
std::string captureBlocker();

/// Starts capturing this thread's stream (an error if this thread already
/// captures, or captureBlocker() says why not).
Status beginCapture();

/// Ends this thread's capture and instantiates the graph; an error (and no
/// graph, its memory freed) if the capture failed or an mgpu* call recorded
/// an error during it.
Result<std::shared_ptr<Graph>> endCapture();

/// Launches `graph` on this thread's stream and waits for it.
Status launch(const Graph &graph);

/// Queues a device-to-device copy on this thread's stream, without waiting
/// (while capturing: recorded into the graph).
Status copyOnDeviceQueued(void *dst, const void *src, size_t bytes);

} // namespace moe::rt::cuda

#endif // MOE_RUNTIME_CUDARUNTIME_H
