// Rotation prediction: the discriminator also learns which quarter turn the generator's input
// was given (the auxiliary task of SS-GAN, Chen et al., "Self-Supervised GANs via Auxiliary
// Rotation Loss", CVPR 2019), and the anomaly score adds how badly it recognises the four
// quarter turns of an image (Golan & El-Yaniv, NeurIPS 2018; Hendrycks et al., NeurIPS 2019).
// A network that has learnt how normal images stand cannot tell how an image of another kind
// was turned, which reconstruction alone barely sees on natural images (docs/quality.md,
// "A discriminator that predicts rotations").
//
// It builds on the rotation restoration (restoration.hpp): the generator's inputs are already
// the image turned by a random quarter turn (and greyed, in colour), and scoring already feeds
// the four turns. The head is a 1x1 convolution latent -> 4 on the discriminator's feature map
// (Architecture::rotation_head), trained with the discriminator, one-vs-rest: w x BCE of its
// four sigmoid outputs against the one-hot turn, added to the discriminator's loss. The
// generator's losses are unchanged.
//
// Score: the two parts are put on one scale with the mean and standard deviation of each over
// normal images, learnt by fit() (ScoreStandardisation), then
//   score = (1 - w) (s - mean_s) / std_s + w (r - mean_r) / std_r
// with s the official 0.9 x reconstruction + 0.1 x latent and r the rotation error: the
// one-vs-rest BCE of the head on each of the four turns, averaged over them.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "skipganomaly/error.hpp"

namespace sga {

struct RotationPrediction {
    bool enabled = false;
    float loss_weight = 1.0f;   // of the head's BCE in the discriminator's loss
    float score_weight = 0.5f;  // w in the score above

    void validate() const {
        SGA_CHECK_ARGUMENT(loss_weight > 0 && std::isfinite(loss_weight),
                           "rotation_prediction.loss_weight must be positive, found " + std::to_string(loss_weight));
        SGA_CHECK_ARGUMENT(score_weight >= 0 && score_weight <= 1,
                           "rotation_prediction.score_weight must lie in [0, 1], found " + std::to_string(score_weight));
    }
};

// Mean and standard deviation of the two score parts over normal images (see above).
struct ScoreStandardisation {
    double official_mean = 0, official_std = 1;  // of 0.9 x reconstruction + 0.1 x latent
    double rotation_mean = 0, rotation_std = 1;  // of the rotation error

    // From the parts of `count` normal images; a part with no spread keeps std 1.
    static ScoreStandardisation of(const std::vector<float>& official, const std::vector<float>& rotation) {
        SGA_CHECK_ARGUMENT(!official.empty() && official.size() == rotation.size(),
                           "score standardisation needs the same number (> 0) of both parts");
        auto describe = [](const std::vector<float>& v, double& mean, double& std) {
            double sum = 0, squares = 0;
            for (float x : v) sum += x;
            mean = sum / static_cast<double>(v.size());
            for (float x : v) squares += (x - mean) * (x - mean);
            std = std::sqrt(squares / static_cast<double>(v.size()));
            if (!(std > 0) || !std::isfinite(std)) std = 1;
        };
        ScoreStandardisation s;
        describe(official, s.official_mean, s.official_std);
        describe(rotation, s.rotation_mean, s.rotation_std);
        return s;
    }
};

// (count, 4) one-hot rows: row i has a 1 at quarter_turns[i].
inline std::vector<float> rotation_targets(const std::vector<int>& quarter_turns) {
    std::vector<float> targets(quarter_turns.size() * 4, 0.0f);
    for (std::size_t i = 0; i < quarter_turns.size(); ++i) {
        SGA_CHECK_ARGUMENT(quarter_turns[i] >= 0 && quarter_turns[i] < 4,
                           "a quarter turn must lie in [0, 3], found " + std::to_string(quarter_turns[i]));
        targets[i * 4 + static_cast<std::size_t>(quarter_turns[i])] = 1.0f;
    }
    return targets;
}

// The one-vs-rest BCE (summed over the 4 outputs) of logits (4 per row) against `turn`.
inline float rotation_error(const float* logits, int turn) {
    float error = 0;
    for (int j = 0; j < 4; ++j) {
        // -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z), computed stably.
        const float z = j == turn ? -logits[j] : logits[j];
        error += z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
    }
    return error;
}

}  // namespace sga
