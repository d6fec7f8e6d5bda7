// Many tensors in one launch (the optimizer's ops): the host lists one entry per tensor, each
// owning the consecutive chunks [first_chunk, first_chunk + its chunk count) of one grid; a block
// finds the entry of its chunk by binary search over that table.
#pragma once
#include <cstdint>

namespace bk::cuda {

// The last entry whose chunks start at or before chunk c (entries without elements start where
// the next one does, so they are never chosen). Entry: any struct with an int64_t first_chunk.
template <typename Entry>
__device__ int entry_of(const Entry* e, int count, int64_t c) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (e[mid].first_chunk <= c) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

}  // namespace bk::cuda
