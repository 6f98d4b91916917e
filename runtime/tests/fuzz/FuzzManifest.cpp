//===- FuzzManifest.cpp - fuzz the artifact and model manifests ---*- C++
//-*-===//
//
// The input is the text of a manifest: it is written as manifest.json (an
// artifact) and as model.json (a compiled model) into a scratch directory
// that holds nothing else, and Artifact::load / readModelManifest must
// reject it with a message (the library the manifest names does not exist),
// never crash or hang. This covers the runtime's JSON reader too.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Model.h"
#include "moe/Runtime/Runtime.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <unistd.h>

using namespace moe::rt;

namespace {
const std::string &scratchDir() {
  static std::string dir = [] {
    char tmpl[] = "/tmp/moe-fuzz-manifest-XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("moe-fuzz: mkdtemp");
      std::abort();
    }
    return std::string(tmpl);
  }();
  return dir;
}

void writeFile(const std::string &path, const uint8_t *data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char *>(data), size);
  if (!out)
    std::abort();
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string &dir = scratchDir();
  writeFile(dir + "/manifest.json", data, size);
  writeFile(dir + "/model.json", data, size);
  auto a = Artifact::load(dir);
  if (a || a.message().empty())
    std::abort(); // no library exists: it cannot load
  auto m = readModelManifest(dir);
  if (!m && m.message().empty())
    std::abort();
  return 0;
}
