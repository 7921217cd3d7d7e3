// Synthetic anomalies made from normal images only.
//
// For the robust recipe's stopping rule (recipe.hpp): CutPaste (Li et al., CVPR 2021) with the patch taken from another normal
// image, so the result has locally normal texture in a place and arrangement where it does
// not belong: the kind of defect a model that copies its input through fails to see.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "skipganomaly/error.hpp"
#include "skipganomaly/random.hpp"
#include "skipganomaly/sample_transforms.hpp"

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

namespace sga {

// Smooth gradient noise (Perlin) on a (size, size) grid of cells_y x cells_x cells, values in
// about [-0.7, 0.7]: the shape generator of DRAEM's (Zavrtanik et al., ICCV 2021) anomaly masks.
inline std::vector<float> perlin_noise(std::int64_t size, std::int64_t cells_y, std::int64_t cells_x, RandomStream& random) {
    const std::uint64_t at = random.take(static_cast<std::uint64_t>((cells_y + 1) * (cells_x + 1)));
    std::vector<float> gx(static_cast<std::size_t>((cells_y + 1) * (cells_x + 1))), gy(gx.size());
    for (std::size_t k = 0; k < gx.size(); ++k) {
        const double angle = 6.283185307179586 * random_uniform_at(random.seed(), at, k);
        gx[k] = static_cast<float>(std::cos(angle));
        gy[k] = static_cast<float>(std::sin(angle));
    }
    auto fade = [](float t) { return t * t * t * (t * (t * 6 - 15) + 10); };
    std::vector<float> noise(static_cast<std::size_t>(size * size));
    for (std::int64_t y = 0; y < size; ++y)
        for (std::int64_t x = 0; x < size; ++x) {
            const float fy = static_cast<float>(y) * static_cast<float>(cells_y) / static_cast<float>(size);
            const float fx = static_cast<float>(x) * static_cast<float>(cells_x) / static_cast<float>(size);
            const std::int64_t cy = static_cast<std::int64_t>(fy), cx = static_cast<std::int64_t>(fx);
            const float ty = fy - static_cast<float>(cy), tx = fx - static_cast<float>(cx);
            auto dot = [&](std::int64_t oy, std::int64_t ox) {
                const std::size_t k = static_cast<std::size_t>((cy + oy) * (cells_x + 1) + cx + ox);
                return gx[k] * (tx - static_cast<float>(ox)) + gy[k] * (ty - static_cast<float>(oy));
            };
            const float u = fade(tx), v = fade(ty);
            const float top = dot(0, 0) + u * (dot(0, 1) - dot(0, 0));
            const float bottom = dot(1, 0) + u * (dot(1, 1) - dot(1, 0));
            noise[static_cast<std::size_t>(y * size + x)] = top + v * (bottom - top);
        }
    return noise;
}

// Synthetic defects for restoration training (restoration.hpp, Corruption::SyntheticDefects),
// made from the normal images of a batch and generic noise only: a DRAEM-style region (Perlin
// noise above a level) or a thin scratch-like stroke, filled with foreign material and blended
// in with a random opacity. The foreign material is one of
//   - another image of the batch, turned, shifted and with its contrast changed or inverted;
//   - a procedural noise texture of random grain and intensity range;
//   - a near-constant intensity (a stain, a hole, a spot of paint).
// clean and out: count images (count, channels, size, size) in [-1, 1]; each image is given a
// defect with probability 1/2, else copied. Deterministic in `random`'s seed and position.
inline void paste_synthetic_defects(const float* clean, float* out, std::int64_t count, std::int64_t channels,
                                    std::int64_t size, RandomStream& random) {
    const std::int64_t plane = size * size, sample = channels * plane;
    std::copy_n(clean, count * sample, out);
    auto uniform = [&](double low, double high) {
        return low + (high - low) * random_uniform_at(random.seed(), random.take(1), 0);
    };
    auto pick = [&](std::int64_t n) { return static_cast<std::int64_t>(random.uniform_index(static_cast<std::uint64_t>(n))); };
    const std::int64_t cell_choices[] = {2, 4, 8, 16};
    for (std::int64_t i = 0; i < count; ++i) {
        if (pick(2) == 0) continue;
        // The region: a Perlin blob (3 in 4) or a stroke, covering 0.2% to 40% of the image.
        std::vector<float> mask(static_cast<std::size_t>(plane), 0.0f);
        for (int attempt = 0; attempt < 8; ++attempt) {
            std::fill(mask.begin(), mask.end(), 0.0f);
            if (pick(4) != 0) {
                const std::int64_t cy = std::min(size / 4, cell_choices[pick(4)]), cx = std::min(size / 4, cell_choices[pick(4)]);
                const std::vector<float> noise = perlin_noise(size, cy, cx, random);
                const float level = static_cast<float>(uniform(0.3, 0.55));
                for (std::int64_t p = 0; p < plane; ++p) mask[static_cast<std::size_t>(p)] = noise[static_cast<std::size_t>(p)] > level ? 1.0f : 0.0f;
            } else {  // a polyline of 2-4 segments, 1-3 pixels wide
                const int segments = 2 + static_cast<int>(pick(3));
                const double half_width = uniform(0.5, 1.5);
                double y = uniform(0, static_cast<double>(size)), x = uniform(0, static_cast<double>(size));
                double angle = uniform(0, 6.283185307179586);
                for (int k = 0; k < segments; ++k) {
                    const double length = uniform(0.1, 0.4) * static_cast<double>(size);
                    angle += uniform(-0.8, 0.8);
                    const double y2 = y + length * std::sin(angle), x2 = x + length * std::cos(angle);
                    const int steps = static_cast<int>(length * 2) + 1;
                    for (int t = 0; t <= steps; ++t) {
                        const double py = y + (y2 - y) * t / steps, px = x + (x2 - x) * t / steps;
                        for (std::int64_t qy = static_cast<std::int64_t>(py - half_width); qy <= static_cast<std::int64_t>(py + half_width); ++qy)
                            for (std::int64_t qx = static_cast<std::int64_t>(px - half_width); qx <= static_cast<std::int64_t>(px + half_width); ++qx)
                                if (qy >= 0 && qy < size && qx >= 0 && qx < size) mask[static_cast<std::size_t>(qy * size + qx)] = 1.0f;
                    }
                    y = y2;
                    x = x2;
                }
            }
            double area = 0;
            for (float m : mask) area += m;
            area /= static_cast<double>(plane);
            if (area >= 0.002 && area <= 0.4) break;
            if (attempt == 7) std::fill(mask.begin(), mask.end(), 0.0f);
        }
        // The foreign material, (channels, size, size).
        std::vector<float> foreign(static_cast<std::size_t>(sample));
        switch (pick(3)) {
            case 0: {  // another image of the batch (itself when alone), turned, shifted, contrast changed
                const std::int64_t source = count == 1 ? i : (i + 1 + pick(count - 1)) % count;
                const int turns = static_cast<int>(pick(4));
                const std::int64_t dy = pick(size), dx = pick(size);
                const double gain = (pick(4) == 0 ? -1.0 : 1.0) * uniform(0.5, 2.0), offset = uniform(-0.5, 0.5);
                std::vector<float> turned(static_cast<std::size_t>(sample));
                rotate_quarter_turns(clean + source * sample, turned.data(), 1, channels, size, turns);
                for (std::int64_t c = 0; c < channels; ++c) {
                    double mean = 0;
                    for (std::int64_t p = 0; p < plane; ++p) mean += turned[static_cast<std::size_t>(c * plane + p)];
                    mean /= static_cast<double>(plane);
                    for (std::int64_t y = 0; y < size; ++y)
                        for (std::int64_t x = 0; x < size; ++x) {
                            const float v = turned[static_cast<std::size_t>(c * plane + ((y + dy) % size) * size + (x + dx) % size)];
                            foreign[static_cast<std::size_t>(c * plane + y * size + x)] =
                                static_cast<float>(gain * (v - mean) + mean + offset);
                        }
                }
                break;
            }
            case 1: {  // procedural noise texture
                const std::int64_t cells = std::min(size / 2, std::int64_t{4} << pick(4));
                const std::vector<float> noise = perlin_noise(size, cells, cells, random);
                for (std::int64_t c = 0; c < channels; ++c) {
                    const double low = uniform(-1, 1), high = uniform(-1, 1);
                    for (std::int64_t p = 0; p < plane; ++p)
                        foreign[static_cast<std::size_t>(c * plane + p)] =
                            static_cast<float>(low + (high - low) * (noise[static_cast<std::size_t>(p)] / 1.4 + 0.5));
                }
                break;
            }
            default: {  // near-constant intensity
                const std::uint64_t at = random.take(static_cast<std::uint64_t>(sample));
                for (std::int64_t c = 0; c < channels; ++c) {
                    const double value = uniform(-1, 1);
                    for (std::int64_t p = 0; p < plane; ++p)
                        foreign[static_cast<std::size_t>(c * plane + p)] = static_cast<float>(
                            value + 0.05 * (random_uniform_at(random.seed(), at, static_cast<std::uint64_t>(c * plane + p)) - 0.5));
                }
            }
        }
        const float opacity = static_cast<float>(uniform(0.3, 1.0));
        for (std::int64_t c = 0; c < channels; ++c)
            for (std::int64_t p = 0; p < plane; ++p) {
                const std::size_t at = static_cast<std::size_t>(i * sample + c * plane + p);
                const float m = opacity * mask[static_cast<std::size_t>(p)];
                out[at] = std::clamp(out[at] + m * (foreign[static_cast<std::size_t>(c * plane + p)] - out[at]), -1.0f, 1.0f);
            }
    }
}

}  // namespace sga
