// The scoring server of `skipganomaly serve`: HTTP endpoints over one loaded Detector
// (docs/serving.md). Kept apart from the command's options so that tests run it in-process.
//
//   POST /v1/score   an image body (PNG, JPEG, BMP) or multipart/form-data with several; JSON,
//                    or with ?output=mask|overlay a PNG (one image) or base64 PNGs (multipart)
//   GET  /healthz    200 while serving, 503 once shutting down; never needs the token
//   GET  /v1/model   architecture, recipe, thresholds, the model file's SHA-256
//   GET  /metrics    Prometheus text: requests, errors, latency histogram, in-flight gauges
//
// Each request is handled on one of `workers` threads; an image is scored with
// Detector::score on that thread, so concurrent single images meet in the library's score
// batcher and each gets the bits it gets alone.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "skipganomaly/detector.hpp"

namespace cli {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 8080;  // 0: any free port (ScoringServer::port() says which)
    // A body longer than this is answered 413 (its bytes are read and dropped, never held).
    std::size_t max_body_bytes = std::size_t{32} << 20;
    // An image whose header declares more pixels is answered 413 before it is decoded.
    std::int64_t max_pixels = std::int64_t{1} << 24;
    // Score requests admitted at once (reading, decoding, scoring); beyond: 429.
    int max_in_flight = 16;
    // Threads serving connections; a connection holds one while it is open (keep-alive
    // included), so more workers than max_in_flight leave room to answer 429, /healthz and
    // /metrics while every scoring place is taken.
    int workers = 24;
    // Non-empty: every endpoint but /healthz needs "Authorization: Bearer <token>" (else 401).
    std::string token;
};

// What GET /v1/model says about where the detector came from.
struct ModelSource {
    std::string file_name;  // the model file's name, without its folder
    std::string sha256;     // of the file's bytes, lowercase hex
    std::uintmax_t bytes = 0;
};

// The file's name, size and SHA-256; sga::IoError when it cannot be read.
ModelSource model_source(const std::string& path);

class ScoringServer {
public:
    // Binds options.host:options.port; throws sga::IoError when it cannot. `detector` must
    // outlive the server and see no fit(), calibrate() or set_threshold() while it serves.
    ScoringServer(const sga::Detector& detector, ModelSource source, ServerOptions options);
    ~ScoringServer();
    ScoringServer(const ScoringServer&) = delete;
    ScoringServer& operator=(const ScoringServer&) = delete;

    int port() const;  // the bound port

    // Serves until stop(); then lets every request already admitted finish, answers the
    // requests that still arrive on open connections 503, and returns.
    void run();
    // From any thread (not a signal handler), before, during or after run(); returns at once.
    void stop();
    bool stopping() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace cli
