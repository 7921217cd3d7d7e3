// Uses an installed skipganomaly: prints the version, then trains a tiny detector for one
// epoch on a few synthetic images and scores one, which exercises the whole link.
#include <cstdint>
#include <exception>
#include <iostream>
#include <vector>

#include <skipganomaly/config.hpp>
#include <skipganomaly/detector.hpp>
#include <skipganomaly/device.hpp>

int main() {
    std::cout << "skipganomaly " << SKIPGANOMALY_VERSION_STRING << "\n";
    try {
        sga::DetectorOptions options;
        options.architecture = {.image_size = 32, .channels = 1, .generator_features = 4,
                                .discriminator_features = 4, .latent_size = 8};
        options.epochs = 1;
        options.batch_size = 4;
        options.validation_fraction = 0.2f;
        options.device = sga::Device::Cpu;
        sga::Detector detector(options);
        std::cout << "detector on " << sga::to_string(detector.device()) << "\n";
        // The CUDA backend is a module the library loads only when asked (here, to answer):
        // this program links no CUDA library either way.
        std::cout << "cuda: " << (sga::cuda_device_available() ? "available" : sga::cuda_unavailable_reason())
                  << "\n";

        // Ten 32x32 grey squares of different brightness.
        std::vector<sga::Image> images;
        for (int i = 0; i < 10; ++i) {
            sga::Image image{32, 32, 1, std::vector<std::uint8_t>(32 * 32, static_cast<std::uint8_t>(100 + 10 * i))};
            images.push_back(std::move(image));
        }
        const sga::FitReport report = detector.fit(images);
        const sga::ScoreResult result = detector.score(images.front().view());
        std::cout << "trained " << report.epochs_completed << " epoch; score " << result.score << ", threshold "
                  << result.threshold << "\n";
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
