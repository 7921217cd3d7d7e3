// Small helpers shared by the test programs.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "skipganomaly/config.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/image.hpp"

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

// True (after printing the line CTest looks for, SKIP_REGULAR_EXPRESSION in
// tests/CMakeLists.txt) when a CUDA test cannot run here.
inline bool skip_without_gpu() {
#if SKIPGANOMALY_WITH_CUDA
    if (!sga::cuda_device_available()) {
        std::cout << "SKIPPED: no CUDA device\n";
        return true;
    }
    return false;
#else
    std::cout << "SKIPPED: built without CUDA\n";
    return true;
#endif
}

}  // namespace sga::testing
