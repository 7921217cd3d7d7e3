#include "arguments.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <iostream>
#include <sstream>
#include <system_error>

namespace cli {

ParsedArguments parse_arguments(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs,
                                bool allow_positional) {
    ParsedArguments parsed;
    bool options_ended = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (options_ended || arg.size() < 2 || arg[0] != '-' || arg == "-") {
            if (!allow_positional) throw UsageError("unexpected argument '" + arg + "'");
            parsed.positional.push_back(arg);
            continue;
        }
        if (arg == "--") {
            options_ended = true;
            continue;
        }
        if (arg == "-h" || arg == "--help") {
            parsed.help = true;
            continue;
        }
        if (arg.rfind("--", 0) != 0) throw UsageError("unknown option '" + arg + "'");
        std::string name = arg.substr(2);
        std::optional<std::string> inline_value;
        if (const std::size_t eq = name.find('='); eq != std::string::npos) {
            inline_value = name.substr(eq + 1);
            name = name.substr(0, eq);
        }
        const auto spec = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.name == name; });
        if (spec == specs.end()) throw UsageError("unknown option '--" + name + "'");
        if (!spec->takes_value) {
            if (inline_value) throw UsageError("option --" + name + " takes no value");
            parsed.flags.insert(name);
            continue;
        }
        if (parsed.values.count(name)) throw UsageError("option --" + name + " given more than once");
        if (inline_value) {
            parsed.values[name] = *inline_value;
        } else {
            if (i + 1 >= args.size()) throw UsageError("option --" + name + " needs a value");
            parsed.values[name] = args[++i];
        }
    }
    return parsed;
}

long long parse_integer(const std::string& option, const std::string& text, long long min, long long max) {
    long long value = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc() || ptr != end)
        throw UsageError("--" + option + " expects an integer, found '" + text + "'");
    if (value < min || value > max)
        throw UsageError("--" + option + " must lie in [" + std::to_string(min) + ", " + std::to_string(max) +
                         "], found " + text);
    return value;
}

double parse_real(const std::string& option, const std::string& text) {
    double value = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc() || ptr != end || !std::isfinite(value))
        throw UsageError("--" + option + " expects a number, found '" + text + "'");
    return value;
}

int integer_option(const ParsedArguments& a, const std::string& name, int fallback, int min, int max) {
    const std::optional<std::string> text = a.get(name);
    return text ? static_cast<int>(parse_integer(name, *text, min, max)) : fallback;
}

sga::Device parse_device(const std::string& text) {
    if (text == "cpu") return sga::Device::Cpu;
    if (text == "cuda") return sga::Device::Cuda;
    if (text == "auto") return sga::Device::Auto;
    throw UsageError("--device expects cpu, cuda or auto, found '" + text + "'");
}

std::optional<sga::Precision> precision_option(const ParsedArguments& a, const std::string& name) {
    const std::optional<std::string> text = a.get(name);
    if (!text) return std::nullopt;
    if (*text == "float32") return sga::Precision::Float32;
    if (*text == "bfloat16") return sga::Precision::BFloat16;
    throw UsageError("--" + name + " expects float32 or bfloat16, found '" + *text + "'");
}

void apply_precision(const ParsedArguments& a, sga::Detector& detector) {
    const std::optional<sga::Precision> precision = precision_option(a);
    if (!precision) return;
    detector.set_precision(*precision);
    if (detector.active_precision() != *precision)
        std::cerr << "warning: --precision " << sga::precision_name(*precision) << " is not available here ("
                  << (detector.device() == sga::Device::Cpu ? "this processor has no AVX512-BF16" : "CPU only")
                  << "); scoring in " << sga::precision_name(detector.active_precision()) << '\n';
}

void apply_threads(const ParsedArguments& a) {
    if (const auto text = a.get("threads")) sga::set_cpu_threads(static_cast<int>(parse_integer("threads", *text, 1, 4096)));
}

DataSpec parse_data_spec(const std::string& spec, bool labelled) {
    const std::size_t colon = spec.find(':');
    if (colon == std::string::npos || colon + 1 >= spec.size())
        throw UsageError("--data expects KIND:..., found '" + spec + "'");
    DataSpec d{spec.substr(0, colon), {}};
    const std::string rest = spec.substr(colon + 1);
    if (d.kind == "folder" || d.kind == "mvtec") {
        if (d.kind == "folder" && labelled)
            throw UsageError("folder:DIR has no labels; eval takes mvtec:ROOT, anomalib:NORMAL:ABNORMAL[:MASKS], "
                             "mnist:DIR:DIGIT or cifar10:DIR:CLASS");
        d.parts = {rest};
    } else if (d.kind == "mnist") {
        const std::size_t last = rest.rfind(':');
        if (last == std::string::npos || last == 0 || last + 1 >= rest.size())
            throw UsageError("mnist data expects mnist:DIR:DIGIT, found '" + spec + "'");
        const std::string digit = rest.substr(last + 1);
        if (digit.size() != 1 || digit[0] < '0' || digit[0] > '9')
            throw UsageError("the DIGIT of mnist:DIR:DIGIT must be 0..9, found '" + digit + "'");
        d.parts = {rest.substr(0, last), digit};
    } else if (d.kind == "cifar10") {
        const std::size_t last = rest.rfind(':');
        if (last == std::string::npos || last == 0 || last + 1 >= rest.size())
            throw UsageError("cifar10 data expects cifar10:DIR:CLASS, found '" + spec + "'");
        const std::string name = rest.substr(last + 1);
        static const char* const classes[] = {"airplane", "automobile", "bird", "cat", "deer",
                                              "dog", "frog", "horse", "ship", "truck"};
        std::string index;
        for (int c = 0; c < 10; ++c)
            if (name == classes[c] || name == std::to_string(c)) index = std::to_string(c);
        if (index.empty())
            throw UsageError("the CLASS of cifar10:DIR:CLASS must be 0..9 or a class name (airplane, automobile, bird, "
                             "cat, deer, dog, frog, horse, ship, truck), found '" + name + "'");
        d.parts = {rest.substr(0, last), index};
    } else if (d.kind == "anomalib") {
        std::stringstream stream(rest);
        for (std::string piece; std::getline(stream, piece, ':');) d.parts.push_back(piece);
        const std::size_t min_parts = labelled ? 2 : 1, max_parts = labelled ? 3 : 1;
        if (d.parts.size() < min_parts || d.parts.size() > max_parts ||
            std::any_of(d.parts.begin(), d.parts.end(), [](const std::string& p) { return p.empty(); }))
            throw UsageError(labelled ? "anomalib data expects anomalib:NORMAL_DIR:ABNORMAL_DIR[:MASK_DIR], found '" + spec + "'"
                                      : "anomalib data expects anomalib:NORMAL_DIR for fit, found '" + spec + "'");
    } else {
        throw UsageError("unknown data kind '" + d.kind + "' (expected folder, mvtec, anomalib, mnist or cifar10)");
    }
    return d;
}

}  // namespace cli
