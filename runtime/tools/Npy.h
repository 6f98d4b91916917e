//===- Npy.h - host buffers, dtype conversion, .npy files -------*- C++ -*-===//
//
// Helpers of the moe-run tool (not of the runtime library): tensors kept as
// f32 values plus their bytes in the entry's dtype, seeded random fill, and
// a reader/writer for NumPy .npy files (little-endian f4/f2/f8/i4 in, f4 out).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_TOOLS_NPY_H
#define MOE_RUNTIME_TOOLS_NPY_H

#include "moe/Runtime/Half.h"
#include "moe/Runtime/Runtime.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace moe::rt {

inline std::string formatShape(const std::vector<int64_t> &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i)
    r += (i ? "x" : "") + std::to_string(s[i]);
  return r + "]";
}

/// Runs body(lo, hi) over [0, n) in chunks on up to hardware_concurrency
/// threads (one thread below a million elements).
template <typename Fn> void parallelFor(size_t n, Fn &&body) {
  size_t threads = std::max(1u, std::thread::hardware_concurrency());
  if (n < (size_t(1) << 20) || threads == 1) {
    body(size_t(0), n);
    return;
  }
  threads = std::min<size_t>(threads, 32);
  std::vector<std::thread> pool;
  size_t chunk = (n + threads - 1) / threads;
  for (size_t t = 0; t < threads; ++t) {
    size_t lo = t * chunk, hi = std::min(n, lo + chunk);
    if (lo < hi)
      pool.emplace_back([&body, lo, hi] { body(lo, hi); });
  }
  for (std::thread &th : pool)
    th.join();
}

/// A host tensor: f32 values and the bytes the compiled code sees.
struct Buffer {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<float> values;
  std::vector<unsigned char> raw;

  /// Writes `values` into `raw` in `dtype`, then reads them back so that
  /// `values` holds exactly what the compiled code sees.
  void materialize() {
    raw.assign(values.size() * dtypeSize(dtype), 0);
    parallelFor(values.size(), [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      unsigned char *p = &raw[i * dtypeSize(dtype)];
      float v = values[i];
      switch (dtype) {
      case DType::f32: std::memcpy(p, &v, 4); break;
      case DType::bf16: { uint16_t h = floatToBF16(v); std::memcpy(p, &h, 2); break; }
      case DType::f16: { uint16_t h = floatToF16(v); std::memcpy(p, &h, 2); break; }
      case DType::i32: { int32_t x = static_cast<int32_t>(v); std::memcpy(p, &x, 4); break; }
      case DType::i64: { int64_t x = static_cast<int64_t>(v); std::memcpy(p, &x, 8); break; }
      }
    }
    });
    readBack();
  }
  void readBack() {
    size_t n = raw.size() / dtypeSize(dtype);
    values.resize(n);
    parallelFor(n, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      const unsigned char *p = &raw[i * dtypeSize(dtype)];
      switch (dtype) {
      case DType::f32: std::memcpy(&values[i], p, 4); break;
      case DType::bf16: { uint16_t h; std::memcpy(&h, p, 2); values[i] = bf16ToFloat(h); break; }
      case DType::f16: { uint16_t h; std::memcpy(&h, p, 2); values[i] = f16ToFloat(h); break; }
      case DType::i32: { int32_t x; std::memcpy(&x, p, 4); values[i] = static_cast<float>(x); break; }
      case DType::i64: { int64_t x; std::memcpy(&x, p, 8); values[i] = static_cast<float>(x); break; }
      }
    }
    });
  }
  TensorView view() { return TensorView{raw.data(), dtype, shape}; }
};

/// Seeded random data: the layer input ~ U(-1, 1); weights ~ U(-a, a) with
/// a = 1/sqrt(fan-in) (the last dimension), so activations stay O(1).
/// Element i is a hash of (key, i) (splitmix64), the key drawn from `rng`
/// once per tensor, so that large weights (GiBs at the benchmark shapes)
/// fill on all cores and the values do not depend on the thread count.
inline void fillRandom(Buffer &b, const TensorSpec &spec, std::mt19937_64 &rng) {
  size_t n = 1;
  for (int64_t d : b.shape)
    n *= d;
  double a = 1.0;
  if (spec.name != "input" && !b.shape.empty())
    a = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(b.shape.back(), 1)));
  const uint64_t key = rng();
  b.values.resize(n);
  parallelFor(n, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      uint64_t z = key + 0x9e3779b97f4a7c15ull * (i + 1);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      double u = double(z >> 11) * 0x1.0p-53; // [0, 1)
      b.values[i] = static_cast<float>((2 * u - 1) * a);
    }
  });
}

bool readNpyF32(const std::string &path, std::vector<float> &values,
                std::vector<int64_t> &shape, std::string &err);
bool writeNpyF32(const std::string &path, const std::vector<float> &values,
                 const std::vector<int64_t> &shape, std::string &err);

} // namespace moe::rt

#endif // MOE_RUNTIME_TOOLS_NPY_H
