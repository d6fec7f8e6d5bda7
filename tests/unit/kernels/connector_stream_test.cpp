// stream_pre, stream_post_res, stream_expand: the definitions, finite differences of every
// input, in-place post_res, f32 against f64, shape errors.
#include "unit/kernels/connector_testing.h"

namespace bk::test {
namespace {

constexpr int64_t N = 3;

TEST(StreamApply, ForwardsMatchDefinitions) {
  constexpr int64_t n = 3, C = 5;
  Buffer x = randn({N, n, C}, 10), f = randn({N, C}, 11), hp = randn({N, n}, 12),
         hr = randn({N, n, n}, 13), ho = randn({N, n}, 14);
  Buffer y = nan_buffer({N, C}), out = nan_buffer({N, n, C}), e = nan_buffer({N, n, C}),
         s = nan_buffer({N, C});
  ops::stream_pre_forward(y, x, hp);
  ops::stream_post_res_forward(out, x, f, hr, ho);
  ops::stream_expand_forward(e, f);
  ops::stream_expand_backward(s, x);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t c = 0; c < C; ++c) {
      double want_y = 0, want_s = 0;
      for (int64_t i = 0; i < n; ++i) {
        want_y += get(hp, t * n + i) * get(x, (t * n + i) * C + c);
        want_s += get(x, (t * n + i) * C + c);
        double want_o = get(ho, t * n + i) * get(f, t * C + c);
        for (int64_t j = 0; j < n; ++j)
          want_o += get(hr, t * n * n + i * n + j) * get(x, (t * n + j) * C + c);
        EXPECT_NEAR(get(out, (t * n + i) * C + c), want_o, 1e-14);
        EXPECT_EQ(get(e, (t * n + i) * C + c), get(f, t * C + c));
      }
      EXPECT_NEAR(get(y, t * C + c), want_y, 1e-14);
      EXPECT_NEAR(get(s, t * C + c), want_s, 1e-14);
    }
}

void check_gradients(int64_t n, int64_t C, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "n = " << n << ", C = " << C);
  Buffer x = randn({N, n, C}, seed), f = randn({N, C}, seed + 1), hp = randn({N, n}, seed + 2),
         hr = randn({N, n, n}, seed + 3), ho = randn({N, n}, seed + 4);
  {  // pre
    Buffer y = nan_buffer({N, C}), R = randn({N, C}, seed + 5);
    auto loss = [&] {
      ops::stream_pre_forward(y, x, hp);
      return weighted_sum(y, R);
    };
    Buffer dx = nan_buffer({N, n, C}), dh = nan_buffer({N, n});
    ops::stream_pre_backward(dx, dh, R, x, hp);
    expect_grad("pre dx", dx, x, loss);
    expect_grad("pre dh_pre", dh, hp, loss);
  }
  {  // post_res
    Buffer out = nan_buffer({N, n, C}), R = randn({N, n, C}, seed + 6);
    auto loss = [&] {
      ops::stream_post_res_forward(out, x, f, hr, ho);
      return weighted_sum(out, R);
    };
    Buffer dx = nan_buffer({N, n, C}), df = nan_buffer({N, C}), dhr = nan_buffer({N, n, n}),
           dho = nan_buffer({N, n});
    ops::stream_post_res_backward(dx, df, dhr, dho, R, x, f, hr, ho);
    expect_grad("post_res dx", dx, x, loss);
    expect_grad("post_res df", df, f, loss);
    expect_grad("post_res dh_res", dhr, hr, loss);
    expect_grad("post_res dh_post", dho, ho, loss);
  }
  {  // expand
    Buffer y = nan_buffer({N, n, C}), R = randn({N, n, C}, seed + 7);
    auto loss = [&] {
      ops::stream_expand_forward(y, f);
      return weighted_sum(y, R);
    };
    Buffer df = nan_buffer({N, C});
    ops::stream_expand_backward(df, R);
    expect_grad("expand dx", df, f, loss);
  }
}

TEST(StreamApply, GradientsMatchFiniteDifferences) {
  check_gradients(4, 12, 100);
  check_gradients(2, 12, 200);
  check_gradients(3, 5, 300);
}

// out = x (forward) and dx = dout (backward) in place give the out-of-place results.
TEST(StreamApply, PostResInPlaceMatchesOutOfPlace) {
  constexpr int64_t n = 4, C = 12;
  Buffer x = randn({N, n, C}, 400), f = randn({N, C}, 401), hr = randn({N, n, n}, 402),
         ho = randn({N, n}, 403), g = randn({N, n, C}, 404);
  Buffer out({N, n, C}, DType::f64), inplace = clone(x);
  ops::stream_post_res_forward(out, x, f, hr, ho);
  ops::stream_post_res_forward(inplace, inplace, f, hr, ho);
  EXPECT_TRUE(bitwise_equal(out, inplace));
  Buffer dx({N, n, C}, DType::f64), df({N, C}, DType::f64), dhr({N, n, n}, DType::f64),
      dho({N, n}, DType::f64);
  Buffer dg = clone(g), df2({N, C}, DType::f64), dhr2({N, n, n}, DType::f64),
         dho2({N, n}, DType::f64);
  ops::stream_post_res_backward(dx, df, dhr, dho, g, x, f, hr, ho);
  ops::stream_post_res_backward(dg, df2, dhr2, dho2, dg, x, f, hr, ho);
  EXPECT_TRUE(bitwise_equal(dx, dg));
  EXPECT_TRUE(bitwise_equal(df, df2));
  EXPECT_TRUE(bitwise_equal(dhr, dhr2));
  EXPECT_TRUE(bitwise_equal(dho, dho2));
  expect_error([&] {
    ops::stream_post_res_forward(Tensor(x).rows(0, 2), Tensor(x).rows(1, 3), f.tensor().rows(0, 2),
                                 hr.tensor().rows(0, 2), ho.tensor().rows(0, 2));
  }, {"stream_post_res_forward", "overlap partially"});
}

TEST(StreamApply, F32MatchesF64) {
  constexpr int64_t T = 64, n = 4, C = 96;  // above the parallel threshold
  Buffer x = randn({T, n, C}, 500), f = randn({T, C}, 501), hp = randn({T, n}, 502),
         hr = randn({T, n, n}, 503), ho = randn({T, n}, 504), gy = randn({T, C}, 505),
         go = randn({T, n, C}, 506);
  auto run = [&](DType dt) {
    Buffer xx = cast(x, dt), ff = cast(f, dt), hpp = cast(hp, dt), hrr = cast(hr, dt),
           hoo = cast(ho, dt), gyy = cast(gy, dt), goo = cast(go, dt);
    std::vector<Buffer> r;
    for (Shape s : {Shape{T, C}, Shape{T, n, C}, Shape{T, n}, Shape{T, n, C}, Shape{T, n, C},
                    Shape{T, C}, Shape{T, n, n}, Shape{T, n}, Shape{T, n, C}, Shape{T, C}})
      r.emplace_back(s, dt);
    ops::stream_pre_forward(r[0], xx, hpp);
    ops::stream_pre_backward(r[1], r[2], gyy, xx, hpp);
    ops::stream_post_res_forward(r[3], xx, ff, hrr, hoo);
    ops::stream_post_res_backward(r[4], r[5], r[6], r[7], goo, xx, ff, hrr, hoo);
    ops::stream_expand_forward(r[8], ff);
    ops::stream_expand_backward(r[9], goo);
    return r;
  };
  std::vector<Buffer> a = run(DType::f32), b = run(DType::f64);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(rel_err(a[i], b[i]), kF32Tol) << "output " << i;
}

TEST(StreamApply, RejectsBadShapes) {
  Buffer x = randn({N, 4, 8}, 600), y({N, 8}, DType::f64), h({N, 4}, DType::f64);
  expect_error([&] { ops::stream_pre_forward(y, x, Buffer({N, 3}, DType::f64)); },
               {"stream_pre_forward", "h_pre is [3, 3]", "[N, n] = [3, 4]"});
  expect_error([&] { ops::stream_pre_backward(x, h, Buffer({N, 7}, DType::f64), x, h); },
               {"stream_pre_backward", "dy is [3, 7]"});
  expect_error([&] {
    ops::stream_post_res_forward(Buffer({N, 4, 8}, DType::f64), x, y, Buffer({N, 4, 3}, DType::f64),
                                 h);
  }, {"stream_post_res_forward", "h_res is [3, 4, 3]", "[N, n, n]"});
  expect_error([&] {
    ops::stream_post_res_backward(Buffer({N, 4, 8}, DType::f64), y, Buffer({N, 4, 4}, DType::f64),
                                  h, x, x, Buffer({N, 9}, DType::f64),
                                  Buffer({N, 4, 4}, DType::f64), h);
  }, {"stream_post_res_backward", "f is [3, 9]"});
  expect_error([&] { ops::stream_expand_forward(x, Buffer({N, 7}, DType::f64)); },
               {"stream_expand_forward", "x is [3, 7]", "[N, C] = [3, 8]"});
  expect_error([&] { ops::stream_expand_backward(Buffer({N, 4, 8}, DType::f64), x); },
               {"stream_expand_backward", "dx is [3, 4, 8]"});
}

}  // namespace
}  // namespace bk::test
