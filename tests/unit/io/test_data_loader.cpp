#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <vector>

#include "core/error.h"
#include "io/data_loader.h"
#include "io/token_shard.h"
#include "unit/io/io_test_util.h"

using bk::test::expect_error;

namespace {

// A shard whose token i is i, so a token tells where it came from. N = 1001, T = 10 -> 100 windows.
std::string counting_shard(uint32_t n = 1001) {
  const auto path = (bk::test::scratch_dir() / "count.bin").string();
  std::vector<uint32_t> t(n);
  std::iota(t.begin(), t.end(), 0u);
  bk::write_token_shard(path, n, t);
  return path;
}

// The window index of each sequence of a batch (its first input / T).
std::vector<int> windows_of(const bk::Batch& b) {
  std::vector<int> w;
  for (int s = 0; s < b.B; ++s) w.push_back(b.inputs[size_t(s) * b.T] / b.T);
  return w;
}

}  // namespace

TEST(TokenLoader, TargetsAreInputsShiftedByOne) {
  bk::TokenLoader L(counting_shard(), 10, 42);
  EXPECT_EQ(L.num_windows(), 100u);
  L.next_global_batch(8);
  for (int m = 0; m < 2; ++m) {
    auto b = L.micro_batch(m, 4);
    ASSERT_EQ(b.inputs.size(), 40u);
    for (int s = 0; s < 4; ++s) {
      EXPECT_EQ(b.inputs[s * 10] % 10, 0) << "a window starts at a multiple of T";
      for (int t = 0; t < 10; ++t) {
        EXPECT_EQ(b.targets[s * 10 + t], b.inputs[s * 10 + t] + 1);
        if (t) EXPECT_EQ(b.inputs[s * 10 + t], b.inputs[s * 10 + t - 1] + 1) << "contiguous";
      }
    }
  }
}

TEST(TokenLoader, LastWindowReachesTheLastToken) {
  // N - 1 divisible by T: the last window's last target is the shard's last token.
  bk::TokenLoader L(counting_shard(1001), 10, 1);
  auto b = L.eval_batch(99, 1);
  EXPECT_EQ(b.targets.back(), 1000);
  // N - 1 not divisible: floor, the tail is never a target.
  bk::TokenLoader L2(counting_shard(1005), 10, 1);
  EXPECT_EQ(L2.num_windows(), 100u);
}

TEST(TokenLoader, EpochVisitsEveryWindowOnceThenReshuffles) {
  bk::TokenLoader L(counting_shard(), 10, 7);
  std::vector<int> e0, e1;
  for (int step = 0; step < 10; ++step) {
    L.next_global_batch(10);
    auto w = windows_of(L.micro_batch(0, 10));
    e0.insert(e0.end(), w.begin(), w.end());
  }
  EXPECT_EQ(L.cursor(), (bk::LoaderCursor{1, 0}));
  for (int step = 0; step < 10; ++step) {
    L.next_global_batch(10);
    auto w = windows_of(L.micro_batch(0, 10));
    e1.insert(e1.end(), w.begin(), w.end());
  }
  std::vector<int> all(100);
  std::iota(all.begin(), all.end(), 0);
  auto s0 = e0, s1 = e1;
  std::sort(s0.begin(), s0.end());
  std::sort(s1.begin(), s1.end());
  EXPECT_EQ(s0, all);
  EXPECT_EQ(s1, all);
  EXPECT_NE(e0, e1) << "each epoch has its own order";
  EXPECT_NE(e0, all) << "the order is shuffled";
  // The order is a function of the seed.
  bk::TokenLoader same(L.path(), 10, 7), other(L.path(), 10, 8);
  std::vector<uint64_t> o7, o7b, o8;
  for (uint64_t p = 0; p < 100; ++p) {
    o7.push_back(L.window_at(0, p));
    o7b.push_back(same.window_at(0, p));
    o8.push_back(other.window_at(0, p));
  }
  EXPECT_EQ(o7, o7b);
  EXPECT_NE(o7, o8);
}

TEST(TokenLoader, GlobalBatchStraddlesEpochBoundary) {
  bk::TokenLoader L(counting_shard(), 10, 3);
  L.set_cursor({0, 96});
  L.next_global_batch(8);
  auto w = windows_of(L.micro_batch(0, 8));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(w[i], int(L.window_at(0, 96 + i)));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(w[4 + i], int(L.window_at(1, i)));
  EXPECT_EQ(L.cursor(), (bk::LoaderCursor{1, 4}));
  // A global batch larger than the shard wraps as many epochs as it needs.
  L.set_cursor({0, 0});
  L.next_global_batch(250);
  EXPECT_EQ(L.cursor(), (bk::LoaderCursor{2, 50}));
}

TEST(TokenLoader, CursorRestoreReproducesBatches) {
  const auto path = counting_shard();
  bk::TokenLoader a(path, 10, 5);
  for (int i = 0; i < 13; ++i) a.next_global_batch(12);  // into epoch 1
  const bk::LoaderCursor saved = a.cursor();
  // Through JSON, as a checkpoint would.
  nlohmann::json j = saved;
  const auto restored = j.get<bk::LoaderCursor>();
  EXPECT_EQ(restored, saved);

  std::vector<std::vector<int32_t>> want;
  for (int i = 0; i < 5; ++i) {
    a.next_global_batch(12);
    for (int m = 0; m < 3; ++m) want.push_back(a.micro_batch(m, 4).inputs);
  }
  bk::TokenLoader b(path, 10, 5);
  b.set_cursor(restored);
  for (int i = 0, k = 0; i < 5; ++i) {
    b.next_global_batch(12);
    for (int m = 0; m < 3; ++m) EXPECT_EQ(b.micro_batch(m, 4).inputs, want[k++]) << "step " << i;
  }
  EXPECT_EQ(a.cursor(), b.cursor());
}

TEST(TokenLoader, DataParallelSlicesPartitionTheGlobalBatch) {
  const auto path = counting_shard();
  const int G = 16;
  bk::TokenLoader one(path, 10, 11);
  for (int dp : {2, 4}) {
    std::vector<bk::TokenLoader> ranks;
    for (int r = 0; r < dp; ++r) ranks.emplace_back(path, 10, 11, r, dp);
    one.set_cursor({0, 90});  // straddle an epoch boundary on the way
    for (auto& l : ranks) l.set_cursor({0, 90});
    for (int step = 0; step < 3; ++step) {
      one.next_global_batch(G);
      const auto global = one.micro_batch(0, G).inputs;
      std::vector<int32_t> joined;
      std::set<int> seen;
      const int per_rank = G / dp, mbs = 2;
      for (int r = 0; r < dp; ++r) {
        ranks[r].next_global_batch(G);
        for (int m = 0; m < per_rank / mbs; ++m) {
          auto b = ranks[r].micro_batch(m, mbs);
          joined.insert(joined.end(), b.inputs.begin(), b.inputs.end());
          for (int w : windows_of(b)) EXPECT_TRUE(seen.insert(w).second) << "disjoint slices";
        }
        EXPECT_EQ(ranks[r].cursor(), one.cursor()) << "every rank advances by the global batch";
      }
      EXPECT_EQ(joined, global) << "dp=" << dp << " ranks in order == the dp=1 global batch";
    }
  }
}

TEST(TokenLoader, EvalBatchesAreFixedAndInOrder) {
  bk::TokenLoader L(counting_shard(), 10, 99);
  EXPECT_EQ(L.num_eval_batches(8), 12u);
  auto b = L.eval_batch(2, 8);
  EXPECT_EQ(windows_of(b), (std::vector<int>{16, 17, 18, 19, 20, 21, 22, 23}));
  L.next_global_batch(4);  // training position does not matter
  EXPECT_EQ(L.eval_batch(2, 8).inputs, b.inputs);
  expect_error([&] { L.eval_batch(12, 8); }, {L.path(), "eval batch"});
}

TEST(TokenLoader, Errors) {
  const auto path = counting_shard(11);
  expect_error([&] { bk::TokenLoader L(path, 11, 1); }, {path, "fewer than seq_len + 1"});
  bk::TokenLoader L(path, 5, 1);  // 2 windows
  expect_error([&] { L.micro_batch(0, 1); }, {path, "before next_global_batch"});
  expect_error([&] { bk::TokenLoader bad(path, 5, 1, 2, 2); }, {path, "dp_rank"});
  bk::TokenLoader r0(path, 5, 1, 0, 2);
  expect_error([&] { r0.next_global_batch(3); }, {path, "dp = 2"});
  r0.next_global_batch(4);
  expect_error([&] { r0.micro_batch(1, 2); }, {path, "outside this rank"});
  expect_error([&] { L.set_cursor({0, 2}); }, {path, "cursor position"});
}

TEST(TokenLoader, BadTokenIsCaughtWhenRead) {
  const auto path = (bk::test::scratch_dir() / "bad.bin").string();
  std::vector<uint32_t> t(21, 3);
  t[7] = 9;  // writer checks against vocab; write with a big vocab, then lower it in the header
  bk::write_token_shard(path, 10, t);
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    std::fseek(f, 12, SEEK_SET);
    const unsigned char v[4] = {5, 0, 0, 0};  // vocab 5 < token 9
    std::fwrite(v, 1, 4, f);
    std::fclose(f);
  }
  bk::TokenLoader L(path, 10, 1);
  expect_error([&] { L.eval_batch(0, 2); }, {path, "vocab_size 5"});
}
