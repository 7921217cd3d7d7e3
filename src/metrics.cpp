// Ranking metrics computed exactly from grouped counts; the PRO curve from connected regions.
#include "skipganomaly/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "skipganomaly/error.hpp"
#include "statistics.hpp"

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

F1Max f1_max_of(const Grouped& grouped) {
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

using Maps = std::vector<std::vector<float>>;
using Masks = std::vector<std::vector<std::uint8_t>>;

// Checks what every pixel metric needs; returns the number of pixels.
std::size_t check_maps(const Maps& maps, const Masks& masks) {
    SGA_CHECK_ARGUMENT(!maps.empty(), "pixel metrics need at least one map");
    SGA_CHECK_ARGUMENT(maps.size() == masks.size(),
                       "maps and masks differ in number: " + std::to_string(maps.size()) +
                           " maps, " + std::to_string(masks.size()) + " masks");
    std::size_t total = 0;
    for (std::size_t i = 0; i < maps.size(); ++i) {
        SGA_CHECK_ARGUMENT(maps[i].size() == masks[i].size(),
                           "map " + std::to_string(i) + " has " + std::to_string(maps[i].size()) +
                               " values, its mask " + std::to_string(masks[i].size()));
        for (std::size_t j = 0; j < maps[i].size(); ++j)
            if (std::isnan(maps[i][j]))
                throw InvalidArgument("map " + std::to_string(i) + " pixel " + std::to_string(j) +
                                      " is NaN");
        total += maps[i].size();
    }
    SGA_CHECK_ARGUMENT(total > 0, "pixel metrics need at least one pixel");
    return total;
}

// Every pixel of every map, grouped by score; throws when one class is missing.
Grouped group_pixels(const Maps& maps, const Masks& masks) {
    std::vector<ScoredLabel> items;
    items.reserve(check_maps(maps, masks));
    for (std::size_t i = 0; i < maps.size(); ++i)
        for (std::size_t j = 0; j < maps[i].size(); ++j)
            items.emplace_back(maps[i][j], masks[i][j] > 0 ? 1 : 0);
    return group_scores(items);
}

// Labels the 8-connected components of mask > 0 (row-major, height x width), numbering them on
// from sizes.size() in raster order of their first pixel: region[p] is the component's number,
// -1 outside every component, and each component's size is appended to sizes.
void label_regions(std::span<const std::uint8_t> mask, int width, int height,
                   std::span<std::int32_t> region, std::vector<std::uint64_t>& sizes) {
    std::fill(region.begin(), region.end(), -1);
    std::vector<std::size_t> stack;
    for (std::size_t start = 0; start < mask.size(); ++start) {
        if (mask[start] == 0 || region[start] >= 0) continue;
        const auto label = static_cast<std::int32_t>(sizes.size());
        std::uint64_t size = 0;
        region[start] = label;
        stack.push_back(start);
        while (!stack.empty()) {
            const std::size_t p = stack.back();
            stack.pop_back();
            ++size;
            const int x = static_cast<int>(p % static_cast<std::size_t>(width));
            const int y = static_cast<int>(p / static_cast<std::size_t>(width));
            for (int dy = -1; dy <= 1; ++dy)
                for (int dx = -1; dx <= 1; ++dx) {
                    const int nx = x + dx, ny = y + dy;
                    if (nx < 0 || ny < 0 || nx >= width || ny >= height) continue;
                    const std::size_t q = static_cast<std::size_t>(ny) * static_cast<std::size_t>(width) +
                                          static_cast<std::size_t>(nx);
                    if (mask[q] == 0 || region[q] >= 0) continue;
                    region[q] = label;
                    stack.push_back(q);
                }
        }
        sizes.push_back(size);
    }
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
    return f1_max_of(validate_and_group(scores, labels));
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
    return auc_of(group_pixels(maps, masks));
}

F1Max pixel_f1_max(const std::vector<std::vector<float>>& maps,
                   const std::vector<std::vector<std::uint8_t>>& masks) {
    return f1_max_of(group_pixels(maps, masks));
}

ProCurve pro_curve(const std::vector<std::vector<float>>& maps,
                   const std::vector<std::vector<std::uint8_t>>& masks, std::span<const int> widths,
                   std::span<const int> heights) {
    const std::size_t total = check_maps(maps, masks);
    SGA_CHECK_ARGUMENT(widths.size() == maps.size() && heights.size() == maps.size(),
                       "the PRO curve needs a width and a height per map: " + std::to_string(maps.size()) +
                           " maps, " + std::to_string(widths.size()) + " widths, " +
                           std::to_string(heights.size()) + " heights");
    for (std::size_t i = 0; i < maps.size(); ++i)
        SGA_CHECK_ARGUMENT(widths[i] > 0 && heights[i] > 0 &&
                               static_cast<std::size_t>(widths[i]) * static_cast<std::size_t>(heights[i]) ==
                                   maps[i].size(),
                           "map " + std::to_string(i) + ": expected width x height = " + std::to_string(widths[i]) +
                               " x " + std::to_string(heights[i]) + " values, found " +
                               std::to_string(maps[i].size()));

    // (score, region of the pixel or -1 for a normal pixel), every pixel of every image.
    std::vector<std::pair<float, std::int32_t>> pixels;
    pixels.reserve(total);
    std::vector<std::uint64_t> region_sizes;
    std::vector<std::int32_t> region;
    for (std::size_t i = 0; i < maps.size(); ++i) {
        region.resize(maps[i].size());
        SGA_CHECK_ARGUMENT(region_sizes.size() < static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()) / 2,
                           "too many ground-truth regions");
        label_regions(masks[i], widths[i], heights[i], region, region_sizes);
        for (std::size_t j = 0; j < maps[i].size(); ++j) pixels.emplace_back(maps[i][j], region[j]);
    }
    const std::size_t regions = region_sizes.size();
    std::size_t normal_pixels = 0;
    for (const auto& p : pixels) normal_pixels += p.second < 0 ? 1 : 0;
    if (regions == 0 || normal_pixels == 0)
        throw InvalidArgument("the PRO curve needs anomalous and normal pixels, found " +
                              std::to_string(total - normal_pixels) + " anomalous and " +
                              std::to_string(normal_pixels) + " normal");

    std::sort(pixels.begin(), pixels.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    ProCurve curve;
    curve.fpr.push_back(0.0);
    curve.pro.push_back(0.0);
    curve.thresholds.push_back(std::numeric_limits<float>::infinity());
    // Sum over regions of the overlap, grown by 1 / |region| per predicted pixel; the false
    // positives are counted exactly. Only the last pixel of a tied group makes a point.
    double overlap_sum = 0.0;
    std::uint64_t false_positives = 0;
    for (std::size_t k = 0; k < pixels.size(); ++k) {
        const std::int32_t r = pixels[k].second;
        if (r < 0) ++false_positives;
        else overlap_sum += 1.0 / static_cast<double>(region_sizes[static_cast<std::size_t>(r)]);
        if (k + 1 < pixels.size() && pixels[k + 1].first == pixels[k].first) continue;
        curve.fpr.push_back(static_cast<double>(false_positives) / static_cast<double>(normal_pixels));
        curve.pro.push_back(std::min(1.0, overlap_sum / static_cast<double>(regions)));
        curve.thresholds.push_back(pixels[k].first);
    }
    curve.pro.back() = 1.0;  // every pixel predicted: every region covered, whatever the rounding
    return curve;
}

double aupro(const std::vector<std::vector<float>>& maps, const std::vector<std::vector<std::uint8_t>>& masks,
             std::span<const int> widths, std::span<const int> heights, double max_fpr) {
    SGA_CHECK_ARGUMENT(max_fpr > 0 && max_fpr <= 1,
                       "AUPRO's integration limit must lie in (0, 1], found " + std::to_string(max_fpr));
    const ProCurve curve = pro_curve(maps, masks, widths, heights);
    const std::vector<double>& x = curve.fpr;
    const std::vector<double>& y = curve.pro;
    double area = 0.0;
    for (std::size_t i = 1; i < x.size(); ++i) {
        if (x[i] <= max_fpr) {
            area += 0.5 * (y[i] + y[i - 1]) * (x[i] - x[i - 1]);
            continue;
        }
        // The segment that crosses max_fpr: the part up to it, y interpolated there. fpr is
        // non-decreasing, so x[i - 1] <= max_fpr < x[i].
        const double at_limit = y[i - 1] + (y[i] - y[i - 1]) * (max_fpr - x[i - 1]) / (x[i] - x[i - 1]);
        area += 0.5 * (at_limit + y[i - 1]) * (max_fpr - x[i - 1]);
        break;
    }
    return area / max_fpr;
}

std::vector<DefectTypeRocAuc> roc_auc_per_defect_type(std::span<const float> scores, std::span<const int> labels,
                                                      std::span<const std::string> defect_types) {
    validate_and_group(scores, labels);  // lengths, labels, NaN, both classes
    SGA_CHECK_ARGUMENT(defect_types.size() == scores.size(),
                       "scores and defect types differ in length: " + std::to_string(scores.size()) +
                           " scores, " + std::to_string(defect_types.size()) + " defect types");
    std::map<std::string, std::vector<std::size_t>> by_type;
    std::vector<float> type_scores;
    std::vector<int> type_labels;
    for (std::size_t i = 0; i < scores.size(); ++i) {
        if (labels[i] == 1) by_type[defect_types[i]].push_back(i);
        else {
            type_scores.push_back(scores[i]);
            type_labels.push_back(0);
        }
    }
    const std::size_t normal = type_scores.size();
    std::vector<DefectTypeRocAuc> result;
    for (const auto& [type, members] : by_type) {
        type_scores.resize(normal);
        type_labels.resize(normal);
        for (std::size_t i : members) {
            type_scores.push_back(scores[i]);
            type_labels.push_back(1);
        }
        result.push_back({type, members.size(), roc_auc(type_scores, type_labels)});
    }
    return result;
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

// ---- the Detector's statistics of normal images (statistics.hpp) ------------------------------

double quantile(std::vector<float> values, double level) {
    std::sort(values.begin(), values.end());
    const double position = level * static_cast<double>(values.size() - 1);
    const std::size_t below = static_cast<std::size_t>(std::floor(position));
    const std::size_t above = std::min(below + 1, values.size() - 1);
    const double fraction = position - static_cast<double>(below);
    return values[below] + fraction * (values[above] - values[below]);
}

double decimal_level(float level) {
    char text[32];
    const auto written = std::to_chars(text, text + sizeof text, level);
    double value = level;
    std::from_chars(text, written.ptr, value);
    return value;
}

ScoreStatistics describe(const std::vector<float>& scores, float threshold_quantile) {
    ScoreStatistics s;
    s.count = scores.size();
    if (scores.empty()) return s;
    s.min = *std::min_element(scores.begin(), scores.end());
    s.max = *std::max_element(scores.begin(), scores.end());
    double sum = 0, sum_squares = 0;
    for (float v : scores) sum += v;
    s.mean = sum / static_cast<double>(scores.size());
    for (float v : scores) sum_squares += (v - s.mean) * (v - s.mean);
    s.std = std::sqrt(sum_squares / static_cast<double>(scores.size()));
    s.quantile_levels = {0.5, 0.9, 0.95, 0.99};
    const double level = decimal_level(threshold_quantile);
    if (std::find(s.quantile_levels.begin(), s.quantile_levels.end(), level) == s.quantile_levels.end())
        s.quantile_levels.push_back(level);
    std::sort(s.quantile_levels.begin(), s.quantile_levels.end());
    for (double level : s.quantile_levels) s.quantile_values.push_back(quantile(scores, level));
    return s;
}

PixelStatistics describe_pixels(std::vector<float> errors, double level) {
    PixelStatistics p;
    p.threshold_quantile = level;
    p.count = errors.size();
    if (errors.empty()) return p;
    p.min = *std::min_element(errors.begin(), errors.end());
    p.max = *std::max_element(errors.begin(), errors.end());
    p.threshold = quantile(std::move(errors), level);
    return p;
}

}  // namespace sga
