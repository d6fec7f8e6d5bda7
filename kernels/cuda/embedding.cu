// Token embedding: a row gather forward, a scatter-add of rows backward.
//
// Ids outside [0, V): the CPU kernel throws; checking on the device would need a host
// round trip every call, so instead the forward writes NaN into that row (the loss turns NaN
// and the trainer's non-finite check reports it) and the backward skips it.
//
// The backward is deterministic without atomics: the (token id, row) pairs are sorted by id
// (CUB's radix sort is stable, so rows keep token order), each run of equal ids is summed
// in that order by one thread per column, and the sum is added to the table row once.
#include <cub/device/device_radix_sort.cuh>

#include <climits>
#include <cstdint>

#include "kernels/cuda/args.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/scratch.h"
#include "kernels/cuda/vec.cuh"

namespace bk::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void embed_fwd(T* __restrict__ out, const int32_t* __restrict__ tokens,
                          const T* __restrict__ table, int64_t V, int64_t C, bool vec) {
  const int64_t n = blockIdx.x;
  const int32_t id = tokens[n];
  T* o = out + n * C;
  if (id < 0 || id >= V) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store(o, c, __int_as_float(0x7fc00000));
    return;
  }
  const T* src = table + int64_t(id) * C;
  if (vec) {  // whole rows of 16-byte units
    const int64_t units = C * int64_t(sizeof(T)) / 16;
    for (int64_t u = threadIdx.x; u < units; u += blockDim.x)
      reinterpret_cast<uint4*>(o)[u] = reinterpret_cast<const uint4*>(src)[u];
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = src[c];
  }
}

// keys[n] = tokens[n] if valid, else V (sorts last, skipped); rows[n] = n.
__global__ void make_keys(int32_t* __restrict__ keys, int32_t* __restrict__ rows,
                          const int32_t* __restrict__ tokens, int64_t N, int32_t V) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int32_t id = tokens[n];
  keys[n] = id >= 0 && id < V ? id : V;
  rows[n] = int32_t(n);
}

// Block x = a position in the sorted order; only the first position of each run of equal ids
// works: it sums the run's rows (token order) for its columns and adds the sum to the table.
template <typename T, typename TW>
__global__ void embed_bwd(TW* __restrict__ dtable, const int32_t* __restrict__ keys,
                          const int32_t* __restrict__ rows, const T* __restrict__ dout, int64_t N,
                          int64_t V, int64_t C) {
  const int64_t p = blockIdx.x;
  const int32_t id = keys[p];
  if (id >= V || (p > 0 && keys[p - 1] == id)) return;
  const int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.f;
  for (int64_t q = p; q < N && keys[q] == id; ++q) acc += load(dout, int64_t(rows[q]) * C + c);
  const int64_t at = int64_t(id) * C + c;
  store(dtable, at, load(dtable, at) + acc);
}

constexpr const char* kRule = "tokens[N] (i32), table[V,C], out/dout[N,C]";

void check_args(const char* op, const Tensor& rows, const char* rows_name, const Tensor& tokens,
                const Tensor& table, bool table_accumulates) {
  const DType dt = act_dtype(op, {{rows_name, rows}});
  if (table_accumulates) check_accumulator(op, {"dtable", table}, dt);
  else act_dtype(op, {{rows_name, rows}, {"table", table}});
  check_index(op, {"tokens", tokens});
  check_shapes(op,
               rows.ndim() == 2 && table.ndim() == 2 && tokens.ndim() == 1 &&
                   rows.size(0) == tokens.size(0) && rows.size(1) == table.size(1),
               kRule, {{rows_name, rows}, {"tokens", tokens}, {"table", table}});
  BK_CHECK(table.size(0) < INT32_MAX, "{}: vocabulary of {} rows exceeds i32 ids", op, table.size(0));
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

void embedding_forward(Tensor out, Tensor tokens, Tensor table, Stream s) {
  check_args("embedding_forward", out, "out", tokens, table, false);
  const int64_t N = out.size(0), C = out.size(1), V = table.size(0);
  if (N == 0 || C == 0) return;
  dispatch_float(out.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const bool vec = (C * int64_t(sizeof(T))) % 16 == 0 && aligned16({out.data, table.data});
    embed_fwd<T><<<unsigned(N), kThreads, 0, stream_of(s)>>>(
        static_cast<T*>(out.data), static_cast<const int32_t*>(tokens.data),
        static_cast<const T*>(table.data), V, C, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void embedding_backward_weight(Tensor dtable, Tensor tokens, Tensor dout, Stream s) {
  const char* op = "embedding_backward_weight";
  check_args(op, dout, "dout", tokens, dtable, true);
  const int64_t N = dout.size(0), C = dout.size(1), V = dtable.size(0);
  if (N == 0 || C == 0) return;
  BK_CHECK(N < INT32_MAX, "{}: {} tokens exceed i32 row indices", op, N);
  const cudaStream_t cs = stream_of(s);
  int end_bit = 1;  // keys lie in [0, V]: sort only the bits V needs
  while (end_bit < 32 && (int64_t(1) << end_bit) <= V) ++end_bit;
  const size_t ints = align256(sizeof(int32_t) * size_t(N));
  size_t sort_bytes = 0;
  BK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), int(N), 0, end_bit,
                                                cs));
  Scratch scratch(4 * ints + sort_bytes, s);
  char* base = scratch.as<char>();
  int32_t* keys_in = reinterpret_cast<int32_t*>(base);
  int32_t* rows_in = reinterpret_cast<int32_t*>(base + ints);
  int32_t* keys = reinterpret_cast<int32_t*>(base + 2 * ints);
  int32_t* rows = reinterpret_cast<int32_t*>(base + 3 * ints);
  void* sort_tmp = base + 4 * ints;

  make_keys<<<ceil_div(N, kThreads), kThreads, 0, cs>>>(keys_in, rows_in,
                                                        static_cast<const int32_t*>(tokens.data),
                                                        N, int32_t(V));
  BK_CUDA_CHECK_LAUNCH();
  BK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, keys_in, keys, rows_in, rows,
                                                int(N), 0, end_bit, cs));
  const dim3 grid(unsigned(N), ceil_div(C, kThreads));
  BK_CHECK(grid.y < 65536, "{}: C = {} is too wide", op, C);
  dispatch_float(dout.dtype, [&](auto tg) {
    using T = typename decltype(tg)::type;
    dispatch_float(dtable.dtype, [&](auto tw) {
      using TW = typename decltype(tw)::type;
      embed_bwd<T, TW><<<grid, kThreads, 0, cs>>>(static_cast<TW*>(dtable.data), keys, rows,
                                                  static_cast<const T*>(dout.data), N, V, C);
      BK_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace bk::cuda
