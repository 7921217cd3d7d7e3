// Reductions and losses to a 1-element scalar, PyTorch semantics with reduction='mean'.
//
// Every sum accumulates in double over fixed chunks whose boundaries depend only on n,
// then adds the chunk sums in order: the result is the same for any thread count. This is
// the spec the CUDA two-stage reductions are tested against (to float rounding).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "skipganomaly/engine/kernels.hpp"

namespace sga::cpu {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr std::int64_t parallel_threshold = std::int64_t{1} << 15;
constexpr std::int64_t chunk_elements = std::int64_t{1} << 14;
constexpr std::int64_t max_chunks = 64;

// Sum of term(i) for i in [begin, end) in double, four accumulators in a fixed order.
template <class Term>
double sequential_sum(std::int64_t begin, std::int64_t end, const Term& term) {
    double accumulators[4] = {0.0, 0.0, 0.0, 0.0};
    std::int64_t i = begin;
    for (; i + 4 <= end; i += 4) {
        accumulators[0] += term(i);
        accumulators[1] += term(i + 1);
        accumulators[2] += term(i + 2);
        accumulators[3] += term(i + 3);
    }
    for (; i < end; ++i) accumulators[0] += term(i);
    return (accumulators[0] + accumulators[1]) + (accumulators[2] + accumulators[3]);
}

// Sum of term(i) for i in [0, n) in double, deterministic (see the file comment). Scratch
// is a fixed stack array: kernels allocate nothing.
template <class Term>
double deterministic_sum(std::int64_t n, const Term& term) {
    if (n <= 0) return 0.0;
    const std::int64_t chunks = std::min(max_chunks, (n + chunk_elements - 1) / chunk_elements);
    const std::int64_t per_chunk = (n + chunks - 1) / chunks;
    double partial[max_chunks];
#pragma omp parallel for schedule(static) if (n >= parallel_threshold && chunks > 1)
    for (std::int64_t k = 0; k < chunks; ++k) {
        const std::int64_t begin = std::min(n, k * per_chunk);
        const std::int64_t end = std::min(n, begin + per_chunk);
        partial[k] = sequential_sum(begin, end, term);
    }
    double total = 0.0;
    for (std::int64_t k = 0; k < chunks; ++k) total += partial[k];
    return total;
}

// PyTorch clamps each log of BCE at -100 so that p = 0 or 1 gives a finite loss.
inline double clamped_log(double x) { return std::max(std::log(x), -100.0); }

}  // namespace

// input (n), result (1) = mean(input); NaN for n == 0, like torch.mean of an empty tensor.
void mean_forward(Context& /*ctx*/, std::int64_t n, const float* input, float* result) {
    const double sum = deterministic_sum(n, [input](std::int64_t i) { return static_cast<double>(input[i]); });
    result[0] = static_cast<float>(sum / static_cast<double>(n));
}

// prediction, target (n), loss (1) = -mean(t log p + (1 - t) log(1 - p)), logs clamped at -100.
void bce_loss_forward(Context& /*ctx*/, std::int64_t n, const float* prediction, const float* target, float* loss) {
    const double sum = deterministic_sum(n, [prediction, target](std::int64_t i) {
        const double p = prediction[i], t = target[i];
        return -(t * clamped_log(p) + (1.0 - t) * clamped_log(1.0 - p));
    });
    loss[0] = static_cast<float>(sum / static_cast<double>(n));
}

// prediction, target, grad_prediction (n), grad_loss (1). grad_prediction accumulates
// grad_loss / n * (p - t) / max(p (1 - p), 1e-12).
void bce_loss_backward(Context& /*ctx*/, std::int64_t n, const float* prediction, const float* target,
                       const float* grad_loss, float* grad_prediction) {
    if (n <= 0) return;
    const double scale = static_cast<double>(grad_loss[0]) / static_cast<double>(n);
#pragma omp parallel for schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) {
        const double p = prediction[i], t = target[i];
        grad_prediction[i] += static_cast<float>(scale * (p - t) / std::max(p * (1.0 - p), 1e-12));
    }
}

// a, b (n), loss (1) = mean |a - b|.
void l1_loss_forward(Context& /*ctx*/, std::int64_t n, const float* a, const float* b, float* loss) {
    const double sum = deterministic_sum(
        n, [a, b](std::int64_t i) { return std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])); });
    loss[0] = static_cast<float>(sum / static_cast<double>(n));
}

// a, b, grad_a, grad_b (n), grad_loss (1). grad_a += sign(a - b) grad_loss / n (0 where
// a == b), grad_b -= the same; either may be null.
void l1_loss_backward(Context& /*ctx*/, std::int64_t n, const float* a, const float* b, const float* grad_loss,
                      float* grad_a, float* grad_b) {
    if (n <= 0) return;
    const float scale = static_cast<float>(static_cast<double>(grad_loss[0]) / static_cast<double>(n));
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) {
        const float difference = a[i] - b[i];
        const float g = difference > 0.0f ? scale : (difference < 0.0f ? -scale : 0.0f);
        if (grad_a) grad_a[i] += g;
        if (grad_b) grad_b[i] -= g;
    }
}

// a, b (n), loss (1) = mean (a - b)^2.
void mse_loss_forward(Context& /*ctx*/, std::int64_t n, const float* a, const float* b, float* loss) {
    const double sum = deterministic_sum(n, [a, b](std::int64_t i) {
        const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
        return d * d;
    });
    loss[0] = static_cast<float>(sum / static_cast<double>(n));
}

// a, b, grad_a, grad_b (n), grad_loss (1). grad_a += 2 (a - b) grad_loss / n, grad_b -= the
// same; either may be null.
void mse_loss_backward(Context& /*ctx*/, std::int64_t n, const float* a, const float* b, const float* grad_loss,
                       float* grad_a, float* grad_b) {
    if (n <= 0) return;
    const float scale = static_cast<float>(2.0 * static_cast<double>(grad_loss[0]) / static_cast<double>(n));
#pragma omp parallel for simd schedule(static) if (n >= parallel_threshold)
    for (std::int64_t i = 0; i < n; ++i) {
        const float g = scale * (a[i] - b[i]);
        if (grad_a) grad_a[i] += g;
        if (grad_b) grad_b[i] -= g;
    }
}

// a, b (N, D), result (N): result[s] = mean over the D elements of sample s of (a - b)^2.
void per_sample_mse(Context& /*ctx*/, std::int64_t batch, std::int64_t sample_size, const float* a, const float* b,
                    float* result) {
#pragma omp parallel for schedule(static) if (batch * sample_size >= parallel_threshold)
    for (std::int64_t s = 0; s < batch; ++s) {
        const float* as = a + s * sample_size;
        const float* bs = b + s * sample_size;
        const double sum = sequential_sum(0, sample_size, [as, bs](std::int64_t i) {
            const double d = static_cast<double>(as[i]) - static_cast<double>(bs[i]);
            return d * d;
        });
        result[s] = static_cast<float>(sum / static_cast<double>(sample_size));
    }
}

}  // namespace sga::cpu
