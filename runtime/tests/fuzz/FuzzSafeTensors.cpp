//===- FuzzSafeTensors.cpp - fuzz the .safetensors reader ---------*- C++
//-*-===//
//
// The input is a whole .safetensors file (written to an in-memory file, so
// that SafeTensorsFile::open maps it as it maps a checkpoint). A file it
// accepts must keep its promise: every tensor's bytes lie inside the file,
// and its size is exactly the product of its shape times the dtype's size
// (computed here without overflow); otherwise the harness aborts, which the
// fuzzer reports as a crash. Errors must carry a message.
//
//===----------------------------------------------------------------------===//

#include "FuzzUtil.h"

#include "moe/Runtime/SafeTensors.h"

#include <cstdlib>

using namespace moe::rt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz::MemFile file(data, size);
  auto r = SafeTensorsFile::open(file.path());
  if (!r) {
    if (r.message().empty())
      std::abort();
    return 0;
  }
  const SafeTensorsFile &f = *r.value();
  for (const auto &[name, t] : f.tensors()) {
    unsigned __int128 bytes =
        t.dtype == "F32" || t.dtype == "I32" || t.dtype == "U32" ? 4
        : t.dtype == "F16" || t.dtype == "BF16" || t.dtype == "I16" ||
                t.dtype == "U16"
            ? 2
        : t.dtype == "F64" || t.dtype == "I64" || t.dtype == "U64" ? 8
                                                                   : 1;
    for (int64_t d : t.shape) {
      if (d < 0)
        std::abort();
      bytes *= static_cast<uint64_t>(d);
      if (bytes > (unsigned __int128)1 << 100)
        bytes = (unsigned __int128)1 << 100; // stays unequal to any size
    }
    if (bytes != t.size)
      std::abort();
    // Inside the mapping: touch the first and last byte.
    if (t.size) {
      volatile unsigned char sink = t.data[0];
      sink = t.data[t.size - 1];
      (void)sink;
    }
  }
  return 0;
}
