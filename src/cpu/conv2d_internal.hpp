// Internals of the CPU convolution, shared between its files (src/cpu/conv2d*.cpp): the plan,
// per-thread scratch, and the entry points of each strategy. Which strategy runs when, and
// where each lives, is at the top of conv2d.cpp. Nothing here is part of the library's API.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "skipganomaly/engine/kernels.hpp"

namespace sga::cpu::conv2d_detail {

using Index = std::int64_t;

// Below this many elements touched, an OpenMP fork costs more than it saves.
constexpr Index parallel_threshold = Index{1} << 15;
// The skinny kernels' limit on the rows of the product (batch * P): one AVX-512 vector.
constexpr Index skinny_max_rows = 16;

inline Index ceil_div(Index a, Index b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
inline Index floor_div(Index a, Index b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline Index round_up_16(Index n) { return (n + 15) / 16 * 16; }  // floats: keeps 64-byte alignment

// A half-open range [begin, end) of indices.
struct Span {
    Index begin, end;
};

// The smallest window of kernel taps [first, first + count) holding every tap that reads real
// input somewhere; taps outside it only ever multiply padding zeros.
struct TapWindow {
    Index first = 0, count = 0;
};

// What make_plan (conv2d.cpp) decides from the geometry alone.
struct Plan {
    TapWindow rows, cols;           // active kernel taps along KH and KW
    Index taps = 0;                 // rows.count * cols.count
    Index depth = 0;                // GEMM depth D = Cin * taps
    bool full_window = false;       // every tap is active: the weight is used in place
    bool input_is_columns = false;  // P = 1 and the window is the whole unpadded input
    bool per_image = false;         // one single-threaded GEMM per image (conv2d_gemm.cpp)
    bool skinny = false;            // few rows and dropped taps: the skinny kernels (conv2d_skinny.cpp)
    Index spatial = 0;              // P = OH * OW
    Index images_per_chunk = 1;     // batched and prepared paths only
};

// Per-thread scratch of a fixed size each, 64-byte aligned so that threads never share a line.
struct ThreadScratch {
    float* data;
    Index stride;
    float* for_this_thread() const { return data + omp_get_thread_num() * stride; }
};
inline ThreadScratch thread_scratch(Context& ctx, Index floats) {
    const Index stride = round_up_16(floats);
    const Index threads = std::max(1, omp_get_max_threads());
    return {ctx.arena().allocate_floats(static_cast<std::size_t>(threads * stride)), stride};
}

// data (n floats) = 0 when beta = 0; left as it is when beta = 1.
inline void scale_or_zero(float* data, Index n, float beta) {
    if (beta == 0.0f) std::fill(data, data + n, 0.0f);
}

// ---- im2col and col2im (conv2d_im2col.cpp) ----

// im2col and col2im work on one (image, channel) plane at a time, through a thread-local copy
// of the plane that is zero-padded and split into `stride` column phases:
//   local[q][r][j] = padded(r, stride * j + q),  padded(r, c) = plane[r - padding][c - padding] or 0.
// Tap (kh, kw) at output (oh, ow) reads padded(oh * stride + kh, ow * stride + kw), which is
// local[kw % stride][oh * stride + kh][ow + kw / stride]: for every tap and output row, OW
// consecutive floats, so the inner loops are branch-free contiguous copies (or adds).
struct PhasePlane {
    Index phases = 1, height = 0, width = 0;
    Index size() const { return phases * height * width; }
};
PhasePlane phase_plane(const ConvGeometry& g);

// One image's columns of input channel `plane`'s taps: tap column t of the channel goes to
// out + t * leading (leading = rows of the column matrix), P floats from there. local: the
// thread's PhasePlane scratch (layout.size() floats).
void im2col_channel(const ConvGeometry& g, const Plan& plan, const PhasePlane& layout, const float* plane, float* local,
                    float* out, Index leading);
// The inverse for one image and input channel: grad_plane (H, W) = the channel's tap columns
// (at column + t * leading) scattered back (+ grad_plane when beta = 1).
void col2im_channel(const ConvGeometry& g, const Plan& plan, const PhasePlane& layout, const float* column,
                    Index leading, float* local, float* grad_plane, float beta);
// Batched columns (images * P, D) from `images` input images (N, Cin, H, W).
void im2col(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input, Index images, float* columns);
// grad_input (images, Cin, H, W) = batched columns scattered back (+ grad_input when beta = 1).
void col2im(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* columns, Index images,
            float* grad_input, float beta);

// ---- per-image, batched and input-is-columns GEMMs (conv2d_gemm.cpp) ----
//
// `weight` below is the GEMM's (D, Cout) column-major weight (gemm_weight in conv2d.cpp);
// `target` a (D, Cout) column-major filter gradient. beta 0 overwrites the result, beta 1 adds.

// batched (C, images * P) column-major -> nchw (images, C, P) (+ nchw when beta = 1), and back.
void batched_to_nchw(const float* batched, Index images, Index channels, Index P, float* nchw, float beta);
void nchw_to_batched(const float* nchw, Index images, Index channels, Index P, float* batched);

void forward_per_image(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input,
                       const float* weight, float* output, float beta);
void backward_data_per_image(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* grad_output,
                             const float* weight, float* grad_input, float beta);
void backward_filter_per_image(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input,
                               const float* grad_output, float* target, float beta);

void forward_batched(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input, const float* weight,
                     float* output, float beta);
void backward_data_batched(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* grad_output,
                           const float* weight, float* grad_input, float beta);
void backward_filter_batched(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input,
                             const float* grad_output, float* target, float beta);

void forward_input_is_columns(const ConvGeometry& g, const Plan& plan, const float* input, const float* weight,
                              float* output, float beta);
void backward_data_input_is_columns(const ConvGeometry& g, const Plan& plan, const float* grad_output,
                                    const float* weight, float* grad_input, float beta);
void backward_filter_input_is_columns(const ConvGeometry& g, const Plan& plan, const float* input,
                                      const float* grad_output, float* target, float beta);

// ---- skinny kernels (conv2d_skinny.cpp) ----
//
// `weight` below is the caller's (Cout, Cin, KH, KW) array, read in place.

void forward_skinny(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input, const float* weight,
                    float* output, float beta);
void backward_data_skinny(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* grad_output,
                          const float* weight, float* grad_input, float beta);

// ---- prepared kernels (conv2d_prepared.cpp) ----

// Element (m, k) of A at data[row_offset[m] + k * stride]; element (m, n) of C at
// data[row_offset[m] + n * stride]. The offsets cover every layout the two passes meet
// (im2col columns, NCHW batches, (N, D) row-major) without reordering copies.
struct SourceRows {
    const float* data;
    const Index* row_offset;
    Index stride;
};
struct TargetRows {
    float* data;
    const Index* row_offset;
    Index stride;
};

// W seen as a (K, N) matrix: element (k, n) at data[k * k_stride + n * n_stride]. BackwardData
// reads the weight (K, N) row-major as it lies; the forward pass its transpose, (N, K) row-major.
struct WeightMatrix {
    const float* data;
    Index k_stride, n_stride;
    float operator()(Index k, Index n) const { return data[k * k_stride + n * n_stride]; }
};

// Forward: C (M, N) = A (M, K) * W^T with W (N, K) row-major, as dot products along K.
void forward_streamed(Context& ctx, Index M, Index K, Index N, const SourceRows& a, const float* w,
                      const TargetRows& c);
// C (M, N) = A (M, K) * W in register tiles of rows x columns.
void panels_streamed(Context& ctx, Index M, Index K, Index N, const SourceRows& a, const WeightMatrix& w,
                     const TargetRows& c);
// BackwardData: C (M, N) = A (M, K) * W with W (K, N) row-major.
void backward_data_streamed(Context& ctx, Index M, Index K, Index N, const SourceRows& a, const float* w,
                            const TargetRows& c);

// ---- bfloat16 kernels (conv2d_bf16.cpp) ----

// conv2d_packed_bf16: output = the pass's product of `input` and the weight that
// conv2d_pack_weight_bf16 packed (+ output when beta = 1), in bfloat16 with float32 sums.
// Requires bf16::available().
void packed_bf16(Context& ctx, const ConvGeometry& g, const Plan& plan, ConvPass pass, const float* input,
                 const std::uint32_t* packed, float* output, float beta);
// conv2d_backward_filter_bf16: target (Cout, D) row-major = the filter gradient of the active
// taps, in bfloat16 with float32 sums. Requires bf16::available() and plan.depth > 0.
void backward_filter_bf16(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input,
                          const float* grad_output, float* target);

// Offsets of the M = batch * P rows of an NCHW tensor with `channels` channels: row
// n * P + p starts at image n, position p; its channel k lies k * P further.
Index* nchw_row_offsets(Context& ctx, Index batch, Index channels, Index P);
// Offsets m * stride of `rows` rows.
Index* strided_row_offsets(Context& ctx, Index rows, Index stride);

}  // namespace sga::cpu::conv2d_detail
