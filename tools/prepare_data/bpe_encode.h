// BPE encoding: text -> token ids with a trained Tokenizer.
//
// The text is pre-tokenized (pretokenize.h); inside each chunk the adjacent pair with the lowest
// merge rank is merged (all its occurrences, left to right) until no pair has a rank. That is
// the same as replaying the training merges in order, so encoding reproduces training's
// segmentation. Natural text repeats its chunks, so results are cached per chunk.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tools/prepare_data/tokenizer.h"

namespace bk::tok {

class BpeEncoder {
 public:
  explicit BpeEncoder(const Tokenizer& tokenizer);

  // Appends the tokens of text to out.
  void encode(std::string_view text, std::vector<uint32_t>& out);
  std::vector<uint32_t> encode(std::string_view text) {
    std::vector<uint32_t> out;
    encode(text, out);
    return out;
  }
  // One pre-token chunk, uncached.
  void encode_chunk(std::string_view chunk, std::vector<uint32_t>& out) const;

  size_t cache_size() const { return cache_.size(); }

 private:
  std::vector<Merge> merges_;
  std::unordered_map<uint64_t, uint32_t> rank_;  // pair_key(left, right) -> merge rank
  std::unordered_map<std::string, std::vector<uint32_t>> cache_;
  static constexpr size_t kMaxCacheEntries = 1 << 20;  // then start over (bounded memory)
};

}  // namespace bk::tok
