// The scoring precisions against each other on the same trained models (docs/quality.md,
// "Scoring precision"): every model file class<C>_seed<S>.safetensors in a folder (as
// eval_one_class --save-models writes them) scores its class's one-class test set in float32
// and in each other precision, and the program prints, per precision, the mean AUROC over the
// classes for each seed, its mean and sample standard deviation over seeds, its difference
// from float32, the largest score differences on one image, and the share of test images
// whose anomaly decision at the model's stored threshold agrees with float32's.
//
// Two score differences, because the default recipe's score is standardised (it crosses 0,
// where a relative difference means nothing): the largest relative difference of the
// reconstruction error (a mean of squares, the score's main part), and the largest score
// difference as a fraction of the held-out normal scores' range (max - min, what
// normalized_score is scaled by).
//
//   eval_precision --dataset mnist --models runs/prec/mnist [--out precision.json]
//   eval_precision --dataset cifar10 --data data/cifar10 --models DIR [--max-test N]
//
// --max-test N scores only the first N images of the test file (every class has its share of
// them: the file is not sorted by class).
//
// No test label chooses anything: the models are final, the thresholds those fit stored.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "skipganomaly/datasets.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/metrics.hpp"

namespace fs = std::filesystem;
using namespace sga;

namespace {

struct Arguments {
    std::string dataset = "mnist", data, models, out;
    std::size_t max_test = 0;  // 0: the whole test set
};

Arguments parse(int argc, char** argv) {
    Arguments a;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw InvalidArgument(flag + " needs a value");
            return argv[++i];
        };
        if (flag == "--dataset") a.dataset = value();
        else if (flag == "--data") a.data = value();
        else if (flag == "--models") a.models = value();
        else if (flag == "--out") a.out = value();
        else if (flag == "--max-test") a.max_test = std::stoull(value());
        else throw InvalidArgument("unknown option " + flag);
    }
    if (a.dataset != "mnist" && a.dataset != "cifar10") throw InvalidArgument("--dataset must be mnist or cifar10");
    if (a.models.empty()) throw InvalidArgument("--models DIR is required");
    if (a.data.empty()) a.data = std::string(SKIPGANOMALY_DATA_DIR) + "/" + a.dataset;
    return a;
}

std::vector<LabeledImage> test_set(const Arguments& a, int normal_class) {
    if (a.dataset == "cifar10") return cifar10_one_class(a.data, normal_class, 1).test;
    const std::string d = a.data;
    return mnist_one_class(d + "/train-images-idx3-ubyte.gz", d + "/train-labels-idx1-ubyte.gz",
                           d + "/t10k-images-idx3-ubyte.gz", d + "/t10k-labels-idx1-ubyte.gz", normal_class)
        .test;
}

double mean(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0 : s / static_cast<double>(v.size());
}
double sample_sd(const std::vector<double>& v) {
    if (v.size() < 2) return 0;
    const double m = mean(v);
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / static_cast<double>(v.size() - 1));
}

struct Run {
    int normal_class = 0, seed = 0;
    std::map<std::string, double> auroc;           // by precision
    std::map<std::string, double> largest_relative; // reconstruction error, against float32
    std::map<std::string, double> largest_of_range;  // score difference / normal score range
    std::map<std::string, double> agreement;       // decisions equal to float32's
    std::map<std::string, std::string> active;     // what ran
};

}  // namespace

int main(int argc, char** argv) try {
    const Arguments args = parse(argc, argv);
    const std::regex name(R"(class(\d+)_seed(\d+)\.safetensors)");
    std::vector<std::pair<int, int>> found;  // (class, seed)
    for (const auto& entry : fs::directory_iterator(args.models)) {
        std::smatch m;
        const std::string file = entry.path().filename().string();
        if (std::regex_match(file, m, name)) found.emplace_back(std::stoi(m[1]), std::stoi(m[2]));
    }
    std::sort(found.begin(), found.end());
    if (found.empty()) throw InvalidArgument("no class<C>_seed<S>.safetensors in " + args.models);
    const std::vector<Precision> others = {Precision::BFloat16};
    std::map<int, std::vector<LabeledImage>> tests;
    std::vector<Run> runs;
    for (const auto& [normal_class, seed] : found) {
        if (!tests.count(normal_class)) {
            tests[normal_class] = test_set(args, normal_class);
            if (args.max_test > 0 && tests[normal_class].size() > args.max_test) tests[normal_class].resize(args.max_test);
        }
        const std::vector<LabeledImage>& test = tests[normal_class];
        std::vector<ImageView> views;
        std::vector<int> labels;
        for (const LabeledImage& t : test) {
            views.push_back(t.image.view());
            labels.push_back(t.label);
        }
        const std::string path =
            args.models + "/class" + std::to_string(normal_class) + "_seed" + std::to_string(seed) + ".safetensors";
        Detector detector = Detector::load(path, Device::Cpu);
        detector.set_precision(Precision::Float32);
        Run run{normal_class, seed, {}, {}, {}, {}};
        const std::vector<ScoreResult> reference = detector.score(std::span<const ImageView>(views));
        std::vector<float> scores;
        for (const ScoreResult& r : reference) scores.push_back(r.score);
        run.auroc["float32"] = roc_auc(scores, labels);
        run.active["float32"] = "float32";
        for (Precision p : others) {
            detector.set_precision(p);
            const std::string key = precision_name(p);
            run.active[key] = precision_name(detector.active_precision());
            const std::vector<ScoreResult> results = detector.score(std::span<const ImageView>(views));
            std::vector<float> s;
            const ScoreStatistics& normal = detector.validation_statistics();
            const double range = std::max(1e-12, normal.max - normal.min);
            double largest = 0, of_range = 0;
            std::size_t agree = 0;
            for (std::size_t i = 0; i < results.size(); ++i) {
                s.push_back(results[i].score);
                const double r = reference[i].reconstruction_error;
                largest = std::max(largest, std::abs(results[i].reconstruction_error - r) / std::max(1e-12, std::abs(r)));
                of_range = std::max(of_range, std::abs(static_cast<double>(results[i].score) - reference[i].score) / range);
                agree += results[i].is_anomaly == reference[i].is_anomaly;
            }
            run.auroc[key] = roc_auc(s, labels);
            run.largest_relative[key] = largest;
            run.largest_of_range[key] = of_range;
            run.agreement[key] = static_cast<double>(agree) / static_cast<double>(results.size());
        }
        std::printf("class %d seed %d (%zu test images): float32 %.10f", normal_class, seed, test.size(),
                    run.auroc["float32"]);
        for (Precision p : others) {
            const std::string key = precision_name(p);
            std::printf("  %s %.4f (ran %s; largest difference: reconstruction error %.2e relative, score %.2e of the "
                        "normal range; decisions agree %.4f)",
                        key.c_str(), run.auroc[key], run.active[key].c_str(), run.largest_relative[key],
                        run.largest_of_range[key], run.agreement[key]);
        }
        std::printf("\n");
        std::fflush(stdout);
        runs.push_back(run);
    }

    // Per precision: the mean over classes for each seed, then mean and sd over seeds.
    std::map<int, std::vector<const Run*>> by_seed;
    for (const Run& r : runs) by_seed[r.seed].push_back(&r);
    nlohmann::json summary = nlohmann::json::object();
    std::vector<std::string> keys = {"float32"};
    for (Precision p : others) keys.push_back(precision_name(p));
    std::map<std::string, std::vector<double>> seed_means;
    for (const std::string& key : keys)
        for (const auto& [seed, list] : by_seed) {
            std::vector<double> a;
            for (const Run* r : list) a.push_back(r->auroc.at(key));
            seed_means[key].push_back(mean(a));
        }
    std::printf("\n| precision | classes x seeds | mean AUROC | sd over seeds | difference from float32 | "
                "largest reconstruction-error difference (relative) | largest score difference (of the normal range) | "
                "decisions agreeing (lowest) |\n|---|---|---|---|---|---|---|---|\n");
    for (const std::string& key : keys) {
        double largest = 0, of_range = 0, agreement = 1;
        for (const Run& r : runs)
            if (key != "float32") {
                largest = std::max(largest, r.largest_relative.at(key));
                of_range = std::max(of_range, r.largest_of_range.at(key));
                agreement = std::min(agreement, r.agreement.at(key));
            }
        double mean_agreement = 0;
        for (const Run& r : runs) mean_agreement += key == "float32" ? 1.0 : r.agreement.at(key);
        mean_agreement /= static_cast<double>(runs.size());
        const double m = mean(seed_means[key]), sd = sample_sd(seed_means[key]);
        const double difference = m - mean(seed_means["float32"]);
        std::printf("| %s | %zu x %zu | %.4f | %.4f | %+.4f | %.2e | %.2e | %.4f (%.4f) |\n", key.c_str(),
                    runs.size() / by_seed.size(), by_seed.size(), m, sd, difference, largest, of_range, mean_agreement,
                    agreement);
        summary[key] = {{"mean_auroc", m},
                        {"sd_over_seeds", sd},
                        {"difference", difference},
                        {"seed_means", seed_means[key]},
                        {"largest_reconstruction_relative_difference", largest},
                        {"largest_score_difference_of_normal_range", of_range},
                        {"mean_agreement", mean_agreement},
                        {"lowest_agreement", agreement}};
    }
    if (!args.out.empty()) {
        nlohmann::json per_run = nlohmann::json::array();
        for (const Run& r : runs)
            per_run.push_back({{"class", r.normal_class},
                               {"seed", r.seed},
                               {"auroc", r.auroc},
                               {"largest_reconstruction_relative_difference", r.largest_relative},
                               {"largest_score_difference_of_normal_range", r.largest_of_range},
                               {"agreement", r.agreement},
                               {"active", r.active}});
        std::ofstream(args.out) << nlohmann::json{{"dataset", args.dataset}, {"summary", summary}, {"runs", per_run}}.dump(1)
                                << "\n";
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "eval_precision: %s\n", e.what());
    return 1;
}
