#include "evaluation_plots.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <map>
#include <numeric>
#include <sstream>
#include <utility>

#include "heatmap.hpp"
#include "skipganomaly/image.hpp"
#include "skipganomaly/plots.hpp"

namespace fs = std::filesystem;

namespace cli {

std::vector<std::string> write_plots(const std::string& dir, const Evaluation& e) {
    fs::create_directories(dir);
    const std::string roc = (fs::path(dir) / "roc.png").string();
    const std::string histogram = (fs::path(dir) / "histogram.png").string();
    sga::save_png(roc, sga::plot_roc_curve(sga::roc_curve(e.scores, e.labels), 512, "ROC curve, image scores"));
    std::vector<float> normal, anomalous;
    for (std::size_t i = 0; i < e.scores.size(); ++i) (e.labels[i] ? anomalous : normal).push_back(e.scores[i]);
    sga::save_png(histogram, sga::plot_score_histogram(normal, anomalous, 640, 400, "image scores"));
    return {roc, histogram};
}

std::vector<std::string> write_case_strips(const std::string& dir, const Evaluation& e, const sga::Detector& detector,
                                           const std::vector<sga::LabeledImage>& samples) {
    struct Group {
        const char* file_stem;
        const char* description;
        std::vector<std::size_t> members;
    };
    std::vector<std::size_t> order(e.scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return e.scores[x] > e.scores[y]; });
    const auto pick = [&](int label, bool highest) {
        std::vector<std::size_t> members;
        const auto take = [&](std::size_t i) {
            if (e.labels[i] == label && members.size() < 4) members.push_back(i);
        };
        if (highest) std::for_each(order.begin(), order.end(), take);
        else std::for_each(order.rbegin(), order.rend(), take);
        return members;
    };
    const std::vector<Group> groups = {
        {"highest_scoring_normal", "highest-scoring normal image", pick(0, true)},
        {"lowest_scoring_anomalous", "lowest-scoring anomalous image", pick(1, false)},
        {"highest_scoring_anomalous", "highest-scoring anomalous image", pick(1, true)}};

    sga::ScoreOptions options;
    options.anomaly_map = true;
    options.anomaly_mask = detector.pixel_statistics().count > 0;
    std::map<std::size_t, sga::ScoreResult> scored;
    for (const Group& g : groups)
        for (std::size_t i : g.members)
            if (!scored.count(i)) scored[i] = detector.score(samples[i].image.view(), options);
    // One colour scale for every strip, so their maps can be compared.
    std::vector<float> pooled;
    for (const auto& [i, r] : scored) pooled.insert(pooled.end(), r.anomaly_map.begin(), r.anomaly_map.end());
    const float scale = std::max(map_scale(std::move(pooled)), 1e-6f);

    const fs::path folder = fs::path(dir) / "cases";
    fs::create_directories(folder);
    std::vector<std::string> written;
    for (const Group& g : groups) {
        for (std::size_t k = 0; k < g.members.size(); ++k) {
            const std::size_t i = g.members[k];
            const sga::LabeledImage& s = samples[i];
            const sga::ScoreResult& r = scored.at(i);
            const sga::Image& image = s.image;
            // Normal images are known to hold no defect; anomalous ones without a mask are unknown.
            const std::vector<std::uint8_t> no_defect(static_cast<std::size_t>(image.width) * image.height, 0);
            sga::AnomalyCase c;
            c.image = image.view();
            if (r.map_width == image.width && r.map_height == image.height) c.anomaly_map = r.anomaly_map;
            c.map_low = 0.0f;
            c.map_high = scale;
            if (s.mask && s.mask->width == image.width && s.mask->height == image.height && s.mask->channels == 1)
                c.ground_truth = s.mask->view();
            else if (s.label == 0)
                c.ground_truth = sga::ImageView{no_defect.data(), image.width, image.height, image.width, sga::PixelFormat::Gray};
            if (r.anomaly_mask.size() == no_defect.size()) c.predicted_mask = r.anomaly_mask;
            const fs::path path(s.path);
            const std::string name = !e.per_defect_type.empty() && s.label
                                         ? (path.parent_path().filename() / path.filename()).string()
                                         : path.filename().string();
            std::ostringstream caption, detail;
            caption << name << "  score " << std::setprecision(5) << e.scores[i] << "  "
                    << (s.label ? "anomalous" : "normal") << (e.results[i].is_anomaly ? ", flagged" : ", not flagged");
            detail << g.description << " " << (k + 1) << " of " << g.members.size() << "; map blue 0 to red "
                   << std::setprecision(3) << scale;
            c.caption = caption.str();
            c.detail = detail.str();
            const std::string out = (folder / (std::string(g.file_stem) + "_" + std::to_string(k + 1) + ".png")).string();
            sga::save_png(out, sga::plot_anomaly_case(c));
            written.push_back(out);
        }
    }
    return written;
}

}  // namespace cli
