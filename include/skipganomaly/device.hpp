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

// True when this build has the CUDA backend and at least one GPU is visible.
bool cuda_device_available();

std::string to_string(Device device);

// Threads used by the CPU kernels (OpenMP and Eigen). 0 restores the default
// (OMP_NUM_THREADS or the core count).
void set_cpu_threads(int threads);
int cpu_threads();

}  // namespace sga
