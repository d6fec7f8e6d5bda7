// hc_coeffs_{forward,backward_input,backward_weight}: the definition in plain double loops,
// finite differences of every input and weight, f32 against f64, fixed reduction order, shape
// errors.
#include "unit/kernels/connector_testing.h"

namespace bk::test {
namespace {

constexpr float kEps = 1e-6f;

// One problem: random inputs (never zeros) and NaN-filled outputs of the forward.
struct Hc {
  int64_t N, n, C, M;
  DType dt;
  Buffer x, w, scale, s_pre, s_post, s_res;
  Buffer h_pre, h_post, h_res, rinv, u;

  Hc(int64_t N_, int64_t n_, int64_t C_, uint64_t seed, DType dt_ = DType::f64)
      : N(N_), n(n_), C(C_), M(n + 2), dt(dt_),
        x(randn({N, n, C}, seed, 1.0, dt)),
        w(randn({M, C}, seed + 1, 1.0 / std::sqrt(double(C)), dt)),
        scale(randn({3}, seed + 2, 1.0, dt)),
        s_pre(randn({n}, seed + 3, 1.0, dt)),
        s_post(randn({n}, seed + 4, 1.0, dt)),
        s_res(randn({n, n}, seed + 5, 1.0, dt)),
        h_pre(nan_buffer({N, n}, dt)),
        h_post(nan_buffer({N, n}, dt)),
        h_res(nan_buffer({N, n, n}, dt)),
        rinv(nan_buffer({N, n}, dt)),
        u(nan_buffer({N, n, M}, dt)) {}

  void forward() {
    ops::hc_coeffs_forward(h_pre, h_post, h_res, rinv, u, x, w, scale, s_pre, s_post, s_res, kEps);
  }
};

TEST(HcCoeffs, ForwardMatchesScalarDefinition) {
  // The last case spans two GEMM row blocks (128 stream rows each) and three column blocks (64
  // columns each).
  for (auto [N, n, C] : {std::array<int64_t, 3>{5, 4, 12}, {5, 2, 12}, {40, 4, 160}}) {
    SCOPED_TRACE(::testing::Message() << "N = " << N << ", n = " << n << ", C = " << C);
    Hc c(N, n, C, 100 + N + n);
    c.forward();
    const int64_t M = c.M;
    for (int64_t t = 0; t < N; ++t)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = (t * n + i) * C;
        double ss = 0;
        for (int64_t k = 0; k < C; ++k) ss += get(c.x, row + k) * get(c.x, row + k);
        const double r = 1.0 / std::sqrt(ss / double(C) + double(kEps));
        EXPECT_NEAR(get(c.rinv, t * n + i), r, 1e-14 * r);
        std::vector<double> u(size_t(M), 0.0);
        for (int64_t k = 0; k < M; ++k) {
          double a = 0;
          for (int64_t cc = 0; cc < C; ++cc) a += get(c.w, k * C + cc) * get(c.x, row + cc) * r;
          u[size_t(k)] = std::tanh(a);
          EXPECT_NEAR(get(c.u, (t * n + i) * M + k), u[size_t(k)], 1e-14);
        }
        EXPECT_NEAR(get(c.h_pre, t * n + i), get(c.scale, 0) * u[0] + get(c.s_pre, i), 1e-14);
        EXPECT_NEAR(get(c.h_post, t * n + i), get(c.scale, 1) * u[1] + get(c.s_post, i), 1e-14);
        for (int64_t j = 0; j < n; ++j)  // stream i's term fills column i of h_res
          EXPECT_NEAR(get(c.h_res, t * n * n + j * n + i),
                      get(c.scale, 2) * u[size_t(2 + j)] + get(c.s_res, j * n + i), 1e-14);
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
  Hc c(N, n, C, seed);
  const int64_t M = c.M;
  Buffer R1 = randn({N, n}, seed + 10), R2 = randn({N, n}, seed + 11),
         R3 = randn({N, n, n}, seed + 12);
  auto loss = [&] {
    c.forward();
    return weighted_sum(c.h_pre, R1) + weighted_sum(c.h_post, R2) + weighted_sum(c.h_res, R3);
  };
  loss();
  Buffer dx = nan_buffer({N, n, C}), dl = nan_buffer({N, n, M});
  ops::hc_coeffs_backward_input(dx, dl, R1, R2, R3, c.x, c.w, c.scale, c.rinv, c.u);
  Buffer pre_w = randn({M, C}, seed + 20), pre_scale = randn({3}, seed + 21),
         pre_sp = randn({n}, seed + 22), pre_so = randn({n}, seed + 23),
         pre_sr = randn({n, n}, seed + 24);
  Buffer dw = clone(pre_w), dscale = clone(pre_scale), dsp = clone(pre_sp), dso = clone(pre_so),
         dsr = clone(pre_sr);
  ops::hc_coeffs_backward_weight(dw, dscale, dsp, dso, dsr, dl, R1, R2, R3, c.x, c.rinv, c.u);
  expect_grad("dx", dx, c.x, loss);
  expect_grad("dw", minus(dw, pre_w), c.w, loss);
  expect_grad("dscale", minus(dscale, pre_scale), c.scale, loss);
  expect_grad("dstatic_pre", minus(dsp, pre_sp), c.s_pre, loss);
  expect_grad("dstatic_post", minus(dso, pre_so), c.s_post, loss);
  expect_grad("dstatic_res", minus(dsr, pre_sr), c.s_res, loss);
}

TEST(HcCoeffs, GradientsMatchFiniteDifferences) {
  check_gradients(4, 12, 200);
  check_gradients(2, 12, 300);
  check_gradients(3, 5, 400);
}

// Two GEMM row blocks of stream rows and three column blocks of dw (C = 160), checked
// along random directions.
TEST(HcCoeffs, GradientsMatchFiniteDifferencesAcrossBlocks) {
  check_gradients(4, 160, 900, 40, true);
}

// w scaled by 1 (tanh mostly in its polynomial range) and by 30 (mostly saturated).
void check_f32_matches_f64(double w_scale) {
  SCOPED_TRACE(::testing::Message() << "w scale " << w_scale);
  // 100 tokens x 4 streams: four GEMM row blocks.
  constexpr int64_t N = 100, n = 4, C = 12, M = 6;
  auto run = [&](DType dt) {
    Hc c(N, n, C, 500, dt);
    for (int64_t k = 0; k < c.w.numel(); ++k) set(c.w, k, get(c.w, k) * w_scale);
    c.forward();
    Buffer R1 = randn({N, n}, 510, 1.0, dt), R2 = randn({N, n}, 511, 1.0, dt),
           R3 = randn({N, n, n}, 512, 1.0, dt);
    std::vector<Buffer> r;
    r.emplace_back(Shape{N, n, C}, dt);  // dx
    r.emplace_back(Shape{N, n, M}, dt);  // dlogits
    r.push_back(randn({M, C}, 513, 1.0, dt));
    r.push_back(randn({3}, 514, 1.0, dt));
    r.push_back(randn({n}, 515, 1.0, dt));
    r.push_back(randn({n}, 516, 1.0, dt));
    r.push_back(randn({n, n}, 517, 1.0, dt));
    ops::hc_coeffs_backward_input(r[0], r[1], R1, R2, R3, c.x, c.w, c.scale, c.rinv, c.u);
    ops::hc_coeffs_backward_weight(r[2], r[3], r[4], r[5], r[6], r[1], R1, R2, R3, c.x, c.rinv,
                                   c.u);
    for (Buffer* b : {&c.h_pre, &c.h_post, &c.h_res, &c.rinv, &c.u}) r.push_back(std::move(*b));
    return r;
  };
  std::vector<Buffer> a = run(DType::f32), b = run(DType::f64);
  const char* names[] = {"dx", "dlogits", "dw", "dscale", "dstatic_pre", "dstatic_post",
                         "dstatic_res", "h_pre", "h_post", "h_res", "rinv", "u"};
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(rel_err(a[i], b[i]), kF32Tol) << names[i];
}

TEST(HcCoeffs, F32MatchesF64) {
  check_f32_matches_f64(1.0);
  check_f32_matches_f64(30.0);
}

TEST(HcCoeffs, WeightGradientsIndependentOfThreadCount) {
  // Above the parallel thresholds: 16 GEMM row blocks, 4 column blocks of dw.
  constexpr int64_t N = 512, n = 4, C = 256, M = 6;
  Hc c(N, n, C, 700, DType::f32);
  Buffer R1 = randn({N, n}, 710, 1.0, DType::f32), R2 = randn({N, n}, 711, 1.0, DType::f32),
         R3 = randn({N, n, n}, 712, 1.0, DType::f32);
  expect_same_bits_any_threads("hc_coeffs", [&] {
    std::vector<Buffer> r;
    c.forward();
    r.emplace_back(Shape{N, n, C}, DType::f32);
    r.emplace_back(Shape{N, n, M}, DType::f32);
    r.push_back(randn({M, C}, 713, 1.0, DType::f32));
    r.push_back(randn({3}, 714, 1.0, DType::f32));
    r.push_back(randn({n}, 715, 1.0, DType::f32));
    r.push_back(randn({n}, 716, 1.0, DType::f32));
    r.push_back(randn({n, n}, 717, 1.0, DType::f32));
    ops::hc_coeffs_backward_input(r[0], r[1], R1, R2, R3, c.x, c.w, c.scale, c.rinv, c.u);
    ops::hc_coeffs_backward_weight(r[2], r[3], r[4], r[5], r[6], r[1], R1, R2, R3, c.x, c.rinv,
                                   c.u);
    for (Buffer* b : {&c.h_pre, &c.h_post, &c.h_res, &c.rinv, &c.u}) r.push_back(clone(*b));
    return r;
  });
}

TEST(HcCoeffs, RejectsBadShapes) {
  Hc c(3, 4, 8, 800);
  expect_error([&] {
    ops::hc_coeffs_forward(c.h_pre, c.h_post, c.h_res, c.rinv, c.u, c.x,
                           Buffer({4, 8}, DType::f64), c.scale, c.s_pre, c.s_post, c.s_res, kEps);
  }, {"hc_coeffs_forward", "w is [4, 8]", "[n+2, C] = [6, 8]", "x is [N, n, C] = [3, 4, 8]"});
  expect_error([&] {
    ops::hc_coeffs_forward(c.h_pre, c.h_post, c.h_res, c.rinv, c.u, c.x, c.w, c.scale, c.s_pre,
                           c.s_post, Buffer({16}, DType::f64), kEps);
  }, {"hc_coeffs_forward", "static_res is [16]", "[n, n] = [4, 4]"});
  expect_error([&] {
    ops::hc_coeffs_backward_input(c.x, Buffer({3, 4, 4}, DType::f64), c.h_pre, c.h_post, c.h_res,
                                  c.x, c.w, c.scale, c.rinv, c.u);
  }, {"hc_coeffs_backward_input", "dlogits is [3, 4, 4]", "[N, n, n+2]"});
  expect_error([&] {
    ops::hc_coeffs_backward_weight(c.w, c.scale, c.s_pre, c.s_post, c.s_res, c.u, c.h_pre,
                                   c.h_post, c.h_res, c.x, Buffer({3}, DType::f64), c.u);
  }, {"hc_coeffs_backward_weight", "rinv is [3]", "[N, n]"});
}

}  // namespace
}  // namespace bk::test
