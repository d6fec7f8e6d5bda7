// Causal attention on the GPU (kernels/cuda/attention.cu) against the CPU reference in f64:
// forward (out, lse) and backward (dq, dk, dv), f32 and bf16, with Dk != Dv (MLA's 192 / 128
// among them), T not a multiple of the 32-row tile, head dims off the 8-element vector path,
// and a bitwise determinism check. Tolerances: connector_cuda_testing.h (lse and D are f32
// in both dtypes, so lse is held to kTolF32).
#include <cmath>

#include "cuda/connector_cuda_testing.h"

namespace bk::test {
namespace {

struct AttnCase {
  int64_t B, T, H, Dk, Dv;
};
// (2 query tiles, vector path), (MLA head dims, 3 tiles), (D % 8 != 0: scalar loads),
// (odd dims), (two tokens: most of the tile is padding). Not one token: there p = 1 and
// ds = p (dp - D) = 0 exactly, so dq and dk are rounding noise around 0.
constexpr AttnCase kCases[] = {
    {2, 45, 3, 24, 16}, {1, 70, 2, 192, 128}, {1, 33, 2, 20, 12}, {2, 17, 1, 5, 7}, {1, 2, 1, 8, 8}};

class AttentionCuda : public testing::TestWithParam<DType> {};

struct Inputs {
  Buffer q, k, v;
  float scale;
};
Inputs inputs(const AttnCase& c, DType dt, uint64_t seed) {
  return {rnd({c.B, c.T, c.H, c.Dk}, seed, dt), rnd({c.B, c.T, c.H, c.Dk}, seed + 1, dt),
          rnd({c.B, c.T, c.H, c.Dv}, seed + 2, dt), float(1.0 / std::sqrt(double(c.Dk)))};
}

TEST_P(AttentionCuda, ForwardMatchesCpu) {
  const DType dt = GetParam();
  for (const AttnCase& c : kCases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " T=" << c.T << " H=" << c.H << " Dk=" << c.Dk
                                    << " Dv=" << c.Dv);
    const Inputs in = inputs(c, dt, 10);
    Buffer out_ref({c.B, c.T, c.H, c.Dv}, DType::f64), lse_ref({c.B, c.H, c.T}, DType::f64);
    cpu::attention_forward(out_ref, lse_ref, f64(in.q), f64(in.k), f64(in.v), in.scale);

    Buffer q = to_device(in.q, dt), k = to_device(in.k, dt), v = to_device(in.v, dt);
    Buffer out = device_output({c.B, c.T, c.H, c.Dv}, dt), lse = device_output({c.B, c.H, c.T}, DType::f32);
    cuda::attention_forward(out, lse, q, k, v, in.scale);
    expect_close("out", out, out_ref, tolerance(dt));
    expect_close("lse", lse, lse_ref, kTolF32);
  }
}

TEST_P(AttentionCuda, BackwardMatchesCpu) {
  const DType dt = GetParam();
  for (const AttnCase& c : kCases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " T=" << c.T << " H=" << c.H << " Dk=" << c.Dk
                                    << " Dv=" << c.Dv);
    const Inputs in = inputs(c, dt, 20);
    Buffer g = rnd({c.B, c.T, c.H, c.Dv}, 23, dt);
    Buffer out64({c.B, c.T, c.H, c.Dv}, DType::f64), lse64({c.B, c.H, c.T}, DType::f64);
    cpu::attention_forward(out64, lse64, f64(in.q), f64(in.k), f64(in.v), in.scale);
    // The saved tensors as the device holds them: out in dt, lse in f32.
    Buffer out = representable(out64, dt), lse = representable(lse64, DType::f32);
    Buffer dq_ref({c.B, c.T, c.H, c.Dk}, DType::f64), dk_ref({c.B, c.T, c.H, c.Dk}, DType::f64);
    Buffer dv_ref({c.B, c.T, c.H, c.Dv}, DType::f64);
    cpu::attention_backward(dq_ref, dk_ref, dv_ref, f64(g), f64(out), f64(lse), f64(in.q), f64(in.k),
                            f64(in.v), in.scale);

    Buffer q = to_device(in.q, dt), k = to_device(in.k, dt), v = to_device(in.v, dt);
    Buffer d_g = to_device(g, dt), d_out = to_device(out, dt), d_lse = to_device(lse, DType::f32);
    Buffer dq = device_output(q.shape(), dt), dk = device_output(k.shape(), dt);
    Buffer dv = device_output(v.shape(), dt);
    cuda::attention_backward(dq, dk, dv, d_g, d_out, d_lse, q, k, v, in.scale);
    expect_close("dq", dq, dq_ref, tolerance(dt));
    expect_close("dk", dk, dk_ref, tolerance(dt));
    expect_close("dv", dv, dv_ref, tolerance(dt));
  }
}

TEST_P(AttentionCuda, BackwardIsDeterministic) {
  const DType dt = GetParam();
  const AttnCase c{2, 75, 2, 48, 32};
  const Inputs in = inputs(c, dt, 30);
  Buffer q = to_device(in.q, dt), k = to_device(in.k, dt), v = to_device(in.v, dt);
  Buffer g = to_device(rnd({c.B, c.T, c.H, c.Dv}, 33, dt), dt);
  Buffer out = device_output(v.shape(), dt), lse = device_output({c.B, c.H, c.T}, DType::f32);
  cuda::attention_forward(out, lse, q, k, v, in.scale);
  Buffer r[2][3];
  for (auto& run : r) {
    run[0] = device_output(q.shape(), dt), run[1] = device_output(k.shape(), dt);
    run[2] = device_output(v.shape(), dt);
    cuda::attention_backward(run[0], run[1], run[2], g, out, lse, q, k, v, in.scale);
  }
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(bitwise_equal_device(r[0][i], r[1][i])) << "gradient " << i;
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AttentionCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

TEST(AttentionCudaArgs, LseIsF32AndTensorsOnTheDevice) {
  const AttnCase c{1, 4, 1, 8, 8};
  Buffer q = to_device(randn_f32({1, 4, 1, 8}, 1), DType::bf16);
  Buffer out = device_output({1, 4, 1, 8}, DType::bf16), lse = device_output({1, 1, 4}, DType::bf16);
  expect_error([&] { cuda::attention_forward(out, lse, q, q, q, 1.f); }, {"attention_forward", "lse", "f32"});
  Buffer host({c.B, c.T, c.H, c.Dk});
  Buffer lse32 = device_output({1, 1, 4}, DType::f32);
  expect_error([&] { cuda::attention_forward(out, lse32, host, q, q, 1.f); }, {"attention_forward", "CPU"});
}

}  // namespace
}  // namespace bk::test
