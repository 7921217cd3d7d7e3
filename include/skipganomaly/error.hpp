// Typed exceptions. The library throws these and never exits, aborts or ignores.
#pragma once

#include "skipganomaly/config.hpp"
#include <cstddef>
#include <stdexcept>
#include <string>

namespace sga {

// Base of every error skipganomaly throws.
class SKIPGANOMALY_API Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A caller passed something the library cannot work with (shape, option, buffer).
class SKIPGANOMALY_API InvalidArgument : public Error {
public:
    using Error::Error;
};

// A file (model, image, data set) is missing, unreadable or malformed.
class SKIPGANOMALY_API FormatError : public Error {
public:
    using Error::Error;
};

// File-system failure while reading or writing.
class SKIPGANOMALY_API IoError : public Error {
public:
    using Error::Error;
};

// A CUDA, cuDNN or device-related failure, or a CUDA request in a build without CUDA.
class SKIPGANOMALY_API DeviceError : public Error {
public:
    using Error::Error;
};

// The device ran out of memory (cudaErrorMemoryAllocation). The library catches it where it
// has a cheaper way on (a convolution falls back to an algorithm with a smaller workspace).
class SKIPGANOMALY_API OutOfMemoryError : public DeviceError {
public:
    using DeviceError::DeviceError;
};

// Training produced a non-finite loss or weight.
class SKIPGANOMALY_API NumericalError : public Error {
public:
    using Error::Error;
};

}  // namespace sga

namespace sga::detail {

// `path` (a __FILE__) from the repository's top folder on: "src/cuda/runtime.cpp" rather than
// the absolute path of the machine that built the library. For messages about internal
// failures (a CUDA call, a broken invariant), never about a caller's input.
constexpr const char* repository_relative_path(const char* path) {
    const char* result = path;
    for (const char* p = path; *p != '\0'; ++p) {
        const bool at_folder = p == path || p[-1] == '/' || p[-1] == '\\';
        if (!at_folder) continue;
        for (const char* top : {"src/", "include/", "tests/", "bench/", "eval/", "tools/", "examples/"}) {
            std::size_t n = 0;
            while (top[n] != '\0' && p[n] == top[n]) ++n;
            if (top[n] == '\0') result = p;  // the last such folder wins: build trees nest
        }
    }
    return result;
}

}  // namespace sga::detail

// Throws sga::InvalidArgument with `message` when `condition` is false. The message is about
// the caller's input and says what was wrong with it; it carries no source location (our file
// names and line numbers mean nothing to a caller, and would leak the build machine's paths).
#define SGA_CHECK_ARGUMENT(condition, message)                  \
    do {                                                        \
        if (!(condition)) throw ::sga::InvalidArgument(message); \
    } while (0)
