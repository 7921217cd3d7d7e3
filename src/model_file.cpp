#include "model_file.hpp"

#include <zlib.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <new>
#include <string_view>

#include "safe_file.hpp"
#include "skipganomaly/config.hpp"
#include "skipganomaly/error.hpp"

namespace sga::model_file {
namespace {

using ordered_json = nlohmann::ordered_json;

constexpr const char* checksum_prefix = "crc32:";
constexpr std::size_t checksum_digits = 8;

std::string shape_string(const std::vector<std::int64_t>& shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
}

// The tensors a model is made of, in file order: name, shape, where the floats live.
struct Planned {
    std::string name;
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::vector<char> bytes;
};

void plan_block(std::vector<Planned>& out, const std::string& prefix, const ParameterBlock& block,
                bool as_half = false) {
    const std::vector<float> values = Tensor::host_values(block.values());
    for (const ParameterBlock::Entry& e : block.entries()) {
        Planned p{prefix + e.name, as_half ? "F16" : "F32", e.shape.dims(), {}};
        const float* first = values.data() + e.offset;
        const std::int64_t count = e.shape.numel();
        if (as_half) {
            p.bytes.resize(static_cast<std::size_t>(count) * sizeof(std::uint16_t));
            for (std::int64_t i = 0; i < count; ++i) {
                const std::uint16_t h = float_to_half(first[i]);
                if ((h & 0x7C00u) == 0x7C00u && std::isfinite(first[i]))
                    throw InvalidArgument("save: weight " + prefix + e.name + "[" + std::to_string(i) + "] = " +
                                          std::to_string(first[i]) + " does not fit in float16; save as Float32");
                std::memcpy(p.bytes.data() + i * 2, &h, sizeof h);  // little-endian hosts only, as the F32 path
            }
        } else {
            const char* begin = reinterpret_cast<const char*>(first);
            p.bytes.assign(begin, begin + count * static_cast<std::int64_t>(sizeof(float)));
        }
        out.push_back(std::move(p));
    }
}

void plan_batches_tracked(std::vector<Planned>& out, const std::string& prefix, const ParameterBlock& statistics,
                          std::int64_t passes) {
    for (const ParameterBlock::Entry& e : statistics.entries()) {
        const std::string suffix = "running_mean";
        if (e.name.size() < suffix.size() || e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) != 0)
            continue;
        Planned p{prefix + e.name.substr(0, e.name.size() - suffix.size()) + "num_batches_tracked", "I64", {}, {}};
        p.bytes.resize(sizeof(std::int64_t));
        std::memcpy(p.bytes.data(), &passes, sizeof passes);
        out.push_back(std::move(p));
    }
}

void plan_flat(std::vector<Planned>& out, const std::string& name, TensorView flat) {
    const std::vector<float> values = Tensor::host_values(flat);
    Planned p{name, "F32", {flat.numel()}, {}};
    const char* begin = reinterpret_cast<const char*>(values.data());
    p.bytes.assign(begin, begin + values.size() * sizeof(float));
    out.push_back(std::move(p));
}

std::vector<Planned> plan_model(const SkipGanomaly& model, const TrainingState* training, bool half_weights) {
    std::vector<Planned> planned;
    plan_block(planned, "netg.", model.generator.parameters, half_weights);
    plan_block(planned, "netg.", model.generator.statistics);
    plan_batches_tracked(planned, "netg.", model.generator.statistics, model.generator.training_passes);
    plan_block(planned, "netd.", model.discriminator.parameters, half_weights);
    plan_block(planned, "netd.", model.discriminator.statistics);
    plan_batches_tracked(planned, "netd.", model.discriminator.statistics, model.discriminator.training_passes);
    if (training) {
        plan_flat(planned, "training.netg.exp_avg", model.generator.parameters.first_moments());
        plan_flat(planned, "training.netg.exp_avg_sq", model.generator.parameters.second_moments());
        plan_flat(planned, "training.netd.exp_avg", model.discriminator.parameters.first_moments());
        plan_flat(planned, "training.netd.exp_avg_sq", model.discriminator.parameters.second_moments());
    }
    return planned;
}

// What a file for `arch` must hold: names, dtypes and shapes, from the networks' declarations
// alone (nothing is allocated, so a forged architecture costs nothing to check).
struct ExpectedTensor {
    std::string name;
    std::string dtype;
    std::vector<std::int64_t> shape;
    bool half_allowed = false;  // a learned weight: F16 accepted too
};

std::vector<ExpectedTensor> expected_tensors(const Architecture& arch, bool with_training_state) {
    const Generator generator(arch);
    const Discriminator discriminator(arch);
    std::vector<ExpectedTensor> expected;
    auto add_block = [&](const std::string& prefix, const ParameterBlock& block, bool half_allowed = false) {
        for (const ParameterBlock::Entry& e : block.entries())
            expected.push_back({prefix + e.name, "F32", e.shape.dims(), half_allowed});
    };
    auto add_batches_tracked = [&](const std::string& prefix, const ParameterBlock& statistics) {
        std::vector<Planned> counters;
        plan_batches_tracked(counters, prefix, statistics, 0);
        for (const Planned& p : counters) expected.push_back({p.name, p.dtype, p.shape});
    };
    add_block("netg.", generator.parameters, true);
    add_block("netg.", generator.statistics);
    add_batches_tracked("netg.", generator.statistics);
    add_block("netd.", discriminator.parameters, true);
    add_block("netd.", discriminator.statistics);
    add_batches_tracked("netd.", discriminator.statistics);
    if (with_training_state) {
        for (const char* moment : {"exp_avg", "exp_avg_sq"})
            expected.push_back({std::string("training.netg.") + moment, "F32", {generator.parameters.size()}});
        for (const char* moment : {"exp_avg", "exp_avg_sq"})
            expected.push_back({std::string("training.netd.") + moment, "F32", {discriminator.parameters.size()}});
    }
    return expected;
}

std::string architecture_json(const Architecture& a) {
    ordered_json j{{"image_size", a.image_size},
                   {"channels", a.channels},
                   {"generator_features", a.generator_features},
                   {"discriminator_features", a.discriminator_features},
                   {"latent_size", a.latent_size}};
    // Only when present, so files of the official architecture stay byte for byte as before.
    if (a.bottleneck_channels > 0) j["bottleneck_channels"] = a.bottleneck_channels;
    if (a.rotation_head) j["rotation_head"] = true;
    return j.dump();
}

std::size_t find_checksum(const char* header, std::size_t size) {
    const std::string needle = std::string("\"") + checksum_prefix;
    const std::string_view text(header, size);
    const std::size_t at = text.find(needle);
    if (at == std::string_view::npos || at + needle.size() + checksum_digits > size)
        throw FormatError("the model file header has no checksum; the file is damaged or not a skipganomaly model");
    return at + needle.size();
}

}  // namespace

std::uint32_t crc32(const char* bytes, std::size_t size) {
    uLong crc = ::crc32(0L, Z_NULL, 0);
    while (size > 0) {
        const uInt chunk = static_cast<uInt>(std::min<std::size_t>(size, std::numeric_limits<uInt>::max()));
        crc = ::crc32(crc, reinterpret_cast<const Bytef*>(bytes), chunk);
        bytes += chunk;
        size -= chunk;
    }
    return static_cast<std::uint32_t>(crc);
}

std::uint16_t float_to_half(float value) {
    std::uint32_t x = 0;
    std::memcpy(&x, &value, sizeof x);
    const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
    x &= 0x7FFFFFFFu;
    if (x >= 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7C00u | (x > 0x7F800000u ? 0x200u : 0u));
    if (x >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // rounds to >= 65520: infinity
    if (x < 0x38800000u) {
        // Below 2^-14: a subnormal half, value * 2^24 rounded to nearest even (exact in float;
        // 1024 is the smallest normal, which the same bits encode).
        float magnitude = 0;
        std::memcpy(&magnitude, &x, sizeof magnitude);
        return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(std::nearbyint(magnitude * 16777216.0f)));
    }
    // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even;
    // a carry out of the mantissa correctly bumps the exponent.
    x += 0xC8000FFFu + ((x >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | (x >> 13));
}

float half_to_float(std::uint16_t half) {
    const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
    const std::uint32_t exponent = (half >> 10) & 0x1Fu, mantissa = half & 0x3FFu;
    std::uint32_t bits = 0;
    if (exponent == 0) {
        const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
        std::memcpy(&bits, &magnitude, sizeof bits);
    } else if (exponent == 31) {
        bits = 0x7F800000u | (mantissa << 13);
    } else {
        bits = ((exponent + 112u) << 23) | (mantissa << 13);
    }
    bits |= sign;
    float value = 0;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

void save(const std::string& path, const SkipGanomaly& model, const nlohmann::json& metadata,
          const TrainingState* training, WeightStorage storage) {
    SGA_CHECK_ARGUMENT(!path.empty(), "save: the path is empty");
    SGA_CHECK_ARGUMENT(storage == WeightStorage::Float32 || !training,
                       "save: a checkpoint keeps its weights in float32 (resuming needs them exact)");
    std::vector<Planned> planned = plan_model(model, training, storage == WeightStorage::Float16);

    ordered_json meta;
    meta["format"] = format_name;
    meta["format_version"] = std::to_string(format_version);
    meta["library_version"] = SKIPGANOMALY_VERSION_STRING;
    meta["architecture"] = architecture_json(model.architecture());
    for (auto it = metadata.begin(); it != metadata.end(); ++it)
        meta[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
    if (training) {
        meta["training_state"] = ordered_json{{"epochs_completed", training->epochs_completed},
                                              {"random_offset", training->random_offset},
                                              {"generator_adam_steps", training->generator_adam_steps},
                                              {"discriminator_adam_steps", training->discriminator_adam_steps}}
                                     .dump();
    }
    meta["checksum"] = std::string(checksum_prefix) + std::string(checksum_digits, '0');

    ordered_json header;
    header["__metadata__"] = meta;
    std::uint64_t offset = 0;
    for (const Planned& p : planned) {
        header[p.name] = ordered_json{{"dtype", p.dtype}, {"shape", p.shape}, {"data_offsets", {offset, offset + p.bytes.size()}}};
        offset += p.bytes.size();
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned

    std::vector<char> bytes(8 + text.size() + offset);
    const std::uint64_t header_size = text.size();
    for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((header_size >> (8 * i)) & 0xFF);
    std::memcpy(bytes.data() + 8, text.data(), text.size());
    char* data = bytes.data() + 8 + text.size();
    for (const Planned& p : planned) {
        std::memcpy(data, p.bytes.data(), p.bytes.size());
        data += p.bytes.size();
    }
    // The checksum covers every byte of the file with its own digits read as zeros.
    const std::size_t digits_at = 8 + find_checksum(bytes.data() + 8, text.size());
    char hex[checksum_digits + 1];
    std::snprintf(hex, sizeof hex, "%08x", crc32(bytes.data(), bytes.size()));
    std::memcpy(bytes.data() + digits_at, hex, checksum_digits);
    safe_file::write_atomically(path, bytes.data(), bytes.size());
}

namespace {

// The 8-byte little-endian header length at the start of a file.
std::uint64_t read_header_length(const char* bytes) {
    std::uint64_t header_size = 0;
    for (int i = 0; i < 8; ++i) header_size |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
    return header_size;
}

// The checks a file's first 8 bytes allow, against its size.
void check_header_length(std::uint64_t header_size, std::uint64_t file_size, const std::string& path) {
    const std::uint64_t available = file_size - 8;
    if (header_size > max_header_bytes)
        throw FormatError("model file '" + path + "' declares a " + std::to_string(header_size) +
                          "-byte header; expected at most " + std::to_string(max_header_bytes));
    if (header_size > available)
        throw FormatError("model file '" + path + "' is truncated: the header needs " + std::to_string(header_size) +
                          " bytes, found " + std::to_string(available));
    if (header_size % 8 != 0)
        throw FormatError("model file '" + path + "': expected a header length that is a multiple of 8 (the data " +
                          "is 8-byte aligned), found " + std::to_string(header_size));
}

// The whole file's CRC-32 with the checksum's own digits read as '0', against those digits.
void check_checksum(std::vector<char>& bytes, std::uint64_t header_size, const std::string& path) {
    const std::size_t digits_at = 8 + find_checksum(bytes.data() + 8, static_cast<std::size_t>(header_size));
    const std::string stored(bytes.data() + digits_at, checksum_digits);
    std::memset(bytes.data() + digits_at, '0', checksum_digits);
    char computed[checksum_digits + 1];
    std::snprintf(computed, sizeof computed, "%08x", crc32(bytes.data(), bytes.size()));
    std::memcpy(bytes.data() + digits_at, stored.data(), checksum_digits);
    if (stored != computed)
        throw FormatError("model file '" + path + "' is damaged: checksum expected crc32:" + stored + ", found crc32:" +
                          computed);
}

// JSON text that names no key twice in any object: nlohmann keeps the last of two equal keys
// silently, so a second tensor of the same name would replace the first one.
nlohmann::json parse_without_duplicates(const char* begin, const char* end, const std::string& where) {
    std::vector<std::vector<std::string>> keys;  // one list per open object
    std::string duplicate;
    auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        using Event = nlohmann::json::parse_event_t;
        if (event == Event::object_start) keys.emplace_back();
        if (event == Event::object_end && !keys.empty()) keys.pop_back();
        if (event == Event::key && !keys.empty() && duplicate.empty()) {
            const std::string& key = parsed.get_ref<const std::string&>();
            for (const std::string& k : keys.back())
                if (k == key) duplicate = key;
            keys.back().push_back(key);
        }
        return true;
    };
    nlohmann::json parsed;
    try {
        parsed = nlohmann::json::parse(begin, end, callback);
    } catch (const nlohmann::json::exception& e) {
        const std::string_view text(begin, static_cast<std::size_t>(end - begin));
        std::string why;
        if (text.find("NaN") != std::string_view::npos || text.find("Infinity") != std::string_view::npos ||
            std::string_view(e.what()).find("overflow") != std::string_view::npos)
            why = " (a number is not finite: NaN and infinities are not JSON numbers)";
        throw FormatError(where + " is not valid JSON" + why + ": " + e.what());
    }
    if (!duplicate.empty())
        throw FormatError(where + " names '" + duplicate + "' twice; expected every name once, found '" + duplicate +
                          "' at least twice");
    return parsed;
}

// Metadata values that hold JSON objects: anything else there is damage or forgery, not a
// plain string.
bool structured_metadata(const std::string& key) {
    return key == "architecture" || key == "detector" || key == "training_state";
}

}  // namespace

void Reader::parse_header(const char* header_begin, std::uint64_t header_size, std::uint64_t data_size) {
    const std::string& path = path_;
    const nlohmann::json header = parse_without_duplicates(
        header_begin, header_begin + header_size, "model file '" + path + "': the header");
    if (!header.is_object() || !header.contains("__metadata__") || !header["__metadata__"].is_object())
        throw FormatError("model file '" + path + "': expected a safetensors header with __metadata__, found none");
    for (auto it = header["__metadata__"].begin(); it != header["__metadata__"].end(); ++it) {
        if (!it->is_string()) throw FormatError("model file '" + path + "': metadata '" + it.key() + "' is not a string");
        const std::string& value = it->get_ref<const std::string&>();
        if (structured_metadata(it.key())) {
            nlohmann::json parsed = parse_without_duplicates(value.data(), value.data() + value.size(),
                                                             "model file '" + path + "': metadata '" + it.key() + "'");
            if (!parsed.is_object())
                throw FormatError("model file '" + path + "': metadata '" + it.key() + "': expected a JSON object, found " +
                                  parsed.dump());
            metadata_[it.key()] = std::move(parsed);
            continue;
        }
        nlohmann::json parsed = nlohmann::json::parse(value, nullptr, false);
        metadata_[it.key()] = parsed.is_discarded() ? nlohmann::json(value) : parsed;
    }
    const nlohmann::json& meta = metadata_;
    if (!meta.contains("format") || meta["format"] != format_name)
        throw FormatError("model file '" + path + "': expected format '" + format_name + "', found " +
                          (meta.contains("format") ? meta["format"].dump() : std::string("none")));
    if (!meta.contains("format_version") || meta["format_version"] != format_version)
        throw FormatError("model file '" + path + "': expected format version " + std::to_string(format_version) +
                          ", found " + (meta.contains("format_version") ? meta["format_version"].dump() : std::string("none")));

    data_start_ = 8 + header_size;
    for (auto it = header.begin(); it != header.end(); ++it) {
        if (it.key() == "__metadata__") continue;
        const nlohmann::json& t = *it;
        const std::string where = "model file '" + path + "', tensor '" + it.key() + "'";
        if (!t.is_object() || !t.contains("dtype") || !t["dtype"].is_string() || !t.contains("shape") ||
            !t["shape"].is_array() || !t.contains("data_offsets") || !t["data_offsets"].is_array() ||
            t["data_offsets"].size() != 2)
            throw FormatError(where + ": expected dtype, shape and data_offsets");
        TensorRecord rec;
        rec.dtype = t["dtype"].get<std::string>();
        if (rec.dtype != "F32" && rec.dtype != "F16" && rec.dtype != "I64")
            throw FormatError(where + ": expected dtype F32, F16 or I64, found " + rec.dtype);
        std::uint64_t elements = 1;
        for (const nlohmann::json& d : t["shape"]) {
            if (!d.is_number_unsigned() || d.get<std::uint64_t>() > (std::uint64_t{1} << 32))
                throw FormatError(where + ": shape entries must be non-negative integers below 2^32");
            // Checked before it can wrap: 2^32 x 2^32 would be 0 elements in 64 bits.
            if (__builtin_mul_overflow(elements, d.get<std::uint64_t>(), &elements) || elements > (std::uint64_t{1} << 40))
                throw FormatError(where + ": absurd element count");
            rec.shape.push_back(d.get<std::int64_t>());
        }
        for (const nlohmann::json& o : t["data_offsets"])
            if (!o.is_number_unsigned()) throw FormatError(where + ": data offsets must be non-negative integers");
        rec.begin = t["data_offsets"][0].get<std::uint64_t>();
        rec.end = t["data_offsets"][1].get<std::uint64_t>();
        const std::uint64_t element_size = rec.dtype == "F32" ? 4 : rec.dtype == "F16" ? 2 : 8;
        if (rec.begin > rec.end || rec.end > data_size)
            throw FormatError(where + ": data offsets [" + std::to_string(rec.begin) + ", " + std::to_string(rec.end) +
                              ") lie outside the " + std::to_string(data_size) + " data bytes (file truncated?)");
        if (rec.end - rec.begin != elements * element_size)
            throw FormatError(where + ": shape " + shape_string(rec.shape) + " needs " +
                              std::to_string(elements * element_size) + " bytes, found " +
                              std::to_string(rec.end - rec.begin));
        tensors_.emplace_back(it.key(), std::move(rec));
    }

    // The data area is the tensors' data back to back: taken in order of their offsets, each
    // begins where the previous one ends, the first at 0, and the last ends at the end of the
    // file. So no byte belongs to two tensors, and none to no tensor.
    std::vector<const std::pair<std::string, TensorRecord>*> by_offset;
    for (const auto& entry : tensors_) by_offset.push_back(&entry);
    std::stable_sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
        return a->second.begin != b->second.begin ? a->second.begin < b->second.begin : a->second.end < b->second.end;
    });
    std::uint64_t expected_begin = 0;
    const std::string* previous = nullptr;
    for (const auto* entry : by_offset) {
        const TensorRecord& rec = entry->second;
        const std::string after = previous ? " (where tensor '" + *previous + "' ends)" : std::string(" (the first tensor)");
        if (rec.begin < expected_begin)
            throw FormatError("model file '" + path + "', tensor '" + entry->first + "': expected data offset " +
                              std::to_string(expected_begin) + after + ", found " + std::to_string(rec.begin) +
                              ": its data overlaps tensor '" + *previous + "'");
        if (rec.begin > expected_begin)
            throw FormatError("model file '" + path + "', tensor '" + entry->first + "': expected data offset " +
                              std::to_string(expected_begin) + after + ", found " + std::to_string(rec.begin) + ": a gap of " +
                              std::to_string(rec.begin - expected_begin) + " bytes that no tensor holds");
        expected_begin = rec.end;
        previous = &entry->first;
    }
    if (expected_begin != data_size)
        throw FormatError("model file '" + path + "': expected the file to end with the last tensor's data, " +
                          std::to_string(8 + header_size + expected_begin) + " bytes in all, found " +
                          std::to_string(data_size - expected_begin) + " bytes more");
}

Reader Reader::open(const std::string& path) {
    std::error_code error;
    if (!std::filesystem::exists(path, error))
        throw IoError("model file '" + path + "' " + safe_file::lookup_failure(error ? error.value() : ENOENT));
    if (std::filesystem::is_directory(path, error)) throw IoError("model file '" + path + "' is a directory");
    // Opening a FIFO blocks until someone writes to it; a model file must be a file. The check
    // is made again on the opened file (O_NONBLOCK: a FIFO swapped in meanwhile does not block).
    if (!std::filesystem::is_regular_file(path, error))
        throw IoError("model file '" + path + "' is not a regular file (a FIFO, socket or device)");
    struct Descriptor {
        int fd;
        ~Descriptor() {
            if (fd >= 0) ::close(fd);
        }
    } file{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
    if (file.fd < 0) throw IoError("cannot open model file '" + path + "': " + std::strerror(errno));
    struct stat status {};
    if (::fstat(file.fd, &status) != 0) throw IoError("cannot read model file '" + path + "': " + std::strerror(errno));
    if (!S_ISREG(status.st_mode))
        throw IoError("model file '" + path + "' is not a regular file (a FIFO, socket or device)");
    const std::uint64_t size = static_cast<std::uint64_t>(status.st_size);
    // Reads exactly `count` bytes at `offset`; the file is refused as truncated if it shrank.
    auto read_at = [&](char* out, std::uint64_t count, std::uint64_t offset) {
        while (count > 0) {
            const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(count, std::uint64_t{1} << 30));
            const ssize_t n = ::pread(file.fd, out, chunk, static_cast<off_t>(offset));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw IoError("cannot read model file '" + path + "': " + std::strerror(errno));
            if (n == 0)
                throw FormatError("model file '" + path + "' is truncated: it ended at byte " + std::to_string(offset) +
                                  " while being read; expected " + std::to_string(size));
            out += n;
            offset += static_cast<std::uint64_t>(n);
            count -= static_cast<std::uint64_t>(n);
        }
    };

    // The header first, within the limits the file's size and its first 8 bytes set; the data
    // is read only once the header has declared exactly the file's remaining bytes as the
    // tensors of a valid architecture.
    if (size < 8)
        throw FormatError("model file '" + path + "' is " + std::to_string(size) +
                          " bytes; expected at least 8 (the header length)");
    char length[8];
    read_at(length, 8, 0);
    const std::uint64_t header_size = read_header_length(length);
    check_header_length(header_size, size, path);
    std::vector<char> header(static_cast<std::size_t>(header_size));
    read_at(header.data(), header_size, 8);
    Reader r;
    r.path_ = path;
    r.parse_header(header.data(), header_size, size - 8 - header_size);
    r.check_tensors(r.architecture());

    try {
        r.bytes_.resize(static_cast<std::size_t>(size));
    } catch (const std::bad_alloc&) {
        throw IoError("cannot read model file '" + path + "': its " + std::to_string(size) +
                      " bytes do not fit in memory");
    }
    std::memcpy(r.bytes_.data(), length, 8);
    std::memcpy(r.bytes_.data() + 8, header.data(), header.size());
    read_at(r.bytes_.data() + 8 + header_size, size - 8 - header_size, 8 + header_size);
    check_checksum(r.bytes_, header_size, path);
    return r;
}

Reader Reader::from_bytes(std::vector<char> bytes, const std::string& path) {
    Reader r;
    r.path_ = path;
    r.bytes_ = std::move(bytes);
    const std::uint64_t size = r.bytes_.size();
    if (size < 8)
        throw FormatError("model file '" + path + "' is " + std::to_string(size) +
                          " bytes; expected at least 8 (the header length)");
    const std::uint64_t header_size = read_header_length(r.bytes_.data());
    check_header_length(header_size, size, path);
    // Checksum before parsing: any damaged byte is reported as such.
    check_checksum(r.bytes_, header_size, path);
    r.parse_header(r.bytes_.data() + 8, header_size, size - 8 - header_size);
    return r;
}

Architecture Reader::architecture() const {
    const nlohmann::json& meta = metadata_;
    if (!meta.contains("architecture") || !meta["architecture"].is_object())
        throw FormatError("model file '" + path_ + "': expected an architecture in the metadata, found none");
    const nlohmann::json& a = meta["architecture"];
    Architecture arch;
    try {
        arch.image_size = a.at("image_size").get<int>();
        arch.channels = a.at("channels").get<int>();
        arch.generator_features = a.at("generator_features").get<int>();
        arch.discriminator_features = a.at("discriminator_features").get<int>();
        arch.latent_size = a.at("latent_size").get<int>();
        arch.bottleneck_channels = a.value("bottleneck_channels", 0);
        arch.rotation_head = a.value("rotation_head", false);
        arch.validate();
    } catch (const nlohmann::json::exception& e) {
        throw FormatError("model file '" + path_ + "': malformed architecture " + a.dump() + ": " + e.what());
    } catch (const InvalidArgument& e) {
        throw FormatError("model file '" + path_ + "': unsupported architecture: " + e.what());
    }
    return arch;
}

std::optional<TrainingState> Reader::training_state() const {
    if (!metadata_.contains("training_state")) return std::nullopt;
    const nlohmann::json& t = metadata_["training_state"];
    try {
        TrainingState s;
        s.epochs_completed = t.at("epochs_completed").get<int>();
        s.random_offset = t.at("random_offset").get<std::uint64_t>();
        s.generator_adam_steps = t.at("generator_adam_steps").get<std::int64_t>();
        s.discriminator_adam_steps = t.at("discriminator_adam_steps").get<std::int64_t>();
        return s;
    } catch (const nlohmann::json::exception& e) {
        throw FormatError("model file '" + path_ + "': malformed training_state: " + e.what());
    }
}

const Reader::TensorRecord& Reader::record(const std::string& name) const {
    for (const auto& [key, rec] : tensors_)
        if (key == name) return rec;
    throw FormatError("model file '" + path_ + "': expected tensor '" + name + "', found none");
}

void Reader::copy_flat(const std::string& name, TensorView destination, bool half_allowed) const {
    const TensorRecord& rec = record(name);
    const std::vector<std::int64_t> expected = destination.shape().dims();
    const bool half = half_allowed && rec.dtype == "F16";
    if ((rec.dtype != "F32" && !half) || rec.shape != expected)
        throw FormatError("model file '" + path_ + "', tensor '" + name + "': expected " +
                          (half_allowed ? "F32 or F16 " : "F32 ") + shape_string(expected) + ", found " + rec.dtype +
                          " " + shape_string(rec.shape));
    const char* source = bytes_.data() + data_start_ + rec.begin;
    if (!half) {
        copy_bytes(destination.data(), destination.device(), source, Device::Cpu, rec.end - rec.begin);
        return;
    }
    std::vector<float> widened(static_cast<std::size_t>(destination.numel()));
    for (std::size_t i = 0; i < widened.size(); ++i) {
        std::uint16_t h = 0;
        std::memcpy(&h, source + 2 * i, sizeof h);
        widened[i] = half_to_float(h);
    }
    copy_bytes(destination.data(), destination.device(), widened.data(), Device::Cpu, widened.size() * sizeof(float));
}

void Reader::copy_block(const std::string& prefix, ParameterBlock& block, bool half_allowed) const {
    for (int i = 0; i < static_cast<int>(block.entries().size()); ++i)
        copy_flat(prefix + block.entry(i).name, block.value(i), half_allowed);
}

void Reader::check_tensors(const Architecture& arch) const {
    const std::vector<ExpectedTensor> expected = expected_tensors(arch, training_state().has_value());
    for (const auto& [name, rec] : tensors_) {
        bool known = false;
        for (const ExpectedTensor& e : expected) known = known || e.name == name;
        if (!known)
            throw FormatError("model file '" + path_ + "': unexpected tensor '" + name + "' for architecture " +
                              architecture_json(arch));
    }
    for (const ExpectedTensor& e : expected) {
        const TensorRecord& rec = record(e.name);
        const bool dtype_ok = rec.dtype == e.dtype || (e.half_allowed && rec.dtype == "F16");
        if (!dtype_ok || rec.shape != e.shape)
            throw FormatError("model file '" + path_ + "', tensor '" + e.name + "': expected " + e.dtype +
                              (e.half_allowed ? " or F16 " : " ") + shape_string(e.shape) + ", found " + rec.dtype + " " +
                              shape_string(rec.shape));
    }
}

void Reader::load_into(SkipGanomaly& model) const {
    check_tensors(model.architecture());
    const std::optional<TrainingState> training = training_state();
    copy_block("netg.", model.generator.parameters, true);
    copy_block("netg.", model.generator.statistics, false);
    copy_block("netd.", model.discriminator.parameters, true);
    copy_block("netd.", model.discriminator.statistics, false);
    auto passes = [&](const std::string& prefix, const ParameterBlock& statistics) -> std::int64_t {
        for (const ParameterBlock::Entry& e : statistics.entries()) {
            const std::string suffix = "running_mean";
            if (e.name.size() < suffix.size() || e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) != 0)
                continue;
            const TensorRecord& rec = record(prefix + e.name.substr(0, e.name.size() - suffix.size()) + "num_batches_tracked");
            std::int64_t value = 0;
            std::memcpy(&value, bytes_.data() + data_start_ + rec.begin, sizeof value);
            return value;  // every layer of a network counts the same passes
        }
        return 0;
    };
    model.generator.training_passes = passes("netg.", model.generator.statistics);
    model.discriminator.training_passes = passes("netd.", model.discriminator.statistics);
    // The optimiser's moments matter only to a fit that resumes (which allocates them first);
    // loading a checkpoint to score leaves them out.
    if (training) {
        model.generator_optimizer.set_steps(training->generator_adam_steps);
        model.discriminator_optimizer.set_steps(training->discriminator_adam_steps);
    }
    if (training && model.has_training_buffers()) {
        copy_flat("training.netg.exp_avg", model.generator.parameters.first_moments());
        copy_flat("training.netg.exp_avg_sq", model.generator.parameters.second_moments());
        copy_flat("training.netd.exp_avg", model.discriminator.parameters.first_moments());
        copy_flat("training.netd.exp_avg_sq", model.discriminator.parameters.second_moments());
    }
    // A finite-looking file can still carry NaN weights; refuse them rather than score with them.
    for (ParameterBlock* block : {&model.generator.parameters, &model.discriminator.parameters,
                                  &model.generator.statistics, &model.discriminator.statistics}) {
        for (float v : Tensor::host_values(block->values()))
            if (!std::isfinite(v)) throw FormatError("model file '" + path_ + "' holds non-finite weights");
    }
}

}  // namespace sga::model_file
