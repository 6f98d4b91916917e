//===- AsyncRuntimeTest.cpp - the mlirAsyncRuntime* C API -------*- C++ -*-===//
//
// Drives libmoe_runtime's implementation of MLIR's async runtime API
// (runtime/lib/AsyncRuntime.cpp) the way the code of async-parallel-for
// and async-to-async-runtime does, with plain functions standing in for
// coroutine resumptions:
//
//   inline     one worker: Execute runs the task before returning;
//   parallel   many tasks per group on N workers, awaited with
//              AwaitAllInGroup; every task ran once, the workers used;
//   nested     tasks that run a parallel loop of their own and block on it
//              (the helping wait), with fewer pool threads than tasks;
//   callbacks  Await{Token,Value,AllInGroup}AndExecute before and after the
//              object is ready; values carry their storage;
//   errors     a task's token set to error makes its group an error;
//   drain      waitForRunningTasks (before an artifact is unloaded) waits
//              for a task that is still running after emplacing its token.
//
// Each prints one line and "ok" or the first mismatch; exit status 1 on any
// failure. The objects' reference counts follow the contract (a token or
// value starts with 2, its producer's dropped by Emplace); ASan checks
// that every object is freed once (scripts/test.sh --sanitize).
//
//   moe-async-runtime-test [--threads N] [--rounds R]
//
//===----------------------------------------------------------------------===//

#include "../lib/AsyncRuntime.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern "C" {
struct AsyncToken;
struct AsyncValue;
struct AsyncGroup;
using Resume = void (*)(void *);
void mlirAsyncRuntimeAddRef(void *, int64_t);
void mlirAsyncRuntimeDropRef(void *, int64_t);
AsyncToken *mlirAsyncRuntimeCreateToken();
AsyncValue *mlirAsyncRuntimeCreateValue(int64_t);
AsyncGroup *mlirAsyncRuntimeCreateGroup(int64_t);
int64_t mlirAsyncRuntimeAddTokenToGroup(AsyncToken *, AsyncGroup *);
void mlirAsyncRuntimeEmplaceToken(AsyncToken *);
void mlirAsyncRuntimeEmplaceValue(AsyncValue *);
void mlirAsyncRuntimeSetTokenError(AsyncToken *);
bool mlirAsyncRuntimeIsTokenError(AsyncToken *);
bool mlirAsyncRuntimeIsValueError(AsyncValue *);
bool mlirAsyncRuntimeIsGroupError(AsyncGroup *);
void mlirAsyncRuntimeAwaitToken(AsyncToken *);
void mlirAsyncRuntimeAwaitValue(AsyncValue *);
void mlirAsyncRuntimeAwaitAllInGroup(AsyncGroup *);
std::byte *mlirAsyncRuntimeGetValueStorage(AsyncValue *);
void mlirAsyncRuntimeExecute(void *, Resume);
void mlirAsyncRuntimeAwaitTokenAndExecute(AsyncToken *, void *, Resume);
void mlirAsyncRuntimeAwaitValueAndExecute(AsyncValue *, void *, Resume);
void mlirAsyncRuntimeAwaitAllInGroupAndExecute(AsyncGroup *, void *, Resume);
int64_t mlirAsyncRuntimGetNumWorkerThreads();
}

using moe::rt::detail::ScopedWorkers;

namespace {

int failures = 0;

void report(const char *name, const std::string &error) {
  if (error.empty()) {
    std::printf("%s: ok\n", name);
  } else {
    std::printf("%s: FAIL: %s\n", name, error.c_str());
    ++failures;
  }
}

/// One task of a parallel loop: marks its iteration and the thread it ran
/// on, then emplaces its token (dropping the producer's reference).
struct Task {
  std::atomic<int> *runs = nullptr;
  std::mutex *mu = nullptr;
  std::set<std::thread::id> *threads = nullptr;
  AsyncToken *token = nullptr;
  bool fail = false;
  int spinMicros = 0;
};

void runTask(void *p) {
  auto *t = static_cast<Task *>(p);
  if (t->spinMicros) {
    auto until = std::chrono::steady_clock::now() +
                 std::chrono::microseconds(t->spinMicros);
    while (std::chrono::steady_clock::now() < until) {
    }
  }
  t->runs->fetch_add(1);
  if (t->threads) {
    std::lock_guard<std::mutex> lock(*t->mu);
    t->threads->insert(std::this_thread::get_id());
  }
  if (t->fail)
    mlirAsyncRuntimeSetTokenError(t->token);
  else
    mlirAsyncRuntimeEmplaceToken(t->token);
}

/// A parallel loop as async-parallel-for emits it: a group of n tokens,
/// each task executed, the group awaited. Returns the group's error flag.
bool parallelLoop(std::vector<Task> &tasks, std::vector<std::atomic<int>> &runs,
                  int failAt = -1, std::set<std::thread::id> *threads = nullptr,
                  std::mutex *mu = nullptr, int spinMicros = 0) {
  int n = static_cast<int>(tasks.size());
  AsyncGroup *group = mlirAsyncRuntimeCreateGroup(n);
  for (int i = 0; i < n; ++i) {
    AsyncToken *token = mlirAsyncRuntimeCreateToken();
    tasks[i] = Task{&runs[i], mu, threads, token, i == failAt, spinMicros};
    mlirAsyncRuntimeAddTokenToGroup(token, group);
    mlirAsyncRuntimeExecute(&tasks[i], runTask);
    mlirAsyncRuntimeDropRef(token, 1); // the caller's reference
  }
  mlirAsyncRuntimeAwaitAllInGroup(group);
  bool error = mlirAsyncRuntimeIsGroupError(group);
  mlirAsyncRuntimeDropRef(group, 1);
  return error;
}

std::string checkRuns(std::vector<std::atomic<int>> &runs, int round) {
  for (size_t i = 0; i < runs.size(); ++i)
    if (runs[i].load() != 1)
      return "round " + std::to_string(round) + ": task " + std::to_string(i) +
             " ran " + std::to_string(runs[i].load()) + " times";
  return "";
}

std::string testInline() {
  if (mlirAsyncRuntimGetNumWorkerThreads() != 1)
    return "default worker count " +
           std::to_string(mlirAsyncRuntimGetNumWorkerThreads()) + ", not 1";
  std::atomic<int> run{0};
  AsyncToken *token = mlirAsyncRuntimeCreateToken();
  Task task{&run, nullptr, nullptr, token};
  mlirAsyncRuntimeExecute(&task, runTask);
  // Inline: done before Execute returned, on this thread.
  if (run.load() != 1)
    return "Execute with one worker did not run the task inline";
  mlirAsyncRuntimeAwaitToken(token);
  bool error = mlirAsyncRuntimeIsTokenError(token);
  mlirAsyncRuntimeDropRef(token, 1);
  return error ? "token in error" : "";
}

std::string testParallel(unsigned threads, int rounds) {
  ScopedWorkers workers(threads);
  if (mlirAsyncRuntimGetNumWorkerThreads() != int64_t(threads))
    return "worker count " +
           std::to_string(mlirAsyncRuntimGetNumWorkerThreads()) + ", not " +
           std::to_string(threads);
  std::set<std::thread::id> used;
  std::mutex mu;
  for (int r = 0; r < rounds; ++r) {
    int n = 1 + (r * 37) % 97;
    std::vector<Task> tasks(n);
    std::vector<std::atomic<int>> runs(n);
    // Tasks long enough (~50 us) that the pool's threads take some of them.
    if (parallelLoop(tasks, runs, -1, &used, &mu, r % 8 == 0 ? 50 : 0))
      return "round " + std::to_string(r) + ": group in error";
    if (std::string e = checkRuns(runs, r); !e.empty())
      return e;
  }
  if (threads > 1 && used.size() < 2)
    return "all tasks ran on one thread";
  return "";
}

/// Tasks that run a parallel loop of their own, blocking on it.
struct Outer {
  std::atomic<int> *runs;
  AsyncToken *token;
  std::atomic<int> *innerMisses;
};

void runOuter(void *p) {
  auto *o = static_cast<Outer *>(p);
  std::vector<Task> tasks(16);
  std::vector<std::atomic<int>> runs(16);
  parallelLoop(tasks, runs);
  if (!checkRuns(runs, 0).empty())
    o->innerMisses->fetch_add(1);
  o->runs->fetch_add(1);
  mlirAsyncRuntimeEmplaceToken(o->token);
}

std::string testNested(int rounds) {
  // 3 workers (2 pool threads at least) for 8 outer tasks that each block.
  ScopedWorkers workers(3);
  std::atomic<int> misses{0};
  for (int r = 0; r < rounds; ++r) {
    int n = 8;
    std::vector<Outer> outer(n);
    std::vector<std::atomic<int>> runs(n);
    AsyncGroup *group = mlirAsyncRuntimeCreateGroup(n);
    for (int i = 0; i < n; ++i) {
      outer[i] = Outer{&runs[i], mlirAsyncRuntimeCreateToken(), &misses};
      mlirAsyncRuntimeAddTokenToGroup(outer[i].token, group);
      mlirAsyncRuntimeExecute(&outer[i], runOuter);
      mlirAsyncRuntimeDropRef(outer[i].token, 1);
    }
    mlirAsyncRuntimeAwaitAllInGroup(group);
    mlirAsyncRuntimeDropRef(group, 1);
    if (std::string e = checkRuns(runs, r); !e.empty())
      return "outer " + e;
  }
  return misses.load() ? std::to_string(misses.load()) +
                             " inner loops missed a task"
                       : "";
}

void bump(void *p) { static_cast<std::atomic<int> *>(p)->fetch_add(1); }

std::string testCallbacks() {
  ScopedWorkers workers(2);
  std::atomic<int> hits{0};
  // Registered before the token is ready: runs when another thread
  // emplaces it.
  AsyncToken *token = mlirAsyncRuntimeCreateToken();
  mlirAsyncRuntimeAwaitTokenAndExecute(token, &hits, bump);
  if (hits.load() != 0)
    return "token callback ran before the token was ready";
  std::thread producer([token] { mlirAsyncRuntimeEmplaceToken(token); });
  producer.join();
  if (hits.load() != 1)
    return "token callback did not run once when the token became ready";
  // Registered after: runs at once.
  mlirAsyncRuntimeAwaitTokenAndExecute(token, &hits, bump);
  if (hits.load() != 2)
    return "token callback on a ready token did not run at once";
  mlirAsyncRuntimeDropRef(token, 1);

  AsyncValue *value = mlirAsyncRuntimeCreateValue(sizeof(double));
  mlirAsyncRuntimeAwaitValueAndExecute(value, &hits, bump);
  std::thread writer([value] {
    double v = 2.5;
    std::memcpy(mlirAsyncRuntimeGetValueStorage(value), &v, sizeof v);
    mlirAsyncRuntimeEmplaceValue(value);
  });
  mlirAsyncRuntimeAwaitValue(value);
  writer.join();
  double got = 0;
  std::memcpy(&got, mlirAsyncRuntimeGetValueStorage(value), sizeof got);
  bool valueError = mlirAsyncRuntimeIsValueError(value);
  mlirAsyncRuntimeDropRef(value, 1);
  if (got != 2.5 || valueError)
    return "value storage read back " + std::to_string(got);
  if (hits.load() != 3)
    return "value callback did not run once";

  AsyncGroup *group = mlirAsyncRuntimeCreateGroup(2);
  AsyncToken *a = mlirAsyncRuntimeCreateToken();
  AsyncToken *b = mlirAsyncRuntimeCreateToken();
  if (mlirAsyncRuntimeAddTokenToGroup(a, group) != 0 ||
      mlirAsyncRuntimeAddTokenToGroup(b, group) != 1)
    return "group ranks are not 0, 1";
  mlirAsyncRuntimeAwaitAllInGroupAndExecute(group, &hits, bump);
  mlirAsyncRuntimeEmplaceToken(a);
  if (hits.load() != 3)
    return "group callback ran with a token pending";
  std::thread last([b] { mlirAsyncRuntimeEmplaceToken(b); });
  last.join();
  mlirAsyncRuntimeDropRef(a, 1);
  mlirAsyncRuntimeDropRef(b, 1);
  bool groupError = mlirAsyncRuntimeIsGroupError(group);
  mlirAsyncRuntimeDropRef(group, 1);
  if (hits.load() != 4)
    return "group callback did not run once when the group completed";
  return groupError ? "group in error" : "";
}

std::string testErrors(unsigned threads) {
  ScopedWorkers workers(threads);
  for (int failAt : {0, 5, 31}) {
    std::vector<Task> tasks(32);
    std::vector<std::atomic<int>> runs(32);
    if (!parallelLoop(tasks, runs, failAt))
      return "task " + std::to_string(failAt) +
             " set its token to error, the group is not";
    if (std::string e = checkRuns(runs, 0); !e.empty())
      return e;
  }
  std::vector<Task> tasks(32);
  std::vector<std::atomic<int>> runs(32);
  return parallelLoop(tasks, runs) ? "a group without errors is in error" : "";
}

/// A task that emplaces its token and then still runs for a while, as a
/// coroutine's last instructions do after async.yield.
struct Tail {
  AsyncToken *token;
  std::atomic<bool> *returned;
  std::thread::id *ranOn;
  std::atomic<bool> *started;
};

void runTail(void *p) {
  auto *t = static_cast<Tail *>(p);
  std::atomic<bool> *returned = t->returned;
  *t->ranOn = std::this_thread::get_id();
  t->started->store(true);
  mlirAsyncRuntimeEmplaceToken(t->token);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  returned->store(true);
}

std::string testDrain() {
  // Only meaningful when a pool thread ran the task (the waiting caller may
  // take it itself): up to 20 tries, each giving a worker up to 200 ms to
  // start it before the caller waits (on a loaded machine the caller would
  // otherwise take it every time).
  for (int attempt = 0; attempt < 20; ++attempt) {
    std::atomic<bool> returned{false}, started{false};
    std::thread::id ranOn;
    {
      ScopedWorkers workers(2);
      AsyncGroup *group = mlirAsyncRuntimeCreateGroup(1);
      Tail tail{mlirAsyncRuntimeCreateToken(), &returned, &ranOn, &started};
      mlirAsyncRuntimeAddTokenToGroup(tail.token, group);
      mlirAsyncRuntimeExecute(&tail, runTail);
      mlirAsyncRuntimeDropRef(tail.token, 1);
      for (int ms = 0; ms < 200 && !started.load(); ++ms)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      mlirAsyncRuntimeAwaitAllInGroup(group);
      mlirAsyncRuntimeDropRef(group, 1);
    }
    moe::rt::detail::waitForRunningTasks();
    if (!returned.load())
      return "waitForRunningTasks returned while a task still ran";
    if (ranOn != std::this_thread::get_id())
      return "";
  }
  return "the caller ran the task itself in 20 tries";
}

} // namespace

int main(int argc, char **argv) {
  unsigned threads = 4;
  int rounds = 300;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads"))
      threads = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--rounds"))
      rounds = std::atoi(argv[i + 1]);
  }
  if (threads < 1 || rounds < 1) {
    std::fprintf(stderr, "usage: moe-async-runtime-test [--threads N>=1] "
                         "[--rounds R>=1]\n");
    return 2;
  }
  std::printf("threads = %u, rounds = %d\n", threads, rounds);
  report("inline", testInline());
  report("parallel", testParallel(threads, rounds));
  report("nested", testNested(rounds / 10 + 1));
  report("callbacks", testCallbacks());
  report("errors", testErrors(threads));
  report("drain", testDrain());
  // Back to one worker after the scopes.
  report("scope", mlirAsyncRuntimGetNumWorkerThreads() == 1
                      ? ""
                      : "the worker count was not restored");
  return failures ? 1 : 0;
}
