// The model file under damage: every truncation, every flipped bit, forged headers, shapes
// that disagree with the architecture. Each must be a FormatError/IoError, never a crash.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <sys/resource.h>
#include <unistd.h>

#include "model_file.hpp"
#include "safe_file.hpp"
#include "skipganomaly/detector.hpp"
#include "test_support.hpp"

namespace {

using namespace sga;
namespace fs = std::filesystem;

Architecture tiny_architecture() {
    Architecture a;
    a.image_size = 32;
    a.channels = 1;
    a.generator_features = 2;
    a.discriminator_features = 2;
    a.latent_size = 4;
    return a;
}

struct Saved {
    fs::path dir;
    std::string path;
    std::vector<char> bytes;
    std::vector<float> generator_values;

    Saved() {
        dir = fs::temp_directory_path() / ("sga_model_file_" + std::to_string(std::random_device{}()));
        fs::create_directories(dir);
        path = (dir / "tiny.safetensors").string();
        Context ctx(Device::Cpu);
        SkipGanomaly model(tiny_architecture(), {}, {});
        model.materialize(ctx);
        RandomStream random(17);
        model.initialize(ctx, random);
        model.generator.training_passes = 12;
        model_file::save(path, model, {{"note", "test"}}, nullptr);
        generator_values = Tensor::host_values(model.generator.parameters.values());
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    ~Saved() {
        std::error_code ignored;
        fs::remove_all(dir, ignored);
    }
};

const Saved& saved() {
    static const Saved s;
    return s;
}

std::uint64_t header_size(const std::vector<char>& bytes) {
    std::uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)])) << (8 * i);
    return n;
}

// Rewrites the JSON header with `edit` and re-seals the checksum, as a forger would.
std::vector<char> forge(const std::vector<char>& bytes, const std::function<void(nlohmann::json&)>& edit) {
    const std::uint64_t n = header_size(bytes);
    nlohmann::json header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    edit(header);
    header["__metadata__"]["checksum"] = "crc32:00000000";
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<char> out(8 + text.size());
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((text.size() >> (8 * i)) & 0xFF);
    std::memcpy(out.data() + 8, text.data(), text.size());
    out.insert(out.end(), bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n), bytes.end());
    const std::size_t at = std::string_view(out.data(), out.size()).find("crc32:") + 6;
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", model_file::crc32(out.data(), out.size()));
    std::memcpy(out.data() + at, hex, 8);
    return out;
}

// A model file taken apart into its metadata and its tensors (header records and bytes), in
// data order, to be put together again byte by byte with one defect at a time.
struct Part {
    std::string name;
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::vector<char> bytes;
    int alias_of = -1;                 // >= 0: declares that part's offsets, holds no bytes of its own
    std::uint64_t gap_before = 0;      // zero bytes no tensor declares, before this one's data
    std::uint64_t sparse_bytes = 0;    // declared but not written: the caller extends the file
};
struct Parts {
    nlohmann::ordered_json metadata;
    std::vector<Part> tensors;
    std::vector<char> trailing;        // after the last tensor's data
    std::size_t header_extra = 0;      // spaces after the 8-byte padding (breaks the alignment)
};

Parts take_apart(const std::vector<char>& bytes) {
    const std::uint64_t n = header_size(bytes);
    const nlohmann::ordered_json header =
        nlohmann::ordered_json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    Parts parts;
    parts.metadata = header["__metadata__"];
    const char* data = bytes.data() + 8 + n;
    for (auto it = header.begin(); it != header.end(); ++it) {
        if (it.key() == "__metadata__") continue;
        const std::uint64_t begin = (*it)["data_offsets"][0], end = (*it)["data_offsets"][1];
        parts.tensors.push_back({it.key(), (*it)["dtype"], (*it)["shape"].get<std::vector<std::int64_t>>(),
                                 std::vector<char>(data + begin, data + end)});
    }
    return parts;
}

// The 8-byte length, the JSON header written entry by entry (so that a name can appear twice),
// the padding, the data; then the checksum sealed as save() seals it.
std::vector<char> assemble(const Parts& parts) {
    std::string text = "{\"__metadata__\":" + parts.metadata.dump();
    std::vector<char> data;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> offsets;
    std::uint64_t end = 0;
    for (const Part& p : parts.tensors) {
        std::pair<std::uint64_t, std::uint64_t> range;
        if (p.alias_of >= 0) {
            range = offsets[static_cast<std::size_t>(p.alias_of)];
        } else {
            end += p.gap_before;
            data.resize(data.size() + p.gap_before, 0);
            range = {end, end + p.bytes.size() + p.sparse_bytes};
            data.insert(data.end(), p.bytes.begin(), p.bytes.end());
            end = range.second;
        }
        offsets.push_back(range);
        text.append(",").append(nlohmann::json(p.name).dump()).append(":{\"dtype\":\"").append(p.dtype);
        text.append("\",\"shape\":").append(nlohmann::json(p.shape).dump()).append(",\"data_offsets\":[");
        text.append(std::to_string(range.first)).append(",").append(std::to_string(range.second)).append("]}");
    }
    text.append("}");
    text.append((8 - text.size() % 8) % 8 + parts.header_extra, ' ');
    std::vector<char> out;
    out.reserve(8 + text.size() + data.size() + parts.trailing.size());
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xFF));
    out.insert(out.end(), text.begin(), text.end());
    out.insert(out.end(), data.begin(), data.end());
    out.insert(out.end(), parts.trailing.begin(), parts.trailing.end());
    const std::size_t at = std::string_view(out.data(), out.size()).find("crc32:") + 6;
    std::memset(out.data() + at, '0', 8);
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", model_file::crc32(out.data(), out.size()));
    std::memcpy(out.data() + at, hex, 8);
    return out;
}

std::vector<char> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::vector<char>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
}

// Largest resident set so far, in bytes.
std::uint64_t peak_rss_bytes() {
    struct rusage usage {};
    ::getrusage(RUSAGE_SELF, &usage);
    return static_cast<std::uint64_t>(usage.ru_maxrss) * 1024;
}

void load_into_fresh(const model_file::Reader& reader) {
    Context ctx(Device::Cpu);
    SkipGanomaly model(reader.architecture(), {}, {});
    model.materialize(ctx);
    reader.load_into(model);
}

}  // namespace

TEST_CASE("a saved model reads back exactly", "[model_file]") {
    const model_file::Reader reader = model_file::Reader::from_bytes(saved().bytes, "tiny");
    Context ctx(Device::Cpu);
    SkipGanomaly model(reader.architecture(), {}, {});
    model.materialize(ctx);
    reader.load_into(model);
    CHECK(Tensor::host_values(model.generator.parameters.values()) == saved().generator_values);
    CHECK(model.generator.training_passes == 12);
    CHECK(reader.metadata()["note"] == "test");
    CHECK(reader.metadata()["format"] == "skipganomaly");
    // safetensors layout: the data area starts 8-byte aligned.
    CHECK(header_size(saved().bytes) % 8 == 0);
}

TEST_CASE("every truncation of a model file is refused", "[model_file][reliability]") {
    const std::vector<char>& bytes = saved().bytes;
    std::size_t refused = 0;
    for (std::size_t length = 0; length < bytes.size(); ++length) {
        try {
            model_file::Reader::from_bytes(std::vector<char>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length)), "cut");
        } catch (const FormatError&) {
            ++refused;
        }
    }
    CHECK(refused == bytes.size());
}

TEST_CASE("a flipped bit anywhere in a model file is refused", "[model_file][reliability]") {
    std::vector<char> bytes = saved().bytes;
    std::size_t refused = 0;
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        const char original = bytes[i];
        bytes[i] = static_cast<char>(original ^ (1 << (i % 8)));
        try {
            const model_file::Reader reader = model_file::Reader::from_bytes(bytes, "flipped");
            load_into_fresh(reader);
        } catch (const FormatError&) {
            ++refused;
        }
        bytes[i] = original;
    }
    CHECK(refused == bytes.size());
}

TEST_CASE("forged or foreign headers name what was expected and what was found", "[model_file][reliability]") {
    const std::vector<char>& bytes = saved().bytes;
    auto message_of = [](const std::vector<char>& b) -> std::string {
        try {
            load_into_fresh(model_file::Reader::from_bytes(b, "forged"));
        } catch (const FormatError& e) {
            return e.what();
        }
        return "no error";
    };
    CHECK_THAT(message_of(forge(bytes, [](nlohmann::json& h) { h["__metadata__"]["format"] = "other"; })),
               Catch::Contains("expected format 'skipganomaly'") && Catch::Contains("other"));
    CHECK_THAT(message_of(forge(bytes, [](nlohmann::json& h) { h["__metadata__"]["format_version"] = "2"; })),
               Catch::Contains("expected format version 1") && Catch::Contains("2"));
    CHECK_THAT(message_of(forge(bytes, [](nlohmann::json& h) {
                   h["__metadata__"]["architecture"] = R"({"image_size":32,"channels":1,"generator_features":4,"discriminator_features":2,"latent_size":4})";
               })),
               Catch::Contains("expected F32"));
    CHECK_THAT(message_of(forge(bytes, [](nlohmann::json& h) {
                   h["__metadata__"]["architecture"] = R"({"image_size":48,"channels":1,"generator_features":2,"discriminator_features":2,"latent_size":4})";
               })),
               Catch::Contains("power of two"));
    CHECK_THAT(message_of(forge(bytes, [](nlohmann::json& h) {
                   auto& t = h["netg.model.model.0.weight"];
                   t["shape"] = {4, 1, 2, 4};  // same byte count, wrong shape
               })),
               Catch::Contains("netg.model.model.0.weight") && Catch::Contains("expected F32 or F16 (2, 1, 4, 4)"));
    // A tensor left out with its data, one added with its own.
    Parts missing = take_apart(bytes);
    missing.tensors.erase(std::find_if(missing.tensors.begin(), missing.tensors.end(),
                                       [](const Part& p) { return p.name == "netd.clas.classifier.weight"; }));
    CHECK_THAT(message_of(assemble(missing)), Catch::Contains("expected tensor 'netd.clas.classifier.weight', found none"));
    Parts extra = take_apart(bytes);
    extra.tensors.push_back({"netd.extra", "F32", {1}, std::vector<char>(4, 0)});
    CHECK_THAT(message_of(assemble(extra)), Catch::Contains("unexpected tensor 'netd.extra'"));
    // A shape whose element count wraps to 0 in 64 bits is no empty tensor: the reader refuses it.
    Parts wrapping = take_apart(bytes);
    wrapping.tensors.push_back({"netd.wrapping", "F32", {std::int64_t{1} << 32, std::int64_t{1} << 32}, {}});
    CHECK_THROWS_WITH(model_file::Reader::from_bytes(assemble(wrapping), "wrapping"),
                      Catch::Contains("netd.wrapping") && Catch::Contains("absurd element count"));
    CHECK_THAT(message_of(forge(bytes, [](nlohmann::json& h) {
                   h["netd.clas.classifier.weight"]["data_offsets"] = {0, 1u << 30};
               })),
               Catch::Contains("outside"));
    CHECK_THAT(message_of(forge(bytes, [](nlohmann::json& h) { h["netd.clas.classifier.weight"]["dtype"] = "BF16"; })),
               Catch::Contains("expected dtype F32, F16 or I64, found BF16"));
}

TEST_CASE("a forged architecture is refused before the model is allocated", "[model_file][reliability]") {
    // A Detector file whose architecture claims validate()'s maxima: building that model would
    // ask for about 81 GB. The tensor shapes are checked against the declared architecture
    // first, so the load fails with a FormatError and allocates no tensor memory.
    DetectorOptions o;
    o.architecture = tiny_architecture();
    o.epochs = 1;
    o.batch_size = 4;
    o.validation_fraction = 0.25f;
    o.device = Device::Cpu;
    // Noise has no upright: the orientation check would drop the rotation head that the forged
    // header below keeps claiming.
    o.recipe.orientation_check.enabled = false;
    std::vector<Image> images;
    for (unsigned i = 0; i < 8; ++i) images.push_back(sga::testing::random_image(32, 32, 1, 5 + i));
    Detector detector(o);
    detector.fit(images);
    const std::string path = (saved().dir / "detector.safetensors").string();
    detector.save(path);
    std::ifstream in(path, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::vector<char> forged = forge(bytes, [](nlohmann::json& h) {
        h["__metadata__"]["architecture"] =
            R"({"image_size":1024,"channels":3,"generator_features":1024,"discriminator_features":1024,"latent_size":4096,"rotation_head":true})";
    });
    const std::string forged_path = (saved().dir / "forged_architecture.safetensors").string();
    std::ofstream(forged_path, std::ios::binary).write(forged.data(), static_cast<std::streamsize>(forged.size()));

    const std::uint64_t allocations_before = allocation_count();
    const std::string message = sga::testing::message_of<FormatError>([&] { Detector::load(forged_path, Device::Cpu); });
    CHECK(allocation_count() == allocations_before);
    CHECK_THAT(message, Catch::Contains("forged_architecture.safetensors") && Catch::Contains("unexpected tensor") &&
                            Catch::Contains("\"generator_features\":1024"));
    // The untouched file still loads.
    CHECK_NOTHROW(Detector::load(path, Device::Cpu));
}

TEST_CASE("absurd header sizes, empty and missing files are refused before any large allocation", "[model_file][reliability]") {
    std::vector<char> bytes = saved().bytes;
    for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = i == 5 ? 1 : 0;  // 2^40
    CHECK_THROWS_WITH(model_file::Reader::from_bytes(bytes, "huge"), Catch::Contains("declares a 1099511627776-byte header"));
    CHECK_THROWS_WITH(model_file::Reader::from_bytes({}, "empty"), Catch::Contains("expected at least 8"));
    CHECK_THROWS_AS(model_file::Reader::open((saved().dir / "missing.safetensors").string()), IoError);
    CHECK_THROWS_AS(model_file::Reader::open(saved().dir.string()), IoError);
    const std::string empty = (saved().dir / "empty.safetensors").string();
    std::ofstream(empty).close();
    CHECK_THROWS_AS(Detector::load(empty, Device::Cpu), FormatError);
}

TEST_CASE("a save that fails part-way leaves the previous file intact", "[model_file][reliability]") {
    const fs::path dir = saved().dir / "atomic";
    fs::create_directories(dir);
    const std::string target = (dir / "model.safetensors").string();
    { std::ofstream(target, std::ios::binary).write(saved().bytes.data(), static_cast<std::streamsize>(saved().bytes.size())); }
    Context ctx(Device::Cpu);
    SkipGanomaly other(tiny_architecture(), {}, {});
    other.materialize(ctx);  // all zeros: different bytes from the file on disk
    auto unchanged = [&] {
        std::ifstream in(target, std::ios::binary);
        const std::vector<char> now((std::istreambuf_iterator<char>(in)), {});
        return now == saved().bytes;
    };
    auto no_leftovers = [&] {
        int entries = 0;
        for (const auto& e : fs::directory_iterator(dir)) entries += e.path().filename() != "model.safetensors";
        return entries == 0;
    };

    SECTION("the disk fills up in the middle of the data") {
        // RLIMIT_FSIZE makes write() fail with EFBIG after 4 kB, as a full disk would.
        struct rlimit previous {};
        REQUIRE(getrlimit(RLIMIT_FSIZE, &previous) == 0);
        const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
        struct rlimit small = previous;
        small.rlim_cur = 4096;
        REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
        CHECK_THROWS_WITH(model_file::save(target, other, {}, nullptr), Catch::Contains("previous file"));
        setrlimit(RLIMIT_FSIZE, &previous);
        std::signal(SIGXFSZ, old_handler);
        CHECK(unchanged());
        CHECK(no_leftovers());
    }
    SECTION("the temporary file cannot be created") {
        // Every name the writer tries is taken (the test fixes its random numbers).
        safe_file::set_random_suffix_source_for_tests([]() -> std::uint64_t { return 42; });
        const fs::path blocker = dir / safe_file::temporary_name("model.safetensors", 42);
        fs::create_directories(blocker);
        CHECK_THROWS_WITH(model_file::save(target, other, {}, nullptr), Catch::Contains("were all taken"));
        safe_file::set_random_suffix_source_for_tests(nullptr);
        fs::remove(blocker);
        CHECK(unchanged());
    }
    SECTION("the folder does not exist") {
        CHECK_THROWS_AS(model_file::save((dir / "missing" / "m.safetensors").string(), other, {}, nullptr), IoError);
        CHECK(unchanged());
    }
}

TEST_CASE("the file put together again byte by byte is the file save() wrote", "[model_file][format]") {
    // The tests below change one thing at a time in this assembly.
    CHECK(assemble(take_apart(saved().bytes)) == saved().bytes);
}

TEST_CASE("duplicate names, overlapping or gapped data, trailing bytes and a misaligned header are refused", "[model_file][format][reliability]") {
    // docs/model-format.md: the header length is a multiple of 8, the data holds the tensors
    // back to back with no gaps, and the file holds exactly the architecture's tensors. Each
    // case breaks one of these, with a valid checksum, and is checked through from_bytes
    // (checksum first) and through open() (header first, on disk).
    const Parts good = take_apart(saved().bytes);
    REQUIRE(good.tensors.size() > 4);
    auto refusal = [](const std::vector<char>& bytes) {
        std::string from_memory, from_disk;
        try {
            load_into_fresh(model_file::Reader::from_bytes(bytes, "defective"));
            from_memory = "no error";
        } catch (const FormatError& e) {
            from_memory = e.what();
        }
        const std::string path = (saved().dir / "defective.safetensors").string();
        write_file(path, bytes);
        try {
            load_into_fresh(model_file::Reader::open(path));
            from_disk = "no error";
        } catch (const FormatError& e) {
            from_disk = e.what();
        }
        // Both ways name the same defect (the path aside).
        const std::size_t at = from_disk.find("defective.safetensors'");
        CHECK(from_disk.substr(at == std::string::npos ? 0 : at + 22) ==
              from_memory.substr(std::min(from_memory.size(), from_memory.find("defective'") + 10)));
        return from_memory;
    };

    SECTION("a tensor name twice (without the check, the second copy's values were loaded)") {
        Parts twice = good;
        Part copy = twice.tensors.front();
        for (char& c : copy.bytes) c = static_cast<char>(c ^ 0x40);
        twice.tensors.push_back(copy);
        CHECK_THAT(refusal(assemble(twice)), Catch::Contains("names '" + copy.name + "' twice") &&
                                                 Catch::Contains("expected every name once"));
    }
    SECTION("two tensors over the same bytes") {
        Parts overlapping = good;
        // Two tensors of the same byte count: the later one declares the earlier one's range.
        std::size_t a = 0, b = 0;
        for (std::size_t i = 0; i < overlapping.tensors.size() && !b; ++i)
            for (std::size_t j = i + 1; j < overlapping.tensors.size() && !b; ++j)
                if (overlapping.tensors[i].bytes.size() == overlapping.tensors[j].bytes.size()) a = i, b = j;
        REQUIRE(b > 0);
        overlapping.tensors[b].alias_of = static_cast<int>(a);
        // Which of the two is named first follows the header's order of names.
        CHECK_THAT(refusal(assemble(overlapping)),
                   Catch::Contains("'" + overlapping.tensors[b].name + "'") && Catch::Contains("expected data offset") &&
                       Catch::Contains("its data overlaps tensor") && Catch::Contains("'" + overlapping.tensors[a].name + "'"));
    }
    SECTION("a gap between two tensors") {
        Parts gapped = good;
        gapped.tensors[3].gap_before = 8;
        CHECK_THAT(refusal(assemble(gapped)), Catch::Contains("tensor '" + gapped.tensors[3].name + "'") &&
                                                  Catch::Contains("where tensor '" + gapped.tensors[2].name + "' ends") &&
                                                  Catch::Contains("a gap of 8 bytes"));
    }
    SECTION("bytes after the last tensor") {
        Parts trailing = good;
        trailing.trailing.assign(16, '\x7f');
        CHECK_THAT(refusal(assemble(trailing)),
                   Catch::Contains("expected the file to end with the last tensor's data") && Catch::Contains("found 16 bytes more"));
    }
    SECTION("a header length that is not a multiple of 8") {
        Parts misaligned = good;
        misaligned.header_extra = 3;
        const std::vector<char> bytes = assemble(misaligned);
        CHECK_THAT(refusal(bytes), Catch::Contains("expected a header length that is a multiple of 8") &&
                                       Catch::Contains("found " + std::to_string(header_size(bytes))));
    }
    SECTION("the first tensor not at offset 0") {
        Parts late = good;
        late.tensors[0].gap_before = 8;
        CHECK_THAT(refusal(assemble(late)), Catch::Contains("expected data offset 0 (the first tensor), found 8"));
    }
    SECTION("a non-finite number or a repeated key in structured metadata") {
        // JSON has no NaN or infinity; without the check, the metadata was kept as a string and
        // the load said "expected detector metadata, found none".
        Parts nan = good;
        nan.metadata["detector"] = R"({"trained":true,"threshold":NaN})";
        CHECK_THAT(refusal(assemble(nan)), Catch::Contains("metadata 'detector' is not valid JSON") &&
                                               Catch::Contains("a number is not finite"));
        Parts overflow = good;
        overflow.metadata["detector"] = R"({"trained":true,"threshold":1e999})";
        CHECK_THAT(refusal(assemble(overflow)), Catch::Contains("metadata 'detector' is not valid JSON") &&
                                                    Catch::Contains("a number is not finite"));
        Parts repeated = good;
        std::string architecture = repeated.metadata["architecture"];
        architecture.insert(architecture.size() - 1, R"(,"channels":3)");
        repeated.metadata["architecture"] = architecture;
        CHECK_THAT(refusal(assemble(repeated)), Catch::Contains("metadata 'architecture' names 'channels' twice"));
        Parts not_object = good;
        not_object.metadata["training_state"] = "[1, 2]";
        CHECK_THAT(refusal(assemble(not_object)), Catch::Contains("metadata 'training_state': expected a JSON object, found [1,2]"));
    }
}

TEST_CASE("a huge sparse model file is refused from its header, without reading or allocating its data", "[model_file][reliability]") {
    // Sparse files take no disk space; reading one whole would take its size in memory.
    const fs::path dir = saved().dir / "huge";
    fs::create_directories(dir);
    auto sparse = [&](const std::string& name, const std::vector<char>& head, std::uint64_t size) {
        const std::string path = (dir / name).string();
        write_file(path, head);
        REQUIRE(::truncate(path.c_str(), static_cast<off_t>(size)) == 0);
        return path;
    };
    const std::uint64_t peak_before = peak_rss_bytes();

    // 3 GB whose first 8 bytes declare a 2^31-byte header.
    std::vector<char> length(8, 0);
    length[3] = static_cast<char>(0x80);
    const std::string header_2g = sparse("header_2g.safetensors", length, std::uint64_t{3} << 30);
    CHECK_THROWS_WITH(model_file::Reader::open(header_2g), Catch::Contains("declares a 2147483648-byte header"));
    CHECK_THROWS_AS(Detector::load(header_2g, Device::Cpu), FormatError);

    // 1 TB: a valid model followed by zeros.
    const std::string tail_1t = sparse("tail_1t.safetensors", saved().bytes, std::uint64_t{1} << 40);
    CHECK_THROWS_WITH(model_file::Reader::open(tail_1t), Catch::Contains("expected the file to end with the last tensor's data"));
    CHECK_THROWS_AS(Detector::load(tail_1t, Device::Cpu), FormatError);

    // 1 TB whose header declares it all, as one more tensor of 2^38 floats: the layout is
    // consistent, and the architecture's tensor list refuses it before the data is read.
    Parts forged = take_apart(saved().bytes);
    forged.tensors.push_back({"netd.extra", "F32", {std::int64_t{1} << 19, std::int64_t{1} << 19}, {}, -1, 0,
                              std::uint64_t{1} << 40});
    const std::vector<char> head = assemble(forged);
    const std::string declared_1t = sparse("declared_1t.safetensors", head, head.size() + (std::uint64_t{1} << 40));
    CHECK_THROWS_WITH(model_file::Reader::open(declared_1t), Catch::Contains("unexpected tensor 'netd.extra'"));
    CHECK_THROWS_AS(Detector::load(declared_1t, Device::Cpu), FormatError);

    const std::uint64_t growth = peak_rss_bytes() - peak_before;
    INFO("peak RSS grew by " << growth << " bytes");
    CHECK(growth < (std::uint64_t{64} << 20));
    std::error_code ignored;
    fs::remove_all(dir, ignored);
}

TEST_CASE("saves of two models to one path at once leave one whole model", "[model_file][reliability]") {
    const fs::path dir = saved().dir / "concurrent";
    fs::create_directories(dir);
    const std::string target = (dir / "model.safetensors").string();
    Context ctx(Device::Cpu);
    std::vector<std::unique_ptr<SkipGanomaly>> models;
    std::vector<std::vector<char>> files;
    for (std::uint64_t seed : {51u, 52u}) {
        models.push_back(std::make_unique<SkipGanomaly>(tiny_architecture(), AdamHyperparameters{}, LossWeights{}));
        models.back()->materialize(ctx);
        RandomStream random(seed);
        models.back()->initialize(ctx, random);
        const std::string alone = (dir / ("alone" + std::to_string(seed))).string();
        model_file::save(alone, *models.back(), {}, nullptr);
        files.push_back(read_file(alone));
    }
    std::vector<std::thread> savers;
    for (std::size_t m = 0; m < models.size(); ++m)
        savers.emplace_back([&, m] {
            for (int round = 0; round < 6; ++round) model_file::save(target, *models[m], {}, nullptr);
        });
    for (std::thread& t : savers) t.join();
    const std::vector<char> now = read_file(target);
    CHECK((now == files[0] || now == files[1]));
    CHECK_NOTHROW(load_into_fresh(model_file::Reader::open(target)));
    for (const auto& entry : fs::directory_iterator(dir))
        CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
}

// ---- opt-in float16 weight storage ----

TEST_CASE("float16 conversion: every half round-trips, and floats round to the nearest half", "[model_file][float16]") {
    for (std::uint32_t h = 0; h < 0x10000u; ++h) {
        const std::uint16_t half = static_cast<std::uint16_t>(h);
        const float f = model_file::half_to_float(half);
        if (std::isnan(f)) {
            CHECK((model_file::float_to_half(f) & 0x7C00u) == 0x7C00u);
            CHECK((model_file::float_to_half(f) & 0x3FFu) != 0u);
            continue;
        }
        if (model_file::float_to_half(f) != half) FAIL("half " << h << " -> " << f << " -> " << model_file::float_to_half(f));
    }
    CHECK(model_file::half_to_float(0x3C00u) == 1.0f);
    CHECK(model_file::half_to_float(0x7BFFu) == 65504.0f);
    CHECK(model_file::half_to_float(0x0001u) == std::ldexp(1.0f, -24));
    CHECK(model_file::float_to_half(65519.0f) == 0x7BFFu);
    CHECK(model_file::float_to_half(65520.0f) == 0x7C00u);
    CHECK(model_file::float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3C00u);  // tie: to even
    CHECK(model_file::float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02u);  // tie: to even (up)
    // Random floats across the half range: the result is a nearest half (no neighbour closer).
    std::mt19937 rng(91);
    std::uniform_real_distribution<float> exponent(-26.0f, 15.9f);
    std::bernoulli_distribution negative(0.5);
    int checked = 0;
    for (int i = 0; i < 200000; ++i) {
        const float f = (negative(rng) ? -1.0f : 1.0f) * std::exp2(exponent(rng));
        const std::uint16_t h = model_file::float_to_half(f);
        const double error = std::fabs(static_cast<double>(model_file::half_to_float(h)) - f);
        for (const int step : {-1, 1}) {
            const std::uint16_t neighbour = static_cast<std::uint16_t>(h + step);
            if ((h & 0x7FFFu) == 0 && step == -1) continue;
            const float n = model_file::half_to_float(neighbour);
            if (!std::isfinite(n) || ((neighbour ^ h) & 0x8000u)) continue;
            if (std::fabs(static_cast<double>(n) - f) < error) FAIL("float " << f << " -> half " << h << ", but " << neighbour << " is closer");
        }
        ++checked;
    }
    CHECK(checked == 200000);
}

TEST_CASE("a float16 model file is half the size, loads widened, and keeps statistics exact", "[model_file][float16]") {
    const fs::path dir = fs::temp_directory_path() / ("sga_half_" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
    struct Cleanup {
        fs::path dir;
        ~Cleanup() {
            std::error_code ignored;
            fs::remove_all(dir, ignored);
        }
    } cleanup{dir};
    for (const int bottleneck : {0, 16}) {
        Architecture arch;
        arch.image_size = 32;
        arch.channels = 3;
        arch.generator_features = 16;
        arch.discriminator_features = 16;
        arch.latent_size = 20;
        arch.bottleneck_channels = bottleneck;
        Context ctx(Device::Cpu);
        SkipGanomaly model(arch, {}, {});
        model.materialize(ctx);
        RandomStream random(31 + static_cast<std::uint64_t>(bottleneck));
        model.initialize(ctx, random);
        // Non-trivial running statistics, so that "kept in F32" is tested with values F16 would round.
        std::vector<float> stats = Tensor::host_values(model.generator.statistics.values());
        std::mt19937 rng(32);
        std::uniform_real_distribution<float> stat(0.1f, 3.0f);
        for (float& v : stats) v = stat(rng) + 1e-4f;
        copy_bytes(model.generator.statistics.values().data(), Device::Cpu, stats.data(), Device::Cpu, stats.size() * sizeof(float));

        const std::string full = (dir / "full.safetensors").string(), half = (dir / "half.safetensors").string();
        model_file::save(full, model, {}, nullptr);
        model_file::save(half, model, {}, nullptr, WeightStorage::Float16);
        const double ratio = static_cast<double>(fs::file_size(half)) / static_cast<double>(fs::file_size(full));
        INFO("bottleneck " << bottleneck << ", size ratio " << ratio);
        CHECK(ratio < 0.52);
        CHECK(ratio > 0.49);

        const model_file::Reader reader = model_file::Reader::open(half);
        SkipGanomaly loaded(reader.architecture(), {}, {});
        loaded.materialize(ctx);
        reader.load_into(loaded);
        for (auto [from, to] : {std::pair{&model.generator.parameters, &loaded.generator.parameters},
                                std::pair{&model.discriminator.parameters, &loaded.discriminator.parameters}}) {
            const std::vector<float> original = Tensor::host_values(from->values()), widened = Tensor::host_values(to->values());
            REQUIRE(original.size() == widened.size());
            std::size_t exact = 0;
            for (std::size_t i = 0; i < original.size(); ++i) {
                REQUIRE(widened[i] == model_file::half_to_float(model_file::float_to_half(original[i])));
                exact += widened[i] == original[i];
            }
            CHECK(exact < original.size());  // the weights really were rounded
        }
        CHECK(Tensor::host_values(loaded.generator.statistics.values()) == stats);
        CHECK(Tensor::host_values(loaded.discriminator.statistics.values()) ==
              Tensor::host_values(model.discriminator.statistics.values()));

        // Scores of the half file against the float file on random images.
        std::vector<float> pixels(static_cast<std::size_t>(8 * 3 * 32 * 32));
        std::uniform_real_distribution<float> pixel(-1.0f, 1.0f);
        for (float& v : pixels) v = pixel(rng);
        const Tensor images = Tensor::from_host({8, 3, 32, 32}, pixels);
        Tape tape(ctx);
        const BatchScores a = model.score(ctx, tape, images.view(), BatchNormMode::RunningStatistics, false);
        const BatchScores b = loaded.score(ctx, tape, images.view(), BatchNormMode::RunningStatistics, false);
        double worst = 0;
        for (std::size_t i = 0; i < 8; ++i) {
            const float sa = anomaly_score(a.reconstruction[i], a.latent[i]), sb = anomaly_score(b.reconstruction[i], b.latent[i]);
            REQUIRE(std::isfinite(sb));
            worst = std::max(worst, std::fabs(static_cast<double>(sb) - sa) / std::fabs(static_cast<double>(sa)));
        }
        // Half weights carry 11 significant bits (relative rounding <= 2^-11 = 4.9e-4 per weight);
        // through ten layers the score moves by about that much. 1e-2 leaves room; the measured
        // figure is in docs/model-format.md.
        INFO("largest relative score difference " << worst);
        CHECK(worst < 1e-2);
        CHECK(worst > 0);
    }
}

TEST_CASE("damaged or forged float16 files are refused", "[model_file][float16][reliability]") {
    const fs::path dir = fs::temp_directory_path() / ("sga_half_bad_" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
    const std::string path = (dir / "half.safetensors").string();
    Context ctx(Device::Cpu);
    SkipGanomaly model(tiny_architecture(), {}, {});
    model.materialize(ctx);
    RandomStream random(41);
    model.initialize(ctx, random);
    model_file::save(path, model, {}, nullptr, WeightStorage::Float16);
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
    in.close();
    std::error_code ignored;
    fs::remove_all(dir, ignored);

    // Every flipped bit (checksum), every truncation.
    std::size_t refused = 0;
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        const char original = bytes[i];
        bytes[i] = static_cast<char>(original ^ (1 << (i % 8)));
        try {
            load_into_fresh(model_file::Reader::from_bytes(bytes, "flipped"));
        } catch (const FormatError&) {
            ++refused;
        }
        bytes[i] = original;
    }
    CHECK(refused == bytes.size());
    for (std::size_t length = 0; length < bytes.size(); length += 97)
        CHECK_THROWS_AS(model_file::Reader::from_bytes(std::vector<char>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length)), "cut"),
                        FormatError);

    // Statistics must stay F32: an F16 running_var (bytes re-sealed) is refused by name.
    std::string statistic;
    const nlohmann::json header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_size(bytes)));
    for (auto it = header.begin(); it != header.end(); ++it)
        if (it.key().find("running_var") != std::string::npos) statistic = it.key();
    REQUIRE(!statistic.empty());
    const std::vector<char> forged = forge(bytes, [&](nlohmann::json& h) {
        // Same byte count, other dtype and twice the elements: only the dtype rule can refuse it.
        h[statistic]["dtype"] = "F16";
        h[statistic]["shape"] = {h[statistic]["shape"][0].get<std::int64_t>() * 2};
    });
    try {
        load_into_fresh(model_file::Reader::from_bytes(forged, "forged"));
        FAIL("an F16 statistic was accepted");
    } catch (const FormatError& e) {
        CHECK_THAT(e.what(), Catch::Contains(statistic) && Catch::Contains("expected F32") && Catch::Contains("found F16"));
    }
    // A weight of the wrong byte count for its F16 shape.
    const std::vector<char> short_weight = forge(bytes, [](nlohmann::json& h) {
        for (auto it = h.begin(); it != h.end(); ++it)
            if (it.key() != "__metadata__" && (*it)["dtype"] == "F16") {
                (*it)["dtype"] = "F32";  // the F16 bytes are now half of what F32 needs
                break;
            }
    });
    CHECK_THROWS_AS(model_file::Reader::from_bytes(short_weight, "short"), FormatError);
    // A weight that does not fit in float16 is refused at save time, not silently made infinite.
    std::vector<float> values = Tensor::host_values(model.generator.parameters.values());
    values[3] = 70000.0f;
    copy_bytes(model.generator.parameters.values().data(), Device::Cpu, values.data(), Device::Cpu, values.size() * sizeof(float));
    CHECK_THROWS_AS(model_file::save((fs::temp_directory_path() / "sga_never.safetensors").string(), model, {}, nullptr,
                                     WeightStorage::Float16),
                    InvalidArgument);
    model_file::TrainingState state;
    CHECK_THROWS_AS(model_file::save((fs::temp_directory_path() / "sga_never.safetensors").string(), model, {}, &state,
                                     WeightStorage::Float16),
                    InvalidArgument);
}
