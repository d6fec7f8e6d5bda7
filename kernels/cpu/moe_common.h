// Shared checks of the MoE kernels (moe_router, moe_dispatch, moe_balance): expert ids and
// dispatch rows are i32 [N,k] tables whose every entry is validated before any OpenMP region,
// so a bad id is an error naming the op, the value and its (token, slot), never a stray write.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cpu/common.h"

namespace bk::cpu {

// `t` (named `name`) is an i32 [N,k] table.
inline void check_table(const char* op, const char* name, const Tensor& t) {
  check_index(op, {name, t});
  BK_CHECK(t.ndim() == 2, "{}: {} is {}; expected an i32 [N, k] table", op, name, t.shape.str());
}

// Every entry of idx [N,k] is an expert id in [0, E).
inline void check_expert_ids(const char* op, const char* name, const Tensor& idx, int64_t E) {
  const int32_t* p = static_cast<const int32_t*>(idx.data);
  const int64_t k = idx.size(1);
  for (int64_t i = 0; i < idx.numel(); ++i)
    BK_CHECK(p[i] >= 0 && p[i] < E, "{}: {}[{}, {}] = {} is not an expert id in [0, {})", op,
             name, i / k, i % k, p[i], E);
}

// rows [N,k] is a permutation of [0, N*k): each permuted row is written by exactly one
// (token, slot) pair, so the per-token loops write disjoint rows and leave none unset.
inline void check_rows_permutation(const char* op, const Tensor& rows) {
  const int32_t* p = static_cast<const int32_t*>(rows.data);
  const int64_t M = rows.numel(), k = rows.size(1);
  std::vector<uint8_t> seen(static_cast<size_t>(M), 0);
  for (int64_t i = 0; i < M; ++i) {
    BK_CHECK(p[i] >= 0 && p[i] < M, "{}: rows[{}, {}] = {} is outside [0, N*k) = [0, {})", op,
             i / k, i % k, p[i], M);
    BK_CHECK(!seen[p[i]], "{}: rows[{}, {}] = {} repeats a row; rows must be a permutation of "
             "[0, N*k) (as moe_plan makes it)", op, i / k, i % k, p[i]);
    seen[p[i]] = 1;
  }
}

}  // namespace bk::cpu
