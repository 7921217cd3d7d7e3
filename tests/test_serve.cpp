// The scoring server (tools/skipganomaly/server.hpp) on loopback ports: in-process for the
// endpoints, scores, limits and the token; as `skipganomaly serve` for SIGTERM.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "heatmap.hpp"
#include "server.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/image.hpp"
#include "test_support.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// prefix + i + suffix (streamed: GCC 12 warns falsely (-Wrestrict) on "x" + std::to_string(i)).
std::string numbered(const char* prefix, std::size_t i, const char* suffix = "") {
    std::ostringstream s;
    s << prefix << i << suffix;
    return s.str();
}

const fs::path& scratch() {
    static const fs::path dir = [] {
        const fs::path d = fs::temp_directory_path() / numbered("sga_serve_", std::random_device{}());
        fs::create_directories(d);
        return d;
    }();
    return dir;
}

std::string png_bytes(const sga::Image& image) {
    const std::vector<std::uint8_t> png = sga::encode_png(image);
    return {png.begin(), png.end()};
}

// A Gaussian blob on noise, the kind of image the tiny detector is trained on.
sga::Image blob(unsigned seed) {
    std::mt19937 rng(seed);
    return sga::testing::blob_image(rng);
}

// The tiny detector (test_support.hpp) trained on 40 blobs, and its model file.
const sga::Detector& detector() {
    static const sga::Detector d = [] {
        sga::Detector trained(sga::testing::tiny_detector_options());
        std::vector<sga::Image> images;
        for (unsigned i = 0; i < 40; ++i) images.push_back(blob(100 + i));
        trained.fit(images);
        trained.save((scratch() / "tiny.safetensors").string());
        return trained;
    }();
    return d;
}

std::string model_path() {
    detector();
    return (scratch() / "tiny.safetensors").string();
}

// A ScoringServer on a free loopback port, serving on a thread of its own until destroyed.
struct RunningServer {
    cli::ScoringServer server;
    std::thread thread;
    explicit RunningServer(cli::ServerOptions options = {})
        : server(detector(), cli::model_source(model_path()), with_any_port(std::move(options))),
          thread([this] { server.run(); }) {}
    ~RunningServer() {
        server.stop();
        thread.join();
    }
    httplib::Client client() const {
        httplib::Client c("127.0.0.1", server.port());
        c.set_read_timeout(30, 0);
        return c;
    }
    static cli::ServerOptions with_any_port(cli::ServerOptions o) {
        o.port = 0;
        return o;
    }
};

// The float a JSON number holds, as the server wrote it.
float as_float(const json& value) { return static_cast<float>(value.get<double>()); }

void check_same_result(const json& served, const sga::ScoreResult& alone) {
    CHECK(as_float(served.at("score")) == alone.score);
    CHECK(as_float(served.at("normalized_score")) == alone.normalized_score);
    CHECK(as_float(served.at("threshold")) == alone.threshold);
    CHECK(as_float(served.at("reconstruction_error")) == alone.reconstruction_error);
    CHECK(as_float(served.at("latent_error")) == alone.latent_error);
    CHECK(served.at("is_anomaly").get<bool>() == alone.is_anomaly);
}

void check_json_error(const httplib::Result& r, int status) {
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == status);
    CHECK(r->get_header_value("Content-Type") == "application/json");
    const json body = json::parse(r->body);
    CHECK(!body.at("error").get<std::string>().empty());
}

// A raw loopback connection, for requests that httplib::Client sends whole: the headers and
// part of a body now, the rest later.
struct RawConnection {
    int fd = -1;
    explicit RawConnection(int port) {
        fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(static_cast<std::uint16_t>(port));
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    }
    ~RawConnection() { ::close(fd); }
    void send(const std::string& bytes) const {
        REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
    }
    // Everything until the server closes the connection.
    std::string receive_all() const {
        std::string all;
        char buffer[4096];
        for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) all.append(buffer, static_cast<std::size_t>(n));
        return all;
    }
};

// POST /v1/score of `body`, all but its last 100 bytes sent.
std::string start_partial_score(const RawConnection& connection, const std::string& body) {
    connection.send("POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: image/png\r\n"
                    "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body.substr(0, body.size() - 100));
    return body.substr(body.size() - 100);
}

int requests_in_flight(httplib::Client& client) {
    const httplib::Result r = client.Get("/metrics");
    REQUIRE(r);
    const std::string key = "\nskipganomaly_requests_in_flight ";
    const std::size_t at = r->body.find(key);
    REQUIRE(at != std::string::npos);
    return std::stoi(r->body.substr(at + key.size()));
}

void wait_for_in_flight(httplib::Client& client, int expected) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (requests_in_flight(client) != expected) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

}  // namespace

TEST_CASE("serve: a score is Detector::score of the decoded image, bit for bit, alone or in a multipart body", "[serve]") {
    RunningServer running;
    httplib::Client client = running.client();
    std::vector<sga::Image> images;
    for (unsigned seed : {1u, 2u}) images.push_back(blob(seed));
    images.push_back(sga::testing::random_image(45, 31, 3, 7));  // colour, another size: converted and resized
    for (const sga::Image& image : images) {
        const httplib::Result r = client.Post("/v1/score", png_bytes(image), "image/png");
        REQUIRE(r);
        REQUIRE(r->status == 200);
        check_same_result(json::parse(r->body), detector().score(image.view()));
    }
    httplib::MultipartFormDataItems parts;
    for (std::size_t i = 0; i < images.size(); ++i)
        parts.push_back({numbered("image", i), png_bytes(images[i]), numbered("i", i, ".png"), "image/png"});
    const httplib::Result r = client.Post("/v1/score", parts);
    REQUIRE(r);
    REQUIRE(r->status == 200);
    const json entries = json::parse(r->body).at("images");
    REQUIRE(entries.size() == images.size());
    for (std::size_t i = 0; i < images.size(); ++i) {
        CHECK(entries[i].at("field") == numbered("image", i));
        CHECK(entries[i].at("file_name") == numbered("i", i, ".png"));
        check_same_result(entries[i], detector().score(images[i].view()));
    }

    // ?output=mask: the mask PNG of the result with a mask, the scores in headers.
    sga::ScoreOptions with_mask;
    with_mask.anomaly_mask = true;
    const sga::ScoreResult alone = detector().score(images[2].view(), with_mask);
    const httplib::Result mask = client.Post("/v1/score?output=mask", png_bytes(images[2]), "image/png");
    REQUIRE(mask);
    REQUIRE(mask->status == 200);
    CHECK(mask->get_header_value("Content-Type") == "image/png");
    CHECK(std::stof(mask->get_header_value("X-Score")) == alone.score);
    CHECK(mask->body == png_bytes(cli::mask_picture(alone)));
    const httplib::Result overlay = client.Post("/v1/score?output=overlay", png_bytes(images[2]), "image/png");
    REQUIRE(overlay);
    CHECK(overlay->status == 200);
    CHECK(overlay->body.substr(1, 3) == "PNG");

    const httplib::Result model = client.Get("/v1/model");
    REQUIRE(model);
    const json m = json::parse(model->body);
    CHECK(m.at("file").at("sha256") == cli::model_source(model_path()).sha256);
    CHECK(m.at("file").at("sha256").get<std::string>().size() == 64);
    CHECK(m.at("architecture").at("image_size") == 32);
    CHECK(as_float(m.at("threshold")) == detector().threshold());
    CHECK(m.at("precision") == "float32");  // the model's, as active here
    const httplib::Result health = client.Get("/healthz");
    REQUIRE(health);
    CHECK(health->status == 200);
}

TEST_CASE("serve: a body that is no image, an empty one or an unknown output is answered 400 in JSON", "[serve]") {
    RunningServer running;
    httplib::Client client = running.client();
    const std::string png = png_bytes(blob(3));
    check_json_error(client.Post("/v1/score", "not an image at all", "image/png"), 400);
    check_json_error(client.Post("/v1/score", png.substr(0, png.size() / 2), "image/png"), 400);  // truncated
    check_json_error(client.Post("/v1/score", "", "image/png"), 400);
    check_json_error(client.Post("/v1/score?output=movie", png, "image/png"), 400);
    const httplib::MultipartFormDataItems parts = {{"good", png, "good.png", "image/png"},
                                                   {"bad", "garbage bytes", "bad.png", "image/png"}};
    const httplib::Result r = client.Post("/v1/score", parts);
    check_json_error(r, 400);
    CHECK(json::parse(r->body).at("error").get<std::string>().find("bad.png") != std::string::npos);
    check_json_error(client.Get("/v2/nothing"), 404);
    // The connection still serves after all that.
    const httplib::Result good = client.Post("/v1/score", png, "image/png");
    REQUIRE(good);
    CHECK(good->status == 200);
}

TEST_CASE("serve: a body over --max-body-bytes or an image over --max-pixels is answered 413", "[serve]") {
    cli::ServerOptions options;
    options.max_body_bytes = 2000;
    options.max_pixels = 30 * 30;
    RunningServer running(options);
    httplib::Client client = running.client();
    const std::string large = png_bytes(sga::testing::random_image(28, 28, 3, 11));  // random pixels: > 2000 bytes
    REQUIRE(large.size() > options.max_body_bytes);
    check_json_error(client.Post("/v1/score", large, "image/png"), 413);
    // Chunked, without a length: counted as it arrives.
    const httplib::Result chunked = client.Post(
        "/v1/score",
        [&](std::size_t offset, httplib::DataSink& sink) {
            if (offset < large.size()) sink.write(large.data() + offset, std::min<std::size_t>(500, large.size() - offset));
            else sink.done();
            return true;
        },
        "image/png");
    check_json_error(chunked, 413);
    const sga::Image wide = sga::testing::random_image(40, 25, 1, 12);  // 1000 pixels, a small file
    const std::string wide_png = png_bytes(wide);
    REQUIRE(wide_png.size() <= options.max_body_bytes);
    check_json_error(client.Post("/v1/score", wide_png, "image/png"), 413);
    const httplib::Result fits = client.Post("/v1/score", png_bytes(blob(4)), "image/png");
    REQUIRE(fits);
    CHECK(fits->status == 200);
}

TEST_CASE("serve: a request beyond --max-in-flight is answered 429, the one in flight completes", "[serve]") {
    cli::ServerOptions options;
    options.max_in_flight = 1;
    options.workers = 4;
    RunningServer running(options);
    httplib::Client client = running.client();
    const sga::Image image = sga::testing::random_image(32, 32, 1, 21);
    const std::string png = png_bytes(image);
    const RawConnection slow(running.server.port());
    const std::string rest = start_partial_score(slow, png);
    wait_for_in_flight(client, 1);
    const httplib::Result busy = client.Post("/v1/score", png_bytes(blob(5)), "image/png");
    check_json_error(busy, 429);
    CHECK(busy->get_header_value("Retry-After") == "1");
    slow.send(rest);
    const std::string answer = slow.receive_all();
    REQUIRE(answer.rfind("HTTP/1.1 200", 0) == 0);
    check_same_result(json::parse(answer.substr(answer.find("\r\n\r\n") + 4)), detector().score(image.view()));
    wait_for_in_flight(client, 0);
    const httplib::Result after = client.Post("/v1/score", png, "image/png");
    REQUIRE(after);
    CHECK(after->status == 200);
}

TEST_CASE("serve: with a token every endpoint but /healthz answers 401 without it or with another", "[serve]") {
    cli::ServerOptions options;
    options.token = "correct-horse-battery";
    RunningServer running(options);
    httplib::Client client = running.client();
    const std::string png = png_bytes(blob(6));
    const auto check_all = [&](int expected) {
        for (const char* path : {"/v1/model", "/metrics"}) {
            const httplib::Result r = client.Get(path);
            REQUIRE(r);
            CHECK(r->status == expected);
        }
        const httplib::Result r = client.Post("/v1/score", png, "image/png");
        REQUIRE(r);
        CHECK(r->status == expected);
        if (expected == 401) CHECK(r->get_header_value("WWW-Authenticate") == "Bearer");
        const httplib::Result health = client.Get("/healthz");
        REQUIRE(health);
        CHECK(health->status == 200);
    };
    check_all(401);
    client.set_bearer_token_auth("correct-horse-batterx");
    check_all(401);
    client.set_bearer_token_auth("correct-horse-battery-staple");
    check_all(401);
    client.set_bearer_token_auth("correct-horse-battery");
    check_all(200);
}

TEST_CASE("serve: 16 concurrent clients get the scores of each image scored alone, bit for bit", "[serve]") {
    RunningServer running;
    constexpr int clients = 16, per_client = 3;
    std::vector<sga::Image> images;
    std::vector<std::string> bodies;
    std::vector<sga::ScoreResult> alone;
    for (int i = 0; i < clients * per_client; ++i) {
        images.push_back(i % 2 ? blob(static_cast<unsigned>(200 + i)) : sga::testing::random_image(32, 32, 1, 300u + i));
        bodies.push_back(png_bytes(images.back()));
        alone.push_back(detector().score(images.back().view()));
    }
    std::vector<std::string> answers(images.size());
    std::vector<int> statuses(images.size(), -1);
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c)
        threads.emplace_back([&, c] {
            httplib::Client client = running.client();
            for (int k = 0; k < per_client; ++k) {
                const std::size_t i = static_cast<std::size_t>(c * per_client + k);
                const httplib::Result r = client.Post("/v1/score", bodies[i], "image/png");
                if (r) statuses[i] = r->status;
                answers[i] = r ? r->body : "no answer: " + httplib::to_string(r.error());
            }
        });
    for (std::thread& t : threads) t.join();
    for (std::size_t i = 0; i < images.size(); ++i) {
        INFO("image " << i << ": " << answers[i]);
        REQUIRE(statuses[i] == 200);
        check_same_result(json::parse(answers[i]), alone[i]);
    }
}

TEST_CASE("serve: SIGTERM lets the request in flight finish, refuses new connections and exits 0", "[serve]") {
    const std::string model = model_path();
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    const std::vector<std::string> arguments = {SKIPGANOMALY_CLI, "serve", "--model", model, "--port", "0", "--threads", "2"};
    std::vector<char*> argv;
    for (const std::string& a : arguments) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t child = 0;
    REQUIRE(posix_spawn(&child, SKIPGANOMALY_CLI, &actions, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);

    // "... listening on http://127.0.0.1:PORT (...)"
    std::string printed;
    const std::string marker = "127.0.0.1:";
    char c = 0;
    while (printed.find('\n') == std::string::npos && ::read(pipe_fds[0], &c, 1) == 1) printed += c;
    INFO(printed);
    const std::size_t at = printed.find(marker);
    REQUIRE(at != std::string::npos);
    const int port = std::stoi(printed.substr(at + marker.size()));

    const sga::Image image = blob(9);
    const RawConnection in_flight(port);
    const std::string rest = start_partial_score(in_flight, png_bytes(image));
    httplib::Client client("127.0.0.1", port);
    wait_for_in_flight(client, 1);
    REQUIRE(::kill(child, SIGTERM) == 0);
    // New connections are refused once the signal is seen.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (client.Get("/healthz")) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    in_flight.send(rest);
    const std::string answer = in_flight.receive_all();
    REQUIRE(answer.rfind("HTTP/1.1 200", 0) == 0);
    check_same_result(json::parse(answer.substr(answer.find("\r\n\r\n") + 4)),
                      sga::Detector::load(model, sga::Device::Cpu).score(image.view()));
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    std::string rest_printed;
    for (ssize_t n; (n = ::read(pipe_fds[0], &c, 1)) == 1;) rest_printed += c;
    ::close(pipe_fds[0]);
    INFO(rest_printed);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(rest_printed.find("stopped") != std::string::npos);
}
