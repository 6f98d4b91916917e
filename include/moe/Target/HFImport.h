//===- HFImport.h - Hugging Face checkpoints to moe layers ------*- C++ -*-===//
//
// Imports an exported model directory (config.json + *.safetensors, single
// or sharded) into one moe module per decoder layer: an MoE block becomes a
// `moe.layer` (or `moe.cartesian`), a dense MLP a `moe.ffn`, both on
// function arguments named by role. Weights never enter the IR: each layer
// keeps a plan of how to copy its tensors out of the mmap'd checkpoint into
// the runtime's layout (experts stacked, gpt-oss gate/up de-interleaved and
// transposed), carried out once by `writeWeights`. docs/importer.md lists the
// families, config keys and tensor names.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGET_HFIMPORT_H
#define MOE_TARGET_HFIMPORT_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mlir::moe::hf {

enum class ElemType { F32, F16, BF16 };
llvm::StringRef getElemTypeName(ElemType t); // "f32", "f16", "bf16"

/// A tensor of the checkpoint, mapped read-only.
struct SourceTensor {
  /// `file` names the file in messages; `path` is where it was opened.
  std::string name, file, path;
  ElemType dtype = ElemType::F32;
  std::vector<int64_t> shape;
  const unsigned char *data = nullptr;
  /// The file's dtype when it is not F32/F16/BF16 (e.g. "F8_E4M3", "U8"):
  /// using such a tensor is an error.
  std::string unsupportedDType;
};

/// Part of a converted tensor: the elements of `src` at
/// `offset + sum(idx[d] * strides[d])` (in elements) for `idx` over `shape`,
/// in row-major order. A weight's pieces follow each other in its data.
struct Piece {
  const SourceTensor *src = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> shape, strides;
  /// A merged expert's row (--merge): when not empty, the piece's elements
  /// are sum_j coeffs[j] * terms[j] (pieces of this shape), in double,
  /// rounded once; `src` is unused.
  std::vector<Piece> terms;
  std::vector<double> coeffs;
};

/// One argument of a layer's function, in the runtime's layout.
struct Weight {
  std::string role;
  ElemType dtype = ElemType::F32;
  std::vector<int64_t> shape;
  std::vector<Piece> pieces;
};

struct LayerPlan {
  int64_t index = 0;
  /// "moe" (moe.layer / moe.cartesian) or "dense" (moe.ffn).
  std::string kind;
  /// Name of the entry function in `ir`.
  std::string entry;
  /// The layer's module, without weights.
  std::string ir;
  std::vector<Weight> weights;
};

class Checkpoint;

struct ModelPlan {
  std::string modelType;
  int64_t hiddenSize = 0;
  ElemType dtype = ElemType::F32;
  std::vector<LayerPlan> layers;
  /// Keeps the checkpoint's mappings alive for the pieces.
  std::shared_ptr<Checkpoint> checkpoint;
  /// Likewise for the files of an AddSpec.
  std::vector<std::shared_ptr<Checkpoint>> additions;
};

/// Experts to remove before compiling (MC-Suite drop, MOE_SEMANTICS.md §5),
/// by decoder layer index: read from a "moe-drop/1" file, which
/// `moe-analyze --rank C --keep N --drop-out FILE` writes.
struct DropSpec {
  std::map<int64_t, std::vector<int64_t>> layers;
};
llvm::Expected<DropSpec> readDropFile(llvm::StringRef path);

/// Experts to append before compiling (Nexus add, MOE_SEMANTICS.md §5), by
/// decoder layer index: read from safetensors files whose tensors are named
/// `layers.<i>.<name>`, one expert per file and layer, with `<name>` one of
/// router, router_bias, selection_bias, domain_embedding, gate, up, down,
/// gate_bias, up_bias, down_bias, lora_a, lora_b (one row of the layer's
/// per-expert operand of that role, in the runtime's layout: W[out, in]).
/// Files apply in order: each adds one expert to every layer it names.
struct AddSpec {
  struct Expert {
    std::string file;
    /// Tensor by moe.layer role ("domain_embeddings" for domain_embedding).
    std::map<std::string, const SourceTensor *> tensors;
  };
  std::map<int64_t, std::vector<Expert>> layers;
  /// Keeps the files mapped.
  std::vector<std::shared_ptr<Checkpoint>> files;
};
llvm::Expected<AddSpec> readAddFiles(llvm::ArrayRef<std::string> paths);

/// Experts to merge before compiling (M-SMoE merge, MOE_SEMANTICS.md §5), by
/// decoder layer index: read from a "moe-merge/1" file, which
/// `moe-analyze --merge-plan KIND --target M --merge-out FILE` writes. Each
/// group becomes one expert, the frequency-weighted mean of its members;
/// experts in no group stay; the router keeps its rows (expert_map).
struct MergeSpec {
  struct Layer {
    std::vector<std::vector<int64_t>> groups;
    std::vector<double> frequencies; // per expert, or empty: uniform
  };
  std::map<int64_t, Layer> layers;
};
llvm::Expected<MergeSpec> readMergeFile(llvm::StringRef path);

/// True when `path` is a directory with a config.json.
bool isModelDirectory(llvm::StringRef path);

/// Reads config.json and the checkpoint's headers and plans every layer.
/// Errors name the file, the key or the tensor at fault.
/// With `drop`, the listed experts of each listed layer are left out of its
/// router and expert weights (k is clamped to the experts left). With `add`
/// (applied after `drop`), each listed layer gets its new experts appended:
/// the first new routed expert has id E (zero-computation experts move up),
/// k is unchanged.
/// With `merge` (applied last, ids as the layer has them then), each listed
/// layer's groups of experts become one expert each.
llvm::Expected<ModelPlan> planModel(llvm::StringRef dir,
                                    const DropSpec *drop = nullptr,
                                    const AddSpec *add = nullptr,
                                    const MergeSpec *merge = nullptr);

/// A hash of the layer's weights as they will be written (source bytes and
/// the conversion), recorded in the weights file.
uint64_t hashWeights(const LayerPlan &layer);

/// A cheap stand-in for hashWeights: the same layout, but each source file
/// by path, size and modification time (ns) instead of its bytes. Equal
/// identities mean equal weights unless a source file was rewritten in place
/// keeping its size and modification time (the assumption make and ccache
/// make); `moe-compile --rehash` does not trust it.
uint64_t identifyWeights(const LayerPlan &layer);

/// Writes the layer's weights as a .safetensors file named by role, in one
/// copy from the mapped checkpoint, with `hash` in its metadata.
llvm::Error writeWeights(const LayerPlan &layer, llvm::StringRef path,
                         uint64_t hash,
                         std::optional<uint64_t> identity = std::nullopt);

/// What `writeWeights` records in a weights file: the content hash and the
/// source identity (identifyWeights) it was written from.
struct WeightsStamp {
  std::optional<uint64_t> hash, identity;
};
WeightsStamp readWeightsStamp(llvm::StringRef path);

/// The hash recorded by `writeWeights` in `path`, if the file is complete.
std::optional<uint64_t> readWeightsHash(llvm::StringRef path);

} // namespace mlir::moe::hf

#endif // MOE_TARGET_HFIMPORT_H
