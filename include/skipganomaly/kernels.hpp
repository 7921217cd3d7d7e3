// The kernel line. Everything above it (tensors, autograd, layers, the networks, the
// optimiser, Detector) is portable C++ calling sga::kernels::*; everything below it is a
// backend: sga::cpu::* (src/cpu, Eigen) and sga::cuda::* (src/cuda, CUDA + cuDNN).
// The list itself lives in kernels.def; a backend missing a kernel fails to link.
#pragma once

#include <cstdint>
#include <string>

#include "skipganomaly/context.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/error.hpp"

namespace sga {

// A 2-D convolution with square stride and symmetric zero padding.
struct ConvGeometry {
    std::int64_t batch = 0;
    std::int64_t in_channels = 0, in_height = 0, in_width = 0;
    std::int64_t out_channels = 0, out_height = 0, out_width = 0;
    std::int64_t kernel_height = 0, kernel_width = 0;
    std::int64_t stride = 1, padding = 0;

    static std::int64_t output_extent(std::int64_t in, std::int64_t kernel, std::int64_t stride, std::int64_t padding) {
        return (in + 2 * padding - kernel) / stride + 1;
    }
    // Multiply-adds of the forward pass (each backward pass costs the same).
    double multiply_adds() const {
        return static_cast<double>(batch) * out_channels * out_height * out_width * in_channels * kernel_height *
               kernel_width;
    }
    std::int64_t input_size() const { return batch * in_channels * in_height * in_width; }
    std::int64_t output_size() const { return batch * out_channels * out_height * out_width; }
    std::int64_t weight_size() const { return out_channels * in_channels * kernel_height * kernel_width; }
};

struct AdamHyperparameters {
    float learning_rate = 2e-4f;
    float beta1 = 0.5f;
    float beta2 = 0.999f;
    float epsilon = 1e-8f;
};

#define SGA_KERNEL(name, parameters, arguments) void name parameters;
namespace cpu {
#include "skipganomaly/kernels.def"
}
#if SKIPGANOMALY_WITH_CUDA
namespace cuda {
#include "skipganomaly/kernels.def"
}
#endif
#undef SGA_KERNEL

// The one place that branches on the device.
namespace kernels {
#if SKIPGANOMALY_WITH_CUDA
#define SGA_CUDA_BRANCH(name, arguments) \
    case Device::Cuda:                   \
        return ::sga::cuda::name arguments;
#else
#define SGA_CUDA_BRANCH(name, arguments) \
    case Device::Cuda:                   \
        throw DeviceError(std::string(#name) + ": this build of skipganomaly has no CUDA backend");
#endif
#define SGA_KERNEL(name, parameters, arguments)                                  \
    inline void name parameters {                                                \
        Arena::Scope scratch(ctx.arena());                                       \
        switch (ctx.device()) {                                                  \
            case Device::Cpu: {                                                  \
                CpuThreadLease threads;                                          \
                return ::sga::cpu::name arguments;                               \
            }                                                                    \
                SGA_CUDA_BRANCH(name, arguments)                                 \
            case Device::Auto:                                                   \
                break;                                                           \
        }                                                                        \
        throw DeviceError(std::string(#name) + ": context has an unresolved device"); \
    }
#include "skipganomaly/kernels.def"
#undef SGA_KERNEL
#undef SGA_CUDA_BRANCH
}  // namespace kernels

}  // namespace sga
