// Batch normalisation over (N, HW) per channel (CUDA). Contracts in kernels.def.
//
// One block per channel walks that channel's N*HW values (strided by HW between samples).
// Statistics accumulate in double through the deterministic block_sum (no atomics), so a
// run is bit-for-bit reproducible and agrees with the CPU to about float rounding. The
// variance is two-pass (sum of squared deviations from the mean), never E[x^2] - E[x]^2.
#include <cmath>
#include <string>

#include "cuda/cuda_state.hpp"
#include "cuda/device_utils.cuh"
#include "skipganomaly/engine/kernels.hpp"

namespace sga::cuda {
namespace {

// Offset of element i (0 <= i < N*HW) of channel c in an (N, C, HW) tensor.
__device__ inline std::int64_t channel_offset(std::int64_t i, std::int64_t c, std::int64_t channels,
                                              std::int64_t spatial) {
    const std::int64_t n = i / spatial;
    const std::int64_t s = i - n * spatial;
    return (n * channels + c) * spatial + s;
}

// grid: one block per channel.
__global__ void batch_norm_forward_training_kernel(std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                                                   const float* input, const float* weight, const float* bias,
                                                   float* output, float* saved_mean, float* saved_inv_std,
                                                   float* running_mean, float* running_var, float momentum,
                                                   float epsilon) {
    const std::int64_t c = blockIdx.x;
    const std::int64_t count = batch * spatial;

    double sum = 0.0;
    for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) sum += input[channel_offset(i, c, channels, spatial)];
    const double mean = block_sum(sum) / static_cast<double>(count);

    double squared_deviations = 0.0;
    for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const double deviation = input[channel_offset(i, c, channels, spatial)] - mean;
        squared_deviations += deviation * deviation;
    }
    const double squared_total = block_sum(squared_deviations);
    const double inv_std = 1.0 / sqrt(squared_total / static_cast<double>(count) + static_cast<double>(epsilon));

    if (threadIdx.x == 0) {
        const double momentum_d = momentum;
        saved_mean[c] = static_cast<float>(mean);
        saved_inv_std[c] = static_cast<float>(inv_std);
        if (running_mean)
            running_mean[c] =
                static_cast<float>((1.0 - momentum_d) * static_cast<double>(running_mean[c]) + momentum_d * mean);
        // PyTorch updates the running variance with the unbiased estimate.
        if (running_var) {
            const double unbiased_variance = squared_total / static_cast<double>(count - 1);
            running_var[c] = static_cast<float>((1.0 - momentum_d) * static_cast<double>(running_var[c]) +
                                                momentum_d * unbiased_variance);
        }
    }

    // y = (x - mean) * inv_std * weight + bias folded into y = x * scale + shift, the
    // coefficients in double, as the CPU kernel does.
    const double scale_d = (weight ? static_cast<double>(weight[c]) : 1.0) * inv_std;
    const float scale = static_cast<float>(scale_d);
    const float shift = static_cast<float>((bias ? static_cast<double>(bias[c]) : 0.0) - mean * scale_d);
    for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const std::int64_t at = channel_offset(i, c, channels, spatial);
        output[at] = input[at] * scale + shift;
    }
}

__global__ void batch_norm_forward_inference_kernel(std::int64_t total, std::int64_t channels, std::int64_t spatial,
                                                    const float* input, const float* weight, const float* bias,
                                                    const float* running_mean, const float* running_var,
                                                    float epsilon, float* output) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const std::int64_t c = (i / spatial) % channels;
        // Coefficients in double, as the CPU kernel computes them.
        const double inv_std = 1.0 / sqrt(static_cast<double>(running_var[c]) + static_cast<double>(epsilon));
        const double scale_d = (weight ? static_cast<double>(weight[c]) : 1.0) * inv_std;
        const float scale = static_cast<float>(scale_d);
        const float shift = static_cast<float>((bias ? static_cast<double>(bias[c]) : 0.0) -
                                               static_cast<double>(running_mean[c]) * scale_d);
        output[i] = input[i] * scale + shift;
    }
}

// PyTorch's batch_norm_backward (training mode), per channel c with M = N*HW values and
// xhat = (x - mean) * inv_std:
//   sum_dy = sum(dy), sum_dy_centered = sum(dy * (x - mean))
//   grad_bias += sum_dy,   grad_weight += sum_dy_centered * inv_std
//   grad_input += weight * inv_std * (dy - sum_dy / M - xhat * sum_dy_centered * inv_std / M)
// written as grad_input += k dy + a (x - mean) + b with k, a, b in double (as the CPU does).
__global__ void batch_norm_backward_kernel(std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                                           const float* input, const float* grad_output, const float* weight,
                                           const float* saved_mean, const float* saved_inv_std, float* grad_input,
                                           float* grad_weight, float* grad_bias) {
    const std::int64_t c = blockIdx.x;
    const std::int64_t count = batch * spatial;
    const float mean_f = saved_mean[c];
    const double mean = mean_f;
    const double inv_std = saved_inv_std[c];

    double sum_dy = 0.0;
    double sum_dy_centered = 0.0;
    for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const std::int64_t at = channel_offset(i, c, channels, spatial);
        const double dy = grad_output[at];
        sum_dy += dy;
        sum_dy_centered += dy * (static_cast<double>(input[at]) - mean);
    }
    sum_dy = block_sum(sum_dy);
    sum_dy_centered = block_sum(sum_dy_centered);

    if (threadIdx.x == 0) {
        if (grad_bias) grad_bias[c] += static_cast<float>(sum_dy);
        if (grad_weight) grad_weight[c] += static_cast<float>(sum_dy_centered * inv_std);
    }
    if (!grad_input) return;  // uniform across the block, and no barrier follows

    const double k = (weight ? static_cast<double>(weight[c]) : 1.0) * inv_std;
    const float k_f = static_cast<float>(k);
    const float a_f = static_cast<float>(-k * inv_std * inv_std * sum_dy_centered / static_cast<double>(count));
    const float b_f = static_cast<float>(-k * sum_dy / static_cast<double>(count));
    for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const std::int64_t at = channel_offset(i, c, channels, spatial);
        grad_input[at] += k_f * grad_output[at] + a_f * (input[at] - mean_f) + b_f;
    }
}

}  // namespace

void batch_norm_forward_training(Context& ctx, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                                 const float* input, const float* weight, const float* bias, float* output,
                                 float* saved_mean, float* saved_inv_std, float* running_mean, float* running_var,
                                 float momentum, float epsilon) {
    // Same condition as PyTorch ("expected more than 1 value per channel when training"):
    // the unbiased variance of one value is undefined.
    SGA_CHECK_ARGUMENT(batch * spatial > 1, "batch norm training needs more than one value per channel, got " +
                                                std::to_string(batch * spatial));
    if (channels <= 0) return;
    CudaState& state = state_of(ctx);
    batch_norm_forward_training_kernel<<<static_cast<unsigned>(channels), reduction_threads, 0, state.stream>>>(
        batch, channels, spatial, input, weight, bias, output, saved_mean, saved_inv_std, running_mean, running_var,
        momentum, epsilon);
    SGA_CUDA_CHECK_LAUNCH(state, "batch_norm_forward_training_kernel");
}

void batch_norm_forward_inference(Context& ctx, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                                  const float* input, const float* weight, const float* bias,
                                  const float* running_mean, const float* running_var, float epsilon, float* output) {
    const std::int64_t total = batch * channels * spatial;
    if (total <= 0) return;
    CudaState& state = state_of(ctx);
    batch_norm_forward_inference_kernel<<<elementwise_blocks(total), elementwise_threads, 0, state.stream>>>(
        total, channels, spatial, input, weight, bias, running_mean, running_var, epsilon, output);
    SGA_CUDA_CHECK_LAUNCH(state, "batch_norm_forward_inference_kernel");
}

void batch_norm_backward(Context& ctx, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                         const float* input, const float* grad_output, const float* weight, const float* saved_mean,
                         const float* saved_inv_std, float* grad_input, float* grad_weight, float* grad_bias) {
    if (channels <= 0 || batch * spatial <= 0) return;
    if (!grad_input && !grad_weight && !grad_bias) return;
    CudaState& state = state_of(ctx);
    batch_norm_backward_kernel<<<static_cast<unsigned>(channels), reduction_threads, 0, state.stream>>>(
        batch, channels, spatial, input, grad_output, weight, saved_mean, saved_inv_std, grad_input, grad_weight,
        grad_bias);
    SGA_CUDA_CHECK_LAUNCH(state, "batch_norm_backward_kernel");
}

}  // namespace sga::cuda
