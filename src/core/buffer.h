// Buffer: owning, 64-byte aligned, zero-initialised storage for one tensor on the CPU.
// (The CUDA backend adds a caching device allocator behind the same interface.)
#pragma once
#include <cstddef>
#include <memory>

#include "core/tensor.h"

namespace bk {

class Buffer {
 public:
  Buffer() = default;
  Buffer(Shape shape, DType dtype = DType::f32);
  Buffer(Buffer&&) noexcept = default;
  Buffer& operator=(Buffer&&) noexcept = default;

  Tensor tensor() const { return Tensor{mem_.get(), dtype_, shape_, Device::cpu}; }
  operator Tensor() const { return tensor(); }  // NOLINT: a buffer is usable wherever a view is
  template <typename T> T* ptr() const { return tensor().ptr<T>(); }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  bool empty() const { return !mem_; }
  void zero();
  void fill(double v);  // f32 or f64
  // A copy converted to another floating dtype (f32 <-> f64).
  Buffer to(DType dtype) const;

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> mem_;
  Shape shape_;
  DType dtype_ = DType::f32;
};

}  // namespace bk
