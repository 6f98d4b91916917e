//===- Check.h - compare a run with the C++ reference -----------*- C++ -*-===//

#ifndef MOE_RUNTIME_TOOLS_CHECK_H
#define MOE_RUNTIME_TOOLS_CHECK_H

#include "Npy.h"

#ifdef MOE_HAVE_REFERENCE
#include "moe/Reference/Reference.h"
#include <functional>
#endif

namespace moe::rt {

#ifdef MOE_HAVE_REFERENCE
/// An operand's values (empty when the layer has no such operand) and its
/// shape (empty likewise), by moe.layer role ("router", "up", ...).
using RoleValues = std::function<std::vector<double>(const std::string &)>;
using RoleShape = std::function<std::vector<int64_t>(const std::string &)>;

/// The reference layer (§1-§3) of a moe.layer with hidden size `H`,
/// configured by the manifest's `config`, its operands from `values` and
/// `shape`. Shared by --check (operands from the entry's inputs) and
/// moe-analyze (operands from a compiled model's weights files).
bool buildReferenceLayer(const LayerConfig &config, int64_t H,
                         const RoleValues &values, const RoleShape &shape,
                         ref::Layer &L, std::string &err);
#endif

struct CheckReport {
  bool passed = false;
  std::vector<std::string> lines;
};

/// Runs the reference on `inputs` for the moe.layer entry `spec` and compares
/// `outputs` with it (relative L2 error against a per-dtype tolerance; the
/// drop count exactly). Tokens whose routing decision in the reference was
/// closer than `tieTolerance` to going another way are left out (0 keeps
/// all: exact ties are broken the same way by both); for a moe.cartesian
/// entry also the second layer's decisions that rounding its input to the
/// entry's dtype could reverse (ref::runCartesian). Returns false with
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
