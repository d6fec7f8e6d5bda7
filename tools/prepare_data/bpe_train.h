// BPE training: learn merges from pre-token chunk counts.
//
// Each unique chunk is a "word" (its byte ids) with a count. Repeatedly the most frequent
// adjacent pair (counted over words x count, overlaps included, as in Sennrich et al.) becomes
// a new token; ties go to the lowest (left, right) ids, so training is deterministic. Pair
// counts are updated incrementally: only the words that contain the merged pair are rescanned
// (an index pair -> words finds them) and a lazy max-heap finds the next best pair. Training
// stops at vocab_size or when no pair occurs at least min_count times.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tools/prepare_data/tokenizer.h"

namespace bk::tok {

using ChunkCounts = std::unordered_map<std::string, uint64_t>;

// Adds the pre-token chunks of text (pretokenize.h) to counts.
void count_chunks(std::string_view text, ChunkCounts& counts);

struct TrainOptions {
  uint32_t vocab_size = 2048;  // 256 byte tokens + up to vocab_size - 256 merges
  uint64_t min_count = 2;      // a pair seen once is not worth a token
  // Called after each merge with (merges done, merges wanted).
  std::function<void(size_t, size_t)> progress;
};

std::vector<Merge> bpe_train(const ChunkCounts& counts, const TrainOptions& opt);

}  // namespace bk::tok
