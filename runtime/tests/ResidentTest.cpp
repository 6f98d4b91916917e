//===- ResidentTest.cpp - resident inputs and derived weights -*- C++ -*-===//
//
//   moe-resident-test <artifact> [--no-compare]
//
// For each entry of an f32 artifact: run() with resident inputs
// (Artifact::makeResident, which also computes the derived weights of
// EntrySpec::derive once) must give the output of run() without them bit
// for bit; and the misuses must be errors naming the problem, not wrong
// answers: resident inputs made for another entry, and other host data for
// a weight that is resident or that the derived weights were computed from
// (a stale router). --no-compare leaves out the output comparison (against
// the fake CUDA driver, where no kernel runs). Ends with "N passed, N
// failed".
//
//===----------------------------------------------------------------------===//

#include "TestCheck.h"

#include "moe/Runtime/Runtime.h"

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace moe::rt;
using namespace moe::rt::test;

int main(int argc, char **argv) {
  bool compare = !(argc == 3 && std::strcmp(argv[2], "--no-compare") == 0);
  if (argc != 2 && compare) {
    std::fprintf(stderr, "usage: moe-resident-test <artifact> [--no-compare]\n");
    return 2;
  }
  auto loaded = Artifact::load(argv[1]);
  if (!loaded) {
    std::fprintf(stderr, "moe-resident-test: error: %s\n",
                 loaded.message().c_str());
    return 1;
  }
  const Artifact &art = *loaded.value();
  const int64_t tokens = 7;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<std::shared_ptr<ResidentInputs>> made;
  for (const EntrySpec &spec : art.entries()) {
    std::vector<std::vector<float>> data;
    std::vector<TensorView> in;
    for (const TensorSpec &t : spec.args) {
      if (t.dtype != DType::f32) {
        std::fprintf(stderr, "moe-resident-test: error: needs f32 entries\n");
        return 1;
      }
      std::vector<int64_t> shape;
      for (int64_t d : t.shape)
        shape.push_back(d < 0 ? tokens : d);
      data.emplace_back(t.numElements(tokens));
      for (float &v : data.back())
        v = dist(rng) / 4;
      in.push_back({data.back().data(), DType::f32, shape});
    }
    size_t outElems = spec.results[0].numElements(tokens);
    std::vector<int64_t> outShape;
    for (int64_t d : spec.results[0].shape)
      outShape.push_back(d < 0 ? tokens : d);
    std::vector<float> plain(outElems, NAN), kept(outElems, NAN);
    std::vector<TensorView> out{{plain.data(), DType::f32, outShape}};
    Status s = art.run(spec.name, in, out);
    expect(bool(s), spec.name + ": run without resident inputs",
           s ? "" : s.message());
    auto r = art.makeResident(spec.name, in);
    expect(bool(r), spec.name + ": makeResident", r ? "" : r.message());
    if (!r)
      continue;
    made.push_back(r.value());
    if (spec.derive)
      expect(r.value()->derivedCount() == spec.derive->results.size(),
             spec.name + ": derived tensors computed once",
             std::to_string(r.value()->derivedCount()));
    out = {{kept.data(), DType::f32, outShape}};
    s = art.run(spec.name, in, out, r.value().get());
    if (compare)
      expect(s && std::memcmp(plain.data(), kept.data(),
                              outElems * sizeof(float)) == 0,
             spec.name + ": resident run equals the plain run bit for bit",
             s ? "" : s.message());
    else
      expect(bool(s), spec.name + ": resident run", s ? "" : s.message());
    // A weight given from other host data (the same values, elsewhere):
    // an error when it is resident or a derived tensor came from it.
    for (size_t i = 0; i < spec.args.size(); ++i) {
      bool derivedFrom = false;
      if (spec.derive)
        for (size_t j : spec.derive->inputs)
          derivedFrom |= j == i;
      if (spec.args[i].hasTokenDim() ||
          (!derivedFrom && art.target() != "cuda"))
        continue;
      std::vector<float> copy = data[i];
      std::vector<TensorView> moved = in;
      moved[i].data = copy.data();
      s = art.run(spec.name, moved, out, r.value().get());
      expect(failsWith(s, "other host data"),
             spec.name + ": other host data for '" + spec.args[i].name +
                 "' is an error",
             s ? "no error" : s.message());
    }
  }
  // Resident inputs of one entry given to another.
  if (made.size() >= 2) {
    const EntrySpec &spec = art.entries()[1];
    std::vector<std::vector<float>> data;
    std::vector<TensorView> in;
    for (const TensorSpec &t : spec.args) {
      std::vector<int64_t> shape;
      for (int64_t d : t.shape)
        shape.push_back(d < 0 ? tokens : d);
      data.emplace_back(t.numElements(tokens), 0.0f);
      in.push_back({data.back().data(), DType::f32, shape});
    }
    std::vector<float> y(spec.results[0].numElements(tokens));
    std::vector<int64_t> outShape;
    for (int64_t d : spec.results[0].shape)
      outShape.push_back(d < 0 ? tokens : d);
    std::vector<TensorView> out{{y.data(), DType::f32, outShape}};
    Status s = art.run(spec.name, in, out, made[0].get());
    expect(failsWith(s, "made for another artifact or entry"),
           "resident inputs of another entry are an error",
           s ? "no error" : s.message());
  }
  return testSummary();
}
