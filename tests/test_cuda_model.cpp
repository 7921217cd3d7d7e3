// The whole model and the Detector on CUDA against the CPU: the same weights and the same
// batch through a training step and through scoring on both backends, a Detector saved on one
// and loaded on the other, and CUDA training determinism. test_cuda.cpp checks each kernel;
// this checks that they are wired together the same way (tape, arena, optimiser, scoring).
//
// Without a GPU (or without the CUDA backend) each test prints "SKIPPED: ..." and returns.
//
// Tolerances: the networks chain a dozen convolutions whose CPU and cuDNN results differ in
// summation order (test_cuda.cpp: rtol 1e-4 and 2e-5 normalised per convolution), and batch
// norm rescales each layer's error by 1/std. Forward values and losses: rtol 1e-3. Gradients
// after a whole backward: rtol 1e-3 with atol 1e-3 x rms, and a normalised error under 1e-3.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "reference.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"
#include "test_support.hpp"

namespace {

using namespace sga;
using sga::testing::random_image;
using sga::testing::random_vector;
using sga::testing::require_close;
using sga::testing::skip_without_gpu;

Architecture small_architecture() {
    Architecture a;
    a.image_size = 32;
    a.channels = 3;
    a.generator_features = 8;
    a.discriminator_features = 8;
    a.latent_size = 16;
    return a;
}

void copy_block(const ParameterBlock& from, const ParameterBlock& to) {
    REQUIRE(from.size() == to.size());
    copy_bytes(to.values().data(), to.device(), from.values().data(), from.device(),
               static_cast<std::size_t>(from.size()) * sizeof(float));
}

// A CPU model initialised from `seed` and a CUDA model holding the same weights and statistics.
struct TwinModels {
    Context cpu_ctx{Device::Cpu};
    Context gpu_ctx{Device::Cuda};
    SkipGanomaly cpu{small_architecture(), {}, {}};
    SkipGanomaly gpu{small_architecture(), {}, {}};
    explicit TwinModels(std::uint64_t seed) {
        cpu.materialize(cpu_ctx);
        gpu.materialize(gpu_ctx);
        RandomStream random(seed);
        cpu.initialize(cpu_ctx, random);
        for (auto [from, to] : {std::pair{&cpu.generator.parameters, &gpu.generator.parameters},
                                std::pair{&cpu.generator.statistics, &gpu.generator.statistics},
                                std::pair{&cpu.discriminator.parameters, &gpu.discriminator.parameters},
                                std::pair{&cpu.discriminator.statistics, &gpu.discriminator.statistics}})
            copy_block(*from, *to);
    }
};

void require_gradients_close(const ParameterBlock& gpu, const ParameterBlock& cpu, const std::string& what) {
    const std::vector<float> expected = Tensor::host_values(cpu.grads());
    double square_sum = 0;
    for (float g : expected) square_sum += static_cast<double>(g) * g;
    const double rms = std::sqrt(square_sum / static_cast<double>(expected.size()));
    REQUIRE(rms > 0);
    require_close(Tensor::host_values(gpu.grads()), expected, 1e-3, 1e-3 * rms, what);
}

std::vector<Image> random_images(int count, int size, int channels, unsigned seed) {
    std::vector<Image> images;
    for (int i = 0; i < count; ++i) images.push_back(random_image(size, size, channels, seed * 1000u + static_cast<unsigned>(i)));
    return images;
}

DetectorOptions tiny_detector_options(Device device) {
    DetectorOptions o = sga::testing::tiny_detector_options(device);
    o.seed = 9;
    return o;
}

std::vector<float> scores_of(const Detector& detector, const std::vector<Image>& images) {
    std::vector<float> scores;
    for (const ScoreResult& r : detector.score(images)) scores.push_back(r.score);
    return scores;
}

}  // namespace

TEST_CASE("a cuda training step matches the CPU's from the same weights and batch", "[cuda][model]") {
    if (skip_without_gpu()) return;
    TwinModels twins(21);
    const std::vector<float> batch = random_vector(4 * 3 * 32 * 32, 22);
    const Tensor cpu_images = Tensor::from_host(Shape{4, 3, 32, 32}, batch, Device::Cpu);
    const Tensor gpu_images = Tensor::from_host(Shape{4, 3, 32, 32}, batch, Device::Cuda);
    Tape cpu_tape(twins.cpu_ctx), gpu_tape(twins.gpu_ctx);
    RandomStream cpu_random(23), gpu_random(23);

    const StepLosses c = twins.cpu.train_step(twins.cpu_ctx, cpu_tape, cpu_images.view(), cpu_random);
    const StepLosses g = twins.gpu.train_step(twins.gpu_ctx, gpu_tape, gpu_images.view(), gpu_random);
    require_close(std::vector<float>{g.generator, g.generator_adversarial, g.generator_contextual, g.generator_latent,
                                     g.discriminator, g.discriminator_real, g.discriminator_fake},
                  std::vector<float>{c.generator, c.generator_adversarial, c.generator_contextual, c.generator_latent,
                                     c.discriminator, c.discriminator_real, c.discriminator_fake},
                  1e-3, 1e-6, "losses");
    CHECK(g.discriminator_reinitialized == c.discriminator_reinitialized);
    // The gradients of the last backward of each network (G from the G loss, D from the D loss).
    require_gradients_close(twins.gpu.generator.parameters, twins.cpu.generator.parameters, "generator gradients");
    require_gradients_close(twins.gpu.discriminator.parameters, twins.cpu.discriminator.parameters,
                            "discriminator gradients");
    // Running statistics after one training forward of G and three of D.
    require_close(Tensor::host_values(twins.gpu.generator.statistics.values()),
                  Tensor::host_values(twins.cpu.generator.statistics.values()), 1e-3, 1e-5, "generator statistics");
    require_close(Tensor::host_values(twins.gpu.discriminator.statistics.values()),
                  Tensor::host_values(twins.cpu.discriminator.statistics.values()), 1e-3, 1e-5,
                  "discriminator statistics");
    CHECK(twins.gpu.generator.training_passes == twins.cpu.generator.training_passes);
    CHECK(twins.gpu.discriminator.training_passes == twins.cpu.discriminator.training_passes);
}

TEST_CASE("cuda scoring of a model matches the CPU's in both batch-norm modes", "[cuda][model]") {
    if (skip_without_gpu()) return;
    TwinModels twins(31);
    // A few training steps first, so the running statistics are not the initial 0 and 1.
    const std::vector<float> batch = random_vector(4 * 3 * 32 * 32, 32);
    const Tensor cpu_images = Tensor::from_host(Shape{4, 3, 32, 32}, batch, Device::Cpu);
    Tape cpu_tape(twins.cpu_ctx), gpu_tape(twins.gpu_ctx);
    RandomStream random(33);
    for (int step = 0; step < 3; ++step) twins.cpu.train_step(twins.cpu_ctx, cpu_tape, cpu_images.view(), random);
    for (auto [from, to] : {std::pair{&twins.cpu.generator.parameters, &twins.gpu.generator.parameters},
                            std::pair{&twins.cpu.generator.statistics, &twins.gpu.generator.statistics},
                            std::pair{&twins.cpu.discriminator.parameters, &twins.gpu.discriminator.parameters},
                            std::pair{&twins.cpu.discriminator.statistics, &twins.gpu.discriminator.statistics}})
        copy_block(*from, *to);

    const std::vector<float> probe = random_vector(5 * 3 * 32 * 32, 34);
    const Tensor cpu_probe = Tensor::from_host(Shape{5, 3, 32, 32}, probe, Device::Cpu);
    const Tensor gpu_probe = Tensor::from_host(Shape{5, 3, 32, 32}, probe, Device::Cuda);
    for (BatchNormMode mode : {BatchNormMode::RunningStatistics, BatchNormMode::BatchStatistics}) {
        const BatchScores c = twins.cpu.score(twins.cpu_ctx, cpu_tape, cpu_probe.view(), mode, true);
        const BatchScores g = twins.gpu.score(twins.gpu_ctx, gpu_tape, gpu_probe.view(), mode, true);
        const std::string what = mode == BatchNormMode::RunningStatistics ? "running statistics" : "batch statistics";
        require_close(g.reconstruction, c.reconstruction, 1e-3, 1e-7, what + ": reconstruction errors");
        require_close(g.latent, c.latent, 1e-3, 1e-7, what + ": latent errors");
        require_close(g.error_maps, c.error_maps, 1e-3, 1e-6, what + ": error maps");
    }
}

TEST_CASE("a Detector trained on the CPU scores the same when loaded on cuda, and back", "[cuda][detector]") {
    if (skip_without_gpu()) return;
    Detector cpu_detector(tiny_detector_options(Device::Cpu));
    cpu_detector.fit(random_images(24, 28, 1, 41));
    const std::filesystem::path dir = std::filesystem::temp_directory_path() / "sga_cuda_model_test";
    std::filesystem::create_directories(dir);
    const std::string cpu_file = (dir / "cpu.safetensors").string();
    cpu_detector.save(cpu_file);

    const Detector gpu_detector = Detector::load(cpu_file, Device::Cuda);
    CHECK(gpu_detector.device() == Device::Cuda);
    const std::vector<Image> probe = random_images(6, 40, 3, 42);  // other size and channels: pre-processing too
    const std::vector<float> expected = scores_of(cpu_detector, probe);
    require_close(scores_of(gpu_detector, probe), expected, 1e-3, 1e-7, "scores on cuda");

    // Saved from the CUDA detector, the file holds the same weights: loaded on the CPU it
    // scores exactly as the original.
    const std::string gpu_file = (dir / "gpu.safetensors").string();
    gpu_detector.save(gpu_file);
    CHECK(scores_of(Detector::load(gpu_file, Device::Cpu), probe) == expected);
    std::filesystem::remove_all(dir);
}

TEST_CASE("fitting on cuda twice with one seed gives the same model", "[cuda][detector]") {
    if (skip_without_gpu()) return;
    // Every CUDA kernel is deterministic (fixed reduction orders, deterministic cuDNN
    // algorithms), so a seed fixes the model on the GPU as it does on the CPU.
    const std::vector<Image> training = random_images(24, 28, 1, 51);
    const std::vector<Image> probe = random_images(6, 28, 1, 52);
    Detector first(tiny_detector_options(Device::Cuda));
    first.fit(training);
    Detector second(tiny_detector_options(Device::Cuda));
    second.fit(training);
    CHECK(scores_of(first, probe) == scores_of(second, probe));
    // And close to the CPU's run of the same recipe after two short epochs (GAN training
    // amplifies differences over many steps; over 4 steps they stay small).
    Detector cpu(tiny_detector_options(Device::Cpu));
    cpu.fit(training);
    require_close(scores_of(first, probe), scores_of(cpu, probe), 2e-2, 1e-5, "cuda vs CPU fit");
}
