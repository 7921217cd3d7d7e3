// skipganomaly: the command-line tool.
//
//   skipganomaly demo                                   train on the bundled MNIST subset, report
//   skipganomaly fit   --data <spec> --out model.safetensors [options]
//   skipganomaly score --model model.safetensors [--heatmap DIR] IMAGE...
//   skipganomaly eval  --model model.safetensors --data <spec> [--plots DIR]
//   skipganomaly calibrate --model model.safetensors --data <spec> [--out other.safetensors]
//   skipganomaly serve --model model.safetensors [--port 8080]
//
// Exit codes: 0 success, 1 a library or I/O error ("error: ..."), 2 a usage error, 130 fit
// (or demo) interrupted by Ctrl-C (what it saved, if anything, is said on stderr).
//
// This file dispatches; each command lives in command_<name>.cpp with its help text and
// option table, the option parser in arguments.cpp.
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "safe_file.hpp"
#include "skipganomaly/config.hpp"
#include "skipganomaly/device.hpp"

namespace cli {
namespace {

const char* const main_help = R"(usage: skipganomaly COMMAND [options]

Skip-GANomaly image anomaly detection.

commands:
  demo    train on the bundled MNIST subset and report AUROC, heat maps and plots
  fit     train a detector on normal images and save it
  score   score images with a saved detector (one JSON line per image)
  eval    measure a saved detector on a labelled data set
  calibrate  set a saved detector's threshold from normal (or labelled) images
  serve   score images sent over HTTP (POST /v1/score), with health, model and metrics endpoints

skipganomaly COMMAND --help describes each command. skipganomaly --version prints the version.
)";

int run(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::cerr << main_help;
        return 2;
    }
    const std::string command = args.front();
    args.erase(args.begin());
    if (command == "-h" || command == "--help" || command == "help") {
        std::cout << main_help;
        return 0;
    }
    if (command == "--version") {
        std::cout << "skipganomaly " << SKIPGANOMALY_VERSION_STRING << " (CUDA backend "
                  << (SKIPGANOMALY_WITH_CUDA ? "built" : "not built") << ")\n"
                  << "CPU kernels: float32"
                  << (sga::cpu_bf16_available() ? ", bfloat16 (AVX512-BF16)"
                                                : "; bfloat16 unavailable (no AVX512-BF16 here, or SKIPGANOMALY_DISABLE_BF16 is set): --precision bfloat16 runs float32")
                  << "\n";
        return 0;
    }
    if (command == "fit") return command_fit(args);
    if (command == "score") return command_score(args);
    if (command == "eval") return command_eval(args);
    if (command == "demo") return command_demo(args);
    if (command == "calibrate") return command_calibrate(args);
    if (command == "serve") return command_serve(args);
    throw UsageError("unknown command '" + command + "' (expected demo, fit, score, eval, calibrate or serve)");
}

}  // namespace
}  // namespace cli

int main(int argc, char** argv) {
    // A fatal signal (SIGTERM, SIGHUP, SIGINT outside training, ...) unlinks the temporary file
    // of a write in flight before the process ends; a write beyond `ulimit -f` becomes an
    // IoError (SIGXFSZ ignored) instead of killing the process mid-write.
    sga::safe_file::install_temporary_cleanup_on_signals();
    try {
        return cli::run(argc, argv);
    } catch (const cli::UsageError& e) {
        std::cerr << "error: " << e.what() << "\n(see skipganomaly --help, or skipganomaly COMMAND --help)\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
