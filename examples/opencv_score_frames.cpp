// Scores the frames of a video file, or the images of a folder, with OpenCV doing the
// decoding and skipganomaly::image_view (skipganomaly/opencv.hpp) passing its cv::Mat to the
// detector without a copy. Built only when OpenCV is found (Debian: libopencv-dev).
//
//   opencv_score_frames MODEL.safetensors (VIDEO_FILE | IMAGE_FOLDER) [--every N] [--masks DIR]
//
// Prints one JSON line per scored frame: {"frame", "source", "score", "is_anomaly",
// "normalized_score"}; --masks DIR also writes DIR/frame_NNNNNN_mask.png (needs a model with a
// pixel threshold: one trained by fit, or calibrated).
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/opencv.hpp"

namespace fs = std::filesystem;

namespace {

int usage() {
    std::cerr << "usage: opencv_score_frames MODEL.safetensors (VIDEO_FILE | IMAGE_FOLDER) [--every N] [--masks DIR]\n";
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (argc < 3) return usage();
        const std::string model_path = argv[1], source = argv[2];
        int every = 1;
        std::string masks;
        for (int i = 3; i < argc; ++i) {
            const std::string arg = argv[i];
            if (arg == "--every" && i + 1 < argc) every = std::max(1, std::atoi(argv[++i]));
            else if (arg == "--masks" && i + 1 < argc) masks = argv[++i];
            else return usage();
        }
        const sga::Detector detector = sga::Detector::load(model_path);
        sga::ScoreOptions options;
        options.anomaly_mask = !masks.empty();
        if (!masks.empty()) fs::create_directories(masks);

        const auto score_frame = [&](const cv::Mat& frame, long index, const std::string& name) {
            const sga::ScoreResult r = detector.score(sga::image_view(frame), options);
            nlohmann::json line = {{"frame", index},
                                   {"source", name},
                                   {"score", r.score},
                                   {"is_anomaly", r.is_anomaly},
                                   {"normalized_score", r.normalized_score}};
            if (!masks.empty()) {
                char file[64];
                std::snprintf(file, sizeof file, "frame_%06ld_mask.png", index);
                const std::string path = (fs::path(masks) / file).string();
                cv::imwrite(path, sga::anomaly_mask_mat(r));
                line["mask"] = path;
            }
            std::cout << line.dump() << std::endl;
        };

        if (fs::is_directory(source)) {
            std::vector<fs::path> files;
            for (const auto& entry : fs::directory_iterator(source))
                if (entry.is_regular_file()) files.push_back(entry.path());
            std::sort(files.begin(), files.end());
            long index = 0;
            for (const fs::path& file : files) {
                const cv::Mat frame = cv::imread(file.string(), cv::IMREAD_UNCHANGED);  // keeps 1, 3 or 4 channels
                if (frame.empty()) continue;                                         // not an image
                if (index % every == 0) score_frame(frame, index, file.string());
                ++index;
            }
            if (index == 0) throw std::runtime_error("'" + source + "' holds no image OpenCV can read");
            return 0;
        }
        cv::VideoCapture video(source);
        if (!video.isOpened()) throw std::runtime_error("OpenCV cannot open '" + source + "' as a video or folder");
        cv::Mat frame;
        for (long index = 0; video.read(frame); ++index)
            if (index % every == 0) score_frame(frame, index, source);
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
