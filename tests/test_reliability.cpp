// Hostile and malformed input that the other test files do not cover: image buffers with
// impossible sizes or formats, non-finite float input to Detector::score (FloatImageView), FIFOs in place
// of files, every truncation of an image file, JPEG headers beyond the size limits, IDX files
// declaring more than they hold; and hostile or careless surroundings for the files the library
// writes (planted links, read-only targets, long names, file-size limits, signals).
// docs/reliability.md maps each kind of input to the test that shows what happens.
#include <catch2/catch.hpp>

#include <grp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "model_file.hpp"
#include "safe_file.hpp"
#include "skipganomaly/datasets.hpp"
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

// ---- writing files: every writer goes through safe_file (src/safe_file.hpp) ----

namespace {

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    REQUIRE(out.good());
}

using sga::testing::names_in;
using sga::testing::temporaries_in;

// Runs `child` in a forked process and returns its wait status. The child leaves by _exit with
// what `child` returns, or 99 when it throws; it never returns into Catch.
template <typename F>
int in_child_process(F&& child) {
    std::cout.flush();
    std::cerr.flush();
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int code = 99;
        try {
            code = child();
        } catch (...) {
        }
        ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
}

std::uint64_t counting_suffix() {
    static std::atomic<std::uint64_t> next{1};
    return next++;
}

// Largest resident set so far, in bytes.
std::uint64_t peak_rss_bytes() {
    struct rusage usage {};
    ::getrusage(RUSAGE_SELF, &usage);
    return static_cast<std::uint64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace

TEST_CASE("temporaries get unpredictable names, created exclusively: a planted link is never followed", "[reliability][write]") {
    TempDir dir;
    TempDir elsewhere;
    const std::string victim = elsewhere.file("victim.txt");
    write_text(victim, "the victim's bytes");
    const fs::path folder = dir.path / "models";
    fs::create_directories(folder);
    const std::string target = (folder / "model.bin").string();

    // Links to the victim at every name a writer of this process has used or will try: the old
    // predictable "<dot>name.tmp-<pid>", and the names of the next 20 random suffixes, which the
    // test fixes (the writer then finds each taken and draws again). Plus a dangling link that
    // would create a file if it were followed.
    struct Restore {
        ~Restore() { safe_file::set_random_suffix_source_for_tests(nullptr); }
    } restore;
    safe_file::set_random_suffix_source_for_tests(counting_suffix);
    const std::uint64_t first = counting_suffix();  // the writer's draws start after this one
    std::vector<std::string> planted{".model.bin.tmp-" + std::to_string(::getpid())};
    for (std::uint64_t s = first + 1; s <= first + 20; ++s) planted.push_back(safe_file::temporary_name("model.bin", s));
    for (const std::string& name : planted) fs::create_symlink(victim, folder / name);
    const std::string dangling_target = elsewhere.file("created_through_a_link");
    fs::create_symlink(dangling_target, folder / safe_file::temporary_name("model.bin", first + 21));

    const std::string content(100000, 'n');
    safe_file::write_atomically(target, content.data(), content.size());
    CHECK(read_text(target) == content);
    CHECK(read_text(victim) == "the victim's bytes");
    CHECK_FALSE(fs::exists(dangling_target));
    for (const std::string& name : planted) CHECK(fs::is_symlink(folder / name));
    CHECK(names_in(folder).size() == planted.size() + 2);  // the links and the target: no temporary left

    // A replaced target stays safe too: the second write replaces the file, not the links.
    safe_file::write_atomically(target, "second", 6);
    CHECK(read_text(target) == "second");
    CHECK(read_text(victim) == "the victim's bytes");

    // With the system's random numbers: different names each time, of the documented form.
    safe_file::set_random_suffix_source_for_tests(nullptr);
    std::vector<std::string> seen;
    for (int i = 0; i < 4; ++i) {
        safe_file::AtomicFile file(target);
        seen.push_back(fs::path(file.temporary_path()).filename().string());
        CHECK(fs::is_regular_file(file.temporary_path()));
    }
    const std::regex form("\\.model\\.bin\\.tmp-[0-9a-f]{8}-" + std::to_string(::getpid()) + "-[0-9a-f]{16}");
    for (const std::string& name : seen) CHECK(std::regex_match(name, form));
    std::sort(seen.begin(), seen.end());
    CHECK(std::unique(seen.begin(), seen.end()) == seen.end());
    CHECK(temporaries_in(folder).size() == planted.size() + 1);  // the discarded writers removed theirs
}

TEST_CASE("concurrent writes to one target each leave a whole file", "[reliability][write]") {
    TempDir dir;
    const std::string target = dir.file("shared.bin");
    constexpr int writers = 4, rounds = 12;
    std::vector<std::string> contents;
    for (int w = 0; w < writers; ++w) {
        std::mt19937 rng(700 + static_cast<unsigned>(w));
        std::string bytes(256 * 1024 + 4096 * static_cast<std::size_t>(w), '\0');
        for (char& c : bytes) c = static_cast<char>(rng());
        contents.push_back(std::move(bytes));
    }
    std::atomic<bool> done{false};
    std::atomic<int> torn{0}, reads{0}, failures{0};
    std::thread reader([&] {
        while (!done) {
            const std::string now = read_text(target);
            if (now.empty()) continue;  // not written yet
            ++reads;
            if (std::find(contents.begin(), contents.end(), now) == contents.end()) ++torn;
        }
    });
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w)
        threads.emplace_back([&, w] {
            for (int r = 0; r < rounds; ++r) {
                try {
                    safe_file::write_atomically(target, contents[static_cast<std::size_t>(w)].data(),
                                                contents[static_cast<std::size_t>(w)].size());
                } catch (const IoError&) {
                    ++failures;
                }
            }
        });
    for (std::thread& t : threads) t.join();
    done = true;
    reader.join();
    INFO(reads.load() << " reads during the writes");
    CHECK(torn == 0);
    CHECK(failures == 0);
    CHECK(std::find(contents.begin(), contents.end(), read_text(target)) != contents.end());
    CHECK(temporaries_in(dir.path).empty());
}

TEST_CASE("a read-only target is refused, and a replaced file keeps its mode and owner", "[reliability][write]") {
    TempDir dir;
    const std::string target = dir.file("model.bin");

    // Modes are kept exactly, whatever the umask.
    for (const mode_t mode : {mode_t{0640}, mode_t{0600}, mode_t{0664}, mode_t{0755}}) {
        write_text(target, "old");
        REQUIRE(::chmod(target.c_str(), mode) == 0);
        safe_file::write_atomically(target, "new", 3);
        struct stat st {};
        REQUIRE(::stat(target.c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == mode);
        CHECK(read_text(target) == "new");
    }
    // A new file: 0666 less the umask, as any file the process creates.
    const mode_t mask = ::umask(027);
    safe_file::write_atomically(dir.file("fresh.bin"), "x", 1);
    ::umask(mask);
    struct stat fresh {};
    REQUIRE(::stat(dir.file("fresh.bin").c_str(), &fresh) == 0);
    CHECK((fresh.st_mode & 0777) == 0640);

    // Not a regular file: refused, left as it is.
    fs::create_directories(dir.path / "folder.bin");
    CHECK_THROWS_WITH(safe_file::write_atomically(dir.file("folder.bin"), "x", 1), Catch::Contains("is a folder"));
    REQUIRE(::mkfifo(dir.file("pipe.bin").c_str(), 0600) == 0);
    CHECK_THROWS_WITH(safe_file::write_atomically(dir.file("pipe.bin"), "x", 1), Catch::Contains("not a regular file"));
    CHECK(fs::is_fifo(dir.file("pipe.bin")));
    CHECK_THROWS_AS(safe_file::write_atomically(dir.file("missing/x.bin"), "x", 1), IoError);

    if (::geteuid() != 0) {
        // Permission bits bind this user: a read-only file is refused and left as it was.
        write_text(target, "read-only");
        REQUIRE(::chmod(target.c_str(), 0444) == 0);
        CHECK_THROWS_WITH(safe_file::write_atomically(target, "new", 3),
                          Catch::Contains("not writable by this user") && Catch::Contains("found mode 0444"));
        CHECK(read_text(target) == "read-only");
        CHECK(temporaries_in(dir.path).empty());
        return;
    }
    // As root, permission bits do not bind; an unprivileged user (nobody, 65534) in a child
    // process sees them. Root's own file and nobody's read-only file are refused to nobody;
    // nobody's writable file is replaced (so the child really could write in the folder).
    const uid_t nobody = 65534;
    REQUIRE(::chmod(dir.path.c_str(), 0777) == 0);
    write_text(dir.file("roots.bin"), "root's");
    REQUIRE(::chmod(dir.file("roots.bin").c_str(), 0644) == 0);
    write_text(dir.file("nobodys_read_only.bin"), "nobody's, read-only");
    REQUIRE(::chown(dir.file("nobodys_read_only.bin").c_str(), nobody, nobody) == 0);
    REQUIRE(::chmod(dir.file("nobodys_read_only.bin").c_str(), 0444) == 0);
    write_text(dir.file("nobodys.bin"), "nobody's");
    REQUIRE(::chown(dir.file("nobodys.bin").c_str(), nobody, nobody) == 0);
    REQUIRE(::chmod(dir.file("nobodys.bin").c_str(), 0600) == 0);
    struct stat before {};
    REQUIRE(::stat(dir.file("roots.bin").c_str(), &before) == 0);
    const int status = in_child_process([&] {
        if (::setgroups(0, nullptr) != 0 || ::setgid(nobody) != 0 || ::setuid(nobody) != 0) return 2;
        int refused = 0;
        for (const char* name : {"roots.bin", "nobodys_read_only.bin"}) {
            try {
                safe_file::write_atomically(dir.file(name), "replaced", 8);
            } catch (const IoError& e) {
                refused += std::string(e.what()).find("not writable by this user") != std::string::npos;
            }
        }
        safe_file::write_atomically(dir.file("nobodys.bin"), "replaced", 8);
        return refused == 2 ? 0 : 3;
    });
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(read_text(dir.file("roots.bin")) == "root's");
    CHECK(read_text(dir.file("nobodys_read_only.bin")) == "nobody's, read-only");
    CHECK(read_text(dir.file("nobodys.bin")) == "replaced");
    struct stat after {};
    REQUIRE(::stat(dir.file("roots.bin").c_str(), &after) == 0);
    CHECK(after.st_ino == before.st_ino);  // not replaced by another file
    CHECK(temporaries_in(dir.path).empty());

    // Root replacing nobody's file keeps its owner, group and mode.
    safe_file::write_atomically(dir.file("nobodys.bin"), "root wrote", 10);
    struct stat kept {};
    REQUIRE(::stat(dir.file("nobodys.bin").c_str(), &kept) == 0);
    CHECK(kept.st_uid == nobody);
    CHECK(kept.st_gid == nobody);
    CHECK((kept.st_mode & 07777) == 0600);
    // And save_png goes through the same writer.
    REQUIRE(::chmod(dir.file("nobodys.bin").c_str(), 0640) == 0);
    save_png(dir.file("nobodys.bin"), random_image(5, 4, 3, 40));
    REQUIRE(::stat(dir.file("nobodys.bin").c_str(), &kept) == 0);
    CHECK(kept.st_uid == nobody);
    CHECK((kept.st_mode & 07777) == 0640);
    CHECK(load_image(dir.file("nobodys.bin")).pixels == random_image(5, 4, 3, 40).pixels);
}

TEST_CASE("a symbolic link as target: the file it points to is replaced and the link stays", "[reliability][write]") {
    TempDir dir;
    fs::create_directories(dir.path / "real");
    const std::string real = dir.file("real/model.bin");
    write_text(real, "old");
    REQUIRE(::chmod(real.c_str(), 0640) == 0);
    fs::create_symlink("real/model.bin", dir.path / "link.bin");  // relative, to its own folder
    fs::create_symlink(dir.path / "link.bin", dir.path / "link_to_link.bin");

    safe_file::write_atomically(dir.file("link.bin"), "through the link", 16);
    CHECK(fs::is_symlink(dir.path / "link.bin"));
    CHECK(fs::read_symlink(dir.path / "link.bin") == "real/model.bin");
    CHECK(read_text(real) == "through the link");
    struct stat st {};
    REQUIRE(::stat(real.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0640);

    save_png(dir.file("link_to_link.bin"), random_image(3, 3, 1, 41));
    CHECK(fs::is_symlink(dir.path / "link_to_link.bin"));
    CHECK(fs::is_symlink(dir.path / "link.bin"));
    CHECK(load_image(real).pixels == random_image(3, 3, 1, 41).pixels);
    CHECK(temporaries_in(dir.path).empty());
    CHECK(temporaries_in(dir.path / "real").empty());

    // A dangling link: the file it names is created.
    fs::create_symlink("real/new.bin", dir.path / "dangling.bin");
    safe_file::write_atomically(dir.file("dangling.bin"), "created", 7);
    CHECK(read_text(dir.file("real/new.bin")) == "created");
    CHECK(fs::is_symlink(dir.path / "dangling.bin"));
    // A loop is refused.
    fs::create_symlink("loop_b", dir.path / "loop_a");
    fs::create_symlink("loop_a", dir.path / "loop_b");
    CHECK_THROWS_WITH(safe_file::write_atomically(dir.file("loop_a"), "x", 1), Catch::Contains("levels of symbolic links"));

    if (::geteuid() == 0) {
        // In a sticky world-writable folder (as /tmp), a link another user planted is not followed.
        fs::create_directories(dir.path / "sticky");
        REQUIRE(::chmod((dir.path / "sticky").c_str(), 01777) == 0);
        const std::string planted = dir.file("sticky/model.bin");
        fs::create_symlink(real, planted);
        REQUIRE(::lchown(planted.c_str(), 65534, 65534) == 0);
        CHECK_THROWS_WITH(safe_file::write_atomically(planted, "x", 1),
                          Catch::Contains("symbolic link owned by user 65534") && Catch::Contains("sticky"));
        CHECK(load_image(real).pixels == random_image(3, 3, 1, 41).pixels);
    }
}

TEST_CASE("a target name of 250 bytes or more gets a temporary name within NAME_MAX", "[reliability][write]") {
    TempDir dir;
    for (const std::size_t length : {std::size_t{200}, std::size_t{248}, std::size_t{250}, std::size_t{255}}) {
        const std::string name(length, 'm');
        const std::string target = dir.file(name);
        {
            safe_file::AtomicFile file(target);
            const std::string temporary = fs::path(file.temporary_path()).filename().string();
            CHECK(temporary.size() <= 255);
            CHECK(std::regex_search(temporary, std::regex("\\.tmp-[0-9a-f]{8}-[0-9]+-[0-9a-f]{16}$")));
            file.write("long", 4);
            file.commit();
        }
        CHECK(read_text(target) == "long");
    }
    // A name of multibyte UTF-8 characters is cut between characters, not inside one.
    std::string accents;
    for (int i = 0; i < 120; ++i) accents += "\xc3\xa9";  // U+00E9, 240 bytes
    safe_file::AtomicFile file(dir.file(accents));
    const std::string temporary = fs::path(file.temporary_path()).filename().string();
    CHECK(temporary.size() <= 255);
    const std::size_t cut = temporary.find(".tmp-");
    CHECK((cut - 1) % 2 == 0);  // the leading dot, then whole two-byte characters
    CHECK(sga::testing::message_of<IoError>([&] {
              safe_file::write_atomically(dir.file(std::string(256, 'x')), "x", 1);
          }).find("File name too long") != std::string::npos);
    CHECK(temporaries_in(dir.path).size() == 1);  // the writer still open above
}

TEST_CASE("a killed writer's temporary is removed by the next write of the target", "[reliability][write]") {
    TempDir dir;
    const std::string target = dir.file("model.bin");
    write_text(target, "before");

    // The probe's case: ulimit -f and SIGXFSZ at its default kill the writer in write(); its
    // temporary stays behind.
    const int killed = in_child_process([&] {
        struct rlimit no_core_file {};  // SIGXFSZ's default action dumps core
        ::setrlimit(RLIMIT_CORE, &no_core_file);
        std::signal(SIGXFSZ, SIG_DFL);
        struct rlimit limit {};
        ::getrlimit(RLIMIT_FSIZE, &limit);
        limit.rlim_cur = 4096;
        ::setrlimit(RLIMIT_FSIZE, &limit);
        const std::string big(65536, 'b');
        safe_file::write_atomically(target, big.data(), big.size());
        return 0;
    });
    REQUIRE(WIFSIGNALED(killed));
    CHECK(WTERMSIG(killed) == SIGXFSZ);
    const std::vector<std::string> first_stale = temporaries_in(dir.path);
    REQUIRE(first_stale.size() == 1);
    // Another writer of the target, killed after creating its temporary (SIGKILL: no handler
    // runs), has removed the first one's.
    const int also_killed = in_child_process([&] {
        safe_file::AtomicFile file(target);
        file.write("partial", 7);
        ::raise(SIGKILL);
        return 0;
    });
    REQUIRE(WIFSIGNALED(also_killed));
    const std::vector<std::string> stale = temporaries_in(dir.path);
    REQUIRE(stale.size() == 1);
    CHECK(stale != first_stale);
    CHECK(read_text(target) == "before");

    // Not stale: a live process's temporary (this one's, through a writer still open), a link
    // with a dead process's name, a file from another host (another tag), another target's.
    safe_file::AtomicFile live(target);
    const std::string live_name = fs::path(live.temporary_path()).filename().string();
    const std::string dead_name = stale.front();
    const std::string link_name = dead_name.substr(0, dead_name.size() - 16) + std::string(16, 'a');
    fs::create_symlink(target, dir.path / link_name);
    std::string other_host = dead_name;
    other_host.replace(other_host.find(".tmp-") + 5, 8, other_host.substr(other_host.find(".tmp-") + 5, 8) == "00000000" ? "11111111" : "00000000");
    write_text(dir.file(other_host), "another host");
    std::string other_target = dead_name;
    other_target.replace(1, 5, "other");  // ".model.bin..." -> ".other.bin..."
    write_text(dir.file(other_target), "another target");

    safe_file::write_atomically(target, "after", 5);
    CHECK(read_text(target) == "after");
    const std::vector<std::string> left = temporaries_in(dir.path);
    for (const std::string& name : stale) CHECK(std::find(left.begin(), left.end(), name) == left.end());
    for (const std::string& name : {live_name, link_name, other_host, other_target})
        CHECK(std::find(left.begin(), left.end(), name) != left.end());
    CHECK(fs::is_symlink(dir.path / link_name));

    // The same for a long name, whose temporaries carry a cut name.
    const std::string long_target = dir.file(std::string(250, 'L'));
    const int long_killed = in_child_process([&] {
        safe_file::AtomicFile file(long_target);
        ::raise(SIGKILL);
        return 0;
    });
    REQUIRE(WIFSIGNALED(long_killed));
    REQUIRE(temporaries_in(dir.path).size() == left.size() + 1);
    safe_file::write_atomically(long_target, "x", 1);
    CHECK(temporaries_in(dir.path).size() == left.size());
}

TEST_CASE("a write beyond RLIMIT_FSIZE is an IoError and leaves no temporary", "[reliability][write]") {
    TempDir dir;
    const std::string target = dir.file("model.bin");
    write_text(target, "before");
    const int status = in_child_process([&] {
        // What a program does once: SIGXFSZ (still at its default) becomes ignored, so write()
        // fails with EFBIG instead of the signal killing the process.
        safe_file::install_temporary_cleanup_on_signals();
        struct rlimit limit {};
        ::getrlimit(RLIMIT_FSIZE, &limit);
        limit.rlim_cur = 4096;
        ::setrlimit(RLIMIT_FSIZE, &limit);
        const std::string big(65536, 'b');
        try {
            safe_file::write_atomically(target, big.data(), big.size());
        } catch (const IoError& e) {
            const std::string message = e.what();
            return message.find("File too large") != std::string::npos &&
                           message.find("previous file, if any, is unchanged") != std::string::npos
                       ? 0
                       : 3;
        }
        return 4;
    });
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(read_text(target) == "before");
    CHECK(temporaries_in(dir.path).empty());
}

TEST_CASE("a fatal signal unlinks the temporaries of writers in flight", "[reliability][write]") {
    TempDir dir;
    const std::string target = dir.file("model.bin");
    write_text(target, "before");
    const int status = in_child_process([&] {
        std::signal(SIGTERM, SIG_DFL);  // as in a program: Catch's own handler is inherited here
        safe_file::install_temporary_cleanup_on_signals();
        safe_file::AtomicFile first(target);
        safe_file::AtomicFile second(dir.file("other.bin"));
        first.write("partial", 7);
        ::raise(SIGTERM);
        return 0;
    });
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGTERM);  // the handler let the signal end the process
    CHECK(temporaries_in(dir.path).empty());
    CHECK(read_text(target) == "before");

    // From a program's own handler: remove_registered_temporaries(); the writer then fails.
    safe_file::AtomicFile writer(target);
    writer.write("partial", 7);
    REQUIRE(temporaries_in(dir.path).size() == 1);
    safe_file::remove_registered_temporaries();
    CHECK(temporaries_in(dir.path).empty());
    CHECK_THROWS_AS(writer.commit(), IoError);
    CHECK(read_text(target) == "before");
}

// ---- IDX files: the declared size against what the file can hold ----

namespace {

std::vector<std::uint8_t> idx_header(std::initializer_list<std::uint32_t> words) {
    std::vector<std::uint8_t> out;
    for (const std::uint32_t w : words)
        for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(w >> shift));
    return out;
}

// A gzip member of stored (uncompressed) deflate blocks.
std::vector<std::uint8_t> gzip_stored(const std::vector<std::uint8_t>& data) {
    std::vector<std::uint8_t> out = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
    auto put = [&](std::uint32_t v, int bytes) {
        for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    };
    std::size_t offset = 0;
    do {
        const std::size_t length = std::min<std::size_t>(65535, data.size() - offset);
        out.push_back(offset + length == data.size() ? 1 : 0);
        put(static_cast<std::uint32_t>(length), 2);
        put(static_cast<std::uint32_t>(~length & 0xFFFF), 2);
        out.insert(out.end(), data.begin() + static_cast<std::ptrdiff_t>(offset),
                   data.begin() + static_cast<std::ptrdiff_t>(offset + length));
        offset += length;
    } while (offset < data.size());
    put(sga::model_file::crc32(reinterpret_cast<const char*>(data.data()), data.size()), 4);
    put(static_cast<std::uint32_t>(data.size()), 4);
    return out;
}

}  // namespace

TEST_CASE("an IDX file declaring more data than it holds is refused before allocating it", "[reliability][idx]") {
    // 1.3 million 28 x 28 images declared (1019200000 bytes, under the 2^30 limit), 10 present.
    TempDir dir;
    std::vector<std::uint8_t> file = idx_header({2051, 1300000, 28, 28});
    const Image pixels = random_image(28, 28 * 10, 1, 42);
    file.insert(file.end(), pixels.pixels.begin(), pixels.pixels.end());
    write_bytes(dir.file("images.idx"), file, file.size());
    write_bytes(dir.file("images.idx.gz"), gzip_stored(file), gzip_stored(file).size());
    std::vector<std::uint8_t> labels = idx_header({2049, 1300000});
    labels.insert(labels.end(), 10, 3);
    write_bytes(dir.file("labels.idx"), labels, labels.size());

    const std::uint64_t peak_before = peak_rss_bytes();
    CHECK_THROWS_WITH(read_idx_images(dir.file("images.idx")),
                      Catch::Contains("truncated: expected 1019200000 bytes") && Catch::Contains("found 7840"));
    CHECK_THROWS_WITH(read_idx_images(dir.file("images.idx.gz")),
                      Catch::Contains("declares 1019200000 bytes") && Catch::Contains("1032:1"));
    CHECK_THROWS_WITH(read_idx_labels(dir.file("labels.idx")),
                      Catch::Contains("truncated: expected 1300000 bytes") && Catch::Contains("found 10"));
    // A gzip file whose declared size its compressed size allows, cut short: refused having
    // allocated about what it held (16 MiB chunks at first).
    std::vector<std::uint8_t> plausible = idx_header({2051, 2000, 28, 28});
    plausible.insert(plausible.end(), pixels.pixels.begin(), pixels.pixels.end());
    write_bytes(dir.file("plausible.idx.gz"), gzip_stored(plausible), gzip_stored(plausible).size());
    CHECK_THROWS_WITH(read_idx_images(dir.file("plausible.idx.gz")),
                      Catch::Contains("truncated: expected 1568000 bytes") && Catch::Contains("found 7840"));
    const std::uint64_t growth = peak_rss_bytes() - peak_before;
    INFO("peak RSS grew by " << growth << " bytes");
    CHECK(growth < (std::uint64_t{64} << 20));  // not the 1 GB the header declares

    // A FIFO in place of an IDX file is refused without blocking.
    REQUIRE(::mkfifo(dir.file("fifo.idx").c_str(), 0600) == 0);
    CHECK_THROWS_WITH(read_idx_images(dir.file("fifo.idx")), Catch::Contains("not a regular file"));
}

// ---- What a missing path is called, and output paths checked before work ----

TEST_CASE("a symbolic link loop is named as one, not as a missing file, and a missing CIFAR-10 folder names the data set", "[reliability][io]") {
    TempDir dir;
    fs::create_symlink("loop_b", dir.path / "loop_a");
    fs::create_symlink("loop_a", dir.path / "loop_b");
    const std::string loop = dir.file("loop_a");
    using sga::testing::message_of;
    CHECK_THAT(message_of<IoError>([&] { Detector::load(loop, Device::Cpu); }),
               Catch::Contains("model file '" + loop + "' is a symbolic link loop"));
    CHECK_THAT(message_of<IoError>([&] { load_image(loop); }), Catch::Contains("is a symbolic link loop"));
    CHECK_THAT(message_of<IoError>([&] { load_image_folder(loop); }),
               Catch::Contains("'" + loop + "' is a symbolic link loop"));
    CHECK_THAT(message_of<IoError>([&] { load_image(dir.file("absent.png")); }), Catch::Contains("does not exist"));
    CHECK_THAT(message_of<IoError>([&] { Detector::load(dir.file("absent.safetensors"), Device::Cpu); }),
               Catch::EndsWith("does not exist"));

    const std::string message = message_of<IoError>([&] { cifar10_one_class(dir.file("cifar10"), 1); });
    CHECK_THAT(message, Catch::Contains("the CIFAR-10 data set is not in") && Catch::Contains("scripts/fetch-cifar10.sh") &&
                            Catch::Contains("data_batch_1.png' does not exist"));
}

TEST_CASE("check_writable refuses, before anything is written, what a write would refuse", "[reliability][write]") {
    TempDir dir;
    using sga::testing::message_of;
    CHECK_NOTHROW(safe_file::check_writable(dir.file("new.bin")));
    write_text(dir.file("old.bin"), "before");
    CHECK_NOTHROW(safe_file::check_writable(dir.file("old.bin")));
    CHECK_THAT(message_of<IoError>([&] { safe_file::check_writable(dir.file("missing/m.bin")); }),
               Catch::Contains("folder '" + dir.file("missing") + "' does not exist"));
    fs::create_directories(dir.path / "sub");
    CHECK_THAT(message_of<IoError>([&] { safe_file::check_writable(dir.file("sub")); }), Catch::Contains("it is a folder"));
    CHECK_THAT(message_of<IoError>([&] { safe_file::check_writable(dir.file("old.bin/m.bin")); }),
               Catch::Contains("is not a folder"));
    fs::create_symlink("loop_b", dir.path / "loop_a");
    fs::create_symlink("loop_a", dir.path / "loop_b");
    CHECK_THROWS_AS(safe_file::check_writable(dir.file("loop_a")), IoError);
    CHECK_THROWS_AS(safe_file::check_writable(""), InvalidArgument);
    // Read-only files and folders: as root, access() allows everything, so only as another user.
    if (::geteuid() != 0) {
        fs::permissions(dir.file("old.bin"), fs::perms::owner_read);
        CHECK_THAT(message_of<IoError>([&] { safe_file::check_writable(dir.file("old.bin")); }),
                   Catch::Contains("not writable by this user"));
        fs::permissions(dir.path / "sub", fs::perms::owner_read | fs::perms::owner_exec);
        CHECK_THAT(message_of<IoError>([&] { safe_file::check_writable(dir.file("sub/m.bin")); }),
                   Catch::Contains("is not writable by this user"));
        fs::permissions(dir.path / "sub", fs::perms::owner_all);
    }
    CHECK(fs::directory_iterator(dir.path / "sub") == fs::directory_iterator());  // nothing created
    CHECK(read_text(dir.file("old.bin")) == "before");
}

// ---- Resuming another run's checkpoint; tiny held-out sets ----

TEST_CASE("resuming refuses a checkpoint of other images or options, naming the difference", "[reliability][checkpoint]") {
    TempDir dir;
    const std::string checkpoint = dir.file("epoch1.safetensors");
    std::vector<Image> images, others;
    for (unsigned i = 0; i < 16; ++i) images.push_back(random_image(32, 32, 1, 300 + i));
    for (unsigned i = 0; i < 16; ++i) others.push_back(random_image(32, 32, 1, 400 + i));
    DetectorOptions first = tiny_detector_options();
    first.epochs = 1;
    first.checkpoint_every_epochs = 1;
    first.checkpoint_path = checkpoint;
    Detector(first).fit(images);
    REQUIRE(fs::exists(checkpoint));

    const auto refusal = [&](const std::vector<Image>& data, auto change) {
        DetectorOptions o = tiny_detector_options();
        o.resume_from = checkpoint;
        change(o);
        Detector d(o);
        return sga::testing::message_of<InvalidArgument>([&] { d.fit(data); });
    };
    const auto same = [](DetectorOptions&) {};
    CHECK_THAT(refusal(others, same), Catch::Contains("is a checkpoint of another run: training data: expected 16 images, sample hash ") &&
                                          Catch::Contains("(the checkpoint's), found 16 images, sample hash "));
    std::vector<Image> fewer(images.begin(), images.end() - 1);
    CHECK_THAT(refusal(fewer, same), Catch::Contains("training data: expected 16 images") && Catch::Contains("found 15 images"));
    std::vector<Image> reordered(images.rbegin(), images.rend());
    CHECK_THAT(refusal(reordered, same), Catch::Contains("training data: expected 16 images"));
    CHECK_THAT(refusal(images, [](DetectorOptions& o) { o.seed = 6; }),
               Catch::Contains("seed: expected 5 (the checkpoint's), found 6 (this fit's)"));
    CHECK_THAT(refusal(images, [](DetectorOptions& o) { o.validation_fraction = 0.25f; }),
               Catch::Contains("validation_fraction: expected 0.2"));
    CHECK_THAT(refusal(images, [](DetectorOptions& o) { o.adam.learning_rate = 1e-3f; }),
               Catch::Contains("learning_rate: expected 0.0002"));
    CHECK_THAT(refusal(images, [](DetectorOptions& o) { o.batch_size = 4; }),
               Catch::Contains("batch_size: expected 8 (the checkpoint's), found 4"));

    // The same run resumes; more epochs and another threshold quantile are not another run.
    DetectorOptions resumed = tiny_detector_options();
    resumed.resume_from = checkpoint;
    resumed.threshold_quantile = 0.95f;
    Detector d(resumed);
    const FitReport report = d.fit(images);
    CHECK(report.epochs_completed == 2);
    CHECK(report.epochs.size() == 1);
}

TEST_CASE("with few held-out images the orientation check is skipped and the threshold says it is an order statistic",
          "[reliability][orientation]") {
    // 10 images, 10% held out: one image. The check would be decided by its sign alone
    // (t = +-DBL_MAX), and the threshold would be its score.
    std::vector<Image> images;
    for (unsigned i = 0; i < 10; ++i) images.push_back(random_image(32, 32, 1, 500 + i));
    DetectorOptions o = tiny_detector_options();
    o.recipe = Recipe::robust_rotation();
    o.validation_fraction = 0.1f;
    o.batch_size = 4;
    Detector d(o);
    const FitReport report = d.fit(images);
    CHECK(report.validation_images == 1);
    CHECK_FALSE(report.orientation.checked);
    CHECK(report.decisions.empty());
    CHECK(d.options().recipe.name == "robust_rotation");  // kept, unchecked
    REQUIRE(report.warnings.size() == 2);
    CHECK_THAT(report.warnings[0], Catch::Contains("orientation check was skipped: 1 held-out image(s), it needs at least 8"));
    CHECK_THAT(report.warnings[1], Catch::Contains("quantile of only 1 held-out normal score(s)"));
    CHECK(std::isfinite(report.threshold));

    // A vanishing fraction still holds one image out, and says so.
    o.validation_fraction = 1e-30f;
    o.recipe = Recipe::official();
    const FitReport tiny = Detector(o).fit(images);
    CHECK(tiny.validation_images == 1);
    REQUIRE(tiny.warnings.size() == 1);
    CHECK_THAT(tiny.warnings[0], Catch::Contains("only 1 held-out normal score(s)"));

    OrientationCheck check;
    check.min_images = 1;
    CHECK_THROWS_AS(check.validate(), InvalidArgument);
    check.min_images = 8;
    CHECK_NOTHROW(check.validate());
}

TEST_CASE("a fit cancelled before its first epoch leaves the detector untrained, so save refuses it", "[reliability][checkpoint]") {
    std::vector<Image> images;
    for (unsigned i = 0; i < 16; ++i) images.push_back(random_image(32, 32, 1, 600 + i));
    TempDir dir;
    const std::string model = dir.file("good.safetensors");
    Detector good(tiny_detector_options());
    good.fit(images);
    good.save(model);
    const std::vector<std::uint8_t> before = read_bytes(model);

    std::atomic<bool> cancel{true};  // asked before the first batch ends
    FitCallbacks callbacks;
    callbacks.cancel = &cancel;
    Detector d(tiny_detector_options());
    const FitReport report = d.fit(images, callbacks);
    CHECK(report.cancelled);
    CHECK(report.epochs_completed == 0);
    CHECK_FALSE(d.is_trained());
    CHECK_THROWS_AS(d.save(model), InvalidArgument);
    CHECK(read_bytes(model) == before);
}
