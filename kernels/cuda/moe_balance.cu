// DeepSeek-V3's sequence-wise balance loss on the GPU (docs/model.md; the CPU reference is
// kernels/cpu/moe_balance.cpp). Over B sequences of T = N/B tokens, with s' = s / sum_e s:
//   f_i = E / (k T) * #{t in seq : i in idx[t]}  (a token counts once per expert),
//   P_i = (1/T) sum_t s'_{t,i},   loss = alpha/B * sum_seq sum_i f_i P_i,
//   dloss/ds_{t,e} = alpha/B * (1/T) * (f_e - sum_i f_i s'_{t,i}) / S_t      (f held constant).
//
// Kernels, all in double like the CPU: f per sequence (one block each, integer counts in
// shared memory: integer atomics commute, so the counts are exact and deterministic), then one
// warp per token for S_t = sum_e s and F_t = sum_e f_e s (a fixed butterfly), then (forward)
// one block per sequence sums F_t / S_t over its tokens in a fixed tree. The forward returns
// the loss on the host: it copies the B sequence sums and finishes in sequence order, so it
// synchronises the stream. The backward accumulates (+=) into dscores (f32 or bf16).
#include "core/buffer.h"
#include "kernels/cuda/fptr.cuh"
#include "kernels/cuda/scratch.h"

namespace bk::cuda {

namespace {
constexpr int kThreads = 256;

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// f [B][E] from idx [N, k]; one block per sequence. An id outside [0, E) is not counted.
__global__ void balance_fractions(double* __restrict__ f, const int32_t* __restrict__ idx,
                                  int64_t T, int E, int k) {
  extern __shared__ int bal_counts[];
  const int64_t b = blockIdx.x;
  for (int e = threadIdx.x; e < E; e += blockDim.x) bal_counts[e] = 0;
  __syncthreads();
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    const int32_t* id = idx + (b * T + t) * k;
    for (int j = 0; j < k; ++j) {
      const int e = id[j];
      if (e < 0 || e >= E) continue;
      bool repeat = false;  // "i in idx[t]": a repeated id counts once
      for (int i = 0; i < j; ++i) repeat = repeat || id[i] == e;
      if (!repeat) atomicAdd(&bal_counts[e], 1);
    }
  }
  __syncthreads();
  const double unit = double(E) / (double(k) * double(T));
  for (int e = threadIdx.x; e < E; e += blockDim.x) f[b * E + e] = unit * double(bal_counts[e]);
}

// One token's S = sum_e s_e and F = sum_e f_e s_e (warp-wide, every lane gets them).
__device__ __forceinline__ void token_sums(double& S, double& F, FPtr scores, const double* fb,
                                           int64_t t, int E) {
  const int lane = threadIdx.x & 31;
  S = 0, F = 0;
  for (int e = lane; e < E; e += 32) {
    const double se = scores[t * E + e];
    S += se;
    F += fb[e] * se;
  }
  S = warp_sum_d(S);
  F = warp_sum_d(F);
}

// per_token[t] = F_t / S_t.
__global__ void balance_tokens(double* __restrict__ per_token, FPtr scores,
                               const double* __restrict__ f, int64_t N, int64_t T, int E) {
  const int64_t t = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (t >= N) return;
  double S, F;
  token_sums(S, F, scores, f + (t / T) * E, t, E);
  if ((threadIdx.x & 31) == 0) per_token[t] = F / S;
}

// seq[b] = sum of per_token over sequence b (fixed tree); one block per sequence.
__global__ void balance_sequences(double* __restrict__ seq, const double* __restrict__ per_token,
                                  int64_t T) {
  __shared__ double part[32];
  double s = 0;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) s += per_token[blockIdx.x * T + t];
  s = warp_sum_d(s);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < int(blockDim.x >> 5) ? part[lane] : 0.0;
    s = warp_sum_d(s);
    if (lane == 0) seq[blockIdx.x] = s;
  }
}

// dscores[t, e] += coef / S_t * (f_e - F_t / S_t).
__global__ void balance_backward(FPtr dscores, FPtr scores, const double* __restrict__ f,
                                 int64_t N, int64_t T, int E, double coef) {
  const int64_t t = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (t >= N) return;
  const double* fb = f + (t / T) * E;
  double S, F;
  token_sums(S, F, scores, fb, t, E);
  const double mean_f = F / S, c = coef / S;
  for (int e = threadIdx.x & 31; e < E; e += 32) dscores.add(t * E + e, float(c * (fb[e] - mean_f)));
}

struct BalanceDims {
  int64_t N, E, k, T;
};

BalanceDims check_balance(const char* op, const Tensor& scores, const Tensor& idx, int B,
                          const Tensor* dscores) {
  check_float(op, {"scores", scores});
  if (dscores) check_float(op, {"dscores", *dscores});
  check_index(op, {"idx", idx});
  const bool ok = scores.ndim() == 2 && idx.ndim() == 2 && idx.size(0) == scores.size(0) &&
                  (!dscores || dscores->shape == scores.shape);
  if (dscores)
    check_shapes(op, ok, "dscores/scores[N,E], idx i32 [N,k]",
                 {{"dscores", *dscores}, {"scores", scores}, {"idx", idx}});
  else
    check_shapes(op, ok, "scores[N,E], idx i32 [N,k]", {{"scores", scores}, {"idx", idx}});
  const int64_t N = scores.size(0), E = scores.size(1), k = idx.size(1);
  BK_CHECK(B >= 1 && N >= B && N % B == 0,
           "{}: N = {} tokens (scores is {}) must be a positive multiple of B = {} sequences", op,
           N, scores.shape.str(), B);
  BK_CHECK(k >= 1, "{}: idx is {}; need k >= 1", op, idx.shape.str());
  BK_CHECK(E >= 1 && sizeof(int) * size_t(E) <= size_t(max_smem_optin()),
           "{}: E = {} experts does not fit the shared-memory counters", op, E);
  return {N, E, k, N / B};
}

// f [B][E] on the device (scratch of the caller).
void fractions(double* f, const Tensor& idx, int B, const BalanceDims& d, cudaStream_t st) {
  const size_t smem = sizeof(int) * size_t(d.E);
  allow_smem(balance_fractions, smem);
  balance_fractions<<<unsigned(B), kThreads, smem, st>>>(f, static_cast<const int32_t*>(idx.data),
                                                         d.T, int(d.E), int(d.k));
  BK_CUDA_CHECK_LAUNCH();
}
}  // namespace

double moe_balance_loss_forward(Tensor scores, Tensor idx, int B, float alpha, Stream s) {
  const char* op = "moe_balance_loss_forward";
  const BalanceDims d = check_balance(op, scores, idx, B, nullptr);
  const cudaStream_t st = stream_of(s);
  Scratch work(sizeof(double) * size_t(B * d.E + d.N + B), s);
  double* f = work.as<double>();
  double* per_token = f + B * d.E;
  double* seq = per_token + d.N;
  fractions(f, idx, B, d, st);
  balance_tokens<<<ceil_div(d.N, kThreads / 32), kThreads, 0, st>>>(per_token, fptr(scores), f,
                                                                     d.N, d.T, int(d.E));
  BK_CUDA_CHECK_LAUNCH();
  balance_sequences<<<unsigned(B), kThreads, 0, st>>>(seq, per_token, d.T);
  BK_CUDA_CHECK_LAUNCH();
  Buffer host = Buffer::pinned({int64_t(B)}, DType::f64);
  BK_CUDA_CHECK(cudaMemcpyAsync(host.tensor().data, seq, sizeof(double) * size_t(B),
                                cudaMemcpyDeviceToHost, st));
  BK_CUDA_CHECK(cudaStreamSynchronize(st));
  double total = 0;
  for (int b = 0; b < B; ++b) total += host.ptr<double>()[b] / double(d.T);
  return double(alpha) / double(B) * total;
}

void moe_balance_loss_backward(Tensor dscores, Tensor scores, Tensor idx, int B, float alpha,
                               float grad_scale, Stream s) {
  const char* op = "moe_balance_loss_backward";
  const BalanceDims d = check_balance(op, scores, idx, B, &dscores);
  const cudaStream_t st = stream_of(s);
  Scratch work(sizeof(double) * size_t(B * d.E), s);
  fractions(work.as<double>(), idx, B, d, st);
  const double coef = double(grad_scale) * double(alpha) / double(B) / double(d.T);
  balance_backward<<<ceil_div(d.N, kThreads / 32), kThreads, 0, st>>>(
      fptr(dscores), fptr(scores), work.as<double>(), d.N, d.T, int(d.E), coef);
  BK_CUDA_CHECK_LAUNCH();
}

}  // namespace bk::cuda
