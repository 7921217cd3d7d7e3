// Reverse-mode automatic differentiation on a tape.
//
// Ops run their forward kernels eagerly and append a node holding the output and a
// backward rule written in terms of kernels (so every backend gets autodiff for free).
// Values and intermediate gradients live in the context's arena: the owner of the tape
// resets tape and arena together at step boundaries. A backward pass hands the gradient
// buffer of each node whose rule has run on to earlier nodes, so only the gradients still
// to be propagated are live at once; a later backward pass on the same tape starts from the
// buffers of the earlier ones. Parameter gradients live in the
// parameter blocks and accumulate across backward passes until zeroed explicitly.
#pragma once

#include <functional>
#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

#include "skipganomaly/engine/kernels.hpp"

namespace sga {

class Tape;

// A handle to a node of a tape.
struct Var {
    Tape* tape = nullptr;
    int index = -1;

    TensorView value() const;
    Shape shape() const { return value().shape(); }
};

class Tape {
public:
    // Runs the backward rule of `node`: it reads tape.grad(node) and accumulates into the
    // gradients of those inputs for which tape.requires_grad(input) holds.
    using BackwardRule = std::function<void(Tape& tape, int node)>;

    explicit Tape(Context& ctx) : ctx_(ctx) { nodes_.reserve(256); }
    Tape(const Tape&) = delete;
    Tape& operator=(const Tape&) = delete;

    Context& context() const { return ctx_; }

    // A value that receives no gradient.
    Var constant(TensorView value) { return push(Node{value, {}, false, false, nullptr}); }
    // A leaf whose gradient accumulates into `grad` (same shape and device), typically a
    // slice of a ParameterBlock's gradient buffer.
    Var parameter(TensorView value, TensorView grad) {
        SGA_CHECK_ARGUMENT(value.shape() == grad.shape(), "parameter gradient shape must match its value");
        return push(Node{value, grad, grad_enabled_, true, nullptr});
    }
    // The output of an op. It requires a gradient when any input does and gradients are on.
    Var record(TensorView value, std::initializer_list<Var> inputs, BackwardRule rule) {
        bool needs = false;
        if (grad_enabled_)
            for (Var input : inputs) needs = needs || requires_grad(input);
        return push(Node{value, {}, needs, false, needs ? std::move(rule) : nullptr});
    }

    TensorView value(Var v) const { return node(v).value; }
    bool requires_grad(Var v) const {
        const Node& n = node(v);
        return n.requires_grad && !n.blocked;
    }
    // The gradient buffer of `v`, zeroed on first use: during backward() a buffer that an
    // earlier node has finished with, otherwise new memory from the arena.
    TensorView grad(Var v) {
        Node& n = node(v);
        if (n.grad.empty()) {
            n.grad = reuse_or_allocate(n.value.shape());
            kernels::fill(ctx_, n.grad.numel(), 0.0f, n.grad.data());
        }
        return n.grad;
    }
    TensorView grad(int index) { return grad(Var{this, index}); }
    // Allocates an output for an op from the arena.
    TensorView allocate(Shape shape) { return ctx_.arena().tensor(shape); }

    // Back-propagates from the scalar `loss` (d loss/d loss = 1). Nodes in `stop_at` take
    // no gradient and pass none on: the way to send a loss into one network only, as the
    // official training does with its discriminator loss. Gradients of intermediate nodes
    // from any earlier backward pass are discarded first, and their buffers serve this pass
    // (a training step's discriminator backward runs in the generator backward's memory).
    void backward(Var loss, std::initializer_list<Var> stop_at = {}) {
        SGA_CHECK_ARGUMENT(loss.tape == this, "backward: the loss belongs to another tape");
        SGA_CHECK_ARGUMENT(loss.value().numel() == 1, "backward: the loss must be a scalar, found shape " +
                                                          loss.value().shape().str());
        for (Node& n : nodes_)
            if (!n.is_parameter && !n.grad.empty()) {
                finished_grads_.push_back(n.grad);
                n.grad = {};
            }
        for (Var v : stop_at) node(v).blocked = true;
        if (requires_grad(loss)) {
            kernels::fill(ctx_, 1, 1.0f, grad(loss).data());
            for (int i = loss.index; i >= 0; --i) {
                Node& n = nodes_[static_cast<std::size_t>(i)];
                if (n.rule && !n.grad.empty() && !n.blocked) {
                    n.rule(*this, i);
                    // Every consumer of node i comes later on the tape and has run, and only
                    // node i's rule reads its gradient: the buffer can serve an earlier node.
                    finished_grads_.push_back(n.grad);
                    n.grad = {};
                }
            }
        }
        for (Var v : stop_at) node(v).blocked = false;
    }

    // Forgets every node, and the gradient buffers kept for the next backward. Values stay
    // valid until the owner resets the arena.
    void clear() {
        nodes_.clear();
        finished_grads_.clear();
    }
    std::size_t size() const { return nodes_.size(); }

    bool grad_enabled() const { return grad_enabled_; }
    void set_grad_enabled(bool enabled) { grad_enabled_ = enabled; }

    // How many independent units of equal size every batch on this tape is made of (1: one
    // batch). While it is above 1 (IndependentUnitsGuard), each convolution gives every unit
    // the bits it would get alone (layers.hpp), so that independent callers' images scored in
    // one pass get their lone scores exactly (SkipGanomaly::score_independent).
    std::int64_t independent_units() const { return independent_units_; }
    void set_independent_units(std::int64_t units) {
        SGA_CHECK_ARGUMENT(units >= 1, "independent_units must be at least 1");
        independent_units_ = units;
    }

    // The arithmetic of the convolutions recorded from now on (ops::conv2d, conv_transpose2d),
    // in all three passes: Float32, or BFloat16 (operands rounded to bfloat16, sums in float32)
    // where the device runs it (kernels::bf16_available), float32 elsewhere. Everything else on
    // the tape stays float32.
    Precision convolution_precision() const { return convolution_precision_; }
    void set_convolution_precision(Precision precision) { convolution_precision_ = precision; }

private:
    struct Node {
        TensorView value;
        TensorView grad;
        bool requires_grad;
        bool is_parameter;
        BackwardRule rule;
        bool blocked = false;
    };
    // The smallest finished gradient buffer that holds `shape`, or new arena memory.
    TensorView reuse_or_allocate(const Shape& shape) {
        std::size_t best = finished_grads_.size();
        for (std::size_t k = 0; k < finished_grads_.size(); ++k)
            if (finished_grads_[k].numel() >= shape.numel() &&
                (best == finished_grads_.size() || finished_grads_[k].numel() < finished_grads_[best].numel()))
                best = k;
        if (best == finished_grads_.size()) return ctx_.arena().tensor(shape);
        const TensorView reused{finished_grads_[best].data(), shape, finished_grads_[best].device()};
        finished_grads_.erase(finished_grads_.begin() + static_cast<std::ptrdiff_t>(best));
        return reused;
    }
    Var push(Node n) {
        nodes_.push_back(std::move(n));
        return Var{this, static_cast<int>(nodes_.size()) - 1};
    }
    Node& node(Var v) {
        SGA_CHECK_ARGUMENT(v.tape == this && v.index >= 0 && v.index < static_cast<int>(nodes_.size()),
                           "variable does not belong to this tape");
        return nodes_[static_cast<std::size_t>(v.index)];
    }
    const Node& node(Var v) const { return const_cast<Tape*>(this)->node(v); }

    Context& ctx_;
    std::vector<Node> nodes_;
    bool grad_enabled_ = true;
    std::int64_t independent_units_ = 1;
    Precision convolution_precision_ = Precision::Float32;
    // Gradient buffers that no node reads any more: those of nodes whose rule has run, and
    // those of an earlier backward pass. Arena memory allocated since the last clear(): the
    // owner resets tape and arena together, so it is never stale.
    std::vector<TensorView> finished_grads_;
};

inline TensorView Var::value() const { return tape->value(*this); }

// Turns gradient recording off for its lifetime (inference).
class NoGradGuard {
public:
    explicit NoGradGuard(Tape& tape) : tape_(tape), previous_(tape.grad_enabled()) { tape.set_grad_enabled(false); }
    ~NoGradGuard() { tape_.set_grad_enabled(previous_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    Tape& tape_;
    bool previous_;
};

// Declares every batch on the tape to be `units` independent units of equal size for its
// lifetime (Tape::independent_units).
class IndependentUnitsGuard {
public:
    IndependentUnitsGuard(Tape& tape, std::int64_t units) : tape_(tape), previous_(tape.independent_units()) {
        tape.set_independent_units(units);
    }
    ~IndependentUnitsGuard() { tape_.set_independent_units(previous_); }
    IndependentUnitsGuard(const IndependentUnitsGuard&) = delete;
    IndependentUnitsGuard& operator=(const IndependentUnitsGuard&) = delete;

private:
    Tape& tape_;
    std::int64_t previous_;
};

// Reads a scalar (1-element) value back to the host, on the stream of the tape's context
// (so concurrent CUDA contexts do not wait for each other).
inline float item(Var v) {
    SGA_CHECK_ARGUMENT(v.value().numel() == 1, "item: expected a scalar, found shape " + v.value().shape().str());
    float result = 0.0f;
    copy_bytes(v.tape->context(), &result, Device::Cpu, v.value().data(), v.value().device(), sizeof(float));
    return result;
}

// ---- ops --------------------------------------------------------------------------------
namespace ops {

// What the caller of an elementwise op promises about its input. Dead: nothing reads the
// input after the op. Then, while the tape records no gradient (backward would need the
// input), the op writes its result over the input instead of taking new memory, so an
// inference pass keeps one buffer per layer instead of one per op.
enum class Input { Kept, Dead };

namespace detail {
inline TensorView elementwise_output(Var input, Input after) {
    Tape& tape = *input.tape;
    return after == Input::Dead && !tape.grad_enabled() ? input.value() : tape.allocate(input.shape());
}
inline void require_rank4(Var v, const char* op) {
    SGA_CHECK_ARGUMENT(v.shape().rank() == 4, std::string(op) + ": expected an (N, C, H, W) tensor, found " + v.shape().str());
}
inline void require_same_shape(Var a, Var b, const char* op) {
    SGA_CHECK_ARGUMENT(a.shape() == b.shape(), std::string(op) + ": shapes " + a.shape().str() + " and " +
                                                   b.shape().str() + " differ");
}
}  // namespace detail

// The geometry of conv2d on input shape x (N, Cin, H, W) with weight shape w (Cout, Cin, K, K).
inline ConvGeometry conv2d_geometry(const Shape& x, const Shape& w, std::int64_t stride, std::int64_t padding) {
    SGA_CHECK_ARGUMENT(w[1] == x[1], "conv2d: input has " + std::to_string(x[1]) + " channels, weight expects " +
                                         std::to_string(w[1]));
    ConvGeometry g;
    g.batch = x[0];
    g.in_channels = x[1], g.in_height = x[2], g.in_width = x[3];
    g.out_channels = w[0], g.kernel_height = w[2], g.kernel_width = w[3];
    g.stride = stride, g.padding = padding;
    g.out_height = ConvGeometry::output_extent(x[2], w[2], stride, padding);
    g.out_width = ConvGeometry::output_extent(x[3], w[3], stride, padding);
    SGA_CHECK_ARGUMENT(g.out_height > 0 && g.out_width > 0, "conv2d: input " + x.str() + " is smaller than the kernel");
    return g;
}

// The geometry of the convolution that conv_transpose2d on input shape x (N, Cin, H, W) with
// weight shape w (Cin, Cout, K, K) transposes: that convolution's output is our input.
inline ConvGeometry conv_transpose2d_geometry(const Shape& x, const Shape& w, std::int64_t stride, std::int64_t padding) {
    SGA_CHECK_ARGUMENT(w[0] == x[1], "conv_transpose2d: input has " + std::to_string(x[1]) +
                                         " channels, weight expects " + std::to_string(w[0]));
    ConvGeometry g;
    g.batch = x[0];
    g.out_channels = x[1], g.out_height = x[2], g.out_width = x[3];
    g.in_channels = w[1], g.kernel_height = w[2], g.kernel_width = w[3];
    g.stride = stride, g.padding = padding;
    g.in_height = (x[2] - 1) * stride - 2 * padding + w[2];
    g.in_width = (x[3] - 1) * stride - 2 * padding + w[3];
    SGA_CHECK_ARGUMENT(g.in_height > 0 && g.in_width > 0, "conv_transpose2d: output would be empty");
    return g;
}

namespace detail {
// Whether the tape's convolutions run in bfloat16 (Tape::convolution_precision).
inline bool bf16_convolutions(const Tape& tape) {
    return tape.convolution_precision() == Precision::BFloat16 && kernels::bf16_available(tape.context().device());
}
// output = result + beta * output, the result being `pass` of `input` and `weight` in bfloat16,
// the weight packed for this one call (training changes it every step). `output` must be
// allocated before: the packing's scratch is released on return.
inline void bf16_convolution(Context& ctx, const ConvGeometry& g, ConvPass pass, const float* input,
                             const float* weight, float* output, float beta) {
    Arena::Scope scratch(ctx.arena());
    const auto words = static_cast<std::size_t>(kernels::conv2d_bf16_packed_words(ctx.device(), g, pass));
    auto* packed = reinterpret_cast<std::uint32_t*>(ctx.arena().allocate_floats(words));
    kernels::conv2d_pack_weight_bf16(ctx, g, pass, weight, packed);
    kernels::conv2d_packed_bf16(ctx, g, pass, input, packed, output, beta);
}
}  // namespace detail

// input (N, Cin, H, W), weight (Cout, Cin, K, K), bias (Cout) -> (N, Cout, OH, OW).
inline Var conv2d(Var input, Var weight, std::optional<Var> bias, std::int64_t stride, std::int64_t padding) {
    detail::require_rank4(input, "conv2d");
    detail::require_rank4(weight, "conv2d weight");
    const ConvGeometry g = conv2d_geometry(input.shape(), weight.shape(), stride, padding);
    Tape& tape = *input.tape;
    Context& ctx = tape.context();
    const bool bf16 = detail::bf16_convolutions(tape);
    TensorView out = tape.allocate({g.batch, g.out_channels, g.out_height, g.out_width});
    if (bf16)
        detail::bf16_convolution(ctx, g, ConvPass::Forward, input.value().data(), weight.value().data(), out.data(), 0.0f);
    else
        kernels::conv2d_forward(ctx, g, input.value().data(), weight.value().data(), out.data(), 0.0f);
    const std::int64_t spatial = g.out_height * g.out_width;
    if (bias) kernels::add_channel_bias(ctx, g.batch, g.out_channels, spatial, bias->value().data(), out.data());
    auto rule = [g, input, weight, bias, spatial, bf16](Tape& t, int self) {
        Context& c = t.context();
        const float* dy = t.grad(self).data();
        const float* x = input.value().data();
        const float* w = weight.value().data();
        if (t.requires_grad(input)) {
            float* dx = t.grad(input).data();
            if (bf16)
                detail::bf16_convolution(c, g, ConvPass::BackwardData, dy, w, dx, 1.0f);
            else
                kernels::conv2d_backward_data(c, g, dy, w, dx, 1.0f);
        }
        if (t.requires_grad(weight)) {
            float* dw = t.grad(weight).data();
            if (bf16)
                kernels::conv2d_backward_filter_bf16(c, g, x, dy, dw, 1.0f);
            else
                kernels::conv2d_backward_filter(c, g, x, dy, dw, 1.0f);
        }
        if (bias && t.requires_grad(*bias))
            kernels::add_channel_bias_backward(c, g.batch, g.out_channels, spatial, dy, t.grad(*bias).data());
    };
    if (bias) return tape.record(out, {input, weight, *bias}, rule);
    return tape.record(out, {input, weight}, rule);
}

// Transposed convolution: input (N, Cin, H, W), weight (Cin, Cout, K, K) as in PyTorch,
// bias (Cout) -> (N, Cout, (H-1)*stride - 2*padding + K, ...). Its forward is convolution's
// backward-data, its input gradient convolution's forward, its weight gradient
// convolution's backward-filter with the roles of input and output exchanged.
inline Var conv_transpose2d(Var input, Var weight, std::optional<Var> bias, std::int64_t stride, std::int64_t padding) {
    detail::require_rank4(input, "conv_transpose2d");
    detail::require_rank4(weight, "conv_transpose2d weight");
    const ConvGeometry g = conv_transpose2d_geometry(input.shape(), weight.shape(), stride, padding);
    Tape& tape = *input.tape;
    Context& ctx = tape.context();
    const bool bf16 = detail::bf16_convolutions(tape);
    TensorView out = tape.allocate({g.batch, g.in_channels, g.in_height, g.in_width});
    if (bf16)
        detail::bf16_convolution(ctx, g, ConvPass::BackwardData, input.value().data(), weight.value().data(), out.data(),
                                 0.0f);
    else
        kernels::conv2d_backward_data(ctx, g, input.value().data(), weight.value().data(), out.data(), 0.0f);
    const std::int64_t spatial = g.in_height * g.in_width;
    if (bias) kernels::add_channel_bias(ctx, g.batch, g.in_channels, spatial, bias->value().data(), out.data());
    auto rule = [g, input, weight, bias, spatial, bf16](Tape& t, int self) {
        Context& c = t.context();
        const float* dy = t.grad(self).data();
        const float* x = input.value().data();
        const float* w = weight.value().data();
        if (t.requires_grad(input)) {
            float* dx = t.grad(input).data();
            if (bf16)
                detail::bf16_convolution(c, g, ConvPass::Forward, dy, w, dx, 1.0f);
            else
                kernels::conv2d_forward(c, g, dy, w, dx, 1.0f);
        }
        if (t.requires_grad(weight)) {
            float* dw = t.grad(weight).data();
            if (bf16)
                kernels::conv2d_backward_filter_bf16(c, g, dy, x, dw, 1.0f);
            else
                kernels::conv2d_backward_filter(c, g, dy, x, dw, 1.0f);
        }
        if (bias && t.requires_grad(*bias))
            kernels::add_channel_bias_backward(c, g.batch, g.in_channels, spatial, dy, t.grad(*bias).data());
    };
    if (bias) return tape.record(out, {input, weight, *bias}, rule);
    return tape.record(out, {input, weight}, rule);
}

// Inference only: conv2d (ConvPass::Forward) or conv_transpose2d (ConvPass::BackwardData)
// from `weight` and what kernels::conv2d_pack_weight prepared of it for geometry `g` (the
// convolution's geometry, as conv2d and conv_transpose2d above build it, with the batch of
// `input`), plus the optional bias (a constant). Records no gradient: the caller checks that
// none is needed (PackedConvolution, layers.hpp).
inline Var packed_convolution(Var input, Var weight, const float* packed, const ConvGeometry& g, ConvPass pass,
                              std::optional<Var> bias) {
    Tape& tape = *input.tape;
    Context& ctx = tape.context();
    const bool forward = pass == ConvPass::Forward;
    const std::int64_t channels = forward ? g.out_channels : g.in_channels;
    const std::int64_t height = forward ? g.out_height : g.in_height, width = forward ? g.out_width : g.in_width;
    TensorView out = tape.allocate({g.batch, channels, height, width});
    kernels::conv2d_packed(ctx, g, pass, input.value().data(), weight.value().data(), packed, out.data());
    if (bias) kernels::add_channel_bias(ctx, g.batch, channels, height * width, bias->value().data(), out.data());
    SGA_CHECK_ARGUMENT(!tape.requires_grad(input) && !tape.requires_grad(weight) && (!bias || !tape.requires_grad(*bias)),
                       "packed_convolution: records no gradient, but its input needs one");
    return tape.constant(out);
}

// Inference only, CPU: packed_convolution in bfloat16 from the weight that
// cpu::conv2d_pack_weight_bf16 packed (kernels.hpp), plus the optional bias (a constant, added
// in float32). Each image's result does not depend on the batch. Records no gradient.
inline Var packed_convolution_bf16(Var input, const std::uint32_t* packed, const ConvGeometry& g, ConvPass pass,
                                   std::optional<Var> bias) {
    Tape& tape = *input.tape;
    Context& ctx = tape.context();
    SGA_CHECK_ARGUMENT(!tape.requires_grad(input) && (!bias || !tape.requires_grad(*bias)),
                       "packed_convolution_bf16: records no gradient, but its input needs one");
    const bool forward = pass == ConvPass::Forward;
    const std::int64_t channels = forward ? g.out_channels : g.in_channels;
    const std::int64_t height = forward ? g.out_height : g.in_height, width = forward ? g.out_width : g.in_width;
    TensorView out = tape.allocate({g.batch, channels, height, width});
    kernels::conv2d_packed_bf16(ctx, g, pass, input.value().data(), packed, out.data());
    if (bias) kernels::add_channel_bias(ctx, g.batch, channels, height * width, bias->value().data(), out.data());
    return tape.constant(out);
}

// Inference only: conv2d (ConvPass::Forward) or conv_transpose2d (ConvPass::BackwardData) of
// a batch of `units` independent units of equal size (geometry g, the whole batch's), one
// kernel call per unit with that unit's geometry, so that each unit's result is bit for bit
// what conv2d or conv_transpose2d give it alone (Tape::independent_units). Records no gradient.
inline Var convolution_per_unit(Var input, Var weight, const std::optional<Var>& bias, const ConvGeometry& g,
                                ConvPass pass, std::int64_t units) {
    Tape& tape = *input.tape;
    Context& ctx = tape.context();
    SGA_CHECK_ARGUMENT(!tape.requires_grad(input) && !tape.requires_grad(weight) && (!bias || !tape.requires_grad(*bias)),
                       "convolution_per_unit: records no gradient, but its input needs one");
    SGA_CHECK_ARGUMENT(units >= 1 && g.batch % units == 0, "convolution_per_unit: the batch does not divide into the units");
    const bool forward = pass == ConvPass::Forward;
    const std::int64_t channels = forward ? g.out_channels : g.in_channels;
    const std::int64_t height = forward ? g.out_height : g.in_height, width = forward ? g.out_width : g.in_width;
    TensorView out = tape.allocate({g.batch, channels, height, width});
    ConvGeometry unit = g;
    unit.batch = g.batch / units;
    const std::int64_t in_floats = input.value().numel() / units, out_floats = out.numel() / units;
    const float* in = input.value().data();
    const float* w = weight.value().data();
    float* result = out.data();
    auto one_unit = [&](Context& c, std::int64_t u) {
        if (forward)
            kernels::conv2d_forward(c, unit, in + u * in_floats, w, result + u * out_floats, 0.0f);
        else
            kernels::conv2d_backward_data(c, unit, in + u * in_floats, w, result + u * out_floats, 0.0f);
    };
    // Small units run side by side, one per thread, as one image scored on one thread runs:
    // on two threads, one image's small products gain less than they cost. Large ones use the
    // threads themselves, one after another (and keep no per-thread scratch: for_each_unit).
    constexpr double side_by_side_multiply_adds = 1 << 26;
    const double multiply_adds = static_cast<double>(unit.batch * unit.out_height * unit.out_width) *
                                 static_cast<double>(unit.in_channels * unit.kernel_height * unit.kernel_width) *
                                 static_cast<double>(unit.out_channels);
    if (multiply_adds <= side_by_side_multiply_adds)
        for_each_unit(ctx, units, one_unit);
    else
        for (std::int64_t u = 0; u < units; ++u) one_unit(ctx, u);
    if (bias) kernels::add_channel_bias(ctx, g.batch, channels, height * width, bias->value().data(), out.data());
    return tape.constant(out);
}

struct BatchNormState {
    TensorView running_mean;  // (C); empty: batch statistics are used but not recorded
    TensorView running_var;   // (C)
    float momentum = 0.1f;
    float epsilon = 1e-5f;
};

// Batch norm 2-D. With batch statistics (training) the running statistics in `state`, when
// given, are updated in place; otherwise the running statistics normalise and no gradient
// is recorded (inference).
// With running statistics the op is elementwise, so `after` may let it work in place.
inline Var batch_norm(Var input, Var weight, Var bias, const BatchNormState& state, bool use_batch_statistics,
                      Input after = Input::Kept) {
    detail::require_rank4(input, "batch_norm");
    const Shape x = input.shape();
    const std::int64_t n = x[0], c = x[1], spatial = x[2] * x[3];
    const bool has_running = !state.running_mean.empty() && !state.running_var.empty();
    SGA_CHECK_ARGUMENT(weight.value().numel() == c && bias.value().numel() == c &&
                           (!has_running || (state.running_mean.numel() == c && state.running_var.numel() == c)),
                       "batch_norm: parameters do not match the " + std::to_string(c) + " input channels");
    Tape& tape = *input.tape;
    Context& ctx = tape.context();
    if (!use_batch_statistics) {
        SGA_CHECK_ARGUMENT(has_running, "batch_norm: inference needs running statistics");
        const TensorView out = detail::elementwise_output(input, after);
        kernels::batch_norm_forward_inference(ctx, n, c, spatial, input.value().data(), weight.value().data(),
                                              bias.value().data(), state.running_mean.data(),
                                              state.running_var.data(), state.epsilon, out.data());
        // Never differentiated: training always normalises with batch statistics.
        return tape.constant(out);
    }
    SGA_CHECK_ARGUMENT(n * spatial > 1, "batch_norm: batch statistics need more than one value per channel, found input " + x.str());
    const TensorView out = tape.allocate(x);
    TensorView saved_mean = tape.allocate({c});
    TensorView saved_inv_std = tape.allocate({c});
    kernels::batch_norm_forward_training(ctx, n, c, spatial, input.value().data(), weight.value().data(),
                                         bias.value().data(), out.data(), saved_mean.data(), saved_inv_std.data(),
                                         has_running ? state.running_mean.data() : nullptr,
                                         has_running ? state.running_var.data() : nullptr, state.momentum,
                                         state.epsilon);
    return tape.record(out, {input, weight, bias},
                       [=](Tape& t, int self) {
                           float* dx = t.requires_grad(input) ? t.grad(input).data() : nullptr;
                           float* dw = t.requires_grad(weight) ? t.grad(weight).data() : nullptr;
                           float* db = t.requires_grad(bias) ? t.grad(bias).data() : nullptr;
                           kernels::batch_norm_backward(t.context(), n, c, spatial, input.value().data(),
                                                        t.grad(self).data(), weight.value().data(),
                                                        saved_mean.data(), saved_inv_std.data(), dx, dw, db);
                       });
}

inline Var leaky_relu(Var input, float negative_slope, Input after = Input::Kept) {
    Tape& tape = *input.tape;
    const TensorView out = detail::elementwise_output(input, after);
    kernels::leaky_relu_forward(tape.context(), out.numel(), input.value().data(), out.data(), negative_slope);
    return tape.record(out, {input}, [input, negative_slope](Tape& t, int self) {
        kernels::leaky_relu_backward(t.context(), input.value().numel(), input.value().data(), t.grad(self).data(),
                                     t.grad(input).data(), negative_slope);
    });
}

inline Var relu(Var input, Input after = Input::Kept) { return leaky_relu(input, 0.0f, after); }

inline Var tanh(Var input, Input after = Input::Kept) {
    Tape& tape = *input.tape;
    const TensorView out = detail::elementwise_output(input, after);
    kernels::tanh_forward(tape.context(), out.numel(), input.value().data(), out.data());
    return tape.record(out, {input}, [input, out](Tape& t, int self) {
        kernels::tanh_backward(t.context(), out.numel(), out.data(), t.grad(self).data(), t.grad(input).data());
    });
}

inline Var sigmoid(Var input) {
    Tape& tape = *input.tape;
    TensorView out = tape.allocate(input.shape());
    kernels::sigmoid_forward(tape.context(), out.numel(), input.value().data(), out.data());
    return tape.record(out, {input}, [input, out](Tape& t, int self) {
        kernels::sigmoid_backward(t.context(), out.numel(), out.data(), t.grad(self).data(), t.grad(input).data());
    });
}

// [a, b] along channels: a (N, Ca, H, W), b (N, Cb, H, W) -> (N, Ca + Cb, H, W).
inline Var concat_channels(Var a, Var b) {
    detail::require_rank4(a, "concat_channels");
    detail::require_rank4(b, "concat_channels");
    const Shape sa = a.shape();
    const Shape sb = b.shape();
    SGA_CHECK_ARGUMENT(sa[0] == sb[0] && sa[2] == sb[2] && sa[3] == sb[3],
                       "concat_channels: " + sa.str() + " and " + sb.str() + " differ outside the channel axis");
    const std::int64_t n = sa[0], ca = sa[1], cb = sb[1], spatial = sa[2] * sa[3];
    Tape& tape = *a.tape;
    TensorView out = tape.allocate({n, ca + cb, sa[2], sa[3]});
    kernels::concat_channels_forward(tape.context(), n, ca, cb, spatial, a.value().data(), b.value().data(), out.data());
    return tape.record(out, {a, b}, [=](Tape& t, int self) {
        float* da = t.requires_grad(a) ? t.grad(a).data() : nullptr;
        float* db = t.requires_grad(b) ? t.grad(b).data() : nullptr;
        kernels::concat_channels_backward(t.context(), n, ca, cb, spatial, t.grad(self).data(), da, db);
    });
}

// alpha * a + beta * b, same shapes.
inline Var add_scaled(Var a, float alpha, Var b, float beta) {
    detail::require_same_shape(a, b, "add_scaled");
    Tape& tape = *a.tape;
    TensorView out = tape.allocate(a.shape());
    kernels::add_scaled(tape.context(), out.numel(), alpha, a.value().data(), beta, b.value().data(), out.data());
    return tape.record(out, {a, b}, [=](Tape& t, int self) {
        const std::int64_t n = t.value(a).numel();
        if (t.requires_grad(a)) kernels::accumulate_scaled(t.context(), n, alpha, t.grad(self).data(), t.grad(a).data());
        if (t.requires_grad(b)) kernels::accumulate_scaled(t.context(), n, beta, t.grad(self).data(), t.grad(b).data());
    });
}
inline Var add(Var a, Var b) { return add_scaled(a, 1.0f, b, 1.0f); }
inline Var sub(Var a, Var b) { return add_scaled(a, 1.0f, b, -1.0f); }
inline Var scale(Var a, float alpha) {
    Tape& tape = *a.tape;
    TensorView out = tape.allocate(a.shape());
    kernels::add_scaled(tape.context(), out.numel(), alpha, a.value().data(), 0.0f, a.value().data(), out.data());
    return tape.record(out, {a}, [=](Tape& t, int self) {
        kernels::accumulate_scaled(t.context(), t.value(a).numel(), alpha, t.grad(self).data(), t.grad(a).data());
    });
}

// Mean over all elements -> scalar.
inline Var mean(Var input) {
    Tape& tape = *input.tape;
    TensorView out = tape.allocate({1});
    const std::int64_t n = input.value().numel();
    kernels::mean_forward(tape.context(), n, input.value().data(), out.data());
    return tape.record(out, {input}, [=](Tape& t, int self) {
        kernels::accumulate_broadcast(t.context(), n, 1.0f / static_cast<float>(n), t.grad(self).data(),
                                      t.grad(input).data());
    });
}

// A constant tensor of `value` shaped like `like` (targets of the adversarial loss).
inline Var full_like(Var like, float value) {
    Tape& tape = *like.tape;
    TensorView out = tape.allocate(like.shape());
    kernels::fill(tape.context(), out.numel(), value, out.data());
    return tape.constant(out);
}

// nn.BCELoss (mean); the target takes no gradient.
inline Var bce_loss(Var prediction, Var target) {
    detail::require_same_shape(prediction, target, "bce_loss");
    Tape& tape = *prediction.tape;
    TensorView out = tape.allocate({1});
    const std::int64_t n = prediction.value().numel();
    kernels::bce_loss_forward(tape.context(), n, prediction.value().data(), target.value().data(), out.data());
    return tape.record(out, {prediction}, [=](Tape& t, int self) {
        kernels::bce_loss_backward(t.context(), n, prediction.value().data(), target.value().data(),
                                   t.grad(self).data(), t.grad(prediction).data());
    });
}

namespace detail {
template <auto Forward, auto Backward>
Var pairwise_loss(Var a, Var b, const char* name) {
    require_same_shape(a, b, name);
    Tape& tape = *a.tape;
    TensorView out = tape.allocate({1});
    const std::int64_t n = a.value().numel();
    Forward(tape.context(), n, a.value().data(), b.value().data(), out.data());
    return tape.record(out, {a, b}, [=](Tape& t, int self) {
        float* da = t.requires_grad(a) ? t.grad(a).data() : nullptr;
        float* db = t.requires_grad(b) ? t.grad(b).data() : nullptr;
        Backward(t.context(), n, a.value().data(), b.value().data(), t.grad(self).data(), da, db);
    });
}
}  // namespace detail

// nn.L1Loss (mean |a - b|).
inline Var l1_loss(Var a, Var b) {
    return detail::pairwise_loss<kernels::l1_loss_forward, kernels::l1_loss_backward>(a, b, "l1_loss");
}
// Mean squared error (nn.MSELoss; the official l2_loss).
inline Var mse_loss(Var a, Var b) {
    return detail::pairwise_loss<kernels::mse_loss_forward, kernels::mse_loss_backward>(a, b, "mse_loss");
}

}  // namespace ops
}  // namespace sga
