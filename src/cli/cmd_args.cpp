#include <fmt/format.h>

#include <algorithm>

#include "cli/commands.h"
#include "core/error.h"

namespace bk {

ParsedArgs parse_args(const Args& args, const std::vector<std::string>& known_flags, const char* usage,
                      const std::vector<std::string>& valued) {
  auto is_valued = [&](const std::string& name) {
    return std::find(valued.begin(), valued.end(), name) != valued.end();
  };
  ParsedArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && a != "--set" && a.rfind("--set=", 0) != 0 &&
        is_valued(a.substr(0, eq))) {
      const std::string name = a.substr(0, eq);
      if (eq != std::string::npos) {
        out.values.emplace_back(name, a.substr(eq + 1));
      } else {
        BK_CHECK(i + 1 < args.size(), "{} needs a value\n{}", name, usage);
        out.values.emplace_back(name, args[++i]);
      }
    } else if (a == "--help" || a == "-h") {
      out.help = true;
    } else if (a == "--set") {
      BK_CHECK(i + 1 < args.size(), "--set needs a value: --set key.path=value\n{}", usage);
      out.sets.push_back(args[++i]);
    } else if (a.rfind("--set=", 0) == 0) {
      out.sets.push_back(a.substr(6));
    } else if (a.rfind("--", 0) == 0) {
      BK_CHECK(std::find(known_flags.begin(), known_flags.end(), a) != known_flags.end(),
               "unknown option {}\n{}", a, usage);
      out.flags.push_back(a);
    } else {
      out.positional.push_back(a);
    }
  }
  return out;
}

bool ParsedArgs::has(const std::string& flag) const {
  return std::find(flags.begin(), flags.end(), flag) != flags.end();
}

std::string ParsedArgs::value(const std::string& option, const std::string& fallback) const {
  std::string v = fallback;
  for (const auto& [name, value] : values)
    if (name == option) v = value;
  return v;
}

}  // namespace bk
