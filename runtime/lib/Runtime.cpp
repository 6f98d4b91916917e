//===- Runtime.cpp - load and run compiled moe layers -----------*- C++ -*-===//

#include "moe/Runtime/Runtime.h"
#include "moe/Runtime/CudaRuntime.h"

#include "AsyncRuntime.h"
#include "Env.h"
#include "HostAlloc.h"
#include "Json.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <cerrno>
#include <dlfcn.h>
#if defined(__linux__)
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <iterator>
#include <fstream>
#include <sstream>
#include <thread>

namespace moe::rt {

const char *dtypeName(DType t) {
  switch (t) {
  case DType::f32: return "f32";
  case DType::f16: return "f16";
  case DType::bf16: return "bf16";
  case DType::i32: return "i32";
  case DType::i64: return "i64";
  }
  return "?";
}

std::optional<DType> parseDType(const std::string &n) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64})
    if (n == dtypeName(t))
      return t;
  return std::nullopt;
}

size_t dtypeSize(DType t) {
  switch (t) {
  case DType::f16:
  case DType::bf16: return 2;
  case DType::f32:
  case DType::i32: return 4;
  case DType::i64: return 8;
  }
  return 0;
}

bool TensorSpec::hasTokenDim() const {
  return std::any_of(shape.begin(), shape.end(),
                     [](int64_t d) { return d < 0; });
}

size_t TensorSpec::numElements(int64_t tokens) const {
  size_t n = 1;
  for (int64_t d : shape)
    n *= static_cast<size_t>(d < 0 ? tokens : d);
  return n;
}

static std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? "x" : "") + (shape[i] < 0 ? std::string("?") : std::to_string(shape[i]));
  return s + "]";
}

namespace {
Status parseTensor(const json::Value &v, TensorSpec &out, const std::string &where) {
  const json::Value *dt = v.get("dtype"), *shape = v.get("shape");
  if (!dt || dt->kind != json::Value::String || !shape ||
      shape->kind != json::Value::Array)
    return Status::error(where + ": needs 'dtype' and 'shape'");
  auto t = parseDType(dt->str);
  if (!t)
    return Status::error(where + ": unknown dtype '" + dt->str + "'");
  out.dtype = *t;
  // Dimensions up to 2^40, -1 the token dimension; the static ones' bytes
  // (the weights) at most 2^50, so that no size computed from them
  // overflows, with any token count the runtime accepts.
  unsigned __int128 bytes = dtypeSize(out.dtype);
  for (const json::Value &d : shape->arr) {
    int64_t dim;
    if (!json::asInteger(d, -1, int64_t(1) << 40, dim))
      return Status::error(where + ": bad dimension in 'shape' (an integer "
                                   "from -1 to 2^40)");
    out.shape.push_back(dim);
    if (dim >= 0)
      bytes *= static_cast<uint64_t>(dim);
    if (bytes > (unsigned __int128)1 << 50)
      return Status::error(where + ": 'shape' " + shapeString(out.shape) +
                           " is too large");
  }
  if (const json::Value *n = v.get("name"))
    out.name = n->str;
  return Status::ok();
}

/// A memref descriptor as the MLIR C interface lays it out:
/// {allocated, aligned, offset, sizes[rank], strides[rank]}.
struct Descriptor {
  std::vector<int64_t> words;
  explicit Descriptor(void *data, const std::vector<int64_t> &shape) {
    size_t rank = shape.size();
    words.resize(3 + 2 * rank);
    std::memcpy(&words[0], &data, sizeof(void *));
    std::memcpy(&words[1], &data, sizeof(void *));
    words[2] = 0;
    int64_t stride = 1;
    for (size_t i = rank; i-- > 0;) {
      words[3 + i] = shape[i];
      words[3 + rank + i] = stride;
      stride *= shape[i];
    }
  }
};

/// Whether a memref descriptor {allocated, aligned, offset, sizes, strides}
/// is dense row-major.
bool isContiguous(const int64_t *desc, size_t rank) {
  int64_t expected = 1;
  for (size_t i = rank; i-- > 0;) {
    if (desc[3 + i] != 1 && desc[3 + rank + i] != expected)
      return false;
    expected *= desc[3 + i];
  }
  return true;
}

/// Copies a (possibly strided) returned memref of `rank` into a dense buffer:
/// one memcpy when it is contiguous, else one per run of its innermost
/// dimension (one element per run when that is strided too).
void copyStrided(const int64_t *desc, size_t rank, size_t elemSize, char *dst) {
  char *src;
  std::memcpy(&src, &desc[1], sizeof(char *));
  src += desc[2] * elemSize;
  const int64_t *sizes = desc + 3, *strides = desc + 3 + rank;
  size_t total = 1;
  for (size_t i = 0; i < rank; ++i)
    total *= sizes[i];
  if (total == 0)
    return;
  if (isContiguous(desc, rank)) {
    std::memcpy(dst, src, total * elemSize);
    return;
  }
  size_t run = rank && strides[rank - 1] == 1 ? size_t(sizes[rank - 1]) : 1;
  size_t outer = rank && run > 1 ? rank - 1 : rank;
  std::vector<int64_t> idx(rank, 0);
  for (size_t n = 0; n < total; n += run) {
    int64_t off = 0;
    for (size_t i = 0; i < outer; ++i)
      off += idx[i] * strides[i];
    std::memcpy(dst + n * elemSize, src + off * elemSize, run * elemSize);
    for (size_t i = outer; i-- > 0;) {
      if (++idx[i] < sizes[i])
        break;
      idx[i] = 0;
    }
  }
}
LayerConfig parseLayerConfig(const json::Value &layer) {
  LayerConfig cfg;
  for (auto &[k, v] : layer.obj) {
    if (v.kind == json::Value::String) {
      cfg.values[k] = v.str;
    } else if (v.kind == json::Value::Number) {
      std::ostringstream os;
      os.precision(17);
      os << v.num;
      cfg.values[k] = os.str();
    } else if (v.kind == json::Value::Array && k == "special_kinds") {
      for (const json::Value &s : v.arr)
        cfg.specialKinds.push_back(s.str);
    }
  }
  return cfg;
}

/// Checks the library against the manifest's size and FNV-1a hash and that
/// it is a complete 64-bit ELF file: dlopen on a truncated file can crash
/// (SIGBUS) instead of failing.
Status verifyLibrary(const std::string &path, const json::Value &manifest) {
  // Only a regular file: reading a directory makes libstdc++'s filebuf
  // throw.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return Status::error("cannot open '" + path + "': " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return Status::error("corrupt artifact: '" + path +
                         "' is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::error("cannot open '" + path + "'");
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  const json::Value *size = manifest.get("library_size");
  const json::Value *hash = manifest.get("library_fnv1a64");
  if (!size || !hash)
    return Status::error("corrupt manifest: needs 'library_size' and "
                         "'library_fnv1a64'");
  int64_t expected;
  if (!json::asInteger(*size, 0, int64_t(1) << 50, expected))
    return Status::error("corrupt manifest: 'library_size' is not a byte "
                         "count");
  if (bytes.size() != static_cast<uint64_t>(expected))
    return Status::error("corrupt artifact: '" + path + "' has " +
                         std::to_string(bytes.size()) +
                         " bytes, the manifest says " +
                         std::to_string(expected));
  uint64_t fnv = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes)
    fnv = (fnv ^ c) * 0x100000001b3ULL;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(fnv));
  // The manifest's hex has no leading zeros.
  std::string got = hex;
  got.erase(0, std::min(got.find_first_not_of('0'), got.size() - 1));
  if (got != hash->str)
    return Status::error("corrupt artifact: '" + path +
                         "' does not match the manifest's hash");
  if (bytes.size() < 64 || bytes.compare(0, 4, "\x7f" "ELF") != 0 ||
      bytes[4] != 2)
    return Status::error("corrupt artifact: '" + path +
                         "' is not a 64-bit ELF shared object");
  uint64_t phoff, shoff;
  uint16_t phentsize, phnum, shentsize, shnum;
  std::memcpy(&phoff, &bytes[32], 8);
  std::memcpy(&shoff, &bytes[40], 8);
  std::memcpy(&phentsize, &bytes[54], 2);
  std::memcpy(&phnum, &bytes[56], 2);
  std::memcpy(&shentsize, &bytes[58], 2);
  std::memcpy(&shnum, &bytes[60], 2);
  auto fits = [&](uint64_t off, uint64_t len) {
    return off <= bytes.size() && len <= bytes.size() - off;
  };
  if (!fits(phoff, uint64_t(phentsize) * phnum) ||
      !fits(shoff, uint64_t(shentsize) * shnum) || phentsize < 56)
    return Status::error("corrupt artifact: '" + path + "' is truncated");
  for (uint16_t i = 0; i < phnum; ++i) {
    uint64_t off, filesz;
    std::memcpy(&off, &bytes[phoff + i * phentsize + 8], 8);
    std::memcpy(&filesz, &bytes[phoff + i * phentsize + 32], 8);
    if (!fits(off, filesz))
      return Status::error("corrupt artifact: '" + path + "' is truncated");
  }
  return Status::ok();
}
} // namespace

Result<std::shared_ptr<Artifact>> Artifact::load(const std::string &dir) {
  std::string manifestPath = dir + "/manifest.json";
  std::ifstream in(manifestPath);
  if (!in)
    return Status::error("cannot open '" + manifestPath + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  json::Value root;
  std::string err;
  if (!json::parse(ss.str(), root, err))
    return Status::error("corrupt manifest '" + manifestPath + "': " + err);
  const json::Value *fmt = root.get("format"), *lib = root.get("library"),
                    *entries = root.get("entries"), *target = root.get("target");
  if (!fmt || fmt->str != "moe-artifact/1")
    return Status::error("'" + manifestPath +
                         "' is not a moe-artifact/1 manifest");
  if (!lib || lib->kind != json::Value::String || !entries ||
      entries->kind != json::Value::Array || !target)
    return Status::error("corrupt manifest '" + manifestPath +
                         "': needs 'library', 'target' and 'entries'");
  if (target->str != "cpu" && target->str != "cuda")
    return Status::error("artifact target '" + target->str +
                         "' is not supported by this runtime (cpu, cuda)");
  if (target->str == "cuda") {
    // Loading runs the artifact's constructor, which loads its cubin: there
    // must be a device first.
    if (Status s = cuda::status(); !s) {
      const json::Value *chip = root.get("chip");
      return Status::error("artifact '" + dir + "' targets cuda:" +
                           (chip ? chip->str : std::string("?")) + ": " +
                           s.message());
    }
  }
  // A NUL would end the path early (found by moe-fuzz-manifest: the name
  // became the artifact's directory, whose read threw from the stream).
  if (lib->str.empty() || lib->str.find('/') != std::string::npos ||
      lib->str.find('\0') != std::string::npos || lib->str == "." ||
      lib->str == "..")
    return Status::error("corrupt manifest '" + manifestPath +
                         "': 'library' must be a file name in the artifact");

  std::shared_ptr<Artifact> a(new Artifact());
  a->dir_ = dir;
  a->target_ = target->str;
  if (const json::Value *h = root.get("content_hash"))
    a->hash_ = h->str;
  if (const json::Value *p = root.get("parallel_loops")) {
    if (p->kind != json::Value::Bool)
      return Status::error("corrupt manifest '" + manifestPath +
                           "': 'parallel_loops' must be true or false");
    a->parallelLoops_ = p->b && a->target_ == "cpu";
  }
  if (const json::Value *h = root.get("host_allocator")) {
    if (h->kind != json::Value::String ||
        (h->str != "libc" && h->str != "moe-runtime"))
      return Status::error("corrupt manifest '" + manifestPath +
                           "': 'host_allocator' must be \"libc\" or "
                           "\"moe-runtime\"");
    a->runtimeAllocator_ = h->str == "moe-runtime" && a->target_ == "cpu";
  }
  if (const json::Value *t = root.get("amx_tiles")) {
    if (t->kind != json::Value::Bool)
      return Status::error("corrupt manifest '" + manifestPath +
                           "': 'amx_tiles' must be true or false");
    a->amxTiles_ = t->b && a->target_ == "cpu";
  }
  // Linux hands out AMX tile state only on request (a process without it
  // gets SIGILL on its first tile instruction), so ask before loading.
  if (a->amxTiles_)
    if (Status s = requestAMXTiles(); !s)
      return Status::error("artifact '" + dir +
                           "' runs its bf16 GEMMs on AMX tiles (compiled "
                           "with gemm-amx), but " +
                           s.message() +
                           "; recompile it with --pipeline-options=gemm-amx=0");
  for (size_t i = 0; i < entries->arr.size(); ++i) {
    const json::Value &e = entries->arr[i];
    std::string where = manifestPath + ": entry #" + std::to_string(i);
    EntrySpec spec;
    const json::Value *name = e.get("name"), *sym = e.get("symbol"),
                      *args = e.get("args"), *res = e.get("results");
    if (!name || !sym || !args || !res || args->kind != json::Value::Array ||
        res->kind != json::Value::Array)
      return Status::error("corrupt manifest: " + where +
                           " needs name, symbol, args, results");
    spec.name = name->str;
    spec.symbol = sym->str;
    // dlsym would look up the name up to a NUL: another symbol.
    if (spec.symbol.find('\0') != std::string::npos)
      return Status::error("corrupt manifest: " + where +
                           " 'symbol' contains a NUL byte");
    for (size_t j = 0; j < args->arr.size(); ++j) {
      spec.args.emplace_back();
      if (Status s = parseTensor(args->arr[j], spec.args.back(),
                                 where + " arg #" + std::to_string(j));
          !s)
        return Status::error("corrupt manifest: " + s.message());
    }
    for (size_t j = 0; j < res->arr.size(); ++j) {
      spec.results.emplace_back();
      if (Status s = parseTensor(res->arr[j], spec.results.back(),
                                 where + " result #" + std::to_string(j));
          !s)
        return Status::error("corrupt manifest: " + s.message());
    }
    if (const json::Value *d = e.get("derive")) {
      const json::Value *dsym = d->get("symbol"), *din = d->get("inputs"),
                        *dres = d->get("results");
      if (!dsym || dsym->kind != json::Value::String || !din ||
          din->kind != json::Value::Array || !dres ||
          dres->kind != json::Value::Array)
        return Status::error("corrupt manifest: " + where +
                             " 'derive' needs symbol, inputs, results");
      EntrySpec::Derive derive;
      derive.symbol = dsym->str;
      if (derive.symbol.find('\0') != std::string::npos)
        return Status::error("corrupt manifest: " + where +
                             " 'derive' symbol contains a NUL byte");
      for (const json::Value &v : din->arr) {
        if (v.kind != json::Value::Number || v.num < 0 ||
            v.num >= double(spec.args.size()) || v.num != double(size_t(v.num)) ||
            spec.args[size_t(v.num)].hasTokenDim())
          return Status::error("corrupt manifest: " + where +
                               " 'derive' inputs must be indices of weight "
                               "arguments");
        derive.inputs.push_back(size_t(v.num));
      }
      for (size_t j = 0; j < dres->arr.size(); ++j) {
        derive.results.emplace_back();
        if (Status st = parseTensor(dres->arr[j], derive.results.back(),
                                    where + " derived #" + std::to_string(j));
            !st)
          return Status::error("corrupt manifest: " + st.message());
        if (derive.results.back().hasTokenDim())
          return Status::error("corrupt manifest: " + where +
                               " a derived tensor has a token dimension");
      }
      spec.derive = std::move(derive);
    }
    if (const json::Value *g = e.get("cuda_graph_blocker")) {
      if (g->kind != json::Value::String)
        return Status::error("corrupt manifest: " + where +
                             " 'cuda_graph_blocker' must be a string");
      spec.cudaGraphBlocker = g->str;
    }
    if (const json::Value *layer = e.get("layer"))
      spec.layer = parseLayerConfig(*layer);
    if (const json::Value *ffn = e.get("ffn"))
      spec.ffn = parseLayerConfig(*ffn);
    if (const json::Value *cart = e.get("cartesian")) {
      const json::Value *first = cart->get("first"), *second = cart->get("second"),
                        *eps = cart->get("epsilon");
      if (!first || !second || !eps)
        return Status::error("corrupt manifest: " + where +
                             " 'cartesian' needs first, second, epsilon");
      spec.cartesian = EntrySpec::Cartesian{eps->num, parseLayerConfig(*first),
                                            parseLayerConfig(*second)};
    }
    a->entries_.push_back(std::move(spec));
  }

  std::string libPath = dir + "/" + lib->str;
  if (Status s = verifyLibrary(libPath, root); !s)
    return s;
  if (a->target_ == "cuda")
    (void)cuda::takeError(); // only errors of this load count below
  a->handle_ = dlopen(libPath.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!a->handle_) {
    const char *e = dlerror();
    return Status::error("cannot load '" + libPath + "': " + (e ? e : "?"));
  }
  if (a->target_ == "cuda")
    if (Status s = cuda::takeError(); !s)
      return Status::error("cannot load the kernels of '" + libPath +
                           "': " + s.message());
  // MOE_CUDA_GRAPHS=1: CUDA graphs on for every cuda artifact loaded.
  if (a->target_ == "cuda")
    a->useCudaGraphs(env::flag("MOE_CUDA_GRAPHS"));
  for (const EntrySpec &e : a->entries_) {
    void *sym = dlsym(a->handle_, e.symbol.c_str());
    if (!sym)
      return Status::error("artifact '" + dir + "' has no symbol '" +
                           e.symbol + "' for entry '" + e.name + "'");
    a->symbols_.push_back(sym);
    void *derive = nullptr;
    if (e.derive && !(derive = dlsym(a->handle_, e.derive->symbol.c_str())))
      return Status::error("artifact '" + dir + "' has no symbol '" +
                           e.derive->symbol + "' for the derived weights of "
                           "entry '" + e.name + "'");
    a->deriveSymbols_.push_back(derive);
  }
  return a;
}

Status requestAMXTiles() {
#if defined(__linux__) && defined(__x86_64__)
  // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): the permission is
  // the process's, for all its threads; asking again is harmless.
  constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
  static const int err = [] {
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0 ? 0 : errno;
  }();
  if (err == 0)
    return Status::ok();
  return Status::error(
      std::string("this machine does not grant AMX tiles "
                  "(arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA): ") +
      std::strerror(err) + (err == EINVAL ? ": no AMX, or a kernel before 5.16" : "") +
      ")");
#else
  return Status::error("AMX tiles need Linux on x86-64");
#endif
}

Artifact::~Artifact() {
  // A worker may still be returning through this library's code from a
  // task of a call that has already returned.
  if (parallelLoops_)
    detail::waitForRunningTasks();
  // Before the library's destructors unload the modules its graphs launch.
  dropCudaGraphs();
  if (handle_)
    dlclose(handle_);
}

const EntrySpec *Artifact::find(const std::string &name) const {
  for (const EntrySpec &e : entries_)
    if (e.name == name)
      return &e;
  return nullptr;
}

Status Artifact::validate(const std::string &entry,
                          const std::vector<TensorView> &inputs,
                          const std::vector<TensorView> &outputs,
                          const EntrySpec *&spec, int64_t &tokens) const {
  spec = find(entry);
  if (!spec) {
    std::string names;
    for (const EntrySpec &e : entries_)
      names += (names.empty() ? "" : ", ") + e.name;
    return Status::error("unknown entry '" + entry + "' (artifact has: " +
                         names + ")");
  }
  if (inputs.size() != spec->args.size())
    return Status::error("entry '" + entry + "' takes " +
                         std::to_string(spec->args.size()) + " inputs, got " +
                         std::to_string(inputs.size()));
  if (outputs.size() != spec->results.size())
    return Status::error("entry '" + entry + "' has " +
                         std::to_string(spec->results.size()) +
                         " outputs, got " + std::to_string(outputs.size()));
  // The token count T binds every dynamic dimension.
  tokens = -1;
  auto check = [&](const TensorSpec &want, const TensorView &got,
                   const std::string &what) -> Status {
    if (got.dtype != want.dtype)
      return Status::error(what + " has dtype " + dtypeName(got.dtype) +
                           ", expected " + dtypeName(want.dtype));
    bool ok = got.shape.size() == want.shape.size();
    for (size_t i = 0; ok && i < want.shape.size(); ++i) {
      if (want.shape[i] >= 0) {
        ok = got.shape[i] == want.shape[i];
      } else {
        if (tokens < 0)
          tokens = got.shape[i];
        ok = got.shape[i] == tokens && tokens >= 0;
      }
    }
    if (!ok)
      return Status::error(what + " has shape " + shapeString(got.shape) +
                           ", expected " + shapeString(want.shape) +
                           (tokens >= 0 ? " with T = " + std::to_string(tokens)
                                        : ""));
    if (!got.data && want.numElements(tokens) != 0)
      return Status::error(what + " has no data");
    return Status::ok();
  };
  for (size_t i = 0; i < inputs.size(); ++i)
    if (Status s = check(spec->args[i], inputs[i],
                         "input #" + std::to_string(i) + " '" +
                             spec->args[i].name + "'");
        !s)
      return s;
  for (size_t i = 0; i < outputs.size(); ++i)
    if (Status s = check(spec->results[i], outputs[i],
                         "output #" + std::to_string(i));
        !s)
      return s;
  return Status::ok();
}

Status Artifact::run(const std::string &entry,
                     const std::vector<TensorView> &inputs,
                     std::vector<TensorView> &outputs,
                     const ResidentInputs *resident) const {
  const EntrySpec *spec = nullptr;
  int64_t tokens = -1;
  if (Status s = validate(entry, inputs, outputs, spec, tokens); !s)
    return s;

  if (resident && (resident->artifact_ != this || resident->entry_ != entry))
    return Status::error("entry '" + entry + "': the resident inputs were "
                         "made for another artifact or entry");
  // cuda artifacts: kernels read their inputs from managed memory: the
  // resident copies, or a copy staged for this call.
  bool onGPU = target_ == "cuda";
  std::vector<void *> staged;
  auto releaseStaged = [&] {
    for (void *p : staged)
      cuda::freeManaged(p);
  };
  std::vector<Descriptor> descs;
  descs.reserve(inputs.size() +
                (spec->derive ? spec->derive->results.size() : 0));
  std::vector<void *> argPtrs, argData;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorView &v = inputs[i];
    void *data = v.data;
    if (resident && resident->device_[i]) {
      if (resident->host_[i] != v.data) {
        releaseStaged();
        return Status::error("input #" + std::to_string(i) + " '" +
                             spec->args[i].name +
                             "' is resident on the device but was given "
                             "other host data than it was uploaded from");
      }
      data = resident->device_[i];
    } else if (onGPU && cuda::isDeviceMemory(v.data)) {
      // Already on the device (the caller's allocManaged memory): in place.
    } else if (onGPU) {
      size_t bytes = spec->args[i].numElements(tokens) * dtypeSize(v.dtype);
      Result<void *> m = cuda::allocManaged(bytes);
      if (!m) {
        releaseStaged();
        return Status::error("input #" + std::to_string(i) + ": " +
                             m.message());
      }
      staged.push_back(m.value());
      // A driver copy: the pages land on the device, where the kernels
      // read them, instead of faulting across on first use.
      if (Status c = cuda::copyToDevice(m.value(), v.data, bytes); !c) {
        releaseStaged();
        return Status::error("input #" + std::to_string(i) + ": " +
                             c.message());
      }
      data = m.value();
    }
    descs.emplace_back(data, v.shape);
    argPtrs.push_back(descs.back().words.data());
    argData.push_back(data);
  }
  // The derived weights (EntrySpec::derive) after the caller's arguments:
  // the resident ones, or computed for this call.
  std::vector<void *> derivedData, derivedAllocated;
  auto releaseDerived = [&] {
    for (void *p : derivedAllocated)
      freeReturned(p);
  };
  if (spec->derive) {
    if (resident && !resident->derived_.empty()) {
      for (size_t i : spec->derive->inputs)
        if (resident->host_[i] != inputs[i].data) {
          releaseStaged();
          return Status::error("input #" + std::to_string(i) + " '" +
                               spec->args[i].name +
                               "' was given other host data than the "
                               "resident derived weights were computed from");
        }
      derivedData = resident->derived_;
    } else if (Status d = computeDerived(*spec, argData, derivedData,
                                         derivedAllocated);
               !d) {
      releaseStaged();
      return d;
    }
    for (size_t k = 0; k < derivedData.size(); ++k) {
      descs.emplace_back(derivedData[k], spec->derive->results[k].shape);
      argPtrs.push_back(descs.back().words.data());
    }
  }
  // The results come back as a struct of descriptors, 8-byte words each.
  size_t resultWords = 0;
  for (const TensorSpec &r : spec->results)
    resultWords += 3 + 2 * r.shape.size();
  std::vector<int64_t> result(resultWords, 0);
  auto fn = reinterpret_cast<void (*)(void *, void **)>(
      symbols_[spec - entries_.data()]);
  // CUDA graphs: a call whose buffers are all on the device is captured
  // once and replayed (see useCudaGraphs).
  if (onGPU && cudaGraphs_.load(std::memory_order_relaxed)) {
    std::string why;
    if (!spec->cudaGraphBlocker)
      why = "the artifact was compiled before moe-compile checked its host "
            "code for CUDA graphs (recompile it)";
    else if (!spec->cudaGraphBlocker->empty())
      why = *spec->cudaGraphBlocker;
    else if (!staged.empty())
      why = "an input is in host memory (staged into device memory per call)";
    else if (!derivedAllocated.empty())
      why = "its derived weights are computed per call (no resident inputs)";
    for (size_t i = 0; why.empty() && i < outputs.size(); ++i)
      if (!cuda::isDeviceMemory(outputs[i].data))
        why = "output #" + std::to_string(i) + " is in host memory";
    if (why.empty())
      why = cuda::captureBlocker();
    if (why.empty()) {
      std::vector<const void *> buffers(argData.begin(), argData.end());
      buffers.insert(buffers.end(), derivedData.begin(), derivedData.end());
      Status s = runGraph(*spec, tokens, buffers, argPtrs, outputs);
      releaseStaged();
      releaseDerived();
      return s;
    }
    noteNoGraph(entry, why);
  }
  if (onGPU)
    (void)cuda::takeError();
  fn(result.data(), argPtrs.data());

  Status status = Status::ok();
  if (onGPU) {
    status = cuda::takeError();
    if (status)
      status = cuda::synchronize();
    if (!status)
      status = Status::error("entry '" + entry + "' failed on the GPU: " +
                             status.message());
  }
  status = takeResults(*spec, result, outputs, std::move(status),
                       /*queued=*/false);
  releaseStaged();
  releaseDerived();
  return status;
}

Status Artifact::runGraph(const EntrySpec &spec, int64_t tokens,
                          const std::vector<const void *> &buffers,
                          std::vector<void *> &argPtrs,
                          std::vector<TensorView> &outputs) const {
  size_t index = &spec - entries_.data();
  std::vector<uintptr_t> key{index, uintptr_t(tokens),
                             uintptr_t(cuda::device())};
  for (const void *p : buffers)
    key.push_back(reinterpret_cast<uintptr_t>(p));
  for (const TensorView &v : outputs)
    key.push_back(reinterpret_cast<uintptr_t>(v.data));
  std::shared_ptr<cuda::Graph> graph;
  {
    std::lock_guard<std::mutex> lock(graphMutex_);
    if (auto it = graphs_.find(key); it != graphs_.end()) {
      graph = it->second.graph;
      it->second.lastUse = ++graphClock_;
      ++graphStats_.replayed;
    }
  }
  if (!graph) {
    auto capture = [&]() -> Result<std::shared_ptr<cuda::Graph>> {
      (void)cuda::takeError();
      if (Status s = cuda::beginCapture(); !s)
        return s;
      std::vector<int64_t> result;
      for (const TensorSpec &r : spec.results)
        result.resize(result.size() + 3 + 2 * r.shape.size(), 0);
      auto fn = reinterpret_cast<void (*)(void *, void **)>(symbols_[index]);
      fn(result.data(), argPtrs.data());
      // The copies into the caller's outputs join the graph; the returned
      // buffers' frees are withheld (the graph keeps them).
      Status status = takeResults(spec, result, outputs, Status::ok(),
                                  /*queued=*/true);
      Result<std::shared_ptr<cuda::Graph>> captured = cuda::endCapture();
      if (!status)
        return status;
      return captured;
    };
    Result<std::shared_ptr<cuda::Graph>> captured = capture();
    // Out of device memory while capturing, the allocation cache cannot
    // give its free blocks back (that waits, which a capture does not
    // allow), and the graphs kept hold theirs: drop the graphs, free the
    // cache, and capture once more. A capture that failed ran nothing, so
    // trying again is safe whatever the failure was.
    bool held;
    {
      std::lock_guard<std::mutex> lock(graphMutex_);
      held = !graphs_.empty();
    }
    if (!captured && held) {
      std::string first = captured.message();
      dropCudaGraphs();
      cuda::releaseCachedMemory();
      {
        std::lock_guard<std::mutex> lock(graphMutex_);
        ++graphStats_.retried;
      }
      captured = capture();
      if (!captured)
        return Status::error("entry '" + spec.name +
                             "': " + captured.message() +
                             " (also after dropping the graphs kept; the "
                             "first try: " +
                             first + ")");
    }
    if (!captured)
      return Status::error("entry '" + spec.name + "': " + captured.message());
    graph = captured.value();
    std::vector<std::shared_ptr<cuda::Graph>> dropped; // freed unlocked
    std::lock_guard<std::mutex> lock(graphMutex_);
    graphs_[key] = GraphSlot{graph, ++graphClock_};
    ++graphStats_.captured;
    // The least recently used go while more than kMaxCudaGraphs are kept or
    // they hold more than the byte limit (the newest one stays).
    while (graphs_.size() > 1 && (graphs_.size() > kMaxCudaGraphs ||
                                  graphBytes() > cudaGraphByteLimit())) {
      auto oldest = graphs_.begin();
      for (auto it = graphs_.begin(); it != graphs_.end(); ++it)
        if (it->second.lastUse < oldest->second.lastUse)
          oldest = it;
      dropped.push_back(std::move(oldest->second.graph));
      graphs_.erase(oldest);
    }
  }
  if (Status s = cuda::launch(*graph); !s)
    return Status::error("entry '" + spec.name + "' failed on the GPU: " +
                         s.message());
  return Status::ok();
}

size_t Artifact::cudaGraphByteLimit() {
  static const size_t limit = env::mebibytes("MOE_CUDA_GRAPHS_MB", 4096);
  return limit;
}

void Artifact::noteNoGraph(const std::string &entry,
                           const std::string &why) const {
  std::lock_guard<std::mutex> lock(graphMutex_);
  ++graphStats_.ineligible;
  graphStats_.lastIneligible = why;
  if (!warnedNoGraph_) {
    warnedNoGraph_ = true;
    std::fprintf(stderr,
                 "moe-runtime: CUDA graphs are on, but entry '%s' of %s runs "
                 "without one: %s (counted in cudaGraphStats)\n",
                 entry.c_str(), dir_.c_str(), why.c_str());
  }
}

void Artifact::useCudaGraphs(bool on) {
  cudaGraphs_.store(on, std::memory_order_relaxed);
  if (on)
    (void)cudaGraphByteLimit(); // a malformed MOE_CUDA_GRAPHS_MB is said now
  if (!on)
    dropCudaGraphs();
}

Artifact::CudaGraphStats Artifact::cudaGraphStats() const {
  std::lock_guard<std::mutex> lock(graphMutex_);
  CudaGraphStats s = graphStats_;
  s.graphs = graphs_.size();
  s.bytes = graphBytes();
  return s;
}

size_t Artifact::graphBytes() const {
  size_t bytes = 0;
  for (auto &[key, slot] : graphs_)
    bytes += slot.graph->bytes();
  return bytes;
}

void Artifact::dropCudaGraphs() const {
  std::map<std::vector<uintptr_t>, GraphSlot> dropped;
  std::lock_guard<std::mutex> lock(graphMutex_);
  dropped.swap(graphs_);
}

Status Artifact::takeResults(const EntrySpec &spec,
                             const std::vector<int64_t> &result,
                             std::vector<TensorView> &outputs, Status status,
                             bool queued) const {
  bool onGPU = target_ == "cuda";
  size_t at = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const TensorSpec &r = spec.results[i];
    size_t rank = r.shape.size();
    const int64_t *d = &result[at];
    for (size_t j = 0; j < rank && status; ++j)
      if (d[3 + j] != outputs[i].shape[j])
        status = Status::error("output #" + std::to_string(i) +
                               " came back with a different shape");
    if (status && onGPU && isContiguous(d, rank)) {
      // The driver copies (device to host, or on the device when the
      // caller's output is device memory); a host memcpy would migrate the
      // managed pages to the host and back on the next call.
      size_t bytes = dtypeSize(r.dtype);
      for (size_t j = 0; j < rank; ++j)
        bytes *= size_t(d[3 + j]);
      char *src;
      std::memcpy(&src, &d[1], sizeof(char *));
      src += d[2] * dtypeSize(r.dtype);
      Status c = queued ? cuda::copyOnDeviceQueued(outputs[i].data, src, bytes)
                 : cuda::isDeviceMemory(outputs[i].data)
                     ? cuda::copyOnDevice(outputs[i].data, src, bytes)
                     : cuda::copyToHost(outputs[i].data, src, bytes);
      if (!c)
        status = Status::error("output #" + std::to_string(i) + ": " +
                               c.message());
    } else if (status) {
      if (onGPU && cuda::isDeviceMemory(outputs[i].data))
        status = Status::error("output #" + std::to_string(i) +
                               " is strided: it cannot be copied into "
                               "device memory");
      else
        copyStrided(d, rank, dtypeSize(r.dtype),
                    static_cast<char *>(outputs[i].data));
    }
    // Ownership of returned buffers passes to the caller (the pipeline's
    // ownership-based deallocation guarantees they are fresh allocations).
    void *allocated;
    std::memcpy(&allocated, &d[0], sizeof(void *));
    freeReturned(allocated);
    at += 3 + 2 * rank;
  }
  return status;
}

void Artifact::freeReturned(void *allocated) const {
  if (target_ == "cuda")
    cuda::freeManaged(allocated);
  else if (runtimeAllocator_)
    _mlir_memref_to_llvm_free(allocated);
  else
    std::free(allocated);
}

Status Artifact::computeDerived(const EntrySpec &spec,
                                const std::vector<void *> &argData,
                                std::vector<void *> &data,
                                std::vector<void *> &allocated) const {
  const EntrySpec::Derive &d = *spec.derive;
  std::vector<Descriptor> descs;
  descs.reserve(d.inputs.size());
  std::vector<void *> ptrs;
  for (size_t i : d.inputs) {
    descs.emplace_back(argData[i], spec.args[i].shape);
    ptrs.push_back(descs.back().words.data());
  }
  size_t words = 0;
  for (const TensorSpec &r : d.results)
    words += 3 + 2 * r.shape.size();
  std::vector<int64_t> result(words, 0);
  bool onGPU = target_ == "cuda";
  if (onGPU)
    (void)cuda::takeError();
  auto fn = reinterpret_cast<void (*)(void *, void **)>(
      deriveSymbols_[&spec - entries_.data()]);
  fn(result.data(), ptrs.data());
  Status status = Status::ok();
  if (onGPU) {
    status = cuda::takeError();
    if (status)
      status = cuda::synchronize();
  }
  size_t at = 0;
  for (size_t k = 0; k < d.results.size(); ++k) {
    const TensorSpec &r = d.results[k];
    size_t rank = r.shape.size();
    const int64_t *w = &result[at];
    void *alloc;
    char *aligned;
    std::memcpy(&alloc, &w[0], sizeof(void *));
    std::memcpy(&aligned, &w[1], sizeof(char *));
    allocated.push_back(alloc);
    for (size_t j = 0; j < rank && status; ++j)
      if (w[3 + j] != r.shape[j])
        status = Status::error("derived tensor #" + std::to_string(k) +
                               " came back with a different shape");
    if (status && !isContiguous(w, rank))
      status = Status::error("derived tensor #" + std::to_string(k) +
                             " came back strided");
    data.push_back(aligned + w[2] * dtypeSize(r.dtype));
    at += 3 + 2 * rank;
  }
  if (!status) {
    for (void *p : allocated)
      freeReturned(p);
    allocated.clear();
    data.clear();
    return Status::error("entry '" + spec.name + "': computing its derived "
                         "weights: " + status.message());
  }
  return status;
}

/// Why the rows of `spec`'s outputs cannot be computed by separate calls on
/// ranges of the tokens, or empty when they can: the entry must be one
/// moe.layer without capacity dispatch (which drops slots by their order
/// over all tokens), one moe.cartesian or one moe.ffn, whose tokens are
/// computed independently (MOE_SEMANTICS.md), with the token dimension first
/// in every token-dependent input and output.
static std::string whyNotSplittable(const EntrySpec &spec) {
  if (!spec.layer && !spec.cartesian && !spec.ffn)
    return "it is not one moe.layer, moe.cartesian or moe.ffn";
  auto capacity = [](const LayerConfig &c) {
    auto it = c.values.find("dispatch");
    return it != c.values.end() && it->second == "capacity";
  };
  if ((spec.layer && capacity(*spec.layer)) ||
      (spec.cartesian &&
       (capacity(spec.cartesian->first) || capacity(spec.cartesian->second))))
    return "its capacity dispatch couples the tokens";
  auto tokenFirst = [](const TensorSpec &t) {
    return !t.hasTokenDim() ||
           (t.shape[0] < 0 &&
            std::count_if(t.shape.begin(), t.shape.end(),
                          [](int64_t d) { return d < 0; }) == 1);
  };
  for (const TensorSpec &t : spec.args)
    if (!tokenFirst(t))
      return "input '" + t.name + "' does not have the tokens as dimension 0";
  for (const TensorSpec &t : spec.results)
    if (!t.hasTokenDim() || t.shape[0] >= 0)
      return "an output does not have the tokens as dimension 0";
  return "";
}

Status Artifact::runThreaded(const std::string &entry,
                             const std::vector<TensorView> &inputs,
                             std::vector<TensorView> &outputs,
                             unsigned threads, int64_t minTokens,
                             unsigned *partsUsed, ThreadSplit split,
                             const ResidentInputs *resident) const {
  if (threads == 0 || minTokens <= 0)
    return Status::error("runThreaded: threads and minTokens must be positive");
  if (threads > detail::kMaxWorkers)
    return Status::error("runThreaded: at most " +
                         std::to_string(detail::kMaxWorkers) +
                         " threads, asked for " + std::to_string(threads));
  if (partsUsed)
    *partsUsed = 1;
  if (threads == 1)
    return run(entry, inputs, outputs, resident); // which validates them
  const EntrySpec *spec = nullptr;
  int64_t tokens = -1;
  if (Status s = validate(entry, inputs, outputs, spec, tokens); !s)
    return s;
  if (target_ != "cpu")
    return Status::error("entry '" + entry + "': threads apply to cpu "
                         "artifacts (this one targets " + target_ + ")");
  std::string why = whyNotSplittable(*spec);
  auto refuse = [&](const std::string &reason) {
    return Status::error("entry '" + entry + "' cannot run on " +
                         std::to_string(threads) + " threads: " + reason);
  };
  const char *noLoops = "the artifact has no parallel loops (compiled with "
                        "parallel=0 or blocked-gemms=0)";
  if (split == ThreadSplit::Columns && !parallelLoops_)
    return refuse(noLoops);
  if (split == ThreadSplit::Tokens && !why.empty())
    return refuse(why);
  if (split == ThreadSplit::Auto && !why.empty() && !parallelLoops_)
    return refuse(why + ", and " + noLoops);
  bool byTokens = split == ThreadSplit::Tokens;
  if (split == ThreadSplit::Auto)
    byTokens = why.empty() &&
               (!parallelLoops_ || tokens >= int64_t(threads) * kAutoTokensPerThread);
  int64_t parts =
      byTokens
          ? std::max<int64_t>(1, std::min<int64_t>(threads, tokens / minTokens))
          : 1;
  if (partsUsed)
    *partsUsed = static_cast<unsigned>(parts);
  if (parts == 1) {
    // One call; its parallel loops use the threads (none without them, a
    // documented case of Tokens: fewer than 2 * minTokens tokens).
    detail::ScopedWorkers workers(parallelLoops_ ? threads : 1);
    return run(entry, inputs, outputs, resident);
  }
  // Part p takes tokens [p T / parts, (p + 1) T / parts): views into the
  // caller's token-dependent buffers, the weights shared; the threads left
  // over go to the parts' parallel loops.
  auto slice = [&](const std::vector<TensorView> &views,
                   const std::vector<TensorSpec> &specs, int64_t first,
                   int64_t count) {
    std::vector<TensorView> out = views;
    for (size_t i = 0; i < views.size(); ++i) {
      if (!specs[i].hasTokenDim())
        continue;
      // The tokens are dimension 0 (whyNotSplittable): a row is the
      // tensor at T = 1.
      size_t rowBytes = specs[i].numElements(1) * dtypeSize(specs[i].dtype);
      out[i].data = static_cast<char *>(views[i].data) + first * rowBytes;
      out[i].shape[0] = count;
    }
    return out;
  };
  std::vector<Status> status(parts, Status::ok());
  auto part = [&](int64_t p) {
    int64_t first = p * tokens / parts, end = (p + 1) * tokens / parts;
    std::vector<TensorView> in = slice(inputs, spec->args, first, end - first);
    std::vector<TensorView> out =
        slice(outputs, spec->results, first, end - first);
    unsigned share = static_cast<unsigned>((p + 1) * threads / parts -
                                           p * threads / parts);
    detail::ScopedWorkers workers(parallelLoops_ ? share : 1);
    status[p] = run(entry, in, out, resident);
  };
  std::vector<std::thread> workers;
  for (int64_t p = 1; p < parts; ++p)
    workers.emplace_back(part, p);
  part(0);
  for (std::thread &w : workers)
    w.join();
  for (int64_t p = 0; p < parts; ++p)
    if (!status[p])
      return Status::error("tokens " + std::to_string(p * tokens / parts) +
                           ".." + std::to_string((p + 1) * tokens / parts) +
                           ": " + status[p].message());
  return Status::ok();
}

ResidentInputs::~ResidentInputs() {
  for (void *p : device_)
    if (p)
      cuda::freeManaged(p);
  for (void *p : derivedAllocated_) {
    if (onGPU_)
      cuda::freeManaged(p);
    else if (runtimeAllocator_)
      _mlir_memref_to_llvm_free(p);
    else
      std::free(p);
  }
}

size_t ResidentInputs::count() const {
  size_t n = 0;
  for (void *p : device_)
    n += p != nullptr;
  return n;
}

Result<std::shared_ptr<ResidentInputs>>
Artifact::makeResident(const std::string &entry,
                       const std::vector<TensorView> &inputs) const {
  const EntrySpec *spec = find(entry);
  if (!spec)
    return Status::error("artifact '" + dir_ + "' has no entry '" + entry +
                         "'");
  if (inputs.size() != spec->args.size())
    return Status::error("entry '" + entry + "' takes " +
                         std::to_string(spec->args.size()) + " inputs, got " +
                         std::to_string(inputs.size()));
  std::shared_ptr<ResidentInputs> r(new ResidentInputs());
  r->artifact_ = this;
  r->entry_ = entry;
  r->device_.assign(inputs.size(), nullptr);
  r->host_.assign(inputs.size(), nullptr);
  r->onGPU_ = target_ == "cuda";
  r->runtimeAllocator_ = runtimeAllocator_;
  // A weight made resident or read by the derive function: the entry's
  // dtype and shape, with data.
  auto checkWeight = [&](size_t i) -> Status {
    const TensorSpec &a = spec->args[i];
    const TensorView &v = inputs[i];
    if (v.dtype != a.dtype || v.shape != a.shape)
      return Status::error("input #" + std::to_string(i) + " '" + a.name +
                           "' has dtype " + dtypeName(v.dtype) + " and shape " +
                           shapeString(v.shape) + ", expected " +
                           dtypeName(a.dtype) + " " + shapeString(a.shape));
    if (a.numElements(0) && !v.data)
      return Status::error("input #" + std::to_string(i) + " '" + a.name +
                           "' has no data");
    return Status::ok();
  };
  for (size_t i = 0; i < inputs.size() && target_ == "cuda"; ++i) {
    const TensorSpec &a = spec->args[i];
    if (a.hasTokenDim())
      continue; // staged per call
    if (Status c = checkWeight(i); !c)
      return c;
    const TensorView &v = inputs[i];
    size_t bytes = a.numElements(0) * dtypeSize(a.dtype);
    Result<void *> m = cuda::allocManaged(bytes);
    if (!m)
      return Status::error("input #" + std::to_string(i) + " '" + a.name +
                           "': " + m.message());
    if (Status c = cuda::copyToDevice(m.value(), v.data, bytes); !c) {
      cuda::freeManaged(m.value());
      return Status::error("input #" + std::to_string(i) + " '" + a.name +
                           "': " + c.message());
    }
    r->device_[i] = m.value();
    r->host_[i] = v.data;
    r->bytes_ += bytes;
  }
  // The derived weights, once, from these weights (device copies on a GPU).
  if (spec->derive) {
    std::vector<void *> argData(inputs.size(), nullptr);
    for (size_t i : spec->derive->inputs) {
      if (Status c = checkWeight(i); !c)
        return c;
      argData[i] = r->device_[i] ? r->device_[i] : inputs[i].data;
      r->host_[i] = inputs[i].data;
    }
    if (Status d = computeDerived(*spec, argData, r->derived_,
                                  r->derivedAllocated_);
        !d)
      return d;
    for (const TensorSpec &t : spec->derive->results)
      r->derivedBytes_ += t.numElements(0) * dtypeSize(t.dtype);
  }
  return r;
}

} // namespace moe::rt
