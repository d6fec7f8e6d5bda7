// MoE dispatch (docs/ops.md, "MoE routing and dispatch"): the plan that groups the N*k
// (token, slot) pairs by expert, and the gathers/scatters between tokens and that layout.
//   plan:      counting sort of the pairs by idx, stable in (token, slot) order:
//              offsets = exclusive prefix sum of the loads, rows[n,j] = the pair's row
//   permute:   x_perm[rows[n,j]] = x[n];               dx[n] = sum_j dx_perm[rows[n,j]]
//   unpermute: y[n] = sum_j gates[n,j] y_perm[rows[n,j]];
//              dy_perm[rows[n,j]] = gates[n,j] dy[n],  dgates[n,j] = dy[n] . y_perm[rows[n,j]]
// rows is checked to be a permutation of [0, N*k), so the gathers and scatters run per token
// (OpenMP over tokens) with disjoint writes; every sum over j runs in slot order.
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/connector_common.h"
#include "kernels/cpu/moe_common.h"

namespace bk::cpu {

void moe_plan(Tensor rows, Tensor offsets, Tensor idx, Stream) {
  const char* op = "moe_plan";
  check_table(op, "idx", idx);
  check_index(op, {"rows", rows});
  check_index(op, {"offsets", offsets});
  check_shapes(op, rows.shape == idx.shape && offsets.ndim() == 1 && offsets.size(0) >= 1,
               "idx/rows i32 [N,k], offsets i32 [E+1]",
               {{"rows", rows}, {"offsets", offsets}, {"idx", idx}});
  const int64_t M = idx.numel(), E = offsets.size(0) - 1;
  BK_CHECK(M <= std::numeric_limits<int32_t>::max(),
           "{}: idx is {}: N*k = {} pairs do not fit i32 row numbers", op, idx.shape.str(), M);
  check_expert_ids(op, "idx", idx, E);
  const int32_t* pi = idx.ptr<int32_t>();
  int32_t *pr = rows.ptr<int32_t>(), *po = offsets.ptr<int32_t>();
  std::vector<int32_t> cursor(size_t(E) + 1, 0);
  for (int64_t i = 0; i < M; ++i) ++cursor[size_t(pi[i]) + 1];  // loads, shifted by one
  for (int64_t e = 0; e < E; ++e) cursor[e + 1] += cursor[e];    // exclusive prefix sum
  std::memcpy(po, cursor.data(), sizeof(int32_t) * (E + 1));
  for (int64_t i = 0; i < M; ++i) pr[i] = cursor[pi[i]]++;  // stable: pairs in (n, j) order
}

namespace {
constexpr const char* kRule = "x/y[N,C], x_perm/y_perm[N*k,C], rows i32/gates[N,k]";

// The token-side tensor is [N,C], the permuted one [N*k,C], rows [N,k] (a permutation).
void check_layout(const char* op, const char* tok_name, const Tensor& tok, const char* perm_name,
                  const Tensor& perm, const Tensor& rows, std::initializer_list<Arg> extra_args,
                  bool extra_ok) {
  check_index(op, {"rows", rows});
  const bool ok = tok.ndim() == 2 && rows.ndim() == 2 && rows.size(0) == tok.size(0) &&
                  is_shape(perm, {tok.size(0) * rows.size(1), tok.size(1)}) && extra_ok;
  if (!ok) {
    std::string d = describe({{tok_name, tok}, {perm_name, perm}, {"rows", rows}});
    if (extra_args.size() > 0) d += ", " + describe(extra_args);
    BK_CHECK(false, "{}: {}; expected {}", op, d, kRule);
  }
  check_rows_permutation(op, rows);
}
}  // namespace

void moe_permute(Tensor x_perm, Tensor x, Tensor rows, Stream) {
  const char* op = "moe_permute";
  const DType dt = float_dtype(op, {{"x_perm", x_perm}, {"x", x}});
  check_layout(op, "x", x, "x_perm", x_perm, rows, {}, true);
  const int64_t N = x.size(0), C = x.size(1), k = rows.size(1);
  dispatch(dt, [&]<typename T>() {
    const T* px = x.ptr<T>();
    T* pp = x_perm.ptr<T>();
    const int32_t* pr = rows.ptr<int32_t>();
#pragma omp parallel for schedule(static) if (N * k * C >= kParallelMin)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < k; ++j)
        std::memcpy(pp + int64_t(pr[n * k + j]) * C, px + n * C, sizeof(T) * C);
  });
}

void moe_permute_backward(Tensor dx, Tensor dx_perm, Tensor rows, Stream) {
  const char* op = "moe_permute_backward";
  const DType dt = float_dtype(op, {{"dx", dx}, {"dx_perm", dx_perm}});
  check_layout(op, "dx", dx, "dx_perm", dx_perm, rows, {}, true);
  const int64_t N = dx.size(0), C = dx.size(1), k = rows.size(1);
  dispatch(dt, [&]<typename T>() {
    const T* pp = dx_perm.ptr<T>();
    T* pdx = dx.ptr<T>();
    const int32_t* pr = rows.ptr<int32_t>();
#pragma omp parallel for schedule(static) if (N * k * C >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      T* o = pdx + n * C;
      std::fill(o, o + C, T(0));
      for (int64_t j = 0; j < k; ++j) {
        const T* g = pp + int64_t(pr[n * k + j]) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] += g[c];
      }
    }
  });
}

void moe_unpermute(Tensor y, Tensor y_perm, Tensor gates, Tensor rows, Stream) {
  const char* op = "moe_unpermute";
  const DType dt = float_dtype(op, {{"y", y}, {"y_perm", y_perm}, {"gates", gates}});
  check_layout(op, "y", y, "y_perm", y_perm, rows, {{"gates", gates}},
               gates.shape == rows.shape);
  const int64_t N = y.size(0), C = y.size(1), k = rows.size(1);
  dispatch(dt, [&]<typename T>() {
    const T *pp = y_perm.ptr<T>(), *pg = gates.ptr<T>();
    T* py = y.ptr<T>();
    const int32_t* pr = rows.ptr<int32_t>();
#pragma omp parallel for schedule(static) if (N * k * C >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      T* o = py + n * C;
      std::fill(o, o + C, T(0));
      for (int64_t j = 0; j < k; ++j)
        add_scaled(o, pg[n * k + j], pp + int64_t(pr[n * k + j]) * C, C);
    }
  });
}

void moe_unpermute_backward(Tensor dy_perm, Tensor dgates, Tensor dy, Tensor y_perm, Tensor gates,
                            Tensor rows, Stream) {
  const char* op = "moe_unpermute_backward";
  const DType dt = float_dtype(op, {{"dy_perm", dy_perm}, {"dgates", dgates}, {"dy", dy},
                                    {"y_perm", y_perm}, {"gates", gates}});
  check_layout(op, "dy", dy, "y_perm", y_perm, rows,
               {{"dy_perm", dy_perm}, {"dgates", dgates}, {"gates", gates}},
               dy_perm.shape == y_perm.shape && gates.shape == rows.shape &&
                   dgates.shape == rows.shape);
  const int64_t N = dy.size(0), C = dy.size(1), k = rows.size(1);
  dispatch(dt, [&]<typename T>() {
    const T *pp = y_perm.ptr<T>(), *pg = gates.ptr<T>(), *pdy = dy.ptr<T>();
    T *pdp = dy_perm.ptr<T>(), *pdg = dgates.ptr<T>();
    const int32_t* pr = rows.ptr<int32_t>();
#pragma omp parallel for schedule(static) if (N * k * C >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      const T* g = pdy + n * C;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t r = pr[n * k + j];
        pdg[n * k + j] = dot(g, pp + r * C, C);
        const T a = pg[n * k + j];
        T* o = pdp + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] = a * g[c];
      }
    }
  });
}

}  // namespace bk::cpu
