#include "image_bytes.hpp"

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

namespace cli {
namespace {

std::uint32_t byte_at(std::string_view b, std::size_t at) { return static_cast<unsigned char>(b[at]); }
std::uint32_t big_endian16(std::string_view b, std::size_t at) { return byte_at(b, at) << 8 | byte_at(b, at + 1); }
std::uint32_t big_endian32(std::string_view b, std::size_t at) { return big_endian16(b, at) << 16 | big_endian16(b, at + 2); }
std::uint32_t little_endian16(std::string_view b, std::size_t at) { return byte_at(b, at) | byte_at(b, at + 1) << 8; }
std::uint32_t little_endian32(std::string_view b, std::size_t at) {
    return little_endian16(b, at) | little_endian16(b, at + 2) << 16;
}

// The first start-of-frame segment's size: markers C0..CF except C4 (DHT), C8 (JPG) and CC
// (DAC) hold [length:2][precision:1][height:2][width:2].
std::optional<DeclaredSize> jpeg_size(std::string_view b) {
    std::size_t at = 2;
    while (at + 4 <= b.size()) {
        if (byte_at(b, at) != 0xff) return std::nullopt;
        const std::uint32_t marker = byte_at(b, at + 1);
        if (marker == 0xff) {  // fill byte
            ++at;
            continue;
        }
        if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {  // no length
            at += 2;
            continue;
        }
        const std::uint32_t length = big_endian16(b, at + 2);
        const bool frame = marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
        if (frame) {
            if (at + 9 > b.size()) return std::nullopt;
            return DeclaredSize{big_endian16(b, at + 7), big_endian16(b, at + 5)};
        }
        at += 2 + length;
    }
    return std::nullopt;
}

}  // namespace

std::optional<DeclaredSize> declared_image_size(std::string_view b) {
    static constexpr char png_signature[] = "\x89PNG\r\n\x1a\n";
    if (b.size() >= 24 && b.substr(0, 8) == std::string_view(png_signature, 8) && b.substr(12, 4) == "IHDR")
        return DeclaredSize{big_endian32(b, 16), big_endian32(b, 20)};
    if (b.size() >= 26 && b[0] == 'B' && b[1] == 'M') {
        if (little_endian32(b, 14) == 12) return DeclaredSize{little_endian16(b, 18), little_endian16(b, 20)};
        const auto width = static_cast<std::int32_t>(little_endian32(b, 18));
        const auto height = static_cast<std::int32_t>(little_endian32(b, 22));
        return DeclaredSize{std::abs(std::int64_t{width}), std::abs(std::int64_t{height})};  // negative: top-down rows
    }
    if (b.size() >= 4 && byte_at(b, 0) == 0xff && byte_at(b, 1) == 0xd8) return jpeg_size(b);
    return std::nullopt;
}

}  // namespace cli
