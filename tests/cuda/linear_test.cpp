// Linear (cuBLASLt) against the CPU reference for every precision combination the backend
// supports: f32 (full fp32), f32 with TF32, bf16 -> bf16, and bf16 operands into an f32
// output/accumulator; plus row slices (operands not 256-byte aligned), odd shapes and K = 0.
#include "cuda/cuda_testing.h"
#include "kernels/cuda/cublaslt.h"

namespace bk::test {
namespace {

// bf16 operands, f32 output: the products of bf16 values are exact in fp32, so only the
// accumulation differs; tensor cores align addends with truncation rather than rounding,
// which can cost a few ulp per addition: 5e-5 leaves room for K ~ 100 while a wrong term is
// >= 1e-2.
constexpr double kTolBf16InF32Out = 5e-5;

struct Precision {
  const char* name;
  DType in, out;
  bool tf32;
  double tol;
};
void PrintTo(const Precision& p, std::ostream* os) { *os << p.name; }
const Precision kPrecisions[] = {
    {"f32", DType::f32, DType::f32, false, kTolF32},
    {"tf32", DType::f32, DType::f32, true, kTolTf32},
    {"bf16", DType::bf16, DType::bf16, false, kTolBf16},
    {"bf16_in_f32_out", DType::bf16, DType::f32, false, kTolBf16InF32Out},
};

class LinearCuda : public testing::TestWithParam<Precision> {
 protected:
  void SetUp() override { cuda::set_tf32(GetParam().tf32); }
  void TearDown() override { cuda::set_tf32(false); }
};

struct Dims {
  int64_t N, I, O;
};
constexpr Dims kDims[] = {{67, 96, 80}, {5, 37, 11}, {256, 128, 64}};

TEST_P(LinearCuda, ForwardBackwardInputBackwardWeight) {
  const Precision p = GetParam();
  for (const Dims& d : kDims) {
    SCOPED_TRACE(testing::Message() << "N=" << d.N << " I=" << d.I << " O=" << d.O);
    Buffer x = representable(randn_f32({d.N, d.I}, 1), p.in);
    Buffer w = representable(randn_f32({d.O, d.I}, 2, 0.1), p.in);
    Buffer dy = representable(randn_f32({d.N, d.O}, 3), p.in);
    Buffer dw0 = representable(randn_f32({d.O, d.I}, 4), p.out);
    Buffer y_ref({d.N, d.O}), dx_ref({d.N, d.I}), dw_ref = clone(dw0);
    cpu::linear_forward(y_ref, x, w);
    cpu::linear_backward_input(dx_ref, dy, w);
    cpu::linear_backward_weight(dw_ref, dy, x);

    Buffer d_x = to_device(x, p.in), d_w = to_device(w, p.in), d_dy = to_device(dy, p.in);
    Buffer d_y = device_output({d.N, d.O}, p.out), d_dx = device_output({d.N, d.I}, p.out);
    Buffer d_dw = to_device(dw0, p.out);
    cuda::linear_forward(d_y, d_x, d_w);
    cuda::linear_backward_input(d_dx, d_dy, d_w);
    cuda::linear_backward_weight(d_dw, d_dy, d_x);
    expect_close("y", d_y, y_ref, p.tol);
    expect_close("dx", d_dx, dx_ref, p.tol);
    expect_close("dw (+=)", d_dw, dw_ref, p.tol);
  }
}

// Rows [1, N) of each operand: pointers 2..128 bytes past a 256-byte boundary.
TEST_P(LinearCuda, RowSlicesAreNotAligned) {
  const Precision p = GetParam();
  const int64_t N = 33, I = 72, O = 40;
  Buffer x = representable(randn_f32({N, I}, 5), p.in), w = representable(randn_f32({O, I}, 6), p.in);
  Buffer y_ref({N - 1, O});
  cpu::linear_forward(y_ref, x.tensor().rows(1, N), w);
  Buffer d_x = to_device(x, p.in), d_w = to_device(w, p.in);
  Buffer d_y = device_output({N, O}, p.out);
  cuda::linear_forward(d_y.tensor().rows(1, N), d_x.tensor().rows(1, N), d_w);
  Buffer got = to_host(d_y);
  Buffer got_rows({N - 1, O});
  std::memcpy(got_rows.tensor().data, got.ptr<float>() + O, sizeof(float) * size_t((N - 1) * O));
  EXPECT_LT(rel_frobenius(got_rows, y_ref), p.tol);
}

TEST_P(LinearCuda, EmptyReductionOverwritesWithZeros) {
  const Precision p = GetParam();
  Buffer d_x = device_output({4, 0}, p.in), d_w = device_output({3, 0}, p.in);
  Buffer d_y = device_output({4, 3}, p.out);
  cuda::linear_forward(d_y, d_x, d_w);
  Buffer got = to_host(d_y);
  for (int64_t i = 0; i < got.numel(); ++i) EXPECT_EQ(got.ptr<float>()[i], 0.f);
}

INSTANTIATE_TEST_SUITE_P(Precisions, LinearCuda, testing::ValuesIn(kPrecisions),
                         [](const testing::TestParamInfo<Precision>& i) { return i.param.name; });

TEST(LinearCudaArgs, RejectsMixedOperandDtypes) {
  Buffer x = to_device(randn_f32({4, 8}, 1), DType::bf16), w = to_device(randn_f32({3, 8}, 2), DType::f32);
  Buffer y = device_output({4, 3}, DType::f32);
  expect_error([&] { cuda::linear_forward(y, x, w); }, {"linear_forward", "share one dtype"});
}

}  // namespace
}  // namespace bk::test
