// One flat block of named parameters per network: values, gradients and Adam's two
// moments each live in a single allocation, so the optimiser steps a network in one
// kernel launch and a checkpoint is four memcpys.
#pragma once

#include <string>
#include <vector>

#include "skipganomaly/engine/autograd.hpp"

namespace sga {

class ParameterBlock {
public:
    struct Entry {
        std::string name;  // the PyTorch state-dict key, e.g. "model.model.0.weight"
        Shape shape;
        std::int64_t offset;  // in floats from the start of the block
    };

    // trainable: allocate gradients and optimiser moments (false for batch-norm statistics).
    explicit ParameterBlock(bool trainable = true) : trainable_(trainable) {}

    // Declares a slice; only before materialize(). Returns its index.
    int add(std::string name, Shape shape) {
        SGA_CHECK_ARGUMENT(values_.data() == nullptr, "ParameterBlock::add after materialize");
        // Keep every slice 64-byte aligned for vectorised kernels.
        entries_.push_back(Entry{std::move(name), shape, size_});
        size_ += (shape.numel() + 15) / 16 * 16;
        return static_cast<int>(entries_.size()) - 1;
    }

    // Allocates the values on ctx's device, zero-filled, and for a trainable block also the
    // training buffers (gradients and Adam's moments, three more copies of the values) unless
    // `with_training_buffers` is false: a model that only scores never needs them.
    void materialize(Context& ctx, bool with_training_buffers = true) {
        values_ = Tensor({size_}, ctx.device());
        kernels::fill(ctx, size_, 0.0f, values_.data());
        if (with_training_buffers) allocate_training_buffers(ctx);
    }

    // Gradients and moments, zero-filled; no-op when they exist or the block is not trainable.
    void allocate_training_buffers(Context& ctx) {
        if (!trainable_ || has_training_buffers()) return;
        grads_ = Tensor({size_}, ctx.device());
        first_moments_ = Tensor({size_}, ctx.device());
        second_moments_ = Tensor({size_}, ctx.device());
        for (Tensor* t : {&grads_, &first_moments_, &second_moments_}) kernels::fill(ctx, size_, 0.0f, t->data());
    }
    // Frees gradients and moments (the optimiser's state is lost); the values stay.
    void release_training_buffers() {
        for (Tensor* t : {&grads_, &first_moments_, &second_moments_}) *t = Tensor();
    }
    bool has_training_buffers() const { return grads_.data() != nullptr; }

    bool trainable() const { return trainable_; }
    const std::vector<Entry>& entries() const { return entries_; }
    const Entry& entry(int index) const { return entries_.at(static_cast<std::size_t>(index)); }
    int find(const std::string& name) const {
        for (std::size_t i = 0; i < entries_.size(); ++i)
            if (entries_[i].name == name) return static_cast<int>(i);
        return -1;
    }
    // Floats in the block (with alignment padding); parameter_count() excludes padding.
    std::int64_t size() const { return size_; }
    std::int64_t parameter_count() const {
        std::int64_t n = 0;
        for (const Entry& e : entries_) n += e.shape.numel();
        return n;
    }
    Device device() const { return values_.device(); }

    TensorView value(int index) const { return slice(values_, index); }
    TensorView grad(int index) const { return slice(grads_, index); }
    TensorView values() const { return values_.view(); }
    TensorView grads() const { return grads_.view(); }
    TensorView first_moments() const { return first_moments_.view(); }
    TensorView second_moments() const { return second_moments_.view(); }

    // A tape leaf for slice `index` whose gradient accumulates into this block (a constant
    // while the tape records no gradients, so scoring needs no training buffers).
    Var bind(Tape& tape, int index) const {
        if (!trainable_ || !tape.grad_enabled()) return tape.constant(value(index));
        return tape.parameter(value(index), grad(index));
    }

    void zero_grad(Context& ctx) {
        if (trainable_) kernels::fill(ctx, size_, 0.0f, grads_.data());
    }
    void zero_moments(Context& ctx) {
        if (!trainable_) return;
        kernels::fill(ctx, size_, 0.0f, first_moments_.data());
        kernels::fill(ctx, size_, 0.0f, second_moments_.data());
    }

private:
    TensorView slice(const Tensor& flat, int index) const {
        const Entry& e = entry(index);
        SGA_CHECK_ARGUMENT(flat.data() != nullptr,
                           "ParameterBlock: buffer not allocated (materialize, or allocate_training_buffers for "
                           "gradients and moments)");
        return {flat.data() + e.offset, e.shape, flat.device()};
    }

    bool trainable_;
    std::vector<Entry> entries_;
    std::int64_t size_ = 0;
    Tensor values_, grads_, first_moments_, second_moments_;
};

// Adam as torch.optim.Adam: bias-corrected, no weight decay, one launch per block.
class Adam {
public:
    explicit Adam(AdamHyperparameters hyper = {}) : hyper_(hyper) {
        SGA_CHECK_ARGUMENT(hyper.learning_rate > 0.0f, "Adam: the learning rate must be positive");
        SGA_CHECK_ARGUMENT(hyper.beta1 >= 0.0f && hyper.beta1 < 1.0f && hyper.beta2 >= 0.0f && hyper.beta2 < 1.0f,
                           "Adam: betas must lie in [0, 1)");
    }
    void step(Context& ctx, ParameterBlock& block) {
        ++steps_;
        kernels::adam_step(ctx, block.size(), hyper_, steps_, block.values().data(), block.grads().data(),
                           block.first_moments().data(), block.second_moments().data());
    }
    std::int64_t steps() const { return steps_; }
    void set_steps(std::int64_t steps) { steps_ = steps; }
    const AdamHyperparameters& hyperparameters() const { return hyper_; }

private:
    AdamHyperparameters hyper_;
    std::int64_t steps_ = 0;
};

}  // namespace sga
