// The kernel line. Everything above it (tensors, autograd, layers, the networks, the
// optimiser, Detector) is portable C++ calling sga::kernels::*; everything below it is a
// backend: sga::cpu::* (src/cpu, Eigen) and sga::cuda::* (src/cuda, CUDA + cuDNN, built as a
// module loaded at run time). The list itself lives in kernels.def; a backend missing a kernel
// fails to link (the CPU library, or the CUDA module with its kernel table).
#pragma once

#include <cstdint>
#include <string>

#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/model_options.hpp"

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

// The product of a convolution that a packed weight serves (conv2d_pack_weight, kernels.def):
// Forward is conv2d_forward's; BackwardData is conv2d_backward_data's, which is also the
// forward of a transposed convolution.
enum class ConvPass { Forward, BackwardData };

// The CPU backend, part of the library.
#define SGA_KERNEL(name, parameters, arguments) SKIPGANOMALY_API void name parameters;
namespace cpu {
#include "skipganomaly/engine/kernels.def"
// Floats of the CPU's packed weight for `geometry` (its batch is ignored): 0 or the active taps.
SKIPGANOMALY_API std::int64_t conv2d_packed_floats(const ConvGeometry& geometry, ConvPass pass);

// ---- bfloat16 convolutions (CPU only: AVX512-BF16) ----
// Whether this processor runs the bfloat16 kernels (and SKIPGANOMALY_DISABLE_BF16 does not
// turn them off).
SKIPGANOMALY_API bool bf16_available();
// 32-bit words of the bfloat16 packing of a weight for `geometry` and `pass` (batch ignored).
SKIPGANOMALY_API std::int64_t conv2d_bf16_packed_words(const ConvGeometry& geometry, ConvPass pass);
// packed = `weight` (Cout, Cin, KH, KW) rounded to bfloat16 (nearest-even), in the order the
// kernel reads it. Runs on any processor.
SKIPGANOMALY_API void conv2d_pack_weight_bf16(Context& ctx, const ConvGeometry& geometry, ConvPass pass,
                                              const float* weight, std::uint32_t* packed);
// As conv2d_packed, with the input rounded to bfloat16 and the products summed in float32
// (vdpbf16ps); output = result + beta * output (beta 0 or 1). An image's result does not
// depend on the batch nor the thread count. Throws DeviceError without bf16_available().
SKIPGANOMALY_API void conv2d_packed_bf16(Context& ctx, const ConvGeometry& geometry, ConvPass pass, const float* input,
                                         const std::uint32_t* packed, float* output, float beta = 0.0f);
// As conv2d_backward_filter, with input and grad_output rounded to bfloat16 and the products
// summed in float32; the result does not depend on the thread count. Throws DeviceError
// without bf16_available().
SKIPGANOMALY_API void conv2d_backward_filter_bf16(Context& ctx, const ConvGeometry& geometry, const float* input,
                                                  const float* grad_output, float* grad_weight, float beta);
}
#undef SGA_KERNEL
// The CUDA backend lives in a separate module (libskipganomaly_cuda.so, src/cuda) that the
// library loads at run time when a CUDA context is first asked for; programs never link it.
// These declarations are the module's own (its definitions are checked against them); the
// dispatcher below reaches them through the module's kernel table.
#define SGA_KERNEL(name, parameters, arguments) void name parameters;
namespace cuda {
#include "skipganomaly/engine/kernels.def"
}
#undef SGA_KERNEL

namespace detail {
// One pointer per kernel of the list, filled in by the CUDA module.
struct CudaKernelTable {
#define SGA_KERNEL(name, parameters, arguments) void(*name) parameters = nullptr;
#include "skipganomaly/engine/kernels.def"
#undef SGA_KERNEL
};
// The loaded CUDA module's kernels. Throws DeviceError when no module is loaded (then no
// CUDA context can exist either, so a dispatch never gets here without one).
SKIPGANOMALY_API const CudaKernelTable& cuda_kernels();
}  // namespace detail

// The one place that branches on the device.
namespace kernels {
#define SGA_KERNEL(name, parameters, arguments)                                  \
    inline void name parameters {                                                \
        Arena::Scope scratch(ctx.arena());                                       \
        switch (ctx.device()) {                                                  \
            case Device::Cpu: {                                                  \
                CpuThreadLease threads;                                          \
                return ::sga::cpu::name arguments;                               \
            }                                                                    \
            case Device::Cuda:                                                   \
                return ::sga::detail::cuda_kernels().name arguments;             \
            case Device::Auto:                                                   \
                break;                                                           \
        }                                                                        \
        throw DeviceError(std::string(#name) + ": context has an unresolved device"); \
    }
#include "skipganomaly/engine/kernels.def"
#undef SGA_KERNEL

// Floats of what conv2d_pack_weight keeps for `geometry` (its batch is ignored) on `device`:
// the CPU, a compact copy of the active taps when some taps only read padding, else nothing
// (it reads the weight where it lies); CUDA nothing (cuDNN picks its own algorithms per call).
inline std::int64_t conv2d_packed_floats(Device device, const ConvGeometry& geometry, ConvPass pass) {
    return device == Device::Cpu ? cpu::conv2d_packed_floats(geometry, pass) : 0;
}

// bfloat16 inference runs on the CPU only (cpu::conv2d_packed_bf16 above); elsewhere the
// callers take float32 (Precision, model_options.hpp).
inline bool bf16_available(Device device) { return device == Device::Cpu && cpu::bf16_available(); }
inline std::int64_t conv2d_bf16_packed_words(Device device, const ConvGeometry& geometry, ConvPass pass) {
    return device == Device::Cpu ? cpu::conv2d_bf16_packed_words(geometry, pass) : 0;
}
inline void conv2d_pack_weight_bf16(Context& ctx, const ConvGeometry& geometry, ConvPass pass, const float* weight,
                                    std::uint32_t* packed) {
    if (ctx.device() != Device::Cpu) throw DeviceError("conv2d_pack_weight_bf16: bfloat16 kernels run on the CPU only");
    Arena::Scope scratch(ctx.arena());
    CpuThreadLease threads;
    cpu::conv2d_pack_weight_bf16(ctx, geometry, pass, weight, packed);
}
inline void conv2d_packed_bf16(Context& ctx, const ConvGeometry& geometry, ConvPass pass, const float* input,
                               const std::uint32_t* packed, float* output, float beta = 0.0f) {
    if (ctx.device() != Device::Cpu) throw DeviceError("conv2d_packed_bf16: bfloat16 kernels run on the CPU only");
    Arena::Scope scratch(ctx.arena());
    CpuThreadLease threads;
    cpu::conv2d_packed_bf16(ctx, geometry, pass, input, packed, output, beta);
}
inline void conv2d_backward_filter_bf16(Context& ctx, const ConvGeometry& geometry, const float* input,
                                        const float* grad_output, float* grad_weight, float beta) {
    if (ctx.device() != Device::Cpu)
        throw DeviceError("conv2d_backward_filter_bf16: bfloat16 kernels run on the CPU only");
    Arena::Scope scratch(ctx.arena());
    CpuThreadLease threads;
    cpu::conv2d_backward_filter_bf16(ctx, geometry, input, grad_output, grad_weight, beta);
}
}  // namespace kernels

}  // namespace sga
