// DeepSeek-V3's sequence-wise balance loss (docs/ops.md, "MoE routing and dispatch"), over B
// sequences of T = N/B tokens; with s' = s / sum_e s (per token) and, per sequence,
//   f_i = E / (k T) * #{t : i in idx[t]}   (a token counts once per expert),
//   P_i = (1/T) sum_t s'_{t,i},   loss = alpha/B * sum_seq sum_i f_i P_i.
// Per token, sum_i f_i s'_{t,i} = (sum_i f_i s_{t,i}) / S_t with S_t = sum_e s_{t,e}, so
//   loss = alpha/B * sum_seq (1/T) sum_t (sum_i f_i s_{t,i}) / S_t,
//   dloss/ds_{t,e} = alpha/B * (1/T) * (f_e - sum_i f_i s'_{t,i}) / S_t    (f held constant).
// Everything is computed in double: f per sequence (sequential, O(N k)), then one value per
// token (OpenMP over tokens), summed in token order: independent of the thread count.
#include <vector>

#include "kernels/cpu/moe_common.h"

namespace bk::cpu {

namespace {
struct BalanceDims {
  int64_t N, E, k, T;
};

BalanceDims check_balance(const char* op, const Tensor& scores, const Tensor& idx, int B,
                          const Tensor* dscores) {
  if (dscores) float_dtype(op, {{"dscores", *dscores}, {"scores", scores}});
  else float_dtype(op, {{"scores", scores}});
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
  check_expert_ids(op, "idx", idx, E);
  return {N, E, k, N / B};
}

// f [B, E]: f_i = E / (k T) * (number of the sequence's tokens that chose expert i).
std::vector<double> expert_fractions(const Tensor& idx, int B, const BalanceDims& d) {
  std::vector<double> f(size_t(B * d.E), 0.0);
  const int32_t* pi = idx.ptr<int32_t>();
  const double unit = double(d.E) / (double(d.k) * double(d.T));
  for (int64_t t = 0; t < d.N; ++t) {
    const int32_t* id = pi + t * d.k;
    double* fb = f.data() + (t / d.T) * d.E;
    for (int64_t j = 0; j < d.k; ++j) {
      bool repeat = false;  // "i in idx[t]": a repeated id counts once
      for (int64_t i = 0; i < j; ++i) repeat = repeat || id[i] == id[j];
      if (!repeat) fb[id[j]] += unit;
    }
  }
  return f;
}
// One token's S = sum_e s_e and F = sum_e f_e s_e (in double).
struct TokenSums {
  double S = 0, F = 0;
};
template <typename T>
TokenSums token_sums(const T* s, const double* f, int64_t E) {
  TokenSums r;
  for (int64_t e = 0; e < E; ++e) {
    r.S += double(s[e]);
    r.F += f[e] * double(s[e]);
  }
  return r;
}

}  // namespace

double moe_balance_loss_forward(Tensor scores, Tensor idx, int B, float alpha, Stream) {
  const char* op = "moe_balance_loss_forward";
  const BalanceDims d = check_balance(op, scores, idx, B, nullptr);
  const std::vector<double> f = expert_fractions(idx, B, d);
  const int64_t N = d.N, E = d.E;
  std::vector<double> per_token(static_cast<size_t>(N));  // sum_i f_i s'_{t,i}
  dispatch(scores.dtype, [&]<typename T>() {
    const T* ps = scores.ptr<T>();
#pragma omp parallel for schedule(static) if (N * E >= kParallelMin)
    for (int64_t t = 0; t < N; ++t) {
      const TokenSums ts = token_sums(ps + t * E, f.data() + (t / d.T) * E, E);
      per_token[t] = ts.F / ts.S;
    }
  });
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {
    double seq = 0;
    for (int64_t t = b * d.T; t < (b + 1) * d.T; ++t) seq += per_token[t];
    total += seq / double(d.T);
  }
  return double(alpha) / double(B) * total;
}

void moe_balance_loss_backward(Tensor dscores, Tensor scores, Tensor idx, int B, float alpha,
                               float grad_scale, Stream) {
  const char* op = "moe_balance_loss_backward";
  const BalanceDims d = check_balance(op, scores, idx, B, &dscores);
  const std::vector<double> f = expert_fractions(idx, B, d);
  const int64_t N = d.N, E = d.E;
  const double coef = double(grad_scale) * double(alpha) / double(B) / double(d.T);
  dispatch(scores.dtype, [&]<typename T>() {
    const T* ps = scores.ptr<T>();
    T* pd = dscores.ptr<T>();
#pragma omp parallel for schedule(static) if (N * E >= kParallelMin)
    for (int64_t t = 0; t < N; ++t) {
      const double* fb = f.data() + (t / d.T) * E;
      const TokenSums ts = token_sums(ps + t * E, fb, E);
      const double mean_f = ts.F / ts.S, c = coef / ts.S;  // sum_i f_i s'_{t,i}
      T* g = pd + t * E;
      for (int64_t e = 0; e < E; ++e) g[e] += T(c * (fb[e] - mean_f));
    }
  });
}

}  // namespace bk::cpu
