// Helpers of the attention, MoE and connector CUDA tests (attention_test.cpp, moe_test.cpp,
// connector_test.cpp), on top of cuda_testing.h.
//
// References run on the CPU in f64 on exactly the values the device holds (representable),
// so a comparison measures the kernel's own f32 arithmetic and its output rounding. Against
// an f64 reference (relative Frobenius, cuda_testing.h):
// - f32 outputs: kTolF32 = 1e-5. The kernels accumulate in f32 over at most a few thousand
//   terms (unit roundoff 6e-8; tree and sliced sums grow the error like sqrt(terms)), so their
//   errors are 1e-7..1e-6; any wrong term is >= 1e-3.
// - bf16 outputs: kTolBf16 = 8e-3. Rounding the output to bf16 alone is up to 2^-9 = 2e-3
//   relative (RMS 1.1e-3); the f32 arithmetic before it adds nothing visible.
// Exceptions are stated where they occur (Sinkhorn's backward at large spreads).
#pragma once
#include <cstring>

#include "cuda/cuda_testing.h"

namespace bk::test {

inline Buffer f64(const Tensor& t) { return cast(t, DType::f64); }

// A random f32 host tensor holding only values representable in dt.
inline Buffer rnd(Shape s, uint64_t stream, DType dt, double scale = 1.0) {
  return representable(randn_f32(s, stream, scale), dt);
}

// An i32 host tensor of the given shape and values.
inline Buffer i32_host(Shape s, const std::vector<int32_t>& v) {
  Buffer b(s, DType::i32);
  std::memcpy(b.tensor().data, v.data(), sizeof(int32_t) * v.size());
  return b;
}

// Integer outputs: every element equal.
inline void expect_same_ints(const char* what, const Tensor& dev, const Tensor& want_host) {
  Buffer got = to_host(dev);
  ASSERT_EQ(got.shape(), want_host.shape) << what;
  const int32_t *g = got.ptr<int32_t>(), *w = want_host.ptr<int32_t>();
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want_host.numel(); ++i)
    if (g[i] != w[i] && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want_host.numel()
                    << " elements differ, first at " << first << " (got " << (first >= 0 ? g[first] : 0)
                    << ", want " << (first >= 0 ? w[first] : 0) << ")";
}

// A weight gradient accumulated on the device from `prefill`: its increment against the
// reference's increment (the prefill alone would hide a wrong or missing update).
inline void expect_increment(const char* what, const Tensor& dev, const Tensor& prefill,
                             const Tensor& want_total, double tol) {
  Buffer got = to_host(dev);
  Buffer inc = minus(got, cast(prefill, got.dtype()));
  Buffer want = minus(f64(want_total), f64(prefill));
  const double err = rel_frobenius(inc, want);
  EXPECT_LT(err, tol) << what << ": relative Frobenius error of the increment " << err;
}

}  // namespace bk::test
