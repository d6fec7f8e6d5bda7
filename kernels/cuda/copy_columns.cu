// Column-block copy between 2-D tensors (MLA's split and concat of head parts):
//   dst[:, dst_col : dst_col + width] = (or +=, when accumulate) src[:, src_col : src_col + width].
// dst and src share one dtype (f32 or bf16). One thread per element (or per 8-element pack
// when both blocks and row strides are 16-byte aligned); rows are independent.
#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

namespace bk::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void copy_cols(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t R,
                          int64_t width, bool accumulate, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec) {
    const int64_t per_row = width / kPack;
    for (int64_t j = tid; j < R * per_row; j += stride) {
      const int64_t r = j / per_row, c = (j - r * per_row) * kPack;
      T* d = dst + r * ld_dst + c;
      const T* sp = src + r * ld_src + c;
      if (!accumulate) {
        *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(sp);
        if (sizeof(T) == 4) reinterpret_cast<uint4*>(d)[1] = reinterpret_cast<const uint4*>(sp)[1];
      } else {
        float a[kPack], b[kPack];
        load8(d, a);
        load8(sp, b);
#pragma unroll
        for (int i = 0; i < kPack; ++i) a[i] += b[i];
        store8(d, a);
      }
    }
    return;
  }
  for (int64_t j = tid; j < R * width; j += stride) {
    const int64_t r = j / width, c = j - r * width;
    T* d = dst + r * ld_dst + c;
    const T* sp = src + r * ld_src + c;
    if (accumulate) store(d, 0, load(d, 0) + load(sp, 0));
    else *d = *sp;
  }
}

}  // namespace

void copy_columns(Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t width,
                  bool accumulate, Stream s) {
  const char* op = "copy_columns";
  const DType dt = act_dtype(op, {{"dst", dst}, {"src", src}});
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
  // As on the CPU: the one overlap allowed is the same tensor with equal or disjoint blocks.
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
    if (!accumulate && dst_col == src_col) return;  // copying a block onto itself
  }
  if (R == 0 || width == 0) return;
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* d = static_cast<T*>(dst.data) + dst_col;
    const T* sp = static_cast<const T*>(src.data) + src_col;
    // Packs need every row's block start 16-byte aligned: base, column offset and row stride.
    const int64_t e = 16 / int64_t(sizeof(T));
    const bool vec = width % kPack == 0 && Cd % e == 0 && Cs % e == 0 && aligned16({d, sp});
    const int64_t work = vec ? R * (width / kPack) : R * width;
    copy_cols<T><<<grid_for(work, kThreads), kThreads, 0, stream_of(s)>>>(d, Cd, sp, Cs, R, width,
                                                                          accumulate, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace bk::cuda
