// Sinkhorn-Knopp on each token's n x n block, on the GPU (docs/mhc.md "Kernels"; the CPU
// reference is kernels/cpu/sinkhorn.cpp, whose arithmetic this follows step for step):
//   P0 = exp(L - max L);  `iters` times: P <- P / colsum(P) (each column), P <- P / rowsum(P).
// A sum below the smallest normal float gets inverse scale 0 (no 0/0 = NaN).
//
// One thread per token, the block in registers (n <= 8 is a template constant, so every loop
// unrolls). Sums run in index order and each normalisation is one reciprocal and one multiply
// per entry, exactly as on the CPU.
//
// Backward: the thread recomputes the forward and keeps a tape on chip, then reverses every
// step: for a row step Q = P / s (s_i the row sums), dP_ij = (dQ_ij - sum_k dQ_ik Q_ik) / s_i,
// and the same with rows and columns exchanged for a column step; finally dL = dP0 * P0. The
// tape holds P0 and, per iteration, the matrix after the column step and both inverse-sum
// vectors: n^2 + iters (n^2 + 2n) floats (496 for n = 4, 20 iterations). The matrix after the
// row step is that matrix times the row inverses, one multiply per entry as in the forward,
// so it is recomputed bit for bit instead of stored. The tape lives in shared memory,
// token-minor (tape[e][token]: a warp's accesses are consecutive words, conflict-free), for
// as many tokens per block (32..128) as fit in kTapeBudget; a longer tape goes to a global
// scratch buffer with the same layout.
//
// Bytes per token (f32 coefficients): forward reads 4 n^2, writes 4 n^2; backward reads
// 8 n^2, writes 4 n^2 (plus 8 x tape bytes only on the global-tape path).
#include <cfloat>
#include <type_traits>

#include "kernels/cuda/connector_common.cuh"

namespace bk::cuda {

namespace {
constexpr int kFwdThreads = 256;
constexpr size_t kTapeBudget = 96 * 1024;  // shared tape bytes per block (two blocks per SM)

// Columns: P_ij *= 1 / sum_k P_kj; inv[j] gets the inverse used.
template <int NS> __device__ __forceinline__ void col_step(float (&P)[NS * NS], float (&inv)[NS]) {
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    float r = P[j];
#pragma unroll
    for (int i = 1; i < NS; ++i) r += P[i * NS + j];
    inv[j] = r >= FLT_MIN ? 1.f / r : 0.f;
  }
#pragma unroll
  for (int i = 0; i < NS; ++i)
#pragma unroll
    for (int j = 0; j < NS; ++j) P[i * NS + j] *= inv[j];
}

// Rows: P_ij *= 1 / sum_k P_ik.
template <int NS> __device__ __forceinline__ void row_step(float (&P)[NS * NS], float (&inv)[NS]) {
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    float s = P[i * NS];
#pragma unroll
    for (int j = 1; j < NS; ++j) s += P[i * NS + j];
    inv[i] = s >= FLT_MIN ? 1.f / s : 0.f;
  }
#pragma unroll
  for (int i = 0; i < NS; ++i)
#pragma unroll
    for (int j = 0; j < NS; ++j) P[i * NS + j] *= inv[i];
}

// P <- exp(L - max L) for token t.
template <int NS> __device__ __forceinline__ void exp_block(float (&P)[NS * NS], FPtr L, int64_t t) {
  constexpr int NN = NS * NS;
#pragma unroll
  for (int e = 0; e < NN; ++e) P[e] = L[t * NN + e];
  float mx = P[0];
#pragma unroll
  for (int e = 1; e < NN; ++e) mx = fmaxf(mx, P[e]);
#pragma unroll
  for (int e = 0; e < NN; ++e) P[e] = expf(P[e] - mx);
}

template <int NS>
__global__ void __launch_bounds__(kFwdThreads)
    sinkhorn_fwd_kernel(FPtr p, FPtr logits, int64_t N, int iters) {
  constexpr int NN = NS * NS;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= N) return;
  float P[NN], inv[NS];
  exp_block<NS>(P, logits, t);
  for (int it = 0; it < iters; ++it) {
    col_step<NS>(P, inv);
    row_step<NS>(P, inv);
  }
#pragma unroll
  for (int e = 0; e < NN; ++e) p.set(t * NN + e, P[e]);
}

constexpr int64_t tape_floats(int64_t n, int iters) { return n * n + int64_t(iters) * (n * n + 2 * n); }

// gtape == nullptr: the tape is in shared memory (stride blockDim.x), else in gtape (stride N).
template <int NS>
__global__ void sinkhorn_bwd_kernel(FPtr dlogits, FPtr dp, FPtr logits, int64_t N, int iters,
                                    float* __restrict__ gtape) {
  constexpr int NN = NS * NS, kIter = NN + 2 * NS;  // tape floats per iteration
  extern __shared__ float sk_smem[];
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= N) return;  // no barriers below: each thread's tape is its own
  float* tape = gtape ? gtape + t : sk_smem + threadIdx.x;
  const int64_t ts = gtape ? N : blockDim.x;

  // Forward, taped: P0, then per iteration [column-normalised matrix, col inverses, row inverses].
  float P[NN], ic[NS], ir[NS];
  exp_block<NS>(P, logits, t);
#pragma unroll
  for (int e = 0; e < NN; ++e) tape[e * ts] = P[e];
  for (int it = 0; it < iters; ++it) {
    float* rec = tape + (NN + int64_t(it) * kIter) * ts;
    col_step<NS>(P, ic);
#pragma unroll
    for (int e = 0; e < NN; ++e) rec[e * ts] = P[e];
    row_step<NS>(P, ir);
#pragma unroll
    for (int a = 0; a < NS; ++a) {
      rec[(NN + a) * ts] = ic[a];
      rec[(NN + NS + a) * ts] = ir[a];
    }
  }

  // Reverse every step.
  float G[NN];
#pragma unroll
  for (int e = 0; e < NN; ++e) G[e] = dp[t * NN + e];
  for (int it = iters - 1; it >= 0; --it) {
    const float* rec = tape + (NN + int64_t(it) * kIter) * ts;
    float Qc[NN];
#pragma unroll
    for (int e = 0; e < NN; ++e) Qc[e] = rec[e * ts];
#pragma unroll
    for (int a = 0; a < NS; ++a) {
      ic[a] = rec[(NN + a) * ts];
      ir[a] = rec[(NN + NS + a) * ts];
    }
    // Row step: Q = Qc * ir (the forward's matrix, recomputed exactly); d_i = sum_k G_ik Q_ik.
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      float d = 0.f;
#pragma unroll
      for (int k = 0; k < NS; ++k) d += G[i * NS + k] * (Qc[i * NS + k] * ir[i]);
#pragma unroll
      for (int j = 0; j < NS; ++j) G[i * NS + j] = (G[i * NS + j] - d) * ir[i];
    }
    // Column step: Q = Qc; d_j = sum_k G_kj Q_kj.
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      float d = 0.f;
#pragma unroll
      for (int k = 0; k < NS; ++k) d += G[k * NS + j] * Qc[k * NS + j];
#pragma unroll
      for (int i = 0; i < NS; ++i) G[i * NS + j] = (G[i * NS + j] - d) * ic[j];
    }
  }
#pragma unroll
  for (int e = 0; e < NN; ++e) dlogits.set(t * NN + e, G[e] * tape[e * ts]);
}

// f(std::integral_constant<int, n>) for n = 1..8.
template <typename F> void dispatch_n(int64_t n, F&& f) {
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

void check(const char* op, const char* out_name, const Tensor& out, const char* in_name,
           const Tensor& in, std::initializer_list<Arg> more, int iters) {
  BK_CHECK(in.ndim() == 3 && in.size(1) == in.size(2) && in.size(1) >= 1,
           "{}: {} is {}; expected [N, n, n] with n >= 1", op, in_name, in.shape.str());
  BK_CHECK(in.size(1) <= conn::kMaxStreams, "{}: {} is {}: the CUDA kernel takes n <= {}", op,
           in_name, in.shape.str(), conn::kMaxStreams);
  for (const Arg& a : more)
    BK_CHECK(a.t.shape == in.shape, "{}: {} is {} but must be [N, n, n] = {} like {}", op, a.name,
             a.t.shape.str(), in.shape.str(), in_name);
  BK_CHECK(out.shape == in.shape, "{}: {} is {} but must be [N, n, n] = {} like {}", op, out_name,
           out.shape.str(), in.shape.str(), in_name);
  BK_CHECK(iters >= 1, "{}: iters is {}; Sinkhorn-Knopp needs at least 1 iteration", op, iters);
}
}  // namespace

void sinkhorn_forward(Tensor p, Tensor logits, int iters, Stream s) {
  const char* op = "sinkhorn_forward";
  check_floats(op, {{"p", p}, {"logits", logits}});
  check(op, "p", p, "logits", logits, {}, iters);
  const int64_t N = logits.size(0), n = logits.size(1);
  if (N == 0) return;
  dispatch_n(n, [&](auto ns) {
    constexpr int NS = decltype(ns)::value;
    sinkhorn_fwd_kernel<NS><<<ceil_div(N, kFwdThreads), kFwdThreads, 0, stream_of(s)>>>(
        fptr(p), fptr(logits), N, iters);
    BK_CUDA_CHECK_LAUNCH();
  });
}

void sinkhorn_backward(Tensor dlogits, Tensor dp, Tensor logits, int iters, Stream s) {
  const char* op = "sinkhorn_backward";
  check_floats(op, {{"dlogits", dlogits}, {"dp", dp}, {"logits", logits}});
  check(op, "dlogits", dlogits, "logits", logits, {{"dp", dp}}, iters);
  const int64_t N = logits.size(0), n = logits.size(1);
  if (N == 0) return;
  const size_t tape_bytes = sizeof(float) * size_t(tape_floats(n, iters));
  const size_t budget = std::min(kTapeBudget, size_t(max_smem_optin()));
  int tpb = 0;
  for (int cand : {128, 64, 32})
    if (size_t(cand) * tape_bytes <= budget) {
      tpb = cand;
      break;
    }
  const bool global = tpb == 0;
  if (global) tpb = 128;
  const size_t smem = global ? 0 : size_t(tpb) * tape_bytes;
  Scratch gtape(global ? tape_bytes * size_t(N) : 1, s);
  dispatch_n(n, [&](auto ns) {
    constexpr int NS = decltype(ns)::value;
    allow_smem(sinkhorn_bwd_kernel<NS>, smem);
    sinkhorn_bwd_kernel<NS><<<ceil_div(N, tpb), tpb, smem, stream_of(s)>>>(
        fptr(dlogits), fptr(dp), fptr(logits), N, iters, global ? gtape.as<float>() : nullptr);
    BK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace bk::cuda
