// DeepSeekMoE router on the GPU (docs/model.md; the CPU reference is kernels/cpu/moe_router.cpp,
// whose selection rules this follows exactly). Per token, with E experts:
//   s = sigmoid(logits) (saved as scores),  b = s + bias (the choice only)
//   group-limited routing: groups of G = E / n_groups experts; a group's score is the sum of
//   its two highest b (its only b when G = 1); the topk_groups best groups (ties: lower id)
//   are eligible; idx = the k eligible experts of highest b, in descending b (ties: lower id)
//   gates_j = route_scale * s_{idx_j} / sum_j s_{idx_j}
// Backward: ds_{idx_j} += route_scale (dg_j / S - sum_i dg_i s_{idx_i} / S^2);
//   dlogits = (ds + dscores_extra) * s (1 - s).
//
// One warp per token; the token's s and b sit in shared memory. A group's top two is one
// lane's sequential scan of its G experts and the group choice one lane's scan of the group
// scores, exactly the CPU's loops. Each of the k expert picks is a warp argmax: every lane
// scans its experts (e = lane + 32 i, strict >) and a butterfly keeps the higher value, the
// lower id on ties; lane 0's winner is broadcast, so all lanes agree even with NaN scores.
// That is the CPU's "first strictly greatest in id order", so idx is bit-identical given the
// same scores. Dtypes: logits, scores, gates, bias and the gradients are f32 or bf16 each.
#include <cmath>

#include "kernels/cuda/fptr.cuh"

namespace bk::cuda {

namespace {
constexpr int kWarps = 4;

__device__ __forceinline__ float sigmoidf_stable(float l) {
  const float e = expf(-fabsf(l));
  return l >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
}

// (value, id) of the better candidate: higher value, then lower id; id < 0 is "none".
__device__ __forceinline__ void better(float& v, int& id, float v2, int id2) {
  if (id2 < 0) return;
  if (id < 0 || v2 > v || (!(v > v2) && id2 < id)) {
    v = v2;
    id = id2;
  }
}

struct RouterArgs {
  int32_t* idx;
  FPtr gates, scores, logits, bias;
  int64_t N;
  int E, k, n_groups, topk_groups;
  float route_scale;
};

// Shared memory per warp: s[E], b[E], open[E] (int), gscore[n_groups], ids[k] (int).
__host__ __device__ inline int warp_words(int E, int n_groups, int k) { return 3 * E + n_groups + k; }

__global__ void __launch_bounds__(kWarps * 32) router_fwd_kernel(RouterArgs a) {
  extern __shared__ float router_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, E = a.E, k = a.k;
  const int64_t n = int64_t(blockIdx.x) * kWarps + warp;
  if (n >= a.N) return;  // whole warps leave; no block-wide barriers below
  float* s = router_smem + warp * warp_words(E, a.n_groups, k);
  float* b = s + E;
  int* open = reinterpret_cast<int*>(b + E);
  float* gscore = reinterpret_cast<float*>(open + E);
  int* ids = reinterpret_cast<int*>(gscore + a.n_groups);

  for (int e = lane; e < E; e += 32) {
    const float se = sigmoidf_stable(a.logits[n * E + e]);
    a.scores.set(n * E + e, se);
    s[e] = se;
    b[e] = se + a.bias[e];
  }
  __syncwarp();
  if (a.n_groups == 1) {
    for (int e = lane; e < E; e += 32) open[e] = 1;
  } else {
    const int G = E / a.n_groups;
    for (int g = lane; g < a.n_groups; g += 32) {  // sum of the group's two highest b
      float m1 = -INFINITY, m2 = -INFINITY;
      for (int e = g * G; e < (g + 1) * G; ++e) {
        if (b[e] > m1) m2 = m1, m1 = b[e];
        else if (b[e] > m2) m2 = b[e];
      }
      gscore[g] = G >= 2 ? m1 + m2 : m1;
    }
    for (int e = lane; e < E; e += 32) open[e] = 0;
    __syncwarp();
    if (lane == 0) {  // the CPU's scan: best untaken group, strict >, topk_groups times
      for (int r = 0; r < a.topk_groups; ++r) {
        int best = -1;
        for (int g = 0; g < a.n_groups; ++g)
          if (!open[g * G] && (best < 0 || gscore[g] > gscore[best])) best = g;
        for (int e = best * G; e < (best + 1) * G; ++e) open[e] = 1;
      }
    }
  }
  __syncwarp();
  for (int j = 0; j < k; ++j) {
    float v = 0.f;
    int id = -1;
    for (int e = lane; e < E; e += 32)
      if (open[e] && (id < 0 || b[e] > v)) v = b[e], id = e;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
      const int id2 = __shfl_xor_sync(0xffffffffu, id, o);
      better(v, id, v2, id2);
    }
    id = __shfl_sync(0xffffffffu, id, 0);
    if (lane == 0) {
      open[id] = 0;
      ids[j] = id;
      a.idx[n * k + j] = id;
    }
    __syncwarp();
  }
  float S = 0.f;  // every lane sums in slot order: the same value everywhere
  for (int j = 0; j < k; ++j) S += s[ids[j]];
  for (int j = lane; j < k; j += 32) a.gates.set(n * k + j, a.route_scale * s[ids[j]] / S);
}

__global__ void __launch_bounds__(kWarps * 32)
    router_bwd_kernel(FPtr dlogits, FPtr dgates, FPtr extra, bool has_extra, FPtr scores,
                      const int32_t* __restrict__ idx, int64_t N, int E, int k, float rs) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + warp;
  if (n >= N) return;
  const int32_t* id = idx + n * k;
  float S = 0.f, dot_gs = 0.f;  // slot order, in every lane
  for (int j = 0; j < k; ++j) {
    const int e = id[j];
    const float se = e >= 0 && e < E ? scores[n * E + e] : NAN;  // bad id: NaN row, loud
    S += se;
    dot_gs += dgates[n * k + j] * se;
  }
  const float c = dot_gs / (S * S);
  for (int e = lane; e < E; e += 32) {
    float d = has_extra ? extra[n * E + e] : 0.f;  // read before the write: may alias dlogits
    for (int j = 0; j < k; ++j)
      if (id[j] == e) d += rs * (dgates[n * k + j] / S - c);
    const float se = scores[n * E + e];
    dlogits.set(n * E + e, d * (se * (1.f - se)));
  }
}
}  // namespace

void moe_router_forward(Tensor idx, Tensor gates, Tensor scores, Tensor logits, Tensor bias,
                        int n_groups, int topk_groups, float route_scale, Stream s) {
  const char* op = "moe_router_forward";
  check_floats(op, {{"gates", gates}, {"scores", scores}, {"logits", logits}, {"bias", bias}});
  check_index(op, {"idx", idx});
  check_shapes(op,
               logits.ndim() == 2 && scores.shape == logits.shape && idx.ndim() == 2 &&
                   idx.size(0) == logits.size(0) && gates.shape == idx.shape &&
                   is_shape(bias, {logits.size(1)}),
               "logits/scores[N,E], bias[E], idx (i32)/gates[N,k]",
               {{"idx", idx}, {"gates", gates}, {"scores", scores}, {"logits", logits},
                {"bias", bias}});
  const int64_t N = logits.size(0), E = logits.size(1), k = idx.size(1);
  BK_CHECK(k >= 1 && k <= E, "{}: top_k = {} (idx is {}) with E = {} experts; need 1 <= k <= E",
           op, k, idx.shape.str(), E);
  BK_CHECK(n_groups >= 1 && E % n_groups == 0,
           "{}: n_groups = {} must be >= 1 and divide the E = {} experts", op, n_groups, E);
  BK_CHECK(topk_groups >= 1 && topk_groups <= n_groups,
           "{}: topk_groups = {}; need 1 <= topk_groups <= n_groups = {}", op, topk_groups,
           n_groups);
  const int64_t G = E / n_groups;
  BK_CHECK(k <= topk_groups * G,
           "{}: top_k = {} experts cannot come from topk_groups = {} groups of {} experts "
           "(E = {}, n_groups = {})",
           op, k, topk_groups, G, E, n_groups);
  const size_t smem = sizeof(float) * kWarps * size_t(warp_words(int(E), n_groups, int(k)));
  BK_CHECK(smem <= size_t(max_smem_optin()), "{}: E = {} experts need {} bytes of shared memory "
           "per block; this GPU allows {}", op, E, smem, max_smem_optin());
  if (N == 0) return;
  allow_smem(router_fwd_kernel, smem);
  const RouterArgs a{static_cast<int32_t*>(idx.data), fptr(gates), fptr(scores), fptr(logits),
                     fptr(bias), N, int(E), int(k), n_groups, topk_groups, route_scale};
  router_fwd_kernel<<<ceil_div(N, kWarps), kWarps * 32, smem, stream_of(s)>>>(a);
  BK_CUDA_CHECK_LAUNCH();
}

void moe_router_backward(Tensor dlogits, Tensor dgates, Tensor dscores_extra, Tensor scores,
                         Tensor idx, float route_scale, Stream s) {
  const char* op = "moe_router_backward";
  check_floats(op, {{"dlogits", dlogits}, {"dgates", dgates}, {"scores", scores}});
  const bool extra = dscores_extra.data != nullptr && dscores_extra.numel() > 0;
  if (extra) check_float(op, {"dscores_extra", dscores_extra});
  check_index(op, {"idx", idx});
  check_shapes(op,
               scores.ndim() == 2 && dlogits.shape == scores.shape && idx.ndim() == 2 &&
                   idx.size(0) == scores.size(0) && dgates.shape == idx.shape &&
                   (!extra || dscores_extra.shape == scores.shape),
               "dlogits/scores/dscores_extra[N,E] (dscores_extra may be empty), idx (i32)/"
               "dgates[N,k]",
               {{"dlogits", dlogits}, {"dgates", dgates}, {"dscores_extra", dscores_extra},
                {"scores", scores}, {"idx", idx}});
  const int64_t N = scores.size(0), E = scores.size(1), k = idx.size(1);
  if (N == 0) return;
  // Expert ids are not validated on the host (that would need a device sync); the kernel
  // reads no score outside [0, E) and a token with an out-of-range id gets a NaN row
  // (docs/cuda.md: bad data is made loud on the device).
  router_bwd_kernel<<<ceil_div(N, kWarps), kWarps * 32, 0, stream_of(s)>>>(
      fptr(dlogits), fptr(dgates), fptr(dscores_extra), extra, fptr(scores),
      static_cast<const int32_t*>(idx.data), N, int(E), int(k), route_scale);
  BK_CUDA_CHECK_LAUNCH();
}

}  // namespace bk::cuda
