// End-to-end CPU speed of the full-size model (isize 32, nc 3, ngf = ndf = 64, nz 100):
// one training step (G and D updates) at batch 64, and scoring at batch 64 and batch 1.
// bench/compare_pytorch_cpu.py runs the same model in PyTorch and prints the ratios.
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include <memory>
#include <random>

#include "skipganomaly/skip_ganomaly.hpp"

namespace {

using namespace sga;

Architecture full_size() {
    Architecture a;
    a.image_size = 32;
    a.channels = 3;
    return a;
}

Tensor random_images(std::int64_t n) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> v(static_cast<std::size_t>(n * 3 * 32 * 32));
    for (float& x : v) x = dist(rng);
    return Tensor::from_host(Shape{n, 3, 32, 32}, v);
}

double peak_resident_mib() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

void BM_TrainStep_Cpu(benchmark::State& state) {
    const std::int64_t batch = state.range(0);
    Context ctx(Device::Cpu);
    SkipGanomaly model(full_size(), {}, {});
    model.materialize(ctx);
    RandomStream random(0);
    model.initialize(ctx, random);
    const Tensor images = random_images(batch);
    Tape tape(ctx);
    model.train_step(ctx, tape, images, random);  // warm-up: arena and Eigen buffers settle
    for (auto _ : state) benchmark::DoNotOptimize(model.train_step(ctx, tape, images, random));
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_MiB"] = peak_resident_mib();
}

void BM_ScoreBatch_Cpu(benchmark::State& state) {
    const std::int64_t batch = state.range(0);
    Context ctx(Device::Cpu);
    SkipGanomaly model(full_size(), {}, {});
    model.materialize(ctx);
    RandomStream random(0);
    model.initialize(ctx, random);
    const Tensor images = random_images(batch);
    Tape tape(ctx);
    model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false);
    for (auto _ : state) benchmark::DoNotOptimize(model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false));
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_MiB"] = peak_resident_mib();
}

// One model shared by N application threads, each scoring its own batch (of 1, as an
// embedding application does per image) with its own context, as Detector::score does.
// items_per_second is the total over all threads; the CPU thread budget (set_cpu_threads)
// is what keeps N callers from starting N teams of every core.
const SkipGanomaly& shared_model() {
    static const std::unique_ptr<SkipGanomaly> model = [] {
        Context ctx(Device::Cpu);
        auto m = std::make_unique<SkipGanomaly>(full_size(), AdamHyperparameters{}, LossWeights{});
        m->materialize(ctx);
        RandomStream random(0);
        m->initialize(ctx, random);
        return m;
    }();
    return *model;
}

void BM_ScoreConcurrent_Cpu(benchmark::State& state) {
    const std::int64_t batch = state.range(0);
    const SkipGanomaly& model = shared_model();
    Context ctx(Device::Cpu);
    const Tensor images = random_images(batch);
    Tape tape(ctx);
    model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false);
    for (auto _ : state) benchmark::DoNotOptimize(model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false));
    state.SetItemsProcessed(state.iterations() * batch);
}

}  // namespace

BENCHMARK(BM_ScoreConcurrent_Cpu)
    ->ArgName("batch")
    ->Arg(1)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->Threads(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_TrainStep_Cpu)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ScoreBatch_Cpu)->Arg(64)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
