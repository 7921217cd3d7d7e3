// The public API: train Skip-GANomaly on normal images, score images, ship the model.
//
//   sga::Detector detector({.architecture = {.image_size = 32, .channels = 1}});
//   detector.fit(normal_images);
//   sga::ScoreResult r = detector.score(image);   // r.is_anomaly, r.score, ...
//   detector.save("model.safetensors");
//   auto shipped = sga::Detector::load("model.safetensors");
//
// Thread safety, per call on one Detector:
//   - score() (every overload), threshold(), is_trained() and save() may run from any number
//     of threads at once, also while another thread runs fit() or calibrate(): those take an
//     exclusive lock, so a score() waits for them and never sees a half-trained model.
//   - fit(), calibrate() and set_threshold() are serialised with each other and with score().
//   - options(), validation_statistics(), pixel_statistics() and model() return references
//     into the Detector: read them while no fit() or calibrate() runs on it.
//   - moving a Detector (construction or assignment) is not synchronised: no other call may
//     run on either Detector meanwhile. A moved-from Detector is empty: is_trained() is false
//     and every other call throws InvalidArgument until a Detector is assigned to it.
//   - different Detector objects share nothing and may be used freely from different threads.
//   - On the CPU, score() of one image with running statistics (the default) from several
//     threads at once goes through a ScoreBatcher (score_batcher.hpp): the images of callers
//     that arrive while a pass runs are scored together in the next pass (up to 16 images at
//     isize 32, fewer at larger sizes), each one bit for bit as it scores alone. A caller's
//     score never depends on the other callers; they only share the weight reads.
//
// Numbers to expect:
//   - Scores of one image scored alone and scored inside a batch (score(span), score_batch_size)
//     agree to float rounding, not bit for bit: how matrix products are blocked and vectorised
//     depends on the batch size, so sums are taken in another order. The bound the tests
//     enforce (test_detector: "an image's score does not depend on the rest of its batch", on
//     the default recipe with and without its rotation techniques): the score's parts
//     (reconstruction, latent and rotation errors) to 1e-6 relative; the score to 1e-6
//     relative or 1e-4 absolute, whichever is larger. The default recipe's score is a weighted
//     sum of standardised parts, near 0 for normal images, so its relative difference can be
//     larger (1e-5 was seen on MNIST) while the absolute one stays far below the normal
//     scores' spread. SkipGanomaly::score_independent scores a batch with each image's lone
//     bits, more slowly. With ScoringMode::OfficialBatchStatistics a score depends on the
//     other images of its batch by design.
//   - Float input (FloatImageView) and 8-bit input of the same picture agree to within 1.5
//     grey levels (3/255) per pixel after pre-processing when it resizes or converts to grey
//     (8-bit input is rounded to 8 bits between steps, as PIL does; float input is not), and
//     exactly otherwise; see preprocess_float_chw in image.hpp.
//   - A score does not depend on the CPU thread budget or on concurrent callers, to the bit.
//   - CPU threads: see set_cpu_threads in device.hpp.
#pragma once

#include "skipganomaly/config.hpp"
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "skipganomaly/device.hpp"
#include "skipganomaly/image.hpp"
#include "skipganomaly/recipe.hpp"
#include "skipganomaly/tiling.hpp"
#include "skipganomaly/model_options.hpp"
#include "skipganomaly/orientation_check.hpp"

namespace sga {

// The engine's model (skipganomaly/engine/skip_ganomaly.hpp), for the advanced calls that
// hand it out: include that header to use it.
class SkipGanomaly;

// How batch norm behaves when scoring.
enum class ScoringMode {
    // Running statistics (model.eval() in PyTorch): an image's score does not depend on the
    // other images of its batch. Our default.
    RunningStatistics,
    // Batch statistics, as the official test() computes scores (its networks stay in train
    // mode): reproduces the paper's protocol; scores depend on the batch. The running
    // statistics are not updated by scoring.
    OfficialBatchStatistics,
};

// How the model file stores the learned weights (Detector::save).
enum class WeightStorage {
    Float32,  // exact
    Float16,  // IEEE half, rounded to nearest even: half the file size, opt-in
};

struct SKIPGANOMALY_API DetectorOptions {
    // image_size, channels, ngf, ndf, nz. Their defaults (32, 3, 64, 64, 100: the official
    // code's) live in struct Architecture in model_options.hpp.
    Architecture architecture;
    // How to train and which epoch to keep: Recipe::robust_rotation() (the default),
    // Recipe::robust(), or Recipe::official() (the paper's code bit for bit). See recipe.hpp
    // and docs/quality.md.
    Recipe recipe = Recipe::robust_rotation();
    int epochs = 15;
    int batch_size = 64;  // the last partial batch of an epoch is dropped, as the official loader does
    AdamHyperparameters adam{2e-4f, 0.5f, 0.999f, 1e-8f};
    LossWeights loss_weights;  // w_adv 1, w_con 50, w_lat 1
    float discriminator_reinit_threshold = 1e-5f;
    // Fraction of the normal images held out to compute score statistics, the default
    // threshold and the robust recipe's stopping rule; never trained on. At least one image is
    // held out when this is > 0. The robust recipe needs it > 0.
    float validation_fraction = 0.1f;
    // The default threshold estimates this quantile of normal scores from the held-out ones,
    // with threshold_from_normal_scores (metrics.hpp): robust on 20 images, the plain
    // empirical quantile from about 1000 (for 0.99) on.
    float threshold_quantile = 0.99f;
    std::uint64_t seed = 0;  // initialisation, shuffling and the validation split
    Device device = Device::Auto;
    ScoringMode scoring_mode = ScoringMode::RunningStatistics;
    int score_batch_size = 64;  // images (or tiles) per forward pass in score(span)
    // The arithmetic of the scoring convolutions (Precision, model_options.hpp): Float32, or
    // BFloat16 where the processor has AVX512-BF16 (active_precision() says what runs). Fit
    // learns the thresholds at this precision; the model file stores it.
    Precision precision = Precision::Float32;
    // The arithmetic of the training convolutions, forward and backward: Float32, or BFloat16
    // where the processor has AVX512-BF16 (float32 elsewhere; cpu_bf16_available()). Batch
    // norm, the losses, Adam and the weights stay float32. The model file records it.
    Precision training_precision = Precision::Float32;
    // Images larger than the network's input, at their own resolution (tiling.hpp): training
    // sees random tiles, scoring cuts each image into overlapping tiles and stitches their maps
    // into one at the image's resolution; the image score is the stitched map's maximum (a
    // recipe that scores from the map) or the largest tile score. Off by default: the whole
    // image is resized to the network's input. Needs a recipe without rotation prediction.
    Tiling tiling;
    // Checkpoints: written every `checkpoint_every_epochs` epochs (0: never) to
    // `checkpoint_path`; `resume_from` continues training from such a file.
    int checkpoint_every_epochs = 0;
    std::string checkpoint_path;
    std::string resume_from;

    void validate() const;
};

struct TrainingProgress {
    int epoch = 0, epochs = 0;    // epoch counts from 1
    int batch = 0, batches = 0;   // batch counts from 1
    StepLosses losses;
    int discriminator_reinits = 0;  // so far in this fit
    double elapsed_seconds = 0, estimated_remaining_seconds = 0;
};

struct EpochSummary {
    int epoch = 0;
    // Means over the epoch's batches.
    float generator_loss = 0, discriminator_loss = 0, adversarial_loss = 0, contextual_loss = 0, latent_loss = 0;
    int discriminator_reinits = 0;
    double seconds = 0;
    // Recipes with a stopping rule: the AUROC of held-out normal images against synthetic
    // anomalies made from them (no test label involved); -1 otherwise.
    double synthetic_auroc = -1;
};

// A change of plan that fit() makes by itself, announced when it is made (FitCallbacks::
// on_decision) and kept in FitReport::decisions.
struct RecipeDecision {
    std::string check;         // which check decided, e.g. "orientation_check"
    std::string finding;       // what it measured, in words, with the statistic
    std::string from_recipe;   // the recipe trained until now
    std::string to_recipe;     // the recipe fit() trains from here on
    int completed_epochs = 0;  // epochs of from_recipe that are discarded
    double estimated_seconds = 0;  // how long the new plan should take, from the time per epoch so far
};

struct FitCallbacks {
    // When the recipe's orientation check finds no upright (FitReport::orientation), fit()
    // trains again from the start: on_batch then sees the epochs count from 1 again, and
    // on_epoch and on_epoch_model never see the discarded run's checking epoch.
    std::function<void(const TrainingProgress&)> on_batch;
    std::function<void(const EpochSummary&)> on_epoch;
    // Sees the model as it stands after each epoch, for per-epoch evaluation (score it with
    // SkipGanomaly::score on a context of your own, from skipganomaly/engine/skip_ganomaly.hpp;
    // keep no reference past the call).
    std::function<void(const EpochSummary&, const SkipGanomaly&)> on_epoch_model;
    // A recipe decision (RecipeDecision), at the moment it is taken, before training goes on.
    std::function<void(const RecipeDecision&)> on_decision;
    // When it becomes true, fit() returns after the current batch with the weights of the
    // last completed epoch; before the first epoch is completed, with the detector untrained
    // (is_trained() false, save() refuses it).
    const std::atomic<bool>* cancel = nullptr;
};

struct ScoreStatistics {
    std::size_t count = 0;
    double min = 0, max = 0, mean = 0, std = 0;
    std::vector<double> quantile_levels;  // e.g. 0.5, 0.9, 0.95, 0.99
    std::vector<double> quantile_values;
};

// How many of `images` normal images fit holds out for `validation_fraction`:
// floor(fraction x images), and at least one when the fraction is > 0.
inline std::size_t held_out_image_count(std::size_t images, float validation_fraction) {
    std::size_t held_out = static_cast<std::size_t>(std::floor(validation_fraction * static_cast<double>(images)));
    if (validation_fraction > 0 && held_out == 0) held_out = 1;
    return std::min(held_out, images);
}

struct FitReport {
    int epochs_completed = 0;
    int kept_epoch = 0;  // the epoch whose model fit() kept: the last, or the stopping rule's choice
    bool cancelled = false;
    std::vector<EpochSummary> epochs;
    int discriminator_reinits = 0;
    std::size_t training_images = 0, validation_images = 0;
    double seconds = 0;
    ScoreStatistics validation_scores;
    float threshold = 0;
    // The recipe's orientation check (orientation_check.hpp). When it found no upright, fit()
    // trained again from the start with the recipe without_orientation(), which options()
    // then shows; everything above describes that second run, `seconds` both.
    OrientationFinding orientation;
    std::vector<RecipeDecision> decisions;  // in the order they were taken
    // What the caller should know about this result, in words, in the order found: a check
    // skipped for want of held-out images, a threshold from very few held-out scores.
    std::vector<std::string> warnings;
};

// The pixel-level counterpart of the image threshold: learnt by fit() and calibrate() from
// the per-pixel squared errors (channel mean, at the network's resolution) of held-out normal
// images. A file without it (older, or converted) has count 0 until calibrate() runs.
struct PixelStatistics {
    std::size_t count = 0;  // pixels pooled: every pixel of the images, or of the first 2^24 / size^2 of them
    double min = 0, max = 0;
    double threshold_quantile = 0.999;  // about one normal pixel in a thousand is flagged
    double threshold = 0;
};

// Per-call choices; none of them changes the Detector.
struct ScoreOptions {
    bool anomaly_map = false;     // fill ScoreResult::anomaly_map
    bool reconstruction = false;  // fill ScoreResult::reconstruction, the generator's output
    // Fill anomaly_map, normalized_anomaly_map and anomaly_mask (implies anomaly_map). Needs
    // a pixel threshold (pixel_statistics().count > 0), else throws InvalidArgument.
    bool anomaly_mask = false;
    // How batch norm behaves for this call; unset: the Detector's options().scoring_mode.
    // A scoring-time choice: the model file stores weights and running statistics for both.
    std::optional<ScoringMode> scoring_mode;
};

struct ScoreResult {
    // 0.9 x reconstruction_error + 0.1 x latent_error; with the robust_rotation recipe (the
    // default), that and rotation_error standardised and combined (rotation_prediction.hpp)
    float score = 0;
    float reconstruction_error = 0;  // mean over C,H,W of (x - G(x))^2
    float latent_error = 0;          // mean over nz of (f(x) - f(G(x)))^2
    float rotation_error = 0;        // robust_rotation only: how badly D recognises the image's quarter turns
    // clamp((score - threshold) / (validation max - validation min) + 0.5, 0, 1): 0.5 at the
    // threshold, so normalized_score >= 0.5 exactly when is_anomaly.
    float normalized_score = 0;
    bool is_anomaly = false;  // score >= threshold
    float threshold = 0;
    // Per-pixel channel-mean squared reconstruction error at the input's resolution
    // (row-major, map_height x map_width), when ScoreOptions::anomaly_map or anomaly_mask is set.
    std::vector<float> anomaly_map;
    int map_width = 0, map_height = 0;
    // When ScoreOptions::anomaly_mask is set, both map_height x map_width, row-major:
    // clamp((map - pixel threshold) / (pixel max - pixel min) + 0.5, 0, 1) with the
    // PixelStatistics of normal images (0.5 at the pixel threshold, as normalized_score), and
    // 1 where map >= pixel threshold, else 0.
    std::vector<float> normalized_anomaly_map;
    std::vector<std::uint8_t> anomaly_mask;
    // When ScoreOptions::reconstruction is set: G(x), (channels, size, size) channel-major with
    // values near [-1, 1], at the network's resolution (architecture image_size and channels).
    std::vector<float> reconstruction;
    int reconstruction_size = 0;
};

// The quantile of normal scores a threshold estimates, in (0, 1]. A type of its own, made
// from a double (calibrate(normal, 0.995)) but never from {}, so that calibrate(normal, {})
// means "no anomalous images".
struct ThresholdQuantile {
    ThresholdQuantile(double quantile) : level(quantile) {}  // implicit on purpose
    double level;
};

struct CalibrationResult {
    float threshold = 0;
    // "f1_max" (labelled anomalies given: the F1-maximising threshold) or
    // "validation_quantile" (normal images only: threshold_from_normal_scores).
    std::string rule;
    double f1 = -1;     // on the given images; -1 without anomalies
    double auroc = -1;  // likewise
    std::size_t normal_images = 0, anomalous_images = 0;
};

class SKIPGANOMALY_API Detector {
public:
    explicit Detector(DetectorOptions options = {});
    ~Detector();
    Detector(Detector&&) noexcept;
    Detector& operator=(Detector&&) noexcept;

    // Trains on normal images only (8-bit buffers of any size and pixel format); holds out options.validation_fraction for score statistics
    // and the default threshold.
    FitReport fit(std::span<const ImageView> normal_images, const FitCallbacks& callbacks = {});
    FitReport fit(const std::vector<Image>& normal_images, const FitCallbacks& callbacks = {});

    ScoreResult score(const ImageView& image, const ScoreOptions& options = {}) const;
    std::vector<ScoreResult> score(std::span<const ImageView> images, const ScoreOptions& options = {}) const;
    std::vector<ScoreResult> score(const std::vector<Image>& images, const ScoreOptions& options = {}) const;
    // A float CHW image (FloatImageView in image.hpp: channels 1, 3 or 4, values in [-1, 1]).
    // Throws InvalidArgument for a null pointer, bad sizes or channels, and NaN or infinite
    // values.
    ScoreResult score(const FloatImageView& image, const ScoreOptions& options = {}) const;

    // Picks the F1-maximising threshold from labelled normal and anomalous images, and
    // learns the pixel threshold from the normal ones. With no anomalous image
    // (calibrate(normal, {})) it is calibrate(normal).
    CalibrationResult calibrate(std::span<const ImageView> normal, std::span<const ImageView> anomalous);
    // Normal images only (images the model was not trained on): recomputes
    // validation_statistics(), sets the threshold with threshold_from_normal_scores at
    // options().threshold_quantile, or at `quantile` when given, and learns the pixel
    // threshold. What a converted model, whose file holds no threshold, needs before it flags
    // anything sensibly. Throws InvalidArgument for no images or a quantile outside (0, 1].
    CalibrationResult calibrate(std::span<const ImageView> normal);
    CalibrationResult calibrate(std::span<const ImageView> normal, ThresholdQuantile quantile);

    float threshold() const;
    void set_threshold(float threshold);

    // What scoring computes in: options().precision where this processor and device run it,
    // else Float32 (bfloat16 needs AVX512-BF16 on the CPU; SKIPGANOMALY_DISABLE_BF16=1 turns
    // it off).
    Precision active_precision() const;
    // Scores in `precision` from now on (options().precision; save() stores it). The
    // thresholds stay as they are: calibrate() re-learns them at the new precision. Waits for
    // scoring calls under way.
    void set_precision(Precision precision);

    bool is_trained() const;
    const DetectorOptions& options() const;
    const ScoreStatistics& validation_statistics() const;
    const PixelStatistics& pixel_statistics() const;
    // What the last fit()'s orientation check saw (saved and loaded with the model);
    // checked is false when the recipe has none.
    const OrientationFinding& orientation() const;
    Device device() const;

    // One self-contained safetensors file (docs/model-format.md), written atomically: a
    // temporary file in the same folder, flushed, then renamed over `path`. Float16 stores the
    // learned weights as IEEE half: the file is about half as large; load() widens them back
    // to float32 and computes in float32, so scores move by the rounding of the weights only
    // (docs/model-format.md gives the measured difference). Throws InvalidArgument when a
    // weight does not fit in float16.
    void save(const std::string& path, WeightStorage storage = WeightStorage::Float32) const;
    // Checks magic, version, architecture, every tensor's shape and the checksum; throws
    // FormatError saying what was expected and what was found.
    static Detector load(const std::string& path, Device device = Device::Auto);

    // The underlying model, for advanced use (benchmarks, parity tests): the engine's class,
    // defined in skipganomaly/engine/skip_ganomaly.hpp (no stability promise).
    const SkipGanomaly& model() const;

    struct Impl;

private:
    CalibrationResult calibrate_normal(std::span<const ImageView> normal, std::optional<double> threshold_quantile);
    // impl_, or InvalidArgument naming `call` when this Detector was moved from.
    Impl& checked_impl(const char* call) const;

    std::unique_ptr<Impl> impl_;
};

}  // namespace sga
