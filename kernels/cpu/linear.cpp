// Linear without bias, y[N,O] = x[N,I] W^T with W[O,I] as in PyTorch. Each product is a GEMM
// split into row blocks of its output (gemm_row_blocks): rows of y or dx (tokens), rows of dw
// (output features), so the reduction dimension is never split.
#include <climits>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/common.h"

namespace bk::cpu {

namespace {
// x [N,I], w [O,I], y [N,O] (any of them may be the gradient of its namesake).
void check_args(const char* op, const char* yn, const Tensor& y, const char* xn, const Tensor& x,
                const char* wn, const Tensor& w) {
  float_dtype(op, {{yn, y}, {xn, x}, {wn, w}});
  check_shapes(op,
               x.ndim() == 2 && w.ndim() == 2 && y.ndim() == 2 && x.size(0) == y.size(0) &&
                   x.size(1) == w.size(1) && y.size(1) == w.size(0),
               fmt::format("{}[N,I], {}[O,I], {}[N,O]", xn, wn, yn).c_str(),
               {{xn, x}, {wn, w}, {yn, y}});
  for (int i = 0; i < 2; ++i)  // BLAS takes int dimensions
    BK_CHECK(x.size(i) < INT_MAX && w.size(i) < INT_MAX, "{}: {} {} or {} {} is too large for BLAS",
             op, xn, x.shape.str(), wn, w.shape.str());
}
}  // namespace

void linear_forward(Tensor y, Tensor x, Tensor w, Stream) {
  check_args("linear_forward", "y", y, "x", x, "w", w);
  const int64_t N = x.size(0), I = x.size(1), O = w.size(0);
  if (y.numel() == 0) return;
  dispatch(y.dtype, [&]<typename T>() {  // y = x w^T
    const T *px = x.ptr<T>(), *pw = w.ptr<T>();
    T* py = y.ptr<T>();
    gemm_row_blocks(N, N * O * I, [&](int64_t n0, int64_t n1) {
      gemm<T>(false, true, n1 - n0, O, I, T(1), px + n0 * I, I, pw, I, T(0), py + n0 * O, O);
    });
  });
}

void linear_backward_input(Tensor dx, Tensor dy, Tensor w, Stream) {
  check_args("linear_backward_input", "dy", dy, "dx", dx, "w", w);
  const int64_t N = dx.size(0), I = dx.size(1), O = w.size(0);
  if (dx.numel() == 0) return;
  dispatch(dx.dtype, [&]<typename T>() {  // dx = dy w
    const T *pdy = dy.ptr<T>(), *pw = w.ptr<T>();
    T* pdx = dx.ptr<T>();
    gemm_row_blocks(N, N * O * I, [&](int64_t n0, int64_t n1) {
      gemm<T>(false, false, n1 - n0, I, O, T(1), pdy + n0 * O, O, pw, I, T(0), pdx + n0 * I, I);
    });
  });
}

void linear_backward_weight(Tensor dw, Tensor dy, Tensor x, Stream) {
  check_args("linear_backward_weight", "dy", dy, "x", x, "dw", dw);
  const int64_t N = x.size(0), I = x.size(1), O = dw.size(0);
  if (dw.numel() == 0) return;
  dispatch(dw.dtype, [&]<typename T>() {  // dw += dy^T x (beta = 1 accumulates)
    const T *pdy = dy.ptr<T>(), *px = x.ptr<T>();
    T* pdw = dw.ptr<T>();
    gemm_row_blocks(O, N * O * I, [&](int64_t o0, int64_t o1) {
      gemm<T>(true, false, o1 - o0, I, N, T(1), pdy + o0, O, px, I, T(1), pdw + o0 * I, I);
    });
  });
}

}  // namespace bk::cpu
