// The training recipes' pieces (recipe.hpp, restoration.hpp, synthetic_anomalies.hpp,
// rotation_prediction.hpp, orientation_check.hpp): skip gating, the generator bottleneck,
// restoration corruptions, CutPaste anomalies, recomputed batch-norm statistics, the stopping
// rule, rotation prediction, the orientation check, and the recipe's round trip through a file.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <random>
#include <set>

#include "model_file.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/synthetic_anomalies.hpp"
#include "test_support.hpp"

namespace {

using namespace sga;
namespace fs = std::filesystem;

std::vector<float> random_samples(std::int64_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = u(rng);
    return v;
}

Architecture tiny_architecture() {
    Architecture a;
    a.image_size = 32;
    a.channels = 1;
    a.generator_features = 4;
    a.discriminator_features = 4;
    a.latent_size = 8;
    return a;
}

struct TinyModel {
    explicit TinyModel(Architecture arch = tiny_architecture(), const ModelTechniques& techniques = {})
        : ctx(Device::Cpu), tape(ctx), model(arch, AdamHyperparameters{2e-4f, 0.5f, 0.999f, 1e-8f}, LossWeights{}, techniques) {
        model.materialize(ctx);
        RandomStream random(11);
        model.initialize(ctx, random);
    }
    Context ctx;
    Tape tape;
    SkipGanomaly model;
};

Tensor batch_tensor(std::int64_t n, std::uint64_t seed, std::int64_t channels = 1) {
    Tensor t({n, channels, 32, 32}, Device::Cpu);
    const std::vector<float> v = random_samples(t.numel(), seed);
    std::copy(v.begin(), v.end(), t.data());
    return t;
}

std::vector<float> generator_output(TinyModel& m, const Tensor& x, SkipMask closed) {
    m.tape.clear();
    m.ctx.arena().reset();
    NoGradGuard no_grad(m.tape);
    return Tensor::host_values(m.model.generator.forward(m.tape, m.tape.constant(x.view()), BatchNormMode::BatchStatistics, closed).value());
}

}  // namespace

TEST_CASE("skip gating: masks, draws and refusals", "[recipe]") {
    const Architecture arch = tiny_architecture();  // 32 px: 4 skips
    SkipGating none;
    RandomStream stream(3);
    CHECK(none.scoring_closed() == 0u);
    CHECK(none.draw_training_closed(stream) == 0u);
    CHECK(stream.offset() == 0u);  // the official recipe draws nothing

    SkipGating two{2, 0.0f};
    CHECK(two.scoring_closed() == 0b11u);
    CHECK(two.draw_training_closed(stream) == 0b11u);  // never open in training

    SkipGating half{4, 0.5f};
    int open = 0;
    for (int i = 0; i < 400; ++i) {
        const SkipMask closed = half.draw_training_closed(stream);
        CHECK((closed & ~0b1111u) == 0u);
        open += 4 - std::popcount(closed);
    }
    CHECK(open > 700);  // 1600 draws at p = 0.5: 800 +- 20 (sd)
    CHECK(open < 900);

    CHECK_THROWS_AS((SkipGating{5, 0.0f}.validate(arch)), InvalidArgument);
    CHECK_THROWS_AS((SkipGating{1, 1.5f}.validate(arch)), InvalidArgument);
    CHECK_NOTHROW((SkipGating{4, 0.0f}.validate(arch)));
}

TEST_CASE("a closed skip changes the reconstruction, and none closed is the official generator", "[recipe]") {
    TinyModel m;
    const Tensor x = batch_tensor(4, 21);
    const std::vector<float> official = generator_output(m, x, 0);
    CHECK(generator_output(m, x, 0) == official);
    for (SkipMask closed : {0b0001u, 0b1000u, 0b1111u}) {
        const std::vector<float> gated = generator_output(m, x, closed);
        float largest = 0;
        for (std::size_t i = 0; i < gated.size(); ++i) largest = std::max(largest, std::abs(gated[i] - official[i]));
        CHECK(largest > 1e-4f);
    }
}

TEST_CASE("with every skip closed, the reconstruction depends on the input only through the bottleneck", "[recipe]") {
    // A one-channel bottleneck carries one number per image: inputs that the encoder maps to
    // the same number must give the same reconstruction. We check the weaker, exact property
    // that the bottleneck's parameters take part: zeroing the squeeze weights makes every
    // image's reconstruction the same.
    Architecture arch = tiny_architecture();
    arch.bottleneck_channels = 1;
    TinyModel m(arch);
    int squeeze = -1;
    for (std::size_t i = 0; i < m.model.generator.parameters.entries().size(); ++i)
        if (m.model.generator.parameters.entries()[i].name.ends_with("bottleneck.0.weight")) squeeze = static_cast<int>(i);
    REQUIRE(squeeze >= 0);
    TensorView w = m.model.generator.parameters.value(squeeze);
    std::fill(w.data(), w.data() + w.numel(), 0.0f);
    const Tensor x = batch_tensor(3, 5);
    m.tape.clear();
    m.ctx.arena().reset();
    NoGradGuard no_grad(m.tape);
    const std::vector<float> out = Tensor::host_values(
        m.model.generator.forward(m.tape, m.tape.constant(x.view()), BatchNormMode::RunningStatistics, 0b1111u).value());
    const std::size_t per = 32 * 32;
    for (std::size_t i = 1; i < 3; ++i)
        for (std::size_t p = 0; p < per; ++p) REQUIRE(out[i * per + p] == out[p]);
}

TEST_CASE("rotations by quarter turns compose and return to the start", "[recipe][restoration]") {
    const std::vector<float> image = random_samples(2 * 3 * 8 * 8, 4);
    std::vector<float> a(image.size()), b(image.size());
    rotate_quarter_turns(image.data(), a.data(), 2, 3, 8, 1);
    CHECK(a != image);
    rotate_quarter_turns(a.data(), b.data(), 2, 3, 8, 3);
    CHECK(b == image);
    rotate_quarter_turns(image.data(), a.data(), 2, 3, 8, 2);
    rotate_quarter_turns(a.data(), b.data(), 2, 3, 8, 2);
    CHECK(b == image);
    // One quarter turn counter-clockwise of [[1, 2], [3, 4]] is [[2, 4], [1, 3]].
    const float small[4] = {1, 2, 3, 4};
    float turned[4];
    rotate_quarter_turns(small, turned, 1, 1, 2, 1);
    CHECK(std::vector<float>(turned, turned + 4) == std::vector<float>{2, 4, 1, 3});
}

TEST_CASE("puzzle restoration moves whole tiles and keeps every one", "[recipe][restoration]") {
    Restoration puzzle{Corruption::Puzzle, false, 2};
    const std::int64_t n = 16, size = 8, tile = 4;
    const std::vector<float> clean = random_samples(n * size * size, 9);
    std::vector<float> corrupted(clean.size());
    RandomStream random(1);
    puzzle.corrupt(clean.data(), corrupted.data(), n, 1, size, random);
    auto tile_of = [&](const std::vector<float>& v, std::int64_t i, std::int64_t t) {
        std::vector<float> out;
        for (std::int64_t r = 0; r < tile; ++r)
            for (std::int64_t c = 0; c < tile; ++c)
                out.push_back(v[static_cast<std::size_t>(i * size * size + (t / 2 * tile + r) * size + t % 2 * tile + c)]);
        return out;
    };
    int moved = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        std::multiset<std::vector<float>> before, after;
        for (int t = 0; t < 4; ++t) {
            before.insert(tile_of(clean, i, t));
            after.insert(tile_of(corrupted, i, t));
        }
        CHECK(before == after);
        moved += tile_of(clean, i, 0) != tile_of(corrupted, i, 0);
    }
    CHECK(moved > 0);
    CHECK_THROWS_AS((Restoration{Corruption::Puzzle, false, 3}.validate(32)), InvalidArgument);

    Restoration none;
    RandomStream untouched(1);
    none.corrupt(clean.data(), corrupted.data(), n, 1, size, untouched);
    CHECK(corrupted == clean);
    CHECK(untouched.offset() == 0u);
}

TEST_CASE("CutPaste anomalies change one rectangle, copied from another sample", "[recipe][synthetic]") {
    const std::int64_t n = 12, size = 32;
    const std::vector<float> samples = random_samples(n * size * size, 17);
    RandomStream random(2);
    const std::vector<float> anomalies = make_cutpaste_anomalies(samples, n, 1, size, random);
    REQUIRE(anomalies.size() == samples.size());
    for (std::int64_t i = 0; i < n; ++i) {
        std::int64_t x0 = size, y0 = size, x1 = -1, y1 = -1;
        for (std::int64_t y = 0; y < size; ++y)
            for (std::int64_t x = 0; x < size; ++x) {
                const std::size_t at = static_cast<std::size_t>(i * size * size + y * size + x);
                if (anomalies[at] != samples[at]) {
                    x0 = std::min(x0, x), y0 = std::min(y0, y), x1 = std::max(x1, x), y1 = std::max(y1, y);
                }
            }
        REQUIRE(x1 >= 0);  // random samples: a pasted patch always differs
        CHECK(x1 - x0 + 1 <= size / 2);
        CHECK(y1 - y0 + 1 <= size / 2);
    }
    RandomStream again(2);
    CHECK(make_cutpaste_anomalies(samples, n, 1, size, again) == anomalies);
    RandomStream bad(2);
    CHECK_THROWS_AS(make_cutpaste_anomalies(samples, n + 1, 1, size, bad), InvalidArgument);
}

TEST_CASE("recomputed batch-norm statistics are the exact mean over the batches", "[recipe][batchnorm]") {
    const Tensor a = batch_tensor(8, 31), b = batch_tensor(8, 32);
    auto statistics_after = [&](std::vector<const Tensor*> batches) {
        ModelTechniques techniques;
        techniques.scoring_closed_skips = 0b0011u;
        TinyModel m(tiny_architecture(), techniques);
        m.model.recompute_batch_norm_statistics(m.ctx, m.tape, static_cast<int>(batches.size()),
                                                [&](int k) { return batches[static_cast<std::size_t>(k)]->view(); });
        std::vector<float> g = Tensor::host_values(m.model.generator.statistics.values());
        const std::vector<float> d = Tensor::host_values(m.model.discriminator.statistics.values());
        g.insert(g.end(), d.begin(), d.end());
        return g;
    };
    const std::vector<float> both = statistics_after({&a, &b}), only_a = statistics_after({&a}), only_b = statistics_after({&b});
    REQUIRE(both.size() == only_a.size());
    double largest = 0;
    for (std::size_t i = 0; i < both.size(); ++i) {
        const double mean = 0.5 * (double{only_a[i]} + double{only_b[i]});
        largest = std::max(largest, std::abs(both[i] - mean) / (1.0 + std::abs(mean)));
    }
    CHECK(largest < 1e-5);
    CHECK(only_a != only_b);
}

TEST_CASE("the stopping rule keeps the epoch chosen on normal images, and a recipe round-trips through a file", "[recipe][detector]") {
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::robust();  // and every other piece, so the file carries them all
    o.recipe.stopping = StoppingRule::BestSyntheticAnomalies;
    o.recipe.skip_gating = {1, 0.5f};
    o.architecture.bottleneck_channels = 3;
    o.epochs = 3;
    std::vector<Image> images;
    for (unsigned i = 0; i < 40; ++i) images.push_back(sga::testing::random_image(28, 28, 1, 100 + i));
    Detector d(o);
    const FitReport report = d.fit(images);
    REQUIRE(report.epochs.size() == 3);
    CHECK(report.kept_epoch >= 1);
    CHECK(report.kept_epoch <= 3);
    double best = -1;
    int best_epoch = 0;
    for (const EpochSummary& e : report.epochs) {
        CHECK(e.synthetic_auroc >= 0.0);
        CHECK(e.synthetic_auroc <= 1.0);
        if (e.synthetic_auroc > best) best = e.synthetic_auroc, best_epoch = e.epoch;
    }
    CHECK(report.kept_epoch == best_epoch);

    const fs::path path = fs::temp_directory_path() / "sga_test_recipe.safetensors";
    d.save(path.string());
    const Detector loaded = Detector::load(path.string(), Device::Cpu);
    fs::remove(path);
    const Recipe& r = loaded.options().recipe;
    CHECK(r.name == "robust");
    CHECK(r.skip_gating.gated_skips == o.recipe.skip_gating.gated_skips);
    CHECK(r.skip_gating.training_open_probability == o.recipe.skip_gating.training_open_probability);
    CHECK(r.restoration.corruption == o.recipe.restoration.corruption);
    CHECK(r.restoration.gray == o.recipe.restoration.gray);
    CHECK(r.recompute_batch_norm == o.recipe.recompute_batch_norm);
    CHECK(r.stopping == o.recipe.stopping);
    CHECK(loaded.options().architecture.bottleneck_channels == d.options().architecture.bottleneck_channels);
    for (unsigned i = 0; i < 4; ++i) {
        const Image probe = sga::testing::random_image(28, 28, 1, 900 + i);
        CHECK(loaded.score(probe.view()).score == d.score(probe.view()).score);
    }
}

TEST_CASE("a stopping rule without held-out images is refused, and unknown recipes are named", "[recipe][errors]") {
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::robust();
    o.recipe.stopping = StoppingRule::BestSyntheticAnomalies;
    o.validation_fraction = 0.0f;
    const std::string message = sga::testing::message_of<InvalidArgument>([&] { Detector d(o); });
    CHECK(message.find("validation_fraction") != std::string::npos);
    const std::string unknown = sga::testing::message_of<InvalidArgument>([] { Recipe::named("fast"); });
    CHECK(unknown.find("official") != std::string::npos);
    CHECK(Recipe::named("official").skip_gating.gated_skips == 0);
}

TEST_CASE("the official recipe trains exactly as SkipGanomaly::train_step does", "[recipe][detector]") {
    // fit() with Recipe::official() must draw nothing extra from the random stream and close
    // no skip: two fits with the same seed agree, and their weights differ from a robust fit's.
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::official();
    std::vector<Image> images;
    for (unsigned i = 0; i < 40; ++i) images.push_back(sga::testing::random_image(28, 28, 1, 300 + i));
    Detector a(o), b(o);
    a.fit(images);
    b.fit(images);
    CHECK(Tensor::host_values(a.model().generator.parameters.values()) ==
          Tensor::host_values(b.model().generator.parameters.values()));
    CHECK(a.model().techniques().scoring_closed_skips == 0u);
    CHECK(a.model().techniques().restoration.scoring_views() == 1);
}

TEST_CASE("rotation restoration: views are the greyed quarter turns, training inputs one of them", "[recipe][restoration]") {
    Restoration rotation{Corruption::Rotation, true, 2};
    CHECK(rotation.scoring_views() == 4);
    const std::int64_t size = 8, plane = size * size;
    const std::vector<float> rgb = random_samples(3 * plane, 41);
    std::vector<float> view(rgb.size()), expected(rgb.size());
    for (int v = 0; v < 4; ++v) {
        rotation.scoring_view(rgb.data(), view.data(), 1, 3, size, v);
        rotate_quarter_turns(rgb.data(), expected.data(), 1, 3, size, v);
        for (std::int64_t p = 0; p < plane; ++p) {
            const float luminance = 0.299f * expected[static_cast<std::size_t>(p)] +
                                    0.587f * expected[static_cast<std::size_t>(plane + p)] +
                                    0.114f * expected[static_cast<std::size_t>(2 * plane + p)];
            for (std::int64_t c = 0; c < 3; ++c) REQUIRE(view[static_cast<std::size_t>(c * plane + p)] == luminance);
        }
    }
    // Grey images are only rotated.
    const std::vector<float> grey = random_samples(plane, 42);
    std::vector<float> grey_view(grey.size()), grey_expected(grey.size());
    rotation.scoring_view(grey.data(), grey_view.data(), 1, 1, size, 3);
    rotate_quarter_turns(grey.data(), grey_expected.data(), 1, 1, size, 3);
    CHECK(grey_view == grey_expected);
    // A training input is one of the four views, and all four occur.
    const std::int64_t n = 64;
    const std::vector<float> batch = random_samples(n * plane, 43);
    std::vector<float> corrupted(batch.size());
    RandomStream random(8);
    rotation.corrupt(batch.data(), corrupted.data(), n, 1, size, random);
    std::set<int> seen;
    for (std::int64_t i = 0; i < n; ++i)
        for (int v = 0; v < 4; ++v) {
            rotation.scoring_view(batch.data() + i * plane, grey_view.data(), 1, 1, size, v);
            if (std::equal(grey_view.begin(), grey_view.end(), corrupted.begin() + i * plane)) seen.insert(v);
        }
    CHECK(seen.size() == 4);
}

namespace {

// A grey image with an orientation: brighter towards the bottom, plus noise.
sga::Image upright_image(unsigned seed) {
    std::mt19937 rng(seed);
    sga::Image image{32, 32, 1, std::vector<std::uint8_t>(32 * 32)};
    for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x)
            image.pixels[static_cast<std::size_t>(y * 32 + x)] = static_cast<std::uint8_t>(y * 6 + static_cast<int>(rng() % 40));
    return image;
}

}  // namespace

TEST_CASE("rotation prediction: the head's loss falls, the score combines the standardised parts, the file round-trips",
          "[recipe][rotation]") {
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::robust_rotation();
    o.epochs = 40;  // 160 steps of batch 8
    std::vector<Image> images;
    for (unsigned i = 0; i < 48; ++i) images.push_back(upright_image(500 + i));
    Detector d(o);
    CHECK(d.options().architecture.rotation_head);
    CHECK(d.model().discriminator.has_rotation_head());
    std::vector<float> rotation_losses;
    FitCallbacks callbacks;
    callbacks.on_batch = [&](const TrainingProgress& p) { rotation_losses.push_back(p.losses.discriminator_rotation); };
    d.fit(images, callbacks);
    REQUIRE(rotation_losses.size() == 160);
    for (float loss : rotation_losses) REQUIRE(std::isfinite(loss));
    // A head that knows nothing scores log 2 = 0.69 per output; the turns of a gradient are
    // easy to tell, so a head that learns them gets below that.
    float first = 0, last = 0;
    for (std::size_t i = 0; i < 8; ++i) first += rotation_losses[i] / 8, last += rotation_losses[152 + i] / 8;
    CHECK(first > 0.68f);
    CHECK(last < 0.85f * first);

    // The score is the standardised combination of the two parts.
    const ScoreStandardisation& s = d.model().score_standardisation();
    CHECK(s.official_std > 0);
    CHECK(s.rotation_std > 0);
    const Image upright = upright_image(900), noise = sga::testing::random_image(32, 32, 1, 901);
    for (const Image* image : {&upright, &noise}) {
        const ScoreResult r = d.score(image->view());
        const double w = o.recipe.rotation_prediction.score_weight;
        const double expected = (1 - w) * (0.9 * r.reconstruction_error + 0.1 * r.latent_error - s.official_mean) / s.official_std +
                                w * (r.rotation_error - s.rotation_mean) / s.rotation_std;
        CHECK(r.score == Approx(expected).epsilon(1e-5).margin(1e-5));
        CHECK(r.rotation_error > 0);
    }
    // A picture without an up is harder to turn back than one of the normal images.
    CHECK(d.score(noise.view()).rotation_error > d.score(upright.view()).rotation_error);

    const fs::path path = fs::temp_directory_path() / "sga_test_rotation.safetensors";
    d.save(path.string());
    const Detector loaded = Detector::load(path.string(), Device::Cpu);
    const model_file::Reader reader = model_file::Reader::open(path.string());
    fs::remove(path);
    CHECK(reader.architecture().rotation_head);
    CHECK(loaded.options().recipe.name == "robust_rotation");
    CHECK(loaded.options().recipe.rotation_prediction.enabled);
    CHECK(loaded.model().score_standardisation().rotation_mean == s.rotation_mean);
    CHECK(loaded.model().score_standardisation().official_std == s.official_std);
    for (const Image* image : {&upright, &noise}) {
        const ScoreResult a = d.score(image->view()), b = loaded.score(image->view());
        CHECK(a.score == b.score);
        CHECK(a.rotation_error == b.rotation_error);
    }
}

TEST_CASE("rotation prediction needs the rotation restoration and the final epoch, and other recipes have no head",
          "[recipe][rotation][errors]") {
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::robust_rotation();
    o.recipe.restoration.corruption = Corruption::None;
    CHECK(sga::testing::message_of<InvalidArgument>([&] { Detector d(o); }).find("rotation restoration") != std::string::npos);
    o.recipe = Recipe::robust_rotation();
    o.recipe.stopping = StoppingRule::BestSyntheticAnomalies;
    CHECK(sga::testing::message_of<InvalidArgument>([&] { Detector d(o); }).find("final epoch") != std::string::npos);
    o.recipe = Recipe::robust_rotation();
    o.recipe.rotation_prediction.score_weight = 1.5f;
    CHECK(sga::testing::message_of<InvalidArgument>([&] { Detector d(o); }).find("score_weight") != std::string::npos);
    CHECK(Recipe::named("robust_rotation").rotation_prediction.enabled);
    // The official and robust recipes build the official discriminator: no head, no extra tensor.
    for (const Recipe& recipe : {Recipe::official(), Recipe::robust()}) {
        o.recipe = recipe;
        const Detector d(o);
        CHECK_FALSE(d.model().discriminator.has_rotation_head());
        for (const ParameterBlock::Entry& e : d.model().discriminator.parameters.entries())
            CHECK(e.name.find("rotation") == std::string::npos);
    }
    // A head trains only with the turned inputs and their turns.
    Architecture arch = tiny_architecture();
    arch.rotation_head = true;
    ModelTechniques rotation;
    rotation.restoration = {Corruption::Rotation, true, 2};
    TinyModel m(arch, rotation);
    const Tensor x = batch_tensor(4, 77);
    RandomStream random(1);
    CHECK(sga::testing::message_of<InvalidArgument>([&] { m.model.train_step(m.ctx, m.tape, x.view(), random); })
              .find("turns") != std::string::npos);
}

TEST_CASE("the orientation check counts as oriented a mean margin z standard errors above 0", "[recipe][orientation]") {
    OrientationCheck check;
    check.enabled = true;
    REQUIRE(check.z == 2.5);
    // Margins 0.1 +- 1 (alternating): mean 0.1, sample sd sqrt(n / (n - 1)), t = 0.1 sqrt(n - 1).
    auto margins = [](std::size_t n, double mean) {
        std::vector<double> m(n);
        for (std::size_t i = 0; i < n; ++i) m[i] = mean + (i % 2 == 0 ? 1.0 : -1.0);
        return m;
    };
    const OrientationFinding few = check.judge(margins(400, 0.1)), many = check.judge(margins(1024, 0.1));
    CHECK(few.checked);
    CHECK(few.images == 400);
    CHECK(few.mean_margin == Approx(0.1).epsilon(1e-12));
    CHECK(few.margin_std == Approx(std::sqrt(400.0 / 399)).epsilon(1e-12));
    CHECK(few.t == Approx(0.1 * std::sqrt(399.0)).epsilon(1e-9));  // 1.997
    CHECK(few.required_t == 2.5);
    CHECK_FALSE(few.oriented);
    CHECK(many.t == Approx(0.1 * std::sqrt(1023.0)).epsilon(1e-9));  // 3.198: more images, the same margin
    CHECK(many.oriented);
    CHECK_FALSE(check.judge(margins(1024, 0.0)).oriented);
    CHECK_FALSE(check.judge(margins(1024, -0.5)).oriented);
    // No spread: the sign decides, with a finite t.
    CHECK(check.judge({0.3}).oriented);
    CHECK(std::isfinite(check.judge({0.3}).t));
    CHECK_FALSE(check.judge({0.0, 0.0}).oriented);
    check.z = 0;
    CHECK(check.judge(margins(1024, 0.0)).oriented);
    // When: after_steps, or a third of a shorter fit.
    check.after_steps = 60;
    CHECK(check.check_at_step(1200) == 60);
    CHECK(check.check_at_step(180) == 60);
    CHECK(check.check_at_step(60) == 20);
    CHECK(check.check_at_step(8) == 3);
    CHECK(check.check_at_step(1) == 1);

    CHECK_THROWS_AS(check.judge({}), InvalidArgument);
    CHECK_THROWS_AS(check.judge({0.1, std::nan("")}), NumericalError);
    for (auto spoil : std::vector<std::function<void(OrientationCheck&)>>{
             [](OrientationCheck& c) { c.after_steps = 0; }, [](OrientationCheck& c) { c.images = 0; },
             [](OrientationCheck& c) { c.z = -1; }, [](OrientationCheck& c) { c.z = std::nan(""); }}) {
        OrientationCheck bad;
        spoil(bad);
        CHECK_THROWS_AS(bad.validate(), InvalidArgument);
    }
    // It asks the rotation head, so it needs one.
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::robust();
    o.recipe.orientation_check.enabled = true;
    CHECK(sga::testing::message_of<InvalidArgument>([&] { Detector d(o); }).find("rotation prediction") != std::string::npos);

    // The default has the check; its fallback keeps everything but the two rotation techniques.
    const Recipe r = Recipe::robust_rotation();
    CHECK(r.orientation_check.enabled);
    CHECK_FALSE(Recipe::robust().orientation_check.enabled);
    CHECK_FALSE(Recipe::official().orientation_check.enabled);
    const Recipe fallback = r.without_orientation();
    CHECK(fallback.name == "robust_rotation_unoriented");
    CHECK_FALSE(fallback.restoration.enabled());
    CHECK_FALSE(fallback.rotation_prediction.enabled);
    CHECK_FALSE(fallback.orientation_check.enabled);
    CHECK(fallback.recompute_batch_norm == r.recompute_batch_norm);
    CHECK(fallback.stopping == r.stopping);
}

TEST_CASE("rotation_margins: per image, the turn's logit less the others' mean, averaged over the four turns",
          "[recipe][orientation]") {
    Architecture arch = tiny_architecture();
    arch.rotation_head = true;
    ModelTechniques rotation;
    rotation.restoration = {Corruption::Rotation, true, 2};
    TinyModel m(arch, rotation);
    const std::int64_t n = 6;
    const Tensor x = batch_tensor(n, 91);
    // Running statistics: each view may then be scored on its own, in any batch.
    const std::vector<double> margins = m.model.rotation_margins(m.ctx, m.tape, x.view(), BatchNormMode::RunningStatistics);
    REQUIRE(margins.size() == static_cast<std::size_t>(n));
    std::vector<double> expected(static_cast<std::size_t>(n), 0.0);
    const std::vector<float> clean = Tensor::host_values(x.view());
    for (int turn = 0; turn < 4; ++turn) {
        Tensor view({n, 1, 32, 32}, Device::Cpu);
        m.model.techniques().restoration.scoring_view(clean.data(), view.data(), n, 1, 32, turn);
        m.tape.clear();
        m.ctx.arena().reset();
        NoGradGuard no_grad(m.tape);
        const std::vector<float> logits = Tensor::host_values(
            m.model.discriminator.rotation_logits(m.tape, m.tape.constant(view.view()), BatchNormMode::RunningStatistics).value());
        for (std::int64_t i = 0; i < n; ++i) {
            double others = 0;
            for (int u = 0; u < 4; ++u)
                if (u != turn) others += logits[static_cast<std::size_t>(4 * i + u)] / 3.0;
            expected[static_cast<std::size_t>(i)] += (logits[static_cast<std::size_t>(4 * i + turn)] - others) / 4;
        }
    }
    for (std::size_t i = 0; i < margins.size(); ++i) CHECK(margins[i] == Approx(expected[i]).epsilon(1e-6).margin(1e-7));
    CHECK_THROWS_AS(m.model.rotation_margins(m.ctx, m.tape, x.view(), BatchNormMode::Training), InvalidArgument);
    TinyModel headless;
    CHECK_THROWS_AS(headless.model.rotation_margins(headless.ctx, headless.tape, x.view(), BatchNormMode::RunningStatistics),
                    InvalidArgument);
}

namespace {

// Images without an upright: a bright blob on noise, the blob anywhere, so that every quarter
// turn of the set is distributed as the set itself.
std::vector<Image> unoriented_images(unsigned count, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<Image> images;
    for (unsigned k = 0; k < count; ++k) {
        Image image{32, 32, 1, std::vector<std::uint8_t>(32 * 32)};
        const int cx = static_cast<int>(rng() % 24) + 4, cy = static_cast<int>(rng() % 24) + 4;
        for (int y = 0; y < 32; ++y)
            for (int x = 0; x < 32; ++x) {
                const int d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
                image.pixels[static_cast<std::size_t>(y * 32 + x)] =
                    static_cast<std::uint8_t>((d2 < 16 ? 200 : 20) + static_cast<int>(rng() % 40));
            }
        images.push_back(std::move(image));
    }
    return images;
}

// The default recipe, checked at the end of the tiny options' first epoch (4 steps).
DetectorOptions checked_early_options() {
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::robust_rotation();
    o.recipe.orientation_check.after_steps = 4;
    return o;
}

std::vector<float> scores_of(const Detector& d, const std::vector<Image>& images) {
    std::vector<float> scores;
    for (const Image& image : images) scores.push_back(d.score(image.view()).score);
    return scores;
}

}  // namespace

TEST_CASE("without an upright, fit trains the recipe without_orientation(), exactly as if it had been asked for",
          "[recipe][orientation][detector]") {
    const DetectorOptions o = checked_early_options();
    const std::vector<Image> images = unoriented_images(48, 7);
    Detector d(o);
    int batches = 0, batches_at_decision = -1;
    std::vector<RecipeDecision> announced;
    FitCallbacks callbacks;
    callbacks.on_batch = [&](const TrainingProgress&) { ++batches; };
    callbacks.on_decision = [&](const RecipeDecision& decision) {
        announced.push_back(decision);
        batches_at_decision = batches;
    };
    const FitReport report = d.fit(images, callbacks);
    REQUIRE(report.orientation.checked);
    CHECK_FALSE(report.orientation.oriented);
    // The fallback is announced when it is decided (after the probing epoch, before the new
    // run's first batch), and the report keeps it.
    REQUIRE(announced.size() == 1);
    CHECK(batches_at_decision == 4);
    CHECK(announced[0].check == "orientation_check");
    CHECK(announced[0].from_recipe == "robust_rotation");
    CHECK(announced[0].to_recipe == "robust_rotation_unoriented");
    CHECK(announced[0].completed_epochs == 1);
    CHECK(announced[0].estimated_seconds > 0);
    CHECK(announced[0].finding.find("t = ") != std::string::npos);
    REQUIRE(report.decisions.size() == 1);
    CHECK(report.decisions[0].to_recipe == announced[0].to_recipe);
    CHECK(report.orientation.images == 9);  // the held-out ones (20% of 48)
    CHECK(report.orientation.t < report.orientation.required_t);
    CHECK(batches == 4 + 2 * 4);  // the probing epoch, then both epochs again (39 training images, batch 8)
    CHECK(report.epochs_completed == 2);
    CHECK(d.options().recipe.name == "robust_rotation_unoriented");
    CHECK_FALSE(d.options().architecture.rotation_head);
    CHECK_FALSE(d.model().discriminator.has_rotation_head());
    CHECK(d.model().techniques().restoration.scoring_views() == 1);
    CHECK(d.orientation().checked);
    CHECK_FALSE(d.orientation().oriented);

    DetectorOptions direct_options = o;
    direct_options.recipe = Recipe::robust_rotation().without_orientation();
    Detector direct(direct_options);
    const FitReport direct_report = direct.fit(images);
    CHECK_FALSE(direct_report.orientation.checked);
    const std::vector<Image> probe = {sga::testing::random_image(32, 32, 1, 5), unoriented_images(3, 99)[0]};
    CHECK(scores_of(d, probe) == scores_of(direct, probe));
    CHECK(d.threshold() == direct.threshold());

    // The file records the recipe trained and what the check saw.
    const fs::path path = fs::temp_directory_path() / "sga_test_unoriented.safetensors";
    d.save(path.string());
    const Detector loaded = Detector::load(path.string(), Device::Cpu);
    fs::remove(path);
    CHECK(loaded.options().recipe.name == "robust_rotation_unoriented");
    CHECK_FALSE(loaded.options().recipe.restoration.enabled());
    CHECK(loaded.orientation().checked);
    CHECK_FALSE(loaded.orientation().oriented);
    CHECK(loaded.orientation().t == report.orientation.t);
    CHECK(loaded.orientation().mean_margin == report.orientation.mean_margin);
    CHECK(loaded.orientation().required_t == report.orientation.required_t);
    CHECK(scores_of(loaded, probe) == scores_of(d, probe));

    // With no image held out there is nothing to ask: the recipe stays, unchecked.
    DetectorOptions none_held_out = o;
    none_held_out.validation_fraction = 0;
    Detector all_training(none_held_out);
    const FitReport all_training_report = all_training.fit(images);
    CHECK_FALSE(all_training_report.orientation.checked);
    CHECK(all_training.options().recipe.name == "robust_rotation");
    CHECK(all_training.model().discriminator.has_rotation_head());
}

TEST_CASE("with an upright, the check changes nothing, and a fallback's checkpoint resumes with the options' recipe",
          "[recipe][orientation][detector][checkpoint]") {
    // Upright: a vertical gradient. A learning rate ten times the default lets the tiny head
    // learn the turns within the epochs before the check.
    DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = Recipe::robust_rotation();  // checked after a third of its 16 steps: at the end of epoch 2
    o.adam.learning_rate = 2e-3f;
    o.epochs = 4;
    std::vector<Image> upright;
    for (unsigned i = 0; i < 48; ++i) upright.push_back(upright_image(700 + i));
    Detector checked(o);
    const FitReport report = checked.fit(upright);
    REQUIRE(report.orientation.checked);
    CHECK(report.orientation.oriented);
    CHECK(report.epochs.size() == 4);
    CHECK(report.decisions.empty());  // nothing changed, so nothing is announced
    CHECK(report.orientation.t >= report.orientation.required_t);
    CHECK(checked.options().recipe.name == "robust_rotation");
    CHECK(checked.model().discriminator.has_rotation_head());
    DetectorOptions unchecked_options = o;
    unchecked_options.recipe.orientation_check.enabled = false;
    Detector unchecked(unchecked_options);
    unchecked.fit(upright);
    const std::vector<Image> probe = {upright_image(5), sga::testing::random_image(32, 32, 1, 6)};
    CHECK(scores_of(checked, probe) == scores_of(unchecked, probe));

    // A checkpoint from the second run of a fallback holds the fallback's recipe; resuming it
    // with the options the user gave continues that run, to the same model as one that was
    // never interrupted.
    const std::vector<Image> images = unoriented_images(48, 17);
    const fs::path checkpoint = fs::temp_directory_path() / "sga_test_unoriented_checkpoint.safetensors";
    DetectorOptions first = checked_early_options();
    first.epochs = 1;
    first.checkpoint_every_epochs = 1;
    first.checkpoint_path = checkpoint.string();
    REQUIRE_FALSE(Detector(first).fit(images).orientation.oriented);
    DetectorOptions resumed_options = checked_early_options();
    resumed_options.resume_from = checkpoint.string();
    Detector resumed(resumed_options);
    const FitReport resumed_report = resumed.fit(images);
    fs::remove(checkpoint);
    CHECK(resumed_report.epochs.size() == 1);
    CHECK(resumed.options().recipe.name == "robust_rotation_unoriented");
    CHECK(resumed_report.orientation.checked);
    CHECK_FALSE(resumed_report.orientation.oriented);
    Detector uninterrupted(checked_early_options());
    uninterrupted.fit(images);
    CHECK(scores_of(resumed, probe) == scores_of(uninterrupted, probe));
}
