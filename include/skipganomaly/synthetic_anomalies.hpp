// Synthetic anomalies made from normal images only, for the robust recipe's stopping rule
// (recipe.hpp): CutPaste (Li et al., CVPR 2021) with the patch taken from another normal
// image, so the result has locally normal texture in a place and arrangement where it does
// not belong: the kind of defect a model that copies its input through fails to see.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "skipganomaly/error.hpp"
#include "skipganomaly/random.hpp"

namespace sga {

// samples: count preprocessed images (count, channels, size, size), row-major. Returns one
// anomalous image per sample, in the same layout: sample i with a rectangle of sides in
// [size/8, size/2] pasted from sample j != i (from a random place, or sample i itself when
// count is 1) at another random place. Among four candidate source rectangles the one of
// largest variance is taken, so a patch of empty background (which would change nothing)
// is rare. Deterministic in `random`'s seed and position.
inline std::vector<float> make_cutpaste_anomalies(const std::vector<float>& samples, std::int64_t count,
                                                  std::int64_t channels, std::int64_t size, RandomStream& random) {
    const std::int64_t plane = size * size, sample = channels * plane;
    SGA_CHECK_ARGUMENT(count >= 1 && channels >= 1 && size >= 8 &&
                           static_cast<std::int64_t>(samples.size()) == count * sample,
                       "make_cutpaste_anomalies: samples do not hold count x channels x size x size floats");
    auto uniform = [&](std::int64_t low, std::int64_t high) {  // integer in [low, high]
        return low + static_cast<std::int64_t>(random.uniform_index(static_cast<std::uint64_t>(high - low + 1)));
    };
    std::vector<float> out = samples;
    for (std::int64_t i = 0; i < count; ++i) {
        const std::int64_t source = count == 1 ? i : (i + uniform(1, count - 1)) % count;
        const std::int64_t width = uniform(size / 8, size / 2), height = uniform(size / 8, size / 2);
        std::int64_t best_x = 0, best_y = 0;
        double best_variance = -1;
        for (int candidate = 0; candidate < 4; ++candidate) {
            const std::int64_t x = uniform(0, size - width), y = uniform(0, size - height);
            double sum = 0, sum_squares = 0;
            for (std::int64_t c = 0; c < channels; ++c)
                for (std::int64_t r = y; r < y + height; ++r)
                    for (std::int64_t q = x; q < x + width; ++q) {
                        const double v = samples[static_cast<std::size_t>(source * sample + c * plane + r * size + q)];
                        sum += v;
                        sum_squares += v * v;
                    }
            const double n = static_cast<double>(channels * width * height);
            const double variance = sum_squares / n - (sum / n) * (sum / n);
            if (variance > best_variance) {
                best_variance = variance;
                best_x = x;
                best_y = y;
            }
        }
        const std::int64_t to_x = uniform(0, size - width), to_y = uniform(0, size - height);
        for (std::int64_t c = 0; c < channels; ++c)
            for (std::int64_t r = 0; r < height; ++r)
                std::copy_n(samples.begin() + source * sample + c * plane + (best_y + r) * size + best_x, width,
                            out.begin() + i * sample + c * plane + (to_y + r) * size + to_x);
    }
    return out;
}

}  // namespace sga
