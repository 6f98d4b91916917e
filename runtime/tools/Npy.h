//===- Npy.h - host buffers, dtype conversion, .npy files -------*- C++ -*-===//
//
// Helpers of the moe-run tool (not of the runtime library): tensors kept as
// f32 values plus their bytes in the entry's dtype, seeded random fill, and
// a reader/writer for NumPy .npy files (little-endian f4/f2/f8/i4 in, f4 out).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_TOOLS_NPY_H
#define MOE_RUNTIME_TOOLS_NPY_H

#include "moe/Runtime/Runtime.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace moe::rt {

inline uint16_t floatToBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000)
    return 0x7fc0; // NaN
  u += 0x7fff + ((u >> 16) & 1); // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16ToFloat(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t floatToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000;
  int32_t exp = ((u >> 23) & 0xff) - 127 + 15;
  uint32_t mant = u & 0x7fffff;
  if (((u >> 23) & 0xff) == 0xff)
    return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp >= 31)
    return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10)
      return sign;
    mant |= 0x800000;
    uint32_t shift = 14 - exp;
    uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1)))
      ++half;
    return sign | half;
  }
  uint32_t half = sign | (exp << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
    ++half;
  return static_cast<uint16_t>(half);
}
inline float f16ToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        --exp;
      }
      u = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000 | (mant << 13);
  } else {
    u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline std::string formatShape(const std::vector<int64_t> &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i)
    r += (i ? "x" : "") + std::to_string(s[i]);
  return r + "]";
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
    for (size_t i = 0; i < values.size(); ++i) {
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
    readBack();
  }
  void readBack() {
    size_t n = raw.size() / dtypeSize(dtype);
    values.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const unsigned char *p = &raw[i * dtypeSize(dtype)];
      switch (dtype) {
      case DType::f32: std::memcpy(&values[i], p, 4); break;
      case DType::bf16: { uint16_t h; std::memcpy(&h, p, 2); values[i] = bf16ToFloat(h); break; }
      case DType::f16: { uint16_t h; std::memcpy(&h, p, 2); values[i] = f16ToFloat(h); break; }
      case DType::i32: { int32_t x; std::memcpy(&x, p, 4); values[i] = static_cast<float>(x); break; }
      case DType::i64: { int64_t x; std::memcpy(&x, p, 8); values[i] = static_cast<float>(x); break; }
      }
    }
  }
  TensorView view() { return TensorView{raw.data(), dtype, shape}; }
};

/// Seeded random data: the layer input ~ U(-1, 1); weights ~ U(-a, a) with
/// a = 1/sqrt(fan-in) (the last dimension), so activations stay O(1).
inline void fillRandom(Buffer &b, const TensorSpec &spec, std::mt19937_64 &rng) {
  size_t n = 1;
  for (int64_t d : b.shape)
    n *= d;
  double a = 1.0;
  if (spec.name != "input" && !b.shape.empty())
    a = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(b.shape.back(), 1)));
  std::uniform_real_distribution<double> dist(-a, a);
  b.values.resize(n);
  for (float &v : b.values)
    v = static_cast<float>(dist(rng));
}

bool readNpyF32(const std::string &path, std::vector<float> &values,
                std::vector<int64_t> &shape, std::string &err);
bool writeNpyF32(const std::string &path, const std::vector<float> &values,
                 const std::vector<int64_t> &shape, std::string &err);

} // namespace moe::rt

#endif // MOE_RUNTIME_TOOLS_NPY_H
