// TokenLoader: training batches from a memory-mapped token shard, in a deterministic,
// resumable, data-parallel-sliceable order.
//
// Windows. A shard of N tokens is cut into W = floor((N - 1) / T) windows of T + 1 tokens with
// stride T: window w is tokens [w*T, w*T + T]. Its first T tokens are a sequence's inputs, its
// last T the targets (inputs shifted by one).
//
// Order. Epoch e visits all W windows once, in a Fisher-Yates permutation drawn from
// bk::Rng(seed, stream_of("data.order.epoch<e>")). The cursor {epoch, position} names the next
// window of that order to read; reading past the end of an epoch carries into the next one (a
// global batch may straddle two epochs). The order depends only on (shard, T, seed), never on
// the parallel layout, so a checkpointed cursor resumes under any dp size.
//
// Data parallelism. A global batch is the next G windows of the order. Rank r of d takes
// sequences [r*G/d, (r+1)*G/d) of it; every rank advances the cursor by G.
//
// A training step:   loader.next_global_batch(G);
//                    for (int m = 0; m < M; ++m) loader.micro_batch(m, mbs, ...);
// and the checkpoint saves loader.cursor() (which already points past the step's batch).
//
// Validation: eval_batch(i, B) reads windows [i*B, (i+1)*B) in shard order, unshuffled.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "io/token_shard.h"

namespace bk {

struct LoaderCursor {
  uint64_t epoch = 0;     // epochs completed
  uint64_t position = 0;  // windows of this epoch's order already consumed
  bool operator==(const LoaderCursor&) const = default;
};
// For state.json: {"epoch": e, "position": p}.
void to_json(nlohmann::json& j, const LoaderCursor& c);
void from_json(const nlohmann::json& j, LoaderCursor& c);

struct Batch {
  std::vector<int32_t> inputs;   // [B * T], row-major (sequence b at b*T)
  std::vector<int32_t> targets;  // [B * T], targets[b*T + t] = token after inputs[b*T + t]
  int B = 0, T = 0;
};

class TokenLoader {
 public:
  TokenLoader(const std::string& shard_path, int seq_len, uint64_t seed, int dp_rank = 0,
              int dp_size = 1);

  // Takes the next `global_sequences` windows of the order as the current global batch and
  // moves the cursor past them. global_sequences must be a multiple of dp_size.
  void next_global_batch(int global_sequences);

  // This rank's micro-batch i (sequences [i*mbs, (i+1)*mbs) of this rank's slice of the
  // current global batch). The pointer form fills caller buffers of mbs*T int32 each.
  Batch micro_batch(int i, int micro_batch_size) const;
  void micro_batch(int i, int micro_batch_size, int32_t* inputs, int32_t* targets) const;

  // Validation batches: windows [index*B, (index+1)*B) in shard order (no shuffle, no dp split).
  Batch eval_batch(int index, int B) const;
  void eval_batch(int index, int B, int32_t* inputs, int32_t* targets) const;
  uint64_t num_eval_batches(int B) const { return num_windows_ / uint64_t(B); }

  LoaderCursor cursor() const { return cursor_; }
  void set_cursor(LoaderCursor c);  // drops the current global batch

  uint32_t vocab_size() const { return shard_.vocab_size(); }
  uint64_t num_tokens() const { return shard_.size(); }
  uint64_t num_windows() const { return num_windows_; }
  int seq_len() const { return T_; }
  const std::string& path() const { return shard_.path(); }

  // The window visited at `position` of epoch `epoch`'s order (exposed for tests and tools).
  uint64_t window_at(uint64_t epoch, uint64_t position) const;

 private:
  const std::vector<uint64_t>& order(uint64_t epoch) const;
  void fill(uint64_t window, int32_t* inputs, int32_t* targets) const;

  TokenShard shard_;
  int T_;
  uint64_t seed_;
  int dp_rank_, dp_size_;
  uint64_t num_windows_;
  LoaderCursor cursor_;
  std::vector<uint64_t> current_;  // this rank's windows of the current global batch
  // One cached permutation (an epoch is long; a batch straddles at most a boundary at a time).
  mutable uint64_t order_epoch_ = UINT64_MAX;
  mutable std::vector<uint64_t> order_;
};

}  // namespace bk
