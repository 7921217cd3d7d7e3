// The CUDA module's entry point (see module.hpp): fills the kernel table from sga::cuda::*
// and stands in for the five library functions the CUDA sources call, forwarding memory to
// the library that loaded the module. Everything here but the entry point is local to the
// module (src/cuda/module.map).
#include "cuda/module.hpp"

#include <cstring>
#include <string>

#include "skipganomaly/error.hpp"
#include "skipganomaly/engine/memory.hpp"

namespace sga {
namespace {
const detail::CudaHostServices* host = nullptr;
}  // namespace

void* allocate(Device device, std::size_t bytes) {
    if (!host) throw DeviceError("the CUDA module was used before the library loaded it (allocate)");
    return host->allocate(device, bytes);
}

void deallocate(Device device, void* pointer) noexcept {
    if (host) host->deallocate(device, pointer);
}

void* allocate_block(Device device, std::size_t bytes) {
    if (!host) throw DeviceError("the CUDA module was used before the library loaded it (allocate_block)");
    return host->allocate_block(device, bytes);
}

void deallocate_block(Device device, void* pointer, std::size_t bytes) noexcept {
    if (host) host->deallocate_block(device, pointer, bytes);
}

std::string to_string(Device device) {
    switch (device) {
        case Device::Cpu: return "cpu";
        case Device::Cuda: return "cuda";
        case Device::Auto: return "auto";
    }
    return "unknown";
}

}  // namespace sga

extern "C" __attribute__((visibility("default"))) const sga::detail::CudaModule* skipganomaly_cuda_module(
    const sga::detail::CudaHostServices* services) {
    using namespace sga;
    if (!services || services->abi != detail::cuda_module_abi ||
        std::strcmp(services->version, SKIPGANOMALY_VERSION_STRING) != 0)
        return nullptr;
    // A library from another build: its services may have another layout, so none is used;
    // the library finds the same difference in the module returned and refuses to load it.
    if (detail::cuda_module_mismatch("the library", services->kernels_def_sha256, services->layout).empty())
        host = services;
    static const detail::CudaModule module = [] {
        detail::CudaModule m;
        m.layout = detail::cuda_module_layout();
#define SGA_KERNEL(name, parameters, arguments) m.kernels.name = &cuda::name;
#include "skipganomaly/engine/kernels.def"
#undef SGA_KERNEL
        m.device_status = &cuda::device_status;
        m.allocate = &cuda::allocate;
        m.deallocate = &cuda::deallocate;
        m.copy = static_cast<void (*)(void*, bool, const void*, bool, std::size_t)>(&cuda::copy);
        m.copy_on_stream =
            static_cast<void (*)(CudaState&, void*, bool, const void*, bool, std::size_t)>(&cuda::copy);
        m.create_state = &cuda::create_state;
        m.destroy_state = &cuda::destroy_state;
        m.synchronize = &cuda::synchronize;
        m.set_workspace_limit = &cuda::set_workspace_limit;
        m.workspace_limit = &cuda::workspace_limit;
        return m;
    }();
    return &module;
}
