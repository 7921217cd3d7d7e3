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
// else pieces large enough for about four tasks a thread, and no smaller than
// min_rows_per_task (each task packs its block of B again: many rows and few columns, as
// bfloat16 backward-filter's, would pack it dozens of times over). Every element's sum is the
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

// r[j] word i -> out[i] word j: a 16 x 16 transpose of 32-bit words.
inline void transpose_words(const __m512i r[16], __m512i out[16]) {
    __m512i a[16], b[16];
    for (int i = 0; i < 8; ++i) {  // within 128-bit lanes: rows 2i, 2i + 1 interleaved
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  // b[4i + c], lane L: rows 4i..4i+3 of word 4L + c
        b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    for (int c = 0; c < 4; ++c) {  // gather lane L of b[c], b[4 + c], b[8 + c], b[12 + c] into out[4L + c]
        const __m512i e0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44), e1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xEE);
        const __m512i f0 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44), f1 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xEE);
        out[c] = _mm512_shuffle_i32x4(e0, f0, 0x88);
        out[4 + c] = _mm512_shuffle_i32x4(e0, f0, 0xDD);
        out[8 + c] = _mm512_shuffle_i32x4(e1, f1, 0x88);
        out[12 + c] = _mm512_shuffle_i32x4(e1, f1, 0xDD);
    }
}

// 16 depth pairs of 16 rows whose depths are contiguous: row j's depth 2q + t at
// first[j * row_stride + 2q + t]; out[q] word j = row j's pair q. Rows from `rows` on and
// depths from `depths` on (counted from `first`) read as zeros.
inline void load_pairs_of_rows(const float* first, Index row_stride, Index rows, Index depths, __m512i out[16]) {
    const __mmask16 lo = column_mask(depths < 0 ? 0 : depths), hi = column_mask(depths < 16 ? 0 : depths - 16);
    __m512i r[16];
    for (Index j = 0; j < 16; ++j) {
        if (j >= rows) {
            r[j] = _mm512_setzero_si512();
            continue;
        }
        const float* row = first + j * row_stride;
        // words 0-15: depths 0-15, 16-31: depths 16-31; as 32-bit words, word q = depths (2q, 2q + 1)
        r[j] = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, row + 16), _mm512_maskz_loadu_ps(lo, row)));
    }
    transpose_words(r, out);
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

void pack_weight_vectorized(Index rows, Index depth, const float* w, Index r_stride, Index k_stride,
                            std::uint32_t* packed) {
    const Index pairs = (depth + 1) / 2, blocks = (rows + 15) / 16;
    const __m512i row_offsets = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                   _mm512_set1_epi32(static_cast<int>(r_stride)));
    // Depth k of rows [r0, r0 + 16) (masked): a load where the rows are adjacent, else a gather.
    auto depth_column = [&](Index r0, Index k, __mmask16 valid) -> __m512 {
        if (k >= depth) return _mm512_setzero_ps();
        const float* first = w + r0 * r_stride + k * k_stride;
        if (r_stride == 1) return _mm512_maskz_loadu_ps(valid, first);
        return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, row_offsets, first, 4);
    };
#pragma omp parallel for schedule(static) if (static_cast<double>(rows) * static_cast<double>(depth) > (1 << 15))
    for (Index block = 0; block < blocks; ++block) {
        const Index r0 = block * 16;
        const __mmask16 valid = column_mask(rows - r0);
        if (k_stride == 1 && r_stride != 1) {  // rows of contiguous depths: 16 pairs at a time, transposed in registers
            __m512i out[16];
            for (Index p0 = 0; p0 < pairs; p0 += 16) {
                load_pairs_of_rows(w + r0 * r_stride + 2 * p0, r_stride, rows - r0, depth - 2 * p0, out);
                for (Index q = 0; q < 16 && p0 + q < pairs; ++q)
                    _mm512_storeu_si512(packed + (block * pairs + p0 + q) * 16, out[q]);
            }
            continue;
        }
        for (Index p = 0; p < pairs; ++p)
            _mm512_storeu_si512(packed + (block * pairs + p) * 16,
                                interleave_pairs(depth_column(r0, 2 * p, valid), depth_column(r0, 2 * p + 1, valid)));
    }
}

namespace {
// multiply() and multiply_transposed_b(): pack_b(p0, block_pairs, m0, vectors, masks, bp) writes
// depth pairs [p0, p0 + block_pairs) of B's columns [m0, m0 + 16 * vectors) (masks[v]: the valid
// columns of vector v) to bp, `vectors` vectors a pair, vector v word i the pair of column
// m0 + 16v + i.
template <class PackB>
void multiply_with(Index R, Index K, Index M, const std::uint32_t* packed, const PackB& pack_b, float* c, Index ldc,
                   std::uint32_t* scratch, Index scratch_stride) {
    if (R <= 0 || M <= 0) return;
    const Index pairs = (K + 1) / 2;
    if (pairs == 0) {
        for (Index r = 0; r < R; ++r)
            for (Index m = 0; m < M; ++m) c[r * ldc + m] = 0.0f;
        return;
    }
    const Index column_tasks = (M + wide_columns - 1) / wide_columns;
    const Index wanted_tasks = 4 * static_cast<Index>(omp_get_max_threads());
    const Index rows_per_task =
        column_tasks >= wanted_tasks
            ? (R + 15) / 16 * 16
            : ((R * column_tasks + wanted_tasks - 1) / wanted_tasks + 15) / 16 * 16 > min_rows_per_task
                  ? ((R * column_tasks + wanted_tasks - 1) / wanted_tasks + 15) / 16 * 16
                  : min_rows_per_task;
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
                pack_b(p0, block_pairs, m0, 1, masks, reinterpret_cast<__m512i*>(own));
                for (Index r0 = r_begin; r0 < r_end; r0 += 16)
                    narrow_tile_for(columns, packed + ((r0 / 16) * pairs + p0) * 16, block_pairs, own, c + r0 * ldc + m0,
                                    ldc, min_index(16, R - r0), accumulate);
            } else {
                __m512i* bp = reinterpret_cast<__m512i*>(own);
                pack_b(p0, block_pairs, m0, wide_vectors, masks, bp);
                for (Index r0 = r_begin; r0 < r_end; r0 += wide_rows)
                    wide_tile(packed + ((r0 / 16) * pairs + p0) * 16 + r0 % 16, block_pairs, bp, c + r0 * ldc + m0, ldc,
                              R - r0, masks, accumulate);
            }
        }
    }
}
}  // namespace

void multiply(Index R, Index K, Index M, const std::uint32_t* packed, const float* b, Index ldb, float* c, Index ldc,
              std::uint32_t* scratch, Index scratch_stride) {
    auto pack_b = [&](Index p0, Index block_pairs, Index m0, Index vectors, const __mmask16* masks, __m512i* bp) {
        for (Index p = 0; p < block_pairs; ++p)
            for (Index v = 0; v < vectors; ++v)
                _mm512_storeu_si512(bp + p * vectors + v,
                                    masks[v] ? load_pair(b, ldb, K, p0 + p, m0 + 16 * v, masks[v]) : _mm512_setzero_si512());
    };
    multiply_with(R, K, M, packed, pack_b, c, ldc, scratch, scratch_stride);
}

void multiply_transposed_b(Index R, Index K, Index M, const std::uint32_t* packed, const float* bt, Index ldbt, float* c,
                           Index ldc, std::uint32_t* scratch, Index scratch_stride) {
    // Column m of B is row m of bt: 16 columns at a time are 16 rows, transposed in registers.
    auto pack_b = [&](Index p0, Index block_pairs, Index m0, Index vectors, const __mmask16* masks, __m512i* bp) {
        __m512i pairs[16];
        for (Index q0 = 0; q0 < block_pairs; q0 += 16)
            for (Index v = 0; v < vectors; ++v) {
                const Index first_column = m0 + 16 * v, depth = 2 * (p0 + q0);
                if (masks[v])
                    load_pairs_of_rows(bt + first_column * ldbt + depth, ldbt, M - first_column, K - depth, pairs);
                else
                    for (__m512i& q : pairs) q = _mm512_setzero_si512();
                for (Index q = 0; q < 16 && q0 + q < block_pairs; ++q) _mm512_storeu_si512(bp + (q0 + q) * vectors + v, pairs[q]);
            }
    };
    multiply_with(R, K, M, packed, pack_b, c, ldc, scratch, scratch_stride);
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
void pack_weight_vectorized(Index, Index, const float*, Index, Index, std::uint32_t*) { std::abort(); }
void multiply(Index, Index, Index, const std::uint32_t*, const float*, Index, float*, Index, std::uint32_t*, Index) {
    std::abort();
}
void multiply_transposed_b(Index, Index, Index, const std::uint32_t*, const float*, Index, float*, Index, std::uint32_t*,
                           Index) {
    std::abort();
}
float peak_loop(Index) { std::abort(); }
float peak_float32_loop(Index) { std::abort(); }
float peak_int8_loop(Index) { std::abort(); }
}  // namespace sga::cpu::bf16

#endif
