// The two Skip-GANomaly networks, layer for layer as the official PyTorch code builds them
// (samet-akcay/skip-ganomaly, lib/models/networks.py), with the same state-dict names.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "skipganomaly/engine/layers.hpp"
#include "skipganomaly/model_options.hpp"

namespace sga {

// DCGAN initialisation as the official weights_init / init_weights('normal'): every
// convolution weight N(0, 0.02), batch-norm weight N(1, 0.02), biases 0; running mean 0 and
// running variance 1 as a fresh nn.BatchNorm2d. Draws come from `random` in slice order.
inline void initialize_dcgan(Context& ctx, RandomStream& random, ParameterBlock& params,
                             const std::vector<BatchNorm2d>& norms, ParameterBlock* statistics) {
    auto is_norm_weight = [&](int index) {
        for (const BatchNorm2d& bn : norms)
            if (bn.weight == index) return true;
        return false;
    };
    for (int i = 0; i < static_cast<int>(params.entries().size()); ++i) {
        const ParameterBlock::Entry& e = params.entry(i);
        TensorView v = params.value(i);
        const bool is_bias = e.name.size() >= 4 && e.name.compare(e.name.size() - 4, 4, "bias") == 0;
        if (is_bias) {
            kernels::fill(ctx, v.numel(), 0.0f, v.data());
        } else {
            const float mean = is_norm_weight(i) ? 1.0f : 0.0f;
            kernels::fill_normal(ctx, v.numel(), mean, 0.02f, random.seed(), random.take(static_cast<std::uint64_t>(v.numel())),
                                 v.data());
        }
    }
    if (statistics) {
        for (const BatchNorm2d& bn : norms) {
            TensorView mean = statistics->value(bn.running_mean), var = statistics->value(bn.running_var);
            kernels::fill(ctx, mean.numel(), 0.0f, mean.data());
            kernels::fill(ctx, var.numel(), 1.0f, var.data());
        }
    }
}

// What both networks share: their parameter and statistics blocks, their batch-norm layers
// and how often they ran a training forward.
class Network {
public:
    // Values and statistics only: training allocates the training buffers it needs
    // (SkipGanomaly::allocate_training_buffers).
    void materialize(Context& ctx) {
        parameters.materialize(ctx, false);
        statistics.materialize(ctx);
    }
    void initialize(Context& ctx, RandomStream& random) {
        discard_packed_weights();
        initialize_dcgan(ctx, random, parameters, norms_, &statistics);
        training_passes = 0;
    }
    const std::vector<BatchNorm2d>& norms() const { return norms_; }
    // The weight of the newest batch in every batch-norm layer's running-statistics update
    // (PyTorch's momentum; 0.1 in training). recompute_batch_norm_statistics sets 1/(k+1)
    // for the k-th pass, which makes the running statistics an exact mean over the passes.
    void set_batch_norm_momentum(float momentum) {
        for (BatchNorm2d& norm : norms_) norm.momentum = momentum;
    }

    // Convolution weights packed once for scoring (PackedConvolution, layers.hpp): made by
    // pack_for_inference, which the owner calls when the weights are final (Detector: at the
    // end of fit and after load), and discarded by whatever changes the weights (initialize,
    // SkipGanomaly::train_step; call discard_packed_weights after writing weights yourself).
    // Without them every layer computes from the weights as they are.
    const PackedConvolution* packed(int weight) const {
        const auto found = packed_.find(weight);
        return found == packed_.end() ? nullptr : &found->second;
    }
    bool has_packed_weights() const { return !packed_.empty(); }
    // The precision the packed weights score in: BFloat16 only where they were packed for it
    // and the device runs it.
    Precision packed_precision() const {
        for (const auto& [index, p] : packed_)
            if (!p.bf16.empty()) return Precision::BFloat16;
        return Precision::Float32;
    }
    void discard_packed_weights() { packed_.clear(); }

    ParameterBlock parameters{true};
    ParameterBlock statistics{false};
    // Forward passes in BatchNormMode::Training so far: PyTorch's num_batches_tracked of
    // every batch-norm layer of this network.
    std::int64_t training_passes = 0;

protected:
    std::vector<BatchNorm2d> norms_;
    std::map<int, PackedConvolution> packed_;  // by the weight's parameter index
};

// The official UnetGenerator (num_downs = log2(image_size)): a U-Net whose every level
// concatenates its input (after the level's in-place LeakyReLU, as the official in-place
// activation makes it) with the decoded output of the level below.
class Generator : public Network {
public:
    explicit Generator(const Architecture& arch) : arch_(arch) {
        arch.validate();
        const int downs = arch.downsamplings();
        const std::int64_t nc = arch.channels, ngf = arch.generator_features;
        // (outer, inner) channels from the outermost level inwards, as UnetGenerator nests them.
        std::vector<std::pair<std::int64_t, std::int64_t>> widths = {{nc, ngf}, {ngf, 2 * ngf}, {2 * ngf, 4 * ngf}, {4 * ngf, 8 * ngf}};
        for (int i = 0; i < downs - 4; ++i) widths.push_back({8 * ngf, 8 * ngf});
        std::string prefix = "model.model.";
        for (int level = 0; level < downs; ++level) {
            const bool outermost = level == 0, innermost = level == downs - 1;
            const auto [outer, inner] = widths[static_cast<std::size_t>(level)];
            Level l;
            if (outermost) {
                l.down = Conv2d::declare(parameters, prefix + "0.", outer, inner, 4, 2, 1, false);
                l.up = ConvTranspose2d::declare(parameters, prefix + "3.", inner * 2, outer, 4, 2, 1, true);
                prefix += "1.model.";
            } else if (innermost) {
                l.down = Conv2d::declare(parameters, prefix + "1.", outer, inner, 4, 2, 1, false);
                if (arch.bottleneck_channels > 0) {
                    l.squeeze = Conv2d::declare(parameters, prefix + "bottleneck.0.", inner, arch.bottleneck_channels, 1, 1, 0, false);
                    l.expand = Conv2d::declare(parameters, prefix + "bottleneck.1.", arch.bottleneck_channels, inner, 1, 1, 0, false);
                }
                l.up = ConvTranspose2d::declare(parameters, prefix + "3.", inner, outer, 4, 2, 1, false);
                l.up_norm = add_norm(prefix + "4.", outer);
            } else {
                l.down = Conv2d::declare(parameters, prefix + "1.", outer, inner, 4, 2, 1, false);
                l.down_norm = add_norm(prefix + "2.", inner);
                l.up = ConvTranspose2d::declare(parameters, prefix + "5.", inner * 2, outer, 4, 2, 1, false);
                l.up_norm = add_norm(prefix + "6.", outer);
                prefix += "3.model.";
            }
            levels_.push_back(l);
        }
    }

    const Architecture& architecture() const { return arch_; }

    // Skip connections, counted from the outermost: skip k (k = 0 .. skip_count() - 1) joins the
    // encoder and decoder at resolution S / 2^(k+1).
    int skip_count() const { return static_cast<int>(levels_.size()) - 1; }

    // x (N, nc, S, S) in [-1, 1] -> reconstruction (N, nc, S, S) in [-1, 1]. A skip whose bit
    // is set in `closed_skips` (bit k for skip k) carries zeros instead of the encoder's
    // features: the decoder then sees only what came through the bottleneck and the open skips
    // (SkipGating, recipe.hpp). 0 is the official network.
    Var forward(Tape& tape, Var x, BatchNormMode mode, SkipMask closed_skips = 0) const {
        return level_forward(tape, 0, x, mode, closed_skips);
    }

    // Packs every convolution's weight for inputs of the architecture's size (see packed()),
    // for `precision` where the device runs it.
    void pack_for_inference(Context& ctx, Precision precision = Precision::Float32) {
        packed_.clear();
        const std::int64_t size = arch_.image_size;
        for (std::size_t level = 0; level < levels_.size(); ++level) {
            const Level& l = levels_[level];
            const std::int64_t in = size >> level, out = in / 2;
            packed_.emplace(l.down.weight, l.down.pack(ctx, parameters, in, precision));
            if (l.squeeze.weight >= 0) {
                packed_.emplace(l.squeeze.weight, l.squeeze.pack(ctx, parameters, out, precision));
                packed_.emplace(l.expand.weight, l.expand.pack(ctx, parameters, out, precision));
            }
            packed_.emplace(l.up.weight, l.up.pack(ctx, parameters, out, precision));
        }
    }

private:
    struct Level {
        Conv2d down;
        int down_norm = -1;  // index into norms_
        ConvTranspose2d up;
        int up_norm = -1;
        Conv2d squeeze, expand;  // the innermost level's optional bottleneck (weight -1: none)
    };
    int add_norm(const std::string& prefix, std::int64_t channels) {
        norms_.push_back(BatchNorm2d::declare(parameters, statistics, prefix, channels));
        return static_cast<int>(norms_.size()) - 1;
    }
    // Every input of a norm or activation below is a fresh op output read by nothing else, so
    // each may work in place (ops::Input::Dead; only while no gradient is recorded). x, the
    // level's input, is such an output too: the level above's convolution or norm.
    Var norm(Tape& tape, int index, Var x, BatchNormMode mode) const {
        return norms_[static_cast<std::size_t>(index)](tape, parameters, statistics, x, mode, ops::Input::Dead);
    }
    Var level_forward(Tape& tape, std::size_t level, Var x, BatchNormMode mode, SkipMask closed_skips) const {
        const Level& l = levels_[level];
        if (level == 0) {
            Var inner = level_forward(tape, 1, l.down(tape, parameters, x, packed(l.down.weight)), mode, closed_skips);
            return ops::tanh(l.up(tape, parameters, ops::relu(inner, ops::Input::Dead), packed(l.up.weight)),
                             ops::Input::Dead);
        }
        Var activated = ops::leaky_relu(x, 0.2f, ops::Input::Dead);
        Var down = l.down(tape, parameters, activated, packed(l.down.weight));
        if (l.squeeze.weight >= 0)
            down = l.expand(tape, parameters, l.squeeze(tape, parameters, down, packed(l.squeeze.weight)),
                            packed(l.expand.weight));
        Var inner = level + 1 == levels_.size()
                        ? down
                        : level_forward(tape, level + 1, norm(tape, l.down_norm, down, mode), mode, closed_skips);
        Var up = norm(tape, l.up_norm, l.up(tape, parameters, ops::relu(inner, ops::Input::Dead), packed(l.up.weight)),
                      mode);
        const bool closed = (closed_skips >> (level - 1)) & 1u;
        return ops::concat_channels(closed ? ops::full_like(activated, 0.0f) : activated, up);
    }

    Architecture arch_;
    std::vector<Level> levels_;
};

// The official discriminator: a DCGAN encoder whose last convolution gives the nz-long
// feature f(x) (the latent space), followed by a 3x3 classifier convolution and a sigmoid.
class Discriminator : public Network {
public:
    struct Output {
        Var prediction;  // (N, 1, 1, 1): probability that the input is real
        Var features;    // (N, nz, 1, 1): f(x)
    };

    explicit Discriminator(const Architecture& arch) : arch_(arch) {
        arch.validate();
        const std::int64_t nc = arch.channels, ndf = arch.discriminator_features;
        first_ = Conv2d::declare(parameters, "feat.initial-conv-" + std::to_string(nc) + "-" + std::to_string(ndf) + ".",
                                 nc, ndf, 4, 2, 1, false);
        std::int64_t size = arch.image_size / 2, width = ndf;
        while (size > 4) {
            const std::string in = std::to_string(width), out = std::to_string(width * 2);
            pyramid_.push_back(Conv2d::declare(parameters, "feat.pyramid-" + in + "-" + out + "-conv.", width, width * 2, 4, 2, 1, false));
            norms_.push_back(BatchNorm2d::declare(parameters, statistics, "feat.pyramid-" + out + "-batchnorm.", width * 2));
            width *= 2;
            size /= 2;
        }
        final_ = Conv2d::declare(parameters, "feat.final-" + std::to_string(width) + "-1-conv.", width, arch.latent_size, 4, 1, 0, false);
        classifier_ = Conv2d::declare(parameters, "clas.classifier.", arch.latent_size, 1, 3, 1, 1, false);
        // Declared last, so that the official parameters keep their order and initial draws.
        if (arch.rotation_head) rotation_ = Conv2d::declare(parameters, "rotation.", arch.latent_size, 4, 1, 1, 0, true);
    }

    const Architecture& architecture() const { return arch_; }

    // The official reinit_d (weights_init): fresh convolution and batch-norm weights; the
    // running statistics and the optimiser state are left as they are.
    void reinitialize_weights(Context& ctx, RandomStream& random) {
        discard_packed_weights();
        initialize_dcgan(ctx, random, parameters, norms_, nullptr);
    }

    // Packs every convolution's weight for inputs of the architecture's size (see packed()),
    // for `precision` where the device runs it.
    void pack_for_inference(Context& ctx, Precision precision = Precision::Float32) {
        packed_.clear();
        std::int64_t size = arch_.image_size;
        packed_.emplace(first_.weight, first_.pack(ctx, parameters, size, precision));
        for (const Conv2d& conv : pyramid_) {
            size /= 2;
            packed_.emplace(conv.weight, conv.pack(ctx, parameters, size, precision));
        }
        packed_.emplace(final_.weight, final_.pack(ctx, parameters, size / 2, precision));
        packed_.emplace(classifier_.weight, classifier_.pack(ctx, parameters, 1, precision));
        if (has_rotation_head()) packed_.emplace(rotation_.weight, rotation_.pack(ctx, parameters, 1, precision));
    }

    // Norms and activations work in place while no gradient is recorded (their inputs are
    // fresh convolution or norm outputs; see ops::Input).
    Output forward(Tape& tape, Var x, BatchNormMode mode) const {
        Var f = features(tape, x, mode);
        Var prediction = ops::sigmoid(classifier_(tape, parameters, f, packed(classifier_.weight)));
        return {prediction, f};
    }

    bool has_rotation_head() const { return rotation_.weight >= 0; }
    // (N, 4, 1, 1): the rotation head's logits, one per quarter turn (Architecture::rotation_head).
    Var rotation_logits(Tape& tape, Var x, BatchNormMode mode) const {
        SGA_CHECK_ARGUMENT(has_rotation_head(), "this discriminator has no rotation head");
        return rotation_(tape, parameters, features(tape, x, mode), packed(rotation_.weight));
    }

private:
    Var features(Tape& tape, Var x, BatchNormMode mode) const {
        constexpr ops::Input dead = ops::Input::Dead;
        Var h = ops::leaky_relu(first_(tape, parameters, x, packed(first_.weight)), 0.2f, dead);
        for (std::size_t i = 0; i < pyramid_.size(); ++i)
            h = ops::leaky_relu(norms_[i](tape, parameters, statistics,
                                          pyramid_[i](tape, parameters, h, packed(pyramid_[i].weight)), mode, dead),
                                0.2f, dead);
        return final_(tape, parameters, h, packed(final_.weight));
    }

    Architecture arch_;
    Conv2d first_;
    std::vector<Conv2d> pyramid_;
    Conv2d final_;
    Conv2d classifier_;
    Conv2d rotation_;  // weight -1 when the architecture has no rotation head
};

}  // namespace sga
