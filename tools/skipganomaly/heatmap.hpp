// Anomaly maps as pictures: the overlay PNG that score --heatmap and demo write.
#pragma once

#include <string>
#include <vector>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/image.hpp"

namespace cli {

// The anomaly map of `result` over `original`, blue at 0 to red at `vmax`, as a PNG at `path`.
// Small images are enlarged to about 256 pixels on their longer side.
void write_heatmap(const std::string& path, const sga::Image& original, const sga::ScoreResult& result, float vmax);

// The colour scale's top: the 99th percentile of the errors rather than the largest, so one
// extreme pixel does not turn everything else blue. 0 for no values.
float map_scale(std::vector<float> values);

}  // namespace cli
