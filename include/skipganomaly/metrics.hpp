// Detection metrics with scikit-learn's definitions, and dependency-free plots of them.
// Scores: higher = more anomalous. Labels: 0 normal, 1 anomalous.
//
// Every metric throws InvalidArgument when the inputs are empty, of different lengths, hold a
// label other than 0/1 or only one class, or a NaN score. Infinite scores are ordered as usual.
#pragma once

#include "skipganomaly/config.hpp"
#include <cstdint>
#include <span>
#include <vector>

#include "skipganomaly/image.hpp"

namespace sga {

// Area under the ROC curve, exact: the Mann-Whitney statistic, the fraction of (anomalous,
// normal) pairs ranked correctly with half credit for tied scores, which is the trapezoid
// over tied groups (sklearn.metrics.roc_auc_score).
SKIPGANOMALY_API double roc_auc(std::span<const float> scores, std::span<const int> labels);

// Average precision, sklearn.metrics.average_precision_score: sum over the distinct score
// thresholds t (descending) of (R(t) - R(previous t)) * P(t), no interpolation.
SKIPGANOMALY_API double average_precision(std::span<const float> scores, std::span<const int> labels);

// The best F1 over all thresholds; score >= threshold counts as anomalous. The threshold is
// one of the scores; among thresholds of equal F1 (compared exactly) the lowest is returned,
// as anomalib's F1Max (argmax over precision_recall_curve) does.
struct F1Max {
    double f1 = 0.0;
    float threshold = 0.0f;
};
SKIPGANOMALY_API F1Max f1_max(std::span<const float> scores, std::span<const int> labels);

// The default threshold rule: an estimate of the `level` quantile (0 < level <= 1) of the
// distribution that `normal_scores` (held-out normal images, not trained on) were drawn
// from, sensible from 20 to 20,000 images. With n scores, m = n (1 - level) is the number of
// scores expected above that quantile.
//   - m >= 10 (n >= 1000 at level 0.99): the empirical quantile (numpy's linear
//     interpolation), which assumes nothing about the distribution.
//   - m < 10: the plain quantile is a noisy order statistic (at n = 40 and level 0.99 it is
//     0.61 x the largest score + 0.39 x the next: one outlier decides it). Instead, peaks over
//     threshold on the top quarter of the scores (k of them, over u, the next score below):
//     an exponential tail gives u + mean excess x ln(k / m); the same on the logarithms of
//     the scores gives a Pareto (heavy) tail's quantile. The first suits gamma-like tails and
//     underestimates heavy ones, the second the reverse; reconstruction errors lie between
//     (MNIST's are heavier than exponential), so the rule takes their geometric mean, blended
//     with the empirical quantile with weight m / 10 so that it is continuous in n. A single
//     outlier moves it far less than the plain quantile.
// Mean false-positive rate on fresh normal scores at level 0.99 (plain quantile in brackets):
// synthetic log-normal, gamma, chi-square and half-normal scores 1.4-2.1% at n = 20 (5.0-5.4%),
// 0.9-1.5% at n = 40 (2.9-3.1%), 0.6-1.1% at n = 100 (1.9-2.0%), 0.6-1.0% at n = 300 (1.3%),
// 1% from n = 1000 on; MNIST digit 1 (225 real test scores) 2.6% at n = 20 (5.2%), 2.0% at
// n = 40 (3.2%), 1.6% at n = 100 (2.0%). scripts/simulate_threshold_rule.py and
// scripts/measure_threshold_fpr.py measure these; tests/test_metrics.cpp ("the default
// threshold rule") checks them on three distributions.
// level == 1 returns the largest score; fewer than 8 scores, the empirical quantile. When
// the scores do not vary, returns the smallest float above them, so none is flagged. Scores
// <= 0 (never produced by the detector) use the exponential tail alone.
// Throws InvalidArgument for no scores, a non-finite score, or a level outside (0, 1].
SKIPGANOMALY_API double threshold_from_normal_scores(std::span<const float> normal_scores, double level);

// ROC points for every distinct score, thresholds descending; point i counts score >=
// thresholds[i] as anomalous. The first point is (0, 0) at threshold +infinity, the last (1, 1).
// Unlike sklearn.metrics.roc_curve, collinear points are kept.
struct RocCurve {
    std::vector<double> fpr;
    std::vector<double> tpr;
    std::vector<float> thresholds;
};
SKIPGANOMALY_API RocCurve roc_curve(std::span<const float> scores, std::span<const int> labels);

// Pixel-level ROC AUC: every pixel of every map pooled, mask value > 0 = anomalous pixel.
// maps[i] and masks[i] must have the same length (the same resolution).
SKIPGANOMALY_API double pixel_roc_auc(const std::vector<std::vector<float>>& maps,
                     const std::vector<std::vector<std::uint8_t>>& masks);

// A size x size RGB plot of a ROC curve: white background, black axes, the chance diagonal in
// grey, the curve in blue. No text. Throws InvalidArgument for size < 32 or a malformed curve.
SKIPGANOMALY_API Image plot_roc_curve(const RocCurve& curve, int size);

// A width x height RGB histogram of two score sets over their common range: normal scores in
// blue, anomalous in red, blended where they overlap; bars are scaled to the fullest bin of
// either set. No text. Either set may be empty, not both. Throws InvalidArgument for
// width or height < 32, no scores, or a non-finite score.
SKIPGANOMALY_API Image plot_score_histogram(std::span<const float> normal_scores,
                           std::span<const float> anomalous_scores, int width, int height);

}  // namespace sga
