// The Detector API on tiny networks: fit, score, thresholds, save/load, determinism,
// batch independence, concurrency, cancellation, checkpoints and divergence.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <random>
#include <thread>

#include "model_file.hpp"
#include "skipganomaly/detector.hpp"
#include "test_support.hpp"

namespace {

using namespace sga;
namespace fs = std::filesystem;

DetectorOptions tiny_options() { return sga::testing::tiny_detector_options(); }

// Grey 28x28 images with a bright blob at a random place: a simple "normal" class.
std::vector<Image> blob_images(int count, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> centre(8, 20), noise(0, 20);
    std::vector<Image> images;
    for (int i = 0; i < count; ++i) {
        Image im{28, 28, 1, std::vector<std::uint8_t>(28 * 28)};
        const double cx = centre(rng), cy = centre(rng);
        for (int y = 0; y < 28; ++y)
            for (int x = 0; x < 28; ++x) {
                const double d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
                im.pixels[static_cast<std::size_t>(y * 28 + x)] =
                    static_cast<std::uint8_t>(std::min(255.0, 230.0 * std::exp(-d2 / 18.0) + noise(rng)));
            }
        images.push_back(std::move(im));
    }
    return images;
}

// Checkerboards: clearly unlike the blobs.
std::vector<Image> checker_images(int count, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<Image> images;
    for (int i = 0; i < count; ++i) {
        Image im{28, 28, 1, std::vector<std::uint8_t>(28 * 28)};
        const int cell = 2 + static_cast<int>(rng() % 4);
        for (int y = 0; y < 28; ++y)
            for (int x = 0; x < 28; ++x)
                im.pixels[static_cast<std::size_t>(y * 28 + x)] = ((x / cell + y / cell) % 2) ? 255 : static_cast<std::uint8_t>(rng() % 40);
        images.push_back(std::move(im));
    }
    return images;
}

std::vector<float> scores_of(const Detector& d, const std::vector<Image>& images) {
    std::vector<float> s;
    for (const ScoreResult& r : d.score(images)) s.push_back(r.score);
    return s;
}

struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("sga_detector_" + std::to_string(std::random_device{}()));
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

const std::vector<Image>& training_set() {
    static const std::vector<Image> images = blob_images(40, 1);
    return images;
}

const Detector& trained_detector() {
    static const Detector detector = [] {
        Detector d(tiny_options());
        d.fit(training_set());
        return d;
    }();
    return detector;
}

}  // namespace

TEST_CASE("fit trains, holds out validation images and sets the threshold from them", "[detector]") {
    Detector d(tiny_options());
    CHECK_FALSE(d.is_trained());
    int batches_seen = 0;
    int epochs_seen = 0;
    FitCallbacks callbacks;
    callbacks.on_batch = [&](const TrainingProgress& p) {
        ++batches_seen;
        CHECK(p.epochs == 2);
        CHECK(p.batches == 4);  // 32 training images / batch 8
        CHECK(std::isfinite(p.losses.generator));
        CHECK(p.estimated_remaining_seconds >= 0);
    };
    callbacks.on_epoch = [&](const EpochSummary&) { ++epochs_seen; };
    const FitReport report = d.fit(training_set(), callbacks);
    CHECK(d.is_trained());
    CHECK(report.training_images == 32);
    CHECK(report.validation_images == 8);
    CHECK(report.epochs_completed == 2);
    CHECK(batches_seen == 8);
    CHECK(epochs_seen == 2);
    CHECK(report.validation_scores.count == 8);
    CHECK(report.threshold == d.threshold());
    CHECK(report.threshold >= report.validation_scores.min);
    CHECK(report.threshold <= report.validation_scores.max);
}

TEST_CASE("the same seed gives the same model, another seed another one", "[detector]") {
    const std::vector<Image> probe = blob_images(5, 99);
    Detector again(tiny_options());
    again.fit(training_set());
    CHECK(scores_of(again, probe) == scores_of(trained_detector(), probe));
    DetectorOptions other = tiny_options();
    other.seed = 6;
    Detector different(other);
    different.fit(training_set());
    CHECK(scores_of(different, probe) != scores_of(trained_detector(), probe));
}

TEST_CASE("an image's score does not depend on the rest of its batch", "[detector]") {
    const Detector& d = trained_detector();
    std::vector<Image> images = blob_images(6, 7);
    const std::vector<Image> anomalies = checker_images(3, 8);
    images.insert(images.end(), anomalies.begin(), anomalies.end());
    const std::vector<float> together = scores_of(d, images);
    for (std::size_t i = 0; i < images.size(); ++i) {
        const float alone = d.score(images[i].view()).score;
        CHECK(alone == Approx(together[i]).epsilon(1e-6));
    }
    std::vector<Image> reversed(images.rbegin(), images.rend());
    const std::vector<float> backwards = scores_of(d, reversed);
    for (std::size_t i = 0; i < images.size(); ++i) CHECK(backwards[images.size() - 1 - i] == Approx(together[i]).epsilon(1e-6));
}

TEST_CASE("score results are consistent: parts, threshold, normalised score, anomaly map", "[detector]") {
    const Detector& d = trained_detector();
    const std::vector<Image> images = checker_images(2, 3);
    ScoreOptions with_map;
    with_map.anomaly_map = true;
    for (const Image& im : images) {
        const ScoreResult r = d.score(im.view(), with_map);
        CHECK(r.score == Approx(0.9f * r.reconstruction_error + 0.1f * r.latent_error).epsilon(1e-6));
        CHECK(r.threshold == d.threshold());
        CHECK(r.is_anomaly == (r.score >= r.threshold));
        CHECK(r.is_anomaly == (r.normalized_score >= 0.5f));
        CHECK(r.normalized_score >= 0.0f);
        CHECK(r.normalized_score <= 1.0f);
        REQUIRE(r.map_width == 28);
        REQUIRE(r.map_height == 28);
        REQUIRE(r.anomaly_map.size() == 28u * 28u);
        double sum = 0;
        for (float v : r.anomaly_map) {
            CHECK(v >= 0.0f);
            sum += v;
        }
        // The map is the per-pixel reconstruction error; its mean is the error's scale.
        CHECK(sum / (28.0 * 28.0) == Approx(r.reconstruction_error).epsilon(0.5));
    }
}

TEST_CASE("the threshold can be changed at run time", "[detector]") {
    Detector d(tiny_options());
    d.fit(training_set());
    const Image& image = training_set().front();
    d.set_threshold(-1.0f);
    CHECK(d.score(image.view()).is_anomaly);
    d.set_threshold(1e9f);
    CHECK_FALSE(d.score(image.view()).is_anomaly);
    CHECK_THROWS_AS(d.set_threshold(std::nanf("")), InvalidArgument);
}

TEST_CASE("calibrate picks the F1-maximising threshold from labelled images", "[detector]") {
    Detector d(tiny_options());
    d.fit(training_set());
    const std::vector<Image> normal = blob_images(10, 21), anomalous = checker_images(10, 22);
    std::vector<ImageView> nv, av;
    for (const Image& im : normal) nv.push_back(im.view());
    for (const Image& im : anomalous) av.push_back(im.view());
    const CalibrationResult c = d.calibrate(nv, av);
    CHECK(d.threshold() == c.threshold);
    CHECK(c.f1 > 0.0);
    CHECK(c.f1 <= 1.0);
    CHECK(c.auroc >= 0.0);
    CHECK(c.auroc <= 1.0);
}

TEST_CASE("gray and RGB inputs of the same content give the same score", "[detector]") {
    const Detector& d = trained_detector();
    const Image& gray = training_set()[3];
    Image rgb{gray.width, gray.height, 3, {}};
    for (std::uint8_t v : gray.pixels) rgb.pixels.insert(rgb.pixels.end(), {v, v, v});
    CHECK(d.score(rgb.view()).score == Approx(d.score(gray.view()).score).epsilon(1e-6));
}

TEST_CASE("save and load round-trip the model exactly", "[detector][io]") {
    TempDir dir;
    const std::string path = (dir.path / "model.safetensors").string();
    const Detector& d = trained_detector();
    d.save(path);
    const Detector loaded = Detector::load(path, Device::Cpu);
    const std::vector<Image> probe = checker_images(4, 5);
    CHECK(scores_of(loaded, probe) == scores_of(d, probe));
    CHECK(loaded.threshold() == d.threshold());
    CHECK(loaded.validation_statistics().mean == d.validation_statistics().mean);
    CHECK(loaded.options().architecture.generator_features == 4);
    CHECK(loaded.model().generator.training_passes == d.model().generator.training_passes);
    // No temporary file is left behind.
    int files = 0;
    for (const auto& entry : fs::directory_iterator(dir.path)) {
        (void)entry;
        ++files;
    }
    CHECK(files == 1);
}

TEST_CASE("bad options and inputs are refused with a message", "[detector][errors]") {
    DetectorOptions o = tiny_options();
    o.architecture.image_size = 48;
    CHECK_THROWS_WITH(Detector(o), Catch::Contains("power of two"));
    o = tiny_options();
    o.architecture.channels = 2;
    CHECK_THROWS_WITH(Detector(o), Catch::Contains("channels must be 1 or 3"));
    o = tiny_options();
    o.batch_size = 0;
    CHECK_THROWS_WITH(Detector(o), Catch::Contains("batch_size"));
    o = tiny_options();
    o.adam.learning_rate = -1e-3f;
    CHECK_THROWS_WITH(Detector(o), Catch::Contains("learning rate"));

    Detector d(tiny_options());
    CHECK_THROWS_WITH(d.fit(std::vector<Image>{}), Catch::Contains("empty"));
    CHECK_THROWS_WITH(d.fit(blob_images(5, 2)), Catch::Contains("fewer than one batch"));
    CHECK_THROWS_WITH(d.score(training_set()[0].view()), Catch::Contains("not trained"));
    TempDir dir;
    CHECK_THROWS_AS(d.save((dir.path / "untrained.safetensors").string()), InvalidArgument);
    CHECK_FALSE(fs::exists(dir.path / "untrained.safetensors"));

    ImageView broken{nullptr, 28, 28, 28, PixelFormat::Gray};
    CHECK_THROWS_AS(trained_detector().score(broken), InvalidArgument);
}

TEST_CASE("score is safe from many threads at once", "[detector][concurrency]") {
    const Detector& d = trained_detector();
    const std::vector<Image> images = blob_images(8, 31);
    const std::vector<float> expected = scores_of(d, images);
    std::atomic<int> mismatches{0}, calls{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            for (int k = 0; k < 250; ++k) {
                const std::size_t i = static_cast<std::size_t>((t + k) % 8);
                if (d.score(images[i].view()).score != Approx(expected[i]).epsilon(1e-6)) ++mismatches;
                ++calls;
            }
        });
    for (std::thread& t : threads) t.join();
    CHECK(calls == 2000);
    CHECK(mismatches == 0);
}

TEST_CASE("a cancelled fit returns the model of the last completed epoch", "[detector][cancel]") {
    std::atomic<bool> cancel{false};
    FitCallbacks callbacks;
    callbacks.cancel = &cancel;
    callbacks.on_batch = [&](const TrainingProgress& p) {
        if (p.epoch == 2 && p.batch == 2) cancel = true;
    };
    Detector cancelled(tiny_options());
    const FitReport report = cancelled.fit(training_set(), callbacks);
    CHECK(report.cancelled);
    CHECK(report.epochs_completed == 1);
    CHECK(cancelled.is_trained());

    DetectorOptions one_epoch = tiny_options();
    one_epoch.epochs = 1;
    Detector reference(one_epoch);
    reference.fit(training_set());
    const std::vector<Image> probe = blob_images(4, 41);
    CHECK(scores_of(cancelled, probe) == scores_of(reference, probe));
}

// Trains epoch 1 of tiny_options() and writes its checkpoint into dir; returns the path.
std::string epoch1_checkpoint(const TempDir& dir) {
    const std::string checkpoint = (dir.path / "epoch1.safetensors").string();
    DetectorOptions first = tiny_options();
    first.epochs = 1;
    first.checkpoint_every_epochs = 1;
    first.checkpoint_path = checkpoint;
    Detector(first).fit(training_set());
    REQUIRE(fs::exists(checkpoint));
    return checkpoint;
}

TEST_CASE("resuming from a checkpoint gives the same weights as an uninterrupted run", "[detector][checkpoint]") {
    TempDir dir;
    const std::string checkpoint = epoch1_checkpoint(dir);

    DetectorOptions resumed_options = tiny_options();
    resumed_options.resume_from = checkpoint;
    Detector resumed(resumed_options);
    const FitReport report = resumed.fit(training_set());
    CHECK(report.epochs.size() == 1);  // only epoch 2 ran
    CHECK(report.epochs_completed == 2);

    const std::vector<Image> probe = blob_images(4, 51);
    CHECK(scores_of(resumed, probe) == scores_of(trained_detector(), probe));
    // A checkpoint is not a model to score with.
    CHECK_THROWS_AS(Detector::load(checkpoint, Device::Cpu).score(probe[0].view()), Error);
}

TEST_CASE("training that diverges in a later epoch returns to the last completed epoch exactly", "[detector][numerics][checkpoint]") {
    // Epoch 1 runs normally and is checkpointed; epoch 2 resumes from it with a learning rate
    // whose first Adam step overflows. fit must throw and leave the weights, batch-norm
    // statistics and optimiser state of the end of epoch 1, bit for bit.
    TempDir dir;
    const std::string checkpoint = epoch1_checkpoint(dir);
    DetectorOptions diverging = tiny_options();
    diverging.resume_from = checkpoint;
    diverging.adam.learning_rate = 1e38f;
    Detector d(diverging);
    const std::string message = sga::testing::message_of<NumericalError>([&] { d.fit(training_set()); });
    CHECK_THAT(message, Catch::Contains("epoch 2") && Catch::Contains("returned to the end of epoch 1"));
    CHECK_FALSE(d.is_trained());

    Context ctx(Device::Cpu);
    SkipGanomaly epoch1(diverging.architecture, diverging.adam, diverging.loss_weights);
    epoch1.materialize(ctx);
    model_file::Reader::open(checkpoint).load_into(epoch1);
    auto same = [](const ParameterBlock& a, const ParameterBlock& b) {
        return Tensor::host_values(a.values()) == Tensor::host_values(b.values());
    };
    CHECK(same(d.model().generator.parameters, epoch1.generator.parameters));
    CHECK(same(d.model().generator.statistics, epoch1.generator.statistics));
    CHECK(same(d.model().discriminator.parameters, epoch1.discriminator.parameters));
    CHECK(same(d.model().discriminator.statistics, epoch1.discriminator.statistics));
    CHECK(Tensor::host_values(d.model().generator.parameters.second_moments()) ==
          Tensor::host_values(epoch1.generator.parameters.second_moments()));
    CHECK(d.model().generator_optimizer.steps() == epoch1.generator_optimizer.steps());
}

TEST_CASE("diverging training stops with an error and keeps finite weights", "[detector][numerics]") {
    DetectorOptions o = tiny_options();
    o.adam.learning_rate = 1e38f;  // the first Adam step overflows every weight
    Detector d(o);
    CHECK_THROWS_AS(d.fit(training_set()), NumericalError);
    CHECK_FALSE(d.is_trained());
    for (float v : Tensor::host_values(d.model().generator.parameters.values())) REQUIRE(std::isfinite(v));
    for (float v : Tensor::host_values(d.model().discriminator.parameters.values())) REQUIRE(std::isfinite(v));
}
