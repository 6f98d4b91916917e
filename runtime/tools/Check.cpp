//===- Check.cpp - compare a run with the C++ reference ---------*- C++ -*-===//

#include "Check.h"

namespace moe::rt {

bool checkAgainstReference(const EntrySpec &spec,
                           const std::vector<Buffer> &inputs,
                           const std::vector<Buffer> &outputs,
                           CheckReport &report, std::string &err) {
#ifndef MOE_HAVE_REFERENCE
  err = "--check needs the C++ reference (runtime/reference), which this "
        "moe-run was built without";
  return false;
#else
#error "reference adapter not written yet"
#endif
}

} // namespace moe::rt
