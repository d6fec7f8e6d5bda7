// Elementwise helpers: residual add, copy, and the sum of squares behind the global grad norm.
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/common.h"

namespace bk::cpu {

void add_inplace(Tensor y, Tensor x, Stream) {
  const char* op = "add_inplace";
  const DType dt = float_dtype(op, {{"y", y}, {"x", x}});
  check_shapes(op, y.shape == x.shape, "y and x of one shape", {{"y", y}, {"x", x}});
  const int64_t n = y.numel();
  dispatch(dt, [&]<typename T>() {
    T* py = y.ptr<T>();
    const T* px = x.ptr<T>();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) py[i] += px[i];
  });
}

// Same dtype: any (tokens and indices too), bytes as they are. Different float dtypes (f32 <->
// f64): converted elementwise.
void copy(Tensor dst, Tensor src, Stream) {
  const char* op = "copy";
  check_cpu(op, {"dst", dst});
  check_cpu(op, {"src", src});
  check_shapes(op, dst.shape == src.shape, "dst and src of one shape", {{"dst", dst}, {"src", src}});
  if (dst.dtype == src.dtype) {
    if (dst.data != src.data && dst.nbytes() > 0) std::memmove(dst.data, src.data, dst.nbytes());
    return;
  }
  const auto is_cpu_float = [](DType d) { return d == DType::f32 || d == DType::f64; };
  BK_CHECK(is_cpu_float(dst.dtype) && is_cpu_float(src.dtype),
           "{}: dst is {} but src is {}; the CPU converts between f32 and f64 only", op, dtype_name(dst.dtype),
           dtype_name(src.dtype));
  const int64_t n = dst.numel();
  auto convert = [n](auto* d, const auto* s) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<std::remove_reference_t<decltype(d[0])>>(s[i]);
  };
  if (dst.dtype == DType::f32) convert(dst.ptr<float>(), src.ptr<double>());
  else convert(dst.ptr<double>(), src.ptr<float>());
}

// Fixed chunks, each summed in order, then the chunk sums in order: the result depends on
// neither the thread count nor the schedule.
double sum_squares(Tensor x, Stream) {
  const char* op = "sum_squares";
  const DType dt = float_dtype(op, {{"x", x}});
  constexpr int64_t kChunk = 1 << 14;
  const int64_t n = x.numel(), nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(nchunks));
  dispatch(dt, [&]<typename T>() {
    const T* px = x.ptr<T>();
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      double s = 0;
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) s += double(px[i]) * double(px[i]);
      partial[c] = s;
    }
  });
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

std::vector<double> sum_squares_many(const std::vector<Tensor>& x, Stream s) {
  std::vector<double> out;
  for (const Tensor& t : x) {
    BK_CHECK(t.dtype == x.front().dtype, "sum_squares_many: tensors of {} and {}; one dtype for all",
             dtype_name(x.front().dtype), dtype_name(t.dtype));
    out.push_back(sum_squares(t, s));
  }
  return out;
}

}  // namespace bk::cpu
