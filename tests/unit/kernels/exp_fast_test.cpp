// The vectorisable float exp behind the f32 softmaxes (kernels/cpu/common.h).
#include "kernels/cpu/common.h"
#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

TEST(ExpFast, WithinAFewUlpOverTheNormalRange) {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 1e-3) {
    const float xf = float(x);
    const double want = std::exp(double(xf));
    worst = std::max(worst, std::abs(double(cpu::exp_fast(xf)) - want) / want);
  }
  EXPECT_LT(worst, 2.5e-7);  // ~2 ulp of float
  EXPECT_GT(worst, 0.0);     // not secretly std::exp
}

TEST(ExpFast, FlushesToZeroAndPropagatesNan) {
  EXPECT_EQ(cpu::exp_fast(-87.5f), 0.0f);
  EXPECT_EQ(cpu::exp_fast(-1e30f), 0.0f);
  EXPECT_EQ(cpu::exp_fast(-INFINITY), 0.0f);
  EXPECT_GT(cpu::exp_fast(-86.9f), 0.0f);
  EXPECT_TRUE(std::isnormal(cpu::exp_fast(-86.9f)));
  EXPECT_TRUE(std::isnan(cpu::exp_fast(NAN)));
  EXPECT_EQ(cpu::exp_fast(0.0f), 1.0f);
}

}  // namespace
}  // namespace bk::test
