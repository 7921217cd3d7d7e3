// The model's settings and a training step's losses, as plain values: what DetectorOptions,
// FitReport and the engine (engine/skip_ganomaly.hpp) share. Self-contained.
#pragma once

#include <cstdint>
#include <string>

#include "skipganomaly/error.hpp"

namespace sga {

// One bit per generator skip connection, bit k for skip k counted from the outermost.
using SkipMask = std::uint32_t;

struct Architecture {
    int image_size = 32;             // isize: a power of two >= 32
    int channels = 3;                // nc: 1 or 3
    int generator_features = 64;     // ngf
    int discriminator_features = 64; // ndf
    int latent_size = 100;           // nz: length of the discriminator feature f(x)
    // Width of a linear bottleneck inside the generator's innermost code (two 1x1
    // convolutions, 8 ngf -> this -> 8 ngf); 0: none, the official network. It bounds what
    // the code can carry, so the decoder cannot rebuild whatever it is given (recipe.hpp).
    int bottleneck_channels = 0;
    // The discriminator also has a rotation head (latent -> 4, rotation_prediction.hpp); false:
    // the official network.
    bool rotation_head = false;

    void validate() const {
        const bool power_of_two = image_size > 0 && (image_size & (image_size - 1)) == 0;
        SGA_CHECK_ARGUMENT(power_of_two && image_size >= 32,
                           "image_size must be a power of two >= 32, found " + std::to_string(image_size));
        SGA_CHECK_ARGUMENT(image_size <= 1024, "image_size must be at most 1024, found " + std::to_string(image_size));
        SGA_CHECK_ARGUMENT(channels == 1 || channels == 3, "channels must be 1 or 3, found " + std::to_string(channels));
        SGA_CHECK_ARGUMENT(generator_features > 0 && generator_features <= 1024,
                           "generator_features must lie in [1, 1024], found " + std::to_string(generator_features));
        SGA_CHECK_ARGUMENT(discriminator_features > 0 && discriminator_features <= 1024,
                           "discriminator_features must lie in [1, 1024], found " +
                               std::to_string(discriminator_features));
        SGA_CHECK_ARGUMENT(latent_size > 0 && latent_size <= 4096,
                           "latent_size must lie in [1, 4096], found " + std::to_string(latent_size));
        SGA_CHECK_ARGUMENT(bottleneck_channels >= 0 && bottleneck_channels <= 4096,
                           "bottleneck_channels must lie in [0, 4096], found " + std::to_string(bottleneck_channels));
    }
    int downsamplings() const {
        int n = 0;
        for (int s = image_size; s > 1; s /= 2) ++n;
        return n;
    }
};

// The arithmetic of the convolutions when scoring. BFloat16 rounds their inputs and weights to
// bfloat16 and sums the products in float32 (AVX512-BF16, CPU only); batch norm, activations
// and the scores stay float32. Where the processor lacks the instructions (or the device is
// CUDA) BFloat16 runs as Float32, and says so (Detector::active_precision).
enum class Precision { Float32, BFloat16 };

inline const char* precision_name(Precision precision) {
    return precision == Precision::BFloat16 ? "bfloat16" : "float32";
}
// "float32" or "bfloat16"; InvalidArgument otherwise.
inline Precision precision_from_name(const std::string& name) {
    if (name == "float32") return Precision::Float32;
    if (name == "bfloat16" || name == "bf16") return Precision::BFloat16;
    throw InvalidArgument("unknown precision '" + name + "': expected float32 or bfloat16");
}

struct AdamHyperparameters {
    float learning_rate = 2e-4f;
    float beta1 = 0.5f;
    float beta2 = 0.999f;
    float epsilon = 1e-8f;
};

struct LossWeights {
    float adversarial = 1.0f;  // w_adv
    float contextual = 50.0f;  // w_con (L1 reconstruction)
    float latent = 1.0f;       // w_lat
};

struct StepLosses {
    float generator = 0, generator_adversarial = 0, generator_contextual = 0, generator_latent = 0;  // weighted
    float discriminator = 0, discriminator_real = 0, discriminator_fake = 0;
    float discriminator_rotation = 0;  // weighted; rotation prediction only
    bool discriminator_reinitialized = false;
};

}  // namespace sga
