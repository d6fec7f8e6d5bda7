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

}  // namespace
}  // namespace bk::test
