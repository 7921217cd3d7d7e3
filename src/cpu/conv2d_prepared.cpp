// The prepared CPU convolution kernels: inference with the weight read where it lies
// (conv2d_pack_weight and conv2d_packed, in conv2d.cpp, pick among them).
//
// Both passes are one product C (M, N) = A (M, K) * B (K, N) with M = batch * P rows, few when
// one image is scored, where a GEMM spends much of its time packing the weight operand again on
// every call. These kernels stream the weight once, as it lies, in the (Cout, D) row-major order
// of its active taps: the caller's array when every tap is active (no copy, no memory), or the
// compact copy of the active taps that conv2d_pack_weight makes once.
//   Forward:      C (M, Cout) = A (M, D) * W^T: dot products along D (forward_streamed), or
//                 from forward_panel_min_positions (16) positions an image, tiles of rows x
//                 channels (panels_streamed)
//   BackwardData: C (M, D) = A (M, Cout) * W: rows of W scaled and summed (backward_data_streamed),
//                 beyond panel_min_rows (16) rows in tiles (panels_streamed)
// A is gathered per call into the order each kernel reads. Every element of C is one thread's
// sum in an order fixed by the geometry alone, not the batch nor the thread count: identical
// results at any thread count, and each image of a batch the bits it gets alone (a score
// batcher's pass runs several images' products as one, score_batcher.hpp).
#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <utility>

#include "conv2d_internal.hpp"
#include "conv2d_lanes.hpp"

namespace sga::cpu::conv2d_detail {
namespace {

// f(std::integral_constant<Index, R>{}) with R = min(count, Max), count >= 1: the kernels'
// tile sizes are compile-time constants, so a tail of fewer rows or channels picks its own
// instance.
template <Index Max, class F>
void with_count_up_to(Index count, F&& f) {
    if constexpr (Max > 1) {
        if (count < Max) return with_count_up_to<Max - 1>(count, std::forward<F>(f));
    }
    return f(std::integral_constant<Index, Max>{});
}

// C (m0 .. m0+Rows, co0 .. co0+Channels) = rows of A (row-major, `K` long) dotted with rows of
// W: per 16 floats of depth, Channels + Rows loads feed Channels x Rows multiply-adds, with
// every weight row read front to back once.
template <Index Channels, Index Rows>
void dot_tile(Index K, const float* w, const float* a, Index m0, Index co0, const TargetRows& c) {
    Lanes sum[Channels][Rows];
    for (Index i = 0; i < Channels; ++i)
        for (Index j = 0; j < Rows; ++j) sum[i][j] = zero_lanes();
    const float* w_row[Channels];
    for (Index i = 0; i < Channels; ++i) w_row[i] = w + (co0 + i) * K;
    const float* a_row[Rows];
    for (Index j = 0; j < Rows; ++j) a_row[j] = a + (m0 + j) * K;
    Index k = 0;
    for (; k + lanes <= K; k += lanes) {
        Lanes wv[Channels];
        for (Index i = 0; i < Channels; ++i) wv[i] = load_lanes(w_row[i] + k);
        for (Index j = 0; j < Rows; ++j) {
            const Lanes av = load_lanes(a_row[j] + k);
            for (Index i = 0; i < Channels; ++i) sum[i][j] = multiply_add(wv[i], av, sum[i][j]);
        }
    }
    for (Index i = 0; i < Channels; ++i)
        for (Index j = 0; j < Rows; ++j) {
            float total = sum_lanes(sum[i][j]);
            for (Index t = k; t < K; ++t) total += w_row[i][t] * a_row[j][t];
            c.data[c.row_offset[m0 + j] + (co0 + i) * c.stride] = total;
        }
}


// One block of up to 16 rows of BackwardData's C (A packed by pack_row_blocks) over columns
// [n_begin, n_end): W (K, N) row-major is walked 16 rows (k) at a time, so that 16 rows of W
// stream side by side front to back, and the block's sums wait in `sums` (rows x (n_end -
// n_begin), in L1/L2) between these groups of 16. Within a group, the rows of C go 8 at a time
// over 32 columns at a time:
// per k, 2 vector loads of W and 8 broadcasts feed 16 multiply-adds, and the 16 sums fit the
// registers. (One pass over 16 rows, 16 columns wide, needed 17 loads per 16 multiply-adds and
// was bound by them; the second 8 rows read the group's W, 64 KiB at most per thread, from
// L2.) Every output is its k-ordered sum whatever the block's shape, so the bits do not
// depend on it.
template <Index Rows>
void rows_sub_block(Index k0, Index k1, Index N, const float* a_block, Index r0, const float* w,
                    Index n_begin, Index n_end, float* sums) {
    constexpr Index vectors = 2, width = vectors * lanes;
    const Index span = n_end - n_begin;
    Index n = n_begin;
    for (; n + width <= n_end; n += width) {
        Lanes sum[Rows][vectors];
        for (Index r = 0; r < Rows; ++r)
            for (Index v = 0; v < vectors; ++v) sum[r][v] = load_lanes(sums + (r0 + r) * span + (n - n_begin) + v * lanes);
        for (Index k = k0; k < k1; ++k) {
            Lanes wv[vectors];
            for (Index v = 0; v < vectors; ++v) wv[v] = load_lanes(w + k * N + n + v * lanes);
            for (Index r = 0; r < Rows; ++r) {
                const Lanes av = broadcast(a_block[k * lanes + r0 + r]);
                for (Index v = 0; v < vectors; ++v) sum[r][v] = multiply_add(av, wv[v], sum[r][v]);
            }
        }
        for (Index r = 0; r < Rows; ++r)
            for (Index v = 0; v < vectors; ++v) store_lanes(sums + (r0 + r) * span + (n - n_begin) + v * lanes, sum[r][v]);
    }
    for (; n < n_end; ++n)  // columns past the last whole group
        for (Index r = r0; r < r0 + Rows; ++r) {
            float s = sums[r * span + (n - n_begin)];
            for (Index k = k0; k < k1; ++k) s += a_block[k * lanes + r] * w[k * N + n];
            sums[r * span + (n - n_begin)] = s;
        }
}

template <Index Rows>
void rows_block(Index K, Index N, const float* a_block, const float* w, Index n_begin, Index n_end, float* sums) {
    constexpr Index depth_step = 16, sub_rows = 8;
    std::fill(sums, sums + Rows * (n_end - n_begin), 0.0f);
    for (Index k0 = 0; k0 < K; k0 += depth_step) {
        const Index k1 = std::min(K, k0 + depth_step);
        for (Index r0 = 0; r0 < Rows; r0 += sub_rows)
            with_count_up_to<sub_rows>(Rows - r0, [&](auto fixed) {
                rows_sub_block<decltype(fixed)::value>(k0, k1, N, a_block, r0, w, n_begin, n_end, sums);
            });
    }
}

// A (M, K) gathered into blocks of 16 rows, k-major: element (m, k) at
// (m / 16) * 16 * K + k * 16 + m % 16, the rows of the last block past M zero.
float* pack_row_blocks(Context& ctx, Index M, Index K, const SourceRows& a) {
    const Index blocks = ceil_div(M, lanes);
    float* packed = ctx.arena().allocate_floats(static_cast<std::size_t>(blocks * lanes * K));
#pragma omp parallel for schedule(static) if (M * K > parallel_threshold)
    for (Index block = 0; block < blocks; ++block) {
        const Index m0 = block * lanes, rows = std::min(lanes, M - m0);
        float* out = packed + m0 * K;
        for (Index k = 0; k < K; ++k) {
            for (Index i = 0; i < rows; ++i) out[k * lanes + i] = a.data[a.row_offset[m0 + i] + k * a.stride];
            for (Index i = rows; i < lanes; ++i) out[k * lanes + i] = 0.0f;
        }
    }
    return packed;
}

// The threads of an (M, K) x (K, N) product split its N columns in ranges of whole groups of
// 32, so that the columns past the last whole group (summed one at a time, where the others
// are summed in vectors) are the same at any thread count.
struct ColumnSplit {
    int threads;
    Index per_thread, N;
    ColumnSplit(Index M, Index K, Index N)
        : threads(M * K * N > parallel_threshold * 16 ? std::max(1, omp_get_max_threads()) : 1),
          per_thread(ceil_div(ceil_div(N, threads), 2 * lanes) * 2 * lanes), N(N) {}
    Index begin(int thread) const { return std::min(N, thread * per_thread); }
    Index end(int thread) const { return std::min(N, begin(thread) + per_thread); }
};

// Products with many rows: a score batcher's pass (the rows of several images in one
// product), and forward convolutions of 16 or more positions an image. A is packed in blocks of
// 16 rows (zero-padded), k-major; C is computed in tiles of 32 rows x 8 columns, each keeping
// its 16 sums in registers over the whole depth: per k, two vectors of A and eight floats of
// W broadcast, read where W lies. Each output is the chain of multiply-adds over k from zero
// that rows_block computes (and a column past the last whole group of 32 the same scalar
// chain), so a transposed convolution's row has the same bits on either path and in any batch.
// With many rows, rows_block would stream all of the thread's W once per 16 rows, 16 rows of W
// at a time, N floats apart: a power-of-two stride that maps them onto a handful of cache
// sets. Here a chunk of W stays in L2 while every block of 32 rows sweeps it, and a forward
// convolution's 8 columns of W are 8 of its rows, read front to back.
constexpr Index panel_width = 8;

template <Index Blocks>
void panel_tile(Index K, const float* a_blocks, const WeightMatrix& w, Index m0, Index M, Index n0,
                const TargetRows& c) {
    Lanes sum[panel_width][Blocks];
    for (Index j = 0; j < panel_width; ++j)
        for (Index b = 0; b < Blocks; ++b) sum[j][b] = zero_lanes();
    const float* column = w.data + n0 * w.n_stride;
    for (Index k = 0; k < K; ++k) {
        Lanes av[Blocks];
        for (Index b = 0; b < Blocks; ++b) av[b] = load_lanes(a_blocks + b * lanes * K + k * lanes);
        for (Index j = 0; j < panel_width; ++j) {
            const Lanes wv = broadcast(column[j * w.n_stride + k * w.k_stride]);
            for (Index b = 0; b < Blocks; ++b) sum[j][b] = multiply_add(av[b], wv, sum[j][b]);
        }
    }
    for (Index b = 0; b < Blocks; ++b) {
        const Index first = m0 + b * lanes, rows = std::min(lanes, M - first);
        const Index* offset = c.row_offset + first;
        const bool contiguous = rows == lanes && offset[lanes - 1] - offset[0] == lanes - 1;
        for (Index j = 0; j < panel_width; ++j) {
            float* out = c.data + (n0 + j) * c.stride;
            if (contiguous) {
                store_lanes(out + offset[0], sum[j][b]);
            } else {
                alignas(64) float values[lanes];
                store_lanes(values, sum[j][b]);
                for (Index i = 0; i < rows; ++i) out[offset[i]] = values[i];
            }
        }
    }
}

// Columns [n_begin, n_end) of C = A W for all M rows. The columns go in chunks of at most
// 256 KiB of W, each swept by every block of 32 rows, so that the chunk stays in L2.
void panel_product(Index M, Index K, const float* a_blocks, const WeightMatrix& w, Index n_begin, Index n_end,
                   const TargetRows& c) {
    constexpr Index group = 2 * lanes;  // rows_block's vector columns: whole groups of 32
    const Index whole_end = n_begin + (n_end - n_begin) / group * group;
    const Index chunk_columns = std::max<Index>(panel_width, (Index{1} << 16) / K / panel_width * panel_width);
    for (Index c0 = n_begin; c0 < whole_end; c0 += chunk_columns) {
        const Index c1 = std::min(whole_end, c0 + chunk_columns);
        for (Index m0 = 0; m0 < M; m0 += 2 * lanes) {
            const float* a = a_blocks + m0 * K;
            for (Index q = c0; q < c1; q += panel_width) {
                if (M - m0 > lanes)
                    panel_tile<2>(K, a, w, m0, M, q, c);
                else
                    panel_tile<1>(K, a, w, m0, M, q, c);
            }
        }
    }
    for (Index n = whole_end; n < n_end; ++n)  // columns past the last whole group, summed as rows_sub_block does
        for (Index m = 0; m < M; ++m) {
            const float* a = a_blocks + m / lanes * lanes * K + m % lanes;
            float s = 0.0f;
            for (Index k = 0; k < K; ++k) s += a[k * lanes] * w(k, n);
            c.data[c.row_offset[m] + n * c.stride] = s;
        }
}

// Products of more rows than this take panels_streamed (the bits are the same either way). At
// 16 rows or fewer the weight-bound layers keep rows_block, which loads W 16 floats at a time
// where the panels broadcast it one float at a time.
constexpr Index panel_min_rows = 16;
static_assert(panel_min_rows <= lanes, "backward_data_streamed packs the rows it keeps in one block");

}  // namespace

// Forward: C (M, N) = A (M, K) * W^T with W (N, K) row-major. The threads split the output
// channels, four at a time. Rows go in chunks of at most 256 KiB of A, each chunk swept by
// every block of channels: with many rows (a score batcher's pass), a block of channels
// walking all of A would read it from L3 or memory once per four channels. Every tile's sums
// are the same whatever the order of the tiles, so a row has the bits it has in its image's
// own product.
void forward_streamed(Context& ctx, Index M, Index K, Index N, const SourceRows& a, const float* w,
                      const TargetRows& c) {
    float* a_rows = ctx.arena().allocate_floats(static_cast<std::size_t>(M * K));
#pragma omp parallel for schedule(static) if (M * K > parallel_threshold)
    for (Index m = 0; m < M; ++m)
        for (Index k = 0; k < K; ++k) a_rows[m * K + k] = a.data[a.row_offset[m] + k * a.stride];
    const Index blocks = ceil_div(N, 4);
    const Index row_chunk = std::max<Index>(4, (Index{1} << 16) / K / 4 * 4);
#pragma omp parallel if (M * K * N > parallel_threshold * 16)
    for (Index r0 = 0; r0 < M; r0 += row_chunk) {
        const Index r1 = std::min(M, r0 + row_chunk);
#pragma omp for schedule(static) nowait
        for (Index block = 0; block < blocks; ++block) {
            const Index co0 = block * 4, channels = std::min<Index>(4, N - co0);
            for (Index m0 = r0; m0 < r1; m0 += 4)
                with_count_up_to<4>(channels, [&](auto fixed_channels) {
                    with_count_up_to<4>(r1 - m0, [&](auto fixed_rows) {
                        dot_tile<decltype(fixed_channels)::value, decltype(fixed_rows)::value>(K, w, a_rows, m0, co0,
                                                                                               c);
                    });
                });
        }
    }
}


// C (M, N) = A (M, K) * W by panel_product, the columns split as backward_data_streamed splits
// them (so that the columns summed one at a time are the same).
void panels_streamed(Context& ctx, Index M, Index K, Index N, const SourceRows& a, const WeightMatrix& w,
                     const TargetRows& c) {
    const float* a_blocks = pack_row_blocks(ctx, M, K, a);
    const ColumnSplit split(M, K, N);
#pragma omp parallel num_threads(split.threads)
    {
        const int t = omp_get_thread_num();
        if (split.end(t) > split.begin(t)) panel_product(M, K, a_blocks, w, split.begin(t), split.end(t), c);
    }
}

// BackwardData: C (M, N) = A (M, K) * W with W (K, N) row-major, the threads splitting the
// columns (ColumnSplit). Up to 16 rows, rows_block streams W from memory once; beyond,
// panels_streamed.
void backward_data_streamed(Context& ctx, Index M, Index K, Index N, const SourceRows& a, const float* w,
                            const TargetRows& c) {
    if (M > panel_min_rows) return panels_streamed(ctx, M, K, N, a, {w, N, 1}, c);
    const float* a_block = pack_row_blocks(ctx, M, K, a);  // one block: M <= 16
    const ColumnSplit split(M, K, N);
    const ThreadScratch scratch = thread_scratch(ctx, lanes * split.per_thread);
#pragma omp parallel num_threads(split.threads)
    {
        const int t = omp_get_thread_num();
        const Index n_begin = split.begin(t), n_end = split.end(t), span = n_end - n_begin;
        float* sums = scratch.for_this_thread();
        if (n_end > n_begin) {
            with_count_up_to<lanes>(M, [&](auto fixed) {
                rows_block<decltype(fixed)::value>(K, N, a_block, w, n_begin, n_end, sums);
            });
            for (Index r = 0; r < M; ++r) {
                float* out = c.data + c.row_offset[r];
                for (Index n = n_begin; n < n_end; ++n) out[n * c.stride] = sums[r * span + (n - n_begin)];
            }
        }
    }
}

// Offsets of the M = batch * P rows of an NCHW tensor with `channels` channels: row
// n * P + p starts at image n, position p; its channel k lies k * P further.
Index* nchw_row_offsets(Context& ctx, Index batch, Index channels, Index P) {
    Index* offsets = reinterpret_cast<Index*>(ctx.arena().allocate_floats(static_cast<std::size_t>(2 * batch * P)));
    for (Index n = 0; n < batch; ++n)
        for (Index p = 0; p < P; ++p) offsets[n * P + p] = n * channels * P + p;
    return offsets;
}
Index* strided_row_offsets(Context& ctx, Index rows, Index stride) {
    Index* offsets = reinterpret_cast<Index*>(ctx.arena().allocate_floats(static_cast<std::size_t>(2 * rows)));
    for (Index m = 0; m < rows; ++m) offsets[m] = m * stride;
    return offsets;
}

}  // namespace sga::cpu::conv2d_detail
