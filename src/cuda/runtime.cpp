// The CUDA runtime side of the backend: device discovery, memory, copies, the per-context
// state (stream, workspace) and the error checks. Host-compiled; cuDNN lives in conv2d.cpp.
#include "cuda/runtime.hpp"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "cuda/cuda_state.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/memory.hpp"

namespace sga::cuda {
namespace {

std::string describe(cudaError_t status) {
    return std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
}

// For destructors and deallocate(): report, never throw. cudaErrorCudartUnloading means the
// process is exiting and the runtime already released everything; nothing to report.
void log_failure(cudaError_t status, const char* expression) noexcept {
    if (status == cudaSuccess) return;
    (void)cudaGetLastError();
    if (status == cudaErrorCudartUnloading) return;
    std::fprintf(stderr, "skipganomaly: %s failed: %s: %s\n", expression, cudaGetErrorName(status),
                 cudaGetErrorString(status));
}

constexpr std::size_t workspace_granularity = std::size_t{1} << 20;

}  // namespace

void check_cuda(cudaError_t status, const char* expression, const char* file, int line) {
    if (status == cudaSuccess) return;
    (void)cudaGetLastError();  // clear the slot so the next launch check does not see this error
    throw DeviceError(std::string("CUDA call '") + expression + "' failed at " + file + ":" + std::to_string(line) +
                      ": " + describe(status));
}

void check_launch(const CudaState* state, const char* kernel, const char* file, int line) {
    cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess)
        throw DeviceError(std::string("CUDA kernel launch '") + kernel + "' failed at " + file + ":" +
                          std::to_string(line) + ": " + describe(status));
    if (state && state->synchronize_launches) {
        status = cudaStreamSynchronize(state->stream);
        if (status != cudaSuccess) {
            (void)cudaGetLastError();
            throw DeviceError(std::string("CUDA kernel '") + kernel + "' launched at " + file + ":" +
                              std::to_string(line) + " failed while running (SKIPGANOMALY_CUDA_SYNC): " +
                              describe(status));
        }
    }
}

void check_library_call(const CudaState* state, const char* call, const char* file, int line) {
    (void)cudaGetLastError();
    if (state && state->synchronize_launches) {
        const cudaError_t status = cudaStreamSynchronize(state->stream);
        if (status != cudaSuccess) {
            (void)cudaGetLastError();
            throw DeviceError(std::string("'") + call + "' called at " + file + ":" + std::to_string(line) +
                              " failed while running (SKIPGANOMALY_CUDA_SYNC): " + describe(status));
        }
    }
}

CudaState& state_of(Context& ctx) {
    CudaState* state = ctx.cuda();
    if (!state) throw DeviceError("a CUDA kernel was called with a " + to_string(ctx.device()) + " context");
    return *state;
}

void* workspace(CudaState& state, std::size_t bytes) {
    if (bytes <= state.workspace_bytes) return state.workspace;
    const std::size_t grown = (bytes + workspace_granularity - 1) / workspace_granularity * workspace_granularity;
    if (state.workspace) {
        // Work already queued may still read or write the old buffer.
        SGA_CUDA_CHECK(cudaStreamSynchronize(state.stream));
        sga::deallocate(Device::Cuda, state.workspace);
        state.workspace = nullptr;
        state.workspace_bytes = 0;
    }
    // Through sga::allocate so that allocation-counting tests see workspace growth too.
    state.workspace = sga::allocate(Device::Cuda, grown);
    state.workspace_bytes = grown;
    return state.workspace;
}

namespace {

// Probes the runtime once: the device count, a context on device 0 and whether this
// binary holds code the device can run. Every failure keeps CUDA's own words.
DeviceStatus probe_device() {
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        // cudaErrorInsufficientDriver (a driver older than this CUDA runtime) lands here as
        // well as cudaErrorNoDevice: the message says which.
        return {false, "cudaGetDeviceCount failed: " + describe(status)};
    }
    if (count <= 0) return {false, "cudaGetDeviceCount found no CUDA device"};
    int device = 0;
    status = cudaGetDevice(&device);
    if (status == cudaSuccess) status = cudaFree(nullptr);  // creates the primary context
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        return {false, "device " + std::to_string(device) + " cannot be used: " + describe(status)};
    }
    status = check_kernel_image();
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        cudaDeviceProp properties{};
        const std::string name =
            cudaGetDeviceProperties(&properties, device) == cudaSuccess
                ? std::string(properties.name) + " (compute capability " + std::to_string(properties.major) + "." +
                      std::to_string(properties.minor) + ")"
                : "device " + std::to_string(device);
        (void)cudaGetLastError();
        return {false, name + " cannot run this build's kernels (built for CMAKE_CUDA_ARCHITECTURES): " +
                           describe(status)};
    }
    return {true, {}};
}

}  // namespace

const DeviceStatus& device_status() {
    static const DeviceStatus status = probe_device();
    return status;
}

bool device_available() { return device_status().available; }

void* allocate(std::size_t bytes) {
    void* pointer = nullptr;
    const cudaError_t status = cudaMalloc(&pointer, bytes);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        throw DeviceError("cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + describe(status));
    }
    return pointer;
}

void deallocate(void* pointer) noexcept {
    if (pointer) log_failure(cudaFree(pointer), "cudaFree");
}

void copy(void* destination, bool destination_on_device, const void* source, bool source_on_device,
          std::size_t bytes) {
    if (bytes == 0) return;
    const cudaMemcpyKind kind = destination_on_device ? (source_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                                      : (source_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    // cudaMemcpy runs on the legacy default stream, which waits for all blocking streams
    // (every context stream is one), so the copy sees every kernel queued before it.
    SGA_CUDA_CHECK(cudaMemcpy(destination, source, bytes, kind));
    // Host-to-device and device-to-device cudaMemcpy may return before the data has landed;
    // the contract of copy_bytes() is that it has.
    if (destination_on_device) SGA_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
}

CudaState* create_state() {
    auto state = std::make_unique<CudaState>();
    SGA_CUDA_CHECK(cudaGetDevice(&state->device));
    SGA_CUDA_CHECK(cudaStreamCreate(&state->stream));
    const char* synchronize_env = std::getenv("SKIPGANOMALY_CUDA_SYNC");
    state->synchronize_launches = synchronize_env && *synchronize_env && std::string(synchronize_env) != "0";
    return state.release();
}

void destroy_state(CudaState* state) noexcept {
    if (!state) return;
    if (state->stream) log_failure(cudaStreamSynchronize(state->stream), "cudaStreamSynchronize (destroying a context)");
    // The cuDNN handle is bound to the stream: release it before the stream.
    destroy_convolution_resources(state->convolution);
    state->convolution = nullptr;
    sga::deallocate(Device::Cuda, state->workspace);
    if (state->stream) log_failure(cudaStreamDestroy(state->stream), "cudaStreamDestroy");
    delete state;
}

void synchronize(const CudaState* state) {
    if (!state) return;
    SGA_CUDA_CHECK(cudaStreamSynchronize(state->stream));
}

EventTimer::EventTimer(const Context& ctx) : state_(ctx.cuda()) {
    if (!state_) throw DeviceError("EventTimer needs a CUDA context, got a " + to_string(ctx.device()) + " one");
    cudaEvent_t start_event = nullptr;
    cudaEvent_t stop_event = nullptr;
    SGA_CUDA_CHECK(cudaEventCreate(&start_event));
    const cudaError_t status = cudaEventCreate(&stop_event);
    if (status != cudaSuccess) {
        log_failure(cudaEventDestroy(start_event), "cudaEventDestroy");
        check_cuda(status, "cudaEventCreate(&stop_event)", __FILE__, __LINE__);
    }
    start_event_ = start_event;
    stop_event_ = stop_event;
}

EventTimer::~EventTimer() {
    log_failure(cudaEventDestroy(static_cast<cudaEvent_t>(start_event_)), "cudaEventDestroy");
    log_failure(cudaEventDestroy(static_cast<cudaEvent_t>(stop_event_)), "cudaEventDestroy");
}

void EventTimer::start() { SGA_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(start_event_), state_->stream)); }

void EventTimer::stop() { SGA_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(stop_event_), state_->stream)); }

double EventTimer::elapsed_seconds() const {
    SGA_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_event_)));
    float milliseconds = 0.0f;
    SGA_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, static_cast<cudaEvent_t>(start_event_),
                                        static_cast<cudaEvent_t>(stop_event_)));
    return static_cast<double>(milliseconds) * 1e-3;
}

}  // namespace sga::cuda
