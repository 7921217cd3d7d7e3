// Metrics against scikit-learn (tests/fixtures/metrics.json) and the localisation metrics
// against a NumPy + SciPy reference (tests/fixtures/localisation_metrics.json), both from
// tests/fixtures/make_metric_fixtures.py; hand-checked small cases, errors, the font and the plots.
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

// ---- localisation metrics ------------------------------------------------------------------

namespace {

using Maps = std::vector<std::vector<float>>;
using Masks = std::vector<std::vector<std::uint8_t>>;

// One 6 x 6 image: region A (2 x 2, top left), region B (2 x 2, bottom right), 28 normal pixels.
Masks two_regions_mask() {
    std::vector<std::uint8_t> mask(36, 0);
    for (int y : {0, 1})
        for (int x : {0, 1}) mask[static_cast<std::size_t>(y * 6 + x)] = 255;
    for (int y : {4, 5})
        for (int x : {4, 5}) mask[static_cast<std::size_t>(y * 6 + x)] = 1;
    return {mask};
}

}  // namespace

TEST_CASE("localisation metrics match the NumPy reference on random maps and masks", "[metrics][localisation]") {
    const json fixture = load_fixture("localisation_metrics.json");
    REQUIRE(fixture["cases"].size() == 3);
    for (const json& c : fixture["cases"]) {
        const std::string name = c["name"];
        INFO("case " << name);
        const Maps maps = c["maps"].get<Maps>();
        Masks masks;
        for (const json& m : c["masks"]) masks.push_back(m.get<std::vector<std::uint8_t>>());
        const std::vector<int> widths = c["widths"], heights = c["heights"];
        REQUIRE(maps.size() >= 6);
        // Sums of up to a few thousand terms in another order than NumPy's.
        const double tolerance = 1e-12;
        CHECK(sga::pixel_roc_auc(maps, masks) == Approx(c["pixel_roc_auc"].get<double>()).margin(tolerance));
        const sga::F1Max f1 = sga::pixel_f1_max(maps, masks);
        CHECK(f1.f1 == Approx(c["pixel_f1_max"].get<double>()).margin(tolerance));
        CHECK(f1.threshold == c["pixel_f1_threshold"].get<float>());
        for (const auto& [limit, expected] : c["aupro"].items()) {
            INFO("max_fpr " << limit);
            // Exact on both sides: only the summation order differs.
            CHECK(sga::aupro(maps, masks, widths, heights, std::stod(limit)) ==
                  Approx(expected.get<double>()).margin(1e-12));
        }
        CHECK(sga::aupro(maps, masks, widths, heights) == Approx(c["aupro"]["0.3"].get<double>()).margin(1e-12));

        const sga::ProCurve curve = sga::pro_curve(maps, masks, widths, heights);
        REQUIRE(curve.fpr.size() == c["pro_points"].get<std::size_t>());  // (0, 0) included
        REQUIRE(curve.pro.size() == curve.fpr.size());
        REQUIRE(curve.thresholds.size() == curve.fpr.size());
        CHECK(curve.fpr.front() == 0.0);
        CHECK(curve.pro.front() == 0.0);
        CHECK(curve.fpr.back() == 1.0);
        CHECK(curve.pro.back() == 1.0);
        if (c.contains("pro_fpr")) {
            const std::vector<double> fpr = c["pro_fpr"], pro = c["pro"];
            const std::vector<float> thresholds = c["pro_thresholds"].get<std::vector<float>>();
            REQUIRE(fpr.size() == curve.fpr.size());
            for (std::size_t i = 0; i < fpr.size(); ++i) {
                CHECK(curve.fpr[i] == Approx(fpr[i]).margin(tolerance));
                CHECK(curve.pro[i] == Approx(pro[i]).margin(tolerance));
                if (i > 0) CHECK(curve.thresholds[i] == thresholds[i - 1]);
            }
        }
    }

    const json& d = fixture["defect_types"];
    const std::vector<float> scores = d["scores"].get<std::vector<float>>();
    const std::vector<int> labels = d["labels"];
    const std::vector<std::string> types = d["defect_types"];
    const std::vector<sga::DefectTypeRocAuc> per_type = sga::roc_auc_per_defect_type(scores, labels, types);
    REQUIRE(per_type.size() == d["expected"].size());
    std::size_t k = 0;
    for (const auto& [type, expected] : d["expected"].items()) {  // nlohmann::json sorts keys
        INFO("defect type " << type);
        CHECK(per_type[k].defect_type == type);
        CHECK(per_type[k].anomalous == expected["anomalous"].get<std::size_t>());
        CHECK(per_type[k].roc_auc == Approx(expected["roc_auc"].get<double>()).margin(1e-12));
        ++k;
    }
}

TEST_CASE("PRO curve and AUPRO on hand-computed maps", "[metrics][localisation]") {
    const Masks masks = two_regions_mask();
    const std::vector<int> six = {6};

    // Region A found perfectly, region B not at all: (0, 0), (0, 0.5), (1, 1); from fpr 0 to
    // 0.3 the curve is 0.5 + 0.5 fpr: (0.15 + 0.0225) / 0.3.
    Maps one_found(1, std::vector<float>(36, 0.0f));
    for (int i : {0, 1, 6, 7}) one_found[0][static_cast<std::size_t>(i)] = 1.0f;
    const sga::ProCurve curve = sga::pro_curve(one_found, masks, six, six);
    CHECK(curve.fpr == std::vector<double>{0, 0, 1});
    CHECK(curve.pro == std::vector<double>{0, 0.5, 1});
    CHECK(curve.thresholds == std::vector<float>{std::numeric_limits<float>::infinity(), 1.0f, 0.0f});
    CHECK(sga::aupro(one_found, masks, six, six) == Approx(0.575).margin(1e-15));
    CHECK(sga::aupro(one_found, masks, six, six, 1.0) == Approx(0.75).margin(1e-15));
    // Pixel-wise the same map finds 4 of 8 anomalous pixels with no false positive.
    CHECK(sga::pixel_f1_max(one_found, masks).f1 == Approx(2.0 * 4 / (4 + 0 + 8)));
    CHECK(sga::pixel_f1_max(one_found, masks).threshold == 1.0f);

    // Both regions found: AUPRO 1. Every score tied: the diagonal, 0.3 x 0.3 / 2 / 0.3.
    Maps both = one_found;
    for (int i : {28, 29, 34, 35}) both[0][static_cast<std::size_t>(i)] = 1.0f;
    CHECK(sga::aupro(both, masks, six, six) == 1.0);
    const Maps flat(1, std::vector<float>(36, 0.25f));
    CHECK(sga::aupro(flat, masks, six, six) == Approx(0.15).margin(1e-15));

    // A region of 4 pixels and one of 1 count alike: finding the single pixel gives PRO 0.5
    // where the pooled pixel recall is 1/5.
    Masks small_and_large = {std::vector<std::uint8_t>(36, 0)};
    for (int i : {0, 1, 6, 7, 35}) small_and_large[0][static_cast<std::size_t>(i)] = 1;
    Maps single(1, std::vector<float>(36, 0.0f));
    single[0][35] = 2.0f;
    CHECK(sga::pro_curve(single, small_and_large, six, six).pro[1] == 0.5);

    // 8-connectivity: (0,0), (1,1), (2,2) touch at corners and make one region, the pixel at
    // (5,5) another; finding (5,5) alone gives PRO (0 + 1) / 2 (4-connectivity would give 1/4).
    Masks diagonal = {std::vector<std::uint8_t>(36, 0)};
    for (int i : {0, 7, 14, 35}) diagonal[0][static_cast<std::size_t>(i)] = 1;
    CHECK(sga::pro_curve(single, diagonal, six, six).pro[1] == 0.5);

    // The limit falls exactly on a point: 10 normal pixels, 3 of them above the threshold
    // 4 give fpr 0.3, where PRO then jumps from 0.5 to 1 at threshold 3; the jump is not
    // integrated: 0.5 x 0.3 / 0.3.
    const Masks ten = {{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}};
    const Maps exact = {{5, 3, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0}};
    const std::vector<int> width12 = {12}, height1 = {1};
    const sga::ProCurve jump = sga::pro_curve(exact, ten, width12, height1);
    CHECK(jump.fpr == std::vector<double>{0, 0, 0.3, 0.3, 1});
    CHECK(jump.pro == std::vector<double>{0, 0.5, 0.5, 1, 1});
    CHECK(sga::aupro(exact, ten, width12, height1) == Approx(0.5).margin(1e-15));

    // Regions never span images, and normal images count in the FPR: the same region split
    // over two images is two regions, and a normal image's high pixels are false positives.
    const Maps split = {{1, 0}, {0, 0}, {1, 0}};
    const Masks split_masks = {{1, 0}, {1, 0}, {0, 0}};
    const std::vector<int> two = {2, 2, 2}, one = {1, 1, 1};
    const sga::ProCurve split_curve = sga::pro_curve(split, split_masks, two, one);
    CHECK(split_curve.fpr == std::vector<double>{0, 0.25, 1});
    CHECK(split_curve.pro == std::vector<double>{0, 0.5, 1});
}

TEST_CASE("image AUROC per defect type, hand-computed", "[metrics][localisation]") {
    const std::vector<float> scores = {0.1f, 0.9f, 0.05f, 0.2f, 0.15f};
    const std::vector<int> labels = {0, 1, 1, 0, 1};
    const std::vector<std::string> types = {"good", "crack", "hole", "good", "crack"};
    const std::vector<sga::DefectTypeRocAuc> r = sga::roc_auc_per_defect_type(scores, labels, types);
    REQUIRE(r.size() == 2);
    // crack: 0.9 above both normal scores, 0.15 above 0.1 only: 3 of 4 pairs.
    CHECK(r[0].defect_type == "crack");
    CHECK(r[0].anomalous == 2);
    CHECK(r[0].roc_auc == 0.75);
    CHECK(r[1].defect_type == "hole");
    CHECK(r[1].anomalous == 1);
    CHECK(r[1].roc_auc == 0.0);
    // A normal image's type is ignored.
    std::vector<std::string> renamed = types;
    renamed[0] = "crack";
    CHECK(sga::roc_auc_per_defect_type(scores, labels, renamed)[0].roc_auc == 0.75);

    CHECK_THROWS_AS(sga::roc_auc_per_defect_type(scores, labels, std::vector<std::string>(4, "x")), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::roc_auc_per_defect_type({}, {}, {}), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::roc_auc_per_defect_type(scores, std::vector<int>(5, 0), types), sga::InvalidArgument);
    std::vector<float> with_nan = scores;
    with_nan[2] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(sga::roc_auc_per_defect_type(with_nan, labels, types), sga::InvalidArgument);
}

TEST_CASE("localisation metrics reject malformed input", "[metrics][localisation][errors]") {
    const Masks masks = two_regions_mask();
    const Maps maps(1, std::vector<float>(36, 0.5f));
    const std::vector<int> six = {6};
    using sga::InvalidArgument;
    CHECK_THROWS_AS(sga::aupro({}, {}, {}, {}), InvalidArgument);
    CHECK_THROWS_AS(sga::aupro(maps, {}, six, six), InvalidArgument);
    CHECK_THROWS_AS(sga::aupro(maps, masks, std::vector<int>{}, six), InvalidArgument);
    CHECK_THROWS_WITH(sga::aupro(maps, masks, std::vector<int>{4}, std::vector<int>{8}),
                      Catch::Contains("expected width x height = 4 x 8"));
    CHECK_THROWS_AS(sga::aupro(maps, masks, std::vector<int>{5}, six), InvalidArgument);
    CHECK_THROWS_AS(sga::aupro(maps, {std::vector<std::uint8_t>(35, 0)}, six, six), InvalidArgument);
    CHECK_THROWS_WITH(sga::aupro(maps, {std::vector<std::uint8_t>(36, 0)}, six, six),
                      Catch::Contains("0 anomalous and 36 normal"));
    CHECK_THROWS_AS(sga::aupro(maps, {std::vector<std::uint8_t>(36, 1)}, six, six), InvalidArgument);
    CHECK_THROWS_AS(sga::aupro(maps, masks, six, six, 0.0), InvalidArgument);
    CHECK_THROWS_AS(sga::aupro(maps, masks, six, six, 1.5), InvalidArgument);
    Maps with_nan = maps;
    with_nan[0][7] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH(sga::aupro(with_nan, masks, six, six), Catch::Contains("NaN"));
    CHECK_THROWS_AS(sga::pro_curve(with_nan, masks, six, six), InvalidArgument);

    CHECK_THROWS_AS(sga::pixel_f1_max({}, {}), InvalidArgument);
    CHECK_THROWS_AS(sga::pixel_f1_max(maps, {std::vector<std::uint8_t>(35, 0)}), InvalidArgument);
    CHECK_THROWS_AS(sga::pixel_f1_max(maps, {std::vector<std::uint8_t>(36, 0)}), InvalidArgument);
    CHECK_THROWS_AS(sga::pixel_f1_max(with_nan, masks), InvalidArgument);
}

// ---- text and pictures -------------------------------------------------------------------------

namespace {

sga::Image blank(int width, int height) {
    sga::Image image;
    image.width = width;
    image.height = height;
    image.channels = 3;
    image.pixels.assign(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3, 255);
    return image;
}

bool is_ink(const sga::Image& image, int x, int y) {
    const std::uint8_t* p = image.pixels.data() + (static_cast<std::size_t>(y) * static_cast<std::size_t>(image.width) +
                                                   static_cast<std::size_t>(x)) * 3;
    return p[0] < 128 && p[1] < 128 && p[2] < 128;
}

// Dark (text, axis) pixels in the rectangle [x0, x1) x [y0, y1).
int dark_pixels(const sga::Image& image, int x0, int y0, int x1, int y1) {
    int count = 0;
    for (int y = y0; y < y1; ++y)
        for (int x = x0; x < x1; ++x) count += is_ink(image, x, y) ? 1 : 0;
    return count;
}

}  // namespace

TEST_CASE("text renders the font's glyphs", "[metrics][plots][text]") {
    sga::Image image = blank(24, 12);
    sga::draw_text(image, 1, 2, "1=", sga::Rgb{0, 0, 0});
    // '1' and '=' of the 5 x 7 font, with the spacing column between them.
    const char* const expected[12] = {
        "........................",
        "........................",
        "...#....................",
        "..##....................",
        "...#...#####............",
        "...#....................",
        "...#...#####............",
        "...#....................",
        "..###...................",
        "........................",
        "........................",
        "........................",
    };
    for (int y = 0; y < 12; ++y)
        for (int x = 0; x < 24; ++x) {
            INFO("pixel (" << x << ", " << y << ")");
            CHECK(is_ink(image, x, y) == (expected[y][x] == '#'));
        }
    CHECK(sga::text_width("1=") == 11);
    CHECK(sga::text_width("1=", 3) == 33);
    CHECK(sga::text_height(2) == 16);

    // At scale 2 each font pixel is a 2 x 2 block: '-' is row 3 of the glyph, 5 pixels wide.
    sga::Image dash = blank(14, 20);
    sga::draw_text(dash, 0, 0, "-", sga::Rgb{10, 20, 30}, 2);
    CHECK(dark_pixels(dash, 0, 0, 14, 20) == 10 * 2);
    CHECK(dark_pixels(dash, 0, 6, 10, 8) == 20);
    // A byte outside ASCII is drawn as '?'; text off the image is clipped.
    sga::Image a = blank(12, 10), b = blank(12, 10);
    sga::draw_text(a, 0, 0, "\xe9", sga::Rgb{0, 0, 0});
    sga::draw_text(b, 0, 0, "?", sga::Rgb{0, 0, 0});
    CHECK(a.pixels == b.pixels);
    CHECK_NOTHROW(sga::draw_text(a, -30, 8, "clipped", sga::Rgb{0, 0, 0}, 2));
    sga::Image grey;
    grey.width = grey.height = 4;
    grey.channels = 1;
    grey.pixels.assign(16, 0);
    CHECK_THROWS_AS(sga::draw_text(grey, 0, 0, "x", sga::Rgb{0, 0, 0}), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::draw_text(image, 0, 0, "x", sga::Rgb{0, 0, 0}, 0), sga::InvalidArgument);
}

TEST_CASE("ROC and histogram plots carry titles, axis labels and tick values", "[metrics][plots]") {
    std::mt19937_64 rng(11);
    std::vector<float> scores(200);
    std::vector<int> labels(200);
    for (std::size_t i = 0; i < scores.size(); ++i) {
        labels[i] = i % 4 == 0;
        scores[i] = static_cast<float>(std::normal_distribution<double>(labels[i] ? 1.0 : 0.0, 1.0)(rng));
    }
    const sga::Image roc = sga::plot_roc_curve(sga::roc_curve(scores, labels), 512);
    REQUIRE(roc.width == 512);
    REQUIRE(roc.height == 512);
    REQUIRE(roc.pixels.size() == 512u * 512u * 3u);
    // The rotated "true-positive rate" on the far left, the title on top, "false-positive rate"
    // at the bottom, tick values left of the y axis: each is ink where nothing else is drawn.
    CHECK(dark_pixels(roc, 0, 150, 30, 360) > 150);
    CHECK(dark_pixels(roc, 150, 0, 360, 26) > 100);
    CHECK(dark_pixels(roc, 150, 480, 360, 512) > 150);
    CHECK(dark_pixels(roc, 30, 100, 70, 400) > 150);
    // The AUROC, in the lower right of the plot, against a plot drawn with the title changed.
    const sga::Image titled = sga::plot_roc_curve(sga::roc_curve(scores, labels), 512, "other");
    CHECK(dark_pixels(titled, 150, 0, 360, 26) < dark_pixels(roc, 150, 0, 360, 26));
    CHECK(dark_pixels(roc, 300, 380, 500, 460) > 150);
    // Too small for text: the margins stay empty.
    const sga::Image small = sga::plot_roc_curve(sga::roc_curve(scores, labels), 96);
    CHECK(small.width == 96);
    CHECK(dark_pixels(small, 0, 0, 4, 96) == 0);

    std::vector<float> normal, anomalous;
    for (std::size_t i = 0; i < scores.size(); ++i) (labels[i] ? anomalous : normal).push_back(scores[i]);
    const sga::Image histogram = sga::plot_score_histogram(normal, anomalous, 640, 400);
    REQUIRE(histogram.width == 640);
    REQUIRE(histogram.height == 400);
    REQUIRE(histogram.pixels.size() == 640u * 400u * 3u);
    CHECK(dark_pixels(histogram, 0, 100, 30, 300) > 60);      // "images", rotated
    CHECK(dark_pixels(histogram, 200, 0, 440, 26) > 100);     // title
    CHECK(dark_pixels(histogram, 250, 370, 400, 400) > 60);   // "score"
    CHECK(dark_pixels(histogram, 100, 338, 600, 362) > 150);  // score tick values
    CHECK(has_colour(histogram, 31, 119, 180, 120));
    CHECK(has_colour(histogram, 214, 39, 40, 120));
}

TEST_CASE("an evaluation strip shows image, ground truth, map and predicted mask", "[metrics][plots]") {
    // A 40 x 30 grey image with a bright 6 x 6 square; ground truth and prediction mark it.
    const int w = 40, h = 30;
    std::vector<std::uint8_t> pixels(static_cast<std::size_t>(w * h), 60), truth(pixels.size(), 0);
    std::vector<float> map(pixels.size(), 0.0f);
    for (int y = 10; y < 16; ++y)
        for (int x = 20; x < 26; ++x) {
            const std::size_t i = static_cast<std::size_t>(y * w + x);
            pixels[i] = 220;
            truth[i] = 255;
            map[i] = 1.0f;
        }
    const std::vector<std::uint8_t> predicted = truth;
    sga::AnomalyCase c;
    c.image = {pixels.data(), w, h, w, sga::PixelFormat::Gray};
    c.anomaly_map = map;
    c.map_low = 0.0f;
    c.map_high = 1.0f;
    c.ground_truth = sga::ImageView{truth.data(), w, h, w, sga::PixelFormat::Gray};
    c.predicted_mask = predicted;
    c.caption = "crack/003.png  score 0.1234";
    const sga::Image strip = sga::plot_anomaly_case(c, 80);
    // Panels 80 x 60 (the image's aspect), 6-pixel gaps; one caption line and the titles,
    // 11 pixels each.
    const int panels_top = 6 + 11 + 6 + 11 + 2;
    CHECK(strip.width == 4 * 80 + 5 * 6);
    CHECK(strip.height == panels_top + 60 + 6);
    CHECK(dark_pixels(strip, 6, 6, 200, 14) > 40);  // the caption
    // Ground truth: white inside the square (enlarged x2), black outside.
    const auto at = [&](int panel, int x, int y) {
        const std::size_t i = (static_cast<std::size_t>(panels_top + y) * static_cast<std::size_t>(strip.width) +
                               static_cast<std::size_t>(6 + panel * 86 + x)) * 3;
        return std::vector<int>{strip.pixels[i], strip.pixels[i + 1], strip.pixels[i + 2]};
    };
    CHECK(at(1, 45, 25) == std::vector<int>{255, 255, 255});
    CHECK(at(1, 5, 5) == std::vector<int>{0, 0, 0});
    CHECK(at(3, 45, 25) == std::vector<int>{255, 255, 255});
    CHECK(at(0, 5, 5) == std::vector<int>{60, 60, 60});
    // The map panel: red over the square, blue elsewhere (anomaly_overlay).
    CHECK(at(2, 45, 25)[0] > 150);
    CHECK(at(2, 5, 5)[2] > at(2, 5, 5)[0] + 40);

    // A caption wider than the strip is broken at spaces onto more lines.
    sga::AnomalyCase wordy = c;
    wordy.caption = "a caption of many words, far wider than the three hundred and fifty pixels of the strip";
    wordy.detail = "and a detail line";
    const sga::Image wrapped = sga::plot_anomaly_case(wordy, 80);
    CHECK(wrapped.width == strip.width);
    CHECK(wrapped.height == strip.height + 2 * 11);
    CHECK(dark_pixels(wrapped, 6, 6 + 11, 200, 6 + 11 + 8) > 40);

    // Without ground truth, map and threshold the panels are grey and say so.
    sga::AnomalyCase bare;
    bare.image = c.image;
    bare.caption = "x";
    const sga::Image grey = sga::plot_anomaly_case(bare, 80);
    const std::size_t i = (static_cast<std::size_t>(panels_top + 2) * static_cast<std::size_t>(grey.width) + 6 + 86 + 2) * 3;
    CHECK(grey.pixels[i] == 200);
    CHECK(dark_pixels(grey, 6 + 86, panels_top, 6 + 86 + 80, panels_top + 60) > 20);  // "not known"

    // A 400 x 300 image is shrunk; a one-pixel defect stays visible in the mask panel.
    std::vector<std::uint8_t> large(400 * 300, 0), dot(400 * 300, 0);
    dot[150 * 400 + 200] = 1;
    sga::AnomalyCase shrunk;
    shrunk.image = {large.data(), 400, 300, 400, sga::PixelFormat::Gray};
    shrunk.ground_truth = sga::ImageView{dot.data(), 400, 300, 400, sga::PixelFormat::Gray};
    const sga::Image s = sga::plot_anomaly_case(shrunk, 100);
    CHECK(s.width == 4 * 100 + 30);
    int white = 0;
    for (int y = 0; y < 75; ++y)
        for (int x = 0; x < 100; ++x)
            white += s.pixels[(static_cast<std::size_t>(panels_top + y) * static_cast<std::size_t>(s.width) +
                               static_cast<std::size_t>(6 + 106 + x)) * 3] == 255;
    CHECK(white == 1);

    std::vector<float> short_map(10, 0.0f);
    sga::AnomalyCase wrong = c;
    wrong.anomaly_map = short_map;
    CHECK_THROWS_AS(sga::plot_anomaly_case(wrong, 80), sga::InvalidArgument);
    wrong = c;
    wrong.map_high = wrong.map_low;
    CHECK_THROWS_AS(sga::plot_anomaly_case(wrong, 80), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::plot_anomaly_case(c, 16), sga::InvalidArgument);
    wrong = c;
    wrong.ground_truth = sga::ImageView{truth.data(), 20, 30, 20, sga::PixelFormat::Gray};
    CHECK_THROWS_AS(sga::plot_anomaly_case(wrong, 80), sga::InvalidArgument);
}
