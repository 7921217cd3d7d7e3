// The command-line tool run as a careless or hostile user runs it (no terminal): Ctrl-C during
// fit onto an existing model, output paths that cannot be written (read-only ones as an
// unprivileged user: root ignores file modes), `ulimit -f` during calibrate, `ulimit -v` with a
// decompression bomb among the images to score, a sparse 3 GB model file, links planted at a
// temporary's name, another run's checkpoint to --resume, score --heatmap into the folder of
// the user's own files, tiny held-out sets and a demo that fails. Small enough for CI: 32 x 32
// grey images, a few batches of 4, one CPU thread. docs/reliability.md lists what each shows.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "model_file.hpp"
#include "safe_file.hpp"
#include "skipganomaly/detector.hpp"
#include "skipganomaly/image.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Who runs the probes that need file modes to count: "nobody" when the tests run as root
// (as CI does), else this user.
struct Account {
    uid_t uid;
    gid_t gid;
};
std::optional<Account> unprivileged_account() {
    if (::geteuid() != 0) return Account{::geteuid(), ::getegid()};
    const passwd* p = ::getpwnam("nobody");
    if (!p) return std::nullopt;
    return Account{p->pw_uid, p->pw_gid};
}

struct Limits {
    bool unprivileged = false;
    rlim_t file_size = RLIM_INFINITY;      // ulimit -f, in bytes
    rlim_t address_space = RLIM_INFINITY;  // ulimit -v, in bytes
};

struct Result {
    bool exited = false;
    int code = -1;    // exit status when exited
    int signal = 0;   // the signal that ended it otherwise
    std::string out, err;
};

// The tool started in a child process with `args`, stdout and stderr to files in `folder`,
// stdin /dev/null, default signal actions, and `limits`.
class Cli {
public:
    Cli(const std::vector<std::string>& args, const fs::path& folder, Limits limits = {})
        : out_(folder / ("stdout_" + std::to_string(counter()))), err_(folder / ("stderr_" + std::to_string(counter()))) {
        std::vector<std::string> all = {SKIPGANOMALY_CLI};
        all.insert(all.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (std::string& a : all) argv.push_back(a.data());
        argv.push_back(nullptr);
        const std::optional<Account> account = limits.unprivileged ? unprivileged_account() : std::nullopt;
        const std::string out = out_.string(), err = err_.string();
        // Only async-signal-safe calls between fork and exec.
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            const int in = ::open("/dev/null", O_RDONLY);
            const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (in < 0 || o < 0 || e < 0) ::_exit(126);
            ::dup2(in, 0);
            ::dup2(o, 1);
            ::dup2(e, 2);
            sigset_t none;
            sigemptyset(&none);
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);  // Catch's handlers and ignored signals
            const rlimit file_size{limits.file_size, limits.file_size};
            const rlimit address_space{limits.address_space, limits.address_space};
            if (limits.file_size != RLIM_INFINITY && ::setrlimit(RLIMIT_FSIZE, &file_size) != 0) ::_exit(126);
            if (limits.address_space != RLIM_INFINITY && ::setrlimit(RLIMIT_AS, &address_space) != 0) ::_exit(126);
            if (account && ::geteuid() == 0) {
                if (::setgroups(0, nullptr) != 0 || ::setgid(account->gid) != 0 || ::setuid(account->uid) != 0) ::_exit(126);
            }
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
    }
    ~Cli() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    Cli(const Cli&) = delete;
    Cli& operator=(const Cli&) = delete;

    void signal(int signal_number) const { ::kill(pid_, signal_number); }

    // Polls stderr until it holds `text`; false when the process ended first or time ran out.
    bool wait_for_stderr(const std::string& text, double seconds = 240) const {
        const Clock::time_point end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
        while (Clock::now() < end) {
            if (read_file(err_).find(text) != std::string::npos) return true;
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG | WNOWAIT) == pid_) return read_file(err_).find(text) != std::string::npos;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        return false;
    }

    Result wait() {
        int status = 0;
        REQUIRE(::waitpid(pid_, &status, 0) == pid_);
        pid_ = -1;
        Result r;
        r.exited = WIFEXITED(status);
        r.code = r.exited ? WEXITSTATUS(status) : -1;
        r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        r.out = read_file(out_);
        r.err = read_file(err_);
        fs::remove(out_);
        fs::remove(err_);
        return r;
    }

private:
    static int counter() {
        static int n = 0;
        return n++;
    }
    fs::path out_, err_;
    pid_t pid_ = -1;
};

Result run(const std::vector<std::string>& args, const fs::path& folder, Limits limits = {}) {
    Cli cli(args, folder, limits);
    return cli.wait();
}

using sga::testing::names_in;
using sga::testing::temporaries_in;

// A bright blob on noise, 32 x 32 grey.
sga::Image blob(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> centre(8, 24), noise(0, 30);
    sga::Image im{32, 32, 1, std::vector<std::uint8_t>(32 * 32)};
    const double cx = centre(rng), cy = centre(rng);
    for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) {
            const double d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            im.pixels[static_cast<std::size_t>(y * 32 + x)] =
                static_cast<std::uint8_t>(std::min(255.0, 220.0 * std::exp(-d2 / 20.0) + noise(rng)));
        }
    return im;
}

void write_images(const fs::path& folder, const std::string& prefix, int count, unsigned seed) {
    fs::create_directories(folder);
    std::mt19937_64 rng(seed);
    for (int i = 0; i < count; ++i) {
        std::ostringstream name;  // streamed: GCC 12 -O3 warns falsely (-Wrestrict) on concatenation
        name << prefix << i << ".png";
        sga::save_png((folder / name.str()).string(), blob(rng));
    }
}

// A grey PNG of width x height zero pixels in one fixed-Huffman deflate block: a literal 0,
// then matches of 258 bytes at distance 1 (13 bits each), so about 159 decoded bytes per
// byte of file: 16384 x 16384 (2^28 pixels, within the limits) in 1.7 MB.
std::vector<std::uint8_t> zero_png(std::uint32_t width, std::uint32_t height) {
    std::vector<std::uint8_t> deflate = {0x78, 0x01};
    std::uint32_t bit_buffer = 0;
    int bits = 0;
    const auto put_bit = [&](unsigned bit) {
        bit_buffer |= (bit & 1u) << bits;
        if (++bits == 8) {
            deflate.push_back(static_cast<std::uint8_t>(bit_buffer));
            bit_buffer = 0;
            bits = 0;
        }
    };
    const auto put_code = [&](unsigned code, int length) {  // Huffman codes go most significant bit first
        for (int i = length - 1; i >= 0; --i) put_bit(code >> i);
    };
    put_bit(1);  // BFINAL
    put_bit(1);  // BTYPE 01 (fixed Huffman), least significant bit first
    put_bit(0);
    const std::uint64_t raw = static_cast<std::uint64_t>(height) * (width + 1);  // a filter byte per row
    put_code(0x30, 8);  // literal 0
    std::uint64_t left = raw - 1;
    for (; left >= 258; left -= 258) {
        put_code(0xC5, 8);  // length symbol 285: 258
        put_code(0, 5);     // distance code 0: 1
    }
    for (; left > 0; --left) put_code(0x30, 8);
    put_code(0, 7);  // end of block
    while (bits != 0) put_bit(0);
    const std::uint32_t adler = static_cast<std::uint32_t>((raw % 65521) << 16 | 1);  // all bytes 0
    for (int shift = 24; shift >= 0; shift -= 8) deflate.push_back(static_cast<std::uint8_t>(adler >> shift));

    std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const auto chunk = [&](const char* type, const std::vector<std::uint8_t>& data) {
        std::vector<std::uint8_t> body(type, type + 4);
        body.insert(body.end(), data.begin(), data.end());
        for (int shift = 24; shift >= 0; shift -= 8) png.push_back(static_cast<std::uint8_t>(data.size() >> shift));
        png.insert(png.end(), body.begin(), body.end());
        const std::uint32_t crc = sga::model_file::crc32(reinterpret_cast<const char*>(body.data()), body.size());
        for (int shift = 24; shift >= 0; shift -= 8) png.push_back(static_cast<std::uint8_t>(crc >> shift));
    };
    std::vector<std::uint8_t> header;
    for (const std::uint32_t v : {width, height})
        for (int shift = 24; shift >= 0; shift -= 8) header.push_back(static_cast<std::uint8_t>(v >> shift));
    header.insert(header.end(), {8, 0, 0, 0, 0});  // 8 bits, grey, deflate, no filter method, no interlace
    chunk("IHDR", header);
    chunk("IDAT", deflate);
    chunk("IEND", {});
    return png;
}

// One workspace for the file: training images, other images, a base model; each test case
// works in a folder of its own under it. Everyone may enter it (the unprivileged probes).
struct Workspace {
    fs::path root;
    Workspace() {
        root = fs::temp_directory_path() / ("sga_cli_reliability_" + std::to_string(std::random_device{}()));
        fs::create_directories(root);
        fs::permissions(root, fs::perms::all);
        write_images(root / "train", "t", 16, 1);
        write_images(root / "other", "o", 16, 2);
        write_images(root / "normal", "n", 8, 3);
        write_images(root / "few", "f", 10, 4);
        const Result r = run(fit_arguments("train", 1, (root / "base.safetensors").string()), root);
        INFO(r.out << r.err);
        REQUIRE(r.code == 0);
    }
    ~Workspace() {
        std::error_code ignored;
        fs::remove_all(root, ignored);
    }
    // fit's arguments for a tiny official-recipe run on folder `data` of the workspace.
    std::vector<std::string> fit_arguments(const std::string& data, int epochs, const std::string& out) const {
        return {"fit", "--data", "folder:" + (root / data).string(), "--channels", "1", "--image-size", "32", "--batch-size",
                "4", "--validation-fraction", "0.25", "--recipe", "official", "--threads", "1", "--epochs",
                std::to_string(epochs), "--out", out};
    }
    std::string base_model() const { return (root / "base.safetensors").string(); }
    // A new folder for one test, writable by everyone.
    fs::path folder(const std::string& name) const {
        const fs::path p = root / name;
        fs::create_directories(p);
        fs::permissions(p, fs::perms::all);
        return p;
    }
};

const Workspace& workspace() {
    static const Workspace w;
    return w;
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
    args.insert(args.end(), more.begin(), more.end());
    return args;
}

}  // namespace

TEST_CASE("Ctrl-C during fit never replaces an existing model with an untrained or partial one", "[cli][reliability][signals]") {
    const Workspace& w = workspace();
    fs::remove_all(w.root / "interrupt");  // each section starts afresh
    const fs::path dir = w.folder("interrupt");
    const fs::path previous = dir / "prev.safetensors";
    fs::copy_file(w.base_model(), previous, fs::copy_options::overwrite_existing);
    const std::string before = read_file(previous);
    const std::vector<std::string> fit = with(w.fit_arguments("train", 20, previous.string()), {"--progress-every", "0"});
    const fs::path logs = w.folder("interrupt_logs");

    SECTION("before the first epoch ends: nothing is written, exit status 130") {
        Cli cli(fit, logs);
        REQUIRE(cli.wait_for_stderr("epoch 1/20 batch 1/"));
        cli.signal(SIGINT);
        const Result r = cli.wait();
        INFO(r.out << r.err);
        CHECK(r.code == 130);
        CHECK_THAT(r.err, Catch::Contains("interrupted before the first epoch was completed; nothing was written") &&
                              Catch::Contains("is unchanged"));
        CHECK_THAT(r.out, !Catch::Contains("model saved"));
        CHECK(read_file(previous) == before);
        CHECK(names_in(dir) == std::vector<std::string>{"prev.safetensors"});
    }
    SECTION("after an epoch: the partial model goes beside the existing one") {
        Cli cli(fit, logs);
        REQUIRE(cli.wait_for_stderr("epoch 1/20  G"));
        cli.signal(SIGINT);
        const Result r = cli.wait();
        INFO(r.out << r.err);
        CHECK(r.code == 130);
        const fs::path partial = dir / "prev.partial.safetensors";
        CHECK_THAT(r.err, Catch::Contains("the partial model is saved to " + partial.string()) &&
                              Catch::Contains("--replace-partial"));
        CHECK(read_file(previous) == before);
        REQUIRE(fs::exists(partial));
        CHECK(sga::Detector::load(partial.string(), sga::Device::Cpu).is_trained());
        CHECK(names_in(dir) == (std::vector<std::string>{"prev.partial.safetensors", "prev.safetensors"}));
    }
    SECTION("after an epoch with --replace-partial: the existing model is replaced, as asked") {
        Cli cli(with(fit, {"--replace-partial"}), logs);
        REQUIRE(cli.wait_for_stderr("epoch 1/20  G"));
        cli.signal(SIGINT);
        const Result r = cli.wait();
        INFO(r.out << r.err);
        CHECK(r.code == 130);
        CHECK(read_file(previous) != before);
        CHECK(sga::Detector::load(previous.string(), sga::Device::Cpu).is_trained());
        CHECK(names_in(dir) == std::vector<std::string>{"prev.safetensors"});
    }
    SECTION("a second Ctrl-C ends the process at once, leaving no temporary") {
        Cli cli(with(fit, {"--checkpoint", (dir / "ck.safetensors").string()}), logs);
        REQUIRE(cli.wait_for_stderr("epoch 1/20 batch 1/"));
        cli.signal(SIGINT);
        REQUIRE(cli.wait_for_stderr("press Ctrl-C again"));  // two signals at once would be one
        cli.signal(SIGINT);
        const Result r = cli.wait();
        INFO(r.out << r.err);
        CHECK(r.signal == SIGINT);
        CHECK(read_file(previous) == before);
        CHECK(temporaries_in(dir).empty());
    }
}

TEST_CASE("output paths are checked before any training or scoring", "[cli][reliability][write]") {
    const Workspace& w = workspace();
    const std::optional<Account> account = unprivileged_account();
    if (!account) {
        WARN("SKIPPED: no unprivileged account (nobody) to run the read-only probes as");
        return;
    }
    const fs::path dir = w.folder("outputs");
    const std::string ok = (dir / "ok.safetensors").string();
    const auto refused_early = [&](const std::vector<std::string>& args, const std::string& expected) {
        const Result r = run(args, dir, {true});
        INFO(r.out << r.err);
        CHECK(r.code == 1);
        CHECK_THAT(r.err, Catch::Contains(expected) && Catch::Contains("checked before starting"));
        CHECK_THAT(r.err, !Catch::Contains("training on"));
    };
    refused_early(w.fit_arguments("train", 1, (dir / "missing" / "m.safetensors").string()),
                  "folder '" + (dir / "missing").string() + "' does not exist");
    fs::create_directories(dir / "sub");
    refused_early(w.fit_arguments("train", 1, (dir / "sub").string()), "it is a folder");
    refused_early(with(w.fit_arguments("train", 1, ok), {"--checkpoint", (dir / "missing" / "ck").string()}),
                  "--checkpoint: cannot write");
    CHECK_FALSE(fs::exists(ok));

    // A read-only model of the user's, and a read-only folder.
    const fs::path read_only = dir / "read_only.safetensors";
    fs::copy_file(w.base_model(), read_only);
    REQUIRE(::chown(read_only.c_str(), account->uid, account->gid) == 0);
    fs::permissions(read_only, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    const std::string before = read_file(read_only);
    refused_early(w.fit_arguments("train", 1, read_only.string()), "not writable by this user");
    fs::create_directories(dir / "locked");
    REQUIRE(::chown((dir / "locked").c_str(), account->uid, account->gid) == 0);
    fs::permissions(dir / "locked", fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                                        fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
    refused_early(w.fit_arguments("train", 1, (dir / "locked" / "m.safetensors").string()), "is not writable by this user");
    // calibrate: the target before the data (which does not exist here either).
    refused_early({"calibrate", "--model", w.base_model(), "--data", "folder:" + (dir / "no_data").string(), "--out",
                   (dir / "missing" / "c.safetensors").string()},
                  "--out: cannot write");
    refused_early({"calibrate", "--model", read_only.string(), "--data", "folder:" + (dir / "no_data").string()},
                  "--model: cannot write");
    refused_early({"score", "--model", w.base_model(), "--heatmap", (read_only / "maps").string(),
                   (w.root / "normal" / "n0.png").string()},
                  "is not a folder");
    CHECK(read_file(read_only) == before);
    CHECK(temporaries_in(dir).empty());
}

TEST_CASE("a write beyond ulimit -f during calibrate is an error and leaves no temporary", "[cli][reliability][write]") {
    const Workspace& w = workspace();
    const fs::path dir = w.folder("file_size");
    const fs::path target = dir / "calibrated.safetensors";
    fs::copy_file(w.base_model(), target);
    const std::string before = read_file(target);
    Limits limits;
    if (const std::optional<Account> account = unprivileged_account()) {
        limits.unprivileged = true;
        REQUIRE(::chown(target.c_str(), account->uid, account->gid) == 0);
    }
    limits.file_size = 1 << 20;  // the model is tens of MB
    const Result r = run({"calibrate", "--model", w.base_model(), "--data", "folder:" + (w.root / "normal").string(), "--out",
                          target.string(), "--threads", "1"},
                         dir, limits);
    INFO(r.out << r.err);
    CHECK(r.exited);  // not killed by SIGXFSZ
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::Contains("File too large") && Catch::Contains("the previous file, if any, is unchanged"));
    CHECK(temporaries_in(dir).empty());
    CHECK(read_file(target) == before);
}

TEST_CASE("score --heatmap never replaces files it did not write in this run", "[cli][reliability][write]") {
    const Workspace& w = workspace();
    const fs::path dir = w.folder("heatmaps");
    fs::copy_file(w.root / "normal" / "n0.png", dir / "x.png");
    fs::copy_file(w.root / "normal" / "n1.png", dir / "x_mask.png");  // the user's own mask of x
    fs::copy_file(w.root / "normal" / "n2.png", dir / "y.png");
    const std::string mask_before = read_file(dir / "x_mask.png");
    const std::string model = w.base_model();
    const auto score = [&](std::vector<std::string> more) {
        std::vector<std::string> args = {"score", "--model", model, "--threads", "1", "--heatmap", dir.string()};
        args.insert(args.end(), more.begin(), more.end());
        return run(args, w.folder("heatmap_logs"));
    };
    const Result clash = score({(dir / "x.png").string()});
    INFO(clash.out << clash.err);
    CHECK(clash.code == 1);
    CHECK_THAT(clash.err, Catch::Contains("would be replaced") && Catch::Contains("x_mask.png") && Catch::Contains("--overwrite"));
    CHECK(clash.out.empty());
    const Result input = score({"--overwrite", (dir / "x.png").string(), (dir / "x_mask.png").string()});
    CHECK(input.code == 1);
    CHECK_THAT(input.err, Catch::Contains("would replace the input image"));
    CHECK(read_file(dir / "x_mask.png") == mask_before);
    CHECK_FALSE(fs::exists(dir / "x_heatmap.png"));

    const Result first = score({(dir / "y.png").string()});
    INFO(first.err);
    CHECK(first.code == 0);
    CHECK(fs::exists(dir / "y_heatmap.png"));
    CHECK(score({(dir / "y.png").string()}).code == 1);  // its own earlier pictures too, unless asked
    CHECK(score({"--overwrite", (dir / "y.png").string()}).code == 0);
}

TEST_CASE("score: an unreadable image or a decompression bomb under ulimit -v gets its own error line", "[cli][reliability][images]") {
    const Workspace& w = workspace();
    const fs::path dir = w.folder("bad_images");
    {
        std::ofstream(dir / "junk.png") << "not an image";
        const std::vector<std::uint8_t> bomb = zero_png(16384, 16384);
        REQUIRE(bomb.size() < 2000000);
        std::ofstream out(dir / "bomb.png", std::ios::binary);
        out.write(reinterpret_cast<const char*>(bomb.data()), static_cast<std::streamsize>(bomb.size()));
    }
    const std::vector<std::string> paths = {(w.root / "normal" / "n0.png").string(), (dir / "junk.png").string(),
                                            (dir / "bomb.png").string(), (w.root / "normal" / "n1.png").string(),
                                            (dir / "missing.png").string()};
    Limits limits;
    limits.address_space = rlim_t{450} << 20;  // scoring the small images needs about 300 MB, the bomb 512 MB more
    const Result r = run(with({"score", "--model", w.base_model(), "--threads", "1"}, paths), dir, limits);
    INFO(r.out << r.err);
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::Contains("3 of 5 image(s) could not be scored"));
    std::istringstream lines(r.out);
    std::vector<nlohmann::json> results;
    for (std::string line; std::getline(lines, line);) results.push_back(nlohmann::json::parse(line));
    REQUIRE(results.size() == 5);
    for (std::size_t i = 0; i < results.size(); ++i) CHECK(results[i].at("path") == paths[i]);
    CHECK(results[0].contains("score"));
    CHECK(results[3].contains("score"));
    CHECK_THAT(results[1].at("error").get<std::string>(), Catch::Contains("not a readable PNG"));
    CHECK(results[2].contains("error"));  // out of memory while decoding, within the limits of the format
    CHECK_THAT(results[4].at("error").get<std::string>(), Catch::Contains("does not exist"));
}

TEST_CASE("a sparse 3 GB model file is refused from its header under ulimit -v", "[cli][reliability][model-file]") {
    const Workspace& w = workspace();
    const fs::path dir = w.folder("sparse");
    const fs::path sparse = dir / "sparse.safetensors";
    {
        // The base model's length word and header, then a hole to 3 GB.
        const std::string model = read_file(w.base_model());
        std::uint64_t header = 0;
        for (int i = 7; i >= 0; --i) header = header << 8 | static_cast<unsigned char>(model[static_cast<std::size_t>(i)]);
        std::ofstream(sparse, std::ios::binary).write(model.data(), static_cast<std::streamsize>(8 + header));
        fs::resize_file(sparse, std::uintmax_t{3} << 30);
    }
    Limits limits;
    limits.address_space = rlim_t{450} << 20;
    const Clock::time_point start = Clock::now();
    const Result r = run({"score", "--model", sparse.string(), "--threads", "1", (w.root / "normal" / "n0.png").string()}, dir, limits);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    INFO(r.out << r.err);
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::Contains("model file '" + sparse.string() + "'"));
    CHECK_THAT(r.err, !Catch::Contains("bad_alloc") && !Catch::Contains("out of"));
    CHECK(seconds < 30);
    CHECK(r.out.empty());
}

TEST_CASE("a link planted at a temporary's name is neither followed nor removed", "[cli][reliability][write]") {
    const Workspace& w = workspace();
    const fs::path dir = w.folder("planted");
    const fs::path victim = w.folder("planted_victim") / "victim.txt";
    std::ofstream(victim) << "the victim's bytes";
    // A temporary name of a process that has ended (stale temporaries are removed by the next
    // write, links never).
    const pid_t dead = ::fork();
    if (dead == 0) ::_exit(0);
    REQUIRE(::waitpid(dead, nullptr, 0) == dead);
    std::string name = sga::safe_file::temporary_name("calibrated.safetensors", 0x0123456789abcdefULL);
    name = std::regex_replace(name, std::regex("-" + std::to_string(::getpid()) + "-"), "-" + std::to_string(dead) + "-");
    fs::create_symlink(victim, dir / name);
    const Result r = run({"calibrate", "--model", w.base_model(), "--data", "folder:" + (w.root / "normal").string(), "--out",
                          (dir / "calibrated.safetensors").string(), "--threads", "1"},
                         dir);
    INFO(r.out << r.err);
    CHECK(r.code == 0);
    CHECK(read_file(victim) == "the victim's bytes");
    CHECK(fs::is_symlink(dir / name));
    CHECK(sga::Detector::load((dir / "calibrated.safetensors").string(), sga::Device::Cpu).is_trained());
}

TEST_CASE("fit --resume refuses a checkpoint of other images or options", "[cli][reliability][checkpoint]") {
    const Workspace& w = workspace();
    const fs::path dir = w.folder("resume");
    const std::string checkpoint = (dir / "ck.safetensors").string();
    const Result first = run(with(w.fit_arguments("train", 1, (dir / "one.safetensors").string()), {"--checkpoint", checkpoint}), dir);
    INFO(first.err);
    REQUIRE(first.code == 0);
    const std::string two = (dir / "two.safetensors").string();
    const auto resumed = [&](const std::string& data, const std::vector<std::string>& change) {
        std::vector<std::string> args = with(w.fit_arguments(data, 2, two), {"--resume", checkpoint});
        for (std::size_t i = 0; i + 1 < change.size(); i += 2) {
            const auto at = std::find(args.begin(), args.end(), change[i]);
            if (at == args.end()) args.insert(args.end(), {change[i], change[i + 1]});
            else *(at + 1) = change[i + 1];
        }
        return run(args, dir);
    };
    const auto refused = [&](const Result& r, const std::string& expected) {
        INFO(r.out << r.err);
        CHECK(r.code == 1);
        CHECK_THAT(r.err, Catch::Contains("is a checkpoint of another run: " + expected));
        CHECK_FALSE(fs::exists(two));
    };
    refused(resumed("other", {}), "training data: expected 16 images, sample hash");
    refused(resumed("train", {"--seed", "3"}), "seed: expected 0 (the checkpoint's), found 3 (this fit's)");
    refused(resumed("train", {"--validation-fraction", "0.5"}), "validation_fraction: expected 0.25");
    refused(resumed("train", {"--lr", "0.001"}), "learning_rate: expected 0.0002");
    refused(resumed("train", {"--batch-size", "8"}), "batch_size: expected 4");
    const Result same = resumed("train", {});
    INFO(same.err);
    CHECK(same.code == 0);
    CHECK_THAT(same.out, Catch::Contains("trained 2 epoch(s)"));
}

TEST_CASE("fit on a tiny held-out set warns and prints readable numbers", "[cli][reliability][threshold]") {
    const Workspace& w = workspace();
    const fs::path dir = w.folder("tiny_held_out");
    for (const char* fraction : {"0.1", "1e-30"}) {
        // 10 images: one held out. The default recipe's orientation check cannot judge one.
        const Result r = run({"fit", "--data", "folder:" + (w.root / "few").string(), "--channels", "1", "--batch-size", "4",
                              "--epochs", "1", "--threads", "1", "--validation-fraction", fraction, "--out",
                              (dir / "m.safetensors").string()},
                             dir);
        INFO(fraction << "\n" << r.out << r.err);
        CHECK(r.code == 0);
        CHECK_THAT(r.err, Catch::Contains("warning: the orientation check was skipped: 1 held-out image(s), it needs at least 8"));
        CHECK_THAT(r.err, Catch::Contains("warning: the threshold") && Catch::Contains("only 1 held-out normal score(s)"));
        CHECK_THAT(r.out, !Catch::Contains("orientation check:"));
        CHECK_FALSE(std::regex_search(r.out + r.err, std::regex("[0-9]{12}")));  // no 309-digit t
        CHECK_THAT(r.out, !Catch::Contains("0.000000"));
    }
}

TEST_CASE("a demo that fails leaves no folder behind", "[cli][reliability][demo]") {
    const Workspace& w = workspace();
    const fs::path out = w.root / "demo_out";
    // Four images are fewer than one batch of 16: fit fails after the data is loaded.
    const Result r = run({"demo", "--out", out.string(), "--train-limit", "4", "--batch-size", "16", "--epochs", "1",
                          "--threads", "1"},
                         w.root);
    INFO(r.out << r.err);
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::Contains("fewer than one batch"));
    CHECK_FALSE(fs::exists(out));
}
