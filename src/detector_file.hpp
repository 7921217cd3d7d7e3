// Internal: the "detector" entry of a model file's metadata (docs/model-format.md), what a
// Detector saves besides its model's tensors. Each struct's writer and reader sit side by
// side here, so a new field is added in one place.
//
// Compatibility: a reader accepts every file an earlier version wrote. Entries that only
// some recipes have (score_standardisation, orientation_check, rotation_prediction,
// anomaly_map in the recipe) are written only when they apply, so the other recipes' files
// stay byte for byte as they were.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "skipganomaly/detector.hpp"

namespace sga::detector_file {

// "running_statistics" or "official_batch_statistics".
const char* scoring_mode_name(ScoringMode mode);
// Throws FormatError for another name.
ScoringMode scoring_mode_from_name(const std::string& name);

// The recipe's name and every setting (recipe_to_json in recipe.hpp is this, as text).
nlohmann::json to_json(const Recipe& recipe);
// Throws FormatError for an unknown corruption, stopping rule, map error or image score.
Recipe recipe_from_json(const nlohmann::json& j);

nlohmann::json to_json(const ScoreStatistics& statistics);
ScoreStatistics score_statistics_from_json(const nlohmann::json& j);

nlohmann::json to_json(const PixelStatistics& statistics);
// Throws FormatError when min, max or the threshold is not finite, or max < min.
PixelStatistics pixel_statistics_from_json(const nlohmann::json& j);

// Written only for a finding with checked set; reading one gives checked true.
nlohmann::json to_json(const OrientationFinding& finding);
// Throws FormatError when a figure is not finite.
OrientationFinding orientation_finding_from_json(const nlohmann::json& j);

nlohmann::json to_json(const ScoreStandardisation& standardisation);
// Throws FormatError when a figure is not finite or a deviation is not positive.
ScoreStandardisation score_standardisation_from_json(const nlohmann::json& j);

// The training settings of `options`: epochs, batch size, Adam, loss weights, the
// discriminator's re-initialisation threshold, validation fraction, threshold quantile, seed.
nlohmann::json training_to_json(const DetectorOptions& options);
// Sets those fields of `options` and no other.
void training_from_json(const nlohmann::json& j, DetectorOptions& options);

// What a checkpoint records of the images its run trained on (metadata entry
// "training_data", checkpoints only), so that resuming it on other images is refused: their
// count and a hash of their preprocessed samples in order (SampleSource::fingerprint()).
struct TrainingData {
    std::size_t images = 0;
    std::uint64_t sample_hash = 0;
    bool operator==(const TrainingData&) const = default;
};
// {"images": n, "sample_hash": "<16 hex digits>"}
nlohmann::json to_json(const TrainingData& data);
// Throws FormatError for a malformed entry.
TrainingData training_data_from_json(const nlohmann::json& j);
// "N images, sample hash <16 hex digits>", for messages.
std::string describe(const TrainingData& data);

// How images are turned into the network's input (written for readers of the file; a
// loaded Detector takes image_size and channels from the tensors' architecture).
nlohmann::json preprocessing_json(const Architecture& architecture);

// Everything the "detector" entry holds.
struct DetectorRecord {
    // The recipe, scoring mode and training settings; architecture and device are not
    // stored here (the tensors give the one, the loader the other).
    DetectorOptions options;
    bool trained = false;
    float threshold = 0;
    std::string threshold_source = "none";
    ScoreStatistics validation_statistics;
    PixelStatistics pixel_statistics;  // count 0: none (older or converted files)
    // Present exactly when the model has a rotation head (the recipe predicts rotations).
    std::optional<ScoreStandardisation> score_standardisation;
    int kept_epoch = 0;  // 0 when unknown
    OrientationFinding orientation;  // written when checked
};

nlohmann::json to_json(const DetectorRecord& record);

// The record in a model file's `metadata` (Reader::metadata()), for a Detector whose
// options already hold the file's architecture and the device to load on. Checks what the
// entry says against itself (a trained model, finite figures, a recipe that agrees with
// the architecture's rotation head, valid options); throws FormatError naming `path` and
// what was wrong otherwise.
DetectorRecord read_detector_record(const nlohmann::json& metadata, const std::string& path, DetectorOptions options);

}  // namespace sga::detector_file
