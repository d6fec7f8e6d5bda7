#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

constexpr int64_t B = 2, T = 5, H = 3, D = 8;
constexpr float kTheta = 500.0f;  // small base: high pairs still rotate visibly over 5 steps

TEST(Rope, ForwardMatchesHalfSplitDefinition) {
  Buffer x = randn({B, T, H, D}, 40), y({B, T, H, D}, DType::f64), want({B, T, H, D}, DType::f64);
  ops::rope_forward(y, x, kTheta);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < D / 2; ++i) {
          const int64_t lo = ((b * T + t) * H + h) * D + i, hi = lo + D / 2;
          const double a = double(t) * std::pow(double(kTheta), -2.0 * double(i) / double(D));
          set(want, lo, get(x, lo) * std::cos(a) - get(x, hi) * std::sin(a));
          set(want, hi, get(x, hi) * std::cos(a) + get(x, lo) * std::sin(a));
        }
  EXPECT_LT(rel_err(y, want), 1e-14);
}

TEST(Rope, GradientMatchesFiniteDifferences) {
  Buffer x = randn({B, T, H, D}, 41), R = randn({B, T, H, D}, 42);
  Buffer y({B, T, H, D}, DType::f64), dx({B, T, H, D}, DType::f64);
  ops::rope_backward(dx, R, kTheta);
  expect_grad("dx", dx, x, [&] {
    ops::rope_forward(y, x, kTheta);
    return weighted_sum(y, R);
  });
}

TEST(Rope, InPlaceAndBackwardInvertsForward) {
  Buffer x = randn({B, T, H, D}, 43), y = clone(x);
  ops::rope_forward(y, y, kTheta);  // in place
  EXPECT_GT(rel_err(y, x), 1e-2);   // it did rotate
  ops::rope_backward(y, y, kTheta);
  EXPECT_LT(rel_err(y, x), 1e-14);
}

TEST(Rope, F32MatchesF64) {
  Buffer x = randn({B, T, H, D}, 44);
  Buffer y64({B, T, H, D}, DType::f64), y32({B, T, H, D}, DType::f32);
  ops::rope_forward(y64, x, kTheta);
  ops::rope_forward(y32, cast(x, DType::f32), kTheta);
  EXPECT_LT(rel_err(y32, y64), kF32Tol);
  ops::rope_backward(y64, x, kTheta);
  ops::rope_backward(y32, cast(x, DType::f32), kTheta);
  EXPECT_LT(rel_err(y32, y64), kF32Tol);
}

TEST(Rope, RejectsBadShapes) {
  Buffer odd({B, T, H, 7}, DType::f32), y({B, T, H, D}, DType::f32);
  expect_error([&] { ops::rope_forward(odd, odd, kTheta); }, {"rope_forward", "D even", "[2, 5, 3, 7]"});
  expect_error([&] { ops::rope_backward(y, Buffer({B, T, H + 1, D}, DType::f32), kTheta); },
               {"rope_backward", "dy is [2, 5, 4, 8]"});
}

}  // namespace
}  // namespace bk::test
