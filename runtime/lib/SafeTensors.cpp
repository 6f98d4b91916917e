//===- SafeTensors.cpp - read .safetensors files ----------------*- C++ -*-===//

#include "moe/Runtime/SafeTensors.h"

#include "Json.h"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace moe::rt {

static size_t elementSize(const std::string &dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64")
    return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32")
    return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16")
    return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" ||
      dtype == "F8_E5M2")
    return 1;
  return 0;
}

Result<std::shared_ptr<SafeTensorsFile>>
SafeTensorsFile::open(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0)
    return Status::error("cannot open '" + path + "'");
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return Status::error("cannot stat '" + path + "'");
  }
  size_t size = static_cast<size_t>(st.st_size);
  std::shared_ptr<SafeTensorsFile> f(new SafeTensorsFile());
  if (size < 8) {
    ::close(fd);
    return Status::error("'" + path + "' is truncated: " + std::to_string(size) +
                         " bytes, less than the 8-byte header length");
  }
  void *map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED)
    return Status::error("cannot map '" + path + "'");
  f->map_ = map;
  f->mapSize_ = size;
  const auto *bytes = static_cast<const unsigned char *>(map);
  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = (headerLen << 8) | bytes[i];
  if (headerLen > size - 8)
    return Status::error("'" + path + "' is truncated: header of " +
                         std::to_string(headerLen) + " bytes but only " +
                         std::to_string(size - 8) + " follow");
  std::string header(reinterpret_cast<const char *>(bytes + 8), headerLen);
  json::Value root;
  std::string err;
  if (!json::parse(header, root, err) || root.kind != json::Value::Object)
    return Status::error("'" + path + "': malformed header: " +
                         (err.empty() ? "not an object" : err));
  const unsigned char *data = bytes + 8 + headerLen;
  size_t dataSize = size - 8 - headerLen;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (const auto &[name, v] : root.obj) {
    if (name == "__metadata__") {
      // The format allows only string values here; others are ignored.
      for (const auto &[k, m] : v.obj)
        if (m.kind == json::Value::String)
          f->metadata_[k] = m.str;
      continue;
    }
    std::string where = "'" + path + "': tensor '" + name + "'";
    const json::Value *dt = v.get("dtype"), *shape = v.get("shape"),
                      *offs = v.get("data_offsets");
    if (!dt || dt->kind != json::Value::String || !shape ||
        shape->kind != json::Value::Array || !offs ||
        offs->kind != json::Value::Array || offs->arr.size() != 2)
      return Status::error(where + " needs dtype, shape and data_offsets");
    SafeTensor t;
    t.dtype = dt->str;
    size_t esize = elementSize(t.dtype);
    if (!esize)
      return Status::error(where + " has unknown dtype '" + t.dtype + "'");
    size_t count = 1;
    for (const json::Value &d : shape->arr) {
      int64_t dim;
      if (!json::asInteger(d, 0, int64_t(1e15), dim))
        return Status::error(where + " has an invalid shape");
      t.shape.push_back(dim);
      // The product could wrap around (e.g. [2^32, 2^32] -> 0) and then
      // match a small size.
      if (__builtin_mul_overflow(count, static_cast<size_t>(dim), &count))
        return Status::error(where + " has a shape too large to address");
    }
    size_t needBytes;
    if (__builtin_mul_overflow(count, esize, &needBytes))
      return Status::error(where + " has a shape too large to address");
    // (Offsets past 2^62 are no file's; converting a larger double to an
    // integer, as the message below did, is undefined behaviour.)
    int64_t b, e;
    if (!json::asInteger(offs->arr[0], 0, int64_t(1) << 62, b) ||
        !json::asInteger(offs->arr[1], b, int64_t(1) << 62, e))
      return Status::error(where + " has invalid data_offsets");
    if (static_cast<uint64_t>(e) > dataSize)
      return Status::error(where + " ends at byte " + std::to_string(e) +
                           " beyond the data (" + std::to_string(dataSize) +
                           " bytes): the file is truncated or corrupt");
    t.size = static_cast<size_t>(e - b);
    if (t.size != needBytes)
      return Status::error(where + " has " + std::to_string(t.size) +
                           " bytes but dtype " + t.dtype +
                           " and its shape need " + std::to_string(needBytes));
    t.data = data + static_cast<size_t>(b);
    ranges.push_back({static_cast<size_t>(b), static_cast<size_t>(e)});
    f->tensors_[name] = t;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      return Status::error("'" + path + "': tensors' data_offsets overlap");
  return f;
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_)
    munmap(map_, mapSize_);
}

const SafeTensor *SafeTensorsFile::find(const std::string &name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

} // namespace moe::rt
