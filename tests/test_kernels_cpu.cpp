// The CPU kernels other than convolution (batch norm, activations, concat, fills and
// elementwise, losses, Adam) against their naive twins in reference.hpp, on seeded random
// inputs, several shapes (batch 1, odd sizes, sizes large enough to take the OpenMP path),
// with guard bands around every output; plus central-difference gradient checks, in double,
// of the references' backward passes against their forward passes.
//
// Tolerances: the references run in double on the very float inputs the kernels get, so a
// float kernel may differ from them only by float rounding. Sums run in double in both, so
// reduction length adds nothing to the error beyond the last rounding to float; where a
// check still scales atol with the reduction length it says why.
#include <omp.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "reference.hpp"
#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/engine/kernels.hpp"

namespace {

using sga::testing::random_vector;
using sga::testing::require_close;
using sga::testing::to_double;

// Guard bands: every kernel output lives in the middle of a larger buffer whose edges hold
// a sentinel; a kernel that writes out of bounds changes one.
constexpr std::size_t guard_size = 64;
constexpr float sentinel = -12345.678f;

class Guarded {
public:
    explicit Guarded(const std::vector<float>& values)
        : size_(values.size()), storage_(values.size() + 2 * guard_size, sentinel) {
        std::copy(values.begin(), values.end(), storage_.begin() + guard_size);
    }
    explicit Guarded(std::size_t size, float value = 0.0f) : Guarded(std::vector<float>(size, value)) {}

    float* data() { return storage_.data() + guard_size; }
    std::size_t size() const { return size_; }
    std::vector<float> values() const {
        return {storage_.begin() + guard_size, storage_.begin() + guard_size + static_cast<std::ptrdiff_t>(size_)};
    }
    void require_guards_intact(const std::string& what) const {
        INFO(what);
        std::size_t overwritten = 0;
        for (std::size_t i = 0; i < guard_size; ++i)
            overwritten += (storage_[i] != sentinel) + (storage_[guard_size + size_ + i] != sentinel);
        INFO("guard elements overwritten: " << overwritten);
        REQUIRE(overwritten == 0);
    }

private:
    std::size_t size_;
    std::vector<float> storage_;
};

std::string describe(const std::string& kernel, const std::vector<std::int64_t>& shape, std::uint64_t seed) {
    std::string s = kernel + " shape (";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ") seed " + std::to_string(seed);
}

std::size_t size_of(std::int64_t n) { return static_cast<std::size_t>(n); }

// Central differences of the scalar `loss()` with respect to each element of `x`, which
// `loss` reads by reference. Step 1e-6 in double: truncation error ~h^2 |f'''| and
// rounding error ~1e-16 |loss| / h both stay near 1e-9 for the O(1)-sized functions here.
std::vector<double> numeric_gradient(std::vector<double>& x, const std::function<double()>& loss, double h = 1e-6) {
    std::vector<double> gradient(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double saved = x[i];
        x[i] = saved + h;
        const double up = loss();
        x[i] = saved - h;
        const double down = loss();
        x[i] = saved;
        gradient[i] = (up - down) / (2.0 * h);
    }
    return gradient;
}

// Gradient checks in double: see numeric_gradient for the error budget.
constexpr double fd_rtol = 1e-6, fd_atol = 1e-6;

double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double sum = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
    return sum;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// batch norm

namespace {
struct BatchNormShape {
    std::int64_t batch, channels, spatial;
};
// Batch 1, odd sizes, spatial 1, and one large enough for the parallel path.
const std::vector<BatchNormShape> batch_norm_shapes = {
    {1, 1, 2}, {1, 3, 5}, {2, 4, 9}, {3, 7, 1}, {5, 16, 49}, {8, 64, 256}};
constexpr float bn_momentum = 0.1f, bn_epsilon = 1e-5f;
}  // namespace

TEST_CASE("batch_norm_forward_training matches the reference", "[cpu][batchnorm]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 100;
    for (const BatchNormShape& shape : batch_norm_shapes) {
        ++seed;
        const std::int64_t n = shape.batch * shape.channels * shape.spatial;
        const std::string what = describe("batch_norm_forward_training", {shape.batch, shape.channels, shape.spatial}, seed);
        // A non-zero mean exercises the centring.
        const std::vector<float> input = random_vector(size_of(n), seed, 1.0f, 4.0f);
        const std::vector<float> weight = random_vector(size_of(shape.channels), seed + 1, 0.5f, 1.5f);
        const std::vector<float> bias = random_vector(size_of(shape.channels), seed + 2, -0.5f, 0.5f);
        const std::vector<float> running_mean0 = random_vector(size_of(shape.channels), seed + 3, -1.0f, 1.0f);
        const std::vector<float> running_var0 = random_vector(size_of(shape.channels), seed + 4, 0.5f, 2.0f);

        for (const bool with_running : {true, false}) {
            Guarded output(size_of(n)), saved_mean(size_of(shape.channels)), saved_inv_std(size_of(shape.channels));
            Guarded running_mean(running_mean0), running_var(running_var0);
            sga::cpu::batch_norm_forward_training(ctx, shape.batch, shape.channels, shape.spatial, input.data(),
                                                  weight.data(), bias.data(), output.data(), saved_mean.data(),
                                                  saved_inv_std.data(), with_running ? running_mean.data() : nullptr,
                                                  with_running ? running_var.data() : nullptr, bn_momentum,
                                                  bn_epsilon);

            std::vector<double> expected(size_of(n)), expected_mean(size_of(shape.channels)),
                expected_inv_std(size_of(shape.channels));
            std::vector<double> expected_running_mean = to_double(running_mean0),
                                expected_running_var = to_double(running_var0);
            const std::vector<double> input_d = to_double(input), weight_d = to_double(weight), bias_d = to_double(bias);
            sga::reference::batch_norm_forward_training<double>(
                shape.batch, shape.channels, shape.spatial, input_d.data(), weight_d.data(), bias_d.data(),
                expected.data(), expected_mean.data(), expected_inv_std.data(), expected_running_mean.data(),
                expected_running_var.data(), bn_momentum, bn_epsilon);

            // Output: the kernel folds the affine map into x * scale + shift in float; with
            // |x| <= 4 and |shift| ~ 4 the cancellation costs a few float ulps of 4 (~1e-6).
            require_close(output.values(), expected, 1e-5, 1e-5, what + " output");
            // Statistics are computed in double and rounded once.
            require_close(saved_mean.values(), expected_mean, 1e-6, 0.0, what + " saved_mean");
            require_close(saved_inv_std.values(), expected_inv_std, 1e-6, 0.0, what + " saved_inv_std");
            if (with_running) {
                require_close(running_mean.values(), expected_running_mean, 1e-6, 1e-7, what + " running_mean");
                require_close(running_var.values(), expected_running_var, 1e-6, 0.0, what + " running_var");
            } else {
                // Null running statistics: nothing written to them.
                REQUIRE(running_mean.values() == running_mean0);
                REQUIRE(running_var.values() == running_var0);
            }
            output.require_guards_intact(what + " output");
            saved_mean.require_guards_intact(what + " saved_mean");
            saved_inv_std.require_guards_intact(what + " saved_inv_std");
            running_mean.require_guards_intact(what + " running_mean");
            running_var.require_guards_intact(what + " running_var");
        }
    }
}

TEST_CASE("batch_norm_forward_training uses the unbiased variance for running_var", "[cpu][batchnorm]") {
    // One channel, values 1 and 3: batch mean 2, biased variance 1, unbiased variance 2.
    sga::Context ctx(sga::Device::Cpu);
    const std::vector<float> input = {1.0f, 3.0f}, weight = {1.0f}, bias = {0.0f};
    std::vector<float> output(2), mean(1), inv_std(1), running_mean = {0.0f}, running_var = {1.0f};
    sga::cpu::batch_norm_forward_training(ctx, 2, 1, 1, input.data(), weight.data(), bias.data(), output.data(),
                                          mean.data(), inv_std.data(), running_mean.data(), running_var.data(), 0.1f,
                                          1e-5f);
    CHECK(mean[0] == Approx(2.0f));
    CHECK(inv_std[0] == Approx(1.0 / std::sqrt(1.0 + 1e-5)));
    CHECK(running_mean[0] == Approx(0.9 * 0.0 + 0.1 * 2.0));
    CHECK(running_var[0] == Approx(0.9 * 1.0 + 0.1 * 2.0));
    CHECK(output[0] == Approx(-1.0 / std::sqrt(1.0 + 1e-5)));
    CHECK(output[1] == Approx(1.0 / std::sqrt(1.0 + 1e-5)));
}

TEST_CASE("batch_norm_forward_training rejects one value per channel", "[cpu][batchnorm]") {
    // PyTorch raises here too: the unbiased variance would divide by zero.
    sga::Context ctx(sga::Device::Cpu);
    const std::vector<float> input = {1.0f, 2.0f}, weight = {1.0f, 1.0f}, bias = {0.0f, 0.0f};
    std::vector<float> output(2), mean(2), inv_std(2);
    REQUIRE_THROWS_AS(sga::cpu::batch_norm_forward_training(ctx, 1, 2, 1, input.data(), weight.data(), bias.data(),
                                                            output.data(), mean.data(), inv_std.data(), nullptr,
                                                            nullptr, 0.1f, 1e-5f),
                      sga::InvalidArgument);
}

TEST_CASE("batch_norm_forward_inference matches the reference", "[cpu][batchnorm]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 200;
    for (const BatchNormShape& shape : batch_norm_shapes) {
        ++seed;
        const std::int64_t n = shape.batch * shape.channels * shape.spatial;
        const std::string what = describe("batch_norm_forward_inference", {shape.batch, shape.channels, shape.spatial}, seed);
        const std::vector<float> input = random_vector(size_of(n), seed, -3.0f, 3.0f);
        const std::vector<float> weight = random_vector(size_of(shape.channels), seed + 1, 0.5f, 1.5f);
        const std::vector<float> bias = random_vector(size_of(shape.channels), seed + 2, -0.5f, 0.5f);
        const std::vector<float> running_mean = random_vector(size_of(shape.channels), seed + 3, -1.0f, 1.0f);
        const std::vector<float> running_var = random_vector(size_of(shape.channels), seed + 4, 0.5f, 2.0f);
        Guarded output(size_of(n));
        sga::cpu::batch_norm_forward_inference(ctx, shape.batch, shape.channels, shape.spatial, input.data(),
                                               weight.data(), bias.data(), running_mean.data(), running_var.data(),
                                               bn_epsilon, output.data());
        std::vector<double> expected(size_of(n));
        const std::vector<double> input_d = to_double(input), weight_d = to_double(weight), bias_d = to_double(bias),
                                  mean_d = to_double(running_mean), var_d = to_double(running_var);
        sga::reference::batch_norm_forward_inference<double>(shape.batch, shape.channels, shape.spatial,
                                                             input_d.data(), weight_d.data(), bias_d.data(),
                                                             mean_d.data(), var_d.data(), bn_epsilon, expected.data());
        // x * scale + shift in float, |x| <= 3, |scale| <= ~2: a few ulps of 6.
        require_close(output.values(), expected, 1e-5, 2e-6, what);
        output.require_guards_intact(what);
    }
}

TEST_CASE("batch_norm_backward matches the reference, accumulates and skips null outputs", "[cpu][batchnorm]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 300;
    for (const BatchNormShape& shape : batch_norm_shapes) {
        ++seed;
        const std::int64_t n = shape.batch * shape.channels * shape.spatial;
        const std::int64_t count = shape.batch * shape.spatial;
        const std::string what = describe("batch_norm_backward", {shape.batch, shape.channels, shape.spatial}, seed);
        const std::vector<float> input = random_vector(size_of(n), seed, -2.0f, 3.0f);
        const std::vector<float> grad_output = random_vector(size_of(n), seed + 1);
        const std::vector<float> weight = random_vector(size_of(shape.channels), seed + 2, 0.5f, 1.5f);
        const std::vector<float> bias = random_vector(size_of(shape.channels), seed + 3);
        // The saved statistics come from the kernel's own forward, as in training.
        std::vector<float> output(size_of(n)), saved_mean(size_of(shape.channels)), saved_inv_std(size_of(shape.channels));
        sga::cpu::batch_norm_forward_training(ctx, shape.batch, shape.channels, shape.spatial, input.data(),
                                              weight.data(), bias.data(), output.data(), saved_mean.data(),
                                              saved_inv_std.data(), nullptr, nullptr, bn_momentum, bn_epsilon);
        // Non-zero initial gradients test the += contract.
        const std::vector<float> grad_input0 = random_vector(size_of(n), seed + 4);
        const std::vector<float> grad_weight0 = random_vector(size_of(shape.channels), seed + 5);
        const std::vector<float> grad_bias0 = random_vector(size_of(shape.channels), seed + 6);

        std::vector<double> expected_input = to_double(grad_input0), expected_weight = to_double(grad_weight0),
                            expected_bias = to_double(grad_bias0);
        const std::vector<double> input_d = to_double(input), grad_output_d = to_double(grad_output),
                                  weight_d = to_double(weight), mean_d = to_double(saved_mean),
                                  inv_std_d = to_double(saved_inv_std);
        sga::reference::batch_norm_backward<double>(shape.batch, shape.channels, shape.spatial, input_d.data(),
                                                    grad_output_d.data(), weight_d.data(), mean_d.data(),
                                                    inv_std_d.data(), expected_input.data(), expected_weight.data(),
                                                    expected_bias.data());

        // mask bit 0: grad_input wanted, bit 1: grad_weight, bit 2: grad_bias.
        for (int mask = 0; mask < 8; ++mask) {
            const std::string case_what = what + " outputs mask " + std::to_string(mask);
            Guarded grad_input(grad_input0), grad_weight(grad_weight0), grad_bias(grad_bias0);
            sga::cpu::batch_norm_backward(ctx, shape.batch, shape.channels, shape.spatial, input.data(),
                                          grad_output.data(), weight.data(), saved_mean.data(), saved_inv_std.data(),
                                          (mask & 1) ? grad_input.data() : nullptr,
                                          (mask & 2) ? grad_weight.data() : nullptr,
                                          (mask & 4) ? grad_bias.data() : nullptr);
            // grad_input: per element k dy + a (x - mean) + b with O(1) terms, float: a few
            // ulps of the largest term.
            if (mask & 1)
                require_close(grad_input.values(), expected_input, 1e-5, 1e-5, case_what + " grad_input");
            else
                REQUIRE(grad_input.values() == grad_input0);
            // Per-channel sums of `count` O(1) random-signed terms, accumulated in double (so
            // only their order differs, ~1e-16), are O(sqrt(count)); the final float add to
            // the O(1) initial gradient rounds relative to that, hence atol ~ sqrt(count) ulps.
            const double sum_atol = 1e-6 * std::sqrt(static_cast<double>(count));
            if (mask & 2)
                require_close(grad_weight.values(), expected_weight, 1e-5, sum_atol, case_what + " grad_weight");
            else
                REQUIRE(grad_weight.values() == grad_weight0);
            if (mask & 4)
                require_close(grad_bias.values(), expected_bias, 1e-6, sum_atol, case_what + " grad_bias");
            else
                REQUIRE(grad_bias.values() == grad_bias0);
            grad_input.require_guards_intact(case_what + " grad_input");
            grad_weight.require_guards_intact(case_what + " grad_weight");
            grad_bias.require_guards_intact(case_what + " grad_bias");
        }
    }
}

TEST_CASE("batch norm (training) reference gradients match finite differences", "[cpu][batchnorm][gradient]") {
    for (const BatchNormShape& shape : std::vector<BatchNormShape>{{2, 3, 5}, {1, 2, 7}, {4, 1, 1}}) {
        const std::uint64_t seed = 400 + static_cast<std::uint64_t>(shape.batch * 100 + shape.channels * 10 + shape.spatial);
        const std::int64_t n = shape.batch * shape.channels * shape.spatial;
        const std::size_t c = size_of(shape.channels);
        const std::string what = describe("batch norm gradient check", {shape.batch, shape.channels, shape.spatial}, seed);
        std::vector<double> input = to_double(random_vector(size_of(n), seed, -2.0f, 2.0f));
        std::vector<double> weight = to_double(random_vector(c, seed + 1, 0.5f, 1.5f));
        std::vector<double> bias = to_double(random_vector(c, seed + 2));
        // loss = sum(r * y) for a fixed random r, so dloss/dy = r.
        const std::vector<double> r = to_double(random_vector(size_of(n), seed + 3));
        std::vector<double> output(size_of(n)), mean(c), inv_std(c);
        auto loss = [&] {
            sga::reference::batch_norm_forward_training<double>(shape.batch, shape.channels, shape.spatial,
                                                                input.data(), weight.data(), bias.data(),
                                                                output.data(), mean.data(), inv_std.data(), nullptr,
                                                                nullptr, 0.1, 1e-5);
            return dot(r, output);
        };
        loss();  // fills mean and inv_std at the unperturbed point
        const std::vector<double> saved_mean = mean, saved_inv_std = inv_std;
        std::vector<double> grad_input(size_of(n), 0.0), grad_weight(c, 0.0), grad_bias(c, 0.0);
        sga::reference::batch_norm_backward<double>(shape.batch, shape.channels, shape.spatial, input.data(), r.data(),
                                                    weight.data(), saved_mean.data(), saved_inv_std.data(),
                                                    grad_input.data(), grad_weight.data(), grad_bias.data());
        require_close(grad_input, numeric_gradient(input, loss), fd_rtol, fd_atol, what + " input");
        require_close(grad_weight, numeric_gradient(weight, loss), fd_rtol, fd_atol, what + " weight");
        require_close(grad_bias, numeric_gradient(bias, loss), fd_rtol, fd_atol, what + " bias");
    }
}

// ---------------------------------------------------------------------------------------
// activations

namespace {
// 1, odd, and above the parallel threshold.
const std::vector<std::int64_t> elementwise_sizes = {1, 7, 1000, 100003};
}

TEST_CASE("leaky_relu forward and backward match the reference", "[cpu][activations]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 500;
    for (const float slope : {0.2f, 0.0f}) {
        for (const std::int64_t n : elementwise_sizes) {
            ++seed;
            const std::string what = describe("leaky_relu slope " + std::to_string(slope), {n}, seed);
            std::vector<float> input = random_vector(size_of(n), seed, -3.0f, 3.0f);
            // Exact zeros: the forward gives 0, the backward takes the slope side (PyTorch).
            for (std::size_t i = 0; i < input.size(); i += 5) input[i] = 0.0f;
            const std::vector<float> grad_output = random_vector(size_of(n), seed + 1);
            const std::vector<float> grad_input0 = random_vector(size_of(n), seed + 2);

            Guarded output(size_of(n)), grad_input(grad_input0);
            sga::cpu::leaky_relu_forward(ctx, n, input.data(), output.data(), slope);
            sga::cpu::leaky_relu_backward(ctx, n, input.data(), grad_output.data(), grad_input.data(), slope);
            // In place (scoring's Input::Dead): the same bits.
            Guarded in_place(input);
            sga::cpu::leaky_relu_forward(ctx, n, in_place.data(), in_place.data(), slope);
            REQUIRE(in_place.values() == output.values());
            in_place.require_guards_intact(what + " in place");

            const std::vector<double> input_d = to_double(input), grad_output_d = to_double(grad_output);
            std::vector<double> expected(size_of(n)), expected_grad = to_double(grad_input0);
            sga::reference::leaky_relu_forward<double>(n, input_d.data(), expected.data(), slope);
            sga::reference::leaky_relu_backward<double>(n, input_d.data(), grad_output_d.data(), expected_grad.data(),
                                                        slope);
            // One float multiply (rounding 2^-24 relative); exact where the slope is 0 or 1.
            require_close(output.values(), expected, 1e-7, 0.0, what + " forward");
            // init + dy * slope: one or two roundings of O(1) values.
            require_close(grad_input.values(), expected_grad, 1e-6, 2e-7, what + " backward");
            if (slope == 0.0f) {
                // ReLU: nothing flows back through x == 0 (PyTorch's threshold_backward).
                const std::vector<float> grad = grad_input.values();
                std::size_t changed = 0;
                for (std::size_t i = 0; i < input.size(); i += 5) changed += grad[i] != grad_input0[i];
                REQUIRE(changed == 0);
            }
            output.require_guards_intact(what + " output");
            grad_input.require_guards_intact(what + " grad_input");
        }
    }
}

TEST_CASE("tanh and sigmoid forward and backward match the reference", "[cpu][activations]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 600;
    for (const bool is_tanh : {true, false}) {
        for (const std::int64_t n : elementwise_sizes) {
            ++seed;
            const std::string what = describe(is_tanh ? "tanh" : "sigmoid", {n}, seed);
            std::vector<float> input = random_vector(size_of(n), seed, -5.0f, 5.0f);
            // Saturated inputs must give finite, exact limits.
            const float extremes[] = {-100.0f, -30.0f, 0.0f, 30.0f, 100.0f};
            for (std::size_t i = 0; i < input.size() && i < 5; ++i) input[i] = extremes[i];
            const std::vector<float> grad_output = random_vector(size_of(n), seed + 1);
            const std::vector<float> grad_input0 = random_vector(size_of(n), seed + 2);

            Guarded output(size_of(n)), grad_input(grad_input0);
            if (is_tanh) {
                sga::cpu::tanh_forward(ctx, n, input.data(), output.data());
                sga::cpu::tanh_backward(ctx, n, output.data(), grad_output.data(), grad_input.data());
            } else {
                sga::cpu::sigmoid_forward(ctx, n, input.data(), output.data());
                sga::cpu::sigmoid_backward(ctx, n, output.data(), grad_output.data(), grad_input.data());
            }
            const std::vector<double> input_d = to_double(input), grad_output_d = to_double(grad_output);
            // The backward reads the kernel's own forward output, as in training.
            const std::vector<double> output_d = to_double(output.values());
            std::vector<double> expected(size_of(n)), expected_grad = to_double(grad_input0);
            if (is_tanh) {
                sga::reference::tanh_forward<double>(n, input_d.data(), expected.data());
                sga::reference::tanh_backward<double>(n, output_d.data(), grad_output_d.data(), expected_grad.data());
            } else {
                sga::reference::sigmoid_forward<double>(n, input_d.data(), expected.data());
                sga::reference::sigmoid_backward<double>(n, output_d.data(), grad_output_d.data(),
                                                         expected_grad.data());
            }
            // libm tanhf/expf are within 1-2 ulps; sigmoid adds a float add and divide.
            require_close(output.values(), expected, 1e-6, 1e-30, what + " forward");
            // init + dy * (1 - y^2) or dy * y (1 - y): a few float roundings of O(1) values.
            require_close(grad_input.values(), expected_grad, 1e-6, 5e-7, what + " backward");
            const std::vector<float> y = output.values();
            REQUIRE(std::all_of(y.begin(), y.end(), [](float v) { return std::isfinite(v); }));
            output.require_guards_intact(what + " output");
            grad_input.require_guards_intact(what + " grad_input");
        }
    }
}

TEST_CASE("activation reference gradients match finite differences", "[cpu][activations][gradient]") {
    const std::int64_t n = 41;
    const std::uint64_t seed = 700;
    const std::vector<double> r = to_double(random_vector(size_of(n), seed + 1));
    std::vector<double> input = to_double(random_vector(size_of(n), seed, -3.0f, 3.0f));
    // Keep clear of leaky_relu's kink at 0, where the difference quotient is meaningless.
    for (double& x : input)
        if (std::abs(x) < 1e-2) x = 0.5;
    std::vector<double> output(size_of(n));

    for (const double slope : {0.2, 0.0}) {
        auto loss = [&] {
            sga::reference::leaky_relu_forward<double>(n, input.data(), output.data(), slope);
            return dot(r, output);
        };
        std::vector<double> grad(size_of(n), 0.0);
        sga::reference::leaky_relu_backward<double>(n, input.data(), r.data(), grad.data(), slope);
        require_close(grad, numeric_gradient(input, loss), fd_rtol, fd_atol,
                      describe("leaky_relu gradient check slope " + std::to_string(slope), {n}, seed));
    }
    {
        auto loss = [&] {
            sga::reference::tanh_forward<double>(n, input.data(), output.data());
            return dot(r, output);
        };
        loss();
        std::vector<double> grad(size_of(n), 0.0);
        sga::reference::tanh_backward<double>(n, output.data(), r.data(), grad.data());
        require_close(grad, numeric_gradient(input, loss), fd_rtol, fd_atol, describe("tanh gradient check", {n}, seed));
    }
    {
        auto loss = [&] {
            sga::reference::sigmoid_forward<double>(n, input.data(), output.data());
            return dot(r, output);
        };
        loss();
        std::vector<double> grad(size_of(n), 0.0);
        sga::reference::sigmoid_backward<double>(n, output.data(), r.data(), grad.data());
        require_close(grad, numeric_gradient(input, loss), fd_rtol, fd_atol,
                      describe("sigmoid gradient check", {n}, seed));
    }
}

// ---------------------------------------------------------------------------------------
// concat

namespace {
struct ConcatShape {
    std::int64_t batch, channels_a, channels_b, spatial;
};
const std::vector<ConcatShape> concat_shapes = {{1, 1, 1, 1}, {2, 3, 5, 7}, {1, 64, 64, 1}, {4, 64, 64, 256}};
}  // namespace

TEST_CASE("concat_channels forward and backward match the reference", "[cpu][concat]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 800;
    for (const ConcatShape& shape : concat_shapes) {
        ++seed;
        const std::string what =
            describe("concat_channels", {shape.batch, shape.channels_a, shape.channels_b, shape.spatial}, seed);
        const std::size_t size_a = size_of(shape.batch * shape.channels_a * shape.spatial);
        const std::size_t size_b = size_of(shape.batch * shape.channels_b * shape.spatial);
        const std::vector<float> a = random_vector(size_a, seed), b = random_vector(size_b, seed + 1);
        Guarded output(size_a + size_b);
        sga::cpu::concat_channels_forward(ctx, shape.batch, shape.channels_a, shape.channels_b, shape.spatial, a.data(),
                                          b.data(), output.data());
        std::vector<float> expected(size_a + size_b);
        sga::reference::concat_channels_forward<float>(shape.batch, shape.channels_a, shape.channels_b, shape.spatial,
                                                       a.data(), b.data(), expected.data());
        // A copy: exact.
        REQUIRE(output.values() == expected);
        output.require_guards_intact(what + " output");

        const std::vector<float> grad_output = random_vector(size_a + size_b, seed + 2);
        const std::vector<float> grad_a0 = random_vector(size_a, seed + 3), grad_b0 = random_vector(size_b, seed + 4);
        std::vector<float> expected_a = grad_a0, expected_b = grad_b0;
        sga::reference::concat_channels_backward<float>(shape.batch, shape.channels_a, shape.channels_b, shape.spatial,
                                                        grad_output.data(), expected_a.data(), expected_b.data());
        for (int mask = 0; mask < 4; ++mask) {
            const std::string case_what = what + " outputs mask " + std::to_string(mask);
            Guarded grad_a(grad_a0), grad_b(grad_b0);
            sga::cpu::concat_channels_backward(ctx, shape.batch, shape.channels_a, shape.channels_b, shape.spatial,
                                               grad_output.data(), (mask & 1) ? grad_a.data() : nullptr,
                                               (mask & 2) ? grad_b.data() : nullptr);
            // One float add per element in both: exact.
            REQUIRE(grad_a.values() == ((mask & 1) ? expected_a : grad_a0));
            REQUIRE(grad_b.values() == ((mask & 2) ? expected_b : grad_b0));
            grad_a.require_guards_intact(case_what + " grad_a");
            grad_b.require_guards_intact(case_what + " grad_b");
        }
    }
}

TEST_CASE("concat reference gradients match finite differences", "[cpu][concat][gradient]") {
    const ConcatShape shape{2, 2, 3, 3};
    const std::uint64_t seed = 900;
    const std::size_t size_a = size_of(shape.batch * shape.channels_a * shape.spatial);
    const std::size_t size_b = size_of(shape.batch * shape.channels_b * shape.spatial);
    std::vector<double> a = to_double(random_vector(size_a, seed)), b = to_double(random_vector(size_b, seed + 1));
    const std::vector<double> r = to_double(random_vector(size_a + size_b, seed + 2));
    std::vector<double> output(size_a + size_b);
    auto loss = [&] {
        sga::reference::concat_channels_forward<double>(shape.batch, shape.channels_a, shape.channels_b, shape.spatial,
                                                        a.data(), b.data(), output.data());
        return dot(r, output);
    };
    std::vector<double> grad_a(size_a, 0.0), grad_b(size_b, 0.0);
    sga::reference::concat_channels_backward<double>(shape.batch, shape.channels_a, shape.channels_b, shape.spatial,
                                                     r.data(), grad_a.data(), grad_b.data());
    const std::string what = describe("concat gradient check", {shape.batch, shape.channels_a, shape.channels_b, shape.spatial}, seed);
    require_close(grad_a, numeric_gradient(a, loss), fd_rtol, fd_atol, what + " a");
    require_close(grad_b, numeric_gradient(b, loss), fd_rtol, fd_atol, what + " b");
}

// ---------------------------------------------------------------------------------------
// fills and elementwise

TEST_CASE("fill writes the value and nothing else", "[cpu][elementwise]") {
    sga::Context ctx(sga::Device::Cpu);
    for (const std::int64_t n : elementwise_sizes) {
        Guarded output(random_vector(size_of(n), 1000));
        sga::cpu::fill(ctx, n, 0.375f, output.data());
        REQUIRE(output.values() == std::vector<float>(size_of(n), 0.375f));
        output.require_guards_intact(describe("fill", {n}, 1000));
    }
}

TEST_CASE("fill_normal matches the reference and random.hpp", "[cpu][elementwise][random]") {
    sga::Context ctx(sga::Device::Cpu);
    // 1025 crosses the parallel threshold of the random fills.
    for (const std::int64_t n : {std::int64_t{1}, std::int64_t{3}, std::int64_t{5}, std::int64_t{1000}, std::int64_t{4099}}) {
        for (const std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{7}}) {
            const std::uint64_t seed = 1100 + static_cast<std::uint64_t>(n);
            const std::string what = describe("fill_normal offset " + std::to_string(offset), {n}, seed);
            Guarded output(size_of(n));
            sga::cpu::fill_normal(ctx, n, 0.5f, 2.0f, seed, offset, output.data());
            std::vector<float> expected(size_of(n));
            sga::reference::fill_normal<float>(n, 0.5f, 2.0f, seed, offset, expected.data());
            // Same double arithmetic, one rounding: bit-identical (the CUDA kernel must be too).
            REQUIRE(output.values() == expected);
            output.require_guards_intact(what);
        }
    }
}

TEST_CASE("fill_normal draws standard normal numbers", "[cpu][elementwise][random]") {
    sga::Context ctx(sga::Device::Cpu);
    const std::int64_t n = 100000;
    std::vector<float> values(size_of(n));
    sga::cpu::fill_normal(ctx, n, 0.0f, 1.0f, 42, 0, values.data());
    double sum = 0.0, squares = 0.0;
    REQUIRE(std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); }));
    for (const float v : values) {
        sum += v;
        squares += static_cast<double>(v) * v;
    }
    const double mean = sum / n, stddev = std::sqrt(squares / n - mean * mean);
    // Standard errors over 1e5 draws: 0.0032 for the mean, 0.0022 for the std; 0.02 is ~6
    // standard errors, so a correct generator fails with probability < 1e-8 (and the seed
    // is fixed, so it never flakes).
    CHECK(std::abs(mean) < 0.02);
    CHECK(std::abs(stddev - 1.0) < 0.02);
    // Both halves of the Box-Muller pairs are used: odd and even elements look alike too.
    double even_sum = 0.0, odd_sum = 0.0;
    for (std::size_t i = 0; i < values.size(); i += 2) {
        even_sum += values[i];
        odd_sum += values[i + 1];
    }
    CHECK(std::abs(even_sum / (n / 2)) < 0.03);
    CHECK(std::abs(odd_sum / (n / 2)) < 0.03);
}

TEST_CASE("fill_normal is deterministic and a slice at an offset equals the tail of a longer stream",
          "[cpu][elementwise][random]") {
    sga::Context ctx(sga::Device::Cpu);
    const std::int64_t n = 5000;
    std::vector<float> first(size_of(n)), second(size_of(n)), other_seed(size_of(n));
    sga::cpu::fill_normal(ctx, n, 0.0f, 1.0f, 7, 3, first.data());
    sga::cpu::fill_normal(ctx, n, 0.0f, 1.0f, 7, 3, second.data());
    REQUIRE(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
    sga::cpu::fill_normal(ctx, n, 0.0f, 1.0f, 8, 3, other_seed.data());
    REQUIRE(first != other_seed);

    // `offset` counts Philox calls of four elements: offset 3 + 250 starts at element 1000.
    const std::int64_t skip = 1000;
    std::vector<float> tail(size_of(n - skip));
    sga::cpu::fill_normal(ctx, n - skip, 0.0f, 1.0f, 7, 3 + sga::random_offset_span(skip), tail.data());
    REQUIRE(std::equal(tail.begin(), tail.end(), first.begin() + skip));

    // A RandomStream hands out non-overlapping ranges: two takes give different numbers.
    sga::RandomStream stream(7);
    const std::uint64_t at1 = stream.take(size_of(n)), at2 = stream.take(size_of(n));
    sga::cpu::fill_normal(ctx, n, 0.0f, 1.0f, 7, at1, first.data());
    sga::cpu::fill_normal(ctx, n, 0.0f, 1.0f, 7, at2, second.data());
    REQUIRE(first != second);
}

TEST_CASE("fill_uniform matches the reference and stays above low and at most high", "[cpu][elementwise][random]") {
    sga::Context ctx(sga::Device::Cpu);
    for (const std::int64_t n : {std::int64_t{1}, std::int64_t{7}, std::int64_t{100000}}) {
        const std::uint64_t seed = 1200 + static_cast<std::uint64_t>(n);
        const std::string what = describe("fill_uniform", {n}, seed);
        Guarded output(size_of(n));
        sga::cpu::fill_uniform(ctx, n, -0.5f, 1.5f, seed, 11, output.data());
        std::vector<float> expected(size_of(n));
        sga::reference::fill_uniform<float>(n, -0.5f, 1.5f, seed, 11, expected.data());
        REQUIRE(output.values() == expected);
        output.require_guards_intact(what);
        REQUIRE(std::all_of(expected.begin(), expected.end(), [](float v) { return v > -0.5f && v <= 1.5f; }));
        double sum = 0.0;
        for (const float v : expected) sum += v;
        // Mean 0.5, standard error 2/sqrt(12 n) = 0.0018 at n = 1e5: 0.02 is ~10 of them.
        if (n == 100000) CHECK(std::abs(sum / n - 0.5) < 0.02);
    }
}

TEST_CASE("add_scaled, accumulate_broadcast and accumulate_scaled match the reference", "[cpu][elementwise]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 1300;
    // alpha a + beta b and out + alpha x: two or three float roundings of O(1) values.
    constexpr double rtol = 1e-6, atol = 3e-7;
    for (const std::int64_t n : elementwise_sizes) {
        ++seed;
        const std::vector<float> a = random_vector(size_of(n), seed), b = random_vector(size_of(n), seed + 1);
        const std::vector<float> output0 = random_vector(size_of(n), seed + 2);
        const std::vector<double> a_d = to_double(a), b_d = to_double(b);
        {
            const std::string what = describe("add_scaled", {n}, seed);
            std::vector<double> expected(size_of(n));
            sga::reference::add_scaled<double>(n, 0.75, a_d.data(), -1.25, b_d.data(), expected.data());
            Guarded output(output0);
            sga::cpu::add_scaled(ctx, n, 0.75f, a.data(), -1.25f, b.data(), output.data());
            require_close(output.values(), expected, rtol, atol, what);
            output.require_guards_intact(what);
            // The output may alias either input.
            Guarded in_place_a(a), in_place_b(b);
            sga::cpu::add_scaled(ctx, n, 0.75f, in_place_a.data(), -1.25f, b.data(), in_place_a.data());
            sga::cpu::add_scaled(ctx, n, 0.75f, a.data(), -1.25f, in_place_b.data(), in_place_b.data());
            require_close(in_place_a.values(), expected, rtol, atol, what + " output aliasing a");
            require_close(in_place_b.values(), expected, rtol, atol, what + " output aliasing b");
            in_place_a.require_guards_intact(what + " aliasing a");
            in_place_b.require_guards_intact(what + " aliasing b");
        }
        {
            const std::string what = describe("accumulate_broadcast", {n}, seed);
            const std::vector<float> scalar = {-0.625f};
            std::vector<double> expected = to_double(output0);
            sga::reference::accumulate_broadcast<double>(n, 1.0 / 3.0, -0.625, expected.data());
            Guarded output(output0);
            sga::cpu::accumulate_broadcast(ctx, n, 1.0f / 3.0f, scalar.data(), output.data());
            require_close(output.values(), expected, rtol, atol, what);
            output.require_guards_intact(what);
        }
        {
            const std::string what = describe("accumulate_scaled", {n}, seed);
            std::vector<double> expected = to_double(output0);
            sga::reference::accumulate_scaled<double>(n, -0.3, a_d.data(), expected.data());
            Guarded output(output0);
            sga::cpu::accumulate_scaled(ctx, n, -0.3f, a.data(), output.data());
            require_close(output.values(), expected, rtol, atol, what);
            output.require_guards_intact(what);
        }
    }
}

// ---------------------------------------------------------------------------------------
// reductions and losses

namespace {
// 1, odd, one below and several above the parallel threshold, and one with many chunks.
const std::vector<std::int64_t> reduction_sizes = {1, 7, 1000, 100003, (std::int64_t{1} << 20) + 3};

// A 1-element device scalar in a guard band.
float run_scalar(const std::function<void(float*)>& kernel, const std::string& what) {
    Guarded result(1, std::numeric_limits<float>::quiet_NaN());
    kernel(result.data());
    result.require_guards_intact(what);
    return result.values()[0];
}
}  // namespace

TEST_CASE("mean and loss forwards match the reference", "[cpu][losses]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 1400;
    for (const std::int64_t n : reduction_sizes) {
        ++seed;
        const std::vector<float> a = random_vector(size_of(n), seed), b = random_vector(size_of(n), seed + 1);
        // Predictions inside (0, 1); soft targets in [0, 1] (hard 0/1 targets in the clamp test).
        const std::vector<float> prediction = random_vector(size_of(n), seed + 2, 0.01f, 0.99f);
        const std::vector<float> target = random_vector(size_of(n), seed + 3, 0.0f, 1.0f);
        const std::vector<double> a_d = to_double(a), b_d = to_double(b), p_d = to_double(prediction),
                                  t_d = to_double(target);
        // The kernels and references both sum in double (in different orders, ~1e-16
        // relative apart) and round once to float: 2^-24 relative, doubled for margin. The
        // atol covers a mean that is itself ~0 (values in [-1, 1), mean ~ 1/sqrt(n)).
        constexpr double rtol = 1.2e-7, atol = 1e-12;
        {
            const std::string what = describe("mean_forward", {n}, seed);
            const float actual = run_scalar([&](float* r) { sga::cpu::mean_forward(ctx, n, a.data(), r); }, what);
            require_close(std::vector<float>{actual}, std::vector<double>{sga::reference::mean_forward<double>(n, a_d.data())},
                          rtol, atol, what);
        }
        {
            const std::string what = describe("bce_loss_forward", {n}, seed);
            const float actual = run_scalar(
                [&](float* r) { sga::cpu::bce_loss_forward(ctx, n, prediction.data(), target.data(), r); }, what);
            require_close(std::vector<float>{actual},
                          std::vector<double>{sga::reference::bce_loss_forward<double>(n, p_d.data(), t_d.data())},
                          rtol, atol, what);
        }
        {
            const std::string what = describe("l1_loss_forward", {n}, seed);
            const float actual =
                run_scalar([&](float* r) { sga::cpu::l1_loss_forward(ctx, n, a.data(), b.data(), r); }, what);
            require_close(std::vector<float>{actual},
                          std::vector<double>{sga::reference::l1_loss_forward<double>(n, a_d.data(), b_d.data())},
                          rtol, atol, what);
        }
        {
            const std::string what = describe("mse_loss_forward", {n}, seed);
            const float actual =
                run_scalar([&](float* r) { sga::cpu::mse_loss_forward(ctx, n, a.data(), b.data(), r); }, what);
            require_close(std::vector<float>{actual},
                          std::vector<double>{sga::reference::mse_loss_forward<double>(n, a_d.data(), b_d.data())},
                          rtol, atol, what);
        }
    }
}

TEST_CASE("reductions give the same bits for any thread count", "[cpu][losses]") {
    sga::Context ctx(sga::Device::Cpu);
    const std::int64_t n = (std::int64_t{1} << 20) + 3;
    const std::vector<float> a = random_vector(size_of(n), 1500), b = random_vector(size_of(n), 1501);
    auto run_all = [&] {
        std::vector<float> results(4);
        sga::cpu::mean_forward(ctx, n, a.data(), &results[0]);
        sga::cpu::l1_loss_forward(ctx, n, a.data(), b.data(), &results[1]);
        sga::cpu::mse_loss_forward(ctx, n, a.data(), b.data(), &results[2]);
        sga::cpu::per_sample_mse(ctx, 1, n, a.data(), b.data(), &results[3]);
        return results;
    };
    // sga::cpu::* directly, below the dispatcher's CpuThreadLease: set the team size here.
    const int initial = omp_get_max_threads();
    const std::vector<float> with_default = run_all();
    omp_set_num_threads(1);
    const std::vector<float> with_one = run_all();
    omp_set_num_threads(3);
    const std::vector<float> with_three = run_all();
    omp_set_num_threads(initial);
    REQUIRE(with_default == with_one);
    REQUIRE(with_default == with_three);
}

TEST_CASE("loss backwards match the reference, accumulate and skip null outputs", "[cpu][losses]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 1600;
    for (const std::int64_t n : elementwise_sizes) {
        ++seed;
        std::vector<float> a = random_vector(size_of(n), seed), b = random_vector(size_of(n), seed + 1);
        // Ties: L1's gradient is 0 there (sign(0) = 0), MSE's is 0 as well.
        for (std::size_t i = 0; i < a.size(); i += 7) b[i] = a[i];
        const std::vector<float> prediction = random_vector(size_of(n), seed + 2, 0.01f, 0.99f);
        const std::vector<float> target = random_vector(size_of(n), seed + 3, 0.0f, 1.0f);
        const std::vector<float> grad_a0 = random_vector(size_of(n), seed + 4), grad_b0 = random_vector(size_of(n), seed + 5);
        const std::vector<float> grad_loss = {1.75f};
        const std::vector<double> a_d = to_double(a), b_d = to_double(b), p_d = to_double(prediction),
                                  t_d = to_double(target);
        // init + g: the gradient term is computed (in double or float) and rounded, then
        // added in float: two roundings relative to the larger of |init| ~ 1 and |g|.
        constexpr double rtol = 1e-6, atol = 2e-7;
        {
            const std::string what = describe("bce_loss_backward", {n}, seed);
            std::vector<double> expected = to_double(grad_a0);
            sga::reference::bce_loss_backward<double>(n, p_d.data(), t_d.data(), grad_loss[0], expected.data());
            Guarded grad(grad_a0);
            sga::cpu::bce_loss_backward(ctx, n, prediction.data(), target.data(), grad_loss.data(), grad.data());
            require_close(grad.values(), expected, rtol, atol, what);
            grad.require_guards_intact(what);
        }
        for (const bool l1 : {true, false}) {
            std::vector<double> expected_a = to_double(grad_a0), expected_b = to_double(grad_b0);
            if (l1)
                sga::reference::l1_loss_backward<double>(n, a_d.data(), b_d.data(), grad_loss[0], expected_a.data(),
                                                         expected_b.data());
            else
                sga::reference::mse_loss_backward<double>(n, a_d.data(), b_d.data(), grad_loss[0], expected_a.data(),
                                                          expected_b.data());
            for (int mask = 0; mask < 4; ++mask) {
                const std::string what =
                    describe(std::string(l1 ? "l1_loss_backward" : "mse_loss_backward") + " outputs mask " + std::to_string(mask),
                             {n}, seed);
                Guarded grad_a(grad_a0), grad_b(grad_b0);
                float* grad_a_pointer = (mask & 1) ? grad_a.data() : nullptr;
                float* grad_b_pointer = (mask & 2) ? grad_b.data() : nullptr;
                if (l1)
                    sga::cpu::l1_loss_backward(ctx, n, a.data(), b.data(), grad_loss.data(), grad_a_pointer, grad_b_pointer);
                else
                    sga::cpu::mse_loss_backward(ctx, n, a.data(), b.data(), grad_loss.data(), grad_a_pointer, grad_b_pointer);
                if (mask & 1)
                    require_close(grad_a.values(), expected_a, rtol, atol, what + " grad_a");
                else
                    REQUIRE(grad_a.values() == grad_a0);
                if (mask & 2)
                    require_close(grad_b.values(), expected_b, rtol, atol, what + " grad_b");
                else
                    REQUIRE(grad_b.values() == grad_b0);
                // Exactly nothing added at ties.
                const std::vector<float> ga = grad_a.values(), gb = grad_b.values();
                std::size_t changed_at_ties = 0;
                for (std::size_t i = 0; i < a.size(); i += 7)
                    changed_at_ties += (ga[i] != grad_a0[i]) + (gb[i] != grad_b0[i]);
                REQUIRE(changed_at_ties == 0);
                grad_a.require_guards_intact(what + " grad_a");
                grad_b.require_guards_intact(what + " grad_b");
            }
        }
    }
}

TEST_CASE("per_sample_mse matches the reference", "[cpu][losses]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 1700;
    for (const auto& [batch, sample_size] : std::vector<std::pair<std::int64_t, std::int64_t>>{
             {1, 1}, {1, 7}, {3, 5}, {2, 1001}, {64, 3 * 32 * 32}}) {
        ++seed;
        const std::string what = describe("per_sample_mse", {batch, sample_size}, seed);
        const std::vector<float> a = random_vector(size_of(batch * sample_size), seed);
        const std::vector<float> b = random_vector(size_of(batch * sample_size), seed + 1);
        Guarded result(size_of(batch));
        sga::cpu::per_sample_mse(ctx, batch, sample_size, a.data(), b.data(), result.data());
        const std::vector<double> a_d = to_double(a), b_d = to_double(b);
        std::vector<double> expected(size_of(batch));
        sga::reference::per_sample_mse<double>(batch, sample_size, a_d.data(), b_d.data(), expected.data());
        // Sum in double, one rounding to float.
        require_close(result.values(), expected, 1.2e-7, 0.0, what);
        result.require_guards_intact(what);
    }
}

TEST_CASE("loss and mean reference gradients match finite differences", "[cpu][losses][gradient]") {
    const std::int64_t n = 17;
    const std::uint64_t seed = 1800;
    const double grad_loss = 1.3;
    std::vector<double> a = to_double(random_vector(size_of(n), seed)), b = to_double(random_vector(size_of(n), seed + 1));
    // Keep clear of L1's kink at a == b.
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::abs(a[i] - b[i]) < 1e-2) a[i] = b[i] + 0.5;
    std::vector<double> prediction = to_double(random_vector(size_of(n), seed + 2, 0.05f, 0.95f));
    const std::vector<double> target = to_double(random_vector(size_of(n), seed + 3, 0.0f, 1.0f));
    const std::string what = describe("loss gradient check", {n}, seed);

    {
        auto loss = [&] { return grad_loss * sga::reference::mean_forward<double>(n, a.data()); };
        std::vector<double> grad(size_of(n), 0.0);
        // mean's backward is accumulate_broadcast with scale 1/n.
        sga::reference::accumulate_broadcast<double>(n, 1.0 / static_cast<double>(n), grad_loss, grad.data());
        require_close(grad, numeric_gradient(a, loss), fd_rtol, fd_atol, what + " mean");
    }
    {
        auto loss = [&] { return grad_loss * sga::reference::bce_loss_forward<double>(n, prediction.data(), target.data()); };
        std::vector<double> grad(size_of(n), 0.0);
        sga::reference::bce_loss_backward<double>(n, prediction.data(), target.data(), grad_loss, grad.data());
        require_close(grad, numeric_gradient(prediction, loss), fd_rtol, fd_atol, what + " bce");
    }
    for (const bool l1 : {true, false}) {
        auto loss = [&] {
            return grad_loss * (l1 ? sga::reference::l1_loss_forward<double>(n, a.data(), b.data())
                                   : sga::reference::mse_loss_forward<double>(n, a.data(), b.data()));
        };
        std::vector<double> grad_a(size_of(n), 0.0), grad_b(size_of(n), 0.0);
        if (l1)
            sga::reference::l1_loss_backward<double>(n, a.data(), b.data(), grad_loss, grad_a.data(), grad_b.data());
        else
            sga::reference::mse_loss_backward<double>(n, a.data(), b.data(), grad_loss, grad_a.data(), grad_b.data());
        require_close(grad_a, numeric_gradient(a, loss), fd_rtol, fd_atol, what + (l1 ? " l1 a" : " mse a"));
        require_close(grad_b, numeric_gradient(b, loss), fd_rtol, fd_atol, what + (l1 ? " l1 b" : " mse b"));
    }
}

TEST_CASE("bce_loss clamps its logs at -100 like PyTorch", "[cpu][losses]") {
    sga::Context ctx(sga::Device::Cpu);
    // p = 0 with t = 1 and p = 1 with t = 0 each cost the clamp value 100; the agreeing
    // pairs cost 0 (0 * -100, not 0 * -inf = NaN).
    const std::vector<float> prediction = {0.0f, 1.0f, 0.0f, 1.0f};
    const std::vector<float> target = {1.0f, 0.0f, 0.0f, 1.0f};
    float loss = 0.0f;
    sga::cpu::bce_loss_forward(ctx, 4, prediction.data(), target.data(), &loss);
    REQUIRE(std::isfinite(loss));
    CHECK(loss == Approx(50.0f));
    sga::cpu::bce_loss_forward(ctx, 1, prediction.data(), target.data(), &loss);
    CHECK(loss == Approx(100.0f));
    sga::cpu::bce_loss_forward(ctx, 1, prediction.data() + 2, target.data() + 2, &loss);
    CHECK(loss == 0.0f);

    // The backward divides by max(p (1 - p), 1e-12): huge but finite, and signed right.
    const std::vector<float> grad_loss = {1.0f};
    std::vector<float> grad(4, 0.0f);
    sga::cpu::bce_loss_backward(ctx, 4, prediction.data(), target.data(), grad_loss.data(), grad.data());
    std::vector<double> expected(4, 0.0);
    const std::vector<double> p_d = to_double(prediction), t_d = to_double(target);
    sga::reference::bce_loss_backward<double>(4, p_d.data(), t_d.data(), 1.0, expected.data());
    REQUIRE(std::all_of(grad.begin(), grad.end(), [](float g) { return std::isfinite(g); }));
    CHECK(grad[0] < -1e10f);
    CHECK(grad[1] > 1e10f);
    CHECK(grad[2] == 0.0f);
    CHECK(grad[3] == 0.0f);
    require_close(grad, expected, 1e-6, 0.0, "bce_loss_backward at p = 0 and 1");
}

// ---------------------------------------------------------------------------------------
// Adam

TEST_CASE("adam_step over three steps matches the reference", "[cpu][adam]") {
    sga::Context ctx(sga::Device::Cpu);
    std::uint64_t seed = 1900;
    const sga::AdamHyperparameters ganomaly{};  // lr 2e-4, betas (0.5, 0.999), eps 1e-8
    const sga::AdamHyperparameters fast{1e-2f, 0.9f, 0.999f, 1e-8f};
    for (const sga::AdamHyperparameters& hyper : {ganomaly, fast}) {
        for (const std::int64_t n : elementwise_sizes) {
            ++seed;
            const std::string what = describe("adam_step lr " + std::to_string(hyper.learning_rate), {n}, seed);
            const std::vector<float> parameters0 = random_vector(size_of(n), seed);
            Guarded parameters(parameters0), first(size_of(n), 0.0f), second(size_of(n), 0.0f);
            std::vector<double> expected_parameters = to_double(parameters0), expected_first(size_of(n), 0.0),
                                expected_second(size_of(n), 0.0);
            for (std::int64_t step = 1; step <= 3; ++step) {
                std::vector<float> gradients = random_vector(size_of(n), seed + 10 * static_cast<std::uint64_t>(step));
                // A zero gradient on a fresh moment must give a zero update, not 0/0.
                if (step == 1) gradients[0] = 0.0f;
                const std::vector<double> gradients_d = to_double(gradients);
                sga::cpu::adam_step(ctx, n, hyper, step, parameters.data(), gradients.data(), first.data(),
                                    second.data());
                sga::reference::adam_step<double>(n, hyper, step, expected_parameters.data(), gradients_d.data(),
                                                  expected_first.data(), expected_second.data());
                const std::string step_what = what + " step " + std::to_string(step);
                // Moments: a few float roundings per step. b1 m and (1 - b1) g are O(1) and
                // can cancel, so the first moment's error is a few ulps of 1, not of itself.
                require_close(first.values(), expected_first, 1e-6, 2e-7, step_what + " first_moment");
                require_close(second.values(), expected_second, 1e-5, 1e-12, step_what + " second_moment");
                // Parameters ~1 are stored in float: each step rounds to 2^-24 ~ 6e-8; the
                // update (~lr) is off by ~1e-6 relative. A 1% error in the update (>= 2e-6)
                // would still fail.
                require_close(parameters.values(), expected_parameters, 0.0, 5e-7, step_what + " parameters");
                parameters.require_guards_intact(step_what + " parameters");
                first.require_guards_intact(step_what + " first_moment");
                second.require_guards_intact(step_what + " second_moment");
            }
        }
    }
}

TEST_CASE("adam_step's first update is lr times the gradient's sign", "[cpu][adam]") {
    // With zero moments the bias corrections cancel: m_hat = g, v_hat = g^2, so the update is
    // lr * g / (|g| + eps): a check of the bias-correction formula independent of the reference.
    sga::Context ctx(sga::Device::Cpu);
    const sga::AdamHyperparameters hyper{1e-3f, 0.5f, 0.999f, 1e-8f};
    const std::vector<float> gradients = {0.5f, -2.0f, 1e-3f};
    std::vector<float> parameters = {1.0f, 1.0f, 1.0f}, first(3, 0.0f), second(3, 0.0f);
    sga::cpu::adam_step(ctx, 3, hyper, 1, parameters.data(), gradients.data(), first.data(), second.data());
    CHECK(parameters[0] == Approx(1.0 - 1e-3).epsilon(1e-6));
    CHECK(parameters[1] == Approx(1.0 + 1e-3).epsilon(1e-6));
    CHECK(parameters[2] == Approx(1.0 - 1e-3).epsilon(1e-6));
}

TEST_CASE("the dispatcher reaches the CPU kernels", "[cpu]") {
    sga::Context ctx(sga::Device::Cpu);
    std::vector<float> values(5, 1.0f);
    float mean = 0.0f;
    sga::kernels::fill(ctx, 5, 2.5f, values.data());
    sga::kernels::mean_forward(ctx, 5, values.data(), &mean);
    REQUIRE(mean == 2.5f);
}
