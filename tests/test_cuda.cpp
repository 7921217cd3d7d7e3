// The CUDA backend against the CPU backend: every kernel of kernels.def runs on a CPU
// context and on a CUDA context with identical seeded inputs (several shapes: batch 1, odd
// sizes, the model's shapes), the results are copied back and compared with explicit
// tolerances. Every device buffer sits between guard bands of a sentinel value, checked
// after each kernel, and inputs are checked to be left untouched. The CPU kernels are the
// reference here (they are tested against the naive twins in test_kernels_cpu.cpp and
// test_conv2d_cpu.cpp).
//
// Without a GPU (or without the CUDA backend) each test prints "SKIPPED: ..." and returns;
// CTest reports those as skipped (SKIP_REGULAR_EXPRESSION in tests/CMakeLists.txt). Only the
// [no-gpu] tests at the end run everywhere: they check what needs no device.
//
// Tolerances, per element |gpu - cpu| <= atol + rtol |cpu| (reference.hpp's require_close):
// - Data movement (concat, fill, copies): exact.
// - Elementwise float arithmetic: rtol 1e-6 (8 float ulps). Both backends do the same float
//   operations, but either compiler may contract a * b + c into an fma (1 ulp apart), and
//   the device's tanhf/expf are within 2 ulp of glibc's.
// - Random fills: rtol 2.5e-7 (2 ulps). Both evaluate the same double expression; the
//   device's double log/sin/cos may differ from glibc's in the last double bit, which the
//   rounding to float hides except at a rounding boundary, where it moves one float ulp.
// - Reductions to a scalar and batch norm statistics: both backends accumulate in double (in
//   different orders: the error of that is ~n 1e-16, nothing at float precision), so results
//   agree to the final rounding to float; rtol 1e-6. Batch norm outputs and input gradients
//   are x * scale + shift of float coefficients that may each differ by an ulp, and
//   cancellation near x = mean turns that into an absolute error of about an ulp of
//   |x * scale|: atol 1e-5 for values of order 1-10.
// - Convolutions: rtol 1e-4 and atol 1e-4 * rms(reference). cuDNN (FP32 FMA math, no TF32)
//   and Eigen sum the L = Cin*KH*KW (or N*OH*OW for the filter gradient) products in
//   different orders and cuDNN may use Winograd or FFT algorithms, whose error is relative
//   to the magnitude of the whole output rather than of each element: an output near zero
//   is the cancellation of terms of size ~rms and carries their absolute error. The
//   normalised error ||gpu - cpu|| / ||cpu|| must also stay under 2e-5 (FP32 GEMM-like
//   algorithms reach ~1e-7, FFT and Winograd ~1e-6; TF32 would show ~5e-4).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "reference.hpp"
#include "test_support.hpp"
#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/engine/kernels.hpp"
#include "skipganomaly/engine/memory.hpp"
#include "skipganomaly/engine/tensor.hpp"
#if SKIPGANOMALY_WITH_CUDA
#include "cuda/module.hpp"
#endif

namespace {

using sga::testing::random_vector;
using sga::testing::require_close;

using sga::testing::skip_without_gpu;

constexpr float not_a_number = std::numeric_limits<float>::quiet_NaN();

// ---- guarded buffers -------------------------------------------------------------------

// 64 floats (256 bytes) each side: wider than any block's stray index would plausibly
// reach past the end, and it keeps data() 256-byte aligned like a fresh cudaMalloc.
constexpr std::size_t guard_size = 64;
constexpr float sentinel = -12345.678f;

// `values` on `ctx`'s device, between two guard bands of `sentinel`. Written and read back
// on ctx's stream: see values().
class GuardedBuffer {
public:
    GuardedBuffer(const std::vector<float>& values, sga::Context& ctx)
        : ctx_(&ctx),
          size_(values.size()),
          storage_(sga::Shape{static_cast<std::int64_t>(values.size() + 2 * guard_size)}, ctx.device()) {
        std::vector<float> host(values.size() + 2 * guard_size, sentinel);
        std::copy(values.begin(), values.end(), host.begin() + guard_size);
        sga::copy_bytes(ctx, storage_.data(), ctx.device(), host.data(), sga::Device::Cpu, host.size() * sizeof(float));
    }

    float* data() const { return storage_.data() + guard_size; }

    // The values between the guard bands, after requiring both bands intact. Read on the
    // buffer's context's stream after synchronising that stream only, so that a kernel
    // launched on the wrong stream is caught: the context-free copy_bytes() runs on the
    // legacy default stream, which waits for every context's stream (each is a blocking
    // stream), so a kernel queued on another context's stream, or on a stream of its own,
    // would have finished before that copy and passed. Here nothing waits for it: the copy
    // reads the output before or while that kernel writes it, so the output still holds
    // its start values (NaN, or values the kernel must change) and fails the comparison, or
    // it changes afterwards, which the second read below (through copy_bytes(), after every
    // context's work) reports. A kernel that finishes before the host gets here is missed;
    // a launch on the legacy default stream itself (no stream argument) is ordered with the
    // context's stream and cannot be seen from here: the [no-gpu] test "every kernel launch
    // in src/cuda names the context's stream" finds that one in the source.
    std::vector<float> values(const std::string& what) const {
        ctx_->synchronize();
        const std::vector<float> host = sga::host_values(*ctx_, storage_.view());
        if (ctx_->device() == sga::Device::Cuda) {
            const std::vector<float> settled = sga::Tensor::host_values(storage_.view());
            INFO(what << ": the buffer changed after its context's stream was synchronised (a kernel wrote it on "
                         "another stream)");
            REQUIRE(std::memcmp(settled.data(), host.data(), host.size() * sizeof(float)) == 0);
        }
        return checked(host, what);
    }

    // Read through the context-free copy_bytes(), without synchronising anything first: it
    // must be ordered after the work of every context (runtime.cpp).
    std::vector<float> values_through_copy_bytes(const std::string& what) const {
        return checked(sga::Tensor::host_values(storage_.view()), what);
    }

private:
    std::vector<float> checked(const std::vector<float>& host, const std::string& what) const {
        std::size_t damaged = 0, first_damaged = 0;
        for (std::size_t i = 0; i < guard_size; ++i) {
            for (const std::size_t at : {i, guard_size + size_ + i}) {
                if (std::memcmp(&host[at], &sentinel, sizeof(float)) != 0 && damaged++ == 0) first_damaged = at;
            }
        }
        INFO(what << " on " << sga::to_string(storage_.device()) << ": " << damaged
                  << " guard floats overwritten, the first at offset "
                  << static_cast<long long>(first_damaged) - static_cast<long long>(guard_size));
        REQUIRE(damaged == 0);
        return {host.begin() + static_cast<std::ptrdiff_t>(guard_size),
                host.begin() + static_cast<std::ptrdiff_t>(guard_size + size_)};
    }

    sga::Context* ctx_;
    std::size_t size_;
    sga::Tensor storage_;
};

enum class Side { Cpu, Cuda };

struct Backends {
    sga::Context cpu{sga::Device::Cpu, 7};
    sga::Context cuda{sga::Device::Cuda, 7};

    // Runs call(context, side) on the CPU, then on the GPU.
    template <class Call>
    void run(Call&& call) {
        call(cpu, Side::Cpu);
        call(cuda, Side::Cuda);
    }
};

// The same values on both backends, each on its context of `backends` (which must outlive it).
class Pair {
public:
    Pair(Backends& backends, const std::vector<float>& values)
        : original_(values), cpu_(values, backends.cpu), cuda_(values, backends.cuda) {}

    float* operator[](Side side) const { return side == Side::Cpu ? cpu_.data() : cuda_.data(); }

    std::vector<float> cpu_values(const std::string& what) const { return cpu_.values(what); }
    std::vector<float> cuda_values(const std::string& what) const { return cuda_.values(what); }

    // The CUDA result against the CPU result (both guard bands checked).
    void require_match(double rtol, double atol, const std::string& what) const {
        require_close(cuda_values(what), cpu_values(what), rtol, atol, what);
    }
    // Bit-for-bit equal on both backends.
    void require_identical(const std::string& what) const { require_match(0.0, 0.0, what); }
    // An input a kernel must not write: unchanged, bit for bit, on the device.
    void require_unchanged(const std::string& what) const {
        const std::vector<float> now = cuda_values(what);
        INFO(what << ": a kernel input was modified");
        REQUIRE(std::memcmp(now.data(), original_.data(), now.size() * sizeof(float)) == 0);
    }

private:
    std::vector<float> original_;
    GuardedBuffer cpu_;
    GuardedBuffer cuda_;
};

std::string describe(const std::string& kernel, const std::vector<std::int64_t>& shape, std::uint64_t seed) {
    std::string s = kernel + " shape (";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ") seed " + std::to_string(seed);
}

std::size_t size_of(std::int64_t n) { return static_cast<std::size_t>(n); }

constexpr double elementwise_rtol = 1e-6, elementwise_atol = 1e-7;
constexpr double random_rtol = 2.5e-7, random_atol = 1e-12;
constexpr double reduction_rtol = 1e-6, reduction_atol = 1e-9;
constexpr double batch_norm_rtol = 1e-6, batch_norm_atol = 1e-5;
constexpr double conv_rtol = 1e-4, conv_rms_atol = 1e-4, conv_normalised_error = 2e-5;

}  // namespace

// ---------------------------------------------------------------------------------------
// convolution

namespace {

sga::ConvGeometry geometry(std::int64_t batch, std::int64_t in_channels, std::int64_t in_height, std::int64_t in_width,
                           std::int64_t out_channels, std::int64_t kernel, std::int64_t stride, std::int64_t padding) {
    sga::ConvGeometry g;
    g.batch = batch;
    g.in_channels = in_channels;
    g.in_height = in_height;
    g.in_width = in_width;
    g.out_channels = out_channels;
    g.kernel_height = g.kernel_width = kernel;
    g.stride = stride;
    g.padding = padding;
    g.out_height = sga::ConvGeometry::output_extent(in_height, kernel, stride, padding);
    g.out_width = sga::ConvGeometry::output_extent(in_width, kernel, stride, padding);
    return g;
}

// Odd and degenerate geometries, then every convolution of the model (at batch 8 to keep
// the CPU side quick; the benchmark covers batch 64). A transposed convolution of the
// decoder (Cin_t -> Cout_t, h -> 2h) is the backward-data of the convolution
// (Cout_t @ 2h -> Cin_t @ h), listed here by that convolution's geometry.
std::vector<sga::ConvGeometry> conv_geometries() {
    const std::int64_t b = 8;
    return {
        geometry(1, 3, 7, 5, 5, 3, 1, 1),    // batch 1, non-square, odd
        geometry(3, 5, 9, 9, 7, 4, 2, 1),    // odd input under stride 2
        geometry(2, 4, 6, 6, 3, 4, 1, 0),    // no padding
        geometry(1, 1, 1, 1, 1, 3, 1, 1),    // one pixel, mostly padding
        geometry(2, 6, 5, 8, 4, 2, 2, 0),    // even kernel, non-square
        geometry(b, 3, 32, 32, 64, 4, 2, 1),    // encoder 1 (and discriminator 1)
        geometry(b, 64, 16, 16, 128, 4, 2, 1),  // encoder 2, discriminator 2
        geometry(b, 128, 8, 8, 256, 4, 2, 1),   // encoder 3, discriminator 3
        geometry(b, 256, 4, 4, 512, 4, 2, 1),   // encoder 4
        geometry(b, 512, 2, 2, 512, 4, 2, 1),   // encoder 5; decoder 512 -> 512 (1x1 -> 2x2)
        geometry(b, 256, 4, 4, 1024, 4, 2, 1),  // decoder 1024 -> 256 (2x2 -> 4x4)
        geometry(b, 128, 8, 8, 512, 4, 2, 1),   // decoder 512 -> 128 (4x4 -> 8x8)
        geometry(b, 64, 16, 16, 256, 4, 2, 1),  // decoder 256 -> 64 (8x8 -> 16x16)
        geometry(b, 3, 32, 32, 128, 4, 2, 1),   // decoder 128 -> 3 (16x16 -> 32x32)
        geometry(b, 256, 4, 4, 100, 4, 1, 0),   // discriminator 256 -> 100 (4x4 -> 1x1)
        geometry(b, 100, 1, 1, 1, 3, 1, 1),     // discriminator 100 -> 1 (1x1, k3 p1)
    };
}

std::vector<std::int64_t> shape_of(const sga::ConvGeometry& g) {
    return {g.batch,        g.in_channels, g.in_height, g.in_width, g.out_channels,
            g.kernel_height, g.stride,     g.padding};
}

void require_conv_match(const Pair& result, const std::string& what) {
    const std::vector<float> cpu = result.cpu_values(what);
    const std::vector<float> cuda = result.cuda_values(what);
    double squares = 0.0, error_squares = 0.0;
    for (std::size_t i = 0; i < cpu.size(); ++i) {
        squares += static_cast<double>(cpu[i]) * cpu[i];
        const double error = static_cast<double>(cuda[i]) - cpu[i];
        error_squares += error * error;
    }
    const double rms = std::sqrt(squares / static_cast<double>(std::max<std::size_t>(cpu.size(), 1)));
    require_close(cuda, cpu, conv_rtol, conv_rms_atol * rms, what);
    const double normalised = std::sqrt(error_squares / std::max(squares, 1e-300));
    INFO(what << ": normalised error " << normalised);
    REQUIRE(normalised <= conv_normalised_error);  // NaN fails too
}

}  // namespace

TEST_CASE("cuda convolution primitives match the CPU, overwriting (beta 0) and accumulating (beta 1)",
          "[cuda][conv2d]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 1000;
    for (const sga::ConvGeometry& g : conv_geometries()) {
        for (const float beta : {0.0f, 1.0f}) {
            ++seed;
            const Pair input(backends, random_vector(size_of(g.input_size()), seed));
            const Pair weight(backends, random_vector(size_of(g.weight_size()), seed + 100000));
            const Pair grad_output(backends, random_vector(size_of(g.output_size()), seed + 200000));
            // beta 0 must ignore what the output held, NaN included.
            auto initial = [&](std::int64_t n, std::uint64_t s) {
                return beta == 0.0f ? std::vector<float>(size_of(n), not_a_number) : random_vector(size_of(n), s);
            };
            const std::string suffix = " beta " + std::to_string(static_cast<int>(beta));

            const Pair output(backends, initial(g.output_size(), seed + 300000));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::conv2d_forward(ctx, g, input[s], weight[s], output[s], beta);
            });
            require_conv_match(output, describe("conv2d_forward", shape_of(g), seed) + suffix);

            const Pair grad_input(backends, initial(g.input_size(), seed + 400000));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::conv2d_backward_data(ctx, g, grad_output[s], weight[s], grad_input[s], beta);
            });
            require_conv_match(grad_input, describe("conv2d_backward_data", shape_of(g), seed) + suffix);

            const Pair grad_weight(backends, initial(g.weight_size(), seed + 500000));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::conv2d_backward_filter(ctx, g, input[s], grad_output[s], grad_weight[s], beta);
            });
            require_conv_match(grad_weight, describe("conv2d_backward_filter", shape_of(g), seed) + suffix);

            const std::string what = describe("conv2d inputs", shape_of(g), seed);
            input.require_unchanged(what + " input");
            weight.require_unchanged(what + " weight");
            grad_output.require_unchanged(what + " grad_output");
        }
    }
}

// The prepared path at batch 1 and 4 (scoring one image): each backend prepares what it keeps
// of the weight (the CPU: the active taps where some read only padding; CUDA: nothing) and
// computes both passes.
TEST_CASE("cuda packed convolutions match the CPU's", "[cuda][conv2d][packed]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 7000;
    for (sga::ConvGeometry g : conv_geometries()) {
        for (const std::int64_t batch : {std::int64_t{1}, std::int64_t{4}}) {
            g.batch = batch;
            ++seed;
            const Pair weight(backends, random_vector(size_of(g.weight_size()), seed));
            for (const sga::ConvPass pass : {sga::ConvPass::Forward, sga::ConvPass::BackwardData}) {
                const bool forward = pass == sga::ConvPass::Forward;
                const std::int64_t in_size = forward ? g.input_size() : g.output_size();
                const std::int64_t out_size = forward ? g.output_size() : g.input_size();
                const Pair input(backends, random_vector(size_of(in_size), seed + 100000));
                const Pair output(backends, std::vector<float>(size_of(out_size), not_a_number));
                backends.run([&](sga::Context& ctx, Side s) {
                    const sga::Tensor packed({sga::kernels::conv2d_packed_floats(ctx.device(), g, pass)}, ctx.device());
                    sga::kernels::conv2d_pack_weight(ctx, g, pass, weight[s], packed.data());
                    sga::kernels::conv2d_packed(ctx, g, pass, input[s], weight[s], packed.data(), output[s]);
                    ctx.synchronize();
                });
                require_conv_match(output, describe(forward ? "conv2d_packed forward" : "conv2d_packed backward-data",
                                                    shape_of(g), seed));
                weight.require_unchanged("conv2d_packed weight");
                input.require_unchanged("conv2d_packed input");
            }
        }
    }
}

namespace {
// The model's convolutions at the official batch 64 and larger images, where cuDNN picks
// other algorithms than at 32 x 32 (FFT tiling, Winograd and implicit GEMM variants by
// shape): for isize s (ngf = ndf = 64) the generator's first encoder level (3 -> 64,
// s -> s/2) and second (64 -> 128, s/2 -> s/4), the decoder's outermost transposed
// convolution (128 -> 3, s/2 -> s, listed as the convolution 3 @ s -> 128 @ s/2) and its
// second (256 -> 64, s/4 -> s/2, as 64 @ s/2 -> 256 @ s/4), and the discriminator's final
// 4 x 4 -> 1 x 1 (512 -> 100 at s 64, 2048 at s 256: ndf doubles per level).
std::vector<sga::ConvGeometry> large_conv_geometries(std::int64_t s) {
    const std::int64_t b = 64;
    std::int64_t final_width = 64;
    for (std::int64_t size = s / 2; size > 4; size /= 2) final_width *= 2;
    return {
        geometry(b, 3, s, s, 64, 4, 2, 1),
        geometry(b, 64, s / 2, s / 2, 128, 4, 2, 1),
        geometry(b, 3, s, s, 128, 4, 2, 1),
        geometry(b, 64, s / 2, s / 2, 256, 4, 2, 1),
        geometry(b, final_width, 4, 4, 100, 4, 1, 0),
    };
}
}  // namespace

TEST_CASE("cuda convolutions match the CPU at batch 64 and isize 64, 128 and 256", "[cuda][conv2d][large]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 9000;
    for (const std::int64_t s : {64, 128, 256}) {
        for (const sga::ConvGeometry& g : large_conv_geometries(s)) {
            ++seed;
            const Pair input(backends, random_vector(size_of(g.input_size()), seed));
            const Pair weight(backends, random_vector(size_of(g.weight_size()), seed + 100000));
            const Pair grad_output(backends, random_vector(size_of(g.output_size()), seed + 200000));
            const std::string suffix = " (isize " + std::to_string(s) + ")";
            const Pair output(backends, std::vector<float>(size_of(g.output_size()), not_a_number));
            backends.run([&](sga::Context& ctx, Side side) {
                sga::kernels::conv2d_forward(ctx, g, input[side], weight[side], output[side], 0.0f);
            });
            require_conv_match(output, describe("conv2d_forward", shape_of(g), seed) + suffix);
            const Pair grad_input(backends, std::vector<float>(size_of(g.input_size()), not_a_number));
            backends.run([&](sga::Context& ctx, Side side) {
                sga::kernels::conv2d_backward_data(ctx, g, grad_output[side], weight[side], grad_input[side], 0.0f);
            });
            require_conv_match(grad_input, describe("conv2d_backward_data", shape_of(g), seed) + suffix);
            // Accumulating (beta 1) into random values: the filter gradient is the longest
            // reduction (N*OH*OW up to 64 * 128 * 128 terms).
            const Pair grad_weight(backends, random_vector(size_of(g.weight_size()), seed + 300000));
            backends.run([&](sga::Context& ctx, Side side) {
                sga::kernels::conv2d_backward_filter(ctx, g, input[side], grad_output[side], grad_weight[side], 1.0f);
            });
            require_conv_match(grad_weight, describe("conv2d_backward_filter", shape_of(g), seed) + suffix);
            input.require_unchanged(describe("conv2d input", shape_of(g), seed));
        }
    }
}

TEST_CASE("cuda convolutions are deterministic and reject bad geometry and beta", "[cuda][conv2d]") {
    if (skip_without_gpu()) return;
    Backends backends;
    const sga::ConvGeometry g = geometry(8, 64, 16, 16, 128, 4, 2, 1);
    const Pair input(backends, random_vector(size_of(g.input_size()), 5));
    const Pair grad_output(backends, random_vector(size_of(g.output_size()), 6));
    // The filter gradient is the reduction over N*OH*OW where a non-deterministic (atomics)
    // algorithm would show: two runs must give the same bits.
    std::vector<float> first;
    for (int run = 0; run < 2; ++run) {
        const Pair grad_weight(backends, std::vector<float>(size_of(g.weight_size()), 0.0f));
        sga::kernels::conv2d_backward_filter(backends.cuda, g, input[Side::Cuda], grad_output[Side::Cuda],
                                             grad_weight[Side::Cuda], 0.0f);
        const std::vector<float> values = grad_weight.cuda_values("conv2d_backward_filter determinism");
        if (run == 0)
            first = values;
        else
            REQUIRE(std::memcmp(first.data(), values.data(), first.size() * sizeof(float)) == 0);
    }

    const Pair output(backends, std::vector<float>(size_of(g.output_size()), 0.0f));
    const Pair weight(backends, random_vector(size_of(g.weight_size()), 7));
    sga::ConvGeometry bad = g;
    bad.out_height += 1;
    CHECK_THROWS_AS(sga::kernels::conv2d_forward(backends.cuda, bad, input[Side::Cuda], weight[Side::Cuda],
                                                 output[Side::Cuda], 0.0f),
                    sga::InvalidArgument);
    CHECK_THROWS_AS(sga::kernels::conv2d_forward(backends.cuda, g, input[Side::Cuda], weight[Side::Cuda],
                                                 output[Side::Cuda], 0.5f),
                    sga::InvalidArgument);
    output.cuda_values("conv2d_forward after rejected calls");
}

TEST_CASE("cuda add_channel_bias and its backward match the CPU", "[cuda][conv2d][bias]") {
    if (skip_without_gpu()) return;
    Backends backends;
    struct Shape3 {
        std::int64_t batch, channels, spatial;
    };
    std::uint64_t seed = 2000;
    for (const Shape3& shape : {Shape3{1, 1, 1}, Shape3{1, 3, 7}, Shape3{3, 5, 9}, Shape3{2, 7, 1},
                                Shape3{64, 64, 256}, Shape3{64, 512, 4}, Shape3{64, 3, 1024}}) {
        ++seed;
        const std::int64_t n = shape.batch * shape.channels * shape.spatial;
        const std::string what = describe("add_channel_bias", {shape.batch, shape.channels, shape.spatial}, seed);
        const Pair bias(backends, random_vector(size_of(shape.channels), seed));
        const Pair output(backends, random_vector(size_of(n), seed + 1));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::add_channel_bias(ctx, shape.batch, shape.channels, shape.spatial, bias[s], output[s]);
        });
        output.require_match(elementwise_rtol, elementwise_atol, what);
        bias.require_unchanged(what + " bias");

        const Pair grad_output(backends, random_vector(size_of(n), seed + 2));
        const Pair grad_bias(backends, random_vector(size_of(shape.channels), seed + 3));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::add_channel_bias_backward(ctx, shape.batch, shape.channels, shape.spatial, grad_output[s],
                                                    grad_bias[s]);
        });
        // A sum of N*HW terms: the CPU sums each plane in float, so scale atol with the
        // reduction length (float rounding of a sum of m terms of size ~1 is ~m * 6e-8).
        grad_bias.require_match(reduction_rtol, 1e-7 * static_cast<double>(shape.batch * shape.spatial),
                                what + " backward");
        grad_output.require_unchanged(what + " grad_output");
    }
}

// ---------------------------------------------------------------------------------------
// batch norm

namespace {
struct BatchNormShape {
    std::int64_t batch, channels, spatial;
};
// Batch 1, odd sizes, spatial 1, and the model's (batch 64) normalised activations.
const std::vector<BatchNormShape> batch_norm_shapes = {{1, 1, 2},    {1, 3, 5},     {2, 4, 9},   {3, 7, 1},
                                                       {5, 16, 49},  {64, 128, 64}, {64, 256, 16}, {64, 512, 4},
                                                       {64, 64, 256}};
constexpr float momentum = 0.1f, epsilon = 1e-5f;

// Values around 3 with spread 1: a one-pass E[x^2] - E[x]^2 variance would lose digits here.
std::vector<float> offset_values(std::size_t n, std::uint64_t seed) { return random_vector(n, seed, 2.0f, 4.0f); }
}  // namespace

TEST_CASE("cuda batch_norm_forward_training matches the CPU", "[cuda][batchnorm]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 3000;
    for (const BatchNormShape& shape : batch_norm_shapes) {
        for (const bool update_running : {true, false}) {
            ++seed;
            const std::int64_t n = shape.batch * shape.channels * shape.spatial;
            const std::size_t c = size_of(shape.channels);
            const std::string what = describe("batch_norm_forward_training", {shape.batch, shape.channels, shape.spatial},
                                              seed) + (update_running ? "" : " (no running stats)");
            const Pair input(backends, offset_values(size_of(n), seed));
            const Pair weight(backends, random_vector(c, seed + 1, 0.5f, 1.5f));
            const Pair bias(backends, random_vector(c, seed + 2, -0.5f, 0.5f));
            const Pair output(backends, std::vector<float>(size_of(n), not_a_number));
            const Pair saved_mean(backends, std::vector<float>(c, not_a_number));
            const Pair saved_inv_std(backends, std::vector<float>(c, not_a_number));
            const Pair running_mean(backends, random_vector(c, seed + 3));
            const Pair running_var(backends, random_vector(c, seed + 4, 0.5f, 1.5f));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::batch_norm_forward_training(ctx, shape.batch, shape.channels, shape.spatial, input[s],
                                                          weight[s], bias[s], output[s], saved_mean[s],
                                                          saved_inv_std[s], update_running ? running_mean[s] : nullptr,
                                                          update_running ? running_var[s] : nullptr, momentum,
                                                          epsilon);
            });
            output.require_match(batch_norm_rtol, batch_norm_atol, what + " output");
            saved_mean.require_match(reduction_rtol, reduction_atol, what + " saved_mean");
            saved_inv_std.require_match(reduction_rtol, reduction_atol, what + " saved_inv_std");
            running_mean.require_match(reduction_rtol, reduction_atol, what + " running_mean");
            running_var.require_match(reduction_rtol, reduction_atol, what + " running_var");
            if (!update_running) {
                running_mean.require_unchanged(what + " running_mean");
                running_var.require_unchanged(what + " running_var");
            }
            input.require_unchanged(what + " input");
        }
    }
}

TEST_CASE("cuda batch_norm_forward_training rejects one value per channel, like the CPU", "[cuda][batchnorm]") {
    if (skip_without_gpu()) return;
    Backends backends;
    const Pair values(backends, std::vector<float>(4, 1.0f));
    CHECK_THROWS_AS(sga::kernels::batch_norm_forward_training(backends.cuda, 1, 2, 1, values[Side::Cuda], nullptr,
                                                              nullptr, values[Side::Cuda], values[Side::Cuda],
                                                              values[Side::Cuda], nullptr, nullptr, momentum, epsilon),
                    sga::InvalidArgument);
}

TEST_CASE("cuda batch_norm_forward_inference matches the CPU", "[cuda][batchnorm]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 4000;
    for (const BatchNormShape& shape : batch_norm_shapes) {
        ++seed;
        const std::int64_t n = shape.batch * shape.channels * shape.spatial;
        const std::size_t c = size_of(shape.channels);
        const std::string what =
            describe("batch_norm_forward_inference", {shape.batch, shape.channels, shape.spatial}, seed);
        const Pair input(backends, offset_values(size_of(n), seed));
        const Pair weight(backends, random_vector(c, seed + 1, 0.5f, 1.5f));
        const Pair bias(backends, random_vector(c, seed + 2, -0.5f, 0.5f));
        const Pair running_mean(backends, random_vector(c, seed + 3, 2.5f, 3.5f));
        const Pair running_var(backends, random_vector(c, seed + 4, 0.1f, 1.5f));
        const Pair output(backends, std::vector<float>(size_of(n), not_a_number));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::batch_norm_forward_inference(ctx, shape.batch, shape.channels, shape.spatial, input[s],
                                                       weight[s], bias[s], running_mean[s], running_var[s], epsilon,
                                                       output[s]);
        });
        output.require_match(batch_norm_rtol, batch_norm_atol, what);
        input.require_unchanged(what + " input");
    }
}

TEST_CASE("cuda batch_norm_backward matches the CPU, accumulates and skips null outputs", "[cuda][batchnorm]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 5000;
    for (const BatchNormShape& shape : batch_norm_shapes) {
        for (int variant = 0; variant < 3; ++variant) {  // all outputs; no grad_input; only grad_input
            ++seed;
            const std::int64_t n = shape.batch * shape.channels * shape.spatial;
            const std::size_t c = size_of(shape.channels);
            const std::string what = describe("batch_norm_backward", {shape.batch, shape.channels, shape.spatial},
                                              seed) + " variant " + std::to_string(variant);
            const Pair input(backends, offset_values(size_of(n), seed));
            const Pair grad_output(backends, random_vector(size_of(n), seed + 1));
            const Pair weight(backends, random_vector(c, seed + 2, 0.5f, 1.5f));
            const Pair saved_mean(backends, random_vector(c, seed + 3, 2.5f, 3.5f));
            const Pair saved_inv_std(backends, random_vector(c, seed + 4, 0.5f, 2.0f));
            const Pair grad_input(backends, random_vector(size_of(n), seed + 5));
            const Pair grad_weight(backends, random_vector(c, seed + 6));
            const Pair grad_bias(backends, random_vector(c, seed + 7));
            const bool want_input = variant != 1, want_parameters = variant != 2;
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::batch_norm_backward(ctx, shape.batch, shape.channels, shape.spatial, input[s],
                                                  grad_output[s], weight[s], saved_mean[s], saved_inv_std[s],
                                                  want_input ? grad_input[s] : nullptr,
                                                  want_parameters ? grad_weight[s] : nullptr,
                                                  want_parameters ? grad_bias[s] : nullptr);
            });
            // grad_weight and grad_bias add a sum over N*HW terms of order 1 to values of
            // order 1: the float rounding of the result, relative to the sum's size.
            const double sum_atol = 1e-6 * std::sqrt(static_cast<double>(shape.batch * shape.spatial));
            grad_input.require_match(batch_norm_rtol, batch_norm_atol, what + " grad_input");
            grad_weight.require_match(reduction_rtol, sum_atol, what + " grad_weight");
            grad_bias.require_match(reduction_rtol, sum_atol, what + " grad_bias");
            if (!want_input) grad_input.require_unchanged(what + " grad_input (null)");
            if (!want_parameters) {
                grad_weight.require_unchanged(what + " grad_weight (null)");
                grad_bias.require_unchanged(what + " grad_bias (null)");
            }
            input.require_unchanged(what + " input");
            grad_output.require_unchanged(what + " grad_output");
        }
    }
}

// ---------------------------------------------------------------------------------------
// activations

namespace {
// Odd sizes, one element, and the model's activation sizes at batch 64.
const std::vector<std::int64_t> elementwise_sizes = {1, 7, 1000, 65537, 64 * 64 * 16 * 16, 64 * 3 * 32 * 32};
}  // namespace

TEST_CASE("cuda leaky_relu forward and backward match the CPU", "[cuda][activations]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 6000;
    for (const std::int64_t n : elementwise_sizes) {
        for (const float slope : {0.0f, 0.2f}) {
            ++seed;
            const std::string what = describe("leaky_relu slope " + std::to_string(slope), {n}, seed);
            std::vector<float> x = random_vector(size_of(n), seed);
            x[0] = 0.0f;  // the kink: its gradient is the slope's
            const Pair input(backends, x);
            const Pair output(backends, std::vector<float>(size_of(n), not_a_number));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::leaky_relu_forward(ctx, n, input[s], output[s], slope);
            });
            output.require_identical(what + " forward");  // one multiply: nothing to round differently

            const Pair grad_output(backends, random_vector(size_of(n), seed + 1));
            const Pair grad_input(backends, random_vector(size_of(n), seed + 2));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::leaky_relu_backward(ctx, n, input[s], grad_output[s], grad_input[s], slope);
            });
            grad_input.require_match(elementwise_rtol, elementwise_atol, what + " backward");
            input.require_unchanged(what + " input");
            grad_output.require_unchanged(what + " grad_output");
        }
    }
}

TEST_CASE("cuda tanh and sigmoid forward and backward match the CPU", "[cuda][activations]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 7000;
    for (const std::int64_t n : elementwise_sizes) {
        ++seed;
        // Wide inputs reach the saturated tails (and sigmoid's exp overflow at -100).
        std::vector<float> x = random_vector(size_of(n), seed, -8.0f, 8.0f);
        x[0] = n > 1 ? -100.0f : 0.0f;
        const Pair input(backends, x);
        const Pair grad_output(backends, random_vector(size_of(n), seed + 1));
        const Pair tanh_output(backends, std::vector<float>(size_of(n), not_a_number));
        const Pair sigmoid_output(backends, std::vector<float>(size_of(n), not_a_number));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::tanh_forward(ctx, n, input[s], tanh_output[s]);
            sga::kernels::sigmoid_forward(ctx, n, input[s], sigmoid_output[s]);
        });
        tanh_output.require_match(elementwise_rtol, elementwise_atol, describe("tanh_forward", {n}, seed));
        sigmoid_output.require_match(elementwise_rtol, elementwise_atol, describe("sigmoid_forward", {n}, seed));

        // The backward passes read the forward *output*: give both backends the same one.
        const Pair y(backends, random_vector(size_of(n), seed + 2, -1.0f, 1.0f));
        const Pair sigmoid_y(backends, random_vector(size_of(n), seed + 3, 0.0f, 1.0f));
        const Pair tanh_grad(backends, random_vector(size_of(n), seed + 4));
        const Pair sigmoid_grad(backends, random_vector(size_of(n), seed + 5));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::tanh_backward(ctx, n, y[s], grad_output[s], tanh_grad[s]);
            sga::kernels::sigmoid_backward(ctx, n, sigmoid_y[s], grad_output[s], sigmoid_grad[s]);
        });
        tanh_grad.require_match(elementwise_rtol, elementwise_atol, describe("tanh_backward", {n}, seed));
        sigmoid_grad.require_match(elementwise_rtol, elementwise_atol, describe("sigmoid_backward", {n}, seed));
        input.require_unchanged(describe("activation input", {n}, seed));
    }
}

// ---------------------------------------------------------------------------------------
// concat

TEST_CASE("cuda concat_channels forward and backward match the CPU exactly", "[cuda][concat]") {
    if (skip_without_gpu()) return;
    Backends backends;
    struct ConcatShape {
        std::int64_t batch, channels_a, channels_b, spatial;
    };
    std::uint64_t seed = 8000;
    // Batch 1, odd sizes, unequal halves, and the decoder's skip connections at batch 64.
    for (const ConcatShape& shape :
         {ConcatShape{1, 1, 1, 1}, ConcatShape{1, 2, 3, 5}, ConcatShape{3, 5, 2, 9}, ConcatShape{2, 1, 4, 1},
          ConcatShape{64, 512, 512, 4}, ConcatShape{64, 256, 256, 16}, ConcatShape{64, 64, 64, 256}}) {
        for (int variant = 0; variant < 3; ++variant) {  // both gradients; only grad_a; only grad_b
            ++seed;
            const std::int64_t na = shape.batch * shape.channels_a * shape.spatial;
            const std::int64_t nb = shape.batch * shape.channels_b * shape.spatial;
            const std::string what =
                describe("concat_channels", {shape.batch, shape.channels_a, shape.channels_b, shape.spatial}, seed) +
                " variant " + std::to_string(variant);
            const Pair a(backends, random_vector(size_of(na), seed));
            const Pair b(backends, random_vector(size_of(nb), seed + 1));
            const Pair output(backends, std::vector<float>(size_of(na + nb), not_a_number));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::concat_channels_forward(ctx, shape.batch, shape.channels_a, shape.channels_b,
                                                      shape.spatial, a[s], b[s], output[s]);
            });
            output.require_identical(what + " forward");

            const Pair grad_output(backends, random_vector(size_of(na + nb), seed + 2));
            const Pair grad_a(backends, random_vector(size_of(na), seed + 3));
            const Pair grad_b(backends, random_vector(size_of(nb), seed + 4));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::concat_channels_backward(ctx, shape.batch, shape.channels_a, shape.channels_b,
                                                       shape.spatial, grad_output[s],
                                                       variant != 2 ? grad_a[s] : nullptr,
                                                       variant != 1 ? grad_b[s] : nullptr);
            });
            grad_a.require_identical(what + " grad_a");  // one float addition each: exact
            grad_b.require_identical(what + " grad_b");
            if (variant == 2) grad_a.require_unchanged(what + " grad_a (null)");
            if (variant == 1) grad_b.require_unchanged(what + " grad_b (null)");
            a.require_unchanged(what + " a");
            b.require_unchanged(what + " b");
        }
    }
}

// ---------------------------------------------------------------------------------------
// fills and elementwise arithmetic

TEST_CASE("cuda fills match the CPU: constant exactly, random to the last bit in practice", "[cuda][elementwise]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 9000;
    for (const std::int64_t n : elementwise_sizes) {
        ++seed;
        const std::string what = describe("fills", {n}, seed);
        const Pair constant(backends, std::vector<float>(size_of(n), not_a_number));
        backends.run([&](sga::Context& ctx, Side s) { sga::kernels::fill(ctx, n, 0.25f, constant[s]); });
        constant.require_identical(what + " fill");

        for (const std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{12345}}) {
            const Pair normal(backends, std::vector<float>(size_of(n), not_a_number));
            const Pair uniform(backends, std::vector<float>(size_of(n), not_a_number));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::fill_normal(ctx, n, 0.5f, 0.02f, seed, offset, normal[s]);
                sga::kernels::fill_uniform(ctx, n, -1.0f, 3.0f, seed, offset, uniform[s]);
            });
            normal.require_match(random_rtol, random_atol, what + " fill_normal offset " + std::to_string(offset));
            uniform.require_match(random_rtol, random_atol, what + " fill_uniform offset " + std::to_string(offset));
        }
    }
}

TEST_CASE("cuda add_scaled, accumulate_broadcast and accumulate_scaled match the CPU", "[cuda][elementwise]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 10000;
    for (const std::int64_t n : elementwise_sizes) {
        ++seed;
        const std::string what = describe("elementwise", {n}, seed);
        const Pair a(backends, random_vector(size_of(n), seed));
        const Pair b(backends, random_vector(size_of(n), seed + 1));
        const Pair output(backends, std::vector<float>(size_of(n), not_a_number));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::add_scaled(ctx, n, 0.75f, a[s], -1.5f, b[s], output[s]);
        });
        output.require_match(elementwise_rtol, elementwise_atol, what + " add_scaled");

        // output aliasing an input.
        const Pair aliased(backends, random_vector(size_of(n), seed + 2));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::add_scaled(ctx, n, 2.0f, aliased[s], 0.5f, b[s], aliased[s]);
        });
        aliased.require_match(elementwise_rtol, elementwise_atol, what + " add_scaled in place");

        const Pair scalar(backends, std::vector<float>{1.25f});
        const Pair broadcast(backends, random_vector(size_of(n), seed + 3));
        const Pair scaled(backends, random_vector(size_of(n), seed + 4));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::accumulate_broadcast(ctx, n, 1.0f / static_cast<float>(n), scalar[s], broadcast[s]);
            sga::kernels::accumulate_scaled(ctx, n, -0.3f, a[s], scaled[s]);
        });
        broadcast.require_match(elementwise_rtol, elementwise_atol, what + " accumulate_broadcast");
        scaled.require_match(elementwise_rtol, elementwise_atol, what + " accumulate_scaled");
        a.require_unchanged(what + " a");
        b.require_unchanged(what + " b");
        scalar.require_unchanged(what + " scalar");
    }
}

// ---------------------------------------------------------------------------------------
// reductions and losses

namespace {
// One element, odd sizes, sizes that need several partial-sum blocks (and more than the
// 1024-block cap), and the model's image size at batch 64.
const std::vector<std::int64_t> loss_sizes = {1, 3, 1000, 4097, 64 * 3 * 32 * 32, 3 * 1024 * 2048 + 5};

// Predictions in (0, 1) with exact 0s and 1s (the clamps), targets in [0, 1] with exact 0s and 1s.
std::pair<std::vector<float>, std::vector<float>> bce_inputs(std::int64_t n, std::uint64_t seed) {
    std::vector<float> prediction = random_vector(size_of(n), seed, 0.001f, 0.999f);
    std::vector<float> target = random_vector(size_of(n), seed + 1, 0.0f, 1.0f);
    for (std::size_t i = 0; i < prediction.size(); i += 11) prediction[i] = (i / 11) % 2 ? 1.0f : 0.0f;
    for (std::size_t i = 0; i < target.size(); i += 5) target[i] = (i / 5) % 2 ? 1.0f : 0.0f;
    return {prediction, target};
}
}  // namespace

TEST_CASE("cuda mean and loss forwards match the CPU", "[cuda][losses]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 11000;
    for (const std::int64_t n : loss_sizes) {
        ++seed;
        const std::string what = describe("losses", {n}, seed);
        const std::vector<float> a_values = random_vector(size_of(n), seed);
        std::vector<float> b_values = random_vector(size_of(n), seed + 1);
        for (std::size_t i = 0; i < b_values.size(); i += 7) b_values[i] = a_values[i];  // |a - b| = 0 terms
        const Pair a(backends, a_values);
        const Pair b(backends, b_values);
        const auto [prediction_values, target_values] = bce_inputs(n, seed + 2);
        const Pair prediction(backends, prediction_values);
        const Pair target(backends, target_values);
        const Pair mean(backends, {not_a_number}), bce(backends, {not_a_number}), l1(backends, {not_a_number}),
            mse(backends, {not_a_number});
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::mean_forward(ctx, n, a[s], mean[s]);
            sga::kernels::bce_loss_forward(ctx, n, prediction[s], target[s], bce[s]);
            sga::kernels::l1_loss_forward(ctx, n, a[s], b[s], l1[s]);
            sga::kernels::mse_loss_forward(ctx, n, a[s], b[s], mse[s]);
        });
        // mean of values in [-1, 1] can cancel to near 0: atol relative to the terms' size.
        mean.require_match(reduction_rtol, 1e-7, what + " mean_forward");
        bce.require_match(reduction_rtol, reduction_atol, what + " bce_loss_forward");
        l1.require_match(reduction_rtol, reduction_atol, what + " l1_loss_forward");
        mse.require_match(reduction_rtol, reduction_atol, what + " mse_loss_forward");
        a.require_unchanged(what + " a");
        prediction.require_unchanged(what + " prediction");
    }
}

TEST_CASE("cuda reductions give the same bits on every run", "[cuda][losses]") {
    if (skip_without_gpu()) return;
    Backends backends;
    const std::int64_t n = 3 * 1024 * 2048 + 5;
    const Pair a(backends, random_vector(size_of(n), 1));
    const Pair result(backends, std::vector<float>{0.0f});
    float first = 0.0f;
    for (int run = 0; run < 3; ++run) {
        sga::kernels::mean_forward(backends.cuda, n, a[Side::Cuda], result[Side::Cuda]);
        const float value = result.cuda_values("mean_forward determinism")[0];
        if (run == 0) first = value;
        REQUIRE(std::memcmp(&value, &first, sizeof(float)) == 0);
    }
}

TEST_CASE("cuda loss backwards match the CPU, accumulate and skip null outputs", "[cuda][losses]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 12000;
    for (const std::int64_t n : loss_sizes) {
        for (int variant = 0; variant < 3; ++variant) {  // both gradients; only grad_a; only grad_b
            ++seed;
            const std::string what = describe("loss backwards", {n}, seed) + " variant " + std::to_string(variant);
            const Pair grad_loss(backends, std::vector<float>{0.75f});
            const std::vector<float> a_values = random_vector(size_of(n), seed);
            std::vector<float> b_values = random_vector(size_of(n), seed + 1);
            const Pair a(backends, a_values);
            for (std::size_t i = 0; i < b_values.size(); i += 7) b_values[i] = a_values[i];  // sign(0) = 0
            const Pair b(backends, b_values);
            const auto [prediction_values, target_values] = bce_inputs(n, seed + 2);
            const Pair prediction(backends, prediction_values);
            const Pair target(backends, target_values);
            const Pair grad_prediction(backends, random_vector(size_of(n), seed + 3));
            const Pair l1_a(backends, random_vector(size_of(n), seed + 4));
            const Pair l1_b(backends, random_vector(size_of(n), seed + 5));
            const Pair mse_a(backends, random_vector(size_of(n), seed + 6));
            const Pair mse_b(backends, random_vector(size_of(n), seed + 7));
            float* none = nullptr;
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::bce_loss_backward(ctx, n, prediction[s], target[s], grad_loss[s], grad_prediction[s]);
                sga::kernels::l1_loss_backward(ctx, n, a[s], b[s], grad_loss[s], variant != 2 ? l1_a[s] : none,
                                               variant != 1 ? l1_b[s] : none);
                sga::kernels::mse_loss_backward(ctx, n, a[s], b[s], grad_loss[s], variant != 2 ? mse_a[s] : none,
                                                variant != 1 ? mse_b[s] : none);
            });
            // BCE's gradient is computed in double on both sides and rounded once; at the
            // clamped p = 0 or 1 it is ~1e12 / n, still relative-exact.
            grad_prediction.require_match(elementwise_rtol, elementwise_atol, what + " bce_loss_backward");
            l1_a.require_match(elementwise_rtol, elementwise_atol, what + " l1 grad_a");
            l1_b.require_match(elementwise_rtol, elementwise_atol, what + " l1 grad_b");
            mse_a.require_match(elementwise_rtol, elementwise_atol, what + " mse grad_a");
            mse_b.require_match(elementwise_rtol, elementwise_atol, what + " mse grad_b");
            if (variant == 2) {
                l1_a.require_unchanged(what + " l1 grad_a (null)");
                mse_a.require_unchanged(what + " mse grad_a (null)");
            }
            if (variant == 1) {
                l1_b.require_unchanged(what + " l1 grad_b (null)");
                mse_b.require_unchanged(what + " mse grad_b (null)");
            }
            grad_loss.require_unchanged(what + " grad_loss");
        }
    }
}

TEST_CASE("cuda per_sample_mse matches the CPU", "[cuda][losses]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 13000;
    struct Samples {
        std::int64_t batch, size;
    };
    for (const Samples& shape : {Samples{1, 1}, Samples{3, 17}, Samples{1, 3 * 32 * 32}, Samples{64, 3 * 32 * 32},
                                 Samples{5, 100000}}) {
        ++seed;
        const std::string what = describe("per_sample_mse", {shape.batch, shape.size}, seed);
        const std::int64_t n = shape.batch * shape.size;
        const Pair a(backends, random_vector(size_of(n), seed));
        const Pair b(backends, random_vector(size_of(n), seed + 1));
        const Pair result(backends, std::vector<float>(size_of(shape.batch), not_a_number));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::per_sample_mse(ctx, shape.batch, shape.size, a[s], b[s], result[s]);
        });
        result.require_match(reduction_rtol, reduction_atol, what);
    }
}

// ---------------------------------------------------------------------------------------
// Adam

TEST_CASE("cuda adam_step over three steps matches the CPU", "[cuda][adam]") {
    if (skip_without_gpu()) return;
    Backends backends;
    std::uint64_t seed = 14000;
    const sga::AdamHyperparameters hyper;  // the model's: lr 2e-4, betas (0.5, 0.999), eps 1e-8
    for (const std::int64_t n : {std::int64_t{1}, std::int64_t{1000}, std::int64_t{65537}, std::int64_t{3000001}}) {
        ++seed;
        const Pair parameters(backends, random_vector(size_of(n), seed));
        const Pair first_moment(backends, std::vector<float>(size_of(n), 0.0f));
        const Pair second_moment(backends, std::vector<float>(size_of(n), 0.0f));
        for (std::int64_t step = 1; step <= 3; ++step) {
            const std::string what = describe("adam_step " + std::to_string(step), {n}, seed);
            const Pair gradients(backends, random_vector(size_of(n), seed + 100 * static_cast<std::uint64_t>(step)));
            backends.run([&](sga::Context& ctx, Side s) {
                sga::kernels::adam_step(ctx, n, hyper, step, parameters[s], gradients[s], first_moment[s],
                                        second_moment[s]);
            });
            // Same float operations on both sides; fma contraction may differ by an ulp per
            // operation, and the moments feed the next step: a few ulps after three steps.
            parameters.require_match(1e-6, 1e-7, what + " parameters");
            first_moment.require_match(1e-5, 1e-9, what + " first_moment");
            second_moment.require_match(1e-5, 1e-12, what + " second_moment");
            gradients.require_unchanged(what + " gradients");
        }
    }
}

// ---------------------------------------------------------------------------------------
// grid-stride loops

namespace {
// The elementwise kernels launch at most max_elementwise_blocks (2^16) blocks of
// elementwise_threads (256) threads (src/cuda/device_utils.cuh), 2^24 threads in all, each
// walking the elements in a grid-stride loop. The shapes above stay under 2^24 elements, so
// every thread's loop runs once; here each kernel gets 2^24 + 2^20 + 3 elements (or a
// (N, C, HW) shape of 17 * 2^20), and the threads that start below 2^20 + 3 take a second
// iteration for the elements past 2^24 (which start as NaN where the kernel overwrites).
constexpr std::int64_t elements_past_one_grid = (std::int64_t{1} << 24) + (std::int64_t{1} << 20) + 3;
struct PlanesShape {
    std::int64_t batch, channels, spatial;
    constexpr std::int64_t total() const { return batch * channels * spatial; }
};
constexpr PlanesShape planes_past_one_grid{17, 64, 16384};
static_assert(planes_past_one_grid.total() > (std::int64_t{1} << 24));
}  // namespace

TEST_CASE("cuda grid-stride kernels match the CPU past 2^24 elements, where the loop iterates more than once",
          "[cuda][grid-stride][large]") {
    if (skip_without_gpu()) return;
    Backends backends;
    const std::int64_t n = elements_past_one_grid;
    const std::size_t size = size_of(n);
    const std::uint64_t seed = 15000;
    const std::vector<float> nan_values(size, not_a_number);
    {
        const std::string what = describe("fills", {n}, seed);
        const Pair constant(backends, nan_values), normal(backends, nan_values), uniform(backends, nan_values);
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::fill(ctx, n, 0.25f, constant[s]);
            sga::kernels::fill_normal(ctx, n, 0.5f, 0.02f, seed, 12345, normal[s]);
            sga::kernels::fill_uniform(ctx, n, -1.0f, 3.0f, seed, 12345, uniform[s]);
        });
        constant.require_identical(what + " fill");
        normal.require_match(random_rtol, random_atol, what + " fill_normal");
        uniform.require_match(random_rtol, random_atol, what + " fill_uniform");
    }
    {
        const std::string what = describe("elementwise", {n}, seed + 1);
        const Pair a(backends, random_vector(size, seed + 1)), b(backends, random_vector(size, seed + 2));
        const Pair output(backends, nan_values), scalar(backends, {1.25f});
        const Pair broadcast(backends, random_vector(size, seed + 3)), scaled(backends, random_vector(size, seed + 4));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::add_scaled(ctx, n, 0.75f, a[s], -1.5f, b[s], output[s]);
            sga::kernels::accumulate_broadcast(ctx, n, 0.5f, scalar[s], broadcast[s]);
            sga::kernels::accumulate_scaled(ctx, n, -0.3f, a[s], scaled[s]);
        });
        output.require_match(elementwise_rtol, elementwise_atol, what + " add_scaled");
        broadcast.require_match(elementwise_rtol, elementwise_atol, what + " accumulate_broadcast");
        scaled.require_match(elementwise_rtol, elementwise_atol, what + " accumulate_scaled");
        a.require_unchanged(what + " a");
    }
    {
        const std::string what = describe("activations", {n}, seed + 5);
        const Pair input(backends, random_vector(size, seed + 5, -8.0f, 8.0f));
        const Pair grad_output(backends, random_vector(size, seed + 6));
        const Pair leaky(backends, nan_values), tanh_output(backends, nan_values), sigmoid_output(backends, nan_values);
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::leaky_relu_forward(ctx, n, input[s], leaky[s], 0.2f);
            sga::kernels::tanh_forward(ctx, n, input[s], tanh_output[s]);
            sga::kernels::sigmoid_forward(ctx, n, input[s], sigmoid_output[s]);
        });
        leaky.require_identical(what + " leaky_relu_forward");
        tanh_output.require_match(elementwise_rtol, elementwise_atol, what + " tanh_forward");
        sigmoid_output.require_match(elementwise_rtol, elementwise_atol, what + " sigmoid_forward");

        // The backward passes of tanh and sigmoid read the forward output: the same on both sides.
        const Pair y(backends, random_vector(size, seed + 7, -1.0f, 1.0f));
        const Pair sigmoid_y(backends, random_vector(size, seed + 8, 0.0f, 1.0f));
        const Pair leaky_grad(backends, random_vector(size, seed + 9));
        const Pair tanh_grad(backends, random_vector(size, seed + 10));
        const Pair sigmoid_grad(backends, random_vector(size, seed + 11));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::leaky_relu_backward(ctx, n, input[s], grad_output[s], leaky_grad[s], 0.2f);
            sga::kernels::tanh_backward(ctx, n, y[s], grad_output[s], tanh_grad[s]);
            sga::kernels::sigmoid_backward(ctx, n, sigmoid_y[s], grad_output[s], sigmoid_grad[s]);
        });
        leaky_grad.require_match(elementwise_rtol, elementwise_atol, what + " leaky_relu_backward");
        tanh_grad.require_match(elementwise_rtol, elementwise_atol, what + " tanh_backward");
        sigmoid_grad.require_match(elementwise_rtol, elementwise_atol, what + " sigmoid_backward");
        input.require_unchanged(what + " input");
    }
    {
        const std::string what = describe("loss backwards", {n}, seed + 12);
        const auto [prediction_values, target_values] = bce_inputs(n, seed + 12);
        const Pair prediction(backends, prediction_values), target(backends, target_values);
        const Pair a(backends, random_vector(size, seed + 14)), b(backends, random_vector(size, seed + 15));
        const Pair grad_loss(backends, {0.75f});
        const Pair grad_prediction(backends, random_vector(size, seed + 16));
        const Pair l1_a(backends, random_vector(size, seed + 17)), l1_b(backends, random_vector(size, seed + 18));
        const Pair mse_a(backends, random_vector(size, seed + 19)), mse_b(backends, random_vector(size, seed + 20));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::bce_loss_backward(ctx, n, prediction[s], target[s], grad_loss[s], grad_prediction[s]);
            sga::kernels::l1_loss_backward(ctx, n, a[s], b[s], grad_loss[s], l1_a[s], l1_b[s]);
            sga::kernels::mse_loss_backward(ctx, n, a[s], b[s], grad_loss[s], mse_a[s], mse_b[s]);
        });
        grad_prediction.require_match(elementwise_rtol, elementwise_atol, what + " bce_loss_backward");
        l1_a.require_match(elementwise_rtol, elementwise_atol, what + " l1 grad_a");
        l1_b.require_match(elementwise_rtol, elementwise_atol, what + " l1 grad_b");
        mse_a.require_match(elementwise_rtol, elementwise_atol, what + " mse grad_a");
        mse_b.require_match(elementwise_rtol, elementwise_atol, what + " mse grad_b");
    }
    {
        const std::string what = describe("adam_step 1", {n}, seed + 21);
        const Pair parameters(backends, random_vector(size, seed + 21));
        const Pair gradients(backends, random_vector(size, seed + 22));
        const Pair first_moment(backends, random_vector(size, seed + 23, -0.1f, 0.1f));
        const Pair second_moment(backends, random_vector(size, seed + 24, 0.0f, 0.1f));
        const sga::AdamHyperparameters hyper;
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::adam_step(ctx, n, hyper, 1, parameters[s], gradients[s], first_moment[s], second_moment[s]);
        });
        parameters.require_match(1e-6, 1e-7, what + " parameters");
        first_moment.require_match(1e-5, 1e-9, what + " first_moment");
        second_moment.require_match(1e-5, 1e-12, what + " second_moment");
    }
    {
        const PlanesShape shape = planes_past_one_grid;
        const std::int64_t total = shape.total();
        const std::size_t channels = size_of(shape.channels);
        const std::string what = describe("planes", {shape.batch, shape.channels, shape.spatial}, seed + 25);
        const Pair bias(backends, random_vector(channels, seed + 25));
        const Pair biased(backends, random_vector(size_of(total), seed + 26));
        const Pair input(backends, offset_values(size_of(total), seed + 27));
        const Pair weight(backends, random_vector(channels, seed + 28, 0.5f, 1.5f));
        const Pair running_mean(backends, random_vector(channels, seed + 29, 2.5f, 3.5f));
        const Pair running_var(backends, random_vector(channels, seed + 30, 0.1f, 1.5f));
        const Pair normalised(backends, std::vector<float>(size_of(total), not_a_number));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::add_channel_bias(ctx, shape.batch, shape.channels, shape.spatial, bias[s], biased[s]);
            sga::kernels::batch_norm_forward_inference(ctx, shape.batch, shape.channels, shape.spatial, input[s],
                                                       weight[s], bias[s], running_mean[s], running_var[s], epsilon,
                                                       normalised[s]);
        });
        biased.require_match(elementwise_rtol, elementwise_atol, what + " add_channel_bias");
        normalised.require_match(batch_norm_rtol, batch_norm_atol, what + " batch_norm_forward_inference");

        // Concatenation of two halves of C / 2 channels each: total elements as above.
        const std::int64_t half = shape.channels / 2, half_total = shape.batch * half * shape.spatial;
        const Pair first(backends, random_vector(size_of(half_total), seed + 31));
        const Pair second(backends, random_vector(size_of(half_total), seed + 32));
        const Pair joined(backends, std::vector<float>(size_of(total), not_a_number));
        const Pair grad_first(backends, random_vector(size_of(half_total), seed + 33));
        const Pair grad_second(backends, random_vector(size_of(half_total), seed + 34));
        backends.run([&](sga::Context& ctx, Side s) {
            sga::kernels::concat_channels_forward(ctx, shape.batch, half, half, shape.spatial, first[s], second[s],
                                                  joined[s]);
            sga::kernels::concat_channels_backward(ctx, shape.batch, half, half, shape.spatial, input[s],
                                                   grad_first[s], grad_second[s]);
        });
        joined.require_identical(what + " concat_channels_forward");
        grad_first.require_identical(what + " concat_channels_backward grad_a");
        grad_second.require_identical(what + " concat_channels_backward grad_b");
    }
}

// ---------------------------------------------------------------------------------------
// the context: stream, synchronisation, steady-state allocation

TEST_CASE("a cuda context runs a repeated kernel sequence without allocating after the first", "[cuda][context]") {
    if (skip_without_gpu()) return;
    sga::Context ctx(sga::Device::Cuda, 3);
    REQUIRE(ctx.cuda() != nullptr);
    const sga::ConvGeometry g = geometry(4, 64, 16, 16, 128, 4, 2, 1);
    const GuardedBuffer input(random_vector(size_of(g.input_size()), 1), ctx);
    const GuardedBuffer weight(random_vector(size_of(g.weight_size()), 2), ctx);
    const GuardedBuffer output(std::vector<float>(size_of(g.output_size()), 0.0f), ctx);
    const GuardedBuffer target(random_vector(size_of(g.output_size()), 3), ctx);
    const GuardedBuffer grad_input(std::vector<float>(size_of(g.input_size()), 0.0f), ctx);
    const GuardedBuffer grad_weight(std::vector<float>(size_of(g.weight_size()), 0.0f), ctx);
    const GuardedBuffer loss(std::vector<float>{0.0f}, ctx);
    const GuardedBuffer mean(std::vector<float>{0.0f}, ctx);
    auto step = [&] {
        ctx.arena().reset();
        sga::kernels::conv2d_forward(ctx, g, input.data(), weight.data(), output.data(), 0.0f);
        sga::kernels::conv2d_backward_data(ctx, g, target.data(), weight.data(), grad_input.data(), 0.0f);
        sga::kernels::conv2d_backward_filter(ctx, g, input.data(), target.data(), grad_weight.data(), 0.0f);
        sga::kernels::mse_loss_forward(ctx, g.output_size(), output.data(), target.data(), loss.data());
        sga::kernels::mean_forward(ctx, g.input_size(), grad_input.data(), mean.data());
    };
    step();  // algorithm choice, workspace growth, arena growth
    step();  // the arena settles into one block
    ctx.synchronize();
    const std::uint64_t before = sga::allocation_count();
    step();
    step();
    ctx.synchronize();
    CHECK(sga::allocation_count() == before);
    output.values("steady-state output");
    grad_input.values("steady-state grad_input");
    grad_weight.values("steady-state grad_weight");
    loss.values("steady-state loss");
    mean.values("steady-state mean");
}

TEST_CASE("cuda contexts are independent and a copy sees the work queued before it", "[cuda][context]") {
    if (skip_without_gpu()) return;
    sga::Context first(sga::Device::Cuda), second(sga::Device::Cuda);
    REQUIRE(first.cuda() != second.cuda());
    const std::int64_t n = 1 << 22;
    const GuardedBuffer a(std::vector<float>(size_of(n), 0.0f), first);
    const GuardedBuffer b(std::vector<float>(size_of(n), 0.0f), second);
    // No synchronize() before reading: copy_bytes must be ordered after each context's stream.
    sga::kernels::fill(first, n, 1.5f, a.data());
    sga::kernels::fill(second, n, -2.0f, b.data());
    for (int i = 0; i < 10; ++i) sga::kernels::accumulate_scaled(first, n, 1.0f, a.data(), a.data());  // a *= 2
    const std::vector<float> a_values = a.values_through_copy_bytes("first context");
    const std::vector<float> b_values = b.values_through_copy_bytes("second context");
    CHECK(a_values.front() == 1536.0f);
    CHECK(a_values.back() == 1536.0f);
    CHECK(b_values.back() == -2.0f);
    first.synchronize();
    second.synchronize();
}

// ---------------------------------------------------------------------------------------
// [no-gpu]: what can be checked without a device. These run (and pass) everywhere.

TEST_CASE("cuda_device_available answers without throwing", "[cuda][no-gpu]") {
    bool available = true;
    REQUIRE_NOTHROW(available = sga::cuda_device_available());
#if !SKIPGANOMALY_WITH_CUDA
    CHECK_FALSE(available);
#endif
    // The reason is empty exactly when a GPU is usable, and otherwise is what a skip prints.
    const std::string reason = sga::cuda_unavailable_reason();
    CHECK(reason.empty() == available);
    if (!available) {
        // CUDA's own error (or the build's), not a bare "no GPU".
        const std::string message = sga::testing::message_of<sga::DeviceError>([] { sga::Context(sga::Device::Cuda); });
        CHECK_THAT(message, Catch::Contains(reason));
        // Auto never fails: without a GPU it falls back to the CPU.
        sga::Context automatic(sga::Device::Auto);
        CHECK(automatic.device() == sga::Device::Cpu);
    }
}

#if SKIPGANOMALY_WITH_CUDA
TEST_CASE("cuda kernels called with a CPU context throw DeviceError before touching the device", "[cuda][no-gpu]") {
    sga::Context cpu(sga::Device::Cpu);
    float dummy[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    CHECK_THROWS_AS(sga::cuda::fill(cpu, 4, 1.0f, dummy), sga::DeviceError);
    CHECK_THROWS_AS(sga::cuda::mean_forward(cpu, 4, dummy, dummy), sga::DeviceError);
    const sga::ConvGeometry g = geometry(1, 1, 2, 2, 1, 1, 1, 0);
    CHECK_THROWS_AS(sga::cuda::conv2d_forward(cpu, g, dummy, dummy, dummy, 0.0f), sga::DeviceError);
    CHECK(dummy[0] == 0.0f);
}
#endif

TEST_CASE("require_close passes an infinity only against the same infinity, and never a NaN", "[cuda][no-gpu]") {
    const double infinity = std::numeric_limits<double>::infinity();
    const float float_infinity = std::numeric_limits<float>::infinity();
    using sga::testing::close_failure;
    // The same infinity passes, at any tolerance.
    CHECK(close_failure(std::vector<float>{float_infinity, -float_infinity, 1.0f},
                        std::vector<double>{infinity, -infinity, 1.0}, 0.0, 0.0, "same signs")
              .empty());
    // +inf against -inf (either way round) fails, however loose the tolerance: the error
    // inf - (-inf) = inf is not above an allowance of atol + rtol * inf = inf.
    const std::string opposite = close_failure(std::vector<float>{1.0f, float_infinity},
                                               std::vector<double>{1.0, -infinity}, 1e-3, 1e-3, "opposite signs");
    CHECK_THAT(opposite, Catch::Contains("1 of 2 elements out of tolerance") && Catch::Contains("[1] actual inf"));
    CHECK_FALSE(close_failure(std::vector<float>{-float_infinity}, std::vector<double>{infinity}, 1.0, 1.0, "")
                    .empty());
    // An infinity against a finite value fails, as does a finite value against an infinity.
    CHECK_FALSE(close_failure(std::vector<float>{float_infinity}, std::vector<double>{1e30}, 1.0, 0.0, "").empty());
    CHECK_FALSE(close_failure(std::vector<float>{3.0e38f}, std::vector<double>{infinity}, 1.0, 0.0, "").empty());
    // NaN fails on either side and against itself.
    CHECK_FALSE(close_failure(std::vector<float>{not_a_number}, std::vector<double>{1.0}, 1.0, 1.0, "").empty());
    CHECK_FALSE(close_failure(std::vector<float>{1.0f}, std::vector<double>{std::nan("")}, 1.0, 1.0, "").empty());
    CHECK_FALSE(close_failure(std::vector<float>{not_a_number}, std::vector<double>{std::nan("")}, 1.0, 1.0, "")
                    .empty());
    // Finite values keep the usual rule.
    CHECK(close_failure(std::vector<float>{1.0f}, std::vector<double>{1.0 + 1e-7}, 1e-6, 0.0, "").empty());
    CHECK_FALSE(close_failure(std::vector<float>{1.0f}, std::vector<double>{1.0 + 1e-5}, 1e-6, 0.0, "").empty());
}

// A kernel takes its stream from the context it was given (state_of(ctx).stream). A launch
// without a stream argument would run on the legacy default stream, which every context
// stream is ordered with, so no read-back can tell (GuardedBuffer::values): the source can.
TEST_CASE("every kernel launch in src/cuda names the context's stream", "[cuda][no-gpu]") {
    const std::filesystem::path folder = std::filesystem::path(SKIPGANOMALY_SOURCE_DIR) / "src" / "cuda";
    int launches = 0;
    for (const auto& entry : std::filesystem::directory_iterator(folder)) {
        if (entry.path().extension() != ".cu") continue;
        std::ifstream file(entry.path());
        std::ostringstream text_stream;
        text_stream << file.rdbuf();
        const std::string text = text_stream.str();
        for (std::size_t at = text.find("<<<"); at != std::string::npos; at = text.find("<<<", at + 3)) {
            const std::size_t end = text.find(">>>", at);
            REQUIRE(end != std::string::npos);
            // The launch configuration's arguments, split at commas outside parentheses.
            std::vector<std::string> arguments(1);
            int depth = 0;
            for (std::size_t i = at + 3; i < end; ++i) {
                const char c = text[i];
                if (c == '(' || c == '<' || c == '{') ++depth;
                if (c == ')' || c == '>' || c == '}') --depth;
                if (c == ',' && depth == 0) {
                    arguments.emplace_back();
                } else if (c != ' ' && c != '\n') {
                    arguments.back() += c;
                }
            }
            const std::size_t line = static_cast<std::size_t>(std::count(text.begin(), text.begin() +
                                                                         static_cast<std::ptrdiff_t>(at), '\n')) + 1;
            INFO(entry.path().filename().string() << ":" << line << ": <<<" << text.substr(at + 3, end - at - 3)
                                                  << ">>>");
            REQUIRE(arguments.size() == 4);
            CHECK(arguments[3] == "state.stream");
            ++launches;
        }
    }
    CHECK(launches >= 20);  // the scan found the kernels (25 launches when this was written)
}

#if SKIPGANOMALY_WITH_CUDA
// The loader (src/cuda_loader.cpp) and the module (src/cuda/module.cpp) refuse each other
// when cuda_module_mismatch() finds a difference; the message names each one.
extern "C" const sga::detail::CudaModule* skipganomaly_cuda_module(const sga::detail::CudaHostServices* services);

TEST_CASE("the CUDA module and the library check each other's kernels.def hash and struct sizes", "[cuda][no-gpu]") {
    using sga::detail::cuda_module_layout;
    using sga::detail::cuda_module_mismatch;
    const std::string hash = SKIPGANOMALY_KERNELS_DEF_SHA256;
    CHECK(hash.size() == 64);
    CHECK(hash.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(cuda_module_mismatch("the module", hash.c_str(), cuda_module_layout()).empty());

    const std::string other_hash(64, 'e');
    const std::string wrong_hash = cuda_module_mismatch("the module", other_hash.c_str(), cuda_module_layout());
    CHECK_THAT(wrong_hash, Catch::Contains("the module was built from another kernels.def (SHA-256 " + other_hash +
                                           ", expected " + hash + ")"));
    CHECK_THAT(cuda_module_mismatch("the module", nullptr, cuda_module_layout()),
               Catch::Contains("another kernels.def (SHA-256 missing"));

    sga::detail::CudaModuleLayout grown = cuda_module_layout();
    grown.context += 8;
    grown.conv_geometry += 8;
    const std::string wrong_sizes = cuda_module_mismatch("the module", hash.c_str(), grown);
    CHECK_THAT(wrong_sizes, Catch::Contains("sizeof(sga::Context) is " + std::to_string(sizeof(sga::Context) + 8) +
                                            " bytes in the module, expected " + std::to_string(sizeof(sga::Context))));
    CHECK_THAT(wrong_sizes, Catch::Contains("; sizeof(sga::ConvGeometry) is"));
    CHECK_THAT(wrong_sizes, !Catch::Contains("kernels.def"));

    // The module built with this test: its own hash and layout are this build's. Services
    // from another build (another hash, a zero layout) are not adopted, but the module still
    // answers, so that the library can say what differs.
    sga::detail::CudaHostServices other_build;
    other_build.kernels_def_sha256 = other_hash.c_str();
    const sga::detail::CudaModule* module = skipganomaly_cuda_module(&other_build);
    REQUIRE(module != nullptr);
    CHECK(std::string(module->kernels_def_sha256) == hash);
    CHECK(module->layout == cuda_module_layout());
    CHECK(cuda_module_mismatch("the module", module->kernels_def_sha256, module->layout).empty());
    // Another ABI number: no module at all.
    sga::detail::CudaHostServices other_abi;
    other_abi.abi = sga::detail::cuda_module_abi + 1;
    CHECK(skipganomaly_cuda_module(&other_abi) == nullptr);
}
#endif
