//===- PolynomialMath.cpp - f32 exp/erf/tanh as polynomials -----*- C++ -*-===//
//
// Implements --moe-polynomial-math: upstream MLIR's polynomial
// approximations (mlir/Dialect/Math/Transforms/Passes.h) for the three math
// functions the CPU lowering emits, so that the loops computing them
// vectorise instead of calling libm per element.
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/Passes.h"

#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEPOLYNOMIALMATH
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {
struct MoEPolynomialMathPass
    : public moe::impl::MoEPolynomialMathBase<MoEPolynomialMathPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateMathPolynomialApproximationPatterns(patterns, [](StringRef name) {
      name.consume_front("math.");
      return name == "exp" || name == "erf" || name == "tanh";
    });
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
