//===- Args.h - command lines of the runtime's tools ------------*- C++ -*-===//
//
// moe-run, moe-analyze and moe-live take `--flag value` and `--flag=value`;
// errors go to the tool's own `die` (one line, exit 1). Header-only, no
// dependencies.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_TOOLS_ARGS_H
#define MOE_RUNTIME_TOOLS_ARGS_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>

namespace moe::tools {

/// The tool's error exit: prints one line and exits.
using DieFn = void (*)(const std::string &);

/// Makes a failed host allocation one error line and exit status 1 instead
/// of an uncaught std::bad_alloc (an abort and a core dump), e.g. for a
/// --tokens far beyond the machine's memory. `tool` names the tool.
inline void exitOnOutOfMemory(const char *tool) {
  static const char *name;
  name = tool;
  std::set_new_handler([] {
    std::fprintf(stderr,
                 "%s: error: out of host memory (an allocation failed); "
                 "fewer tokens or a smaller model may fit\n",
                 name);
    std::_Exit(1);
  });
}

/// A non-negative integer, or `die` naming the flag.
inline int64_t parseCount(const std::string &flag, const std::string &v,
                          DieFn die) {
  char *end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || x < 0) {
    die("invalid value '" + v + "' for " + flag);
    std::abort();
  }
  return x;
}

/// A finite number, or `die` naming the flag.
inline double parseNumber(const std::string &flag, const std::string &v,
                          DieFn die) {
  char *end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(x)) {
    die("invalid value '" + v + "' for " + flag);
    std::abort();
  }
  return x;
}

/// Walks argv[1..]: `next()` moves to the next argument, `is(flag)` tests
/// for `flag` or `flag=...`, `value(flag)` takes the part after '=' or the
/// following argument.
class ArgCursor {
public:
  ArgCursor(int argc, char **argv, DieFn die)
      : argc_(argc), argv_(argv), die_(die) {}
  bool next() {
    if (++i_ >= argc_)
      return false;
    arg_ = argv_[i_];
    return true;
  }
  const std::string &arg() const { return arg_; }
  /// Whether another argument follows this one.
  bool hasNext() const { return i_ + 1 < argc_; }
  const char *peek() const { return argv_[i_ + 1]; }
  void skip() { ++i_; }
  bool is(const char *flag) const {
    return arg_ == flag || arg_.rfind(std::string(flag) + "=", 0) == 0;
  }
  std::string value(const std::string &flag) {
    size_t eq = arg_.find('=');
    if (eq != std::string::npos && arg_.rfind("--", 0) == 0)
      return arg_.substr(eq + 1);
    if (i_ + 1 >= argc_) {
      die_("missing value for " + flag);
      std::abort();
    }
    return argv_[++i_];
  }

private:
  int argc_;
  char **argv_;
  DieFn die_;
  int i_ = 0;
  std::string arg_;
};

} // namespace moe::tools

#endif // MOE_RUNTIME_TOOLS_ARGS_H
