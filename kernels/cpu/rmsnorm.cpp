// RMSNorm over the last dim: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
#include <cmath>

#include "kernels/cpu/common.h"

namespace bk::cpu {

namespace {
constexpr const char* kRule = "x/y/dx/dy[N,C], w/dw[C], rstd[N]";

// x is [N,C], the other row-wise operands have its shape, rstd is [N], the weight (grad) is [C].
bool shapes_ok(const Tensor& x, std::initializer_list<const Tensor*> like_x, const Tensor& rstd,
               const Tensor& w) {
  bool ok = x.ndim() == 2 && is_shape(rstd, {x.size(0)}) && is_shape(w, {x.size(1)});
  for (const Tensor* t : like_x) ok = ok && t->shape == x.shape;
  return ok;
}
}  // namespace

void rmsnorm_forward(Tensor y, Tensor rstd, Tensor x, Tensor w, float eps, Stream) {
  const char* op = "rmsnorm_forward";
  const DType dt = float_dtype(op, {{"y", y}, {"rstd", rstd}, {"x", x}, {"w", w}});
  check_shapes(op, shapes_ok(x, {&y}, rstd, w),
               kRule, {{"y", y}, {"rstd", rstd}, {"x", x}, {"w", w}});
  const int64_t N = x.size(0), C = x.size(1);
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *pw = w.ptr<T>();
    T *py = y.ptr<T>(), *pr = rstd.ptr<T>();
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * C;
      const T r = T(1) / std::sqrt(dot(xr, xr, C) / T(C) + T(eps));
      T* yr = py + n * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * r * pw[c];
      pr[n] = r;
    }
  });
}

// With xhat = x * rstd and g = dy * w: dx = rstd * (g - xhat * mean(g * xhat)).
void rmsnorm_backward_input(Tensor dx, Tensor dy, Tensor x, Tensor w, Tensor rstd, Stream) {
  const char* op = "rmsnorm_backward_input";
  const DType dt = float_dtype(op, {{"dx", dx}, {"dy", dy}, {"x", x}, {"w", w}, {"rstd", rstd}});
  check_shapes(op, shapes_ok(x, {&dx, &dy}, rstd, w),
               kRule, {{"dx", dx}, {"dy", dy}, {"x", x}, {"w", w}, {"rstd", rstd}});
  const int64_t N = x.size(0), C = x.size(1);
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *pw = w.ptr<T>(), *pdy = dy.ptr<T>(), *pr = rstd.ptr<T>();
    T* pdx = dx.ptr<T>();
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      const T *xr = px + n * C, *gr = pdy + n * C;
      const T r = pr[n];
      T gx = 0;  // sum_c g_c x_c
#pragma omp simd reduction(+ : gx)
      for (int64_t c = 0; c < C; ++c) gx += gr[c] * pw[c] * xr[c];
      const T k = gx * r * r / T(C);  // mean(g * xhat) / rstd
      T* dxr = pdx + n * C;
      for (int64_t c = 0; c < C; ++c) dxr[c] = r * (gr[c] * pw[c] - xr[c] * k);
    }
  });
}

// dw[c] += sum_n dy[n,c] * x[n,c] * rstd[n]
void rmsnorm_backward_weight(Tensor dw, Tensor dy, Tensor x, Tensor rstd, Stream) {
  const char* op = "rmsnorm_backward_weight";
  const DType dt = float_dtype(op, {{"dw", dw}, {"dy", dy}, {"x", x}, {"rstd", rstd}});
  check_shapes(op, shapes_ok(x, {&dy}, rstd, dw),
               kRule, {{"dw", dw}, {"dy", dy}, {"x", x}, {"rstd", rstd}});
  const int64_t N = x.size(0), C = x.size(1);
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *pdy = dy.ptr<T>(), *pr = rstd.ptr<T>();
    T* pdw = dw.ptr<T>();
    for_column_blocks(C, N, [&](int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; ++n) {
        const T *xr = px + n * C, *gr = pdy + n * C;
        for (int64_t c = c0; c < c1; ++c) pdw[c] += gr[c] * xr[c] * pr[n];
      }
    });
  });
}

}  // namespace bk::cpu
