//===- Png.h - a tiny PNG writer --------------------------------*- C++ -*-===//
//
// 8-bit RGB PNG files without zlib: the image data goes into a zlib stream
// of stored (uncompressed) deflate blocks, with the CRC-32 of every chunk
// and the Adler-32 of the stream. Files are larger than compressed ones
// (3 bytes a pixel), which is fine for the small heat-maps moe-analyze
// draws.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_TOOLS_PNG_H
#define MOE_RUNTIME_TOOLS_PNG_H

#include <cstdint>
#include <string>
#include <vector>

namespace moe::rt::png {

/// CRC-32 (ISO 3309, as PNG chunks use) of `n` bytes, continuing `crc`.
uint32_t crc32(const unsigned char *data, size_t n, uint32_t crc = 0);
/// Adler-32 (RFC 1950) of `n` bytes, continuing `adler`.
uint32_t adler32(const unsigned char *data, size_t n, uint32_t adler = 1);
/// A zlib stream (RFC 1950) of stored deflate blocks (RFC 1951 §3.2.4).
std::vector<unsigned char> zlibStored(const std::vector<unsigned char> &data);

/// An RGB image, row-major, 3 bytes a pixel.
struct Image {
  int width = 0, height = 0;
  std::vector<unsigned char> rgb;
  Image(int w, int h, unsigned char r = 255, unsigned char g = 255,
        unsigned char b = 255);
  void set(int x, int y, const unsigned char c[3]);
  void fill(int x, int y, int w, int h, const unsigned char c[3]);
};

/// The bytes of a PNG file holding `img`.
std::vector<unsigned char> encode(const Image &img);
/// Writes `img` to `path`; false with `err` on failure.
bool write(const std::string &path, const Image &img, std::string &err);

} // namespace moe::rt::png

#endif // MOE_RUNTIME_TOOLS_PNG_H
