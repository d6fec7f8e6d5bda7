// Fused softmax cross-entropy on the GPU against the CPU reference: vocabularies on the
// vector path (V % 8 == 0) and the scalar path, ignored targets (< 0), large logits (the
// stable form), negative and zero grad scales, f32 dlogits of bf16 logits, and in place.
#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

class CrossEntropyCuda : public testing::TestWithParam<DType> {};

struct Dims {
  int64_t N, V;
};
constexpr Dims kDims[] = {{37, 1000}, {9, 997}, {4, 50304}};

Buffer targets_for(int64_t N, int64_t V, uint64_t stream) {
  Buffer t = random_ids(N, V, stream);
  t.ptr<int32_t>()[1] = -1;  // ignored
  t.ptr<int32_t>()[N - 1] = int32_t(V - 1);
  return t;
}

TEST_P(CrossEntropyCuda, ForwardAndBackwardMatchCpu) {
  const DType dt = GetParam();
  for (const Dims& d : kDims) {
    SCOPED_TRACE(testing::Message() << "N=" << d.N << " V=" << d.V);
    Buffer logits = representable(randn_f32({d.N, d.V}, 1, 3.0), dt);
    Buffer tg = targets_for(d.N, d.V, 2);
    Buffer loss_ref({d.N}), dl_ref({d.N, d.V});
    cpu::cross_entropy_forward(loss_ref, logits, tg);
    cpu::cross_entropy_backward(dl_ref, logits, tg, 0.25f);

    Buffer d_logits = to_device(logits, dt), d_tg = to_device(tg, DType::i32);
    Buffer d_loss = device_output({d.N}, DType::f32);
    cuda::cross_entropy_forward(d_loss, d_logits, d_tg);
    expect_close("losses", d_loss, loss_ref, kTolF32);  // f32 math on identical inputs

    Buffer d_dl = device_output({d.N, d.V}, dt);
    cuda::cross_entropy_backward(d_dl, d_logits, d_tg, 0.25f);
    expect_close("dlogits", d_dl, dl_ref, tolerance(dt));
    Buffer d_dl32 = device_output({d.N, d.V}, DType::f32);
    cuda::cross_entropy_backward(d_dl32, d_logits, d_tg, 0.25f);
    expect_close("dlogits (f32)", d_dl32, dl_ref, kTolF32);

    Buffer got = to_host(d_dl32);  // the ignored row is exactly zero
    for (int64_t v = 0; v < d.V; ++v) ASSERT_EQ(got.ptr<float>()[d.V + v], 0.f);
  }
}

TEST_P(CrossEntropyCuda, LargeLogitsNegativeScaleAndInPlace) {
  const DType dt = GetParam();
  const int64_t N = 6, V = 512;
  Buffer logits = representable(randn_f32({N, V}, 3, 1.0), dt);
  for (int64_t i = 0; i < N * V; ++i) logits.ptr<float>()[i] += 1000.f;  // exp would overflow
  logits = representable(logits, dt);
  Buffer tg = targets_for(N, V, 4);
  Buffer loss_ref({N}), dl_ref({N, V});
  cpu::cross_entropy_forward(loss_ref, logits, tg);
  cpu::cross_entropy_backward(dl_ref, logits, tg, -2.0f);
  Buffer d_logits = to_device(logits, dt), d_tg = to_device(tg, DType::i32);
  Buffer d_loss = device_output({N}, DType::f32);
  cuda::cross_entropy_forward(d_loss, d_logits, d_tg);
  // Losses ~log V: their error is relative to ~6, not to the logits' 1000.
  expect_close("losses", d_loss, loss_ref, 1e-4);
  cuda::cross_entropy_backward(d_logits, d_logits, d_tg, -2.0f);  // in place
  expect_close("dlogits in place", d_logits, dl_ref, tolerance(dt));
}

TEST(CrossEntropyCudaScale, ZeroScaleGivesZeroGradient) {
  const int64_t N = 3, V = 64;
  Buffer d_logits = to_device(randn_f32({N, V}, 5), DType::f32);
  Buffer d_tg = to_device(ids({1, 2, 3}), DType::i32);
  Buffer d_dl = device_output({N, V}, DType::f32);
  cuda::cross_entropy_backward(d_dl, d_logits, d_tg, 0.f);
  Buffer got = to_host(d_dl);
  for (int64_t i = 0; i < N * V; ++i) ASSERT_EQ(got.ptr<float>()[i], 0.f);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CrossEntropyCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

}  // namespace
}  // namespace bk::test
