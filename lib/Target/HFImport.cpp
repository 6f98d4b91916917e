//===- HFImport.cpp - Hugging Face checkpoints to moe layers ---------------===//
//
// config.json decides, per family, which layers are MoE blocks and how they
// route (MOE_SEMANTICS.md §1, hf-tensor-names.md); the safetensors headers
// give the tensors, whose names and shapes are checked against the config
// before any IR is built. The IR is generated as text (the same text a user
// would write, so `--stop-after=input` shows it) and verified when parsed.
//
//===----------------------------------------------------------------------===//

#include "moe/Target/HFImport.h"

#include "moe/Dialect/MoE/IR/LayerOperands.h"

#include "moe/Runtime/Half.h"
#include "moe/Runtime/SafeTensors.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileOutputBuffer.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"

#include <chrono>
#include <cstring>
#include <functional>
#include <map>

using namespace mlir::moe::hf;
using llvm::StringRef;
using llvm::Twine;

namespace {
llvm::Error makeError(const Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

std::string formatShape(llvm::ArrayRef<int64_t> shape) {
  return "[" + llvm::join(llvm::map_range(shape, [](int64_t d) {
                            return std::to_string(d);
                          }),
                          ", ") +
         "]";
}

size_t elemSize(ElemType t) { return t == ElemType::F32 ? 4 : 2; }

float loadElem(const unsigned char *p, ElemType t) {
  if (t == ElemType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return t == ElemType::BF16 ? ::moe::rt::bf16ToFloat(h)
                             : ::moe::rt::f16ToFloat(h);
}

void storeElem(unsigned char *p, ElemType t, float v) {
  if (t == ElemType::F32) {
    std::memcpy(p, &v, 4);
    return;
  }
  uint16_t h = t == ElemType::BF16 ? ::moe::rt::floatToBF16(v)
                                   : ::moe::rt::floatToF16(v);
  std::memcpy(p, &h, 2);
}

/// "F32", "F16", "BF16": the safetensors spelling of the type's name.
std::string safetensorsDType(ElemType t) {
  return getElemTypeName(t).upper();
}

int64_t numElements(llvm::ArrayRef<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}
} // namespace

//===----------------------------------------------------------------------===//
// Checkpoint: the mapped safetensors files
//===----------------------------------------------------------------------===//

namespace mlir::moe::hf {
class Checkpoint {
public:
  static llvm::Expected<std::shared_ptr<Checkpoint>> open(StringRef dir);
  /// One safetensors file on its own (an --add-expert file).
  static llvm::Expected<std::shared_ptr<Checkpoint>> openFile(StringRef path);

  /// The tensor `name`, or nullptr.
  const SourceTensor *find(StringRef name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
  }
  /// Where tensors come from, for messages ("model.safetensors", or the
  /// index file).
  std::string source;
  const llvm::StringMap<SourceTensor> &all() const { return tensors; }

private:
  std::vector<std::shared_ptr<::moe::rt::SafeTensorsFile>> files;
  llvm::StringMap<SourceTensor> tensors;
  llvm::Error add(StringRef dir, StringRef file,
                  const std::vector<std::string> *only);
};
} // namespace mlir::moe::hf

llvm::Error Checkpoint::add(StringRef dir, StringRef file,
                            const std::vector<std::string> *only) {
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, file);
  auto opened = ::moe::rt::SafeTensorsFile::open(std::string(path));
  if (!opened)
    return makeError(opened.message());
  std::shared_ptr<::moe::rt::SafeTensorsFile> st = opened.value();
  files.push_back(st);
  auto addOne = [&](const std::string &name,
                    const ::moe::rt::SafeTensor &t) -> llvm::Error {
    SourceTensor s;
    s.name = name;
    s.file = file.str();
    s.path = std::string(path);
    s.shape = t.shape;
    s.data = t.data;
    if (t.dtype == "F32")
      s.dtype = ElemType::F32;
    else if (t.dtype == "F16")
      s.dtype = ElemType::F16;
    else if (t.dtype == "BF16")
      s.dtype = ElemType::BF16;
    else
      s.unsupportedDType = t.dtype; // an error only if a layer needs it
    if (tensors.count(name))
      return makeError("tensor '" + name + "' appears in both '" +
                       tensors[name].file + "' and '" + file + "'");
    tensors[name] = std::move(s);
    return llvm::Error::success();
  };
  if (!only) {
    for (const auto &[name, t] : st->tensors())
      if (auto err = addOne(name, t))
        return err;
    return llvm::Error::success();
  }
  for (const std::string &name : *only) {
    const ::moe::rt::SafeTensor *t = st->find(name);
    if (!t)
      return makeError("'model.safetensors.index.json' maps tensor '" + name +
                       "' to '" + file + "', which has no such tensor");
    if (auto err = addOne(name, *t))
      return err;
  }
  return llvm::Error::success();
}

llvm::Expected<std::shared_ptr<Checkpoint>>
Checkpoint::openFile(StringRef path) {
  auto ckpt = std::make_shared<Checkpoint>();
  ckpt->source = path.str();
  if (auto err = ckpt->add(llvm::sys::path::parent_path(path),
                           llvm::sys::path::filename(path), nullptr))
    return std::move(err);
  return ckpt;
}

llvm::Expected<std::shared_ptr<Checkpoint>> Checkpoint::open(StringRef dir) {
  auto ckpt = std::make_shared<Checkpoint>();
  llvm::SmallString<256> single(dir), index(dir);
  llvm::sys::path::append(single, "model.safetensors");
  llvm::sys::path::append(index, "model.safetensors.index.json");
  if (llvm::sys::fs::exists(index)) {
    ckpt->source = "model.safetensors.index.json";
    auto buf = llvm::MemoryBuffer::getFile(index);
    if (!buf)
      return makeError("cannot read '" + index + "': " +
                       buf.getError().message());
    auto json = llvm::json::parse((*buf)->getBuffer());
    if (!json)
      return makeError("'" + index + "' is not valid JSON: " +
                       llvm::toString(json.takeError()));
    const llvm::json::Object *map =
        json->getAsObject() ? json->getAsObject()->getObject("weight_map")
                            : nullptr;
    if (!map)
      return makeError("'" + index + "' has no \"weight_map\" object");
    // Shard file -> its tensors, in a stable order.
    std::map<std::string, std::vector<std::string>> shards;
    for (const auto &[name, file] : *map) {
      auto f = file.getAsString();
      if (!f)
        return makeError("'" + index + "': weight_map entry '" + name.str() +
                         "' is not a file name");
      if (f->contains('/') || *f == "..")
        return makeError("'" + index + "': shard name '" + *f +
                         "' must be a file in the model directory");
      shards[f->str()].push_back(name.str());
    }
    for (auto &[file, names] : shards)
      if (auto err = ckpt->add(dir, file, &names))
        return makeError("shard '" + file + "' of model.safetensors.index.json (" +
                         Twine(names.size()) + " tensors): " +
                         llvm::toString(std::move(err)));
    return ckpt;
  }
  if (!llvm::sys::fs::exists(single))
    return makeError("no model.safetensors or model.safetensors.index.json in '" +
                     dir + "'");
  ckpt->source = "model.safetensors";
  if (auto err = ckpt->add(dir, "model.safetensors", nullptr))
    return std::move(err);
  return ckpt;
}

//===----------------------------------------------------------------------===//
// Planning layers
//===----------------------------------------------------------------------===//

namespace {
/// moe.layer operand groups in the order the op prints them, after the
/// input.
const llvm::ArrayRef<const char *> kLayerRoles =
    llvm::ArrayRef(mlir::moe::kLayerOperandNames).drop_front();

/// A moe.layer to be printed: its weights (by role) and attributes.
struct LayerSpec {
  std::vector<Weight> weights;
  std::vector<std::string> attrs; // "routing = ...", "activation = ..."

  /// The attribute of capacity dispatch, which gives the layer its drop
  /// count as a second result.
  static constexpr llvm::StringLiteral kCapacityDispatch =
      "dispatch = #moe.dispatch<capacity>";
  bool hasCapacityDispatch() const {
    return llvm::is_contained(attrs, kCapacityDispatch);
  }
};

/// Reads config.json values, keeping the first error. Getters return a
/// harmless default after an error so planning can run on to the check.
class Planner {
public:
  Planner(const llvm::json::Object &cfg, Checkpoint &ckpt)
      : cfg(cfg), ckpt(ckpt) {}

  std::string modelType;
  ElemType dtype = ElemType::F32;
  int64_t hidden = 0;
  std::string error;

  bool failed() const { return !error.empty(); }
  void fail(const Twine &msg) {
    if (error.empty())
      error = msg.str();
  }

  bool has(StringRef key) const {
    const llvm::json::Value *v = cfg.get(key);
    return v && v->kind() != llvm::json::Value::Null;
  }
  int64_t getInt(StringRef key) { return getIntIn(cfg, key, "config.json"); }
  int64_t getInt(StringRef key, int64_t def) {
    return has(key) ? getInt(key) : def;
  }
  int64_t getIntIn(const llvm::json::Object &o, StringRef key,
                   const Twine &where) {
    const llvm::json::Value *v = o.get(key);
    if (!v || v->kind() == llvm::json::Value::Null) {
      fail(where + ": missing key '" + key + "' (required for model_type '" +
           modelType + "')");
      return 1;
    }
    std::optional<int64_t> i = v->getAsInteger();
    if (!i) {
      fail(where + ": key '" + key + "' must be an integer");
      return 1;
    }
    return *i;
  }
  double getNumber(StringRef key, double def) {
    return getNumberIn(cfg, key, def, "config.json");
  }
  double getNumberIn(const llvm::json::Object &o, StringRef key, double def,
                     const Twine &where) {
    const llvm::json::Value *v = o.get(key);
    if (!v || v->kind() == llvm::json::Value::Null)
      return def;
    std::optional<double> d = v->getAsNumber();
    if (!d) {
      fail(where + ": key '" + key + "' must be a number");
      return def;
    }
    return *d;
  }
  bool getBool(StringRef key, bool def) {
    const llvm::json::Value *v = cfg.get(key);
    if (!v || v->kind() == llvm::json::Value::Null)
      return def;
    std::optional<bool> b = v->getAsBoolean();
    if (!b) {
      fail("config.json: key '" + key + "' must be true or false");
      return def;
    }
    return *b;
  }
  std::string getString(StringRef key, StringRef def) {
    const llvm::json::Value *v = cfg.get(key);
    if (!v || v->kind() == llvm::json::Value::Null)
      return def.str();
    std::optional<StringRef> s = v->getAsString();
    if (!s) {
      fail("config.json: key '" + key + "' must be a string");
      return def.str();
    }
    return s->str();
  }
  /// Fails unless `value` is positive.
  int64_t positive(StringRef key, int64_t value) {
    if (value <= 0)
      fail("config.json: '" + key + "' = " + Twine(value) +
           " must be positive");
    return value;
  }
  /// The integers of the list `key` (e.g. mlp_only_layers).
  std::vector<int64_t> getIntList(StringRef key) {
    std::vector<int64_t> out;
    const llvm::json::Value *v = cfg.get(key);
    if (!v || v->kind() == llvm::json::Value::Null)
      return out;
    const llvm::json::Array *a = v->getAsArray();
    if (!a) {
      fail("config.json: key '" + key + "' must be a list of integers");
      return out;
    }
    for (const llvm::json::Value &e : *a) {
      if (auto i = e.getAsInteger())
        out.push_back(*i);
      else
        fail("config.json: key '" + key + "' must be a list of integers");
    }
    return out;
  }

  /// The tensor `name` with shape `shape`; `dims` says where the expected
  /// shape comes from (e.g. "[E, H] (num_local_experts, hidden_size)").
  const SourceTensor *tensor(const std::string &name,
                             llvm::ArrayRef<int64_t> shape, StringRef dims) {
    if (failed())
      return nullptr;
    const SourceTensor *t = ckpt.find(name);
    if (!t) {
      fail("missing tensor '" + name + "' in " + ckpt.source);
      return nullptr;
    }
    if (!t->unsupportedDType.empty()) {
      fail("not supported: tensor '" + name + "' in '" + t->file +
           "' has dtype " + t->unsupportedDType +
           " (quantized and non-float checkpoints are not supported; F32, "
           "F16 and BF16 are)");
      return nullptr;
    }
    if (t->shape != std::vector<int64_t>(shape.begin(), shape.end())) {
      fail("tensor '" + name + "' in '" + t->file + "' has shape " +
           formatShape(t->shape) + ", expected " + formatShape(shape) + " = " +
           dims + " from config.json");
      return nullptr;
    }
    used.insert(name);
    return t;
  }

  /// Says that layer `index` reads its MLP or MoE weights under `prefix`
  /// (e.g. "model.layers.3.mlp."): `checkUnused` refuses a tensor there
  /// that no weight took.
  void block(int64_t index, const std::string &prefix) {
    blocks[index].push_back(prefix);
  }

  /// Fails where a tensor under a planned layer's block is one no weight
  /// took. The config then describes another model than the checkpoint's
  /// (a DeepSeek-V3 checkpoint as deepseek_v2 leaves the selection bias
  /// out; a cartesian layer with `norm` false, its norm weight; expert
  /// biases the family lacks), and the compiled layer would give other
  /// numbers without a word. Tensors outside the blocks (attention,
  /// embeddings, norms) are unused by design.
  void checkUnused() {
    if (failed())
      return;
    // A tensor not taken, the layer and the block prefix it lies under.
    struct Unused {
      const SourceTensor *tensor;
      int64_t layer;
      StringRef block;
    };
    std::vector<Unused> unused;
    for (const auto &entry : ckpt.all()) {
      StringRef name = entry.getKey(), rest = name;
      int64_t index;
      if (used.contains(name))
        continue;
      auto root = llvm::find_if(layerRoots, [&](const auto &r) {
        return rest.consume_front(r.first);
      });
      if (root == layerRoots.end() || rest.consumeInteger(10, index))
        continue;
      index += root->second;
      auto it = blocks.find(index);
      if (it == blocks.end())
        continue;
      for (const std::string &prefix : it->second)
        if (name.starts_with(prefix)) {
          unused.push_back({&entry.getValue(), index, prefix});
          break;
        }
    }
    if (unused.empty())
      return;
    const Unused &first =
        *llvm::min_element(unused, [](const Unused &a, const Unused &b) {
          return a.tensor->name < b.tensor->name;
        });
    const SourceTensor *t = first.tensor;
    fail("tensor '" + t->name + "' in '" + t->file + "' lies in layer " +
         Twine(first.layer) + "'s block '" + first.block +
         "' but config.json leaves it unused (" + Twine(unused.size()) +
         (unused.size() == 1 ? " such tensor" : " such tensors") +
         "): the config does not describe this checkpoint, and the layer "
         "would be compiled without it");
  }

  /// A whole tensor as one weight.
  Weight whole(StringRef role, const std::string &name,
               llvm::ArrayRef<int64_t> shape, StringRef dims,
               std::optional<ElemType> as = std::nullopt) {
    Weight w{role.str(), as.value_or(dtype), shape.vec(), {}};
    if (const SourceTensor *t = tensor(name, shape, dims))
      w.pieces.push_back(contiguous(t));
    return w;
  }

  /// Per-expert tensors `names[e]` of shape `shape`, stacked to
  /// `E x shape`.
  Weight stacked(StringRef role, const std::vector<std::string> &names,
                 llvm::ArrayRef<int64_t> shape, StringRef dims) {
    Weight w{role.str(), dtype, {int64_t(names.size())}, {}};
    w.shape.insert(w.shape.end(), shape.begin(), shape.end());
    for (const std::string &n : names)
      if (const SourceTensor *t = tensor(n, shape, dims))
        w.pieces.push_back(contiguous(t));
    return w;
  }

  /// `shape` elements of `t` at `offset + sum(idx * strides)`.
  Weight strided(StringRef role, const SourceTensor *t, int64_t offset,
                 llvm::ArrayRef<int64_t> shape,
                 llvm::ArrayRef<int64_t> strides) {
    Weight w{role.str(), dtype, shape.vec(), {}};
    if (t)
      w.pieces.push_back(Piece{t, offset, shape.vec(), strides.vec(), {}, {}});
    return w;
  }

  /// The names `prefix{e}suffix` for e < n; none, with an error, when n is
  /// more than the checkpoint has tensors (a config's expert count of 10^12
  /// made 10^12 names, a hang).
  std::vector<std::string> perExpert(const std::string &prefix, int64_t n,
                                     StringRef suffix) {
    std::vector<std::string> out;
    if (n > int64_t(ckpt.all().size())) {
      fail("the config asks for " + Twine(n) + " experts ('" + prefix + "{0.." +
           Twine(n - 1) + "}" + suffix + "') but " + ckpt.source + " holds " +
           Twine(ckpt.all().size()) + " tensors in all");
      return out;
    }
    for (int64_t e = 0; e < n; ++e)
      out.push_back(prefix + std::to_string(e) + suffix.str());
    return out;
  }

  /// gate/up/down of experts `prefix{e}.{gateName,upName,downName}.weight`.
  void addStackedFFN(LayerSpec &spec, const std::string &prefix, int64_t e,
                     int64_t f, StringRef gateName, StringRef upName,
                     StringRef downName, StringRef fKey, StringRef eKey) {
    std::string fh = ("[F, H] (" + fKey + ", hidden_size)").str();
    std::string hf = ("[H, F] (hidden_size, " + fKey + ")").str();
    // transformers 5 with save_original_format=False writes the experts
    // fused: `experts.gate_up_proj` [E, 2F, H] (gate = the first F rows) and
    // `experts.down_proj` [E, H, F]. Read either layout.
    std::string fused = prefix + "gate_up_proj";
    if (!ckpt.find(prefix + "0." + gateName.str() + ".weight") &&
        ckpt.find(fused)) {
      std::string efh = ("[E, 2F, H] (" + eKey + ", 2 * " + fKey +
                         ", hidden_size)").str();
      const SourceTensor *gu = tensor(fused, {e, 2 * f, hidden}, efh);
      spec.weights.push_back(
          strided("gate", gu, 0, {e, f, hidden}, {2 * f * hidden, hidden, 1}));
      spec.weights.push_back(strided("up", gu, f * hidden, {e, f, hidden},
                                     {2 * f * hidden, hidden, 1}));
      spec.weights.push_back(whole(
          "down", prefix + "down_proj", {e, hidden, f},
          ("[E, H, F] (" + eKey + ", hidden_size, " + fKey + ")").str()));
      return;
    }
    spec.weights.push_back(stacked(
        "gate", perExpert(prefix, e, ("." + gateName + ".weight").str()),
        {f, hidden}, fh));
    spec.weights.push_back(stacked(
        "up", perExpert(prefix, e, ("." + upName + ".weight").str()),
        {f, hidden}, fh));
    spec.weights.push_back(stacked(
        "down", perExpert(prefix, e, ("." + downName + ".weight").str()),
        {hidden, f}, hf));
  }

  /// gate/up/down of experts stored [E, in, out], as transformers keeps
  /// gpt-oss's and Llama 4's: `prefix` gate_up_proj [E, H, 2F] and
  /// down_proj [E, F, H], read through views; gate and up are the even and
  /// odd columns (`interleaved`, gpt-oss) or the first and last F (Llama 4).
  void addInOutExperts(LayerSpec &spec, const std::string &prefix, int64_t e,
                       int64_t f, bool interleaved) {
    int64_t h = hidden;
    const SourceTensor *gu =
        tensor(prefix + "gate_up_proj", {e, h, 2 * f},
               "[E, H, 2F] (num_local_experts, hidden_size, "
               "2 * intermediate_size)");
    const SourceTensor *dn =
        tensor(prefix + "down_proj", {e, f, h},
               "[E, F, H] (num_local_experts, intermediate_size, "
               "hidden_size)");
    int64_t column = interleaved ? 2 : 1, upFirst = interleaved ? 1 : f;
    spec.weights.push_back(
        strided("gate", gu, 0, {e, f, h}, {h * 2 * f, column, 2 * f}));
    spec.weights.push_back(
        strided("up", gu, upFirst, {e, f, h}, {h * 2 * f, column, 2 * f}));
    spec.weights.push_back(strided("down", dn, 0, {e, h, f}, {f * h, 1, h}));
  }

  /// Fails where the config's `key` = `size` says there is no shared expert
  /// (0, or below) but the checkpoint has one (`prefix.gate_proj.weight`):
  /// its weights would be left out of the layer without a word.
  void checkNoShared(StringRef key, int64_t size, const std::string &prefix) {
    if (size < 0)
      fail("config.json: '" + key + "' = " + Twine(size) +
           " must be 0 (no shared expert) or more");
    else if (size == 0 && ckpt.find(prefix + ".gate_proj.weight"))
      fail("config.json: '" + key + "' is 0 (no shared expert) but " +
           ckpt.source + " has '" + prefix + ".gate_proj.weight'");
  }

  /// shared_gate/up/down of `prefix.{gate,up,down}_proj.weight`.
  void addSharedFFN(LayerSpec &spec, const std::string &prefix, int64_t f,
                    StringRef fKey) {
    std::string fh = ("[F_shared, H] (" + fKey + ", hidden_size)").str();
    std::string hf = ("[H, F_shared] (hidden_size, " + fKey + ")").str();
    spec.weights.push_back(
        whole("shared_gate", prefix + ".gate_proj.weight", {f, hidden}, fh));
    spec.weights.push_back(
        whole("shared_up", prefix + ".up_proj.weight", {f, hidden}, fh));
    spec.weights.push_back(
        whole("shared_down", prefix + ".down_proj.weight", {hidden, f}, hf));
  }

  /// The gated activation named by `hidden_act`.
  std::string gatedActivation() {
    return gatedActivation(getString("hidden_act", "silu"), "hidden_act");
  }
  /// The gated activation of the activation `act` (config key `key`).
  std::string gatedActivation(StringRef act, StringRef key) {
    if (act == "silu" || act == "swish")
      return "swiglu";
    if (act == "gelu")
      return "geglu";
    fail("not supported: config.json '" + key + "' = '" + act +
         "' (gated experts support silu and gelu)");
    return "swiglu";
  }

  /// Checks 0 < K <= E.
  void checkTopK(StringRef kKey, int64_t k, StringRef eKey, int64_t e) {
    if (k <= 0 || k > e)
      fail("config.json: '" + kKey + "' = " + Twine(k) +
           " must be between 1 and '" + eKey + "' = " + Twine(e));
  }

  const llvm::json::Object &cfg;
  Checkpoint &ckpt;
  const DropSpec *drop = nullptr;
  const AddSpec *add = nullptr;
  const MergeSpec *merge = nullptr;
  /// The layers of `add` that an MoE layer took (the others are errors).
  std::vector<int64_t> addTaken;
  /// The tensors a weight took, and each planned layer's block prefix.
  llvm::StringSet<> used;
  std::map<int64_t, std::vector<std::string>> blocks;
  /// What the checkpoint's per-layer tensor names start with, before the
  /// block index, and the layer index of block 0 (checkUnused finds the
  /// layers by them): one root, or an encoder-decoder model's two.
  std::vector<std::pair<std::string, int64_t>> layerRoots = {
      {"model.layers.", 0}};

  static Piece contiguous(const SourceTensor *t) {
    Piece p{t, 0, t->shape, {}, {}, {}};
    p.strides.resize(t->shape.size());
    int64_t s = 1;
    for (int64_t d = int64_t(t->shape.size()) - 1; d >= 0; --d) {
      p.strides[d] = s;
      s *= t->shape[d];
    }
    return p;
  }
};

std::string tensorType(llvm::ArrayRef<int64_t> shape, ElemType t,
                       bool dynamicTokens = false) {
  std::string s = "tensor<";
  if (dynamicTokens)
    s += "?x";
  for (int64_t d : shape)
    s += std::to_string(d) + "x";
  return s + getElemTypeName(t).str() + ">";
}

std::string ssaName(StringRef role) {
  std::string s = "%" + role.str();
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

/// `moe.layer` on `inputName` with the weights of `spec`, whose SSA names
/// are `ssaPrefix + role`.
std::string printLayerOp(const LayerSpec &spec, StringRef result,
                         StringRef inputName, StringRef tokenType,
                         StringRef ssaPrefix, StringRef indent) {
  // Capacity dispatch gives the layer a second result, the drop count; a
  // compiled model layer returns only the MLP output (the runtime runs
  // model layers with one output), so the count stays unused.
  bool capacity = spec.hasCapacityDispatch();
  std::string s;
  llvm::raw_string_ostream os(s);
  os << indent << result;
  if (capacity)
    os << ", " << result << "_dropped";
  os << " = moe.layer " << inputName << " : " << tokenType;
  for (const char *role : kLayerRoles)
    for (const Weight &w : spec.weights)
      if (w.role == role)
        os << "\n"
           << indent << "    " << role << "("
           << ssaName((ssaPrefix + role).str()) << " : "
           << tensorType(w.shape, w.dtype) << ")";
  os << "\n" << indent << "    {" << llvm::join(spec.attrs, ", ") << "}";
  os << "\n" << indent << "    -> " << tokenType;
  if (capacity)
    os << ", tensor<i64>";
  os << "\n";
  return s;
}

/// The module of one MoE layer: `func.func @moe_layer(%input, weights...)`.
std::string printLayerModule(StringRef comment, const LayerSpec &spec,
                             int64_t hidden, ElemType dtype) {
  std::string tok = tensorType({hidden}, dtype, true);
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "// " << comment << "\n";
  os << "func.func @moe_layer(%input: " << tok;
  for (const Weight &w : spec.weights)
    os << ",\n    " << ssaName(w.role) << ": " << tensorType(w.shape, w.dtype);
  os << ") -> " << tok << " {\n";
  os << printLayerOp(spec, "%y", "%input", tok, "", "  ");
  os << "  return %y : " << tok << "\n}\n";
  return s;
}

/// The module of a Cartesian layer (§4): `first`, `second`, optional norm.
std::string printCartesianModule(StringRef comment, const LayerSpec &first,
                                 const LayerSpec &second,
                                 const Weight *norm, double eps,
                                 int64_t hidden, ElemType dtype) {
  std::string tok = tensorType({hidden}, dtype, true);
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "// " << comment << "\n";
  os << "func.func @moe_layer(%input: " << tok;
  if (norm)
    os << ",\n    %norm_weight: " << tensorType(norm->shape, norm->dtype);
  for (const Weight &w : first.weights)
    os << ",\n    " << ssaName("first." + w.role) << ": "
       << tensorType(w.shape, w.dtype);
  for (const Weight &w : second.weights)
    os << ",\n    " << ssaName("second." + w.role) << ": "
       << tensorType(w.shape, w.dtype);
  os << ") -> " << tok << " {\n";
  os << "  %y = moe.cartesian %input";
  if (norm)
    os << " norm(%norm_weight : " << tensorType(norm->shape, norm->dtype)
       << ")";
  os << " {epsilon = " << llvm::formatv("{0:e}", eps) << " : f64} : " << tok
     << "\n  first {\n  ^bb0(%a: " << tok << "):\n";
  os << printLayerOp(first, "%ya", "%a", tok, "first.", "    ");
  os << "    moe.yield %ya : " << tok << "\n  } second {\n  ^bb0(%b: " << tok
     << "):\n";
  os << printLayerOp(second, "%yb", "%b", tok, "second.", "    ");
  os << "    moe.yield %yb : " << tok << "\n  }\n";
  os << "  return %y : " << tok << "\n}\n";
  return s;
}

/// The tensor names of a dense MLP under its block prefix; no gate for an
/// ungated one.
struct DenseNames {
  StringRef gate = "gate_proj.weight", up = "up_proj.weight",
            down = "down_proj.weight";
};

/// A dense MLP layer: `func.func @dense_ffn` with one `moe.ffn`; its
/// activation is `act`, or the gated one of `hidden_act` when empty.
LayerPlan planDense(Planner &p, int64_t index, const std::string &prefix,
                    int64_t f, StringRef fKey, DenseNames names = {},
                    std::string act = "") {
  LayerPlan plan;
  plan.index = index;
  plan.kind = "dense";
  plan.entry = "dense_ffn";
  if (act.empty())
    act = p.gatedActivation();
  std::string fh = ("[F, H] (" + fKey + ", hidden_size)").str();
  std::string hf = ("[H, F] (hidden_size, " + fKey + ")").str();
  if (!names.gate.empty())
    plan.weights.push_back(
        p.whole("gate", prefix + names.gate.str(), {f, p.hidden}, fh));
  plan.weights.push_back(
      p.whole("up", prefix + names.up.str(), {f, p.hidden}, fh));
  plan.weights.push_back(
      p.whole("down", prefix + names.down.str(), {p.hidden, f}, hf));
  std::string tok = tensorType({p.hidden}, p.dtype, true);
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "// " << p.modelType << ": dense MLP\n";
  os << "func.func @dense_ffn(%input: " << tok;
  for (const Weight &w : plan.weights)
    os << ",\n    " << ssaName(w.role) << ": " << tensorType(w.shape, w.dtype);
  os << ") -> " << tok << " {\n  %y = moe.ffn %input";
  for (const Weight &w : plan.weights)
    os << " " << w.role << "(" << ssaName(w.role) << " : "
       << tensorType(w.shape, w.dtype) << ")";
  os << "\n      {activation = #moe.activation<" << act << ">} : " << tok
     << " -> " << tok << "\n  return %y : " << tok << "\n}\n";
  plan.ir = s;
  return plan;
}

/// Roles whose leading dimension is the routed expert.
bool isPerExpertRole(StringRef role) {
  return llvm::is_contained(
      {"router", "router_bias", "selection_bias", "domain_embeddings", "gate",
       "up", "down", "gate_bias", "up_bias", "down_bias", "lora_a", "lora_b"},
      role);
}

/// The pieces of `w`, one per row (leading-dimension entry).
std::vector<Piece> splitRows(const Weight &w) {
  int64_t rowSize = numElements(w.shape) / w.shape[0];
  std::vector<Piece> rows;
  for (const Piece &piece : w.pieces) {
    int64_t n = numElements(piece.shape);
    if (n == rowSize) { // one whole row (a stacked expert)
      rows.push_back(piece);
      continue;
    }
    // Several rows: split along the piece's leading dimension.
    for (int64_t r = 0; r < piece.shape[0]; ++r) {
      Piece row = piece;
      row.offset += r * piece.strides[0];
      row.shape[0] = 1;
      rows.push_back(row);
    }
  }
  return rows;
}

/// Keeps the rows of `w` not in `dropped`.
void dropRows(Weight &w, const std::vector<int64_t> &dropped) {
  std::vector<Piece> rows = splitRows(w);
  std::vector<Piece> kept;
  for (auto [i, row] : llvm::enumerate(rows))
    if (!llvm::is_contained(dropped, int64_t(i)))
      kept.push_back(row);
  w.pieces = std::move(kept);
  w.shape[0] -= dropped.size();
}

/// Applies `p.drop` to the layer `index`: checks the ids, drops the rows of
/// every per-expert weight, clamps k and checks the group rules.
void applyDrop(Planner &p, int64_t index, LayerSpec &spec) {
  if (!p.drop)
    return;
  auto it = p.drop->layers.find(index);
  if (it == p.drop->layers.end() || it->second.empty())
    return;
  const std::vector<int64_t> &ids = it->second;
  std::string where = "--drop: layer " + std::to_string(index);
  for (const std::string &a : spec.attrs)
    if (StringRef(a).starts_with("special_kinds"))
      return p.fail(where + ": dropping from a layer with zero-computation "
                            "experts is not supported");
  int64_t e = -1;
  for (const Weight &w : spec.weights)
    if (w.role == "router" || w.role == "domain_embeddings")
      e = w.shape[0];
  if (e < 0)
    return p.fail(where + ": the layer has no router to drop experts from");
  std::vector<int64_t> seen;
  for (int64_t id : ids) {
    if (id < 0 || id >= e)
      return p.fail(where + ": expert " + Twine(id) + " is out of range (" +
                    Twine(e) + " experts)");
    if (llvm::is_contained(seen, id))
      return p.fail(where + ": expert " + Twine(id) + " is listed twice");
    seen.push_back(id);
  }
  int64_t left = e - int64_t(ids.size());
  if (left < 1)
    return p.fail(where + ": cannot drop all " + Twine(e) + " experts");
  for (Weight &w : spec.weights)
    if (isPerExpertRole(w.role))
      dropRows(w, ids);
  // k = min(k, E - r); group rules must still hold.
  for (std::string &a : spec.attrs) {
    if (!StringRef(a).starts_with("routing = "))
      continue;
    auto intAfter = [&](StringRef key) -> std::optional<int64_t> {
      size_t at = a.find((", " + key + " = ").str());
      if (at == std::string::npos)
        return std::nullopt;
      return std::stoll(a.substr(at + key.size() + 5));
    };
    if (auto g = intAfter("n_group"); g && *g > 1 && left % *g != 0)
      return p.fail(where + ": " + Twine(left) +
                    " experts left do not split into n_group = " + Twine(*g) +
                    " groups");
    if (auto k = intAfter("k"); k && *k > left) {
      size_t at = a.find(", k = ");
      size_t end = a.find_first_not_of("0123456789", at + 6);
      a.replace(at, end - at, ", k = " + std::to_string(left));
    }
  }
}

/// The name of a role's row in an --add-expert file.
std::string addName(StringRef role) {
  return role == "domain_embeddings" ? "domain_embedding" : role.str();
}

/// The integer `key = N` of a `routing = #moe.routing<...>` attribute.
std::optional<int64_t> routingInt(const std::string &attr, StringRef key) {
  size_t at = attr.find((", " + key + " = ").str());
  if (at == std::string::npos)
    return std::nullopt;
  return std::stoll(attr.substr(at + key.size() + 5));
}

/// Applies `p.add` to the layer `index`: appends each new expert's row to
/// every per-expert weight (the router's before the zero-computation
/// experts' rows, so those move up by one), after checking that the file
/// holds exactly those rows, with the layer's dtypes and row shapes.
void applyAdd(Planner &p, int64_t index, LayerSpec &spec) {
  if (!p.add)
    return;
  auto it = p.add->layers.find(index);
  if (it == p.add->layers.end())
    return;
  p.addTaken.push_back(index);
  int64_t specials = 0;
  for (const std::string &a : spec.attrs)
    if (StringRef(a).starts_with("special_kinds"))
      specials = StringRef(a).count("#moe.special");
  for (const AddSpec::Expert &expert : it->second) {
    std::string where =
        "--add-expert '" + expert.file + "': layer " + std::to_string(index);
    std::string prefix = "layers." + std::to_string(index) + ".";
    std::vector<std::string> roles;
    int64_t total = -1;
    for (Weight &w : spec.weights) {
      if (!isPerExpertRole(w.role))
        continue;
      roles.push_back(addName(w.role));
      std::string name = prefix + addName(w.role);
      std::vector<int64_t> row(w.shape.begin() + 1, w.shape.end());
      auto found = expert.tensors.find(w.role);
      if (found == expert.tensors.end())
        return p.fail(where + ": missing tensor '" + name + "' " +
                      formatShape(row) + " (one row of the layer's '" +
                      w.role + "' " + formatShape(w.shape) + ")");
      const SourceTensor *t = found->second;
      if (!t->unsupportedDType.empty() || t->dtype != w.dtype)
        return p.fail(where + ": tensor '" + name + "' has dtype " +
                      (t->unsupportedDType.empty()
                           ? safetensorsDType(t->dtype)
                           : t->unsupportedDType) +
                      ", the layer's '" + w.role + "' is " +
                      safetensorsDType(w.dtype));
      std::vector<int64_t> oneRow = row;
      oneRow.insert(oneRow.begin(), 1);
      if (t->shape != row && t->shape != oneRow)
        return p.fail(where + ": tensor '" + name + "' has shape " +
                      formatShape(t->shape) + ", expected " +
                      formatShape(row) + " (one row of the layer's '" +
                      w.role + "' " + formatShape(w.shape) + ")");
      Piece piece = Planner::contiguous(t);
      // Routed experts come before the zero-computation ones in the router.
      int64_t at = w.shape[0];
      if (w.role == "router" && specials > 0)
        at = w.shape[0] - specials;
      if (at == w.shape[0]) {
        w.pieces.push_back(piece);
      } else {
        std::vector<Piece> rows = splitRows(w);
        rows.insert(rows.begin() + at, piece);
        w.pieces = std::move(rows);
      }
      w.shape[0] += 1;
      if (w.role == "router" || w.role == "domain_embeddings")
        total = w.shape[0];
    }
    if (roles.empty())
      return p.fail(where + ": the layer has no per-expert operands to add "
                            "an expert to");
    for (const auto &[role, t] : expert.tensors)
      if (!llvm::is_contained(roles, addName(role)))
        return p.fail(where + ": tensor '" + prefix + addName(role) +
                      "' has no place in the layer, whose experts have " +
                      llvm::join(roles, ", "));
    for (const std::string &a : spec.attrs)
      if (StringRef(a).starts_with("routing = "))
        if (auto g = routingInt(a, "n_group"); g && *g > 1 && total > 0 &&
                                total % *g != 0)
          return p.fail(where + ": " + Twine(total) +
                        " experts do not split into n_group = " + Twine(*g) +
                        " groups");
  }
}

/// Applies `p.merge` to the layer `index` (§5 merge, as --moe-merge-experts
/// defines it): each group's rows of the FFN expert weights become one
/// merged row, sum_i f_i W_i / sum_i f_i (uniform when the frequencies sum
/// to 0), computed in double while writing; groups are numbered by their
/// smallest member; the router keeps its rows and the layer gets an
/// expert_map.
void applyMerge(Planner &p, int64_t index, LayerSpec &spec) {
  if (!p.merge)
    return;
  auto it = p.merge->layers.find(index);
  if (it == p.merge->layers.end())
    return;
  const MergeSpec::Layer &m = it->second;
  std::string where = "--merge: layer " + std::to_string(index);
  int64_t e = -1;
  for (const Weight &w : spec.weights) {
    if (w.role == "lora_a")
      return p.fail(where + ": LoRA experts cannot be merged (the mean of "
                            "the factors is not the mean of B_e A_e)");
    if (w.role == "up")
      e = w.shape[0];
  }
  if (e < 0)
    return p.fail(where + ": the layer has no routed FFN experts to merge");
  if (!m.frequencies.empty() && int64_t(m.frequencies.size()) != e)
    return p.fail(where + ": " + Twine(m.frequencies.size()) +
                  " frequencies for " + Twine(e) + " experts");
  for (double f : m.frequencies)
    if (!(f >= 0) || std::isinf(f))
      return p.fail(where + ": frequencies must be finite and >= 0");
  std::vector<int64_t> owner(e, -1);
  for (auto [g, group] : llvm::enumerate(m.groups))
    for (int64_t id : group) {
      if (id < 0 || id >= e)
        return p.fail(where + ": expert " + Twine(id) + " is out of range (" +
                      Twine(e) + " experts)");
      if (owner[id] != -1)
        return p.fail(where + ": expert " + Twine(id) + " is listed twice");
      owner[id] = int64_t(g);
    }
  // Merged experts, ordered by their smallest member.
  std::vector<std::vector<int64_t>> merged;
  std::vector<int32_t> map(e, -1);
  for (int64_t id = 0; id < e; ++id) {
    if (map[id] >= 0)
      continue;
    std::vector<int64_t> group{id};
    if (owner[id] >= 0) {
      group = m.groups[owner[id]];
      llvm::sort(group);
    }
    for (int64_t member : group)
      map[member] = int32_t(merged.size());
    merged.push_back(std::move(group));
  }
  int64_t specials = 0;
  for (const std::string &a : spec.attrs)
    if (StringRef(a).starts_with("special_kinds"))
      specials = StringRef(a).count("#moe.special");
  if (spec.hasCapacityDispatch())
    for (const std::string &r : spec.attrs)
      if (StringRef(r).starts_with("routing = "))
        if (auto k = routingInt(r, "k");
            k && *k > int64_t(merged.size()) + specials)
          return p.fail(
              where + ": capacity dispatch needs at least k = " + Twine(*k) +
              " experts, the merge leaves " + Twine(merged.size() + specials));
  for (Weight &w : spec.weights) {
    if (!llvm::is_contained({"gate", "up", "down", "gate_bias", "up_bias",
                             "down_bias"},
                            w.role))
      continue;
    std::vector<Piece> rows = splitRows(w);
    std::vector<Piece> out;
    for (const std::vector<int64_t> &group : merged) {
      if (group.size() == 1) {
        out.push_back(rows[group[0]]);
        continue;
      }
      double total = 0;
      for (int64_t id : group)
        total += m.frequencies.empty() ? 1.0 : m.frequencies[id];
      Piece mix;
      mix.shape = rows[group[0]].shape;
      for (int64_t id : group) {
        double f = m.frequencies.empty() ? 1.0 : m.frequencies[id];
        mix.terms.push_back(rows[id]);
        mix.coeffs.push_back(total > 0 ? f / total : 1.0 / double(group.size()));
      }
      out.push_back(std::move(mix));
    }
    w.pieces = std::move(out);
    w.shape[0] = int64_t(merged.size());
  }
  std::string attr = "expert_map = array<i32: ";
  for (auto [i, v] : llvm::enumerate(map))
    attr += (i ? ", " : "") + std::to_string(v);
  spec.attrs.push_back(attr + ">");
}

LayerPlan makeMoEPlan(Planner &p, int64_t index, StringRef comment,
                      LayerSpec spec) {
  applyDrop(p, index, spec);
  applyAdd(p, index, spec);
  applyMerge(p, index, spec);
  LayerPlan plan;
  plan.index = index;
  plan.kind = "moe";
  plan.entry = "moe_layer";
  plan.weights = spec.weights;
  plan.ir = printLayerModule(comment, spec, p.hidden, p.dtype);
  return plan;
}

std::string topkRouting(StringRef scoring, int64_t k, bool renormalize,
                        double scale = 1.0) {
  std::string s = ("#moe.routing<" + scoring + ", topk, k = " + Twine(k)).str();
  if (renormalize)
    s += ", renormalize";
  if (scale != 1.0)
    s += llvm::formatv(", scaling_factor = {0:e}", scale).str();
  return "routing = " + s + ">";
}

//===--- Families -----------------------------------------------------------//

/// Mixtral's layout (`block_sparse_moe.gate.weight`, experts w1/w3/w2;
/// transformers 5's fused layout under `mlp.`):
/// - mixtral: softmax top-k, renormalised;
/// - minimax_m2 (`MiniMaxM2TopKRouter`): sigmoid scores, top-k of scores +
///   `e_score_correction_bias` (a selection bias beside the gate),
///   renormalised;
/// - phimoe (Phi-3.5-MoE): transformers' `sparsemixer` at inference, two
///   rounds, each weight the masked softmax at its winner, not renormalised;
///   its fused layout renames the router `mlp.router.weight`.
void planMixtral(Planner &p, ModelPlan &m, int64_t layers) {
  bool minimax = p.modelType == "minimax_m2";
  bool phi = p.modelType == "phimoe";
  int64_t e = p.positive("num_local_experts", p.getInt("num_local_experts"));
  // PhiMoEConfig's and MixtralConfig's default is 2; MiniMax-M2 configs
  // always carry it (kept required there).
  int64_t k = minimax ? p.getInt("num_experts_per_tok")
                      : p.getInt("num_experts_per_tok", 2);
  int64_t f = p.positive("intermediate_size", p.getInt("intermediate_size"));
  // transformers' sparsemixer always picks two experts, whatever top_k says.
  if (phi && !p.failed() && k != 2)
    p.fail("config.json: 'num_experts_per_tok' = " + Twine(k) +
           " is not supported for model_type 'phimoe': its sparsemixer "
           "routing picks exactly 2 experts per token");
  p.checkTopK("num_experts_per_tok", k, "num_local_experts", e);
  // Mixtral and MiniMax-M2 always renormalise (no config flag).
  std::string routing = topkRouting(minimax ? "sigmoid" : "softmax", k, true);
  std::string summary =
      minimax ? "minimax_m2: sigmoid top-k with selection bias, renormalised"
              : "mixtral: softmax top-k, renormalised";
  if (phi) {
    const llvm::json::Value *jv = p.cfg.get("router_jitter_noise");
    if (jv && jv->kind() == llvm::json::Value::Null)
      p.fail("config.json: 'router_jitter_noise' is null; phimoe's "
             "sparsemixer routing needs its mask threshold (default 0.01)");
    double eps = p.getNumber("router_jitter_noise", 0.01);
    if (!p.failed() && !(eps >= 0.0 && std::isfinite(eps)))
      p.fail(
          "config.json: 'router_jitter_noise' = " + llvm::formatv("{0}", *jv) +
          " must be a non-negative finite number (sparsemixer's mask "
          "threshold is twice it)");
    routing = llvm::formatv("routing = #moe.routing<none, sparsemixer, "
                            "k = 2, jitter_eps = {0:e}>",
                            eps)
                  .str();
    summary = "phimoe: sparsemixer over the raw logits, not renormalised";
  }
  std::string act = p.gatedActivation();
  for (int64_t i = 0; i < layers && !p.failed(); ++i) {
    // transformers 5's fused layout names the block `mlp`.
    std::string pre =
        "model.layers." + std::to_string(i) + ".block_sparse_moe.";
    std::string router = "gate.weight";
    std::string v5 = "model.layers." + std::to_string(i) + ".mlp.";
    std::string v5Router = phi ? "router.weight" : "gate.weight";
    if (!p.ckpt.find(pre + router) && p.ckpt.find(v5 + v5Router)) {
      pre = v5;
      router = v5Router;
    }
    p.block(i, pre);
    LayerSpec spec;
    spec.weights.push_back(p.whole("router", pre + router, {e, p.hidden},
                                   "[E, H] (num_local_experts, hidden_size)"));
    if (minimax)
      spec.weights.push_back(p.whole("selection_bias",
                                     pre + "e_score_correction_bias", {e},
                                     "[E] (num_local_experts)", ElemType::F32));
    p.addStackedFFN(spec, pre + "experts.", e, f, "w1", "w3", "w2",
                    "intermediate_size", "num_local_experts");
    spec.attrs = {routing, "activation = #moe.activation<" + act + ">"};
    m.layers.push_back(makeMoEPlan(p, i, summary, spec));
  }
}

/// qwen2_moe (with `shared`), qwen3_moe, and (`next`, with `shared`)
/// qwen3_next: Qwen3-Next's MoE block is Qwen2-MoE's (sigmoid-gated shared
/// expert beside softmax top-k); only its defaults differ.
void planQwen(Planner &p, ModelPlan &m, int64_t layers, bool shared,
              bool next = false) {
  // Hub configs say num_experts; transformers 5 writes num_local_experts.
  int64_t e = p.has("num_experts") ? p.getInt("num_experts")
                                   : p.getInt("num_local_experts", 0);
  // A key left out takes transformers 5.25's default (Qwen2MoeConfig 4,
  // Qwen3MoeConfig 8, Qwen3NextConfig 10), as the model would load.
  int64_t k = p.getInt("num_experts_per_tok", next ? 10 : shared ? 4 : 8);
  int64_t step = p.getInt("decoder_sparse_step", 1);
  if (step <= 0)
    p.fail("config.json: 'decoder_sparse_step' = " + Twine(step) +
           " must be positive");
  std::vector<int64_t> mlpOnly = p.getIntList("mlp_only_layers");
  bool renorm = p.getBool("norm_topk_prob", next);
  std::string act = p.gatedActivation();
  for (int64_t i = 0; i < layers && !p.failed(); ++i) {
    std::string pre = "model.layers." + std::to_string(i) + ".mlp.";
    p.block(i, pre);
    bool sparse = !llvm::is_contained(mlpOnly, i) && e > 0 &&
                  (i + 1) % step == 0;
    if (!sparse) {
      m.layers.push_back(planDense(
          p, i, pre, p.positive("intermediate_size", p.getInt("intermediate_size")),
          "intermediate_size"));
      continue;
    }
    int64_t f = p.positive("moe_intermediate_size",
                           p.getInt("moe_intermediate_size"));
    p.checkTopK("num_experts_per_tok", k, "num_experts", e);
    LayerSpec spec;
    spec.weights.push_back(p.whole("router", pre + "gate.weight", {e, p.hidden},
                                   "[E, H] (num_experts, hidden_size)"));
    p.addStackedFFN(spec, pre + "experts.", e, f, "gate_proj", "up_proj",
                    "down_proj", "moe_intermediate_size", "num_experts");
    if (shared) {
      int64_t fs = p.getInt("shared_expert_intermediate_size", 0);
      p.checkNoShared("shared_expert_intermediate_size", fs,
                      pre + "shared_expert");
      if (fs > 0) {
        p.addSharedFFN(spec, pre + "shared_expert", fs,
                       "shared_expert_intermediate_size");
        spec.weights.push_back(p.whole("shared_gate_weight",
                                       pre + "shared_expert_gate.weight",
                                       {1, p.hidden}, "[1, H] (hidden_size)"));
      }
    }
    spec.attrs = {topkRouting("softmax", k, renorm),
                  "activation = #moe.activation<" + act + ">",
                  "shared_activation = #moe.activation<" + act + ">"};
    m.layers.push_back(makeMoEPlan(
        p, i, p.modelType + ": softmax top-k" + (renorm ? ", renormalised" : ""),
        spec));
  }
}

void planOLMoE(Planner &p, ModelPlan &m, int64_t layers) {
  int64_t e = p.positive("num_experts", p.getInt("num_experts"));
  int64_t k = p.getInt("num_experts_per_tok", 8); // OlmoeConfig's default
  int64_t f = p.positive("intermediate_size", p.getInt("intermediate_size"));
  p.checkTopK("num_experts_per_tok", k, "num_experts", e);
  bool renorm = p.getBool("norm_topk_prob", false);
  std::string act = p.gatedActivation();
  for (int64_t i = 0; i < layers && !p.failed(); ++i) {
    std::string pre = "model.layers." + std::to_string(i) + ".mlp.";
    p.block(i, pre);
    LayerSpec spec;
    spec.weights.push_back(p.whole("router", pre + "gate.weight", {e, p.hidden},
                                   "[E, H] (num_experts, hidden_size)"));
    p.addStackedFFN(spec, pre + "experts.", e, f, "gate_proj", "up_proj",
                    "down_proj", "intermediate_size", "num_experts");
    spec.attrs = {topkRouting("softmax", k, renorm),
                  "activation = #moe.activation<" + act + ">"};
    m.layers.push_back(makeMoEPlan(
        p, i, std::string("olmoe: softmax top-k") + (renorm ? ", renormalised" : ""),
        spec));
  }
}

/// deepseek_v2 (softmax, greedy or group-limited by max), deepseek_v3
/// (sigmoid + selection bias, group-limited by the sum of the top two), and
/// (`glm`) glm4_moe: GLM-4.5's `Glm4MoeTopkRouter` is DeepSeek-V3's noaux_tc
/// routing, always; it reads no scoring_func, topk_method or moe_layer_freq.
void planDeepSeek(Planner &p, ModelPlan &m, int64_t layers, bool v3,
                  bool glm = false) {
  int64_t e = p.positive("n_routed_experts", p.getInt("n_routed_experts"));
  // DeepseekV2Config's default is None (a missing key is an error).
  int64_t k =
      v3 ? p.getInt("num_experts_per_tok", 8) : p.getInt("num_experts_per_tok");
  p.checkTopK("num_experts_per_tok", k, "n_routed_experts", e);
  // Keys left out take transformers 5.25's defaults (DeepseekV2Config,
  // DeepseekV3Config, Glm4MoeConfig), as the model would load: a routing
  // parameter taken otherwise would give another model without a word.
  int64_t firstDense = p.getInt("first_k_dense_replace", glm ? 1 : v3 ? 3 : 0);
  int64_t freq = glm ? 1 : p.getInt("moe_layer_freq", 1);
  if (freq <= 0)
    p.fail("config.json: 'moe_layer_freq' = " + Twine(freq) +
           " must be positive");
  int64_t nShared = p.getInt("n_shared_experts", v3 ? 1 : 2);
  // DeepSeek-V2 as transformers' DeepseekV2 router computes it: it ignores
  // norm_topk_prob and always scales (the hub's remote code renormalises
  // instead when norm_topk_prob is set; released V2 configs have it false,
  // where both agree).
  bool renorm = v3 && p.getBool("norm_topk_prob", true);
  // DeepSeek-V3 proper (GLM keeps DeepseekV2's 1.0 and one group).
  bool dsv3 = v3 && !glm;
  double scale = p.getNumber("routed_scaling_factor", dsv3 ? 2.5 : 1.0);
  std::string scoring =
      glm ? "sigmoid" : p.getString("scoring_func", v3 ? "sigmoid" : "softmax");
  std::string method =
      glm ? "noaux_tc" : p.getString("topk_method", v3 ? "noaux_tc" : "greedy");
  if (scoring != "softmax" && scoring != "sigmoid")
    p.fail("not supported: config.json 'scoring_func' = '" + scoring + "'");
  // (DeepSeek-V2's default is None, which group_limited_greedy cannot take.)
  int64_t nGroup = p.getInt("n_group", dsv3 ? 8 : 1),
          topkGroup = p.getInt("topk_group", dsv3 ? 4 : 1);
  bool grouped = false;
  std::string groupScore;
  if (v3) {
    if (method != "noaux_tc")
      p.fail("not supported: config.json 'topk_method' = '" + method +
             "' for deepseek_v3 (supported: noaux_tc)");
    // (n_group 1 is one group holding every expert: plain top-k. Below 1,
    // transformers' view(-1, n_group, ...) fails; so does this.)
    if (nGroup < 1)
      p.fail("config.json: 'n_group' = " + Twine(nGroup) + " must be positive");
    grouped = nGroup > 1;
    groupScore = "top2_sum";
  } else if (method == "group_limited_greedy") {
    grouped = true;
    groupScore = "max";
  } else if (method != "greedy") {
    p.fail("not supported: config.json 'topk_method' = '" + method +
           "' for deepseek_v2 (supported: greedy, group_limited_greedy)");
  }
  if (grouped && !p.failed()) {
    if (nGroup <= 0 || e % nGroup != 0)
      p.fail("config.json: 'n_group' = " + Twine(nGroup) +
             " must divide 'n_routed_experts' = " + Twine(e));
    else if (topkGroup <= 0 || topkGroup > nGroup)
      p.fail("config.json: 'topk_group' = " + Twine(topkGroup) +
             " must be between 1 and 'n_group' = " + Twine(nGroup));
  }
  std::string act = p.gatedActivation();
  for (int64_t i = 0; i < layers && !p.failed(); ++i) {
    std::string pre = "model.layers." + std::to_string(i) + ".mlp.";
    p.block(i, pre);
    if (i < firstDense || i % freq != 0) {
      m.layers.push_back(planDense(
          p, i, pre, p.positive("intermediate_size", p.getInt("intermediate_size")),
          "intermediate_size"));
      continue;
    }
    int64_t f = p.positive("moe_intermediate_size",
                           p.getInt("moe_intermediate_size"));
    LayerSpec spec;
    spec.weights.push_back(p.whole("router", pre + "gate.weight", {e, p.hidden},
                                   "[E, H] (n_routed_experts, hidden_size)"));
    if (v3)
      spec.weights.push_back(p.whole("selection_bias",
                                     pre + "gate.e_score_correction_bias", {e},
                                     "[E] (n_routed_experts)", ElemType::F32));
    p.addStackedFFN(spec, pre + "experts.", e, f, "gate_proj", "up_proj",
                    "down_proj", "moe_intermediate_size", "n_routed_experts");
    p.checkNoShared("n_shared_experts", nShared, pre + "shared_experts");
    if (nShared > 0)
      p.addSharedFFN(spec, pre + "shared_experts", f * nShared,
                     "moe_intermediate_size * n_shared_experts");
    std::string routing = "routing = #moe.routing<" + scoring + ", ";
    if (grouped)
      routing += llvm::formatv("group_limited_topk, k = {0}, n_group = {1}, "
                               "topk_group = {2}, group_score = {3}",
                               k, nGroup, topkGroup, groupScore)
                     .str();
    else
      routing += "topk, k = " + std::to_string(k);
    if (renorm)
      routing += ", renormalize";
    if (scale != 1.0)
      routing += llvm::formatv(", scaling_factor = {0:e}", scale).str();
    routing += ">";
    spec.attrs = {routing, "activation = #moe.activation<" + act + ">",
                  "shared_activation = #moe.activation<" + act + ">"};
    m.layers.push_back(makeMoEPlan(p, i, p.modelType + ": " + scoring +
                                             (grouped ? ", group-limited top-k"
                                                      : ", top-k"),
                                   spec));
  }
}

void planGptOss(Planner &p, ModelPlan &m, int64_t layers) {
  int64_t e = p.positive("num_local_experts", p.getInt("num_local_experts"));
  int64_t k = p.has("num_experts_per_tok") ? p.getInt("num_experts_per_tok")
                                           : p.getInt("experts_per_token");
  int64_t f = p.positive("intermediate_size", p.getInt("intermediate_size"));
  p.checkTopK("num_experts_per_tok", k, "num_local_experts", e);
  double limit = p.getNumber("swiglu_limit", 7.0);
  int64_t h = p.hidden;
  for (int64_t i = 0; i < layers && !p.failed(); ++i) {
    std::string pre = "model.layers." + std::to_string(i) + ".mlp.";
    p.block(i, pre);
    if (p.ckpt.find(pre + "experts.gate_up_proj_blocks")) {
      p.fail("not supported: tensor '" + pre +
             "experts.gate_up_proj_blocks' is MXFP4-quantized; export the "
             "model in bf16/f16/f32");
      return;
    }
    LayerSpec spec;
    spec.weights.push_back(p.whole("router", pre + "router.weight", {e, h},
                                   "[E, H] (num_local_experts, hidden_size)"));
    spec.weights.push_back(p.whole("router_bias", pre + "router.bias", {e},
                                   "[E] (num_local_experts)"));
    // gate = even, up = odd columns (their biases likewise).
    p.addInOutExperts(spec, pre + "experts.", e, f, /*interleaved=*/true);
    const SourceTensor *gub =
        p.tensor(pre + "experts.gate_up_proj_bias", {e, 2 * f},
                 "[E, 2F] (num_local_experts, 2 * intermediate_size)");
    const SourceTensor *dnb =
        p.tensor(pre + "experts.down_proj_bias", {e, h},
                 "[E, H] (num_local_experts, hidden_size)");
    spec.weights.push_back(p.strided("gate_bias", gub, 0, {e, f}, {2 * f, 2}));
    spec.weights.push_back(p.strided("up_bias", gub, 1, {e, f}, {2 * f, 2}));
    spec.weights.push_back(p.strided("down_bias", dnb, 0, {e, h}, {h, 1}));
    spec.attrs = {"routing = #moe.routing<none, topk_then_softmax, k = " +
                      std::to_string(k) + ">",
                  "activation = #moe.activation<swiglu_clamped>",
                  llvm::formatv("limit = {0:e} : f64", limit).str()};
    m.layers.push_back(makeMoEPlan(
        p, i, "gpt_oss: top-k of raw logits, softmax over the k; clamped SwiGLU",
        spec));
  }
}

/// llama4_text (Llama 4 Scout / Maverick, `Llama4TextMoe`): the router's
/// top-k raw logits, each weight sigmoid(logit), not renormalised
/// (`Llama4Router`); the weight scales the expert's input (`routed_in = x *
/// score`, so `scale_input`); experts stored [E, in, out] (`gate_up_proj`
/// [E, H, 2F], gate the first F columns; `down_proj` [E, F, H]); the shared
/// expert (F = `intermediate_size`, ungated) always added. Layers outside
/// `moe_layers` (when absent: every `interleave_moe_layer_step`-th, from
/// step - 1; `[]`: none) are dense MLPs of `intermediate_size_mlp`. The hub
/// checkpoints are `llama4` (Llama4ForConditionalGeneration: the text config
/// nested, tensors under `language_model.`); this reads the text model's
/// checkpoint (`Llama4ForCausalLM`, tensors under `model.layers.`), which
/// transformers 5 saves in the hub layout (it has no fused variant).
void planLlama4(Planner &p, ModelPlan &m, int64_t layers) {
  // Routing defaults: transformers 5.25's Llama4TextConfig; sizes are
  // required (no default fits a checkpoint).
  int64_t e = p.positive("num_local_experts", p.getInt("num_local_experts"));
  int64_t k = p.getInt("num_experts_per_tok", 1);
  std::vector<int64_t> moeLayers = p.getIntList("moe_layers");
  if (!p.has("moe_layers")) {
    // Llama4TextConfig derives it: every step-th layer from step - 1.
    int64_t step = p.getInt("interleave_moe_layer_step", 1);
    if (step <= 0)
      p.fail("config.json: 'interleave_moe_layer_step' = " + Twine(step) +
             " must be positive");
    for (int64_t i = step - 1; step > 0 && i < layers; i += step)
      moeLayers.push_back(i);
  }
  p.checkTopK("num_experts_per_tok", k, "num_local_experts", e);
  std::string act = p.gatedActivation();
  int64_t h = p.hidden;
  for (int64_t i = 0; i < layers && !p.failed(); ++i) {
    std::string pre =
        p.layerRoots.front().first + std::to_string(i) + ".feed_forward.";
    p.block(i, pre);
    if (!llvm::is_contained(moeLayers, i)) {
      m.layers.push_back(
          planDense(p, i, pre,
                    p.positive("intermediate_size_mlp",
                               p.getInt("intermediate_size_mlp")),
                    "intermediate_size_mlp"));
      continue;
    }
    int64_t f = p.positive("intermediate_size", p.getInt("intermediate_size"));
    LayerSpec spec;
    spec.weights.push_back(p.whole("router", pre + "router.weight", {e, h},
                                   "[E, H] (num_local_experts, hidden_size)"));
    // gate = the first F columns, up the last F.
    p.addInOutExperts(spec, pre + "experts.", e, f, /*interleaved=*/false);
    p.addSharedFFN(spec, pre + "shared_expert", f, "intermediate_size");
    spec.attrs = {topkRouting("sigmoid", k, false),
                  "activation = #moe.activation<" + act + ">",
                  "shared_activation = #moe.activation<" + act + ">",
                  "scale_input"};
    m.layers.push_back(makeMoEPlan(
        p, i,
        "llama4_text: top-k raw logits, sigmoid weights scaling the experts' "
        "input",
        spec));
  }
}

/// granitemoe, and granitemoeshared (`shared`): softmax over the top-k raw
/// logits (GraniteMoeTopKGating); experts stored [E, out, in]
/// (GraniteMoeParallelExperts), input_linear's rows gate then up; the
/// shared MLP beside the block, added ungated. jetmoe (JetMoeMoE, which
/// Granite's block derives from): the same under `mlp.`, activation
/// `activation_function`, and one bias added after the mixture
/// (`mlp.bias`, the layer's output_bias).
void planGranite(Planner &p, ModelPlan &m, int64_t layers, bool shared) {
  bool jet = p.modelType == "jetmoe";
  int64_t e = p.positive("num_local_experts", p.getInt("num_local_experts"));
  // JetMoeConfig's default is 2; GraniteMoeConfig's too, but granite
  // configs always carry it (kept required there).
  int64_t k = jet ? p.getInt("num_experts_per_tok", 2)
                  : p.getInt("num_experts_per_tok");
  int64_t f = p.positive("intermediate_size", p.getInt("intermediate_size"));
  p.checkTopK("num_experts_per_tok", k, "num_local_experts", e);
  int64_t fs = shared ? p.getInt("shared_intermediate_size", 0) : 0;
  if (fs < 0)
    p.fail("config.json: 'shared_intermediate_size' = " + Twine(fs) +
           " must be 0 (no shared MLP) or more");
  std::string act =
      jet ? p.gatedActivation(p.getString("activation_function", "silu"),
                              "activation_function")
          : p.gatedActivation();
  int64_t h = p.hidden;
  for (int64_t i = 0; i < layers && !p.failed(); ++i) {
    std::string layer = "model.layers." + std::to_string(i) + ".";
    std::string pre = layer + (jet ? "mlp." : "block_sparse_moe.");
    p.block(i, pre);
    if (shared)
      p.block(i, layer + "shared_mlp.");
    // The hub's names, or those transformers 5 writes with
    // save_original_format=False (same layouts).
    bool v5 = !p.ckpt.find(pre + "router.layer.weight") &&
              p.ckpt.find(pre + "router.weight");
    LayerSpec spec;
    spec.weights.push_back(
        p.whole("router", pre + (v5 ? "router.weight" : "router.layer.weight"),
                {e, h}, "[E, H] (num_local_experts, hidden_size)"));
    const SourceTensor *gu =
        p.tensor(pre + (v5 ? "experts.gate_up_proj" : "input_linear.weight"),
                 {e, 2 * f, h},
                 "[E, 2F, H] (num_local_experts, 2 * intermediate_size, "
                 "hidden_size)");
    spec.weights.push_back(
        p.strided("gate", gu, 0, {e, f, h}, {2 * f * h, h, 1}));
    spec.weights.push_back(
        p.strided("up", gu, f * h, {e, f, h}, {2 * f * h, h, 1}));
    spec.weights.push_back(p.whole(
        "down", pre + (v5 ? "experts.down_proj" : "output_linear.weight"),
        {e, h, f},
        "[E, H, F] (num_local_experts, hidden_size, intermediate_size)"));
    if (jet)
      spec.weights.push_back(
          p.whole("output_bias", pre + "bias", {h}, "[H] (hidden_size)"));
    spec.attrs = {"routing = #moe.routing<none, topk_then_softmax, k = " +
                      std::to_string(k) + ">",
                  "activation = #moe.activation<" + act + ">"};
    if (fs > 0) {
      const SourceTensor *sgu =
          p.tensor(layer + "shared_mlp.input_linear.weight", {2 * fs, h},
                   "[2F_shared, H] (2 * shared_intermediate_size, "
                   "hidden_size)");
      spec.weights.push_back(p.strided("shared_gate", sgu, 0, {fs, h}, {h, 1}));
      spec.weights.push_back(
          p.strided("shared_up", sgu, fs * h, {fs, h}, {h, 1}));
      spec.weights.push_back(p.whole(
          "shared_down", layer + "shared_mlp.output_linear.weight", {h, fs},
          "[H, F_shared] (hidden_size, shared_intermediate_size)"));
      spec.attrs.push_back("shared_activation = #moe.activation<" + act + ">");
    }
    m.layers.push_back(
        makeMoEPlan(p, i,
                    p.modelType + ": softmax over the top-k logits" +
                        (fs > 0 ? ", shared MLP" : "") +
                        (jet ? ", a bias after the mixture" : ""),
                    spec));
  }
}

/// dbrx (DbrxFFN): softmax over every logit, top-k, the k weights divided by
/// their `moe_normalize_expert_weights`-norm (1: their sum, renormalised;
/// null: left as they are); the experts three [E*F, H] tensors, gate `w1`
/// and up `v1` viewed [E, F, H] and down `w2` viewed [E, F, H] and applied
/// as `h @ w2[e]`, which is the strided [E, H, F] view below.
void planDbrx(Planner &p, ModelPlan &m, int64_t layers) {
  const llvm::json::Object *fc = p.cfg.getObject("ffn_config");
  if (!fc) {
    p.fail("config.json: missing object 'ffn_config' (required for "
           "model_type 'dbrx')");
    return;
  }
  auto get = [&](StringRef key) {
    return p.getIntIn(*fc, key, "config.json: ffn_config");
  };
  int64_t e = get("moe_num_experts"), k = get("moe_top_k"),
          f = get("ffn_hidden_size");
  if (e <= 0 || f <= 0)
    p.fail("config.json: ffn_config 'moe_num_experts' = " + Twine(e) +
           " and 'ffn_hidden_size' = " + Twine(f) + " must be positive");
  p.checkTopK("ffn_config.moe_top_k", k, "ffn_config.moe_num_experts", e);
  // transformers' default is 1.0; an explicit null turns it off.
  bool renorm = true;
  if (const llvm::json::Value *v = fc->get("moe_normalize_expert_weights")) {
    if (v->kind() == llvm::json::Value::Null) {
      renorm = false;
    } else if (std::optional<double> norm = v->getAsNumber(); !norm) {
      p.fail("config.json: ffn_config 'moe_normalize_expert_weights' must "
             "be a number or null");
    } else if (*norm != 1.0) {
      p.fail("not supported: config.json ffn_config "
             "'moe_normalize_expert_weights' = " +
             llvm::formatv("{0}", *v) +
             " (the weights divided by their 1-norm, or null, are; other "
             "p-norms are not)");
    }
  }
  std::string actName = "silu";
  if (const llvm::json::Object *a = fc->getObject("ffn_act_fn"))
    if (std::optional<StringRef> n = a->getString("name"))
      actName = n->str();
  std::string act = p.gatedActivation(actName, "ffn_config.ffn_act_fn.name");
  int64_t h = p.hidden;
  p.layerRoots = {{"transformer.blocks.", 0}};
  std::string efh =
      "[E*F, H] (ffn_config.moe_num_experts * ffn_config.ffn_hidden_size, "
      "d_model)";
  for (int64_t i = 0; i < layers && !p.failed(); ++i) {
    std::string pre = "transformer.blocks." + std::to_string(i) + ".ffn.";
    p.block(i, pre);
    LayerSpec spec;
    spec.weights.push_back(
        p.whole("router", pre + "router.layer.weight", {e, h},
                "[E, H] (ffn_config.moe_num_experts, d_model)"));
    const SourceTensor *w1 = p.tensor(pre + "experts.mlp.w1", {e * f, h}, efh);
    const SourceTensor *v1 = p.tensor(pre + "experts.mlp.v1", {e * f, h}, efh);
    const SourceTensor *w2 = p.tensor(pre + "experts.mlp.w2", {e * f, h}, efh);
    spec.weights.push_back(p.strided("gate", w1, 0, {e, f, h}, {f * h, h, 1}));
    spec.weights.push_back(p.strided("up", v1, 0, {e, f, h}, {f * h, h, 1}));
    spec.weights.push_back(p.strided("down", w2, 0, {e, h, f}, {f * h, 1, h}));
    spec.attrs = {topkRouting("softmax", k, renorm),
                  "activation = #moe.activation<" + act + ">"};
    m.layers.push_back(makeMoEPlan(p, i,
                                   std::string("dbrx: softmax top-k") +
                                       (renorm ? ", renormalised" : ""),
                                   spec));
  }
}

/// switch_transformers (SwitchTransformersSparseMLP, transformers 5.25): an
/// encoder-decoder whose feed-forward blocks are dense (`wi`, `wo`) or
/// sparse: softmax over every logit in f32, top-1, weight the top
/// probability (not renormalised), experts `expert_{e}.wi`/`.wo` ungated,
/// and a fixed capacity of `expert_capacity` tokens per expert and sequence,
/// admitted in token order (a dropped token's MLP output is 0). Encoder
/// block i is layer i, decoder block i layer num_layers + i.
void planSwitch(Planner &p, ModelPlan &m, int64_t encoderLayers) {
  int64_t e = p.positive("num_experts", p.getInt("num_experts"));
  int64_t f = p.positive("d_ff", p.getInt("d_ff"));
  int64_t decoderLayers = p.getInt("num_decoder_layers", encoderLayers);
  if (decoderLayers < 0)
    p.fail("config.json: 'num_decoder_layers' = " + Twine(decoderLayers) +
           " must not be negative");
  int64_t capacity = p.getInt("expert_capacity", 64);
  if (capacity < 0)
    p.fail("config.json: 'expert_capacity' = " + Twine(capacity) +
           " must not be negative");
  bool routerBias = p.getBool("router_bias", false);
  std::string routerDType = p.getString("router_dtype", "float32");
  if (routerDType != "float32")
    p.fail("not supported: config.json 'router_dtype' = '" + routerDType +
           "' (the router runs in float32)");
  // The ungated activation of dense_act_fn (ACT2FN's names).
  std::string actName = p.getString("dense_act_fn", "relu");
  std::string act = llvm::StringSwitch<std::string>(actName)
                        .Case("relu", "relu")
                        .Case("gelu", "gelu")
                        .Cases({"gelu_new", "gelu_pytorch_tanh"}, "gelu_tanh")
                        .Case("relu2", "relu2")
                        .Default("");
  if (act.empty())
    p.fail("not supported: config.json 'dense_act_fn' = '" + actName +
           "' (relu, gelu, gelu_new, gelu_pytorch_tanh and relu2 are)");
  // SwitchTransformersConfig: the sparse step of each stack.
  auto sparseStep = [&](StringRef key, int64_t layers) {
    int64_t sparse = p.getInt(key, 3);
    if (sparse < 0)
      p.fail("config.json: '" + key + "' = " + Twine(sparse) +
             " must not be negative");
    return sparse > 0 ? layers / sparse : layers;
  };
  int64_t encoderStep = sparseStep("num_sparse_encoder_layers", encoderLayers);
  int64_t decoderStep = sparseStep("num_sparse_decoder_layers", decoderLayers);
  int64_t h = p.hidden;
  p.layerRoots = {{"encoder.block.", 0}, {"decoder.block.", encoderLayers}};
  auto planStack = [&](bool decoder, int64_t layers, int64_t step) {
    for (int64_t b = 0; b < layers && !p.failed(); ++b) {
      int64_t i = decoder ? encoderLayers + b : b;
      std::string where = (decoder ? "decoder" : "encoder") +
                          std::string(" block ") + std::to_string(b);
      // SwitchTransformersStack: sparse where i % step == 1 or step == 1.
      bool sparse = step > 0 && (b % step == 1 || step == 1);
      std::string pre = (decoder ? "decoder.block." : "encoder.block.") +
                        std::to_string(b) +
                        (decoder ? ".layer.2.mlp." : ".layer.1.mlp.");
      p.block(i, pre);
      if (!sparse) {
        m.layers.push_back(planDense(p, i, pre, f, "d_ff",
                                     {"", "wi.weight", "wo.weight"}, act));
        continue;
      }
      LayerSpec spec;
      spec.weights.push_back(p.whole("router", pre + "router.classifier.weight",
                                     {e, h}, "[E, H] (num_experts, d_model)"));
      if (routerBias)
        spec.weights.push_back(p.whole("router_bias",
                                       pre + "router.classifier.bias", {e},
                                       "[E] (num_experts)"));
      std::string experts = pre + "experts.expert_";
      spec.weights.push_back(p.stacked("up",
                                       p.perExpert(experts, e, ".wi.weight"),
                                       {f, h}, "[F, H] (d_ff, d_model)"));
      spec.weights.push_back(p.stacked("down",
                                       p.perExpert(experts, e, ".wo.weight"),
                                       {h, f}, "[H, F] (d_model, d_ff)"));
      spec.attrs = {topkRouting("softmax", 1, false),
                    "activation = #moe.activation<" + act + ">",
                    LayerSpec::kCapacityDispatch.str(),
                    "expert_capacity = " + std::to_string(capacity)};
      m.layers.push_back(makeMoEPlan(
          p, i,
          "switch_transformers " + where +
              ": softmax top-1, the top probability as weight, at most " +
              std::to_string(capacity) + " tokens per expert",
          spec));
    }
  };
  planStack(false, encoderLayers, encoderStep);
  planStack(true, decoderLayers, decoderStep);
}

/// Our research extension: `model_type: "moe_mlir"` (docs/importer.md).
void planResearch(Planner &p, ModelPlan &m, int64_t layers) {
  const llvm::json::Object *ml = p.cfg.getObject("moe_layer");
  if (!ml) {
    p.fail("config.json: missing object 'moe_layer' (required for model_type "
           "'moe_mlir')");
    return;
  }
  std::string kind = ml->getString("kind").value_or("").str();
  auto get = [&](StringRef key) {
    return p.getIntIn(*ml, key, "config.json: moe_layer");
  };
  auto getOr = [&](StringRef key, int64_t def) {
    return ml->get(key) ? get(key) : def;
  };
  int64_t h = p.hidden;
  std::string fh = "[F, H] (moe_layer.intermediate_size, hidden_size)";
  for (int64_t i = 0; i < layers && !p.failed(); ++i) {
    std::string pre = "model.layers." + std::to_string(i) + ".mlp.";
    p.block(i, pre);
    LayerSpec spec;
    if (kind == "projected_router") {
      int64_t e = get("num_experts"), f = get("intermediate_size"),
              dm = get("domain_dim"), hp = get("proj_hidden");
      spec.weights.push_back(p.whole("domain_embeddings",
                                     pre + "router.domain_embeddings", {e, dm},
                                     "[E, m] (num_experts, domain_dim)"));
      spec.weights.push_back(p.whole("proj_w1", pre + "router.proj.w1.weight",
                                     {2 * hp, dm},
                                     "[2h', m] (2 * proj_hidden, domain_dim)"));
      spec.weights.push_back(p.whole("proj_w2", pre + "router.proj.w2.weight",
                                     {h, hp}, "[H, h'] (hidden_size, proj_hidden)"));
      p.addStackedFFN(spec, pre + "experts.", e, f, "gate_proj", "up_proj",
                      "down_proj", "moe_layer.intermediate_size", "num_experts");
      int64_t fs = getOr("shared_expert_intermediate_size", 0);
      p.checkNoShared("moe_layer.shared_expert_intermediate_size", fs,
                      pre + "shared_expert");
      if (fs > 0)
        p.addSharedFFN(spec, pre + "shared_expert", fs,
                       "moe_layer.shared_expert_intermediate_size");
      spec.attrs = {topkRouting("softmax", 1, false)};
      m.layers.push_back(makeMoEPlan(
          p, i, "moe_mlir projected_router (Nexus): top-1 over P(D)", spec));
    } else if (kind == "hierarchical_lora") {
      int64_t e = get("num_experts"), g = get("num_groups"),
              k = getOr("num_experts_per_tok", e), r = get("lora_rank");
      double alpha = p.getNumberIn(*ml, "lora_alpha", double(r),
                                   "config.json: moe_layer");
      double tg = p.getNumberIn(*ml, "tau_group", 1.0, "config.json: moe_layer");
      double te = p.getNumberIn(*ml, "tau_expert", 1.0, "config.json: moe_layer");
      if (g <= 0 || e % g != 0)
        p.fail("config.json: moe_layer 'num_groups' = " + Twine(g) +
               " must divide 'num_experts' = " + Twine(e));
      p.checkTopK("moe_layer.num_experts_per_tok", k, "moe_layer.num_experts", e);
      spec.weights.push_back(p.whole("router", pre + "router.weight", {e, h},
                                     "[E, H] (num_experts, hidden_size)"));
      spec.weights.push_back(p.whole("group_router", pre + "group_router.weight",
                                     {g, h}, "[G, H] (num_groups, hidden_size)"));
      spec.weights.push_back(p.whole("lora_base", pre + "base.weight", {h, h},
                                     "[H, H] (hidden_size)"));
      spec.weights.push_back(p.stacked(
          "lora_a", p.perExpert(pre + "experts.", e, ".lora_A.weight"), {r, h},
          "[r, H] (lora_rank, hidden_size)"));
      spec.weights.push_back(p.stacked(
          "lora_b", p.perExpert(pre + "experts.", e, ".lora_B.weight"), {h, r},
          "[H, r] (hidden_size, lora_rank)"));
      spec.attrs = {
          llvm::formatv("routing = #moe.routing<softmax, hierarchical, k = {0}, "
                        "n_group = {1}, tau_group = {2:e}, tau_expert = {3:e}>",
                        k, g, tg, te)
              .str(),
          llvm::formatv("lora_alpha = {0:e} : f64", alpha).str()};
      m.layers.push_back(makeMoEPlan(
          p, i, "moe_mlir hierarchical_lora (AT-MoE)", spec));
    } else if (kind == "zero_computation") {
      int64_t e = get("num_experts"), f = get("intermediate_size"),
              k = get("num_experts_per_tok"), nz = getOr("zero_experts", 0),
              nc = getOr("copy_experts", 0), nk = getOr("constant_experts", 0);
      for (auto [key, n] : {std::pair<StringRef, int64_t>{"zero_experts", nz},
                            {"copy_experts", nc},
                            {"constant_experts", nk}})
        if (n < 0)
          p.fail("config.json: moe_layer '" + key + "' = " + Twine(n) +
                 " must be 0 or more");
      if (p.failed())
        return;
      int64_t total = e + nz + nc + nk;
      p.checkTopK("moe_layer.num_experts_per_tok", k, "all experts", total);
      spec.weights.push_back(p.whole("router", pre + "gate.weight", {total, h},
                                     "[E_total, H] (num_experts + zero_experts "
                                     "+ copy_experts + constant_experts, "
                                     "hidden_size)"));
      p.addStackedFFN(spec, pre + "experts.", e, f, "gate_proj", "up_proj",
                      "down_proj", "moe_layer.intermediate_size", "num_experts");
      if (nk > 0) {
        spec.weights.push_back(p.stacked(
            "const_router",
            p.perExpert(pre + "constant_experts.", nk, ".router.weight"),
            {2, h}, "[2, H] (hidden_size)"));
        spec.weights.push_back(
            p.stacked("const_vectors",
                      p.perExpert(pre + "constant_experts.", nk, ".vector"),
                      {h}, "[H] (hidden_size)"));
      }
      // The router's shape bounds the counts (10^12 zero experts made 10^12
      // attribute strings below before the shape error could stop it).
      if (p.failed())
        return;
      std::vector<std::string> kinds;
      kinds.insert(kinds.end(), nz, "#moe.special<zero>");
      kinds.insert(kinds.end(), nc, "#moe.special<copy>");
      kinds.insert(kinds.end(), nk, "#moe.special<constant>");
      spec.attrs = {topkRouting("softmax", k, true)};
      if (!kinds.empty())
        spec.attrs.push_back("special_kinds = [" + llvm::join(kinds, ", ") + "]");
      m.layers.push_back(makeMoEPlan(
          p, i, "moe_mlir zero_computation (MoE++)", spec));
    } else if (kind == "cartesian") {
      LayerSpec subs[2];
      const char *names[2] = {"first", "second"};
      for (int s = 0; s < 2; ++s) {
        const llvm::json::Object *sub = ml->getObject(names[s]);
        if (!sub) {
          p.fail(Twine("config.json: moe_layer is missing the object '") +
                 names[s] + "'");
          return;
        }
        std::string where = std::string("config.json: moe_layer.") + names[s];
        int64_t e = p.getIntIn(*sub, "num_experts", where),
                k = p.getIntIn(*sub, "num_experts_per_tok", where),
                f = p.getIntIn(*sub, "intermediate_size", where);
        p.checkTopK(std::string(names[s]) + ".num_experts_per_tok", k,
                    std::string(names[s]) + ".num_experts", e);
        std::string sp = pre + names[s] + ".";
        subs[s].weights.push_back(p.whole("router", sp + "gate.weight", {e, h},
                                          "[E, H] (num_experts, hidden_size)"));
        p.addStackedFFN(subs[s], sp + "experts.", e, f, "gate_proj", "up_proj",
                        "down_proj", "intermediate_size", "num_experts");
        subs[s].attrs = {topkRouting("softmax", k, true)};
      }
      bool norm = ml->getBoolean("norm").value_or(false);
      double eps = p.getNumber("rms_norm_eps", 1e-6);
      LayerPlan plan;
      plan.index = i;
      plan.kind = "moe";
      plan.entry = "moe_layer";
      Weight normW;
      if (norm) {
        normW = p.whole("norm_weight", pre + "norm.weight", {h},
                        "[H] (hidden_size)");
        plan.weights.push_back(normW);
      }
      for (int s = 0; s < 2; ++s)
        for (Weight w : subs[s].weights) {
          w.role = std::string(names[s]) + "." + w.role;
          plan.weights.push_back(std::move(w));
        }
      plan.ir = printCartesianModule("moe_mlir cartesian (CartesianMoE)",
                                     subs[0], subs[1], norm ? &normW : nullptr,
                                     eps, h, p.dtype);
      m.layers.push_back(std::move(plan));
    } else {
      p.fail("not supported: config.json moe_layer 'kind' = '" + kind +
             "' (supported: projected_router, hierarchical_lora, cartesian, "
             "zero_computation)");
    }
  }
}
} // namespace

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

StringRef mlir::moe::hf::getElemTypeName(ElemType t) {
  switch (t) {
  case ElemType::F32:
    return "f32";
  case ElemType::F16:
    return "f16";
  case ElemType::BF16:
    return "bf16";
  }
  return "f32";
}

bool mlir::moe::hf::isModelDirectory(StringRef path) {
  llvm::SmallString<256> cfg(path);
  llvm::sys::path::append(cfg, "config.json");
  return llvm::sys::fs::is_directory(path) && llvm::sys::fs::exists(cfg);
}

namespace {
/// The "layers" array of a surgery file (moe-drop/1, moe-merge/1) at
/// `path`, whose "format" must be `format`; `shape` describes the layers
/// in the error message. `json` keeps the parsed document alive.
llvm::Expected<const llvm::json::Array *>
readLayersFile(StringRef path, StringRef format, StringRef shape,
               std::optional<llvm::json::Value> &json) {
  auto buf = llvm::MemoryBuffer::getFile(path);
  if (!buf)
    return makeError("cannot read '" + path + "': " + buf.getError().message());
  auto parsed = llvm::json::parse((*buf)->getBuffer());
  if (!parsed)
    return makeError("'" + path + "' is not valid JSON: " +
                     llvm::toString(parsed.takeError()));
  json = std::move(*parsed);
  const llvm::json::Object *root = json->getAsObject();
  const llvm::json::Array *layers = root ? root->getArray("layers") : nullptr;
  if (!root || root->getString("format") != format || !layers)
    return makeError("'" + path + "' is not a " + format +
                     " file (format, layers: [" + shape + "])");
  return layers;
}

/// The expert ids of `ids` (layer `index` of the file at `path`).
llvm::Expected<std::vector<int64_t>>
readExpertIds(const llvm::json::Array &ids, StringRef path, int64_t index) {
  std::vector<int64_t> out;
  for (const llvm::json::Value &id : ids) {
    std::optional<int64_t> v = id.getAsInteger();
    if (!v)
      return makeError("'" + path + "': layer " + Twine(index) +
                       ": expert ids must be integers");
    out.push_back(*v);
  }
  return out;
}
} // namespace

llvm::Expected<DropSpec> mlir::moe::hf::readDropFile(StringRef path) {
  std::optional<llvm::json::Value> json;
  auto layers = readLayersFile(path, "moe-drop/1", "{index, drop: [ids]}", json);
  if (!layers)
    return layers.takeError();
  DropSpec spec;
  for (const llvm::json::Value &l : **layers) {
    const llvm::json::Object *o = l.getAsObject();
    std::optional<int64_t> index = o ? o->getInteger("index") : std::nullopt;
    const llvm::json::Array *ids = o ? o->getArray("drop") : nullptr;
    if (!index || !ids)
      return makeError("'" + path + "': each layer needs an integer 'index' "
                       "and a 'drop' list");
    auto read = readExpertIds(*ids, path, *index);
    if (!read)
      return read.takeError();
    std::vector<int64_t> &out = spec.layers[*index];
    out.insert(out.end(), read->begin(), read->end());
  }
  return spec;
}

llvm::Expected<AddSpec>
mlir::moe::hf::readAddFiles(llvm::ArrayRef<std::string> paths) {
  static const char *kNames[] = {
      "router", "router_bias", "selection_bias", "domain_embedding",
      "gate",   "up",          "down",           "gate_bias",
      "up_bias", "down_bias",  "lora_a",         "lora_b"};
  AddSpec spec;
  for (const std::string &path : paths) {
    auto file = Checkpoint::openFile(path);
    if (!file)
      return makeError("--add-expert '" + path +
                       "': " + llvm::toString(file.takeError()));
    spec.files.push_back(*file);
    std::map<int64_t, AddSpec::Expert> experts;
    for (const auto &entry : (*file)->all()) {
      StringRef name = entry.getKey();
      // layers.<i>.<name>
      StringRef rest = name;
      int64_t index;
      StringRef role;
      bool ok = rest.consume_front("layers.");
      if (ok) {
        auto [num, tail] = rest.split('.');
        role = tail;
        ok = !num.getAsInteger(10, index) && index >= 0 &&
             llvm::is_contained(kNames, role);
      }
      if (!ok)
        return makeError(
            "--add-expert '" + path + "': tensor '" + name +
            "' is not named layers.<i>.<name> with <name> one of " +
            llvm::join(llvm::ArrayRef<const char *>(kNames), ", "));
      AddSpec::Expert &e = experts[index];
      e.file = path;
      e.tensors[role == "domain_embedding" ? "domain_embeddings"
                                           : role.str()] = &entry.getValue();
    }
    if (experts.empty())
      return makeError("--add-expert '" + path + "' holds no tensors");
    for (auto &[index, e] : experts)
      spec.layers[index].push_back(std::move(e));
  }
  return spec;
}

llvm::Expected<MergeSpec> mlir::moe::hf::readMergeFile(StringRef path) {
  std::optional<llvm::json::Value> json;
  auto layers = readLayersFile(path, "moe-merge/1",
                               "{index, groups: [[ids]], frequencies: [...]}",
                               json);
  if (!layers)
    return layers.takeError();
  MergeSpec spec;
  for (const llvm::json::Value &l : **layers) {
    const llvm::json::Object *o = l.getAsObject();
    std::optional<int64_t> index = o ? o->getInteger("index") : std::nullopt;
    const llvm::json::Array *groups = o ? o->getArray("groups") : nullptr;
    if (!index || !groups)
      return makeError("'" + path + "': each layer needs an integer 'index' "
                       "and a 'groups' list of expert id lists");
    MergeSpec::Layer &out = spec.layers[*index];
    for (const llvm::json::Value &g : *groups) {
      const llvm::json::Array *ids = g.getAsArray();
      if (!ids)
        return makeError("'" + path + "': layer " + Twine(*index) +
                         ": each group must be a list of expert ids");
      auto group = readExpertIds(*ids, path, *index);
      if (!group)
        return group.takeError();
      out.groups.push_back(std::move(*group));
    }
    if (const llvm::json::Array *freq = o->getArray("frequencies"))
      for (const llvm::json::Value &f : *freq) {
        std::optional<double> v = f.getAsNumber();
        if (!v)
          return makeError("'" + path + "': layer " + Twine(*index) +
                           ": frequencies must be numbers");
        out.frequencies.push_back(*v);
      }
  }
  return spec;
}

llvm::Expected<ModelPlan> mlir::moe::hf::planModel(StringRef dir,
                                                    const DropSpec *drop,
                                                    const AddSpec *add,
                                                    const MergeSpec *merge) {
  llvm::SmallString<256> cfgPath(dir);
  llvm::sys::path::append(cfgPath, "config.json");
  auto buf = llvm::MemoryBuffer::getFile(cfgPath);
  if (!buf)
    return makeError("cannot read '" + cfgPath + "': " +
                     buf.getError().message());
  auto json = llvm::json::parse((*buf)->getBuffer());
  if (!json)
    return makeError("'" + cfgPath + "' is not valid JSON: " +
                     llvm::toString(json.takeError()));
  const llvm::json::Object *cfg = json->getAsObject();
  if (!cfg)
    return makeError("'" + cfgPath + "' is not a JSON object");

  std::optional<StringRef> type = cfg->getString("model_type");
  if (!type)
    return makeError("config.json: missing key 'model_type'");
  static const char *kFamilies[] = {"mixtral",
                                    "qwen2_moe",
                                    "qwen3_moe",
                                    "deepseek_v2",
                                    "deepseek_v3",
                                    "olmoe",
                                    "gpt_oss",
                                    "granitemoe",
                                    "granitemoeshared",
                                    "dbrx",
                                    "phimoe",
                                    "glm4_moe",
                                    "minimax_m2",
                                    "qwen3_next",
                                    "llama4_text",
                                    "llama4",
                                    "switch_transformers",
                                    "jetmoe",
                                    "moe_mlir"};
  if (!llvm::is_contained(kFamilies, *type))
    return makeError("not supported: config.json 'model_type' = '" + *type +
                     "' (supported: " +
                     llvm::join(llvm::ArrayRef<const char *>(kFamilies), ", ") + ")");

  if (const llvm::json::Object *q = cfg->getObject("quantization_config")) {
    std::string method = q->getString("quant_method").value_or("unknown").str();
    return makeError("not supported: config.json 'quantization_config' "
                     "(quant_method '" + method +
                     "'): quantized checkpoints (e.g. gpt-oss MXFP4, fp8) "
                     "are not supported; export the model in bf16, f16 or "
                     "f32");
  }

  auto ckpt = Checkpoint::open(dir);
  if (!ckpt)
    return ckpt.takeError();

  // llama4 (the hub's Llama4ForConditionalGeneration): the text model's
  // config nested under text_config, its tensors under language_model.;
  // the vision tower is not read.
  const llvm::json::Object *modelCfg = cfg;
  if (*type == "llama4") {
    modelCfg = cfg->getObject("text_config");
    if (!modelCfg)
      return makeError("config.json: model_type 'llama4' needs the object "
                       "'text_config' (the text model's configuration)");
  }

  ModelPlan model;
  model.modelType = type->str();
  model.checkpoint = *ckpt;
  Planner p(*modelCfg, **ckpt);
  p.modelType = model.modelType;
  if (*type == "llama4")
    p.layerRoots = {{"language_model.model.layers.", 0}};
  p.drop = drop;
  p.add = add;
  p.merge = merge;
  // transformers v5 writes "dtype", earlier versions "torch_dtype"; a
  // nested text_config without either takes the top level's.
  Planner top(*cfg, **ckpt);
  Planner &dtypeFrom =
      p.has("torch_dtype") || p.has("dtype") || modelCfg == cfg ? p : top;
  std::string dt = dtypeFrom.has("torch_dtype")
                       ? dtypeFrom.getString("torch_dtype", "float32")
                       : dtypeFrom.getString("dtype", "float32");
  p.fail(top.error);
  if (dt == "float32")
    p.dtype = ElemType::F32;
  else if (dt == "float16")
    p.dtype = ElemType::F16;
  else if (dt == "bfloat16")
    p.dtype = ElemType::BF16;
  else
    p.fail("not supported: config.json 'torch_dtype' = '" + dt +
           "' (supported: float32, float16, bfloat16)");
  // dbrx names these d_model and n_layers, switch_transformers d_model and
  // num_layers (its encoder's; transformers maps them).
  bool isSwitch = *type == "switch_transformers";
  StringRef hiddenKey = *type == "dbrx" || isSwitch ? "d_model" : "hidden_size";
  StringRef layersKey = *type == "dbrx" ? "n_layers"
                        : isSwitch      ? "num_layers"
                                        : "num_hidden_layers";
  p.hidden = p.positive(hiddenKey, p.getInt(hiddenKey));
  int64_t layers = p.positive(layersKey, p.getInt(layersKey));
  if (p.failed())
    return makeError(p.error);
  model.hiddenSize = p.hidden;
  model.dtype = p.dtype;

  StringRef t = *type;
  if (t == "mixtral" || t == "minimax_m2" || t == "phimoe")
    planMixtral(p, model, layers);
  else if (t == "qwen2_moe" || t == "qwen3_moe" || t == "qwen3_next")
    planQwen(p, model, layers, t != "qwen3_moe", t == "qwen3_next");
  else if (t == "deepseek_v2" || t == "deepseek_v3" || t == "glm4_moe")
    planDeepSeek(p, model, layers, t != "deepseek_v2", t == "glm4_moe");
  else if (t == "olmoe")
    planOLMoE(p, model, layers);
  else if (t == "gpt_oss")
    planGptOss(p, model, layers);
  else if (t == "granitemoe" || t == "granitemoeshared" || t == "jetmoe")
    planGranite(p, model, layers, t == "granitemoeshared");
  else if (t == "dbrx")
    planDbrx(p, model, layers);
  else if (t == "llama4_text" || t == "llama4")
    planLlama4(p, model, layers);
  else if (t == "switch_transformers")
    planSwitch(p, model, layers);
  else
    planResearch(p, model, layers);
  p.checkUnused();
  if (p.failed())
    return makeError(p.error);
  if (add) {
    // Layers of the add files that no MoE layer took: say why.
    for (const auto &[index, experts] : add->layers) {
      if (llvm::is_contained(p.addTaken, index))
        continue;
      std::string where = "--add-expert '" + experts.front().file +
                          "': layer " + std::to_string(index);
      auto it = llvm::find_if(model.layers, [&, index = index](
                                                const LayerPlan &l) {
        return l.index == index;
      });
      if (it == model.layers.end())
        return makeError(where + ": the model has layers 0.." +
                         Twine(model.layers.back().index));
      if (it->kind == "dense")
        return makeError(where + " is a dense MLP layer: it has no experts "
                                 "to add to");
      return makeError(where + ": adding an expert to a '" + model.modelType +
                       "' layer of this kind (" +
                       StringRef(it->ir).split('\n').first.drop_front(3) +
                       ") is not supported");
    }
    model.additions = add->files;
  }
  return model;
}

namespace {
/// Calls `fn(i, value)` for the elements of the plain piece `p` in row-major
/// order (i counts from 0).
void forEachElement(const Piece &p,
                    llvm::function_ref<void(int64_t, float)> fn) {
  size_t rank = p.shape.size();
  std::vector<int64_t> idx(rank, 0);
  int64_t count = numElements(p.shape);
  size_t inSize = elemSize(p.src->dtype);
  for (int64_t i = 0; i < count; ++i) {
    int64_t off = p.offset;
    for (size_t d = 0; d < rank; ++d)
      off += idx[d] * p.strides[d];
    fn(i, loadElem(p.src->data + off * inSize, p.src->dtype));
    for (int64_t d = int64_t(rank) - 1; d >= 0; --d) {
      if (++idx[d] < p.shape[d])
        break;
      idx[d] = 0;
    }
  }
}
} // namespace

namespace {
/// Chained xxh3 over the layout (role, dtype, shape, strides, merged rows'
/// coefficients) and, per source tensor, what `source` mixes in.
uint64_t walkWeights(
    const LayerPlan &layer,
    llvm::function_ref<void(const SourceTensor &,
                            llvm::function_ref<void(llvm::ArrayRef<uint8_t>)>)>
        source) {
  uint64_t h = 0;
  auto mix = [&](llvm::ArrayRef<uint8_t> bytes) {
    h = llvm::xxh3_64bits(bytes) ^ (h * 0x9E3779B97F4A7C15ULL + 1);
  };
  auto mixInts = [&](llvm::ArrayRef<int64_t> v) {
    mix(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(v.data()),
                                v.size() * sizeof(int64_t)));
  };
  std::function<void(const Piece &)> mixPiece = [&](const Piece &p) {
    if (!p.terms.empty()) { // a merged row: its coefficients and terms
      mixInts({-1, int64_t(p.terms.size())});
      mix(llvm::ArrayRef<uint8_t>(
          reinterpret_cast<const uint8_t *>(p.coeffs.data()),
          p.coeffs.size() * sizeof(double)));
      for (const Piece &t : p.terms)
        mixPiece(t);
      return;
    }
    mixInts({int64_t(p.src->dtype), p.offset});
    mixInts(p.shape);
    mixInts(p.strides);
    source(*p.src, mix);
  };
  for (const Weight &w : layer.weights) {
    mix(llvm::arrayRefFromStringRef(w.role));
    mixInts({int64_t(w.dtype)});
    mixInts(w.shape);
    for (const Piece &p : w.pieces)
      mixPiece(p);
  }
  return h;
}
} // namespace

uint64_t mlir::moe::hf::hashWeights(const LayerPlan &layer) {
  // The source bytes each piece can touch: its whole tensor.
  return walkWeights(layer, [](const SourceTensor &t, auto mix) {
    size_t bytes = numElements(t.shape) * elemSize(t.dtype);
    mix(llvm::ArrayRef<uint8_t>(t.data, bytes));
  });
}

uint64_t mlir::moe::hf::identifyWeights(const LayerPlan &layer) {
  // Each source tensor by its name and its file's path, size and mtime
  // (stat once per file).
  llvm::StringMap<std::string> stamps;
  return walkWeights(layer, [&](const SourceTensor &t, auto mix) {
    auto [it, fresh] = stamps.try_emplace(t.path);
    if (fresh) {
      llvm::sys::fs::file_status st;
      if (llvm::sys::fs::status(t.path, st)) {
        it->second = "?"; // unknown: never equal to a recorded identity
        it->second += std::to_string(reinterpret_cast<uintptr_t>(t.data));
      } else {
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      st.getLastModificationTime().time_since_epoch())
                      .count();
        it->second = t.path + "|" + std::to_string(st.getSize()) + "|" +
                     std::to_string(ns);
      }
    }
    mix(llvm::arrayRefFromStringRef(it->second));
    mix(llvm::arrayRefFromStringRef(t.name));
  });
}

llvm::Error mlir::moe::hf::writeWeights(const LayerPlan &layer, StringRef path,
                                        uint64_t hash,
                                        std::optional<uint64_t> identity) {
  // Header: one entry per role, data in role order, 8-byte aligned header.
  llvm::json::Object header;
  header["__metadata__"] = llvm::json::Object{
      {"format", "moe-weights/1"},
      {"layer", layer.index},
      {"source_hash", llvm::utohexstr(hash, true)}};
  if (identity)
    header["__metadata__"].getAsObject()->try_emplace(
        "source_identity", llvm::utohexstr(*identity, true));
  size_t offset = 0;
  std::vector<size_t> begins;
  for (const Weight &w : layer.weights) {
    size_t bytes = numElements(w.shape) * elemSize(w.dtype);
    int64_t covered = 0;
    for (const Piece &p : w.pieces)
      covered += numElements(p.shape);
    if (covered != numElements(w.shape))
      return makeError("internal error: weight '" + w.role + "' of layer " +
                       Twine(layer.index) + " is not fully planned");
    llvm::json::Array shape;
    for (int64_t d : w.shape)
      shape.push_back(d);
    header[w.role] = llvm::json::Object{
        {"dtype", safetensorsDType(w.dtype)},
        {"shape", std::move(shape)},
        {"data_offsets", llvm::json::Array{int64_t(offset),
                                           int64_t(offset + bytes)}}};
    begins.push_back(offset);
    offset += bytes;
  }
  std::string headerText;
  llvm::raw_string_ostream(headerText) << llvm::json::Value(std::move(header));
  while (headerText.size() % 8)
    headerText += ' ';
  size_t total = 8 + headerText.size() + offset;

  auto out = llvm::FileOutputBuffer::create(path, total);
  if (!out)
    return makeError("cannot write '" + path +
                     "': " + llvm::toString(out.takeError()));
  unsigned char *base = (*out)->getBufferStart();
  uint64_t n = headerText.size();
  for (int i = 0; i < 8; ++i)
    base[i] = uint8_t(n >> (8 * i));
  std::memcpy(base + 8, headerText.data(), headerText.size());
  unsigned char *data = base + 8 + headerText.size();

  for (auto [w, begin] : llvm::zip(layer.weights, begins)) {
    unsigned char *dst = data + begin;
    size_t outSize = elemSize(w.dtype);
    for (const Piece &p : w.pieces) {
      if (!p.terms.empty()) { // a merged row: sum_j c_j * term_j, in double
        std::vector<double> acc(numElements(p.shape), 0.0);
        for (auto [t, c] : llvm::zip(p.terms, p.coeffs))
          forEachElement(t, [&, c = c](int64_t i, float v) { acc[i] += c * v; });
        for (double v : acc) {
          storeElem(dst, w.dtype, float(v));
          dst += outSize;
        }
        continue;
      }
      size_t inSize = elemSize(p.src->dtype);
      bool sameType = p.src->dtype == w.dtype;
      // Row-major walk over the piece's index space.
      size_t rank = p.shape.size();
      int64_t count = numElements(p.shape);
      std::vector<int64_t> idx(rank, 0);
      int64_t src = p.offset;
      int64_t inner = rank ? p.shape[rank - 1] : 1;
      int64_t innerStride = rank ? p.strides[rank - 1] : 0;
      for (int64_t done = 0; done < count; done += inner) {
        const unsigned char *s = p.src->data + src * inSize;
        if (sameType && innerStride == 1) {
          std::memcpy(dst, s, inner * inSize);
          dst += inner * outSize;
        } else {
          for (int64_t j = 0; j < inner; ++j, dst += outSize) {
            const unsigned char *e = s + j * innerStride * inSize;
            if (sameType)
              std::memcpy(dst, e, inSize);
            else
              storeElem(dst, w.dtype, loadElem(e, p.src->dtype));
          }
        }
        // Advance the outer indices.
        for (int64_t d = int64_t(rank) - 2; d >= 0; --d) {
          src += p.strides[d];
          if (++idx[d] < p.shape[d])
            break;
          src -= p.strides[d] * p.shape[d];
          idx[d] = 0;
        }
      }
    }
  }
  if (auto err = (*out)->commit())
    return makeError("cannot write '" + path +
                     "': " + llvm::toString(std::move(err)));
  return llvm::Error::success();
}

mlir::moe::hf::WeightsStamp
mlir::moe::hf::readWeightsStamp(StringRef path) {
  // A file that opens is complete (the reader checks every offset).
  WeightsStamp stamp;
  auto opened = ::moe::rt::SafeTensorsFile::open(path.str());
  if (!opened)
    return stamp;
  const auto &meta = opened.value()->metadata();
  auto hexValue = [&](const char *key) -> std::optional<uint64_t> {
    auto it = meta.find(key);
    uint64_t v;
    if (it == meta.end() || StringRef(it->second).getAsInteger(16, v))
      return std::nullopt;
    return v;
  };
  stamp.hash = hexValue("source_hash");
  if (stamp.hash)
    stamp.identity = hexValue("source_identity");
  return stamp;
}

std::optional<uint64_t> mlir::moe::hf::readWeightsHash(StringRef path) {
  return readWeightsStamp(path).hash;
}
