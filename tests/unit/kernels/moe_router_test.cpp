// moe_router: the choice against a brute-force reference (sort all experts, groups first),
// ties, the bias's role, group limits, gates, finite differences of the backward (with a
// choice that the perturbation cannot flip), f32 against f64, thread independence, errors.
#include <algorithm>
#include <numeric>
#include <utility>

#include "unit/kernels/connector_testing.h"

namespace bk::test {
namespace {

struct Config {
  int64_t E, k;
  int n_groups, topk_groups;
};

int32_t id_at(const Tensor& t, int64_t i) { return t.ptr<int32_t>()[i]; }

// A copy of an i32 table (clone() is for float tensors).
Buffer copy_ids(const Tensor& t) {
  Buffer b(t.shape, DType::i32);
  ops::copy(b, t);
  return b;
}

// The brute-force choice of one token from its (unbiased) scores s and the bias: sort the
// groups by the sum of their two highest biased scores, keep the first topk_groups, sort their
// experts by biased score (ties: lower id), take k. Gates from the unbiased scores.
struct Route {
  std::vector<int32_t> idx;
  std::vector<double> gates;
  std::vector<int> groups;  // the eligible groups
};
Route reference_route(const std::vector<double>& s, const std::vector<double>& bias,
                      const Config& c, double route_scale) {
  const int64_t G = c.E / c.n_groups;
  std::vector<double> b(size_t(c.E));
  for (int64_t e = 0; e < c.E; ++e) b[e] = s[e] + bias[e];
  std::vector<std::pair<double, int>> gs;  // (-group score, group id): ascending sort
  for (int g = 0; g < c.n_groups; ++g) {
    std::vector<double> v(b.begin() + g * G, b.begin() + (g + 1) * G);
    std::sort(v.rbegin(), v.rend());
    gs.push_back({-(v[0] + (G >= 2 ? v[1] : 0.0)), g});
  }
  std::sort(gs.begin(), gs.end());
  Route r;
  std::vector<std::pair<double, int>> cand;  // (-biased score, expert id)
  for (int i = 0; i < c.topk_groups; ++i) {
    const int g = gs[i].second;
    r.groups.push_back(g);
    for (int64_t e = g * G; e < (g + 1) * G; ++e) cand.push_back({-b[e], int(e)});
  }
  std::sort(cand.begin(), cand.end());
  double S = 0;
  for (int64_t j = 0; j < c.k; ++j) {
    r.idx.push_back(cand[j].second);
    S += s[cand[j].second];
  }
  for (int64_t j = 0; j < c.k; ++j) r.gates.push_back(route_scale * s[r.idx[j]] / S);
  return r;
}

struct RouterOut {
  Buffer idx, gates, scores;
};
RouterOut route(const Tensor& logits, const Tensor& bias, int64_t k, int ng, int tg, float rs) {
  const int64_t N = logits.size(0), E = logits.size(1);
  RouterOut o{Buffer({N, k}, DType::i32), nan_buffer({N, k}, logits.dtype),
              nan_buffer({N, E}, logits.dtype)};
  ops::moe_router_forward(o.idx, o.gates, o.scores, logits, bias, ng, tg, rs);
  return o;
}

// Logits from a few values only (so that scores tie often), or normal; bias likewise.
Buffer tied_values(Shape s, uint64_t stream, std::vector<double> values) {
  Buffer b(s, DType::f64);
  Rng rng(7, stream);
  for (int64_t i = 0; i < b.numel(); ++i)
    set(b, i, values[size_t(rng.uniform() * double(values.size()))]);
  return b;
}

void expect_matches_reference(const Config& c, const Tensor& logits, const Tensor& bias,
                              float rs) {
  SCOPED_TRACE(::testing::Message() << "E " << c.E << " k " << c.k << " groups " << c.n_groups
                                    << " topk_groups " << c.topk_groups);
  const int64_t N = logits.size(0), E = c.E, k = c.k;
  RouterOut o = route(logits, bias, k, c.n_groups, c.topk_groups, rs);
  std::vector<double> bv(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) bv[e] = get(bias, e);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> s(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      s[e] = get(o.scores, n * E + e);
      EXPECT_NEAR(s[e], 1 / (1 + std::exp(-get(logits, n * E + e))), 1e-15);
    }
    const Route want = reference_route(s, bv, c, rs);
    double gsum = 0;
    for (int64_t j = 0; j < k; ++j) {
      ASSERT_EQ(id_at(o.idx, n * k + j), want.idx[j]) << "token " << n << " slot " << j;
      EXPECT_NEAR(get(o.gates, n * k + j), want.gates[j], 1e-15);
      gsum += get(o.gates, n * k + j);
      const int g = id_at(o.idx, n * k + j) / int(E / c.n_groups);
      EXPECT_NE(std::find(want.groups.begin(), want.groups.end(), g), want.groups.end())
          << "token " << n << " picked expert " << id_at(o.idx, n * k + j)
          << " outside the eligible groups";
    }
    EXPECT_NEAR(gsum, rs, 1e-14);
  }
}

const std::vector<Config> kConfigs = {
    {8, 2, 1, 1}, {16, 4, 4, 2}, {12, 3, 3, 1}, {6, 6, 3, 3}, {8, 1, 8, 2}, {8, 3, 4, 2},
};

TEST(MoeRouter, ChoiceMatchesBruteForce) {
  constexpr int64_t N = 48;
  uint64_t seed = 100;
  for (const Config& c : kConfigs) {
    // Normal logits and bias; then few distinct values (ties among experts and groups).
    expect_matches_reference(c, randn({N, c.E}, seed), randn({c.E}, seed + 1, 0.1), 1.0f);
    expect_matches_reference(c, tied_values({N, c.E}, seed + 2, {-1.0, 0.0, 0.5, 2.0}),
                             tied_values({c.E}, seed + 3, {0.0, 0.0, 0.25}), 2.5f);
    expect_matches_reference(c, Buffer({N, c.E}, DType::f64), Buffer({c.E}, DType::f64), 1.0f);
    seed += 10;
  }
}

TEST(MoeRouter, TiesGoToTheLowerExpertId) {
  constexpr int64_t E = 6;
  Buffer logits({1, E}, DType::f64), bias({E}, DType::f64);  // all scores 0.5, no bias
  RouterOut o = route(logits, bias, 3, 1, 1, 1.0f);
  for (int j = 0; j < 3; ++j) EXPECT_EQ(id_at(o.idx, j), j);
  set(logits, 4, 1.0);  // expert 4 first, then the lowest ids
  o = route(logits, bias, 3, 1, 1, 1.0f);
  EXPECT_EQ(id_at(o.idx, 0), 4);
  EXPECT_EQ(id_at(o.idx, 1), 0);
  EXPECT_EQ(id_at(o.idx, 2), 1);
  // Groups of 2, all tied: group 0 wins, experts 0 and 1.
  Buffer flat({1, E}, DType::f64);
  o = route(flat, bias, 2, 3, 1, 1.0f);
  EXPECT_EQ(id_at(o.idx, 0), 0);
  EXPECT_EQ(id_at(o.idx, 1), 1);
}

TEST(MoeRouter, BiasSteersTheChoiceButNotTheGates) {
  constexpr int64_t N = 1, E = 6, k = 2;
  Buffer logits({N, E}, DType::f64);
  const double l[E] = {2.0, 1.5, 1.0, 0.5, 0.0, -0.5};
  for (int64_t e = 0; e < E; ++e) set(logits, e, l[e]);
  Buffer no_bias({E}, DType::f64), bias({E}, DType::f64);
  set(bias, 5, 0.9);  // lifts expert 5 (score 0.38) above expert 0 (0.88)
  RouterOut a = route(logits, no_bias, k, 1, 1, 1.0f), b = route(logits, bias, k, 1, 1, 1.0f);
  EXPECT_EQ(id_at(a.idx, 0), 0);
  EXPECT_EQ(id_at(a.idx, 1), 1);
  EXPECT_EQ(id_at(b.idx, 0), 5);
  EXPECT_EQ(id_at(b.idx, 1), 0);
  EXPECT_TRUE(bitwise_equal(a.scores, b.scores));  // the scores never see the bias
  const double s5 = get(b.scores, 5), s0 = get(b.scores, 0);
  EXPECT_NEAR(get(b.gates, 0), s5 / (s5 + s0), 1e-15);  // unbiased: not (s5 + 0.9) / ...
  EXPECT_NEAR(get(b.gates, 1), s0 / (s5 + s0), 1e-15);
  // A bias equal for every expert changes nothing at all.
  Buffer uniform({E}, DType::f64);
  uniform.fill(0.3);
  RouterOut u = route(logits, uniform, k, 1, 1, 1.0f);
  EXPECT_TRUE(bitwise_equal(u.idx, a.idx));
  EXPECT_TRUE(bitwise_equal(u.gates, a.gates));
}

// Group score = sum of the two highest: a group with one very high expert loses to groups with
// two good ones, so plain top-k and group-limited top-k differ.
TEST(MoeRouter, GroupLimitedRouting) {
  constexpr int64_t E = 8, k = 2;
  const double p[E] = {0.99, 0.01, 0.6, 0.6, 0.55, 0.56, 0.1, 0.1};
  Buffer logits({1, E}, DType::f64), bias({E}, DType::f64);
  for (int64_t e = 0; e < E; ++e) set(logits, e, std::log(p[e] / (1 - p[e])));
  RouterOut plain = route(logits, bias, k, 1, 1, 1.0f);
  EXPECT_EQ(id_at(plain.idx, 0), 0);
  RouterOut grouped = route(logits, bias, k, 4, 2, 1.0f);  // groups 1 (1.2) and 2 (1.11)
  EXPECT_EQ(id_at(grouped.idx, 0), 2);
  EXPECT_EQ(id_at(grouped.idx, 1), 3);
  RouterOut one_group = route(logits, bias, k, 4, 1, 1.0f);
  EXPECT_EQ(id_at(one_group.idx, 0), 2);
  EXPECT_EQ(id_at(one_group.idx, 1), 3);
  RouterOut three = route(logits, bias, 3, 4, 2, 1.0f);  // k = 3 from groups 1 and 2
  EXPECT_EQ(id_at(three.idx, 2), 5);
  // All groups eligible, or one group: plain top-k, bit for bit, on random input.
  Buffer rl = randn({40, 12}, 30), rb = randn({12}, 31, 0.2);
  RouterOut ref = route(rl, rb, 3, 1, 1, 1.5f);
  for (auto [ng, tg] : {std::pair{2, 2}, std::pair{3, 3}, std::pair{6, 6}, std::pair{12, 12}}) {
    RouterOut o = route(rl, rb, 3, ng, tg, 1.5f);
    EXPECT_TRUE(bitwise_equal(o.idx, ref.idx)) << ng << " groups";
    EXPECT_TRUE(bitwise_equal(o.gates, ref.gates)) << ng << " groups";
  }
}

// Logits whose biased scores are well apart (spacing 0.25 in logit before the bias, bias
// about 0.002), so a 1e-6 perturbation cannot change the choice; the test asserts it doesn't.
Buffer separated_logits(int64_t N, int64_t E, uint64_t stream) {
  Buffer b({N, E}, DType::f64);
  Rng rng(11, stream);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int> perm(static_cast<size_t>(E));
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t i = E - 1; i > 0; --i)
      std::swap(perm[i], perm[size_t(rng.uniform() * double(i + 1))]);
    for (int64_t e = 0; e < E; ++e)
      set(b, n * E + e, -1.5 + 0.25 * perm[e] + 0.02 * rng.uniform());
  }
  return b;
}

TEST(MoeRouter, BackwardMatchesFiniteDifferences) {
  constexpr int64_t N = 6;
  for (const Config& c : {Config{8, 3, 1, 1}, Config{12, 2, 3, 1}, Config{8, 4, 4, 2}}) {
    SCOPED_TRACE(::testing::Message() << "E " << c.E << " k " << c.k << " groups " << c.n_groups);
    for (bool with_extra : {false, true}) {
      SCOPED_TRACE(with_extra ? "with dscores_extra" : "without dscores_extra");
      const float rs = 2.5f;
      Buffer logits = separated_logits(N, c.E, 40 + c.E), bias = randn({c.E}, 41, 0.002);
      Buffer R = randn({N, c.k}, 42), R2 = randn({N, c.E}, 43);
      RouterOut o = route(logits, bias, c.k, c.n_groups, c.topk_groups, rs);
      const Buffer idx0 = copy_ids(o.idx);
      int flips = 0;
      auto loss = [&] {
        ops::moe_router_forward(o.idx, o.gates, o.scores, logits, bias, c.n_groups,
                                c.topk_groups, rs);
        flips += !bitwise_equal(o.idx, idx0);
        return weighted_sum(o.gates, R) + (with_extra ? weighted_sum(o.scores, R2) : 0.0);
      };
      loss();
      Buffer dlogits = nan_buffer({N, c.E});
      ops::moe_router_backward(dlogits, R, with_extra ? Tensor(R2) : Tensor{}, o.scores, o.idx,
                               rs);
      expect_grad("dlogits", dlogits, logits, loss);
      EXPECT_EQ(flips, 0) << "the top-k choice changed under the perturbation";
      // dlogits may overwrite dscores_extra in place.
      if (with_extra) {
        loss();  // the outputs at the unperturbed logits again
        Buffer inplace = clone(R2);
        ops::moe_router_backward(inplace, R, inplace, o.scores, o.idx, rs);
        EXPECT_TRUE(bitwise_equal(inplace, dlogits));
      }
    }
  }
}

// The balance loss's score gradient fed to the router as dscores_extra: FD of the loss as a
// function of the logits (idx, hence f, fixed by the separated choice).
TEST(MoeRouter, BalanceLossGradientThroughTheRouter) {
  constexpr int64_t N = 8, E = 8, k = 2;
  constexpr int B = 2;
  const float rs = 2.5f, alpha = 0.8f;
  Buffer logits = separated_logits(N, E, 45), bias = randn({E}, 46, 0.002), R = randn({N, k}, 47);
  for (bool with_gates : {false, true}) {
    SCOPED_TRACE(with_gates ? "gates and balance loss" : "balance loss alone");
    RouterOut o = route(logits, bias, k, 2, 1, rs);
    const Buffer idx0 = copy_ids(o.idx);
    int flips = 0;
    Buffer dgates = with_gates ? clone(R) : Buffer({N, k}, DType::f64);
    auto loss = [&] {
      ops::moe_router_forward(o.idx, o.gates, o.scores, logits, bias, 2, 1, rs);
      flips += !bitwise_equal(o.idx, idx0);
      return weighted_sum(o.gates, dgates) +
             ops::moe_balance_loss_forward(o.scores, o.idx, B, alpha);
    };
    loss();
    Buffer dscores({N, E}, DType::f64), dlogits = nan_buffer({N, E});
    ops::moe_balance_loss_backward(dscores, o.scores, o.idx, B, alpha, 1.0f);
    ops::moe_router_backward(dlogits, dgates, dscores, o.scores, o.idx, rs);
    expect_grad("dlogits", dlogits, logits, loss);
    EXPECT_EQ(flips, 0) << "the top-k choice changed under the perturbation";
  }
}

TEST(MoeRouter, UnselectedExpertsGetOnlyTheExtraGradient) {
  constexpr int64_t N = 4, E = 8, k = 2;
  Buffer logits = separated_logits(N, E, 50), bias({E}, DType::f64), R = randn({N, k}, 51);
  RouterOut o = route(logits, bias, k, 1, 1, 1.0f);
  Buffer dlogits = nan_buffer({N, E});
  ops::moe_router_backward(dlogits, R, Tensor{}, o.scores, o.idx, 1.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t e = 0; e < E; ++e) {
      const bool chosen = id_at(o.idx, n * k) == e || id_at(o.idx, n * k + 1) == e;
      if (!chosen) EXPECT_EQ(get(dlogits, n * E + e), 0.0);
      else EXPECT_NE(get(dlogits, n * E + e), 0.0);
    }
}

TEST(MoeRouter, F32MatchesF64AndThreads) {
  constexpr int64_t N = 700, E = 16, k = 4;  // N * E above the parallel thresholds
  Buffer logits = separated_logits(N, E, 60), bias = randn({E}, 61, 0.002);
  Buffer dg = randn({N, k}, 62), extra = randn({N, E}, 63);
  auto run = [&](DType dt) {
    Buffer l = cast(logits, dt), b = cast(bias, dt);
    std::vector<Buffer> r;
    RouterOut o = route(l, b, k, 4, 2, 2.5f);
    Buffer dlogits({N, E}, dt);
    ops::moe_router_backward(dlogits, cast(dg, dt), cast(extra, dt), o.scores, o.idx, 2.5f);
    r.push_back(std::move(o.idx));
    r.push_back(std::move(o.gates));
    r.push_back(std::move(o.scores));
    r.push_back(std::move(dlogits));
    return r;
  };
  std::vector<Buffer> a = run(DType::f32), b = run(DType::f64);
  EXPECT_TRUE(bitwise_equal(a[0], b[0])) << "idx";
  for (size_t i = 1; i < a.size(); ++i) EXPECT_LT(rel_err(a[i], b[i]), kF32Tol) << "output " << i;
  expect_same_bits_any_threads("moe_router", [&] { return run(DType::f32); });
}

TEST(MoeRouter, RejectsBadArguments) {
  constexpr int64_t N = 3, E = 8;
  Buffer logits = randn({N, E}, 70), bias({E}, DType::f64);
  Buffer idx({N, 2}, DType::i32), gates({N, 2}, DType::f64), scores({N, E}, DType::f64);
  expect_error([&] { ops::moe_router_forward(idx, gates, scores, logits, bias, 3, 1, 1.0f); },
               {"moe_router_forward", "n_groups = 3", "E = 8"});
  expect_error([&] { ops::moe_router_forward(idx, gates, scores, logits, bias, 4, 5, 1.0f); },
               {"moe_router_forward", "topk_groups = 5", "n_groups = 4"});
  expect_error([&] { ops::moe_router_forward(idx, gates, scores, logits, bias, 4, 0, 1.0f); },
               {"moe_router_forward", "topk_groups = 0"});
  Buffer idx3({N, 3}, DType::i32), gates3({N, 3}, DType::f64);
  expect_error([&] { ops::moe_router_forward(idx3, gates3, scores, logits, bias, 4, 1, 1.0f); },
               {"moe_router_forward", "top_k = 3", "topk_groups = 1 groups of 2"});
  Buffer idx9({N, 9}, DType::i32), gates9({N, 9}, DType::f64);
  expect_error([&] { ops::moe_router_forward(idx9, gates9, scores, logits, bias, 1, 1, 1.0f); },
               {"moe_router_forward", "top_k = 9", "E = 8"});
  Buffer bias9({E + 1}, DType::f64);
  expect_error([&] { ops::moe_router_forward(idx, gates, scores, logits, bias9, 1, 1, 1.0f); },
               {"moe_router_forward", "bias is [9]", "logits is [3, 8]"});
  expect_error(
      [&] { ops::moe_router_forward(idx, gates3, scores, logits, bias, 1, 1, 1.0f); },
      {"moe_router_forward", "gates is [3, 3]", "idx is [3, 2]"});
  Buffer idx_f64({N, 2}, DType::f64);
  expect_error([&] { ops::moe_router_forward(idx_f64, gates, scores, logits, bias, 1, 1, 1.0f); },
               {"moe_router_forward", "idx", "i32"});
  Buffer dlogits({N, E}, DType::f64);
  idx.ptr<int32_t>()[3] = 8;
  expect_error([&] { ops::moe_router_backward(dlogits, gates, Tensor{}, scores, idx, 1.0f); },
               {"moe_router_backward", "idx[1, 1] = 8", "[0, 8)"});
  idx.ptr<int32_t>()[3] = 0;
  Buffer extra7({N, E - 1}, DType::f64), extra_f32({N, E}, DType::f32);
  expect_error([&] { ops::moe_router_backward(dlogits, gates, extra7, scores, idx, 1.0f); },
               {"moe_router_backward", "dscores_extra is [3, 7]", "scores is [3, 8]"});
  expect_error([&] { ops::moe_router_backward(dlogits, gates, extra_f32, scores, idx, 1.0f); },
               {"moe_router_backward", "dscores_extra", "f32"});
}

}  // namespace
}  // namespace bk::test
