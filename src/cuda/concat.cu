// Channel concatenation (CUDA). Contracts in kernels.def.
#include "cuda/cuda_state.hpp"
#include "cuda/device_utils.cuh"
#include "skipganomaly/engine/kernels.hpp"

namespace sga::cuda {
namespace {

// Indexing, per sample n: output (N, Ca + Cb, HW) holds a's Ca*HW floats of sample n, then
// b's Cb*HW floats. With r the offset inside sample n of the output, r < Ca*HW comes from
// a[n*Ca*HW + r], otherwise from b[n*Cb*HW + (r - Ca*HW)].
__global__ void concat_channels_forward_kernel(std::int64_t total, std::int64_t a_sample, std::int64_t b_sample,
                                               const float* a, const float* b, float* output) {
    const std::int64_t sample = a_sample + b_sample;
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const std::int64_t n = i / sample;
        const std::int64_t r = i - n * sample;
        output[i] = r < a_sample ? a[n * a_sample + r] : b[n * b_sample + (r - a_sample)];
    }
}

// Each element of grad_a / grad_b receives exactly one output element: no races.
__global__ void concat_channels_backward_kernel(std::int64_t total, std::int64_t a_sample, std::int64_t b_sample,
                                                const float* grad_output, float* grad_a, float* grad_b) {
    const std::int64_t sample = a_sample + b_sample;
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const std::int64_t n = i / sample;
        const std::int64_t r = i - n * sample;
        if (r < a_sample) {
            if (grad_a) grad_a[n * a_sample + r] += grad_output[i];
        } else if (grad_b) {
            grad_b[n * b_sample + (r - a_sample)] += grad_output[i];
        }
    }
}

}  // namespace

void concat_channels_forward(Context& ctx, std::int64_t batch, std::int64_t channels_a, std::int64_t channels_b,
                             std::int64_t spatial, const float* a, const float* b, float* output) {
    const std::int64_t total = batch * (channels_a + channels_b) * spatial;
    if (total <= 0) return;
    CudaState& state = state_of(ctx);
    concat_channels_forward_kernel<<<elementwise_blocks(total), elementwise_threads, 0, state.stream>>>(
        total, channels_a * spatial, channels_b * spatial, a, b, output);
    SGA_CUDA_CHECK_LAUNCH(state, "concat_channels_forward_kernel");
}

void concat_channels_backward(Context& ctx, std::int64_t batch, std::int64_t channels_a, std::int64_t channels_b,
                              std::int64_t spatial, const float* grad_output, float* grad_a, float* grad_b) {
    const std::int64_t total = batch * (channels_a + channels_b) * spatial;
    if (total <= 0 || (!grad_a && !grad_b)) return;
    CudaState& state = state_of(ctx);
    concat_channels_backward_kernel<<<elementwise_blocks(total), elementwise_threads, 0, state.stream>>>(
        total, channels_a * spatial, channels_b * spatial, grad_output, grad_a, grad_b);
    SGA_CUDA_CHECK_LAUNCH(state, "concat_channels_backward_kernel");
}

}  // namespace sga::cuda
