// prepare_data: text -> byte-level BPE tokenizer + train/val token shards.
//
//   prepare_data --text FILE [--text FILE2 ...] --out DIR [--vocab-size 2048]
//                [--val-fraction 0.05] [--seed 1234]
//
// Writes DIR/tokenizer.json, DIR/train.bin, DIR/val.bin (io/token_shard.h) and DIR/stats.json.
// Steps: read the text -> split into train/val pieces (text_split.h) -> count pre-token chunks
// of the train pieces -> learn merges (bpe_train.h) -> encode both splits (bpe_encode.h),
// checking that every piece decodes back to itself -> summary. See docs/data.md.
#include <fmt/format.h>

#include <charconv>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/token_shard.h"
#include "tools/prepare_data/bpe_encode.h"
#include "tools/prepare_data/bpe_train.h"
#include "tools/prepare_data/progress.h"
#include "tools/prepare_data/text_split.h"
#include "tools/prepare_data/tokenizer.h"

namespace fs = std::filesystem;
using namespace bk::tok;

namespace {

constexpr const char* kUsage =
    "usage: prepare_data --text FILE [--text FILE2 ...] --out DIR [--vocab-size 2048]\n"
    "                    [--val-fraction 0.05] [--seed 1234]\n"
    "  --text FILE        UTF-8 text to train on (repeatable; files are concatenated)\n"
    "  --out DIR          output directory (created): tokenizer.json train.bin val.bin stats.json\n"
    "  --vocab-size N     256 byte tokens + N - 256 merges, 257 <= N <= 1048576 (default 2048)\n"
    "  --val-fraction F   share of the text held out for validation, 0 <= F <= 0.5 (default 0.05)\n"
    "  --seed N           picks which evenly spaced pieces are validation (default 1234)\n"
    "The KJV corpus: tools/get_corpus.sh data/kjv.txt (needs: apt-get install bible-kjv)\n";

struct Args {
  std::vector<std::string> texts;
  std::string out;
  uint64_t vocab_size = 2048;
  double val_fraction = 0.05;
  uint64_t seed = 1234;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "prepare_data: error: %s\n\n%s", msg.c_str(), kUsage);
  std::exit(2);
}

template <typename T>
T parse_number(const std::string& flag, const std::string& s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size())
    usage_error(fmt::format("{} expects a number, got '{}'", flag, s));
  return v;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], value;
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (auto eq = flag.find('='); flag.starts_with("--") && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    } else if (flag.starts_with("--")) {
      if (i + 1 >= argc) usage_error(fmt::format("{} needs a value", flag));
      value = argv[++i];
    } else {
      usage_error(fmt::format("unexpected argument '{}'", flag));
    }
    if (flag == "--text") a.texts.push_back(value);
    else if (flag == "--out") a.out = value;
    else if (flag == "--vocab-size") a.vocab_size = parse_number<uint64_t>(flag, value);
    else if (flag == "--val-fraction") a.val_fraction = parse_number<double>(flag, value);
    else if (flag == "--seed") a.seed = parse_number<uint64_t>(flag, value);
    else usage_error(fmt::format("unknown option '{}'", flag));
  }
  if (a.texts.empty()) usage_error("no input: give at least one --text FILE");
  if (a.out.empty()) usage_error("no output directory: give --out DIR");
  if (a.vocab_size < 257 || a.vocab_size > (1u << 20))
    usage_error(fmt::format("--vocab-size {} is outside [257, 1048576] (256 byte tokens + at "
                            "least one merge)", a.vocab_size));
  if (!(a.val_fraction >= 0 && a.val_fraction <= 0.5))
    usage_error(fmt::format("--val-fraction {} is outside [0, 0.5]", a.val_fraction));
  return a;
}

// Creates DIR and proves it is writable now, not after minutes of work.
void prepare_out_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  BK_CHECK(!ec, "cannot create output directory '{}': {}; choose another --out", dir, ec.message());
  BK_CHECK(fs::is_directory(dir), "output path '{}' exists and is not a directory; choose another --out", dir);
  const std::string probe = (fs::path(dir) / ".prepare_data_write_test").string();
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  BK_CHECK(f, "output directory '{}' is not writable; choose another --out", dir);
  std::fclose(f);
  std::remove(probe.c_str());
}

// Appends the file to text (with a newline after it if it lacks one). Shows bytes and rate.
void read_text(const std::string& path, std::string& text) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  BK_CHECK(fs::exists(st), "--text '{}': no such file", path);
  BK_CHECK(!fs::is_directory(st), "--text '{}' is a directory; give a text file", path);
  std::ifstream f(path, std::ios::binary);
  BK_CHECK(f, "--text '{}': cannot open for reading (permissions?)", path);
  const uint64_t size = fs::file_size(path, ec);
  BK_CHECK(!ec && size > 0, "--text '{}' is empty; give a file with text in it", path);
  Progress p("read " + path, double(size), "MB", 1e-6);
  const size_t start = text.size();
  text.resize(start + size);
  size_t done = 0;
  while (done < size) {
    const size_t n = std::min<size_t>(size - done, 4 << 20);
    f.read(text.data() + start + done, std::streamsize(n));
    BK_CHECK(size_t(f.gcount()) == n, "--text '{}': read failed after {} of {} bytes", path,
             done + f.gcount(), size);
    done += n;
    p.update(double(done));
  }
  p.finish();
  if (text.back() != '\n') text.push_back('\n');  // the next file starts on its own line
}

struct SplitStats {
  uint64_t bytes = 0, tokens = 0;
  std::vector<uint64_t> hist;  // token id -> count
  double bytes_per_token() const { return tokens ? double(bytes) / double(tokens) : 0.0; }
  double entropy() const {  // unigram entropy of this split's own distribution, nats
    double h = 0;
    for (uint64_t c : hist)
      if (c) h -= double(c) / double(tokens) * std::log(double(c) / double(tokens));
    return h;
  }
};

// Cross-entropy of `eval` under the add-one-smoothed unigram distribution of `fit`, nats/token:
// the loss a model that ignores context would get on the validation split.
double unigram_cross_entropy(const SplitStats& fit, const SplitStats& eval) {
  if (!eval.tokens) return 0.0;
  const double denom = double(fit.tokens + fit.hist.size());
  double h = 0;
  for (size_t i = 0; i < eval.hist.size(); ++i)
    if (eval.hist[i]) h -= double(eval.hist[i]) * std::log(double(fit.hist[i] + 1) / denom);
  return h / double(eval.tokens);
}

int run(const Args& args) {
  prepare_out_dir(args.out);

  std::string text;
  for (const auto& path : args.texts) read_text(path, text);
  size_t nonspace = 0;
  for (char c : text) nonspace += !std::isspace((unsigned char)c);
  BK_CHECK(nonspace > 0, "the --text input has only whitespace; give a file with text in it");

  const auto pieces = split_train_val(text, args.val_fraction, args.seed);
  uint64_t train_bytes = 0, val_pieces = 0;
  for (const auto& p : pieces) {
    if (p.val) ++val_pieces;
    else train_bytes += p.end - p.begin;
  }
  fmt::print(stderr, "[split] {} pieces of lines, {} for validation ({:.2f}% of bytes)\n",
             pieces.size(), val_pieces, 100.0 * double(text.size() - train_bytes) / double(text.size()));
  if (args.val_fraction > 0 && val_pieces == 0)
    fmt::print(stderr, "[split] warning: the text is too short for a validation piece; val.bin "
                       "will be empty\n");
  BK_CHECK(train_bytes > 0, "no text left for training after the validation split; lower "
                            "--val-fraction or give more text");

  // 1. Pre-token chunk counts of the training text.
  ChunkCounts counts;
  {
    Progress p("count chunks", double(train_bytes), "MB", 1e-6);
    uint64_t done = 0;
    for (const auto& piece : pieces) {
      if (piece.val) continue;
      count_chunks(std::string_view(text).substr(piece.begin, piece.end - piece.begin), counts);
      done += piece.end - piece.begin;
      p.update(double(done));
    }
    p.finish(fmt::format("{} unique chunks", counts.size()));
  }

  // 2. Merges.
  const size_t wanted = args.vocab_size - 256;
  Progress merge_progress("merges", double(wanted), "merges");
  TrainOptions opt;
  opt.vocab_size = uint32_t(args.vocab_size);
  opt.progress = [&](size_t done, size_t) { merge_progress.update(double(done)); };
  Tokenizer tokenizer(bpe_train(counts, opt));
  const double merge_seconds = merge_progress.seconds();
  merge_progress.finish(fmt::format("vocab {}", tokenizer.vocab_size()));
  if (tokenizer.merges().size() < wanted)
    fmt::print(stderr, "[merges] note: only {} pairs occur at least {} times; the vocabulary is "
                       "{} tokens, not {}\n",
               tokenizer.merges().size(), opt.min_count, tokenizer.vocab_size(), args.vocab_size);
  const std::string tok_path = (fs::path(args.out) / "tokenizer.json").string();
  tokenizer.save_json(tok_path);

  // 3. Encode both splits into shards, proving each piece decodes back to itself.
  const uint32_t V = tokenizer.vocab_size();
  const std::string train_path = (fs::path(args.out) / "train.bin").string();
  const std::string val_path = (fs::path(args.out) / "val.bin").string();
  bk::TokenShardWriter train_w(train_path, V), val_w(val_path, V);
  SplitStats train, val;
  train.hist.assign(V, 0);
  val.hist.assign(V, 0);
  BpeEncoder encoder(tokenizer);
  {
    Progress p("encode", double(text.size()), "MB", 1e-6);
    uint64_t done = 0;
    std::vector<uint32_t> ids;
    for (const auto& piece : pieces) {
      const std::string_view s = std::string_view(text).substr(piece.begin, piece.end - piece.begin);
      ids.clear();
      encoder.encode(s, ids);
      BK_CHECK(tokenizer.decode(ids) == s,
               "internal error: bytes [{}, {}) do not decode back to themselves (tokenizer bug)",
               piece.begin, piece.end);
      SplitStats& st = piece.val ? val : train;
      (piece.val ? val_w : train_w).write(ids);
      st.bytes += s.size();
      st.tokens += ids.size();
      for (uint32_t id : ids) ++st.hist[id];
      done += s.size();
      p.update(double(done));
    }
    train_w.close();
    val_w.close();
    p.finish(fmt::format("{} tokens written", train.tokens + val.tokens));
  }

  // 4. Summary (also as stats.json, e.g. for the unigram baseline a model must beat).
  const double val_xent = unigram_cross_entropy(train, val);
  fmt::print("\nprepare_data summary ({})\n", args.out);
  fmt::print("  vocab size        {} (256 bytes + {} merges, learned in {:.2f}s)\n", V,
             tokenizer.merges().size(), merge_seconds);
  fmt::print("  train.bin         {:>10} tokens  {:>10} bytes  {:.3f} bytes/token\n", train.tokens,
             train.bytes, train.bytes_per_token());
  fmt::print("  val.bin           {:>10} tokens  {:>10} bytes  {:.3f} bytes/token\n", val.tokens,
             val.bytes, val.bytes_per_token());
  fmt::print("  unigram entropy   {:.4f} nats/token (train); val under train unigram {:.4f}\n",
             train.entropy(), val_xent);
  fmt::print("  tokenizer         {}\n", tok_path);
  fmt::print("  set model.vocab_size >= {}\n", V);

  auto split_json = [](const SplitStats& s) {
    return nlohmann::json{{"bytes", s.bytes}, {"tokens", s.tokens},
                          {"bytes_per_token", s.bytes_per_token()},
                          {"unigram_entropy_nats", s.entropy()}};
  };
  nlohmann::json stats = {{"vocab_size", V},
                          {"sources", args.texts},
                          {"val_fraction", args.val_fraction},
                          {"seed", args.seed},
                          {"merge_seconds", merge_seconds},
                          {"train", split_json(train)},
                          {"val", split_json(val)},
                          {"val_unigram_cross_entropy_nats", val_xent}};
  std::ofstream((fs::path(args.out) / "stats.json").string()) << stats.dump(1) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  try {
    return run(args);
  } catch (const bk::Error& e) {
    std::fprintf(stderr, "prepare_data: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "prepare_data: error: %s\n", e.what());
    return 1;
  }
}
