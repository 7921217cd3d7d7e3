// Internal: the one way the library writes a file (model files, checkpoints, PNGs). Not a
// public header (not installed), but exported from a shared library all the same
// (SKIPGANOMALY_API): the tests and the command-line tool call it.
//
// A write replaces the target atomically: the bytes go to a new temporary file beside the
// target, which is flushed, fsync'ed and renamed over it, and the folder is fsync'ed. Readers
// see the old file or the new one, never a mixture; a failure at any point leaves the old
// file as it was and removes the temporary. What holds for every write:
//   - The temporary's name is ".<target name>.tmp-<host tag>-<pid>-<16 random hex digits>",
//     the target name's part cut so that the whole fits the folder's NAME_MAX. It is created
//     with O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC (another random name on EEXIST), so a
//     file or symbolic link planted at any name is never opened, followed or overwritten.
//   - An existing target must be a regular file the caller may write (access(W_OK)); a
//     read-only target is refused with IoError, not replaced. A replaced file keeps its mode
//     and, where the caller may set them, its owner and group.
//   - A target that is a symbolic link (or a chain of them) is resolved first: the file it
//     points to is replaced, in its own folder, and the link stays a link. A link owned by
//     another user in a sticky world-writable folder (such as /tmp) is refused, as the
//     kernel's protected_symlinks refuses to follow it.
//   - Temporaries of the same target left by a process that no longer exists on this machine
//     (the process was killed) are removed by the next write of that target.
//   - While it exists, a temporary is registered so that remove_registered_temporaries() (from
//     a signal handler) can unlink it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "skipganomaly/config.hpp"

namespace sga::safe_file {

// Writes one file. Construct (checks the target, creates the temporary), write() any number of
// times, commit() once; a writer destroyed without a successful commit() removes its
// temporary and leaves the target untouched. Throws IoError naming the target and the
// system's reason (EFBIG "File too large", ENOSPC, EACCES, ...); InvalidArgument for an
// empty path. Not copyable or movable.
class SKIPGANOMALY_API AtomicFile {
public:
    explicit AtomicFile(const std::string& path);
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, std::size_t size);
    // fsync the temporary, rename it over the target, fsync the folder.
    void commit();

    // The file that commit() replaces: the path given, with symbolic links resolved.
    const std::string& target() const { return target_; }
    // The temporary's path (for tests); empty after commit() or a failure.
    std::string temporary_path() const;

private:
    [[noreturn]] void fail(const std::string& what, int error);
    void discard() noexcept;

    std::string path_;    // as the caller named it, for messages
    std::string target_;  // resolved
    std::string folder_;  // target_'s folder
    std::string name_;    // target_'s file name in folder_
    std::string temporary_name_;
    int folder_fd_ = -1;
    int file_fd_ = -1;
    int slot_ = -1;  // registration for remove_registered_temporaries, -1 when none
};

// The whole of a file in one call: AtomicFile, write, commit.
SKIPGANOMALY_API void write_atomically(const std::string& path, const void* data, std::size_t size);

// Throws IoError (with AtomicFile's messages) where a write of `path` would be refused for a
// reason known before writing: its folder missing, not a folder or not writable by this user;
// the target (links resolved) a folder, not a regular file, or a file this user may not write.
// Creates nothing. For programs that check their output paths before long work; the write
// itself checks again (the file system may change in between).
SKIPGANOMALY_API void check_writable(const std::string& path);

// Why a path cannot be looked up, from the lookup's errno, worded to follow the quoted path:
// "does not exist" (ENOENT), "is a symbolic link loop (...)" (ELOOP), "does not exist: a part
// of its path is not a folder" (ENOTDIR), "cannot be reached: ..." (EACCES), ...
SKIPGANOMALY_API std::string lookup_failure(int error);
// The same for `path` looked up now (stat, links followed); empty when it can be.
SKIPGANOMALY_API std::string lookup_failure(const std::string& path);

// For programs (the library itself never changes signal dispositions). Call once, early, from
// the main thread. For each of SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE, SIGALRM, SIGXCPU,
// SIGUSR1, SIGUSR2 and SIGABRT whose action is still the default (terminate), installs a
// handler that unlinks every registered temporary, then lets the signal end the process as it
// would have. A signal with a handler of the program's own, or ignored, is left alone (call
// remove_registered_temporaries() from that handler instead). SIGXFSZ, when still at its
// default, is set to ignored: a write beyond RLIMIT_FSIZE (ulimit -f) then fails with EFBIG,
// which the writer reports as IoError after removing its temporary, instead of killing the
// process. Safe to call more than once.
SKIPGANOMALY_API void install_temporary_cleanup_on_signals();

// Unlinks every temporary that an AtomicFile of this process holds at this moment.
// Async-signal-safe (only atomic loads and unlinkat). The writers' later calls fail with
// IoError.
SKIPGANOMALY_API void remove_registered_temporaries() noexcept;

// The temporary name a writer of this process gives target file name `file_name` with random
// `suffix` (exposed for tests, which plant files at the names a writer will try).
SKIPGANOMALY_API std::string temporary_name(const std::string& file_name, std::uint64_t suffix);

// Tests only: draw the random suffixes from `source` instead of the system's random numbers
// (nullptr restores them).
SKIPGANOMALY_API void set_random_suffix_source_for_tests(std::uint64_t (*source)());

}  // namespace sga::safe_file
