// The execution context handed to every op and kernel: device, temporary-memory arena,
// random stream and (opaque) CUDA state. No mutable globals elsewhere.
#pragma once

#include "skipganomaly/config.hpp"
#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "skipganomaly/random.hpp"
#include "skipganomaly/engine/tensor.hpp"

namespace sga {

// Stream, cuDNN handle, algorithm cache and workspace of a CUDA context; defined in
// src/cuda so that public headers never include CUDA headers.
struct CudaState;
struct SKIPGANOMALY_API CudaStateDeleter {
    void operator()(CudaState* state) const noexcept;
};
// Blocks until the work queued on `state`'s stream has finished. throw_on_error false:
// logs a failure instead of throwing (for destructors). No-op for null.
SKIPGANOMALY_API void synchronize_cuda_state(const CudaState* state, bool throw_on_error);

// Bump allocator for temporaries (activations, gradients, kernel scratch). Everything
// allocated since the last reset() is released together by the next reset(); a Scope
// releases what was allocated inside it (kernel scratch, the activations of a scoring pass)
// as soon as it closes. When a cycle outgrows the block, reset() replaces the chunks by one
// block as large as the cycle's peak, so from the second identical cycle on the arena
// allocates nothing.
class Arena {
public:
    explicit Arena(Device device) : device_(device) {}
    ~Arena() {
        synchronize_cuda_state(stream_owner_, false);
        release_all();
    }
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;

    Device device() const { return device_; }

    // `count` floats, 64-byte aligned, valid until the next reset() (or the end of the
    // enclosing Scope). Contents are undefined.
    float* allocate_floats(std::size_t count) {
        const std::size_t bytes = round_up(count * sizeof(float));
        live_bytes_ += bytes;
        peak_bytes_ = std::max(peak_bytes_, live_bytes_);
        if (chunks_.empty() || chunks_.back().used + bytes > chunks_.back().bytes) {
            const std::size_t grown = std::max<std::size_t>(bytes, capacity() + (1u << 20));
            chunks_.push_back(Chunk{allocate_block(device_, grown), grown, 0});
        }
        Chunk& chunk = chunks_.back();
        float* result = reinterpret_cast<float*>(static_cast<char*>(chunk.data) + chunk.used);
        chunk.used += bytes;
        return result;
    }
    TensorView tensor(Shape shape) {
        return {allocate_floats(static_cast<std::size_t>(shape.numel())), shape, device_};
    }

    // On a CUDA context, work queued before the reset may still read or write the chunks:
    // releasing them waits for the context's stream first. (Reusing the kept block needs no
    // wait: later work is queued on the same stream, behind it.)
    void reset() {
        // Inside one block allocations form a stack, so a block of the peak's size holds the
        // next identical cycle.
        const bool fits = chunks_.size() == 1 && chunks_.back().bytes >= peak_bytes_;
        if (!fits && peak_bytes_ > 0) {
            synchronize_cuda_state(stream_owner_, true);
            release_all();
            chunks_.push_back(Chunk{allocate_block(device_, peak_bytes_), peak_bytes_, 0});
        }
        if (!chunks_.empty()) chunks_.back().used = 0;
        live_bytes_ = peak_bytes_ = 0;
    }

    // Releases, when it closes, everything allocated since it opened. Kernel dispatch opens
    // one around every kernel, so scratch never outlives the kernel that asked for it. (On
    // a CUDA stream, work is ordered, so reusing the memory for the next kernel is safe.)
    class Scope {
    public:
        explicit Scope(Arena& arena)
            : arena_(arena), chunks_(arena.chunks_.size()),
              used_(arena.chunks_.empty() ? 0 : arena.chunks_.back().used), live_(arena.live_bytes_) {}
        ~Scope() {
            // Chunks added inside the scope hold only what dies with it: free them (after
            // the stream that may still use them), so the memory is back for what follows.
            if (arena_.chunks_.size() > chunks_) {
                synchronize_cuda_state(arena_.stream_owner_, false);
                for (std::size_t i = chunks_; i < arena_.chunks_.size(); ++i)
                    deallocate_block(arena_.device_, arena_.chunks_[i].data, arena_.chunks_[i].bytes);
                arena_.chunks_.resize(chunks_);
            }
            if (!arena_.chunks_.empty()) arena_.chunks_.back().used = used_;
            arena_.live_bytes_ = live_;
        }
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;

    private:
        Arena& arena_;
        std::size_t chunks_, used_, live_;
    };

    std::size_t capacity() const {
        std::size_t total = 0;
        for (const Chunk& c : chunks_) total += c.bytes;
        return total;
    }
    // The most bytes live at once since the last reset().
    std::size_t peak_bytes() const { return peak_bytes_; }

    // The CUDA state whose stream uses this arena's memory (set by Context): releasing
    // memory waits for that stream. Null on the CPU.
    void set_stream_owner(const CudaState* state) { stream_owner_ = state; }

private:
    struct Chunk {
        void* data;
        std::size_t bytes;
        std::size_t used;
    };
    static std::size_t round_up(std::size_t bytes) { return (bytes + 63) / 64 * 64; }
    void release_all() noexcept {
        for (Chunk& c : chunks_) deallocate_block(device_, c.data, c.bytes);
        chunks_.clear();
    }

    Device device_;
    std::vector<Chunk> chunks_;
    std::size_t live_bytes_ = 0, peak_bytes_ = 0;
    const CudaState* stream_owner_ = nullptr;
};

class SKIPGANOMALY_API Context {
public:
    // Device::Auto is resolved here (see resolve_device()).
    explicit Context(Device device = Device::Cpu, std::uint64_t seed = 0);
    ~Context();
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    Device device() const { return device_; }
    Arena& arena() { return arena_; }
    RandomStream& random() { return random_; }
    // Non-null only for CUDA contexts.
    CudaState* cuda() const { return cuda_.get(); }
    // Blocks until all work queued on this context has finished (no-op on the CPU).
    void synchronize() const;

    // The most device memory this context's convolutions may use as cuDNN workspace
    // (default 256 MiB, or SKIPGANOMALY_CUDA_WORKSPACE_MIB). Algorithms that need more are
    // not chosen; lowering the limit releases the workspace and re-chooses. Each CUDA
    // context holds one workspace: a Detector scoring from k threads holds k of them.
    // No-op on the CPU; cuda_workspace_limit() is 0 there.
    void set_cuda_workspace_limit(std::size_t bytes);
    std::size_t cuda_workspace_limit() const;

private:
    Device device_;
    // Declared before the arena, so destroyed after it: the arena waits for the stream
    // before it frees its memory.
    std::unique_ptr<CudaState, CudaStateDeleter> cuda_;
    Arena arena_;
    RandomStream random_;
};

// Runs body(context, u) for u = 0 .. units - 1, each unit's work independent of the others'.
// On a CPU context the units spread over the calling thread's lease of the thread budget
// (CpuThreadLease, device.hpp), one unit per thread at a time, each body with an OpenMP team
// of one and a context of its thread's own for its scratch (ctx on the calling thread; on the
// others one kept per thread, whose arena keeps the largest scratch it held). Kernels give
// the same bits at any thread count, so each unit's result is what it would be alone. On a
// CUDA context the units run one after another on ctx. Rethrows the first exception.
SKIPGANOMALY_API void for_each_unit(Context& ctx, std::int64_t units, const std::function<void(Context&, std::int64_t)>& body);

// copy_bytes() (memory.hpp) on `ctx`'s stream: a CUDA context moves host data through its
// page-locked staging buffer and waits for its own work only, not for every context's (the
// context-free copy_bytes() runs on the legacy default stream, which waits for all of
// them). Any side may be on the CPU; device sides must be on ctx's device. Returns once done.
SKIPGANOMALY_API void copy_bytes(Context& ctx, void* destination, Device destination_device, const void* source, Device source_device,
                std::size_t bytes);
// The values of `source` on the host, copied on ctx's stream.
SKIPGANOMALY_API std::vector<float> host_values(Context& ctx, TensorView source);

}  // namespace sga
