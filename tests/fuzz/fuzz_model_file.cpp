// libFuzzer target: arbitrary bytes into model_file::Reader::from_bytes and, when the reader
// accepts them, into load_into on a model of the architecture the file declares.
//
// Any sga::Error is the expected outcome for a damaged file. Anything else (a crash, another
// exception, a sanitizer report, a timeout or an out-of-memory) is a finding.
//
// The file carries a CRC-32 of itself, so almost every mutation stops at the checksum. To
// reach the JSON header and tensor checks, each input is tried twice: as it is, and with its
// checksum re-sealed (the digits recomputed the way model_file::save writes them), as a
// forger would.
//
// A file the reader accepts is checked again here, without the reader's code, against the
// layout docs/model-format.md promises (check_layout). A file that breaks it is a finding
// too: the reader accepted what it must refuse, and the harness aborts with what is wrong.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "model_file.hpp"
#include "skipganomaly/engine/context.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"

namespace {

// The fuzzer must not spend its time or memory on large, valid models: the reader accepts
// architectures up to image_size 1024 and 1024 features, which is gigabytes of weights.
bool small_enough(const sga::Architecture& a) {
    return a.image_size <= 64 && a.generator_features <= 16 && a.discriminator_features <= 16 &&
           a.latent_size <= 64;
}

// The oracle: everything below up to read_and_load uses nlohmann::json and the standard
// library only, never the reader.

[[noreturn]] void accepted_invalid(const std::string& what) {
    std::fprintf(stderr, "==ORACLE== model_file::Reader::from_bytes accepted a file that breaks "
                         "docs/model-format.md: %s\n", what.c_str());
    std::abort();
}

// Sees every key of every object as the parser meets it (nlohmann's parse keeps the last of
// two equal keys silently) and records the first key an object names twice.
struct DuplicateKeys : nlohmann::json_sax<nlohmann::json> {
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    bool start_object(std::size_t) override { open_objects.emplace_back(); return true; }
    bool end_object() override { open_objects.pop_back(); return true; }
    bool key(string_t& name) override {
        if (!open_objects.back().insert(name).second && duplicate.empty()) duplicate = name;
        return true;
    }
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
};

// `text` as JSON, which must be valid and name no key twice in any object.
nlohmann::json parse_strict(std::string_view text, const std::string& where) {
    DuplicateKeys keys;
    if (!nlohmann::json::sax_parse(text, &keys))
        accepted_invalid(where + " is not valid JSON");
    if (!keys.duplicate.empty()) accepted_invalid(where + " names '" + keys.duplicate + "' twice");
    return nlohmann::json::parse(text);
}

// docs/model-format.md, "Layout" and "Integrity": an 8-byte little-endian header length N,
// at most 16 MiB, a multiple of 8 and within the file; N bytes of JSON naming nothing twice
// in any object, holding "__metadata__" (a map of strings; "architecture", "detector" and
// "training_state", when present, JSON objects naming nothing twice) and tensors
// {dtype F32|F16|I64, shape, data_offsets [begin, end]} whose byte counts match their shapes
// and whose ranges, taken in order of offset, tile the data area: the first begins at 0,
// each begins where the previous one ends, the last ends at the end of the file.
// Not checked here: the checksum (the harness re-seals it), the metadata's contents and the
// architecture's tensor list.
void check_layout(const std::vector<char>& file) {
    if (file.size() < 8) accepted_invalid("a file of " + std::to_string(file.size()) + " bytes");
    std::uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<unsigned char>(file[static_cast<std::size_t>(i)]);
    const std::uint64_t after_length = file.size() - 8;
    if (header_size > (std::uint64_t{16} << 20)) accepted_invalid("header length " + std::to_string(header_size) + " > 16 MiB");
    if (header_size > after_length)
        accepted_invalid("header length " + std::to_string(header_size) + " beyond the file's " + std::to_string(after_length) + " bytes");
    if (header_size % 8 != 0) accepted_invalid("header length " + std::to_string(header_size) + " not a multiple of 8");
    const std::uint64_t data_size = after_length - header_size;

    const nlohmann::json header =
        parse_strict(std::string_view(file.data() + 8, static_cast<std::size_t>(header_size)), "the header");
    if (!header.is_object()) accepted_invalid("the header is not a JSON object");
    if (!header.contains("__metadata__") || !header["__metadata__"].is_object()) accepted_invalid("no __metadata__ object");
    for (const auto& [key, value] : header["__metadata__"].items()) {
        if (!value.is_string()) accepted_invalid("metadata '" + key + "' is not a string");
        if (key == "architecture" || key == "detector" || key == "training_state")
            if (!parse_strict(value.get<std::string>(), "metadata '" + key + "'").is_object())
                accepted_invalid("metadata '" + key + "' is not a JSON object");
    }

    std::vector<std::tuple<std::uint64_t, std::uint64_t, std::string>> ranges;  // begin, end, name
    for (const auto& [name, tensor] : header.items()) {
        if (name == "__metadata__") continue;
        const std::string where = "tensor '" + name + "'";
        if (!tensor.is_object() || !tensor.contains("dtype") || !tensor.contains("shape") || !tensor.contains("data_offsets"))
            accepted_invalid(where + " is not {dtype, shape, data_offsets}");
        const nlohmann::json& dtype = tensor["dtype"];
        const std::uint64_t element_bytes = dtype == "F32" ? 4 : dtype == "F16" ? 2 : dtype == "I64" ? 8 : 0;
        if (element_bytes == 0) accepted_invalid(where + " has dtype " + dtype.dump());
        const nlohmann::json& shape = tensor["shape"];
        if (!shape.is_array()) accepted_invalid(where + " has shape " + shape.dump());
        // The byte count, exactly: an empty tensor when a dimension is 0, else the product,
        // which must not exceed 2^64 - 1 (no file holds that many bytes).
        bool empty = false, overflow = false;
        std::uint64_t bytes = element_bytes;
        for (const nlohmann::json& dimension : shape) {
            if (!dimension.is_number_unsigned()) accepted_invalid(where + " has shape " + shape.dump());
            const std::uint64_t d = dimension.get<std::uint64_t>();
            empty = empty || d == 0;
            overflow = overflow || __builtin_mul_overflow(bytes, d, &bytes);
        }
        if (empty) bytes = 0;
        const nlohmann::json& offsets = tensor["data_offsets"];
        if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
            accepted_invalid(where + " has data_offsets " + offsets.dump());
        const std::uint64_t begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
        if (begin > end || end > data_size)
            accepted_invalid(where + " has data_offsets " + offsets.dump() + " outside the " + std::to_string(data_size) + " data bytes");
        if ((overflow && !empty) || end - begin != bytes)
            accepted_invalid(where + ": shape " + shape.dump() + " of " + dtype.dump() + " does not fill data_offsets " + offsets.dump());
        ranges.emplace_back(begin, end, name);
    }
    std::sort(ranges.begin(), ranges.end());
    std::uint64_t next = 0;
    for (const auto& [begin, end, name] : ranges) {
        if (begin != next)
            accepted_invalid("tensor '" + name + "' begins at " + std::to_string(begin) + ", expected " + std::to_string(next) +
                             (begin < next ? " (an overlap)" : " (a gap)"));
        next = end;
    }
    if (next != data_size)
        accepted_invalid("the tensors end at data byte " + std::to_string(next) + ", the file at " + std::to_string(data_size));
}

void read_and_load(const std::vector<char>& bytes) {
    try {
        const sga::model_file::Reader reader = sga::model_file::Reader::from_bytes(bytes, "fuzz");
        check_layout(bytes);
        (void)reader.training_state();
        const sga::Architecture architecture = reader.architecture();
        if (!small_enough(architecture)) return;
        sga::Context ctx(sga::Device::Cpu);
        sga::SkipGanomaly model(architecture, {}, {});
        model.materialize(ctx);
        reader.load_into(model);
    } catch (const sga::Error&) {
        // Refused with a typed error: what a damaged or forged file must give.
    }
    // Any other exception escapes and libFuzzer reports it as a crash (uncaught exception).
}

// Recomputes the "crc32:XXXXXXXX" digits of the header, when there is one; false otherwise.
bool reseal(std::vector<char>& bytes) {
    if (bytes.size() < 8) return false;
    std::uint64_t header_size = 0;
    for (int i = 0; i < 8; ++i)
        header_size |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)])) << (8 * i);
    if (header_size > bytes.size() - 8) return false;
    const std::string_view header(bytes.data() + 8, static_cast<std::size_t>(header_size));
    const std::string_view needle = "\"crc32:";
    const std::size_t at = header.find(needle);
    if (at == std::string_view::npos || at + needle.size() + 8 > header.size()) return false;
    char* digits = bytes.data() + 8 + at + needle.size();
    std::memset(digits, '0', 8);
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", sga::model_file::crc32(bytes.data(), bytes.size()));
    std::memcpy(digits, hex, 8);
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const char* begin = reinterpret_cast<const char*>(data);
    std::vector<char> bytes(begin, begin + size);
    read_and_load(bytes);
    if (reseal(bytes)) read_and_load(bytes);
    return 0;
}
