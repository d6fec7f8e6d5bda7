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

}  // namespace bk::test
