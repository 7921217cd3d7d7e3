// Optional OpenCV adapter, header-only: include it only in code that already uses OpenCV
// (the library itself never includes OpenCV and does not link it).
//
//   cv::Mat frame = cv::imread("part.png");              // 8UC3, BGR
//   sga::ScoreResult r = detector.score(sga::image_view(frame));
//   cv::Mat mask = sga::anomaly_mask_mat(r);             // with ScoreOptions::anomaly_mask
#pragma once

#include <opencv2/core.hpp>

#include <string>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"

namespace sga {

// A view of `mat`'s pixels, nothing copied: valid while mat's pixels live and do not change.
// CV_8UC1 is grey, CV_8UC3 BGR and CV_8UC4 BGRA, OpenCV's channel orders (what imread and
// VideoCapture return); alpha is ignored. Rows follow mat.step, so a region of interest or
// padded rows need no copy. Throws InvalidArgument for an empty Mat, more than two
// dimensions, a depth other than 8-bit unsigned, or 2 or more than 4 channels; convert with
// cv::Mat::convertTo / cv::cvtColor first.
inline ImageView image_view(const cv::Mat& mat) {
    SGA_CHECK_ARGUMENT(!mat.empty(), "the cv::Mat is empty");
    SGA_CHECK_ARGUMENT(mat.dims == 2, "expected a 2-D cv::Mat, found " + std::to_string(mat.dims) + " dimensions");
    SGA_CHECK_ARGUMENT(mat.depth() == CV_8U, "expected an 8-bit unsigned cv::Mat (CV_8UC1, CV_8UC3 or CV_8UC4), found " +
                                                 cv::typeToString(mat.type()) + "; convert it with convertTo first");
    const int channels = mat.channels();
    SGA_CHECK_ARGUMENT(channels == 1 || channels == 3 || channels == 4,
                       "expected 1, 3 (BGR) or 4 (BGRA) channels, found " + std::to_string(channels));
    ImageView view;
    view.data = mat.ptr<std::uint8_t>(0);
    view.width = mat.cols;
    view.height = mat.rows;
    view.row_stride_bytes = static_cast<std::ptrdiff_t>(mat.step[0]);
    view.format = channels == 1 ? PixelFormat::Gray : channels == 3 ? PixelFormat::Bgr : PixelFormat::Bgra;
    return view;
}

// ScoreResult::anomaly_map as a CV_32FC1 Mat (copied), map_height x map_width; empty when the
// map was not asked for (ScoreOptions::anomaly_map).
inline cv::Mat anomaly_map_mat(const ScoreResult& result) {
    if (result.anomaly_map.empty()) return {};
    return cv::Mat(result.map_height, result.map_width, CV_32FC1, const_cast<float*>(result.anomaly_map.data())).clone();
}

// ScoreResult::anomaly_mask as a CV_8UC1 Mat (copied): 255 where anomalous, 0 elsewhere; empty
// when the mask was not asked for (ScoreOptions::anomaly_mask).
inline cv::Mat anomaly_mask_mat(const ScoreResult& result) {
    if (result.anomaly_mask.empty()) return {};
    cv::Mat mask(result.map_height, result.map_width, CV_8UC1);
    for (int y = 0; y < result.map_height; ++y)
        for (int x = 0; x < result.map_width; ++x)
            mask.at<std::uint8_t>(y, x) =
                result.anomaly_mask[static_cast<std::size_t>(y) * static_cast<std::size_t>(result.map_width) + static_cast<std::size_t>(x)] ? 255 : 0;
    return mask;
}

}  // namespace sga
