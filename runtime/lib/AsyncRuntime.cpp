//===- AsyncRuntime.cpp - mlirAsyncRuntime* on std::thread ------*- C++ -*-===//
//
// The C API that MLIR's async dialect lowers to (convert-async-to-llvm), for
// the parallel loops of compiled cpu layers; see AsyncRuntime.h. The
// contract, from mlir/ExecutionEngine/AsyncRuntime.h and the passes that
// emit the calls (async-to-async-runtime, async-runtime-ref-counting):
//
// * tokens, values and groups are reference counted; a token or value is
//   created with two references, one of them the producer's, dropped when it
//   is emplaced (or set to an error); a group with one;
// * `Execute(handle, resume)` runs `resume(handle)` (a suspended coroutine)
//   now or later on any thread; the coroutine saved its state before the
//   call (llvm.coro.save), so resuming it inline is allowed;
// * `Await*` block until ready; `Await*AndExecute` resume the coroutine once
//   ready, on whichever thread makes it ready;
// * `GetNumWorkerThreads` sizes the tasks of async-parallel-for (compiled
//   with num-workers=-1).
//
// Written for this runtime (MLIR's implementation sits on llvm::ThreadPool).
// A blocking await on a thread with tasks queued runs them meanwhile, so a
// caller never idles while its own tasks wait for a worker, and nested
// parallel loops cannot deadlock the pool.
//
//===----------------------------------------------------------------------===//

#include "AsyncRuntime.h"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#define MOE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using CoroHandle = void *;
using CoroResume = void (*)(void *);

/// Workers a parallel loop started on this thread may use; -1 on the pool's
/// own threads (their loops queue tasks on the pool).
thread_local int tlsWorkers = 1;

struct Task {
  CoroHandle handle;
  CoroResume resume;
};

/// The process-wide worker threads and their queue. One mutex and condition
/// variable serve both the workers (a task was queued) and helping waiters
/// (a task was queued, or something they wait for completed).
class Pool {
public:
  /// Never destroyed: workers sleep in `work` until the process exits.
  static Pool &get() {
    static Pool *pool = new Pool();
    return *pool;
  }

  /// Grows the pool to at least `n` threads.
  void reserve(unsigned n) {
    std::lock_guard<std::mutex> lock(mu_);
    while (threads_.size() < n)
      threads_.emplace_back([this] { work(); });
  }

  unsigned size() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<unsigned>(threads_.size());
  }

  void push(Task task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(task);
    }
    // All, not one: the one woken could be a waiter that is about to leave.
    cv_.notify_all();
  }

  /// Wakes the helping waiters: what they wait for may be ready. Taking the
  /// mutex orders this after a waiter's check of its condition.
  void notifyAll() {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_.notify_all();
  }

  /// Runs queued tasks on this thread until `ready()`.
  template <typename Ready> void helpUntil(Ready ready) {
    std::unique_lock<std::mutex> lock(mu_);
    while (!ready()) {
      if (tasks_.empty())
        cv_.wait(lock);
      else
        runFront(lock);
    }
  }

  /// Waits until every task running now (on a worker or a helping waiter)
  /// has returned. A task emplaces its token before its coroutine's last
  /// instructions, so a call can return while a thread is still in the
  /// artifact's code; unloading the artifact must wait for those.
  void waitForRunning() {
    std::lock_guard<std::mutex> one(drainMu_);
    std::unique_lock<std::mutex> lock(mu_);
    int old = epoch_;
    epoch_ ^= 1; // tasks started from now on count in the other slot
    cv_.wait(lock, [&] { return running_[old] == 0; });
  }

private:
  Pool() = default;

  void work() {
    tlsWorkers = -1;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return !tasks_.empty(); });
      runFront(lock);
    }
  }

  /// Pops the first task and runs it with the lock released.
  void runFront(std::unique_lock<std::mutex> &lock) {
    Task task = tasks_.front();
    tasks_.pop_front();
    int epoch = epoch_;
    ++running_[epoch];
    lock.unlock();
    task.resume(task.handle);
    lock.lock();
    if (--running_[epoch] == 0)
      cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;
  std::vector<std::thread> threads_;
  /// Tasks running, counted in two epochs for waitForRunning (under mu_).
  int64_t running_[2] = {0, 0};
  int epoch_ = 0;
  std::mutex drainMu_;
};

/// Whether any thread has used the pool (waitForRunningTasks need not
/// create it).
std::atomic<bool> poolUsed{false};

class RefCounted {
public:
  explicit RefCounted(int64_t refs) : refs_(refs) {}
  virtual ~RefCounted() = default;
  void addRef(int64_t n) { refs_.fetch_add(n, std::memory_order_relaxed); }
  void dropRef(int64_t n) {
    if (refs_.fetch_sub(n, std::memory_order_acq_rel) == n)
      delete this;
  }

private:
  std::atomic<int64_t> refs_;
};

/// Callbacks to run once, when a token, value or group becomes ready. The
/// owner makes its state ready, then calls `fire`; `then` checks the state
/// under the same lock that `fire` takes, so a callback either sees the
/// state pending and is registered before `fire` collects the callbacks, or
/// sees it ready and runs at once.
class Waiters {
public:
  /// Runs `f` now if `done()`, else when `fire` is called.
  template <typename Done> void then(Done done, std::function<void()> f) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!done()) {
        pending_.push_back(std::move(f));
        return;
      }
    }
    f();
  }
  /// Runs the registered callbacks; called after the state became ready.
  void fire() {
    std::vector<std::function<void()>> run;
    {
      std::lock_guard<std::mutex> lock(mu_);
      run.swap(pending_);
    }
    for (auto &f : run)
      f();
    Pool::get().notifyAll();
  }

private:
  std::mutex mu_;
  std::vector<std::function<void()>> pending_;
};

enum : int8_t { kPending = 0, kReady = 1, kError = 2 };

/// A token or a value: pending until its producer emplaces it.
class Awaitable : public RefCounted {
public:
  Awaitable() : RefCounted(2) {}
  bool done() const { return state_.load(std::memory_order_acquire) != kPending; }
  bool isError() const { return state_.load(std::memory_order_acquire) == kError; }
  void complete(int8_t state) {
    state_.store(state, std::memory_order_release);
    waiters_.fire();
    dropRef(1); // the producer's reference
  }
  void then(std::function<void()> f) {
    waiters_.then([this] { return done(); }, std::move(f));
  }
  void wait() {
    if (!done())
      Pool::get().helpUntil([this] { return done(); });
  }

private:
  std::atomic<int8_t> state_{kPending};
  Waiters waiters_;
};

} // namespace

// The opaque types of the C API.
struct AsyncToken : Awaitable {};

struct AsyncValue : Awaitable {
  explicit AsyncValue(int64_t size) : storage(static_cast<size_t>(size)) {}
  std::vector<std::byte> storage;
};

struct AsyncGroup : RefCounted {
  explicit AsyncGroup(int64_t size) : RefCounted(1), pending(size) {}
  bool done() const { return pending.load(std::memory_order_acquire) == 0; }
  void tokenDone(bool error) {
    if (error)
      errors.fetch_add(1, std::memory_order_relaxed);
    if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1)
      waiters.fire();
  }
  std::atomic<int64_t> pending;
  std::atomic<int64_t> errors{0};
  std::atomic<int64_t> rank{0};
  Waiters waiters;
};

namespace moe::rt::detail {

ScopedWorkers::ScopedWorkers(unsigned n) : previous_(tlsWorkers) {
  if (n < 1)
    n = 1;
  if (n > kMaxWorkers)
    n = kMaxWorkers;
  tlsWorkers = static_cast<int>(n);
  if (n > 1) {
    Pool::get().reserve(n - 1);
    poolUsed.store(true, std::memory_order_release);
  }
}

ScopedWorkers::~ScopedWorkers() { tlsWorkers = previous_; }

void waitForRunningTasks() {
  if (poolUsed.load(std::memory_order_acquire))
    Pool::get().waitForRunning();
}

} // namespace moe::rt::detail

MOE_EXPORT void mlirAsyncRuntimeAddRef(void *object, int64_t count) {
  static_cast<RefCounted *>(object)->addRef(count);
}

MOE_EXPORT void mlirAsyncRuntimeDropRef(void *object, int64_t count) {
  static_cast<RefCounted *>(object)->dropRef(count);
}

MOE_EXPORT AsyncToken *mlirAsyncRuntimeCreateToken() { return new AsyncToken(); }

MOE_EXPORT AsyncValue *mlirAsyncRuntimeCreateValue(int64_t size) {
  return new AsyncValue(size);
}

MOE_EXPORT AsyncGroup *mlirAsyncRuntimeCreateGroup(int64_t size) {
  return new AsyncGroup(size);
}

MOE_EXPORT int64_t mlirAsyncRuntimeAddTokenToGroup(AsyncToken *token,
                                                   AsyncGroup *group) {
  int64_t rank = group->rank.fetch_add(1, std::memory_order_relaxed);
  // The group stays alive until the token has reported to it.
  group->addRef(1);
  token->then([token, group] {
    group->tokenDone(token->isError());
    group->dropRef(1);
  });
  return rank;
}

MOE_EXPORT void mlirAsyncRuntimeEmplaceToken(AsyncToken *token) {
  token->complete(kReady);
}

MOE_EXPORT void mlirAsyncRuntimeEmplaceValue(AsyncValue *value) {
  value->complete(kReady);
}

MOE_EXPORT void mlirAsyncRuntimeSetTokenError(AsyncToken *token) {
  token->complete(kError);
}

MOE_EXPORT void mlirAsyncRuntimeSetValueError(AsyncValue *value) {
  value->complete(kError);
}

MOE_EXPORT bool mlirAsyncRuntimeIsTokenError(AsyncToken *token) {
  return token->isError();
}

MOE_EXPORT bool mlirAsyncRuntimeIsValueError(AsyncValue *value) {
  return value->isError();
}

MOE_EXPORT bool mlirAsyncRuntimeIsGroupError(AsyncGroup *group) {
  return group->errors.load(std::memory_order_acquire) > 0;
}

MOE_EXPORT void mlirAsyncRuntimeAwaitToken(AsyncToken *token) { token->wait(); }

MOE_EXPORT void mlirAsyncRuntimeAwaitValue(AsyncValue *value) { value->wait(); }

MOE_EXPORT void mlirAsyncRuntimeAwaitAllInGroup(AsyncGroup *group) {
  if (!group->done())
    Pool::get().helpUntil([group] { return group->done(); });
}

MOE_EXPORT std::byte *mlirAsyncRuntimeGetValueStorage(AsyncValue *value) {
  return value->storage.data();
}

MOE_EXPORT void mlirAsyncRuntimeExecute(CoroHandle handle, CoroResume resume) {
  if (tlsWorkers == 1)
    resume(handle); // one worker: inline, in program order
  else
    Pool::get().push({handle, resume});
}

MOE_EXPORT void mlirAsyncRuntimeAwaitTokenAndExecute(AsyncToken *token,
                                                     CoroHandle handle,
                                                     CoroResume resume) {
  token->then([handle, resume] { resume(handle); });
}

MOE_EXPORT void mlirAsyncRuntimeAwaitValueAndExecute(AsyncValue *value,
                                                     CoroHandle handle,
                                                     CoroResume resume) {
  value->then([handle, resume] { resume(handle); });
}

MOE_EXPORT void mlirAsyncRuntimeAwaitAllInGroupAndExecute(AsyncGroup *group,
                                                          CoroHandle handle,
                                                          CoroResume resume) {
  group->waiters.then([group] { return group->done(); },
                      [handle, resume] { resume(handle); });
}

MOE_EXPORT int64_t mlirAsyncRuntimGetNumWorkerThreads() {
  return tlsWorkers == -1 ? Pool::get().size() + 1 : tlsWorkers;
}

MOE_EXPORT void mlirAsyncRuntimePrintCurrentThreadId() {
  std::printf("Current thread id: %zu\n",
              std::hash<std::thread::id>()(std::this_thread::get_id()));
}
