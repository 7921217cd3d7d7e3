// print_evaluation and evaluation_json: the two forms of the same report, side by side.
#include <algorithm>
#include <iomanip>
#include <iostream>

#include "evaluation.hpp"

namespace cli {

double base_rate(const Evaluation& e) {
    return static_cast<double>(e.anomalous) / static_cast<double>(e.normal + e.anomalous);
}

double flag_all_f1(const Evaluation& e) {
    const double p = base_rate(e);
    return 2 * p / (p + 1);
}

void print_evaluation(const Evaluation& e) {
    const auto ratio = [](std::size_t a, std::size_t b) { return b ? static_cast<double>(a) / static_cast<double>(b) : 0.0; };
    std::cout << "images      " << e.scores.size() << " (" << e.normal << " normal, " << e.anomalous << " anomalous)\n"
              << "anomalies are the positive class; base rate (share of anomalies) " << std::fixed
              << std::setprecision(4) << base_rate(e) << "\n"
              << "AUROC       " << e.auroc << "  (a random score: 0.5)\n"
              << "AUPRC       " << e.auprc << "  (a random score: the base rate, " << base_rate(e) << ")\n"
              << "F1-max      " << e.f1.f1 << " at threshold " << std::setprecision(6) << e.f1.threshold
              << std::setprecision(4) << "  (flagging every image: " << flag_all_f1(e) << ")\n";
    if (e.pixel_auroc) std::cout << std::setprecision(4) << "pixel AUROC " << *e.pixel_auroc << "\n";
    if (e.aupro) std::cout << "AUPRO       " << *e.aupro << "  (mean overlap of each defect region, false-positive rate 0 to 0.3)\n";
    if (e.pixel_f1)
        std::cout << "pixel F1-max " << e.pixel_f1->f1 << " at threshold " << std::setprecision(6) << e.pixel_f1->threshold
                  << std::setprecision(4) << "\n";
    if (!e.per_defect_type.empty()) {
        std::size_t widest = 11;
        for (const sga::DefectTypeRocAuc& d : e.per_defect_type) widest = std::max(widest, d.defect_type.size());
        std::cout << "image AUROC per defect type (against the " << e.normal << " normal images):\n  " << std::left
                  << std::setw(static_cast<int>(widest)) << "defect type" << std::right << "  images   AUROC\n";
        for (const sga::DefectTypeRocAuc& d : e.per_defect_type)
            std::cout << "  " << std::left << std::setw(static_cast<int>(widest)) << d.defect_type << std::right << "  "
                      << std::setw(6) << d.anomalous << "  " << d.roc_auc << "\n";
    }
    std::cout << std::setprecision(6) << "at the model threshold " << e.threshold << ": " << std::setprecision(4)
              << "precision " << ratio(e.true_positives, e.true_positives + e.false_positives) << ", recall "
              << ratio(e.true_positives, e.true_positives + e.false_negatives) << ", accuracy "
              << ratio(e.true_positives + e.true_negatives, e.scores.size()) << "\n";
    std::cout.unsetf(std::ios::floatfield);
}

nlohmann::json evaluation_json(const Evaluation& e) {
    nlohmann::json j = {{"images", e.scores.size()},
                        {"normal", e.normal},
                        {"anomalous", e.anomalous},
                        {"auroc", e.auroc},
                        {"auprc", e.auprc},
                        {"positive_class", "anomalous"},
                        {"base_rate", base_rate(e)},
                        {"flag_all_f1", flag_all_f1(e)},
                        {"f1_max", e.f1.f1},
                        {"f1_max_threshold", e.f1.threshold},
                        {"threshold", e.threshold},
                        {"true_positives", e.true_positives},
                        {"false_positives", e.false_positives},
                        {"true_negatives", e.true_negatives},
                        {"false_negatives", e.false_negatives}};
    j["pixel_auroc"] = e.pixel_auroc ? nlohmann::json(*e.pixel_auroc) : nlohmann::json(nullptr);
    j["aupro"] = e.aupro ? nlohmann::json(*e.aupro) : nlohmann::json(nullptr);
    j["pixel_f1_max"] = e.pixel_f1 ? nlohmann::json(e.pixel_f1->f1) : nlohmann::json(nullptr);
    j["pixel_f1_max_threshold"] = e.pixel_f1 ? nlohmann::json(e.pixel_f1->threshold) : nlohmann::json(nullptr);
    nlohmann::json per_type = nlohmann::json::array();
    for (const sga::DefectTypeRocAuc& d : e.per_defect_type)
        per_type.push_back({{"defect_type", d.defect_type}, {"images", d.anomalous}, {"auroc", d.roc_auc}});
    j["auroc_per_defect_type"] = per_type;
    return j;
}

}  // namespace cli
