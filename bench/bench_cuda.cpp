// Google Benchmark of every CUDA kernel at the model's shapes (batch 64, 32x32 images, nc 3,
// ngf = ndf = 64). Names: BM_<Op><Dir>_Cuda/<shape>. Then the whole model at isize 32, 128
// and 256 (nc 3, ngf = ndf = 64, nz 100): BM_TrainStep_Cuda/isize<S>_batch64 (G and D
// updates, as bench_model_cpu's BM_TrainStep_Cpu) and BM_ScoreBatch_Cuda/isize<S>_batch<N>
// (N 64 and 1, running statistics, scores read back to the host), with an images/s counter.
//
// Timing: GPU time between two cudaEvents recorded on the context's stream around each
// iteration (UseManualTime), after one untimed warm-up call that pays for cuDNN's algorithm
// choice, workspace growth and arena growth. Each iteration waits for its stop event, so a
// kernel shorter than the launch latency reports roughly that latency: honest for a
// training step made of many small kernels.
//
// Counters: GFLOP/s for convolutions (2 flops per multiply-add; each of the three
// primitives does the forward's multiply-adds), GB/s for everything else, counting the
// bytes a kernel must move at least (each input read once, each output written once, each
// accumulated output read and written), not the extra passes an implementation makes (batch
// norm reads its input twice more for the statistics). Read them against the H200's peak:
// ~67 TFLOP/s FP32 (non-tensor-core) and ~4.8 TB/s HBM3e.
//
// Without a usable GPU (or without the CUDA backend) the program says why and exits 0, or 1
// when SKIPGANOMALY_REQUIRE_GPU=1 is set (scripts/run-gpu-checks.sh sets it).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "skipganomaly/device.hpp"

#if SKIPGANOMALY_WITH_CUDA
#include "cuda/runtime.hpp"
#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/engine/kernels.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"
#include "skipganomaly/engine/tensor.hpp"

namespace {

// The one context every benchmark runs on; created in main() once a GPU is known present.
std::unique_ptr<sga::Context> context;

constexpr std::int64_t batch = 64;

// n floats on the GPU, uniform in (low, high].
sga::Tensor device_tensor(std::int64_t n, std::uint64_t seed, float low = -1.0f, float high = 1.0f) {
    sga::Tensor t(sga::Shape{n}, sga::Device::Cuda);
    sga::kernels::fill_uniform(*context, n, low, high, seed, 0, t.data());
    return t;
}

// Times `body` with CUDA events and reports `work / time` (in units of 1e9 per second) as
// the counter `unit`.
template <class Body>
void time_on_gpu(benchmark::State& state, Body&& body, double work, const char* unit) {
    sga::Context& ctx = *context;
    ctx.arena().reset();
    body();  // warm-up, untimed
    ctx.synchronize();
    sga::cuda::EventTimer timer(ctx);
    double total_seconds = 0.0;
    for (auto _ : state) {
        ctx.arena().reset();  // the loss kernels take their partial sums from the arena
        timer.start();
        body();
        timer.stop();
        const double seconds = timer.elapsed_seconds();
        state.SetIterationTime(seconds);
        total_seconds += seconds;
    }
    if (total_seconds > 0.0)
        state.counters[unit] = work * static_cast<double>(state.iterations()) / total_seconds / 1e9;
}

template <class Function>
void add(const std::string& name, Function&& function) {
    benchmark::RegisterBenchmark(name.c_str(), std::forward<Function>(function))
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
}

std::string dims(std::initializer_list<std::int64_t> values) {
    std::string s;
    for (const std::int64_t v : values) {
        if (!s.empty()) s += 'x';
        s += std::to_string(v);
    }
    return s;
}

constexpr double float_bytes = sizeof(float);

// ---- convolutions ----------------------------------------------------------------------

sga::ConvGeometry conv(std::int64_t in_channels, std::int64_t size, std::int64_t out_channels, std::int64_t kernel,
                       std::int64_t stride, std::int64_t padding) {
    sga::ConvGeometry g;
    g.batch = batch;
    g.in_channels = in_channels;
    g.in_height = g.in_width = size;
    g.out_channels = out_channels;
    g.kernel_height = g.kernel_width = kernel;
    g.stride = stride;
    g.padding = padding;
    g.out_height = g.out_width = sga::ConvGeometry::output_extent(size, kernel, stride, padding);
    return g;
}

std::string conv_name(std::int64_t in_channels, std::int64_t size, std::int64_t out_channels, std::int64_t kernel,
                      std::int64_t stride, std::int64_t padding) {
    return dims({batch, in_channels, size, size}) + "_to_" + std::to_string(out_channels) + "_k" +
           std::to_string(kernel) + "s" + std::to_string(stride) + "p" + std::to_string(padding);
}

// A Conv2d layer (in_channels @ size -> out_channels): its forward, backward-data and
// backward-filter are the three primitives on its own geometry.
void add_conv2d(std::int64_t in_channels, std::int64_t size, std::int64_t out_channels, std::int64_t kernel,
                std::int64_t stride, std::int64_t padding) {
    const sga::ConvGeometry g = conv(in_channels, size, out_channels, kernel, stride, padding);
    const std::string shape = conv_name(in_channels, size, out_channels, kernel, stride, padding);
    const double flops = 2.0 * g.multiply_adds();
    add("BM_Conv2dForward_Cuda/" + shape, [g, flops](benchmark::State& state) {
        const sga::Tensor input = device_tensor(g.input_size(), 1), weight = device_tensor(g.weight_size(), 2),
                          output = device_tensor(g.output_size(), 3);
        time_on_gpu(state, [&] { sga::kernels::conv2d_forward(*context, g, input.data(), weight.data(), output.data(), 0.0f); },
                    flops, "GFLOP/s");
    });
    add("BM_Conv2dBackwardData_Cuda/" + shape, [g, flops](benchmark::State& state) {
        const sga::Tensor grad_output = device_tensor(g.output_size(), 1), weight = device_tensor(g.weight_size(), 2),
                          grad_input = device_tensor(g.input_size(), 3);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::conv2d_backward_data(*context, g, grad_output.data(), weight.data(),
                                                           grad_input.data(), 1.0f);
                    },
                    flops, "GFLOP/s");
    });
    add("BM_Conv2dBackwardFilter_Cuda/" + shape, [g, flops](benchmark::State& state) {
        const sga::Tensor input = device_tensor(g.input_size(), 1), grad_output = device_tensor(g.output_size(), 2),
                          grad_weight = device_tensor(g.weight_size(), 3);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::conv2d_backward_filter(*context, g, input.data(), grad_output.data(),
                                                             grad_weight.data(), 1.0f);
                    },
                    flops, "GFLOP/s");
    });
}

// A ConvTranspose2d layer (in_channels @ size -> out_channels @ 2 size, k4 s2 p1) is the
// convolution out_channels @ 2 size -> in_channels @ size run backwards: its forward is that
// convolution's backward-data, its backward-data that convolution's forward, and its weight
// (in_channels, out_channels, 4, 4) gradient that convolution's backward-filter.
void add_conv_transpose2d(std::int64_t in_channels, std::int64_t size, std::int64_t out_channels) {
    const sga::ConvGeometry g = conv(out_channels, 2 * size, in_channels, 4, 2, 1);
    const std::string shape = dims({batch, in_channels, size, size}) + "_to_" + std::to_string(out_channels) + "_k4s2p1";
    const double flops = 2.0 * g.multiply_adds();
    add("BM_ConvTranspose2dForward_Cuda/" + shape, [g, flops](benchmark::State& state) {
        const sga::Tensor input = device_tensor(g.output_size(), 1), weight = device_tensor(g.weight_size(), 2),
                          output = device_tensor(g.input_size(), 3);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::conv2d_backward_data(*context, g, input.data(), weight.data(), output.data(),
                                                           0.0f);
                    },
                    flops, "GFLOP/s");
    });
    add("BM_ConvTranspose2dBackwardData_Cuda/" + shape, [g, flops](benchmark::State& state) {
        const sga::Tensor grad_output = device_tensor(g.input_size(), 1), weight = device_tensor(g.weight_size(), 2),
                          grad_input = device_tensor(g.output_size(), 3);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::conv2d_forward(*context, g, grad_output.data(), weight.data(), grad_input.data(),
                                                     1.0f);
                    },
                    flops, "GFLOP/s");
    });
    add("BM_ConvTranspose2dBackwardFilter_Cuda/" + shape, [g, flops](benchmark::State& state) {
        // The transposed layer's input plays the convolution's grad_output and vice versa.
        const sga::Tensor layer_input = device_tensor(g.output_size(), 1),
                          layer_grad_output = device_tensor(g.input_size(), 2),
                          grad_weight = device_tensor(g.weight_size(), 3);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::conv2d_backward_filter(*context, g, layer_grad_output.data(), layer_input.data(),
                                                             grad_weight.data(), 1.0f);
                    },
                    flops, "GFLOP/s");
    });
}

void add_channel_bias(std::int64_t channels, std::int64_t size) {
    const std::int64_t spatial = size * size, n = batch * channels * spatial;
    const std::string shape = dims({batch, channels, size, size});
    add("BM_AddChannelBiasForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor bias = device_tensor(channels, 1), output = device_tensor(n, 2);
        time_on_gpu(state, [&] { sga::kernels::add_channel_bias(*context, batch, channels, spatial, bias.data(), output.data()); },
                    2.0 * n * float_bytes, "GB/s");
    });
    add("BM_AddChannelBiasBackward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor grad_output = device_tensor(n, 1), grad_bias = device_tensor(channels, 2);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::add_channel_bias_backward(*context, batch, channels, spatial, grad_output.data(),
                                                                grad_bias.data());
                    },
                    n * float_bytes, "GB/s");
    });
}

// ---- batch norm ------------------------------------------------------------------------

void add_batch_norm(std::int64_t channels, std::int64_t size) {
    const std::int64_t spatial = size * size, n = batch * channels * spatial;
    const std::string shape = dims({batch, channels, size, size});
    add("BM_BatchNormForwardTraining_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor input = device_tensor(n, 1), output = device_tensor(n, 2), weight = device_tensor(channels, 3),
                          bias = device_tensor(channels, 4), mean = device_tensor(channels, 5),
                          inv_std = device_tensor(channels, 6), running_mean = device_tensor(channels, 7),
                          running_var = device_tensor(channels, 8, 0.5f, 1.5f);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::batch_norm_forward_training(*context, batch, channels, spatial, input.data(),
                                                                  weight.data(), bias.data(), output.data(), mean.data(),
                                                                  inv_std.data(), running_mean.data(),
                                                                  running_var.data(), 0.1f, 1e-5f);
                    },
                    2.0 * n * float_bytes, "GB/s");
    });
    add("BM_BatchNormForwardInference_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor input = device_tensor(n, 1), output = device_tensor(n, 2), weight = device_tensor(channels, 3),
                          bias = device_tensor(channels, 4), running_mean = device_tensor(channels, 5),
                          running_var = device_tensor(channels, 6, 0.5f, 1.5f);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::batch_norm_forward_inference(*context, batch, channels, spatial, input.data(),
                                                                   weight.data(), bias.data(), running_mean.data(),
                                                                   running_var.data(), 1e-5f, output.data());
                    },
                    2.0 * n * float_bytes, "GB/s");
    });
    add("BM_BatchNormBackward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor input = device_tensor(n, 1), grad_output = device_tensor(n, 2), grad_input = device_tensor(n, 3),
                          weight = device_tensor(channels, 4), mean = device_tensor(channels, 5),
                          inv_std = device_tensor(channels, 6, 0.5f, 2.0f), grad_weight = device_tensor(channels, 7),
                          grad_bias = device_tensor(channels, 8);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::batch_norm_backward(*context, batch, channels, spatial, input.data(),
                                                          grad_output.data(), weight.data(), mean.data(), inv_std.data(),
                                                          grad_input.data(), grad_weight.data(), grad_bias.data());
                    },
                    4.0 * n * float_bytes, "GB/s");
    });
}

// ---- activations -----------------------------------------------------------------------

// forward(ctx, n, input, output) and backward(ctx, n, saved, grad_output, grad_input), the
// saved tensor being the forward input (leaky ReLU) or output (tanh, sigmoid).
using ActivationForward = void (*)(sga::Context&, std::int64_t, const float*, float*);
using ActivationBackward = void (*)(sga::Context&, std::int64_t, const float*, const float*, float*);

void add_activations(const std::string& op, const std::string& shape, std::int64_t n, ActivationForward forward,
                     ActivationBackward backward) {
    add("BM_" + op + "Forward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor input = device_tensor(n, 1), output = device_tensor(n, 2);
        time_on_gpu(state, [&] { forward(*context, n, input.data(), output.data()); }, 2.0 * n * float_bytes, "GB/s");
    });
    add("BM_" + op + "Backward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor saved = device_tensor(n, 1, 0.0f, 1.0f), grad_output = device_tensor(n, 2),
                          grad_input = device_tensor(n, 3);
        time_on_gpu(state, [&] { backward(*context, n, saved.data(), grad_output.data(), grad_input.data()); },
                    4.0 * n * float_bytes, "GB/s");
    });
}

void leaky_relu_forward(sga::Context& ctx, std::int64_t n, const float* input, float* output) {
    sga::kernels::leaky_relu_forward(ctx, n, input, output, 0.2f);
}
void leaky_relu_backward(sga::Context& ctx, std::int64_t n, const float* input, const float* grad_output,
                         float* grad_input) {
    sga::kernels::leaky_relu_backward(ctx, n, input, grad_output, grad_input, 0.2f);
}
void relu_forward(sga::Context& ctx, std::int64_t n, const float* input, float* output) {
    sga::kernels::leaky_relu_forward(ctx, n, input, output, 0.0f);
}
void relu_backward(sga::Context& ctx, std::int64_t n, const float* input, const float* grad_output,
                   float* grad_input) {
    sga::kernels::leaky_relu_backward(ctx, n, input, grad_output, grad_input, 0.0f);
}

// ---- concat ----------------------------------------------------------------------------

void add_concat(std::int64_t channels, std::int64_t size) {
    const std::int64_t spatial = size * size, half = batch * channels * spatial;
    const std::string shape = dims({batch, channels, size, size}) + "_plus_" + std::to_string(channels);
    add("BM_ConcatChannelsForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor a = device_tensor(half, 1), b = device_tensor(half, 2), output = device_tensor(2 * half, 3);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::concat_channels_forward(*context, batch, channels, channels, spatial, a.data(),
                                                              b.data(), output.data());
                    },
                    4.0 * half * float_bytes, "GB/s");
    });
    add("BM_ConcatChannelsBackward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor grad_output = device_tensor(2 * half, 1), grad_a = device_tensor(half, 2),
                          grad_b = device_tensor(half, 3);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::concat_channels_backward(*context, batch, channels, channels, spatial,
                                                               grad_output.data(), grad_a.data(), grad_b.data());
                    },
                    6.0 * half * float_bytes, "GB/s");
    });
}

// ---- fills and elementwise -------------------------------------------------------------

void add_elementwise(const std::string& shape, std::int64_t n) {
    add("BM_FillForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor output = device_tensor(n, 1);
        time_on_gpu(state, [&] { sga::kernels::fill(*context, n, 0.5f, output.data()); }, n * float_bytes, "GB/s");
    });
    add("BM_FillNormalForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor output = device_tensor(n, 1);
        time_on_gpu(state, [&] { sga::kernels::fill_normal(*context, n, 0.0f, 0.02f, 42, 0, output.data()); },
                    n * float_bytes, "GB/s");
    });
    add("BM_FillUniformForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor output = device_tensor(n, 1);
        time_on_gpu(state, [&] { sga::kernels::fill_uniform(*context, n, -1.0f, 1.0f, 42, 0, output.data()); },
                    n * float_bytes, "GB/s");
    });
    add("BM_AddScaledForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor a = device_tensor(n, 1), b = device_tensor(n, 2), output = device_tensor(n, 3);
        time_on_gpu(state, [&] { sga::kernels::add_scaled(*context, n, 0.5f, a.data(), -1.0f, b.data(), output.data()); },
                    3.0 * n * float_bytes, "GB/s");
    });
    add("BM_AccumulateBroadcastForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor scalar = device_tensor(1, 1), output = device_tensor(n, 2);
        time_on_gpu(state, [&] { sga::kernels::accumulate_broadcast(*context, n, 0.5f, scalar.data(), output.data()); },
                    2.0 * n * float_bytes, "GB/s");
    });
    add("BM_AccumulateScaledForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor input = device_tensor(n, 1), output = device_tensor(n, 2);
        time_on_gpu(state, [&] { sga::kernels::accumulate_scaled(*context, n, 0.5f, input.data(), output.data()); },
                    3.0 * n * float_bytes, "GB/s");
    });
}

// ---- losses ----------------------------------------------------------------------------

void add_losses(const std::string& shape, std::int64_t n) {
    add("BM_MeanForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor input = device_tensor(n, 1), result = device_tensor(1, 2);
        time_on_gpu(state, [&] { sga::kernels::mean_forward(*context, n, input.data(), result.data()); }, n * float_bytes,
                    "GB/s");
    });
    add("BM_BceLossForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor prediction = device_tensor(n, 1, 0.0f, 1.0f), target = device_tensor(n, 2, 0.0f, 1.0f),
                          loss = device_tensor(1, 3);
        time_on_gpu(state, [&] { sga::kernels::bce_loss_forward(*context, n, prediction.data(), target.data(), loss.data()); },
                    2.0 * n * float_bytes, "GB/s");
    });
    add("BM_BceLossBackward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor prediction = device_tensor(n, 1, 0.0f, 1.0f), target = device_tensor(n, 2, 0.0f, 1.0f),
                          grad_loss = device_tensor(1, 3), grad_prediction = device_tensor(n, 4);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::bce_loss_backward(*context, n, prediction.data(), target.data(), grad_loss.data(),
                                                        grad_prediction.data());
                    },
                    4.0 * n * float_bytes, "GB/s");
    });
    add("BM_L1LossForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor a = device_tensor(n, 1), b = device_tensor(n, 2), loss = device_tensor(1, 3);
        time_on_gpu(state, [&] { sga::kernels::l1_loss_forward(*context, n, a.data(), b.data(), loss.data()); },
                    2.0 * n * float_bytes, "GB/s");
    });
    add("BM_L1LossBackward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor a = device_tensor(n, 1), b = device_tensor(n, 2), grad_loss = device_tensor(1, 3),
                          grad_a = device_tensor(n, 4), grad_b = device_tensor(n, 5);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::l1_loss_backward(*context, n, a.data(), b.data(), grad_loss.data(), grad_a.data(),
                                                       grad_b.data());
                    },
                    6.0 * n * float_bytes, "GB/s");
    });
    add("BM_MseLossForward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor a = device_tensor(n, 1), b = device_tensor(n, 2), loss = device_tensor(1, 3);
        time_on_gpu(state, [&] { sga::kernels::mse_loss_forward(*context, n, a.data(), b.data(), loss.data()); },
                    2.0 * n * float_bytes, "GB/s");
    });
    add("BM_MseLossBackward_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor a = device_tensor(n, 1), b = device_tensor(n, 2), grad_loss = device_tensor(1, 3),
                          grad_a = device_tensor(n, 4), grad_b = device_tensor(n, 5);
        time_on_gpu(state,
                    [&] {
                        sga::kernels::mse_loss_backward(*context, n, a.data(), b.data(), grad_loss.data(), grad_a.data(),
                                                        grad_b.data());
                    },
                    6.0 * n * float_bytes, "GB/s");
    });
}

void add_per_sample_mse(std::int64_t sample_size, const std::string& shape) {
    add("BM_PerSampleMseForward_Cuda/" + shape, [=](benchmark::State& state) {
        const std::int64_t n = batch * sample_size;
        const sga::Tensor a = device_tensor(n, 1), b = device_tensor(n, 2), result = device_tensor(batch, 3);
        time_on_gpu(state, [&] { sga::kernels::per_sample_mse(*context, batch, sample_size, a.data(), b.data(), result.data()); },
                    2.0 * n * float_bytes, "GB/s");
    });
}

// ---- Adam ------------------------------------------------------------------------------

void add_adam(const std::string& shape, std::int64_t n) {
    add("BM_AdamStep_Cuda/" + shape, [=](benchmark::State& state) {
        const sga::Tensor parameters = device_tensor(n, 1), gradients = device_tensor(n, 2),
                          first_moment = device_tensor(n, 3), second_moment = device_tensor(n, 4, 0.0f, 1.0f);
        const sga::AdamHyperparameters hyper;
        time_on_gpu(state,
                    [&] {
                        sga::kernels::adam_step(*context, n, hyper, 10, parameters.data(), gradients.data(),
                                                first_moment.data(), second_moment.data());
                    },
                    7.0 * n * float_bytes, "GB/s");
    });
}

void register_all() {
    // Generator encoder (and the discriminator's first three layers): k4 s2 p1.
    add_conv2d(3, 32, 64, 4, 2, 1);
    add_conv2d(64, 16, 128, 4, 2, 1);
    add_conv2d(128, 8, 256, 4, 2, 1);
    add_conv2d(256, 4, 512, 4, 2, 1);
    add_conv2d(512, 2, 512, 4, 2, 1);
    // Generator decoder: transposed k4 s2 p1, inputs carrying the skip concatenations.
    add_conv_transpose2d(512, 1, 512);
    add_conv_transpose2d(1024, 2, 256);
    add_conv_transpose2d(512, 4, 128);
    add_conv_transpose2d(256, 8, 64);
    add_conv_transpose2d(128, 16, 3);
    // Discriminator head.
    add_conv2d(256, 4, 100, 4, 1, 0);
    add_conv2d(100, 1, 1, 3, 1, 1);
    add_channel_bias(3, 32);
    add_channel_bias(100, 1);

    for (const auto& [channels, size] : std::vector<std::pair<std::int64_t, std::int64_t>>{
             {64, 16}, {128, 8}, {256, 4}, {512, 2}})
        add_batch_norm(channels, size);

    add_activations("LeakyRelu", "64x64x16x16", batch * 64 * 16 * 16, leaky_relu_forward, leaky_relu_backward);
    add_activations("LeakyRelu", "64x512x2x2", batch * 512 * 2 * 2, leaky_relu_forward, leaky_relu_backward);
    add_activations("Relu", "64x128x8x8", batch * 128 * 8 * 8, relu_forward, relu_backward);
    add_activations("Tanh", "64x3x32x32", batch * 3 * 32 * 32, sga::kernels::tanh_forward,
                    sga::kernels::tanh_backward);
    add_activations("Sigmoid", "64x1x1x1", batch, sga::kernels::sigmoid_forward, sga::kernels::sigmoid_backward);

    add_concat(512, 2);
    add_concat(256, 4);
    add_concat(128, 8);
    add_concat(64, 16);

    // Images, and a flat parameter block the size of the generator's (~16.7 M floats).
    add_elementwise("64x3x32x32", batch * 3 * 32 * 32);
    add_elementwise("16777216", std::int64_t{1} << 24);

    add_losses("64x3x32x32", batch * 3 * 32 * 32);  // reconstruction (L1) and image-level losses
    add_losses("64x256x4x4", batch * 256 * 4 * 4);  // discriminator feature matching (MSE)
    add_losses("64", batch);                        // the discriminator's real/fake outputs (BCE)
    add_per_sample_mse(3 * 32 * 32, "64x3x32x32");
    add_per_sample_mse(256 * 4 * 4, "64x256x4x4");

    // The convolution weights of the generator (6949888 encoder + 9705472 decoder) and of the
    // discriminator; biases and batch-norm parameters add a few thousand more.
    add_adam("16655360", 16655360);
    add_adam("1068932", 1068932);
}

// ---- the whole model ---------------------------------------------------------------------

// One full-size model per benchmark, on the shared context. Timed between CUDA events like
// the kernels, but a step includes its host synchronisations (the losses are read back),
// so this is the end-to-end time of a step, host gaps included.
struct ModelBench {
    sga::SkipGanomaly model;
    sga::Tensor images;
    sga::Tape tape;
    sga::RandomStream random{0};
    ModelBench(int image_size, std::int64_t images_in_batch)
        : model(architecture(image_size), {}, {}),
          images(sga::Shape{images_in_batch, 3, image_size, image_size}, sga::Device::Cuda),
          tape(*context) {
        model.materialize(*context);
        model.initialize(*context, random);
        sga::kernels::fill_uniform(*context, images.numel(), -1.0f, 1.0f, 1, 0, images.data());
    }
    static sga::Architecture architecture(int image_size) {
        sga::Architecture a;
        a.image_size = image_size;
        a.channels = 3;
        return a;
    }
};

template <class Body>
void time_model(benchmark::State& state, Body&& body, std::int64_t images_per_call) {
    sga::Context& ctx = *context;
    body();  // warm-up: algorithm choice, workspace and arena growth
    body();
    ctx.synchronize();
    sga::cuda::EventTimer timer(ctx);
    double total_seconds = 0.0;
    for (auto _ : state) {
        timer.start();
        body();
        timer.stop();
        const double seconds = timer.elapsed_seconds();
        state.SetIterationTime(seconds);
        total_seconds += seconds;
    }
    if (total_seconds > 0.0)
        state.counters["images/s"] =
            static_cast<double>(images_per_call) * static_cast<double>(state.iterations()) / total_seconds;
}

void add_model(int image_size) {
    const std::string size = "isize" + std::to_string(image_size);
    add("BM_TrainStep_Cuda/" + size + "_batch64", [=](benchmark::State& state) {
        ModelBench bench(image_size, batch);
        time_model(state, [&] { bench.model.train_step(*context, bench.tape, bench.images.view(), bench.random); },
                   batch);
    });
    for (const std::int64_t n : {batch, std::int64_t{1}}) {
        add("BM_ScoreBatch_Cuda/" + size + "_batch" + std::to_string(n), [=](benchmark::State& state) {
            ModelBench bench(image_size, n);
            time_model(state,
                       [&] {
                           benchmark::DoNotOptimize(bench.model.score(*context, bench.tape, bench.images.view(),
                                                                      sga::BatchNormMode::RunningStatistics, false));
                       },
                       n);
        });
    }
}

void register_models() {
    for (const int image_size : {32, 128, 256}) add_model(image_size);
}

}  // namespace
#endif  // SKIPGANOMALY_WITH_CUDA

namespace {
// SKIPGANOMALY_REQUIRE_GPU=1: no usable GPU is a failure, not a skip.
int no_gpu_exit_code() {
    const char* value = std::getenv("SKIPGANOMALY_REQUIRE_GPU");
    return value && *value && std::string(value) != "0" ? 1 : 0;
}
}  // namespace

int main(int argc, char** argv) {
#if SKIPGANOMALY_WITH_CUDA
    if (!sga::cuda_device_available()) {
        std::cout << "bench_cuda: no usable CUDA device (" << sga::cuda_unavailable_reason()
                  << "); nothing to benchmark\n";
        return no_gpu_exit_code();
    }
    context = std::make_unique<sga::Context>(sga::Device::Cuda, 0);
    register_all();
    register_models();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    context.reset();
    return 0;
#else
    (void)argc;
    (void)argv;
    std::cout << "bench_cuda: this build of skipganomaly has no CUDA backend; nothing to benchmark\n";
    return no_gpu_exit_code();
#endif
}
