// Internal: the interface between the library and its CUDA module (libskipganomaly_cuda.so).
// Plain C++, no CUDA headers: the library's loader (src/cuda_loader.cpp) includes it too.
//
// The module is built from src/cuda with the library, and loaded by it with dlopen the first
// time CUDA is asked for (Device::Auto or Device::Cuda), so neither the library nor any program
// using it links CUDA or cuDNN. The module exports one C function, skipganomaly_cuda_module,
// which takes what the module needs from the library (memory allocation, so that
// allocation_count() counts device memory too) and returns its kernel table and runtime
// services. Both sides must come from the same build: before anything else is used, each
// side checks the other's ABI number and version, the SHA-256 of the kernel list it was
// compiled from (include/skipganomaly/engine/kernels.def, hashed by CMake) and the sizes of the
// structures passed across (CudaModuleLayout). A module from another build of the same
// version is refused with a message that names what differs.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>

#include "cuda/runtime.hpp"
#include "skipganomaly/config.hpp"
#include "skipganomaly/engine/kernels.hpp"

#ifndef SKIPGANOMALY_KERNELS_DEF_SHA256
#error "SKIPGANOMALY_KERNELS_DEF_SHA256 (the SHA-256 of kernels.def) must be defined by the build"
#endif

namespace sga::detail {

// Raise whenever CudaHostServices or CudaModule changes.
inline constexpr int cuda_module_abi = 3;

// The sizes, as one side was compiled, of the structures the other side reads or writes
// through a pointer or a reference: the two tables, the Context (and its Arena) every kernel
// takes, the kernels' parameter structures and the device status. A header changed on one
// side only shows here even where kernels.def did not change. Filled by
// cuda_module_layout() below.
struct CudaModuleLayout {
    std::size_t host_services = 0, module = 0, kernel_table = 0, context = 0, arena = 0, conv_geometry = 0,
                adam_hyperparameters = 0, device_status = 0;
    bool operator==(const CudaModuleLayout&) const = default;
};

// What the library lends the module. abi, version, kernels_def_sha256 and layout come first
// and never move.
struct CudaHostServices {
    int abi = cuda_module_abi;
    const char* version = SKIPGANOMALY_VERSION_STRING;
    const char* kernels_def_sha256 = SKIPGANOMALY_KERNELS_DEF_SHA256;
    CudaModuleLayout layout;
    void* (*allocate)(Device device, std::size_t bytes) = nullptr;
    void (*deallocate)(Device device, void* pointer) noexcept = nullptr;
    void* (*allocate_block)(Device device, std::size_t bytes) = nullptr;  // an arena's (memory.hpp)
    void (*deallocate_block)(Device device, void* pointer, std::size_t bytes) noexcept = nullptr;
};

// What the module provides: every kernel of kernels.def and the runtime services of
// cuda/runtime.hpp the library's host code calls. abi, version, kernels_def_sha256 and
// layout come first and never move.
struct CudaModule {
    int abi = cuda_module_abi;
    const char* version = SKIPGANOMALY_VERSION_STRING;
    const char* kernels_def_sha256 = SKIPGANOMALY_KERNELS_DEF_SHA256;
    CudaModuleLayout layout;
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

// This side's layout.
constexpr CudaModuleLayout cuda_module_layout() {
    CudaModuleLayout layout;
    layout.host_services = sizeof(CudaHostServices);
    layout.module = sizeof(CudaModule);
    layout.kernel_table = sizeof(CudaKernelTable);
    layout.context = sizeof(Context);
    layout.arena = sizeof(Arena);
    layout.conv_geometry = sizeof(ConvGeometry);
    layout.adam_hyperparameters = sizeof(AdamHyperparameters);
    layout.device_status = sizeof(cuda::DeviceStatus);
    return layout;
}

// What keeps the other side (its kernel list hash and layout; abi and version already
// matched) from working with this one, naming each difference as "the other's value, this
// side's value"; empty when nothing does. `other` names the other side in the message.
inline std::string cuda_module_mismatch(const char* other, const char* kernels_def_sha256,
                                        const CudaModuleLayout& layout) {
    std::string reasons;
    auto add = [&](const std::string& reason) { reasons += (reasons.empty() ? "" : "; ") + reason; };
    if (!kernels_def_sha256 || std::strcmp(kernels_def_sha256, SKIPGANOMALY_KERNELS_DEF_SHA256) != 0)
        add(std::string(other) + " was built from another kernels.def (SHA-256 " +
            (kernels_def_sha256 ? kernels_def_sha256 : "missing") + ", expected " SKIPGANOMALY_KERNELS_DEF_SHA256 ")");
    const CudaModuleLayout expected = cuda_module_layout();
    auto compare = [&](const char* type, std::size_t found, std::size_t wanted) {
        if (found != wanted)
            add("sizeof(" + std::string(type) + ") is " + std::to_string(found) + " bytes in " + other +
                ", expected " + std::to_string(wanted));
    };
    compare("sga::detail::CudaHostServices", layout.host_services, expected.host_services);
    compare("sga::detail::CudaModule", layout.module, expected.module);
    compare("sga::detail::CudaKernelTable", layout.kernel_table, expected.kernel_table);
    compare("sga::Context", layout.context, expected.context);
    compare("sga::Arena", layout.arena, expected.arena);
    compare("sga::ConvGeometry", layout.conv_geometry, expected.conv_geometry);
    compare("sga::AdamHyperparameters", layout.adam_hyperparameters, expected.adam_hyperparameters);
    compare("sga::cuda::DeviceStatus", layout.device_status, expected.device_status);
    return reasons;
}

// The module's one exported function. Returns null when `host` has another ABI number or
// version. Otherwise returns the module, whose kernels_def_sha256 and layout the library
// checks before it uses anything else; the module uses `host` only when its own
// cuda_module_mismatch() finds nothing.
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
