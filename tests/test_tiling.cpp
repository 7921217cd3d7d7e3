// Tiling (tiling.hpp): the windows cover every pixel and never leave the image, tile views
// point at the right pixels without copying, random training tiles stay inside, and stitched
// maps average the tiles exactly where they overlap.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include "skipganomaly/tiling.hpp"
#include "test_support.hpp"

using namespace sga;

TEST_CASE("tile windows cover every pixel once or more and stay inside the image", "[tiling]") {
    std::mt19937 rng(5);
    for (int trial = 0; trial < 200; ++trial) {
        const int width = 1 + static_cast<int>(rng() % 400), height = 1 + static_cast<int>(rng() % 400);
        const int tile = 8 + static_cast<int>(rng() % 200);
        const int stride = static_cast<int>(rng() % (tile + 1));  // 0: tile / 2
        const Tiling tiling{tile, stride};
        REQUIRE_NOTHROW(tiling.validate());
        const std::vector<TileWindow> windows = tile_windows(width, height, tiling);
        std::vector<int> covered(static_cast<std::size_t>(width * height), 0);
        for (const TileWindow& w : windows) {
            REQUIRE(w.x >= 0);
            REQUIRE(w.y >= 0);
            REQUIRE(w.x + w.width <= width);
            REQUIRE(w.y + w.height <= height);
            REQUIRE(w.width == std::min(tile, width));
            REQUIRE(w.height == std::min(tile, height));
            for (int y = w.y; y < w.y + w.height; ++y)
                for (int x = w.x; x < w.x + w.width; ++x) ++covered[static_cast<std::size_t>(y * width + x)];
        }
        CHECK(std::count(covered.begin(), covered.end(), 0) == 0);
    }
    // 1024 x 1024 in tiles of 128, 64 apart: 15 x 15 windows, the last flush with the edge.
    const std::vector<TileWindow> w = tile_windows(1024, 1024, {128, 64});
    CHECK(w.size() == 15u * 15u);
    CHECK(w.back().x == 1024 - 128);
    CHECK(w.back().y == 1024 - 128);
    // A stride that does not divide: 0, 48, 96, 144 and the last at 172 for 300 pixels.
    const std::vector<std::pair<int, int>> spans = tile_spans(300, 128, 48);
    REQUIRE(spans.size() == 5);
    CHECK(spans[3].first == 144);
    CHECK(spans[4].first == 300 - 128);
}

TEST_CASE("a tile view points at the window's pixels, and random tiles stay inside and repeat with the seed",
          "[tiling]") {
    const Image image = sga::testing::random_image(97, 61, 3, 12);
    const ImageView view = image.view();
    const TileWindow w{30, 17, 40, 25};
    const ImageView tile = tile_view(view, w);
    REQUIRE(tile.width == 40);
    REQUIRE(tile.height == 25);
    for (int y = 0; y < tile.height; ++y)
        for (int x = 0; x < tile.width; ++x)
            for (int c = 0; c < 3; ++c)
                REQUIRE(tile.data[y * tile.row_stride_bytes + x * 3 + c] ==
                        image.pixels[static_cast<std::size_t>(((w.y + y) * image.width + w.x + x) * 3 + c)]);
    CHECK_THROWS_AS(tile_view(view, {60, 0, 40, 10}), InvalidArgument);

    RandomStream a(3), b(3);
    for (int i = 0; i < 100; ++i) {
        const TileWindow r = random_tile(97, 61, 32, a);
        const TileWindow s = random_tile(97, 61, 32, b);
        REQUIRE(r.x == s.x);
        REQUIRE(r.y == s.y);
        REQUIRE(r.x + r.width <= 97);
        REQUIRE(r.y + r.height <= 61);
        REQUIRE(r.width == 32);
    }
    const TileWindow small = random_tile(20, 61, 32, a);  // narrower than a tile: the whole width
    CHECK(small.x == 0);
    CHECK(small.width == 20);
}

TEST_CASE("stitched maps are the mean of the tiles covering each pixel", "[tiling]") {
    // Each tile's map is a function of the image position plus the tile's own offset k: the
    // stitched value is f(x, y) + the mean of k over the tiles covering (x, y).
    const int width = 150, height = 90, size = 32;
    const std::vector<TileWindow> windows = tile_windows(width, height, {size, 20});
    MapStitcher stitcher(width, height);
    std::vector<double> offset_sum(static_cast<std::size_t>(width * height), 0.0);
    std::vector<int> count(offset_sum.size(), 0);
    for (std::size_t k = 0; k < windows.size(); ++k) {
        const TileWindow& w = windows[k];
        std::vector<float> map(static_cast<std::size_t>(size * size));
        for (int y = 0; y < size; ++y)
            for (int x = 0; x < size; ++x)
                map[static_cast<std::size_t>(y * size + x)] = static_cast<float>((w.x + x) + 0.5 * (w.y + y) + 0.25 * k);
        stitcher.add(map.data(), size, w);
        for (int y = w.y; y < w.y + w.height; ++y)
            for (int x = w.x; x < w.x + w.width; ++x) {
                offset_sum[static_cast<std::size_t>(y * width + x)] += 0.25 * static_cast<double>(k);
                ++count[static_cast<std::size_t>(y * width + x)];
            }
    }
    const std::vector<float> stitched = stitcher.finish();
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x) {
            const std::size_t at = static_cast<std::size_t>(y * width + x);
            REQUIRE(stitched[at] == Approx(x + 0.5 * y + offset_sum[at] / count[at]).epsilon(1e-5));
        }

    // A tile smaller or larger than the network's input is resized to its window: a constant
    // map stays constant.
    MapStitcher resized(100, 100);
    for (const TileWindow& w : tile_windows(100, 100, {48, 0})) {
        const std::vector<float> constant(size * size, 0.75f);
        resized.add(constant.data(), size, w);
    }
    for (float v : resized.finish()) REQUIRE(v == Approx(0.75f));

    MapStitcher uncovered(10, 10);
    CHECK_THROWS_AS(uncovered.finish(), InvalidArgument);
}

TEST_CASE("tiling settings are checked", "[tiling][errors]") {
    CHECK_NOTHROW(Tiling{}.validate());
    CHECK_NOTHROW((Tiling{128, 64}.validate()));
    CHECK_THROWS_AS((Tiling{4, 0}.validate()), InvalidArgument);
    CHECK_THROWS_AS((Tiling{128, 129}.validate()), InvalidArgument);
    CHECK_THROWS_AS((Tiling{128, -1}.validate()), InvalidArgument);
    CHECK_THROWS_AS((Tiling{0, 16}.validate()), InvalidArgument);
    CHECK_THROWS_AS(tile_windows(10, 10, Tiling{}), InvalidArgument);
}

// ---- a Detector with tiling ------------------------------------------------------------

#include <filesystem>

#include "skipganomaly/detector.hpp"

namespace {

sga::DetectorOptions tiled_options() {
    sga::DetectorOptions o = sga::testing::tiny_detector_options();
    o.recipe = sga::Recipe::inspection();
    o.recipe.anomaly_map.smoothing_sigma = 2.0f;
    o.tiling = {32, 16};
    return o;
}

// Trained once: random 72 x 48 grey images, larger than the network's 32 x 32 input.
const sga::Detector& tiled_detector() {
    static const sga::Detector detector = [] {
        std::vector<sga::Image> images;
        for (unsigned i = 0; i < 40; ++i) images.push_back(sga::testing::random_image(72, 48, 1, 500 + i));
        sga::Detector d(tiled_options());
        d.fit(images);
        return d;
    }();
    return detector;
}

}  // namespace

TEST_CASE("a tiled detector stitches its tiles' maps at the image's resolution and scores their maximum",
          "[tiling][detector]") {
    const sga::Detector& d = tiled_detector();
    REQUIRE(d.is_trained());
    REQUIRE(d.pixel_statistics().count > 0);
    sga::ScoreOptions with_mask;
    with_mask.anomaly_mask = true;
    // Any size: the map comes back at the image's own resolution.
    for (const auto& [width, height] : {std::pair{72, 48}, std::pair{100, 33}, std::pair{20, 90}}) {
        const sga::Image image = sga::testing::random_image(width, height, 1, 77);
        const sga::ScoreResult r = d.score(image.view(), with_mask);
        REQUIRE(r.map_width == width);
        REQUIRE(r.map_height == height);
        REQUIRE(r.anomaly_map.size() == static_cast<std::size_t>(width * height));
        REQUIRE(r.anomaly_mask.size() == r.anomaly_map.size());
        CHECK(r.score == *std::max_element(r.anomaly_map.begin(), r.anomaly_map.end()));
        CHECK(d.score(image.view()).score == r.score);  // the map's maximum, asked for or not
    }

    // A 48 x 32 image is two tiles, at x = 0 and x = 16; each tile scored as an image of its
    // own is one window. The stitched map is the first tile's where only it lies, the mean of
    // both where they overlap, the second's beyond.
    const sga::Image image = sga::testing::random_image(48, 32, 1, 78);
    sga::ScoreOptions with_map;
    with_map.anomaly_map = true;
    const sga::ScoreResult whole = d.score(image.view(), with_map);
    sga::Image left{32, 32, 1, {}}, right{32, 32, 1, {}};
    for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) {
            left.pixels.push_back(image.pixels[static_cast<std::size_t>(y * 48 + x)]);
            right.pixels.push_back(image.pixels[static_cast<std::size_t>(y * 48 + 16 + x)]);
        }
    const std::vector<float> a = d.score(left.view(), with_map).anomaly_map, b = d.score(right.view(), with_map).anomaly_map;
    for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 48; ++x) {
            const float expected = x < 16   ? a[static_cast<std::size_t>(y * 32 + x)]
                                   : x < 32 ? (a[static_cast<std::size_t>(y * 32 + x)] + b[static_cast<std::size_t>(y * 32 + x - 16)]) / 2
                                            : b[static_cast<std::size_t>(y * 32 + x - 16)];
            INFO("x " << x << " y " << y);
            REQUIRE(whole.anomaly_map[static_cast<std::size_t>(y * 48 + x)] == Approx(expected).epsilon(1e-5).margin(1e-6));
        }
}

TEST_CASE("a tiled detector round-trips through a file, calibrates tile by tile, and refuses what tiling cannot do",
          "[tiling][detector][errors]") {
    const sga::Detector& d = tiled_detector();
    const std::filesystem::path path = std::filesystem::temp_directory_path() / "sga_test_tiled.safetensors";
    d.save(path.string());
    sga::Detector loaded = sga::Detector::load(path.string(), sga::Device::Cpu);
    std::filesystem::remove(path);
    CHECK(loaded.options().tiling.tile == 32);
    CHECK(loaded.options().tiling.stride == 16);
    for (unsigned i = 0; i < 3; ++i) {
        const sga::Image probe = sga::testing::random_image(64, 64, 1, 900 + i);
        CHECK(loaded.score(probe.view()).score == d.score(probe.view()).score);
    }

    // calibrate: the statistics of normal images as score() scores them, tile by tile.
    std::vector<sga::Image> normal;
    std::vector<sga::ImageView> views;
    for (unsigned i = 0; i < 12; ++i) normal.push_back(sga::testing::random_image(72, 48, 1, 600 + i));
    for (const sga::Image& im : normal) views.push_back(im.view());
    const sga::CalibrationResult c = loaded.calibrate(views);
    CHECK(c.normal_images == 12);
    CHECK(loaded.validation_statistics().count == 12);
    CHECK(loaded.pixel_statistics().count == 12u * 72u * 48u);  // every pixel of the stitched maps
    std::vector<float> scores;
    for (const sga::ScoreResult& r : loaded.score(views)) scores.push_back(r.score);
    CHECK(loaded.validation_statistics().max == Approx(*std::max_element(scores.begin(), scores.end())));

    sga::ScoreOptions reconstruction;
    reconstruction.reconstruction = true;
    CHECK_THROWS_AS(d.score(normal[0].view(), reconstruction), sga::InvalidArgument);
    const std::vector<float> chw(32 * 32, 0.25f);
    CHECK_THROWS_AS(d.score(sga::FloatImageView{chw.data(), 32, 32, 1}), sga::InvalidArgument);
    sga::DetectorOptions rotation = tiled_options();
    rotation.recipe = sga::Recipe::robust_rotation();
    CHECK_THROWS_WITH(sga::Detector(rotation), Catch::Contains("tiling needs a recipe without rotation prediction"));
    sga::DetectorOptions bad = tiled_options();
    bad.tiling.stride = 40;
    CHECK_THROWS_AS(sga::Detector(bad), sga::InvalidArgument);
}
