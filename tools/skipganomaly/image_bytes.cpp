#include "image_bytes.hpp"

#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "skipganomaly/error.hpp"

namespace fs = std::filesystem;

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

// `message` with every "'<scratch path>'" replaced by "'<label>'".
std::string relabel(std::string message, const std::string& path, const std::string& label) {
    const std::string from = "'" + path + "'", to = "'" + label + "'";
    for (std::size_t at = message.find(from); at != std::string::npos; at = message.find(from, at + to.size()))
        message.replace(at, from.size(), to);
    return message;
}

// Removes the file when it goes out of scope.
struct RemovedAfter {
    fs::path path;
    ~RemovedAfter() {
        std::error_code ignored;
        fs::remove(path, ignored);
    }
};

std::string read_whole(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw sga::IoError("cannot open the encoded PNG '" + path.string() + "'");
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw sga::IoError("cannot read back the encoded PNG '" + path.string() + "'");
    return bytes;
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

ScratchFolder::ScratchFolder() {
    std::error_code error;
    const fs::path base = fs::temp_directory_path(error);
    if (error) throw sga::IoError("cannot find a temporary folder for the server's scratch files: " + error.message());
    std::string pattern = (base / "skipganomaly-serve-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
        throw sga::IoError("cannot make the server's scratch folder '" + pattern + "': " + std::strerror(errno) +
                           " (set TMPDIR to a writable folder)");
    folder_ = pattern;
}

ScratchFolder::~ScratchFolder() {
    std::error_code ignored;
    fs::remove_all(folder_, ignored);
}

fs::path ScratchFolder::next_file(const char* extension) const {
    return folder_ / (std::to_string(files_made_.fetch_add(1)) + extension);
}

sga::Image ScratchFolder::decode(std::string_view bytes, const std::string& label) const {
    const RemovedAfter file{next_file(".image")};
    {
        std::ofstream out(file.path, std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!out.flush())
            throw sga::IoError("cannot write '" + label + "' to the scratch folder '" + folder_.string() + "'");
    }
    try {
        return sga::load_image(file.path.string());
    } catch (const sga::FormatError& e) {
        throw sga::FormatError(relabel(e.what(), file.path.string(), label));
    } catch (const sga::IoError& e) {
        throw sga::IoError(relabel(e.what(), file.path.string(), label));
    }
}

std::string ScratchFolder::encode_png(const sga::Image& image) const {
    const RemovedAfter file{next_file(".png")};
    sga::save_png(file.path.string(), image);
    return read_whole(file.path);
}

}  // namespace cli
