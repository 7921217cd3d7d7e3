// skipganomaly score: one JSON line per image, and optionally heat maps and masks.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "heatmap.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/image.hpp"

namespace fs = std::filesystem;

namespace cli {
namespace {

const char* const score_help = R"(usage: skipganomaly score --model MODEL.safetensors [options] IMAGE...

Scores images; prints one JSON object per image and line:
  {"path", "score", "reconstruction_error", "latent_error", "normalized_score", "is_anomaly", "threshold"}

options:
  --model PATH             model file (required)
  --heatmap DIR            also write DIR/<name>_heatmap.png, the anomaly map over the image,
                           and DIR/<name>_mask.png, the predicted anomalous pixels (white)
                           at the model's pixel threshold (a model without one, such as a
                           converted one, needs `skipganomaly calibrate` first for the mask)
  --heatmap-max X          squared error shown as red (default: the 99th percentile of each
                           image's own map, so colours are relative to that image)
  --threshold X            override the model's threshold
  --scoring-mode running|batch
                           batch norm when scoring (default: the model's, running for our
                           models): running uses the statistics learnt in training, so an
                           image's score does not depend on the others; batch uses each
                           batch's own statistics, as the official test() does
  --device cpu|cuda|auto   where to score (default auto)
  --threads N              CPU threads (default: OMP_NUM_THREADS, else every core)
)";

// Every option score accepts; score_help describes each. IMAGE... are positional.
const std::vector<OptionSpec> score_options = {
    {"model"},
    {"heatmap"},
    {"heatmap-max"},
    {"threshold"},
    {"scoring-mode"},
    {"device"},
    {"threads"},
};

std::optional<sga::ScoringMode> scoring_mode_option(const ParsedArguments& a) {
    const std::optional<std::string> text = a.get("scoring-mode");
    if (!text) return std::nullopt;
    if (*text == "running") return sga::ScoringMode::RunningStatistics;
    if (*text == "batch") return sga::ScoringMode::OfficialBatchStatistics;
    throw UsageError("--scoring-mode expects running or batch, found '" + *text + "'");
}

// White where the mask flags a pixel, black elsewhere, at the image's resolution.
sga::Image mask_image(const sga::ScoreResult& r) {
    sga::Image mask{r.map_width, r.map_height, 1, std::vector<std::uint8_t>(r.anomaly_mask.size())};
    for (std::size_t i = 0; i < r.anomaly_mask.size(); ++i) mask.pixels[i] = r.anomaly_mask[i] ? 255 : 0;
    return mask;
}

}  // namespace

int command_score(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(args, score_options, true);
    if (a.help) {
        std::cout << score_help;
        return 0;
    }
    const std::string model_path = a.require("model");
    if (a.positional.empty()) throw UsageError("score needs at least one IMAGE");
    const sga::Device device = a.get("device") ? parse_device(*a.get("device")) : sga::Device::Auto;
    const std::optional<std::string> heatmap_dir = a.get("heatmap");
    std::optional<float> heatmap_max;
    if (const auto m = a.get("heatmap-max")) {
        heatmap_max = static_cast<float>(parse_real("heatmap-max", *m));
        if (*heatmap_max <= 0) throw UsageError("--heatmap-max must be positive");
    }
    std::optional<float> threshold;
    if (const auto t = a.get("threshold")) threshold = static_cast<float>(parse_real("threshold", *t));
    const std::optional<sga::ScoringMode> scoring_mode = scoring_mode_option(a);
    apply_threads(a);

    sga::Detector detector = sga::Detector::load(model_path, device);
    if (threshold) detector.set_threshold(*threshold);
    if (heatmap_dir) fs::create_directories(*heatmap_dir);
    sga::ScoreOptions options;
    options.anomaly_map = heatmap_dir.has_value();
    options.scoring_mode = scoring_mode;
    options.anomaly_mask = heatmap_dir.has_value() && detector.pixel_statistics().count > 0;
    if (heatmap_dir && !options.anomaly_mask)
        std::cerr << "warning: " << model_path << " has no pixel threshold, so no mask is written; "
                  << "run `skipganomaly calibrate` on normal images first\n";
    std::set<std::string> written;

    // Batches of score_batch_size images: one forward pass each, bounded memory.
    const std::size_t chunk = static_cast<std::size_t>(std::max(1, detector.options().score_batch_size));
    for (std::size_t first = 0; first < a.positional.size(); first += chunk) {
        const std::size_t last = std::min(a.positional.size(), first + chunk);
        std::vector<sga::Image> images;
        for (std::size_t i = first; i < last; ++i) images.push_back(sga::load_image(a.positional[i]));
        const std::vector<sga::ScoreResult> results = detector.score(images, options);
        for (std::size_t i = 0; i < results.size(); ++i) {
            const sga::ScoreResult& r = results[i];
            const std::string& path = a.positional[first + i];
            nlohmann::json line = {{"path", path},
                                   {"score", r.score},
                                   {"reconstruction_error", r.reconstruction_error},
                                   {"latent_error", r.latent_error},
                                   {"normalized_score", r.normalized_score},
                                   {"is_anomaly", r.is_anomaly},
                                   {"threshold", r.threshold}};
            if (heatmap_dir) {
                std::string stem = fs::path(path).stem().string() + "_heatmap";
                for (int n = 2; written.count(stem); ++n)
                    stem = fs::path(path).stem().string() + "_heatmap_" + std::to_string(n);
                written.insert(stem);
                const std::string out = (fs::path(*heatmap_dir) / (stem + ".png")).string();
                write_heatmap(out, images[i], r, heatmap_max ? *heatmap_max : map_scale(r.anomaly_map));
                line["heatmap"] = out;
                if (options.anomaly_mask) {
                    const std::string mask_stem = stem.substr(0, stem.rfind("_heatmap")) + "_mask" +
                                                  stem.substr(stem.rfind("_heatmap") + 8);
                    const std::string mask_path = (fs::path(*heatmap_dir) / (mask_stem + ".png")).string();
                    sga::save_png(mask_path, mask_image(r));
                    line["mask"] = mask_path;
                }
            }
            std::cout << line.dump() << '\n';
        }
        std::cout << std::flush;
    }
    return 0;
}

}  // namespace cli
