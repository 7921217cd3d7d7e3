// What each training recipe costs (docs/quality.md): one epoch of Detector::fit on 640 real
// MNIST digit-2 images (10 steps of batch 64, validation split off; the robust recipe's
// batch-norm recomputation at the end of fit is inside the timing), and Detector::score on
// one image and on 64. isize 32, nc 1, ngf = ndf = 64 as in the MNIST evaluation.
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

DetectorOptions options_for(const std::string& recipe) {
    DetectorOptions o;
    o.architecture.image_size = 32;
    o.architecture.channels = 1;
    o.recipe = Recipe::named(recipe);
    o.epochs = 1;
    o.device = Device::Cpu;
    o.validation_fraction = 0.0f;
    if (o.recipe.stopping != StoppingRule::FinalEpoch) o.validation_fraction = 0.1f;
    return o;
}

void BM_FitEpoch(benchmark::State& state, const std::string& recipe) {
    for (auto _ : state) {
        Detector d(options_for(recipe));
        benchmark::DoNotOptimize(d.fit(digit_images()));
    }
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(digit_images().size()),
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

BENCHMARK_CAPTURE(BM_FitEpoch, official, std::string("official"))->Unit(benchmark::kSecond)->UseRealTime()->Iterations(2);
BENCHMARK_CAPTURE(BM_FitEpoch, robust, std::string("robust"))->Unit(benchmark::kSecond)->UseRealTime()->Iterations(2);
BENCHMARK_CAPTURE(BM_Score, official, std::string("official"))->Arg(1)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Score, robust, std::string("robust"))->Arg(1)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
