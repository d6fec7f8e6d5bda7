// Token embedding: a row gather forward, a scatter-add of rows backward.
#include "kernels/cpu/common.h"

namespace bk::cpu {

namespace {
constexpr const char* kRule = "tokens[N] (i32), table[V,C], out/dout[N,C]";

// Shapes, dtypes, and every id in [0, V) (checked before any parallel region).
void check_args(const char* op, const Tensor& rows, const char* rows_name, const Tensor& tokens,
                const Tensor& table) {
  float_dtype(op, {{rows_name, rows}, {"table", table}});
  check_index(op, {"tokens", tokens});
  check_shapes(op,
               rows.ndim() == 2 && table.ndim() == 2 && tokens.ndim() == 1 &&
                   rows.size(0) == tokens.size(0) && rows.size(1) == table.size(1),
               kRule, {{rows_name, rows}, {"tokens", tokens}, {"table", table}});
  const int32_t* ids = tokens.ptr<int32_t>();
  for (int64_t n = 0; n < tokens.numel(); ++n)
    BK_CHECK(ids[n] >= 0 && ids[n] < table.size(0), "{}: token id {} at row {} is outside [0, {})",
             op, ids[n], n, table.size(0));
}
}  // namespace

void embedding_forward(Tensor out, Tensor tokens, Tensor table, Stream) {
  check_args("embedding_forward", out, "out", tokens, table);
  const int64_t N = out.size(0), C = out.size(1);
  const int32_t* ids = tokens.ptr<int32_t>();
  dispatch(out.dtype, [&]<typename T>() {
    T* o = out.ptr<T>();
    const T* tab = table.ptr<T>();
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) std::copy_n(tab + ids[n] * C, C, o + n * C);
  });
}

void embedding_backward_weight(Tensor dtable, Tensor tokens, Tensor dout, Stream) {
  check_args("embedding_backward_weight", dout, "dout", tokens, dtable);
  const int64_t N = dout.size(0), C = dout.size(1);
  const int32_t* ids = tokens.ptr<int32_t>();
  dispatch(dout.dtype, [&]<typename T>() {
    T* dt = dtable.ptr<T>();
    const T* g = dout.ptr<T>();
    // Repeated ids add into one row: threads own column blocks, rows are added in order.
    for_column_blocks(C, N, [&](int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; ++n) {
        T* dst = dt + ids[n] * C;
        const T* src = g + n * C;
        for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
      }
    });
  });
}

}  // namespace bk::cpu
