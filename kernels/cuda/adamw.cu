// Fused AdamW with decoupled weight decay (PyTorch semantics), elementwise over one parameter:
//   g' = g * grad_scale,  m = b1 m + (1 - b1) g',  v = b2 v + (1 - b2) g'^2,
//   w -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * w).
// w (the fp32 master weight), m and v are f32; g is f32 or bf16. One pass reads g, w, m, v
// and writes w, m, v, in packs of 8 elements (128-bit accesses) when aligned. The bias
// corrections are computed once per call on the host in double, as on the CPU.
#include <cmath>
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

struct Coeffs {
  float b1, b2, lr, wd, eps, gs, ibc1, ibc2;
};

__device__ __forceinline__ void adamw_one(float& w, float g, float& m, float& v, const Coeffs& c) {
  const float gi = g * c.gs;
  m = c.b1 * m + (1.f - c.b1) * gi;
  v = c.b2 * v + (1.f - c.b2) * gi * gi;
  const float update = m * c.ibc1 / (sqrtf(v * c.ibc2) + c.eps);
  w -= c.lr * (update + c.wd * w);
}

template <typename TG>
__global__ void adamw_kernel(float* __restrict__ w, const TG* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, Coeffs c, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t packs = n / kPack;
    for (int64_t p = tid; p < packs; p += stride) {
      float pw[kPack], pg[kPack], pm[kPack], pv[kPack];
      load8(w + p * kPack, pw);
      load8(g + p * kPack, pg);
      load8(m + p * kPack, pm);
      load8(v + p * kPack, pv);
#pragma unroll
      for (int i = 0; i < kPack; ++i) adamw_one(pw[i], pg[i], pm[i], pv[i], c);
      store8(w + p * kPack, pw);
      store8(m + p * kPack, pm);
      store8(v + p * kPack, pv);
    }
    done = packs * kPack;
  }
  for (int64_t i = done + tid; i < n; i += stride) adamw_one(w[i], load(g, i), m[i], v[i], c);
}

// Many tensors in one launch: each block updates one chunk of kManyChunk elements of one
// tensor (entry), with that tensor's weight decay and gradient dtype. Elementwise, so every
// element gets exactly the one-tensor kernel's arithmetic.
constexpr int64_t kManyChunk = int64_t(kThreads) * kPack * 4;

struct AdamEntry {
  float *w, *m, *v;
  const void* g;
  int64_t n, first_chunk;
  float wd;
  int g_bf16, vec;
};

template <typename TG>
__device__ void adamw_range(const AdamEntry& t, int64_t begin, int64_t end, Coeffs c) {
  const TG* g = static_cast<const TG*>(t.g);
  int64_t i = begin;
  if (t.vec) {
    const int64_t packs = (end - begin) / kPack;
    for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
      const int64_t o = begin + p * kPack;
      float pw[kPack], pg[kPack], pm[kPack], pv[kPack];
      load8(t.w + o, pw);
      load8(g + o, pg);
      load8(t.m + o, pm);
      load8(t.v + o, pv);
#pragma unroll
      for (int k = 0; k < kPack; ++k) adamw_one(pw[k], pg[k], pm[k], pv[k], c);
      store8(t.w + o, pw);
      store8(t.m + o, pm);
      store8(t.v + o, pv);
    }
    i = begin + packs * kPack;
  }
  for (int64_t j = i + threadIdx.x; j < end; j += blockDim.x) adamw_one(t.w[j], load(g, j), t.m[j], t.v[j], c);
}

__global__ void adamw_many_kernel(const AdamEntry* __restrict__ e, int count, Coeffs c) {
  const int64_t chunk = blockIdx.x;
  const AdamEntry t = e[entry_of(e, count, chunk)];
  const int64_t begin = (chunk - t.first_chunk) * kManyChunk;
  const int64_t end = begin + kManyChunk < t.n ? begin + kManyChunk : t.n;
  c.wd = t.wd;
  if (t.g_bf16) adamw_range<__nv_bfloat16>(t, begin, end, c);
  else adamw_range<float>(t, begin, end, c);
}

Coeffs coeffs_of(const AdamWStep& p) {
  // The bias corrections once per call, in double, as on the CPU.
  const double bc1 = 1.0 - std::pow(double(p.beta1), double(p.step));
  const double bc2 = 1.0 - std::pow(double(p.beta2), double(p.step));
  return Coeffs{p.beta1, p.beta2, p.lr, p.weight_decay, p.eps, p.grad_scale, float(1 / bc1), float(1 / bc2)};
}

}  // namespace

void adamw_update(Tensor w, Tensor g, Tensor m, Tensor v, const AdamWStep& p, Stream s) {
  const char* op = "adamw_update";
  const char* why = "master weights and optimizer state are f32";
  check_dtype(op, {"w", w}, DType::f32, why);
  check_dtype(op, {"m", m}, DType::f32, why);
  check_dtype(op, {"v", v}, DType::f32, why);
  act_dtype(op, {{"g", g}});
  check_shapes(op, g.shape == w.shape && m.shape == w.shape && v.shape == w.shape,
               "w, g, m, v of one shape", {{"w", w}, {"g", g}, {"m", m}, {"v", v}});
  BK_CHECK(p.step >= 1, "{}: step is {}; steps count from 1 (bias correction)", op, p.step);
  const int64_t n = w.numel();
  if (n == 0) return;
  const Coeffs c = coeffs_of(p);
  const bool vec = aligned16({w.data, g.data, m.data, v.data});
  dispatch_float(g.dtype, [&](auto tag) {
    using TG = typename decltype(tag)::type;
    adamw_kernel<TG><<<grid_for(vec ? n / kPack + 1 : n, kThreads), kThreads, 0, stream_of(s)>>>(
        static_cast<float*>(w.data), static_cast<const TG*>(g.data), static_cast<float*>(m.data),
        static_cast<float*>(v.data), n, c, vec);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void adamw_update_many(const std::vector<Tensor>& w, const std::vector<Tensor>& g, const std::vector<Tensor>& m,
                       const std::vector<Tensor>& v, const std::vector<float>& weight_decay, const AdamWStep& p,
                       Stream s) {
  const char* op = "adamw_update_many";
  BK_CHECK(g.size() == w.size() && m.size() == w.size() && v.size() == w.size() && weight_decay.size() == w.size(),
           "{}: {} w, {} g, {} m, {} v and {} weight decays; one of each per tensor", op, w.size(), g.size(),
           m.size(), v.size(), weight_decay.size());
  BK_CHECK(p.step >= 1, "{}: step is {}; steps count from 1 (bias correction)", op, p.step);
  const char* why = "master weights and optimizer state are f32";
  std::vector<AdamEntry> entries;
  int64_t chunks = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const std::string wn = fmt::format("w[{}]", i), gn = fmt::format("g[{}]", i), mn = fmt::format("m[{}]", i),
                      vn = fmt::format("v[{}]", i);
    check_dtype(op, {wn.c_str(), w[i]}, DType::f32, why);
    check_dtype(op, {mn.c_str(), m[i]}, DType::f32, why);
    check_dtype(op, {vn.c_str(), v[i]}, DType::f32, why);
    act_dtype(op, {{gn.c_str(), g[i]}});
    check_shapes(op, g[i].shape == w[i].shape && m[i].shape == w[i].shape && v[i].shape == w[i].shape,
                 "w, g, m, v of one shape", {{wn.c_str(), w[i]}, {gn.c_str(), g[i]}, {mn.c_str(), m[i]},
                                             {vn.c_str(), v[i]}});
    const int64_t n = w[i].numel(), c = (n + kManyChunk - 1) / kManyChunk;
    entries.push_back(AdamEntry{static_cast<float*>(w[i].data), static_cast<float*>(m[i].data),
                                static_cast<float*>(v[i].data), g[i].data, n, chunks, weight_decay[i],
                                g[i].dtype == DType::bf16 ? 1 : 0,
                                aligned16({w[i].data, g[i].data, m[i].data, v[i].data}) ? 1 : 0});
    chunks += c;
  }
  if (chunks == 0) return;
  BK_CHECK(chunks < (int64_t(1) << 31), "{}: {} chunks are too many for one grid", op, chunks);
  // The table goes up from pinned memory in stream order, and the host waits for that copy
  // (and so for the work queued before it: after the grad norm's synchronisation, nothing)
  // before launching, so the staging memory is free on every path out of here.
  const size_t table = sizeof(AdamEntry) * entries.size();
  Scratch dev(table, s);
  Buffer staged = Buffer::pinned({int64_t((table + 3) / 4)}, DType::i32);
  std::memcpy(staged.tensor().data, entries.data(), table);
  BK_CUDA_CHECK(cudaMemcpyAsync(dev.get(), staged.tensor().data, table, cudaMemcpyHostToDevice, stream_of(s)));
  BK_CUDA_CHECK(cudaStreamSynchronize(stream_of(s)));
  adamw_many_kernel<<<unsigned(chunks), kThreads, 0, stream_of(s)>>>(dev.as<AdamEntry>(), int(entries.size()),
                                                                      coeffs_of(p));
  BK_CUDA_CHECK_LAUNCH();
}

}  // namespace bk::cuda
