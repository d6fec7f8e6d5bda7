#include "parallel/expert_exchange.h"

#include "kernels/ops.h"

namespace bk {

ExpertRange owned_experts(int64_t num_experts, int ep_rank, int ep_size) {
  BK_CHECK(ep_size >= 1 && num_experts % ep_size == 0,
           "model.moe.routed_experts = {} cannot be split evenly over parallel.ep = {} ranks; choose an ep "
           "that divides the number of routed experts", num_experts, ep_size);
  const int64_t per = num_experts / ep_size;
  return {per * ep_rank, per};
}

ExpertExchange::ExpertExchange(Communicator& ep, int64_t num_experts, const int32_t* offsets, Device device)
    : ep_(&ep) {
  const int P = ep.size();
  const int64_t per = owned_experts(num_experts, ep.rank(), P).count;

  // counts_out[e] = rows this rank sends for global expert e, laid out by destination rank
  // (the experts of rank j are contiguous), so one all_to_all_v of `per` counts per rank
  // tells each owner what every source sends to each of its experts.
  Buffer counts_out({num_experts}, DType::i32), counts_in({P * per}, DType::i32);
  int32_t* co = counts_out.ptr<int32_t>();
  for (int64_t e = 0; e < num_experts; ++e) co[e] = offsets[e + 1] - offsets[e];
  ep.all_to_all_v(counts_in, std::vector<int64_t>(size_t(P), per), counts_out,
                  std::vector<int64_t>(size_t(P), per));
  const int32_t* ci = counts_in.ptr<int32_t>();  // ci[s * per + i]: rows from rank s for local expert i

  send_rows_.assign(size_t(P), 0);
  recv_rows_.assign(size_t(P), 0);
  for (int j = 0; j < P; ++j) send_rows_[j] = offsets[(j + 1) * per] - offsets[j * per];
  local_offsets_.assign(size_t(per) + 1, 0);
  for (int64_t i = 0; i < per; ++i) {
    int64_t n = 0;
    for (int s = 0; s < P; ++s) n += ci[s * per + i];
    local_offsets_[i + 1] = local_offsets_[i] + n;
  }
  for (int s = 0; s < P; ++s)
    for (int64_t i = 0; i < per; ++i) recv_rows_[s] += ci[s * per + i];
  local_rows_ = local_offsets_[per];

  if (P == 1) return;  // dispatch and combine are copies: no regrouping
  // Received rows arrive source-major (rank s's rows for local experts 0..per-1, each in the
  // sender's token order); the local layout is expert-major with sources in rank order.
  Buffer regroup({local_rows_, 1}, DType::i32);
  int32_t* rg = regroup.ptr<int32_t>();
  std::vector<int64_t> next(local_offsets_.begin(), local_offsets_.end() - 1);
  int64_t r = 0;
  for (int s = 0; s < P; ++s)
    for (int64_t i = 0; i < per; ++i)
      for (int32_t c = 0; c < ci[s * per + i]; ++c) rg[r++] = int32_t(next[i]++);
  regroup_ = regroup.to_device(device);
}

void ExpertExchange::dispatch(Tensor local, Tensor perm) const {
  BK_CHECK(local.size(0) == local_rows_, "ExpertExchange::dispatch: local tensor has {} rows, the plan {}",
           local.size(0), local_rows_);
  if (ep_->size() == 1) return ops::copy(local, perm);
  Buffer recv(local.shape, local.dtype, local.device);
  ep_->all_to_all_v(recv, recv_rows_, perm, send_rows_);
  ops::moe_permute(local, recv, regroup_);
}

void ExpertExchange::combine(Tensor perm, Tensor local) const {
  BK_CHECK(local.size(0) == local_rows_, "ExpertExchange::combine: local tensor has {} rows, the plan {}",
           local.size(0), local_rows_);
  if (ep_->size() == 1) return ops::copy(perm, local);
  Buffer back(local.shape, local.dtype, local.device);
  ops::moe_permute_backward(back, local, regroup_);
  ep_->all_to_all_v(perm, send_rows_, back, recv_rows_);
}

}  // namespace bk
