//===- RouteDriver.cpp - the reference's routing on logits from stdin -*- C++ -*-===//
//
// moe-reference-route '#moe.routing<...>': reads `T E B` then T*E logits,
// for hierarchical routing T*n_group group logits, and,
// if B is 1, E selection-bias values (whitespace separated, as printed by
// %.9g or "nan"/"inf"/"-inf") and prints, per token, one line
// `i_0 .. i_{K-1} | w_0 .. w_{K-1} | tie` from moe::ref::route (double
// precision). Used by test/Conversion/MoEToGPU/route-emulate.py to check the
// routing kernel's algorithm against the C++ reference.
//
//===----------------------------------------------------------------------===//

#include "moe/Reference/Reference.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

namespace {
bool readDouble(double &v) {
  std::string s;
  if (!(std::cin >> s))
    return false;
  v = std::strtod(s.c_str(), nullptr); // accepts nan, inf, -inf
  return true;
}
} // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: moe-reference-route '#moe.routing<...>' < input\n");
    return 2;
  }
  std::string err;
  auto routing = moe::ref::parseRouting(argv[1], err);
  if (!routing) {
    std::fprintf(stderr, "moe-reference-route: %s\n", err.c_str());
    return 2;
  }
  long long t = 0, e = 0, hasBias = 0;
  if (!(std::cin >> t >> e >> hasBias) || t < 0 || e < 1) {
    std::fprintf(stderr, "moe-reference-route: expected 'T E B'\n");
    return 2;
  }
  std::vector<double> logits(t * e), bias(hasBias ? e : 0), groupLogits;
  if (routing->selection == moe::ref::Selection::hierarchical)
    groupLogits.resize(t * routing->nGroup);
  for (double &v : logits)
    if (!readDouble(v)) {
      std::fprintf(stderr, "moe-reference-route: too few logits\n");
      return 2;
    }
  for (double &v : groupLogits)
    if (!readDouble(v)) {
      std::fprintf(stderr, "moe-reference-route: too few group logits\n");
      return 2;
    }
  for (double &v : bias)
    if (!readDouble(v)) {
      std::fprintf(stderr, "moe-reference-route: too few bias values\n");
      return 2;
    }
  moe::ref::Routed r = moe::ref::route(*routing, logits, t, e, groupLogits, bias);
  int k = routing->k;
  for (long long i = 0; i < t; ++i) {
    for (int j = 0; j < k; ++j)
      std::printf("%d ", r.indices[i * k + j]);
    std::printf("|");
    for (int j = 0; j < k; ++j)
      std::printf(" %.17g", r.weights[i * k + j]);
    std::printf(" | %d\n", int(r.nearTie[i]));
  }
  return 0;
}
