// Internal to the .cu files: launch shapes and deterministic block reductions.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace sga::cuda {

// Elementwise kernels: 256 threads, grid-stride loops over 64-bit indices, at most
// max_elementwise_blocks blocks (plenty to fill any current GPU).
constexpr int elementwise_threads = 256;
constexpr std::int64_t max_elementwise_blocks = std::int64_t{1} << 16;

inline unsigned elementwise_blocks(std::int64_t n) {
    return static_cast<unsigned>(
        std::min<std::int64_t>((n + elementwise_threads - 1) / elementwise_threads, max_elementwise_blocks));
}

// Per-channel (and per-sample) reductions: one block of reduction_threads threads per
// channel. Must be a multiple of 32 and at most 1024.
constexpr int reduction_threads = 512;

// Sum over the 32 lanes of a warp; the total lands in lane 0. Fixed order: deterministic.
__device__ inline double warp_sum(double value) {
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
    return value;
}

// Sum over the block; every thread must call it (it synchronises). The total is returned
// to every thread. The order of additions depends only on blockDim, so results are
// bit-for-bit reproducible run to run (no atomics). blockDim.x must be a multiple of 32.
__device__ inline double block_sum(double value) {
    __shared__ double warp_totals[32];
    __shared__ double total;
    const unsigned lane = threadIdx.x & 31u;
    const unsigned warp = threadIdx.x >> 5;
    value = warp_sum(value);
    __syncthreads();  // a previous call may still be reading warp_totals / total
    if (lane == 0) warp_totals[warp] = value;
    __syncthreads();
    if (warp == 0) {
        const unsigned warps = blockDim.x >> 5;
        value = lane < warps ? warp_totals[lane] : 0.0;
        value = warp_sum(value);
        if (lane == 0) total = value;
    }
    __syncthreads();
    return total;
}

}  // namespace sga::cuda
