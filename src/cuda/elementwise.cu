// Fills, random fills and elementwise arithmetic (CUDA). Contracts in kernels.def.
#include "cuda/cuda_state.hpp"
#include "cuda/device_utils.cuh"
#include "skipganomaly/engine/kernels.hpp"
#include "skipganomaly/random.hpp"

namespace sga::cuda {
namespace {

__global__ void fill_kernel(std::int64_t n, float value, float* output) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x)
        output[i] = value;
}

// Same expression as the CPU kernel: one explicit double fma, rounded once to float, so
// both backends produce the same floats (up to the last bit of the device's log/sin/cos,
// which the rounding to float almost always hides).
__global__ void fill_normal_kernel(std::int64_t n, double mean, double stddev, std::uint64_t seed,
                                   std::uint64_t offset, float* output) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x)
        output[i] = static_cast<float>(fma(stddev, random_normal_at(seed, offset, static_cast<std::uint64_t>(i)), mean));
}

__global__ void fill_uniform_kernel(std::int64_t n, double low, double width, std::uint64_t seed,
                                    std::uint64_t offset, float* output) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x)
        output[i] = static_cast<float>(fma(width, random_uniform_at(seed, offset, static_cast<std::uint64_t>(i)), low));
}

// output may alias a or b: each element is read before it is written, by the same thread.
__global__ void add_scaled_kernel(std::int64_t n, float alpha, const float* a, float beta, const float* b,
                                  float* output) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x)
        output[i] = alpha * a[i] + beta * b[i];
}

__global__ void accumulate_broadcast_kernel(std::int64_t n, float scale, const float* input, float* output) {
    const float value = scale * input[0];
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x)
        output[i] += value;
}

__global__ void accumulate_scaled_kernel(std::int64_t n, float alpha, const float* input, float* output) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x)
        output[i] += alpha * input[i];
}

}  // namespace

cudaError_t check_kernel_image() {
    cudaFuncAttributes attributes{};
    return cudaFuncGetAttributes(&attributes, fill_kernel);
}

void fill(Context& ctx, std::int64_t n, float value, float* output) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    fill_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, value, output);
    SGA_CUDA_CHECK_LAUNCH(state, "fill_kernel");
}

void fill_normal(Context& ctx, std::int64_t n, float mean, float stddev, std::uint64_t seed, std::uint64_t offset,
                 float* output) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    fill_normal_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(
        n, static_cast<double>(mean), static_cast<double>(stddev), seed, offset, output);
    SGA_CUDA_CHECK_LAUNCH(state, "fill_normal_kernel");
}

void fill_uniform(Context& ctx, std::int64_t n, float low, float high, std::uint64_t seed, std::uint64_t offset,
                  float* output) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    fill_uniform_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(
        n, static_cast<double>(low), static_cast<double>(high) - static_cast<double>(low), seed, offset, output);
    SGA_CUDA_CHECK_LAUNCH(state, "fill_uniform_kernel");
}

void add_scaled(Context& ctx, std::int64_t n, float alpha, const float* a, float beta, const float* b, float* output) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    add_scaled_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, alpha, a, beta, b, output);
    SGA_CUDA_CHECK_LAUNCH(state, "add_scaled_kernel");
}

void accumulate_broadcast(Context& ctx, std::int64_t n, float scale, const float* input, float* output) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    accumulate_broadcast_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, scale, input,
                                                                                                output);
    SGA_CUDA_CHECK_LAUNCH(state, "accumulate_broadcast_kernel");
}

void accumulate_scaled(Context& ctx, std::int64_t n, float alpha, const float* input, float* output) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    accumulate_scaled_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, alpha, input, output);
    SGA_CUDA_CHECK_LAUNCH(state, "accumulate_scaled_kernel");
}

}  // namespace sga::cuda
