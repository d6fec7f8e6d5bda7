// Applying connector coefficients to the stream state X [N, n, C] on the GPU (docs/mhc.md
// "Kernels"; the CPU reference is kernels/cpu/stream_apply.cpp):
//   pre:       y = sum_i h_pre[i] X_i;            dX_i = h_pre[i] dy,  dh_pre[i] = dy . X_i
//   post_res:  out_i = sum_j h_res[i,j] X_j + h_post[i] f;
//              dX_j = sum_i h_res[i,j] dout_i,  df = sum_i h_post[i] dout_i,
//              dh_res[i,j] = dout_i . X_j,  dh_post[i] = dout_i . f
//   expand:    y_i = x;                           dx = sum_i dy_i (in stream order)
//
// One warp per token (8 per block): the token's coefficients are loaded once into registers,
// then each lane walks the columns in packs of 8 (16-byte loads in bf16), so every element of
// X, f and the gradients moves once; the per-token dot products (dh_*) are per-lane sums in
// column order closed by a warp butterfly: a fixed order, no atomics. Sums over streams run in
// stream order, as on the CPU. post_res is templated on n (its n x n block lives in
// registers); for n > 4 its lanes take 4 columns at a time to stay within the register file.
//
// Bytes per token, bf16 streams and f32 coefficients (n streams, width C):
//   pre forward          reads 2 nC + 4 n,            writes 2 C
//   pre backward         reads 2 C + 2 nC + 4 n,      writes 2 nC + 4 n
//   post_res forward     reads 2 (n+1) C + 4 (n^2+n), writes 2 nC
//   post_res backward    reads 2 (2n+1) C + 4 (n^2+n), writes 2 (n+1) C + 4 (n^2+n)
//   expand forward       reads 2 C,                   writes 2 nC
//   expand backward      reads 2 nC,                  writes 2 C
//
// post_res may run in place (out = x forward, dx = dout backward): a lane reads all of its
// columns' inputs before writing them. Dtypes: the streams (x, f, y, out and their gradients)
// share T; coefficients and their gradients are f32 or bf16 each.
#include <type_traits>

#include "kernels/cuda/connector_common.cuh"

namespace bk::cuda {

namespace {
using conn::kMaxStreams;
using conn::StreamDims;
using conn::expect_shapes;
using conn::stream_dims;

constexpr const char* kX = "x";
constexpr int kWarps = 8;
constexpr int kMaxN = int(kMaxStreams);

__device__ __forceinline__ int64_t warp_token() {
  return int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
}

// W consecutive elements at column c of a row of length C (W = 8: load_pack, 4: load_quad).
template <int W, typename T>
__device__ __forceinline__ void ld(const T* row, int64_t c, int64_t C, bool vec, float (&v)[W]) {
  if constexpr (W == 8) load_pack(row, c, C, vec, v);
  else load_quad(row, c, C, vec, v);
}
template <int W, typename T>
__device__ __forceinline__ void st(T* row, int64_t c, int64_t C, bool vec, const float (&v)[W]) {
  if constexpr (W == 8) store_pack(row, c, C, vec, v);
  else store_quad(row, c, C, vec, v);
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    pre_fwd_kernel(T* __restrict__ y, const T* __restrict__ x, FPtr h, int64_t N, int n, int64_t C,
                   bool vec) {
  const int64_t t = warp_token();
  if (t >= N) return;
  const int lane = threadIdx.x & 31;
  float hv[kMaxN];
#pragma unroll
  for (int i = 0; i < kMaxN; ++i) hv[i] = i < n ? h[t * n + i] : 0.f;
  const T* xt = x + t * n * C;
  for (int64_t c = lane * kPack; c < C; c += 32 * kPack) {
    float acc[kPack], v[kPack];
    load_pack(xt, c, C, vec, v);
#pragma unroll
    for (int e = 0; e < kPack; ++e) acc[e] = hv[0] * v[e];
#pragma unroll
    for (int i = 1; i < kMaxN; ++i) {
      if (i >= n) break;
      load_pack(xt + i * C, c, C, vec, v);
#pragma unroll
      for (int e = 0; e < kPack; ++e) acc[e] = fmaf(hv[i], v[e], acc[e]);
    }
    store_pack(y + t * C, c, C, vec, acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    pre_bwd_kernel(T* __restrict__ dx, FPtr dh, const T* __restrict__ dy, const T* __restrict__ x,
                   FPtr h, int64_t N, int n, int64_t C, bool vec) {
  const int64_t t = warp_token();
  if (t >= N) return;
  const int lane = threadIdx.x & 31;
  float hv[kMaxN], acc[kMaxN];
#pragma unroll
  for (int i = 0; i < kMaxN; ++i) {
    hv[i] = i < n ? h[t * n + i] : 0.f;
    acc[i] = 0.f;
  }
  const T* xt = x + t * n * C;
  T* dxt = dx + t * n * C;
  for (int64_t c = lane * kPack; c < C; c += 32 * kPack) {
    float g[kPack], v[kPack], o[kPack];
    load_pack(dy + t * C, c, C, vec, g);
#pragma unroll
    for (int i = 0; i < kMaxN; ++i) {
      if (i >= n) break;
      load_pack(xt + i * C, c, C, vec, v);
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        acc[i] = fmaf(g[e], v[e], acc[i]);
        o[e] = hv[i] * g[e];
      }
      store_pack(dxt + i * C, c, C, vec, o);
    }
  }
#pragma unroll
  for (int i = 0; i < kMaxN; ++i) {
    if (i >= n) break;
    const float s = warp_sum(acc[i]);
    if (lane == 0) dh.set(t * n + i, s);
  }
}

// out and x may be the same tensor: no __restrict__ on them.
template <typename T, int NS>
__global__ void __launch_bounds__(kWarps * 32)
    post_res_fwd_kernel(T* out, const T* x, const T* __restrict__ f, FPtr hres, FPtr hpost,
                        int64_t N, int64_t C, bool vec) {
  constexpr int W = NS <= 4 ? 8 : 4;
  const int64_t t = warp_token();
  if (t >= N) return;
  const int lane = threadIdx.x & 31;
  float hr[NS * NS], hp[NS];
#pragma unroll
  for (int k = 0; k < NS * NS; ++k) hr[k] = hres[t * NS * NS + k];
#pragma unroll
  for (int i = 0; i < NS; ++i) hp[i] = hpost[t * NS + i];
  const T* xt = x + t * NS * C;
  T* ot = out + t * NS * C;
  for (int64_t c = lane * W; c < C; c += 32 * W) {
    float xv[NS][W], fv[W];
#pragma unroll
    for (int j = 0; j < NS; ++j) ld<W>(xt + j * C, c, C, vec, xv[j]);
    ld<W>(f + t * C, c, C, vec, fv);
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      float o[W];
#pragma unroll
      for (int e = 0; e < W; ++e) o[e] = hp[i] * fv[e];
#pragma unroll
      for (int j = 0; j < NS; ++j)
#pragma unroll
        for (int e = 0; e < W; ++e) o[e] = fmaf(hr[i * NS + j], xv[j][e], o[e]);
      st<W>(ot + i * C, c, C, vec, o);
    }
  }
}

// dx and dout may be the same tensor: no __restrict__ on them.
template <typename T, int NS>
__global__ void __launch_bounds__(kWarps * 32)
    post_res_bwd_kernel(T* dx, T* __restrict__ df, FPtr dhres, FPtr dhpost, const T* dout,
                        const T* __restrict__ x, const T* __restrict__ f, FPtr hres, FPtr hpost,
                        int64_t N, int64_t C, bool vec) {
  constexpr int W = NS <= 4 ? 8 : 4;
  const int64_t t = warp_token();
  if (t >= N) return;
  const int lane = threadIdx.x & 31;
  float hr[NS * NS], hp[NS], ar[NS * NS], ap[NS];
#pragma unroll
  for (int k = 0; k < NS * NS; ++k) {
    hr[k] = hres[t * NS * NS + k];
    ar[k] = 0.f;
  }
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    hp[i] = hpost[t * NS + i];
    ap[i] = 0.f;
  }
  const T* gt = dout + t * NS * C;
  const T* xt = x + t * NS * C;
  T* dxt = dx + t * NS * C;
  for (int64_t c = lane * W; c < C; c += 32 * W) {
    float g[NS][W], xv[NS][W], fv[W], o[W];
#pragma unroll
    for (int i = 0; i < NS; ++i) ld<W>(gt + i * C, c, C, vec, g[i]);
#pragma unroll
    for (int j = 0; j < NS; ++j) ld<W>(xt + j * C, c, C, vec, xv[j]);
    ld<W>(f + t * C, c, C, vec, fv);
#pragma unroll
    for (int i = 0; i < NS; ++i) {
#pragma unroll
      for (int e = 0; e < W; ++e) {
#pragma unroll
        for (int j = 0; j < NS; ++j) ar[i * NS + j] = fmaf(g[i][e], xv[j][e], ar[i * NS + j]);
        ap[i] = fmaf(g[i][e], fv[e], ap[i]);
      }
    }
#pragma unroll
    for (int e = 0; e < W; ++e) o[e] = hp[0] * g[0][e];
#pragma unroll
    for (int i = 1; i < NS; ++i)
#pragma unroll
      for (int e = 0; e < W; ++e) o[e] = fmaf(hp[i], g[i][e], o[e]);
    st<W>(df + t * C, c, C, vec, o);
#pragma unroll
    for (int j = 0; j < NS; ++j) {
#pragma unroll
      for (int e = 0; e < W; ++e) o[e] = hr[j] * g[0][e];  // i = 0: h_res[0, j]
#pragma unroll
      for (int i = 1; i < NS; ++i)
#pragma unroll
        for (int e = 0; e < W; ++e) o[e] = fmaf(hr[i * NS + j], g[i][e], o[e]);
      st<W>(dxt + j * C, c, C, vec, o);
    }
  }
#pragma unroll
  for (int k = 0; k < NS * NS; ++k) {
    const float s = warp_sum(ar[k]);
    if (lane == 0) dhres.set(t * NS * NS + k, s);
  }
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const float s = warp_sum(ap[i]);
    if (lane == 0) dhpost.set(t * NS + i, s);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    expand_fwd_kernel(T* __restrict__ y, const T* __restrict__ x, int64_t N, int n, int64_t C,
                      bool vec) {
  const int64_t t = warp_token();
  if (t >= N) return;
  const int lane = threadIdx.x & 31;
  for (int64_t c = lane * kPack; c < C; c += 32 * kPack) {
    float v[kPack];
    load_pack(x + t * C, c, C, vec, v);
    for (int i = 0; i < n; ++i) store_pack(y + (t * n + i) * C, c, C, vec, v);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    expand_bwd_kernel(T* __restrict__ dx, const T* __restrict__ dy, int64_t N, int n, int64_t C,
                      bool vec) {
  const int64_t t = warp_token();
  if (t >= N) return;
  const int lane = threadIdx.x & 31;
  for (int64_t c = lane * kPack; c < C; c += 32 * kPack) {
    float acc[kPack], v[kPack];
    load_pack(dy + t * n * C, c, C, vec, acc);
    for (int i = 1; i < n; ++i) {
      load_pack(dy + (t * n + i) * C, c, C, vec, v);
#pragma unroll
      for (int e = 0; e < kPack; ++e) acc[e] += v[e];
    }
    store_pack(dx + t * C, c, C, vec, acc);
  }
}

// a and b are the same memory (an in-place call), else must not overlap at all.
bool in_place(const char* op, const char* an, const Tensor& a, const char* bn, const Tensor& b) {
  const char *pa = static_cast<const char*>(a.data), *pb = static_cast<const char*>(b.data);
  if (pa == pb && a.nbytes() > 0) return true;
  BK_CHECK(pa + a.nbytes() <= pb || pb + b.nbytes() <= pa || a.nbytes() == 0 || b.nbytes() == 0,
           "{}: {} and {} overlap partially; pass the same tensor (in place) or disjoint ones", op,
           an, bn);
  return false;
}

// Columns move in packs of W elements: vectorised when C % W == 0 and every base is aligned.
bool vec_ok(int64_t C, int W, std::initializer_list<const void*> ptrs) {
  return C % W == 0 && aligned16(ptrs);
}

template <typename F> void dispatch_n(int64_t n, F&& f) {
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

unsigned blocks_for(int64_t N) { return ceil_div(N, kWarps); }
}  // namespace

void stream_pre_forward(Tensor y, Tensor x, Tensor h_pre, Stream s) {
  const char* op = "stream_pre_forward";
  check_floats(op, {{"h_pre", h_pre}});
  const DType dt = act_dtype(op, {{"y", y}, {"x", x}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shapes(op, kX, d, {{"y", y, {N, C}, "[N, C]"}, {"h_pre", h_pre, {N, n}, "[N, n]"}});
  if (N == 0) return;
  const bool vec = vec_ok(C, kPack, {y.data, x.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    pre_fwd_kernel<T><<<blocks_for(N), kWarps * 32, 0, stream_of(s)>>>(
        static_cast<T*>(y.data), static_cast<const T*>(x.data), fptr(h_pre), N, int(n), C, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void stream_pre_backward(Tensor dx, Tensor dh_pre, Tensor dy, Tensor x, Tensor h_pre, Stream s) {
  const char* op = "stream_pre_backward";
  check_floats(op, {{"dh_pre", dh_pre}, {"h_pre", h_pre}});
  const DType dt = act_dtype(op, {{"dx", dx}, {"dy", dy}, {"x", x}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shapes(op, kX, d,
                {{"dx", dx, x.shape, "[N, n, C]"},
                 {"dh_pre", dh_pre, {N, n}, "[N, n]"},
                 {"dy", dy, {N, C}, "[N, C]"},
                 {"h_pre", h_pre, {N, n}, "[N, n]"}});
  if (N == 0) return;
  const bool vec = vec_ok(C, kPack, {dx.data, dy.data, x.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    pre_bwd_kernel<T><<<blocks_for(N), kWarps * 32, 0, stream_of(s)>>>(
        static_cast<T*>(dx.data), fptr(dh_pre), static_cast<const T*>(dy.data),
        static_cast<const T*>(x.data), fptr(h_pre), N, int(n), C, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void stream_post_res_forward(Tensor out, Tensor x, Tensor f, Tensor h_res, Tensor h_post,
                             Stream s) {
  const char* op = "stream_post_res_forward";
  check_floats(op, {{"h_res", h_res}, {"h_post", h_post}});
  const DType dt = act_dtype(op, {{"out", out}, {"x", x}, {"f", f}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shapes(op, kX, d,
                {{"out", out, x.shape, "[N, n, C]"},
                 {"f", f, {N, C}, "[N, C]"},
                 {"h_res", h_res, {N, n, n}, "[N, n, n]"},
                 {"h_post", h_post, {N, n}, "[N, n]"}});
  in_place(op, "out", out, "x", x);
  if (N == 0) return;
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_n(n, [&](auto ns) {
      constexpr int NS = decltype(ns)::value;
      const bool vec = vec_ok(C, NS <= 4 ? 8 : 4, {out.data, x.data, f.data});
      post_res_fwd_kernel<T, NS><<<blocks_for(N), kWarps * 32, 0, stream_of(s)>>>(
          static_cast<T*>(out.data), static_cast<const T*>(x.data),
          static_cast<const T*>(f.data), fptr(h_res), fptr(h_post), N, C, vec);
      BK_CUDA_CHECK_LAUNCH();
    });
  });
}

void stream_post_res_backward(Tensor dx, Tensor df, Tensor dh_res, Tensor dh_post, Tensor dout,
                              Tensor x, Tensor f, Tensor h_res, Tensor h_post, Stream s) {
  const char* op = "stream_post_res_backward";
  check_floats(op, {{"dh_res", dh_res}, {"dh_post", dh_post}, {"h_res", h_res},
                    {"h_post", h_post}});
  const DType dt = act_dtype(op, {{"dx", dx}, {"df", df}, {"dout", dout}, {"x", x}, {"f", f}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shapes(op, kX, d,
                {{"dx", dx, x.shape, "[N, n, C]"},
                 {"df", df, {N, C}, "[N, C]"},
                 {"dh_res", dh_res, {N, n, n}, "[N, n, n]"},
                 {"dh_post", dh_post, {N, n}, "[N, n]"},
                 {"dout", dout, x.shape, "[N, n, C]"},
                 {"f", f, {N, C}, "[N, C]"},
                 {"h_res", h_res, {N, n, n}, "[N, n, n]"},
                 {"h_post", h_post, {N, n}, "[N, n]"}});
  in_place(op, "dx", dx, "dout", dout);
  if (N == 0) return;
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_n(n, [&](auto ns) {
      constexpr int NS = decltype(ns)::value;
      const bool vec = vec_ok(C, NS <= 4 ? 8 : 4, {dx.data, df.data, dout.data, x.data, f.data});
      post_res_bwd_kernel<T, NS><<<blocks_for(N), kWarps * 32, 0, stream_of(s)>>>(
          static_cast<T*>(dx.data), static_cast<T*>(df.data), fptr(dh_res), fptr(dh_post),
          static_cast<const T*>(dout.data), static_cast<const T*>(x.data),
          static_cast<const T*>(f.data), fptr(h_res), fptr(h_post), N, C, vec);
      BK_CUDA_CHECK_LAUNCH();
    });
  });
}

void stream_expand_forward(Tensor y, Tensor x, Stream s) {
  const char* op = "stream_expand_forward";
  const DType dt = act_dtype(op, {{"y", y}, {"x", x}});
  const StreamDims d = stream_dims(op, "y", y);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shapes(op, "y", d, {{"x", x, {N, C}, "[N, C]"}});
  if (N == 0) return;
  const bool vec = vec_ok(C, kPack, {y.data, x.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    expand_fwd_kernel<T><<<blocks_for(N), kWarps * 32, 0, stream_of(s)>>>(
        static_cast<T*>(y.data), static_cast<const T*>(x.data), N, int(n), C, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void stream_expand_backward(Tensor dx, Tensor dy, Stream s) {
  const char* op = "stream_expand_backward";
  const DType dt = act_dtype(op, {{"dx", dx}, {"dy", dy}});
  const StreamDims d = stream_dims(op, "dy", dy);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shapes(op, "dy", d, {{"dx", dx, {N, C}, "[N, C]"}});
  if (N == 0) return;
  const bool vec = vec_ok(C, kPack, {dx.data, dy.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    expand_bwd_kernel<T><<<blocks_for(N), kWarps * 32, 0, stream_of(s)>>>(
        static_cast<T*>(dx.data), static_cast<const T*>(dy.data), N, int(n), C, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace bk::cuda
