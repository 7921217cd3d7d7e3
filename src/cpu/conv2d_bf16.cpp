// The bfloat16 convolution strategy (conv2d_packed_bf16, conv2d.cpp): im2col and its
// reorders as on the float32 paths, the product by bf16::multiply (bf16_gemm.cpp) on a weight
// packed once. Also the portable half of bf16_gemm.hpp: the processor check, the conversions
// and the weight packing, which run on any processor.
//
// Each pass is one product c (R, M) = W (R, K) * B (K, M) with M = images * P:
//   Forward:        R = Cout, K = D, B = the im2col columns; c is (Cout, images * P), which
//                   batched_to_nchw reorders (one image: c is its NCHW slice already).
//   BackwardData:   R = D, K = Cout, B = the input (Cout, images * P); c is the columns that
//                   col2im scatters.
//   BackwardFilter: R = Cout, K = images * P, W = grad_output (Cout, images * P), B = the
//                   im2col columns read transposed (bf16::multiply_transposed_b); c is the
//                   filter gradient of the active taps, (Cout, D).
// Every element of c is one thread's sum in an order fixed by K alone (bf16_gemm.hpp), so an
// image gets the same bits alone, in any batch and on any number of threads.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "bf16_gemm.hpp"
#include "conv2d_internal.hpp"

namespace sga::cpu {

namespace bf16 {

bool available() {
    static const bool answer = [] {
        const char* disabled = std::getenv("SKIPGANOMALY_DISABLE_BF16");
        if (disabled && *disabled && std::strcmp(disabled, "0") != 0) return false;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512bf16");
#else
        return false;
#endif
    }();
    return answer;
}

bool vnni_available() {
    static const bool answer = [] {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();
        return available() && __builtin_cpu_supports("avx512vnni");
#else
        return false;
#endif
    }();
    return answer;
}

std::uint16_t from_float(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0)  // NaN: keep it quiet
        return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
    if ((bits & 0x7F800000u) == 0) return static_cast<std::uint16_t>((bits >> 16) & 0x8000u);  // subnormal -> 0
    bits += 0x7FFFu + ((bits >> 16) & 1u);  // to nearest, ties to even
    return static_cast<std::uint16_t>(bits >> 16);
}

float to_float(std::uint16_t value) {
    const std::uint32_t bits = static_cast<std::uint32_t>(value) << 16;
    float result;
    std::memcpy(&result, &bits, sizeof result);
    return result;
}

void pack_weight(Index rows, Index depth, const float* w, Index r_stride, Index k_stride, std::uint32_t* packed) {
    // Training packs every weight twice a step and bfloat16 backward-filter packs the columns:
    // there the scalar loop below would cost as much as the products.
    constexpr Index int32_limit = Index{1} << 31;
    if (available() && 15 * r_stride < int32_limit && 2 * k_stride * (depth + 1) < int32_limit)
        return pack_weight_vectorized(rows, depth, w, r_stride, k_stride, packed);
    const Index pairs = (depth + 1) / 2, blocks = (rows + 15) / 16;
    auto value = [&](Index r, Index k) -> std::uint32_t {
        return r < rows && k < depth ? from_float(w[r * r_stride + k * k_stride]) : 0u;
    };
#pragma omp parallel for schedule(static) if (rows * depth > conv2d_detail::parallel_threshold)
    for (Index block = 0; block < blocks; ++block)
        for (Index p = 0; p < pairs; ++p)
            for (Index i = 0; i < 16; ++i) {
                const Index r = block * 16 + i;
                packed[(block * pairs + p) * 16 + i] = value(r, 2 * p) | (value(r, 2 * p + 1) << 16);
            }
}

}  // namespace bf16

namespace conv2d_detail {
namespace {

// out (cols, rows) = in (rows, cols) transposed, both row-major, in 16 x 16 blocks: the
// reorders of one-position layers (P = 1), where nchw_to_batched and batched_to_nchw would copy
// one float at a time.
void transpose(const float* in, Index rows, Index cols, float* out) {
    constexpr Index block = 16;
    const Index row_blocks = ceil_div(rows, block);
#pragma omp parallel for schedule(static) if (rows * cols > parallel_threshold)
    for (Index rb = 0; rb < row_blocks; ++rb)
        for (Index c0 = 0; c0 < cols; c0 += block)
            for (Index r = rb * block; r < std::min(rows, rb * block + block); ++r)
                for (Index c = c0; c < std::min(cols, c0 + block); ++c) out[c * rows + r] = in[r * cols + c];
}

// batched (C, images * P) -> nchw (images, C, P) (+ nchw when beta = 1), and back, as
// batched_to_nchw and nchw_to_batched (conv2d_gemm.cpp).
void to_nchw(const float* batched, Index images, Index channels, Index P, float* nchw, float beta) {
    if (P == 1 && beta == 0.0f) return transpose(batched, channels, images, nchw);
    batched_to_nchw(batched, images, channels, P, nchw, beta);
}
void to_batched(const float* nchw, Index images, Index channels, Index P, float* batched) {
    if (P == 1) return transpose(nchw, images, channels, batched);
    nchw_to_batched(nchw, images, channels, P, batched);
}

}  // namespace

void packed_bf16(Context& ctx, const ConvGeometry& g, const Plan& plan, ConvPass pass, const float* input,
                 const std::uint32_t* packed, float* output, float beta) {
    const Index P = plan.spatial, Cout = g.out_channels, D = plan.depth;
    const Index input_image = g.in_channels * g.in_height * g.in_width, output_image = Cout * P;
    const bool forward = pass == ConvPass::Forward;
    const Index threads = std::max(1, omp_get_max_threads());
    const Index scratch_stride = round_up_16(bf16::scratch_words());
    auto* scratch = reinterpret_cast<std::uint32_t*>(
        ctx.arena().allocate_floats(static_cast<std::size_t>(threads * scratch_stride)));
    const Index chunk = plan.images_per_chunk;
    float* columns = ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * D));
    float* reordered = ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * Cout));
    for (Index first = 0; first < g.batch; first += chunk) {
        const Index images = std::min(chunk, g.batch - first), M = images * P;
        const float* in = input + first * (forward ? input_image : output_image);
        float* out = output + first * (forward ? output_image : input_image);
        if (forward) {
            // B = columns (D, M) row-major: im2col's layout, or the (N, D) input transposed.
            if (plan.input_is_columns)
                to_batched(in, images, D, 1, columns);
            else
                im2col(ctx, g, plan, in, images, columns);
            if (images == 1 && beta == 0.0f) {
                bf16::multiply(Cout, D, M, packed, columns, M, out, P, scratch, scratch_stride);
            } else {
                bf16::multiply(Cout, D, M, packed, columns, M, reordered, M, scratch, scratch_stride);
                to_nchw(reordered, images, Cout, P, out, beta);
            }
        } else {
            // B = the input as (Cout, M) row-major: one image's NCHW slice is that already.
            const float* b = in;
            if (images > 1) {
                to_batched(in, images, Cout, P, reordered);
                b = reordered;
            }
            bf16::multiply(D, Cout, M, packed, b, M, columns, M, scratch, scratch_stride);
            if (plan.input_is_columns)
                to_nchw(columns, images, D, 1, out, beta);  // (D, N) -> (N, D)
            else
                col2im(ctx, g, plan, columns, images, out, beta);
        }
    }
}

void backward_filter_bf16(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input,
                          const float* grad_output, float* target) {
    const Index P = plan.spatial, Cout = g.out_channels, D = plan.depth;
    const Index input_image = g.in_channels * g.in_height * g.in_width, output_image = Cout * P;
    const Index threads = std::max(1, omp_get_max_threads());
    const Index scratch_stride = round_up_16(bf16::scratch_words());
    auto* scratch = reinterpret_cast<std::uint32_t*>(
        ctx.arena().allocate_floats(static_cast<std::size_t>(threads * scratch_stride)));
    const Index chunk = plan.images_per_chunk;
    auto* packed = reinterpret_cast<std::uint32_t*>(
        ctx.arena().allocate_floats(static_cast<std::size_t>(round_up_16(bf16::packed_words(Cout, chunk * P)))));
    float* columns = plan.input_is_columns ? nullptr : ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * D));
    float* batched = plan.input_is_columns ? nullptr : ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * Cout));
    float* part = g.batch > chunk ? ctx.arena().allocate_floats(static_cast<std::size_t>(Cout * D)) : nullptr;
    for (Index first = 0; first < g.batch; first += chunk) {
        const Index images = std::min(chunk, g.batch - first), M = images * P;
        const float* in = input + first * input_image;
        const float* dy = grad_output + first * output_image;
        // Chunks are summed in order in float32: the chunk size is the geometry's (make_plan),
        // so the bits do not depend on the thread count.
        float* c = first == 0 ? target : part;
        if (plan.input_is_columns) {
            bf16::pack_weight(Cout, M, dy, 1, Cout, packed);  // the (N, Cout) gradient read as (Cout, N)
            bf16::multiply(Cout, M, D, packed, in, D, c, D, scratch, scratch_stride);  // B = the (N, D) input
        } else {
            im2col(ctx, g, plan, in, images, columns);  // (D, M) row-major: B transposed
            to_batched(dy, images, Cout, P, batched);
            bf16::pack_weight(Cout, M, batched, M, 1, packed);
            bf16::multiply_transposed_b(Cout, M, D, packed, columns, M, c, D, scratch, scratch_stride);
        }
        if (c == part)
            for (Index i = 0; i < Cout * D; ++i) target[i] += part[i];
    }
}

}  // namespace conv2d_detail
}  // namespace sga::cpu
