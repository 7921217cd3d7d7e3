// im2col and col2im of the CPU convolution: the columns of the GEMMs built from the input, and
// scattered back into grad_input (see the top of conv2d.cpp for the matrices' layout).
//
// Each plane goes through a PhasePlane copy (conv2d_internal.hpp), so that the inner loops are
// branch-free contiguous copies (or adds) of OW floats that the compiler vectorises, instead of
// a bounds test and a strided gather per element; the copy itself is one pass over the plane
// and stays in L1. With a single output position an image (P = 1) a plane holds almost nothing
// to copy, so those layers gather one column at a time instead.
#include <algorithm>
#include <cstring>

#include "conv2d_internal.hpp"

namespace sga::cpu::conv2d_detail {
namespace {

// Columns j of phase q that hold real input (the rest is padding): [begin, end).
Span phase_columns(const ConvGeometry& g, const PhasePlane& layout, Index q) {
    const Index begin = std::max<Index>(0, ceil_div(g.padding - q, g.stride));
    const Index end = std::min<Index>(layout.width, floor_div(g.in_width - 1 + g.padding - q, g.stride) + 1);
    return {begin, std::max(begin, end)};
}

void split_plane(const ConvGeometry& g, const PhasePlane& layout, const float* plane, float* local) {
    const Index stride = g.stride;
    for (Index q = 0; q < layout.phases; ++q) {
        const Span valid = phase_columns(g, layout, q);
        const Index offset = q - g.padding;  // input column of phase column j: stride * j + offset
        for (Index r = 0; r < layout.height; ++r) {
            float* out = local + (q * layout.height + r) * layout.width;
            const Index ih = r - g.padding;
            if (ih < 0 || ih >= g.in_height) {
                std::fill(out, out + layout.width, 0.0f);
                continue;
            }
            const float* in_row = plane + ih * g.in_width;
            std::fill(out, out + valid.begin, 0.0f);
            if (stride == 1) {
                std::memcpy(out + valid.begin, in_row + valid.begin + offset,
                            static_cast<std::size_t>(valid.end - valid.begin) * sizeof(float));
            } else {
                for (Index j = valid.begin; j < valid.end; ++j) out[j] = in_row[stride * j + offset];
            }
            std::fill(out + valid.end, out + layout.width, 0.0f);
        }
    }
}

// grad_plane (H, W) = local's real columns (+ grad_plane when beta = 1). Every input element
// is exactly one (phase, row, column) of local, so beta = 0 overwrites the whole plane.
void merge_plane(const ConvGeometry& g, const PhasePlane& layout, const float* local, float* grad_plane, float beta) {
    const Index stride = g.stride;
    for (Index q = 0; q < layout.phases; ++q) {
        const Span valid = phase_columns(g, layout, q);
        const Index offset = q - g.padding;
        for (Index ih = 0; ih < g.in_height; ++ih) {
            const float* in = local + (q * layout.height + ih + g.padding) * layout.width;
            float* out_row = grad_plane + ih * g.in_width;
            if (beta == 0.0f) {
                for (Index j = valid.begin; j < valid.end; ++j) out_row[stride * j + offset] = in[j];
            } else {
                for (Index j = valid.begin; j < valid.end; ++j) out_row[stride * j + offset] += in[j];
            }
        }
    }
}

// target[r][i] = (or +=) source[r][i] for `rows` rows of `width` floats, each side with its
// own row pitch. The widths of the model's layers (1, 2, 4, 8, 16, 32) get compile-time
// lengths: with a runtime trip count of 8 or less the vectoriser's main loop never runs.
template <bool Accumulate, Index Width>
void transfer_rows_fixed(const float* __restrict source, Index source_pitch, float* __restrict target,
                         Index target_pitch, Index rows, Index width) {
    const Index w = Width > 0 ? Width : width;
    for (Index r = 0; r < rows; ++r) {
        const float* __restrict from = source + r * source_pitch;
        float* __restrict to = target + r * target_pitch;
        for (Index i = 0; i < w; ++i) {
            if constexpr (Accumulate)
                to[i] += from[i];
            else
                to[i] = from[i];
        }
    }
}
template <bool Accumulate>
void transfer_rows(const float* source, Index source_pitch, float* target, Index target_pitch, Index rows,
                   Index width) {
    switch (width) {
        case 1: return transfer_rows_fixed<Accumulate, 1>(source, source_pitch, target, target_pitch, rows, width);
        case 2: return transfer_rows_fixed<Accumulate, 2>(source, source_pitch, target, target_pitch, rows, width);
        case 4: return transfer_rows_fixed<Accumulate, 4>(source, source_pitch, target, target_pitch, rows, width);
        case 8: return transfer_rows_fixed<Accumulate, 8>(source, source_pitch, target, target_pitch, rows, width);
        case 16: return transfer_rows_fixed<Accumulate, 16>(source, source_pitch, target, target_pitch, rows, width);
        case 32: return transfer_rows_fixed<Accumulate, 32>(source, source_pitch, target, target_pitch, rows, width);
        default: return transfer_rows_fixed<Accumulate, 0>(source, source_pitch, target, target_pitch, rows, width);
    }
}

// A single output position (the model's 2x2 -> 1x1 and 1x1 -> 1x1 layers): each column is
// one input element per image, or padding, so a plane at a time would be all set-up and no
// copying. One task per column instead, gathering that element across the images.
void im2col_single_position(const ConvGeometry& g, const Plan& plan, const float* input, Index images, float* columns) {
    const Index taps = plan.taps;
    const Index image_size = g.in_channels * g.in_height * g.in_width;
#pragma omp parallel for schedule(static) if (plan.depth * images > parallel_threshold)
    for (Index k = 0; k < plan.depth; ++k) {
        const Index ci = k / taps, tap = k % taps;
        const Index ih = plan.rows.first + tap / plan.cols.count - g.padding;
        const Index iw = plan.cols.first + tap % plan.cols.count - g.padding;
        float* out = columns + k * images;
        if (ih < 0 || ih >= g.in_height || iw < 0 || iw >= g.in_width) {
            std::fill(out, out + images, 0.0f);
            continue;
        }
        const float* source = input + (ci * g.in_height + ih) * g.in_width + iw;
        for (Index n = 0; n < images; ++n) out[n] = source[n * image_size];
    }
}

// The inverse: with one output position, input element (ih, iw) is read by at most one tap,
// (ih + padding, iw + padding), so every grad_input element is one column entry or 0. One task
// per image writes its plane contiguously; walking the images in the inner loop instead would
// write with a power-of-two stride that maps every store to the same cache set.
void col2im_single_position(const ConvGeometry& g, const Plan& plan, const float* columns, Index images,
                            float* grad_input, float beta) {
    const Index taps = plan.taps;
    const Index image_size = g.in_channels * g.in_height * g.in_width;
#pragma omp parallel for schedule(static) if (images * image_size > parallel_threshold)
    for (Index n = 0; n < images; ++n) {
        float* out = grad_input + n * image_size;
        for (Index ci = 0; ci < g.in_channels; ++ci)
            for (Index ih = 0; ih < g.in_height; ++ih) {
                const Index r = ih + g.padding - plan.rows.first;
                const bool row_read = r >= 0 && r < plan.rows.count;
                for (Index iw = 0; iw < g.in_width; ++iw, ++out) {
                    const Index c = iw + g.padding - plan.cols.first;
                    const float value = row_read && c >= 0 && c < plan.cols.count
                                            ? columns[(ci * taps + r * plan.cols.count + c) * images + n]
                                            : 0.0f;
                    *out = beta == 0.0f ? value : *out + value;
                }
            }
    }
}

}  // namespace

PhasePlane phase_plane(const ConvGeometry& g) {
    PhasePlane plane;
    plane.phases = g.stride;
    plane.height = g.in_height + 2 * g.padding;
    plane.width = ceil_div(g.in_width + 2 * g.padding, g.stride);
    return plane;
}

// One image's columns of input channel `plane`'s taps: tap column t of the channel goes to
// out + t * leading (leading = rows of the column matrix), P floats from there.
void im2col_channel(const ConvGeometry& g, const Plan& plan, const PhasePlane& layout, const float* plane, float* local,
                    float* out, Index leading) {
    const Index stride = g.stride, OW = g.out_width;
    split_plane(g, layout, plane, local);
    for (Index r = 0; r < plan.rows.count; ++r) {
        const Index kh = plan.rows.first + r;
        for (Index c = 0; c < plan.cols.count; ++c) {
            const Index kw = plan.cols.first + c;
            const float* source = local + ((kw % stride) * layout.height + kh) * layout.width + kw / stride;
            transfer_rows<false>(source, stride * layout.width, out + (r * plan.cols.count + c) * leading, OW,
                                 g.out_height, OW);
        }
    }
}

// The inverse for one image and input channel: grad_plane (H, W) = the channel's tap columns
// (at column + t * leading) scattered back (+ grad_plane when beta = 1).
void col2im_channel(const ConvGeometry& g, const Plan& plan, const PhasePlane& layout, const float* column,
                    Index leading, float* local, float* grad_plane, float beta) {
    const Index stride = g.stride, OW = g.out_width;
    std::fill(local, local + layout.size(), 0.0f);
    for (Index r = 0; r < plan.rows.count; ++r) {
        const Index kh = plan.rows.first + r;
        for (Index c = 0; c < plan.cols.count; ++c) {
            const Index kw = plan.cols.first + c;
            float* target = local + ((kw % stride) * layout.height + kh) * layout.width + kw / stride;
            transfer_rows<true>(column + (r * plan.cols.count + c) * leading, OW, target, stride * layout.width,
                                g.out_height, OW);
        }
    }
    merge_plane(g, layout, local, grad_plane, beta);
}

// Batched columns (images * P, D) from `images` input images (N, Cin, H, W). One task per
// (input channel, image): it writes that image's P-long segment of each of the channel's tap
// columns, so tasks never share output memory, and consecutive tasks write adjacent segments.
void im2col(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input, Index images, float* columns) {
    if (plan.spatial == 1) return im2col_single_position(g, plan, input, images, columns);
    const Index P = plan.spatial, rows = images * P;
    const Index tasks = g.in_channels * images;
    const Index plane_size = g.in_height * g.in_width;
    const PhasePlane layout = phase_plane(g);
    const ThreadScratch scratch = thread_scratch(ctx, layout.size());
#pragma omp parallel for schedule(static) if (tasks * plan.taps * P > parallel_threshold)
    for (Index task = 0; task < tasks; ++task) {
        const Index ci = task / images, n = task % images;
        im2col_channel(g, plan, layout, input + (n * g.in_channels + ci) * plane_size, scratch.for_this_thread(),
                       columns + ci * plan.taps * rows + n * P, rows);
    }
}

// grad_input (images, Cin, H, W) = batched columns scattered back (+ grad_input when beta = 1).
// One task owns one (image, input channel) plane and reads only that channel's columns, so
// the += scatter needs no atomics.
void col2im(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* columns, Index images,
            float* grad_input, float beta) {
    if (plan.spatial == 1) return col2im_single_position(g, plan, columns, images, grad_input, beta);
    const Index P = plan.spatial, rows = images * P;
    const Index tasks = images * g.in_channels;
    const Index plane_size = g.in_height * g.in_width;
    const PhasePlane layout = phase_plane(g);
    const ThreadScratch scratch = thread_scratch(ctx, layout.size());
#pragma omp parallel for schedule(static) if (tasks * plan.taps * P > parallel_threshold)
    for (Index task = 0; task < tasks; ++task) {
        const Index n = task / g.in_channels, ci = task % g.in_channels;
        col2im_channel(g, plan, layout, columns + ci * plan.taps * rows + n * P, rows, scratch.for_this_thread(),
                       grad_input + task * plane_size, beta);
    }
}

}  // namespace sga::cpu::conv2d_detail
