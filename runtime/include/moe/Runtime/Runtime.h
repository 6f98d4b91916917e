//===- Runtime.h - load and run compiled moe layers -------------*- C++ -*-===//
//
// The moe-mlir runtime: loads an artifact written by moe-compile (a shared
// object plus manifest.json), checks inputs against the manifest's
// signature, and runs entry points. It depends on nothing but the C++
// standard library and libdl, so it can ship next to a serving process.
// Errors are values (`Status`, `Result<T>`) with one-line messages.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_RUNTIME_H
#define MOE_RUNTIME_RUNTIME_H

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace moe::rt {

enum class DType { f32, f16, bf16, i32, i64 };
const char *dtypeName(DType t);
std::optional<DType> parseDType(const std::string &name);
size_t dtypeSize(DType t);

/// Success, or a one-line message.
class Status {
public:
  static Status ok() { return Status(); }
  static Status error(std::string msg) { return Status(std::move(msg)); }
  bool isOk() const { return !msg_; }
  explicit operator bool() const { return isOk(); }
  /// The error's message; "" for success.
  const std::string &message() const {
    static const std::string none;
    return msg_ ? *msg_ : none;
  }

private:
  Status() = default;
  explicit Status(std::string m) : msg_(std::move(m)) {}
  std::optional<std::string> msg_;
};

/// A value or an error message.
template <typename T> class Result {
public:
  Result(T v) : v_(std::move(v)) {}
  Result(Status s) : v_(std::move(s)) {}
  bool isOk() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return isOk(); }
  T &value() { return std::get<T>(v_); }
  const std::string &message() const { return std::get<Status>(v_).message(); }

private:
  std::variant<T, Status> v_;
};

/// A tensor in the signature: -1 marks the dynamic token dimension.
struct TensorSpec {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  size_t numElements(int64_t tokens) const;
  /// Whether the shape has the token dimension (-1): such inputs change
  /// with each call; the others are weights.
  bool hasTokenDim() const;
};

/// A moe.layer's configuration as the manifest writes it ("routing",
/// "activation", ...; numbers as text) and its special expert kinds.
struct LayerConfig {
  std::map<std::string, std::string> values;
  std::vector<std::string> specialKinds;
};

/// One compiled function.
struct EntrySpec {
  std::string name, symbol;
  std::vector<TensorSpec> args, results;
  /// Set when the function is one moe.layer on its arguments (argument
  /// names are then the layer's operand roles).
  std::optional<LayerConfig> layer;
  /// Set when the function is one moe.cartesian of two moe.layer (argument
  /// names "input", "norm_weight", "first.<role>", "second.<role>").
  struct Cartesian {
    double epsilon = 1e-6;
    LayerConfig first, second;
  };
  std::optional<Cartesian> cartesian;
  /// Set when the function is one moe.ffn (a dense MLP layer) on its
  /// arguments ("input", "gate", "up", "down", ...): "activation", "alpha",
  /// "limit".
  std::optional<LayerConfig> ffn;
  /// Set when the compiler moved weight-only computations (a Nexus
  /// projected router) out of the call (manifest "derive"): the function
  /// `symbol` takes the arguments `inputs` (weights, by index into `args`)
  /// and returns `results`, which the compiled entry takes after `args`.
  /// The runtime computes them: once in makeResident, or before each run()
  /// without resident inputs. `args` is the caller's signature either way.
  struct Derive {
    std::string symbol;
    std::vector<size_t> inputs;
    std::vector<TensorSpec> results;
  };
  std::optional<Derive> derive;
  /// cuda artifacts (manifest "cuda_graph_blocker"): why the entry's host
  /// code cannot be captured into a CUDA graph ("" if it can: it only
  /// allocates, launches and frees), as moe-compile found; unset for an
  /// artifact compiled before the check.
  std::optional<std::string> cudaGraphBlocker;
};

/// A dense row-major tensor owned by the caller.
struct TensorView {
  void *data = nullptr;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
};

class Artifact;

namespace cuda {
class Graph;
} // namespace cuda

/// Device-resident copies of an entry's weights: its inputs without the
/// token dimension, uploaded once (Artifact::makeResident) and read by every
/// later run() given this object, instead of staging them into device
/// memory on each call (the issue's "weights uploaded once per loaded
/// layer"). For cpu artifacts it holds nothing and changes nothing. The
/// caller promises that the host data it was made from does not change
/// while it is in use; a run() with other host pointers for those inputs is
/// an error. Freed (cuMemFree) when the last reference goes.
class ResidentInputs {
public:
  ~ResidentInputs();
  ResidentInputs(const ResidentInputs &) = delete;
  ResidentInputs &operator=(const ResidentInputs &) = delete;
  /// Bytes held on the device.
  size_t bytes() const { return bytes_; }
  /// Inputs held (of the entry's arguments).
  size_t count() const;
  /// Derived tensors computed once from the weights (EntrySpec::derive),
  /// for every target, and their bytes.
  size_t derivedCount() const { return derived_.size(); }
  size_t derivedBytes() const { return derivedBytes_; }

private:
  friend class Artifact;
  ResidentInputs() = default;
  const Artifact *artifact_ = nullptr;
  std::string entry_;
  /// Per argument: the device copy (or null) and the host data it copies
  /// (for a derive input also on the cpu, where nothing is copied).
  std::vector<void *> device_;
  std::vector<const void *> host_;
  size_t bytes_ = 0;
  /// The derived tensors (EntrySpec::derive): their data and the
  /// allocations to free, as the compiled code returned them.
  std::vector<void *> derived_, derivedAllocated_;
  size_t derivedBytes_ = 0;
  bool onGPU_ = false, runtimeAllocator_ = false;
};


/// Counters of the allocator that compiled cpu layers use (artifacts whose
/// manifest says "host_allocator": "moe-runtime"): blocks of 256 KiB and
/// more are kept when freed, up to MOE_CPU_CACHE_BYTES bytes (default
/// 1 GiB, 0: none), and handed out again to a request of at least 3/4 of
/// their size, so a layer's intermediates are not faulted in again on
/// every call.
struct HostAllocatorStats {
  uint64_t allocations = 0; ///< blocks handed out
  uint64_t reused = 0;      ///< of them, from the cache
  uint64_t cachedBlocks = 0;
  uint64_t cachedBytes = 0;
  uint64_t limitBytes = 0;
};
HostAllocatorStats hostAllocatorStats();

/// Frees every block the allocator keeps (e.g. after a burst of large
/// calls).
void trimHostAllocator();

/// Asks Linux for the AMX tile state for this process (arch_prctl
/// ARCH_REQ_XCOMP_PERM, XTILEDATA), which artifacts compiled with
/// `gemm-amx` need; Artifact::load does it for them. An error says why
/// not (no AMX, an older kernel, not Linux on x86-64).
Status requestAMXTiles();

/// A loaded artifact. Thread-safe: several threads may run entries at once.
class Artifact {
public:
  /// Loads `dir`/manifest.json and the library it names.
  static Result<std::shared_ptr<Artifact>> load(const std::string &dir);
  ~Artifact();

  const std::string &target() const { return target_; }
  const std::string &contentHash() const { return hash_; }
  const std::vector<EntrySpec> &entries() const { return entries_; }
  const EntrySpec *find(const std::string &name) const;

  /// Runs `entry` on `inputs`; `outputs` must be allocated by the caller
  /// with the result shapes (the token dimension equal to the inputs').
  /// With `resident` (made by makeResident for this artifact and entry),
  /// the inputs it holds are read from the device copies.
  Status run(const std::string &entry, const std::vector<TensorView> &inputs,
             std::vector<TensorView> &outputs,
             const ResidentInputs *resident = nullptr) const;

  /// How runThreaded uses its threads.
  enum class ThreadSplit {
    /// Tokens when the entry allows it and every thread gets at least
    /// kAutoTokensPerThread of them (or the artifact has no parallel loops),
    /// else columns.
    Auto,
    /// Contiguous ranges of at least `minTokens` tokens, one run() each on
    /// its own thread (fewer parts for fewer tokens: T / minTokens, at least
    /// one). Only for entries that compute their tokens independently: one
    /// moe.layer without capacity dispatch, one moe.cartesian or one
    /// moe.ffn.
    Tokens,
    /// One run() whose compiled parallel loops (the blocked GEMMs' column
    /// groups; manifest "parallel_loops") are cut into tasks for the
    /// threads. Any entry of an artifact compiled with them (the default of
    /// moe-to-llvm-cpu).
    Columns,
  };

  /// The tokens per thread from which ThreadSplit::Auto splits the tokens
  /// rather than the columns. On the 2-core machine of benchmarks/RESULTS.md
  /// ("Parallel loops") columns were faster at 64 tokens per thread, tokens
  /// at 256: splitting the tokens also runs the routing, the sort and the
  /// activations on every thread, but each part reads the weights of every
  /// expert its tokens chose again.
  static constexpr int64_t kAutoTokensPerThread = 128;

  /// run() on up to `threads` threads, the caller's included, for cpu
  /// artifacts; see ThreadSplit. When the tokens are split and the artifact
  /// has parallel loops, the parts share the threads among their loops. A
  /// split the entry or artifact does not allow, or a non-cpu target with
  /// `threads` > 1, is an error saying why, not a one-thread run. The
  /// outputs are the ones run() gives, up to f32 rounding (rows fall into
  /// other register tiles). `parts`, when given, receives the number of
  /// calls the tokens were split into (1 for Columns).
  Status runThreaded(const std::string &entry,
                     const std::vector<TensorView> &inputs,
                     std::vector<TensorView> &outputs, unsigned threads,
                     int64_t minTokens = 16, unsigned *parts = nullptr,
                     ThreadSplit split = ThreadSplit::Auto,
                     const ResidentInputs *resident = nullptr) const;

  /// Whether the compiled code has parallel loops (manifest
  /// "parallel_loops"; cpu artifacts only).
  bool hasParallelLoops() const { return parallelLoops_; }

  /// Whether the compiled code allocates its buffers through the runtime's
  /// allocator, which caches large blocks between calls (manifest
  /// "host_allocator": "moe-runtime"; cpu artifacts only).
  bool usesRuntimeAllocator() const { return runtimeAllocator_; }

  /// Whether the compiled code runs bf16 GEMMs on AMX tiles (manifest
  /// "amx_tiles"; cpu artifacts only). Loading such an artifact asks Linux
  /// for the tile state (arch_prctl), and fails saying so where it is not
  /// granted.
  bool usesAMXTiles() const { return amxTiles_; }

  /// Uploads the inputs of `entry` that have no token dimension (the
  /// weights) once; `inputs` as for run(), the token-dependent ones may be
  /// empty views. For cpu artifacts nothing is uploaded. On every target
  /// the entry's derived tensors (EntrySpec::derive) are computed here,
  /// once, from these weights.
  Result<std::shared_ptr<ResidentInputs>>
  makeResident(const std::string &entry,
               const std::vector<TensorView> &inputs) const;

  /// CUDA graphs (cuda artifacts; off unless turned on here or by
  /// MOE_CUDA_GRAPHS=1 in the environment at load). When on, a run() whose
  /// token-dependent inputs and outputs are in device memory
  /// (cuda::isDeviceMemory) and whose weights are resident (makeResident)
  /// or in device memory too is captured once into a CUDA graph per entry,
  /// token count and set of buffers, and later calls with the same ones
  /// replay it: one cuGraphLaunch instead of the host code's launches,
  /// copies and the runtime's work around each. A replay reads the buffers'
  /// contents at its time, so a serving loop that refills the same input
  /// buffers every step replays. A call that does not qualify runs as
  /// without graphs and is counted (CudaGraphStats::ineligible, with the
  /// reason); the artifact's first such call also says why on stderr. A
  /// graph keeps the intermediates and results of its call allocated
  /// (CudaGraphStats::bytes); at most kMaxCudaGraphs are kept, holding at
  /// most cudaGraphByteLimit() bytes together (beyond it all but the
  /// newest), the least recently used dropped. Turning graphs off drops
  /// them.
  void useCudaGraphs(bool on);
  bool usesCudaGraphs() const {
    return cudaGraphs_.load(std::memory_order_relaxed);
  }
  struct CudaGraphStats {
    uint64_t captured = 0, replayed = 0, ineligible = 0;
    /// Captures that failed while graphs were kept and were tried again
    /// after dropping them (out of device memory while capturing, the
    /// graphs' memory is the only memory that can be freed).
    uint64_t retried = 0;
    /// Graphs kept now, and the device memory they hold.
    size_t graphs = 0, bytes = 0;
    /// Why the last ineligible call could not use a graph.
    std::string lastIneligible;
  };
  CudaGraphStats cudaGraphStats() const;
  /// Destroys the graphs kept (their memory goes back to the cache).
  void dropCudaGraphs() const;
  static constexpr size_t kMaxCudaGraphs = 32;
  /// MOE_CUDA_GRAPHS_MB (default 4096) in bytes: the device memory one
  /// artifact's graphs may hold together.
  static size_t cudaGraphByteLimit();

private:
  Artifact() = default;
  /// Checks `inputs` and `outputs` against `entry`'s signature; sets `spec`
  /// and the token count `tokens` (-1 when no tensor has the dimension).
  Status validate(const std::string &entry,
                  const std::vector<TensorView> &inputs,
                  const std::vector<TensorView> &outputs,
                  const EntrySpec *&spec, int64_t &tokens) const;
  void *handle_ = nullptr;
  std::string dir_, target_, hash_;
  bool parallelLoops_ = false;
  /// The compiled code allocates through the runtime's
  /// _mlir_memref_to_llvm_alloc (manifest "host_allocator": "moe-runtime"),
  /// so its results are freed by _mlir_memref_to_llvm_free, not free().
  bool runtimeAllocator_ = false;
  bool amxTiles_ = false;
  std::vector<EntrySpec> entries_;
  std::vector<void *> symbols_;
  /// Per entry: its `<entry>__derive` function (EntrySpec::derive) or null.
  std::vector<void *> deriveSymbols_;
  /// Calls `spec`'s derive function on the weights `argData` (per argument
  /// of `spec`, the data the compiled code reads: device copies on a GPU);
  /// returns the derived tensors' data and the allocations to free.
  Status computeDerived(const EntrySpec &spec,
                        const std::vector<void *> &argData,
                        std::vector<void *> &data,
                        std::vector<void *> &allocated) const;
  /// Frees a buffer the compiled code returned.
  void freeReturned(void *allocated) const;
  /// Checks the result descriptors `result` of a call against `outputs`,
  /// copies them there and frees the returned buffers; `status` is the
  /// call's so far (nothing is copied after an error). `queued`: the
  /// copies are queued on this thread's stream without a wait (outputs in
  /// device memory; a graph's capture).
  Status takeResults(const EntrySpec &spec, const std::vector<int64_t> &result,
                     std::vector<TensorView> &outputs, Status status,
                     bool queued) const;
  /// run() through the CUDA graph of `spec`, T = `tokens` and `buffers`
  /// (the data the kernels read) and the outputs: captured first if there
  /// is none.
  Status runGraph(const EntrySpec &spec, int64_t tokens,
                  const std::vector<const void *> &buffers,
                  std::vector<void *> &argPtrs,
                  std::vector<TensorView> &outputs) const;
  /// Device bytes the kept graphs hold (graphMutex_ held).
  size_t graphBytes() const;
  /// Counts a call that could not use a graph; says why once.
  void noteNoGraph(const std::string &entry, const std::string &why) const;
  struct GraphSlot {
    std::shared_ptr<cuda::Graph> graph;
    uint64_t lastUse = 0;
  };
  std::atomic<bool> cudaGraphs_{false};
  mutable std::mutex graphMutex_;
  /// By entry index, T, device, then the buffers' addresses.
  mutable std::map<std::vector<uintptr_t>, GraphSlot> graphs_;
  mutable CudaGraphStats graphStats_;
  mutable uint64_t graphClock_ = 0;
  mutable bool warnedNoGraph_ = false;
};

/// A slot holding the artifact that currently serves a layer. `replace`
/// swaps in a new one atomically: calls already running finish on the old
/// artifact (they hold a reference), new calls see the new one.
class LayerSlot {
public:
  explicit LayerSlot(std::shared_ptr<Artifact> a) : current_(std::move(a)) {}
  std::shared_ptr<Artifact> get() const { return std::atomic_load(&current_); }
  void replace(std::shared_ptr<Artifact> a) {
    std::atomic_store(&current_, std::move(a));
  }
  Status run(const std::string &entry, const std::vector<TensorView> &inputs,
             std::vector<TensorView> &outputs) const {
    return get()->run(entry, inputs, outputs);
  }

private:
  std::shared_ptr<Artifact> current_;
};

} // namespace moe::rt

#endif // MOE_RUNTIME_RUNTIME_H
