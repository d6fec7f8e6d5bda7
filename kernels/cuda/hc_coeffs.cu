// Hyper-Connections coefficients on the GPU (docs/mhc.md "Kernels"; the CPU reference is
// kernels/cpu/hc_coeffs.cpp). Per stream row r = (token t, stream i), R = N n rows of width C,
// M = n + 2, w [M, C]:
//   rinv_r = 1/sqrt(|X_r|^2/C + eps),  u_r = tanh(rinv_r w X_r),
//   h_pre[r] = s0 u_r[0] + static_pre[i],  h_post[r] = s1 u_r[1] + static_post[i],
//   h_res[t, j, i] = s2 u_r[2+j] + static_res[j, i].
// Backward (dl = d loss / d pre-tanh, returned as dlogits):
//   dX_r = w^T (rinv_r dl_r) - rinv_r^3 (dl_r . w X_r) / C X_r,   dw += sum_r rinv_r dl_r X_r^T.
//
// forward:         one kernel: project_tile (w X_r and |X_r|^2 in one read of X), then rinv,
//                  tanh and the coefficients in the epilogue.
//                  Bytes per token: reads 2 nC (bf16 X), writes 4 (n + n(n+2) + 2n + n^2).
// backward_input:  one kernel per 32 stream rows: the RMSNorm term needs dl . (w X_r) before any
//                  dX, so the block first re-forms w X_r (project_tile), then dlogits and
//                  dX = w^T (rinv dl) + kx X over the same rows; the second read of those rows
//                  mostly hits L2. Bytes per token: reads 2 * 2 nC (X, twice) + small, writes
//                  2 nC (dX) + 4 n (n+2).
// backward_weight: as mhc (connector_common.cuh, wgrad_kernel), plus one fixed-order block sum
//                  per scale / static entry.
//
// Dtypes: x and dx share T; every other operand is f32 or bf16 on its own. Deterministic.
#include <type_traits>

#include "kernels/cuda/connector_common.cuh"

namespace bk::cuda {

namespace {
using namespace conn;

constexpr const char* kX = "x";

struct HcFwd {
  FPtr h_pre, h_post, h_res, rinv, u, w, scale, spre, spost, sres;
  int64_t R, C;
  int n, M;
  float eps;
  bool xvec, wvec;
};

template <typename T, int JPT>
__global__ void __launch_bounds__(kThreads) hc_fwd_kernel(HcFwd a, const T* __restrict__ x) {
  extern __shared__ float4 hc_fwd_smem[];
  float* stage = reinterpret_cast<float*>(hc_fwd_smem);
  float* zres = stage + proj_stage_floats<JPT>();  // [32][M+1]
  float* rs = zres + kRows * (a.M + 1);           // [32]
  const int M = a.M, M1 = a.M + 1, n = a.n, tid = threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.x) * kRows;
  project_tile<T, JPT>(x, a.R, a.C, a.xvec, a.w, M, a.wvec, r0, 0, a.C, stage, zres);
  if (tid < kRows) rs[tid] = 1.f / sqrtf(zres[tid * M1 + M] / float(a.C) + a.eps);
  __syncthreads();
  for (int i = tid; i < kRows * M; i += kThreads) {
    const int row = i / M, k = i % M;
    const int64_t r = r0 + row;
    if (r >= a.R) continue;
    if (k == 0) a.rinv.set(r, rs[row]);
    const float uv = tanhf(zres[row * M1 + k] * rs[row]);
    a.u.set(r * M + k, uv);
    const int64_t t = r / n;
    const int s = int(r % n);
    if (k == 0) a.h_pre.set(r, a.scale[0] * uv + a.spre[s]);
    else if (k == 1) a.h_post.set(r, a.scale[1] * uv + a.spost[s]);
    else a.h_res.set(t * n * n + (k - 2) * n + s, a.scale[2] * uv + a.sres[(k - 2) * n + s]);
  }
}

struct HcBwd {
  FPtr dlogits, dh_pre, dh_post, dh_res, w, scale, rinv, u;
  int64_t R, C;
  int n, M;
  bool xvec, wvec, vec4;
};

// d loss / d (pre-tanh value k) of stream row r.
__device__ __forceinline__ float hc_dlogit(const HcBwd& a, int64_t r, int k) {
  const float uv = a.u[r * a.M + k], d = 1.f - uv * uv;
  if (k == 0) return a.scale[0] * a.dh_pre[r] * d;
  if (k == 1) return a.scale[1] * a.dh_post[r] * d;
  const int n = a.n;
  return a.scale[2] * a.dh_res[(r / n) * n * n + (k - 2) * n + r % n] * d;
}

template <int JPT> constexpr int hc_bwd_stage_floats(int M) {
  return std::max(proj_stage_floats<JPT>(), M * kDxCols + M * kRows + kRows * (M + 1) + kRows);
}

template <typename T, int JPT>
__global__ void __launch_bounds__(kThreads)
    hc_bwd_input_kernel(HcBwd a, T* __restrict__ dx, const T* __restrict__ x) {
  extern __shared__ float4 hc_bwd_smem[];
  const int M = a.M, M1 = a.M + 1, tid = threadIdx.x;
  float* stage = reinterpret_cast<float*>(hc_bwd_smem);
  float* zres = stage + hc_bwd_stage_floats<JPT>(M);  // [32][M+1]: w X_r (and |X_r|^2)
  const int64_t r0 = int64_t(blockIdx.x) * kRows;
  project_tile<T, JPT>(x, a.R, a.C, a.xvec, a.w, M, a.wvec, r0, 0, a.C, stage, zres);
  // The projection is done with the stage area: reuse it for the input-gradient pass.
  float* ws = stage;              // [M][kDxCols]
  float* gs = ws + M * kDxCols;   // [M][32]: rinv dl, transposed
  float* dls = gs + M * kRows;    // [32][M+1]: dl
  float* kxs = dls + kRows * M1;  // [32]
  for (int i = tid; i < kRows * M; i += kThreads) {
    const int row = i / M, k = i % M;
    const int64_t r = r0 + row;
    float dl = 0.f, g = 0.f;
    if (r < a.R) {
      dl = hc_dlogit(a, r, k);
      g = a.rinv[r] * dl;
      a.dlogits.set(r * M + k, dl);
    }
    dls[row * M1 + k] = dl;
    gs[k * kRows + row] = g;
  }
  __syncthreads();
  if (tid < kRows) {
    const int64_t r = r0 + tid;
    float kx = 0.f;
    if (r < a.R) {
      float dot = 0.f;  // dl . (w X_r) = (w^T dl) . X_r
      for (int k = 0; k < M; ++k) dot += dls[tid * M1 + k] * zres[tid * M1 + k];
      const float ri = a.rinv[r];
      kx = -dot * ri * ri * ri / float(a.C);
    }
    kxs[tid] = kx;
  }
  dx_tile<T>(dx, x, a.R, a.C, a.vec4, a.w, M, r0, 0, a.C, gs, kxs, ws);
}

struct HcG {
  FPtr dl, rinv;
  int M;
  __device__ __forceinline__ float operator()(int64_t r, int k) const { return rinv[r] * dl[r * M + k]; }
};

// One block per output entry: q = 0, 1, 2: dscale; 3 + i: dstatic_pre[i]; 3 + n + i:
// dstatic_post[i]; 3 + 2n + (j n + i): dstatic_res[j, i]. Fixed-order block sums over tokens.
__global__ void hc_param_grads(FPtr dscale, FPtr dspre, FPtr dspost, FPtr dsres, FPtr dh_pre,
                               FPtr dh_post, FPtr dh_res, FPtr u, int64_t N, int n) {
  __shared__ float scratch[32];
  const int q = blockIdx.x, M = n + 2;
  float s = 0.f;
  for (int64_t t = threadIdx.x; t < N; t += blockDim.x) {
    if (q == 0) {
      for (int i = 0; i < n; ++i) s += dh_pre[t * n + i] * u[(t * n + i) * M];
    } else if (q == 1) {
      for (int i = 0; i < n; ++i) s += dh_post[t * n + i] * u[(t * n + i) * M + 1];
    } else if (q == 2) {
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) s += dh_res[t * n * n + j * n + i] * u[(t * n + i) * M + 2 + j];
    } else if (q < 3 + n) {
      s += dh_pre[t * n + q - 3];
    } else if (q < 3 + 2 * n) {
      s += dh_post[t * n + q - 3 - n];
    } else {
      s += dh_res[t * n * n + q - 3 - 2 * n];
    }
  }
  s = block_sum(s, scratch);
  if (threadIdx.x != 0) return;
  if (q < 3) dscale.add(q, s);
  else if (q < 3 + n) dspre.add(q - 3, s);
  else if (q < 3 + 2 * n) dspost.add(q - 3 - n, s);
  else dsres.add(q - 3 - 2 * n, s);
}

// f(std::integral_constant<int, JPT>) for the outputs per lane of M = n + 2 <= 10.
template <typename F> void dispatch_jpt(int64_t M, F&& f) {
  switch (proj_jpt(M)) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 3>{}); break;
  }
}
}  // namespace

void hc_coeffs_forward(Tensor h_pre, Tensor h_post, Tensor h_res, Tensor rinv, Tensor u, Tensor x,
                       Tensor w, Tensor scale, Tensor static_pre, Tensor static_post,
                       Tensor static_res, float eps, Stream s) {
  const char* op = "hc_coeffs_forward";
  check_floats(op, {{"h_pre", h_pre}, {"h_post", h_post}, {"h_res", h_res}, {"rinv", rinv},
                    {"u", u}, {"x", x}, {"w", w}, {"scale", scale}, {"static_pre", static_pre},
                    {"static_post", static_post}, {"static_res", static_res}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C, M = n + 2, R = N * n;
  expect_shapes(op, kX, d,
                {{"w", w, {M, C}, "[n+2, C]"},
                 {"scale", scale, {3}, "[3]"},
                 {"static_pre", static_pre, {n}, "[n]"},
                 {"static_post", static_post, {n}, "[n]"},
                 {"static_res", static_res, {n, n}, "[n, n]"},
                 {"h_pre", h_pre, {N, n}, "[N, n]"},
                 {"h_post", h_post, {N, n}, "[N, n]"},
                 {"h_res", h_res, {N, n, n}, "[N, n, n]"},
                 {"rinv", rinv, {N, n}, "[N, n]"},
                 {"u", u, {N, n, M}, "[N, n, n+2]"}});
  if (N == 0) return;
  const HcFwd a{fptr(h_pre), fptr(h_post), fptr(h_res), fptr(rinv), fptr(u), fptr(w), fptr(scale),
                fptr(static_pre), fptr(static_post), fptr(static_res), R, C, int(n), int(M), eps,
                C % kPack == 0 && aligned16({x.data}), C % kPack == 0 && aligned16({w.data})};
  dispatch_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_jpt(M, [&](auto jpt) {
      constexpr int JPT = decltype(jpt)::value;
      const size_t smem = sizeof(float) * (proj_stage_floats<JPT>() + kRows * (M + 1) + kRows);
      allow_smem(hc_fwd_kernel<T, JPT>, smem);
      hc_fwd_kernel<T, JPT><<<ceil_div(R, kRows), kThreads, smem, stream_of(s)>>>(
          a, static_cast<const T*>(x.data));
      BK_CUDA_CHECK_LAUNCH();
    });
  });
}

void hc_coeffs_backward_input(Tensor dx, Tensor dlogits, Tensor dh_pre, Tensor dh_post,
                              Tensor dh_res, Tensor x, Tensor w, Tensor scale, Tensor rinv,
                              Tensor u, Stream s) {
  const char* op = "hc_coeffs_backward_input";
  check_floats(op, {{"dlogits", dlogits}, {"dh_pre", dh_pre}, {"dh_post", dh_post},
                    {"dh_res", dh_res}, {"w", w}, {"scale", scale}, {"rinv", rinv}, {"u", u}});
  const DType dt = act_dtype(op, {{"x", x}, {"dx", dx}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C, M = n + 2, R = N * n;
  expect_shapes(op, kX, d,
                {{"w", w, {M, C}, "[n+2, C]"},
                 {"scale", scale, {3}, "[3]"},
                 {"dx", dx, x.shape, "[N, n, C]"},
                 {"dlogits", dlogits, {N, n, M}, "[N, n, n+2]"},
                 {"dh_pre", dh_pre, {N, n}, "[N, n]"},
                 {"dh_post", dh_post, {N, n}, "[N, n]"},
                 {"dh_res", dh_res, {N, n, n}, "[N, n, n]"},
                 {"rinv", rinv, {N, n}, "[N, n]"},
                 {"u", u, {N, n, M}, "[N, n, n+2]"}});
  if (N == 0) return;
  const HcBwd a{fptr(dlogits), fptr(dh_pre), fptr(dh_post), fptr(dh_res), fptr(w), fptr(scale),
                fptr(rinv), fptr(u), R, C, int(n), int(M),
                C % kPack == 0 && aligned16({x.data}), C % kPack == 0 && aligned16({w.data}),
                C % 4 == 0 && aligned16({x.data, dx.data})};
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_jpt(M, [&](auto jpt) {
      constexpr int JPT = decltype(jpt)::value;
      const size_t smem = sizeof(float) * (hc_bwd_stage_floats<JPT>(int(M)) + kRows * (M + 1));
      allow_smem(hc_bwd_input_kernel<T, JPT>, smem);
      hc_bwd_input_kernel<T, JPT><<<ceil_div(R, kRows), kThreads, smem, stream_of(s)>>>(
          a, static_cast<T*>(dx.data), static_cast<const T*>(x.data));
      BK_CUDA_CHECK_LAUNCH();
    });
  });
}

void hc_coeffs_backward_weight(Tensor dw, Tensor dscale, Tensor dstatic_pre, Tensor dstatic_post,
                               Tensor dstatic_res, Tensor dlogits, Tensor dh_pre, Tensor dh_post,
                               Tensor dh_res, Tensor x, Tensor rinv, Tensor u, Stream s) {
  const char* op = "hc_coeffs_backward_weight";
  check_floats(op, {{"dw", dw}, {"dscale", dscale}, {"dstatic_pre", dstatic_pre},
                    {"dstatic_post", dstatic_post}, {"dstatic_res", dstatic_res},
                    {"dlogits", dlogits}, {"dh_pre", dh_pre}, {"dh_post", dh_post},
                    {"dh_res", dh_res}, {"x", x}, {"rinv", rinv}, {"u", u}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C, M = n + 2, R = N * n;
  expect_shapes(op, kX, d,
                {{"dw", dw, {M, C}, "[n+2, C]"},
                 {"dscale", dscale, {3}, "[3]"},
                 {"dstatic_pre", dstatic_pre, {n}, "[n]"},
                 {"dstatic_post", dstatic_post, {n}, "[n]"},
                 {"dstatic_res", dstatic_res, {n, n}, "[n, n]"},
                 {"dlogits", dlogits, {N, n, M}, "[N, n, n+2]"},
                 {"dh_pre", dh_pre, {N, n}, "[N, n]"},
                 {"dh_post", dh_post, {N, n}, "[N, n]"},
                 {"dh_res", dh_res, {N, n, n}, "[N, n, n]"},
                 {"rinv", rinv, {N, n}, "[N, n]"},
                 {"u", u, {N, n, M}, "[N, n, n+2]"}});
  if (N == 0) return;
  const bool vec4 = C % 4 == 0 && aligned16({x.data});
  dispatch_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_wgrad<T>(fptr(dw), HcG{fptr(dlogits), fptr(rinv), int(M)},
                    static_cast<const T*>(x.data), R, C, int(M), vec4, s);
  });
  hc_param_grads<<<unsigned(3 + 2 * n + n * n), 256, 0, stream_of(s)>>>(
      fptr(dscale), fptr(dstatic_pre), fptr(dstatic_post), fptr(dstatic_res), fptr(dh_pre),
      fptr(dh_post), fptr(dh_res), fptr(u), N, int(n));
  BK_CUDA_CHECK_LAUNCH();
}

}  // namespace bk::cuda
