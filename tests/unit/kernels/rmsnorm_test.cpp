#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

constexpr int64_t N = 5, C = 7;
constexpr float kEps = 1e-5f;

TEST(RmsNorm, ForwardMatchesDefinition) {
  Buffer x = randn({N, C}, 10), w = randn({C}, 11), y({N, C}, DType::f64), rstd({N}, DType::f64);
  ops::rmsnorm_forward(y, rstd, x, w, kEps);
  Buffer want_y({N, C}, DType::f64), want_r({N}, DType::f64);
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0;
    for (int64_t c = 0; c < C; ++c) ms += get(x, n * C + c) * get(x, n * C + c) / C;
    const double r = 1 / std::sqrt(ms + double(kEps));
    set(want_r, n, r);
    for (int64_t c = 0; c < C; ++c) set(want_y, n * C + c, get(x, n * C + c) * r * get(w, c));
  }
  EXPECT_LT(rel_err(y, want_y), 1e-14);
  EXPECT_LT(rel_err(rstd, want_r), 1e-14);
}

TEST(RmsNorm, GradientsMatchFiniteDifferences) {
  Buffer x = randn({N, C}, 12), w = randn({C}, 13), R = randn({N, C}, 14);
  Buffer y({N, C}, DType::f64), rstd({N}, DType::f64), dx({N, C}, DType::f64);
  auto loss = [&] {
    ops::rmsnorm_forward(y, rstd, x, w, kEps);
    return weighted_sum(y, R);
  };
  loss();
  ops::rmsnorm_backward_input(dx, R, x, w, rstd);
  Buffer prefill = randn({C}, 15), dw = clone(prefill);
  ops::rmsnorm_backward_weight(dw, R, x, rstd);
  expect_grad("dx", dx, x, loss);
  expect_grad("dw", minus(dw, prefill), w, loss);
}

TEST(RmsNorm, F32MatchesF64) {
  Buffer x = randn({N, C}, 16), w = randn({C}, 17), dy = randn({N, C}, 18);
  auto run = [&](DType dt) {
    Buffer xx = cast(x, dt), ww = cast(w, dt), g = cast(dy, dt);
    std::vector<Buffer> r;
    r.emplace_back(Shape{N, C}, dt);  // y
    r.emplace_back(Shape{N}, dt);     // rstd
    r.emplace_back(Shape{N, C}, dt);  // dx
    r.push_back(cast(randn({C}, 19), dt));  // dw, prefilled
    ops::rmsnorm_forward(r[0], r[1], xx, ww, kEps);
    ops::rmsnorm_backward_input(r[2], g, xx, ww, r[1]);
    ops::rmsnorm_backward_weight(r[3], g, xx, r[1]);
    return r;
  };
  std::vector<Buffer> a = run(DType::f32), b = run(DType::f64);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(rel_err(a[i], b[i]), kF32Tol) << "output " << i;
}

TEST(RmsNorm, RejectsBadShapes) {
  Buffer x = randn({N, C}, 20), y({N, C}, DType::f64), rstd({N}, DType::f64);
  expect_error([&] { ops::rmsnorm_forward(y, rstd, x, Buffer({C + 1}, DType::f64), kEps); },
               {"rmsnorm_forward", "w is [8]", "x is [5, 7]"});
  expect_error([&] { ops::rmsnorm_backward_input(y, y, x, Buffer({C}, DType::f64), Buffer({N + 1}, DType::f64)); },
               {"rmsnorm_backward_input", "rstd is [6]"});
  expect_error([&] { ops::rmsnorm_backward_weight(Buffer({C}, DType::f32), y, x, rstd); },
               {"rmsnorm_backward_weight", "f32", "f64"});
}

}  // namespace
}  // namespace bk::test
