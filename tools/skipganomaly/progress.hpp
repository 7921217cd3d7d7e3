// Training from the command line: a progress bar (or lines, without a terminal) on stderr,
// and Ctrl-C stops after the current batch.
#pragma once

#include <vector>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/image.hpp"

namespace cli {

// detector.fit(images) with the progress reporter and Ctrl-C handling: the first SIGINT asks
// fit() to stop after the current batch (the report says cancelled), a second unlinks the
// temporaries of writes in flight (safe_file) and ends the process as SIGINT does. Restores
// the SIGINT action it found on return and on a throw. Without a terminal
// a progress line is printed every `progress_interval_seconds` (0: after every batch).
sga::FitReport fit_with_progress(sga::Detector& detector, const std::vector<sga::Image>& images,
                                 double progress_interval_seconds = 5.0);

}  // namespace cli
