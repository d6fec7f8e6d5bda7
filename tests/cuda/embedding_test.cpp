// Embedding gather and its scatter-add backward on the GPU against the CPU reference, with
// repeated token ids (the deterministic sorted reduction), f32 and bf16, row widths on both
// the 16-byte vector path and the scalar path, and f32 accumulation of bf16 gradients.
#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

class EmbeddingCuda : public testing::TestWithParam<DType> {};

constexpr int64_t kWidths[] = {64, 36, 5};  // bf16: 64 vector path, 36 and 5 scalar

TEST_P(EmbeddingCuda, ForwardGathersRows) {
  const DType dt = GetParam();
  for (int64_t C : kWidths) {
    SCOPED_TRACE(testing::Message() << "C=" << C);
    const int64_t V = 50, N = 300;
    Buffer table = representable(randn_f32({V, C}, 1), dt);
    Buffer ids = random_ids(N, V, 2);
    Buffer out_ref({N, C});
    cpu::embedding_forward(out_ref, ids, table);
    Buffer d_table = to_device(table, dt), d_ids = to_device(ids, DType::i32);
    Buffer d_out = device_output({N, C}, dt);
    cuda::embedding_forward(d_out, d_ids, d_table);
    // A gather copies bits: exact.
    EXPECT_EQ(rel_frobenius(to_host(d_out), out_ref), 0.0);
  }
}

TEST_P(EmbeddingCuda, BackwardAccumulatesRepeatedIds) {
  const DType dt = GetParam();
  for (int64_t C : kWidths) {
    SCOPED_TRACE(testing::Message() << "C=" << C);
    const int64_t V = 50, N = 300;  // ~6 occurrences per id
    Buffer dout = representable(randn_f32({N, C}, 3), dt);
    Buffer ids = random_ids(N, V, 4);
    ids.ptr<int32_t>()[0] = int32_t(V - 1);  // the last row of the table is touched too
    Buffer dtable0 = representable(randn_f32({V, C}, 5), dt);
    Buffer ref = clone(dtable0);
    cpu::embedding_backward_weight(ref, ids, dout);
    Buffer d_dout = to_device(dout, dt), d_ids = to_device(ids, DType::i32);

    Buffer d_dtable = to_device(dtable0, dt);
    cuda::embedding_backward_weight(d_dtable, d_ids, d_dout);
    expect_close("dtable", d_dtable, ref, tolerance(dt));

    Buffer d_dtable32 = to_device(dtable0, DType::f32);  // f32 accumulator
    cuda::embedding_backward_weight(d_dtable32, d_ids, d_dout);
    expect_close("dtable (f32)", d_dtable32, ref, kTolF32);
  }
}

TEST_P(EmbeddingCuda, OutOfRangeIdGivesNanRowAndNoGradient) {
  const DType dt = GetParam();
  const int64_t V = 10, C = 16;
  Buffer table = randn_f32({V, C}, 6);
  Buffer ids = test::ids({3, int32_t(V), 4});
  Buffer d_table = to_device(table, dt), d_ids = to_device(ids, DType::i32);
  Buffer d_out = device_output({3, C}, dt);
  cuda::embedding_forward(d_out, d_ids, d_table);
  Buffer out = to_host(d_out);
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_TRUE(std::isfinite(out.ptr<float>()[c]));
    EXPECT_TRUE(std::isnan(out.ptr<float>()[C + c]));
  }
  // The backward skips the bad row: rows 3 and 4 get rows 0 and 2 of dout, the rest stay 0.
  Buffer dout = representable(randn_f32({3, C}, 7), dt);
  Buffer d_dtable(Shape{V, C}, DType::f32, Device::cuda);
  Buffer d_dout = to_device(dout, dt);
  cuda::embedding_backward_weight(d_dtable, d_ids, d_dout);
  Buffer ref({V, C});
  for (int64_t c = 0; c < C; ++c) {
    ref.ptr<float>()[3 * C + c] = dout.ptr<float>()[c];
    ref.ptr<float>()[4 * C + c] = dout.ptr<float>()[2 * C + c];
  }
  EXPECT_EQ(rel_frobenius(to_host(d_dtable), ref), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmbeddingCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

}  // namespace
}  // namespace bk::test
