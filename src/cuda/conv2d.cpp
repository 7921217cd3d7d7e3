// The three convolution primitives on cuDNN. Every cuDNN call of the library is in this
// host-compiled file; the rest of the backend only sees the opaque ConvolutionResources.
//
// Numerics: every convolution descriptor is set to CUDNN_FMA_MATH, and never changed, which
// restricts cuDNN to plain FP32 FMA kernels whatever algorithm runs. CUDNN_DEFAULT_MATH
// would let cuDNN use TF32 tensor cores on Ampere and newer (10-bit mantissa inputs, ~1e-3
// relative error), which breaks the 1e-4 agreement with the CPU backend and PyTorch's FP32
// fixtures. (PyTorch does the same when torch.backends.cudnn.allow_tf32 is False.)
// Algorithms come from cuDNN's heuristics (cudnnGet*Algorithm_v7, best first, no
// benchmarking runs). Only *deterministic* algorithms are accepted, for training and scoring
// alike, so that a run is reproducible bit for bit and concurrent scoring gives the bits of
// single-threaded scoring (the atomics-based backward algorithms, BWD_DATA_ALGO_0 and
// BWD_FILTER_ALGO_0/3, are never used). A candidate must also have succeeded, not be a
// tensor-op entry, and have a workspace query that succeeds under FMA math and fits the
// context's workspace limit (CudaState::workspace_limit_bytes). Should the heuristics offer
// no such candidate, the always-supported deterministic algorithm of the direction
// (IMPLICIT_GEMM, BWD_DATA_ALGO_1, BWD_FILTER_ALGO_1) is tried; failing that the convolution
// throws DeviceError naming the geometry. The acceptable candidates are kept best first:
// when the workspace cannot grow for lack of device memory, the convolution falls back to
// the next candidate with a smaller workspace, and stays there for that context.
// SKIPGANOMALY_CUDA_LOG_ALGORITHMS=1 writes every choice and fallback to stderr.
//
// Per context, the plan of each geometry (descriptors and the chosen algorithms) is cached
// on first use; the workspace is the context's single buffer.
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_state.hpp"
#include "cuda/runtime.hpp"
#include "skipganomaly/engine/kernels.hpp"

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

// An algorithm and the workspace it needs, for one direction of one geometry.
struct AlgorithmChoice {
    int algorithm = 0;  // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
    std::size_t workspace_bytes = 0;
    bool deterministic = false;
};

// The acceptable algorithms of one direction of one geometry, best first, and the one in use.
struct DirectionPlan {
    bool chosen = false;
    std::vector<AlgorithmChoice> candidates;
    std::size_t current = 0;  // index into candidates
    int fallbacks = 0;
    const AlgorithmChoice& choice() const { return candidates[current]; }
};

// Descriptors of one convolution geometry and its lazily chosen algorithms.
struct ConvolutionPlan {
    cudnnTensorDescriptor_t input = nullptr;    // (N, Cin, H, W)
    cudnnTensorDescriptor_t output = nullptr;   // (N, Cout, OH, OW)
    cudnnFilterDescriptor_t weight = nullptr;   // (Cout, Cin, KH, KW)
    cudnnConvolutionDescriptor_t convolution = nullptr;
    DirectionPlan forward, backward_data, backward_filter;

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

void forget_algorithm_choices(ConvolutionResources* resources) noexcept {
    if (!resources) return;
    for (auto& [key, plan] : resources->plans) plan->forward = plan->backward_data = plan->backward_filter = {};
}

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

const char* algorithm_name(cudnnConvolutionFwdAlgo_t algorithm) {
    switch (algorithm) {
        case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM: return "FWD_IMPLICIT_GEMM";
        case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM: return "FWD_IMPLICIT_PRECOMP_GEMM";
        case CUDNN_CONVOLUTION_FWD_ALGO_GEMM: return "FWD_GEMM";
        case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT: return "FWD_DIRECT";
        case CUDNN_CONVOLUTION_FWD_ALGO_FFT: return "FWD_FFT";
        case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING: return "FWD_FFT_TILING";
        case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD: return "FWD_WINOGRAD";
        case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED: return "FWD_WINOGRAD_NONFUSED";
        default: return "FWD_UNKNOWN";
    }
}
const char* algorithm_name(cudnnConvolutionBwdDataAlgo_t algorithm) {
    switch (algorithm) {
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_0: return "BWD_DATA_ALGO_0";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_1: return "BWD_DATA_ALGO_1";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT: return "BWD_DATA_FFT";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING: return "BWD_DATA_FFT_TILING";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD: return "BWD_DATA_WINOGRAD";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED: return "BWD_DATA_WINOGRAD_NONFUSED";
        default: return "BWD_DATA_UNKNOWN";
    }
}
const char* algorithm_name(cudnnConvolutionBwdFilterAlgo_t algorithm) {
    switch (algorithm) {
        case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0: return "BWD_FILTER_ALGO_0";
        case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1: return "BWD_FILTER_ALGO_1";
        case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT: return "BWD_FILTER_FFT";
        case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3: return "BWD_FILTER_ALGO_3";
        case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED: return "BWD_FILTER_WINOGRAD_NONFUSED";
        case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING: return "BWD_FILTER_FFT_TILING";
        default: return "BWD_FILTER_UNKNOWN";
    }
}

// The deterministic algorithm cuDNN supports for every FP32 NCHW geometry, per direction.
constexpr cudnnConvolutionFwdAlgo_t deterministic_fallback(cudnnConvolutionFwdAlgoPerf_t*) {
    return CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
}
constexpr cudnnConvolutionBwdDataAlgo_t deterministic_fallback(cudnnConvolutionBwdDataAlgoPerf_t*) {
    return CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
}
constexpr cudnnConvolutionBwdFilterAlgo_t deterministic_fallback(cudnnConvolutionBwdFilterAlgoPerf_t*) {
    return CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
}

// The acceptable candidates of cuDNN's heuristic ranking (best first): succeeded, not a
// tensor-op entry, deterministic, workspace (queried under the descriptor's FMA math) within
// `limit`. The descriptor stays in FMA math whichever entry wins, so a DEFAULT_MATH entry
// runs as FMA. `workspace_size(algo, &bytes)` is the cuDNN query.
template <class Perf, class WorkspaceQuery>
std::vector<AlgorithmChoice> acceptable_candidates(const std::vector<Perf>& ranking, int returned,
                                                   WorkspaceQuery&& workspace_size, std::size_t limit,
                                                   const char* direction, const ConvGeometry& g) {
    std::vector<AlgorithmChoice> accepted;
    auto seen = [&](int algorithm) {
        for (const AlgorithmChoice& c : accepted)
            if (c.algorithm == algorithm) return true;
        return false;
    };
    for (int i = 0; i < returned; ++i) {
        const Perf& candidate = ranking[static_cast<std::size_t>(i)];
        if (candidate.status != CUDNN_STATUS_SUCCESS || candidate.mathType == CUDNN_TENSOR_OP_MATH ||
            candidate.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
            continue;
        if (candidate.determinism != CUDNN_DETERMINISTIC) continue;
        if (seen(static_cast<int>(candidate.algo))) continue;  // listed once per math type
        std::size_t bytes = 0;
        if (workspace_size(candidate.algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
        if (bytes > limit) continue;
        accepted.push_back(AlgorithmChoice{static_cast<int>(candidate.algo), bytes, true});
    }
    const auto fallback = deterministic_fallback(static_cast<Perf*>(nullptr));
    if (!seen(static_cast<int>(fallback))) {
        std::size_t bytes = 0;
        if (workspace_size(fallback, &bytes) == CUDNN_STATUS_SUCCESS && bytes <= limit)
            accepted.push_back(AlgorithmChoice{static_cast<int>(fallback), bytes, true});
    }
    if (accepted.empty())
        throw DeviceError(std::string("cuDNN offers no deterministic FP32 (FMA math) ") + direction +
                          " algorithm within the context's workspace limit of " + std::to_string(limit) +
                          " bytes among its " + std::to_string(returned) + " candidates for " + describe(g));
    return accepted;
}

template <class Algorithm>
void log_choice(const CudaState& state, const DirectionPlan& plan, const char* direction, const ConvGeometry& g,
                const char* event) {
    if (!state.log_algorithms) return;
    const AlgorithmChoice& c = plan.choice();
    std::string candidates;
    for (const AlgorithmChoice& other : plan.candidates)
        candidates += std::string(candidates.empty() ? "" : ", ") +
                      algorithm_name(static_cast<Algorithm>(other.algorithm)) + " " +
                      std::to_string(other.workspace_bytes);
    std::fprintf(stderr, "skipganomaly: conv2d %s %s: %s, %s, workspace %zu bytes (candidates, bytes: %s)\n",
                 direction, describe(g).c_str(), event, algorithm_name(static_cast<Algorithm>(c.algorithm)),
                 c.workspace_bytes, candidates.c_str());
}

DirectionPlan& forward_algorithm(CudaState& state, ConvolutionResources& resources, ConvolutionPlan& plan,
                                 const ConvGeometry& g) {
    if (!plan.forward.chosen) {
        int count = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(resources.handle, &count));
        std::vector<cudnnConvolutionFwdAlgoPerf_t> ranking(static_cast<std::size_t>(count > 0 ? count : 1));
        count = static_cast<int>(ranking.size());
        int returned = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(resources.handle, plan.input, plan.weight,
                                                               plan.convolution, plan.output, count, &returned,
                                                               ranking.data()));
        plan.forward.candidates = acceptable_candidates(
            ranking, returned,
            [&](cudnnConvolutionFwdAlgo_t algorithm, std::size_t* bytes) {
                return cudnnGetConvolutionForwardWorkspaceSize(resources.handle, plan.input, plan.weight,
                                                               plan.convolution, plan.output, algorithm, bytes);
            },
            state.workspace_limit_bytes, "forward", g);
        plan.forward.chosen = true;
        log_choice<cudnnConvolutionFwdAlgo_t>(state, plan.forward, "forward", g, "chose");
    }
    return plan.forward;
}

DirectionPlan& backward_data_algorithm(CudaState& state, ConvolutionResources& resources, ConvolutionPlan& plan,
                                       const ConvGeometry& g) {
    if (!plan.backward_data.chosen) {
        int count = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(resources.handle, &count));
        std::vector<cudnnConvolutionBwdDataAlgoPerf_t> ranking(static_cast<std::size_t>(count > 0 ? count : 1));
        count = static_cast<int>(ranking.size());
        int returned = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(resources.handle, plan.weight, plan.output,
                                                                    plan.convolution, plan.input, count, &returned,
                                                                    ranking.data()));
        plan.backward_data.candidates = acceptable_candidates(
            ranking, returned,
            [&](cudnnConvolutionBwdDataAlgo_t algorithm, std::size_t* bytes) {
                return cudnnGetConvolutionBackwardDataWorkspaceSize(resources.handle, plan.weight, plan.output,
                                                                    plan.convolution, plan.input, algorithm, bytes);
            },
            state.workspace_limit_bytes, "backward-data", g);
        plan.backward_data.chosen = true;
        log_choice<cudnnConvolutionBwdDataAlgo_t>(state, plan.backward_data, "backward-data", g, "chose");
    }
    return plan.backward_data;
}

DirectionPlan& backward_filter_algorithm(CudaState& state, ConvolutionResources& resources, ConvolutionPlan& plan,
                                         const ConvGeometry& g) {
    if (!plan.backward_filter.chosen) {
        int count = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(resources.handle, &count));
        std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> ranking(static_cast<std::size_t>(count > 0 ? count : 1));
        count = static_cast<int>(ranking.size());
        int returned = 0;
        SGA_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(resources.handle, plan.input, plan.output,
                                                                      plan.convolution, plan.weight, count, &returned,
                                                                      ranking.data()));
        plan.backward_filter.candidates = acceptable_candidates(
            ranking, returned,
            [&](cudnnConvolutionBwdFilterAlgo_t algorithm, std::size_t* bytes) {
                return cudnnGetConvolutionBackwardFilterWorkspaceSize(resources.handle, plan.input, plan.output,
                                                                      plan.convolution, plan.weight, algorithm, bytes);
            },
            state.workspace_limit_bytes, "backward-filter", g);
        plan.backward_filter.chosen = true;
        log_choice<cudnnConvolutionBwdFilterAlgo_t>(state, plan.backward_filter, "backward-filter", g, "chose");
    }
    return plan.backward_filter;
}

// The workspace for the direction's current algorithm. When it cannot be had (the device is
// out of memory), moves on to the next candidate with a smaller workspace, for good.
template <class Algorithm>
void* workspace_for(CudaState& state, DirectionPlan& plan, const char* direction, const ConvGeometry& g) {
    for (;;) {
        const AlgorithmChoice& c = plan.choice();
        void* scratch = try_workspace(state, c.workspace_bytes);
        if (scratch || c.workspace_bytes == 0) return scratch;
        std::vector<std::size_t> sizes;
        for (const AlgorithmChoice& candidate : plan.candidates) sizes.push_back(candidate.workspace_bytes);
        const std::size_t next = next_smaller_workspace(sizes, plan.current);
        if (next == no_candidate) {
            std::size_t smallest = c.workspace_bytes;
            for (const AlgorithmChoice& other : plan.candidates) smallest = std::min(smallest, other.workspace_bytes);
            throw OutOfMemoryError(std::string("out of device memory for the ") + direction +
                                   " convolution's workspace: every deterministic algorithm needs at least " +
                                   std::to_string(smallest) + " bytes (" + describe(g) + ")");
        }
        plan.current = next;
        ++plan.fallbacks;
        log_choice<Algorithm>(state, plan, direction, g, "workspace allocation failed, fell back to");
    }
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
    DirectionPlan& direction = forward_algorithm(state, resources, plan, geometry);
    void* scratch = workspace_for<cudnnConvolutionFwdAlgo_t>(state, direction, "forward", geometry);
    const AlgorithmChoice& choice = direction.choice();
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
    DirectionPlan& direction = backward_data_algorithm(state, resources, plan, geometry);
    void* scratch = workspace_for<cudnnConvolutionBwdDataAlgo_t>(state, direction, "backward-data", geometry);
    const AlgorithmChoice& choice = direction.choice();
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
    DirectionPlan& direction = backward_filter_algorithm(state, resources, plan, geometry);
    void* scratch = workspace_for<cudnnConvolutionBwdFilterAlgo_t>(state, direction, "backward-filter", geometry);
    const AlgorithmChoice& choice = direction.choice();
    const float alpha = 1.0f;
    SGA_CUDNN_CHECK(cudnnConvolutionBackwardFilter(resources.handle, &alpha, plan.input, input, plan.output,
                                                   grad_output, plan.convolution,
                                                   static_cast<cudnnConvolutionBwdFilterAlgo_t>(choice.algorithm),
                                                   scratch, choice.workspace_bytes, &beta, plan.weight, grad_weight));
    SGA_CUDA_CHECK_LIBRARY_CALL(state, "cudnnConvolutionBackwardFilter");
}

namespace {
template <class Algorithm>
void report_direction(std::vector<ConvolutionAlgorithmReport>& out, const DirectionPlan& plan, const char* direction,
                      const ConvGeometry& g) {
    if (!plan.chosen) return;
    ConvolutionAlgorithmReport r;
    r.geometry = describe(g);
    r.direction = direction;
    r.algorithm = plan.choice().algorithm;
    r.algorithm_name = algorithm_name(static_cast<Algorithm>(r.algorithm));
    r.deterministic = plan.choice().deterministic;
    r.workspace_bytes = plan.choice().workspace_bytes;
    r.fallbacks = plan.fallbacks;
    for (const AlgorithmChoice& c : plan.candidates) r.candidate_workspace_bytes.push_back(c.workspace_bytes);
    out.push_back(std::move(r));
}
}  // namespace

// Nothing to prepare (kernels::conv2d_packed_floats is 0 on CUDA): cuDNN picks its algorithm
// per call and geometry, from the weight as it is.
void conv2d_pack_weight(Context& ctx, const ConvGeometry& geometry, ConvPass pass, const float* weight, float* packed) {
    (void)ctx, (void)geometry, (void)pass, (void)weight, (void)packed;
}

void conv2d_packed(Context& ctx, const ConvGeometry& geometry, ConvPass pass, const float* input, const float* weight,
                   const float* packed, float* output) {
    (void)packed;
    if (pass == ConvPass::Forward)
        conv2d_forward(ctx, geometry, input, weight, output, 0.0f);
    else
        conv2d_backward_data(ctx, geometry, input, weight, output, 0.0f);
}

std::vector<ConvolutionAlgorithmReport> convolution_algorithms(const Context& ctx) {
    std::vector<ConvolutionAlgorithmReport> out;
    const CudaState* state = ctx.cuda();
    if (!state || !state->convolution) return out;
    for (const auto& [key, plan] : state->convolution->plans) {
        ConvGeometry g;
        g.batch = key[0];
        g.in_channels = key[1];
        g.in_height = key[2];
        g.in_width = key[3];
        g.out_channels = key[4];
        g.out_height = key[5];
        g.out_width = key[6];
        g.kernel_height = key[7];
        g.kernel_width = key[8];
        g.stride = key[9];
        g.padding = key[10];
        report_direction<cudnnConvolutionFwdAlgo_t>(out, plan->forward, "forward", g);
        report_direction<cudnnConvolutionBwdDataAlgo_t>(out, plan->backward_data, "backward-data", g);
        report_direction<cudnnConvolutionBwdFilterAlgo_t>(out, plan->backward_filter, "backward-filter", g);
    }
    return out;
}

}  // namespace sga::cuda
