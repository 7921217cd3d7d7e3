// The command line of the skipganomaly tool: options, numbers, devices and data specs.
// Every mistake in them is a UsageError (exit code 2, with a hint to --help).
#pragma once

#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/model_options.hpp"

namespace cli {

// A mistake on the command line: printed with a hint to --help, exit code 2.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// One entry of a command's option table.
struct OptionSpec {
    std::string name;  // without the leading "--"
    bool takes_value = true;
};

struct ParsedArguments {
    std::map<std::string, std::string> values;
    std::set<std::string> flags;
    std::vector<std::string> positional;
    bool help = false;

    bool has(const std::string& name) const { return values.count(name) != 0 || flags.count(name) != 0; }
    std::optional<std::string> get(const std::string& name) const {
        const auto it = values.find(name);
        if (it == values.end()) return std::nullopt;
        return it->second;
    }
    std::string require(const std::string& name) const {
        const auto it = values.find(name);
        if (it == values.end()) throw UsageError("missing required option --" + name);
        return it->second;
    }
};

// "--name value" and "--name=value"; "--" ends the options; -h/--help anywhere asks for help.
// An option missing from `specs` is a UsageError, and so is a positional argument unless
// `allow_positional`.
ParsedArguments parse_arguments(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs,
                                bool allow_positional);

// `text` as an integer in [min, max]; `option` names it in the error.
long long parse_integer(const std::string& option, const std::string& text, long long min, long long max);
// `text` as a finite number; `option` names it in the error.
double parse_real(const std::string& option, const std::string& text);
// --name as an integer in [min, max], or `fallback` when it is absent.
int integer_option(const ParsedArguments& a, const std::string& name, int fallback, int min, int max);
// cpu, cuda or auto.
sga::Device parse_device(const std::string& text);
// --precision (or --NAME) float32|bfloat16, when given.
std::optional<sga::Precision> precision_option(const ParsedArguments& a, const std::string& name = "precision");
// --precision, when given, sets the detector's scoring precision; a warning on stderr when
// this processor runs another.
void apply_precision(const ParsedArguments& a, sga::Detector& detector);
// --threads N, when given, sets the library's CPU thread count.
void apply_threads(const ParsedArguments& a);

// --data KIND:...
struct DataSpec {
    std::string kind;               // folder, mvtec, anomalib, mnist, cifar10
    std::vector<std::string> parts; // what follows "kind:", split as the kind needs
};

// `labelled`: the command needs normal and anomalous images (eval, calibrate on labelled
// data), so folder:DIR is refused and anomalib takes NORMAL:ABNORMAL[:MASKS].
DataSpec parse_data_spec(const std::string& spec, bool labelled);

}  // namespace cli
