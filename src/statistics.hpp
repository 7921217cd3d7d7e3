// Internal: the summaries a Detector keeps of normal images' scores and pixel errors
// (ScoreStatistics, PixelStatistics in detector.hpp). Implemented in metrics.cpp.
//
// Not public: they fix the Detector's own choices (which quantiles a ScoreStatistics lists,
// how a float threshold quantile is named), and users estimate a threshold with
// threshold_from_normal_scores (metrics.hpp), whose empirical quantile is taken in double,
// where quantile() below interpolates between floats.
#pragma once

#include <vector>

#include "skipganomaly/detector.hpp"

namespace sga {

// The `level` quantile of `values` (any order), interpolated linearly between order
// statistics as numpy's default does; the difference of the two floats is taken in float.
// `values` must not be empty.
double quantile(std::vector<float> values, double level);

// The double a reader means by a float level: 0.99f is 0.9900000095... as a double, which
// must not be listed beside 0.99. The float's shortest decimal form, read as a double.
double decimal_level(float level);

// count, min, max, mean, population std and the quantiles 0.5, 0.9, 0.95, 0.99 of `scores`,
// plus decimal_level(threshold_quantile) when it is not one of those (levels ascending).
// Empty scores: count 0 and nothing else.
ScoreStatistics describe(const std::vector<float>& scores, float threshold_quantile);

// The pixel threshold: the `level` quantile of every pixel error of normal images pooled.
// There are thousands of pixels per image, so the empirical quantile is stable even on 20
// images. Empty errors: count 0, threshold 0.
PixelStatistics describe_pixels(std::vector<float> errors, double level);

}  // namespace sga
