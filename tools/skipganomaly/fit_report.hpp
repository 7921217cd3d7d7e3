// What fit and demo print after training.
#pragma once

#include "skipganomaly/detector.hpp"

namespace cli {

// The orientation finding, epochs, time and the held-out (or in-sample) score statistics and
// threshold to stdout; warnings about in-sample statistics to stderr.
// `recipe_has_orientation_check`: the recipe fit() was asked for has one (recipe.hpp).
void print_fit_report(const sga::FitReport& r, bool recipe_has_orientation_check);

}  // namespace cli
