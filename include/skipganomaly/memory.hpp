// Raw device memory: allocation, release and copies. Every allocation the library makes
// for tensor data goes through allocate(), so tests can count them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "skipganomaly/device.hpp"

namespace sga {

// Returns memory aligned to at least 64 bytes. Throws DeviceError on failure.
SKIPGANOMALY_API void* allocate(Device device, std::size_t bytes);
SKIPGANOMALY_API void deallocate(Device device, void* pointer) noexcept;
// Copies between any two devices; blocks until the copy is done.
SKIPGANOMALY_API void copy_bytes(void* destination, Device destination_device, const void* source,
                Device source_device, std::size_t bytes);

// Number of successful allocate() calls since the process started, on all devices.
SKIPGANOMALY_API std::uint64_t allocation_count();

}  // namespace sga
