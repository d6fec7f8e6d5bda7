// MoE dispatch on the GPU (docs/model.md; the CPU reference is kernels/cpu/moe_dispatch.cpp):
//   plan:      the N k (token, slot) pairs sorted by expert, stable in (token, slot) order:
//              offsets = exclusive prefix sum of the loads, rows[n,j] = the pair's row
//   permute:   x_perm[rows[n,j]] = x[n];               dx[n] = sum_j dx_perm[rows[n,j]]
//   unpermute: y[n] = sum_j gates[n,j] y_perm[rows[n,j]];
//              dy_perm[rows[n,j]] = gates[n,j] dy[n],  dgates[n,j] = dy[n] . y_perm[rows[n,j]]
//
// plan is a deterministic counting sort in three kernels, with no float anywhere:
//   1. one warp per chunk of 256 consecutive pairs counts its experts (__match_any_sync groups
//      the lanes of one expert; the group's lowest lane adds the group's size);
//   2. one block turns the counts into offsets and, per (chunk, expert), the first row the
//      chunk writes for that expert (expert-major, chunk order);
//   3. each warp walks its chunk again, 32 pairs at a time in pair order: a pair's row is its
//      expert's cursor plus the number of lower lanes with the same expert. Pairs of one
//      expert therefore keep their (token, slot) order, exactly the CPU's stable sort.
// The gathers and scatters run one thread per 8 columns of a token (or a warp per (token,
// slot) where a dot product is needed); sums over slots run in slot order; each permuted row
// is written by the one pair that owns it. No atomics on floats.
//
// Expert ids and rows are not validated on the host (that would need a device sync; neither
// kind of bad value can come from moe_router_forward / moe_plan). As elsewhere in the backend
// (docs/cuda.md) bad data is made loud instead of thrown: an id outside [0, E) is not counted
// and gets row -1; a row outside [0, N k) is never written through, and the token-side outputs
// that would read it (dx, y, dgates) become NaN. Dtypes: x, x_perm, y, y_perm and gradients
// share T; gates / dgates are f32 or bf16.
#include <climits>
#include <cmath>

#include "kernels/cuda/fptr.cuh"
#include "kernels/cuda/scratch.h"

namespace bk::cuda {

namespace {
constexpr int kChunk = 256;  // pairs per warp in the plan
constexpr int kThreads = 256;

// Warps per block of the plan kernels: each warp keeps E int counters in shared memory.
int plan_warps(int64_t E) {
  return int(std::max<int64_t>(1, std::min<int64_t>(8, (48 * 1024) / (4 * std::max<int64_t>(E, 1)))));
}

__device__ __forceinline__ int expert_of(const int32_t* idx, int64_t i, int64_t end, int E) {
  if (i >= end) return -1;
  const int e = idx[i];
  return e >= 0 && e < E ? e : -1;
}

__global__ void plan_count(int32_t* __restrict__ counts, const int32_t* __restrict__ idx,
                           int64_t M, int E, int64_t chunks) {
  extern __shared__ int plan_count_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t c = int64_t(blockIdx.x) * (blockDim.x >> 5) + warp;
  if (c >= chunks) return;
  int* h = plan_count_smem + warp * E;
  for (int e = lane; e < E; e += 32) h[e] = 0;
  __syncwarp();
  const int64_t end = (c + 1) * kChunk < M ? (c + 1) * kChunk : M;
  for (int64_t i0 = c * kChunk; i0 < end; i0 += 32) {
    const int e = expert_of(idx, i0 + lane, end, E);
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    if (e >= 0 && lane == __ffs(peers) - 1) h[e] += __popc(peers);
    __syncwarp();
  }
  for (int e = lane; e < E; e += 32) counts[c * E + e] = h[e];
}

// counts [chunks][E] -> first row per (chunk, expert), in place; offsets [E+1].
__global__ void plan_scan(int32_t* __restrict__ counts, int32_t* __restrict__ offsets,
                          int64_t chunks, int E) {
  extern __shared__ int plan_scan_smem[];  // [E] loads, then the experts' first rows
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int t = 0;
    for (int64_t c = 0; c < chunks; ++c) t += counts[c * E + e];
    plan_scan_smem[e] = t;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0;
    for (int e = 0; e < E; ++e) {
      const int load = plan_scan_smem[e];
      offsets[e] = run;
      plan_scan_smem[e] = run;
      run += load;
    }
    offsets[E] = run;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int run = plan_scan_smem[e];
    for (int64_t c = 0; c < chunks; ++c) {
      const int v = counts[c * E + e];
      counts[c * E + e] = run;
      run += v;
    }
  }
}

__global__ void plan_assign(int32_t* __restrict__ rows, const int32_t* __restrict__ first,
                            const int32_t* __restrict__ idx, int64_t M, int E, int64_t chunks) {
  extern __shared__ int plan_assign_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t c = int64_t(blockIdx.x) * (blockDim.x >> 5) + warp;
  if (c >= chunks) return;
  int* cursor = plan_assign_smem + warp * E;
  for (int e = lane; e < E; e += 32) cursor[e] = first[c * E + e];
  __syncwarp();
  const unsigned lower = (1u << lane) - 1u;
  const int64_t end = (c + 1) * kChunk < M ? (c + 1) * kChunk : M;
  for (int64_t i0 = c * kChunk; i0 < end; i0 += 32) {
    const int64_t i = i0 + lane;
    const int e = expert_of(idx, i, end, E);
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    if (i < end) rows[i] = e >= 0 ? cursor[e] + __popc(peers & lower) : -1;
    __syncwarp();
    if (e >= 0 && lane == __ffs(peers) - 1) cursor[e] += __popc(peers);
    __syncwarp();
  }
}

__device__ __forceinline__ bool valid_row(int32_t r, int64_t M) { return r >= 0 && r < M; }

template <typename T>
__global__ void permute_kernel(T* __restrict__ xp, const T* __restrict__ x,
                               const int32_t* __restrict__ rows, int64_t N, int k, int64_t C,
                               bool vec) {
  const int64_t P = (C + kPack - 1) / kPack, M = N * k;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * P; i += stride) {
    const int64_t n = i / P, c = (i % P) * kPack;
    float v[kPack];
    load_pack(x + n * C, c, C, vec, v);
    for (int j = 0; j < k; ++j) {
      const int32_t r = rows[n * k + j];
      if (valid_row(r, M)) store_pack(xp + int64_t(r) * C, c, C, vec, v);
    }
  }
}

template <typename T>
__global__ void permute_bwd_kernel(T* __restrict__ dx, const T* __restrict__ dxp,
                                   const int32_t* __restrict__ rows, int64_t N, int k, int64_t C,
                                   bool vec) {
  const int64_t P = (C + kPack - 1) / kPack, M = N * k;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * P; i += stride) {
    const int64_t n = i / P, c = (i % P) * kPack;
    float acc[kPack], v[kPack];
#pragma unroll
    for (int e = 0; e < kPack; ++e) acc[e] = 0.f;
    for (int j = 0; j < k; ++j) {  // slot order
      const int32_t r = rows[n * k + j];
      if (!valid_row(r, M)) {
#pragma unroll
        for (int e = 0; e < kPack; ++e) acc[e] = NAN;  // bad row: loud, not silent
        continue;
      }
      load_pack(dxp + int64_t(r) * C, c, C, vec, v);
#pragma unroll
      for (int e = 0; e < kPack; ++e) acc[e] += v[e];
    }
    store_pack(dx + n * C, c, C, vec, acc);
  }
}

template <typename T>
__global__ void unpermute_kernel(T* __restrict__ y, const T* __restrict__ yp, FPtr gates,
                                 const int32_t* __restrict__ rows, int64_t N, int k, int64_t C,
                                 bool vec) {
  const int64_t P = (C + kPack - 1) / kPack, M = N * k;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * P; i += stride) {
    const int64_t n = i / P, c = (i % P) * kPack;
    float acc[kPack], v[kPack];
#pragma unroll
    for (int e = 0; e < kPack; ++e) acc[e] = 0.f;
    for (int j = 0; j < k; ++j) {  // slot order
      const int32_t r = rows[n * k + j];
      if (!valid_row(r, M)) {
#pragma unroll
        for (int e = 0; e < kPack; ++e) acc[e] = NAN;  // bad row: loud, not silent
        continue;
      }
      const float g = gates[n * k + j];
      load_pack(yp + int64_t(r) * C, c, C, vec, v);
#pragma unroll
      for (int e = 0; e < kPack; ++e) acc[e] = fmaf(g, v[e], acc[e]);
    }
    store_pack(y + n * C, c, C, vec, acc);
  }
}

// One warp per (token, slot): dy_perm[row] = gate dy[n], dgates = dy[n] . y_perm[row].
template <typename T>
__global__ void unpermute_bwd_kernel(T* __restrict__ dyp, FPtr dgates, const T* __restrict__ dy,
                                     const T* __restrict__ yp, FPtr gates,
                                     const int32_t* __restrict__ rows, int64_t N, int k,
                                     int64_t C, bool vec) {
  const int64_t pair = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int64_t M = N * k;
  if (pair >= M) return;
  const int lane = threadIdx.x & 31;
  const int64_t n = pair / k;
  const int32_t r = rows[pair];
  const bool ok = valid_row(r, M);
  const float g = gates[pair];
  float s = 0.f;
  for (int64_t c = lane * kPack; c < C; c += 32 * kPack) {
    float d[kPack], v[kPack], o[kPack];
    load_pack(dy + n * C, c, C, vec, d);
    if (!ok) continue;
    load_pack(yp + int64_t(r) * C, c, C, vec, v);
#pragma unroll
    for (int e = 0; e < kPack; ++e) {
      s = fmaf(d[e], v[e], s);
      o[e] = g * d[e];
    }
    store_pack(dyp + int64_t(r) * C, c, C, vec, o);
  }
  s = warp_sum(s);
  if (lane == 0) dgates.set(pair, ok ? s : NAN);
}

constexpr const char* kRule = "x/y[N,C], x_perm/y_perm[N*k,C], rows i32/gates[N,k]";

// The token-side tensor is [N,C], the permuted one [N*k,C], rows [N,k].
void check_layout(const char* op, const char* tok_name, const Tensor& tok, const char* perm_name,
                  const Tensor& perm, const Tensor& rows, std::initializer_list<Arg> extra_args,
                  bool extra_ok) {
  check_index(op, {"rows", rows});
  const bool ok = tok.ndim() == 2 && rows.ndim() == 2 && rows.size(0) == tok.size(0) &&
                  is_shape(perm, {tok.size(0) * rows.size(1), tok.size(1)}) && extra_ok;
  if (!ok) {
    std::string d = describe({{tok_name, tok}, {perm_name, perm}, {"rows", rows}});
    if (extra_args.size() > 0) d += ", " + describe(extra_args);
    BK_CHECK(false, "{}: {}; expected {}", op, d, kRule);
  }
  BK_CHECK(rows.numel() <= INT_MAX, "{}: rows is {}: N*k does not fit i32 row numbers", op,
           rows.shape.str());
}
}  // namespace

void moe_plan(Tensor rows, Tensor offsets, Tensor idx, Stream s) {
  const char* op = "moe_plan";
  check_index(op, {"idx", idx});
  check_index(op, {"rows", rows});
  check_index(op, {"offsets", offsets});
  check_shapes(op, idx.ndim() == 2 && rows.shape == idx.shape && offsets.ndim() == 1 &&
                       offsets.size(0) >= 1,
               "idx/rows i32 [N,k], offsets i32 [E+1]",
               {{"rows", rows}, {"offsets", offsets}, {"idx", idx}});
  const int64_t M = idx.numel(), E = offsets.size(0) - 1;
  BK_CHECK(M <= INT_MAX, "{}: idx is {}: N*k = {} pairs do not fit i32 row numbers", op,
           idx.shape.str(), M);
  const cudaStream_t st = stream_of(s);
  if (E == 0 || M == 0) {  // no pairs (or no experts): every offset is 0
    BK_CUDA_CHECK(cudaMemsetAsync(offsets.data, 0, sizeof(int32_t) * size_t(E + 1), st));
    if (M > 0) BK_CUDA_CHECK(cudaMemsetAsync(rows.data, 0xFF, sizeof(int32_t) * size_t(M), st));
    return;
  }
  const int64_t chunks = (M + kChunk - 1) / kChunk;
  const int warps = plan_warps(E);
  const size_t warp_smem = sizeof(int) * size_t(warps) * size_t(E);
  BK_CHECK(sizeof(int) * size_t(E) <= size_t(max_smem_optin()),
           "{}: E = {} experts is too many for the plan's shared-memory counters", op, E);
  allow_smem(plan_count, warp_smem);
  allow_smem(plan_scan, sizeof(int) * size_t(E));
  allow_smem(plan_assign, warp_smem);
  Scratch counts(sizeof(int32_t) * size_t(chunks * E), s);
  const int32_t* pidx = static_cast<const int32_t*>(idx.data);
  const unsigned blocks = ceil_div(chunks, warps);
  plan_count<<<blocks, warps * 32, warp_smem, st>>>(counts.as<int32_t>(), pidx, M, int(E), chunks);
  BK_CUDA_CHECK_LAUNCH();
  plan_scan<<<1, 1024, sizeof(int) * size_t(E), st>>>(counts.as<int32_t>(),
                                                      static_cast<int32_t*>(offsets.data), chunks,
                                                      int(E));
  BK_CUDA_CHECK_LAUNCH();
  plan_assign<<<blocks, warps * 32, warp_smem, st>>>(static_cast<int32_t*>(rows.data),
                                                     counts.as<int32_t>(), pidx, M, int(E), chunks);
  BK_CUDA_CHECK_LAUNCH();
}

void moe_permute(Tensor x_perm, Tensor x, Tensor rows, Stream s) {
  const char* op = "moe_permute";
  const DType dt = act_dtype(op, {{"x_perm", x_perm}, {"x", x}});
  check_layout(op, "x", x, "x_perm", x_perm, rows, {}, true);
  const int64_t N = x.size(0), C = x.size(1), k = rows.size(1);
  if (N * k * C == 0) return;
  const bool vec = C % kPack == 0 && aligned16({x.data, x_perm.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    permute_kernel<T><<<grid_for(N * ((C + kPack - 1) / kPack), kThreads), kThreads, 0,
                        stream_of(s)>>>(static_cast<T*>(x_perm.data),
                                        static_cast<const T*>(x.data),
                                        static_cast<const int32_t*>(rows.data), N, int(k), C, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void moe_permute_backward(Tensor dx, Tensor dx_perm, Tensor rows, Stream s) {
  const char* op = "moe_permute_backward";
  const DType dt = act_dtype(op, {{"dx", dx}, {"dx_perm", dx_perm}});
  check_layout(op, "dx", dx, "dx_perm", dx_perm, rows, {}, true);
  const int64_t N = dx.size(0), C = dx.size(1), k = rows.size(1);
  if (N * C == 0) return;
  const bool vec = C % kPack == 0 && aligned16({dx.data, dx_perm.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    permute_bwd_kernel<T><<<grid_for(N * ((C + kPack - 1) / kPack), kThreads), kThreads, 0,
                            stream_of(s)>>>(static_cast<T*>(dx.data),
                                            static_cast<const T*>(dx_perm.data),
                                            static_cast<const int32_t*>(rows.data), N, int(k), C,
                                            vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void moe_unpermute(Tensor y, Tensor y_perm, Tensor gates, Tensor rows, Stream s) {
  const char* op = "moe_unpermute";
  check_float(op, {"gates", gates});
  const DType dt = act_dtype(op, {{"y", y}, {"y_perm", y_perm}});
  check_layout(op, "y", y, "y_perm", y_perm, rows, {{"gates", gates}}, gates.shape == rows.shape);
  const int64_t N = y.size(0), C = y.size(1), k = rows.size(1);
  if (N * C == 0) return;
  const bool vec = C % kPack == 0 && aligned16({y.data, y_perm.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    unpermute_kernel<T><<<grid_for(N * ((C + kPack - 1) / kPack), kThreads), kThreads, 0,
                          stream_of(s)>>>(static_cast<T*>(y.data),
                                          static_cast<const T*>(y_perm.data), fptr(gates),
                                          static_cast<const int32_t*>(rows.data), N, int(k), C,
                                          vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void moe_unpermute_backward(Tensor dy_perm, Tensor dgates, Tensor dy, Tensor y_perm, Tensor gates,
                            Tensor rows, Stream s) {
  const char* op = "moe_unpermute_backward";
  check_floats(op, {{"dgates", dgates}, {"gates", gates}});
  const DType dt = act_dtype(op, {{"dy_perm", dy_perm}, {"dy", dy}, {"y_perm", y_perm}});
  check_layout(op, "dy", dy, "y_perm", y_perm, rows,
               {{"dy_perm", dy_perm}, {"dgates", dgates}, {"gates", gates}},
               dy_perm.shape == y_perm.shape && gates.shape == rows.shape &&
                   dgates.shape == rows.shape);
  const int64_t N = dy.size(0), C = dy.size(1), k = rows.size(1);
  if (N * k == 0) return;
  const bool vec = C % kPack == 0 && aligned16({dy_perm.data, dy.data, y_perm.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    unpermute_bwd_kernel<T><<<ceil_div(N * k, kThreads / 32), kThreads, 0, stream_of(s)>>>(
        static_cast<T*>(dy_perm.data), fptr(dgates), static_cast<const T*>(dy.data),
        static_cast<const T*>(y_perm.data), fptr(gates), static_cast<const int32_t*>(rows.data),
        N, int(k), C, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace bk::cuda
