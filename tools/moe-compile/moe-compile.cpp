//===- moe-compile.cpp - moe IR to a loadable CPU artifact ------*- C++ -*-===//
//
//   moe-compile layer.mlir -o out-dir [--stop-after=<phase>]
//
// Compiles every public function of a moe module into one shared object,
// in-process through LLVM, linked with lld, next to a JSON manifest that the
// runtime reads (entry points, argument roles/shapes/dtypes, target, content
// hash). Phases (IREE-style, so a user can stop and look at the IR):
//   input, decompose, linalg, bufferize, llvm-dialect, llvm-ir, object.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoE.h"
#include "moe/InitAllMoE.h"
#include "moe/Pipelines/Pipelines.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/xxhash.h"
#include "llvm/TargetParser/SubtargetFeature.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"

using namespace mlir;
namespace cl = llvm::cl;

static cl::opt<std::string> inputFile(cl::Positional, cl::desc("<input .mlir>"),
                                      cl::init("-"));
static cl::opt<std::string> outputDir("o", cl::desc("Output artifact directory"),
                                      cl::value_desc("dir"), cl::init(""));
static cl::opt<std::string> target("target", cl::desc("Target: cpu"),
                                   cl::init("cpu"));
/// `--stop-after` is already registered by LLVM's codegen (for machine
/// passes); moe-compile takes it over for its own phases, whose names do not
/// clash with machine pass names.
static cl::opt<std::string> *getStopAfterOption() {
  auto &opts = cl::getRegisteredOptions();
  auto it = opts.find("stop-after");
  if (it == opts.end())
    return nullptr;
  auto *opt = static_cast<cl::opt<std::string> *>(it->second);
  opt->setDescription("Print the IR after this phase and stop: input, "
                      "decompose, linalg, bufferize, llvm-dialect, llvm-ir");
  opt->setValueStr("phase");
  return opt;
}

namespace {
constexpr const char *kPhases[] = {"input",     "decompose",    "linalg",
                                   "bufferize", "llvm-dialect", "llvm-ir",
                                   "object"};

int fail(const llvm::Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "moe-compile") << msg << "\n";
  return 1;
}

std::string dtypeName(Type t) {
  if (t.isF32())
    return "f32";
  if (t.isF16())
    return "f16";
  if (t.isBF16())
    return "bf16";
  if (t.isInteger(32))
    return "i32";
  if (t.isInteger(64))
    return "i64";
  std::string s;
  llvm::raw_string_ostream os(s);
  os << t;
  return s;
}

llvm::json::Object tensorJSON(Type type, StringRef name) {
  auto shaped = cast<ShapedType>(type);
  llvm::json::Array shape;
  for (int64_t d : shaped.getShape())
    shape.push_back(ShapedType::isDynamic(d) ? -1 : d);
  llvm::json::Object o{{"dtype", dtypeName(shaped.getElementType())},
                       {"shape", std::move(shape)}};
  if (!name.empty())
    o["name"] = name.str();
  return o;
}

/// Names function arguments after the moe.layer operand they feed (with
/// `prefix`), so the runtime can bind checkpoint tensors and the reference.
void nameLayerArgs(func::FuncOp fn, moe::LayerOp layer, StringRef prefix,
                   SmallVectorImpl<std::string> &argNames) {
  // Operand groups in ODS order, as moe.layer prints them.
  static const char *kRoles[] = {
      "input",   "router",     "router_bias", "selection_bias", "group_router",
      "domain_embeddings", "proj_w1", "proj_w2", "gate", "up", "down",
      "gate_bias", "up_bias", "down_bias", "lora_base", "lora_a", "lora_b",
      "const_router", "const_vectors", "shared_gate", "shared_up",
      "shared_down", "shared_gate_weight"};
  for (auto [i, role] : llvm::enumerate(kRoles)) {
    auto range = layer.getODSOperands(i);
    if (range.empty())
      continue;
    if (auto arg = dyn_cast<BlockArgument>(range.front()))
      if (arg.getOwner()->getParentOp() == fn)
        argNames[arg.getArgNumber()] = (prefix + role).str();
  }
}

/// The configuration of a moe.layer as the runtime's reference reads it.
llvm::json::Object layerConfig(moe::LayerOp layer) {
  std::string routing;
  llvm::raw_string_ostream rs(routing);
  rs << layer.getRouting();
  llvm::json::Object cfg{
      {"routing", routing},
      {"activation", moe::stringifyActivation(layer.getActivation()).str()},
      {"alpha", layer.getAlpha().convertToDouble()},
      {"limit", layer.getLimit().convertToDouble()},
      {"dispatch", moe::stringifyDispatchMode(layer.getDispatch()).str()},
      {"capacity_factor", layer.getCapacityFactor().convertToDouble()},
      {"shared_activation",
       moe::stringifyActivation(layer.getSharedActivation()).str()}};
  if (layer.getLoraAlpha())
    cfg["lora_alpha"] = layer.getLoraAlpha()->convertToDouble();
  if (auto kinds = layer.getSpecialKinds()) {
    llvm::json::Array ks;
    for (Attribute a : *kinds)
      ks.push_back(moe::stringifySpecialKind(
                       cast<moe::SpecialKindAttr>(a).getValue())
                       .str());
    cfg["special_kinds"] = std::move(ks);
  }
  return cfg;
}

/// The single op of `block` before its terminator, if it is an `OpTy`.
template <typename OpTy> OpTy soleOp(Block &block) {
  if (block.getOperations().size() != 2)
    return {};
  return dyn_cast<OpTy>(block.front());
}

/// For a function that is one moe.layer (or one moe.cartesian of two
/// moe.layer) on its arguments: argument roles and the configuration, so the
/// runtime can bind inputs by name and check results against the reference.
void describeLayer(func::FuncOp fn, SmallVectorImpl<std::string> &argNames,
                   llvm::json::Object &entry) {
  if (fn.getBody().getBlocks().size() != 1)
    return;
  Block &body = fn.getBody().front();
  if (auto layer = soleOp<moe::LayerOp>(body)) {
    nameLayerArgs(fn, layer, "", argNames);
    entry["layer"] = layerConfig(layer);
    return;
  }
  auto cart = soleOp<moe::CartesianOp>(body);
  if (!cart)
    return;
  auto first = soleOp<moe::LayerOp>(cart.getFirst().front());
  auto second = soleOp<moe::LayerOp>(cart.getSecond().front());
  if (!first || !second)
    return;
  if (auto arg = dyn_cast<BlockArgument>(cart.getInput()))
    argNames[arg.getArgNumber()] = "input";
  if (Value norm = cart.getNormWeight())
    if (auto arg = dyn_cast<BlockArgument>(norm))
      argNames[arg.getArgNumber()] = "norm_weight";
  nameLayerArgs(fn, first, "first.", argNames);
  nameLayerArgs(fn, second, "second.", argNames);
  entry["cartesian"] = llvm::json::Object{
      {"epsilon", cart.getEpsilon().convertToDouble()},
      {"first", layerConfig(first)},
      {"second", layerConfig(second)}};
}

/// Adds `void moe_call_<name>(void *result, void **inputs)`, which calls the
/// C interface wrapper with one pointer per input memref descriptor, so the
/// runtime needs no per-arity function pointer types.
void addCallWrapper(llvm::Module &m, StringRef name, unsigned numInputs,
                    bool hasResult) {
  llvm::LLVMContext &ctx = m.getContext();
  llvm::Function *ciface = m.getFunction(("_mlir_ciface_" + name).str());
  auto *ptrTy = llvm::PointerType::get(ctx, 0);
  auto *fnTy = llvm::FunctionType::get(llvm::Type::getVoidTy(ctx),
                                       {ptrTy, ptrTy}, false);
  auto *fn = llvm::Function::Create(fnTy, llvm::GlobalValue::ExternalLinkage,
                                    ("moe_call_" + name).str(), m);
  llvm::IRBuilder<> b(llvm::BasicBlock::Create(ctx, "entry", fn));
  SmallVector<llvm::Value *> args;
  if (hasResult)
    args.push_back(fn->getArg(0));
  for (unsigned i = 0; i < numInputs; ++i)
    args.push_back(b.CreateLoad(
        ptrTy, b.CreateConstGEP1_64(ptrTy, fn->getArg(1), i)));
  b.CreateCall(ciface, args);
  b.CreateRetVoid();
}

std::optional<std::string> findLinker() {
  for (const char *name : {"ld.lld-22", "ld.lld"})
    if (auto p = llvm::sys::findProgramByName(name))
      return *p;
  if (auto p = llvm::sys::findProgramByName("ld.lld", {"/usr/lib/llvm-22/bin"}))
    return *p;
  return std::nullopt;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM y(argc, argv);
  cl::opt<std::string> *stopAfterOpt = getStopAfterOption();
  cl::ParseCommandLineOptions(argc, argv,
                              "moe-compile: moe IR to a loadable artifact\n");
  std::string stopAfter = stopAfterOpt ? stopAfterOpt->getValue() : "";
  // LLVM's codegen must not see our phase name.
  if (stopAfterOpt)
    stopAfterOpt->setValue("");
  if (target != "cpu")
    return fail("unknown target '" + target +
                "' (supported: cpu; cuda:sm_XX arrives with the GPU backend)");
  int stopIdx = -1;
  if (!stopAfter.empty()) {
    auto it = llvm::find(kPhases, stopAfter);
    if (it == std::end(kPhases) || stopAfter == "object")
      return fail("unknown phase '" + Twine(stopAfter) +
                  "' for --stop-after (input, decompose, linalg, bufferize, "
                  "llvm-dialect, llvm-ir)");
    stopIdx = it - std::begin(kPhases);
  }
  if (stopIdx < 0 && outputDir.empty())
    return fail("no output directory: pass -o <dir> (or --stop-after)");

  // The pipelines address upstream passes by their registered names.
  moe::registerAllMoEPasses();
  DialectRegistry registry;
  moe::registerAllMoEDialects(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();

  std::string errorMessage;
  auto file = openInputFile(inputFile, &errorMessage);
  if (!file)
    return fail(errorMessage);
  std::string inputText = file->getBuffer().str();
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(file), SMLoc());
  SourceMgrDiagnosticHandler diagHandler(sourceMgr, &context);
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1; // The parser/verifier reported at the location.
  if (stopIdx == 0) {
    module->print(llvm::outs());
    return 0;
  }

  // Manifest entries are taken from the input, before lowering.
  llvm::json::Array entries;
  SmallVector<std::pair<std::string, std::pair<unsigned, bool>>> wrappers;
  for (auto fn : module->getOps<func::FuncOp>()) {
    if (fn.isPrivate() || fn.isExternal())
      continue;
    for (Type t : llvm::concat<const Type>(fn.getArgumentTypes(),
                                           fn.getResultTypes()))
      if (!isa<RankedTensorType>(t))
        return fail("function '" + fn.getName() +
                    "' has a non-tensor argument or result; entry points take "
                    "and return ranked tensors");
    if (fn.getNumResults() == 0)
      return fail("function '" + fn.getName() + "' returns nothing");
    SmallVector<std::string> argNames(fn.getNumArguments());
    for (unsigned i = 0; i < fn.getNumArguments(); ++i)
      argNames[i] = "arg" + std::to_string(i);
    llvm::json::Object entry{{"name", fn.getName().str()},
                             {"symbol", ("moe_call_" + fn.getName()).str()}};
    describeLayer(fn, argNames, entry);
    llvm::json::Array args, results;
    for (auto [i, t] : llvm::enumerate(fn.getArgumentTypes()))
      args.push_back(tensorJSON(t, argNames[i]));
    for (Type t : fn.getResultTypes())
      results.push_back(tensorJSON(t, ""));
    entry["args"] = std::move(args);
    entry["results"] = std::move(results);
    entries.push_back(std::move(entry));
    fn->setAttr(LLVM::LLVMDialect::getEmitCWrapperAttrName(),
                UnitAttr::get(&context));
    wrappers.push_back({fn.getName().str(), {fn.getNumArguments(), true}});
  }
  if (entries.empty())
    return fail("no public function to compile in '" + inputFile + "'");

  // MLIR phases.
  moe::CPUPipelineOptions options;
  const moe::CPUPhase phases[] = {moe::CPUPhase::Decompose, moe::CPUPhase::Linalg,
                                  moe::CPUPhase::Bufferize,
                                  moe::CPUPhase::LLVMDialect};
  for (auto [i, phase] : llvm::enumerate(phases)) {
    PassManager pm(&context);
    moe::buildCPUPhase(pm, phase, options);
    if (failed(pm.run(*module)))
      return fail(Twine("phase '") + kPhases[i + 1] + "' failed");
    if (stopIdx == static_cast<int>(i + 1)) {
      module->print(llvm::outs());
      return 0;
    }
  }

  // LLVM IR, optimised for this host.
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(*module, llvmContext, "moe_layer");
  if (!llvmModule)
    return fail("translation to LLVM IR failed");
  for (auto &[name, info] : wrappers)
    addCallWrapper(*llvmModule, name, info.first, info.second);

  std::string triple = llvm::sys::getDefaultTargetTriple();
  const llvm::Target *tgt = llvm::TargetRegistry::lookupTarget(llvm::Triple(triple), errorMessage);
  if (!tgt)
    return fail("no LLVM target for '" + triple + "': " + errorMessage);
  std::string cpu = llvm::sys::getHostCPUName().str();
  llvm::SubtargetFeatures features;
  for (auto &f : llvm::sys::getHostCPUFeatures())
    features.AddFeature(f.first(), f.second);
  llvm::TargetOptions to;
  std::unique_ptr<llvm::TargetMachine> tm(tgt->createTargetMachine(
      llvm::Triple(triple), cpu, features.getString(), to, llvm::Reloc::PIC_));
  llvmModule->setDataLayout(tm->createDataLayout());
  llvmModule->setTargetTriple(llvm::Triple(triple));
  if (auto err = makeOptimizingTransformer(3, 0, tm.get())(llvmModule.get()))
    return fail("LLVM optimisation failed: " + llvm::toString(std::move(err)));
  if (stopIdx == 5) {
    llvmModule->print(llvm::outs(), nullptr);
    return 0;
  }

  // Object file, then a shared object through lld.
  if (auto ec = llvm::sys::fs::create_directories(outputDir))
    return fail("cannot create '" + outputDir + "': " + ec.message());
  SmallString<256> objPath(outputDir), soPath(outputDir), manifestPath(outputDir);
  llvm::sys::path::append(objPath, "layer.o");
  llvm::sys::path::append(soPath, "layer.so");
  llvm::sys::path::append(manifestPath, "manifest.json");
  {
    std::error_code ec;
    llvm::ToolOutputFile obj(objPath, ec, llvm::sys::fs::OF_None);
    if (ec)
      return fail("cannot write '" + objPath + "': " + ec.message());
    llvm::legacy::PassManager pm;
    if (tm->addPassesToEmitFile(pm, obj.os(), nullptr,
                                llvm::CodeGenFileType::ObjectFile))
      return fail("the target cannot emit object files");
    pm.run(*llvmModule);
    obj.keep();
  }
  std::optional<std::string> lld = findLinker();
  if (!lld)
    return fail("ld.lld not found (install lld-22)");
  // Undefined math functions (expf, erff, ...) and memrefCopy are resolved
  // when the runtime loads the object: libm and libmoe_runtime provide them.
  SmallVector<StringRef> linkArgs{*lld, "-shared", "-o", soPath, objPath};
  if (int rc = llvm::sys::ExecuteAndWait(*lld, linkArgs, std::nullopt, {}, 0, 0,
                                         &errorMessage))
    return fail("linking with lld failed (" + Twine(rc) + "): " + errorMessage);
  llvm::sys::fs::remove(objPath);

  // The runtime checks the library's size and FNV-1a hash before loading it,
  // so a truncated or altered file is an error, not a crash in dlopen.
  auto lib = llvm::MemoryBuffer::getFile(soPath);
  if (!lib)
    return fail("cannot read back '" + soPath + "'");
  uint64_t fnv = 0xcbf29ce484222325ULL;
  for (unsigned char c : (*lib)->getBuffer())
    fnv = (fnv ^ c) * 0x100000001b3ULL;

  llvm::json::Object manifest{
      {"format", "moe-artifact/1"},
      {"target", "cpu"},
      {"triple", triple},
      {"cpu", cpu},
      {"library", "layer.so"},
      {"library_size", static_cast<int64_t>((*lib)->getBufferSize())},
      {"library_fnv1a64", llvm::utohexstr(fnv, true)},
      {"content_hash", llvm::utohexstr(llvm::xxh3_64bits(inputText), true)},
      {"entries", std::move(entries)}};
  std::error_code ec;
  llvm::ToolOutputFile out(manifestPath, ec, llvm::sys::fs::OF_Text);
  if (ec)
    return fail("cannot write '" + manifestPath + "': " + ec.message());
  out.os() << llvm::formatv("{0:2}", llvm::json::Value(std::move(manifest)))
           << "\n";
  out.keep();
  llvm::outs() << "moe-compile: wrote " << soPath << " and " << manifestPath
               << "\n";
  return 0;
}
