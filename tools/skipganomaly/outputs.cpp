#include "outputs.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "safe_file.hpp"
#include "skipganomaly/error.hpp"

namespace fs = std::filesystem;

namespace cli {

void check_output_file(const std::string& option, const std::string& path) {
    try {
        sga::safe_file::check_writable(path);
    } catch (const sga::IoError& e) {
        throw sga::IoError("--" + option + ": " + e.what() + " (checked before starting, so nothing was done)");
    }
}

void check_output_folder(const std::string& option, const std::string& dir) {
    const auto refuse = [&](const std::string& why) {
        throw sga::IoError("--" + option + ": cannot write into folder '" + dir + "': " + why +
                           " (checked before starting, so nothing was done)");
    };
    if (dir.empty()) refuse("the path is empty");
    fs::path existing = fs::absolute(fs::path(dir)).lexically_normal();
    // Up to the nearest ancestor that exists (links followed): the folder, or where it will be made.
    for (;;) {
        std::error_code error;
        const fs::file_status status = fs::status(existing, error);
        if (fs::exists(status)) {
            if (!fs::is_directory(status)) refuse("'" + existing.string() + "' is not a folder");
            break;
        }
        if (error && error.value() != ENOENT && error.value() != ENOTDIR) {
            std::string why = existing.string();  // built in steps: GCC 12 warns falsely (-Wrestrict) on "'" + std::string
            why.insert(0, 1, '\'');
            refuse(why + "' " + sga::safe_file::lookup_failure(error.value()));
        }
        if (!existing.has_relative_path()) refuse("no part of the path exists");
        existing = existing.parent_path();
    }
    if (::access(existing.c_str(), W_OK | X_OK) != 0)
        refuse("folder '" + existing.string() + "' is not writable by this user (" + std::strerror(errno) + ")");
}

std::string partial_model_path(const std::string& out) {
    const fs::path path(out);
    return (path.parent_path() / (path.stem().string() + ".partial" + path.extension().string())).string();
}

}  // namespace cli
