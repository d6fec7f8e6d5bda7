#include <fmt/format.h>

#include <algorithm>

#include "cli/commands.h"
#include "core/error.h"

namespace bk {

ParsedArgs parse_args(const Args& args, const std::vector<std::string>& known_flags, const char* usage) {
  ParsedArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
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

}  // namespace bk
