// sinkhorn_{forward,backward}: finite differences through 1, 5 and 20 iterations, the doubly
// stochastic invariants, the fixed point, underflowed rows and columns, f32 against f64, shape
// errors.
#include "unit/kernels/connector_testing.h"

namespace bk::test {
namespace {

// Largest |sum - 1| over the rows (cols = false) or columns of every n x n block; for columns
// the L1 error sum_j |colsum_j - 1| of each block (non-increasing along Sinkhorn iterations).
double marginal_error(const Tensor& p, bool cols) {
  const int64_t N = p.size(0), n = p.size(1);
  double worst = 0;
  for (int64_t t = 0; t < N; ++t) {
    double l1 = 0;
    for (int64_t a = 0; a < n; ++a) {
      double s = 0;
      for (int64_t b = 0; b < n; ++b) s += get(p, t * n * n + (cols ? b * n + a : a * n + b));
      l1 = cols ? l1 + std::abs(s - 1) : std::max(l1, std::abs(s - 1));
    }
    worst = std::max(worst, l1);
  }
  return worst;
}

Buffer sinkhorn(const Tensor& logits, int iters) {
  Buffer p = nan_buffer(logits.shape, logits.dtype);
  ops::sinkhorn_forward(p, logits, iters);
  return p;
}

void check_gradient(int64_t n, int iters, double spread, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "n = " << n << ", iters = " << iters
                                    << ", spread = " << spread);
  constexpr int64_t N = 3;
  Buffer L = randn({N, n, n}, seed, spread), R = randn({N, n, n}, seed + 1);
  Buffer p = nan_buffer({N, n, n}), dL = nan_buffer({N, n, n});
  auto loss = [&] {
    ops::sinkhorn_forward(p, L, iters);
    return weighted_sum(p, R);
  };
  ops::sinkhorn_backward(dL, R, L, iters);
  expect_grad("dlogits", dL, L, loss);
}

TEST(Sinkhorn, GradientMatchesFiniteDifferences) {
  uint64_t seed = 100;
  for (int iters : {1, 5, 20})
    for (double spread : {1.0, 5.0}) check_gradient(4, iters, spread, seed += 2);
  check_gradient(2, 5, 1.0, 200);
  check_gradient(3, 20, 5.0, 202);
  check_gradient(5, 5, 1.0, 204);  // no unrolled specialisation for n = 5
}

TEST(Sinkhorn, RowsSumToOneAndColumnsConverge) {
  constexpr int64_t N = 16, n = 4;
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    const double row_tol = dt == DType::f32 ? 1e-6 : 1e-12;
    for (double spread : {1.0, 5.0}) {
      Buffer L = randn({N, n, n}, 300 + uint64_t(spread), spread, dt);
      double col[3];
      int k = 0;
      for (int iters : {1, 5, 20}) {
        Buffer p = sinkhorn(L, iters);
        EXPECT_LT(marginal_error(p, false), row_tol) << "iters " << iters << " spread " << spread;
        for (int64_t i = 0; i < p.numel(); ++i) ASSERT_GE(get(p, i), 0.0);
        col[k++] = marginal_error(p, true);
      }
      if (spread == 5.0) {  // a spread-out block converges slowly but steadily
        EXPECT_LT(col[2], col[1]);
        EXPECT_LT(col[1], col[0]);
        EXPECT_GT(col[0], 1e-2) << "degenerate: one iteration already converged";
      } else {
        EXPECT_LT(col[2], 1e-3);
      }
    }
  }
}

// exp(L) already doubly stochastic (up to a per-token constant): every iteration keeps it.
TEST(Sinkhorn, DoublyStochasticInputIsAFixedPoint) {
  constexpr int64_t N = 3, n = 4;
  Buffer L({N, n, n}, DType::f64), D({N, n, n}, DType::f64);
  Rng rng(7, 8);
  for (int64_t t = 0; t < N; ++t) {
    double w[n], sum = 0;
    for (double& v : w) sum += v = 0.1 + rng.uniform();
    const int64_t perm[n] = {2, 0, 3, 1};
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        // Half a circulant matrix of weights w, half a permutation matrix.
        const double d = 0.5 * w[(j - i + n) % n] / sum + (perm[i] == j ? 0.5 : 0.0);
        set(D, t * n * n + i * n + j, d);
        set(L, t * n * n + i * n + j, std::log(d) + 3.0 * double(t) - 1.0);
      }
  }
  for (int iters : {1, 20}) EXPECT_LT(rel_err(sinkhorn(L, iters), D), 1e-13) << iters;
}

// A row or column whose entries all underflow stays 0 and passes no gradient: no 0/0.
TEST(Sinkhorn, UnderflowedRowsAndColumnsStayFinite) {
  constexpr int64_t n = 4;
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    Buffer L({2, n, n}, dt);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        set(L, i * n + j, i == 0 ? 0.1 * double(j) : -1e4);          // only row 0 survives
        set(L, n * n + i * n + j, j == 0 ? 0.1 * double(i) : -1e4);  // only column 0
      }
    Buffer p = sinkhorn(L, 20), dL = nan_buffer({2, n, n}, dt);
    ops::sinkhorn_backward(dL, cast(randn({2, n, n}, 400), dt), L, 20);
    EXPECT_TRUE(all_finite(p));
    EXPECT_TRUE(all_finite(dL));
    EXPECT_NEAR(get(p, 0), 1.0 / n, 1e-6);         // row 0: 1/n each
    EXPECT_NEAR(get(p, n * n + n), 1.0, 1e-6);     // column 0: every row's only entry
    EXPECT_EQ(get(p, n * n + n + 1), 0.0);
  }
}

TEST(Sinkhorn, F32MatchesF64) {
  constexpr int64_t N = 16, n = 4;
  for (double spread : {1.0, 5.0}) {
    Buffer L = randn({N, n, n}, 500 + uint64_t(spread), spread), R = randn({N, n, n}, 510);
    std::vector<Buffer> r[2];
    for (int k = 0; k < 2; ++k) {
      const DType dt = k == 0 ? DType::f32 : DType::f64;
      Buffer l = cast(L, dt), dL(L.shape(), dt);
      ops::sinkhorn_backward(dL, cast(R, dt), l, 20);
      r[k].push_back(sinkhorn(l, 20));
      r[k].push_back(std::move(dL));
    }
    EXPECT_LT(rel_err(r[0][0], r[1][0]), kF32Tol) << "p, spread " << spread;
    EXPECT_LT(rel_err(r[0][1], r[1][1]), 10 * kF32Tol) << "dlogits, spread " << spread;
  }
}

TEST(Sinkhorn, RejectsBadShapes) {
  Buffer L = randn({2, 4, 4}, 600), p({2, 4, 4}, DType::f64);
  Buffer odd({2, 4, 3}, DType::f64);
  expect_error([&] { ops::sinkhorn_forward(odd, odd, 5); },
               {"sinkhorn_forward", "logits is [2, 4, 3]", "[N, n, n]"});
  expect_error([&] { ops::sinkhorn_forward(Buffer({2, 16}, DType::f64), L, 5); },
               {"sinkhorn_forward", "p is [2, 16]"});
  expect_error([&] { ops::sinkhorn_forward(p, L, 0); }, {"sinkhorn_forward", "iters is 0"});
  expect_error([&] { ops::sinkhorn_backward(p, Buffer({2, 4, 5}, DType::f64), L, 5); },
               {"sinkhorn_backward", "dp is [2, 4, 5]"});
}

}  // namespace
}  // namespace bk::test
