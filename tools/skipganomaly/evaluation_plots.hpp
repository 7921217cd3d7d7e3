// The pictures of an evaluation: eval --plots and demo.
#pragma once

#include <string>
#include <vector>

#include "evaluation.hpp"

namespace cli {

// roc.png and histogram.png in dir; returns their paths.
std::vector<std::string> write_plots(const std::string& dir, const Evaluation& e);

// dir/cases/: one strip (image | ground truth | anomaly map | predicted mask) for each of the
// 4 highest-scoring normal images, the 4 lowest-scoring anomalous images and the 4
// highest-scoring anomalous ones, scored again with their maps. Returns the paths.
// `samples`: those `e` was computed from, in the same order.
std::vector<std::string> write_case_strips(const std::string& dir, const Evaluation& e, const sga::Detector& detector,
                                           const std::vector<sga::LabeledImage>& samples);

}  // namespace cli
