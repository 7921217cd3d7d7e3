// One-class evaluation on MNIST or CIFAR-10 (docs/quality.md, docs/technical-report.md).
//
// For each class c: train on the training images of c only, test on every test image
// (anomaly = any other class; anomalies are the positive class). isize 32, ngf = ndf = 64,
// nz 100, batch 64, Adam 2e-4 (0.5, 0.999), 15 epochs; nc 1 for MNIST, 3 for CIFAR-10. The
// reported AUROC is that of the model fit() keeps: the last epoch's, or the one the recipe's
// stopping rule picks on held-out normal images. No epoch, threshold or weight is chosen by
// looking at test labels. Per-epoch test AUROCs are recorded for diagnosis only.
//
//   eval_one_class --dataset mnist --data data/mnist --classes 0,1,2 --out results.json
//   eval_one_class --dataset cifar10 --data data/cifar10 --max-train 1000 --out cifar.json
//   --save-models DIR: also save each class's kept model as DIR/class<C>_seed<S>.safetensors.
//   --training-precision float32|bfloat16: the arithmetic of the training convolutions.
//   --max-test N: test on the first N test images only (models saved to be scored elsewhere).
//   --dump-data DIR: train nothing; write each class's preprocessed images as raw float32
//     (N, nc, 32, 32) for analysis scripts (dev/prototype_rotation_head.py):
//     DIR/<dataset>_class<C>_train.f32, DIR/<dataset>_test.f32 and
//     DIR/<dataset>_class<C>_test_labels.json (1: anomalous).
//   --paper-protocol: the paper's MNIST set-up instead, class c anomalous and the other nine
//   normal (training images of the nine, the same test images with labels flipped).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "skipganomaly/datasets.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"
#include "skipganomaly/metrics.hpp"

namespace {

using namespace sga;

struct Arguments {
    std::string dataset = "mnist";
    std::string data;  // default: data/<dataset>
    std::vector<int> classes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    std::size_t max_train = 0;  // CIFAR-10: the first this many training images of the class (0: all)
    std::size_t max_test = 0;   // the first this many test images only (0: all), for runs that score elsewhere
    bool paper_protocol = false;
    int epochs = 15;
    std::uint64_t seed = 0;
    std::string out = "one_class_results.json";
    int threads = 0;
    bool train_mode_every_epoch = false;
    bool every_epoch = true;  // test AUROC after every epoch (diagnosis); --final-only skips it
    bool orientation_curve = false;  // the orientation check's t after every epoch, on training images (diagnosis)
    bool check_only = false;  // train until the orientation check has decided, report it, score nothing
    bool train_mode = true;   // also the official batch-statistics scoring of the kept model
    Recipe recipe = DetectorOptions{}.recipe;  // fit()'s default
    int bottleneck_channels = 0;
    float validation_fraction = -1;  // -1: 0 for recipes without a stopping rule (the official protocol), else 0.1
    std::string save_models;         // a folder: each class's kept model is saved there as class<C>_seed<S>.safetensors
    Precision training_precision = Precision::Float32;  // --training-precision: the training convolutions' arithmetic
    std::string dump_data;           // a folder: write each class's preprocessed images there instead of training
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
        else if (flag == "--max-train") a.max_train = std::stoull(value());
        else if (flag == "--max-test") a.max_test = std::stoull(value());
        else if (flag == "--paper-protocol") a.paper_protocol = true;
        else if (flag == "--epochs") a.epochs = std::stoi(value());
        else if (flag == "--seed") a.seed = std::stoull(value());
        else if (flag == "--out") a.out = value();
        else if (flag == "--threads") a.threads = std::stoi(value());
        else if (flag == "--train-mode-every-epoch") a.train_mode_every_epoch = true;
        else if (flag == "--final-only") a.every_epoch = false;
        else if (flag == "--orientation-curve") a.orientation_curve = true;
        else if (flag == "--check-only") a.check_only = true;
        else if (flag == "--eval-mode-only") a.train_mode = false;
        else if (flag == "--recipe") a.recipe = Recipe::named(value());
        // Ablation knobs on top of --recipe (docs/quality.md).
        else if (flag == "--gated-skips") a.recipe.skip_gating.gated_skips = std::stoi(value());
        else if (flag == "--open-probability") a.recipe.skip_gating.training_open_probability = std::stof(value());
        else if (flag == "--recompute-batch-norm") a.recipe.recompute_batch_norm = value() == "on";
        else if (flag == "--stopping") a.recipe.stopping = value() == "final" ? StoppingRule::FinalEpoch : StoppingRule::BestSyntheticAnomalies;
        else if (flag == "--puzzle") {
            a.recipe.restoration.corruption = Corruption::Puzzle;
            a.recipe.restoration.grid = std::stoi(value());
        } else if (flag == "--rotation") a.recipe.restoration.corruption = Corruption::Rotation;
        else if (flag == "--gray") a.recipe.restoration.gray = value() == "on";
        else if (flag == "--no-restoration") a.recipe.restoration.corruption = Corruption::None;
        else if (flag == "--orientation-check") a.recipe.orientation_check.enabled = value() == "on";
        else if (flag == "--bottleneck") a.bottleneck_channels = std::stoi(value());
        else if (flag == "--validation-fraction") a.validation_fraction = std::stof(value());
        else if (flag == "--save-models") a.save_models = value();
        else if (flag == "--training-precision") a.training_precision = precision_from_name(value());
        else if (flag == "--dump-data") a.dump_data = value();
        else if (flag == "--classes" || flag == "--digits") {
            a.classes.clear();
            std::stringstream list(value());
            for (std::string d; std::getline(list, d, ',');) a.classes.push_back(std::stoi(d));
        } else throw InvalidArgument("unknown option " + flag);
    }
    if (a.dataset != "mnist" && a.dataset != "cifar10") throw InvalidArgument("--dataset must be mnist or cifar10");
    if (a.data.empty()) a.data = std::string(SKIPGANOMALY_DATA_DIR) + "/" + a.dataset;
    return a;
}

OneClassSplit load_split(const Arguments& args, int normal_class) {
    if (args.dataset == "cifar10") return cifar10_one_class(args.data, normal_class, args.max_train);
    const std::string d = args.data;
    auto load = [&](int digit) {
        return mnist_one_class(d + "/train-images-idx3-ubyte.gz", d + "/train-labels-idx1-ubyte.gz",
                               d + "/t10k-images-idx3-ubyte.gz", d + "/t10k-labels-idx1-ubyte.gz", digit);
    };
    if (!args.paper_protocol) return load(normal_class);
    // The paper's protocol: normal_class is the anomaly; the other nine digits are normal.
    OneClassSplit split;
    for (int digit = 0; digit <= 9; ++digit) {
        if (digit == normal_class) continue;
        OneClassSplit part = load(digit);
        for (Image& image : part.train_normal) split.train_normal.push_back(std::move(image));
        if (split.test.empty()) split.test = std::move(part.test);
    }
    // part.test labels 1 for every digit but the first loaded; relabel: anomalous = normal_class.
    const OneClassSplit reference = load(normal_class);
    for (std::size_t i = 0; i < split.test.size(); ++i) split.test[i].label = 1 - reference.test[i].label;
    return split;
}

// The orientation check's finding (orientation_check.hpp) on `samples` (N, nc, 32, 32), in
// batches of 64.
OrientationFinding head_finding(const SkipGanomaly& model, const std::vector<float>& samples, std::int64_t n) {
    const Architecture& a = model.architecture();
    const std::int64_t per = std::int64_t{a.channels} * a.image_size * a.image_size, batch = 64;
    Context ctx(Device::Cpu);
    Tape tape(ctx);
    Tensor input({batch, a.channels, a.image_size, a.image_size}, Device::Cpu);
    std::vector<double> margins;
    for (std::int64_t first = 0; first < n; first += batch) {
        const std::int64_t count = std::min(batch, n - first);
        std::copy_n(samples.data() + first * per, count * per, input.data());
        const std::vector<double> part =
            model.rotation_margins(ctx, tape, input.view().slice_batch(0, count), BatchNormMode::BatchStatistics);
        margins.insert(margins.end(), part.begin(), part.end());
    }
    return OrientationCheck{}.judge(margins);
}

// What the orientation check saw, as the result files record it.
nlohmann::json orientation_json(const OrientationFinding& f) {
    return {{"checked", f.checked}, {"images", f.images},         {"mean_margin", f.mean_margin},
            {"t", f.t},             {"required_t", f.required_t}, {"oriented", f.oriented}};
}

// Scores the whole test set in batches of 64 in file order and returns its AUROC.
// parts_auroc, when given, receives the AUROC of the reconstruction and latent parts alone.
double test_auroc(const SkipGanomaly& model, const std::vector<float>& samples, const std::vector<int>& labels,
                  BatchNormMode mode, std::pair<double, double>* parts_auroc = nullptr) {
    const Architecture& a = model.architecture();
    const std::int64_t n = static_cast<std::int64_t>(labels.size()), per = std::int64_t{a.channels} * a.image_size * a.image_size,
                       batch = 64;
    Context ctx(Device::Cpu);
    Tape tape(ctx);
    Tensor input({batch, a.channels, a.image_size, a.image_size}, Device::Cpu);
    std::vector<float> scores, reconstruction, latent;
    for (std::int64_t first = 0; first < n; first += batch) {
        const std::int64_t count = std::min(batch, n - first);
        std::copy_n(samples.data() + first * per, count * per, input.data());
        const BatchScores parts = model.score(ctx, tape, input.view().slice_batch(0, count), mode, false);
        for (std::int64_t i = 0; i < count; ++i) {
            const std::size_t at = static_cast<std::size_t>(i);
            scores.push_back(model.combined_score(parts, at));
            reconstruction.push_back(parts.reconstruction[at]);
            latent.push_back(parts.latent[at]);
        }
    }
    if (parts_auroc) *parts_auroc = {roc_auc(reconstruction, labels), roc_auc(latent, labels)};
    return roc_auc(scores, labels);
}

void write_floats(const std::string& path, const std::vector<float>& values) {
    std::ofstream file(path, std::ios::binary);
    file.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
    if (!file) throw IoError("cannot write '" + path + "'");
}

void dump_data(const Arguments& args, int normal_class, const OneClassSplit& split, const std::vector<float>& test_samples,
               const std::vector<int>& labels) {
    const int channels = args.dataset == "cifar10" ? 3 : 1, size = 32;
    const std::size_t per = static_cast<std::size_t>(channels * size * size);
    std::vector<float> train(split.train_normal.size() * per);
    for (std::size_t i = 0; i < split.train_normal.size(); ++i)
        preprocess(split.train_normal[i].view(), size, channels, train.data() + i * per);
    const std::string stem = args.dump_data + "/" + args.dataset;
    write_floats(stem + "_class" + std::to_string(normal_class) + "_train.f32", train);
    write_floats(stem + "_test.f32", test_samples);
    std::ofstream(stem + "_class" + std::to_string(normal_class) + "_test_labels.json") << nlohmann::json(labels).dump() << "\n";
    std::printf("%5d  wrote %zu training and %zu test images to %s\n", normal_class, split.train_normal.size(), labels.size(),
                args.dump_data.c_str());
}

}  // namespace

int main(int argc, char** argv) try {
    const Arguments args = parse(argc, argv);
    if (args.threads > 0) set_cpu_threads(args.threads);
    const int channels = args.dataset == "cifar10" ? 3 : 1, size = 32;
    const std::size_t per = static_cast<std::size_t>(channels * size * size);
    nlohmann::json results = nlohmann::json::array();
    std::printf("class  train  epochs  kept  AUROC(eval)  AUROC(train-mode)  peak-eval(epoch)  seconds\n");
    double sum_eval = 0, sum_train = 0;
    for (int normal_class : args.classes) {
        const OneClassSplit split = load_split(args, normal_class);
        const std::size_t test_count =
            args.max_test > 0 ? std::min(args.max_test, split.test.size()) : split.test.size();
        std::vector<float> test_samples(test_count * per);
        std::vector<int> labels;
        for (std::size_t i = 0; i < test_count; ++i) {
            preprocess(split.test[i].image.view(), size, channels, test_samples.data() + i * per);
            labels.push_back(split.test[i].label);
        }

        if (!args.dump_data.empty()) {
            dump_data(args, normal_class, split, test_samples, labels);
            continue;
        }

        DetectorOptions options;
        options.architecture.image_size = size;
        options.architecture.channels = channels;
        options.architecture.bottleneck_channels = args.bottleneck_channels;
        options.epochs = args.epochs;
        options.batch_size = 64;
        options.seed = args.seed;
        options.device = Device::Cpu;
        options.recipe = args.recipe;
        options.training_precision = args.training_precision;
        options.validation_fraction = args.validation_fraction >= 0 ? args.validation_fraction
                                      : args.recipe.stopping == StoppingRule::FinalEpoch ? 0.0f : 0.1f;
        Detector detector(options);

        std::vector<double> curve_eval, curve_train, curve_synthetic, epoch_seconds;
        // A per-epoch model callback makes fit() recompute batch-norm statistics every epoch;
        // only diagnosis needs that, so --final-only uses the lighter per-epoch summary.
        FitCallbacks callbacks;
        callbacks.on_epoch = [&](const EpochSummary& summary) {
            if (args.every_epoch) return;
            epoch_seconds.push_back(summary.seconds);
            curve_synthetic.push_back(summary.synthetic_auroc);
            std::fprintf(stderr, "class %d epoch %2d: G %.3f D %.3f synthetic %.4f (%.1f s)\n", normal_class, summary.epoch,
                         summary.generator_loss, summary.discriminator_loss, summary.synthetic_auroc, summary.seconds);
        };
        if (args.every_epoch) callbacks.on_epoch_model = [&](const EpochSummary& summary, const SkipGanomaly& model) {
            std::pair<double, double> parts{-1, -1};
            curve_eval.push_back(test_auroc(model, test_samples, labels, BatchNormMode::RunningStatistics, &parts));
            epoch_seconds.push_back(summary.seconds);
            curve_synthetic.push_back(summary.synthetic_auroc);
            if (args.train_mode_every_epoch)
                curve_train.push_back(test_auroc(model, test_samples, labels, BatchNormMode::BatchStatistics));
            std::fprintf(stderr, "class %d epoch %2d: G %.3f D %.3f AUROC(eval) %.4f (recon %.4f latent %.4f) synthetic %.4f (%.1f s)\n",
                         normal_class, summary.epoch, summary.generator_loss, summary.discriminator_loss,
                         curve_eval.back(), parts.first, parts.second, summary.synthetic_auroc, summary.seconds);
        };
        std::vector<double> curve_orientation;
        if (args.orientation_curve) {  // on the first 256 training images, in file order
            const std::int64_t asked = static_cast<std::int64_t>(std::min<std::size_t>(256, split.train_normal.size()));
            std::vector<float> normal(static_cast<std::size_t>(asked) * per);
            for (std::int64_t i = 0; i < asked; ++i)
                preprocess(split.train_normal[static_cast<std::size_t>(i)].view(), size, channels, normal.data() + i * per);
            callbacks.on_epoch_model = [&, asked, normal, previous = callbacks.on_epoch_model](const EpochSummary& summary,
                                                                                                const SkipGanomaly& model) {
                if (previous) previous(summary, model);
                if (!model.discriminator.has_rotation_head()) return;
                const OrientationFinding f = head_finding(model, normal, asked);
                curve_orientation.push_back(f.t);
                std::fprintf(stderr, "class %d epoch %2d: orientation margin %.4f t %.2f on %lld training images\n", normal_class,
                             summary.epoch, f.mean_margin, f.t, static_cast<long long>(asked));
            };
        }
        // --check-only: stop at the end of the checking epoch, or as the fallback's run starts.
        std::atomic<bool> stop{false};
        if (args.check_only) {
            const std::size_t held_out = static_cast<std::size_t>(
                std::floor(options.validation_fraction * static_cast<double>(split.train_normal.size())));
            const std::size_t batches = (split.train_normal.size() - held_out) / 64;
            const std::size_t check_at = args.recipe.orientation_check.check_at_step(batches * static_cast<std::size_t>(args.epochs));
            callbacks.cancel = &stop;
            callbacks.on_epoch = [&, batches, check_at](const EpochSummary& summary) {
                if (static_cast<std::size_t>(summary.epoch) * batches >= check_at) stop = true;
            };
            callbacks.on_batch = [&, last = 0](const TrainingProgress& p) mutable {
                if (p.epoch < last) stop = true;
                last = p.epoch;
            };
        }
        const auto start = std::chrono::steady_clock::now();
        const FitReport report = detector.fit(split.train_normal, callbacks);
        if (report.orientation.checked)
            std::fprintf(stderr, "class %d orientation check: margin %.4f t %.2f over %zu images, needed %.2f: %s\n", normal_class,
                         report.orientation.mean_margin, report.orientation.t, report.orientation.images, report.orientation.required_t,
                         report.orientation.oriented ? "oriented" : "no upright, trained again without the rotation techniques");
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (args.check_only) {
            results.push_back({{"dataset", args.dataset},
                               {"class", normal_class},
                               {"seed", args.seed},
                               {"validation_fraction", options.validation_fraction},
                               {"validation_images", report.validation_images},
                               {"orientation_check", orientation_json(report.orientation)},
                               {"total_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}});
            std::ofstream(args.out) << results.dump(2) << "\n";
            continue;
        }
        if (!args.save_models.empty())  // for later analysis of the same model (e.g. other scores)
            detector.save(args.save_models + "/class" + std::to_string(normal_class) + "_seed" + std::to_string(args.seed) +
                          ".safetensors");
        // The reported figures: the model fit() kept.
        const double final_eval = test_auroc(detector.model(), test_samples, labels, BatchNormMode::RunningStatistics);
        const double final_train_mode =
            args.train_mode ? test_auroc(detector.model(), test_samples, labels, BatchNormMode::BatchStatistics) : -1;
        if (curve_eval.empty()) curve_eval.push_back(-1);  // --final-only: no per-epoch test AUROC
        const auto peak = std::max_element(curve_eval.begin(), curve_eval.end());
        std::printf("%5d  %5zu  %6d  %4d  %11.4f  %17.4f  %9.4f (%2ld)  %7.0f\n", normal_class, report.training_images,
                    report.epochs_completed, report.kept_epoch, final_eval, final_train_mode, *peak,
                    static_cast<long>(peak - curve_eval.begin()) + 1, seconds);
        std::fflush(stdout);
        sum_eval += final_eval;
        sum_train += final_train_mode;
        double training_seconds = 0;
        for (const EpochSummary& e : report.epochs) training_seconds += e.seconds;
        results.push_back({{"dataset", args.dataset},
                           {"class", normal_class},
                           {"digit", normal_class},
                           {"paper_protocol", args.paper_protocol},
                           {"seed", args.seed},
                           {"training_images", report.training_images},
                           {"validation_images", report.validation_images},
                           {"epochs", report.epochs_completed},
                           {"recipe", nlohmann::json::parse(recipe_to_json(args.recipe))},
                           {"training_precision", precision_name(args.training_precision)},
                           {"recipe_trained", nlohmann::json::parse(recipe_to_json(detector.options().recipe))},
                           {"orientation_check", orientation_json(report.orientation)},
                           {"bottleneck_channels", args.bottleneck_channels},
                           {"kept_epoch", report.kept_epoch},
                           {"auroc_eval_mode", final_eval},
                           {"auroc_train_mode", final_train_mode},
                           {"auroc_eval_mode_per_epoch", curve_eval},
                           {"auroc_train_mode_per_epoch", curve_train},
                           {"synthetic_auroc_per_epoch", curve_synthetic},
                           {"orientation_t_per_epoch", curve_orientation},
                           {"discriminator_reinits", report.discriminator_reinits},
                           {"training_seconds", training_seconds},
                           {"total_seconds", seconds}});
        std::ofstream(args.out) << results.dump(2) << "\n";  // after every class: a partial run keeps its results
    }
    if (!args.dump_data.empty()) return 0;
    const double count = static_cast<double>(args.classes.size());
    std::printf("mean   AUROC(eval) %.4f  AUROC(train-mode) %.4f over %zu classes (seed %llu, recipe %s)\n", sum_eval / count,
                sum_train / count, args.classes.size(), static_cast<unsigned long long>(args.seed), args.recipe.name.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
