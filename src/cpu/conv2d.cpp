// CPU convolution kernels (kernels.def): the three convolution primitives (conv2d_forward,
// conv2d_backward_data, conv2d_backward_filter), the prepared inference kernels
// (conv2d_packed_floats, conv2d_pack_weight, conv2d_packed) and the channel bias. This file
// holds the plan and the entry points; the strategies live in conv2d_*.cpp, their shared
// declarations in conv2d_internal.hpp.
//
// Every primitive is a GEMM between im2col "columns" and the weight. Matrices are column-major
// unless said otherwise; P = OH * OW output positions an image, D = Cin * (active taps):
//   columns   (rows, D) with rows = images * P: element (n * P + p, k) at k * rows + n * P + p
//   weight    (D, Cout): the (Cout, Cin, KH, KW) array as it lies in memory
//   forward          output (rows, Cout) = columns * weight
//   backward-data    columns = grad_output * weight^T, then col2im scatters into grad_input
//   backward-filter  grad_weight (D, Cout) += columns^T * grad_output
// For one image, (P, Cout) column-major *is* that image's NCHW (Cout, OH, OW) slice.
//
// Kernel taps that only ever read zero padding are dropped (Plan::rows, Plan::cols): the GEMM
// depth counts the active taps only, the weight is used through a compact copy of them
// (gemm_weight) and the filter gradient of a dropped tap is exactly 0.
//
// make_plan picks the strategy from the geometry alone, never from the thread count: the
// strategies sum in different orders, and a score must not depend on how many threads computed
// it. The entry points take the first that applies:
// - nothing to multiply (D = 0: every output reads only padding): the result is 0.
// - skinny (conv2d_skinny.cpp; forward and backward-data): some taps dropped, batch * P <=
//   skinny_max_rows, and not per image. The weight read once in place, the few rows of the
//   product kept in registers.
// - input is columns (conv2d_gemm.cpp): P = 1, no padding and the kernel window is the whole
//   input, so the input (N, D) row-major is the columns matrix: one GEMM, no im2col.
// - per image (conv2d_gemm.cpp): P >= per_image_min_positions and batch >= per_image_min_batch.
//   The threads take whole images; each builds one image's columns in its own scratch and runs a
//   single-threaded GEMM straight into (or out of) that image's NCHW slice.
// - batched (conv2d_gemm.cpp), otherwise: all images side by side in one GEMM cut into blocks
//   by its shape, in chunks of images whose columns stay under max_column_floats.
// - prepared (conv2d_prepared.cpp): inference only, when the caller packed the weight once
//   (conv2d_pack_weight) and calls conv2d_packed, as the layers do for products of at most
//   PackedConvolution::max_rows rows (layers.hpp). The weight read where it lies, the products
//   in SIMD register tiles (conv2d_lanes.hpp).
// - bfloat16 (conv2d_bf16.cpp, bf16_gemm.cpp): when the caller packed the weight in bfloat16
//   (conv2d_pack_weight_bf16: once for scoring, every call for bfloat16 training) and calls
//   conv2d_packed_bf16, at any batch; and conv2d_backward_filter_bf16, training's weight
//   gradient (Tape::convolution_precision).
// im2col and col2im (conv2d_im2col.cpp) serve every strategy but "input is columns". Outside
// the GEMMs the work is split over independent planes, images or columns: no two threads write
// one element, no atomics. Scratch comes from ctx.arena(), so a steady-state training step
// allocates no tensor memory here (Eigen's GEMM still mallocs its own packing buffers for large
// products; it has no interface for handing it ours).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "bf16_gemm.hpp"
#include "conv2d_internal.hpp"
#include "skipganomaly/engine/kernels.hpp"

namespace sga::cpu {
using namespace conv2d_detail;
namespace {

// Columns per chunk of images on the batched and prepared paths (16 MiB): four times the
// largest batched im2col of the model at batch 64 (128 -> 256 channels, 8x8 -> 4x4, k4:
// D = 2048, 64 * 16 rows), so that each batched layer of the model at batch 64 runs as one chunk
// while the scratch of a large batch stays bounded.
constexpr Index max_column_floats = Index{1} << 22;
// Output positions an image from which the per-image path is taken: with fewer, one image's
// GEMM is too small to reach Eigen's steady state, and one GEMM over the batch is faster.
constexpr Index per_image_min_positions = 32;
// Images from which the per-image path is taken. A constant, not a function of the threads a
// call gets: the two paths sum in different orders, and a score must not depend on how many
// threads computed it (a lone caller leases them all, concurrent callers one each;
// tests/test_detector.cpp). At 2, one image's discriminator pass over x and G(x) gives each
// of two threads one image and a GEMM of its own.
constexpr Index per_image_min_batch = 2;
// Prepared forward convolutions with at least this many output positions an image take
// panels_streamed, the others forward_streamed. The two sum in different orders: the choice is
// the geometry's, never the batch's, so that an image has the same bits in any batch.
constexpr Index forward_panel_min_positions = 16;

// Output positions o in [begin, end) whose input coordinate o * stride - padding + tap lies in
// [0, in): the positions where kernel tap `tap` reads real input rather than padding.
Span valid_outputs(Index tap, Index in, Index out, Index stride, Index padding) {
    const Index begin = std::max<Index>(0, ceil_div(padding - tap, stride));
    const Index end = std::min<Index>(out, floor_div(in - 1 + padding - tap, stride) + 1);
    return {begin, std::max(begin, end)};
}

// The active taps of one kernel dimension (TapWindow, conv2d_internal.hpp).
TapWindow active_taps(Index kernel, Index in, Index out, Index stride, Index padding) {
    Index first = kernel, last = -1;
    for (Index tap = 0; tap < kernel; ++tap) {
        const Span span = valid_outputs(tap, in, out, stride, padding);
        if (span.end > span.begin) {
            first = std::min(first, tap);
            last = tap;
        }
    }
    return last < first ? TapWindow{} : TapWindow{first, last - first + 1};
}

// The messages are built only on failure (inside SGA_CHECK_ARGUMENT): no string work per call.
void check_geometry(const ConvGeometry& g, const char* kernel) {
    SGA_CHECK_ARGUMENT(g.batch >= 0 && g.in_channels > 0 && g.out_channels > 0 && g.in_height > 0 && g.in_width > 0 &&
                           g.kernel_height > 0 && g.kernel_width > 0,
                       std::string(kernel) + ": convolution sizes must be positive");
    SGA_CHECK_ARGUMENT(g.stride >= 1 && g.padding >= 0, std::string(kernel) + ": stride must be >= 1 and padding >= 0");
    SGA_CHECK_ARGUMENT(
        g.out_height >= 1 && g.out_width >= 1 &&
            g.out_height == ConvGeometry::output_extent(g.in_height, g.kernel_height, g.stride, g.padding) &&
            g.out_width == ConvGeometry::output_extent(g.in_width, g.kernel_width, g.stride, g.padding),
        std::string(kernel) + ": output extent " + std::to_string(g.out_height) + "x" + std::to_string(g.out_width) +
            " does not follow from the input, kernel, stride and padding");
}

void check_beta(float beta, const char* kernel) {
    SGA_CHECK_ARGUMENT(beta == 0.0f || beta == 1.0f, std::string(kernel) + ": beta must be 0 or 1");
}

Plan make_plan(const ConvGeometry& g) {
    Plan plan;
    plan.rows = active_taps(g.kernel_height, g.in_height, g.out_height, g.stride, g.padding);
    plan.cols = active_taps(g.kernel_width, g.in_width, g.out_width, g.stride, g.padding);
    plan.taps = plan.rows.count * plan.cols.count;
    plan.depth = g.in_channels * plan.taps;
    plan.full_window = plan.rows.count == g.kernel_height && plan.cols.count == g.kernel_width;
    plan.spatial = g.out_height * g.out_width;
    plan.input_is_columns =
        plan.spatial == 1 && g.padding == 0 && g.kernel_height == g.in_height && g.kernel_width == g.in_width;
    plan.per_image = !plan.input_is_columns && plan.spatial >= per_image_min_positions && g.batch >= per_image_min_batch;
    plan.skinny = !plan.per_image && !plan.full_window && g.batch * plan.spatial <= skinny_max_rows;
    const Index per_image = std::max<Index>(1, plan.spatial * plan.depth);
    plan.images_per_chunk = std::clamp<Index>(max_column_floats / per_image, 1, std::max<Index>(1, g.batch));
    return plan;
}

// compact (Cout, D) row-major = the active taps of weight (Cout, Cin, KH, KW). Read as (D, Cout)
// column-major, it is the GEMM's weight. Memory-bound (the whole weight is read): spread over
// the threads.
void compact_active_taps(const ConvGeometry& g, const Plan& plan, const float* weight, float* compact) {
    const Index kernel_area = g.kernel_height * g.kernel_width;
#pragma omp parallel for schedule(static) if (g.weight_size() > parallel_threshold)
    for (Index co = 0; co < g.out_channels; ++co)
        for (Index ci = 0; ci < g.in_channels; ++ci)
            for (Index r = 0; r < plan.rows.count; ++r)
                for (Index c = 0; c < plan.cols.count; ++c)
                    compact[co * plan.depth + ci * plan.taps + r * plan.cols.count + c] =
                        weight[(co * g.in_channels + ci) * kernel_area + (plan.rows.first + r) * g.kernel_width +
                               plan.cols.first + c];
}

// The weight as a (D, Cout) column-major matrix: the caller's array when every tap is active,
// otherwise a compact copy of the active taps in ctx's arena.
const float* gemm_weight(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* weight) {
    if (plan.full_window) return weight;
    float* compact = ctx.arena().allocate_floats(static_cast<std::size_t>(plan.depth * g.out_channels));
    compact_active_taps(g, plan, weight, compact);
    return compact;
}

// grad_weight (Cout, Cin, KH, KW) = the compact (Cout, D) row-major filter gradient of the
// active taps (+ grad_weight when beta = 1). Taps outside the window only ever saw padding:
// their gradient is 0, so beta = 1 leaves them as they are and beta = 0 zeroes them.
void scatter_filter_gradient(const ConvGeometry& g, const Plan& plan, const float* compact, float* grad_weight,
                             float beta) {
    const Index taps = plan.taps;
    const Index kernel_area = g.kernel_height * g.kernel_width;
#pragma omp parallel for schedule(static) if (g.weight_size() > parallel_threshold)
    for (Index co = 0; co < g.out_channels; ++co)
        for (Index ci = 0; ci < g.in_channels; ++ci) {
            float* out = grad_weight + (co * g.in_channels + ci) * kernel_area;
            const float* block = compact + co * plan.depth + ci * taps;
            if (beta == 0.0f) std::fill(out, out + kernel_area, 0.0f);
            for (Index r = 0; r < plan.rows.count; ++r)
                for (Index c = 0; c < plan.cols.count; ++c)
                    out[(plan.rows.first + r) * g.kernel_width + plan.cols.first + c] += block[r * plan.cols.count + c];
        }
}

}  // namespace

void conv2d_forward(Context& ctx, const ConvGeometry& g, const float* input, const float* weight, float* output,
                    float beta) {
    check_geometry(g, "conv2d_forward");
    check_beta(beta, "conv2d_forward");
    if (g.batch == 0) return;
    const Plan plan = make_plan(g);
    if (plan.depth == 0) {  // every output position reads only padding
        scale_or_zero(output, g.output_size(), beta);
        return;
    }
    if (plan.skinny) return forward_skinny(ctx, g, plan, input, weight, output, beta);
    const float* gemm = gemm_weight(ctx, g, plan, weight);
    if (plan.input_is_columns) return forward_input_is_columns(g, plan, input, gemm, output, beta);
    if (plan.per_image) return forward_per_image(ctx, g, plan, input, gemm, output, beta);
    forward_batched(ctx, g, plan, input, gemm, output, beta);
}

void conv2d_backward_data(Context& ctx, const ConvGeometry& g, const float* grad_output, const float* weight,
                          float* grad_input, float beta) {
    check_geometry(g, "conv2d_backward_data");
    check_beta(beta, "conv2d_backward_data");
    if (g.batch == 0) return;
    const Plan plan = make_plan(g);
    if (plan.depth == 0) {  // no input element is read by any output position
        scale_or_zero(grad_input, g.input_size(), beta);
        return;
    }
    if (plan.skinny) return backward_data_skinny(ctx, g, plan, grad_output, weight, grad_input, beta);
    const float* gemm = gemm_weight(ctx, g, plan, weight);
    if (plan.input_is_columns) return backward_data_input_is_columns(g, plan, grad_output, gemm, grad_input, beta);
    if (plan.per_image) return backward_data_per_image(ctx, g, plan, grad_output, gemm, grad_input, beta);
    backward_data_batched(ctx, g, plan, grad_output, gemm, grad_input, beta);
}

void conv2d_backward_filter(Context& ctx, const ConvGeometry& g, const float* input, const float* grad_output,
                            float* grad_weight, float beta) {
    check_geometry(g, "conv2d_backward_filter");
    check_beta(beta, "conv2d_backward_filter");
    const Plan plan = make_plan(g);
    const Index Cout = g.out_channels;
    if (g.batch == 0 || plan.depth == 0) {  // the gradient is exactly zero
        scale_or_zero(grad_weight, g.weight_size(), beta);
        return;
    }
    // Accumulate straight into grad_weight when it has the GEMM's shape; otherwise into a
    // compact (D, Cout) block that is scattered back below.
    float* target =
        plan.full_window ? grad_weight : ctx.arena().allocate_floats(static_cast<std::size_t>(plan.depth * Cout));
    const float target_beta = plan.full_window ? beta : 0.0f;
    if (plan.per_image)
        backward_filter_per_image(ctx, g, plan, input, grad_output, target, target_beta);
    else if (plan.input_is_columns)
        backward_filter_input_is_columns(g, plan, input, grad_output, target, target_beta);
    else
        backward_filter_batched(ctx, g, plan, input, grad_output, target, target_beta);
    if (!plan.full_window) scatter_filter_gradient(g, plan, target, grad_weight, beta);
}

void add_channel_bias(Context& ctx, std::int64_t batch, std::int64_t channels, std::int64_t spatial, const float* bias,
                      float* output) {
    (void)ctx;
    SGA_CHECK_ARGUMENT(batch >= 0 && channels >= 0 && spatial >= 0, "add_channel_bias: sizes must not be negative");
    const Index tasks = batch * channels;
#pragma omp parallel for schedule(static) if (tasks * spatial > parallel_threshold)
    for (Index task = 0; task < tasks; ++task) {
        const float b = bias[task % channels];
        float* plane = output + task * spatial;
        for (Index s = 0; s < spatial; ++s) plane[s] += b;
    }
}

void add_channel_bias_backward(Context& ctx, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                               const float* grad_output, float* grad_bias) {
    (void)ctx;
    SGA_CHECK_ARGUMENT(batch >= 0 && channels >= 0 && spatial >= 0,
                       "add_channel_bias_backward: sizes must not be negative");
    // Channels are split across the threads; each sums its N planes in a fixed order:
    // deterministic, no atomics.
    // Each plane is summed in float (vectorised), the planes in double: a batch-64 32x32 map
    // is 65536 terms, too many for one float accumulator to stay accurate.
#pragma omp parallel for schedule(static) if (batch * channels * spatial > parallel_threshold)
    for (Index c = 0; c < channels; ++c) {
        double total = 0.0;
        for (Index n = 0; n < batch; ++n) {
            const float* plane = grad_output + (n * channels + c) * spatial;
            float plane_sum = 0.0f;
#pragma omp simd reduction(+ : plane_sum)
            for (Index s = 0; s < spatial; ++s) plane_sum += plane[s];
            total += plane_sum;
        }
        grad_bias[c] += static_cast<float>(total);
    }
}

std::int64_t conv2d_packed_floats(const ConvGeometry& g, ConvPass pass) {
    (void)pass;
    check_geometry(g, "conv2d_packed_floats");
    const Plan plan = make_plan(g);
    return plan.full_window ? 0 : plan.depth * g.out_channels;  // nothing, or the active taps
}

void conv2d_pack_weight(Context& ctx, const ConvGeometry& g, ConvPass pass, const float* weight, float* packed) {
    (void)ctx;
    (void)pass;
    check_geometry(g, "conv2d_pack_weight");
    const Plan plan = make_plan(g);
    if (!plan.full_window) compact_active_taps(g, plan, weight, packed);
}

void conv2d_packed(Context& ctx, const ConvGeometry& g, ConvPass pass, const float* input, const float* weight,
                   const float* packed, float* output) {
    check_geometry(g, "conv2d_packed");
    if (g.batch == 0) return;
    const Plan plan = make_plan(g);
    const Index P = plan.spatial, Cout = g.out_channels, D = plan.depth;
    const Index input_image = g.in_channels * g.in_height * g.in_width, output_image = Cout * P;
    const bool forward = pass == ConvPass::Forward;
    if (D == 0) {  // every product is empty: the result is 0
        scale_or_zero(output, forward ? g.output_size() : g.input_size(), 0.0f);
        return;
    }
    const float* w = plan.full_window ? weight : packed;  // (Cout, D) row-major
    auto product = [&](Index rows, const SourceRows& a, const TargetRows& c) {
        if (forward && P >= forward_panel_min_positions)
            panels_streamed(ctx, rows, D, Cout, a, {w, 1, D}, c);
        else if (forward)
            forward_streamed(ctx, rows, D, Cout, a, w, c);
        else
            backward_data_streamed(ctx, rows, Cout, D, a, w, c);
    };
    if (plan.input_is_columns) {  // (N, D) row-major is the columns matrix itself
        const Index* by_depth = strided_row_offsets(ctx, g.batch, D);
        const Index* by_channels = strided_row_offsets(ctx, g.batch, Cout);
        if (forward)
            product(g.batch, {input, by_depth, 1}, {output, by_channels, 1});
        else
            product(g.batch, {input, by_channels, 1}, {output, by_depth, 1});
        return;
    }
    // In chunks of images, so that the columns of a large batch stay bounded.
    const Index chunk = plan.images_per_chunk;
    float* columns = ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * D));
    for (Index first = 0; first < g.batch; first += chunk) {
        Arena::Scope per_chunk(ctx.arena());
        const Index images = std::min(chunk, g.batch - first), rows = images * P;
        const Index* nchw_rows = nchw_row_offsets(ctx, images, Cout, P);
        const Index* column_rows = strided_row_offsets(ctx, rows, 1);
        if (forward) {
            im2col(ctx, g, plan, input + first * input_image, images, columns);
            product(rows, {columns, column_rows, rows}, {output + first * output_image, nchw_rows, P});
        } else {
            product(rows, {input + first * output_image, nchw_rows, P}, {columns, column_rows, rows});
            col2im(ctx, g, plan, columns, images, output + first * input_image, 0.0f);
        }
    }
}

bool bf16_available() { return bf16::available(); }

// The bfloat16 product's weight operand W (R, K) (conv2d_bf16.cpp): Forward (Cout, D), the
// active taps' (Cout, D) row-major; BackwardData (D, Cout), their transpose.
std::int64_t conv2d_bf16_packed_words(const ConvGeometry& g, ConvPass pass) {
    check_geometry(g, "conv2d_bf16_packed_words");
    const Plan plan = make_plan(g);
    return pass == ConvPass::Forward ? bf16::packed_words(g.out_channels, plan.depth)
                                     : bf16::packed_words(plan.depth, g.out_channels);
}

void conv2d_pack_weight_bf16(Context& ctx, const ConvGeometry& g, ConvPass pass, const float* weight,
                             std::uint32_t* packed) {
    check_geometry(g, "conv2d_pack_weight_bf16");
    const Plan plan = make_plan(g);
    const float* w = gemm_weight(ctx, g, plan, weight);  // (Cout, D) row-major
    if (pass == ConvPass::Forward)
        bf16::pack_weight(g.out_channels, plan.depth, w, plan.depth, 1, packed);
    else
        bf16::pack_weight(plan.depth, g.out_channels, w, 1, plan.depth, packed);
}

void conv2d_packed_bf16(Context& ctx, const ConvGeometry& g, ConvPass pass, const float* input,
                        const std::uint32_t* packed, float* output, float beta) {
    check_geometry(g, "conv2d_packed_bf16");
    check_beta(beta, "conv2d_packed_bf16");
    if (!bf16::available())
        throw DeviceError("conv2d_packed_bf16: this processor has no AVX512-BF16 (or SKIPGANOMALY_DISABLE_BF16 is set)");
    if (g.batch == 0) return;
    const Plan plan = make_plan(g);
    if (plan.depth == 0) {  // every product is empty: the result is 0
        scale_or_zero(output, pass == ConvPass::Forward ? g.output_size() : g.input_size(), beta);
        return;
    }
    packed_bf16(ctx, g, plan, pass, input, packed, output, beta);
}

void conv2d_backward_filter_bf16(Context& ctx, const ConvGeometry& g, const float* input, const float* grad_output,
                                 float* grad_weight, float beta) {
    check_geometry(g, "conv2d_backward_filter_bf16");
    check_beta(beta, "conv2d_backward_filter_bf16");
    if (!bf16::available())
        throw DeviceError(
            "conv2d_backward_filter_bf16: this processor has no AVX512-BF16 (or SKIPGANOMALY_DISABLE_BF16 is set)");
    const Plan plan = make_plan(g);
    if (g.batch == 0 || plan.depth == 0) {  // the gradient is exactly zero
        scale_or_zero(grad_weight, g.weight_size(), beta);
        return;
    }
    const bool in_place = plan.full_window && beta == 0.0f;  // (Cout, D) row-major is the weight's layout
    float* target = in_place ? grad_weight : ctx.arena().allocate_floats(static_cast<std::size_t>(plan.depth * g.out_channels));
    backward_filter_bf16(ctx, g, plan, input, grad_output, target);
    if (in_place) return;
    if (!plan.full_window) return scatter_filter_gradient(g, plan, target, grad_weight, beta);
    for (Index i = 0; i < g.weight_size(); ++i) grad_weight[i] += target[i];  // beta = 1
}

}  // namespace sga::cpu
