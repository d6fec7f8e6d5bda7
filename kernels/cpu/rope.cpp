// Rotary position embedding on x[B,T,H,D], half-split ("rotate_half") convention: the pair
// (i, i + D/2) at position t rotates by angle t * theta^(-2i/D). The backward is the same
// rotation with the angle negated (rotations are orthogonal), so one routine does both.
#include <cmath>
#include <vector>

#include "kernels/cpu/common.h"

namespace bk::cpu {

namespace {
// out = R(sign * angle) in. out may alias in: each pair is read before it is written.
void rotate(const char* op, Arg out_arg, Arg in_arg, float theta, double sign) {
  const Tensor &out = out_arg.t, &in = in_arg.t;
  const DType dt = float_dtype(op, {out_arg, in_arg});
  check_shapes(op, in.ndim() == 4 && in.size(3) % 2 == 0 && out.shape == in.shape,
               "both of one shape [B,T,H,D] with D even", {out_arg, in_arg});
  BK_CHECK(theta > 0, "{}: theta must be positive, got {}", op, theta);
  const int64_t B = in.size(0), T = in.size(1), H = in.size(2), D = in.size(3), half = D / 2;
  dispatch(dt, [&]<typename F>() {
    // cos/sin per (t, i), computed in double: t * theta^(-2i/D) grows large for long sequences.
    std::vector<F> cs(size_t(T * half)), sn(size_t(T * half));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const double a = sign * double(t) * std::pow(double(theta), -2.0 * double(i) / double(D));
        cs[t * half + i] = F(std::cos(a));
        sn[t * half + i] = F(std::sin(a));
      }
    const F* px = in.ptr<F>();
    F* py = out.ptr<F>();
#pragma omp parallel for collapse(2) schedule(static) if (in.numel() >= kParallelMin)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const F *c = cs.data() + t * half, *s = sn.data() + t * half;
        for (int64_t h = 0; h < H; ++h) {
          const int64_t off = ((b * T + t) * H + h) * D;
          const F* x = px + off;
          F* y = py + off;
#pragma omp simd
          for (int64_t i = 0; i < half; ++i) {
            const F x1 = x[i], x2 = x[i + half];
            y[i] = x1 * c[i] - x2 * s[i];
            y[i + half] = x2 * c[i] + x1 * s[i];
          }
        }
      }
  });
}
}  // namespace

void rope_forward(Tensor y, Tensor x, float theta, Stream) {
  rotate("rope_forward", {"y", y}, {"x", x}, theta, 1.0);
}

void rope_backward(Tensor dx, Tensor dy, float theta, Stream) {
  rotate("rope_backward", {"dx", dx}, {"dy", dy}, theta, -1.0);
}

}  // namespace bk::cpu
