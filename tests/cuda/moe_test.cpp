// MoE routing and dispatch on the GPU (kernels/cuda/moe_*.cu) against the CPU reference:
// router (plain and group-limited, exact ties, bias, route scale) forward and backward,
// the dispatch plan (uneven loads, experts with no tokens, several chunks and blocks),
// permute / unpermute and their backwards (vector and scalar column paths, f32 and bf16),
// the balance loss and its accumulating backward. Integer outputs (idx, rows, offsets) must
// match exactly; float tolerances: connector_cuda_testing.h.
//
// The router is compared with the CPU in f32 (not f64): its choice must be the one the same
// f32 scores give. The sigmoid may differ in the last bit between CUDA's expf and glibc's, so
// two biased scores closer than one ulp could order differently; for these random draws the
// nearest gaps are ~1e-4, far above that, and exact ties (same logit) stay exact ties.
#include <cmath>

#include "core/rng.h"
#include "cuda/connector_cuda_testing.h"

namespace bk::test {
namespace {

struct RouterCase {
  int64_t N, E, k;
  int groups, topk_groups;
  bool ties;  // logits on a coarse grid and zero bias: many exact ties
};
constexpr RouterCase kRouter[] = {{37, 16, 4, 1, 1, false},  {37, 16, 4, 4, 2, false},
                                  {70, 64, 6, 8, 3, false},  {33, 40, 8, 1, 1, false},
                                  {50, 16, 4, 4, 2, true},   {20, 12, 5, 6, 3, true}};

Buffer router_logits(const RouterCase& c, DType dt, uint64_t seed) {
  Buffer l = rnd({c.N, c.E}, seed, dt, 2.0);
  if (c.ties)
    for (int64_t i = 0; i < l.numel(); ++i) l.ptr<float>()[i] = std::round(l.ptr<float>()[i]) * 0.5f;
  return l;
}

class MoeCuda : public testing::TestWithParam<DType> {};

TEST_P(MoeCuda, RouterForwardMatchesCpu) {
  const DType dt = GetParam();
  for (const RouterCase& c : kRouter) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " E=" << c.E << " k=" << c.k << " groups="
                                    << c.groups << "/" << c.topk_groups << " ties=" << c.ties);
    Buffer logits = router_logits(c, dt, 1);
    Buffer bias = randn_f32({c.E}, 2, c.ties ? 0.0 : 0.1);
    Buffer idx_ref({c.N, c.k}, DType::i32), gates_ref({c.N, c.k}), scores_ref({c.N, c.E});
    cpu::moe_router_forward(idx_ref, gates_ref, scores_ref, logits, bias, c.groups,
                            c.topk_groups, 2.5f);
    Buffer idx = device_output({c.N, c.k}, DType::i32), gates = device_output({c.N, c.k}, DType::f32);
    Buffer scores = device_output({c.N, c.E}, DType::f32);
    cuda::moe_router_forward(idx, gates, scores, to_device(logits, dt), to_device(bias, DType::f32),
                             c.groups, c.topk_groups, 2.5f);
    expect_same_ints("idx", idx, idx_ref);
    expect_close("scores", scores, scores_ref, kTolF32);
    expect_close("gates", gates, gates_ref, kTolF32);
  }
}

TEST_P(MoeCuda, RouterBackwardMatchesCpu) {
  const DType dt = GetParam();  // the dtype of the incoming gradients
  for (const RouterCase& c : kRouter) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " E=" << c.E << " k=" << c.k);
    Buffer idx({c.N, c.k}, DType::i32), gates({c.N, c.k}), scores({c.N, c.E});
    cpu::moe_router_forward(idx, gates, scores, router_logits(c, DType::f32, 3), randn_f32({c.E}, 4, 0.1),
                            c.groups, c.topk_groups, 1.5f);
    Buffer dgates = rnd({c.N, c.k}, 5, dt), extra = rnd({c.N, c.E}, 6, dt);
    Buffer d_idx = to_device(idx, DType::i32), d_scores = to_device(scores, DType::f32);
    Buffer d_dgates = to_device(dgates, dt);
    for (bool with_extra : {false, true}) {
      for (bool in_place : {false, true}) {
        if (in_place && !with_extra) continue;
        SCOPED_TRACE(testing::Message() << "extra=" << with_extra << " in_place=" << in_place);
        Buffer ref({c.N, c.E}, DType::f64);
        cpu::moe_router_backward(ref, f64(dgates), with_extra ? f64(extra) : Buffer(), f64(scores),
                                 idx, 1.5f);
        Buffer d_extra = to_device(extra, dt);
        Buffer dl = in_place ? Buffer() : device_output({c.N, c.E}, dt);
        Tensor out = in_place ? d_extra.tensor() : dl.tensor();
        cuda::moe_router_backward(out, d_dgates, with_extra ? d_extra.tensor() : Tensor{}, d_scores,
                                  d_idx, 1.5f);
        expect_close("dlogits", out, ref, tolerance(dt));
      }
    }
  }
}

// Expert ids with uneven loads: 70% of the pairs go to the first E/4 experts, the rest to the
// next E/2; the last E/4 experts get nothing. Ids may repeat within a token (the plan and the
// balance loss must handle that; the loss counts a repeat once).
Buffer skewed_ids(int64_t N, int64_t k, int64_t E, uint64_t seed) {
  const int64_t hot = std::max<int64_t>(1, E / 4), cold = std::max<int64_t>(1, E / 2);
  std::vector<int32_t> v(size_t(N * k));
  Rng rng(99, seed);
  for (auto& e : v) {
    const uint64_t r = rng.next_u64();
    e = int32_t(r % 100 < 70 ? int64_t((r >> 8) % uint64_t(hot))
                             : std::min<int64_t>(E - 1, hot + int64_t((r >> 8) % uint64_t(cold))));
  }
  return i32_host({N, k}, v);
}

TEST(MoeCudaPlan, MatchesCpuExactly) {
  struct Case {
    int64_t N, k, E;
  };
  // 6000 pairs = 24 chunks of 256 over 3 blocks; a tiny one; E not a multiple of 32.
  for (const Case& c : {Case{1000, 6, 32}, Case{5, 2, 40}, Case{333, 8, 100}}) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " k=" << c.k << " E=" << c.E);
    Buffer idx = skewed_ids(c.N, c.k, c.E, uint64_t(c.N));
    Buffer rows_ref({c.N, c.k}, DType::i32), off_ref({c.E + 1}, DType::i32);
    cpu::moe_plan(rows_ref, off_ref, idx);
    Buffer rows = device_output({c.N, c.k}, DType::i32), off = device_output({c.E + 1}, DType::i32);
    cuda::moe_plan(rows, off, to_device(idx, DType::i32));
    expect_same_ints("rows", rows, rows_ref);
    expect_same_ints("offsets", off, off_ref);
  }
}

struct DispatchCase {
  int64_t N, k, E, C;
};
constexpr DispatchCase kDispatch[] = {{50, 3, 8, 64}, {21, 2, 12, 13}, {9, 4, 40, 1024}};

TEST_P(MoeCuda, PermuteAndUnpermuteMatchCpu) {
  const DType dt = GetParam();
  for (const DispatchCase& c : kDispatch) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " k=" << c.k << " C=" << c.C);
    const int64_t M = c.N * c.k;
    Buffer rows({c.N, c.k}, DType::i32), off({c.E + 1}, DType::i32);
    cpu::moe_plan(rows, off, skewed_ids(c.N, c.k, c.E, 7));
    Buffer d_rows = to_device(rows, DType::i32);
    Buffer x = rnd({c.N, c.C}, 1, dt), dxp = rnd({M, c.C}, 2, dt), yp = rnd({M, c.C}, 3, dt);
    Buffer gates = randn_f32({c.N, c.k}, 4), dy = rnd({c.N, c.C}, 5, dt);

    Buffer xp_ref({M, c.C}, DType::f64), dx_ref({c.N, c.C}, DType::f64), y_ref({c.N, c.C}, DType::f64);
    Buffer dyp_ref({M, c.C}, DType::f64), dg_ref({c.N, c.k}, DType::f64);
    cpu::moe_permute(xp_ref, f64(x), rows);
    cpu::moe_permute_backward(dx_ref, f64(dxp), rows);
    cpu::moe_unpermute(y_ref, f64(yp), f64(gates), rows);
    cpu::moe_unpermute_backward(dyp_ref, dg_ref, f64(dy), f64(yp), f64(gates), rows);

    Buffer d_yp = to_device(yp, dt), d_gates = to_device(gates, DType::f32);
    Buffer xp = device_output({M, c.C}, dt), dx = device_output({c.N, c.C}, dt);
    Buffer y = device_output({c.N, c.C}, dt), dyp = device_output({M, c.C}, dt);
    Buffer dg = device_output({c.N, c.k}, DType::f32);
    cuda::moe_permute(xp, to_device(x, dt), d_rows);
    cuda::moe_permute_backward(dx, to_device(dxp, dt), d_rows);
    cuda::moe_unpermute(y, d_yp, d_gates, d_rows);
    cuda::moe_unpermute_backward(dyp, dg, to_device(dy, dt), d_yp, d_gates, d_rows);
    expect_close("x_perm", xp, xp_ref, kTolF32);  // a copy: exact
    expect_close("dx", dx, dx_ref, tolerance(dt));
    expect_close("y", y, y_ref, tolerance(dt));
    expect_close("dy_perm", dyp, dyp_ref, tolerance(dt));
    expect_close("dgates", dg, dg_ref, kTolF32);  // f32 dot products of representable inputs
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MoeCuda, testing::Values(DType::f32, DType::bf16), dtype_param_name);

TEST(MoeCudaBalance, LossAndGradientMatchCpu) {
  const int B = 3;
  const int64_t T = 50, E = 16, k = 4, N = B * T;
  Buffer logits = randn_f32({N, E}, 1), scores({N, E});
  for (int64_t i = 0; i < scores.numel(); ++i)
    scores.ptr<float>()[i] = float(1.0 / (1.0 + std::exp(-double(logits.ptr<float>()[i]))));
  Buffer idx = skewed_ids(N, k, E, 3);  // repeats within a token count once
  const double loss_ref = cpu::moe_balance_loss_forward(scores, idx, B, 0.01f);
  Buffer d_scores = to_device(scores, DType::f32), d_idx = to_device(idx, DType::i32);
  const double loss = cuda::moe_balance_loss_forward(d_scores, d_idx, B, 0.01f);
  // Both sum in double from the same f32 scores, in different orders.
  EXPECT_NEAR(loss, loss_ref, 1e-9 * std::abs(loss_ref));

  Buffer prefill = randn_f32({N, E}, 4), ref = clone(prefill);
  cpu::moe_balance_loss_backward(ref, scores, idx, B, 0.01f, 3.0f);
  Buffer d_ds = to_device(prefill, DType::f32);
  cuda::moe_balance_loss_backward(d_ds, d_scores, d_idx, B, 0.01f, 3.0f);
  // Per element the same double value, rounded to f32 and added to the same prefill.
  expect_increment("dscores", d_ds, prefill, ref, kTolF32);
}

}  // namespace
}  // namespace bk::test
