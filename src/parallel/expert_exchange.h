// Expert parallelism (DESIGN.md §4): the routed experts of a MoE layer are split across the ep
// group in contiguous ranges (rank j owns experts [j*E/P, (j+1)*E/P)). Every rank routes its own
// tokens and groups the (token, slot) rows by global expert id (moe_plan); an ExpertExchange
// then moves each row to the rank owning its expert and brings the results back:
//
//   dispatch: rows grouped by global expert, on the token's rank  ->  rows of the local experts,
//             expert-major, source rank order inside an expert (token order inside a source);
//   combine:  the inverse permutation, back to the source ranks.
//
// Both are all_to_all_v plus one local permutation (moe_permute with k = 1). The backward uses
// the same object: the output gradient goes out by dispatch, the input gradient back by combine.
// With one rank both are copies and the local layout is the plan's own.
#pragma once
#include <cstdint>
#include <vector>

#include "core/buffer.h"
#include "parallel/communicator.h"

namespace bk {

// The experts this rank owns.
struct ExpertRange {
  int64_t first = 0, count = 0;
};
// Checks that ep divides num_experts (bk::Error naming model.moe.routed_experts otherwise).
ExpertRange owned_experts(int64_t num_experts, int ep_rank, int ep_size);

class ExpertExchange {
 public:
  ExpertExchange() = default;
  // Collective over ep: `offsets` [E+1] are this rank's moe_plan offsets (rows of expert e are
  // [offsets[e], offsets[e+1])). Learns how many rows every rank sends to every local expert.
  // device: where the rows live (the regrouping index goes there).
  ExpertExchange(Communicator& ep, int64_t num_experts, const int32_t* offsets, Device device = Device::cpu);

  int64_t local_rows() const { return local_rows_; }
  // Rows of local expert i (0-based among the owned ones) in the local layout.
  int64_t local_begin(int i) const { return local_offsets_[size_t(i)]; }
  int64_t local_end(int i) const { return local_offsets_[size_t(i) + 1]; }
  // Tokens sent to / received from each rank (for the load statistics and tests).
  const std::vector<int64_t>& send_rows() const { return send_rows_; }
  const std::vector<int64_t>& recv_rows() const { return recv_rows_; }

  // perm [N*k, C] (this rank's rows, grouped by global expert) -> local [local_rows, C].
  void dispatch(Tensor local, Tensor perm) const;
  // local [local_rows, C] -> perm [N*k, C]: each row back where dispatch took it from.
  void combine(Tensor perm, Tensor local) const;

 private:
  Communicator* ep_ = nullptr;
  std::vector<int64_t> send_rows_, recv_rows_;
  std::vector<int64_t> local_offsets_;
  int64_t local_rows_ = 0;
  Buffer regroup_;  // i32 [local_rows, 1]: received row r goes to local row regroup_[r]
};

}  // namespace bk
