// Geometric and colour transforms of preprocessed images (count, channels, size, size), shared
// by restoration training (restoration.hpp) and synthetic anomalies (synthetic_anomalies.hpp).
#pragma once

#include <cstdint>

namespace sga {

// Rotates each (channels, size, size) image of `in` by quarter_turns x 90 degrees
// (counter-clockwise) into `out`; in and out must not overlap.
inline void rotate_quarter_turns(const float* in, float* out, std::int64_t count, std::int64_t channels, std::int64_t size,
                                 int quarter_turns) {
    const std::int64_t planes = count * channels, plane = size * size, last = size - 1;
    for (std::int64_t p = 0; p < planes; ++p) {
        const float* src = in + p * plane;
        float* dst = out + p * plane;
        for (std::int64_t y = 0; y < size; ++y)
            for (std::int64_t x = 0; x < size; ++x) {
                float v = 0;
                switch (quarter_turns & 3) {
                    case 0: v = src[y * size + x]; break;
                    case 1: v = src[x * size + (last - y)]; break;
                    case 2: v = src[(last - y) * size + (last - x)]; break;
                    default: v = src[(last - x) * size + y]; break;
                }
                dst[y * size + x] = v;
            }
    }
}

// Replaces each RGB image (3, size, size) of `images` by its luminance (ITU-R 601-2, as
// pre-processing greys images) in all three channels, in place.
inline void gray_in_place(float* images, std::int64_t count, std::int64_t size) {
    const std::int64_t plane = size * size;
    for (std::int64_t i = 0; i < count; ++i) {
        float* r = images + i * 3 * plane;
        float* g = r + plane;
        float* b = g + plane;
        for (std::int64_t p = 0; p < plane; ++p) r[p] = g[p] = b[p] = 0.299f * r[p] + 0.587f * g[p] + 0.114f * b[p];
    }
}

}  // namespace sga
