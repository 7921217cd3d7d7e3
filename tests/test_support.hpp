// Small helpers shared by the test programs.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "skipganomaly/config.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/image.hpp"
#include "skipganomaly/engine/tensor.hpp"

namespace sga::testing {

// The message of the E that `call` throws; fails the test when it throws nothing.
template <typename E, typename F>
std::string message_of(F&& call) {
    try {
        call();
    } catch (const E& e) {
        return e.what();
    }
    FAIL("expected an exception");
    return {};
}

// A grey 28x28 image with a bright Gaussian blob at a random place on noise: the tests' simple
// "normal" class. Draws the centre, then one noise value per pixel, from `rng`.
template <typename Rng>
sga::Image blob_image(Rng& rng) {
    std::uniform_real_distribution<double> centre(8, 20), noise(0, 20);
    sga::Image im{28, 28, 1, std::vector<std::uint8_t>(28 * 28)};
    const double cx = centre(rng), cy = centre(rng);
    for (int y = 0; y < 28; ++y)
        for (int x = 0; x < 28; ++x) {
            const double d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            im.pixels[static_cast<std::size_t>(y * 28 + x)] =
                static_cast<std::uint8_t>(std::min(255.0, 230.0 * std::exp(-d2 / 18.0) + noise(rng)));
        }
    return im;
}

// n uniform random 3x32x32 images in [-1, 1] (the model's input range), as one tensor.
inline sga::Tensor random_colour_images(std::int64_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> pixel(-1.0f, 1.0f);
    std::vector<float> values(static_cast<std::size_t>(n * 3 * 32 * 32));
    for (float& v : values) v = pixel(rng);
    return sga::Tensor::from_host({n, 3, 32, 32}, values);
}

// The names in `folder`, sorted.
inline std::vector<std::string> names_in(const std::filesystem::path& folder) {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(folder)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

// Temporaries of any writer in `folder`: "<dot><name>.tmp-...".
inline std::vector<std::string> temporaries_in(const std::filesystem::path& folder) {
    std::vector<std::string> found;
    for (const std::string& name : names_in(folder))
        if (name.find(".tmp-") != std::string::npos) found.push_back(name);
    return found;
}

// An 8-bit image of uniformly random pixels, the same for the same arguments.
inline sga::Image random_image(int width, int height, int channels, unsigned seed) {
    std::mt19937 rng(seed);
    sga::Image image{width, height, channels,
                     std::vector<std::uint8_t>(static_cast<std::size_t>(width) * height * channels)};
    for (std::uint8_t& p : image.pixels) p = static_cast<std::uint8_t>(rng() & 0xff);
    return image;
}

// The tiny Detector the tests train in well under a second: 32 x 32 grey, 4 features,
// latent 8, 2 epochs at batch 8, 20% held out, seed 5. Tests change what they need.
inline sga::DetectorOptions tiny_detector_options(sga::Device device = sga::Device::Cpu) {
    sga::DetectorOptions o;
    o.architecture.image_size = 32;
    o.architecture.channels = 1;
    o.architecture.generator_features = 4;
    o.architecture.discriminator_features = 4;
    o.architecture.latent_size = 8;
    o.epochs = 2;
    o.batch_size = 8;
    o.validation_fraction = 0.2f;
    o.device = device;
    o.seed = 5;
    return o;
}

// SKIPGANOMALY_REQUIRE_GPU=1 in the environment: a CUDA test that cannot run fails instead of
// skipping, so that a run on a GPU machine cannot pass by skipping everything (a driver too
// old for the CUDA runtime looks like "no GPU" otherwise).
inline bool gpu_required() {
    const char* value = std::getenv("SKIPGANOMALY_REQUIRE_GPU");
    return value && *value && std::string(value) != "0";
}

// True (after printing the line CTest looks for, SKIP_REGULAR_EXPRESSION in
// tests/CMakeLists.txt, with the exact reason) when a CUDA test cannot run here. Under
// SKIPGANOMALY_REQUIRE_GPU it fails the test with that reason instead.
inline bool skip_without_gpu() {
    if (sga::cuda_device_available()) return false;
    const std::string reason = sga::cuda_unavailable_reason();
    if (gpu_required()) FAIL("SKIPGANOMALY_REQUIRE_GPU is set but no usable GPU: " << reason);
    std::cout << "SKIPPED: no usable CUDA device: " << reason << "\n";
    return true;
}

}  // namespace sga::testing
