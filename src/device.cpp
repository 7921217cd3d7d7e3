#include "skipganomaly/device.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>

#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/engine/kernels.hpp"
#include "skipganomaly/error.hpp"
#include "cuda/module.hpp"

namespace sga {

bool cpu_bf16_available() { return cpu::bf16_available(); }

bool cuda_device_available() {
    const detail::CudaModule* cuda = detail::cuda_module();
    return cuda && cuda->device_status().available;
}

std::string cuda_unavailable_reason() {
    const detail::CudaModule* cuda = detail::cuda_module();
    return cuda ? cuda->device_status().reason : detail::cuda_module_error();
}

Device resolve_device(Device requested) {
    if (requested != Device::Auto) return requested;
    const char* force_cpu = std::getenv("SKIPGANOMALY_FORCE_CPU");
    if (force_cpu && *force_cpu && std::string(force_cpu) != "0") return Device::Cpu;
    return cuda_device_available() ? Device::Cuda : Device::Cpu;
}

std::string to_string(Device device) {
    switch (device) {
        case Device::Cpu: return "cpu";
        case Device::Cuda: return "cuda";
        case Device::Auto: return "auto";
    }
    return "unknown";
}

namespace {
// The default budget: OpenMP's own default (OMP_NUM_THREADS, else the core count), read once
// when the library is loaded, before any lease changed a thread's setting.
int default_threads() {
    static const int threads = std::max(1, omp_get_max_threads());
    return threads;
}
[[maybe_unused]] const int default_threads_at_load = default_threads();

std::atomic<int> configured_threads{0};  // 0: the default
std::atomic<int> leased_threads{0};      // threads taken by live leases, all application threads together
thread_local int lease_depth = 0;

int thread_budget() {
    const int configured = configured_threads.load(std::memory_order_relaxed);
    return configured > 0 ? configured : default_threads();
}

std::mutex admission_mutex;
std::condition_variable admission_freed;
std::atomic<int> admitted_callers{0};  // changed under admission_mutex; read freely by leases
thread_local int admission_depth = 0;
}  // namespace

void set_cpu_threads(int threads) {
    SGA_CHECK_ARGUMENT(threads >= 0, "thread count must not be negative");
    {
        std::lock_guard<std::mutex> lock(admission_mutex);
        configured_threads.store(threads, std::memory_order_relaxed);
    }
    admission_freed.notify_all();  // a larger budget admits waiting callers now
}

CpuAdmission::CpuAdmission(bool wanted) {
    if (!wanted) return;
    if (admission_depth == 0) {
        std::unique_lock<std::mutex> lock(admission_mutex);
        admission_freed.wait(lock, [] { return admitted_callers.load(std::memory_order_relaxed) < thread_budget(); });
        admitted_callers.fetch_add(1, std::memory_order_relaxed);
    }
    ++admission_depth;  // only once admitted: a throwing wait leaves nothing held
    held_ = true;
}

CpuAdmission::~CpuAdmission() {
    if (!held_ || --admission_depth > 0) return;
    {
        std::lock_guard<std::mutex> lock(admission_mutex);
        admitted_callers.fetch_sub(1, std::memory_order_relaxed);
    }
    admission_freed.notify_one();
}

int cpu_callers_admitted() { return admitted_callers.load(std::memory_order_relaxed); }

int cpu_threads() { return thread_budget(); }

CpuThreadLease::CpuThreadLease() noexcept {
    if (lease_depth++ > 0) {
        threads_ = omp_get_max_threads();
        return;
    }
    const int budget = thread_budget();
    // The admitted callers' fair share: one caller alone gets the whole budget, two callers of
    // a 2-thread budget one thread each, even while the other is between kernels.
    const int share = std::max(1, budget / std::max(1, admitted_callers.load(std::memory_order_relaxed)));
    int leased = leased_threads.load(std::memory_order_relaxed);
    int take = 1;
    do {
        take = std::clamp(budget - leased, 1, share);
    } while (!leased_threads.compare_exchange_weak(leased, leased + take, std::memory_order_relaxed));
    taken_ = take;
    threads_ = take;
    previous_ = omp_get_max_threads();
    if (previous_ != take) omp_set_num_threads(take);
}

CpuThreadLease::~CpuThreadLease() {
    if (--lease_depth > 0) return;
    if (previous_ != threads_) omp_set_num_threads(previous_);
    leased_threads.fetch_sub(taken_, std::memory_order_relaxed);
}

// A CudaState exists only when the module is loaded.
void CudaStateDeleter::operator()(CudaState* state) const noexcept {
    if (state) detail::cuda_module()->destroy_state(state);
}

void synchronize_cuda_state(const CudaState* state, bool throw_on_error) {
    if (!state) return;
    const detail::CudaModule* cuda = detail::cuda_module();
    if (throw_on_error) {
        cuda->synchronize(state);
        return;
    }
    try {
        cuda->synchronize(state);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "skipganomaly: %s\n", e.what());
    }
}

Context::Context(Device device, std::uint64_t seed)
    : device_(resolve_device(device)), arena_(device_), random_(seed) {
    if (device_ == Device::Cuda) {
        const detail::CudaModule* cuda = detail::cuda_module();
        if (!cuda) throw DeviceError("a CUDA context was requested but " + detail::cuda_module_error());
        if (!cuda->device_status().available)
            throw DeviceError("a CUDA context was requested but no GPU is usable: " + cuda->device_status().reason);
        cuda_.reset(cuda->create_state());
        arena_.set_stream_owner(cuda_.get());
    }
}

Context::~Context() = default;

void for_each_unit(Context& ctx, std::int64_t units, const std::function<void(Context&, std::int64_t)>& body) {
    if (ctx.device() != Device::Cpu || units <= 1) {
        for (std::int64_t u = 0; u < units; ++u) body(ctx, u);
        return;
    }
    const CpuThreadLease lease;
    std::exception_ptr first_error;
    std::mutex error_mutex;
#pragma omp parallel num_threads(static_cast<int>(std::min<std::int64_t>(lease.threads(), units)))
    {
        // Kept for the thread's life, so that its arena settles like ctx's does.
        thread_local Context worker_context(Device::Cpu);
        const bool caller = omp_get_thread_num() == 0;
        Context& own = caller ? ctx : worker_context;
        if (!caller) own.arena().reset();  // the kernels' scopes freed everything; settle into one block
        omp_set_num_threads(1);            // this thread's kernels (and their leases) run on it alone
#pragma omp for schedule(dynamic, 1)
        for (std::int64_t u = 0; u < units; ++u) {
            try {
                body(own, u);
            } catch (...) {
                const std::lock_guard lock(error_mutex);
                if (!first_error) first_error = std::current_exception();
            }
        }
    }
    if (first_error) std::rethrow_exception(first_error);
}

void Context::synchronize() const {
    if (cuda_) detail::cuda_module()->synchronize(cuda_.get());
}

void Context::set_cuda_workspace_limit(std::size_t bytes) {
    if (cuda_) detail::cuda_module()->set_workspace_limit(*cuda_, bytes);
}

std::size_t Context::cuda_workspace_limit() const {
    return cuda_ ? detail::cuda_module()->workspace_limit(*cuda_) : 0;
}

void copy_bytes(Context& ctx, void* destination, Device destination_device, const void* source, Device source_device,
                std::size_t bytes) {
    if (bytes == 0) return;
    if (ctx.cuda() && (destination_device == Device::Cuda || source_device == Device::Cuda)) {
        detail::cuda_module()->copy_on_stream(*ctx.cuda(), destination, destination_device == Device::Cuda, source,
                                              source_device == Device::Cuda, bytes);
        return;
    }
    // A CPU context, or host to host: nothing of ctx's is involved.
    copy_bytes(destination, destination_device, source, source_device, bytes);
}

std::vector<float> host_values(Context& ctx, TensorView source) {
    std::vector<float> out(static_cast<std::size_t>(source.numel()));
    copy_bytes(ctx, out.data(), Device::Cpu, source.data(), source.device(), out.size() * sizeof(float));
    return out;
}

}  // namespace sga
