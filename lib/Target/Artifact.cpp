//===- Artifact.cpp - compile a moe module into a loadable artifact -------===//
//
// moe IR -> (moe-to-llvm-cpu phases) -> LLVM IR -> O3 for the host -> object
// -> ld.lld -shared -> layer.so, plus manifest.json describing the entry
// points for the runtime (argument roles, shapes, dtypes, the layer
// configuration the reference needs, content and library hashes).
//
//===----------------------------------------------------------------------===//

#include "moe/Target/Artifact.h"

#include "moe/Dialect/MoE/IR/LayerOperands.h"

#include "moe/Dialect/MoE/IR/MoE.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"
#include "moe/InitAllMoE.h"
#include "moe/Pipelines/Pipelines.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/xxhash.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"

#include <functional>
#include <mutex>

using namespace mlir;
using llvm::Twine;

namespace {
constexpr const char *kPhaseNames[] = {
    "input", "decompose",    "linalg",  "bufferize",
    "gpu",   "llvm-dialect", "llvm-ir", "object"};

llvm::Error makeError(const Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
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

/// Names the arguments of `fn` that feed operand group `i` of `op` after
/// `roles[i]` (with `prefix`), so the runtime can bind checkpoint tensors
/// and the reference.
template <typename OpTy>
void nameArgs(func::FuncOp fn, OpTy op, ArrayRef<const char *> roles,
              StringRef prefix, SmallVectorImpl<std::string> &argNames) {
  for (auto [i, role] : llvm::enumerate(roles)) {
    auto range = op.getODSOperands(i);
    if (range.empty())
      continue;
    if (auto arg = dyn_cast<BlockArgument>(range.front()))
      if (arg.getOwner()->getParentOp() == fn)
        argNames[arg.getArgNumber()] = (prefix + role).str();
  }
}

/// moe.layer's operand groups (moe/Dialect/MoE/IR/LayerOperands.h).
constexpr llvm::ArrayRef<const char *> kLayerRoles(moe::kLayerOperandNames);
/// moe.ffn operand groups in ODS order.
constexpr const char *kFFNRoles[] = {"input",     "gate",      "up",
                                     "down",      "gate_bias", "up_bias",
                                     "down_bias", "gate_weight"};

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
  if (layer.getScaleInput())
    cfg["scale_input"] = 1;
  if (std::optional<uint64_t> fixed = layer.getExpertCapacity())
    cfg["expert_capacity"] = static_cast<int64_t>(*fixed);
  if (std::optional<ArrayRef<int32_t>> map = layer.getExpertMap()) {
    std::string text;
    llvm::raw_string_ostream ms(text);
    llvm::interleave(*map, ms, ",");
    cfg["expert_map"] = text;
  }
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

/// For a function that is one moe.layer, one moe.ffn, or one moe.cartesian
/// of two moe.layer on its arguments: argument roles and the configuration,
/// so the runtime can bind inputs by name and check results against the
/// reference.
void describeEntry(func::FuncOp fn, SmallVectorImpl<std::string> &argNames,
                   llvm::json::Object &entry) {
  if (fn.getBody().getBlocks().size() != 1)
    return;
  Block &body = fn.getBody().front();
  if (auto layer = soleOp<moe::LayerOp>(body)) {
    nameArgs(fn, layer, kLayerRoles, "", argNames);
    entry["layer"] = layerConfig(layer);
    return;
  }
  if (auto ffn = soleOp<moe::FFNOp>(body)) {
    nameArgs(fn, ffn, kFFNRoles, "", argNames);
    entry["ffn"] = llvm::json::Object{
        {"activation", moe::stringifyActivation(ffn.getActivation()).str()},
        {"alpha", ffn.getAlpha().convertToDouble()},
        {"limit", ffn.getLimit().convertToDouble()}};
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
  nameArgs(fn, first, kLayerRoles, "first.", argNames);
  nameArgs(fn, second, kLayerRoles, "second.", argNames);
  entry["cartesian"] = llvm::json::Object{
      {"epsilon", cart.getEpsilon().convertToDouble()},
      {"first", layerConfig(first)},
      {"second", layerConfig(second)}};
}

/// Adds `void moe_call_<name>(void *result, void **inputs)`, which calls the
/// C interface wrapper with one pointer per input memref descriptor, so the
/// runtime needs no per-arity function pointer types.
void addCallWrapper(llvm::Module &m, StringRef name, unsigned numInputs) {
  llvm::LLVMContext &ctx = m.getContext();
  llvm::Function *ciface = m.getFunction(("_mlir_ciface_" + name).str());
  auto *ptrTy = llvm::PointerType::get(ctx, 0);
  auto *fnTy = llvm::FunctionType::get(llvm::Type::getVoidTy(ctx),
                                       {ptrTy, ptrTy}, false);
  auto *fn = llvm::Function::Create(fnTy, llvm::GlobalValue::ExternalLinkage,
                                    ("moe_call_" + name).str(), m);
  llvm::IRBuilder<> b(llvm::BasicBlock::Create(ctx, "entry", fn));
  SmallVector<llvm::Value *> args{fn->getArg(0)};
  for (unsigned i = 0; i < numInputs; ++i)
    args.push_back(b.CreateLoad(
        ptrTy, b.CreateConstGEP1_64(ptrTy, fn->getArg(1), i)));
  b.CreateCall(ciface, args);
  b.CreateRetVoid();
}

/// Moves the computations of `fn` that read only its weights out of the
/// call: each top-level moe.projected_router (Nexus, MOE_SEMANTICS §1.7:
/// `W_r = P(D)` "depends on no input, so a compiler folds it to a
/// constant") whose operands are arguments of `fn` goes into a new public
/// function `<fn>__derive` (those arguments -> the routers), and `fn` takes
/// each router as a new last argument instead. The runtime calls
/// `<fn>__derive` once per set of weights (Artifact::makeResident), or
/// before each call without resident weights. Returns the new function (or
/// null: nothing to move) and, in `inputs`, the argument indices of `fn`
/// that it takes.
func::FuncOp hoistDerivedWeights(func::FuncOp fn,
                                 SmallVectorImpl<unsigned> &inputs) {
  SmallVector<moe::ProjectedRouterOp> ops;
  for (auto op : fn.getBody().front().getOps<moe::ProjectedRouterOp>())
    if (llvm::all_of(op->getOperands(), [&](Value v) {
          auto arg = dyn_cast<BlockArgument>(v);
          return arg && arg.getOwner() == &fn.getBody().front();
        }))
      ops.push_back(op);
  if (ops.empty())
    return nullptr;
  llvm::SmallSetVector<unsigned, 8> used;
  for (auto op : ops)
    for (Value v : op->getOperands())
      used.insert(cast<BlockArgument>(v).getArgNumber());
  inputs.assign(used.begin(), used.end());
  llvm::sort(inputs);
  SmallVector<Type> argTypes, resultTypes;
  for (unsigned i : inputs)
    argTypes.push_back(fn.getArgumentTypes()[i]);
  for (auto op : ops)
    resultTypes.push_back(op.getType());

  OpBuilder b(fn);
  b.setInsertionPointAfter(fn);
  auto derive = func::FuncOp::create(
      b, fn.getLoc(), (fn.getName() + "__derive").str(),
      b.getFunctionType(argTypes, resultTypes));
  Block *body = derive.addEntryBlock();
  IRMapping map;
  for (auto [k, i] : llvm::enumerate(inputs))
    map.map(fn.getArgument(i), body->getArgument(k));
  b.setInsertionPointToStart(body);
  SmallVector<Value> results;
  for (auto op : ops)
    results.push_back(b.clone(*op, map)->getResult(0));
  func::ReturnOp::create(b, fn.getLoc(), results);

  for (auto op : ops) {
    unsigned idx = fn.getNumArguments();
    if (failed(fn.insertArgument(idx, op.getType(), DictionaryAttr(),
                                 op.getLoc())))
      llvm_unreachable("inserting an argument into a func.func");
    op.getResult().replaceAllUsesWith(fn.getArgument(idx));
    op.erase();
  }
  return derive;
}

/// Why the host code of entry `name` (after moe-to-nvvm: LLVM dialect, the
/// kernels' launches still gpu.launch_func) cannot be captured into a CUDA
/// graph, or "" if it can. A graph replays the captured stream work alone:
/// host code that reads or writes memory (a host op on a buffer, which
/// moe-gpu-async-launches brackets with a stream wait, or the argument of a
/// copy helper) ran once, at the capture, with that call's data, and
/// calls to anything but the mgpu* functions may do so too. The check
/// follows the entry's calls into the module's own functions.
std::string cudaGraphBlocker(ModuleOp module, StringRef name) {
  SymbolTable symbols(module);
  auto root = symbols.lookup<LLVM::LLVMFuncOp>(name);
  if (!root)
    return "its host function was not found";
  SmallVector<LLVM::LLVMFuncOp> work{root};
  llvm::SmallPtrSet<Operation *, 8> seen{root};
  while (!work.empty()) {
    LLVM::LLVMFuncOp fn = work.pop_back_val();
    std::string why;
    fn.walk([&](Operation *op) {
      if (isa<LLVM::LoadOp, LLVM::StoreOp, LLVM::MemcpyOp, LLVM::MemmoveOp,
              LLVM::MemsetOp, LLVM::AtomicRMWOp, LLVM::AtomicCmpXchgOp>(op)) {
        why = "its host code reads or writes memory (" +
              op->getName().getStringRef().str() + " in @" +
              fn.getName().str() + ")";
        return WalkResult::interrupt();
      }
      auto call = dyn_cast<LLVM::CallOp>(op);
      if (!call)
        return WalkResult::advance();
      std::optional<StringRef> callee = call.getCallee();
      if (!callee) {
        why = "its host code makes an indirect call (in @" +
              fn.getName().str() + ")";
        return WalkResult::interrupt();
      }
      if (callee->starts_with("mgpu"))
        return WalkResult::advance();
      auto target = symbols.lookup<LLVM::LLVMFuncOp>(*callee);
      if (!target || target.isExternal()) {
        why = "its host code calls @" + callee->str() + " (in @" +
              fn.getName().str() + ")";
        return WalkResult::interrupt();
      }
      if (seen.insert(target).second)
        work.push_back(target);
      return WalkResult::advance();
    });
    if (!why.empty())
      return why;
  }
  return "";
}

std::optional<std::string> findLinker() {
  for (const char *name : {"ld.lld-22", "ld.lld"})
    if (auto p = llvm::sys::findProgramByName(name))
      return *p;
  if (auto p = llvm::sys::findProgramByName("ld.lld", {"/usr/lib/llvm-22/bin"}))
    return *p;
  return std::nullopt;
}

bool stopsAt(const moe::ArtifactOptions &o, moe::ArtifactPhase p) {
  return o.stopAfter && *o.stopAfter == p;
}
} // namespace

std::optional<moe::ArtifactPhase> moe::parseArtifactPhase(StringRef name) {
  for (auto [i, n] : llvm::enumerate(kPhaseNames))
    if (name == n)
      return static_cast<ArtifactPhase>(i);
  return std::nullopt;
}

StringRef moe::getArtifactPhaseName(ArtifactPhase phase) {
  return kPhaseNames[static_cast<int>(phase)];
}

std::string moe::getStoppablePhaseList() {
  return llvm::join(ArrayRef<const char *>(kPhaseNames).drop_back(), ", ");
}

llvm::Error moe::writeJSONFile(StringRef path, llvm::json::Value value) {
  SmallString<256> tmp(path);
  tmp += ".tmp";
  {
    std::error_code ec;
    llvm::ToolOutputFile out(tmp, ec, llvm::sys::fs::OF_Text);
    if (ec)
      return makeError("cannot write '" + tmp + "': " + ec.message());
    out.os() << llvm::formatv("{0:2}", value) << "\n";
    out.keep();
  }
  if (auto ec = llvm::sys::fs::rename(tmp, path))
    return makeError("cannot write '" + path + "': " + ec.message());
  return llvm::Error::success();
}

std::string moe::getHostCPUFeatures() {
  std::vector<std::string> features;
  for (const auto &f : llvm::sys::getHostCPUFeatures())
    features.push_back((f.second ? "+" : "-") + f.first().str());
  llvm::sort(features);
  return llvm::join(features, ",");
}

StringRef moe::getCompilerVersion() {
  // Bumped when generated code changes for the same IR. Caches also key on
  // the compiler executable itself (moe-compile adds its size and time).
  return "moe-mlir-0.3 (LLVM " LLVM_VERSION_STRING ")";
}

void moe::initializeArtifactCompiler() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    // The pipelines address upstream passes by their registered names.
    registerAllMoEPasses();
  });
}

llvm::Expected<std::optional<std::string>>
moe::parseArtifactTarget(StringRef target) {
  if (target == "cpu")
    return std::optional<std::string>();
  StringRef chip = target;
  if (chip.consume_front("cuda:")) {
    if (moe::minimumPtxVersion(chip))
      return std::optional<std::string>(chip.str());
    return makeError("unknown CUDA chip '" + chip +
                     "' in --target (LLVM 22's NVPTX and CUDA 13 take " +
                     moe::kSupportedChips + "; e.g. cuda:sm_90)");
  }
  return makeError("unknown target '" + target +
                   "' (supported: cpu, cuda:sm_XX with XX >= 75)");
}

llvm::Error moe::compileArtifact(StringRef irText, StringRef outDir,
                                 const ArtifactOptions &options) {
  auto chip = parseArtifactTarget(options.target);
  if (!chip)
    return chip.takeError();
  bool cuda = chip->has_value();
  if (!cuda && options.stopAfter == ArtifactPhase::GPU)
    return makeError("phase 'gpu' exists only for cuda targets");
  if (options.stopAfter == ArtifactPhase::Object)
    return makeError("cannot stop after 'object'");
  if (options.stopAfter && !options.irOut)
    return makeError("--stop-after needs an output stream");
  initializeArtifactCompiler();

  DialectRegistry registry;
  registerAllMoEDialects(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  if (cuda)
    registerGPUPipelineDependencies(registry);
  MLIRContext context(registry, options.mlirThreading
                                    ? MLIRContext::Threading::ENABLED
                                    : MLIRContext::Threading::DISABLED);
  context.loadAllAvailableDialects();
  // A failing pass's error names the op and its source location; the whole
  // op printed after it (a gpu.module of thousands of lines when ptxas
  // fails) would bury it.
  context.printOpOnDiagnostic(false);

  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(irText, options.bufferName),
      llvm::SMLoc());
  SourceMgrDiagnosticHandler diagHandler(sourceMgr, &context);
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return makeError("'" + options.bufferName + "' is not valid moe IR");
  if (stopsAt(options, ArtifactPhase::Input)) {
    module->print(*options.irOut);
    return llvm::Error::success();
  }

  // Manifest entries are taken from the input, before lowering.
  llvm::json::Array entries;
  SmallVector<std::pair<std::string, unsigned>> wrappers;
  SmallVector<func::FuncOp> publicFns;
  for (auto fn : module->getOps<func::FuncOp>())
    publicFns.push_back(fn);
  for (auto fn : publicFns) {
    if (fn.isPrivate() || fn.isExternal())
      continue;
    for (Type t : llvm::concat<const Type>(fn.getArgumentTypes(),
                                           fn.getResultTypes()))
      if (!isa<RankedTensorType>(t))
        return makeError("function '" + fn.getName() +
                         "' has a non-tensor argument or result; entry points "
                         "take and return ranked tensors");
    if (fn.getNumResults() == 0)
      return makeError("function '" + fn.getName() + "' returns nothing");
    SmallVector<std::string> argNames(fn.getNumArguments());
    for (unsigned i = 0; i < fn.getNumArguments(); ++i)
      argNames[i] = "arg" + std::to_string(i);
    llvm::json::Object entry{{"name", fn.getName().str()},
                             {"symbol", ("moe_call_" + fn.getName()).str()}};
    describeEntry(fn, argNames, entry);
    llvm::json::Array args, results;
    for (auto [i, t] : llvm::enumerate(fn.getArgumentTypes()))
      args.push_back(tensorJSON(t, argNames[i]));
    for (Type t : fn.getResultTypes())
      results.push_back(tensorJSON(t, ""));
    entry["args"] = std::move(args);
    entry["results"] = std::move(results);
    // Weight-only computations (a projected router) leave the call: the
    // entry's signature in the manifest stays the caller's; the compiled
    // function takes the derived tensors as further arguments, which the
    // runtime computes with `<fn>__derive` (manifest "derive").
    if (fn.getBody().hasOneBlock()) {
      // The projected router as its own op first (moe.layer keeps it
      // inside until decomposition), then moved out.
      PassManager fold(&context, func::FuncOp::getOperationName());
      fold.addPass(moe::createMoEFoldProjectedRouter());
      if (failed(fold.run(fn)))
        return makeError("function '" + fn.getName() +
                         "': folding its projected router failed");
      SmallVector<unsigned> inputs;
      if (func::FuncOp derive = hoistDerivedWeights(fn, inputs)) {
        llvm::json::Array in, out;
        for (unsigned i : inputs)
          in.push_back(int64_t(i));
        for (auto [k, t] : llvm::enumerate(derive.getResultTypes()))
          out.push_back(tensorJSON(t, "derived." + std::to_string(k)));
        entry["derive"] = llvm::json::Object{
            {"symbol", ("moe_call_" + derive.getName()).str()},
            {"inputs", std::move(in)},
            {"results", std::move(out)}};
        derive->setAttr(LLVM::LLVMDialect::getEmitCWrapperAttrName(),
                        UnitAttr::get(&context));
        wrappers.push_back({derive.getName().str(), derive.getNumArguments()});
      }
    }
    entries.push_back(std::move(entry));
    fn->setAttr(LLVM::LLVMDialect::getEmitCWrapperAttrName(),
                UnitAttr::get(&context));
    wrappers.push_back({fn.getName().str(), fn.getNumArguments()});
  }
  if (entries.empty())
    return makeError("no public function to compile in '" +
                     options.bufferName + "'");

  // MLIR phases: the CPU pipeline, or the GPU one (kernels in a gpu.binary
  // with a cubin for `chip`, host code calling the runtime's mgpu*).
  struct Step {
    std::function<void(OpPassManager &)> build;
    ArtifactPhase phase;
  };
  std::vector<Step> steps;
  // --pipeline-options: parsed by the pipeline's own option parser, which
  // names a bad option on stderr.
  auto parseOptions = [&](auto &out) -> llvm::Error {
    using T = std::remove_reference_t<decltype(*out)>;
    if (options.pipelineOptions.empty())
      return llvm::Error::success();
    std::unique_ptr<T> parsed = T::createFromString(options.pipelineOptions);
    if (!parsed)
      return makeError("invalid pipeline options '" + options.pipelineOptions +
                       "' for " + (cuda ? "moe-to-nvvm" : "moe-to-llvm-cpu"));
    out = std::shared_ptr<T>(std::move(parsed));
    return llvm::Error::success();
  };
  // Whether the compiled code cuts its GEMMs into tasks for the runtime's
  // worker threads (the manifest's "parallel_loops").
  bool parallelLoops = false;
  // The blocked GEMMs' micro-kernel vector width (the manifest's
  // "gemm_vector_bits"; 0: none).
  int64_t gemmVectorBits = 0;
  // Whether buffers come from the runtime's allocator (the manifest's
  // "host_allocator"), which then also frees the returned ones.
  bool runtimeAllocator = false;
  if (!cuda) {
    auto cpuOptions = std::make_shared<moe::CPUPipelineOptions>();
    if (llvm::Error err = parseOptions(cpuOptions))
      return err;
    if (std::string why = moe::checkCPUOptions(*cpuOptions); !why.empty())
      return makeError("pipeline options: " + why);
    parallelLoops = cpuOptions->blockedGemms && cpuOptions->parallel;
    // -1 (the default) is this host's vector width, resolved here so that
    // the manifest records the width the code was built for.
    if (cpuOptions->gemmVectorBits < 0)
      cpuOptions->gemmVectorBits = moe::hostGemmVectorBits();
    if (cpuOptions->blockedGemms)
      gemmVectorBits = cpuOptions->gemmVectorBits;
    runtimeAllocator = cpuOptions->runtimeAllocator;
    for (auto [p, phase] :
         {std::pair{moe::CPUPhase::Decompose, ArtifactPhase::Decompose},
          std::pair{moe::CPUPhase::Linalg, ArtifactPhase::Linalg},
          std::pair{moe::CPUPhase::Bufferize, ArtifactPhase::Bufferize},
          std::pair{moe::CPUPhase::LLVMDialect, ArtifactPhase::LLVMDialect}})
      steps.push_back({[p = p, cpuOptions](OpPassManager &pm) {
                         moe::buildCPUPhase(pm, p, *cpuOptions);
                       },
                       phase});
  } else {
    auto gpuOptions = std::make_shared<moe::GPUPipelineOptions>();
    if (llvm::Error err = parseOptions(gpuOptions))
      return err;
    if (gpuOptions->chip.hasValue() && gpuOptions->chip != **chip &&
        StringRef(options.pipelineOptions).contains("chip"))
      return makeError("the chip comes from --target (" + **chip +
                       "), not from the pipeline options");
    gpuOptions->chip = **chip; // features: the chip's (pipeline default)
    if (std::string why = moe::checkGPUOptions(*gpuOptions); !why.empty())
      return makeError("pipeline options: " + why);
    for (auto [p, phase] :
         {std::pair{moe::GPUPhase::Decompose, ArtifactPhase::Decompose},
          std::pair{moe::GPUPhase::Linalg, ArtifactPhase::Linalg},
          std::pair{moe::GPUPhase::Bufferize, ArtifactPhase::Bufferize},
          std::pair{moe::GPUPhase::GPUMap, ArtifactPhase::GPU}})
      steps.push_back({[p = p, gpuOptions](OpPassManager &pm) {
                         moe::buildGPUPhase(pm, p, *gpuOptions);
                       },
                       phase});
    steps.push_back({[gpuOptions](OpPassManager &pm) {
                       moe::buildGPUPhase(pm, moe::GPUPhase::NVVM, *gpuOptions);
                       moe::buildGPUPhase(pm, moe::GPUPhase::Binary,
                                          *gpuOptions);
                     },
                     ArtifactPhase::LLVMDialect});
  }
  for (Step &step : steps) {
    PassManager pm(&context);
    step.build(pm);
    if (failed(pm.run(*module)))
      return makeError("phase '" + getArtifactPhaseName(step.phase) +
                       "' failed");
    if (stopsAt(options, step.phase)) {
      module->print(*options.irOut);
      return llvm::Error::success();
    }
  }

  // cuda: whether each entry's host code can be captured into a CUDA graph
  // (the manifest's "cuda_graph_blocker": "" if it can, else why not).
  if (cuda)
    for (llvm::json::Value &e : entries) {
      llvm::json::Object &entry = *e.getAsObject();
      entry["cuda_graph_blocker"] =
          cudaGraphBlocker(*module, *entry.getString("name"));
    }

  // LLVM IR, optimised for this host.
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(*module, llvmContext, "moe_layer");
  if (!llvmModule)
    return makeError("translation to LLVM IR failed");
  for (auto &[name, numInputs] : wrappers)
    addCallWrapper(*llvmModule, name, numInputs);
  // Whether the code uses AMX tiles (gemm-amx, where a GEMM qualified): the
  // manifest's "amx_tiles", for which the runtime asks the OS for the tile
  // state before loading.
  bool amxTiles = llvm::any_of(llvmModule->functions(), [](llvm::Function &f) {
    return f.isIntrinsic() && (f.getName().starts_with("llvm.x86.tile") ||
                               f.getName().starts_with("llvm.x86.tdp"));
  });

  std::string errorMessage;
  std::string triple = llvm::sys::getDefaultTargetTriple();
  const llvm::Target *tgt =
      llvm::TargetRegistry::lookupTarget(llvm::Triple(triple), errorMessage);
  if (!tgt)
    return makeError("no LLVM target for '" + triple + "': " + errorMessage);
  // CPU artifacts are tuned for this host. The host code of a cuda artifact
  // only launches kernels and travels to the GPU machine, whose CPU may lack
  // this one's extensions: it targets the baseline x86-64.
  std::string cpu = cuda ? "x86-64" : llvm::sys::getHostCPUName().str();
  llvm::SubtargetFeatures features(cuda ? "" : moe::getHostCPUFeatures());
  // Code on AMX tiles compiles on any x86-64 host (gemm-amx=1 where CPUID
  // lacks AMX: building for another machine); it runs only where the
  // runtime gets the tile state, and the runtime refuses it elsewhere.
  if (amxTiles) {
    features.AddFeature("amx-tile");
    features.AddFeature("amx-bf16");
  }
  llvm::TargetOptions to;
  // Constructors (a cuda artifact's kernel-module load) go in .init_array,
  // which the dynamic loader runs; the legacy .ctors section is ignored.
  to.UseInitArray = true;
  std::unique_ptr<llvm::TargetMachine> tm(tgt->createTargetMachine(
      llvm::Triple(triple), cpu, features.getString(), to, llvm::Reloc::PIC_));
  llvmModule->setDataLayout(tm->createDataLayout());
  llvmModule->setTargetTriple(llvm::Triple(triple));
  if (auto err = makeOptimizingTransformer(3, 0, tm.get())(llvmModule.get()))
    return makeError("LLVM optimisation failed: " +
                     llvm::toString(std::move(err)));
  if (stopsAt(options, ArtifactPhase::LLVMIR)) {
    llvmModule->print(*options.irOut, nullptr);
    return llvm::Error::success();
  }

  // Object file, then a shared object through lld.
  if (auto ec = llvm::sys::fs::create_directories(outDir))
    return makeError("cannot create '" + outDir + "': " + ec.message());
  SmallString<256> objPath(outDir), soPath(outDir), manifestPath(outDir);
  llvm::sys::path::append(objPath, "layer.o");
  llvm::sys::path::append(soPath, "layer.so");
  llvm::sys::path::append(manifestPath, "manifest.json");
  {
    std::error_code ec;
    llvm::ToolOutputFile obj(objPath, ec, llvm::sys::fs::OF_None);
    if (ec)
      return makeError("cannot write '" + objPath + "': " + ec.message());
    llvm::legacy::PassManager pm;
    if (tm->addPassesToEmitFile(pm, obj.os(), nullptr,
                                llvm::CodeGenFileType::ObjectFile))
      return makeError("the target cannot emit object files");
    pm.run(*llvmModule);
    obj.keep();
  }
  std::optional<std::string> lld = findLinker();
  if (!lld)
    return makeError("ld.lld not found (install lld-22)");
  // Undefined math functions (expf, erff, ...) and memrefCopy are resolved
  // when the runtime loads the object: libm and libmoe_runtime provide them.
  SmallVector<StringRef> linkArgs{*lld, "-shared", "-o", soPath, objPath};
  if (int rc = llvm::sys::ExecuteAndWait(*lld, linkArgs, std::nullopt, {}, 0,
                                         0, &errorMessage))
    return makeError("linking with lld failed (" + Twine(rc) +
                     "): " + errorMessage);
  llvm::sys::fs::remove(objPath);

  // The runtime checks the library's size and FNV-1a hash before loading it,
  // so a truncated or altered file is an error, not a crash in dlopen.
  auto lib = llvm::MemoryBuffer::getFile(soPath);
  if (!lib)
    return makeError("cannot read back '" + soPath + "'");
  uint64_t fnv = 0xcbf29ce484222325ULL;
  for (unsigned char c : (*lib)->getBuffer())
    fnv = (fnv ^ c) * 0x100000001b3ULL;

  llvm::json::Object manifest{
      {"format", "moe-artifact/1"},
      {"target", cuda ? "cuda" : "cpu"},
      {"chip", cuda ? **chip : std::string()},
      {"triple", triple},
      {"cpu", cpu},
      {"library", "layer.so"},
      {"library_size", static_cast<int64_t>((*lib)->getBufferSize())},
      {"library_fnv1a64", llvm::utohexstr(fnv, true)},
      {"content_hash", llvm::utohexstr(llvm::xxh3_64bits(irText), true)},
      {"pipeline_options", options.pipelineOptions},
      {"parallel_loops", parallelLoops},
      {"gemm_vector_bits", gemmVectorBits},
      {"host_allocator", runtimeAllocator ? "moe-runtime" : "libc"},
      {"amx_tiles", amxTiles},
      {"entries", std::move(entries)}};
  // Written last and atomically: a manifest present means a complete
  // artifact (the model compiler's cache relies on it).
  return writeJSONFile(manifestPath, std::move(manifest));
}
