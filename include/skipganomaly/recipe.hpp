// Training recipes: how Skip-GANomaly is trained and which model fit() keeps.
//
// `official` is the paper's code as it is (docs/official-mapping.md). `robust` keeps the
// networks, their skip connections, the losses and the score, and adds two label-free
// techniques measured in docs/quality.md:
//   - rotation restoration (restoration.hpp): the generator is trained to restore images that
//     were rotated by a random multiple of 90 degrees (and greyed, for colour images) to the
//     upright original, and scoring averages the four rotations. Copying the input through
//     the skips no longer solves the task, so the generator learns what normal images look
//     like, and its restoration of an anomaly is wrong; detection improves with training
//     instead of decaying as the official recipe's does;
//   - recomputed batch-norm statistics: after training (after every epoch whose model is
//     looked at) the running statistics are set to the exact mean over the normal training
//     images in the scoring configuration, instead
//     of a running average over a model that was still moving ("precise BN").
// It keeps the last epoch. Two more pieces are measured and available, not on by default:
//   - SkipGating: the outermost skips closed when scoring and open only in part of training;
//   - a stopping rule that keeps the epoch whose model best separates held-out normal images
//     from CutPaste anomalies made from them (synthetic_anomalies.hpp).
// `robust_rotation` (the default) is robust plus rotation prediction (rotation_prediction.hpp):
// the discriminator also learns which quarter turn the generator's input had, and the score
// adds how badly it recognises the turns of an image. Both rotation techniques assume that the
// data has an upright; an orientation check (orientation_check.hpp) tests that after 60
// training steps, and where it fails fit() trains without_orientation() instead.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "skipganomaly/anomaly_map.hpp"
#include "skipganomaly/model_options.hpp"
#include "skipganomaly/orientation_check.hpp"
#include "skipganomaly/random.hpp"
#include "skipganomaly/restoration.hpp"
#include "skipganomaly/rotation_prediction.hpp"

namespace sga {

// Which skip connections the generator uses, counted from the outermost (the highest
// resolution). A gated skip is closed when scoring; each training batch opens it with
// `training_open_probability` (one draw per gated skip per batch).
struct SkipGating {
    int gated_skips = 0;                     // the outermost this many skips are gated; 0: none (official)
    float training_open_probability = 1.0f;  // 0: closed in training too

    SkipMask scoring_closed() const { return gated_skips > 0 ? (SkipMask{1} << gated_skips) - 1 : 0; }
    // Draws nothing when no skip is gated, so the official recipe's random stream is untouched.
    SkipMask draw_training_closed(RandomStream& random) const {
        SkipMask closed = 0;
        for (int k = 0; k < gated_skips; ++k)
            if (training_open_probability < 1.0f &&
                random_uniform_at(random.seed(), random.take(1), 0) > training_open_probability)
                closed |= SkipMask{1} << k;
        return closed;
    }
    void validate(const Architecture& arch) const {
        const int skips = arch.downsamplings() - 1;
        SGA_CHECK_ARGUMENT(gated_skips >= 0 && gated_skips <= skips,
                           "gated_skips must lie in [0, " + std::to_string(skips) + "] for image_size " +
                               std::to_string(arch.image_size) + ", found " + std::to_string(gated_skips));
        SGA_CHECK_ARGUMENT(training_open_probability >= 0 && training_open_probability <= 1,
                           "training_open_probability must lie in [0, 1], found " +
                               std::to_string(training_open_probability));
    }
};

enum class StoppingRule {
    FinalEpoch,              // keep the last epoch's model (official)
    BestSyntheticAnomalies,  // keep the epoch with the best AUROC of held-out normal vs synthetic anomalies
};

struct Recipe {
    std::string name = "official";
    SkipGating skip_gating;
    Restoration restoration;
    bool recompute_batch_norm = false;
    StoppingRule stopping = StoppingRule::FinalEpoch;
    RotationPrediction rotation_prediction;
    OrientationCheck orientation_check;
    AnomalyMapRule anomaly_map;  // how maps and image scores are made (anomaly_map.hpp)

    // The official code's recipe, bit for bit.
    static Recipe official() { return {}; }
    // See the top of this file and docs/quality.md.
    static Recipe robust() {
        Recipe r;
        r.name = "robust";
        r.restoration = {Corruption::Rotation, true, 2};
        r.recompute_batch_norm = true;
        return r;
    }
    // The default: robust, and the discriminator predicts rotations (rotation_prediction.hpp).
    static Recipe robust_rotation() {
        Recipe r = robust();
        r.name = "robust_rotation";
        r.rotation_prediction.enabled = true;
        r.orientation_check.enabled = true;
        return r;
    }
    // For local defects on parts and surfaces (docs/industrial.md): the generator is trained
    // to remove synthetic defects (Corruption::SyntheticDefects), and an image is scored by
    // the most anomalous place of its smoothed absolute-error map, not by the mean error.
    static Recipe inspection() {
        Recipe r;
        r.name = "inspection";
        r.restoration.corruption = Corruption::SyntheticDefects;
        r.recompute_batch_norm = true;
        r.anomaly_map = {MapError::Absolute, 4.0f, ImageScore::MapMaximum};
        return r;
    }
    // What fit() trains when the orientation check finds no upright: this recipe without the
    // rotation restoration, the rotation head and the check (the rest, e.g. precise BN, stays).
    Recipe without_orientation() const {
        Recipe r = *this;
        r.name = name + "_unoriented";
        r.restoration = {};
        r.rotation_prediction = {};
        r.orientation_check = {};
        return r;
    }
    // "official", "robust", "robust_rotation" or "inspection"; throws InvalidArgument naming
    // the known recipes otherwise.
    static Recipe named(const std::string& name) {
        if (name == "official") return official();
        if (name == "robust") return robust();
        if (name == "robust_rotation") return robust_rotation();
        if (name == "inspection") return inspection();
        throw InvalidArgument("unknown recipe '" + name +
                              "': expected 'official', 'robust', 'robust_rotation' or 'inspection'");
    }

    void validate(const Architecture& arch) const {
        skip_gating.validate(arch);
        restoration.validate(arch.image_size);
        anomaly_map.validate(arch.image_size);
        if (rotation_prediction.enabled) {
            rotation_prediction.validate();
            SGA_CHECK_ARGUMENT(restoration.corruption == Corruption::Rotation,
                               "rotation prediction needs the rotation restoration (its inputs are the turned images)");
            SGA_CHECK_ARGUMENT(stopping == StoppingRule::FinalEpoch,
                               "rotation prediction keeps the final epoch: its score scale is learnt once, after training");
        }
        if (orientation_check.enabled) {
            orientation_check.validate();
            SGA_CHECK_ARGUMENT(rotation_prediction.enabled, "the orientation check asks the rotation head: enable rotation prediction");
        }
    }
};

// How long fit trains a recipe when the caller sets neither the epochs nor the batch size
// (the CLI's --epochs and --batch-size). Most recipes keep DetectorOptions' 15 epochs of 64
// images. The inspection recipe counts optimisation steps instead: inspection data sets are
// small (a few hundred good images: 2-5 steps an epoch at 64), and its generator needs a few
// hundred steps to learn to remove defects (docs/industrial.md measures 440 steps of 16).
struct TrainingLength {
    int batch_size = 64;
    int epochs = 15;  // when steps == 0
    int steps = 0;    // > 0: the fewest epochs that give at least this many steps

    // The epochs for `training_images` images (those left after the hold-out); a partial
    // batch is dropped, as fit does. At least 1, at most 10,000.
    int epochs_for(std::size_t training_images) const {
        if (steps <= 0) return epochs;
        const std::size_t per_epoch = std::max<std::size_t>(1, training_images / static_cast<std::size_t>(batch_size));
        const std::size_t needed = (static_cast<std::size_t>(steps) + per_epoch - 1) / per_epoch;
        return static_cast<int>(std::clamp<std::size_t>(needed, 1, 10000));
    }
};

inline TrainingLength default_training_length(const Recipe& recipe) {
    if (recipe.restoration.corruption == Corruption::SyntheticDefects) return {16, 0, 440};
    return {};
}

inline const char* stopping_rule_name(StoppingRule rule) {
    return rule == StoppingRule::FinalEpoch ? "final_epoch" : "best_synthetic_anomalies";
}

// The recipe's name and every setting, as a JSON object: what a model file records
// (docs/model-format.md) and what evaluation results carry.
SKIPGANOMALY_API std::string recipe_to_json(const Recipe& recipe);

}  // namespace sga
