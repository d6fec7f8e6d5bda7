// Column-block copy between 2-D tensors (MLA's split and concat of head parts):
//   dst[:, dst_col : dst_col + width] = (or +=, when accumulate) src[:, src_col : src_col + width].
// Its own backward: the gradient of a copy is the copy of the gradient the other way round
// (dsrc block += ddst block). OpenMP over rows; each row is handled by one thread.
#include <cstring>

#include "kernels/cpu/common.h"

namespace bk::cpu {

void copy_columns(Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t width,
                  bool accumulate, Stream) {
  const char* op = "copy_columns";
  const DType dt = float_dtype(op, {{"dst", dst}, {"src", src}});
  check_shapes(op, dst.ndim() == 2 && src.ndim() == 2 && dst.size(0) == src.size(0),
               "dst[R,Cd] and src[R,Cs], 2-D with the same number of rows",
               {{"dst", dst}, {"src", src}});
  const int64_t R = dst.size(0), Cd = dst.size(1), Cs = src.size(1);
  BK_CHECK(width >= 0 && dst_col >= 0 && src_col >= 0 && dst_col + width <= Cd &&
               src_col + width <= Cs,
           "{}: columns [{}, {}) of dst {} and [{}, {}) of src {} (width {}); both blocks must lie "
           "inside their tensors",
           op, dst_col, dst_col + width, dst.shape.str(), src_col, src_col + width,
           src.shape.str(), width);
  // The one overlap allowed: the same tensor, with blocks that are equal or disjoint (a row's
  // block never overlaps another row's). Anything else may alias partially: refused.
  const char *pd = static_cast<const char*>(dst.data), *ps = static_cast<const char*>(src.data);
  const bool disjoint_memory = dst.nbytes() == 0 || src.nbytes() == 0 ||
                               pd + dst.nbytes() <= ps || ps + src.nbytes() <= pd;
  if (!disjoint_memory) {
    const bool same_tensor = pd == ps && dst.shape == src.shape;
    const bool blocks_ok = dst_col == src_col || dst_col + width <= src_col ||
                           src_col + width <= dst_col;
    BK_CHECK(same_tensor && blocks_ok,
             "{}: dst {} and src {} share memory; only the same tensor with equal or disjoint "
             "column blocks is allowed (dst [{}, {}), src [{}, {}))",
             op, dst.shape.str(), src.shape.str(), dst_col, dst_col + width, src_col,
             src_col + width);
  }
  if (R == 0 || width == 0) return;
  dispatch(dt, [&]<typename T>() {
    T* pdst = dst.ptr<T>();
    const T* psrc = src.ptr<T>();
#pragma omp parallel for schedule(static) if (R * width >= kParallelMin)
    for (int64_t r = 0; r < R; ++r) {
      T* d = pdst + r * Cd + dst_col;
      const T* s = psrc + r * Cs + src_col;
      if (!accumulate) {
        if (d != s) std::memcpy(d, s, sizeof(T) * width);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) d[c] += s[c];
      }
    }
  });
}

}  // namespace bk::cpu
