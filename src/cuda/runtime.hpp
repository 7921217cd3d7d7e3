// Internal: the CUDA runtime services the host side needs (memory, device discovery,
// context state, event timing). Plain C++ declarations so host files (memory.cpp,
// device.cpp, the CUDA benchmark) can include it without CUDA headers.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "skipganomaly/engine/context.hpp"

namespace sga::cuda {

// Whether the first CUDA device can run this library, and if not, why, in CUDA's words
// (e.g. "cudaGetDeviceCount failed: cudaErrorInsufficientDriver: CUDA driver version is
// insufficient for CUDA runtime version"). Probed once per process; never throws.
struct DeviceStatus {
    bool available = false;
    std::string reason;  // empty when available
};
const DeviceStatus& device_status();
// device_status().available.
bool device_available();
// cudaMalloc; throws DeviceError (with the size and CUDA's message) on failure.
void* allocate(std::size_t bytes);
// cudaFree; never throws, logs a failure to stderr.
void deallocate(void* pointer) noexcept;
// kind: which sides are device memory. Returns once the copy is complete.
void copy(void* destination, bool destination_on_device, const void* source, bool source_on_device, std::size_t bytes);
// The same, on the context's stream: host data goes through the context's page-locked
// staging buffer, and the copy waits for the context's work only. Returns once done.
void copy(CudaState& state, void* destination, bool destination_on_device, const void* source, bool source_on_device,
          std::size_t bytes);
// A fresh stream on the current device (cuDNN is created lazily on first use).
CudaState* create_state();
// Waits for the state's work, then releases everything; logs instead of throwing.
void destroy_state(CudaState* state) noexcept;
// Blocks until all work queued on the state's stream has finished; throws DeviceError.
void synchronize(const CudaState* state);

// True when every piece of work queued on the context's stream has finished (cudaStreamQuery).
bool stream_idle(const Context& ctx);
// The most workspace a context's convolutions may use (Context::set_cuda_workspace_limit).
void set_workspace_limit(CudaState& state, std::size_t bytes);
std::size_t workspace_limit(const CudaState& state);
// Testing hook: from now on the context's workspace cannot grow beyond `bytes`, as if
// cudaMalloc had reported cudaErrorMemoryAllocation; pass SIZE_MAX to lift it.
void simulate_free_device_memory(Context& ctx, std::size_t bytes);

// After the workspace of candidate `current` could not be allocated: the index of the next
// candidate (in ranking order) that needs less workspace, or no_candidate. `workspace_bytes`
// lists every acceptable candidate's need, best first.
constexpr std::size_t no_candidate = static_cast<std::size_t>(-1);
std::size_t next_smaller_workspace(const std::vector<std::size_t>& workspace_bytes, std::size_t current);

// One convolution algorithm choice of a context (for tests, logs and benchmarks).
struct ConvolutionAlgorithmReport {
    std::string geometry;   // "input (N, C, H, W), weight (...), output (...), stride s, padding p"
    std::string direction;  // "forward", "backward-data" or "backward-filter"
    int algorithm = 0;      // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
    std::string algorithm_name;
    bool deterministic = false;      // as cuDNN's heuristics report it
    std::size_t workspace_bytes = 0;
    int fallbacks = 0;               // candidates passed over because their workspace did not fit in memory
    std::vector<std::size_t> candidate_workspace_bytes;  // every acceptable candidate, best first
};
// Every algorithm chosen so far on the context, in geometry order. Empty for a CPU context.
std::vector<ConvolutionAlgorithmReport> convolution_algorithms(const Context& ctx);

// GPU-side elapsed time between two points of a CUDA context's stream (cudaEvent pairs),
// for benchmarks. start() and stop() enqueue events; elapsed_seconds() waits for stop.
class EventTimer {
public:
    explicit EventTimer(const Context& ctx);  // ctx must be a CUDA context
    ~EventTimer();
    EventTimer(const EventTimer&) = delete;
    EventTimer& operator=(const EventTimer&) = delete;

    void start();
    void stop();
    double elapsed_seconds() const;

private:
    const CudaState* state_;
    void* start_event_ = nullptr;  // cudaEvent_t
    void* stop_event_ = nullptr;   // cudaEvent_t
};

}  // namespace sga::cuda
