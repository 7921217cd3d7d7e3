#include "safe_file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string_view>

#include "skipganomaly/error.hpp"

namespace sga::safe_file {
namespace {

constexpr const char* temporary_marker = ".tmp-";
constexpr std::size_t random_hex_digits = 16;
constexpr std::size_t tag_hex_digits = 8;
constexpr std::size_t pid_digits_max = 10;  // a 32-bit pid_t
// What a temporary adds to the target's name: the leading dot, the marker, the tag, the pid
// and the random part with their dashes. Fixed, so that every process cuts a long name at the
// same byte and finds the others' temporaries of the same target.
constexpr std::size_t temporary_overhead = 1 + 5 + tag_hex_digits + 1 + pid_digits_max + 1 + random_hex_digits;
constexpr int max_symlink_hops = 40;  // the kernel's own limit (ELOOP)
constexpr int creation_attempts = 100;

std::atomic<std::uint64_t (*)()> random_source_for_tests{nullptr};

std::uint64_t fnv1a(std::string_view text, std::uint64_t hash = 1469598103934665603ull) {
    for (const char c : text) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    return hash;
}

// Identifies the set of processes whose pids this process can check: this boot of this machine
// (another host over NFS, or this one before a reboot, has another boot_id) and this pid
// namespace (a container sharing the folder has its own). A temporary carrying another tag is
// never taken for stale: its process cannot be asked whether it still runs.
const std::string& host_tag() {
    static const std::string tag = [] {
        std::string identity;
        std::ifstream boot("/proc/sys/kernel/random/boot_id");
        std::getline(boot, identity);
        char link[128] = {};
        const ssize_t n = ::readlink("/proc/self/ns/pid", link, sizeof link - 1);
        if (n > 0) identity.append(link, static_cast<std::size_t>(n));
        char host[256] = {};
        if (::gethostname(host, sizeof host - 1) == 0) identity += host;
        char hex[tag_hex_digits + 1];
        std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(fnv1a(identity) & 0xFFFFFFFFu));
        return std::string(hex);
    }();
    return tag;
}

std::uint64_t random_suffix() {
    if (auto source = random_source_for_tests.load()) return source();
    std::uint64_t value = 0;
    if (::getrandom(&value, sizeof value, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof value)) return value;
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

// The first `limit` bytes of `name`, not cutting a UTF-8 sequence.
std::string cut_name(const std::string& name, std::size_t limit) {
    if (name.size() <= limit) return name;
    std::size_t end = limit;
    while (end > 0 && (static_cast<unsigned char>(name[end]) & 0xC0u) == 0x80u) --end;
    return name.substr(0, end);
}

std::size_t name_max(int folder_fd) {
    const long n = folder_fd >= 0 ? ::fpathconf(folder_fd, _PC_NAME_MAX) : -1;
    return n > 0 ? static_cast<std::size_t>(n) : NAME_MAX;
}

// ".<name, cut>.tmp-<tag>-": what every temporary of this target on this host begins with.
std::string temporary_prefix(const std::string& file_name, std::size_t max_name) {
    const std::size_t budget = max_name > temporary_overhead ? max_name - temporary_overhead : 0;
    std::string prefix(1, '.');
    prefix.append(cut_name(file_name, budget)).append(temporary_marker).append(host_tag()).append(1, '-');
    return prefix;
}

std::string temporary_name_within(const std::string& file_name, std::uint64_t suffix, std::size_t max_name) {
    char tail[pid_digits_max + random_hex_digits + 4];
    std::snprintf(tail, sizeof tail, "%d-%016llx", static_cast<int>(::getpid()), static_cast<unsigned long long>(suffix));
    return temporary_prefix(file_name, max_name) + tail;
}

std::string mode_string(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

std::string folder_of(const std::string& path) {
    const std::size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

std::string name_of(const std::string& path) {
    const std::size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string system_message(int error) { return std::strerror(error); }

// What the folder's open() or the target's fstatat() error means for a write of `path`.
[[noreturn]] void refuse_folder(const std::string& path, const std::string& folder, int error) {
    std::string reason;
    if (error == ENOENT) reason = "does not exist";
    else if (error == ENOTDIR) reason = "is not a folder (or a part of its path is not)";
    else reason = lookup_failure(error);
    throw IoError("cannot write '" + path + "': folder '" + folder + "' " + reason);
}

// An existing target (lstat'ed as `existing`) must be a regular file this user may write.
void check_existing_target(int folder_fd, const std::string& name, const std::string& path, const struct stat& existing) {
    if (S_ISDIR(existing.st_mode)) throw IoError("cannot write '" + path + "': it is a folder");
    if (S_ISLNK(existing.st_mode))
        throw IoError("cannot write '" + path + "': it became a symbolic link while it was being resolved");
    if (!S_ISREG(existing.st_mode))
        throw IoError("cannot write '" + path + "': it exists and is not a regular file (a FIFO, socket or device)");
    // The caller's right to change the file, as access(2) reports it (root may write anything).
    if (::faccessat(folder_fd, name.c_str(), W_OK, 0) != 0)
        throw IoError("cannot write '" + path + "': the existing file is not writable by this user (" +
                      system_message(errno) + "); expected a file this user may write, found mode " +
                      mode_string(existing.st_mode) + "; it is left unchanged");
}

// `path` with every symbolic link of its last component followed, so that a write replaces
// the file a link points to (in that file's folder) and not the link.
std::string resolve_links(const std::string& path) {
    std::string current = path;
    for (int hops = 0;; ++hops) {
        struct stat link {};
        if (::lstat(current.c_str(), &link) != 0 || !S_ISLNK(link.st_mode)) return current;
        if (hops == max_symlink_hops)
            throw IoError("cannot write '" + path + "': more than " + std::to_string(max_symlink_hops) +
                          " levels of symbolic links");
        // As the kernel's fs.protected_symlinks: in a sticky world-writable folder (/tmp), a link
        // is followed only when it belongs to us or to the folder's owner. Anyone may plant one
        // there, pointing at a file of ours.
        struct stat folder {};
        const std::string folder_path = folder_of(current);
        if (::stat(folder_path.c_str(), &folder) == 0 && (folder.st_mode & S_ISVTX) && (folder.st_mode & S_IWOTH) &&
            link.st_uid != ::geteuid() && link.st_uid != folder.st_uid)
            throw IoError("cannot write '" + path + "': '" + current + "' is a symbolic link owned by user " +
                          std::to_string(link.st_uid) + " in the sticky world-writable folder '" + folder_path +
                          "'; expected a link of this user's or none");
        std::string target(static_cast<std::size_t>(link.st_size > 0 ? link.st_size : PATH_MAX) + 1, '\0');
        const ssize_t n = ::readlink(current.c_str(), target.data(), target.size());
        if (n < 0) throw IoError("cannot read symbolic link '" + current + "': " + system_message(errno));
        if (static_cast<std::size_t>(n) >= target.size()) {
            --hops;  // the link changed size under us: read it again
            continue;
        }
        target.resize(static_cast<std::size_t>(n));
        if (target.empty()) throw IoError("cannot write '" + path + "': symbolic link '" + current + "' is empty");
        current = target.front() == '/' ? target : folder_of(current) + "/" + target;
    }
}

// ---- the registry of live temporaries, for signal handlers ----

constexpr int registry_slots = 64;
enum SlotState : int { slot_free = 0, slot_filling = 1, slot_live = 2 };
struct Slot {
    std::atomic<int> state{slot_free};
    int folder_fd = -1;
    char name[NAME_MAX + 1] = {};
};
static_assert(std::atomic<int>::is_always_lock_free, "signal handlers read the registry");
Slot registry[registry_slots];

// Beyond registry_slots writers at once, the extra temporaries are not registered: a signal
// leaves them, and the next write of their target removes them.
int register_temporary(int folder_fd, const std::string& name) {
    if (name.size() > NAME_MAX) return -1;
    for (int i = 0; i < registry_slots; ++i) {
        int expected = slot_free;
        if (!registry[i].state.compare_exchange_strong(expected, slot_filling)) continue;
        registry[i].folder_fd = folder_fd;
        std::memcpy(registry[i].name, name.c_str(), name.size() + 1);
        registry[i].state.store(slot_live, std::memory_order_release);
        return i;
    }
    return -1;
}

void unregister_temporary(int slot) {
    if (slot >= 0) registry[slot].state.store(slot_free, std::memory_order_release);
}

extern "C" void unlink_temporaries_then_die(int signal_number) {
    const int saved_errno = errno;
    remove_registered_temporaries();
    errno = saved_errno;
    // SA_RESETHAND restored the default action. The signal is blocked while this handler runs,
    // so raising it again delivers it as soon as the handler returns: the process ends as the
    // signal would have ended it (status, core dump).
    ::raise(signal_number);
}

// Temporaries of `file_name` in the folder whose process is gone: same host tag, a pid that no
// longer exists, a regular file of ours. Links and other users' files are left alone.
void remove_stale_temporaries(int folder_fd, const std::string& file_name) {
    const std::string prefix = temporary_prefix(file_name, name_max(folder_fd));
    const int listing_fd = ::openat(folder_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (listing_fd < 0) return;
    DIR* listing = ::fdopendir(listing_fd);
    if (!listing) {
        ::close(listing_fd);
        return;
    }
    while (const dirent* entry = ::readdir(listing)) {
        const std::string_view name(entry->d_name);
        if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) continue;
        // "<pid>-<16 hex digits>" follows the prefix.
        const std::string_view rest = name.substr(prefix.size());
        const std::size_t dash = rest.find('-');
        if (dash == 0 || dash == std::string_view::npos || dash > pid_digits_max ||
            rest.size() != dash + 1 + random_hex_digits)
            continue;
        bool well_formed = true;
        long long pid = 0;
        for (std::size_t i = 0; i < dash; ++i) {
            well_formed = well_formed && rest[i] >= '0' && rest[i] <= '9';
            pid = pid * 10 + (rest[i] - '0');
        }
        for (const char c : rest.substr(dash + 1)) well_formed = well_formed && std::isxdigit(static_cast<unsigned char>(c));
        if (!well_formed || pid <= 0 || pid > INT_MAX || pid == ::getpid()) continue;
        if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to ask
        struct stat st {};
        if (::fstatat(folder_fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
            st.st_uid != ::geteuid())
            continue;
        ::unlinkat(folder_fd, entry->d_name, 0);
    }
    ::closedir(listing);
}

}  // namespace

std::string temporary_name(const std::string& file_name, std::uint64_t suffix) {
    return temporary_name_within(file_name, suffix, NAME_MAX);
}

void set_random_suffix_source_for_tests(std::uint64_t (*source)()) { random_source_for_tests.store(source); }

void remove_registered_temporaries() noexcept {
    for (Slot& slot : registry)
        if (slot.state.load(std::memory_order_acquire) == slot_live) ::unlinkat(slot.folder_fd, slot.name, 0);
}

void install_temporary_cleanup_on_signals() {
    for (const int signal_number :
         {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE, SIGALRM, SIGXCPU, SIGUSR1, SIGUSR2, SIGABRT}) {
        struct sigaction current {};
        if (::sigaction(signal_number, nullptr, &current) != 0) continue;
        if ((current.sa_flags & SA_SIGINFO) || current.sa_handler != SIG_DFL) continue;
        struct sigaction cleanup {};
        cleanup.sa_handler = unlink_temporaries_then_die;
        sigemptyset(&cleanup.sa_mask);
        cleanup.sa_flags = SA_RESETHAND;
        ::sigaction(signal_number, &cleanup, nullptr);
    }
    struct sigaction current {};
    if (::sigaction(SIGXFSZ, nullptr, &current) == 0 && !(current.sa_flags & SA_SIGINFO) &&
        current.sa_handler == SIG_DFL) {
        struct sigaction ignore {};
        ignore.sa_handler = SIG_IGN;
        sigemptyset(&ignore.sa_mask);
        ::sigaction(SIGXFSZ, &ignore, nullptr);
    }
}

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
    SGA_CHECK_ARGUMENT(!path.empty(), "the path to write is empty");
    target_ = resolve_links(path);
    folder_ = folder_of(target_);
    name_ = name_of(target_);
    if (name_.empty() || name_ == "." || name_ == "..")
        throw IoError("cannot write '" + path + "': it names a folder, not a file");

    folder_fd_ = ::open(folder_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (folder_fd_ < 0) refuse_folder(path, folder_, errno);

    struct stat existing {};
    const bool exists = ::fstatat(folder_fd_, name_.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0;
    const int stat_error = errno;
    try {
        if (!exists && stat_error != ENOENT)
            throw IoError("cannot write '" + path + "': " + system_message(stat_error));
        if (exists) check_existing_target(folder_fd_, name_, path, existing);
        remove_stale_temporaries(folder_fd_, name_);

        // A new file gets 0666 less the umask, as any file the process creates; a replaced one
        // starts from its predecessor's permission bits (less the umask, so never wider) and gets
        // them exactly below, before any byte is written.
        const mode_t mode = exists ? (existing.st_mode & 0777) : 0666;
        for (int attempt = 0; attempt < creation_attempts && file_fd_ < 0; ++attempt) {
            temporary_name_ = temporary_name_within(name_, random_suffix(), name_max(folder_fd_));
            file_fd_ = ::openat(folder_fd_, temporary_name_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                mode);
            if (file_fd_ < 0 && errno != EEXIST)
                throw IoError("cannot write '" + path + "': cannot create a temporary file in '" + folder_ + "': " +
                              system_message(errno));
        }
        if (file_fd_ < 0)
            throw IoError("cannot write '" + path + "': " + std::to_string(creation_attempts) +
                          " temporary names in '" + folder_ + "' were all taken");
        slot_ = register_temporary(folder_fd_, temporary_name_);
        if (exists) {
            // Owner first: a change of owner clears the set-id bits that fchmod then restores.
            // An unprivileged caller cannot give the file away: it keeps the group where it may.
            if (::fchown(file_fd_, existing.st_uid, existing.st_gid) != 0)
                (void)::fchown(file_fd_, static_cast<uid_t>(-1), existing.st_gid);
            if (::fchmod(file_fd_, existing.st_mode & 07777) != 0)
                fail("cannot give the temporary file the mode of the file it replaces", errno);
        }
    } catch (...) {
        discard();
        throw;
    }
}

AtomicFile::~AtomicFile() { discard(); }

std::string AtomicFile::temporary_path() const {
    return temporary_name_.empty() ? std::string() : folder_ + "/" + temporary_name_;
}

void AtomicFile::discard() noexcept {
    if (file_fd_ >= 0) ::close(file_fd_);
    file_fd_ = -1;
    if (!temporary_name_.empty() && folder_fd_ >= 0) ::unlinkat(folder_fd_, temporary_name_.c_str(), 0);
    temporary_name_.clear();
    unregister_temporary(slot_);
    slot_ = -1;
    if (folder_fd_ >= 0) ::close(folder_fd_);
    folder_fd_ = -1;
}

void AtomicFile::fail(const std::string& what, int error) {
    discard();
    throw IoError("writing '" + path_ + "' failed: " + what + ": " + system_message(error) +
                  "; the previous file, if any, is unchanged and the temporary file is removed");
}

void AtomicFile::write(const void* data, std::size_t size) {
    if (file_fd_ < 0) throw IoError("writing '" + path_ + "' failed: the file was already committed or discarded");
    const char* bytes = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(file_fd_, bytes, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("write", errno);
        }
        if (n == 0) fail("write", EIO);
        bytes += n;
        size -= static_cast<std::size_t>(n);
    }
}

void AtomicFile::commit() {
    if (file_fd_ < 0) throw IoError("writing '" + path_ + "' failed: the file was already committed or discarded");
    if (::fsync(file_fd_) != 0) fail("fsync", errno);
    const int fd = file_fd_;
    file_fd_ = -1;
    if (::close(fd) != 0) fail("close", errno);
    if (::renameat(folder_fd_, temporary_name_.c_str(), folder_fd_, name_.c_str()) != 0)
        fail("cannot rename the temporary file over the target", errno);
    temporary_name_.clear();
    unregister_temporary(slot_);
    slot_ = -1;
    // The rename is durable only once the folder is; file systems that cannot sync a folder
    // say EINVAL, and there is nothing more to do on them.
    const int synced = ::fsync(folder_fd_);
    const int sync_error = errno;
    ::close(folder_fd_);
    folder_fd_ = -1;
    if (synced != 0 && sync_error != EINVAL && sync_error != EROFS)
        throw IoError("'" + path_ + "' was replaced, but syncing its folder '" + folder_ + "' failed (" +
                      system_message(sync_error) + "): the new file may not survive a crash");
}

std::string lookup_failure(int error) {
    switch (error) {
        case 0: return "exists";
        case ENOENT: return "does not exist";
        case ELOOP: return "is a symbolic link loop (or a chain of more than 40 links)";
        case ENOTDIR: return "does not exist: a part of its path is not a folder";
        case EACCES: return "cannot be reached: a folder on its path may not be searched by this user (" +
                            system_message(error) + ")";
        case ENAMETOOLONG: return "is a name too long for the file system (" + system_message(error) + ")";
        default: return "cannot be looked up: " + system_message(error);
    }
}

std::string lookup_failure(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) return {};
    return lookup_failure(errno);
}

void check_writable(const std::string& path) {
    SGA_CHECK_ARGUMENT(!path.empty(), "the path to write is empty");
    const std::string target = resolve_links(path);
    const std::string folder = folder_of(target);
    const std::string name = name_of(target);
    if (name.empty() || name == "." || name == "..") throw IoError("cannot write '" + path + "': it names a folder, not a file");
    const int folder_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (folder_fd < 0) refuse_folder(path, folder, errno);
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{folder_fd};
    if (::faccessat(folder_fd, ".", W_OK | X_OK, 0) != 0)
        throw IoError("cannot write '" + path + "': folder '" + folder + "' is not writable by this user (" +
                      system_message(errno) + ")");
    struct stat existing {};
    if (::fstatat(folder_fd, name.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0)
        check_existing_target(folder_fd, name, path, existing);
    else if (errno != ENOENT)
        throw IoError("cannot write '" + path + "': " + system_message(errno));
}

void write_atomically(const std::string& path, const void* data, std::size_t size) {
    AtomicFile file(path);
    file.write(data, size);
    file.commit();
}

}  // namespace sga::safe_file
