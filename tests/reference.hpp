// Test-only. The naive reference implementations of the kernels (the spec every backend is
// tested against), templated on the scalar type so that gradient checks can run in double,
// and small helpers shared by the tests. Includes Catch2: never include it from the library.
//
// Layout: includes; sga::testing helpers; then sga::reference, one "// ---- family ----"
// section per kernel family. Append new families as new sections at the end.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "skipganomaly/engine/kernels.hpp"

namespace sga::testing {

// n values uniform in [low, high), reproducible from `seed`.
inline std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float low = -1.0f, float high = 1.0f) {
    std::mt19937_64 engine(seed);
    std::uniform_real_distribution<float> distribution(low, high);
    std::vector<float> values(n);
    for (float& v : values) v = distribution(engine);
    return values;
}

template <typename T>
std::vector<double> to_double(const std::vector<T>& values) {
    return std::vector<double>(values.begin(), values.end());
}

// Passes when every element satisfies |actual - expected| <= atol + rtol * |expected|. Any NaN
// (on either side) fails, and an infinity passes only against the same infinity (+inf
// against -inf, or against a finite value, fails whatever the tolerance). Returns an empty
// string when all pass; otherwise the failure message: `what` (say the shape and seed), the
// first mismatches, the largest error and the normalised error ||actual - expected|| /
// ||expected|| over the finite elements. `actual` is float for kernel outputs; double is
// allowed for checks run in double.
template <typename Actual, typename Expected>
std::string close_failure(const std::vector<Actual>& actual, const std::vector<Expected>& expected, double rtol,
                          double atol, const std::string& what) {
    if (actual.size() != expected.size()) {
        std::ostringstream message;
        message << what << ": " << actual.size() << " elements, expected " << expected.size();
        return message.str();
    }
    std::size_t mismatches = 0, worst = 0;
    double worst_error = -1.0, error_norm = 0.0, expected_norm = 0.0;
    std::ostringstream first;
    first.precision(9);
    for (std::size_t i = 0; i < actual.size(); ++i) {
        const double a = static_cast<double>(actual[i]), r = static_cast<double>(expected[i]);
        const bool nan = std::isnan(a) || std::isnan(r);
        const bool infinite = !nan && (std::isinf(a) || std::isinf(r));
        // With an infinity the arithmetic below says nothing (inf - inf is NaN, and an
        // infinite error is within an infinite allowance): only equality passes.
        const bool out_of_tolerance =
            nan || (infinite ? a != r : std::abs(a - r) > atol + rtol * std::abs(r));
        const double error = nan || infinite ? (a == r ? 0.0 : std::numeric_limits<double>::infinity())
                                             : std::abs(a - r);
        if (out_of_tolerance && ++mismatches <= 5)
            first << "\n  [" << i << "] actual " << a << " expected " << r << " error " << error << " allowed "
                  << atol + rtol * std::abs(r);
        if (error > worst_error) {
            worst_error = error;
            worst = i;
        }
        if (!nan && !infinite) {
            error_norm += error * error;
            expected_norm += r * r;
        }
    }
    if (mismatches == 0) return {};
    std::ostringstream message;
    message.precision(6);
    message << what << ": " << mismatches << " of " << actual.size() << " elements out of tolerance (rtol " << rtol
            << ", atol " << atol << ")" << first.str() << "\n  largest error " << worst_error << " at [" << worst
            << "] (actual " << static_cast<double>(actual[worst]) << ", expected "
            << static_cast<double>(expected[worst]) << ")"
            << "\n  normalised error " << std::sqrt(error_norm / std::max(expected_norm, 1e-300));
    return message.str();
}

// close_failure() as a Catch2 assertion: SUCCEED with `what`, or FAIL with the message.
template <typename Actual, typename Expected>
void require_close(const std::vector<Actual>& actual, const std::vector<Expected>& expected, double rtol, double atol,
                   const std::string& what) {
    const std::string failure = close_failure(actual, expected, rtol, atol, what);
    if (!failure.empty()) FAIL(failure);
    SUCCEED(what);
}

}  // namespace sga::testing

namespace sga::reference {

// ---- convolution ----
// Same argument meaning as the kernels in kernels.def (raw NCHW pointers, sga::ConvGeometry),
// without the context. `beta`: output = result + beta * output; beta 0 ignores what output
// held. Each output element is computed by its own plain sum straight from the definition
// output[n][co][oh][ow] = sum_{ci,kh,kw} input[n][ci][oh*s-p+kh][ow*s-p+kw] * weight[co][ci][kh][kw]
// (out-of-range input reads are the zero padding), so beta applies element by element.

template <typename T>
void conv2d_forward(const ConvGeometry& g, const T* input, const T* weight, T* output, T beta) {
    for (std::int64_t n = 0; n < g.batch; ++n)
        for (std::int64_t co = 0; co < g.out_channels; ++co)
            for (std::int64_t oh = 0; oh < g.out_height; ++oh)
                for (std::int64_t ow = 0; ow < g.out_width; ++ow) {
                    T sum = 0;
                    for (std::int64_t ci = 0; ci < g.in_channels; ++ci)
                        for (std::int64_t kh = 0; kh < g.kernel_height; ++kh)
                            for (std::int64_t kw = 0; kw < g.kernel_width; ++kw) {
                                const std::int64_t ih = oh * g.stride - g.padding + kh;
                                const std::int64_t iw = ow * g.stride - g.padding + kw;
                                if (ih < 0 || ih >= g.in_height || iw < 0 || iw >= g.in_width) continue;
                                sum += input[((n * g.in_channels + ci) * g.in_height + ih) * g.in_width + iw] *
                                       weight[((co * g.in_channels + ci) * g.kernel_height + kh) * g.kernel_width + kw];
                            }
                    T& out = output[((n * g.out_channels + co) * g.out_height + oh) * g.out_width + ow];
                    out = beta == T(0) ? sum : sum + beta * out;
                }
}

// grad_input[n][ci][ih][iw] = sum over every (co, kh, kw, oh, ow) whose forward read that
// input element, i.e. ih == oh*s-p+kh and iw == ow*s-p+kw.
template <typename T>
void conv2d_backward_data(const ConvGeometry& g, const T* grad_output, const T* weight, T* grad_input, T beta) {
    for (std::int64_t n = 0; n < g.batch; ++n)
        for (std::int64_t ci = 0; ci < g.in_channels; ++ci)
            for (std::int64_t ih = 0; ih < g.in_height; ++ih)
                for (std::int64_t iw = 0; iw < g.in_width; ++iw) {
                    T sum = 0;
                    for (std::int64_t co = 0; co < g.out_channels; ++co)
                        for (std::int64_t kh = 0; kh < g.kernel_height; ++kh)
                            for (std::int64_t kw = 0; kw < g.kernel_width; ++kw) {
                                // Solve ih == oh*s-p+kh and iw == ow*s-p+kw for (oh, ow).
                                const std::int64_t oh_times_stride = ih + g.padding - kh;
                                const std::int64_t ow_times_stride = iw + g.padding - kw;
                                if (oh_times_stride % g.stride != 0 || ow_times_stride % g.stride != 0) continue;
                                const std::int64_t oh = oh_times_stride / g.stride, ow = ow_times_stride / g.stride;
                                if (oh < 0 || oh >= g.out_height || ow < 0 || ow >= g.out_width) continue;
                                sum += grad_output[((n * g.out_channels + co) * g.out_height + oh) * g.out_width + ow] *
                                       weight[((co * g.in_channels + ci) * g.kernel_height + kh) * g.kernel_width + kw];
                            }
                    T& out = grad_input[((n * g.in_channels + ci) * g.in_height + ih) * g.in_width + iw];
                    out = beta == T(0) ? sum : sum + beta * out;
                }
}

// grad_weight[co][ci][kh][kw] = sum_{n,oh,ow} input[n][ci][oh*s-p+kh][ow*s-p+kw] * grad_output[n][co][oh][ow].
template <typename T>
void conv2d_backward_filter(const ConvGeometry& g, const T* input, const T* grad_output, T* grad_weight, T beta) {
    for (std::int64_t co = 0; co < g.out_channels; ++co)
        for (std::int64_t ci = 0; ci < g.in_channels; ++ci)
            for (std::int64_t kh = 0; kh < g.kernel_height; ++kh)
                for (std::int64_t kw = 0; kw < g.kernel_width; ++kw) {
                    T sum = 0;
                    for (std::int64_t n = 0; n < g.batch; ++n)
                        for (std::int64_t oh = 0; oh < g.out_height; ++oh)
                            for (std::int64_t ow = 0; ow < g.out_width; ++ow) {
                                const std::int64_t ih = oh * g.stride - g.padding + kh;
                                const std::int64_t iw = ow * g.stride - g.padding + kw;
                                if (ih < 0 || ih >= g.in_height || iw < 0 || iw >= g.in_width) continue;
                                sum += input[((n * g.in_channels + ci) * g.in_height + ih) * g.in_width + iw] *
                                       grad_output[((n * g.out_channels + co) * g.out_height + oh) * g.out_width + ow];
                            }
                    T& out = grad_weight[((co * g.in_channels + ci) * g.kernel_height + kh) * g.kernel_width + kw];
                    out = beta == T(0) ? sum : sum + beta * out;
                }
}

// output (N, C, spatial) += bias (C) broadcast.
template <typename T>
void add_channel_bias(std::int64_t batch, std::int64_t channels, std::int64_t spatial, const T* bias, T* output) {
    for (std::int64_t n = 0; n < batch; ++n)
        for (std::int64_t c = 0; c < channels; ++c)
            for (std::int64_t s = 0; s < spatial; ++s) output[(n * channels + c) * spatial + s] += bias[c];
}

// grad_bias (C) += sum of grad_output (N, C, spatial) over N and spatial.
template <typename T>
void add_channel_bias_backward(std::int64_t batch, std::int64_t channels, std::int64_t spatial, const T* grad_output,
                               T* grad_bias) {
    for (std::int64_t c = 0; c < channels; ++c) {
        T sum = 0;
        for (std::int64_t n = 0; n < batch; ++n)
            for (std::int64_t s = 0; s < spatial; ++s) sum += grad_output[(n * channels + c) * spatial + s];
        grad_bias[c] += sum;
    }
}

}  // namespace sga::reference

// ---- non-convolution kernels ----
// Naive twins of every non-convolution kernel in kernels.def: plain loops, templated on the
// scalar type T, the spec the CPU and CUDA kernels are tested against. Sums accumulate in
// at least double (Accumulate<T>). Same names and argument order as the kernels, without
// the context; scalar results (losses, means) are returned and their incoming gradients
// passed by value. Backward references accumulate (+=) like the kernels; null optional
// outputs are skipped.

#include <type_traits>

#include "skipganomaly/random.hpp"

namespace sga::reference {

template <typename T>
using Accumulate = std::common_type_t<T, double>;

// input, output (N, C, HW); weight, bias, saved_mean, saved_inv_std, running_* (C).
// Batch mean and biased variance normalise; the running variance takes the unbiased one.
template <typename T>
void batch_norm_forward_training(std::int64_t batch, std::int64_t channels, std::int64_t spatial, const T* input,
                                 const T* weight, const T* bias, T* output, T* saved_mean, T* saved_inv_std,
                                 T* running_mean, T* running_var, T momentum, T epsilon) {
    using A = Accumulate<T>;
    const std::int64_t count = batch * spatial;
    auto at = [&](std::int64_t n, std::int64_t c, std::int64_t s) { return (n * channels + c) * spatial + s; };
    for (std::int64_t c = 0; c < channels; ++c) {
        A sum = 0;
        for (std::int64_t n = 0; n < batch; ++n)
            for (std::int64_t s = 0; s < spatial; ++s) sum += A(input[at(n, c, s)]);
        const A mean = sum / A(count);
        A squares = 0;
        for (std::int64_t n = 0; n < batch; ++n)
            for (std::int64_t s = 0; s < spatial; ++s) {
                const A d = A(input[at(n, c, s)]) - mean;
                squares += d * d;
            }
        const A variance = squares / A(count);
        const A inv_std = A(1) / std::sqrt(variance + A(epsilon));
        for (std::int64_t n = 0; n < batch; ++n)
            for (std::int64_t s = 0; s < spatial; ++s)
                output[at(n, c, s)] = T((A(input[at(n, c, s)]) - mean) * inv_std * A(weight[c]) + A(bias[c]));
        saved_mean[c] = T(mean);
        saved_inv_std[c] = T(inv_std);
        if (running_mean) running_mean[c] = T((A(1) - A(momentum)) * A(running_mean[c]) + A(momentum) * mean);
        if (running_var)
            running_var[c] = T((A(1) - A(momentum)) * A(running_var[c]) + A(momentum) * squares / A(count - 1));
    }
}

template <typename T>
void batch_norm_forward_inference(std::int64_t batch, std::int64_t channels, std::int64_t spatial, const T* input,
                                  const T* weight, const T* bias, const T* running_mean, const T* running_var,
                                  T epsilon, T* output) {
    using A = Accumulate<T>;
    for (std::int64_t n = 0; n < batch; ++n)
        for (std::int64_t c = 0; c < channels; ++c)
            for (std::int64_t s = 0; s < spatial; ++s) {
                const std::int64_t i = (n * channels + c) * spatial + s;
                output[i] =
                    T((A(input[i]) - A(running_mean[c])) / std::sqrt(A(running_var[c]) + A(epsilon)) * A(weight[c]) +
                      A(bias[c]));
            }
}

// The textbook form: dxhat = dy * weight;
// dx = inv_std / m * (m dxhat - sum dxhat - xhat sum(dxhat xhat)). Accumulates.
template <typename T>
void batch_norm_backward(std::int64_t batch, std::int64_t channels, std::int64_t spatial, const T* input,
                         const T* grad_output, const T* weight, const T* saved_mean, const T* saved_inv_std,
                         T* grad_input, T* grad_weight, T* grad_bias) {
    using A = Accumulate<T>;
    const A count = A(batch * spatial);
    auto at = [&](std::int64_t n, std::int64_t c, std::int64_t s) { return (n * channels + c) * spatial + s; };
    for (std::int64_t c = 0; c < channels; ++c) {
        const A mean = saved_mean[c], inv_std = saved_inv_std[c], w = weight[c];
        A sum_dxhat = 0, sum_dxhat_xhat = 0, sum_dy = 0, sum_dy_xhat = 0;
        for (std::int64_t n = 0; n < batch; ++n)
            for (std::int64_t s = 0; s < spatial; ++s) {
                const A xhat = (A(input[at(n, c, s)]) - mean) * inv_std;
                const A dy = grad_output[at(n, c, s)];
                sum_dy += dy;
                sum_dy_xhat += dy * xhat;
                sum_dxhat += dy * w;
                sum_dxhat_xhat += dy * w * xhat;
            }
        if (grad_bias) grad_bias[c] = T(A(grad_bias[c]) + sum_dy);
        if (grad_weight) grad_weight[c] = T(A(grad_weight[c]) + sum_dy_xhat);
        if (grad_input)
            for (std::int64_t n = 0; n < batch; ++n)
                for (std::int64_t s = 0; s < spatial; ++s) {
                    const A xhat = (A(input[at(n, c, s)]) - mean) * inv_std;
                    const A dxhat = A(grad_output[at(n, c, s)]) * w;
                    const A dx = inv_std / count * (count * dxhat - sum_dxhat - xhat * sum_dxhat_xhat);
                    grad_input[at(n, c, s)] = T(A(grad_input[at(n, c, s)]) + dx);
                }
    }
}

template <typename T>
void leaky_relu_forward(std::int64_t n, const T* input, T* output, T negative_slope) {
    for (std::int64_t i = 0; i < n; ++i) output[i] = input[i] > T(0) ? input[i] : input[i] * negative_slope;
}
// Uses the forward input; the slope side includes x == 0 (PyTorch: x > 0 ? dy : dy * slope).
template <typename T>
void leaky_relu_backward(std::int64_t n, const T* input, const T* grad_output, T* grad_input, T negative_slope) {
    for (std::int64_t i = 0; i < n; ++i)
        grad_input[i] += input[i] > T(0) ? grad_output[i] : grad_output[i] * negative_slope;
}

template <typename T>
void tanh_forward(std::int64_t n, const T* input, T* output) {
    for (std::int64_t i = 0; i < n; ++i) output[i] = std::tanh(input[i]);
}
// Uses the forward output.
template <typename T>
void tanh_backward(std::int64_t n, const T* output, const T* grad_output, T* grad_input) {
    for (std::int64_t i = 0; i < n; ++i) grad_input[i] += grad_output[i] * (T(1) - output[i] * output[i]);
}

template <typename T>
void sigmoid_forward(std::int64_t n, const T* input, T* output) {
    for (std::int64_t i = 0; i < n; ++i) output[i] = T(1) / (T(1) + std::exp(-input[i]));
}
// Uses the forward output.
template <typename T>
void sigmoid_backward(std::int64_t n, const T* output, const T* grad_output, T* grad_input) {
    for (std::int64_t i = 0; i < n; ++i) grad_input[i] += grad_output[i] * output[i] * (T(1) - output[i]);
}

// a (N, Ca, HW), b (N, Cb, HW), output (N, Ca + Cb, HW).
template <typename T>
void concat_channels_forward(std::int64_t batch, std::int64_t channels_a, std::int64_t channels_b, std::int64_t spatial,
                             const T* a, const T* b, T* output) {
    const std::int64_t channels = channels_a + channels_b;
    for (std::int64_t n = 0; n < batch; ++n)
        for (std::int64_t c = 0; c < channels; ++c)
            for (std::int64_t s = 0; s < spatial; ++s)
                output[(n * channels + c) * spatial + s] = c < channels_a
                                                               ? a[(n * channels_a + c) * spatial + s]
                                                               : b[(n * channels_b + c - channels_a) * spatial + s];
}
template <typename T>
void concat_channels_backward(std::int64_t batch, std::int64_t channels_a, std::int64_t channels_b,
                              std::int64_t spatial, const T* grad_output, T* grad_a, T* grad_b) {
    const std::int64_t channels = channels_a + channels_b;
    for (std::int64_t n = 0; n < batch; ++n)
        for (std::int64_t c = 0; c < channels; ++c)
            for (std::int64_t s = 0; s < spatial; ++s) {
                const T g = grad_output[(n * channels + c) * spatial + s];
                if (c < channels_a) {
                    if (grad_a) grad_a[(n * channels_a + c) * spatial + s] += g;
                } else if (grad_b) {
                    grad_b[(n * channels_b + c - channels_a) * spatial + s] += g;
                }
            }
}

template <typename T>
void fill(std::int64_t n, T value, T* output) {
    for (std::int64_t i = 0; i < n; ++i) output[i] = value;
}
// The affine map is one fused multiply-add in double (spelled out, so that compiler
// contraction cannot change it), then one rounding to T: CPU and CUDA agree bit for bit.
template <typename T>
void fill_normal(std::int64_t n, T mean, T stddev, std::uint64_t seed, std::uint64_t offset, T* output) {
    for (std::int64_t i = 0; i < n; ++i)
        output[i] = T(std::fma(double(stddev), random_normal_at(seed, offset, std::uint64_t(i)), double(mean)));
}
// uniform in (0, 1] maps to (low, high].
template <typename T>
void fill_uniform(std::int64_t n, T low, T high, std::uint64_t seed, std::uint64_t offset, T* output) {
    for (std::int64_t i = 0; i < n; ++i)
        output[i] =
            T(std::fma(double(high) - double(low), random_uniform_at(seed, offset, std::uint64_t(i)), double(low)));
}
template <typename T>
void add_scaled(std::int64_t n, T alpha, const T* a, T beta, const T* b, T* output) {
    for (std::int64_t i = 0; i < n; ++i) output[i] = alpha * a[i] + beta * b[i];
}
template <typename T>
void accumulate_broadcast(std::int64_t n, T scale, T input, T* output) {
    for (std::int64_t i = 0; i < n; ++i) output[i] += scale * input;
}
template <typename T>
void accumulate_scaled(std::int64_t n, T alpha, const T* input, T* output) {
    for (std::int64_t i = 0; i < n; ++i) output[i] += alpha * input[i];
}

template <typename T>
T mean_forward(std::int64_t n, const T* input) {
    Accumulate<T> sum = 0;
    for (std::int64_t i = 0; i < n; ++i) sum += input[i];
    return T(sum / Accumulate<T>(n));
}

// -mean(t log p + (1 - t) log(1 - p)), each log clamped at -100 (PyTorch BCELoss).
template <typename T>
T bce_loss_forward(std::int64_t n, const T* prediction, const T* target) {
    using A = Accumulate<T>;
    A sum = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const A p = prediction[i], t = target[i];
        const A log_p = std::max(std::log(p), A(-100));
        const A log_one_minus_p = std::max(std::log(A(1) - p), A(-100));
        sum += -(t * log_p + (A(1) - t) * log_one_minus_p);
    }
    return T(sum / A(n));
}
// grad_prediction += grad_loss / n * (p - t) / max(p (1 - p), 1e-12).
template <typename T>
void bce_loss_backward(std::int64_t n, const T* prediction, const T* target, T grad_loss, T* grad_prediction) {
    using A = Accumulate<T>;
    for (std::int64_t i = 0; i < n; ++i) {
        const A p = prediction[i], t = target[i];
        grad_prediction[i] =
            T(A(grad_prediction[i]) + A(grad_loss) / A(n) * (p - t) / std::max(p * (A(1) - p), A(1e-12)));
    }
}

template <typename T>
T l1_loss_forward(std::int64_t n, const T* a, const T* b) {
    using A = Accumulate<T>;
    A sum = 0;
    for (std::int64_t i = 0; i < n; ++i) sum += std::abs(A(a[i]) - A(b[i]));
    return T(sum / A(n));
}
// grad_a += sign(a - b) grad_loss / n, with sign(0) = 0; grad_b -= the same.
template <typename T>
void l1_loss_backward(std::int64_t n, const T* a, const T* b, T grad_loss, T* grad_a, T* grad_b) {
    for (std::int64_t i = 0; i < n; ++i) {
        const T sign = a[i] > b[i] ? T(1) : (a[i] < b[i] ? T(-1) : T(0));
        const T g = sign * T(Accumulate<T>(grad_loss) / Accumulate<T>(n));
        if (grad_a) grad_a[i] += g;
        if (grad_b) grad_b[i] -= g;
    }
}

template <typename T>
T mse_loss_forward(std::int64_t n, const T* a, const T* b) {
    using A = Accumulate<T>;
    A sum = 0;
    for (std::int64_t i = 0; i < n; ++i) sum += (A(a[i]) - A(b[i])) * (A(a[i]) - A(b[i]));
    return T(sum / A(n));
}
// grad_a += 2 (a - b) grad_loss / n; grad_b -= the same.
template <typename T>
void mse_loss_backward(std::int64_t n, const T* a, const T* b, T grad_loss, T* grad_a, T* grad_b) {
    using A = Accumulate<T>;
    for (std::int64_t i = 0; i < n; ++i) {
        const A g = A(2) * (A(a[i]) - A(b[i])) * A(grad_loss) / A(n);
        if (grad_a) grad_a[i] = T(A(grad_a[i]) + g);
        if (grad_b) grad_b[i] = T(A(grad_b[i]) - g);
    }
}

// a, b (N, D), result (N).
template <typename T>
void per_sample_mse(std::int64_t batch, std::int64_t sample_size, const T* a, const T* b, T* result) {
    for (std::int64_t s = 0; s < batch; ++s)
        result[s] = mse_loss_forward(sample_size, a + s * sample_size, b + s * sample_size);
}

// PyTorch's Adam (no weight decay, no amsgrad), step counting from 1.
template <typename T>
void adam_step(std::int64_t n, const AdamHyperparameters& hyper, std::int64_t step, T* parameters, const T* gradients,
               T* first_moment, T* second_moment) {
    const T lr = hyper.learning_rate, beta1 = hyper.beta1, beta2 = hyper.beta2, epsilon = hyper.epsilon;
    const T bias_correction1 = T(1) - std::pow(beta1, T(step));
    const T bias_correction2 = T(1) - std::pow(beta2, T(step));
    for (std::int64_t i = 0; i < n; ++i) {
        const T g = gradients[i];
        first_moment[i] = beta1 * first_moment[i] + (T(1) - beta1) * g;
        second_moment[i] = beta2 * second_moment[i] + (T(1) - beta2) * g * g;
        const T denom = std::sqrt(second_moment[i]) / std::sqrt(bias_correction2) + epsilon;
        parameters[i] -= (lr / bias_correction1) * first_moment[i] / denom;
    }
}

}  // namespace sga::reference
