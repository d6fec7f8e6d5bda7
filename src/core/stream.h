// Stream: an opaque handle to an ordered queue of device work. The CPU backend ignores it; the
// CUDA backend reads a cudaStream_t from it (a null handle is CUDA's legacy default stream).
// Kept in core, free of CUDA headers, so host code can pass streams around without nvcc.
#pragma once

namespace bk {

struct Stream {
  void* handle = nullptr;
};

}  // namespace bk
