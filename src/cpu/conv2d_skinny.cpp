// The skinny kernels of the CPU convolution: products of at most skinny_max_rows rows (batch *
// P) where the layer drops kernel taps that only read padding, such as the 2x2 -> 1x1
// convolution and its transposed mirror when one image (or its four rotation views) is scored.
// There the GEMM path would compact the active taps of the weight and pack them again on every
// call, for a product of a few rows. These kernels read each weight row once, in place, and
// keep the few rows of the product in registers. With every tap active there is nothing to
// compact and the GEMM's packing is one pass over a weight it then reuses, so those layers stay
// on the GEMM. Each result is summed in one fixed order by one thread: identical at any thread
// count.
#include <omp.h>

#include <algorithm>
#include <type_traits>

#include "conv2d_internal.hpp"

namespace sga::cpu::conv2d_detail {
namespace {

// A pitched view of a (rows, channels) result: element (r, c) at data + r * row_pitch + c * channel_pitch.
struct Pitched {
    float* data;
    Index row_pitch, channel_pitch;
    float& at(Index r, Index c) const { return data[r * row_pitch + c * channel_pitch]; }
};

// out(r, co) (=|+=) the sum over the active taps k of columns(r, k) * weight(co, k) for the
// output channels [first, first + count), count <= 4: four weight rows are streamed side by
// side, so each load of a column serves four channels. The columns are (rows, D) column-major
// as im2col writes them, the weight the caller's (Cout, Cin, KH, KW) array.
template <Index Rows>
void skinny_forward_channels(const ConvGeometry& g, const Plan& plan, const float* columns, Index rows_at_run_time,
                             const float* weight, Index first, Index count, const Pitched& out, float beta) {
    constexpr Index block = 4, width = Rows > 0 ? Rows : skinny_max_rows;
    const Index rows = Rows > 0 ? Rows : rows_at_run_time;
    const Index kernel_area = g.kernel_height * g.kernel_width;
    float sum[block][width] = {};
    const float* w[block];  // past the last channel, repeat it: computed, never stored
    for (Index b = 0; b < block; ++b)
        w[b] = weight + (first + std::min(b, count - 1)) * g.in_channels * kernel_area +
               plan.rows.first * g.kernel_width + plan.cols.first;
    const float* column = columns;
    for (Index ci = 0; ci < g.in_channels; ++ci)
        for (Index r = 0; r < plan.rows.count; ++r) {
            const Index offset = ci * kernel_area + r * g.kernel_width;
            for (Index c = 0; c < plan.cols.count; ++c, column += rows)
                for (Index b = 0; b < block; ++b) {
                    const float value = w[b][offset + c];
                    for (Index i = 0; i < rows; ++i) sum[b][i] += value * column[i];
                }
        }
    for (Index b = 0; b < count; ++b)
        for (Index i = 0; i < rows; ++i) {
            float& o = out.at(i, first + b);
            o = beta == 0.0f ? sum[b][i] : o + sum[b][i];
        }
}

// f(std::integral_constant<Index, R>{}) with R = rows for the row counts the skinny kernels
// specialise (1, 2, 4, 8, 16), R = 0 (any count, known at run time only) otherwise.
template <class F>
void with_fixed_rows(Index rows, F&& f) {
    switch (rows) {
        case 1: return f(std::integral_constant<Index, 1>{});
        case 2: return f(std::integral_constant<Index, 2>{});
        case 4: return f(std::integral_constant<Index, 4>{});
        case 8: return f(std::integral_constant<Index, 8>{});
        case 16: return f(std::integral_constant<Index, 16>{});
        default: return f(std::integral_constant<Index, 0>{});
    }
}

void skinny_forward(const ConvGeometry& g, const Plan& plan, const float* columns, Index rows, const float* weight,
                    const Pitched& out, float beta) {
    const Index blocks = ceil_div(g.out_channels, 4);
#pragma omp parallel for schedule(static) if (g.weight_size() > parallel_threshold)
    for (Index block = 0; block < blocks; ++block) {
        const Index first = block * 4, count = std::min<Index>(4, g.out_channels - first);
        with_fixed_rows(rows, [&](auto fixed) {
            skinny_forward_channels<decltype(fixed)::value>(g, plan, columns, rows, weight, first, count, out, beta);
        });
    }
}

// columns(r, k) (=|+=) the sum over the output channels co of gradient(co, r) * weight(co, k)
// for the active taps k of input channels [first, first + count); gradient is (Cout, rows)
// row-major. The output channels are the outer loop, four at a time, so that each weight row
// is streamed front to back: walking down the weight one input channel at a time would touch
// one cache line per row, a row (up to 32 KB) apart, and is latency-bound. The sums of the
// range (count x taps x rows floats) stay in this thread's `sums`.
template <Index Rows>
void skinny_backward_data_channels(const ConvGeometry& g, const Plan& plan, const float* gradient,
                                   Index rows_at_run_time, const float* weight, Index first, Index count, float* sums,
                                   const Pitched& out, float beta) {
    constexpr Index block = 4;
    const Index rows = Rows > 0 ? Rows : rows_at_run_time;
    const Index kernel_area = g.kernel_height * g.kernel_width, weight_row = g.in_channels * kernel_area;
    const Index window = plan.rows.first * g.kernel_width + plan.cols.first;
    const Index range_floats = count * plan.taps * rows;
    std::fill(sums, sums + range_floats, 0.0f);
    static constexpr float zeros[skinny_max_rows] = {};
    for (Index co = 0; co < g.out_channels; co += block) {
        const float* w[block];
        const float* grad[block];  // past the last channel: the last row, times zeros
        for (Index b = 0; b < block; ++b) {
            const Index channel = std::min(co + b, g.out_channels - 1);
            w[b] = weight + channel * weight_row + first * kernel_area + window;
            grad[b] = co + b < g.out_channels ? gradient + channel * rows : zeros;
        }
        float* sum = sums;
        for (Index ci = 0; ci < count; ++ci)
            for (Index r = 0; r < plan.rows.count; ++r) {
                const Index offset = ci * kernel_area + r * g.kernel_width;
                for (Index c = 0; c < plan.cols.count; ++c, sum += rows) {
                    const float w0 = w[0][offset + c], w1 = w[1][offset + c], w2 = w[2][offset + c],
                                w3 = w[3][offset + c];
                    for (Index i = 0; i < rows; ++i)
                        sum[i] += w0 * grad[0][i] + w1 * grad[1][i] + w2 * grad[2][i] + w3 * grad[3][i];
                }
            }
    }
    for (Index ci = 0; ci < count; ++ci)
        for (Index t = 0; t < plan.taps; ++t)
            for (Index i = 0; i < rows; ++i) {
                float& o = out.at(i, (first + ci) * plan.taps + t);
                const float value = sums[(ci * plan.taps + t) * rows + i];
                o = beta == 0.0f ? value : o + value;
            }
}

// Each thread takes a contiguous range of input channels.
void skinny_backward_data(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* gradient, Index rows,
                          const float* weight, const Pitched& out, float beta) {
    const int threads = g.weight_size() > parallel_threshold ? std::max(1, omp_get_max_threads()) : 1;
    const Index per_thread = ceil_div(g.in_channels, threads);
    const ThreadScratch scratch = thread_scratch(ctx, per_thread * plan.taps * rows);
#pragma omp parallel num_threads(threads)
    {
        const Index first = std::min(g.in_channels, omp_get_thread_num() * per_thread);
        const Index count = std::min(g.in_channels, first + per_thread) - first;
        float* sums = scratch.for_this_thread();
        if (count > 0)
            with_fixed_rows(rows, [&](auto fixed) {
                skinny_backward_data_channels<decltype(fixed)::value>(g, plan, gradient, rows, weight, first, count, sums,
                                                                      out, beta);
            });
    }
}

}  // namespace

void forward_skinny(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input, const float* weight,
                    float* output, float beta) {
    const Index P = plan.spatial, rows = g.batch * P, Cout = g.out_channels;
    float* columns = ctx.arena().allocate_floats(static_cast<std::size_t>(rows * plan.depth));
    im2col(ctx, g, plan, input, g.batch, columns);
    // Straight into the output where it is a pitched (rows, Cout): P = 1 is (N, Cout) row-major,
    // one image is (Cout, P); else into (rows, Cout) column-major, then reordered.
    if (P == 1 || g.batch == 1)
        return skinny_forward(g, plan, columns, rows, weight, {output, P == 1 ? Cout : 1, P == 1 ? 1 : P}, beta);
    float* result = ctx.arena().allocate_floats(static_cast<std::size_t>(rows * Cout));
    skinny_forward(g, plan, columns, rows, weight, {result, 1, rows}, 0.0f);
    batched_to_nchw(result, g.batch, Cout, P, output, beta);
}

void backward_data_skinny(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* grad_output,
                          const float* weight, float* grad_input, float beta) {
    const Index P = plan.spatial, rows = g.batch * P, Cout = g.out_channels;
    const float* gradient = grad_output;  // (Cout, rows) row-major: one image already is
    if (g.batch > 1) {
        float* reordered = ctx.arena().allocate_floats(static_cast<std::size_t>(rows * Cout));
        nchw_to_batched(grad_output, g.batch, Cout, P, reordered);
        gradient = reordered;
    }
    if (plan.input_is_columns)  // grad_input (N, D) row-major is the columns matrix itself
        return skinny_backward_data(ctx, g, plan, gradient, rows, weight, {grad_input, plan.depth, 1}, beta);
    float* columns = ctx.arena().allocate_floats(static_cast<std::size_t>(rows * plan.depth));
    skinny_backward_data(ctx, g, plan, gradient, rows, weight, {columns, 1, rows}, 0.0f);
    col2im(ctx, g, plan, columns, g.batch, grad_input, beta);
}

}  // namespace sga::cpu::conv2d_detail
