// `birkhoff` subcommands. Each takes the arguments after its name and returns the exit code.
#pragma once
#include <string>
#include <vector>

namespace bk {

using Args = std::vector<std::string>;

int cmd_train(const Args& args);
int cmd_config(const Args& args);
int cmd_inspect(const Args& args);
int cmd_eval(const Args& args);
int cmd_plan(const Args& args);
int cmd_schedule(const Args& args);

// Shared argument handling: "--set a.b=c" / "--set=a.b=c" pairs are collected into `sets`;
// `known_flags` take no value, `valued` options take one ("--resume auto" or "--resume=auto").
// Anything else starting with "--" is an error that shows the usage.
struct ParsedArgs {
  std::vector<std::string> positional;
  std::vector<std::string> sets;
  std::vector<std::string> flags;                          // --name (no value)
  std::vector<std::pair<std::string, std::string>> values;  // --name value
  bool help = false;                                        // --help or -h
  bool has(const std::string& flag) const;
  std::string value(const std::string& option, const std::string& fallback = "") const;  // last one wins
};
ParsedArgs parse_args(const Args& args, const std::vector<std::string>& known_flags, const char* usage,
                      const std::vector<std::string>& valued = {});

}  // namespace bk
