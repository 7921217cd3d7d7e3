#include "server_metrics.hpp"

#include <sstream>

namespace cli {
namespace {

// A bucket's bound as written in its le label: the shortest form, "0.0025", not 17 digits.
std::string bucket_label(double bound) {
    std::ostringstream s;
    s << bound;
    return s.str();
}

}  // namespace

void ServerMetrics::record_request(const std::string& endpoint, int status, double seconds) {
    const std::lock_guard lock(mutex_);
    ++requests_[{endpoint, status}];
    if (seconds < 0) return;
    Latency& l = latency_[endpoint];
    std::size_t b = 0;
    while (b < latency_buckets.size() && seconds > latency_buckets[b]) ++b;
    if (b < latency_buckets.size()) ++l.bucket_counts[b];
    ++l.count;
    l.sum += seconds;
}

void ServerMetrics::record_error(const std::string& kind) {
    const std::lock_guard lock(mutex_);
    ++errors_[kind];
}

std::string ServerMetrics::prometheus_text() const {
    std::ostringstream out;
    out.precision(17);
    const std::lock_guard lock(mutex_);
    out << "# HELP skipganomaly_requests_total HTTP requests answered, by endpoint and status code.\n"
           "# TYPE skipganomaly_requests_total counter\n";
    for (const auto& [key, count] : requests_)
        out << "skipganomaly_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} " << count
            << '\n';
    out << "# HELP skipganomaly_errors_total Requests refused or failed, by reason.\n"
           "# TYPE skipganomaly_errors_total counter\n";
    for (const auto& [kind, count] : errors_) out << "skipganomaly_errors_total{reason=\"" << kind << "\"} " << count << '\n';
    out << "# HELP skipganomaly_request_duration_seconds Time from a request's headers to its answer, by endpoint.\n"
           "# TYPE skipganomaly_request_duration_seconds histogram\n";
    for (const auto& [endpoint, l] : latency_) {
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b < latency_buckets.size(); ++b) {
            cumulative += l.bucket_counts[b];
            out << "skipganomaly_request_duration_seconds_bucket{endpoint=\"" << endpoint << "\",le=\""
                << bucket_label(latency_buckets[b]) << "\"} " << cumulative << '\n';
        }
        out << "skipganomaly_request_duration_seconds_bucket{endpoint=\"" << endpoint << "\",le=\"+Inf\"} " << l.count
            << '\n'
            << "skipganomaly_request_duration_seconds_sum{endpoint=\"" << endpoint << "\"} " << l.sum << '\n'
            << "skipganomaly_request_duration_seconds_count{endpoint=\"" << endpoint << "\"} " << l.count << '\n';
    }
    out << "# HELP skipganomaly_images_scored_total Images scored.\n"
           "# TYPE skipganomaly_images_scored_total counter\n"
           "skipganomaly_images_scored_total "
        << images_scored_.load() << '\n'
        << "# HELP skipganomaly_requests_in_flight Score requests admitted and not yet answered.\n"
           "# TYPE skipganomaly_requests_in_flight gauge\n"
           "skipganomaly_requests_in_flight "
        << requests_in_flight.load() << '\n'
        << "# HELP skipganomaly_images_in_flight Images being decoded, scored or drawn.\n"
           "# TYPE skipganomaly_images_in_flight gauge\n"
           "skipganomaly_images_in_flight "
        << images_in_flight.load() << '\n';
    return out.str();
}

}  // namespace cli
