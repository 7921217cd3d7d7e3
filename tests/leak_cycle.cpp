// A whole consumer cycle for the leak check (scripts/run-leak-check.sh runs it under
// valgrind): fit a tiny Detector, save it, load it, score with and without anomaly maps and
// from float CHW input, and walk the error paths (missing model, not an image, a bad buffer)
// that throw, so that memory held when an exception leaves the library is counted too.
// Not a CTest test: tests/CMakeLists.txt builds only tests/test_*.cpp.
//
//   leak_cycle [MODEL_PATH]     (default /tmp/sga_leak_cycle.safetensors; removed at the end)
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"

int main(int argc, char** argv) {
    const std::string path = argc > 1 ? argv[1] : "/tmp/sga_leak_cycle.safetensors";
    try {
        sga::DetectorOptions options;
        options.architecture.image_size = 32;
        options.architecture.channels = 1;
        options.architecture.generator_features = 4;
        options.architecture.discriminator_features = 4;
        options.architecture.latent_size = 8;
        options.epochs = 1;
        options.batch_size = 8;
        options.validation_fraction = 0.25f;  // 4 held out, 12 trained on: one batch of 8
        options.device = sga::Device::Cpu;

        std::mt19937 rng(7);
        std::vector<sga::Image> images;
        for (int i = 0; i < 16; ++i) {
            sga::Image image{32, 32, 1, std::vector<std::uint8_t>(32 * 32)};
            for (std::uint8_t& p : image.pixels) p = static_cast<std::uint8_t>(rng() & 0xff);
            images.push_back(std::move(image));
        }

        sga::Detector detector(options);
        const sga::FitReport report = detector.fit(images);
        detector.save(path);
        const sga::Detector loaded = sga::Detector::load(path, sga::Device::Cpu);

        const std::vector<sga::ScoreResult> before = detector.score(images);
        const std::vector<sga::ScoreResult> after = loaded.score(images);
        int mismatches = 0;
        for (std::size_t i = 0; i < images.size(); ++i) mismatches += before[i].score != after[i].score;
        sga::ScoreOptions with_map;
        with_map.anomaly_map = true;
        const sga::ScoreResult mapped = loaded.score(images[0].view(), with_map);
        std::vector<float> chw(3 * 20 * 24, 0.5f);
        const sga::ScoreResult from_floats = loaded.score(sga::FloatImageView{chw.data(), 24, 20, 3});

        int refused = 0;
        try {
            sga::Detector::load(path + ".missing", sga::Device::Cpu);
        } catch (const sga::IoError&) {
            ++refused;
        }
        const std::string not_image = path + ".txt";
        std::ofstream(not_image) << "not an image\n";
        try {
            sga::load_image(not_image);
        } catch (const sga::FormatError&) {
            ++refused;
        }
        std::remove(not_image.c_str());
        try {
            loaded.score(sga::ImageView{nullptr, 32, 32, 32, sga::PixelFormat::Gray});
        } catch (const sga::InvalidArgument&) {
            ++refused;
        }
        std::remove(path.c_str());

        std::printf("leak_cycle: trained %zu images, %d epoch(s); %zu scores, %d differ after save/load; "
                    "map %zu values; float-view score %.6f; %d of 3 error paths threw\n",
                    report.training_images, report.epochs_completed, after.size(), mismatches,
                    mapped.anomaly_map.size(), static_cast<double>(from_floats.score), refused);
        return mismatches == 0 && refused == 3 && mapped.anomaly_map.size() == 32u * 32u ? 0 : 3;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "leak_cycle: %s\n", e.what());
        std::remove(path.c_str());
        return 2;
    }
}
