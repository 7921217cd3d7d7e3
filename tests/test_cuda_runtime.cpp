// The CUDA context's runtime services, the ones a first GPU run must prove: copies on the
// context's stream through page-locked staging, the arena waiting for the stream before it
// frees memory, the convolution algorithm choice (deterministic only, within the workspace
// limit, falling back when the workspace cannot be allocated) and concurrent scoring.
// test_cuda.cpp checks each kernel against the CPU; test_cuda_model.cpp the whole model.
//
// Without a usable GPU each [cuda] test prints "SKIPPED: no usable CUDA device: <CUDA's
// error>" and returns, or fails under SKIPGANOMALY_REQUIRE_GPU=1. The [no-gpu] tests at the
// end run everywhere.
//
// Tolerances: copies and concurrent scoring are exact (bit for bit). Convolutions against
// the CPU: test_cuda.cpp's reasoning, rtol 1e-4 with atol 1e-4 x rms(reference).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "reference.hpp"
#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/engine/kernels.hpp"
#include "skipganomaly/engine/memory.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"
#include "skipganomaly/engine/tensor.hpp"
#include "test_support.hpp"
#if SKIPGANOMALY_WITH_CUDA
#include "cuda/runtime.hpp"
#endif

namespace {

using namespace sga;
using sga::testing::random_image;
using sga::testing::random_vector;
using sga::testing::require_close;
using sga::testing::skip_without_gpu;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

[[maybe_unused]] ConvGeometry geometry(std::int64_t batch, std::int64_t in_channels, std::int64_t size, std::int64_t out_channels,
                      std::int64_t kernel, std::int64_t stride, std::int64_t padding) {
    ConvGeometry g;
    g.batch = batch;
    g.in_channels = in_channels;
    g.in_height = g.in_width = size;
    g.out_channels = out_channels;
    g.kernel_height = g.kernel_width = kernel;
    g.stride = stride;
    g.padding = padding;
    g.out_height = g.out_width = ConvGeometry::output_extent(size, kernel, stride, padding);
    return g;
}

// The convolution's forward on `ctx`, from host data, back to the host.
[[maybe_unused]] std::vector<float> forward_on(Context& ctx, const ConvGeometry& g, const std::vector<float>& input,
                              const std::vector<float>& weight) {
    const Tensor x = Tensor::from_host(Shape{g.input_size()}, input, ctx.device());
    const Tensor w = Tensor::from_host(Shape{g.weight_size()}, weight, ctx.device());
    Tensor y(Shape{g.output_size()}, ctx.device());
    kernels::conv2d_forward(ctx, g, x.data(), w.data(), y.data(), 0.0f);
    return host_values(ctx, y.view());
}

[[maybe_unused]] void require_conv_close(const std::vector<float>& gpu, const std::vector<float>& cpu, const std::string& what) {
    double squares = 0.0;
    for (float v : cpu) squares += static_cast<double>(v) * v;
    const double rms = std::sqrt(squares / static_cast<double>(std::max<std::size_t>(cpu.size(), 1)));
    require_close(gpu, cpu, 1e-4, 1e-4 * rms, what);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// copies on the context's stream

TEST_CASE("cuda copies on a context's stream round-trip exactly, in pieces through the staging buffer",
          "[cuda][context][copy]") {
    if (skip_without_gpu()) return;
    Context ctx(Device::Cuda);
    // 0 and 1 float, a few KB, and more than the 16 MiB staging buffer (so it goes in
    // pieces), each at an odd float offset on both sides.
    for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{5'000'017}}) {
        INFO("floats: " << n);
        const std::vector<float> host = random_vector(n + 1, 100 + n);
        Tensor device(Shape{static_cast<std::int64_t>(n + 2)}, Device::Cuda);
        copy_bytes(ctx, device.data() + 1, Device::Cuda, host.data() + 1, Device::Cpu, n * sizeof(float));
        Tensor other(Shape{static_cast<std::int64_t>(n + 2)}, Device::Cuda);
        copy_bytes(ctx, other.data() + 1, Device::Cuda, device.data() + 1, Device::Cuda, n * sizeof(float));
        std::vector<float> back(n + 1, -1.0f);
        copy_bytes(ctx, back.data() + 1, Device::Cpu, other.data() + 1, Device::Cuda, n * sizeof(float));
        CHECK(back[0] == -1.0f);  // nothing written before the destination
        CHECK(std::memcmp(back.data() + 1, host.data() + 1, n * sizeof(float)) == 0);
    }
}

TEST_CASE("a copy on a context's stream sees the work queued before it on that context", "[cuda][context][copy]") {
    if (skip_without_gpu()) return;
    Context first(Device::Cuda), second(Device::Cuda);
    const std::int64_t n = 1 << 22;
    Tensor a(Shape{n}, Device::Cuda), b(Shape{n}, Device::Cuda);
    kernels::fill(first, n, 1.5f, a.data());
    kernels::fill(second, n, -2.0f, b.data());
    for (int i = 0; i < 10; ++i) kernels::accumulate_scaled(first, n, 1.0f, a.data(), a.data());  // a *= 2
    // No synchronize(): each copy is ordered after its own context's work.
    const std::vector<float> a_values = host_values(first, a.view());
    const std::vector<float> b_values = host_values(second, b.view());
    CHECK(a_values.front() == 1536.0f);
    CHECK(a_values.back() == 1536.0f);
    CHECK(b_values.front() == -2.0f);
    CHECK(b_values.back() == -2.0f);
}

// ---------------------------------------------------------------------------------------
// the arena and the stream

TEST_CASE("an arena reset while work is in flight waits for it and keeps its results", "[cuda][context][arena]") {
    if (skip_without_gpu()) return;
#if SKIPGANOMALY_WITH_CUDA  // cuda:: internals; skip_without_gpu() is always true otherwise
    Context ctx(Device::Cuda);
    Arena& arena = ctx.arena();
    const std::int64_t n = std::int64_t{1} << 24;  // 64 MiB per buffer: the kernels take a while
    Tensor result(Shape{3}, Device::Cuda);         // outside the arena

    // A first chunk, then a second: the next reset() must release both (and merge them).
    float* first = arena.allocate_floats(static_cast<std::size_t>(n));
    kernels::fill(ctx, n, 0.25f, first);
    for (int i = 0; i < 40; ++i) kernels::accumulate_scaled(ctx, n, 0.0f, first, first);  // work, values kept
    float* second = arena.allocate_floats(static_cast<std::size_t>(n));
    kernels::fill(ctx, n, 3.0f, second);
    kernels::mean_forward(ctx, n, first, result.data());
    kernels::mean_forward(ctx, n, second, result.data() + 1);
    REQUIRE(arena.capacity() > static_cast<std::size_t>(n) * sizeof(float));  // two chunks
    arena.reset();  // frees both chunks: must first wait for the kernels still reading them
    CHECK(cuda::stream_idle(ctx));

    // Reuse of the merged block right away: these kernels overwrite memory the previous
    // cycle's kernels read; stream order keeps the previous results intact.
    float* reused = arena.allocate_floats(static_cast<std::size_t>(2 * n));
    kernels::fill(ctx, 2 * n, -1.0f, reused);
    kernels::mean_forward(ctx, 2 * n, reused, result.data() + 2);
    const std::vector<float> values = host_values(ctx, result.view());
    CHECK(values[0] == 0.25f);
    CHECK(values[1] == 3.0f);
    CHECK(values[2] == -1.0f);
#endif
}

// ---------------------------------------------------------------------------------------
// convolution algorithms: deterministic, within the limit, falling back on allocation failure

namespace {

[[maybe_unused]] Architecture full_architecture(int image_size) {
    Architecture a;
    a.image_size = image_size;
    a.channels = 3;  // ngf = ndf = 64, nz = 100: the official sizes
    return a;
}

// One training step and one scoring pass of the full-size model at `image_size`, batch
// `batch`, on ctx: every convolution geometry the model has, in all three directions.
[[maybe_unused]] void run_model_once(Context& ctx, int image_size, std::int64_t batch) {
    SkipGanomaly model(full_architecture(image_size), {}, {});
    model.materialize(ctx);
    RandomStream random(7);
    model.initialize(ctx, random);
    Tensor images(Shape{batch, 3, image_size, image_size}, Device::Cuda);
    kernels::fill_uniform(ctx, images.numel(), -1.0f, 1.0f, 9, 0, images.data());
    Tape tape(ctx);
    model.train_step(ctx, tape, images.view(), random);
    model.score(ctx, tape, images.view(), BatchNormMode::RunningStatistics, false);
    ctx.synchronize();
}

}  // namespace

TEST_CASE("the convolution algorithms chosen for every model shape at batch 64 are deterministic",
          "[cuda][conv2d][determinism]") {
    if (skip_without_gpu()) return;
#if SKIPGANOMALY_WITH_CUDA  // cuda:: internals; skip_without_gpu() is always true otherwise
    for (const int image_size : {32, 64, 128, 256}) {
        Context ctx(Device::Cuda, 1);
        const std::int64_t batch = 64;
        run_model_once(ctx, image_size, batch);
        const std::vector<cuda::ConvolutionAlgorithmReport> chosen = cuda::convolution_algorithms(ctx);
        REQUIRE(chosen.size() >= 3);
        for (const cuda::ConvolutionAlgorithmReport& r : chosen) {
            std::cout << "isize " << image_size << " batch " << batch << ": conv2d " << r.direction << " " << r.geometry
                      << ": " << r.algorithm_name << ", workspace " << r.workspace_bytes << " bytes\n";
            INFO("isize " << image_size << ", " << r.direction << " " << r.geometry << ": " << r.algorithm_name);
            CHECK(r.deterministic);
            // The atomics-based algorithms cuDNN documents as non-deterministic.
            CHECK(r.algorithm_name != "BWD_DATA_ALGO_0");
            CHECK(r.algorithm_name != "BWD_FILTER_ALGO_0");
            CHECK(r.algorithm_name != "BWD_FILTER_ALGO_3");
            CHECK(r.workspace_bytes <= ctx.cuda_workspace_limit());
            CHECK(r.fallbacks == 0);
        }
        std::vector<std::string> geometries;
        for (const cuda::ConvolutionAlgorithmReport& r : chosen)
            if (std::find(geometries.begin(), geometries.end(), r.geometry) == geometries.end())
                geometries.push_back(r.geometry);
        INFO("isize " << image_size << ": " << geometries.size() << " geometries");
        REQUIRE(geometries.size() >= 4);
    }
#endif
}

TEST_CASE("the model's backward convolutions at batch 64 give the same bits twice", "[cuda][conv2d][determinism]") {
    if (skip_without_gpu()) return;
    // The reductions where an atomics-based algorithm would show: the filter gradient over
    // N*OH*OW and the data gradient over Cout*KH*KW, at the model's widest shapes.
    Context ctx(Device::Cuda, 2);
    for (const ConvGeometry& g : {geometry(64, 3, 64, 64, 4, 2, 1), geometry(64, 64, 32, 128, 4, 2, 1),
                                  geometry(64, 512, 4, 512, 4, 2, 1), geometry(64, 256, 4, 100, 4, 1, 0),
                                  geometry(64, 64, 128, 128, 4, 2, 1)}) {
        const Tensor input = Tensor::from_host(Shape{g.input_size()}, random_vector(static_cast<std::size_t>(g.input_size()), 1), Device::Cuda);
        const Tensor weight = Tensor::from_host(Shape{g.weight_size()}, random_vector(static_cast<std::size_t>(g.weight_size()), 2), Device::Cuda);
        const Tensor grad_output = Tensor::from_host(Shape{g.output_size()}, random_vector(static_cast<std::size_t>(g.output_size()), 3), Device::Cuda);
        Tensor grad_input(Shape{g.input_size()}, Device::Cuda), grad_weight(Shape{g.weight_size()}, Device::Cuda);
        std::vector<float> first_data, first_filter;
        for (int run = 0; run < 2; ++run) {
            kernels::conv2d_backward_data(ctx, g, grad_output.data(), weight.data(), grad_input.data(), 0.0f);
            kernels::conv2d_backward_filter(ctx, g, input.data(), grad_output.data(), grad_weight.data(), 0.0f);
            std::vector<float> data = host_values(ctx, grad_input.view()), filter = host_values(ctx, grad_weight.view());
            if (run == 0) {
                first_data = std::move(data);
                first_filter = std::move(filter);
                continue;
            }
            INFO("batch " << g.batch << ", in " << g.in_channels << "x" << g.in_height << ", out " << g.out_channels);
            CHECK(same_bits(data, first_data));
            CHECK(same_bits(filter, first_filter));
        }
    }
}

TEST_CASE("a convolution whose workspace cannot be allocated falls back to a smaller one", "[cuda][conv2d][workspace]") {
    if (skip_without_gpu()) return;
#if SKIPGANOMALY_WITH_CUDA  // cuda:: internals; skip_without_gpu() is always true otherwise
    Context cpu(Device::Cpu);
    // Find, among the model's geometries at batch 64, a forward whose chosen algorithm needs
    // workspace while another acceptable candidate needs less (implicit GEMM needs none).
    const std::vector<ConvGeometry> candidates = {
        geometry(64, 3, 32, 64, 4, 2, 1),   geometry(64, 64, 16, 128, 4, 2, 1), geometry(64, 128, 8, 256, 4, 2, 1),
        geometry(64, 256, 4, 100, 4, 1, 0), geometry(64, 3, 128, 64, 4, 2, 1),  geometry(64, 64, 64, 128, 4, 2, 1),
    };
    bool exercised = false;
    for (const ConvGeometry& g : candidates) {
        const std::vector<float> input = random_vector(static_cast<std::size_t>(g.input_size()), 11);
        const std::vector<float> weight = random_vector(static_cast<std::size_t>(g.weight_size()), 12);
        Context probe(Device::Cuda);
        forward_on(probe, g, input, weight);
        const cuda::ConvolutionAlgorithmReport preferred = cuda::convolution_algorithms(probe).at(0);
        const std::vector<std::size_t>& sizes = preferred.candidate_workspace_bytes;
        if (preferred.workspace_bytes == 0 || *std::min_element(sizes.begin(), sizes.end()) >= preferred.workspace_bytes)
            continue;
        exercised = true;
        INFO(preferred.geometry << ": preferred " << preferred.algorithm_name << " with " << preferred.workspace_bytes
                                << " bytes");

        // The device "has" one byte less than the preferred algorithm needs.
        Context ctx(Device::Cuda);
        cuda::simulate_free_device_memory(ctx, preferred.workspace_bytes - 1);
        const std::vector<float> gpu = forward_on(ctx, g, input, weight);
        const cuda::ConvolutionAlgorithmReport used = cuda::convolution_algorithms(ctx).at(0);
        CHECK(used.fallbacks >= 1);
        CHECK(used.workspace_bytes < preferred.workspace_bytes);
        CHECK(used.deterministic);
        require_conv_close(gpu, forward_on(cpu, g, input, weight), "fallback forward " + used.geometry);

        // With no memory at all for the workspace: an algorithm without one, or a clear error.
        Context starved(Device::Cuda);
        cuda::simulate_free_device_memory(starved, 0);
        if (*std::min_element(sizes.begin(), sizes.end()) == 0) {
            require_conv_close(forward_on(starved, g, input, weight), forward_on(cpu, g, input, weight),
                               "workspace-free forward " + used.geometry);
            CHECK(cuda::convolution_algorithms(starved).at(0).workspace_bytes == 0);
        } else {
            const std::string message = sga::testing::message_of<OutOfMemoryError>([&] { forward_on(starved, g, input, weight); });
            CHECK_THAT(message, Catch::Contains("out of device memory for the forward convolution's workspace"));
        }
        break;
    }
    INFO("no model geometry at batch 64 has a forward algorithm with a workspace and a cheaper alternative; "
         "the fallback was not exercised");
    CHECK(exercised);
#endif
}

TEST_CASE("the workspace limit bounds every choice, and lowering it re-chooses", "[cuda][conv2d][workspace]") {
    if (skip_without_gpu()) return;
#if SKIPGANOMALY_WITH_CUDA  // cuda:: internals; skip_without_gpu() is always true otherwise
    Context cpu(Device::Cpu);
    Context ctx(Device::Cuda);
    CHECK(ctx.cuda_workspace_limit() > 0);
    const ConvGeometry g = geometry(64, 64, 16, 128, 4, 2, 1);
    const std::vector<float> input = random_vector(static_cast<std::size_t>(g.input_size()), 21);
    const std::vector<float> weight = random_vector(static_cast<std::size_t>(g.weight_size()), 22);
    const std::vector<float> expected = forward_on(cpu, g, input, weight);
    require_conv_close(forward_on(ctx, g, input, weight), expected, "forward, default limit");
    // No workspace at all: the forward must still run (implicit GEMM needs none).
    ctx.set_cuda_workspace_limit(0);
    CHECK(ctx.cuda_workspace_limit() == 0);
    require_conv_close(forward_on(ctx, g, input, weight), expected, "forward, limit 0");
    for (const cuda::ConvolutionAlgorithmReport& r : cuda::convolution_algorithms(ctx)) {
        INFO(r.direction << " " << r.geometry << ": " << r.algorithm_name);
        CHECK(r.workspace_bytes == 0);
    }
#endif
}

// ---------------------------------------------------------------------------------------
// concurrent scoring

TEST_CASE("cuda scoring from 8 threads at once gives the single-threaded bits", "[cuda][detector][concurrency]") {
    if (skip_without_gpu()) return;
    DetectorOptions options = sga::testing::tiny_detector_options(Device::Cuda);
    options.architecture.channels = 3;
    options.architecture.generator_features = 16;
    options.architecture.discriminator_features = 16;
    options.architecture.latent_size = 32;
    Detector detector(options);
    std::vector<Image> training;
    for (unsigned i = 0; i < 32; ++i) training.push_back(random_image(32, 32, 3, 600 + i));
    detector.fit(training);
    REQUIRE(detector.device() == Device::Cuda);

    std::vector<Image> probe;
    for (unsigned i = 0; i < 24; ++i) probe.push_back(random_image(32, 32, 3, 700 + i));
    // score, reconstruction error and latent error of one image
    auto bits_of = [](const ScoreResult& r) { return std::vector<float>{r.score, r.reconstruction_error, r.latent_error}; };
    std::vector<std::vector<float>> expected;
    for (const Image& image : probe) expected.push_back(bits_of(detector.score(image.view())));
    // A batch of 24 may run other convolution algorithms than a batch of 1 (cuDNN chooses
    // per shape): close to the single scores (running statistics: each image as alone), and
    // the reference, bit for bit, for the threads' batch calls.
    const std::vector<ScoreResult> batched = detector.score(probe);
    std::vector<std::vector<float>> expected_batched;
    std::vector<float> batch_scores, single_scores;
    for (std::size_t i = 0; i < probe.size(); ++i) {
        expected_batched.push_back(bits_of(batched[i]));
        batch_scores.push_back(batched[i].score);
        single_scores.push_back(expected[i][0]);
    }
    require_close(batch_scores, single_scores, 1e-3, 1e-7, "batch vs single-image scores");

    std::atomic<int> mismatches{0}, calls{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            for (int k = 0; k < 60; ++k) {
                const std::size_t i = static_cast<std::size_t>((t * 7 + k) % static_cast<int>(probe.size()));
                if (!same_bits(bits_of(detector.score(probe[i].view())), expected[i])) ++mismatches;
                ++calls;
            }
            const std::vector<ScoreResult> all = detector.score(probe);
            for (std::size_t i = 0; i < probe.size(); ++i)
                if (!same_bits(bits_of(all[i]), expected_batched[i])) ++mismatches;
        });
    for (std::thread& t : threads) t.join();
    CHECK(calls == 480);
    CHECK(mismatches == 0);
}

// ---------------------------------------------------------------------------------------
// [no-gpu]: what can be checked without a device. These run (and pass) everywhere.

TEST_CASE("copy_bytes with a CPU context copies host memory, and the workspace limit is a CUDA setting",
          "[cuda][no-gpu]") {
    Context cpu(Device::Cpu);
    const std::vector<float> source = random_vector(33, 1);
    std::vector<float> destination(33, 0.0f);
    copy_bytes(cpu, destination.data(), Device::Cpu, source.data(), Device::Cpu, source.size() * sizeof(float));
    CHECK(destination == source);
    const Tensor t = Tensor::from_host(Shape{33}, source, Device::Cpu);
    CHECK(host_values(cpu, t.view()) == source);
    cpu.set_cuda_workspace_limit(1 << 20);
    CHECK(cpu.cuda_workspace_limit() == 0);
}

#if SKIPGANOMALY_WITH_CUDA
TEST_CASE("after a failed workspace allocation the next candidate in ranking order with a smaller workspace is taken",
          "[cuda][no-gpu]") {
    using cuda::next_smaller_workspace;
    using cuda::no_candidate;
    // Ranking order wins over size: from 1000 bytes, 500 comes before 0.
    const std::vector<std::size_t> sizes = {1000, 2000, 500, 0};
    CHECK(next_smaller_workspace(sizes, 0) == 2);
    CHECK(next_smaller_workspace(sizes, 1) == 2);
    CHECK(next_smaller_workspace(sizes, 2) == 3);
    CHECK(next_smaller_workspace(sizes, 3) == no_candidate);  // nothing needs less than 0
    // Equal needs are no way out; only a smaller one is.
    CHECK(next_smaller_workspace({100, 100, 50}, 0) == 2);
    CHECK(next_smaller_workspace({100, 100}, 0) == no_candidate);
    CHECK(next_smaller_workspace({}, 0) == no_candidate);
    CHECK(next_smaller_workspace({7}, 3) == no_candidate);
}
#endif
