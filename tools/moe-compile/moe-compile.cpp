//===- moe-compile.cpp - moe IR or a model dir to artifacts -----*- C++ -*-===//
//
//   moe-compile layer.mlir -o out-dir [--stop-after=<phase>]
//   moe-compile <model-dir> -o out-dir [-j N] [--stop-after=<phase> --layer N]
//               [--drop FILE] [--add-expert FILE]... [--cache-dir DIR]
//
// A .mlir file becomes one artifact (layer.so + manifest.json). A Hugging
// Face model directory (config.json + *.safetensors) becomes one artifact
// per distinct layer kernel under out-dir/kernels/<hash>/, the weights of
// each layer in the runtime's layout under out-dir/weights/, and
// out-dir/model.json; kernels and weights already present with the same
// content hash are reused, not rebuilt, so a model recompiled with a new
// expert in one layer (--add-expert) compiles that layer only. New weight
// files replace the old ones only once every kernel compiled, and
// model.json (written atomically) last, so a failed compile leaves the
// directory serving the model it held. With --cache-dir, kernels are
// compiled into DIR/kernels/<hash>/ once for every output directory (and
// moe-compile process) naming DIR, and hard-linked (else copied) into the
// output directory, which stays complete on its own. Phases (IREE-style, so a
// user can stop and look at the IR): input, decompose, linalg, bufferize,
// llvm-dialect, llvm-ir, object.
//
//===----------------------------------------------------------------------===//

#include "moe/Target/Artifact.h"
#include "moe/Target/HFImport.h"

#include "mlir/Support/FileUtilities.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/ThreadPool.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/xxhash.h"
#include "llvm/TargetParser/Host.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>

using namespace mlir;
namespace cl = llvm::cl;
using llvm::SmallString;
using llvm::StringRef;
using llvm::Twine;

static cl::opt<std::string> inputPath(cl::Positional,
                                      cl::desc("<input .mlir | model dir>"),
                                      cl::init("-"));
static cl::opt<std::string> outputDir("o", cl::desc("Output directory"),
                                      cl::value_desc("dir"), cl::init(""));
static cl::opt<std::string>
    target("target",
           cl::desc("cpu (the host), or cuda:sm_XX (XX >= 75): a cubin "
                    "for that chip plus host code on the runtime's CUDA "
                    "backend"),
           cl::init("cpu"));
static cl::opt<unsigned>
    jobs("j", cl::desc("Layers compiled in parallel (model directories; "
                       "default: one per core)"),
         cl::init(0));
static cl::opt<std::string> dropFile(
    "drop",
    cl::desc("With a model directory: remove the experts a moe-drop/1 file "
             "lists per layer (moe-analyze --rank C --keep N --drop-out F)"),
    cl::value_desc("file"), cl::init(""));
static cl::list<std::string> addExpertFiles(
    "add-expert",
    cl::desc("With a model directory: append one expert to each layer the "
             "safetensors file names (tensors layers.<i>.router, .gate, .up, "
             ".down, ...; docs/importer.md); repeatable, applied in order"),
    cl::value_desc("file"));
static cl::opt<std::string> mergeFile(
    "merge",
    cl::desc("With a model directory: merge the groups of experts a "
             "moe-merge/1 file lists per layer into their frequency-weighted "
             "mean (moe-analyze --merge-plan KIND --target M --merge-out F); "
             "applied after --drop and --add-expert"),
    cl::value_desc("file"), cl::init(""));
static cl::opt<std::string> pipelineOptions(
    "pipeline-options",
    cl::desc("Options of the target's pipeline (moe-to-llvm-cpu or "
             "moe-to-nvvm), e.g. \"expert-combine=gather\"; the chip comes "
             "from --target"),
    cl::value_desc("options"), cl::init(""));
static cl::opt<bool> rehash(
    "rehash",
    cl::desc("With a model directory: hash every source weight to decide "
             "what to reuse, instead of trusting unchanged source files "
             "(same path, size and modification time)"),
    cl::init(false));
static cl::opt<std::string> cacheDir(
    "cache-dir",
    cl::desc("With a model directory: compile kernels into and reuse them "
             "from <dir>/kernels/, shared by every output directory (and "
             "moe-compile run) that names it; the output directory gets "
             "hard links (else copies) and does not depend on <dir>"),
    cl::value_desc("dir"), cl::init(""));
static cl::opt<int> layerIndex(
    "layer",
    cl::desc("With a model directory and --stop-after: the layer to print "
             "(default: the first)"),
    cl::init(-1));

/// `--stop-after` is already registered by LLVM's codegen (for machine
/// passes); moe-compile takes it over for its own phases, whose names do not
/// clash with machine pass names.
static cl::opt<std::string> *getStopAfterOption() {
  auto &opts = cl::getRegisteredOptions();
  auto it = opts.find("stop-after");
  if (it == opts.end())
    return nullptr;
  auto *opt = static_cast<cl::opt<std::string> *>(it->second);
  opt->setDescription("Print the IR after this phase and stop: " +
                      moe::getStoppablePhaseList());
  opt->setValueStr("phase");
  return opt;
}

namespace {
int fail(const Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "moe-compile") << msg << "\n";
  return 1;
}

std::string hex(uint64_t v) { return llvm::utohexstr(v, true, 16); }

/// Gives `to` (a kernel directory of the output) the files of the complete
/// kernel directory `from` (in the --cache-dir): hard links where the file
/// system allows, else copies; the manifest last and by rename, so `to` is
/// complete once it has one, as a compiled directory is.
llvm::Error linkKernel(StringRef from, StringRef to) {
  namespace fs = llvm::sys::fs;
  if (std::error_code ec = fs::create_directories(to))
    return llvm::createStringError(ec, "cannot create '%s': %s",
                                   to.str().c_str(), ec.message().c_str());
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(from, ec), end; it != end && !ec;
       it.increment(ec))
    names.push_back(llvm::sys::path::filename(it->path()).str());
  if (ec)
    return llvm::createStringError(ec, "cannot list '%s': %s",
                                   from.str().c_str(), ec.message().c_str());
  // The manifest last.
  auto manifest = llvm::find(names, "manifest.json");
  if (manifest != names.end())
    std::rotate(manifest, manifest + 1, names.end());
  for (const std::string &name : names) {
    SmallString<256> src(from), dst(to), tmp;
    llvm::sys::path::append(src, name);
    llvm::sys::path::append(dst, name);
    tmp = dst;
    tmp += ".link";
    fs::remove(tmp);
    if (fs::create_hard_link(src, tmp) && (ec = fs::copy_file(src, tmp)))
      return llvm::createStringError(ec, "cannot copy '%s' to '%s': %s",
                                     src.c_str(), tmp.c_str(),
                                     ec.message().c_str());
    if ((ec = fs::rename(tmp, dst)))
      return llvm::createStringError(ec, "cannot rename '%s' to '%s': %s",
                                     tmp.c_str(), dst.c_str(),
                                     ec.message().c_str());
  }
  return llvm::Error::success();
}

/// Compiles `ir` into the cache's `<cacheRoot>/<hash>` through a private
/// directory renamed into place, so that moe-compile runs sharing the cache
/// never write into one directory: the first rename wins, and a run that
/// loses it drops its own copy (the same kernel).
llvm::Error compileIntoCache(StringRef ir, StringRef cacheRoot, StringRef hash,
                             const moe::ArtifactOptions &options) {
  namespace fs = llvm::sys::fs;
  // (Not fs::createUniqueDirectory: it puts a relative prefix under the
  // system's temporary directory, another file system than the cache's.)
  static std::atomic<unsigned> serial{0};
  SmallString<256> final(cacheRoot), tmp(cacheRoot);
  llvm::sys::path::append(final, hash);
  llvm::sys::path::append(tmp, llvm::formatv("{0}.tmp-{1}-{2}", hash,
                                             llvm::sys::Process::getProcessId(),
                                             serial++));
  if (std::error_code ec = fs::create_directory(tmp, /*IgnoreExisting=*/false))
    return llvm::createStringError(ec, "cannot create '%s': %s", tmp.c_str(),
                                   ec.message().c_str());
  if (llvm::Error err = moe::compileArtifact(ir, tmp, options)) {
    fs::remove_directories(tmp);
    return err;
  }
  if (fs::rename(tmp, final)) {
    // Another run renamed its copy first (or an incomplete directory from a
    // killed run is in the way: replace it).
    SmallString<256> manifest(final);
    llvm::sys::path::append(manifest, "manifest.json");
    if (!fs::exists(manifest)) {
      fs::remove_directories(final);
      if (std::error_code ec = fs::rename(tmp, final))
        return llvm::createStringError(ec, "cannot rename '%s' to '%s': %s",
                                       tmp.c_str(), final.c_str(),
                                       ec.message().c_str());
      return llvm::Error::success();
    }
    fs::remove_directories(tmp);
  }
  return llvm::Error::success();
}

/// "layers 12/32, elapsed 3.1 s, ETA 4.9 s" on one rewritten line of stderr,
/// only when stderr is a terminal.
class Progress {
public:
  Progress(size_t total)
      : total(total), start(std::chrono::steady_clock::now()),
        enabled(llvm::sys::Process::StandardErrIsDisplayed()) {}

  void update(size_t done, size_t compiled) {
    if (!enabled)
      return;
    double elapsed = seconds();
    std::string eta = "--";
    if (done > 0 && done < total)
      eta = llvm::formatv("{0:f1} s", elapsed / done * (total - done)).str();
    else if (done == total)
      eta = "0 s";
    llvm::errs() << llvm::formatv(
        "\r[moe-compile] layers {0}/{1}, kernels compiled {2}, elapsed "
        "{3:f1} s, ETA {4}   ",
        done, total, compiled, elapsed, eta);
    llvm::errs().flush();
  }
  void finish() {
    if (enabled)
      llvm::errs() << "\n";
  }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                         start)
        .count();
  }

private:
  size_t total;
  std::chrono::steady_clock::time_point start;
  bool enabled;
};

int compileFile(StringRef path, std::optional<moe::ArtifactPhase> stopAfter) {
  std::string errorMessage;
  auto file = openInputFile(path, &errorMessage);
  if (!file)
    return fail(errorMessage);
  moe::ArtifactOptions options;
  options.target = target;
    options.pipelineOptions = pipelineOptions;
  options.stopAfter = stopAfter;
  options.irOut = &llvm::outs();
  options.bufferName = path.str();
  if (auto err = moe::compileArtifact(file->getBuffer(), outputDir, options))
    return fail(llvm::toString(std::move(err)));
  if (!stopAfter) {
    SmallString<256> so(outputDir), manifest(outputDir);
    llvm::sys::path::append(so, "layer.so");
    llvm::sys::path::append(manifest, "manifest.json");
    llvm::outs() << "moe-compile: wrote " << so << " and " << manifest << "\n";
  }
  return 0;
}

/// Compiles a model directory: kernels (deduplicated, cached by content
/// hash) and per-layer weight files, in parallel, then model.json.
int compileModel(StringRef dir, std::optional<moe::ArtifactPhase> stopAfter) {
  auto start = std::chrono::steady_clock::now();
  std::optional<moe::hf::DropSpec> drop;
  if (!dropFile.empty()) {
    auto read = moe::hf::readDropFile(dropFile);
    if (!read)
      return fail(llvm::toString(read.takeError()));
    drop = std::move(*read);
  }
  std::optional<moe::hf::AddSpec> add;
  if (!addExpertFiles.empty()) {
    auto read = moe::hf::readAddFiles(addExpertFiles);
    if (!read)
      return fail(llvm::toString(read.takeError()));
    add = std::move(*read);
  }
  std::optional<moe::hf::MergeSpec> merge;
  if (!mergeFile.empty()) {
    auto read = moe::hf::readMergeFile(mergeFile);
    if (!read)
      return fail(llvm::toString(read.takeError()));
    merge = std::move(*read);
  }
  llvm::Expected<moe::hf::ModelPlan> planned = moe::hf::planModel(
      dir, drop ? &*drop : nullptr, add ? &*add : nullptr,
      merge ? &*merge : nullptr);
  if (!planned)
    return fail("'" + dir + "': " + llvm::toString(planned.takeError()));
  moe::hf::ModelPlan &model = *planned;
  if (model.layers.empty())
    return fail("'" + dir + "' has no layers");

  if (stopAfter) {
    const moe::hf::LayerPlan *layer = &model.layers.front();
    if (layerIndex >= 0) {
      auto it = llvm::find_if(model.layers, [](const moe::hf::LayerPlan &l) {
        return l.index == layerIndex;
      });
      if (it == model.layers.end())
        return fail("--layer " + Twine(layerIndex) + ": the model has layers 0.." +
                    Twine(model.layers.back().index));
      layer = &*it;
    }
    moe::ArtifactOptions options;
    options.target = target;
    options.pipelineOptions = pipelineOptions;
    options.stopAfter = stopAfter;
    options.irOut = &llvm::outs();
    options.bufferName = (dir + ":layer" + Twine(layer->index)).str();
    if (auto err = moe::compileArtifact(layer->ir, "", options))
      return fail(llvm::toString(std::move(err)));
    return 0;
  }

  // One kernel per distinct IR text (layers of one shape share it).
  // The key covers the compiler binary too (size and modification time), so
  // a rebuilt compiler never reuses kernels of an older one.
  std::string salt = (target + "\n" + pipelineOptions + "\n" +
                      moe::getCompilerVersion() + "\n")
                         .str();
  // CPU kernels are built for the host's CPU and its features (Artifact.cpp):
  // a cache shared by machines (--cache-dir or -o on a network disk) must
  // not hand one host's kernels to another.
  if (target == "cpu")
    salt += ("host " + llvm::sys::getHostCPUName() + " " +
             moe::getHostCPUFeatures() + "\n")
                .str();
  llvm::sys::fs::file_status self;
  std::string exe = llvm::sys::fs::getMainExecutable(
      nullptr, reinterpret_cast<void *>(&fail));
  if (!llvm::sys::fs::status(exe, self))
    salt += llvm::formatv("{0} {1}\n", self.getSize(),
                          self.getLastModificationTime().time_since_epoch().count())
                .str();
  std::vector<std::string> kernelOf(model.layers.size());
  std::map<std::string, const moe::hf::LayerPlan *> kernels;
  for (auto [i, layer] : llvm::enumerate(model.layers)) {
    kernelOf[i] = hex(llvm::xxh3_64bits(salt + layer.ir));
    kernels.emplace(kernelOf[i], &layer);
  }
  SmallString<256> kernelRoot(outputDir), weightRoot(outputDir), cacheRoot;
  llvm::sys::path::append(kernelRoot, "kernels");
  llvm::sys::path::append(weightRoot, "weights");
  if (!cacheDir.empty()) {
    cacheRoot = cacheDir;
    llvm::sys::path::append(cacheRoot, "kernels");
  }
  for (StringRef d : {kernelRoot.str(), weightRoot.str(), cacheRoot.str()})
    if (!d.empty())
      if (auto ec = llvm::sys::fs::create_directories(d))
        return fail("cannot create '" + d + "': " + ec.message());

  moe::initializeArtifactCompiler();
  std::mutex mutex;
  std::vector<std::string> errors;
  std::map<std::string, bool> kernelReady;
  std::vector<bool> weightsReady(model.layers.size(), false);
  std::vector<std::string> weightHash(model.layers.size());
  // Weights that changed are written next to their final name and renamed
  // into place only when everything compiled.
  std::vector<std::pair<std::string, std::string>> staged;
  size_t kernelsCompiled = 0, kernelsReused = 0, kernelsCached = 0,
         weightsWritten = 0, weightsReused = 0;
  Progress progress(model.layers.size());
  // Called with `mutex` held after each task.
  auto report = [&] {
    size_t done = 0;
    for (auto [i, k] : llvm::enumerate(kernelOf))
      done += weightsReady[i] && kernelReady[k];
    progress.update(done, kernelsCompiled);
  };

  unsigned threads = jobs ? unsigned(jobs) : 0;
  llvm::DefaultThreadPool pool(threads ? llvm::hardware_concurrency(threads)
                                       : llvm::hardware_concurrency());
  // A kernel directory with a manifest is complete (it is written last).
  auto complete = [](StringRef root, StringRef hash) {
    SmallString<256> manifest(root);
    llvm::sys::path::append(manifest, hash, "manifest.json");
    return llvm::sys::fs::exists(manifest);
  };
  for (auto &[hash, layer] : kernels) {
    kernelReady[hash] = complete(kernelRoot, hash);
    kernelsReused += kernelReady[hash];
  }
  for (auto &[hash, layer] : kernels) {
    if (kernelReady[hash])
      continue;
    SmallString<256> kdir(kernelRoot);
    llvm::sys::path::append(kdir, hash);
    pool.async([&, hash = hash, layer = layer, kdir = std::string(kdir)] {
      moe::ArtifactOptions options;
      options.target = target;
      options.pipelineOptions = pipelineOptions;
      options.mlirThreading = false;
      options.bufferName =
          (dir + ":layer" + Twine(layer->index) + " (generated)").str();
      bool cached = !cacheRoot.empty() && complete(cacheRoot, hash);
      llvm::Error err = llvm::Error::success();
      if (cacheRoot.empty()) {
        err = moe::compileArtifact(layer->ir, kdir, options);
      } else {
        SmallString<256> cdir(cacheRoot);
        llvm::sys::path::append(cdir, hash);
        if (!cached)
          err = compileIntoCache(layer->ir, cacheRoot, hash, options);
        if (!err)
          err = linkKernel(cdir, kdir);
      }
      std::lock_guard<std::mutex> lock(mutex);
      if (err)
        errors.push_back("layer " + std::to_string(layer->index) + ": " +
                         llvm::toString(std::move(err)));
      else
        ++(cached ? kernelsCached : kernelsCompiled);
      kernelReady[hash] = true;
      report();
    });
  }
  for (auto [i, layer] : llvm::enumerate(model.layers)) {
    pool.async([&, i = i, layer = &layer] {
      SmallString<256> path(weightRoot);
      llvm::sys::path::append(path,
                              "layer_" + Twine(layer->index) + ".safetensors");
      // A weights file written from sources of the same identity (paths,
      // sizes, mtimes, layout) is reused without reading the sources;
      // otherwise the content hash decides (--rehash: always).
      uint64_t id = moe::hf::identifyWeights(*layer);
      moe::hf::WeightsStamp stamp = moe::hf::readWeightsStamp(path);
      bool trusted = !rehash && stamp.hash && stamp.identity == id;
      uint64_t h = trusted ? *stamp.hash : moe::hf::hashWeights(*layer);
      bool reuse = stamp.hash == h;
      std::string next = (path + ".next").str();
      llvm::Error err = reuse ? llvm::Error::success()
                              : moe::hf::writeWeights(*layer, next, h, id);
      std::lock_guard<std::mutex> lock(mutex);
      if (!reuse && !err)
        staged.push_back({next, std::string(path)});
      weightHash[i] = hex(h);
      if (err)
        errors.push_back("layer " + std::to_string(layer->index) + ": " +
                         llvm::toString(std::move(err)));
      else
        ++(reuse ? weightsReused : weightsWritten);
      weightsReady[i] = true;
      report();
    });
  }
  pool.wait();
  progress.finish();
  if (errors.empty())
    for (const auto &[from, to] : staged)
      if (auto ec = llvm::sys::fs::rename(from, to))
        errors.push_back("cannot rename '" + from + "' to '" + to +
                         "': " + ec.message());
  if (!errors.empty()) {
    for (const auto &[from, to] : staged)
      llvm::sys::fs::remove(from);
    for (const std::string &e : errors)
      fail(e);
    return 1;
  }

  llvm::json::Array layers;
  size_t numMoE = 0;
  for (auto [i, layer] : llvm::enumerate(model.layers)) {
    numMoE += layer.kind == "moe";
    layers.push_back(llvm::json::Object{
        {"index", layer.index},
        {"kind", layer.kind},
        {"entry", layer.entry},
        {"kernel", "kernels/" + kernelOf[i]},
        {"weights",
         "weights/layer_" + std::to_string(layer.index) + ".safetensors"},
        {"weights_hash", weightHash[i]},
        {"content_hash",
         hex(llvm::xxh3_64bits(kernelOf[i] + ":" + weightHash[i]))}});
  }
  // What it was compiled from, as absolute paths: a server adding an expert
  // later (moe::rt::LiveModel) recompiles from the same inputs plus its
  // add file.
  auto absolute = [](StringRef p) {
    SmallString<256> abs(p);
    llvm::sys::fs::make_absolute(abs);
    llvm::sys::path::remove_dots(abs, true);
    return std::string(abs);
  };
  llvm::json::Object from{{"source", absolute(dir)}};
  if (!dropFile.empty())
    from["drop"] = absolute(dropFile);
  if (!mergeFile.empty())
    from["merge"] = absolute(mergeFile);
  llvm::json::Array adds;
  for (const std::string &f : addExpertFiles)
    adds.push_back(absolute(f));
  from["add_expert"] = std::move(adds);
  llvm::json::Object manifest{
      {"format", "moe-model/1"},
      {"compiled_from", std::move(from)},
      {"model_type", model.modelType},
      {"target", target},
      {"hidden_size", model.hiddenSize},
      {"dtype", moe::hf::getElemTypeName(model.dtype)},
      {"layers", std::move(layers)}};
  SmallString<256> path(outputDir);
  llvm::sys::path::append(path, "model.json");
  if (auto err = moe::writeJSONFile(path, std::move(manifest)))
    return fail(llvm::toString(std::move(err)));

  double secs = std::chrono::duration<double>(
                    std::chrono::steady_clock::now() - start)
                    .count();
  std::string fromCache =
      cacheRoot.empty()
          ? ""
          : llvm::formatv(", {0} from the cache", kernelsCached).str();
  llvm::outs() << llvm::formatv(
      "moe-compile: {0}: {1} layers ({2} moe, {3} dense); kernels: {4} "
      "compiled, {5} reused{6}; weights: {7} written, {8} reused; {9:f2} s; "
      "wrote {10}\n",
      model.modelType, model.layers.size(), numMoE,
      model.layers.size() - numMoE, kernelsCompiled, kernelsReused, fromCache,
      weightsWritten, weightsReused, secs, path);
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM y(argc, argv);
  cl::opt<std::string> *stopAfterOpt = getStopAfterOption();
  cl::ParseCommandLineOptions(
      argc, argv,
      "moe-compile: moe IR or a Hugging Face model directory to loadable "
      "artifacts\n");
  std::string stopAfterName = stopAfterOpt ? stopAfterOpt->getValue() : "";
  // LLVM's codegen must not see our phase name.
  if (stopAfterOpt)
    stopAfterOpt->setValue("");
  if (auto chip = moe::parseArtifactTarget(target); !chip)
    return fail(llvm::toString(chip.takeError()));
  std::optional<moe::ArtifactPhase> stopAfter;
  if (!stopAfterName.empty()) {
    stopAfter = moe::parseArtifactPhase(stopAfterName);
    if (!stopAfter || *stopAfter == moe::ArtifactPhase::Object)
      return fail("unknown phase '" + Twine(stopAfterName) +
                  "' for --stop-after (" + moe::getStoppablePhaseList() + ")");
  }
  if (!stopAfter && outputDir.empty())
    return fail("no output directory: pass -o <dir> (or --stop-after)");

  if (llvm::sys::fs::is_directory(inputPath)) {
    if (!moe::hf::isModelDirectory(inputPath))
      return fail("'" + inputPath +
                  "' is a directory without config.json: expected a .mlir "
                  "file or a Hugging Face model directory");
    return compileModel(inputPath, stopAfter);
  }
  if (!dropFile.empty() || !addExpertFiles.empty() || !mergeFile.empty())
    return fail("--drop, --add-expert and --merge apply to model "
                "directories; on an .mlir file use moe-opt "
                "--moe-drop-experts, --moe-add-expert or --moe-merge-experts");
  if (!cacheDir.empty())
    return fail("--cache-dir applies to model directories (an .mlir file "
                "is one artifact, compiled into -o)");
  return compileFile(inputPath, stopAfter);
}
