// What the scoring server counts, shown at GET /metrics in the Prometheus text format.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace cli {

class ServerMetrics {
public:
    // Upper bounds of the latency histogram's buckets, in seconds (+Inf follows).
    static constexpr std::array<double, 14> latency_buckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                               0.25,  0.5,    1,     2.5,  5,     10,   30};

    // One answered request. `endpoint` is one of the server's paths or "other", so the label
    // takes few values whatever clients send; seconds < 0: no latency known (a request that
    // could not be parsed).
    void record_request(const std::string& endpoint, int status, double seconds);
    // One refused or failed request, by why: bad_request, body_too_large, image_too_large,
    // busy, unauthorized, shutting_down, not_found, internal.
    void record_error(const std::string& kind);
    void record_images_scored(std::uint64_t count) { images_scored_ += count; }

    std::atomic<int> requests_in_flight{0};  // score requests admitted and not yet answered
    std::atomic<int> images_in_flight{0};    // images being decoded, scored or drawn

    std::string prometheus_text() const;

private:
    struct Latency {
        std::array<std::uint64_t, latency_buckets.size()> bucket_counts{};  // not cumulative
        std::uint64_t count = 0;
        double sum = 0;
    };
    mutable std::mutex mutex_;
    std::map<std::pair<std::string, int>, std::uint64_t> requests_;  // (endpoint, status)
    std::map<std::string, std::uint64_t> errors_;                    // kind
    std::map<std::string, Latency> latency_;                         // endpoint
    std::atomic<std::uint64_t> images_scored_{0};
};

}  // namespace cli
