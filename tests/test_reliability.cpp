// Hostile and malformed input that the other test files do not cover: image buffers with
// impossible sizes or formats, non-finite float input to Detector::score (FloatImageView), FIFOs in place
// of files, every truncation of an image file, and JPEG headers beyond the size limits.
// docs/reliability.md maps each kind of input to the test that shows what happens.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"
#include "test_support.hpp"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wpedantic"
#endif
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace {

using namespace sga;
namespace fs = std::filesystem;
using sga::testing::random_image;
using sga::testing::tiny_detector_options;

struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("sga_reliability_" + std::to_string(std::random_device{}()));
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes, std::size_t length) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(length));
}

std::vector<std::uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<std::uint8_t> encode_jpeg(const Image& image) {
    std::vector<std::uint8_t> out;
    REQUIRE(stbi_write_jpg_to_func(
        [](void* context, void* data, int size) {
            auto* bytes = static_cast<std::vector<std::uint8_t>*>(context);
            bytes->insert(bytes->end(), static_cast<std::uint8_t*>(data), static_cast<std::uint8_t*>(data) + size);
        },
        &out, image.width, image.height, image.channels, image.pixels.data(), 90));
    return out;
}

// The smallest detector the tests of score(FloatImageView) need: 32 x 32 grey, one epoch.
const Detector& tiny_trained_detector() {
    static const Detector detector = [] {
        DetectorOptions o = tiny_detector_options();
        o.epochs = 1;
        o.seed = 0;
        std::vector<Image> images;
        for (unsigned i = 0; i < 16; ++i) images.push_back(random_image(32, 32, 1, 100 + i));
        Detector d(o);
        d.fit(images);
        return d;
    }();
    return detector;
}

}  // namespace

TEST_CASE("image buffers with negative, overflowing or inconsistent sizes are refused", "[reliability][images]") {
    std::vector<float> out(3 * 8 * 8);
    const Image image = random_image(6, 5, 3, 1);
    const ImageView good = image.view();
    REQUIRE_NOTHROW(preprocess(good, 8, 3, out.data()));

    ImageView bad = good;
    bad.width = -6;
    CHECK_THROWS_AS(preprocess(bad, 8, 3, out.data()), InvalidArgument);
    bad = good;
    bad.height = INT_MIN;
    CHECK_THROWS_AS(preprocess(bad, 8, 3, out.data()), InvalidArgument);
    bad = good;
    bad.row_stride_bytes = -18;  // negative strides (bottom-up buffers) are not supported
    CHECK_THROWS_AS(preprocess(bad, 8, 3, out.data()), InvalidArgument);
    // (height - 1) * stride overflows a pointer difference.
    bad = good;
    bad.height = INT_MAX;
    bad.row_stride_bytes = PTRDIFF_MAX / 2;
    CHECK_THROWS_AS(preprocess(bad, 8, 3, out.data()), InvalidArgument);
    // A pixel format that is not one of the enumerators.
    bad = good;
    bad.format = static_cast<PixelFormat>(7);
    CHECK_THROWS_AS(preprocess(bad, 8, 3, out.data()), InvalidArgument);

    // Owned images: channels other than 1, 3 or 4, negative sizes, and a byte count
    // (width * height * channels) that overflows 64 bits are refused before pixels are read.
    for (int channels : {0, 2, 5, -1}) {
        Image wrong = image;
        wrong.channels = channels;
        CHECK_THROWS_AS(wrong.view(), InvalidArgument);
    }
    Image negative = image;
    negative.width = -6;
    CHECK_THROWS_AS(negative.view(), InvalidArgument);
    const Image overflowing{INT_MAX, INT_MAX, 4, {}};
    CHECK_THROWS_WITH(overflowing.view(), Catch::Contains("overflows"));
    // A size far beyond the pixels present is refused by comparing lengths, not by reading.
    const Image short_pixels{1 << 20, 1 << 20, 1, std::vector<std::uint8_t>(16)};
    CHECK_THROWS_WITH(short_pixels.view(), Catch::Contains("expected 1099511627776 bytes, found 16"));
}

TEST_CASE("Detector refuses bad buffers and non-finite float input", "[reliability][detector]") {
    const Detector& d = tiny_trained_detector();
    // A two-channel owned image reaches score() through Image::view().
    const Image two_channels{32, 32, 2, std::vector<std::uint8_t>(32 * 32 * 2)};
    CHECK_THROWS_AS(d.score(std::vector<Image>{two_channels}), InvalidArgument);
    ImageView negative{two_channels.pixels.data(), 32, -32, 32, PixelFormat::Gray};
    CHECK_THROWS_AS(d.score(negative), InvalidArgument);

    std::vector<float> chw(3 * 20 * 20, 0.25f);
    REQUIRE_NOTHROW(d.score(FloatImageView{chw.data(), 20, 20, 3}));
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
        std::vector<float> poisoned = chw;
        poisoned[777] = bad;
        CHECK_THROWS_WITH(d.score(FloatImageView{poisoned.data(), 20, 20, 3}), Catch::Contains("non-finite"));
    }
    CHECK_THROWS_AS(d.score(FloatImageView{nullptr, 20, 20, 3}), InvalidArgument);
    CHECK_THROWS_AS(d.score(FloatImageView{chw.data(), 20, 20, 2}), InvalidArgument);
    CHECK_THROWS_AS(d.score(FloatImageView{chw.data(), 20, 0, 3}), InvalidArgument);
    CHECK_THROWS_AS(d.score(FloatImageView{chw.data(), INT_MAX, INT_MAX, 3}), InvalidArgument);
}

TEST_CASE("a FIFO or a device is refused as an image and as a model file without blocking", "[reliability][io]") {
    // Opening a FIFO nobody writes to blocks forever, and /dev/zero never ends: both must be
    // refused from the path's type, before it is opened. (A regression hangs here until CTest's
    // timeout.)
    TempDir dir;
    const std::string fifo = dir.file("image.png");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_AS(load_image(fifo), IoError);
    CHECK_THROWS_WITH(load_image(fifo), Catch::Contains("not a regular file"));
    CHECK_THROWS_AS(Detector::load(fifo, Device::Cpu), IoError);
    CHECK_THROWS_WITH(Detector::load(fifo, Device::Cpu), Catch::Contains("not a regular file"));
    CHECK_THROWS_WITH(load_image("/dev/zero"), Catch::Contains("not a regular file"));
    CHECK_THROWS_WITH(Detector::load("/dev/zero", Device::Cpu), Catch::Contains("not a regular file"));
}

TEST_CASE("an image file over 2 GiB is refused from its size before it is read", "[reliability][images]") {
    // A sparse file: it takes no disk space, and reading it would take 2 GiB of memory.
    TempDir dir;
    const std::string path = dir.file("huge.png");
    std::filesystem::resize_file((std::ofstream(path), path), std::uintmax_t{1} << 31);
    CHECK_THROWS_AS(load_image(path), FormatError);
    CHECK_THROWS_WITH(load_image(path), Catch::Contains("2147483648 bytes") && Catch::Contains("too large"));
}

TEST_CASE("buffers claiming more pixels than max_image_pixels are refused before allocating", "[reliability][images]") {
    // The views point at 16 real bytes: nothing may be read or allocated for the claimed size
    // (2^30 x 2^30 grey would need an exabyte of planes; 2^15 x 2^14 is just over the limit).
    const std::vector<std::uint8_t> bytes(16, 7);
    std::vector<float> out(3 * 8 * 8);
    ImageView huge{bytes.data(), 1 << 30, 1 << 30, 1 << 30, PixelFormat::Gray};
    CHECK_THROWS_AS(preprocess(huge, 8, 3, out.data()), InvalidArgument);
    CHECK_THROWS_WITH(preprocess(huge, 8, 3, out.data()), Catch::Contains("max_image_pixels"));
    ImageView over{bytes.data(), 1 << 15, (1 << 14) + 1, 1 << 15, PixelFormat::Gray};
    REQUIRE(std::int64_t{over.width} * over.height > max_image_pixels);
    CHECK_THROWS_WITH(preprocess(over, 8, 1, out.data()), Catch::Contains("max_image_pixels"));
    const Detector& d = tiny_trained_detector();
    CHECK_THROWS_WITH(d.score(huge), Catch::Contains("max_image_pixels"));
    CHECK_THROWS_WITH(d.score(FloatImageView{reinterpret_cast<const float*>(bytes.data()), (1 << 14) + 1, 1 << 15, 1}),
                      Catch::Contains("max_image_pixels"));
    CHECK_THROWS_WITH(preprocess_float_chw(reinterpret_cast<const float*>(bytes.data()), 1, 1 << 20, 1 << 20, 8, 1, out.data()),
                      Catch::Contains("max_image_pixels"));
    CHECK_THROWS_WITH(resize_plane(reinterpret_cast<const float*>(bytes.data()), 2, 2, 1 << 20, 1 << 20),
                      Catch::Contains("max_image_pixels"));
}

TEST_CASE("every truncation of a JPEG or BMP file, and of a PNG before its final CRC, is refused", "[reliability][images]") {
    TempDir dir;
    const Image image = random_image(12, 9, 3, 21);
    const std::string path = dir.file("cut");

    // PNG: stb does not read the CRC of the final IEND chunk, so a file missing only (part of)
    // those 4 bytes still decodes, to the whole image; every shorter cut is refused.
    save_png(dir.file("whole.png"), image);
    const std::vector<std::uint8_t> png = read_bytes(dir.file("whole.png"));
    REQUIRE(png.size() > 60);
    for (std::size_t length = 0; length < png.size(); ++length) {
        write_bytes(path, png, length);
        if (length + 4 >= png.size()) {
            CHECK(load_image(path).pixels == image.pixels);
        } else {
            CHECK_THROWS_AS(load_image(path), FormatError);
        }
    }

    const std::vector<std::uint8_t> jpeg = encode_jpeg(image);
    for (std::size_t length = 0; length < jpeg.size(); ++length) {
        write_bytes(path, jpeg, length);
        CHECK_THROWS_AS(load_image(path), FormatError);
    }

    REQUIRE(stbi_write_bmp(dir.file("whole.bmp").c_str(), image.width, image.height, 3, image.pixels.data()));
    const std::vector<std::uint8_t> bmp = read_bytes(dir.file("whole.bmp"));
    for (std::size_t length = 0; length < bmp.size(); ++length) {
        write_bytes(path, bmp, length);
        CHECK_THROWS_AS(load_image(path), FormatError);
    }
}

TEST_CASE("a JPEG declaring more pixels than the limits is refused before decoding", "[reliability][images]") {
    TempDir dir;
    std::vector<std::uint8_t> jpeg = encode_jpeg(random_image(8, 8, 3, 31));
    std::size_t sof = 0;
    while (sof + 1 < jpeg.size() && !(jpeg[sof] == 0xFF && jpeg[sof + 1] == 0xC0)) ++sof;
    REQUIRE(sof + 9 < jpeg.size());
    // SOF0: marker (2), length (2), precision (1), height (2), width (2), big-endian.
    auto put16 = [&](std::size_t at, int value) {
        jpeg[at] = static_cast<std::uint8_t>(value >> 8);
        jpeg[at + 1] = static_cast<std::uint8_t>(value & 0xFF);
    };
    put16(sof + 5, 20000);
    put16(sof + 7, 20000);
    write_bytes(dir.file("big.jpg"), jpeg, jpeg.size());
    CHECK_THROWS_WITH(load_image(dir.file("big.jpg")), Catch::Contains("20000 x 20000") && Catch::Contains("16384"));
    put16(sof + 5, 1);
    put16(sof + 7, 16385);
    write_bytes(dir.file("wide.jpg"), jpeg, jpeg.size());
    CHECK_THROWS_WITH(load_image(dir.file("wide.jpg")), Catch::Contains("16385 x 1"));
}

TEST_CASE("PNG chunks that promise more data than the file holds are refused before stb allocates", "[reliability][images][fuzz]") {
    // Found by tests/fuzz/fuzz_image_decode (out of memory): stb grew its buffer to an IDAT
    // chunk's declared length before reading it, so a 93-byte file declaring 1.2 GB made it
    // realloc 2 GB (tests/fuzz/corpus_image/idat_length_beyond_file_9x2.png).
    TempDir dir;
    const Image image = random_image(9, 2, 1, 33);
    save_png(dir.file("plain.png"), image);
    const std::vector<std::uint8_t> png = read_bytes(dir.file("plain.png"));
    const std::size_t iend = png.size() - 12;
    REQUIRE(std::equal(png.begin() + static_cast<std::ptrdiff_t>(iend + 4), png.begin() + static_cast<std::ptrdiff_t>(iend + 8), "IEND"));
    std::vector<std::uint8_t> long_chunk(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(iend));
    const std::uint8_t declared[8] = {0x4B, 0x00, 0x00, 0x00, 'I', 'D', 'A', 'T'};  // 1258291200 bytes
    long_chunk.insert(long_chunk.end(), declared, declared + 8);
    long_chunk.insert(long_chunk.end(), 14, 0x55);
    write_bytes(dir.file("long_chunk.png"), long_chunk, long_chunk.size());
    CHECK_THROWS_AS(load_image(dir.file("long_chunk.png")), FormatError);
    CHECK_THROWS_WITH(load_image(dir.file("long_chunk.png")),
                      Catch::Contains("truncated PNG") && Catch::Contains("'IDAT'") && Catch::Contains("declares 1258291200 bytes"));
    CHECK_THROWS_WITH(load_image(SKIPGANOMALY_SOURCE_DIR "/tests/fuzz/corpus_image/idat_length_beyond_file_9x2.png"),
                      Catch::Contains("declares 1258291200 bytes"));

    // A header declaring 16384 x 16384 RGBA at 16 bits (2 GiB of raw data, which stb would
    // allocate up front) over the few bytes of compressed data of a 9 x 2 image.
    std::vector<std::uint8_t> huge = png;
    auto put32 = [&](std::size_t at, std::uint32_t v) {
        for (int i = 0; i < 4; ++i) huge[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
    };
    put32(16, 16384);
    put32(20, 16384);
    huge[24] = 16;  // bit depth
    huge[25] = 6;   // colour type RGBA
    write_bytes(dir.file("huge.png"), huge, huge.size());
    CHECK_THROWS_WITH(load_image(dir.file("huge.png")),
                      Catch::Contains("cannot inflate") && Catch::Contains("2147483648 bytes") && Catch::Contains("16384 x 16384"));
    // The file as saved still loads.
    CHECK(load_image(dir.file("plain.png")).pixels == image.pixels);
}

TEST_CASE("a BMP with a negative compression field is refused before decoding", "[reliability][images][fuzz]") {
    // Found by tests/fuzz/fuzz_image_decode (a 23 s unit): stb 2.27 reads the compression field
    // as a signed int, refuses 1, 2 and 4 and above, and decodes anything negative as
    // uncompressed, from padding zeros: 42 bytes declaring 9732 x 9986 pixels.
    const std::string found = SKIPGANOMALY_SOURCE_DIR "/tests/fuzz/corpus_image/negative_compression_9732x9986.bmp";
    CHECK_THROWS_AS(load_image(found), FormatError);
    CHECK_THROWS_WITH(load_image(found), Catch::Contains("unsupported compression -16753920"));

    // The same field in a valid 4 x 3 BMP; with 0 restored it loads again.
    TempDir dir;
    const Image image = random_image(4, 3, 3, 34);
    REQUIRE(stbi_write_bmp(dir.file("plain.bmp").c_str(), 4, 3, 3, image.pixels.data()));
    std::vector<std::uint8_t> bmp = read_bytes(dir.file("plain.bmp"));
    REQUIRE(bmp[30] == 0);
    bmp[33] = 0x80;  // compression INT32_MIN
    write_bytes(dir.file("negative.bmp"), bmp, bmp.size());
    CHECK_THROWS_WITH(load_image(dir.file("negative.bmp")), Catch::Contains("unsupported compression"));
    bmp[33] = 0;
    write_bytes(dir.file("restored.bmp"), bmp, bmp.size());
    CHECK(load_image(dir.file("restored.bmp")).pixels == image.pixels);
}

TEST_CASE("a small JPEG declaring a large size within the limits is refused before decoding", "[reliability][images]") {
    // stb pads missing entropy data, so without the length check this file of a few hundred
    // bytes decodes into 16384 x 16384 x 3 bytes (measured before the fix: 12.9 s, 1.58 GB RSS).
    TempDir dir;
    const Image original = random_image(64, 48, 3, 32);
    std::vector<std::uint8_t> jpeg = encode_jpeg(original);
    std::size_t sof = 0;
    while (sof + 1 < jpeg.size() && !(jpeg[sof] == 0xFF && jpeg[sof + 1] == 0xC0)) ++sof;
    REQUIRE(sof + 9 < jpeg.size());
    REQUIRE(jpeg.size() * 8 < std::size_t{2048} * 2048);  // fewer bits than 8 x 8 blocks below
    auto put16 = [&](std::size_t at, int value) {
        jpeg[at] = static_cast<std::uint8_t>(value >> 8);
        jpeg[at + 1] = static_cast<std::uint8_t>(value & 0xFF);
    };
    put16(sof + 5, 16384);
    put16(sof + 7, 16384);
    write_bytes(dir.file("bomb.jpg"), jpeg, jpeg.size());
    CHECK_THROWS_AS(load_image(dir.file("bomb.jpg")), FormatError);
    CHECK_THROWS_WITH(load_image(dir.file("bomb.jpg")),
                      Catch::Contains("truncated JPEG") && Catch::Contains("16384 x 16384"));
    // The unmodified file, whose data covers its blocks, still loads at its own size.
    put16(sof + 5, 48);
    put16(sof + 7, 64);
    write_bytes(dir.file("original.jpg"), jpeg, jpeg.size());
    const Image loaded = load_image(dir.file("original.jpg"));
    CHECK(loaded.width == 64);
    CHECK(loaded.height == 48);
}
