#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

constexpr int64_t kSize = 37;
constexpr int kSteps = 6;

AdamWStep hyper(int64_t step) {
  AdamWStep p;
  p.lr = 0.02f;
  p.beta1 = 0.8f;
  p.beta2 = 0.95f;
  p.eps = 1e-3f;  // large, so its placement (sqrt(vhat) + eps) is visible
  p.weight_decay = 0.1f;
  p.grad_scale = 0.5f;
  p.step = step;
  return p;
}

// PyTorch's AdamW written out per scalar, in double: decay first, then the Adam step with the
// bias corrections folded into the step size and the denominator.
struct Reference {
  std::vector<double> w, m, v;
  void step(const Tensor& g, const AdamWStep& p) {
    const double b1 = p.beta1, b2 = p.beta2;
    const double bc1 = 1 - std::pow(b1, double(p.step)), bc2 = 1 - std::pow(b2, double(p.step));
    for (size_t i = 0; i < w.size(); ++i) {
      const double gi = get(g, int64_t(i)) * double(p.grad_scale);
      w[i] *= 1 - double(p.lr) * double(p.weight_decay);
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      const double denom = std::sqrt(v[i]) / std::sqrt(bc2) + double(p.eps);
      w[i] -= double(p.lr) / bc1 * m[i] / denom;
    }
  }
};

double max_rel(const Tensor& got, const std::vector<double>& want) {
  double d = 0, m = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    d = std::max(d, std::abs(get(got, int64_t(i)) - want[i]));
    m = std::max(m, std::abs(want[i]));
  }
  return d / m;
}

void run_against_reference(DType dt, double tol) {
  Buffer w0 = randn({kSize}, 100);
  Reference ref;
  for (int64_t i = 0; i < kSize; ++i) ref.w.push_back(get(w0, i));
  ref.m.assign(kSize, 0);
  ref.v.assign(kSize, 0);
  Buffer w = cast(w0, dt), m({kSize}, dt), v({kSize}, dt);
  for (int t = 1; t <= kSteps; ++t) {
    Buffer g = cast(randn({kSize}, 100 + t), dt);
    ops::adamw_update(w, g, m, v, hyper(t));
    ref.step(g, hyper(t));
  }
  EXPECT_LT(max_rel(w, ref.w), tol) << dtype_name(dt) << " w";
  EXPECT_LT(max_rel(m, ref.m), tol) << dtype_name(dt) << " m";
  EXPECT_LT(max_rel(v, ref.v), tol) << dtype_name(dt) << " v";
  EXPECT_GT(max_rel(w, std::vector<double>(w0.ptr<double>(), w0.ptr<double>() + kSize)), 1e-3)
      << "weights did not move";
}

TEST(AdamW, F64MatchesScalarReference) { run_against_reference(DType::f64, 1e-13); }
TEST(AdamW, F32MatchesScalarReference) { run_against_reference(DType::f32, 1e-6); }

TEST(AdamW, RejectsBadArguments) {
  Buffer w({4}, DType::f32), g({5}, DType::f32), m({4}, DType::f32), v({4}, DType::f32);
  expect_error([&] { ops::adamw_update(w, g, m, v, hyper(1)); }, {"adamw_update", "g is [5]"});
  expect_error([&] { ops::adamw_update(w, m, m, v, hyper(0)); }, {"adamw_update", "step is 0"});
}

// The many-tensor step is the one-tensor step on each tensor with its own weight decay: the
// same bits, over tensors of several sizes (one empty) and two decays.
TEST(AdamW, ManyTensorsMatchOneAtATime) {
  const std::vector<int64_t> sizes = {37, 1, 0, 300};
  const std::vector<float> decays = {0.1f, 0.0f, 0.1f, 0.0f};
  std::vector<Buffer> w1, m1, v1, g, w2, m2, v2;
  for (size_t i = 0; i < sizes.size(); ++i) {
    w1.push_back(cast(randn({sizes[i]}, 200 + i), DType::f32));
    w2.push_back(clone(w1.back()));
    for (auto* b : {&m1, &v1, &m2, &v2}) b->emplace_back(Shape{sizes[i]}, DType::f32);
    g.push_back(cast(randn({sizes[i]}, 300 + i), DType::f32));
  }
  for (int t = 1; t <= 3; ++t) {
    std::vector<Tensor> tw, tg, tm, tv;
    for (size_t i = 0; i < sizes.size(); ++i) {
      AdamWStep p = hyper(t);
      p.weight_decay = decays[i];
      ops::adamw_update(w1[i], g[i], m1[i], v1[i], p);
      tw.push_back(w2[i]), tg.push_back(g[i]), tm.push_back(m2[i]), tv.push_back(v2[i]);
    }
    AdamWStep p = hyper(t);
    p.weight_decay = 123.0f;  // ignored: the list's decays apply
    ops::adamw_update_many(tw, tg, tm, tv, decays, p);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(bitwise_equal(w1[i], w2[i])) << "w" << i;
    EXPECT_TRUE(bitwise_equal(m1[i], m2[i])) << "m" << i;
    EXPECT_TRUE(bitwise_equal(v1[i], v2[i])) << "v" << i;
  }
  EXPECT_FALSE(bitwise_equal(w1[0], cast(randn({37}, 200), DType::f32)));  // not vacuous: w moved
  std::vector<Tensor> one = {w2[0]};
  expect_error([&] { ops::adamw_update_many(one, one, one, {}, {0.1f}, hyper(1)); },
               {"adamw_update_many", "0 v"});
}

TEST(SumSquares, ManyTensorsMatchOneAtATime) {
  std::vector<Buffer> xs;
  std::vector<Tensor> ts;
  for (int64_t n : {int64_t(70001), int64_t(3), int64_t(0)}) {
    xs.push_back(cast(randn({n}, 400 + uint64_t(n)), DType::f32));
    ts.push_back(xs.back());
  }
  const std::vector<double> got = ops::sum_squares_many(ts);
  ASSERT_EQ(got.size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(got[i], ops::sum_squares(ts[i])) << i;
  EXPECT_GT(got[0], 0.0);
  Buffer d = cast(randn({4}, 9), DType::f64);
  expect_error([&] { ops::sum_squares_many({ts[0], d}); }, {"sum_squares_many", "one dtype"});
  EXPECT_TRUE(ops::sum_squares_many({}).empty());
}

}  // namespace
}  // namespace bk::test
