// Rotary position embedding on x[B,T,H,D], half-split convention: the pair (i, i + D/2) at
// position t rotates by angle t * theta^(-2i/D); the backward rotates by the negated angle.
//
// One block per (b, t): the block computes its D/2 cos/sin pairs once into shared memory and
// applies them to all H heads. Angles are formed in double, as on the CPU: t * theta^(-2i/D)
// reaches ~1e4 rad for long sequences, where a float angle would be off by ~1e-3 rad.
// y may alias x (in place): each pair is read and written by one thread.
#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"

namespace bk::cuda {

namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void rope_kernel(T* y, const T* x, int64_t T_len, int64_t H, int64_t D, double theta,
                            double sign) {
  extern __shared__ float trig[];  // cos [D/2], then sin [D/2]
  const int64_t half = D / 2;
  float *cs = trig, *sn = trig + half;
  const int64_t bt = blockIdx.x, t = bt % T_len;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const double a = sign * double(t) * pow(theta, -2.0 * double(i) / double(D));
    double s, c;
    sincos(a, &s, &c);
    cs[i] = float(c);
    sn[i] = float(s);
  }
  __syncthreads();
  const int64_t base = bt * H * D;
  for (int64_t j = threadIdx.x; j < H * half; j += blockDim.x) {
    const int64_t h = j / half, i = j - h * half, off = base + h * D + i;
    const float x1 = load(x, off), x2 = load(x, off + half);
    store(y, off, x1 * cs[i] - x2 * sn[i]);
    store(y, off + half, x2 * cs[i] + x1 * sn[i]);
  }
}

void rotate(const char* op, Arg out, Arg in, float theta, double sign, Stream s) {
  const DType dt = act_dtype(op, {out, in});
  check_shapes(op, in.t.ndim() == 4 && in.t.size(3) % 2 == 0 && out.t.shape == in.t.shape,
               "both of one shape [B,T,H,D] with D even", {out, in});
  BK_CHECK(theta > 0, "{}: theta must be positive, got {}", op, theta);
  const int64_t B = in.t.size(0), T = in.t.size(1), H = in.t.size(2), D = in.t.size(3);
  if (in.t.numel() == 0) return;
  const size_t shared = sizeof(float) * size_t(D);
  BK_CHECK(shared <= 48 * 1024, "{}: head dim {} is too large", op, D);
  dispatch_float(dt, [&](auto tag) {
    using TT = typename decltype(tag)::type;
    rope_kernel<TT><<<unsigned(B * T), kThreads, shared, stream_of(s)>>>(
        static_cast<TT*>(out.t.data), static_cast<const TT*>(in.t.data), T, H, D, double(theta),
        sign);
    BK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void rope_forward(Tensor y, Tensor x, float theta, Stream s) {
  rotate("rope_forward", {"y", y}, {"x", x}, theta, 1.0, s);
}

void rope_backward(Tensor dx, Tensor dy, float theta, Stream s) {
  rotate("rope_backward", {"dx", dx}, {"dy", dy}, theta, -1.0, s);
}

}  // namespace bk::cuda
