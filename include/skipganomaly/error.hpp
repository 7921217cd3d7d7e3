// Typed exceptions. The library throws these and never exits, aborts or ignores.
#pragma once

#include <stdexcept>
#include <string>

namespace sga {

// Base of every error skipganomaly throws.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A caller passed something the library cannot work with (shape, option, buffer).
class InvalidArgument : public Error {
public:
    using Error::Error;
};

// A file (model, image, data set) is missing, unreadable or malformed.
class FormatError : public Error {
public:
    using Error::Error;
};

// File-system failure while reading or writing.
class IoError : public Error {
public:
    using Error::Error;
};

// A CUDA, cuDNN or device-related failure, or a CUDA request in a build without CUDA.
class DeviceError : public Error {
public:
    using Error::Error;
};

// The device ran out of memory (cudaErrorMemoryAllocation). The library catches it where it
// has a cheaper way on (a convolution falls back to an algorithm with a smaller workspace).
class OutOfMemoryError : public DeviceError {
public:
    using DeviceError::DeviceError;
};

// Training produced a non-finite loss or weight.
class NumericalError : public Error {
public:
    using Error::Error;
};

}  // namespace sga

// Throws sga::InvalidArgument carrying the failed condition and its location.
#define SGA_CHECK_ARGUMENT(condition, message)                                                   \
    do {                                                                                         \
        if (!(condition))                                                                        \
            throw ::sga::InvalidArgument(std::string(message) + " (check '" #condition "' at " + \
                                         __FILE__ + ":" + std::to_string(__LINE__) + ")");      \
    } while (0)
