//===- AsyncRuntime.h - Worker threads for compiled cpu layers --*- C++ -*-===//
//
// Compiled cpu layers run their blocked GEMMs' column groups as scf.parallel
// loops, which MLIR's async-parallel-for and convert-async-to-llvm lower to
// calls of the `mlirAsyncRuntime*` C API (mlir/ExecutionEngine/
// AsyncRuntime.h). MLIR ships that API in libmlir_async_runtime, on LLVM's
// thread pool; the runtime must not depend on LLVM/MLIR, so
// AsyncRuntime.cpp implements it on std::thread, as MemRefCopy.cpp does for
// `memrefCopy`. Artifacts resolve the symbols from libmoe_runtime when they
// are loaded.
//
// How many threads a call may use is a property of the calling thread, set
// for the duration of a call by ScopedWorkers (Artifact::run): with 1 (the
// default) every task runs inline on the caller, in order, so a call is
// sequential and deterministic; with n > 1 the compiled code cuts each
// parallel loop into tasks for n workers (mlirAsyncRuntimGetNumWorkerThreads
// returns n), queued on a process-wide pool of n - 1 threads while the
// caller runs the first task itself and then helps with the queue until
// its tasks are done.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_LIB_ASYNCRUNTIME_H
#define MOE_RUNTIME_LIB_ASYNCRUNTIME_H

namespace moe::rt::detail {

/// Sets the calling thread's worker count for compiled code to `n` (at
/// least 1) until destroyed, then restores the previous count.
class ScopedWorkers {
public:
  explicit ScopedWorkers(unsigned n);
  ~ScopedWorkers();
  ScopedWorkers(const ScopedWorkers &) = delete;
  ScopedWorkers &operator=(const ScopedWorkers &) = delete;

private:
  int previous_;
};

/// Waits until the tasks running on any thread at the time of the call have
/// returned. A parallel loop's call returns once every task has emplaced
/// its token, which a task does just before its last instructions; an
/// artifact's library must not be unloaded while a thread is still in
/// them (Artifact::~Artifact calls this before dlclose).
void waitForRunningTasks();

/// The most workers a call may ask for.
constexpr unsigned kMaxWorkers = 1024;

} // namespace moe::rt::detail

#endif // MOE_RUNTIME_LIB_ASYNCRUNTIME_H
