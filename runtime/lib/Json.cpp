//===- Json.cpp - a small JSON reader ---------------------------*- C++ -*-===//

#include "Json.h"

#include <cmath>

#include <cstdlib>

namespace moe::rt::json {
namespace {
class Parser {
public:
  Parser(const std::string &t) : t(t) {}
  bool parseDocument(Value &v, std::string &err) {
    if (!value(v, 0) || (skip(), pos != t.size())) {
      if (msg.empty())
        msg = "trailing characters";
      err = msg + " at offset " + std::to_string(pos);
      return false;
    }
    return true;
  }

private:
  const std::string &t;
  size_t pos = 0;
  std::string msg;

  bool fail(const char *m) {
    if (msg.empty())
      msg = m;
    return false;
  }
  void skip() {
    while (pos < t.size() && (t[pos] == ' ' || t[pos] == '\n' ||
                              t[pos] == '\t' || t[pos] == '\r'))
      ++pos;
  }
  bool lit(const char *s) {
    size_t n = std::char_traits<char>::length(s);
    if (t.compare(pos, n, s) != 0)
      return fail("invalid literal");
    pos += n;
    return true;
  }
  bool string(std::string &out) {
    if (pos >= t.size() || t[pos] != '"')
      return fail("expected string");
    ++pos;
    while (pos < t.size() && t[pos] != '"') {
      char c = t[pos++];
      if (c == '\\') {
        if (pos >= t.size())
          return fail("unterminated escape");
        char e = t[pos++];
        switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u':
          if (pos + 4 > t.size())
            return fail("bad \\u escape");
          out += '?'; // Names in manifests are ASCII.
          pos += 4;
          break;
        default: out += e;
        }
      } else {
        out += c;
      }
    }
    if (pos >= t.size())
      return fail("unterminated string");
    ++pos;
    return true;
  }
  bool value(Value &v, int depth) {
    if (depth > 64)
      return fail("nesting too deep");
    skip();
    if (pos >= t.size())
      return fail("unexpected end of input");
    char c = t[pos];
    if (c == '{') {
      v.kind = Value::Object;
      ++pos;
      skip();
      if (pos < t.size() && t[pos] == '}')
        return ++pos, true;
      while (true) {
        skip();
        std::string key;
        if (!string(key))
          return false;
        skip();
        if (pos >= t.size() || t[pos++] != ':')
          return fail("expected ':'");
        if (!value(v.obj[key], depth + 1))
          return false;
        skip();
        if (pos < t.size() && t[pos] == ',') {
          ++pos;
          continue;
        }
        if (pos < t.size() && t[pos] == '}')
          return ++pos, true;
        return fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Value::Array;
      ++pos;
      skip();
      if (pos < t.size() && t[pos] == ']')
        return ++pos, true;
      while (true) {
        v.arr.emplace_back();
        if (!value(v.arr.back(), depth + 1))
          return false;
        skip();
        if (pos < t.size() && t[pos] == ',') {
          ++pos;
          continue;
        }
        if (pos < t.size() && t[pos] == ']')
          return ++pos, true;
        return fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Value::String;
      return string(v.str);
    }
    if (c == 't') {
      v.kind = Value::Bool;
      v.b = true;
      return lit("true");
    }
    if (c == 'f') {
      v.kind = Value::Bool;
      return lit("false");
    }
    if (c == 'n')
      return lit("null");
    const char *begin = t.c_str() + pos;
    char *end = nullptr;
    v.num = std::strtod(begin, &end);
    if (end == begin)
      return fail("unexpected character");
    v.kind = Value::Number;
    pos += end - begin;
    return true;
  }
};
} // namespace

bool parse(const std::string &text, Value &out, std::string &error) {
  return Parser(text).parseDocument(out, error);
}

bool asInteger(const Value &v, int64_t lo, int64_t hi, int64_t &out) {
  // (NaN fails both comparisons; lo and hi are exact in a double here.)
  if (v.kind != Value::Number || !(v.num >= static_cast<double>(lo)) ||
      !(v.num <= static_cast<double>(hi)) || v.num != std::floor(v.num))
    return false;
  out = static_cast<int64_t>(v.num);
  return true;
}
} // namespace moe::rt::json
