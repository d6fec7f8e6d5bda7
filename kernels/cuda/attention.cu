// Causal attention on the GPU, flash-attention-2 style (the CPU reference is
// kernels/cpu/attention.cpp): q, k [B,T,H,Dk], v, out [B,T,H,Dv], lse [B,H,T] (f32).
//   s_ij = scale q_i.k_j (j <= i),  lse_i = log sum_j exp(s_ij),  out_i = sum_j p_ij v_j.
// No T x T matrix exists in memory: scores live one 32 x 32 tile at a time in shared memory.
//
// forward   block = (32 queries, one (b, h)); it walks the key tiles 0..its own diagonal with
//           an online softmax (running max m and sum l per query; the output accumulator is
//           rescaled by exp(m_old - m_new) whenever the max grows), then out = acc / l and
//           lse = m + log l. Query tiles are issued longest (last) first.
// backward  D_i = dout_i . out_i first (one warp per row), then two kernels that recompute
//           p_ij = exp(s_ij - lse_i) from the saved lse:
//             dk/dv: block = (32 keys, (b, h)), walking the query tiles from the diagonal on:
//                    dv_j += sum_i p_ij dout_i,  dk_j += scale sum_i ds_ij q_i;
//             dq:    block = (32 queries, (b, h)), walking the key tiles up to the diagonal:
//                    dq_i += scale sum_j ds_ij k_j,
//           with dp_ij = dout_i.v_j and ds_ij = p_ij (dp_ij - D_i). Every gradient element is
//           owned by one thread and summed in tile order: deterministic, no atomics.
//
// Arithmetic: tiles are converted to f32 in shared memory (inputs f32 or bf16) and every
// product and sum is f32 in registers; lse and D are f32. Tensor cores are not used yet: the
// products are register-blocked SIMT (each thread 2 x 4 scores, 4 x 4 outputs per 64-column
// pass, float4 shared-memory reads with row strides chosen conflict-free). Head dims are any
// Dk, Dv (e.g. MLA's 192 and 128) whose tiles fit the shared memory of the device (about 135
// KiB for the backward at Dk = 192, Dv = 128); T need not be a multiple of 32.
#include <cmath>

#include "kernels/cuda/fptr.cuh"
#include "kernels/cuda/scratch.h"

namespace bk::cuda {

namespace {
constexpr int kTile = 32;        // queries and keys per tile
constexpr int kThreads = 128;    // 4 warps
constexpr int kLdP = kTile + 4;  // row stride of the 32 x 32 score tiles

struct AttnDims {
  int64_t B, T, H;
  int Dk, Dv;
  int ldk, ldv;  // row strides of the head-dim tiles in shared memory
  bool veck, vecv;  // 16-byte loads of q/k rows, of v/out/dout rows
};

// Tile row stride: a multiple of 32 words plus 4, so consecutive rows start 4 banks apart
// (float4 reads of 8 rows hit 32 distinct banks) and there are zeros past D for the float4 loop.
int tile_ld(int D) { return (D + 31) / 32 * 32 + 4; }
__device__ __forceinline__ int round4(int D) { return (D + 3) & ~3; }

__device__ __forceinline__ float4 lds4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

// Rows [t0, t0+32) of head (b, h) of a [B,T,H,D] tensor into dst [32][ld] as f32; rows past T
// and columns [D, ld) are zero.
template <typename T>
__device__ void load_tile(float* dst, int ld, const T* __restrict__ src, const AttnDims& d, int64_t b,
                          int64_t h, int64_t t0, int D, bool vec) {
  const int64_t rs = d.H * D;  // row stride in elements
  const T* base = src + ((b * d.T + t0) * d.H + h) * D;
  const int rows = int(d.T - t0 < kTile ? d.T - t0 : kTile);
  if (vec) {
    const int ppr = (ld + kPack - 1) / kPack;  // packs per row; the last one ends past ld
    for (int i = threadIdx.x; i < kTile * ppr; i += kThreads) {
      const int r = i / ppr, c = (i % ppr) * kPack;
      float v[kPack];
      if (r < rows && c < D) {
        load8(base + r * rs + c, v);  // D % 8 == 0: the whole pack is inside the row
      } else {
#pragma unroll
        for (int e = 0; e < kPack; ++e) v[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < kPack; ++e)
        if (c + e < ld) dst[r * ld + c + e] = v[e];
    }
  } else {
    for (int i = threadIdx.x; i < kTile * ld; i += kThreads) {
      const int r = i / ld, c = i % ld;
      dst[i] = r < rows && c < D ? load(base + r * rs, c) : 0.f;
    }
  }
}

// dst rows [t0, t0+32) (those < T), columns [0, D) = src[r][c] * (rowscale ? rowscale[r] : 1).
template <typename T>
__device__ void store_tile(T* __restrict__ dst, const float* src, int ld, const AttnDims& d,
                           int64_t b, int64_t h, int64_t t0, int D, bool vec,
                           const float* rowscale) {
  const int64_t rs = d.H * D;
  T* base = dst + ((b * d.T + t0) * d.H + h) * D;
  const int rows = int(d.T - t0 < kTile ? d.T - t0 : kTile);
  if (vec) {
    const int packs = D / kPack;
    for (int i = threadIdx.x; i < rows * packs; i += kThreads) {
      const int r = i / packs, c = (i % packs) * kPack;
      const float sc = rowscale ? rowscale[r] : 1.f;
      float v[kPack];
#pragma unroll
      for (int e = 0; e < kPack; ++e) v[e] = src[r * ld + c + e] * sc;
      store8(base + r * rs + c, v);
    }
  } else {
    for (int i = threadIdx.x; i < rows * D; i += kThreads) {
      const int r = i / D, c = i % D;
      store(base + r * rs, c, src[r * ld + c] * (rowscale ? rowscale[r] : 1.f));
    }
  }
}

// Thread (rp, cq) = (tid / 8, tid % 8) owns scores (rp + 16 ii, cq + 8 jj), ii < 2, jj < 4:
// s[ii][jj] = sum_d A[rp + 16 ii][d] B[cq + 8 jj][d] over d < round4(D) (zeros past D).
__device__ __forceinline__ void tile_nt(float (&s)[2][4], const float* A, const float* Bm, int ld,
                                        int D, int rp, int cq) {
#pragma unroll
  for (int ii = 0; ii < 2; ++ii)
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) s[ii][jj] = 0.f;
  const int D4 = round4(D);
  for (int c = 0; c < D4; c += 4) {
    const float4 a0 = lds4(A + rp * ld + c), a1 = lds4(A + (rp + 16) * ld + c);
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const float4 bv = lds4(Bm + (cq + 8 * jj) * ld + c);
      s[0][jj] = dot4(a0, bv, s[0][jj]);
      s[1][jj] = dot4(a1, bv, s[1][jj]);
    }
  }
}

// Out[r][c] = Out[r][c] * (rs ? rs[r] : 1) + alpha * sum_{j < 32} A[r][j] Bm[j][c] for all 32
// rows and c < round4(D). A is [32][kLdP]; thread (rq, cq) = (tid / 16, tid % 16) owns rows
// 4 rq .. 4 rq + 3 and columns 4 cq .. 4 cq + 3 of each 64-column pass.
__device__ void tile_nn_acc(float* Out, int ldo, const float* A, const float* Bm, int ldb, int D,
                            float alpha, const float* rs) {
  const int tid = threadIdx.x, rq = tid >> 4, cq = tid & 15;
  const int D4 = round4(D);
  for (int c0 = 0; c0 < D4; c0 += 64) {
    const int c = c0 + 4 * cq;
    if (c >= D4) continue;
    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int x = 0; x < 4; ++x) acc[r][x] = 0.f;
#pragma unroll 2
    for (int j = 0; j < kTile; j += 4) {
      float4 a[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = lds4(A + (4 * rq + r) * kLdP + j);
#pragma unroll
      for (int u = 0; u < 4; ++u) bv[u] = lds4(Bm + (j + u) * ldb + c);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float av[4] = {a[r].x, a[r].y, a[r].z, a[r].w};
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          acc[r][0] = fmaf(av[u], bv[u].x, acc[r][0]);
          acc[r][1] = fmaf(av[u], bv[u].y, acc[r][1]);
          acc[r][2] = fmaf(av[u], bv[u].z, acc[r][2]);
          acc[r][3] = fmaf(av[u], bv[u].w, acc[r][3]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      float* o = Out + (4 * rq + r) * ldo + c;
      float4 v = lds4(o);
      const float sc = rs ? rs[4 * rq + r] : 1.f;
      v.x = fmaf(alpha, acc[r][0], v.x * sc);
      v.y = fmaf(alpha, acc[r][1], v.y * sc);
      v.z = fmaf(alpha, acc[r][2], v.z * sc);
      v.w = fmaf(alpha, acc[r][3], v.w * sc);
      *reinterpret_cast<float4*>(o) = v;
    }
  }
}

__device__ __forceinline__ void zero(float* p, int n) {
  for (int i = threadIdx.x; i < n; i += kThreads) p[i] = 0.f;
}

// Max / sum over the 8 lanes that share a score row (lanes differing in their low 3 bits).
__device__ __forceinline__ float row_max8(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
}
__device__ __forceinline__ float row_sum8(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v + __shfl_xor_sync(0xffffffffu, v, 4);
}

size_t fwd_smem(const AttnDims& d) {
  return sizeof(float) * size_t(2 * kTile * d.ldk + 2 * kTile * d.ldv + kTile * kLdP + 3 * kTile);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_kernel(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ q,
                    const T* __restrict__ k, const T* __restrict__ v, AttnDims d, float scale) {
  extern __shared__ float4 attn_fwd_smem[];
  float* Qs = reinterpret_cast<float*>(attn_fwd_smem);  // [32][ldk]
  float* Ks = Qs + kTile * d.ldk;                       // [32][ldk]
  float* Vs = Ks + kTile * d.ldk;                       // [32][ldv]
  float* Os = Vs + kTile * d.ldv;                       // [32][ldv] output accumulator
  float* Ps = Os + kTile * d.ldv;                       // [32][kLdP] probabilities
  float* corr = Ps + kTile * kLdP;                      // [32] rescale of Os for this tile
  float* inv_l = corr + kTile;                          // [32]
  float* lrow = inv_l + kTile;                          // [32] lse of the row

  const int tid = threadIdx.x, rp = tid >> 3, cq = tid & 7;
  const int qt = int(gridDim.x) - 1 - int(blockIdx.x);  // longest rows first
  const int64_t b = blockIdx.y / d.H, h = blockIdx.y % d.H, q0 = int64_t(qt) * kTile;

  load_tile(Qs, d.ldk, q, d, b, h, q0, d.Dk, d.veck);
  zero(Os, kTile * d.ldv);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int kt = 0; kt <= qt; ++kt) {
    const int64_t k0 = int64_t(kt) * kTile;
    __syncthreads();  // the previous tile's readers are done with Ks, Vs, Ps, corr
    load_tile(Ks, d.ldk, k, d, b, h, k0, d.Dk, d.veck);
    load_tile(Vs, d.ldv, v, d, b, h, k0, d.Dv, d.vecv);
    __syncthreads();
    float s[2][4];
    tile_nt(s, Qs, Ks, d.ldk, d.Dk, rp, cq);
#pragma unroll
    for (int ii = 0; ii < 2; ++ii) {
      const int64_t qi = q0 + rp + 16 * ii;
      float mx = -INFINITY;
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int64_t kj = k0 + cq + 8 * jj;
        s[ii][jj] = kj <= qi && kj < d.T ? s[ii][jj] * scale : -INFINITY;
        mx = fmaxf(mx, s[ii][jj]);
      }
      const float mnew = fmaxf(m[ii], row_max8(mx));
      // m = -inf: nothing accumulated yet (l = 0, Os = 0); a row with no valid key so far
      // (only rows past T) keeps mnew = -inf and p = 0.
      const float c = m[ii] == -INFINITY ? 0.f : expf(m[ii] - mnew);
      float ps = 0.f;
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const float p = s[ii][jj] == -INFINITY ? 0.f : expf(s[ii][jj] - mnew);
        Ps[(rp + 16 * ii) * kLdP + cq + 8 * jj] = p;
        ps += p;
      }
      l[ii] = l[ii] * c + row_sum8(ps);
      m[ii] = mnew;
      if (cq == 0) corr[rp + 16 * ii] = c;
    }
    __syncthreads();
    tile_nn_acc(Os, d.ldv, Ps, Vs, d.ldv, d.Dv, 1.f, corr);
  }
  if (cq == 0) {
#pragma unroll
    for (int ii = 0; ii < 2; ++ii) {
      const int r = rp + 16 * ii;
      inv_l[r] = l[ii] > 0.f ? 1.f / l[ii] : 0.f;
      lrow[r] = m[ii] + logf(l[ii]);
    }
  }
  __syncthreads();
  store_tile(out, Os, d.ldv, d, b, h, q0, d.Dv, d.vecv, inv_l);
  if (tid < kTile && q0 + tid < d.T) lse[blockIdx.y * d.T + q0 + tid] = lrow[tid];
}

// D[(b*H + h)*T + t] = dout[b,t,h,:] . out[b,t,h,:], one warp per (b, t, h).
template <typename T>
__global__ void attn_dot_kernel(float* __restrict__ D, const T* __restrict__ dout,
                                const T* __restrict__ out, AttnDims d) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= d.B * d.T * d.H) return;
  const int lane = threadIdx.x & 31;
  const T *g = dout + row * d.Dv, *o = out + row * d.Dv;
  float s = 0.f;
  for (int c = lane; c < d.Dv; c += 32) s = fmaf(load(g, c), load(o, c), s);
  s = warp_sum(s);
  const int64_t h = row % d.H, t = (row / d.H) % d.T, b = row / (d.H * d.T);
  if (lane == 0) D[(b * d.H + h) * d.T + t] = s;
}

// Shared by both backward kernels: for the tile pair (queries q0.., keys k0..) with Qs, Ks,
// dOs, Vs, ls (lse), Ds (D) in shared memory, p and ds of the thread's 2 x 4 scores.
__device__ __forceinline__ void bwd_scores(float (&p)[2][4], float (&ds)[2][4], const float* Qs,
                                           const float* Ks, const float* dOs, const float* Vs,
                                           const float* ls, const float* Ds, const AttnDims& d,
                                           int64_t q0, int64_t k0, float scale, int rp, int cq) {
  float dp[2][4];
  tile_nt(p, Qs, Ks, d.ldk, d.Dk, rp, cq);
  tile_nt(dp, dOs, Vs, d.ldv, d.Dv, rp, cq);
#pragma unroll
  for (int ii = 0; ii < 2; ++ii) {
    const int r = rp + 16 * ii;
    const int64_t qi = q0 + r;
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const int64_t kj = k0 + cq + 8 * jj;
      const bool valid = kj <= qi && qi < d.T && kj < d.T;
      p[ii][jj] = valid ? expf(p[ii][jj] * scale - ls[r]) : 0.f;
      ds[ii][jj] = p[ii][jj] * (dp[ii][jj] - Ds[r]);
    }
  }
}

// lse and D of query rows [q0, q0+32) into ls, Ds (zero past T).
__device__ __forceinline__ void load_rows(float* ls, float* Ds, const float* __restrict__ lse,
                                          const float* __restrict__ D, int64_t bh, int64_t q0,
                                          int64_t T) {
  if (threadIdx.x < kTile) {
    const int64_t t = q0 + threadIdx.x;
    ls[threadIdx.x] = t < T ? lse[bh * T + t] : 0.f;
    Ds[threadIdx.x] = t < T ? D[bh * T + t] : 0.f;
  }
}

size_t dkdv_smem(const AttnDims& d) {
  return sizeof(float) * size_t(3 * kTile * d.ldk + 3 * kTile * d.ldv + 2 * kTile * kLdP + 2 * kTile);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attn_dkdv_kernel(T* __restrict__ dk, T* __restrict__ dv, const T* __restrict__ dout,
                     const float* __restrict__ lse, const float* __restrict__ D,
                     const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                     AttnDims d, float scale) {
  extern __shared__ float4 attn_dkdv_smem[];
  float* Ks = reinterpret_cast<float*>(attn_dkdv_smem);  // [32][ldk]
  float* Qs = Ks + kTile * d.ldk;                        // [32][ldk]
  float* dKs = Qs + kTile * d.ldk;                       // [32][ldk] accumulator
  float* Vs = dKs + kTile * d.ldk;                       // [32][ldv]
  float* dOs = Vs + kTile * d.ldv;                       // [32][ldv]
  float* dVs = dOs + kTile * d.ldv;                      // [32][ldv] accumulator
  float* PT = dVs + kTile * d.ldv;                       // [32 keys][kLdP] p, transposed
  float* dST = PT + kTile * kLdP;                        // [32 keys][kLdP] ds, transposed
  float* ls = dST + kTile * kLdP;                        // [32]
  float* Ds = ls + kTile;                                // [32]

  const int tid = threadIdx.x, rp = tid >> 3, cq = tid & 7;
  const int kt = int(blockIdx.x);  // key tile kt meets query tiles kt..: the first are longest
  const int nq = int((d.T + kTile - 1) / kTile);
  const int64_t bh = blockIdx.y, b = bh / d.H, h = bh % d.H, k0 = int64_t(kt) * kTile;

  load_tile(Ks, d.ldk, k, d, b, h, k0, d.Dk, d.veck);
  load_tile(Vs, d.ldv, v, d, b, h, k0, d.Dv, d.vecv);
  zero(dKs, kTile * d.ldk);
  zero(dVs, kTile * d.ldv);
  for (int qt = kt; qt < nq; ++qt) {
    const int64_t q0 = int64_t(qt) * kTile;
    __syncthreads();  // the previous tile's readers are done with Qs, dOs, PT, dST, ls, Ds
    load_tile(Qs, d.ldk, q, d, b, h, q0, d.Dk, d.veck);
    load_tile(dOs, d.ldv, dout, d, b, h, q0, d.Dv, d.vecv);
    load_rows(ls, Ds, lse, D, bh, q0, d.T);
    __syncthreads();
    float p[2][4], ds[2][4];
    bwd_scores(p, ds, Qs, Ks, dOs, Vs, ls, Ds, d, q0, k0, scale, rp, cq);
#pragma unroll
    for (int ii = 0; ii < 2; ++ii)
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        PT[(cq + 8 * jj) * kLdP + rp + 16 * ii] = p[ii][jj];
        dST[(cq + 8 * jj) * kLdP + rp + 16 * ii] = ds[ii][jj];
      }
    __syncthreads();
    tile_nn_acc(dVs, d.ldv, PT, dOs, d.ldv, d.Dv, 1.f, nullptr);
    tile_nn_acc(dKs, d.ldk, dST, Qs, d.ldk, d.Dk, scale, nullptr);
  }
  __syncthreads();
  store_tile(dk, dKs, d.ldk, d, b, h, k0, d.Dk, d.veck, nullptr);
  store_tile(dv, dVs, d.ldv, d, b, h, k0, d.Dv, d.vecv, nullptr);
}

size_t dq_smem(const AttnDims& d) {
  return sizeof(float) * size_t(3 * kTile * d.ldk + 2 * kTile * d.ldv + kTile * kLdP + 2 * kTile);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attn_dq_kernel(T* __restrict__ dq, const T* __restrict__ dout, const float* __restrict__ lse,
                   const float* __restrict__ D, const T* __restrict__ q, const T* __restrict__ k,
                   const T* __restrict__ v, AttnDims d, float scale) {
  extern __shared__ float4 attn_dq_smem[];
  float* Qs = reinterpret_cast<float*>(attn_dq_smem);  // [32][ldk]
  float* Ks = Qs + kTile * d.ldk;                      // [32][ldk]
  float* dQs = Ks + kTile * d.ldk;                     // [32][ldk] accumulator
  float* dOs = dQs + kTile * d.ldk;                    // [32][ldv]
  float* Vs = dOs + kTile * d.ldv;                     // [32][ldv]
  float* dSs = Vs + kTile * d.ldv;                     // [32 queries][kLdP] ds
  float* ls = dSs + kTile * kLdP;                      // [32]
  float* Ds = ls + kTile;                              // [32]

  const int tid = threadIdx.x, rp = tid >> 3, cq = tid & 7;
  const int qt = int(gridDim.x) - 1 - int(blockIdx.x);  // longest rows first
  const int64_t bh = blockIdx.y, b = bh / d.H, h = bh % d.H, q0 = int64_t(qt) * kTile;

  load_tile(Qs, d.ldk, q, d, b, h, q0, d.Dk, d.veck);
  load_tile(dOs, d.ldv, dout, d, b, h, q0, d.Dv, d.vecv);
  load_rows(ls, Ds, lse, D, bh, q0, d.T);
  zero(dQs, kTile * d.ldk);
  for (int kt = 0; kt <= qt; ++kt) {
    const int64_t k0 = int64_t(kt) * kTile;
    __syncthreads();  // the previous tile's readers are done with Ks, Vs, dSs
    load_tile(Ks, d.ldk, k, d, b, h, k0, d.Dk, d.veck);
    load_tile(Vs, d.ldv, v, d, b, h, k0, d.Dv, d.vecv);
    __syncthreads();
    float p[2][4], ds[2][4];
    bwd_scores(p, ds, Qs, Ks, dOs, Vs, ls, Ds, d, q0, k0, scale, rp, cq);
#pragma unroll
    for (int ii = 0; ii < 2; ++ii)
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) dSs[(rp + 16 * ii) * kLdP + cq + 8 * jj] = ds[ii][jj];
    __syncthreads();
    tile_nn_acc(dQs, d.ldk, dSs, Ks, d.ldk, d.Dk, scale, nullptr);
  }
  __syncthreads();
  store_tile(dq, dQs, d.ldk, d, b, h, q0, d.Dk, d.veck, nullptr);
}

constexpr const char* kRule = "q/k[B,T,H,Dk], v/out[B,T,H,Dv], lse[B,H,T]";

AttnDims check_layout(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                      const Tensor& out, const Tensor& lse, std::initializer_list<Arg> all) {
  const bool ok = q.ndim() == 4 && k.shape == q.shape && v.ndim() == 4 && v.size(0) == q.size(0) &&
                  v.size(1) == q.size(1) && v.size(2) == q.size(2) && out.shape == v.shape &&
                  is_shape(lse, {q.size(0), q.size(2), q.size(1)});
  check_shapes(op, ok, kRule, all);
  check_dtype(op, {"lse", lse}, DType::f32, "the log-sum-exp is kept in f32");
  AttnDims d;
  d.B = q.size(0), d.T = q.size(1), d.H = q.size(2);
  d.Dk = int(q.size(3)), d.Dv = int(v.size(3));
  BK_CHECK(d.Dk >= 1 && d.Dv >= 1 && d.B * d.H <= 65535,
           "{}: q is {}, v is {}: need head dims >= 1 and B*H <= 65535", op, q.shape.str(),
           v.shape.str());
  d.ldk = tile_ld(d.Dk), d.ldv = tile_ld(d.Dv);
  return d;
}

void check_smem(const char* op, const AttnDims& d, size_t bytes) {
  const int limit = max_smem_optin();
  BK_CHECK(bytes <= size_t(limit),
           "{}: head dims Dk = {}, Dv = {} need {} bytes of shared memory per block; this GPU "
           "allows {}", op, d.Dk, d.Dv, bytes, limit);
}
}  // namespace

void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, float scale,
                       Stream s) {
  const char* op = "attention_forward";
  const std::initializer_list<Arg> all = {{"out", out}, {"lse", lse}, {"q", q}, {"k", k}, {"v", v}};
  const DType dt = act_dtype(op, {{"out", out}, {"q", q}, {"k", k}, {"v", v}});
  AttnDims d = check_layout(op, q, k, v, out, lse, all);
  if (d.B * d.T * d.H == 0) return;
  d.veck = d.Dk % kPack == 0 && aligned16({q.data, k.data});
  d.vecv = d.Dv % kPack == 0 && aligned16({v.data, out.data});
  const size_t smem = fwd_smem(d);
  check_smem(op, d, smem);
  const dim3 grid(ceil_div(d.T, kTile), unsigned(d.B * d.H));
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    allow_smem(attn_fwd_kernel<T>, smem);
    attn_fwd_kernel<T><<<grid, kThreads, smem, stream_of(s)>>>(
        static_cast<T*>(out.data), static_cast<float*>(lse.data), static_cast<const T*>(q.data),
        static_cast<const T*>(k.data), static_cast<const T*>(v.data), d, scale);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                        Tensor q, Tensor k, Tensor v, float scale, Stream s) {
  const char* op = "attention_backward";
  const std::initializer_list<Arg> all = {{"dq", dq},     {"dk", dk},   {"dv", dv},
                                          {"dout", dout}, {"out", out}, {"lse", lse},
                                          {"q", q},       {"k", k},     {"v", v}};
  const DType dt = act_dtype(op, {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dout", dout},
                                  {"out", out}, {"q", q}, {"k", k}, {"v", v}});
  AttnDims d = check_layout(op, q, k, v, out, lse, all);
  check_shapes(op, dq.shape == q.shape && dk.shape == k.shape && dv.shape == v.shape &&
                       dout.shape == out.shape,
               "each gradient shaped like its tensor", all);
  if (d.B * d.T * d.H == 0) return;
  d.veck = d.Dk % kPack == 0 && aligned16({q.data, k.data, dq.data, dk.data});
  d.vecv = d.Dv % kPack == 0 && aligned16({v.data, dout.data, dv.data});
  const size_t smem_kv = dkdv_smem(d), smem_q = dq_smem(d);
  check_smem(op, d, std::max(smem_kv, smem_q));
  const cudaStream_t st = stream_of(s);
  Scratch Dbuf(sizeof(float) * size_t(d.B * d.H * d.T), s);
  float* Dp = Dbuf.as<float>();
  const unsigned tiles = ceil_div(d.T, kTile), bh = unsigned(d.B * d.H);
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *pq = static_cast<const T*>(q.data), *pk = static_cast<const T*>(k.data),
            *pv = static_cast<const T*>(v.data), *pg = static_cast<const T*>(dout.data);
    const float* pl = static_cast<const float*>(lse.data);
    attn_dot_kernel<T><<<ceil_div(d.B * d.T * d.H, 8), 256, 0, st>>>(
        Dp, pg, static_cast<const T*>(out.data), d);
    BK_CUDA_CHECK_LAUNCH();
    allow_smem(attn_dkdv_kernel<T>, smem_kv);
    attn_dkdv_kernel<T><<<dim3(tiles, bh), kThreads, smem_kv, st>>>(
        static_cast<T*>(dk.data), static_cast<T*>(dv.data), pg, pl, Dp, pq, pk, pv, d, scale);
    BK_CUDA_CHECK_LAUNCH();
    allow_smem(attn_dq_kernel<T>, smem_q);
    attn_dq_kernel<T><<<dim3(tiles, bh), kThreads, smem_q, st>>>(static_cast<T*>(dq.data), pg,
                                                                 pl, Dp, pq, pk, pv, d, scale);
    BK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace bk::cuda
