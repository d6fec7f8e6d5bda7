// mhc_coeffs_{forward,backward_input,backward_weight}: the definition in plain double loops,
// finite differences of every input and weight, f32 against f64, sigmoid saturation, fixed
// reduction order, shape errors.
#include "unit/kernels/connector_testing.h"

namespace bk::test {
namespace {

constexpr float kEps = 1e-6f;

// One problem: random inputs (never zeros) and NaN-filled outputs of the forward.
struct Mhc {
  int64_t N, n, C, m, K;
  DType dt;
  Buffer x, phi, alpha, bias;
  Buffer h_pre, h_post, res, rinv, z;

  Mhc(int64_t N_, int64_t n_, int64_t C_, uint64_t seed, DType dt_ = DType::f64)
      : N(N_), n(n_), C(C_), m(n * n + 2 * n), K(n * C), dt(dt_),
        x(randn({N, n, C}, seed, 1.0, dt)),
        phi(randn({m, K}, seed + 1, 1.0 / std::sqrt(double(K)), dt)),
        alpha(randn({3}, seed + 2, 1.0, dt)),
        bias(randn({m}, seed + 3, 0.5, dt)),
        h_pre(nan_buffer({N, n}, dt)),
        h_post(nan_buffer({N, n}, dt)),
        res(nan_buffer({N, n, n}, dt)),
        rinv(nan_buffer({N}, dt)),
        z(nan_buffer({N, m}, dt)) {}

  void forward() {
    ops::mhc_coeffs_forward(h_pre, h_post, res, rinv, z, x, phi, alpha, bias, kEps);
  }
};

// The definition, written out in double without the kernel's helpers.
TEST(MhcCoeffs, ForwardMatchesScalarDefinition) {
  // The last case spans two GEMM row blocks (128 tokens each) and three column blocks (64
  // columns each).
  for (auto [N, n, C] : {std::array<int64_t, 3>{5, 4, 12}, {5, 2, 12}, {150, 4, 40}}) {
    SCOPED_TRACE(::testing::Message() << "N = " << N << ", n = " << n << ", C = " << C);
    Mhc c(N, n, C, 100 + N + n);
    c.forward();
    const int64_t m = c.m, K = c.K;
    for (int64_t t = 0; t < N; ++t) {
      double ss = 0;
      for (int64_t k = 0; k < K; ++k) ss += get(c.x, t * K + k) * get(c.x, t * K + k);
      const double r = 1.0 / std::sqrt(ss / double(n * C) + double(kEps));
      EXPECT_NEAR(get(c.rinv, t), r, 1e-14 * r);
      for (int64_t j = 0; j < m; ++j) {
        double zj = 0;
        for (int64_t k = 0; k < K; ++k) zj += get(c.phi, j * K + k) * get(c.x, t * K + k);
        EXPECT_NEAR(get(c.z, t * m + j), zj, 1e-13);
        const int g = j < n ? 0 : j < 2 * n ? 1 : 2;
        const double logit = get(c.alpha, g) * r * zj + get(c.bias, j);
        if (g == 0) EXPECT_NEAR(get(c.h_pre, t * n + j), 1.0 / (1.0 + std::exp(-logit)), 1e-14);
        if (g == 1)
          EXPECT_NEAR(get(c.h_post, t * n + j - n), 2.0 / (1.0 + std::exp(-logit)), 1e-14);
        if (g == 2) EXPECT_NEAR(get(c.res, t * n * n + j - 2 * n), logit, 1e-13);
      }
    }
  }
}

// Element-wise central differences, or (large shapes) along one random direction per tensor.
void check_gradients(int64_t n, int64_t C, uint64_t seed, int64_t N = 3, bool directional = false) {
  SCOPED_TRACE(::testing::Message() << "N = " << N << ", n = " << n << ", C = " << C);
  auto expect_grad = [&](const char* what, const Tensor& analytic, const Tensor& x,
                         const std::function<double()>& f) {
    if (directional) expect_directional_grad(what, analytic, x, f, seed + 30);
    else test::expect_grad(what, analytic, x, f);
  };
  Mhc c(N, n, C, seed);
  const int64_t m = c.m, K = c.K;
  Buffer R1 = randn({N, n}, seed + 10), R2 = randn({N, n}, seed + 11),
         R3 = randn({N, n, n}, seed + 12);
  auto loss = [&] {
    c.forward();
    return weighted_sum(c.h_pre, R1) + weighted_sum(c.h_post, R2) + weighted_sum(c.res, R3);
  };
  loss();
  Buffer dx = nan_buffer({N, n, C}), dl = nan_buffer({N, m});
  ops::mhc_coeffs_backward_input(dx, dl, R1, R2, R3, c.h_pre, c.h_post, c.x, c.phi, c.alpha,
                                 c.rinv, c.z);
  Buffer pre_phi = randn({m, K}, seed + 20), pre_alpha = randn({3}, seed + 21),
         pre_bias = randn({m}, seed + 22);
  Buffer dphi = clone(pre_phi), dalpha = clone(pre_alpha), dbias = clone(pre_bias);
  ops::mhc_coeffs_backward_weight(dphi, dalpha, dbias, dl, c.x, c.alpha, c.rinv, c.z);
  expect_grad("dx", dx, c.x, loss);
  expect_grad("dphi", minus(dphi, pre_phi), c.phi, loss);
  expect_grad("dalpha", minus(dalpha, pre_alpha), c.alpha, loss);
  expect_grad("dbias", minus(dbias, pre_bias), c.bias, loss);
}

TEST(MhcCoeffs, GradientsMatchFiniteDifferences) {
  check_gradients(4, 12, 200);
  check_gradients(2, 12, 300);
  check_gradients(4, 5, 400);
}

// Two GEMM row blocks of tokens and three column blocks of dphi (n*C = 160), checked along
// random directions.
TEST(MhcCoeffs, GradientsMatchFiniteDifferencesAcrossBlocks) {
  check_gradients(4, 40, 900, 150, true);
}

// dlogits is the gradient with respect to each token's logits: with one token it equals dbias.
TEST(MhcCoeffs, DlogitsIsTheLogitGradient) {
  Mhc c(1, 4, 12, 450);
  Buffer R1 = randn({1, 4}, 451), R2 = randn({1, 4}, 452), R3 = randn({1, 4, 4}, 453);
  c.forward();
  Buffer dx({1, 4, 12}, DType::f64), dl({1, c.m}, DType::f64);
  ops::mhc_coeffs_backward_input(dx, dl, R1, R2, R3, c.h_pre, c.h_post, c.x, c.phi, c.alpha,
                                 c.rinv, c.z);
  auto loss = [&] {
    c.forward();
    return weighted_sum(c.h_pre, R1) + weighted_sum(c.h_post, R2) + weighted_sum(c.res, R3);
  };
  expect_grad("dlogits", dl.tensor().view({c.m}), c.bias, loss);
}

TEST(MhcCoeffs, F32MatchesF64) {
  // 200 tokens: two GEMM row blocks.
  constexpr int64_t N = 200, n = 4, C = 12, m = 24;
  auto run = [&](DType dt) {
    Mhc c(N, n, C, 500, dt);
    c.forward();
    Buffer R1 = randn({N, n}, 510, 1.0, dt), R2 = randn({N, n}, 511, 1.0, dt),
           R3 = randn({N, n, n}, 512, 1.0, dt);
    std::vector<Buffer> r;
    r.emplace_back(Shape{N, n, C}, dt);                 // dx
    r.emplace_back(Shape{N, m}, dt);                    // dlogits
    r.push_back(randn({m, n * C}, 513, 1.0, dt));       // dphi, prefilled
    r.push_back(randn({3}, 514, 1.0, dt));              // dalpha
    r.push_back(randn({m}, 515, 1.0, dt));              // dbias
    ops::mhc_coeffs_backward_input(r[0], r[1], R1, R2, R3, c.h_pre, c.h_post, c.x, c.phi,
                                   c.alpha, c.rinv, c.z);
    ops::mhc_coeffs_backward_weight(r[2], r[3], r[4], r[1], c.x, c.alpha, c.rinv, c.z);
    for (Buffer* b : {&c.h_pre, &c.h_post, &c.res, &c.rinv, &c.z}) r.push_back(std::move(*b));
    return r;
  };
  std::vector<Buffer> a = run(DType::f32), b = run(DType::f64);
  const char* names[] = {"dx", "dlogits", "dphi", "dalpha", "dbias",
                         "h_pre", "h_post", "res_logits", "rinv", "z"};
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(rel_err(a[i], b[i]), kF32Tol) << names[i];
}

// Logits of +-200 overflow e^|l| in f32: the sigmoids saturate to exactly 0 / 1 (0 / 2) and
// their gradients to 0, with no NaN from inf / inf.
TEST(MhcCoeffs, SigmoidSaturatesWithoutOverflow) {
  constexpr int64_t N = 2, n = 2, C = 3, m = 8;
  Mhc c(N, n, C, 600, DType::f32);
  for (int64_t j = 0; j < 2 * n; ++j) set(c.bias, j, j % 2 ? -200.0 : 200.0);
  c.forward();
  for (int64_t t = 0; t < N; ++t)
    for (int64_t j = 0; j < n; ++j) {
      EXPECT_EQ(get(c.h_pre, t * n + j), j % 2 ? 0.0 : 1.0);
      EXPECT_EQ(get(c.h_post, t * n + j), j % 2 ? 0.0 : 2.0);
    }
  Buffer dx({N, n, C}, DType::f32), dl({N, m}, DType::f32);
  Buffer dh = cast(randn({N, n}, 601), DType::f32), r3 = cast(randn({N, n, n}, 602), DType::f32);
  ops::mhc_coeffs_backward_input(dx, dl, dh, dh, r3, c.h_pre, c.h_post, c.x, c.phi, c.alpha,
                                 c.rinv, c.z);
  EXPECT_TRUE(all_finite(dx));
  for (int64_t t = 0; t < N; ++t)
    for (int64_t j = 0; j < 2 * n; ++j) EXPECT_EQ(get(dl, t * m + j), 0.0);
}

TEST(MhcCoeffs, WeightGradientsIndependentOfThreadCount) {
  // Above the parallel thresholds: 4 GEMM row blocks, 16 column blocks of dphi.
  constexpr int64_t N = 512, n = 4, C = 256, m = 24;
  Mhc c(N, n, C, 700, DType::f32);
  Buffer R1 = randn({N, n}, 710, 1.0, DType::f32), R2 = randn({N, n}, 711, 1.0, DType::f32),
         R3 = randn({N, n, n}, 712, 1.0, DType::f32);
  expect_same_bits_any_threads("mhc_coeffs", [&] {
    std::vector<Buffer> r;
    c.forward();
    r.emplace_back(Shape{N, n, C}, DType::f32);
    r.emplace_back(Shape{N, m}, DType::f32);
    r.push_back(randn({m, n * C}, 713, 1.0, DType::f32));
    r.push_back(randn({3}, 714, 1.0, DType::f32));
    r.push_back(randn({m}, 715, 1.0, DType::f32));
    ops::mhc_coeffs_backward_input(r[0], r[1], R1, R2, R3, c.h_pre, c.h_post, c.x, c.phi,
                                   c.alpha, c.rinv, c.z);
    ops::mhc_coeffs_backward_weight(r[2], r[3], r[4], r[1], c.x, c.alpha, c.rinv, c.z);
    for (Buffer* b : {&c.h_pre, &c.h_post, &c.res, &c.rinv, &c.z}) r.push_back(clone(*b));
    return r;
  });
}

TEST(MhcCoeffs, RejectsBadShapes) {
  Mhc c(3, 4, 8, 800);
  expect_error([&] {
    ops::mhc_coeffs_forward(c.h_pre, c.h_post, c.res, c.rinv, c.z, c.x,
                            Buffer({24, 31}, DType::f64), c.alpha, c.bias, kEps);
  }, {"mhc_coeffs_forward", "phi is [24, 31]", "[n*n+2n, n*C] = [24, 32]",
      "x is [N, n, C] = [3, 4, 8]"});
  expect_error([&] {
    ops::mhc_coeffs_forward(c.h_pre, c.h_post, c.res, c.rinv, c.z, c.x.tensor().view({3, 32}),
                            c.phi, c.alpha, c.bias, kEps);
  }, {"mhc_coeffs_forward", "x is [3, 32]", "[N, n, C]"});
  expect_error([&] {
    ops::mhc_coeffs_forward(c.h_pre, c.h_post, c.res, c.rinv, c.z, c.x, c.phi, c.alpha,
                            Buffer({23}, DType::f64), kEps);
  }, {"mhc_coeffs_forward", "bias is [23]"});
  Buffer dx({3, 4, 8}, DType::f64), dl({3, 24}, DType::f64);
  expect_error([&] {
    ops::mhc_coeffs_backward_input(dx, Buffer({3, 23}, DType::f64), c.h_pre, c.h_post, c.res,
                                   c.h_pre, c.h_post, c.x, c.phi, c.alpha, c.rinv, c.z);
  }, {"mhc_coeffs_backward_input", "dlogits is [3, 23]"});
  expect_error([&] {
    ops::mhc_coeffs_backward_weight(Buffer({24, 32}, DType::f64), Buffer({2}, DType::f64),
                                    c.bias, dl, c.x, c.alpha, c.rinv, c.z);
  }, {"mhc_coeffs_backward_weight", "dalpha is [2]", "[3]"});
  expect_error([&] {
    ops::mhc_coeffs_backward_weight(Buffer({24, 32}, DType::f32), c.alpha, c.bias, dl, c.x,
                                    c.alpha, c.rinv, c.z);
  }, {"mhc_coeffs_backward_weight", "f32", "f64"});
}

}  // namespace
}  // namespace bk::test
