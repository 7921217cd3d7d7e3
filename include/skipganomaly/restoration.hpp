// Restoration training: the generator sees a corrupted image and is trained to give back the
// clean one (every loss compares x_hat with the clean image). A network that must undo a
// corruption cannot solve its task by copying its input through the skip connections; it
// has to learn what normal images look like, and then "restores" an anomalous input towards
// normal, which is what makes the anomaly visible.
//
// Rotation (the orientation attribute of ARNet, Ye et al., "Attribute Restoration Framework
// for Anomaly Detection", IEEE TMM 2020): the image is rotated by a random multiple of 90
// degrees; with `gray`, colour images also lose their colour (ARNet's colour attribute).
// Scoring averages the anomaly score over the four rotations of the (greyed) input, so it
// costs scoring_views() = 4 forward passes per image.
// Puzzle (Salehi et al., "Puzzle-AE", 2020): the image is cut into grid x grid tiles that are
// put back in a random order (any permutation, the identity included). Scoring uses the
// clean input. Measured, and not in the default recipe (docs/quality.md).
// Synthetic defects (DRAEM, Zavrtanik et al., ICCV 2021): a random region of the image is
// replaced by foreign material (synthetic_anomalies.hpp, paste_synthetic_defects); the
// generator learns to give back the surface without it, so at scoring time it does not
// reproduce a real defect either. Scoring uses the clean input.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "skipganomaly/error.hpp"
#include "skipganomaly/random.hpp"
#include "skipganomaly/sample_transforms.hpp"
#include "skipganomaly/synthetic_anomalies.hpp"

namespace sga {

enum class Corruption {
    None,      // the official training: the generator sees the clean image
    Rotation,  // rotated by 0, 90, 180 or 270 degrees (and greyed, with Restoration::gray)
    Puzzle,    // tiles shuffled
    SyntheticDefects,  // foreign material pasted into random regions of half the images
};

inline const char* corruption_name(Corruption c) {
    switch (c) {
        case Corruption::None: return "none";
        case Corruption::Rotation: return "rotation";
        case Corruption::Puzzle: return "puzzle";
        case Corruption::SyntheticDefects: return "synthetic_defects";
    }
    return "unknown";
}

struct Restoration {
    Corruption corruption = Corruption::None;
    bool gray = false;  // Rotation: colour images are also greyed (no effect on grey images)
    int grid = 2;       // Puzzle: tiles per side

    bool enabled() const { return corruption != Corruption::None; }
    // Forward passes per image when scoring.
    int scoring_views() const { return corruption == Corruption::Rotation ? 4 : 1; }

    void validate(int image_size) const {
        SGA_CHECK_ARGUMENT(corruption != Corruption::Puzzle || (grid >= 1 && image_size % grid == 0),
                           "restoration grid must divide image_size " + std::to_string(image_size) + ", found " +
                               std::to_string(grid));
    }

    // Scoring view `view` (0 .. scoring_views() - 1) of count clean images (count, channels,
    // size, size) on the host: the images themselves, or greyed and rotated by view x 90 degrees.
    void scoring_view(const float* clean, float* out, std::int64_t count, std::int64_t channels, std::int64_t size,
                      int view) const {
        if (corruption != Corruption::Rotation) {
            std::copy_n(clean, count * channels * size * size, out);
            return;
        }
        rotate_quarter_turns(clean, out, count, channels, size, view);
        if (gray && channels == 3) gray_in_place(out, count, size);
    }

    // The training input: each of count clean images (count, channels, size, size) on the host,
    // corrupted independently. Draws from `random` only when enabled. With a rotation,
    // `quarter_turns` (when given) receives each image's turn (rotation_prediction.hpp).
    void corrupt(const float* clean, float* corrupted, std::int64_t count, std::int64_t channels, std::int64_t size,
                 RandomStream& random, std::vector<int>* quarter_turns = nullptr) const {
        const std::int64_t plane = size * size, sample = channels * plane;
        switch (corruption) {
            case Corruption::None:
                std::copy_n(clean, count * sample, corrupted);
                return;
            case Corruption::Rotation:
                if (quarter_turns) quarter_turns->clear();
                for (std::int64_t i = 0; i < count; ++i) {
                    const int turn = static_cast<int>(random.uniform_index(4));
                    scoring_view(clean + i * sample, corrupted + i * sample, 1, channels, size, turn);
                    if (quarter_turns) quarter_turns->push_back(turn);
                }
                return;
            case Corruption::SyntheticDefects:
                paste_synthetic_defects(clean, corrupted, count, channels, size, random);
                return;
            case Corruption::Puzzle:
                break;
        }
        const std::int64_t tiles = static_cast<std::int64_t>(grid) * grid, tile = size / grid;
        std::vector<std::int64_t> order(static_cast<std::size_t>(tiles));
        for (std::int64_t i = 0; i < count; ++i) {
            std::iota(order.begin(), order.end(), 0);
            for (std::size_t k = order.size(); k > 1; --k) std::swap(order[k - 1], order[random.uniform_index(k)]);
            for (std::int64_t to = 0; to < tiles; ++to) {
                const std::int64_t from = order[static_cast<std::size_t>(to)];
                const std::int64_t from_y = from / grid * tile, from_x = from % grid * tile;
                const std::int64_t to_y = to / grid * tile, to_x = to % grid * tile;
                for (std::int64_t c = 0; c < channels; ++c)
                    for (std::int64_t r = 0; r < tile; ++r)
                        std::copy_n(clean + i * sample + c * plane + (from_y + r) * size + from_x, tile,
                                    corrupted + i * sample + c * plane + (to_y + r) * size + to_x);
            }
        }
    }
};

}  // namespace sga
