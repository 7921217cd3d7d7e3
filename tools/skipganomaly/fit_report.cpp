#include "fit_report.hpp"

#include <iomanip>
#include <iostream>

namespace cli {

void print_fit_report(const sga::FitReport& r, bool recipe_has_orientation_check) {
    if (const sga::OrientationFinding& o = r.orientation; o.checked)
        std::cout << std::fixed << std::setprecision(2) << "orientation check: the rotation head tells the turns of "
                  << o.images << " held-out images apart with t = " << o.t << " (0 by chance, needed " << o.required_t << "): "
                  << (o.oriented ? "the images have an upright; the rotation techniques stay"
                                 : "no upright found; trained again without the rotation techniques")
                  << "\n";
    std::cout << "trained " << r.epochs_completed << " epoch(s)" << (r.cancelled ? " (cancelled)" : "") << " on "
              << r.training_images << " images in " << std::fixed << std::setprecision(1) << r.seconds << " s; "
              << r.discriminator_reinits << " discriminator re-initialisation(s)\n";
    const sga::ScoreStatistics& v = r.validation_scores;
    const bool in_sample = r.validation_images == 0;
    std::cout << std::setprecision(6)
              << (in_sample ? "in-sample scores of the training images (" : "held-out normal scores (") << v.count
              << " images): min " << v.min << ", mean " << v.mean << ", max " << v.max << "\n"
              << "threshold " << r.threshold << (in_sample ? " (from the training images' own scores)" : "") << "\n";
    std::cout.unsetf(std::ios::floatfield);
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
