//===- Json.h - a small JSON reader for the runtime's manifest --*- C++ -*-===//
//
// The runtime must not depend on LLVM (llvm::json), so it carries this
// minimal reader: enough for manifest.json, with errors naming the offset.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_JSON_H
#define MOE_RUNTIME_JSON_H

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moe::rt::json {

struct Value {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Value> arr;
  std::map<std::string, Value> obj;

  const Value *get(const std::string &key) const {
    auto it = obj.find(key);
    return kind == Object && it != obj.end() ? &it->second : nullptr;
  }
};

/// Parses `text`; on failure returns false and sets `error`.
bool parse(const std::string &text, Value &out, std::string &error);

/// Whether `v` is a number holding an integer in [lo, hi] (then in `out`).
/// Converting any other double to int64_t is undefined behaviour.
bool asInteger(const Value &v, int64_t lo, int64_t hi, int64_t &out);

} // namespace moe::rt::json

#endif // MOE_RUNTIME_JSON_H
