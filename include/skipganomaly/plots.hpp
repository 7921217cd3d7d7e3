// Dependency-free pictures of an evaluation: the ROC curve, the score histogram, and one
// strip per image (image | ground truth | anomaly map | predicted mask), labelled with a
// built-in 5 x 7 pixel font. Every picture is an RGB sga::Image, for save_png.
#pragma once

#include "skipganomaly/config.hpp"
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "skipganomaly/image.hpp"
#include "skipganomaly/metrics.hpp"

namespace sga {

using Rgb = std::array<std::uint8_t, 3>;

// ---- text -------------------------------------------------------------------------------
// Printable ASCII (' ' to '~') in a 5 x 7 pixel font with one descender row: at scale s a
// character takes a cell of 6s x 9s pixels (the glyph's 5s x 8s and a spacing column and row).
// Any other byte draws as '?'.

// Width and height in pixels of text drawn on one line at the given scale (>= 1).
SKIPGANOMALY_API int text_width(std::string_view text, int scale = 1);
SKIPGANOMALY_API int text_height(int scale = 1);

// Draws text with its cell's top-left corner at (x, y), each font pixel a scale x scale block
// of colour; only the glyphs' pixels are written, pixels outside the image are skipped.
// Throws InvalidArgument when image is not a consistent RGB image or scale < 1.
SKIPGANOMALY_API void draw_text(Image& image, int x, int y, std::string_view text, const Rgb& colour,
                                int scale = 1);

// ---- plots ------------------------------------------------------------------------------
// Text is drawn at scale 1 below 384 pixels on the shorter side, 2 from there on; below 128
// pixels there is no room for it, and the plots are drawn without text.

// A size x size plot of a ROC curve: white background, grid, the chance diagonal in grey, the
// curve in blue; the title (default "ROC curve"), axis labels "false-positive rate" and
// "true-positive rate" with tick values 0.0 to 1.0, and the area under the curve (the
// trapezoid over its points, which is roc_auc when the curve comes from roc_curve) as
// "AUROC = 0.xxxx" in the lower right. Throws InvalidArgument for size < 32 or a malformed
// curve (empty, fpr and tpr of different lengths, a point outside [0, 1]).
SKIPGANOMALY_API Image plot_roc_curve(const RocCurve& curve, int size, std::string_view title = {});

// A width x height histogram of two score sets over their common range: normal scores in
// blue, anomalous in red, blended where they overlap; bars are scaled to the fullest bin of
// either set. The title (default "score histogram"), axis labels "score" and "images" with
// tick values, and a legend with each set's count. Either set may be empty, not both. Throws
// InvalidArgument for width or height < 32, no scores, or a non-finite score.
SKIPGANOMALY_API Image plot_score_histogram(std::span<const float> normal_scores,
                                            std::span<const float> anomalous_scores, int width, int height,
                                            std::string_view title = {});

// One image of an evaluation, for plot_anomaly_case. Every plane is row-major at the image's
// size (image.height x image.width).
struct AnomalyCase {
    ImageView image;
    std::span<const float> anomaly_map;               // scores; empty: no map
    float map_low = 0, map_high = 1;                   // the map's colour scale (blue to red)
    std::optional<ImageView> ground_truth;             // 1 channel, > 0 anomalous; none: unknown
    std::span<const std::uint8_t> predicted_mask;      // > 0 predicted anomalous; empty: none
    std::string caption;                               // e.g. file name and score, in black
    std::string detail;                                // more, in grey; may be empty
};

// A strip of four panels of panel_size pixels on the image's longer side, titled "image",
// "ground truth", "anomaly map" (anomaly_overlay of the map on the image) and "predicted
// mask", under the caption and the detail, broken at spaces into lines of the strip's width
// (a word longer than a line is shortened at its start, "...tail"). Masks are shrunk by
// taking the maximum, so a defect smaller than a panel pixel stays visible; images are shrunk
// by averaging and enlarged by repeating pixels. A panel without data is grey and says so.
// Text is at scale 2 when the strip is at least 800 pixels wide. Throws InvalidArgument for panel_size < 32, an inconsistent image, a
// plane of the wrong size, or a map scale that is not finite with map_high > map_low.
SKIPGANOMALY_API Image plot_anomaly_case(const AnomalyCase& anomaly_case, int panel_size = 200);

}  // namespace sga
