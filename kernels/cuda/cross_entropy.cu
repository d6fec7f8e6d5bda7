// Fused softmax cross-entropy over logits[N,V] with i32 targets[N]; a target < 0 is ignored
// (loss 0, gradient row 0).
//   loss_n = log z_n - (x[n,t] - m_n),  m_n = max_v x[n,v],  z_n = sum_v exp(x[n,v] - m_n)
//   dlogits[n,v] = (exp(x[n,v] - m_n - log z_n) - [v == t]) * grad_scale
//
// One block per row. Each thread keeps an online (max, sum of exp) pair over its strided
// elements (one read of the row); the pairs merge in a fixed warp/block tree, so the result is
// the same every run. The backward recomputes (m, z) the same way and writes dlogits in a
// second pass: no probability matrix besides dlogits itself, which may alias logits.
//
// losses are f32; logits and dlogits are f32 or bf16 independently (f32 dlogits of bf16
// logits keep the small probabilities). A target >= V (the CPU kernel throws; the device
// cannot without a host round trip) gives a NaN loss and a NaN gradient row.
#include <cmath>

#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

namespace bk::cuda {

namespace {

struct MaxSum {
  float m, z;
};

__device__ __forceinline__ void absorb(MaxSum& a, float x) {
  if (x > a.m) {  // also the first element (m = -inf); NaN falls through and poisons z
    a.z = a.z * expf(a.m - x) + 1.f;
    a.m = x;
  } else if (x != -INFINITY) {  // a masked -inf adds nothing (and -inf - -inf would be NaN)
    a.z += expf(x - a.m);
  }
}

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return a;  // both empty
  return {m, a.z * expf(a.m - m) + b.z * expf(b.m - m)};
}

// Block-wide merge in a fixed order (lane tree, then warp tree); every thread gets the result.
__device__ MaxSum block_merge(MaxSum v) {
  __shared__ float sm[32], sz[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v = merge(v, {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.z, o)});
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) sm[warp] = v.m, sz[warp] = v.z;
  __syncthreads();
  v = lane < warps ? MaxSum{sm[lane], sz[lane]} : MaxSum{-INFINITY, 0.f};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v = merge(v, {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.z, o)});
  __syncthreads();  // sm/sz may be reused by a later call
  return v;
}

template <typename T>
__device__ MaxSum row_max_sum(const T* row, int64_t V, bool vec) {
  MaxSum a{-INFINITY, 0.f};
  if (vec) {
    for (int64_t p = threadIdx.x; p < V / kPack; p += blockDim.x) {
      float x[kPack];
      load8(row + p * kPack, x);
#pragma unroll
      for (int i = 0; i < kPack; ++i) absorb(a, x[i]);
    }
  } else {
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) absorb(a, load(row, v));
  }
  return block_merge(a);
}

// Blocks of up to kMaxThreads threads (row_threads): the bound keeps registers within what such
// a block may use (64 per thread), or the launch would fail.
constexpr int kMaxThreads = 1024;

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) ce_fwd(float* __restrict__ losses, const T* __restrict__ logits,
                       const int32_t* __restrict__ targets, int64_t V, bool vec) {
  const int64_t n = blockIdx.x;
  const int32_t t = targets[n];
  if (t < 0) {
    if (threadIdx.x == 0) losses[n] = 0.f;
    return;
  }
  const T* row = logits + n * V;
  const MaxSum ms = row_max_sum(row, V, vec);
  if (threadIdx.x == 0)
    losses[n] = t < V ? logf(ms.z) - (load(row, t) - ms.m) : __int_as_float(0x7fc00000);
}

template <typename T, typename TD>
__global__ void __launch_bounds__(kMaxThreads) ce_bwd(TD* dlogits, const T* logits, const int32_t* __restrict__ targets, int64_t V,
                       float grad_scale, bool vec) {
  const int64_t n = blockIdx.x;
  const int32_t t = targets[n];
  TD* drow = dlogits + n * V;
  if (t < 0) {
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) store(drow, v, 0.f);
    return;
  }
  const T* row = logits + n * V;
  const MaxSum ms = row_max_sum(row, V, vec);
  // softmax * |gs| as one exp, exp((x - m) - (log z - log|gs|)): tiny terms flush to 0 instead
  // of turning denormal in a product; x - m keeps the digits that x - lse would cancel.
  const float c = logf(ms.z) - logf(fabsf(grad_scale));
  const float sign = grad_scale < 0.f ? -1.f : 1.f;
  const float bad = t < V ? 0.f : __int_as_float(0x7fc00000);  // NaN row for a target >= V
  if (vec) {
    for (int64_t p = threadIdx.x; p < V / kPack; p += blockDim.x) {
      float x[kPack];
      load8(row + p * kPack, x);
#pragma unroll
      for (int i = 0; i < kPack; ++i) {
        x[i] = sign * expf((x[i] - ms.m) - c) + bad;
        if (p * kPack + i == t) x[i] -= grad_scale;
      }
      store8(drow + p * kPack, x);
    }
  } else {
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      float d = sign * expf((load(row, v) - ms.m) - c) + bad;
      if (v == t) d -= grad_scale;
      store(drow, v, d);
    }
  }
}

// Threads per row: enough for one pack each up to 1024; a function of V alone (fixed tree).
int row_threads(int64_t V) {
  const int64_t packs = (V + kPack - 1) / kPack;
  const int64_t t = (packs + 31) / 32 * 32;
  return int(t < 32 ? 32 : (t > kMaxThreads ? kMaxThreads : t));
}

constexpr const char* kRule = "logits/dlogits[N,V], targets[N] (i32), losses[N] (f32)";

}  // namespace

void cross_entropy_forward(Tensor losses, Tensor logits, Tensor targets, Stream s) {
  const char* op = "cross_entropy_forward";
  const DType dt = act_dtype(op, {{"logits", logits}});
  check_dtype(op, {"losses", losses}, DType::f32, "statistics are f32");
  check_index(op, {"targets", targets});
  check_shapes(op,
               logits.ndim() == 2 && logits.size(1) > 0 && is_shape(targets, {logits.size(0)}) &&
                   is_shape(losses, {logits.size(0)}),
               kRule, {{"losses", losses}, {"logits", logits}, {"targets", targets}});
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0) return;
  const bool vec = V % kPack == 0 && aligned16({logits.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    ce_fwd<T><<<unsigned(N), row_threads(V), 0, stream_of(s)>>>(
        static_cast<float*>(losses.data), static_cast<const T*>(logits.data),
        static_cast<const int32_t*>(targets.data), V, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void cross_entropy_backward(Tensor dlogits, Tensor logits, Tensor targets, float grad_scale,
                            Stream s) {
  const char* op = "cross_entropy_backward";
  const DType dt = act_dtype(op, {{"logits", logits}});
  check_device(op, {"dlogits", dlogits});
  BK_CHECK(is_float(dlogits.dtype), "{}: dlogits has dtype {}; f32 or bf16", op,
           dtype_name(dlogits.dtype));
  check_index(op, {"targets", targets});
  check_shapes(op,
               logits.ndim() == 2 && logits.size(1) > 0 && is_shape(targets, {logits.size(0)}) &&
                   dlogits.shape == logits.shape,
               kRule, {{"dlogits", dlogits}, {"logits", logits}, {"targets", targets}});
  BK_CHECK((dlogits.data == logits.data && dlogits.dtype == logits.dtype) ||
               static_cast<const char*>(dlogits.data) + dlogits.nbytes() <= logits.data ||
               static_cast<const char*>(logits.data) + logits.nbytes() <= dlogits.data,
           "{}: dlogits ({}) overlaps logits ({}); only the same tensor (in place) is allowed", op, dtype_name(dlogits.dtype),
           dtype_name(logits.dtype));
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0) return;
  const bool vec = V % kPack == 0 && aligned16({logits.data, dlogits.data});
  dispatch_float(dt, [&](auto tl) {
    using T = typename decltype(tl)::type;
    dispatch_float(dlogits.dtype, [&](auto td) {
      using TD = typename decltype(td)::type;
      ce_bwd<T, TD><<<unsigned(N), row_threads(V), 0, stream_of(s)>>>(
          static_cast<TD*>(dlogits.data), static_cast<const T*>(logits.data),
          static_cast<const int32_t*>(targets.data), V, grad_scale, vec);
      BK_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace bk::cuda
