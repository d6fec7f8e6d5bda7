// Fused AdamW on the GPU against the CPU reference over several steps, with weight decay and
// a clip scale, f32 and bf16 gradients, on the vector path and an unaligned scalar path.
#include <cmath>

#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

class AdamWCuda : public testing::TestWithParam<DType> {};

TEST_P(AdamWCuda, StepsMatchCpu) {
  const DType gdt = GetParam();
  for (int64_t n : {int64_t(4099), int64_t(64)}) {
    SCOPED_TRACE(testing::Message() << "n=" << n);
    Buffer w = randn_f32({n}, 1), m = randn_f32({n}, 2, 0.01), v = randn_f32({n}, 3, 0.01);
    for (int64_t i = 0; i < n; ++i) v.ptr<float>()[i] = std::abs(v.ptr<float>()[i]);
    Buffer w_ref = clone(w), m_ref = clone(m), v_ref = clone(v);
    Buffer d_w = to_device(w, DType::f32), d_m = to_device(m, DType::f32), d_v = to_device(v, DType::f32);
    for (int step = 1; step <= 3; ++step) {
      Buffer g = representable(randn_f32({n}, 10 + uint64_t(step)), gdt);
      const AdamWStep p{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, step};
      cpu::adamw_update(w_ref, g, m_ref, v_ref, p);
      Buffer d_g = to_device(g, gdt);
      cuda::adamw_update(d_w, d_g, d_m, d_v, p);
    }
    // Same fp32 formula on identical inputs: only FMA contraction and rounding of the
    // division/sqrt differ. Compare the change of w (w itself would hide a wrong update).
    Buffer dw_ref = minus(w_ref, w), dw_got = minus(to_host(d_w), w);
    EXPECT_LT(rel_frobenius(dw_got, dw_ref), 1e-5);
    expect_close("m", d_m, m_ref, kTolF32);
    expect_close("v", d_v, v_ref, kTolF32);
  }
}

INSTANTIATE_TEST_SUITE_P(GradDtypes, AdamWCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

TEST(AdamWCudaArgs, MasterWeightsMustBeF32) {
  Buffer w = to_device(randn_f32({8}, 1), DType::bf16), g = to_device(randn_f32({8}, 2), DType::bf16);
  Buffer m = to_device(randn_f32({8}, 3), DType::f32), v = to_device(randn_f32({8}, 4), DType::f32);
  expect_error([&] { cuda::adamw_update(w, g, m, v, AdamWStep{}); }, {"adamw_update", "f32"});
}

}  // namespace
}  // namespace bk::test
