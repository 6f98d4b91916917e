//===- LiveModel.cpp - a compiled model whose layers change live ----------===//
//
// The serving table is one shared_ptr read with std::atomic_load: readers
// never take a lock and never see half an update. Writers (prepare is
// read-only; commit and addExpert) are serialized by a mutex, and commit
// refuses an update prepared against a table that is no longer serving.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/LiveModel.h"

#include <chrono>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

using namespace moe::rt;

namespace {
double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

/// The last non-empty line of `text`.
std::string lastLine(const std::string &text) {
  size_t end = text.find_last_not_of("\r\n \t");
  if (end == std::string::npos)
    return "";
  size_t begin = text.rfind('\n', end);
  return text.substr(begin == std::string::npos ? 0 : begin + 1,
                     end + 1 - (begin == std::string::npos ? 0 : begin + 1));
}
} // namespace

const ModelLayer *LiveModel::Layers::find(int64_t index) const {
  for (const auto &l : layers)
    if (l->index == index)
      return l.get();
  return nullptr;
}

Status LiveModel::Layers::run(int64_t index, const TensorView &input,
                              TensorView &output, unsigned threads) const {
  const ModelLayer *l = find(index);
  if (!l)
    return Status::error("the model has no layer " + std::to_string(index));
  return runModelLayer(*l, input, output, threads);
}

Result<std::shared_ptr<LiveModel>> LiveModel::load(const std::string &dir) {
  auto manifest = readModelManifest(dir);
  if (!manifest)
    return Status::error(manifest.message());
  ModelManifest &mf = manifest.value();
  std::shared_ptr<LiveModel> m(new LiveModel());
  m->modelType_ = mf.modelType;
  m->target_ = mf.target;
  m->hidden_ = mf.hidden;
  m->dtype_ = mf.dtype;
  m->source_ = mf.source;
  m->dropFile_ = mf.dropFile;
  m->mergeFile_ = mf.mergeFile;
  m->added_ = mf.addFiles;
  auto table = std::make_shared<Layers>();
  table->dir = dir;
  std::map<std::string, std::shared_ptr<Artifact>> kernels;
  for (ModelLayer &layer : mf.layers) {
    if (Status s = loadModelLayer(layer, kernels); !s)
      return s;
    table->layers.push_back(std::make_shared<const ModelLayer>(std::move(layer)));
  }
  m->current_ = std::move(table);
  return m;
}

Status LiveModel::runLayer(int64_t index, const TensorView &input,
                           TensorView &output, uint64_t *version,
                           unsigned threads) const {
  // The table (and so its kernels and weights) lives until this returns.
  std::shared_ptr<const Layers> table = snapshot();
  if (version)
    *version = table->version;
  return table->run(index, input, output, threads);
}

Result<LiveModel::Update> LiveModel::prepare(const std::string &dir) const {
  auto manifest = readModelManifest(dir);
  if (!manifest)
    return Status::error(manifest.message());
  ModelManifest &mf = manifest.value();
  Update u;
  u.base = snapshot();
  const Layers &base = *u.base;
  std::string what = "'" + mf.path + "' is not the serving model: ";
  if (mf.hidden != hidden_ || mf.dtype != dtype_ || mf.target != target_)
    return Status::error(
        what + "hidden size " + std::to_string(mf.hidden) + ", " +
        dtypeName(mf.dtype) + ", target " + mf.target + " (serving: " +
        std::to_string(hidden_) + ", " + dtypeName(dtype_) + ", " + target_ +
        ")");
  if (mf.layers.size() != base.layers.size())
    return Status::error(what + std::to_string(mf.layers.size()) +
                         " layers (serving: " +
                         std::to_string(base.layers.size()) + ")");
  // Kernels the serving layers have loaded are shared, not loaded again.
  std::map<std::string, std::shared_ptr<Artifact>> kernels;
  for (const auto &l : base.layers)
    kernels[l->kernelDir] = l->artifact;
  u.next = std::make_shared<Layers>();
  u.next->dir = dir;
  u.next->version = base.version + 1;
  for (size_t i = 0; i < mf.layers.size(); ++i) {
    ModelLayer &layer = mf.layers[i];
    const std::shared_ptr<const ModelLayer> &old = base.layers[i];
    if (layer.index != old->index || layer.kind != old->kind ||
        layer.entry != old->entry)
      return Status::error(what + "its layer #" + std::to_string(i) +
                           " is layer " + std::to_string(layer.index) + " (" +
                           layer.kind + "), serving: layer " +
                           std::to_string(old->index) + " (" + old->kind + ")");
    if (!layer.contentHash.empty() && layer.contentHash == old->contentHash) {
      u.next->layers.push_back(old);
      continue;
    }
    if (Status s = loadModelLayer(layer, kernels); !s)
      return Status::error("'" + mf.path + "': " + s.message());
    u.changed.push_back(layer.index);
    u.next->layers.push_back(
        std::make_shared<const ModelLayer>(std::move(layer)));
  }
  return u;
}

Status LiveModel::commit(const Update &update) {
  std::lock_guard<std::mutex> lock(updateMutex_);
  if (!update.next)
    return Status::error("empty update");
  // Only this function stores current_, under the mutex.
  if (snapshot() != update.base)
    return Status::error("the model changed after this update was prepared "
                         "(another update was committed): prepare it again");
  std::atomic_store(&current_,
                    std::shared_ptr<const Layers>(update.next));
  return Status::ok();
}

Result<LiveModel::AddReport> LiveModel::addExpert(const AddOptions &options) {
  std::unique_lock<std::mutex> lock(updateMutex_);
  AddReport report;
  std::string source = options.source.empty() ? source_ : options.source;
  if (options.compiler.empty() || source.empty() || options.files.empty())
    return Status::error("add expert: needs the compiler, the checkpoint "
                         "directory (model.json records none) and at least "
                         "one add file");
  std::shared_ptr<const Layers> base = snapshot();
  std::string out = options.outDir.empty() ? base->dir : options.outDir;

  std::vector<std::string> argv{options.compiler, source};
  if (!dropFile_.empty())
    argv.push_back("--drop=" + dropFile_);
  if (!mergeFile_.empty())
    argv.push_back("--merge=" + mergeFile_);
  std::vector<std::string> files = added_;
  files.insert(files.end(), options.files.begin(), options.files.end());
  for (const std::string &f : files) {
    argv.push_back("--add-expert");
    argv.push_back(f);
  }
  argv.push_back("--target=" + (target_.empty() ? std::string("cpu") : target_));
  argv.push_back("-o");
  argv.push_back(out);
  argv.insert(argv.end(), options.compilerArgs.begin(),
              options.compilerArgs.end());
  auto t0 = std::chrono::steady_clock::now();
  std::string output;
  int rc = runProcess(argv, output);
  report.compileSeconds = secondsSince(t0);
  if (rc != 0) {
    std::string why = lastLine(output);
    return Status::error(
        "add expert: " +
        (rc < 0 ? why
                : "the compiler failed (exit " + std::to_string(rc) + "): " +
                      (why.empty() ? std::string("no output") : why)) +
        "; the model serving is unchanged");
  }
  report.compilerSummary = lastLine(output);

  t0 = std::chrono::steady_clock::now();
  auto update = prepare(out);
  if (!update)
    return Status::error("add expert: " + update.message() +
                         "; the model serving is unchanged");
  report.loadSeconds = secondsSince(t0);
  if (options.beforeSwap)
    if (Status s = options.beforeSwap(*update.value().next); !s)
      return Status::error("add expert: " + s.message() +
                           "; the model serving is unchanged");

  t0 = std::chrono::steady_clock::now();
  // commit() takes the mutex itself; we hold it, so store here.
  if (snapshot() != update.value().base)
    return Status::error("add expert: the model changed during the add");
  std::atomic_store(&current_,
                    std::shared_ptr<const Layers>(update.value().next));
  report.swapSeconds = secondsSince(t0);
  report.changed = update.value().changed;
  report.version = update.value().next->version;
  source_ = source;
  added_ = files;
  return report;
}

int moe::rt::runProcess(const std::vector<std::string> &argv,
                        std::string &output) {
  output.clear();
  if (argv.empty()) {
    output = "no command";
    return -1;
  }
  // Close-on-exec, so that processes other threads start do not inherit
  // the write end (the read below would never see its end).
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    output = std::string("cannot create a pipe: ") + std::strerror(errno);
    return -1;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  std::vector<char *> args;
  for (const std::string &a : argv)
    args.push_back(const_cast<char *>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int err = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(),
                         environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    output = "cannot run '" + argv[0] + "': " + std::strerror(err);
    return -1;
  }
  char buf[4096];
  for (;;) {
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0)
      output.append(buf, size_t(n));
    else if (n == 0 || errno != EINTR)
      break;
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      output += std::string("\nwaitpid: ") + std::strerror(errno);
      return -1;
    }
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return -1;
}
