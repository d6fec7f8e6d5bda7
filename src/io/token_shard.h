// Token shards: the pre-tokenized training data. One file = a 64-byte header + uint32 tokens.
//
//   offset  size  field
//        0     8  magic "BKTOKENS" (ASCII, no terminator)
//        8     4  u32 version      (1)
//       12     4  u32 vocab_size   (every token id is < vocab_size)
//       16     8  u64 num_tokens
//       24     4  u32 dtype code   (1 = uint32; the only one in version 1)
//       28    36  reserved, zero
//       64  4*n   num_tokens uint32 tokens
// All integers little-endian. docs/data.md is the full description.
//
// The writer streams tokens and patches num_tokens at close(); it writes PATH.tmp and renames,
// so a crash never leaves a half-written shard under the real name. The reader mmaps the file
// read-only and checks everything that is O(1) on open; validate() scans the tokens.
#pragma once
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>

namespace bk {

inline constexpr char kShardMagic[8] = {'B', 'K', 'T', 'O', 'K', 'E', 'N', 'S'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr uint32_t kShardDtypeU32 = 1;
inline constexpr size_t kShardHeaderBytes = 64;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t vocab_size = 0;
  uint64_t num_tokens = 0;
  uint32_t dtype = kShardDtypeU32;
};

// The 64 header bytes for h (explicit little-endian packing; no struct layout assumptions).
void encode_shard_header(const ShardHeader& h, unsigned char out[kShardHeaderBytes]);

class TokenShardWriter {
 public:
  TokenShardWriter(const std::string& path, uint32_t vocab_size);
  ~TokenShardWriter();  // without close(): removes the temp file (the shard was not finished)
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Appends tokens; each must be < vocab_size (a bad id is a tokenizer bug, caught here).
  void write(std::span<const uint32_t> tokens);
  // Patches the header, flushes, renames PATH.tmp -> PATH.
  void close();
  uint64_t num_tokens() const { return num_tokens_; }

 private:
  std::string path_, tmp_path_;
  std::FILE* f_ = nullptr;
  uint32_t vocab_size_;
  uint64_t num_tokens_ = 0;
};

// One call: writes a whole shard.
void write_token_shard(const std::string& path, uint32_t vocab_size,
                       std::span<const uint32_t> tokens);

// Read-only memory-mapped shard. Opening checks magic, version, dtype and that the file length
// is exactly 64 + 4 * num_tokens; every failure is a bk::Error naming the file and the problem.
class TokenShard {
 public:
  explicit TokenShard(const std::string& path);
  ~TokenShard();
  TokenShard(TokenShard&& o) noexcept;
  TokenShard& operator=(TokenShard&& o) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  uint32_t vocab_size() const { return header_.vocab_size; }
  uint64_t size() const { return header_.num_tokens; }
  const uint32_t* data() const { return tokens_; }
  std::span<const uint32_t> tokens() const { return {tokens_, size_t(header_.num_tokens)}; }
  uint32_t operator[](uint64_t i) const { return tokens_[i]; }

  // Scans all tokens; throws (naming the file and the first bad index) if one is >= vocab_size.
  void validate() const;

 private:
  void unmap();
  std::string path_;
  ShardHeader header_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint32_t* tokens_ = nullptr;
};

}  // namespace bk
