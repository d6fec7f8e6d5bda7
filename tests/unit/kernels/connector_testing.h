// Helpers of the residual-connector kernel tests (connector_*_test.cpp), on top of
// kernel_testing.h.
#pragma once
#include <omp.h>

#include <vector>

#include "unit/kernels/kernel_testing.h"

namespace bk::test {

// Runs f with `threads` OpenMP threads and returns its outputs.
template <typename F> std::vector<Buffer> run_with_threads(int threads, F f) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  std::vector<Buffer> r = f();
  omp_set_num_threads(saved);
  return r;
}

// f's outputs are bit-identical with 1 and with 3 threads.
template <typename F> void expect_same_bits_any_threads(const char* what, F f) {
  std::vector<Buffer> a = run_with_threads(1, f), b = run_with_threads(3, f);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(bitwise_equal(a[i], b[i])) << what << " output " << i;
}

// Every element of `t`, converted with `dt`.
inline std::vector<Buffer> cast_all(std::initializer_list<const Buffer*> ts, DType dt) {
  std::vector<Buffer> r;
  for (const Buffer* t : ts) r.push_back(cast(*t, dt));
  return r;
}

// An uninitialised-looking (NaN-filled) output, so a kernel that skips an element fails.
inline Buffer nan_buffer(Shape s, DType dt = DType::f64) {
  Buffer b(s, dt);
  for (int64_t i = 0; i < b.numel(); ++i) set(b, i, std::nan(""));
  return b;
}

inline bool all_finite(const Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(get(t, i))) return false;
  return true;
}

// The analytic gradient's component along one random direction V matches the central
// difference of f along V: one pair of evaluations per tensor, for shapes too large for
// element-wise differences (several GEMM row and column blocks). A wrong element of the
// gradient moves sum(analytic * V) by about its size times |V_i| ~ 1, far above the tolerance
// (1e-7 of |analytic|, the typical size of the product for a random V).
inline void expect_directional_grad(const char* what, const Tensor& analytic, const Tensor& x,
                                    const std::function<double()>& f, uint64_t stream) {
  Buffer V = randn(x.shape, stream), x0 = clone(x);
  auto at = [&](double e) {
    for (int64_t i = 0; i < x.numel(); ++i) set(x, i, get(x0, i) + e * get(V, i));
    return f();
  };
  const double fd = (at(kFdEps) - at(-kFdEps)) / (2 * kFdEps);
  at(0);
  double an = 0, norm = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    an += get(analytic, i) * get(V, i);
    norm += get(analytic, i) * get(analytic, i);
  }
  norm = std::sqrt(norm);
  ASSERT_GT(norm, 1e-3) << what << ": degenerate check, the gradient is ~0";
  EXPECT_LT(std::abs(fd - an), 1e-7 * norm) << what << ": fd " << fd << " analytic " << an;
}

}  // namespace bk::test
