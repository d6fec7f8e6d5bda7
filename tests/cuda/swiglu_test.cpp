// SwiGLU on the GPU against the CPU reference: the 8-element vector path with a scalar tail
// (n % 8 != 0), the unaligned scalar path (a row slice), and outputs aliasing inputs.
#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

class SwigluCuda : public testing::TestWithParam<DType> {};

TEST_P(SwigluCuda, ForwardAndBackwardMatchCpu) {
  const DType dt = GetParam();
  const int64_t N = 33, F = 100;  // 3300 elements: 412 packs and a tail of 4
  Buffer g = representable(randn_f32({N, F}, 1, 2.0), dt), u = representable(randn_f32({N, F}, 2), dt);
  Buffer go = representable(randn_f32({N, F}, 3), dt);
  Buffer out_ref({N, F}), dg_ref({N, F}), du_ref({N, F});
  cpu::swiglu_forward(out_ref, g, u);
  cpu::swiglu_backward(dg_ref, du_ref, go, g, u);
  Buffer d_g = to_device(g, dt), d_u = to_device(u, dt), d_go = to_device(go, dt);
  Buffer d_out = device_output({N, F}, dt), d_dg = device_output({N, F}, dt),
         d_du = device_output({N, F}, dt);
  cuda::swiglu_forward(d_out, d_g, d_u);
  cuda::swiglu_backward(d_dg, d_du, d_go, d_g, d_u);
  expect_close("out", d_out, out_ref, tolerance(dt));
  expect_close("dgate", d_dg, dg_ref, tolerance(dt));
  expect_close("dup", d_du, du_ref, tolerance(dt));

  // Views starting 3 elements into a buffer (12 or 6 bytes past 16-byte alignment) take the
  // scalar path.
  Buffer g2 = representable(randn_f32({N * F + 3}, 4), dt), u2 = representable(randn_f32({N * F + 3}, 5), dt);
  Buffer d_g2 = to_device(g2, dt), d_u2 = to_device(u2, dt);
  Buffer d_o2 = device_output({N * F + 3}, dt);
  const Tensor gv = d_g2.tensor().view({N * F + 3, 1}).rows(3, N * F + 3).view({N, F});
  const Tensor uv = d_u2.tensor().view({N * F + 3, 1}).rows(3, N * F + 3).view({N, F});
  const Tensor ov = d_o2.tensor().view({N * F + 3, 1}).rows(3, N * F + 3).view({N, F});
  cuda::swiglu_forward(ov, gv, uv);
  Buffer o2_ref({N, F});
  cpu::swiglu_forward(o2_ref, g2.tensor().view({N * F + 3, 1}).rows(3, N * F + 3).view({N, F}),
                      u2.tensor().view({N * F + 3, 1}).rows(3, N * F + 3).view({N, F}));
  Buffer o2 = to_host(d_o2);
  Buffer o2_got({N, F});
  std::memcpy(o2_got.tensor().data, o2.ptr<float>() + 3, sizeof(float) * size_t(N * F));
  EXPECT_LT(rel_frobenius(o2_got, o2_ref), tolerance(dt));

  // In place: dgate over gate, dup over up.
  cuda::swiglu_backward(d_g, d_u, d_go, d_g, d_u);
  expect_close("dgate in place", d_g, dg_ref, tolerance(dt));
  expect_close("dup in place", d_u, du_ref, tolerance(dt));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SwigluCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

}  // namespace
}  // namespace bk::test
