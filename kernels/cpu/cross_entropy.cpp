// Softmax cross-entropy over logits[N,V] with i32 targets[N]; a target < 0 is ignored (loss 0,
// gradient row 0). Stable form: subtract the row max m before exp. dlogits may alias logits.
//   loss_n = lse_n - logits[n, t_n],  lse_n = log sum_v exp(logits[n, v])
//   dlogits[n, v] = (exp(logits[n, v] - lse_n) - [v == t_n]) * grad_scale
#include <cmath>

#include "kernels/cpu/common.h"

namespace bk::cpu {

namespace {
constexpr const char* kRule = "logits/dlogits[N,V], targets[N] (i32), losses[N]";

// Targets in [0, V) or negative (ignored); serial, before any parallel region.
void check_targets(const char* op, const Tensor& targets, int64_t V) {
  const int32_t* t = targets.ptr<int32_t>();
  for (int64_t n = 0; n < targets.numel(); ++n)
    BK_CHECK(t[n] < V, "{}: target id {} at row {} is outside [0, {}) (negative ids are ignored)",
             op, t[n], n, V);
}

}  // namespace

void cross_entropy_forward(Tensor losses, Tensor logits, Tensor targets, Stream) {
  const char* op = "cross_entropy_forward";
  const DType dt = float_dtype(op, {{"losses", losses}, {"logits", logits}});
  check_index(op, {"targets", targets});
  check_shapes(op,
               logits.ndim() == 2 && logits.size(1) > 0 && is_shape(targets, {logits.size(0)}) &&
                   is_shape(losses, {logits.size(0)}),
               kRule, {{"losses", losses}, {"logits", logits}, {"targets", targets}});
  const int64_t N = logits.size(0), V = logits.size(1);
  check_targets(op, targets, V);
  const int32_t* tg = targets.ptr<int32_t>();
  dispatch(dt, [&]<typename T>() {
    const T* x = logits.ptr<T>();
    T* loss = losses.ptr<T>();
#pragma omp parallel for schedule(static) if (N * V >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      const T* row = x + n * V;
      if (tg[n] < 0) {
        loss[n] = 0;
        continue;
      }
      // log z - (x_t - m) rather than lse - x_t: with logits ~1e3 the latter cancels most of
      // a float's digits.
      const auto [m, z] = max_sum_exp(row, V);
      loss[n] = std::log(z) - (row[tg[n]] - m);
    }
  });
}

void cross_entropy_backward(Tensor dlogits, Tensor logits, Tensor targets, float grad_scale,
                            Stream) {
  const char* op = "cross_entropy_backward";
  const DType dt = float_dtype(op, {{"dlogits", dlogits}, {"logits", logits}});
  check_index(op, {"targets", targets});
  check_shapes(op,
               logits.ndim() == 2 && logits.size(1) > 0 && is_shape(targets, {logits.size(0)}) &&
                   dlogits.shape == logits.shape,
               kRule, {{"dlogits", dlogits}, {"logits", logits}, {"targets", targets}});
  const int64_t N = logits.size(0), V = logits.size(1);
  check_targets(op, targets, V);
  const int32_t* tg = targets.ptr<int32_t>();
  dispatch(dt, [&]<typename T>() {
    const T* x = logits.ptr<T>();
    T* dx = dlogits.ptr<T>();
    const T gs = T(grad_scale);
#pragma omp parallel for schedule(static) if (N * V >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      const T* row = x + n * V;
      T* drow = dx + n * V;
      if (tg[n] < 0) {
        std::fill_n(drow, V, T(0));
        continue;
      }
      const auto [m, z] = max_sum_exp(row, V);
      // softmax * |gs| as one exp, exp((x - m) - log z + log|gs|): tiny terms flush to 0
      // instead of turning denormal in a product, and x - m keeps the digits that x - lse
      // would cancel. drow may be row (in place): v is read, then written.
      const T c = std::log(z) - std::log(std::abs(gs)), sign = gs < 0 ? T(-1) : T(1);
#pragma omp simd
      for (int64_t v = 0; v < V; ++v) drow[v] = sign * exp_fast((row[v] - m) - c);
      drow[tg[n]] -= gs;
    }
  });
}

}  // namespace bk::cpu
