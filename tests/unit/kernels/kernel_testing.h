// Test helpers for the CPU kernels: random tensors, f32/f64 casts, comparisons, and central
// finite differences for gradient checks.
//
// Gradient checks run in fp64 on a scalar objective L = sum(out * R) with a fixed random R, so
// dL/dout = R is what the backward receives. With eps = 1e-6 the central difference has a
// truncation error ~eps^2 |f'''| ~ 1e-12 and a rounding error ~1e-16 |L| / eps ~ 1e-10 |L|;
// for our O(1)..O(10) objectives and O(0.1)..O(1) gradients, a relative error of 1e-6 leaves
// two orders of margin while any wrong term in a backward (errors of order 1e-2 or more)
// fails.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/rng.h"
#include "kernels/ops.h"

namespace bk::test {

constexpr double kFdEps = 1e-6;
constexpr double kGradTol = 1e-6;  // relative, fp64 analytic vs central differences
constexpr double kF32Tol = 1e-5;   // relative, f32 forward vs the same op in f64

inline double get(const Tensor& t, int64_t i) {
  return t.dtype == DType::f32 ? double(t.ptr<float>()[i]) : t.ptr<double>()[i];
}
inline void set(const Tensor& t, int64_t i, double x) {
  if (t.dtype == DType::f32) t.ptr<float>()[i] = float(x);
  else t.ptr<double>()[i] = x;
}

// Normal draws times `scale`; each call site picks its own stream so tensors differ.
inline Buffer randn(Shape s, uint64_t stream, double scale = 1.0, DType dt = DType::f64) {
  Buffer b(s, dt);
  Rng rng(20240611, stream);
  for (int64_t i = 0; i < b.numel(); ++i) set(b, i, scale * rng.normal());
  return b;
}

inline Buffer cast(const Tensor& t, DType dt) {
  Buffer b(t.shape, dt);
  for (int64_t i = 0; i < t.numel(); ++i) set(b, i, get(t, i));
  return b;
}
inline Buffer clone(const Tensor& t) { return cast(t, t.dtype); }

inline Buffer ids(std::vector<int32_t> v) {
  Buffer b({int64_t(v.size())}, DType::i32);
  for (size_t i = 0; i < v.size(); ++i) b.ptr<int32_t>()[i] = v[i];
  return b;
}

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(get(t, i)));
  return m;
}

// max |got - want| / max |want|: a scale-aware relative error for a whole tensor.
inline double rel_err(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape, want.shape);
  double d = 0;
  for (int64_t i = 0; i < want.numel(); ++i) d = std::max(d, std::abs(get(got, i) - get(want, i)));
  const double m = max_abs(want);
  return m > 0 ? d / m : d;
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape == b.shape && a.dtype == b.dtype && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

// sum(out * R), the scalar objective of every gradient check.
inline double weighted_sum(const Tensor& out, const Tensor& R) {
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) s += get(out, i) * get(R, i);
  return s;
}

// a - b (an accumulated weight gradient minus its random prefill).
inline Buffer minus(const Tensor& a, const Tensor& b) {
  Buffer d(a.shape, a.dtype);
  for (int64_t i = 0; i < a.numel(); ++i) set(d, i, get(a, i) - get(b, i));
  return d;
}

// Central differences of the scalar f() with respect to every element of x (restored after).
inline Buffer numeric_grad(const Tensor& x, const std::function<double()>& f,
                           double eps = kFdEps) {
  Buffer g(x.shape, DType::f64);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double x0 = get(x, i);
    set(x, i, x0 + eps);
    const double fp = f();
    set(x, i, x0 - eps);
    const double fm = f();
    set(x, i, x0);
    set(g, i, (fp - fm) / (2 * eps));
  }
  return g;
}

// The analytic gradient matches central differences of f with respect to x.
inline void expect_grad(const char* what, const Tensor& analytic, const Tensor& x,
                        const std::function<double()>& f) {
  Buffer fd = numeric_grad(x, f);
  ASSERT_GT(max_abs(fd), 1e-3) << what << ": degenerate check, the gradient is ~0";
  EXPECT_LT(rel_err(analytic, fd), kGradTol) << what;
}

// fn() throws bk::Error whose message contains every string in `parts`.
template <typename Fn> void expect_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no bk::Error thrown; expected one mentioning " << *parts.begin();
  } catch (const Error& e) {
    for (const std::string& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << p << "\"";
  }
}

}  // namespace bk::test
