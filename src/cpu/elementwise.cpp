// Fills and elementwise arithmetic.
//
// The random fills evaluate random_normal_at / random_uniform_at from random.hpp per
// element, the same functions the CUDA kernels call, and do the affine map as one explicit
// double fma before one rounding to float. Spelling out the fma (rather than a * b + c)
// keeps the result independent of whether a compiler contracts (nvcc and GCC on x86 with
// FMA do by default, GCC without FMA cannot), so both backends produce identical numbers.
#include <cmath>
#include <cstdint>

#include "skipganomaly/engine/kernels.hpp"
#include "skipganomaly/random.hpp"

namespace sga::cpu {
namespace {
// Below this many elements a parallel region costs more than it saves (the random fills
// cost ~100x more per element, so they go parallel sooner).
constexpr std::int64_t parallel_threshold = std::int64_t{1} << 15;
constexpr std::int64_t random_parallel_threshold = std::int64_t{1} << 10;
}  // namespace

// output (n).
void fill(Context& /*ctx*/, std::int64_t n, float value, float* output) {
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) output[i] = value;
}

// output (n): output[i] = float(fma(stddev, normal(seed, offset, i), mean)) in double.
void fill_normal(Context& /*ctx*/, std::int64_t n, float mean, float stddev, std::uint64_t seed,
                 std::uint64_t offset, float* output) {
    const double mean_d = mean, stddev_d = stddev;
#pragma omp parallel for schedule(static) if (n >= random_parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i)
        output[i] = static_cast<float>(
            std::fma(stddev_d, random_normal_at(seed, offset, static_cast<std::uint64_t>(i)), mean_d));
}

// output (n): output[i] = float(fma(high - low, uniform(seed, offset, i), low)) in double.
void fill_uniform(Context& /*ctx*/, std::int64_t n, float low, float high, std::uint64_t seed,
                  std::uint64_t offset, float* output) {
    const double low_d = low, width = static_cast<double>(high) - static_cast<double>(low);
#pragma omp parallel for schedule(static) if (n >= random_parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i)
        output[i] =
            static_cast<float>(std::fma(width, random_uniform_at(seed, offset, static_cast<std::uint64_t>(i)), low_d));
}

// a, b, output (n); output may alias a or b (each element is read before it is written).
void add_scaled(Context& /*ctx*/, std::int64_t n, float alpha, const float* a, float beta, const float* b,
                float* output) {
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) output[i] = alpha * a[i] + beta * b[i];
}

// input (1), output (n): output += scale * input[0].
void accumulate_broadcast(Context& /*ctx*/, std::int64_t n, float scale, const float* input, float* output) {
    if (n <= 0) return;
    const float value = scale * input[0];
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) output[i] += value;
}

// input, output (n): output += alpha * input.
void accumulate_scaled(Context& /*ctx*/, std::int64_t n, float alpha, const float* input, float* output) {
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) output[i] += alpha * input[i];
}

}  // namespace sga::cpu
