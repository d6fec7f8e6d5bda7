#include "io/data_loader.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace bk {

void to_json(nlohmann::json& j, const LoaderCursor& c) {
  j = nlohmann::json{{"epoch", c.epoch}, {"position", c.position}};
}
void from_json(const nlohmann::json& j, LoaderCursor& c) {
  c.epoch = j.at("epoch").get<uint64_t>();
  c.position = j.at("position").get<uint64_t>();
}

TokenLoader::TokenLoader(const std::string& shard_path, int seq_len, uint64_t seed, int dp_rank,
                         int dp_size)
    : shard_(shard_path), T_(seq_len), seed_(seed), dp_rank_(dp_rank), dp_size_(dp_size) {
  BK_CHECK(seq_len > 0, "data loader '{}': seq_len must be > 0, got {}", shard_path, seq_len);
  BK_CHECK(dp_size >= 1 && dp_rank >= 0 && dp_rank < dp_size,
           "data loader '{}': dp_rank {} is not in [0, dp_size {})", shard_path, dp_rank, dp_size);
  BK_CHECK(shard_.size() >= uint64_t(seq_len) + 1,
           "data loader '{}': the shard has {} tokens, fewer than seq_len + 1 = {}; use a shorter "
           "model.seq_len or more text",
           shard_path, shard_.size(), seq_len + 1);
  num_windows_ = (shard_.size() - 1) / uint64_t(seq_len);
}

const std::vector<uint64_t>& TokenLoader::order(uint64_t epoch) const {
  if (order_epoch_ != epoch) {
    order_.resize(num_windows_);
    std::iota(order_.begin(), order_.end(), uint64_t(0));
    // Fisher-Yates; j uniform in [0, i] by the multiply-high trick (no modulo bias to speak of).
    Rng rng(seed_, Rng::stream_of(fmt::format("data.order.epoch{}", epoch)));
    for (uint64_t i = num_windows_ - 1; i > 0; --i) {
      uint64_t j = uint64_t((unsigned __int128)rng.next_u64() * (i + 1) >> 64);
      std::swap(order_[i], order_[j]);
    }
    order_epoch_ = epoch;
  }
  return order_;
}

uint64_t TokenLoader::window_at(uint64_t epoch, uint64_t position) const {
  BK_CHECK(position < num_windows_, "data loader '{}': position {} is past the {} windows", path(),
           position, num_windows_);
  return order(epoch)[position];
}

void TokenLoader::set_cursor(LoaderCursor c) {
  BK_CHECK(c.position < num_windows_,
           "data loader '{}': cursor position {} is past the shard's {} windows of seq_len {} (a "
           "checkpoint from another data set or seq_len?)",
           path(), c.position, num_windows_, T_);
  cursor_ = c;
  current_.clear();
}

void TokenLoader::next_global_batch(int global_sequences) {
  BK_CHECK(global_sequences > 0 && global_sequences % dp_size_ == 0,
           "data loader '{}': global batch of {} sequences does not split over dp = {} ranks",
           path(), global_sequences, dp_size_);
  const int per_rank = global_sequences / dp_size_;
  const uint64_t first = uint64_t(dp_rank_) * per_rank;  // this rank's slice, in batch offsets
  current_.resize(per_rank);
  LoaderCursor c = cursor_;
  for (int s = 0; s < global_sequences; ++s) {
    if (uint64_t(s) >= first && uint64_t(s) < first + per_rank)
      current_[s - first] = order(c.epoch)[c.position];
    if (++c.position == num_windows_) c = {c.epoch + 1, 0};
  }
  cursor_ = c;
}

void TokenLoader::fill(uint64_t window, int32_t* inputs, int32_t* targets) const {
  const uint32_t* w = shard_.data() + window * uint64_t(T_);
  const uint32_t V = shard_.vocab_size();
  for (int t = 0; t < T_; ++t) {
    // Lazy validation: only the tokens we actually hand out are checked.
    BK_CHECK(w[t] < V && w[t + 1] < V,
             "token shard '{}': token >= vocab_size {} near index {} (corrupt shard; run "
             "TokenShard::validate or regenerate it with prepare_data)",
             path(), V, window * uint64_t(T_) + t);
    inputs[t] = int32_t(w[t]);
    targets[t] = int32_t(w[t + 1]);
  }
}

void TokenLoader::micro_batch(int i, int mbs, int32_t* inputs, int32_t* targets) const {
  BK_CHECK(!current_.empty(), "data loader '{}': micro_batch() before next_global_batch()", path());
  BK_CHECK(mbs > 0 && i >= 0 && uint64_t(i + 1) * mbs <= current_.size(),
           "data loader '{}': micro-batch {} of {} sequences is outside this rank's {} sequences "
           "of the global batch",
           path(), i, mbs, current_.size());
  for (int b = 0; b < mbs; ++b)
    fill(current_[size_t(i) * mbs + b], inputs + size_t(b) * T_, targets + size_t(b) * T_);
}

Batch TokenLoader::micro_batch(int i, int mbs) const {
  Batch out{std::vector<int32_t>(size_t(mbs) * T_), std::vector<int32_t>(size_t(mbs) * T_), mbs,
            T_};
  micro_batch(i, mbs, out.inputs.data(), out.targets.data());
  return out;
}

void TokenLoader::eval_batch(int index, int B, int32_t* inputs, int32_t* targets) const {
  BK_CHECK(B > 0 && index >= 0 && uint64_t(index) < num_eval_batches(B),
           "data loader '{}': eval batch {} of {} sequences is past the shard's {} windows ({} "
           "batches)",
           path(), index, B, num_windows_, num_eval_batches(B));
  for (int b = 0; b < B; ++b)
    fill(uint64_t(index) * B + b, inputs + size_t(b) * T_, targets + size_t(b) * T_);
}

Batch TokenLoader::eval_batch(int index, int B) const {
  Batch out{std::vector<int32_t>(size_t(B) * T_), std::vector<int32_t>(size_t(B) * T_), B, T_};
  eval_batch(index, B, out.inputs.data(), out.targets.data());
  return out;
}

}  // namespace bk
