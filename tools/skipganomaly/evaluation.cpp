#include "evaluation.hpp"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <set>
#include <span>
#include <utility>

#include "skipganomaly/error.hpp"

namespace fs = std::filesystem;

namespace cli {
namespace {

// The folder an image lies in: its defect type in MVTec AD's test/<defect>/<name>.png.
std::string defect_type_of(const std::string& path) {
    return fs::path(path).parent_path().filename().string();
}

}  // namespace

Evaluation evaluate(const sga::Detector& detector, const std::vector<sga::LabeledImage>& samples, bool keep_maps) {
    if (samples.empty()) throw sga::FormatError("the evaluation data set holds no images");
    Evaluation e;
    const bool has_masks =
        std::any_of(samples.begin(), samples.end(), [](const sga::LabeledImage& s) { return s.mask.has_value(); });
    sga::ScoreOptions options;
    options.anomaly_map = keep_maps || has_masks;
    std::vector<std::vector<float>> pixel_maps;
    std::vector<std::vector<std::uint8_t>> pixel_masks;
    std::vector<int> map_widths, map_heights;
    const std::size_t chunk = static_cast<std::size_t>(std::max(1, detector.options().score_batch_size));
    for (std::size_t first = 0; first < samples.size(); first += chunk) {
        const std::size_t last = std::min(samples.size(), first + chunk);
        std::vector<sga::ImageView> views;
        for (std::size_t i = first; i < last; ++i) views.push_back(samples[i].image.view());
        std::vector<sga::ScoreResult> results = detector.score(std::span<const sga::ImageView>(views), options);
        for (std::size_t j = 0; j < results.size(); ++j) {
            const sga::LabeledImage& s = samples[first + j];
            sga::ScoreResult& r = results[j];
            // Pixel AUROC pools anomalous images with a mask and normal images (all-normal mask).
            if (has_masks && (s.mask || s.label == 0)) {
                std::vector<std::uint8_t> mask(r.anomaly_map.size(), 0);
                if (s.mask) mask = s.mask->pixels;
                if (mask.size() == r.anomaly_map.size()) {
                    pixel_maps.push_back(r.anomaly_map);
                    pixel_masks.push_back(std::move(mask));
                    map_widths.push_back(r.map_width);
                    map_heights.push_back(r.map_height);
                }
            }
            if (!keep_maps) std::vector<float>().swap(r.anomaly_map);
            e.scores.push_back(r.score);
            e.labels.push_back(s.label);
            (s.label ? e.anomalous : e.normal) += 1;
            e.results.push_back(std::move(r));
        }
    }
    if (e.normal == 0 || e.anomalous == 0)
        throw sga::FormatError("the evaluation data set needs normal and anomalous images; found " +
                               std::to_string(e.normal) + " normal and " + std::to_string(e.anomalous) + " anomalous");
    e.auroc = sga::roc_auc(e.scores, e.labels);
    e.auprc = sga::average_precision(e.scores, e.labels);
    e.f1 = sga::f1_max(e.scores, e.labels);
    if (!pixel_maps.empty()) {
        e.pixel_auroc = sga::pixel_roc_auc(pixel_maps, pixel_masks);
        e.pixel_f1 = sga::pixel_f1_max(pixel_maps, pixel_masks);
        e.aupro = sga::aupro(pixel_maps, pixel_masks, map_widths, map_heights, 0.3);
    }
    std::vector<std::string> defect_types;
    std::set<std::string> distinct_types;
    for (const sga::LabeledImage& s : samples) {
        defect_types.push_back(defect_type_of(s.path));
        if (s.label) distinct_types.insert(defect_types.back());
    }
    if (distinct_types.size() >= 2) e.per_defect_type = sga::roc_auc_per_defect_type(e.scores, e.labels, defect_types);
    e.threshold = detector.threshold();
    for (std::size_t i = 0; i < e.scores.size(); ++i) {
        const bool flagged = e.results[i].is_anomaly;
        if (e.labels[i]) (flagged ? e.true_positives : e.false_negatives) += 1;
        else (flagged ? e.false_positives : e.true_negatives) += 1;
    }
    return e;
}

}  // namespace cli
