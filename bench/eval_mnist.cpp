// MNIST one-class evaluation with the official recipe (docs/results.md).
//
// For each digit d: train on the training images of d only, test on all test images
// (anomaly = any other digit); isize 32, nc 1, ngf = ndf = 64, nz 100, batch 64, Adam 2e-4
// (0.5, 0.999), 15 epochs, seed 0. Reports the image AUROC after every epoch with
// eval-mode scoring (running statistics, our default) and, after the last epoch (or every
// epoch with --train-mode-every-epoch), with the official train-mode scoring (batch
// statistics over test batches of 64 in file order). No epoch or threshold is chosen by
// looking at test labels: the reported figure is the last epoch's.
//
//   eval_mnist --data data/mnist --digits 0,1,2 --epochs 15 --out results.json
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "skipganomaly/datasets.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/metrics.hpp"

namespace {

using namespace sga;

struct Arguments {
    std::string data = SKIPGANOMALY_DATA_DIR "/mnist";
    std::vector<int> digits = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    int epochs = 15;
    std::uint64_t seed = 0;
    std::string out = "mnist_results.json";
    int threads = 0;
    bool train_mode_every_epoch = false;
    Recipe recipe = Recipe::robust();
    float validation_fraction = -1;  // -1: 0 for the official recipe (its protocol), 0.1 otherwise
};

Arguments parse(int argc, char** argv) {
    Arguments a;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw InvalidArgument(flag + " needs a value");
            return argv[++i];
        };
        if (flag == "--data") a.data = value();
        else if (flag == "--epochs") a.epochs = std::stoi(value());
        else if (flag == "--seed") a.seed = std::stoull(value());
        else if (flag == "--out") a.out = value();
        else if (flag == "--threads") a.threads = std::stoi(value());
        else if (flag == "--train-mode-every-epoch") a.train_mode_every_epoch = true;
        else if (flag == "--recipe") a.recipe = Recipe::named(value());
        // Screening knobs on top of --recipe (docs/quality.md's ablation).
        else if (flag == "--gated-skips") a.recipe.skip_gating.gated_skips = std::stoi(value());
        else if (flag == "--open-probability") a.recipe.skip_gating.training_open_probability = std::stof(value());
        else if (flag == "--recompute-batch-norm") a.recipe.recompute_batch_norm = value() == "on";
        else if (flag == "--stopping") a.recipe.stopping = value() == "final" ? StoppingRule::FinalEpoch : StoppingRule::BestSyntheticAnomalies;
        else if (flag == "--validation-fraction") a.validation_fraction = std::stof(value());
        else if (flag == "--digits") {
            a.digits.clear();
            std::stringstream list(value());
            for (std::string d; std::getline(list, d, ',');) a.digits.push_back(std::stoi(d));
        } else throw InvalidArgument("unknown option " + flag);
    }
    return a;
}

// Scores the whole test set in batches of 64 in file order and returns its AUROC.
double test_auroc(const SkipGanomaly& model, const std::vector<float>& samples, const std::vector<int>& labels,
                  BatchNormMode mode) {
    const std::int64_t n = static_cast<std::int64_t>(labels.size()), per = 32 * 32, batch = 64;
    Context ctx(Device::Cpu);
    Tape tape(ctx);
    Tensor input({batch, 1, 32, 32}, Device::Cpu);
    std::vector<float> scores;
    for (std::int64_t first = 0; first < n; first += batch) {
        const std::int64_t count = std::min(batch, n - first);
        std::copy_n(samples.data() + first * per, count * per, input.data());
        const BatchScores parts = model.score(ctx, tape, input.view().slice_batch(0, count), mode, false);
        for (std::int64_t i = 0; i < count; ++i)
            scores.push_back(anomaly_score(parts.reconstruction[static_cast<std::size_t>(i)], parts.latent[static_cast<std::size_t>(i)]));
    }
    return roc_auc(scores, labels);
}

}  // namespace

int main(int argc, char** argv) try {
    const Arguments args = parse(argc, argv);
    if (args.threads > 0) set_cpu_threads(args.threads);
    nlohmann::json results = nlohmann::json::array();
    std::printf("digit  train  epochs  kept  AUROC(eval)  AUROC(train-mode)  peak-eval(epoch)  seconds\n");
    double sum_eval = 0, sum_train = 0;
    for (int digit : args.digits) {
        const OneClassSplit split = mnist_one_class(args.data + "/train-images-idx3-ubyte.gz", args.data + "/train-labels-idx1-ubyte.gz",
                                                    args.data + "/t10k-images-idx3-ubyte.gz", args.data + "/t10k-labels-idx1-ubyte.gz",
                                                    digit);
        std::vector<float> test_samples(split.test.size() * 32 * 32);
        std::vector<int> labels;
        for (std::size_t i = 0; i < split.test.size(); ++i) {
            preprocess(split.test[i].image.view(), 32, 1, test_samples.data() + i * 32 * 32);
            labels.push_back(split.test[i].label);
        }

        DetectorOptions options;
        options.architecture.image_size = 32;
        options.architecture.channels = 1;
        options.epochs = args.epochs;
        options.batch_size = 64;
        options.seed = args.seed;
        options.device = Device::Cpu;
        options.recipe = args.recipe;
        // The official protocol trains on every normal image; other recipes hold out 10%.
        options.validation_fraction = args.validation_fraction >= 0 ? args.validation_fraction
                                      : args.recipe.stopping == StoppingRule::FinalEpoch ? 0.0f : 0.1f;
        Detector detector(options);

        std::vector<double> curve_eval, curve_train, curve_synthetic, epoch_seconds;
        double final_train_mode = 0;
        FitCallbacks callbacks;
        callbacks.on_epoch_model = [&](const EpochSummary& summary, const SkipGanomaly& model) {
            curve_eval.push_back(test_auroc(model, test_samples, labels, BatchNormMode::RunningStatistics));
            epoch_seconds.push_back(summary.seconds);
            curve_synthetic.push_back(summary.synthetic_auroc);
            const bool last = summary.epoch == args.epochs;
            if (last || args.train_mode_every_epoch) {
                const double train_mode = test_auroc(model, test_samples, labels, BatchNormMode::BatchStatistics);
                if (args.train_mode_every_epoch) curve_train.push_back(train_mode);
                if (last) final_train_mode = train_mode;
            }
            std::fprintf(stderr, "digit %d epoch %2d: G %.3f D %.3f AUROC(eval) %.4f synthetic %.4f (%.1f s)\n", digit,
                         summary.epoch, summary.generator_loss, summary.discriminator_loss, curve_eval.back(),
                         summary.synthetic_auroc, summary.seconds);
        };
        const auto start = std::chrono::steady_clock::now();
        const FitReport report = detector.fit(split.train_normal, callbacks);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        // The figure reported: the model fit() kept (the last epoch's, or the recipe's
        // stopping rule's choice made on normal images only).
        const double final_eval = test_auroc(detector.model(), test_samples, labels, BatchNormMode::RunningStatistics);
        final_train_mode = test_auroc(detector.model(), test_samples, labels, BatchNormMode::BatchStatistics);
        const auto peak = std::max_element(curve_eval.begin(), curve_eval.end());
        std::printf("%5d  %5zu  %6d  %4d  %11.4f  %17.4f  %9.4f (%2ld)  %7.0f\n", digit, report.training_images,
                    report.epochs_completed, report.kept_epoch, final_eval, final_train_mode, *peak,
                    static_cast<long>(peak - curve_eval.begin()) + 1, seconds);
        std::fflush(stdout);
        sum_eval += final_eval;
        sum_train += final_train_mode;
        double training_seconds = 0;
        for (double s : epoch_seconds) training_seconds += s;
        results.push_back({{"digit", digit},
                           {"training_images", report.training_images},
                           {"epochs", report.epochs_completed},
                           {"recipe", args.recipe.name},
                           {"gated_skips", args.recipe.skip_gating.gated_skips},
                           {"training_open_probability", args.recipe.skip_gating.training_open_probability},
                           {"recompute_batch_norm", args.recipe.recompute_batch_norm},
                           {"stopping", stopping_rule_name(args.recipe.stopping)},
                           {"kept_epoch", report.kept_epoch},
                           {"auroc_eval_mode", final_eval},
                           {"synthetic_auroc_per_epoch", curve_synthetic},
                           {"auroc_train_mode", final_train_mode},
                           {"auroc_eval_mode_per_epoch", curve_eval},
                           {"auroc_train_mode_per_epoch", curve_train},
                           {"discriminator_reinits", report.discriminator_reinits},
                           {"training_seconds", training_seconds},
                           {"total_seconds", seconds}});
        std::ofstream(args.out) << results.dump(2) << "\n";  // after every digit: a partial run keeps its results
    }
    const double count = static_cast<double>(args.digits.size());
    std::printf("mean   AUROC(eval) %.4f  AUROC(train-mode) %.4f over %zu digits (seed %llu)\n", sum_eval / count,
                sum_train / count, args.digits.size(), static_cast<unsigned long long>(args.seed));
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
