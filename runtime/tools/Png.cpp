//===- Png.cpp - a tiny PNG writer ------------------------------*- C++ -*-===//

#include "Png.h"

#include <algorithm>
#include <fstream>

namespace moe::rt::png {

uint32_t crc32(const unsigned char *data, size_t n, uint32_t crc) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i)
    crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t adler32(const unsigned char *data, size_t n, uint32_t adler) {
  uint32_t a = adler & 0xffff, b = adler >> 16;
  for (size_t i = 0; i < n; ++i) {
    a = (a + data[i]) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

namespace {
void putBE32(std::vector<unsigned char> &out, uint32_t v) {
  out.push_back((unsigned char)(v >> 24));
  out.push_back((unsigned char)(v >> 16));
  out.push_back((unsigned char)(v >> 8));
  out.push_back((unsigned char)v);
}

void chunk(std::vector<unsigned char> &out, const char type[4],
           const std::vector<unsigned char> &data) {
  putBE32(out, (uint32_t)data.size());
  size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  putBE32(out, crc32(&out[start], out.size() - start));
}
} // namespace

std::vector<unsigned char> zlibStored(const std::vector<unsigned char> &data) {
  // CMF 0x78: deflate, 32K window; FLG 0x01 makes CMF*256+FLG divisible by
  // 31 (no dictionary, "fastest" level).
  std::vector<unsigned char> out = {0x78, 0x01};
  size_t pos = 0;
  do {
    size_t len = std::min<size_t>(65535, data.size() - pos);
    bool last = pos + len == data.size();
    out.push_back(last ? 1 : 0); // BFINAL, BTYPE = 00 (stored)
    out.push_back((unsigned char)(len & 0xff));
    out.push_back((unsigned char)(len >> 8));
    out.push_back((unsigned char)(~len & 0xff));
    out.push_back((unsigned char)((~len >> 8) & 0xff));
    out.insert(out.end(), data.begin() + pos, data.begin() + pos + len);
    pos += len;
  } while (pos < data.size());
  putBE32(out, adler32(data.data(), data.size()));
  return out;
}

Image::Image(int w, int h, unsigned char r, unsigned char g, unsigned char b)
    : width(w), height(h), rgb((size_t)w * h * 3) {
  for (size_t i = 0; i < rgb.size(); i += 3) {
    rgb[i] = r;
    rgb[i + 1] = g;
    rgb[i + 2] = b;
  }
}

void Image::set(int x, int y, const unsigned char c[3]) {
  if (x < 0 || y < 0 || x >= width || y >= height)
    return;
  std::copy(c, c + 3, &rgb[((size_t)y * width + x) * 3]);
}

void Image::fill(int x, int y, int w, int h, const unsigned char c[3]) {
  for (int j = y; j < y + h; ++j)
    for (int i = x; i < x + w; ++i)
      set(i, j, c);
}

std::vector<unsigned char> encode(const Image &img) {
  std::vector<unsigned char> out = {0x89, 'P',  'N',  'G',
                                    '\r', '\n', 0x1a, '\n'};
  std::vector<unsigned char> ihdr;
  putBE32(ihdr, (uint32_t)img.width);
  putBE32(ihdr, (uint32_t)img.height);
  ihdr.push_back(8); // bit depth
  ihdr.push_back(2); // colour type: RGB
  ihdr.push_back(0); // compression: deflate
  ihdr.push_back(0); // filter method 0
  ihdr.push_back(0); // no interlace
  chunk(out, "IHDR", ihdr);
  // Every scanline starts with its filter type: 0 (none).
  std::vector<unsigned char> raw;
  raw.reserve((size_t)img.height * (1 + (size_t)img.width * 3));
  for (int y = 0; y < img.height; ++y) {
    raw.push_back(0);
    auto row = img.rgb.begin() + (size_t)y * img.width * 3;
    raw.insert(raw.end(), row, row + (size_t)img.width * 3);
  }
  chunk(out, "IDAT", zlibStored(raw));
  chunk(out, "IEND", {});
  return out;
}

bool write(const std::string &path, const Image &img, std::string &err) {
  if (img.width <= 0 || img.height <= 0 ||
      img.rgb.size() != (size_t)img.width * img.height * 3) {
    err = "cannot write '" + path + "': empty or malformed image";
    return false;
  }
  std::vector<unsigned char> bytes = encode(img);
  std::ofstream out(path, std::ios::binary);
  if (out)
    out.write(reinterpret_cast<const char *>(bytes.data()),
              (std::streamsize)bytes.size());
  if (!out) {
    err = "cannot write '" + path + "'";
    return false;
  }
  return true;
}

} // namespace moe::rt::png
