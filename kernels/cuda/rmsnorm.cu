// RMSNorm over the last dim: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
//   backward input:  with g = dy * w: dx = rstd * (g - x * rstd^2 * mean(g * x))
//   backward weight: dw[c] += sum_n dy[n,c] * x[n,c] * rstd[n]
// x, y, w, dx, dy share one dtype (f32 or bf16); rstd is f32; dw is f32 or that dtype.
// Row ops run one block per row; sums are fp32 in a fixed block-tree order. The weight
// gradient sums fixed chunks of kChunkRows rows into fp32 partials, then the partials in
// chunk order: no atomics, the same bits every run.
#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/scratch.h"
#include "kernels/cuda/vec.cuh"

namespace bk::cuda {

namespace {

constexpr int64_t kChunkRows = 64;
constexpr int kColThreads = 256;
constexpr int kMaxRowThreads = 512;  // row_threads' cap, and the kernels' launch bound

// Threads per row block: one pack (8 elements) per thread up to 512 threads; a function of
// C alone, so the reduction tree is the same every run.
int row_threads(int64_t C) {
  const int64_t packs = (C + kPack - 1) / kPack;
  const int64_t t = (packs + 31) / 32 * 32;
  return int(t < 32 ? 32 : (t > kMaxRowThreads ? kMaxRowThreads : t));
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads) rmsnorm_fwd(T* y, float* __restrict__ rstd, const T* x, const T* __restrict__ w,
                            int64_t C, float eps, bool vec) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * C;
  T* yr = y + row * C;
  float ss = 0.f;
  if (vec) {
    for (int64_t p = threadIdx.x; p < C / kPack; p += blockDim.x) {
      float v[kPack];
      load8(xr + p * kPack, v);
#pragma unroll
      for (int i = 0; i < kPack; ++i) ss += v[i] * v[i];
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = load(xr, c);
      ss += v * v;
    }
  }
  ss = block_sum(ss, scratch);
  // 1/sqrtf is correctly rounded (rsqrtf is not): closer to the CPU reference.
  const float r = 1.f / sqrtf(ss / float(C) + eps);
  if (vec) {
    for (int64_t p = threadIdx.x; p < C / kPack; p += blockDim.x) {
      float v[kPack], g[kPack];
      load8(xr + p * kPack, v);
      load8(w + p * kPack, g);
#pragma unroll
      for (int i = 0; i < kPack; ++i) v[i] = v[i] * r * g[i];
      store8(yr + p * kPack, v);
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store(yr, c, load(xr, c) * r * load(w, c));
  }
  if (threadIdx.x == 0) rstd[row] = r;
}

// dx may alias dy or x: every element is read by the thread that writes it, after the
// block-wide sum (whose barrier orders all reads of the first pass before any write).
template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads) rmsnorm_bwd_input(T* dx, const T* dy, const T* x, const T* __restrict__ w,
                                  const float* __restrict__ rstd, int64_t C, bool vec) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T *xr = x + row * C, *gr = dy + row * C;
  T* dxr = dx + row * C;
  float gx = 0.f;  // sum_c dy_c w_c x_c
  if (vec) {
    for (int64_t p = threadIdx.x; p < C / kPack; p += blockDim.x) {
      float a[kPack], b[kPack], c[kPack];
      load8(gr + p * kPack, a);
      load8(w + p * kPack, b);
      load8(xr + p * kPack, c);
#pragma unroll
      for (int i = 0; i < kPack; ++i) gx += a[i] * b[i] * c[i];
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) gx += load(gr, c) * load(w, c) * load(xr, c);
  }
  gx = block_sum(gx, scratch);
  const float r = rstd[row];
  const float k = gx * r * r / float(C);
  if (vec) {
    for (int64_t p = threadIdx.x; p < C / kPack; p += blockDim.x) {
      float a[kPack], b[kPack], c[kPack];
      load8(gr + p * kPack, a);
      load8(w + p * kPack, b);
      load8(xr + p * kPack, c);
#pragma unroll
      for (int i = 0; i < kPack; ++i) a[i] = r * (a[i] * b[i] - c[i] * k);
      store8(dxr + p * kPack, a);
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      store(dxr, c, r * (load(gr, c) * load(w, c) - load(xr, c) * k));
  }
}

// partial[chunk, c] = sum over the chunk's rows, in row order, of dy * x * rstd.
template <typename T>
__global__ void rmsnorm_bwd_weight_partial(float* __restrict__ partial, const T* __restrict__ dy,
                                           const T* __restrict__ x, const float* __restrict__ rstd,
                                           int64_t N, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (c >= C) return;
  const int64_t n0 = chunk * kChunkRows, n1 = n0 + kChunkRows < N ? n0 + kChunkRows : N;
  float s = 0.f;
  for (int64_t n = n0; n < n1; ++n) s += load(dy, n * C + c) * load(x, n * C + c) * rstd[n];
  partial[chunk * C + c] = s;
}

// dw[c] += sum over chunks, in chunk order.
template <typename TW>
__global__ void add_partials(TW* __restrict__ dw, const float* __restrict__ partial,
                             int64_t chunks, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.f;
  for (int64_t k = 0; k < chunks; ++k) s += partial[k * C + c];
  store(dw, c, load(dw, c) + s);
}

constexpr const char* kRule = "x/y/dx/dy[N,C], w/dw[C], rstd[N] (f32)";

bool shapes_ok(const Tensor& x, std::initializer_list<const Tensor*> like_x, const Tensor& rstd,
               const Tensor& w) {
  bool ok = x.ndim() == 2 && is_shape(rstd, {x.size(0)}) && is_shape(w, {x.size(1)});
  for (const Tensor* t : like_x) ok = ok && t->shape == x.shape;
  return ok;
}

}  // namespace

void rmsnorm_forward(Tensor y, Tensor rstd, Tensor x, Tensor w, float eps, Stream s) {
  const char* op = "rmsnorm_forward";
  const DType dt = act_dtype(op, {{"y", y}, {"x", x}, {"w", w}});
  check_dtype(op, {"rstd", rstd}, DType::f32, "statistics are f32");
  check_shapes(op, shapes_ok(x, {&y}, rstd, w), kRule, {{"y", y}, {"rstd", rstd}, {"x", x}, {"w", w}});
  const int64_t N = x.size(0), C = x.size(1);
  if (N == 0) return;
  BK_CHECK(C > 0, "{}: C is 0", op);
  const bool vec = C % kPack == 0 && aligned16({y.data, x.data, w.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    rmsnorm_fwd<T><<<unsigned(N), row_threads(C), 0, stream_of(s)>>>(
        static_cast<T*>(y.data), static_cast<float*>(rstd.data), static_cast<const T*>(x.data),
        static_cast<const T*>(w.data), C, eps, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void rmsnorm_backward_input(Tensor dx, Tensor dy, Tensor x, Tensor w, Tensor rstd, Stream s) {
  const char* op = "rmsnorm_backward_input";
  const DType dt = act_dtype(op, {{"dx", dx}, {"dy", dy}, {"x", x}, {"w", w}});
  check_dtype(op, {"rstd", rstd}, DType::f32, "statistics are f32");
  check_shapes(op, shapes_ok(x, {&dx, &dy}, rstd, w), kRule,
               {{"dx", dx}, {"dy", dy}, {"x", x}, {"w", w}, {"rstd", rstd}});
  const int64_t N = x.size(0), C = x.size(1);
  if (N == 0 || C == 0) return;
  const bool vec = C % kPack == 0 && aligned16({dx.data, dy.data, x.data, w.data});
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    rmsnorm_bwd_input<T><<<unsigned(N), row_threads(C), 0, stream_of(s)>>>(
        static_cast<T*>(dx.data), static_cast<const T*>(dy.data), static_cast<const T*>(x.data),
        static_cast<const T*>(w.data), static_cast<const float*>(rstd.data), C, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void rmsnorm_backward_weight(Tensor dw, Tensor dy, Tensor x, Tensor rstd, Stream s) {
  const char* op = "rmsnorm_backward_weight";
  const DType dt = act_dtype(op, {{"dy", dy}, {"x", x}});
  check_accumulator(op, {"dw", dw}, dt);
  check_dtype(op, {"rstd", rstd}, DType::f32, "statistics are f32");
  check_shapes(op, shapes_ok(x, {&dy}, rstd, dw), kRule,
               {{"dw", dw}, {"dy", dy}, {"x", x}, {"rstd", rstd}});
  const int64_t N = x.size(0), C = x.size(1);
  if (N == 0 || C == 0) return;
  const int64_t chunks = (N + kChunkRows - 1) / kChunkRows;
  BK_CHECK(chunks < 65536, "{}: {} rows exceed the {} supported", op, N, 65535 * kChunkRows);
  Scratch partial(sizeof(float) * size_t(chunks * C), s);
  const dim3 grid(ceil_div(C, kColThreads), unsigned(chunks));
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    rmsnorm_bwd_weight_partial<T><<<grid, kColThreads, 0, stream_of(s)>>>(
        partial.as<float>(), static_cast<const T*>(dy.data), static_cast<const T*>(x.data),
        static_cast<const float*>(rstd.data), N, C);
    BK_CUDA_CHECK_LAUNCH();
  });
  dispatch_float(dw.dtype, [&](auto tag) {
    using TW = typename decltype(tag)::type;
    add_partials<TW><<<ceil_div(C, kColThreads), kColThreads, 0, stream_of(s)>>>(
        static_cast<TW*>(dw.data), partial.as<float>(), chunks, C);
    BK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace bk::cuda
