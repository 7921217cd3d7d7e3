// Detector: the public facade. It holds a DetectorState (detector_state.hpp) under a lock and
// hands the work to its parts: Trainer (trainer.hpp) for fit(), Scorer (scoring.hpp) for
// score() and calibrate(), detector_file (detector_file.hpp) for save() and load().
#include "skipganomaly/detector.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <optional>
#include <shared_mutex>

#include "detector_file.hpp"
#include "detector_state.hpp"
#include "model_file.hpp"
#include "scoring.hpp"
#include "statistics.hpp"
#include "skipganomaly/metrics.hpp"
#include "trainer.hpp"

namespace sga {

void DetectorOptions::validate() const {
    architecture.validate();
    recipe.validate(architecture);
    SGA_CHECK_ARGUMENT(recipe.stopping == StoppingRule::FinalEpoch || validation_fraction > 0,
                       "the '" + recipe.name + "' recipe's stopping rule needs held-out normal images: "
                       "validation_fraction must be > 0");
    SGA_CHECK_ARGUMENT(epochs >= 1, "epochs must be at least 1, found " + std::to_string(epochs));
    SGA_CHECK_ARGUMENT(batch_size >= 2, "batch_size must be at least 2 (batch norm needs two samples), found " +
                                            std::to_string(batch_size));
    SGA_CHECK_ARGUMENT(std::isfinite(adam.learning_rate) && adam.learning_rate > 0,
                       "the learning rate must be positive, found " + std::to_string(adam.learning_rate));
    SGA_CHECK_ARGUMENT(adam.beta1 >= 0 && adam.beta1 < 1 && adam.beta2 >= 0 && adam.beta2 < 1,
                       "Adam betas must lie in [0, 1)");
    SGA_CHECK_ARGUMENT(adam.epsilon > 0, "Adam epsilon must be positive");
    SGA_CHECK_ARGUMENT(std::isfinite(loss_weights.adversarial) && std::isfinite(loss_weights.contextual) &&
                           std::isfinite(loss_weights.latent) && loss_weights.adversarial >= 0 &&
                           loss_weights.contextual >= 0 && loss_weights.latent >= 0,
                       "loss weights must be finite and non-negative");
    SGA_CHECK_ARGUMENT(validation_fraction >= 0 && validation_fraction < 1,
                       "validation_fraction must lie in [0, 1), found " + std::to_string(validation_fraction));
    SGA_CHECK_ARGUMENT(threshold_quantile > 0 && threshold_quantile <= 1,
                       "threshold_quantile must lie in (0, 1], found " + std::to_string(threshold_quantile));
    SGA_CHECK_ARGUMENT(score_batch_size >= 1, "score_batch_size must be at least 1");
    tiling.validate();
    SGA_CHECK_ARGUMENT(!tiling.enabled() || !recipe.rotation_prediction.enabled,
                       "tiling needs a recipe without rotation prediction (e.g. inspection); the '" + recipe.name +
                           "' recipe standardises its score over whole images");
    SGA_CHECK_ARGUMENT(checkpoint_every_epochs >= 0, "checkpoint_every_epochs must not be negative");
    SGA_CHECK_ARGUMENT(checkpoint_every_epochs == 0 || !checkpoint_path.empty(),
                       "checkpoint_every_epochs is set but checkpoint_path is empty");
}

// The state, the lock that guards it, and the scoring pool.
struct Detector::Impl : DetectorState {
    mutable std::shared_mutex model_mutex;  // score: shared; fit, calibrate, threshold changes: exclusive
    Scorer scorer;

    explicit Impl(DetectorOptions o) : DetectorState(std::move(o)), scorer(options, context->device()) {}

    void require_trained() const {
        if (!trained) throw InvalidArgument("the detector is not trained: call fit() or Detector::load() first");
    }

    // Scores preprocessed samples (count x sample_floats); sizes[i] is the (width, height) of
    // image i, the resolution its maps come back at. The caller holds the lock.
    std::vector<ScoreResult> score_preprocessed(const std::vector<float>& samples,
                                                const std::vector<std::pair<int, int>>& sizes,
                                                const ScoreOptions& so) const {
        require_trained();
        return scorer.score(*model, samples, sizes, so, scale());
    }

    std::vector<ScoreResult> score_views(std::span<const ImageView> images, const ScoreOptions& so) const {
        std::shared_lock lock(model_mutex);
        require_trained();
        return scorer.score_images(*model, images, so, scale());
    }

    ResultScale scale() const { return {threshold.load(), statistics, pixel_statistics}; }

    // Image and pixel statistics of normal images (not trained on), with their scores; nothing
    // is changed until the caller assigns them (assign_normal_statistics). The caller holds the lock.
    Scorer::ImageStatistics normal_statistics(std::span<const ImageView> normal) const {
        Scorer::ImageStatistics n = scorer.image_statistics(*model, normal, true, pixel_statistics.threshold_quantile);
        for (float v : n.scores)
            if (!std::isfinite(v)) throw NumericalError("the model produced a non-finite score; its weights are damaged");
        return n;
    }
    void assign_normal_statistics(const Scorer::ImageStatistics& n) {
        statistics = describe(n.scores, options.threshold_quantile);
        pixel_statistics = n.pixel_statistics;
    }

    nlohmann::json detector_metadata() const { return detector_file::to_json(record()); }
};

Detector::Detector(DetectorOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Detector::~Detector() = default;
Detector::Detector(Detector&&) noexcept = default;
Detector& Detector::operator=(Detector&&) noexcept = default;

Detector::Impl& Detector::checked_impl(const char* call) const {
    if (!impl_)
        throw InvalidArgument(std::string("Detector::") + call +
                              ": this Detector was moved from and is empty; assign a new or loaded Detector to it");
    return *impl_;
}

FitReport Detector::fit(std::span<const ImageView> normal_images, const FitCallbacks& callbacks) {
    Impl& impl = checked_impl("fit");
    std::unique_lock lock(impl.model_mutex);
    return Trainer(impl, impl.scorer).fit(normal_images, callbacks);
}

FitReport Detector::fit(const std::vector<Image>& normal_images, const FitCallbacks& callbacks) {
    checked_impl("fit");
    std::vector<ImageView> views;
    views.reserve(normal_images.size());
    for (const Image& image : normal_images) views.push_back(image.view());
    return fit(std::span<const ImageView>(views), callbacks);
}

ScoreResult Detector::score(const ImageView& image, const ScoreOptions& options) const {
    return checked_impl("score").score_views(std::span<const ImageView>(&image, 1), options).front();
}

std::vector<ScoreResult> Detector::score(std::span<const ImageView> images, const ScoreOptions& options) const {
    return checked_impl("score").score_views(images, options);
}

std::vector<ScoreResult> Detector::score(const std::vector<Image>& images, const ScoreOptions& options) const {
    checked_impl("score");
    std::vector<ImageView> views;
    views.reserve(images.size());
    for (const Image& image : images) views.push_back(image.view());
    return score(std::span<const ImageView>(views), options);
}

ScoreResult Detector::score(const FloatImageView& image, const ScoreOptions& options) const {
    Impl& impl = checked_impl("score");
    std::shared_lock lock(impl.model_mutex);
    impl.require_trained();
    SGA_CHECK_ARGUMENT(!impl.options.tiling.enabled(), "a tiled detector scores 8-bit images (ImageView)");
    const Architecture& a = impl.options.architecture;
    std::vector<float> sample(static_cast<std::size_t>(impl.sample_floats()));
    preprocess(image, a.image_size, a.channels, sample.data());
    return impl.score_preprocessed(sample, {{image.width, image.height}}, options).front();
}

CalibrationResult Detector::calibrate(std::span<const ImageView> normal, std::span<const ImageView> anomalous) {
    Impl& impl = checked_impl("calibrate");
    if (anomalous.empty()) return calibrate(normal);
    SGA_CHECK_ARGUMENT(!normal.empty(), "calibrate needs at least one normal image");
    std::unique_lock lock(impl.model_mutex);
    impl.require_trained();
    const Scorer::ImageStatistics n = impl.normal_statistics(normal);
    std::vector<float> scores = n.scores;
    for (float v : impl.scorer.image_statistics(*impl.model, anomalous, false, 0).scores) {
        if (!std::isfinite(v)) throw NumericalError("the model produced a non-finite score; its weights are damaged");
        scores.push_back(v);
    }
    std::vector<int> labels(scores.size(), 0);
    std::fill(labels.begin() + static_cast<std::ptrdiff_t>(normal.size()), labels.end(), 1);
    const F1Max best = f1_max(scores, labels);
    CalibrationResult c;
    c.threshold = best.threshold;
    c.rule = "f1_max";
    c.f1 = best.f1;
    c.auroc = roc_auc(scores, labels);
    c.normal_images = normal.size();
    c.anomalous_images = anomalous.size();
    impl.assign_normal_statistics(n);
    impl.threshold = c.threshold;
    impl.threshold_source = "calibrated_f1_max";
    return c;
}

CalibrationResult Detector::calibrate(std::span<const ImageView> normal) { return calibrate_normal(normal, std::nullopt); }

CalibrationResult Detector::calibrate(std::span<const ImageView> normal, ThresholdQuantile quantile) {
    return calibrate_normal(normal, quantile.level);
}

CalibrationResult Detector::calibrate_normal(std::span<const ImageView> normal, std::optional<double> threshold_quantile) {
    Impl& impl = checked_impl("calibrate");
    SGA_CHECK_ARGUMENT(!normal.empty(), "calibrate needs at least one normal image");
    SGA_CHECK_ARGUMENT(!threshold_quantile || (*threshold_quantile > 0 && *threshold_quantile <= 1),
                       "the threshold quantile must lie in (0, 1], found " + std::to_string(threshold_quantile.value_or(0)));
    std::unique_lock lock(impl.model_mutex);
    impl.require_trained();
    const Scorer::ImageStatistics n = impl.normal_statistics(normal);
    CalibrationResult c;
    c.threshold = threshold_quantile ? static_cast<float>(threshold_from_normal_scores(n.scores, *threshold_quantile))
                                     : default_threshold(n.scores, impl.options.threshold_quantile);
    impl.assign_normal_statistics(n);
    c.rule = "validation_quantile";
    c.normal_images = normal.size();
    impl.threshold = c.threshold;
    impl.threshold_source = "calibrated_validation_quantile";
    return c;
}

float Detector::threshold() const { return checked_impl("threshold").threshold.load(); }

void Detector::set_threshold(float threshold) {
    Impl& impl = checked_impl("set_threshold");
    SGA_CHECK_ARGUMENT(std::isfinite(threshold), "the threshold must be finite");
    std::unique_lock lock(impl.model_mutex);
    impl.threshold = threshold;
    impl.threshold_source = "manual";
}

Precision Detector::active_precision() const {
    Impl& impl = checked_impl("active_precision");
    std::shared_lock lock(impl.model_mutex);
    if (impl.trained) return impl.model->packed_precision();
    return impl.options.precision == Precision::BFloat16 && kernels::bf16_available(impl.device())
               ? Precision::BFloat16
               : Precision::Float32;
}

void Detector::set_precision(Precision precision) {
    Impl& impl = checked_impl("set_precision");
    std::unique_lock lock(impl.model_mutex);
    impl.options.precision = precision;
    if (impl.trained) impl.model->pack_for_inference(*impl.context, precision);
}

bool Detector::is_trained() const {
    if (!impl_) return false;
    std::shared_lock lock(impl_->model_mutex);
    return impl_->trained;
}
const DetectorOptions& Detector::options() const { return checked_impl("options").options; }
const ScoreStatistics& Detector::validation_statistics() const {
    return checked_impl("validation_statistics").statistics;
}
const PixelStatistics& Detector::pixel_statistics() const { return checked_impl("pixel_statistics").pixel_statistics; }
const OrientationFinding& Detector::orientation() const { return checked_impl("orientation").orientation; }
Device Detector::device() const { return checked_impl("device").device(); }
const SkipGanomaly& Detector::model() const { return *checked_impl("model").model; }

void Detector::save(const std::string& path, WeightStorage storage) const {
    Impl& impl = checked_impl("save");
    std::shared_lock lock(impl.model_mutex);
    impl.require_trained();
    model_file::save(path, *impl.model, {{"detector", impl.detector_metadata()}}, nullptr, storage);
}

Detector Detector::load(const std::string& path, Device device) {
    const model_file::Reader reader = model_file::Reader::open(path);
    DetectorOptions options;
    options.architecture = reader.architecture();
    options.device = device;
    const detector_file::DetectorRecord record = detector_file::read_detector_record(reader.metadata(), path, options);
    // Before the model is allocated: a forged architecture must not cost memory.
    reader.check_tensors(record.options.architecture);
    Detector detector(record.options);
    Impl& impl = *detector.impl_;
    reader.load_into(*impl.model);
    impl.model->pack_for_inference(*impl.context, record.options.precision);
    impl.restore(record);
    return detector;
}

}  // namespace sga
