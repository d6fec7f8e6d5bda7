// Fused AdamW on the GPU against the CPU reference over several steps, with weight decay and
// a clip scale, f32 and bf16 gradients, on the vector path and an unaligned scalar path.
#include <cmath>
#include <vector>

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

// The one-launch step over many tensors (the trainer's) against the one-tensor kernel: the same
// bits, for tensors that span several chunks, empty ones first, in the middle and last (the
// entry lookup's edge cases), one misaligned view, bf16 and f32 gradients and per-tensor decays.
TEST(AdamWCudaMany, MatchesOneTensorKernelBitwise) {
  const std::vector<int64_t> sizes = {0, 70001, 5, 0, 300, 8192, 0};
  const std::vector<float> decays = {0.1f, 0.1f, 0.0f, 0.1f, 0.0f, 0.05f, 0.1f};
  const size_t kView = 4;  // this entry is a view one element in (not 16-byte aligned)
  std::vector<Buffer> w1, m1, v1, w2, m2, v2, g, host_w;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t n = sizes[i] + (i == kView ? 1 : 0);
    Buffer w = randn_f32({n}, 20 + i), m = randn_f32({n}, 30 + i, 0.01), v = randn_f32({n}, 40 + i, 0.01);
    for (int64_t k = 0; k < n; ++k) v.ptr<float>()[k] = std::abs(v.ptr<float>()[k]);
    const DType gdt = i % 2 ? DType::bf16 : DType::f32;
    Buffer gh = representable(randn_f32({n}, 50 + i), gdt);
    w1.push_back(to_device(w, DType::f32)), w2.push_back(to_device(w, DType::f32));
    m1.push_back(to_device(m, DType::f32)), m2.push_back(to_device(m, DType::f32));
    v1.push_back(to_device(v, DType::f32)), v2.push_back(to_device(v, DType::f32));
    g.push_back(to_device(gh, gdt));
    host_w.push_back(std::move(w));
  }
  auto view = [&](const Buffer& b, size_t i) { return i == kView ? b.tensor().rows(1, b.numel()) : b.tensor(); };
  for (int step = 1; step <= 2; ++step) {
    std::vector<Tensor> tw, tg, tm, tv;
    for (size_t i = 0; i < sizes.size(); ++i) {
      AdamWStep p{1e-2f, 0.9f, 0.95f, 1e-8f, decays[i], 0.5f, step};
      cuda::adamw_update(view(w1[i], i), view(g[i], i), view(m1[i], i), view(v1[i], i), p);
      tw.push_back(view(w2[i], i)), tg.push_back(view(g[i], i)), tm.push_back(view(m2[i], i));
      tv.push_back(view(v2[i], i));
    }
    cuda::adamw_update_many(tw, tg, tm, tv, decays, AdamWStep{1e-2f, 0.9f, 0.95f, 1e-8f, 99.0f, 0.5f, step});
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "tensor " << i);
    EXPECT_TRUE(bitwise_equal_device(w1[i], w2[i]));
    EXPECT_TRUE(bitwise_equal_device(m1[i], m2[i]));
    EXPECT_TRUE(bitwise_equal_device(v1[i], v2[i]));
  }
  EXPECT_FALSE(bitwise_equal_device(w1[1], to_device(host_w[1], DType::f32)));  // the weights moved
}

// Every sum the same bits as sum_squares of that tensor, f32 and bf16, with empty tensors first,
// in the middle and last, tensors of several chunks and a misaligned view (the scalar path).
TEST(SumSquaresCudaMany, MatchesOneTensorKernelBitwise) {
  for (DType dt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    std::vector<Buffer> xs;
    std::vector<Tensor> ts;
    for (int64_t n : {int64_t(0), int64_t(200003), int64_t(7), int64_t(0), int64_t(65536), int64_t(65537),
                      int64_t(0)}) {
      xs.push_back(to_device(representable(randn_f32({n}, 60 + uint64_t(n % 97)), dt), dt));
      ts.push_back(xs.back());
    }
    ts.insert(ts.begin() + 3, xs[1].tensor().rows(3, 1000));  // misaligned
    const std::vector<double> got = cuda::sum_squares_many(ts);
    ASSERT_EQ(got.size(), ts.size());
    for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(got[i], cuda::sum_squares(ts[i])) << i;
    EXPECT_EQ(got[0], 0.0);
    EXPECT_EQ(got.back(), 0.0);
    EXPECT_GT(got[1], 0.9 * 200003);
  }
  EXPECT_TRUE(cuda::sum_squares_many({}).empty());
}

}  // namespace
}  // namespace bk::test
