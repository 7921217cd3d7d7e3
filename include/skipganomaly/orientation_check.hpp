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
// chance to learn which quarter turn each training input was given. It is then asked for the
// turn of each of the four quarter turns of up to `images` held-out normal images. On data
// without an orientation nothing can be learnt, and it is right a quarter of the time. The
// data counts as oriented when the head does better than chance by `z` standard deviations
// of a binomial with p = 1/4 (one-sided). Otherwise fit() trains again from the start with
// the recipe's Recipe::without_orientation(), which has neither technique (recipe.hpp).
// Held-out images only: the head sees every training image at a random turn each epoch and
// can learn, image by image, how each one stands, which says nothing about the class. With
// no image held out (validation_fraction 0) there is nothing to ask, and the recipe stays as
// it is, unchecked (OrientationFinding::checked false).

#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>

#include "skipganomaly/error.hpp"

namespace sga {

// What the check saw (FitReport::orientation, and the model file's metadata).
struct OrientationFinding {
    bool checked = false;         // false: none in the recipe, no image held out, or fit() resumed past it
    std::size_t images = 0;       // normal images asked about (4 turns each)
    std::size_t predictions = 0;  // 4 x images
    std::size_t hits = 0;         // predictions naming the right turn
    double required_accuracy = 0; // the fraction of hits needed to count as oriented
    bool oriented = true;         // false: fit() fell back to Recipe::without_orientation()

    double accuracy() const { return predictions > 0 ? static_cast<double>(hits) / static_cast<double>(predictions) : 0.0; }
};

struct OrientationCheck {
    bool enabled = false;
    int after_steps = 60;  // the head is asked at the end of the epoch that reaches this many steps
    int images = 1024;     // at most this many held-out normal images
    double z = 2.5;        // standard deviations above chance (0.25) needed to count as oriented

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
        SGA_CHECK_ARGUMENT(z >= 0 && std::isfinite(z), "orientation_check.z must be finite and >= 0, found " + std::to_string(z));
    }

    // The finding for `hits` right answers out of 4 x `images` predictions.
    OrientationFinding judge(std::size_t images_asked, std::size_t hits) const {
        SGA_CHECK_ARGUMENT(images_asked > 0 && hits <= 4 * images_asked,
                           "an orientation check needs at least one image and at most 4 hits per image");
        OrientationFinding f;
        f.checked = true;
        f.images = images_asked;
        f.predictions = 4 * images_asked;
        f.hits = hits;
        const double m = static_cast<double>(f.predictions);
        f.required_accuracy = 0.25 + z * std::sqrt(0.25 * 0.75 / m);
        f.oriented = f.accuracy() >= f.required_accuracy;
        return f;
    }
};

}  // namespace sga
