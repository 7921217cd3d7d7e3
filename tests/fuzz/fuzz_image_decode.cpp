// libFuzzer target: arbitrary bytes as an image file into sga::load_image and, when it decodes
// them, through sga::preprocess to 32 x 32 with 1 and with 3 channels.
//
// Any sga::Error is the expected outcome for a damaged file. Anything else (a crash, another
// exception, a sanitizer report, a timeout or an out-of-memory) is a finding.
//
// load_image takes a path, and the library has no public decode-from-memory call, so each
// input is written to one anonymous in-memory file (memfd) reached through /proc/self/fd;
// where memfd_create is missing, to a file under /dev/shm.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"

namespace {

struct Scratch {
    int fd = -1;
    std::string path;
    Scratch() {
        fd = ::memfd_create("sga_fuzz_image", 0);
        if (fd >= 0) {
            path = "/proc/self/fd/" + std::to_string(fd);
        } else {
            path = "/dev/shm/sga_fuzz_image_" + std::to_string(::getpid());
            fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
        }
        if (fd < 0) {
            std::perror("fuzz_image_decode: cannot create the scratch file");
            std::abort();
        }
    }
    ~Scratch() {
        ::close(fd);
        if (path.rfind("/dev/shm/", 0) == 0) ::unlink(path.c_str());
    }
    void write(const std::uint8_t* data, std::size_t size) const {
        if (::ftruncate(fd, 0) != 0) std::abort();
        std::size_t done = 0;
        while (done < size) {
            const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
            if (n <= 0) std::abort();
            done += static_cast<std::size_t>(n);
        }
    }
};

// KNOWN BUG, skipped so that the fuzzer can look past it: stb_image 2.27 (Debian 12's
// libstb-dev) does not check that a JPEG Huffman table (DHT) declares at most 256 codes, and
// writes past stbi__huffman::size[257] and ::values[256] when it does (stb 2.28 added the
// check "n > 256 -> bad DHT header"). tests/test_images.cpp holds the input the fuzzer found
// ("a JPEG Huffman table with more than 256 codes is refused"). Remove this filter once the
// stb in use has the check. Returns true for any input in which stb could meet such a table:
// every FF C4 pair in any input is read as a DHT segment, a superset of the ones stb parses
// (stb skips fill bytes, so a JPEG need not start with FF D8 exactly).
bool may_hold_oversized_huffman_table(const std::uint8_t* data, std::size_t size) {
    auto byte = [&](std::size_t at) -> int { return at < size ? data[at] : 0; };  // stb reads 0 past the end
    for (std::size_t i = 0; i + 1 < size; ++i) {
        if (data[i] != 0xFF || data[i + 1] != 0xC4) continue;
        std::size_t at = i + 2;
        long remaining = ((byte(at) << 8) | byte(at + 1)) - 2;
        at += 2;
        while (remaining > 0 && at < size) {
            const int q = byte(at);
            if ((q >> 4) > 1 || (q & 15) > 3) break;  // stb refuses the table before using the counts
            long codes = 0;
            for (int k = 1; k <= 16; ++k) codes += byte(at + static_cast<std::size_t>(k));
            if (codes > 256) return true;
            at += 17 + static_cast<std::size_t>(codes);
            remaining -= 17 + codes;
        }
    }
    return false;
}

// KNOWN BUG, skipped for the same reason: when a PNG's first IDAT chunk is empty (legal), stb
// 2.27 calls memcpy(NULL, source, 0) in stbi__getn, undefined behaviour that UBSan reports
// (harmless with glibc). tests/test_images.cpp: "a PNG whose first IDAT chunk is empty loads".
// Returns true for any PNG holding a zero-length IDAT chunk.
bool may_hold_empty_idat(const std::uint8_t* data, std::size_t size) {
    static constexpr std::uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    static constexpr std::uint8_t empty_idat[8] = {0, 0, 0, 0, 'I', 'D', 'A', 'T'};
    if (size < 8 || !std::equal(signature, signature + 8, data)) return false;
    return std::search(data, data + size, empty_idat, empty_idat + 8) != data + size;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (may_hold_oversized_huffman_table(data, size) || may_hold_empty_idat(data, size)) return 0;
    static const Scratch scratch;
    scratch.write(data, size);
    try {
        const sga::Image image = sga::load_image(scratch.path);
        const sga::ImageView view = image.view();
        std::vector<float> out(3 * 32 * 32);
        sga::preprocess(view, 32, 1, out.data());
        sga::preprocess(view, 32, 3, out.data());
    } catch (const sga::Error&) {
        // Refused with a typed error: what a damaged file must give.
    }
    return 0;
}
