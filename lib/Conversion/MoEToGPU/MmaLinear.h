//===- MmaLinear.h - tensor-core kernel for moe.linear ----------*- C++ -*-===//
//
// The expert kernels' mma.sync GEMM (MoEExpertsToGPU.cpp: cp.async stages,
// ldmatrix, m16n8k16 / 3xTF32 m16n8k8, the grouped block order) as a plain
// GEMM `y = x W^T (+ b)` of the T token rows, for the moe.linear ops that the
// warp-per-output kernel (MoELinearToGPU.cpp) serves badly at many tokens: it
// re-reads the whole weight once per 4 tokens on CUDA cores, where this
// kernel reads it once per 64 rows on tensor cores. With LoRA terms it is
// lora_out's tensor-core form (the AT-MoE base GEMM with the K r terms
// u[t, k, j] B_e[n, j] added in the epilogue).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_MMALINEAR_H
#define MOE_LIB_CONVERSION_MOETOGPU_MMALINEAR_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"

#include <string>

namespace mlir::moe {

/// What the kernel computes: x : T x in and W : out x in of `elt` (bf16,
/// f16 or f32: 3xTF32), an optional bias : out, the result T x out of
/// `resultElt`; with `loraR` > 0 also the LoRA terms of lora_out (indices
/// T x loraK i32, u T x loraK x loraR f32, B : loraE x out x loraR of
/// `loraBElt`, experts numbered from `loraOffset`). With `loraDense` the
/// kernel takes, in place of u, the routing weights w (T x loraK f32) and
/// the A products of every expert, ax : T x loraE loraR f32 (the dense
/// lora_a GEMM's result), and forms u[t, k, j] = ax[t, e r + j] w[t, k]
/// `loraScale` itself.
struct MmaLinearSpec {
  int64_t in = 0, out = 0;
  Type elt, biasElt, resultElt;
  int64_t loraK = 0, loraR = 0, loraE = 0, loraOffset = 0;
  Type loraBElt;
  bool loraDense = false;
  double loraScale = 1.0;
};

/// The launch of a planned kernel: grid ceil(T / rows) x colBlocks, blocks
/// of `threads`, static shared memory only.
struct MmaLinearPlan {
  int64_t rows = 0, colBlocks = 0, threads = 0;
  /// The tokens from which the host takes it by default: at least 128, and
  /// enough row tiles for kMmaMinBlocks blocks.
  int64_t defaultMinTokens() const;
};

/// Blocks below which the tensor-core kernel is not taken by default: with
/// fewer, a few SMs would each walk a whole 64-row slice of the GEMM while
/// the warp-per-output kernel spreads 4 ceil(O / 4) warps over all of them
/// (half a wave of the A100's 108 and the H100's 132 SMs).
constexpr int64_t kMmaMinBlocks = 64;

/// Why `s` cannot take the tensor-core kernel on `chip` ("" if it can);
/// fills `plan`.
std::string planMmaLinear(const MmaLinearSpec &s, StringRef chip,
                          MmaLinearPlan &plan);

class LinearOp;

/// The tensor-core kernel's view of `op`, as convert-moe-linear-to-gpu
/// forms it: "" and `spec` filled if that pass forms a kernel for `op`,
/// else why not. (Defined in MoELinearToGPU.cpp; convert-moe-route-to-gpu
/// asks it whether the router GEMM will take the tensor-core kernel.)
std::string mmaSpecOf(LinearOp op, MmaLinearSpec &spec);

/// Builds the kernel `name` at `mb` (a gpu.module body) for a spec that
/// planMmaLinear accepted. Arguments, in the warp-per-output linear
/// kernel's order: x, W, [bias], [indices, u, B], y (dense LoRA terms:
/// [indices, w, ax, B]).
gpu::GPUFuncOp buildMmaLinearKernel(OpBuilder &mb, Location loc, StringRef name,
                                    const MmaLinearSpec &s);

} // namespace mlir::moe

#endif // MOE_LIB_CONVERSION_MOETOGPU_MMALINEAR_H
