// Detection and localisation metrics: scikit-learn's definitions for image scores, MVTec AD's
// for anomaly maps. Their plots are in plots.hpp, which this header includes.
// Scores: higher = more anomalous. Labels: 0 normal, 1 anomalous.
//
// Every metric throws InvalidArgument when the inputs are empty, of different lengths, hold a
// label other than 0/1 or only one class, or a NaN score. Infinite scores are ordered as usual.
#pragma once

#include "skipganomaly/config.hpp"
#include <cstdint>
#include <cstddef>
#include <span>
#include <string>
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
// n = 40 (3.2%), 1.6% at n = 100 (2.0%). eval/simulate_threshold_rule.py and
// eval/measure_threshold_fpr.py measure these; tests/test_metrics.cpp ("the default
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

// ---- localisation: anomaly maps against ground-truth masks ------------------------------------
// maps[i] holds image i's per-pixel anomaly scores and masks[i] its ground truth (> 0 =
// anomalous pixel), both row-major heights[i] x widths[i]; images may differ in size, and
// normal images (all-zero masks) take part. Every function here throws InvalidArgument for no
// maps, maps and masks (and widths and heights, where taken) of different counts, a map whose
// length differs from its mask's (or from width x height), a NaN score, or pixels of one class
// only (no anomalous pixel, or no normal one).

// Pixel-level ROC AUC: every pixel of every map pooled.
SKIPGANOMALY_API double pixel_roc_auc(const std::vector<std::vector<float>>& maps,
                     const std::vector<std::vector<std::uint8_t>>& masks);

// Pixel-level F1-max: f1_max over every pixel of every map pooled, with f1_max's conventions
// (score >= threshold is anomalous; among equal F1 the lowest threshold).
SKIPGANOMALY_API F1Max pixel_f1_max(const std::vector<std::vector<float>>& maps,
                                    const std::vector<std::vector<std::uint8_t>>& masks);

// The per-region overlap (PRO) curve of MVTec AD (Bergmann et al., IJCV 2021), exact: one
// point per distinct score, thresholds descending, score >= threshold predicted anomalous.
// The ground-truth regions are the 8-connected components of each mask (a region never spans
// two images). At a threshold, a region's overlap is |region and predicted| / |region|, pro is
// the mean overlap over every region of every image, and fpr the share of predicted pixels
// among the pixels outside every region (normal images included). The first point is (0, 0)
// at threshold +infinity, the last (1, 1) at the lowest score.
struct ProCurve {
    std::vector<double> fpr;
    std::vector<double> pro;
    std::vector<float> thresholds;
};
SKIPGANOMALY_API ProCurve pro_curve(const std::vector<std::vector<float>>& maps,
                                    const std::vector<std::vector<std::uint8_t>>& masks,
                                    std::span<const int> widths, std::span<const int> heights);

// Area under the PRO curve from fpr 0 to max_fpr (MVTec AD uses 0.3), divided by max_fpr so
// that a perfect map scores 1: the trapezoid rule between the curve's points, the curve
// interpolated linearly at exactly max_fpr. Exact, every distinct score being a threshold: it
// equals MVTec AD's evaluation code (pro_curve_util.compute_pro, generic_util.trapezoid),
// whose only difference is FPRs rounded to float32 (below 1e-6 here;
// tests/fixtures/make_metric_fixtures.py compares both). Throws InvalidArgument also for max_fpr
// outside (0, 1].
SKIPGANOMALY_API double aupro(const std::vector<std::vector<float>>& maps,
                              const std::vector<std::vector<std::uint8_t>>& masks,
                              std::span<const int> widths, std::span<const int> heights,
                              double max_fpr = 0.3);

// ---- image AUROC per defect type --------------------------------------------------------

// The image AUROC of each defect type's anomalous images against every normal image.
struct DefectTypeRocAuc {
    std::string defect_type;
    std::size_t anomalous = 0;  // images of this type
    double roc_auc = 0;
};

// defect_types[i] names image i's defect (MVTec AD: the folder test/<defect>/ it lies in);
// it is ignored for normal images (label 0). One entry per defect type of the anomalous
// images, sorted by name. Throws InvalidArgument as roc_auc does, and when defect_types has
// another length than scores.
SKIPGANOMALY_API std::vector<DefectTypeRocAuc> roc_auc_per_defect_type(
    std::span<const float> scores, std::span<const int> labels, std::span<const std::string> defect_types);

}  // namespace sga

#include "skipganomaly/plots.hpp"  // plot_roc_curve and plot_score_histogram, declared there
