//===- FuzzMain.cpp - replay inputs through a fuzz harness --------*- C++
//-*-===//
//
// Builds a harness without libFuzzer: each argument (a file, or a directory
// of files) is fed once to LLVMFuzzerTestOneInput. The test suite replays
// the checked-in corpus (seeds and every input that once crashed) this way;
// scripts/fuzz.sh links the same harnesses with -fsanitize=fuzzer instead.
//
//===----------------------------------------------------------------------===//

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

namespace fs = std::filesystem;

static int replay(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "moe-fuzz: cannot read %s\n", p.c_str());
    return 1;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
    return 2;
  }
  size_t inputs = 0;
  int rc = 0;
  for (int i = 1; i < argc; ++i) {
    fs::path p(argv[i]);
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<fs::path> files;
      for (const auto &e : fs::directory_iterator(p))
        if (e.is_regular_file())
          files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const fs::path &f : files) {
        rc |= replay(f);
        ++inputs;
      }
    } else {
      rc |= replay(p);
      ++inputs;
    }
  }
  std::printf("moe-fuzz: %zu inputs replayed\n", inputs);
  return rc;
}
