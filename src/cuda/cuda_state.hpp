// Internal to src/cuda: the definition of sga::CudaState and the checking helpers every
// CUDA source uses. Includes cuda_runtime.h, so only src/cuda files may include it.
// cuDNN stays out of this header on purpose: every cuDNN call and type lives in
// src/cuda/conv2d.cpp, which hangs its handle and caches on CudaState through the opaque
// ConvolutionResources below.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/error.hpp"

namespace sga::cuda {

// cuDNN handle (bound to the context's stream), tensor/filter/convolution descriptors and
// the algorithms chosen per convolution geometry. Defined in conv2d.cpp, created on the
// first convolution of a context, destroyed with the context.
struct ConvolutionResources;
void destroy_convolution_resources(ConvolutionResources* resources) noexcept;  // conv2d.cpp

}  // namespace sga::cuda

namespace sga {

// Everything a CUDA context owns besides its arena. One per Context; not shared between
// threads (a Context is used by one thread at a time).
struct CudaState {
    // The device the state was created on (the current device at the time).
    int device = 0;
    // Every kernel, cuDNN call, memset and copy_bytes(ctx, ...) of the context runs on this
    // stream. It is a *blocking* stream (cudaStreamCreate, not cudaStreamNonBlocking), so the
    // context-free copy_bytes(), which runs on the legacy default stream, is ordered after all
    // work queued here too (at the price of waiting for every other context's work).
    cudaStream_t stream = nullptr;
    // SKIPGANOMALY_CUDA_SYNC=1 in the environment when the state was created: every kernel
    // launch is followed by a stream synchronisation and a check (debugging aid: errors are
    // reported at the launch that caused them).
    bool synchronize_launches = false;
    // SKIPGANOMALY_CUDA_LOG_ALGORITHMS=1: every convolution algorithm choice (and fallback)
    // is written to stderr.
    bool log_algorithms = false;
    // Lazily created by conv2d.cpp; null until the first convolution.
    cuda::ConvolutionResources* convolution = nullptr;
    // One scratch buffer for cuDNN, grown to the largest request so far, never beyond
    // workspace_limit_bytes: convolution algorithms that need more are not chosen, and when
    // growing fails for lack of device memory the convolution falls back to the next
    // algorithm with a smaller workspace. Lowering the limit releases the buffer.
    void* workspace = nullptr;
    std::size_t workspace_bytes = 0;
    std::size_t workspace_limit_bytes = default_workspace_limit_bytes;
    // Testing hook: workspace growth beyond this many bytes fails as cudaMalloc does when the
    // device is out of memory (tests/test_cuda.cpp; set through cuda::simulate_free_device_memory).
    std::size_t simulated_free_device_bytes = static_cast<std::size_t>(-1);
    // Page-locked host memory through which copy_bytes(ctx, ...) moves host data, so that
    // the copy is a true asynchronous DMA on the context's stream; grown up to
    // staging_limit_bytes, larger copies go through it in pieces.
    void* staging = nullptr;
    std::size_t staging_bytes = 0;

    // 256 MiB: enough for the implicit-GEMM, Winograd and most FFT-tiling algorithms at the
    // model's shapes up to isize 256 at batch 64; the FFT algorithms that want gigabytes are
    // passed over. SKIPGANOMALY_CUDA_WORKSPACE_MIB overrides it for new contexts.
    static constexpr std::size_t default_workspace_limit_bytes = std::size_t{256} << 20;
    static constexpr std::size_t staging_limit_bytes = std::size_t{16} << 20;
};

namespace cuda {

// Throws DeviceError naming the expression, file:line and CUDA's message when `status` is
// not cudaSuccess. Clears the runtime's last-error slot first so a handled error is not
// reported again by the next launch check.
void check_cuda(cudaError_t status, const char* expression, const char* file, int line);
// After a kernel launch: checks cudaGetLastError() and, when the state asks for it,
// synchronises the stream and checks again.
void check_launch(const CudaState* state, const char* kernel, const char* file, int line);
// After a library call that reports its own errors (cuDNN): discards whatever the library
// left in the runtime's last-error slot (libraries may leave handled, non-sticky errors
// there, which the next launch check would misattribute) and, when the state asks for it,
// synchronises the stream and checks.
void check_library_call(const CudaState* state, const char* call, const char* file, int line);

// cudaSuccess when this binary holds a kernel image the current device can run
// (elementwise.cu asks about one of its kernels); the probe of runtime.cpp calls it.
cudaError_t check_kernel_image();

// The state of a CUDA context; throws DeviceError when `ctx` is not a CUDA context.
CudaState& state_of(Context& ctx);
inline cudaStream_t stream_of(Context& ctx) { return state_of(ctx).stream; }

// At least `bytes` of workspace on the state's device, valid until the next call; null when
// `bytes` is 0 and nothing was allocated yet. try_workspace() answers null when the buffer
// cannot grow to `bytes` (over the context's limit, or the device is out of memory) and
// leaves the old buffer in place; workspace() throws OutOfMemoryError then. Growing
// synchronises the stream before releasing the old buffer (it may still be in use).
void* try_workspace(CudaState& state, std::size_t bytes);
void* workspace(CudaState& state, std::size_t bytes);
// Waits for the stream, then frees the workspace.
void release_workspace(CudaState& state);
// Forgets the algorithms chosen so far (after a workspace-limit change); conv2d.cpp.
void forget_algorithm_choices(ConvolutionResources* resources) noexcept;

}  // namespace cuda
}  // namespace sga

#define SGA_CUDA_CHECK(expression) ::sga::cuda::check_cuda((expression), #expression, __FILE__, __LINE__)
// Use right after every <<<...>>> launch.
#define SGA_CUDA_CHECK_LAUNCH(state, kernel) ::sga::cuda::check_launch(&(state), kernel, __FILE__, __LINE__)
// Use right after every cuDNN call that enqueues work.
#define SGA_CUDA_CHECK_LIBRARY_CALL(state, call) \
    ::sga::cuda::check_library_call(&(state), call, __FILE__, __LINE__)
