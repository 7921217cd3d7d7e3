// Internal: what a Detector holds besides its lock and its Scorer: the options, the model and
// what fit() and calibrate() learnt. The Trainer (trainer.hpp) changes it, the model file
// (detector_file.hpp) records it, Detector::Impl (detector.cpp) adds the lock around it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "detector_file.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"

namespace sga {

struct DetectorState {
    DetectorOptions options;
    std::unique_ptr<Context> context;  // owns nothing but the device choice and training temporaries
    std::unique_ptr<SkipGanomaly> model;
    bool trained = false;
    ScoreStatistics statistics;
    PixelStatistics pixel_statistics;
    // Atomic: Detector::threshold() reads it without the lock.
    std::atomic<float> threshold{0.0f};
    std::string threshold_source = "none";
    int kept_epoch = 0;  // the epoch fit() kept (FitReport::kept_epoch); 0 when unknown
    OrientationFinding orientation;  // what fit()'s orientation check saw (FitReport::orientation)

    // Validates `o` (throws InvalidArgument), then makes the context and an untrained model.
    explicit DetectorState(DetectorOptions o)
        : options(validated(std::move(o))), context(std::make_unique<Context>(options.device, options.seed)) {
        adopt(options.recipe);
    }
    DetectorState(const DetectorState&) = delete;
    DetectorState& operator=(const DetectorState&) = delete;

    // A new, untrained model for `recipe`, which becomes options.recipe. The recipe decides
    // whether the discriminator needs its rotation head.
    void adopt(const Recipe& recipe) {
        DetectorOptions o = options;
        o.recipe = recipe;
        o.architecture.rotation_head = recipe.rotation_prediction.enabled;
        o.validate();
        options = std::move(o);
        const ModelTechniques techniques{options.discriminator_reinit_threshold, options.recipe.skip_gating.scoring_closed(),
                                         options.recipe.restoration, options.recipe.rotation_prediction,
                                         options.recipe.anomaly_map};
        model = std::make_unique<SkipGanomaly>(options.architecture, options.adam, options.loss_weights, techniques);
        model->materialize(*context);
        orientation = {};
    }

    Device device() const { return context->device(); }
    // Floats of one preprocessed sample: channels x image_size x image_size.
    std::int64_t sample_floats() const {
        const Architecture& a = options.architecture;
        return static_cast<std::int64_t>(a.channels) * a.image_size * a.image_size;
    }

    // What the model file's "detector" entry records of this detector now.
    detector_file::DetectorRecord record() const {
        detector_file::DetectorRecord r;
        r.options = options;
        r.trained = trained;
        r.threshold = threshold.load();
        r.threshold_source = threshold_source;
        r.validation_statistics = statistics;
        r.pixel_statistics = pixel_statistics;
        if (model->discriminator.has_rotation_head()) r.score_standardisation = model->score_standardisation();
        r.kept_epoch = kept_epoch;
        r.orientation = orientation;
        return r;
    }
    // Takes what `r` records, for a model whose weights were just loaded; the options stay
    // (they were made from r.options).
    void restore(const detector_file::DetectorRecord& r) {
        trained = r.trained;
        threshold = r.threshold;
        threshold_source = r.threshold_source;
        statistics = r.validation_statistics;
        pixel_statistics = r.pixel_statistics;
        model->set_score_standardisation(r.score_standardisation.value_or(ScoreStandardisation{}));
        kept_epoch = r.kept_epoch;
        orientation = r.orientation;
    }

private:
    static DetectorOptions validated(DetectorOptions o) {
        o.architecture.rotation_head = o.recipe.rotation_prediction.enabled;
        o.validate();
        return o;
    }
};

}  // namespace sga
