// Layers: named slices of a ParameterBlock plus a forward that records on a tape.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "skipganomaly/engine/parameters.hpp"

namespace sga {

// A convolution prepared once for scoring (kernels.def: conv2d_pack_weight, conv2d_packed).
// At batch 1, Eigen's GEMM spent about half of scoring packing the weights again on every
// call (docs/benchmarks.md); the prepared kernels stream the weight as it lies, and only a
// layer some of whose taps read nothing but padding keeps a compact copy of the others. A
// snapshot of the weight: whoever changes the weights discards it (Network::packed).
struct PackedConvolution {
    // The prepared kernels serve products of up to this many rows (batch x the convolution's
    // output positions). Measured with bench_conv2d_cpu .../scoring1/, .../scoring4/, 2 threads,
    // against the per-call path (Eigen's GEMM, or the skinny kernels): they win 1.3-10x at 1-16
    // rows, where the weight dominates; at 16-64 rows, in both passes (G encoder2 at batch 1:
    // 0.13 against 0.15 ms; G encoder3 at four views: 0.37-0.39 against 0.49; G decoder4 at
    // batch 1: 0.13-0.16 against 0.22-0.25; G decoder3 at four views: 0.52-0.54 against
    // 0.87-1.00). Beyond 64 rows an image the model has G encoder1, D conv1-2 and G decoder5,
    // where Eigen's GEMM stays ahead (encoder1, K = 48: 0.027-0.036 against 0.017-0.021 ms;
    // decoder5, 48 columns, most of them past the kernels' last whole group of 32 and summed one
    // at a time: 0.28 against 0.03).
    static constexpr std::int64_t max_rows(ConvPass) { return 64; }

    ConvGeometry geometry;  // batch 0: any batch of this geometry
    ConvPass pass = ConvPass::Forward;
    Tensor packed;
    // The weight in bfloat16 (kernels::conv2d_pack_weight_bf16) when packed for
    // Precision::BFloat16 on a processor that runs it; empty otherwise. With it, every batch
    // of this geometry runs in bfloat16.
    std::vector<std::uint32_t> bf16;

    static PackedConvolution pack(Context& ctx, ConvGeometry g, ConvPass pass, const float* weight,
                                  Precision precision = Precision::Float32) {
        g.batch = 0;
        PackedConvolution p{g, pass, Tensor({kernels::conv2d_packed_floats(ctx.device(), g, pass)}, ctx.device()), {}};
        kernels::conv2d_pack_weight(ctx, g, pass, weight, p.packed.data());
        if (precision == Precision::BFloat16 && kernels::bf16_available(ctx.device())) {
            p.bf16.resize(static_cast<std::size_t>(kernels::conv2d_bf16_packed_words(ctx.device(), g, pass)));
            kernels::conv2d_pack_weight_bf16(ctx, g, pass, weight, p.bf16.data());
        }
        return p;
    }
    // Whether this packing computes convolution g, at g's batch, in float32 / in bfloat16.
    bool serves(const ConvGeometry& g) const {
        return same_convolution(g) && g.batch * g.out_height * g.out_width <= max_rows(pass);
    }
    bool serves_bf16(const ConvGeometry& g) const { return !bf16.empty() && same_convolution(g); }

private:
    bool same_convolution(const ConvGeometry& g) const {
        const ConvGeometry& p = geometry;
        return g.in_channels == p.in_channels && g.in_height == p.in_height && g.in_width == p.in_width &&
               g.out_channels == p.out_channels && g.out_height == p.out_height && g.out_width == p.out_width &&
               g.kernel_height == p.kernel_height && g.kernel_width == p.kernel_width && g.stride == p.stride &&
               g.padding == p.padding;
    }
};

namespace detail {
// Whether a layer's output needs no gradient, so that a packed weight may compute it.
inline bool inference_only(const Tape& tape, Var input, Var weight, const std::optional<Var>& bias) {
    return !tape.requires_grad(input) && !tape.requires_grad(weight) && (!bias || !tape.requires_grad(*bias));
}

// A convolution (geometry g, the whole batch's) computed without a gradient: in bfloat16 when
// `packed` holds a bfloat16 weight; by the prepared kernel when `packed` serves one unit of the
// tape's independent units (in both, every result is one row's sum in a fixed order, so the
// whole batch runs as one product and each unit gets the bits it gets alone, while the weight
// is read once for all), else once per unit when there are several (Tape::independent_units);
// nullopt: the plain op.
inline std::optional<Var> inference_convolution(Var input, Var weight, const std::optional<Var>& bias,
                                                const ConvGeometry& g, ConvPass pass, const PackedConvolution* packed) {
    const std::int64_t units = input.tape->independent_units();
    SGA_CHECK_ARGUMENT(g.batch % units == 0, "a batch of " + std::to_string(g.batch) + " does not divide into " +
                                                 std::to_string(units) + " independent units");
    ConvGeometry unit = g;
    unit.batch = g.batch / units;
    if (packed && packed->serves_bf16(g)) return ops::packed_convolution_bf16(input, packed->bf16.data(), g, pass, bias);
    if (packed && packed->serves(unit)) return ops::packed_convolution(input, weight, packed->packed.data(), g, pass, bias);
    if (units > 1) return ops::convolution_per_unit(input, weight, bias, g, pass, units);
    return std::nullopt;
}
}  // namespace detail

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
    // The weight packed for square inputs of input_size x input_size.
    PackedConvolution pack(Context& ctx, const ParameterBlock& params, std::int64_t input_size, Precision precision) const {
        const TensorView w = params.value(weight);
        const ConvGeometry g = ops::conv2d_geometry({1, w.shape()[1], input_size, input_size}, w.shape(), stride, padding);
        return PackedConvolution::pack(ctx, g, ConvPass::Forward, w.data(), precision);
    }
    // Without a gradient: `packed` (optional) computes the output when it serves the geometry
    // (detail::inference_convolution).
    Var operator()(Tape& tape, const ParameterBlock& params, Var input, const PackedConvolution* packed = nullptr) const {
        std::optional<Var> b;
        if (bias >= 0) b = params.bind(tape, bias);
        const Var w = params.bind(tape, weight);
        if (detail::inference_only(tape, input, w, b)) {
            const ConvGeometry g = ops::conv2d_geometry(input.shape(), w.shape(), stride, padding);
            if (std::optional<Var> out = detail::inference_convolution(input, w, b, g, ConvPass::Forward, packed)) return *out;
        }
        return ops::conv2d(input, w, b, stride, padding);
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
    // The weight packed for square inputs of input_size x input_size.
    PackedConvolution pack(Context& ctx, const ParameterBlock& params, std::int64_t input_size, Precision precision) const {
        const TensorView w = params.value(weight);
        const ConvGeometry g =
            ops::conv_transpose2d_geometry({1, w.shape()[0], input_size, input_size}, w.shape(), stride, padding);
        return PackedConvolution::pack(ctx, g, ConvPass::BackwardData, w.data(), precision);
    }
    // Without a gradient: `packed` (optional) computes the output when it serves the geometry
    // (detail::inference_convolution).
    Var operator()(Tape& tape, const ParameterBlock& params, Var input, const PackedConvolution* packed = nullptr) const {
        std::optional<Var> b;
        if (bias >= 0) b = params.bind(tape, bias);
        const Var w = params.bind(tape, weight);
        if (detail::inference_only(tape, input, w, b)) {
            const ConvGeometry g = ops::conv_transpose2d_geometry(input.shape(), w.shape(), stride, padding);
            if (std::optional<Var> out = detail::inference_convolution(input, w, b, g, ConvPass::BackwardData, packed))
                return *out;
        }
        return ops::conv_transpose2d(input, w, b, stride, padding);
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
