#include "tools/prepare_data/tokenizer.h"

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tools/prepare_data/pretokenize.h"

namespace bk::tok {

Tokenizer::Tokenizer(std::vector<Merge> merges) : merges_(std::move(merges)) {
  bytes_.reserve(256 + merges_.size());
  for (int b = 0; b < 256; ++b) bytes_.push_back(std::string(1, char(b)));
  for (size_t r = 0; r < merges_.size(); ++r) {
    const Merge m = merges_[r];
    BK_CHECK(m.left < bytes_.size() && m.right < bytes_.size(),
             "tokenizer: merge {} = ({}, {}) refers to a token not yet defined (only {} exist)", r,
             m.left, m.right, bytes_.size());
    bytes_.push_back(bytes_[m.left] + bytes_[m.right]);
  }
}

std::string Tokenizer::decode(std::span<const uint32_t> ids) const {
  std::string out;
  for (uint32_t id : ids) {
    BK_CHECK(id < bytes_.size(), "tokenizer: cannot decode token {} (vocab_size {})", id,
             bytes_.size());
    out += bytes_[id];
  }
  return out;
}

void Tokenizer::save_json(const std::string& path) const {
  nlohmann::json merges = nlohmann::json::array();
  for (const Merge& m : merges_) merges.push_back({m.left, m.right});
  nlohmann::json j = {
      {"format", "birkhoff-bpe"},
      {"version", 1},
      {"vocab_size", vocab_size()},
      {"num_byte_tokens", 256},
      {"pre_tokenizer",
       {{"name", kPreTokenizerName},
        {"regex", kPreTokenizerRegex},
        {"max_chunk_bytes", kMaxChunkBytes},
        {"description",
         "Byte-level. re.findall(regex) on the UTF-8 bytes, then cut each match into pieces of "
         "at most max_chunk_bytes. Letters are A-Za-z and all bytes >= 0x80; a space run that "
         "ends in ' ' before a non-space leaves that ' ' to the next chunk. See docs/data.md."}}},
      {"decoding",
       "token i < 256 is byte i; token 256 + r is bytes(merges[r][0]) + bytes(merges[r][1]); "
       "decode = concatenate token bytes, then UTF-8 decode the whole"},
      {"merges", merges},
  };
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    BK_CHECK(f, "tokenizer: cannot write '{}' (is the directory writable?)", tmp);
    f << j.dump(1) << "\n";
    BK_CHECK(f.good(), "tokenizer: writing '{}' failed (disk full?)", tmp);
  }
  BK_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "tokenizer: cannot rename '{}' to '{}'",
           tmp, path);
}

Tokenizer Tokenizer::load_json(const std::string& path) {
  std::ifstream f(path);
  BK_CHECK(f, "tokenizer '{}': cannot open (run prepare_data to create it)", path);
  nlohmann::json j;
  try {
    f >> j;
  } catch (const nlohmann::json::exception& e) {
    BK_FAIL("tokenizer '{}': not valid JSON: {}", path, e.what());
  }
  // Missing or mistyped fields surface as nlohmann exceptions: name the file in the message.
  try {
    BK_CHECK(j.value("format", "") == "birkhoff-bpe",
             "tokenizer '{}': \"format\" is not \"birkhoff-bpe\" (not a prepare_data tokenizer)",
             path);
    BK_CHECK(j.value("version", 0) == 1,
             "tokenizer '{}': unsupported version {} (this build reads 1)", path,
             j.value("version", 0));
    const auto& pre = j.at("pre_tokenizer");
    BK_CHECK(pre.value("name", "") == kPreTokenizerName,
             "tokenizer '{}': pre-tokenizer \"{}\" is not the one this build implements (\"{}\")",
             path, pre.value("name", ""), kPreTokenizerName);
    std::vector<Merge> merges;
    for (const auto& m : j.at("merges"))
      merges.push_back({m.at(0).get<uint32_t>(), m.at(1).get<uint32_t>()});
    Tokenizer t(std::move(merges));
    BK_CHECK(j.at("vocab_size").get<uint32_t>() == t.vocab_size(),
             "tokenizer '{}': vocab_size {} does not match 256 + {} merges", path,
             j.at("vocab_size").get<uint32_t>(), t.merges().size());
    return t;
  } catch (const nlohmann::json::exception& e) {
    BK_FAIL("tokenizer '{}': malformed: {}", path, e.what());
  }
}

std::string printable(const std::string& bytes) {
  std::string s = "\"";
  for (unsigned char c : bytes) {
    if (c == '\n') s += "\\n";
    else if (c == '\t') s += "\\t";
    else if (c == '\r') s += "\\r";
    else if (c == '"' || c == '\\') s += std::string("\\") + char(c);
    else if (c < 0x20 || c == 0x7f) s += fmt::format("\\x{:02x}", c);
    else s += char(c);
  }
  return s + "\"";
}

}  // namespace bk::tok
