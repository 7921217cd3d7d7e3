// Where tensors live and kernels run.
#pragma once

#include <string>

#include "skipganomaly/config.hpp"

namespace sga {

enum class Device {
    Cpu,
    Cuda,
    // Resolved by resolve_device(): CUDA when this build has it and a GPU is present at run
    // time, unless SKIPGANOMALY_FORCE_CPU is set in the environment; otherwise the CPU.
    Auto,
};

// Never returns Device::Auto.
SKIPGANOMALY_API Device resolve_device(Device requested);

// True when this build has the CUDA backend and a GPU that can run it is visible.
SKIPGANOMALY_API bool cuda_device_available();
// Why cuda_device_available() is false, with CUDA's exact error (for example a driver too
// old for this build's CUDA runtime); empty when it is true.
SKIPGANOMALY_API std::string cuda_unavailable_reason();

SKIPGANOMALY_API std::string to_string(Device device);

// Threads used by the CPU kernels (our OpenMP loops and Eigen's matrix products, which run
// on OpenMP too) for fit() and score() calls made *from the calling thread* afterwards:
// OpenMP keeps the setting per thread, so other application threads keep their own (by
// default OMP_NUM_THREADS, else the core count; tests/test_detector checks this). 0 restores
// that default. It changes nothing on the CUDA backend, and it is not a limit on the total:
// eight threads each scoring with 4 CPU threads use up to 32. To score from many threads at
// once, 1 thread per call is usually fastest. Throws InvalidArgument when threads < 0.
SKIPGANOMALY_API void set_cpu_threads(int threads);
// The calling thread's current setting.
SKIPGANOMALY_API int cpu_threads();

}  // namespace sga
