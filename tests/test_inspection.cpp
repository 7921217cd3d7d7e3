// The inspection recipe's pieces: the anomaly-map rule (anomaly_map.hpp), synthetic defects
// for restoration training (synthetic_anomalies.hpp), and the recipe end to end through
// Detector (fit, score, maps, file round trip).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "skipganomaly/anomaly_map.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/synthetic_anomalies.hpp"
#include "test_support.hpp"

namespace {

using namespace sga;
namespace fs = std::filesystem;

std::vector<float> uniform_values(std::size_t n, std::uint64_t seed, float low = -1.0f, float high = 1.0f) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(low, high);
    std::vector<float> v(n);
    for (float& x : v) x = u(rng);
    return v;
}

// The spec of smooth_maps: a direct 2D sum over the Gaussian's square, in double, with the
// same reflected edges (d c b | a b c d | c b a).
std::vector<double> smooth_reference(const std::vector<float>& map, int height, int width, float sigma) {
    const std::vector<float> taps = gaussian_taps(sigma);
    const int radius = static_cast<int>(taps.size() / 2);
    auto reflect = [](int i, int n) {
        while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
        return i;
    };
    std::vector<double> out(map.size(), 0.0);
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
            for (int dy = -radius; dy <= radius; ++dy)
                for (int dx = -radius; dx <= radius; ++dx)
                    out[static_cast<std::size_t>(y * width + x)] +=
                        double{taps[static_cast<std::size_t>(dy + radius)]} * taps[static_cast<std::size_t>(dx + radius)] *
                        map[static_cast<std::size_t>(reflect(y + dy, height) * width + reflect(x + dx, width))];
    return out;
}

}  // namespace

TEST_CASE("smooth_maps is the 2D Gaussian with reflected edges, per map", "[inspection][anomaly_map]") {
    for (const auto& [height, width, sigma] : {std::tuple{17, 23, 1.5f}, std::tuple{32, 32, 4.0f}, std::tuple{9, 40, 2.0f}}) {
        const int count = 3;
        std::vector<float> maps = uniform_values(static_cast<std::size_t>(count * height * width), 7, 0.0f, 2.0f);
        const std::vector<float> original = maps;
        smooth_maps(maps.data(), count, height, width, sigma);
        for (int m = 0; m < count; ++m) {
            const std::vector<float> one(original.begin() + m * height * width, original.begin() + (m + 1) * height * width);
            const std::vector<double> expected = smooth_reference(one, height, width, sigma);
            for (std::size_t p = 0; p < expected.size(); ++p) {
                INFO("map " << m << " pixel " << p << " size " << height << "x" << width << " sigma " << sigma);
                REQUIRE(std::abs(maps[static_cast<std::size_t>(m * height * width) + p] - expected[p]) <= 1e-5 + 1e-5 * expected[p]);
            }
        }
    }
}

TEST_CASE("smoothing keeps a constant map, spreads a spike, and sigma 0 changes nothing", "[inspection][anomaly_map]") {
    std::vector<float> constant(20 * 20, 0.37f);
    smooth_maps(constant.data(), 1, 20, 20, 3.0f);
    for (float v : constant) REQUIRE(v == Approx(0.37f).epsilon(1e-5));

    std::vector<float> spike(31 * 31, 0.0f);
    spike[15 * 31 + 15] = 1.0f;
    smooth_maps(spike.data(), 1, 31, 31, 2.0f);
    CHECK(map_image_score(spike.data(), static_cast<std::int64_t>(spike.size())) == spike[15 * 31 + 15]);
    CHECK(spike[15 * 31 + 15] < 0.05f);  // 1 / (2 pi sigma^2) = 0.04
    double sum = 0;
    for (float v : spike) sum += v;
    CHECK(sum == Approx(1.0).epsilon(1e-5));  // far from the edges nothing is lost

    std::vector<float> maps = uniform_values(64, 3);
    const std::vector<float> before = maps;
    smooth_maps(maps.data(), 1, 8, 8, 0.0f);
    CHECK(maps == before);
}

TEST_CASE("an anomaly-map rule refuses a smoothing that is not finite, negative or wider than a quarter image",
          "[inspection][anomaly_map][errors]") {
    CHECK_NOTHROW(AnomalyMapRule{MapError::Absolute, 8.0f, ImageScore::MapMaximum}.validate(32));
    CHECK_THROWS_AS((AnomalyMapRule{MapError::Absolute, 8.5f, ImageScore::MapMaximum}.validate(32)), InvalidArgument);
    CHECK_THROWS_AS((AnomalyMapRule{MapError::Absolute, -1.0f, ImageScore::MapMaximum}.validate(32)), InvalidArgument);
    CHECK_THROWS_AS((AnomalyMapRule{MapError::Absolute, NAN, ImageScore::MapMaximum}.validate(32)), InvalidArgument);
}

TEST_CASE("synthetic defects change a region of about half the images, stay in range, and repeat with the seed",
          "[inspection][synthetic]") {
    const std::int64_t count = 64, channels = 3, size = 32, sample = channels * size * size;
    const std::vector<float> clean = uniform_values(static_cast<std::size_t>(count * sample), 5, -0.5f, 0.5f);
    std::vector<float> a(clean.size()), b(clean.size());
    RandomStream first(42), second(42);
    paste_synthetic_defects(clean.data(), a.data(), count, channels, size, first);
    paste_synthetic_defects(clean.data(), b.data(), count, channels, size, second);
    CHECK(a == b);
    CHECK(first.offset() == second.offset());
    int changed = 0;
    for (std::int64_t i = 0; i < count; ++i) {
        std::int64_t pixels = 0;
        for (std::int64_t p = 0; p < size * size; ++p) {
            bool differs = false;
            for (std::int64_t c = 0; c < channels; ++c) {
                const std::size_t at = static_cast<std::size_t>(i * sample + c * size * size + p);
                REQUIRE(a[at] >= -1.0f);
                REQUIRE(a[at] <= 1.0f);
                differs = differs || a[at] != clean[at];
            }
            pixels += differs ? 1 : 0;
        }
        if (pixels > 0) {
            ++changed;
            // A region, not the whole image: at most 40% of it (and at least one pixel).
            CHECK(pixels <= size * size * 2 / 5);
        }
    }
    // Each image with probability 1/2: 64 draws land in [16, 48] with probability > 0.9999.
    CHECK(changed >= 16);
    CHECK(changed <= 48);

    std::vector<float> other(clean.size());
    RandomStream third(43);
    paste_synthetic_defects(clean.data(), other.data(), count, channels, size, third);
    CHECK(other != a);
}

TEST_CASE("restoration with synthetic defects trains on corrupted inputs and scores the clean one",
          "[inspection][restoration]") {
    Restoration r;
    r.corruption = Corruption::SyntheticDefects;
    CHECK(r.enabled());
    CHECK(r.scoring_views() == 1);
    CHECK(std::string(corruption_name(r.corruption)) == "synthetic_defects");
    const std::vector<float> clean = uniform_values(8 * 32 * 32, 9);
    std::vector<float> view(clean.size());
    r.scoring_view(clean.data(), view.data(), 8, 1, 32, 0);
    CHECK(view == clean);
    std::vector<float> corrupted(clean.size());
    RandomStream random(1);
    r.corrupt(clean.data(), corrupted.data(), 8, 1, 32, random);
    CHECK(corrupted != clean);
}

TEST_CASE("the inspection recipe scores the maximum of its smoothed absolute-error map, and round-trips through a file",
          "[inspection][detector]") {
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::inspection();
    o.recipe.anomaly_map.smoothing_sigma = 2.0f;  // a quarter of the tiny model's 32 pixels is 8
    o.epochs = 2;
    std::vector<Image> images;
    for (unsigned i = 0; i < 40; ++i) images.push_back(sga::testing::random_image(32, 32, 1, 300 + i));
    Detector d(o);
    d.fit(images);
    REQUIRE(d.is_trained());
    REQUIRE(d.pixel_statistics().count > 0);

    ScoreOptions with_maps;
    with_maps.anomaly_map = true;
    with_maps.reconstruction = true;
    for (unsigned i = 0; i < 3; ++i) {
        const Image probe = sga::testing::random_image(32, 32, 1, 900 + i);
        const ScoreResult r = d.score(probe.view(), with_maps);
        REQUIRE(r.anomaly_map.size() == 32 * 32);
        // The score is the largest value of the returned map ...
        CHECK(r.score == *std::max_element(r.anomaly_map.begin(), r.anomaly_map.end()));
        // ... which is |x - G(x)| smoothed with the recipe's Gaussian.
        std::vector<float> x(32 * 32);
        preprocess(probe.view(), 32, 1, x.data());
        std::vector<float> expected(32 * 32);
        for (std::size_t p = 0; p < expected.size(); ++p) expected[p] = std::abs(x[p] - r.reconstruction[p]);
        smooth_maps(expected.data(), 1, 32, 32, 2.0f);
        for (std::size_t p = 0; p < expected.size(); ++p) REQUIRE(r.anomaly_map[p] == Approx(expected[p]).margin(1e-5));
        // Without maps asked for, the same score.
        CHECK(d.score(probe.view()).score == r.score);
    }

    const fs::path path = fs::temp_directory_path() / "sga_test_inspection.safetensors";
    d.save(path.string());
    const Detector loaded = Detector::load(path.string(), Device::Cpu);
    fs::remove(path);
    const Recipe& r = loaded.options().recipe;
    CHECK(r.name == "inspection");
    CHECK(r.restoration.corruption == Corruption::SyntheticDefects);
    CHECK(r.anomaly_map.error == MapError::Absolute);
    CHECK(r.anomaly_map.smoothing_sigma == 2.0f);
    CHECK(r.anomaly_map.image_score == ImageScore::MapMaximum);
    for (unsigned i = 0; i < 3; ++i) {
        const Image probe = sga::testing::random_image(32, 32, 1, 950 + i);
        CHECK(loaded.score(probe.view()).score == d.score(probe.view()).score);
    }
}

TEST_CASE("the inspection recipe's default training length counts steps, and fit holds out as it says",
          "[inspection][recipe]") {
    const TrainingLength inspection = default_training_length(Recipe::inspection());
    CHECK(inspection.batch_size == 16);
    CHECK(inspection.steps == 440);
    // 180 images: 11 full batches an epoch (the partial one is dropped), so 40 epochs give 440.
    CHECK(inspection.epochs_for(180) == 40);
    CHECK(inspection.epochs_for(181) == 40);
    CHECK(inspection.epochs_for(176) == 40);  // exactly 11 batches
    CHECK(inspection.epochs_for(175) == 44);  // 10 batches
    CHECK(inspection.epochs_for(270) == 28);  // 16 batches: 27 x 16 = 432 < 440 <= 28 x 16
    CHECK(inspection.epochs_for(20000) == 1);
    CHECK(inspection.epochs_for(3) == 440);   // fewer than a batch: fit refuses it, naming the batch
    for (const Recipe& r : {Recipe::official(), Recipe::robust(), Recipe::robust_rotation()}) {
        const TrainingLength t = default_training_length(r);
        CHECK(t.steps == 0);
        CHECK(t.epochs_for(180) == DetectorOptions{}.epochs);
        CHECK(t.batch_size == DetectorOptions{}.batch_size);
    }
    CHECK(held_out_image_count(200, 0.1f) == 20);
    CHECK(held_out_image_count(9, 0.1f) == 1);  // at least one
    CHECK(held_out_image_count(9, 0.0f) == 0);
    // fit holds out exactly held_out_image_count: its report says how many it trained on.
    std::vector<Image> images;
    for (unsigned i = 0; i < 23; ++i) images.push_back(sga::testing::random_image(32, 32, 1, 500 + i));
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::official();
    o.epochs = 1;
    o.batch_size = 4;
    o.validation_fraction = 0.2f;
    Detector detector(o);
    const FitReport report = detector.fit(images);
    CHECK(report.validation_images == held_out_image_count(23, 0.2f));
    CHECK(report.training_images == 23 - held_out_image_count(23, 0.2f));
}
