// `birkhoff` subcommands. Each takes the arguments after its name and returns the exit code.
#pragma once
#include <string>
#include <vector>

namespace bk {

using Args = std::vector<std::string>;

int cmd_train(const Args& args);
int cmd_config(const Args& args);

// Shared argument handling: "--set a.b=c" / "--set=a.b=c" pairs are collected into `sets`.
// Returns false (after printing why) on an argument the command does not know.
struct ParsedArgs {
  std::vector<std::string> positional;
  std::vector<std::string> sets;
  std::vector<std::string> flags;  // --name (no value)
  bool help = false;               // --help or -h
  bool has(const std::string& flag) const;
};
ParsedArgs parse_args(const Args& args, const std::vector<std::string>& known_flags, const char* usage);

}  // namespace bk
