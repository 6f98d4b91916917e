//===- Npy.cpp - NumPy .npy reader/writer for moe-run -----------*- C++ -*-===//

#include "Npy.h"

namespace moe::rt {

bool readNpyF32(const std::string &path, std::vector<float> &values,
                std::vector<int64_t> &shape, std::string &err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    err = "cannot open '" + path + "'";
    return false;
  }
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    err = "'" + path + "' is not a .npy file";
    return false;
  }
  uint32_t headerLen = 0;
  if (magic[6] == 1) {
    uint16_t h;
    in.read(reinterpret_cast<char *>(&h), 2);
    headerLen = h;
  } else {
    in.read(reinterpret_cast<char *>(&headerLen), 4);
  }
  if (!in || headerLen > (1u << 20)) {
    err = "'" + path + "': truncated or oversized .npy header";
    return false;
  }
  std::string header(headerLen, '\0');
  if (!in.read(header.data(), headerLen)) {
    err = "'" + path + "': truncated .npy header";
    return false;
  }
  auto field = [&](const std::string &key) -> std::string {
    size_t k = header.find("'" + key + "'");
    if (k == std::string::npos)
      return "";
    size_t colon = header.find(':', k);
    return colon == std::string::npos ? "" : header.substr(colon + 1);
  };
  std::string descr = field("descr"), order = field("fortran_order"),
              shp = field("shape");
  if (descr.empty() || order.empty() || shp.empty()) {
    err = "'" + path + "': malformed .npy header";
    return false;
  }
  if (order.find("True") < order.find(',')) {
    err = "'" + path + "': Fortran-ordered arrays are not supported";
    return false;
  }
  size_t q1 = descr.find('\''), q2 = descr.find('\'', q1 + 1);
  std::string d = descr.substr(q1 + 1, q2 - q1 - 1);
  size_t elem;
  if (d == "<f4" || d == "<i4")
    elem = 4;
  else if (d == "<f8")
    elem = 8;
  else if (d == "<f2")
    elem = 2;
  else {
    err = "'" + path + "': unsupported dtype '" + d + "' (f2, f4, f8, i4)";
    return false;
  }
  shape.clear();
  size_t open = shp.find('('), close = shp.find(')');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    err = "'" + path + "': malformed .npy shape";
    return false;
  }
  std::string dims = shp.substr(open + 1, close - open - 1);
  // Each dimension a non-negative decimal integer; the data (elements x
  // element size) at most 2^40 bytes, checked before anything is allocated.
  size_t n = 1;
  for (size_t pos = 0; pos <= dims.size();) {
    size_t comma = std::min(dims.find(',', pos), dims.size());
    std::string tok = dims.substr(pos, comma - pos);
    size_t b = tok.find_first_not_of(" \t"), e = tok.find_last_not_of(" \t");
    if (b != std::string::npos) {
      tok = tok.substr(b, e - b + 1);
      uint64_t v = 0;
      bool ok = tok.size() <= 13;
      for (char c : tok)
        ok = ok && c >= '0' && c <= '9' && (v = v * 10 + (c - '0'), true);
      if (!ok || __builtin_mul_overflow(n, v, &n) ||
          n > (uint64_t(1) << 40) / elem) {
        err = "'" + path + "': bad or too large .npy shape (" + dims + ")";
        return false;
      }
      shape.push_back(static_cast<int64_t>(v));
    }
    pos = comma + 1;
  }
  // The data must be in the file before it is allocated (a truncated file
  // claiming a large shape would otherwise allocate that much first).
  std::streampos here = in.tellg();
  in.seekg(0, std::ios::end);
  std::streamoff left = in.tellg() - here;
  in.seekg(here);
  if (!in || left < 0 || uint64_t(left) < n * elem) {
    err = "'" + path + "': truncated data (" + std::to_string(n) +
          " elements expected)";
    return false;
  }
  std::vector<unsigned char> data(n * elem);
  if (!in.read(reinterpret_cast<char *>(data.data()), data.size())) {
    err = "'" + path + "': truncated data (" + std::to_string(n) +
          " elements expected)";
    return false;
  }
  values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char *p = &data[i * elem];
    if (d == "<f4") std::memcpy(&values[i], p, 4);
    else if (d == "<i4") { int32_t x; std::memcpy(&x, p, 4); values[i] = x; }
    else if (d == "<f8") { double x; std::memcpy(&x, p, 8); values[i] = static_cast<float>(x); }
    else { uint16_t h; std::memcpy(&h, p, 2); values[i] = f16ToFloat(h); }
  }
  return true;
}

bool writeNpyF32(const std::string &path, const std::vector<float> &values,
                 const std::vector<int64_t> &shape, std::string &err) {
  std::string dims;
  for (int64_t d : shape)
    dims += std::to_string(d) + ",";
  if (shape.size() > 1)
    dims.pop_back();
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       dims + "), }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream out(path, std::ios::binary);
  if (!out) {
    err = "cannot write '" + path + "'";
    return false;
  }
  uint16_t len = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(reinterpret_cast<const char *>(&len), 2);
  out.write(header.data(), header.size());
  out.write(reinterpret_cast<const char *>(values.data()), values.size() * 4);
  return static_cast<bool>(out);
}

} // namespace moe::rt
