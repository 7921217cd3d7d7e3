#include "server.hpp"

#include <httplib.h>
#include <sys/socket.h>
#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "heatmap.hpp"
#include "image_bytes.hpp"
#include "server_metrics.hpp"
#include "skipganomaly/config.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/recipe.hpp"

namespace cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// A request answered with an error: the status, the reason /metrics counts it under
// (ServerMetrics::record_error) and a message for the client.
struct Refusal {
    int status;
    std::string reason;
    std::string message;
};

// When the request now handled on this thread began (its headers were read); set by the
// pre-routing handler, taken by the logger, which httplib calls on the same thread once the
// answer is written.
thread_local std::optional<Clock::time_point> request_start;

std::string endpoint_label(const std::string& path) {
    for (const char* known : {"/v1/score", "/v1/model", "/healthz", "/metrics"})
        if (path == known) return known;
    return "other";
}

enum class Output { Json, Mask, Overlay };

std::string base64(const std::string& bytes) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    for (std::size_t i = 0; i < bytes.size(); i += 3) {
        const std::size_t n = std::min<std::size_t>(3, bytes.size() - i);
        std::uint32_t group = 0;
        for (std::size_t k = 0; k < 3; ++k)
            group = group << 8 | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
        for (std::size_t k = 0; k < 4; ++k) out += k <= n ? alphabet[(group >> (18 - 6 * k)) & 63] : '=';
    }
    return out;
}

// Equal strings, in a time that depends on their lengths only.
bool same_secret(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    unsigned char difference = 0;
    for (std::size_t i = 0; i < a.size(); ++i) difference |= static_cast<unsigned char>(a[i] ^ b[i]);
    return difference == 0;
}

bool starts_ignoring_case(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(text[i])) != std::tolower(static_cast<unsigned char>(prefix[i]))) return false;
    return true;
}

std::string exact(float value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", static_cast<double>(value));  // 9 digits: the float back, bit for bit
    return text;
}

json result_json(const sga::ScoreResult& r) {
    return {{"score", r.score},
            {"normalized_score", r.normalized_score},
            {"is_anomaly", r.is_anomaly},
            {"threshold", r.threshold},
            {"reconstruction_error", r.reconstruction_error},
            {"latent_error", r.latent_error}};
}

// One image of a request: the whole body, or one part of a multipart body.
struct Upload {
    std::string field, file_name;  // multipart only
    std::string bytes;
    // How error messages name it.
    std::string label() const { return field.empty() && file_name.empty() ? "request body" : file_name.empty() ? field : file_name; }
};

std::string png_string(const sga::Image& image) {
    const std::vector<std::uint8_t> png = sga::encode_png(image);
    return {png.begin(), png.end()};
}

}  // namespace

struct ScoringServer::Impl {
    Impl(const sga::Detector& d, ModelSource s, ServerOptions o) : detector(d), source(std::move(s)), options(std::move(o)) {}

    const sga::Detector& detector;
    const ModelSource source;
    const ServerOptions options;
    httplib::Server http;
    ServerMetrics metrics;
    std::string model_json;
    int port = 0;
    std::atomic<bool> stopping{false}, run_active{false};

    void install_routes();
    std::string describe_model() const;

    void refuse(httplib::Response& res, const Refusal& r) {
        metrics.record_error(r.reason);
        res.status = r.status;
        res.set_content(json{{"error", r.message}}.dump() + "\n", "application/json");
        if (r.status == 401) res.set_header("WWW-Authenticate", "Bearer");
        if (r.status == 429) res.set_header("Retry-After", "1");
        if (r.status == 503) res.set_header("Connection", "close");
    }

    // Shutting down (503) or the token missing or wrong (401): the refusals of every endpoint
    // but /healthz.
    std::optional<Refusal> gate(const httplib::Request& req) const {
        if (stopping) return Refusal{503, "shutting_down", "the server is shutting down"};
        if (options.token.empty()) return std::nullopt;
        const std::string header = req.get_header_value("Authorization");
        constexpr std::string_view scheme = "Bearer ";
        if (!starts_ignoring_case(header, scheme))
            return Refusal{401, "unauthorized", "this server needs \"Authorization: Bearer <token>\""};
        if (!same_secret(std::string_view(header).substr(scheme.size()), options.token))
            return Refusal{401, "unauthorized", "the bearer token is not this server's"};
        return std::nullopt;
    }

    void handle_score(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);
    std::vector<Upload> read_uploads(const httplib::Request& req, httplib::Response& res,
                                     const httplib::ContentReader& reader);
    sga::ScoreResult score_upload(const Upload& upload, Output output, sga::Image& image);
};

namespace {

// Reads and drops the body, so that the connection's next request starts where it should.
void drain(const httplib::Request& req, const httplib::ContentReader& reader) {
    if (req.is_multipart_form_data())
        reader([](const httplib::MultipartFormData&) { return true; }, [](const char*, std::size_t) { return true; });
    else
        reader([](const char*, std::size_t) { return true; });
}

}  // namespace

std::vector<Upload> ScoringServer::Impl::read_uploads(const httplib::Request& req, httplib::Response& res,
                                                      const httplib::ContentReader& reader) {
    std::vector<Upload> uploads;
    std::size_t total = 0;
    bool too_large = false;
    // Bytes past the limit are read and dropped (a body without Content-Length, chunked);
    // httplib drops a body whose Content-Length is over the limit itself, status 413.
    const auto keep = [&](std::string& into, const char* data, std::size_t n) {
        total += n;
        if (total > options.max_body_bytes) {
            too_large = true;
            uploads.clear();
            uploads.shrink_to_fit();
        }
        if (!too_large) into.append(data, n);
        return true;
    };
    bool read = false;
    if (req.is_multipart_form_data()) {
        read = reader(
            [&](const httplib::MultipartFormData& part) {
                if (!too_large) uploads.push_back(Upload{part.name, part.filename, {}});
                return true;
            },
            [&](const char* data, std::size_t n) { return too_large || keep(uploads.back().bytes, data, n); });
    } else {
        uploads.emplace_back();
        read = reader([&](const char* data, std::size_t n) { return too_large || keep(uploads.back().bytes, data, n); });
    }
    const std::string limit = "the limit is " + std::to_string(options.max_body_bytes) + " bytes (--max-body-bytes)";
    if (too_large || res.status == 413) throw Refusal{413, "body_too_large", "the body is too large: " + limit};
    if (!read && !req.has_header("Content-Length") && !req.has_header("Transfer-Encoding"))
        throw Refusal{400, "bad_request", "no body: expected one with Content-Length (or chunked)"};
    if (!read)
        throw Refusal{400, "bad_request",
                      req.is_multipart_form_data() ? "the multipart/form-data body could not be read (a boundary missing or malformed)"
                                                   : "the body could not be read"};
    if (uploads.empty())
        throw Refusal{400, "bad_request", "the multipart/form-data body holds no part; expected one image per part"};
    if (uploads.size() == 1 && uploads.front().bytes.empty() && !req.is_multipart_form_data())
        throw Refusal{400, "bad_request", "the body is empty; expected a PNG, JPEG or BMP image, or multipart/form-data"};
    return uploads;
}

sga::ScoreResult ScoringServer::Impl::score_upload(const Upload& upload, Output output, sga::Image& image) {
    const std::string too_many = "; this server takes at most " + std::to_string(options.max_pixels) + " (--max-pixels)";
    if (const auto declared = declared_image_size(upload.bytes))
        if (declared->width * declared->height > options.max_pixels)
            throw Refusal{413, "image_too_large",
                          "image '" + upload.label() + "' declares " + std::to_string(declared->width) + " x " +
                              std::to_string(declared->height) + " pixels" + too_many};
    try {
        image = sga::decode_image({reinterpret_cast<const std::uint8_t*>(upload.bytes.data()), upload.bytes.size()},
                                  upload.label());
    } catch (const sga::FormatError& e) {
        throw Refusal{400, "bad_request", e.what()};
    }
    if (std::int64_t{image.width} * image.height > options.max_pixels)
        throw Refusal{413, "image_too_large",
                      "image '" + upload.label() + "' has " + std::to_string(image.width) + " x " +
                          std::to_string(image.height) + " pixels" + too_many};
    sga::ScoreOptions score_options;
    score_options.anomaly_map = output == Output::Overlay;
    score_options.anomaly_mask = output == Output::Mask;
    try {
        return detector.score(image.view(), score_options);
    } catch (const sga::InvalidArgument& e) {
        throw Refusal{400, "bad_request", "image '" + upload.label() + "' cannot be scored: " + e.what()};
    }
}

void ScoringServer::Impl::handle_score(const httplib::Request& req, httplib::Response& res,
                                       const httplib::ContentReader& reader) {
    if (const std::optional<Refusal> refusal = gate(req)) {
        drain(req, reader);
        return refuse(res, *refusal);
    }
    const std::string output_name = req.has_param("output") ? req.get_param_value("output") : "json";
    const Output output = output_name == "mask" ? Output::Mask : output_name == "overlay" ? Output::Overlay : Output::Json;
    std::optional<Refusal> early;
    if (output == Output::Json && output_name != "json")
        early = Refusal{400, "bad_request", "output must be json, mask or overlay, found '" + output_name + "'"};
    else if (output == Output::Mask && detector.pixel_statistics().count == 0)
        early = Refusal{400, "bad_request",
                        "this model has no pixel threshold, so no mask: calibrate it on normal images first "
                        "(skipganomaly calibrate)"};
    // A place among the max_in_flight requests scored at once, or 429.
    int admitted = metrics.requests_in_flight.load();
    if (!early)
        do {
            if (admitted >= options.max_in_flight) break;
        } while (!metrics.requests_in_flight.compare_exchange_weak(admitted, admitted + 1));
    if (!early && admitted >= options.max_in_flight)
        early = Refusal{429, "busy", "the server is scoring " + std::to_string(options.max_in_flight) +
                                         " requests (--max-in-flight); try again shortly"};
    if (early) {
        drain(req, reader);
        return refuse(res, *early);
    }
    struct Release {
        std::atomic<int>& count;
        ~Release() { --count; }
    } release{metrics.requests_in_flight};

    try {
        const std::vector<Upload> uploads = read_uploads(req, res, reader);
        const bool multipart = req.is_multipart_form_data();
        json entries = json::array();
        for (const Upload& upload : uploads) {
            ++metrics.images_in_flight;
            struct Done {
                std::atomic<int>& count;
                ~Done() { --count; }
            } done{metrics.images_in_flight};
            sga::Image image;
            const sga::ScoreResult r = score_upload(upload, output, image);
            metrics.record_images_scored(1);
            std::string png;
            if (output == Output::Mask) png = png_string(mask_picture(r));
            if (output == Output::Overlay) png = png_string(heatmap_picture(image, r, map_scale(r.anomaly_map)));
            if (!multipart && output != Output::Json) {
                res.set_header("X-Score", exact(r.score));
                res.set_header("X-Normalized-Score", exact(r.normalized_score));
                res.set_header("X-Is-Anomaly", r.is_anomaly ? "true" : "false");
                res.set_header("X-Threshold", exact(r.threshold));
                res.set_content(png, "image/png");
                return;
            }
            json entry = result_json(r);
            if (!multipart) {
                res.set_content(entry.dump() + "\n", "application/json");
                return;
            }
            entry["field"] = upload.field;
            entry["file_name"] = upload.file_name;
            if (!png.empty()) entry[output == Output::Mask ? "mask_png" : "overlay_png"] = base64(png);
            entries.push_back(std::move(entry));
        }
        res.set_content(json{{"images", std::move(entries)}}.dump() + "\n", "application/json");
    } catch (const Refusal& r) {
        refuse(res, r);
    } catch (const std::bad_alloc&) {
        refuse(res, Refusal{500, "internal", "out of memory scoring the request"});
    } catch (const std::exception& e) {
        refuse(res, Refusal{500, "internal", e.what()});
    }
}

std::string ScoringServer::Impl::describe_model() const {
    const sga::DetectorOptions& o = detector.options();
    const sga::Architecture& a = o.architecture;
    const sga::PixelStatistics& pixels = detector.pixel_statistics();
    const sga::ScoreStatistics& validation = detector.validation_statistics();
    json model = {
        {"version", SKIPGANOMALY_VERSION_STRING},
        {"file", {{"name", source.file_name}, {"sha256", source.sha256}, {"bytes", source.bytes}}},
        {"architecture",
         {{"image_size", a.image_size},
          {"channels", a.channels},
          {"generator_features", a.generator_features},
          {"discriminator_features", a.discriminator_features},
          {"latent_size", a.latent_size},
          {"bottleneck_channels", a.bottleneck_channels},
          {"rotation_head", a.rotation_head}}},
        {"recipe", json::parse(sga::recipe_to_json(o.recipe))},
        {"threshold", detector.threshold()},
        {"pixel_threshold", pixels.count > 0 ? json(pixels.threshold) : json(nullptr)},
        {"validation_scores", {{"count", validation.count}, {"min", validation.min}, {"max", validation.max}}},
        {"tiling", o.tiling.enabled() ? json{{"tile", o.tiling.tile}, {"stride", o.tiling.step()}} : json(nullptr)},
        {"scoring_mode", o.scoring_mode == sga::ScoringMode::RunningStatistics ? "running" : "batch"},
        {"precision", sga::precision_name(detector.active_precision())},  // what scoring computes in
        {"device", sga::to_string(detector.device())},
    };
    return model.dump() + "\n";
}

void ScoringServer::Impl::install_routes() {
    const auto gated = [this](auto handler) {
        return [this, handler](const httplib::Request& req, httplib::Response& res) {
            if (const std::optional<Refusal> refusal = gate(req)) return refuse(res, *refusal);
            handler(req, res);
        };
    };
    http.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
        if (stopping) return refuse(res, Refusal{503, "shutting_down", "the server is shutting down"});
        res.set_content("{\"status\":\"ok\"}\n", "application/json");
    });
    http.Get("/v1/model", gated([this](const httplib::Request&, httplib::Response& res) {
        res.set_content(model_json, "application/json");
    }));
    http.Get("/metrics", gated([this](const httplib::Request&, httplib::Response& res) {
        res.set_content(metrics.prometheus_text(), "text/plain; version=0.0.4");
    }));
    http.Post("/v1/score", [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
        handle_score(req, res, reader);
    });
    // Every other request with a body is read through here, so that no body is held whole
    // (httplib would buffer a chunked one without limit).
    const auto unknown = [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
        drain(req, reader);
        if (const std::optional<Refusal> refusal = gate(req)) return refuse(res, *refusal);
        refuse(res, Refusal{404, "not_found", "no endpoint " + req.method + " " + req.path});
    };
    http.Post(".*", unknown);
    http.Put(".*", unknown);
    http.Patch(".*", unknown);
    http.Delete(".*", unknown);

    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
        request_start = Clock::now();
        if (req.method != "PRI") return httplib::Server::HandlerResponse::Unhandled;
        refuse(res, Refusal{405, "bad_request", "method PRI is not served"});  // its body would be buffered
        return httplib::Server::HandlerResponse::Handled;
    });
    // httplib's own refusals (an unparsable request, no such GET endpoint): a JSON body too.
    http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        const Refusal r = res.status == 404 ? Refusal{404, "not_found", "no endpoint " + req.method + " " + req.path}
                          : res.status == 413 ? Refusal{413, "body_too_large", "the body is too large"}
                                              : Refusal{res.status, "bad_request", "the request could not be read (HTTP status " + std::to_string(res.status) + ")"};
        refuse(res, r);
        return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
        std::string what = "unknown error";
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        refuse(res, Refusal{500, "internal", what});
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
        const double seconds =
            request_start ? std::chrono::duration<double>(Clock::now() - *request_start).count() : -1.0;
        request_start.reset();
        metrics.record_request(endpoint_label(req.path), res.status, seconds);
    });
}

ModelSource model_source(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw sga::IoError("cannot read the model file '" + path + "': " + std::strerror(errno));
    const std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> digest(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!digest || EVP_DigestInit_ex(digest.get(), EVP_sha256(), nullptr) != 1)
        throw sga::Error("OpenSSL cannot compute SHA-256");
    ModelSource source;
    source.file_name = std::filesystem::path(path).filename().string();
    std::vector<char> buffer(std::size_t{1} << 16);
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
        EVP_DigestUpdate(digest.get(), buffer.data(), static_cast<std::size_t>(in.gcount()));
        source.bytes += static_cast<std::uintmax_t>(in.gcount());
    }
    if (in.bad()) throw sga::IoError("cannot read the model file '" + path + "': read error");
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(digest.get(), hash, &length);
    static constexpr char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < length; ++i) {
        source.sha256 += hex[hash[i] >> 4];
        source.sha256 += hex[hash[i] & 15];
    }
    return source;
}

ScoringServer::ScoringServer(const sga::Detector& detector, ModelSource source, ServerOptions options)
    : impl_(std::make_unique<Impl>(detector, std::move(source), std::move(options))) {
    Impl& s = *impl_;
    SGA_CHECK_ARGUMENT(s.options.max_in_flight >= 1, "max_in_flight must be at least 1");
    SGA_CHECK_ARGUMENT(s.options.workers >= 1, "workers must be at least 1");
    s.model_json = s.describe_model();
    s.install_routes();
    const auto workers = static_cast<std::size_t>(s.options.workers);
    s.http.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
    s.http.set_payload_max_length(s.options.max_body_bytes);
    // httplib writes an answer's headers and body apart: without this, Nagle's algorithm holds
    // the body back until the client's delayed ACK of the headers (40 ms on Linux).
    s.http.set_tcp_nodelay(true);
    // SO_REUSEADDR (a restart binds at once) but not httplib's default SO_REUSEPORT, with
    // which a second server on the same port would bind too and share the connections.
    int listening_socket = -1;
    s.http.set_socket_options([&listening_socket](socket_t sock) {
        int yes = 1;
        ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
        listening_socket = sock;  // the last one made is the one bound
    });
    errno = 0;
    s.port = s.options.port == 0 ? s.http.bind_to_any_port(s.options.host)
                                 : (s.http.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1);
    if (s.port <= 0)
        throw sga::IoError("cannot listen on " + s.options.host + ":" + std::to_string(s.options.port) + ": " +
                           (errno != 0 ? std::strerror(errno) : "not an address of this machine"));
    // httplib listens with a backlog of 5: a burst of connections beyond it loses packets and
    // can stall past the keep-alive wait (seen with 16 clients). The system's limit instead.
    ::listen(listening_socket, SOMAXCONN);
}

ScoringServer::~ScoringServer() = default;

int ScoringServer::port() const { return impl_->port; }

bool ScoringServer::stopping() const { return impl_->stopping; }

void ScoringServer::run() {
    Impl& s = *impl_;
    s.run_active = true;  // before reading `stopping`: stop() reads them in the other order
    if (!s.stopping) s.http.listen_after_bind();
    s.run_active = false;
}

void ScoringServer::stop() {
    Impl& s = *impl_;
    if (s.stopping.exchange(true)) return;
    // httplib's stop() does nothing until the accept loop runs; run() is then moments away.
    while (s.run_active && !s.http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    s.http.stop();
}

}  // namespace cli
