// Layers: named slices of a ParameterBlock plus a forward that records on a tape.
#pragma once

#include <string>

#include "skipganomaly/parameters.hpp"

namespace sga {

struct Conv2d {
    int weight = -1;  // (Cout, Cin, K, K)
    int bias = -1;    // (Cout) or -1
    std::int64_t stride = 1, padding = 0;

    static Conv2d declare(ParameterBlock& params, const std::string& prefix, std::int64_t in_channels,
                          std::int64_t out_channels, std::int64_t kernel, std::int64_t stride, std::int64_t padding,
                          bool with_bias) {
        Conv2d layer;
        layer.weight = params.add(prefix + "weight", {out_channels, in_channels, kernel, kernel});
        if (with_bias) layer.bias = params.add(prefix + "bias", {out_channels});
        layer.stride = stride;
        layer.padding = padding;
        return layer;
    }
    Var operator()(Tape& tape, const ParameterBlock& params, Var input) const {
        std::optional<Var> b;
        if (bias >= 0) b = params.bind(tape, bias);
        return ops::conv2d(input, params.bind(tape, weight), b, stride, padding);
    }
};

struct ConvTranspose2d {
    int weight = -1;  // (Cin, Cout, K, K), PyTorch's layout
    int bias = -1;    // (Cout) or -1
    std::int64_t stride = 1, padding = 0;

    static ConvTranspose2d declare(ParameterBlock& params, const std::string& prefix, std::int64_t in_channels,
                                   std::int64_t out_channels, std::int64_t kernel, std::int64_t stride,
                                   std::int64_t padding, bool with_bias) {
        ConvTranspose2d layer;
        layer.weight = params.add(prefix + "weight", {in_channels, out_channels, kernel, kernel});
        if (with_bias) layer.bias = params.add(prefix + "bias", {out_channels});
        layer.stride = stride;
        layer.padding = padding;
        return layer;
    }
    Var operator()(Tape& tape, const ParameterBlock& params, Var input) const {
        std::optional<Var> b;
        if (bias >= 0) b = params.bind(tape, bias);
        return ops::conv_transpose2d(input, params.bind(tape, weight), b, stride, padding);
    }
};

// How a network's batch-norm layers normalise.
enum class BatchNormMode {
    Training,           // batch statistics; running statistics updated (a training forward)
    BatchStatistics,    // batch statistics; running statistics untouched (official train-mode scoring)
    RunningStatistics,  // running statistics (inference; our default scoring)
};

struct BatchNorm2d {
    int weight = -1, bias = -1;               // trainable, (C) each
    int running_mean = -1, running_var = -1;  // in the statistics block, (C) each
    float momentum = 0.1f, epsilon = 1e-5f;

    static BatchNorm2d declare(ParameterBlock& params, ParameterBlock& statistics, const std::string& prefix,
                               std::int64_t channels) {
        BatchNorm2d layer;
        layer.weight = params.add(prefix + "weight", {channels});
        layer.bias = params.add(prefix + "bias", {channels});
        layer.running_mean = statistics.add(prefix + "running_mean", {channels});
        layer.running_var = statistics.add(prefix + "running_var", {channels});
        return layer;
    }
    Var operator()(Tape& tape, const ParameterBlock& params, const ParameterBlock& statistics, Var input,
                   BatchNormMode mode, ops::Input after = ops::Input::Kept) const {
        ops::BatchNormState state{{}, {}, momentum, epsilon};
        if (mode != BatchNormMode::BatchStatistics) {
            state.running_mean = statistics.value(running_mean);
            state.running_var = statistics.value(running_var);
        }
        return ops::batch_norm(input, params.bind(tape, weight), params.bind(tape, bias), state,
                               mode != BatchNormMode::RunningStatistics, after);
    }
};

}  // namespace sga
