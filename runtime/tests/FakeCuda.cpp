//===- FakeCuda.cpp - a CUDA driver stand-in for GPU-less tests -*- C++ -*-===//
//
// libmoe-fake-cuda.so defines the driver entry points that libmoe_runtime
// binds, on host memory, so that tests on machines without a GPU can load
// it in place of libcuda.so.1 (MOE_LIBCUDA=.../libmoe-fake-cuda.so) and
// exercise the runtime's mgpu* layer: initialisation failures, allocation
// and free balance, module loading, launch sizes. Kernels do not run.
//
//   MOE_FAKE_CUDA=init-fails   cuInit returns CUDA_ERROR_NO_DEVICE
//   MOE_FAKE_CUDA=no-device    cuInit succeeds, no device is visible
//   MOE_FAKE_CUDA_TRACE=1      print launches, and live allocations at exit
//   MOE_FAKE_CUDA_REPORT=1     only the exit report (counts, live allocations)
//   MOE_FAKE_CUDA_SMEM_OPTIN=N the device's shared memory per block with the
//                              opt-in (default 227 KiB, an H100's)
//   MOE_FAKE_CUDA_MEM_LIMIT=N  allocations fail (CUDA_ERROR_OUT_OF_MEMORY)
//                              beyond N bytes live (read at each one; the
//                              bytes live: moe_fake_cuda_bytes_in_use())
//   MOE_FAKE_CUDA_FAULT=NAME   a launch of a kernel whose name contains NAME
//                              "faults": from then on every wait (stream,
//                              event, context) returns
//                              CUDA_ERROR_ILLEGAL_ADDRESS, as a real fault
//                              leaves the context unusable
//
// Streams: work queued on a stream (launch, async copy or memset) leaves it
// "not ready" for cuStreamQuery until a cuStreamSynchronize or
// cuCtxSynchronize, as if every kernel were still running until waited for
// (the worst case the runtime's stream-ordered frees must survive).
//
// Graphs: between cuStreamBeginCapture_v2 and cuStreamEndCapture the
// stream's launches, copies and memsets are recorded, not run; a launched
// graph runs them then (copies and memsets on the host memory, launches
// counted and traced as "graph launch"). Stricter than the driver where the
// runtime must not go: any wait (stream, event, context), cuStreamQuery, or
// work on the legacy (null) stream while capturing fails with
// CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidates the capture, whose
// end then fails with CUDA_ERROR_STREAM_CAPTURE_INVALIDATED. Graphs still
// alive at exit are reported with MOE_FAKE_CUDA_TRACE.
//
//===----------------------------------------------------------------------===//

#include <atomic>
#include <cstdio>
#include <functional>
#include <vector>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#define FAKE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
using CUresult = int;
constexpr CUresult kOk = 0, kInvalidValue = 1, kOutOfMemory = 2,
                   kNoDevice = 100, kInvalidImage = 200, kNotFound = 500,
                   kNotReady = 600, kIllegalAddress = 700,
                   kCaptureUnsupported = 900, kCaptureInvalidated = 901;

std::atomic<long> liveAllocations{0}, allocationsMade{0}, launches{0},
    moduleLoads{0}, moduleUnloads{0}, functionLookups{0}, bytesToDevice{0},
    streamSyncs{0}, tensorMapsEncoded{0};
/// Whether work was queued on a stream since the last synchronization
/// (one flag: the fake has one stream handle).
std::atomic<bool> streamPending{false};
void queued(void *stream) {
  if (stream)
    streamPending = true;
}

bool mode(const char *m) {
  const char *v = std::getenv("MOE_FAKE_CUDA");
  return v && std::strcmp(v, m) == 0;
}
bool trace() { return std::getenv("MOE_FAKE_CUDA_TRACE") != nullptr; }

/// Stream capture: the work recorded so far (run by a launched graph), and
/// whether something the capture forbids happened.
struct FakeGraph {
  std::vector<std::function<void()>> work;
};
std::mutex captureMutex;
FakeGraph *capturing = nullptr;
bool captureInvalid = false;
std::atomic<long> liveGraphs{0}, graphsLaunched{0};

/// Records `work` when `stream` is capturing (true), else leaves it to the
/// caller to run. Work on the legacy stream during a capture invalidates
/// it (kCaptureUnsupported in `r`).
bool captured(void *stream, std::function<void()> work, CUresult &r) {
  std::lock_guard<std::mutex> lock(captureMutex);
  r = kOk;
  if (!capturing)
    return false;
  if (!stream) {
    captureInvalid = true;
    r = kCaptureUnsupported;
    return true;
  }
  capturing->work.push_back(std::move(work));
  return true;
}
/// A wait or query during a capture: refused, and the capture invalid.
bool refusedWhileCapturing() {
  std::lock_guard<std::mutex> lock(captureMutex);
  if (capturing)
    captureInvalid = true;
  return capturing != nullptr;
}

/// Set by a launch that MOE_FAKE_CUDA_FAULT names; sticky.
std::atomic<bool> faulted{false};
/// A wait's result: the fault once there was one.
CUresult waited() { return faulted ? kIllegalAddress : kOk; }

struct Report {
  ~Report() {
    if (trace() || std::getenv("MOE_FAKE_CUDA_REPORT"))
      std::fprintf(stderr,
                   "fake-cuda: %ld module load(s), %ld launch(es), %ld live "
                   "allocation(s) at exit, %ld allocation(s) made, %ld "
                   "byte(s) copied to the device, %ld stream "
                   "synchronization(s), %ld graph launch(es), %ld live "
                   "graph(s) at exit, %ld module unload(s), %ld function "
                   "lookup(s), %ld tensor map(s) encoded\n",
                   moduleLoads.load(), launches.load(), liveAllocations.load(),
                   allocationsMade.load(), bytesToDevice.load(),
                   streamSyncs.load(), graphsLaunched.load(), liveGraphs.load(),
                   moduleUnloads.load(), functionLookups.load(),
                   tensorMapsEncoded.load());
  }
} report;

struct FakeFunction {
  std::string name;
  /// Dynamic shared memory a launch may ask for: 48 KiB unless raised by
  /// cuFuncSetAttribute (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES),
  /// as on a real device.
  unsigned maxDynamicSmem = 48 * 1024;
};
// Function handles by name. Never destroyed: an artifact still loaded at
// exit unloads its module from its own destructors, which may run after this
// library's (reachable from a global, so no leak report under ASan).
std::mutex functionsMutex;
std::map<std::string, FakeFunction> &functions =
    *new std::map<std::string, FakeFunction>;
int contextToken, streamToken, eventToken, moduleToken;
} // namespace

FAKE_EXPORT CUresult cuInit(unsigned) {
  return mode("init-fails") ? kNoDevice : kOk;
}
FAKE_EXPORT CUresult cuDriverGetVersion(int *v) {
  *v = 13000;
  return kOk;
}
FAKE_EXPORT CUresult cuDeviceGetCount(int *n) {
  *n = mode("no-device") ? 0 : 1;
  return kOk;
}
FAKE_EXPORT CUresult cuDeviceGet(int *dev, int ordinal) {
  if (ordinal != 0)
    return kInvalidValue;
  *dev = 0;
  return kOk;
}
FAKE_EXPORT CUresult cuDeviceGetName(char *name, int len, int) {
  std::snprintf(name, len, "Fake CUDA device");
  return kOk;
}
FAKE_EXPORT CUresult cuDeviceGetAttribute(int *v, int attr, int) {
  switch (attr) {
  case 75: *v = 9; break;           // compute capability major
  case 76: *v = 0; break;           // minor
  case 97:                          // max shared memory per block (opt-in)
    *v = std::getenv("MOE_FAKE_CUDA_SMEM_OPTIN")
             ? std::atoi(std::getenv("MOE_FAKE_CUDA_SMEM_OPTIN"))
             : 227 * 1024;
    break;
  default: *v = 1; break;
  }
  return kOk;
}
FAKE_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, int) {
  *bytes = size_t(80) << 30;
  return kOk;
}
FAKE_EXPORT CUresult cuDevicePrimaryCtxRetain(void **ctx, int) {
  *ctx = &contextToken;
  return kOk;
}
FAKE_EXPORT CUresult cuCtxPushCurrent_v2(void *) { return kOk; }
FAKE_EXPORT CUresult cuCtxPopCurrent_v2(void **ctx) {
  if (ctx)
    *ctx = &contextToken;
  return kOk;
}
FAKE_EXPORT CUresult cuCtxSynchronize() {
  if (refusedWhileCapturing())
    return kCaptureUnsupported;
  streamPending = false;
  return waited();
}
FAKE_EXPORT CUresult cuGetErrorName(CUresult r, const char **s) {
  switch (r) {
  case kInvalidValue: *s = "CUDA_ERROR_INVALID_VALUE"; break;
  case kOutOfMemory:
    *s = "CUDA_ERROR_OUT_OF_MEMORY";
    break;
  case kNoDevice: *s = "CUDA_ERROR_NO_DEVICE"; break;
  case kInvalidImage: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
  case kNotFound: *s = "CUDA_ERROR_NOT_FOUND"; break;
  case kIllegalAddress: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
  case kCaptureUnsupported: *s = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"; break;
  case kCaptureInvalidated: *s = "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"; break;
  default: *s = nullptr; return kInvalidValue;
  }
  return kOk;
}
FAKE_EXPORT CUresult cuGetErrorString(CUresult r, const char **s) {
  switch (r) {
  case kNoDevice: *s = "no CUDA-capable device is detected"; break;
  case kInvalidImage: *s = "device kernel image is invalid"; break;
  case kIllegalAddress:
    *s = "an illegal memory access was encountered";
    break;
  default: *s = "fake error"; break;
  }
  return kOk;
}
/// Accepts an ELF image (a cubin) only.
FAKE_EXPORT CUresult cuModuleLoadData(void **module, const void *image) {
  if (std::memcmp(image, "\x7f" "ELF", 4) != 0)
    return kInvalidImage;
  ++moduleLoads;
  *module = &moduleToken;
  return kOk;
}
/// Accepts PTX text only.
FAKE_EXPORT CUresult cuModuleLoadDataEx(void **module, const void *image,
                                        unsigned, int *, void **) {
  if (!std::strstr(static_cast<const char *>(image), ".entry"))
    return kInvalidImage;
  ++moduleLoads;
  *module = &moduleToken;
  return kOk;
}
/// The fake gives a function the same handle in every module that has it,
/// as a real driver may reuse an unloaded module's handles: an unload sets
/// their attributes back, so that a caller who kept one for the handle
/// (the runtime's raised shared memory limit) sees its launches refused.
FAKE_EXPORT CUresult cuModuleUnload(void *) {
  ++moduleUnloads;
  std::lock_guard<std::mutex> lock(functionsMutex);
  for (auto &[name, f] : functions)
    f.maxDynamicSmem = 48 * 1024;
  return kOk;
}
FAKE_EXPORT CUresult cuModuleGetFunction(void **fn, void *, const char *name) {
  ++functionLookups;
  std::lock_guard<std::mutex> lock(functionsMutex);
  FakeFunction &f = functions[name];
  f.name = name;
  *fn = &f;
  return kOk;
}
FAKE_EXPORT CUresult cuFuncSetAttribute(void *fn, int attr, int value) {
  constexpr int kMaxDynamicSharedSizeBytes = 8;
  auto *f = static_cast<FakeFunction *>(fn);
  if (attr != kMaxDynamicSharedSizeBytes)
    return kOk;
  if (value < 0 || value > 227 * 1024)
    return kInvalidValue;
  f->maxDynamicSmem = unsigned(value);
  if (trace())
    std::fprintf(stderr,
                 "fake-cuda: %s may use %d bytes of dynamic shared "
                 "memory\n",
                 f->name.c_str(), value);
  return kOk;
}
FAKE_EXPORT CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy,
                                    unsigned gz, unsigned bx, unsigned by,
                                    unsigned bz, unsigned smem, void *stream,
                                    void **, void **) {
  auto *f = static_cast<FakeFunction *>(fn);
  // The real driver refuses more dynamic shared memory than the function's
  // attribute allows.
  if (smem > f->maxDynamicSmem) {
    std::fprintf(stderr,
                 "fake-cuda: launch %s refused: %u bytes of dynamic shared "
                 "memory, the function allows %u\n",
                 f->name.c_str(), smem, f->maxDynamicSmem);
    return kInvalidValue;
  }
  auto run = [=](const char *how) {
    ++launches;
    if (const char *fault = std::getenv("MOE_FAKE_CUDA_FAULT");
        fault && *fault && f->name.find(fault) != std::string::npos)
      faulted = true;
    if (trace())
      std::fprintf(stderr,
                   "fake-cuda: %s %s grid (%u, %u, %u) block (%u, %u, %u) "
                   "smem %u\n",
                   how, f->name.c_str(), gx, gy, gz, bx, by, bz, smem);
  };
  CUresult r;
  if (captured(stream, [run] { run("graph launch"); }, r)) {
    if (r == kOk && trace())
      std::fprintf(stderr, "fake-cuda: captured %s\n", f->name.c_str());
    return r;
  }
  queued(stream);
  run("launch");
  return kOk;
}
/// Live allocations' sizes, for MOE_FAKE_CUDA_MEM_LIMIT.
std::mutex memoryMutex;
std::map<unsigned long long, size_t> &liveBytes =
    *new std::map<unsigned long long, size_t>;
size_t bytesInUse = 0;
FAKE_EXPORT CUresult cuMemAlloc_v2(unsigned long long *p, size_t n) {
  if (n == 0)
    return kInvalidValue; // as the real driver
  std::lock_guard<std::mutex> lock(memoryMutex);
  // Read at each allocation: a test may set it while running.
  const char *limit = std::getenv("MOE_FAKE_CUDA_MEM_LIMIT");
  if (limit && bytesInUse + n > std::strtoull(limit, nullptr, 10)) {
    if (trace())
      std::fprintf(stderr,
                   "fake-cuda: out of memory: %zu bytes asked, %zu in use\n", n,
                   bytesInUse);
    return kOutOfMemory;
  }
  *p = reinterpret_cast<uintptr_t>(std::calloc(1, n));
  liveBytes[*p] = n;
  bytesInUse += n;
  ++liveAllocations;
  ++allocationsMade;
  return kOk;
}
/// The limits the driver documents for cuTensorMapEncodeTiled (invalid
/// value otherwise); the map's 128 bytes hold the address, the rank and the
/// first dims, so that a test can tell maps apart. Counted (the exit
/// report).
FAKE_EXPORT CUresult cuTensorMapEncodeTiled(
    void *map, int dataType, unsigned rank, void *address,
    const unsigned long long *dims, const unsigned long long *strides,
    const unsigned *box, const unsigned *elementStrides, int interleave,
    int swizzle, int, int) {
  if (!map || rank < 1 || rank > 5 || dataType < 0 || dataType > 12 ||
      reinterpret_cast<uintptr_t>(address) % 16 ||
      reinterpret_cast<uintptr_t>(map) % 64)
    return kInvalidValue;
  for (unsigned i = 0; i < rank; ++i) {
    if (dims[i] == 0 || box[i] == 0 || box[i] > 256 || elementStrides[i] == 0)
      return kInvalidValue;
    if (i + 1 < rank && strides[i] % 16)
      return kInvalidValue;
  }
  static const int bytes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
  unsigned inner = box[0] * unsigned(bytes[dataType]);
  if ((interleave == 0 && inner % 16) ||
      (swizzle >= 1 && swizzle <= 3 && inner > (16u << swizzle)))
    return kInvalidValue;
  unsigned long long words[16] = {reinterpret_cast<uintptr_t>(address), rank};
  for (unsigned i = 0; i < rank; ++i)
    words[2 + i] = dims[i];
  std::memcpy(map, words, sizeof(words));
  ++tensorMapsEncoded;
  return kOk;
}
/// Not a driver function: the bytes allocated and not freed, for tests that
/// set MOE_FAKE_CUDA_MEM_LIMIT relative to them.
FAKE_EXPORT size_t moe_fake_cuda_bytes_in_use() {
  std::lock_guard<std::mutex> lock(memoryMutex);
  return bytesInUse;
}
FAKE_EXPORT CUresult cuMemAllocManaged(unsigned long long *p, size_t n,
                                       unsigned) {
  return cuMemAlloc_v2(p, n);
}
FAKE_EXPORT CUresult cuMemFree_v2(unsigned long long p) {
  {
    std::lock_guard<std::mutex> lock(memoryMutex);
    if (auto it = liveBytes.find(p); it != liveBytes.end()) {
      bytesInUse -= it->second;
      liveBytes.erase(it);
    }
  }
  std::free(reinterpret_cast<void *>(p));
  --liveAllocations;
  return kOk;
}
FAKE_EXPORT CUresult cuMemcpyAsync(unsigned long long dst,
                                   unsigned long long src, size_t n,
                                   void *stream) {
  auto copy = [=] {
    std::memmove(reinterpret_cast<void *>(dst), reinterpret_cast<void *>(src),
                 n);
  };
  if (CUresult r; captured(stream, copy, r))
    return r;
  queued(stream);
  copy();
  return kOk;
}
FAKE_EXPORT CUresult cuMemcpyHtoD_v2(unsigned long long dst, const void *src,
                                     size_t n) {
  bytesToDevice += long(n);
  std::memmove(reinterpret_cast<void *>(dst), src, n);
  return kOk;
}
FAKE_EXPORT CUresult cuMemcpyDtoH_v2(void *dst, unsigned long long src,
                                     size_t n) {
  std::memmove(dst, reinterpret_cast<void *>(src), n);
  return kOk;
}
FAKE_EXPORT CUresult cuMemsetD32Async(unsigned long long dst, unsigned v,
                                      size_t n, void *stream) {
  auto set = [=] {
    auto *p = reinterpret_cast<unsigned *>(dst);
    for (size_t i = 0; i < n; ++i)
      p[i] = v;
  };
  if (CUresult r; captured(stream, set, r))
    return r;
  queued(stream);
  set();
  return kOk;
}
FAKE_EXPORT CUresult cuMemsetD16Async(unsigned long long dst, unsigned short v,
                                      size_t n, void *stream) {
  auto set = [=] {
    auto *p = reinterpret_cast<unsigned short *>(dst);
    for (size_t i = 0; i < n; ++i)
      p[i] = v;
  };
  if (CUresult r; captured(stream, set, r))
    return r;
  queued(stream);
  set();
  return kOk;
}
FAKE_EXPORT CUresult cuMemHostRegister_v2(void *, size_t, unsigned) {
  return kOk;
}
FAKE_EXPORT CUresult cuMemHostUnregister(void *) { return kOk; }
FAKE_EXPORT CUresult cuStreamCreate(void **s, unsigned) {
  *s = &streamToken;
  return kOk;
}
FAKE_EXPORT CUresult cuStreamDestroy_v2(void *) { return kOk; }
FAKE_EXPORT CUresult cuStreamSynchronize(void *) {
  if (refusedWhileCapturing())
    return kCaptureUnsupported;
  ++streamSyncs;
  streamPending = false;
  return waited();
}
FAKE_EXPORT CUresult cuStreamQuery(void *) {
  if (refusedWhileCapturing())
    return kCaptureUnsupported;
  return streamPending ? kNotReady : kOk;
}
FAKE_EXPORT CUresult cuStreamWaitEvent(void *, void *, unsigned) {
  return kOk;
}
FAKE_EXPORT CUresult cuEventCreate(void **e, unsigned) {
  *e = &eventToken;
  return kOk;
}
FAKE_EXPORT CUresult cuEventDestroy_v2(void *) { return kOk; }
FAKE_EXPORT CUresult cuEventSynchronize(void *) {
  if (refusedWhileCapturing())
    return kCaptureUnsupported;
  return waited();
}
FAKE_EXPORT CUresult cuEventRecord(void *, void *) { return kOk; }
// A fixed 0.25 ms per timed interval: MOE_CUDA_PROFILE's table is then
// predictable (calls x 0.25 ms per kernel).
FAKE_EXPORT CUresult cuEventElapsedTime_v2(float *ms, void *, void *) {
  *ms = 0.25f;
  return kOk;
}

// Graphs (see the top of the file).
FAKE_EXPORT CUresult cuStreamBeginCapture_v2(void *stream, int) {
  std::lock_guard<std::mutex> lock(captureMutex);
  if (!stream || capturing)
    return kInvalidValue;
  capturing = new FakeGraph();
  captureInvalid = false;
  if (trace())
    std::fprintf(stderr, "fake-cuda: capture begins\n");
  return kOk;
}
FAKE_EXPORT CUresult cuStreamEndCapture(void *, void **graph) {
  std::lock_guard<std::mutex> lock(captureMutex);
  if (!capturing)
    return kInvalidValue;
  FakeGraph *g = capturing;
  capturing = nullptr;
  if (captureInvalid) {
    delete g;
    *graph = nullptr;
    return kCaptureInvalidated;
  }
  ++liveGraphs;
  *graph = g;
  if (trace())
    std::fprintf(stderr, "fake-cuda: capture ends: %zu node(s)\n",
                 g->work.size());
  return kOk;
}
FAKE_EXPORT CUresult cuGraphInstantiateWithFlags(void **exec, void *graph,
                                                 unsigned long long) {
  if (!graph)
    return kInvalidValue;
  ++liveGraphs;
  *exec = new FakeGraph(*static_cast<FakeGraph *>(graph));
  return kOk;
}
FAKE_EXPORT CUresult cuGraphDestroy(void *graph) {
  --liveGraphs;
  delete static_cast<FakeGraph *>(graph);
  return kOk;
}
FAKE_EXPORT CUresult cuGraphExecDestroy(void *exec) {
  --liveGraphs;
  delete static_cast<FakeGraph *>(exec);
  return kOk;
}
FAKE_EXPORT CUresult cuGraphLaunch(void *exec, void *stream) {
  if (refusedWhileCapturing())
    return kCaptureUnsupported; // no graph inside a capture here
  ++graphsLaunched;
  queued(stream);
  for (auto &work : static_cast<FakeGraph *>(exec)->work)
    work();
  return kOk;
}
