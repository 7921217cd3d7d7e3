// float32 tensors in NCHW order: Tensor owns its memory (move-only), TensorView does not.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "skipganomaly/error.hpp"
#include "skipganomaly/engine/memory.hpp"

namespace sga {

// Up to four dimensions; a rank-4 shape is (N, C, H, W).
class Shape {
public:
    static constexpr int max_rank = 4;

    Shape() = default;
    // Shape{n, c, h, w}. A variadic constructor rather than an initializer_list one: GCC 12
    // reports false dangling-pointer warnings for the latter.
    template <typename... Dims>
        requires(sizeof...(Dims) <= max_rank && (std::is_integral_v<Dims> && ...))
    Shape(Dims... dims) : dims_{static_cast<std::int64_t>(dims)...}, rank_(static_cast<int>(sizeof...(Dims))) {
        for (int i = 0; i < rank_; ++i) SGA_CHECK_ARGUMENT(dims_[i] >= 0, "shape dimensions must not be negative");
    }
    static Shape from(const std::vector<std::int64_t>& dims) {
        SGA_CHECK_ARGUMENT(dims.size() <= max_rank, "a shape has at most 4 dimensions");
        Shape s;
        for (std::int64_t d : dims) {
            SGA_CHECK_ARGUMENT(d >= 0, "shape dimensions must not be negative");
            s.dims_[s.rank_++] = d;
        }
        return s;
    }

    int rank() const { return rank_; }
    std::int64_t operator[](int axis) const { return dims_.at(axis); }
    std::int64_t numel() const {
        std::int64_t n = 1;
        for (int i = 0; i < rank_; ++i) n *= dims_[i];
        return n;
    }
    // NCHW accessors; only meaningful for rank 4.
    std::int64_t n() const { return dims_[0]; }
    std::int64_t c() const { return dims_[1]; }
    std::int64_t h() const { return dims_[2]; }
    std::int64_t w() const { return dims_[3]; }
    std::vector<std::int64_t> dims() const { return {dims_.begin(), dims_.begin() + rank_}; }

    friend bool operator==(const Shape& a, const Shape& b) {
        if (a.rank_ != b.rank_) return false;
        for (int i = 0; i < a.rank_; ++i)
            if (a.dims_[i] != b.dims_[i]) return false;
        return true;
    }
    std::string str() const {
        std::string s = "(";
        for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
        return s + ")";
    }

private:
    std::array<std::int64_t, max_rank> dims_{};
    int rank_ = 0;
};

// A non-owning window on float32 memory of some device. Cheap to copy; the owner
// (a Tensor, an Arena or a ParameterBlock) must outlive it.
class TensorView {
public:
    TensorView() = default;
    TensorView(float* data, Shape shape, Device device) : data_(data), shape_(shape), device_(device) {}

    float* data() const { return data_; }
    const Shape& shape() const { return shape_; }
    Device device() const { return device_; }
    std::int64_t numel() const { return shape_.numel(); }
    bool empty() const { return data_ == nullptr; }

    // Same memory, another shape with as many elements.
    TensorView reshape(Shape shape) const {
        SGA_CHECK_ARGUMENT(shape.numel() == numel(),
                           "reshape from " + shape_.str() + " to " + shape.str() + " changes the element count");
        return {data_, shape, device_};
    }
    // Samples [first, first + count) along the first axis.
    TensorView slice_batch(std::int64_t first, std::int64_t count) const {
        SGA_CHECK_ARGUMENT(shape_.rank() >= 1 && first >= 0 && count >= 0 && first + count <= shape_[0],
                           "batch slice out of range for shape " + shape_.str());
        std::vector<std::int64_t> dims = shape_.dims();
        const std::int64_t per_sample = numel() / (dims[0] ? dims[0] : 1);
        dims[0] = count;
        return {data_ + first * per_sample, Shape::from(dims), device_};
    }

private:
    float* data_ = nullptr;
    Shape shape_;
    Device device_ = Device::Cpu;
};

// Owns float32 memory on one device. Move-only: copies are explicit (clone, to).
class Tensor {
public:
    Tensor() = default;
    Tensor(Shape shape, Device device) : shape_(shape), device_(device) {
        SGA_CHECK_ARGUMENT(device != Device::Auto, "resolve Device::Auto before allocating");
        if (shape.numel() > 0)
            data_ = static_cast<float*>(allocate(device, static_cast<std::size_t>(shape.numel()) * sizeof(float)));
    }
    // Host tensor holding a copy of `values`.
    static Tensor from_host(Shape shape, const std::vector<float>& values, Device device = Device::Cpu) {
        SGA_CHECK_ARGUMENT(static_cast<std::int64_t>(values.size()) == shape.numel(),
                           "value count " + std::to_string(values.size()) + " does not match shape " + shape.str());
        Tensor t(shape, device);
        copy_bytes(t.data_, device, values.data(), Device::Cpu, values.size() * sizeof(float));
        return t;
    }
    ~Tensor() { release(); }
    Tensor(const Tensor&) = delete;
    Tensor& operator=(const Tensor&) = delete;
    Tensor(Tensor&& other) noexcept { *this = std::move(other); }
    Tensor& operator=(Tensor&& other) noexcept {
        if (this != &other) {
            release();
            data_ = std::exchange(other.data_, nullptr);
            shape_ = other.shape_;
            device_ = other.device_;
        }
        return *this;
    }

    float* data() const { return data_; }
    const Shape& shape() const { return shape_; }
    Device device() const { return device_; }
    std::int64_t numel() const { return shape_.numel(); }
    TensorView view() const { return {data_, shape_, device_}; }
    operator TensorView() const { return view(); }

    // Reshape in place, without copying.
    void reshape(Shape shape) { shape_ = view().reshape(shape).shape(); }
    // A deep copy on `device` (which may be the same device).
    Tensor to(Device device) const { return copy_of(view(), device); }
    Tensor clone() const { return to(device_); }
    static Tensor copy_of(TensorView source, Device device) {
        Tensor t(source.shape(), device);
        copy_bytes(t.data_, device, source.data(), source.device(), static_cast<std::size_t>(source.numel()) * sizeof(float));
        return t;
    }
    std::vector<float> to_vector() const { return host_values(view()); }
    static std::vector<float> host_values(TensorView source) {
        std::vector<float> out(static_cast<std::size_t>(source.numel()));
        copy_bytes(out.data(), Device::Cpu, source.data(), source.device(), out.size() * sizeof(float));
        return out;
    }

private:
    void release() noexcept {
        if (data_) deallocate(device_, data_);
        data_ = nullptr;
    }
    float* data_ = nullptr;
    Shape shape_;
    Device device_ = Device::Cpu;
};

}  // namespace sga
