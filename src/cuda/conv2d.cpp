// The three convolution primitives on cuDNN. Every cuDNN call of the library is in this
// host-compiled file; the rest of the backend only sees the opaque ConvolutionResources.
//
// Numerics: every convolution descriptor is set to CUDNN_FMA_MATH, and never changed, which
// restricts cuDNN to plain FP32 FMA kernels whatever algorithm runs. CUDNN_DEFAULT_MATH
// would let cuDNN use TF32 tensor cores on Ampere and newer (10-bit mantissa inputs, ~1e-3
// relative error), which breaks the 1e-4 agreement with the CPU backend and PyTorch's FP32
// fixtures. (PyTorch does the same when torch.backends.cudnn.allow_tf32 is False.)
// Algorithms come from cuDNN's heuristics (cudnnGet*Algorithm_v7, best first, no
// benchmarking runs): we take the first that succeeded, is not a tensor-op entry, has a
// workspace query that succeeds under FMA math and fits max_workspace_bytes, preferring
// deterministic ones (the atomics-based backward algorithms are skipped when a deterministic
// one is offered) so that training is reproducible run to run.
//
// Per context, the plan of each geometry (descriptors and the three chosen algorithms) is
// cached on first use; the workspace is the context's single growing buffer.
#include <cudnn.h>

#include <array>
#include <climits>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_state.hpp"
#include "skipganomaly/kernels.hpp"

namespace sga::cuda {
namespace {

void check_cudnn(cudnnStatus_t status, const char* expression, const char* file, int line) {
    if (status == CUDNN_STATUS_SUCCESS) return;
    char detail[512] = {0};
    cudnnGetLastErrorString(detail, sizeof detail);
    std::string message = std::string("cuDNN call '") + expression + "' failed at " + file + ":" +
                          std::to_string(line) + ": " + cudnnGetErrorString(status);
    if (detail[0]) message += " (" + std::string(detail) + ")";
    throw DeviceError(message);
}

void log_cudnn_failure(cudnnStatus_t status, const char* expression) noexcept {
    if (status != CUDNN_STATUS_SUCCESS)
        std::fprintf(stderr, "skipganomaly: %s failed: %s\n", expression, cudnnGetErrorString(status));
}

}  // namespace
}  // namespace sga::cuda

#define SGA_CUDNN_CHECK(expression) ::sga::cuda::check_cudnn((expression), #expression, __FILE__, __LINE__)

namespace sga::cuda {
namespace {

// Workspace requests above this are skipped in favour of the next algorithm (the FFT
// algorithms can ask for gigabytes on large inputs).
constexpr std::size_t max_workspace_bytes = std::size_t{1} << 30;

// An algorithm and the workspace it needs, for one direction of one geometry.
struct AlgorithmChoice {
    int algorithm = 0;  // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
    std::size_t workspace_bytes = 0;
};

// Descriptors of one convolution geometry and its lazily chosen algorithms.
struct ConvolutionPlan {
    cudnnTensorDescriptor_t input = nullptr;    // (N, Cin, H, W)
    cudnnTensorDescriptor_t output = nullptr;   // (N, Cout, OH, OW)
    cudnnFilterDescriptor_t weight = nullptr;   // (Cout, Cin, KH, KW)
    cudnnConvolutionDescriptor_t convolution = nullptr;
    bool has_forward = false, has_backward_data = false, has_backward_filter = false;
    AlgorithmChoice forward, backward_data, backward_filter;

    ConvolutionPlan() = default;
    ConvolutionPlan(const ConvolutionPlan&) = delete;
    ConvolutionPlan& operator=(const ConvolutionPlan&) = delete;
    ~ConvolutionPlan() {
        if (input) log_cudnn_failure(cudnnDestroyTensorDescriptor(input), "cudnnDestroyTensorDescriptor");
        if (output) log_cudnn_failure(cudnnDestroyTensorDescriptor(output), "cudnnDestroyTensorDescriptor");
        if (weight) log_cudnn_failure(cudnnDestroyFilterDescriptor(weight), "cudnnDestroyFilterDescriptor");
        if (convolution)
            log_cudnn_failure(cudnnDestroyConvolutionDescriptor(convolution), "cudnnDestroyConvolutionDescriptor");
    }
};

using GeometryKey = std::array<std::int64_t, 11>;

GeometryKey key_of(const ConvGeometry& g) {
    return {g.batch,        g.in_channels,   g.in_height,    g.in_width, g.out_channels, g.out_height,
            g.out_width,    g.kernel_height, g.kernel_width, g.stride,   g.padding};
}

std::string describe(const ConvGeometry& g) {
    auto s = [](std::int64_t v) { return std::to_string(v); };
    return "input (" + s(g.batch) + ", " + s(g.in_channels) + ", " + s(g.in_height) + ", " + s(g.in_width) +
           "), weight (" + s(g.out_channels) + ", " + s(g.in_channels) + ", " + s(g.kernel_height) + ", " +
           s(g.kernel_width) + "), output (" + s(g.batch) + ", " + s(g.out_channels) + ", " + s(g.out_height) + ", " +
           s(g.out_width) + "), stride " + s(g.stride) + ", padding " + s(g.padding);
}

}  // namespace

struct ConvolutionResources {
    cudnnHandle_t handle = nullptr;
    std::map<GeometryKey, std::unique_ptr<ConvolutionPlan>> plans;

    ConvolutionResources() = default;
    ConvolutionResources(const ConvolutionResources&) = delete;
    ConvolutionResources& operator=(const ConvolutionResources&) = delete;
    ~ConvolutionResources() {
        plans.clear();  // descriptors before the handle
        if (handle) log_cudnn_failure(cudnnDestroy(handle), "cudnnDestroy");
    }
};

void destroy_convolution_resources(ConvolutionResources* resources) noexcept { delete resources; }

namespace {

// The context's cuDNN handle, created on first use (cudnnCreate loads cuDNN's kernels
// libraries, which takes a while) and bound to the context's stream for its lifetime.
ConvolutionResources& resources_of(CudaState& state) {
    if (!state.convolution) {
        auto resources = std::make_unique<ConvolutionResources>();
        SGA_CUDNN_CHECK(cudnnCreate(&resources->handle));
        SGA_CUDNN_CHECK(cudnnSetStream(resources->handle, state.stream));
        state.convolution = resources.release();
    }
    return *state.convolution;
}

int to_int(std::int64_t value, const ConvGeometry& g) {
    if (value <= 0 || value > INT_MAX)
        throw InvalidArgument("convolution extent " + std::to_string(value) + " out of range: " + describe(g));
    return static_cast<int>(value);
}

ConvolutionPlan& plan_of(ConvolutionResources& resources, const ConvGeometry& g) {
    const GeometryKey key = key_of(g);
    auto found = resources.plans.find(key);
    if (found != resources.plans.end()) return *found->second;

    // check_arguments() has validated g.
    auto plan = std::make_unique<ConvolutionPlan>();
    SGA_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->input));
    SGA_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->output));
    SGA_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan->weight));
    SGA_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&plan->convolution));
    SGA_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->input, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, to_int(g.batch, g),
                                               to_int(g.in_channels, g), to_int(g.in_height, g),
                                               to_int(g.in_width, g)));
    SGA_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->output, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                               to_int(g.batch, g), to_int(g.out_channels, g),
                                               to_int(g.out_height, g), to_int(g.out_width, g)));
    SGA_CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan->weight, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                               to_int(g.out_channels, g), to_int(g.in_channels, g),
                                               to_int(g.kernel_height, g), to_int(g.kernel_width, g)));
    SGA_CHECK_ARGUMENT(g.padding <= INT_MAX, "convolution padding out of range: " + describe(g));
    const int padding = static_cast<int>(g.padding);
    const int stride = to_int(g.stride, g);
    SGA_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(plan->convolution, padding, padding, stride, stride, 1, 1,
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    SGA_CUDNN_CHECK(cudnnSetConvolutionMathType(plan->convolution, CUDNN_FMA_MATH));

    // cuDNN's own view of the output must agree with ours.
    int n = 0, c = 0, h = 0, w = 0;
    SGA_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->convolution, plan->input, plan->weight, &n, &c, &h, &w));
    if (n != g.batch || c != g.out_channels || h != g.out_height || w != g.out_width)
        throw InvalidArgument("cuDNN computes output (" + std::to_string(n) + ", " + std::to_string(c) + ", " +
                              std::to_string(h) + ", " + std::to_string(w) + ") for " + describe(g));

    ConvolutionPlan& result = *plan;
    resources.plans.emplace(key, std::move(plan));
    return result;
}

// Picks among cuDNN's heuristic ranking (best first): the first candidate that succeeded, is
// not a tensor-op entry, is deterministic and whose workspace (queried under the
// descriptor's FMA math) fits; failing that, the first such one that is non-deterministic.
// The descriptor stays in FMA math whichever entry wins, so a DEFAULT_MATH entry runs as FMA.
// `workspace_size(algo, &bytes)` is the cuDNN query.
template <class Perf, class WorkspaceQuery>
AlgorithmChoice choose(const std::vector<Perf>& ranking, int returned, WorkspaceQuery&& workspace_size,
                       const char* direction, const ConvGeometry& g) {
    for (const bool require_determinism : {true, false}) {
        for (int i = 0; i < returned; ++i) {
            const Perf& candidate = ranking[static_cast<std::size_t>(i)];
            if (candidate.status != CUDNN_STATUS_SUCCESS || candidate.mathType == CUDNN_TENSOR_OP_MATH ||
                candidate.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
                continue;
            if (require_determinism && candidate.determinism != CUDNN_DETERMINISTIC) continue;
            std::size_t bytes = 0;
            if (workspace_size(candidate.algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
            if (bytes > max_workspace_bytes) continue;
            return AlgorithmChoice{static_cast<int>(candidate.algo), bytes};
        }
    }
    throw DeviceError(std::string("cuDNN offers no FP32 (FMA math) ") + direction + " algorithm among its " +
                      std::to_string(returned) + " candidates for " + describe(g));
}

const AlgorithmChoice& forward_algorithm(ConvolutionResources& resources, ConvolutionPlan& plan,
                                         const ConvGeometry& g) {
    if (!plan.has_forward) {
        int count = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(resources.handle, &count));
        std::vector<cudnnConvolutionFwdAlgoPerf_t> ranking(static_cast<std::size_t>(count > 0 ? count : 1));
        count = static_cast<int>(ranking.size());
        int returned = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(resources.handle, plan.input, plan.weight,
                                                               plan.convolution, plan.output, count, &returned,
                                                               ranking.data()));
        plan.forward = choose(
            ranking, returned,
            [&](cudnnConvolutionFwdAlgo_t algorithm, std::size_t* bytes) {
                return cudnnGetConvolutionForwardWorkspaceSize(resources.handle, plan.input, plan.weight,
                                                               plan.convolution, plan.output, algorithm, bytes);
            },
            "forward", g);
        plan.has_forward = true;
    }
    return plan.forward;
}

const AlgorithmChoice& backward_data_algorithm(ConvolutionResources& resources, ConvolutionPlan& plan,
                                               const ConvGeometry& g) {
    if (!plan.has_backward_data) {
        int count = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(resources.handle, &count));
        std::vector<cudnnConvolutionBwdDataAlgoPerf_t> ranking(static_cast<std::size_t>(count > 0 ? count : 1));
        count = static_cast<int>(ranking.size());
        int returned = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(resources.handle, plan.weight, plan.output,
                                                                    plan.convolution, plan.input, count, &returned,
                                                                    ranking.data()));
        plan.backward_data = choose(
            ranking, returned,
            [&](cudnnConvolutionBwdDataAlgo_t algorithm, std::size_t* bytes) {
                return cudnnGetConvolutionBackwardDataWorkspaceSize(resources.handle, plan.weight, plan.output,
                                                                    plan.convolution, plan.input, algorithm, bytes);
            },
            "backward-data", g);
        plan.has_backward_data = true;
    }
    return plan.backward_data;
}

const AlgorithmChoice& backward_filter_algorithm(ConvolutionResources& resources, ConvolutionPlan& plan,
                                                 const ConvGeometry& g) {
    if (!plan.has_backward_filter) {
        int count = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(resources.handle, &count));
        std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> ranking(static_cast<std::size_t>(count > 0 ? count : 1));
        count = static_cast<int>(ranking.size());
        int returned = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(resources.handle, plan.input, plan.output,
                                                                      plan.convolution, plan.weight, count, &returned,
                                                                      ranking.data()));
        plan.backward_filter = choose(
            ranking, returned,
            [&](cudnnConvolutionBwdFilterAlgo_t algorithm, std::size_t* bytes) {
                return cudnnGetConvolutionBackwardFilterWorkspaceSize(resources.handle, plan.input, plan.output,
                                                                      plan.convolution, plan.weight, algorithm, bytes);
            },
            "backward-filter", g);
        plan.has_backward_filter = true;
    }
    return plan.backward_filter;
}

// The same argument contract as the CPU kernels (src/cpu/conv2d.cpp).
void check_arguments(const ConvGeometry& g, float beta, const char* kernel) {
    const std::string where = std::string(kernel) + ": ";
    SGA_CHECK_ARGUMENT(g.batch >= 0 && g.in_channels > 0 && g.out_channels > 0 && g.in_height > 0 &&
                           g.in_width > 0 && g.kernel_height > 0 && g.kernel_width > 0,
                       where + "convolution sizes must be positive: " + describe(g));
    SGA_CHECK_ARGUMENT(g.stride >= 1 && g.padding >= 0, where + "stride must be >= 1 and padding >= 0: " + describe(g));
    SGA_CHECK_ARGUMENT(g.out_height >= 1 && g.out_width >= 1 &&
                           g.out_height == ConvGeometry::output_extent(g.in_height, g.kernel_height, g.stride, g.padding) &&
                           g.out_width == ConvGeometry::output_extent(g.in_width, g.kernel_width, g.stride, g.padding),
                       where + "output extent does not follow from the input, kernel, stride and padding: " +
                           describe(g));
    SGA_CHECK_ARGUMENT(beta == 0.0f || beta == 1.0f, where + "beta must be 0 or 1");
}

// An empty result needs no work; an empty reduction (no samples for the filter gradient)
// leaves beta * target, i.e. zeros when beta is 0.
bool handle_empty(CudaState& state, std::int64_t target_size, std::int64_t reduction_size, float* target, float beta) {
    if (target_size <= 0) return true;
    if (reduction_size > 0) return false;
    if (beta == 0.0f)
        SGA_CUDA_CHECK(cudaMemsetAsync(target, 0, static_cast<std::size_t>(target_size) * sizeof(float), state.stream));
    return true;
}

}  // namespace

void conv2d_forward(Context& ctx, const ConvGeometry& geometry, const float* input, const float* weight, float* output,
                    float beta) {
    check_arguments(geometry, beta, "conv2d_forward");
    CudaState& state = state_of(ctx);
    if (handle_empty(state, geometry.output_size(), geometry.in_channels * geometry.kernel_height * geometry.kernel_width,
                     output, beta))
        return;
    ConvolutionResources& resources = resources_of(state);
    ConvolutionPlan& plan = plan_of(resources, geometry);
    const AlgorithmChoice& choice = forward_algorithm(resources, plan, geometry);
    void* scratch = workspace(state, choice.workspace_bytes);
    const float alpha = 1.0f;
    SGA_CUDNN_CHECK(cudnnConvolutionForward(resources.handle, &alpha, plan.input, input, plan.weight, weight,
                                            plan.convolution, static_cast<cudnnConvolutionFwdAlgo_t>(choice.algorithm),
                                            scratch, choice.workspace_bytes, &beta, plan.output, output));
    SGA_CUDA_CHECK_LIBRARY_CALL(state, "cudnnConvolutionForward");
}

void conv2d_backward_data(Context& ctx, const ConvGeometry& geometry, const float* grad_output, const float* weight,
                          float* grad_input, float beta) {
    check_arguments(geometry, beta, "conv2d_backward_data");
    CudaState& state = state_of(ctx);
    if (handle_empty(state, geometry.input_size(), geometry.out_channels * geometry.kernel_height * geometry.kernel_width,
                     grad_input, beta))
        return;
    ConvolutionResources& resources = resources_of(state);
    ConvolutionPlan& plan = plan_of(resources, geometry);
    const AlgorithmChoice& choice = backward_data_algorithm(resources, plan, geometry);
    void* scratch = workspace(state, choice.workspace_bytes);
    const float alpha = 1.0f;
    SGA_CUDNN_CHECK(cudnnConvolutionBackwardData(resources.handle, &alpha, plan.weight, weight, plan.output, grad_output,
                                                 plan.convolution,
                                                 static_cast<cudnnConvolutionBwdDataAlgo_t>(choice.algorithm), scratch,
                                                 choice.workspace_bytes, &beta, plan.input, grad_input));
    SGA_CUDA_CHECK_LIBRARY_CALL(state, "cudnnConvolutionBackwardData");
}

void conv2d_backward_filter(Context& ctx, const ConvGeometry& geometry, const float* input, const float* grad_output,
                            float* grad_weight, float beta) {
    check_arguments(geometry, beta, "conv2d_backward_filter");
    CudaState& state = state_of(ctx);
    if (handle_empty(state, geometry.weight_size(), geometry.batch * geometry.out_height * geometry.out_width,
                     grad_weight, beta))
        return;
    ConvolutionResources& resources = resources_of(state);
    ConvolutionPlan& plan = plan_of(resources, geometry);
    const AlgorithmChoice& choice = backward_filter_algorithm(resources, plan, geometry);
    void* scratch = workspace(state, choice.workspace_bytes);
    const float alpha = 1.0f;
    SGA_CUDNN_CHECK(cudnnConvolutionBackwardFilter(resources.handle, &alpha, plan.input, input, plan.output,
                                                   grad_output, plan.convolution,
                                                   static_cast<cudnnConvolutionBwdFilterAlgo_t>(choice.algorithm),
                                                   scratch, choice.workspace_bytes, &beta, plan.weight, grad_weight));
    SGA_CUDA_CHECK_LIBRARY_CALL(state, "cudnnConvolutionBackwardFilter");
}

}  // namespace sga::cuda
