// skipganomaly demo: trains on the bundled MNIST subset and reports what it finds.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "data.hpp"
#include "evaluation.hpp"
#include "evaluation_plots.hpp"
#include "fit_report.hpp"
#include "heatmap.hpp"
#include "outputs.hpp"
#include "progress.hpp"
#include "skipganomaly/config.hpp"
#include "skipganomaly/datasets.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/image.hpp"

// The bundled data folder; CMake points it at the source tree's data/.
#ifndef SKIPGANOMALY_DATA_DIR
#define SKIPGANOMALY_DATA_DIR "data"
#endif

namespace fs = std::filesystem;

namespace cli {
namespace {

const char* const demo_help = R"(usage: skipganomaly demo [options]

Trains on one digit of the bundled MNIST subset, scores every test image (the other digits
are the anomalies), prints AUROC, AUPRC and F1-max, and writes the model, heat maps and
plots to the output folder.

options:
  --out DIR                output folder (default skipganomaly-demo)
  --digit D                the normal digit (default 1)
  --epochs N               training epochs (default 3)
  --batch-size N           images per step (default 16: on a CPU, more, smaller steps
                           reach a good model sooner than the paper's 64)
  --train-limit N          train on at most N images of the digit (default: all)
  --seed N                 seed (default 0)
  --data-dir DIR           folder holding mnist/ (default: $SKIPGANOMALY_DATA_DIR, else the
                           source tree's data/)
  --device cpu|cuda|auto   where to train (default auto)
  --threads N              CPU threads
)";

// Every option demo accepts; demo_help describes each.
const std::vector<OptionSpec> demo_options = {
    {"out"},
    {"digit"},
    {"epochs"},
    {"batch-size"},
    {"train-limit"},
    {"seed"},
    {"data-dir"},
    {"device"},
    {"threads"},
};

std::string default_data_dir() {
    if (const char* env = std::getenv("SKIPGANOMALY_DATA_DIR"); env && *env) return env;
    return SKIPGANOMALY_DATA_DIR;
}

}  // namespace

int command_demo(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(args, demo_options, false);
    if (a.help) {
        std::cout << demo_help;
        return 0;
    }
    const fs::path out = a.get("out").value_or("skipganomaly-demo");
    const int digit = integer_option(a, "digit", 1, 0, 9);
    const int limit = integer_option(a, "train-limit", 0, 1, 1 << 30);
    const std::string data_dir = a.get("data-dir").value_or(default_data_dir());
    sga::DetectorOptions o;
    o.architecture.image_size = 32;
    o.architecture.channels = 1;
    // Measured on 2 shared CPU cores: digit 1, batch 16, 3 epochs (150 steps) trains in
    // well under a minute unloaded and reaches a test AUROC near 0.99; batch 64 needs
    // several times longer for the same quality.
    o.epochs = integer_option(a, "epochs", 3, 1, 1000000);
    o.batch_size = integer_option(a, "batch-size", 16, 1, 1 << 20);
    if (const auto seed = a.get("seed"))
        o.seed = static_cast<std::uint64_t>(parse_integer("seed", *seed, 0, std::numeric_limits<long long>::max()));
    if (const auto d = a.get("device")) o.device = parse_device(*d);
    apply_threads(a);

    const auto start = std::chrono::steady_clock::now();
    const MnistFiles files = mnist_files((fs::path(data_dir) / "mnist").string());
    sga::OneClassSplit split =
        sga::mnist_one_class(files.train_images, files.train_labels, files.test_images, files.test_labels, digit);
    if (limit > 0 && split.train_normal.size() > static_cast<std::size_t>(limit))
        split.train_normal.resize(static_cast<std::size_t>(limit));
    const std::vector<std::uint8_t> test_digits = sga::read_idx_labels(files.test_labels);

    // Nothing is made in the output folder until there is something to put there.
    check_output_folder("out", out.string());
    sga::Detector detector(o);
    std::cout << "skipganomaly " << SKIPGANOMALY_VERSION_STRING << " demo: MNIST digit " << digit
              << " is normal, the other digits are anomalies\n"
              << "training on " << split.train_normal.size() << " images of digit " << digit << " ("
              << o.epochs << " epochs, 32x32, batch " << o.batch_size << ", device "
              << sga::to_string(detector.device()) << ", " << sga::cpu_threads() << " CPU thread(s))\n"
              << std::flush;
    const sga::FitReport report = fit_with_progress(detector, split.train_normal);
    if (report.epochs_completed == 0) {
        std::cerr << "error: interrupted before the first epoch was completed; nothing was written\n";
        return 130;
    }
    print_fit_report(report, o.recipe.orientation_check.enabled);

    fs::create_directories(out);
    const std::string model_path = (out / "model.safetensors").string();
    detector.save(model_path);

    std::cout << "scoring " << split.test.size() << " test images\n";
    const Evaluation e = evaluate(detector, split.test, true);
    print_evaluation(e);

    // The extremes of the ranking, with the digit each image shows.
    std::vector<std::size_t> order(e.scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return e.scores[x] > e.scores[y]; });
    const auto digit_of = [&](std::size_t i) {
        return i < test_digits.size() ? std::to_string(static_cast<int>(test_digits[i])) : std::string("?");
    };
    const auto print_rows = [&](const char* title, auto begin, auto end) {
        std::cout << title << "\n  test index  digit  label      score\n";
        for (auto it = begin; it != end; ++it) {
            const std::size_t i = *it;
            std::cout << "  " << std::setw(10) << i << "  " << std::setw(5) << digit_of(i) << "  " << std::setw(5)
                      << (e.labels[i] ? "anom" : "norm") << "  " << std::setw(9) << std::fixed << std::setprecision(5)
                      << e.scores[i] << "\n";
            std::cout.unsetf(std::ios::floatfield);
        }
    };
    const std::size_t rows = std::min<std::size_t>(5, order.size());
    print_rows("most anomalous test images:", order.begin(), order.begin() + static_cast<std::ptrdiff_t>(rows));
    print_rows("least anomalous test images:", order.rbegin(), order.rbegin() + static_cast<std::ptrdiff_t>(rows));

    // Heat maps of the first few normal and anomalous test images (file order, not picked),
    // on one colour scale (the 99th percentile of their pooled errors) so they can be compared.
    std::vector<std::size_t> shown;
    for (int wanted_label : {0, 1}) {
        int taken = 0;
        for (std::size_t i = 0; i < e.labels.size() && taken < 4; ++i)
            if (e.labels[i] == wanted_label) {
                shown.push_back(i);
                ++taken;
            }
    }
    std::vector<float> pooled;
    for (std::size_t i : shown) pooled.insert(pooled.end(), e.results[i].anomaly_map.begin(), e.results[i].anomaly_map.end());
    const float scale = map_scale(std::move(pooled));
    // The images themselves go to images/, to try `skipganomaly score` on.
    fs::create_directories(out / "heatmaps");
    fs::create_directories(out / "images");
    std::vector<std::string> heatmaps, originals;
    for (std::size_t i : shown) {
        const std::string name = std::string(e.labels[i] ? "anomalous" : "normal") + "_index" + std::to_string(i) +
                                 "_digit" + digit_of(i) + ".png";
        const std::string path = (out / "heatmaps" / name).string();
        write_heatmap(path, split.test[i].image, e.results[i], scale);
        heatmaps.push_back(path);
        originals.push_back((out / "images" / name).string());
        sga::save_png(originals.back(), split.test[i].image);
    }
    const std::vector<std::string> plots = write_plots(out.string(), e);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::cout << "\nwrote\n  " << model_path << "  (the trained model)\n";
    for (const std::string& p : heatmaps) std::cout << "  " << p << "\n";
    std::cout << "  " << (out / "images").string() << "/  (the " << originals.size()
              << " test images of those heat maps)\n"
              << "  " << plots[0] << "  (ROC curve)\n  " << plots[1]
              << "  (score histogram: normal blue, anomalous red)\n"
              << "demo finished in " << std::fixed << std::setprecision(1) << seconds << " s\n"
              << "next: skipganomaly score --model " << model_path << " " << originals.front() << " "
              << originals.back() << "\n";
    return 0;
}

}  // namespace cli
