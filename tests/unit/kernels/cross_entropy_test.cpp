#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

constexpr int64_t N = 5, V = 7;
const std::vector<int32_t> kTargets = {3, 0, -1, 6, 3};  // row 2 is ignored
constexpr float kGradScale = 0.37f;

TEST(CrossEntropy, ForwardMatchesDefinitionAndIgnoresNegativeTargets) {
  Buffer logits = randn({N, V}, 80, 2.0), losses({N}, DType::f64);
  ops::cross_entropy_forward(losses, logits, ids(kTargets));
  for (int64_t n = 0; n < N; ++n) {
    double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(get(logits, n * V + v));
    const double want = kTargets[n] < 0 ? 0.0 : std::log(z) - get(logits, n * V + kTargets[n]);
    EXPECT_NEAR(get(losses, n), want, 1e-13) << "row " << n;
  }
}

TEST(CrossEntropy, StableForLargeLogits) {
  Buffer logits({2, 3}, DType::f32), losses({2}, DType::f32), dl({2, 3}, DType::f32);
  const float x[6] = {1000, 1001, 999, -1000, -1001, -999};
  std::copy_n(x, 6, logits.ptr<float>());
  ops::cross_entropy_forward(losses, logits, ids({1, 2}));
  ops::cross_entropy_backward(dl, logits, ids({1, 2}), 1.0f);
  const double want = std::log(std::exp(-1.0) + 1 + std::exp(-2.0));  // same for both rows
  EXPECT_NEAR(get(losses, 0), want, 1e-6);
  EXPECT_NEAR(get(losses, 1), want, 1e-6);
  EXPECT_NEAR(get(dl, 1), 1 / (std::exp(-1.0) + 1 + std::exp(-2.0)) - 1, 1e-6);
}

// The backward is the gradient of grad_scale * sum(losses).
TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  Buffer logits = randn({N, V}, 81, 2.0), losses({N}, DType::f64), ones({N}, DType::f64);
  for (int64_t n = 0; n < N; ++n) set(ones, n, kGradScale);
  Buffer tg = ids(kTargets), dl = randn({N, V}, 82);  // garbage: must be overwritten
  ops::cross_entropy_backward(dl, logits, tg, kGradScale);
  expect_grad("dlogits", dl, logits, [&] {
    ops::cross_entropy_forward(losses, logits, tg);
    return weighted_sum(losses, ones);
  });
  for (int64_t v = 0; v < V; ++v) EXPECT_EQ(get(dl, 2 * V + v), 0.0) << "ignored row, column " << v;
}

TEST(CrossEntropy, ZeroGradScaleGivesZeroGradient) {  // e.g. a micro-batch of ignored tokens
  Buffer logits = randn({N, V}, 85, 2.0, DType::f32), dl = randn({N, V}, 86, 1.0, DType::f32);
  ops::cross_entropy_backward(dl, logits, ids(kTargets), 0.0f);
  EXPECT_EQ(max_abs(dl), 0.0);
}

TEST(CrossEntropy, InPlaceBackward) {  // dlogits may overwrite the logits (saves a [N,V] buffer)
  Buffer logits = randn({N, V}, 83, 2.0), dl({N, V}, DType::f64), tg = ids(kTargets);
  ops::cross_entropy_backward(dl, logits, tg, kGradScale);
  ops::cross_entropy_backward(logits, logits, tg, kGradScale);
  EXPECT_TRUE(bitwise_equal(logits, dl));
}

TEST(CrossEntropy, F32MatchesF64) {
  Buffer logits = randn({N, V}, 84, 2.0), tg = ids(kTargets);
  Buffer l64({N}, DType::f64), l32({N}, DType::f32), d64({N, V}, DType::f64), d32({N, V}, DType::f32);
  Buffer logits32 = cast(logits, DType::f32);
  ops::cross_entropy_forward(l64, logits, tg);
  ops::cross_entropy_forward(l32, logits32, tg);
  ops::cross_entropy_backward(d64, logits, tg, kGradScale);
  ops::cross_entropy_backward(d32, logits32, tg, kGradScale);
  EXPECT_LT(rel_err(l32, l64), kF32Tol);
  EXPECT_LT(rel_err(d32, d64), kF32Tol);
}

TEST(CrossEntropy, RejectsBadTargetsAndShapes) {
  Buffer logits({N, V}, DType::f32), losses({N}, DType::f32);
  expect_error([&] { ops::cross_entropy_forward(losses, logits, ids({0, 1, 2, 7, 0})); },
               {"cross_entropy_forward", "target id 7 at row 3", "[0, 7)"});
  expect_error([&] { ops::cross_entropy_backward(logits, logits, ids({0, 1, 2, 3, 99}), 1.0f); },
               {"cross_entropy_backward", "target id 99 at row 4"});
  expect_error([&] { ops::cross_entropy_forward(losses, logits, ids({0, 1})); },
               {"cross_entropy_forward", "targets is [2]"});
  expect_error([&] { ops::cross_entropy_backward(Buffer({N, V + 1}, DType::f32), logits, ids(kTargets), 1.0f); },
               {"cross_entropy_backward", "dlogits is [5, 8]"});
}

}  // namespace
}  // namespace bk::test
