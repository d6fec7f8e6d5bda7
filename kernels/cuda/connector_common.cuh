// Shared pieces of the connector kernels (mhc_coeffs.cu, hc_coeffs.cu, sinkhorn.cu,
// stream_apply.cu; docs/mhc.md "Kernels"): host shape checks against the stream state
// X [N, n, C], and the three device cores both coefficient ops are built from:
//
//   project_tile  Z[r, j] = sum_k W[j, k] X[r, k] (j < M) and SS[r] = sum_k X[r, k]^2 for a
//                 tile of 32 rows, in one read of X (the forward of mhc and hc, where the
//                 RMSNorm divide comes after the product);
//   dx_tile       DX[r, c] = sum_j G[r, j] W[j, c] + kx[r] X[r, c] (their input gradients:
//                 the projection's transpose plus the RMSNorm term, X read once);
//   wgrad_kernel  dW[j, k] += sum_r G[r, j] X[r, k] (their weight gradients), deterministic:
//                 fixed row chunks (a function of R alone) write partials, a second pass adds
//                 them in chunk order. No float atomics anywhere.
//
// Every sum has a fixed order that depends on the shapes only, never on the GPU or the run.
// The small weight W ([M, K], f32 or bf16) is staged in shared memory as f32; X is T.
#pragma once
#include <algorithm>

#include "kernels/cuda/fptr.cuh"
#include "kernels/cuda/scratch.h"

namespace bk::cuda::conn {

// ---- host: shapes -------------------------------------------------------------------------

// The CUDA connector kernels keep per-token n x n blocks in registers: n <= kMaxStreams.
constexpr int64_t kMaxStreams = 8;

struct StreamDims {
  int64_t N, n, C;
};

// `x` (named `name`) is the stream state [N, n, C] with 1 <= n <= 8 and C >= 1.
inline StreamDims stream_dims(const char* op, const char* name, const Tensor& x) {
  BK_CHECK(x.ndim() == 3 && x.size(1) >= 1 && x.size(2) >= 1,
           "{}: {} is {}; expected the stream state [N, n, C] with n >= 1 and C >= 1", op, name,
           x.shape.str());
  BK_CHECK(x.size(1) <= kMaxStreams, "{}: {} is {}: n = {} streams; the CUDA kernels take n <= {}",
           op, name, x.shape.str(), x.size(1), kMaxStreams);
  return {x.size(0), x.size(1), x.size(2)};
}

// One operand's expected shape and the rule it follows, in words (as kernels/cpu).
struct ShapeRule {
  const char* name;
  const Tensor& t;
  Shape want;
  const char* rule;
};
inline void expect_shapes(const char* op, const char* xname, const StreamDims& d,
                          std::initializer_list<ShapeRule> rules) {
  for (const ShapeRule& r : rules)
    BK_CHECK(r.t.shape == r.want, "{}: {} is {} but must be {} = {} ({} is [N, n, C] = [{}, {}, {}])",
             op, r.name, r.t.shape.str(), r.rule, r.want.str(), xname, d.N, d.n, d.C);
}

// ---- device: common ----------------------------------------------------------------------

constexpr int kThreads = 256;  // 8 warps per block in every core
constexpr int kRows = 32;      // rows (tokens or stream rows) per block tile

// 1/(1+e^-l) without overflow for any |l| (as kernels/cpu/connector_common.h).
__device__ __forceinline__ float sigmoid(float l) {
  const float e = expf(-fabsf(l));
  return l >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
}

__device__ __forceinline__ float4 lds4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// ---- projection ----------------------------------------------------------------------------
//
// A block owns 32 rows. X and W are staged in chunks of kChunk columns (X through registers,
// so the next chunk's DRAM loads are in flight while this one is computed). Warp w takes the
// column quads w, w+8, w+16, w+24 of each chunk (a k-slice); lane (q, og) = (lane/4, lane%4)
// accumulates rows q, q+8, q+16, q+24 against outputs og, og+4, ..., og+4(JPT-1). Per column
// quad a warp reads 4 + JPT float4 from shared memory for 16 JPT FMAs, so it is FMA-bound;
// the row strides (kLd = 4 mod 32 words) make every float4 read conflict-free. At the end the
// 8 k-slices are added in warp order through shared memory.
constexpr int kChunk = 128;
constexpr int kLd = kChunk + 4;

template <int JPT> constexpr int proj_stage_floats() {
  return std::max(kRows * kLd + 4 * JPT * kLd, 8 * 32 * (JPT + 1));
}
// Outputs per lane for M outputs: one of the instantiated values (4 * JPT >= M).
inline int proj_jpt(int64_t M) {
  const int64_t q = (M + 3) / 4;
  for (int v : {1, 2, 3, 4, 6, 9, 12, 16, 20})
    if (q <= v) return v;
  return 0;  // M > 80: not supported (n > 8)
}

// Rows [r0, r0+32) of X [R, K], columns [kbeg, kend) (kbeg a multiple of kChunk): on return
// (after a barrier) zres[row * (M+1) + j] = Z (j < M) and zres[row * (M+1) + M] = SS; rows past
// R are zero. `stage` holds proj_stage_floats<JPT>() floats. xvec / wvec: K % 8 == 0 and the
// base is 16-byte aligned, for 16-byte loads of X / W.
template <typename T, int JPT>
__device__ void project_tile(const T* __restrict__ X, int64_t R, int64_t K, bool xvec, FPtr W,
                             int M, bool wvec, int64_t r0, int64_t kbeg, int64_t kend,
                             float* stage, float* zres) {
  constexpr int kMp = 4 * JPT;                    // staged W rows (zero past M)
  constexpr int kXPacks = kRows * kChunk / kPack;  // 512: two per thread
  float* xs = stage;                              // [32][kLd]
  float* ws = stage + kRows * kLd;                // [kMp][kLd]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, q = lane >> 2, og = lane & 3;

  float xr[kXPacks / kThreads][kPack];
  auto fetch_x = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < kXPacks / kThreads; ++i) {
      const int p = tid + kThreads * i, row = p / (kChunk / kPack);
      const int64_t c = k0 + (p % (kChunk / kPack)) * kPack;
      if (r0 + row < R && c < K) {
        load_pack(X + (r0 + row) * K, c, K, xvec, xr[i]);
      } else {
#pragma unroll
        for (int e = 0; e < kPack; ++e) xr[i][e] = 0.f;
      }
    }
  };

  float acc[4][JPT], ss[4];
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    ss[a] = 0.f;
#pragma unroll
    for (int jj = 0; jj < JPT; ++jj) acc[a][jj] = 0.f;
  }

  if (kbeg < kend) fetch_x(kbeg);
  for (int64_t k0 = kbeg; k0 < kend; k0 += kChunk) {
    __syncthreads();  // the previous chunk's readers are done with xs / ws
#pragma unroll
    for (int i = 0; i < kXPacks / kThreads; ++i) {
      const int p = tid + kThreads * i;
      float* dst = xs + (p / (kChunk / kPack)) * kLd + (p % (kChunk / kPack)) * kPack;
      reinterpret_cast<float4*>(dst)[0] = make_float4(xr[i][0], xr[i][1], xr[i][2], xr[i][3]);
      reinterpret_cast<float4*>(dst)[1] = make_float4(xr[i][4], xr[i][5], xr[i][6], xr[i][7]);
    }
    for (int p = tid; p < kMp * (kChunk / kPack); p += kThreads) {
      const int j = p / (kChunk / kPack);
      const int64_t c = k0 + (p % (kChunk / kPack)) * kPack;
      float v[kPack];
      if (j < M && c < K && wvec) {
        W.pack(int64_t(j) * K + c, v);
      } else {
#pragma unroll
        for (int e = 0; e < kPack; ++e) v[e] = j < M && c + e < K ? W[int64_t(j) * K + c + e] : 0.f;
      }
      float* dst = ws + j * kLd + (p % (kChunk / kPack)) * kPack;
      reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
    __syncthreads();
    if (k0 + kChunk < kend) fetch_x(k0 + kChunk);  // in flight during the FMAs below
#pragma unroll
    for (int u = 0; u < kChunk / 32; ++u) {
      const int col = (warp + 8 * u) * 4;
      float4 xv[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        xv[a] = lds4(xs + (q + 8 * a) * kLd + col);
        ss[a] = fmaf(xv[a].x, xv[a].x, ss[a]);
        ss[a] = fmaf(xv[a].y, xv[a].y, ss[a]);
        ss[a] = fmaf(xv[a].z, xv[a].z, ss[a]);
        ss[a] = fmaf(xv[a].w, xv[a].w, ss[a]);
      }
#pragma unroll
      for (int jj = 0; jj < JPT; ++jj) {
        const float4 wv = lds4(ws + (og + 4 * jj) * kLd + col);
#pragma unroll
        for (int a = 0; a < 4; ++a) {
          acc[a][jj] = fmaf(xv[a].x, wv.x, acc[a][jj]);
          acc[a][jj] = fmaf(xv[a].y, wv.y, acc[a][jj]);
          acc[a][jj] = fmaf(xv[a].z, wv.z, acc[a][jj]);
          acc[a][jj] = fmaf(xv[a].w, wv.w, acc[a][jj]);
        }
      }
    }
  }
  __syncthreads();  // the stage area becomes the reduction buffer

  // Add the 8 k-slices in warp order, one row quarter (a) at a time.
  float* red = stage;  // [8 warps][32 lanes][JPT + 1]
  for (int a = 0; a < 4; ++a) {
    float* mine = red + (warp * 32 + lane) * (JPT + 1);
#pragma unroll
    for (int jj = 0; jj < JPT; ++jj) mine[jj] = acc[a][jj];
    mine[JPT] = ss[a];
    __syncthreads();
    for (int i = tid; i < 32 * (JPT + 1); i += kThreads) {
      const int l = i / (JPT + 1), jj = i % (JPT + 1);
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < 8; ++w) s += red[(w * 32 + l) * (JPT + 1) + jj];
      const int row = (l >> 2) + 8 * a, o = l & 3;
      if (jj < JPT) {
        const int j = o + 4 * jj;
        if (j < M) zres[row * (M + 1) + j] = s;
      } else if (o == 0) {
        zres[row * (M + 1) + M] = s;  // every og lane summed the same squares; take og = 0
      }
    }
    __syncthreads();
  }
}

// ---- input gradient ------------------------------------------------------------------------
//
// A block owns 32 rows and up to kDxColsPerBlock columns, in sub-tiles of kDxCols. Warp w
// computes rows 8 (w % 4) .. +7 for the column half w / 4, lane l columns 4l .. 4l+3 of it:
// per j one float4 of W (distinct per lane) and two float4 of G (broadcast) for 32 FMAs.
constexpr int kDxCols = 256;
constexpr int kDxColsPerBlock = 1024;

// DX[r, c] = sum_j G[r, j] W[j, c] + kx[r] X[r, c] for rows [r0, r0+32) and columns [c0, c1).
// gs: shared [M][32] (G transposed, zero past R), kxs: shared [32], ws: shared [M][kDxCols].
// vec4: K % 4 == 0 and aligned bases (4-element accesses of X and DX).
template <typename T>
__device__ void dx_tile(T* __restrict__ DX, const T* __restrict__ X, int64_t R, int64_t K,
                        bool vec4, FPtr W, int M, int64_t r0, int64_t c0, int64_t c1,
                        const float* gs, const float* kxs, float* ws) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, rg = warp & 3, ch = warp >> 2;
  for (int64_t cb = c0; cb < c1; cb += kDxCols) {
    __syncthreads();  // gs / kxs written; the previous sub-tile's readers are done with ws
    for (int i = tid; i < M * kDxCols; i += kThreads) {
      const int j = i / kDxCols;
      const int64_t k = cb + i % kDxCols;
      ws[i] = k < c1 ? W[int64_t(j) * K + k] : 0.f;
    }
    __syncthreads();
    const int cl = ch * 128 + lane * 4;
    const int64_t k = cb + cl;
    float acc[8][4];
#pragma unroll
    for (int a = 0; a < 8; ++a)
#pragma unroll
      for (int b = 0; b < 4; ++b) acc[a][b] = 0.f;
    for (int j = 0; j < M; ++j) {
      const float4 w = lds4(ws + j * kDxCols + cl);
      const float4 g0 = lds4(gs + j * 32 + rg * 8), g1 = lds4(gs + j * 32 + rg * 8 + 4);
      const float g[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
#pragma unroll
      for (int a = 0; a < 8; ++a) {
        acc[a][0] = fmaf(g[a], w.x, acc[a][0]);
        acc[a][1] = fmaf(g[a], w.y, acc[a][1]);
        acc[a][2] = fmaf(g[a], w.z, acc[a][2]);
        acc[a][3] = fmaf(g[a], w.w, acc[a][3]);
      }
    }
    if (k < c1) {
#pragma unroll
      for (int a = 0; a < 8; ++a) {
        const int64_t r = r0 + rg * 8 + a;
        if (r >= R) break;
        float xv[4], o[4];
        load_quad(X + r * K, k, c1, vec4, xv);
        const float kx = kxs[rg * 8 + a];
#pragma unroll
        for (int b = 0; b < 4; ++b) o[b] = fmaf(kx, xv[b], acc[a][b]);
        store_quad(DX + r * K, k, c1, vec4, o);
      }
    }
  }
}

// ---- weight gradient -----------------------------------------------------------------------
//
// dW[j, k] += sum_r G[r, j] X[r, k], G given by a functor g(r, j) (each op's pre-projection
// gradient). Block: RW x CW warps; warp (rw, cw) owns outputs rw*JPT .. +JPT-1 and 128
// columns (lane: 4 of them). Rows come in fixed chunks (blockIdx.y); per row a lane reads one
// 4-element quad of X and JPT/4 float4 of G (broadcast) for 4 JPT FMAs. With more than one
// chunk each chunk writes its partial sums and wgrad_reduce adds them in chunk order.
struct WgradPlan {
  int jpt, rw, cw;       // outputs per warp, warps over outputs, warps over columns
  int64_t rows_per_chunk, chunks;
};
inline WgradPlan wgrad_plan(int64_t R, int64_t M) {
  WgradPlan p;
  p.jpt = M <= 4 ? 4 : M <= 8 ? 8 : 12;
  p.rw = int((M + p.jpt - 1) / p.jpt);
  p.cw = std::max(1, 8 / p.rw);
  // At most 16 chunks of at least 256 rows: the cut depends on R alone.
  const int64_t want = std::max<int64_t>(1, std::min<int64_t>(16, (R + 255) / 256));
  p.rows_per_chunk = std::max<int64_t>(32, ((R + want - 1) / want + 31) / 32 * 32);
  p.chunks = std::max<int64_t>(1, (R + p.rows_per_chunk - 1) / p.rows_per_chunk);
  return p;
}

template <typename T, int JPT, typename G>
__global__ void __launch_bounds__(kThreads)
    wgrad_kernel(float* __restrict__ part, FPtr dW, G g, const T* __restrict__ X, int64_t R,
                 int64_t K, int M, int rw_count, int64_t rows_per_chunk, bool vec4) {
  static_assert(JPT % 4 == 0, "G rows are read as float4");
  extern __shared__ float4 wg_smem4[];
  float* gs = reinterpret_cast<float*>(wg_smem4);  // [32][Mp]
  const int Mp = rw_count * JPT;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int rw = warp % rw_count, cw = warp / rw_count;
  const int cws = (blockDim.x >> 5) / rw_count;
  const int64_t k = (int64_t(blockIdx.x) * cws + cw) * 128 + lane * 4;
  const int64_t ra = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t rb = ra + rows_per_chunk < R ? ra + rows_per_chunk : R;

  float acc[JPT][4];
#pragma unroll
  for (int jj = 0; jj < JPT; ++jj)
#pragma unroll
    for (int b = 0; b < 4; ++b) acc[jj][b] = 0.f;

  for (int64_t t0 = ra; t0 < rb; t0 += kRows) {
    __syncthreads();
    for (int i = tid; i < kRows * Mp; i += blockDim.x) {
      const int64_t r = t0 + i / Mp;
      const int j = i % Mp;
      gs[i] = r < rb && j < M ? g(r, j) : 0.f;
    }
    __syncthreads();
    const int nt = int(rb - t0 < kRows ? rb - t0 : kRows);
    for (int t = 0; t < nt; t += 8) {
      float xv[8][4];
#pragma unroll
      for (int u = 0; u < 8; ++u) {  // eight rows' loads in flight before the FMAs
        if (t + u < nt && k < K) {
          load_quad(X + (t0 + t + u) * K, k, K, vec4, xv[u]);
        } else {
#pragma unroll
          for (int b = 0; b < 4; ++b) xv[u][b] = 0.f;
        }
      }
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const float* grow = gs + (t + u) * Mp + rw * JPT;
#pragma unroll
        for (int i = 0; i < JPT / 4; ++i) {
          const float4 g4 = lds4(grow + 4 * i);
          const float gv[4] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
          for (int e = 0; e < 4; ++e)
#pragma unroll
            for (int b = 0; b < 4; ++b) acc[4 * i + e][b] = fmaf(gv[e], xv[u][b], acc[4 * i + e][b]);
        }
      }
    }
  }
#pragma unroll
  for (int jj = 0; jj < JPT; ++jj) {
    const int j = rw * JPT + jj;
    if (j >= M) break;
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      if (k + b >= K) break;
      if (part) part[(int64_t(blockIdx.y) * M + j) * K + k + b] = acc[jj][b];
      else dW.add(int64_t(j) * K + k + b, acc[jj][b]);
    }
  }
}

// dW[i] += sum_c part[c][i], chunks in order. (static: this header is in several .cu files)
static __global__ void wgrad_reduce(FPtr dW, const float* __restrict__ part, int64_t chunks, int64_t MK) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < MK; i += stride) {
    float s = 0.f;
    for (int64_t c = 0; c < chunks; ++c) s += part[c * MK + i];
    dW.add(i, s);
  }
}

// dW [M, K] += sum_r g(r, j) X[r, k] over the R rows of X [R, K] (the host half of the above).
template <typename T, typename G>
void launch_wgrad(FPtr dW, G g, const T* X, int64_t R, int64_t K, int M, bool vec4, Stream s) {
  if (R == 0 || K == 0 || M == 0) return;  // nothing to add
  const WgradPlan p = wgrad_plan(R, M);
  const cudaStream_t st = stream_of(s);
  Scratch part(p.chunks > 1 ? sizeof(float) * size_t(p.chunks * M * K) : 1, s);
  float* dpart = p.chunks > 1 ? part.as<float>() : nullptr;
  const dim3 grid(ceil_div(K, int64_t(p.cw) * 128), unsigned(p.chunks));
  const int threads = 32 * p.rw * p.cw;
  const size_t smem = sizeof(float) * kRows * p.rw * p.jpt;
  auto launch = [&](auto kernel) {
    kernel<<<grid, threads, smem, st>>>(dpart, dW, g, X, R, K, M, p.rw, p.rows_per_chunk, vec4);
    BK_CUDA_CHECK_LAUNCH();
  };
  if (p.jpt == 4) launch(wgrad_kernel<T, 4, G>);
  else if (p.jpt == 8) launch(wgrad_kernel<T, 8, G>);
  else launch(wgrad_kernel<T, 12, G>);
  if (dpart) {
    wgrad_reduce<<<grid_for(int64_t(M) * K, kThreads), kThreads, 0, st>>>(dW, dpart, p.chunks,
                                                                         int64_t(M) * K);
    BK_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace bk::cuda::conn
