// Trainer: loader -> micro-batches (forward, backward, gradient accumulation) -> global grad
// norm clip -> AdamW -> lr schedule -> metrics -> validation -> checkpoint.
#pragma once
#include <memory>
#include <string>

#include "config/config.h"
#include "model/model.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/compute_device.h"
#include "train/peak_flops.h"
#include "train/step_guard.h"

namespace bk {

class TokenLoader;
class Communicator;
class ProcessGrid;
class DataParallelOptimizer;
class PipelineExecutor;

struct TrainOptions {
  bool overwrite = false;  // start fresh in a run directory that already has results
  std::string resume;      // "" (fresh), "auto" (the run's latest checkpoint, if any), or a path
};

class Trainer {
 public:
  // world: every process of the job (collective: all ranks construct and run the trainer);
  // nullptr for a one-process run.
  Trainer(const Config& cfg, const TrainOptions& opts, Communicator* world = nullptr);
  ~Trainer();
  // Runs training to cfg.training.steps; returns the last validation loss (NaN if none).
  double run();

  Model& model() { return *model_; }
  const std::string& run_dir() const { return run_dir_; }
  // Mean per-token loss over cfg.training.eval_batches validation micro-batches.
  double evaluate();
  // Connector diagnostics on the first validation micro-batch (forward only).
  ConnectorStats probe_connectors();

 private:
  std::string find_resume_checkpoint() const;
  void prepare_run_dir(bool resuming);
  void write_resolved_config() const;
  void restore(const std::string& checkpoint);
  void print_startup_table() const;
  StepMetrics train_step(int64_t step);
  void save_checkpoint_at(int64_t step, double lr);
  // The sum of x over the ranks that share the batch, the same bits on all of them.
  double sum_over_data_ranks(double x) const;
  // Before a forward-only pass of the whole model on every rank (validation, connector probe):
  // with pipeline stages, every rank's copy of the other stages is refreshed (once per step).
  void prepare_local_forward();
  int64_t weights_broadcast_at_ = -1;  // the step whose weights the last broadcast carried

  Config cfg_;
  TrainOptions opts_;
  // First member: destroyed last, after every device buffer the others hold.
  std::unique_ptr<ComputeDevice> device_;
  std::string run_dir_;
  std::unique_ptr<TokenLoader> train_data_, val_data_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Communicator> self_world_;  // the world of a one-process run
  Communicator* world_ = nullptr;             // host tensors: every collective of the trainer itself
  // Several GPUs: NCCL over the world, and the grid's world routing device tensors to it.
  std::unique_ptr<Communicator> device_world_, routed_world_;
  std::unique_ptr<ProcessGrid> grid_;
  bool main_rank_ = true;  // world rank 0: the console, metrics, run directory and config.yaml
  std::unique_ptr<PipelineExecutor> pipeline_;  // parallel.pp > 1: runs each step's schedule
  std::unique_ptr<DataParallelOptimizer> optimizer_;
  std::unique_ptr<MetricsLog> metrics_;
  PeakFlops peak_;
  StepGuard guard_;  // non-finite updates and loss spikes (train/step_guard.h)
  int64_t tokens_seen_ = 0;
  int64_t step_ = 0;              // optimizer steps done (restored on resume)
  int64_t last_saved_step_ = -1;
  std::string resumed_from_;
};

}  // namespace bk
