// Batch norm on the CPU at the model's shapes (batch 64, 32x32, ngf = ndf = 64): training
// forward (statistics, normalisation, running update), inference forward and backward.
// Memory-bound, so the counter is GB/s of the tensor traffic each pass must do.
#include <benchmark/benchmark.h>

#include <random>
#include <string>

#include "skipganomaly/engine/kernels.hpp"

namespace {

using namespace sga;

struct Shape4 {
    std::int64_t n, c, h, w;
};

// Every batch-norm input of the generator and discriminator at isize 32 (the 16x16 x 64 one
// is the generator's outermost decoder output).
const Shape4 shapes[] = {{64, 64, 16, 16}, {64, 128, 8, 8}, {64, 256, 4, 4}, {64, 512, 2, 2}};

std::vector<float> random_values(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

enum class Pass { TrainingForward, InferenceForward, Backward };

void run(benchmark::State& state, Pass pass, Shape4 s) {
    Context ctx(Device::Cpu);
    const std::int64_t spatial = s.h * s.w, count = s.n * s.c * spatial;
    const std::vector<float> x = random_values(static_cast<std::size_t>(count), 1), dy = random_values(static_cast<std::size_t>(count), 2);
    std::vector<float> y(x.size()), dx(x.size()), weight(static_cast<std::size_t>(s.c), 1.1f), bias(static_cast<std::size_t>(s.c), 0.1f);
    std::vector<float> mean(static_cast<std::size_t>(s.c)), inv_std(static_cast<std::size_t>(s.c)), running_mean(static_cast<std::size_t>(s.c), 0.0f),
        running_var(static_cast<std::size_t>(s.c), 1.0f), dw(static_cast<std::size_t>(s.c)), db(static_cast<std::size_t>(s.c));
    kernels::batch_norm_forward_training(ctx, s.n, s.c, spatial, x.data(), weight.data(), bias.data(), y.data(), mean.data(),
                                         inv_std.data(), running_mean.data(), running_var.data(), 0.1f, 1e-5f);
    for (auto _ : state) {
        switch (pass) {
            case Pass::TrainingForward:
                kernels::batch_norm_forward_training(ctx, s.n, s.c, spatial, x.data(), weight.data(), bias.data(), y.data(),
                                                     mean.data(), inv_std.data(), running_mean.data(), running_var.data(), 0.1f, 1e-5f);
                break;
            case Pass::InferenceForward:
                kernels::batch_norm_forward_inference(ctx, s.n, s.c, spatial, x.data(), weight.data(), bias.data(),
                                                      running_mean.data(), running_var.data(), 1e-5f, y.data());
                break;
            case Pass::Backward:
                kernels::batch_norm_backward(ctx, s.n, s.c, spatial, x.data(), dy.data(), weight.data(), mean.data(),
                                             inv_std.data(), dx.data(), dw.data(), db.data());
                break;
        }
        benchmark::DoNotOptimize(y.data());
        benchmark::DoNotOptimize(dx.data());
        benchmark::ClobberMemory();
    }
    // Minimum traffic: training reads x twice (statistics, normalise) and writes y; inference
    // reads x, writes y; backward reads x and dy twice and read-modify-writes dx.
    const double tensors = pass == Pass::TrainingForward ? 3 : pass == Pass::InferenceForward ? 2 : 6;
    state.counters["GB/s"] = benchmark::Counter(tensors * static_cast<double>(count) * sizeof(float) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
    for (const Shape4& s : shapes) {
        const std::string shape = std::to_string(s.n) + "x" + std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
        benchmark::RegisterBenchmark(("BM_BatchNormTrainingForward_Cpu/" + shape).c_str(), run, Pass::TrainingForward, s)->UseRealTime();
        benchmark::RegisterBenchmark(("BM_BatchNormInferenceForward_Cpu/" + shape).c_str(), run, Pass::InferenceForward, s)->UseRealTime();
        benchmark::RegisterBenchmark(("BM_BatchNormBackward_Cpu/" + shape).c_str(), run, Pass::Backward, s)->UseRealTime();
    }
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
