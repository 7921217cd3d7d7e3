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
Device resolve_device(Device requested);

// True when this build has the CUDA backend and a GPU that can run it is visible.
bool cuda_device_available();
// Why cuda_device_available() is false, with CUDA's exact error (for example a driver too
// old for this build's CUDA runtime); empty when it is true.
std::string cuda_unavailable_reason();

std::string to_string(Device device);

// Threads used by the CPU kernels (OpenMP and Eigen). 0 restores the default
// (OMP_NUM_THREADS or the core count).
void set_cpu_threads(int threads);
int cpu_threads();

}  // namespace sga
