// copy_columns: the definition (block copied or added, the rest of dst untouched), finite
// differences of both operands with and without accumulation, blocks inside one tensor,
// f32 against f64, thread independence, errors.
#include "unit/kernels/connector_testing.h"

namespace bk::test {
namespace {

constexpr int64_t R = 5, Cd = 9, Cs = 7, kDstCol = 2, kSrcCol = 3, kWidth = 4;

bool in_block(int64_t c, int64_t c0) { return c >= c0 && c < c0 + kWidth; }

TEST(CopyColumns, ForwardMatchesDefinition) {
  for (bool acc : {false, true}) {
    SCOPED_TRACE(acc ? "accumulate" : "copy");
    Buffer src = randn({R, Cs}, 10), dst0 = randn({R, Cd}, 11), dst = clone(dst0);
    Buffer src0 = clone(src);
    ops::copy_columns(dst, kDstCol, src, kSrcCol, kWidth, acc);
    EXPECT_TRUE(bitwise_equal(src, src0));  // src is read only
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < Cd; ++c) {
        double want = get(dst0, r * Cd + c);
        if (in_block(c, kDstCol)) {
          const double v = get(src, r * Cs + kSrcCol + (c - kDstCol));
          want = acc ? want + v : v;
        }
        EXPECT_EQ(get(dst, r * Cd + c), want) << "r " << r << " c " << c;
      }
  }
}

// L = sum(dst_after * G). dL/dsrc is G's dst block moved to the src columns; dL/d(dst_before)
// is G with the block zeroed (copy) or G itself (accumulate).
TEST(CopyColumns, GradientsMatchFiniteDifferences) {
  for (bool acc : {false, true}) {
    SCOPED_TRACE(acc ? "accumulate" : "copy");
    Buffer src = randn({R, Cs}, 12), dst_in = randn({R, Cd}, 13), G = randn({R, Cd}, 14);
    auto loss = [&] {
      Buffer dst = clone(dst_in);
      ops::copy_columns(dst, kDstCol, src, kSrcCol, kWidth, acc);
      return weighted_sum(dst, G);
    };
    Buffer dsrc({R, Cs}, DType::f64), ddst = clone(G);
    ops::copy_columns(dsrc, kSrcCol, G, kDstCol, kWidth, /*accumulate=*/true);
    if (!acc)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = kDstCol; c < kDstCol + kWidth; ++c) set(ddst, r * Cd + c, 0.0);
    expect_grad("dsrc", dsrc, src, loss);
    expect_grad("ddst", ddst, dst_in, loss);
    // dsrc outside the block is exactly 0 (the FD agrees to rounding only).
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < Cs; ++c)
        if (!in_block(c, kSrcCol)) EXPECT_EQ(get(dsrc, r * Cs + c), 0.0);
  }
}

TEST(CopyColumns, BlocksOfOneTensor) {
  Buffer a = randn({R, Cd}, 15), a0 = clone(a);
  ops::copy_columns(a, 5, a, 0, 4, false);  // disjoint blocks of the same tensor
  ops::copy_columns(a, 0, a, 0, 4, true);   // the same block: doubled
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < Cd; ++c) {
      const double want = c < 4 ? 2 * get(a0, r * Cd + c)
                          : c >= 5 ? get(a0, r * Cd + c - 5)
                                   : get(a0, r * Cd + c);
      EXPECT_EQ(get(a, r * Cd + c), want);
    }
  expect_error([&] { ops::copy_columns(a, 1, a, 0, 4, false); },
               {"copy_columns", "share memory", "dst [1, 5)", "src [0, 4)"});
}

TEST(CopyColumns, F32MatchesF64AndThreads) {
  constexpr int64_t Rb = 1500, W = 24;  // R * W above the parallel threshold
  Buffer src = randn({Rb, 40}, 16), dst0 = randn({Rb, 30}, 17);
  auto run = [&](DType dt, bool acc) {
    Buffer s = cast(src, dt), d = cast(dst0, dt);
    ops::copy_columns(d, 3, s, 10, W, acc);
    return d;
  };
  for (bool acc : {false, true}) {
    EXPECT_LT(rel_err(run(DType::f32, acc), run(DType::f64, acc)), kF32Tol);
    expect_same_bits_any_threads("copy_columns", [&] {
      std::vector<Buffer> r;
      r.push_back(run(DType::f32, acc));
      return r;
    });
  }
}

TEST(CopyColumns, ZeroWidthAndRejectsBadArguments) {
  Buffer src = randn({R, Cs}, 18), dst = randn({R, Cd}, 19), dst0 = clone(dst);
  ops::copy_columns(dst, Cd, src, Cs, 0, false);  // empty blocks at the very end
  EXPECT_TRUE(bitwise_equal(dst, dst0));
  expect_error([&] { ops::copy_columns(dst, 6, src, 0, 4, false); },
               {"copy_columns", "[6, 10) of dst [5, 9]", "inside"});
  expect_error([&] { ops::copy_columns(dst, 0, src, -1, 2, true); },
               {"copy_columns", "[-1, 1) of src [5, 7]"});
  expect_error([&] { ops::copy_columns(dst, 0, Buffer({R + 1, Cs}, DType::f64), 0, 2, false); },
               {"copy_columns", "dst is [5, 9], src is [6, 7]", "same number of rows"});
  expect_error([&] { ops::copy_columns(dst, 0, Buffer({R, Cs}, DType::f32), 0, 2, false); },
               {"copy_columns", "f32", "f64"});
}

}  // namespace
}  // namespace bk::test
