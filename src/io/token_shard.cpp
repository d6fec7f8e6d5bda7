#include "io/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "core/error.h"

// Tokens are stored and mapped as native uint32: the format is little-endian, so is the host.
static_assert(std::endian::native == std::endian::little, "token shards assume a little-endian host");

namespace bk {
namespace {

void put_u32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = (unsigned char)(v >> (8 * i));
}
void put_u64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = (unsigned char)(v >> (8 * i));
}
uint32_t get_u32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(p[i]) << (8 * i);
  return v;
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

constexpr const char* kRegenerate = "regenerate it with prepare_data (see docs/data.md)";

}  // namespace

void encode_shard_header(const ShardHeader& h, unsigned char out[kShardHeaderBytes]) {
  std::memset(out, 0, kShardHeaderBytes);
  std::memcpy(out, kShardMagic, 8);
  put_u32(out + 8, h.version);
  put_u32(out + 12, h.vocab_size);
  put_u64(out + 16, h.num_tokens);
  put_u32(out + 24, h.dtype);
}

// ---- writer ---------------------------------------------------------------------------------

TokenShardWriter::TokenShardWriter(const std::string& path, uint32_t vocab_size)
    : path_(path), tmp_path_(path + ".tmp"), vocab_size_(vocab_size) {
  BK_CHECK(vocab_size > 0, "token shard '{}': vocab_size must be > 0", path);
  f_ = std::fopen(tmp_path_.c_str(), "wb");
  BK_CHECK(f_, "token shard '{}': cannot create '{}': {} (is the directory writable?)", path,
           tmp_path_, std::strerror(errno));
  unsigned char hdr[kShardHeaderBytes];
  encode_shard_header(ShardHeader{kShardVersion, vocab_size, 0, kShardDtypeU32}, hdr);
  BK_CHECK(std::fwrite(hdr, 1, sizeof hdr, f_) == sizeof hdr, "token shard '{}': write failed: {}",
           tmp_path_, std::strerror(errno));
}

TokenShardWriter::~TokenShardWriter() {
  if (f_) {
    std::fclose(f_);
    std::remove(tmp_path_.c_str());
  }
}

void TokenShardWriter::write(std::span<const uint32_t> tokens) {
  BK_CHECK(f_, "token shard '{}': write after close", path_);
  for (size_t i = 0; i < tokens.size(); ++i)
    BK_CHECK(tokens[i] < vocab_size_, "token shard '{}': token {} at index {} is >= vocab_size {}",
             path_, tokens[i], num_tokens_ + i, vocab_size_);
  size_t n = std::fwrite(tokens.data(), sizeof(uint32_t), tokens.size(), f_);
  BK_CHECK(n == tokens.size(), "token shard '{}': write failed (disk full?): {}", tmp_path_,
           std::strerror(errno));
  num_tokens_ += tokens.size();
}

void TokenShardWriter::close() {
  BK_CHECK(f_, "token shard '{}': closed twice", path_);
  unsigned char hdr[kShardHeaderBytes];
  encode_shard_header(ShardHeader{kShardVersion, vocab_size_, num_tokens_, kShardDtypeU32}, hdr);
  bool ok = std::fseek(f_, 0, SEEK_SET) == 0 && std::fwrite(hdr, 1, sizeof hdr, f_) == sizeof hdr;
  ok = (std::fclose(f_) == 0) && ok;
  f_ = nullptr;
  if (!ok) {
    std::remove(tmp_path_.c_str());
    BK_FAIL("token shard '{}': finishing '{}' failed: {}", path_, tmp_path_, std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(tmp_path_, path_, ec);
  BK_CHECK(!ec, "token shard '{}': rename from '{}' failed: {}", path_, tmp_path_, ec.message());
}

void write_token_shard(const std::string& path, uint32_t vocab_size,
                       std::span<const uint32_t> tokens) {
  TokenShardWriter w(path, vocab_size);
  w.write(tokens);
  w.close();
}

// ---- reader ---------------------------------------------------------------------------------

TokenShard::TokenShard(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  BK_CHECK(fd >= 0, "token shard '{}': cannot open: {} (check data.train / data.val paths)", path,
           std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    BK_FAIL("token shard '{}': cannot stat: {}", path, std::strerror(e));
  }
  const uint64_t file_bytes = uint64_t(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    BK_FAIL("token shard '{}': truncated: file has {} bytes, the header alone is {}; {}", path,
            file_bytes, kShardHeaderBytes, kRegenerate);
  }
  map_ = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    BK_FAIL("token shard '{}': mmap failed: {}", path, std::strerror(e));
  }
  map_bytes_ = file_bytes;

  // From here a failed check must unmap before throwing: wrap the checks.
  try {
    const auto* p = static_cast<const unsigned char*>(map_);
    BK_CHECK(std::memcmp(p, kShardMagic, 8) == 0,
             "token shard '{}': bad magic: the file does not start with \"BKTOKENS\", so it is not "
             "a Birkhoff token shard (wrong path?)",
             path);
    header_.version = get_u32(p + 8);
    header_.vocab_size = get_u32(p + 12);
    header_.num_tokens = get_u64(p + 16);
    header_.dtype = get_u32(p + 24);
    BK_CHECK(header_.version <= kShardVersion,
             "token shard '{}': written by a newer version of the format (version {}, this build "
             "reads up to {}); update birkhoff or {}",
             path, header_.version, kShardVersion, kRegenerate);
    BK_CHECK(header_.version >= 1, "token shard '{}': invalid version 0 in header; {}", path,
             kRegenerate);
    BK_CHECK(header_.dtype == kShardDtypeU32,
             "token shard '{}': unsupported dtype code {} (version 1 knows only 1 = uint32); {}",
             path, header_.dtype, kRegenerate);
    BK_CHECK(header_.vocab_size > 0, "token shard '{}': vocab_size is 0 in header; {}", path,
             kRegenerate);
    const uint64_t payload = file_bytes - kShardHeaderBytes;
    // Compare in token units so a garbage num_tokens cannot overflow 64 + 4 * n.
    BK_CHECK(payload % 4 == 0 && payload / 4 >= header_.num_tokens,
             "token shard '{}': truncated: header says {} tokens ({} bytes in all) but the file "
             "has {} bytes; {}",
             path, header_.num_tokens,
             header_.num_tokens <= (UINT64_MAX - 64) / 4 ? 64 + 4 * header_.num_tokens : 0,
             file_bytes, kRegenerate);
    BK_CHECK(payload / 4 == header_.num_tokens,
             "token shard '{}': length mismatch: header says {} tokens ({} bytes in all) but the "
             "file has {} bytes (trailing data); {}",
             path, header_.num_tokens, 64 + 4 * header_.num_tokens, file_bytes, kRegenerate);
  } catch (...) {
    unmap();
    throw;
  }
  tokens_ = reinterpret_cast<const uint32_t*>(static_cast<const unsigned char*>(map_) +
                                              kShardHeaderBytes);
}

void TokenShard::unmap() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  tokens_ = nullptr;
}

TokenShard::~TokenShard() { unmap(); }

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)), header_(o.header_), map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)), tokens_(std::exchange(o.tokens_, nullptr)) {}

TokenShard& TokenShard::operator=(TokenShard&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    header_ = o.header_;
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    tokens_ = std::exchange(o.tokens_, nullptr);
  }
  return *this;
}

void TokenShard::validate() const {
  const uint32_t v = header_.vocab_size;
  for (uint64_t i = 0; i < header_.num_tokens; ++i)
    BK_CHECK(tokens_[i] < v,
             "token shard '{}': token {} at index {} is >= vocab_size {} (corrupt file, or a "
             "tokenizer/header mismatch); {}",
             path_, tokens_[i], i, v, kRegenerate);
}

}  // namespace bk
