// moe_balance_loss: hand-computed values, a literal scalar reference (f_i, P_i, then the sum),
// finite differences of the backward (accumulating, grad_scale), f32 against f64, thread
// independence, errors. (Its gradient through the router: moe_router_test.cpp.)
#include <set>
#include <tuple>

#include "unit/kernels/connector_testing.h"

namespace bk::test {
namespace {

Buffer table(int64_t N, int64_t k, const std::vector<int32_t>& v) {
  Buffer b({N, k}, DType::i32);
  for (int64_t i = 0; i < N * k; ++i) b.ptr<int32_t>()[i] = v[size_t(i)];
  return b;
}

// The definition, word for word: per sequence f_i = E/(kT) #{t : i in idx[t]} and
// P_i = (1/T) sum_t s_{t,i} / sum_e s_{t,e}; loss = alpha/B sum_seq sum_i f_i P_i.
double reference_loss(const Tensor& scores, const Tensor& idx, int B, double alpha) {
  const int64_t N = scores.size(0), E = scores.size(1), k = idx.size(1), T = N / B;
  double loss = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> f(size_t(E), 0.0), P(size_t(E), 0.0);
    for (int64_t t = b * T; t < (b + 1) * T; ++t) {
      std::set<int32_t> chosen;
      for (int64_t j = 0; j < k; ++j) chosen.insert(idx.ptr<int32_t>()[t * k + j]);
      for (int32_t i : chosen) f[i] += double(E) / double(k * T);
      double S = 0;
      for (int64_t e = 0; e < E; ++e) S += get(scores, t * E + e);
      for (int64_t e = 0; e < E; ++e) P[e] += get(scores, t * E + e) / S / double(T);
    }
    for (int64_t i = 0; i < E; ++i) loss += f[i] * P[i];
  }
  return alpha / B * loss;
}

// Positive scores, as the router's sigmoids are.
Buffer positive_scores(int64_t N, int64_t E, uint64_t stream, DType dt = DType::f64) {
  Buffer s = randn({N, E}, stream, 1.0, dt);
  for (int64_t i = 0; i < s.numel(); ++i) set(s, i, 1 / (1 + std::exp(-get(s, i))));
  return s;
}

// k distinct experts per token, drawn uniformly.
Buffer random_idx(int64_t N, int64_t k, int64_t E, uint64_t stream) {
  Buffer idx({N, k}, DType::i32);
  Rng rng(5, stream);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < k; ++j) {
      int32_t e;
      bool dup;
      do {
        e = int32_t(rng.uniform() * double(E));
        dup = false;
        for (int64_t i = 0; i < j; ++i) dup = dup || idx.ptr<int32_t>()[n * k + i] == e;
      } while (dup);
      idx.ptr<int32_t>()[n * k + j] = e;
    }
  return idx;
}

TEST(MoeBalance, KnownValues) {
  // Perfectly balanced routing (every expert chosen by kT/E = 2 tokens of each sequence) and
  // uniform scores: f_i = 1, P_i = 1/E, so each sequence gives sum_i f_i P_i = 1: loss = alpha.
  constexpr int64_t E = 4, k = 2, T = 4;
  constexpr int B = 2;
  Buffer s({B * T, E}, DType::f64);
  s.fill(0.3);
  Buffer idx = table(B * T, k, {0, 1, 2, 3, 0, 2, 1, 3, 3, 2, 1, 0, 1, 3, 0, 2});
  EXPECT_NEAR(ops::moe_balance_loss_forward(s, idx, B, 0.25f), 0.25, 1e-15);
  // E = 2, k = 1, T = 2: both tokens pick expert 0, so f = (2, 0); s' rows (0.75, 0.25) and
  // (0.5, 0.5) give P_0 = 0.625: loss = alpha * 2 * 0.625.
  Buffer s2({2, 2}, DType::f64);
  const double v[4] = {0.6, 0.2, 0.5, 0.5};
  for (int i = 0; i < 4; ++i) set(s2, i, v[i]);
  EXPECT_NEAR(ops::moe_balance_loss_forward(s2, table(2, 1, {0, 0}), 1, 0.1f),
              double(0.1f) * 1.25, 1e-15);
  // A token listing one expert twice counts once for it: f = (2/(2*2)) * (2, 1) ...
  Buffer s3({2, 2}, DType::f64);
  s3.fill(0.5);
  EXPECT_NEAR(ops::moe_balance_loss_forward(s3, table(2, 2, {0, 0, 0, 1}), 1, 1.0f),
              (1.0 * 0.5 + 0.5 * 0.5), 1e-15);
  // With f uniform (balanced routing), sum_i f_i s'_i = 1 whatever the scores: gradient 0.
  Buffer d({B * T, E}, DType::f64);
  ops::moe_balance_loss_backward(d, s, idx, B, 0.25f, 1.0f);
  EXPECT_LT(max_abs(d), 1e-16);
}

TEST(MoeBalance, ForwardMatchesScalarReference) {
  for (auto [N, E, k, B] : {std::tuple{12, 6, 2, 3}, std::tuple{40, 16, 4, 1},
                            std::tuple{32, 8, 3, 8}}) {
    SCOPED_TRACE(::testing::Message() << "N " << N << " E " << E << " k " << k << " B " << B);
    Buffer idx = random_idx(N, k, E, N + E);
    for (DType dt : {DType::f64, DType::f32}) {
      Buffer s = positive_scores(N, E, N * E, dt);
      const double want = reference_loss(s, idx, B, double(0.003f));
      EXPECT_NEAR(ops::moe_balance_loss_forward(s, idx, B, 0.003f), want, 1e-13 * want);
    }
  }
}

TEST(MoeBalance, BackwardMatchesFiniteDifferences) {
  constexpr int64_t N = 10, E = 6, k = 2;
  constexpr int B = 2;
  const float alpha = 1.5f, grad_scale = 0.7f;
  Buffer s = positive_scores(N, E, 40), idx = random_idx(N, k, E, 41);
  Buffer prefill = randn({N, E}, 42), ds = clone(prefill);
  ops::moe_balance_loss_backward(ds, s, idx, B, alpha, grad_scale);
  expect_grad("dscores", minus(ds, prefill), s, [&] {
    return double(grad_scale) * ops::moe_balance_loss_forward(s, idx, B, alpha);
  });
}

std::vector<Buffer> balance_all(DType dt) {
  constexpr int64_t N = 2048, E = 16, k = 4;  // N * E above the parallel threshold
  Buffer s = positive_scores(N, E, 50, dt), idx = random_idx(N, k, E, 51);
  std::vector<Buffer> r;
  r.push_back(randn({N, E}, 52, 1.0, dt));
  ops::moe_balance_loss_backward(r[0], s, idx, 4, 0.01f, 3.0f);
  r.emplace_back(Shape{1}, DType::f64);
  set(r[1], 0, ops::moe_balance_loss_forward(s, idx, 4, 0.01f));
  return r;
}

TEST(MoeBalance, F32MatchesF64AndThreads) {
  std::vector<Buffer> a = balance_all(DType::f32), b = balance_all(DType::f64);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(rel_err(a[i], b[i]), kF32Tol) << "output " << i;
  expect_same_bits_any_threads("moe_balance", [] { return balance_all(DType::f32); });
}

TEST(MoeBalance, RejectsBadArguments) {
  Buffer s = positive_scores(6, 4, 60), idx = random_idx(6, 2, 4, 61);
  expect_error([&] { ops::moe_balance_loss_forward(s, idx, 4, 1.0f); },
               {"moe_balance_loss_forward", "N = 6", "B = 4"});
  expect_error([&] { ops::moe_balance_loss_forward(s, idx, 0, 1.0f); },
               {"moe_balance_loss_forward", "B = 0"});
  expect_error([&] { ops::moe_balance_loss_forward(s, random_idx(5, 2, 4, 62), 1, 1.0f); },
               {"moe_balance_loss_forward", "scores is [6, 4]", "idx is [5, 2]"});
  idx.ptr<int32_t>()[3] = 4;
  expect_error([&] { ops::moe_balance_loss_forward(s, idx, 1, 1.0f); },
               {"moe_balance_loss_forward", "idx[1, 1] = 4"});
  idx.ptr<int32_t>()[3] = 0;
  expect_error(
      [&] { ops::moe_balance_loss_backward(Buffer({6, 5}, DType::f64), s, idx, 1, 1.0f, 1.0f); },
      {"moe_balance_loss_backward", "dscores is [6, 5]", "scores is [6, 4]"});
  expect_error(
      [&] { ops::moe_balance_loss_backward(Buffer({6, 4}, DType::f32), s, idx, 1, 1.0f, 1.0f); },
      {"moe_balance_loss_backward", "f32"});
}

}  // namespace
}  // namespace bk::test
