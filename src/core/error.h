// Errors: one exception type that carries file and line, and the check macros that raise it.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace bk {

// Every error the framework raises on purpose. what() is the user-facing message; where is
// "file:line" of the check that failed (kept apart so messages stay readable).
class Error : public std::runtime_error {
 public:
  Error(std::string msg, const char* file, int line)
      : std::runtime_error(std::move(msg)), where_(fmt::format("{}:{}", file, line)) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

}  // namespace bk

// BK_CHECK(cond, "fmt {}", args...): throws bk::Error with the formatted message.
#define BK_CHECK(cond, ...)                                                        \
  do {                                                                             \
    if (!(cond)) throw ::bk::Error(fmt::format(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)

#define BK_FAIL(...) throw ::bk::Error(fmt::format(__VA_ARGS__), __FILE__, __LINE__)
