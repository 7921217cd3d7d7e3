// Elementwise activations and their backward passes, PyTorch semantics:
// - leaky_relu: x > 0 ? x : slope * x; its gradient at x == 0 is slope (so ReLU's is 0).
// - tanh and sigmoid backward use the forward *output*: dy (1 - y^2) and dy y (1 - y).
// The naive twins are in tests/reference.hpp.
#include <cmath>
#include <cstdint>

#include "skipganomaly/engine/kernels.hpp"

namespace sga::cpu {
namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr std::int64_t parallel_threshold = std::int64_t{1} << 15;
}  // namespace

// input, output (n).
// output may be input (scoring runs activations in place, Input::Dead). A plain loop over
// possibly-aliased pointers compiles to GCC's runtime overlap check, which then takes the
// scalar, branching copy: about 10x slower on data of random sign (6% of batch-1 scoring). A
// block is loaded whole into a local array first, so the compiler may vectorise it in place.
void leaky_relu_forward(Context& /*ctx*/, std::int64_t n, const float* input, float* output, float negative_slope) {
    constexpr std::int64_t width = 16;
    const std::int64_t blocks = n / width;
#pragma omp parallel for schedule(static) if (n >= parallel_threshold)
    for (std::int64_t b = 0; b < blocks; ++b) {
        float x[width];
        for (std::int64_t i = 0; i < width; ++i) x[i] = input[b * width + i];
        for (std::int64_t i = 0; i < width; ++i) output[b * width + i] = x[i] > 0.0f ? x[i] : x[i] * negative_slope;
    }
    for (std::int64_t i = blocks * width; i < n; ++i) {
        const float x = input[i];
        output[i] = x > 0.0f ? x : x * negative_slope;
    }
}

// input, grad_output, grad_input (n); grad_input accumulates.
void leaky_relu_backward(Context& /*ctx*/, std::int64_t n, const float* input, const float* grad_output,
                         float* grad_input, float negative_slope) {
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) {
        const float dy = grad_output[i];
        grad_input[i] += input[i] > 0.0f ? dy : dy * negative_slope;
    }
}

// input, output (n).
void tanh_forward(Context& /*ctx*/, std::int64_t n, const float* input, float* output) {
#pragma omp parallel for schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) output[i] = std::tanh(input[i]);
}

// output, grad_output, grad_input (n); grad_input accumulates.
void tanh_backward(Context& /*ctx*/, std::int64_t n, const float* output, const float* grad_output,
                   float* grad_input) {
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) {
        const float y = output[i];
        grad_input[i] += grad_output[i] * (1.0f - y * y);
    }
}

// input, output (n). exp(-x) overflowing to inf for very negative x gives exactly 0.
void sigmoid_forward(Context& /*ctx*/, std::int64_t n, const float* input, float* output) {
#pragma omp parallel for schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) output[i] = 1.0f / (1.0f + std::exp(-input[i]));
}

// output, grad_output, grad_input (n); grad_input accumulates.
void sigmoid_backward(Context& /*ctx*/, std::int64_t n, const float* output, const float* grad_output,
                      float* grad_input) {
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) {
        const float y = output[i];
        grad_input[i] += grad_output[i] * (1.0f - y) * y;
    }
}

}  // namespace sga::cpu
