// Scoring concurrent callers' single images in one pass (dynamic batching), each image bit
// for bit as it scores alone.
//
// A score of one image reads every weight of the model for that image alone (43.6 MiB at
// isize 32), where a batch of 64 reads them once for 64 images; so application threads that
// each score one image at a time get far less from the cores than one batch does
// (docs/benchmarks.md, "Many application threads scoring at once"). A ScoreBatcher queues
// such calls, and up to cpu_threads() passes run at once: a caller that finds a pass slot free
// takes queued images (oldest first) and scores them together with
// SkipGanomaly::score_independent, which gives each image exactly the bits that score() gives
// it alone; the other callers sleep until their result is there. So a caller's score never
// depends on who else was scoring.
//
// How large a pass is: the callers of a pass that just ended come back one by one (each
// returns to its application and calls again), and a slot that started a pass with the first
// of them would run passes of one or two images, each reading all the weights. So a free slot
// waits for the callers it expects back: it starts once the queue holds the pass size (the
// active callers, queued, in passes or returning, shared among the slots, at most
// max_images), or once no caller is expected back, or at once when no pass runs at all. A
// returning caller is one whose result was delivered within the last two passes' ends and
// that has not called again; one that never calls again delays a pass at most until the pass
// under way ends. A pass takes at most the pass size, leaving the rest for the next slot.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "skipganomaly/engine/skip_ganomaly.hpp"

namespace sga {

class ScoreBatcher {
public:
    explicit ScoreBatcher(std::int64_t max_images = 16) : max_images_(max_images) {
        SGA_CHECK_ARGUMENT(max_images >= 1, "a score batcher takes at least one image a pass");
    }
    ScoreBatcher(const ScoreBatcher&) = delete;
    ScoreBatcher& operator=(const ScoreBatcher&) = delete;

    // The score parts of one image (nc, S, S) of host floats, pre-processed for `model`, as
    // model.score() computes them with running statistics on the CPU for that image alone
    // (error maps when asked for). Safe from any number of threads; `model` must not change
    // while a call with it is under way.
    BatchScores score(const SkipGanomaly& model, const float* image, bool with_error_maps) {
        Request request{&model, image, with_error_maps, std::this_thread::get_id(), {}, {}, false, {}};
        std::unique_lock lock(mutex_);
        queue_.push_back(&request);
        returning_.erase(request.caller);
        while (!request.done) {
            if (!may_start_pass()) {
                request.wake.wait(lock);
                continue;
            }
            std::unique_ptr<Pass> pass;
            try {
                pass = take_pass();
            } catch (...) {  // no memory for a new pass: leave only if no pass holds our request
                const auto mine = std::find(queue_.begin(), queue_.end(), &request);
                if (mine == queue_.end()) {
                    request.wake.wait(lock);
                    continue;
                }
                queue_.erase(mine);
                throw;
            }
            ++running_;
            const std::vector<Request*> batch = take_batch(pass_size());
            in_passes_ += batch.size();
            wake_front();  // another slot may start a pass with what is left
            lock.unlock();
            run(*pass, batch);
            lock.lock();
            for (Request* r : batch) {
                r->done = true;
                returning_[r->caller] = passes_ended_;
                r->wake.notify_one();  // under the lock: r lives on its caller's stack
            }
            in_passes_ -= batch.size();
            forget_stale_returns(++passes_ended_);
            idle_.push_back(std::move(pass));
            --running_;
            wake_front();
        }
        if (request.error) std::rethrow_exception(request.error);
        return std::move(request.result);
    }

private:
    struct Request {
        const SkipGanomaly* model;
        const float* image;
        bool with_error_maps;
        std::thread::id caller;
        BatchScores result;
        std::exception_ptr error;
        bool done = false;
        std::condition_variable wake;  // only this request's caller waits on it
    };

    // Whether a caller may start a pass now (see the top of this file).
    bool may_start_pass() const {
        if (queue_.empty() || running_ >= cpu_threads()) return false;
        return running_ == 0 || returning_.empty() || static_cast<std::int64_t>(queue_.size()) >= pass_size();
    }
    // The active callers (queued, in passes or returning) shared among the pass slots.
    std::int64_t pass_size() const {
        const std::int64_t active = static_cast<std::int64_t>(queue_.size() + in_passes_ + returning_.size());
        const std::int64_t slots = cpu_threads();
        return std::clamp<std::int64_t>((active + slots - 1) / slots, 1, max_images_);
    }
    // Wakes the oldest queued caller to look again; only it: waking every sleeping caller at
    // each pass end (most of them to sleep again) preempted the passes under way: 595-664
    // against 652-751 images/s with 8 callers on 2 cores (docs/benchmarks.md).
    void wake_front() {
        if (!queue_.empty()) queue_.front()->wake.notify_one();
    }
    // A caller that has not called again within two passes' ends is not waited for.
    void forget_stale_returns(std::uint64_t passes_ended) {
        std::erase_if(returning_, [&](const auto& entry) { return entry.second + 2 < passes_ended; });
    }

    // The oldest queued request and those after it for the same model, up to `most`.
    std::vector<Request*> take_batch(std::int64_t most) {
        std::vector<Request*> batch;
        const SkipGanomaly* model = queue_.front()->model;
        for (auto it = queue_.begin(); it != queue_.end() && static_cast<std::int64_t>(batch.size()) < most;) {
            if ((*it)->model == model) {
                batch.push_back(*it);
                it = queue_.erase(it);
            } else {
                ++it;
            }
        }
        return batch;
    }

    // What one pass computes with: taken by one leader at a time.
    struct Pass {
        Context ctx{Device::Cpu};
        Tape tape{ctx};
        Tensor input;  // (at least the pass's images, nc, S, S)
    };
    std::unique_ptr<Pass> take_pass() {
        if (idle_.empty()) return std::make_unique<Pass>();
        std::unique_ptr<Pass> pass = std::move(idle_.back());
        idle_.pop_back();
        return pass;
    }

    // Scores `batch` in one pass; an error reaches every request of the pass.
    void run(Pass& pass, const std::vector<Request*>& batch) {
        try {
            const SkipGanomaly& model = *batch.front()->model;
            const Architecture& a = model.architecture();
            const std::int64_t n = static_cast<std::int64_t>(batch.size()), plane = std::int64_t{a.image_size} * a.image_size;
            const std::int64_t sample = a.channels * plane;
            const Shape shape{n, a.channels, a.image_size, a.image_size};
            const Shape& held = pass.input.shape();
            if (held.rank() != 4 || held[0] < n || held[1] != shape[1] || held[2] != shape[2])
                pass.input = Tensor(shape, Device::Cpu);  // grows to the largest pass
            bool maps = false;
            for (std::int64_t i = 0; i < n; ++i) {
                const Request& r = *batch[static_cast<std::size_t>(i)];
                std::copy(r.image, r.image + sample, pass.input.data() + i * sample);
                maps = maps || r.with_error_maps;
            }
            const BatchScores parts = model.score_independent(pass.ctx, pass.tape, pass.input.view().slice_batch(0, n), maps);
            for (std::size_t i = 0; i < batch.size(); ++i)
                batch[i]->result = parts.image(i, static_cast<std::size_t>(plane), batch[i]->with_error_maps);
        } catch (...) {
            for (Request* r : batch) r->error = std::current_exception();
        }
    }

    const std::int64_t max_images_;
    std::mutex mutex_;
    std::deque<Request*> queue_;
    int running_ = 0;            // passes under way: at most cpu_threads()
    std::size_t in_passes_ = 0;  // their images
    std::uint64_t passes_ended_ = 0;
    std::unordered_map<std::thread::id, std::uint64_t> returning_;  // caller: passes_ended_ when its result came
    std::vector<std::unique_ptr<Pass>> idle_;  // the contexts of passes that ended, for the next ones
};

}  // namespace sga
