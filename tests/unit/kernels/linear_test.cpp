#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

constexpr int64_t N = 6, I = 5, O = 4;

// Large enough that the kernels split y, dx (260 rows) and dw (150 rows) into several GEMM
// row blocks; every product against a plain loop.
TEST(Linear, MatchesPlainLoopsAcrossRowBlocks) {
  constexpr int64_t n = 260, i = 20, o = 150;
  Buffer x = randn({n, i}, 30), w = randn({o, i}, 31), dy = randn({n, o}, 29);
  Buffer y({n, o}, DType::f64), dx({n, i}, DType::f64), dw0 = randn({o, i}, 28), dw = clone(dw0);
  ops::linear_forward(y, x, w);
  ops::linear_backward_input(dx, dy, w);
  ops::linear_backward_weight(dw, dy, x);
  Buffer want_y({n, o}, DType::f64), want_dx({n, i}, DType::f64), want_dw = clone(dw0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t a = 0; a < o; ++a)
      for (int64_t b = 0; b < i; ++b) {
        set(want_y, r * o + a, get(want_y, r * o + a) + get(x, r * i + b) * get(w, a * i + b));
        set(want_dx, r * i + b, get(want_dx, r * i + b) + get(dy, r * o + a) * get(w, a * i + b));
        set(want_dw, a * i + b, get(want_dw, a * i + b) + get(dy, r * o + a) * get(x, r * i + b));
      }
  EXPECT_LT(rel_err(y, want_y), 1e-13);
  EXPECT_LT(rel_err(dx, want_dx), 1e-13);
  EXPECT_LT(rel_err(dw, want_dw), 1e-13);
}

TEST(Linear, GradientsMatchFiniteDifferences) {
  Buffer x = randn({N, I}, 32), w = randn({O, I}, 33), R = randn({N, O}, 34);
  Buffer y({N, O}, DType::f64), dx({N, I}, DType::f64);
  auto loss = [&] {
    ops::linear_forward(y, x, w);
    return weighted_sum(y, R);
  };
  ops::linear_backward_input(dx, R, w);
  Buffer prefill = randn({O, I}, 35), dw = clone(prefill);
  ops::linear_backward_weight(dw, R, x);
  expect_grad("dx", dx, x, loss);
  expect_grad("dw", minus(dw, prefill), w, loss);
}

// Several row blocks, and sizes that are not multiples of any GEMM kernel's tile.
TEST(Linear, F32MatchesF64) {
  constexpr int64_t n = 267, i = 45, o = 133;
  Buffer x = randn({n, i}, 36), w = randn({o, i}, 37), dy = randn({n, o}, 38), dw0 = randn({o, i}, 39);
  auto run = [&](DType dt) {
    Buffer xx = cast(x, dt), ww = cast(w, dt), g = cast(dy, dt);
    std::vector<Buffer> r;
    r.emplace_back(Shape{n, o}, dt);
    r.emplace_back(Shape{n, i}, dt);
    r.push_back(cast(dw0, dt));
    ops::linear_forward(r[0], xx, ww);
    ops::linear_backward_input(r[1], g, ww);
    ops::linear_backward_weight(r[2], g, xx);
    return r;
  };
  std::vector<Buffer> a = run(DType::f32), b = run(DType::f64);
  for (size_t k = 0; k < a.size(); ++k) EXPECT_LT(rel_err(a[k], b[k]), kF32Tol) << "output " << k;
}

TEST(Linear, RejectsBadShapes) {
  Buffer x({8, 64}, DType::f32), w({32, 65}, DType::f32), y({8, 32}, DType::f32);
  expect_error([&] { ops::linear_forward(y, x, w); },
               {"linear_forward", "x is [8, 64]", "w is [32, 65]", "x[N,I], w[O,I], y[N,O]"});
  expect_error([&] { ops::linear_backward_input(x, Buffer({8, 31}, DType::f32), Buffer({32, 64}, DType::f32)); },
               {"linear_backward_input", "dy is [8, 31]"});
  expect_error([&] { ops::linear_backward_weight(Buffer({32, 64}, DType::bf16), y, x); },
               {"linear_backward_weight", "bf16"});
}

}  // namespace
}  // namespace bk::test
