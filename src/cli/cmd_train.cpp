#include <fmt/format.h>

#include "cli/commands.h"
#include "config/load.h"
#include "core/log.h"
#include "train/trainer.h"

namespace bk {

static const char* kTrainUsage =
    "usage: birkhoff train CONFIG.yaml [--set key.path=value]... [--resume auto|PATH] [--overwrite]\n"
    "  --set          override a config key (repeatable), e.g. --set training.steps=100\n"
    "  --resume auto  continue from the run directory's latest checkpoint (fresh start if none)\n"
    "  --resume PATH  continue from a checkpoint directory (or a run directory's latest)\n"
    "  --overwrite    start over in a run directory that already holds a run";

int cmd_train(const Args& args) {
  ParsedArgs a = parse_args(args, {"--overwrite"}, kTrainUsage, {"--resume"});
  if (a.help) return fmt::print("{}\n", kTrainUsage), 0;
  BK_CHECK(a.positional.size() == 1, "train needs exactly one config file\n{}", kTrainUsage);
  setup_logging("info");
  Config cfg = load_config(a.positional[0], a.sets);
  TrainOptions opts;
  opts.overwrite = a.has("--overwrite");
  opts.resume = a.value("--resume");
  Trainer trainer(cfg, opts);
  trainer.run();
  return 0;
}

}  // namespace bk
