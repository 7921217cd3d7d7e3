// Scoring concurrent callers' single images in one pass (dynamic batching), each image bit
// for bit as it scores alone.
//
// A score of one image reads every weight of the model for that image alone (43.6 MiB at
// isize 32), where a batch of 64 reads them once for 64 images; so application threads that
// each score one image at a time get far less from the cores than one batch does
// (docs/benchmarks.md, "Many application threads scoring at once"). A ScoreBatcher queues
// such calls: the first caller that finds no pass running takes the queued images (up to
// max_images, oldest first) and scores them together with SkipGanomaly::score_independent,
// which gives each image exactly the bits that score() gives it alone; the other callers
// sleep until their result is there. So a caller's score never depends on who else was
// scoring, and N callers run one pass at a time, on the whole CPU thread budget.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "skipganomaly/skip_ganomaly.hpp"

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
        Request request{&model, image, with_error_maps, {}, {}, false};
        std::unique_lock lock(mutex_);
        queue_.push_back(&request);
        while (!request.done) {
            if (queue_.empty() || running_ >= cpu_threads()) {
                finished_.wait(lock);
                continue;
            }
            std::unique_ptr<Pass> pass;
            try {
                pass = take_pass();
            } catch (...) {  // no memory for a new pass: leave only if no pass holds our request
                const auto mine = std::find(queue_.begin(), queue_.end(), &request);
                if (mine == queue_.end()) {
                    finished_.wait(lock);
                    continue;
                }
                queue_.erase(mine);
                throw;
            }
            ++running_;
            const std::vector<Request*> batch = take_batch();
            lock.unlock();
            run(*pass, batch);
            lock.lock();
            for (Request* r : batch) r->done = true;
            idle_.push_back(std::move(pass));
            --running_;
            finished_.notify_all();
        }
        if (request.error) std::rethrow_exception(request.error);
        return std::move(request.result);
    }

private:
    struct Request {
        const SkipGanomaly* model;
        const float* image;
        bool with_error_maps;
        BatchScores result;
        std::exception_ptr error;
        bool done = false;
    };

    // The oldest queued request and those after it for the same model, up to max_images_.
    std::vector<Request*> take_batch() {
        std::vector<Request*> batch;
        const SkipGanomaly* model = queue_.front()->model;
        for (auto it = queue_.begin(); it != queue_.end() && static_cast<std::int64_t>(batch.size()) < max_images_;) {
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
            for (std::size_t i = 0; i < batch.size(); ++i) {
                BatchScores& out = batch[i]->result;
                out.reconstruction = {parts.reconstruction[i]};
                out.latent = {parts.latent[i]};
                if (!parts.rotation.empty()) out.rotation = {parts.rotation[i]};
                if (batch[i]->with_error_maps) {
                    const auto first = parts.error_maps.begin() + static_cast<std::ptrdiff_t>(i) * plane;
                    out.error_maps.assign(first, first + plane);
                }
            }
        } catch (...) {
            for (Request* r : batch) r->error = std::current_exception();
        }
    }

    const std::int64_t max_images_;
    std::mutex mutex_;
    std::condition_variable finished_;
    std::deque<Request*> queue_;
    int running_ = 0;                          // passes under way: at most cpu_threads()
    std::vector<std::unique_ptr<Pass>> idle_;  // the contexts of passes that ended, for the next ones
};

}  // namespace sga
