// birkhoff: the command-line entry point. Dispatches to one subcommand; every error the
// framework raises on purpose ends here as one readable line and exit code 1.
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"

namespace {

const char* kUsage =
    "birkhoff " BIRKHOFF_VERSION " - pretraining for DeepSeek-V3-style models with manifold-constrained hyper-connections\n"
    "\n"
    "usage: birkhoff <command> [args]\n"
    "\n"
    "commands:\n"
    "  train CONFIG [--set k=v]... [--resume auto|PATH] [--overwrite]   train a model from a YAML config\n"
    "  config CONFIG [--set k=v]...                validate a config and print it resolved\n"
    "  config --reference                          print the config reference (docs/config.md)\n"
    "  inspect PATH [--verify] [--json]            list a checkpoint's tensors, config and files\n"
    "  eval --checkpoint PATH [--data SHARD] [--tokens N]   validation loss and perplexity of a checkpoint\n"
    "  plan CONFIG [--pp P] [--dp D] [--ep E]      parameters, FLOPs and memory per stage of a config\n"
    "  schedule --kind K --pp P --microbatches N [--trace FILE]   pipeline schedule lists, simulated bubble\n"
    "  version                                     print the version\n"
    "\n"
    "Run `birkhoff <command> --help` for a command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "help") || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    fmt::print("{}", kUsage);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  bk::Args args(argv + 2, argv + argc);
  try {
    if (cmd == "train") return bk::cmd_train(args);
    if (cmd == "config") return bk::cmd_config(args);
    if (cmd == "inspect") return bk::cmd_inspect(args);
    if (cmd == "eval") return bk::cmd_eval(args);
    if (cmd == "plan") return bk::cmd_plan(args);
    if (cmd == "schedule") return bk::cmd_schedule(args);
    if (cmd == "version" || cmd == "--version") {
      fmt::print("birkhoff {}\n", BIRKHOFF_VERSION);
      return 0;
    }
    fmt::print(stderr, "birkhoff: unknown command '{}'\n\n{}", cmd, kUsage);
    return 2;
  } catch (const bk::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    if (std::getenv("BIRKHOFF_DEBUG")) fmt::print(stderr, "  (raised at {})\n", e.where());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
