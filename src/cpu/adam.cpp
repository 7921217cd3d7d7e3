// One Adam step, PyTorch semantics (torch.optim.Adam, no weight decay, no amsgrad):
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   denom = sqrt(v) / sqrt(1 - b2^step) + eps;   p -= (lr / (1 - b1^step)) m / denom
// The bias corrections are scalars computed once in double (PyTorch computes them in
// Python floats); the per-element work is float, as PyTorch does it for float tensors.
#include <cmath>
#include <cstdint>

#include "skipganomaly/engine/kernels.hpp"

namespace sga::cpu {
namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr std::int64_t parallel_threshold = std::int64_t{1} << 15;
}  // namespace

// parameters, gradients, first_moment, second_moment (n); step >= 1.
void adam_step(Context& /*ctx*/, std::int64_t n, const AdamHyperparameters& hyper, std::int64_t step,
               float* parameters, const float* gradients, float* first_moment, float* second_moment) {
    SGA_CHECK_ARGUMENT(step >= 1, "adam_step: step counts from 1");
    const double bias_correction1 = 1.0 - std::pow(static_cast<double>(hyper.beta1), static_cast<double>(step));
    const double bias_correction2 = 1.0 - std::pow(static_cast<double>(hyper.beta2), static_cast<double>(step));
    const float step_size = static_cast<float>(static_cast<double>(hyper.learning_rate) / bias_correction1);
    const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
    const float beta1 = hyper.beta1, beta2 = hyper.beta2, epsilon = hyper.epsilon;
    const float one_minus_beta1 = 1.0f - beta1, one_minus_beta2 = 1.0f - beta2;
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) {
        const float g = gradients[i];
        const float m = beta1 * first_moment[i] + one_minus_beta1 * g;
        const float v = beta2 * second_moment[i] + one_minus_beta2 * g * g;
        first_moment[i] = m;
        second_moment[i] = v;
        const float denom = std::sqrt(v) / bias_correction2_sqrt + epsilon;
        parameters[i] -= step_size * m / denom;
    }
}

}  // namespace sga::cpu
