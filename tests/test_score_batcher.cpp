// Scoring independent images in one pass (SkipGanomaly::score_independent) and merging
// concurrent callers' images (ScoreBatcher): every image's score parts must be, bit for bit,
// what score() gives it alone, whatever else shares its pass.
#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <thread>

#include "skipganomaly/recipe.hpp"
#include "score_batcher.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"
#include "test_support.hpp"

namespace {

using namespace sga;

using sga::testing::random_colour_images;

// A full-width model (ngf = ndf = 64, isize 32, nc 3) with random weights and running
// statistics, so that every convolution path of a real model runs: the official networks, or
// the default recipe's (four scoring views and the rotation head).
std::unique_ptr<SkipGanomaly> random_model(const Recipe& recipe, bool packed, std::uint64_t seed) {
    Architecture arch;
    arch.image_size = 32;
    arch.channels = 3;
    arch.rotation_head = recipe.rotation_prediction.enabled;
    ModelTechniques techniques;
    techniques.restoration = recipe.restoration;
    techniques.rotation_prediction = recipe.rotation_prediction;
    auto model = std::make_unique<SkipGanomaly>(arch, AdamHyperparameters{}, LossWeights{}, techniques);
    Context ctx(Device::Cpu);
    model->materialize(ctx);
    RandomStream random(seed);
    model->initialize(ctx, random);
    // Running statistics away from (0, 1), different per channel.
    std::mt19937 rng(static_cast<unsigned>(seed));
    std::uniform_real_distribution<float> mean(-0.2f, 0.2f), var(0.5f, 2.0f);
    for (Network* net : {static_cast<Network*>(&model->generator), static_cast<Network*>(&model->discriminator)})
        for (const BatchNorm2d& bn : net->norms()) {
            for (int index : {bn.running_mean, bn.running_var}) {
                TensorView v = net->statistics.value(index);
                std::vector<float> values(static_cast<std::size_t>(v.numel()));
                for (float& x : values) x = index == bn.running_mean ? mean(rng) : var(rng);
                copy_bytes(v.data(), Device::Cpu, values.data(), Device::Cpu, values.size() * sizeof(float));
            }
        }
    if (packed) {
        model->generator.pack_for_inference(ctx);
        model->discriminator.pack_for_inference(ctx);
    }
    return model;
}

BatchScores alone(const SkipGanomaly& model, TensorView image, bool maps) {
    Context ctx(Device::Cpu);
    Tape tape(ctx);
    return model.score(ctx, tape, image, BatchNormMode::RunningStatistics, maps);
}

void require_same_bits(const BatchScores& together, std::size_t i, const BatchScores& single, std::size_t plane) {
    REQUIRE(single.reconstruction.size() == 1);
    CHECK(together.reconstruction[i] == single.reconstruction[0]);
    CHECK(together.latent[i] == single.latent[0]);
    REQUIRE(together.rotation.empty() == single.rotation.empty());
    if (!single.rotation.empty()) CHECK(together.rotation[i] == single.rotation[0]);
    if (!single.error_maps.empty()) {
        const std::vector<float> map(together.error_maps.begin() + static_cast<std::ptrdiff_t>(i * plane),
                                     together.error_maps.begin() + static_cast<std::ptrdiff_t>((i + 1) * plane));
        CHECK(map == single.error_maps);
    }
}

}  // namespace

TEST_CASE("score_independent gives every image the bits score() gives it alone", "[batcher]") {
    const Tensor images = random_colour_images(9, 5);
    const std::size_t plane = 32 * 32;
    for (const bool rotation : {false, true})
        for (const bool packed : {false, true}) {
            const Recipe recipe = rotation ? Recipe::robust_rotation() : Recipe::official();
            INFO("recipe " << recipe.name << ", packed weights: " << packed);
            const auto model = random_model(recipe, packed, 11);
            std::vector<BatchScores> single;
            for (std::int64_t i = 0; i < 9; ++i) single.push_back(alone(*model, images.view().slice_batch(i, 1), true));
            for (float r : {single[0].reconstruction[0], single[0].latent[0]}) REQUIRE((std::isfinite(r) && r > 0));
            // score() of the same images as one batch differs in the last bits somewhere (the
            // products are blocked by the batch): what makes score_independent worth having.
            Context ctx(Device::Cpu);
            Tape tape(ctx);
            const BatchScores batch = model->score(ctx, tape, images.view(), BatchNormMode::RunningStatistics, false);
            bool batch_differs = false;
            for (std::size_t i = 0; i < 9; ++i)
                batch_differs = batch_differs || batch.latent[i] != single[i].latent[0] ||
                                batch.reconstruction[i] != single[i].reconstruction[0];
            CHECK(batch_differs);
            for (const std::int64_t n : {std::int64_t{1}, std::int64_t{2}, std::int64_t{5}, std::int64_t{9}}) {
                INFO(n << " images in one pass");
                const BatchScores together = model->score_independent(ctx, tape, images.view().slice_batch(9 - n, n), true);
                REQUIRE(together.reconstruction.size() == static_cast<std::size_t>(n));
                REQUIRE(together.error_maps.size() == static_cast<std::size_t>(n) * plane);
                for (std::int64_t i = 0; i < n; ++i)
                    require_same_bits(together, static_cast<std::size_t>(i), single[static_cast<std::size_t>(9 - n + i)], plane);
            }
        }
}

TEST_CASE("the score batcher gives each concurrent caller its lone score, bit for bit", "[batcher][concurrency]") {
    const Tensor images = random_colour_images(12, 6);
    const std::int64_t sample = 3 * 32 * 32;
    const auto model = random_model(Recipe::robust_rotation(), true, 12);
    std::vector<BatchScores> single;
    for (std::int64_t i = 0; i < 12; ++i) single.push_back(alone(*model, images.view().slice_batch(i, 1), i % 3 == 0));

    ScoreBatcher batcher(4);  // at most 4 images a pass: 8 callers queue, and passes hold 1-4
    std::vector<std::thread> callers;
    std::atomic<int> mismatches{0}, calls{0};
    for (int t = 0; t < 8; ++t)
        callers.emplace_back([&, t] {
            for (int k = 0; k < 6; ++k) {
                const std::size_t i = static_cast<std::size_t>((t * 5 + k) % 12);
                const BatchScores r = batcher.score(*model, images.data() + static_cast<std::int64_t>(i) * sample, i % 3 == 0);
                const BatchScores& s = single[i];
                if (r.reconstruction != s.reconstruction || r.latent != s.latent || r.rotation != s.rotation ||
                    r.error_maps != s.error_maps)
                    ++mismatches;
                ++calls;
            }
        });
    for (std::thread& c : callers) c.join();
    CHECK(calls.load() == 48);
    CHECK(mismatches.load() == 0);
    // A lone caller: a pass of one.
    const BatchScores lone = batcher.score(*model, images.data() + 3 * sample, true);
    CHECK(lone.reconstruction == single[3].reconstruction);
    CHECK(lone.error_maps == single[3].error_maps);
}

TEST_CASE("the score batcher does not wait for callers that never call again", "[batcher][concurrency]") {
    // A free pass slot waits for the callers of the passes that just ended to call again
    // (score_batcher.hpp). Eight callers that each score once and leave must delay the
    // callers after them by a pass at most: this test hangs (and times out) if they stall it.
    const Tensor images = random_colour_images(10, 8);
    const std::int64_t sample = 3 * 32 * 32;
    const auto model = random_model(Recipe::official(), true, 15);
    std::vector<BatchScores> single;
    for (std::int64_t i = 0; i < 10; ++i) single.push_back(alone(*model, images.view().slice_batch(i, 1), false));
    ScoreBatcher batcher(4);
    std::atomic<int> mismatches{0}, calls{0};
    const auto score = [&](std::size_t i) {
        const BatchScores r = batcher.score(*model, images.data() + static_cast<std::int64_t>(i) * sample, false);
        if (r.reconstruction != single[i].reconstruction || r.latent != single[i].latent) ++mismatches;
        ++calls;
    };
    {
        std::vector<std::thread> once;
        for (std::size_t t = 0; t < 8; ++t) once.emplace_back(score, t);
        for (std::thread& c : once) c.join();
    }
    std::vector<std::thread> after;
    for (std::size_t t = 0; t < 2; ++t)
        after.emplace_back([&, t] {
            for (int k = 0; k < 5; ++k) score(8 + t);
        });
    for (std::thread& c : after) c.join();
    score(3);  // a lone caller while the eight may still count as returning
    CHECK(calls.load() == 19);
    CHECK(mismatches.load() == 0);
}

TEST_CASE("the score batcher passes a failing pass's error to its callers and goes on", "[batcher][errors]") {
    CHECK_THROWS_AS(ScoreBatcher(0), InvalidArgument);
    const auto model = random_model(Recipe::official(), true, 13);
    // A rotation head without the rotation restoration cannot score (SkipGanomaly refuses it).
    Recipe without_restoration = Recipe::robust_rotation();
    without_restoration.restoration = {};
    const auto broken = random_model(without_restoration, true, 14);
    ScoreBatcher batcher(2);
    const Tensor images = random_colour_images(1, 7);
    CHECK_THROWS_AS(batcher.score(*broken, images.data(), false), InvalidArgument);
    const BatchScores after = batcher.score(*model, images.data(), false);
    CHECK(after.reconstruction == alone(*model, images.view(), false).reconstruction);
}
