#include "trainer.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <optional>
#include <string>

#include "model_file.hpp"
#include "skipganomaly/metrics.hpp"
#include "skipganomaly/synthetic_anomalies.hpp"
#include "statistics.hpp"

namespace sga {
namespace {

using Clock = std::chrono::steady_clock;

// Below this many held-out scores the default threshold is a plain order statistic
// (threshold_from_normal_scores in metrics.hpp), and fit() warns.
constexpr std::size_t few_threshold_scores = 8;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// Copies of a fixed list of device tensors, taken and put back as a whole.
struct TensorCopies {
    std::vector<Tensor> tensors;

    void capture(const std::vector<TensorView>& sources) {
        if (tensors.empty())
            for (TensorView v : sources) tensors.emplace_back(v.shape(), v.device());
        for (std::size_t i = 0; i < sources.size(); ++i)
            copy_bytes(tensors[i].data(), tensors[i].device(), sources[i].data(), sources[i].device(),
                       static_cast<std::size_t>(sources[i].numel()) * sizeof(float));
    }
    void restore(const std::vector<TensorView>& targets) const {
        for (std::size_t i = 0; i < targets.size(); ++i)
            copy_bytes(targets[i].data(), targets[i].device(), tensors[i].data(), tensors[i].device(),
                       static_cast<std::size_t>(targets[i].numel()) * sizeof(float));
    }
};

// The weights and batch-norm statistics of both networks: what the stopping rule keeps of
// its best epoch (the optimiser state is not needed to score).
std::vector<TensorView> weight_views(SkipGanomaly& m) {
    return {m.generator.parameters.values(), m.generator.statistics.values(), m.discriminator.parameters.values(),
            m.discriminator.statistics.values()};
}

// Where training stands at the end of an epoch, so that a diverged or cancelled run can return
// to it: the weights and statistics, and the counters beside them. Not the Adam moments:
// nothing reads them once fit() returns (a new fit zeroes them; resuming reads them from a
// checkpoint, which is written from the live state), and copying them would cost two more
// copies of the parameters (416 MiB at isize 128).
struct TrainingSnapshot {
    TensorCopies copies;
    std::int64_t generator_passes = 0, discriminator_passes = 0, generator_steps = 0, discriminator_steps = 0;
    std::uint64_t random_offset = 0;

    void capture(SkipGanomaly& m, const RandomStream& random) {
        copies.capture(weight_views(m));
        generator_passes = m.generator.training_passes;
        discriminator_passes = m.discriminator.training_passes;
        generator_steps = m.generator_optimizer.steps();
        discriminator_steps = m.discriminator_optimizer.steps();
        random_offset = random.offset();
    }
    void restore(SkipGanomaly& m, RandomStream& random) const {
        copies.restore(weight_views(m));
        m.generator.training_passes = generator_passes;
        m.discriminator.training_passes = discriminator_passes;
        m.generator_optimizer.set_steps(generator_steps);
        m.discriminator_optimizer.set_steps(discriminator_steps);
        random = RandomStream(random.seed(), random_offset);
    }
};

// Sums an epoch's batch losses into its summary; average_losses divides by the batches.
void add_losses(EpochSummary& summary, const StepLosses& losses) {
    summary.generator_loss += losses.generator;
    summary.discriminator_loss += losses.discriminator;
    summary.adversarial_loss += losses.generator_adversarial;
    summary.contextual_loss += losses.generator_contextual;
    summary.latent_loss += losses.generator_latent;
    if (losses.discriminator_reinitialized) ++summary.discriminator_reinits;
}

void average_losses(EpochSummary& summary, std::size_t batches) {
    const float count = static_cast<float>(batches);
    summary.generator_loss /= count;
    summary.discriminator_loss /= count;
    summary.adversarial_loss /= count;
    summary.contextual_loss /= count;
    summary.latent_loss /= count;
}

}  // namespace

SampleSource::SampleSource(std::span<const ImageView> images, int size, int channels, const Tiling& tiling,
                           std::uint64_t seed)
    : images_(images), size_(size), channels_(channels),
      sample_(static_cast<std::size_t>(channels) * static_cast<std::size_t>(size) * static_cast<std::size_t>(size)),
      tiling_(tiling), seed_(seed) {
    std::vector<float> scratch(sample_);
    std::uint64_t hash = 1469598103934665603ull;  // FNV-1a over the samples' 32-bit words
    for (std::size_t i = 0; i < images.size(); ++i) {
        try {
            copy(i, scratch.data());
        } catch (const InvalidArgument& e) {
            throw InvalidArgument("image " + std::to_string(i) + ": " + e.what());
        }
        for (const float v : scratch) hash = (hash ^ std::bit_cast<std::uint32_t>(v)) * 1099511628211ull;
    }
    hash_ = hash;
}

void SampleSource::copy(std::size_t index, float* out) const {
    if (!tiling_.enabled()) {
        preprocess(images_[index], size_, channels_, out);
        return;
    }
    const ImageView& image = images_[index];
    SGA_CHECK_ARGUMENT(image.width > 0 && image.height > 0, "the image has no pixels");
    // Its own stream per (round, image): a tile does not depend on which others were drawn.
    RandomStream random(seed_ ^ 0x7113d5a11e5ULL, (round_ * images_.size() + index) * 2);
    preprocess(tile_view(image, random_tile(image.width, image.height, tiling_.tile, random)), size_, channels_, out);
}

std::vector<float> SampleSource::gather(const std::vector<std::size_t>& indices) const {
    std::vector<float> out(indices.size() * sample_);
    for (std::size_t i = 0; i < indices.size(); ++i) copy(indices[i], out.data() + i * sample_);
    return out;
}

void Trainer::recompute_batch_norm(Tape& tape, Tensor& batch_tensor, const SampleSource& samples,
                                   const std::vector<std::size_t>& training) {
    const DetectorOptions& options = state_.options;
    Context& context = *state_.context;
    const std::size_t sample = samples.sample_floats(), batch = static_cast<std::size_t>(options.batch_size);
    std::vector<float> staging(batch * sample);
    state_.model->recompute_batch_norm_statistics(context, tape, static_cast<int>(training.size() / batch), [&](int k) {
        for (std::size_t j = 0; j < batch; ++j)
            samples.copy(training[static_cast<std::size_t>(k) * batch + j], staging.data() + j * sample);
        copy_bytes(context, batch_tensor.data(), batch_tensor.device(), staging.data(), Device::Cpu, staging.size() * sizeof(float));
        return batch_tensor.view();
    });
}

double Trainer::separation_auroc(const std::vector<float>& normal, const std::vector<float>& anomalous,
                                 std::size_t count) const {
    const SkipGanomaly& model = *state_.model;
    const BatchScores a = scorer_.score_samples(model, normal, count, false), b = scorer_.score_samples(model, anomalous, count, false);
    std::vector<float> scores;
    std::vector<int> labels;
    for (std::size_t i = 0; i < count; ++i) {
        scores.push_back(model.combined_score(a, i));
        labels.push_back(0);
    }
    for (std::size_t i = 0; i < count; ++i) {
        scores.push_back(model.combined_score(b, i));
        labels.push_back(1);
    }
    for (float v : scores)
        if (!std::isfinite(v)) return 0.0;  // a model that scores NaN is never kept
    return roc_auc(scores, labels);
}

// Batch statistics: the running ones lag a model that is still training, and each batch holds
// all four turns of its images alike.
OrientationFinding Trainer::check_orientation(const SampleSource& samples, const std::vector<std::size_t>& normal) const {
    const OrientationCheck& check = state_.options.recipe.orientation_check;
    const std::vector<std::size_t> asked(normal.begin(),
                                         normal.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(
                                                              normal.size(), static_cast<std::size_t>(check.images))));
    const std::vector<float> asked_samples = samples.gather(asked);
    const std::vector<double> margins =
        scorer_.rotation_margins(*state_.model, asked_samples, asked.size(), BatchNormMode::BatchStatistics);
    return check.judge(margins);
}

FitReport Trainer::fit(std::span<const ImageView> images, const FitCallbacks& callbacks) {
    state_.orientation = {};
    resume_checkpointed_recipe();
    FitReport report = train(images, callbacks);
    if (!report.orientation.checked) {  // no check: the recipe has none, or this run resumed past it
        report.orientation = state_.orientation;
        return report;
    }
    if (report.orientation.oriented) return report;
    const OrientationFinding finding = report.orientation;
    const double probing_seconds = report.seconds;
    RecipeDecision decision;
    decision.check = "orientation_check";
    char text[200];
    std::snprintf(text, sizeof text,
                  "the rotation head tells the quarter turns of %zu held-out images apart with t = %.3g "
                  "(0 by chance, %.3g needed): the images have no upright",
                  finding.images, finding.t, finding.required_t);
    decision.finding = text;
    decision.from_recipe = state_.options.recipe.name;
    decision.completed_epochs = report.epochs_completed;
    state_.adopt(state_.options.recipe.without_orientation());
    decision.to_recipe = state_.options.recipe.name;
    // The new recipe drops the rotation views (scoring and precise BN get 4x cheaper),
    // but training costs about the same per epoch.
    decision.estimated_seconds =
        report.epochs_completed > 0 ? probing_seconds / report.epochs_completed * state_.options.epochs : 0.0;
    if (callbacks.on_decision) callbacks.on_decision(decision);
    state_.trained = false;
    state_.orientation = finding;  // so that checkpoints of the second run record it
    report = train(images, callbacks);
    report.orientation = finding;
    report.decisions.insert(report.decisions.begin(), decision);
    report.seconds += probing_seconds;
    return report;
}

void Trainer::resume_checkpointed_recipe() {
    const DetectorOptions& options = state_.options;
    if (options.resume_from.empty() || !options.recipe.orientation_check.enabled) return;
    const Recipe fallback = options.recipe.without_orientation();
    const model_file::Reader reader = model_file::Reader::open(options.resume_from);
    const nlohmann::json& meta = reader.metadata();
    const nlohmann::json* detector = meta.contains("detector") ? &meta["detector"] : nullptr;
    if (!detector || !detector->contains("recipe") || (*detector)["recipe"].value("name", "") != fallback.name) return;
    state_.adopt(fallback);
    if (detector->contains("orientation_check"))
        state_.orientation = detector_file::orientation_finding_from_json((*detector)["orientation_check"]);
}

ValidationSplit ValidationSplit::draw(std::size_t count, float fraction, RandomStream& random) {
    std::vector<std::size_t> order(count);
    std::iota(order.begin(), order.end(), 0);
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[random.uniform_index(i)]);
    const std::size_t held_out = held_out_image_count(count, fraction);
    ValidationSplit split;
    split.validation.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(held_out));
    split.training.assign(order.begin() + static_cast<std::ptrdiff_t>(held_out), order.end());
    return split;
}

TrainingBatch::TrainingBatch(const DetectorOptions& options, Context& ctx)
    : ctx_(ctx), restoration_(options.recipe.restoration), size_(options.architecture.image_size),
      channels_(options.architecture.channels), count_(options.batch_size),
      clean_({options.batch_size, channels_, size_, size_}, ctx.device()),
      staging_(static_cast<std::size_t>(count_) * static_cast<std::size_t>(channels_ * size_ * size_)) {
    if (restoration_.enabled()) {
        corrupted_ = Tensor({options.batch_size, channels_, size_, size_}, ctx.device());
        corrupted_staging_.resize(staging_.size());
    }
}

void TrainingBatch::load(const SampleSource& samples, const std::size_t* indices, RandomStream& random) {
    const std::size_t sample = samples.sample_floats();
    for (std::size_t j = 0; j < static_cast<std::size_t>(count_); ++j) samples.copy(indices[j], staging_.data() + j * sample);
    copy_bytes(ctx_, clean_.data(), ctx_.device(), staging_.data(), Device::Cpu, staging_.size() * sizeof(float));
    if (restoration_.enabled()) {
        restoration_.corrupt(staging_.data(), corrupted_staging_.data(), count_, channels_, size_, random, &quarter_turns_);
        copy_bytes(ctx_, corrupted_.data(), ctx_.device(), corrupted_staging_.data(), Device::Cpu,
                   corrupted_staging_.size() * sizeof(float));
    }
}

std::optional<TensorView> TrainingBatch::generator_input() const {
    if (!restoration_.enabled()) return std::nullopt;
    return corrupted_.view();
}

const std::vector<int>* TrainingBatch::quarter_turns() const { return restoration_.enabled() ? &quarter_turns_ : nullptr; }

int Trainer::resume_checkpoint(RandomStream& random, const detector_file::TrainingData& data) {
    const DetectorOptions& options = state_.options;
    const model_file::Reader reader = model_file::Reader::open(options.resume_from);
    const Architecture a = reader.architecture();
    const Architecture& b = options.architecture;
    if (a.image_size != b.image_size || a.channels != b.channels || a.generator_features != b.generator_features ||
        a.discriminator_features != b.discriminator_features || a.latent_size != b.latent_size ||
        a.bottleneck_channels != b.bottleneck_channels || a.rotation_head != b.rotation_head)
        throw InvalidArgument("resume_from: the checkpoint's architecture differs from the options'");
    const std::optional<model_file::TrainingState> state = reader.training_state();
    if (!state) throw InvalidArgument("resume_from: '" + options.resume_from + "' is a model, not a checkpoint");
    // The same run: the same recipe, training settings and images, or the threshold could come
    // from images the first part trained on (another seed, fraction or data set draws another
    // split) and the result would match no uninterrupted run.
    const auto refuse = [&](const std::string& what, const std::string& expected, const std::string& found) {
        throw InvalidArgument("resume_from: '" + options.resume_from + "' is a checkpoint of another run: " + what +
                              ": expected " + expected + " (the checkpoint's), found " + found +
                              " (this fit's); resume with the options and data it was trained with");
    };
    const auto show = [](const nlohmann::json& value) {  // floats as written, not as double expansions
        if (!value.is_number_float()) return value.dump();
        char text[32];
        std::snprintf(text, sizeof text, "%.6g", value.get<double>());
        return std::string(text);
    };
    const nlohmann::json& meta = reader.metadata();
    if (meta.contains("detector") && meta["detector"].is_object()) {
        const nlohmann::json& d = meta["detector"];
        if (d.contains("training") && d["training"].is_object()) {
            const nlohmann::json ours = detector_file::training_to_json(options);
            for (const auto& [key, value] : d["training"].items())
                if (key != "epochs" && key != "threshold_quantile" && ours.contains(key) && ours[key] != value)
                    refuse(key, show(value), show(ours[key]));
            // Named only when not float32 (training_to_json): compare with that default.
            const std::string their_precision = d["training"].value("precision", std::string("float32"));
            const std::string our_precision = ours.value("precision", std::string("float32"));
            if (their_precision != our_precision) refuse("training precision", their_precision, our_precision);
        }
        if (d.contains("recipe")) {
            const nlohmann::json ours = detector_file::to_json(options.recipe);
            const nlohmann::json& theirs = d["recipe"];
            if (theirs.value("name", std::string()) != ours.value("name", std::string()))
                refuse("recipe", theirs.value("name", std::string("?")), ours.value("name", std::string("?")));
            for (const auto& [key, value] : theirs.items())
                if (!ours.contains(key) || ours[key] != value)
                    refuse("recipe setting '" + key + "'", show(value), ours.contains(key) ? show(ours[key]) : "none");
        }
    }
    // Checkpoints from before the fingerprint have none to compare.
    if (meta.contains("training_data")) {
        const detector_file::TrainingData theirs = detector_file::training_data_from_json(meta["training_data"]);
        if (!(theirs == data)) refuse("training data", detector_file::describe(theirs), detector_file::describe(data));
    }
    reader.load_into(*state_.model);
    random = RandomStream(options.seed, state->random_offset);
    return state->epochs_completed;
}

void Trainer::write_checkpoint(int epochs_completed, const RandomStream& random,
                               const detector_file::TrainingData& data) const {
    const SkipGanomaly& model = *state_.model;
    const model_file::TrainingState state{epochs_completed, random.offset(), model.generator_optimizer.steps(),
                                          model.discriminator_optimizer.steps()};
    model_file::save(state_.options.checkpoint_path, model,
                     {{"detector", detector_file::to_json(state_.record())}, {"training_data", detector_file::to_json(data)}},
                     &state);
}

void Trainer::learn_statistics(const std::vector<float>& normal_samples, std::size_t count) {
    SkipGanomaly& model = *state_.model;
    const BatchScores parts = scorer_.score_samples(model, normal_samples, count, false);
    if (model.discriminator.has_rotation_head()) {  // the scale of the two score parts, from these normal images
        std::vector<float> official(count);
        for (std::size_t i = 0; i < official.size(); ++i) official[i] = anomaly_score(parts.reconstruction[i], parts.latent[i]);
        model.set_score_standardisation(ScoreStandardisation::of(official, parts.rotation));
    }
    std::vector<float> scores(count);
    for (std::size_t i = 0; i < scores.size(); ++i) scores[i] = model.combined_score(parts, i);
    state_.statistics = describe(scores, state_.options.threshold_quantile);
    state_.pixel_statistics = scorer_.learn_pixel_statistics(model, normal_samples, scores.size(),
                                                             state_.pixel_statistics.threshold_quantile);
    state_.threshold = default_threshold(scores, state_.options.threshold_quantile);
    state_.threshold_source = "validation_quantile";
    state_.trained = true;
}

void Trainer::learn_tiled_statistics(const SampleSource& samples, const std::vector<std::size_t>& reference) {
    std::vector<ImageView> views;
    for (std::size_t i : reference) views.push_back(samples.image(i));
    const Scorer::ImageStatistics n =
        scorer_.image_statistics(*state_.model, views, true, state_.pixel_statistics.threshold_quantile);
    state_.statistics = describe(n.scores, state_.options.threshold_quantile);
    state_.pixel_statistics = n.pixel_statistics;
    state_.threshold = default_threshold(n.scores, state_.options.threshold_quantile);
    state_.threshold_source = "validation_quantile";
    state_.trained = true;
}

FitReport Trainer::train(std::span<const ImageView> images, const FitCallbacks& callbacks) {
    const DetectorOptions& options = state_.options;
    SkipGanomaly& model = *state_.model;
    const Clock::time_point start = Clock::now();
    SGA_CHECK_ARGUMENT(!images.empty(), "fit: the training set is empty");
    SampleSource samples(images, options.architecture.image_size, options.architecture.channels, options.tiling,
                         options.seed);

    // One stream fixes initialisation, the split, every shuffle and re-initialisation.
    RandomStream random(options.seed);
    Context& ctx = *state_.context;
    model.generator_optimizer.set_steps(0);
    model.discriminator_optimizer.set_steps(0);
    // Gradients and Adam's moments live for this fit only: a trained detector scores without
    // them (three copies of the weights less), and the next fit starts them from zero.
    model.allocate_training_buffers(ctx);
    model.generator.parameters.zero_moments(ctx);
    model.discriminator.parameters.zero_moments(ctx);
    struct ReleaseTrainingBuffers {
        SkipGanomaly& model;
        ~ReleaseTrainingBuffers() { model.release_training_buffers(); }
    } release_training_buffers{model};
    model.initialize(ctx, random);

    const ValidationSplit split = ValidationSplit::draw(samples.size(), options.validation_fraction, random);
    const std::vector<std::size_t>& training = split.training;
    const std::vector<std::size_t>& validation = split.validation;
    const std::size_t batch = static_cast<std::size_t>(options.batch_size);
    SGA_CHECK_ARGUMENT(training.size() >= batch,
                       "fit: " + std::to_string(training.size()) + " training images (after holding out " +
                           std::to_string(validation.size()) + " for validation) are fewer than one batch of " +
                           std::to_string(batch) + "; add images or lower batch_size");

    const int first_epoch = options.resume_from.empty() ? 0 : resume_checkpoint(random, samples.fingerprint());

    TrainingBatch training_batch(options, ctx);
    Tape tape(ctx);
    tape.set_convolution_precision(options.training_precision);
    TrainingSnapshot snapshot;
    snapshot.capture(model, random);

    // The stopping rule's yardstick: held-out normal images against CutPaste anomalies made
    // from them, drawn once from a stream of their own so training's stream is untouched.
    const Architecture& a = options.architecture;
    const std::vector<float> validation_samples = samples.gather(validation);
    std::vector<float> synthetic_samples;
    if (options.recipe.stopping == StoppingRule::BestSyntheticAnomalies) {
        RandomStream synthetic_random(options.seed ^ 0x5c7e11a5eedULL);
        synthetic_samples = make_cutpaste_anomalies(validation_samples, static_cast<std::int64_t>(validation.size()),
                                                    a.channels, a.image_size, synthetic_random);
    }
    TensorCopies best_weights;  // weight_views of the best epoch so far
    double best_synthetic_auroc = -1;

    FitReport report;
    report.training_images = training.size();
    report.validation_images = validation.size();
    report.epochs_completed = first_epoch;
    const std::size_t batches = training.size() / batch;  // the last partial batch is dropped
    const std::size_t total_batches = batches * static_cast<std::size_t>(options.epochs - first_epoch);
    std::size_t batches_done = 0;
    const Clock::time_point training_start = Clock::now();

    for (int epoch = first_epoch; epoch < options.epochs && !report.cancelled; ++epoch) {
        const Clock::time_point epoch_start = Clock::now();
        samples.set_round(static_cast<std::uint64_t>(epoch) + 1);  // with tiling, new tiles (round 0: validation)
        // Each epoch shuffles the same base order, so an epoch's batches depend only on the
        // stream position (which a checkpoint stores), not on earlier epochs' permutations.
        std::vector<std::size_t> epoch_order = training;
        for (std::size_t i = epoch_order.size(); i > 1; --i) std::swap(epoch_order[i - 1], epoch_order[random.uniform_index(i)]);
        EpochSummary summary;
        summary.epoch = epoch + 1;
        for (std::size_t b = 0; b < batches; ++b) {
            training_batch.load(samples, epoch_order.data() + b * batch, random);
            StepLosses losses;
            try {
                const SkipMask closed = options.recipe.skip_gating.draw_training_closed(random);
                losses = model.train_step(ctx, tape, training_batch.clean(), random, closed, training_batch.generator_input(),
                                          training_batch.quarter_turns());
            } catch (const NumericalError& e) {
                snapshot.restore(model, random);
                throw NumericalError(std::string(e.what()) + " at epoch " + std::to_string(epoch + 1) + ", batch " +
                                     std::to_string(b + 1) + "; the model was returned to the end of epoch " +
                                     std::to_string(report.epochs_completed));
            }
            add_losses(summary, losses);
            if (losses.discriminator_reinitialized) ++report.discriminator_reinits;
            ++batches_done;
            if (callbacks.on_batch) {
                TrainingProgress p;
                p.epoch = epoch + 1;
                p.epochs = options.epochs;
                p.batch = static_cast<int>(b + 1);
                p.batches = static_cast<int>(batches);
                p.losses = losses;
                p.discriminator_reinits = report.discriminator_reinits;
                p.elapsed_seconds = seconds_since(start);
                p.estimated_remaining_seconds = seconds_since(training_start) / static_cast<double>(batches_done) *
                                                static_cast<double>(total_batches - batches_done);
                callbacks.on_batch(p);
            }
            if (callbacks.cancel && callbacks.cancel->load()) {
                report.cancelled = true;
                break;
            }
        }
        if (report.cancelled) {
            snapshot.restore(model, random);
            break;
        }
        average_losses(summary, batches);
        const Recipe& recipe = options.recipe;
        const std::size_t steps_before = batches * static_cast<std::size_t>(epoch), steps = steps_before + batches;
        const std::size_t check_at = recipe.orientation_check.check_at_step(batches * static_cast<std::size_t>(options.epochs));
        const bool check_due = recipe.orientation_check.enabled && !validation.empty() && steps_before < check_at &&
                               steps >= check_at;
        if (check_due && validation.size() < static_cast<std::size_t>(recipe.orientation_check.min_images)) {
            report.warnings.push_back(
                "the orientation check was skipped: " + std::to_string(validation.size()) +
                " held-out image(s), it needs at least " + std::to_string(recipe.orientation_check.min_images) +
                " (one image would decide it); the recipe " + recipe.name +
                " keeps its rotation techniques unchecked. Hold out more images (validation_fraction) to check it");
        } else if (check_due) {
            report.orientation = check_orientation(samples, validation);
            if (!report.orientation.oriented) {
                report.epochs_completed = epoch + 1;  // discarded: they count in the fallback's decision
                report.seconds = seconds_since(start);
                return report;  // fit() trains again without the rotation techniques
            }
        }
        // Precise statistics now only when this epoch's model is looked at; else once at the end.
        const bool model_looked_at = recipe.stopping != StoppingRule::FinalEpoch || callbacks.on_epoch_model;
        if (recipe.recompute_batch_norm && model_looked_at) recompute_batch_norm(tape, training_batch.clean_tensor(), samples, training);
        if (recipe.stopping == StoppingRule::BestSyntheticAnomalies) {
            summary.synthetic_auroc = separation_auroc(validation_samples, synthetic_samples, validation.size());
            if (summary.synthetic_auroc > best_synthetic_auroc) {
                best_synthetic_auroc = summary.synthetic_auroc;
                best_weights.capture(weight_views(model));
                report.kept_epoch = epoch + 1;
            }
        } else {
            report.kept_epoch = epoch + 1;
        }
        summary.seconds = seconds_since(epoch_start);
        report.epochs.push_back(summary);
        report.epochs_completed = epoch + 1;
        snapshot.capture(model, random);
        if (callbacks.on_epoch) callbacks.on_epoch(summary);
        if (callbacks.on_epoch_model) callbacks.on_epoch_model(summary, model);
        if (options.checkpoint_every_epochs > 0 && report.epochs_completed % options.checkpoint_every_epochs == 0)
            write_checkpoint(report.epochs_completed, random, samples.fingerprint());
    }

    if (report.cancelled && report.epochs_completed == 0) {
        // Nothing was learnt: the initial weights stay, and the detector stays untrained, so
        // that save() refuses it rather than replace a good model with them.
        state_.trained = false;
        report.seconds = seconds_since(start);
        return report;
    }
    if (options.recipe.stopping == StoppingRule::BestSyntheticAnomalies && !best_weights.tensors.empty())
        best_weights.restore(weight_views(model));  // with the statistics recomputed for that epoch
    else if (options.recipe.recompute_batch_norm && report.epochs_completed > 0)
        recompute_batch_norm(tape, training_batch.clean_tensor(), samples, training);
    state_.kept_epoch = report.kept_epoch;
    if (report.orientation.checked) state_.orientation = report.orientation;
    model.pack_for_inference(ctx, options.precision);  // the weights are final: pack them once for scoring

    // Score statistics on the held-out normal images (the training images when none are
    // held out), and the default threshold from them.
    if (options.tiling.enabled()) learn_tiled_statistics(samples, validation.empty() ? training : validation);
    else if (validation.empty()) learn_statistics(samples.gather(training), training.size());
    else learn_statistics(validation_samples, validation.size());

    report.validation_scores = state_.statistics;
    report.threshold = state_.threshold.load();
    if (!validation.empty() && validation.size() < few_threshold_scores) {
        char text[400];
        std::snprintf(text, sizeof text,
                      "the threshold %.4g is the empirical %.4g quantile of only %zu held-out normal score(s) (with "
                      "fewer than %zu, threshold_from_normal_scores cannot fit its tail rule; with one, it is that "
                      "score): it may flag many normal images or miss anomalies. Hold out more images "
                      "(validation_fraction) or calibrate on more normal images",
                      static_cast<double>(report.threshold), decimal_level(options.threshold_quantile), validation.size(),
                      few_threshold_scores);
        report.warnings.push_back(text);
    }
    report.seconds = seconds_since(start);
    return report;
}

}  // namespace sga
