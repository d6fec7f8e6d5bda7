// moe_plan, moe_permute, moe_unpermute: the plan against a brute-force layout (idle experts,
// uneven loads), permute + unpermute round trip, token outputs equal to the explicitly summed
// outputs of linear experts, finite differences of the backwards, f32 against f64, thread
// independence, errors.
#include "unit/kernels/connector_testing.h"

namespace bk::test {
namespace {

int32_t id_at(const Tensor& t, int64_t i) { return t.ptr<int32_t>()[i]; }

// A copy of an i32 table (clone() is for float tensors).
Buffer copy_ids(const Tensor& t) {
  Buffer b(t.shape, DType::i32);
  ops::copy(b, t);
  return b;
}

// idx [N,k]: k distinct experts per token, drawn with weights w (0: the expert is never used).
Buffer random_idx(int64_t N, int64_t k, const std::vector<double>& w, uint64_t stream) {
  Buffer idx({N, k}, DType::i32);
  Rng rng(3, stream);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> left = w;
    for (int64_t j = 0; j < k; ++j) {
      double total = 0;
      for (double x : left) total += x;
      double u = rng.uniform() * total;
      int64_t e = 0;
      while (e + 1 < int64_t(left.size()) && (left[e] == 0 || u >= left[e])) u -= left[e++];
      while (left[e] == 0) --e;  // rounding at the end of the scan
      idx.ptr<int32_t>()[n * k + j] = int32_t(e);
      left[e] = 0;
    }
  }
  return idx;
}

struct Plan {
  Buffer rows, offsets;
};
Plan plan(const Tensor& idx, int64_t E) {
  Plan p{Buffer(idx.shape, DType::i32), Buffer({E + 1}, DType::i32)};
  for (int64_t i = 0; i < p.rows.numel(); ++i) p.rows.ptr<int32_t>()[i] = -7;  // must be written
  for (int64_t e = 0; e <= E; ++e) p.offsets.ptr<int32_t>()[e] = -7;
  ops::moe_plan(p.rows, p.offsets, idx);
  return p;
}

// Gates of k slots per token summing to 1 (a softmax of normal draws).
Buffer unit_gates(int64_t N, int64_t k, uint64_t stream) {
  Buffer g = randn({N, k}, stream);
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += std::exp(get(g, n * k + j));
    for (int64_t j = 0; j < k; ++j) set(g, n * k + j, std::exp(get(g, n * k + j)) / s);
  }
  return g;
}

TEST(MoeDispatch, PlanMatchesBruteForce) {
  constexpr int64_t N = 37, k = 3, E = 7;
  // Experts 0 and 5 idle, expert 3 heavily loaded, the others light.
  const std::vector<double> w = {0, 1, 0.5, 6, 1, 0, 0.3};
  Buffer idx = random_idx(N, k, w, 1);
  Plan p = plan(idx, E);
  // Brute force: for each expert in order, its pairs in (token, slot) order, rows counted up.
  std::vector<int32_t> want_rows(size_t(N * k), -1), want_off(size_t(E + 1));
  int32_t r = 0;
  for (int64_t e = 0; e < E; ++e) {
    want_off[e] = r;
    for (int64_t i = 0; i < N * k; ++i)
      if (id_at(idx, i) == e) want_rows[i] = r++;
  }
  want_off[E] = r;
  ASSERT_EQ(r, N * k);
  for (int64_t i = 0; i < N * k; ++i) EXPECT_EQ(id_at(p.rows, i), want_rows[i]) << "pair " << i;
  for (int64_t e = 0; e <= E; ++e) EXPECT_EQ(id_at(p.offsets, e), want_off[e]) << "expert " << e;
  // Invariants, stated directly: loads are the counts; every row is owned by one pair, the one
  // of its expert; the rows of an expert are contiguous and in token order.
  std::vector<int64_t> owner(size_t(N * k), -1);
  for (int64_t i = 0; i < N * k; ++i) {
    const int32_t row = id_at(p.rows, i), e = id_at(idx, i);
    ASSERT_GE(row, 0);
    ASSERT_LT(row, N * k);
    EXPECT_EQ(owner[row], -1) << "row " << row << " used twice";
    owner[row] = i;
    EXPECT_GE(row, id_at(p.offsets, e));
    EXPECT_LT(row, id_at(p.offsets, e + 1));
  }
  for (int64_t e = 0; e < E; ++e) {
    int64_t count = 0;
    for (int64_t i = 0; i < N * k; ++i) count += id_at(idx, i) == e;
    EXPECT_EQ(id_at(p.offsets, e + 1) - id_at(p.offsets, e), count) << "load of expert " << e;
    if (w[e] == 0) EXPECT_EQ(count, 0);
    for (int32_t row = id_at(p.offsets, e) + 1; row < id_at(p.offsets, e + 1); ++row)
      EXPECT_LT(owner[row - 1], owner[row]) << "expert " << e << " rows out of token order";
  }
  EXPECT_EQ(id_at(p.offsets, 0), 0);
  EXPECT_EQ(id_at(p.offsets, E), N * k);
}

TEST(MoeDispatch, PlanOfEmptyAndSingleExpert) {
  Buffer idx({4, 2}, DType::i32);  // every pair to expert 0 (slots repeat: allowed by the plan)
  Plan p = plan(idx, 3);
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(id_at(p.rows, i), i);
  EXPECT_EQ(id_at(p.offsets, 1), 8);
  EXPECT_EQ(id_at(p.offsets, 3), 8);
  Buffer none({0, 2}, DType::i32);
  Plan q = plan(none, 3);
  for (int64_t e = 0; e <= 3; ++e) EXPECT_EQ(id_at(q.offsets, e), 0);
}

TEST(MoeDispatch, PermuteThenUnpermuteIsIdentity) {
  constexpr int64_t N = 23, k = 4, E = 9, C = 6;
  Buffer idx = random_idx(N, k, {1, 2, 0, 3, 1, 1, 0.2, 4, 1}, 2);
  Plan p = plan(idx, E);
  Buffer x = randn({N, C}, 3), x_perm = nan_buffer({N * k, C}), y = nan_buffer({N, C});
  ops::moe_permute(x_perm, x, p.rows);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t c = 0; c < C; ++c)
        EXPECT_EQ(get(x_perm, id_at(p.rows, n * k + j) * C + c), get(x, n * C + c));
  ops::moe_unpermute(y, x_perm, unit_gates(N, k, 4), p.rows);  // identity experts
  EXPECT_LT(rel_err(y, x), 1e-15);
}

// Linear experts y = W_e x (W_e [Cout, Cin]) applied to each expert's block of permuted rows;
// unpermute must give y[n] = sum_j gate[n,j] W_{idx[n,j]} x[n], computed here directly.
TEST(MoeDispatch, TokenOutputIsTheGatedSumOfItsExperts) {
  constexpr int64_t N = 29, k = 3, E = 6, Cin = 5, Cout = 4;
  Buffer idx = random_idx(N, k, {5, 1, 0, 0.5, 2, 1}, 5);  // expert 2 gets no tokens
  Plan p = plan(idx, E);
  std::vector<Buffer> W;
  for (int64_t e = 0; e < E; ++e) W.push_back(randn({Cout, Cin}, 10 + e));
  Buffer x = randn({N, Cin}, 6), gates = randn({N, k}, 7);
  Buffer x_perm = nan_buffer({N * k, Cin}), y_perm = nan_buffer({N * k, Cout});
  ops::moe_permute(x_perm, x, p.rows);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = id_at(p.offsets, e); r < id_at(p.offsets, e + 1); ++r)
      for (int64_t o = 0; o < Cout; ++o) {
        double acc = 0;
        for (int64_t i = 0; i < Cin; ++i) acc += get(W[e], o * Cin + i) * get(x_perm, r * Cin + i);
        set(y_perm, r * Cout + o, acc);
      }
  EXPECT_TRUE(all_finite(y_perm)) << "a permuted row was not covered by any expert's block";
  Buffer y = nan_buffer({N, Cout}), want({N, Cout}, DType::f64);
  ops::moe_unpermute(y, y_perm, gates, p.rows);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < k; ++j) {
      const Buffer& We = W[size_t(id_at(idx, n * k + j))];
      for (int64_t o = 0; o < Cout; ++o) {
        double acc = 0;
        for (int64_t i = 0; i < Cin; ++i) acc += get(We, o * Cin + i) * get(x, n * Cin + i);
        set(want, n * Cout + o, get(want, n * Cout + o) + get(gates, n * k + j) * acc);
      }
    }
  EXPECT_LT(rel_err(y, want), 1e-14);
}

TEST(MoeDispatch, BackwardsMatchFiniteDifferences) {
  constexpr int64_t N = 7, k = 3, E = 5, C = 4;
  Buffer idx = random_idx(N, k, {1, 3, 0, 1, 2}, 8);
  Plan p = plan(idx, E);
  {  // permute: L = sum(x_perm * R)
    Buffer x = randn({N, C}, 9), R = randn({N * k, C}, 10), x_perm = nan_buffer({N * k, C});
    auto loss = [&] {
      ops::moe_permute(x_perm, x, p.rows);
      return weighted_sum(x_perm, R);
    };
    Buffer dx = nan_buffer({N, C});
    ops::moe_permute_backward(dx, R, p.rows);
    expect_grad("permute dx", dx, x, loss);
  }
  {  // unpermute: L = sum(y * R)
    Buffer y_perm = randn({N * k, C}, 11), gates = randn({N, k}, 12), R = randn({N, C}, 13);
    Buffer y = nan_buffer({N, C});
    auto loss = [&] {
      ops::moe_unpermute(y, y_perm, gates, p.rows);
      return weighted_sum(y, R);
    };
    Buffer dy_perm = nan_buffer({N * k, C}), dgates = nan_buffer({N, k});
    ops::moe_unpermute_backward(dy_perm, dgates, R, y_perm, gates, p.rows);
    expect_grad("unpermute dy_perm", dy_perm, y_perm, loss);
    expect_grad("unpermute dgates", dgates, gates, loss);
  }
}

std::vector<Buffer> dispatch_all(DType dt, int64_t N, int64_t k, int64_t E, int64_t C) {
  Buffer idx = random_idx(N, k, {1, 2, 0, 3, 1, 1, 0.2, 4}, 20);
  Buffer x = randn({N, C}, 21, 1.0, dt), y_perm = randn({N * k, C}, 22, 1.0, dt);
  Buffer gates = randn({N, k}, 23, 1.0, dt), dy = randn({N, C}, 24, 1.0, dt);
  std::vector<Buffer> r;
  Plan p = plan(idx, E);
  r.push_back(copy_ids(p.rows));
  r.push_back(copy_ids(p.offsets));
  r.emplace_back(Shape{N * k, C}, dt);  // x_perm
  r.emplace_back(Shape{N, C}, dt);      // dx
  r.emplace_back(Shape{N, C}, dt);      // y
  r.emplace_back(Shape{N * k, C}, dt);  // dy_perm
  r.emplace_back(Shape{N, k}, dt);      // dgates
  ops::moe_permute(r[2], x, p.rows);
  ops::moe_permute_backward(r[3], y_perm, p.rows);
  ops::moe_unpermute(r[4], y_perm, gates, p.rows);
  ops::moe_unpermute_backward(r[5], r[6], dy, y_perm, gates, p.rows);
  return r;
}

TEST(MoeDispatch, F32MatchesF64AndThreads) {
  constexpr int64_t N = 600, k = 4, E = 8, C = 24;  // N * k * C above the parallel threshold
  std::vector<Buffer> a = dispatch_all(DType::f32, N, k, E, C),
                      b = dispatch_all(DType::f64, N, k, E, C);
  EXPECT_TRUE(bitwise_equal(a[0], b[0]));
  EXPECT_TRUE(bitwise_equal(a[1], b[1]));
  for (size_t i = 2; i < a.size(); ++i) EXPECT_LT(rel_err(a[i], b[i]), kF32Tol) << "output " << i;
  expect_same_bits_any_threads("moe dispatch",
                               [&] { return dispatch_all(DType::f32, N, k, E, C); });
}

TEST(MoeDispatch, RejectsBadArguments) {
  constexpr int64_t N = 4, k = 2, C = 3;
  Buffer idx({N, k}, DType::i32), rows({N, k}, DType::i32), offsets({6}, DType::i32);
  idx.ptr<int32_t>()[5] = 5;
  expect_error([&] { ops::moe_plan(rows, offsets, idx); },
               {"moe_plan", "idx[2, 1] = 5", "[0, 5)"});
  idx.ptr<int32_t>()[5] = -1;
  expect_error([&] { ops::moe_plan(rows, offsets, idx); }, {"moe_plan", "idx[2, 1] = -1"});
  expect_error([&] { ops::moe_plan(Buffer({N, k + 1}, DType::i32), offsets, idx); },
               {"moe_plan", "rows is [4, 3]", "idx is [4, 2]"});
  for (int64_t i = 0; i < N * k; ++i) rows.ptr<int32_t>()[i] = int32_t(i);
  Buffer x = randn({N, C}, 30), x_perm({N * k, C}, DType::f64);
  ops::moe_permute(x_perm, x, rows);  // the identity layout is fine
  rows.ptr<int32_t>()[6] = 2;
  expect_error([&] { ops::moe_permute(x_perm, x, rows); },
               {"moe_permute", "rows[3, 0] = 2", "permutation"});
  rows.ptr<int32_t>()[6] = 8;
  expect_error([&] { ops::moe_permute_backward(x, x_perm, rows); },
               {"moe_permute_backward", "rows[3, 0] = 8", "[0, 8)"});
  rows.ptr<int32_t>()[6] = 6;
  expect_error([&] { ops::moe_permute(Buffer({N * k - 1, C}, DType::f64), x, rows); },
               {"moe_permute", "x is [4, 3]", "x_perm is [7, 3]"});
  Buffer gates({N, k}, DType::f64), y({N, C}, DType::f64);
  expect_error([&] { ops::moe_unpermute(y, x_perm, Buffer({N, k + 1}, DType::f64), rows); },
               {"moe_unpermute", "gates is [4, 3]", "rows is [4, 2]"});
  Buffer dgates1({N, 1}, DType::f64);
  expect_error([&] { ops::moe_unpermute_backward(x_perm, dgates1, y, x_perm, gates, rows); },
               {"moe_unpermute_backward", "dgates is [4, 1]"});
  expect_error([&] { ops::moe_unpermute(y, x_perm, Buffer({N, k}, DType::f32), rows); },
               {"moe_unpermute", "gates", "f32"});
}

}  // namespace
}  // namespace bk::test
