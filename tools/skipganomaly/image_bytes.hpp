// Images as bytes, as the scoring server receives and sends them. Decoding and PNG encoding go
// through the library's load_image and save_png (one decoder, with its limits and checks on
// damaged files), which read and write files: here by way of a private scratch folder.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "skipganomaly/image.hpp"

namespace cli {

struct DeclaredSize {
    std::int64_t width = 0, height = 0;
};

// The size a PNG, BMP or JPEG header declares, read without decoding anything; nullopt when the
// bytes start as none of them or end before the size. load_image checks the rest.
std::optional<DeclaredSize> declared_image_size(std::string_view bytes);

// A folder of its own under the system's temporary folder ($TMPDIR, else /tmp), mode 0700,
// removed with what is left in it when the object goes. Its calls may run from many threads.
class ScratchFolder {
public:
    ScratchFolder();  // IoError when the folder cannot be made
    ~ScratchFolder();
    ScratchFolder(const ScratchFolder&) = delete;
    ScratchFolder& operator=(const ScratchFolder&) = delete;

    // `bytes` decoded by sga::load_image. Its IoError and FormatError messages name `label`
    // (e.g. "request body") where they would name the scratch file.
    sga::Image decode(std::string_view bytes, const std::string& label) const;
    // `image` as PNG bytes, by sga::save_png.
    std::string encode_png(const sga::Image& image) const;

    const std::filesystem::path& path() const { return folder_; }

private:
    std::filesystem::path next_file(const char* extension) const;

    std::filesystem::path folder_;
    mutable std::atomic<std::uint64_t> files_made_{0};
};

}  // namespace cli
