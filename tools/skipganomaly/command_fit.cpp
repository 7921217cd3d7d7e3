// skipganomaly fit: trains a detector on normal images and saves it.
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "data.hpp"
#include "fit_report.hpp"
#include "outputs.hpp"
#include "progress.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"

namespace cli {
namespace {

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
  --out PATH                   model file to write (required); its folder must exist (checked,
                               with --checkpoint's, before the data is loaded)
  --recipe robust_rotation|robust|official|inspection
                               how to train (default: inspection for mvtec: data or with
                               --tile, robust_rotation otherwise): robust trains the
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
  --tile N                     train and score on tiles of N x N image pixels (default 0:
                               no tiling, whole images resized to --image-size); maps are
                               stitched at each image's own resolution (docs/industrial.md)
  --stride N                   pixels between neighbouring tiles (default N / 2)
  --epochs N                   training epochs (default 15; see below for inspection)
  --batch-size N               images per step (default 64; see below for inspection)
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
  --precision float32|bfloat16 the arithmetic of the model's scoring convolutions, stored in
                               the model; the threshold is learnt at it (default float32;
                               bfloat16 where the processor has AVX512-BF16)
  --training-precision float32|bfloat16
                               the arithmetic of the training convolutions, forward and
                               backward (default float32; bfloat16 where the processor has
                               AVX512-BF16, about 1.5x faster a step). Batch norm, losses and
                               Adam stay float32; the model records it
  --device cpu|cuda|auto       where to train (default auto: CUDA when built and a GPU is
                               present, unless SKIPGANOMALY_FORCE_CPU is set)
  --threads N                  CPU threads (default: OMP_NUM_THREADS, else every core)
  --checkpoint PATH            write a checkpoint (weights, optimiser, RNG) to PATH (default: none)
  --checkpoint-every N         ... every N epochs (default 1 with --checkpoint)
  --resume PATH                continue from a checkpoint of the same data and options (other
                               images, --seed, --validation-fraction, --lr, --batch-size or
                               --recipe are refused, naming the difference); --epochs counts
                               the epochs already done (default: start afresh)
  --progress-every SECONDS     without a terminal, print a progress line with the ETA this
                               often (default 5; 0: after every batch). On a terminal a bar
                               is redrawn instead
  --replace-partial            when Ctrl-C stops training early, save the partial model to
                               --out even if a file is there (default: keep that file and save
                               to NAME.partial.EXT beside it)

Training length: with neither --epochs nor --batch-size, the inspection recipe trains
440 steps of 16 images (the fewest epochs that give them; fit says how many), since
inspection sets are small and its generator needs steps, not epochs; the other recipes
train 15 epochs of 64 images. Either option given: the defaults above, as given.

Ctrl-C stops after the current batch and the exit status is 130:
  - before the first epoch is completed, nothing is written (an existing --out is unchanged);
  - later, the model of the last completed epoch is saved: to --out where no file is there
    (or with --replace-partial), else to NAME.partial.EXT beside it (model.safetensors ->
    model.partial.safetensors), leaving --out as it was.
A second Ctrl-C ends the process at once; nothing more is written.
)";

// Every option fit accepts; fit_help describes each.
const std::vector<OptionSpec> fit_options = {
    {"data"},
    {"out"},
    {"recipe"},
    {"epochs"},
    {"batch-size"},
    {"image-size"},
    {"tile"},
    {"stride"},
    {"channels"},
    {"lr"},
    {"seed"},
    {"validation-fraction"},
    {"threshold-quantile"},
    {"precision"},
    {"training-precision"},
    {"device"},
    {"threads"},
    {"checkpoint-every"},
    {"checkpoint"},
    {"resume"},
    {"progress-every"},
    {"replace-partial", false},
};

}  // namespace

int command_fit(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(args, fit_options, false);
    if (a.help) {
        std::cout << fit_help;
        return 0;
    }
    const DataSpec spec = parse_data_spec(a.require("data"), false);
    const std::string out = a.require("out");

    sga::DetectorOptions o;
    o.tiling.tile = integer_option(a, "tile", 0, 0, sga::max_image_side);
    o.tiling.stride = integer_option(a, "stride", 0, 0, sga::max_image_side);
    if (o.tiling.stride > 0 && !o.tiling.enabled()) throw UsageError("--stride needs --tile");
    // MVTec-layout data is inspection data: parts and surfaces with local defects, which the
    // default recipe's whole-image score averages away (docs/industrial.md). So is tiled data.
    const bool inspection_data = spec.kind == "mvtec" || o.tiling.enabled();
    std::string recipe_reason;
    if (const auto recipe = a.get("recipe")) {
        if (*recipe != "robust_rotation" && *recipe != "robust" && *recipe != "official" && *recipe != "inspection")
            throw UsageError("--recipe expects robust_rotation, robust, official or inspection, found '" + *recipe + "'");
        o.recipe = sga::Recipe::named(*recipe);
    } else if (inspection_data) {
        o.recipe = sga::Recipe::inspection();
        recipe_reason = spec.kind == "mvtec" ? " (the default for mvtec: data; --recipe chooses another)"
                                             : " (the default with --tile; --recipe chooses another)";
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
    if (const auto p = precision_option(a)) o.precision = *p;
    if (const auto p = precision_option(a, "training-precision")) o.training_precision = *p;
    o.checkpoint_every_epochs = integer_option(a, "checkpoint-every", 0, 0, 1000000);
    if (const auto c = a.get("checkpoint")) o.checkpoint_path = *c;
    if (o.checkpoint_every_epochs > 0 && o.checkpoint_path.empty())
        throw UsageError("--checkpoint-every needs --checkpoint PATH");
    if (!o.checkpoint_path.empty() && o.checkpoint_every_epochs == 0) o.checkpoint_every_epochs = 1;
    if (const auto r = a.get("resume")) o.resume_from = *r;
    apply_threads(a);
    const bool replace_partial = a.has("replace-partial");
    if (o.validation_fraction == 0 && o.recipe.stopping != sga::StoppingRule::FinalEpoch)
        throw UsageError("--validation-fraction 0 leaves the '" + o.recipe.name +
                         "' recipe's stopping rule no held-out images; hold some out or use --recipe official");
    o.validate();
    check_output_file("out", out);
    if (!o.checkpoint_path.empty()) check_output_file("checkpoint", o.checkpoint_path);

    std::cerr << "loading " << a.require("data") << "\n";
    const std::vector<sga::Image> images = load_training_images(spec);
    const sga::TrainingLength length = sga::default_training_length(o.recipe);
    const std::size_t training_images = images.size() - sga::held_out_image_count(images.size(), o.validation_fraction);
    // Fewer images than a batch: fit refuses them below, naming the batch size.
    // A resumed fit computes the same length, so its options match the checkpoint's.
    if (length.steps > 0 && !a.has("epochs") && !a.has("batch-size") &&
        training_images >= static_cast<std::size_t>(length.batch_size)) {
        o.batch_size = length.batch_size;
        o.epochs = length.epochs_for(training_images);
        std::cerr << "training length: " << o.epochs << " epoch(s) of " << training_images / o.batch_size
                  << " batch(es) of " << o.batch_size << " images, at least " << length.steps << " steps (the "
                  << o.recipe.name << " recipe's default for " << training_images
                  << " training images; --epochs and --batch-size choose)\n";
        o.validate();
    }
    sga::Detector detector(o);
    std::cerr << "training on " << images.size() << " images, " << o.epochs << " epoch(s), recipe " << o.recipe.name
              << recipe_reason;
    if (o.tiling.enabled()) std::cerr << ", tiles of " << o.tiling.tile << " px every " << o.tiling.step() << " px";
    std::cerr << ", device " << sga::to_string(detector.device()) << ", " << sga::cpu_threads() << " CPU thread(s)\n";
    if (o.training_precision == sga::Precision::BFloat16 &&
        !(detector.device() == sga::Device::Cpu && sga::cpu_bf16_available()))
        std::cerr << "warning: --training-precision bfloat16 is not available here ("
                  << (detector.device() == sga::Device::Cpu ? "this processor has no AVX512-BF16" : "CPU only")
                  << "); training in float32\n";
    const sga::FitReport report = fit_with_progress(detector, images, progress_every);
    if (report.epochs_completed == 0) {
        // Only a cancellation returns without a completed epoch (divergence throws).
        std::error_code ignored;
        std::cerr << "error: interrupted before the first epoch was completed; nothing was written"
                  << (std::filesystem::exists(out, ignored) ? " ('" + out + "' is unchanged)" : std::string()) << "\n";
        return 130;
    }
    print_fit_report(report, o.recipe.orientation_check.enabled);
    std::string target = out;
    if (report.cancelled) {
        std::error_code ignored;
        const bool occupied = std::filesystem::exists(std::filesystem::symlink_status(out, ignored));
        if (occupied && !replace_partial) target = partial_model_path(out);
        std::cerr << "warning: interrupted after " << report.epochs_completed << " of " << o.epochs
                  << " epoch(s); the partial model is saved to " << target
                  << (target != out ? " and '" + out + "' is unchanged (--replace-partial replaces it)" : std::string())
                  << "\n";
    }
    detector.save(target);
    std::cout << "model saved to " << target << "\n";
    return report.cancelled ? 130 : 0;
}

}  // namespace cli
