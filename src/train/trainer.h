// Trainer: loader -> micro-batches (forward, backward, gradient accumulation) -> global grad
// norm clip -> AdamW -> lr schedule -> metrics -> validation -> checkpoint.
#pragma once
#include <memory>
#include <string>

#include "config/config.h"
#include "model/model.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/peak_flops.h"

namespace bk {

class TokenLoader;

struct TrainOptions {
  bool overwrite = false;  // start fresh in a run directory that already has results
  std::string resume;      // "" (fresh), "auto" (the run's latest checkpoint, if any), or a path
};

class Trainer {
 public:
  Trainer(const Config& cfg, const TrainOptions& opts);
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

  Config cfg_;
  TrainOptions opts_;
  std::string run_dir_;
  std::unique_ptr<TokenLoader> train_data_, val_data_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<MetricsLog> metrics_;
  PeakFlops peak_;
  int64_t tokens_seen_ = 0;
  int64_t step_ = 0;              // optimizer steps done (restored on resume)
  int64_t last_saved_step_ = -1;
  std::string resumed_from_;
};

}  // namespace bk
