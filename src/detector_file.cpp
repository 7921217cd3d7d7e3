#include "detector_file.hpp"

#include <cmath>
#include <cstdio>
#include <exception>

namespace sga {

std::string recipe_to_json(const Recipe& recipe) { return detector_file::to_json(recipe).dump(); }

namespace detector_file {

const char* scoring_mode_name(ScoringMode mode) {
    return mode == ScoringMode::RunningStatistics ? "running_statistics" : "official_batch_statistics";
}

ScoringMode scoring_mode_from_name(const std::string& name) {
    if (name != scoring_mode_name(ScoringMode::RunningStatistics) &&
        name != scoring_mode_name(ScoringMode::OfficialBatchStatistics))
        throw FormatError("unknown scoring_mode '" + name + "'");
    return name == scoring_mode_name(ScoringMode::RunningStatistics) ? ScoringMode::RunningStatistics
                                                                     : ScoringMode::OfficialBatchStatistics;
}

nlohmann::json to_json(const Recipe& r) {
    nlohmann::json j{{"name", r.name},
                     {"gated_skips", r.skip_gating.gated_skips},
                     {"training_open_probability", r.skip_gating.training_open_probability},
                     {"restoration",
                      {{"corruption", corruption_name(r.restoration.corruption)},
                       {"gray", r.restoration.gray},
                       {"grid", r.restoration.grid}}},
                     {"recompute_batch_norm", r.recompute_batch_norm},
                     {"stopping", stopping_rule_name(r.stopping)}};
    // Only when on, so that the other recipes' files stay as they were.
    if (r.rotation_prediction.enabled)
        j["rotation_prediction"] = {{"loss_weight", r.rotation_prediction.loss_weight},
                                    {"score_weight", r.rotation_prediction.score_weight}};
    if (!r.anomaly_map.is_official())
        j["anomaly_map"] = {{"error", map_error_name(r.anomaly_map.error)},
                            {"smoothing_sigma", r.anomaly_map.smoothing_sigma},
                            {"image_score", image_score_name(r.anomaly_map.image_score)}};
    if (r.orientation_check.enabled)
        j["orientation_check"] = {{"after_steps", r.orientation_check.after_steps},
                                  {"images", r.orientation_check.images},
                                  {"z", r.orientation_check.z}};
    return j;
}

Recipe recipe_from_json(const nlohmann::json& j) {
    Recipe r;
    r.name = j.at("name").get<std::string>();
    r.skip_gating.gated_skips = j.at("gated_skips").get<int>();
    r.skip_gating.training_open_probability = j.at("training_open_probability").get<float>();
    const std::string corruption = j.at("restoration").at("corruption").get<std::string>();
    if (corruption == corruption_name(Corruption::None)) r.restoration.corruption = Corruption::None;
    else if (corruption == corruption_name(Corruption::Puzzle)) r.restoration.corruption = Corruption::Puzzle;
    else if (corruption == corruption_name(Corruption::Rotation)) r.restoration.corruption = Corruption::Rotation;
    else if (corruption == corruption_name(Corruption::SyntheticDefects)) r.restoration.corruption = Corruption::SyntheticDefects;
    else throw FormatError("unknown restoration corruption '" + corruption + "'");
    r.restoration.grid = j.at("restoration").at("grid").get<int>();
    r.restoration.gray = j.at("restoration").at("gray").get<bool>();
    r.recompute_batch_norm = j.at("recompute_batch_norm").get<bool>();
    const std::string stopping = j.at("stopping").get<std::string>();
    if (stopping == stopping_rule_name(StoppingRule::FinalEpoch)) r.stopping = StoppingRule::FinalEpoch;
    else if (stopping == stopping_rule_name(StoppingRule::BestSyntheticAnomalies)) r.stopping = StoppingRule::BestSyntheticAnomalies;
    else throw FormatError("unknown stopping rule '" + stopping + "'");
    if (j.contains("rotation_prediction")) {
        r.rotation_prediction.enabled = true;
        r.rotation_prediction.loss_weight = j.at("rotation_prediction").at("loss_weight").get<float>();
        r.rotation_prediction.score_weight = j.at("rotation_prediction").at("score_weight").get<float>();
    }
    if (j.contains("anomaly_map")) {
        const nlohmann::json& m = j.at("anomaly_map");
        const std::string error = m.at("error").get<std::string>(), score = m.at("image_score").get<std::string>();
        if (error == map_error_name(MapError::Squared)) r.anomaly_map.error = MapError::Squared;
        else if (error == map_error_name(MapError::Absolute)) r.anomaly_map.error = MapError::Absolute;
        else throw FormatError("unknown anomaly map error '" + error + "'");
        if (score == image_score_name(ImageScore::Official)) r.anomaly_map.image_score = ImageScore::Official;
        else if (score == image_score_name(ImageScore::MapMaximum)) r.anomaly_map.image_score = ImageScore::MapMaximum;
        else throw FormatError("unknown image score '" + score + "'");
        r.anomaly_map.smoothing_sigma = m.at("smoothing_sigma").get<float>();
    }
    if (j.contains("orientation_check")) {
        const nlohmann::json& c = j.at("orientation_check");
        r.orientation_check = {true, c.at("after_steps").get<int>(), c.at("images").get<int>(), c.at("z").get<double>()};
    }
    return r;
}

nlohmann::json to_json(const ScoreStatistics& s) {
    return {{"count", s.count}, {"min", s.min}, {"max", s.max}, {"mean", s.mean}, {"std", s.std},
            {"quantile_levels", s.quantile_levels}, {"quantile_values", s.quantile_values}};
}

ScoreStatistics score_statistics_from_json(const nlohmann::json& j) {
    ScoreStatistics s;
    s.count = j.at("count").get<std::size_t>();
    s.min = j.at("min").get<double>();
    s.max = j.at("max").get<double>();
    s.mean = j.at("mean").get<double>();
    s.std = j.at("std").get<double>();
    s.quantile_levels = j.at("quantile_levels").get<std::vector<double>>();
    s.quantile_values = j.at("quantile_values").get<std::vector<double>>();
    return s;
}

nlohmann::json to_json(const PixelStatistics& p) {
    return {{"count", p.count}, {"min", p.min}, {"max", p.max}, {"threshold_quantile", p.threshold_quantile},
            {"threshold", p.threshold}};
}

PixelStatistics pixel_statistics_from_json(const nlohmann::json& j) {
    PixelStatistics p;
    p.count = j.at("count").get<std::size_t>();
    p.min = j.at("min").get<double>();
    p.max = j.at("max").get<double>();
    p.threshold_quantile = j.at("threshold_quantile").get<double>();
    p.threshold = j.at("threshold").get<double>();
    if (!std::isfinite(p.min) || !std::isfinite(p.max) || !std::isfinite(p.threshold) || p.max < p.min)
        throw FormatError("the pixel statistics are not finite or not ordered");
    return p;
}

nlohmann::json to_json(const OrientationFinding& f) {
    return {{"images", f.images}, {"mean_margin", f.mean_margin}, {"margin_std", f.margin_std},
            {"t", f.t},           {"required_t", f.required_t},   {"oriented", f.oriented}};
}

OrientationFinding orientation_finding_from_json(const nlohmann::json& j) {
    OrientationFinding f;
    f.checked = true;
    f.images = j.at("images").get<std::size_t>();
    f.mean_margin = j.at("mean_margin").get<double>();
    f.margin_std = j.at("margin_std").get<double>();
    f.t = j.at("t").get<double>();
    f.required_t = j.at("required_t").get<double>();
    f.oriented = j.at("oriented").get<bool>();
    for (double v : {f.mean_margin, f.margin_std, f.t, f.required_t})
        if (!std::isfinite(v)) throw FormatError("the orientation check's figures are not finite");
    return f;
}

nlohmann::json to_json(const ScoreStandardisation& s) {
    return {{"official_mean", s.official_mean},
            {"official_std", s.official_std},
            {"rotation_mean", s.rotation_mean},
            {"rotation_std", s.rotation_std}};
}

ScoreStandardisation score_standardisation_from_json(const nlohmann::json& z) {
    const ScoreStandardisation s{z.at("official_mean").get<double>(), z.at("official_std").get<double>(),
                                 z.at("rotation_mean").get<double>(), z.at("rotation_std").get<double>()};
    for (double v : {s.official_mean, s.official_std, s.rotation_mean, s.rotation_std})
        if (!std::isfinite(v)) throw FormatError("the score standardisation is not finite");
    if (!(s.official_std > 0 && s.rotation_std > 0))
        throw FormatError("the score standardisation's deviations must be positive");
    return s;
}

nlohmann::json training_to_json(const DetectorOptions& o) {
    nlohmann::json j{{"epochs", o.epochs},
            {"batch_size", o.batch_size},
            {"learning_rate", o.adam.learning_rate},
            {"beta1", o.adam.beta1},
            {"beta2", o.adam.beta2},
            {"adam_epsilon", o.adam.epsilon},
            {"w_adv", o.loss_weights.adversarial},
            {"w_con", o.loss_weights.contextual},
            {"w_lat", o.loss_weights.latent},
            {"discriminator_reinit_threshold", o.discriminator_reinit_threshold},
            {"validation_fraction", o.validation_fraction},
            {"threshold_quantile", o.threshold_quantile},
            {"seed", o.seed}};
    // Only when on, so that other files stay as they were.
    if (o.tiling.enabled()) j["tiling"] = {{"tile", o.tiling.tile}, {"stride", o.tiling.stride}};
    if (o.training_precision != Precision::Float32) j["precision"] = precision_name(o.training_precision);
    return j;
}

void training_from_json(const nlohmann::json& t, DetectorOptions& options) {
    options.epochs = t.at("epochs").get<int>();
    options.batch_size = t.at("batch_size").get<int>();
    options.adam = {t.at("learning_rate").get<float>(), t.at("beta1").get<float>(), t.at("beta2").get<float>(),
                    t.at("adam_epsilon").get<float>()};
    options.loss_weights = {t.at("w_adv").get<float>(), t.at("w_con").get<float>(), t.at("w_lat").get<float>()};
    options.discriminator_reinit_threshold = t.at("discriminator_reinit_threshold").get<float>();
    options.validation_fraction = t.at("validation_fraction").get<float>();
    options.threshold_quantile = t.at("threshold_quantile").get<float>();
    options.seed = t.at("seed").get<std::uint64_t>();
    if (t.contains("tiling"))
        options.tiling = {t.at("tiling").at("tile").get<int>(), t.at("tiling").at("stride").get<int>()};
    // Files that do not name one trained in float32.
    options.training_precision =
        t.contains("precision") ? precision_from_name(t.at("precision").get<std::string>()) : Precision::Float32;
}

nlohmann::json to_json(const TrainingData& data) {
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(data.sample_hash));
    return {{"images", data.images}, {"sample_hash", hash}};
}

TrainingData training_data_from_json(const nlohmann::json& j) {
    TrainingData data;
    try {
        data.images = j.at("images").get<std::size_t>();
        const std::string hash = j.at("sample_hash").get<std::string>();
        std::size_t used = 0;
        data.sample_hash = std::stoull(hash, &used, 16);
        if (hash.size() != 16 || used != 16) throw FormatError("");
    } catch (const std::exception&) {
        throw FormatError("malformed training_data entry: expected {\"images\": N, \"sample_hash\": 16 hex digits}, found " +
                          j.dump());
    }
    return data;
}

std::string describe(const TrainingData& data) {
    return std::to_string(data.images) + " images, sample hash " + to_json(data).at("sample_hash").get<std::string>();
}

nlohmann::json preprocessing_json(const Architecture& a) {
    return {{"image_size", a.image_size},
            {"channels", a.channels},
            {"resize", "pil_bilinear"},
            {"gray_conversion", "itu_r_601_2"},
            {"scale", "x / 127.5 - 1"}};
}

nlohmann::json to_json(const DetectorRecord& r) {
    const DetectorOptions& o = r.options;
    nlohmann::json j{{"trained", r.trained},
                     {"threshold", r.threshold},
                     {"threshold_source", r.threshold_source},
                     {"validation_statistics", to_json(r.validation_statistics)},
                     {"pixel_statistics", to_json(r.pixel_statistics)},
                     {"score_weights", {{"reconstruction", 0.9}, {"latent", 0.1}}},
                     {"recipe", to_json(o.recipe)},
                     {"kept_epoch", r.kept_epoch},
                     {"scoring_mode", scoring_mode_name(o.scoring_mode)},
                     {"preprocessing", preprocessing_json(o.architecture)},
                     {"training", training_to_json(o)}};
    // Only when they apply, so that other files stay as they were.
    if (r.score_standardisation) j["score_standardisation"] = to_json(*r.score_standardisation);
    if (r.orientation.checked) j["orientation_check"] = to_json(r.orientation);
    if (o.precision != Precision::Float32) j["precision"] = precision_name(o.precision);
    return j;
}

DetectorRecord read_detector_record(const nlohmann::json& metadata, const std::string& path, DetectorOptions options) {
    if (!metadata.contains("detector") || !metadata["detector"].is_object())
        throw FormatError("model file '" + path + "': expected detector metadata, found none");
    const nlohmann::json& d = metadata["detector"];
    DetectorRecord r;
    try {
        training_from_json(d.at("training"), options);
        // Files from before recipes existed were trained with the official one.
        options.recipe = d.contains("recipe") ? recipe_from_json(d.at("recipe")) : Recipe::official();
        options.scoring_mode = scoring_mode_from_name(d.at("scoring_mode").get<std::string>());
        // Files that do not name one score in float32.
        options.precision =
            d.contains("precision") ? precision_from_name(d.at("precision").get<std::string>()) : Precision::Float32;
        if (!d.at("trained").get<bool>()) throw FormatError("it holds an untrained model");
        r.trained = true;
        r.validation_statistics = score_statistics_from_json(d.at("validation_statistics"));
        // Files from before pixel thresholds have none; calibrate() learns one.
        if (d.contains("pixel_statistics")) r.pixel_statistics = pixel_statistics_from_json(d.at("pixel_statistics"));
        r.threshold = d.at("threshold").get<float>();
        r.threshold_source = d.at("threshold_source").get<std::string>();
        if (options.recipe.rotation_prediction.enabled)
            r.score_standardisation = score_standardisation_from_json(d.at("score_standardisation"));
        if (d.contains("orientation_check")) r.orientation = orientation_finding_from_json(d.at("orientation_check"));
        if (options.architecture.rotation_head != options.recipe.rotation_prediction.enabled)
            throw FormatError("the recipe and the architecture disagree on the rotation head");
        r.kept_epoch = d.value("kept_epoch", 0);  // files from before it was recorded: 0, unknown
        options.validate();
    } catch (const nlohmann::json::exception& e) {
        throw FormatError("model file '" + path + "': malformed detector metadata: " + e.what());
    } catch (const InvalidArgument& e) {
        throw FormatError("model file '" + path + "': invalid options: " + e.what());
    } catch (const FormatError& e) {
        throw FormatError("model file '" + path + "': " + e.what());
    }
    if (!std::isfinite(r.threshold)) throw FormatError("model file '" + path + "': the threshold is not finite");
    r.options = std::move(options);
    return r;
}

}  // namespace detector_file
}  // namespace sga
