#include "core/buffer.h"

#include <cstdlib>
#include <cstring>

namespace bk {

void Buffer::Free::operator()(void* p) const { std::free(p); }

Buffer::Buffer(Shape shape, DType dtype) : shape_(shape), dtype_(dtype) {
  size_t bytes = nbytes();
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  BK_CHECK(p != nullptr, "out of host memory allocating {} bytes for a tensor of shape {}", rounded,
           shape.str());
  std::memset(p, 0, rounded);
  mem_.reset(p);
}

void Buffer::zero() {
  if (mem_) std::memset(mem_.get(), 0, nbytes());
}

}  // namespace bk

namespace bk {

void Buffer::fill(double v) {
  if (dtype_ == DType::f64) {
    double* p = ptr<double>();
    for (int64_t i = 0; i < numel(); ++i) p[i] = v;
  } else {
    float* p = ptr<float>();
    for (int64_t i = 0; i < numel(); ++i) p[i] = float(v);
  }
}

Buffer Buffer::to(DType dtype) const {
  BK_CHECK((dtype_ == DType::f32 || dtype_ == DType::f64) && (dtype == DType::f32 || dtype == DType::f64),
           "Buffer::to: only f32 <-> f64, not {} -> {}", dtype_name(dtype_), dtype_name(dtype));
  Buffer out(shape_, dtype);
  for (int64_t i = 0; i < numel(); ++i) {
    const double v = dtype_ == DType::f64 ? ptr<double>()[i] : double(ptr<float>()[i]);
    if (dtype == DType::f64) out.ptr<double>()[i] = v;
    else out.ptr<float>()[i] = float(v);
  }
  return out;
}

}  // namespace bk
