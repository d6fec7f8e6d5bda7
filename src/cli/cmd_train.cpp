#include <fmt/format.h>

#include "cli/commands.h"
#include "config/load.h"
#include "core/log.h"
#include "parallel/launch_env.h"
#include "parallel/mpi_communicator.h"
#include "parallel/watchdog.h"
#include "train/trainer.h"

namespace bk {

namespace {

TrainOptions train_options(const ParsedArgs& a) {
  TrainOptions opts;
  opts.overwrite = a.has("--overwrite");
  opts.resume = a.value("--resume");
  return opts;
}

}  // namespace

static const char* kTrainUsage =
    "usage: birkhoff train CONFIG.yaml [--set key.path=value]... [--resume auto|PATH] [--overwrite]\n"
    "  --set          override a config key (repeatable), e.g. --set training.steps=100\n"
    "  --resume auto  continue from the run directory's latest checkpoint (fresh start if none)\n"
    "  --resume PATH  continue from a checkpoint directory (or a run directory's latest)\n"
    "  --overwrite    start over in a run directory that already holds a run\n"
    "Several processes: mpirun -np N birkhoff train CONFIG (N = parallel.pp * ep * dp; launch/mpirun.sh)";

static int train_one_process(const ParsedArgs& a) {
  setup_logging("info");
  Config cfg = load_config(a.positional[0], a.sets);
  Trainer trainer(cfg, train_options(a));
  trainer.run();
  return 0;
}

int cmd_train(const Args& args) {
  ParsedArgs a = parse_args(args, {"--overwrite"}, kTrainUsage, {"--resume"});
  if (a.help) return fmt::print("{}\n", kTrainUsage), 0;
  BK_CHECK(a.positional.size() == 1, "train needs exactly one config file\n{}", kTrainUsage);
  // Several processes (mpirun, srun): MPI first, so that an error on any rank, even in the
  // config, ends the whole job (abort_job) instead of leaving the others waiting.
  const LaunchEnv env = read_launch_env();
  if (env.world_size == 1) return train_one_process(a);
  MpiRuntime mpi(nullptr, nullptr);
  try {
    std::unique_ptr<Communicator> world = mpi.world();
    check_launch_env(env, world->rank(), world->size());
    setup_logging("info", "", world->rank());
    Config cfg = load_config(a.positional[0], a.sets);
    WatchedCommunicator watched(std::move(world), "world", cfg.parallel.timeout_s);
    Trainer trainer(cfg, train_options(a), &watched);
    trainer.run();
    watched.barrier();  // nobody finalizes MPI while another rank still saves
  } catch (const Error& e) {
    abort_job(fmt::format("error: {}", e.what()));
  } catch (const std::exception& e) {
    abort_job(fmt::format("error: {}", e.what()));
  }
  return 0;
}

}  // namespace bk
