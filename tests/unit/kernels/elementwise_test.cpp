#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

TEST(Elementwise, AddInplaceAndCopy) {
  for (DType dt : {DType::f32, DType::f64}) {
    Buffer y = cast(randn({3, 5}, 90), dt), x = cast(randn({3, 5}, 91), dt), y0 = clone(y);
    ops::add_inplace(y, x);
    for (int64_t i = 0; i < 15; ++i) EXPECT_EQ(get(y, i), dt == DType::f32 ? double(float(get(y0, i) + get(x, i))) : get(y0, i) + get(x, i));
    Buffer z(Shape{3, 5}, dt);
    ops::copy(z, x);
    EXPECT_TRUE(bitwise_equal(z, x));
  }
  Buffer a = ids({4, -1, 7}), b({3}, DType::i32);
  ops::copy(b, a);  // copy takes any dtype
  EXPECT_TRUE(bitwise_equal(a, b));
}

// Float dtypes that differ are converted: f64 -> f32 rounds each element as a C++ cast does, and
// f32 -> f64 is exact.
TEST(Elementwise, CopyConvertsBetweenFloatDtypes) {
  Buffer x64 = randn({3, 5}, 94), x32({3, 5}, DType::f32), back({3, 5}, DType::f64);
  ops::copy(x32, x64);
  ops::copy(back, x32);
  for (int64_t i = 0; i < 15; ++i) {
    EXPECT_EQ(x32.ptr<float>()[i], float(x64.ptr<double>()[i]));
    EXPECT_EQ(back.ptr<double>()[i], double(float(x64.ptr<double>()[i])));
  }
  EXPECT_NE(get(x64, 0), get(back, 0));  // not vacuous: the f32 rounding is visible
}

// Large enough for several chunks (and several threads); compared with a plain double loop.
TEST(Elementwise, SumSquaresMatchesDoubleLoop) {
  Buffer x = randn({70001}, 92, 1.0, DType::f32);
  double want = 0;
  for (int64_t i = 0; i < x.numel(); ++i) want += get(x, i) * get(x, i);
  const double got = ops::sum_squares(x);
  EXPECT_NEAR(got, want, 1e-12 * want);
  EXPECT_GT(got, 0.9 * 70001);  // not vacuous: ~1 per normal draw
  Buffer x64 = randn({1000}, 93);
  double want64 = 0;
  for (int64_t i = 0; i < 1000; ++i) want64 += get(x64, i) * get(x64, i);
  EXPECT_NEAR(ops::sum_squares(x64), want64, 1e-12 * want64);
}

TEST(Elementwise, RejectsBadShapes) {
  Buffer a({3, 5}, DType::f32), b({5, 3}, DType::f32), c({3, 5}, DType::f64);
  expect_error([&] { ops::add_inplace(a, b); }, {"add_inplace", "x is [5, 3]"});
  expect_error([&] { ops::add_inplace(a, c); }, {"add_inplace", "f64"});
  expect_error([&] { ops::copy(a, b); }, {"copy", "src is [5, 3]"});
  expect_error([&] { ops::copy(a, ids({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}).tensor().view({3, 5})); },
               {"copy", "i32", "f32 and f64 only"});
  expect_error([&] { ops::sum_squares(ids({1})); }, {"sum_squares", "i32"});
}

}  // namespace
}  // namespace bk::test
