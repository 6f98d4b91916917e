//===- CudaProbe.cpp - report the runtime's CUDA device ---------*- C++ -*-===//
//
//   moe-cuda-probe [--device N] [--smoke] [--stream-order] [--tensor-map]
//                  [--load FILE [--kernel NAME]...]
//                  [--call LIB SYMBOL --arg SHAPExDTYPE... --result-rank R]
//                  [--exit-zero]
//
// Prints whether libmoe_runtime finds a usable CUDA device, and the
// device's properties; exits 1 with the runtime's one-line reason (e.g.
// "no CUDA device: libcuda.so.1 not found") when it does not, or 0 with
// --exit-zero (for tests that accept either answer but not a crash).
//
// --smoke exercises the mgpu* ABI that GPU artifacts call: managed
// allocation, stream, memset, copy, synchronisation, free; the host checks
// the values. --stream-order checks the allocation cache's stream-ordered
// frees (mgpuMemFree with a stream, as moe-gpu-async-launches emits): a
// block freed behind queued work goes back to the same stream at once,
// but not to the host while that work may still write it. --tensor-map
// checks mgpuTensorMapEncodeTiledMemref (TMA descriptors: made once per set
// of parameters, the driver's limits as named errors). --load loads a cubin
// (or PTX if FILE ends in .ptx, the format=isa output) through
// mgpuModuleLoad/mgpuModuleLoadJIT and looks up each --kernel. --call dlopens a
// shared object built from moe-to-nvvm output (its global constructor loads the
// gpu.binary) and calls SYMBOL, an MLIR C interface `void SYMBOL(result *,
// memref *...)` with one ranked result, on inputs in managed memory filled with
// seeded values in [-1, 1) (integers: 0), then frees everything; it reports the
// first mgpu* error.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CudaRuntime.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" {
void *mgpuModuleLoad(void *data, size_t size);
void *mgpuModuleLoadJIT(void *data, int optLevel);
void mgpuModuleUnload(void *module);
void *mgpuModuleGetFunction(void *module, const char *name);
void *mgpuStreamCreate();
void mgpuStreamSynchronize(void *stream);
void mgpuStreamDestroy(void *stream);
void *mgpuMemAlloc(uint64_t bytes, void *stream, bool isHostShared);
void mgpuMemFree(void *ptr, void *stream);
void mgpuMemcpy(void *dst, void *src, size_t bytes, void *stream);
void mgpuMemset32(void *dst, unsigned value, size_t count, void *stream);
void mgpuSetDefaultDevice(int32_t device);
void *mgpuTensorMapEncodeTiledMemref(int64_t rank, void *descriptor,
                                     int64_t dataType, int64_t interleave,
                                     int64_t swizzle, int64_t l2Promotion,
                                     int64_t oobFill, int64_t *boxDims);
}

namespace cuda = moe::rt::cuda;

static int fail(const std::string &msg, bool exitZero) {
  std::fprintf(stderr, "moe-cuda-probe: %s\n", msg.c_str());
  return exitZero ? 0 : 1;
}

static int smoke() {
  const size_t n = 1 << 18;
  auto *a = static_cast<uint32_t *>(mgpuMemAlloc(n * 4, nullptr, true));
  auto *b = static_cast<uint32_t *>(mgpuMemAlloc(n * 4, nullptr, true));
  void *stream = mgpuStreamCreate();
  if (a && b) {
    mgpuMemset32(a, 0x3f800000u, n, stream);
    mgpuMemcpy(b, a, n * 4, stream);
    mgpuStreamSynchronize(stream);
  }
  mgpuStreamDestroy(stream);
  moe::rt::Status s = cuda::takeError();
  size_t bad = 0;
  if (s && a && b)
    for (size_t i = 0; i < n; ++i)
      bad += a[i] != 0x3f800000u || b[i] != 0x3f800000u;
  mgpuMemFree(a, nullptr);
  mgpuMemFree(b, nullptr);
  if (!s)
    return fail("smoke: " + s.message(), false);
  if (!a || !b || bad) {
    std::fprintf(stderr, "moe-cuda-probe: smoke: %zu of %zu values wrong\n",
                 bad, n);
    return 1;
  }
  if (moe::rt::Status f = cuda::takeError(); !f)
    return fail("smoke: " + f.message(), false);
  std::printf("smoke: ok (managed alloc, memset, copy, sync, free of %zu "
              "bytes)\n",
              n * 4);
  return 0;
}

/// mgpuTensorMapEncodeTiledMemref (nvgpu.tma.create.descriptor's host call)
/// on a bf16 [4 x 128 x 128] tensor, as the expert kernels' weight tiles
/// would take it (box 1 x 64 x 64, 128-byte swizzle): a map is made, the
/// same parameters give the same map again (made once), other ones another;
/// shapes outside the driver's limits are errors that say which limit.
static int tensorMap() {
  const int64_t e = 4, n = 128, k = 128;
  void *data = mgpuMemAlloc(e * n * k * 2, nullptr, true);
  struct Memref3 {
    void *allocated, *aligned;
    int64_t offset, sizes[3], strides[3];
  } m{data, data, 0, {e, n, k}, {n * k, k, 1}};
  constexpr int64_t kBf16 = 9, kSwizzle128 = 3;
  int64_t box[3] = {1, 64, 64};
  auto make = [&](Memref3 &mr, int64_t *b) {
    return mgpuTensorMapEncodeTiledMemref(3, &mr, kBf16, 0, kSwizzle128, 0, 0,
                                          b);
  };
  int failed = 0;
  auto check = [&](bool ok, const std::string &what, const std::string &why) {
    std::printf("tensor-map: %s %s%s%s\n", ok ? "ok  " : "FAIL", what.c_str(),
                why.empty() ? "" : ": ", why.c_str());
    failed += !ok;
  };
  void *first = make(m, box);
  std::string err = first ? "" : cuda::takeError().message();
  check(first != nullptr, "a map of the weights' [1, 64, 64] tiles", err);
  void *again = make(m, box);
  int64_t narrow[3] = {1, 32, 64};
  void *other = make(m, narrow);
  check(again == first && other && other != first,
        "the same parameters give the same map, another box another", "");
  // Limits, each an error naming it.
  auto refused = [&](Memref3 mr, int64_t *b, const char *what,
                     const char *expect) {
    void *p = make(mr, b);
    std::string why = cuda::takeError().message();
    check(!p && why.find(expect) != std::string::npos, what, why);
  };
  int64_t wide[3] = {1, 64, 128};
  refused(m, wide, "a 256-byte inner box with the 128-byte swizzle",
          "more than the swizzle span of 128");
  Memref3 shifted = m;
  shifted.offset = 1;
  refused(shifted, box, "an address off 16 bytes", "not 16-byte aligned");
  Memref3 odd = m;
  odd.sizes[2] = 100;
  odd.strides[0] = n * 100;
  odd.strides[1] = 100;
  refused(odd, narrow, "rows of 200 bytes", "not a multiple of 16");
  int64_t big[3] = {1, 512, 64};
  refused(m, big, "a box dimension of 512", "1 to 256 allowed");
  mgpuMemFree(data, nullptr);
  return failed ? 1 : 0;
}

/// A 64 MiB memset queued on the thread's stream, the block freed behind it
/// (stream order), then: the same stream asks again (gets the block back:
/// its work is ordered after the memset), the host asks (must not get the
/// block while the memset may run: it writes its own pattern, which must
/// survive the stream's end), the host asks after a wait (may reuse).
static int streamOrder() {
  const size_t n = size_t(16) << 20, bytes = n * 4;
  void *stream = mgpuStreamCreate();
  void *a = mgpuMemAlloc(bytes, nullptr, true);
  if (!a)
    return fail("stream-order: " + cuda::takeError().message(), false);
  mgpuMemset32(a, 0x7fc00000u, n, stream); // NaN
  mgpuMemFree(a, stream);
  void *b = mgpuMemAlloc(bytes, nullptr, true);
  std::printf("stream-order: the same stream takes the block back at once: "
              "%s\n",
              b == a ? "yes" : "no");
  mgpuMemset32(b, 0x7fc00000u, n, stream);
  mgpuMemFree(b, stream);
  auto host = cuda::allocManaged(bytes);
  if (!host)
    return fail("stream-order: " + host.message(), false);
  auto *h = static_cast<uint32_t *>(host.value());
  bool reused = h == a;
  for (size_t i = 0; i < n; ++i)
    h[i] = 0x3f800000u;
  mgpuStreamSynchronize(stream);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i)
    bad += h[i] != 0x3f800000u;
  std::printf("stream-order: the host asks while the stream may be busy: "
              "%s\n",
              reused ? "the block (the stream had drained)" : "a new block");
  std::printf("stream-order: host values after the stream's end: %zu of %zu "
              "overwritten\n",
              bad, n);
  cuda::freeManaged(h);
  auto again = cuda::allocManaged(bytes);
  if (!again)
    return fail("stream-order: " + again.message(), false);
  std::printf("stream-order: the host asks after a wait: %s\n",
              again.value() == a || again.value() == h ? "a cached block"
                                                       : "a new block");
  cuda::freeManaged(again.value());
  mgpuStreamDestroy(stream);
  if (moe::rt::Status s = cuda::takeError(); !s)
    return fail("stream-order: " + s.message(), false);
  return b == a && !bad ? 0 : 1;
}

static int load(const std::string &path,
                const std::vector<std::string> &kernels) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return fail("cannot read " + path, false);
  std::string data((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  bool ptx = path.size() > 4 && path.compare(path.size() - 4, 4, ".ptx") == 0;
  void *module = ptx ? mgpuModuleLoadJIT(data.data(), 3)
                     : mgpuModuleLoad(data.data(), data.size());
  if (moe::rt::Status s = cuda::takeError(); !s)
    return fail(s.message(), false);
  std::printf("module %s: loaded (%s)\n", path.c_str(),
              ptx ? "PTX, JIT-compiled" : "binary");
  int rc = 0;
  for (const std::string &k : kernels) {
    void *fn = mgpuModuleGetFunction(module, k.c_str());
    moe::rt::Status s = cuda::takeError();
    std::printf("kernel %s: %s\n", k.c_str(),
                fn && s ? "found" : s ? "missing" : s.message().c_str());
    rc |= !(fn && s);
  }
  mgpuModuleUnload(module);
  if (moe::rt::Status s = cuda::takeError(); !s)
    return fail(s.message(), false);
  return rc;
}

namespace {
/// A ranked memref descriptor {allocated, aligned, offset, sizes, strides}.
struct Descriptor {
  void *allocated = nullptr, *aligned = nullptr;
  int64_t offset = 0;
  int64_t sizesAndStrides[16] = {0};
};

struct ArgSpec {
  std::vector<int64_t> shape;
  std::string dtype;
};

/// "5x64xbf16" -> {5, 64}, "bf16".
bool parseArg(const std::string &text, ArgSpec &spec) {
  size_t start = 0;
  while (true) {
    size_t x = text.find('x', start);
    std::string part = text.substr(start, x == std::string::npos
                                              ? std::string::npos
                                              : x - start);
    if (x == std::string::npos) {
      spec.dtype = part;
      break;
    }
    char *end = nullptr;
    long long v = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end || v < 0)
      return false;
    spec.shape.push_back(v);
    start = x + 1;
  }
  return (spec.dtype == "f32" || spec.dtype == "bf16" || spec.dtype == "f16" ||
          spec.dtype == "i32" || spec.dtype == "i64") &&
         spec.shape.size() <= 8;
}

size_t elementBytes(const std::string &dtype) {
  return dtype == "f32" || dtype == "i32" ? 4 : dtype == "i64" ? 8 : 2;
}

void fill(void *data, size_t n, const std::string &dtype, uint64_t &seed) {
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    float f = float(int32_t(seed >> 32) >> 8) / float(1 << 23); // [-1, 1)
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if (dtype == "f32")
      static_cast<float *>(data)[i] = f;
    else if (dtype == "bf16")
      static_cast<uint16_t *>(data)[i] = uint16_t(bits >> 16);
    else if (dtype == "f16") { // |f| < 1; below 2^-14 flushed to zero
      uint32_t e = (bits >> 23) & 0xff;
      static_cast<uint16_t *>(data)[i] = uint16_t(
          ((bits >> 16) & 0x8000) |
          (e < 113 ? 0 : ((e - 112) << 10) | ((bits >> 13) & 0x3ff)));
    }
    else if (dtype == "i32")
      static_cast<int32_t *>(data)[i] = 0;
    else
      static_cast<int64_t *>(data)[i] = 0;
  }
}

int call(const std::string &lib, const std::string &symbol,
         const std::vector<ArgSpec> &args, int resultRank) {
  if (args.size() > 15)
    return fail("--call: at most 15 arguments", false);
  std::vector<Descriptor> descs(args.size());
  uint64_t seed = 42;
  for (size_t a = 0; a < args.size(); ++a) {
    const ArgSpec &spec = args[a];
    size_t n = 1;
    for (int64_t d : spec.shape)
      n *= size_t(d);
    auto mem = cuda::allocManaged(n * elementBytes(spec.dtype));
    if (!mem)
      return fail("--call: " + mem.message(), false);
    fill(mem.value(), n, spec.dtype, seed);
    Descriptor &d = descs[a];
    d.allocated = d.aligned = mem.value();
    int64_t stride = 1;
    size_t rank = spec.shape.size();
    for (size_t i = rank; i-- > 0;) {
      d.sizesAndStrides[i] = spec.shape[i];
      d.sizesAndStrides[rank + i] = stride;
      stride *= spec.shape[i];
    }
  }
  void *handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle)
    return fail(std::string("--call: ") + dlerror(), false);
  int rc = 0;
  if (moe::rt::Status s = cuda::takeError(); !s) {
    std::printf("load: %s\n", s.message().c_str());
    rc = 1;
  }
  void *fn = dlsym(handle, symbol.c_str());
  if (!fn) {
    dlclose(handle);
    return fail("--call: no symbol " + symbol + " in " + lib, false);
  }
  Descriptor result;
  void *p[16] = {&result};
  for (size_t a = 0; a < descs.size(); ++a)
    p[a + 1] = &descs[a];
  // The C interface takes pointers only: call with the exact arity.
  using V = void *;
  switch (descs.size()) {
#define MOE_CALL_CASE(N, ...)                                                  \
  case N:                                                                      \
    reinterpret_cast<void (*)(__VA_ARGS__)>(fn)
    MOE_CALL_CASE(0, V)(p[0]); break;
    MOE_CALL_CASE(1, V, V)(p[0], p[1]); break;
    MOE_CALL_CASE(2, V, V, V)(p[0], p[1], p[2]); break;
    MOE_CALL_CASE(3, V, V, V, V)(p[0], p[1], p[2], p[3]); break;
    MOE_CALL_CASE(4, V, V, V, V, V)(p[0], p[1], p[2], p[3], p[4]); break;
    MOE_CALL_CASE(5, V, V, V, V, V, V)(p[0], p[1], p[2], p[3], p[4], p[5]);
    break;
    MOE_CALL_CASE(6, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    break;
    MOE_CALL_CASE(7, V, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);
    break;
    MOE_CALL_CASE(8, V, V, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
    break;
    MOE_CALL_CASE(9, V, V, V, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]);
    break;
    MOE_CALL_CASE(10, V, V, V, V, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]);
    break;
    MOE_CALL_CASE(11, V, V, V, V, V, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]);
    break;
    MOE_CALL_CASE(12, V, V, V, V, V, V, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
     p[12]);
    break;
    MOE_CALL_CASE(13, V, V, V, V, V, V, V, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
     p[12], p[13]);
    break;
    MOE_CALL_CASE(14, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
     p[12], p[13], p[14]);
    break;
    MOE_CALL_CASE(15, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V)
    (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
     p[12], p[13], p[14], p[15]);
    break;
#undef MOE_CALL_CASE
  default: // excluded above
    break;
  }
  moe::rt::Status s = cuda::takeError();
  if (s) // the kernels ran: wait for them and collect late errors
    s = cuda::synchronize();
  std::printf("call %s: %s\n", symbol.c_str(),
              s ? "ok" : s.message().c_str());
  rc |= !s;
  if (resultRank > 0) {
    std::printf("result:");
    for (int i = 0; i < resultRank; ++i)
      std::printf("%s%lld", i ? "x" : " ",
                  (long long)result.sizesAndStrides[i]);
    std::printf("\n");
  }
  // The result was allocated by the artifact (gpu.alloc host_shared).
  cuda::freeManaged(result.allocated);
  for (Descriptor &d : descs)
    cuda::freeManaged(d.allocated);
  dlclose(handle);
  if (moe::rt::Status f = cuda::takeError(); !f)
    return fail(f.message(), false);
  return rc;
}
} // namespace

int main(int argc, char **argv) {
  int device = 0;
  std::string callLib, callSymbol;
  std::vector<ArgSpec> callArgs;
  int resultRank = 0;
  // Line-buffered so that the lines keep their order with stderr's.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  bool doSmoke = false, doStreamOrder = false, doTensorMap = false,
       exitZero = false;
  std::string loadPath;
  std::vector<std::string> kernels;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char * {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "moe-cuda-probe: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--device")
      device = std::atoi(next());
    else if (a == "--smoke")
      doSmoke = true;
    else if (a == "--stream-order")
      doStreamOrder = true;
    else if (a == "--tensor-map")
      doTensorMap = true;
    else if (a == "--exit-zero")
      exitZero = true;
    else if (a == "--load")
      loadPath = next();
    else if (a == "--kernel")
      kernels.push_back(next());
    else if (a == "--call") {
      callLib = next();
      callSymbol = next();
    } else if (a == "--arg") {
      ArgSpec spec;
      std::string text = next();
      if (!parseArg(text, spec)) {
        std::fprintf(stderr,
                     "moe-cuda-probe: --arg %s: expected e.g. 5x64xbf16 "
                     "(f32, bf16, f16, i32, i64)\n",
                     text.c_str());
        return 2;
      }
      callArgs.push_back(spec);
    } else if (a == "--result-rank")
      resultRank = std::atoi(next());
    else {
      std::fprintf(stderr, "usage: moe-cuda-probe [--device N] [--smoke] "
                           "[--stream-order] [--tensor-map] [--load FILE "
                           "[--kernel NAME]...] [--call LIB SYMBOL --arg "
                           "SHAPExDTYPE... --result-rank R] [--exit-zero]\n");
      return 2;
    }
  }

  if (moe::rt::Status s = cuda::status(); !s)
    return fail(s.message(), exitZero);
  auto info = cuda::deviceInfo(device);
  if (!info)
    return fail(info.message(), exitZero);
  const cuda::DeviceInfo &d = info.value();
  std::printf("cuda: ok, %d device(s)\n", cuda::deviceCount());
  std::printf("device %d: %s, sm_%d%d, %.1f GiB, driver %d.%d, managed "
              "memory: %s (concurrent host access: %s)\n",
              d.ordinal, d.name.c_str(), d.major, d.minor,
              double(d.totalMemory) / (1ull << 30), d.driverVersion / 1000,
              (d.driverVersion % 1000) / 10, d.managedMemory ? "yes" : "no",
              d.concurrentManagedAccess ? "yes" : "no");
  mgpuSetDefaultDevice(device);
  cuda::setDevice(device);
  int rc = 0;
  if (doSmoke)
    rc |= smoke();
  if (doStreamOrder)
    rc |= streamOrder();
  if (doTensorMap)
    rc |= tensorMap();
  if (!loadPath.empty())
    rc |= load(loadPath, kernels);
  if (!callLib.empty())
    rc |= call(callLib, callSymbol, callArgs, resultRank);
  return rc;
}
