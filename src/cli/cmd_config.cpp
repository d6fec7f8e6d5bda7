#include <fmt/format.h>


#include "cli/commands.h"
#include "config/load.h"
#include "core/error.h"

namespace bk {

static const char* kConfigUsage =
    "usage: birkhoff config CONFIG.yaml [--set key.path=value]...   validate and print the resolved config\n"
    "       birkhoff config --reference                             print the config reference (docs/config.md)";

int cmd_config(const Args& args) {
  ParsedArgs a = parse_args(args, {"--reference"}, kConfigUsage);
  if (a.help) return fmt::print("{}\n", kConfigUsage), 0;
  if (a.has("--reference")) {
    fmt::print("{}", config_reference_markdown());
    return 0;
  }
  BK_CHECK(a.positional.size() == 1, "config needs exactly one config file\n{}", kConfigUsage);
  fmt::print("{}", to_yaml(load_config(a.positional[0], a.sets)));
  return 0;
}

}  // namespace bk
