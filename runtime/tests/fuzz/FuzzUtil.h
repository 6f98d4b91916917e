//===- FuzzUtil.h - helpers of the fuzz harnesses -----------------*- C++
//-*-===//
//
// The readers under test take paths (they map or stream files, as the tools
// do), so each input is written to an in-memory file (memfd) and handed over
// as /proc/self/fd/N: no disk traffic per input.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_TESTS_FUZZ_FUZZUTIL_H
#define MOE_RUNTIME_TESTS_FUZZ_FUZZUTIL_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

namespace moe::rt::fuzz {

class MemFile {
public:
  MemFile(const uint8_t *data, size_t size) {
    fd_ = memfd_create("moe-fuzz", 0);
    if (fd_ < 0 || (size && write(fd_, data, size) != ssize_t(size))) {
      std::perror("moe-fuzz: memfd");
      std::abort();
    }
  }
  ~MemFile() { close(fd_); }
  MemFile(const MemFile &) = delete;
  MemFile &operator=(const MemFile &) = delete;
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

private:
  int fd_ = -1;
};

} // namespace moe::rt::fuzz

#endif // MOE_RUNTIME_TESTS_FUZZ_FUZZUTIL_H
