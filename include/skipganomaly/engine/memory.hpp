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
// A block for an arena (context.hpp): as allocate(), except that on the CPU the pages come
// straight from the system (mmap) and go straight back when the block is released, whatever
// malloc is tuned to keep. An arena replaces its first call's chunks by one block of their
// peak; from a heap that keeps what is freed (M_TRIM_THRESHOLD, as servers and our
// benchmarks set it) those chunks stayed resident beside the block: 382 MiB more at isize 256,
// scoring a batch of 16 (docs/benchmarks.md, "Memory of scoring"). Counted by allocation_count().
SKIPGANOMALY_API void* allocate_block(Device device, std::size_t bytes);
SKIPGANOMALY_API void deallocate_block(Device device, void* pointer, std::size_t bytes) noexcept;
// Copies between any two devices; blocks until the copy is done.
SKIPGANOMALY_API void copy_bytes(void* destination, Device destination_device, const void* source,
                Device source_device, std::size_t bytes);

// Number of successful allocate() and allocate_block() calls since the process started, on all devices.
SKIPGANOMALY_API std::uint64_t allocation_count();

}  // namespace sga
