// skipganomaly: the command-line tool.
//
//   skipganomaly demo                                   train on the bundled MNIST subset, report
//   skipganomaly fit   --data <spec> --out model.safetensors [options]
//   skipganomaly score --model model.safetensors [--heatmap DIR] IMAGE...
//   skipganomaly eval  --model model.safetensors --data <spec> [--plots DIR]
//   skipganomaly calibrate --model model.safetensors --data <spec> [--out other.safetensors]
//
// Exit codes: 0 success, 1 a library or I/O error ("error: ..."), 2 a usage error.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "skipganomaly/config.hpp"
#include "skipganomaly/datasets.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"
#include "skipganomaly/metrics.hpp"

#ifndef SKIPGANOMALY_DATA_DIR
#define SKIPGANOMALY_DATA_DIR "data"
#endif

namespace fs = std::filesystem;

namespace {

// ---- errors and argument parsing ----------------------------------------------------------

// A mistake on the command line: printed with a hint to --help, exit code 2.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct OptionSpec {
    std::string name;  // without the leading "--"
    bool takes_value = true;
};

struct ParsedArguments {
    std::map<std::string, std::string> values;
    std::set<std::string> flags;
    std::vector<std::string> positional;
    bool help = false;

    bool has(const std::string& name) const { return values.count(name) != 0 || flags.count(name) != 0; }
    std::optional<std::string> get(const std::string& name) const {
        const auto it = values.find(name);
        if (it == values.end()) return std::nullopt;
        return it->second;
    }
    std::string require(const std::string& name) const {
        const auto it = values.find(name);
        if (it == values.end()) throw UsageError("missing required option --" + name);
        return it->second;
    }
};

// "--name value" and "--name=value"; "--" ends the options; -h/--help anywhere asks for help.
ParsedArguments parse_arguments(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs,
                                bool allow_positional) {
    ParsedArguments parsed;
    bool options_ended = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (options_ended || arg.size() < 2 || arg[0] != '-' || arg == "-") {
            if (!allow_positional) throw UsageError("unexpected argument '" + arg + "'");
            parsed.positional.push_back(arg);
            continue;
        }
        if (arg == "--") {
            options_ended = true;
            continue;
        }
        if (arg == "-h" || arg == "--help") {
            parsed.help = true;
            continue;
        }
        if (arg.rfind("--", 0) != 0) throw UsageError("unknown option '" + arg + "'");
        std::string name = arg.substr(2);
        std::optional<std::string> inline_value;
        if (const std::size_t eq = name.find('='); eq != std::string::npos) {
            inline_value = name.substr(eq + 1);
            name = name.substr(0, eq);
        }
        const auto spec = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.name == name; });
        if (spec == specs.end()) throw UsageError("unknown option '--" + name + "'");
        if (!spec->takes_value) {
            if (inline_value) throw UsageError("option --" + name + " takes no value");
            parsed.flags.insert(name);
            continue;
        }
        if (parsed.values.count(name)) throw UsageError("option --" + name + " given more than once");
        if (inline_value) {
            parsed.values[name] = *inline_value;
        } else {
            if (i + 1 >= args.size()) throw UsageError("option --" + name + " needs a value");
            parsed.values[name] = args[++i];
        }
    }
    return parsed;
}

long long parse_integer(const std::string& option, const std::string& text, long long min, long long max) {
    long long value = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc() || ptr != end)
        throw UsageError("--" + option + " expects an integer, found '" + text + "'");
    if (value < min || value > max)
        throw UsageError("--" + option + " must lie in [" + std::to_string(min) + ", " + std::to_string(max) +
                         "], found " + text);
    return value;
}

double parse_real(const std::string& option, const std::string& text) {
    double value = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc() || ptr != end || !std::isfinite(value))
        throw UsageError("--" + option + " expects a number, found '" + text + "'");
    return value;
}

int integer_option(const ParsedArguments& a, const std::string& name, int fallback, int min, int max) {
    const std::optional<std::string> text = a.get(name);
    return text ? static_cast<int>(parse_integer(name, *text, min, max)) : fallback;
}

sga::Device parse_device(const std::string& text) {
    if (text == "cpu") return sga::Device::Cpu;
    if (text == "cuda") return sga::Device::Cuda;
    if (text == "auto") return sga::Device::Auto;
    throw UsageError("--device expects cpu, cuda or auto, found '" + text + "'");
}

void apply_threads(const ParsedArguments& a) {
    if (const auto text = a.get("threads")) sga::set_cpu_threads(static_cast<int>(parse_integer("threads", *text, 1, 4096)));
}

// ---- cancellation -------------------------------------------------------------------------

std::atomic<bool> cancel_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the SIGINT handler needs a lock-free flag");

extern "C" void on_interrupt(int) {
    cancel_requested.store(true);
    static const char message[] =
        "\ninterrupted: stopping after the current batch (keeping the last completed epoch); "
        "press Ctrl-C again to abort\n";
    const ssize_t written = ::write(STDERR_FILENO, message, sizeof message - 1);
    (void)written;
    std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}

// ---- data sets ----------------------------------------------------------------------------

struct MnistFiles {
    std::string train_images, train_labels, test_images, test_labels;
};

// DIR holds train-images-idx3-ubyte.gz etc., gzipped or not.
MnistFiles mnist_files(const std::string& dir) {
    const auto pick = [&](const std::string& stem) {
        const fs::path gz = fs::path(dir) / (stem + ".gz");
        const fs::path plain = fs::path(dir) / stem;
        if (fs::exists(gz)) return gz.string();
        if (fs::exists(plain)) return plain.string();
        throw sga::IoError("MNIST folder '" + dir + "' holds neither " + gz.filename().string() + " nor " +
                           plain.filename().string());
    };
    return {pick("train-images-idx3-ubyte"), pick("train-labels-idx1-ubyte"), pick("t10k-images-idx3-ubyte"),
            pick("t10k-labels-idx1-ubyte")};
}

struct DataSpec {
    std::string kind;               // folder, mvtec, anomalib, mnist
    std::vector<std::string> parts; // what follows "kind:", split as the kind needs
};

DataSpec parse_data_spec(const std::string& spec, bool labelled) {
    const std::size_t colon = spec.find(':');
    if (colon == std::string::npos || colon + 1 >= spec.size())
        throw UsageError("--data expects KIND:..., found '" + spec + "'");
    DataSpec d{spec.substr(0, colon), {}};
    const std::string rest = spec.substr(colon + 1);
    if (d.kind == "folder" || d.kind == "mvtec") {
        if (d.kind == "folder" && labelled)
            throw UsageError("folder:DIR has no labels; eval takes mvtec:ROOT, anomalib:NORMAL:ABNORMAL[:MASKS], "
                             "mnist:DIR:DIGIT or cifar10:DIR:CLASS");
        d.parts = {rest};
    } else if (d.kind == "mnist") {
        const std::size_t last = rest.rfind(':');
        if (last == std::string::npos || last == 0 || last + 1 >= rest.size())
            throw UsageError("mnist data expects mnist:DIR:DIGIT, found '" + spec + "'");
        const std::string digit = rest.substr(last + 1);
        if (digit.size() != 1 || digit[0] < '0' || digit[0] > '9')
            throw UsageError("the DIGIT of mnist:DIR:DIGIT must be 0..9, found '" + digit + "'");
        d.parts = {rest.substr(0, last), digit};
    } else if (d.kind == "cifar10") {
        const std::size_t last = rest.rfind(':');
        if (last == std::string::npos || last == 0 || last + 1 >= rest.size())
            throw UsageError("cifar10 data expects cifar10:DIR:CLASS, found '" + spec + "'");
        const std::string name = rest.substr(last + 1);
        static const char* const classes[] = {"airplane", "automobile", "bird", "cat", "deer",
                                              "dog", "frog", "horse", "ship", "truck"};
        std::string index;
        for (int c = 0; c < 10; ++c)
            if (name == classes[c] || name == std::to_string(c)) index = std::to_string(c);
        if (index.empty())
            throw UsageError("the CLASS of cifar10:DIR:CLASS must be 0..9 or a class name (airplane, automobile, bird, "
                             "cat, deer, dog, frog, horse, ship, truck), found '" + name + "'");
        d.parts = {rest.substr(0, last), index};
    } else if (d.kind == "anomalib") {
        std::stringstream stream(rest);
        for (std::string piece; std::getline(stream, piece, ':');) d.parts.push_back(piece);
        const std::size_t min_parts = labelled ? 2 : 1, max_parts = labelled ? 3 : 1;
        if (d.parts.size() < min_parts || d.parts.size() > max_parts ||
            std::any_of(d.parts.begin(), d.parts.end(), [](const std::string& p) { return p.empty(); }))
            throw UsageError(labelled ? "anomalib data expects anomalib:NORMAL_DIR:ABNORMAL_DIR[:MASK_DIR], found '" + spec + "'"
                                      : "anomalib data expects anomalib:NORMAL_DIR for fit, found '" + spec + "'");
    } else {
        throw UsageError("unknown data kind '" + d.kind + "' (expected folder, mvtec, anomalib, mnist or cifar10)");
    }
    return d;
}

std::vector<sga::Image> load_training_images(const DataSpec& d) {
    if (d.kind == "folder" || d.kind == "anomalib") {
        std::vector<sga::Image> images = sga::load_image_folder(d.parts[0]);
        if (images.empty()) throw sga::FormatError("'" + d.parts[0] + "' holds no PNG, JPEG or BMP images");
        return images;
    }
    if (d.kind == "mvtec") return sga::load_mvtec_train(d.parts[0]);
    if (d.kind == "cifar10") return sga::cifar10_one_class(d.parts[0], std::stoi(d.parts[1])).train_normal;
    const MnistFiles f = mnist_files(d.parts[0]);
    return sga::mnist_one_class(f.train_images, f.train_labels, f.test_images, f.test_labels, std::stoi(d.parts[1]))
        .train_normal;
}

std::vector<sga::LabeledImage> load_labelled_images(const DataSpec& d) {
    if (d.kind == "mvtec") return sga::load_mvtec_test(d.parts[0]);
    if (d.kind == "anomalib")
        return sga::load_folder_dataset(d.parts[0], d.parts[1],
                                        d.parts.size() > 2 ? std::optional<std::string>(d.parts[2]) : std::nullopt);
    if (d.kind == "cifar10") return sga::cifar10_one_class(d.parts[0], std::stoi(d.parts[1])).test;
    const MnistFiles f = mnist_files(d.parts[0]);
    return sga::mnist_one_class(f.train_images, f.train_labels, f.test_images, f.test_labels, std::stoi(d.parts[1]))
        .test;
}

// ---- progress -----------------------------------------------------------------------------

std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
    const long long s = std::llround(seconds);
    char buffer[32];
    if (s >= 3600)
        std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    else
        std::snprintf(buffer, sizeof buffer, "%lld:%02lld", s / 60, s % 60);
    return buffer;
}

// A bar rewritten in place on a terminal. Otherwise (logs, pipes, CI) a plain line every
// `interval_seconds` with the same ETA, and one line per epoch.
class ProgressReporter {
public:
    explicit ProgressReporter(double interval_seconds = 5.0)
        : terminal_(::isatty(STDERR_FILENO) != 0), interval_seconds_(interval_seconds) {}

    sga::FitCallbacks callbacks() {
        sga::FitCallbacks c;
        if (terminal_) c.on_batch = [this](const sga::TrainingProgress& p) { on_batch(p); };
        else c.on_batch = [this](const sga::TrainingProgress& p) { on_batch_line(p); };
        c.on_epoch = [this](const sga::EpochSummary& s) { on_epoch(s); };
        c.on_decision = [this](const sga::RecipeDecision& d) { on_decision(d); };
        c.cancel = &cancel_requested;
        return c;
    }
    void set_epochs(int epochs) { epochs_ = epochs; }
    // Ends a half-drawn bar (after a cancellation) so what follows starts on a clean line.
    void finish() {
        if (bar_drawn_) std::cerr << '\n';
        bar_drawn_ = false;
    }

private:
    void on_batch_line(const sga::TrainingProgress& p) {
        if (p.elapsed_seconds < next_line_at_ && !(p.epoch == p.epochs && p.batch == p.batches)) return;
        next_line_at_ = p.elapsed_seconds + interval_seconds_;
        char line[256];
        std::snprintf(line, sizeof line, "epoch %d/%d batch %d/%d  G %.3f  D %.3f  elapsed %s  ETA %s", p.epoch,
                      p.epochs, p.batch, p.batches, p.losses.generator, p.losses.discriminator,
                      format_duration(p.elapsed_seconds).c_str(), format_duration(p.estimated_remaining_seconds).c_str());
        std::cerr << line << std::endl;
    }
    void on_batch(const sga::TrainingProgress& p) {
        constexpr int width = 24;
        const int filled = p.batches > 0 ? p.batch * width / p.batches : width;
        char line[256];
        std::snprintf(line, sizeof line,
                      "\repoch %d/%d [%s%s] batch %d/%d  G %.3f (adv %.3f con %.3f lat %.3f)  D %.3f  ETA %s  ",
                      p.epoch, p.epochs, std::string(static_cast<std::size_t>(filled), '#').c_str(),
                      std::string(static_cast<std::size_t>(width - filled), '.').c_str(), p.batch, p.batches,
                      p.losses.generator, p.losses.generator_adversarial, p.losses.generator_contextual,
                      p.losses.generator_latent, p.losses.discriminator,
                      format_duration(p.estimated_remaining_seconds).c_str());
        std::cerr << line << std::flush;
        bar_drawn_ = true;
    }
    void on_epoch(const sga::EpochSummary& s) {
        char line[256];
        std::snprintf(line, sizeof line,
                      "epoch %d/%d  G %.4f (adv %.4f con %.4f lat %.4f)  D %.4f  D re-inits %d  %.1f s", s.epoch,
                      epochs_, s.generator_loss, s.adversarial_loss, s.contextual_loss, s.latent_loss,
                      s.discriminator_loss, s.discriminator_reinits, s.seconds);
        if (terminal_) std::cerr << "\r\033[K";
        std::cerr << line << std::endl;
        bar_drawn_ = false;
    }

    void on_decision(const sga::RecipeDecision& d) {
        if (terminal_) std::cerr << "\r\033[K";
        std::cerr << "decision (" << d.check << "): " << d.finding << "; the " << d.completed_epochs
                  << " epoch(s) of " << d.from_recipe << " are discarded and training starts again from epoch 1 with "
                  << d.to_recipe << " (ETA " << format_duration(d.estimated_seconds) << ")" << std::endl;
        bar_drawn_ = false;
        next_line_at_ = 0;
    }

    bool terminal_;
    double interval_seconds_;
    double next_line_at_ = 0;
    bool bar_drawn_ = false;
    int epochs_ = 0;
};

// Trains with the progress reporter and Ctrl-C handling; restores the default SIGINT action.
sga::FitReport fit_with_progress(sga::Detector& detector, const std::vector<sga::Image>& images,
                                 double progress_interval_seconds = 5.0) {
    ProgressReporter progress(progress_interval_seconds);
    progress.set_epochs(detector.options().epochs);
    cancel_requested.store(false);
    std::signal(SIGINT, on_interrupt);
    sga::FitReport report;
    try {
        report = detector.fit(images, progress.callbacks());
    } catch (...) {
        std::signal(SIGINT, SIG_DFL);
        progress.finish();
        throw;
    }
    std::signal(SIGINT, SIG_DFL);
    progress.finish();
    return report;
}

// `recipe_has_orientation_check`: the recipe fit() was asked for has one (recipe.hpp).
void print_fit_report(const sga::FitReport& r, bool recipe_has_orientation_check) {
    if (const sga::OrientationFinding& o = r.orientation; o.checked)
        std::cout << std::fixed << std::setprecision(2) << "orientation check: the rotation head tells the turns of "
                  << o.images << " held-out images apart with t = " << o.t << " (0 by chance, needed " << o.required_t << "): "
                  << (o.oriented ? "the images have an upright; the rotation techniques stay"
                                 : "no upright found; trained again without the rotation techniques")
                  << "\n";
    std::cout << "trained " << r.epochs_completed << " epoch(s)" << (r.cancelled ? " (cancelled)" : "") << " on "
              << r.training_images << " images in " << std::fixed << std::setprecision(1) << r.seconds << " s; "
              << r.discriminator_reinits << " discriminator re-initialisation(s)\n";
    const sga::ScoreStatistics& v = r.validation_scores;
    const bool in_sample = r.validation_images == 0;
    std::cout << std::setprecision(6)
              << (in_sample ? "in-sample scores of the training images (" : "held-out normal scores (") << v.count
              << " images): min " << v.min << ", mean " << v.mean << ", max " << v.max << "\n"
              << "threshold " << r.threshold << (in_sample ? " (from the training images' own scores)" : "") << "\n";
    std::cout.unsetf(std::ios::floatfield);
    if (in_sample)
        std::cerr << "warning: --validation-fraction 0 held out no image, so the statistics and the threshold come "
                     "from the images the model was trained on; their scores are lower than unseen normal images', "
                     "and the threshold will flag more normal images than intended. Hold images out, or run "
                     "`skipganomaly calibrate` on normal images the model has not seen.\n";
    if (in_sample && !r.orientation.checked && recipe_has_orientation_check)
        std::cerr << "warning: with no image held out, the recipe's orientation check did not run: the rotation "
                     "techniques stay even if the images have no upright (docs/getting-started.md, \"Which recipe\")\n";
}

// ---- heat maps ----------------------------------------------------------------------------

// Nearest-neighbour enlargement so 28x28 pictures are visible; factor 1 copies.
sga::Image enlarge(const sga::Image& image, int factor) {
    if (factor <= 1) return image;
    sga::Image out;
    out.width = image.width * factor;
    out.height = image.height * factor;
    out.channels = image.channels;
    out.pixels.resize(static_cast<std::size_t>(out.width) * out.height * out.channels);
    for (int y = 0; y < out.height; ++y)
        for (int x = 0; x < out.width; ++x)
            for (int c = 0; c < out.channels; ++c)
                out.pixels[(static_cast<std::size_t>(y) * out.width + x) * out.channels + c] =
                    image.pixels[(static_cast<std::size_t>(y / factor) * image.width + x / factor) * image.channels + c];
    return out;
}

// Small images are enlarged to about 256 pixels on their longer side.
void write_heatmap(const std::string& path, const sga::Image& original, const sga::ScoreResult& result, float vmax) {
    const float top = std::max(vmax, 1e-6f);
    const sga::Image overlay = sga::anomaly_overlay(original.view(), result.anomaly_map, 0.0f, top);
    const int longer = std::max(overlay.width, overlay.height);
    sga::save_png(path, enlarge(overlay, longer < 128 ? std::max(1, 256 / longer) : 1));
}

// The colour scale's top: the 99th percentile of the errors rather than the largest, so one
// extreme pixel does not turn everything else blue.
float map_scale(std::vector<float> values) {
    if (values.empty()) return 0.0f;
    const std::size_t at = static_cast<std::size_t>(0.99 * static_cast<double>(values.size() - 1));
    std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(at), values.end());
    return values[at];
}

// ---- fit ----------------------------------------------------------------------------------

const char* const fit_help = R"(usage: skipganomaly fit --data SPEC --out MODEL.safetensors [options]

Trains a Skip-GANomaly detector on normal images and saves it.

data (--data SPEC):
  folder:DIR           every PNG/JPEG/BMP image directly in DIR
  mvtec:ROOT           an MVTec AD category: ROOT/train/good
  anomalib:NORMAL_DIR  anomalib's Folder layout, normal images
  mnist:DIR:DIGIT      MNIST IDX files in DIR (train-images-idx3-ubyte[.gz], ...): one digit
  cifar10:DIR:CLASS    CIFAR-10 from scripts/fetch-cifar10.sh (DIR: data/cifar10): one class,
                       0..9 or a name (airplane, automobile, bird, cat, deer, dog, frog, ...)

options (every default shown):
  --out PATH                   model file to write (required)
  --recipe robust_rotation|robust|official|inspection
                               how to train (default robust_rotation): robust trains the
                               generator to restore rotated (and, in colour, greyed) images,
                               scores the mean over the four rotations and recomputes
                               batch-norm statistics over the training images;
                               robust_rotation is robust whose discriminator also learns the
                               rotations, and whose score adds how badly it recognises them;
                               after 60 training steps (at the end of that epoch) it
                               checks that the images have an upright (its head must name
                               the turns of held-out images better than chance), and where
                               they have none it trains again without the two rotation
                               techniques (robust_rotation_unoriented; not checked with
                               --validation-fraction 0);
                               official is the paper's code as it is (recipe.hpp,
                               docs/quality.md); inspection, for local defects on parts
                               and surfaces, trains the generator to remove synthetic
                               defects and scores an image by the most anomalous place
                               of its smoothed error map (docs/industrial.md)
  --epochs N                   training epochs (default 15)
  --batch-size N               images per step (default 64)
  --image-size N               network input side, a power of two >= 32 (default 32)
  --channels 1|3               grey or colour input (default 3; 1 for mnist:)
  --lr X                       Adam learning rate (default 0.0002)
  --seed N                     initialisation, shuffling and validation split (default 0)
  --validation-fraction X      share of the normal images held out, never trained on, for the
                               score statistics and the threshold (default 0.1; at least one
                               image when > 0).
                               0 holds out nothing: the statistics and threshold are then
                               in-sample (the training images' own scores, too low); every
                               recipe keeps its last epoch, so both train
  --threshold-quantile X       the threshold estimates this quantile of normal scores from the
                               held-out ones (default 0.99; robust below 1000 held-out images,
                               see threshold_from_normal_scores in metrics.hpp)
  --device cpu|cuda|auto       where to train (default auto: CUDA when built and a GPU is
                               present, unless SKIPGANOMALY_FORCE_CPU is set)
  --threads N                  CPU threads (default: OMP_NUM_THREADS, else every core)
  --checkpoint PATH            write a checkpoint (weights, optimiser, RNG) to PATH (default: none)
  --checkpoint-every N         ... every N epochs (default 1 with --checkpoint)
  --resume PATH                continue from a checkpoint of the same data and options;
                               --epochs counts the epochs already done (default: start afresh)
  --progress-every SECONDS     without a terminal, print a progress line with the ETA this
                               often (default 5; 0: after every batch). On a terminal a bar
                               is redrawn instead

Ctrl-C stops after the current batch; the model of the last completed epoch is saved.
)";

int command_fit(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(
        args,
        {{"data"}, {"out"}, {"recipe"}, {"epochs"}, {"batch-size"}, {"image-size"}, {"channels"}, {"lr"}, {"seed"},
         {"validation-fraction"}, {"threshold-quantile"}, {"device"}, {"threads"}, {"checkpoint-every"},
         {"checkpoint"}, {"resume"}, {"progress-every"}},
        false);
    if (a.help) {
        std::cout << fit_help;
        return 0;
    }
    const DataSpec spec = parse_data_spec(a.require("data"), false);
    const std::string out = a.require("out");

    sga::DetectorOptions o;
    if (const auto recipe = a.get("recipe")) {
        if (*recipe != "robust_rotation" && *recipe != "robust" && *recipe != "official" && *recipe != "inspection")
            throw UsageError("--recipe expects robust_rotation, robust, official or inspection, found '" + *recipe + "'");
        o.recipe = sga::Recipe::named(*recipe);
    }
    double progress_every = 5.0;
    if (const auto p = a.get("progress-every")) {
        progress_every = parse_real("progress-every", *p);
        if (progress_every < 0) throw UsageError("--progress-every must not be negative");
    }
    o.architecture.channels = spec.kind == "mnist" ? 1 : 3;
    o.architecture.image_size = integer_option(a, "image-size", o.architecture.image_size, 1, 1 << 20);
    o.architecture.channels = integer_option(a, "channels", o.architecture.channels, 1, 3);
    if (o.architecture.channels == 2) throw UsageError("--channels expects 1 or 3, found 2");
    o.epochs = integer_option(a, "epochs", o.epochs, 1, 1000000);
    o.batch_size = integer_option(a, "batch-size", o.batch_size, 1, 1 << 20);
    if (const auto lr = a.get("lr")) o.adam.learning_rate = static_cast<float>(parse_real("lr", *lr));
    if (const auto seed = a.get("seed"))
        o.seed = static_cast<std::uint64_t>(parse_integer("seed", *seed, 0, std::numeric_limits<long long>::max()));
    if (const auto v = a.get("validation-fraction"))
        o.validation_fraction = static_cast<float>(parse_real("validation-fraction", *v));
    if (const auto q = a.get("threshold-quantile"))
        o.threshold_quantile = static_cast<float>(parse_real("threshold-quantile", *q));
    if (const auto d = a.get("device")) o.device = parse_device(*d);
    o.checkpoint_every_epochs = integer_option(a, "checkpoint-every", 0, 0, 1000000);
    if (const auto c = a.get("checkpoint")) o.checkpoint_path = *c;
    if (o.checkpoint_every_epochs > 0 && o.checkpoint_path.empty())
        throw UsageError("--checkpoint-every needs --checkpoint PATH");
    if (!o.checkpoint_path.empty() && o.checkpoint_every_epochs == 0) o.checkpoint_every_epochs = 1;
    if (const auto r = a.get("resume")) o.resume_from = *r;
    apply_threads(a);
    if (o.validation_fraction == 0 && o.recipe.stopping != sga::StoppingRule::FinalEpoch)
        throw UsageError("--validation-fraction 0 leaves the '" + o.recipe.name +
                         "' recipe's stopping rule no held-out images; hold some out or use --recipe official");
    o.validate();

    std::cerr << "loading " << a.require("data") << "\n";
    const std::vector<sga::Image> images = load_training_images(spec);
    sga::Detector detector(o);
    std::cerr << "training on " << images.size() << " images, " << o.epochs << " epoch(s), recipe " << o.recipe.name
              << ", device " << sga::to_string(detector.device()) << ", " << sga::cpu_threads() << " CPU thread(s)\n";
    const sga::FitReport report = fit_with_progress(detector, images, progress_every);
    print_fit_report(report, o.recipe.orientation_check.enabled);
    if (report.epochs_completed == 0)
        std::cerr << "warning: no epoch was completed; the saved model holds the initial weights\n";
    detector.save(out);
    std::cout << "model saved to " << out << "\n";
    return 0;
}

// ---- score --------------------------------------------------------------------------------

const char* const score_help = R"(usage: skipganomaly score --model MODEL.safetensors [options] IMAGE...

Scores images; prints one JSON object per image and line:
  {"path", "score", "reconstruction_error", "latent_error", "normalized_score", "is_anomaly", "threshold"}

options:
  --model PATH             model file (required)
  --heatmap DIR            also write DIR/<name>_heatmap.png, the anomaly map over the image,
                           and DIR/<name>_mask.png, the predicted anomalous pixels (white)
                           at the model's pixel threshold (a model without one, such as a
                           converted one, needs `skipganomaly calibrate` first for the mask)
  --heatmap-max X          squared error shown as red (default: the 99th percentile of each
                           image's own map, so colours are relative to that image)
  --threshold X            override the model's threshold
  --scoring-mode running|batch
                           batch norm when scoring (default: the model's, running for our
                           models): running uses the statistics learnt in training, so an
                           image's score does not depend on the others; batch uses each
                           batch's own statistics, as the official test() does
  --device cpu|cuda|auto   where to score (default auto)
  --threads N              CPU threads (default: OMP_NUM_THREADS, else every core)
)";

std::optional<sga::ScoringMode> scoring_mode_option(const ParsedArguments& a) {
    const std::optional<std::string> text = a.get("scoring-mode");
    if (!text) return std::nullopt;
    if (*text == "running") return sga::ScoringMode::RunningStatistics;
    if (*text == "batch") return sga::ScoringMode::OfficialBatchStatistics;
    throw UsageError("--scoring-mode expects running or batch, found '" + *text + "'");
}

// White where the mask flags a pixel, black elsewhere, at the image's resolution.
sga::Image mask_image(const sga::ScoreResult& r) {
    sga::Image mask{r.map_width, r.map_height, 1, std::vector<std::uint8_t>(r.anomaly_mask.size())};
    for (std::size_t i = 0; i < r.anomaly_mask.size(); ++i) mask.pixels[i] = r.anomaly_mask[i] ? 255 : 0;
    return mask;
}

int command_score(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(
        args, {{"model"}, {"heatmap"}, {"heatmap-max"}, {"threshold"}, {"scoring-mode"}, {"device"}, {"threads"}}, true);
    if (a.help) {
        std::cout << score_help;
        return 0;
    }
    const std::string model_path = a.require("model");
    if (a.positional.empty()) throw UsageError("score needs at least one IMAGE");
    const sga::Device device = a.get("device") ? parse_device(*a.get("device")) : sga::Device::Auto;
    const std::optional<std::string> heatmap_dir = a.get("heatmap");
    std::optional<float> heatmap_max;
    if (const auto m = a.get("heatmap-max")) {
        heatmap_max = static_cast<float>(parse_real("heatmap-max", *m));
        if (*heatmap_max <= 0) throw UsageError("--heatmap-max must be positive");
    }
    std::optional<float> threshold;
    if (const auto t = a.get("threshold")) threshold = static_cast<float>(parse_real("threshold", *t));
    const std::optional<sga::ScoringMode> scoring_mode = scoring_mode_option(a);
    apply_threads(a);

    sga::Detector detector = sga::Detector::load(model_path, device);
    if (threshold) detector.set_threshold(*threshold);
    if (heatmap_dir) fs::create_directories(*heatmap_dir);
    sga::ScoreOptions options;
    options.anomaly_map = heatmap_dir.has_value();
    options.scoring_mode = scoring_mode;
    options.anomaly_mask = heatmap_dir.has_value() && detector.pixel_statistics().count > 0;
    if (heatmap_dir && !options.anomaly_mask)
        std::cerr << "warning: " << model_path << " has no pixel threshold, so no mask is written; "
                  << "run `skipganomaly calibrate` on normal images first\n";
    std::set<std::string> written;

    // Batches of score_batch_size images: one forward pass each, bounded memory.
    const std::size_t chunk = static_cast<std::size_t>(std::max(1, detector.options().score_batch_size));
    for (std::size_t first = 0; first < a.positional.size(); first += chunk) {
        const std::size_t last = std::min(a.positional.size(), first + chunk);
        std::vector<sga::Image> images;
        for (std::size_t i = first; i < last; ++i) images.push_back(sga::load_image(a.positional[i]));
        const std::vector<sga::ScoreResult> results = detector.score(images, options);
        for (std::size_t i = 0; i < results.size(); ++i) {
            const sga::ScoreResult& r = results[i];
            const std::string& path = a.positional[first + i];
            nlohmann::json line = {{"path", path},
                                   {"score", r.score},
                                   {"reconstruction_error", r.reconstruction_error},
                                   {"latent_error", r.latent_error},
                                   {"normalized_score", r.normalized_score},
                                   {"is_anomaly", r.is_anomaly},
                                   {"threshold", r.threshold}};
            if (heatmap_dir) {
                std::string stem = fs::path(path).stem().string() + "_heatmap";
                for (int n = 2; written.count(stem); ++n)
                    stem = fs::path(path).stem().string() + "_heatmap_" + std::to_string(n);
                written.insert(stem);
                const std::string out = (fs::path(*heatmap_dir) / (stem + ".png")).string();
                write_heatmap(out, images[i], r, heatmap_max ? *heatmap_max : map_scale(r.anomaly_map));
                line["heatmap"] = out;
                if (options.anomaly_mask) {
                    const std::string mask_stem = stem.substr(0, stem.rfind("_heatmap")) + "_mask" +
                                                  stem.substr(stem.rfind("_heatmap") + 8);
                    const std::string mask_path = (fs::path(*heatmap_dir) / (mask_stem + ".png")).string();
                    sga::save_png(mask_path, mask_image(r));
                    line["mask"] = mask_path;
                }
            }
            std::cout << line.dump() << '\n';
        }
        std::cout << std::flush;
    }
    return 0;
}

// ---- evaluation (shared by eval and demo) -------------------------------------------------

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

// The folder an image lies in: its defect type in MVTec AD's test/<defect>/<name>.png.
std::string defect_type_of(const std::string& path) {
    return fs::path(path).parent_path().filename().string();
}

Evaluation evaluate(const sga::Detector& detector, const std::vector<sga::LabeledImage>& samples, bool keep_maps) {
    if (samples.empty()) throw sga::FormatError("the evaluation data set holds no images");
    Evaluation e;
    const bool has_masks =
        std::any_of(samples.begin(), samples.end(), [](const sga::LabeledImage& s) { return s.mask.has_value(); });
    sga::ScoreOptions options;
    options.anomaly_map = keep_maps || has_masks;
    std::vector<std::vector<float>> pixel_maps;
    std::vector<std::vector<std::uint8_t>> pixel_masks;
    std::vector<int> map_widths, map_heights;
    const std::size_t chunk = static_cast<std::size_t>(std::max(1, detector.options().score_batch_size));
    for (std::size_t first = 0; first < samples.size(); first += chunk) {
        const std::size_t last = std::min(samples.size(), first + chunk);
        std::vector<sga::ImageView> views;
        for (std::size_t i = first; i < last; ++i) views.push_back(samples[i].image.view());
        std::vector<sga::ScoreResult> results = detector.score(std::span<const sga::ImageView>(views), options);
        for (std::size_t j = 0; j < results.size(); ++j) {
            const sga::LabeledImage& s = samples[first + j];
            sga::ScoreResult& r = results[j];
            // Pixel AUROC pools anomalous images with a mask and normal images (all-normal mask).
            if (has_masks && (s.mask || s.label == 0)) {
                std::vector<std::uint8_t> mask(r.anomaly_map.size(), 0);
                if (s.mask) mask = s.mask->pixels;
                if (mask.size() == r.anomaly_map.size()) {
                    pixel_maps.push_back(r.anomaly_map);
                    pixel_masks.push_back(std::move(mask));
                    map_widths.push_back(r.map_width);
                    map_heights.push_back(r.map_height);
                }
            }
            if (!keep_maps) std::vector<float>().swap(r.anomaly_map);
            e.scores.push_back(r.score);
            e.labels.push_back(s.label);
            (s.label ? e.anomalous : e.normal) += 1;
            e.results.push_back(std::move(r));
        }
    }
    if (e.normal == 0 || e.anomalous == 0)
        throw sga::FormatError("the evaluation data set needs normal and anomalous images; found " +
                               std::to_string(e.normal) + " normal and " + std::to_string(e.anomalous) + " anomalous");
    e.auroc = sga::roc_auc(e.scores, e.labels);
    e.auprc = sga::average_precision(e.scores, e.labels);
    e.f1 = sga::f1_max(e.scores, e.labels);
    if (!pixel_maps.empty()) {
        e.pixel_auroc = sga::pixel_roc_auc(pixel_maps, pixel_masks);
        e.pixel_f1 = sga::pixel_f1_max(pixel_maps, pixel_masks);
        e.aupro = sga::aupro(pixel_maps, pixel_masks, map_widths, map_heights, 0.3);
    }
    std::vector<std::string> defect_types;
    std::set<std::string> distinct_types;
    for (const sga::LabeledImage& s : samples) {
        defect_types.push_back(defect_type_of(s.path));
        if (s.label) distinct_types.insert(defect_types.back());
    }
    if (distinct_types.size() >= 2) e.per_defect_type = sga::roc_auc_per_defect_type(e.scores, e.labels, defect_types);
    e.threshold = detector.threshold();
    for (std::size_t i = 0; i < e.scores.size(); ++i) {
        const bool flagged = e.results[i].is_anomaly;
        if (e.labels[i]) (flagged ? e.true_positives : e.false_negatives) += 1;
        else (flagged ? e.false_positives : e.true_negatives) += 1;
    }
    return e;
}

double base_rate(const Evaluation& e) {
    return static_cast<double>(e.anomalous) / static_cast<double>(e.normal + e.anomalous);
}

// F1 of flagging every image: what F1-max is never below.
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

// roc.png and histogram.png in dir; returns their paths.
std::vector<std::string> write_plots(const std::string& dir, const Evaluation& e) {
    fs::create_directories(dir);
    const std::string roc = (fs::path(dir) / "roc.png").string();
    const std::string histogram = (fs::path(dir) / "histogram.png").string();
    sga::save_png(roc, sga::plot_roc_curve(sga::roc_curve(e.scores, e.labels), 512, "ROC curve, image scores"));
    std::vector<float> normal, anomalous;
    for (std::size_t i = 0; i < e.scores.size(); ++i) (e.labels[i] ? anomalous : normal).push_back(e.scores[i]);
    sga::save_png(histogram, sga::plot_score_histogram(normal, anomalous, 640, 400, "image scores"));
    return {roc, histogram};
}

// dir/cases/: one strip (image | ground truth | anomaly map | predicted mask) for each of the
// 4 highest-scoring normal images, the 4 lowest-scoring anomalous images and the 4
// highest-scoring anomalous ones, scored again with their maps. Returns the paths.
std::vector<std::string> write_case_strips(const std::string& dir, const Evaluation& e, const sga::Detector& detector,
                                           const std::vector<sga::LabeledImage>& samples) {
    struct Group {
        const char* file_stem;
        const char* description;
        std::vector<std::size_t> members;
    };
    std::vector<std::size_t> order(e.scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return e.scores[x] > e.scores[y]; });
    const auto pick = [&](int label, bool highest) {
        std::vector<std::size_t> members;
        const auto take = [&](std::size_t i) {
            if (e.labels[i] == label && members.size() < 4) members.push_back(i);
        };
        if (highest) std::for_each(order.begin(), order.end(), take);
        else std::for_each(order.rbegin(), order.rend(), take);
        return members;
    };
    const std::vector<Group> groups = {
        {"highest_scoring_normal", "highest-scoring normal image", pick(0, true)},
        {"lowest_scoring_anomalous", "lowest-scoring anomalous image", pick(1, false)},
        {"highest_scoring_anomalous", "highest-scoring anomalous image", pick(1, true)}};

    sga::ScoreOptions options;
    options.anomaly_map = true;
    options.anomaly_mask = detector.pixel_statistics().count > 0;
    std::map<std::size_t, sga::ScoreResult> scored;
    for (const Group& g : groups)
        for (std::size_t i : g.members)
            if (!scored.count(i)) scored[i] = detector.score(samples[i].image.view(), options);
    // One colour scale for every strip, so their maps can be compared.
    std::vector<float> pooled;
    for (const auto& [i, r] : scored) pooled.insert(pooled.end(), r.anomaly_map.begin(), r.anomaly_map.end());
    const float scale = std::max(map_scale(std::move(pooled)), 1e-6f);

    const fs::path folder = fs::path(dir) / "cases";
    fs::create_directories(folder);
    std::vector<std::string> written;
    for (const Group& g : groups) {
        for (std::size_t k = 0; k < g.members.size(); ++k) {
            const std::size_t i = g.members[k];
            const sga::LabeledImage& s = samples[i];
            const sga::ScoreResult& r = scored.at(i);
            const sga::Image& image = s.image;
            // Normal images are known to hold no defect; anomalous ones without a mask are unknown.
            const std::vector<std::uint8_t> no_defect(static_cast<std::size_t>(image.width) * image.height, 0);
            sga::AnomalyCase c;
            c.image = image.view();
            if (r.map_width == image.width && r.map_height == image.height) c.anomaly_map = r.anomaly_map;
            c.map_low = 0.0f;
            c.map_high = scale;
            if (s.mask && s.mask->width == image.width && s.mask->height == image.height && s.mask->channels == 1)
                c.ground_truth = s.mask->view();
            else if (s.label == 0)
                c.ground_truth = sga::ImageView{no_defect.data(), image.width, image.height, image.width, sga::PixelFormat::Gray};
            if (r.anomaly_mask.size() == no_defect.size()) c.predicted_mask = r.anomaly_mask;
            const fs::path path(s.path);
            const std::string name = !e.per_defect_type.empty() && s.label
                                         ? (path.parent_path().filename() / path.filename()).string()
                                         : path.filename().string();
            std::ostringstream caption, detail;
            caption << name << "  score " << std::setprecision(5) << e.scores[i] << "  "
                    << (s.label ? "anomalous" : "normal") << (e.results[i].is_anomaly ? ", flagged" : ", not flagged");
            detail << g.description << " " << (k + 1) << " of " << g.members.size() << "; map blue 0 to red "
                   << std::setprecision(3) << scale;
            c.caption = caption.str();
            c.detail = detail.str();
            const std::string out = (folder / (std::string(g.file_stem) + "_" + std::to_string(k + 1) + ".png")).string();
            sga::save_png(out, sga::plot_anomaly_case(c));
            written.push_back(out);
        }
    }
    return written;
}

// ---- eval ---------------------------------------------------------------------------------

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
  --device cpu|cuda|auto   where to score (default auto)
  --threads N              CPU threads
)";

int command_eval(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(
        args, {{"model"}, {"data"}, {"plots"}, {"json", false}, {"device"}, {"threads"}}, false);
    if (a.help) {
        std::cout << eval_help;
        return 0;
    }
    const std::string model_path = a.require("model");
    const DataSpec spec = parse_data_spec(a.require("data"), true);
    const sga::Device device = a.get("device") ? parse_device(*a.get("device")) : sga::Device::Auto;
    apply_threads(a);

    const sga::Detector detector = sga::Detector::load(model_path, device);
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

// ---- calibrate ----------------------------------------------------------------------------

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
                           way the file is written to a temporary file and renamed over it)
  --quantile X             the quantile for normal-only data (default: the model's
                           threshold_quantile, 0.99 unless fit was told otherwise)
  --json                   print the result as one JSON object
  --device cpu|cuda|auto   where to score (default auto)
  --threads N              CPU threads (default: OMP_NUM_THREADS, else every core)
)";

int command_calibrate(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(
        args, {{"model"}, {"data"}, {"out"}, {"quantile"}, {"json", false}, {"device"}, {"threads"}}, false);
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

    sga::Detector detector = sga::Detector::load(model_path, device);
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

// ---- demo ---------------------------------------------------------------------------------

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

std::string default_data_dir() {
    if (const char* env = std::getenv("SKIPGANOMALY_DATA_DIR"); env && *env) return env;
    return SKIPGANOMALY_DATA_DIR;
}

int command_demo(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(
        args,
        {{"out"}, {"digit"}, {"epochs"}, {"batch-size"}, {"train-limit"}, {"seed"}, {"data-dir"}, {"device"}, {"threads"}},
        false);
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

    fs::create_directories(out / "heatmaps");
    sga::Detector detector(o);
    std::cout << "skipganomaly " << SKIPGANOMALY_VERSION_STRING << " demo: MNIST digit " << digit
              << " is normal, the other digits are anomalies\n"
              << "training on " << split.train_normal.size() << " images of digit " << digit << " ("
              << o.epochs << " epochs, 32x32, batch " << o.batch_size << ", device "
              << sga::to_string(detector.device()) << ", " << sga::cpu_threads() << " CPU thread(s))\n"
              << std::flush;
    const sga::FitReport report = fit_with_progress(detector, split.train_normal);
    print_fit_report(report, o.recipe.orientation_check.enabled);

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

// ---- main ---------------------------------------------------------------------------------

const char* const main_help = R"(usage: skipganomaly COMMAND [options]

Skip-GANomaly image anomaly detection.

commands:
  demo    train on the bundled MNIST subset and report AUROC, heat maps and plots
  fit     train a detector on normal images and save it
  score   score images with a saved detector (one JSON line per image)
  eval    measure a saved detector on a labelled data set
  calibrate  set a saved detector's threshold from normal (or labelled) images

skipganomaly COMMAND --help describes each command. skipganomaly --version prints the version.
)";

int run(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::cerr << main_help;
        return 2;
    }
    const std::string command = args.front();
    args.erase(args.begin());
    if (command == "-h" || command == "--help" || command == "help") {
        std::cout << main_help;
        return 0;
    }
    if (command == "--version") {
        std::cout << "skipganomaly " << SKIPGANOMALY_VERSION_STRING << " (CUDA backend "
                  << (SKIPGANOMALY_WITH_CUDA ? "built" : "not built") << ")\n";
        return 0;
    }
    if (command == "fit") return command_fit(args);
    if (command == "score") return command_score(args);
    if (command == "eval") return command_eval(args);
    if (command == "demo") return command_demo(args);
    if (command == "calibrate") return command_calibrate(args);
    throw UsageError("unknown command '" + command + "' (expected demo, fit, score, eval or calibrate)");
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const UsageError& e) {
        std::cerr << "error: " << e.what() << "\n(see skipganomaly --help, or skipganomaly COMMAND --help)\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
