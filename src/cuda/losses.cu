// Mean, BCE, L1 and MSE losses and the per-sample MSE score (CUDA). Contracts in
// kernels.def.
//
// Reductions to a scalar run in two deterministic stages, no float atomics:
//   1. partial_sums_kernel: `blocks` blocks each sum a grid-strided share of the terms (in
//      double) and write one partial to a scratch array from ctx.arena();
//   2. finish_mean_kernel: one block sums the partials in a fixed order and writes
//      sum / n as the float result.
// `blocks` depends only on n, so the same inputs give the same bits on every run.
#include <cmath>

#include "cuda/cuda_state.hpp"
#include "cuda/device_utils.cuh"
#include "skipganomaly/engine/kernels.hpp"

namespace sga::cuda {
namespace {

constexpr int loss_threads = 256;
constexpr std::int64_t max_loss_blocks = 1024;
constexpr std::int64_t terms_per_thread = 8;

unsigned loss_blocks(std::int64_t n) {
    const std::int64_t per_block = loss_threads * terms_per_thread;
    return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(max_loss_blocks, (n + per_block - 1) / per_block)));
}

// The terms whose mean each loss is.
struct MeanTerm {
    const float* input;
    __device__ double operator()(std::int64_t i) const { return input[i]; }
};

// std::max(value, floor) as the CPU kernels spell it: a NaN value stays NaN (fmax would
// replace it by the floor and hide a NaN prediction).
__device__ inline double at_least(double value, double floor) { return value < floor ? floor : value; }

// Terms in double, like the CPU kernels, so the two agree to the final float rounding.
// BCE: -(t log p + (1 - t) log(1 - p)), each log clamped at -100 as PyTorch does.
struct BceTerm {
    const float* prediction;
    const float* target;
    __device__ double operator()(std::int64_t i) const {
        const double p = prediction[i];
        const double t = target[i];
        return -(t * at_least(log(p), -100.0) + (1.0 - t) * at_least(log(1.0 - p), -100.0));
    }
};

struct L1Term {
    const float* a;
    const float* b;
    __device__ double operator()(std::int64_t i) const {
        return fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    }
};

struct MseTerm {
    const float* a;
    const float* b;
    __device__ double operator()(std::int64_t i) const {
        const double difference = static_cast<double>(a[i]) - static_cast<double>(b[i]);
        return difference * difference;
    }
};

template <class Term>
__global__ void partial_sums_kernel(std::int64_t n, Term term, double* partials) {
    double sum = 0.0;
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x)
        sum += term(i);
    sum = block_sum(sum);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

__global__ void finish_mean_kernel(unsigned partial_count, const double* partials, std::int64_t n, float* result) {
    double sum = 0.0;
    for (unsigned i = threadIdx.x; i < partial_count; i += blockDim.x) sum += partials[i];
    sum = block_sum(sum);
    // n == 0 gives 0 / 0 = NaN, like torch.mean of an empty tensor.
    if (threadIdx.x == 0) result[0] = static_cast<float>(sum / static_cast<double>(n));
}

template <class Term>
void reduce_mean(Context& ctx, std::int64_t n, Term term, float* result, const char* name) {
    CudaState& state = state_of(ctx);
    const unsigned blocks = loss_blocks(n);
    // Two floats per double; arena allocations are 64-byte aligned.
    double* partials = reinterpret_cast<double*>(ctx.arena().allocate_floats(2 * std::size_t{blocks}));
    partial_sums_kernel<<<blocks, loss_threads, 0, state.stream>>>(n, term, partials);
    SGA_CUDA_CHECK_LAUNCH(state, name);
    finish_mean_kernel<<<1, loss_threads, 0, state.stream>>>(blocks, partials, n, result);
    SGA_CUDA_CHECK_LAUNCH(state, "finish_mean_kernel");
}

// grad_prediction += grad_loss / n * (p - t) / max(p (1 - p), 1e-12), PyTorch's clamp of the
// denominator; in double, like the CPU kernel.
__global__ void bce_loss_backward_kernel(std::int64_t n, const float* prediction, const float* target,
                                         const float* grad_loss, float* grad_prediction) {
    const double scale = static_cast<double>(grad_loss[0]) / static_cast<double>(n);
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const double p = prediction[i];
        const double t = target[i];
        grad_prediction[i] += static_cast<float>(scale * (p - t) / at_least(p * (1.0 - p), 1e-12));
    }
}

// grad_a += sign(a - b) grad_loss / n (0 where a == b), grad_b -= the same.
__global__ void l1_loss_backward_kernel(std::int64_t n, const float* a, const float* b, const float* grad_loss,
                                        float* grad_a, float* grad_b) {
    const float scale = static_cast<float>(static_cast<double>(grad_loss[0]) / static_cast<double>(n));
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const float difference = a[i] - b[i];
        const float g = difference > 0.0f ? scale : (difference < 0.0f ? -scale : 0.0f);
        if (grad_a) grad_a[i] += g;
        if (grad_b) grad_b[i] -= g;
    }
}

// grad_a += 2 (a - b) grad_loss / n, grad_b -= the same.
__global__ void mse_loss_backward_kernel(std::int64_t n, const float* a, const float* b, const float* grad_loss,
                                         float* grad_a, float* grad_b) {
    const float scale = static_cast<float>(2.0 * static_cast<double>(grad_loss[0]) / static_cast<double>(n));
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const float g = scale * (a[i] - b[i]);
        if (grad_a) grad_a[i] += g;
        if (grad_b) grad_b[i] -= g;
    }
}

// grid: one block per sample; result[s] = mean over the sample's D values of (a - b)^2.
__global__ void per_sample_mse_kernel(std::int64_t sample_size, const float* a, const float* b, float* result) {
    const std::int64_t first = blockIdx.x * sample_size;
    double sum = 0.0;
    for (std::int64_t i = threadIdx.x; i < sample_size; i += blockDim.x) {
        const double difference = static_cast<double>(a[first + i]) - static_cast<double>(b[first + i]);
        sum += difference * difference;
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) result[blockIdx.x] = static_cast<float>(sum / static_cast<double>(sample_size));
}

}  // namespace

void mean_forward(Context& ctx, std::int64_t n, const float* input, float* result) {
    reduce_mean(ctx, n, MeanTerm{input}, result, "partial_sums_kernel<MeanTerm>");
}

void bce_loss_forward(Context& ctx, std::int64_t n, const float* prediction, const float* target, float* loss) {
    reduce_mean(ctx, n, BceTerm{prediction, target}, loss, "partial_sums_kernel<BceTerm>");
}

void bce_loss_backward(Context& ctx, std::int64_t n, const float* prediction, const float* target,
                       const float* grad_loss, float* grad_prediction) {
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    bce_loss_backward_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, prediction, target,
                                                                                             grad_loss, grad_prediction);
    SGA_CUDA_CHECK_LAUNCH(state, "bce_loss_backward_kernel");
}

void l1_loss_forward(Context& ctx, std::int64_t n, const float* a, const float* b, float* loss) {
    reduce_mean(ctx, n, L1Term{a, b}, loss, "partial_sums_kernel<L1Term>");
}

void l1_loss_backward(Context& ctx, std::int64_t n, const float* a, const float* b, const float* grad_loss,
                      float* grad_a, float* grad_b) {
    if (n <= 0 || (!grad_a && !grad_b)) return;
    CudaState& state = state_of(ctx);
    l1_loss_backward_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, a, b, grad_loss, grad_a,
                                                                                            grad_b);
    SGA_CUDA_CHECK_LAUNCH(state, "l1_loss_backward_kernel");
}

void mse_loss_forward(Context& ctx, std::int64_t n, const float* a, const float* b, float* loss) {
    reduce_mean(ctx, n, MseTerm{a, b}, loss, "partial_sums_kernel<MseTerm>");
}

void mse_loss_backward(Context& ctx, std::int64_t n, const float* a, const float* b, const float* grad_loss,
                       float* grad_a, float* grad_b) {
    if (n <= 0 || (!grad_a && !grad_b)) return;
    CudaState& state = state_of(ctx);
    mse_loss_backward_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(n, a, b, grad_loss,
                                                                                             grad_a, grad_b);
    SGA_CUDA_CHECK_LAUNCH(state, "mse_loss_backward_kernel");
}

void per_sample_mse(Context& ctx, std::int64_t batch, std::int64_t sample_size, const float* a, const float* b,
                    float* result) {
    if (batch <= 0) return;
    CudaState& state = state_of(ctx);
    per_sample_mse_kernel<<<static_cast<unsigned>(batch), reduction_threads, 0, state.stream>>>(sample_size, a, b,
                                                                                               result);
    SGA_CUDA_CHECK_LAUNCH(state, "per_sample_mse_kernel");
}

}  // namespace sga::cuda
