// add_inplace, copy and sum_squares on the GPU against the CPU reference.
#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "core/bf16.h"
#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

class ElementwiseCuda : public testing::TestWithParam<DType> {};

TEST_P(ElementwiseCuda, AddInplaceSameAndMixedDtypes) {
  const DType dt = GetParam();
  for (int64_t n : {int64_t(1003), int64_t(4096)}) {
    Buffer y = representable(randn_f32({n}, 1), dt), x = representable(randn_f32({n}, 2), dt);
    Buffer ref = clone(y);
    cpu::add_inplace(ref, x);
    Buffer d_y = to_device(y, dt), d_x = to_device(x, dt);
    cuda::add_inplace(d_y, d_x);
    expect_close("y += x", d_y, ref, tolerance(dt));
    Buffer d_y32 = to_device(y, DType::f32);  // an f32 accumulator plus a `dt` term
    cuda::add_inplace(d_y32, d_x);
    expect_close("f32 y += x", d_y32, ref, kTolF32);
    cuda::add_inplace(d_x, d_x);  // y aliases x
    Buffer twice({n});
    for (int64_t i = 0; i < n; ++i) twice.ptr<float>()[i] = 2 * x.ptr<float>()[i];
    expect_close("x += x", d_x, twice, kTolF32);  // doubling is exact
  }
}

// The converting copy behind mixed precision (master f32 -> bf16 working weights): round to
// nearest even, ties to even, NaN and infinities kept; bf16 -> f32 exact. Odd lengths and a
// misaligned view exercise the scalar tail next to the 8-wide vector path.
TEST(ElementwiseCudaConvert, CopyRoundsToNearestEvenBothWays) {
  std::vector<float> v = {1.0f, -2.5f, 3.14159265f, 1e-30f, 65504.0f, 1e38f,
                          std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          std::bit_cast<float>(uint32_t(0x3f808000)),   // a tie: rounds down to even 0x3f80
                          std::bit_cast<float>(uint32_t(0x3f818000))};  // a tie: rounds up to even 0x3f82
  for (int i = 0; i < 40; ++i) v.push_back(std::sin(0.37f * float(i)) * 100.0f);  // 51 elements
  const int64_t n = int64_t(v.size());
  Buffer host({n});
  std::copy(v.begin(), v.end(), host.ptr<float>());
  Buffer d32 = to_device(host, DType::f32), d16 = device_output({n}, DType::bf16);
  cuda::copy(d16, d32);
  Buffer got = to_host(d16);
  for (int64_t i = 0; i < n; ++i) {
    const float want = round_bf16(v[size_t(i)]);
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(got.ptr<float>()[i])) << i;
    else EXPECT_EQ(got.ptr<float>()[i], want) << i << ": " << v[size_t(i)];
  }
  EXPECT_EQ(got.ptr<float>()[9], std::bit_cast<float>(uint32_t(0x3f800000)));
  EXPECT_EQ(got.ptr<float>()[10], std::bit_cast<float>(uint32_t(0x3f820000)));
  // bf16 -> f32 is exact; through a view one element in (not 16-byte aligned).
  Buffer back = device_output({n - 1}, DType::f32);
  cuda::copy(back, d16.tensor().rows(1, n));
  Buffer b = to_host(back);
  for (int64_t i = 1; i < n; ++i) {
    if (std::isnan(got.ptr<float>()[i])) EXPECT_TRUE(std::isnan(b.ptr<float>()[i - 1]));
    else EXPECT_EQ(b.ptr<float>()[i - 1], got.ptr<float>()[i]) << i;
  }
  Buffer ids(Shape{n}, DType::i32, Device::cuda);
  expect_error([&] { cuda::copy(d16, ids); }, {"copy", "f32 and bf16 only"});
}

TEST_P(ElementwiseCuda, SumSquaresMatchesCpuInDouble) {
  const DType dt = GetParam();
  // Several 65536-element chunks plus a ragged end; and one small tensor.
  for (int64_t n : {int64_t(200003), int64_t(5)}) {
    Buffer x = representable(randn_f32({n}, 3), dt);
    const double want = cpu::sum_squares(x);
    Buffer d_x = to_device(x, dt);
    const double got = cuda::sum_squares(d_x);
    // Squares of floats are exact in double; only the order of ~2e5 double additions differs.
    EXPECT_NEAR(got, want, 1e-12 * want) << "n=" << n;
  }
  Buffer empty = device_output({0}, dt);
  EXPECT_EQ(cuda::sum_squares(empty), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ElementwiseCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

TEST(ElementwiseCudaCopy, CopiesBytesOfAnyDtypeIncludingOverlap) {
  Buffer ids = random_ids(1000, 77, 4);
  Buffer d_src = to_device(ids, DType::i32);
  Buffer d_dst = device_output({1000}, DType::i32);
  cuda::copy(d_dst, d_src);
  Buffer got = to_host(d_dst);
  EXPECT_EQ(std::memcmp(got.tensor().data, ids.tensor().data, ids.nbytes()), 0);

  // Overlapping ranges behave like memmove.
  Buffer x = randn_f32({100}, 5);
  Buffer d_x = to_device(x, DType::f32);
  cuda::copy(d_x.tensor().rows(10, 100), d_x.tensor().rows(0, 90));
  Buffer moved = to_host(d_x);
  for (int64_t i = 10; i < 100; ++i) ASSERT_EQ(moved.ptr<float>()[i], x.ptr<float>()[i - 10]);
  for (int64_t i = 0; i < 10; ++i) ASSERT_EQ(moved.ptr<float>()[i], x.ptr<float>()[i]);
}

}  // namespace
}  // namespace bk::test
