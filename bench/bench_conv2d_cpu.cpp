// CPU convolution primitives (src/cpu/conv2d.cpp) at every convolution of the Skip-GANomaly
// model (batch 64, 32x32 images, nc = 3, ngf = ndf = 64), and a large square Eigen GEMM on
// the same threads as the machine's practical peak to read them against.
//
// Names: BM_<Op><Direction>_Cpu/<net>_<layer>_<input CxHxW>_to_<output CxHxW>, in the layer's
// own terms (a ConvTranspose2d's input is its small side). Each transposed-convolution entry
// times the primitive it is built from (see kernels.def):
//   ConvTranspose2d forward         = conv2d_backward_data   of the mirrored convolution
//   ConvTranspose2d backward-data   = conv2d_forward         of the mirrored convolution
//   ConvTranspose2d backward-filter = conv2d_backward_filter with input = the gradient of the
//                                     transposed output and grad_output = its input
// The counter FLOP is 2 * multiply-adds of the dense convolution (taps over padding included,
// the usual convention) per second of wall time; every direction costs the same FLOPs.
//
// The .../scoring1/... and .../scoring4/... entries time every layer's inference direction at
// batch 1 and 4 (one image scored with the default recipe's four rotation views), with the
// weight as it is (Eigen's GEMM, or the skinny kernels for the 2x2 -> 1x1 layers and their
// mirror) and, under .../packed/..., packed once (conv2d_pack_weight, then conv2d_packed). The
// counter weight_bytes is the weight's size per second, the bound of a layer that reads its
// weight once.
//
// The .../bf16/... entries time the bfloat16 kernels (conv2d_packed_bf16, weight packed once,
// and conv2d_backward_filter_bf16 for training) at batch 64 and at scoring1/4/16, beside BM_PeakBf16_Cpu, BM_PeakFloat32_Cpu and
// BM_PeakInt8_Cpu: the processor's register-only vdpbf16ps, vfmadd231ps and vpdpbusd rates on
// the same threads, the ceilings that "close to the limit" is a ratio to (the library has no
// int8 kernel; its peak says what one could reach). They are skipped, with a message, on a
// processor without AVX512-BF16.
//
// Run: ./build/bench/bench_conv2d_cpu --benchmark_min_time=0.2 (results, method and why under
// `chrt -f` on a shared machine: results/2026-11-28-cpu-conv-kernels/).
#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/engine/kernels.hpp"
#include "skipganomaly/engine/tensor.hpp"
#include "cpu/bf16_gemm.hpp"

namespace {

using sga::ConvGeometry;

constexpr std::int64_t batch = 64;

ConvGeometry convolution(std::int64_t in_channels, std::int64_t in_size, std::int64_t out_channels, std::int64_t kernel,
                         std::int64_t stride, std::int64_t padding) {
    ConvGeometry g;
    g.batch = batch;
    g.in_channels = in_channels;
    g.in_height = g.in_width = in_size;
    g.out_channels = out_channels;
    g.kernel_height = g.kernel_width = kernel;
    g.stride = stride;
    g.padding = padding;
    g.out_height = g.out_width = ConvGeometry::output_extent(in_size, kernel, stride, padding);
    return g;
}

// The convolution whose backward-data is ConvTranspose2d(in_channels -> out_channels,
// in_size -> out_size)'s forward: its input is the transposed layer's output and vice versa.
ConvGeometry mirrored_convolution(std::int64_t in_channels, std::int64_t in_size, std::int64_t out_channels,
                                  std::int64_t out_size, std::int64_t kernel, std::int64_t stride,
                                  std::int64_t padding) {
    ConvGeometry g = convolution(out_channels, out_size, in_channels, kernel, stride, padding);
    if (g.out_height != in_size) throw std::logic_error("transposed layer sizes do not mirror a convolution");
    return g;
}

std::string extent(std::int64_t channels, std::int64_t height, std::int64_t width) {
    return std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width);
}

struct Layer {
    std::string name;       // shape-named benchmark argument
    ConvGeometry geometry;  // of the convolution (mirrored for a transposed layer)
};

std::vector<Layer> convolution_layers() {
    struct Spec {
        const char* name;
        std::int64_t in_channels, in_size, out_channels, kernel, stride, padding;
    };
    // The discriminator's first three convolutions have the generator encoder's shapes: one
    // entry each, named after both.
    const Spec specs[] = {
        {"G.encoder1_D.conv1", 3, 32, 64, 4, 2, 1},   {"G.encoder2_D.conv2", 64, 16, 128, 4, 2, 1},
        {"G.encoder3_D.conv3", 128, 8, 256, 4, 2, 1}, {"G.encoder4", 256, 4, 512, 4, 2, 1},
        {"G.encoder5", 512, 2, 512, 4, 2, 1},         {"D.features", 256, 4, 100, 4, 1, 0},
        {"D.classifier", 100, 1, 1, 3, 1, 1},
    };
    std::vector<Layer> layers;
    for (const Spec& s : specs) {
        const ConvGeometry g = convolution(s.in_channels, s.in_size, s.out_channels, s.kernel, s.stride, s.padding);
        layers.push_back({std::string(s.name) + "_" + extent(g.in_channels, g.in_height, g.in_width) + "_to_" +
                              extent(g.out_channels, g.out_height, g.out_width),
                          g});
    }
    return layers;
}

std::vector<Layer> transposed_layers() {
    struct Spec {
        const char* name;
        std::int64_t in_channels, in_size, out_channels, out_size;
    };
    // The decoder's input channels include the skip connections (concatenated encoder maps).
    const Spec specs[] = {
        {"G.decoder1", 512, 1, 512, 2}, {"G.decoder2", 1024, 2, 256, 4}, {"G.decoder3", 512, 4, 128, 8},
        {"G.decoder4", 256, 8, 64, 16}, {"G.decoder5", 128, 16, 3, 32},
    };
    std::vector<Layer> layers;
    for (const Spec& s : specs)
        layers.push_back({std::string(s.name) + "_" + extent(s.in_channels, s.in_size, s.in_size) + "_to_" +
                              extent(s.out_channels, s.out_size, s.out_size),
                          mirrored_convolution(s.in_channels, s.in_size, s.out_channels, s.out_size, 4, 2, 1)});
    return layers;
}

// packed_*: the weight packed once (conv2d_pack_weight, outside the timing), then conv2d_packed.
// bf16_*: the weight packed once in bfloat16 (conv2d_pack_weight_bf16), then conv2d_packed_bf16.
enum class Primitive {
    forward,
    backward_data,
    backward_filter,
    packed_forward,
    packed_backward_data,
    bf16_forward,
    bf16_backward_data,
    bf16_backward_filter
};

std::vector<float> random_values(std::int64_t n, std::uint64_t seed) {
    std::mt19937_64 engine(seed);
    std::uniform_real_distribution<float> distribution(-1.0f, 1.0f);
    std::vector<float> values(static_cast<std::size_t>(n));
    for (float& v : values) v = distribution(engine);
    return values;
}

// `beta` as in training: 0 where the primitive produces a layer's output, 1 where it
// accumulates a gradient.
void run_primitive(benchmark::State& state, Primitive primitive, ConvGeometry g, float beta) {
    // One persistent context: its arena is reset each iteration and reused, as in training.
    sga::Context ctx(sga::Device::Cpu);
    std::vector<float> input = random_values(g.input_size(), 1);
    std::vector<float> weight = random_values(g.weight_size(), 2);
    std::vector<float> output = random_values(g.output_size(), 3);
    const bool packed_pass = primitive == Primitive::packed_forward || primitive == Primitive::packed_backward_data;
    const bool bf16_pass = primitive == Primitive::bf16_forward || primitive == Primitive::bf16_backward_data;
    const sga::ConvPass pass = primitive == Primitive::packed_forward || primitive == Primitive::bf16_forward
                                   ? sga::ConvPass::Forward
                                   : sga::ConvPass::BackwardData;
    if ((bf16_pass || primitive == Primitive::bf16_backward_filter) && !sga::cpu::bf16_available()) {
        state.SkipWithError("this processor has no AVX512-BF16");
        return;
    }
    sga::Tensor packed;  // 64-byte aligned, as a model's packed weights are
    if (packed_pass) {
        packed = sga::Tensor({sga::cpu::conv2d_packed_floats(g, pass)}, sga::Device::Cpu);
        sga::cpu::conv2d_pack_weight(ctx, g, pass, weight.data(), packed.data());
    }
    std::vector<std::uint32_t> packed_bf16;
    if (bf16_pass) {
        packed_bf16.resize(static_cast<std::size_t>(sga::cpu::conv2d_bf16_packed_words(g, pass)));
        sga::cpu::conv2d_pack_weight_bf16(ctx, g, pass, weight.data(), packed_bf16.data());
    }
    auto call = [&] {
        switch (primitive) {
            case Primitive::forward:
                sga::cpu::conv2d_forward(ctx, g, input.data(), weight.data(), output.data(), beta);
                break;
            case Primitive::backward_data:
                sga::cpu::conv2d_backward_data(ctx, g, output.data(), weight.data(), input.data(), beta);
                break;
            case Primitive::backward_filter:
                sga::cpu::conv2d_backward_filter(ctx, g, input.data(), output.data(), weight.data(), beta);
                break;
            case Primitive::packed_forward:
                sga::cpu::conv2d_packed(ctx, g, pass, input.data(), weight.data(), packed.data(), output.data());
                break;
            case Primitive::packed_backward_data:
                sga::cpu::conv2d_packed(ctx, g, pass, output.data(), weight.data(), packed.data(), input.data());
                break;
            case Primitive::bf16_forward:
                sga::cpu::conv2d_packed_bf16(ctx, g, pass, input.data(), packed_bf16.data(), output.data());
                break;
            case Primitive::bf16_backward_data:
                sga::cpu::conv2d_packed_bf16(ctx, g, pass, output.data(), packed_bf16.data(), input.data());
                break;
            case Primitive::bf16_backward_filter:
                sga::cpu::conv2d_backward_filter_bf16(ctx, g, input.data(), output.data(), weight.data(), beta);
                break;
        }
        ctx.arena().reset();
    };
    // Warm-up: grows the arena to its steady size, starts the OpenMP threads, fills caches.
    for (int i = 0; i < 3; ++i) call();
    for (auto _ : state) {
        call();
        benchmark::ClobberMemory();
    }
    state.counters["FLOP"] = benchmark::Counter(2.0 * g.multiply_adds() * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
    const double weight_element_bytes = bf16_pass ? 2.0 : 4.0;  // what the kernel reads of the weight
    state.counters["weight_bytes"] =
        benchmark::Counter(static_cast<double>(g.weight_size()) * weight_element_bytes * static_cast<double>(state.iterations()),
                           benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
}

// The processor's peak multiply-add rates on all of the library's threads: independent
// vdpbf16ps (bfloat16), vfmadd231ps (float32) or vpdpbusd (int8, OP: operations) on registers
// only. FLOP counts 2 per multiply-add, as the convolutions' counter does.
enum class Peak { float32, bf16, int8 };
void run_peak(benchmark::State& state, Peak peak) {
    if (!sga::cpu::bf16_available() || (peak == Peak::int8 && !sga::cpu::bf16::vnni_available())) {
        state.SkipWithError("this processor lacks AVX512-BF16 or AVX512-VNNI");
        return;
    }
    constexpr std::int64_t iterations = 1 << 20;
    const int threads = sga::cpu_threads();
    auto one_thread = [&] {
        switch (peak) {
            case Peak::float32: return sga::cpu::bf16::peak_float32_loop(iterations);
            case Peak::bf16: return sga::cpu::bf16::peak_loop(iterations);
            case Peak::int8: return sga::cpu::bf16::peak_int8_loop(iterations);
        }
        return 0.0f;
    };
    auto run = [&] {
        float total = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : total)
        total += one_thread();
        return total;
    };
    benchmark::DoNotOptimize(run());
    for (auto _ : state) benchmark::DoNotOptimize(run());
    const double per_iteration = static_cast<double>(
        peak == Peak::int8   ? sga::cpu::bf16::peak_int8_multiply_adds_per_iteration
        : peak == Peak::bf16 ? sga::cpu::bf16::peak_multiply_adds_per_iteration
                             : sga::cpu::bf16::peak_float32_multiply_adds_per_iteration);
    state.counters["FLOP"] = benchmark::Counter(2.0 * per_iteration * iterations * threads *
                                                    static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

void run_eigen_gemm(benchmark::State& state) {
    const auto n = static_cast<Eigen::Index>(state.range(0));
    const Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n);
    Eigen::MatrixXf c(n, n);
    for (int i = 0; i < 2; ++i) c.noalias() = a * b;  // warm-up
    for (auto _ : state) {
        c.noalias() = a * b;
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
    }
    state.counters["FLOP"] = benchmark::Counter(2.0 * static_cast<double>(n) * static_cast<double>(n) *
                                                    static_cast<double>(n) * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

// How fast this machine's threads read memory that they do not write, in bytes/s: the floor
// under any kernel that streams a weight once. Scoring one image reads every weight of the
// model once (bench_model_cpu's weights_MiB counter), so weights_MiB / this rate bounds its
// latency from below. 64 MiB is about the size of the model's weights at isize 32 (this VM's
// 300 MiB L3 could hold them); 512 MiB is beyond any cache.
void run_read_bandwidth(benchmark::State& state) {
    const auto floats = static_cast<std::int64_t>(state.range(0)) * 1024 * 1024 / 4;
    const std::vector<float> buffer = random_values(floats, 6);
    constexpr std::int64_t width = 64;  // 4 vectors of independent sums: the loads, not the adds, set the pace
    auto read_all = [&] {
        float total = 0.0f;
#pragma omp parallel reduction(+ : total)
        {
            float sums[width] = {};
#pragma omp for schedule(static)
            for (std::int64_t block = 0; block < floats / width; ++block)
                for (std::int64_t i = 0; i < width; ++i) sums[i] += buffer[static_cast<std::size_t>(block * width + i)];
            for (float s : sums) total += s;
        }
        return total;
    };
    benchmark::DoNotOptimize(read_all());  // warm-up: pages touched, caches as in steady use
    for (auto _ : state) benchmark::DoNotOptimize(read_all());
    state.SetBytesProcessed(state.iterations() * floats * static_cast<std::int64_t>(sizeof(float)));
}

// The bias of the last decoder layer (the model's only biased convolution): memory-bound, so
// its counter is bytes moved per second.
void run_channel_bias(benchmark::State& state, bool backward) {
    sga::Context ctx(sga::Device::Cpu);
    const std::int64_t channels = 3, spatial = 32 * 32;
    std::vector<float> bias = random_values(channels, 4);
    std::vector<float> tensor = random_values(batch * channels * spatial, 5);
    auto call = [&] {
        if (backward)
            sga::cpu::add_channel_bias_backward(ctx, batch, channels, spatial, tensor.data(), bias.data());
        else
            sga::cpu::add_channel_bias(ctx, batch, channels, spatial, bias.data(), tensor.data());
    };
    for (int i = 0; i < 3; ++i) call();
    for (auto _ : state) {
        call();
        benchmark::ClobberMemory();
    }
    // Forward reads and writes the tensor; backward only reads it.
    const double bytes = (backward ? 1.0 : 2.0) * static_cast<double>(tensor.size()) * sizeof(float);
    state.counters["bytes"] = benchmark::Counter(bytes * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
}

void register_benchmarks() {
    // Wall time: the work runs on all OpenMP threads, so the main thread's CPU time would
    // understate it. The rate counters divide by the same wall time.
    auto configure = [](benchmark::internal::Benchmark* b) { b->UseRealTime()->Unit(benchmark::kMillisecond); };

    configure(benchmark::RegisterBenchmark("BM_EigenGemm_Cpu", run_eigen_gemm)->Arg(1024)->Arg(2048));
    configure(benchmark::RegisterBenchmark("BM_ReadBandwidth_Cpu", run_read_bandwidth)->ArgName("MiB")->Arg(64)->Arg(512));
    configure(benchmark::RegisterBenchmark("BM_PeakFloat32_Cpu", run_peak, Peak::float32));
    configure(benchmark::RegisterBenchmark("BM_PeakBf16_Cpu", run_peak, Peak::bf16));
    configure(benchmark::RegisterBenchmark("BM_PeakInt8_Cpu", run_peak, Peak::int8));

    struct Direction {
        const char* name;
        Primitive primitive;
        float beta;
    };
    const Direction convolution_directions[] = {
        {"BM_Conv2dForward_Cpu/", Primitive::forward, 0.0f},
        {"BM_Conv2dBackwardData_Cpu/", Primitive::backward_data, 1.0f},
        {"BM_Conv2dBackwardFilter_Cpu/", Primitive::backward_filter, 1.0f},
    };
    const Direction transposed_directions[] = {
        {"BM_ConvTranspose2dForward_Cpu/", Primitive::backward_data, 0.0f},
        {"BM_ConvTranspose2dBackwardData_Cpu/", Primitive::forward, 1.0f},
        {"BM_ConvTranspose2dBackwardFilter_Cpu/", Primitive::backward_filter, 1.0f},
    };
    for (const Direction& d : convolution_directions)
        for (const Layer& layer : convolution_layers())
            configure(benchmark::RegisterBenchmark((d.name + layer.name).c_str(), run_primitive, d.primitive,
                                                   layer.geometry, d.beta));
    for (const Direction& d : transposed_directions)
        for (const Layer& layer : transposed_layers())
            configure(benchmark::RegisterBenchmark((d.name + layer.name).c_str(), run_primitive, d.primitive,
                                                   layer.geometry, d.beta));
    // The bfloat16 inference kernels at batch 64: large-batch scoring.
    for (const Layer& layer : convolution_layers())
        configure(benchmark::RegisterBenchmark(("BM_Conv2dForward_Cpu/bf16/" + layer.name).c_str(), run_primitive,
                                               Primitive::bf16_forward, layer.geometry, 0.0f));
    for (const Layer& layer : transposed_layers())
        configure(benchmark::RegisterBenchmark(("BM_ConvTranspose2dForward_Cpu/bf16/" + layer.name).c_str(),
                                               run_primitive, Primitive::bf16_backward_data, layer.geometry, 0.0f));
    // bfloat16 training's backward-filter at batch 64 (its other passes are the two above, plus
    // packing the weight: conv2d_pack_weight_bf16).
    for (const Layer& layer : convolution_layers())
        configure(benchmark::RegisterBenchmark(("BM_Conv2dBackwardFilter_Cpu/bf16/" + layer.name).c_str(), run_primitive,
                                               Primitive::bf16_backward_filter, layer.geometry, 1.0f));
    for (const Layer& layer : transposed_layers())
        configure(benchmark::RegisterBenchmark(("BM_ConvTranspose2dBackwardFilter_Cpu/bf16/" + layer.name).c_str(),
                                               run_primitive, Primitive::bf16_backward_filter, layer.geometry, 1.0f));
    // Scoring one image (batch 1, or 4: the default recipe's four rotation views; 16: a score
    // batcher pass of 16 images at isize 32), every layer's
    // inference direction with the weight as it is (Eigen, or the skinny kernels) and packed.
    for (const std::int64_t images : {1, 4, 16}) {
        const std::string scoring = "scoring" + std::to_string(images) + "/";
        for (const Layer& layer : convolution_layers()) {
            ConvGeometry g = layer.geometry;
            g.batch = images;
            configure(benchmark::RegisterBenchmark(("BM_Conv2dForward_Cpu/" + scoring + layer.name).c_str(), run_primitive,
                                                   Primitive::forward, g, 0.0f));
            configure(benchmark::RegisterBenchmark(("BM_Conv2dForward_Cpu/" + scoring + "packed/" + layer.name).c_str(),
                                                   run_primitive, Primitive::packed_forward, g, 0.0f));
            configure(benchmark::RegisterBenchmark(("BM_Conv2dForward_Cpu/" + scoring + "bf16/" + layer.name).c_str(),
                                                   run_primitive, Primitive::bf16_forward, g, 0.0f));
        }
        for (const Layer& layer : transposed_layers()) {
            ConvGeometry g = layer.geometry;
            g.batch = images;
            configure(benchmark::RegisterBenchmark(("BM_ConvTranspose2dForward_Cpu/" + scoring + layer.name).c_str(),
                                                   run_primitive, Primitive::backward_data, g, 0.0f));
            configure(
                benchmark::RegisterBenchmark(("BM_ConvTranspose2dForward_Cpu/" + scoring + "packed/" + layer.name).c_str(),
                                             run_primitive, Primitive::packed_backward_data, g, 0.0f));
            configure(
                benchmark::RegisterBenchmark(("BM_ConvTranspose2dForward_Cpu/" + scoring + "bf16/" + layer.name).c_str(),
                                             run_primitive, Primitive::bf16_backward_data, g, 0.0f));
        }
    }
    const std::string bias_shape = "G.decoder5_bias_64x3x32x32";
    configure(
        benchmark::RegisterBenchmark(("BM_AddChannelBiasForward_Cpu/" + bias_shape).c_str(), run_channel_bias, false));
    configure(
        benchmark::RegisterBenchmark(("BM_AddChannelBiasBackward_Cpu/" + bias_shape).c_str(), run_channel_bias, true));
}

}  // namespace

int main(int argc, char** argv) {
    register_benchmarks();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("cpu_threads", std::to_string(sga::cpu_threads()));
    benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
