// SwiGLU: out = silu(gate) * up with silu(g) = g * sigmoid(g), elementwise on [N,F].
//   dup = dout * silu(g),  dgate = dout * up * sigmoid(g) * (1 + g * (1 - sigmoid(g))).
// All operands share one dtype (f32 or bf16); math in f32. Packs of 8 elements (128-bit
// loads) when every pointer is 16-byte aligned. Outputs may alias inputs: each element is
// read and written by the same thread, reads first.
#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

namespace bk::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }

template <typename T>
__global__ void swiglu_fwd(T* out, const T* gate, const T* up, int64_t n, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t packs = n / kPack;
    for (int64_t p = tid; p < packs; p += stride) {
      float g[kPack], u[kPack];
      load8(gate + p * kPack, g);
      load8(up + p * kPack, u);
#pragma unroll
      for (int i = 0; i < kPack; ++i) g[i] = g[i] * sigmoid(g[i]) * u[i];
      store8(out + p * kPack, g);
    }
    done = packs * kPack;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    const float g = load(gate, i);
    store(out, i, g * sigmoid(g) * load(up, i));
  }
}

__device__ __forceinline__ void swiglu_grad(float g, float u, float go, float& dg, float& du) {
  const float sig = sigmoid(g);
  du = go * g * sig;
  dg = go * u * sig * (1.f + g * (1.f - sig));
}

template <typename T>
__global__ void swiglu_bwd(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n,
                           bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t packs = n / kPack;
    for (int64_t p = tid; p < packs; p += stride) {
      float g[kPack], u[kPack], go[kPack], dg[kPack], du[kPack];
      load8(gate + p * kPack, g);
      load8(up + p * kPack, u);
      load8(dout + p * kPack, go);
#pragma unroll
      for (int i = 0; i < kPack; ++i) swiglu_grad(g[i], u[i], go[i], dg[i], du[i]);
      store8(dgate + p * kPack, dg);
      store8(dup + p * kPack, du);
    }
    done = packs * kPack;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    float dg, du;
    swiglu_grad(load(gate, i), load(up, i), load(dout, i), dg, du);
    store(dgate, i, dg);
    store(dup, i, du);
  }
}

}  // namespace

void swiglu_forward(Tensor out, Tensor gate, Tensor up, Stream s) {
  const char* op = "swiglu_forward";
  const DType dt = act_dtype(op, {{"out", out}, {"gate", gate}, {"up", up}});
  check_shapes(op, gate.ndim() == 2 && up.shape == gate.shape && out.shape == gate.shape,
               "out, gate, up all [N,F]", {{"out", out}, {"gate", gate}, {"up", up}});
  const int64_t n = out.numel();
  if (n == 0) return;
  const bool vec = aligned16({out.data, gate.data, up.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    swiglu_fwd<T><<<grid_for(vec ? n / kPack + 1 : n, kThreads), kThreads, 0, stream_of(s)>>>(
        static_cast<T*>(out.data), static_cast<const T*>(gate.data), static_cast<const T*>(up.data),
        n, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up, Stream s) {
  const char* op = "swiglu_backward";
  const std::initializer_list<Arg> all = {
      {"dgate", dgate}, {"dup", dup}, {"dout", dout}, {"gate", gate}, {"up", up}};
  const DType dt = act_dtype(op, all);
  check_shapes(op,
               gate.ndim() == 2 && up.shape == gate.shape && dout.shape == gate.shape &&
                   dgate.shape == gate.shape && dup.shape == gate.shape,
               "dgate, dup, dout, gate, up all [N,F]", all);
  const int64_t n = gate.numel();
  if (n == 0) return;
  const bool vec = aligned16({dgate.data, dup.data, dout.data, gate.data, up.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    swiglu_bwd<T><<<grid_for(vec ? n / kPack + 1 : n, kThreads), kThreads, 0, stream_of(s)>>>(
        static_cast<T*>(dgate.data), static_cast<T*>(dup.data), static_cast<const T*>(dout.data),
        static_cast<const T*>(gate.data), static_cast<const T*>(up.data), n, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace bk::cuda
