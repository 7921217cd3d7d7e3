// Images as bytes, as the scoring server receives them: the size a header declares, read
// before anything is decoded (decoding itself is the library's decode_image, image.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace cli {

struct DeclaredSize {
    std::int64_t width = 0, height = 0;
};

// The size a PNG, BMP or JPEG header declares, read without decoding anything; nullopt when the
// bytes start as none of them or end before the size. decode_image checks the rest.
std::optional<DeclaredSize> declared_image_size(std::string_view bytes);

}  // namespace cli
