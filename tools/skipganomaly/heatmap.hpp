// Anomaly maps as pictures: the overlay and mask that score --heatmap, demo and serve draw.
#pragma once

#include <string>
#include <vector>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/image.hpp"

namespace cli {

// The anomaly map of `result` over `original`, blue at 0 to red at `vmax`, as an RGB picture.
// Small images are enlarged to about 256 pixels on their longer side.
sga::Image heatmap_picture(const sga::Image& original, const sga::ScoreResult& result, float vmax);

// heatmap_picture as a PNG at `path`.
void write_heatmap(const std::string& path, const sga::Image& original, const sga::ScoreResult& result, float vmax);

// White where result.anomaly_mask flags a pixel, black elsewhere, at the image's resolution.
sga::Image mask_picture(const sga::ScoreResult& result);

// The colour scale's top: the 99th percentile of the errors rather than the largest, so one
// extreme pixel does not turn everything else blue. 0 for no values.
float map_scale(std::vector<float> values);

}  // namespace cli
