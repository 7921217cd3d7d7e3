// Ranking metrics computed exactly from grouped counts, and small raster plots.
#include "skipganomaly/metrics.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "skipganomaly/error.hpp"

namespace sga {
namespace {

// One distinct score and how many anomalous / normal samples carry it.
struct ScoreGroup {
    float score;
    std::uint64_t positives;
    std::uint64_t negatives;
};

struct Grouped {
    std::vector<ScoreGroup> groups;  // scores descending
    std::uint64_t positives = 0;
    std::uint64_t negatives = 0;
};

using ScoredLabel = std::pair<float, std::uint8_t>;  // (score, 0 normal / 1 anomalous)

Grouped group_scores(std::vector<ScoredLabel>& items) {
    std::sort(items.begin(), items.end(),
              [](const ScoredLabel& a, const ScoredLabel& b) { return a.first > b.first; });
    Grouped grouped;
    for (const ScoredLabel& item : items) {
        if (grouped.groups.empty() || grouped.groups.back().score != item.first)
            grouped.groups.push_back({item.first, 0, 0});
        if (item.second) {
            ++grouped.groups.back().positives;
            ++grouped.positives;
        } else {
            ++grouped.groups.back().negatives;
            ++grouped.negatives;
        }
    }
    if (grouped.positives == 0 || grouped.negatives == 0)
        throw InvalidArgument(
            "metrics need both classes, found " + std::to_string(grouped.positives) +
            " anomalous and " + std::to_string(grouped.negatives) + " normal samples");
    return grouped;
}

Grouped validate_and_group(std::span<const float> scores, std::span<const int> labels) {
    SGA_CHECK_ARGUMENT(!scores.empty(), "metrics need at least one score");
    SGA_CHECK_ARGUMENT(scores.size() == labels.size(),
                       "scores and labels differ in length: " + std::to_string(scores.size()) +
                           " scores, " + std::to_string(labels.size()) + " labels");
    std::vector<ScoredLabel> items(scores.size());
    for (std::size_t i = 0; i < scores.size(); ++i) {
        if (std::isnan(scores[i]))
            throw InvalidArgument("score " + std::to_string(i) + " is NaN");
        if (labels[i] != 0 && labels[i] != 1)
            throw InvalidArgument("label " + std::to_string(i) + ": expected 0 or 1, found " +
                                  std::to_string(labels[i]));
        items[i] = {scores[i], static_cast<std::uint8_t>(labels[i])};
    }
    return group_scores(items);
}

double auc_of(const Grouped& grouped) {
    // Twice the number of correctly ordered (anomalous, normal) pairs, ties counting half,
    // kept in integers so the only rounding is the final division.
    std::uint64_t twice_correct = 0;
    std::uint64_t positives_above = 0;
    for (const ScoreGroup& group : grouped.groups) {
        twice_correct += group.negatives * (2 * positives_above + group.positives);
        positives_above += group.positives;
    }
    return static_cast<double>(twice_correct) /
           (2.0 * static_cast<double>(grouped.positives) * static_cast<double>(grouped.negatives));
}

// ---- raster drawing --------------------------------------------------------------------

using Colour = std::array<std::uint8_t, 3>;
constexpr Colour black{0, 0, 0};
constexpr Colour grey{170, 170, 170};
constexpr Colour light_grey{225, 225, 225};
constexpr Colour blue{31, 119, 180};
constexpr Colour red{214, 39, 40};

class Canvas {
public:
    Canvas(int width, int height) {
        image_.width = width;
        image_.height = height;
        image_.channels = 3;
        image_.pixels.assign(static_cast<std::size_t>(width) * height * 3, 255);
    }

    // Blends colour over the pixel with the given opacity; points outside are ignored.
    void plot(int x, int y, const Colour& colour, float opacity = 1.0f) {
        if (x < 0 || y < 0 || x >= image_.width || y >= image_.height) return;
        std::uint8_t* p = image_.pixels.data() + (static_cast<std::size_t>(y) * image_.width + x) * 3;
        for (int c = 0; c < 3; ++c)
            p[c] = static_cast<std::uint8_t>(
                std::lround(p[c] * (1.0f - opacity) + colour[c] * opacity));
    }

    void fill(int x0, int y0, int x1, int y1, const Colour& colour, float opacity = 1.0f) {
        for (int y = std::min(y0, y1); y <= std::max(y0, y1); ++y)
            for (int x = std::min(x0, x1); x <= std::max(x0, x1); ++x) plot(x, y, colour, opacity);
    }

    // A line of the given thickness in pixels; with dash > 0, drawn dash pixels on, dash off.
    void line(double x0, double y0, double x1, double y1, const Colour& colour, int thickness = 1,
              int dash = 0) {
        const double length = std::max(std::fabs(x1 - x0), std::fabs(y1 - y0));
        const int steps = std::max(1, static_cast<int>(std::ceil(length)));
        const int low = -(thickness - 1) / 2;
        const int high = thickness / 2;
        for (int i = 0; i <= steps; ++i) {
            if (dash > 0 && (i / dash) % 2 == 1) continue;
            const double t = static_cast<double>(i) / steps;
            const int x = static_cast<int>(std::lround(x0 + (x1 - x0) * t));
            const int y = static_cast<int>(std::lround(y0 + (y1 - y0) * t));
            fill(x + low, y + low, x + high, y + high, colour);
        }
    }

    Image take() { return std::move(image_); }

private:
    Image image_;
};

// The plot area inside a margin, and its axes with quarter tick marks and light grid lines.
struct PlotArea {
    int left, top, right, bottom;
};

PlotArea draw_axes(Canvas& canvas, int width, int height, bool grid) {
    const int margin = std::max(8, std::min(width, height) / 10);
    const PlotArea area{margin, margin / 2, width - 1 - margin / 2, height - 1 - margin};
    for (int q = 1; q <= 4; ++q) {
        const double x = area.left + (area.right - area.left) * q / 4.0;
        const double y = area.bottom - (area.bottom - area.top) * q / 4.0;
        if (grid) {
            canvas.line(x, area.top, x, area.bottom, light_grey);
            canvas.line(area.left, y, area.right, y, light_grey);
        }
        canvas.line(x, area.bottom, x, area.bottom + 4, black);
        canvas.line(area.left - 4, y, area.left, y, black);
    }
    canvas.line(area.left, area.top, area.left, area.bottom, black);
    canvas.line(area.left, area.bottom, area.right, area.bottom, black);
    return area;
}

}  // namespace

double roc_auc(std::span<const float> scores, std::span<const int> labels) {
    return auc_of(validate_and_group(scores, labels));
}

double average_precision(std::span<const float> scores, std::span<const int> labels) {
    const Grouped grouped = validate_and_group(scores, labels);
    double precision_sum = 0.0;
    std::uint64_t true_positives = 0, false_positives = 0;
    for (const ScoreGroup& group : grouped.groups) {
        true_positives += group.positives;
        false_positives += group.negatives;
        if (group.positives == 0) continue;  // recall unchanged: no contribution
        const double precision = static_cast<double>(true_positives) /
                                 static_cast<double>(true_positives + false_positives);
        precision_sum += static_cast<double>(group.positives) * precision;
    }
    return precision_sum / static_cast<double>(grouped.positives);
}

F1Max f1_max(std::span<const float> scores, std::span<const int> labels) {
    const Grouped grouped = validate_and_group(scores, labels);
    // F1 = 2 TP / (TP + FP + P); fractions are compared exactly in 128-bit integers.
    __extension__ using Wide = unsigned __int128;
    std::uint64_t best_numerator = 0, best_denominator = 1;
    float best_threshold = grouped.groups.front().score;
    std::uint64_t true_positives = 0, false_positives = 0;
    for (const ScoreGroup& group : grouped.groups) {  // thresholds descending
        true_positives += group.positives;
        false_positives += group.negatives;
        const std::uint64_t numerator = 2 * true_positives;
        const std::uint64_t denominator = true_positives + false_positives + grouped.positives;
        // ">=": among equal F1 the later, lower threshold wins.
        if (static_cast<Wide>(numerator) * best_denominator >=
            static_cast<Wide>(best_numerator) * denominator) {
            best_numerator = numerator;
            best_denominator = denominator;
            best_threshold = group.score;
        }
    }
    return {static_cast<double>(best_numerator) / static_cast<double>(best_denominator),
            best_threshold};
}

RocCurve roc_curve(std::span<const float> scores, std::span<const int> labels) {
    const Grouped grouped = validate_and_group(scores, labels);
    RocCurve curve;
    curve.fpr.reserve(grouped.groups.size() + 1);
    curve.tpr.reserve(grouped.groups.size() + 1);
    curve.thresholds.reserve(grouped.groups.size() + 1);
    curve.fpr.push_back(0.0);
    curve.tpr.push_back(0.0);
    curve.thresholds.push_back(std::numeric_limits<float>::infinity());
    std::uint64_t true_positives = 0, false_positives = 0;
    for (const ScoreGroup& group : grouped.groups) {
        true_positives += group.positives;
        false_positives += group.negatives;
        curve.fpr.push_back(static_cast<double>(false_positives) / static_cast<double>(grouped.negatives));
        curve.tpr.push_back(static_cast<double>(true_positives) / static_cast<double>(grouped.positives));
        curve.thresholds.push_back(group.score);
    }
    return curve;
}

double pixel_roc_auc(const std::vector<std::vector<float>>& maps,
                     const std::vector<std::vector<std::uint8_t>>& masks) {
    SGA_CHECK_ARGUMENT(!maps.empty(), "pixel metrics need at least one map");
    SGA_CHECK_ARGUMENT(maps.size() == masks.size(),
                       "maps and masks differ in number: " + std::to_string(maps.size()) +
                           " maps, " + std::to_string(masks.size()) + " masks");
    std::size_t total = 0;
    for (std::size_t i = 0; i < maps.size(); ++i) {
        SGA_CHECK_ARGUMENT(maps[i].size() == masks[i].size(),
                           "map " + std::to_string(i) + " has " + std::to_string(maps[i].size()) +
                               " values, its mask " + std::to_string(masks[i].size()));
        total += maps[i].size();
    }
    SGA_CHECK_ARGUMENT(total > 0, "pixel metrics need at least one pixel");
    std::vector<ScoredLabel> items;
    items.reserve(total);
    for (std::size_t i = 0; i < maps.size(); ++i) {
        for (std::size_t j = 0; j < maps[i].size(); ++j) {
            if (std::isnan(maps[i][j]))
                throw InvalidArgument("map " + std::to_string(i) + " pixel " + std::to_string(j) +
                                      " is NaN");
            items.emplace_back(maps[i][j], masks[i][j] > 0 ? 1 : 0);
        }
    }
    return auc_of(group_scores(items));
}

Image plot_roc_curve(const RocCurve& curve, int size) {
    SGA_CHECK_ARGUMENT(size >= 32, "plot size must be at least 32, got " + std::to_string(size));
    SGA_CHECK_ARGUMENT(!curve.fpr.empty() && curve.fpr.size() == curve.tpr.size(),
                       "ROC curve needs matching, non-empty fpr and tpr");
    for (std::size_t i = 0; i < curve.fpr.size(); ++i)
        SGA_CHECK_ARGUMENT(curve.fpr[i] >= 0.0 && curve.fpr[i] <= 1.0 && curve.tpr[i] >= 0.0 &&
                               curve.tpr[i] <= 1.0,
                           "ROC point " + std::to_string(i) + " lies outside [0, 1]");
    Canvas canvas(size, size);
    const PlotArea area = draw_axes(canvas, size, size, true);
    const double w = area.right - area.left;
    const double h = area.bottom - area.top;
    canvas.line(area.left, area.bottom, area.right, area.top, grey, 1, 3);
    const int thickness = std::max(2, size / 200);
    for (std::size_t i = 0; i < curve.fpr.size(); ++i) {
        const double x = area.left + curve.fpr[i] * w;
        const double y = area.bottom - curve.tpr[i] * h;
        const std::size_t previous = i == 0 ? 0 : i - 1;
        canvas.line(area.left + curve.fpr[previous] * w, area.bottom - curve.tpr[previous] * h, x, y,
                    blue, thickness);
    }
    return canvas.take();
}

Image plot_score_histogram(std::span<const float> normal_scores,
                           std::span<const float> anomalous_scores, int width, int height) {
    SGA_CHECK_ARGUMENT(width >= 32 && height >= 32,
                       "plot size must be at least 32 x 32, got " + std::to_string(width) + " x " +
                           std::to_string(height));
    SGA_CHECK_ARGUMENT(!normal_scores.empty() || !anomalous_scores.empty(),
                       "histogram needs at least one score");
    float low = std::numeric_limits<float>::infinity();
    float high = -std::numeric_limits<float>::infinity();
    for (std::span<const float> set : {normal_scores, anomalous_scores}) {
        for (float s : set) {
            SGA_CHECK_ARGUMENT(std::isfinite(s), "histogram scores must be finite");
            low = std::min(low, s);
            high = std::max(high, s);
        }
    }
    double range_low = low, range_high = high;
    if (range_high <= range_low) {  // one distinct value: centre it
        range_low -= 0.5;
        range_high += 0.5;
    }

    Canvas canvas(width, height);
    const PlotArea area = draw_axes(canvas, width, height, false);
    const int plot_width = area.right - area.left;
    const int bins = std::clamp(plot_width / 4, 1, 50);
    auto count = [&](std::span<const float> set) {
        std::vector<std::size_t> counts(bins, 0);
        for (float s : set) {
            const int bin = static_cast<int>((s - range_low) / (range_high - range_low) * bins);
            ++counts[std::clamp(bin, 0, bins - 1)];
        }
        return counts;
    };
    const std::vector<std::size_t> normal = count(normal_scores);
    const std::vector<std::size_t> anomalous = count(anomalous_scores);
    const std::size_t fullest = std::max(*std::max_element(normal.begin(), normal.end()),
                                         *std::max_element(anomalous.begin(), anomalous.end()));
    const double plot_height = area.bottom - 1 - area.top;
    for (const auto& [counts, colour] : {std::pair{&normal, blue}, std::pair{&anomalous, red}}) {
        for (int b = 0; b < bins; ++b) {
            if ((*counts)[b] == 0) continue;
            const int x0 = area.left + 1 + plot_width * b / bins;
            const int x1 = area.left + plot_width * (b + 1) / bins - 1;
            const int top = area.bottom - 1 -
                            static_cast<int>(std::lround(plot_height * (*counts)[b] / fullest));
            canvas.fill(x0, top, std::max(x0, x1), area.bottom - 1, colour, 0.55f);
        }
    }
    return canvas.take();
}

double threshold_from_normal_scores(std::span<const float> normal_scores, double level) {
    SGA_CHECK_ARGUMENT(!normal_scores.empty(), "the threshold needs at least one normal score");
    SGA_CHECK_ARGUMENT(level > 0 && level <= 1,
                       "the threshold quantile must lie in (0, 1], found " + std::to_string(level));
    std::vector<double> sorted(normal_scores.begin(), normal_scores.end());
    for (double v : sorted) SGA_CHECK_ARGUMENT(std::isfinite(v), "a normal score is not finite");
    std::sort(sorted.begin(), sorted.end());
    const std::size_t n = sorted.size();
    if (sorted.front() == sorted.back())
        return std::nextafter(static_cast<float>(sorted.back()), std::numeric_limits<float>::infinity());
    if (level >= 1) return sorted.back();

    const double position = level * static_cast<double>(n - 1);
    const std::size_t below = static_cast<std::size_t>(std::floor(position));
    const std::size_t above = std::min(below + 1, n - 1);
    const double empirical = sorted[below] + (position - static_cast<double>(below)) * (sorted[above] - sorted[below]);
    const double expected_above = static_cast<double>(n) * (1 - level);
    constexpr double reliable_exceedances = 10;
    const double weight = std::min(1.0, expected_above / reliable_exceedances);
    // Peaks over threshold on the top quarter of the scores: with k = tail of them over u, the
    // next value below them, and an exponential tail, P(value > u + x) = (k / n) exp(-x / mean
    // excess), so the quantile is u + mean excess * ln(k / m).
    const std::size_t tail = std::max<std::size_t>(3, static_cast<std::size_t>(std::lround(0.25 * static_cast<double>(n))));
    if (weight >= 1 || n < 8 || static_cast<double>(tail) <= expected_above) return empirical;
    const auto tail_quantile = [&](auto transform) {
        const double u = transform(sorted[n - tail - 1]);
        double mean_excess = 0;
        for (std::size_t i = n - tail; i < n; ++i) mean_excess += transform(sorted[i]) - u;
        mean_excess /= static_cast<double>(tail);
        return u + mean_excess * std::log(static_cast<double>(tail) / expected_above);
    };
    // An exponential tail on the scores suits gamma-like (light) tails and underestimates
    // heavy ones; on their logarithms (a Pareto tail) the reverse. Reconstruction errors lie
    // between (MNIST's are heavier than exponential): take the geometric mean of the two.
    const double exponential = tail_quantile([](double v) { return v; });
    double extrapolated = exponential;
    if (sorted.front() > 0) {
        const double pareto = std::exp(tail_quantile([](double v) { return std::log(v); }));
        extrapolated = std::sqrt(exponential * pareto);
    }
    return weight * empirical + (1 - weight) * extrapolated;
}

}  // namespace sga
