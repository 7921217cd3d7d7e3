// Leaky ReLU (ReLU at slope 0), tanh and sigmoid (CUDA). Contracts in kernels.def.
// Precise math (no --use_fast_math): tanhf/expf are within 2 ulp of the CPU's.
#include "cuda/cuda_state.hpp"
#include "cuda/device_utils.cuh"
#include "skipganomaly/engine/kernels.hpp"

namespace sga::cuda {
namespace {

__global__ void leaky_relu_forward_kernel(std::int64_t n, const float* input, float* output, float negative_slope) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const float x = input[i];
        output[i] = x > 0.0f ? x : x * negative_slope;
    }
}

__global__ void leaky_relu_backward_kernel(std::int64_t n, const float* input, const float* grad_output,
                                           float* grad_input, float negative_slope) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const float g = grad_output[i];
        grad_input[i] += input[i] > 0.0f ? g : g * negative_slope;
    }
}

__global__ void tanh_forward_kernel(std::int64_t n, const float* input, float* output) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x)
        output[i] = tanhf(input[i]);
}

__global__ void tanh_backward_kernel(std::int64_t n, const float* output, const float* grad_output,
                                     float* grad_input) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const float y = output[i];
        grad_input[i] += grad_output[i] * (1.0f - y * y);
    }
}

__global__ void sigmoid_forward_kernel(std::int64_t n, const float* input, float* output) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x)
        output[i] = 1.0f / (1.0f + expf(-input[i]));
}

__global__ void sigmoid_backward_kernel(std::int64_t n, const float* output, const float* grad_output,
                                        float* grad_input) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const float y = output[i];
        grad_input[i] += grad_output[i] * y * (1.0f - y);
    }
}

}  // namespace

void leaky_relu_forward(Context& ctx, std::int64_t n, const float* input, float* output, float negative_slope) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    leaky_relu_forward_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, input, output,
                                                                                              negative_slope);
    SGA_CUDA_CHECK_LAUNCH(state, "leaky_relu_forward_kernel");
}

void leaky_relu_backward(Context& ctx, std::int64_t n, const float* input, const float* grad_output, float* grad_input,
                         float negative_slope) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    leaky_relu_backward_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(
        n, input, grad_output, grad_input, negative_slope);
    SGA_CUDA_CHECK_LAUNCH(state, "leaky_relu_backward_kernel");
}

void tanh_forward(Context& ctx, std::int64_t n, const float* input, float* output) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    tanh_forward_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, input, output);
    SGA_CUDA_CHECK_LAUNCH(state, "tanh_forward_kernel");
}

void tanh_backward(Context& ctx, std::int64_t n, const float* output, const float* grad_output, float* grad_input) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    tanh_backward_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, output, grad_output,
                                                                                         grad_input);
    SGA_CUDA_CHECK_LAUNCH(state, "tanh_backward_kernel");
}

void sigmoid_forward(Context& ctx, std::int64_t n, const float* input, float* output) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    sigmoid_forward_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, input, output);
    SGA_CUDA_CHECK_LAUNCH(state, "sigmoid_forward_kernel");
}

void sigmoid_backward(Context& ctx, std::int64_t n, const float* output, const float* grad_output, float* grad_input) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    sigmoid_backward_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, output, grad_output,
                                                                                            grad_input);
    SGA_CUDA_CHECK_LAUNCH(state, "sigmoid_backward_kernel");
}

}  // namespace sga::cuda
