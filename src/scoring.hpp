// Internal: how a Detector scores. A Scorer turns preprocessed samples into score parts
// (SkipGanomaly::score) through a pool of scoring slots and, for single images on the CPU,
// the ScoreBatcher; then into ScoreResults with their maps, masks and reconstructions.
//
// Samples are what preprocess() makes of images: (count, C, S, S) host floats side by side,
// C and S the architecture's channels and image_size. Where images come from (whole images,
// tiles of them) is the caller's business: a result's maps come back at the size the caller
// names for that sample.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "skipganomaly/detector.hpp"
#include "score_batcher.hpp"

namespace sga {

// What turns an image's score parts into a ScoreResult: the thresholds, and the spread of
// normal scores and pixel errors that normalized_score and normalized_anomaly_map scale by.
struct ResultScale {
    float threshold = 0;
    const ScoreStatistics& statistics;      // max - min scales normalized_score
    const PixelStatistics& pixel_statistics;  // count 0: no pixel threshold, no masks
};

class Scorer {
public:
    // For the models of a Detector with these options (validated); only the architecture's
    // image_size and channels, score_batch_size and scoring_mode are read, here.
    Scorer(const DetectorOptions& options, Device device);
    Scorer(const Scorer&) = delete;
    Scorer& operator=(const Scorer&) = delete;

    std::int64_t sample_floats() const { return sample_floats_; }

    // The parts of `count` samples, scored in chunks of score_batch_size; error maps (count,
    // S, S) when `maps`. `mode` unset: the options' scoring_mode. `reconstructions`, when
    // given, receives G(x) of every sample (count x sample_floats). Safe from many threads at
    // once while `model` does not change.
    BatchScores score_samples(const SkipGanomaly& model, const std::vector<float>& samples, std::size_t count, bool maps,
                              std::optional<ScoringMode> mode = std::nullopt,
                              std::vector<float>* reconstructions = nullptr) const;

    // SkipGanomaly::rotation_margins of `count` samples, in chunks of score_batch_size.
    std::vector<double> rotation_margins(const SkipGanomaly& model, const std::vector<float>& samples, std::size_t count,
                                         BatchNormMode mode) const;

    // One ScoreResult per sample; sizes[i] is the (width, height) of sample i's image, the
    // resolution its maps come back at. Throws InvalidArgument when options ask for a mask and
    // scale has no pixel threshold, NumericalError when a score is not finite.
    std::vector<ScoreResult> score(const SkipGanomaly& model, const std::vector<float>& samples,
                                   const std::vector<std::pair<int, int>>& sizes, const ScoreOptions& options,
                                   const ResultScale& scale) const;

    // ---- whole images: resized to the network's input, or cut into tiles (options' tiling)

    // One ScoreResult per image, at the image's resolution. With tiling, each image's tiles
    // are scored in chunks of score_batch_size and their maps stitched (MapStitcher); the
    // image score is the stitched map's maximum when the recipe scores from the map, else the
    // largest tile score; reconstruction, latent and rotation errors are the tiles' means.
    // Reconstructions are not available with tiling (InvalidArgument). Images that fail to
    // preprocess throw InvalidArgument naming their index.
    std::vector<ScoreResult> score_images(const SkipGanomaly& model, std::span<const ImageView> images,
                                          const ScoreOptions& options, const ResultScale& scale) const;
    // The scores of `images` (as score_images gives them), and with `pixel_level` the
    // statistics of their map values at `pixel_quantile`, at most 2^24 pixels pooled.
    struct ImageStatistics {
        std::vector<float> scores;
        PixelStatistics pixel_statistics;
    };
    ImageStatistics image_statistics(const SkipGanomaly& model, std::span<const ImageView> images, bool pixel_level,
                                     double pixel_quantile) const;
    const Tiling& tiling() const { return tiling_; }

    // Pixel statistics at `level` from the error maps of the first normal samples, at most
    // 2^24 pixels (16,384 images of 32 x 32, 256 of 256 x 256): the quantile is stable long
    // before, and the maps of 20,000 large images would not fit in memory.
    PixelStatistics learn_pixel_statistics(const SkipGanomaly& model, const std::vector<float>& normal_samples,
                                           std::size_t count, double level) const;

private:
    // A context, tape and input buffer for one scoring call; pooled so that concurrent calls
    // each get their own and steady-state scoring allocates nothing.
    struct Slot {
        explicit Slot(Device device) : ctx(device), tape(ctx) {}
        Context ctx;
        Tape tape;
        Tensor input;  // (score_batch_size, C, S, S)
    };
    // A slot from the pool for the length of a call, given back however the call ends.
    class SlotLease {
    public:
        explicit SlotLease(const Scorer& scorer) : scorer_(scorer), slot_(scorer.acquire_slot()) {}
        ~SlotLease() { scorer_.release_slot(std::move(slot_)); }
        SlotLease(const SlotLease&) = delete;
        SlotLease& operator=(const SlotLease&) = delete;
        Slot& operator*() const { return *slot_; }

    private:
        const Scorer& scorer_;
        std::unique_ptr<Slot> slot_;
    };

    std::unique_ptr<Slot> acquire_slot() const;
    void release_slot(std::unique_ptr<Slot> slot) const;
    // G(x) of `batch` (its scoring view) in `mode`, as host floats.
    std::vector<float> reconstruct(const SkipGanomaly& model, Slot& slot, TensorView batch, BatchNormMode mode) const;
    // Preprocessed samples of `images`, side by side.
    std::vector<float> preprocess_all(std::span<const ImageView> images) const;
    // An image scored tile by tile: its parts (means over the tiles), its score and, when
    // asked, its stitched map at full resolution.
    struct TiledScore {
        float score = 0, reconstruction = 0, latent = 0, rotation = 0;
        std::vector<float> map;  // (height, width)
    };
    TiledScore score_tiled(const SkipGanomaly& model, const ImageView& image, bool keep_map,
                           std::optional<ScoringMode> mode) const;

    Device device_;
    int image_size_, channels_, score_batch_size_;
    Tiling tiling_;
    ScoringMode default_mode_;
    std::int64_t sample_floats_;
    mutable std::mutex pool_mutex_;
    mutable std::vector<std::unique_ptr<Slot>> pool_;
    // Single-image CPU scores, concurrent callers' images in one pass.
    mutable ScoreBatcher batcher_;
};

// The image statistics (describe) and pixel statistics of `count` normal samples, not
// trained on, with their scores.
struct NormalStatistics {
    std::vector<float> scores;
    ScoreStatistics statistics;
    PixelStatistics pixel_statistics;
};
NormalStatistics learn_normal_statistics(const Scorer& scorer, const SkipGanomaly& model,
                                         const std::vector<float>& normal_samples, std::size_t count,
                                         float threshold_quantile, double pixel_threshold_quantile);

// The default image threshold: threshold_from_normal_scores at the options' quantile, read as
// the decimal the user wrote (decimal_level).
float default_threshold(const std::vector<float>& normal_scores, float threshold_quantile);

}  // namespace sga
