#include "heatmap.hpp"

#include <algorithm>
#include <cstddef>

namespace cli {
namespace {

// Nearest-neighbour enlargement so 28x28 pictures are visible; factor 1 copies.
sga::Image enlarge(const sga::Image& image, int factor) {
    if (factor <= 1) return image;
    sga::Image out;
    out.width = image.width * factor;
    out.height = image.height * factor;
    out.channels = image.channels;
    out.pixels.resize(static_cast<std::size_t>(out.width) * out.height * out.channels);
    for (int y = 0; y < out.height; ++y)
        for (int x = 0; x < out.width; ++x)
            for (int c = 0; c < out.channels; ++c)
                out.pixels[(static_cast<std::size_t>(y) * out.width + x) * out.channels + c] =
                    image.pixels[(static_cast<std::size_t>(y / factor) * image.width + x / factor) * image.channels + c];
    return out;
}

}  // namespace

sga::Image heatmap_picture(const sga::Image& original, const sga::ScoreResult& result, float vmax) {
    const float top = std::max(vmax, 1e-6f);
    const sga::Image overlay = sga::anomaly_overlay(original.view(), result.anomaly_map, 0.0f, top);
    const int longer = std::max(overlay.width, overlay.height);
    return enlarge(overlay, longer < 128 ? std::max(1, 256 / longer) : 1);
}

void write_heatmap(const std::string& path, const sga::Image& original, const sga::ScoreResult& result, float vmax) {
    sga::save_png(path, heatmap_picture(original, result, vmax));
}

sga::Image mask_picture(const sga::ScoreResult& result) {
    sga::Image mask{result.map_width, result.map_height, 1, std::vector<std::uint8_t>(result.anomaly_mask.size())};
    for (std::size_t i = 0; i < result.anomaly_mask.size(); ++i) mask.pixels[i] = result.anomaly_mask[i] ? 255 : 0;
    return mask;
}

float map_scale(std::vector<float> values) {
    if (values.empty()) return 0.0f;
    const std::size_t at = static_cast<std::size_t>(0.99 * static_cast<double>(values.size() - 1));
    std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(at), values.end());
    return values[at];
}

}  // namespace cli
