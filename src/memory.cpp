#include "skipganomaly/engine/memory.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <sys/mman.h>

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>  // fresh pages read as zeros: tell memcheck they are undefined
#else
#define VALGRIND_MAKE_MEM_UNDEFINED(pointer, bytes) ((void)(pointer), (void)(bytes))
#endif

// Under AddressSanitizer arena blocks come from malloc, whose red zones catch a write past a
// block's end.
#if defined(__SANITIZE_ADDRESS__)
#define SGA_BLOCKS_FROM_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SGA_BLOCKS_FROM_MALLOC 1
#endif
#endif

#include "skipganomaly/error.hpp"
#include "cuda/module.hpp"

namespace sga {
namespace {
std::atomic<std::uint64_t> successful_allocations{0};
constexpr std::size_t alignment = 64;
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
            pointer = detail::require_cuda_module("allocate").allocate(size);
            break;
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
    // CUDA memory exists only when the module is loaded.
    if (device == Device::Cuda) detail::cuda_module()->deallocate(pointer);
}

#ifdef SGA_BLOCKS_FROM_MALLOC
void* allocate_block(Device device, std::size_t bytes) { return allocate(device, bytes); }
void deallocate_block(Device device, void* pointer, std::size_t) noexcept { deallocate(device, pointer); }
#else
void* allocate_block(Device device, std::size_t bytes) {
    if (device != Device::Cpu) return allocate(device, bytes);
    const std::size_t size = bytes == 0 ? alignment : bytes;
    void* pointer = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pointer == MAP_FAILED) throw DeviceError("out of host memory mapping " + std::to_string(bytes) + " bytes");
    VALGRIND_MAKE_MEM_UNDEFINED(pointer, size);
    successful_allocations.fetch_add(1, std::memory_order_relaxed);
    return pointer;  // page-aligned
}

void deallocate_block(Device device, void* pointer, std::size_t bytes) noexcept {
    if (!pointer) return;
    if (device != Device::Cpu) {
        deallocate(device, pointer);
        return;
    }
    munmap(pointer, bytes == 0 ? alignment : bytes);
}
#endif

void copy_bytes(void* destination, Device destination_device, const void* source, Device source_device,
                std::size_t bytes) {
    if (bytes == 0) return;
    if (destination_device == Device::Cpu && source_device == Device::Cpu) {
        std::memcpy(destination, source, bytes);
        return;
    }
    detail::require_cuda_module("copy_bytes")
        .copy(destination, destination_device == Device::Cuda, source, source_device == Device::Cuda, bytes);
}

std::uint64_t allocation_count() { return successful_allocations.load(std::memory_order_relaxed); }

}  // namespace sga
