// Sinkhorn-Knopp on each token's n x n block (docs/mhc.md, "Kernels"):
//   P0 = exp(L - max L);  `iters` times: P <- P / colsum(P) (each column), P <- P / rowsum(P).
// Rows sum to 1 (to rounding) at the end; columns approach 1 as iters grows.
// A sum below the smallest normal number (a column or row whose entries all underflowed)
// counts as a zero scale: the entries stay 0 and pass no gradient, instead of 0/0 = NaN.
//
// Backward: the forward is recomputed per token, keeping every normalised matrix and its
// inverse sums (the tape: n*n + 2*iters*(n*n + n) values, a per-thread buffer), then reversed
// exactly. For Q = P / rowsum(P) (s_i = row sum i):  dP_ij = (dQ_ij - sum_k dQ_ik Q_ik) / s_i,
// for the columns the same with i and j swapped; finally dL = dP0 * P0 (the max subtraction
// contributes nothing: every normalisation is invariant to the scale of P).
// Sums are in the input dtype, in index order.
#include <limits>
#include <vector>

#include "kernels/cpu/connector_common.h"

namespace bk::cpu {

namespace {
// Every per-token routine takes the block size n as a template constant NC when it is one of
// the common sizes (the loops then unroll fully), else NC = 0 and n at run time.
template <int64_t NC> constexpr int64_t size_of(int64_t n) { return NC ? NC : n; }

// dst [n*n] <- src / colsum(src) (cols) or src / rowsum(src); inv [n] <- the inverse sums
// used. dst may be src. Sums run in index order.
template <int64_t NC, typename T>
void normalise(T* dst, const T* src, T* inv, int64_t n_, bool cols) {
  constexpr T kTiny = std::numeric_limits<T>::min();
  const int64_t n = size_of<NC>(n_);
  // With n fixed the sums live in registers (a local array), then go to inv.
  T local[NC > 0 ? NC : 1];
  T* r = NC > 0 ? local : inv;
  if (cols) {
    for (int64_t j = 0; j < n; ++j) r[j] = src[j];
    for (int64_t i = 1; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) r[j] += src[i * n + j];
  } else {
    for (int64_t i = 0; i < n; ++i) {
      T s = src[i * n];
      for (int64_t j = 1; j < n; ++j) s += src[i * n + j];
      r[i] = s;
    }
  }
  for (int64_t a = 0; a < n; ++a) r[a] = r[a] >= kTiny ? T(1) / r[a] : T(0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) dst[i * n + j] = src[i * n + j] * r[cols ? j : i];
  if (NC > 0)
    for (int64_t a = 0; a < n; ++a) inv[a] = r[a];
}

// Tape of one token: P0, then per normalisation step s (2*iters of them, columns first):
// the matrix after the step and the inverse sums it used.
template <typename T> struct Tape {
  T* base;
  int64_t n;
  T* p0() const { return base; }
  T* q(int64_t s) const { return base + n * n + s * (n * n + n); }
  T* inv(int64_t s) const { return q(s) + n * n; }
};
int64_t tape_size(int64_t n, int iters) { return n * n + 2 * int64_t(iters) * (n * n + n); }

// P0 [n*n] <- exp(L - max L).
template <int64_t NC, typename T> void exp_block(T* P0, const T* L, int64_t n_) {
  const int64_t nn = size_of<NC>(n_) * size_of<NC>(n_);
  T mx = L[0];
  for (int64_t k = 1; k < nn; ++k) mx = std::max(mx, L[k]);
  for (int64_t k = 0; k < nn; ++k) P0[k] = std::exp(L[k] - mx);
}

// The forward of one block, in place in P [n*n] (inv [n] scratch).
template <int64_t NC, typename T>
void forward_block(T* P, const T* L, int64_t n, int iters, T* inv) {
  exp_block<NC>(P, L, n);
  for (int64_t s = 0; s < 2 * int64_t(iters); ++s) normalise<NC>(P, P, inv, n, s % 2 == 0);
}

// The same arithmetic, each step writing the next matrix of the tape.
template <int64_t NC, typename T>
void forward_block_taped(const Tape<T>& tape, const T* L, int64_t n, int iters) {
  exp_block<NC>(tape.p0(), L, n);
  for (int64_t s = 0; s < 2 * int64_t(iters); ++s)
    normalise<NC>(tape.q(s), s ? tape.q(s - 1) : tape.p0(), tape.inv(s), n, s % 2 == 0);
}

// The backward of one block: dL [n*n] from dp [n*n] and L, through the recomputed tape;
// G [n*n] and d [n] are scratch.
template <int64_t NC, typename T>
void backward_block(T* dL, const T* dp, const T* L, int64_t n_, int iters, const Tape<T>& tape,
                    T* G, T* d) {
  const int64_t n = size_of<NC>(n_), nn = n * n;
  forward_block_taped<NC>(tape, L, n, iters);
  std::copy(dp, dp + nn, G);
  for (int64_t s = 2 * int64_t(iters) - 1; s >= 0; --s) {
    const T *Q = tape.q(s), *inv = tape.inv(s);
    if (s % 2 == 1) {  // rows: d_i = sum_k G_ik Q_ik
      for (int64_t i = 0; i < n; ++i) {
        T acc = 0;
        for (int64_t k = 0; k < n; ++k) acc += G[i * n + k] * Q[i * n + k];
        d[i] = acc;
      }
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) G[i * n + j] = (G[i * n + j] - d[i]) * inv[i];
    } else {  // columns: d_j = sum_k G_kj Q_kj
      for (int64_t j = 0; j < n; ++j) d[j] = 0;
      for (int64_t k = 0; k < n; ++k)
        for (int64_t j = 0; j < n; ++j) d[j] += G[k * n + j] * Q[k * n + j];
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) G[i * n + j] = (G[i * n + j] - d[j]) * inv[j];
    }
  }
  const T* P0 = tape.p0();
  for (int64_t k = 0; k < nn; ++k) dL[k] = G[k] * P0[k];
}

// f.template operator()<NC>() with NC = n for the unrolled sizes, else 0.
template <typename F> void dispatch_n(int64_t n, F&& f) {
  switch (n) {
    case 2: f.template operator()<2>(); break;
    case 3: f.template operator()<3>(); break;
    case 4: f.template operator()<4>(); break;
    default: f.template operator()<0>();
  }
}

void check(const char* op, const char* out_name, const Tensor& out, const char* in_name,
           const Tensor& in, std::initializer_list<Arg> more, int iters) {
  BK_CHECK(in.ndim() == 3 && in.size(1) == in.size(2) && in.size(1) >= 1,
           "{}: {} is {}; expected [N, n, n] with n >= 1", op, in_name, in.shape.str());
  for (const Arg& a : more)
    BK_CHECK(a.t.shape == in.shape, "{}: {} is {} but must be [N, n, n] = {} like {}", op, a.name,
             a.t.shape.str(), in.shape.str(), in_name);
  BK_CHECK(out.shape == in.shape, "{}: {} is {} but must be [N, n, n] = {} like {}", op, out_name,
           out.shape.str(), in.shape.str(), in_name);
  BK_CHECK(iters >= 1, "{}: iters is {}; Sinkhorn-Knopp needs at least 1 iteration", op, iters);
}
}  // namespace

void sinkhorn_forward(Tensor p, Tensor logits, int iters, Stream) {
  const char* op = "sinkhorn_forward";
  const DType dt = float_dtype(op, {{"p", p}, {"logits", logits}});
  check(op, "p", p, "logits", logits, {}, iters);
  const int64_t N = logits.size(0), n = logits.size(1), nn = n * n;
  dispatch(dt, [&]<typename T>() {
    const T* pl = logits.ptr<T>();
    T* pp = p.ptr<T>();
    dispatch_n(n, [&]<int64_t NC>() {
#pragma omp parallel if (N * nn * iters >= kParallelMin)
      {
        std::vector<T> inv(static_cast<size_t>(n));
#pragma omp for schedule(static)
        for (int64_t t = 0; t < N; ++t)
          forward_block<NC>(pp + t * nn, pl + t * nn, n, iters, inv.data());
      }
    });
  });
}

void sinkhorn_backward(Tensor dlogits, Tensor dp, Tensor logits, int iters, Stream) {
  const char* op = "sinkhorn_backward";
  const DType dt = float_dtype(op, {{"dlogits", dlogits}, {"dp", dp}, {"logits", logits}});
  check(op, "dlogits", dlogits, "logits", logits, {{"dp", dp}}, iters);
  const int64_t N = logits.size(0), n = logits.size(1), nn = n * n;
  dispatch(dt, [&]<typename T>() {
    const T *pl = logits.ptr<T>(), *pdp = dp.ptr<T>();
    T* pdl = dlogits.ptr<T>();
    dispatch_n(n, [&]<int64_t NC>() {
#pragma omp parallel if (N * nn * iters >= kParallelMin)
      {
        std::vector<T> buf(size_t(tape_size(n, iters) + nn + n));
        const Tape<T> tape{buf.data(), n};
        T* G = buf.data() + tape_size(n, iters);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < N; ++t)
          backward_block<NC>(pdl + t * nn, pdp + t * nn, pl + t * nn, n, iters, tape, G, G + nn);
      }
    });
  });
}

}  // namespace bk::cpu
