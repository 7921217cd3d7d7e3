// Per-channel bias of the convolutions (CUDA): add_channel_bias and its backward. The
// convolutions themselves are in conv2d.cpp (cuDNN).
#include "cuda/cuda_state.hpp"
#include "cuda/device_utils.cuh"
#include "skipganomaly/engine/kernels.hpp"

namespace sga::cuda {
namespace {

__global__ void add_channel_bias_kernel(std::int64_t total, std::int64_t channels, std::int64_t spatial,
                                        const float* bias, float* output) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
         i += std::int64_t{blockDim.x} * gridDim.x)
        output[i] += bias[(i / spatial) % channels];
}

// grid: one block per channel; deterministic block_sum in double, no atomics.
__global__ void add_channel_bias_backward_kernel(std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                                                 const float* grad_output, float* grad_bias) {
    const std::int64_t c = blockIdx.x;
    const std::int64_t count = batch * spatial;
    double sum = 0.0;
    for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const std::int64_t n = i / spatial;
        const std::int64_t s = i - n * spatial;
        sum += grad_output[(n * channels + c) * spatial + s];
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) grad_bias[c] += static_cast<float>(sum);
}

}  // namespace

void add_channel_bias(Context& ctx, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                      const float* bias, float* output) {
    const std::int64_t total = batch * channels * spatial;
    if (total <= 0) return;
    CudaState& state = state_of(ctx);
    add_channel_bias_kernel<<<elementwise_blocks(total), elementwise_threads, 0, state.stream>>>(total, channels,
                                                                                                spatial, bias, output);
    SGA_CUDA_CHECK_LAUNCH(state, "add_channel_bias_kernel");
}

void add_channel_bias_backward(Context& ctx, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                               const float* grad_output, float* grad_bias) {
    if (channels <= 0 || batch * spatial <= 0) return;
    CudaState& state = state_of(ctx);
    add_channel_bias_backward_kernel<<<static_cast<unsigned>(channels), reduction_threads, 0, state.stream>>>(
        batch, channels, spatial, grad_output, grad_bias);
    SGA_CUDA_CHECK_LAUNCH(state, "add_channel_bias_backward_kernel");
}

}  // namespace sga::cuda
