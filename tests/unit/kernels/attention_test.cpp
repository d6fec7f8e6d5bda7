#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

// Dk != Dv. T is a parameter: 6 fits in one query block of the kernel (32 queries), 40 spans
// two blocks with a partial last one.
constexpr int64_t B = 2, H = 2, Dk = 5, Dv = 3;
const float kScale = float(1 / std::sqrt(double(Dk)));

class Attention : public ::testing::TestWithParam<int64_t> {
 protected:
  const int64_t T = GetParam();
  int64_t at(int64_t b, int64_t t, int64_t h, int64_t D, int64_t c) const {
    return ((b * T + t) * H + h) * D + c;
  }
  struct Inputs {
    Buffer q, k, v;
    Inputs(int64_t T, uint64_t s, DType dt = DType::f64)
        : q(cast(randn({B, T, H, Dk}, s), dt)),
          k(cast(randn({B, T, H, Dk}, s + 1), dt)),
          v(cast(randn({B, T, H, Dv}, s + 2), dt)) {}
  };
};
INSTANTIATE_TEST_SUITE_P(SeqLen, Attention, ::testing::Values(6, 40));

TEST_P(Attention, ForwardMatchesMaskedSoftmax) {
  Inputs in(T, 60);
  Buffer out({B, T, H, Dv}, DType::f64), lse({B, H, T}, DType::f64);
  ops::attention_forward(out, lse, in.q, in.k, in.v, kScale);
  Buffer want({B, T, H, Dv}, DType::f64), want_lse({B, H, T}, DType::f64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        // Plain softmax over the full row with -inf above the diagonal.
        std::vector<double> s(T);
        for (int64_t j = 0; j < T; ++j) {
          double d = 0;
          for (int64_t c = 0; c < Dk; ++c) d += get(in.q, at(b, i, h, Dk, c)) * get(in.k, at(b, j, h, Dk, c));
          s[j] = j <= i ? kScale * d : -INFINITY;
        }
        double z = 0;
        for (double x : s) z += std::exp(x);
        set(want_lse, (b * H + h) * T + i, std::log(z));
        for (int64_t c = 0; c < Dv; ++c) {
          double o = 0;
          for (int64_t j = 0; j < T; ++j) o += std::exp(s[j]) / z * get(in.v, at(b, j, h, Dv, c));
          set(want, at(b, i, h, Dv, c), o);
        }
      }
  EXPECT_LT(rel_err(out, want), 1e-13);
  EXPECT_LT(rel_err(lse, want_lse), 1e-13);
}

TEST_P(Attention, GradientsMatchFiniteDifferences) {
  Inputs in(T, 61);
  Buffer R = randn({B, T, H, Dv}, 64);
  Buffer out({B, T, H, Dv}, DType::f64), lse({B, H, T}, DType::f64);
  Buffer dq({B, T, H, Dk}, DType::f64), dk({B, T, H, Dk}, DType::f64), dv({B, T, H, Dv}, DType::f64);
  auto loss = [&] {
    ops::attention_forward(out, lse, in.q, in.k, in.v, kScale);
    return weighted_sum(out, R);
  };
  loss();
  // Garbage in the outputs: the backward must overwrite, not accumulate.
  dk = randn({B, T, H, Dk}, 65), dv = randn({B, T, H, Dv}, 66);
  ops::attention_backward(dq, dk, dv, R, out, lse, in.q, in.k, in.v, kScale);
  expect_grad("dq", dq, in.q, loss);
  expect_grad("dk", dk, in.k, loss);
  expect_grad("dv", dv, in.v, loss);
}

TEST_P(Attention, IsCausal) {
  Inputs in(T, 67);
  Buffer out0({B, T, H, Dv}, DType::f64), out1({B, T, H, Dv}, DType::f64), lse({B, H, T}, DType::f64);
  ops::attention_forward(out0, lse, in.q, in.k, in.v, kScale);
  const int64_t t0 = T - 5;  // perturb key and value here (inside the last block), all heads
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t c = 0; c < Dk; ++c) set(in.k, at(b, t0, h, Dk, c), get(in.k, at(b, t0, h, Dk, c)) + 0.5);
      for (int64_t c = 0; c < Dv; ++c) set(in.v, at(b, t0, h, Dv, c), get(in.v, at(b, t0, h, Dv, c)) - 0.5);
    }
  ops::attention_forward(out1, lse, in.q, in.k, in.v, kScale);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        double d = 0;
        for (int64_t c = 0; c < Dv; ++c)
          d = std::max(d, std::abs(get(out1, at(b, t, h, Dv, c)) - get(out0, at(b, t, h, Dv, c))));
        if (t < t0) EXPECT_EQ(d, 0.0) << "past query " << t << " saw a future key";
        else EXPECT_GT(d, 1e-3) << "query " << t << " ignored key " << t0;
      }
}

TEST_P(Attention, F32MatchesF64) {
  auto run = [&](DType dt) {
    Inputs in(T, 68, dt);
    Buffer dout = cast(randn({B, T, H, Dv}, 71), dt);
    std::vector<Buffer> r;
    r.emplace_back(Shape{B, T, H, Dv}, dt);
    r.emplace_back(Shape{B, H, T}, dt);
    r.emplace_back(Shape{B, T, H, Dk}, dt);
    r.emplace_back(Shape{B, T, H, Dk}, dt);
    r.emplace_back(Shape{B, T, H, Dv}, dt);
    ops::attention_forward(r[0], r[1], in.q, in.k, in.v, kScale);
    ops::attention_backward(r[2], r[3], r[4], dout, r[0], r[1], in.q, in.k, in.v, kScale);
    return r;
  };
  std::vector<Buffer> a = run(DType::f32), b = run(DType::f64);
  for (size_t k = 0; k < a.size(); ++k) EXPECT_LT(rel_err(a[k], b[k]), kF32Tol) << "output " << k;
}

TEST(AttentionArgs, RejectsBadShapes) {
  constexpr int64_t T = 6;
  Buffer q({B, T, H, Dk}, DType::f32), k({B, T, H, Dk}, DType::f32), v({B, T, H, Dv}, DType::f32);
  Buffer out({B, T, H, Dv}, DType::f32), lse({B, H, T}, DType::f32);
  expect_error([&] { ops::attention_forward(out, Buffer({B, T, H}, DType::f32), q, k, v, kScale); },
               {"attention_forward", "lse is [2, 6, 2]", "lse[B,H,T]"});
  expect_error([&] { ops::attention_forward(out, lse, q, v, v, kScale); },
               {"attention_forward", "k is [2, 6, 2, 3]", "q is [2, 6, 2, 5]"});
  Buffer bad({B, T, H, Dv}, DType::f32);
  expect_error([&] { ops::attention_backward(bad, k, v, out, out, lse, q, k, v, kScale); },
               {"attention_backward", "dq is [2, 6, 2, 3]"});
}

}  // namespace
}  // namespace bk::test
