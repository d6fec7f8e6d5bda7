// Tokenizer: a byte-level BPE vocabulary. Tokens 0..255 are the single bytes; merge r (rank
// order, 0-based) creates token 256 + r whose bytes are bytes(left) + bytes(right). That list
// of merges is the whole model: decode concatenates token bytes, encode (bpe_encode.h) applies
// merges in rank order inside each pre-token chunk (pretokenize.h).
//
// tokenizer.json (schema in docs/data.md):
//   {"format": "birkhoff-bpe", "version": 1, "vocab_size": V, "num_byte_tokens": 256,
//    "pre_tokenizer": {"name", "regex", "max_chunk_bytes", "description"},
//    "merges": [[left, right], ...]}      // V - 256 pairs, rank order
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace bk::tok {

struct Merge {
  uint32_t left, right;
  bool operator==(const Merge&) const = default;
};

// Pair (a, b) as one 64-bit key; ordering keys orders pairs by (a, b) (used for tie-breaks).
inline uint64_t pair_key(uint32_t a, uint32_t b) { return (uint64_t(a) << 32) | b; }

class Tokenizer {
 public:
  explicit Tokenizer(std::vector<Merge> merges);  // checks each merge refers to earlier tokens

  uint32_t vocab_size() const { return uint32_t(bytes_.size()); }
  const std::vector<Merge>& merges() const { return merges_; }
  const std::string& token_bytes(uint32_t id) const { return bytes_.at(id); }

  // Exact inverse of encoding: the concatenated bytes (not necessarily valid UTF-8 for an
  // arbitrary slice; the whole encoded text always decodes back to itself).
  std::string decode(std::span<const uint32_t> ids) const;

  void save_json(const std::string& path) const;
  static Tokenizer load_json(const std::string& path);

 private:
  std::vector<Merge> merges_;
  std::vector<std::string> bytes_;
};

// A token's bytes for humans, quoted, with C escapes for non-printables: " the", "\n\n".
std::string printable(const std::string& bytes);

}  // namespace bk::tok
