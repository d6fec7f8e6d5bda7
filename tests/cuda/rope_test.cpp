// RoPE on the GPU against the CPU reference: forward, backward (the inverse rotation), in
// place, f32 and bf16, and a long sequence where the angle t * theta^(-2i/D) is large.
#include "cuda/cuda_testing.h"

namespace bk::test {
namespace {

class RopeCuda : public testing::TestWithParam<DType> {};

struct Dims {
  int64_t B, T, H, D;
};
constexpr Dims kDims[] = {{2, 50, 3, 16}, {1, 4096, 2, 64}, {3, 7, 5, 6}};

TEST_P(RopeCuda, ForwardAndBackwardMatchCpu) {
  const DType dt = GetParam();
  for (const Dims& d : kDims) {
    SCOPED_TRACE(testing::Message() << "T=" << d.T << " D=" << d.D);
    const Shape s{d.B, d.T, d.H, d.D};
    Buffer x = representable(randn_f32(s, 1), dt), g = representable(randn_f32(s, 2), dt);
    Buffer y_ref(s), dx_ref(s);
    cpu::rope_forward(y_ref, x, 10000.f);
    cpu::rope_backward(dx_ref, g, 10000.f);
    Buffer d_x = to_device(x, dt), d_g = to_device(g, dt);
    Buffer d_y = device_output(s, dt), d_dx = device_output(s, dt);
    cuda::rope_forward(d_y, d_x, 10000.f);
    cuda::rope_backward(d_dx, d_g, 10000.f);
    expect_close("y", d_y, y_ref, tolerance(dt));
    expect_close("dx", d_dx, dx_ref, tolerance(dt));
    cuda::rope_forward(d_x, d_x, 10000.f);  // in place
    expect_close("y in place", d_x, y_ref, tolerance(dt));
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RopeCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

}  // namespace
}  // namespace bk::test
