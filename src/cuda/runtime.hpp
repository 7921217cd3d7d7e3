// Internal: the CUDA runtime services the host side needs (memory, device discovery,
// context state, event timing). Plain C++ declarations so host files (memory.cpp,
// device.cpp, the CUDA benchmark) can include it without CUDA headers.
#pragma once

#include <cstddef>
#include <string>

#include "skipganomaly/context.hpp"

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
// A fresh stream on the current device (cuDNN is created lazily on first use).
CudaState* create_state();
// Waits for the state's work, then releases everything; logs instead of throwing.
void destroy_state(CudaState* state) noexcept;
// Blocks until all work queued on the state's stream has finished; throws DeviceError.
void synchronize(const CudaState* state);

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
