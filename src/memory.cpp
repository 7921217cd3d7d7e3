#include "skipganomaly/memory.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "skipganomaly/error.hpp"
#if SKIPGANOMALY_WITH_CUDA
#include "cuda/runtime.hpp"
#endif

namespace sga {
namespace {
std::atomic<std::uint64_t> successful_allocations{0};
constexpr std::size_t alignment = 64;

#if !SKIPGANOMALY_WITH_CUDA
[[noreturn]] void no_cuda(const char* what) {
    throw DeviceError(std::string(what) + ": this build of skipganomaly has no CUDA backend");
}
#endif
}  // namespace

void* allocate(Device device, std::size_t bytes) {
    void* pointer = nullptr;
    const std::size_t size = bytes == 0 ? alignment : (bytes + alignment - 1) / alignment * alignment;
    switch (device) {
        case Device::Cpu:
            pointer = std::aligned_alloc(alignment, size);
            if (!pointer) throw DeviceError("out of host memory allocating " + std::to_string(bytes) + " bytes");
            break;
        case Device::Cuda:
#if SKIPGANOMALY_WITH_CUDA
            pointer = cuda::allocate(size);
            break;
#else
            no_cuda("allocate");
#endif
        case Device::Auto:
            throw InvalidArgument("allocate: resolve Device::Auto first");
    }
    successful_allocations.fetch_add(1, std::memory_order_relaxed);
    return pointer;
}

void deallocate(Device device, void* pointer) noexcept {
    if (!pointer) return;
    if (device == Device::Cpu) {
        std::free(pointer);
        return;
    }
#if SKIPGANOMALY_WITH_CUDA
    if (device == Device::Cuda) cuda::deallocate(pointer);
#endif
}

void copy_bytes(void* destination, Device destination_device, const void* source, Device source_device,
                std::size_t bytes) {
    if (bytes == 0) return;
    if (destination_device == Device::Cpu && source_device == Device::Cpu) {
        std::memcpy(destination, source, bytes);
        return;
    }
#if SKIPGANOMALY_WITH_CUDA
    cuda::copy(destination, destination_device == Device::Cuda, source, source_device == Device::Cuda, bytes);
#else
    no_cuda("copy_bytes");
#endif
}

std::uint64_t allocation_count() { return successful_allocations.load(std::memory_order_relaxed); }

}  // namespace sga
