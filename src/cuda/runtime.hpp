// Internal: the CUDA runtime services the host side needs (memory, device discovery,
// context state). Plain C++ declarations so host files can include it without CUDA headers.
#pragma once

#include <cstddef>

#include "skipganomaly/context.hpp"

namespace sga::cuda {

bool device_available();
void* allocate(std::size_t bytes);
void deallocate(void* pointer) noexcept;
// kind: which sides are device memory.
void copy(void* destination, bool destination_on_device, const void* source, bool source_on_device, std::size_t bytes);
CudaState* create_state();
void destroy_state(CudaState* state) noexcept;
void synchronize(const CudaState* state);

}  // namespace sga::cuda
