// Causal softmax attention on the [B,T,H,D] layout. Query i attends to keys j <= i:
//   s_ij = scale q_i.k_j,  lse_i = log sum_j exp(s_ij),  p_ij = exp(s_ij - lse_i),
//   out_i = sum_j p_ij v_j.
// The backward recomputes p from q, k and the saved lse (no T x T matrix is kept):
//   dp_ij = dout_i.v_j,  D_i = dout_i.out_i = sum_j p_ij dp_ij,  ds_ij = p_ij (dp_ij - D_i),
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dout_i.
//
// Work is split into (batch, head) tasks for OpenMP, and within a task into blocks of kBlock
// queries; a block [i0, i1) needs only keys [0, i1), so the products are GEMMs on strided
// views (row stride H*D) and only the diagonal block computes masked-out scores. Every output
// element is computed by one thread in a fixed order: deterministic for any thread count.
// The GEMMs run single-threaded in the calling thread (BlasSingleThreaded, blas.h).
#include <cmath>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/common.h"

namespace bk::cpu {

namespace {
constexpr const char* kRule = "q/k[B,T,H,Dk], v/out[B,T,H,Dv], lse[B,H,T]";
constexpr int64_t kBlock = 32;  // queries per GEMM block

struct Dims {
  int64_t B, T, H, Dk, Dv;
};

// q, k, v, out, lse: the layout rule shared by forward and backward.
Dims check_layout(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                  const Tensor& out, const Tensor& lse, std::initializer_list<Arg> all) {
  const bool ok = q.ndim() == 4 && k.shape == q.shape && v.ndim() == 4 && v.size(0) == q.size(0) &&
                  v.size(1) == q.size(1) && v.size(2) == q.size(2) && out.shape == v.shape &&
                  is_shape(lse, {q.size(0), q.size(2), q.size(1)});
  check_shapes(op, ok, kRule, all);
  return {q.size(0), q.size(1), q.size(2), q.size(3), v.size(3)};
}

// Multiply-adds of one pass over the causal triangle, to skip threading tiny problems.
int64_t work(const Dims& d) { return d.B * d.H * d.T * (d.T + 1) / 2 * (d.Dk + d.Dv); }

// One head of one batch element of a [B,T,H,D] tensor: row t at p + t * ld.
template <typename F> struct Head {
  F* p;
  int64_t ld;
  F* row(int64_t t) const { return p + t * ld; }
};
template <typename F> Head<F> head(const Tensor& x, int64_t b, int64_t h) {
  const int64_t T = x.size(1), H = x.size(2), D = x.size(3);
  return {x.ptr<std::remove_const_t<F>>() + (b * T * H + h) * D, H * D};
}

// S[r, j] = scale q_{i0+r}.k_j for the block's queries and keys j < n (ld of S is T).
// Forward and backward share it, so the backward's recomputed scores are the forward's.
template <typename F>
void block_scores(F* S, int64_t T, Head<const F> Q, Head<const F> K, int64_t i0, int64_t rows,
                  int64_t n, int64_t Dk, F scale) {
  gemm<F>(false, true, rows, n, Dk, scale, Q.row(i0), Q.ld, K.p, K.ld, F(0), S, T);
}

// s[j] <- exp(s[j] - lse), j < n: the one formula for p in forward and backward (and a single
// exp, so negligible weights flush to 0 rather than becoming denormal).
template <typename F> void probabilities(F* s, int64_t n, F lse) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) s[j] = exp_fast(s[j] - lse);
}
}  // namespace

void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, float scale,
                       Stream) {
  const char* op = "attention_forward";
  const std::initializer_list<Arg> all = {
      {"out", out}, {"lse", lse}, {"q", q}, {"k", k}, {"v", v}};
  const DType dt = float_dtype(op, all);
  const Dims d = check_layout(op, q, k, v, out, lse, all);
  const int64_t T = d.T;
  BlasSingleThreaded blas_guard;
  dispatch(dt, [&]<typename F>() {
    F* L = lse.ptr<F>();
#pragma omp parallel if (work(d) >= kParallelMin)
    {
      std::vector<F> S(kBlock * T);  // scores, then probabilities, of one query block
#pragma omp for collapse(2) schedule(static)
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t h = 0; h < d.H; ++h) {
          const auto Q = head<const F>(q, b, h), K = head<const F>(k, b, h),
                     V = head<const F>(v, b, h);
          const auto O = head<F>(out, b, h);
          for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
            const int64_t i1 = std::min(T, i0 + kBlock), rows = i1 - i0;
            block_scores(S.data(), T, Q, K, i0, rows, i1, d.Dk, F(scale));
            for (int64_t r = 0; r < rows; ++r) {  // softmax over j <= i, zero beyond
              F* s = S.data() + r * T;
              const int64_t n = i0 + r + 1;
              const auto [m, z] = max_sum_exp(s, n);
              const F lse_i = m + std::log(z);
              probabilities(s, n, lse_i);
              std::fill(s + n, s + i1, F(0));
              L[(b * d.H + h) * T + i0 + r] = lse_i;
            }
            // out[i0:i1] = P V[0:i1]
            gemm<F>(false, false, rows, d.Dv, i1, F(1), S.data(), T, V.p, V.ld, F(0),
                    O.row(i0), O.ld);
          }
        }
    }
  });
}

void attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                        Tensor q, Tensor k, Tensor v, float scale, Stream) {
  const char* op = "attention_backward";
  const std::initializer_list<Arg> all = {{"dq", dq},     {"dk", dk},   {"dv", dv},
                                          {"dout", dout}, {"out", out}, {"lse", lse},
                                          {"q", q},       {"k", k},     {"v", v}};
  const DType dt = float_dtype(op, all);
  const Dims d = check_layout(op, q, k, v, out, lse, all);
  check_shapes(op, dq.shape == q.shape && dk.shape == k.shape && dv.shape == v.shape &&
                       dout.shape == out.shape,
               "each gradient shaped like its tensor", all);
  const int64_t T = d.T, Dk = d.Dk, Dv = d.Dv;
  BlasSingleThreaded blas_guard;
  dispatch(dt, [&]<typename F>() {
    const F sc = F(scale);
    const F* L = lse.ptr<F>();
#pragma omp parallel if (work(d) >= kParallelMin)
    {
      std::vector<F> P(kBlock * T), dS(kBlock * T);  // one query block's p and dp, then ds
#pragma omp for collapse(2) schedule(static)
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t h = 0; h < d.H; ++h) {
          const auto Q = head<const F>(q, b, h), K = head<const F>(k, b, h),
                     V = head<const F>(v, b, h), O = head<const F>(out, b, h),
                     G = head<const F>(dout, b, h);
          const auto dQ = head<F>(dq, b, h), dK = head<F>(dk, b, h), dV = head<F>(dv, b, h);
          // dk, dv are sums over query blocks: zero, then accumulate block by block (beta = 1).
          for (int64_t j = 0; j < T; ++j) {
            std::fill_n(dK.row(j), Dk, F(0));
            std::fill_n(dV.row(j), Dv, F(0));
          }
          for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
            const int64_t i1 = std::min(T, i0 + kBlock), rows = i1 - i0;
            block_scores(P.data(), T, Q, K, i0, rows, i1, Dk, sc);
            // dP[r, j] = dout_i.v_j
            gemm<F>(false, true, rows, i1, Dv, F(1), G.row(i0), G.ld, V.p, V.ld, F(0), dS.data(), T);
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t i = i0 + r, n = i + 1;
              F *p = P.data() + r * T, *ds = dS.data() + r * T;
              probabilities(p, n, L[(b * d.H + h) * T + i]);
              const F Di = dot(G.row(i), O.row(i), Dv);
#pragma omp simd
              for (int64_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - Di);
              std::fill(p + n, p + i1, F(0));  // masked: no probability, no gradient
              std::fill(ds + n, ds + i1, F(0));
            }
            // dq[i0:i1] = scale dS K[0:i1];  dk[0:i1] += scale dS^T Q[i0:i1];
            // dv[0:i1] += P^T dout[i0:i1]
            gemm<F>(false, false, rows, Dk, i1, sc, dS.data(), T, K.p, K.ld, F(0), dQ.row(i0), dQ.ld);
            gemm<F>(true, false, i1, Dk, rows, sc, dS.data(), T, Q.row(i0), Q.ld, F(1), dK.p, dK.ld);
            gemm<F>(true, false, i1, Dv, rows, F(1), P.data(), T, G.row(i0), G.ld, F(1), dV.p, dV.ld);
          }
        }
    }
  });
}

}  // namespace bk::cpu
