// Helpers shared by the io tests: a fresh scratch directory per test.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/error.h"

namespace bk::test {

// BK_BINARY_DIR/test_tmp/io/<suite>.<test>, emptied.
inline std::filesystem::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::path(BK_BINARY_DIR) / "test_tmp" / "io" /
             (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs f, expects a bk::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const bk::Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
        << "message '" << e.what() << "' lacks '" << p << "'";
  }
}

}  // namespace bk::test
