// The bfloat16 product behind the CPU's bfloat16 convolutions (conv2d_bf16.cpp): operands
// rounded to bfloat16, products summed in float32 by AVX512-BF16's vdpbf16ps. The kernels live
// in bf16_gemm.cpp, the one file compiled for those instructions; nothing there runs unless
// available() says the processor has them. available(), the conversions and pack_weight are
// portable code (conv2d_bf16.cpp). Nothing here is part of the library's API.
//
// The weight operand W (R, K) is packed once (pack_weight) into blocks of 16 rows; within a
// block, for each pair of depths (k, k + 1), 16 32-bit words, word i holding W(r0 + i, k) in its
// low and W(r0 + i, k + 1) in its high half: the pair that vdpbf16ps multiplies and adds.
// Rows past R and a depth past an odd K are zeros.
#pragma once

#include <cstdint>

namespace sga::cpu::bf16 {

using Index = std::int64_t;

// Whether this processor runs the kernels below (AVX512-BF16, with AVX512-BW), and the
// environment variable SKIPGANOMALY_DISABLE_BF16 is unset or 0. Asked once, then remembered.
bool available();

// float -> bfloat16, rounded to nearest-even as vcvtneps2bf16 rounds (NaN stays a quiet NaN;
// subnormals become zeros of their sign, as the instruction treats them).
std::uint16_t from_float(float value);
float to_float(std::uint16_t value);

// 32-bit words of a packed (R, K) weight.
inline Index packed_words(Index rows, Index depth) { return (rows + 15) / 16 * 16 * ((depth + 1) / 2); }
// packed (packed_words(R, K) words) = W rounded to bfloat16, W(r, k) = w[r * r_stride + k * k_stride].
void pack_weight(Index rows, Index depth, const float* w, Index r_stride, Index k_stride, std::uint32_t* packed);

// pack_weight with the processor's conversion (the same bits): one pair of 16-row loads or
// gathers a pair of depths instead of 32 scalar conversions. Requires available(), and
// 15 * r_stride and 2 * k_stride * depth below 2^31 (pack_weight checks and falls back).
void pack_weight_vectorized(Index rows, Index depth, const float* w, Index r_stride, Index k_stride, std::uint32_t* packed);

// 32-bit words of per-thread scratch that multiply() needs.
Index scratch_words();

// c (R, M) = W (R, K) * B (K, M): c(r, m) at c[r * ldc + m], B(k, m) = b[k * ldb + m] rounded to
// bfloat16 as it is packed, W as pack_weight packed it. Every c(r, m) is one thread's float32
// sum over the depth pairs in order, in blocks of a fixed depth: its bits depend on W, on
// column m of B and on K only, not on M, on the other columns nor on the thread count.
// scratch: scratch_words() words for each of omp_get_max_threads() threads, `scratch_stride`
// apart. Requires available().
void multiply(Index R, Index K, Index M, const std::uint32_t* packed, const float* b, Index ldb, float* c, Index ldc,
              std::uint32_t* scratch, Index scratch_stride);

// As multiply, with B stored transposed: B(k, m) = bt[m * ldbt + k] (15 * ldbt below 2^31).
// The same bits as multiply on the same B.
void multiply_transposed_b(Index R, Index K, Index M, const std::uint32_t* packed, const float* bt, Index ldbt, float* c,
                           Index ldc, std::uint32_t* scratch, Index scratch_stride);

// The processor's peaks, which the benchmarks quote kernels against: `iterations` rounds of
// independent vdpbf16ps (or, for float32, vfmadd231ps) on registers only, no memory.
// Returns a sum of the results, so that the work cannot be optimised away. Requires available().
constexpr Index peak_multiply_adds_per_iteration = 24 * 32;          // bfloat16: 24 instructions x 16 lanes x 2
constexpr Index peak_float32_multiply_adds_per_iteration = 24 * 16;  // float32: 24 instructions x 16 lanes
float peak_loop(Index iterations);
float peak_float32_loop(Index iterations);

// The int8 peak (AVX512-VNNI vpdpbusd: 16 lanes x 4 products of unsigned by signed bytes summed
// into int32), for the benchmarks' table only: the library has no int8 kernel. `vnni_available()`
// says whether peak_int8_loop may run.
bool vnni_available();
constexpr Index peak_int8_multiply_adds_per_iteration = 24 * 64;
float peak_int8_loop(Index iterations);

}  // namespace sga::cpu::bf16
