#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "io/token_shard.h"
#include "unit/io/io_test_util.h"

namespace fs = std::filesystem;
using bk::test::expect_error;

namespace {

std::vector<unsigned char> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void write_bytes(const fs::path& p, const std::vector<unsigned char>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
// A valid shard with tokens 0..n-1 and vocab 1000; returns its bytes.
std::vector<unsigned char> good_shard(const fs::path& p, uint32_t n = 100) {
  std::vector<uint32_t> t(n);
  std::iota(t.begin(), t.end(), 0u);
  bk::write_token_shard(p.string(), 1000, t);
  return read_bytes(p);
}

}  // namespace

TEST(TokenShard, RoundTripAndHeaderBytes) {
  const auto path = bk::test::scratch_dir() / "a.bin";
  std::vector<uint32_t> t = {5, 0, 4095, 17, 17, 1};
  {
    bk::TokenShardWriter w(path.string(), 4096);
    w.write(std::span(t).first(2));
    w.write(std::span(t).subspan(2));
    w.close();
  }
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  // The documented layout, byte by byte.
  auto b = read_bytes(path);
  ASSERT_EQ(b.size(), 64 + 4 * t.size());
  EXPECT_EQ(std::memcmp(b.data(), "BKTOKENS", 8), 0);
  EXPECT_EQ(b[8], 1); EXPECT_EQ(b[9] | b[10] | b[11], 0);            // version 1
  EXPECT_EQ(b[12] | (b[13] << 8), 4096); EXPECT_EQ(b[14] | b[15], 0);  // vocab 4096
  EXPECT_EQ(b[16], 6); for (int i = 17; i < 24; ++i) EXPECT_EQ(b[i], 0);  // 6 tokens
  EXPECT_EQ(b[24], 1);                                                 // dtype uint32
  for (int i = 25; i < 64; ++i) EXPECT_EQ(b[i], 0) << "reserved byte " << i;
  EXPECT_EQ(b[64 + 8], 0xFF); EXPECT_EQ(b[64 + 9], 0x0F);              // 4095 little-endian

  bk::TokenShard s(path.string());
  EXPECT_EQ(s.vocab_size(), 4096u);
  ASSERT_EQ(s.size(), t.size());
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(s[i], t[i]);
  s.validate();
  bk::TokenShard moved = std::move(s);
  EXPECT_EQ(moved[2], 4095u);
}

TEST(TokenShard, EmptyShardIsValid) {
  const auto path = bk::test::scratch_dir() / "empty.bin";
  bk::write_token_shard(path.string(), 300, {});
  bk::TokenShard s(path.string());
  EXPECT_EQ(s.size(), 0u);
  s.validate();
}

TEST(TokenShard, WriterRejectsOutOfVocabAndCleansUp) {
  const auto path = bk::test::scratch_dir() / "w.bin";
  std::vector<uint32_t> t = {1, 2, 300};
  expect_error([&] { bk::write_token_shard(path.string(), 300, t); }, {path.string(), "300"});
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
}

TEST(TokenShard, UnwritableDirectory) {
  const auto path = bk::test::scratch_dir() / "no" / "such" / "dir" / "x.bin";
  expect_error([&] { bk::TokenShardWriter w(path.string(), 10); }, {path.string(), "cannot create"});
}

TEST(TokenShard, Missing) {
  const auto path = bk::test::scratch_dir() / "missing.bin";
  expect_error([&] { bk::TokenShard s(path.string()); }, {path.string(), "cannot open"});
}

TEST(TokenShard, TruncatedHeader) {
  const auto path = bk::test::scratch_dir() / "t.bin";
  auto b = good_shard(path);
  b.resize(40);
  write_bytes(path, b);
  expect_error([&] { bk::TokenShard s(path.string()); }, {path.string(), "truncated"});
}

TEST(TokenShard, TruncatedTokens) {
  const auto path = bk::test::scratch_dir() / "t.bin";
  auto b = good_shard(path);
  b.resize(b.size() - 8);
  write_bytes(path, b);
  expect_error([&] { bk::TokenShard s(path.string()); }, {path.string(), "truncated", "100 tokens"});
}

TEST(TokenShard, TrailingBytesAreALengthMismatch) {
  const auto path = bk::test::scratch_dir() / "t.bin";
  auto b = good_shard(path);
  b.insert(b.end(), {0, 0, 0, 0});
  write_bytes(path, b);
  expect_error([&] { bk::TokenShard s(path.string()); }, {path.string(), "length mismatch"});
  b.push_back(0);  // not even a whole token
  write_bytes(path, b);
  expect_error([&] { bk::TokenShard s(path.string()); }, {path.string(), "truncated"});
}

TEST(TokenShard, HugeTokenCountDoesNotOverflow) {
  const auto path = bk::test::scratch_dir() / "t.bin";
  auto b = good_shard(path);
  for (int i = 16; i < 24; ++i) b[i] = 0xFF;
  write_bytes(path, b);
  expect_error([&] { bk::TokenShard s(path.string()); }, {path.string(), "truncated"});
}

TEST(TokenShard, BadMagic) {
  const auto path = bk::test::scratch_dir() / "m.bin";
  auto b = good_shard(path);
  b[0] = 'X';
  write_bytes(path, b);
  expect_error([&] { bk::TokenShard s(path.string()); }, {path.string(), "bad magic"});
}

TEST(TokenShard, NewerVersion) {
  const auto path = bk::test::scratch_dir() / "v.bin";
  auto b = good_shard(path);
  b[8] = 2;
  write_bytes(path, b);
  expect_error([&] { bk::TokenShard s(path.string()); }, {path.string(), "newer version", "version 2"});
}

TEST(TokenShard, UnknownDtype) {
  const auto path = bk::test::scratch_dir() / "d.bin";
  auto b = good_shard(path);
  b[24] = 7;
  write_bytes(path, b);
  expect_error([&] { bk::TokenShard s(path.string()); }, {path.string(), "dtype"});
}

TEST(TokenShard, ValidateFindsTokenOutsideVocab) {
  const auto path = bk::test::scratch_dir() / "o.bin";
  auto b = good_shard(path);
  // Token 37 := 1000 (== vocab_size).
  b[64 + 4 * 37] = 1000 & 0xFF;
  b[64 + 4 * 37 + 1] = 1000 >> 8;
  write_bytes(path, b);
  bk::TokenShard s(path.string());  // opening is O(1): it does not scan
  expect_error([&] { s.validate(); }, {path.string(), "index 37", "1000"});
}
