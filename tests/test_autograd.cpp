// The tape: gradient flow, accumulation, blocking, no-grad mode, finite differences through
// a composed network, and allocation-free steady-state training.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "skipganomaly/engine/skip_ganomaly.hpp"

namespace {

using namespace sga;

std::vector<float> random_values(std::size_t n, std::uint64_t seed, float low = -1.0f, float high = 1.0f) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> dist(low, high);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

// A full Skip-GANomaly at isize 32 with 4 features per level: every layer, little compute.
Architecture small_architecture(int channels) {
    Architecture arch;
    arch.image_size = 32;
    arch.channels = channels;
    arch.generator_features = 4;
    arch.discriminator_features = 4;
    arch.latent_size = 8;
    return arch;
}

void upload(TensorView destination, const std::vector<float>& values) {
    REQUIRE(static_cast<std::int64_t>(values.size()) == destination.numel());
    copy_bytes(destination.data(), destination.device(), values.data(), Device::Cpu, values.size() * sizeof(float));
}

// A small network touching every op the model uses: conv, batch norm, leaky ReLU, ReLU,
// sigmoid, concat, transposed conv with bias, tanh, scale/add and the three losses.
struct TinyNet {
    ParameterBlock params{true};
    ParameterBlock stats{false};
    Conv2d conv, side, head;
    BatchNorm2d norm;
    ConvTranspose2d up;

    explicit TinyNet(Context& ctx) {
        conv = Conv2d::declare(params, "conv.", 2, 3, 4, 2, 1, false);
        norm = BatchNorm2d::declare(params, stats, "norm.", 3);
        side = Conv2d::declare(params, "side.", 2, 2, 4, 2, 1, false);
        up = ConvTranspose2d::declare(params, "up.", 5, 2, 4, 2, 1, true);
        head = Conv2d::declare(params, "head.", 2, 1, 3, 1, 1, true);
        params.materialize(ctx);
        stats.materialize(ctx);
        upload(params.values(), random_values(static_cast<std::size_t>(params.size()), 11, -0.5f, 0.5f));
        upload(stats.value(norm.running_var), {1.0f, 1.0f, 1.0f});
    }

    Var loss(Tape& tape, TensorView input, TensorView target) const {
        Var x = tape.constant(input);
        // Smooth after batch norm: a change of its bias moves a whole channel, so a kink there
        // (ReLU, leaky ReLU) would bias the finite differences; kinks sit on the side path.
        Var h = ops::tanh(norm(tape, params, stats, conv(tape, params, x), BatchNormMode::Training));
        Var s = ops::sigmoid(ops::leaky_relu(side(tape, params, x), 0.2f));
        Var y = ops::tanh(up(tape, params, ops::concat_channels(h, s)));
        Var p = ops::sigmoid(head(tape, params, ops::relu(y)));
        Var t = tape.constant(target);
        Var data_terms = ops::add_scaled(ops::l1_loss(y, t), 2.0f, ops::mse_loss(y, t), 1.0f);
        Var adversarial = ops::bce_loss(p, ops::full_like(p, 0.75f));
        return ops::add(ops::add(data_terms, adversarial), ops::scale(ops::mean(p), 0.1f));
    }
};

}  // namespace

TEST_CASE("parameter gradients accumulate across backward passes until zeroed", "[autograd]") {
    Context ctx(Device::Cpu);
    ParameterBlock params(true);
    const int w = params.add("w", Shape{4});
    params.materialize(ctx);
    const std::vector<float> values = random_values(4, 1);
    upload(params.value(w), values);

    Tape tape(ctx);
    Var loss = ops::mean(ops::tanh(params.bind(tape, w)));
    tape.backward(loss);
    const std::vector<float> once = Tensor::host_values(params.grad(w));
    tape.backward(loss);
    const std::vector<float> twice = Tensor::host_values(params.grad(w));
    for (int i = 0; i < 4; ++i) {
        const float expected = (1.0f - std::tanh(values[i]) * std::tanh(values[i])) / 4.0f;
        CHECK(once[i] == Approx(expected).epsilon(1e-5));
        CHECK(twice[i] == Approx(2 * expected).epsilon(1e-5));
    }
    params.zero_grad(ctx);
    for (float g : Tensor::host_values(params.grad(w))) CHECK(g == 0.0f);
}

TEST_CASE("stop_at keeps a loss out of a subgraph, as the discriminator loss is kept out of G", "[autograd]") {
    Context ctx(Device::Cpu);
    ParameterBlock a(true), b(true);
    const int ia = a.add("a", Shape{3}), ib = b.add("b", Shape{3});
    a.materialize(ctx);
    b.materialize(ctx);
    upload(a.value(ia), random_values(3, 2));
    upload(b.value(ib), random_values(3, 3));

    Tape tape(ctx);
    Var generated = ops::tanh(a.bind(tape, ia));
    Var loss = ops::mean(ops::add(generated, ops::sigmoid(b.bind(tape, ib))));
    tape.backward(loss, {generated});
    for (float g : Tensor::host_values(a.grad(ia))) CHECK(g == 0.0f);
    for (float g : Tensor::host_values(b.grad(ib))) CHECK(g != 0.0f);
    // Without the stop both receive gradients.
    tape.backward(loss);
    for (float g : Tensor::host_values(a.grad(ia))) CHECK(g != 0.0f);
}

TEST_CASE("no-grad mode records no backward rules", "[autograd]") {
    Context ctx(Device::Cpu);
    ParameterBlock a(true);
    const int ia = a.add("a", Shape{3});
    a.materialize(ctx);
    upload(a.value(ia), random_values(3, 4));
    Tape tape(ctx);
    {
        NoGradGuard guard(tape);
        Var y = ops::tanh(a.bind(tape, ia));
        CHECK_FALSE(tape.requires_grad(y));
    }
    Var y = ops::tanh(a.bind(tape, ia));
    CHECK(tape.requires_grad(y));
}

TEST_CASE("backward refuses non-scalar losses and foreign variables", "[autograd]") {
    Context ctx(Device::Cpu);
    Tape tape(ctx), other(ctx);
    Tensor t = Tensor::from_host(Shape{2}, {0.5f, -0.5f});
    Var v = tape.constant(t.view());
    CHECK_THROWS_AS(tape.backward(v), InvalidArgument);
    Var w = other.constant(t.view());
    CHECK_THROWS_AS(tape.backward(w), InvalidArgument);
}

TEST_CASE("gradients of a composed network match central finite differences", "[autograd][gradcheck]") {
    Context ctx(Device::Cpu);
    TinyNet net(ctx);
    const Tensor input = Tensor::from_host(Shape{3, 2, 8, 8}, random_values(3 * 2 * 64, 21));
    const Tensor target = Tensor::from_host(Shape{3, 2, 8, 8}, random_values(3 * 2 * 64, 22, -0.9f, 0.9f));
    Tape tape(ctx);
    auto evaluate = [&] {
        tape.clear();
        ctx.arena().reset();
        NoGradGuard guard(tape);
        return static_cast<double>(item(net.loss(tape, input, target)));
    };
    net.params.zero_grad(ctx);
    tape.clear();
    ctx.arena().reset();
    tape.backward(net.loss(tape, input, target));
    const std::vector<float> analytic = Tensor::host_values(net.params.grads());

    // Central differences in float: step 2e-3 keeps truncation (~h^2) small and the rounding
    // error (~1e-7 / h of the O(1) loss) near 1e-4; elements within h of a kink of ReLU, leaky
    // ReLU or L1 are rare at this step.
    std::vector<float> values = Tensor::host_values(net.params.values());
    std::mt19937 rng(5);
    int checked = 0;
    for (const ParameterBlock::Entry& e : net.params.entries()) {
        for (int k = 0; k < 6; ++k) {
            const std::size_t at = static_cast<std::size_t>(e.offset) +
                                   std::uniform_int_distribution<std::size_t>(0, static_cast<std::size_t>(e.shape.numel()) - 1)(rng);
            const float original = values[at];
            const float h = 2e-3f;
            values[at] = original + h;
            upload(net.params.values(), values);
            const double plus = evaluate();
            values[at] = original - h;
            upload(net.params.values(), values);
            const double minus = evaluate();
            values[at] = original;
            upload(net.params.values(), values);
            const double numeric = (plus - minus) / (2.0 * h);
            INFO(e.name << " element " << at - static_cast<std::size_t>(e.offset) << ": analytic " << analytic[at]
                        << " numeric " << numeric);
            CHECK(std::abs(analytic[at] - numeric) <= 2e-3 + 2e-2 * std::abs(numeric));
            ++checked;
        }
    }
    CHECK(checked == 6 * static_cast<int>(net.params.entries().size()));
}

TEST_CASE("a steady-state Skip-GANomaly training step allocates no memory", "[autograd][memory]") {
    Context ctx(Device::Cpu);
    SkipGanomaly model(small_architecture(1), {}, {});
    model.materialize(ctx);
    RandomStream random(3);
    model.initialize(ctx, random);
    const Tensor images = Tensor::from_host(Shape{4, 1, 32, 32}, random_values(4 * 32 * 32, 9));
    Tape tape(ctx);

    model.train_step(ctx, tape, images, random);
    // The second step's arena reset merges the first step's chunks into one block.
    model.train_step(ctx, tape, images, random);
    const std::uint64_t settled = allocation_count();
    for (int step = 0; step < 3; ++step) {
        const StepLosses losses = model.train_step(ctx, tape, images, random);
        CHECK(std::isfinite(losses.generator));
    }
    CHECK(allocation_count() == settled);
}

TEST_CASE("an arena scope frees what was allocated inside it, chunks grown inside included", "[autograd][arena]") {
    Arena arena(Device::Cpu);
    arena.allocate_floats(1000);
    const std::size_t capacity = arena.capacity();
    {
        Arena::Scope scope(arena);
        arena.allocate_floats(4u << 20);  // outgrows the first chunk: a second one
        CHECK(arena.capacity() > capacity);
    }
    CHECK(arena.capacity() == capacity);
    arena.allocate_floats(2u << 20);  // reuses nothing of the freed chunk: the peak is the larger of the two
    const std::size_t expected_peak = (1000 * sizeof(float) + 63) / 64 * 64 + (4u << 20) * sizeof(float);
    CHECK(arena.peak_bytes() == expected_peak);
    // The reset keeps one block of the peak's size: the same cycle then allocates nothing.
    arena.reset();
    const std::uint64_t settled = allocation_count();
    arena.allocate_floats(1000);
    {
        Arena::Scope scope(arena);
        arena.allocate_floats(4u << 20);
    }
    arena.allocate_floats(2u << 20);
    CHECK(allocation_count() == settled);
}

TEST_CASE("inference works in place: the same bits as out of place, in less memory", "[autograd][memory]") {
    Context ctx(Device::Cpu);
    SkipGanomaly model(small_architecture(3), {}, {});
    model.materialize(ctx);
    RandomStream random(4);
    model.initialize(ctx, random);
    model.allocate_training_buffers(ctx);  // so that a forward may record gradients
    // Non-trivial running statistics, so that the in-place norm has something to apply.
    for (ParameterBlock* statistics : {&model.generator.statistics, &model.discriminator.statistics})
        upload(statistics->values(), random_values(static_cast<std::size_t>(statistics->size()), 5, 0.5f, 1.5f));
    const Tensor images = Tensor::from_host(Shape{4, 3, 32, 32}, random_values(4 * 3 * 32 * 32, 6));

    auto run = [&](bool record_gradients) {
        Tape tape(ctx);
        ctx.arena().reset();
        tape.set_grad_enabled(record_gradients);
        const Var x = tape.constant(images.view());
        const Var x_hat = model.generator.forward(tape, x, BatchNormMode::RunningStatistics);
        const Discriminator::Output d = model.discriminator.forward(tape, x_hat, BatchNormMode::RunningStatistics);
        std::vector<float> out = Tensor::host_values(x_hat.value());
        for (float f : Tensor::host_values(d.features.value())) out.push_back(f);
        return std::pair{out, ctx.arena().peak_bytes()};
    };
    const auto [recorded, recorded_bytes] = run(true);
    const auto [inference, inference_bytes] = run(false);
    CHECK(inference == recorded);
    // A norm's and an activation's buffers fold into the convolution's (0.61 of the memory
    // here; the concatenated skips keep their own buffers).
    CHECK(static_cast<double>(inference_bytes) < 0.7 * static_cast<double>(recorded_bytes));
}

TEST_CASE("backward hands finished gradient buffers on: a long chain needs only a few", "[autograd][memory]") {
    Context ctx(Device::Cpu);
    ParameterBlock params(true);
    const int w = params.add("w", Shape{4096});
    params.materialize(ctx);
    upload(params.value(w), random_values(4096, 8));
    Tape tape(ctx);
    ctx.arena().reset();
    Var h = params.bind(tape, w);
    for (int layer = 0; layer < 20; ++layer) h = ops::tanh(h);
    Var loss = ops::mean(h);
    const std::size_t forward_bytes = ctx.arena().peak_bytes();
    tape.backward(loss);
    // Without reuse each of the 20 tanh outputs would keep its own 16 KiB gradient.
    const std::size_t gradient_bytes = ctx.arena().peak_bytes() - forward_bytes;
    CHECK(gradient_bytes <= 3 * 4096 * sizeof(float) + 4096);
    // And the gradient is still right: d mean(tanh^20(w)) / dw by the chain rule in double.
    const std::vector<float> values = Tensor::host_values(params.value(w));
    const std::vector<float> grads = Tensor::host_values(params.grad(w));
    for (std::size_t i = 0; i < values.size(); i += 511) {
        double x = values[i], derivative = 1.0 / 4096.0;
        for (int layer = 0; layer < 20; ++layer) {
            const double y = std::tanh(x);
            derivative *= 1.0 - y * y;
            x = y;
        }
        CHECK(grads[i] == Approx(derivative).epsilon(1e-4));
    }
}

TEST_CASE("a second backward on the same tape runs in the first one's gradient buffers", "[autograd][memory]") {
    Context ctx(Device::Cpu);
    ParameterBlock params(true);
    const int w = params.add("w", Shape{4096});
    params.materialize(ctx);
    upload(params.value(w), random_values(4096, 9));
    // One arena block for the whole test, so that the memory after a reset is the memory
    // before it (the arena keeps one block of the peak's size).
    ctx.arena().tensor(Shape{1 << 20});
    ctx.arena().reset();
    Tape tape(ctx);
    params.zero_grad(ctx);
    Var h = params.bind(tape, w);
    for (int layer = 0; layer < 20; ++layer) h = ops::tanh(h);
    tape.backward(ops::mean(h));
    const std::vector<float> once = Tensor::host_values(params.grad(w));
    // As a training step's discriminator backward follows its generator backward: a new
    // loss on the same nodes. Its gradients take no new memory; without the first pass's
    // buffers they would take two 16 KiB buffers and the loss's own.
    const Var second_loss = ops::mean(h);
    const std::size_t before_second_pass = ctx.arena().peak_bytes();
    tape.backward(second_loss);
    CHECK(ctx.arena().peak_bytes() == before_second_pass);
    // The same gradient again, accumulated: exactly twice the first.
    const std::vector<float> twice = Tensor::host_values(params.grad(w));
    for (std::size_t i = 0; i < once.size(); ++i) REQUIRE(twice[i] == 2.0f * once[i]);

    // clear() forgets those buffers: after the arena is reset, the values of a longer chain
    // take their memory, and a backward that still reused them would overwrite activations
    // its own rules read. Against the same chain on a fresh tape and context:
    auto deep_chain_gradient = [&](Context& c, Tape& t) {
        params.zero_grad(c);
        Var g = params.bind(t, w);
        for (int layer = 0; layer < 40; ++layer) g = ops::tanh(g);
        t.backward(ops::mean(g));
        return Tensor::host_values(params.grad(w));
    };
    tape.clear();
    ctx.arena().reset();
    const std::vector<float> after_clear = deep_chain_gradient(ctx, tape);
    Context fresh_ctx(Device::Cpu);
    Tape fresh_tape(fresh_ctx);
    CHECK(after_clear == deep_chain_gradient(fresh_ctx, fresh_tape));
}

// Tape::convolution_precision BFloat16 runs every convolution pass in bfloat16: the loss and
// every parameter's gradient move by bfloat16's rounding and no more (a pass wired to the
// wrong kernel would move them by their whole size); without AVX512-BF16 they keep float32's bits.
TEST_CASE("bfloat16 convolutions on the tape give float32's gradients up to bfloat16 rounding", "[autograd][bf16]") {
    Context ctx(Device::Cpu);
    TinyNet net(ctx);
    const Tensor input = Tensor::from_host(Shape{3, 2, 8, 8}, random_values(3 * 2 * 64, 21));
    const Tensor target = Tensor::from_host(Shape{3, 2, 8, 8}, random_values(3 * 2 * 64, 22, -0.9f, 0.9f));
    Tape tape(ctx);
    auto gradients = [&](Precision precision, float& loss) {
        net.params.zero_grad(ctx);
        tape.clear();
        ctx.arena().reset();
        tape.set_convolution_precision(precision);
        const Var l = net.loss(tape, input, target);
        loss = item(l);
        tape.backward(l);
        return Tensor::host_values(net.params.grads());
    };
    float loss32 = 0, loss16 = 0;
    const std::vector<float> float32 = gradients(Precision::Float32, loss32);
    const std::vector<float> bf16 = gradients(Precision::BFloat16, loss16);
    if (!kernels::bf16_available(Device::Cpu)) {
        REQUIRE(bf16 == float32);
        REQUIRE(loss16 == loss32);
        return;
    }
    REQUIRE(bf16 != float32);
    CHECK(std::abs(loss16 - loss32) < 1e-2 * std::abs(loss32));
    for (const ParameterBlock::Entry& e : net.params.entries()) {
        double difference = 0, norm = 0;
        for (std::int64_t i = e.offset; i < e.offset + e.shape.numel(); ++i) {
            const auto at = static_cast<std::size_t>(i);
            difference += (double{bf16[at]} - float32[at]) * (double{bf16[at]} - float32[at]);
            norm += double{float32[at]} * float32[at];
        }
        INFO(e.name << ": relative L2 difference " << std::sqrt(difference / norm));
        CHECK(std::sqrt(difference / norm) < 3e-2);
    }
}
