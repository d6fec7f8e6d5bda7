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
