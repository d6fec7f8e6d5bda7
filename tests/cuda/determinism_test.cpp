// Every CUDA op whose result depends on a reduction order runs twice on the same inputs and
// must give identical bits (no float atomics; fixed block trees; sorted, stable scatters;
// one cuBLASLt algorithm per shape).
#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

class DeterminismCuda : public testing::TestWithParam<DType> {};

TEST_P(DeterminismCuda, ReductionsAreBitwiseRepeatable) {
  const DType dt = GetParam();
  const int64_t N = 1000, C = 384, V = 3000;
  Buffer x = to_device(randn_f32({N, C}, 1), dt), dy = to_device(randn_f32({N, C}, 2), dt);
  Buffer w = to_device(randn_f32({C}, 3), dt);
  Buffer logits = to_device(randn_f32({N, V}, 4, 2.0), dt);
  Buffer tg = to_device(random_ids(N, V, 5), DType::i32);
  Buffer ids = to_device(random_ids(N, 20, 6), DType::i32);  // ~50 repeats per id
  Buffer wl = to_device(randn_f32({V, C}, 7, 0.05), dt);

  struct Outputs {
    Buffer y, rstd, dx, dw, loss, dlogits, dtable, lin_y, lin_dw;
    double ss;
  };
  auto run = [&] {
    Outputs o{device_output({N, C}, dt),  device_output({N}, DType::f32),
              device_output({N, C}, dt),  Buffer({C}, DType::f32, Device::cuda),
              device_output({N}, DType::f32), device_output({N, V}, dt),
              Buffer({20, C}, DType::f32, Device::cuda), device_output({N, V}, dt),
              Buffer({V, C}, DType::f32, Device::cuda), 0.0};
    cuda::rmsnorm_forward(o.y, o.rstd, x, w, 1e-6f);
    cuda::rmsnorm_backward_input(o.dx, dy, x, w, o.rstd);
    cuda::rmsnorm_backward_weight(o.dw, dy, x, o.rstd);
    cuda::cross_entropy_forward(o.loss, logits, tg);
    cuda::cross_entropy_backward(o.dlogits, logits, tg, 1.f / float(N));
    cuda::embedding_backward_weight(o.dtable, ids, dy);
    cuda::linear_forward(o.lin_y, x, wl);
    cuda::linear_backward_weight(o.lin_dw, o.dlogits, x);
    o.ss = cuda::sum_squares(o.lin_dw);
    return o;
  };
  const Outputs a = run(), b = run();
  EXPECT_TRUE(bitwise_equal_device(a.y, b.y));
  EXPECT_TRUE(bitwise_equal_device(a.rstd, b.rstd));
  EXPECT_TRUE(bitwise_equal_device(a.dx, b.dx));
  EXPECT_TRUE(bitwise_equal_device(a.dw, b.dw));
  EXPECT_TRUE(bitwise_equal_device(a.loss, b.loss));
  EXPECT_TRUE(bitwise_equal_device(a.dlogits, b.dlogits));
  EXPECT_TRUE(bitwise_equal_device(a.dtable, b.dtable));
  EXPECT_TRUE(bitwise_equal_device(a.lin_y, b.lin_y));
  EXPECT_TRUE(bitwise_equal_device(a.lin_dw, b.lin_dw));
  EXPECT_EQ(a.ss, b.ss);
  EXPECT_GT(a.ss, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DeterminismCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

}  // namespace
}  // namespace bk::test
