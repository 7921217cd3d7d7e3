// Internal: the interface between the library and its CUDA module (libskipganomaly_cuda.so).
// Plain C++, no CUDA headers: the library's loader (src/cuda_loader.cpp) includes it too.
//
// The module is built from src/cuda with the library, and loaded by it with dlopen the first
// time CUDA is asked for (Device::Auto or Device::Cuda), so neither the library nor any program
// using it links CUDA or cuDNN. The module exports one C function, skipganomaly_cuda_module,
// which takes what the module needs from the library (memory allocation, so that
// allocation_count() counts device memory too) and returns its kernel table and runtime
// services. Both sides must come from the same build: the version and the ABI number are
// checked before anything else is used.
#pragma once

#include <cstddef>

#include "cuda/runtime.hpp"
#include "skipganomaly/config.hpp"
#include "skipganomaly/kernels.hpp"

namespace sga::detail {

// Raise whenever CudaHostServices or CudaModule changes.
inline constexpr int cuda_module_abi = 2;

// What the library lends the module. abi and version come first and never move.
struct CudaHostServices {
    int abi = cuda_module_abi;
    const char* version = SKIPGANOMALY_VERSION_STRING;
    void* (*allocate)(Device device, std::size_t bytes) = nullptr;
    void (*deallocate)(Device device, void* pointer) noexcept = nullptr;
    void* (*allocate_block)(Device device, std::size_t bytes) = nullptr;  // an arena's (memory.hpp)
    void (*deallocate_block)(Device device, void* pointer, std::size_t bytes) noexcept = nullptr;
};

// What the module provides: every kernel of kernels.def and the runtime services of
// cuda/runtime.hpp the library's host code calls. abi and version come first and never move.
struct CudaModule {
    int abi = cuda_module_abi;
    const char* version = SKIPGANOMALY_VERSION_STRING;
    CudaKernelTable kernels;
    const cuda::DeviceStatus& (*device_status)() = nullptr;
    void* (*allocate)(std::size_t bytes) = nullptr;
    void (*deallocate)(void* pointer) noexcept = nullptr;
    void (*copy)(void* destination, bool destination_on_device, const void* source, bool source_on_device,
                 std::size_t bytes) = nullptr;
    void (*copy_on_stream)(CudaState& state, void* destination, bool destination_on_device, const void* source,
                           bool source_on_device, std::size_t bytes) = nullptr;
    CudaState* (*create_state)() = nullptr;
    void (*destroy_state)(CudaState* state) noexcept = nullptr;
    void (*synchronize)(const CudaState* state) = nullptr;
    void (*set_workspace_limit)(CudaState& state, std::size_t bytes) = nullptr;
    std::size_t (*workspace_limit)(const CudaState& state) = nullptr;
};

// The module's one exported function. Returns null when `host` is from another version.
using CudaModuleEntry = const CudaModule* (*)(const CudaHostServices* host);
inline constexpr const char* cuda_module_entry_name = "skipganomaly_cuda_module";

// The library side (src/cuda_loader.cpp). The module is loaded on the first call, once per
// process, and never unloaded. Returns null when it cannot be loaded; then
// cuda_module_error() says why (no module in this build, not found, or the dynamic
// loader's message, e.g. a missing libcudnn.so.9).
const CudaModule* cuda_module();
const std::string& cuda_module_error();
// cuda_module(), or throws DeviceError naming `what` and the reason.
const CudaModule& require_cuda_module(const char* what);

}  // namespace sga::detail
