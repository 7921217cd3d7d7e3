#include "fit_report.hpp"

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <string>

namespace cli {
namespace {

// Four significant digits: enough to compare, never hundreds of digits (a huge t) or a
// tiny threshold shown as 0.000000.
std::string number(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.4g", value);
    return text;
}

}  // namespace

void print_fit_report(const sga::FitReport& r, bool recipe_has_orientation_check) {
    if (const sga::OrientationFinding& o = r.orientation; o.checked)
        std::cout << "orientation check: the rotation head tells the turns of " << o.images
                  << " held-out images apart with t = " << number(o.t) << " (0 by chance, needed " << number(o.required_t)
                  << "): "
                  << (o.oriented ? "the images have an upright; the rotation techniques stay"
                                 : "no upright found; trained again without the rotation techniques")
                  << "\n";
    std::cout << "trained " << r.epochs_completed << " epoch(s)" << (r.cancelled ? " (cancelled)" : "") << " on "
              << r.training_images << " images in " << std::fixed << std::setprecision(1) << r.seconds << " s; "
              << r.discriminator_reinits << " discriminator re-initialisation(s)\n";
    std::cout.unsetf(std::ios::floatfield);
    const sga::ScoreStatistics& v = r.validation_scores;
    const bool in_sample = r.validation_images == 0;
    std::cout << (in_sample ? "in-sample scores of the training images (" : "held-out normal scores (") << v.count
              << " images): min " << number(v.min) << ", mean " << number(v.mean) << ", max " << number(v.max) << "\n"
              << "threshold " << number(r.threshold) << (in_sample ? " (from the training images' own scores)" : "") << "\n";
    for (const std::string& warning : r.warnings) std::cerr << "warning: " << warning << "\n";
    if (in_sample)
        std::cerr << "warning: --validation-fraction 0 held out no image, so the statistics and the threshold come "
                     "from the images the model was trained on; their scores are lower than unseen normal images', "
                     "and the threshold will flag more normal images than intended. Hold images out, or run "
                     "`skipganomaly calibrate` on normal images the model has not seen.\n";
    if (in_sample && !r.orientation.checked && recipe_has_orientation_check)
        std::cerr << "warning: with no image held out, the recipe's orientation check did not run: the rotation "
                     "techniques stay even if the images have no upright (docs/getting-started.md, \"Which recipe\")\n";
}

}  // namespace cli
