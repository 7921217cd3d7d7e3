// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). The value of element i
// depends only on (seed, offset, i), so the CPU and CUDA kernels draw identical streams and
// any slice of a stream can be generated independently.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SGA_HOST_DEVICE __host__ __device__
#else
#define SGA_HOST_DEVICE
#endif

namespace sga {

struct Philox4 {
    std::uint32_t x, y, z, w;
};

SGA_HOST_DEVICE inline Philox4 philox4x32_10(std::uint64_t counter, std::uint64_t seed) {
    Philox4 c{static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32), 0u, 0u};
    std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        const std::uint64_t p0 = static_cast<std::uint64_t>(0xD2511F53u) * c.x;
        const std::uint64_t p1 = static_cast<std::uint64_t>(0xCD9E8D57u) * c.z;
        c = Philox4{static_cast<std::uint32_t>(p1 >> 32) ^ c.y ^ k0, static_cast<std::uint32_t>(p1),
                    static_cast<std::uint32_t>(p0 >> 32) ^ c.w ^ k1, static_cast<std::uint32_t>(p0)};
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

// Uniform in (0, 1]: never 0, so log() below is finite.
SGA_HOST_DEVICE inline double philox_unit(std::uint32_t bits) {
    return (static_cast<double>(bits >> 8) + 1.0) * (1.0 / 16777216.0);
}

// Element i of the stream (seed, offset): uniform in (0, 1]. One Philox call serves four
// consecutive elements; `offset` counts Philox calls.
SGA_HOST_DEVICE inline double random_uniform_at(std::uint64_t seed, std::uint64_t offset, std::uint64_t i) {
    const Philox4 r = philox4x32_10(offset + i / 4, seed);
    const std::uint32_t lanes[4] = {r.x, r.y, r.z, r.w};
    return philox_unit(lanes[i % 4]);
}

// Element i of the stream (seed, offset): standard normal, by Box-Muller on lane pairs.
// Computed in double so CPU and GPU agree to the last float bit in practice.
SGA_HOST_DEVICE inline double random_normal_at(std::uint64_t seed, std::uint64_t offset, std::uint64_t i) {
    const Philox4 r = philox4x32_10(offset + i / 4, seed);
    const bool second_pair = (i % 4) >= 2;
    const double u1 = philox_unit(second_pair ? r.z : r.x);
    const double u2 = philox_unit(second_pair ? r.w : r.y);
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 6.283185307179586476925 * u2;
    return (i % 2 == 0) ? radius * std::cos(angle) : radius * std::sin(angle);
}

// Philox calls needed for n elements.
SGA_HOST_DEVICE inline std::uint64_t random_offset_span(std::uint64_t n) { return (n + 3) / 4; }

// A seeded stream position. Each draw takes a fresh, non-overlapping range of counters.
class RandomStream {
public:
    explicit RandomStream(std::uint64_t seed = 0, std::uint64_t offset = 0) : seed_(seed), offset_(offset) {}
    std::uint64_t seed() const { return seed_; }
    std::uint64_t offset() const { return offset_; }
    // Reserves counters for n elements; returns the offset to pass to the fill kernels.
    std::uint64_t take(std::uint64_t n) {
        const std::uint64_t start = offset_;
        offset_ += random_offset_span(n);
        return start;
    }
    // Uniform integer in [0, bound) for host-side decisions (shuffles, splits).
    std::uint64_t uniform_index(std::uint64_t bound) {
        const std::uint64_t at = take(1);
        return static_cast<std::uint64_t>(random_uniform_at(seed_, at, 0) * static_cast<double>(bound) - 1e-12) % bound;
    }

private:
    std::uint64_t seed_;
    std::uint64_t offset_;
};

}  // namespace sga
