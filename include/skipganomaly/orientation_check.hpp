// Orientation check: does the training data have an "upright"?
//
// The rotation restoration and the rotation head (restoration.hpp, rotation_prediction.hpp)
// assume that normal images have an orientation: that a digit or a photograph turned by a
// quarter turn looks different from the upright one. On data without one (textures, aerial
// or microscope images, parts photographed from above at any angle) the generator is asked to
// restore an upright that does not exist, and detection falls below the official recipe's
// (docs/quality.md, "Data without an orientation": MNIST turned at random, 0.53 against 0.68).
//
// The check needs no label. At the end of the first epoch that brings training to
// `after_steps` steps (or a third of the fit's steps, if fewer), the rotation head has had a
// chance to learn which quarter turn each training input was given. It then sees the four
// quarter turns of up to `images` held-out normal images. For each image, the margin is the
// head's logit for the turn each view was given, less the mean of its three other logits,
// averaged over the four views (SkipGanomaly::rotation_margins). Averaged over the views,
// a head's constant preferences cancel, so on data without an orientation, where a turned
// image is distributed as an upright one and nothing tells the turns apart, the expected
// margin is exactly 0. The data counts as oriented when the mean margin is above 0 by `z`
// standard errors (a one-sided t statistic over the images; the margins use the head's
// confidence, not only its argmax, and told weakly oriented classes such as CIFAR-10's birds
// apart where its accuracy did not; docs/quality.md). Otherwise fit() trains again from the
// start with the recipe's Recipe::without_orientation(), which has neither technique
// (recipe.hpp).
// Held-out images only: the head sees every training image at a random turn each epoch and
// can learn, image by image, how each one stands, which says nothing about the class. With
// no image held out (validation_fraction 0) there is nothing to ask, and the recipe stays as
// it is, unchecked (OrientationFinding::checked false). With fewer than `min_images` held
// out, the same: a t statistic over a handful of margins is decided by one image (over one,
// it is +-infinity), so fit() skips the check, keeps the recipe and says so in
// FitReport::warnings.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "skipganomaly/error.hpp"

namespace sga {

// What the check saw (FitReport::orientation, and the model file's metadata).
struct OrientationFinding {
    bool checked = false;      // false: none in the recipe, fewer than min_images held out, or fit() resumed past it
    std::size_t images = 0;    // held-out normal images asked about (4 turns each)
    double mean_margin = 0;    // of the per-image margins (see above)
    double margin_std = 0;     // their sample standard deviation
    double t = 0;              // mean_margin / (margin_std / sqrt(images))
    double required_t = 0;     // OrientationCheck::z when judged
    bool oriented = true;      // false: fit() fell back to Recipe::without_orientation()
};

struct OrientationCheck {
    bool enabled = false;
    int after_steps = 60;  // the head is asked at the end of the epoch that reaches this many steps
    int images = 1024;     // at most this many held-out normal images
    double z = 2.5;        // standard errors above 0 the mean margin needs to count as oriented
    int min_images = 8;    // with fewer held out, the check is skipped (the recipe stays)

    // The step whose epoch ends with the check, in a fit of `total_steps`: after_steps, or a
    // third of the fit when that is fewer (small data sets have few steps an epoch, and a
    // check near the end would leave a fallback to train almost twice).
    std::size_t check_at_step(std::size_t total_steps) const {
        return std::max<std::size_t>(1, std::min(static_cast<std::size_t>(after_steps), (total_steps + 2) / 3));
    }

    void validate() const {
        SGA_CHECK_ARGUMENT(after_steps >= 1, "orientation_check.after_steps must be at least 1, found " +
                                                 std::to_string(after_steps));
        SGA_CHECK_ARGUMENT(images >= 1, "orientation_check.images must be at least 1, found " + std::to_string(images));
        SGA_CHECK_ARGUMENT(min_images >= 2 && min_images <= images,
                           "orientation_check.min_images must lie in [2, images = " + std::to_string(images) +
                               "], found " + std::to_string(min_images));
        SGA_CHECK_ARGUMENT(z >= 0 && std::isfinite(z), "orientation_check.z must be finite and >= 0, found " + std::to_string(z));
    }

    // The finding for the per-image margins of the held-out images asked.
    OrientationFinding judge(const std::vector<double>& margins) const {
        SGA_CHECK_ARGUMENT(!margins.empty(), "an orientation check needs at least one image");
        OrientationFinding f;
        f.checked = true;
        f.images = margins.size();
        const double n = static_cast<double>(margins.size());
        for (double m : margins) {
            if (!std::isfinite(m)) throw NumericalError("the rotation head gave a non-finite logit in the orientation check");
            f.mean_margin += m / n;
        }
        double squares = 0;
        for (double m : margins) squares += (m - f.mean_margin) * (m - f.mean_margin);
        f.margin_std = margins.size() > 1 ? std::sqrt(squares / (n - 1)) : 0.0;
        // No spread (one image, or identical margins): the sign decides (a finite t, for JSON).
        const double huge = std::numeric_limits<double>::max();
        f.t = f.margin_std > 0 ? f.mean_margin / (f.margin_std / std::sqrt(n))
                               : (f.mean_margin > 0 ? huge : f.mean_margin < 0 ? -huge : 0.0);
        f.required_t = z;
        f.oriented = f.t >= z;
        return f;
    }
};

}  // namespace sga
