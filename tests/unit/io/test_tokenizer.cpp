#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/token_shard.h"
#include "tools/prepare_data/bpe_encode.h"
#include "tools/prepare_data/bpe_train.h"
#include "tools/prepare_data/pretokenize.h"
#include "tools/prepare_data/text_split.h"
#include "tools/prepare_data/tokenizer.h"
#include "unit/io/io_test_util.h"

namespace fs = std::filesystem;
using namespace bk::tok;

namespace {

std::vector<std::string> chunks(std::string_view text) {
  std::vector<std::string> out;
  pretokenize(text, [&](std::string_view c) { out.emplace_back(c); });
  return out;
}

std::vector<Merge> train_on(std::string_view text, uint32_t vocab) {
  ChunkCounts counts;
  count_chunks(text, counts);
  TrainOptions opt;
  opt.vocab_size = vocab;
  return bpe_train(counts, opt);
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Unicode (2-, 3- and 4-byte UTF-8), digits, punctuation, runs of spaces and newlines.
const std::string kMixed =
    "In the beginning, 1611 A.D., God created   the heaven and the earth.\n\n"
    "Café naïve façade — “quoted” — 東京 and 🙂🙂 emoji; numbers 3.14159 and 42!!\n"
    "\tTabbed line   with trailing spaces   \n"
    "the the the theatre thereof 12345 123 45\n";

}  // namespace

TEST(PreTokenize, Rule) {
  EXPECT_EQ(chunks("Hello world"), (std::vector<std::string>{"Hello", " world"}));
  EXPECT_EQ(chunks("a  b"), (std::vector<std::string>{"a", " ", " b"}));
  EXPECT_EQ(chunks("end.\nAnd 12 3"),
            (std::vector<std::string>{"end", ".", "\n", "And", " 12", " 3"}));
  EXPECT_EQ(chunks("x\n\n  y"), (std::vector<std::string>{"x", "\n\n ", " y"}));
  EXPECT_EQ(chunks("brother's house:"),
            (std::vector<std::string>{"brother", "'", "s", " house", ":"}));
  EXPECT_EQ(chunks("a ...b12c"), (std::vector<std::string>{"a", " ...", "b", "12", "c"}));
  EXPECT_EQ(chunks("tail  \n"), (std::vector<std::string>{"tail", "  \n"}));
  EXPECT_EQ(chunks("tail "), (std::vector<std::string>{"tail", " "}));
  EXPECT_EQ(chunks(" Café"), (std::vector<std::string>{" Café"})) << "bytes >= 0x80 are letters";
  // Long runs are cut at kMaxChunkBytes.
  auto c = chunks(std::string(300, 'z'));
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].size(), kMaxChunkBytes);
  EXPECT_EQ(c[2].size(), 300 - 2 * kMaxChunkBytes);
  // The chunks always concatenate back to the input.
  std::string joined;
  for (auto& s : chunks(kMixed)) joined += s;
  EXPECT_EQ(joined, kMixed);
}

TEST(BpeTrain, ClassicExample) {
  // "aaabdaaabac" is one chunk. Pair counts: aa 4, ab 2, ... -> Z = aa (256).
  // Then "Z a b d Z a b a c": (Z,a) 2 and (a,b) 2 tie; the lower pair (97,98) wins -> Y = ab (257).
  // Then "Z Y d Z Y a c": (Z,Y) 2 -> X = ZY (258). Every pair left occurs once: stop.
  // That is Wikipedia's Z=aa, Y=ab, X=ZY.
  auto merges = train_on("aaabdaaabac", 1000);
  EXPECT_EQ(merges, (std::vector<Merge>{{'a', 'a'}, {'a', 'b'}, {256, 257}}));
  Tokenizer tok(merges);
  EXPECT_EQ(tok.token_bytes(258), "aaab");
  BpeEncoder enc(tok);
  EXPECT_EQ(enc.encode("aaabdaaabac"), (std::vector<uint32_t>{258, 'd', 258, 'a', 'c'}));
}

TEST(BpeTrain, MergesNeverCrossChunks) {
  // Chunks: "ab" x1, " ab" x2. (a,b) 3 -> 256; then (' ', 256) 2 -> 257. Without chunking,
  // (b, ' ') would have count 2 as well.
  auto merges = train_on("ab ab ab", 1000);
  EXPECT_EQ(merges, (std::vector<Merge>{{'a', 'b'}, {' ', 256}}));
}

TEST(BpeTrain, StopsAtVocabSize) {
  auto merges = train_on("aaabdaaabac", 257);
  EXPECT_EQ(merges, (std::vector<Merge>{{'a', 'a'}}));
  EXPECT_THROW(train_on("abc", 256), bk::Error);
}

TEST(BpeTrain, DeterministicAndEncodeMatchesTraining) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += kMixed;
  auto m1 = train_on(text, 400), m2 = train_on(text, 400);
  EXPECT_EQ(m1, m2);
  EXPECT_GT(m1.size(), 50u);
  Tokenizer tok(m1);
  BpeEncoder enc(tok);
  EXPECT_EQ(enc.encode(" the").size(), 1u) << "a frequent word is one token";
  // The encoder (lowest rank first) equals replaying every merge in rank order, which is what
  // training did to each chunk.
  pretokenize(text, [&](std::string_view chunk) {
    std::vector<uint32_t> replay(chunk.begin(), chunk.end());
    for (auto& id : replay) id &= 0xFF;
    for (uint32_t r = 0; r < m1.size(); ++r) {
      std::vector<uint32_t> next;
      for (size_t i = 0; i < replay.size(); ++i) {
        if (i + 1 < replay.size() && replay[i] == m1[r].left && replay[i + 1] == m1[r].right) {
          next.push_back(256 + r);
          ++i;
        } else {
          next.push_back(replay[i]);
        }
      }
      replay = std::move(next);
    }
    std::vector<uint32_t> got;
    enc.encode_chunk(chunk, got);
    EXPECT_EQ(got, replay) << "chunk " << printable(std::string(chunk));
  });
}

TEST(BpeTrain, IncrementalCountsMatchNaiveRecount) {
  // Reference: recount every pair from scratch before each merge.
  std::string text;
  for (int i = 0; i < 3; ++i) text += kMixed;
  ChunkCounts counts;
  count_chunks(text, counts);
  std::vector<std::pair<std::vector<uint32_t>, int64_t>> words;
  for (auto& [c, n] : counts) words.push_back({std::vector<uint32_t>(c.begin(), c.end()), int64_t(n)});
  for (auto& w : words) for (auto& id : w.first) id &= 0xFF;
  std::vector<Merge> naive;
  for (uint32_t next = 256; next < 420; ++next) {
    std::map<uint64_t, int64_t> pc;
    for (auto& [w, n] : words)
      for (size_t i = 0; i + 1 < w.size(); ++i) pc[pair_key(w[i], w[i + 1])] += n;
    uint64_t best = 0;
    int64_t bc = 0;
    for (auto& [k, c] : pc) if (c > bc) best = k, bc = c;  // map order: lowest key wins ties
    if (bc < 2) break;
    const uint32_t a = uint32_t(best >> 32), b = uint32_t(best);
    naive.push_back({a, b});
    for (auto& [w, n] : words) {
      std::vector<uint32_t> o;
      for (size_t i = 0; i < w.size(); ++i) {
        if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) o.push_back(next), ++i;
        else o.push_back(w[i]);
      }
      w = std::move(o);
    }
  }
  EXPECT_GT(naive.size(), 100u);
  EXPECT_EQ(train_on(text, 420), naive);
}

TEST(BpeEncode, RoundTripsExactly) {
  std::string text;
  for (int i = 0; i < 10; ++i) text += kMixed;
  Tokenizer tok(train_on(text, 350));
  BpeEncoder enc(tok);
  auto ids = enc.encode(kMixed);
  EXPECT_LT(ids.size(), kMixed.size()) << "merges compress";
  EXPECT_EQ(tok.decode(ids), kMixed);
  // Text never seen in training, including bytes that are not valid UTF-8 and NULs.
  std::string odd = "Zebra 9876543210 ";
  odd += std::string("\0\xff\xfe\x80 tail", 10);
  for (int b = 0; b < 256; ++b) odd += char(b);
  EXPECT_EQ(tok.decode(enc.encode(odd)), odd);
  // Encoding is independent of the cache state.
  BpeEncoder fresh(tok);
  EXPECT_EQ(fresh.encode(kMixed), ids);
}

TEST(Tokenizer, JsonRoundTripAndErrors) {
  const auto dir = bk::test::scratch_dir();
  Tokenizer tok(train_on(kMixed + kMixed, 300));
  tok.save_json((dir / "tokenizer.json").string());
  auto back = Tokenizer::load_json((dir / "tokenizer.json").string());
  EXPECT_EQ(back.merges(), tok.merges());
  EXPECT_EQ(back.vocab_size(), tok.vocab_size());
  bk::test::expect_error([&] { Tokenizer::load_json((dir / "nope.json").string()); },
                         {"nope.json", "cannot open"});
  std::ofstream(dir / "bad.json") << R"({"format": "birkhoff-bpe", "version": 1})";
  bk::test::expect_error([&] { Tokenizer::load_json((dir / "bad.json").string()); },
                         {"bad.json", "malformed"});
  EXPECT_THROW(Tokenizer({{256, 1}}), bk::Error) << "a merge may only use earlier tokens";
}

TEST(Tokenizer, PythonDecoderRoundTrips) {
  if (std::system("python3 -c pass > /dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const auto dir = bk::test::scratch_dir();
  Tokenizer tok(train_on(kMixed + kMixed + kMixed, 320));
  tok.save_json((dir / "tokenizer.json").string());
  BpeEncoder enc(tok);
  const auto ids = enc.encode(kMixed);
  bk::write_token_shard((dir / "x.bin").string(), tok.vocab_size(), ids);
  const std::string script = std::string(BK_SOURCE_DIR) + "/tools/tokenizer_decode.py";
  const std::string cmd = "python3 " + script + " " + (dir / "tokenizer.json").string() +
                          " --shard " + (dir / "x.bin").string() + " > " +
                          (dir / "decoded.txt").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  EXPECT_EQ(slurp(dir / "decoded.txt"), kMixed);
  // Python's re with the documented regex reproduces the C++ pre-tokenizer.
  std::ofstream(dir / "text.txt", std::ios::binary) << kMixed;
  const std::string cmd2 = "python3 " + script + " " + (dir / "tokenizer.json").string() +
                           " --pretokenize " + (dir / "text.txt").string() + " > " +
                           (dir / "chunks.txt").string();
  ASSERT_EQ(std::system(cmd2.c_str()), 0) << cmd2;
  std::string want;
  for (auto& c : chunks(kMixed)) want += std::to_string(c.size()) + "\n";
  EXPECT_EQ(slurp(dir / "chunks.txt"), want);
}

TEST(TextSplit, EvenlySpacedWholeLinePieces) {
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "line number " + std::to_string(i) + " of the text\n";
  auto pieces = split_train_val(text, 0.05, 1234);
  size_t pos = 0, val_bytes = 0, nval = 0;
  for (const auto& p : pieces) {
    EXPECT_EQ(p.begin, pos) << "contiguous";
    EXPECT_EQ(text[p.end - 1], '\n') << "whole lines";
    pos = p.end;
    if (p.val) val_bytes += p.end - p.begin, ++nval;
  }
  EXPECT_EQ(pos, text.size());
  EXPECT_GE(nval, 3u);
  EXPECT_NEAR(double(val_bytes) / double(text.size()), 0.05, 0.01);
  EXPECT_TRUE(std::any_of(pieces.begin(), pieces.begin() + pieces.size() / 2,
                          [](auto& p) { return p.val; }))
      << "validation is spread over the text, not just its tail";
  // Deterministic; the seed moves the validation pieces.
  auto again = split_train_val(text, 0.05, 1234), other = split_train_val(text, 0.05, 99);
  auto flags = [](auto& ps) { std::vector<bool> f; for (auto& p : ps) f.push_back(p.val); return f; };
  EXPECT_EQ(flags(pieces), flags(again));
  EXPECT_NE(flags(pieces), flags(other));
  // No validation at fraction 0.
  for (auto& p : split_train_val(text, 0.0, 1)) EXPECT_FALSE(p.val);
}
