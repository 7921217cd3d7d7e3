// skipganomaly._skipganomaly: the Python extension module over the public C++ API
// (detector.hpp, image.hpp, error.hpp, device.hpp). python/skipganomaly/__init__.py re-exports
// it; python/skipganomaly/_skipganomaly.pyi declares what it holds.
//
// Invariants:
//   - Pixels are never copied on the way in: an ImageView points into the numpy buffer, which
//     the caller's array keeps alive for the whole call (the arrays are held in this frame,
//     and released only after the GIL is taken back).
//   - The GIL is released around every call into the library that computes (fit, score,
//     calibrate, save, load), so Python threads score at once; Detector::score of single
//     images from many threads then goes through the library's ScoreBatcher.
//   - Fit callbacks take the GIL back for the call. An exception raised in one (or a
//     KeyboardInterrupt) cancels fit through FitCallbacks::cancel and is raised again once fit
//     has returned, with the detector as a cancelled fit leaves it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "skipganomaly/detector.hpp"
#include "skipganomaly/device.hpp"
#include "skipganomaly/error.hpp"
#include "skipganomaly/image.hpp"

namespace py = pybind11;

namespace {

// ---- exceptions -----------------------------------------------------------------------------

// The Python classes of the library's errors, made once at import (never freed: the module
// lives as long as the interpreter).
struct ErrorClasses {
    PyObject* error = nullptr;
    PyObject* invalid_argument = nullptr;
    PyObject* format = nullptr;
    PyObject* io = nullptr;
    PyObject* device = nullptr;
    PyObject* out_of_memory = nullptr;
    PyObject* numerical = nullptr;
};
ErrorClasses error_classes;

PyObject* add_error_class(py::module_& m, const char* name, const char* doc, std::vector<PyObject*> bases) {
    const std::string qualified = std::string("skipganomaly.") + name;
    py::tuple base_tuple(bases.size());
    for (std::size_t i = 0; i < bases.size(); ++i) base_tuple[i] = py::reinterpret_borrow<py::object>(bases[i]);
    PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, base_tuple.ptr(), nullptr);
    if (type == nullptr) throw py::error_already_set();
    m.add_object(name, py::reinterpret_borrow<py::object>(type));
    return type;
}

void register_errors(py::module_& m) {
    ErrorClasses& e = error_classes;
    e.error = add_error_class(m, "SkipganomalyError", "Base of every error skipganomaly raises.", {PyExc_Exception});
    e.invalid_argument = add_error_class(
        m, "InvalidArgument", "An argument the library cannot work with: an option, an array's dtype, shape or strides.",
        {e.error, PyExc_ValueError});
    e.format = add_error_class(m, "FormatError",
                               "A file (model, image, data set) that is malformed: says what was expected and found.",
                               {e.error, PyExc_ValueError});
    e.io = add_error_class(m, "IoError", "A file that cannot be found, read or written.", {e.error, PyExc_OSError});
    e.device = add_error_class(m, "DeviceError", "A CUDA failure, or CUDA asked of a build or machine without it.",
                               {e.error, PyExc_RuntimeError});
    e.out_of_memory = add_error_class(m, "OutOfMemoryError", "The device ran out of memory.",
                                      {e.device, PyExc_MemoryError});
    e.numerical = add_error_class(m, "NumericalError", "Training produced a non-finite loss or weight.",
                                  {e.error, PyExc_ArithmeticError});
    py::register_exception_translator([](std::exception_ptr p) {
        const ErrorClasses& c = error_classes;
        try {
            if (p) std::rethrow_exception(p);
        } catch (const sga::OutOfMemoryError& x) {
            PyErr_SetString(c.out_of_memory, x.what());
        } catch (const sga::DeviceError& x) {
            PyErr_SetString(c.device, x.what());
        } catch (const sga::InvalidArgument& x) {
            PyErr_SetString(c.invalid_argument, x.what());
        } catch (const sga::FormatError& x) {
            PyErr_SetString(c.format, x.what());
        } catch (const sga::IoError& x) {
            PyErr_SetString(c.io, x.what());
        } catch (const sga::NumericalError& x) {
            PyErr_SetString(c.numerical, x.what());
        } catch (const sga::Error& x) {
            PyErr_SetString(c.error, x.what());
        }
    });
}

// ---- arrays in ------------------------------------------------------------------------------

std::string shape_text(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string describe(const py::array& a) {
    return "a " + std::string(py::str(a.dtype())) + " array of shape " + shape_text(a);
}

int checked_int(py::ssize_t value, const char* what) {
    if (value > INT_MAX) throw sga::InvalidArgument(std::string(what) + " " + std::to_string(value) + " is too large");
    return static_cast<int>(value);
}

py::array as_array(py::handle object, const std::string& what) {
    if (!py::isinstance<py::array>(object))
        throw sga::InvalidArgument(what + " must be a numpy array, found " +
                                   std::string(py::str(py::type::handle_of(object).attr("__name__"))));
    return py::reinterpret_borrow<py::array>(object);
}

bool is_uint8(const py::array& a) { return py::array_t<std::uint8_t>::check_(a); }
bool is_float32(const py::array& a) { return py::array_t<float>::check_(a); }

const char* const image_layouts =
    "uint8 (H, W) or (H, W, C) with C 1 (grey), 3 (RGB) or 4 (RGBA), or float32 (C, H, W) or (H, W) in [-1, 1]";

// An 8-bit image of `a` (H, W) or (H, W, C) starting at `data` with a's strides (the last
// two or three axes of `a` when it is a batch). The pixels of a row must be contiguous; rows
// may lie any positive distance apart (a crop of a larger array is not copied).
sga::ImageView uint8_view(const py::array& a, const std::uint8_t* data, py::ssize_t first_axis, const std::string& what) {
    const py::ssize_t dims = a.ndim() - first_axis;
    const py::ssize_t height = a.shape(first_axis), width = a.shape(first_axis + 1);
    const py::ssize_t channels = dims == 3 ? a.shape(first_axis + 2) : 1;
    if (channels != 1 && channels != 3 && channels != 4)
        throw sga::InvalidArgument(what + ": a (H, W, C) image needs C of 1, 3 or 4, found " + describe(a) +
                                   (first_axis == 0 ? "; a batch of grey images (N, H, W) goes to score_batch or fit"
                                                    : ""));
    if (height == 0 || width == 0) throw sga::InvalidArgument(what + " has no pixels: " + describe(a));
    const py::ssize_t row_stride = a.strides(first_axis), column_stride = a.strides(first_axis + 1);
    const bool row_contiguous = (dims == 2 || a.strides(first_axis + 2) == 1 || channels == 1) &&
                                (column_stride == channels || width == 1);
    if (!row_contiguous || row_stride < width * channels)
        throw sga::InvalidArgument(what + " must hold each row's pixels contiguously (rows may be padded), found " +
                                   describe(a) + " with strides " +
                                   std::string(py::str(py::make_tuple(a.strides(first_axis), a.strides(first_axis + 1)))) +
                                   "; pass numpy.ascontiguousarray(image)");
    sga::ImageView v;
    v.data = data;
    v.width = checked_int(width, "width");
    v.height = checked_int(height, "height");
    v.row_stride_bytes = row_stride;
    v.format = channels == 1 ? sga::PixelFormat::Gray : channels == 3 ? sga::PixelFormat::Rgb : sga::PixelFormat::Rgba;
    return v;
}

// One image: uint8 (H, W) or (H, W, C).
sga::ImageView image_view(const py::array& a, const std::string& what) {
    if (!is_uint8(a)) throw sga::InvalidArgument(what + " must be uint8 (H, W) or (H, W, C), found " + describe(a));
    if (a.ndim() != 2 && a.ndim() != 3)
        throw sga::InvalidArgument(what + " must be uint8 (H, W) or (H, W, C), found " + describe(a) +
                                   (a.ndim() == 4 ? "; a batch (N, H, W, C) goes to score_batch or fit" : ""));
    return uint8_view(a, static_cast<const std::uint8_t*>(a.data()), 0, what);
}

// One float image: (C, H, W) with C 1, 3 or 4, or (H, W) grey, tightly packed (C order).
sga::FloatImageView float_view(const py::array& a, const std::string& what) {
    if (a.ndim() != 2 && a.ndim() != 3)
        throw sga::InvalidArgument(what + " must be float32 (C, H, W) or (H, W), found " + describe(a));
    const py::ssize_t channels = a.ndim() == 3 ? a.shape(0) : 1;
    const py::ssize_t height = a.shape(a.ndim() - 2), width = a.shape(a.ndim() - 1);
    if (channels != 1 && channels != 3 && channels != 4)
        throw sga::InvalidArgument(what + ": a float32 (C, H, W) image needs C of 1, 3 or 4, found " + describe(a));
    if (height == 0 || width == 0) throw sga::InvalidArgument(what + " has no pixels: " + describe(a));
    if (!(a.flags() & py::array::c_style))
        throw sga::InvalidArgument(what + " must be C-contiguous float32 (C, H, W), found " + describe(a) +
                                   " that is not; pass numpy.ascontiguousarray(image)");
    return {static_cast<const float*>(a.data()), checked_int(width, "width"), checked_int(height, "height"),
            static_cast<int>(channels)};
}

// A batch of 8-bit images: a uint8 array (N, H, W) or (N, H, W, C), or a sequence of (H, W)
// or (H, W, C) arrays (sizes may differ). `keep` holds the arrays the views point into.
std::vector<sga::ImageView> batch_views(py::handle images, const std::string& what, std::vector<py::array>& keep) {
    std::vector<sga::ImageView> views;
    if (py::isinstance<py::array>(images)) {
        const py::array a = py::reinterpret_borrow<py::array>(images);
        if (!is_uint8(a) || (a.ndim() != 3 && a.ndim() != 4))
            throw sga::InvalidArgument(what + " must be a uint8 array (N, H, W) or (N, H, W, C), or a list of uint8 "
                                       "(H, W) or (H, W, C) arrays, found " + describe(a));
        keep.push_back(a);
        const auto* base = static_cast<const std::uint8_t*>(a.data());
        for (py::ssize_t n = 0; n < a.shape(0); ++n)
            views.push_back(uint8_view(a, base + n * a.strides(0), 1, what + "[" + std::to_string(n) + "]"));
        if (views.empty()) throw sga::InvalidArgument(what + " holds no images: " + describe(a));
        return views;
    }
    if (py::isinstance<py::str>(images) || py::isinstance<py::bytes>(images) || !py::isinstance<py::sequence>(images))
        throw sga::InvalidArgument(what + " must be a uint8 array (N, H, W) or (N, H, W, C), or a list of uint8 "
                                   "(H, W) or (H, W, C) arrays, found " +
                                   std::string(py::str(py::type::handle_of(images).attr("__name__"))));
    const py::sequence sequence = py::reinterpret_borrow<py::sequence>(images);
    for (std::size_t i = 0; i < sequence.size(); ++i) {
        const std::string name = what + "[" + std::to_string(i) + "]";
        keep.push_back(as_array(sequence[i], name));
        views.push_back(image_view(keep.back(), name));
    }
    if (views.empty()) throw sga::InvalidArgument(what + " holds no images");
    return views;
}

// ---- arrays out -----------------------------------------------------------------------------

// The vector's storage as a numpy array of `shape`, without a copy: the array owns it.
template <class T>
py::array owning_array(std::vector<T>&& values, std::vector<py::ssize_t> shape, py::dtype dtype) {
    auto* owned = new std::vector<T>(std::move(values));
    py::capsule release(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array(std::move(dtype), std::move(shape), {}, owned->data(), release);
}

// ---- options --------------------------------------------------------------------------------

std::string type_name(py::handle value) { return py::str(py::type::handle_of(value).attr("__name__")); }

long long int_value(py::handle value, const char* name) {
    if (!py::isinstance<py::int_>(value) || py::isinstance<py::bool_>(value))
        throw sga::InvalidArgument(std::string(name) + " expects an int, found " + type_name(value) + " " +
                                   std::string(py::repr(value)));
    return value.cast<long long>();
}

int int_option(py::handle value, const char* name) {
    const long long v = int_value(value, name);
    if (v < INT_MIN || v > INT_MAX) throw sga::InvalidArgument(std::string(name) + " " + std::to_string(v) + " is out of range");
    return static_cast<int>(v);
}

float float_option(py::handle value, const char* name) {
    if (py::isinstance<py::bool_>(value) || !(py::isinstance<py::float_>(value) || py::isinstance<py::int_>(value)))
        throw sga::InvalidArgument(std::string(name) + " expects a number, found " + type_name(value) + " " +
                                   std::string(py::repr(value)));
    return static_cast<float>(value.cast<double>());
}

std::string str_option(py::handle value, const char* name) {
    if (!py::isinstance<py::str>(value))
        throw sga::InvalidArgument(std::string(name) + " expects a str, found " + type_name(value) + " " +
                                   std::string(py::repr(value)));
    return value.cast<std::string>();
}

sga::Device parse_device(const std::string& text) {
    if (text == "cpu") return sga::Device::Cpu;
    if (text == "cuda") return sga::Device::Cuda;
    if (text == "auto") return sga::Device::Auto;
    throw sga::InvalidArgument("device expects 'cpu', 'cuda' or 'auto', found '" + text + "'");
}

const char* scoring_mode_name(sga::ScoringMode mode) {
    return mode == sga::ScoringMode::RunningStatistics ? "running" : "batch";
}

sga::ScoringMode parse_scoring_mode(const std::string& text) {
    if (text == "running") return sga::ScoringMode::RunningStatistics;
    if (text == "batch") return sga::ScoringMode::OfficialBatchStatistics;
    throw sga::InvalidArgument("scoring_mode expects 'running' or 'batch', found '" + text + "'");
}

// The double whose shortest decimal form is the float's (0.0002 for 2e-4f, not 0.0001999...),
// so that options read back as they were written.
double shortest(float value) {
    char text[32];
    const auto end = std::to_chars(text, text + sizeof text, value).ptr;
    return std::strtod(std::string(text, end).c_str(), nullptr);
}

// One keyword of Detector(**options): its name, how to read it from DetectorOptions and how to
// set it there from a Python value.
struct OptionField {
    const char* name;
    std::function<py::object(const sga::DetectorOptions&)> get;
    std::function<void(sga::DetectorOptions&, py::handle)> set;
};

#define SGA_INT_FIELD(key, member)                                                            \
    OptionField {                                                                             \
        key, [](const sga::DetectorOptions& o) { return py::object(py::int_(o.member)); },   \
            [](sga::DetectorOptions& o, py::handle v) { o.member = int_option(v, key); }     \
    }
#define SGA_FLOAT_FIELD(key, member)                                                                 \
    OptionField {                                                                                    \
        key, [](const sga::DetectorOptions& o) { return py::object(py::float_(shortest(o.member))); }, \
            [](sga::DetectorOptions& o, py::handle v) { o.member = float_option(v, key); }      \
    }
#define SGA_STR_FIELD(key, member)                                                         \
    OptionField {                                                                          \
        key, [](const sga::DetectorOptions& o) { return py::object(py::str(o.member)); }, \
            [](sga::DetectorOptions& o, py::handle v) { o.member = str_option(v, key); }  \
    }

// The keywords, in the order help(Detector) lists them.
const std::vector<OptionField>& option_fields() {
    static const std::vector<OptionField> fields = {
        SGA_INT_FIELD("image_size", architecture.image_size),
        SGA_INT_FIELD("channels", architecture.channels),
        {"recipe", [](const sga::DetectorOptions& o) { return py::object(py::str(o.recipe.name)); },
         [](sga::DetectorOptions& o, py::handle v) { o.recipe = sga::Recipe::named(str_option(v, "recipe")); }},
        SGA_INT_FIELD("epochs", epochs),
        SGA_INT_FIELD("batch_size", batch_size),
        {"seed", [](const sga::DetectorOptions& o) { return py::object(py::int_(o.seed)); },
         [](sga::DetectorOptions& o, py::handle v) {
             const long long seed = int_value(v, "seed");
             if (seed < 0) throw sga::InvalidArgument("seed must not be negative, found " + std::to_string(seed));
             o.seed = static_cast<std::uint64_t>(seed);
         }},
        SGA_FLOAT_FIELD("learning_rate", adam.learning_rate),
        SGA_FLOAT_FIELD("validation_fraction", validation_fraction),
        SGA_FLOAT_FIELD("threshold_quantile", threshold_quantile),
        {"device", [](const sga::DetectorOptions& o) { return py::object(py::str(sga::to_string(o.device))); },
         [](sga::DetectorOptions& o, py::handle v) { o.device = parse_device(str_option(v, "device")); }},
        {"scoring_mode", [](const sga::DetectorOptions& o) { return py::object(py::str(scoring_mode_name(o.scoring_mode))); },
         [](sga::DetectorOptions& o, py::handle v) { o.scoring_mode = parse_scoring_mode(str_option(v, "scoring_mode")); }},
        SGA_INT_FIELD("score_batch_size", score_batch_size),
        {"precision", [](const sga::DetectorOptions& o) { return py::object(py::str(sga::precision_name(o.precision))); },
         [](sga::DetectorOptions& o, py::handle v) { o.precision = sga::precision_from_name(str_option(v, "precision")); }},
        {"training_precision",
         [](const sga::DetectorOptions& o) { return py::object(py::str(sga::precision_name(o.training_precision))); },
         [](sga::DetectorOptions& o, py::handle v) {
             o.training_precision = sga::precision_from_name(str_option(v, "training_precision"));
         }},
        SGA_INT_FIELD("tile", tiling.tile),
        SGA_INT_FIELD("stride", tiling.stride),
        SGA_INT_FIELD("generator_features", architecture.generator_features),
        SGA_INT_FIELD("discriminator_features", architecture.discriminator_features),
        SGA_INT_FIELD("latent_size", architecture.latent_size),
        SGA_INT_FIELD("checkpoint_every_epochs", checkpoint_every_epochs),
        SGA_STR_FIELD("checkpoint_path", checkpoint_path),
        SGA_STR_FIELD("resume_from", resume_from),
    };
    return fields;
}
#undef SGA_INT_FIELD
#undef SGA_FLOAT_FIELD
#undef SGA_STR_FIELD

py::dict options_dict(const sga::DetectorOptions& options) {
    py::dict d;
    for (const OptionField& f : option_fields()) d[f.name] = f.get(options);
    return d;
}

sga::DetectorOptions options_from(const py::kwargs& given) {
    sga::DetectorOptions options;  // the C++ defaults, for every keyword not given
    for (const auto& [key, value] : given) {
        const std::string name = py::str(key);
        const OptionField* field = nullptr;
        for (const OptionField& f : option_fields())
            if (name == f.name) field = &f;
        if (field == nullptr) {
            std::string known;
            for (const OptionField& f : option_fields()) known += (known.empty() ? "" : ", ") + std::string(f.name);
            throw py::type_error("Detector() got an unexpected keyword argument '" + name + "'; the options are " + known);
        }
        field->set(options, value);
    }
    options.validate();
    return options;
}

// ---- results --------------------------------------------------------------------------------

// ScoreResult for Python: the numbers, and the maps as numpy arrays (None when not asked for).
struct PyScoreResult {
    float score = 0, normalized_score = 0, threshold = 0;
    bool is_anomaly = false;
    float reconstruction_error = 0, latent_error = 0, rotation_error = 0;
    py::object anomaly_map = py::none(), normalized_anomaly_map = py::none(), anomaly_mask = py::none();
};

PyScoreResult to_python(sga::ScoreResult&& r) {
    PyScoreResult p;
    p.score = r.score;
    p.normalized_score = r.normalized_score;
    p.threshold = r.threshold;
    p.is_anomaly = r.is_anomaly;
    p.reconstruction_error = r.reconstruction_error;
    p.latent_error = r.latent_error;
    p.rotation_error = r.rotation_error;
    const std::vector<py::ssize_t> shape = {r.map_height, r.map_width};
    if (!r.anomaly_map.empty()) p.anomaly_map = owning_array(std::move(r.anomaly_map), shape, py::dtype::of<float>());
    if (!r.normalized_anomaly_map.empty())
        p.normalized_anomaly_map = owning_array(std::move(r.normalized_anomaly_map), shape, py::dtype::of<float>());
    // 0 or 1 per pixel: numpy's bool has the same one-byte representation.
    if (!r.anomaly_mask.empty()) p.anomaly_mask = owning_array(std::move(r.anomaly_mask), shape, py::dtype("bool"));
    return p;
}

sga::ScoreOptions score_options(bool anomaly_map, bool anomaly_mask, const std::optional<std::string>& scoring_mode) {
    sga::ScoreOptions o;
    o.anomaly_map = anomaly_map;
    o.anomaly_mask = anomaly_mask;
    if (scoring_mode) o.scoring_mode = parse_scoring_mode(*scoring_mode);
    return o;
}

std::string result_repr(const PyScoreResult& r) {
    return "ScoreResult(score=" + std::string(py::repr(py::float_(r.score))) +
           ", is_anomaly=" + (r.is_anomaly ? "True" : "False") +
           ", normalized_score=" + std::string(py::repr(py::float_(r.normalized_score))) +
           ", threshold=" + std::string(py::repr(py::float_(r.threshold))) +
           (r.anomaly_map.is_none() ? "" : ", anomaly_map=<" + std::string(py::str(r.anomaly_map.attr("shape"))) + ">") +
           (r.anomaly_mask.is_none() ? "" : ", anomaly_mask=<" + std::string(py::str(r.anomaly_mask.attr("shape"))) + ">") +
           ")";
}

// ---- fit callbacks --------------------------------------------------------------------------

// The Python side of FitCallbacks. Runs on the fitting thread with the GIL taken for each
// call; after the first exception (the callback's own, or KeyboardInterrupt from a signal
// check) nothing more is called and fit is cancelled.
struct PythonFitCallbacks {
    py::object on_batch, on_epoch;
    std::atomic<bool> cancel{false};
    std::exception_ptr error;

    template <class Call>
    void guarded(Call&& call) {
        py::gil_scoped_acquire gil;
        if (cancel.load()) return;
        try {
            call();
            if (PyErr_CheckSignals() != 0) throw py::error_already_set();  // Ctrl-C in the main thread
        } catch (...) {
            error = std::current_exception();
            cancel.store(true);
        }
    }

    sga::FitCallbacks callbacks() {
        sga::FitCallbacks c;
        c.cancel = &cancel;
        c.on_batch = [this](const sga::TrainingProgress& p) {
            guarded([&] {
                if (!on_batch.is_none()) on_batch(p);
            });
        };
        if (!on_epoch.is_none())
            c.on_epoch = [this](const sga::EpochSummary& e) { guarded([&] { on_epoch(e); }); };
        return c;
    }
};

std::string fields_repr(const char* name, std::initializer_list<std::pair<const char*, py::object>> fields) {
    std::string s = std::string(name) + "(";
    bool first = true;
    for (const auto& [key, value] : fields) {
        s += (first ? "" : ", ") + std::string(key) + "=" + std::string(py::repr(value));
        first = false;
    }
    return s + ")";
}

// ---- the Detector ---------------------------------------------------------------------------

sga::FitReport fit(sga::Detector& detector, py::handle images, py::object on_batch, py::object on_epoch) {
    std::vector<py::array> keep;
    const std::vector<sga::ImageView> views = batch_views(images, "images", keep);
    PythonFitCallbacks python;
    python.on_batch = std::move(on_batch);
    python.on_epoch = std::move(on_epoch);
    const sga::FitCallbacks callbacks = python.callbacks();
    sga::FitReport report;
    {
        py::gil_scoped_release release;
        report = detector.fit(std::span<const sga::ImageView>(views), callbacks);
    }
    if (python.error) std::rethrow_exception(python.error);
    return report;
}

PyScoreResult score_one(const sga::Detector& detector, py::handle image, bool anomaly_map, bool anomaly_mask,
                        const std::optional<std::string>& scoring_mode) {
    const sga::ScoreOptions options = score_options(anomaly_map, anomaly_mask, scoring_mode);
    const py::array a = as_array(image, "image");
    sga::ScoreResult r;
    if (is_float32(a)) {
        const sga::FloatImageView view = float_view(a, "image");
        py::gil_scoped_release release;
        r = detector.score(view, options);
    } else if (is_uint8(a)) {
        const sga::ImageView view = image_view(a, "image");
        py::gil_scoped_release release;
        r = detector.score(view, options);
    } else {
        throw sga::InvalidArgument(std::string("image must be ") + image_layouts + ", found " + describe(a));
    }
    return to_python(std::move(r));
}

std::vector<PyScoreResult> score_batch(const sga::Detector& detector, py::handle images, bool anomaly_map,
                                       bool anomaly_mask, const std::optional<std::string>& scoring_mode) {
    const sga::ScoreOptions options = score_options(anomaly_map, anomaly_mask, scoring_mode);
    std::vector<py::array> keep;
    const std::vector<sga::ImageView> views = batch_views(images, "images", keep);
    std::vector<sga::ScoreResult> results;
    {
        py::gil_scoped_release release;
        results = detector.score(std::span<const sga::ImageView>(views), options);
    }
    std::vector<PyScoreResult> out;
    out.reserve(results.size());
    for (sga::ScoreResult& r : results) out.push_back(to_python(std::move(r)));
    return out;
}

sga::CalibrationResult calibrate(sga::Detector& detector, py::handle normal, py::handle anomalous,
                                 std::optional<double> quantile) {
    std::vector<py::array> keep;
    const std::vector<sga::ImageView> normal_views = batch_views(normal, "normal", keep);
    std::vector<sga::ImageView> anomalous_views;
    if (!anomalous.is_none()) {
        if (quantile) throw sga::InvalidArgument("calibrate takes anomalous images or a quantile, not both");
        anomalous_views = batch_views(anomalous, "anomalous", keep);
    }
    py::gil_scoped_release release;
    if (quantile) return detector.calibrate(normal_views, sga::ThresholdQuantile(*quantile));
    if (!anomalous_views.empty()) return detector.calibrate(normal_views, anomalous_views);
    return detector.calibrate(normal_views);
}

py::array load_image(const std::string& path) {
    sga::Image image;
    {
        py::gil_scoped_release release;
        image = sga::load_image(path);
    }
    std::vector<py::ssize_t> shape = {image.height, image.width};
    if (image.channels > 1) shape.push_back(image.channels);
    return owning_array(std::move(image.pixels), std::move(shape), py::dtype::of<std::uint8_t>());
}

void save_png(const std::string& path, py::handle array) {
    const py::array a = as_array(array, "image");
    const sga::ImageView view = image_view(a, "image");
    const int channels = sga::bytes_per_pixel(view.format);
    sga::Image image{view.width, view.height, channels, {}};
    image.pixels.resize(static_cast<std::size_t>(view.width) * static_cast<std::size_t>(view.height) *
                        static_cast<std::size_t>(channels));
    const std::size_t row = static_cast<std::size_t>(view.width) * static_cast<std::size_t>(channels);
    for (int y = 0; y < view.height; ++y)
        std::copy_n(view.data + y * view.row_stride_bytes, row, image.pixels.data() + static_cast<std::size_t>(y) * row);
    py::gil_scoped_release release;
    sga::save_png(path, image);
}

}  // namespace

PYBIND11_MODULE(_skipganomaly, m) {
    m.doc() = "Skip-GANomaly image anomaly detection (the compiled part; import skipganomaly)";
    register_errors(m);

    py::class_<PyScoreResult>(m, "ScoreResult", "One image's score (Detector.score, Detector.score_batch).")
        .def_readonly("score", &PyScoreResult::score, "the anomaly score: higher is more anomalous")
        .def_readonly("is_anomaly", &PyScoreResult::is_anomaly, "score >= threshold")
        .def_readonly("normalized_score", &PyScoreResult::normalized_score,
                      "clamp((score - threshold) / (validation max - validation min) + 0.5, 0, 1): 0.5 at the threshold")
        .def_readonly("threshold", &PyScoreResult::threshold)
        .def_readonly("reconstruction_error", &PyScoreResult::reconstruction_error)
        .def_readonly("latent_error", &PyScoreResult::latent_error)
        .def_readonly("rotation_error", &PyScoreResult::rotation_error)
        .def_readonly("anomaly_map", &PyScoreResult::anomaly_map,
                      "float32 (H, W) per-pixel error at the image's resolution, or None unless asked for")
        .def_readonly("normalized_anomaly_map", &PyScoreResult::normalized_anomaly_map,
                      "float32 (H, W), 0.5 at the pixel threshold, or None unless anomaly_mask was asked for")
        .def_readonly("anomaly_mask", &PyScoreResult::anomaly_mask,
                      "bool (H, W), True where the map reaches the pixel threshold, or None unless asked for")
        .def("__repr__", &result_repr);

    py::class_<sga::TrainingProgress>(m, "TrainingProgress", "What Detector.fit's on_batch sees after each batch.")
        .def_readonly("epoch", &sga::TrainingProgress::epoch, "counts from 1")
        .def_readonly("epochs", &sga::TrainingProgress::epochs)
        .def_readonly("batch", &sga::TrainingProgress::batch, "counts from 1")
        .def_readonly("batches", &sga::TrainingProgress::batches)
        .def_property_readonly("generator_loss", [](const sga::TrainingProgress& p) { return p.losses.generator; })
        .def_property_readonly("discriminator_loss", [](const sga::TrainingProgress& p) { return p.losses.discriminator; })
        .def_readonly("elapsed_seconds", &sga::TrainingProgress::elapsed_seconds)
        .def_readonly("estimated_remaining_seconds", &sga::TrainingProgress::estimated_remaining_seconds)
        .def("__repr__", [](const sga::TrainingProgress& p) {
            return fields_repr(
                "TrainingProgress", {{"epoch", py::int_(p.epoch)}, {"epochs", py::int_(p.epochs)},
                                     {"batch", py::int_(p.batch)}, {"batches", py::int_(p.batches)},
                                     {"generator_loss", py::float_(p.losses.generator)},
                                     {"discriminator_loss", py::float_(p.losses.discriminator)}});
        });

    py::class_<sga::EpochSummary>(m, "EpochSummary", "What Detector.fit's on_epoch sees after each epoch (means over its batches).")
        .def_readonly("epoch", &sga::EpochSummary::epoch, "counts from 1")
        .def_readonly("generator_loss", &sga::EpochSummary::generator_loss)
        .def_readonly("discriminator_loss", &sga::EpochSummary::discriminator_loss)
        .def_readonly("adversarial_loss", &sga::EpochSummary::adversarial_loss)
        .def_readonly("contextual_loss", &sga::EpochSummary::contextual_loss)
        .def_readonly("latent_loss", &sga::EpochSummary::latent_loss)
        .def_readonly("discriminator_reinits", &sga::EpochSummary::discriminator_reinits)
        .def_readonly("seconds", &sga::EpochSummary::seconds)
        .def("__repr__", [](const sga::EpochSummary& e) {
            return fields_repr(
                "EpochSummary", {{"epoch", py::int_(e.epoch)}, {"generator_loss", py::float_(e.generator_loss)},
                                 {"discriminator_loss", py::float_(e.discriminator_loss)},
                                 {"seconds", py::float_(e.seconds)}});
        });

    py::class_<sga::FitReport>(m, "FitReport", "What Detector.fit did.")
        .def_readonly("epochs_completed", &sga::FitReport::epochs_completed)
        .def_readonly("kept_epoch", &sga::FitReport::kept_epoch)
        .def_readonly("cancelled", &sga::FitReport::cancelled)
        .def_readonly("epochs", &sga::FitReport::epochs)
        .def_readonly("training_images", &sga::FitReport::training_images)
        .def_readonly("validation_images", &sga::FitReport::validation_images)
        .def_readonly("seconds", &sga::FitReport::seconds)
        .def_readonly("threshold", &sga::FitReport::threshold)
        .def_readonly("warnings", &sga::FitReport::warnings)
        .def("__repr__", [](const sga::FitReport& r) {
            return fields_repr(
                "FitReport", {{"epochs_completed", py::int_(r.epochs_completed)}, {"kept_epoch", py::int_(r.kept_epoch)},
                              {"training_images", py::int_(r.training_images)},
                              {"validation_images", py::int_(r.validation_images)},
                              {"threshold", py::float_(r.threshold)}, {"seconds", py::float_(r.seconds)}});
        });

    py::class_<sga::CalibrationResult>(m, "CalibrationResult", "What Detector.calibrate chose.")
        .def_readonly("threshold", &sga::CalibrationResult::threshold)
        .def_readonly("rule", &sga::CalibrationResult::rule, "'f1_max' or 'validation_quantile'")
        .def_readonly("f1", &sga::CalibrationResult::f1, "-1 without anomalous images")
        .def_readonly("auroc", &sga::CalibrationResult::auroc, "-1 without anomalous images")
        .def_readonly("normal_images", &sga::CalibrationResult::normal_images)
        .def_readonly("anomalous_images", &sga::CalibrationResult::anomalous_images)
        .def("__repr__", [](const sga::CalibrationResult& c) {
            return fields_repr(
                "CalibrationResult", {{"threshold", py::float_(c.threshold)}, {"rule", py::str(c.rule)},
                                      {"f1", py::float_(c.f1)}, {"auroc", py::float_(c.auroc)}});
        });

    py::class_<sga::Detector>(m, "Detector",
                              "Detector(**options): trains Skip-GANomaly on normal images and scores images.\n"
                              "The keywords and their defaults (the C++ DetectorOptions') are DEFAULT_OPTIONS'.")
        .def(py::init([](const py::kwargs& options) { return sga::Detector(options_from(options)); }))
        .def("fit", &fit, py::arg("images"), py::kw_only(), py::arg("on_batch") = py::none(),
             py::arg("on_epoch") = py::none(),
             "Trains on normal images: uint8 (N, H, W[, C]) or a list of (H, W[, C]) arrays. on_batch(TrainingProgress)\n"
             "and on_epoch(EpochSummary) are called from the training thread; an exception raised in one\n"
             "cancels fit (the weights of the last completed epoch stay) and is raised from fit.")
        .def("score", &score_one, py::arg("image"), py::kw_only(), py::arg("anomaly_map") = false,
             py::arg("anomaly_mask") = false, py::arg("scoring_mode") = py::none(),
             "Scores one image: uint8 (H, W[, C]) or float32 (C, H, W) in [-1, 1], without copying it. Threads\n"
             "may score at once: the GIL is released.")
        .def("score_batch", &score_batch, py::arg("images"), py::kw_only(), py::arg("anomaly_map") = false,
             py::arg("anomaly_mask") = false, py::arg("scoring_mode") = py::none(),
             "Scores images (as fit takes them) in passes of score_batch_size; the same scores as the\n"
             "command-line tool's `score` for the same images, to the bit. Each agrees with score() of the\n"
             "image alone to float rounding.")
        .def("calibrate", &calibrate, py::arg("normal"), py::arg("anomalous") = py::none(), py::kw_only(),
             py::arg("quantile") = py::none(),
             "Sets the threshold: F1-maximising with anomalous images, else the quantile (default\n"
             "options['threshold_quantile']) of the normal images' scores; learns the pixel threshold.")
        .def(
            "save",
            [](const sga::Detector& d, const std::string& path, const std::string& weights) {
                if (weights != "float32" && weights != "float16")
                    throw sga::InvalidArgument("weights expects 'float32' or 'float16', found '" + weights + "'");
                py::gil_scoped_release release;
                d.save(path, weights == "float16" ? sga::WeightStorage::Float16 : sga::WeightStorage::Float32);
            },
            py::arg("path"), py::kw_only(), py::arg("weights") = "float32")
        .def_static(
            "load",
            [](const std::string& path, const std::string& device) {
                const sga::Device d = parse_device(device);
                py::gil_scoped_release release;
                return sga::Detector::load(path, d);
            },
            py::arg("path"), py::kw_only(), py::arg("device") = "auto")
        .def_property("threshold", &sga::Detector::threshold, &sga::Detector::set_threshold)
        .def_property(
            "precision", [](const sga::Detector& d) { return std::string(sga::precision_name(d.options().precision)); },
            [](sga::Detector& d, const std::string& name) {
                py::gil_scoped_release release;  // waits for scoring calls under way
                d.set_precision(sga::precision_from_name(name));
            },
            "the scoring arithmetic asked for: 'float32' or 'bfloat16' (setting it keeps the thresholds)")
        .def_property_readonly(
            "active_precision", [](const sga::Detector& d) { return std::string(sga::precision_name(d.active_precision())); },
            "what scoring computes in: 'bfloat16' only where the processor has AVX512-BF16")
        .def_property_readonly("is_trained", &sga::Detector::is_trained)
        .def_property_readonly("options", [](const sga::Detector& d) { return options_dict(d.options()); })
        .def_property_readonly("device", [](const sga::Detector& d) { return sga::to_string(d.device()); })
        .def_property_readonly("pixel_threshold", [](const sga::Detector& d) -> py::object {
            const sga::PixelStatistics& p = d.pixel_statistics();
            return p.count > 0 ? py::object(py::float_(p.threshold)) : py::object(py::none());
        });

    m.attr("DEFAULT_OPTIONS") = options_dict(sga::DetectorOptions{});
    m.def("load_image", &load_image, py::arg("path"));
    m.def("save_png", &save_png, py::arg("path"), py::arg("image"));
    m.def("set_cpu_threads", &sga::set_cpu_threads, py::arg("threads"));
    m.def("cpu_threads", &sga::cpu_threads);
    m.def("cuda_available", &sga::cuda_device_available);
}
