#include "scoring.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "skipganomaly/metrics.hpp"
#include "statistics.hpp"

namespace sga {
namespace {

// Images one pass of the score batcher may hold: 16 at isize 32, a quarter of that per
// doubling of the size, 1 from isize 128 (a pass's activations grow with its pixels, and at
// large sizes the weights, which the images of a pass share, are a small part of the work);
// never more than score_batch_size. Sizes are clamped: it may see options not yet validated.
std::int64_t images_per_pass(const DetectorOptions& o) {
    const std::int64_t size = std::max(32, o.architecture.image_size);
    return std::clamp<std::int64_t>(16 * 32 * 32 / (size * size), 1, std::max(1, o.score_batch_size));
}

BatchNormMode batch_norm_mode(ScoringMode mode) {
    return mode == ScoringMode::RunningStatistics ? BatchNormMode::RunningStatistics : BatchNormMode::BatchStatistics;
}

// Sets r's threshold, decision and normalized score from r.score.
void decide(ScoreResult& r, const ResultScale& scale) {
    if (!std::isfinite(r.score)) throw NumericalError("the model produced a non-finite score; its weights are damaged");
    r.threshold = scale.threshold;
    r.is_anomaly = r.score >= r.threshold;
    const double range = scale.statistics.max - scale.statistics.min;
    const double normalized = (r.score - r.threshold) / (range > 0 ? range : 1.0) + 0.5;
    r.normalized_score = static_cast<float>(std::clamp(normalized, 0.0, 1.0));
}

ScoreResult make_result(const SkipGanomaly& model, const BatchScores& parts, std::size_t i, const ResultScale& scale) {
    ScoreResult r;
    r.reconstruction_error = parts.reconstruction[i];
    r.latent_error = parts.latent[i];
    if (!parts.rotation.empty()) r.rotation_error = parts.rotation[i];
    r.score = model.combined_score(parts, i);
    decide(r, scale);
    return r;
}

// Fills r's normalized anomaly map and binary mask from r.anomaly_map and the pixel threshold.
void fill_mask(ScoreResult& r, const PixelStatistics& p) {
    const double range = p.max - p.min > 0 ? p.max - p.min : 1.0;
    r.normalized_anomaly_map.resize(r.anomaly_map.size());
    r.anomaly_mask.resize(r.anomaly_map.size());
    for (std::size_t k = 0; k < r.anomaly_map.size(); ++k) {
        const double v = r.anomaly_map[k];
        r.normalized_anomaly_map[k] = static_cast<float>(std::clamp((v - p.threshold) / range + 0.5, 0.0, 1.0));
        r.anomaly_mask[k] = v >= p.threshold ? 1 : 0;
    }
}

void check_mask_possible(const ScoreOptions& so, const ResultScale& scale) {
    SGA_CHECK_ARGUMENT(!so.anomaly_mask || scale.pixel_statistics.count > 0,
                       "an anomaly mask needs a pixel threshold, and this model has none (a converted "
                       "model, or a file from before pixel thresholds): calibrate it on normal images first");
}

// Pixels pooled for pixel statistics: the quantile is stable long before, and the maps of
// 20,000 large images would not fit in memory.
constexpr std::size_t max_pooled_pixels = std::size_t{1} << 24;

}  // namespace

Scorer::Scorer(const DetectorOptions& options, Device device)
    : device_(device), image_size_(options.architecture.image_size), channels_(options.architecture.channels),
      score_batch_size_(options.score_batch_size), tiling_(options.tiling), default_mode_(options.scoring_mode),
      sample_floats_(static_cast<std::int64_t>(channels_) * image_size_ * image_size_),
      batcher_(images_per_pass(options)) {}

std::unique_ptr<Scorer::Slot> Scorer::acquire_slot() const {
    {
        std::lock_guard lock(pool_mutex_);
        if (!pool_.empty()) {
            std::unique_ptr<Slot> slot = std::move(pool_.back());
            pool_.pop_back();
            return slot;
        }
    }
    auto slot = std::make_unique<Slot>(device_);
    slot->input = Tensor({score_batch_size_, channels_, image_size_, image_size_}, device_);
    return slot;
}

void Scorer::release_slot(std::unique_ptr<Slot> slot) const {
    std::lock_guard lock(pool_mutex_);
    pool_.push_back(std::move(slot));
}

BatchScores Scorer::score_samples(const SkipGanomaly& model, const std::vector<float>& samples, std::size_t count,
                                  bool maps, std::optional<ScoringMode> scoring_mode,
                                  std::vector<float>* reconstructions) const {
    const BatchNormMode mode = batch_norm_mode(scoring_mode.value_or(default_mode_));
    // One image on the CPU with running statistics: through the batcher, which scores the
    // images of concurrent callers in one pass, each exactly as alone (score_batcher.hpp).
    if (count == 1 && mode == BatchNormMode::RunningStatistics && device_ == Device::Cpu && !reconstructions)
        return batcher_.score(model, samples.data(), maps);
    const SlotLease lease(*this);
    Slot& slot = *lease;
    if (reconstructions) reconstructions->clear();
    BatchScores all;
    const std::size_t chunk = static_cast<std::size_t>(score_batch_size_), sample = static_cast<std::size_t>(sample_floats_);
    for (std::size_t first = 0; first < count; first += chunk) {
        const std::size_t n = std::min(chunk, count - first);
        TensorView batch = slot.input.view().slice_batch(0, static_cast<std::int64_t>(n));
        copy_bytes(slot.ctx, batch.data(), batch.device(), samples.data() + first * sample, Device::Cpu,
                   n * sample * sizeof(float));
        all.append(model.score(slot.ctx, slot.tape, batch, mode, maps));
        if (reconstructions) {
            // A second generator pass on the same batch in the same mode: SkipGanomaly::score
            // keeps G(x) to itself, and reconstructions are opt-in, so only those asking pay.
            const std::vector<float> x_hat = reconstruct(model, slot, batch, mode);
            reconstructions->insert(reconstructions->end(), x_hat.begin(), x_hat.end());
        }
    }
    return all;
}

std::vector<float> Scorer::reconstruct(const SkipGanomaly& model, Slot& slot, TensorView batch, BatchNormMode mode) const {
    slot.tape.clear();
    slot.ctx.arena().reset();
    NoGradGuard no_grad(slot.tape);
    // The upright scoring view: the image itself, greyed when the recipe restores colour.
    const Shape& s = batch.shape();
    const std::vector<float> clean = host_values(slot.ctx, batch);
    std::vector<float> upright(clean.size());
    model.techniques().restoration.scoring_view(clean.data(), upright.data(), s[0], s[1], s[2], 0);
    TensorView input = slot.tape.allocate(s);
    copy_bytes(slot.ctx, input.data(), input.device(), upright.data(), Device::Cpu, upright.size() * sizeof(float));
    Var x_hat = model.generator.forward(slot.tape, slot.tape.constant(input), mode, model.techniques().scoring_closed_skips);
    return host_values(slot.ctx, x_hat.value());
}

std::vector<double> Scorer::rotation_margins(const SkipGanomaly& model, const std::vector<float>& samples,
                                             std::size_t count, BatchNormMode mode) const {
    const SlotLease lease(*this);
    Slot& slot = *lease;
    const std::size_t chunk = static_cast<std::size_t>(score_batch_size_), sample = static_cast<std::size_t>(sample_floats_);
    std::vector<double> margins;
    for (std::size_t first = 0; first < count; first += chunk) {
        const std::size_t n = std::min(chunk, count - first);
        TensorView batch = slot.input.view().slice_batch(0, static_cast<std::int64_t>(n));
        copy_bytes(slot.ctx, batch.data(), batch.device(), samples.data() + first * sample, Device::Cpu,
                   n * sample * sizeof(float));
        const std::vector<double> part = model.rotation_margins(slot.ctx, slot.tape, batch, mode);
        margins.insert(margins.end(), part.begin(), part.end());
    }
    return margins;
}

std::vector<ScoreResult> Scorer::score(const SkipGanomaly& model, const std::vector<float>& samples,
                                       const std::vector<std::pair<int, int>>& sizes, const ScoreOptions& so,
                                       const ResultScale& scale) const {
    check_mask_possible(so, scale);
    const bool maps = so.anomaly_map || so.anomaly_mask;
    std::vector<float> reconstructions;
    const BatchScores parts =
        score_samples(model, samples, sizes.size(), maps, so.scoring_mode, so.reconstruction ? &reconstructions : nullptr);
    std::vector<ScoreResult> results;
    results.reserve(sizes.size());
    const int size = image_size_;
    const std::size_t plane = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
    const std::size_t sample = static_cast<std::size_t>(sample_floats_);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
        ScoreResult r = make_result(model, parts, i, scale);
        const auto [width, height] = sizes[i];
        if (maps) {
            r.map_width = width;
            r.map_height = height;
            r.anomaly_map = resize_plane(parts.error_maps.data() + i * plane, size, size, height, width);
        }
        if (so.anomaly_mask) fill_mask(r, scale.pixel_statistics);
        if (so.reconstruction) {
            r.reconstruction.assign(reconstructions.begin() + static_cast<std::ptrdiff_t>(i * sample),
                                    reconstructions.begin() + static_cast<std::ptrdiff_t>((i + 1) * sample));
            r.reconstruction_size = size;
        }
        results.push_back(std::move(r));
    }
    return results;
}

PixelStatistics Scorer::learn_pixel_statistics(const SkipGanomaly& model, const std::vector<float>& normal_samples,
                                               std::size_t count, double level) const {
    const std::size_t plane = static_cast<std::size_t>(image_size_) * static_cast<std::size_t>(image_size_);
    const std::size_t used = std::min(count, std::max<std::size_t>(1, max_pooled_pixels / plane));
    const std::size_t floats = used * static_cast<std::size_t>(sample_floats_);
    const std::vector<float> first(normal_samples.begin(), normal_samples.begin() + static_cast<std::ptrdiff_t>(floats));
    return describe_pixels(score_samples(model, first, used, true).error_maps, level);
}

std::vector<float> Scorer::preprocess_all(std::span<const ImageView> images) const {
    const std::size_t sample = static_cast<std::size_t>(sample_floats_);
    std::vector<float> out(images.size() * sample);
    for (std::size_t i = 0; i < images.size(); ++i) {
        try {
            preprocess(images[i], image_size_, channels_, out.data() + i * sample);
        } catch (const InvalidArgument& e) {
            throw InvalidArgument("image " + std::to_string(i) + ": " + e.what());
        }
    }
    return out;
}

Scorer::TiledScore Scorer::score_tiled(const SkipGanomaly& model, const ImageView& image, bool keep_map,
                                       std::optional<ScoringMode> mode) const {
    const std::vector<TileWindow> windows = tile_windows(image.width, image.height, tiling_);
    const std::size_t sample = static_cast<std::size_t>(sample_floats_);
    const std::size_t plane = static_cast<std::size_t>(image_size_) * static_cast<std::size_t>(image_size_);
    const std::size_t chunk = static_cast<std::size_t>(score_batch_size_);
    MapStitcher stitcher(image.width, image.height);
    TiledScore t;
    float best = -std::numeric_limits<float>::infinity();
    double reconstruction = 0, latent = 0, rotation = 0;
    std::vector<float> samples;  // one chunk of tiles: memory is bounded by the chunk, not the image
    for (std::size_t first = 0; first < windows.size(); first += chunk) {
        const std::size_t n = std::min(chunk, windows.size() - first);
        samples.resize(n * sample);
        for (std::size_t k = 0; k < n; ++k)
            preprocess(tile_view(image, windows[first + k]), image_size_, channels_, samples.data() + k * sample);
        const BatchScores parts = score_samples(model, samples, n, true, mode);
        for (std::size_t k = 0; k < n; ++k) {
            stitcher.add(parts.error_maps.data() + k * plane, image_size_, windows[first + k]);
            best = std::max(best, model.combined_score(parts, k));
            reconstruction += parts.reconstruction[k];
            latent += parts.latent[k];
            if (!parts.rotation.empty()) rotation += parts.rotation[k];
        }
    }
    const double tiles = static_cast<double>(windows.size());
    t.reconstruction = static_cast<float>(reconstruction / tiles);
    t.latent = static_cast<float>(latent / tiles);
    t.rotation = static_cast<float>(rotation / tiles);
    std::vector<float> map = stitcher.finish();
    t.score = model.techniques().map_rule.score_needs_map() ? map_image_score(map.data(), static_cast<std::int64_t>(map.size())) : best;
    if (keep_map) t.map = std::move(map);
    return t;
}

std::vector<ScoreResult> Scorer::score_images(const SkipGanomaly& model, std::span<const ImageView> images,
                                              const ScoreOptions& so, const ResultScale& scale) const {
    if (!tiling_.enabled()) {
        std::vector<std::pair<int, int>> sizes;
        for (const ImageView& v : images) sizes.emplace_back(v.width, v.height);
        return score(model, preprocess_all(images), sizes, so, scale);
    }
    check_mask_possible(so, scale);
    SGA_CHECK_ARGUMENT(!so.reconstruction, "reconstructions are not available with tiling: score tiles as images of "
                                           "the network's size to see them");
    const bool maps = so.anomaly_map || so.anomaly_mask;
    std::vector<ScoreResult> results;
    results.reserve(images.size());
    for (std::size_t i = 0; i < images.size(); ++i) {
        TiledScore t;
        try {
            t = score_tiled(model, images[i], maps, so.scoring_mode);
        } catch (const InvalidArgument& e) {
            throw InvalidArgument("image " + std::to_string(i) + ": " + e.what());
        }
        ScoreResult r;
        r.reconstruction_error = t.reconstruction;
        r.latent_error = t.latent;
        r.rotation_error = t.rotation;
        r.score = t.score;
        decide(r, scale);
        if (maps) {
            r.map_width = images[i].width;
            r.map_height = images[i].height;
            r.anomaly_map = std::move(t.map);
        }
        if (so.anomaly_mask) fill_mask(r, scale.pixel_statistics);
        results.push_back(std::move(r));
    }
    return results;
}

Scorer::ImageStatistics Scorer::image_statistics(const SkipGanomaly& model, std::span<const ImageView> images,
                                                 bool pixel_level, double pixel_quantile) const {
    ImageStatistics out;
    if (!tiling_.enabled()) {
        const std::vector<float> samples = preprocess_all(images);
        const BatchScores parts = score_samples(model, samples, images.size(), false);
        for (std::size_t i = 0; i < images.size(); ++i) out.scores.push_back(model.combined_score(parts, i));
        if (pixel_level) out.pixel_statistics = learn_pixel_statistics(model, samples, images.size(), pixel_quantile);
        return out;
    }
    std::vector<float> pixels;
    for (std::size_t i = 0; i < images.size(); ++i) {
        const bool pool = pixel_level && pixels.size() < max_pooled_pixels;
        TiledScore t = score_tiled(model, images[i], pool, std::nullopt);
        out.scores.push_back(t.score);
        if (pool) pixels.insert(pixels.end(), t.map.begin(), t.map.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                                              t.map.size(), max_pooled_pixels - pixels.size())));
    }
    if (pixel_level) out.pixel_statistics = describe_pixels(std::move(pixels), pixel_quantile);
    return out;
}

NormalStatistics learn_normal_statistics(const Scorer& scorer, const SkipGanomaly& model,
                                         const std::vector<float>& normal_samples, std::size_t count,
                                         float threshold_quantile, double pixel_threshold_quantile) {
    const BatchScores parts = scorer.score_samples(model, normal_samples, count, false);
    NormalStatistics n;
    n.scores.resize(count);
    for (std::size_t i = 0; i < count; ++i) n.scores[i] = model.combined_score(parts, i);
    n.statistics = describe(n.scores, threshold_quantile);
    n.pixel_statistics = scorer.learn_pixel_statistics(model, normal_samples, count, pixel_threshold_quantile);
    return n;
}

float default_threshold(const std::vector<float>& normal_scores, float threshold_quantile) {
    return static_cast<float>(threshold_from_normal_scores(normal_scores, decimal_level(threshold_quantile)));
}

}  // namespace sga
