// Industrial-inspection evaluation on MVTec-AD-layout categories (docs/industrial.md).
//
// For each category ROOT: fit on ROOT/train/good with the given recipe and settings (final
// model; the threshold and every statistic come from held-out normal training images only),
// score ROOT/test, and report image AUROC, pixel AUROC, per-defect-type image AUROC, and the
// same for a fixed grid of anomaly-map rules computed from the one trained model's
// reconstructions (an ablation of the scoring rule: the recipe's own rule is fixed in
// recipe.hpp, never chosen from these test labels).
//
//   eval_industrial --data data/industrial/wood --data data/industrial/granite \
//       --recipe inspection --image-size 128 --channels 1 --seed 0 --out wood_granite.json
//
// --tile N [--stride M] tiles as `fit --tile` does; the map-rule grid, which resizes whole
// images to the network's input, is then left out.
// Settings that are not part of a named recipe are for ablations: --corruption, --map-error,
// --sigma, --image-score, --adversarial, --contextual, --latent.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "skipganomaly/datasets.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/metrics.hpp"

namespace {

using namespace sga;

struct Arguments {
    std::vector<std::string> categories;
    DetectorOptions options;
    std::string out = "industrial_results.json";
    std::string save_models;  // folder: each category's model as <category>_<recipe>_seed<S>.safetensors
    std::string model;        // score this saved model instead of training one (one --data only)
    std::string dump;         // folder: PNG strips x | G(x) | map of the first test images of each folder
    int threads = 0;
};

Corruption corruption_named(const std::string& name) {
    for (Corruption c : {Corruption::None, Corruption::Rotation, Corruption::Puzzle, Corruption::SyntheticDefects})
        if (name == corruption_name(c)) return c;
    throw InvalidArgument("unknown corruption '" + name + "'");
}

Arguments parse(int argc, char** argv) {
    Arguments a;
    a.options.recipe = Recipe::inspection();
    a.options.architecture.image_size = 128;
    a.options.architecture.channels = 1;
    std::vector<std::pair<std::string, std::string>> overrides;  // applied after --recipe
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw InvalidArgument(flag + " needs a value");
            return argv[++i];
        };
        if (flag == "--data") a.categories.push_back(value());
        else if (flag == "--recipe") a.options.recipe = Recipe::named(value());
        else if (flag == "--image-size") a.options.architecture.image_size = std::stoi(value());
        else if (flag == "--channels") a.options.architecture.channels = std::stoi(value());
        else if (flag == "--epochs") a.options.epochs = std::stoi(value());
        else if (flag == "--features") {  // ngf = ndf: smaller networks for quick ablations
            a.options.architecture.generator_features = std::stoi(value());
            a.options.architecture.discriminator_features = a.options.architecture.generator_features;
        }
        else if (flag == "--batch-size") a.options.batch_size = std::stoi(value());
        else if (flag == "--tile") a.options.tiling.tile = std::stoi(value());
        else if (flag == "--stride") a.options.tiling.stride = std::stoi(value());
        else if (flag == "--seed") a.options.seed = std::stoull(value());
        else if (flag == "--threads") a.threads = std::stoi(value());
        else if (flag == "--out") a.out = value();
        else if (flag == "--save-models") a.save_models = value();
        else if (flag == "--model") a.model = value();
        else if (flag == "--dump") a.dump = value();
        else if (flag == "--corruption" || flag == "--map-error" || flag == "--sigma" || flag == "--image-score" ||
                 flag == "--adversarial" || flag == "--contextual" || flag == "--latent")
            overrides.emplace_back(flag, value());
        else throw InvalidArgument("unknown flag " + flag);
    }
    for (const auto& [flag, v] : overrides) {
        Recipe& r = a.options.recipe;
        if (flag == "--corruption") r.restoration.corruption = corruption_named(v);
        else if (flag == "--map-error") r.anomaly_map.error = v == "absolute" ? MapError::Absolute : MapError::Squared;
        else if (flag == "--sigma") r.anomaly_map.smoothing_sigma = std::stof(v);
        else if (flag == "--image-score")
            r.anomaly_map.image_score = v == "map_maximum" ? ImageScore::MapMaximum : ImageScore::Official;
        else if (flag == "--adversarial") a.options.loss_weights.adversarial = std::stof(v);
        else if (flag == "--contextual") a.options.loss_weights.contextual = std::stof(v);
        else if (flag == "--latent") a.options.loss_weights.latent = std::stof(v);
        if (!overrides.empty()) r.name += "+" + flag.substr(2) + "=" + v;
    }
    if (a.categories.empty()) throw InvalidArgument("give at least one --data ROOT");
    return a;
}

// The defect type of a test image: the name of its folder (test/<type>/x.png).
std::string defect_type(const LabeledImage& sample) {
    return std::filesystem::path(sample.path).parent_path().filename().string();
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// One scoring rule of the ablation grid, applied to (x, G(x)) at the network's resolution.
struct MapVariant {
    std::string name;
    AnomalyMapRule rule;
};

// 1 - SSIM(x, G(x)) per pixel, channel mean (Wang et al. 2004: Gaussian window of sigma 1.5,
// C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 2 for values in [-1, 1]): a structural
// comparison, which sees a missing texture where the absolute error of a blurred
// reconstruction does not.
std::vector<float> ssim_map(const float* x, const float* y, int channels, int size) {
    const std::size_t plane = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
    std::vector<float> out(plane, 0.0f);
    const float c1 = 0.0004f, c2 = 0.0036f;
    for (int c = 0; c < channels; ++c) {
        std::vector<float> mx(x + c * plane, x + (c + 1) * plane), my(y + c * plane, y + (c + 1) * plane);
        std::vector<float> xx(plane), yy(plane), xy(plane);
        for (std::size_t p = 0; p < plane; ++p) {
            xx[p] = mx[p] * mx[p];
            yy[p] = my[p] * my[p];
            xy[p] = mx[p] * my[p];
        }
        for (std::vector<float>* v : {&mx, &my, &xx, &yy, &xy}) smooth_maps(v->data(), 1, size, size, 1.5f);
        for (std::size_t p = 0; p < plane; ++p) {
            const float vx = xx[p] - mx[p] * mx[p], vy = yy[p] - my[p] * my[p], cxy = xy[p] - mx[p] * my[p];
            const float ssim = ((2 * mx[p] * my[p] + c1) * (2 * cxy + c2)) /
                               ((mx[p] * mx[p] + my[p] * my[p] + c1) * (vx + vy + c2));
            out[p] += (1.0f - ssim) / static_cast<float>(channels);
        }
    }
    return out;
}

std::vector<MapVariant> map_variants() {
    std::vector<MapVariant> out;
    for (MapError e : {MapError::Squared, MapError::Absolute})
        for (float sigma : {0.0f, 2.0f, 4.0f, 8.0f})
            for (ImageScore s : {ImageScore::Official, ImageScore::MapMaximum}) {
                if (s == ImageScore::Official && sigma > 0) continue;  // the mean does not change with smoothing
                AnomalyMapRule r{e, sigma, s};
                out.push_back({std::string(map_error_name(e)) + "/sigma" + std::to_string(static_cast<int>(sigma)) + "/" +
                                   (s == ImageScore::Official ? "mean" : "max"),
                               r});
            }
    for (float sigma : {2.0f, 4.0f})
        out.push_back({"absolute/sigma" + std::to_string(static_cast<int>(sigma)) + "/max_over_mean",
                       AnomalyMapRule{MapError::Absolute, sigma, ImageScore::MapMaximum}});
    for (float sigma : {2.0f, 4.0f})
        out.push_back({"ssim/sigma" + std::to_string(static_cast<int>(sigma)) + "/max",
                       AnomalyMapRule{MapError::Absolute, sigma, ImageScore::MapMaximum}});
    return out;
}

nlohmann::json evaluate_category(const std::string& root, const Arguments& args) {
    const std::string category = std::filesystem::path(root).filename().string();
    std::cerr << "== " << category << ": loading\n";
    const std::vector<Image> train = load_mvtec_train(root);
    const std::vector<LabeledImage> test = load_mvtec_test(root);
    Detector detector = args.model.empty() ? Detector(args.options) : Detector::load(args.model, Device::Cpu);
    const auto fit_start = std::chrono::steady_clock::now();
    FitCallbacks callbacks;
    callbacks.on_epoch = [&](const EpochSummary& e) {
        std::cerr << category << " epoch " << e.epoch << "/" << args.options.epochs << " G " << e.generator_loss << " D "
                  << e.discriminator_loss << " (" << e.seconds << " s)\n";
    };
    callbacks.on_decision = [&](const RecipeDecision& d) {
        std::cerr << category << " decision (" << d.check << "): " << d.finding << "; now " << d.to_recipe << "\n";
    };
    const FitReport report = args.model.empty() ? detector.fit(train, callbacks) : FitReport{};
    const double fit_seconds = seconds_since(fit_start);
    if (!args.save_models.empty())
        detector.save(args.save_models + "/" + category + "_" + args.options.recipe.name + "_seed" +
                      std::to_string(args.options.seed) + ".safetensors");

    const int size = detector.options().architecture.image_size, channels = detector.options().architecture.channels;
    const std::size_t plane = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
    std::vector<float> scores;
    std::vector<int> labels;
    std::vector<std::string> types;
    std::vector<std::vector<float>> maps;
    std::vector<std::vector<std::uint8_t>> masks;
    // The ablation grid, from each image's preprocessed input and reconstruction.
    const bool tiled = detector.options().tiling.enabled();
    const std::vector<MapVariant> variants = tiled ? std::vector<MapVariant>{} : map_variants();
    std::vector<std::vector<float>> variant_scores(variants.size());
    std::vector<std::vector<std::vector<float>>> variant_maps(variants.size());
    std::vector<std::vector<std::uint8_t>> small_masks;
    const auto score_start = std::chrono::steady_clock::now();
    ScoreOptions so;
    so.anomaly_map = true;
    so.reconstruction = !tiled;  // not available with tiling
    std::vector<float> x(static_cast<std::size_t>(channels) * plane);
    for (const LabeledImage& sample : test) {
        const ScoreResult r = detector.score(sample.image.view(), so);
        scores.push_back(r.score);
        labels.push_back(sample.label);
        types.push_back(defect_type(sample));
        maps.push_back(r.anomaly_map);
        std::vector<std::uint8_t> mask(r.anomaly_map.size(), 0);
        if (sample.mask)
            for (std::size_t k = 0; k < mask.size(); ++k) mask[k] = sample.mask->pixels[k] > 0 ? 1 : 0;
        masks.push_back(std::move(mask));
        if (tiled) continue;
        // Network-resolution input, map and mask for the grid.
        preprocess(sample.image.view(), size, channels, x.data());
        std::vector<float> small_mask(plane, 0.0f);
        if (sample.mask) preprocess(sample.mask->view(), size, 1, small_mask.data());
        std::vector<std::uint8_t> sm(plane);
        for (std::size_t k = 0; k < plane; ++k) sm[k] = small_mask[k] > 0.0f ? 1 : 0;  // > mid-grey after resizing
        small_masks.push_back(std::move(sm));
        if (!args.dump.empty() && sample.path.size() > 4 && sample.path.rfind("003.png") == sample.path.size() - 7) {
            // x | G(x) | |x - G(x)| x 4, first channel, as 8-bit grey.
            Image strip{3 * size, size, 1, std::vector<std::uint8_t>(static_cast<std::size_t>(3 * size * size))};
            auto to_byte = [](float v) { return static_cast<std::uint8_t>(std::clamp((v + 1.0f) * 127.5f, 0.0f, 255.0f)); };
            for (int y = 0; y < size; ++y)
                for (int xx = 0; xx < size; ++xx) {
                    const std::size_t p = static_cast<std::size_t>(y * size + xx);
                    const std::size_t row = static_cast<std::size_t>(y * 3 * size);
                    strip.pixels[row + static_cast<std::size_t>(xx)] = to_byte(x[p]);
                    strip.pixels[row + static_cast<std::size_t>(size + xx)] = to_byte(r.reconstruction[p]);
                    strip.pixels[row + static_cast<std::size_t>(2 * size + xx)] =
                        to_byte(std::abs(x[p] - r.reconstruction[p]) * 4.0f - 1.0f);
                }
            save_png(args.dump + "/" + category + "_" + defect_type(sample) + ".png", strip);
        }
        const std::vector<float> structural = ssim_map(x.data(), r.reconstruction.data(), channels, size);
        for (std::size_t v = 0; v < variants.size(); ++v) {
            const AnomalyMapRule& rule = variants[v].rule;
            std::vector<float> map(plane, 0.0f);
            if (variants[v].name.rfind("ssim", 0) == 0) map = structural;
            else
                for (int c = 0; c < channels; ++c)
                    for (std::size_t p = 0; p < plane; ++p) {
                        const float d = x[c * plane + p] - r.reconstruction[c * plane + p];
                        map[p] += (rule.error == MapError::Squared ? d * d : std::abs(d)) / static_cast<float>(channels);
                    }
            smooth_maps(map.data(), 1, size, size, rule.smoothing_sigma);
            float s = 0;
            if (variants[v].name.find("max_over_mean") != std::string::npos) {
                double sum = 0;
                for (float m : map) sum += m;
                s = static_cast<float>(map_image_score(map.data(), static_cast<std::int64_t>(plane)) /
                                       (sum / static_cast<double>(plane) + 1e-6));
            } else if (rule.image_score == ImageScore::MapMaximum) s = map_image_score(map.data(), static_cast<std::int64_t>(plane));
            else {
                double sum = 0;
                for (float m : map) sum += m;
                s = static_cast<float>(0.9 * sum / static_cast<double>(plane) + 0.1 * r.latent_error);
            }
            variant_scores[v].push_back(s);
            variant_maps[v].push_back(std::move(map));
        }
    }
    const double score_seconds = seconds_since(score_start);

    auto per_type = [&](const std::vector<float>& s) {
        nlohmann::json j = nlohmann::json::object();
        for (const DefectTypeRocAuc& t : roc_auc_per_defect_type(s, labels, types)) j[t.defect_type] = t.roc_auc;
        return j;
    };
    std::vector<int> widths, heights;
    for (const LabeledImage& sample : test) {
        widths.push_back(sample.image.width);
        heights.push_back(sample.image.height);
    }
    const std::vector<int> small_sides(test.size(), size);
    std::size_t flagged_anomalies = 0, flagged_normals = 0;
    for (std::size_t i = 0; i < scores.size(); ++i)
        (labels[i] ? flagged_anomalies : flagged_normals) += scores[i] >= detector.threshold() ? 1 : 0;
    nlohmann::json j{{"category", category},
                     {"recipe", nlohmann::json::parse(recipe_to_json(detector.options().recipe))},
                     {"seed", args.options.seed},
                     {"image_size", size},
                     {"channels", channels},
                     {"tile", detector.options().tiling.tile},
                     {"stride", detector.options().tiling.step()},
                     {"epochs", args.options.epochs},
                     {"train_images", report.training_images},
                     {"validation_images", report.validation_images},
                     {"test_images", test.size()},
                     {"fit_seconds", fit_seconds},
                     {"score_seconds_per_image", score_seconds / static_cast<double>(test.size())},
                     {"threshold", detector.threshold()},
                     {"flagged_anomalies", flagged_anomalies},
                     {"flagged_normals", flagged_normals},
                     {"image_auroc", roc_auc(scores, labels)},
                     {"pixel_auroc", pixel_roc_auc(maps, masks)},
                     {"aupro", aupro(maps, masks, widths, heights)},
                     {"pixel_f1_max", pixel_f1_max(maps, masks).f1},
                     {"per_defect_image_auroc", per_type(scores)}};
    if (report.orientation.checked) j["orientation_t"] = report.orientation.t;
    nlohmann::json grid = nlohmann::json::object();
    for (std::size_t v = 0; v < variants.size(); ++v)
        grid[variants[v].name] = {{"image_auroc", roc_auc(variant_scores[v], labels)},
                                  {"pixel_auroc", pixel_roc_auc(variant_maps[v], small_masks)},
                                  {"aupro", aupro(variant_maps[v], small_masks, small_sides, small_sides)}};
    j["map_rule_grid"] = grid;
    std::cerr << category << ": image AUROC " << j["image_auroc"].get<double>() << ", pixel AUROC "
              << j["pixel_auroc"].get<double>() << ", AUPRO " << j["aupro"].get<double>() << " (fit " << fit_seconds
              << " s)\n";
    return j;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Arguments args = parse(argc, argv);
        if (args.threads > 0) set_cpu_threads(args.threads);
        nlohmann::json all = nlohmann::json::array();
        for (const std::string& root : args.categories) {
            all.push_back(evaluate_category(root, args));
            std::ofstream(args.out) << all.dump(2) << "\n";  // after each category: a crash keeps the rest
        }
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "eval_industrial: " << e.what() << "\n";
        return 1;
    }
}
