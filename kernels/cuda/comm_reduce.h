// Device-side arithmetic of the NCCL communicator (src/parallel/nccl_communicator.cpp): the
// rank-ordered sum that makes its all-reduce and reduce-scatter deterministic and identical on
// every rank. Host header, no CUDA types.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "core/stream.h"

namespace bk::cuda {

// out[i] = ((parts[0][i] + parts[1][i]) + parts[2][i]) + ... for nparts contiguous parts of n
// elements each. f32, f64, i32, i64 add in their own type; bf16 adds in f32 and rounds once.
void sum_in_rank_order(void* out, const void* parts, int nparts, int64_t n, DType dt, Stream s);

}  // namespace bk::cuda
