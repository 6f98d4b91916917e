//===- moe-opt.cpp - mlir-opt with the moe dialect --------------*- C++ -*-===//
//
// Behaves like mlir-opt: parses, verifies, runs passes and prints. Knows the
// `moe` dialect and its passes on top of the upstream ones.
//
//===----------------------------------------------------------------------===//

#include "moe/InitAllMoE.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  mlir::moe::registerAllMoEDialects(registry);
  mlir::moe::registerAllMoEPasses();
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "moe-opt: the moe-mlir optimizer driver\n", registry));
}
