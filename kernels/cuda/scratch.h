// Temporary device memory for one op (partial sums, sort buffers, workspaces) from the caching
// allocator, returned to the stream's free list at scope exit. Freeing before the kernels that
// use it have run is safe: the block stays tagged with the stream, and whatever reuses it is
// queued on that stream after them.
#pragma once
#include <cstddef>

#include "core/cuda/allocator.h"
#include "core/stream.h"

namespace bk::cuda {

class Scratch {
 public:
  Scratch(size_t bytes, Stream s) : p_(device_allocator().allocate(bytes, s)) {}  // resolve_stream on s
  ~Scratch() { device_allocator().free(p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  void* get() const { return p_; }
  template <typename T> T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_;
};

}  // namespace bk::cuda
