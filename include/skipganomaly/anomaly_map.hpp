// How a reconstruction becomes an anomaly map and an image score.
//
// The official score averages the reconstruction error over the whole image (0.9 x mean
// squared error + 0.1 x latent error): a defect covering 1% of a surface moves that mean by
// about 1%, less than the error of normal texture varies from image to image, so local defects
// are lost. The local rule instead (1) takes the per-pixel channel mean of |x - G(x)| or
// (x - G(x))^2, (2) smooths it with a Gaussian, so that an isolated badly reconstructed pixel of
// normal texture counts for little and a defect's many neighbouring pixels for much, and (3)
// scores the image by the maximum of the smoothed map: the most anomalous place decides.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "skipganomaly/error.hpp"

namespace sga {

enum class MapError {
    Squared,   // channel mean of (x - G(x))^2 (the official error)
    Absolute,  // channel mean of |x - G(x)|: a large error counts linearly, not quadratically
};

enum class ImageScore {
    Official,    // 0.9 x mean squared error + 0.1 x latent error (the paper)
    MapMaximum,  // the largest value of the (smoothed) anomaly map
};

inline const char* map_error_name(MapError e) { return e == MapError::Squared ? "squared" : "absolute"; }
inline const char* image_score_name(ImageScore s) { return s == ImageScore::Official ? "official" : "map_maximum"; }

struct AnomalyMapRule {
    MapError error = MapError::Squared;
    // Standard deviation of the Gaussian the map is smoothed with, in pixels of the network's
    // input; 0: no smoothing (official).
    float smoothing_sigma = 0.0f;
    ImageScore image_score = ImageScore::Official;

    bool is_official() const {
        return error == MapError::Squared && smoothing_sigma == 0.0f && image_score == ImageScore::Official;
    }
    // Whether scoring needs the map even when the caller does not ask for it.
    bool score_needs_map() const { return image_score == ImageScore::MapMaximum; }

    void validate(int image_size) const {
        SGA_CHECK_ARGUMENT(std::isfinite(smoothing_sigma) && smoothing_sigma >= 0 &&
                               smoothing_sigma <= static_cast<float>(image_size) / 4,
                           "smoothing_sigma must lie in [0, image_size / 4] = [0, " + std::to_string(image_size / 4) +
                               "], found " + std::to_string(smoothing_sigma));
    }
};

// The normalised Gaussian taps for `sigma` (> 0): 2 r + 1 of them, r = ceil(3 sigma).
inline std::vector<float> gaussian_taps(float sigma) {
    const int radius = std::max(1, static_cast<int>(std::ceil(3.0f * sigma)));
    std::vector<float> taps(static_cast<std::size_t>(2 * radius + 1));
    double sum = 0;
    for (int k = -radius; k <= radius; ++k) sum += taps[static_cast<std::size_t>(k + radius)] =
        static_cast<float>(std::exp(-0.5 * k * k / (static_cast<double>(sigma) * sigma)));
    for (float& t : taps) t = static_cast<float>(t / sum);
    return taps;
}

// Smooths each of `count` (height, width) row-major planes of `maps` in place with a separable
// Gaussian of `sigma` pixels; edges reflect (d c b | a b c d | c b a), so a constant map stays
// constant and no mass leaks out at the border. sigma 0 leaves the maps as they are.
inline void smooth_maps(float* maps, std::int64_t count, std::int64_t height, std::int64_t width, float sigma) {
    if (sigma <= 0 || count == 0) return;
    const std::vector<float> taps = gaussian_taps(sigma);
    const std::int64_t radius = static_cast<std::int64_t>(taps.size() / 2);
    auto reflect = [](std::int64_t i, std::int64_t n) {
        if (n == 1) return std::int64_t{0};
        const std::int64_t period = 2 * (n - 1);
        i = ((i % period) + period) % period;
        return i < n ? i : period - i;
    };
    std::vector<float> line(static_cast<std::size_t>(std::max(height, width)));
    for (std::int64_t m = 0; m < count; ++m) {
        float* plane = maps + m * height * width;
        for (std::int64_t y = 0; y < height; ++y) {  // along rows
            float* row = plane + y * width;
            for (std::int64_t x = 0; x < width; ++x) {
                float sum = 0;
                for (std::int64_t k = -radius; k <= radius; ++k) sum += taps[static_cast<std::size_t>(k + radius)] * row[reflect(x + k, width)];
                line[static_cast<std::size_t>(x)] = sum;
            }
            std::copy_n(line.begin(), width, row);
        }
        for (std::int64_t x = 0; x < width; ++x) {  // along columns
            for (std::int64_t y = 0; y < height; ++y) {
                float sum = 0;
                for (std::int64_t k = -radius; k <= radius; ++k)
                    sum += taps[static_cast<std::size_t>(k + radius)] * plane[reflect(y + k, height) * width + x];
                line[static_cast<std::size_t>(y)] = sum;
            }
            for (std::int64_t y = 0; y < height; ++y) plane[y * width + x] = line[static_cast<std::size_t>(y)];
        }
    }
}

// The image score of one map under `rule` (MapMaximum): its largest value.
inline float map_image_score(const float* map, std::int64_t pixels) { return *std::max_element(map, map + pixels); }

}  // namespace sga
