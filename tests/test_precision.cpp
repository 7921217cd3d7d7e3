// The scoring precision (Precision, DetectorOptions::precision, Detector::set_precision): what
// bfloat16 scoring changes and what it keeps. float32 stays the bits it was; bfloat16 moves
// scores by bfloat16's rounding, and keeps within itself every determinism that float32 has:
// the same bits alone or in a batch, at any thread count, under concurrent callers, and after
// a save and load. On a processor without AVX512-BF16 a bfloat16 Detector scores in float32
// and says so (active_precision).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>
#include <vector>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "test_support.hpp"

namespace {

using namespace sga;
namespace fs = std::filesystem;

// The default recipe on blobs, with more features than the tiny Detector so that the
// convolutions have real depth (K up to 16 x 32 = 512).
const Detector& trained() {
    static const Detector detector = [] {
        DetectorOptions o = sga::testing::tiny_detector_options();
        o.architecture.generator_features = 16;
        o.architecture.discriminator_features = 16;
        o.architecture.latent_size = 16;
        o.epochs = 1;
        std::mt19937_64 rng(11);
        std::vector<Image> images;
        for (int i = 0; i < 40; ++i) images.push_back(sga::testing::blob_image(rng));
        Detector d(o);
        d.fit(images);
        return d;
    }();
    return detector;
}

std::vector<Image> probes() {
    std::vector<Image> images;
    std::mt19937_64 rng(12);
    for (int i = 0; i < 6; ++i) images.push_back(sga::testing::blob_image(rng));
    for (unsigned i = 0; i < 4; ++i) images.push_back(sga::testing::random_image(28, 28, 1, 100 + i));
    return images;
}

std::vector<float> scores(const Detector& d, const std::vector<Image>& images) {
    std::vector<float> s;
    for (const ScoreResult& r : d.score(images)) s.push_back(r.score);
    return s;
}

// One image at a time: the score batcher's path (single images on the CPU).
std::vector<float> scores_one_by_one(const Detector& d, const std::vector<Image>& images) {
    std::vector<float> s;
    for (const Image& image : images) s.push_back(d.score(image.view()).score);
    return s;
}

Detector copy_of(const Detector& d, const fs::path& folder) {
    const std::string path = (folder / "model.safetensors").string();
    d.save(path);
    return Detector::load(path, Device::Cpu);
}

struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("sga_precision_" + std::to_string(std::random_device{}()));
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

}  // namespace

TEST_CASE("precision names round-trip and bad names are refused", "[precision]") {
    REQUIRE(precision_from_name(precision_name(Precision::Float32)) == Precision::Float32);
    REQUIRE(precision_from_name(precision_name(Precision::BFloat16)) == Precision::BFloat16);
    REQUIRE_THROWS_AS(precision_from_name("int4"), InvalidArgument);
}

TEST_CASE("bfloat16 scoring moves scores by its rounding and float32 keeps its bits", "[precision]") {
    TempDir dir;
    Detector d = copy_of(trained(), dir.path);
    REQUIRE(d.options().precision == Precision::Float32);
    REQUIRE(d.active_precision() == Precision::Float32);
    const std::vector<Image> images = probes();
    const std::vector<float> float32 = scores(d, images);

    d.set_precision(Precision::BFloat16);
    REQUIRE(d.options().precision == Precision::BFloat16);
    const std::vector<float> bf16 = scores(d, images);
    if (!cpu_bf16_available()) {
        // Without the instructions bfloat16 runs as float32, bit for bit, and says so.
        REQUIRE(d.active_precision() == Precision::Float32);
        REQUIRE(bf16 == float32);
        return;
    }
    REQUIRE(d.active_precision() == Precision::BFloat16);
    double largest = 0;
    for (std::size_t i = 0; i < images.size(); ++i) {
        REQUIRE(std::isfinite(bf16[i]));
        largest = std::max(largest, std::abs(double{bf16[i]} - float32[i]) / std::abs(double{float32[i]}));
    }
    INFO("largest relative score difference " << largest);
    REQUIRE(largest > 1e-6);  // it does round: float32 scores would agree to the bit
    REQUIRE(largest < 0.05);  // and no more than bfloat16's rounding explains

    // Back to float32: the original bits.
    d.set_precision(Precision::Float32);
    REQUIRE(d.active_precision() == Precision::Float32);
    REQUIRE(scores(d, images) == float32);
}

TEST_CASE("bfloat16 scores do not depend on the batch, the thread count or other callers", "[precision][concurrency]") {
    if (!cpu_bf16_available()) return;  // then bfloat16 is float32: its determinism is tested elsewhere
    TempDir dir;
    Detector d = copy_of(trained(), dir.path);
    d.set_precision(Precision::BFloat16);
    const std::vector<Image> images = probes();
    set_cpu_threads(1);
    const std::vector<float> batch = scores(d, images);
    REQUIRE(scores_one_by_one(d, images) == batch);
    for (int threads : {2, 3}) {
        set_cpu_threads(threads);
        CHECK(scores(d, images) == batch);
        CHECK(scores_one_by_one(d, images) == batch);
    }
    set_cpu_threads(0);
    std::vector<std::vector<float>> concurrent(4);
    std::vector<std::thread> callers;
    for (std::size_t t = 0; t < concurrent.size(); ++t)
        callers.emplace_back([&, t] { concurrent[t] = scores_one_by_one(d, images); });
    for (std::thread& t : callers) t.join();
    for (const std::vector<float>& s : concurrent) CHECK(s == batch);
}

TEST_CASE("the model file keeps the precision, and float32 files stay as they were", "[precision][io]") {
    TempDir dir;
    Detector d = copy_of(trained(), dir.path);
    const std::vector<Image> images = probes();
    d.set_precision(Precision::BFloat16);
    const std::vector<float> before = scores(d, images);
    const std::string path = (dir.path / "bf16.safetensors").string();
    d.save(path);
    const Detector loaded = Detector::load(path, Device::Cpu);
    REQUIRE(loaded.options().precision == Precision::BFloat16);
    REQUIRE(loaded.active_precision() == d.active_precision());
    REQUIRE(scores(loaded, images) == before);

    // A float32 Detector writes the file it wrote before precisions existed: no "precision" key.
    d.set_precision(Precision::Float32);
    const std::string float32_path = (dir.path / "float32.safetensors").string();
    d.save(float32_path);
    std::ifstream file(float32_path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    REQUIRE(bytes.find("\"precision\"") == std::string::npos);
    REQUIRE(Detector::load(float32_path, Device::Cpu).options().precision == Precision::Float32);
}

TEST_CASE("fit at bfloat16 learns its threshold from bfloat16 scores", "[precision]") {
    if (!cpu_bf16_available()) return;
    DetectorOptions o = trained().options();
    o.precision = Precision::BFloat16;
    std::mt19937_64 rng(11);
    std::vector<Image> images;
    for (int i = 0; i < 40; ++i) images.push_back(sga::testing::blob_image(rng));
    Detector d(o);
    d.fit(images);
    REQUIRE(d.active_precision() == Precision::BFloat16);
    // The same seed trains the same float32 weights; only the scores behind the threshold differ.
    REQUIRE(d.threshold() != trained().threshold());
    REQUIRE(std::abs(d.threshold() - trained().threshold()) < 0.05 * std::abs(trained().threshold()));
}

// DetectorOptions::training_precision: bfloat16 training trains a model close to float32's from
// the same seed (not the same bits), the model file records it, and a checkpoint resumes only
// at the precision it was trained at. Without AVX512-BF16 it trains float32's bits.
TEST_CASE("bfloat16 training trains close to float32 and the model file records it", "[precision][training]") {
    TempDir dir;
    DetectorOptions o = trained().options();
    o.training_precision = Precision::BFloat16;
    std::mt19937_64 rng(11);
    std::vector<Image> images;
    for (int i = 0; i < 40; ++i) images.push_back(sga::testing::blob_image(rng));
    Detector d(o);
    d.fit(images);
    const std::vector<Image> probe = probes();
    const std::vector<float> bf16 = scores(d, probe), float32 = scores(trained(), probe);
    if (!cpu_bf16_available()) {
        REQUIRE(bf16 == float32);
    } else {
        REQUIRE(bf16 != float32);
        for (std::size_t i = 0; i < probe.size(); ++i) {
            INFO("image " << i << ": float32-trained " << float32[i] << ", bfloat16-trained " << bf16[i]);
            REQUIRE(std::isfinite(bf16[i]));
            CHECK(std::abs(bf16[i] - float32[i]) < 0.1 * std::abs(float32[i]));
        }
    }
    const Detector loaded = copy_of(d, dir.path);
    REQUIRE(loaded.options().training_precision == Precision::BFloat16);
    REQUIRE(loaded.options().precision == Precision::Float32);  // scoring precision is its own setting
    REQUIRE(scores(loaded, probe) == bf16);
    REQUIRE(copy_of(trained(), dir.path).options().training_precision == Precision::Float32);

    // A checkpoint of a bfloat16 run does not resume as float32.
    DetectorOptions first = o;
    first.checkpoint_every_epochs = 1;
    first.checkpoint_path = (dir.path / "checkpoint.safetensors").string();
    Detector(first).fit(images);
    DetectorOptions resumed = o;
    resumed.training_precision = Precision::Float32;
    resumed.epochs = 2;
    resumed.resume_from = first.checkpoint_path;
    REQUIRE_THROWS_WITH(Detector(resumed).fit(images), Catch::Contains("training precision"));
    resumed.training_precision = Precision::BFloat16;
    REQUIRE_NOTHROW(Detector(resumed).fit(images));
}
