// Elementwise helpers: residual add, copy, and the sum of squares behind the global grad norm.
//
// sum_squares is deterministic by construction: the tensor is cut into fixed chunks of
// kSqChunk elements (the cut depends on n alone, never on the GPU), each chunk is summed by one
// block in double in a fixed thread/tree order, then one block adds the chunk sums in a fixed
// order. No atomics, so the result has the same bits in every run on a given GPU model.
#include <cstring>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/multi_tensor.cuh"
#include "kernels/cuda/scratch.h"
#include "kernels/cuda/vec.cuh"

namespace bk::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kSqChunk = int64_t(1) << 16;
constexpr int kFinalThreads = 1024;

// y += x (kAdd) or y = x converted; y and x may differ in dtype (an f32 accumulator plus a bf16
// term; a bf16 working copy of an f32 master). store()/store8 round to nearest even.
template <bool kAdd, typename TY, typename TX>
__global__ void add_or_convert_kernel(TY* y, const TX* x, int64_t n, bool vec) {  // add: y may be x
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t packs = n / kPack;
    for (int64_t p = tid; p < packs; p += stride) {
      float a[kPack], b[kPack];
      load8(x + p * kPack, b);
      if (kAdd) load8(y + p * kPack, a);
#pragma unroll
      for (int i = 0; i < kPack; ++i) a[i] = kAdd ? a[i] + b[i] : b[i];
      store8(y + p * kPack, a);
    }
    done = packs * kPack;
  }
  for (int64_t i = done + tid; i < n; i += stride) store(y, i, kAdd ? load(y, i) + load(x, i) : load(x, i));
}

// Launches it for any pair of f32/bf16 dtypes (checked by the caller).
template <bool kAdd>
void add_or_convert(Tensor y, Tensor x, Stream s) {
  const int64_t n = y.numel();
  if (n == 0) return;
  const bool vec = aligned16({y.data, x.data});
  dispatch_float(y.dtype, [&](auto ty) {
    using TY = typename decltype(ty)::type;
    dispatch_float(x.dtype, [&](auto tx) {
      using TX = typename decltype(tx)::type;
      add_or_convert_kernel<kAdd, TY, TX><<<grid_for(vec ? n / kPack + 1 : n, kThreads), kThreads, 0,
                                            stream_of(s)>>>(static_cast<TY*>(y.data),
                                                            static_cast<const TX*>(x.data), n, vec);
      BK_CUDA_CHECK_LAUNCH();
    });
  });
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Fixed-order block sum in double (blockDim.x a multiple of 32); the result is valid in thread 0.
__device__ double block_sum_d(double v) {
  __shared__ double scratch[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum_d(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0;
  return warp_sum_d(v);
}

// Sum of x^2 over [begin, end) in double by one block, in a fixed thread/tree order (valid in
// thread 0). vec: x is 16-byte aligned (begin is a multiple of kSqChunk, so of kPack).
template <typename T>
__device__ double chunk_sumsq(const T* __restrict__ x, int64_t begin, int64_t end, bool vec) {
  double s = 0;
  int64_t i = begin;
  if (vec) {
    const int64_t packs = (end - begin) / kPack;
    for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
      float v[kPack];
      load8(x + begin + p * kPack, v);
#pragma unroll
      for (int k = 0; k < kPack; ++k) s += double(v[k]) * double(v[k]);
    }
    i = begin + packs * kPack;
  }
  for (int64_t j = i + threadIdx.x; j < end; j += blockDim.x) {
    const double v = load(x, j);
    s += v * v;
  }
  return block_sum_d(s);
}

// The sum of partial[0, count) by one block of kFinalThreads, in a fixed order (thread 0).
__device__ double ordered_sum(const double* __restrict__ partial, int64_t count) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  return block_sum_d(s);
}

// partial[b] = sum of x^2 over chunk b, in double.
template <typename T>
__global__ void sumsq_chunks(const T* __restrict__ x, int64_t n, double* __restrict__ partial,
                             bool vec) {
  const int64_t begin = int64_t(blockIdx.x) * kSqChunk;
  const double s = chunk_sumsq(x, begin, begin + kSqChunk < n ? begin + kSqChunk : n, vec);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials(const double* __restrict__ partial, int64_t count,
                             double* __restrict__ out) {
  const double s = ordered_sum(partial, count);
  if (threadIdx.x == 0) *out = s;
}

// Many tensors: one entry per tensor; its chunks are blocks [first_chunk, first_chunk + chunks)
// of one grid, so each chunk (and then each tensor's total) is summed exactly as above.
struct SqEntry {
  const void* x;
  int64_t n, first_chunk, chunks;
  int vec;
};

template <typename T>
__global__ void sumsq_many_chunks(const SqEntry* __restrict__ e, int count, double* __restrict__ partial) {
  const int64_t c = blockIdx.x;
  const SqEntry t = e[entry_of(e, count, c)];
  const int64_t begin = (c - t.first_chunk) * kSqChunk;
  const double s = chunk_sumsq(static_cast<const T*>(t.x), begin,
                               begin + kSqChunk < t.n ? begin + kSqChunk : t.n, t.vec != 0);
  if (threadIdx.x == 0) partial[c] = s;
}

__global__ void sum_partials_many(const SqEntry* __restrict__ e, const double* __restrict__ partial,
                                  double* __restrict__ out) {
  const SqEntry t = e[blockIdx.x];
  const double s = ordered_sum(partial + t.first_chunk, t.chunks);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

}  // namespace

void add_inplace(Tensor y, Tensor x, Stream s) {
  const char* op = "add_inplace";
  check_device(op, {"y", y});
  check_device(op, {"x", x});
  BK_CHECK(is_float(y.dtype) && is_float(x.dtype), "{}: y is {} and x is {}; f32 or bf16 only", op,
           dtype_name(y.dtype), dtype_name(x.dtype));
  check_shapes(op, y.shape == x.shape, "y and x of one shape", {{"y", y}, {"x", x}});
  add_or_convert<true>(y, x, s);
}

// Same dtype: any, bytes as they are (device to device). Different float dtypes (f32 <-> bf16):
// converted elementwise, round to nearest even (the bf16 working copy of an f32 master weight).
void copy(Tensor dst, Tensor src, Stream s) {
  const char* op = "copy";
  check_device(op, {"dst", dst});
  check_device(op, {"src", src});
  check_shapes(op, dst.shape == src.shape, "dst and src of one shape", {{"dst", dst}, {"src", src}});
  const size_t bytes = dst.nbytes();
  if (dst.dtype != src.dtype) {
    BK_CHECK(is_float(dst.dtype) && is_float(src.dtype),
             "{}: dst is {} but src is {}; the GPU converts between f32 and bf16 only", op,
             dtype_name(dst.dtype), dtype_name(src.dtype));
    BK_CHECK(!(static_cast<const char*>(dst.data) < static_cast<const char*>(src.data) + src.nbytes() &&
               static_cast<const char*>(src.data) < static_cast<const char*>(dst.data) + bytes),
             "{}: a converting copy cannot overlap its source", op);
    add_or_convert<false>(dst, src, s);
    return;
  }
  if (bytes == 0 || dst.data == src.data) return;
  const char *d = static_cast<const char*>(dst.data), *r = static_cast<const char*>(src.data);
  if (d < r + bytes && r < d + bytes) {
    // Partial overlap (memmove semantics on the CPU): cudaMemcpy's is undefined, so stage.
    Scratch tmp(bytes, s);
    BK_CUDA_CHECK(cudaMemcpyAsync(tmp.get(), src.data, bytes, cudaMemcpyDeviceToDevice, stream_of(s)));
    BK_CUDA_CHECK(cudaMemcpyAsync(dst.data, tmp.get(), bytes, cudaMemcpyDeviceToDevice, stream_of(s)));
    return;
  }
  BK_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, bytes, cudaMemcpyDeviceToDevice, stream_of(s)));
}

// Synchronises the stream: the caller needs the value on the host.
double sum_squares(Tensor x, Stream s) {
  const char* op = "sum_squares";
  act_dtype(op, {{"x", x}});
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  const int64_t chunks = (n + kSqChunk - 1) / kSqChunk;
  Scratch partial(sizeof(double) * size_t(chunks + 1), s);
  double* dpartial = partial.as<double>();
  double* dresult = dpartial + chunks;
  const bool vec = aligned16({x.data});
  dispatch_float(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    BK_CHECK(chunks < (int64_t(1) << 31), "{}: tensor of {} elements is too large", op, n);
    sumsq_chunks<T><<<unsigned(chunks), kThreads, 0, stream_of(s)>>>(static_cast<const T*>(x.data),
                                                                     n, dpartial, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
  sum_partials<<<1, kFinalThreads, 0, stream_of(s)>>>(dpartial, chunks, dresult);
  BK_CUDA_CHECK_LAUNCH();
  Buffer host = Buffer::pinned({1}, DType::f64);
  BK_CUDA_CHECK(cudaMemcpyAsync(host.tensor().data, dresult, sizeof(double),
                                cudaMemcpyDeviceToHost, stream_of(s)));
  BK_CUDA_CHECK(cudaStreamSynchronize(stream_of(s)));
  return host.ptr<double>()[0];
}

}  // namespace bk::cuda

namespace bk::cuda {

// One upload of the entry table, two launches, one download: the grad norm of a step costs one
// host synchronisation instead of one per parameter.
std::vector<double> sum_squares_many(const std::vector<Tensor>& x, Stream s) {
  const char* op = "sum_squares_many";
  std::vector<double> out(x.size(), 0.0);
  if (x.empty()) return out;
  const DType dt = act_dtype(op, {{"x[0]", x.front()}});
  std::vector<SqEntry> entries;
  int64_t chunks = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const std::string name = fmt::format("x[{}]", i);
    check_device(op, {name.c_str(), x[i]});
    BK_CHECK(x[i].dtype == dt, "{}: {} is {} but x[0] is {}; one dtype for all", op, name,
             dtype_name(x[i].dtype), dtype_name(dt));
    const int64_t n = x[i].numel(), c = (n + kSqChunk - 1) / kSqChunk;
    entries.push_back(SqEntry{x[i].data, n, chunks, c, aligned16({x[i].data}) ? 1 : 0});
    chunks += c;
  }
  if (chunks == 0) return out;
  BK_CHECK(chunks < (int64_t(1) << 31), "{}: {} chunks are too many for one grid", op, chunks);
  const size_t table = sizeof(SqEntry) * entries.size();
  Scratch dev(table + sizeof(double) * size_t(chunks + int64_t(entries.size())), s);
  auto* dentries = dev.as<SqEntry>();
  double* dpartial = reinterpret_cast<double*>(static_cast<char*>(dev.get()) + table);
  double* dout = dpartial + chunks;
  Buffer staged = Buffer::pinned({int64_t((table + 3) / 4)}, DType::i32);  // the table's bytes
  std::memcpy(staged.tensor().data, entries.data(), table);
  BK_CUDA_CHECK(cudaMemcpyAsync(dentries, staged.tensor().data, table, cudaMemcpyHostToDevice, stream_of(s)));
  BK_CUDA_CHECK(cudaStreamSynchronize(stream_of(s)));  // `staged` is free on every path from here
  dispatch_float(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    sumsq_many_chunks<T><<<unsigned(chunks), kThreads, 0, stream_of(s)>>>(dentries, int(entries.size()), dpartial);
    BK_CUDA_CHECK_LAUNCH();
  });
  sum_partials_many<<<unsigned(entries.size()), kFinalThreads, 0, stream_of(s)>>>(dentries, dpartial, dout);
  BK_CUDA_CHECK_LAUNCH();
  Buffer host = Buffer::pinned({int64_t(entries.size())}, DType::f64);
  BK_CUDA_CHECK(cudaMemcpyAsync(host.tensor().data, dout, sizeof(double) * entries.size(), cudaMemcpyDeviceToHost,
                                stream_of(s)));
  BK_CUDA_CHECK(cudaStreamSynchronize(stream_of(s)));
  std::memcpy(out.data(), host.tensor().data, sizeof(double) * out.size());
  return out;
}

}  // namespace bk::cuda
