// Metrics against scikit-learn (tests/fixtures/metrics.json from scripts/make_metric_fixtures.py),
// hand-checked small cases, errors, and the plots.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "skipganomaly/error.hpp"
#include "skipganomaly/metrics.hpp"

using nlohmann::json;

namespace {

json load_fixture(const std::string& name) {
    std::ifstream in(std::string(SKIPGANOMALY_FIXTURE_DIR) + "/" + name);
    REQUIRE(in.good());
    return json::parse(in);
}

bool has_colour(const sga::Image& image, std::uint8_t r, std::uint8_t g, std::uint8_t b, int tolerance) {
    for (std::size_t i = 0; i + 2 < image.pixels.size(); i += 3)
        if (std::abs(image.pixels[i] - r) <= tolerance && std::abs(image.pixels[i + 1] - g) <= tolerance &&
            std::abs(image.pixels[i + 2] - b) <= tolerance)
            return true;
    return false;
}

}  // namespace

TEST_CASE("metrics match scikit-learn on fixed data with ties", "[metrics][sklearn]") {
    const json fixture = load_fixture("metrics.json");
    REQUIRE(fixture["cases"].size() >= 5);
    for (const json& c : fixture["cases"]) {
        const std::string name = c["name"];
        INFO("case " << name);
        const std::vector<float> scores = c["scores"].get<std::vector<float>>();
        const std::vector<int> labels = c["labels"].get<std::vector<int>>();
        // Sums of a few hundred terms in a different order than NumPy's: a few ulps apart.
        const double tolerance = 1e-12;
        CHECK(sga::roc_auc(scores, labels) == Approx(c["roc_auc"].get<double>()).margin(tolerance));
        CHECK(sga::average_precision(scores, labels) ==
              Approx(c["average_precision"].get<double>()).margin(tolerance));
        const sga::F1Max best = sga::f1_max(scores, labels);
        CHECK(best.f1 == Approx(c["f1_max"].get<double>()).margin(tolerance));
        CHECK(best.threshold == c["f1_threshold"].get<float>());

        const sga::RocCurve curve = sga::roc_curve(scores, labels);
        const std::vector<double> fpr = c["roc_fpr"], tpr = c["roc_tpr"];
        const std::vector<float> thresholds = c["roc_thresholds"].get<std::vector<float>>();
        REQUIRE(curve.fpr.size() == fpr.size());
        REQUIRE(curve.tpr.size() == tpr.size());
        REQUIRE(curve.thresholds.size() == thresholds.size() + 1);
        CHECK(std::isinf(curve.thresholds[0]));
        for (std::size_t i = 0; i < fpr.size(); ++i) {
            CHECK(curve.fpr[i] == Approx(fpr[i]).margin(tolerance));
            CHECK(curve.tpr[i] == Approx(tpr[i]).margin(tolerance));
            if (i > 0) CHECK(curve.thresholds[i] == thresholds[i - 1]);
        }
    }
}

TEST_CASE("hand-checked metric values", "[metrics]") {
    // scikit-learn's documentation example.
    const std::vector<float> scores = {0.1f, 0.4f, 0.35f, 0.8f};
    const std::vector<int> labels = {0, 0, 1, 1};
    CHECK(sga::roc_auc(scores, labels) == 0.75);
    CHECK(sga::average_precision(scores, labels) == Approx(0.5 * 1.0 + 0.5 * (2.0 / 3.0)));

    // All scores tied: every pair gets half credit; one threshold, precision 1/2.
    const std::vector<float> tied = {0.3f, 0.3f, 0.3f, 0.3f};
    CHECK(sga::roc_auc(tied, labels) == 0.5);
    CHECK(sga::average_precision(tied, labels) == 0.5);
    // A tie across the classes at the boundary: (1 + 1 + 0.5 + 1) / 4.
    CHECK(sga::roc_auc(std::vector<float>{0.1f, 0.5f, 0.5f, 0.9f}, labels) == 0.875);

    // F1 over thresholds 4, 3, 2, 1: 2/3, 1/2, 4/5, 2/3.
    const sga::F1Max best = sga::f1_max(std::vector<float>{1, 2, 3, 4}, std::vector<int>{0, 1, 0, 1});
    CHECK(best.f1 == Approx(0.8));
    CHECK(best.threshold == 2.0f);
    // Equal F1 (2/3) at thresholds 4 and 1: the lower one is returned.
    const sga::F1Max tie = sga::f1_max(std::vector<float>{4, 3, 2, 1}, std::vector<int>{1, 0, 0, 1});
    CHECK(tie.f1 == Approx(2.0 / 3.0));
    CHECK(tie.threshold == 1.0f);

    // Infinite scores order as usual.
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(sga::roc_auc(std::vector<float>{-inf, inf}, std::vector<int>{0, 1}) == 1.0);

    const sga::RocCurve curve = sga::roc_curve(scores, labels);
    CHECK(curve.fpr == std::vector<double>{0, 0, 0.5, 0.5, 1});
    CHECK(curve.tpr == std::vector<double>{0, 0.5, 0.5, 1, 1});
    CHECK(curve.thresholds == std::vector<float>{inf, 0.8f, 0.4f, 0.35f, 0.1f});
}

TEST_CASE("pixel_roc_auc pools every pixel", "[metrics]") {
    const std::vector<std::vector<float>> maps = {{0.1f, 0.9f, 0.4f}, {0.35f, 0.2f, 0.8f, 0.8f}};
    const std::vector<std::vector<std::uint8_t>> masks = {{0, 255, 0}, {1, 0, 0, 255}};
    const std::vector<float> pooled = {0.1f, 0.9f, 0.4f, 0.35f, 0.2f, 0.8f, 0.8f};
    const std::vector<int> labels = {0, 1, 0, 1, 0, 0, 1};
    CHECK(sga::pixel_roc_auc(maps, masks) == sga::roc_auc(pooled, labels));

    CHECK_THROWS_AS(sga::pixel_roc_auc({}, {}), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::pixel_roc_auc(maps, {{0, 1, 0}}), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::pixel_roc_auc(maps, {{0, 1, 0}, {0, 1, 0}}), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::pixel_roc_auc(maps, {{0, 0, 0}, {0, 0, 0, 0}}), sga::InvalidArgument);
    std::vector<std::vector<float>> with_nan = maps;
    with_nan[1][2] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(sga::pixel_roc_auc(with_nan, masks), sga::InvalidArgument);
}

TEST_CASE("metrics reject malformed input", "[metrics][errors]") {
    const std::vector<float> scores = {0.1f, 0.4f, 0.35f, 0.8f};
    using Metric = double (*)(std::span<const float>, std::span<const int>);
    for (Metric metric : {Metric{&sga::roc_auc}, Metric{&sga::average_precision},
                          Metric{[](std::span<const float> s, std::span<const int> l) { return sga::f1_max(s, l).f1; }},
                          Metric{[](std::span<const float> s, std::span<const int> l) {
                              return sga::roc_curve(s, l).fpr.back();
                          }}}) {
        CHECK_THROWS_AS(metric({}, {}), sga::InvalidArgument);
        CHECK_THROWS_AS(metric(scores, std::vector<int>{0, 1, 1}), sga::InvalidArgument);
        CHECK_THROWS_AS(metric(scores, std::vector<int>{0, 1, 2, 1}), sga::InvalidArgument);
        CHECK_THROWS_AS(metric(scores, std::vector<int>{0, -1, 0, 1}), sga::InvalidArgument);
        CHECK_THROWS_AS(metric(scores, std::vector<int>{1, 1, 1, 1}), sga::InvalidArgument);
        CHECK_THROWS_AS(metric(scores, std::vector<int>{0, 0, 0, 0}), sga::InvalidArgument);
        CHECK_THROWS_AS(metric(std::vector<float>{0.1f, std::numeric_limits<float>::quiet_NaN(), 0.3f, 0.2f},
                               std::vector<int>{0, 1, 0, 1}),
                        sga::InvalidArgument);
    }
}

TEST_CASE("ROC and histogram plots rasterise", "[metrics][plots]") {
    const std::vector<float> scores = {0.1f, 0.4f, 0.35f, 0.8f, 0.5f, 0.2f};
    const std::vector<int> labels = {0, 0, 1, 1, 1, 0};
    const sga::Image roc = sga::plot_roc_curve(sga::roc_curve(scores, labels), 96);
    CHECK(roc.width == 96);
    CHECK(roc.height == 96);
    REQUIRE(roc.channels == 3);
    REQUIRE(roc.pixels.size() == 96u * 96u * 3u);
    CHECK(has_colour(roc, 31, 119, 180, 0));  // the curve
    CHECK(has_colour(roc, 0, 0, 0, 0));       // the axes
    CHECK(has_colour(roc, 255, 255, 255, 0)); // the background

    const sga::Image histogram = sga::plot_score_histogram(std::vector<float>{0.1f, 0.2f, 0.2f, 0.3f},
                                                           std::vector<float>{0.25f, 0.7f, 0.9f}, 160, 90);
    CHECK(histogram.width == 160);
    CHECK(histogram.height == 90);
    REQUIRE(histogram.pixels.size() == 160u * 90u * 3u);
    CHECK(has_colour(histogram, 31, 119, 180, 120));  // blended normal bars
    CHECK(has_colour(histogram, 214, 39, 40, 120));   // blended anomalous bars
    CHECK_NOTHROW(sga::plot_score_histogram(std::vector<float>{1.0f, 1.0f}, {}, 64, 64));

    CHECK_THROWS_AS(sga::plot_roc_curve(sga::roc_curve(scores, labels), 16), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::plot_roc_curve(sga::RocCurve{}, 64), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::plot_roc_curve(sga::RocCurve{{0.0, 1.5}, {0.0, 1.0}, {}}, 64), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::plot_score_histogram({}, {}, 64, 64), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::plot_score_histogram(std::vector<float>{1.0f}, {}, 20, 64), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::plot_score_histogram(std::vector<float>{std::numeric_limits<float>::infinity()}, {}, 64, 64),
                    sga::InvalidArgument);
}

// ---- the default threshold rule ----------------------------------------------------------------

using sga::InvalidArgument;
using sga::threshold_from_normal_scores;

namespace {

// A score distribution with a sampler and its exact survival function P(score > t).
struct ScoreDistribution {
    const char* name;
    std::function<double(std::mt19937_64&)> draw;
    std::function<double(double)> survival;
};

std::vector<ScoreDistribution> score_distributions() {
    return {
        {"log-normal(0, 0.5)",
         [](std::mt19937_64& r) { return std::lognormal_distribution<double>(0, 0.5)(r); },
         [](double t) { return t <= 0 ? 1.0 : 0.5 * std::erfc(std::log(t) / (0.5 * std::sqrt(2.0))); }},
        {"gamma(2, 1)", [](std::mt19937_64& r) { return std::gamma_distribution<double>(2, 1)(r); },
         [](double t) { return t <= 0 ? 1.0 : (1 + t) * std::exp(-t); }},
        {"1 + |normal|", [](std::mt19937_64& r) { return 1 + std::abs(std::normal_distribution<double>(0, 1)(r)); },
         [](double t) { return t <= 1 ? 1.0 : std::erfc((t - 1) / std::sqrt(2.0)); }},
    };
}

double plain_quantile(std::vector<float> v, double level) {
    std::sort(v.begin(), v.end());
    const double position = level * static_cast<double>(v.size() - 1);
    const std::size_t below = static_cast<std::size_t>(position);
    const std::size_t above = std::min(below + 1, v.size() - 1);
    return v[below] + (position - static_cast<double>(below)) * (v[above] - v[below]);
}

}  // namespace

TEST_CASE("the default threshold rule: false-positive rate near 1% from 20 to 20,000 normal images", "[metrics][threshold]") {
    // For each n, many validation sets are drawn; each gives a threshold, whose exact
    // false-positive rate on fresh normal scores is the survival function there.
    std::mt19937_64 rng(2024);
    for (const ScoreDistribution& d : score_distributions()) {
        for (const int n : {20, 40, 100, 300, 2000, 20000}) {
            const int sets = n <= 300 ? 400 : 20;
            std::vector<double> rule_rates, plain_rates;
            for (int s = 0; s < sets; ++s) {
                std::vector<float> scores(static_cast<std::size_t>(n));
                for (float& v : scores) v = static_cast<float>(d.draw(rng));
                rule_rates.push_back(d.survival(threshold_from_normal_scores(scores, 0.99)));
                plain_rates.push_back(d.survival(plain_quantile(scores, 0.99)));
            }
            const auto mean = [](const std::vector<double>& v) {
                return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
            };
            const auto upper_decile = [](std::vector<double> v) {
                std::sort(v.begin(), v.end());
                return v[v.size() * 9 / 10];
            };
            INFO(d.name << ", n = " << n << ": rule FPR mean " << mean(rule_rates) << " p90 " << upper_decile(rule_rates)
                        << "; plain quantile FPR mean " << mean(plain_rates) << " p90 " << upper_decile(plain_rates));
            if (n <= 40) {
                CHECK(mean(rule_rates) >= 0.005);
                CHECK(mean(rule_rates) <= 0.035);
                // Less often far off than the plain quantile, whose mean here is 3-5%.
                CHECK(mean(rule_rates) < mean(plain_rates));
                CHECK(upper_decile(rule_rates) < 0.75 * upper_decile(plain_rates));
            } else if (n <= 300) {
                CHECK(mean(rule_rates) >= 0.004);
                CHECK(mean(rule_rates) <= 0.02);
                CHECK(upper_decile(rule_rates) < upper_decile(plain_rates));
            } else {
                // The plain quantile itself from n = 1000 on.
                CHECK(mean(rule_rates) == Approx(0.01).margin(0.0015));
            }
        }
    }
}

TEST_CASE("the default threshold rule: one outlier, ties, edge levels and bad input", "[metrics][threshold]") {
    std::mt19937_64 rng(7);
    std::vector<float> scores(40);
    for (float& v : scores) v = static_cast<float>(std::gamma_distribution<double>(4, 0.01)(rng));
    const double clean = threshold_from_normal_scores(scores, 0.99), clean_plain = plain_quantile(scores, 0.99);
    std::vector<float> with_outlier = scores;
    *std::max_element(with_outlier.begin(), with_outlier.end()) = 1.0f;  // a broken image among 40
    const double moved = threshold_from_normal_scores(with_outlier, 0.99) - clean;
    const double moved_plain = plain_quantile(with_outlier, 0.99) - clean_plain;
    INFO("rule moved by " << moved << ", plain quantile by " << moved_plain);
    CHECK(moved > 0);
    CHECK(moved < 0.6 * moved_plain);

    // From 1000 scores on (level 0.99), exactly the empirical quantile.
    std::vector<float> many(1000);
    for (float& v : many) v = static_cast<float>(std::gamma_distribution<double>(2, 1)(rng));
    CHECK(threshold_from_normal_scores(many, 0.99) == Approx(plain_quantile(many, 0.99)).epsilon(1e-12));
    CHECK(threshold_from_normal_scores(scores, 1.0) == *std::max_element(scores.begin(), scores.end()));
    CHECK(threshold_from_normal_scores(scores, 0.5) == Approx(plain_quantile(scores, 0.5)).epsilon(1e-12));
    // Scores that do not vary: nothing among them is flagged.
    const std::vector<float> equal(30, 0.25f);
    CHECK(threshold_from_normal_scores(equal, 0.99) > 0.25);
    CHECK(static_cast<float>(threshold_from_normal_scores(equal, 0.99)) == std::nextafter(0.25f, 1.0f));
    // Monotone in the level.
    CHECK(threshold_from_normal_scores(scores, 0.999) > threshold_from_normal_scores(scores, 0.99));
    CHECK(threshold_from_normal_scores(scores, 0.99) > threshold_from_normal_scores(scores, 0.95));

    CHECK_THROWS_AS(threshold_from_normal_scores({}, 0.99), InvalidArgument);
    CHECK_THROWS_AS(threshold_from_normal_scores(scores, 0.0), InvalidArgument);
    CHECK_THROWS_AS(threshold_from_normal_scores(scores, 1.5), InvalidArgument);
    std::vector<float> poisoned = scores;
    poisoned[3] = std::nanf("");
    CHECK_THROWS_WITH(threshold_from_normal_scores(poisoned, 0.99), Catch::Contains("not finite"));
}
