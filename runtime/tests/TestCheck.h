//===- TestCheck.h - checks of the runtime's test drivers -------*- C++ -*-===//
//
// The runtime's C++ test drivers print one line per check, "ok  WHAT" or
// "FAIL WHAT: DETAIL", and end with testSummary()'s "N passed, N failed",
// which the lit tests match.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_TESTS_TESTCHECK_H
#define MOE_RUNTIME_TESTS_TESTCHECK_H

#include "moe/Runtime/Runtime.h"

#include <cstdio>
#include <string>

namespace moe::rt::test {

inline int passed = 0, failed = 0;

/// One check: `what` holds (ok) or not (FAIL, with `detail` after it).
inline void expect(bool ok, const std::string &what,
                   const std::string &detail = "") {
  (ok ? passed : failed)++;
  std::printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what.c_str(),
              detail.empty() ? "" : ": ", detail.c_str());
}

inline bool contains(const std::string &s, const char *text) {
  return s.find(text) != std::string::npos;
}

/// Whether `s` is an error whose message contains `text`.
inline bool failsWith(const Status &s, const char *text) {
  return !s && contains(s.message(), text);
}

/// Prints "N passed, N failed"; the driver's exit status.
inline int testSummary() {
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

} // namespace moe::rt::test

#endif // MOE_RUNTIME_TESTS_TESTCHECK_H
