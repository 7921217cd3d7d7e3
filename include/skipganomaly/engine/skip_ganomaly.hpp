// Skip-GANomaly: the two networks, their optimisers, one training step and batch scoring,
// as the official implementation computes them (see docs/official-mapping.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <vector>

#include "skipganomaly/anomaly_map.hpp"
#include "skipganomaly/engine/networks.hpp"
#include "skipganomaly/model_options.hpp"
#include "skipganomaly/restoration.hpp"
#include "skipganomaly/rotation_prediction.hpp"

namespace sga {

// Per-image anomaly score parts of one batch.
struct BatchScores {
    std::vector<float> reconstruction;  // (N): mean over C,H,W of (x - x_hat)^2
    std::vector<float> latent;          // (N): mean over nz of (f(x) - f(x_hat))^2
    // (N, S, S) the anomaly map of map_rule (anomaly_map.hpp), when asked for: by default the
    // channel-mean (x - x_hat)^2
    std::vector<float> error_maps;
    std::vector<float> map_score;       // (N): the map's image score, when map_rule scores from the map
    std::vector<float> rotation;        // (N): the rotation error, with a rotation head (rotation_prediction.hpp)

    // Appends the images of `more` after these: every part, so a new part is added here only.
    void append(const BatchScores& more) {
        auto extend = [](std::vector<float>& to, const std::vector<float>& from) { to.insert(to.end(), from.begin(), from.end()); };
        extend(reconstruction, more.reconstruction);
        extend(latent, more.latent);
        extend(error_maps, more.error_maps);
        extend(map_score, more.map_score);
        extend(rotation, more.rotation);
    }
    // Image i alone, with its map (of `plane` pixels) when `with_map` and the maps were kept.
    BatchScores image(std::size_t i, std::size_t plane, bool with_map) const {
        auto one = [i](const std::vector<float>& v) { return v.empty() ? std::vector<float>{} : std::vector<float>{v[i]}; };
        BatchScores out{one(reconstruction), one(latent), {}, one(map_score), one(rotation)};
        if (with_map && !error_maps.empty())
            out.error_maps.assign(error_maps.begin() + static_cast<std::ptrdiff_t>(i * plane),
                                  error_maps.begin() + static_cast<std::ptrdiff_t>((i + 1) * plane));
        return out;
    }
};

// What the model does beyond the official step and score, fixed when it is made (Detector
// makes it from its Recipe, recipe.hpp). Defaults: the official model.
struct ModelTechniques {
    float reinit_threshold = 1e-5f;     // D is re-initialised when its loss falls below this
    SkipMask scoring_closed_skips = 0;  // generator skips closed when scoring (SkipGating); 0: official
    Restoration restoration;            // the restoration trained for, whose scoring views score() averages
    RotationPrediction rotation_prediction;  // its weights, when the discriminator has a rotation head
    AnomalyMapRule map_rule;            // how error maps and, with a local rule, image scores are made
};

// The official score weights: 0.9 x reconstruction + 0.1 x latent.
inline float anomaly_score(float reconstruction, float latent) { return 0.9f * reconstruction + 0.1f * latent; }

class SkipGanomaly {
public:
    SkipGanomaly(const Architecture& arch, const AdamHyperparameters& adam, const LossWeights& weights,
                 const ModelTechniques& techniques = {})
        : generator(arch),
          discriminator(arch),
          generator_optimizer(adam),
          discriminator_optimizer(adam),
          weights(weights),
          techniques_(techniques) {}

    const Architecture& architecture() const { return generator.architecture(); }

    // Weights and statistics: what scoring needs. The training buffers (gradients and Adam's
    // moments, three more copies of the weights) come with the first train_step, or with
    // allocate_training_buffers, and go with release_training_buffers.
    void materialize(Context& ctx) {
        generator.materialize(ctx);
        discriminator.materialize(ctx);
    }
    void allocate_training_buffers(Context& ctx) {
        generator.parameters.allocate_training_buffers(ctx);
        discriminator.parameters.allocate_training_buffers(ctx);
    }
    void release_training_buffers() {
        generator.parameters.release_training_buffers();
        discriminator.parameters.release_training_buffers();
    }
    bool has_training_buffers() const { return generator.parameters.has_training_buffers(); }
    // Generator first, then discriminator, from one stream: one seed fixes both.
    void initialize(Context& ctx, RandomStream& random) {
        generator.initialize(ctx, random);
        discriminator.initialize(ctx, random);
    }
    // Packs both networks' convolution weights for scoring (Network::packed): call it when the
    // weights are final; train_step and initialize discard the packing. `precision`: the
    // arithmetic of the scoring convolutions, where the device runs it (packed_precision()).
    void pack_for_inference(Context& ctx, Precision precision = Precision::Float32) {
        generator.pack_for_inference(ctx, precision);
        discriminator.pack_for_inference(ctx, precision);
    }
    // What scoring computes in: the precision of the packed weights (Float32 when unpacked).
    Precision packed_precision() const { return generator.packed_precision(); }
    void discard_packed_weights() {
        generator.discard_packed_weights();
        discriminator.discard_packed_weights();
    }

    // One optimisation step on `images` (N, nc, S, S) in [-1, 1] on ctx's device, as the
    // official optimize_params under PyTorch 1.2:
    //   x_hat = G(x); (p_real, f_real) = D(x); (p_fake, f_fake) = D(x_hat)
    //   G loss = w_adv BCE(p_fake, 1) + w_con L1(x_hat, x) + w_lat MSE(f_fake, f_real); G step
    //   D loss = BCE(p_real, 1) + BCE(D(x_hat detached), 0) + w_lat MSE(f_fake, f_real),
    //   back-propagated into D only (values from before the G step); D step
    //   D re-initialised when its loss falls below `reinit_threshold`.
    // `closed_skips` closes generator skips for this step (SkipGating); `generator_input`, when
    // given (same shape as images), is what G sees instead of x (restoration training,
    // restoration.hpp): every loss still compares with the clean x. With a rotation head,
    // `generator_input_turns` gives each generator input's quarter turn, and D's loss adds
    // rotation_prediction.loss_weight x the head's BCE on the generator inputs (after the
    // official passes, so they are unchanged). Defaults: the official step.
    // Resets the tape and ctx's arena first. Throws NumericalError, before touching any
    // weight, when a loss is not finite.
    StepLosses train_step(Context& ctx, Tape& tape, TensorView images, RandomStream& random, SkipMask closed_skips = 0,
                          std::optional<TensorView> generator_input = std::nullopt,
                          const std::vector<int>* generator_input_turns = nullptr) {
        if (discriminator.has_rotation_head())
            SGA_CHECK_ARGUMENT(generator_input && generator_input_turns &&
                                   static_cast<std::int64_t>(generator_input_turns->size()) == images.shape()[0],
                               "a rotation head trains on the turned generator inputs: give them and their turns");
        tape.clear();
        ctx.arena().reset();
        discard_packed_weights();  // the step changes the weights they were packed from
        allocate_training_buffers(ctx);
        StepLosses out;
        Var x = tape.constant(images);
        Var x_hat = generator.forward(tape, generator_input ? tape.constant(*generator_input) : x,
                                      BatchNormMode::Training, closed_skips);
        ++generator.training_passes;
        const Discriminator::Output real = discriminator.forward(tape, x, BatchNormMode::Training);
        const Discriminator::Output fake = discriminator.forward(tape, x_hat, BatchNormMode::Training);
        discriminator.training_passes += 2;

        Var g_adv = ops::scale(ops::bce_loss(fake.prediction, ops::full_like(fake.prediction, 1.0f)), weights.adversarial);
        Var g_con = ops::scale(ops::l1_loss(x_hat, x), weights.contextual);
        Var g_lat = ops::scale(ops::mse_loss(fake.features, real.features), weights.latent);
        Var g_loss = ops::add(ops::add(g_adv, g_con), g_lat);
        out.generator = item(g_loss);
        out.generator_adversarial = item(g_adv);
        out.generator_contextual = item(g_con);
        out.generator_latent = item(g_lat);
        require_finite(out.generator, "generator");

        generator.parameters.zero_grad(ctx);
        tape.backward(g_loss);
        generator_optimizer.step(ctx, generator.parameters);

        // The detached re-run only updates D's running statistics a third time, as the
        // official backward_d does; its values equal fake.prediction's.
        const Discriminator::Output fake_detached = discriminator.forward(tape, tape.constant(x_hat.value()), BatchNormMode::Training);
        ++discriminator.training_passes;
        Var d_real = ops::bce_loss(real.prediction, ops::full_like(real.prediction, 1.0f));
        Var d_fake = ops::bce_loss(fake_detached.prediction, ops::full_like(fake_detached.prediction, 0.0f));
        Var d_loss = ops::add(ops::add(d_real, d_fake), g_lat);
        if (discriminator.has_rotation_head()) {
            const std::vector<float> targets = rotation_targets(*generator_input_turns);
            const TensorView target = tape.allocate({images.shape()[0], 4, 1, 1});
            copy_bytes(ctx, target.data(), target.device(), targets.data(), Device::Cpu, targets.size() * sizeof(float));
            Var logits = discriminator.rotation_logits(tape, tape.constant(*generator_input), BatchNormMode::Training);
            ++discriminator.training_passes;
            Var d_rot = ops::scale(ops::bce_loss(ops::sigmoid(logits), tape.constant(target)), techniques_.rotation_prediction.loss_weight);
            out.discriminator_rotation = item(d_rot);
            d_loss = ops::add(d_loss, d_rot);
        }
        out.discriminator = item(d_loss);
        out.discriminator_real = item(d_real);
        out.discriminator_fake = item(d_fake);
        require_finite(out.discriminator, "discriminator");

        discriminator.parameters.zero_grad(ctx);
        tape.backward(d_loss, {x_hat});
        discriminator_optimizer.step(ctx, discriminator.parameters);
        if (out.discriminator < techniques_.reinit_threshold) {
            discriminator.reinitialize_weights(ctx, random);
            out.discriminator_reinitialized = true;
        }
        return out;
    }

    // Precise batch norm: sets every running statistic of both networks to the exact mean of
    // the batch statistics that training-mode forwards in the scoring configuration
    // (scoring_closed_skips, and every scoring view of the restoration, stacked as score()
    // stacks them) compute over `batches` batches; batch(k) gives batch k
    // (N, nc, S, S) on ctx's device. The discriminator's statistics average its passes over
    // real and reconstructed images, the two inputs it sees when scoring (and, with a rotation
    // head, the generator's inputs, the third). Changes no weight.
    void recompute_batch_norm_statistics(Context& ctx, Tape& tape, int batches, const std::function<TensorView(int)>& batch) {
        SGA_CHECK_ARGUMENT(batches >= 1, "recompute_batch_norm_statistics needs at least one batch");
        for (int k = 0; k < batches; ++k) {
            tape.clear();
            ctx.arena().reset();
            NoGradGuard no_grad(tape);
            const ScoringInputs in = scoring_inputs(ctx, tape, batch(k));
            Var x = tape.constant(in.target);
            generator.set_batch_norm_momentum(1.0f / static_cast<float>(k + 1));
            Var x_hat = generator.forward(tape, tape.constant(in.generator_input), BatchNormMode::Training, techniques_.scoring_closed_skips);
            const int passes = discriminator.has_rotation_head() ? 3 : 2;
            discriminator.set_batch_norm_momentum(1.0f / static_cast<float>(passes * k + 1));
            discriminator.forward(tape, x, BatchNormMode::Training);
            discriminator.set_batch_norm_momentum(1.0f / static_cast<float>(passes * k + 2));
            discriminator.forward(tape, x_hat, BatchNormMode::Training);
            if (passes == 3) {
                discriminator.set_batch_norm_momentum(1.0f / static_cast<float>(passes * k + 3));
                discriminator.rotation_logits(tape, tape.constant(in.generator_input), BatchNormMode::Training);
            }
        }
        generator.set_batch_norm_momentum(0.1f);
        discriminator.set_batch_norm_momentum(0.1f);
        tape.clear();
        ctx.arena().reset();
    }

    // Score parts for `images` (N, nc, S, S) on ctx's device, with the skips in
    // scoring_closed_skips closed. With a rotation restoration, each part is the mean over
    // the restoration's V scoring views (the input rotated and greyed; G restores the upright
    // x), computed as one batch of V x N (in BatchStatistics mode, batch norm then averages
    // over all V x N). Resets the tape and the arena. Reads the weights only, so concurrent
    // calls with separate contexts are safe; on the CPU at most cpu_threads() of them compute
    // at once and the others wait (CpuAdmission, device.hpp).
    BatchScores score(Context& ctx, Tape& tape, TensorView images, BatchNormMode mode, bool with_error_maps) const {
        SGA_CHECK_ARGUMENT(mode != BatchNormMode::Training, "scoring never updates the running statistics");
        return score_units(ctx, tape, images, mode, with_error_maps, 1);
    }

    // Scores each of the N `images` exactly as score() scores it alone, bit for bit, in one
    // pass with running statistics: the images are N independent units on the tape
    // (Tape::independent_units), so every convolution whose prepared kernel serves one image
    // reads its weight once for all N (the weight-bound layers of a lone image's score), and
    // every other runs once per image. ScoreBatcher (score_batcher.hpp) scores concurrent
    // callers' images this way.
    BatchScores score_independent(Context& ctx, Tape& tape, TensorView images, bool with_error_maps) const {
        const std::int64_t units = std::max<std::int64_t>(1, images.shape()[0]);  // an empty batch: as score()
        return score_units(ctx, tape, images, BatchNormMode::RunningStatistics, with_error_maps, units);
    }

    // The anomaly score of image i of `parts`: the official 0.9 x reconstruction + 0.1 x
    // latent, or with a rotation head the standardised combination of rotation_prediction.hpp.
    float combined_score(const BatchScores& parts, std::size_t i) const {
        if (techniques_.map_rule.score_needs_map()) return parts.map_score[i];
        const float official = anomaly_score(parts.reconstruction[i], parts.latent[i]);
        if (!discriminator.has_rotation_head()) return official;
        const ScoreStandardisation& s = score_standardisation_;
        const double w = techniques_.rotation_prediction.score_weight;
        return static_cast<float>((1 - w) * (official - s.official_mean) / s.official_std +
                                  w * (parts.rotation[i] - s.rotation_mean) / s.rotation_std);
    }

    // The orientation check's margin of each of the N `images` (N, nc, S, S) on ctx's device
    // (orientation_check.hpp): over the 4 quarter turns v, the mean of the rotation head's
    // logit for v less the mean of its 3 other logits, on the image turned v times. Resets
    // the tape and the arena; reads the weights only.
    std::vector<double> rotation_margins(Context& ctx, Tape& tape, TensorView images, BatchNormMode mode) const {
        SGA_CHECK_ARGUMENT(mode != BatchNormMode::Training, "the orientation check never updates the running statistics");
        SGA_CHECK_ARGUMENT(discriminator.has_rotation_head() && techniques_.restoration.corruption == Corruption::Rotation,
                           "the orientation check needs a rotation head and the rotation restoration");
        tape.clear();
        ctx.arena().reset();
        NoGradGuard no_grad(tape);
        const ScoringInputs in = scoring_inputs(ctx, tape, images);  // view v of image i at row v x N + i
        const std::vector<float> logits =
            host_values(ctx, discriminator.rotation_logits(tape, tape.constant(in.generator_input), mode).value());
        const std::size_t n = static_cast<std::size_t>(images.shape()[0]);
        std::vector<double> margins(n, 0.0);
        for (std::size_t v = 0; v < 4; ++v)
            for (std::size_t i = 0; i < n; ++i) {
                const float* row = logits.data() + 4 * (v * n + i);
                const double others = (double{row[0]} + row[1] + row[2] + row[3] - row[v]) / 3;
                margins[i] += (row[v] - others) / 4;
            }
        return margins;
    }

    Generator generator;
    Discriminator discriminator;
    Adam generator_optimizer;
    Adam discriminator_optimizer;
    LossWeights weights;

    const ModelTechniques& techniques() const { return techniques_; }
    // Learnt by Detector::fit from normal images, with a rotation head (rotation_prediction.hpp).
    const ScoreStandardisation& score_standardisation() const { return score_standardisation_; }
    void set_score_standardisation(const ScoreStandardisation& s) { score_standardisation_ = s; }

private:
    ModelTechniques techniques_;
    ScoreStandardisation score_standardisation_;

    // score() of `units` equal units of `images` together (1: one batch), each unit getting the
    // bits score() gives it alone (units > 1: running statistics only).
    BatchScores score_units(Context& ctx, Tape& tape, TensorView images, BatchNormMode mode, bool with_error_maps,
                            std::int64_t units) const {
        SGA_CHECK_ARGUMENT(units == 1 || mode == BatchNormMode::RunningStatistics,
                           "with batch statistics a score depends on its batch: independent units need running statistics");
        SGA_CHECK_ARGUMENT(images.shape()[0] % units == 0, "the images do not divide into the independent units");
        const CpuAdmission admitted(ctx.device() == Device::Cpu);  // at most cpu_threads() callers compute at once
        tape.clear();
        ctx.arena().reset();
        const IndependentUnitsGuard independent(tape, units);
        const std::int64_t views = techniques_.restoration.scoring_views();
        const bool maps = with_error_maps || techniques_.map_rule.score_needs_map();
        const ScoringInputs in = scoring_inputs(ctx, tape, images, units);
        BatchScores all = score_view(ctx, tape, in.target, in.generator_input, mode, maps, units);
        if (discriminator.has_rotation_head()) all.rotation = rotation_errors(ctx, tape, in.generator_input, mode, units);
        BatchScores out = views == 1 ? std::move(all) : mean_over_views(all, images.shape(), units, views, maps);
        if (maps) finish_maps(out, images.shape(), with_error_maps);
        return out;
    }

    // The mean over the V scoring views of each part of `all`, whose row (u x V + v) x m + j is
    // view v of image j of unit u (m images a unit).
    static BatchScores mean_over_views(const BatchScores& all, const Shape& s, std::int64_t units, std::int64_t views,
                                       bool maps) {
        const std::size_t count = static_cast<std::size_t>(s[0]), plane = static_cast<std::size_t>(s[2] * s[3]);
        const std::size_t m = count / static_cast<std::size_t>(units), v_count = static_cast<std::size_t>(views);
        BatchScores mean;
        mean.reconstruction.assign(count, 0.0f);
        mean.latent.assign(count, 0.0f);
        if (!all.rotation.empty()) mean.rotation.assign(count, 0.0f);
        if (maps) mean.error_maps.assign(count * plane, 0.0f);
        const float scale = 1.0f / static_cast<float>(views);
        for (std::size_t v = 0; v < v_count; ++v)
            for (std::size_t i = 0; i < count; ++i) {
                const std::size_t row = ((i / m) * v_count + v) * m + i % m;
                mean.reconstruction[i] += scale * all.reconstruction[row];
                mean.latent[i] += scale * all.latent[row];
                if (!all.rotation.empty()) mean.rotation[i] += scale * all.rotation[row];
                for (std::size_t p = 0; maps && p < plane; ++p)
                    mean.error_maps[i * plane + p] += scale * all.error_maps[row * plane + p];
            }
        return mean;
    }

    // Smooths the maps of `parts` (map_rule), takes their image scores when the rule scores
    // from the map, and drops the maps when the caller did not ask for them.
    void finish_maps(BatchScores& parts, const Shape& s, bool keep_maps) const {
        const std::int64_t count = s[0], plane = s[2] * s[3];
        smooth_maps(parts.error_maps.data(), count, s[2], s[3], techniques_.map_rule.smoothing_sigma);
        if (techniques_.map_rule.score_needs_map()) {
            parts.map_score.resize(static_cast<std::size_t>(count));
            for (std::int64_t i = 0; i < count; ++i)
                parts.map_score[static_cast<std::size_t>(i)] = map_image_score(parts.error_maps.data() + i * plane, plane);
        }
        if (!keep_maps) parts.error_maps = {};
    }

    struct ScoringInputs {
        TensorView generator_input;  // (V x N, nc, S, S): view v of image j of unit u at (u x V + v) x m + j
        TensorView target;           // (V x N, nc, S, S): the clean images, V times, in the same order
    };
    // What scoring feeds G and compares with: the images themselves, or (V > 1) the
    // restoration's V scoring views stacked in the arena, with the clean images repeated;
    // each of the `units` equal units of m images stacked as one batch of them alone would be.
    ScoringInputs scoring_inputs(Context& ctx, Tape& tape, TensorView images, std::int64_t units = 1) const {
        const std::int64_t views = techniques_.restoration.scoring_views();
        if (views == 1) return {images, images};
        const Shape& s = images.shape();
        const std::int64_t n = s[0], m = n / units, sample = s[1] * s[2] * s[3];
        const std::vector<float> clean = host_values(ctx, images);
        std::vector<float> inputs(static_cast<std::size_t>(views * n * sample)), targets(inputs.size());
        for (std::int64_t u = 0; u < units; ++u) {
            const float* unit_images = clean.data() + u * m * sample;
            for (std::int64_t v = 0; v < views; ++v) {
                const std::int64_t at = (u * views + v) * m * sample;
                techniques_.restoration.scoring_view(unit_images, inputs.data() + at, m, s[1], s[2], static_cast<int>(v));
                std::copy(unit_images, unit_images + m * sample, targets.begin() + at);
            }
        }
        const Shape stacked{views * n, s[1], s[2], s[3]};
        ScoringInputs out{tape.allocate(stacked), tape.allocate(stacked)};
        copy_bytes(ctx, out.generator_input.data(), out.generator_input.device(), inputs.data(), Device::Cpu,
                   inputs.size() * sizeof(float));
        copy_bytes(ctx, out.target.data(), out.target.device(), targets.data(), Device::Cpu, targets.size() * sizeof(float));
        return out;
    }

    // The rotation error of each generator input (V x N, laid out as scoring_inputs lays them).
    std::vector<float> rotation_errors(Context& ctx, Tape& tape, TensorView inputs, BatchNormMode mode,
                                       std::int64_t units) const {
        SGA_CHECK_ARGUMENT(techniques_.restoration.corruption == Corruption::Rotation,
                           "a rotation head scores the rotation restoration's four views");
        NoGradGuard no_grad(tape);
        const std::vector<float> logits = host_values(ctx, discriminator.rotation_logits(tape, tape.constant(inputs), mode).value());
        const std::int64_t per_unit = inputs.shape()[0] / units, m = per_unit / techniques_.restoration.scoring_views();
        std::vector<float> errors(static_cast<std::size_t>(inputs.shape()[0]));
        for (std::size_t i = 0; i < errors.size(); ++i)
            errors[i] = rotation_error(logits.data() + 4 * i, static_cast<int>(static_cast<std::int64_t>(i) % per_unit / m));
        return errors;
    }

    // x_hat = G(generator_input); parts compare x_hat and f(x_hat) with the clean `images`.
    // Per unit of the `units` equal units, the discriminator sees [x; x_hat] as a lone unit's
    // batch. Uses the tape and arena as they are (the caller resets them).
    BatchScores score_view(Context& ctx, Tape& tape, TensorView images, TensorView generator_input, BatchNormMode mode,
                           bool with_error_maps, std::int64_t units) const {
        NoGradGuard no_grad(tape);
        const Shape& s = images.shape();
        const std::int64_t n = s[0], m = n / units, sample = s[1] * s[2] * s[3];
        // Unit u's [x; x_hat] at 2 m u: the parts compare its halves, and with running
        // statistics the discriminator sees it as one batch of 2m.
        const TensorView both = tape.allocate({2 * n, s[1], s[2], s[3]});
        auto x = [&](std::int64_t u) { return both.slice_batch(2 * m * u, m); };
        auto x_hat = [&](std::int64_t u) { return both.slice_batch(2 * m * u + m, m); };
        const std::size_t unit_bytes = static_cast<std::size_t>(m * sample) * sizeof(float);
        for (std::int64_t u = 0; u < units; ++u)
            copy_bytes(ctx, x(u).data(), both.device(), images.data() + u * m * sample, images.device(), unit_bytes);
        {
            // The generator's activations die here, so the discriminator reuses their memory.
            Arena::Scope generator_activations(ctx.arena());
            const Var g = generator.forward(tape, tape.constant(generator_input), mode, techniques_.scoring_closed_skips);
            for (std::int64_t u = 0; u < units; ++u)
                copy_bytes(ctx, x_hat(u).data(), both.device(), g.value().data() + u * m * sample, g.value().device(),
                           unit_bytes);
        }
        TensorView features, f_real, f_fake;
        if (mode == BatchNormMode::RunningStatistics) {
            // With running statistics an image's features do not depend on its batch.
            features = discriminator.forward(tape, tape.constant(both), mode).features.value();
        } else {  // batch statistics: each half must be normalised over itself, as the official code does
            SGA_CHECK_ARGUMENT(units == 1, "batch statistics score one batch");
            f_real = discriminator.forward(tape, tape.constant(x(0)), mode).features.value();
            f_fake = discriminator.forward(tape, tape.constant(x_hat(0)), mode).features.value();
        }
        TensorView per_sample = tape.allocate({2, n});
        for (std::int64_t u = 0; u < units; ++u) {
            if (mode == BatchNormMode::RunningStatistics) {
                f_real = features.slice_batch(2 * m * u, m);
                f_fake = features.slice_batch(2 * m * u + m, m);
            }
            kernels::per_sample_mse(ctx, m, sample, x(u).data(), x_hat(u).data(), per_sample.data() + u * m);
            kernels::per_sample_mse(ctx, m, f_real.numel() / m, f_real.data(), f_fake.data(), per_sample.data() + n + u * m);
        }
        const std::vector<float> parts = host_values(ctx, per_sample);
        BatchScores out;
        out.reconstruction.assign(parts.begin(), parts.begin() + n);
        out.latent.assign(parts.begin() + n, parts.end());
        if (with_error_maps) {
            const std::int64_t channels = s[1], plane = s[2] * s[3];
            out.error_maps.assign(static_cast<std::size_t>(n * plane), 0.0f);
            for (std::int64_t u = 0; u < units; ++u) {
                const std::vector<float> input = host_values(ctx, x(u)), output = host_values(ctx, x_hat(u));
                for (std::int64_t i = 0; i < m; ++i)
                    for (std::int64_t c = 0; c < channels; ++c)
                        for (std::int64_t p = 0; p < plane; ++p) {
                            const std::size_t at = static_cast<std::size_t>((i * channels + c) * plane + p);
                            const float d = input[at] - output[at];
                            const float e = techniques_.map_rule.error == MapError::Squared ? d * d : std::abs(d);
                            out.error_maps[static_cast<std::size_t>((u * m + i) * plane + p)] += e / static_cast<float>(channels);
                        }
            }
        }
        return out;
    }

    static void require_finite(float loss, const char* which) {
        if (!std::isfinite(loss))
            throw NumericalError(std::string("training diverged: the ") + which +
                                 " loss is not finite");
    }
};

}  // namespace sga
