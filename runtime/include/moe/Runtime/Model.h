//===- Model.h - load and run a compiled model directory --------*- C++ -*-===//
//
// A model compiled by `moe-compile <model-dir> -o <out>`: model.json lists
// the layers, each with its kernel artifact (shared between layers of one
// shape) and its weights file (.safetensors named by argument role, in the
// kernel's layout). Loading maps the weight files; running a layer binds
// them to the kernel's arguments without copying. No LLVM/MLIR. A model that
// changes while it serves (experts added) is a LiveModel (LiveModel.h).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_MODEL_H
#define MOE_RUNTIME_MODEL_H

#include "moe/Runtime/Runtime.h"
#include "moe/Runtime/SafeTensors.h"

namespace moe::rt {

struct ModelLayer {
  int64_t index = 0;
  std::string kind; // "moe" or "dense"
  std::string entry, kernelDir, weightsPath, contentHash;
  /// The source hash the weights file must record (hex; empty in
  /// manifests written before it was recorded: not checked).
  std::string weightsHash;
  std::shared_ptr<Artifact> artifact;
  std::shared_ptr<SafeTensorsFile> weights;
  /// cuda kernels: the weights uploaded to the device once at load (empty
  /// for cpu kernels, which read the mapping directly).
  std::shared_ptr<ResidentInputs> resident;
  const EntrySpec &spec() const { return *artifact->find(entry); }
};

/// model.json of a compiled model, read and checked, nothing loaded: the
/// layers have their paths and hashes but no artifact or weights yet.
struct ModelManifest {
  std::string dir, path, modelType, target;
  int64_t hidden = 0;
  DType dtype = DType::f32;
  std::vector<ModelLayer> layers;
  /// "compiled_from": the checkpoint directory, the --drop and --merge
  /// files and the --add-expert files (absolute; empty when not recorded).
  std::string source, dropFile, mergeFile;
  std::vector<std::string> addFiles;
};
Result<ModelManifest> readModelManifest(const std::string &dir);

/// Loads `layer`'s kernel (the one in `kernels` when that kernel directory
/// is already loaded there; added otherwise) and maps its weights file,
/// checking each tensor against the kernel's signature and the file's
/// source hash against the manifest's. `layer.artifact` and
/// `layer.weights` are set only on success.
Status loadModelLayer(
    ModelLayer &layer,
    std::map<std::string, std::shared_ptr<Artifact>> &kernels);

/// Runs one loaded layer on `input` (T x H) into `output` (T x H,
/// caller-allocated), binding its weights to the kernel's arguments. With
/// `threads` > 1 (cpu models), Artifact::runThreaded with
/// ThreadSplit::Auto.
Status runModelLayer(const ModelLayer &layer, const TensorView &input,
                     TensorView &output, unsigned threads = 1);

class Model {
public:
  /// Loads `dir`/model.json, every kernel it names (once each) and maps
  /// every weights file, checking each tensor against the kernel's
  /// signature.
  static Result<std::shared_ptr<Model>> load(const std::string &dir);

  const std::string &modelType() const { return modelType_; }
  const std::string &target() const { return target_; }
  int64_t hiddenSize() const { return hidden_; }
  DType dtype() const { return dtype_; }
  const std::vector<ModelLayer> &layers() const { return layers_; }
  /// The layer with decoder index `index`, or nullptr.
  const ModelLayer *layer(int64_t index) const;

  /// Runs layer `index` on `input` (T x H in the model's dtype) into
  /// `output` (T x H, caller-allocated), on up to `threads` threads (cpu
  /// models; see runModelLayer).
  Status runLayer(int64_t index, const TensorView &input, TensorView &output,
                  unsigned threads = 1) const;

private:
  Model() = default;
  std::string dir_, modelType_, target_;
  int64_t hidden_ = 0;
  DType dtype_ = DType::f32;
  std::vector<ModelLayer> layers_;
};

} // namespace moe::rt

#endif // MOE_RUNTIME_MODEL_H
