// The command-line tool, run as a user runs it (no terminal): fit's recipes, defaults, in-sample
// warning and progress lines; calibrate; score's scoring mode and mask; eval's base rate.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "skipganomaly/datasets.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/image.hpp"
#include "skipganomaly/metrics.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using sga::Image;

struct Run {
    int exit_code = -1;
    std::string out, err;
};

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// The tool with `arguments`, stdout and stderr to files (so neither is a terminal).
Run run_cli(const std::string& arguments) {
    static const fs::path dir = fs::temp_directory_path() / ("sga_cli_out_" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
    const fs::path out = dir / "stdout", err = dir / "stderr";
    const std::string command = quoted(SKIPGANOMALY_CLI) + " " + arguments + " >" + quoted(out.string()) + " 2>" +
                                quoted(err.string()) + " </dev/null";
    const int status = std::system(command.c_str());
    Run r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_file(out);
    r.err = read_file(err);
    return r;
}

Image blob(std::mt19937_64& rng) { return sga::testing::blob_image(rng); }

Image checkerboard(std::mt19937_64& rng) {
    Image im{28, 28, 1, std::vector<std::uint8_t>(28 * 28)};
    const int cell = 2 + static_cast<int>(rng() % 4);
    for (int y = 0; y < 28; ++y)
        for (int x = 0; x < 28; ++x)
            im.pixels[static_cast<std::size_t>(y * 28 + x)] = ((x / cell + y / cell) % 2) ? 255 : static_cast<std::uint8_t>(rng() % 40);
    return im;
}

// train/ (40 blobs), normal/ (12 other blobs), abnormal/ (6 checkerboards).
struct Workspace {
    fs::path root;
    Workspace() {
        root = fs::temp_directory_path() / ("sga_cli_" + std::to_string(std::random_device{}()));
        std::mt19937_64 rng(3);
        for (const char* d : {"train", "normal", "abnormal", "maps"}) fs::create_directories(root / d);
        // (Streamed names: GCC 12 -O3 warns falsely (-Wrestrict) on "b" + std::to_string(i) + ".png".)
        const auto name = [](char prefix, int i) {
            std::ostringstream s;
            s << prefix << i << ".png";
            return s.str();
        };
        for (int i = 0; i < 40; ++i) sga::save_png((root / "train" / name('b', i)).string(), blob(rng));
        for (int i = 0; i < 12; ++i) sga::save_png((root / "normal" / name('n', i)).string(), blob(rng));
        for (int i = 0; i < 6; ++i) sga::save_png((root / "abnormal" / name('a', i)).string(), checkerboard(rng));
    }
    ~Workspace() {
        std::error_code ignored;
        fs::remove_all(root, ignored);
    }
    std::string path(const std::string& p) const { return (root / p).string(); }
};

const Workspace& workspace() {
    static const Workspace w;
    return w;
}

// A model fitted once with the default recipe (robust_rotation): 1 epoch, batch 8, 8 of the 40
// images held out (the orientation check needs at least 8).
// The run of `fit` that wrote default_model().
const Run& default_fit() {
    static const Run run = [] {
        const Run r = run_cli("fit --data folder:" + quoted(workspace().path("train")) + " --channels 1 --epochs 1 --batch-size 8 "
                              "--validation-fraction 0.2 --threads 2 --out " + quoted(workspace().path("default.safetensors")));
        INFO(r.out << r.err);
        REQUIRE(r.exit_code == 0);
        return r;
    }();
    return run;
}

const std::string& default_model() {
    static const std::string path = workspace().path("default.safetensors");
    default_fit();
    return path;
}

std::vector<sga::Image> images_in(const std::string& dir) { return sga::load_image_folder(dir); }

}  // namespace

TEST_CASE("fit --help gives every default, the recipes and what validation fraction 0 means", "[cli]") {
    const Run r = run_cli("fit --help");
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("--recipe robust_rotation|robust|official|inspection") &&
                          Catch::Contains("(default: inspection for mvtec: data or with") &&
                          Catch::Contains("--tile, robust_rotation otherwise)"));
    CHECK_THAT(r.out, Catch::Contains("--tile N") && Catch::Contains("--stride N"));
    CHECK_THAT(r.out, Catch::Contains("--threads N") && Catch::Contains("(default: OMP_NUM_THREADS, else every core)"));
    CHECK_THAT(r.out, Catch::Contains("(default 0.1;") && Catch::Contains("0 holds out nothing") &&
                          Catch::Contains("in-sample"));
    // Every option line but --out (required) and the data kinds names its default.
    std::istringstream lines(r.out.substr(r.out.find("options")));
    std::string line, option_text;
    std::vector<std::string> options;
    while (std::getline(lines, line)) {
        if (line.rfind("  --", 0) == 0) options.push_back(line);
        else if (!options.empty() && line.rfind("      ", 0) == 0) options.back() += line;
    }
    REQUIRE(options.size() >= 15);
    for (const std::string& o : options) {
        INFO(o);
        CHECK((o.find("default") != std::string::npos || o.find("(required)") != std::string::npos));
    }
}

TEST_CASE("fit: --recipe official, --validation-fraction 0 warns about in-sample statistics, progress lines without a terminal", "[cli]") {
    const std::string model = workspace().path("official.safetensors");
    const Run r = run_cli("fit --data folder:" + quoted(workspace().path("train")) +
                          " --recipe official --validation-fraction 0 --channels 1 --epochs 2 --batch-size 8"
                          " --threads 2 --progress-every 0 --out " + quoted(model));
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("in-sample scores of the training images (40 images)"));
    CHECK_THAT(r.out, !Catch::Contains("held-out"));
    CHECK_THAT(r.err, Catch::Contains("warning: --validation-fraction 0"));
    CHECK_THAT(r.err, Catch::Contains("recipe official"));
    // --progress-every 0: one line per batch (5 batches x 2 epochs), each with an ETA.
    std::size_t eta_lines = 0;
    for (std::size_t at = r.err.find("ETA "); at != std::string::npos; at = r.err.find("ETA ", at + 1)) ++eta_lines;
    CHECK(eta_lines == 10);
    CHECK_THAT(r.err, Catch::Contains("epoch 2/2 batch 5/5"));
    const sga::Detector d = sga::Detector::load(model, sga::Device::Cpu);
    CHECK(d.options().recipe.name == "official");
    CHECK(d.validation_statistics().count == 40);

    // The default recipe keeps its last epoch, so it trains without held-out images too (a
    // recipe with a stopping rule refuses that: tests/test_recipes.cpp).
    const Run default_in_sample = run_cli("fit --data folder:" + quoted(workspace().path("train")) +
                                         " --validation-fraction 0 --channels 1 --epochs 1 --batch-size 8 --threads 2"
                                         " --out " + quoted(workspace().path("x.safetensors")));
    INFO(default_in_sample.out << default_in_sample.err);
    CHECK(default_in_sample.exit_code == 0);
    CHECK_THAT(default_in_sample.err, Catch::Contains("warning: --validation-fraction 0"));
    CHECK(run_cli("fit --data folder:x --recipe fancy --out y").exit_code == 2);

    // Nothing held out: the default recipe's orientation check has no image to ask.
    CHECK_THAT(default_in_sample.err, Catch::Contains("orientation check did not run"));
    CHECK_THAT(default_in_sample.out, !Catch::Contains("orientation check:"));
    CHECK(sga::Detector::load(workspace().path("x.safetensors"), sga::Device::Cpu).options().recipe.name == "robust_rotation");

    // The default recipe is robust_rotation. The blobs have no upright, so its orientation
    // check sends fit() to robust_rotation_unoriented (recipe.hpp), and fit says so.
    INFO(default_fit().out << default_fit().err);
    CHECK_THAT(default_fit().err, Catch::Contains("recipe robust_rotation,"));
    CHECK_THAT(default_fit().out, Catch::Contains("orientation check: the rotation head tells the turns of 8 held-out images apart") &&
                                      Catch::Contains("no upright found; trained again without the rotation techniques"));
    CHECK_THAT(default_fit().err, !Catch::Contains("orientation check did not run"));
    const sga::Detector loaded = sga::Detector::load(default_model(), sga::Device::Cpu);
    CHECK(loaded.options().recipe.name == "robust_rotation_unoriented");
    CHECK(loaded.orientation().checked);
    CHECK_FALSE(loaded.orientation().oriented);
}

TEST_CASE("calibrate stores a threshold from normal images, or the F1-optimal one from labelled images", "[cli]") {
    const std::string model = workspace().path("calibrated.safetensors");
    fs::copy_file(default_model(), model, fs::copy_options::overwrite_existing);
    // What the library computes on the same images, from the same starting model.
    sga::Detector expected = sga::Detector::load(model, sga::Device::Cpu);
    const std::vector<Image> normal = images_in(workspace().path("normal"));
    std::vector<sga::ImageView> views;
    for (const Image& im : normal) views.push_back(im.view());
    const sga::CalibrationResult c = expected.calibrate(views);

    const Run r = run_cli("calibrate --model " + quoted(model) + " --data folder:" + quoted(workspace().path("normal")) +
                          " --json --threads 2");
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    const nlohmann::json j = nlohmann::json::parse(r.out);
    CHECK(j.at("rule") == "validation_quantile");
    CHECK(j.at("normal_images") == 12);
    const sga::Detector calibrated = sga::Detector::load(model, sga::Device::Cpu);
    CHECK(calibrated.threshold() == c.threshold);
    CHECK(j.at("threshold").get<float>() == c.threshold);
    CHECK(calibrated.pixel_statistics().threshold == expected.pixel_statistics().threshold);
    CHECK(calibrated.validation_statistics().count == 12);
    // Written atomically: nothing but our files in the folder.
    for (const auto& entry : fs::directory_iterator(workspace().root))
        CHECK(entry.path().filename().string().find(".tmp") == std::string::npos);

    // Labelled data: the F1-maximising threshold, to another file.
    const std::string labelled = workspace().path("f1.safetensors");
    const Run f1 = run_cli("calibrate --model " + quoted(model) + " --data anomalib:" +
                           quoted(workspace().path("normal")) + ":" + quoted(workspace().path("abnormal")) +
                           " --out " + quoted(labelled) + " --json --threads 2");
    INFO(f1.out << f1.err);
    REQUIRE(f1.exit_code == 0);
    const nlohmann::json k = nlohmann::json::parse(f1.out);
    CHECK(k.at("rule") == "f1_max");
    CHECK(k.at("anomalous_images") == 6);
    CHECK(k.at("f1").get<double>() > 0);
    CHECK(sga::Detector::load(labelled, sga::Device::Cpu).threshold() == k.at("threshold").get<float>());
    CHECK(sga::Detector::load(model, sga::Device::Cpu).threshold() == c.threshold);  // --out left --model alone

    CHECK(run_cli("calibrate --model " + quoted(model) + " --data folder:" + quoted(workspace().path("normal")) +
                  " --quantile 1.5")
              .exit_code == 2);
    CHECK(run_cli("calibrate --model " + quoted(workspace().path("missing.safetensors")) + " --data folder:" +
                  quoted(workspace().path("normal")))
              .exit_code == 1);
}

TEST_CASE("score: --scoring-mode is a per-call choice, and --heatmap also writes the mask", "[cli]") {
    std::string images;
    // Appended piece by piece: GCC 12 -O3 warns falsely (-Wrestrict) on " " + std::string.
    for (const char* name : {"normal/n0.png", "normal/n1.png", "normal/n2.png", "abnormal/a0.png"}) {
        images += ' ';
        images += quoted(workspace().path(name));
    }
    const auto scores_of = [](const std::string& out) {
        std::vector<double> s;
        std::istringstream lines(out);
        for (std::string line; std::getline(lines, line);) s.push_back(nlohmann::json::parse(line).at("score").get<double>());
        return s;
    };
    const Run running = run_cli("score --model " + quoted(default_model()) + " --threads 2" + images);
    const Run batch = run_cli("score --model " + quoted(default_model()) + " --scoring-mode batch --threads 2" + images);
    const Run explicit_running = run_cli("score --model " + quoted(default_model()) + " --scoring-mode running --threads 2" + images);
    INFO(running.err << batch.err);
    REQUIRE(running.exit_code == 0);
    REQUIRE(batch.exit_code == 0);
    CHECK(scores_of(running.out).size() == 4);
    CHECK(scores_of(batch.out) != scores_of(running.out));
    CHECK(scores_of(explicit_running.out) == scores_of(running.out));
    CHECK(run_cli("score --model " + quoted(default_model()) + " --scoring-mode eval" + images).exit_code == 2);

    const std::string maps = workspace().path("maps");
    const Run mapped = run_cli("score --model " + quoted(default_model()) + " --heatmap " + quoted(maps) + " --threads 2 " +
                               quoted(workspace().path("abnormal/a0.png")));
    INFO(mapped.out << mapped.err);
    REQUIRE(mapped.exit_code == 0);
    const nlohmann::json line = nlohmann::json::parse(mapped.out);
    REQUIRE(line.contains("mask"));
    CHECK(line.at("heatmap") == (fs::path(maps) / "a0_heatmap.png").string());
    CHECK(line.at("mask") == (fs::path(maps) / "a0_mask.png").string());
    const Image mask = sga::load_image(line.at("mask").get<std::string>());
    CHECK(mask.width == 28);
    CHECK(mask.height == 28);
    CHECK(mask.channels == 1);
    for (std::uint8_t v : mask.pixels) CHECK((v == 0 || v == 255));
    // The same mask as the library's.
    sga::ScoreOptions o;
    o.anomaly_mask = true;
    const sga::ScoreResult r = sga::Detector::load(default_model(), sga::Device::Cpu)
                                   .score(sga::load_image(workspace().path("abnormal/a0.png")).view(), o);
    for (std::size_t i = 0; i < mask.pixels.size(); ++i) CHECK((mask.pixels[i] == 255) == (r.anomaly_mask[i] == 1));
}

// --precision on score: bfloat16 scores differ from float32's by bfloat16's rounding, and where
// the processor lacks AVX512-BF16 (here: SKIPGANOMALY_DISABLE_BF16=1) bfloat16 runs float32,
// warns, and --version says so.
TEST_CASE("score --precision bfloat16, and float32 where bfloat16 is unavailable", "[cli][precision]") {
    std::string images;
    for (const char* name : {"normal/n0.png", "normal/n1.png", "abnormal/a0.png"}) {
        images += ' ';
        images += quoted(workspace().path(name));
    }
    const auto scores_of = [](const std::string& out) {
        std::vector<double> s;
        std::istringstream lines(out);
        for (std::string line; std::getline(lines, line);) s.push_back(nlohmann::json::parse(line).at("score").get<double>());
        return s;
    };
    const bool bf16_here = sga::cpu_bf16_available();  // asked before the variable below is set
    const std::string score = "score --model " + quoted(default_model()) + " --threads 2";
    const Run float32 = run_cli(score + " --precision float32" + images);
    const Run bf16 = run_cli(score + " --precision bfloat16" + images);
    ::setenv("SKIPGANOMALY_DISABLE_BF16", "1", 1);  // for the tool's processes only
    const Run disabled = run_cli(score + " --precision bfloat16" + images);
    const Run version_disabled = run_cli("--version");
    ::unsetenv("SKIPGANOMALY_DISABLE_BF16");
    INFO(float32.err << bf16.err << disabled.err);
    REQUIRE(float32.exit_code == 0);
    REQUIRE(bf16.exit_code == 0);
    REQUIRE(disabled.exit_code == 0);
    const std::vector<double> reference = scores_of(float32.out);
    REQUIRE(reference.size() == 3);
    CHECK(scores_of(run_cli(score + images).out) == reference);  // the model's own precision: float32
    CHECK(scores_of(disabled.out) == reference);
    CHECK(disabled.err.find("warning: --precision bfloat16 is not available here") != std::string::npos);
    if (bf16_here) {
        CHECK(bf16.err.empty());
        const std::vector<double> rounded = scores_of(bf16.out);
        REQUIRE(rounded.size() == 3);
        CHECK(rounded != reference);
    }
    CHECK(run_cli(score + " --precision int4" + images).exit_code == 2);
    const Run version = run_cli("--version");
    CHECK(version.out.find(bf16_here ? "bfloat16 (AVX512-BF16)" : "bfloat16 unavailable") != std::string::npos);
    CHECK(version_disabled.out.find("bfloat16 unavailable") != std::string::npos);
}

// --training-precision: the model records it; unavailable, it warns and trains float32; a bad
// name is a usage error.
TEST_CASE("fit --training-precision bfloat16", "[cli][precision]") {
    const std::string fit = "fit --data folder:" + quoted(workspace().path("train")) +
                            " --recipe official --channels 1 --epochs 1 --batch-size 8 --threads 2 --training-precision ";
    const std::string model = workspace().path("bf16_trained.safetensors");
    const Run bf16 = run_cli(fit + "bfloat16 --out " + quoted(model));
    INFO(bf16.out << bf16.err);
    REQUIRE(bf16.exit_code == 0);
    CHECK(sga::Detector::load(model, sga::Device::Cpu).options().training_precision == sga::Precision::BFloat16);
    CHECK((bf16.err.find("warning: --training-precision bfloat16 is not available here") == std::string::npos) ==
          sga::cpu_bf16_available());
    ::setenv("SKIPGANOMALY_DISABLE_BF16", "1", 1);  // for the tool's processes only
    const Run disabled = run_cli(fit + "bfloat16 --out " + quoted(workspace().path("bf16_disabled.safetensors")));
    ::unsetenv("SKIPGANOMALY_DISABLE_BF16");
    INFO(disabled.err);
    CHECK(disabled.exit_code == 0);
    CHECK_THAT(disabled.err, Catch::Contains("warning: --training-precision bfloat16 is not available here"));
    const Run bad = run_cli(fit + "int4 --out " + quoted(workspace().path("never.safetensors")));
    CHECK(bad.exit_code == 2);
    CHECK_THAT(bad.err, Catch::Contains("--training-precision expects float32 or bfloat16"));
    CHECK_FALSE(fs::exists(workspace().path("never.safetensors")));
}

TEST_CASE("eval says anomalies are the positive class and prints the base rate", "[cli]") {
    const std::string data = "anomalib:" + quoted(workspace().path("normal")) + ":" + quoted(workspace().path("abnormal"));
    const Run text = run_cli("eval --model " + quoted(default_model()) + " --data " + data + " --threads 2");
    INFO(text.out << text.err);
    REQUIRE(text.exit_code == 0);
    CHECK_THAT(text.out, Catch::Contains("anomalies are the positive class") && Catch::Contains("base rate"));
    CHECK_THAT(text.out, Catch::Contains("0.3333"));  // 6 anomalous of 18
    CHECK_THAT(text.out, Catch::Contains("(a random score: the base rate, 0.3333)"));
    const Run json = run_cli("eval --model " + quoted(default_model()) + " --data " + data + " --json --threads 2");
    REQUIRE(json.exit_code == 0);
    const nlohmann::json j = nlohmann::json::parse(json.out);
    CHECK(j.at("positive_class") == "anomalous");
    CHECK(j.at("base_rate").get<double>() == Approx(6.0 / 18.0));
    CHECK(j.at("flag_all_f1").get<double>() == Approx(2 * (1.0 / 3) / (1.0 / 3 + 1)));
}

TEST_CASE("fit on mvtec: data trains the inspection recipe by default and says so, --tile stores tiling, eval maps at "
          "full resolution",
          "[cli][tiling]") {
    // An MVTec layout: train/good (40 blobs, 28 x 28, each placed in a 64 x 48 frame), test/good
    // and test/checker with masks.
    const fs::path root = fs::temp_directory_path() / ("sga_cli_mvtec_" + std::to_string(std::random_device{}()));
    for (const char* d : {"train/good", "test/good", "test/checker", "ground_truth/checker"}) fs::create_directories(root / d);
    std::mt19937_64 rng(11);
    const auto framed = [&](const Image& inner, int at_x, int at_y) {
        Image frame{64, 48, 1, std::vector<std::uint8_t>(64 * 48, 10)};
        for (int y = 0; y < 28; ++y)
            for (int x = 0; x < 28; ++x)
                frame.pixels[static_cast<std::size_t>((at_y + y) * 64 + at_x + x)] = inner.pixels[static_cast<std::size_t>(y * 28 + x)];
        return frame;
    };
    const auto name = [](int i) {
        std::ostringstream s;
        s << i << ".png";
        return s.str();
    };
    for (int i = 0; i < 40; ++i) sga::save_png((root / "train/good" / name(i)).string(), framed(blob(rng), 10, 10));
    for (int i = 0; i < 4; ++i) sga::save_png((root / "test/good" / name(i)).string(), framed(blob(rng), 10, 10));
    for (int i = 0; i < 4; ++i) {
        sga::save_png((root / "test/checker" / name(i)).string(), framed(checkerboard(rng), 30, 12));
        Image mask{64, 48, 1, std::vector<std::uint8_t>(64 * 48, 0)};
        for (int y = 12; y < 40; ++y)
            for (int x = 30; x < 58; ++x) mask.pixels[static_cast<std::size_t>(y * 64 + x)] = 255;
        std::ostringstream s;
        s << i << "_mask.png";
        sga::save_png((root / "ground_truth/checker" / s.str()).string(), mask);
    }
    const std::string model = (root / "m.safetensors").string();
    const Run fit = run_cli("fit --data mvtec:" + quoted(root.string()) + " --channels 1 --epochs 1 --batch-size 8 --tile 32 "
                            "--stride 16 --threads 2 --out " + quoted(model));
    INFO(fit.out << fit.err);
    REQUIRE(fit.exit_code == 0);
    CHECK_THAT(fit.err, Catch::Contains("recipe inspection (the default for mvtec: data"));
    CHECK_THAT(fit.err, Catch::Contains("tiles of 32 px every 16 px"));
    const sga::Detector d = sga::Detector::load(model, sga::Device::Cpu);
    CHECK(d.options().recipe.name == "inspection");
    CHECK(d.options().tiling.tile == 32);
    CHECK(d.options().tiling.stride == 16);

    const Run eval = run_cli("eval --model " + quoted(model) + " --data mvtec:" + quoted(root.string()) + " --threads 2");
    INFO(eval.out << eval.err);
    REQUIRE(eval.exit_code == 0);
    CHECK_THAT(eval.out, Catch::Contains("pixel AUROC"));
    CHECK_THAT(eval.out, Catch::Contains("AUPRO"));

    // --recipe still chooses, and --stride alone is refused.
    const Run official = run_cli("fit --data mvtec:" + quoted(root.string()) + " --recipe official --channels 1 --epochs 1 "
                                 "--batch-size 8 --threads 2 --out " + quoted((root / "o.safetensors").string()));
    CHECK(official.exit_code == 0);
    CHECK_THAT(official.err, Catch::Contains("recipe official,"));
    const Run stride_alone = run_cli("fit --data mvtec:" + quoted(root.string()) + " --stride 8 --out " +
                                     quoted((root / "x.safetensors").string()));
    CHECK(stride_alone.exit_code == 2);
    CHECK_THAT(stride_alone.err, Catch::Contains("--stride needs --tile"));
    std::error_code ignored;
    fs::remove_all(root, ignored);
}
