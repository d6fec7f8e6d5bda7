// End-to-end checks of the prepare_data binary (skipped when it has not been built).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "io/data_loader.h"
#include "io/token_shard.h"
#include "tools/prepare_data/tokenizer.h"
#include "unit/io/io_test_util.h"

namespace fs = std::filesystem;

namespace {

const fs::path kTool = fs::path(BK_BINARY_DIR) / "bin" / "prepare_data";

struct Result {
  int rc;
  std::string output;
};

Result run_tool(const fs::path& dir, const std::string& args) {
  const auto log = dir / "log.txt";
  const std::string cmd = kTool.string() + " " + args + " > " + log.string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

std::string sample_text() {
  std::string t;
  for (int i = 0; i < 400; ++i)
    t += "Verse " + std::to_string(i) + ": and the LORD said unto Moses, go forth — “ünïcödé”.\n";
  return t;
}

}  // namespace

class PrepareDataCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kTool)) GTEST_SKIP() << kTool << " not built";
    dir = bk::test::scratch_dir();
    std::ofstream(dir / "text.txt", std::ios::binary) << sample_text();
  }
  fs::path dir;
};

TEST_F(PrepareDataCli, WritesShardsThatLoadAndDecode) {
  auto r = run_tool(dir, "--text " + (dir / "text.txt").string() + " --out " +
                             (dir / "out").string() + " --vocab-size 300 --val-fraction 0.1");
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("bytes/token"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("merges"), std::string::npos) << r.output;
  auto tok = bk::tok::Tokenizer::load_json((dir / "out" / "tokenizer.json").string());
  EXPECT_EQ(tok.vocab_size(), 300u);
  bk::TokenShard train((dir / "out" / "train.bin").string());
  bk::TokenShard val((dir / "out" / "val.bin").string());
  train.validate();
  val.validate();
  EXPECT_EQ(train.vocab_size(), 300u);
  const std::string text = sample_text();
  const std::string dt = tok.decode(train.tokens()), dv = tok.decode(val.tokens());
  EXPECT_EQ(dt.size() + dv.size(), text.size());
  EXPECT_GT(dv.size(), text.size() / 20);
  EXPECT_NE(text.find(dv.substr(0, dv.find('\n') + 1)), std::string::npos) << "whole lines";
  bk::TokenLoader loader((dir / "out" / "train.bin").string(), 16, 1);
  loader.next_global_batch(4);
  EXPECT_EQ(loader.micro_batch(0, 4).inputs.size(), 64u);
}

TEST_F(PrepareDataCli, ClearErrors) {
  const std::string out = " --out " + (dir / "out").string();
  const std::string text = " --text " + (dir / "text.txt").string();
  struct Case {
    std::string args, expect;
  };
  std::ofstream(dir / "empty.txt");
  std::ofstream(dir / "afile") << "x";
  const Case cases[] = {
      {"--text " + (dir / "missing.txt").string() + out, "missing.txt': no such file"},
      {"--text " + (dir / "empty.txt").string() + out, "is empty"},
      {"--text " + dir.string() + out, "is a directory"},
      {text + out + " --vocab-size 256", "--vocab-size 256 is outside"},
      {text + out + " --vocab-size 1048577", "is outside [257, 1048576]"},
      {text + out + " --vocab-size lots", "expects a number"},
      {text + " --out " + (dir / "afile" / "sub").string(), "cannot create output directory"},
      {text + " --out " + (dir / "afile").string(), "afile': "},
      {out, "no input"},
      {text, "no output directory"},
      {text + out + " --val-fraction 0.9", "--val-fraction 0.9 is outside"},
      {text + out + " --bogus 1", "unknown option"},
  };
  for (const auto& c : cases) {
    auto r = run_tool(dir, c.args);
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_NE(r.output.find(c.expect), std::string::npos)
        << "args: " << c.args << "\noutput: " << r.output;
  }
}
