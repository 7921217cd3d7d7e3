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
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string_view>
#include <vector>

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

void read_and_load(std::vector<char> bytes) {
    try {
        const sga::model_file::Reader reader = sga::model_file::Reader::from_bytes(std::move(bytes), "fuzz");
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
    if (reseal(bytes)) read_and_load(std::move(bytes));
    return 0;
}
