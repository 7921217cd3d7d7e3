// Where tensors live and kernels run.
#pragma once

#include <string>

#include "skipganomaly/config.hpp"

namespace sga {

enum class Device {
    Cpu,
    Cuda,
    // Resolved by resolve_device(): CUDA when this build has it and a GPU is present at run
    // time, unless SKIPGANOMALY_FORCE_CPU is set in the environment; otherwise the CPU.
    Auto,
};

// Never returns Device::Auto.
SKIPGANOMALY_API Device resolve_device(Device requested);

// True when this build has the CUDA backend and a GPU that can run it is visible.
SKIPGANOMALY_API bool cuda_device_available();
// Why cuda_device_available() is false, with CUDA's exact error (for example a driver too
// old for this build's CUDA runtime); empty when it is true.
SKIPGANOMALY_API std::string cuda_unavailable_reason();

SKIPGANOMALY_API std::string to_string(Device device);

// Whether this processor runs the CPU's bfloat16 kernels (AVX512-BF16; Precision::BFloat16),
// and SKIPGANOMALY_DISABLE_BF16 does not turn them off.
SKIPGANOMALY_API bool cpu_bf16_available();

// The process-wide CPU thread budget: the most threads that the CPU kernels (our OpenMP
// loops and the matrix products) of all calls together may use, whichever application
// thread makes them. Default: OMP_NUM_THREADS when set at start-up, else the core count;
// set_cpu_threads(0) restores it. It changes nothing on the CUDA backend.
//
// Two mechanisms keep N application threads scoring at once from oversubscribing the cores:
// - Admission (CpuAdmission below): each SkipGanomaly::score call (so each Detector::score)
//   on the CPU is admitted first; at most `budget` calls compute at once and the others wait,
//   blocked, for one to finish. The admitted callers then run without preempting each other.
// - Leases (CpuThreadLease below): every CPU kernel call leases threads from the budget: as
//   many as are free, up to the admitted callers' fair share (budget / callers), at least 1
//   (the calling thread itself). So a lone caller gets all of them, and two callers of a
//   2-thread budget get one each instead of each starting a team of every core.
// Results do not depend on how many threads a kernel gets (tests/test_detector checks that
// scores and error maps are bit-identical from 1, 2 and 3 threads and from many concurrent
// callers). Detector::score of single images adds a third mechanism on top: a ScoreBatcher
// (score_batcher.hpp) scores the images of concurrent callers in shared passes.
// Throws InvalidArgument when threads < 0.
SKIPGANOMALY_API void set_cpu_threads(int threads);
// The current budget (never 0).
SKIPGANOMALY_API int cpu_threads();

// Admission of one application thread's CPU work (SkipGanomaly::score takes one per call):
// at most cpu_threads() threads hold one at once; the constructor waits, blocked, until one
// is free. Reentrant on one thread (an inner admission takes nothing). `wanted` false (for
// example on a CUDA context) admits without taking anything. Not copyable; destroy on the
// thread that made it.
class SKIPGANOMALY_API CpuAdmission {
public:
    explicit CpuAdmission(bool wanted = true);
    ~CpuAdmission();
    CpuAdmission(const CpuAdmission&) = delete;
    CpuAdmission& operator=(const CpuAdmission&) = delete;

private:
    bool held_ = false;
};
// Callers holding a CpuAdmission now, all application threads together.
SKIPGANOMALY_API int cpu_callers_admitted();

// One lease on the budget, held for the duration of one kernel (kernels.hpp takes it around
// every CPU kernel): sets the calling thread's OpenMP team size to the threads taken and
// restores it on destruction. Leases nest: an inner lease on the same thread takes nothing
// and keeps the outer one's team size. Not copyable; destroy on the thread that made it.
class SKIPGANOMALY_API CpuThreadLease {
public:
    CpuThreadLease() noexcept;
    ~CpuThreadLease();
    CpuThreadLease(const CpuThreadLease&) = delete;
    CpuThreadLease& operator=(const CpuThreadLease&) = delete;
    // Threads the calling thread's OpenMP teams use under this lease.
    int threads() const { return threads_; }

private:
    int taken_ = 0;     // threads taken from the budget; 0 for a nested lease
    int previous_ = 1;  // the thread's OpenMP team size before the lease
    int threads_ = 1;
};

}  // namespace sga
