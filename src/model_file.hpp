// Internal: the model file, a safetensors file (8-byte little-endian header length, a JSON
// header, raw little-endian tensor data) whose tensor names are the official PyTorch
// state-dict keys prefixed "netg." and "netd.", and whose "__metadata__" carries everything
// else as JSON strings. Layout in docs/model-format.md.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"

// Not a public header (not installed), but exported from a shared library all the same
// (SKIPGANOMALY_API): the tests and bench/replay_steps read and write model files with it.
namespace sga::model_file {

inline constexpr const char* format_name = "skipganomaly";
inline constexpr int format_version = 1;
// Headers beyond this are refused before any allocation: ours are a few tens of kB.
inline constexpr std::uint64_t max_header_bytes = 16u << 20;

// What a checkpoint adds to a model: both optimisers' state and where training stood.
struct TrainingState {
    int epochs_completed = 0;
    std::uint64_t random_offset = 0;  // position of the training RandomStream
    std::int64_t generator_adam_steps = 0, discriminator_adam_steps = 0;
};

// Writes `model` (weights, batch-norm statistics) and `metadata` (merged into the
// "__metadata__" map, each value serialised as a JSON string), plus optimiser moments when
// `training` is given. Written through safe_file (safe_file.hpp): an unpredictable exclusive
// temporary beside the target, fsync, rename, fsync of the folder; a read-only target is
// refused, a replaced file keeps its mode, a symbolic link keeps pointing at the new file.
// Throws IoError when writing fails (the previous file is then unchanged). `storage` Float16 writes the
// learned weights (the two parameter blocks) as IEEE half ("F16", rounded to nearest even);
// batch-norm statistics and optimiser moments stay F32. Throws InvalidArgument when a weight
// does not fit in float16 (|w| >= 65520) or when a checkpoint (training) asks for Float16.
SKIPGANOMALY_API void save(const std::string& path, const SkipGanomaly& model, const nlohmann::json& metadata,
          const TrainingState* training, WeightStorage storage = WeightStorage::Float32);

// IEEE binary16 <-> float32: round to nearest even (overflow gives infinity, NaN stays NaN);
// half_to_float is exact.
SKIPGANOMALY_API std::uint16_t float_to_half(float value);
SKIPGANOMALY_API float half_to_float(std::uint16_t half);

// A validated file in memory.
class SKIPGANOMALY_API Reader {
public:
    // Reads and checks a file; throws IoError / FormatError. The header is read and checked
    // first (its length against the file's size, the JSON, the tensors' layout, the
    // architecture's exact tensors: check_tensors), and the tensor data only then: what a file
    // can make this allocate is bounded by its size and by the architecture it declares. The
    // checksum is checked last, over the whole file.
    static Reader open(const std::string& path);
    // The same checks on a file's bytes already in memory, checksum first and without the
    // architecture (check_tensors); `path` only names it in errors.
    static Reader from_bytes(std::vector<char> bytes, const std::string& path);

    const nlohmann::json& metadata() const { return metadata_; }  // values parsed back from JSON
    Architecture architecture() const;
    std::optional<TrainingState> training_state() const;
    // Throws FormatError unless the file holds exactly the tensors (names, dtypes, shapes) of a
    // model of `arch`. Allocates nothing for the model: call it before building one from a
    // file's declared architecture, which anyone can forge.
    void check_tensors(const Architecture& arch) const;
    // Copies every tensor into `model` (built from architecture()), after check_tensors.
    // Loads optimiser moments when present. F16 weights are widened to float32.
    void load_into(SkipGanomaly& model) const;

private:
    struct TensorRecord {
        std::string dtype;
        std::vector<std::int64_t> shape;
        std::uint64_t begin = 0, end = 0;
    };
    // Fills metadata_ and tensors_ from the JSON header, checking everything but the checksum
    // and the architecture: JSON without repeated names, format, each tensor's dtype, shape
    // and offsets, and that the tensors' data tiles the data area of `data_size` bytes.
    void parse_header(const char* header, std::uint64_t header_size, std::uint64_t data_size);
    const TensorRecord& record(const std::string& name) const;
    void copy_block(const std::string& prefix, ParameterBlock& block, bool half_allowed) const;
    void copy_flat(const std::string& name, TensorView destination, bool half_allowed = false) const;

    std::string path_;
    std::vector<char> bytes_;
    std::uint64_t data_start_ = 0;
    nlohmann::json metadata_;
    std::vector<std::pair<std::string, TensorRecord>> tensors_;
};

// CRC-32 (zlib) of `bytes`.
SKIPGANOMALY_API std::uint32_t crc32(const char* bytes, std::size_t size);

}  // namespace sga::model_file
