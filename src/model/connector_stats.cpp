#include "model/connector_stats.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace bk {

namespace {

// Largest absolute row sum (forward gain) and column sum (backward gain) of an n x n matrix.
std::pair<double, double> gains(const std::vector<double>& a, int64_t n) {
  double row = 0, col = 0;
  for (int64_t i = 0; i < n; ++i) {
    double r = 0, c = 0;
    for (int64_t j = 0; j < n; ++j) {
      r += std::abs(a[i * n + j]);
      c += std::abs(a[j * n + i]);
    }
    row = std::max(row, r);
    col = std::max(col, c);
  }
  return {row, col};
}

}  // namespace

ConnectorStats connector_stats(const std::vector<const ConnectorProbe*>& connectors) {
  ConnectorStats s;
  const size_t L = connectors.size();
  if (L == 0) return s;
  const int64_t n = connectors[0]->probed().n;
  const int64_t N = connectors[0]->probed().h_res.numel() / (n * n);
  BK_CHECK(N > 0, "connector diagnostics: no probed forward (set MicroBatch::probe)");
  for (auto* c : connectors)
    BK_CHECK(c->probed().n == n && c->probed().h_res.numel() == N * n * n,
             "connector diagnostics: connectors were probed on different batches");
  for (auto* v : {&s.h_res_diag, &s.row_err, &s.col_err, &s.h_pre, &s.h_post, &s.fwd_gain, &s.bwd_gain,
                  &s.comp_fwd_gain, &s.comp_bwd_gain})
    v->assign(L, 0.0);

  std::vector<double> h(n * n), comp(n * n), next(n * n);
  for (int64_t t = 0; t < N; ++t) {
    // Walk from the last sublayer down, extending the composite on the right: comp = comp * H_l.
    for (size_t l = L; l-- > 0;) {
      const ConnectorCoefficients& cc = connectors[l]->probed();
      const float* hr = cc.h_res.ptr<float>() + t * n * n;
      for (int64_t k = 0; k < n * n; ++k) h[k] = hr[k];
      if (l == L - 1) {
        comp = h;
      } else {
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double acc = 0;
            for (int64_t k = 0; k < n; ++k) acc += comp[i * n + k] * h[k * n + j];
            next[i * n + j] = acc;
          }
        comp.swap(next);
      }
      auto [f1, b1] = gains(h, n);
      auto [fc, bc] = gains(comp, n);
      s.fwd_gain[l] += f1;
      s.bwd_gain[l] += b1;
      s.comp_fwd_gain[l] += fc;
      s.comp_bwd_gain[l] += bc;
      double diag = 0, row_err = 0, col_err = 0;
      for (int64_t i = 0; i < n; ++i) {
        double r = 0, c = 0;
        for (int64_t j = 0; j < n; ++j) {
          r += h[i * n + j];
          c += h[j * n + i];
        }
        diag += h[i * n + i];
        row_err = std::max(row_err, std::abs(r - 1));
        col_err = std::max(col_err, std::abs(c - 1));
      }
      s.h_res_diag[l] += diag / double(n);
      s.row_err[l] += row_err;
      s.col_err[l] += col_err;
      const float* pre = cc.h_pre.ptr<float>() + t * n;
      const float* post = cc.h_post.ptr<float>() + t * n;
      for (int64_t i = 0; i < n; ++i) {
        s.h_pre[l] += pre[i] / double(n);
        s.h_post[l] += post[i] / double(n);
      }
    }
  }
  for (auto* v : {&s.h_res_diag, &s.row_err, &s.col_err, &s.h_pre, &s.h_post, &s.fwd_gain, &s.bwd_gain,
                  &s.comp_fwd_gain, &s.comp_bwd_gain})
    for (double& x : *v) x /= double(N);
  s.max_comp_fwd_gain = *std::max_element(s.comp_fwd_gain.begin(), s.comp_fwd_gain.end());
  s.max_comp_bwd_gain = *std::max_element(s.comp_bwd_gain.begin(), s.comp_bwd_gain.end());
  return s;
}

}  // namespace bk
