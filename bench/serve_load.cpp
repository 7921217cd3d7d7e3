// serve_load: throughput and latency of the scoring server (tools/skipganomaly/server.hpp)
// against Detector::score called directly, at 1, 4 and 16 concurrent clients, on loopback.
//
//   build/bench/serve_load [--model M.safetensors] [--requests N] [--threads N]
//
// Each client sends a fixed count of single-image requests in all (N per concurrency, default
// 400, after 32 unmeasured), each image a different 28 x 28 grey PNG, on its own keep-alive
// connection; the direct run scores the same images, decoded beforehand, from as many
// threads. Without --model it first fits the default architecture (32 px, 1 channel) for one
// epoch on synthetic images, which only the timing needs. Prints a Markdown table.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "server.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/image.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

sga::Image blob(std::mt19937& rng) {
    std::uniform_real_distribution<double> centre(8, 20), noise(0, 20);
    sga::Image im{28, 28, 1, std::vector<std::uint8_t>(28 * 28)};
    const double cx = centre(rng), cy = centre(rng);
    for (int y = 0; y < 28; ++y)
        for (int x = 0; x < 28; ++x) {
            const double d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            im.pixels[static_cast<std::size_t>(y * 28 + x)] =
                static_cast<std::uint8_t>(std::min(255.0, 230.0 * std::exp(-d2 / 18.0) + noise(rng)));
        }
    return im;
}

// prefix + n + suffix (streamed: GCC 12 warns falsely (-Wrestrict) on "b" + std::to_string(n)).
std::string numbered(const char* prefix, unsigned n, const char* suffix) {
    std::ostringstream s;
    s << prefix << n << suffix;
    return s.str();
}

struct Run {
    double seconds = 0;
    std::vector<double> latencies_ms;
    int failures = 0;
};

double percentile(std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

// `total` calls of `one(i)` spread over `clients` threads, each taking the next index.
template <typename Call>
Run measure(int clients, int total, Call one) {
    Run run;
    std::vector<std::vector<double>> latencies(static_cast<std::size_t>(clients));
    std::atomic<int> next{0}, failures{0};
    const Clock::time_point start = Clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c)
        threads.emplace_back([&, c] {
            auto session = one.session();
            for (int i; (i = next++) < total;) {
                const Clock::time_point t = Clock::now();
                if (!one(session, i)) ++failures;
                latencies[static_cast<std::size_t>(c)].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
            }
        });
    for (std::thread& t : threads) t.join();
    run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (const auto& l : latencies) run.latencies_ms.insert(run.latencies_ms.end(), l.begin(), l.end());
    run.failures = failures;
    return run;
}

struct HttpCall {
    int port;
    const std::vector<std::string>* bodies;
    std::unique_ptr<httplib::Client> session() const {
        auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
        client->set_keep_alive(true);
        client->set_tcp_nodelay(true);  // as curl and most clients: the body goes out behind the headers
        client->set_read_timeout(60, 0);
        return client;
    }
    bool operator()(std::unique_ptr<httplib::Client>& client, int i) const {
        const httplib::Result r = client->Post("/v1/score", (*bodies)[static_cast<std::size_t>(i) % bodies->size()], "image/png");
        return r && r->status == 200;
    }
};

struct DirectCall {
    const sga::Detector* detector;
    const std::vector<sga::Image>* images;
    int session() const { return 0; }
    bool operator()(int, int i) const {
        const sga::ScoreResult r = detector->score((*images)[static_cast<std::size_t>(i) % images->size()].view());
        return std::isfinite(r.score);
    }
};

}  // namespace

int main(int argc, char** argv) {
    std::string model_path;
    int requests = 400;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string option = argv[i];
        if (option == "--model") model_path = argv[i + 1];
        else if (option == "--requests") requests = std::stoi(argv[i + 1]);
        else if (option == "--threads") sga::set_cpu_threads(std::stoi(argv[i + 1]));
        else {
            std::cerr << "usage: serve_load [--model M.safetensors] [--requests N] [--threads N]\n";
            return 2;
        }
    }
    const fs::path scratch = fs::temp_directory_path() / numbered("serve_load_", std::random_device{}(), "");
    fs::create_directories(scratch);
    std::mt19937 rng(1);
    std::vector<sga::Image> images;
    std::vector<std::string> bodies;
    for (int i = 0; i < 64; ++i) {
        images.push_back(blob(rng));
        const fs::path file = scratch / numbered("b", static_cast<unsigned>(i), ".png");
        sga::save_png(file.string(), images.back());
        std::ifstream in(file, std::ios::binary);
        bodies.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    }
    if (model_path.empty()) {
        sga::DetectorOptions options;
        options.architecture.image_size = 32;
        options.architecture.channels = 1;
        options.epochs = 1;
        options.batch_size = 16;
        options.validation_fraction = 0.25f;
        options.device = sga::Device::Cpu;
        sga::Detector fitted(options);
        fitted.fit(images);
        model_path = (scratch / "model.safetensors").string();
        fitted.save(model_path);
        std::cerr << "fitted the default architecture (32 px, 1 channel) for 1 epoch: " << model_path << "\n";
    }
    const sga::Detector detector = sga::Detector::load(model_path, sga::Device::Cpu);
    cli::ServerOptions options;
    options.port = 0;
    options.max_in_flight = 64;
    options.workers = 32;
    cli::ScoringServer server(detector, cli::model_source(model_path), options);
    std::thread serving([&] { server.run(); });

    std::printf("| path | clients | requests | seconds | images/s | p50 ms | p99 ms | failed |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int clients : {1, 4, 16}) {
        const HttpCall http{server.port(), &bodies};
        const DirectCall direct{&detector, &images};
        for (int path = 0; path < 2; ++path) {
            const auto run_once = [&](int count) {
                return path == 0 ? measure(clients, count, direct) : measure(clients, count, http);
            };
            run_once(32);  // warm-up: slots, connections, thread pools
            const Run run = run_once(requests);
            std::printf("| %s | %d | %d | %.2f | %.1f | %.2f | %.2f | %d |\n", path == 0 ? "Detector::score" : "HTTP /v1/score",
                        clients, requests, run.seconds, requests / run.seconds, percentile(run.latencies_ms, 0.5),
                        percentile(run.latencies_ms, 0.99), run.failures);
            std::fflush(stdout);
        }
    }
    server.stop();
    serving.join();
    std::error_code ignored;
    fs::remove_all(scratch, ignored);
    return 0;
}
