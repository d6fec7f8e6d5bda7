// The residual-connector kernels on the GPU (kernels/cuda/{mhc_coeffs,sinkhorn,hc_coeffs,
// stream_apply}.cu) against the CPU reference in f64 on the values the device holds: every
// forward, backward_input and (accumulating) backward_weight; streams in f32 and bf16 with f32
// coefficients and parameters (the model's layout), plus an all-bf16 mhc case; n = 1..8;
// C on and off the vector paths; the mhc forward's split-K path and its fused path; weight
// gradients over one and several token chunks; Sinkhorn at 1/5/20 iterations and logit
// spreads 1 and 5 (shared-memory tape) and n = 8 (global-memory tape), and underflowed rows;
// post_res in place; bitwise determinism; argument errors. Tolerances:
// connector_cuda_testing.h, and below where they differ.
#include <cmath>

#include "cuda/connector_cuda_testing.h"

namespace bk::test {
namespace {

struct Dims {
  int64_t N, n, C;
};

// mhc / hc shapes: (3 token tiles, K = 256: 2 chunks -> split-K), (K % 8 == 0 but not a chunk
// multiple), (1 chunk: the fused epilogue), (odd K: scalar loads), (n = 8: m = 80, the widest
// lane tile), (n = 1, 600 tokens: 19 tiles, three weight-gradient chunks).
constexpr Dims kCoeffCases[] = {{70, 4, 64}, {33, 4, 40}, {9, 2, 12}, {5, 3, 5}, {40, 8, 16}, {600, 1, 24}};

class ConnectorCuda : public testing::TestWithParam<DType> {};

// ---- mhc_coeffs ------------------------------------------------------------------------------

struct MhcInputs {
  Buffer x, phi, alpha, bias;
};
MhcInputs mhc_inputs(const Dims& d, DType xdt, DType pdt, uint64_t seed) {
  const int64_t m = d.n * d.n + 2 * d.n, K = d.n * d.C;
  MhcInputs in{rnd({d.N, d.n, d.C}, seed, xdt), rnd({m, K}, seed + 1, pdt, 1.0 / std::sqrt(double(K))),
               rnd({3}, seed + 2, pdt, 0.5), rnd({m}, seed + 3, pdt, 0.5)};
  for (int g = 0; g < 3; ++g) in.alpha.ptr<float>()[g] += 1.0f;
  return in;
}

void mhc_case(const Dims& d, DType xdt, DType cdt) {
  const int64_t N = d.N, n = d.n, m = n * n + 2 * n, K = n * d.C;
  const MhcInputs in = mhc_inputs(d, xdt, cdt, 100);
  const double ctol = tolerance(cdt);  // coefficient outputs are in cdt
  // forward
  Buffer pre({N, n}, DType::f64), post({N, n}, DType::f64), res({N, n, n}, DType::f64);
  Buffer rinv({N}, DType::f64), z({N, m}, DType::f64);
  cpu::mhc_coeffs_forward(pre, post, res, rinv, z, f64(in.x), f64(in.phi), f64(in.alpha),
                          f64(in.bias), 1e-6f);
  Buffer x = to_device(in.x, xdt), phi = to_device(in.phi, cdt), alpha = to_device(in.alpha, cdt);
  Buffer bias = to_device(in.bias, cdt);
  Buffer g_pre = device_output({N, n}, cdt), g_post = device_output({N, n}, cdt);
  Buffer g_res = device_output({N, n, n}, cdt), g_rinv = device_output({N}, cdt);
  Buffer g_z = device_output({N, m}, cdt);
  cuda::mhc_coeffs_forward(g_pre, g_post, g_res, g_rinv, g_z, x, phi, alpha, bias, 1e-6f);
  expect_close("h_pre", g_pre, pre, ctol);
  expect_close("h_post", g_post, post, ctol);
  expect_close("res_logits", g_res, res, ctol);
  expect_close("rinv", g_rinv, rinv, ctol);
  expect_close("z", g_z, z, ctol);

  // backward_input, from the saved tensors as the device holds them
  Buffer s_pre = representable(pre, cdt), s_post = representable(post, cdt);
  Buffer s_rinv = representable(rinv, cdt), s_z = representable(z, cdt);
  Buffer dpre = rnd({N, n}, 110, cdt), dpost = rnd({N, n}, 111, cdt), dres = rnd({N, n, n}, 112, cdt);
  Buffer dx_ref({N, n, d.C}, DType::f64), dl_ref({N, m}, DType::f64);
  cpu::mhc_coeffs_backward_input(dx_ref, dl_ref, f64(dpre), f64(dpost), f64(dres), f64(s_pre),
                                 f64(s_post), f64(in.x), f64(in.phi), f64(in.alpha), f64(s_rinv),
                                 f64(s_z));
  Buffer d_rinv = to_device(s_rinv, cdt), d_z = to_device(s_z, cdt);
  Buffer g_dx = device_output({N, n, d.C}, xdt), g_dl = device_output({N, m}, cdt);
  cuda::mhc_coeffs_backward_input(g_dx, g_dl, to_device(dpre, cdt), to_device(dpost, cdt),
                                  to_device(dres, cdt), to_device(s_pre, cdt), to_device(s_post, cdt),
                                  x, phi, alpha, d_rinv, d_z);
  expect_close("dx", g_dx, dx_ref, tolerance(xdt));
  expect_close("dlogits", g_dl, dl_ref, ctol);

  // backward_weight accumulates onto a random prefill
  Buffer s_dl = representable(dl_ref, cdt);
  Buffer dphi0 = rnd({m, K}, 120, cdt), dalpha0 = rnd({3}, 121, cdt), dbias0 = rnd({m}, 122, cdt);
  Buffer dphi_ref = f64(dphi0), dalpha_ref = f64(dalpha0), dbias_ref = f64(dbias0);
  cpu::mhc_coeffs_backward_weight(dphi_ref, dalpha_ref, dbias_ref, f64(s_dl), f64(in.x),
                                  f64(in.alpha), f64(s_rinv), f64(s_z));
  Buffer g_dphi = to_device(dphi0, cdt), g_dalpha = to_device(dalpha0, cdt);
  Buffer g_dbias = to_device(dbias0, cdt);
  cuda::mhc_coeffs_backward_weight(g_dphi, g_dalpha, g_dbias, to_device(s_dl, cdt), x, alpha,
                                   d_rinv, d_z);
  // bf16 accumulators: the rounded total, compared as a total (its increment is as small as
  // its rounding error for large prefills).
  if (cdt == DType::f32) {
    expect_increment("dphi", g_dphi, dphi0, dphi_ref, kTolF32);
    expect_increment("dalpha", g_dalpha, dalpha0, dalpha_ref, kTolF32);
    expect_increment("dbias", g_dbias, dbias0, dbias_ref, kTolF32);
  } else {
    expect_close("dphi", g_dphi, dphi_ref, ctol);
    expect_close("dalpha", g_dalpha, dalpha_ref, ctol);
    expect_close("dbias", g_dbias, dbias_ref, ctol);
  }
}

TEST_P(ConnectorCuda, MhcCoeffsMatchCpu) {
  const DType dt = GetParam();
  for (const Dims& d : kCoeffCases) {
    SCOPED_TRACE(testing::Message() << "N=" << d.N << " n=" << d.n << " C=" << d.C);
    mhc_case(d, dt, DType::f32);
  }
}

TEST(ConnectorCudaMhc, AllBf16MatchesCpu) {
  mhc_case({70, 4, 64}, DType::bf16, DType::bf16);
}

TEST(ConnectorCudaMhc, BackwardWeightIsDeterministic) {
  const Dims d{700, 4, 48};  // three token chunks
  const int64_t N = d.N, n = d.n, m = n * n + 2 * n, K = n * d.C;
  const MhcInputs in = mhc_inputs(d, DType::bf16, DType::f32, 200);
  Buffer x = to_device(in.x, DType::bf16), alpha = to_device(in.alpha, DType::f32);
  Buffer dl = to_device(randn_f32({N, m}, 201), DType::f32);
  Buffer rinv = to_device(randn_f32({N}, 202), DType::f32), z = to_device(randn_f32({N, m}, 203), DType::f32);
  Buffer r[2][3];
  for (auto& run : r) {
    run[0] = to_device(randn_f32({m, K}, 204), DType::f32);
    run[1] = to_device(randn_f32({3}, 205), DType::f32);
    run[2] = to_device(randn_f32({m}, 206), DType::f32);
    cuda::mhc_coeffs_backward_weight(run[0], run[1], run[2], dl, x, alpha, rinv, z);
  }
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(bitwise_equal_device(r[0][i], r[1][i])) << "output " << i;
}

// ---- sinkhorn --------------------------------------------------------------------------------

TEST(ConnectorCudaSinkhorn, MatchesCpu) {
  struct Case {
    int64_t N, n;
    int iters;
    double spread;
  };
  const Case cases[] = {{100, 4, 1, 1.0}, {100, 4, 5, 1.0},  {100, 4, 20, 1.0}, {100, 4, 1, 5.0},
                        {100, 4, 5, 5.0}, {100, 4, 20, 5.0}, {77, 2, 20, 5.0},  {77, 3, 7, 5.0},
                        {65, 8, 20, 5.0}, {40, 1, 3, 1.0},   {50, 5, 20, 1.0}};
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "n=" << c.n << " iters=" << c.iters << " spread=" << c.spread);
    Buffer L = rnd({c.N, c.n, c.n}, 300, DType::f32, c.spread), dp = rnd({c.N, c.n, c.n}, 301, DType::f32);
    Buffer p_ref({c.N, c.n, c.n}, DType::f64), dl_ref({c.N, c.n, c.n}, DType::f64);
    cpu::sinkhorn_forward(p_ref, f64(L), c.iters);
    cpu::sinkhorn_backward(dl_ref, f64(dp), f64(L), c.iters);
    Buffer d_L = to_device(L, DType::f32);
    Buffer p = device_output({c.N, c.n, c.n}, DType::f32), dl = device_output({c.N, c.n, c.n}, DType::f32);
    cuda::sinkhorn_forward(p, d_L, c.iters);
    cuda::sinkhorn_backward(dl, to_device(dp, DType::f32), d_L, c.iters);
    expect_close("p", p, p_ref, kTolF32);
    // The backward differentiates through 2 iters normalisations: at spread 5 their Jacobians
    // amplify the last-bit differences of exp (CUDA vs glibc) and of the f32 steps; the CPU's
    // own f32-vs-f64 check needs 1e-4 (max-norm) there. A wrong step gives >= 1e-2.
    expect_close("dlogits", dl, dl_ref, c.spread > 1 ? 1e-4 : kTolF32);
  }
}

TEST(ConnectorCudaSinkhorn, UnderflowedRowsStayFinite) {
  const int64_t N = 8, n = 4;
  Buffer L = rnd({N, n, n}, 310, DType::f32);
  for (int64_t t = 0; t < N; ++t)  // row 0 and column 1 far below the block's max
    for (int64_t j = 0; j < n; ++j) {
      L.ptr<float>()[t * n * n + j] -= 200.f;
      L.ptr<float>()[t * n * n + j * n + 1] -= 200.f;
    }
  Buffer dp = rnd({N, n, n}, 311, DType::f32);
  // An f32 reference: in f64, e^-200 would not underflow.
  Buffer p_ref({N, n, n}), dl_ref({N, n, n});
  cpu::sinkhorn_forward(p_ref, L, 20);
  cpu::sinkhorn_backward(dl_ref, dp, L, 20);
  Buffer p = device_output({N, n, n}, DType::f32), dl = device_output({N, n, n}, DType::f32);
  cuda::sinkhorn_forward(p, to_device(L, DType::f32), 20);
  cuda::sinkhorn_backward(dl, to_device(dp, DType::f32), to_device(L, DType::f32), 20);
  expect_close("p", p, p_ref, kTolF32);  // finite, and zeros where the CPU has zeros
  expect_close("dlogits", dl, dl_ref, kTolF32);
}

// ---- hc_coeffs -------------------------------------------------------------------------------

TEST_P(ConnectorCuda, HcCoeffsMatchCpu) {
  const DType dt = GetParam();
  const DType cdt = DType::f32;
  for (const Dims& d : kCoeffCases) {
    SCOPED_TRACE(testing::Message() << "N=" << d.N << " n=" << d.n << " C=" << d.C);
    const int64_t N = d.N, n = d.n, C = d.C, M = n + 2;
    Buffer x = rnd({N, n, C}, 400, dt), w = rnd({M, C}, 401, cdt, 1.0 / std::sqrt(double(C)));
    Buffer scale = rnd({3}, 402, cdt), spre = rnd({n}, 403, cdt), spost = rnd({n}, 404, cdt);
    Buffer sres = rnd({n, n}, 405, cdt);
    Buffer pre({N, n}, DType::f64), post({N, n}, DType::f64), hres({N, n, n}, DType::f64);
    Buffer rinv({N, n}, DType::f64), u({N, n, M}, DType::f64);
    cpu::hc_coeffs_forward(pre, post, hres, rinv, u, f64(x), f64(w), f64(scale), f64(spre),
                           f64(spost), f64(sres), 1e-6f);
    Buffer d_x = to_device(x, dt), d_w = to_device(w, cdt), d_scale = to_device(scale, cdt);
    Buffer g_pre = device_output({N, n}, cdt), g_post = device_output({N, n}, cdt);
    Buffer g_res = device_output({N, n, n}, cdt), g_rinv = device_output({N, n}, cdt);
    Buffer g_u = device_output({N, n, M}, cdt);
    cuda::hc_coeffs_forward(g_pre, g_post, g_res, g_rinv, g_u, d_x, d_w, d_scale,
                            to_device(spre, cdt), to_device(spost, cdt), to_device(sres, cdt), 1e-6f);
    expect_close("h_pre", g_pre, pre, kTolF32);
    expect_close("h_post", g_post, post, kTolF32);
    expect_close("h_res", g_res, hres, kTolF32);
    expect_close("rinv", g_rinv, rinv, kTolF32);
    expect_close("u", g_u, u, kTolF32);

    Buffer s_rinv = representable(rinv, cdt), s_u = representable(u, cdt);
    Buffer dpre = rnd({N, n}, 410, cdt), dpost = rnd({N, n}, 411, cdt), dres = rnd({N, n, n}, 412, cdt);
    Buffer dx_ref({N, n, C}, DType::f64), dl_ref({N, n, M}, DType::f64);
    cpu::hc_coeffs_backward_input(dx_ref, dl_ref, f64(dpre), f64(dpost), f64(dres), f64(x), f64(w),
                                  f64(scale), f64(s_rinv), f64(s_u));
    Buffer d_rinv = to_device(s_rinv, cdt), d_u = to_device(s_u, cdt);
    Buffer d_dpre = to_device(dpre, cdt), d_dpost = to_device(dpost, cdt), d_dres = to_device(dres, cdt);
    Buffer g_dx = device_output({N, n, C}, dt), g_dl = device_output({N, n, M}, cdt);
    cuda::hc_coeffs_backward_input(g_dx, g_dl, d_dpre, d_dpost, d_dres, d_x, d_w, d_scale, d_rinv, d_u);
    expect_close("dx", g_dx, dx_ref, tolerance(dt));
    expect_close("dlogits", g_dl, dl_ref, kTolF32);

    Buffer s_dl = representable(dl_ref, cdt);
    Buffer dw0 = rnd({M, C}, 420, cdt), ds0 = rnd({3}, 421, cdt), dsp0 = rnd({n}, 422, cdt);
    Buffer dso0 = rnd({n}, 423, cdt), dsr0 = rnd({n, n}, 424, cdt);
    Buffer dw_ref = f64(dw0), ds_ref = f64(ds0), dsp_ref = f64(dsp0), dso_ref = f64(dso0), dsr_ref = f64(dsr0);
    cpu::hc_coeffs_backward_weight(dw_ref, ds_ref, dsp_ref, dso_ref, dsr_ref, f64(s_dl), f64(dpre),
                                   f64(dpost), f64(dres), f64(x), f64(s_rinv), f64(s_u));
    Buffer g_dw = to_device(dw0, cdt), g_ds = to_device(ds0, cdt), g_dsp = to_device(dsp0, cdt);
    Buffer g_dso = to_device(dso0, cdt), g_dsr = to_device(dsr0, cdt);
    cuda::hc_coeffs_backward_weight(g_dw, g_ds, g_dsp, g_dso, g_dsr, to_device(s_dl, cdt), d_dpre,
                                    d_dpost, d_dres, d_x, d_rinv, d_u);
    expect_increment("dw", g_dw, dw0, dw_ref, kTolF32);
    expect_increment("dscale", g_ds, ds0, ds_ref, kTolF32);
    expect_increment("dstatic_pre", g_dsp, dsp0, dsp_ref, kTolF32);
    expect_increment("dstatic_post", g_dso, dso0, dso_ref, kTolF32);
    expect_increment("dstatic_res", g_dsr, dsr0, dsr_ref, kTolF32);
  }
}

// ---- stream_pre, stream_post_res, stream_expand ------------------------------------------------

// n = 5..8 take the post_res kernels' 4-column path; C = 13 the scalar path; C = 1280 a
// paper width.
constexpr Dims kStreamCases[] = {{19, 4, 64}, {19, 4, 13}, {7, 1, 24}, {11, 2, 1280},
                                 {9, 5, 40},  {9, 6, 13},  {6, 8, 64}, {5, 3, 7}};

TEST_P(ConnectorCuda, StreamOpsMatchCpu) {
  const DType dt = GetParam();
  const DType cdt = DType::f32;
  for (const Dims& d : kStreamCases) {
    SCOPED_TRACE(testing::Message() << "N=" << d.N << " n=" << d.n << " C=" << d.C);
    const int64_t N = d.N, n = d.n, C = d.C;
    Buffer x = rnd({N, n, C}, 500, dt), f = rnd({N, C}, 501, dt), dy = rnd({N, C}, 502, dt);
    Buffer dout = rnd({N, n, C}, 503, dt), dys = rnd({N, n, C}, 504, dt);
    Buffer hpre = rnd({N, n}, 505, cdt), hpost = rnd({N, n}, 506, cdt), hres = rnd({N, n, n}, 507, cdt);
    Buffer d_x = to_device(x, dt), d_f = to_device(f, dt), d_dout = to_device(dout, dt);
    Buffer d_hpre = to_device(hpre, cdt), d_hpost = to_device(hpost, cdt), d_hres = to_device(hres, cdt);

    Buffer y_ref({N, C}, DType::f64), dx_ref({N, n, C}, DType::f64), dh_ref({N, n}, DType::f64);
    cpu::stream_pre_forward(y_ref, f64(x), f64(hpre));
    cpu::stream_pre_backward(dx_ref, dh_ref, f64(dy), f64(x), f64(hpre));
    Buffer y = device_output({N, C}, dt), dx = device_output({N, n, C}, dt), dh = device_output({N, n}, cdt);
    cuda::stream_pre_forward(y, d_x, d_hpre);
    cuda::stream_pre_backward(dx, dh, to_device(dy, dt), d_x, d_hpre);
    expect_close("pre y", y, y_ref, tolerance(dt));
    expect_close("pre dx", dx, dx_ref, tolerance(dt));
    expect_close("pre dh_pre", dh, dh_ref, kTolF32);

    Buffer o_ref({N, n, C}, DType::f64);
    cpu::stream_post_res_forward(o_ref, f64(x), f64(f), f64(hres), f64(hpost));
    Buffer o = device_output({N, n, C}, dt);
    cuda::stream_post_res_forward(o, d_x, d_f, d_hres, d_hpost);
    expect_close("post_res out", o, o_ref, tolerance(dt));
    Buffer o_inplace = to_device(x, dt);  // out = x
    cuda::stream_post_res_forward(o_inplace, o_inplace, d_f, d_hres, d_hpost);
    EXPECT_TRUE(bitwise_equal_device(o_inplace, o)) << "post_res forward in place";

    Buffer pdx_ref({N, n, C}, DType::f64), df_ref({N, C}, DType::f64);
    Buffer dhr_ref({N, n, n}, DType::f64), dhp_ref({N, n}, DType::f64);
    cpu::stream_post_res_backward(pdx_ref, df_ref, dhr_ref, dhp_ref, f64(dout), f64(x), f64(f),
                                  f64(hres), f64(hpost));
    Buffer pdx = device_output({N, n, C}, dt), df = device_output({N, C}, dt);
    Buffer dhr = device_output({N, n, n}, cdt), dhp = device_output({N, n}, cdt);
    cuda::stream_post_res_backward(pdx, df, dhr, dhp, d_dout, d_x, d_f, d_hres, d_hpost);
    expect_close("post_res dx", pdx, pdx_ref, tolerance(dt));
    expect_close("post_res df", df, df_ref, tolerance(dt));
    expect_close("post_res dh_res", dhr, dhr_ref, kTolF32);
    expect_close("post_res dh_post", dhp, dhp_ref, kTolF32);
    Buffer inplace = to_device(dout, dt);  // dx = dout
    Buffer df2 = device_output({N, C}, dt), dhr2 = device_output({N, n, n}, cdt);
    Buffer dhp2 = device_output({N, n}, cdt);
    cuda::stream_post_res_backward(inplace, df2, dhr2, dhp2, inplace, d_x, d_f, d_hres, d_hpost);
    EXPECT_TRUE(bitwise_equal_device(inplace, pdx)) << "post_res backward in place";
    EXPECT_TRUE(bitwise_equal_device(dhr2, dhr)) << "post_res backward in place: dh_res";

    Buffer e_ref({N, n, C}, DType::f64), edx_ref({N, C}, DType::f64);
    cpu::stream_expand_forward(e_ref, f64(f));
    cpu::stream_expand_backward(edx_ref, f64(dys));
    Buffer e = device_output({N, n, C}, dt), edx = device_output({N, C}, dt);
    cuda::stream_expand_forward(e, d_f);
    cuda::stream_expand_backward(edx, to_device(dys, dt));
    expect_close("expand y", e, e_ref, kTolF32);  // copies: exact
    expect_close("expand dx", edx, edx_ref, tolerance(dt));
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ConnectorCuda, testing::Values(DType::f32, DType::bf16),
                         dtype_param_name);

TEST(ConnectorCudaArgs, ShapeAndOverlapErrors) {
  Buffer x = device_output({4, 9, 8}, DType::f32), y = device_output({4, 8}, DType::f32);
  Buffer h = device_output({4, 9}, DType::f32);
  expect_error([&] { cuda::stream_pre_forward(y, x, h); }, {"stream_pre_forward", "n <= 8"});
  Buffer x4 = device_output({4, 4, 8}, DType::f32), f = device_output({4, 8}, DType::f32);
  Buffer hr = device_output({4, 4, 4}, DType::f32), hp = device_output({4, 4}, DType::f32);
  Tensor shifted = x4.tensor();  // out overlapping x by one token
  shifted.data = static_cast<float*>(shifted.data) + 32;
  shifted.shape = Shape{3, 4, 8};
  Tensor xs = x4.tensor().view({4, 4, 8});
  expect_error([&] { cuda::stream_post_res_forward(shifted, xs.rows(0, 3), f.tensor().rows(0, 3), hr.tensor().rows(0, 3), hp.tensor().rows(0, 3)); },
               {"stream_post_res_forward", "overlap"});
  Buffer phi = device_output({24, 31}, DType::f32), a = device_output({3}, DType::f32);
  Buffer b = device_output({24}, DType::f32), r = device_output({4}, DType::f32);
  Buffer z = device_output({4, 24}, DType::f32), res = device_output({4, 4, 4}, DType::f32);
  expect_error([&] { cuda::mhc_coeffs_forward(hp, hp, res, r, z, x4, phi, a, b, 1e-6f); },
               {"mhc_coeffs_forward", "phi", "[n*n+2n, n*C]"});
}

}  // namespace
}  // namespace bk::test
