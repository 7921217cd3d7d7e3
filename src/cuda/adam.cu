// One Adam step over a flat parameter block (CUDA), one launch. Contract in kernels.def.
#include <cmath>

#include "cuda/cuda_state.hpp"
#include "cuda/device_utils.cuh"
#include "skipganomaly/engine/kernels.hpp"

namespace sga::cuda {
namespace {

// PyTorch's Adam (no weight decay, not amsgrad):
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2
//   p -= step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps),  step_size = lr / (1 - b1^t)
// The bias corrections are computed once on the host in double, as PyTorch does in Python.
__global__ void adam_step_kernel(std::int64_t n, float beta1, float beta2, float epsilon, float step_size,
                                 float bias_correction2_sqrt, float* parameters, const float* gradients,
                                 float* first_moment, float* second_moment) {
    for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
         i += std::int64_t{blockDim.x} * gridDim.x) {
        const float g = gradients[i];
        const float m = beta1 * first_moment[i] + (1.0f - beta1) * g;
        const float v = beta2 * second_moment[i] + (1.0f - beta2) * g * g;
        first_moment[i] = m;
        second_moment[i] = v;
        const float denominator = sqrtf(v) / bias_correction2_sqrt + epsilon;
        parameters[i] -= step_size * m / denominator;
    }
}

}  // namespace

void adam_step(Context& ctx, std::int64_t n, const AdamHyperparameters& hyper, std::int64_t step, float* parameters,
               const float* gradients, float* first_moment, float* second_moment) {
    SGA_CHECK_ARGUMENT(step >= 1, "Adam steps count from 1");
    if (n <= 0) return;
    CudaState& state = state_of(ctx);
    const double t = static_cast<double>(step);
    const double bias_correction1 = 1.0 - std::pow(static_cast<double>(hyper.beta1), t);
    const double bias_correction2 = 1.0 - std::pow(static_cast<double>(hyper.beta2), t);
    const float step_size = static_cast<float>(static_cast<double>(hyper.learning_rate) / bias_correction1);
    const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
    adam_step_kernel<<<elementwise_blocks(n), elementwise_threads, 0, state.stream>>>(
        n, hyper.beta1, hyper.beta2, hyper.epsilon, step_size, bias_correction2_sqrt, parameters, gradients,
        first_moment, second_moment);
    SGA_CUDA_CHECK_LAUNCH(state, "adam_step_kernel");
}

}  // namespace sga::cuda
