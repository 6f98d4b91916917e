//===- SafeTensors.h - read .safetensors files without LLVM -----*- C++ -*-===//
//
// A reader for the safetensors format (8-byte little-endian header length,
// a JSON header mapping tensor names to dtype, shape and [begin, end) byte
// offsets into the data that follows). The file is mapped read-only; every
// offset, size and dtype is validated on open, so a truncated or corrupt
// file is an error value, never a crash.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_SAFETENSORS_H
#define MOE_RUNTIME_SAFETENSORS_H

#include "moe/Runtime/Runtime.h"

#include <map>
#include <string>
#include <vector>

namespace moe::rt {

struct SafeTensor {
  std::string dtype; // "F32", "F16", "BF16", ... as in the file
  std::vector<int64_t> shape;
  const unsigned char *data = nullptr;
  size_t size = 0; // bytes
};

class SafeTensorsFile {
public:
  static Result<std::shared_ptr<SafeTensorsFile>> open(const std::string &path);
  ~SafeTensorsFile();
  const SafeTensor *find(const std::string &name) const;
  const std::map<std::string, SafeTensor> &tensors() const { return tensors_; }
  /// The header's "__metadata__" (string values).
  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }

private:
  SafeTensorsFile() = default;
  void *map_ = nullptr;
  size_t mapSize_ = 0;
  std::map<std::string, SafeTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

} // namespace moe::rt

#endif // MOE_RUNTIME_SAFETENSORS_H
