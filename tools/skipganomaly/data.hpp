// Loading the images a --data spec names.
#pragma once

#include <string>
#include <vector>

#include "arguments.hpp"
#include "skipganomaly/datasets.hpp"
#include "skipganomaly/image.hpp"

namespace cli {

struct MnistFiles {
    std::string train_images, train_labels, test_images, test_labels;
};

// DIR holds train-images-idx3-ubyte.gz etc., gzipped or not; sga::IoError when one is missing.
MnistFiles mnist_files(const std::string& dir);

// The normal training images of a spec parsed with labelled = false.
std::vector<sga::Image> load_training_images(const DataSpec& d);
// The labelled test images of a spec parsed with labelled = true.
std::vector<sga::LabeledImage> load_labelled_images(const DataSpec& d);

}  // namespace cli
