// Scoring a labelled data set and what eval and demo report from it.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "skipganomaly/datasets.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/metrics.hpp"

namespace cli {

// One entry of scores, labels and results per sample, in the samples' order.
struct Evaluation {
    std::vector<float> scores;
    std::vector<int> labels;
    std::vector<sga::ScoreResult> results;  // anomaly maps kept only when asked
    double auroc = 0, auprc = 0;
    sga::F1Max f1;
    // With ground-truth masks: pixel AUROC, AUPRO (to FPR 0.3) and pixel F1-max.
    std::optional<double> pixel_auroc, aupro;
    std::optional<sga::F1Max> pixel_f1;
    // Image AUROC of each defect type (the anomalous images' folder names, MVTec AD's
    // test/<defect>/) against every normal image; empty when there are fewer than two types.
    std::vector<sga::DefectTypeRocAuc> per_defect_type;
    std::size_t normal = 0, anomalous = 0;
    // At the model's own threshold.
    std::size_t true_positives = 0, false_positives = 0, true_negatives = 0, false_negatives = 0;
    float threshold = 0;
};

// Scores every sample (in batches of the model's score_batch_size) and computes the image
// metrics, the pixel metrics where there are masks, and the per-defect-type AUROC.
// `keep_maps`: results[i].anomaly_map is kept (otherwise emptied). sga::FormatError when the
// samples are not both normal and anomalous.
Evaluation evaluate(const sga::Detector& detector, const std::vector<sga::LabeledImage>& samples, bool keep_maps);

// The share of anomalies.
double base_rate(const Evaluation& e);
// F1 of flagging every image: what F1-max is never below.
double flag_all_f1(const Evaluation& e);

// The metrics as text, to stdout.
void print_evaluation(const Evaluation& e);
// The metrics as one JSON object (eval --json).
nlohmann::json evaluation_json(const Evaluation& e);

}  // namespace cli
