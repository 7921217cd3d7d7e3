// The CUDA runtime side of the backend: device discovery, memory, copies, the per-context
// state (stream, workspace) and the error checks. Host-compiled; cuDNN lives in conv2d.cpp.
#include "cuda/runtime.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "cuda/cuda_state.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/engine/memory.hpp"

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

// Device memory from sga::allocate(Device::Cuda, ...), returned to it unless released.
struct CudaDeallocate {
    void operator()(void* pointer) const noexcept { sga::deallocate(Device::Cuda, pointer); }
};
using OwnedDeviceMemory = std::unique_ptr<void, CudaDeallocate>;

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

void* try_workspace(CudaState& state, std::size_t bytes) {
    if (bytes <= state.workspace_bytes) return state.workspace;
    if (bytes > state.workspace_limit_bytes) return nullptr;
    if (bytes > state.simulated_free_device_bytes) return nullptr;  // the tests' out-of-memory
    // Round up so that a slightly larger request later does not reallocate, within the limit.
    const std::size_t rounded = (bytes + workspace_granularity - 1) / workspace_granularity * workspace_granularity;
    const std::size_t grown =
        std::max(bytes, std::min({rounded, state.workspace_limit_bytes, state.simulated_free_device_bytes}));
    // Allocate before releasing: on failure the old buffer stays, and with it every
    // algorithm that fitted so far. Through sga::allocate so that allocation-counting tests
    // see workspace growth too. The new buffer is owned here until the state holds it: when
    // release_workspace throws (the stream reports an earlier kernel's failure), it is freed
    // and the state keeps its old buffer.
    OwnedDeviceMemory fresh;
    try {
        fresh.reset(sga::allocate(Device::Cuda, grown));
    } catch (const OutOfMemoryError&) {
        return nullptr;
    }
    release_workspace(state);
    state.workspace = fresh.release();
    state.workspace_bytes = grown;
    return state.workspace;
}

void* workspace(CudaState& state, std::size_t bytes) {
    void* result = try_workspace(state, bytes);
    if (!result && bytes > 0)
        throw OutOfMemoryError("no CUDA workspace of " + std::to_string(bytes) + " bytes (limit " +
                               std::to_string(state.workspace_limit_bytes) + " bytes per context)");
    return result;
}

void release_workspace(CudaState& state) {
    if (!state.workspace) return;
    // Work already queued may still read or write the buffer.
    SGA_CUDA_CHECK(cudaStreamSynchronize(state.stream));
    sga::deallocate(Device::Cuda, state.workspace);
    state.workspace = nullptr;
    state.workspace_bytes = 0;
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
        const std::string message = "cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + describe(status);
        if (status == cudaErrorMemoryAllocation) throw OutOfMemoryError(message);
        throw DeviceError(message);
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

namespace {

bool environment_flag(const char* name) {
    const char* value = std::getenv(name);
    return value && *value && std::string(value) != "0";
}

// SKIPGANOMALY_CUDA_WORKSPACE_MIB, when set to a whole number of MiB; otherwise the default.
std::size_t workspace_limit_from_environment() {
    const char* value = std::getenv("SKIPGANOMALY_CUDA_WORKSPACE_MIB");
    if (!value || !*value) return CudaState::default_workspace_limit_bytes;
    char* end = nullptr;
    const unsigned long long mebibytes = std::strtoull(value, &end, 10);
    if (*end != '\0' || mebibytes > (std::size_t{1} << 24))
        throw InvalidArgument(std::string("SKIPGANOMALY_CUDA_WORKSPACE_MIB must be a whole number of MiB (at most ") +
                              std::to_string(std::size_t{1} << 24) + "), found '" + value + "'");
    return static_cast<std::size_t>(mebibytes) << 20;
}

}  // namespace

CudaState* create_state() {
    auto state = std::make_unique<CudaState>();
    state->workspace_limit_bytes = workspace_limit_from_environment();
    SGA_CUDA_CHECK(cudaGetDevice(&state->device));
    SGA_CUDA_CHECK(cudaStreamCreate(&state->stream));
    state->synchronize_launches = environment_flag("SKIPGANOMALY_CUDA_SYNC");
    state->log_algorithms = environment_flag("SKIPGANOMALY_CUDA_LOG_ALGORITHMS");
    return state.release();
}

void destroy_state(CudaState* state) noexcept {
    if (!state) return;
    if (state->stream) log_failure(cudaStreamSynchronize(state->stream), "cudaStreamSynchronize (destroying a context)");
    // The cuDNN handle is bound to the stream: release it before the stream.
    destroy_convolution_resources(state->convolution);
    state->convolution = nullptr;
    sga::deallocate(Device::Cuda, state->workspace);
    if (state->staging) log_failure(cudaFreeHost(state->staging), "cudaFreeHost");
    if (state->stream) log_failure(cudaStreamDestroy(state->stream), "cudaStreamDestroy");
    delete state;
}

void copy(CudaState& state, void* destination, bool destination_on_device, const void* source, bool source_on_device,
          std::size_t bytes) {
    if (bytes == 0) return;
    if (destination_on_device && source_on_device) {
        SGA_CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToDevice, state.stream));
        SGA_CUDA_CHECK(cudaStreamSynchronize(state.stream));
        return;
    }
    if (!destination_on_device && !source_on_device) {
        std::memcpy(destination, source, bytes);
        return;
    }
    // Host memory from the caller is pageable: staged through the context's page-locked
    // buffer, the copy is one DMA on the context's stream, ordered after the context's work
    // and not after any other context's (a pageable cudaMemcpy would go through the driver's
    // own staging on the legacy default stream, which waits for every blocking stream).
    const std::size_t wanted = std::min(bytes, CudaState::staging_limit_bytes);
    if (state.staging_bytes < wanted) {
        if (state.staging) {
            SGA_CUDA_CHECK(cudaStreamSynchronize(state.stream));
            SGA_CUDA_CHECK(cudaFreeHost(state.staging));
            state.staging = nullptr;
            state.staging_bytes = 0;
        }
        SGA_CUDA_CHECK(cudaMallocHost(&state.staging, wanted));
        state.staging_bytes = wanted;
    }
    for (std::size_t done = 0; done < bytes; done += state.staging_bytes) {
        const std::size_t piece = std::min(state.staging_bytes, bytes - done);
        if (destination_on_device) {
            // The previous piece's DMA read the staging buffer: it was waited for below.
            std::memcpy(state.staging, static_cast<const char*>(source) + done, piece);
            SGA_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(destination) + done, state.staging, piece,
                                           cudaMemcpyHostToDevice, state.stream));
            SGA_CUDA_CHECK(cudaStreamSynchronize(state.stream));
        } else {
            SGA_CUDA_CHECK(cudaMemcpyAsync(state.staging, static_cast<const char*>(source) + done, piece,
                                           cudaMemcpyDeviceToHost, state.stream));
            SGA_CUDA_CHECK(cudaStreamSynchronize(state.stream));
            std::memcpy(static_cast<char*>(destination) + done, state.staging, piece);
        }
    }
}

void set_workspace_limit(CudaState& state, std::size_t bytes) {
    if (bytes == state.workspace_limit_bytes) return;
    if (state.workspace_bytes > bytes) release_workspace(state);
    state.workspace_limit_bytes = bytes;
    // Choices made under the old limit may no longer fit, or better ones may now.
    forget_algorithm_choices(state.convolution);
}

std::size_t next_smaller_workspace(const std::vector<std::size_t>& workspace_bytes, std::size_t current) {
    if (current >= workspace_bytes.size()) return no_candidate;
    for (std::size_t next = current + 1; next < workspace_bytes.size(); ++next)
        if (workspace_bytes[next] < workspace_bytes[current]) return next;
    return no_candidate;
}

bool stream_idle(const Context& ctx) {
    const CudaState* state = ctx.cuda();
    if (!state) throw DeviceError("stream_idle needs a CUDA context, got a " + to_string(ctx.device()) + " one");
    const cudaError_t status = cudaStreamQuery(state->stream);
    if (status == cudaErrorNotReady) {
        (void)cudaGetLastError();
        return false;
    }
    SGA_CUDA_CHECK(status);
    return true;
}

std::size_t workspace_limit(const CudaState& state) { return state.workspace_limit_bytes; }

void simulate_free_device_memory(Context& ctx, std::size_t bytes) {
    CudaState& state = state_of(ctx);
    state.simulated_free_device_bytes = bytes;
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
