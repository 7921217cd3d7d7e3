// The OpenCV adapter (skipganomaly/opencv.hpp) and the example built on it; this program is
// built only when OpenCV is found.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "skipganomaly/opencv.hpp"

namespace {

namespace fs = std::filesystem;

cv::Mat random_mat(int rows, int cols, int type, unsigned seed) {
    cv::Mat m(rows, cols, type);
    cv::RNG rng(seed);
    rng.fill(m, cv::RNG::UNIFORM, 0, 256);
    return m;
}

std::vector<float> preprocessed(const sga::ImageView& v, int channels) {
    std::vector<float> out(static_cast<std::size_t>(channels) * 32 * 32);
    sga::preprocess(v, 32, channels, out.data());
    return out;
}

// The same pixels as an RGB(A) sga::Image, converted by hand from OpenCV's BGR(A).
sga::Image rgb_image(const cv::Mat& bgr) {
    sga::Image im{bgr.cols, bgr.rows, bgr.channels(), {}};
    for (int y = 0; y < bgr.rows; ++y)
        for (int x = 0; x < bgr.cols; ++x) {
            const std::uint8_t* p = bgr.ptr<std::uint8_t>(y) + x * bgr.channels();
            im.pixels.insert(im.pixels.end(), {p[2], p[1], p[0]});
            if (bgr.channels() == 4) im.pixels.push_back(p[3]);
        }
    return im;
}

struct TempDir {
    fs::path path = fs::temp_directory_path() / ("sga_opencv_" + std::to_string(std::random_device{}()));
    TempDir() { fs::create_directories(path); }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

}  // namespace

TEST_CASE("image_view reads 8UC1, BGR 8UC3 and BGRA 8UC4 Mats as the same pixels in RGB", "[opencv]") {
    for (int channels : {1, 3}) {
        const cv::Mat bgr = random_mat(27, 41, CV_8UC3, 5);
        const sga::Image rgb = rgb_image(bgr);
        CHECK(preprocessed(sga::image_view(bgr), channels) == preprocessed(rgb.view(), channels));
        cv::Mat bgra = random_mat(27, 41, CV_8UC4, 6);
        const sga::Image rgba = rgb_image(bgra);
        CHECK(preprocessed(sga::image_view(bgra), channels) == preprocessed(rgba.view(), channels));
        const cv::Mat grey = random_mat(30, 20, CV_8UC1, 7);
        const sga::Image g{20, 30, 1, std::vector<std::uint8_t>(grey.datastart, grey.dataend)};
        CHECK(preprocessed(sga::image_view(grey), channels) == preprocessed(g.view(), channels));
    }
    // A region of interest is not continuous: rows follow mat.step, no copy.
    const cv::Mat big = random_mat(60, 70, CV_8UC3, 8);
    const cv::Mat roi = big(cv::Rect(5, 7, 33, 21));
    REQUIRE_FALSE(roi.isContinuous());
    const sga::ImageView v = sga::image_view(roi);
    CHECK(v.data == roi.data);
    CHECK(v.width == 33);
    CHECK(v.height == 21);
    CHECK(v.row_stride_bytes == 70 * 3);
    CHECK(preprocessed(v, 3) == preprocessed(sga::image_view(roi.clone()), 3));
}

TEST_CASE("image_view refuses Mats it cannot read with InvalidArgument", "[opencv][errors]") {
    CHECK_THROWS_WITH(sga::image_view(cv::Mat()), Catch::Contains("empty"));
    CHECK_THROWS_WITH(sga::image_view(cv::Mat(4, 4, CV_16UC3)), Catch::Contains("8-bit") && Catch::Contains("CV_16UC3"));
    CHECK_THROWS_AS(sga::image_view(cv::Mat(4, 4, CV_32FC1)), sga::InvalidArgument);
    CHECK_THROWS_WITH(sga::image_view(cv::Mat(4, 4, CV_8UC2)), Catch::Contains("found 2"));
    const int sizes[] = {2, 3, 4};
    CHECK_THROWS_WITH(sga::image_view(cv::Mat(3, sizes, CV_8UC1)), Catch::Contains("2-D"));
}

TEST_CASE("opencv_score_frames scores a folder of frames (and a video) as the library does", "[opencv][example]") {
    TempDir dir;
    // A model with a pixel threshold: the converted fixture, calibrated on a few frames.
    sga::Detector detector = sga::Detector::load(SKIPGANOMALY_FIXTURE_DIR "/converted_tiny.safetensors", sga::Device::Cpu);
    std::vector<cv::Mat> frames;
    for (unsigned i = 0; i < 6; ++i) frames.push_back(random_mat(48, 64, CV_8UC3, 100 + i));
    std::vector<sga::ImageView> views;
    for (const cv::Mat& f : frames) views.push_back(sga::image_view(f));
    detector.calibrate(views);
    const std::string model = (dir.path / "model.safetensors").string();
    detector.save(model);

    const fs::path folder = dir.path / "frames";
    fs::create_directories(folder);
    for (std::size_t i = 0; i < frames.size(); ++i) {
        std::ostringstream name;  // not "f" + std::to_string(i): GCC 12 -O3 warns falsely (-Wrestrict)
        name << 'f' << i << ".png";
        REQUIRE(cv::imwrite((folder / name.str()).string(), frames[i]));
    }
    const fs::path masks = dir.path / "masks", out = dir.path / "out.txt";
    const std::string command = std::string("'") + SKIPGANOMALY_OPENCV_EXAMPLE + "' '" + model + "' '" + folder.string() +
                                "' --every 2 --masks '" + masks.string() + "' >'" + out.string() + "'";
    const int status = std::system(command.c_str());
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    std::ifstream lines(out);
    std::vector<nlohmann::json> results;
    for (std::string line; std::getline(lines, line);) results.push_back(nlohmann::json::parse(line));
    REQUIRE(results.size() == 3);  // frames 0, 2, 4
    sga::ScoreOptions with_mask;
    with_mask.anomaly_mask = true;
    for (const nlohmann::json& r : results) {
        const int index = r.at("frame").get<int>();
        const sga::ScoreResult expected = detector.score(sga::image_view(frames[static_cast<std::size_t>(index)]), with_mask);
        CHECK(r.at("score").get<float>() == expected.score);
        CHECK(r.at("is_anomaly").get<bool>() == expected.is_anomaly);
        const cv::Mat mask = cv::imread(r.at("mask").get<std::string>(), cv::IMREAD_UNCHANGED);
        REQUIRE(mask.type() == CV_8UC1);
        CHECK(mask.rows == 48);
        CHECK(mask.cols == 64);
        CHECK(cv::countNonZero(mask != sga::anomaly_mask_mat(expected)) == 0);
    }

    // A video, when this OpenCV can write one (MJPG in AVI; lossy, so only counts are checked).
    const std::string video = (dir.path / "clip.avi").string();
    cv::VideoWriter writer(video, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10, cv::Size(64, 48));
    if (!writer.isOpened()) {
        WARN("this OpenCV cannot write MJPG video; the video path is not exercised");
        return;
    }
    for (const cv::Mat& f : frames) writer.write(f);
    writer.release();
    const fs::path video_out = dir.path / "video.txt";
    const std::string video_command = std::string("'") + SKIPGANOMALY_OPENCV_EXAMPLE + "' '" + model + "' '" + video +
                                      "' >'" + video_out.string() + "'";
    const int video_status = std::system(video_command.c_str());
    REQUIRE(WIFEXITED(video_status));
    REQUIRE(WEXITSTATUS(video_status) == 0);
    std::ifstream video_lines(video_out);
    int count = 0;
    for (std::string line; std::getline(video_lines, line); ++count) CHECK(nlohmann::json::parse(line).at("frame") == count);
    CHECK(count == 6);
}
