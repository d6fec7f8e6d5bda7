// Shared pieces of the residual-connector kernels (mhc_coeffs, sinkhorn, hc_coeffs,
// stream_apply; docs/mhc.md, "Kernels"): shape checks against the stream state X [N, n, C],
// the column-blocked weight-gradient GEMM, and the small numerics (sigmoid, tanh).
#pragma once
#include <cmath>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/common.h"

namespace bk::cpu {

// n and C of the stream state, and its token count N.
struct StreamDims {
  int64_t N, n, C;
};

// `x` (named `name`) is the stream state [N, n, C] with n, C >= 1.
inline StreamDims stream_dims(const char* op, const char* name, const Tensor& x) {
  BK_CHECK(x.ndim() == 3 && x.size(1) >= 1 && x.size(2) >= 1,
           "{}: {} is {}; expected the stream state [N, n, C] with n >= 1 and C >= 1", op, name,
           x.shape.str());
  return {x.size(0), x.size(1), x.size(2)};
}

// `t` (named `name`) has the shape `want`, which the rule (in words, e.g. "[n*n+2n, n*C]")
// derives from the stream state x's dims d; the message names all of them.
inline void expect_shape(const char* op, const char* name, const Tensor& t, const Shape& want,
                         const char* rule, const char* xname, const StreamDims& d) {
  BK_CHECK(t.shape == want, "{}: {} is {} but must be {} = {} ({} is [N, n, C] = [{}, {}, {}])",
           op, name, t.shape.str(), rule, want.str(), xname, d.N, d.n, d.C);
}

// One operand's expected shape and the rule it follows, in words.
struct ShapeRule {
  const char* name;
  const Tensor& t;
  Shape want;
  const char* rule;
};
inline void expect_shapes(const char* op, const char* xname, const StreamDims& d,
                          std::initializer_list<ShapeRule> rules) {
  for (const ShapeRule& r : rules) expect_shape(op, r.name, r.t, r.want, r.rule, xname, d);
}

// y += a x over n elements (vectorised).
template <typename T> inline void add_scaled(T* y, T a, const T* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// tanh that vectorises inside `omp simd` loops (glibc's tanhf is a call per element, most of
// hc_coeffs_forward's time). f32: Cephes' tanhf, x + x^3 P(x^2) for |x| < 0.625, else
// sign(x) (1 - 2 / (e^{2|x|} + 1)) with exp_fast (which saturates at e^88: tanh = +-1);
// a few ulp. f64 keeps std::tanh (the exact reference of the gradient checks).
inline float tanh_fast(float x) {
  const float a = std::abs(x), z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float large = std::copysign(1.0f - 2.0f / (exp_fast(2.0f * a) + 1.0f), x);
  return a < 0.625f ? small : large;
}
inline double tanh_fast(double x) { return std::tanh(x); }

// 1/(1+e^-l) without overflow for any |l|: e^-|l| is at most 1.
template <typename T> inline T sigmoid(T l) {
  const T e = std::exp(-std::abs(l));
  return l >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
}

// dw[M, K] += g[R, M]^T x[R, K] (a weight gradient summed over R rows): fixed blocks of
// kColBlock columns of dw spread over OpenMP threads, each one single-threaded GEMM over all R
// rows, so every element is one sum in a fixed order whatever the thread count.
constexpr int64_t kColBlock = 64;
template <typename T>
void accumulate_gt_x(T* dw, const T* g, const T* x, int64_t R, int64_t M, int64_t K) {
  if (R == 0 || M == 0 || K == 0) return;
  BlasSingleThreaded guard;
  const int64_t nblocks = (K + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static) if (nblocks > 1 && R * M * K >= (1 << 20))
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b * kColBlock, c1 = std::min(K, c0 + kColBlock);
    gemm<T>(true, false, M, c1 - c0, R, T(1), g, M, x + c0, K, T(1), dw + c0, K);
  }
}

}  // namespace bk::cpu
