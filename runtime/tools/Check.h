//===- Check.h - compare a run with the C++ reference -----------*- C++ -*-===//

#ifndef MOE_RUNTIME_TOOLS_CHECK_H
#define MOE_RUNTIME_TOOLS_CHECK_H

#include "Npy.h"

namespace moe::rt {

struct CheckReport {
  bool passed = false;
  std::vector<std::string> lines;
};

/// Runs the reference on `inputs` for the moe.layer entry `spec` and compares
/// `outputs` with it (relative L2 error against a per-dtype tolerance; the
/// drop count exactly). Tokens whose routing decision in the reference was
/// closer than `tieTolerance` to going another way are left out (0 keeps
/// all: exact ties are broken the same way by both). Returns false with
/// `err` when no comparison is possible (not a layer entry, no reference).
bool checkAgainstReference(const EntrySpec &spec,
                           const std::vector<Buffer> &inputs,
                           const std::vector<Buffer> &outputs,
                           double tieTolerance, CheckReport &report,
                           std::string &err);

/// Times `runs` evaluations of the reference on the same inputs; returns
/// the median in milliseconds, or a negative value with `err` set.
double benchReference(const EntrySpec &spec, const std::vector<Buffer> &inputs,
                      int runs, std::string &err);

} // namespace moe::rt

#endif // MOE_RUNTIME_TOOLS_CHECK_H
