#include "tools/prepare_data/bpe_encode.h"

#include "tools/prepare_data/pretokenize.h"

namespace bk::tok {

BpeEncoder::BpeEncoder(const Tokenizer& tokenizer) : merges_(tokenizer.merges()) {
  rank_.reserve(merges_.size());
  for (uint32_t r = 0; r < merges_.size(); ++r)
    rank_.emplace(pair_key(merges_[r].left, merges_[r].right), r);
}

void BpeEncoder::encode_chunk(std::string_view chunk, std::vector<uint32_t>& out) const {
  std::vector<uint32_t> ids(chunk.begin(), chunk.end());
  for (auto& id : ids) id &= 0xFF;
  // Chunks are at most kMaxChunkBytes long, so the quadratic scan is cheap.
  while (ids.size() >= 2) {
    uint32_t best = UINT32_MAX;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      auto it = rank_.find(pair_key(ids[i], ids[i + 1]));
      if (it != rank_.end() && it->second < best) best = it->second;
    }
    if (best == UINT32_MAX) break;
    // Merge every occurrence of that pair into the token it made, 256 + rank.
    const Merge m = merges_[best];
    const uint32_t c = 256 + best;
    size_t o = 0;
    for (size_t i = 0; i < ids.size();) {
      if (i + 1 < ids.size() && ids[i] == m.left && ids[i + 1] == m.right) {
        ids[o++] = c;
        i += 2;
      } else {
        ids[o++] = ids[i++];
      }
    }
    ids.resize(o);
  }
  out.insert(out.end(), ids.begin(), ids.end());
}

void BpeEncoder::encode(std::string_view text, std::vector<uint32_t>& out) {
  pretokenize(text, [&](std::string_view chunk) {
    auto it = cache_.find(std::string(chunk));
    if (it == cache_.end()) {
      if (cache_.size() >= kMaxCacheEntries) cache_.clear();
      std::vector<uint32_t> ids;
      encode_chunk(chunk, ids);
      it = cache_.emplace(std::string(chunk), std::move(ids)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
  });
}

}  // namespace bk::tok
