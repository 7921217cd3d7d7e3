// skipganomaly score: one JSON line per image, and optionally heat maps and masks.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <new>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "heatmap.hpp"
#include "outputs.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"

namespace fs = std::filesystem;

namespace cli {
namespace {

const char* const score_help = R"(usage: skipganomaly score --model MODEL.safetensors [options] IMAGE...

Scores images; prints one JSON object per image and line, in the order given:
  {"path", "score", "reconstruction_error", "latent_error", "normalized_score", "is_anomaly", "threshold"}
An image that cannot be read or scored gets {"path", "error"} instead; the others are scored
and the exit status is then 1. Images are decoded one at a time (at most 256 MB of pixels
wait to be scored together), so a few very large images do not exhaust memory.

options:
  --model PATH             model file (required)
  --heatmap DIR            also write DIR/<name>_heatmap.png, the anomaly map over the image,
                           and DIR/<name>_mask.png, the predicted anomalous pixels (white)
                           at the model's pixel threshold (a model without one, such as a
                           converted one, needs `skipganomaly calibrate` first for the mask);
                           <name>_heatmap_2.png ... for a name seen before. DIR is made when
                           the first picture is written. Files already in DIR are never
                           replaced: score refuses to start if a picture's name is taken
                           (default: none replaced)
  --overwrite              with --heatmap: replace pictures already in DIR (never one of the
                           IMAGEs themselves)
  --heatmap-max X          squared error shown as red (default: the 99th percentile of each
                           image's own map, so colours are relative to that image)
  --threshold X            override the model's threshold
  --scoring-mode running|batch
                           batch norm when scoring (default: the model's, running for our
                           models): running uses the statistics learnt in training, so an
                           image's score does not depend on the others; batch uses each
                           batch's own statistics, as the official test() does
  --precision float32|bfloat16
                           the convolutions' arithmetic (default: the model's): bfloat16
                           where the processor has AVX512-BF16, else float32 (a warning says so)
  --device cpu|cuda|auto   where to score (default auto)
  --threads N              CPU threads (default: OMP_NUM_THREADS, else every core)
)";

// Every option score accepts; score_help describes each. IMAGE... are positional.
const std::vector<OptionSpec> score_options = {
    {"model"},
    {"heatmap"},
    {"heatmap-max"},
    {"overwrite", false},
    {"threshold"},
    {"scoring-mode"},
    {"device"},
    {"precision"},
    {"threads"},
};

std::optional<sga::ScoringMode> scoring_mode_option(const ParsedArguments& a) {
    const std::optional<std::string> text = a.get("scoring-mode");
    if (!text) return std::nullopt;
    if (*text == "running") return sga::ScoringMode::RunningStatistics;
    if (*text == "batch") return sga::ScoringMode::OfficialBatchStatistics;
    throw UsageError("--scoring-mode expects running or batch, found '" + *text + "'");
}

// Decoded pixels held at once before a pass is scored (one image larger than this is scored alone).
constexpr std::size_t max_decoded_bytes = std::size_t{256} << 20;

// The pictures of one image under --heatmap DIR.
struct PictureFiles {
    std::string heatmap, mask;  // mask empty when none is written
};

// DIR/<stem>_heatmap.png and DIR/<stem>_mask.png for each image, "_2", "_3", ... added to a
// stem seen before, all fixed before anything is scored. Refused (IoError), before any work:
// a picture that would replace one of the input images, always; one that would replace any
// existing file, unless `overwrite`; one that cannot be written (safe_file::check_writable).
std::vector<PictureFiles> plan_pictures(const std::string& dir, const std::vector<std::string>& inputs, bool masks,
                                        bool overwrite) {
    std::vector<PictureFiles> files(inputs.size());
    std::set<std::string> stems;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        const std::string base = fs::path(inputs[i]).stem().string();
        std::string suffix;
        for (int n = 2; stems.count(base + "_heatmap" + suffix); ++n) {
            suffix = std::to_string(n);  // "_" prepended in a step: GCC 12 warns falsely (-Wrestrict) on "_" + std::string
            suffix.insert(0, 1, '_');
        }
        stems.insert(base + "_heatmap" + suffix);
        files[i].heatmap = (fs::path(dir) / (base + "_heatmap" + suffix + ".png")).string();
        if (masks) files[i].mask = (fs::path(dir) / (base + "_mask" + suffix + ".png")).string();
    }
    std::vector<std::string> existing;
    for (const PictureFiles& f : files)
        for (const std::string& path : {f.heatmap, f.mask}) {
            std::error_code error;
            if (path.empty() || !fs::exists(fs::symlink_status(path, error))) continue;
            for (const std::string& input : inputs)
                if (fs::equivalent(path, input, error))
                    throw sga::IoError("--heatmap: '" + path + "' would replace the input image '" + input +
                                       "'; write the pictures into another folder (nothing was done)");
            check_output_file("heatmap", path);
            existing.push_back(path);
        }
    if (!existing.empty() && !overwrite)
        throw sga::IoError("--heatmap: " + std::to_string(existing.size()) + " file(s) in '" + dir +
                           "' would be replaced, the first '" + existing.front() +
                           "'; score writes only files that are not there: use an empty or new folder, or "
                           "--overwrite to replace them (nothing was done)");
    return files;
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
    if (a.has("overwrite") && !heatmap_dir) throw UsageError("--overwrite applies to --heatmap DIR");
    std::optional<float> threshold;
    if (const auto t = a.get("threshold")) threshold = static_cast<float>(parse_real("threshold", *t));
    const std::optional<sga::ScoringMode> scoring_mode = scoring_mode_option(a);
    apply_threads(a);
    if (heatmap_dir) check_output_folder("heatmap", *heatmap_dir);

    sga::Detector detector = sga::Detector::load(model_path, device);
    apply_precision(a, detector);
    if (threshold) detector.set_threshold(*threshold);
    sga::ScoreOptions options;
    options.anomaly_map = heatmap_dir.has_value();
    options.scoring_mode = scoring_mode;
    options.anomaly_mask = heatmap_dir.has_value() && detector.pixel_statistics().count > 0;
    if (heatmap_dir && !options.anomaly_mask)
        std::cerr << "warning: " << model_path << " has no pixel threshold, so no mask is written; "
                  << "run `skipganomaly calibrate` on normal images first\n";
    const std::vector<PictureFiles> pictures =
        heatmap_dir ? plan_pictures(*heatmap_dir, a.positional, options.anomaly_mask, a.has("overwrite"))
                    : std::vector<PictureFiles>(a.positional.size());
    bool heatmap_dir_made = false;

    // Images are decoded one at a time and scored in passes of up to score_batch_size images
    // holding at most max_decoded_bytes of pixels (one larger image goes alone), so memory is
    // bounded by the largest image, not by the batch. An image that cannot be read or scored
    // gets a line {"path", "error"}; the others are scored, and the exit status is 1.
    const std::size_t chunk = static_cast<std::size_t>(std::max(1, detector.options().score_batch_size));
    std::vector<std::size_t> batch;  // indices into a.positional
    std::vector<sga::Image> images;  // their pixels
    std::size_t batch_bytes = 0, failures = 0;
    const auto report_error = [&](std::size_t i, const std::string& what) {
        std::cout << nlohmann::json({{"path", a.positional[i]}, {"error", what}}).dump() << '\n';
        ++failures;
    };
    const auto emit = [&](std::size_t i, const sga::Image& image, const sga::ScoreResult& r) {
        nlohmann::json line = {{"path", a.positional[i]},
                               {"score", r.score},
                               {"reconstruction_error", r.reconstruction_error},
                               {"latent_error", r.latent_error},
                               {"normalized_score", r.normalized_score},
                               {"is_anomaly", r.is_anomaly},
                               {"threshold", r.threshold}};
        if (heatmap_dir) {
            if (!heatmap_dir_made) fs::create_directories(*heatmap_dir);
            heatmap_dir_made = true;
            write_heatmap(pictures[i].heatmap, image, r, heatmap_max ? *heatmap_max : map_scale(r.anomaly_map));
            line["heatmap"] = pictures[i].heatmap;
            if (options.anomaly_mask) {
                sga::save_png(pictures[i].mask, mask_picture(r));
                line["mask"] = pictures[i].mask;
            }
        }
        std::cout << line.dump() << '\n';
    };
    const auto score_batch = [&] {
        if (batch.empty()) return;
        std::vector<sga::ImageView> views;
        for (const sga::Image& image : images) views.push_back(image.view());
        std::vector<sga::ScoreResult> results;
        try {
            results = detector.score(std::span<const sga::ImageView>(views), options);
        } catch (const std::exception&) {
            results.clear();  // find the image at fault: each alone
        }
        for (std::size_t k = 0; k < batch.size(); ++k) {
            if (!results.empty()) {
                emit(batch[k], images[k], results[k]);
                continue;
            }
            try {
                emit(batch[k], images[k], detector.score(views[k], options));
            } catch (const sga::IoError&) {
                throw;  // a picture that cannot be written: the next would fail too
            } catch (const std::bad_alloc&) {
                report_error(batch[k], "out of memory scoring it");
            } catch (const std::exception& e) {
                report_error(batch[k], e.what());
            }
        }
        std::cout << std::flush;
        batch.clear();
        images.clear();
        batch_bytes = 0;
    };
    for (std::size_t i = 0; i < a.positional.size(); ++i) {
        try {
            sga::Image image = sga::load_image(a.positional[i]);
            batch_bytes += image.pixels.size();
            images.push_back(std::move(image));
            batch.push_back(i);
        } catch (const std::exception& e) {
            const std::string what = dynamic_cast<const std::bad_alloc*>(&e) ? "out of memory decoding it" : e.what();
            score_batch();  // the lines stay in the order of the arguments
            report_error(i, what);
            std::cout << std::flush;
            continue;
        }
        if (batch.size() >= chunk || batch_bytes >= max_decoded_bytes) score_batch();
    }
    score_batch();
    if (failures > 0) {
        std::cerr << "error: " << failures << " of " << a.positional.size()
                  << " image(s) could not be scored; their lines carry \"error\"\n";
        return 1;
    }
    return 0;
}

}  // namespace cli
