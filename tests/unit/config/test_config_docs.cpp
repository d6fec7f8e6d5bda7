// The checked-in config reference and example configs stay in step with the schema.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/load.h"
#include "config/schema.h"
#include "core/error.h"

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(ConfigDocs, ReferenceMatchesSchema) {
  const fs::path doc = fs::path(BK_SOURCE_DIR) / "docs" / "config.md";
  const std::string want = bk::config_reference_markdown();
  const std::string have = fs::exists(doc) ? read_file(doc) : "";
  if (have != want) {
    // Leave the expected text next to the build so the fix is a copy, even without the CLI.
    const fs::path expected = fs::path(BK_BINARY_DIR) / "config.md.expected";
    std::ofstream(expected, std::ios::binary) << want;
    FAIL() << doc << " is out of date with src/config/schema.cpp. Regenerate it with\n"
           << "    birkhoff config --reference > docs/config.md\n"
           << "or copy the expected text from " << expected;
  }
}

TEST(ConfigDocs, ReferenceNamesEveryKeyAndRule) {
  const std::string md = bk::config_reference_markdown();
  for (const auto& k : bk::schema::keys())
    EXPECT_NE(md.find("| `" + std::string(k.path) + "` |"), std::string::npos) << k.path;
  for (const auto& r : bk::schema::rules()) EXPECT_NE(md.find(r.doc), std::string::npos) << r.doc;
}

// Every example config in the repository parses and validates; zero configs is fine too.
TEST(ConfigExamples, EveryRepoConfigParses) {
  const fs::path dir = fs::path(BK_SOURCE_DIR) / "configs";
  std::vector<fs::path> files;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && (e.path().extension() == ".yaml" || e.path().extension() == ".yml"))
        files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    SCOPED_TRACE(f.string());
    try {
      bk::Config c = bk::load_config(f.string());
      // The resolved form of each example reads back to itself.
      EXPECT_EQ(bk::to_yaml(bk::parse_config(bk::to_yaml(c), f.string())), bk::to_yaml(c));
    } catch (const bk::Error& e) {
      ADD_FAILURE() << e.what();
    }
  }
  if (files.empty()) std::printf("no configs under %s yet\n", dir.c_str());
}

}  // namespace
