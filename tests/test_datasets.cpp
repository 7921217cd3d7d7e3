// Data set readers on small files written here: IDX (plain and gzip), image folders,
// anomalib's Folder layout and MVTec AD; plus the bundled MNIST slice when present.
#include <catch2/catch.hpp>

#include "test_support.hpp"

using sga::testing::message_of;

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "skipganomaly/datasets.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::random_device device;
        path = fs::temp_directory_path() / ("sga_test_datasets_" + std::to_string(device()));
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const Bytes& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
}

void put_big_endian(Bytes& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}
void put_little_endian(Bytes& out, std::uint32_t v, int bytes = 4) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

Bytes idx_images(std::uint32_t count, std::uint32_t rows, std::uint32_t cols, const Bytes& pixels,
                 std::uint32_t magic = 2051) {
    Bytes out;
    put_big_endian(out, magic);
    put_big_endian(out, count);
    put_big_endian(out, rows);
    put_big_endian(out, cols);
    out.insert(out.end(), pixels.begin(), pixels.end());
    return out;
}

Bytes idx_labels(const Bytes& labels, std::uint32_t magic = 2049) {
    Bytes out;
    put_big_endian(out, magic);
    put_big_endian(out, static_cast<std::uint32_t>(labels.size()));
    out.insert(out.end(), labels.begin(), labels.end());
    return out;
}

std::uint32_t crc32(const Bytes& data) {
    std::uint32_t crc = 0xFFFFFFFFu;
    for (std::uint8_t byte : data) {
        crc ^= byte;
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

// A valid gzip member holding data in stored (uncompressed) deflate blocks, so the test needs
// no compressor of its own.
Bytes gzip(const Bytes& data) {
    Bytes out = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
    std::size_t offset = 0;
    do {
        const std::size_t length = std::min<std::size_t>(65535, data.size() - offset);
        const bool last = offset + length == data.size();
        out.push_back(last ? 1 : 0);
        put_little_endian(out, static_cast<std::uint32_t>(length), 2);
        put_little_endian(out, static_cast<std::uint32_t>(~length & 0xFFFF), 2);
        out.insert(out.end(), data.begin() + offset, data.begin() + offset + length);
        offset += length;
    } while (offset < data.size());
    put_little_endian(out, crc32(data));
    put_little_endian(out, static_cast<std::uint32_t>(data.size()));
    return out;
}

Bytes random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    Bytes out(n);
    for (auto& b : out) b = static_cast<std::uint8_t>(rng());
    return out;
}

sga::Image flat_image(int width, int height, int channels, std::uint8_t value) {
    sga::Image image;
    image.width = width;
    image.height = height;
    image.channels = channels;
    image.pixels.assign(static_cast<std::size_t>(width) * height * channels, value);
    return image;
}

}  // namespace

TEST_CASE("IDX images and labels read back, plain and gzip-compressed", "[datasets][idx]") {
    TempDir dir;
    // 100000 pixels: the gzip copy spans two stored blocks.
    const Bytes pixels = random_bytes(40 * 50 * 50, 1);
    const Bytes labels = random_bytes(40, 2);
    write_bytes(dir.file("images.idx"), idx_images(40, 50, 50, pixels));
    write_bytes(dir.file("images.idx.gz"), gzip(idx_images(40, 50, 50, pixels)));
    write_bytes(dir.file("labels.idx"), idx_labels(labels));
    write_bytes(dir.file("labels.idx.gz"), gzip(idx_labels(labels)));
    for (const std::string suffix : {"", ".gz"}) {
        INFO("suffix '" << suffix << "'");
        const sga::IdxImages images = sga::read_idx_images(dir.file("images.idx" + suffix));
        CHECK(images.count == 40);
        CHECK(images.rows == 50);
        CHECK(images.cols == 50);
        CHECK(images.pixels == pixels);
        CHECK(sga::read_idx_labels(dir.file("labels.idx" + suffix)) == labels);
    }
    // An empty set is well formed.
    write_bytes(dir.file("none.idx"), idx_images(0, 28, 28, {}));
    CHECK(sga::read_idx_images(dir.file("none.idx")).pixels.empty());
}

TEST_CASE("malformed IDX files are reported with what was expected", "[datasets][idx][errors]") {
    TempDir dir;
    const Bytes pixels = random_bytes(3 * 4 * 5, 3);
    CHECK_THROWS_AS(sga::read_idx_images(dir.file("missing.idx")), sga::IoError);
    CHECK_THROWS_AS(sga::read_idx_images(dir.path.string()), sga::IoError);

    write_bytes(dir.file("labels.idx"), idx_labels({1, 2, 3}));
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::read_idx_images(dir.file("labels.idx")); }),
               Catch::Contains("expected 2051, found 2049"));
    write_bytes(dir.file("images.idx"), idx_images(3, 4, 5, pixels));
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::read_idx_labels(dir.file("images.idx")); }),
               Catch::Contains("expected 2049, found 2051"));

    write_bytes(dir.file("short_header.idx"), {0, 0, 8, 3, 0, 0});
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::read_idx_images(dir.file("short_header.idx")); }),
               Catch::Contains("expected 4 bytes") && Catch::Contains("found 2"));

    Bytes truncated = idx_images(3, 4, 5, pixels);
    truncated.resize(truncated.size() - 7);
    write_bytes(dir.file("truncated.idx"), truncated);
    write_bytes(dir.file("truncated_data.idx.gz"), gzip(truncated));
    for (const char* name : {"truncated.idx", "truncated_data.idx.gz"})
        CHECK_THAT(message_of<sga::FormatError>([&] { sga::read_idx_images(dir.file(name)); }),
                   Catch::Contains("expected 60 bytes") && Catch::Contains("found 53"));

    Bytes trailing = idx_images(3, 4, 5, pixels);
    trailing.push_back(0);
    write_bytes(dir.file("trailing.idx"), trailing);
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::read_idx_images(dir.file("trailing.idx")); }),
               Catch::Contains("expected end of file after 76 bytes"));

    write_bytes(dir.file("zero_rows.idx"), idx_images(3, 0, 5, {}));
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::read_idx_images(dir.file("zero_rows.idx")); }),
               Catch::Contains("row count") && Catch::Contains("found 0"));
    write_bytes(dir.file("huge.idx"), idx_images(60000, 30000, 30000, pixels));
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::read_idx_images(dir.file("huge.idx")); }),
               Catch::Contains("limit"));
    write_bytes(dir.file("negative.idx"), idx_images(0x80000000u, 1, 1, pixels));
    CHECK_THROWS_AS(sga::read_idx_images(dir.file("negative.idx")), sga::FormatError);

    // A gzip stream cut short, and one whose data no longer matches its checksum.
    Bytes compressed = gzip(idx_images(3, 4, 5, pixels));
    write_bytes(dir.file("cut.idx.gz"), Bytes(compressed.begin(), compressed.end() - 30));
    CHECK_THROWS_AS(sga::read_idx_images(dir.file("cut.idx.gz")), sga::FormatError);
    compressed[40] ^= 0xFF;
    write_bytes(dir.file("corrupt.idx.gz"), compressed);
    CHECK_THROWS_AS(sga::read_idx_images(dir.file("corrupt.idx.gz")), sga::FormatError);
}

TEST_CASE("mnist_one_class trains on one digit and tests on all", "[datasets][idx]") {
    TempDir dir;
    Bytes train_labels, test_labels;
    for (int i = 0; i < 30; ++i) train_labels.push_back(static_cast<std::uint8_t>(i % 10));
    for (int i = 0; i < 17; ++i) test_labels.push_back(static_cast<std::uint8_t>((i * 3) % 10));
    Bytes train_pixels, test_pixels;
    for (int i = 0; i < 30; ++i) train_pixels.insert(train_pixels.end(), 6 * 7, static_cast<std::uint8_t>(i));
    for (int i = 0; i < 17; ++i) test_pixels.insert(test_pixels.end(), 6 * 7, static_cast<std::uint8_t>(100 + i));
    write_bytes(dir.file("train-images.gz"), gzip(idx_images(30, 6, 7, train_pixels)));
    write_bytes(dir.file("train-labels.gz"), gzip(idx_labels(train_labels)));
    write_bytes(dir.file("test-images"), idx_images(17, 6, 7, test_pixels));
    write_bytes(dir.file("test-labels"), idx_labels(test_labels));

    const sga::OneClassSplit split = sga::mnist_one_class(
        dir.file("train-images.gz"), dir.file("train-labels.gz"), dir.file("test-images"),
        dir.file("test-labels"), 3);
    REQUIRE(split.train_normal.size() == 3);  // images 3, 13, 23
    CHECK(split.train_normal[0].pixels.front() == 3);
    CHECK(split.train_normal[2].pixels.front() == 23);
    CHECK(split.train_normal[0].width == 7);
    CHECK(split.train_normal[0].height == 6);
    CHECK(split.train_normal[0].channels == 1);
    REQUIRE(split.test.size() == 17);
    int normal = 0;
    for (std::size_t i = 0; i < split.test.size(); ++i) {
        CHECK(split.test[i].label == (test_labels[i] == 3 ? 0 : 1));
        CHECK(split.test[i].image.pixels.back() == 100 + i);
        normal += split.test[i].label == 0;
    }
    CHECK(normal == 2);  // i = 1 and i = 11 give digit 3
    CHECK(split.test[5].path == dir.file("test-images") + "[5]");

    CHECK_THROWS_AS(sga::mnist_one_class(dir.file("train-images.gz"), dir.file("train-labels.gz"),
                                         dir.file("test-images"), dir.file("test-labels"), 10),
                    sga::InvalidArgument);
    CHECK_THAT(message_of<sga::FormatError>([&] {
                   sga::mnist_one_class(dir.file("train-images.gz"), dir.file("test-labels"),
                                        dir.file("test-images"), dir.file("test-labels"), 3);
               }),
               Catch::Contains("expected 30 labels") && Catch::Contains("found 17"));
    Bytes bad_labels = test_labels;
    bad_labels[4] = 12;
    write_bytes(dir.file("bad-labels"), idx_labels(bad_labels));
    CHECK_THAT(message_of<sga::FormatError>([&] {
                   sga::mnist_one_class(dir.file("train-images.gz"), dir.file("train-labels.gz"),
                                        dir.file("test-images"), dir.file("bad-labels"), 3);
               }),
               Catch::Contains("found 12"));
}

TEST_CASE("load_image_folder reads supported files sorted by name", "[datasets][folders]") {
    TempDir dir;
    sga::save_png(dir.file("b.png"), flat_image(3, 2, 1, 20));
    sga::save_png(dir.file("a.PNG"), flat_image(3, 2, 3, 10));
    sga::save_png(dir.file("c.png"), flat_image(5, 4, 4, 30));
    write_bytes(dir.file("notes.txt"), {'h', 'i'});
    fs::create_directories(dir.path / "nested");
    sga::save_png((dir.path / "nested" / "d.png").string(), flat_image(2, 2, 1, 40));

    const std::vector<sga::Image> images = sga::load_image_folder(dir.path.string());
    REQUIRE(images.size() == 3);
    CHECK(images[0].pixels.front() == 10);  // "a.PNG" sorts before "b.png"
    CHECK(images[0].channels == 3);
    CHECK(images[1].pixels.front() == 20);
    CHECK(images[2].pixels.front() == 30);
    CHECK(images[2].width == 5);

    CHECK(sga::load_image_folder((dir.path / "nested" / "..").string()).size() == 3);
    CHECK_THROWS_AS(sga::load_image_folder(dir.file("missing")), sga::IoError);
    CHECK_THROWS_AS(sga::load_image_folder(dir.file("notes.txt")), sga::IoError);
    write_bytes(dir.file("broken.png"), {'x'});
    CHECK_THROWS_AS(sga::load_image_folder(dir.path.string()), sga::FormatError);
}

TEST_CASE("load_folder_dataset follows anomalib's Folder layout", "[datasets][folders]") {
    TempDir dir;
    for (const char* sub : {"good", "bad", "masks", "empty"}) fs::create_directories(dir.path / sub);
    sga::save_png(dir.file("good/n1.png"), flat_image(4, 3, 3, 1));
    sga::save_png(dir.file("good/n2.png"), flat_image(4, 3, 3, 2));
    sga::save_png(dir.file("bad/x.png"), flat_image(4, 3, 3, 3));
    sga::save_png(dir.file("bad/y.png"), flat_image(4, 3, 3, 4));
    sga::save_png(dir.file("masks/x.png"), flat_image(4, 3, 1, 255));
    sga::Image colour_mask = flat_image(4, 3, 3, 0);
    colour_mask.pixels[5] = 200;  // pixel 1, blue channel
    sga::save_png(dir.file("masks/y_mask.png"), colour_mask);

    const std::vector<sga::LabeledImage> samples =
        sga::load_folder_dataset(dir.file("good"), dir.file("bad"), dir.file("masks"));
    REQUIRE(samples.size() == 4);
    CHECK(samples[0].label == 0);
    CHECK(samples[1].label == 0);
    CHECK_FALSE(samples[0].mask.has_value());
    CHECK(samples[2].label == 1);
    CHECK(samples[2].path == dir.file("bad/x.png"));
    REQUIRE(samples[2].mask.has_value());
    CHECK(samples[2].mask->channels == 1);
    CHECK(samples[2].mask->pixels == Bytes(12, 255));
    REQUIRE(samples[3].mask.has_value());
    CHECK(samples[3].mask->channels == 1);
    CHECK(samples[3].mask->pixels[1] == 200);
    CHECK(samples[3].mask->pixels[0] == 0);

    CHECK(sga::load_folder_dataset(dir.file("good"), dir.file("bad")).size() == 4);
    CHECK(sga::load_folder_dataset(dir.file("good"), "").size() == 2);
    CHECK_THROWS_AS(sga::load_folder_dataset(dir.file("empty"), dir.file("bad")), sga::FormatError);
    CHECK_THROWS_AS(sga::load_folder_dataset(dir.file("nowhere"), dir.file("bad")), sga::IoError);

    sga::save_png(dir.file("bad/z.png"), flat_image(4, 3, 3, 5));
    CHECK_THAT(message_of<sga::FormatError>([&] {
                   sga::load_folder_dataset(dir.file("good"), dir.file("bad"), dir.file("masks"));
               }),
               Catch::Contains("no mask for") && Catch::Contains("z.png"));
    sga::save_png(dir.file("masks/z.png"), flat_image(5, 3, 1, 0));
    CHECK_THAT(message_of<sga::FormatError>([&] {
                   sga::load_folder_dataset(dir.file("good"), dir.file("bad"), dir.file("masks"));
               }),
               Catch::Contains("expected 4 x 3") && Catch::Contains("found 5 x 3"));
}

TEST_CASE("MVTec AD layout: train/good, test/<defect>, ground_truth masks", "[datasets][folders]") {
    TempDir dir;
    const fs::path root = dir.path / "bottle";
    for (const char* sub : {"train/good", "test/good", "test/crack", "test/broken", "ground_truth/crack",
                            "ground_truth/broken"})
        fs::create_directories(root / sub);
    sga::save_png((root / "train/good/000.png").string(), flat_image(6, 6, 3, 1));
    sga::save_png((root / "train/good/001.png").string(), flat_image(6, 6, 3, 2));
    sga::save_png((root / "test/good/000.png").string(), flat_image(6, 6, 3, 3));
    sga::save_png((root / "test/crack/000.png").string(), flat_image(6, 6, 3, 4));
    sga::save_png((root / "test/crack/001.png").string(), flat_image(6, 6, 3, 5));
    sga::save_png((root / "test/broken/000.png").string(), flat_image(6, 6, 3, 6));
    sga::save_png((root / "ground_truth/crack/000_mask.png").string(), flat_image(6, 6, 1, 255));
    sga::save_png((root / "ground_truth/crack/001_mask.png").string(), flat_image(6, 6, 1, 0));
    sga::save_png((root / "ground_truth/broken/000_mask.png").string(), flat_image(6, 6, 1, 255));

    const std::vector<sga::Image> train = sga::load_mvtec_train(root.string());
    REQUIRE(train.size() == 2);
    CHECK(train[1].pixels.front() == 2);

    const std::vector<sga::LabeledImage> test = sga::load_mvtec_test(root.string());
    REQUIRE(test.size() == 4);
    // Defect folders in name order: broken, crack, good.
    CHECK(test[0].image.pixels.front() == 6);
    CHECK(test[0].label == 1);
    CHECK(test[1].image.pixels.front() == 4);
    CHECK(test[2].image.pixels.front() == 5);
    REQUIRE(test[2].mask.has_value());
    CHECK(test[2].mask->pixels == Bytes(36, 0));
    CHECK(test[3].label == 0);
    CHECK_FALSE(test[3].mask.has_value());
    CHECK(test[3].path == (root / "test/good/000.png").string());

    fs::remove(root / "ground_truth/broken/000_mask.png");
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::load_mvtec_test(root.string()); }),
               Catch::Contains("000_mask.png"));
    CHECK_THROWS_AS(sga::load_mvtec_train((dir.path / "missing").string()), sga::IoError);
    fs::remove_all(root / "train/good");
    fs::create_directories(root / "train/good");
    CHECK_THROWS_AS(sga::load_mvtec_train(root.string()), sga::FormatError);
}

TEST_CASE("the bundled MNIST slice reads as a one-class split", "[datasets][mnist]") {
    const fs::path dir = fs::path(SKIPGANOMALY_SOURCE_DIR) / "data" / "mnist";
    // The four files by the usual names, gzipped or not; "test" may be spelled "t10k".
    auto find = [&](const std::string& split, const std::string& kind) -> std::string {
        std::error_code error;
        if (!fs::is_directory(dir, error)) return {};
        std::vector<std::string> names;
        for (const auto& entry : fs::directory_iterator(dir, error)) names.push_back(entry.path().filename().string());
        std::sort(names.begin(), names.end());
        for (const std::string& name : names) {
            const bool split_matches = name.find(split) != std::string::npos ||
                                       (split == "test" && name.find("t10k") != std::string::npos);
            if (split_matches && name.find(kind) != std::string::npos) return (dir / name).string();
        }
        return {};
    };
    const std::string train_images = find("train", "images"), train_labels = find("train", "labels");
    const std::string test_images = find("test", "images"), test_labels = find("test", "labels");
    if (train_images.empty() || train_labels.empty() || test_images.empty() || test_labels.empty()) {
        std::cout << "SKIPPED: no MNIST IDX files (train/test images and labels) in " << dir.string()
                  << std::endl;
        return;
    }
    const sga::IdxImages images = sga::read_idx_images(train_images);
    CHECK(images.rows == 28);
    CHECK(images.cols == 28);
    const std::vector<std::uint8_t> labels = sga::read_idx_labels(train_labels);
    REQUIRE(labels.size() == static_cast<std::size_t>(images.count));
    const auto zeros = std::count(labels.begin(), labels.end(), 0);

    const sga::OneClassSplit split = sga::mnist_one_class(train_images, train_labels, test_images, test_labels, 0);
    CHECK(split.train_normal.size() == static_cast<std::size_t>(zeros));
    const std::vector<std::uint8_t> test_digit = sga::read_idx_labels(test_labels);
    REQUIRE(split.test.size() == test_digit.size());
    std::size_t anomalous = 0;
    for (const sga::LabeledImage& sample : split.test) anomalous += sample.label;
    CHECK(anomalous == test_digit.size() - std::count(test_digit.begin(), test_digit.end(), 0));
    CHECK(split.test.front().image.width == 28);
}
