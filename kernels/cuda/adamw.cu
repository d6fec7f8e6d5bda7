// Fused AdamW with decoupled weight decay (PyTorch semantics), elementwise over one parameter:
//   g' = g * grad_scale,  m = b1 m + (1 - b1) g',  v = b2 v + (1 - b2) g'^2,
//   w -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * w).
// w (the fp32 master weight), m and v are f32; g is f32 or bf16. One pass reads g, w, m, v
// and writes w, m, v, in packs of 8 elements (128-bit accesses) when aligned. The bias
// corrections are computed once per call on the host in double, as on the CPU.
#include <cmath>

#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

namespace bk::cuda {

namespace {

constexpr int kThreads = 256;

struct Coeffs {
  float b1, b2, lr, wd, eps, gs, ibc1, ibc2;
};

__device__ __forceinline__ void adamw_one(float& w, float g, float& m, float& v, const Coeffs& c) {
  const float gi = g * c.gs;
  m = c.b1 * m + (1.f - c.b1) * gi;
  v = c.b2 * v + (1.f - c.b2) * gi * gi;
  const float update = m * c.ibc1 / (sqrtf(v * c.ibc2) + c.eps);
  w -= c.lr * (update + c.wd * w);
}

template <typename TG>
__global__ void adamw_kernel(float* __restrict__ w, const TG* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, Coeffs c, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t packs = n / kPack;
    for (int64_t p = tid; p < packs; p += stride) {
      float pw[kPack], pg[kPack], pm[kPack], pv[kPack];
      load8(w + p * kPack, pw);
      load8(g + p * kPack, pg);
      load8(m + p * kPack, pm);
      load8(v + p * kPack, pv);
#pragma unroll
      for (int i = 0; i < kPack; ++i) adamw_one(pw[i], pg[i], pm[i], pv[i], c);
      store8(w + p * kPack, pw);
      store8(m + p * kPack, pm);
      store8(v + p * kPack, pv);
    }
    done = packs * kPack;
  }
  for (int64_t i = done + tid; i < n; i += stride) adamw_one(w[i], load(g, i), m[i], v[i], c);
}

}  // namespace

void adamw_update(Tensor w, Tensor g, Tensor m, Tensor v, const AdamWStep& p, Stream s) {
  const char* op = "adamw_update";
  const char* why = "master weights and optimizer state are f32";
  check_dtype(op, {"w", w}, DType::f32, why);
  check_dtype(op, {"m", m}, DType::f32, why);
  check_dtype(op, {"v", v}, DType::f32, why);
  act_dtype(op, {{"g", g}});
  check_shapes(op, g.shape == w.shape && m.shape == w.shape && v.shape == w.shape,
               "w, g, m, v of one shape", {{"w", w}, {"g", g}, {"m", m}, {"v", v}});
  BK_CHECK(p.step >= 1, "{}: step is {}; steps count from 1 (bias correction)", op, p.step);
  const int64_t n = w.numel();
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(double(p.beta1), double(p.step));
  const double bc2 = 1.0 - std::pow(double(p.beta2), double(p.step));
  const Coeffs c{p.beta1, p.beta2,    p.lr,  p.weight_decay, p.eps,
                 p.grad_scale, float(1 / bc1), float(1 / bc2)};
  const bool vec = aligned16({w.data, g.data, m.data, v.data});
  dispatch_float(g.dtype, [&](auto tag) {
    using TG = typename decltype(tag)::type;
    adamw_kernel<TG><<<grid_for(vec ? n / kPack + 1 : n, kThreads), kThreads, 0, stream_of(s)>>>(
        static_cast<float*>(w.data), static_cast<const TG*>(g.data), static_cast<float*>(m.data),
        static_cast<float*>(v.data), n, c, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace bk::cuda
