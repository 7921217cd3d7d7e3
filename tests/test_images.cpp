// Image I/O, its error reporting, and pre-processing against Pillow (tests/fixtures/resize.json,
// written by tests/fixtures/make_image_fixtures.py).
#include <catch2/catch.hpp>

#include "test_support.hpp"

using sga::testing::message_of;
using sga::testing::random_image;

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"

// The test writes JPEG and BMP files with its own private copy of stb_image_write.
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

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A fresh folder under the system temp directory, removed with everything in it.
struct TempDir {
    fs::path path;
    TempDir() {
        std::random_device device;
        path = fs::temp_directory_path() / ("sga_test_images_" + std::to_string(device()));
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

json load_fixture(const std::string& name) {
    std::ifstream in(std::string(SKIPGANOMALY_FIXTURE_DIR) + "/" + name);
    REQUIRE(in.good());
    return json::parse(in);
}

sga::PixelFormat format_of(const std::string& mode) {
    if (mode == "L") return sga::PixelFormat::Gray;
    if (mode == "RGB") return sga::PixelFormat::Rgb;
    return sga::PixelFormat::Rgba;
}

float unit(int level) { return static_cast<float>(level) / 255.0f * 2.0f - 1.0f; }

// The error message of a call expected to throw E.
}  // namespace

TEST_CASE("save_png and load_image round-trip 1, 3 and 4 channels", "[images]") {
    TempDir dir;
    for (int channels : {1, 3, 4}) {
        const sga::Image image = random_image(13, 7, channels, 10u + channels);
        const std::string path = dir.file("round_trip_" + std::to_string(channels) + ".png");
        sga::save_png(path, image);
        const sga::Image loaded = sga::load_image(path);
        CHECK(loaded.width == 13);
        CHECK(loaded.height == 7);
        CHECK(loaded.channels == channels);
        CHECK(loaded.pixels == image.pixels);
        // Overwriting goes through the temporary file too.
        sga::save_png(path, random_image(13, 7, channels, 99));
        CHECK(sga::load_image(path).pixels != image.pixels);
    }
    // Only the three PNGs remain: no temporary files are left behind.
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 3);
}

TEST_CASE("load_image reads BMP, JPEG and grey+alpha PNG", "[images]") {
    TempDir dir;
    const sga::Image rgb = random_image(16, 8, 3, 3);
    REQUIRE(stbi_write_bmp(dir.file("a.bmp").c_str(), 16, 8, 3, rgb.pixels.data()));
    const sga::Image bmp = sga::load_image(dir.file("a.bmp"));
    CHECK(bmp.channels == 3);
    CHECK(bmp.pixels == rgb.pixels);

    // A smooth picture survives JPEG compression closely.
    sga::Image smooth;
    smooth.width = 32;
    smooth.height = 24;
    smooth.channels = 3;
    for (int y = 0; y < 24; ++y)
        for (int x = 0; x < 32; ++x)
            for (int c = 0; c < 3; ++c)
                smooth.pixels.push_back(static_cast<std::uint8_t>(40 + 4 * x + 3 * y + 20 * c));
    REQUIRE(stbi_write_jpg(dir.file("b.jpg").c_str(), 32, 24, 3, smooth.pixels.data(), 100));
    const sga::Image jpeg = sga::load_image(dir.file("b.jpg"));
    REQUIRE(jpeg.width == 32);
    REQUIRE(jpeg.height == 24);
    REQUIRE(jpeg.channels == 3);
    double error = 0;
    for (std::size_t i = 0; i < jpeg.pixels.size(); ++i)
        error += std::abs(int(jpeg.pixels[i]) - int(smooth.pixels[i]));
    CHECK(error / jpeg.pixels.size() < 3.0);

    const sga::Image grey_alpha = random_image(5, 4, 2, 4);
    REQUIRE(stbi_write_png(dir.file("c.png").c_str(), 5, 4, 2, grey_alpha.pixels.data(), 10));
    const sga::Image grey = sga::load_image(dir.file("c.png"));
    REQUIRE(grey.channels == 1);
    for (std::size_t i = 0; i < grey.pixels.size(); ++i) CHECK(grey.pixels[i] == grey_alpha.pixels[2 * i]);
}

TEST_CASE("load_image reports missing, unreadable and malformed files", "[images][errors]") {
    TempDir dir;
    CHECK_THROWS_AS(sga::load_image(dir.file("missing.png")), sga::IoError);
    CHECK_THROWS_AS(sga::load_image(dir.path.string()), sga::IoError);

    write_bytes(dir.file("empty.png"), {});
    CHECK_THROWS_AS(sga::load_image(dir.file("empty.png")), sga::FormatError);

    write_bytes(dir.file("text.png"), {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '\n'});
    const std::string not_image = message_of<sga::FormatError>([&] { sga::load_image(dir.file("text.png")); });
    CHECK_THAT(not_image, Catch::Contains("text.png") && Catch::Contains("not a readable"));

    // A PNG cut off in the middle of its data.
    sga::save_png(dir.file("whole.png"), random_image(64, 64, 3, 5));
    std::vector<std::uint8_t> png = read_bytes(dir.file("whole.png"));
    REQUIRE(png.size() > 200);
    write_bytes(dir.file("truncated.png"), std::vector<std::uint8_t>(png.begin(), png.begin() + png.size() / 2));
    const std::string truncated = message_of<sga::FormatError>([&] { sga::load_image(dir.file("truncated.png")); });
    CHECK_THAT(truncated, Catch::Contains("truncated PNG") && Catch::Contains("'IDAT'"));

    // stb would fill a cut-off BMP with zeros; the length its header implies is checked.
    const sga::Image bmp_source = random_image(16, 8, 3, 7);
    REQUIRE(stbi_write_bmp(dir.file("whole.bmp").c_str(), 16, 8, 3, bmp_source.pixels.data()));
    const std::vector<std::uint8_t> whole_bmp = read_bytes(dir.file("whole.bmp"));
    write_bytes(dir.file("truncated.bmp"),
                std::vector<std::uint8_t>(whole_bmp.begin(), whole_bmp.end() - 20));
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::load_image(dir.file("truncated.bmp")); }),
               Catch::Contains("truncated BMP"));

    // A decompression bomb: a tiny file whose header declares 20000 x 30000 pixels. The
    // bytes after the IHDR chunk are never decoded; the declared size is refused first.
    std::vector<std::uint8_t> bomb = png;
    auto put32 = [&](std::size_t at, std::uint32_t v) {
        for (int i = 0; i < 4; ++i) bomb[at + i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
    };
    put32(16, 20000);  // IHDR width
    put32(20, 30000);  // IHDR height
    write_bytes(dir.file("bomb.png"), bomb);
    const std::string bomb_message = message_of<sga::FormatError>([&] { sga::load_image(dir.file("bomb.png")); });
    CHECK_THAT(bomb_message, Catch::Contains("20000 x 30000") && Catch::Contains("16384"));
    put32(16, 16385);
    put32(20, 1);
    write_bytes(dir.file("wide.png"), bomb);
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::load_image(dir.file("wide.png")); }),
               Catch::Contains("16385 x 1"));

    // The same for a BMP header (width at byte 18, little-endian).
    const sga::Image small = random_image(4, 4, 3, 6);
    REQUIRE(stbi_write_bmp(dir.file("small.bmp").c_str(), 4, 4, 3, small.pixels.data()));
    std::vector<std::uint8_t> bmp = read_bytes(dir.file("small.bmp"));
    bmp[18] = 0xA0;  // 100000 = 0x186A0
    bmp[19] = 0x86;
    bmp[20] = 0x01;
    write_bytes(dir.file("bomb.bmp"), bmp);
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::load_image(dir.file("bomb.bmp")); }),
               Catch::Contains("100000 x 4"));
}

TEST_CASE("decode_image and encode_png work in memory as load_image and save_png do on files", "[images]") {
    TempDir dir;
    for (int channels : {1, 3, 4}) {
        const sga::Image image = random_image(19, 11, channels, 40u + channels);
        const std::vector<std::uint8_t> png = sga::encode_png(image);
        const std::string path = dir.file("same_" + std::to_string(channels) + ".png");
        sga::save_png(path, image);
        CHECK(png == read_bytes(path));
        const sga::Image decoded = sga::decode_image(png);
        CHECK(decoded.width == 19);
        CHECK(decoded.height == 11);
        CHECK(decoded.channels == channels);
        CHECK(decoded.pixels == image.pixels);
    }
    const sga::Image rgb = random_image(16, 8, 3, 41);
    REQUIRE(stbi_write_bmp(dir.file("a.bmp").c_str(), 16, 8, 3, rgb.pixels.data()));
    CHECK(sga::decode_image(read_bytes(dir.file("a.bmp"))).pixels == rgb.pixels);
}

TEST_CASE("decode_image refuses empty, foreign, cut-off and oversized bytes, naming the image", "[images][errors]") {
    CHECK_THAT(message_of<sga::FormatError>([] { sga::decode_image({}, "request body"); }),
               Catch::Contains("'request body'") && Catch::Contains("empty"));
    const std::vector<std::uint8_t> text{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '\n'};
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::decode_image(text, "upload 3"); }),
               Catch::Contains("upload 3") && Catch::Contains("not a readable"));
    std::vector<std::uint8_t> png = sga::encode_png(random_image(64, 64, 3, 42));
    const std::vector<std::uint8_t> cut(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(png.size() / 2));
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::decode_image(cut); }), Catch::Contains("truncated PNG"));
    for (int i = 0; i < 4; ++i) png[16 + i] = static_cast<std::uint8_t>(20000u >> (24 - 8 * i));  // IHDR width
    CHECK_THAT(message_of<sga::FormatError>([&] { sga::decode_image(png); }), Catch::Contains("20000 x 64"));
}

TEST_CASE("save_png rejects bad images and unwritable paths", "[images][errors]") {
    TempDir dir;
    sga::Image image = random_image(4, 4, 3, 1);
    CHECK_THROWS_AS(sga::save_png(dir.file("no_such_folder/x.png"), image), sga::IoError);
    sga::Image wrong_channels = image;
    wrong_channels.channels = 2;
    CHECK_THROWS_AS(sga::save_png(dir.file("x.png"), wrong_channels), sga::InvalidArgument);
    sga::Image short_pixels = image;
    short_pixels.pixels.pop_back();
    CHECK_THROWS_AS(sga::save_png(dir.file("x.png"), short_pixels), sga::InvalidArgument);
    sga::Image empty;
    CHECK_THROWS_AS(sga::save_png(dir.file("x.png"), empty), sga::InvalidArgument);
    CHECK_THROWS_AS(empty.view(), sga::InvalidArgument);
    CHECK_FALSE(fs::exists(dir.file("x.png")));
}

TEST_CASE("preprocess rejects bad views and sizes", "[images][errors]") {
    const sga::Image image = random_image(6, 5, 3, 2);
    std::vector<float> out(3 * 8 * 8);
    const sga::ImageView good = image.view();
    REQUIRE_NOTHROW(sga::preprocess(good, 8, 3, out.data()));

    sga::ImageView bad = good;
    bad.data = nullptr;
    CHECK_THROWS_AS(sga::preprocess(bad, 8, 3, out.data()), sga::InvalidArgument);
    bad = good;
    bad.width = 0;
    CHECK_THROWS_AS(sga::preprocess(bad, 8, 3, out.data()), sga::InvalidArgument);
    bad = good;
    bad.height = -3;
    CHECK_THROWS_AS(sga::preprocess(bad, 8, 3, out.data()), sga::InvalidArgument);
    bad = good;
    bad.row_stride_bytes = 6 * 3 - 1;
    CHECK_THROWS_AS(sga::preprocess(bad, 8, 3, out.data()), sga::InvalidArgument);
    bad = good;
    bad.format = sga::PixelFormat::Rgba;  // rows of 24 bytes do not fit an 18-byte stride
    CHECK_THROWS_AS(sga::preprocess(bad, 8, 3, out.data()), sga::InvalidArgument);
    // Sizes whose byte count overflows are refused before anything is read.
    bad = good;
    bad.width = INT_MAX;
    bad.height = INT_MAX;
    bad.row_stride_bytes = static_cast<std::ptrdiff_t>(INT_MAX) * 4;
    CHECK_THROWS_AS(sga::preprocess(bad, 8, 3, out.data()), sga::InvalidArgument);

    CHECK_THROWS_AS(sga::preprocess(good, 0, 3, out.data()), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::preprocess(good, 8, 2, out.data()), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::preprocess(good, 8, 3, nullptr), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::preprocess(good, INT_MAX, 3, out.data()), sga::InvalidArgument);
}

TEST_CASE("preprocess matches Pillow's convert and BILINEAR resize bit for bit", "[images][pil]") {
    const json fixture = load_fixture("resize.json");
    REQUIRE(fixture["uint8"].size() >= 10);
    for (const json& c : fixture["uint8"]) {
        const std::string name = c["name"];
        INFO("case " << name);
        const int height = c["height"], width = c["width"], size = c["size"];
        const sga::PixelFormat format = format_of(c["source_mode"]);
        const int channels = c["target_mode"] == "L" ? 1 : 3;
        const std::vector<std::uint8_t> input = c["input"].get<std::vector<std::uint8_t>>();
        const std::vector<int> expected = c["output"].get<std::vector<int>>();
        REQUIRE(expected.size() == static_cast<std::size_t>(size) * size * channels);

        // Also through a padded stride, with garbage in the padding.
        const int row = width * sga::bytes_per_pixel(format);
        std::vector<std::uint8_t> padded(static_cast<std::size_t>(row + 7) * height, 0xAB);
        for (int y = 0; y < height; ++y)
            std::copy_n(input.begin() + y * row, row, padded.begin() + y * (row + 7));
        for (const auto& [data, stride] : {std::pair{input.data(), row}, std::pair{static_cast<const std::uint8_t*>(padded.data()), row + 7}}) {
            const sga::ImageView view{data, width, height, stride, format};
            std::vector<float> out(static_cast<std::size_t>(size) * size * channels);
            sga::preprocess(view, size, channels, out.data());
            int mismatches = 0;
            for (int ch = 0; ch < channels; ++ch)
                for (int i = 0; i < size * size; ++i) {
                    const int level = expected[static_cast<std::size_t>(i) * channels + ch];
                    const float got = out[static_cast<std::size_t>(ch) * size * size + i];
                    if (got != unit(level) && mismatches++ < 5)
                        UNSCOPED_INFO("channel " << ch << " pixel " << i << ": expected level " << level
                                                 << " (" << unit(level) << "), got " << got);
                }
            CHECK(mismatches == 0);
        }
    }
}

TEST_CASE("preprocess scales like ToTensor + Normalize(0.5, 0.5)", "[images]") {
    // A single row stretched to 4 rows keeps its values: levels 0 and 255 map to -1 and 1.
    std::vector<std::uint8_t> levels = {0, 255, 128, 1};
    const sga::ImageView view{levels.data(), 4, 1, 4, sga::PixelFormat::Gray};
    std::vector<float> out(16);
    sga::preprocess(view, 4, 1, out.data());
    for (int y = 0; y < 4; ++y) {
        CHECK(out[y * 4 + 0] == -1.0f);
        CHECK(out[y * 4 + 1] == 1.0f);
        CHECK(out[y * 4 + 2] == (128.0f / 255.0f - 0.5f) / 0.5f);
        CHECK(out[y * 4 + 3] == (1.0f / 255.0f - 0.5f) / 0.5f);
    }
}

TEST_CASE("preprocess gives one tensor for Gray, RGB, BGR, RGBA and BGRA of the same content", "[images]") {
    const int width = 11, height = 9;
    std::mt19937 rng(17);
    std::vector<std::uint8_t> grey(width * height), grey_rgb, grey_bgr, grey_rgba;
    std::vector<std::uint8_t> rgb(width * height * 3), bgr, rgba, bgra;
    for (auto& v : grey) v = static_cast<std::uint8_t>(rng());
    for (auto& v : rgb) v = static_cast<std::uint8_t>(rng());
    for (int i = 0; i < width * height; ++i) {
        const std::uint8_t alpha = static_cast<std::uint8_t>(rng());
        for (int c = 0; c < 3; ++c) grey_rgb.push_back(grey[i]);
        for (int c = 0; c < 3; ++c) grey_bgr.push_back(grey[i]);
        for (int c = 0; c < 3; ++c) grey_rgba.push_back(grey[i]);
        grey_rgba.push_back(alpha);
        for (int c = 2; c >= 0; --c) bgr.push_back(rgb[i * 3 + c]);
        for (int c = 0; c < 3; ++c) rgba.push_back(rgb[i * 3 + c]);
        rgba.push_back(alpha);
        for (int c = 2; c >= 0; --c) bgra.push_back(rgb[i * 3 + c]);
        bgra.push_back(static_cast<std::uint8_t>(255 - alpha));
    }
    for (int size : {5, 11, 16}) {
        for (int channels : {1, 3}) {
            INFO("size " << size << ", channels " << channels);
            auto run = [&](const std::vector<std::uint8_t>& data, sga::PixelFormat format) {
                std::vector<float> out(static_cast<std::size_t>(size) * size * channels);
                const sga::ImageView view{data.data(), width, height,
                                          width * sga::bytes_per_pixel(format), format};
                sga::preprocess(view, size, channels, out.data());
                return out;
            };
            const std::vector<float> from_grey = run(grey, sga::PixelFormat::Gray);
            CHECK(run(grey_rgb, sga::PixelFormat::Rgb) == from_grey);
            CHECK(run(grey_bgr, sga::PixelFormat::Bgr) == from_grey);
            CHECK(run(grey_rgba, sga::PixelFormat::Rgba) == from_grey);
            const std::vector<float> from_rgb = run(rgb, sga::PixelFormat::Rgb);
            CHECK(run(bgr, sga::PixelFormat::Bgr) == from_rgb);
            CHECK(run(rgba, sga::PixelFormat::Rgba) == from_rgb);
            CHECK(run(bgra, sga::PixelFormat::Bgra) == from_rgb);
            if (channels == 3) {  // grey replicated into three identical planes
                const std::size_t plane = static_cast<std::size_t>(size) * size;
                CHECK(std::equal(from_grey.begin(), from_grey.begin() + plane, from_grey.begin() + plane));
                CHECK(std::equal(from_grey.begin(), from_grey.begin() + plane, from_grey.begin() + 2 * plane));
            }
        }
    }
}

TEST_CASE("preprocess_float_chw agrees with the 8-bit path", "[images]") {
    const int width = 13, height = 10;
    std::mt19937 rng(23);
    std::vector<std::uint8_t> rgb(width * height * 3);
    for (auto& v : rgb) v = static_cast<std::uint8_t>(rng());
    const std::size_t plane = static_cast<std::size_t>(width) * height;
    std::vector<float> chw(3 * plane);
    for (std::size_t i = 0; i < plane; ++i)
        for (int c = 0; c < 3; ++c) chw[c * plane + i] = unit(rgb[i * 3 + c]);
    const sga::ImageView view{rgb.data(), width, height, width * 3, sga::PixelFormat::Rgb};

    // Same size, same channels: nothing is resampled or rounded, so the tensors are identical.
    {
        std::vector<std::uint8_t> square(static_cast<std::size_t>(width) * width * 3);
        std::vector<float> square_chw(static_cast<std::size_t>(width) * width * 3);
        for (std::size_t i = 0; i < square.size(); ++i) square[i] = static_cast<std::uint8_t>(rng());
        const std::size_t square_plane = static_cast<std::size_t>(width) * width;
        for (std::size_t i = 0; i < square_plane; ++i)
            for (int c = 0; c < 3; ++c) square_chw[c * square_plane + i] = unit(square[i * 3 + c]);
        std::vector<float> a(3 * square_plane), b(3 * square_plane);
        sga::preprocess(sga::ImageView{square.data(), width, width, width * 3, sga::PixelFormat::Rgb}, width, 3,
                        a.data());
        sga::preprocess_float_chw(square_chw.data(), 3, width, width, width, 3, b.data());
        CHECK(a == b);
    }

    // Resizing (and luma) round to 8 bits in the 8-bit path only: at most 1.5 levels apart,
    // plus a hair for the 22-bit fixed-point weights.
    const float tolerance = 1.5f * 2.0f / 255.0f + 1e-4f;
    for (int size : {4, 7, 20}) {
        for (int channels : {1, 3}) {
            INFO("size " << size << ", channels " << channels);
            std::vector<float> a(static_cast<std::size_t>(size) * size * channels), b(a.size());
            sga::preprocess(view, size, channels, a.data());
            sga::preprocess_float_chw(chw.data(), 3, height, width, size, channels, b.data());
            float worst = 0;
            for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
            CHECK(worst <= tolerance);
        }
    }
}

TEST_CASE("resize_plane and preprocess_float_chw match Pillow's mode F resize", "[images][pil]") {
    const json fixture = load_fixture("resize.json");
    REQUIRE(fixture["float"].size() >= 3);
    for (const json& c : fixture["float"]) {
        const std::string name = c["name"];
        INFO("case " << name);
        const int height = c["height"], width = c["width"], size = c["size"];
        const std::vector<float> input = c["input"].get<std::vector<float>>();
        const std::vector<float> expected = c["output"].get<std::vector<float>>();
        const std::vector<float> resized = sga::resize_plane(input.data(), height, width, size, size);
        std::vector<float> chw(static_cast<std::size_t>(size) * size);
        sga::preprocess_float_chw(input.data(), 1, height, width, size, 1, chw.data());
        REQUIRE(resized.size() == expected.size());
        float worst = 0;
        for (std::size_t i = 0; i < expected.size(); ++i) {
            worst = std::max(worst, std::fabs(resized[i] - expected[i]));
            REQUIRE(chw[i] == resized[i]);
        }
        // Same double arithmetic as Pillow; allow a float rounding of the stored intermediate.
        CHECK(worst <= 1e-6f);
    }
}

TEST_CASE("preprocess_float_chw and resize_plane reject bad input", "[images][errors]") {
    std::vector<float> chw(3 * 4 * 4, 0.25f), out(3 * 8 * 8);
    REQUIRE_NOTHROW(sga::preprocess_float_chw(chw.data(), 3, 4, 4, 8, 3, out.data()));
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
        std::vector<float> poisoned = chw;
        poisoned[37] = bad;
        CHECK_THROWS_AS(sga::preprocess_float_chw(poisoned.data(), 3, 4, 4, 8, 3, out.data()),
                        sga::InvalidArgument);
        CHECK_THROWS_AS(sga::resize_plane(poisoned.data() + 32, 4, 4, 2, 2), sga::InvalidArgument);
    }
    CHECK_THROWS_AS(sga::preprocess_float_chw(nullptr, 3, 4, 4, 8, 3, out.data()), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::preprocess_float_chw(chw.data(), 2, 4, 4, 8, 3, out.data()), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::preprocess_float_chw(chw.data(), 3, 0, 4, 8, 3, out.data()), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::preprocess_float_chw(chw.data(), 3, 4, 4, -8, 3, out.data()), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::preprocess_float_chw(chw.data(), 3, 4, 4, 8, 3, nullptr), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::resize_plane(nullptr, 4, 4, 2, 2), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::resize_plane(chw.data(), 4, 4, 0, 2), sga::InvalidArgument);
}

TEST_CASE("resize_plane keeps constants and is the identity at the same size", "[images]") {
    std::vector<float> constant(6 * 9, 0.375f);
    for (auto [h, w] : {std::pair{3, 4}, std::pair{12, 18}, std::pair{1, 1}, std::pair{25, 7}}) {
        const std::vector<float> out = sga::resize_plane(constant.data(), 6, 9, h, w);
        REQUIRE(out.size() == static_cast<std::size_t>(h) * w);
        for (float v : out) CHECK(v == Approx(0.375f).margin(1e-6));
    }
    std::vector<float> ramp(6 * 9);
    for (std::size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<float>(i) * 0.1f;
    CHECK(sga::resize_plane(ramp.data(), 6, 9, 6, 9) == ramp);
}

TEST_CASE("anomaly_overlay blends a jet colour map over the image", "[images]") {
    const sga::Image grey = random_image(8, 6, 1, 8);
    std::vector<float> map(8 * 6, 0.0f);
    for (int x = 4; x < 8; ++x)
        for (int y = 0; y < 6; ++y) map[y * 8 + x] = 1.0f;
    const sga::Image overlay = sga::anomaly_overlay(grey.view(), map, 0.0f, 1.0f);
    REQUIRE(overlay.width == 8);
    REQUIRE(overlay.height == 6);
    REQUIRE(overlay.channels == 3);
    for (int y = 0; y < 6; ++y) {
        const std::uint8_t g_low = grey.pixels[y * 8 + 0];
        const std::uint8_t* low = &overlay.pixels[(y * 8 + 0) * 3];   // t = 0: dark blue (0, 0, 0.5)
        CHECK(int(low[0]) == std::lround(0.5f * g_low));
        CHECK(int(low[2]) == std::lround(0.5f * g_low + 0.5f * 127.5f));
        const std::uint8_t g_high = grey.pixels[y * 8 + 7];
        const std::uint8_t* high = &overlay.pixels[(y * 8 + 7) * 3];  // t = 1: dark red (0.5, 0, 0)
        CHECK(int(high[0]) == std::lround(0.5f * g_high + 0.5f * 127.5f));
        CHECK(int(high[2]) == std::lround(0.5f * g_high));
    }
    const sga::Image colour = random_image(8, 6, 4, 9);
    CHECK_NOTHROW(sga::anomaly_overlay(colour.view(), map, -1.0f, 2.0f));
    CHECK_THROWS_AS(sga::anomaly_overlay(grey.view(), std::vector<float>(47), 0.0f, 1.0f), sga::InvalidArgument);
    CHECK_THROWS_AS(sga::anomaly_overlay(grey.view(), map, 1.0f, 1.0f), sga::InvalidArgument);
    map[3] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(sga::anomaly_overlay(grey.view(), map, 0.0f, 1.0f), sga::InvalidArgument);
}

// Found by tests/fuzz/fuzz_image_decode. stb_image 2.27 (Debian 12's libstb-dev) does not check
// that a Huffman table declares at most 256 codes and writes past stbi__huffman::size[257] and
// ::values[256] before failing; cmake/SkipganomalyStb.cmake adds the check. Without it a normal
// build still sees a FormatError, so this test guards the fix only under
// scripts/run-sanitizers.sh asan (UBSan: "index 257 out of bounds").
TEST_CASE("a JPEG Huffman table with more than 256 codes is refused", "[images][errors][fuzz]") {
    TempDir dir;
    std::vector<std::uint8_t> jpeg;
    const sga::Image flat = random_image(8, 8, 3, 11);
    REQUIRE(stbi_write_jpg_to_func(
        [](void* context, void* data, int size) {
            auto* out = static_cast<std::vector<std::uint8_t>*>(context);
            out->insert(out->end(), static_cast<std::uint8_t*>(data), static_cast<std::uint8_t*>(data) + size);
        },
        &jpeg, 8, 8, 3, flat.pixels.data(), 90));
    std::size_t dht = 0;
    while (dht + 1 < jpeg.size() && !(jpeg[dht] == 0xFF && jpeg[dht + 1] == 0xC4)) ++dht;
    REQUIRE(dht + 21 < jpeg.size());
    // Marker (2 bytes), length (2), table class and id (1), then 16 code counts: declare 255
    // more 16-bit codes, 267 or more in all.
    jpeg[dht + 5 + 15] = 255;
    write_bytes(dir.file("huffman.jpg"), jpeg);
    CHECK_THROWS_AS(sga::load_image(dir.file("huffman.jpg")), sga::FormatError);
}

// Found by tests/fuzz/fuzz_image_decode. An empty IDAT chunk is legal PNG; when it comes first,
// stb 2.27 calls memcpy(NULL, source, 0), undefined behaviour that UBSan reports (harmless with
// glibc; cmake/SkipganomalyStb.cmake skips the empty copy). The image must still load.
TEST_CASE("a PNG whose first IDAT chunk is empty loads", "[images][fuzz]") {
    TempDir dir;
    const sga::Image image = random_image(5, 3, 1, 12);
    sga::save_png(dir.file("plain.png"), image);
    std::vector<std::uint8_t> png = read_bytes(dir.file("plain.png"));
    // Signature (8 bytes) and IHDR (25 bytes), then a zero-length IDAT with its CRC-32.
    REQUIRE(std::equal(png.begin() + 37, png.begin() + 41, "IDAT"));
    const std::uint8_t empty_idat[12] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
    png.insert(png.begin() + 33, empty_idat, empty_idat + 12);
    write_bytes(dir.file("empty_idat.png"), png);
    const sga::Image loaded = sga::load_image(dir.file("empty_idat.png"));
    CHECK(loaded.width == 5);
    CHECK(loaded.height == 3);
    CHECK(loaded.pixels == image.pixels);
}

// Found while writing the fuzz seed corpus: stbi_info of stb 2.27 reports a top-down BMP's
// height as stored, negative, and load_image refused it as "an empty size of 2 x -2".
TEST_CASE("a top-down BMP (negative height) loads with its first row on top", "[images]") {
    TempDir dir;
    const sga::Image image = random_image(3, 2, 3, 13);
    REQUIRE(stbi_write_bmp(dir.file("bottom_up.bmp").c_str(), 3, 2, 3, image.pixels.data()));
    std::vector<std::uint8_t> bmp = read_bytes(dir.file("bottom_up.bmp"));
    const std::size_t data_offset = bmp[10] | (bmp[11] << 8);
    const std::size_t row_bytes = 12;  // 3 pixels of 3 bytes, padded to 4
    REQUIRE(bmp.size() == data_offset + 2 * row_bytes);
    // Stored rows swap places and the height becomes -2: the same picture, top row first.
    std::swap_ranges(bmp.begin() + static_cast<std::ptrdiff_t>(data_offset),
                     bmp.begin() + static_cast<std::ptrdiff_t>(data_offset + row_bytes),
                     bmp.begin() + static_cast<std::ptrdiff_t>(data_offset + row_bytes));
    const std::int32_t height = -2;
    for (int i = 0; i < 4; ++i) bmp[22 + i] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(height) >> (8 * i));
    write_bytes(dir.file("top_down.bmp"), bmp);
    const sga::Image loaded = sga::load_image(dir.file("top_down.bmp"));
    CHECK(loaded.width == 3);
    CHECK(loaded.height == 2);
    CHECK(loaded.channels == 3);
    CHECK(loaded.pixels == image.pixels);
}

// Found by tests/fuzz/fuzz_image_decode (minimised): corrupt Huffman codes run past a marker
// that stops stb 2.27 refilling its bit buffer; its readers then drove the bit counter negative
// and stbi__grow_buffer_unsafe shifted a 32-bit value by 33 (UBSan: "shift exponent 33 is too
// large"). A scan also uses a Huffman table no DHT defined, which stb read from uninitialised
// memory (valgrind), so the result changed with the optimisation level. With the fixes of
// cmake/SkipganomalyStb.cmake the missing bits read as zeros and the table as empty: the file
// decodes, the same way in every build, to an 8 x 8 picture of the (garbage) data it holds.
TEST_CASE("a JPEG whose Huffman codes overrun the bit buffer decodes deterministically", "[images][errors][fuzz]") {
    static const std::uint8_t jpeg[] = {
        0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 0x08, 0x00, 0x08, 0x03, 0x01, 0x22, 0x00, 0x02,
        0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xC4, 0x01, 0xA2, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
        0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05,
        0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7D, 0x01, 0x02, 0x03, 0x00, 0x11, 0x05, 0x06, 0x04, 0x21,
        0x12, 0x31, 0x41, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23,
        0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x16, 0x17,
        0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A,
        0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A,
        0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0xFF, 0xFF, 0xFF, 0xFF, 0x78, 0x79, 0x7A,
        0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7,
        0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5,
        0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1,
        0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0x11, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
        0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x11, 0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07,
        0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77, 0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31,
        0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1,
        0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x4E, 0x53, 0x74, 0x36, 0x6C,
        0x6F, 0x63, 0x61, 0x6C, 0x65, 0x35, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39,
        0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
        0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79,
        0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5,
        0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3,
        0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA,
        0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00,
        0x02, 0x11, 0x03, 0x11, 0x00, 0x3F, 0x00, 0x83, 0xE4, 0xFF, 0x00, 0x74, 0xFF, 0xD9,
    };
    TempDir dir;
    write_bytes(dir.file("overrun.jpg"), std::vector<std::uint8_t>(std::begin(jpeg), std::end(jpeg)));
    const sga::Image first = sga::load_image(dir.file("overrun.jpg"));
    CHECK(first.width == 8);
    CHECK(first.height == 8);
    CHECK(first.channels == 3);
    CHECK(sga::load_image(dir.file("overrun.jpg")).pixels == first.pixels);
}
