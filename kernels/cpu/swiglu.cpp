// SwiGLU: out = silu(gate) * up with silu(g) = g * sigmoid(g), elementwise on [N,F].
//   dup = dout * silu(g),  dgate = dout * up * sigmoid(g) * (1 + g * (1 - sigmoid(g))).
#include <cmath>

#include "kernels/cpu/common.h"

namespace bk::cpu {

void swiglu_forward(Tensor out, Tensor gate, Tensor up, Stream) {
  const char* op = "swiglu_forward";
  const DType dt = float_dtype(op, {{"out", out}, {"gate", gate}, {"up", up}});
  check_shapes(op, gate.ndim() == 2 && up.shape == gate.shape && out.shape == gate.shape,
               "out, gate, up all [N,F]", {{"out", out}, {"gate", gate}, {"up", up}});
  const int64_t n = out.numel();
  dispatch(dt, [&]<typename T>() {
    const T *g = gate.ptr<T>(), *u = up.ptr<T>();
    T* o = out.ptr<T>();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (T(1) + exp_fast(-g[i])) * u[i];
  });
}

void swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up, Stream) {
  const char* op = "swiglu_backward";
  const std::initializer_list<Arg> all = {
      {"dgate", dgate}, {"dup", dup}, {"dout", dout}, {"gate", gate}, {"up", up}};
  const DType dt = float_dtype(op, all);
  check_shapes(op,
               gate.ndim() == 2 && up.shape == gate.shape && dout.shape == gate.shape &&
                   dgate.shape == gate.shape && dup.shape == gate.shape,
               "dgate, dup, dout, gate, up all [N,F]", all);
  const int64_t n = gate.numel();
  dispatch(dt, [&]<typename T>() {
    const T *g = gate.ptr<T>(), *u = up.ptr<T>(), *go = dout.ptr<T>();
    T *dg = dgate.ptr<T>(), *du = dup.ptr<T>();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i], ui = u[i], goi = go[i];  // read all first: outputs may alias inputs
      const T sig = T(1) / (T(1) + exp_fast(-gi));
      du[i] = goi * gi * sig;
      dg[i] = goi * ui * sig * (T(1) + gi * (T(1) - sig));
    }
  });
}

}  // namespace bk::cpu
