// The smallest use of the API: load a trained model and score one image.
//
//   minimal_score model.safetensors image.png   score a PNG/JPEG/BMP file
//   minimal_score model.safetensors             score a 64x64 grey image built in memory
#include <cstdint>
#include <exception>
#include <iostream>
#include <vector>

#include <skipganomaly/detector.hpp>
#include <skipganomaly/image.hpp>

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        std::cerr << "usage: minimal_score MODEL.safetensors [IMAGE]\n";
        return 2;
    }
    try {
        const sga::Detector detector = sga::Detector::load(argv[1]);

        sga::Image image;
        if (argc == 3) {
            image = sga::load_image(argv[2]);  // PNG, JPEG or BMP; 1, 3 or 4 channels
        } else {
            // Any 8-bit buffer works: here a grey horizontal gradient, 64 x 64, one byte a pixel.
            image.width = 64;
            image.height = 64;
            image.channels = 1;
            image.pixels.resize(64 * 64);
            for (int y = 0; y < 64; ++y)
                for (int x = 0; x < 64; ++x) image.pixels[y * 64 + x] = static_cast<std::uint8_t>(x * 4);
        }
        // The detector resizes and converts the image as it did when training.
        const sga::ScoreResult result = detector.score(image.view());

        std::cout << "score " << result.score << " (reconstruction " << result.reconstruction_error << ", latent "
                  << result.latent_error << ")\n"
                  << "threshold " << result.threshold << ", normalized " << result.normalized_score << "\n"
                  << (result.is_anomaly ? "anomalous" : "normal") << "\n";
        return 0;
    } catch (const std::exception& e) {  // sga::Error and its subclasses derive from std::runtime_error
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
