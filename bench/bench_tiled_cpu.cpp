// Tiled scoring of camera-resolution images on the CPU (docs/industrial.md): Detector::score
// of one grey side x side image with the inspection recipe at isize 128 (ngf = ndf = 64),
// tiles of 128 pixels every 64 (each pixel in up to four tiles: 225 tiles at 1024 x 1024).
// Counters: images/s and tiles/s, and the peak resident memory of the scoring calls alone
// (the process's peak is reset before the timed loop, so the set-up's short training does
// not count): BM_ScoreTiled_Cpu/side:1024.
#include <benchmark/benchmark.h>

#include <fstream>
#include <random>
#include <string>

#include "skipganomaly/detector.hpp"

namespace {

using namespace sga;

Image random_grey(int side, unsigned seed) {
    std::mt19937 rng(seed);
    Image image{side, side, 1, std::vector<std::uint8_t>(static_cast<std::size_t>(side) * static_cast<std::size_t>(side))};
    for (std::uint8_t& p : image.pixels) p = static_cast<std::uint8_t>(rng() & 0xff);
    return image;
}

// The process's peak resident memory (VmHWM) in MiB, and a reset of it (Linux: writing 5 to
// /proc/self/clear_refs sets the peak to the current resident size).
double peak_resident_mib() {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return -1;
}
void reset_peak_resident() { std::ofstream("/proc/self/clear_refs") << "5"; }

// A tiled detector whose weights came from one training step: scoring costs the same whatever
// the weights are.
const Detector& tiled_detector() {
    static const Detector detector = [] {
        DetectorOptions o;
        o.architecture.image_size = 128;
        o.architecture.channels = 1;
        o.recipe = Recipe::inspection();
        o.tiling = {128, 64};
        o.epochs = 1;
        o.batch_size = 2;
        o.validation_fraction = 0.25f;
        std::vector<Image> images;
        for (unsigned i = 0; i < 4; ++i) images.push_back(random_grey(256, 10 + i));
        Detector d(o);
        d.fit(images);
        return d;
    }();
    return detector;
}

void BM_ScoreTiled_Cpu(benchmark::State& state) {
    const int side = static_cast<int>(state.range(0));
    const Detector& d = tiled_detector();
    const Image image = random_grey(side, 1);
    const std::size_t tiles = tile_windows(side, side, d.options().tiling).size();
    benchmark::DoNotOptimize(d.score(image.view()));  // warm-up: slots and arena blocks
    reset_peak_resident();
    for (auto _ : state) benchmark::DoNotOptimize(d.score(image.view()));
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
    state.counters["tiles/s"] =
        benchmark::Counter(static_cast<double>(state.iterations() * tiles), benchmark::Counter::kIsRate);
    state.counters["tiles"] = static_cast<double>(tiles);
    state.counters["peak_MiB"] = peak_resident_mib();
}

}  // namespace

BENCHMARK(BM_ScoreTiled_Cpu)->ArgName("side")->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
