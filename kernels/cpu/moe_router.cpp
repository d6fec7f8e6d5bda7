// DeepSeekMoE router (docs/ops.md, "MoE routing and dispatch"). Per token, with E experts:
//   s = sigmoid(logits)  (saved as scores),  b = s + bias  (biased scores: choice only)
//   group-limited routing: the E experts form n_groups groups of G = E / n_groups; a group's
//   score is the sum of its two highest b (its only b when G = 1); the topk_groups best groups
//   (ties: lower group id) are eligible; n_groups = 1 makes every expert eligible.
//   idx = the k eligible experts of highest b, in descending b (ties: lower expert id first)
//   gates_j = route_scale * s_{idx_j} / S,  S = sum_j s_{idx_j}   (unbiased scores)
// Backward, with dg = dgates: ds_{idx_j} += route_scale * (dg_j / S - sum_i dg_i s_{idx_i} / S^2),
// other experts get 0 from the gates; dlogits = (ds + dscores_extra) * s * (1 - s).
// Selection is by scans (argmax in id order, strict >), never by a sort: a NaN score cannot
// break a comparator, and idx always holds k distinct ids in [0, E).
#include <limits>
#include <vector>

#include "kernels/cpu/connector_common.h"
#include "kernels/cpu/moe_common.h"

namespace bk::cpu {

void moe_router_forward(Tensor idx, Tensor gates, Tensor scores, Tensor logits, Tensor bias,
                        int n_groups, int topk_groups, float route_scale, Stream) {
  const char* op = "moe_router_forward";
  const DType dt =
      float_dtype(op, {{"gates", gates}, {"scores", scores}, {"logits", logits}, {"bias", bias}});
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
  dispatch(dt, [&]<typename T>() {
    const T *pl = logits.ptr<T>(), *pb = bias.ptr<T>();
    T *ps = scores.ptr<T>(), *pg = gates.ptr<T>();
    int32_t* pi = idx.ptr<int32_t>();
    const T rs = T(route_scale), lowest = -std::numeric_limits<T>::infinity();
#pragma omp parallel if (N * E >= kParallelMin / 4)
    {
      std::vector<T> b(static_cast<size_t>(E)), gscore(static_cast<size_t>(n_groups));
      std::vector<uint8_t> open(static_cast<size_t>(E));  // eligible and not yet taken
      std::vector<uint8_t> gtaken(static_cast<size_t>(n_groups));
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        const T* l = pl + n * E;
        T* s = ps + n * E;
        for (int64_t e = 0; e < E; ++e) {
          s[e] = sigmoid(l[e]);
          b[e] = s[e] + pb[e];
        }
        if (n_groups == 1) {
          std::fill(open.begin(), open.end(), uint8_t(1));
        } else {
          for (int64_t g = 0; g < n_groups; ++g) {  // sum of the group's two highest b
            T m1 = lowest, m2 = lowest;
            for (int64_t e = g * G; e < (g + 1) * G; ++e) {
              if (b[e] > m1) m2 = m1, m1 = b[e];
              else if (b[e] > m2) m2 = b[e];
            }
            gscore[g] = G >= 2 ? m1 + m2 : m1;
            gtaken[g] = 0;
          }
          std::fill(open.begin(), open.end(), uint8_t(0));
          for (int r = 0; r < topk_groups; ++r) {
            int64_t best = -1;
            for (int64_t g = 0; g < n_groups; ++g)
              if (!gtaken[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
            gtaken[best] = 1;
            std::fill(open.begin() + best * G, open.begin() + (best + 1) * G, uint8_t(1));
          }
        }
        int32_t* id = pi + n * k;
        for (int64_t j = 0; j < k; ++j) {
          int64_t best = -1;
          for (int64_t e = 0; e < E; ++e)
            if (open[e] && (best < 0 || b[e] > b[best])) best = e;
          open[best] = 0;
          id[j] = int32_t(best);
        }
        T S = 0;
        for (int64_t j = 0; j < k; ++j) S += s[id[j]];
        T* g = pg + n * k;
        for (int64_t j = 0; j < k; ++j) g[j] = rs * s[id[j]] / S;
      }
    }
  });
}

void moe_router_backward(Tensor dlogits, Tensor dgates, Tensor dscores_extra, Tensor scores,
                         Tensor idx, float route_scale, Stream) {
  const char* op = "moe_router_backward";
  const DType dt = float_dtype(op, {{"dlogits", dlogits}, {"dgates", dgates}, {"scores", scores}});
  const bool extra = dscores_extra.data != nullptr && dscores_extra.numel() > 0;
  if (extra) float_dtype(op, {{"scores", scores}, {"dscores_extra", dscores_extra}});
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
  check_expert_ids(op, "idx", idx, E);
  dispatch(dt, [&]<typename T>() {
    const T *ps = scores.ptr<T>(), *pdg = dgates.ptr<T>();
    const T* px = extra ? dscores_extra.ptr<T>() : nullptr;
    const int32_t* pi = idx.ptr<int32_t>();
    T* pd = dlogits.ptr<T>();
    const T rs = T(route_scale);
#pragma omp parallel for schedule(static) if (N * E >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      const T *s = ps + n * E, *dg = pdg + n * k;
      const int32_t* id = pi + n * k;
      T* d = pd + n * E;  // ds first (dlogits may be dscores_extra itself), then dlogits
      for (int64_t e = 0; e < E; ++e) d[e] = px ? px[n * E + e] : T(0);
      T S = 0, dot_gs = 0;
      for (int64_t j = 0; j < k; ++j) {
        S += s[id[j]];
        dot_gs += dg[j] * s[id[j]];
      }
      const T c = dot_gs / (S * S);
      for (int64_t j = 0; j < k; ++j) d[id[j]] += rs * (dg[j] / S - c);
      for (int64_t e = 0; e < E; ++e) d[e] *= s[e] * (T(1) - s[e]);
    }
  });
}

}  // namespace bk::cpu
