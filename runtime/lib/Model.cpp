//===- Model.cpp - load and run a compiled model directory ----------------===//

#include "moe/Runtime/Model.h"

#include "Json.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

using namespace moe::rt;

namespace {
std::string shapeText(const std::vector<int64_t> &s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i)
    out += (i ? "x" : "") + std::to_string(s[i]);
  return out + "]";
}

const char *safetensorsName(DType t) {
  switch (t) {
  case DType::f32: return "F32";
  case DType::f16: return "F16";
  case DType::bf16: return "BF16";
  case DType::i32: return "I32";
  case DType::i64: return "I64";
  }
  return "?";
}

/// A member `key` of kind `kind`, or nullptr.
const json::Value *member(const json::Value &v, const char *key,
                          json::Value::Kind kind) {
  const json::Value *m = v.get(key);
  return m && m->kind == kind ? m : nullptr;
}
} // namespace

Result<ModelManifest> moe::rt::readModelManifest(const std::string &dir) {
  std::string path = dir + "/model.json";
  std::ifstream in(path);
  if (!in)
    return Status::error("cannot open '" + path +
                         "': not a model compiled by moe-compile");
  std::stringstream ss;
  ss << in.rdbuf();
  json::Value root;
  std::string err;
  if (!json::parse(ss.str(), root, err))
    return Status::error("corrupt model manifest '" + path + "': " + err);
  const json::Value *fmt = member(root, "format", json::Value::String),
                    *layers = member(root, "layers", json::Value::Array),
                    *hidden = member(root, "hidden_size", json::Value::Number),
                    *dtype = member(root, "dtype", json::Value::String);
  if (!fmt || fmt->str != "moe-model/1" || !layers || !hidden || !dtype)
    return Status::error("corrupt model manifest '" + path +
                         "': needs format \"moe-model/1\", layers, "
                         "hidden_size, dtype");
  ModelManifest m;
  m.dir = dir;
  m.path = path;
  if (const json::Value *t = member(root, "model_type", json::Value::String))
    m.modelType = t->str;
  if (const json::Value *t = member(root, "target", json::Value::String))
    m.target = t->str;
  if (!json::asInteger(*hidden, 1, int64_t(1) << 40, m.hidden))
    return Status::error("corrupt model manifest '" + path +
                         "': hidden_size is not a positive integer");
  auto dt = parseDType(dtype->str);
  if (!dt)
    return Status::error("corrupt model manifest '" + path +
                         "': unknown dtype '" + dtype->str + "'");
  m.dtype = *dt;
  if (const json::Value *from =
          member(root, "compiled_from", json::Value::Object)) {
    if (const json::Value *v = member(*from, "source", json::Value::String))
      m.source = v->str;
    if (const json::Value *v = member(*from, "drop", json::Value::String))
      m.dropFile = v->str;
    if (const json::Value *v = member(*from, "merge", json::Value::String))
      m.mergeFile = v->str;
    if (const json::Value *v = member(*from, "add_expert", json::Value::Array))
      for (const json::Value &f : v->arr)
        if (f.kind == json::Value::String)
          m.addFiles.push_back(f.str);
  }
  for (size_t i = 0; i < layers->arr.size(); ++i) {
    const json::Value &l = layers->arr[i];
    std::string where = path + ": layer #" + std::to_string(i);
    const json::Value *index = member(l, "index", json::Value::Number),
                      *kind = member(l, "kind", json::Value::String),
                      *entry = member(l, "entry", json::Value::String),
                      *kernel = member(l, "kernel", json::Value::String),
                      *weights = member(l, "weights", json::Value::String);
    if (!index || !kind || !entry || !kernel || !weights)
      return Status::error("corrupt model manifest " + where +
                           ": needs index, kind, entry, kernel, weights");
    ModelLayer layer;
    if (!json::asInteger(*index, 0, int64_t(1) << 31, layer.index))
      return Status::error("corrupt model manifest " + where +
                           ": index is not a layer number");
    layer.kind = kind->str;
    layer.entry = entry->str;
    layer.kernelDir = dir + "/" + kernel->str;
    layer.weightsPath = dir + "/" + weights->str;
    if (const json::Value *h = member(l, "content_hash", json::Value::String))
      layer.contentHash = h->str;
    if (const json::Value *h = member(l, "weights_hash", json::Value::String))
      layer.weightsHash = h->str;
    m.layers.push_back(std::move(layer));
  }
  return m;
}

namespace {
/// The entry's arguments: `input`, and views of the (loaded, checked)
/// weights mapping for the others. The compiled code only reads its
/// inputs: the read-only mapping is passed as is.
std::vector<TensorView> weightViews(const ModelLayer &l,
                                    const TensorView &input) {
  std::vector<TensorView> in;
  for (const TensorSpec &a : l.spec().args) {
    if (a.name == "input") {
      in.push_back(input);
      continue;
    }
    const SafeTensor *t = l.weights->find(a.name);
    in.push_back(TensorView{const_cast<unsigned char *>(t->data), a.dtype,
                            a.shape});
  }
  return in;
}
} // namespace

Status moe::rt::loadModelLayer(
    ModelLayer &layer,
    std::map<std::string, std::shared_ptr<Artifact>> &kernels) {
  std::string where = "layer " + std::to_string(layer.index);
  std::shared_ptr<Artifact> art = kernels[layer.kernelDir];
  if (!art) {
    auto loaded = Artifact::load(layer.kernelDir);
    if (!loaded) {
      kernels.erase(layer.kernelDir);
      return Status::error(where + ": " + loaded.message());
    }
    art = kernels[layer.kernelDir] = loaded.value();
  }
  const EntrySpec *spec = art->find(layer.entry);
  if (!spec)
    return Status::error(where + ": kernel '" + layer.kernelDir +
                         "' has no entry '" + layer.entry + "'");
  auto st = SafeTensorsFile::open(layer.weightsPath);
  if (!st)
    return Status::error(where + ": " + st.message());
  std::shared_ptr<SafeTensorsFile> weights = st.value();
  // A weights file of another compile (one replaced after this model.json
  // was written) must not be bound to this kernel.
  if (!layer.weightsHash.empty()) {
    auto it = weights->metadata().find("source_hash");
    std::string got = it == weights->metadata().end() ? "" : it->second;
    if (got.empty() || std::strtoull(got.c_str(), nullptr, 16) !=
                           std::strtoull(layer.weightsHash.c_str(), nullptr, 16))
      return Status::error(where + ": weights file '" + layer.weightsPath +
                           "' has source hash '" + got +
                           "', model.json expects '" + layer.weightsHash +
                           "' (recompile the model)");
  }
  // Every argument but the input must be in the weights file, exactly.
  for (const TensorSpec &a : spec->args) {
    if (a.name == "input")
      continue;
    const SafeTensor *t = weights->find(a.name);
    if (!t)
      return Status::error(where + ": weights file '" + layer.weightsPath +
                           "' has no tensor '" + a.name + "'");
    if (t->shape != a.shape || t->dtype != safetensorsName(a.dtype))
      return Status::error(where + ": tensor '" + a.name + "' in '" +
                           layer.weightsPath + "' is " + t->dtype + " " +
                           shapeText(t->shape) + ", the kernel expects " +
                           safetensorsName(a.dtype) + " " + shapeText(a.shape));
  }
  layer.artifact = art;
  layer.weights = weights;
  // On a GPU the weights go to the device once, here, not on every call;
  // on every target the derived weights (a projected router) are computed
  // once, here.
  auto r = art->makeResident(layer.entry, weightViews(layer, TensorView{}));
  if (!r)
    return Status::error(where + ": uploading the weights: " + r.message());
  layer.resident = r.value();
  return Status::ok();
}

Result<std::shared_ptr<Model>> Model::load(const std::string &dir) {
  auto manifest = readModelManifest(dir);
  if (!manifest)
    return Status::error(manifest.message());
  ModelManifest &mf = manifest.value();
  std::shared_ptr<Model> m(new Model());
  m->dir_ = dir;
  m->modelType_ = mf.modelType;
  m->target_ = mf.target;
  m->hidden_ = mf.hidden;
  m->dtype_ = mf.dtype;
  std::map<std::string, std::shared_ptr<Artifact>> kernels;
  for (ModelLayer &layer : mf.layers)
    if (Status s = loadModelLayer(layer, kernels); !s)
      return s;
  m->layers_ = std::move(mf.layers);
  return m;
}

const ModelLayer *Model::layer(int64_t index) const {
  for (const ModelLayer &l : layers_)
    if (l.index == index)
      return &l;
  return nullptr;
}

Status moe::rt::runModelLayer(const ModelLayer &l, const TensorView &input,
                             TensorView &output, unsigned threads) {
  std::vector<TensorView> in = weightViews(l, input);
  std::vector<TensorView> out{output};
  Status s = threads > 1
                 ? l.artifact->runThreaded(l.entry, in, out, threads, 16,
                                           nullptr, Artifact::ThreadSplit::Auto,
                                           l.resident.get())
                 : l.artifact->run(l.entry, in, out, l.resident.get());
  output = out[0];
  return s;
}

Status Model::runLayer(int64_t index, const TensorView &input,
                       TensorView &output, unsigned threads) const {
  const ModelLayer *l = layer(index);
  if (!l)
    return Status::error("the model has no layer " + std::to_string(index));
  return runModelLayer(*l, input, output, threads);
}
