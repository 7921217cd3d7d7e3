// 8-bit images: loading, saving, the one pre-processing routine shared by training and scoring,
// and helpers to resize anomaly maps and draw them over the original image.
#pragma once

#include "skipganomaly/config.hpp"
#include <cstddef>
#include <cstdint>
#include <string>
#include <span>
#include <vector>

namespace sga {

// Channel layout of an interleaved 8-bit pixel. Bgr and Bgra are OpenCV's orders
// (skipganomaly/opencv.hpp); alpha is ignored.
enum class PixelFormat { Gray, Rgb, Rgba, Bgr, Bgra };

// Bytes per pixel of an interleaved 8-bit format (1, 3 or 4).
SKIPGANOMALY_API int bytes_per_pixel(PixelFormat format);

// A caller's 8-bit interleaved image; the view does not own or copy the pixels.
// Row y starts at data + y * row_stride_bytes; a row holds width * bytes_per_pixel(format) bytes,
// and row_stride_bytes must be at least that (padding between rows is allowed).
struct ImageView {
    const std::uint8_t* data = nullptr;
    int width = 0;
    int height = 0;
    std::ptrdiff_t row_stride_bytes = 0;
    PixelFormat format = PixelFormat::Gray;
};

// A caller's float image, channel-major (C, H, W) and tightly packed: channel c, row y,
// column x is data[(c * height + y) * width + x]. Values are expected in [-1, 1] (8-bit v
// maps to v / 127.5 - 1); channels is 1 (grey), 3 (RGB) or 4 (RGBA, alpha ignored). Named
// fields, in ImageView's order (width before height), so that a non-square image cannot be
// passed transposed by swapping two ints. The view does not own or copy the values.
struct FloatImageView {
    const float* data = nullptr;
    int width = 0;
    int height = 0;
    int channels = 0;
};

// An owned 8-bit image, (H, W, C) interleaved with C = channels in {1, 3, 4}:
// 1 = grey, 3 = RGB, 4 = RGBA. pixels.size() == width * height * channels.
struct SKIPGANOMALY_API Image {
    int width = 0;
    int height = 0;
    int channels = 0;
    std::vector<std::uint8_t> pixels;

    // A view of pixels (tightly packed rows). Throws InvalidArgument when the image is
    // inconsistent (channels not 1/3/4, sizes not positive, pixels of the wrong length).
    ImageView view() const;
};

// Largest image load_image accepts, checked on the size the file declares before anything
// is decoded, so a small file cannot make us allocate gigabytes. max_image_pixels also bounds
// the buffers preprocess, preprocess_float_chw and resize_plane accept.
inline constexpr int max_image_side = 16384;
inline constexpr std::int64_t max_image_pixels = std::int64_t{1} << 28;

// Decodes a PNG, JPEG or BMP file into 1 (grey), 3 (RGB) or 4 (RGBA) channels, keeping the
// file's own channel count (grey+alpha becomes grey). 16-bit PNGs are reduced to 8 bits.
// Throws IoError when the file is missing, cannot be read or is not a regular file (a FIFO,
// socket or device is refused before it is opened), FormatError when it is not a supported
// image, is truncated or corrupt, declares a size beyond the limits above, or holds too little
// data for the size it declares (a JPEG with fewer bits than 8 x 8 blocks, a PNG whose
// compressed data cannot inflate to its pixels, a BMP shorter than its rows).
SKIPGANOMALY_API Image load_image(const std::string& path);

// load_image's decoder on bytes in memory (a network body, a camera's buffer), with the same
// checks and limits; `name` stands for the image in error messages. Throws FormatError.
SKIPGANOMALY_API Image decode_image(std::span<const std::uint8_t> bytes, const std::string& name = "in memory");

// Writes image as a PNG. The bytes go to a temporary file in the same folder that is then
// renamed over path, so a reader never sees a half-written file.
// Throws InvalidArgument for an inconsistent image, IoError when writing fails.
SKIPGANOMALY_API void save_png(const std::string& path, const Image& image);
// The PNG save_png writes, as bytes. Throws InvalidArgument for an inconsistent image.
SKIPGANOMALY_API std::vector<std::uint8_t> encode_png(const Image& image);

// The pre-processing of the reference implementation (torchvision Resize(size) on a PIL image,
// then ToTensor and Normalize(0.5, 0.5)), reproduced bit for bit on 8-bit input:
//   1. channel conversion, in 8 bits, as PIL's Image.convert does:
//        to 1 channel:  L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, the ITU-R 601-2 luma
//                       weights 0.299/0.587/0.114 in 16-bit fixed point with rounding (this is
//                       what Pillow computes; R*299/1000 + ... truncated differs by one level
//                       on some colours); alpha is ignored.
//        to 3 channels: grey is replicated, BGR is swapped, RGBA drops alpha.
//   2. resize to size x size as PIL's BILINEAR resample: a separable triangle filter whose
//      support grows with the downscale factor (antialiased when shrinking), sample centres
//      at half pixels, weights normalised per output sample and quantised to 22-bit fixed
//      point, the horizontal pass first, each pass rounded (half up) and clamped to 0..255.
//      A side that already has the target length is not resampled.
//   3. out = (v / 255) * 2 - 1 in float, so values lie in [-1, 1].
// output receives (channels, size, size) floats, channel-major (CHW); channels is 1 or 3.
// Throws InvalidArgument for a null pointer, non-positive sizes, a stride smaller than a row,
// sizes whose product overflows, or more than max_image_pixels pixels in or out.
SKIPGANOMALY_API void preprocess(const ImageView& image, int size, int channels, float* output);

// The same conversion and resize for a caller holding float (channels_in, height, width) CHW
// data already scaled to [-1, 1]; channels_in is 1, 3 (RGB) or 4 (RGBA, alpha ignored).
// Luma uses the float weights 0.299/0.587/0.114, and the resize is PIL's BILINEAR on float
// images (mode "F": double weights, no quantisation). Nothing is rounded to 8 bits, so on
// the same content this differs from preprocess by at most 1.5 levels (3/255) when resizing
// or converting to grey, and not at all otherwise. Values outside [-1, 1] are passed through.
// Throws InvalidArgument for NaN or infinite input values and for the errors of preprocess.
SKIPGANOMALY_API void preprocess_float_chw(const float* chw, int channels_in, int height, int width, int size,
                          int channels, float* output);

// preprocess_float_chw on a FloatImageView: the same conversion, named fields.
SKIPGANOMALY_API void preprocess(const FloatImageView& image, int size, int channels, float* output);

// Resizes one (height, width) float plane to (out_height, out_width) with the filter of
// preprocess_float_chw (bilinear, antialiased when shrinking); used to bring anomaly maps
// back to the original image resolution. Throws InvalidArgument for bad sizes or a
// non-finite value.
SKIPGANOMALY_API std::vector<float> resize_plane(const float* plane, int height, int width, int out_height,
                                int out_width);

// An RGB picture of an anomaly map over its image: the original (grey or colour, converted to
// RGB) blended half and half with a jet colour map of (map - vmin) / (vmax - vmin), clamped to
// [0, 1] (blue = normal, red = anomalous). map holds original.height * original.width scores,
// row-major, at the original's resolution (see resize_plane).
// Throws InvalidArgument when the sizes differ, vmax <= vmin, or a value is not finite.
SKIPGANOMALY_API Image anomaly_overlay(const ImageView& original, const std::vector<float>& map, float vmin,
                      float vmax);

}  // namespace sga
