#include "progress.hpp"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#include "safe_file.hpp"

namespace cli {
namespace {

std::atomic<bool> cancel_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the SIGINT handler needs a lock-free flag");

// The first SIGINT asks fit() to stop; a second ends the process at once, as SIGINT's default
// action does, after unlinking the temporary files of writes in flight (a checkpoint). Only
// async-signal-safe calls.
extern "C" void on_interrupt(int signal_number) {
    if (cancel_requested.exchange(true)) {
        sga::safe_file::remove_registered_temporaries();
        struct sigaction default_action {};
        default_action.sa_handler = SIG_DFL;
        sigemptyset(&default_action.sa_mask);
        ::sigaction(signal_number, &default_action, nullptr);
        ::raise(signal_number);  // blocked while this handler runs: delivered on return
        return;
    }
    static const char message[] =
        "\ninterrupted: stopping after the current batch (keeping the last completed epoch); "
        "press Ctrl-C again to abort\n";
    const ssize_t written = ::write(STDERR_FILENO, message, sizeof message - 1);
    (void)written;
}

std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
    const long long s = std::llround(seconds);
    char buffer[32];
    if (s >= 3600)
        std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    else
        std::snprintf(buffer, sizeof buffer, "%lld:%02lld", s / 60, s % 60);
    return buffer;
}

// A bar rewritten in place on a terminal. Otherwise (logs, pipes, CI) a plain line every
// `interval_seconds` with the same ETA, and one line per epoch.
class ProgressReporter {
public:
    explicit ProgressReporter(double interval_seconds = 5.0)
        : terminal_(::isatty(STDERR_FILENO) != 0), interval_seconds_(interval_seconds) {}

    sga::FitCallbacks callbacks() {
        sga::FitCallbacks c;
        if (terminal_) c.on_batch = [this](const sga::TrainingProgress& p) { on_batch(p); };
        else c.on_batch = [this](const sga::TrainingProgress& p) { on_batch_line(p); };
        c.on_epoch = [this](const sga::EpochSummary& s) { on_epoch(s); };
        c.on_decision = [this](const sga::RecipeDecision& d) { on_decision(d); };
        c.cancel = &cancel_requested;
        return c;
    }
    void set_epochs(int epochs) { epochs_ = epochs; }
    // Ends a half-drawn bar (after a cancellation) so what follows starts on a clean line.
    void finish() {
        if (bar_drawn_) std::cerr << '\n';
        bar_drawn_ = false;
    }

private:
    void on_batch_line(const sga::TrainingProgress& p) {
        if (p.elapsed_seconds < next_line_at_ && !(p.epoch == p.epochs && p.batch == p.batches)) return;
        next_line_at_ = p.elapsed_seconds + interval_seconds_;
        char line[256];
        std::snprintf(line, sizeof line, "epoch %d/%d batch %d/%d  G %.3f  D %.3f  elapsed %s  ETA %s", p.epoch,
                      p.epochs, p.batch, p.batches, p.losses.generator, p.losses.discriminator,
                      format_duration(p.elapsed_seconds).c_str(), format_duration(p.estimated_remaining_seconds).c_str());
        std::cerr << line << std::endl;
    }
    void on_batch(const sga::TrainingProgress& p) {
        constexpr int width = 24;
        const int filled = p.batches > 0 ? p.batch * width / p.batches : width;
        char line[256];
        std::snprintf(line, sizeof line,
                      "\repoch %d/%d [%s%s] batch %d/%d  G %.3f (adv %.3f con %.3f lat %.3f)  D %.3f  ETA %s  ",
                      p.epoch, p.epochs, std::string(static_cast<std::size_t>(filled), '#').c_str(),
                      std::string(static_cast<std::size_t>(width - filled), '.').c_str(), p.batch, p.batches,
                      p.losses.generator, p.losses.generator_adversarial, p.losses.generator_contextual,
                      p.losses.generator_latent, p.losses.discriminator,
                      format_duration(p.estimated_remaining_seconds).c_str());
        std::cerr << line << std::flush;
        bar_drawn_ = true;
    }
    void on_epoch(const sga::EpochSummary& s) {
        char line[256];
        std::snprintf(line, sizeof line,
                      "epoch %d/%d  G %.4f (adv %.4f con %.4f lat %.4f)  D %.4f  D re-inits %d  %.1f s", s.epoch,
                      epochs_, s.generator_loss, s.adversarial_loss, s.contextual_loss, s.latent_loss,
                      s.discriminator_loss, s.discriminator_reinits, s.seconds);
        if (terminal_) std::cerr << "\r\033[K";
        std::cerr << line << std::endl;
        bar_drawn_ = false;
    }

    void on_decision(const sga::RecipeDecision& d) {
        if (terminal_) std::cerr << "\r\033[K";
        std::cerr << "decision (" << d.check << "): " << d.finding << "; the " << d.completed_epochs
                  << " epoch(s) of " << d.from_recipe << " are discarded and training starts again from epoch 1 with "
                  << d.to_recipe << " (ETA " << format_duration(d.estimated_seconds) << ")" << std::endl;
        bar_drawn_ = false;
        next_line_at_ = 0;
    }

    bool terminal_;
    double interval_seconds_;
    double next_line_at_ = 0;
    bool bar_drawn_ = false;
    int epochs_ = 0;
};

}  // namespace

sga::FitReport fit_with_progress(sga::Detector& detector, const std::vector<sga::Image>& images,
                                 double progress_interval_seconds) {
    ProgressReporter progress(progress_interval_seconds);
    progress.set_epochs(detector.options().epochs);
    cancel_requested.store(false);
    // The action before (main's temporary cleanup) comes back on return and on a throw.
    struct sigaction interrupt {}, previous {};
    interrupt.sa_handler = on_interrupt;
    sigemptyset(&interrupt.sa_mask);
    ::sigaction(SIGINT, &interrupt, &previous);
    struct Restore {
        const struct sigaction& action;
        ~Restore() { ::sigaction(SIGINT, &action, nullptr); }
    } restore{previous};
    sga::FitReport report;
    try {
        report = detector.fit(images, progress.callbacks());
    } catch (...) {
        progress.finish();
        throw;
    }
    progress.finish();
    return report;
}

}  // namespace cli
