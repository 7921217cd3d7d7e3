#include "data.hpp"

#include <filesystem>
#include <optional>

#include "skipganomaly/error.hpp"

namespace fs = std::filesystem;

namespace cli {

MnistFiles mnist_files(const std::string& dir) {
    const auto pick = [&](const std::string& stem) {
        const fs::path gz = fs::path(dir) / (stem + ".gz");
        const fs::path plain = fs::path(dir) / stem;
        if (fs::exists(gz)) return gz.string();
        if (fs::exists(plain)) return plain.string();
        throw sga::IoError("MNIST folder '" + dir + "' holds neither " + gz.filename().string() + " nor " +
                           plain.filename().string());
    };
    return {pick("train-images-idx3-ubyte"), pick("train-labels-idx1-ubyte"), pick("t10k-images-idx3-ubyte"),
            pick("t10k-labels-idx1-ubyte")};
}

std::vector<sga::Image> load_training_images(const DataSpec& d) {
    if (d.kind == "folder" || d.kind == "anomalib") {
        std::vector<sga::Image> images = sga::load_image_folder(d.parts[0]);
        if (images.empty()) throw sga::FormatError("'" + d.parts[0] + "' holds no PNG, JPEG or BMP images");
        return images;
    }
    if (d.kind == "mvtec") return sga::load_mvtec_train(d.parts[0]);
    if (d.kind == "cifar10") return sga::cifar10_one_class(d.parts[0], std::stoi(d.parts[1])).train_normal;
    const MnistFiles f = mnist_files(d.parts[0]);
    return sga::mnist_one_class(f.train_images, f.train_labels, f.test_images, f.test_labels, std::stoi(d.parts[1]))
        .train_normal;
}

std::vector<sga::LabeledImage> load_labelled_images(const DataSpec& d) {
    if (d.kind == "mvtec") return sga::load_mvtec_test(d.parts[0]);
    if (d.kind == "anomalib")
        return sga::load_folder_dataset(d.parts[0], d.parts[1],
                                        d.parts.size() > 2 ? std::optional<std::string>(d.parts[2]) : std::nullopt);
    if (d.kind == "cifar10") return sga::cifar10_one_class(d.parts[0], std::stoi(d.parts[1])).test;
    const MnistFiles f = mnist_files(d.parts[0]);
    return sga::mnist_one_class(f.train_images, f.train_labels, f.test_images, f.test_labels, std::stoi(d.parts[1]))
        .test;
}

}  // namespace cli
