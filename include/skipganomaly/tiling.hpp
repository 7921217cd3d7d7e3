// Tiling: images larger than the network's input, scored and trained on at their own
// resolution. Without tiling an image is resized to the network's input, so a defect of a few
// pixels in a 5-megapixel photograph disappears. With tiling the image is cut into square
// tiles of `tile` pixels, `stride` apart (overlapping when stride < tile); each tile is
// resized to the network's input (not at all when tile == image_size) and scored; the tiles'
// anomaly maps are resized back and averaged where they overlap into one map at the image's
// full resolution. Training sees random tiles of the normal images.
#pragma once

#include "skipganomaly/config.hpp"
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"
#include "skipganomaly/random.hpp"

namespace sga {

struct Tiling {
    int tile = 0;    // side of a tile in image pixels; 0: no tiling (the whole image is resized)
    int stride = 0;  // pixels between neighbouring tiles; 0: tile / 2 (each pixel in up to 4 tiles)

    bool enabled() const { return tile > 0; }
    int step() const { return stride > 0 ? stride : std::max(1, tile / 2); }
    void validate() const {
        SGA_CHECK_ARGUMENT(tile == 0 || (tile >= 8 && tile <= max_image_side),
                           "tile must be 0 (no tiling) or lie in [8, " + std::to_string(max_image_side) + "], found " +
                               std::to_string(tile));
        SGA_CHECK_ARGUMENT(stride >= 0 && stride <= std::max(tile, 0),
                           "stride must lie in [0, tile] (0: tile / 2), found " + std::to_string(stride));
        SGA_CHECK_ARGUMENT(tile > 0 || stride == 0, "stride needs a tile");
    }
};

// A tile's place in its image, in pixels.
struct TileWindow {
    int x = 0, y = 0, width = 0, height = 0;
};

// Tile windows along one axis of `length` pixels: starts 0, step, 2 step, ... and a last one
// flush with the far edge, so that every pixel is covered and no tile leaves the image. An
// axis shorter than the tile has one window, the whole axis.
inline std::vector<std::pair<int, int>> tile_spans(int length, int tile, int step) {
    if (length <= tile) return {{0, length}};
    std::vector<std::pair<int, int>> spans;
    for (int start = 0;; start += step) {
        if (start + tile >= length) {
            spans.emplace_back(length - tile, tile);
            break;
        }
        spans.emplace_back(start, tile);
    }
    return spans;
}

// The windows covering a width x height image, row by row.
inline std::vector<TileWindow> tile_windows(int width, int height, const Tiling& tiling) {
    SGA_CHECK_ARGUMENT(tiling.enabled(), "tile_windows needs a tile size");
    SGA_CHECK_ARGUMENT(width > 0 && height > 0, "tile_windows: the image has no pixels");
    std::vector<TileWindow> windows;
    for (const auto& [y, h] : tile_spans(height, tiling.tile, tiling.step()))
        for (const auto& [x, w] : tile_spans(width, tiling.tile, tiling.step())) windows.push_back({x, y, w, h});
    return windows;
}

// The pixels of `window` in `image`, without copying (the view keeps the image's row stride).
inline ImageView tile_view(const ImageView& image, const TileWindow& window) {
    SGA_CHECK_ARGUMENT(window.x >= 0 && window.y >= 0 && window.width > 0 && window.height > 0 &&
                           window.x + window.width <= image.width && window.y + window.height <= image.height,
                       "the tile window lies outside the image");
    ImageView v = image;
    v.data = image.data + window.y * image.row_stride_bytes +
             static_cast<std::ptrdiff_t>(window.x) * bytes_per_pixel(image.format);
    v.width = window.width;
    v.height = window.height;
    return v;
}

// A random tile of a width x height image for training: a uniformly drawn position (the whole
// axis where it is shorter than the tile).
inline TileWindow random_tile(int width, int height, int tile, RandomStream& random) {
    auto start = [&](int length) {
        return length <= tile ? 0 : static_cast<int>(random.uniform_index(static_cast<std::uint64_t>(length - tile + 1)));
    };
    const int x = start(width), y = start(height);
    return {x, y, std::min(tile, width), std::min(tile, height)};
}

// Builds a full-resolution map from the tiles' maps: each tile's (size x size) map is resized
// to its window and added there; finish() divides every pixel by the number of tiles that
// covered it (every pixel is covered when the windows come from tile_windows).
class MapStitcher {
public:
    MapStitcher(int width, int height)
        : width_(width), height_(height), sum_(static_cast<std::size_t>(width) * static_cast<std::size_t>(height), 0.0f),
          count_(sum_.size(), 0) {}

    // map: (size, size) row-major, the tile's map at the network's resolution.
    void add(const float* map, int size, const TileWindow& window) {
        const std::vector<float> resized = window.width == size && window.height == size
                                               ? std::vector<float>(map, map + static_cast<std::ptrdiff_t>(size) * size)
                                               : resize_plane(map, size, size, window.height, window.width);
        for (int y = 0; y < window.height; ++y)
            for (int x = 0; x < window.width; ++x) {
                const std::size_t at = static_cast<std::size_t>(window.y + y) * static_cast<std::size_t>(width_) +
                                       static_cast<std::size_t>(window.x + x);
                sum_[at] += resized[static_cast<std::size_t>(y) * static_cast<std::size_t>(window.width) +
                                    static_cast<std::size_t>(x)];
                ++count_[at];
            }
    }
    // (height, width) row-major: the mean over the tiles covering each pixel.
    std::vector<float> finish() const {
        std::vector<float> out(sum_.size());
        for (std::size_t i = 0; i < out.size(); ++i) {
            SGA_CHECK_ARGUMENT(count_[i] > 0, "MapStitcher: a pixel no tile covered");
            out[i] = sum_[i] / static_cast<float>(count_[i]);
        }
        return out;
    }

private:
    int width_, height_;
    std::vector<float> sum_;
    std::vector<std::uint32_t> count_;  // tiles covering each pixel: up to (tile / stride)^2
};

}  // namespace sga
