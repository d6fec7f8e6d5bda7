// Per-step metrics: one JSON object per step in RUN_DIR/metrics.jsonl (keys in
// docs/metrics.md) and the console progress line every log interval.
#pragma once
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "io/tensorboard.h"
#include "model/connector_stats.h"
#include "model/moe.h"

namespace bk {

struct StepMetrics {
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0;          // mean per-token training loss of the step
  double grad_norm = 0;     // before clipping
  double clip_scale = 1;    // gradient scale applied (1 = not clipped)
  double lr = 0;
  int64_t tokens = 0;       // tokens seen so far (all ranks)
  double tokens_per_s = 0;
  double ms_per_step = 0;
  double mfu = 0;           // model FLOPs utilisation, fraction of the peak
  double elapsed_s = 0;     // since training started
  std::optional<double> val_loss;
  std::optional<ConnectorStats> connectors;  // hc/mhc, on logged steps with validation data
  std::vector<MoeStats> moe;                 // one per MoE layer, every step
  std::optional<double> mtp_loss;            // mean MTP loss of the step (model.mtp.depth > 0)
  double mem_gb = 0;            // peak resident memory of the process so far, GiB
  double act_gb = 0;            // peak tensor bytes of the step above its start: activations, GiB
                                // (host tensors on the CPU, the device allocator's on the GPU)
  std::optional<double> gpu_mem_gb;       // GPU runs: peak device tensor bytes during the step, GiB
  std::optional<double> gpu_reserved_gb;  // GPU runs: peak bytes the caching allocator holds, GiB
  bool skipped = false;         // non-finite loss or gradients: no optimizer step (train/step_guard.h)
  int64_t skipped_updates = 0;  // steps skipped so far in the run
};

// Every step's metrics go to both sinks from the one write(), so they always agree:
// RUN_DIR/metrics.jsonl and TensorBoard event files (the scalars of tensorboard_scalars()).
class MetricsLog {
 public:
  // jsonl_path empty: no JSONL file. tensorboard_dir empty: no event file; else a new event
  // file in it, starting with a SessionLog START at first_step (TensorBoard then drops the
  // steps >= first_step of earlier files: the steps a resumed run repeats).
  explicit MetricsLog(const std::string& jsonl_path, const std::string& tensorboard_dir = "",
                      int64_t first_step = 1);
  ~MetricsLog();
  void write(const StepMetrics& m);
  // The event file being written ("" when none).
  std::string tensorboard_file() const;

 private:
  std::ofstream out_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

// The TensorBoard scalars of a step: one per number of its metrics.jsonl record except the
// per-expert `load` vectors (their spread is load_max/min/cv); tags in docs/metrics.md.
Scalars tensorboard_scalars(const StepMetrics& m);
// Peak resident set size of this process (getrusage), GiB.
double peak_rss_gb();

// "step   10/300 | loss 5.1234 | gnorm 0.812 | lr 1.00e-03 | 12.3k tok/s | 165 ms | MFU 11.2% | eta 1m05s"
std::string progress_line(const StepMetrics& m);
std::string format_duration(double seconds);
// 1234567 -> "1.23M"
std::string human(double x);
// "connectors | amax composite fwd 1.02 bwd 1.05 (max over l) | H_res diag 0.90 | ..."
std::string connector_line(const ConnectorStats& s);
// "moe | load cv 0.12 (worst layer 0.31) | max/min load 1.9x | bias [-0.02, 0.03] | balance loss 1.0e-4"
std::string moe_line(const std::vector<MoeStats>& layers);

}  // namespace bk
