#include "tools/prepare_data/bpe_train.h"

#include <algorithm>
#include <queue>

#include "core/error.h"
#include "tools/prepare_data/pretokenize.h"

namespace bk::tok {

void count_chunks(std::string_view text, ChunkCounts& counts) {
  pretokenize(text, [&](std::string_view c) { ++counts[std::string(c)]; });
}

namespace {

// Words and their pair statistics while training.
struct State {
  std::vector<std::vector<uint32_t>> words;
  std::vector<int64_t> freq;
  std::unordered_map<uint64_t, int64_t> pair_count;
  // Words that contain (or once contained) a pair; stale entries are skipped on use.
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;
  // Max-heap of (count, ~key): highest count first, then the lowest key. Entries go stale when
  // a count changes; a popped entry is used only if it matches the current count.
  std::priority_queue<std::pair<int64_t, uint64_t>> heap;
};

void add_pairs(const std::vector<uint32_t>& w, int64_t f,
               std::unordered_map<uint64_t, int64_t>& delta) {
  for (size_t i = 0; i + 1 < w.size(); ++i) delta[pair_key(w[i], w[i + 1])] += f;
}

// Replaces each (a, b) left to right with c; returns whether any was found.
bool merge_word(std::vector<uint32_t>& w, uint32_t a, uint32_t b, uint32_t c) {
  size_t out = 0;
  bool found = false;
  for (size_t i = 0; i < w.size();) {
    if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
      w[out++] = c;
      i += 2;
      found = true;
    } else {
      w[out++] = w[i++];
    }
  }
  w.resize(out);
  return found;
}

}  // namespace

std::vector<Merge> bpe_train(const ChunkCounts& counts, const TrainOptions& opt) {
  BK_CHECK(opt.vocab_size >= 257, "bpe_train: vocab_size {} must be at least 257", opt.vocab_size);
  const size_t wanted = opt.vocab_size - 256;

  // Words in sorted chunk order, so everything below is independent of hash-map order.
  std::vector<const std::pair<const std::string, uint64_t>*> sorted;
  sorted.reserve(counts.size());
  for (const auto& kv : counts) sorted.push_back(&kv);
  std::sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->first < y->first; });

  State s;
  for (auto* kv : sorted) {
    if (kv->first.size() < 2) continue;  // a single byte has no pair to merge
    s.words.emplace_back(kv->first.begin(), kv->first.end());
    for (auto& id : s.words.back()) id &= 0xFF;  // char -> byte id
    s.freq.push_back(int64_t(kv->second));
  }
  for (uint32_t wi = 0; wi < s.words.size(); ++wi) {
    const auto& w = s.words[wi];
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      const uint64_t k = pair_key(w[i], w[i + 1]);
      s.pair_count[k] += s.freq[wi];
      auto& ws = s.where[k];
      if (ws.empty() || ws.back() != wi) ws.push_back(wi);
    }
  }
  for (const auto& [k, c] : s.pair_count) s.heap.push({c, ~k});

  std::vector<Merge> merges;
  std::unordered_map<uint64_t, int64_t> delta;
  while (merges.size() < wanted) {
    // Best live pair.
    uint64_t key = 0;
    int64_t best = 0;
    while (!s.heap.empty()) {
      auto [c, nk] = s.heap.top();
      s.heap.pop();
      auto it = s.pair_count.find(~nk);
      if (it != s.pair_count.end() && it->second == c) {
        key = ~nk;
        best = c;
        break;
      }
    }
    if (best < int64_t(std::max<uint64_t>(opt.min_count, 1))) break;

    const uint32_t a = uint32_t(key >> 32), b = uint32_t(key), c = uint32_t(256 + merges.size());
    merges.push_back({a, b});

    // Rescan only the words that may contain (a, b): remove their old pairs, merge, add back.
    std::vector<uint32_t> ws = std::move(s.where[key]);
    s.where.erase(key);
    delta.clear();
    for (uint32_t wi : ws) {
      auto& w = s.words[wi];
      std::vector<uint32_t> before = w;
      if (!merge_word(w, a, b, c)) continue;  // stale index entry
      add_pairs(before, -s.freq[wi], delta);
      add_pairs(w, s.freq[wi], delta);
      for (size_t i = 0; i + 1 < w.size(); ++i) {
        if (w[i] != c && w[i + 1] != c) continue;  // only pairs with c are new to this word
        auto& list = s.where[pair_key(w[i], w[i + 1])];
        if (list.empty() || list.back() != wi) list.push_back(wi);
      }
    }
    for (const auto& [k, d] : delta) {
      if (d == 0) continue;
      int64_t& pc = s.pair_count[k];
      pc += d;
      if (pc == 0) {
        s.pair_count.erase(k);
      } else {
        s.heap.push({pc, ~k});
      }
    }
    if (opt.progress) opt.progress(merges.size(), wanted);
  }
  return merges;
}

}  // namespace bk::tok
