// Batch normalisation over (N, HW) per channel, PyTorch BatchNorm2d semantics.
//
// One thread owns one channel, and every per-channel sum runs in a fixed order in double,
// so results do not depend on the thread count. The naive twin is
// sga::reference::batch_norm_* in tests/reference.hpp.
#include <cmath>
#include <cstdint>

#include "skipganomaly/engine/kernels.hpp"

namespace sga::cpu {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr std::int64_t parallel_threshold = std::int64_t{1} << 15;

// Sum over the `batch` rows of one channel, each `spatial` contiguous floats, `stride`
// apart, of term(x, ...) in double. Four independent accumulators in a fixed order keep it
// deterministic while letting the adds pipeline.
template <class Term>
double channel_sum(std::int64_t batch, std::int64_t spatial, std::int64_t stride, Term term) {
    double accumulators[4] = {0.0, 0.0, 0.0, 0.0};
    for (std::int64_t n = 0; n < batch; ++n) {
        const std::int64_t row = n * stride;
        std::int64_t s = 0;
        for (; s + 4 <= spatial; s += 4) {
            accumulators[0] += term(row + s);
            accumulators[1] += term(row + s + 1);
            accumulators[2] += term(row + s + 2);
            accumulators[3] += term(row + s + 3);
        }
        for (; s < spatial; ++s) accumulators[0] += term(row + s);
    }
    return (accumulators[0] + accumulators[1]) + (accumulators[2] + accumulators[3]);
}

}  // namespace

// input, output (N, C, HW); weight, bias, saved_mean, saved_inv_std, running_* (C).
void batch_norm_forward_training(Context& /*ctx*/, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                                 const float* input, const float* weight, const float* bias, float* output,
                                 float* saved_mean, float* saved_inv_std, float* running_mean, float* running_var,
                                 float momentum, float epsilon) {
    const std::int64_t count = batch * spatial;
    // PyTorch refuses this too: the unbiased variance would divide by zero.
    SGA_CHECK_ARGUMENT(count > 1, "batch_norm_forward_training: expected more than 1 value per channel");
    const std::int64_t stride = channels * spatial;
    const double momentum_d = momentum;

#pragma omp parallel for schedule(static) if (batch * stride >= parallel_threshold)
    for (std::int64_t c = 0; c < channels; ++c) {
        const float* x = input + c * spatial;
        float* y = output + c * spatial;
        const double mean =
            channel_sum(batch, spatial, stride, [x](std::int64_t i) { return static_cast<double>(x[i]); }) /
            static_cast<double>(count);
        // Two passes: the sum of squared deviations does not cancel like E[x^2] - E[x]^2.
        const double squared_deviations = channel_sum(batch, spatial, stride, [x, mean](std::int64_t i) {
            const double d = static_cast<double>(x[i]) - mean;
            return d * d;
        });
        const double variance = squared_deviations / static_cast<double>(count);
        const double inv_std = 1.0 / std::sqrt(variance + static_cast<double>(epsilon));
        saved_mean[c] = static_cast<float>(mean);
        saved_inv_std[c] = static_cast<float>(inv_std);
        if (running_mean)
            running_mean[c] =
                static_cast<float>((1.0 - momentum_d) * static_cast<double>(running_mean[c]) + momentum_d * mean);
        if (running_var) {
            const double unbiased = squared_deviations / static_cast<double>(count - 1);
            running_var[c] =
                static_cast<float>((1.0 - momentum_d) * static_cast<double>(running_var[c]) + momentum_d * unbiased);
        }
        // y = (x - mean) * inv_std * weight + bias, folded into one multiply-add per element.
        const double scale_d = static_cast<double>(weight[c]) * inv_std;
        const float scale = static_cast<float>(scale_d);
        const float shift = static_cast<float>(static_cast<double>(bias[c]) - mean * scale_d);
        for (std::int64_t n = 0; n < batch; ++n) {
            const float* xr = x + n * stride;
            float* yr = y + n * stride;
            for (std::int64_t s = 0; s < spatial; ++s) yr[s] = xr[s] * scale + shift;
        }
    }
}

// input, output (N, C, HW); weight, bias, running_* (C).
void batch_norm_forward_inference(Context& /*ctx*/, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                                  const float* input, const float* weight, const float* bias,
                                  const float* running_mean, const float* running_var, float epsilon,
                                  float* output) {
    const std::int64_t stride = channels * spatial;
#pragma omp parallel for schedule(static) collapse(2) if (batch * stride >= parallel_threshold)
    for (std::int64_t n = 0; n < batch; ++n) {
        for (std::int64_t c = 0; c < channels; ++c) {
            const double inv_std = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + static_cast<double>(epsilon));
            const double scale_d = static_cast<double>(weight[c]) * inv_std;
            const float scale = static_cast<float>(scale_d);
            const float shift =
                static_cast<float>(static_cast<double>(bias[c]) - static_cast<double>(running_mean[c]) * scale_d);
            const float* x = input + n * stride + c * spatial;
            float* y = output + n * stride + c * spatial;
            for (std::int64_t s = 0; s < spatial; ++s) y[s] = x[s] * scale + shift;
        }
    }
}

// input, grad_output, grad_input (N, C, HW); weight, saved_*, grad_weight, grad_bias (C).
// With xhat = (x - mean) * inv_std and m = N * HW:
//   grad_bias   += sum dy
//   grad_weight += sum dy * xhat
//   grad_input  += weight * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))
void batch_norm_backward(Context& /*ctx*/, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                         const float* input, const float* grad_output, const float* weight, const float* saved_mean,
                         const float* saved_inv_std, float* grad_input, float* grad_weight, float* grad_bias) {
    const std::int64_t count = batch * spatial;
    const std::int64_t stride = channels * spatial;
#pragma omp parallel for schedule(static) if (batch * stride >= parallel_threshold)
    for (std::int64_t c = 0; c < channels; ++c) {
        const float* x = input + c * spatial;
        const float* dy = grad_output + c * spatial;
        const float mean_f = saved_mean[c];
        const double mean = mean_f;
        const double inv_std = saved_inv_std[c];
        const double sum_dy = channel_sum(batch, spatial, stride, [dy](std::int64_t i) { return static_cast<double>(dy[i]); });
        const double sum_dy_centered = channel_sum(batch, spatial, stride, [x, dy, mean](std::int64_t i) {
            return static_cast<double>(dy[i]) * (static_cast<double>(x[i]) - mean);
        });
        if (grad_bias) grad_bias[c] += static_cast<float>(sum_dy);
        if (grad_weight) grad_weight[c] += static_cast<float>(sum_dy_centered * inv_std);
        if (grad_input && count > 0) {
            // dx = k dy + a (x - mean) + b, coefficients in double, the per-element work in float.
            const double k = static_cast<double>(weight[c]) * inv_std;
            const float k_f = static_cast<float>(k);
            const float a_f = static_cast<float>(-k * inv_std * inv_std * sum_dy_centered / static_cast<double>(count));
            const float b_f = static_cast<float>(-k * sum_dy / static_cast<double>(count));
            float* dx = grad_input + c * spatial;
            for (std::int64_t n = 0; n < batch; ++n) {
                const std::int64_t row = n * stride;
                for (std::int64_t s = 0; s < spatial; ++s)
                    dx[row + s] += k_f * dy[row + s] + a_f * (x[row + s] - mean_f) + b_f;
            }
        }
    }
}

}  // namespace sga::cpu
