// Linear without bias, y[N,O] = x[N,I] W^T with W[O,I] as in PyTorch. All three products are
// one OpenBLAS GEMM each (row-major; lda/ldb/ldc are the row lengths).
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
    gemm<T>(false, true, N, O, I, T(1), x.ptr<T>(), I, w.ptr<T>(), I, T(0), y.ptr<T>(), O);
  });
}

void linear_backward_input(Tensor dx, Tensor dy, Tensor w, Stream) {
  check_args("linear_backward_input", "dy", dy, "dx", dx, "w", w);
  const int64_t N = dx.size(0), I = dx.size(1), O = w.size(0);
  if (dx.numel() == 0) return;
  dispatch(dx.dtype, [&]<typename T>() {  // dx = dy w
    gemm<T>(false, false, N, I, O, T(1), dy.ptr<T>(), O, w.ptr<T>(), I, T(0), dx.ptr<T>(), I);
  });
}

void linear_backward_weight(Tensor dw, Tensor dy, Tensor x, Stream) {
  check_args("linear_backward_weight", "dy", dy, "x", x, "dw", dw);
  const int64_t N = x.size(0), I = x.size(1), O = dw.size(0);
  if (dw.numel() == 0) return;
  dispatch(dw.dtype, [&]<typename T>() {  // dw += dy^T x (beta = 1 accumulates)
    gemm<T>(true, false, O, I, N, T(1), dy.ptr<T>(), O, x.ptr<T>(), I, T(1), dw.ptr<T>(), I);
  });
}

}  // namespace bk::cpu
