// skipganomaly eval: the metrics of a saved detector on a labelled data set.
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "data.hpp"
#include "evaluation.hpp"
#include "evaluation_plots.hpp"
#include "skipganomaly/detector.hpp"

namespace cli {
namespace {

const char* const eval_help = R"(usage: skipganomaly eval --model MODEL.safetensors --data SPEC [options]

Scores a labelled data set and prints image AUROC, AUPRC and F1-max (with its threshold);
when the data set has masks, pixel AUROC, AUPRO (MVTec AD's per-region overlap, integrated
to a false-positive rate of 0.3) and pixel F1-max; and with MVTec AD's test/<defect>/
folders, the image AUROC of each defect type. The model file is never changed.
Anomalies are the positive class. AUPRC and F1-max depend on the share of anomalies (the
base rate, printed beside them): with 90% anomalies a random score has AUPRC 0.90 and
flagging everything has F1 0.95, so read them against those baselines.

data (--data SPEC):
  mvtec:ROOT                                 an MVTec AD category: ROOT/test, ROOT/ground_truth
  anomalib:NORMAL_DIR:ABNORMAL_DIR[:MASK_DIR] anomalib's Folder layout
  mnist:DIR:DIGIT                            MNIST test split; other digits are anomalous
  cifar10:DIR:CLASS                          CIFAR-10 test split; other classes are anomalous

options:
  --plots DIR              write DIR/roc.png, DIR/histogram.png and, in DIR/cases/, one
                           strip (image | ground truth | anomaly map | predicted mask) for
                           each of the 4 highest-scoring normal images and the 4 lowest-
                           and 4 highest-scoring anomalous ones
  --json                   print the metrics as one JSON object instead
  --precision float32|bfloat16
                           the convolutions' arithmetic (default: the model's): bfloat16
                           where the processor has AVX512-BF16, else float32 (a warning says so)
  --device cpu|cuda|auto   where to score (default auto)
  --threads N              CPU threads
)";

// Every option eval accepts; eval_help describes each.
const std::vector<OptionSpec> eval_options = {
    {"model"},
    {"data"},
    {"plots"},
    {"json", false},
    {"device"},
    {"precision"},
    {"threads"},
};

}  // namespace

int command_eval(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(args, eval_options, false);
    if (a.help) {
        std::cout << eval_help;
        return 0;
    }
    const std::string model_path = a.require("model");
    const DataSpec spec = parse_data_spec(a.require("data"), true);
    const sga::Device device = a.get("device") ? parse_device(*a.get("device")) : sga::Device::Auto;
    apply_threads(a);

    sga::Detector detector = sga::Detector::load(model_path, device);
    apply_precision(a, detector);
    const std::vector<sga::LabeledImage> samples = load_labelled_images(spec);
    const Evaluation e = evaluate(detector, samples, false);
    std::vector<std::string> plots;
    if (const auto dir = a.get("plots")) {
        plots = write_plots(*dir, e);
        const std::vector<std::string> strips = write_case_strips(*dir, e, detector, samples);
        plots.insert(plots.end(), strips.begin(), strips.end());
    }
    if (a.has("json")) {
        nlohmann::json j = evaluation_json(e);
        if (!plots.empty()) j["plots"] = plots;
        std::cout << j.dump() << '\n';
    } else {
        print_evaluation(e);
        for (const std::string& p : plots) std::cout << "wrote " << p << "\n";
    }
    return 0;
}

}  // namespace cli
