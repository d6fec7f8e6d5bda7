#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

constexpr int64_t N = 4, F = 9;

TEST(SwiGlu, ForwardMatchesDefinition) {
  Buffer g = randn({N, F}, 50, 2.0), u = randn({N, F}, 51), out({N, F}, DType::f64);
  ops::swiglu_forward(out, g, u);
  Buffer want({N, F}, DType::f64);
  for (int64_t i = 0; i < N * F; ++i) {
    const double gi = get(g, i);
    set(want, i, gi / (1 + std::exp(-gi)) * get(u, i));
  }
  EXPECT_LT(rel_err(out, want), 1e-14);
}

TEST(SwiGlu, GradientsMatchFiniteDifferences) {
  Buffer g = randn({N, F}, 52, 2.0), u = randn({N, F}, 53), R = randn({N, F}, 54);
  Buffer out({N, F}, DType::f64), dg({N, F}, DType::f64), du({N, F}, DType::f64);
  ops::swiglu_backward(dg, du, R, g, u);
  auto loss = [&] {
    ops::swiglu_forward(out, g, u);
    return weighted_sum(out, R);
  };
  expect_grad("dgate", dg, g, loss);
  expect_grad("dup", du, u, loss);
}

TEST(SwiGlu, F32MatchesF64) {
  Buffer g = randn({N, F}, 55, 2.0), u = randn({N, F}, 56), dout = randn({N, F}, 57);
  auto run = [&](DType dt) {
    std::vector<Buffer> r;
    for (int k = 0; k < 3; ++k) r.emplace_back(Shape{N, F}, dt);
    Buffer gg = cast(g, dt), uu = cast(u, dt);
    ops::swiglu_forward(r[0], gg, uu);
    ops::swiglu_backward(r[1], r[2], cast(dout, dt), gg, uu);
    return r;
  };
  std::vector<Buffer> a = run(DType::f32), b = run(DType::f64);
  for (size_t k = 0; k < a.size(); ++k) EXPECT_LT(rel_err(a[k], b[k]), kF32Tol) << "output " << k;
}

TEST(SwiGlu, RejectsBadShapes) {
  Buffer a({N, F}, DType::f32), b({N, F + 1}, DType::f32);
  expect_error([&] { ops::swiglu_forward(a, a, b); }, {"swiglu_forward", "up is [4, 10]"});
  expect_error([&] { ops::swiglu_backward(a, b, a, a, a); }, {"swiglu_backward", "dup is [4, 10]"});
}

}  // namespace
}  // namespace bk::test
