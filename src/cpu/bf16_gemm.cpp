// The bfloat16 product (bf16_gemm.hpp): AVX512-BF16 kernels, the one file of the library
// compiled for those instructions (CMakeLists.txt). It includes no library header and uses no
// standard-library template, so that no inline function shared with other files is compiled
// here with instructions that a processor without them lacks.
//
// Two register tiles compute every c(r, m) as the same chain of vdpbf16ps over the depth pairs:
// - wide (M > 16): 8 rows of W x 48 columns of B (24 accumulators). Per depth pair, 3 vector
//   loads of B and 8 broadcasts of W feed 24 instructions of 32 multiply-adds.
// - narrow (M <= 16, as batch-1 scoring's deep layers, and a last block of 16 columns or
//   fewer): 16 rows of W x M columns. Per depth pair, one vector load of W and M broadcasts of
//   B; lanes along the rows, so that no lane idles when M is small.
// Per lane, both compute acc + W(r, k+1) B(k+1, m) + W(r, k) B(k, m) in the same order, from
// the same float32 accumulator, converted by the same instruction: the same bits. The depth goes
// in blocks of depth_block pairs; between blocks the sums wait in c (exact in float32).
#include "bf16_gemm.hpp"

#include <omp.h>

#include <cstdlib>

#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
// GCC 12 reports its own avx512fintrin.h's `__m512 __Y = __Y;` (_mm512_undefined_ps, behind
// the reductions) as uninitialised: a false report (as in conv2d_gemm.cpp), silenced for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace sga::cpu::bf16 {
namespace {

constexpr Index depth_block = 256;     // depth pairs a block: 512 depths
constexpr Index wide_rows = 8;         // rows of W a wide tile
constexpr Index wide_vectors = 3;      // 16-column vectors of B a wide tile
constexpr Index wide_columns = wide_vectors * 16;
constexpr Index narrow_max_columns = 16;
// Rows of c one task computes (a multiple of 16 and of wide_rows): all of them where the columns
// alone give every thread several tasks, so that each packed block of B serves every row;
// else in pieces of min_rows_per_task for the threads to share. Every element's sum is the
// same whatever the cut: the cut may follow the thread count.
constexpr Index min_rows_per_task = 64;
constexpr double parallel_multiply_adds = 1 << 18;

inline Index min_index(Index a, Index b) { return a < b ? a : b; }

inline __mmask16 column_mask(Index columns) {  // the first `columns` (0..16+) lanes
    return columns >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << columns) - 1u);
}

// 16 depth pairs as bfloat16: word i = (lo[i], hi[i]), lo in the low half.
inline __m512i interleave_pairs(__m512 lo, __m512 hi) {
    alignas(64) static const unsigned short order[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                         8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i both = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));  // words 0-15: lo, 16-31: hi
    return _mm512_permutexvar_epi16(_mm512_load_si512(order), both);
}

// Rows 2p and 2p + 1 of B at columns [m0, m0 + 16), masked, as 16 pairs; a row past K reads 0.
inline __m512i load_pair(const float* b, Index ldb, Index K, Index p, Index m0, __mmask16 mask) {
    const __m512 lo = _mm512_maskz_loadu_ps(mask, b + 2 * p * ldb + m0);
    const __m512 hi = 2 * p + 1 < K ? _mm512_maskz_loadu_ps(mask, b + (2 * p + 1) * ldb + m0) : _mm512_setzero_ps();
    return interleave_pairs(lo, hi);
}

inline __m512bh as_bf16(__m512i v) { return reinterpret_cast<__m512bh>(v); }

// c rows [0, rows_valid) x columns of the three vectors (masks) += or = the tile over `pairs`
// depth pairs. w: the packed weight at the tile's first row and the block's first pair (16
// words a pair); bp: the block's packed B, 3 vectors a pair.
void wide_tile(const std::uint32_t* w, Index pairs, const __m512i* bp, float* c, Index ldc, Index rows_valid,
               const __mmask16* masks, bool accumulate) {
    __m512 acc[wide_rows][wide_vectors];
    for (Index i = 0; i < wide_rows; ++i)
        for (Index v = 0; v < wide_vectors; ++v)
            acc[i][v] = accumulate && i < rows_valid ? _mm512_maskz_loadu_ps(masks[v], c + i * ldc + 16 * v)
                                                     : _mm512_setzero_ps();
    for (Index p = 0; p < pairs; ++p) {
        const __m512bh b0 = as_bf16(_mm512_loadu_si512(bp + p * wide_vectors));
        const __m512bh b1 = as_bf16(_mm512_loadu_si512(bp + p * wide_vectors + 1));
        const __m512bh b2 = as_bf16(_mm512_loadu_si512(bp + p * wide_vectors + 2));
        const std::uint32_t* wp = w + p * 16;
        for (Index i = 0; i < wide_rows; ++i) {
            const __m512bh a = as_bf16(_mm512_set1_epi32(static_cast<int>(wp[i])));
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
            acc[i][2] = _mm512_dpbf16_ps(acc[i][2], a, b2);
        }
    }
    for (Index i = 0; i < rows_valid && i < wide_rows; ++i)
        for (Index v = 0; v < wide_vectors; ++v) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, masks[v], acc[i][v]);
}

// c rows [0, rows_valid) (of 16) x columns [0, Columns) += or = the tile over `pairs` depth
// pairs. w: the packed weight's 16-row block at the block's first pair; bq: 16 words a pair,
// word m the pair of column m.
template <int Columns>
void narrow_tile(const std::uint32_t* w, Index pairs, const std::uint32_t* bq, float* c, Index ldc, Index rows_valid,
                 bool accumulate) {
    alignas(64) float staged[Columns][16];
    __m512 acc[Columns];
    for (int m = 0; m < Columns; ++m) {
        if (accumulate) {
            for (Index i = 0; i < 16; ++i) staged[m][i] = i < rows_valid ? c[i * ldc + m] : 0.0f;
            acc[m] = _mm512_load_ps(staged[m]);
        } else {
            acc[m] = _mm512_setzero_ps();
        }
    }
    for (Index p = 0; p < pairs; ++p) {
        const __m512bh wv = as_bf16(_mm512_loadu_si512(w + p * 16));
        for (int m = 0; m < Columns; ++m)
            acc[m] = _mm512_dpbf16_ps(acc[m], wv, as_bf16(_mm512_set1_epi32(static_cast<int>(bq[p * 16 + m]))));
    }
    for (int m = 0; m < Columns; ++m) _mm512_store_ps(staged[m], acc[m]);
    for (Index i = 0; i < rows_valid; ++i)
        for (int m = 0; m < Columns; ++m) c[i * ldc + m] = staged[m][i];
}

template <int Columns = narrow_max_columns>
void narrow_tile_for(Index columns, const std::uint32_t* w, Index pairs, const std::uint32_t* bq, float* c, Index ldc,
                     Index rows_valid, bool accumulate) {
    if constexpr (Columns > 1) {
        if (columns < Columns)
            return narrow_tile_for<Columns - 1>(columns, w, pairs, bq, c, ldc, rows_valid, accumulate);
    }
    narrow_tile<Columns>(w, pairs, bq, c, ldc, rows_valid, accumulate);
}

}  // namespace

Index scratch_words() { return depth_block * wide_columns; }

void multiply(Index R, Index K, Index M, const std::uint32_t* packed, const float* b, Index ldb, float* c, Index ldc,
              std::uint32_t* scratch, Index scratch_stride) {
    if (R <= 0 || M <= 0) return;
    const Index pairs = (K + 1) / 2;
    if (pairs == 0) {
        for (Index r = 0; r < R; ++r)
            for (Index m = 0; m < M; ++m) c[r * ldc + m] = 0.0f;
        return;
    }
    const Index column_tasks = (M + wide_columns - 1) / wide_columns;
    const Index rows_per_task =
        column_tasks >= 4 * omp_get_max_threads() ? (R + 15) / 16 * 16 : min_rows_per_task;
    const Index row_tasks = (R + rows_per_task - 1) / rows_per_task;
    const Index tasks = row_tasks * column_tasks;
    const bool parallel = static_cast<double>(R) * static_cast<double>(K) * static_cast<double>(M) > parallel_multiply_adds;
#pragma omp parallel for schedule(static) if (parallel)
    for (Index task = 0; task < tasks; ++task) {
        const Index r_begin = (task % row_tasks) * rows_per_task, r_end = min_index(R, r_begin + rows_per_task);
        const Index m0 = (task / row_tasks) * wide_columns;
        const Index columns = min_index(wide_columns, M - m0);
        const bool narrow = columns <= narrow_max_columns;  // all of a small M, or the last block's few
        std::uint32_t* own = scratch + omp_get_thread_num() * scratch_stride;
        __mmask16 masks[wide_vectors];
        for (Index v = 0; v < wide_vectors; ++v) masks[v] = column_mask(M - m0 - 16 * v < 0 ? 0 : M - m0 - 16 * v);
        for (Index p0 = 0; p0 < pairs; p0 += depth_block) {
            const Index block_pairs = min_index(pairs, p0 + depth_block) - p0;
            const bool accumulate = p0 > 0;
            if (narrow) {
                for (Index p = 0; p < block_pairs; ++p)
                    _mm512_storeu_si512(own + p * 16, load_pair(b, ldb, K, p0 + p, m0, masks[0]));
                for (Index r0 = r_begin; r0 < r_end; r0 += 16)
                    narrow_tile_for(columns, packed + ((r0 / 16) * pairs + p0) * 16, block_pairs, own, c + r0 * ldc + m0,
                                    ldc, min_index(16, R - r0), accumulate);
            } else {
                __m512i* bp = reinterpret_cast<__m512i*>(own);
                for (Index p = 0; p < block_pairs; ++p)
                    for (Index v = 0; v < wide_vectors; ++v)
                        _mm512_storeu_si512(bp + p * wide_vectors + v,
                                            masks[v] ? load_pair(b, ldb, K, p0 + p, m0 + 16 * v, masks[v])
                                                     : _mm512_setzero_si512());
                for (Index r0 = r_begin; r0 < r_end; r0 += wide_rows)
                    wide_tile(packed + ((r0 / 16) * pairs + p0) * 16 + r0 % 16, block_pairs, bp, c + r0 * ldc + m0, ldc,
                              R - r0, masks, accumulate);
            }
        }
    }
}

float peak_loop(Index iterations) {
    __m512 acc[24];
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3f);
    const __m512bh a = as_bf16(_mm512_set1_epi32(0x3F803F80));  // (1, 1)
    __m512bh x = as_bf16(_mm512_set1_epi32(0x00010001));        // tiny: the sums stay finite
    for (Index n = 0; n < iterations; ++n) {
        __asm__ volatile("" : "+v"(x));  // x is unknown each round: the loop cannot be folded
#pragma GCC unroll 24
        for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, x);  // unrolled: acc in registers
    }
    float total = 0.0f;
    for (int i = 0; i < 24; ++i) total += _mm512_reduce_add_ps(acc[i]);
    return total;
}

float peak_float32_loop(Index iterations) {
    __m512 acc[24];
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3f);
    const __m512 a = _mm512_set1_ps(1.0f);
    __m512 x = _mm512_set1_ps(1e-30f);
    for (Index n = 0; n < iterations; ++n) {
        __asm__ volatile("" : "+v"(x));
#pragma GCC unroll 24
        for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(a, x, acc[i]);
    }
    float total = 0.0f;
    for (int i = 0; i < 24; ++i) total += _mm512_reduce_add_ps(acc[i]);
    return total;
}

float peak_int8_loop(Index iterations) {
    __m512i acc[24];
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_epi32(i);
    const __m512i a = _mm512_set1_epi8(1);
    __m512i x = _mm512_set1_epi8(1);
    for (Index n = 0; n < iterations; ++n) {
        __asm__ volatile("" : "+v"(x));
#pragma GCC unroll 24
        for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, x);
    }
    long long total = 0;
    for (int i = 0; i < 24; ++i) total += _mm512_reduce_add_epi32(acc[i]);
    return static_cast<float>(total);
}

}  // namespace sga::cpu::bf16

#else  // a compiler or processor family without AVX512-BF16: available() is false, nothing here runs

namespace sga::cpu::bf16 {
Index scratch_words() { return 0; }
void multiply(Index, Index, Index, const std::uint32_t*, const float*, Index, float*, Index, std::uint32_t*, Index) {
    std::abort();
}
float peak_loop(Index) { std::abort(); }
float peak_float32_loop(Index) { std::abort(); }
float peak_int8_loop(Index) { std::abort(); }
}  // namespace sga::cpu::bf16

#endif
