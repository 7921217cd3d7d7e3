// Small helpers shared by the test programs.
#pragma once

#include <catch2/catch.hpp>

#include <string>

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

}  // namespace sga::testing
