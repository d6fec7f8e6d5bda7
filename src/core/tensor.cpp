#include "core/tensor.h"

namespace bk {

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  BK_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape[0],
           "rows [{}, {}) of a tensor of shape {}", begin, end, shape.str());
  Tensor t = *this;
  int64_t row = numel() / (shape[0] ? shape[0] : 1);
  t.data = static_cast<char*>(data) + size_t(begin * row) * dtype_size(dtype);
  t.shape.d[0] = end - begin;
  return t;
}

}  // namespace bk
