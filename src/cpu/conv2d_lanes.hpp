// 16-float vectors for the prepared convolution kernels (conv2d_prepared.cpp): AVX-512 where
// the compiler targets it, else a plain array with the same operations lane by lane. They run
// in the kernels' innermost loops, so everything here is inline.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>

#include "conv2d_internal.hpp"

namespace sga::cpu::conv2d_detail {

constexpr Index lanes = 16;

#if defined(__AVX512F__)
using Lanes = __m512;
inline Lanes load_lanes(const float* p) { return _mm512_loadu_ps(p); }
inline Lanes zero_lanes() { return _mm512_setzero_ps(); }
inline Lanes multiply_add(Lanes a, Lanes b, Lanes sum) { return _mm512_fmadd_ps(a, b, sum); }
inline Lanes broadcast(float a) { return _mm512_set1_ps(a); }
inline void store_lanes(float* p, Lanes v) { _mm512_storeu_ps(p, v); }
#else
struct Lanes {
    float v[lanes];
};
inline Lanes load_lanes(const float* p) {
    Lanes l;
    std::memcpy(l.v, p, sizeof l.v);
    return l;
}
inline Lanes zero_lanes() { return Lanes{}; }
inline Lanes multiply_add(Lanes a, Lanes b, Lanes sum) {
    for (Index i = 0; i < lanes; ++i) sum.v[i] += a.v[i] * b.v[i];
    return sum;
}
inline Lanes broadcast(float a) {
    Lanes l;
    std::fill(l.v, l.v + lanes, a);
    return l;
}
inline void store_lanes(float* p, Lanes v) { std::memcpy(p, v.v, sizeof v.v); }
#endif

// The lanes of v summed in a fixed order.
inline float sum_lanes(Lanes v) {
    alignas(64) float l[lanes];
    store_lanes(l, v);
    float total = 0.0f;
    for (Index i = 0; i < lanes; ++i) total += l[i];
    return total;
}

}  // namespace sga::cpu::conv2d_detail
