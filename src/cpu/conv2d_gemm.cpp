// The GEMM strategies of the CPU convolution: per image, batched, and input-is-columns (see the
// top of conv2d.cpp for when each runs), on Eigen's GEMM.
//
// GCC 12 reports a false -Wmaybe-uninitialized inside its own avx512fintrin.h when Eigen's
// AVX-512 GEMM packs a row-major operand (the `__m512 __Y = __Y;` idiom behind
// _mm512_undefined_ps; see pytorch/pytorch#77939, google/highway#710). It is placed before
// the include so that it covers the intrinsic headers, and left on for the whole file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "conv2d_internal.hpp"

namespace sga::cpu::conv2d_detail {
namespace {

using ColumnMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
// Unaligned maps: callers may hand us any float pointer (tests put guard bands around outputs).
using MatrixMap = Eigen::Map<ColumnMajor>;
using ConstMatrixMap = Eigen::Map<const ColumnMajor>;
using RowMatrixMap = Eigen::Map<RowMajor>;
using ConstRowMatrixMap = Eigen::Map<const RowMajor>;

template <typename Destination, typename Product>
void assign(Destination&& destination, const Product& product, float beta) {
    if (beta == 0.0f)
        destination.noalias() = product;
    else
        destination.noalias() += product;
}

// destination (=|+=) lhs * rhs on the batched path: the destination cut into disjoint blocks
// of rows or of columns, each one single-threaded Eigen GEMM, the blocks shared out over the
// threads. Eigen's own threading makes its threads busy-wait for each other between blocks of
// the depth, so a preempted thread stalls the others; here they meet once, at the end. Each
// block packs all of the operand it does not split, so the cut runs along the dimension that
// duplicates the smaller operand.
//
// The blocks depend on the product's shape only (one block per 128 rows or columns, 2 to 16),
// never on the thread count: Eigen takes a row at the end of a block with another micro-kernel
// (and another order of summation) than inside one, so blocks cut by the thread count would
// give one image's result other last bits on one thread than on two.
//
// Below 1e6 multiply-adds the product is one block on the calling thread: Eigen, compiled with
// OpenMP, would otherwise start its own team from about 50,000 multiply-adds per thread, which
// costs more than it saves on products this small. Eigen asks omp_get_max_threads(), the
// calling thread's own setting, so that is 1 around every block.
template <typename Destination, typename Lhs, typename Rhs>
void threaded_product(Destination&& destination, const Lhs& lhs, const Rhs& rhs, float beta) {
    const Index M = destination.rows(), N = destination.cols(), K = lhs.cols();
    const int threads = omp_get_max_threads();
    const bool split_rows = N <= M;  // rows: every block packs rhs (K x N); columns: lhs (M x K)
    const Index extent = split_rows ? M : N;
    const Index blocks = static_cast<double>(M) * N * K < 1e6 ? 1 : std::clamp<Index>(extent / 128, 2, 16);
    const Index block = round_up_16(ceil_div(extent, blocks));  // 16: the width of Eigen's AVX-512 micro-kernels
    auto run_block = [&](Index b) {
        const Index begin = std::min(extent, b * block), count = std::min(extent, begin + block) - begin;
        if (count <= 0) return;
        if (split_rows)
            assign(destination.middleRows(begin, count), lhs.middleRows(begin, count) * rhs, beta);
        else
            assign(destination.middleCols(begin, count), lhs * rhs.middleCols(begin, count), beta);
    };
    const int team = static_cast<int>(std::min<Index>(threads, blocks));
    if (team < 2) {
        omp_set_num_threads(1);
        for (Index b = 0; b < blocks; ++b) run_block(b);
        omp_set_num_threads(threads);
        return;
    }
#pragma omp parallel num_threads(team)
    {
        omp_set_num_threads(1);  // this thread's Eigen products run on it alone
#pragma omp for schedule(static)
        for (Index b = 0; b < blocks; ++b) run_block(b);
    }
}

// ---- per-image GEMMs: the weight packed once per call ----
//
// Every image of the per-image path multiplies by the same weight, and Eigen's product packs
// its right-hand operand on every call, so once per image. SharedRhsProduct packs the weight
// once per call, in the blocks that Eigen's own product of that shape uses, and each image then
// runs Eigen's packing of its own operand and Eigen's micro-kernel (gebp) on them, in Eigen's
// loop order: the same arithmetic in the same order as `lhs * rhs`, so every result keeps its
// bits. These are Eigen 3.4's internal GEMM building blocks (CMakeLists.txt requires 3.4).
namespace eigen_gemm = Eigen::internal;
using GemmTraits = eigen_gemm::gebp_traits<float, float>;
using GemmLhsMapper = eigen_gemm::const_blas_data_mapper<float, Index, Eigen::ColMajor>;
using GemmResultMapper = eigen_gemm::blas_data_mapper<float, Index, Eigen::ColMajor, Eigen::Unaligned, 1>;

template <int RhsOrder>
class SharedRhsProduct {
public:
    // Products (M x K) * rhs, rhs (K x N) stored in RhsOrder with leading dimension rhs_stride.
    // The packed blocks live in ctx's arena until its next reset.
    SharedRhsProduct(Context& ctx, Index M, Index K, Index N, const float* rhs, Index rhs_stride)
        : rows_(M), depth_(K), cols_(N), kc_(K), mc_(M), nc_(N) {
        // What Eigen's product computes for this shape on one thread (GeneralMatrixMatrix.h:
        // gemm_blocking_space(rows, cols, depth, 1, true), then run() clamps mc and nc).
        eigen_gemm::computeProductBlockingSizes<float, float, 1>(kc_, mc_, nc_, Index{1});
        mc_ = std::min(mc_, M);
        nc_ = std::min(nc_, N);
        Index floats = 0;
        for_each_rhs_block([&](Index, Index, Index kc, Index nc) { floats += round_up_16(kc * nc); });
        packed_ = ctx.arena().allocate_floats(static_cast<std::size_t>(floats));
        const RhsMapper mapper(rhs, rhs_stride);
        eigen_gemm::gemm_pack_rhs<float, Index, RhsMapper, GemmTraits::nr, RhsOrder> pack_rhs;
        Index offset = 0;
        for_each_rhs_block([&](Index k2, Index j2, Index kc, Index nc) {
            pack_rhs(packed_ + offset, mapper.getSubMapper(k2, j2), kc, nc);
            offset += round_up_16(kc * nc);
        });
    }

    // Floats of scratch that multiply() needs for the packed lhs (one per thread).
    Index lhs_scratch_floats() const { return mc_ * kc_; }

    // result (M x N, column-major, leading dimension M) = (beta 0) or += (beta 1) lhs * rhs,
    // lhs (M x K) column-major with leading dimension M. lhs_scratch: lhs_scratch_floats(),
    // 64-byte aligned.
    void multiply(const float* lhs, float* result, float beta, float* lhs_scratch) const {
        scale_or_zero(result, rows_ * cols_, beta);  // gebp accumulates
        const GemmLhsMapper lhs_mapper(lhs, rows_);
        const GemmResultMapper result_mapper(result, rows_);
        eigen_gemm::gemm_pack_lhs<float, Index, GemmLhsMapper, GemmTraits::mr, GemmTraits::LhsProgress,
                                  GemmTraits::LhsPacket4Packing, Eigen::ColMajor>
            pack_lhs;
        eigen_gemm::gebp_kernel<float, float, Index, GemmResultMapper, GemmTraits::mr, GemmTraits::nr> gebp;
        for (Index i2 = 0; i2 < rows_; i2 += mc_) {
            const Index mc = std::min(i2 + mc_, rows_) - i2;
            Index offset = 0;
            Index packed_k2 = -1;
            for_each_rhs_block([&](Index k2, Index j2, Index kc, Index nc) {
                if (k2 != packed_k2) {  // Eigen packs the lhs panel once per depth block
                    pack_lhs(lhs_scratch, lhs_mapper.getSubMapper(i2, k2), kc, mc);
                    packed_k2 = k2;
                }
                gebp(result_mapper.getSubMapper(i2, j2), lhs_scratch, packed_ + offset, mc, kc, nc, 1.0f);
                offset += round_up_16(kc * nc);
            });
        }
    }

private:
    using RhsMapper = eigen_gemm::const_blas_data_mapper<float, Index, RhsOrder>;

    // The rhs blocks in Eigen's order: depth blocks, and within each the column blocks.
    template <typename Visit>
    void for_each_rhs_block(Visit&& visit) const {
        for (Index k2 = 0; k2 < depth_; k2 += kc_)
            for (Index j2 = 0; j2 < cols_; j2 += nc_)
                visit(k2, j2, std::min(k2 + kc_, depth_) - k2, std::min(j2 + nc_, cols_) - j2);
    }

    Index rows_, depth_, cols_;
    Index kc_, mc_, nc_;
    float* packed_ = nullptr;
};

// Per thread: one phase plane, one image's columns (P, D), then a packed GEMM operand of
// packed_floats (0 where the caller multiplies with Eigen's product).
struct ImageScratch {
    PhasePlane layout;
    Index plane_floats, column_floats;
    ThreadScratch threads;
    float* plane() const { return threads.for_this_thread(); }
    float* columns() const { return threads.for_this_thread() + plane_floats; }
    float* packed() const { return threads.for_this_thread() + plane_floats + column_floats; }
};
ImageScratch image_scratch(Context& ctx, const ConvGeometry& g, const Plan& plan, Index packed_floats = 0) {
    const PhasePlane layout = phase_plane(g);
    const Index plane_floats = round_up_16(layout.size());
    const Index column_floats = round_up_16(plan.spatial * plan.depth);
    return {layout, plane_floats, column_floats, thread_scratch(ctx, plane_floats + column_floats + packed_floats)};
}

void im2col_image(const ConvGeometry& g, const Plan& plan, const ImageScratch& scratch, const float* image) {
    const Index plane_size = g.in_height * g.in_width, P = plan.spatial;
    for (Index ci = 0; ci < g.in_channels; ++ci)
        im2col_channel(g, plan, scratch.layout, image + ci * plane_size, scratch.plane(),
                       scratch.columns() + ci * plan.taps * P, P);
}

// Calls use(matrix) with a (images * P, channels) column-major view of the NCHW tensor `nchw`:
// the tensor itself where the layouts agree, else a reordered copy in `scratch`.
template <typename Use>
void with_batched_view(const float* nchw, Index images, Index channels, Index P, float* scratch, Use&& use) {
    if (P == 1) {
        use(ConstRowMatrixMap(nchw, images, channels));
    } else if (images == 1) {
        use(ConstMatrixMap(nchw, P, channels));
    } else {
        nchw_to_batched(nchw, images, channels, P, scratch);
        use(ConstMatrixMap(scratch, images * P, channels));
    }
}

}  // namespace

// ---- per-image path: each thread takes whole images, columns (P, D) in its own scratch ----

void forward_per_image(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input,
                       const float* weight, float* output, float beta) {
    const Index P = plan.spatial, Cout = g.out_channels, image_size = g.in_channels * g.in_height * g.in_width;
    // output (P, Cout) = columns (P, D) * weight (D, Cout), the weight column-major.
    const SharedRhsProduct<Eigen::ColMajor> product(ctx, P, plan.depth, Cout, weight, plan.depth);
    const ImageScratch scratch = image_scratch(ctx, g, plan, product.lhs_scratch_floats());
#pragma omp parallel for schedule(static)
    for (Index n = 0; n < g.batch; ++n) {
        im2col_image(g, plan, scratch, input + n * image_size);
        product.multiply(scratch.columns(), output + n * Cout * P, beta, scratch.packed());
    }
}

void backward_data_per_image(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* grad_output,
                             const float* weight, float* grad_input, float beta) {
    const Index P = plan.spatial, Cout = g.out_channels, plane_size = g.in_height * g.in_width;
    // columns (P, D) = grad_output (P, Cout) * weight^T: the (D, Cout) column-major weight
    // read as a row-major (Cout, D) matrix.
    const SharedRhsProduct<Eigen::RowMajor> product(ctx, P, Cout, plan.depth, weight, plan.depth);
    const ImageScratch scratch = image_scratch(ctx, g, plan, product.lhs_scratch_floats());
#pragma omp parallel for schedule(static)
    for (Index n = 0; n < g.batch; ++n) {
        float* columns = scratch.columns();
        product.multiply(grad_output + n * Cout * P, columns, 0.0f, scratch.packed());
        for (Index ci = 0; ci < g.in_channels; ++ci)
            col2im_channel(g, plan, scratch.layout, columns + ci * plan.taps * P, P, scratch.plane(),
                           grad_input + (n * g.in_channels + ci) * plane_size, beta);
    }
}

// target (D, Cout) = sum over images (+ target when beta = 1). Each thread accumulates its
// images into its own partial, then the partials are added in thread order: deterministic for
// a given thread count, and no thread waits on another inside the GEMMs.
void backward_filter_per_image(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input,
                               const float* grad_output, float* target, float beta) {
    const Index P = plan.spatial, Cout = g.out_channels, image_size = g.in_channels * g.in_height * g.in_width;
    const Index weight_floats = plan.depth * Cout;
    const ImageScratch scratch = image_scratch(ctx, g, plan);
    const ThreadScratch partials = thread_scratch(ctx, weight_floats);
    int team = 1;
#pragma omp parallel
    {
#pragma omp single
        team = omp_get_num_threads();
        MatrixMap partial(partials.for_this_thread(), plan.depth, Cout);
        partial.setZero();
#pragma omp for schedule(static)
        for (Index n = 0; n < g.batch; ++n) {
            im2col_image(g, plan, scratch, input + n * image_size);
            partial.noalias() += ConstMatrixMap(scratch.columns(), P, plan.depth).transpose() *
                                 ConstMatrixMap(grad_output + n * Cout * P, P, Cout);
        }
    }
#pragma omp parallel for schedule(static) if (weight_floats * team > parallel_threshold)
    for (Index e = 0; e < weight_floats; ++e) {
        float sum = 0.0f;
        for (int t = 0; t < team; ++t) sum += partials.data[t * partials.stride + e];
        target[e] = beta == 0.0f ? sum : target[e] + sum;
    }
}

// ---- batched path: all images side by side in one GEMM, in chunks of images ----

// (N, C, P) <-> (C, N * P) reorders between the NCHW tensors and the batched GEMM operands.
// One task per (channel, image) segment of P contiguous floats on both sides.
void batched_to_nchw(const float* batched, Index images, Index channels, Index P, float* nchw, float beta) {
    const Index tasks = images * channels, rows = images * P;
#pragma omp parallel for schedule(static) if (tasks * P > parallel_threshold)
    for (Index task = 0; task < tasks; ++task) {
        const Index n = task / channels, c = task % channels;
        const float* source = batched + c * rows + n * P;
        float* target = nchw + task * P;
        if (beta == 0.0f) {
            std::memcpy(target, source, static_cast<std::size_t>(P) * sizeof(float));
        } else {
            for (Index p = 0; p < P; ++p) target[p] += source[p];
        }
    }
}

void nchw_to_batched(const float* nchw, Index images, Index channels, Index P, float* batched) {
    const Index tasks = images * channels, rows = images * P;
#pragma omp parallel for schedule(static) if (tasks * P > parallel_threshold)
    for (Index task = 0; task < tasks; ++task) {
        const Index c = task / images, n = task % images;
        std::memcpy(batched + c * rows + n * P, nchw + (n * channels + c) * P,
                    static_cast<std::size_t>(P) * sizeof(float));
    }
}

void forward_batched(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input, const float* weight,
                     float* output, float beta) {
    const Index P = plan.spatial, Cout = g.out_channels;
    const ConstMatrixMap weight_matrix(weight, plan.depth, Cout);
    const Index chunk = plan.images_per_chunk;
    float* columns = ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * plan.depth));
    float* result =
        (P == 1 || chunk == 1) ? nullptr : ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * Cout));
    for (Index first = 0; first < g.batch; first += chunk) {
        const Index images = std::min(chunk, g.batch - first);
        const Index rows = images * P;
        im2col(ctx, g, plan, input + first * g.in_channels * g.in_height * g.in_width, images, columns);
        const ConstMatrixMap column_matrix(columns, rows, plan.depth);
        float* out = output + first * Cout * P;
        if (P == 1) {
            threaded_product(RowMatrixMap(out, images, Cout), column_matrix, weight_matrix, beta);
        } else if (images == 1) {
            threaded_product(MatrixMap(out, P, Cout), column_matrix, weight_matrix, beta);
        } else {
            threaded_product(MatrixMap(result, rows, Cout), column_matrix, weight_matrix, 0.0f);
            batched_to_nchw(result, images, Cout, P, out, beta);
        }
    }
}

void backward_data_batched(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* grad_output,
                           const float* weight, float* grad_input, float beta) {
    const Index P = plan.spatial, Cout = g.out_channels;
    const ConstMatrixMap weight_matrix(weight, plan.depth, Cout);
    const Index chunk = plan.images_per_chunk;
    float* columns = ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * plan.depth));
    float* reordered =
        (P == 1 || chunk == 1) ? nullptr : ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * Cout));
    for (Index first = 0; first < g.batch; first += chunk) {
        const Index images = std::min(chunk, g.batch - first);
        with_batched_view(grad_output + first * Cout * P, images, Cout, P, reordered, [&](const auto& gradient) {
            threaded_product(MatrixMap(columns, images * P, plan.depth), gradient, weight_matrix.transpose(), 0.0f);
        });
        col2im(ctx, g, plan, columns, images, grad_input + first * g.in_channels * g.in_height * g.in_width, beta);
    }
}

void backward_filter_batched(Context& ctx, const ConvGeometry& g, const Plan& plan, const float* input,
                             const float* grad_output, float* target, float beta) {
    const Index P = plan.spatial, Cout = g.out_channels;
    MatrixMap gradient_matrix(target, plan.depth, Cout);
    const Index chunk = plan.images_per_chunk;
    float* columns = ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * plan.depth));
    float* reordered =
        (P == 1 || chunk == 1) ? nullptr : ctx.arena().allocate_floats(static_cast<std::size_t>(chunk * P * Cout));
    for (Index first = 0; first < g.batch; first += chunk) {
        const Index images = std::min(chunk, g.batch - first);
        im2col(ctx, g, plan, input + first * g.in_channels * g.in_height * g.in_width, images, columns);
        const ConstMatrixMap column_matrix(columns, images * P, plan.depth);
        with_batched_view(grad_output + first * Cout * P, images, Cout, P, reordered, [&](const auto& gradient) {
            threaded_product(gradient_matrix, column_matrix.transpose(), gradient, first == 0 ? beta : 1.0f);
        });
    }
}

// ---- input is columns: P = 1 and the window is the whole unpadded input, so that the input
// (N, D) row-major is the columns matrix itself: one GEMM, no im2col ----

void forward_input_is_columns(const ConvGeometry& g, const Plan& plan, const float* input, const float* weight,
                              float* output, float beta) {
    const Index Cout = g.out_channels;
    const ConstMatrixMap weight_matrix(weight, plan.depth, Cout);
    // One GEMM straight from the input into the (N, Cout) row-major output.
    threaded_product(RowMatrixMap(output, g.batch, Cout), ConstRowMatrixMap(input, g.batch, plan.depth),
                     weight_matrix, beta);
}

void backward_data_input_is_columns(const ConvGeometry& g, const Plan& plan, const float* grad_output,
                                    const float* weight, float* grad_input, float beta) {
    const Index Cout = g.out_channels;
    const ConstMatrixMap weight_matrix(weight, plan.depth, Cout);
    // grad_input (N, D) row-major is the columns matrix itself.
    threaded_product(RowMatrixMap(grad_input, g.batch, plan.depth), ConstRowMatrixMap(grad_output, g.batch, Cout),
                     weight_matrix.transpose(), beta);
}

void backward_filter_input_is_columns(const ConvGeometry& g, const Plan& plan, const float* input,
                                      const float* grad_output, float* target, float beta) {
    const Index Cout = g.out_channels;
    MatrixMap gradient_matrix(target, plan.depth, Cout);
    threaded_product(gradient_matrix, ConstRowMatrixMap(input, g.batch, plan.depth).transpose(),
                     ConstRowMatrixMap(grad_output, g.batch, Cout), beta);
}

}  // namespace sga::cpu::conv2d_detail
