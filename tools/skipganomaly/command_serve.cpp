// skipganomaly serve: the HTTP scoring server (server.hpp) over one saved detector.
#include <iostream>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "skipganomaly/error.hpp"

#if SKIPGANOMALY_WITH_SERVER
#include <pthread.h>
#include <signal.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <iterator>
#include <thread>

#include "server.hpp"
#include "skipganomaly/detector.hpp"
#endif

namespace cli {
namespace {

const char* const serve_help = R"(usage: skipganomaly serve --model MODEL.safetensors [options]

Serves the detector over HTTP (docs/serving.md):
  POST /v1/score   an image body (PNG, JPEG or BMP), or multipart/form-data with one image per
                   part: {"score", "normalized_score", "is_anomaly", "threshold", ...}, for
                   multipart {"images": [...]} in the parts' order. ?output=mask or
                   ?output=overlay answers one image with the PNG (scores in X-Score,
                   X-Normalized-Score, X-Is-Anomaly, X-Threshold), several with base64 PNGs
  GET  /healthz    200 while serving, 503 once shutting down
  GET  /v1/model   architecture, recipe, thresholds, the model file's SHA-256
  GET  /metrics    Prometheus text: requests, errors, latency, images in flight
Errors are JSON {"error": "..."}: 400 a bad body, 401 no or a wrong token, 413 a body or
image over the limits, 429 too many requests in flight, 503 shutting down.
SIGTERM or SIGINT: finish the requests in flight, refuse the rest, exit 0 (a second one ends
the process at once).

options:
  --model PATH             model file (required)
  --host ADDRESS           address to listen on (default 127.0.0.1: this machine only;
                           0.0.0.0 for every interface)
  --port N                 port (default 8080; 0: any free port, printed at start)
  --token-file FILE        require "Authorization: Bearer <token>" on every endpoint but
                           /healthz, the token being FILE's first line; or set the environment
                           variable SKIPGANOMALY_TOKEN (default: no token)
  --max-body-bytes N       larger bodies are answered 413 (default 33554432, 32 MiB)
  --max-pixels N           images declaring more pixels are answered 413 before decoding
                           (default 16777216, 4096 x 4096)
  --max-in-flight N        score requests handled at once; beyond: 429 (default 16)
  --workers N              connections served at once, each on a thread while it is open
                           (default: max-in-flight + 8)
  --precision float32|bfloat16
                           the convolutions' arithmetic (default: the model's): bfloat16
                           where the processor has AVX512-BF16, else float32 (a warning says so)
  --device cpu|cuda|auto   where to score (default auto)
  --threads N              CPU threads for scoring (default: OMP_NUM_THREADS, else every core)
)";

const std::vector<OptionSpec> serve_options = {
    {"model"}, {"host"}, {"port"}, {"token-file"}, {"max-body-bytes"}, {"max-pixels"},
    {"max-in-flight"}, {"workers"}, {"device"}, {"precision"}, {"threads"},
};

#if SKIPGANOMALY_WITH_SERVER

// The token of --token-file (its first line, without trailing blanks) or SKIPGANOMALY_TOKEN;
// empty: none. Never an option's value, which any user could read in the process list.
std::string read_token(const ParsedArguments& a) {
    const char* from_environment = std::getenv("SKIPGANOMALY_TOKEN");
    const std::optional<std::string> file = a.get("token-file");
    if (file && from_environment && *from_environment)
        throw UsageError("the token comes from --token-file or SKIPGANOMALY_TOKEN, not both");
    std::string token;
    if (file) {
        std::ifstream in(*file, std::ios::binary);
        if (!in) throw sga::IoError("cannot read --token-file '" + *file + "': " + std::strerror(errno));
        std::getline(in, token);
    } else if (from_environment) {
        token = from_environment;
    }
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
    if (file && token.empty()) throw UsageError("--token-file '" + *file + "' holds no token on its first line");
    return token;
}

#endif

}  // namespace

int command_serve(const std::vector<std::string>& args) {
    const ParsedArguments a = parse_arguments(args, serve_options, false);
    if (a.help) {
        std::cout << serve_help;
        return 0;
    }
#if !SKIPGANOMALY_WITH_SERVER
    throw sga::Error(
        "this skipganomaly was built without its HTTP server, as cpp-httplib was not found: install it "
        "(Debian: apt install libcpp-httplib-dev, or scripts/setup.sh) and build again");
#else
    const std::string model_path = a.require("model");
    ServerOptions options;
    options.host = a.get("host").value_or(options.host);
    options.port = integer_option(a, "port", options.port, 0, 65535);
    options.max_body_bytes = static_cast<std::size_t>(
        a.get("max-body-bytes") ? parse_integer("max-body-bytes", *a.get("max-body-bytes"), 1, std::int64_t{1} << 40)
                                : static_cast<long long>(options.max_body_bytes));
    options.max_pixels = a.get("max-pixels") ? parse_integer("max-pixels", *a.get("max-pixels"), 1, sga::max_image_pixels)
                                             : options.max_pixels;
    options.max_in_flight = integer_option(a, "max-in-flight", options.max_in_flight, 1, 4096);
    options.workers = integer_option(a, "workers", options.max_in_flight + 8, 1, 8192);
    options.token = read_token(a);
    const sga::Device device = a.get("device") ? parse_device(*a.get("device")) : sga::Device::Auto;
    apply_threads(a);

    // SIGTERM and SIGINT go to the waiting thread below, not to a handler: blocked here, before
    // any other thread starts, so every thread (the library's included) inherits the mask.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    const ModelSource source = model_source(model_path);
    sga::Detector detector = sga::Detector::load(model_path, device);
    apply_precision(a, detector);
    ScoringServer server(detector, source, options);
    if (options.token.empty() && options.host != "127.0.0.1" && options.host != "localhost" && options.host != "::1")
        std::cerr << "warning: serving on " << options.host << " without a token: whoever reaches the port can use "
                  << "it (--token-file)\n";
    std::cerr << "skipganomaly serve: listening on http://" << options.host << ":" << server.port() << " (model "
              << source.file_name << ", sha256 " << source.sha256 << ")" << std::endl;

    std::thread([&server, stop_signals] {
        int received = 0;
        sigwait(&stop_signals, &received);
        std::cerr << "skipganomaly serve: " << strsignal(received)
                  << ": finishing the requests in flight, refusing new ones" << std::endl;
        server.stop();
        sigwait(&stop_signals, &received);
        // A second one ends the process at once, as the signal does by default.
        signal(received, SIG_DFL);
        pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
        raise(received);
    }).detach();
    server.run();
    std::cerr << "skipganomaly serve: stopped" << std::endl;
    return 0;
#endif
}

}  // namespace cli
