// AdamW with decoupled weight decay (PyTorch semantics), elementwise over one parameter:
//   g' = g * grad_scale,  m = b1 m + (1 - b1) g',  v = b2 v + (1 - b2) g'^2,
//   w -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * w).
#include <cmath>

#include "kernels/cpu/common.h"

namespace bk::cpu {

void adamw_update(Tensor w, Tensor g, Tensor m, Tensor v, const AdamWStep& p, Stream) {
  const char* op = "adamw_update";
  const std::initializer_list<Arg> all = {{"w", w}, {"g", g}, {"m", m}, {"v", v}};
  const DType dt = float_dtype(op, all);
  check_shapes(op, g.shape == w.shape && m.shape == w.shape && v.shape == w.shape,
               "w, g, m, v of one shape", all);
  BK_CHECK(p.step >= 1, "{}: step is {}; steps count from 1 (bias correction)", op, p.step);
  const int64_t n = w.numel();
  // Bias corrections once per call, in double (b^t underflows gracefully, no drift).
  const double bc1 = 1.0 - std::pow(double(p.beta1), double(p.step));
  const double bc2 = 1.0 - std::pow(double(p.beta2), double(p.step));
  dispatch(dt, [&]<typename T>() {
    T *pw = w.ptr<T>(), *pm = m.ptr<T>(), *pv = v.ptr<T>();
    const T* pg = g.ptr<T>();
    const T b1 = T(p.beta1), b2 = T(p.beta2), lr = T(p.lr), wd = T(p.weight_decay),
            eps = T(p.eps), gs = T(p.grad_scale), ibc1 = T(1 / bc1), ibc2 = T(1 / bc2);
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const T gi = pg[i] * gs;
      pm[i] = b1 * pm[i] + (T(1) - b1) * gi;
      pv[i] = b2 * pv[i] + (T(1) - b2) * gi * gi;
      const T update = pm[i] * ibc1 / (std::sqrt(pv[i] * ibc2) + eps);
      pw[i] -= lr * (update + wd * pw[i]);
    }
  });
}

// The reference of the many-tensor op: the one-tensor op on each, in order.
void adamw_update_many(const std::vector<Tensor>& w, const std::vector<Tensor>& g, const std::vector<Tensor>& m,
                       const std::vector<Tensor>& v, const std::vector<float>& weight_decay, const AdamWStep& p,
                       Stream s) {
  BK_CHECK(g.size() == w.size() && m.size() == w.size() && v.size() == w.size() && weight_decay.size() == w.size(),
           "adamw_update_many: {} w, {} g, {} m, {} v and {} weight decays; one of each per tensor", w.size(),
           g.size(), m.size(), v.size(), weight_decay.size());
  for (size_t i = 0; i < w.size(); ++i) {
    AdamWStep pi = p;
    pi.weight_decay = weight_decay[i];
    adamw_update(w[i], g[i], m[i], v[i], pi, s);
  }
}

}  // namespace bk::cpu
