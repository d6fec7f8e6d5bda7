// Reductions have a fixed order: the same inputs give bit-identical results with 1 and with 3
// threads (shapes above the kernels' parallel thresholds, so the regions really split).
#include <omp.h>

#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

// Runs f with n OpenMP threads and returns its outputs.
template <typename F> std::vector<Buffer> with_threads(int n, F f) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(n);
  std::vector<Buffer> r = f();
  omp_set_num_threads(saved);
  return r;
}

template <typename F> void expect_thread_independent(const char* what, F f) {
  std::vector<Buffer> a = with_threads(1, f), b = with_threads(3, f);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(bitwise_equal(a[i], b[i])) << what << " output " << i;
}

TEST(Determinism, WeightGradientsIndependentOfThreadCount) {
  constexpr int64_t N = 300, C = 200, V = 17;
  Buffer x = randn({N, C}, 110, 1.0, DType::f32), dy = randn({N, C}, 111, 1.0, DType::f32);
  std::vector<int32_t> tok(N);
  for (int64_t n = 0; n < N; ++n) tok[n] = int32_t((n * 7) % V);
  expect_thread_independent("rmsnorm", [&] {
    std::vector<Buffer> r;
    r.emplace_back(Shape{N, C}, DType::f32);
    r.emplace_back(Shape{N}, DType::f32);
    r.emplace_back(Shape{N, C}, DType::f32);
    r.push_back(randn({C}, 112, 1.0, DType::f32));
    Buffer w = randn({C}, 113, 1.0, DType::f32);
    ops::rmsnorm_forward(r[0], r[1], x, w, 1e-5f);
    ops::rmsnorm_backward_input(r[2], dy, x, w, r[1]);
    ops::rmsnorm_backward_weight(r[3], dy, x, r[1]);
    return r;
  });
  expect_thread_independent("linear", [&] {
    std::vector<Buffer> r;
    r.emplace_back(Shape{N, C}, DType::f32);
    r.emplace_back(Shape{N, C}, DType::f32);
    r.push_back(randn({C, C}, 118, 1.0, DType::f32));
    Buffer w = randn({C, C}, 119, 1.0, DType::f32);
    ops::linear_forward(r[0], x, w);
    ops::linear_backward_input(r[1], dy, w);
    ops::linear_backward_weight(r[2], dy, x);
    return r;
  });
  expect_thread_independent("embedding", [&] {
    std::vector<Buffer> r;
    r.push_back(randn({V, C}, 114, 1.0, DType::f32));
    ops::embedding_backward_weight(r[0], ids(tok), dy);
    return r;
  });
}

// The column-blocked reductions (several blocks, several threads) against plain loops.
TEST(Determinism, ColumnBlockedWeightGradientsMatchPlainLoops) {
  constexpr int64_t N = 120, C = 150, V = 11;
  Buffer x = randn({N, C}, 115), dy = randn({N, C}, 116), rstd = randn({N}, 117);
  std::vector<int32_t> tok(N);
  for (int64_t n = 0; n < N; ++n) tok[n] = int32_t((n * 5) % V);
  Buffer dw({C}, DType::f64), dtable({V, C}, DType::f64);
  ops::rmsnorm_backward_weight(dw, dy, x, rstd);
  ops::embedding_backward_weight(dtable, ids(tok), dy);
  Buffer want_dw({C}, DType::f64), want_dtable({V, C}, DType::f64);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      set(want_dw, c, get(want_dw, c) + get(dy, n * C + c) * get(x, n * C + c) * get(rstd, n));
      set(want_dtable, tok[n] * C + c, get(want_dtable, tok[n] * C + c) + get(dy, n * C + c));
    }
  EXPECT_LT(rel_err(dw, want_dw), 1e-14);
  EXPECT_LT(rel_err(dtable, want_dtable), 1e-14);
}

TEST(Determinism, AttentionAndLossIndependentOfThreadCount) {
  constexpr int64_t B = 2, T = 40, H = 3, D = 16;
  Buffer q = randn({B, T, H, D}, 120, 1.0, DType::f32), k = randn({B, T, H, D}, 121, 1.0, DType::f32),
         v = randn({B, T, H, D}, 122, 1.0, DType::f32), dout = randn({B, T, H, D}, 123, 1.0, DType::f32);
  expect_thread_independent("attention", [&] {
    std::vector<Buffer> r;
    for (int i = 0; i < 5; ++i) r.emplace_back(Shape{B, T, H, D}, DType::f32);
    Buffer lse({B, H, T}, DType::f32);
    ops::attention_forward(r[0], lse, q, k, v, 0.25f);
    ops::attention_backward(r[1], r[2], r[3], dout, r[0], lse, q, k, v, 0.25f);
    return r;
  });
  Buffer logits = randn({300, 100}, 124, 3.0, DType::f32);
  std::vector<int32_t> tg(300);
  for (int n = 0; n < 300; ++n) tg[n] = n % 13 == 0 ? -1 : n % 100;
  expect_thread_independent("cross_entropy + sum_squares", [&] {
    std::vector<Buffer> r;
    r.emplace_back(Shape{300}, DType::f32);
    r.emplace_back(Shape{300, 100}, DType::f32);
    r.emplace_back(Shape{1}, DType::f64);
    ops::cross_entropy_forward(r[0], logits, ids(tg));
    ops::cross_entropy_backward(r[1], logits, ids(tg), 1.0f / 300);
    set(r[2], 0, ops::sum_squares(Buffer(randn({100000}, 125, 1.0, DType::f32))));
    return r;
  });
}

}  // namespace
}  // namespace bk::test
