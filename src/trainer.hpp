// Internal: how a Detector trains. A Trainer runs fit() on a DetectorState: the validation
// split, the epoch loop, snapshots to return to after divergence or cancellation,
// checkpoints and resuming, the recipe's stopping rule, precise batch norm, the orientation
// check and its fallback, and at the end the score statistics and thresholds of the
// held-out images.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "detector_state.hpp"
#include "scoring.hpp"

namespace sga {

// fit()'s images as samples (preprocess(): channels x size x size floats each), made on
// demand instead of all at once: holding the whole set as float32 would cost 4x the 8-bit
// images themselves (2 GB for 10,000 RGB images at 128 px). Preprocessing is deterministic,
// so each use gets the same floats. Sample i is made from image i.
//
// With tiling (tiling.hpp), sample i is a tile of image i at a random place drawn from
// (seed, round, i): each training epoch sets its own round, so it sees other tiles, and any
// use within a round gets the same floats.
class SampleSource {
public:
    // Preprocesses every image (with tiling, round 0's tile of it) once, so that a bad one is
    // refused (InvalidArgument naming its index) before training starts, and hashes the
    // samples on the way.
    SampleSource(std::span<const ImageView> images, int size, int channels, const Tiling& tiling = {},
                 std::uint64_t seed = 0);
    std::size_t size() const { return images_.size(); }
    // The count and a 64-bit FNV-1a hash of every sample's float bits, in image order: what a
    // checkpoint records, so that resuming on other images (or in another order) is refused.
    detector_file::TrainingData fingerprint() const { return {images_.size(), hash_}; }
    std::size_t sample_floats() const { return sample_; }
    const ImageView& image(std::size_t index) const { return images_[index]; }
    // With tiling: the round whose tiles copy() and gather() give from now on.
    void set_round(std::uint64_t round) { round_ = round; }
    // Sample `index` into out[0, sample_floats()).
    void copy(std::size_t index, float* out) const;
    // The samples of `indices`, in that order, side by side.
    std::vector<float> gather(const std::vector<std::size_t>& indices) const;

private:
    std::span<const ImageView> images_;
    int size_, channels_;
    std::size_t sample_;
    Tiling tiling_;
    std::uint64_t seed_ = 0, round_ = 0;
    std::uint64_t hash_ = 0;
};

// The validation split: a seeded shuffle of the image indices, the first held out. At least
// one image is held out when fraction > 0.
struct ValidationSplit {
    std::vector<std::size_t> training, validation;
    static ValidationSplit draw(std::size_t count, float fraction, RandomStream& random);
};

// One training batch on the device: the clean samples (batch_size, C, S, S) and, when the
// recipe restores, the corrupted ones the generator sees instead, with the quarter turn of
// each (the rotation head's targets).
class TrainingBatch {
public:
    // `options` (its recipe's restoration) and `ctx` must outlive the batch.
    TrainingBatch(const DetectorOptions& options, Context& ctx);
    // Samples indices[0, batch_size) of `samples`; corrupts them drawing from `random` when
    // the recipe restores.
    void load(const SampleSource& samples, const std::size_t* indices, RandomStream& random);
    TensorView clean() const { return clean_.view(); }
    // The clean batch's storage, which precise batch norm reuses for its own batches.
    Tensor& clean_tensor() { return clean_; }
    std::optional<TensorView> generator_input() const;  // unset: the generator sees clean()
    const std::vector<int>* quarter_turns() const;      // null unless the recipe restores

private:
    Context& ctx_;
    const Restoration& restoration_;
    int size_, channels_, count_;
    Tensor clean_;
    std::vector<float> staging_;
    Tensor corrupted_;
    std::vector<float> corrupted_staging_;
    std::vector<int> quarter_turns_;
};

class Trainer {
public:
    // Trains `state`'s model, scoring it with `scorer` (the Detector's) where training needs
    // scores. The caller holds the Detector's exclusive lock for the Trainer's lifetime.
    Trainer(DetectorState& state, const Scorer& scorer) : state_(state), scorer_(scorer) {}

    // Detector::fit: train(), and where the orientation check finds no upright, train()
    // again from the start with the recipe without_orientation() (RecipeDecision). On return
    // the state is trained, with statistics, thresholds, kept_epoch and orientation set;
    // except after a cancellation before any epoch was completed, which leaves it untrained.
    FitReport fit(std::span<const ImageView> images, const FitCallbacks& callbacks);

private:
    // A checkpoint written after the orientation check found no upright holds the recipe
    // without_orientation() and a discriminator without a head: resuming it with the options'
    // recipe continues that run.
    void resume_checkpointed_recipe();
    // One training run of options.recipe; returns early, untrained, when the orientation
    // check finds no upright (FitReport::orientation.oriented false).
    FitReport train(std::span<const ImageView> images, const FitCallbacks& callbacks);
    // Continues from options.resume_from: checks that it is a checkpoint of this run (the
    // architecture, the recipe, every training setting but epochs and threshold_quantile, and
    // the training data `data`; InvalidArgument naming the first difference, "expected X (the
    // checkpoint's), found Y"), loads weights and Adam moments, puts `random` where the
    // checkpoint's run stood; returns its completed epochs.
    int resume_checkpoint(RandomStream& random, const detector_file::TrainingData& data);
    // A checkpoint to options.checkpoint_path: the model, its optimiser state, the stream
    // position, what the detector holds now and the training data's fingerprint.
    void write_checkpoint(int epochs_completed, const RandomStream& random, const detector_file::TrainingData& data) const;
    // With the final weights: the score standardisation (rotation head only), score and pixel
    // statistics and the default threshold, from `count` normal samples; the state is trained.
    void learn_statistics(const std::vector<float>& normal_samples, std::size_t count);
    // The same with tiling: the held-out images scored tile by tile, as score() scores them.
    void learn_tiled_statistics(const SampleSource& samples, const std::vector<std::size_t>& reference);
    // Precise batch norm over the training images (full batches, in `training` order).
    void recompute_batch_norm(Tape& tape, Tensor& batch_tensor, const SampleSource& samples,
                              const std::vector<std::size_t>& training);
    // The stopping rule's measure: AUROC of `normal` against `anomalous` samples (equal
    // counts) under the current model; 0 when a score is not finite.
    double separation_auroc(const std::vector<float>& normal, const std::vector<float>& anomalous, std::size_t count) const;
    // The orientation check (orientation_check.hpp) on the first of the held-out images
    // `normal`.
    OrientationFinding check_orientation(const SampleSource& samples, const std::vector<std::size_t>& normal) const;

    DetectorState& state_;
    const Scorer& scorer_;
};

}  // namespace sga
