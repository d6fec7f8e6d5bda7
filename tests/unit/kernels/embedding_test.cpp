#include "unit/kernels/kernel_testing.h"

namespace bk::test {
namespace {

// Ids repeat (3 twice, 1 three times) and row 2 of the table is never used.
const std::vector<int32_t> kTokens = {0, 3, 1, 3, 4, 1, 1};
constexpr int64_t V = 5, C = 6;

TEST(Embedding, ForwardGathersRows) {
  Buffer tok = ids(kTokens), table = randn({V, C}, 1), out({7, C}, DType::f64);
  ops::embedding_forward(out, tok, table);
  for (int64_t n = 0; n < 7; ++n)
    for (int64_t c = 0; c < C; ++c)
      EXPECT_EQ(get(out, n * C + c), get(table, kTokens[n] * C + c)) << n << "," << c;
}

TEST(Embedding, WeightGradientAccumulatesAndMatchesFiniteDifferences) {
  Buffer tok = ids(kTokens), table = randn({V, C}, 2), R = randn({7, C}, 3), out({7, C}, DType::f64);
  Buffer prefill = randn({V, C}, 4), dtable = clone(prefill);
  ops::embedding_backward_weight(dtable, tok, R);
  Buffer grad = minus(dtable, prefill);
  expect_grad("dtable", grad, table, [&] {
    ops::embedding_forward(out, tok, table);
    return weighted_sum(out, R);
  });
  // The unused row gets nothing added: the prefill survives bit for bit.
  for (int64_t c = 0; c < C; ++c) EXPECT_EQ(get(dtable, 2 * C + c), get(prefill, 2 * C + c));
}

TEST(Embedding, F32MatchesF64) {
  Buffer tok = ids(kTokens), table = randn({V, C}, 5), dout = randn({7, C}, 6);
  Buffer out64({7, C}, DType::f64), out32({7, C}, DType::f32);
  ops::embedding_forward(out64, tok, table);
  ops::embedding_forward(out32, tok, cast(table, DType::f32));
  EXPECT_LT(rel_err(out32, out64), kF32Tol);
  Buffer d64 = randn({V, C}, 7), d32 = cast(d64, DType::f32);
  ops::embedding_backward_weight(d64, tok, dout);
  ops::embedding_backward_weight(d32, tok, cast(dout, DType::f32));
  EXPECT_LT(rel_err(d32, d64), kF32Tol);
}

TEST(Embedding, RejectsBadShapesAndIds) {
  Buffer table = randn({V, C}, 8), out({7, C}, DType::f64);
  expect_error([&] { ops::embedding_forward(out, ids({0, 1}), table); },
               {"embedding_forward", "[7, 6]", "[2]"});
  expect_error([&] { ops::embedding_forward(out, ids({0, 1, 2, 3, 5, 0, 0}), table); },
               {"embedding_forward", "token id 5 at row 4"});
  expect_error([&] { ops::embedding_backward_weight(table, ids(kTokens), Buffer({7, C + 1}, DType::f64)); },
               {"embedding_backward_weight", "[7, 7]"});
  Buffer f_tok({7}, DType::f32);
  expect_error([&] { ops::embedding_forward(out, f_tok, table); }, {"embedding_forward", "i32"});
}

}  // namespace
}  // namespace bk::test
