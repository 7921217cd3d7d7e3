// The CPU convolution kernels (src/cpu/conv2d.cpp) against the naive reference
// (tests/reference.hpp), and finite-difference gradient checks of the reference itself.
#include <omp.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cpu/bf16_gemm.hpp"
#include "reference.hpp"
#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/engine/kernels.hpp"
#include "skipganomaly/engine/memory.hpp"

namespace {

using sga::ConvGeometry;
using sga::testing::random_vector;
using sga::testing::require_close;
using sga::testing::to_double;

ConvGeometry make_geometry(std::int64_t batch, std::int64_t in_channels, std::int64_t in_height, std::int64_t in_width,
                           std::int64_t out_channels, std::int64_t kernel_height, std::int64_t kernel_width,
                           std::int64_t stride, std::int64_t padding) {
    ConvGeometry g;
    g.batch = batch;
    g.in_channels = in_channels;
    g.in_height = in_height;
    g.in_width = in_width;
    g.out_channels = out_channels;
    g.kernel_height = kernel_height;
    g.kernel_width = kernel_width;
    g.stride = stride;
    g.padding = padding;
    g.out_height = ConvGeometry::output_extent(in_height, kernel_height, stride, padding);
    g.out_width = ConvGeometry::output_extent(in_width, kernel_width, stride, padding);
    return g;
}

std::string describe(const ConvGeometry& g) {
    auto s = [](std::int64_t v) { return std::to_string(v); };
    return "input (" + s(g.batch) + ", " + s(g.in_channels) + ", " + s(g.in_height) + ", " + s(g.in_width) +
           ") -> output (" + s(g.batch) + ", " + s(g.out_channels) + ", " + s(g.out_height) + ", " + s(g.out_width) +
           "), kernel " + s(g.kernel_height) + "x" + s(g.kernel_width) + " stride " + s(g.stride) + " padding " +
           s(g.padding);
}

// Geometries chosen to reach every path of the kernels, with channel counts that are
// multiples of nothing convenient (the SIMD widths are 8 and 16).
std::vector<ConvGeometry> test_geometries() {
    return {
        make_geometry(1, 3, 7, 5, 5, 3, 3, 1, 1),    // batch 1, odd 7x5 input: unreordered GEMM output
        make_geometry(2, 5, 7, 5, 7, 4, 4, 2, 1),    // k4 s2 p1 (the model's layers) on an odd input
        make_geometry(3, 7, 6, 6, 11, 1, 1, 1, 0),   // 1x1 kernel
        make_geometry(2, 3, 9, 8, 13, 3, 3, 2, 0),   // stride 2 without padding
        make_geometry(4, 13, 2, 2, 9, 4, 4, 2, 1),   // 2x2 -> 1x1: only 4 of 16 taps see input
        make_geometry(3, 6, 1, 1, 1, 3, 3, 1, 1),    // the classifier: 1x1 input, k3 p1, one output channel
        make_geometry(5, 10, 4, 4, 7, 4, 4, 1, 0),   // window = whole input: the input is the columns
        make_geometry(1, 4, 5, 5, 3, 5, 5, 1, 0),    // the same with batch 1
        make_geometry(3, 17, 8, 8, 19, 4, 4, 2, 1),  // several images side by side, then reordered
        make_geometry(1, 6, 7, 5, 6, 4, 4, 2, 1),    // batch 1, k4 s2 p1
        make_geometry(3, 5, 4, 4, 6, 4, 4, 2, 1),    // 4x4 -> 2x2
        make_geometry(2, 2, 6, 7, 3, 3, 2, 1, 1),    // non-square 3x2 kernel
        make_geometry(2, 4, 1, 2, 3, 1, 1, 1, 1),    // border outputs read nothing but padding
        make_geometry(2, 5, 1, 1, 3, 3, 3, 2, 1),    // input smaller than the stride
        make_geometry(2, 3, 1, 1, 4, 1, 1, 4, 2),    // every output reads only padding: the result is 0
        make_geometry(2, 3, 8, 7, 5, 3, 3, 3, 1),    // stride 3
        make_geometry(1, 2, 6, 6, 3, 5, 5, 1, 2),    // k5 with padding 2
        // P >= 32 output positions per image: with enough images per thread these take the
        // per-image path (one single-threaded GEMM per image), else the batched one.
        make_geometry(5, 3, 9, 9, 7, 3, 3, 1, 1),    // 9x9 -> 9x9
        make_geometry(6, 5, 16, 16, 9, 4, 4, 2, 1),  // 16x16 -> 8x8, k4 s2 p1
        make_geometry(5, 3, 12, 10, 4, 3, 3, 1, 0),  // 12x10 -> 10x8
        make_geometry(7, 6, 13, 11, 5, 4, 4, 2, 1),  // odd 13x11 -> 6x5 is P = 30: batched
        make_geometry(4, 64, 16, 16, 40, 4, 4, 2, 1),  // per image, D = 1024: the weight packed in several blocks
        // At most 16 output positions in the whole batch and dropped taps take the skinny
        // kernels (so do the 2x2 -> 1x1 and classifier geometries above); these reach their
        // register blocks' tails and the rows they specialise for, and the same layers with
        // more rows, or every tap active, reach the GEMMs.
        make_geometry(2, 70, 2, 2, 37, 4, 4, 2, 1),   // 2 rows, 4 of 16 taps, 37 = 9 x 4 + 1 channels
        make_geometry(16, 33, 2, 2, 70, 4, 4, 2, 1),  // 16 rows, 4 of 16 taps
        make_geometry(3, 21, 3, 3, 6, 4, 4, 2, 1),    // 3x3 -> 1x1 k4 s2 p1: 9 of 16 taps, 3 rows (no specialisation)
        make_geometry(8, 9, 2, 2, 5, 4, 4, 2, 1),     // 8 rows, 4 of 16 taps
        make_geometry(4, 33, 4, 4, 70, 4, 4, 2, 1),   // 16 rows, every tap active: the GEMMs
        make_geometry(20, 13, 2, 2, 9, 4, 4, 2, 1),   // 2x2 -> 1x1 at 20 images: the GEMMs
        make_geometry(17, 10, 4, 4, 7, 4, 4, 1, 0),   // input is the columns at 17 images
    };
}

// Float32 tolerance for a result that is a sum of K products of values in [-1, 1].
// float32 rounds each step by at most eps = 1.2e-7 relative to the running sum; with random
// signs the errors add like a random walk, so a length-K sum whose partial sums are about
// sqrt(K)/3 in magnitude carries a typical error near eps * K / 3 ~ 4e-8 * K, whatever the
// summation order (plain loop, Eigen's blocked GEMM). atol = rtol = 1e-5 * sqrt(K) is 4x
// above that at K = 4096 (the largest K below) and 60x at K = 16, yet a wrong index or a
// missing term shows up as an O(0.1 .. 1) error, so the tolerance hides no bug.
struct Tolerance {
    double rtol, atol;
};
Tolerance float_tolerance(std::int64_t reduction_length) {
    const double t = 1e-5 * std::sqrt(static_cast<double>(std::max<std::int64_t>(1, reduction_length)));
    return {t, t};
}

// An output buffer with guard bands of a sentinel on both sides, to catch stray writes. The
// guard length is odd so that the output is not 64-byte aligned (the kernels must not assume).
class Guarded {
public:
    static constexpr std::size_t guard = 17;
    static constexpr float sentinel = -31415.9f;

    explicit Guarded(const std::vector<float>& initial)
        : size_(initial.size()), storage_(initial.size() + 2 * guard, sentinel) {
        std::copy(initial.begin(), initial.end(), storage_.begin() + guard);
    }
    float* data() { return storage_.data() + guard; }
    std::vector<float> values() const {
        return {storage_.begin() + guard, storage_.begin() + static_cast<std::ptrdiff_t>(guard + size_)};
    }
    void require_guards_intact(const std::string& what) const {
        std::size_t before = 0, after = 0;  // overwritten guard elements
        for (std::size_t i = 0; i < guard; ++i) {
            before += storage_[i] != sentinel;
            after += storage_[guard + size_ + i] != sentinel;
        }
        INFO(what << ": guard elements overwritten before the output " << before << ", after it " << after);
        REQUIRE(before + after == 0);
    }

private:
    std::size_t size_;
    std::vector<float> storage_;
};

enum class Primitive { forward, backward_data, backward_filter };

const char* name(Primitive primitive) {
    switch (primitive) {
        case Primitive::forward: return "conv2d_forward";
        case Primitive::backward_data: return "conv2d_backward_data";
        case Primitive::backward_filter: return "conv2d_backward_filter";
    }
    return "?";
}

// Runs one CPU primitive on seeded random operands and compares it with the double-precision
// reference. beta = 0 starts from a NaN-filled output (which must be ignored); beta = 1 from
// random values (which must be accumulated onto).
void check_primitive(Primitive primitive, const ConvGeometry& g, float beta, std::uint64_t seed) {
    const auto input_size = static_cast<std::size_t>(g.input_size());
    const auto output_size = static_cast<std::size_t>(g.output_size());
    const auto weight_size = static_cast<std::size_t>(g.weight_size());
    std::size_t a_size = 0, b_size = 0, result_size = 0;
    std::int64_t reduction_length = 0;
    switch (primitive) {
        case Primitive::forward:  // a = input, b = weight -> output
            a_size = input_size, b_size = weight_size, result_size = output_size;
            reduction_length = g.in_channels * g.kernel_height * g.kernel_width;
            break;
        case Primitive::backward_data:  // a = grad_output, b = weight -> grad_input
            a_size = output_size, b_size = weight_size, result_size = input_size;
            reduction_length = g.out_channels * g.kernel_height * g.kernel_width;
            break;
        case Primitive::backward_filter:  // a = input, b = grad_output -> grad_weight
            a_size = input_size, b_size = output_size, result_size = weight_size;
            reduction_length = g.batch * g.out_height * g.out_width;
            break;
    }
    const std::vector<float> a = random_vector(a_size, seed);
    const std::vector<float> b = random_vector(b_size, seed + 1);
    const std::vector<float> initial = beta == 0.0f
                                           ? std::vector<float>(result_size, std::numeric_limits<float>::quiet_NaN())
                                           : random_vector(result_size, seed + 2);

    const std::vector<double> a_double = to_double(a), b_double = to_double(b);
    std::vector<double> expected = beta == 0.0f ? std::vector<double>(result_size, 0.0) : to_double(initial);
    Guarded actual(initial);
    sga::Context ctx(sga::Device::Cpu);
    switch (primitive) {
        case Primitive::forward:
            sga::reference::conv2d_forward<double>(g, a_double.data(), b_double.data(), expected.data(), beta);
            sga::cpu::conv2d_forward(ctx, g, a.data(), b.data(), actual.data(), beta);
            break;
        case Primitive::backward_data:
            sga::reference::conv2d_backward_data<double>(g, a_double.data(), b_double.data(), expected.data(), beta);
            sga::cpu::conv2d_backward_data(ctx, g, a.data(), b.data(), actual.data(), beta);
            break;
        case Primitive::backward_filter:
            sga::reference::conv2d_backward_filter<double>(g, a_double.data(), b_double.data(), expected.data(), beta);
            sga::cpu::conv2d_backward_filter(ctx, g, a.data(), b.data(), actual.data(), beta);
            break;
    }
    const std::string what = std::string(name(primitive)) + " beta " + std::to_string(static_cast<int>(beta)) + ", " +
                             describe(g) + ", seed " + std::to_string(seed);
    const Tolerance tolerance = float_tolerance(reduction_length);
    require_close(actual.values(), expected, tolerance.rtol, tolerance.atol, what);
    actual.require_guards_intact(what);
}

// Sets the calling thread's OpenMP team size for a scope: these tests call sga::cpu::*
// directly, below the dispatcher's CpuThreadLease. The kernels pick the per-image or the
// batched path from the batch size per thread, so tests run at several thread counts.
class ThreadCount {
public:
    explicit ThreadCount(int threads) : previous_(omp_get_max_threads()) { omp_set_num_threads(threads); }
    ~ThreadCount() { omp_set_num_threads(previous_); }
    ThreadCount(const ThreadCount&) = delete;
    ThreadCount& operator=(const ThreadCount&) = delete;

private:
    int previous_;
};

void check_all_geometries(Primitive primitive) {
    for (int threads : {1, 2, 3}) {
        ThreadCount thread_count(threads);
        INFO("cpu threads " << threads);
        std::uint64_t seed = 1000;
        for (const ConvGeometry& g : test_geometries()) {
            check_primitive(primitive, g, 0.0f, seed);
            check_primitive(primitive, g, 1.0f, seed + 10);
            seed += 100;
        }
    }
}

}  // namespace

TEST_CASE("cpu conv2d_forward matches the reference", "[conv2d][cpu]") { check_all_geometries(Primitive::forward); }

TEST_CASE("cpu conv2d_backward_data matches the reference", "[conv2d][cpu]") {
    check_all_geometries(Primitive::backward_data);
}

TEST_CASE("cpu conv2d_backward_filter matches the reference", "[conv2d][cpu]") {
    check_all_geometries(Primitive::backward_filter);
}

TEST_CASE("cpu conv2d kernels split a large batch into chunks of images", "[conv2d][cpu]") {
    // 256 channels of 8x8 with k4 s2 p1: 4096 x 16 columns per image, so the kernels' 16 MiB
    // column budget holds 64 images and a batch of 65 runs as a chunk of 64 (reordered) and a
    // chunk of 1 (direct). P = 16 keeps it on the batched path at any thread count; three
    // output channels keep the reference cheap.
    // Its GEMMs are big enough to be split over the threads (by rows or by columns), so it
    // runs at 2 and 3 threads whatever the machine.
    const ConvGeometry g = make_geometry(65, 256, 8, 8, 3, 4, 4, 2, 1);
    for (int threads : {2, 3}) {
        ThreadCount thread_count(threads);
        INFO("cpu threads " << threads);
        for (Primitive primitive : {Primitive::forward, Primitive::backward_data, Primitive::backward_filter}) {
            check_primitive(primitive, g, 0.0f, 77);
            check_primitive(primitive, g, 1.0f, 78);
        }
    }
}

// The prepared path (conv2d_pack_weight once, then conv2d_packed) against the double
// reference, for both passes, on every test geometry plus a few with more rows and channels
// (blocks of 4 channels and 4 or 16 rows with their tails, depths that are not a multiple of
// 16, columns past the last group of 32 or 16); and the same result at 1, 2 and 3 threads, bit for bit.
TEST_CASE("cpu packed convolution matches the reference at any thread count", "[conv2d][cpu][packed]") {
    std::vector<ConvGeometry> geometries = test_geometries();
    geometries.push_back(make_geometry(1, 64, 8, 8, 37, 4, 4, 2, 1));    // 16 rows, N = 37: panels 2 + 1
    geometries.push_back(make_geometry(3, 20, 2, 2, 70, 4, 4, 2, 1));    // 3 rows, 4 of 16 taps
    geometries.push_back(make_geometry(2, 9, 9, 9, 21, 3, 3, 1, 1));     // 162 rows: 10 blocks of 16 and a tail of 2
    geometries.push_back(make_geometry(3, 24, 4, 4, 19, 4, 4, 2, 1));    // 12 rows (one vector wide), N = 304
    geometries.push_back(make_geometry(1, 40, 1, 1, 33, 4, 4, 2, 1));    // the transposed 1x1 -> 2x2 mirror
    std::uint64_t seed = 5000;
    for (const ConvGeometry& g : geometries) {
        for (sga::ConvPass pass : {sga::ConvPass::Forward, sga::ConvPass::BackwardData}) {
            const bool forward = pass == sga::ConvPass::Forward;
            const std::vector<float> weight = random_vector(static_cast<std::size_t>(g.weight_size()), seed);
            const std::vector<float> input =
                random_vector(static_cast<std::size_t>(forward ? g.input_size() : g.output_size()), seed + 1);
            const auto result_size = static_cast<std::size_t>(forward ? g.output_size() : g.input_size());
            std::vector<double> expected(result_size, 0.0);
            const std::vector<double> input_double = to_double(input), weight_double = to_double(weight);
            if (forward)
                sga::reference::conv2d_forward<double>(g, input_double.data(), weight_double.data(), expected.data(), 0.0f);
            else
                sga::reference::conv2d_backward_data<double>(g, input_double.data(), weight_double.data(), expected.data(),
                                                             0.0f);
            const std::string what = std::string(forward ? "packed forward, " : "packed backward-data, ") + describe(g);
            const Tolerance tolerance = float_tolerance(forward ? g.in_channels * g.kernel_height * g.kernel_width
                                                                : g.out_channels * g.kernel_height * g.kernel_width);
            sga::Context ctx(sga::Device::Cpu);
            ConvGeometry unbatched = g;
            unbatched.batch = 0;  // the packing does not depend on the batch
            std::vector<float> packed(static_cast<std::size_t>(sga::cpu::conv2d_packed_floats(unbatched, pass)), -7.0f);
            sga::cpu::conv2d_pack_weight(ctx, unbatched, pass, weight.data(), packed.data());
            std::vector<float> single_thread;
            for (int threads : {1, 2, 3}) {
                ThreadCount thread_count(threads);
                INFO("cpu threads " << threads);
                Guarded actual(std::vector<float>(result_size, std::numeric_limits<float>::quiet_NaN()));
                sga::cpu::conv2d_packed(ctx, g, pass, input.data(), weight.data(), packed.data(), actual.data());
                require_close(actual.values(), expected, tolerance.rtol, tolerance.atol, what);
                actual.require_guards_intact(what);
                if (threads == 1)
                    single_thread = actual.values();
                else
                    REQUIRE(actual.values() == single_thread);
            }
            seed += 10;
        }
    }
}

// A score batcher's pass (score_batcher.hpp) runs the prepared products of several images as
// one: each image's slice of a batch's result must be, bit for bit, what the image gets alone.
// The geometries have many rows, where the kernels walk the product in another order: forward
// with fewer than 16 positions an image in several chunks of rows and a tail; both passes in
// tiles of 32 rows x 8 columns with a last block of fewer than 16 or 32 rows and columns past
// the last group of 32 (backward-data beyond 16 rows, forward from 16 positions an image); and
// one whose result rows are not contiguous (the window is the whole input).
TEST_CASE("cpu packed convolution gives each image of a batch the bits it gets alone", "[conv2d][cpu][packed]") {
    const std::vector<ConvGeometry> geometries = {
        make_geometry(37, 96, 4, 4, 21, 4, 4, 2, 1),   // 4 positions, 148 rows, K = 1536: chunks of 40 rows
        make_geometry(9, 96, 8, 8, 37, 4, 4, 2, 1),    // 16 positions, 144 rows, N = 37 (forward)
        make_geometry(11, 13, 6, 6, 600, 4, 4, 2, 1),  // 99 rows, N = 208 (backward-data), N = 600 (forward)
        make_geometry(5, 9, 16, 16, 70, 4, 4, 2, 1),   // 64 positions, 320 rows
        make_geometry(80, 10, 4, 4, 7, 4, 4, 1, 0),    // one row an image, (N, D) row-major
    };
    std::uint64_t seed = 6000;
    for (const ConvGeometry& g : geometries) {
        for (sga::ConvPass pass : {sga::ConvPass::Forward, sga::ConvPass::BackwardData}) {
            const bool forward = pass == sga::ConvPass::Forward;
            ConvGeometry one = g;
            one.batch = 1;
            const std::int64_t in_image = forward ? one.input_size() : one.output_size();
            const std::int64_t out_image = forward ? one.output_size() : one.input_size();
            const std::vector<float> weight = random_vector(static_cast<std::size_t>(g.weight_size()), seed);
            const std::vector<float> input = random_vector(static_cast<std::size_t>(g.batch * in_image), seed + 1);
            sga::Context ctx(sga::Device::Cpu);
            ConvGeometry unbatched = g;
            unbatched.batch = 0;
            std::vector<float> packed(static_cast<std::size_t>(sga::cpu::conv2d_packed_floats(unbatched, pass)));
            sga::cpu::conv2d_pack_weight(ctx, unbatched, pass, weight.data(), packed.data());
            for (int threads : {1, 2, 3}) {
                ThreadCount thread_count(threads);
                INFO((forward ? "packed forward, " : "packed backward-data, ") << describe(g) << ", cpu threads "
                                                                              << threads);
                std::vector<float> batch(static_cast<std::size_t>(g.batch * out_image));
                sga::cpu::conv2d_packed(ctx, g, pass, input.data(), weight.data(), packed.data(), batch.data());
                for (std::int64_t n = 0; n < g.batch; ++n) {
                    std::vector<float> alone(static_cast<std::size_t>(out_image));
                    sga::cpu::conv2d_packed(ctx, one, pass, input.data() + n * in_image, weight.data(), packed.data(),
                                            alone.data());
                    const auto first = batch.begin() + n * out_image;
                    REQUIRE(std::vector<float>(first, first + out_image) == alone);
                }
            }
            seed += 10;
        }
    }
}

TEST_CASE("cpu packed convolution rejects bad geometry", "[conv2d][cpu][packed]") {
    sga::Context ctx(sga::Device::Cpu);
    ConvGeometry g = make_geometry(1, 3, 8, 8, 4, 4, 4, 2, 1);
    g.out_height = 5;  // does not follow from the input
    std::vector<float> buffer(4096, 0.5f);
    REQUIRE_THROWS_AS(sga::cpu::conv2d_packed_floats(g, sga::ConvPass::Forward), sga::InvalidArgument);
    REQUIRE_THROWS_AS(sga::cpu::conv2d_pack_weight(ctx, g, sga::ConvPass::Forward, buffer.data(), buffer.data()),
                      sga::InvalidArgument);
    REQUIRE_THROWS_AS(sga::cpu::conv2d_packed(ctx, g, sga::ConvPass::BackwardData, buffer.data(), buffer.data(),
                                              buffer.data(), buffer.data()),
                      sga::InvalidArgument);
}

// ---- bfloat16 inference (conv2d_pack_weight_bf16, conv2d_packed_bf16; src/cpu/bf16_gemm.hpp) ----

TEST_CASE("bfloat16 conversion rounds to nearest-even as the processor does", "[conv2d][cpu][bf16]") {
    using sga::cpu::bf16::from_float;
    using sga::cpu::bf16::to_float;
    REQUIRE(from_float(1.0f) == 0x3F80);
    REQUIRE(from_float(-2.0f) == 0xC000);
    REQUIRE(to_float(0x3F80) == 1.0f);
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
    REQUIRE(from_float(1.0f + 0x1p-8f) == 0x3F80);
    // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
    REQUIRE(from_float(1.0f + 3 * 0x1p-8f) == 0x3F82);
    REQUIRE(from_float(1.0f + 0x1p-8f + 0x1p-20f) == 0x3F81);  // past halfway: up
    REQUIRE(from_float(std::numeric_limits<float>::infinity()) == 0x7F80);
    REQUIRE(from_float(std::numeric_limits<float>::max()) == 0x7F80);  // rounds up to infinity
    REQUIRE(std::isnan(to_float(from_float(std::numeric_limits<float>::quiet_NaN()))));
    REQUIRE(from_float(std::numeric_limits<float>::denorm_min()) == 0x0000);
    REQUIRE(from_float(-std::numeric_limits<float>::denorm_min()) == 0x8000);
    // Every bfloat16 value converts back to itself.
    for (std::uint32_t bits = 0; bits < 0x10000; bits += 7) {
        const auto b = static_cast<std::uint16_t>(bits);
        const float f = to_float(b);
        if (std::isnan(f) || (std::fpclassify(f) == FP_SUBNORMAL)) continue;
        REQUIRE(from_float(f) == b);
    }
}

namespace {
std::vector<float> rounded_to_bf16(std::vector<float> values) {
    for (float& v : values) v = sga::cpu::bf16::to_float(sga::cpu::bf16::from_float(v));
    return values;
}
std::vector<std::uint32_t> pack_bf16(sga::Context& ctx, ConvGeometry g, sga::ConvPass pass, const std::vector<float>& weight) {
    g.batch = 0;  // the packing does not depend on the batch
    std::vector<std::uint32_t> packed(static_cast<std::size_t>(sga::cpu::conv2d_bf16_packed_words(g, pass)), 0xDEADBEEFu);
    sga::cpu::conv2d_pack_weight_bf16(ctx, g, pass, weight.data(), packed.data());
    return packed;
}
}  // namespace

// The packing (bf16::pack_weight: register transposes, loads or gathers where the processor has
// AVX512-BF16, scalar conversions elsewhere) writes exactly the layout bf16_gemm.hpp documents,
// with from_float's bits, for rows whose depths are contiguous (the forward weight, the
// gradient of bfloat16 backward-filter), rows that are adjacent (the backward-data weight) and
// neither; tails of rows and an odd depth are zeros.
TEST_CASE("bfloat16 packing writes the documented layout with from_float's bits", "[conv2d][cpu][bf16]") {
    using sga::cpu::bf16::from_float;
    struct Case {
        std::int64_t rows, depth, r_stride, k_stride;
    };
    for (const Case& c : {Case{37, 75, 75, 1}, Case{64, 1024, 1024, 1}, Case{21, 33, 1, 21}, Case{18, 9, 3, 57},
                          Case{5, 40, 40, 1}}) {
        const std::int64_t extent = (c.rows - 1) * c.r_stride + (c.depth - 1) * c.k_stride + 1;
        std::vector<float> w = random_vector(static_cast<std::size_t>(extent), 9900 + static_cast<std::uint64_t>(c.rows));
        w[0] = std::numeric_limits<float>::denorm_min();  // a subnormal: zero, as the instruction treats it
        std::vector<std::uint32_t> packed(static_cast<std::size_t>(sga::cpu::bf16::packed_words(c.rows, c.depth)), 0xDEADBEEFu);
        sga::cpu::bf16::pack_weight(c.rows, c.depth, w.data(), c.r_stride, c.k_stride, packed.data());
        const std::int64_t pairs = (c.depth + 1) / 2;
        auto expected = [&](std::int64_t r, std::int64_t k) -> std::uint32_t {
            return r < c.rows && k < c.depth ? from_float(w[static_cast<std::size_t>(r * c.r_stride + k * c.k_stride)]) : 0u;
        };
        for (std::int64_t block = 0; block < (c.rows + 15) / 16; ++block)
            for (std::int64_t p = 0; p < pairs; ++p)
                for (std::int64_t i = 0; i < 16; ++i) {
                    const std::int64_t r = block * 16 + i;
                    INFO("rows " << c.rows << " depth " << c.depth << " strides " << c.r_stride << ", " << c.k_stride
                                 << ": row " << r << " pair " << p);
                    REQUIRE(packed[static_cast<std::size_t>((block * pairs + p) * 16 + i)] ==
                            (expected(r, 2 * p) | (expected(r, 2 * p + 1) << 16)));
                }
    }
}

// The bfloat16 kernel computes in float32 the convolution of the inputs and weights rounded to
// bfloat16: against the double reference on rounded operands it is as close as a float32
// kernel, on every test geometry and a few that reach the wide tile's row and column tails,
// several depth blocks (K > 512) and odd depths; identical at 1, 2 and 3 threads. On the
// unrounded operands it is measurably further off: it does round.
TEST_CASE("cpu bfloat16 convolution is float32 arithmetic on bfloat16 operands", "[conv2d][cpu][bf16]") {
    if (!sga::cpu::bf16_available()) {
        sga::Context ctx(sga::Device::Cpu);
        const ConvGeometry g = make_geometry(1, 3, 8, 8, 4, 4, 4, 2, 1);
        std::vector<float> buffer(4096, 0.5f);
        const std::vector<std::uint32_t> packed = pack_bf16(ctx, g, sga::ConvPass::Forward, buffer);
        REQUIRE_THROWS_AS(sga::cpu::conv2d_packed_bf16(ctx, g, sga::ConvPass::Forward, buffer.data(), packed.data(),
                                                       buffer.data()),
                          sga::DeviceError);
        return;
    }
    std::vector<ConvGeometry> geometries = test_geometries();
    geometries.push_back(make_geometry(3, 37, 8, 8, 21, 4, 4, 2, 1));    // 48 columns, R = 21, K = 592
    geometries.push_back(make_geometry(2, 70, 4, 4, 19, 4, 4, 2, 1));    // 8 columns (narrow), K = 1120: 3 depth blocks
    geometries.push_back(make_geometry(5, 9, 12, 12, 67, 3, 3, 1, 1));   // 720 columns, R = 67 past 64 rows
    geometries.push_back(make_geometry(1, 33, 1, 1, 40, 4, 4, 2, 1));    // the transposed 1x1 -> 2x2 mirror
    geometries.push_back(make_geometry(7, 9, 3, 3, 21, 3, 3, 1, 1));     // 63 columns: a wide block, then 15 narrow
    std::uint64_t seed = 9000;
    double largest_rounding_effect = 0.0;
    for (const ConvGeometry& g : geometries) {
        for (sga::ConvPass pass : {sga::ConvPass::Forward, sga::ConvPass::BackwardData}) {
            const bool forward = pass == sga::ConvPass::Forward;
            const std::vector<float> weight = random_vector(static_cast<std::size_t>(g.weight_size()), seed);
            const std::vector<float> input =
                random_vector(static_cast<std::size_t>(forward ? g.input_size() : g.output_size()), seed + 1);
            const auto result_size = static_cast<std::size_t>(forward ? g.output_size() : g.input_size());
            auto reference = [&](const std::vector<float>& in, const std::vector<float>& w) {
                std::vector<double> out(result_size, 0.0);
                const std::vector<double> in_double = to_double(in), w_double = to_double(w);
                if (forward)
                    sga::reference::conv2d_forward<double>(g, in_double.data(), w_double.data(), out.data(), 0.0f);
                else
                    sga::reference::conv2d_backward_data<double>(g, in_double.data(), w_double.data(), out.data(), 0.0f);
                return out;
            };
            const std::vector<double> expected = reference(rounded_to_bf16(input), rounded_to_bf16(weight));
            const std::vector<double> unrounded = reference(input, weight);
            const std::string what = std::string(forward ? "bf16 forward, " : "bf16 backward-data, ") + describe(g);
            const Tolerance tolerance = float_tolerance(forward ? g.in_channels * g.kernel_height * g.kernel_width
                                                                : g.out_channels * g.kernel_height * g.kernel_width);
            sga::Context ctx(sga::Device::Cpu);
            const std::vector<std::uint32_t> packed = pack_bf16(ctx, g, pass, weight);
            std::vector<float> single_thread;
            for (int threads : {1, 2, 3}) {
                ThreadCount thread_count(threads);
                INFO("cpu threads " << threads);
                Guarded actual(std::vector<float>(result_size, std::numeric_limits<float>::quiet_NaN()));
                sga::cpu::conv2d_packed_bf16(ctx, g, pass, input.data(), packed.data(), actual.data());
                require_close(actual.values(), expected, tolerance.rtol, tolerance.atol, what);
                actual.require_guards_intact(what);
                if (threads == 1)
                    single_thread = actual.values();
                else
                    REQUIRE(actual.values() == single_thread);
            }
            for (std::size_t i = 0; i < result_size; ++i)
                largest_rounding_effect = std::max(largest_rounding_effect, std::abs(single_thread[i] - unrounded[i]));
            seed += 10;
        }
    }
    // Random operands in [-1, 1): bfloat16's 8-bit significands move sums of ~50-1000 products
    // by about 1e-2, a thousand times float32's rounding.
    REQUIRE(largest_rounding_effect > 1e-3);
}

// Each image of a batch gets the bits it gets alone: the kernels choose their tile by the
// columns of each block of the product (batch x positions), and both tiles sum each element in
// the same order.
TEST_CASE("cpu bfloat16 convolution gives each image of a batch the bits it gets alone", "[conv2d][cpu][bf16]") {
    if (!sga::cpu::bf16_available()) return;  // the test above checks the refusal
    const std::vector<ConvGeometry> geometries = {
        make_geometry(53, 96, 2, 2, 21, 4, 4, 2, 1),   // 1 position an image: 53 columns (48 wide, 5 narrow) against 1
        make_geometry(9, 40, 8, 8, 37, 4, 4, 2, 1),    // 16 positions: 144 columns against 16
        make_geometry(5, 9, 4, 4, 70, 4, 4, 2, 1),     // 4 positions, K = 144 (forward), R = 144 (backward-data)
        make_geometry(20, 10, 4, 4, 7, 4, 4, 1, 0),    // the window is the whole input: (N, D) row-major
    };
    std::uint64_t seed = 9500;
    for (const ConvGeometry& g : geometries) {
        for (sga::ConvPass pass : {sga::ConvPass::Forward, sga::ConvPass::BackwardData}) {
            const bool forward = pass == sga::ConvPass::Forward;
            ConvGeometry one = g;
            one.batch = 1;
            const std::int64_t in_image = forward ? one.input_size() : one.output_size();
            const std::int64_t out_image = forward ? one.output_size() : one.input_size();
            const std::vector<float> weight = random_vector(static_cast<std::size_t>(g.weight_size()), seed);
            const std::vector<float> input = random_vector(static_cast<std::size_t>(g.batch * in_image), seed + 1);
            sga::Context ctx(sga::Device::Cpu);
            const std::vector<std::uint32_t> packed = pack_bf16(ctx, g, pass, weight);
            for (int threads : {1, 2, 3}) {
                ThreadCount thread_count(threads);
                INFO((forward ? "bf16 forward, " : "bf16 backward-data, ") << describe(g) << ", cpu threads " << threads);
                std::vector<float> batch(static_cast<std::size_t>(g.batch * out_image));
                sga::cpu::conv2d_packed_bf16(ctx, g, pass, input.data(), packed.data(), batch.data());
                for (std::int64_t n = 0; n < g.batch; ++n) {
                    std::vector<float> alone(static_cast<std::size_t>(out_image));
                    sga::cpu::conv2d_packed_bf16(ctx, one, pass, input.data() + n * in_image, packed.data(), alone.data());
                    const auto first = batch.begin() + n * out_image;
                    REQUIRE(std::vector<float>(first, first + out_image) == alone);
                }
            }
            seed += 10;
        }
    }
}

// The training passes in bfloat16: backward-filter (conv2d_backward_filter_bf16) and the two
// data passes accumulating (beta 1), as bfloat16 training runs them (ops::conv2d). Against the
// double reference on rounded operands, as close as float32 arithmetic; identical at 1, 2 and
// 3 threads; beta 0 ignores a NaN-filled output. Includes a batch whose columns take two chunks.
TEST_CASE("cpu bfloat16 training passes are float32 arithmetic on bfloat16 operands", "[conv2d][cpu][bf16]") {
    if (!sga::cpu::bf16_available()) {
        sga::Context ctx(sga::Device::Cpu);
        const ConvGeometry g = make_geometry(1, 3, 8, 8, 4, 4, 4, 2, 1);
        std::vector<float> buffer(4096, 0.5f);
        REQUIRE_THROWS_AS(sga::cpu::conv2d_backward_filter_bf16(ctx, g, buffer.data(), buffer.data(), buffer.data(), 0.0f),
                          sga::DeviceError);
        return;
    }
    std::vector<ConvGeometry> geometries = test_geometries();
    geometries.push_back(make_geometry(17, 64, 32, 32, 8, 4, 4, 2, 1));  // columns of 16 images a chunk: two chunks
    geometries.push_back(make_geometry(9, 40, 8, 8, 67, 4, 4, 2, 1));    // Cout 67: wide and narrow column blocks
    std::uint64_t seed = 9700;
    for (const ConvGeometry& g : geometries) {
        const std::vector<float> input = random_vector(static_cast<std::size_t>(g.input_size()), seed);
        const std::vector<float> grad_output = random_vector(static_cast<std::size_t>(g.output_size()), seed + 1);
        const std::vector<float> weight = random_vector(static_cast<std::size_t>(g.weight_size()), seed + 2);
        const std::vector<double> x = to_double(rounded_to_bf16(input)), dy = to_double(rounded_to_bf16(grad_output)),
                                  w = to_double(rounded_to_bf16(weight));
        sga::Context ctx(sga::Device::Cpu);
        for (float beta : {0.0f, 1.0f}) {
            const std::string what = "bf16 training passes, beta " + std::to_string(beta) + ", " + describe(g);
            INFO(what);
            // Backward-filter.
            const std::vector<float> initial_dw = random_vector(static_cast<std::size_t>(g.weight_size()), seed + 3);
            std::vector<double> expected_dw = to_double(initial_dw);
            sga::reference::conv2d_backward_filter<double>(g, x.data(), dy.data(), expected_dw.data(), beta);
            std::vector<float> single_thread;
            for (int threads : {1, 2, 3}) {
                ThreadCount thread_count(threads);
                Guarded dw(beta == 1.0f ? initial_dw
                                        : std::vector<float>(initial_dw.size(), std::numeric_limits<float>::quiet_NaN()));
                sga::cpu::conv2d_backward_filter_bf16(ctx, g, input.data(), grad_output.data(), dw.data(), beta);
                const Tolerance t = float_tolerance(g.batch * g.out_height * g.out_width);
                require_close(dw.values(), expected_dw, t.rtol, t.atol, what + " backward-filter, threads " + std::to_string(threads));
                dw.require_guards_intact(what);
                if (threads == 1)
                    single_thread = dw.values();
                else
                    REQUIRE(dw.values() == single_thread);
            }
            // Forward and backward-data, accumulating or overwriting.
            for (sga::ConvPass pass : {sga::ConvPass::Forward, sga::ConvPass::BackwardData}) {
                const bool forward = pass == sga::ConvPass::Forward;
                const std::vector<float> initial =
                    random_vector(static_cast<std::size_t>(forward ? g.output_size() : g.input_size()), seed + 4);
                std::vector<double> expected = to_double(initial);
                if (forward)
                    sga::reference::conv2d_forward<double>(g, x.data(), w.data(), expected.data(), beta);
                else
                    sga::reference::conv2d_backward_data<double>(g, dy.data(), w.data(), expected.data(), beta);
                const std::vector<std::uint32_t> packed = pack_bf16(ctx, g, pass, weight);
                Guarded out(beta == 1.0f ? initial : std::vector<float>(initial.size(), std::numeric_limits<float>::quiet_NaN()));
                sga::cpu::conv2d_packed_bf16(ctx, g, pass, forward ? input.data() : grad_output.data(), packed.data(),
                                             out.data(), beta);
                const Tolerance t = float_tolerance(forward ? g.in_channels * g.kernel_height * g.kernel_width
                                                            : g.out_channels * g.kernel_height * g.kernel_width);
                require_close(out.values(), expected, t.rtol, t.atol, what + (forward ? " forward" : " backward-data"));
                out.require_guards_intact(what);
            }
        }
        seed += 10;
    }
}

TEST_CASE("cpu add_channel_bias and its backward match the reference", "[conv2d][cpu][bias]") {
    struct Case {
        std::int64_t batch, channels, spatial;
    };
    std::uint64_t seed = 500;
    for (const Case& c : {Case{1, 3, 35}, Case{4, 13, 1}, Case{3, 7, 64}, Case{64, 3, 1024}}) {
        const std::string what = "bias N " + std::to_string(c.batch) + " C " + std::to_string(c.channels) + " HW " +
                                 std::to_string(c.spatial) + ", seed " + std::to_string(seed);
        const auto size = static_cast<std::size_t>(c.batch * c.channels * c.spatial);
        const std::vector<float> bias = random_vector(static_cast<std::size_t>(c.channels), seed);
        const std::vector<float> initial = random_vector(size, seed + 1);
        sga::Context ctx(sga::Device::Cpu);

        // Forward accumulates onto the output: one rounding per element.
        std::vector<double> expected = to_double(initial);
        const std::vector<double> bias_double = to_double(bias);
        sga::reference::add_channel_bias<double>(c.batch, c.channels, c.spatial, bias_double.data(), expected.data());
        Guarded output(initial);
        sga::cpu::add_channel_bias(ctx, c.batch, c.channels, c.spatial, bias.data(), output.data());
        require_close(output.values(), expected, 1e-6, 1e-6, "add_channel_bias " + what);
        output.require_guards_intact(what);

        // Backward accumulates a sum of N * HW terms into grad_bias.
        const std::vector<float> grad_output = random_vector(size, seed + 2);
        const std::vector<float> grad_bias_initial = random_vector(static_cast<std::size_t>(c.channels), seed + 3);
        std::vector<double> expected_grad = to_double(grad_bias_initial);
        const std::vector<double> grad_output_double = to_double(grad_output);
        sga::reference::add_channel_bias_backward<double>(c.batch, c.channels, c.spatial, grad_output_double.data(),
                                                          expected_grad.data());
        Guarded grad_bias(grad_bias_initial);
        sga::cpu::add_channel_bias_backward(ctx, c.batch, c.channels, c.spatial, grad_output.data(), grad_bias.data());
        const Tolerance tolerance = float_tolerance(c.batch * c.spatial);
        require_close(grad_bias.values(), expected_grad, tolerance.rtol, tolerance.atol,
                      "add_channel_bias_backward " + what);
        grad_bias.require_guards_intact(what);
        seed += 10;
    }
}

TEST_CASE("reference conv2d gradients match central differences of the reference forward", "[conv2d][reference]") {
    // L(x, w) = sum(upstream * conv2d_forward(x, w)) with a random upstream gradient; then
    // dL/dx = conv2d_backward_data(upstream, w) and dL/dw = conv2d_backward_filter(x, upstream).
    // L is linear in each of x and w, so the central difference has no truncation error; its
    // rounding error in double is about 1e-16 * sum|terms| / h ~ 1e-12 here, hence 1e-8.
    const double h = 1e-3, tolerance = 1e-8;
    std::uint64_t seed = 9000;
    for (const ConvGeometry& g : {make_geometry(2, 3, 5, 4, 4, 3, 3, 2, 1), make_geometry(1, 2, 4, 4, 3, 4, 4, 2, 1),
                                  make_geometry(2, 2, 3, 3, 2, 1, 1, 1, 0), make_geometry(2, 3, 2, 2, 2, 4, 4, 2, 1),
                                  make_geometry(1, 2, 3, 4, 2, 2, 3, 1, 1)}) {
        std::vector<double> x = to_double(random_vector(static_cast<std::size_t>(g.input_size()), seed));
        std::vector<double> w = to_double(random_vector(static_cast<std::size_t>(g.weight_size()), seed + 1));
        const std::vector<double> upstream =
            to_double(random_vector(static_cast<std::size_t>(g.output_size()), seed + 2));
        std::vector<double> output(static_cast<std::size_t>(g.output_size()));
        auto loss = [&] {
            sga::reference::conv2d_forward<double>(g, x.data(), w.data(), output.data(), 0.0);
            double sum = 0.0;
            for (std::size_t i = 0; i < output.size(); ++i) sum += upstream[i] * output[i];
            return sum;
        };
        auto central_difference = [&](std::vector<double>& variable) {
            std::vector<double> gradient(variable.size());
            for (std::size_t i = 0; i < variable.size(); ++i) {
                const double saved = variable[i];
                variable[i] = saved + h;
                const double plus = loss();
                variable[i] = saved - h;
                const double minus = loss();
                variable[i] = saved;
                gradient[i] = (plus - minus) / (2 * h);
            }
            return gradient;
        };
        std::vector<double> grad_x(x.size()), grad_w(w.size());
        sga::reference::conv2d_backward_data<double>(g, upstream.data(), w.data(), grad_x.data(), 0.0);
        sga::reference::conv2d_backward_filter<double>(g, x.data(), upstream.data(), grad_w.data(), 0.0);
        const std::string what = describe(g) + ", seed " + std::to_string(seed);
        require_close(grad_x, central_difference(x), tolerance, tolerance, "reference backward_data vs FD, " + what);
        require_close(grad_w, central_difference(w), tolerance, tolerance, "reference backward_filter vs FD, " + what);
        seed += 10;
    }
}

TEST_CASE("cpu conv2d kernels reject bad geometry and beta", "[conv2d][cpu]") {
    sga::Context ctx(sga::Device::Cpu);
    ConvGeometry g = make_geometry(1, 2, 4, 4, 3, 3, 3, 1, 1);
    std::vector<float> input(static_cast<std::size_t>(g.input_size()), 1.0f);
    std::vector<float> weight(static_cast<std::size_t>(g.weight_size()), 1.0f);
    std::vector<float> output(static_cast<std::size_t>(g.output_size()), 0.0f);
    CHECK_THROWS_AS(sga::cpu::conv2d_forward(ctx, g, input.data(), weight.data(), output.data(), 0.5f),
                    sga::InvalidArgument);
    ConvGeometry wrong = g;
    wrong.out_height = 3;  // does not follow from 4 + 2 - 3 + 1 = 4
    CHECK_THROWS_AS(sga::cpu::conv2d_forward(ctx, wrong, input.data(), weight.data(), output.data(), 0.0f),
                    sga::InvalidArgument);
    CHECK_THROWS_AS(sga::cpu::conv2d_backward_data(ctx, wrong, output.data(), weight.data(), input.data(), 0.0f),
                    sga::InvalidArgument);
    CHECK_THROWS_AS(sga::cpu::conv2d_backward_filter(ctx, wrong, input.data(), output.data(), weight.data(), 0.0f),
                    sga::InvalidArgument);
    wrong = g;
    wrong.stride = 0;
    CHECK_THROWS_AS(sga::cpu::conv2d_forward(ctx, wrong, input.data(), weight.data(), output.data(), 0.0f),
                    sga::InvalidArgument);
}

TEST_CASE("cpu conv2d kernels take scratch only from the arena, which stops growing", "[conv2d][cpu][allocation]") {
    sga::Context ctx(sga::Device::Cpu);
    // One geometry per path: per image (P = 64, 8 images: at most 4 threads) or batched and
    // reordered (more threads), batched with P = 16, partial tap window, input-is-columns.
    const std::vector<ConvGeometry> geometries = {
        make_geometry(8, 16, 16, 16, 32, 4, 4, 2, 1), make_geometry(8, 16, 8, 8, 32, 4, 4, 2, 1),
        make_geometry(8, 32, 2, 2, 24, 4, 4, 2, 1), make_geometry(8, 24, 4, 4, 10, 4, 4, 1, 0)};
    std::vector<std::vector<float>> buffers;
    for (const ConvGeometry& g : geometries) {
        buffers.push_back(random_vector(static_cast<std::size_t>(g.input_size()), 1));
        buffers.push_back(random_vector(static_cast<std::size_t>(g.weight_size()), 2));
        buffers.push_back(random_vector(static_cast<std::size_t>(g.output_size()), 3));
    }
    auto step = [&] {
        for (std::size_t i = 0; i < geometries.size(); ++i) {
            const ConvGeometry& g = geometries[i];
            float* input = buffers[3 * i].data();
            float* weight = buffers[3 * i + 1].data();
            float* output = buffers[3 * i + 2].data();
            sga::cpu::conv2d_forward(ctx, g, input, weight, output, 0.0f);
            sga::cpu::conv2d_backward_data(ctx, g, output, weight, input, 0.0f);
            sga::cpu::conv2d_backward_filter(ctx, g, input, output, weight, 0.0f);
        }
        ctx.arena().reset();
    };
    step();  // the arena grows to this step's high-water mark
    step();  // and is consolidated into one block at the reset after the first
    const std::uint64_t before = sga::allocation_count();
    step();
    step();
    CHECK(sga::allocation_count() == before);
}

TEST_CASE("the kernel dispatcher reaches the cpu convolution", "[conv2d][cpu]") {
    const ConvGeometry g = make_geometry(2, 3, 5, 5, 4, 3, 3, 1, 1);
    const std::vector<float> input = random_vector(static_cast<std::size_t>(g.input_size()), 31);
    const std::vector<float> weight = random_vector(static_cast<std::size_t>(g.weight_size()), 32);
    std::vector<float> via_dispatch(static_cast<std::size_t>(g.output_size()));
    std::vector<float> direct(via_dispatch.size());
    sga::Context ctx(sga::Device::Cpu);
    sga::kernels::conv2d_forward(ctx, g, input.data(), weight.data(), via_dispatch.data(), 0.0f);
    sga::cpu::conv2d_forward(ctx, g, input.data(), weight.data(), direct.data(), 0.0f);
    CHECK(via_dispatch == direct);
}
