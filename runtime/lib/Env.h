//===- Env.h - the runtime's environment settings ---------------*- C++ -*-===//
//
// Readers of the MOE_* environment variables that tune the runtime (see
// README, "Runtime environment"), one way for all: a flag set to anything
// but "" or "0" is on, set to "0" off, and unset or empty takes its
// default; a count is a decimal unsigned number, and other text is said on
// stderr, naming the variable and the default used instead, rather than
// read as 0.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_LIB_ENV_H
#define MOE_RUNTIME_LIB_ENV_H

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace moe::rt::env {

/// `fallback` when `name` is unset or empty; otherwise whether it is set to
/// anything but "0". Without a fallback: off unless set.
inline bool flag(const char *name, bool fallback = false) {
  const char *v = std::getenv(name);
  if (!v || !*v)
    return fallback;
  return std::strcmp(v, "0") != 0;
}

/// `name` as a decimal unsigned number; `fallback` when it is unset or
/// empty, or is not such a number (said on stderr: "NAME='TEXT' is not a
/// WHAT; using FALLBACK").
inline uint64_t count(const char *name, uint64_t fallback,
                      const char *what = "count") {
  const char *v = std::getenv(name);
  if (!v || !*v)
    return fallback;
  char *end = nullptr;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (*v >= '0' && *v <= '9' && *end == '\0' && n != ULLONG_MAX)
    return n;
  std::fprintf(stderr, "moe runtime: %s='%s' is not a %s; using %llu\n", name,
               v, what, static_cast<unsigned long long>(fallback));
  return fallback;
}

/// `name` as a number of MiB, in bytes (at most 2^44 MiB).
inline uint64_t mebibytes(const char *name, uint64_t fallbackMiB) {
  uint64_t mib = count(name, fallbackMiB, "number of MiB");
  return (mib < (uint64_t(1) << 44) ? mib : uint64_t(1) << 44) << 20;
}

} // namespace moe::rt::env

#endif // MOE_RUNTIME_LIB_ENV_H
