// End-to-end CPU speed of the full-size model (nc 3, ngf = ndf = 64, nz 100) at isize 32,
// 64, 128 and 256: one training step (G and D updates), scoring at a large batch and at
// batch 1, and N application threads scoring at once. Names carry isize and batch
// (BM_TrainStep_Cpu/isize:128/batch:16). bench/compare_pytorch_cpu.py runs the same model in
// PyTorch, one process per measurement, and prints the ratios.
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include <memory>
#include <random>

#include "score_batcher.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"
#include "skipganomaly/recipe.hpp"

namespace {

using namespace sga;

Architecture full_size(std::int64_t image_size = 32) {
    Architecture a;
    a.image_size = static_cast<int>(image_size);
    a.channels = 3;
    return a;
}

Tensor random_images(std::int64_t n, std::int64_t size = 32) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> v(static_cast<std::size_t>(n * 3 * size * size));
    for (float& x : v) x = dist(rng);
    return Tensor::from_host(Shape{n, 3, size, size}, v);
}

// Calls before the timed loop. The first grows the arena chunk by chunk; the second runs in
// the one block that replaces them, whose pages the kernel maps on first touch (measured at
// isize 64, batch 64: 185,000 page faults in the second training step, none from the third
// on, and no allocation). On a VM where a fault costs microseconds that put whole seconds
// into the first timed iterations; from the third call on, a call is steady state.
constexpr int warm_up_calls = 2;

double peak_resident_mib() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// One training step; `precision`: the convolutions' (Tape::convolution_precision).
void train_step(benchmark::State& state, Precision precision) {
    if (precision == Precision::BFloat16 && !cpu_bf16_available()) {
        state.SkipWithError("this processor has no AVX512-BF16");
        return;
    }
    const std::int64_t size = state.range(0), batch = state.range(1);
    Context ctx(Device::Cpu);
    SkipGanomaly model(full_size(size), {}, {});
    model.materialize(ctx);
    RandomStream random(0);
    model.initialize(ctx, random);
    const Tensor images = random_images(batch, size);
    Tape tape(ctx);
    tape.set_convolution_precision(precision);
    for (int i = 0; i < warm_up_calls; ++i) model.train_step(ctx, tape, images, random);
    for (auto _ : state) benchmark::DoNotOptimize(model.train_step(ctx, tape, images, random));
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_MiB"] = peak_resident_mib();
}
void BM_TrainStep_Cpu(benchmark::State& state) { train_step(state, Precision::Float32); }
void BM_TrainStepBf16_Cpu(benchmark::State& state) { train_step(state, Precision::BFloat16); }

// MiB of weights one scoring call must read at least once: every parameter of both networks,
// a layer whose packing keeps a compact copy of its active taps counted at the copy's size
// (its other taps multiply padding only and are never read), a bfloat16 packing at its
// size. Beside bench_conv2d_cpu's BM_ReadBandwidth_Cpu this bounds batch-1 latency from
// below: reading them takes weights_MiB / bandwidth, whatever the kernels do.
double weights_read_mib(const SkipGanomaly& model) {
    double floats = 0;
    for (const Network* network : {static_cast<const Network*>(&model.generator),
                                   static_cast<const Network*>(&model.discriminator)}) {
        const std::vector<ParameterBlock::Entry>& entries = network->parameters.entries();
        for (int i = 0; i < static_cast<int>(entries.size()); ++i) {
            const PackedConvolution* p = network->packed(i);
            if (p && !p->bf16.empty())  // bfloat16: one 32-bit word a pair of weights
                floats += static_cast<double>(p->bf16.size());
            else
                floats += static_cast<double>(p && p->packed.numel() > 0 ? p->packed.numel() : entries[i].shape.numel());
        }
    }
    return floats * sizeof(float) / (1024.0 * 1024.0);
}

// Scoring as Detector scores: with the weights packed once (Network::packed), or, for
// BM_ScoreBatchUnpacked_Cpu, as they are (every GEMM packs its weight operand per call);
// BM_ScoreBatchBf16_Cpu packs them for Precision::BFloat16 (skipped without AVX512-BF16).
void score_batch(benchmark::State& state, bool packed, Precision precision = Precision::Float32) {
    if (precision == Precision::BFloat16 && !cpu_bf16_available()) {
        state.SkipWithError("this processor has no AVX512-BF16");
        return;
    }
    const std::int64_t size = state.range(0), batch = state.range(1);
    Context ctx(Device::Cpu);
    SkipGanomaly model(full_size(size), {}, {});
    model.materialize(ctx);
    RandomStream random(0);
    model.initialize(ctx, random);
    if (packed) model.pack_for_inference(ctx, precision);
    const Tensor images = random_images(batch, size);
    Tape tape(ctx);
    for (int i = 0; i < warm_up_calls; ++i) model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false);
    for (auto _ : state) benchmark::DoNotOptimize(model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false));
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_MiB"] = peak_resident_mib();
    state.counters["weights_MiB"] = weights_read_mib(model);
}
void BM_ScoreBatch_Cpu(benchmark::State& state) { score_batch(state, true); }
void BM_ScoreBatchUnpacked_Cpu(benchmark::State& state) { score_batch(state, false); }
void BM_ScoreBatchBf16_Cpu(benchmark::State& state) { score_batch(state, true, Precision::BFloat16); }

// One image scored as the default recipe (robust_rotation) scores it, packed as Detector packs
// it: the restoration's scoring views and the rotation head's four quarter turns, one call.
// Beside BM_ScoreBatch_Cpu/isize:32/batch:1 (the official model's single view).
void score_default_recipe(benchmark::State& state, Precision precision) {
    if (precision == Precision::BFloat16 && !cpu_bf16_available()) {
        state.SkipWithError("this processor has no AVX512-BF16");
        return;
    }
    const std::int64_t size = state.range(0), batch = state.range(1);
    const Recipe recipe = Recipe::robust_rotation();
    Architecture arch = full_size(size);
    arch.rotation_head = recipe.rotation_prediction.enabled;
    const ModelTechniques techniques{1e-5f, recipe.skip_gating.scoring_closed(), recipe.restoration,
                                     recipe.rotation_prediction, recipe.anomaly_map};
    Context ctx(Device::Cpu);
    SkipGanomaly model(arch, {}, {}, techniques);
    model.materialize(ctx);
    RandomStream random(0);
    model.initialize(ctx, random);
    model.pack_for_inference(ctx, precision);
    const Tensor images = random_images(batch, size);
    Tape tape(ctx);
    for (int i = 0; i < warm_up_calls; ++i) model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false);
    for (auto _ : state) benchmark::DoNotOptimize(model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false));
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}
void BM_ScoreDefaultRecipe_Cpu(benchmark::State& state) { score_default_recipe(state, Precision::Float32); }
void BM_ScoreDefaultRecipeBf16_Cpu(benchmark::State& state) { score_default_recipe(state, Precision::BFloat16); }

// One model shared by N application threads, each scoring one image per call (as an
// embedding application does), with the weights packed as Detector packs them.
// items_per_second is the total over all threads.
// - BM_ScoreConcurrent_Cpu: each caller runs its own pass with its own context
//   (SkipGanomaly::score); the CPU thread budget (set_cpu_threads) and admission keep N
//   callers from starting N teams of every core.
// - BM_ScoreConcurrentBatched_Cpu: the callers share a ScoreBatcher, as Detector::score of one
//   image does: the images queued while a pass runs are scored together in the next one, each
//   bit for bit as alone (score_batcher.hpp).
const SkipGanomaly& shared_model() {
    static const std::unique_ptr<SkipGanomaly> model = [] {
        Context ctx(Device::Cpu);
        auto m = std::make_unique<SkipGanomaly>(full_size(), AdamHyperparameters{}, LossWeights{});
        m->materialize(ctx);
        RandomStream random(0);
        m->initialize(ctx, random);
        m->pack_for_inference(ctx);
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
    for (int i = 0; i < warm_up_calls; ++i) model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false);
    for (auto _ : state) benchmark::DoNotOptimize(model.score(ctx, tape, images, BatchNormMode::RunningStatistics, false));
    state.SetItemsProcessed(state.iterations() * batch);
}

void BM_ScoreConcurrentBatched_Cpu(benchmark::State& state) {
    static ScoreBatcher batcher;
    const SkipGanomaly& model = shared_model();
    const Tensor image = random_images(1);
    for (int i = 0; i < warm_up_calls; ++i) batcher.score(model, image.data(), false);
    for (auto _ : state) benchmark::DoNotOptimize(batcher.score(model, image.data(), false));
    state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_ScoreConcurrentBatched_Cpu)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->Threads(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ScoreConcurrent_Cpu)
    ->ArgName("batch")
    ->Arg(1)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->Threads(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// Batches: 64 where a step takes well under a second on 2 cores, smaller at 128 and 256 so that
// one run of all sizes fits in minutes (the same batches as the PyTorch side).
BENCHMARK(BM_TrainStep_Cpu)
    ->ArgNames({"isize", "batch"})
    ->Args({32, 64})
    ->Args({64, 64})
    ->Args({128, 16})
    ->Args({256, 8})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_TrainStepBf16_Cpu)
    ->ArgNames({"isize", "batch"})
    ->Args({32, 64})
    ->Args({64, 64})
    ->Args({128, 16})
    ->Args({256, 8})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ScoreBatch_Cpu)
    ->ArgNames({"isize", "batch"})
    ->Args({32, 64})
    ->Args({32, 1})
    ->Args({64, 64})
    ->Args({64, 1})
    ->Args({128, 32})
    ->Args({128, 1})
    ->Args({256, 16})
    ->Args({256, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ScoreBatchBf16_Cpu)
    ->ArgNames({"isize", "batch"})
    ->Args({32, 64})
    ->Args({32, 1})
    ->Args({64, 64})
    ->Args({64, 1})
    ->Args({128, 32})
    ->Args({128, 1})
    ->Args({256, 16})
    ->Args({256, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ScoreDefaultRecipe_Cpu)->ArgNames({"isize", "batch"})->Args({32, 1})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ScoreDefaultRecipeBf16_Cpu)->ArgNames({"isize", "batch"})->Args({32, 1})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ScoreBatchUnpacked_Cpu)
    ->ArgNames({"isize", "batch"})
    ->Args({32, 64})
    ->Args({32, 1})
    ->Args({128, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_MAIN();
