//===- GPUPipeline.cpp - moe IR to NVVM kernels and a cubin -----*- C++ -*-===//
//
// The `moe-to-nvvm` pipeline: moe layers on tensors -> bufferized linalg (the
// CPU pipeline's first phases) -> parallel loops tiled into thread blocks ->
// gpu.launch -> outlined kernels in one gpu.module -> NVVM + host LLVM
// dialect calling the mgpu* runtime ABI -> gpu.binary (cubin, PTX or
// fatbin). docs/notes/gpu-path.md describes the design.
//
// What was learned from upstream (no code copied):
//  * mlir/lib/Dialect/GPU/Pipelines/GPUToNVVMPipeline.cpp orders the lowering
//    as: outline kernels, lower scf/func/affine/arith on host and device,
//    attach the NVVM target, then inside gpu.module convert-gpu-to-nvvm +
//    llvm-optimize-for-nvvm-target + reconcile casts, then gpu-to-llvm for the
//    host, then gpu-module-to-binary last. The NVVM phase below follows that
//    order.
//  * mlir/lib/Dialect/GPU/Transforms/ParallelLoopMapper.cpp (the greedy
//    gpu-map-parallel-loops) maps the outermost scf.parallel to blocks and the
//    next level to threads, dimension i to x/y/z in order. We set the same
//    mapping attribute ourselves instead, because the contiguous (innermost)
//    dimension must be thread x for coalescing and the token dimension (the
//    dynamic one, possibly large) must be block x, whose limit is 2^31-1
//    rather than 65535.
//  * scf-parallel-loop-tiling{no-min-max-bounds} (SCF/Transforms/
//    ParallelLoopTiling.cpp) gives inner loops constant trip counts with an
//    scf.if guard, which convert-parallel-loops-to-gpu needs for block sizes.
//  * gpu-kernel-outlining does not sink constants into the kernels by
//    itself (loop bounds became kernel parameters); upstream has
//    gpu-launch-sink-index-computations for that, run just before it.
//  * gpu-to-llvm lowers gpu.alloc host_shared only without async
//    dependencies, and gpu.dealloc only with exactly one async dependency;
//    gpu.launch_func is lowered at LLVM IR translation time (a global ctor
//    loads the module with mgpuModuleLoad, each launch is
//    mgpuStreamCreate/mgpuLaunchKernel/mgpuStreamSynchronize/Destroy).
//
//===----------------------------------------------------------------------===//

#include "moe/Pipelines/Pipelines.h"

#include "PipelineUtils.h"

#include "moe/Conversion/Passes.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/ParallelLoopMapper.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/FunctionCallUtils.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/ViewLikeInterface.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>

using namespace mlir;
using namespace mlir::moe;
using mlir::moe::detail::addUpstream;

void mlir::moe::registerGPUPipelineDependencies(DialectRegistry &registry) {
  // gpu-module-to-binary asks the #nvvm.target attribute (an external model)
  // to serialize; serializing translates the gpu.module to LLVM IR, and the
  // final translation embeds gpu.binary and lowers gpu.launch_func. Those
  // need the dialects' LLVM IR translation interfaces.
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  registerBuiltinDialectTranslation(registry);
  registerGPUDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
  // #gpu.select_object embeds the cubin in the host module.
  gpu::registerOffloadingLLVMTranslationInterfaceExternalModels(registry);
}

/// True for ops of the host program: not in a kernel (gpu.launch body) and
/// not in device code (gpu.module).
static bool isHostOp(Operation *op) {
  return !op->getParentOfType<gpu::LaunchOp>() &&
         !op->getParentOfType<gpu::GPUModuleOp>();
}

namespace {

//===----------------------------------------------------------------------===//
// moe-gpu-copy-to-linalg
//===----------------------------------------------------------------------===//

/// memref.copy on the host would run through memrefCopy on the CPU, touching
/// managed memory page by page; as linalg.copy it becomes a parallel loop and
/// then a kernel like every other linalg op.
struct CopyToLinalgPass
    : public PassWrapper<CopyToLinalgPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(CopyToLinalgPass)
  StringRef getArgument() const final { return "moe-gpu-copy-to-linalg"; }
  StringRef getDescription() const final {
    return "Rewrite host memref.copy between ranked memrefs as linalg.copy "
           "(so that it becomes a GPU kernel)";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<linalg::LinalgDialect>();
  }
  void runOnOperation() override {
    SmallVector<memref::CopyOp> copies;
    getOperation()->walk([&](memref::CopyOp op) {
      auto src = dyn_cast<MemRefType>(op.getSource().getType());
      auto dst = dyn_cast<MemRefType>(op.getTarget().getType());
      // 0-d copies stay scalar host code: no loop to map.
      if (src && dst && src.getRank() > 0 && isHostOp(op))
        copies.push_back(op);
    });
    for (memref::CopyOp op : copies) {
      OpBuilder b(op);
      linalg::CopyOp::create(b, op.getLoc(), op.getSource(), op.getTarget());
      op.erase();
    }
  }
};

//===----------------------------------------------------------------------===//
// moe-gpu-map-parallel-loops
//===----------------------------------------------------------------------===//

/// Tiles every outermost host scf.parallel into (blocks) x (threads of a
/// block) and sets the mapping attribute that convert-parallel-loops-to-gpu
/// reads.
struct MapParallelLoopsPass
    : public PassWrapper<MapParallelLoopsPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(MapParallelLoopsPass)
  MapParallelLoopsPass() = default;
  MapParallelLoopsPass(const MapParallelLoopsPass &other)
      : PassWrapper(other) {}

  StringRef getArgument() const final { return "moe-gpu-map-parallel-loops"; }
  StringRef getDescription() const final {
    return "Tile outermost scf.parallel loops into thread blocks and map "
           "them onto GPU blocks/threads (innermost dimension -> thread x, "
           "dynamic dimension -> block x)";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<gpu::GPUDialect, affine::AffineDialect,
                    arith::ArithDialect, scf::SCFDialect>();
  }

  Option<int64_t> blockSize{
      *this, "block-size",
      llvm::cl::desc("Threads per block that the automatic tiling fills, "
                     "innermost dimension first (at most 1024)"),
      llvm::cl::init(256)};
  ListOption<int64_t> tileSizes{
      *this, "tile-sizes",
      llvm::cl::desc("Explicit threads per block for each dimension, "
                     "innermost first (e.g. 64,4); empty: automatic")};

  /// Threads per dimension of `op` (its iteration order), innermost filled
  /// first; at most three dimensions get more than one thread (x, y, z;
  /// z at most 64).
  SmallVector<int64_t> threadTile(scf::ParallelOp op) {
    unsigned n = op.getNumLoops();
    SmallVector<int64_t> tile(n, 1);
    int64_t budget = blockSize;
    unsigned mapped = 0;
    for (int i = n - 1; i >= 0 && mapped < 3; --i) {
      unsigned fromInner = n - 1 - i;
      int64_t t;
      if (!tileSizes.empty()) {
        t = fromInner < tileSizes.size() ? tileSizes[fromInner] : 1;
      } else {
        if (budget <= 1)
          break;
        std::optional<int64_t> lb = getConstantIntValue(op.getLowerBound()[i]);
        std::optional<int64_t> ub = getConstantIntValue(op.getUpperBound()[i]);
        std::optional<int64_t> st = getConstantIntValue(op.getStep()[i]);
        if (lb && ub && st && *st > 0)
          t = std::min<int64_t>(std::max<int64_t>((*ub - *lb + *st - 1) / *st,
                                                  1),
                                budget);
        else
          t = budget;
      }
      if (mapped == 2)
        t = std::min<int64_t>(t, 64);
      t = std::max<int64_t>(t, 1);
      tile[i] = t;
      if (t > 1) {
        budget /= t;
        ++mapped;
      }
    }
    return tile;
  }

  LogicalResult mapLoop(scf::ParallelOp op) {
    MLIRContext *ctx = op.getContext();
    SmallVector<int64_t> tile = threadTile(op);
    int64_t threads = 1;
    for (int64_t t : tile)
      threads *= t;
    if (threads > 1024)
      return op.emitError("moe-gpu-map-parallel-loops: ")
             << threads << " threads per block (at most 1024)";

    // Static trip counts of the block loop, before tiling (-1: dynamic).
    SmallVector<int64_t> blocks;
    for (unsigned i = 0, n = op.getNumLoops(); i < n; ++i) {
      std::optional<int64_t> lb = getConstantIntValue(op.getLowerBound()[i]);
      std::optional<int64_t> ub = getConstantIntValue(op.getUpperBound()[i]);
      std::optional<int64_t> st = getConstantIntValue(op.getStep()[i]);
      if (lb && ub && st && *st > 0) {
        int64_t trip = std::max<int64_t>((*ub - *lb + *st - 1) / *st, 0);
        blocks.push_back((trip + tile[i] - 1) / tile[i]);
      } else {
        blocks.push_back(-1);
      }
    }

    auto [outer, inner] =
        scf::tileParallelLoop(op, tile, /*noMinMaxBounds=*/true);

    AffineMap id = AffineMap::getMultiDimIdentityMap(1, ctx);
    auto dim = [&](gpu::Processor p) {
      return gpu::ParallelLoopDimMappingAttr::get(ctx, p, id, id);
    };

    // Blocks: dynamic dimensions first (the token count: block x has the
    // large limit), then static ones with more than one block; the rest
    // (one block, or beyond z) run sequentially inside the kernel.
    const gpu::Processor blockIds[] = {gpu::Processor::BlockX,
                                       gpu::Processor::BlockY,
                                       gpu::Processor::BlockZ};
    SmallVector<gpu::ParallelLoopDimMappingAttr> outerMap(
        blocks.size(), dim(gpu::Processor::Sequential));
    unsigned nextBlock = 0;
    for (int pass = 0; pass < 2; ++pass)
      for (int i = blocks.size() - 1; i >= 0; --i) {
        bool wanted = pass == 0 ? blocks[i] < 0 : blocks[i] > 1;
        if (wanted && nextBlock < 3)
          outerMap[i] = dim(blockIds[nextBlock++]);
      }
    // Threads: innermost dimension -> x, then y, z.
    const gpu::Processor threadIds[] = {gpu::Processor::ThreadX,
                                        gpu::Processor::ThreadY,
                                        gpu::Processor::ThreadZ};
    SmallVector<gpu::ParallelLoopDimMappingAttr> innerMap(
        tile.size(), dim(gpu::Processor::Sequential));
    unsigned nextThread = 0;
    for (int i = tile.size() - 1; i >= 0; --i)
      if (tile[i] > 1 && nextThread < 3)
        innerMap[i] = dim(threadIds[nextThread++]);

    if (failed(gpu::setMappingAttr(outer, outerMap)) ||
        failed(gpu::setMappingAttr(inner, innerMap)))
      return outer.emitError("moe-gpu-map-parallel-loops: invalid mapping");
    return success();
  }

  void runOnOperation() override {
    if (tileSizes.empty() && (blockSize < 1 || blockSize > 1024)) {
      getOperation().emitError("moe-gpu-map-parallel-loops: block-size must "
                               "be in [1, 1024]");
      return signalPassFailure();
    }
    SmallVector<scf::ParallelOp> roots;
    getOperation()->walk([&](scf::ParallelOp op) {
      if (!op->getParentOfType<scf::ParallelOp>() && isHostOp(op) &&
          !op->hasAttr(gpu::getMappingAttrName()))
        roots.push_back(op);
    });
    for (scf::ParallelOp op : roots)
      if (failed(mapLoop(op)))
        return signalPassFailure();
  }
};

//===----------------------------------------------------------------------===//
// moe-gpu-host-shared-alloc
//===----------------------------------------------------------------------===//

/// True if `v` (followed through views) is used inside a gpu.launch.
static bool reachesKernel(Value v) {
  SmallVector<Value> work{v};
  DenseSet<Value> seen;
  while (!work.empty()) {
    Value cur = work.pop_back_val();
    if (!seen.insert(cur).second)
      continue;
    for (OpOperand &use : cur.getUses()) {
      Operation *user = use.getOwner();
      // A kernel body, or a launch of an already formed kernel (the expert
      // kernels).
      if (user->getParentOfType<gpu::LaunchOp>() ||
          isa<gpu::LaunchFuncOp>(user))
        return true;
      if (isa<ViewLikeOpInterface, memref::CastOp>(user))
        for (Value r : user->getResults())
          work.push_back(r);
    }
  }
  return false;
}

/// Kernels cannot read host malloc memory: every host allocation becomes
/// managed memory (gpu.alloc host_shared -> mgpuMemAlloc(size, null, true)
/// -> cuMemAllocManaged), which host code that remains (loops around
/// launches, scalar loads, the deallocation helpers) can still use directly
/// because no kernel is running then: launches are synchronous until
/// moe-gpu-async-launches queues them, which puts a wait before any such
/// host op.
struct HostSharedAllocPass
    : public PassWrapper<HostSharedAllocPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(HostSharedAllocPass)
  StringRef getArgument() const final { return "moe-gpu-host-shared-alloc"; }
  StringRef getDescription() const final {
    return "Rewrite host memref.alloc/dealloc as gpu.alloc host_shared / "
           "gpu.dealloc (managed memory, reachable from kernels)";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<gpu::GPUDialect>();
  }
  void runOnOperation() override {
    ModuleOp module = getOperation();
    // Constant tables (bufferized dense constants) used directly by a kernel
    // are read from a copy of the global in device memory: the get_global is
    // cloned into the launch body and gpu-kernel-outlining copies the
    // memref.global into the gpu.module.
    SmallVector<memref::GetGlobalOp> globals;
    module->walk([&](memref::GetGlobalOp op) {
      if (isHostOp(op))
        globals.push_back(op);
    });
    for (memref::GetGlobalOp op : globals) {
      llvm::DenseMap<Operation *, Value> perLaunch;
      for (OpOperand &use : llvm::make_early_inc_range(op->getUses())) {
        auto launch = use.getOwner()->getParentOfType<gpu::LaunchOp>();
        if (!launch)
          continue;
        Value &local = perLaunch[launch];
        if (!local) {
          OpBuilder b = OpBuilder::atBlockBegin(&launch.getBody().front());
          local = b.clone(*op)->getResult(0);
        }
        use.set(local);
      }
      if (op->use_empty())
        op.erase();
    }

    bool failed = false;
    // Stack and global buffers cannot be made device-visible here: refuse
    // them clearly instead of producing a kernel that faults.
    module->walk([&](Operation *op) {
      if (!isa<memref::AllocaOp, memref::GetGlobalOp>(op) || !isHostOp(op))
        return;
      if (reachesKernel(op->getResult(0))) {
        op->emitOpError("buffer is used by a GPU kernel but is not heap "
                        "memory: moe-to-nvvm cannot make it device-visible");
        failed = true;
      }
    });
    if (failed)
      return signalPassFailure();

    SmallVector<memref::AllocOp> allocs;
    SmallVector<memref::DeallocOp> deallocs;
    module->walk([&](Operation *op) {
      if (!isHostOp(op))
        return;
      if (auto a = dyn_cast<memref::AllocOp>(op))
        allocs.push_back(a);
      else if (auto d = dyn_cast<memref::DeallocOp>(op))
        deallocs.push_back(d);
    });
    for (memref::AllocOp op : allocs) {
      OpBuilder b(op);
      // No alignment attribute: managed allocations are 256-byte aligned.
      auto alloc = gpu::AllocOp::create(
          b, op.getLoc(), op.getType(), /*asyncToken=*/Type(),
          /*asyncDependencies=*/ValueRange(), op.getDynamicSizes(),
          op.getSymbolOperands(), b.getUnitAttr());
      op.replaceAllUsesWith(alloc.getMemref());
      op.erase();
    }
    // gpu-to-llvm lowers gpu.dealloc only as an async op with one
    // dependency: wait on a fresh stream, free on it, wait for it.
    for (memref::DeallocOp op : deallocs) {
      OpBuilder b(op);
      Type token = gpu::AsyncTokenType::get(b.getContext());
      Value start = gpu::WaitOp::create(b, op.getLoc(), token, ValueRange())
                        .getAsyncToken();
      Value freed = gpu::DeallocOp::create(b, op.getLoc(), token,
                                           ValueRange{start}, op.getMemref())
                        .getAsyncToken();
      gpu::WaitOp::create(b, op.getLoc(), Type(), ValueRange{freed});
      op.erase();
    }
  }
};

//===----------------------------------------------------------------------===//
// moe-gpu-async-launches
//===----------------------------------------------------------------------===//

/// Launches in a row no longer wait for each other on the host: within a
/// block, each gpu.launch_func becomes async, depending on the previous
/// one (one stream: the runtime's per-thread stream), and a blocking
/// gpu.wait goes before the first op after them that may touch memory on
/// the host (a host load or store, a call, an op it does not know) or
/// leave the function, so host code still sees every kernel's results.
/// Pure ops and the host_shared allocations in between (which hand out
/// memory no queued kernel uses) do not wait. The rule is upstream's
/// gpu-async-region (mlir/lib/Dialect/GPU/Transforms/AsyncRegionRewriter.cpp:
/// thread a token through the async ops, wait before side effects and
/// terminators), which itself cannot run here: it would make the
/// host_shared gpu.alloc async, which gpu-to-llvm does not lower.
///
/// Two more kinds of op join the chain instead of ending it:
///  * deallocations: moe-gpu-host-shared-alloc frees each buffer as
///    `wait async; dealloc async; wait`; the dealloc now depends on the
///    chain and the waits go, so a buffer is freed in stream order after
///    the kernels queued before it (the runtime's allocation cache hands
///    such a block to the same stream at once, to anyone else once that
///    stream has passed the free: runtime/lib/CudaRuntime.cpp, Pool);
///  * an scf.if whose regions hold only ops of the chain (launches,
///    deallocations, host_shared allocations, pure ops, such scf.if): the
///    host-side branches between kernel sets and routing variants. The
///    chain's token goes into both regions and comes out as an extra
///    result (each region yields its own chain's end), so the branch no
///    longer synchronizes at its end.
/// A layer's call then synchronizes once, before it returns.
struct AsyncLaunchesPass
    : public PassWrapper<AsyncLaunchesPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(AsyncLaunchesPass)
  StringRef getArgument() const final { return "moe-gpu-async-launches"; }
  StringRef getDescription() const final {
    return "Chain kernel launches, deallocations and the host branches "
           "around them on one stream with a single host wait before the "
           "next host side effect, instead of a wait after each";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<gpu::GPUDialect, scf::SCFDialect>();
  }

  static bool transparent(Operation *op) {
    if (auto alloc = dyn_cast<gpu::AllocOp>(op))
      return alloc.getHostShared() && !alloc.getAsyncToken();
    // Runtime calls that take buffer addresses but read no buffer contents
    // (the expert kernels' TMA tensor maps, mgpuTensorMap3D).
    if (auto call = dyn_cast<func::CallOp>(op)) {
      auto callee = SymbolTable::lookupNearestSymbolFrom<func::FuncOp>(
          op, call.getCalleeAttr());
      return callee && callee->hasAttr(kNoBufferAccessAttr);
    }
    return isMemoryEffectFree(op);
  }

  static bool syncLaunch(Operation *op) {
    auto launch = dyn_cast<gpu::LaunchFuncOp>(op);
    return launch && !launch.getAsyncToken() &&
           launch.getAsyncDependencies().empty();
  }

  /// The dealloc of a `%s = gpu.wait async; %d = gpu.dealloc async [%s] %m;
  /// gpu.wait [%d]` triple starting at `op`, or null.
  static gpu::DeallocOp deallocTriple(Operation *op) {
    auto start = dyn_cast<gpu::WaitOp>(op);
    if (!start || !start.getAsyncToken() ||
        !start.getAsyncDependencies().empty() ||
        !start.getAsyncToken().hasOneUse())
      return {};
    auto dealloc = dyn_cast_or_null<gpu::DeallocOp>(start->getNextNode());
    if (!dealloc || dealloc.getAsyncDependencies().size() != 1 ||
        dealloc.getAsyncDependencies()[0] != start.getAsyncToken())
      return {};
    auto end = dyn_cast_or_null<gpu::WaitOp>(dealloc->getNextNode());
    if (!end || end.getAsyncToken() || end.getAsyncDependencies().size() != 1 ||
        end.getAsyncDependencies()[0] != dealloc.getAsyncToken() ||
        !dealloc.getAsyncToken().hasOneUse())
      return {};
    return dealloc;
  }

  /// Whether every op of `ifOp`'s regions can join a chain.
  static bool chainable(scf::IfOp ifOp) {
    for (Region *region : {&ifOp.getThenRegion(), &ifOp.getElseRegion()})
      for (Block &block : *region)
        for (Operation *op = block.empty() ? nullptr : &block.front(); op;
             op = op->getNextNode()) {
          if (gpu::DeallocOp d = deallocTriple(op)) {
            op = d->getNextNode(); // the triple's end
            continue;
          }
          auto nested = dyn_cast<scf::IfOp>(op);
          if (!(syncLaunch(op) || isa<scf::YieldOp>(op) ||
                (nested ? chainable(nested) : transparent(op))))
            return false;
        }
    return true;
  }

  /// Threads the chain `token` (null: none yet) through `block` and
  /// returns the token of its end. The terminator of a block of a chained
  /// scf.if (`inRegion`) is left to the caller; any other terminator waits.
  Value chain(Block *block, Value token, bool inRegion,
              llvm::DenseSet<Block *> &done) {
    done.insert(block);
    Type tokenType = gpu::AsyncTokenType::get(&getContext());
    auto start = [&](Operation *before) {
      if (!token) {
        OpBuilder b(before);
        token =
            gpu::WaitOp::create(b, before->getLoc(), tokenType, ValueRange())
                .getAsyncToken();
      }
    };
    Operation *next = nullptr;
    for (Operation *op = block->empty() ? nullptr : &block->front(); op;
         op = next) {
      next = op->getNextNode();
      if (syncLaunch(op)) {
        auto launch = cast<gpu::LaunchFuncOp>(op);
        start(launch);
        OpBuilder b(launch);
        auto async = gpu::LaunchFuncOp::create(
            b, launch.getLoc(), launch.getKernelAttr(),
            launch.getGridSizeOperandValues(),
            launch.getBlockSizeOperandValues(),
            launch.getDynamicSharedMemorySize(), launch.getKernelOperands(),
            tokenType, ValueRange{token},
            launch.hasClusterSize()
                ? std::optional(launch.getClusterSizeOperandValues())
                : std::nullopt);
        token = async.getAsyncToken();
        launch.erase();
        continue;
      }
      if (gpu::DeallocOp dealloc = deallocTriple(op)) {
        Operation *end = dealloc->getNextNode();
        next = end->getNextNode();
        end->erase();
        if (token) {
          dealloc.getAsyncDependenciesMutable().assign(token);
          op->erase();
        }
        token = dealloc.getAsyncToken();
        continue;
      }
      // (A pure scf.if, e.g. index arithmetic, is transparent below.)
      if (auto ifOp = dyn_cast<scf::IfOp>(op);
          ifOp && !isMemoryEffectFree(ifOp) && chainable(ifOp)) {
        start(ifOp);
        OpBuilder b(ifOp);
        SmallVector<Type> types(ifOp.getResultTypes());
        types.push_back(tokenType);
        auto threaded =
            scf::IfOp::create(b, ifOp.getLoc(), types, ifOp.getCondition(),
                              /*addThenBlock=*/false, /*addElseBlock=*/false);
        threaded.getThenRegion().takeBody(ifOp.getThenRegion());
        threaded.getElseRegion().takeBody(ifOp.getElseRegion());
        if (threaded.getElseRegion().empty()) {
          b.createBlock(&threaded.getElseRegion());
          scf::YieldOp::create(b, ifOp.getLoc());
        }
        for (Region *region :
             {&threaded.getThenRegion(), &threaded.getElseRegion()}) {
          Block &body = region->front();
          Value end = chain(&body, token, /*inRegion=*/true, done);
          cast<scf::YieldOp>(body.getTerminator())
              .getResultsMutable()
              .append(end);
        }
        ifOp.replaceAllUsesWith(threaded.getResults().drop_back());
        ifOp.erase();
        token = threaded.getResults().back();
        continue;
      }
      if (!token)
        continue;
      if (op->hasTrait<OpTrait::IsTerminator>()) {
        if (inRegion)
          return token;
      } else if (transparent(op)) {
        continue;
      }
      OpBuilder b(op);
      gpu::WaitOp::create(b, op->getLoc(), Type(), ValueRange{token});
      token = Value();
    }
    return token;
  }

  void runOnOperation() override {
    SmallVector<Block *> blocks;
    getOperation()->walk<WalkOrder::PreOrder>([&](Block *block) {
      // Only host code: kernels have no launches.
      if (!block->getParentOp()->getParentOfType<gpu::GPUModuleOp>() &&
          !isa<gpu::GPUModuleOp>(block->getParentOp()))
        blocks.push_back(block);
    });
    // A block of an scf.if that joined its parent's chain is done with it;
    // the others (loop bodies, branches with host side effects) each get
    // a chain of their own.
    llvm::DenseSet<Block *> done;
    for (Block *block : blocks)
      if (!done.contains(block))
        chain(block, Value(), /*inRegion=*/false, done);
  }
};

//===----------------------------------------------------------------------===//
// moe-gpu-stream-waits
//===----------------------------------------------------------------------===//

/// gpu-to-llvm lowers an async token to the stream its op runs on (an async
/// launch, dealloc, memcpy or memset runs on its first dependency's stream
/// and returns it), but its gpu.wait lowering recognises a stream only by
/// its definition, a call to mgpuStreamCreate, and takes any other token
/// for an event (mlir/lib/Conversion/GPUCommon/GPUToLLVMConversion.cpp,
/// ConvertWaitOpToGpuRuntimeCallPattern: "this assumes that we use events
/// in control flow code as well"). The tokens that moe-gpu-async-launches
/// threads through scf.if become block arguments under convert-scf-to-cf,
/// so a wait on them would call mgpuEventSynchronize and mgpuEventDestroy
/// on a stream. This pass, run between the two, lowers each blocking
/// gpu.wait whose token traces back (through those ops' first dependency)
/// to a block argument itself: mgpuStreamSynchronize and mgpuStreamDestroy
/// on the token's stream, as upstream does for a stream. moe-to-nvvm
/// creates no events, so every token is a stream.
struct StreamWaitsPass
    : public PassWrapper<StreamWaitsPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(StreamWaitsPass)
  StringRef getArgument() const final { return "moe-gpu-stream-waits"; }
  StringRef getDescription() const final {
    return "Lower blocking gpu.wait on tokens passed through control flow "
           "(block arguments) to stream synchronisation calls, which "
           "gpu-to-llvm would take for events";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<LLVM::LLVMDialect>();
  }

  /// The token whose stream `token` runs on after gpu-to-llvm.
  static Value streamRoot(Value token) {
    while (Operation *op = token.getDefiningOp()) {
      auto async = dyn_cast<gpu::AsyncOpInterface>(op);
      if (!async || isa<gpu::WaitOp>(op) ||
          async.getAsyncDependencies().empty())
        break;
      token = async.getAsyncDependencies().front();
    }
    return token;
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<gpu::WaitOp> waits;
    bool unsupported = false;
    module->walk([&](gpu::WaitOp wait) {
      bool fromBlock = llvm::any_of(wait.getAsyncDependencies(), [](Value v) {
        return isa<BlockArgument>(streamRoot(v));
      });
      if (!fromBlock)
        return;
      if (wait.getAsyncToken()) {
        wait.emitOpError("moe-gpu-stream-waits: an async wait on a token "
                         "passed through control flow is not supported "
                         "(gpu-to-llvm would take it for an event)");
        unsupported = true;
        return;
      }
      waits.push_back(wait);
    });
    if (unsupported)
      return signalPassFailure();
    if (waits.empty())
      return;
    MLIRContext *ctx = &getContext();
    Type ptr = LLVM::LLVMPointerType::get(ctx);
    OpBuilder decl(ctx);
    FailureOr<LLVM::LLVMFuncOp> sync =
        LLVM::lookupOrCreateFn(decl, module, "mgpuStreamSynchronize", {ptr},
                               LLVM::LLVMVoidType::get(ctx));
    FailureOr<LLVM::LLVMFuncOp> destroy = LLVM::lookupOrCreateFn(
        decl, module, "mgpuStreamDestroy", {ptr}, LLVM::LLVMVoidType::get(ctx));
    if (failed(sync) || failed(destroy))
      return signalPassFailure();
    for (gpu::WaitOp wait : waits) {
      OpBuilder b(wait);
      for (Value token : wait.getAsyncDependencies()) {
        Value stream =
            UnrealizedConversionCastOp::create(b, wait.getLoc(), ptr, token)
                .getResult(0);
        LLVM::CallOp::create(b, wait.getLoc(), *sync, ValueRange{stream});
        LLVM::CallOp::create(b, wait.getLoc(), *destroy, ValueRange{stream});
      }
      wait.erase();
    }
  }
};

//===----------------------------------------------------------------------===//
// moe-gpu-merge-kernel-modules
//===----------------------------------------------------------------------===//

/// gpu-kernel-outlining puts each kernel in its own gpu.module, which would
/// become one cubin, one global constructor and one cuModuleLoadData per
/// kernel. This moves every outlined kernel into a single gpu.module (one
/// cubin per artifact), each kernel renamed after its old module (unique).
/// Gives the dynamic shared memory symbol external linkage.
/// convert-gpu-to-nvvm lowers gpu.dynamic_shared_memory to an internal
/// zero-length global in address space 3; NVPTX then demotes it into the
/// kernel as a 1-byte static `.shared` variable, so the base is not that of
/// the launch's dynamic shared memory and would overlap any static shared
/// buffer. `.extern .shared .b8 name[]` (what nvcc emits for
/// `extern __shared__`) is the dynamic window. The same fix as flang's
/// (llvm-project PR 161940, "Fix linkage for dynamic shared memory").
struct ExternDynamicSharedMemoryPass
    : public PassWrapper<ExternDynamicSharedMemoryPass,
                         OperationPass<gpu::GPUModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(ExternDynamicSharedMemoryPass)

  StringRef getArgument() const final { return "moe-nvvm-extern-dynamic-smem"; }
  StringRef getDescription() const final {
    return "Give the zero-length shared-memory globals that "
           "gpu.dynamic_shared_memory lowers to external linkage";
  }

  void runOnOperation() override {
    for (auto global : getOperation().getOps<LLVM::GlobalOp>()) {
      auto array = dyn_cast<LLVM::LLVMArrayType>(global.getGlobalType());
      if (global.getAddrSpace() !=
              static_cast<unsigned>(NVVM::NVVMMemorySpace::Shared) ||
          !array || array.getNumElements() != 0 || global.getValueOrNull())
        continue;
      global.setLinkage(LLVM::Linkage::External);
      // 1024 bytes: the swizzled wgmma tiles need their XOR pattern's
      // period (the window itself starts at such a boundary; DeepGEMM's
      // `extern __shared__ __align__(1024)`).
      global.setAlignment(1024);
    }
  }
};

/// The largest `+ptxNN` of an NVPTX feature string (0: none).
unsigned ptxVersionOf(StringRef features) {
  unsigned ptx = 0;
  for (StringRef f : llvm::split(features, ',')) {
    f = f.trim();
    unsigned v = 0;
    if (f.consume_front("+ptx") && !f.getAsInteger(10, v))
      ptx = std::max(ptx, v);
  }
  return ptx;
}

struct MergeKernelModulesPass
    : public PassWrapper<MergeKernelModulesPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(MergeKernelModulesPass)
  MergeKernelModulesPass() = default;
  MergeKernelModulesPass(const MergeKernelModulesPass &other)
      : PassWrapper(other) {}

  StringRef getArgument() const final {
    return "moe-gpu-merge-kernel-modules";
  }
  StringRef getDescription() const final {
    return "Move the kernels of all single-kernel gpu.modules into one "
           "gpu.module (one binary per artifact)";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<gpu::GPUDialect>();
    // The later phases need these; declaring them here lets any driver
    // (moe-opt included) run the whole pipeline without registering them.
    registerGPUPipelineDependencies(registry);
  }

  Option<std::string> name{*this, "name",
                           llvm::cl::desc("Name of the merged gpu.module"),
                           llvm::cl::init("moe_kernels")};

  void runOnOperation() override {
    ModuleOp module = getOperation();
    // Modules as gpu-kernel-outlining leaves them: symbols only (kernels and
    // the globals or device functions they reference), no target yet.
    SmallVector<gpu::GPUModuleOp> sources;
    for (auto gm : module.getOps<gpu::GPUModuleOp>()) {
      bool symbolsOnly = llvm::all_of(gm.getBody()->getOperations(),
                                      [](Operation &op) {
                                        return isa<SymbolOpInterface>(op);
                                      });
      if (symbolsOnly && !gm.getTargetsAttr())
        sources.push_back(gm);
    }
    if (sources.size() < 2)
      return;

    SymbolTable symbols(module);
    OpBuilder b(sources.front());
    auto merged =
        gpu::GPUModuleOp::create(b, sources.front().getLoc(), name.getValue());
    // Inserting into the symbol table uniquifies the name if it is taken.
    symbols.insert(merged);
    StringAttr mergedName = merged.getSymNameAttr();
    SymbolTable mergedSymbols(merged);

    llvm::DenseMap<SymbolRefAttr, SymbolRefAttr> renamed;
    for (gpu::GPUModuleOp gm : sources) {
      SymbolTable local(gm);
      SmallVector<gpu::GPUFuncOp> kernels;
      for (auto f : gm.getOps<gpu::GPUFuncOp>())
        if (f.isKernel())
          kernels.push_back(f);
      // Kernels are named after their module (unique at the top level);
      // only launches outside refer to them.
      for (gpu::GPUFuncOp k : kernels) {
        SymbolRefAttr old = SymbolRefAttr::get(
            gm.getSymNameAttr(), {FlatSymbolRefAttr::get(k.getNameAttr())});
        std::string newName = kernels.size() == 1
                                  ? gm.getSymName().str()
                                  : (gm.getSymName() + "_" + k.getName()).str();
        if (k.getName() != newName &&
            failed(local.rename(k, StringAttr::get(&getContext(), newName))))
          return signalPassFailure();
        renamed[old] = SymbolRefAttr::get(
            mergedName, {FlatSymbolRefAttr::get(k.getNameAttr())});
      }
      // Other symbols (a memref.global cloned by the outlining into every
      // module that reads it): an identical one already moved is shared,
      // a different one with the same name is renamed first.
      Block *body = gm.getBody();
      for (Operation &op : llvm::make_early_inc_range(body->getOperations())) {
        if (isa<gpu::GPUFuncOp>(op) && cast<gpu::GPUFuncOp>(op).isKernel())
          continue;
        Operation *existing =
            mergedSymbols.lookup(SymbolTable::getSymbolName(&op));
        if (!existing)
          continue;
        if (OperationEquivalence::isEquivalentTo(
                existing, &op, OperationEquivalence::IgnoreLocations)) {
          op.erase();
          continue;
        }
        if (failed(local.renameToUnique(&op, {&mergedSymbols})))
          return signalPassFailure();
      }
      for (Operation &op : llvm::make_early_inc_range(body->getOperations())) {
        op.remove();
        mergedSymbols.insert(&op);
      }
      symbols.erase(gm);
    }
    module->walk([&](gpu::LaunchFuncOp launch) {
      auto it = renamed.find(launch.getKernel());
      if (it != renamed.end())
        launch.setKernelAttr(it->second);
    });
  }
};

} // namespace

//===----------------------------------------------------------------------===//
// The pipeline
//===----------------------------------------------------------------------===//

/// The lowest PTX ISA version (x 10) that LLVM 22's NVPTX backend accepts for
/// `chip` (what `llc -march=nvptx64 -mcpu=<chip> -mattr=+ptx60` reports);
/// below it NVPTX stops the process with a fatal error. 0 for a chip that is
/// not both NVPTX's (`llc -march=nvptx64 -mcpu=help`) and CUDA 13 ptxas's
/// (`ptxas --help`, gpu-name: sm_75 and newer, no sm_101, which CUDA 13
/// calls sm_110). An `a` suffix (architecture-specific features) exists
/// for sm_90 and sm_100 on, `f` (family) for sm_100 on.
unsigned mlir::moe::minimumPtxVersion(StringRef chip) {
  StringRef base = chip;
  bool arch = base.consume_back("a");
  bool family = !arch && base.consume_back("f");
  unsigned v = llvm::StringSwitch<unsigned>(base)
                   .Case("sm_75", 63)
                   .Case("sm_80", 70)
                   .Case("sm_86", 71)
                   .Case("sm_87", 74)
                   .Cases({"sm_89", "sm_90"}, 78)
                   .Case("sm_100", 86)
                   .Case("sm_120", 87)
                   .Cases({"sm_103", "sm_121"}, 88)
                   .Cases({"sm_88", "sm_110"}, 90)
                   .Default(0);
  bool suffixed = arch || family;
  bool modern = v >= 86 && base != "sm_88"; // sm_100 and newer
  if (suffixed && !modern && !(arch && base == "sm_90"))
    return 0;
  if (arch && base == "sm_90")
    return 80;
  return family ? std::max(v, 88u) : v;
}

/// The NVPTX features the kernels are compiled with: `features` if given,
/// else `+ptxNN` with NN the larger of 8.1 (vector f32 reductions of the
/// atomic combine) and the chip's minimum.
static std::string nvptxFeatures(const GPUPipelineOptions &options) {
  if (!options.features.empty())
    return options.features;
  return "+ptx" +
         std::to_string(std::max(81u, minimumPtxVersion(options.chip)));
}

static std::string joinInts(ArrayRef<int64_t> values) {
  std::string s;
  llvm::raw_string_ostream os(s);
  llvm::interleave(values, os, ",");
  return s;
}

std::string mlir::moe::resolveCUDAPath(StringRef option) {
  if (!option.empty())
    return option.str();
  // What the NVVM serializer itself reads, then the usual install location:
  // without a toolkit path it neither links libdevice (math functions stay
  // unresolved __nv_* calls) nor finds ptxas outside PATH.
  for (const char *var : {"CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"})
    if (const char *v = std::getenv(var); v && *v)
      return v;
  if (llvm::sys::fs::exists("/usr/local/cuda/nvvm/libdevice/libdevice.10.bc"))
    return "/usr/local/cuda";
  return "";
}

/// What is wrong with `options` whatever the input (empty: nothing): the
/// chip, PTX version, optimisation level, binary format, toolkit and the
/// kernel thresholds. Shape-dependent choices are the conversion passes'.
std::string mlir::moe::checkGPUOptions(const GPUPipelineOptions &options) {
  std::string why;
  llvm::raw_string_ostream os(why);
  StringRef chip = options.chip.getValue();
  unsigned need = minimumPtxVersion(chip);
  if (!need) {
    os << "chip '" << chip << "' is not one that both LLVM 22's NVPTX and "
       << "CUDA 13 take (" << kSupportedChips << ")";
    return why;
  }
  // NVPTX ignores a feature it does not know, with a warning: the PTX
  // version asked for would silently be another.
  static constexpr unsigned kPtxVersions[] = {
      32, 40, 41, 42, 43, 50, 60, 61, 62, 63, 64, 65, 70, 71, 72, 73,
      74, 75, 76, 77, 78, 80, 81, 82, 83, 84, 85, 86, 87, 88, 90};
  for (StringRef f : llvm::split(options.features.getValue(), ',')) {
    StringRef t = f.trim();
    unsigned v = 0;
    if (t.empty())
      continue;
    if (!t.consume_front("+ptx") || t.getAsInteger(10, v) ||
        !llvm::is_contained(kPtxVersions, v)) {
      os << "feature '" << f.trim() << "' is not a PTX ISA version LLVM 22's "
         << "NVPTX knows (+ptx63 to +ptx88, +ptx90); the chip is the chip "
         << "option";
      return why;
    }
  }
  if (unsigned have = ptxVersionOf(options.features); have && have < need) {
    os << "chip " << chip << " needs PTX ISA " << need / 10 << "." << need % 10
       << " or newer, features '" << options.features << "' ask for "
       << have / 10 << "." << have % 10
       << " (leave features unset to get the chip's)";
    return why;
  }
  if (options.optLevel < 0 || options.optLevel > 3) {
    os << "opt-level must be 0 to 3 (got " << options.optLevel << ")";
    return why;
  }
  StringRef format = options.format.getValue();
  if (format != "bin" && format != "isa" && format != "fatbin") {
    os << "format must be bin, isa or fatbin (got '" << format << "')";
    return why;
  }
  // Without libdevice the kernels' math functions would stay unresolved
  // __nv_* calls in the binary.
  std::string toolkit = resolveCUDAPath(options.cudaPath);
  if (toolkit.empty()) {
    os << "no CUDA toolkit found (cuda-path unset, no $CUDA_ROOT, "
       << "$CUDA_HOME or $CUDA_PATH, no /usr/local/cuda): libdevice and "
       << "ptxas come from it";
    return why;
  }
  llvm::SmallString<128> libdevice(toolkit);
  llvm::sys::path::append(libdevice, "nvvm", "libdevice", "libdevice.10.bc");
  if (!llvm::sys::fs::exists(libdevice)) {
    os << "the CUDA toolkit '" << toolkit << "' has no "
       << "nvvm/libdevice/libdevice.10.bc"
       << (options.cudaPath.empty() ? " (set cuda-path)" : "");
    return why;
  }
  for (auto [name, value, allowed] :
       {std::tuple{"route-fuse-linear-min-tokens",
                   int64_t(options.routeFuseLinearMinTokens), int64_t(0)},
        std::tuple{"route-linear-mma-min-tokens",
                   int64_t(options.routeLinearMmaMinTokens), int64_t(-1)},
        std::tuple{"linear-mma-min-tokens", int64_t(options.linearMmaMinTokens),
                   int64_t(-1)},
        std::tuple{"lora-dense-a-min-tokens",
                   int64_t(options.loraDenseAMinTokens), int64_t(-1)}}) {
    if (value < allowed) {
      os << name << " must be "
         << (allowed < 0 ? "-1 (from the shape), 0 (never) or a number of "
                           "tokens"
                         : "0 (always) or a number of tokens")
         << " (got " << value << ")";
      return why;
    }
  }
  return why;
}

void mlir::moe::buildGPUPhase(OpPassManager &pm, GPUPhase phase,
                              const GPUPipelineOptions &options) {
  if (std::string why = checkGPUOptions(options); !why.empty()) {
    pm.addPass(
        std::make_unique<detail::OptionErrorPass>("moe-to-nvvm: " + why));
    return;
  }
  CPUPipelineOptions cpu;
  cpu.decompose = options.decompose;
  // The blocked GEMMs are sequential loops; the generic GPU path maps the
  // parallel gathered form onto threads.
  cpu.blockedGemms = false;
  cpu.gemmVectorBits = 0;
  cpu.gemmAMX = 0;
  cpu.polynomialMath = false;
  cpu.parallel = false;
  switch (phase) {
  case GPUPhase::Decompose:
    buildCPUPhase(pm, CPUPhase::Decompose, cpu);
    return;
  case GPUPhase::Linalg:
    // Eligible moe.experts become tensor-core kernels (the rest of the
    // layer takes the generic path below). Before the routing and linear
    // kernels: a sigmoid-gated shared expert becomes a one-expert routing
    // (moe.linear + moe.route) that those two passes then take.
    if (options.expertKernels) {
      ConvertMoEExpertsToGPUOptions experts;
      experts.chip = options.chip;
      experts.tileM = options.expertTileM;
      experts.tileNGateUp = options.expertTileNGateUp;
      experts.tileNDown = options.expertTileNDown;
      experts.tileK = options.expertTileK;
      experts.stages = options.expertStages;
      experts.dynamicSmem = options.expertDynamicSmem;
      experts.wideTiles = options.expertWideTiles;
      experts.groupM = options.expertGroupM;
      experts.wgmmaSwizzle = options.expertWgmmaSwizzle;
      experts.tma = options.expertTma;
      // Vector reductions need PTX ISA 8.1.
      experts.vectorRed = ptxVersionOf(nvptxFeatures(options)) >= 81;
      experts.warps = options.expertWarps;
      experts.wgmma = options.expertWgmma;
      experts.required = options.expertKernelsRequired;
      experts.combine = options.expertCombine;
      experts.largeTileRows = options.expertLargeTileRows;
      experts.splitKBlocks = options.expertSplitKBlocks;
      experts.fuseShared = options.expertFuseShared;
      pm.addPass(createConvertMoEExpertsToGPU(experts));
    }
    // Covered moe.route ops become the warp-per-token routing kernel.
    if (options.routeKernels) {
      ConvertMoERouteToGPUOptions route;
      route.required = options.routeKernelsRequired;
      route.fuseLinear = options.routeFuseLinear;
      route.fuseLinearMinTokens = options.routeFuseLinearMinTokens;
      route.chip = options.chip;
      // The tensor-core router GEMM is convert-moe-linear-to-gpu's.
      route.mmaLinearMinTokens =
          options.linearKernels && options.linearMmaMinTokens != 0
              ? int64_t(options.routeLinearMmaMinTokens)
              : 0;
      pm.addPass(createConvertMoERouteToGPU(route));
    }
    // The LoRA experts' two kernels (their A products the same
    // warp-per-output dots), first: with the AT-MoE shape the second is
    // the base GEMM with the B products and the combine fused in.
    // Then the moe.linear ops left (the router GEMM below the fused
    // kernel's threshold, routers it cannot fuse, an unfused LoRA base)
    // become the warp-per-output kernel.
    if (options.linearKernels) {
      ConvertMoELoRAToGPUOptions lora;
      lora.fuseCombine = options.loraFuseCombine;
      lora.chip = options.chip;
      lora.mmaMinTokens = options.linearMmaMinTokens;
      lora.denseAMinTokens = options.loraDenseAMinTokens;
      pm.addPass(createConvertMoELoRAToGPU(lora));
      ConvertMoELinearToGPUOptions linear;
      linear.chip = options.chip;
      linear.mmaMinTokens = options.linearMmaMinTokens;
      pm.addPass(createConvertMoELinearToGPU(linear));
    }
    // moe.rms_norm (and the residual combine before it) as one
    // warp-per-token kernel.
    if (options.normKernels)
      pm.addPass(createConvertMoENormToGPU());
    buildCPUPhase(pm, CPUPhase::Linalg, cpu);
    return;
  case GPUPhase::Bufferize:
    // The same buffers as on the CPU (identity layouts at the boundary,
    // results owned by the caller); they are moved to managed memory once
    // the kernels exist.
    buildCPUPhase(pm, CPUPhase::Bufferize, cpu);
    return;
  case GPUPhase::GPUMap: {
    // The expert kernels' calls become launches (a no-op without them).
    pm.addPass(createMoEGPULaunchExpertKernels());
    // Likewise the routing kernels' calls (one launch each).
    pm.addPass(createMoEGPULaunchRouteKernels());
    // And the linear kernels' calls.
    pm.addPass(createMoEGPULaunchLinearKernels());
    // And the norm kernels' calls.
    pm.addPass(createMoEGPULaunchNormKernels());
    pm.addPass(std::make_unique<CopyToLinalgPass>());
    // Parallel dimensions become scf.parallel, reductions scf.for inside
    // (so a contraction is one thread per output with its dot product in a
    // register); the gathered expert GEMMs already reduce in an scf.for.
    addUpstream(pm, "convert-linalg-to-parallel-loops,canonicalize");
    std::string mapText = "moe-gpu-map-parallel-loops{block-size=" +
                          std::to_string(options.blockSize);
    if (!options.tileSizes.empty())
      mapText += " tile-sizes=" + joinInts(options.tileSizes);
    mapText += "}";
    addUpstream(pm, mapText);
    addUpstream(pm, "convert-parallel-loops-to-gpu,canonicalize,cse");
    pm.addPass(std::make_unique<HostSharedAllocPass>());
    // Constants and index computations are sunk into the kernels so that
    // loop bounds and tile sizes are constants there (unrolling, address
    // arithmetic), not kernel parameters.
    addUpstream(pm, "gpu-launch-sink-index-computations,gpu-kernel-outlining");
    pm.addPass(std::make_unique<MergeKernelModulesPass>());
    if (options.asyncLaunches)
      pm.addPass(std::make_unique<AsyncLaunchesPass>());
    return;
  }
  case GPUPhase::NVVM:
    addUpstream(pm, "nvvm-attach-target{chip=" + options.chip.getValue() +
                        " features=" + nvptxFeatures(options) +
                        " O=" + std::to_string(options.optLevel) + "}");
    // bf16 on the host is expanded as on the CPU (no __truncsfbf2 in
    // libgcc); on the device NVPTX converts bf16 itself (cvt.*.bf16 on
    // sm_80+), so only the host functions (func.func, not gpu.func) are
    // expanded.
    addUpstream(pm, "func.func(arith-expand{include-bf16=1}),"
                    "expand-strided-metadata,lower-affine,convert-scf-to-cf");
    pm.addPass(std::make_unique<StreamWaitsPass>());
    // nvgpu (ldmatrix, cp.async of the expert kernels) lowers to NVVM
    // before the rest of the kernels: convert-gpu-to-nvvm does not know it.
    addUpstream(pm, "gpu.module(convert-nvgpu-to-nvvm,convert-gpu-to-nvvm,"
                    "llvm-optimize-for-nvvm-target,canonicalize,cse,"
                    "reconcile-unrealized-casts)");
    pm.addNestedPass<gpu::GPUModuleOp>(
        std::make_unique<ExternDynamicSharedMemoryPass>());
    addUpstream(pm, "gpu-to-llvm,convert-math-to-llvm,convert-math-to-libm,"
                    "convert-to-llvm,reconcile-unrealized-casts,"
                    "canonicalize,cse");
    return;
  case GPUPhase::Binary: {
    GpuModuleToBinaryPassOptions binary;
    binary.compilationTarget = options.format;
    binary.toolkitPath = resolveCUDAPath(options.cudaPath);
    pm.addPass(createGpuModuleToBinaryPass(binary));
    return;
  }
  }
}

void mlir::moe::buildMoEToNVVMPipeline(OpPassManager &pm,
                                       const GPUPipelineOptions &options) {
  for (GPUPhase phase : {GPUPhase::Decompose, GPUPhase::Linalg,
                         GPUPhase::Bufferize, GPUPhase::GPUMap,
                         GPUPhase::NVVM, GPUPhase::Binary})
    buildGPUPhase(pm, phase, options);
}

void mlir::moe::registerGPUPipeline() {
  PassRegistration<CopyToLinalgPass>();
  PassRegistration<MapParallelLoopsPass>();
  PassRegistration<HostSharedAllocPass>();
  PassRegistration<MergeKernelModulesPass>();
  PassRegistration<AsyncLaunchesPass>();
  PassRegistration<StreamWaitsPass>();
  PassRegistration<ExternDynamicSharedMemoryPass>();
  PassPipelineRegistration<GPUPipelineOptions>(
      "moe-to-nvvm",
      "Lower moe layers on tensors to NVVM kernels in a gpu.binary and host "
      "code in the LLVM dialect calling the mgpu* runtime (decompose, linalg, "
      "bufferize, gpu-map, nvvm, binary)",
      buildMoEToNVVMPipeline);
}
