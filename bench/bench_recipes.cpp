// What each training recipe costs (docs/quality.md): Detector::fit for 1 and 3 epochs on 640
// real MNIST digit-2 images (10 steps of batch 64 per epoch, validation split off; the
// once-per-fit work, such as the batch-norm recomputation, is inside the timing, so the
// difference of the two, halved, is the cost of one more epoch), and Detector::score on one
// image and on 64. isize 32, nc 1, ngf = ndf = 64 as in the MNIST evaluation.
//
//   build/bench/bench_recipes --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <string>

#include "skipganomaly/datasets.hpp"
#include "skipganomaly/detector.hpp"

namespace {

using namespace sga;

const std::vector<Image>& digit_images() {
    static const std::vector<Image> images = [] {
        const std::string d = SKIPGANOMALY_DATA_DIR "/mnist/";
        std::vector<Image> v = mnist_one_class(d + "train-images-idx3-ubyte.gz", d + "train-labels-idx1-ubyte.gz",
                                               d + "t10k-images-idx3-ubyte.gz", d + "t10k-labels-idx1-ubyte.gz", 2)
                                   .train_normal;
        v.resize(640);
        return v;
    }();
    return images;
}

DetectorOptions options_for(const std::string& recipe, int epochs = 1) {
    DetectorOptions o;
    o.architecture.image_size = 32;
    o.architecture.channels = 1;
    o.recipe = Recipe::named(recipe);
    o.epochs = epochs;
    o.device = Device::Cpu;
    o.validation_fraction = 0.0f;
    if (o.recipe.stopping != StoppingRule::FinalEpoch) o.validation_fraction = 0.1f;
    return o;
}

void BM_Fit(benchmark::State& state, const std::string& recipe) {
    const int epochs = static_cast<int>(state.range(0));
    for (auto _ : state) {
        Detector d(options_for(recipe, epochs));
        benchmark::DoNotOptimize(d.fit(digit_images()));
    }
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(digit_images().size() * epochs),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Score(benchmark::State& state, const std::string& recipe) {
    DetectorOptions o = options_for(recipe);
    Detector d(o);
    d.fit(digit_images());
    const std::size_t batch = static_cast<std::size_t>(state.range(0));
    std::vector<ImageView> views;
    for (std::size_t i = 0; i < batch; ++i) views.push_back(digit_images()[i].view());
    d.score(std::span<const ImageView>(views));
    for (auto _ : state) benchmark::DoNotOptimize(d.score(std::span<const ImageView>(views)));
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

#define SGA_RECIPE_BENCHMARKS(name)                                                                               \
    BENCHMARK_CAPTURE(BM_Fit, name, std::string(#name))->Arg(1)->Arg(3)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(2); \
    BENCHMARK_CAPTURE(BM_Score, name, std::string(#name))->Arg(1)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime()
SGA_RECIPE_BENCHMARKS(official);
SGA_RECIPE_BENCHMARKS(robust);
SGA_RECIPE_BENCHMARKS(robust_rotation);
BENCHMARK_MAIN();
