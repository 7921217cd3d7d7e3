// Image I/O through stb (kept private to this file) and the PIL-compatible pre-processing.
#include "skipganomaly/image.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <span>
#include <vector>

#include "safe_file.hpp"
#include "skipganomaly/error.hpp"

// stb is compiled here, with internal linkage, so an embedding project that uses its own copy
// of stb links without clashes. Only the formats we promise are decoded.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wcast-qual"
#endif
#include <stb_image.h>
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace sga {
namespace {

namespace fs = std::filesystem;

// a * b for non-negative sizes, or InvalidArgument naming what overflowed.
std::int64_t checked_multiply(std::int64_t a, std::int64_t b, const char* what) {
    std::int64_t product = 0;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &product))
        throw InvalidArgument(std::string(what) + " overflows: " + std::to_string(a) + " * " +
                              std::to_string(b));
    return product;
}

// Buffers get the pixel limit that files get: pre-processing allocates a few bytes per pixel,
// so a view claiming a huge size must be refused before that, not fail with std::bad_alloc.
void check_pixel_count(std::int64_t width, std::int64_t height, const char* what) {
    const std::int64_t pixels = checked_multiply(width, height, what);
    SGA_CHECK_ARGUMENT(pixels <= max_image_pixels,
                       std::string(what) + " of " + std::to_string(width) + " x " +
                           std::to_string(height) + " = " + std::to_string(pixels) +
                           " pixels is over the limit of " + std::to_string(max_image_pixels) +
                           " (max_image_pixels)");
}

void check_view(const ImageView& image) {
    SGA_CHECK_ARGUMENT(image.data != nullptr, "image data is null");
    SGA_CHECK_ARGUMENT(image.width > 0 && image.height > 0,
                       "image size must be positive, got " + std::to_string(image.width) + " x " +
                           std::to_string(image.height));
    const std::int64_t row_bytes =
        checked_multiply(image.width, bytes_per_pixel(image.format), "image row size");
    SGA_CHECK_ARGUMENT(image.row_stride_bytes >= row_bytes,
                       "row stride of " + std::to_string(image.row_stride_bytes) +
                           " bytes is smaller than a row of " + std::to_string(row_bytes) +
                           " bytes");
    // The whole buffer, (height - 1) strides plus one row, must be addressable.
    const std::int64_t strides =
        checked_multiply(image.height - 1, image.row_stride_bytes, "image buffer size");
    SGA_CHECK_ARGUMENT(strides <= PTRDIFF_MAX - row_bytes, "image buffer size overflows");
    check_pixel_count(image.width, image.height, "image size");
}

void check_output_size(int size, int channels) {
    SGA_CHECK_ARGUMENT(size > 0, "output size must be positive, got " + std::to_string(size));
    SGA_CHECK_ARGUMENT(channels == 1 || channels == 3,
                       "output channels must be 1 or 3, got " + std::to_string(channels));
    check_pixel_count(size, size, "output size");
}

// ---- PIL's resampling (Pillow src/libImaging/Resample.c) ---------------------------------

// Per output sample: the first input sample used and the normalised triangle weights.
struct ResampleWeights {
    std::vector<int> first;                  // (out_size)
    std::vector<std::vector<double>> taps;  // (out_size, taps of that sample)
};

double triangle(double x) {
    x = std::fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

// precompute_coeffs of Pillow for the bilinear filter (support 1) over the whole input.
ResampleWeights resample_weights(int in_size, int out_size) {
    const double scale = static_cast<double>(in_size) / out_size;
    const double filter_scale = std::max(scale, 1.0);  // widen the filter when shrinking
    const double support = 1.0 * filter_scale;
    ResampleWeights weights;
    weights.first.resize(out_size);
    weights.taps.resize(out_size);
    for (int out = 0; out < out_size; ++out) {
        const double center = (out + 0.5) * scale;
        // Truncation toward zero, as Pillow's (int) casts.
        int first = static_cast<int>(center - support + 0.5);
        if (first < 0) first = 0;
        int last = static_cast<int>(center + support + 0.5);
        if (last > in_size) last = in_size;
        std::vector<double> taps(std::max(last - first, 0));
        double total = 0.0;
        for (int i = 0; i < static_cast<int>(taps.size()); ++i) {
            taps[i] = triangle((i + first - center + 0.5) / filter_scale);
            total += taps[i];
        }
        if (total != 0.0)
            for (double& t : taps) t /= total;
        weights.first[out] = first;
        weights.taps[out] = std::move(taps);
    }
    return weights;
}

constexpr int precision_bits = 32 - 8 - 2;  // Pillow's PRECISION_BITS for 8-bit images

struct FixedWeights {
    std::vector<int> first;                      // (out_size)
    std::vector<std::vector<std::int32_t>> taps;  // (out_size, taps)
};

// normalize_coeffs_8bpc: round each weight to 22-bit fixed point, half away from zero.
FixedWeights fixed_point(const ResampleWeights& weights) {
    FixedWeights fixed;
    fixed.first = weights.first;
    fixed.taps.resize(weights.taps.size());
    for (std::size_t out = 0; out < weights.taps.size(); ++out) {
        for (double w : weights.taps[out]) {
            const double scaled = w * (1 << precision_bits);
            fixed.taps[out].push_back(static_cast<std::int32_t>(scaled < 0 ? scaled - 0.5 : scaled + 0.5));
        }
    }
    return fixed;
}

std::uint8_t clip8(std::int64_t value) {
    if (value >= (std::int64_t{1} << precision_bits << 8)) return 255;
    if (value <= 0) return 0;
    return static_cast<std::uint8_t>(value >> precision_bits);
}

// (height, width) uint8 plane -> (out_height, out_width), Pillow's 8-bit two-pass resample.
std::vector<std::uint8_t> resize_plane_u8(const std::uint8_t* plane, int height, int width,
                                          int out_height, int out_width) {
    std::vector<std::uint8_t> current(plane, plane + static_cast<std::size_t>(height) * width);
    int current_width = width;
    if (out_width != width) {
        const FixedWeights w = fixed_point(resample_weights(width, out_width));
        std::vector<std::uint8_t> next(static_cast<std::size_t>(height) * out_width);
        for (int y = 0; y < height; ++y) {
            const std::uint8_t* row = current.data() + static_cast<std::size_t>(y) * width;
            for (int x = 0; x < out_width; ++x) {
                std::int64_t sum = std::int64_t{1} << (precision_bits - 1);
                const std::vector<std::int32_t>& taps = w.taps[x];
                for (std::size_t i = 0; i < taps.size(); ++i)
                    sum += static_cast<std::int64_t>(row[w.first[x] + i]) * taps[i];
                next[static_cast<std::size_t>(y) * out_width + x] = clip8(sum);
            }
        }
        current.swap(next);
        current_width = out_width;
    }
    if (out_height != height) {
        const FixedWeights w = fixed_point(resample_weights(height, out_height));
        std::vector<std::uint8_t> next(static_cast<std::size_t>(out_height) * current_width);
        for (int y = 0; y < out_height; ++y) {
            const std::vector<std::int32_t>& taps = w.taps[y];
            for (int x = 0; x < current_width; ++x) {
                std::int64_t sum = std::int64_t{1} << (precision_bits - 1);
                for (std::size_t i = 0; i < taps.size(); ++i)
                    sum += static_cast<std::int64_t>(
                               current[(w.first[y] + i) * current_width + x]) *
                           taps[i];
                next[static_cast<std::size_t>(y) * current_width + x] = clip8(sum);
            }
        }
        current.swap(next);
    }
    return current;
}

// Pillow's resample of mode "F" images: double weights and sums, float storage between passes.
std::vector<float> resize_plane_float(const float* plane, int height, int width, int out_height,
                                      int out_width) {
    std::vector<float> current(plane, plane + static_cast<std::size_t>(height) * width);
    int current_width = width;
    if (out_width != width) {
        const ResampleWeights w = resample_weights(width, out_width);
        std::vector<float> next(static_cast<std::size_t>(height) * out_width);
        for (int y = 0; y < height; ++y) {
            const float* row = current.data() + static_cast<std::size_t>(y) * width;
            for (int x = 0; x < out_width; ++x) {
                double sum = 0.0;
                const std::vector<double>& taps = w.taps[x];
                for (std::size_t i = 0; i < taps.size(); ++i) sum += row[w.first[x] + i] * taps[i];
                next[static_cast<std::size_t>(y) * out_width + x] = static_cast<float>(sum);
            }
        }
        current.swap(next);
        current_width = out_width;
    }
    if (out_height != height) {
        const ResampleWeights w = resample_weights(height, out_height);
        std::vector<float> next(static_cast<std::size_t>(out_height) * current_width);
        for (int y = 0; y < out_height; ++y) {
            const std::vector<double>& taps = w.taps[y];
            for (int x = 0; x < current_width; ++x) {
                double sum = 0.0;
                for (std::size_t i = 0; i < taps.size(); ++i)
                    sum += current[(w.first[y] + i) * current_width + x] * taps[i];
                next[static_cast<std::size_t>(y) * current_width + x] = static_cast<float>(sum);
            }
        }
        current.swap(next);
    }
    return current;
}

// Pillow's rgb2l: 601-2 luma in 16-bit fixed point, rounded.
std::uint8_t luma8(std::uint32_t r, std::uint32_t g, std::uint32_t b) {
    return static_cast<std::uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
}

// Converts a view into `channels` planes (channels, height, width) of 8-bit values.
std::vector<std::uint8_t> to_planes(const ImageView& image, int channels) {
    const std::size_t plane = static_cast<std::size_t>(image.width) * image.height;
    std::vector<std::uint8_t> planes(plane * channels);
    const int bpp = bytes_per_pixel(image.format);
    for (int y = 0; y < image.height; ++y) {
        const std::uint8_t* row = image.data + static_cast<std::ptrdiff_t>(y) * image.row_stride_bytes;
        for (int x = 0; x < image.width; ++x) {
            const std::uint8_t* p = row + static_cast<std::ptrdiff_t>(x) * bpp;
            std::uint8_t r, g, b;
            switch (image.format) {
                case PixelFormat::Gray: r = g = b = p[0]; break;
                case PixelFormat::Bgr:
                case PixelFormat::Bgra: r = p[2]; g = p[1]; b = p[0]; break;
                case PixelFormat::Rgb:
                case PixelFormat::Rgba:
                default: r = p[0]; g = p[1]; b = p[2]; break;
            }
            const std::size_t i = static_cast<std::size_t>(y) * image.width + x;
            if (channels == 1) {
                planes[i] = image.format == PixelFormat::Gray ? r : luma8(r, g, b);
            } else {
                planes[i] = r;
                planes[plane + i] = g;
                planes[2 * plane + i] = b;
            }
        }
    }
    return planes;
}

void check_finite(const float* values, std::size_t count, const char* what) {
    for (std::size_t i = 0; i < count; ++i)
        if (!std::isfinite(values[i]))
            throw InvalidArgument(std::string(what) + " holds a non-finite value (" +
                                  std::to_string(values[i]) + ") at index " + std::to_string(i));
}

void check_image(const Image& image) {
    SGA_CHECK_ARGUMENT(image.width > 0 && image.height > 0,
                       "image size must be positive, got " + std::to_string(image.width) + " x " +
                           std::to_string(image.height));
    SGA_CHECK_ARGUMENT(image.channels == 1 || image.channels == 3 || image.channels == 4,
                       "image channels must be 1, 3 or 4, got " + std::to_string(image.channels));
    const std::int64_t expected = checked_multiply(
        checked_multiply(image.width, image.height, "image pixel count"), image.channels,
        "image byte count");
    SGA_CHECK_ARGUMENT(static_cast<std::int64_t>(image.pixels.size()) == expected,
                       "image pixels: expected " + std::to_string(expected) + " bytes, found " +
                           std::to_string(image.pixels.size()));
}

bool is_png(std::span<const std::uint8_t> bytes) {
    static constexpr unsigned char png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    return bytes.size() >= 8 && std::equal(png_signature, png_signature + 8, bytes.begin());
}

std::uint32_t big_endian32(std::span<const std::uint8_t> bytes, std::size_t at) {
    return (std::uint32_t{bytes[at]} << 24) | (std::uint32_t{bytes[at + 1]} << 16) |
           (std::uint32_t{bytes[at + 2]} << 8) | std::uint32_t{bytes[at + 3]};
}

// The size a PNG or BMP header declares, read by hand so that a size stb itself refuses
// still gets our message. Returns false for other formats (stbi_info reports those).
bool declared_size(std::span<const std::uint8_t> bytes, std::int64_t& width, std::int64_t& height) {
    auto little_endian32 = [&](std::size_t at) {
        return std::uint32_t{bytes[at]} | (std::uint32_t{bytes[at + 1]} << 8) |
               (std::uint32_t{bytes[at + 2]} << 16) | (std::uint32_t{bytes[at + 3]} << 24);
    };
    if (bytes.size() >= 24 && is_png(bytes) && std::equal(bytes.begin() + 12, bytes.begin() + 16, "IHDR")) {
        width = big_endian32(bytes, 16);
        height = big_endian32(bytes, 20);
        return true;
    }
    if (bytes.size() >= 26 && bytes[0] == 'B' && bytes[1] == 'M') {
        if (little_endian32(14) == 12) {  // OS/2 header: 16-bit sizes
            width = bytes[18] | (bytes[19] << 8);
            height = bytes[20] | (bytes[21] << 8);
        } else {  // a negative height means rows stored top-down
            width = static_cast<std::int32_t>(little_endian32(18));
            height = std::abs(static_cast<std::int64_t>(static_cast<std::int32_t>(little_endian32(22))));
        }
        return true;
    }
    return false;
}

void check_declared_size(const std::string& path, std::int64_t width, std::int64_t height) {
    if (width > max_image_side || height > max_image_side || width * height > max_image_pixels)
        throw FormatError("image '" + path + "' declares " + std::to_string(width) + " x " +
                          std::to_string(height) + " pixels; the limit is " +
                          std::to_string(max_image_side) + " per side and " +
                          std::to_string(max_image_pixels) + " pixels in all");
}

// stb fills a truncated uncompressed BMP with zeros instead of failing; check the length the
// header implies (pixel data offset + padded rows) ourselves.
// stb pads a JPEG's missing entropy-coded data with zeros, so a few hundred bytes declaring
// 16384 x 16384 would decode into gigabytes. Every 8 x 8 block of every scan costs at least one
// bit (its DC code; progressive AC scans can skip blocks, DC scans cannot), so a file holding
// fewer bits than the image has luma blocks cannot be a whole JPEG. This bounds what a file of
// n bytes can make us allocate to about 512 n pixels.
void check_jpeg_length(const std::string& path, std::size_t length, std::int64_t width,
                       std::int64_t height) {
    const std::int64_t blocks = ((width + 7) / 8) * ((height + 7) / 8);
    const std::int64_t bits = static_cast<std::int64_t>(length) * 8;
    if (bits < blocks)
        throw FormatError("image '" + path + "' is a truncated JPEG: it declares " + std::to_string(width) +
                          " x " + std::to_string(height) + " (" + std::to_string(blocks) +
                          " blocks of 8 x 8, at least one bit each) but holds only " +
                          std::to_string(length) + " bytes");
}

// stb sizes its PNG buffers from what the file declares before reading the data: it grows
// the compressed buffer to an IDAT chunk's declared length (a 93-byte file declaring a 1.2 GB
// chunk made it realloc 2 GB; found by fuzzing), and allocates the whole decompressed image
// up front. So walk the chunks first: each chunk's data must lie within the file, and the
// compressed data must be able to inflate to the declared image, as deflate expands at most
// 1032:1. What a PNG of n bytes can make us allocate is then about 1032 n.
void check_png_chunks(const std::string& path, std::span<const std::uint8_t> bytes, std::int64_t width,
                      std::int64_t height) {
    if (!is_png(bytes)) return;
    std::int64_t bits_per_pixel = 0;
    std::uint64_t compressed = 0;
    std::size_t at = 8;
    while (at + 8 <= bytes.size()) {
        const std::uint64_t length = big_endian32(bytes, at);
        const std::string type(bytes.begin() + static_cast<std::ptrdiff_t>(at + 4),
                               bytes.begin() + static_cast<std::ptrdiff_t>(at + 8));
        const std::uint64_t remaining = bytes.size() - at - 8;
        if (length > remaining)
            throw FormatError("image '" + path + "' is a truncated PNG: chunk '" + type + "' at byte " +
                              std::to_string(at) + " declares " + std::to_string(length) + " bytes, " +
                              std::to_string(remaining) + " remain");
        if (type == "IHDR" && length >= 13) {
            static constexpr int channels_of_colour_type[7] = {1, 0, 3, 1, 2, 0, 4};
            const int depth = bytes[at + 16], colour_type = bytes[at + 17];
            if (colour_type <= 6) bits_per_pixel = std::int64_t{depth} * channels_of_colour_type[colour_type];
        }
        if (type == "IDAT") compressed += length;
        if (type == "IEND") break;
        at += 12 + static_cast<std::size_t>(length);  // the 4-byte CRC may be cut off the last chunk
    }
    const std::int64_t raw_bytes = width * height * bits_per_pixel / 8;
    constexpr std::uint64_t deflate_max_ratio = 1032;
    if (static_cast<std::uint64_t>(raw_bytes) > (compressed + 1) * deflate_max_ratio)
        throw FormatError("image '" + path + "' is a truncated PNG: " + std::to_string(compressed) +
                          " bytes of compressed data cannot inflate to the " + std::to_string(raw_bytes) +
                          " bytes of its " + std::to_string(width) + " x " + std::to_string(height) +
                          " pixels (deflate expands at most 1032:1)");
}

void check_bmp_length(const std::string& path, std::span<const std::uint8_t> bytes) {
    if (bytes.size() < 2 || bytes[0] != 'B' || bytes[1] != 'M') return;
    // Bytes past the end read as 0, as stb reads them.
    auto byte = [&](std::size_t at) -> std::uint32_t { return at < bytes.size() ? bytes[at] : 0u; };
    auto le16 = [&](std::size_t at) { return byte(at) | (byte(at + 1) << 8); };
    auto le32 = [&](std::size_t at) { return le16(at) | (le16(at + 2) << 16); };
    const std::uint32_t header_size = le32(14);
    std::int64_t width = 0, height = 0, bits = 0;
    if (header_size == 12) {
        width = le16(18);
        height = le16(20);
        bits = le16(24);
    } else if (header_size >= 40) {
        // 0: uncompressed, 3: bit fields; stb refuses 1 and 2 (RLE) and 4 and above, but reads
        // the field as a signed int and decodes negative values as uncompressed (found by
        // fuzzing: 42 bytes declaring 9732 x 9986 decoded for 23 s from padding zeros).
        const auto compression = static_cast<std::int32_t>(le32(30));
        if (compression == 1 || compression == 2) return;  // RLE: stb refuses it
        if (compression < 0 || compression > 3)
            throw FormatError("image '" + path + "' is a BMP with unsupported compression " +
                              std::to_string(compression) + "; expected 0 (none) or 3 (bit fields)");
        width = static_cast<std::int32_t>(le32(18));
        height = std::abs(static_cast<std::int64_t>(static_cast<std::int32_t>(le32(22))));
        bits = le16(28);
    } else {
        return;
    }
    const std::int64_t row_bytes = (bits * width + 31) / 32 * 4;
    const std::int64_t expected = static_cast<std::int64_t>(le32(10)) + row_bytes * height;
    if (width > 0 && static_cast<std::int64_t>(bytes.size()) < expected)
        throw FormatError("image '" + path + "' is a truncated BMP: expected at least " +
                          std::to_string(expected) + " bytes, found " + std::to_string(bytes.size()));
}

std::string failure_reason() {
    const char* reason = stbi_failure_reason();
    return reason != nullptr ? reason : "unknown reason";
}

}  // namespace

int bytes_per_pixel(PixelFormat format) {
    switch (format) {
        case PixelFormat::Gray: return 1;
        case PixelFormat::Rgb: return 3;
        case PixelFormat::Bgr: return 3;
        case PixelFormat::Rgba: return 4;
        case PixelFormat::Bgra: return 4;
    }
    throw InvalidArgument("unknown pixel format " + std::to_string(static_cast<int>(format)));
}

ImageView Image::view() const {
    check_image(*this);
    ImageView v;
    v.data = pixels.data();
    v.width = width;
    v.height = height;
    v.row_stride_bytes = static_cast<std::ptrdiff_t>(width) * channels;
    v.format = channels == 1 ? PixelFormat::Gray : channels == 3 ? PixelFormat::Rgb : PixelFormat::Rgba;
    return v;
}

Image load_image(const std::string& path) {
    std::error_code error;
    const fs::file_status status = fs::status(path, error);
    if (!fs::exists(status))
        throw IoError("cannot read image '" + path + "': it " + safe_file::lookup_failure(error ? error.value() : ENOENT));
    if (fs::is_directory(status))
        throw IoError("cannot read image '" + path + "': it is a directory");
    // Opening a FIFO blocks until someone writes to it, and a device may never end.
    if (!fs::is_regular_file(status))
        throw IoError("cannot read image '" + path + "': not a regular file (a FIFO, socket or device)");
    const std::uintmax_t file_size = fs::file_size(path, error);
    if (!error && file_size > static_cast<std::uintmax_t>(INT_MAX))
        throw FormatError("image '" + path + "' is too large to decode: " + std::to_string(file_size) +
                          " bytes, the limit is " + std::to_string(INT_MAX));

    std::ifstream file(path, std::ios::binary);
    if (!file)
        throw IoError("cannot open image '" + path + "': " + std::strerror(errno));
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(file)),
                                     std::istreambuf_iterator<char>());
    if (file.bad()) throw IoError("cannot read image '" + path + "': read error");
    if (bytes.empty()) throw FormatError("image '" + path + "' is an empty file");
    return decode_image(bytes, path);
}

// `path`: the file's path, or the name the caller gave; the messages call the image by it.
Image decode_image(std::span<const std::uint8_t> bytes, const std::string& path) {
    if (bytes.empty()) throw FormatError("image '" + path + "' is empty: no bytes to decode");
    if (bytes.size() > static_cast<std::size_t>(INT_MAX))
        throw FormatError("image '" + path + "' is too large to decode: " +
                          std::to_string(bytes.size()) + " bytes, the limit is " +
                          std::to_string(INT_MAX));
    const int length = static_cast<int>(bytes.size());

    // Check the declared size before decoding anything.
    std::int64_t header_width = 0, header_height = 0;
    const bool png_or_bmp = declared_size(bytes, header_width, header_height);
    if (png_or_bmp) check_declared_size(path, header_width, header_height);
    int width = 0, height = 0, file_channels = 0;
    if (!stbi_info_from_memory(bytes.data(), length, &width, &height, &file_channels))
        throw FormatError("'" + path + "' is not a readable PNG, JPEG or BMP image: " +
                          failure_reason());
    // stbi_info (stb 2.27) passes a top-down BMP's negative height through; its decoder uses
    // the absolute value, which declared_size has already checked.
    if (height < 0 && height >= -max_image_side && bytes[0] == 'B' && bytes[1] == 'M') height = -height;
    if (width <= 0 || height <= 0)
        throw FormatError("image '" + path + "' declares an empty size of " + std::to_string(width) +
                          " x " + std::to_string(height));
    check_declared_size(path, width, height);
    check_bmp_length(path, bytes);
    check_png_chunks(path, bytes, width, height);
    if (!png_or_bmp) check_jpeg_length(path, bytes.size(), width, height);  // the third format
    const std::int64_t pixel_count = static_cast<std::int64_t>(width) * height;

    int decoded_width = 0, decoded_height = 0, channels = 0;
    std::unique_ptr<unsigned char, void (*)(void*)> data(
        stbi_load_from_memory(bytes.data(), length, &decoded_width, &decoded_height, &channels, 0),
        stbi_image_free);
    if (!data) throw FormatError("cannot decode image '" + path + "': " + failure_reason());
    if (decoded_width != width || decoded_height != height)
        throw FormatError("image '" + path + "': header declares " + std::to_string(width) + " x " +
                          std::to_string(height) + ", decoder produced " +
                          std::to_string(decoded_width) + " x " + std::to_string(decoded_height));

    Image image;
    image.width = width;
    image.height = height;
    const std::size_t count = static_cast<std::size_t>(pixel_count);
    if (channels == 2) {  // grey + alpha: keep the grey
        image.channels = 1;
        image.pixels.resize(count);
        for (std::size_t i = 0; i < count; ++i) image.pixels[i] = data.get()[2 * i];
    } else if (channels == 1 || channels == 3 || channels == 4) {
        image.channels = channels;
        image.pixels.assign(data.get(), data.get() + count * channels);
    } else {
        throw FormatError("image '" + path + "': unsupported channel count: expected 1 to 4, found " +
                          std::to_string(channels));
    }
    return image;
}

std::vector<std::uint8_t> encode_png(const Image& image) {
    check_image(image);
    SGA_CHECK_ARGUMENT(static_cast<std::int64_t>(image.width) * image.channels <= INT_MAX,
                       "image rows are too wide for the PNG encoder");
    std::vector<std::uint8_t> encoded;
    auto append = [](void* context, void* data, int size) {
        auto* out = static_cast<std::vector<std::uint8_t>*>(context);
        const auto* bytes = static_cast<const std::uint8_t*>(data);
        out->insert(out->end(), bytes, bytes + size);
    };
    if (!stbi_write_png_to_func(append, &encoded, image.width, image.height, image.channels,
                                image.pixels.data(), image.width * image.channels))
        throw IoError("cannot encode a " + std::to_string(image.width) + " x " + std::to_string(image.height) +
                      " image as PNG");
    return encoded;
}

void save_png(const std::string& path, const Image& image) {
    const std::vector<std::uint8_t> encoded = encode_png(image);
    safe_file::write_atomically(path, encoded.data(), encoded.size());
}

void preprocess(const ImageView& image, int size, int channels, float* output) {
    check_view(image);
    check_output_size(size, channels);
    SGA_CHECK_ARGUMENT(output != nullptr, "output is null");

    // torchvision: ToTensor divides by 255 in float, Normalize(0.5, 0.5) maps to (x - 0.5) / 0.5,
    // which equals x * 2 - 1 in float exactly (scaling by 2 commutes with rounding).
    std::array<float, 256> to_unit{};
    for (int v = 0; v < 256; ++v) to_unit[v] = static_cast<float>(v) / 255.0f * 2.0f - 1.0f;

    const std::vector<std::uint8_t> planes = to_planes(image, channels);
    const std::size_t in_plane = static_cast<std::size_t>(image.width) * image.height;
    const std::size_t out_plane = static_cast<std::size_t>(size) * size;
    for (int c = 0; c < channels; ++c) {
        const std::vector<std::uint8_t> resized = resize_plane_u8(
            planes.data() + c * in_plane, image.height, image.width, size, size);
        float* out = output + c * out_plane;
        for (std::size_t i = 0; i < out_plane; ++i) out[i] = to_unit[resized[i]];
    }
}

void preprocess_float_chw(const float* chw, int channels_in, int height, int width, int size,
                          int channels, float* output) {
    SGA_CHECK_ARGUMENT(chw != nullptr, "input is null");
    SGA_CHECK_ARGUMENT(output != nullptr, "output is null");
    SGA_CHECK_ARGUMENT(channels_in == 1 || channels_in == 3 || channels_in == 4,
                       "input channels must be 1, 3 or 4, got " + std::to_string(channels_in));
    SGA_CHECK_ARGUMENT(height > 0 && width > 0, "input size must be positive, got width " +
                                                    std::to_string(width) + ", height " +
                                                    std::to_string(height));
    check_output_size(size, channels);
    check_pixel_count(width, height, "input size");
    const std::size_t in_plane = static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
    check_finite(chw, in_plane * channels_in, "input");

    const std::size_t out_plane = static_cast<std::size_t>(size) * size;
    std::vector<float> gray;
    for (int c = 0; c < channels; ++c) {
        const float* source = nullptr;
        if (channels == 3) {
            source = chw + (channels_in == 1 ? 0 : c) * in_plane;  // grey replicated
        } else if (channels_in == 1) {
            source = chw;
        } else {
            gray.resize(in_plane);
            const float* r = chw;
            const float* g = chw + in_plane;
            const float* b = chw + 2 * in_plane;
            for (std::size_t i = 0; i < in_plane; ++i)
                gray[i] = 0.299f * r[i] + 0.587f * g[i] + 0.114f * b[i];
            source = gray.data();
        }
        const std::vector<float> resized = resize_plane_float(source, height, width, size, size);
        std::copy(resized.begin(), resized.end(), output + c * out_plane);
    }
}

void preprocess(const FloatImageView& image, int size, int channels, float* output) {
    preprocess_float_chw(image.data, image.channels, image.height, image.width, size, channels, output);
}

std::vector<float> resize_plane(const float* plane, int height, int width, int out_height,
                                int out_width) {
    SGA_CHECK_ARGUMENT(plane != nullptr, "plane is null");
    SGA_CHECK_ARGUMENT(height > 0 && width > 0 && out_height > 0 && out_width > 0,
                       "plane sizes must be positive, got " + std::to_string(height) + " x " +
                           std::to_string(width) + " -> " + std::to_string(out_height) + " x " +
                           std::to_string(out_width));
    check_pixel_count(width, height, "plane size");
    check_pixel_count(out_width, out_height, "resized plane size");
    check_finite(plane, static_cast<std::size_t>(width) * static_cast<std::size_t>(height), "plane");
    return resize_plane_float(plane, height, width, out_height, out_width);
}

Image anomaly_overlay(const ImageView& original, const std::vector<float>& map, float vmin,
                      float vmax) {
    check_view(original);
    SGA_CHECK_ARGUMENT(std::isfinite(vmin) && std::isfinite(vmax) && vmax > vmin,
                       "overlay range must be finite with vmax > vmin, got [" +
                           std::to_string(vmin) + ", " + std::to_string(vmax) + "]");
    const std::size_t pixels = static_cast<std::size_t>(original.width) * original.height;
    SGA_CHECK_ARGUMENT(map.size() == pixels,
                       "anomaly map: expected " + std::to_string(pixels) + " values (" +
                           std::to_string(original.height) + " x " +
                           std::to_string(original.width) + "), found " +
                           std::to_string(map.size()) + "; see resize_plane");
    check_finite(map.data(), map.size(), "anomaly map");

    const std::vector<std::uint8_t> rgb = to_planes(original, 3);
    Image out;
    out.width = original.width;
    out.height = original.height;
    out.channels = 3;
    out.pixels.resize(pixels * 3);
    const float range = vmax - vmin;
    for (std::size_t i = 0; i < pixels; ++i) {
        const float t = std::clamp((map[i] - vmin) / range, 0.0f, 1.0f);
        // The classic "jet" map: blue -> cyan -> yellow -> red.
        const std::array<float, 3> jet = {
            std::clamp(1.5f - std::fabs(4.0f * t - 3.0f), 0.0f, 1.0f),
            std::clamp(1.5f - std::fabs(4.0f * t - 2.0f), 0.0f, 1.0f),
            std::clamp(1.5f - std::fabs(4.0f * t - 1.0f), 0.0f, 1.0f)};
        for (int c = 0; c < 3; ++c) {
            const float blended = 0.5f * rgb[c * pixels + i] + 0.5f * 255.0f * jet[c];
            out.pixels[i * 3 + c] = static_cast<std::uint8_t>(std::lround(std::clamp(blended, 0.0f, 255.0f)));
        }
    }
    return out;
}

}  // namespace sga
