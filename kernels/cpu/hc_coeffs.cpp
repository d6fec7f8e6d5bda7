// Hyper-Connections coefficients (docs/mhc.md, "Kernels"). Per token and stream i (a row of
// width C of X [N, n, C]; the N*n stream rows are independent):
//   rinv_i = 1/sqrt(|X_i|^2/C + eps),  xn_i = rinv_i X_i,  u_i = tanh(w xn_i)  (w [n+2, C])
//   h_pre[i] = scale[0] u_i[0] + static_pre[i],  h_post[i] = scale[1] u_i[1] + static_post[i],
//   h_res[j,i] = scale[2] u_i[2+j] + static_res[j,i]   (stream i's term fills column i).
// w X_i is a GEMM over blocks of stream rows (rinv applied after the product); u is written
// there first as the raw product and turned into tanh in place (tanh_fast: vectorised in f32).
//
// Backward (a_i = w xn_i, the pre-tanh values; dlogits = d loss / d a):
//   dlogits_i[0] = scale[0] dh_pre[i] (1 - u_i[0]^2),  dlogits_i[1] = scale[1] dh_post[i] (...),
//   dlogits_i[2+j] = scale[2] dh_res[j,i] (1 - u_i[2+j]^2);
//   dxn_i = w^T dlogits_i,  dX_i = rinv_i (dxn_i - xn_i (dxn_i . xn_i) / C);
//   dw += sum_{t,i} dlogits_i^T xn_i  (= (rinv_i dlogits_i)^T X_i, no normalised copy of X),
//   dscale[g] += sum dh_g u_g,  dstatic_* += sum_t dh_*.
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/connector_common.h"

namespace bk::cpu {

namespace {
constexpr const char* kX = "x";
}  // namespace

void hc_coeffs_forward(Tensor h_pre, Tensor h_post, Tensor h_res, Tensor rinv, Tensor u, Tensor x,
                       Tensor w, Tensor scale, Tensor static_pre, Tensor static_post,
                       Tensor static_res, float eps, Stream) {
  const char* op = "hc_coeffs_forward";
  const DType dt = float_dtype(
      op, {{"h_pre", h_pre}, {"h_post", h_post}, {"h_res", h_res}, {"rinv", rinv}, {"u", u},
           {"x", x}, {"w", w}, {"scale", scale}, {"static_pre", static_pre},
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
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *pw = w.ptr<T>(), *ps = scale.ptr<T>();
    const T *sp = static_pre.ptr<T>(), *so = static_post.ptr<T>(), *sr = static_res.ptr<T>();
    T *ppre = h_pre.ptr<T>(), *ppost = h_post.ptr<T>(), *pres = h_res.ptr<T>();
    T *pr = rinv.ptr<T>(), *pu = u.ptr<T>();
    gemm_row_blocks(R, R * M * C, [&](int64_t r0, int64_t r1) {
      gemm<T>(false, true, r1 - r0, M, C, T(1), px + r0 * C, C, pw, C, T(0), pu + r0 * M, M);
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = px + r * C;
        const T ri = T(1) / std::sqrt(dot(xr, xr, C) / T(C) + T(eps));
        pr[r] = ri;
        for (int64_t k = 0; k < M; ++k) pu[r * M + k] *= ri;
      }
      T* ub = pu + r0 * M;
#pragma omp simd
      for (int64_t k = 0; k < (r1 - r0) * M; ++k) ub[k] = tanh_fast(ub[k]);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t t = r / n, i = r % n;
        const T* ur = pu + r * M;
        ppre[r] = ps[0] * ur[0] + sp[i];
        ppost[r] = ps[1] * ur[1] + so[i];
        for (int64_t j = 0; j < n; ++j)
          pres[t * n * n + j * n + i] = ps[2] * ur[2 + j] + sr[j * n + i];
      }
    });
  });
}

void hc_coeffs_backward_input(Tensor dx, Tensor dlogits, Tensor dh_pre, Tensor dh_post,
                              Tensor dh_res, Tensor x, Tensor w, Tensor scale, Tensor rinv,
                              Tensor u, Stream) {
  const char* op = "hc_coeffs_backward_input";
  const DType dt = float_dtype(
      op, {{"dx", dx}, {"dlogits", dlogits}, {"dh_pre", dh_pre}, {"dh_post", dh_post},
           {"dh_res", dh_res}, {"x", x}, {"w", w}, {"scale", scale}, {"rinv", rinv}, {"u", u}});
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
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *pw = w.ptr<T>(), *ps = scale.ptr<T>(), *pr = rinv.ptr<T>();
    const T *pu = u.ptr<T>(), *dpre = dh_pre.ptr<T>(), *dpost = dh_post.ptr<T>();
    const T* dres = dh_res.ptr<T>();
    T *pdx = dx.ptr<T>(), *pdl = dlogits.ptr<T>();
    gemm_row_blocks(R, R * M * C, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t t = r / n, i = r % n;
        const T* ur = pu + r * M;
        T* dl = pdl + r * M;
        dl[0] = ps[0] * dpre[r] * (T(1) - ur[0] * ur[0]);
        dl[1] = ps[1] * dpost[r] * (T(1) - ur[1] * ur[1]);
        for (int64_t j = 0; j < n; ++j)
          dl[2 + j] = ps[2] * dres[t * n * n + j * n + i] * (T(1) - ur[2 + j] * ur[2 + j]);
      }
      // dxn = dlogits w, written into dx, then dX = rinv dxn - X rinv^3 (dxn . X) / C.
      gemm<T>(false, false, r1 - r0, C, M, T(1), pdl + r0 * M, M, pw, C, T(0), pdx + r0 * C, C);
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = px + r * C;
        T* g = pdx + r * C;
        const T ri = pr[r], k = -dot(g, xr, C) * ri * ri * ri / T(C);
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) g[c] = ri * g[c] + k * xr[c];
      }
    });
  });
}

void hc_coeffs_backward_weight(Tensor dw, Tensor dscale, Tensor dstatic_pre, Tensor dstatic_post,
                               Tensor dstatic_res, Tensor dlogits, Tensor dh_pre, Tensor dh_post,
                               Tensor dh_res, Tensor x, Tensor rinv, Tensor u, Stream) {
  const char* op = "hc_coeffs_backward_weight";
  const DType dt = float_dtype(
      op, {{"dw", dw}, {"dscale", dscale}, {"dstatic_pre", dstatic_pre},
           {"dstatic_post", dstatic_post}, {"dstatic_res", dstatic_res}, {"dlogits", dlogits},
           {"dh_pre", dh_pre}, {"dh_post", dh_post}, {"dh_res", dh_res}, {"x", x},
           {"rinv", rinv}, {"u", u}});
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
  dispatch(dt, [&]<typename T>() {
    const T *px = x.ptr<T>(), *pr = rinv.ptr<T>(), *pu = u.ptr<T>(), *pdl = dlogits.ptr<T>();
    const T *dpre = dh_pre.ptr<T>(), *dpost = dh_post.ptr<T>(), *dres = dh_res.ptr<T>();
    // g = rinv dlogits (the GEMM's left operand) and the small sums, in token order.
    std::vector<T> g(size_t(R * M)), spre(size_t(n), T(0)), spost(size_t(n), T(0)),
        sres(size_t(n * n), T(0));
    T ss[3] = {0, 0, 0};
    for (int64_t t = 0; t < N; ++t)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t r = t * n + i;
        for (int64_t k = 0; k < M; ++k) g[size_t(r * M + k)] = pr[r] * pdl[r * M + k];
        const T* ur = pu + r * M;
        ss[0] += dpre[r] * ur[0];
        ss[1] += dpost[r] * ur[1];
        spre[size_t(i)] += dpre[r];
        spost[size_t(i)] += dpost[r];
        for (int64_t j = 0; j < n; ++j) {
          const T dr = dres[t * n * n + j * n + i];
          ss[2] += dr * ur[2 + j];
          sres[size_t(j * n + i)] += dr;
        }
      }
    T *pds = dscale.ptr<T>(), *pdsp = dstatic_pre.ptr<T>(), *pdso = dstatic_post.ptr<T>();
    T* pdsr = dstatic_res.ptr<T>();
    for (int k = 0; k < 3; ++k) pds[k] += ss[k];
    for (int64_t i = 0; i < n; ++i) pdsp[i] += spre[size_t(i)], pdso[i] += spost[size_t(i)];
    for (int64_t k = 0; k < n * n; ++k) pdsr[k] += sres[size_t(k)];
    accumulate_gt_x(dw.ptr<T>(), g.data(), px, R, M, C);
  });
}

}  // namespace bk::cpu
