// Small helpers shared by the test programs.
#pragma once

#include <catch2/catch.hpp>

#include <iostream>
#include <string>

#include "skipganomaly/config.hpp"
#include "skipganomaly/device.hpp"

namespace sga::testing {

// The message of the E that `call` throws; fails the test when it throws nothing.
template <typename E, typename F>
std::string message_of(F&& call) {
    try {
        call();
    } catch (const E& e) {
        return e.what();
    }
    FAIL("expected an exception");
    return {};
}

// True (after printing the line CTest looks for, SKIP_REGULAR_EXPRESSION in
// tests/CMakeLists.txt) when a CUDA test cannot run here.
inline bool skip_without_gpu() {
#if SKIPGANOMALY_WITH_CUDA
    if (!sga::cuda_device_available()) {
        std::cout << "SKIPPED: no CUDA device\n";
        return true;
    }
    return false;
#else
    std::cout << "SKIPPED: built without CUDA\n";
    return true;
#endif
}

}  // namespace sga::testing
