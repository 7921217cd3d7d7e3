// The Detector API on tiny networks: fit, score, thresholds, save/load, determinism,
// batch independence, concurrency, cancellation, checkpoints and divergence.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "skipganomaly/metrics.hpp"

#include "model_file.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"
#include "reference.hpp"
#include "test_support.hpp"

namespace {

using namespace sga;
namespace fs = std::filesystem;

DetectorOptions tiny_options() { return sga::testing::tiny_detector_options(); }

// Grey 28x28 images with a bright blob at a random place: a simple "normal" class.
std::vector<Image> blob_images(int count, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<Image> images;
    for (int i = 0; i < count; ++i) images.push_back(sga::testing::blob_image(rng));
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

// The default recipe with its rotation techniques kept: the blobs would fail its orientation
// check, and trained_detector() is robust_rotation_unoriented.
const Detector& rotation_detector() {
    static const Detector detector = [] {
        DetectorOptions o = tiny_options();
        o.recipe.orientation_check.enabled = false;
        Detector d(o);
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
    // The blobs have no upright: the default recipe's orientation check, at the end of
    // epoch 1 (a third of 8 steps), finds none, and fit() trains both epochs again without the
    // rotation techniques (recipe.hpp, orientation_check.hpp).
    CHECK(report.orientation.checked);
    CHECK_FALSE(report.orientation.oriented);
    CHECK(d.options().recipe.name == "robust_rotation_unoriented");
    CHECK(batches_seen == 4 + 8);
    CHECK(epochs_seen == 2);  // the probing epoch is not reported
    CHECK(report.validation_scores.count == 8);
    CHECK(report.threshold == d.threshold());
    // threshold_from_normal_scores on 8 held-out images: a robust fit, not an order statistic,
    // so it may lie above the largest held-out score; never below their median.
    CHECK(std::isfinite(report.threshold));
    CHECK(report.threshold >= report.validation_scores.quantile_values[0]);
    CHECK(report.validation_scores.quantile_levels[0] == 0.5);
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
    // The default recipe as it trains on these blobs (its fallback), and with its rotation
    // techniques kept: the bound detector.hpp states holds for both.
    const bool rotation = GENERATE(false, true);
    const Detector& d = rotation ? rotation_detector() : trained_detector();
    INFO("recipe " << d.options().recipe.name);
    std::vector<Image> images = blob_images(6, 7);
    const std::vector<Image> anomalies = checker_images(3, 8);
    images.insert(images.end(), anomalies.begin(), anomalies.end());
    // The parts agree to float rounding (the batch changes how the GEMMs are blocked); the
    // score, standardised by the default recipe, to 1e-4 of the normal scores' spread.
    const auto same = [](const ScoreResult& x, const ScoreResult& y) {
        CHECK(x.reconstruction_error == Approx(y.reconstruction_error).epsilon(1e-6));
        CHECK(x.latent_error == Approx(y.latent_error).epsilon(1e-6));
        CHECK(x.rotation_error == Approx(y.rotation_error).epsilon(1e-6));
        CHECK(x.score == Approx(y.score).epsilon(1e-6).margin(1e-4));
    };
    const std::vector<ScoreResult> together = d.score(images);
    for (std::size_t i = 0; i < images.size(); ++i) same(d.score(images[i].view()), together[i]);
    std::vector<Image> reversed(images.rbegin(), images.rend());
    const std::vector<ScoreResult> backwards = d.score(reversed);
    for (std::size_t i = 0; i < images.size(); ++i) same(backwards[images.size() - 1 - i], together[i]);
}

TEST_CASE("score results are consistent: parts, threshold, normalised score, anomaly map", "[detector]") {
    const Detector& d = rotation_detector();
    const std::vector<Image> images = checker_images(2, 3);
    ScoreOptions with_map;
    with_map.anomaly_map = true;
    for (const Image& im : images) {
        const ScoreResult r = d.score(im.view(), with_map);
        // The default recipe (robust_rotation) standardises the official score and the rotation
        // error over the normal images fit() scored, and weighs them (rotation_prediction.hpp).
        REQUIRE(d.options().recipe.rotation_prediction.enabled);
        const ScoreStandardisation& s = d.model().score_standardisation();
        const double w = d.options().recipe.rotation_prediction.score_weight;
        const double official = 0.9 * r.reconstruction_error + 0.1 * r.latent_error;
        CHECK(r.score == Approx((1 - w) * (official - s.official_mean) / s.official_std +
                                w * (r.rotation_error - s.rotation_mean) / s.rotation_std)
                             .epsilon(1e-5)
                             .margin(1e-5));
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

TEST_CASE("gradients and optimiser moments exist only while fit runs", "[detector][memory]") {
    // A detector that only scores holds its weights once, not four times.
    const Detector& trained = trained_detector();
    CHECK_FALSE(trained.model().has_training_buffers());
    TempDir dir;
    const std::string path = (dir.path / "model.safetensors").string();
    trained.save(path);
    CHECK_FALSE(Detector::load(path, Device::Cpu).model().has_training_buffers());

    // A second fit allocates them again, from zero: it repeats the first exactly.
    Detector twice(tiny_options());
    twice.fit(training_set());
    twice.fit(training_set());
    const std::vector<Image> probe = blob_images(4, 61);
    CHECK(scores_of(twice, probe) == scores_of(trained, probe));

    // Underneath: a training forward without them is refused; train_step allocates them.
    Context ctx(Device::Cpu);
    const DetectorOptions o = tiny_options();
    SkipGanomaly model(o.architecture, o.adam, o.loss_weights);
    model.materialize(ctx);
    CHECK_FALSE(model.has_training_buffers());
    const int size = o.architecture.image_size, channels = o.architecture.channels;
    const Tensor x = Tensor::from_host(Shape{2, channels, size, size},
                                       sga::testing::random_vector(static_cast<std::size_t>(2 * channels * size * size), 7));
    Tape tape(ctx);
    CHECK_THROWS_AS(model.generator.forward(tape, tape.constant(x.view()), BatchNormMode::Training), InvalidArgument);
    {
        NoGradGuard no_grad(tape);
        CHECK_NOTHROW(model.generator.forward(tape, tape.constant(x.view()), BatchNormMode::RunningStatistics));
    }
    sga::RandomStream random(3);
    model.initialize(ctx, random);
    model.train_step(ctx, tape, x.view(), random);
    CHECK(model.has_training_buffers());
    model.release_training_buffers();
    CHECK_FALSE(model.has_training_buffers());
}

TEST_CASE("a float16 model file loads through Detector and scores close to the float file", "[detector][io][float16]") {
    TempDir dir;
    const std::string full = (dir.path / "full.safetensors").string(), half = (dir.path / "half.safetensors").string();
    const Detector& d = trained_detector();
    d.save(full);
    d.save(half, WeightStorage::Float16);
    CHECK(fs::file_size(half) < fs::file_size(full) * 52 / 100);
    const Detector a = Detector::load(full, Device::Cpu), b = Detector::load(half, Device::Cpu);
    CHECK(b.threshold() == a.threshold());  // thresholds are metadata, kept exactly
    std::vector<Image> probe = checker_images(16, 6);
    for (Image& im : blob_images(16, 7)) probe.push_back(std::move(im));
    // Each part of the score moves by the rounding of the weights, relative to its size; the
    // score itself is in units of the normal scores' spread (the default recipe standardises
    // it, so it lies near 0 for normal images and a relative difference means nothing there).
    double worst = 0, worst_score = 0;
    for (const Image& im : probe) {
        const ScoreResult ra = a.score(im.view()), rb = b.score(im.view());
        REQUIRE(std::isfinite(rb.score));
        for (auto part : {&ScoreResult::reconstruction_error, &ScoreResult::latent_error, &ScoreResult::rotation_error})
            worst = std::max(worst, std::fabs(static_cast<double>(rb.*part) - ra.*part) / std::fabs(static_cast<double>(ra.*part)));
        worst_score = std::max(worst_score, std::fabs(static_cast<double>(rb.score) - ra.score));
    }
    // Half weights round each weight by <= 2^-11 relative; measured here: see docs/model-format.md.
    INFO("largest relative difference of a score part, float16 vs float32: " << worst
         << "; largest score difference (standardised units): " << worst_score);
    CHECK(worst < 1e-2);
    CHECK(worst_score < 2e-2);
    CHECK(worst > 0);  // the file really holds rounded weights
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

namespace {
// Detectors of every scoring shape: one image is one pass of batch 1 through G and of 2
// through D, or with the rotation restoration's 4 views of 4 and 8; precise BN gives other
// running statistics than training's, and with them once flipped the last bit of some scores
// (conv2d.cpp, per_image_min_batch). trained_detector() is the default after its orientation
// check fell back (official networks and score, precise BN).
std::vector<const Detector*> detectors_of_every_shape() {
    static const Detector official = [] {
        DetectorOptions o = tiny_options();
        o.recipe = Recipe::official();
        Detector d(o);
        d.fit(training_set());
        return d;
    }();
    static const Detector precise = [] {
        DetectorOptions o = tiny_options();
        o.recipe = Recipe::official();
        o.recipe.recompute_batch_norm = true;
        Detector d(o);
        d.fit(training_set());
        return d;
    }();
    return {&official, &precise, &rotation_detector(), &trained_detector()};
}

// Single-thread results of one-image calls (a batch of several images agrees with them to
// ~1e-6 only, as detector.hpp says).
std::vector<float> single_thread_scores(const Detector& d, const std::vector<Image>& images) {
    set_cpu_threads(1);
    std::vector<float> expected;
    for (const Image& image : images) expected.push_back(d.score(image.view()).score);
    set_cpu_threads(0);
    return expected;
}
}  // namespace

TEST_CASE("score is safe from many threads at once", "[detector][concurrency]") {
    const std::vector<Image> images = blob_images(8, 31);
    for (const Detector* d : detectors_of_every_shape()) {
        INFO("recipe " << d->options().recipe.name);
        const std::vector<float> expected = single_thread_scores(*d, images);
        std::atomic<int> mismatches{0}, calls{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 8; ++t)
            threads.emplace_back([&, t] {
                for (int k = 0; k < 100; ++k) {
                    const std::size_t i = static_cast<std::size_t>((t + k) % 8);
                    if (d->score(images[i].view()).score != expected[i]) ++mismatches;  // bit-identical
                    ++calls;
                }
            });
        for (std::thread& t : threads) t.join();
        CHECK(calls == 800);
        CHECK(mismatches == 0);
    }
}

// Not under ThreadSanitizer (scripts/run-sanitizers.sh): it runs OpenMP teams of several
// threads on purpose, and libgomp's barriers are invisible to TSan.
TEST_CASE("a Detector's scores do not depend on the thread budget", "[detector][concurrency]") {
    const std::vector<Image> images = blob_images(8, 31);
    for (const Detector* d : detectors_of_every_shape()) {
        INFO("recipe " << d->options().recipe.name);
        const std::vector<float> expected = single_thread_scores(*d, images);
        for (int budget : {2, 8}) {  // this machine's cores, and a bigger machine's
            set_cpu_threads(budget);
            for (std::size_t i = 0; i < images.size(); ++i) CHECK(d->score(images[i].view()).score == expected[i]);
        }
        set_cpu_threads(0);
    }
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
    // statistics and step counts of the end of epoch 1, bit for bit. (Not the Adam moments:
    // nothing reads them after fit returns, and the snapshot leaves them out to save memory.)
    // Resuming with options other than the checkpoint's is refused, so the checkpoint is
    // rewritten as one of a run with that learning rate (the same tensors, its record changed).
    TempDir dir;
    const std::string checkpoint = epoch1_checkpoint(dir);
    DetectorOptions diverging = tiny_options();
    diverging.resume_from = checkpoint;
    diverging.adam.learning_rate = 1e38f;
    {
        const model_file::Reader reader = model_file::Reader::open(checkpoint);
        Context ctx(Device::Cpu);
        SkipGanomaly rewritten(reader.architecture(), diverging.adam, diverging.loss_weights);
        rewritten.materialize(ctx);
        rewritten.allocate_training_buffers(ctx);
        reader.load_into(rewritten);
        nlohmann::json metadata = {{"detector", reader.metadata().at("detector")},
                                   {"training_data", reader.metadata().at("training_data")}};
        metadata["detector"]["training"]["learning_rate"] = diverging.adam.learning_rate;
        const model_file::TrainingState state = *reader.training_state();
        model_file::save(checkpoint, rewritten, metadata, &state);
    }
    Detector d(diverging);
    const std::string message = sga::testing::message_of<NumericalError>([&] { d.fit(training_set()); });
    CHECK_THAT(message, Catch::Contains("epoch 2") && Catch::Contains("returned to the end of epoch 1"));
    CHECK_FALSE(d.is_trained());

    Context ctx(Device::Cpu);
    // d.options(): the architecture as the Detector built it (with the recipe's rotation head).
    SkipGanomaly epoch1(d.options().architecture, diverging.adam, diverging.loss_weights);
    epoch1.materialize(ctx);
    model_file::Reader::open(checkpoint).load_into(epoch1);
    auto same = [](const ParameterBlock& a, const ParameterBlock& b) {
        return Tensor::host_values(a.values()) == Tensor::host_values(b.values());
    };
    CHECK(same(d.model().generator.parameters, epoch1.generator.parameters));
    CHECK(same(d.model().generator.statistics, epoch1.generator.statistics));
    CHECK(same(d.model().discriminator.parameters, epoch1.discriminator.parameters));
    CHECK(same(d.model().discriminator.statistics, epoch1.discriminator.statistics));
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

// ---- embedding: moved-from detectors, error messages and result extras ---------------------

TEST_CASE("a moved-from Detector throws InvalidArgument from every method, and can be assigned again", "[detector][errors]") {
    Detector source(tiny_options());
    Detector moved(std::move(source));
    const Detector& empty = source;  // NOLINT(bugprone-use-after-move): the point of the test
    const Image& image = training_set().front();
    const std::vector<ImageView> views{image.view()};
    const std::vector<float> floats(32 * 32, 0.0f);
    const auto refused = [](auto&& call, const char* name) {
        const std::string message = sga::testing::message_of<InvalidArgument>(call);
        CHECK_THAT(message, Catch::Contains(name) && Catch::Contains("moved from"));
    };
    CHECK_FALSE(empty.is_trained());
    refused([&] { source.fit(training_set()); }, "fit");
    refused([&] { source.fit(std::span<const ImageView>(views)); }, "fit");
    refused([&] { (void)empty.score(image.view()); }, "score");
    refused([&] { (void)empty.score(std::span<const ImageView>(views)); }, "score");
    refused([&] { (void)empty.score(training_set()); }, "score");
    refused([&] { (void)empty.score(FloatImageView{floats.data(), 32, 32, 1}); }, "score");
    refused([&] { (void)source.calibrate(views, views); }, "calibrate");
    refused([&] { (void)source.calibrate(views); }, "calibrate");
    refused([&] { (void)empty.threshold(); }, "threshold");
    refused([&] { source.set_threshold(1.0f); }, "set_threshold");
    refused([&] { (void)empty.options(); }, "options");
    refused([&] { (void)empty.validation_statistics(); }, "validation_statistics");
    refused([&] { (void)empty.pixel_statistics(); }, "pixel_statistics");
    refused([&] { (void)empty.device(); }, "device");
    refused([&] { (void)empty.model(); }, "model");
    TempDir dir;
    refused([&] { empty.save((dir.path / "m.safetensors").string()); }, "save");
    CHECK_FALSE(fs::exists(dir.path / "m.safetensors"));
    // Moving from an empty Detector gives another empty one; assigning brings it back.
    Detector also_empty(std::move(source));
    CHECK_FALSE(also_empty.is_trained());
    CHECK_THROWS_AS(also_empty.threshold(), InvalidArgument);
    source = std::move(moved);
    CHECK(source.options().batch_size == 8);
    source.set_threshold(2.5f);
    CHECK(source.threshold() == 2.5f);
    source = std::move(source);  // self-move leaves a usable or empty object, never a crash
    (void)source.is_trained();
}

TEST_CASE("validation statistics list each quantile level once", "[detector]") {
    const ScoreStatistics& s = trained_detector().validation_statistics();
    CHECK(s.quantile_levels == std::vector<double>{0.5, 0.9, 0.95, 0.99});  // 0.99f is 0.99, not a fifth level
    CHECK(s.quantile_values.size() == s.quantile_levels.size());
    CHECK(std::is_sorted(s.quantile_values.begin(), s.quantile_values.end()));
    DetectorOptions o = tiny_options();
    o.threshold_quantile = 0.995f;
    Detector d(o);
    d.fit(training_set());
    CHECK(d.validation_statistics().quantile_levels == std::vector<double>{0.5, 0.9, 0.95, 0.99, 0.995});
}

TEST_CASE("errors about the caller's input carry no source path or line", "[detector][errors]") {
    std::vector<std::string> messages;
    DetectorOptions o = tiny_options();
    o.architecture.image_size = 48;
    messages.push_back(sga::testing::message_of<InvalidArgument>([&] { Detector d(o); }));
    o = tiny_options();
    o.validation_fraction = 2;
    messages.push_back(sga::testing::message_of<InvalidArgument>([&] { Detector d(o); }));
    const std::vector<float> floats(3 * 20 * 24, 0.0f);
    messages.push_back(sga::testing::message_of<InvalidArgument>(
        [&] { (void)trained_detector().score(FloatImageView{floats.data(), 24, 20, 2}); }));
    messages.push_back(sga::testing::message_of<InvalidArgument>(
        [&] { (void)trained_detector().score(ImageView{nullptr, 28, 28, 28, PixelFormat::Gray}); }));
    messages.push_back(sga::testing::message_of<InvalidArgument>([] { (void)roc_auc({}, {}); }));
    for (const std::string& m : messages) {
        INFO(m);
        CHECK_FALSE(m.empty());
        CHECK(m.find(SKIPGANOMALY_SOURCE_DIR) == std::string::npos);
        CHECK(m.find(".cpp") == std::string::npos);
        CHECK(m.find(".hpp") == std::string::npos);
        CHECK(m.find("check '") == std::string::npos);
    }
    // Internal failures may name a file, relative to the repository.
    STATIC_REQUIRE(std::string_view(sga::detail::repository_relative_path("/home/ci/skipganomaly/src/cuda/runtime.cpp")) ==
                   "src/cuda/runtime.cpp");
    CHECK(std::string_view(sga::detail::repository_relative_path(SKIPGANOMALY_SOURCE_DIR "/include/skipganomaly/tensor.hpp")) ==
          "include/skipganomaly/tensor.hpp");
    CHECK(std::string_view(sga::detail::repository_relative_path("/x/src/build/src/detector.cpp")) == "src/detector.cpp");
    CHECK(std::string_view(sga::detail::repository_relative_path("detector.cpp")) == "detector.cpp");
}

TEST_CASE("a float view has named width and height: non-square input is not transposed", "[detector]") {
    const Detector& d = trained_detector();
    // A 24 wide, 20 high grey picture: a bright square in the left half.
    Image gray{24, 20, 1, std::vector<std::uint8_t>(24 * 20, 10)};
    std::mt19937 rng(13);
    for (std::uint8_t& p : gray.pixels) p = static_cast<std::uint8_t>(rng() % 256);
    std::vector<float> chw(gray.pixels.size());
    for (std::size_t i = 0; i < chw.size(); ++i) chw[i] = static_cast<float>(gray.pixels[i]) / 127.5f - 1.0f;
    ScoreOptions with_map;
    with_map.anomaly_map = true;
    const ScoreResult from_floats = d.score(FloatImageView{chw.data(), 24, 20, 1}, with_map);
    const ScoreResult from_bytes = d.score(gray.view(), with_map);
    CHECK(from_floats.map_width == 24);
    CHECK(from_floats.map_height == 20);
    CHECK(from_floats.anomaly_map.size() == 24u * 20u);
    // Resizing float input is not rounded to 8 bits, so scores agree closely, not exactly.
    CHECK(from_floats.score == Approx(from_bytes.score).epsilon(0.05));
    // The same buffer read as 20 wide and 24 high is another picture, with another score.
    const ScoreResult transposed = d.score(FloatImageView{chw.data(), 20, 24, 1}, with_map);
    CHECK(transposed.map_width == 20);
    CHECK(std::abs(transposed.score - from_bytes.score) > std::abs(from_floats.score - from_bytes.score));
}

TEST_CASE("opt-in extras: reconstruction, normalised anomaly map and binary mask", "[detector]") {
    const Detector& d = trained_detector();
    const PixelStatistics& p = d.pixel_statistics();
    REQUIRE(p.count == 8u * 32u * 32u);  // every pixel of the 8 held-out images, at network resolution
    CHECK(p.threshold_quantile == 0.999);
    CHECK(p.min <= p.threshold);
    CHECK(p.threshold <= p.max);

    const Image anomaly = checker_images(1, 31).front();
    const ScoreResult plain = d.score(anomaly.view());
    CHECK(plain.reconstruction.empty());
    CHECK(plain.anomaly_mask.empty());
    ScoreOptions extras;
    extras.reconstruction = true;
    extras.anomaly_mask = true;
    const ScoreResult r = d.score(anomaly.view(), extras);
    CHECK(r.score == plain.score);
    // The reconstruction is G's output for the upright input at network resolution. The default
    // (robust_rotation) recipe's reconstruction part is the mean over four rotated views, of which the
    // upright one is the first: so it is positive and finite here, and, with the official
    // recipe's single view, its squared error is exactly the score's part.
    REQUIRE(r.reconstruction_size == 32);
    REQUIRE(r.reconstruction.size() == 32u * 32u);
    std::vector<float> x(32 * 32);
    preprocess(anomaly.view(), 32, 1, x.data());
    auto squared_error = [&](const std::vector<float>& reconstruction) {
        double squared = 0;
        for (std::size_t i = 0; i < x.size(); ++i) squared += (x[i] - reconstruction[i]) * (x[i] - reconstruction[i]);
        return squared / 1024.0;
    };
    CHECK(std::isfinite(squared_error(r.reconstruction)));
    CHECK(squared_error(r.reconstruction) > 0.0);
    {
        DetectorOptions o = tiny_options();
        o.recipe = Recipe::official();
        Detector official(o);
        official.fit(training_set());
        const ScoreResult single = official.score(anomaly.view(), extras);
        CHECK(squared_error(single.reconstruction) == Approx(single.reconstruction_error).epsilon(1e-5));
        CHECK(single.score == Approx(0.9f * single.reconstruction_error + 0.1f * single.latent_error).epsilon(1e-6));
        CHECK(single.rotation_error == 0.0f);
    }
    // The mask is the map at the pixel threshold; the normalised map is 0.5 there.
    REQUIRE(r.anomaly_map.size() == 28u * 28u);
    REQUIRE(r.anomaly_mask.size() == r.anomaly_map.size());
    REQUIRE(r.normalized_anomaly_map.size() == r.anomaly_map.size());
    std::size_t flagged = 0;
    for (std::size_t i = 0; i < r.anomaly_map.size(); ++i) {
        CHECK(r.anomaly_mask[i] == (r.anomaly_map[i] >= p.threshold ? 1 : 0));
        CHECK((r.normalized_anomaly_map[i] >= 0.5f) == (r.anomaly_mask[i] == 1));
        CHECK(r.normalized_anomaly_map[i] >= 0.0f);
        CHECK(r.normalized_anomaly_map[i] <= 1.0f);
        flagged += r.anomaly_mask[i];
    }
    // A checkerboard is unlike every training blob: more of its pixels are flagged than of
    // fresh normal images (about 1 in 1000 by construction), and more than 1 in 200.
    std::size_t normal_flagged = 0;
    const std::vector<Image> fresh = blob_images(10, 32);
    for (const ScoreResult& n : d.score(fresh, extras))
        for (std::uint8_t m : n.anomaly_mask) normal_flagged += m;
    INFO("flagged " << flagged << " of " << r.anomaly_mask.size() << "; normal images: " << normal_flagged << " in 10");
    CHECK(flagged * 10 > normal_flagged * 3);
    CHECK(flagged > r.anomaly_mask.size() / 200);

    // Saved and loaded with the model.
    TempDir dir;
    const std::string path = (dir.path / "model.safetensors").string();
    d.save(path);
    const Detector loaded = Detector::load(path, Device::Cpu);
    CHECK(loaded.pixel_statistics().threshold == p.threshold);
    CHECK(loaded.pixel_statistics().count == p.count);
    CHECK(loaded.score(anomaly.view(), extras).anomaly_mask == r.anomaly_mask);

    // A file without pixel statistics (older, or converted) refuses a mask until calibrated.
    nlohmann::json metadata = model_file::Reader::open(path).metadata();
    metadata["detector"].erase("pixel_statistics");
    const std::string old_path = (dir.path / "old.safetensors").string();
    model_file::save(old_path, d.model(), metadata, nullptr);
    Detector old = Detector::load(old_path, Device::Cpu);
    CHECK(old.pixel_statistics().count == 0);
    CHECK_THROWS_WITH(old.score(anomaly.view(), extras), Catch::Contains("calibrate"));
    const std::vector<Image> normal = blob_images(20, 77);
    std::vector<ImageView> normal_views;
    for (const Image& im : normal) normal_views.push_back(im.view());
    const CalibrationResult c = old.calibrate(normal_views);
    CHECK(c.rule == "validation_quantile");
    CHECK(c.normal_images == 20);
    CHECK(c.f1 == -1);
    CHECK(old.pixel_statistics().count == 20u * 32u * 32u);
    CHECK(old.validation_statistics().count == 20);
    std::vector<float> normal_scores;
    for (const ScoreResult& s : old.score(normal)) normal_scores.push_back(s.score);
    CHECK(old.threshold() == static_cast<float>(threshold_from_normal_scores(normal_scores, 0.99)));
    CHECK(c.threshold == old.threshold());
    CHECK_NOTHROW(old.score(anomaly.view(), extras));

    // calibrate(normal, {}): no anomalous images, the normal-only rule; a quantile as a number.
    Detector braced = Detector::load(old_path, Device::Cpu);
    const CalibrationResult b = braced.calibrate(normal_views, {});
    CHECK(b.rule == "validation_quantile");
    CHECK(braced.threshold() == old.threshold());
    const CalibrationResult q = braced.calibrate(normal_views, 0.5);
    CHECK(q.threshold == static_cast<float>(threshold_from_normal_scores(normal_scores, 0.5)));
    CHECK_THROWS_AS(braced.calibrate(normal_views, 0.0), InvalidArgument);
}

TEST_CASE("the scoring mode is a per-call choice that changes nothing in the Detector", "[detector]") {
    const Detector& d = trained_detector();
    std::vector<Image> images = blob_images(5, 41);
    const std::vector<Image> anomalies = checker_images(3, 42);
    images.insert(images.end(), anomalies.begin(), anomalies.end());
    const std::vector<float> running = scores_of(d, images);
    ScoreOptions batch;
    batch.scoring_mode = ScoringMode::OfficialBatchStatistics;
    std::vector<float> with_batch_statistics;
    for (const ScoreResult& r : d.score(images, batch)) with_batch_statistics.push_back(r.score);
    CHECK(with_batch_statistics != running);
    // Batch statistics make a score depend on its batch; running statistics do not.
    std::vector<Image> fewer(images.begin(), images.begin() + 4);
    CHECK(d.score(fewer, batch).front().score != with_batch_statistics.front());
    ScoreOptions explicit_running;
    explicit_running.scoring_mode = ScoringMode::RunningStatistics;
    CHECK(d.score(images, explicit_running).front().score == running.front());
    CHECK(scores_of(d, images) == running);
    CHECK(d.options().scoring_mode == ScoringMode::RunningStatistics);
}

TEST_CASE("set_cpu_threads is process-wide and set_cpu_threads(0) restores the default", "[detector][concurrency]") {
    const int initial = cpu_threads();
    REQUIRE(initial >= 1);
    set_cpu_threads(3);
    CHECK(cpu_threads() == 3);
    int seen_elsewhere = -1, leased_elsewhere = -1;
    std::thread other([&] {
        seen_elsewhere = cpu_threads();
        CpuThreadLease lease;
        leased_elsewhere = lease.threads();
    });
    other.join();
    CHECK(seen_elsewhere == 3);
    CHECK(leased_elsewhere == 3);  // alone: the whole budget
    set_cpu_threads(0);
    CHECK(cpu_threads() == initial);
    CHECK_THROWS_AS(set_cpu_threads(-1), InvalidArgument);
    CHECK(cpu_threads() == initial);
}

TEST_CASE("concurrent callers share the thread budget and never exceed it", "[detector][concurrency]") {
    set_cpu_threads(4);
    {
        CpuThreadLease first;
        CHECK(first.threads() == 4);
        {
            CpuThreadLease nested;  // same thread: takes nothing, keeps the team size
            CHECK(nested.threads() == 4);
        }
        int second_threads = -1;
        std::thread other([&] {
            CpuThreadLease second;  // nothing free: the caller's own thread only
            second_threads = second.threads();
        });
        other.join();
        CHECK(second_threads == 1);
    }
    set_cpu_threads(3);
    std::vector<int> taken(3, -1);
    {
        CpuThreadLease a;
        std::thread t([&] {
            CpuThreadLease b;  // 3 budget, 3 taken by a
            taken[0] = b.threads();
        });
        t.join();
        taken[1] = a.threads();
    }
    std::thread after([&] {
        CpuThreadLease c;  // all returned
        taken[2] = c.threads();
    });
    after.join();
    CHECK(taken == std::vector<int>{1, 3, 3});
    set_cpu_threads(0);
}

// (No semicolon in a test name: CTest's test list would split it.)
TEST_CASE("at most the budget's callers are admitted at once and the others wait for a place", "[detector][concurrency]") {
    set_cpu_threads(2);
    REQUIRE(cpu_callers_admitted() == 0);
    {
        CpuAdmission first;
        {
            CpuAdmission nested;  // same thread: takes nothing
            CHECK(cpu_callers_admitted() == 1);
            CpuThreadLease alone;  // one caller: the whole budget
            CHECK(alone.threads() == 2);
        }
        // Assertions stay on this thread (Catch is not thread-safe): the others record.
        std::atomic<bool> second_in{false}, release_second{false}, third_admitted{false};
        int second_threads = -1;
        std::thread second([&] {
            CpuAdmission admitted;  // the second place
            CpuThreadLease lease;   // two callers of a 2-thread budget: one thread each
            second_threads = lease.threads();
            second_in = true;
            while (!release_second) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        });
        while (!second_in) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::thread third([&] {
            CpuAdmission waits;  // no place left until `first` or `second` goes
            third_admitted = true;
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        CHECK_FALSE(third_admitted.load());
        CHECK(cpu_callers_admitted() == 2);
        release_second = true;
        second.join();
        third.join();
        CHECK(second_threads == 1);
        CHECK(third_admitted.load());
        CpuAdmission unwanted(false);  // a CUDA context's: takes no place
        CHECK(cpu_callers_admitted() == 1);
    }
    CHECK(cpu_callers_admitted() == 0);
    // A larger budget admits a waiting caller at once.
    set_cpu_threads(1);
    {
        CpuAdmission only;
        std::atomic<bool> admitted{false};
        std::thread waiting([&] {
            CpuAdmission a;
            admitted = true;
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        CHECK_FALSE(admitted.load());
        set_cpu_threads(2);
        waiting.join();
        CHECK(admitted.load());
    }
    set_cpu_threads(0);
}

using sga::testing::random_colour_images;

// A full-width model (ngf = ndf = 64) with random weights, so that the convolutions take the
// threaded GEMM paths: scores from 1 thread, from 2 and 3, and from 4 concurrent callers
// must be the same bits; with the weights as they are and packed (as Detector scores).
TEST_CASE("scores are bit-identical for any thread count and under concurrent callers", "[detector][concurrency]") {
    Architecture arch;
    arch.image_size = 32;
    arch.channels = 3;
    SkipGanomaly model(arch, AdamHyperparameters{}, LossWeights{});
    Context setup(Device::Cpu);
    model.materialize(setup);
    RandomStream random(77);
    model.initialize(setup, random);
    const Tensor images = random_colour_images(16, 78);

    auto score_all = [&] {
        Context ctx(Device::Cpu);
        Tape tape(ctx);
        std::vector<float> out;
        for (const std::int64_t n : {std::int64_t{16}, std::int64_t{1}}) {
            // With the error maps: a last-bit difference in one pixel of a reconstruction can
            // round away in its mean squared error.
            const BatchScores parts = model.score(ctx, tape, images.view().slice_batch(0, n), BatchNormMode::RunningStatistics, true);
            for (std::size_t i = 0; i < parts.reconstruction.size(); ++i)
                out.push_back(anomaly_score(parts.reconstruction[i], parts.latent[i]));
            out.insert(out.end(), parts.error_maps.begin(), parts.error_maps.end());
        }
        return out;
    };
    for (const bool packed : {false, true}) {
        INFO("packed weights: " << packed);
        if (packed) model.pack_for_inference(setup);
        set_cpu_threads(1);
        const std::vector<float> single = score_all();
        REQUIRE(single.size() == 17 * (1 + 32 * 32));
        for (float v : single) REQUIRE(std::isfinite(v));
        for (int threads : {2, 3}) {
            set_cpu_threads(threads);
            CHECK(score_all() == single);
        }
        set_cpu_threads(0);
        CHECK(score_all() == single);
        std::vector<std::vector<float>> concurrent(4);
        std::vector<std::thread> callers;
        for (std::size_t t = 0; t < concurrent.size(); ++t)
            callers.emplace_back([&, t] {
                for (int k = 0; k < 3; ++k) {
                    const std::vector<float> s = score_all();
                    if (k == 0 || s != single) concurrent[t] = s;
                }
            });
        for (std::thread& t : callers) t.join();
        for (const std::vector<float>& s : concurrent) CHECK(s == single);
    }
}

// Packed weights (Network::packed: Detector packs them at the end of fit and after load)
// compute the layers they serve in another order of summation: every score part must agree
// with the unpacked model's to float rounding, at batch 1 (each image's four rotation views:
// the deep layers prepared) and 16 (only the deepest), rotation head included; the prepared
// kernels must be what computed them; and whatever changes the weights must discard the
// packing.
TEST_CASE("packed weights score as the weights they were packed from", "[detector][packed]") {
    const Recipe recipe = Recipe::robust_rotation();
    Architecture arch;
    arch.image_size = 32;
    arch.channels = 3;
    arch.rotation_head = true;
    ModelTechniques techniques;
    techniques.restoration = recipe.restoration;
    techniques.rotation_prediction = recipe.rotation_prediction;
    SkipGanomaly model(arch, AdamHyperparameters{}, LossWeights{}, techniques);
    Context ctx(Device::Cpu);
    model.materialize(ctx);
    RandomStream random(91);
    model.initialize(ctx, random);
    const Tensor images = random_colour_images(16, 92);
    auto parts_of = [&](std::int64_t n) {
        Tape tape(ctx);
        return model.score(ctx, tape, images.view().slice_batch(0, n), BatchNormMode::RunningStatistics, false);
    };
    auto require_near = [](const std::vector<float>& actual, const std::vector<float>& expected, const char* part) {
        REQUIRE(actual.size() == expected.size());
        REQUIRE_FALSE(expected.empty());
        double worst = 0;
        for (std::size_t i = 0; i < expected.size(); ++i) {
            REQUIRE(std::isfinite(actual[i]));
            worst = std::max(worst, std::abs(static_cast<double>(actual[i]) - expected[i]) / std::abs(expected[i]));
        }
        INFO(part << ": largest relative difference " << worst);
        CHECK(worst < 1e-5);
    };
    REQUIRE_FALSE(model.generator.has_packed_weights());
    const BatchScores plain_one = parts_of(1), plain_batch = parts_of(16);
    model.pack_for_inference(ctx);
    REQUIRE(model.generator.has_packed_weights());
    REQUIRE(model.discriminator.has_packed_weights());
    const BatchScores packed_one = parts_of(1), packed_batch = parts_of(16);
    for (const auto& [packed, plain] : {std::pair{&packed_one, &plain_one}, std::pair{&packed_batch, &plain_batch}}) {
        require_near(packed->reconstruction, plain->reconstruction, "reconstruction");
        require_near(packed->latent, plain->latent, "latent");
        require_near(packed->rotation, plain->rotation, "rotation");
    }
    // The prepared kernels computed these scores: zeroing the compact weights that the packing
    // keeps (the innermost 2x2 -> 1x1 convolution's active taps, and its mirror's) changes
    // them; packing again restores them, bit for bit.
    int compact = 0;
    for (int i = 0; i < static_cast<int>(model.generator.parameters.entries().size()); ++i)
        if (const PackedConvolution* p = model.generator.packed(i); p && p->packed.numel() > 0) {
            std::vector<float> zeros(static_cast<std::size_t>(p->packed.numel()), 0.0f);
            copy_bytes(p->packed.data(), Device::Cpu, zeros.data(), Device::Cpu, zeros.size() * sizeof(float));
            ++compact;
        }
    CHECK(compact == 2);
    CHECK(parts_of(1).reconstruction != packed_one.reconstruction);
    model.pack_for_inference(ctx);
    CHECK(parts_of(1).reconstruction == packed_one.reconstruction);

    model.initialize(ctx, random);
    CHECK_FALSE(model.generator.has_packed_weights());
    CHECK_FALSE(model.discriminator.has_packed_weights());
    SkipGanomaly official(Architecture{}, AdamHyperparameters{}, LossWeights{});
    official.materialize(ctx);
    official.initialize(ctx, random);
    official.pack_for_inference(ctx);
    Tape tape(ctx);
    official.train_step(ctx, tape, images.view(), random);
    CHECK_FALSE(official.generator.has_packed_weights());
    CHECK_FALSE(official.discriminator.has_packed_weights());
}
