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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
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
