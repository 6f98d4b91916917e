//===- Artifact.h - compile a moe module into a loadable artifact -*- C++ -*-===//
//
// The compile step shared by `moe-compile <layer.mlir>` and
// `moe-compile <model-dir>`: moe IR (text) in, an artifact directory out
// (`layer.so` + `manifest.json`, the format the runtime loads). Phases are
// named, IREE-style, so a caller can stop partway and print the IR.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGET_ARTIFACT_H
#define MOE_TARGET_ARTIFACT_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>
#include <string>

namespace mlir {
class DialectRegistry;
namespace moe {

/// Phase names in order; `object` (the shared object) is the last and cannot
/// be stopped after.
enum class ArtifactPhase {
  Input,
  Decompose,
  Linalg,
  Bufferize,
  /// Kernels outlined and host code on managed memory (cuda targets only).
  GPU,
  LLVMDialect,
  LLVMIR,
  Object
};
std::optional<ArtifactPhase> parseArtifactPhase(llvm::StringRef name);
llvm::StringRef getArtifactPhaseName(ArtifactPhase phase);
/// "input, decompose, ..., llvm-ir": the phases `--stop-after` accepts.
std::string getStoppablePhaseList();

struct ArtifactOptions {
  /// "cpu" (the host) or "cuda:sm_XX" (kernels as a cubin for sm_XX in the
  /// shared object, host code on the runtime's CUDA backend).
  std::string target = "cpu";
  /// When set, print the IR after this phase to `irOut` and write nothing.
  std::optional<ArtifactPhase> stopAfter;
  llvm::raw_ostream *irOut = nullptr;
  /// Name of the input for diagnostics (a file name or a generated name).
  std::string bufferName = "<input>";
  /// Run MLIR passes multi-threaded (off when the caller compiles several
  /// artifacts on its own thread pool).
  bool mlirThreading = true;
  /// Options of the target's pipeline, in its option syntax
  /// ("expert-combine=gather route-kernels=0" for moe-to-nvvm); the chip
  /// always comes from `target`. Recorded in the manifest.
  std::string pipelineOptions;
};

/// Checks a --target value: nullopt for "cpu", the chip for "cuda:sm_XX".
llvm::Expected<std::optional<std::string>>
parseArtifactTarget(llvm::StringRef target);

/// One-time process set-up (LLVM native target, pass registration). Call it
/// before compiling, from one thread.
void initializeArtifactCompiler();

/// Compiles the module in `irText` into `outDir` (created if needed). Errors
/// in the IR are reported as diagnostics on stderr at their location and
/// returned as an Error naming the phase.
llvm::Error compileArtifact(llvm::StringRef irText, llvm::StringRef outDir,
                            const ArtifactOptions &options);

/// Writes `value` as indented JSON to `path` atomically (a temporary file
/// renamed into place), so a reader never sees a partial manifest.
llvm::Error writeJSONFile(llvm::StringRef path, llvm::json::Value value);

/// Identifies this compiler build in content hashes, so that a cache never
/// hands out artifacts made by another version.
llvm::StringRef getCompilerVersion();

/// The host's CPU features as CPU artifacts are built for them: every
/// feature LLVM reports, "+name" or "-name", sorted, comma-separated.
/// moe-compile keys its kernel cache on them (with the CPU's name).
std::string getHostCPUFeatures();

} // namespace moe
} // namespace mlir

#endif // MOE_TARGET_ARTIFACT_H
