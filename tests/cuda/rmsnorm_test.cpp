// RMSNorm on the GPU against the CPU reference, f32 and bf16, vectorised (C % 8 == 0) and
// scalar (odd C) paths, and the weight gradient's accumulation into f32 and into the
// operands' dtype. Tolerances: cuda_testing.h.
#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

class RmsNormCuda : public testing::TestWithParam<DType> {};

struct Case {
  int64_t N, C;
};
constexpr Case kCases[] = {{150, 256}, {7, 37}};  // 150 rows > one 64-row chunk of dw

TEST_P(RmsNormCuda, ForwardMatchesCpu) {
  const DType dt = GetParam();
  for (const Case& c : kCases) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " C=" << c.C);
    Buffer x = representable(randn_f32({c.N, c.C}, 1), dt);
    Buffer w = randn_f32({c.C}, 2, 0.5);
    for (int64_t i = 0; i < c.C; ++i) w.ptr<float>()[i] += 1.f;  // gains around 1
    w = representable(w, dt);
    Buffer y_ref({c.N, c.C}), r_ref({c.N});
    cpu::rmsnorm_forward(y_ref, r_ref, x, w, 1e-6f);

    Buffer dx = to_device(x, dt), dw = to_device(w, dt);
    Buffer y = device_output({c.N, c.C}, dt), r = device_output({c.N}, DType::f32);
    cuda::rmsnorm_forward(y, r, dx, dw, 1e-6f);
    expect_close("y", y, y_ref, tolerance(dt));
    expect_close("rstd", r, r_ref, kTolF32);  // f32 statistics of the same representable x
  }
}

TEST_P(RmsNormCuda, BackwardMatchesCpu) {
  const DType dt = GetParam();
  for (const Case& c : kCases) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " C=" << c.C);
    Buffer x = representable(randn_f32({c.N, c.C}, 3), dt);
    Buffer w = representable(randn_f32({c.C}, 4), dt);
    Buffer g = representable(randn_f32({c.N, c.C}, 5), dt);
    Buffer y({c.N, c.C}), rstd({c.N});
    cpu::rmsnorm_forward(y, rstd, x, w, 1e-6f);
    Buffer dx_ref({c.N, c.C});
    cpu::rmsnorm_backward_input(dx_ref, g, x, w, rstd);
    Buffer dw0 = randn_f32({c.C}, 6);  // accumulation: dw starts non-zero
    Buffer dw_ref = clone(dw0);
    cpu::rmsnorm_backward_weight(dw_ref, g, x, rstd);

    Buffer d_x = to_device(x, dt), d_w = to_device(w, dt), d_g = to_device(g, dt);
    Buffer d_r = to_device(rstd, DType::f32);
    Buffer d_dx = device_output({c.N, c.C}, dt);
    cuda::rmsnorm_backward_input(d_dx, d_g, d_x, d_w, d_r);
    expect_close("dx", d_dx, dx_ref, tolerance(dt));

    // f32 accumulator of bf16/f32 operands: only summation order differs from the CPU.
    Buffer d_dw32 = to_device(dw0, DType::f32);
    cuda::rmsnorm_backward_weight(d_dw32, d_g, d_x, d_r);
    expect_close("dw (f32 accumulator)", d_dw32, dw_ref, kTolF32);
    // Accumulator in the operands' dtype: the reference starts from the same rounded dw0.
    Buffer dw0_dt = representable(dw0, dt), dw_ref_dt = clone(dw0_dt);
    cpu::rmsnorm_backward_weight(dw_ref_dt, g, x, rstd);
    Buffer d_dw = to_device(dw0_dt, dt);
    cuda::rmsnorm_backward_weight(d_dw, d_g, d_x, d_r);
    expect_close("dw (operand dtype)", d_dw, dw_ref_dt, tolerance(dt));
  }
}

TEST_P(RmsNormCuda, BackwardInputInPlace) {
  const DType dt = GetParam();
  const int64_t N = 9, C = 64;
  Buffer x = representable(randn_f32({N, C}, 7), dt), w = representable(randn_f32({C}, 8), dt);
  Buffer g = representable(randn_f32({N, C}, 9), dt);
  Buffer y({N, C}), rstd({N}), dx_ref({N, C});
  cpu::rmsnorm_forward(y, rstd, x, w, 1e-5f);
  cpu::rmsnorm_backward_input(dx_ref, g, x, w, rstd);
  Buffer d_x = to_device(x, dt), d_w = to_device(w, dt), d_g = to_device(g, dt);
  Buffer d_r = to_device(rstd, DType::f32);
  cuda::rmsnorm_backward_input(d_g, d_g, d_x, d_w, d_r);  // dx overwrites dy
  expect_close("dx in place", d_g, dx_ref, tolerance(dt));
}

TEST(RmsNormCudaArgs, RejectsCpuTensorsAndNonF32Statistics) {
  Buffer x({4, 8}), w({8}), r({4}), y({4, 8});
  expect_error([&] { cuda::rmsnorm_forward(y, r, x, w, 1e-6f); }, {"rmsnorm_forward", "CPU tensor"});
  Buffer dx = to_device(x, DType::bf16), dw = to_device(w, DType::bf16), dy = device_output({4, 8}, DType::bf16);
  Buffer dr = device_output({4}, DType::bf16);
  expect_error([&] { cuda::rmsnorm_forward(dy, dr, dx, dw, 1e-6f); }, {"rstd", "f32"});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RmsNormCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

}  // namespace
}  // namespace bk::test
