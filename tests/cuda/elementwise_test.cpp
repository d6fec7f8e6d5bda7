// add_inplace, copy and sum_squares on the GPU against the CPU reference.
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
