// skipganomaly calibrate: sets the threshold stored in a model file.
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "data.hpp"
#include "outputs.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/error.hpp"

namespace cli {
namespace {

const char* const calibrate_help = R"(usage: skipganomaly calibrate --model MODEL.safetensors --data SPEC [options]

Sets the threshold stored in a model file (and learns its pixel threshold for masks): what a
converted PyTorch model, whose file holds threshold 0 and flags every image, needs.

data (--data SPEC):
  folder:DIR                                  normal images only: the threshold estimates
  anomalib:NORMAL_DIR                         --quantile of their scores (threshold_from_normal_scores)
  mvtec:ROOT                                  labelled images: the F1-maximising threshold;
  anomalib:NORMAL_DIR:ABNORMAL_DIR            the normal ones also give the statistics and
  mnist:DIR:DIGIT                             the pixel threshold
Use images the model was not trained on.

options:
  --out PATH               write the calibrated model here (default: replace --model; either
                           way the file is written to a temporary file and renamed over it;
                           whether it can be written is checked before any image is scored)
  --quantile X             the quantile for normal-only data (default: the model's
                           threshold_quantile, 0.99 unless fit was told otherwise)
  --json                   print the result as one JSON object
  --precision float32|bfloat16
                           the convolutions' arithmetic (default: the model's): bfloat16
                           where the processor has AVX512-BF16, else float32 (a warning says so)
  --device cpu|cuda|auto   where to score (default auto)
  --threads N              CPU threads (default: OMP_NUM_THREADS, else every core)
)";

// Every option calibrate accepts; calibrate_help describes each.
const std::vector<OptionSpec> calibrate_options = {
    {"model"},
    {"data"},
    {"out"},
    {"quantile"},
    {"json", false},
    {"device"},
    {"precision"},
    {"threads"},
};

}  // namespace

int command_calibrate(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(args, calibrate_options, false);
    if (a.help) {
        std::cout << calibrate_help;
        return 0;
    }
    const std::string model_path = a.require("model");
    const std::string data = a.require("data");
    const std::string out = a.get("out").value_or(model_path);
    const sga::Device device = a.get("device") ? parse_device(*a.get("device")) : sga::Device::Auto;
    std::optional<double> quantile;
    if (const auto q = a.get("quantile")) {
        quantile = parse_real("quantile", *q);
        if (!(*quantile > 0 && *quantile <= 1)) throw UsageError("--quantile must lie in (0, 1]");
    }
    const bool normal_only = data.rfind("folder:", 0) == 0 ||
                             (data.rfind("anomalib:", 0) == 0 && data.find(':', 9) == std::string::npos);
    const DataSpec spec = parse_data_spec(data, !normal_only);
    if (quantile && !normal_only) throw UsageError("--quantile applies to normal-only data (folder: or anomalib:NORMAL_DIR)");
    apply_threads(a);
    check_output_file(a.get("out") ? "out" : "model", out);

    sga::Detector detector = sga::Detector::load(model_path, device);
    apply_precision(a, detector);
    const float before = detector.threshold();
    sga::CalibrationResult c;
    if (normal_only) {
        const std::vector<sga::Image> images = load_training_images(spec);
        std::vector<sga::ImageView> views;
        for (const sga::Image& im : images) views.push_back(im.view());
        c = quantile ? detector.calibrate(views, *quantile) : detector.calibrate(views);
    } else {
        const std::vector<sga::LabeledImage> samples = load_labelled_images(spec);
        std::vector<sga::ImageView> normal, anomalous;
        for (const sga::LabeledImage& s : samples) (s.label ? anomalous : normal).push_back(s.image.view());
        if (normal.empty() || anomalous.empty())
            throw sga::FormatError("calibrating on labelled data needs normal and anomalous images; found " +
                                   std::to_string(normal.size()) + " normal and " + std::to_string(anomalous.size()) +
                                   " anomalous");
        c = detector.calibrate(normal, anomalous);
    }
    detector.save(out);
    if (a.has("json")) {
        nlohmann::json j = {{"model", out},
                            {"rule", c.rule},
                            {"threshold", c.threshold},
                            {"previous_threshold", before},
                            {"normal_images", c.normal_images},
                            {"anomalous_images", c.anomalous_images},
                            {"pixel_threshold", detector.pixel_statistics().threshold}};
        if (c.f1 >= 0) j["f1"] = c.f1;
        if (c.auroc >= 0) j["auroc"] = c.auroc;
        std::cout << j.dump() << '\n';
    } else {
        std::cout << "threshold " << before << " -> " << c.threshold << " (" << c.rule << " on " << c.normal_images
                  << " normal";
        if (c.anomalous_images) std::cout << " and " << c.anomalous_images << " anomalous";
        std::cout << " images";
        if (c.f1 >= 0) std::cout << "; F1 " << c.f1 << ", AUROC " << c.auroc;
        std::cout << ")\npixel threshold " << detector.pixel_statistics().threshold << "\nmodel saved to " << out << "\n";
    }
    return 0;
}

}  // namespace cli
