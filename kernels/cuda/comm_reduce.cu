// The rank-ordered sum behind the NCCL communicator's deterministic reductions
// (kernels/cuda/comm_reduce.h): one thread per element walks the parts in rank order.
#include "kernels/cuda/comm_reduce.h"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

namespace bk::cuda {

namespace {

constexpr int kThreads = 256;

// Acc is the type the sum is carried in (f32 for bf16 parts).
template <typename T, typename Acc>
__global__ void ordered_sum(T* __restrict__ out, const T* __restrict__ parts, int nparts,
                            int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    Acc s = Acc(parts[i]);
    for (int r = 1; r < nparts; ++r) s += Acc(parts[int64_t(r) * n + i]);
    out[i] = T(s);
  }
}

template <>
__global__ void ordered_sum<bf16, float>(bf16* __restrict__ out, const bf16* __restrict__ parts,
                                         int nparts, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float s = __bfloat162float(parts[i]);
    for (int r = 1; r < nparts; ++r) s += __bfloat162float(parts[int64_t(r) * n + i]);
    out[i] = __float2bfloat16(s);
  }
}

template <typename T, typename Acc>
void launch(void* out, const void* parts, int nparts, int64_t n, Stream s) {
  ordered_sum<T, Acc><<<grid_for(n, kThreads), kThreads, 0, stream_of(s)>>>(
      static_cast<T*>(out), static_cast<const T*>(parts), nparts, n);
  BK_CUDA_CHECK_LAUNCH();
}

}  // namespace

void sum_in_rank_order(void* out, const void* parts, int nparts, int64_t n, DType dt, Stream s) {
  BK_CHECK(nparts >= 1, "sum_in_rank_order: {} parts", nparts);
  if (n == 0) return;
  switch (dt) {
    case DType::f32: return launch<float, float>(out, parts, nparts, n, s);
    case DType::f64: return launch<double, double>(out, parts, nparts, n, s);
    case DType::i32: return launch<int32_t, int32_t>(out, parts, nparts, n, s);
    case DType::i64: return launch<int64_t, int64_t>(out, parts, nparts, n, s);
    case DType::bf16: return launch<bf16, float>(out, parts, nparts, n, s);
  }
  BK_FAIL("sum_in_rank_order: unknown dtype");
}

}  // namespace bk::cuda
