// Channel concatenation: output (N, Ca + Cb, HW) = [a (N, Ca, HW), b (N, Cb, HW)].
// Each sample's output is two contiguous runs, so the forward is two copies per sample.
#include <cstdint>
#include <cstring>

#include "skipganomaly/engine/kernels.hpp"

namespace sga::cpu {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr std::int64_t parallel_threshold = std::int64_t{1} << 15;

// destination[n * destination_stride + r] += source[n * source_stride + r] for r < run.
void accumulate_runs(std::int64_t batch, std::int64_t run, const float* source, std::int64_t source_stride,
                     float* destination, std::int64_t destination_stride) {
#pragma omp parallel for schedule(static) collapse(2) if (batch * run >= parallel_threshold)
    for (std::int64_t n = 0; n < batch; ++n)
        for (std::int64_t r = 0; r < run; ++r) destination[n * destination_stride + r] += source[n * source_stride + r];
}

}  // namespace

// a (N, Ca, HW), b (N, Cb, HW), output (N, Ca + Cb, HW).
void concat_channels_forward(Context& /*ctx*/, std::int64_t batch, std::int64_t channels_a, std::int64_t channels_b,
                             std::int64_t spatial, const float* a, const float* b, float* output) {
    const std::int64_t run_a = channels_a * spatial;
    const std::int64_t run_b = channels_b * spatial;
    const std::int64_t stride = run_a + run_b;
#pragma omp parallel for schedule(static) if (batch * stride >= parallel_threshold)
    for (std::int64_t n = 0; n < batch; ++n) {
        // memcpy with a null pointer is undefined even for zero bytes.
        if (run_a > 0)
            std::memcpy(output + n * stride, a + n * run_a, static_cast<std::size_t>(run_a) * sizeof(float));
        if (run_b > 0)
            std::memcpy(output + n * stride + run_a, b + n * run_b, static_cast<std::size_t>(run_b) * sizeof(float));
    }
}

// grad_output (N, Ca + Cb, HW); grad_a (N, Ca, HW) and grad_b (N, Cb, HW) accumulate; either may be null.
void concat_channels_backward(Context& /*ctx*/, std::int64_t batch, std::int64_t channels_a, std::int64_t channels_b,
                              std::int64_t spatial, const float* grad_output, float* grad_a, float* grad_b) {
    const std::int64_t run_a = channels_a * spatial;
    const std::int64_t run_b = channels_b * spatial;
    const std::int64_t stride = run_a + run_b;
    if (grad_a) accumulate_runs(batch, run_a, grad_output, stride, grad_a, run_a);
    if (grad_b) accumulate_runs(batch, run_b, grad_output + run_a, stride, grad_b, run_b);
}

}  // namespace sga::cpu
