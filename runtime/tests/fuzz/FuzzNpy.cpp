//===- FuzzNpy.cpp - fuzz moe-run's .npy reader -------------------*- C++
//-*-===//
//
// The input is a whole .npy file (moe-run --input NAME=FILE.npy). An accepted
// file must give as many values as its shape's product; a rejected one an
// error message. Exceptions escaping the reader are crashes here, as they
// are in moe-run.
//
//===----------------------------------------------------------------------===//

#include "FuzzUtil.h"

#include "Npy.h"

using namespace moe::rt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz::MemFile file(data, size);
  std::vector<float> values;
  std::vector<int64_t> shape;
  std::string err;
  if (!readNpyF32(file.path(), values, shape, err)) {
    if (err.empty())
      std::abort();
    return 0;
  }
  unsigned __int128 n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      std::abort();
    n *= static_cast<uint64_t>(d);
  }
  if (n != values.size())
    std::abort();
  return 0;
}
