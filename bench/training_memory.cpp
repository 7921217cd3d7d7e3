// Where training memory goes: parameter blocks (values, gradients, two Adam moments) vs the
// arena (tape activations, their gradients, kernel scratch), per training step. Prints, does
// not time: build/bench/training_memory 128 16 (OMP_NUM_THREADS=1 is enough).
#include <sys/resource.h>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include "skipganomaly/engine/skip_ganomaly.hpp"
using namespace sga;
static double rss_mib() { std::ifstream f("/proc/self/status"); std::string l; while (std::getline(f, l)) if (l.rfind("VmRSS:", 0) == 0) return std::atof(l.c_str() + 6) / 1024; return 0; }
static double peak_mib() { rusage u{}; getrusage(RUSAGE_SELF, &u); return u.ru_maxrss / 1024.0; }
int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: training_memory ISIZE BATCH\n");
        return 2;
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    const int size = std::atoi(argv[1]), batch = std::atoi(argv[2]);
    Architecture a; a.image_size = size; a.channels = 3;
    Context ctx(Device::Cpu);
    SkipGanomaly m(a, {}, {});
    m.materialize(ctx); RandomStream r(0); m.initialize(ctx, r);
    const double params = (m.generator.parameters.size() + m.discriminator.parameters.size()) * 4.0 / 1048576;
    std::printf("isize %d batch %d: parameter floats %.0f MiB (x4 with grads and two Adam moments = %.0f MiB); RSS after init %.0f MiB\n", size, batch, params, 4 * params, rss_mib());
    std::vector<float> v(static_cast<std::size_t>(batch) * 3 * size * size); std::mt19937 g(1); std::uniform_real_distribution<float> d(-1, 1); for (float& x : v) x = d(g);
    const Tensor images = Tensor::from_host({batch, 3, size, size}, v);
    Tape tape(ctx);
    for (int step = 0; step < 2; ++step) {
        m.train_step(ctx, tape, images.view(), r);
        std::printf("  after step %d: arena peak %.0f MiB, arena capacity %.0f MiB, RSS %.0f MiB, peak RSS %.0f MiB\n", step + 1,
                    ctx.arena().peak_bytes() / 1048576.0, ctx.arena().capacity() / 1048576.0, rss_mib(), peak_mib());
    }
}
