// Applying connector coefficients to the stream state X [N, n, C] (docs/mhc.md, "Kernels"):
//   pre:       y = sum_i h_pre[i] X_i;            dX_i = h_pre[i] dy,  dh_pre[i] = dy . X_i
//   post_res:  out_i = sum_j h_res[i,j] X_j + h_post[i] f;
//              dX_j = sum_i h_res[i,j] dout_i,  df = sum_i h_post[i] dout_i,
//              dh_res[i,j] = dout_i . X_j,  dh_post[i] = dout_i . f
//   expand:    y_i = x;                           dx = sum_i dy_i (in stream order)
// OpenMP over tokens; the loops over C vectorise, dot products use the fixed-order `dot`.
// post_res may run in place (out = x forward, dx = dout backward): the token's input is
// copied to a per-thread buffer first. Other overlaps between operands are not supported.
#include <cstring>
#include <vector>

#include "kernels/cpu/connector_common.h"

namespace bk::cpu {

namespace {
constexpr const char* kX = "x";

// a and b are the same memory (an in-place call), else must not overlap at all.
bool in_place(const char* op, const char* an, const Tensor& a, const char* bn, const Tensor& b) {
  const char *pa = static_cast<const char*>(a.data), *pb = static_cast<const char*>(b.data);
  if (pa == pb && a.nbytes() > 0) return true;
  BK_CHECK(pa + a.nbytes() <= pb || pb + b.nbytes() <= pa || a.nbytes() == 0 || b.nbytes() == 0,
           "{}: {} and {} overlap partially; pass the same tensor (in place) or disjoint ones", op,
           an, bn);
  return false;
}
}  // namespace

void stream_pre_forward(Tensor y, Tensor x, Tensor h_pre, Stream) {
  const char* op = "stream_pre_forward";
  const DType dt = float_dtype(op, {{"y", y}, {"x", x}, {"h_pre", h_pre}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shapes(op, kX, d, {{"y", y, {N, C}, "[N, C]"}, {"h_pre", h_pre, {N, n}, "[N, n]"}});
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *ph = h_pre.ptr<T>();
    T* py = y.ptr<T>();
#pragma omp parallel for schedule(static) if (N * n * C >= kParallelMin)
    for (int64_t t = 0; t < N; ++t) {
      const T *xt = px + t * n * C, *h = ph + t * n;
      T* yt = py + t * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yt[c] = h[0] * xt[c];
      for (int64_t i = 1; i < n; ++i) add_scaled(yt, h[i], xt + i * C, C);
    }
  });
}

void stream_pre_backward(Tensor dx, Tensor dh_pre, Tensor dy, Tensor x, Tensor h_pre, Stream) {
  const char* op = "stream_pre_backward";
  const DType dt = float_dtype(
      op, {{"dx", dx}, {"dh_pre", dh_pre}, {"dy", dy}, {"x", x}, {"h_pre", h_pre}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shapes(op, kX, d,
                {{"dx", dx, x.shape, "[N, n, C]"},
                 {"dh_pre", dh_pre, {N, n}, "[N, n]"},
                 {"dy", dy, {N, C}, "[N, C]"},
                 {"h_pre", h_pre, {N, n}, "[N, n]"}});
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *ph = h_pre.ptr<T>(), *pdy = dy.ptr<T>();
    T *pdx = dx.ptr<T>(), *pdh = dh_pre.ptr<T>();
#pragma omp parallel for schedule(static) if (N * n * C >= kParallelMin)
    for (int64_t t = 0; t < N; ++t) {
      const T *xt = px + t * n * C, *g = pdy + t * C;
      for (int64_t i = 0; i < n; ++i) {
        pdh[t * n + i] = dot(g, xt + i * C, C);
        const T h = ph[t * n + i];
        T* dxi = pdx + (t * n + i) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dxi[c] = h * g[c];
      }
    }
  });
}

void stream_post_res_forward(Tensor out, Tensor x, Tensor f, Tensor h_res, Tensor h_post,
                             Stream) {
  const char* op = "stream_post_res_forward";
  const DType dt = float_dtype(
      op, {{"out", out}, {"x", x}, {"f", f}, {"h_res", h_res}, {"h_post", h_post}});
  const StreamDims d = stream_dims(op, kX, x);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shapes(op, kX, d,
                {{"out", out, x.shape, "[N, n, C]"},
                 {"f", f, {N, C}, "[N, C]"},
                 {"h_res", h_res, {N, n, n}, "[N, n, n]"},
                 {"h_post", h_post, {N, n}, "[N, n]"}});
  const bool inplace = in_place(op, "out", out, "x", x);
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *pf = f.ptr<T>(), *phr = h_res.ptr<T>(), *php = h_post.ptr<T>();
    T* po = out.ptr<T>();
#pragma omp parallel if (N * n * C >= kParallelMin)
    {
      std::vector<T> copy(inplace ? size_t(n * C) : 0);
#pragma omp for schedule(static)
      for (int64_t t = 0; t < N; ++t) {
        const T* xt = px + t * n * C;
        if (inplace) xt = static_cast<const T*>(std::memcpy(copy.data(), xt, sizeof(T) * n * C));
        const T *ft = pf + t * C, *hr = phr + t * n * n;
        for (int64_t i = 0; i < n; ++i) {
          T* o = po + (t * n + i) * C;
          const T hp = php[t * n + i];
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) o[c] = hp * ft[c];
          for (int64_t j = 0; j < n; ++j) add_scaled(o, hr[i * n + j], xt + j * C, C);
        }
      }
    }
  });
}

void stream_post_res_backward(Tensor dx, Tensor df, Tensor dh_res, Tensor dh_post, Tensor dout,
                              Tensor x, Tensor f, Tensor h_res, Tensor h_post, Stream) {
  const char* op = "stream_post_res_backward";
  const DType dt = float_dtype(op, {{"dx", dx}, {"df", df}, {"dh_res", dh_res},
                                    {"dh_post", dh_post}, {"dout", dout}, {"x", x}, {"f", f},
                                    {"h_res", h_res}, {"h_post", h_post}});
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
  const bool inplace = in_place(op, "dx", dx, "dout", dout);
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *pf = f.ptr<T>(), *phr = h_res.ptr<T>(), *php = h_post.ptr<T>();
    const T* pg = dout.ptr<T>();
    T *pdx = dx.ptr<T>(), *pdf = df.ptr<T>(), *pdhr = dh_res.ptr<T>(), *pdhp = dh_post.ptr<T>();
#pragma omp parallel if (N * n * C >= kParallelMin)
    {
      std::vector<T> copy(inplace ? size_t(n * C) : 0);
#pragma omp for schedule(static)
      for (int64_t t = 0; t < N; ++t) {
        const T *xt = px + t * n * C, *ft = pf + t * C, *hr = phr + t * n * n, *hp = php + t * n;
        const T* g = pg + t * n * C;
        if (inplace) g = static_cast<const T*>(std::memcpy(copy.data(), g, sizeof(T) * n * C));
        for (int64_t i = 0; i < n; ++i) {
          const T* gi = g + i * C;
          for (int64_t j = 0; j < n; ++j) pdhr[t * n * n + i * n + j] = dot(gi, xt + j * C, C);
          pdhp[t * n + i] = dot(gi, ft, C);
        }
        T* dft = pdf + t * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dft[c] = hp[0] * g[c];
        for (int64_t i = 1; i < n; ++i) add_scaled(dft, hp[i], g + i * C, C);
        for (int64_t j = 0; j < n; ++j) {
          T* dxj = pdx + (t * n + j) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dxj[c] = hr[j] * g[c];  // i = 0: h_res[0, j]
          for (int64_t i = 1; i < n; ++i) add_scaled(dxj, hr[i * n + j], g + i * C, C);
        }
      }
    }
  });
}

void stream_expand_forward(Tensor y, Tensor x, Stream) {
  const char* op = "stream_expand_forward";
  const DType dt = float_dtype(op, {{"y", y}, {"x", x}});
  const StreamDims d = stream_dims(op, "y", y);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shape(op, "x", x, {N, C}, "[N, C]", "y", d);
  dispatch(dt, [&]<typename T>() {
    const T* px = x.ptr<T>();
    T* py = y.ptr<T>();
#pragma omp parallel for schedule(static) if (N * n * C >= kParallelMin)
    for (int64_t t = 0; t < N; ++t)
      for (int64_t i = 0; i < n; ++i) std::memcpy(py + (t * n + i) * C, px + t * C, sizeof(T) * C);
  });
}

void stream_expand_backward(Tensor dx, Tensor dy, Stream) {
  const char* op = "stream_expand_backward";
  const DType dt = float_dtype(op, {{"dx", dx}, {"dy", dy}});
  const StreamDims d = stream_dims(op, "dy", dy);
  const int64_t N = d.N, n = d.n, C = d.C;
  expect_shape(op, "dx", dx, {N, C}, "[N, C]", "dy", d);
  dispatch(dt, [&]<typename T>() {
    const T* pdy = dy.ptr<T>();
    T* pdx = dx.ptr<T>();
#pragma omp parallel for schedule(static) if (N * n * C >= kParallelMin)
    for (int64_t t = 0; t < N; ++t) {
      const T* g = pdy + t * n * C;
      T* o = pdx + t * C;
      std::memcpy(o, g, sizeof(T) * C);
      for (int64_t i = 1; i < n; ++i) {
        const T* gi = g + i * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] += gi[c];
      }
    }
  });
}

}  // namespace bk::cpu
