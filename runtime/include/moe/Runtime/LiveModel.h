//===- LiveModel.h - a compiled model whose layers change live --*- C++ -*-===//
//
// A compiled model directory that keeps serving while experts are added
// (MOE_SEMANTICS.md §5 "Add"): the compiler runs as a subprocess
// (moe-compile <checkpoint> --add-expert FILE -o <dir>; the runtime has no
// compiler in it), recompiling only the layers whose content changed; the
// runtime then loads only the layers whose content hash changed and swaps
// the model's layer table in one atomic store. A call holds the table it
// started on until it returns, so calls in flight finish on the old layers
// (whose kernels and weights stay loaded until then) and later calls run the
// new ones. A failed compile or load swaps nothing and says why. No
// LLVM/MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_LIVEMODEL_H
#define MOE_RUNTIME_LIVEMODEL_H

#include "moe/Runtime/Model.h"

#include <functional>
#include <mutex>

namespace moe::rt {

class LiveModel {
public:
  /// The layers that serve together: immutable once published, replaced
  /// whole. Unchanged layers are shared between consecutive tables.
  struct Layers {
    /// 0 as loaded, one more per swap.
    uint64_t version = 0;
    /// The directory whose model.json it was loaded from.
    std::string dir;
    std::vector<std::shared_ptr<const ModelLayer>> layers;
    /// The layer with decoder index `index`, or nullptr.
    const ModelLayer *find(int64_t index) const;
    /// Runs layer `index` of this table, on up to `threads` threads (cpu
    /// models; see runModelLayer).
    Status run(int64_t index, const TensorView &input, TensorView &output,
               unsigned threads = 1) const;
  };

  static Result<std::shared_ptr<LiveModel>> load(const std::string &dir);

  const std::string &modelType() const { return modelType_; }
  const std::string &target() const { return target_; }
  int64_t hiddenSize() const { return hidden_; }
  DType dtype() const { return dtype_; }

  /// The table serving now. A caller running several layers as one forward
  /// pass holds it for the pass, so that every layer comes from one version.
  std::shared_ptr<const Layers> snapshot() const {
    return std::atomic_load(&current_);
  }

  /// Runs layer `index` of the table serving when the call starts (kept
  /// alive until it returns, whatever is swapped meanwhile); `version`, if
  /// given, receives that table's version. `threads` as for Layers::run.
  Status runLayer(int64_t index, const TensorView &input, TensorView &output,
                  uint64_t *version = nullptr, unsigned threads = 1) const;

  /// A table loaded but not serving yet.
  struct Update {
    /// The table it was prepared against.
    std::shared_ptr<const Layers> base;
    std::shared_ptr<Layers> next;
    /// Decoder indices of the layers loaded anew (content hash changed).
    std::vector<int64_t> changed;
  };
  /// Reads `dir`/model.json and loads the layers whose content hash differs
  /// from the serving ones (a kernel a serving layer already has loaded is
  /// not loaded again); the others are shared. Nothing is swapped. Fails on
  /// a bad manifest, kernel or weights file, or a model that is not this
  /// one (other layers, hidden size, dtype or target).
  Result<Update> prepare(const std::string &dir) const;
  /// Makes `update` serve, in one atomic store. Fails, swapping nothing, if
  /// another update was committed after `update` was prepared.
  Status commit(const Update &update);

  struct AddOptions {
    /// moe-compile, and the checkpoint directory the model was compiled
    /// from (default: the one its model.json records).
    std::string compiler, source;
    /// The add files of this add (moe-compile --add-expert). The model's
    /// own inputs come first: the --drop and --merge files and the add
    /// files its model.json records (earlier adds), so that what it had
    /// stays.
    std::vector<std::string> files;
    /// Where the compiler writes: the serving directory when empty (its
    /// kernels and weights are then reused; files in use stay mapped).
    std::string outDir;
    /// More compiler arguments (e.g. "-j", "1").
    std::vector<std::string> compilerArgs;
    /// Called with the new table after it is loaded and before it serves
    /// (e.g. to warm it up or check it); an error stops the add.
    std::function<Status(const Layers &)> beforeSwap;
  };
  struct AddReport {
    double compileSeconds = 0, loadSeconds = 0, swapSeconds = 0;
    std::vector<int64_t> changed;
    uint64_t version = 0;
    /// The compiler's last line of output (its summary).
    std::string compilerSummary;
  };
  /// Adds experts: compiles (moe-compile <source> --add-expert F... -o
  /// <outDir> --target <target>), prepares and commits. One add at a time.
  /// On any failure nothing is swapped and the status says why (for a
  /// failed compile, its exit status and the last line it printed).
  Result<AddReport> addExpert(const AddOptions &options);

private:
  LiveModel() = default;
  std::shared_ptr<const Layers> current_; // std::atomic_load/_store only
  std::mutex updateMutex_;                // serializes prepare/commit/add
  /// What the serving model was compiled from (model.json's
  /// compiled_from, updated by each add).
  std::string source_, dropFile_, mergeFile_;
  std::vector<std::string> added_;
  std::string modelType_, target_;
  int64_t hidden_ = 0;
  DType dtype_ = DType::f32;
};

/// Runs `argv` (argv[0] is looked up in PATH unless it has a '/') to
/// completion with stdout and stderr captured into `output`; returns its
/// exit status, 128 + the signal that ended it, or -1 when it could not be
/// started (`output` then says why).
int runProcess(const std::vector<std::string> &argv, std::string &output);

} // namespace moe::rt

#endif // MOE_RUNTIME_LIVEMODEL_H
