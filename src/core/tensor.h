// Tensor: a non-owning view of contiguous row-major memory (pointer, dtype, shape, device).
// Storage is owned elsewhere (core/buffer.h); views are cheap to copy and pass by value.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace bk {

enum class Device : uint8_t { cpu, cuda };

constexpr int kMaxDims = 4;

struct Shape {
  std::array<int64_t, kMaxDims> d{};
  int ndim = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    BK_CHECK(dims.size() <= kMaxDims, "tensor rank {} exceeds {}", dims.size(), kMaxDims);
    for (int64_t x : dims) d[ndim++] = x;
  }
  int64_t operator[](int i) const { return d[i < 0 ? ndim + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= d[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (ndim != o.ndim) return false;
    for (int i = 0; i < ndim; ++i)
      if (d[i] != o.d[i]) return false;
    return true;
  }
  std::string str() const;
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  Shape shape;
  Device device = Device::cpu;

  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t size(int i) const { return shape[i]; }
  int ndim() const { return shape.ndim; }

  // Host access: a GPU tensor's memory is not addressable here (download it first).
  template <typename T> T* ptr() const {
    BK_CHECK(dtype == dtype_of<T>(), "tensor dtype is {}, accessed as {}", dtype_name(dtype),
             dtype_name(dtype_of<T>()));
    BK_CHECK(device == Device::cpu, "host access to a {} {} tensor on the GPU; download it first",
             dtype_name(dtype), shape.str());
    return static_cast<T*>(data);
  }
  // Same memory, another shape with the same element count.
  Tensor view(Shape s) const {
    BK_CHECK(s.numel() == numel(), "view {} of a tensor of shape {}", s.str(), shape.str());
    Tensor t = *this;
    t.shape = s;
    return t;
  }
  // Rows [begin, end) along the first dimension.
  Tensor rows(int64_t begin, int64_t end) const;
};

}  // namespace bk
