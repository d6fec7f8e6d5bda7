// copy_columns on the GPU against the CPU reference: overwrite and accumulate, blocks on the
// vector path (aligned, width % 8 == 0) and the scalar path, and disjoint blocks of one tensor.
#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

class CopyColumnsCuda : public testing::TestWithParam<DType> {};

struct Case {
  int64_t Cd, dst_col, Cs, src_col, width;
};
constexpr Case kCases[] = {{64, 16, 48, 8, 32}, {40, 3, 29, 5, 17}, {16, 0, 16, 0, 16}};

TEST_P(CopyColumnsCuda, OverwriteAndAccumulateMatchCpu) {
  const DType dt = GetParam();
  const int64_t R = 45;
  for (const Case& c : kCases) {
    for (bool acc : {false, true}) {
      SCOPED_TRACE(testing::Message() << "dst_col=" << c.dst_col << " width=" << c.width
                                      << " accumulate=" << acc);
      Buffer dst = representable(randn_f32({R, c.Cd}, 1), dt), src = representable(randn_f32({R, c.Cs}, 2), dt);
      Buffer ref = clone(dst);
      cpu::copy_columns(ref, c.dst_col, src, c.src_col, c.width, acc);
      Buffer d_dst = to_device(dst, dt), d_src = to_device(src, dt);
      cuda::copy_columns(d_dst, c.dst_col, d_src, c.src_col, c.width, acc);
      // Copies are exact; sums round once in the tensor's dtype, as on the CPU for f32.
      expect_close("dst", d_dst, ref, acc ? tolerance(dt) : 1e-30);
    }
  }
}

TEST_P(CopyColumnsCuda, DisjointBlocksOfOneTensor) {
  const DType dt = GetParam();
  const int64_t R = 10, C = 32;
  Buffer x = representable(randn_f32({R, C}, 3), dt);
  Buffer ref = clone(x);
  cpu::copy_columns(ref, 0, ref, 16, 16, true);
  Buffer d_x = to_device(x, dt);
  cuda::copy_columns(d_x, 0, d_x, 16, 16, true);
  expect_close("x", d_x, ref, tolerance(dt));
  expect_error([&] { cuda::copy_columns(d_x, 0, d_x, 8, 16, false); }, {"share memory"});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CopyColumnsCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

}  // namespace
}  // namespace bk::test
